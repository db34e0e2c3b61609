//! The data-protection officer's side of the audit log: search, verify, subject-access reports
//! (this node's, or every node's through signed audit queries), checkpoint status; and the
//! holder's answer to another node's audit query. Every access by a DPO is itself logged.

use std::sync::atomic::AtomicU64;
use std::time::{Duration, Instant};

use futures::stream::{FuturesUnordered, StreamExt};
use throughgate_protocol::audit::{AuditEntry, AuditEvent, ProofHash};
use throughgate_protocol::checkpoint::SignedCheckpoint;
use throughgate_protocol::credential::{verify_credential, StaffRole};
use throughgate_protocol::envelope::{Envelope, SignerRole};
use throughgate_protocol::ids::AgencyId;
use throughgate_protocol::messages::{
    query_digest, AuditAnswer, AuditFilter, AuditQuery, AuditSource, AuditVerification,
    CheckpointStatus, ClientResponse, Cosignature, ErrorCode, HolderStatus, IndexedEntry,
    LoggedEntry, Witnessed,
};
use throughgate_protocol::note::NoteSignature;
use throughgate_protocol::query_check::MAX_QUERY_LIFETIME_SECS;

use crate::audit::AuditLog;
use crate::clock::Clock;
use crate::db::{Db, StoredStaff};
use crate::keyring::NodeKey;
use crate::peers::{PeerError, Peers};
use crate::state::NodeState;
use crate::trust::Trust;

/// What reading, verifying and answering for the audit log uses of the node, and nothing else.
#[derive(Clone, Copy, Debug)]
pub struct Auditor<'a> {
    /// This agency.
    pub agency: &'a AgencyId,
    /// The node key, which signs answers.
    pub key: &'a NodeKey,
    /// Storage: the entries, their index, seen audit queries.
    pub db: &'a Db,
    /// The clock.
    pub clock: &'a Clock,
    /// The manifest (who may ask).
    pub trust: &'a Trust,
    /// The audit log.
    pub audit: &'a AuditLog,
}

impl<'a> Auditor<'a> {
    /// The parts of `state` that the audit operations use.
    pub fn of(state: &'a NodeState) -> Self {
        Auditor {
            agency: &state.agency,
            key: &state.key,
            db: &state.db,
            clock: &state.clock,
            trust: &state.trust,
            audit: &state.audit,
        }
    }
}

/// What reporting the checkpoint and witnessing status uses of the node, and nothing else.
#[derive(Clone, Copy, Debug)]
pub struct CheckpointView<'a> {
    /// Storage: cosignatures and what was witnessed.
    pub db: &'a Db,
    /// The manifest (whose logs are witnessed).
    pub trust: &'a Trust,
    /// The audit log (its latest checkpoint).
    pub audit: &'a AuditLog,
    /// Witness alarms raised since start.
    pub witness_alarms: &'a AtomicU64,
    /// Consent alarms raised since start.
    pub consent_alarms: &'a AtomicU64,
}

impl<'a> CheckpointView<'a> {
    /// The parts of `state` that the checkpoint status uses.
    pub fn of(state: &'a NodeState) -> Self {
        CheckpointView {
            db: &state.db,
            trust: &state.trust,
            audit: &state.audit,
            witness_alarms: &state.witness_alarms,
            consent_alarms: &state.consent_alarms,
        }
    }
}

/// Default and largest number of entries a search returns.
const MAX_SEARCH: u32 = 10_000;
/// Most entries about one passport a node returns to an audit query.
const MAX_ANSWER_ENTRIES: usize = 5_000;

type OpResult = Result<ClientResponse, (ErrorCode, String)>;

fn internal(e: impl std::fmt::Display) -> (ErrorCode, String) {
    tracing::error!(error = %e, "audit operation failed");
    (ErrorCode::Internal, format!("audit operation failed: {e}"))
}

/// Logs a DPO's access (an `audit_access` entry) and waits until it is durable.
pub(crate) async fn log_access(
    state: &Auditor<'_>,
    dpo: &StoredStaff,
    passport: Option<throughgate_protocol::ids::PassportId>,
    action: &str,
) -> Result<(), (ErrorCode, String)> {
    state
        .audit
        .append(AuditEvent::AuditAccess {
            agency: state.agency.clone(),
            dpo: dpo.body.person_id.clone(),
            passport_id: passport,
            action: action.into(),
        })
        .await
        .map(|_| ())
        .map_err(internal)
}

fn names(e: &AuditEntry, f: &AuditFilter) -> bool {
    let ev = &e.event;
    if let Some(p) = &f.passport_id {
        if ev.passport() != Some(p) {
            return false;
        }
    }
    if let Some(name) = &f.event {
        if ev.name() != name {
            return false;
        }
    }
    if let Some(linkage) = f.linkage {
        let entry_linkage = match ev {
            AuditEvent::ConsentRegistered(c) => c.linkage,
            _ => None,
        };
        if entry_linkage != Some(linkage) {
            return false;
        }
    }
    if f.from.is_some_and(|t| e.at < t) || f.until.is_some_and(|t| e.at >= t) {
        return false;
    }
    let (persons, agencies, consent) = match ev {
        AuditEvent::Decision(d) => (
            vec![&d.caseworker],
            vec![&d.requester],
            d.consent_id.as_ref(),
        ),
        AuditEvent::QuerySent {
            caseworker,
            consent_id,
            holders,
            ..
        } => (
            vec![caseworker],
            holders.iter().collect(),
            consent_id.as_ref(),
        ),
        AuditEvent::ConsentRecorded(c)
        | AuditEvent::ConsentRegistered(c)
        | AuditEvent::ConsentRevoked(c)
        | AuditEvent::ConsentExpired(c)
        | AuditEvent::ConsentSuperseded(c) => (
            c.person.iter().collect(),
            vec![&c.recorded_by],
            Some(&c.consent_id),
        ),
        AuditEvent::CredentialIssued { person_id, .. } => (vec![person_id], vec![], None),
        AuditEvent::Admin { person_id, .. } => (person_id.iter().collect(), vec![], None),
        AuditEvent::AuditAccess { agency, dpo, .. } => (vec![dpo], vec![agency], None),
        AuditEvent::WitnessAlarm { peer, .. } => (vec![], vec![peer], None),
        AuditEvent::Redaction { .. } => (vec![], vec![], None),
    };
    f.person.as_ref().is_none_or(|p| persons.contains(&p))
        && f.agency.as_ref().is_none_or(|a| agencies.contains(&a))
        && f.consent_id.as_ref().is_none_or(|c| consent == Some(c))
}

/// Searches this node's log.
pub async fn search(state: &Auditor<'_>, dpo: &StoredStaff, filter: AuditFilter) -> OpResult {
    if let Some(name) = &filter.event {
        if !throughgate_protocol::audit::AuditEvent::NAMES.contains(&name.as_str()) {
            return Err((
                ErrorCode::BadRequest,
                format!(
                    "no event is called {name:?}; the events are: {}",
                    throughgate_protocol::audit::AuditEvent::NAMES.join(", ")
                ),
            ));
        }
    }
    let limit = filter.limit.unwrap_or(1000).min(MAX_SEARCH) as usize;
    let mut out = Vec::new();
    let mut truncated = false;
    let mut consider = |index: u64, bytes: &[u8]| -> bool {
        let Ok(entry) = AuditEntry::from_bytes(bytes) else {
            return true;
        };
        if names(&entry, &filter) {
            if out.len() >= limit {
                truncated = true;
                return false;
            }
            out.push(IndexedEntry { index, entry });
        }
        true
    };
    if let Some(p) = &filter.passport_id {
        for index in state
            .db
            .audit_entries_about(p, usize::MAX)
            .map_err(internal)?
        {
            if let Some(bytes) = state.db.audit_entry(index).map_err(internal)? {
                if !consider(index, &bytes) {
                    break;
                }
            }
        }
    } else {
        let mut next = 0;
        'scan: loop {
            let page = state.db.audit_entries(next, 4096).map_err(internal)?;
            let Some((last, _)) = page.last() else { break };
            let last = *last;
            for (index, bytes) in &page {
                if !consider(*index, bytes) {
                    break 'scan;
                }
            }
            if page.len() < 4096 || last == u64::MAX {
                break;
            }
            next = last + 1;
        }
    }
    log_access(state, dpo, filter.passport_id.clone(), "search").await?;
    Ok(ClientResponse::AuditEntries {
        entries: out,
        truncated,
    })
}

/// Verifies this node's whole log.
pub async fn verify(state: &Auditor<'_>, dpo: &StoredStaff) -> OpResult {
    log_access(state, dpo, None, "verify").await?;
    let db = state.db.clone();
    let origin = state.audit.origin().to_owned();
    // Every key this node ever signed checkpoints with, including keys rotated out since.
    let mut keys = state.db.own_keys().map_err(internal)?;
    keys.push(state.key.current().public());
    let v = tokio::task::spawn_blocking(move || crate::audit::verify_log(&db, &origin, &keys))
        .await
        .map_err(internal)?
        .map_err(internal)?;
    if let Some(p) = &v.problem {
        tracing::error!(entry = ?p.entry, checkpoint = ?p.checkpoint, detail = %p.detail, "audit log verification FAILED");
    }
    Ok(ClientResponse::AuditVerified(AuditVerification {
        entries: v.entries,
        checkpoints: v.checkpoints,
        ok: v.ok(),
        bad_entry: v.problem.as_ref().and_then(|p| p.entry),
        bad_checkpoint: v.problem.as_ref().and_then(|p| p.checkpoint),
        detail: v.problem.map(|p| p.detail),
        elapsed_ms: v.elapsed_ms,
        redacted: v.redacted,
        redacted_ranges: v
            .redacted_ranges
            .iter()
            .map(|&(from, to)| throughgate_protocol::messages::RedactedRange { from, to })
            .collect(),
    }))
}

/// The checkpoint and witnessing status.
pub fn checkpoints(state: &CheckpointView<'_>) -> OpResult {
    let latest = state.audit.latest();
    let cosignatures = state
        .db
        .cosignatures()
        .map_err(internal)?
        .into_iter()
        .map(|(witness, size, line)| {
            let at = NoteSignature::parse(&line)
                .ok()
                .and_then(|s| {
                    s.signature
                        .get(..8)
                        .and_then(|b| b.try_into().ok())
                        .map(u64::from_be_bytes)
                })
                .map(throughgate_protocol::time::Timestamp);
            Cosignature { witness, size, at }
        })
        .collect();
    let manifest = state.trust.manifest();
    let mut witnessed = Vec::new();
    for m in manifest.iter().flat_map(|m| m.members.iter()) {
        if let Some((size, _)) = state.db.witnessed(&m.id).map_err(internal)? {
            witnessed.push(Witnessed {
                agency: m.id.clone(),
                size,
            });
        }
    }
    let (any, quorum) = state.db.cosigned_notes().map_err(internal)?;
    Ok(ClientResponse::AuditCheckpoints(CheckpointStatus {
        size: latest.as_ref().map_or(0, |(s, _)| *s),
        latest: latest.map(|(_, t)| t),
        cosignatures,
        cosigned: quorum.or(any).map(|(_, t)| t),
        witnessed,
        alarms: state
            .witness_alarms
            .load(std::sync::atomic::Ordering::Relaxed),
        consent_alarms: state
            .consent_alarms
            .load(std::sync::atomic::Ordering::Relaxed),
    }))
}

/// Checks a DPO's signed audit query (from this node's own DPO or a peer's).
fn check_audit_query(
    state: &Auditor<'_>,
    env: &Envelope,
    from: &AgencyId,
) -> Result<AuditQuery, (ErrorCode, String)> {
    let manifest = state
        .trust
        .manifest()
        .ok_or((ErrorCode::Internal, "node has no manifest".to_owned()))?;
    let q: AuditQuery = env
        .open()
        .map_err(|e| (ErrorCode::Malformed, e.to_string()))?;
    if &q.requester != from {
        return Err((
            ErrorCode::Forbidden,
            "the audit query names another requester".into(),
        ));
    }
    let member = manifest
        .member(from)
        .ok_or((ErrorCode::Forbidden, "requester is not a member".to_owned()))?;
    env.verify_by_any(SignerRole::Node, &member.node_keys)
        .map_err(|e| (ErrorCode::BadSignature, e.to_string()))?;
    let now = state.clock.now();
    let cred = verify_credential(&q.credential, from, &member.node_keys, now, StaffRole::Dpo)
        .map_err(|e| (ErrorCode::Forbidden, e.to_string()))?;
    if cred.person_id != q.dpo {
        return Err((
            ErrorCode::Forbidden,
            "the credential is not the DPO's".into(),
        ));
    }
    env.verify_by(SignerRole::Person, &cred.public_key)
        .map_err(|e| (ErrorCode::BadSignature, e.to_string()))?;
    if now >= q.expires_at
        || q.expires_at.0.saturating_sub(q.issued_at.0) > MAX_QUERY_LIFETIME_SECS
        || q.issued_at > now.plus_secs(60)
    {
        return Err((
            ErrorCode::BadRequest,
            "the audit query is stale or its lifetime is too long".into(),
        ));
    }
    if !state
        .db
        .mark_query_seen(&q.query_id, q.expires_at)
        .map_err(internal)?
    {
        return Err((
            ErrorCode::BadRequest,
            "this audit query was already answered".into(),
        ));
    }
    Ok(q)
}

/// Answers a signed audit query: logs the access, then returns every entry about the passport
/// with inclusion proofs under the access receipt's checkpoint.
async fn answer(
    state: &Auditor<'_>,
    env: &Envelope,
    from: &AgencyId,
) -> Result<AuditAnswer, (ErrorCode, String)> {
    let q = check_audit_query(state, env, from)?;
    let access = state
        .audit
        .append(AuditEvent::AuditAccess {
            agency: q.requester.clone(),
            dpo: q.dpo.clone(),
            passport_id: Some(q.passport_id.clone()),
            action: "subject_access_report".into(),
        })
        .await
        .map_err(internal)?;
    let cp = SignedCheckpoint::parse(access.checkpoint.as_bytes()).map_err(internal)?;
    let size = cp.checkpoint().size;
    let indexes = state
        .db
        .audit_entries_about(&q.passport_id, usize::MAX)
        .map_err(internal)?;
    let mut entries = Vec::new();
    let mut truncated = false;
    for index in indexes.into_iter().filter(|i| *i < size) {
        if entries.len() >= MAX_ANSWER_ENTRIES {
            truncated = true;
            break;
        }
        let Some(bytes) = state.db.audit_entry(index).map_err(internal)? else {
            continue;
        };
        let proof: Vec<ProofHash> = state.audit.inclusion_proof(index, size).map_err(internal)?;
        entries.push(LoggedEntry {
            entry: bytes,
            leaf_index: index,
            proof,
        });
    }
    Ok(AuditAnswer {
        query_digest: query_digest(env),
        holder: state.agency.clone(),
        entries,
        truncated,
        checkpoint: access.checkpoint.clone(),
        access_receipt: access,
    })
}

/// Handles another node's audit query.
pub async fn answer_peer(state: &Auditor<'_>, peer: &AgencyId, env: &Envelope) -> Envelope {
    match answer(state, env, peer).await {
        Ok(a) => state.key.seal(&a),
        Err((code, msg)) => state.key.error(code, msg),
    }
}

/// Produces the raw material of a subject-access report: this node's answer, and with
/// `federation` every member's (asked through `peers`, each within `timeout`), to the DPO's
/// signed audit query.
pub async fn report(
    state: &Auditor<'_>,
    peers: &Peers,
    timeout: Duration,
    dpo: &StoredStaff,
    mut query_env: Envelope,
    federation: bool,
) -> OpResult {
    let q: AuditQuery = query_env
        .open()
        .map_err(|e| (ErrorCode::Malformed, e.to_string()))?;
    if &q.requester != state.agency || q.dpo != dpo.body.person_id {
        return Err((
            ErrorCode::Forbidden,
            "the audit query must be the caller's, from this agency".into(),
        ));
    }
    query_env
        .verify_by(SignerRole::Person, &dpo.body.public_key)
        .map_err(|e| (ErrorCode::BadSignature, e.to_string()))?;
    query_env.add_signature(SignerRole::Node, &state.key.current());
    let manifest = state
        .trust
        .manifest()
        .ok_or((ErrorCode::Internal, "node has no manifest".to_owned()))?;
    let targets: Vec<AgencyId> = if federation {
        manifest.members.iter().map(|m| m.id.clone()).collect()
    } else {
        vec![state.agency.clone()]
    };
    let started = Instant::now();
    let qe = &query_env;
    let mut pending: FuturesUnordered<_> = targets
        .iter()
        .enumerate()
        .map(|(i, a)| async move {
            let r = if a == state.agency {
                answer(state, qe, a)
                    .await
                    .map(|ans| state.key.seal(&ans))
                    .map_err(|(c, m)| (HolderStatus::Error, format!("{c}: {m}")))
            } else {
                peers.request(a, qe, timeout).await.map_err(|e| {
                    let status = match &e {
                        PeerError::TimedOut { .. } => HolderStatus::TimedOut,
                        PeerError::Remote { .. } | PeerError::Stream { .. } => HolderStatus::Error,
                        PeerError::Unknown(_) | PeerError::Unreachable { .. } => {
                            HolderStatus::Unreachable
                        }
                    };
                    (status, e.to_string())
                })
            };
            (i, a.clone(), r)
        })
        .collect();
    let mut sources: Vec<Option<AuditSource>> = vec![None; targets.len()];
    while let Some((i, agency, r)) = pending.next().await {
        let src = match r {
            Ok(env) => AuditSource {
                agency,
                status: HolderStatus::Answered,
                answer: Some(env),
                detail: None,
            },
            Err((status, detail)) => AuditSource {
                agency,
                status,
                answer: None,
                detail: Some(detail),
            },
        };
        if let Some(slot) = sources.get_mut(i) {
            *slot = Some(src);
        }
    }
    drop(pending);
    tracing::info!(dpo = %dpo.body.person_id, passport = %q.passport_id, federation, ms = started.elapsed().as_millis() as u64, "subject-access report assembled");
    Ok(ClientResponse::AuditReport {
        query: query_env,
        sources: sources.into_iter().flatten().collect(),
    })
}
