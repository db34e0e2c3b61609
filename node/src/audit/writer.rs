//! The group-commit writer: one task appends every queued entry, signs one checkpoint per
//! batch, writes the batch atomically, flushes it, and only then releases the receipts.
//!
//! **Several writers, one log.** Replicas of one agency sharing a store each run a writer. A
//! writer keeps no log state between batches: for each batch it reads the head
//! (`aud/state`: size and right border), prepares the batch from it, and commits with
//! [`Store::apply_if`](crate::store::Store::apply_if) on the head it read. If another writer
//! moved the head meanwhile, nothing is written and the batch is prepared again from the new
//! head; so indices are never assigned twice and the tree never forks, whatever the number of
//! writers or how long one stalls.

use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};

use throughgate_protocol::audit::{ProofHash, Receipt};
use throughgate_protocol::checkpoint::{Checkpoint, SignedCheckpoint};
use throughgate_protocol::ids::PassportId;
use throughgate_protocol::keys::SecretKey;
use throughgate_protocol::merkle::{empty_root, inclusion_proof_with, leaf_hash, node_hash, Hash};
use tokio::sync::mpsc;

use super::nodes::{BatchNodes, RightEdge};
use super::{AuditError, Pending};
use crate::db::{AuditNodes, AuditState, AuditWrites, Db, StoredHash, AUDIT_HEAD};

/// Most entries committed in one batch.
const MAX_BATCH: usize = 4096;

/// How many times a batch is prepared again because other writers moved the head first before
/// the batch fails (its submitters are refused, nothing is disclosed).
const MAX_HEAD_RACES: usize = 1000;

pub(super) struct Writer {
    db: Db,
    expected: Arc<super::Expected>,
    commit_delay: std::time::Duration,
    key: crate::keyring::NodeKey,
    origin: String,
    rx: mpsc::UnboundedReceiver<Pending>,
    latest: Arc<Mutex<Option<(u64, String)>>>,
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
        expected: Arc<super::Expected>,
    ) -> Result<Writer, AuditError> {
        Ok(Writer {
            db,
            expected,
            commit_delay: std::time::Duration::ZERO,
            key,
            origin,
            rx,
            latest,
            metrics,
        })
    }

    pub(super) fn set_commit_delay(&mut self, delay: std::time::Duration) {
        self.commit_delay = delay;
    }

    /// Takes everything queued, up to [`MAX_BATCH`].
    fn drain(&mut self, batch: &mut Vec<Pending>) {
        while batch.len() < MAX_BATCH {
            match self.rx.try_recv() {
                Ok(p) => batch.push(p),
                Err(_) => break,
            }
        }
    }

    /// Holds the batch open while announced entries are still to come, until the commit delay
    /// has passed since the batch's first entry (PostgreSQL's `commit_delay` with
    /// `commit_siblings`, keyed on announced entries rather than open transactions).
    async fn gather(&mut self, batch: &mut Vec<Pending>) {
        if self.commit_delay.is_zero() {
            return;
        }
        let deadline = tokio::time::Instant::now() + self.commit_delay;
        let expected = self.expected.clone();
        while batch.len() < MAX_BATCH && expected.count.load(Ordering::Acquire) > 0 {
            tokio::select! {
                biased;
                p = self.rx.recv() => match p {
                    Some(p) => {
                        batch.push(p);
                        self.drain(batch);
                    }
                    None => return,
                },
                () = expected.changed.notified() => {}
                () = tokio::time::sleep_until(deadline) => break,
            }
        }
        // Whatever arrived with the last wake-up joins this batch.
        self.drain(batch);
    }

    pub(super) async fn run(mut self) {
        let mut batch: Vec<Pending> = Vec::new();
        while let Some(first) = self.rx.recv().await {
            batch.push(first);
            self.drain(&mut batch);
            self.gather(&mut batch).await;
            let mut pending = std::mem::take(&mut batch);
            match self.commit(&mut pending).await {
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
                }
            }
        }
    }

    async fn commit(&mut self, batch: &mut [Pending]) -> Result<Vec<Receipt>, AuditError> {
        let key = self.key.current();
        let mut races = 0usize;
        let (first, state, nodes, text) = loop {
            let db = self.db.clone();
            // The head as stored now: another writer may have moved it since the last batch.
            let head = tokio::task::spawn_blocking(move || db.store().get(AUDIT_HEAD))
                .await
                .map_err(|e| AuditError::Store(e.to_string()))??;
            let current = match &head {
                Some(bytes) => crate::db::decode_audit_state(bytes)?,
                None => AuditState::default(),
            };
            let Prepared {
                writes,
                state,
                nodes,
                checkpoint: text,
            } = prepare(
                &current,
                &self.origin,
                &key,
                batch
                    .iter()
                    .map(|p| (p.bytes.as_slice(), p.passport.as_ref())),
            )?;
            let db = self.db.clone();
            // Durable before anyone hears of it: applied and flushed (fsync) first.
            let applied = tokio::task::spawn_blocking(move || {
                let applied = db.store().apply_if(AUDIT_HEAD, head.as_deref(), writes.0)?;
                if applied {
                    db.flush()?;
                }
                Ok::<bool, crate::store::StoreError>(applied)
            })
            .await
            .map_err(|e| AuditError::Store(e.to_string()))??;
            if applied {
                break (current.size, state, nodes, text);
            }
            races += 1;
            if races >= MAX_HEAD_RACES {
                return Err(AuditError::Store(format!(
                    "other writers moved the log's head {races} times while this batch was \
                     prepared"
                )));
            }
        };
        self.metrics.audit_batch_size.observe(batch.len() as f64);
        if let Ok(mut l) = self.latest.lock() {
            if l.as_ref().is_none_or(|(size, _)| *size < state.size) {
                *l = Some((state.size, text.clone()));
            }
        }
        let size = state.size;
        let edge = RightEdge::new(size, &state.border);
        let stored = AuditNodes::new(&self.db);
        let mut receipts = Vec::with_capacity(batch.len());
        for (index, p) in (first..).zip(batch.iter_mut()) {
            let proof = batch_inclusion_proof(&nodes, &edge, &stored, index, size)?;
            receipts.push(Receipt {
                entry: std::mem::take(&mut p.bytes),
                leaf_index: index,
                checkpoint: text.clone(),
                proof: proof.into_iter().map(ProofHash).collect(),
            });
        }
        Ok(receipts)
    }
}

/// A batch ready to be written.
pub(super) struct Prepared {
    /// Everything the batch writes, for one atomic apply.
    pub(super) writes: AuditWrites,
    /// The writer's state once the batch is durable.
    pub(super) state: AuditState,
    /// The nodes the batch's inclusion proofs need.
    pub(super) nodes: BatchNodes,
    /// The signed checkpoint of the new size.
    pub(super) checkpoint: String,
}

/// Appends `entries` (bytes, passport) to the tree whose state is `state`, signs the new
/// checkpoint with `key` under `origin`, and collects the batch's writes and proof nodes.
pub(super) fn prepare<'a>(
    state: &AuditState,
    origin: &str,
    key: &SecretKey,
    entries: impl Iterator<Item = (&'a [u8], Option<&'a PassportId>)>,
) -> Result<Prepared, AuditError> {
    let mut state = state.clone();
    let mut writes = AuditWrites::default();
    // Every node the batch's proofs need, in memory: the old border, then each node the batch
    // closes (see `nodes.rs`).
    let mut nodes = BatchNodes::new(state.size, &state.border)?;
    let mut closed = Vec::new();
    for (bytes, passport) in entries {
        let index = state.size;
        let leaf = leaf_hash(bytes);
        closed.clear();
        append_leaf(&mut state.border, index, leaf, &mut closed)?;
        writes.entry(index, &leaf, bytes, passport);
        for (level, i, h) in &closed {
            writes.node(*level, *i, h);
            nodes.push(*level, *i, *h)?;
        }
        state.size += 1;
    }
    let root = border_root(&state.border);
    let signed = SignedCheckpoint::sign(
        Checkpoint::new(origin.to_owned(), state.size, root),
        origin,
        key,
    )
    .map_err(|e| AuditError::Tree(e.to_string()))?;
    let checkpoint = signed.to_text();
    writes.checkpoint(state.size, &checkpoint);
    writes.state(&state);
    Ok(Prepared {
        writes,
        state,
        nodes,
        checkpoint,
    })
}

/// The inclusion proof of entry `index` in the tree of `size`, from the batch's nodes and the
/// tree's right edge (no store reads, no hashing); should one be missing (it should not), built
/// the general way, reading the store (each value at most once) for what the batch lacks.
pub(super) fn batch_inclusion_proof(
    nodes: &BatchNodes,
    edge: &RightEdge,
    stored: &AuditNodes<'_>,
    index: u64,
    size: u64,
) -> Result<Vec<Hash>, AuditError> {
    if let Some(proof) = nodes.inclusion_proof(index, size, edge) {
        return Ok(proof);
    }
    Ok(inclusion_proof_with(index, size, |level, i| {
        nodes.get(level, i).or_else(|| stored.lookup(level, i))
    })?)
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::store::MemoryStore;
    use throughgate_protocol::merkle::{inclusion_proof, root_from_leaves};

    fn leaves(n: u64) -> Vec<Hash> {
        (0..n).map(|i| leaf_hash(&i.to_be_bytes())).collect()
    }

    /// The border after appending `leaves`.
    fn border_of(leaves: &[Hash]) -> Vec<Option<StoredHash>> {
        let mut border = Vec::new();
        let mut closed = Vec::new();
        for (i, l) in (0u64..).zip(leaves) {
            append_leaf(&mut border, i, *l, &mut closed).unwrap();
        }
        border
    }

    #[test]
    fn the_batch_cache_alone_answers_every_proof_of_the_batch() {
        let all = leaves(200);
        for first in 0..=140u64 {
            for len in [1u64, 2, 3, 4, 5, 7, 8, 9, 16, 31, 33, 60] {
                let size = first + len;
                let mut border = border_of(&all[..first as usize]);
                let mut cache = BatchNodes::new(first, &border).unwrap();
                let mut closed = Vec::new();
                for i in first..size {
                    closed.clear();
                    append_leaf(&mut border, i, all[i as usize], &mut closed).unwrap();
                    for (l, x, h) in &closed {
                        cache.push(*l, *x, *h).unwrap();
                    }
                }
                let edge = RightEdge::new(size, &border);
                for i in first..size {
                    let want = inclusion_proof(&all, i, size).unwrap();
                    // No fallback: a node missing from the cache fails the proof.
                    let cached = inclusion_proof_with(i, size, |l, x| cache.get(l, x))
                        .unwrap_or_else(|e| panic!("first {first} size {size} index {i}: {e}"));
                    assert_eq!(cached, want, "first {first} size {size} index {i}");
                    // The direct walk, from the cache and the right edge alone.
                    assert_eq!(
                        cache.inclusion_proof(i, size, &edge),
                        Some(want),
                        "first {first} size {size} index {i}"
                    );
                }
                assert_eq!(cache.inclusion_proof(size, size, &edge), None);
            }
        }
    }

    #[test]
    fn the_right_edge_holds_every_incomplete_last_node() {
        let all = leaves(100);
        for size in 1..=100u64 {
            let edge = RightEdge::new(size, &border_of(&all[..size as usize]));
            for level in 0..8u32 {
                let width = 1u64 << level;
                let last_start = ((size - 1) >> level) << level;
                let want = (size % width != 0)
                    .then(|| root_from_leaves(&all[last_start as usize..size as usize]));
                assert_eq!(edge.get(level), want, "size {size} level {level}");
            }
        }
        // A border that does not match its size yields nothing for levels above the gap.
        let edge = RightEdge::new(3, &[]);
        assert_eq!(edge.get(1), None);
        assert_eq!(edge.get(5), None);
    }

    #[test]
    fn the_batch_cache_refuses_nodes_out_of_order() {
        let mut cache = BatchNodes::new(0, &[]).unwrap();
        cache.push(0, 5, [1; 32]).unwrap();
        cache.push(0, 6, [2; 32]).unwrap();
        assert!(cache.push(0, 8, [3; 32]).is_err());
        assert!(cache.push(0, 5, [3; 32]).is_err());
        assert_eq!(cache.get(0, 6), Some([2; 32]));
        assert_eq!(cache.get(0, 4), None);
        assert_eq!(cache.get(0, 7), None);
        assert_eq!(cache.get(1, 2), None);
        assert_eq!(cache.get(300, 0), None);
    }

    #[test]
    fn receipts_prove_each_entry_as_the_uncached_store_does() {
        let db = Db::new(Arc::new(MemoryStore::new()));
        let key = SecretKey::generate();
        let origin = "throughgate/dwp/audit";
        let mut state = AuditState::default();
        let mut all: Vec<Vec<u8>> = Vec::new();
        for batch in [1usize, 5, 16, 3, 40, 1, 1, 70, 9] {
            let first = state.size;
            let entries: Vec<Vec<u8>> = (0..batch)
                .map(|i| format!("entry {} of the log", first + i as u64).into_bytes())
                .collect();
            let p = prepare(
                &state,
                origin,
                &key,
                entries.iter().map(|b| (b.as_slice(), None)),
            )
            .unwrap();
            db.apply(p.writes.0).unwrap();
            assert_eq!(p.state.size, first + batch as u64);
            assert_eq!(db.audit_state().unwrap().as_ref(), Some(&p.state));
            all.extend(entries);
            let hashes: Vec<Hash> = all.iter().map(|b| leaf_hash(b)).collect();
            let size = p.state.size;
            let signed = SignedCheckpoint::parse(p.checkpoint.as_bytes()).unwrap();
            signed.verify(origin, &key.public()).unwrap();
            assert_eq!(signed.checkpoint().root_hash, root_from_leaves(&hashes));
            let stored = AuditNodes::new(&db);
            let edge = RightEdge::new(size, &p.state.border);
            for i in first..size {
                let from_batch = batch_inclusion_proof(&p.nodes, &edge, &stored, i, size).unwrap();
                let uncached = inclusion_proof_with(i, size, |l, x| {
                    db.audit_node(u8::try_from(l).unwrap(), x).unwrap()
                })
                .unwrap();
                assert_eq!(from_batch, uncached, "index {i} of {size}");
                assert_eq!(from_batch, inclusion_proof(&hashes, i, size).unwrap());
            }
            state = p.state;
        }
    }

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
