//! The writer's in-memory tree nodes for one commit batch: every node an inclusion proof of a
//! batch entry needs, so the batch's receipts are built without reading the store.
//!
//! For a batch appending leaves `first..size`, each proof asks only for perfect subtrees inside
//! the tree of `size`. Those to the left of an entry that end before `first` are exactly the
//! old right border of the tree of `first` (the writer's state, in memory): the RFC 6962
//! recursion reaches a subtree `[b, b + k)` entirely before `first` only as the left sibling of
//! a subtree containing `first`, and with `b` a multiple of `2k` that is the border node at
//! level `log2(k)`. Every other subtree asked for ends at or after `first`, so it is closed by
//! this batch. At each level the nodes of both kinds form one run of consecutive indexes: the
//! border node (if any) at `(first >> level) - 1`, then the new nodes from `first >> level`.

use throughgate_protocol::merkle::{node_hash, Hash};

use super::AuditError;
use crate::db::StoredHash;

/// The nodes at one level: consecutive indexes from `start`.
#[derive(Debug, Default)]
struct Run {
    start: u64,
    hashes: Vec<Hash>,
}

/// The old right border and every node closed by the batch, by level.
#[derive(Debug, Default)]
pub(super) struct BatchNodes {
    levels: Vec<Run>,
}

impl BatchNodes {
    /// Seeds the cache with the right border of the tree of `first` leaves (the writer's state
    /// before the batch).
    pub(super) fn new(first: u64, border: &[Option<StoredHash>]) -> Result<BatchNodes, AuditError> {
        let mut nodes = BatchNodes::default();
        for (level, slot) in (0u32..64).zip(border) {
            let Some(h) = slot else { continue };
            let above = first.checked_shr(level).unwrap_or(0);
            if above & 1 == 0 {
                // Not a border position for this size (a state written by hand): leave it to
                // the store.
                continue;
            }
            // `level` is below 64, so it fits a byte.
            nodes.push(level as u8, above - 1, h.0)?;
        }
        Ok(nodes)
    }

    /// Adds a node. Nodes at each level must come in consecutive index order, as the writer
    /// closes them.
    pub(super) fn push(&mut self, level: u8, index: u64, hash: Hash) -> Result<(), AuditError> {
        let l = usize::from(level);
        if self.levels.len() <= l {
            self.levels.resize_with(l + 1, Run::default);
        }
        let run = self
            .levels
            .get_mut(l)
            .ok_or_else(|| AuditError::Tree(format!("no run at level {level}")))?;
        if run.hashes.is_empty() {
            run.start = index;
        } else if run.start.checked_add(run.hashes.len() as u64) != Some(index) {
            return Err(AuditError::Tree(format!(
                "node {index} at level {level} does not follow the batch's nodes"
            )));
        }
        run.hashes.push(hash);
        Ok(())
    }

    /// The node at `level` and `index`, if the batch holds it.
    pub(super) fn get(&self, level: u32, index: u64) -> Option<Hash> {
        let run = self.levels.get(usize::try_from(level).ok()?)?;
        let offset = usize::try_from(index.checked_sub(run.start)?).ok()?;
        run.hashes.get(offset).copied()
    }
}

/// The incomplete nodes on the right edge of a tree: for each level `l` at which the tree's
/// last node is incomplete (the size is not a multiple of `2^l`), that node's hash, folded
/// from the border's complete subtrees below `l`.
#[derive(Debug, Default)]
pub(super) struct RightEdge {
    ephemeral: Vec<Option<Hash>>,
}

impl RightEdge {
    /// The right edge of the tree of `size` leaves whose border is `border`.
    pub(super) fn new(size: u64, border: &[Option<StoredHash>]) -> RightEdge {
        let mut ephemeral = Vec::with_capacity(65);
        let mut acc: Option<Hash> = None;
        for level in 0u32..=64 {
            // The last node at `level` is incomplete when a lower bit of the size is set; it
            // covers exactly the border's subtrees below `level`.
            ephemeral.push(acc);
            if level == 64 {
                break;
            }
            if size.checked_shr(level).unwrap_or(0) & 1 == 1 {
                let Some(Some(h)) = border.get(level as usize) else {
                    // A border that does not match the size: leave the rest unknown.
                    ephemeral.resize(65, None);
                    return RightEdge { ephemeral };
                };
                acc = Some(match acc {
                    None => h.0,
                    Some(right) => node_hash(&h.0, &right),
                });
            }
        }
        RightEdge { ephemeral }
    }

    /// The hash of the tree's last node at `level`, if that node is incomplete.
    pub(super) fn get(&self, level: u32) -> Option<Hash> {
        self.ephemeral
            .get(usize::try_from(level).ok()?)
            .copied()
            .flatten()
    }
}

impl BatchNodes {
    /// The RFC 6962 inclusion proof of leaf `index` in the tree of `size` (lowest sibling
    /// first), from the batch's nodes and the tree's right edge alone: one lookup per level and
    /// no hashing. `None` if a node it needs is missing (then build it another way).
    pub(super) fn inclusion_proof(
        &self,
        index: u64,
        size: u64,
        edge: &RightEdge,
    ) -> Option<Vec<Hash>> {
        if index >= size {
            return None;
        }
        // As in the RFC 9162 verification walk: `node` is the index of the entry's ancestor at
        // `level`, `last` the index of the tree's last node at that level.
        let mut node = index;
        let mut last = size - 1;
        let mut level = 0u32;
        let mut proof = Vec::with_capacity(64 - last.leading_zeros() as usize);
        while last > 0 {
            if node & 1 == 1 {
                // A left sibling: always a complete subtree.
                proof.push(self.get(level, node - 1)?);
            } else if node < last {
                // A right sibling: complete, unless it is the tree's incomplete last node.
                let sibling = node + 1;
                // The last node at a level is complete when the size is a multiple of its
                // width.
                let complete = sibling < last || size.trailing_zeros() >= level;
                proof.push(if complete {
                    self.get(level, sibling)?
                } else {
                    edge.get(level)?
                });
            }
            // Otherwise the ancestor is the last node at this level and has no sibling here.
            node >>= 1;
            last >>= 1;
            level += 1;
        }
        Some(proof)
    }
}
