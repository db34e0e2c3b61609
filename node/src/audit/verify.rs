//! Full verification of a node's own log: recompute every leaf from the stored entries, rebuild
//! the tree, and check that every stored checkpoint is signed by the node and matches the tree
//! of its size. Names the first bad entry or checkpoint.

use std::time::Instant;

use serde::{Deserialize, Serialize};
use throughgate_protocol::checkpoint::SignedCheckpoint;
use throughgate_protocol::keys::PublicKey;
use throughgate_protocol::merkle::{leaf_hash, MerkleFrontier};

use super::AuditError;
use crate::db::Db;

/// Entries read per storage page.
const PAGE: usize = 8192;

/// The result of verifying a log.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Verification {
    /// Entries checked.
    pub entries: u64,
    /// Checkpoints checked.
    pub checkpoints: u64,
    /// Entries whose content retention redacted (checked by their stored leaf hash only).
    pub redacted: u64,
    /// The first problem found, if any.
    pub problem: Option<Problem>,
    /// Milliseconds taken.
    pub elapsed_ms: u64,
}

impl Verification {
    /// Whether the log verified.
    pub fn ok(&self) -> bool {
        self.problem.is_none()
    }
}

/// The first thing found wrong.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Problem {
    /// The entry index concerned (for a checkpoint problem, the first entry it no longer
    /// matches, when that can be named).
    pub entry: Option<u64>,
    /// The checkpoint size concerned.
    pub checkpoint: Option<u64>,
    /// What is wrong.
    pub detail: String,
}

fn problem(entry: Option<u64>, checkpoint: Option<u64>, detail: String) -> Option<Problem> {
    Some(Problem {
        entry,
        checkpoint,
        detail,
    })
}

/// Verifies the log in `db` whose checkpoints are signed under `origin` by one of `keys`.
pub fn verify_log(db: &Db, origin: &str, keys: &[PublicKey]) -> Result<Verification, AuditError> {
    let started = Instant::now();
    let state = db.audit_state()?.unwrap_or_default();
    let target = state.size;
    let mut frontier = MerkleFrontier::new();
    let mut checkpoints = db.audit_checkpoints(0, usize::MAX)?.into_iter().peekable();
    let mut n_checkpoints = 0u64;
    let mut first_leaf_mismatch: Option<u64> = None;
    let mut redacted = 0u64;
    let finish = |entries: u64, checkpoints: u64, problem: Option<Problem>| Verification {
        entries,
        checkpoints,
        redacted: 0,
        problem,
        elapsed_ms: u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX),
    };

    let check_checkpoint = |size: u64,
                            text: &str,
                            frontier: &MerkleFrontier,
                            mismatch: Option<u64>|
     -> Option<Problem> {
        let signed = match SignedCheckpoint::parse(text.as_bytes()) {
            Ok(s) => s,
            Err(e) => {
                return problem(
                    None,
                    Some(size),
                    format!("checkpoint {size} does not parse: {e}"),
                )
            }
        };
        if !keys.iter().any(|k| signed.verify(origin, k).is_ok()) {
            return problem(
                None,
                Some(size),
                format!("checkpoint {size} is not signed by this node's key"),
            );
        }
        let cp = signed.checkpoint();
        if cp.origin != origin || cp.size != size {
            return problem(
                None,
                Some(size),
                format!(
                    "checkpoint stored under size {size} claims size {} of {}",
                    cp.size, cp.origin
                ),
            );
        }
        if cp.root_hash != frontier.root() {
            let detail = match mismatch {
                Some(i) => format!("entry {i} was altered: the tree no longer matches signed checkpoint {size}"),
                None => format!("the entries no longer match signed checkpoint {size} (an entry up to {size} was altered)"),
            };
            return problem(mismatch, Some(size), detail);
        }
        None
    };

    // Checkpoints of the empty tree (none are made, but tolerate one).
    while let Some((size, text)) = checkpoints.next_if(|(s, _)| *s == 0) {
        n_checkpoints += 1;
        if let Some(p) = check_checkpoint(size, &text, &frontier, None) {
            return Ok(finish(0, n_checkpoints, Some(p)));
        }
    }
    let mut next = 0u64;
    while next < target {
        let page = db.audit_entries(next, PAGE)?;
        let leaves = db.audit_leaf_hashes(next, PAGE)?;
        if page.is_empty() {
            return Ok(finish(
                next,
                n_checkpoints,
                problem(
                    Some(next),
                    None,
                    format!("entry {next} is missing (the log has {target})"),
                ),
            ));
        }
        let mut stored = leaves.into_iter().peekable();
        for (index, bytes) in page {
            if index >= target {
                break;
            }
            if index != next {
                return Ok(finish(
                    next,
                    n_checkpoints,
                    problem(
                        Some(next),
                        None,
                        format!("entry {next} is missing (deleted)"),
                    ),
                ));
            }
            while stored.next_if(|(i, _)| *i < index).is_some() {}
            // A redacted entry (retention) keeps only its leaf hash: take it as stored.
            let leaf = if bytes.is_empty() && db.audit_redacted(index)? {
                redacted += 1;
                match stored.peek() {
                    Some((i, h)) if *i == index => h
                        .as_slice()
                        .try_into()
                        .unwrap_or_else(|_| leaf_hash(&bytes)),
                    _ => leaf_hash(&bytes),
                }
            } else {
                leaf_hash(&bytes)
            };
            if first_leaf_mismatch.is_none() {
                let same = stored
                    .next_if(|(i, _)| *i == index)
                    .is_some_and(|(_, h)| h.as_slice() == leaf.as_slice());
                if !same {
                    first_leaf_mismatch = Some(index);
                }
            }
            frontier.push(leaf).map_err(AuditError::from)?;
            next += 1;
            while let Some((size, text)) = checkpoints.next_if(|(s, _)| *s <= next) {
                n_checkpoints += 1;
                if size < next {
                    return Ok(finish(
                        next,
                        n_checkpoints,
                        problem(
                            None,
                            Some(size),
                            format!("checkpoint {size} is out of order"),
                        ),
                    ));
                }
                if let Some(p) = check_checkpoint(size, &text, &frontier, first_leaf_mismatch) {
                    return Ok(finish(next, n_checkpoints, Some(p)));
                }
            }
        }
    }
    if let Some(i) = first_leaf_mismatch {
        return Ok(finish(
            next,
            n_checkpoints,
            problem(
                Some(i),
                None,
                format!("entry {i} does not match its stored leaf hash"),
            ),
        ));
    }
    if db.audit_entry(target)?.is_some() {
        return Ok(finish(
            next,
            n_checkpoints,
            problem(
                Some(target),
                None,
                format!("entry {target} exists beyond the log's recorded size"),
            ),
        ));
    }
    let mut v = finish(next, n_checkpoints, None);
    v.redacted = redacted;
    Ok(v)
}
