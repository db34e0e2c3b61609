//! Receiving consent grants and revocations from the recording agency (or from this node's own
//! outbox when it is itself a holder or grantee). Each is verified end to end and answered with
//! a signed acknowledgement. Both are idempotent: a redelivery gets the same answer.

use throughgate_protocol::audit::{AuditEvent, ConsentEntry};
use throughgate_protocol::consent::{
    verify_consent, verify_revocation, Consent, ConsentGrant, ConsentStatus,
};
use throughgate_protocol::envelope::Envelope;
use throughgate_protocol::identifiers::commitment_matches;
use throughgate_protocol::ids::{AgencyId, ConsentId, PersonId};
use throughgate_protocol::messages::{Ack, AckOutcome, AckSubject, ErrorCode};
use throughgate_protocol::time::Timestamp;

use crate::db::StoredConsent;
use crate::node::NodeState;

fn ack(
    state: &NodeState,
    subject: AckSubject,
    consent_id: ConsentId,
    outcome: AckOutcome,
    reason: Option<String>,
) -> Envelope {
    tracing::info!(consent = %consent_id, subject = ?subject, outcome = outcome.as_str(), reason = reason.as_deref(), "consent message acknowledged");
    state.seal(&Ack {
        subject,
        consent_id,
        agency: state.agency.clone(),
        outcome,
        reason,
        at: state.clock.now(),
    })
}

/// Handles a `consent_grant` from `from`.
pub async fn grant(state: &NodeState, from: &AgencyId, env: &Envelope) -> Envelope {
    let Some(manifest) = state.manifest() else {
        return state.error(ErrorCode::Internal, "node has no manifest");
    };
    let Some(sender) = manifest.member(from) else {
        return state.error(ErrorCode::Forbidden, "sender is not a member");
    };
    if env
        .verify_by_any(
            throughgate_protocol::envelope::SignerRole::Node,
            &sender.node_keys,
        )
        .is_err()
    {
        return state.error(
            ErrorCode::BadSignature,
            "the grant is not signed by the sending node",
        );
    }
    let grant: ConsentGrant = match env.open() {
        Ok(g) => g,
        Err(e) => return state.error(ErrorCode::Malformed, e.to_string()),
    };
    let (consent, _cred) = match verify_consent(&grant.consent, &manifest) {
        Ok(c) => c,
        Err(e) => {
            // Without a verified artefact we cannot even name the consent reliably; report the
            // id it claims, if it decodes.
            let claimed = grant
                .consent
                .open::<throughgate_protocol::consent::Consent>()
                .ok()
                .map(|c| c.consent_id);
            return match claimed {
                Some(id) => ack(
                    state,
                    AckSubject::Grant,
                    id,
                    AckOutcome::Rejected,
                    Some(e.to_string()),
                ),
                None => state.error(ErrorCode::BadRequest, e.to_string()),
            };
        }
    };
    let id = consent.consent_id.clone();
    let reject = |why: String| {
        ack(
            state,
            AckSubject::Grant,
            id.clone(),
            AckOutcome::Rejected,
            Some(why),
        )
    };
    if &consent.recorded_by != from {
        return reject(format!(
            "consent was recorded by {}, but delivered by {from}",
            consent.recorded_by
        ));
    }
    if grant.recipient != state.agency {
        return reject(format!("this delivery is addressed to {}", grant.recipient));
    }
    let scope = consent.scope_for(&state.agency);
    if scope.is_none() && !consent.is_grantee(&state.agency) {
        return reject("this agency is neither a holder nor a grantee of the consent".into());
    }
    // Idempotence: a consent already stored keeps its status (a revoked one stays revoked);
    // only a missing link is added.
    let existing = match state.db.consent(&id) {
        Ok(e) => e,
        Err(e) => return state.error(ErrorCode::Internal, e.to_string()),
    };
    let mut link = None;
    let outcome = match scope {
        None => AckOutcome::Stored,
        Some(scope) => {
            let (Some(subject), Some(salt)) = (&grant.subject, &grant.salt) else {
                return reject("a holder's delivery must carry its identifier and salt".into());
            };
            if subject.scheme != state.config.id_scheme {
                return reject(format!(
                    "this agency identifies people by {}, not {}",
                    state.config.id_scheme, subject.scheme
                ));
            }
            if subject.validate().is_err() {
                return reject(format!("the {} is not valid", subject.scheme.title()));
            }
            if !commitment_matches(&scope.subject_commitment, &state.agency, subject, salt) {
                return reject("the identifier does not match the consent's commitment".into());
            }
            match state.db.subject_known(&subject.value) {
                Ok(true) => {
                    link = Some(subject.value.clone());
                    AckOutcome::Linked
                }
                Ok(false) => AckOutcome::NotHeld,
                Err(e) => return state.error(ErrorCode::Internal, e.to_string()),
            }
        }
    };
    let now = state.clock.now();
    let passport = consent.passport_id.clone();
    let newly_stored = existing.is_none();
    let event = consent_entry(&consent, None, Some(outcome));
    let supersedes = consent.supersedes.clone();
    // Exclusively: a supersession changes another consent's status (see `holder.rs`).
    let pending = {
        let _gate = state
            .consent_gate
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let written = match existing {
            None => {
                let stored = newly_active(grant.consent.clone(), consent, now);
                state.db.put_consent(&stored, link.as_deref(), now)
            }
            Some(_) => match link.as_deref() {
                Some(subject) => state.db.put_link(&passport, subject),
                None => Ok(()),
            },
        };
        if let Err(e) = written {
            return state.error(ErrorCode::Internal, e.to_string());
        }
        let mut pending = Vec::new();
        if newly_stored {
            match superseded_event(state, supersedes.as_ref(), &event) {
                Ok(Some(ev)) => pending.push(state.audit.submit(ev)),
                Ok(None) => {}
                Err(e) => return state.error(ErrorCode::Internal, e.to_string()),
            }
            pending.push(state.audit.submit(AuditEvent::ConsentRegistered(event)));
        }
        pending
    };
    for p in pending {
        if let Err(e) = p.wait().await {
            return state.error(ErrorCode::Internal, e.to_string());
        }
    }
    ack(state, AckSubject::Grant, id, outcome, None)
}

/// A consent as first stored, recorded here or received at `now`: active, never revoked or
/// superseded, its expiry not yet logged.
pub(crate) fn newly_active(envelope: Envelope, body: Consent, now: Timestamp) -> StoredConsent {
    StoredConsent {
        envelope,
        body,
        status: ConsentStatus::Active,
        status_since: now,
        received_at: now,
        revocation: None,
        superseded_by: None,
        expiry_logged: false,
    }
}

/// The audit record of a consent event.
pub(crate) fn consent_entry(
    c: &Consent,
    person: Option<PersonId>,
    linkage: Option<AckOutcome>,
) -> ConsentEntry {
    ConsentEntry {
        consent_id: c.consent_id.clone(),
        passport_id: c.passport_id.clone(),
        recorded_by: c.recorded_by.clone(),
        person,
        purpose: c.purpose,
        linkage,
    }
}

/// The log entry saying that consent `old` (if stored here) was superseded by the one `new`
/// records.
pub(crate) fn superseded_event(
    state: &NodeState,
    old: Option<&ConsentId>,
    new: &ConsentEntry,
) -> Result<Option<AuditEvent>, crate::store::StoreError> {
    let Some(old) = old else { return Ok(None) };
    let Some(prev) = state.db.consent(old)? else {
        return Ok(None);
    };
    if prev.superseded_by.as_ref() != Some(&new.consent_id) {
        return Ok(None);
    }
    let mut entry = consent_entry(&prev.body, new.person.clone(), None);
    entry.linkage = None;
    Ok(Some(AuditEvent::ConsentSuperseded(entry)))
}

/// Handles a `consent_revoke` from `from`.
pub async fn revoke(state: &NodeState, from: &AgencyId, env: &Envelope) -> Envelope {
    let Some(manifest) = state.manifest() else {
        return state.error(ErrorCode::Internal, "node has no manifest");
    };
    let (rev, _cred) = match verify_revocation(env, &manifest) {
        Ok(r) => r,
        Err(e) => return state.error(ErrorCode::BadRequest, e.to_string()),
    };
    let id = rev.consent_id.clone();
    let reject = |why: String| {
        ack(
            state,
            AckSubject::Revoke,
            id.clone(),
            AckOutcome::Rejected,
            Some(why),
        )
    };
    if &rev.revoked_by != from {
        return reject(format!(
            "revocation by {} delivered by {from}",
            rev.revoked_by
        ));
    }
    let mut stored = match state.db.consent(&id) {
        Ok(Some(s)) => s,
        Ok(None) => return reject("this agency holds no consent with that id".into()),
        Err(e) => return state.error(ErrorCode::Internal, e.to_string()),
    };
    if stored.body.recorded_by != rev.revoked_by || stored.body.passport_id != rev.passport_id {
        return reject("only the recording agency may revoke, for the same passport".into());
    }
    if stored.status != ConsentStatus::Revoked {
        stored.status = ConsentStatus::Revoked;
        stored.status_since = state.clock.now();
        stored.revocation = Some(env.clone());
        let event = consent_entry(&stored.body, Some(rev.revoked_by_person.clone()), None);
        // Exclusively, so every decision is logged wholly before or wholly after this.
        let pending = {
            let _gate = state
                .consent_gate
                .write()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            if let Err(e) = state.db.update_consent(&stored) {
                return state.error(ErrorCode::Internal, e.to_string());
            }
            state.audit.submit(AuditEvent::ConsentRevoked(event))
        };
        if let Err(e) = pending.wait().await {
            return state.error(ErrorCode::Internal, e.to_string());
        }
    }
    ack(state, AckSubject::Revoke, id, AckOutcome::Revoked, None)
}
