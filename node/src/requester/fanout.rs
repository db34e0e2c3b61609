//! The requester's side of a passport: check the caseworker's signed query, countersign it,
//! send it to every holder it addresses at once over pooled connections, verify each signed
//! response as it arrives, and stream progress back to the caseworker.

use std::sync::Arc;
use std::time::{Duration, Instant};

use throughgate_protocol::assembly::AssemblyStatement;
use throughgate_protocol::audit::AuditEvent;
use throughgate_protocol::bundle::verify_response_cached;
use throughgate_protocol::credential::{verify_credential_cached, StaffRole};
use throughgate_protocol::envelope::{Envelope, SignerRole};
use throughgate_protocol::ids::AgencyId;
use throughgate_protocol::manifest::Manifest;
use throughgate_protocol::messages::{
    query_digest, ClientResponse, HolderResult, HolderStatus, Query, RefusalReason, Response,
};
use throughgate_protocol::query_check::{check_freshness, check_requests};
use throughgate_protocol::sigcache::SigCache;
use throughgate_protocol::time::Timestamp;

use crate::audit::AuditLog;
use crate::clock::Clock;
use crate::config::NodeConfig;
use crate::db::StoredStaff;
use crate::keyring::NodeKey;
use crate::metrics::Metrics;
use crate::peers::PeerError;
use crate::state::NodeState;
use crate::trust::Trust;
use crate::workers::witness::{receipt_view_conflict, split_view_alarm, Witness};

/// What checking, countersigning, logging and concluding an assembly uses of the node, and
/// nothing else. (Sending to the holders and checking their receipts against what this node
/// witnessed run as tasks of their own, which hold the node.)
#[derive(Clone, Copy, Debug)]
pub struct Fanout<'a> {
    /// This agency.
    pub agency: &'a AgencyId,
    /// The node key, which countersigns the query and signs the statement.
    pub key: &'a NodeKey,
    /// The clock.
    pub clock: &'a Clock,
    /// Configuration: query lifetime and request timeout.
    pub config: &'a NodeConfig,
    /// The manifest.
    pub trust: &'a Trust,
    /// Caseworker credentials already verified.
    pub sig_cache: &'a SigCache,
    /// The audit log.
    pub audit: &'a AuditLog,
    /// Metrics.
    pub metrics: &'a Metrics,
}

impl<'a> Fanout<'a> {
    /// The parts of `state` that an assembly's own steps use.
    pub fn of(state: &'a NodeState) -> Self {
        Fanout {
            agency: &state.agency,
            key: &state.key,
            clock: &state.clock,
            config: &state.config,
            trust: &state.trust,
            sig_cache: &state.sig_cache,
            audit: &state.audit,
            metrics: &state.metrics,
        }
    }
}

/// A caseworker's query, checked and countersigned, with the manifest it was checked against.
struct Outgoing {
    query_env: Envelope,
    query: Query,
    manifest: Arc<Manifest>,
    manifest_env: Envelope,
    now: Timestamp,
}

/// Why the home node refused to send a query at all.
#[derive(Debug, thiserror::Error)]
pub enum FanoutError {
    /// The query is malformed or fails a check before anything is sent.
    #[error("{0}")]
    Rejected(String),
}

/// The end of an assembly.
#[derive(Debug, Clone)]
pub struct Assembled {
    /// The countersigned query.
    pub query: Envelope,
    /// Every holder's result, in request order.
    pub results: Vec<HolderResult>,
    /// The node's signed statement of the assembly (kind `assembly`).
    pub statement: Envelope,
}

/// Checks, countersigns and fans out `query_env` for `staff`. Calls `progress` with each
/// holder's result as it arrives; returns the countersigned query, all results in request
/// order, and the node's signed statement of them. Each holder's exchange and the check of its
/// answer run as a task of their own (holding the node), so answers that arrive together are
/// verified on every core; the other steps use only [`Fanout`].
pub async fn assemble(
    node: &Arc<NodeState>,
    staff: &StoredStaff,
    query_env: Envelope,
    mut progress: impl FnMut(&HolderResult),
) -> Result<Assembled, FanoutError> {
    let reject = |m: String| FanoutError::Rejected(m);
    let state = &Fanout::of(node);
    let Outgoing {
        query_env,
        query,
        manifest,
        manifest_env,
        now,
    } = countersign(state, staff, query_env)?;
    // Logged concurrently with the fan-out; awaited before the caseworker sees the results.
    let sent = state.audit.submit(AuditEvent::QuerySent {
        query_id: query.query_id.clone(),
        query_digest: query_digest(&query_env),
        passport_id: query.passport_id.clone(),
        caseworker: query.caseworker.clone(),
        consent_id: query.consent_id.clone(),
        purpose: query.purpose,
        holders: query.requests.iter().map(|r| r.holder.clone()).collect(),
    });
    tracing::info!(query = %query.query_id, passport = %query.passport_id, caseworker = %query.caseworker, holders = query.requests.len(), "query sent");

    let deadline = Duration::from_secs(query.expires_at.0.saturating_sub(now.0))
        .min(state.config.limits.request_timeout());
    let started = Instant::now();
    // One task per holder; dropping the set (the caseworker went away) aborts them all.
    let shared = Arc::new((query_env.clone(), query.clone(), manifest.clone()));
    let mut pending = tokio::task::JoinSet::new();
    let mut tasks = std::collections::HashMap::new();
    for (i, r) in query.requests.iter().enumerate() {
        let holder = r.holder.clone();
        let node = node.clone();
        let shared = shared.clone();
        let task = pending.spawn(async move {
            let (env, query, manifest) = &*shared;
            // A replica of the holder that died silently is passed over after a third of the
            // deadline; the other replica's replay refusal means the first one has it.
            let res = node
                .peers
                .request_hedged(&holder, env, deadline, deadline / 3, |answer| {
                    !answer
                        .open::<Response>()
                        .is_ok_and(|r| r.reason == Some(RefusalReason::QueryReplayed))
                })
                .await;
            let elapsed_ms = elapsed_ms(started);
            let (mut result, checkpoint) = holder_result(
                &node.sig_cache,
                holder,
                res,
                env,
                query,
                manifest,
                elapsed_ms,
            );
            if let Some(verified) = checkpoint {
                split_view_check(&Witness::of(&node), &mut result, &verified).await;
            }
            result
        });
        tasks.insert(task.id(), (i, r.holder.clone()));
    }
    let mut results: Vec<Option<HolderResult>> = vec![None; query.requests.len()];
    while let Some(joined) = pending.join_next_with_id().await {
        let (id, result) = match joined {
            Ok((id, result)) => (id, Ok(result)),
            Err(e) => (e.id(), Err(e)),
        };
        let Some((i, holder)) = tasks.remove(&id) else {
            continue;
        };
        // A task that failed (it cannot panic on a peer's input; this is defence in depth)
        // still gives its holder a result, so no holder silently drops out of the passport.
        let result = result.unwrap_or_else(|e| HolderResult {
            agency: holder,
            status: HolderStatus::Error,
            response: None,
            detail: Some(format!("this node failed while handling the answer: {e}")),
            elapsed_ms: elapsed_ms(started),
        });
        progress(&result);
        if let Some(slot) = results.get_mut(i) {
            *slot = Some(result);
        }
    }
    state
        .metrics
        .passport_seconds
        .observe(started.elapsed().as_secs_f64());
    let complete = results
        .iter()
        .flatten()
        .all(|r| r.status == HolderStatus::Answered);
    state
        .metrics
        .passports
        .get_or_create(&crate::metrics::KindLabel {
            kind: if complete { "complete" } else { "partial" }.into(),
        })
        .inc();
    sent.wait()
        .await
        .map_err(|e| reject(format!("the query could not be logged: {e}")))?;
    let results: Vec<HolderResult> = results.into_iter().flatten().collect();
    let statement = state.key.seal(&AssemblyStatement::new(
        state.agency.clone(),
        &query_env,
        &results,
        manifest.version,
        &manifest_env,
        state.clock.now(),
    ));
    Ok(Assembled {
        query: query_env,
        results,
        statement,
    })
}

/// Checks a caseworker's query as the home node sends it (signed by the caller under a
/// caseworker credential of this agency, fresh, within this node's lifetime, to holders of the
/// federation) and countersigns it.
fn countersign(
    state: &Fanout<'_>,
    staff: &StoredStaff,
    mut query_env: Envelope,
) -> Result<Outgoing, FanoutError> {
    let reject = |m: String| FanoutError::Rejected(m);
    let (manifest, manifest_env) = state
        .trust
        .manifest_and_envelope()
        .ok_or_else(|| reject("node has no manifest".into()))?;
    let now = state.clock.now();
    let query: Query = query_env
        .open()
        .map_err(|e| reject(format!("query does not decode: {e}")))?;
    if &query.requester != state.agency {
        return Err(reject(format!(
            "the query names requester {}, but this node is {}",
            query.requester, state.agency
        )));
    }
    let me = manifest
        .member(state.agency)
        .ok_or_else(|| reject("this agency is not in the manifest".into()))?;
    if !me.is_requester() {
        return Err(reject(
            "this agency is not a requester in the federation manifest".into(),
        ));
    }
    let cred = verify_credential_cached(
        &query.credential,
        state.agency,
        &me.node_keys,
        now,
        StaffRole::Caseworker,
        Some(state.sig_cache),
    )
    .map_err(|e| reject(e.to_string()))?;
    if cred.person_id != staff.body.person_id
        || cred.public_key != staff.body.public_key
        || cred.person_id != query.caseworker
    {
        return Err(reject("the query's credential is not the caller's".into()));
    }
    query_env
        .verify_by(SignerRole::Person, &staff.body.public_key)
        .map_err(|e| reject(format!("caseworker signature: {e}")))?;
    check_freshness(&query, now).map_err(|r| reject(format!("{}: {}", r.as_str(), r.explain())))?;
    let lifetime = query.expires_at.0.saturating_sub(query.issued_at.0);
    if lifetime > state.config.limits.query_lifetime_secs {
        return Err(reject(format!(
            "the query is valid for {lifetime} s; this node sends queries valid for at most {} s",
            state.config.limits.query_lifetime_secs
        )));
    }
    check_requests(&query).map_err(reject)?;
    for r in &query.requests {
        if manifest.member(&r.holder).is_none_or(|m| !m.is_holder()) {
            return Err(reject(format!(
                "{} is not a holder in the federation manifest",
                r.holder
            )));
        }
    }
    query_env.add_signature(SignerRole::Node, &state.key.current());
    Ok(Outgoing {
        query_env,
        query,
        manifest,
        manifest_env,
        now,
    })
}

fn elapsed_ms(since: Instant) -> u32 {
    u32::try_from(since.elapsed().as_millis()).unwrap_or(u32::MAX)
}

/// One holder's part of an assembly: its answer checked as in the specification (8.6), or why
/// there is none; with, for a verified answer, the verified response.
fn holder_result(
    sig_cache: &SigCache,
    holder: AgencyId,
    res: Result<Envelope, PeerError>,
    query_env: &Envelope,
    query: &Query,
    manifest: &Manifest,
    elapsed_ms: u32,
) -> (HolderResult, Option<Response>) {
    match res {
        Ok(resp) => match verify_response_cached(
            &resp,
            query_env,
            query,
            &holder,
            manifest,
            Some(sig_cache),
        ) {
            Ok(verified) => (
                HolderResult {
                    agency: holder,
                    status: HolderStatus::Answered,
                    response: Some(resp),
                    detail: None,
                    elapsed_ms,
                },
                Some(verified),
            ),
            Err(e) => (
                HolderResult {
                    agency: holder,
                    status: HolderStatus::Invalid,
                    response: Some(resp),
                    detail: Some(e.to_string()),
                    elapsed_ms,
                },
                None,
            ),
        },
        Err(e) => {
            let status = match &e {
                PeerError::TimedOut { .. } => HolderStatus::TimedOut,
                PeerError::Remote { .. } | PeerError::Stream { .. } => HolderStatus::Error,
                PeerError::Unknown(_) | PeerError::Unreachable { .. } => HolderStatus::Unreachable,
            };
            (
                HolderResult {
                    agency: holder,
                    status,
                    response: None,
                    detail: Some(e.to_string()),
                    elapsed_ms,
                },
                None,
            )
        }
    }
}

/// Checks an answered result's receipt against what this node witnessed of the holder's log;
/// on a split view raises the alarm and marks the result invalid.
async fn split_view_check(witness: &Witness<'_>, result: &mut HolderResult, response: &Response) {
    let Some(detail) = receipt_view_conflict(witness.db, &result.agency, response) else {
        return;
    };
    split_view_alarm(witness, &result.agency, detail.clone()).await;
    result.status = HolderStatus::Invalid;
    result.detail = Some(detail);
}

/// A status-only progress frame body for a holder result: the signed response itself waits
/// for the final `assembled` frame.
pub fn progress_frame(result: &HolderResult) -> ClientResponse {
    ClientResponse::Progress(HolderResult {
        agency: result.agency.clone(),
        status: result.status,
        response: None,
        detail: result.detail.clone(),
        elapsed_ms: result.elapsed_ms,
    })
}
