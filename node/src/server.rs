//! The accept loop: every incoming connection is authenticated during the handshake (pinned
//! keys), then each bidirectional stream carries one request, dispatched by who the peer is and
//! what kind of message it sent. A malformed request costs its stream, never the connection or
//! the node.

use std::sync::Arc;

use throughgate_protocol::envelope::{Envelope, MessageKind};
use throughgate_protocol::frame::FrameError;
use throughgate_protocol::messages::ErrorCode;

use crate::node::NodeState;
use crate::transport::{read_envelope, write_envelope, FrameIoError};
use crate::trust::Principal;

/// Accepts connections until the endpoint closes.
pub async fn serve(state: Arc<NodeState>, endpoint: quinn::Endpoint) {
    while let Some(incoming) = endpoint.accept().await {
        let st = state.clone();
        tokio::spawn(async move {
            match incoming.await {
                Ok(conn) => connection(st, conn).await,
                Err(e) => tracing::info!(error = %e, "handshake refused or failed"),
            }
        });
    }
}

async fn connection(state: Arc<NodeState>, conn: quinn::Connection) {
    let principal = crate::tls::peer_key(&conn).and_then(|k| state.trust.principal(&k));
    let Some(principal) = principal else {
        conn.close(1u32.into(), b"unknown peer");
        return;
    };
    match &principal {
        Principal::Peer(a) => tracing::debug!(peer = %a, "peer connected"),
        Principal::Staff(s) => tracing::debug!(person = %s.body.person_id, "staff connected"),
    }
    loop {
        let (send, recv) = match conn.accept_bi().await {
            Ok(s) => s,
            Err(_) => break,
        };
        let st = state.clone();
        let p = principal.clone();
        tokio::spawn(async move { stream(st, p, send, recv).await });
    }
}

async fn stream(
    state: Arc<NodeState>,
    principal: Principal,
    mut send: quinn::SendStream,
    mut recv: quinn::RecvStream,
) {
    let limits = &state.config.limits;
    let env = match read_envelope(&mut recv, limits.max_frame_bytes, limits.request_timeout()).await
    {
        Ok(Some(env)) => env,
        Ok(None) => {
            reply(
                &mut send,
                &state.error(
                    ErrorCode::Malformed,
                    "empty stream: send one framed envelope",
                ),
            )
            .await;
            return;
        }
        Err(e) => {
            let code = match &e {
                FrameIoError::Frame(FrameError::TooLarge { .. }) => ErrorCode::TooLarge,
                FrameIoError::Timeout(_) => ErrorCode::Timeout,
                _ => ErrorCode::Malformed,
            };
            tracing::info!(error = %e, "bad request frame");
            let _ = recv.stop(1u32.into());
            reply(&mut send, &state.error(code, e.to_string())).await;
            return;
        }
    };
    let answer = match (&principal, env.kind) {
        (Principal::Peer(peer), MessageKind::Query) => {
            crate::holder::answer(&state, peer, &env).await
        }
        (Principal::Peer(peer), MessageKind::ConsentGrant) => {
            crate::consent_in::grant(&state, peer, &env)
        }
        (Principal::Peer(peer), MessageKind::ConsentRevoke) => {
            crate::consent_in::revoke(&state, peer, &env)
        }
        (Principal::Staff(staff), MessageKind::ClientRequest) => {
            crate::client_api::handle(&state, staff, &env, &mut send, &mut recv).await
        }
        (_, kind) => state.error(
            ErrorCode::UnsupportedKind,
            format!("a {kind} message is not accepted here from this caller"),
        ),
    };
    reply(&mut send, &answer).await;
}

async fn reply(send: &mut quinn::SendStream, env: &Envelope) {
    if let Err(e) = write_envelope(send, env).await {
        tracing::debug!(error = %e, "could not send answer");
        return;
    }
    let _ = send.finish();
}
