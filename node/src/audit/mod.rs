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
pub mod witness;
mod writer;

use std::sync::{Arc, Mutex};

use throughgate_protocol::audit::{origin, AuditEntry, AuditEvent, ProofHash, Receipt};
use throughgate_protocol::ids::AgencyId;
use throughgate_protocol::merkle::{consistency_proof_with, inclusion_proof_with, MerkleError};
use tokio::sync::{mpsc, oneshot};

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

/// The handle handlers use to log.
pub struct AuditLog {
    agency: AgencyId,
    origin: String,
    clock: Clock,
    db: Db,
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
        let writer =
            writer::Writer::open(db.clone(), key, origin.clone(), rx, latest.clone(), metrics)?;
        Ok(AuditLog {
            agency,
            origin,
            clock,
            db,
            tx,
            latest,
            writer: Mutex::new(Some(writer)),
        })
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

    /// The newest signed checkpoint (size, text).
    pub fn latest(&self) -> Option<(u64, String)> {
        self.latest.lock().ok().and_then(|l| l.clone())
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
