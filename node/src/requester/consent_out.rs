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
use crate::config::NodeConfig;
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
    /// Configuration: the consent rules and limits.
    pub config: &'a NodeConfig,
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
            config: &state.config,
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
    crate::consent::within_validity(&consent, &state.config.consent).map_err(rejected)?;
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
        crate::ratelimit::ConsentLimit::Caseworker => (
            "your",
            state.config.consent.recordings_per_caseworker_per_hour,
        ),
        crate::ratelimit::ConsentLimit::Node => (
            "this agency's",
            state.config.consent.recordings_per_node_per_hour,
        ),
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
