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

pub use crate::dial::CONNECT_STAGGER;

/// The connection pool.
#[derive(Debug)]
pub struct Peers {
    endpoint: quinn::Endpoint,
    trust: Arc<Trust>,
    limits: Limits,
    slots: std::sync::Mutex<HashMap<AgencyId, Slot>>,
    on_connect: std::sync::Mutex<Option<tokio::sync::mpsc::UnboundedSender<AgencyId>>>,
    client_config: std::sync::RwLock<quinn::ClientConfig>,
    /// Per agency, the address that completed the last handshake.
    preferred: std::sync::Mutex<HashMap<AgencyId, std::net::SocketAddr>>,
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
            preferred: std::sync::Mutex::new(HashMap::new()),
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

    /// Connects to `agency` at one of the addresses the manifest lists for it (replicas of one
    /// agency, all presenting its key). The address that answered last goes first; each further
    /// address joins the race after [`CONNECT_STAGGER`], or at once when an earlier attempt
    /// fails, so a dead replica delays a connection by the stagger, never by a handshake
    /// timeout. The first handshake to complete wins and is remembered.
    async fn connect(&self, agency: &AgencyId) -> Result<quinn::Connection, PeerError> {
        self.connect_avoiding(agency, None).await
    }

    /// As [`Peers::connect`], leaving out `avoid` (the address of a connection that stopped
    /// answering) unless it is the only one listed.
    async fn connect_avoiding(
        &self,
        agency: &AgencyId,
        avoid: Option<std::net::SocketAddr>,
    ) -> Result<quinn::Connection, PeerError> {
        let manifest = self
            .trust
            .manifest()
            .ok_or_else(|| PeerError::Unknown(agency.clone()))?;
        let member = manifest
            .member(agency)
            .ok_or_else(|| PeerError::Unknown(agency.clone()))?;
        let (mut addrs, unresolved) =
            crate::dial::resolve_all(member.addresses.iter().map(String::as_str)).await;
        if addrs.len() > 1 {
            addrs.retain(|a| Some(*a) != avoid);
        }
        let preferred = self.preferred(agency);
        if let Some(at) = preferred.and_then(|p| addrs.iter().position(|a| *a == p)) {
            if let Some(head) = addrs.get_mut(..=at) {
                head.rotate_right(1);
            }
        }
        if addrs.is_empty() {
            return Err(PeerError::Unreachable {
                agency: agency.clone(),
                detail: unresolved.unwrap_or_else(|| "no address listed".into()),
            });
        }
        let cfg = self
            .client_config
            .read()
            .map(|c| c.clone())
            .unwrap_or_else(|e| e.into_inner().clone());
        match crate::dial::first_handshake(&self.endpoint, &cfg, &addrs, agency.as_str()).await {
            Ok((sock, conn)) => {
                self.remember(agency, sock);
                Ok(conn)
            }
            Err(e) => Err(PeerError::Unreachable {
                agency: agency.clone(),
                detail: e.0,
            }),
        }
    }

    /// The address of `agency` that completed the last handshake, if any.
    pub fn preferred(&self, agency: &AgencyId) -> Option<std::net::SocketAddr> {
        self.preferred
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .get(agency)
            .copied()
    }

    fn remember(&self, agency: &AgencyId, addr: std::net::SocketAddr) {
        self.preferred
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .insert(agency.clone(), addr);
    }

    /// Drops the pooled connection to `agency` if it is still `conn`: after a request on it
    /// failed or went unanswered, the next request connects afresh (to another replica, if this
    /// one died) instead of waiting for the idle timeout to notice.
    fn evict(&self, agency: &AgencyId, conn: &quinn::Connection) {
        let slot = self.slot(agency);
        if let Ok(mut g) = slot.try_lock() {
            // Requests still running on it keep it open; it closes when the last ends.
            if g.as_ref()
                .is_some_and(|c| c.stable_id() == conn.stable_id())
            {
                *g = None;
            }
        };
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
        tokio::time::timeout_at(deadline, work).await.map_err(|_| {
            self.evict(agency, &conn);
            PeerError::TimedOut {
                agency: agency.clone(),
                after: timeout,
            }
        })?
    }

    /// The number of addresses the manifest lists for `agency`.
    pub fn address_count(&self, agency: &AgencyId) -> usize {
        self.trust
            .manifest()
            .and_then(|m| m.member(agency).map(|x| x.addresses.len()))
            .unwrap_or(0)
    }

    /// As [`Peers::request`], but for an agency with several addresses (replicas), when no
    /// answer has come after `hedge_after` the same request also goes to another replica on a
    /// fresh connection; the first answer that `usable` accepts wins, and the replica that gave
    /// it becomes the pooled one. This is how a request survives a replica that died without
    /// closing its connections: the pooled connection to it would otherwise only be noticed
    /// dead at the idle timeout. `usable` turns down answers that only say the other replica
    /// saw the request too (a replay refusal), which do not end the wait for the first.
    pub async fn request_hedged(
        &self,
        agency: &AgencyId,
        request: &Envelope,
        timeout: Duration,
        hedge_after: Duration,
        usable: impl Fn(&Envelope) -> bool,
    ) -> Result<Envelope, PeerError> {
        if self.address_count(agency) < 2 || hedge_after >= timeout {
            return self.request(agency, request, timeout).await;
        }
        let deadline = tokio::time::Instant::now() + timeout;
        let primary = self.request(agency, request, timeout);
        let hedge = tokio::time::timeout_at(deadline, async {
            tokio::time::sleep(hedge_after).await;
            let avoid = self.pooled_remote(agency);
            let conn = self.connect_avoiding(agency, avoid).await?;
            let answer = self.exchange(&conn, agency, request).await?;
            Ok::<_, PeerError>((conn, answer))
        });
        tokio::pin!(primary);
        tokio::pin!(hedge);
        let (mut primary_done, mut hedge_done) = (false, false);
        let mut failure = None;
        while !(primary_done && hedge_done) {
            tokio::select! {
                r = &mut primary, if !primary_done => {
                    primary_done = true;
                    match r {
                        Ok(answer) => return Ok(answer),
                        Err(e) => failure = Some(e),
                    }
                }
                r = &mut hedge, if !hedge_done => {
                    hedge_done = true;
                    if let Ok(Ok((conn, answer))) = r {
                        if usable(&answer) {
                            self.adopt(agency, conn);
                            return Ok(answer);
                        }
                    }
                }
            }
        }
        Err(failure.unwrap_or(PeerError::TimedOut {
            agency: agency.clone(),
            after: timeout,
        }))
    }

    /// The remote address of the pooled connection to `agency`, if there is one.
    fn pooled_remote(&self, agency: &AgencyId) -> Option<std::net::SocketAddr> {
        let slot = self.slot(agency);
        let remote = slot
            .try_lock()
            .ok()
            .and_then(|g| g.as_ref().map(quinn::Connection::remote_address));
        remote
    }

    /// Makes `conn` the pooled connection to `agency` and its address the preferred one.
    fn adopt(&self, agency: &AgencyId, conn: quinn::Connection) {
        self.remember(agency, conn.remote_address());
        let slot = self.slot(agency);
        if let Ok(mut g) = slot.try_lock() {
            *g = Some(conn);
        };
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
