//! Expectations on the target's answers. Every response is also checked for consistency with
//! the query it answers (holder, digest, ids, outcome and reason), so a case that expects a
//! particular refusal also fails on a response that would not verify in a passport bundle.

use throughgate_protocol::credential::CLOCK_SKEW_SECS;
use throughgate_protocol::envelope::Envelope;
use throughgate_protocol::ids::ConsentId;
use throughgate_protocol::messages::{
    query_digest, Ack, AckOutcome, AckSubject, ErrorBody, ErrorCode, Outcome, Query, RefusalReason,
    Response,
};

use crate::case::{fail, CaseError};
use crate::peer::{Answer, Target};

fn unsupported_or_fail(answer: &Answer, wanted: &str) -> CaseError {
    match answer {
        Answer::Error(_, e) if e.code == ErrorCode::UnsupportedKind => CaseError::Unsupported(
            format!("the target does not accept {wanted}: {}", e.message),
        ),
        other => CaseError::Fail(format!("expected {wanted}, got {}", other.describe())),
    }
}

/// Checks a response is a consistent answer from the target to exactly `q_env`.
pub fn consistent(
    target: &Target,
    q_env: &Envelope,
    q: &Query,
    r: &Response,
) -> Result<(), CaseError> {
    if r.holder != target.agency {
        return fail(format!(
            "response names holder {}, not the target {}",
            r.holder, target.agency
        ));
    }
    if r.query_digest != query_digest(q_env) {
        return fail("response's query_digest is not SHA-256 of the query body bytes sent");
    }
    if r.query_id != q.query_id {
        return fail(format!(
            "response answers query {}, not {}",
            r.query_id, q.query_id
        ));
    }
    if r.passport_id != q.passport_id {
        return fail("response names another passport id than the query");
    }
    match r.outcome {
        Outcome::Refused if r.reason.is_none() => return fail("refusal without a reason"),
        Outcome::Disclosed | Outcome::NotHeld if r.reason.is_some() => {
            return fail(format!("{} response carries a refusal reason", r.outcome))
        }
        Outcome::Refused | Outcome::NotHeld if !r.records.is_empty() => {
            return fail(format!(
                "{} response carries {} records",
                r.outcome,
                r.records.len()
            ))
        }
        _ => {}
    }
    if r.outcome == Outcome::Disclosed && r.as_of > q.expires_at.plus_secs(CLOCK_SKEW_SECS) {
        return fail("disclosure dated after the query expired");
    }
    Ok(())
}

/// Expects a consistent response to `q_env` (any outcome).
pub fn response(
    target: &Target,
    q_env: &Envelope,
    q: &Query,
    answer: &Answer,
) -> Result<Response, CaseError> {
    match answer {
        Answer::Response(_, r) => {
            consistent(target, q_env, q, r)?;
            Ok((**r).clone())
        }
        other => Err(unsupported_or_fail(other, "a response to the query")),
    }
}

/// Expects a consistent signed refusal with `reason`.
pub fn refused(
    target: &Target,
    q_env: &Envelope,
    q: &Query,
    answer: &Answer,
    reason: RefusalReason,
) -> Result<Response, CaseError> {
    refused_any(target, q_env, q, answer, &[reason])
}

/// Expects a consistent signed refusal with one of `reasons`.
pub fn refused_any(
    target: &Target,
    q_env: &Envelope,
    q: &Query,
    answer: &Answer,
    reasons: &[RefusalReason],
) -> Result<Response, CaseError> {
    let r = response(target, q_env, q, answer)?;
    match (r.outcome, r.reason) {
        (Outcome::Refused, Some(got)) if reasons.contains(&got) => Ok(r),
        _ => fail(format!(
            "expected a refusal ({}), got {}",
            names(reasons),
            answer.describe()
        )),
    }
}

/// Expects a consistent response with `outcome`.
pub fn outcome(
    target: &Target,
    q_env: &Envelope,
    q: &Query,
    answer: &Answer,
    wanted: Outcome,
) -> Result<Response, CaseError> {
    let r = response(target, q_env, q, answer)?;
    if r.outcome == wanted {
        Ok(r)
    } else {
        fail(format!("expected {wanted}, got {}", answer.describe()))
    }
}

fn names(reasons: &[RefusalReason]) -> String {
    reasons
        .iter()
        .map(|r| r.as_str())
        .collect::<Vec<_>>()
        .join(" or ")
}

/// Expects a signed protocol error with one of `codes`.
pub fn error(answer: &Answer, codes: &[ErrorCode]) -> Result<ErrorBody, CaseError> {
    match answer {
        Answer::Error(_, e) if codes.contains(&e.code) => Ok(e.clone()),
        other => fail(format!(
            "expected error {}, got {}",
            codes
                .iter()
                .map(|c| c.as_str())
                .collect::<Vec<_>>()
                .join(" or "),
            other.describe()
        )),
    }
}

/// Expects a signed acknowledgement from the target about `consent` with one of `outcomes`.
pub fn ack(
    target: &Target,
    answer: &Answer,
    consent: &ConsentId,
    subject: AckSubject,
    outcomes: &[AckOutcome],
) -> Result<Ack, CaseError> {
    let a = match answer {
        Answer::Ack(_, a) => a.clone(),
        other => {
            return Err(unsupported_or_fail(
                other,
                &format!(
                    "an ack ({})",
                    outcomes
                        .iter()
                        .map(|o| o.as_str())
                        .collect::<Vec<_>>()
                        .join(" or ")
                ),
            ))
        }
    };
    if a.agency != target.agency {
        return fail(format!("ack names agency {}, not the target", a.agency));
    }
    if &a.consent_id != consent {
        return fail(format!("ack names consent {}, not {consent}", a.consent_id));
    }
    if a.subject != subject {
        return fail(format!("ack is about a {:?}, not a {subject:?}", a.subject));
    }
    if !outcomes.contains(&a.outcome) {
        return fail(format!(
            "expected ack {}, got {}",
            outcomes
                .iter()
                .map(|o| o.as_str())
                .collect::<Vec<_>>()
                .join(" or "),
            answer.describe()
        ));
    }
    if a.outcome == AckOutcome::Rejected && a.reason.as_deref().is_none_or(str::is_empty) {
        return fail("a rejected ack without a reason");
    }
    Ok(a)
}

/// Expects the target to have refused to store something: either an error answer or a
/// `rejected` acknowledgement.
pub fn not_stored(
    target: &Target,
    answer: &Answer,
    consent: &ConsentId,
    subject: AckSubject,
) -> Result<String, CaseError> {
    match answer {
        Answer::Error(_, e) if e.code == ErrorCode::UnsupportedKind => Err(unsupported_or_fail(
            answer,
            "consent messages from a member",
        )),
        Answer::Error(_, e) => Ok(format!("error {}", e.code)),
        Answer::Ack(..) => {
            let a = ack(target, answer, consent, subject, &[AckOutcome::Rejected])?;
            Ok(format!(
                "ack rejected ({})",
                a.reason
                    .unwrap_or_default()
                    .chars()
                    .take(80)
                    .collect::<String>()
            ))
        }
        Answer::Response(..) => fail(format!("expected a rejection, got {}", answer.describe())),
    }
}
