//! The state every task of a node shares ([`NodeState`]), and the node's errors. Kept apart
//! from the start-up code in `node`, which calls every handler, so that handlers can use the
//! state without depending on start-up.

use std::net::SocketAddr;
use std::sync::atomic::AtomicU64;
use std::sync::{Arc, RwLock};

use throughgate_protocol::envelope::Envelope;
use throughgate_protocol::ids::AgencyId;
use throughgate_protocol::manifest::{Manifest, ManifestError};
use throughgate_protocol::messages::NodeStatus;
use throughgate_protocol::time::Timestamp;

use crate::audit::{AuditError, AuditLog};
use crate::clock::Clock;
use crate::config::NodeConfig;
use crate::db::Db;
use crate::keyring::NodeKey;
use crate::peers::Peers;
use crate::policy::Policy;
use crate::store::StoreError;
use crate::tls::TlsError;
use crate::trust::Trust;

/// Why a node could not start or change state.
#[derive(Debug, thiserror::Error)]
pub enum NodeError {
    /// Storage failed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// TLS could not be set up.
    #[error(transparent)]
    Tls(#[from] TlsError),
    /// The UDP socket could not be bound.
    #[error("could not listen on {addr}: {source}")]
    Bind {
        /// The address.
        addr: SocketAddr,
        /// The I/O error.
        source: std::io::Error,
    },
    /// A manifest was refused.
    #[error("manifest refused: {0}")]
    Manifest(#[from] ManifestError),
    /// The audit log could not be opened.
    #[error(transparent)]
    Audit(#[from] AuditError),
    /// The record source could not be set up.
    #[error(transparent)]
    Source(#[from] crate::source::SourceSetupError),
    /// The node has no manifest yet.
    #[error("no current federation manifest (none stored, or the stored one expired): put a valid one at the config's `manifest_file` and start again")]
    NoManifest,
}

/// Why a node could not report its status.
#[derive(Debug, thiserror::Error)]
pub enum NodeStatusError {
    /// The node has no current manifest.
    #[error("node has no manifest")]
    NoManifest,
    /// Storage failed while counting.
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// State shared by every task of a node.
pub struct NodeState {
    /// This agency.
    pub agency: AgencyId,
    /// The node key (swappable for rotation).
    pub key: NodeKey,
    /// The QUIC endpoint (for swapping TLS identity on key rotation).
    pub endpoint: quinn::Endpoint,
    /// Configuration.
    pub config: NodeConfig,
    /// Storage.
    pub db: Db,
    /// Where answers read records: the store, or the agency's own system.
    pub records: Arc<dyn crate::source::RecordSource>,
    /// A live source's recent answers, in memory (off unless `records.cache_ttl_secs` is set).
    pub source_cache: crate::source::cache::AnswerCache,
    /// Manifest and staff keys.
    pub trust: Arc<Trust>,
    /// The clock.
    pub clock: Clock,
    /// The minimisation policy.
    pub policy: RwLock<Arc<Policy>>,
    /// Outgoing connections.
    pub peers: Peers,
    /// The delivery queue; queueing through it wakes the outbox worker.
    pub outbox: crate::queue::Outbox,
    /// When the node started.
    pub started_at: Timestamp,
    /// The audit log.
    pub audit: AuditLog,
    /// Witness alarms raised since start (checkpoints that contradicted one already witnessed).
    pub witness_alarms: AtomicU64,
    /// Consents received since start that named a different person than their passport id
    /// already names here (`subject_mismatch`).
    pub consent_alarms: AtomicU64,
    /// Prometheus metrics.
    pub metrics: Arc<crate::metrics::Metrics>,
    /// Requests per peer agency.
    pub peer_rate: crate::ratelimit::RateLimiter,
    /// Queries per caseworker.
    pub caseworker_rate: crate::ratelimit::RateLimiter,
    /// Live connections per peer key.
    pub connections: crate::ratelimit::ConnectionCounter,
    /// Consent recording and delivery limits.
    pub consent_limits: crate::ratelimit::ConsentLimits,
    /// Request bytes in flight per connection, per key and for the node.
    pub budgets: Arc<crate::budget::Budgets>,
    /// Orders consent decisions against consent status changes.
    pub consent_gate: crate::consent_gate::ConsentGate,
    /// Held by whatever changes the record store (imports, syncs, deletions) from its check
    /// to its last write, so that a sync's plan still holds when it is applied.
    pub records_writer: Arc<tokio::sync::Mutex<()>>,
    /// Signatures this node has already verified and sees again (caseworker credentials,
    /// holders' checkpoints); see `throughgate_protocol::sigcache`.
    pub sig_cache: throughgate_protocol::sigcache::SigCache,
}

impl std::fmt::Debug for NodeState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NodeState")
            .field("agency", &self.agency)
            .finish_non_exhaustive()
    }
}

impl NodeState {
    /// The current manifest (a node never runs without one).
    pub fn manifest(&self) -> Option<Arc<Manifest>> {
        self.trust.manifest()
    }

    /// The current policy.
    pub fn policy(&self) -> Arc<Policy> {
        self.policy
            .read()
            .map(|p| p.clone())
            .unwrap_or_else(|e| e.into_inner().clone())
    }

    /// Logs an administrative action (durably) and returns once it is logged.
    pub async fn log_admin(
        &self,
        person: Option<&throughgate_protocol::ids::PersonId>,
        action: &str,
        detail: String,
    ) -> Result<(), AuditError> {
        self.audit.log_admin(person, action, detail).await
    }

    /// Checks that a message from `peer` is signed by one of its node keys in the trusted
    /// manifest (see [`Trust::check_peer_signed`]); otherwise returns the signed error to
    /// answer with.
    pub fn check_peer_signed(
        &self,
        peer: &AgencyId,
        env: &Envelope,
    ) -> Result<Arc<Manifest>, Envelope> {
        self.trust
            .check_peer_signed(peer, env)
            .map_err(|(code, why)| self.key.error(code, why))
    }

    /// What the node reports about itself: identity, key, manifest, counts, start time.
    pub fn status(&self) -> Result<NodeStatus, NodeStatusError> {
        let manifest = self.manifest().ok_or(NodeStatusError::NoManifest)?;
        let name = manifest
            .member(&self.agency)
            .map(|m| m.name.clone())
            .unwrap_or_default();
        Ok(NodeStatus {
            agency: self.agency.clone(),
            name,
            software: env!("CARGO_PKG_VERSION").into(),
            key_fingerprint: self.key.current().public().fingerprint(),
            manifest_version: manifest.version,
            manifest_expires_at: manifest.expires_at,
            records: self.db.record_count()?,
            consents: self.db.consent_count()?,
            outbox_pending: self.db.outbox_len()?,
            started_at: self.started_at,
            max_consent_days: self.config.consent.max_validity_days,
        })
    }

    /// Verifies, adopts and persists a manifest.
    pub fn adopt_manifest(&self, env: &Envelope) -> Result<Arc<Manifest>, NodeError> {
        let m = self.trust.install_manifest(env)?;
        self.db.put_manifest(env, m.version)?;
        Ok(m)
    }
}
