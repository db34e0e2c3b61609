//! The requester's side of a passport: check the caseworker's signed query, countersign it,
//! send it to every holder it addresses at once over pooled connections, verify each signed
//! response as it arrives, and stream progress back to the caseworker.

use std::time::{Duration, Instant};

use futures::stream::{FuturesUnordered, StreamExt};
use throughgate_protocol::audit::AuditEvent;
use throughgate_protocol::bundle::verify_response_cached;
use throughgate_protocol::credential::{verify_credential_cached, StaffRole};
use throughgate_protocol::envelope::{Envelope, SignerRole};
use throughgate_protocol::messages::{
    query_digest, ClientResponse, HolderResult, HolderStatus, Query,
};
use throughgate_protocol::query_check::check_freshness;

use crate::db::StoredStaff;
use crate::node::NodeState;
use crate::peers::PeerError;

/// Why the home node refused to send a query at all.
#[derive(Debug, thiserror::Error)]
pub enum FanoutError {
    /// The query is malformed or fails a check before anything is sent.
    #[error("{0}")]
    Rejected(String),
}

/// Checks, countersigns and fans out `query_env` for `staff`. Calls `progress` with each
/// holder's result as it arrives; returns the countersigned query and all results in request
/// order.
pub async fn assemble(
    state: &NodeState,
    staff: &StoredStaff,
    mut query_env: Envelope,
    mut progress: impl FnMut(&HolderResult),
) -> Result<(Envelope, Vec<HolderResult>), FanoutError> {
    let reject = |m: String| FanoutError::Rejected(m);
    let manifest = state
        .manifest()
        .ok_or_else(|| reject("node has no manifest".into()))?;
    let now = state.clock.now();
    let query: Query = query_env
        .open()
        .map_err(|e| reject(format!("query does not decode: {e}")))?;
    if query.requester != state.agency {
        return Err(reject(format!(
            "the query names requester {}, but this node is {}",
            query.requester, state.agency
        )));
    }
    let me = manifest
        .member(&state.agency)
        .ok_or_else(|| reject("this agency is not in the manifest".into()))?;
    if !me.is_requester() {
        return Err(reject(
            "this agency is not a requester in the federation manifest".into(),
        ));
    }
    let cred = verify_credential_cached(
        &query.credential,
        &state.agency,
        &me.node_keys,
        now,
        StaffRole::Caseworker,
        Some(&state.sig_cache),
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
    if query.requests.is_empty() || query.requests.len() > 1024 {
        return Err(reject("a query must address 1 to 1024 holders".into()));
    }
    for r in &query.requests {
        if manifest.member(&r.holder).is_none_or(|m| !m.is_holder()) {
            return Err(reject(format!(
                "{} is not a holder in the federation manifest",
                r.holder
            )));
        }
    }
    query_env.add_signature(SignerRole::Node, &state.key.current());
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
    let mut pending: FuturesUnordered<_> = query
        .requests
        .iter()
        .enumerate()
        .map(|(i, r)| {
            let holder = r.holder.clone();
            let env = &query_env;
            async move {
                let res = state.peers.request(&holder, env, deadline).await;
                (i, holder, res)
            }
        })
        .collect();
    let mut results: Vec<Option<HolderResult>> = vec![None; query.requests.len()];
    while let Some((i, holder, res)) = pending.next().await {
        let elapsed_ms = u32::try_from(started.elapsed().as_millis()).unwrap_or(u32::MAX);
        let result = match res {
            Ok(resp) => match verify_response_cached(
                &resp,
                &query_env,
                &query,
                &holder,
                &manifest,
                Some(&state.sig_cache),
            ) {
                Ok(_) => HolderResult {
                    agency: holder,
                    status: HolderStatus::Answered,
                    response: Some(resp),
                    detail: None,
                    elapsed_ms,
                },
                Err(e) => HolderResult {
                    agency: holder,
                    status: HolderStatus::Invalid,
                    response: Some(resp),
                    detail: Some(e.to_string()),
                    elapsed_ms,
                },
            },
            Err(e) => {
                let status = match &e {
                    PeerError::TimedOut { .. } => HolderStatus::TimedOut,
                    PeerError::Remote { .. } | PeerError::Stream { .. } => HolderStatus::Error,
                    PeerError::Unknown(_) | PeerError::Unreachable { .. } => {
                        HolderStatus::Unreachable
                    }
                };
                HolderResult {
                    agency: holder,
                    status,
                    response: None,
                    detail: Some(e.to_string()),
                    elapsed_ms,
                }
            }
        };
        progress(&result);
        if let Some(slot) = results.get_mut(i) {
            *slot = Some(result);
        }
    }
    drop(pending);
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
    Ok((query_env, results.into_iter().flatten().collect()))
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
