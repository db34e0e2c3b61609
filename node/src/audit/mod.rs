//! The node's tamper-evident audit log: an append-only RFC 6962 Merkle log of every decision,
//! stored through the storage trait, with signed C2SP checkpoints.
//!
//! **Log before disclose.** Handlers submit entries to one writer task, which takes everything
//! queued (group commit), appends it to the tree, signs one checkpoint for the batch, applies
//! the whole batch atomically and flushes it to disk, and only then hands each submitter its
//! receipt (entry, leaf index, checkpoint, inclusion proof). A response is built from the
//! receipt, so no response can leave before its entry is durable.

mod nodes;
mod verify;
mod writer;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use throughgate_protocol::audit::{origin, AuditEntry, AuditEvent, ProofHash, Receipt};
use throughgate_protocol::ids::AgencyId;
use throughgate_protocol::merkle::{consistency_proof_with, inclusion_proof_with, MerkleError};
use tokio::sync::{mpsc, oneshot, Notify};

use crate::clock::Clock;
use crate::db::{AuditNodes, Db};
use crate::store::StoreError;

pub use verify::{verify_log, Verification};

/// An audit-log failure. A node that cannot log does not disclose.
#[derive(Debug, Clone, thiserror::Error)]
pub enum AuditError {
    /// Storage failed; the batch was not made durable.
    #[error("audit storage failed: {0}")]
    Store(String),
    /// The writer has stopped (the node is shutting down or failed earlier).
    #[error("the audit writer has stopped")]
    Closed,
    /// A proof could not be built from the stored tree.
    #[error("audit tree: {0}")]
    Tree(String),
}

impl From<StoreError> for AuditError {
    fn from(e: StoreError) -> AuditError {
        AuditError::Store(e.to_string())
    }
}

impl From<MerkleError> for AuditError {
    fn from(e: MerkleError) -> AuditError {
        AuditError::Tree(e.to_string())
    }
}

struct Pending {
    bytes: Vec<u8>,
    passport: Option<throughgate_protocol::ids::PassportId>,
    reply: oneshot::Sender<Result<Receipt, AuditError>>,
}

/// A receipt that will be ready once the entry's batch is durable.
pub struct PendingReceipt(oneshot::Receiver<Result<Receipt, AuditError>>);

impl PendingReceipt {
    /// Waits for the entry to be durable.
    pub async fn wait(self) -> Result<Receipt, AuditError> {
        self.0.await.map_err(|_| AuditError::Closed)?
    }
}

/// How many entries handlers have announced ([`AuditLog::intent`]) and not yet submitted; the
/// writer holds a batch open for them (up to its commit delay), and is woken as each arrives or
/// is abandoned.
#[derive(Debug, Default)]
struct Expected {
    count: AtomicUsize,
    changed: Notify,
}

/// An entry a handler will submit soon: while it lives, the writer may wait for it (up to the
/// commit delay) before committing a batch. Submit through it, or drop it to withdraw.
#[must_use = "an intent only helps if the entry is submitted through it"]
pub struct Intent {
    expected: Arc<Expected>,
    live: bool,
}

impl std::fmt::Debug for Intent {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Intent").field("live", &self.live).finish()
    }
}

impl Intent {
    /// Queues the entry in `log` (as [`AuditLog::submit`]) and ends the intent.
    pub fn submit(mut self, log: &AuditLog, event: AuditEvent) -> PendingReceipt {
        // Queued before the announcement is withdrawn: a writer woken by the withdrawal finds
        // the entry already queued, so it never commits just before the entry it waited for.
        let pending = log.submit(event);
        self.withdraw();
        pending
    }

    fn withdraw(&mut self) {
        if std::mem::take(&mut self.live) {
            self.expected.count.fetch_sub(1, Ordering::AcqRel);
            self.expected.changed.notify_one();
        }
    }
}

impl Drop for Intent {
    fn drop(&mut self) {
        self.withdraw();
    }
}

/// The handle handlers use to log.
pub struct AuditLog {
    agency: AgencyId,
    origin: String,
    clock: Clock,
    db: Db,
    expected: Arc<Expected>,
    tx: mpsc::UnboundedSender<Pending>,
    latest: Arc<Mutex<Option<(u64, String)>>>,
    writer: Mutex<Option<writer::Writer>>,
}

impl std::fmt::Debug for AuditLog {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AuditLog")
            .field("origin", &self.origin)
            .finish_non_exhaustive()
    }
}

impl AuditLog {
    /// Opens the log stored in `db` (recovering the writer's state), signing checkpoints with
    /// `key`. The writer runs once [`AuditLog::start`] is called.
    pub fn open(
        db: Db,
        key: crate::keyring::NodeKey,
        agency: AgencyId,
        clock: Clock,
        metrics: Arc<crate::metrics::Metrics>,
    ) -> Result<AuditLog, AuditError> {
        let (tx, rx) = mpsc::unbounded_channel();
        let latest = Arc::new(Mutex::new(db.audit_latest_checkpoint()?));
        let origin = origin(&agency);
        let expected = Arc::new(Expected::default());
        let writer = writer::Writer::open(
            db.clone(),
            key,
            origin.clone(),
            rx,
            latest.clone(),
            metrics,
            expected.clone(),
        )?;
        Ok(AuditLog {
            agency,
            origin,
            clock,
            db,
            expected,
            tx,
            latest,
            writer: Mutex::new(Some(writer)),
        })
    }

    /// Lets the writer hold a batch open for up to `delay` while handlers that announced an
    /// entry ([`AuditLog::intent`]) have yet to submit it (0, the default here: never). Set
    /// before [`AuditLog::start`].
    pub fn with_commit_delay(self, delay: Duration) -> AuditLog {
        if let Ok(mut w) = self.writer.lock() {
            if let Some(w) = w.as_mut() {
                w.set_commit_delay(delay);
            }
        }
        self
    }

    /// Announces an entry this handler will submit shortly (a holder about to decide a query),
    /// so that a batch being committed meanwhile can wait for it and share one fsync and one
    /// checkpoint signature. Costs nothing if no batch is waiting.
    pub fn intent(&self) -> Intent {
        self.expected.count.fetch_add(1, Ordering::AcqRel);
        Intent {
            expected: self.expected.clone(),
            live: true,
        }
    }

    /// Starts the writer task.
    pub fn start(&self) -> Option<tokio::task::JoinHandle<()>> {
        let w = self.writer.lock().ok()?.take()?;
        Some(tokio::spawn(w.run()))
    }

    /// Whether the writer is running (it stops only on an unrecoverable storage failure or at
    /// shutdown).
    pub fn is_running(&self) -> bool {
        !self.tx.is_closed()
    }

    /// This log's origin (also its checkpoint key name).
    pub fn origin(&self) -> &str {
        &self.origin
    }

    /// Queues an event; the returned receipt is ready once it is durable.
    pub fn submit(&self, event: AuditEvent) -> PendingReceipt {
        let entry = AuditEntry {
            at: self.clock.now(),
            node: self.agency.clone(),
            event,
        };
        let passport = entry.event.passport().cloned();
        let (reply, rx) = oneshot::channel();
        let _ = self.tx.send(Pending {
            bytes: entry.to_bytes(),
            passport,
            reply,
        });
        PendingReceipt(rx)
    }

    /// Logs an event and waits until it is durable.
    pub async fn append(&self, event: AuditEvent) -> Result<Receipt, AuditError> {
        self.submit(event).wait().await
    }

    /// Logs an administrative action by `person` (none: the node itself) and waits until it
    /// is durable.
    pub async fn log_admin(
        &self,
        person: Option<&throughgate_protocol::ids::PersonId>,
        action: &str,
        detail: String,
    ) -> Result<(), AuditError> {
        self.append(AuditEvent::Admin {
            person_id: person.cloned(),
            action: action.to_owned(),
            detail,
        })
        .await
        .map(|_| ())
    }

    /// The newest signed checkpoint (size, text), as stored now: other replicas sharing the
    /// store may have added checkpoints since this one's last batch. Should the store fail,
    /// the newest this process knows of.
    pub fn latest(&self) -> Option<(u64, String)> {
        match self.db.audit_latest_checkpoint() {
            Ok(stored) => {
                if let (Some(l), Ok(mut known)) = (&stored, self.latest.lock()) {
                    *known = Some(l.clone());
                }
                stored
            }
            Err(e) => {
                tracing::warn!(error = %e, "cannot read the newest checkpoint");
                self.latest.lock().ok().and_then(|l| l.clone())
            }
        }
    }

    /// The inclusion proof of entry `index` in the tree of `size`.
    pub fn inclusion_proof(&self, index: u64, size: u64) -> Result<Vec<ProofHash>, AuditError> {
        let nodes = AuditNodes::new(&self.db);
        Ok(
            inclusion_proof_with(index, size, |l, i| nodes.lookup(l, i))?
                .into_iter()
                .map(ProofHash)
                .collect(),
        )
    }

    /// The consistency proof between the trees of `old` and `new` entries.
    pub fn consistency_proof(&self, old: u64, new: u64) -> Result<Vec<ProofHash>, AuditError> {
        let nodes = AuditNodes::new(&self.db);
        Ok(consistency_proof_with(old, new, |l, i| nodes.lookup(l, i))?
            .into_iter()
            .map(ProofHash)
            .collect())
    }

    /// The storage the log lives in.
    pub fn db(&self) -> &Db {
        &self.db
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use throughgate_protocol::category::Purpose;
    use throughgate_protocol::checkpoint::SignedCheckpoint;
    use throughgate_protocol::ids::{PassportId, PersonId, QueryId};
    use throughgate_protocol::keys::SecretKey;

    use super::*;
    use crate::store::MemoryStore;

    /// A started log whose writer may hold a batch open for `delay`.
    fn log(delay: Duration) -> AuditLog {
        let agency = AgencyId::new("dwp").unwrap();
        let log = AuditLog::open(
            Db::new(Arc::new(MemoryStore::new())),
            crate::keyring::NodeKey::new(SecretKey::generate()),
            agency,
            Clock::system(),
            Arc::new(crate::metrics::Metrics::new()),
        )
        .unwrap()
        .with_commit_delay(delay);
        log.start().unwrap();
        log
    }

    fn event(n: u8) -> AuditEvent {
        AuditEvent::QuerySent {
            query_id: QueryId::random(),
            query_digest: [n; 32],
            passport_id: PassportId::random(),
            caseworker: PersonId::new("cw-dwp").unwrap(),
            consent_id: None,
            purpose: Purpose::Resettlement,
            holders: Vec::new(),
        }
    }

    /// The size of the tree the receipt's checkpoint signs: entries committed in one batch share it.
    fn batch_size(r: &Receipt) -> u64 {
        SignedCheckpoint::parse(r.checkpoint.as_bytes())
            .unwrap()
            .checkpoint()
            .size
    }

    /// Long enough that a test waiting for it would hit the harness timeout instead.
    const FOREVER: Duration = Duration::from_secs(3600);
    const LIMIT: Duration = Duration::from_secs(60);

    #[tokio::test]
    async fn a_batch_waits_for_an_announced_entry_and_commits_it_with_the_others() {
        let log = log(FOREVER);
        let intent = log.intent();
        let first = log.submit(event(1));
        // The writer now holds the first entry open for the announced one.
        tokio::task::yield_now().await;
        let second = intent.submit(&log, event(2));
        let (a, b) = tokio::time::timeout(LIMIT, async {
            (first.wait().await.unwrap(), second.wait().await.unwrap())
        })
        .await
        .unwrap();
        assert_eq!((a.leaf_index, b.leaf_index), (0, 1));
        assert_eq!(batch_size(&a), 2, "one batch, one checkpoint for both");
        assert_eq!(a.checkpoint, b.checkpoint);
    }

    #[tokio::test]
    async fn with_nothing_announced_an_entry_is_committed_without_waiting_out_the_delay() {
        let log = log(FOREVER);
        let r = tokio::time::timeout(LIMIT, log.append(event(1)))
            .await
            .expect("committed without waiting for the commit delay")
            .unwrap();
        assert_eq!(batch_size(&r), 1);
    }

    #[tokio::test]
    async fn a_withdrawn_announcement_releases_the_waiting_batch() {
        let log = log(FOREVER);
        let intent = log.intent();
        let first = log.submit(event(1));
        tokio::task::yield_now().await;
        drop(intent);
        let r = tokio::time::timeout(LIMIT, first.wait())
            .await
            .expect("released when the announcement was withdrawn")
            .unwrap();
        assert_eq!(batch_size(&r), 1);
    }

    #[tokio::test]
    async fn the_commit_delay_bounds_the_wait_for_an_entry_that_never_comes() {
        let log = log(Duration::from_millis(20));
        let _never = log.intent();
        let r = tokio::time::timeout(LIMIT, log.append(event(1)))
            .await
            .expect("committed once the delay passed")
            .unwrap();
        assert_eq!(batch_size(&r), 1);
    }
}
