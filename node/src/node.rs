//! A running node: start-up, background work and shutdown (its shared state is in `state`).

use std::net::SocketAddr;
use std::sync::atomic::AtomicU64;
use std::sync::{Arc, RwLock};

use throughgate_protocol::envelope::SignerRole;
use throughgate_protocol::ids::AgencyId;
use throughgate_protocol::keys::SecretKey;
use tokio::task::JoinHandle;

use crate::audit::AuditLog;
use crate::clock::Clock;
use crate::config::NodeConfig;
use crate::db::{Db, StoredStaff};
use crate::keyring::NodeKey;
use crate::peers::Peers;
use crate::policy::Policy;
use crate::store::{Store, StoreError};
use crate::tls::{self, TlsIdentity};
use crate::trust::Trust;

pub use crate::state::{NodeError, NodeState, NodeStatusError};

/// What a node needs to start.
pub struct NodeOptions {
    /// Its configuration.
    pub config: NodeConfig,
    /// Its private key.
    pub key: SecretKey,
    /// Its storage.
    pub store: Arc<dyn Store>,
    /// Its minimisation policy.
    pub policy: Policy,
    /// Its clock.
    pub clock: Clock,
}

/// Loads the stored staff credentials into `trust`. Only credentials this node issued count:
/// signed by its current key `current`, a key it has signed with before, or a key the manifest
/// lists for it. A credential planted in the store (or in a backup) under any other key is
/// refused and named in the log.
fn load_staff(
    db: &Db,
    trust: &Trust,
    agency: &AgencyId,
    current: throughgate_protocol::keys::PublicKey,
) -> Result<(), NodeError> {
    let mut issuers = db.own_keys()?;
    issuers.push(current);
    if let Some(me) = trust.manifest().and_then(|m| m.member(agency).cloned()) {
        issuers.extend(me.node_keys);
    }
    for s in db.all_staff()? {
        match own_credential(&s, agency, &issuers) {
            Ok(()) => trust.add_staff(s),
            Err(why) => tracing::error!(
                person = %s.body.person_id,
                "stored staff credential refused: {why}; it was not issued by this node (check the data folder for tampering)"
            ),
        }
    }
    Ok(())
}

/// How often a replica looks for what other replicas of its agency changed in the shared
/// store: staff credentials added, re-issued or withdrawn, and a newly adopted manifest.
pub const SHARED_STATE_POLL: std::time::Duration = std::time::Duration::from_secs(1);

/// Keeps a replica's in-memory trust in step with the store it shares with other replicas of
/// its agency (PostgreSQL): within [`SHARED_STATE_POLL`], a credential withdrawn on one replica
/// is refused by all, one issued on one is accepted by all, and a manifest adopted by one is
/// adopted by all (verified as any other: chained, no rollback).
async fn follow_shared_store(state: Arc<NodeState>) {
    let mut tick = tokio::time::interval(SHARED_STATE_POLL);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut seen = state.db.staff_generation().ok().flatten();
    loop {
        tick.tick().await;
        match state.db.manifest() {
            Ok(Some(env)) => {
                let current = state.trust.manifest_envelope().map(|e| e.to_bytes());
                if current.as_deref() != Some(env.to_bytes().as_slice()) {
                    match state.trust.install_manifest(&env) {
                        Ok(m) => tracing::info!(
                            version = m.version,
                            "adopted the manifest another replica stored"
                        ),
                        Err(e) => tracing::debug!(error = %e, "stored manifest not adopted"),
                    }
                }
            }
            Ok(None) => {}
            Err(e) => tracing::warn!(error = %e, "could not read the shared manifest"),
        }
        let generation = match state.db.staff_generation() {
            Ok(g) => g,
            Err(e) => {
                tracing::warn!(error = %e, "could not read the shared staff generation");
                continue;
            }
        };
        if generation != seen {
            match load_staff(
                &state.db,
                &state.trust,
                &state.agency,
                state.key.current().public(),
            ) {
                Ok(()) => seen = generation,
                Err(e) => tracing::warn!(error = %e, "could not reload shared staff credentials"),
            }
        }
    }
}

/// Whether a stored credential is one this node issued: for this agency, signed in role
/// `node` by one of `issuers`, and the very body stored with it.
fn own_credential(
    s: &StoredStaff,
    agency: &AgencyId,
    issuers: &[throughgate_protocol::keys::PublicKey],
) -> Result<(), &'static str> {
    if &s.body.agency != agency {
        return Err("it is for another agency");
    }
    match s
        .credential
        .open::<throughgate_protocol::credential::Credential>()
    {
        Ok(body) if body == s.body => {}
        _ => return Err("it differs from its signed form"),
    }
    s.credential
        .verify_by_any(SignerRole::Node, issuers)
        .map(|_| ())
        .map_err(|_| "it is not signed by this node's keys")
}

/// A node bound to its socket.
pub struct Node {
    state: Arc<NodeState>,
    endpoint: quinn::Endpoint,
    tasks: Vec<JoinHandle<()>>,
}

impl std::fmt::Debug for Node {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Node")
            .field("agency", &self.state.agency)
            .finish_non_exhaustive()
    }
}

impl Node {
    /// Binds the node's QUIC endpoint and loads its trusted state (stored manifest, staff).
    /// Nothing is served until [`Node::start`].
    pub fn bind(opts: NodeOptions) -> Result<Node, NodeError> {
        let NodeOptions {
            config,
            key,
            store,
            policy,
            clock,
        } = opts;
        let agency = config.agency.clone();
        let db = Db::new(store);
        let records = crate::source::open(&config, db.clone())?;
        let dropped = db.drop_legacy_links()?;
        if dropped > 0 {
            tracing::warn!(
                links = dropped,
                "dropped passport links made by the old last-consent-wins rule; consents stored before this version disclose nothing until recorded again"
            );
        }
        let trust = Arc::new(Trust::new(agency.clone(), clock.clone()));
        if let Some(env) = db.manifest()? {
            // A stored manifest that has since expired is not installed; the operator must
            // supply a current one.
            if let Err(e) = trust.install_manifest(&env) {
                tracing::warn!(error = %e, "stored manifest not usable");
            }
        }
        load_staff(&db, &trust, &agency, key.public())?;
        let identity = TlsIdentity::new(&key, agency.as_str())?;
        let server = tls::server_config(
            &identity,
            trust.clone(),
            &config.limits,
            config.quic.migration,
        )?;
        let client = tls::client_config(&identity, trust.clone(), &config.limits)?;
        let addr = config.listen;
        let endpoint = bind_endpoint(&key, config.quic.replica.as_deref(), server, addr)?;
        let peers = Peers::new(
            endpoint.clone(),
            client,
            trust.clone(),
            config.limits.clone(),
        );
        db.remember_own_key(&key.public())?;
        let key = NodeKey::new(key);
        let metrics = Arc::new(crate::metrics::Metrics::new());
        let audit = AuditLog::open(
            db.clone(),
            key.clone(),
            agency.clone(),
            clock.clone(),
            metrics.clone(),
        )?
        .with_commit_delay(config.storage.commit_delay());
        let state = Arc::new(NodeState {
            source_cache: crate::source::cache::AnswerCache::new(config.records.cache_ttl_secs),
            metrics,
            peer_rate: crate::ratelimit::RateLimiter::new(
                config.limits.peer_requests_per_sec,
                config.limits.peer_burst,
            ),
            caseworker_rate: crate::ratelimit::RateLimiter::new(
                config.limits.caseworker_queries_per_sec,
                config.limits.caseworker_burst,
            ),
            connections: crate::ratelimit::ConnectionCounter::new(
                config.limits.max_connections_per_peer,
                config.limits.max_connections,
            ),
            consent_limits: if config.storage.backend == crate::config::Backend::Postgres {
                crate::ratelimit::ConsentLimits::shared(&config.consent, db.clone())
            } else {
                crate::ratelimit::ConsentLimits::new(&config.consent)
            },
            budgets: crate::budget::Budgets::new(
                config.limits.max_request_bytes_per_connection,
                config.limits.max_request_bytes_per_key,
                config.limits.max_request_bytes_per_node,
            ),
            consent_gate: crate::consent_gate::ConsentGate::new(),
            outbox: crate::queue::Outbox::new(db.clone()),
            records_writer: crate::records_writer::RecordsWriter::new(db.clone()),
            sig_cache: Default::default(),
            audit,
            witness_alarms: AtomicU64::new(0),
            consent_alarms: AtomicU64::new(0),
            agency,
            key,
            endpoint: endpoint.clone(),
            config,
            db,
            records,
            trust,
            started_at: clock.now(),
            clock,
            policy: RwLock::new(Arc::new(policy)),
            peers,
        });
        Ok(Node {
            state,
            endpoint,
            tasks: Vec::new(),
        })
    }

    /// The address the node listens on.
    pub fn local_addr(&self) -> Result<SocketAddr, NodeError> {
        self.endpoint
            .local_addr()
            .map_err(|source| NodeError::Bind {
                addr: self.state.config.listen,
                source,
            })
    }

    /// The shared state.
    pub fn state(&self) -> &Arc<NodeState> {
        &self.state
    }

    /// Starts serving: the accept loop, the outbox worker and housekeeping, and (if configured)
    /// the metrics and health endpoints.
    pub async fn start_with_metrics(&mut self) -> Result<Option<SocketAddr>, NodeError> {
        self.start()?;
        let Some(addr) = self.state.config.metrics_listen else {
            return Ok(None);
        };
        let listener = crate::observe::bind(addr)
            .await
            .map_err(|source| NodeError::Bind { addr, source })?;
        let local = listener
            .local_addr()
            .map_err(|source| NodeError::Bind { addr, source })?;
        self.tasks.push(tokio::spawn(crate::observe::serve(
            self.state.clone(),
            listener,
        )));
        tracing::info!(addr = %local, "metrics and health endpoints serving");
        Ok(Some(local))
    }

    /// The first start after a restore logs it (backup time, log sizes before and after), and
    /// forgets the note once the entry is durable.
    fn log_restore(&mut self) -> Result<(), NodeError> {
        let Some(note) = self.state.db.restore_note()? else {
            return Ok(());
        };
        let pending = self
            .state
            .audit
            .submit(throughgate_protocol::audit::AuditEvent::Admin {
                person_id: None,
                action: "restore".into(),
                detail: note.describe(),
            });
        let db = self.state.db.clone();
        self.tasks.push(tokio::spawn(async move {
            match pending.wait().await {
                Ok(_) => {
                    if let Err(e) = db.forget_restore_note() {
                        tracing::error!(error = %e, "could not clear the restore note");
                    }
                }
                Err(e) => tracing::error!(error = %e, "could not log the restore"),
            }
        }));
        tracing::warn!("{}", note.describe());
        Ok(())
    }

    /// Starts serving: the accept loop, the outbox worker and housekeeping.
    pub fn start(&mut self) -> Result<(), NodeError> {
        if self.state.manifest().is_none() {
            return Err(NodeError::NoManifest);
        }
        if let Some(writer) = self.state.audit.start() {
            self.tasks.push(writer);
        }
        crate::staff::log_offline_issued(&crate::staff::Staffing::of(&self.state))?;
        self.log_restore()?;
        // Imports a stop or crash interrupted while their records were being stored are
        // finished; uploads cut off before they were checked are deleted.
        match crate::staff_api::import::clean_spools(&self.state.config, &self.state.db) {
            Ok(journals) if !journals.is_empty() => {
                self.tasks
                    .push(tokio::spawn(crate::staff_api::import::resume(
                        self.state.clone(),
                        journals,
                    )));
            }
            Ok(_) => {}
            Err(e) => tracing::error!(error = %e, "could not look for interrupted imports"),
        }
        let st = self.state.clone();
        let ep = self.endpoint.clone();
        self.tasks.push(tokio::spawn(crate::server::serve(st, ep)));
        self.tasks.push(tokio::spawn(crate::workers::witness::run(
            self.state.clone(),
        )));
        // Exchange manifests with every peer this node connects to, so a node that was down
        // (or a peer that was) catches up on the newest version at first contact.
        let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
        self.state.peers.set_connect_hook(tx);
        self.tasks
            .push(tokio::spawn(crate::workers::manifest_sync::on_connect(
                self.state.clone(),
                rx,
            )));
        self.tasks.push(tokio::spawn(crate::workers::outbox::run(
            self.state.clone(),
        )));
        self.tasks
            .push(tokio::spawn(housekeeping(self.state.clone())));
        if self.state.config.storage.backend == crate::config::Backend::Postgres {
            self.tasks
                .push(tokio::spawn(follow_shared_store(self.state.clone())));
        }
        tracing::info!(agency = %self.state.agency, addr = ?self.endpoint.local_addr().ok(), "node serving");
        Ok(())
    }

    /// Stops serving, closes connections, waits for every task to end, and flushes storage.
    /// When it returns, the socket and the store are released (the node can be reopened).
    pub async fn shutdown(mut self) {
        for t in &self.tasks {
            t.abort();
        }
        for t in self.tasks.drain(..) {
            let _ = t.await;
        }
        self.endpoint.close(0u32.into(), b"shutdown");
        let _ = tokio::time::timeout(std::time::Duration::from_secs(2), self.endpoint.wait_idle())
            .await;
        if let Err(e) = self.state.db.flush() {
            tracing::error!(error = %e, "flush at shutdown failed");
        }
        let addr = self.endpoint.local_addr().ok();
        let Node {
            state, endpoint, ..
        } = self;
        drop(state);
        drop(endpoint);
        // quinn releases the socket when its driver task notices the last handle is gone;
        // wait (briefly) until the port can be bound again.
        if let Some(addr) = addr {
            for _ in 0..200 {
                if std::net::UdpSocket::bind(addr).is_ok() {
                    break;
                }
                tokio::time::sleep(std::time::Duration::from_millis(10)).await;
            }
        }
    }
}

/// Binds the QUIC endpoint. Its stateless-reset key and connection-id key are derived from the
/// node key, so after a restart (even a crash) the node can tell peers that their old
/// connection is gone and they reconnect at once instead of waiting for an idle timeout.
/// Binds the node's endpoint. Its stateless-reset and connection-id keys are derived from the
/// node key (so a restarted node can reset connections it held before) and, for a named
/// replica, from its name as well (so replicas sharing one address cannot reset each other's).
fn bind_endpoint(
    key: &SecretKey,
    replica: Option<&str>,
    server: quinn::ServerConfig,
    addr: SocketAddr,
) -> Result<quinn::Endpoint, NodeError> {
    let bind_err = |source| NodeError::Bind { addr, source };
    let derived = reset_secret(key, replica);
    let reset = ring::hmac::Key::new(ring::hmac::HMAC_SHA256, &derived);
    let mut config = quinn::EndpointConfig::new(Arc::new(reset));
    // Connection ids must also validate across restarts, or packets for an old connection are
    // dropped as invalid before any reset is sent.
    let mut cid_key = [0u8; 8];
    cid_key.copy_from_slice(derived.get(..8).unwrap_or(&[0u8; 8]));
    let cid_key = u64::from_be_bytes(cid_key);
    config.cid_generator(move || {
        Box::new(quinn_proto::HashedConnectionIdGenerator::from_key(cid_key))
    });
    let socket = std::net::UdpSocket::bind(addr).map_err(bind_err)?;
    let runtime = quinn::default_runtime().ok_or_else(|| {
        bind_err(std::io::Error::other(
            "no async runtime for the QUIC endpoint",
        ))
    })?;
    quinn::Endpoint::new(config, Some(server), socket, runtime).map_err(bind_err)
}

/// The secret an endpoint's stateless-reset and connection-id keys come from.
fn reset_secret(key: &SecretKey, replica: Option<&str>) -> [u8; 32] {
    use sha2::{Digest, Sha256};
    let mut h = Sha256::new();
    h.update(b"throughgate/1 stateless-reset key\x00");
    h.update(key.seed());
    if let Some(name) = replica {
        h.update(b"\x00replica\x00");
        h.update(name.as_bytes());
    }
    h.finalize().into()
}

/// Periodic chores: prune the replay cache; log consents that have expired.
async fn housekeeping(state: Arc<NodeState>) {
    let mut tick = tokio::time::interval(std::time::Duration::from_secs(60));
    loop {
        tick.tick().await;
        match state.db.prune_replay_cache(state.clock.now()) {
            Ok(n) if n > 0 => tracing::debug!(removed = n, "replay cache pruned"),
            Ok(_) => {}
            Err(e) => tracing::error!(error = %e, "replay cache pruning failed"),
        }
        if let Err(e) = log_expiries(&state).await {
            tracing::error!(error = %e, "logging consent expiries failed");
        }
        warn_manifest_expiry(&state);
        if let Err(e) = apply_retention(&state).await {
            tracing::error!(error = %e, "retention pass failed");
        }
    }
}

/// Applies the configured retention: deletes records about dates too long ago, and redacts the
/// content of audit entries that are too old (their leaf hashes stay, so the log still verifies).
/// Both are logged. Returns (records deleted, entries redacted).
pub async fn apply_retention(state: &NodeState) -> Result<(u64, u64), NodeError> {
    let r = &state.config.retention;
    let now = state.clock.now();
    let mut deleted = 0;
    if let Some(days) = r.records_days {
        let before = now.date().add_days(-i64::from(days));
        deleted = state.db.delete_records_before(before)?;
        if deleted > 0 {
            state
                .log_admin(
                    None,
                    "retention_records",
                    format!("{deleted} records about dates before {before} deleted"),
                )
                .await?;
        }
    }
    let mut redacted = 0;
    if let Some(days) = r.audit_days {
        let cutoff = now.minus_secs(u64::from(days) * 86_400);
        let size = state.audit.latest().map_or(0, |(s, _)| s);
        let db = state.db.clone();
        // Two streamed passes over what may be a long stretch of the log: off the runtime.
        let (from, to) = tokio::task::spawn_blocking(move || {
            let from = db.audit_first_unredacted()?;
            let to = db.audit_entries_before(from, size, cutoff)?;
            Ok::<_, StoreError>((from, to))
        })
        .await
        .map_err(|source| StoreError::Task {
            what: "the retention task",
            source,
        })??;
        if to > from {
            // The redaction is logged (durably, under the next checkpoint) before any content
            // goes: a redacted entry is evidence only when such an entry covers it.
            state
                .audit
                .append(throughgate_protocol::audit::AuditEvent::Redaction { from, to, cutoff })
                .await?;
            let db = state.db.clone();
            redacted = tokio::task::spawn_blocking(move || db.redact_audit_entries(from, to, now))
                .await
                .map_err(|source| StoreError::Task {
                    what: "the retention task",
                    source,
                })??;
        }
    }
    Ok((deleted, redacted))
}

/// Days before a manifest's expiry from which the node warns on every housekeeping pass.
pub const MANIFEST_WARNING_DAYS: u64 = 14;

/// Warns loudly when the trusted manifest is near (or past) its expiry.
fn warn_manifest_expiry(state: &NodeState) {
    let Some(m) = state.manifest() else {
        tracing::error!("no current federation manifest: this node cannot talk to any peer");
        return;
    };
    let now = state.clock.now();
    let left = m.expires_at.0.saturating_sub(now.0) / 86_400;
    if now >= m.expires_at {
        tracing::error!(version = m.version, "the federation manifest has EXPIRED: peers are refused until a new version is published");
    } else if left < MANIFEST_WARNING_DAYS {
        tracing::warn!(version = m.version, days_left = left, expires = %m.expires_at, "the federation manifest expires soon: ask governance for a new version");
    }
}

/// Logs (once each) the consents that have passed their validity. Expiry itself needs no
/// action: every check derives it from the clock.
pub async fn log_expiries(state: &NodeState) -> Result<usize, NodeError> {
    let now = state.clock.now();
    let mut n = 0;
    for mut c in state.db.all_consents()? {
        if c.expiry_logged
            || c.status_at(now) != throughgate_protocol::consent::ConsentStatus::Expired
        {
            continue;
        }
        let entry = crate::consent::consent_entry(&c.body, None, None);
        state
            .audit
            .append(throughgate_protocol::audit::AuditEvent::ConsentExpired(
                entry,
            ))
            .await?;
        c.expiry_logged = true;
        state.db.update_consent(&c)?;
        n += 1;
    }
    Ok(n)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn replicas_named_apart_derive_different_reset_secrets_and_an_unnamed_node_keeps_its_own() {
        use sha2::{Digest, Sha256};
        let key = SecretKey::from_seed(&[9; 32]);
        let unnamed = reset_secret(&key, None);
        let mut h = Sha256::new();
        h.update(b"throughgate/1 stateless-reset key\x00");
        h.update(key.seed());
        let before: [u8; 32] = h.finalize().into();
        assert_eq!(
            unnamed, before,
            "a node without a replica name resets as before"
        );
        let a = reset_secret(&key, Some("a"));
        let b = reset_secret(&key, Some("b"));
        assert_ne!(a, b);
        assert_ne!(a, unnamed);
        assert_eq!(a, reset_secret(&key, Some("a")), "stable across restarts");
    }
}
