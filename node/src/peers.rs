//! Outgoing requests to other nodes: one pooled QUIC connection per peer, one stream per
//! request, a deadline on each.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use throughgate_protocol::envelope::{Envelope, MessageKind};
use throughgate_protocol::ids::AgencyId;
use throughgate_protocol::messages::ErrorBody;
use tokio::sync::Mutex;

use crate::config::Limits;
use crate::transport::{read_envelope, write_envelope};
use crate::trust::Trust;

/// Why a request to a peer failed.
#[allow(missing_docs)] // variant fields are named by the #[error] message
#[derive(Debug, Clone, thiserror::Error)]
pub enum PeerError {
    /// The agency is not in the manifest (or has no usable address).
    #[error("{0} is not a member of the federation manifest")]
    Unknown(AgencyId),
    /// No connection could be established.
    #[error("could not connect to {agency}: {detail}")]
    Unreachable { agency: AgencyId, detail: String },
    /// The peer did not answer within the deadline.
    #[error("{agency} did not answer within {after:?}")]
    TimedOut { agency: AgencyId, after: Duration },
    /// The stream failed or the answer was not a valid frame.
    #[error("request to {agency} failed: {detail}")]
    Stream { agency: AgencyId, detail: String },
    /// The peer answered with a protocol error.
    #[error("{agency} answered with error {}: {}", .body.code, .body.message)]
    Remote { agency: AgencyId, body: ErrorBody },
}

type Slot = Arc<Mutex<Option<quinn::Connection>>>;

/// The connection pool.
#[derive(Debug)]
pub struct Peers {
    endpoint: quinn::Endpoint,
    trust: Arc<Trust>,
    limits: Limits,
    slots: std::sync::Mutex<HashMap<AgencyId, Slot>>,
    on_connect: std::sync::Mutex<Option<tokio::sync::mpsc::UnboundedSender<AgencyId>>>,
    client_config: std::sync::RwLock<quinn::ClientConfig>,
}

impl Peers {
    /// A pool using `endpoint` (whose default client config carries our identity).
    pub fn new(
        endpoint: quinn::Endpoint,
        client_config: quinn::ClientConfig,
        trust: Arc<Trust>,
        limits: Limits,
    ) -> Peers {
        Peers {
            client_config: std::sync::RwLock::new(client_config),
            endpoint,
            trust,
            limits,
            slots: std::sync::Mutex::new(HashMap::new()),
            on_connect: std::sync::Mutex::new(None),
        }
    }

    /// Replaces the TLS client configuration (our certificate) for new connections.
    pub fn set_client_config(&self, cfg: quinn::ClientConfig) {
        if let Ok(mut c) = self.client_config.write() {
            *c = cfg;
        }
    }

    /// Asks to be told the agency id of every new outgoing connection (for manifest exchange).
    pub fn set_connect_hook(&self, tx: tokio::sync::mpsc::UnboundedSender<AgencyId>) {
        if let Ok(mut h) = self.on_connect.lock() {
            *h = Some(tx);
        }
    }

    fn slot(&self, agency: &AgencyId) -> Slot {
        let mut slots = self
            .slots
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        slots.entry(agency.clone()).or_default().clone()
    }

    /// The pooled connection to `agency`, connecting if there is none or it has closed.
    pub async fn connection(&self, agency: &AgencyId) -> Result<quinn::Connection, PeerError> {
        let slot = self.slot(agency);
        let mut guard = slot.lock().await;
        if let Some(c) = guard.as_ref() {
            if c.close_reason().is_none() {
                return Ok(c.clone());
            }
        }
        let conn = self.connect(agency).await?;
        *guard = Some(conn.clone());
        if let Ok(hook) = self.on_connect.lock() {
            if let Some(tx) = hook.as_ref() {
                let _ = tx.send(agency.clone());
            }
        }
        Ok(conn)
    }

    /// Drops the pooled connection to `agency` (e.g. after the manifest removed it).
    pub fn forget(&self, agency: &AgencyId) {
        let mut slots = self
            .slots
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if let Some(slot) = slots.remove(agency) {
            if let Ok(mut g) = slot.try_lock() {
                if let Some(c) = g.take() {
                    c.close(0u32.into(), b"forgotten");
                }
            }
        }
    }

    /// Whether a live pooled connection to `agency` exists.
    pub fn is_connected(&self, agency: &AgencyId) -> bool {
        let slot = self.slot(agency);
        let connected = slot
            .try_lock()
            .map(|g| g.as_ref().is_some_and(|c| c.close_reason().is_none()));
        connected.unwrap_or(true)
    }

    async fn connect(&self, agency: &AgencyId) -> Result<quinn::Connection, PeerError> {
        let manifest = self
            .trust
            .manifest()
            .ok_or_else(|| PeerError::Unknown(agency.clone()))?;
        let member = manifest
            .member(agency)
            .ok_or_else(|| PeerError::Unknown(agency.clone()))?;
        let mut last = String::from("no address listed");
        for addr in &member.addresses {
            let resolved = match tokio::net::lookup_host(addr.as_str()).await {
                Ok(mut it) => it.next(),
                Err(e) => {
                    last = format!("{addr}: {e}");
                    continue;
                }
            };
            let Some(sock) = resolved else { continue };
            let cfg = self
                .client_config
                .read()
                .map(|c| c.clone())
                .unwrap_or_else(|e| e.into_inner().clone());
            let connecting = match self.endpoint.connect_with(cfg, sock, agency.as_str()) {
                Ok(c) => c,
                Err(e) => {
                    last = format!("{addr}: {e}");
                    continue;
                }
            };
            match connecting.await {
                Ok(conn) => return Ok(conn),
                Err(e) => last = format!("{addr}: {e}"),
            }
        }
        Err(PeerError::Unreachable {
            agency: agency.clone(),
            detail: last,
        })
    }

    /// Sends `request` to `agency` on a fresh stream and waits for its one answer, within
    /// `timeout` (connection included). An `error` answer becomes [`PeerError::Remote`].
    pub async fn request(
        &self,
        agency: &AgencyId,
        request: &Envelope,
        timeout: Duration,
    ) -> Result<Envelope, PeerError> {
        let deadline = tokio::time::Instant::now() + timeout;
        // A peer that does not complete a handshake in time is unreachable; one that connects
        // but does not answer in time has timed out.
        let conn = tokio::time::timeout_at(deadline, self.connection(agency))
            .await
            .map_err(|_| PeerError::Unreachable {
                agency: agency.clone(),
                detail: format!("no handshake within {timeout:?}"),
            })??;
        let work = async {
            match self.exchange(&conn, agency, request).await {
                Err(PeerError::Stream { .. }) if conn.close_reason().is_some() => {
                    // The pooled connection died under us: one retry on a fresh one.
                    let conn = self.connection(agency).await?;
                    self.exchange(&conn, agency, request).await
                }
                other => other,
            }
        };
        tokio::time::timeout_at(deadline, work)
            .await
            .map_err(|_| PeerError::TimedOut {
                agency: agency.clone(),
                after: timeout,
            })?
    }

    async fn exchange(
        &self,
        conn: &quinn::Connection,
        agency: &AgencyId,
        request: &Envelope,
    ) -> Result<Envelope, PeerError> {
        let stream_err = |detail: String| PeerError::Stream {
            agency: agency.clone(),
            detail,
        };
        let (mut send, mut recv) = conn
            .open_bi()
            .await
            .map_err(|e| stream_err(e.to_string()))?;
        write_envelope(&mut send, request)
            .await
            .map_err(|e| stream_err(e.to_string()))?;
        send.finish().map_err(|e| stream_err(e.to_string()))?;
        let answer = read_envelope(
            &mut recv,
            self.limits.max_frame_bytes,
            Duration::from_secs(3600),
        )
        .await
        .map_err(|e| stream_err(e.to_string()))?
        .ok_or_else(|| stream_err("stream closed without an answer".into()))?;
        if answer.kind == MessageKind::Error {
            let body: ErrorBody = answer.open().map_err(|e| stream_err(e.to_string()))?;
            return Err(PeerError::Remote {
                agency: agency.clone(),
                body,
            });
        }
        Ok(answer)
    }
}
