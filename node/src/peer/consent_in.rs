//! Receiving consent grants and revocations from the recording agency (or from this node's own
//! outbox when it is itself a holder or grantee). Each is verified end to end and answered with
//! a signed acknowledgement. Both are idempotent: a redelivery gets the same answer.

use std::sync::atomic::AtomicU64;

use throughgate_protocol::audit::AuditEvent;
use throughgate_protocol::consent::{
    verify_consent, verify_revocation, Consent, ConsentGrant, ConsentRevocation, ConsentStatus,
};
use throughgate_protocol::envelope::Envelope;
use throughgate_protocol::identifiers::commitment_matches;
use throughgate_protocol::ids::{AgencyId, ConsentId};
use throughgate_protocol::messages::{Ack, AckOutcome, AckSubject, ErrorCode};
use throughgate_protocol::time::Timestamp;

use crate::audit::AuditLog;
use crate::clock::Clock;
use crate::config::NodeConfig;
use crate::consent::{consent_entry, newly_active, superseded_event, within_validity};
use crate::consent_gate::ConsentGate;
use crate::db::Db;
use crate::db::{supersedes, Linkage};
use crate::keyring::NodeKey;
use crate::metrics::Metrics;
use crate::ratelimit::ConsentLimits;
use crate::source::RecordSource;
use crate::state::NodeState;
use crate::trust::Trust;

/// What receiving consents and their withdrawals uses of the node, and nothing else.
#[derive(Clone, Copy)]
pub struct ConsentIn<'a> {
    /// This agency.
    pub agency: &'a AgencyId,
    /// Signs acknowledgements and errors.
    pub key: &'a NodeKey,
    /// Consent validity, the identifier scheme, the source timeout.
    pub config: &'a NodeConfig,
    /// Consents, their linkage, passports' subjects, withdrawals kept aside.
    pub db: &'a Db,
    /// Asked whether the person a consent names is known here.
    pub records: &'a dyn RecordSource,
    /// The manifest.
    pub trust: &'a Trust,
    /// The clock.
    pub clock: &'a Clock,
    /// Source errors, limits and consent alarms.
    pub metrics: &'a Metrics,
    /// Delivery allowances per sending agency.
    pub consent_limits: &'a ConsentLimits,
    /// Where consent changes are logged.
    pub audit: &'a AuditLog,
    /// Orders consent status changes against decisions.
    pub consent_gate: &'a ConsentGate,
    /// Consents received that named a different person than their passport id does here.
    pub consent_alarms: &'a AtomicU64,
}

impl<'a> ConsentIn<'a> {
    /// The parts of `state` that receiving consents uses.
    pub fn of(state: &'a NodeState) -> Self {
        ConsentIn {
            agency: &state.agency,
            key: &state.key,
            config: &state.config,
            db: &state.db,
            records: &*state.records,
            trust: &state.trust,
            clock: &state.clock,
            metrics: &state.metrics,
            consent_limits: &state.consent_limits,
            audit: &state.audit,
            consent_gate: &state.consent_gate,
            consent_alarms: &state.consent_alarms,
        }
    }
}

fn ack(
    node: &ConsentIn<'_>,
    subject: AckSubject,
    consent_id: ConsentId,
    outcome: AckOutcome,
    reason: Option<String>,
) -> Envelope {
    tracing::info!(consent = %consent_id, subject = ?subject, outcome = outcome.as_str(), reason = reason.as_deref(), "consent message acknowledged");
    node.key.seal(&Ack {
        subject,
        consent_id,
        agency: node.agency.clone(),
        outcome,
        reason,
        at: node.clock.now(),
    })
}

/// Handles a `consent_grant` from `from`.
pub async fn grant(node: &ConsentIn<'_>, from: &AgencyId, env: &Envelope) -> Envelope {
    let Some(manifest) = node.trust.manifest() else {
        return node.key.error(ErrorCode::Internal, "node has no manifest");
    };
    let Some(sender) = manifest.member(from) else {
        return node
            .key
            .error(ErrorCode::Forbidden, "sender is not a member");
    };
    if env
        .verify_by_any(
            throughgate_protocol::envelope::SignerRole::Node,
            &sender.node_keys,
        )
        .is_err()
    {
        return node.key.error(
            ErrorCode::BadSignature,
            "the grant is not signed by the sending node",
        );
    }
    let grant: ConsentGrant = match env.open() {
        Ok(g) => g,
        Err(e) => return node.key.error(ErrorCode::Malformed, e.to_string()),
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
                    node,
                    AckSubject::Grant,
                    id,
                    AckOutcome::Rejected,
                    Some(e.to_string()),
                ),
                None => node.key.error(ErrorCode::BadRequest, e.to_string()),
            };
        }
    };
    let id = consent.consent_id.clone();
    if &consent.recorded_by != from {
        return ack(
            node,
            AckSubject::Grant,
            id,
            AckOutcome::Rejected,
            Some(format!(
                "consent was recorded by {}, but delivered by {from}",
                consent.recorded_by
            )),
        );
    }
    if from != node.agency && !node.consent_limits.delivery(from.as_str()) {
        return delivery_rate_limited(node, from).await;
    }
    // From here on the artefact is the recording agency's own: even when this node refuses it,
    // the consent it declares it replaces is replaced here (that can only share less).
    let identifier = match delivered_identifier(node, &grant, &consent) {
        Ok(i) => i,
        Err(why) => return reject_superseding(node, &consent, why).await,
    };
    // Whether the person is known here, asked of the same source queries are answered from
    // (outside the consent gate: a slow source must not hold it).
    let identifier = match identifier {
        None => None,
        Some(subject) => {
            let timeout = node.config.records.source_timeout();
            match node.records.subject_known(&subject, timeout).await {
                Ok(known) => Some((subject, known)),
                Err(crate::source::SourceError::Store(e)) => {
                    return node.key.error(ErrorCode::Internal, e.to_string())
                }
                Err(e) => {
                    node.metrics
                        .source_errors
                        .get_or_create(&crate::metrics::KindLabel {
                            kind: e.metric().into(),
                        })
                        .inc();
                    tracing::warn!(error = %e, consent = %id, "record source gave no usable answer while linking a consent");
                    return node.key.error(
                        ErrorCode::Internal,
                        "this agency's system of record did not answer; the consent was not \
                         stored; deliver it again later",
                    );
                }
            }
        }
    };
    let now = node.clock.now();
    // Exclusively: the passport's subject is read and fixed here, and a supersession or a
    // pending revocation changes a consent's status (see `ConsentGate`).
    let registered = node
        .consent_gate
        .change(|| register(node, &grant.consent, consent, identifier, now));
    let (linkage, changed, pending) = match registered {
        Ok(r) => r,
        Err(e) => return node.key.error(ErrorCode::Internal, e.to_string()),
    };
    for p in pending {
        if let Err(e) = p.wait().await {
            return node.key.error(ErrorCode::Internal, e.to_string());
        }
    }
    let outcome = linkage.as_ref().map_or(AckOutcome::Stored, Linkage::ack);
    if outcome == AckOutcome::SubjectMismatch && changed {
        node.consent_alarms
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        node.metrics.consent_alarms.inc();
        tracing::warn!(consent = %id, recorded_by = %from, "consent names a different person than its passport id already does here; not linked");
    }
    let reason = (outcome == AckOutcome::SubjectMismatch).then(|| {
        "the identifier names a different person here than this passport id already does; nothing will be shared under this consent".to_owned()
    });
    ack(node, AckSubject::Grant, id, outcome, reason)
}

/// Answers a delivery over the sending agency's hourly allowance (logging the refusal at most
/// once a minute per agency); the sender's outbox retries later.
async fn delivery_rate_limited(node: &ConsentIn<'_>, from: &AgencyId) -> Envelope {
    node.metrics.limit("consent_delivery_rate");
    if node.consent_limits.report_refusal(&format!("peer/{from}")) {
        let event = AuditEvent::Admin {
            person_id: None,
            action: "consent_delivery_rate_limited".into(),
            detail: format!("consent deliveries from {from} refused: over the hourly limit"),
        };
        if let Err(e) = node.audit.append(event).await {
            tracing::error!(error = %e, "rate-limit refusal could not be logged");
        }
    }
    node.key.error(
        ErrorCode::RateLimited,
        "this node receives consents from your agency faster than its hourly limit; retry later",
    )
}

/// Checks a verified grant from the recording agency against this node: addressed here, naming
/// it, within its maximum validity and, for a holder, carrying an identifier of its scheme that
/// matches the consent's commitment. Gives that identifier (`None` for a grantee that holds
/// nothing), or why the grant is refused.
fn delivered_identifier(
    node: &ConsentIn<'_>,
    grant: &ConsentGrant,
    consent: &Consent,
) -> Result<Option<String>, String> {
    if grant.recipient != *node.agency {
        return Err(format!("this delivery is addressed to {}", grant.recipient));
    }
    let scope = consent.scope_for(node.agency);
    if scope.is_none() && !consent.is_grantee(node.agency) {
        return Err("this agency is neither a holder nor a grantee of the consent".into());
    }
    within_validity(consent, &node.config.consent)?;
    let Some(scope) = scope else {
        return Ok(None);
    };
    let (Some(subject), Some(salt)) = (&grant.subject, &grant.salt) else {
        return Err("a holder's delivery must carry its identifier and salt".into());
    };
    if subject.scheme != node.config.id_scheme {
        return Err(format!(
            "this agency identifies people by {}, not {}",
            node.config.id_scheme, subject.scheme
        ));
    }
    if subject.validate().is_err() {
        return Err(format!("the {} is not valid", subject.scheme.title()));
    }
    if !commitment_matches(&scope.subject_commitment, node.agency, subject, salt) {
        return Err("the identifier does not match the consent's commitment".into());
    }
    Ok(Some(subject.value.clone()))
}

/// Refuses a verified grant from its recording agency, first ending here the consent it
/// declares it replaces: the recording agency meant the old one to stop, and refusing the new
/// one must not leave the old one disclosing (nor escaping a later withdrawal of the new one).
async fn reject_superseding(node: &ConsentIn<'_>, consent: &Consent, why: String) -> Envelope {
    let pending = match node.consent_gate.change(|| end_superseded(node, consent)) {
        Ok(p) => p,
        Err(e) => return node.key.error(ErrorCode::Internal, e.to_string()),
    };
    if let Some(p) = pending {
        if let Err(e) = p.wait().await {
            return node.key.error(ErrorCode::Internal, e.to_string());
        }
    }
    ack(
        node,
        AckSubject::Grant,
        consent.consent_id.clone(),
        AckOutcome::Rejected,
        Some(why),
    )
}

/// Marks superseded the active consent that `new` replaces, if it is stored here and `new`
/// may replace it; returns the pending log entry. The caller holds the consent gate
/// exclusively.
fn end_superseded(
    node: &ConsentIn<'_>,
    new: &Consent,
) -> Result<Option<crate::audit::PendingReceipt>, crate::store::StoreError> {
    let Some(old_id) = &new.supersedes else {
        return Ok(None);
    };
    let Some(mut old) = node.db.consent(old_id)? else {
        return Ok(None);
    };
    if !supersedes(new, &old.body) || old.status != ConsentStatus::Active {
        return Ok(None);
    }
    old.status = ConsentStatus::Superseded;
    old.status_since = node.clock.now();
    old.superseded_by = Some(new.consent_id.clone());
    node.db.update_consent(&old)?;
    let mut entry = consent_entry(&old.body, Some(new.recorded_by_person.clone()), None);
    entry.linkage = None;
    Ok(Some(
        node.audit.submit(AuditEvent::ConsentSuperseded(entry)),
    ))
}

/// Stores a verified consent delivered here (or links one already stored, on a redelivery)
/// and queues its log entries. `identifier` is the person's identifier at this holder with
/// whether a local subject has it; `None` for a grantee that holds nothing. Returns the
/// consent's linkage here, whether this delivery changed it, and the pending log entries. The
/// caller holds the consent gate exclusively.
#[allow(clippy::type_complexity)]
fn register(
    node: &ConsentIn<'_>,
    envelope: &Envelope,
    consent: Consent,
    identifier: Option<(String, bool)>,
    now: Timestamp,
) -> Result<(Option<Linkage>, bool, Vec<crate::audit::PendingReceipt>), crate::store::StoreError> {
    let id = consent.consent_id.clone();
    let existing = node.db.consent(&id)?;
    let previous = node.db.consent_linkage(&id)?;
    let linkage = match (&identifier, &previous) {
        // A consent links once; a redelivery reports what it made then.
        (_, Some(Linkage::Linked(_))) | (None, _) => previous.clone(),
        (Some((subject, known)), _) => {
            let passport_subject = node.db.passport_subject(&consent.passport_id)?;
            Some(Linkage::decide(
                subject,
                *known,
                passport_subject.as_deref(),
            ))
        }
    };
    let changed = linkage != previous;
    let mut pending = Vec::new();
    let mut event = consent_entry(
        &consent,
        Some(consent.recorded_by_person.clone()),
        linkage.as_ref().map(Linkage::ack),
    );
    if identifier.is_none() {
        event.linkage = Some(AckOutcome::Stored);
    }
    match existing {
        None => {
            let mut stored = newly_active(envelope.clone(), consent, now);
            // A consent that a later one already superseded, or whose withdrawal arrived
            // first, is never active here.
            let superseder = node
                .db
                .superseded_by(&id, &stored.body.recorded_by)?
                .filter(|new| supersedes(&new.body, &stored.body));
            if let Some(new) = &superseder {
                stored.status = ConsentStatus::Superseded;
                stored.superseded_by = Some(new.body.consent_id.clone());
            }
            let revocation = node
                .db
                .pending_revocation(&id, &stored.body.recorded_by)?
                .filter(|env| {
                    env.open::<ConsentRevocation>().is_ok_and(|r| {
                        r.revoked_by == stored.body.recorded_by
                            && r.passport_id == stored.body.passport_id
                    })
                });
            if let Some(env) = &revocation {
                stored.status = ConsentStatus::Revoked;
                stored.revocation = Some(env.clone());
            }
            node.db.put_consent(&stored, linkage.as_ref(), now)?;
            if let Some(ev) = superseded_event(node.db, stored.body.supersedes.as_ref(), &event)? {
                pending.push(node.audit.submit(ev));
            }
            pending.push(
                node.audit
                    .submit(AuditEvent::ConsentRegistered(event.clone())),
            );
            if superseder.is_some() {
                let mut e = event.clone();
                e.linkage = None;
                pending.push(node.audit.submit(AuditEvent::ConsentSuperseded(e)));
            }
            if let Some(rev) = revocation.and_then(|env| env.open::<ConsentRevocation>().ok()) {
                let mut e = event;
                e.person = Some(rev.revoked_by_person);
                e.linkage = None;
                pending.push(node.audit.submit(AuditEvent::ConsentRevoked(e)));
            }
        }
        Some(stored) => {
            if let (true, Some(l)) = (changed, &linkage) {
                node.db.put_linkage(&stored, l)?;
                pending.push(node.audit.submit(AuditEvent::ConsentRegistered(event)));
            }
        }
    }
    Ok((linkage, changed, pending))
}

/// Handles a `consent_revoke` from `from`.
pub async fn revoke(node: &ConsentIn<'_>, from: &AgencyId, env: &Envelope) -> Envelope {
    let Some(manifest) = node.trust.manifest() else {
        return node.key.error(ErrorCode::Internal, "node has no manifest");
    };
    let (rev, _cred) = match verify_revocation(env, &manifest) {
        Ok(r) => r,
        Err(e) => return node.key.error(ErrorCode::BadRequest, e.to_string()),
    };
    let id = rev.consent_id.clone();
    let reject = |why: String| {
        ack(
            node,
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
    // Exclusively: a grant of this consent stored between the look-up and keeping the
    // revocation would otherwise be stored active, with its withdrawal kept aside unapplied.
    let mut limited = false;
    let found = node.consent_gate.change(|| {
        match node.db.consent(&id) {
            // Withdrawals of consents held here are never limited; one of a consent not held
            // here is kept, so it counts against the sender's delivery allowance.
            Ok(None) if from != node.agency && !node.consent_limits.delivery(from.as_str()) => {
                limited = true;
                Ok(None)
            }
            // The withdrawal overtook its consent: keep it, so the consent is stored revoked
            // if it ever arrives, and never discloses here.
            Ok(None) => node
                .db
                .put_pending_revocation(&id, &rev.revoked_by, env)
                .map(|()| None),
            other => other,
        }
    });
    if limited {
        return delivery_rate_limited(node, from).await;
    }
    let mut stored = match found {
        Ok(Some(s)) => s,
        Ok(None) => return ack(node, AckSubject::Revoke, id, AckOutcome::Revoked, None),
        Err(e) => return node.key.error(ErrorCode::Internal, e.to_string()),
    };
    if stored.body.recorded_by != rev.revoked_by || stored.body.passport_id != rev.passport_id {
        return reject("only the recording agency may revoke, for the same passport".into());
    }
    if stored.status != ConsentStatus::Revoked {
        stored.status = ConsentStatus::Revoked;
        stored.status_since = node.clock.now();
        stored.revocation = Some(env.clone());
        let event = consent_entry(&stored.body, Some(rev.revoked_by_person.clone()), None);
        // Exclusively, so every decision is logged wholly before or wholly after this.
        let pending = node.consent_gate.change(|| {
            node.db
                .update_consent(&stored)
                .map(|()| node.audit.submit(AuditEvent::ConsentRevoked(event)))
        });
        let pending = match pending {
            Ok(p) => p,
            Err(e) => return node.key.error(ErrorCode::Internal, e.to_string()),
        };
        if let Err(e) = pending.wait().await {
            return node.key.error(ErrorCode::Internal, e.to_string());
        }
    }
    ack(node, AckSubject::Revoke, id, AckOutcome::Revoked, None)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use throughgate_protocol::audit::AuditEntry;
    use throughgate_protocol::envelope::SignerRole;
    use throughgate_protocol::ids::PassportId;
    use throughgate_protocol::messages::ErrorBody;

    use super::*;
    use crate::testing::{self, agency, Parts, HOLDER, REQUESTER, SUBJECT};

    #[tokio::test]
    async fn a_grant_from_its_recording_agency_is_stored_linked_and_logged() {
        let parts = Parts::new();
        let pp = PassportId::random();
        let consent = testing::consent(&pp, parts.clock.now());
        let id = consent.open::<Consent>().unwrap().consent_id;
        let delivery = testing::grant(&consent);
        let answer = grant(&parts.consent_in(), &agency(REQUESTER), &delivery).await;
        answer
            .verify_by(SignerRole::Node, &parts.public_key())
            .unwrap();
        let ack: Ack = answer.open().unwrap();
        assert_eq!(
            (ack.subject, ack.outcome, &ack.consent_id, &ack.agency),
            (AckSubject::Grant, AckOutcome::Linked, &id, &agency(HOLDER))
        );
        let stored = parts.db.consent(&id).unwrap().unwrap();
        assert_eq!(stored.status, ConsentStatus::Active);
        assert_eq!(
            parts.db.consent_linkage(&id).unwrap(),
            Some(Linkage::Linked(SUBJECT.into()))
        );
        assert_eq!(
            parts.db.passport_subject(&pp).unwrap().as_deref(),
            Some(SUBJECT)
        );
        let logged = AuditEntry::from_bytes(&parts.db.audit_entry(0).unwrap().unwrap()).unwrap();
        assert!(
            matches!(&logged.event, AuditEvent::ConsentRegistered(e) if e.consent_id == id),
            "{:?}",
            logged.event
        );
        // A redelivery gets the same answer and logs nothing more.
        let again: Ack = grant(&parts.consent_in(), &agency(REQUESTER), &delivery)
            .await
            .open()
            .unwrap();
        assert_eq!(again.outcome, AckOutcome::Linked);
        assert_eq!(parts.db.audit_entry(1).unwrap(), None);
    }

    #[tokio::test]
    async fn a_grant_not_signed_by_the_agency_that_sent_it_is_refused_and_not_stored() {
        let parts = Parts::new();
        let pp = PassportId::random();
        let consent = testing::consent(&pp, parts.clock.now());
        let id = consent.open::<Consent>().unwrap().consent_id;
        // Signed by the requester's node, but arriving from the holder itself.
        let answer = grant(
            &parts.consent_in(),
            &agency(HOLDER),
            &testing::grant(&consent),
        )
        .await;
        let error: ErrorBody = answer.open().unwrap();
        assert_eq!(error.code, ErrorCode::BadSignature);
        assert!(parts.db.consent(&id).unwrap().is_none());
        assert_eq!(parts.db.audit_entry(0).unwrap(), None);
    }
}
