//! The group-commit writer: one task appends every queued entry, signs one checkpoint per
//! batch, writes the batch atomically, flushes it, and only then releases the receipts.

use std::sync::{Arc, Mutex};

use throughgate_protocol::audit::{ProofHash, Receipt};
use throughgate_protocol::checkpoint::{Checkpoint, SignedCheckpoint};
use throughgate_protocol::merkle::{empty_root, inclusion_proof_with, leaf_hash, node_hash, Hash};
use tokio::sync::mpsc;

use super::{AuditError, Pending};
use crate::db::{AuditState, AuditWrites, Db, StoredHash};

/// Most entries committed in one batch.
const MAX_BATCH: usize = 4096;

pub(super) struct Writer {
    db: Db,
    key: crate::keyring::NodeKey,
    origin: String,
    rx: mpsc::UnboundedReceiver<Pending>,
    latest: Arc<Mutex<Option<(u64, String)>>>,
    state: AuditState,
    metrics: Arc<crate::metrics::Metrics>,
}

/// Appends one leaf to the right border, recording every complete subtree it closes.
fn append_leaf(
    border: &mut Vec<Option<StoredHash>>,
    index: u64,
    leaf: Hash,
    nodes: &mut Vec<(u8, u64, Hash)>,
) -> Result<(), AuditError> {
    let mut h = leaf;
    let mut level: u8 = 0;
    let mut idx = index;
    nodes.push((0, index, h));
    while idx & 1 == 1 {
        let left = border
            .get_mut(usize::from(level))
            .and_then(Option::take)
            .ok_or_else(|| AuditError::Tree(format!("missing border hash at level {level}")))?;
        h = node_hash(&left.0, &h);
        level += 1;
        idx >>= 1;
        nodes.push((level, idx, h));
    }
    let l = usize::from(level);
    if border.len() <= l {
        border.resize(l + 1, None);
    }
    if let Some(slot) = border.get_mut(l) {
        *slot = Some(StoredHash(h));
    }
    Ok(())
}

/// The RFC 6962 root of the tree whose right border is `border`.
pub(super) fn border_root(border: &[Option<StoredHash>]) -> Hash {
    let mut root: Option<Hash> = None;
    for h in border.iter().flatten() {
        root = Some(match root {
            None => h.0,
            Some(r) => node_hash(&h.0, &r),
        });
    }
    root.unwrap_or_else(empty_root)
}

impl Writer {
    pub(super) fn open(
        db: Db,
        key: crate::keyring::NodeKey,
        origin: String,
        rx: mpsc::UnboundedReceiver<Pending>,
        latest: Arc<Mutex<Option<(u64, String)>>>,
        metrics: Arc<crate::metrics::Metrics>,
    ) -> Result<Writer, AuditError> {
        let state = db.audit_state()?.unwrap_or_default();
        Ok(Writer {
            db,
            key,
            origin,
            rx,
            latest,
            state,
            metrics,
        })
    }

    pub(super) async fn run(mut self) {
        let mut batch: Vec<Pending> = Vec::new();
        while let Some(first) = self.rx.recv().await {
            batch.push(first);
            while batch.len() < MAX_BATCH {
                match self.rx.try_recv() {
                    Ok(p) => batch.push(p),
                    Err(_) => break,
                }
            }
            let pending = std::mem::take(&mut batch);
            match self.commit(&pending).await {
                Ok(receipts) => {
                    for (p, r) in pending.into_iter().zip(receipts) {
                        let _ = p.reply.send(Ok(r));
                    }
                }
                Err(e) => {
                    tracing::error!(error = %e, "audit batch failed; nothing in it was disclosed");
                    for p in pending {
                        let _ = p.reply.send(Err(e.clone()));
                    }
                    // The in-memory state may be ahead of the store: reload it.
                    match self.db.audit_state() {
                        Ok(s) => self.state = s.unwrap_or_default(),
                        Err(e) => {
                            tracing::error!(error = %e, "cannot reload audit state; the audit writer stops");
                            return;
                        }
                    }
                }
            }
        }
    }

    async fn commit(&mut self, batch: &[Pending]) -> Result<Vec<Receipt>, AuditError> {
        let mut state = self.state.clone();
        let mut writes = AuditWrites::default();
        let mut nodes = Vec::new();
        let first = state.size;
        for p in batch {
            let index = state.size;
            append_leaf(&mut state.border, index, leaf_hash(&p.bytes), &mut nodes)?;
            writes.entry(index, &p.bytes, p.passport.as_ref());
            state.size += 1;
        }
        for (level, index, h) in &nodes {
            writes.node(*level, *index, h);
        }
        let root = border_root(&state.border);
        let signed = SignedCheckpoint::sign(
            Checkpoint::new(self.origin.clone(), state.size, root),
            &self.origin,
            &self.key.current(),
        )
        .map_err(|e| AuditError::Tree(e.to_string()))?;
        let text = signed.to_text();
        writes.checkpoint(state.size, &text);
        writes.state(&state);
        let db = self.db.clone();
        tokio::task::spawn_blocking(move || {
            db.apply(writes.0)?;
            db.flush()
        })
        .await
        .map_err(|e| AuditError::Store(e.to_string()))??;
        self.state = state;
        self.metrics.audit_batch_size.observe(batch.len() as f64);
        if let Ok(mut l) = self.latest.lock() {
            *l = Some((self.state.size, text.clone()));
        }
        // Proofs: the batch's own nodes from memory, older ones from the store.
        let size = self.state.size;
        let recent: std::collections::HashMap<(u8, u64), Hash> =
            nodes.iter().map(|(l, i, h)| ((*l, *i), *h)).collect();
        let get = |level: u32, index: u64| -> Option<Hash> {
            let level = u8::try_from(level).ok()?;
            recent
                .get(&(level, index))
                .copied()
                .or_else(|| self.db.audit_node(level, index).ok().flatten())
        };
        batch
            .iter()
            .enumerate()
            .map(|(i, p)| {
                let index = first + i as u64;
                let proof = inclusion_proof_with(index, size, get)?;
                Ok(Receipt {
                    entry: p.bytes.clone(),
                    leaf_index: index,
                    checkpoint: text.clone(),
                    proof: proof.into_iter().map(ProofHash).collect(),
                })
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use throughgate_protocol::merkle::root_from_leaves;

    #[test]
    fn border_root_matches_the_rfc_root_for_every_size() {
        let mut border = Vec::new();
        let mut leaves = Vec::new();
        let mut nodes = Vec::new();
        for i in 0..300u64 {
            let l = leaf_hash(&i.to_be_bytes());
            leaves.push(l);
            append_leaf(&mut border, i, l, &mut nodes).unwrap();
            assert_eq!(
                border_root(&border),
                root_from_leaves(&leaves),
                "size {}",
                i + 1
            );
        }
    }
}
