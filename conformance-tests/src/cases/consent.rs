//! Consent: grants (linkage by salted commitment), revocations, supersession, and the holder's
//! consent decision. Grants the target must refuse are followed by a query under the consent,
//! which must then find nothing (`no_consent`): refusing means storing nothing.

use std::time::Duration;

use throughgate_protocol::category::{Category, Purpose};
use throughgate_protocol::consent::HolderScope;
use throughgate_protocol::credential::StaffRole;
use throughgate_protocol::envelope::{Envelope, SignerRole};
use throughgate_protocol::identifiers::{commitment, IdScheme, SubjectIdentifier};
use throughgate_protocol::ids::PassportId;
use throughgate_protocol::keys::SecretKey;
use throughgate_protocol::messages::{AckOutcome, AckSubject, Outcome, RefusalReason};

use super::{ask, ask_expect_refusal, case, category_outside, grant, linked};
use crate::case::{ensure, Area, Case, CaseError, CaseResult, Ctx};
use crate::check;
use crate::craft::{self, Draft};
use crate::identity::{issue, random_identifier, Actor};
use crate::now;
use crate::peer::Conn;

/// The consent cases.
pub fn cases() -> Vec<Case> {
    let a = Area::Consent;
    vec![
        case!(a, "consent.grant_linked", "a valid grant for a person the target holds is acknowledged linked (signed ack naming the consent and the target)", grant_linked),
        case!(a, "consent.grant_idempotent", "the same grant delivered twice is acknowledged linked both times", grant_idempotent),
        case!(a, "consent.disclosed", "a query under a linked, active consent covering the request is answered disclosed, naming the consent", disclosed),
        case!(a, "consent.unknown_subject_not_held", "a grant for an identifier the target does not know is acknowledged not_held; a query under it is answered not_held with nothing else", unknown_subject_not_held),
        case!(a, "consent.wrong_identifier_rejected", "a grant whose identifier does not match the consent's commitment is rejected and not stored", wrong_identifier_rejected),
        case!(a, "consent.wrong_salt_rejected", "a grant whose salt does not match the consent's commitment is rejected and not stored", wrong_salt_rejected),
        case!(a, "consent.wrong_scheme_rejected", "a grant carrying an identifier of another scheme than the target's is rejected and not stored", wrong_scheme_rejected),
        case!(a, "consent.invalid_identifier_rejected", "a grant carrying an identifier that is not valid for its scheme is rejected and not stored", invalid_identifier_rejected),
        case!(a, "consent.holder_grant_without_identifier_rejected", "a holder's grant carrying no identifier and salt is rejected and not stored", without_identifier_rejected),
        case!(a, "consent.recipient_mismatch_rejected", "a grant addressed to another recipient is rejected and not stored", recipient_mismatch_rejected),
        case!(a, "consent.target_not_named_rejected", "a grant of a consent naming the target neither as holder nor as grantee is rejected", target_not_named_rejected),
        case!(a, "consent.recorded_by_other_rejected", "a consent recorded by another agency than the one delivering it is rejected and not stored", recorded_by_other_rejected),
        case!(a, "consent.grant_not_signed_by_sender", "a grant not signed by the sending node's key is refused and not stored", grant_not_signed_by_sender),
        case!(a, "consent.artefact_caseworker_unsigned_rejected", "a consent artefact without the recording caseworker's signature is rejected and not stored", artefact_caseworker_unsigned),
        case!(a, "consent.artefact_node_unsigned_rejected", "a consent artefact without the recording node's signature is rejected and not stored", artefact_node_unsigned),
        case!(a, "consent.artefact_invalid_rejected", "a consent whose validity ends before it starts is rejected and not stored", artefact_invalid),
        case!(a, "consent.artefact_credential_expired_rejected", "a consent recorded by a caseworker whose credential had expired is rejected and not stored", artefact_credential_expired),
        case!(a, "consent.grantee_only_stored", "a consent naming the target only as a grantee is acknowledged stored", grantee_only_stored),
        case!(a, "consent.holder_not_covered", "a query to a holder the consent does not name is refused holder_not_covered", holder_not_covered),
        case!(a, "consent.requester_not_grantee", "a query by an agency the consent does not name as grantee is refused requester_not_grantee", requester_not_grantee),
        case!(a, "consent.purpose_not_covered", "a query for another purpose than the consent's is refused purpose_not_covered", purpose_not_covered),
        case!(a, "consent.category_not_covered", "a query asking a category the consent does not cover at the target is refused category_not_covered", category_not_covered),
        case!(a, "consent.empty_categories_not_addressed", "a query asking the target for no category under a valid consent is refused not_addressed", empty_categories),
        case!(a, "consent.passport_mismatch", "a query for another passport than the consent's is refused consent_passport_mismatch", passport_mismatch),
        case!(a, "consent.expired", "a query under a consent whose validity has ended is refused consent_expired (waits at most 3 s, only if the target refuses already-expired grants)", expired),
        case!(a, "consent.not_yet_valid", "a query under a consent valid only from next hour is refused consent_not_yet_valid", not_yet_valid),
        case!(a, "consent.revoked", "after a revocation acknowledged revoked, a query under the consent is refused consent_revoked", revoked),
        case!(a, "consent.revocation_idempotent", "the same revocation delivered twice is acknowledged revoked both times", revocation_idempotent),
        case!(a, "consent.revoked_stays_revoked", "re-delivering the grant of a revoked consent does not revive it: still consent_revoked", revoked_stays_revoked),
        case!(a, "consent.revoke_by_other_rejected", "a revocation by an agency other than the recorder is refused and has no effect (still disclosed)", revoke_by_other_rejected),
        case!(a, "consent.revoked_before_granted", "a revocation that overtakes its grant is acknowledged revoked; the grant arriving afterwards never discloses: consent_revoked", revoked_before_granted),
        case!(a, "consent.borrowed_passport_not_held", "after a linked consent for a passport, another consent for the same passport id whose identifier the target does not know is acknowledged not_held and a query under it is answered not_held with no records", borrowed_passport_not_held),
        case!(a, "consent.passport_not_redirected", "after a linked consent for a passport, a consent for the same passport id carrying a second held person's identifier is acknowledged subject_mismatch; a query under it is refused subject_mismatch, and the first consent still discloses (needs other_subject)", passport_not_redirected),
        case!(a, "consent.validity_beyond_ceiling_rejected", "a consent valid for more than 3650 days is rejected and not stored", validity_beyond_ceiling),
        case!(a, "consent.superseded", "after a newer consent by the same recorder supersedes it, a query under the old one is refused consent_superseded and under the new one disclosed", superseded),
        case!(a, "consent.supersede_by_other_ignored", "a consent recorded by another agency cannot supersede the suite's consent: the old one still discloses", supersede_by_other_ignored),
    ]
}

/// After a refused grant: a query under the consent must find no consent.
async fn nothing_stored(ctx: &Ctx, conn: &Conn, d: &Draft, how: String) -> CaseResult {
    ask_expect_refusal(ctx, conn, d, RefusalReason::NoConsent)
        .await
        .map_err(|e| match e {
            CaseError::Fail(m) => CaseError::Fail(format!(
                "the grant was refused ({how}) but a later query shows it stored: {m}"
            )),
            other => other,
        })?;
    conn.close();
    Ok(format!("{how}; query afterwards: no_consent"))
}

/// Sends `grant_env` for draft `d` on `conn`, expects it refused, then checks nothing stored.
async fn refused_grant(ctx: &Ctx, conn: &Conn, d: &Draft, grant_env: &Envelope) -> CaseResult {
    let answer = conn.request(grant_env).await?;
    let how = check::not_stored(
        ctx.target(),
        &answer,
        &d.consent.consent_id,
        AckSubject::Grant,
    )?;
    nothing_stored(ctx, conn, d, how).await
}

async fn grant_linked(ctx: &Ctx) -> CaseResult {
    let conn = ctx.conn().await?;
    linked(ctx, &conn).await?;
    conn.close();
    Ok("ack linked".into())
}

async fn grant_idempotent(ctx: &Ctx) -> CaseResult {
    let conn = ctx.conn().await?;
    let d = craft::draft(ctx, &ctx.me, &ctx.subject);
    let env = craft::grant_draft(ctx, &ctx.me, &d);
    for i in 0..2 {
        let answer = conn.request(&env).await?;
        check::ack(
            ctx.target(),
            &answer,
            &d.consent.consent_id,
            AckSubject::Grant,
            &[AckOutcome::Linked],
        )
        .map_err(|e| match e {
            CaseError::Fail(m) => CaseError::Fail(format!("delivery {}: {m}", i + 1)),
            other => other,
        })?;
    }
    conn.close();
    Ok("linked twice".into())
}

async fn disclosed(ctx: &Ctx) -> CaseResult {
    let conn = ctx.conn().await?;
    let d = linked(ctx, &conn).await?;
    let (env, q, answer) = ask(ctx, &conn, &ctx.me, &d, ctx.categories.clone()).await?;
    let r = check::outcome(ctx.target(), &env, &q, &answer, Outcome::Disclosed)?;
    conn.close();
    ensure(r.consent_id.as_ref() == Some(&d.consent.consent_id), || {
        format!("disclosure names consent {:?}", r.consent_id)
    })?;
    ensure(
        r.records.iter().all(|x| {
            q.requests
                .iter()
                .any(|h| h.categories.contains(&x.category))
        }),
        || "records of categories not asked for".into(),
    )?;
    Ok(format!("disclosed {} records", r.records.len()))
}

async fn unknown_subject_not_held(ctx: &Ctx) -> CaseResult {
    let conn = ctx.conn().await?;
    let d = craft::draft(ctx, &ctx.me, &ctx.unknown_subject);
    grant(ctx, &conn, &ctx.me, &d, &[AckOutcome::NotHeld]).await?;
    let (env, q, answer) = ask(ctx, &conn, &ctx.me, &d, ctx.categories.clone()).await?;
    let r = check::outcome(ctx.target(), &env, &q, &answer, Outcome::NotHeld)?;
    conn.close();
    ensure(r.records.is_empty() && r.withheld.is_empty(), || {
        "a not_held answer says what was withheld".into()
    })?;
    ensure(
        r.detail
            .as_deref()
            .is_none_or(|t| !t.contains(ctx.unknown_subject.value.as_str())),
        || "the answer echoes the identifier".into(),
    )?;
    Ok("ack not_held; response not_held, empty".into())
}

async fn wrong_identifier_rejected(ctx: &Ctx) -> CaseResult {
    let conn = ctx.conn().await?;
    let d = craft::draft(ctx, &ctx.me, &ctx.subject);
    let env = craft::grant(
        &ctx.me,
        craft::seal_consent(&ctx.me, &d.consent),
        &ctx.target().agency,
        Some(ctx.unknown_subject.clone()),
        Some(d.salt),
    );
    refused_grant(ctx, &conn, &d, &env).await
}

async fn wrong_salt_rejected(ctx: &Ctx) -> CaseResult {
    let conn = ctx.conn().await?;
    let d = craft::draft(ctx, &ctx.me, &ctx.subject);
    let env = craft::grant(
        &ctx.me,
        craft::seal_consent(&ctx.me, &d.consent),
        &ctx.target().agency,
        Some(d.subject.clone()),
        Some(craft::salt()),
    );
    refused_grant(ctx, &conn, &d, &env).await
}

/// A draft whose commitment is over `subject` (which the grant will carry).
fn draft_for(ctx: &Ctx, subject: SubjectIdentifier) -> Draft {
    let mut d = craft::draft(ctx, &ctx.me, &ctx.subject);
    d.subject = subject;
    craft::recommit(ctx, &mut d);
    d
}

async fn wrong_scheme_rejected(ctx: &Ctx) -> CaseResult {
    let other = IdScheme::ALL
        .into_iter()
        .find(|s| *s != ctx.subject.scheme)
        .unwrap_or(IdScheme::CouncilRef);
    let conn = ctx.conn().await?;
    let d = draft_for(ctx, random_identifier(other));
    refused_grant(ctx, &conn, &d, &craft::grant_draft(ctx, &ctx.me, &d)).await
}

async fn invalid_identifier_rejected(ctx: &Ctx) -> CaseResult {
    let conn = ctx.conn().await?;
    let bad = SubjectIdentifier {
        scheme: ctx.subject.scheme,
        value: "not a valid identifier!".into(),
    };
    let d = draft_for(ctx, bad);
    refused_grant(ctx, &conn, &d, &craft::grant_draft(ctx, &ctx.me, &d)).await
}

async fn without_identifier_rejected(ctx: &Ctx) -> CaseResult {
    let conn = ctx.conn().await?;
    let d = craft::draft(ctx, &ctx.me, &ctx.subject);
    let env = craft::grant(
        &ctx.me,
        craft::seal_consent(&ctx.me, &d.consent),
        &ctx.target().agency,
        None,
        None,
    );
    refused_grant(ctx, &conn, &d, &env).await
}

async fn recipient_mismatch_rejected(ctx: &Ctx) -> CaseResult {
    let conn = ctx.conn().await?;
    let d = craft::draft(ctx, &ctx.me, &ctx.subject);
    let env = craft::grant(
        &ctx.me,
        craft::seal_consent(&ctx.me, &d.consent),
        ctx.me.agency(),
        Some(d.subject.clone()),
        Some(d.salt),
    );
    refused_grant(ctx, &conn, &d, &env).await
}

async fn target_not_named_rejected(ctx: &Ctx) -> CaseResult {
    let conn = ctx.conn().await?;
    let mut d = craft::draft(ctx, &ctx.me, &ctx.subject);
    let salt = craft::salt();
    d.consent.holders = vec![HolderScope {
        agency: ctx.me.agency().clone(),
        categories: ctx.categories.clone(),
        subject_commitment: commitment(ctx.me.agency(), &d.subject, &salt),
    }];
    refused_grant(ctx, &conn, &d, &craft::grant_draft(ctx, &ctx.me, &d)).await
}

async fn recorded_by_other_rejected(ctx: &Ctx) -> CaseResult {
    let conn = ctx.conn().await?;
    match &ctx.second {
        Some(second) => {
            // Recorded (and validly signed) by the second identity, delivered by the first.
            let mut d = craft::draft(ctx, second, &ctx.subject);
            d.consent.grantees = vec![ctx.me.agency().clone(), second.agency().clone()];
            let env = craft::grant(
                &ctx.me,
                craft::seal_consent(second, &d.consent),
                &ctx.target().agency,
                Some(d.subject.clone()),
                Some(d.salt),
            );
            refused_grant(ctx, &conn, &d, &env).await
        }
        None => {
            // Claims the target itself recorded it (signed by the suite's keys).
            let mut d = craft::draft(ctx, &ctx.me, &ctx.subject);
            d.consent.recorded_by = ctx.target().agency.clone();
            let env = craft::grant_draft(ctx, &ctx.me, &d);
            refused_grant(ctx, &conn, &d, &env)
                .await
                .map(|s| format!("{s} (imprecise: no second identity configured)"))
        }
    }
}

async fn grant_not_signed_by_sender(ctx: &Ctx) -> CaseResult {
    let conn = ctx.conn().await?;
    let d = craft::draft(ctx, &ctx.me, &ctx.subject);
    let mut env = craft::grant_draft(ctx, &ctx.me, &d);
    env.sigs.clear();
    let signer = ctx
        .second
        .as_ref()
        .map(|s| s.node_key().clone())
        .unwrap_or_else(SecretKey::generate);
    env.add_signature(SignerRole::Node, &signer);
    refused_grant(ctx, &conn, &d, &env).await
}

async fn artefact_caseworker_unsigned(ctx: &Ctx) -> CaseResult {
    let conn = ctx.conn().await?;
    let d = craft::draft(ctx, &ctx.me, &ctx.subject);
    let consent = Envelope::seal(&d.consent, &[(SignerRole::Node, ctx.me.node_key())]);
    let env = craft::grant(
        &ctx.me,
        consent,
        &ctx.target().agency,
        Some(d.subject.clone()),
        Some(d.salt),
    );
    refused_grant(ctx, &conn, &d, &env).await
}

async fn artefact_node_unsigned(ctx: &Ctx) -> CaseResult {
    let conn = ctx.conn().await?;
    let d = craft::draft(ctx, &ctx.me, &ctx.subject);
    let consent = Envelope::seal(&d.consent, &[(SignerRole::Person, &ctx.me.cw.key)]);
    let env = craft::grant(
        &ctx.me,
        consent,
        &ctx.target().agency,
        Some(d.subject.clone()),
        Some(d.salt),
    );
    refused_grant(ctx, &conn, &d, &env).await
}

async fn artefact_invalid(ctx: &Ctx) -> CaseResult {
    let conn = ctx.conn().await?;
    let mut d = craft::draft(ctx, &ctx.me, &ctx.subject);
    d.consent.valid_until = d.consent.valid_from;
    refused_grant(ctx, &conn, &d, &craft::grant_draft(ctx, &ctx.me, &d)).await
}

async fn artefact_credential_expired(ctx: &Ctx) -> CaseResult {
    let t = now();
    let cw = issue(
        &ctx.me.member,
        &ctx.me.cw.person,
        vec![StaffRole::Caseworker],
        t.minus_secs(7200),
        t.minus_secs(3600),
        ctx.me.node_key(),
    );
    let actor = Actor {
        member: ctx.me.member.clone(),
        cw,
    };
    let conn = ctx.conn().await?;
    let d = craft::draft(ctx, &actor, &ctx.subject);
    refused_grant(ctx, &conn, &d, &craft::grant_draft(ctx, &actor, &d)).await
}

/// A consent naming the suite as the only holder and both the suite and the target as
/// grantees, delivered to the target (which holds nothing under it).
async fn grantee_only(ctx: &Ctx, conn: &Conn) -> Result<Draft, CaseError> {
    let mut d = craft::draft(ctx, &ctx.me, &ctx.subject);
    let salt = craft::salt();
    d.consent.holders = vec![HolderScope {
        agency: ctx.me.agency().clone(),
        categories: ctx.categories.clone(),
        subject_commitment: commitment(ctx.me.agency(), &d.subject, &salt),
    }];
    d.consent.grantees = vec![ctx.me.agency().clone(), ctx.target().agency.clone()];
    let env = craft::grant(
        &ctx.me,
        craft::seal_consent(&ctx.me, &d.consent),
        &ctx.target().agency,
        None,
        None,
    );
    let answer = conn.request(&env).await?;
    check::ack(
        ctx.target(),
        &answer,
        &d.consent.consent_id,
        AckSubject::Grant,
        &[AckOutcome::Stored],
    )?;
    Ok(d)
}

async fn grantee_only_stored(ctx: &Ctx) -> CaseResult {
    let conn = ctx.conn().await?;
    grantee_only(ctx, &conn).await?;
    conn.close();
    Ok("ack stored".into())
}

async fn holder_not_covered(ctx: &Ctx) -> CaseResult {
    let conn = ctx.conn().await?;
    let d = grantee_only(ctx, &conn).await?;
    ask_expect_refusal(ctx, &conn, &d, RefusalReason::HolderNotCovered).await?;
    conn.close();
    Ok("refused: holder_not_covered".into())
}

async fn requester_not_grantee(ctx: &Ctx) -> CaseResult {
    let conn = ctx.conn().await?;
    let mut d = craft::draft(ctx, &ctx.me, &ctx.subject);
    d.consent.grantees = vec![ctx.target().agency.clone()];
    grant(ctx, &conn, &ctx.me, &d, &[AckOutcome::Linked]).await?;
    ask_expect_refusal(ctx, &conn, &d, RefusalReason::RequesterNotGrantee).await?;
    conn.close();
    Ok("refused: requester_not_grantee".into())
}

async fn purpose_not_covered(ctx: &Ctx) -> CaseResult {
    let other = Purpose::ALL
        .into_iter()
        .find(|p| *p != ctx.purpose)
        .unwrap_or(Purpose::Safeguarding);
    let conn = ctx.conn().await?;
    let d = linked(ctx, &conn).await?;
    let mut q = craft::query(
        ctx,
        &ctx.me,
        d.consent.passport_id.clone(),
        Some(d.consent.consent_id.clone()),
        ctx.categories.clone(),
    );
    q.purpose = other;
    let (env, answer) = super::send_query(&conn, &ctx.me, &q).await?;
    check::refused(
        ctx.target(),
        &env,
        &q,
        &answer,
        RefusalReason::PurposeNotCovered,
    )?;
    conn.close();
    Ok(format!(
        "{other} under a {} consent: purpose_not_covered",
        ctx.purpose
    ))
}

async fn category_not_covered(ctx: &Ctx) -> CaseResult {
    let first = ctx.categories.first().copied().unwrap_or(Category::Health);
    let Some(outside) = category_outside(&[first]) else {
        return Err(CaseError::Fail("suite: no category outside".into()));
    };
    let conn = ctx.conn().await?;
    let mut d = craft::draft(ctx, &ctx.me, &ctx.subject);
    for h in &mut d.consent.holders {
        h.categories = vec![first];
    }
    grant(ctx, &conn, &ctx.me, &d, &[AckOutcome::Linked]).await?;
    let (env, q, answer) = ask(ctx, &conn, &ctx.me, &d, vec![first, outside]).await?;
    check::refused(
        ctx.target(),
        &env,
        &q,
        &answer,
        RefusalReason::CategoryNotCovered,
    )?;
    conn.close();
    Ok(format!(
        "consent covers {first}; asked {first} and {outside}: category_not_covered"
    ))
}

async fn empty_categories(ctx: &Ctx) -> CaseResult {
    let conn = ctx.conn().await?;
    let d = linked(ctx, &conn).await?;
    let (env, q, answer) = ask(ctx, &conn, &ctx.me, &d, Vec::new()).await?;
    check::refused(ctx.target(), &env, &q, &answer, RefusalReason::NotAddressed)?;
    conn.close();
    Ok("refused: not_addressed".into())
}

async fn passport_mismatch(ctx: &Ctx) -> CaseResult {
    let conn = ctx.conn().await?;
    let d = linked(ctx, &conn).await?;
    let q = craft::query(
        ctx,
        &ctx.me,
        PassportId::random(),
        Some(d.consent.consent_id.clone()),
        ctx.categories.clone(),
    );
    let (env, answer) = super::send_query(&conn, &ctx.me, &q).await?;
    check::refused(
        ctx.target(),
        &env,
        &q,
        &answer,
        RefusalReason::ConsentPassportMismatch,
    )?;
    conn.close();
    Ok("refused: consent_passport_mismatch".into())
}

async fn expired(ctx: &Ctx) -> CaseResult {
    let conn = ctx.conn().await?;
    let t = now();
    // First choice: a consent whose validity ended an hour ago. Accepting its grant is
    // allowed (the artefact is valid; it just no longer permits anything).
    let mut d = craft::draft(ctx, &ctx.me, &ctx.subject);
    d.consent.valid_from = t.minus_secs(7200);
    d.consent.valid_until = t.minus_secs(3600);
    let got = grant(
        ctx,
        &conn,
        &ctx.me,
        &d,
        &[AckOutcome::Linked, AckOutcome::Rejected],
    )
    .await?;
    if got == AckOutcome::Linked {
        ask_expect_refusal(ctx, &conn, &d, RefusalReason::ConsentExpired).await?;
        conn.close();
        return Ok("already-expired consent linked, then consent_expired (no wait)".into());
    }
    // The target refuses already-expired grants: use one valid for two more seconds.
    let mut d = craft::draft(ctx, &ctx.me, &ctx.subject);
    d.consent.valid_until = now().plus_secs(2);
    grant(ctx, &conn, &ctx.me, &d, &[AckOutcome::Linked]).await?;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(4);
    while now() <= d.consent.valid_until && tokio::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    ask_expect_refusal(ctx, &conn, &d, RefusalReason::ConsentExpired).await?;
    conn.close();
    Ok("short consent linked, lapsed, then consent_expired".into())
}

async fn not_yet_valid(ctx: &Ctx) -> CaseResult {
    let conn = ctx.conn().await?;
    let t = now();
    let mut d = craft::draft(ctx, &ctx.me, &ctx.subject);
    d.consent.valid_from = t.plus_secs(3600);
    d.consent.valid_until = t.plus_secs(7200);
    grant(ctx, &conn, &ctx.me, &d, &[AckOutcome::Linked]).await?;
    ask_expect_refusal(ctx, &conn, &d, RefusalReason::ConsentNotYetValid).await?;
    conn.close();
    Ok("refused: consent_not_yet_valid".into())
}

async fn revoke(ctx: &Ctx, conn: &Conn, actor: &Actor, d: &Draft) -> Result<(), CaseError> {
    let answer = conn.request(&craft::revocation(actor, &d.consent)).await?;
    check::ack(
        ctx.target(),
        &answer,
        &d.consent.consent_id,
        AckSubject::Revoke,
        &[AckOutcome::Revoked],
    )?;
    Ok(())
}

async fn revoked(ctx: &Ctx) -> CaseResult {
    let conn = ctx.conn().await?;
    let d = linked(ctx, &conn).await?;
    revoke(ctx, &conn, &ctx.me, &d).await?;
    ask_expect_refusal(ctx, &conn, &d, RefusalReason::ConsentRevoked).await?;
    conn.close();
    Ok("ack revoked, then consent_revoked".into())
}

async fn revocation_idempotent(ctx: &Ctx) -> CaseResult {
    let conn = ctx.conn().await?;
    let d = linked(ctx, &conn).await?;
    let env = craft::revocation(&ctx.me, &d.consent);
    for i in 0..2 {
        let answer = conn.request(&env).await?;
        check::ack(
            ctx.target(),
            &answer,
            &d.consent.consent_id,
            AckSubject::Revoke,
            &[AckOutcome::Revoked],
        )
        .map_err(|e| match e {
            CaseError::Fail(m) => CaseError::Fail(format!("delivery {}: {m}", i + 1)),
            other => other,
        })?;
    }
    conn.close();
    Ok("revoked twice".into())
}

async fn revoked_stays_revoked(ctx: &Ctx) -> CaseResult {
    let conn = ctx.conn().await?;
    let d = linked(ctx, &conn).await?;
    revoke(ctx, &conn, &ctx.me, &d).await?;
    let answer = conn.request(&craft::grant_draft(ctx, &ctx.me, &d)).await?;
    check::ack(
        ctx.target(),
        &answer,
        &d.consent.consent_id,
        AckSubject::Grant,
        &[AckOutcome::Linked, AckOutcome::Rejected],
    )?;
    ask_expect_refusal(ctx, &conn, &d, RefusalReason::ConsentRevoked).await?;
    conn.close();
    Ok("grant re-delivered after revocation; still consent_revoked".into())
}

async fn revoke_by_other_rejected(ctx: &Ctx) -> CaseResult {
    let conn = ctx.conn().await?;
    let d = linked(ctx, &conn).await?;
    let (answer, precise) = match &ctx.second {
        Some(second) => {
            let c2 = ctx.conn_as(second).await?;
            let a = c2.request(&craft::revocation(second, &d.consent)).await?;
            c2.close();
            (a, true)
        }
        None => {
            // Claims the target revoked it (signed by the suite's keys).
            let mut impostor = ctx.me.clone();
            impostor.member.agency = ctx.target().agency.clone();
            let a = conn
                .request(&craft::revocation(&impostor, &d.consent))
                .await?;
            (a, false)
        }
    };
    let how = check::not_stored(
        ctx.target(),
        &answer,
        &d.consent.consent_id,
        AckSubject::Revoke,
    )?;
    let (env, q, answer) = ask(ctx, &conn, &ctx.me, &d, ctx.categories.clone()).await?;
    check::outcome(ctx.target(), &env, &q, &answer, Outcome::Disclosed).map_err(|e| match e {
        CaseError::Fail(m) => CaseError::Fail(format!(
            "revocation by another agency was refused ({how}) yet took effect: {m}"
        )),
        other => other,
    })?;
    conn.close();
    Ok(format!(
        "{how}; consent still discloses{}",
        if precise {
            ""
        } else {
            " (imprecise: no second identity configured)"
        }
    ))
}

// Deliveries can arrive in any order (a holder that was down, retries): a withdrawal must
// hold whichever comes first (SPEC 8.5).
async fn revoked_before_granted(ctx: &Ctx) -> CaseResult {
    let conn = ctx.conn().await?;
    let d = craft::draft(ctx, &ctx.me, &ctx.subject);
    let answer = conn
        .request(&craft::revocation(&ctx.me, &d.consent))
        .await?;
    check::ack(
        ctx.target(),
        &answer,
        &d.consent.consent_id,
        AckSubject::Revoke,
        &[AckOutcome::Revoked],
    )?;
    grant(
        ctx,
        &conn,
        &ctx.me,
        &d,
        &[AckOutcome::Linked, AckOutcome::NotHeld],
    )
    .await?;
    ask_expect_refusal(ctx, &conn, &d, RefusalReason::ConsentRevoked).await?;
    conn.close();
    Ok("revocation first: ack revoked; grant afterwards; query: consent_revoked".into())
}

// The holder links each consent to the subject its own identifier matched, never to whoever
// the passport id names through another consent (SPEC 8.4).
async fn borrowed_passport_not_held(ctx: &Ctx) -> CaseResult {
    let conn = ctx.conn().await?;
    let real = linked(ctx, &conn).await?;
    let mut borrowed = craft::draft(ctx, &ctx.me, &ctx.unknown_subject);
    borrowed.consent.passport_id = real.consent.passport_id.clone();
    grant(ctx, &conn, &ctx.me, &borrowed, &[AckOutcome::NotHeld]).await?;
    let (env, q, answer) = ask(ctx, &conn, &ctx.me, &borrowed, ctx.categories.clone()).await?;
    let r = check::outcome(ctx.target(), &env, &q, &answer, Outcome::NotHeld)?;
    conn.close();
    ensure(r.records.is_empty(), || {
        "records disclosed under a consent whose identifier matched nobody".into()
    })?;
    Ok("borrowed passport id: ack not_held; query not_held, no records".into())
}

// A passport id names one person at each holder, forever (SPEC 8.4 step 7).
async fn passport_not_redirected(ctx: &Ctx) -> CaseResult {
    let Some(other) = &ctx.other_subject else {
        return Err(CaseError::Unsupported(
            "the identity file names no other_subject".into(),
        ));
    };
    let conn = ctx.conn().await?;
    let real = linked(ctx, &conn).await?;
    let mut redirect = craft::draft(ctx, &ctx.me, other);
    redirect.consent.passport_id = real.consent.passport_id.clone();
    grant(
        ctx,
        &conn,
        &ctx.me,
        &redirect,
        &[AckOutcome::SubjectMismatch],
    )
    .await?;
    ask_expect_refusal(ctx, &conn, &redirect, RefusalReason::SubjectMismatch).await?;
    let (env, q, answer) = ask(ctx, &conn, &ctx.me, &real, ctx.categories.clone()).await?;
    check::outcome(ctx.target(), &env, &q, &answer, Outcome::Disclosed)?;
    conn.close();
    Ok("second person's identifier: ack subject_mismatch; query subject_mismatch; the first consent still discloses".into())
}

async fn validity_beyond_ceiling(ctx: &Ctx) -> CaseResult {
    let conn = ctx.conn().await?;
    let mut d = craft::draft(ctx, &ctx.me, &ctx.subject);
    d.consent.valid_until = d.consent.valid_from.plus_secs(3651 * 86_400);
    let env = craft::grant_draft(ctx, &ctx.me, &d);
    refused_grant(ctx, &conn, &d, &env).await
}

async fn superseded(ctx: &Ctx) -> CaseResult {
    let conn = ctx.conn().await?;
    let old = linked(ctx, &conn).await?;
    let mut new = craft::draft(ctx, &ctx.me, &ctx.subject);
    new.consent.passport_id = old.consent.passport_id.clone();
    new.consent.supersedes = Some(old.consent.consent_id.clone());
    grant(ctx, &conn, &ctx.me, &new, &[AckOutcome::Linked]).await?;
    ask_expect_refusal(ctx, &conn, &old, RefusalReason::ConsentSuperseded).await?;
    let (env, q, answer) = ask(ctx, &conn, &ctx.me, &new, ctx.categories.clone()).await?;
    check::outcome(ctx.target(), &env, &q, &answer, Outcome::Disclosed)?;
    conn.close();
    Ok("old: consent_superseded; new: disclosed".into())
}

// Only the recording agency may revoke a consent (SPEC 8.5), and so only it may supersede one
// (SPEC 8.4 step 6): otherwise any member that learns a consent id and its passport id could
// cancel another agency's consent at a holder.
async fn supersede_by_other_ignored(ctx: &Ctx) -> CaseResult {
    let conn = ctx.conn().await?;
    let old = linked(ctx, &conn).await?;
    let precise = ctx.second.is_some();
    match &ctx.second {
        Some(second) => {
            let mut new = craft::draft(ctx, second, &ctx.subject);
            new.consent.passport_id = old.consent.passport_id.clone();
            new.consent.supersedes = Some(old.consent.consent_id.clone());
            let c2 = ctx.conn_as(second).await?;
            // The target may store the other agency's consent (it is a consent in its own
            // right) or refuse it; either way the suite's consent must survive.
            let answer = c2.request(&craft::grant_draft(ctx, second, &new)).await?;
            check::ack(
                ctx.target(),
                &answer,
                &new.consent.consent_id,
                AckSubject::Grant,
                &[AckOutcome::Linked, AckOutcome::Rejected],
            )?;
            c2.close();
        }
        None => {
            let mut new = craft::draft(ctx, &ctx.me, &ctx.subject);
            new.consent.passport_id = old.consent.passport_id.clone();
            new.consent.supersedes = Some(old.consent.consent_id.clone());
            new.consent.recorded_by = ctx.target().agency.clone();
            let answer = conn
                .request(&craft::grant_draft(ctx, &ctx.me, &new))
                .await?;
            check::not_stored(
                ctx.target(),
                &answer,
                &new.consent.consent_id,
                AckSubject::Grant,
            )?;
        }
    }
    let (env, q, answer) = ask(ctx, &conn, &ctx.me, &old, ctx.categories.clone()).await?;
    check::outcome(ctx.target(), &env, &q, &answer, Outcome::Disclosed).map_err(|e| match e {
        CaseError::Fail(m) => CaseError::Fail(format!(
            "another agency's consent superseded the suite's consent: {m}"
        )),
        other => other,
    })?;
    conn.close();
    Ok(format!(
        "the suite's consent still discloses{}",
        if precise {
            ""
        } else {
            " (imprecise: no second identity configured)"
        }
    ))
}
