//! The accept loop: every incoming connection is authenticated during the handshake (pinned
//! keys), then each bidirectional stream carries one request, dispatched by who the peer is and
//! what kind of message it sent. A malformed request costs its stream, never the connection or
//! the node.

use std::sync::Arc;

use throughgate_protocol::envelope::{Envelope, MessageKind};
use throughgate_protocol::frame::FrameError;
use throughgate_protocol::messages::ErrorCode;

use crate::budget::ConnectionBudget;
use crate::peer::consent_in::ConsentIn;
use crate::peer::holder::Holder;
use crate::state::NodeState;
use crate::transport::{read_envelope_charged, write_envelope, FrameIoError};
use crate::trust::Principal;
use crate::workers::witness::Witness;

/// Accepts connections until the endpoint closes. Connection and stream tasks live in join
/// sets owned by their parents, so stopping this task stops every one of them.
pub async fn serve(state: Arc<NodeState>, endpoint: quinn::Endpoint) {
    let mut connections = tokio::task::JoinSet::new();
    let handshakes = Arc::new(std::sync::atomic::AtomicU32::new(0));
    let max_handshakes = state.config.limits.max_handshakes.max(1);
    loop {
        tokio::select! {
            incoming = endpoint.accept() => {
                let Some(incoming) = incoming else { break };
                // A flood of new connections is turned away before any cryptography.
                let running = handshakes.fetch_add(1, std::sync::atomic::Ordering::AcqRel);
                if running >= max_handshakes {
                    handshakes.fetch_sub(1, std::sync::atomic::Ordering::AcqRel);
                    state.metrics.limit("handshakes_per_node");
                    incoming.refuse();
                    continue;
                }
                let st = state.clone();
                let hs = handshakes.clone();
                connections.spawn(async move {
                    let done = incoming.await;
                    hs.fetch_sub(1, std::sync::atomic::Ordering::AcqRel);
                    match done {
                        Ok(conn) => connection(st, conn).await,
                        Err(e) => {
                    st.metrics.limit("handshake_refused");
                    tracing::info!(error = %e, "handshake refused or failed");
                }
                    }
                });
            }
            Some(_) = connections.join_next(), if !connections.is_empty() => {}
        }
    }
}

async fn connection(state: Arc<NodeState>, conn: quinn::Connection) {
    let key = crate::tls::peer_key(&conn);
    let principal = key.and_then(|k| state.trust.principal(&k));
    let (Some(principal), Some(k)) = (principal, key) else {
        if let Some((why, k)) = key.and_then(|k| state.trust.staff_refusal(&k).map(|w| (w, k))) {
            // Counted like any connection, so being told costs a withdrawn key its slots too.
            if let Ok(_slot) = state.connections.acquire(k, Some(conn.clone())) {
                refuse_staff(&state, &conn, &why).await;
            }
        }
        conn.close(1u32.into(), b"unknown peer");
        return;
    };
    let _slot = match state.connections.acquire(k, Some(conn.clone())) {
        Ok(slot) => slot,
        Err(crate::ratelimit::ConnectionRefusal::PerKey) => {
            state.metrics.limit("connections_per_peer");
            tracing::warn!(key = %k.fingerprint(), "too many connections from one peer; refusing another");
            conn.close(3u32.into(), b"too many connections");
            return;
        }
        Err(crate::ratelimit::ConnectionRefusal::Node) => {
            state.metrics.limit("connections_per_node");
            tracing::warn!(key = %k.fingerprint(), "the node holds its most connections; refusing another");
            conn.close(4u32.into(), b"node busy");
            return;
        }
    };
    match &principal {
        Principal::Peer(a) => {
            // Connections start with the staff allowance; a peer node's fan-out needs more.
            conn.set_max_concurrent_bi_streams(quinn::VarInt::from_u32(
                state.config.limits.max_streams_per_connection,
            ));
            tracing::debug!(peer = %a, "peer connected");
        }
        Principal::Staff(s) => tracing::debug!(person = %s.body.person_id, "staff connected"),
    }
    let budget = state.budgets.connection(k);
    let mut streams = tokio::task::JoinSet::new();
    loop {
        tokio::select! {
            accepted = conn.accept_bi() => {
                let Ok((send, recv)) = accepted else { break };
                // Trust can change while a connection is open (a member removed, a key retired,
                // a credential revoked, the manifest expired): check it for every request.
                if key.and_then(|k| state.trust.principal(&k)).is_none() {
                    if let Some(why) = key.and_then(|k| state.trust.staff_refusal(&k)) {
                        let mut send = send;
                        drop(recv);
                        reply(&mut send, &state.key.error(ErrorCode::Forbidden, why)).await;
                        refuse_staff(&state, &conn, "").await;
                    }
                    conn.close(2u32.into(), b"no longer trusted");
                    break;
                }
                let st = state.clone();
                let p = principal.clone();
                let b = budget.clone();
                // A peer's stream is most often a query, whose decision will be logged: announce
                // it from the moment it is accepted, so a commit batch can wait for it.
                let intent = matches!(p, Principal::Peer(_)).then(|| state.audit.intent());
                streams.spawn(async move { stream(st, p, b, send, recv, intent).await });
            }
            Some(_) = streams.join_next(), if !streams.is_empty() => {}
        }
    }
    // Let requests already received finish answering.
    while streams.join_next().await.is_some() {}
}

async fn stream(
    state: Arc<NodeState>,
    principal: Principal,
    budget: std::sync::Arc<ConnectionBudget>,
    mut send: quinn::SendStream,
    mut recv: quinn::RecvStream,
    intent: Option<crate::audit::Intent>,
) {
    // Every request from a peer counts, well-formed or not.
    if let Principal::Peer(a) = &principal {
        if !state.peer_rate.allow(a.as_str()) {
            state.metrics.limit("peer_rate");
            reply(
                &mut send,
                &state.key.error(
                    ErrorCode::RateLimited,
                    "too many requests; slow down and retry",
                ),
            )
            .await;
            return;
        }
    }
    let limits = &state.config.limits;
    // The request's buffer is charged as it grows and held until the answer is sent.
    let mut charge = budget.request();
    let env = match read_envelope_charged(
        &mut recv,
        limits.max_frame_bytes,
        limits.request_timeout(),
        &mut charge,
    )
    .await
    {
        Ok(Some(env)) => env,
        Ok(None) => {
            reply(
                &mut send,
                &state.key.error(
                    ErrorCode::Malformed,
                    "empty stream: send one framed envelope",
                ),
            )
            .await;
            return;
        }
        Err(e) => {
            let (code, metric) = match &e {
                FrameIoError::Frame(FrameError::TooLarge { .. }) => {
                    (ErrorCode::TooLarge, "frame_too_large")
                }
                FrameIoError::Timeout(_) => (ErrorCode::Timeout, "request_timeout"),
                FrameIoError::Busy(cap) => (ErrorCode::RateLimited, cap.metric()),
                _ => (ErrorCode::Malformed, "malformed_frame"),
            };
            state.metrics.limit(metric);
            tracing::info!(error = %e, "bad request frame");
            let _ = recv.stop(1u32.into());
            reply(&mut send, &state.key.error(code, e.to_string())).await;
            return;
        }
    };
    // Every kind has its body limit (SPEC 5.4): a larger body is `too_large`, whatever the
    // handler would make of it.
    let limit = throughgate_protocol::messages::max_body(env.kind);
    if env.body.len() > limit {
        state.metrics.limit("body_too_large");
        reply(
            &mut send,
            &state.key.error(
                ErrorCode::TooLarge,
                format!(
                    "a {} body of {} bytes is over the limit of {limit} bytes",
                    env.kind,
                    env.body.len()
                ),
            ),
        )
        .await;
        return;
    }
    // Only a query's decision is logged right away; anything else withdraws the announcement.
    let intent = intent.filter(|_| matches!(env.kind, MessageKind::Query));
    let answer = match (&principal, env.kind) {
        (Principal::Peer(peer), MessageKind::Query) => {
            let intent = intent.unwrap_or_else(|| state.audit.intent());
            crate::peer::holder::answer(&Holder::of(&state), peer, &env, intent).await
        }
        (Principal::Peer(peer), MessageKind::ConsentGrant) => {
            crate::peer::consent_in::grant(&ConsentIn::of(&state), peer, &env).await
        }
        (Principal::Peer(peer), MessageKind::ConsentRevoke) => {
            crate::peer::consent_in::revoke(&ConsentIn::of(&state), peer, &env).await
        }
        (Principal::Peer(peer), MessageKind::WitnessRequest) => {
            crate::workers::witness::handle_request(&Witness::of(&state), peer, &env).await
        }
        (Principal::Peer(peer), MessageKind::AuditQuery) => {
            crate::staff_api::audit::answer_peer(
                &crate::staff_api::audit::Auditor::of(&state),
                peer,
                &env,
            )
            .await
        }
        (Principal::Peer(peer), MessageKind::CredentialRevoke) => {
            crate::staff::receive_revocation(&crate::staff::Staffing::of(&state), peer, &env).await
        }
        (Principal::Peer(peer), MessageKind::ManifestSync) => {
            crate::workers::manifest_sync::handle(&state, peer, &env).await
        }
        (Principal::Staff(staff), MessageKind::ClientRequest) => {
            crate::staff_api::dispatch::handle(&state, staff, &env, &mut send, &mut recv, &budget)
                .await
        }
        (_, kind) => state.key.error(
            ErrorCode::UnsupportedKind,
            format!("a {kind} message is not accepted here from this caller"),
        ),
    };
    reply(&mut send, &answer).await;
}

/// Answers the first request of a member of staff whose credential may no longer act with why
/// (`forbidden`), then lets the connection be closed. Bounded: one stream, within the request
/// timeout. An empty `why` only waits for the answer already sent to go out.
async fn refuse_staff(state: &NodeState, conn: &quinn::Connection, why: &str) {
    let timeout = state.config.limits.request_timeout();
    if why.is_empty() {
        let _ = tokio::time::timeout(timeout, conn.closed()).await;
        return;
    }
    state.metrics.limit("staff_credential_refused");
    let _ = tokio::time::timeout(timeout, async {
        if let Ok((mut send, _recv)) = conn.accept_bi().await {
            reply(&mut send, &state.key.error(ErrorCode::Forbidden, why)).await;
            // Closing as soon as the answer is acknowledged can still discard it at the caller
            // before it is read (a closed connection fails its streams' reads): wait for the
            // caller to close, having read it, up to the deadline.
            let _ = conn.closed().await;
        }
    })
    .await;
}

async fn reply(send: &mut quinn::SendStream, env: &Envelope) {
    if let Err(e) = write_envelope(send, env).await {
        tracing::debug!(error = %e, "could not send answer");
        return;
    }
    let _ = send.finish();
}
