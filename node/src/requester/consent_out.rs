//! The recording agency's side of consent: a caseworker's signed artefact is checked,
//! countersigned by the node, stored and queued for delivery to every holder (with its own
//! identifier for the person) and grantee, in one atomic write. Revocation likewise.

use throughgate_protocol::audit::AuditEvent;
use throughgate_protocol::consent::{
    verify_person, Consent, ConsentGrant, ConsentRevocation, ConsentStatus,
};
use throughgate_protocol::credential::Credential;
use throughgate_protocol::envelope::{Envelope, SignerRole};
use throughgate_protocol::identifiers::commitment_matches;
use throughgate_protocol::ids::{AgencyId, PersonId};
use throughgate_protocol::manifest::Manifest;
use throughgate_protocol::messages::{ClientResponse, HolderSubject};
use throughgate_protocol::time::Timestamp;

use crate::audit::AuditLog;
use crate::clock::Clock;
use crate::config::ConsentRules;
use crate::consent_gate::ConsentGate;
use crate::db::{Db, OutboxPayload, StoredStaff};
use crate::keyring::NodeKey;
use crate::metrics::Metrics;
use crate::queue::Outbox;
use crate::ratelimit::ConsentLimits;
use crate::state::NodeState;
use crate::trust::Trust;

/// What recording and revoking consents uses of the node, and nothing else.
#[derive(Clone, Copy, Debug)]
pub struct Recorder<'a> {
    /// This agency.
    pub agency: &'a AgencyId,
    /// The node key, which countersigns.
    pub key: &'a NodeKey,
    /// Storage: the consent register.
    pub db: &'a Db,
    /// The clock.
    pub clock: &'a Clock,
    /// The configured consent validity and recording limits.
    pub consent: &'a ConsentRules,
    /// The manifest.
    pub trust: &'a Trust,
    /// Consent recording limits.
    pub consent_limits: &'a ConsentLimits,
    /// Metrics (refusals over a limit).
    pub metrics: &'a Metrics,
    /// Orders this change against consent decisions.
    pub consent_gate: &'a ConsentGate,
    /// The delivery queue.
    pub outbox: &'a Outbox,
    /// The audit log.
    pub audit: &'a AuditLog,
}

impl<'a> Recorder<'a> {
    /// The parts of `state` that recording and revoking consents uses.
    pub fn of(state: &'a NodeState) -> Self {
        Recorder {
            agency: &state.agency,
            key: &state.key,
            db: &state.db,
            clock: &state.clock,
            consent: &state.config.consent,
            trust: &state.trust,
            consent_limits: &state.consent_limits,
            metrics: &state.metrics,
            consent_gate: &state.consent_gate,
            outbox: &state.outbox,
            audit: &state.audit,
        }
    }
}

/// Why a consent or revocation was not recorded.
#[derive(Debug, thiserror::Error)]
pub enum RecordError {
    /// The request is not acceptable; the message says why and what to do.
    #[error("{0}")]
    Rejected(String),
    /// Storage failed.
    #[error(transparent)]
    Store(#[from] crate::store::StoreError),
    /// The change is stored but could not be logged.
    #[error("audit log: {0}")]
    Audit(String),
    /// Over a consent recording limit; nothing was stored.
    #[error("{0}")]
    RateLimited(String),
}

fn rejected(m: impl Into<String>) -> RecordError {
    RecordError::Rejected(m.into())
}

/// How far a client's timestamps may drift from the node's clock, in seconds.
const CLIENT_SKEW_SECS: u64 = 300;

fn near(now: Timestamp, t: Timestamp) -> bool {
    t.0.abs_diff(now.0) <= CLIENT_SKEW_SECS
}

/// Checks that `env` is signed by `person` of this agency under `credential`, issued by this
/// agency's node as the manifest lists it.
fn verify_caller(
    state: &Recorder<'_>,
    manifest: &Manifest,
    env: &Envelope,
    credential: &Envelope,
    person: &PersonId,
    now: Timestamp,
) -> Result<Credential, RecordError> {
    let me = manifest
        .member(state.agency)
        .ok_or_else(|| rejected("this agency is not in the manifest"))?;
    verify_person(env, credential, state.agency, &me.node_keys, person, now)
        .map_err(|e| rejected(e.to_string()))
}

/// Records a consent signed by `staff`.
pub async fn record(
    state: &Recorder<'_>,
    staff: &StoredStaff,
    mut env: Envelope,
    subjects: &[HolderSubject],
    retire: Option<Envelope>,
) -> Result<ClientResponse, RecordError> {
    limit_recording(state, staff).await?;
    let manifest = state
        .trust
        .manifest()
        .ok_or_else(|| rejected("node has no manifest"))?;
    let now = state.clock.now();
    let consent: Consent = env
        .open()
        .map_err(|e| rejected(format!("consent does not decode: {e}")))?;
    consent.validate().map_err(rejected)?;
    if &consent.recorded_by != state.agency || consent.recorded_by_person != staff.body.person_id {
        return Err(rejected(
            "a consent must be recorded by the caller, at this agency",
        ));
    }
    let cred = verify_caller(
        state,
        &manifest,
        &env,
        &consent.credential,
        &consent.recorded_by_person,
        now,
    )?;
    if cred.public_key != staff.body.public_key {
        return Err(rejected("the consent's credential is not the caller's"));
    }
    if !near(now, consent.recorded_at) {
        return Err(rejected(
            "recorded_at is not the current time; check this computer's clock",
        ));
    }
    if consent.valid_until <= now {
        return Err(rejected("the consent would already have expired"));
    }
    crate::consent::within_validity(&consent, state.consent).map_err(rejected)?;
    for h in &consent.holders {
        let m = manifest
            .member(&h.agency)
            .ok_or_else(|| rejected(format!("{} is not a member of the federation", h.agency)))?;
        if !m.is_holder() {
            return Err(rejected(format!("{} does not hold records", h.agency)));
        }
        if let Some(c) = h.categories.iter().find(|c| !m.categories.contains(c)) {
            return Err(rejected(format!("{} does not hold {c} records", h.agency)));
        }
        let s = subjects
            .iter()
            .find(|s| s.agency == h.agency)
            .ok_or_else(|| rejected(format!("no identifier given for {}", h.agency)))?;
        s.identifier
            .validate()
            .map_err(|e| rejected(format!("{}: {e}", h.agency)))?;
        if !commitment_matches(&h.subject_commitment, &h.agency, &s.identifier, &s.salt) {
            return Err(rejected(format!(
                "the identifier for {} does not match the consent's commitment",
                h.agency
            )));
        }
    }
    if subjects
        .iter()
        .any(|s| consent.scope_for(&s.agency).is_none())
    {
        return Err(rejected(
            "an identifier was given for an agency the consent does not name",
        ));
    }
    for g in &consent.grantees {
        let m = manifest
            .member(g)
            .ok_or_else(|| rejected(format!("{g} is not a member of the federation")))?;
        if !m.is_requester() {
            return Err(rejected(format!(
                "{g} is not a requester in the federation"
            )));
        }
    }
    if let Some(old) = &consent.supersedes {
        let prev = state
            .db
            .consent(old)?
            .ok_or_else(|| rejected(format!("consent {old} to supersede is not known here")))?;
        if prev.body.passport_id != consent.passport_id || &prev.body.recorded_by != state.agency {
            return Err(rejected(
                "a consent may only supersede one of the same person recorded here",
            ));
        }
        if prev.status != ConsentStatus::Active {
            return Err(rejected(format!(
                "consent {old} is {}, not active",
                prev.status
            )));
        }
    }
    if state.db.consent(&consent.consent_id)?.is_some() {
        return Err(rejected("a consent with this id already exists"));
    }

    env.add_signature(SignerRole::Node, &state.key.current());
    let mut items = Vec::new();
    for recipient in consent.recipients() {
        let holder_subject = subjects.iter().find(|s| s.agency == recipient);
        if &recipient == state.agency && holder_subject.is_none() {
            continue; // a grantee-only recorder already has the consent
        }
        let grant = ConsentGrant {
            consent: env.clone(),
            recipient: recipient.clone(),
            subject: holder_subject.map(|s| s.identifier.clone()),
            salt: holder_subject.map(|s| s.salt),
        };
        items.push((
            recipient,
            OutboxPayload::Grant {
                consent_id: consent.consent_id.clone(),
                envelope: state.key.seal(&grant),
            },
        ));
    }
    let stored = crate::consent::newly_active(env.clone(), consent.clone(), now);
    items.extend(retirement(state, staff, &consent, retire, now)?);
    let writes = state.db.consent_writes(&stored, None, now)?;
    let event = crate::consent::consent_entry(&consent, Some(staff.body.person_id.clone()), None);
    // Exclusively: superseding changes another consent's status (see `ConsentGate`).
    let pending = state.consent_gate.change(|| {
        state.outbox.enqueue(items, writes, now)?;
        let mut p = Vec::new();
        if let Some(ev) =
            crate::consent::superseded_event(state.db, consent.supersedes.as_ref(), &event)?
        {
            p.push(state.audit.submit(ev));
        }
        p.push(state.audit.submit(AuditEvent::ConsentRecorded(event)));
        Ok::<_, RecordError>(p)
    })?;
    tracing::info!(consent = %consent.consent_id, passport = %consent.passport_id, caseworker = %staff.body.person_id, "consent recorded");
    for p in pending {
        p.wait()
            .await
            .map_err(|e| RecordError::Audit(e.to_string()))?;
    }
    let deliveries = state.db.deliveries(&consent.consent_id)?;
    Ok(ClientResponse::ConsentRecorded {
        consent: env,
        deliveries,
    })
}

/// Takes one recording from `staff`'s and the node's hourly allowances, or refuses (logging
/// the refusal, at most once a minute per caseworker).
async fn limit_recording(state: &Recorder<'_>, staff: &StoredStaff) -> Result<(), RecordError> {
    let who = &staff.body.person_id;
    let Err(limit) = state.consent_limits.recording(who.as_str()) else {
        return Ok(());
    };
    state.metrics.limit("consent_recording_rate");
    let (whose, max) = match limit {
        crate::ratelimit::ConsentLimit::Caseworker => {
            ("your", state.consent.recordings_per_caseworker_per_hour)
        }
        crate::ratelimit::ConsentLimit::Node => {
            ("this agency's", state.consent.recordings_per_node_per_hour)
        }
    };
    tracing::warn!(caseworker = %who, ?limit, "consent recording refused: over the hourly limit");
    if state.consent_limits.report_refusal(&format!("staff/{who}")) {
        let event = AuditEvent::Admin {
            person_id: Some(who.clone()),
            action: "consent_recording_rate_limited".into(),
            detail: format!("refused: over {whose} limit of {max} consent recordings an hour"),
        };
        state
            .audit
            .append(event)
            .await
            .map_err(|e| RecordError::Audit(e.to_string()))?;
    }
    Err(RecordError::RateLimited(format!(
        "{whose} limit of {max} consent recordings an hour is reached; nothing was recorded; try again later or ask the operator"
    )))
}

/// When a consent supersedes another, the old one's revocation goes to every agency the old
/// consent named and the new one leaves out (they will not receive the new consent, so they
/// would otherwise keep answering under the old one). The caseworker signs it (`retire`); the
/// node countersigns.
fn retirement(
    state: &Recorder<'_>,
    staff: &StoredStaff,
    consent: &Consent,
    retire: Option<Envelope>,
    now: Timestamp,
) -> Result<Vec<(AgencyId, OutboxPayload)>, RecordError> {
    let Some(old_id) = &consent.supersedes else {
        return Ok(Vec::new());
    };
    let Some(old) = state.db.consent(old_id)? else {
        return Ok(Vec::new());
    };
    let keep = consent.recipients();
    let dropped: Vec<_> = old
        .body
        .recipients()
        .into_iter()
        .filter(|a| !keep.contains(a) && a != state.agency)
        .collect();
    if dropped.is_empty() {
        return Ok(Vec::new());
    }
    let mut env = retire.ok_or_else(|| {
        rejected("this consent leaves out agencies the one it supersedes named: sign a revocation of the old consent for them (tg consent grant --supersedes does)")
    })?;
    let rev: ConsentRevocation = env
        .open()
        .map_err(|e| rejected(format!("retirement does not decode: {e}")))?;
    if &rev.consent_id != old_id
        || rev.passport_id != consent.passport_id
        || &rev.revoked_by != state.agency
        || rev.revoked_by_person != staff.body.person_id
    {
        return Err(rejected(
            "the retirement must revoke the superseded consent, by the caller, at this agency",
        ));
    }
    if !near(now, rev.revoked_at) {
        return Err(rejected(
            "the retirement's revoked_at is not the current time; check this computer's clock",
        ));
    }
    let manifest = state
        .trust
        .manifest()
        .ok_or_else(|| rejected("node has no manifest"))?;
    verify_caller(
        state,
        &manifest,
        &env,
        &rev.credential,
        &rev.revoked_by_person,
        now,
    )?;
    env.add_signature(SignerRole::Node, &state.key.current());
    Ok(dropped
        .into_iter()
        .map(|a| {
            (
                a,
                OutboxPayload::Revoke {
                    consent_id: old_id.clone(),
                    envelope: env.clone(),
                },
            )
        })
        .collect())
}

/// Records a revocation signed by `staff`.
pub async fn revoke(
    state: &Recorder<'_>,
    staff: &StoredStaff,
    mut env: Envelope,
) -> Result<ClientResponse, RecordError> {
    let manifest = state
        .trust
        .manifest()
        .ok_or_else(|| rejected("node has no manifest"))?;
    let now = state.clock.now();
    let rev: ConsentRevocation = env
        .open()
        .map_err(|e| rejected(format!("revocation does not decode: {e}")))?;
    if &rev.revoked_by != state.agency || rev.revoked_by_person != staff.body.person_id {
        return Err(rejected(
            "a revocation must be made by the caller, at this agency",
        ));
    }
    verify_caller(
        state,
        &manifest,
        &env,
        &rev.credential,
        &rev.revoked_by_person,
        now,
    )?;
    if !near(now, rev.revoked_at) {
        return Err(rejected(
            "revoked_at is not the current time; check this computer's clock",
        ));
    }
    let mut stored = state
        .db
        .consent(&rev.consent_id)?
        .ok_or_else(|| rejected(format!("no consent {} here", rev.consent_id)))?;
    if &stored.body.recorded_by != state.agency || stored.body.passport_id != rev.passport_id {
        return Err(rejected(
            "only consents recorded at this agency can be revoked here, for the same person",
        ));
    }
    if stored.status == ConsentStatus::Revoked {
        return Err(rejected("this consent is already revoked"));
    }
    env.add_signature(SignerRole::Node, &state.key.current());
    stored.status = ConsentStatus::Revoked;
    stored.status_since = now;
    stored.revocation = Some(env.clone());
    let writes = state.db.consent_update_writes(&stored);
    let items = stored
        .body
        .recipients()
        .into_iter()
        .filter(|r| r != state.agency)
        .map(|r| {
            (
                r,
                OutboxPayload::Revoke {
                    consent_id: rev.consent_id.clone(),
                    envelope: env.clone(),
                },
            )
        })
        .collect();
    let event =
        crate::consent::consent_entry(&stored.body, Some(staff.body.person_id.clone()), None);
    // Exclusively, so this node's own decisions are logged wholly before or after it.
    let pending = state.consent_gate.change(|| {
        state.outbox.enqueue(items, writes, now)?;
        Ok::<_, RecordError>(state.audit.submit(AuditEvent::ConsentRevoked(event)))
    })?;
    tracing::info!(consent = %rev.consent_id, passport = %rev.passport_id, caseworker = %staff.body.person_id, "consent revoked");
    pending
        .wait()
        .await
        .map_err(|e| RecordError::Audit(e.to_string()))?;
    let deliveries = state.db.deliveries(&rev.consent_id)?;
    Ok(ClientResponse::ConsentDetail {
        consent: stored.envelope,
        status: ConsentStatus::Revoked,
        deliveries,
    })
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::indexing_slicing)]

    use std::sync::Arc;

    use throughgate_protocol::audit::AuditEntry;
    use throughgate_protocol::category::{Category, Purpose};
    use throughgate_protocol::consent::{Collection, CollectionMethod, HolderScope};
    use throughgate_protocol::credential::StaffRole;
    use throughgate_protocol::identifiers::{commitment, IdScheme, SubjectIdentifier, SALT_LEN};
    use throughgate_protocol::ids::{ConsentId, PassportId};
    use throughgate_protocol::keys::SecretKey;
    use throughgate_protocol::manifest::{
        default_witness_threshold, Governance, Member, MemberRole, Sector,
    };

    use super::*;
    use crate::store::MemoryStore;

    /// A recording node's parts, built directly: no endpoint, no socket, an in-memory store.
    struct Parts {
        agency: AgencyId,
        key: NodeKey,
        db: Db,
        clock: Clock,
        consent: ConsentRules,
        trust: Trust,
        consent_limits: ConsentLimits,
        metrics: Arc<Metrics>,
        consent_gate: ConsentGate,
        outbox: Outbox,
        audit: AuditLog,
        caseworker: SecretKey,
        staff: StoredStaff,
    }

    impl Parts {
        fn recorder(&self) -> Recorder<'_> {
            Recorder {
                agency: &self.agency,
                key: &self.key,
                db: &self.db,
                clock: &self.clock,
                consent: &self.consent,
                trust: &self.trust,
                consent_limits: &self.consent_limits,
                metrics: &self.metrics,
                consent_gate: &self.consent_gate,
                outbox: &self.outbox,
                audit: &self.audit,
            }
        }
    }

    fn agency(s: &str) -> AgencyId {
        AgencyId::new(s).unwrap()
    }

    fn member(id: &str, key: &SecretKey, category: Category, role: MemberRole) -> Member {
        Member {
            id: agency(id),
            name: id.into(),
            sector: Sector::Justice,
            addresses: vec!["127.0.0.1:1".into()],
            node_keys: vec![key.public()],
            categories: vec![category],
            id_scheme: IdScheme::NhsNumber,
            roles: vec![role],
            retired_keys: vec![],
        }
    }

    /// The parts of HMP Leeds's node (a requester), in a federation with NHS West Yorkshire (a
    /// holder of health records), and a caseworker there. Needs a runtime (the audit writer).
    fn parts() -> Parts {
        let hmp = agency("hmp-leeds");
        let node_key = SecretKey::generate();
        let clock = Clock::system();
        let now = clock.now();
        let governance = SecretKey::generate();
        let members = vec![
            member(
                "hmp-leeds",
                &node_key,
                Category::Accommodation,
                MemberRole::Requester,
            ),
            member(
                "nhs-wy",
                &SecretKey::generate(),
                Category::Health,
                MemberRole::Holder,
            ),
        ];
        let manifest = throughgate_protocol::manifest::Manifest {
            federation: "test".into(),
            version: 1,
            issued_at: now,
            expires_at: now.plus_secs(86_400),
            witness_threshold: default_witness_threshold(members.len()),
            members,
            governance: Governance {
                keys: vec![governance.public()],
                threshold: 1,
            },
        };
        let trust = Trust::new(hmp.clone(), clock.clone());
        trust
            .install_manifest(&Envelope::seal(
                &manifest,
                &[(SignerRole::Governance, &governance)],
            ))
            .unwrap();
        let caseworker = SecretKey::generate();
        let staff = crate::staff::issue_credential(
            &node_key,
            Credential {
                person_id: PersonId::new("cw-1").unwrap(),
                display_name: "Caseworker".into(),
                agency: hmp.clone(),
                roles: vec![StaffRole::Caseworker],
                public_key: caseworker.public(),
                not_before: now.minus_secs(60),
                not_after: now.plus_secs(86_400),
            },
        );
        let db = Db::new(Arc::new(MemoryStore::new()));
        let key = NodeKey::new(node_key);
        let metrics = Arc::new(Metrics::new());
        let audit = AuditLog::open(
            db.clone(),
            key.clone(),
            hmp.clone(),
            clock.clone(),
            metrics.clone(),
        )
        .unwrap();
        audit.start().unwrap();
        let consent = ConsentRules::default();
        Parts {
            consent_limits: ConsentLimits::new(&consent),
            consent,
            agency: hmp,
            outbox: Outbox::new(db.clone()),
            consent_gate: ConsentGate::new(),
            key,
            db,
            clock,
            trust,
            metrics,
            audit,
            caseworker,
            staff,
        }
    }

    /// A consent for the person NHS West Yorkshire knows as `9434765919`, signed by `p`'s
    /// caseworker and naming `recorded_by_person`; with the subject to send to the holder.
    fn consent(p: &Parts, recorded_by_person: &str) -> (Consent, Envelope, Vec<HolderSubject>) {
        let nhs = agency("nhs-wy");
        let identifier = SubjectIdentifier::parse(IdScheme::NhsNumber, "9434765919").unwrap();
        let salt = [7u8; SALT_LEN];
        let now = p.clock.now();
        let body = Consent {
            consent_id: ConsentId::random(),
            passport_id: PassportId::random(),
            purpose: Purpose::Resettlement,
            purpose_text: "resettlement".into(),
            holders: vec![HolderScope {
                agency: nhs.clone(),
                categories: vec![Category::Health],
                subject_commitment: commitment(&nhs, &identifier, &salt),
            }],
            grantees: vec![p.agency.clone()],
            valid_from: now,
            valid_until: now.plus_secs(30 * 86_400),
            records_from: None,
            records_until: None,
            legal_basis: "basis".into(),
            jurisdiction: "England and Wales".into(),
            collection: Collection {
                method: CollectionMethod::SignedPaperForm,
                reference: "F-1".into(),
            },
            privacy_notice_sha256: [0; 32],
            recorded_by: p.agency.clone(),
            recorded_by_person: PersonId::new(recorded_by_person).unwrap(),
            recorded_at: now,
            supersedes: None,
            credential: p.staff.credential.clone(),
        };
        let env = Envelope::seal(&body, &[(SignerRole::Person, &p.caseworker)]);
        let subjects = vec![HolderSubject {
            agency: nhs,
            identifier,
            salt,
        }];
        (body, env, subjects)
    }

    /// The events in `p`'s audit log, in order.
    fn logged(p: &Parts) -> Vec<AuditEvent> {
        p.db.audit_entries(0, 100)
            .unwrap()
            .iter()
            .map(|(_, bytes)| AuditEntry::from_bytes(bytes).unwrap().event)
            .collect()
    }

    #[tokio::test]
    async fn a_recorded_consent_is_countersigned_stored_queued_for_its_holder_and_logged() {
        let p = parts();
        let (body, env, subjects) = consent(&p, "cw-1");
        let answer = record(&p.recorder(), &p.staff, env, &subjects, None)
            .await
            .unwrap();
        let ClientResponse::ConsentRecorded { consent, .. } = answer else {
            panic!("{answer:?}");
        };
        consent
            .verify_by(SignerRole::Node, &p.key.current().public())
            .unwrap();
        let stored = p.db.consent(&body.consent_id).unwrap().unwrap();
        assert_eq!(stored.status, ConsentStatus::Active);
        // The holder gets the grant; the recorder, its only grantee, already has the consent.
        let queued = p.db.outbox_items(10).unwrap();
        assert_eq!(queued.len(), 1);
        assert_eq!(queued[0].recipient, agency("nhs-wy"));
        assert!(matches!(queued[0].payload, OutboxPayload::Grant { .. }));
        assert!(matches!(
            logged(&p).as_slice(),
            [AuditEvent::ConsentRecorded(c)] if c.consent_id == body.consent_id
        ));

        // Revoked by the same caseworker: stored as revoked, announced to the holder, logged.
        let revocation = ConsentRevocation {
            consent_id: body.consent_id.clone(),
            passport_id: body.passport_id.clone(),
            revoked_by: p.agency.clone(),
            revoked_by_person: p.staff.body.person_id.clone(),
            revoked_at: p.clock.now(),
            reason: "withdrawn".into(),
            credential: p.staff.credential.clone(),
        };
        let env = Envelope::seal(&revocation, &[(SignerRole::Person, &p.caseworker)]);
        revoke(&p.recorder(), &p.staff, env).await.unwrap();
        let stored = p.db.consent(&body.consent_id).unwrap().unwrap();
        assert_eq!(stored.status, ConsentStatus::Revoked);
        let queued = p.db.outbox_items(10).unwrap();
        assert_eq!(queued.len(), 2);
        assert!(queued.iter().any(|i| i.recipient == agency("nhs-wy")
            && matches!(i.payload, OutboxPayload::Revoke { .. })));
        assert!(matches!(
            logged(&p).as_slice(),
            [_, AuditEvent::ConsentRevoked(c)] if c.consent_id == body.consent_id
        ));
    }

    #[tokio::test]
    async fn a_consent_in_another_caseworkers_name_is_refused_and_nothing_is_stored() {
        let p = parts();
        let (body, env, subjects) = consent(&p, "cw-2");
        let refused = record(&p.recorder(), &p.staff, env, &subjects, None).await;
        assert!(
            matches!(&refused, Err(RecordError::Rejected(m)) if m.contains("recorded by the caller")),
            "{refused:?}"
        );
        assert!(p.db.consent(&body.consent_id).unwrap().is_none());
        assert_eq!(p.db.outbox_len().unwrap(), 0);
        assert!(logged(&p).is_empty());
    }
}
