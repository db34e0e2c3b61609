//! The operator's HTTP endpoints, on a loopback address by default: `/metrics` (Prometheus
//! text), `/healthz` (the process is up) and `/readyz` (the node can serve: a current manifest
//! and a working audit log).

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;

use http_body_util::Full;
use hyper::body::{Bytes, Incoming};
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::TokioIo;

use crate::audit::AuditLog;
use crate::clock::Clock;
use crate::db::Db;
use crate::metrics::Metrics;
use crate::state::NodeState;
use crate::trust::Trust;

/// What the metrics and health endpoints read of the node, and nothing else.
#[derive(Clone, Copy, Debug)]
pub struct Observed<'a> {
    /// The metrics, whose read-from-state gauges are refreshed here.
    pub metrics: &'a Metrics,
    /// Storage (the outbox length, cosignatures).
    pub db: &'a Db,
    /// The manifest.
    pub trust: &'a Trust,
    /// The clock.
    pub clock: &'a Clock,
    /// The audit log (its size, whether its writer runs).
    pub audit: &'a AuditLog,
}

impl<'a> Observed<'a> {
    /// The parts of `state` that the endpoints read.
    pub fn of(state: &'a NodeState) -> Self {
        Observed {
            metrics: &state.metrics,
            db: &state.db,
            trust: &state.trust,
            clock: &state.clock,
            audit: &state.audit,
        }
    }
}

/// Refreshes the gauges that are read from state rather than counted.
pub fn refresh(state: &Observed<'_>) {
    let m = state.metrics;
    if let Ok(n) = state.db.outbox_len() {
        m.outbox_pending.set(i64::try_from(n).unwrap_or(i64::MAX));
    }
    if let Some(man) = state.trust.manifest() {
        let now = i64::try_from(state.clock.now().0).unwrap_or(i64::MAX);
        let exp = i64::try_from(man.expires_at.0).unwrap_or(i64::MAX);
        m.manifest_expiry_seconds.set(exp.saturating_sub(now));
        m.manifest_version
            .set(i64::try_from(man.version).unwrap_or(i64::MAX));
    }
    if let Some((size, _)) = state.audit.latest() {
        m.audit_entries.set(i64::try_from(size).unwrap_or(i64::MAX));
    }
    if let Ok(cos) = state.db.cosignatures() {
        for (peer, size, _) in cos {
            m.witness_cosigned
                .get_or_create(&crate::metrics::PeerLabel {
                    peer: peer.to_string(),
                })
                .set(i64::try_from(size).unwrap_or(i64::MAX));
        }
    }
}

/// Why the node is not ready, if it is not.
pub fn not_ready(state: &Observed<'_>) -> Option<String> {
    match state.trust.manifest() {
        None => Some("no manifest".into()),
        Some(m) if state.clock.now() >= m.expires_at => {
            Some(format!("manifest version {} expired", m.version))
        }
        Some(_) if !state.audit.is_running() => Some("audit writer stopped".into()),
        Some(_) => None,
    }
}

fn reply(status: StatusCode, content_type: &str, body: String) -> Response<Full<Bytes>> {
    let mut r = Response::new(Full::new(Bytes::from(body)));
    *r.status_mut() = status;
    if let Ok(v) = hyper::header::HeaderValue::from_str(content_type) {
        r.headers_mut().insert(hyper::header::CONTENT_TYPE, v);
    }
    r
}

async fn handle(
    state: Arc<NodeState>,
    req: Request<Incoming>,
) -> Result<Response<Full<Bytes>>, Infallible> {
    if req.method() != Method::GET {
        return Ok(reply(
            StatusCode::METHOD_NOT_ALLOWED,
            "text/plain",
            "GET only\n".into(),
        ));
    }
    let state = Observed::of(&state);
    Ok(match req.uri().path() {
        "/metrics" => {
            refresh(&state);
            reply(
                StatusCode::OK,
                "application/openmetrics-text; version=1.0.0; charset=utf-8",
                state.metrics.encode(),
            )
        }
        "/healthz" => reply(StatusCode::OK, "text/plain", "ok\n".into()),
        "/readyz" => match not_ready(&state) {
            None => reply(StatusCode::OK, "text/plain", "ready\n".into()),
            Some(why) => reply(
                StatusCode::SERVICE_UNAVAILABLE,
                "text/plain",
                format!("not ready: {why}\n"),
            ),
        },
        _ => reply(
            StatusCode::NOT_FOUND,
            "text/plain",
            "try /metrics, /healthz or /readyz\n".into(),
        ),
    })
}

/// Serves the endpoints on `listener` until the task is stopped.
pub async fn serve(state: Arc<NodeState>, listener: tokio::net::TcpListener) {
    let mut conns = tokio::task::JoinSet::new();
    loop {
        tokio::select! {
            accepted = listener.accept() => {
                let Ok((stream, _)) = accepted else { continue };
                let st = state.clone();
                conns.spawn(async move {
                    let svc = hyper::service::service_fn(move |req| handle(st.clone(), req));
                    let _ = hyper::server::conn::http1::Builder::new().serve_connection(TokioIo::new(stream), svc).await;
                });
            }
            Some(_) = conns.join_next(), if !conns.is_empty() => {}
        }
    }
}

/// Binds the endpoint address, warning if it is not a loopback address.
pub async fn bind(addr: SocketAddr) -> std::io::Result<tokio::net::TcpListener> {
    if !addr.ip().is_loopback() {
        tracing::warn!(%addr, "metrics endpoint is not on a loopback address: make sure only monitoring can reach it");
    }
    tokio::net::TcpListener::bind(addr).await
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use throughgate_protocol::ids::AgencyId;
    use throughgate_protocol::keys::SecretKey;

    use super::*;
    use crate::store::MemoryStore;

    #[test]
    fn a_node_without_a_manifest_is_not_ready_and_its_outbox_gauge_is_read_from_the_store() {
        let db = Db::new(Arc::new(MemoryStore::new()));
        let agency = AgencyId::new("dwp").unwrap();
        let clock = Clock::system();
        let metrics = Arc::new(Metrics::new());
        let audit = AuditLog::open(
            db.clone(),
            crate::keyring::NodeKey::new(SecretKey::generate()),
            agency.clone(),
            clock.clone(),
            metrics.clone(),
        )
        .unwrap();
        let trust = Trust::new(agency, clock.clone());
        let observed = Observed {
            metrics: &metrics,
            db: &db,
            trust: &trust,
            clock: &clock,
            audit: &audit,
        };
        assert_eq!(not_ready(&observed).as_deref(), Some("no manifest"));
        metrics.outbox_pending.set(5);
        refresh(&observed);
        assert_eq!(metrics.outbox_pending.get(), 0);
    }
}
