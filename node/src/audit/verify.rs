//! Full verification of a node's own log: recompute every leaf from the stored entries, rebuild
//! the tree, and check that every stored checkpoint is signed by the node and matches the tree
//! of its size. Names the first bad entry or checkpoint.

use std::collections::VecDeque;
use std::time::Instant;

use serde::{Deserialize, Serialize};
use throughgate_protocol::audit::{AuditEntry, AuditEvent, REDACTION_MARK};
use throughgate_protocol::checkpoint::SignedCheckpoint;
use throughgate_protocol::keys::PublicKey;
use throughgate_protocol::merkle::{leaf_hash, Hash, MerkleFrontier};
use throughgate_protocol::time::Timestamp;

use super::AuditError;
use crate::db::Db;
use crate::store::StoreError;

/// The result of verifying a log.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Verification {
    /// Entries checked.
    pub entries: u64,
    /// Checkpoints checked.
    pub checkpoints: u64,
    /// Entries whose content retention redacted (checked by their stored leaf hash only, and
    /// each covered by a redaction entry logged after it).
    pub redacted: u64,
    /// The redacted entries as ranges `[from, to)`, in order.
    pub redacted_ranges: Vec<(u64, u64)>,
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

/// Entries per chunk: the unit one reader scans and hands over.
const CHUNK: u64 = 4096;

/// Checkpoints read per storage page (most chunks hold one or none).
const CHECKPOINT_PAGE: usize = 64;

/// Chunks each reader may have ready ahead of the checker.
const AHEAD: usize = 2;

/// Most reader threads.
const MAX_READERS: usize = 4;

/// What a reader found for one stored entry, in key order.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Found {
    /// A well-formed entry key.
    Entry {
        /// The entry's index.
        index: u64,
        /// The leaf hash the tree takes for it: the hash of its bytes, or for an entry redacted
        /// by retention (emptied and marked), its stored leaf hash.
        leaf: Hash,
        /// Whether `leaf` equals the leaf hash stored with the entry.
        matches: bool,
        /// Whether it was taken as redacted.
        redacted: bool,
        /// The redaction the entry itself records, when it is a redaction entry.
        redaction: Option<Redaction>,
    },
    /// An entry stored under a malformed key.
    MalformedKey,
}

/// A redaction entry as the verifier needs it: where it sits, when it was logged, and what it
/// covers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Redaction {
    index: u64,
    at: Timestamp,
    from: u64,
    to: u64,
    cutoff: Timestamp,
}

/// The redaction an entry records, if it is a redaction entry (its bytes are checked against
/// the leaf hash like any other entry's, so what it says is what the node logged).
fn redaction_in(index: u64, bytes: &[u8]) -> Option<Redaction> {
    if !bytes
        .windows(REDACTION_MARK.len())
        .any(|w| w == REDACTION_MARK)
    {
        return None;
    }
    match AuditEntry::from_bytes(bytes).ok()? {
        AuditEntry {
            at,
            event: AuditEvent::Redaction { from, to, cutoff },
            ..
        } => Some(Redaction {
            index,
            at,
            from,
            to,
            cutoff,
        }),
        _ => None,
    }
}

/// The first redacted entry in `ranges` that no redaction entry in `redactions` accounts for:
/// one logged after the entry (and after the whole range it names), whose range holds the
/// entry, with a cutoff no later than when it was logged.
fn uncovered(ranges: &[(u64, u64)], redactions: &[Redaction]) -> Option<u64> {
    let valid: Vec<&Redaction> = redactions
        .iter()
        .filter(|r| r.from < r.to && r.to <= r.index && r.cutoff <= r.at)
        .collect();
    for &(from, to) in ranges {
        let mut i = from;
        while i < to {
            // The covering redaction reaching furthest from i.
            let reach = valid
                .iter()
                .filter(|r| r.from <= i && i < r.to)
                .map(|r| r.to)
                .max();
            match reach {
                Some(end) => i = end,
                None => return Some(i),
            }
        }
    }
    None
}

/// A stored checkpoint, checked as far as it can be without the tree: it parses, is signed by
/// one of the keys, and names this log and the size it is stored under. `Ok` is the root it
/// signs.
#[derive(Debug, Clone, PartialEq, Eq)]
struct CheckedCheckpoint {
    size: u64,
    root: Result<Hash, Problem>,
}

/// Everything one chunk of the log holds: its entries `[start, end)` and the checkpoints of
/// sizes in `(start, end]` (for the first chunk, from 0; for the last, everything after).
#[derive(Debug, Default)]
struct Chunk {
    found: Vec<Found>,
    checkpoints: Vec<CheckedCheckpoint>,
    /// Whether a checkpoint is stored under a malformed key in this chunk's key range.
    malformed_checkpoint: bool,
}

/// Checks a stored checkpoint's text against its stored size, `origin` and `keys`.
fn check_signed(size: u64, text: &[u8], origin: &str, keys: &[PublicKey]) -> Result<Hash, Problem> {
    let fail = |detail: String| Problem {
        entry: None,
        checkpoint: Some(size),
        detail,
    };
    let signed = SignedCheckpoint::parse(text)
        .map_err(|e| fail(format!("checkpoint {size} does not parse: {e}")))?;
    if !keys.iter().any(|k| signed.verify(origin, k).is_ok()) {
        return Err(fail(format!(
            "checkpoint {size} is not signed by this node's key"
        )));
    }
    let cp = signed.checkpoint();
    if cp.origin != origin || cp.size != size {
        return Err(fail(format!(
            "checkpoint stored under size {size} claims size {} of {}",
            cp.size, cp.origin
        )));
    }
    Ok(cp.root_hash)
}

/// The chunks of a log of `target` entries, as `(start, end)`: `end` is `None` for the last,
/// which runs to the end of the stored keys (to meet anything stored beyond the log's size).
fn chunk_bounds(target: u64, chunk: u64) -> Vec<(u64, Option<u64>)> {
    let chunk = chunk.max(1);
    let count = target.div_ceil(chunk).max(1);
    (0..count)
        .map(|c| {
            let start = c.saturating_mul(chunk);
            let end = (c + 1 < count).then(|| start.saturating_add(chunk));
            (start, end)
        })
        .collect()
}

/// Reads and hashes one chunk `[start, end)` and checks its checkpoints' signatures. Checkpoints
/// beyond `target` are not read into the chunk: they cannot be checked until the log reaches
/// them.
fn read_chunk(
    db: &Db,
    origin: &str,
    keys: &[PublicKey],
    (start, end): (u64, Option<u64>),
    chunk_len: u64,
    target: u64,
) -> Result<Chunk, StoreError> {
    let mut chunk = Chunk::default();
    // Redaction markers are few and small: read them in pages as the entries reach them.
    let page = usize::try_from(chunk_len.saturating_add(1)).unwrap_or(usize::MAX);
    let mut marks = db.audit_redaction_scan(start, page);
    // The next redaction marker at or after the entries seen so far.
    let mut mark: Option<u64> = None;
    let mut failed: Option<StoreError> = None;
    db.audit_entry_visit(start, end, &mut |index, stored_leaf, bytes| {
        let Some(index) = index else {
            chunk.found.push(Found::MalformedKey);
            return true;
        };
        let mut redacted = false;
        if bytes.is_empty() {
            // Markers come in index order, as entries do.
            while mark.is_none_or(|m| m < index) {
                match marks.next() {
                    Some(Ok(m)) => mark = Some(m),
                    Some(Err(e)) => {
                        failed = Some(e);
                        return false;
                    }
                    None => break,
                }
            }
            redacted = mark == Some(index);
        }
        let leaf = match (redacted, stored_leaf) {
            (true, Some(h)) => *h,
            _ => leaf_hash(bytes),
        };
        chunk.found.push(Found::Entry {
            index,
            leaf,
            matches: stored_leaf == Some(&leaf),
            redacted,
            redaction: if redacted {
                None
            } else {
                redaction_in(index, bytes)
            },
        });
        // Something stored beyond the log's size: the checker reports it; no need to read on.
        !(end.is_none() && index >= target)
    })?;
    if let Some(e) = failed {
        return Err(e);
    }
    let from = if start == 0 {
        0
    } else {
        start.saturating_add(1)
    };
    let until = end.map(|end| end.saturating_add(1));
    for item in db.audit_checkpoint_scan(from, until, CHECKPOINT_PAGE) {
        let (size, text) = item?;
        let Some(size) = size else {
            chunk.malformed_checkpoint = true;
            continue;
        };
        if end.is_some_and(|end| size > end) {
            break;
        }
        if size > target {
            // The last chunk reads on only to meet malformed keys.
            continue;
        }
        chunk.checkpoints.push(CheckedCheckpoint {
            size,
            root: check_signed(size, &text, origin, keys),
        });
    }
    Ok(chunk)
}

/// How many reader threads to use for a log of `chunks` chunks: one per core (at most
/// [`MAX_READERS`]), none (read inline) for a log of one chunk or on a single core.
fn readers_for(chunks: usize) -> usize {
    if chunks < 2 {
        return 1;
    }
    std::thread::available_parallelism()
        .map_or(1, std::num::NonZeroUsize::get)
        .clamp(1, MAX_READERS)
        .min(chunks)
}

/// Verifies the log in `db` whose checkpoints are signed under `origin` by one of `keys`.
///
/// One streaming pass over the log in key order: re-hash every entry and compare with the leaf
/// hash stored with it (an entry emptied by retention and marked so is taken by its stored
/// hash), rebuild the tree, and check every stored checkpoint (parse, signature by one of
/// `keys`, origin and size, and its root against the tree of its size). The log is read in
/// chunks of 4096 entries: reader threads (one per core) each scan, hash and check the
/// checkpoint signatures of every n-th chunk, a few chunks ahead, while this thread takes the
/// chunks in order, rebuilds the tree and compares roots. Memory is bounded by the chunks in
/// flight (leaf hashes only, no entry bytes).
pub fn verify_log(db: &Db, origin: &str, keys: &[PublicKey]) -> Result<Verification, AuditError> {
    verify_chunked(db, origin, keys, CHUNK, None)
}

/// [`verify_log`] with chunks of `chunk_len` entries and `readers` reader threads (by default
/// one per core; 1 reads inline).
fn verify_chunked(
    db: &Db,
    origin: &str,
    keys: &[PublicKey],
    chunk_len: u64,
    readers: Option<usize>,
) -> Result<Verification, AuditError> {
    let started = Instant::now();
    let target = db.audit_state()?.unwrap_or_default().size;
    verify_from(db, origin, keys, target, chunk_len, readers, started)
}

/// [`verify_chunked`] of the log's first `target` entries, `target` being its size when the
/// verification began (it may have grown since).
fn verify_from(
    db: &Db,
    origin: &str,
    keys: &[PublicKey],
    target: u64,
    chunk_len: u64,
    readers: Option<usize>,
    started: Instant,
) -> Result<Verification, AuditError> {
    let size_now = || Ok(db.audit_state()?.unwrap_or_default().size);
    let chunk_len = chunk_len.max(1);
    let bounds = chunk_bounds(target, chunk_len);
    let readers = readers
        .unwrap_or_else(|| readers_for(bounds.len()))
        .clamp(1, bounds.len().max(1));
    if readers <= 1 {
        let chunks = bounds
            .iter()
            .map(|b| read_chunk(db, origin, keys, *b, chunk_len, target));
        return check_chunks(chunks, target, &size_now, started);
    }
    std::thread::scope(|s| {
        let mut ready = Vec::with_capacity(readers);
        for first in 0..readers {
            let (tx, rx) = std::sync::mpsc::sync_channel(AHEAD);
            ready.push(rx);
            let mine: Vec<(u64, Option<u64>)> = bounds
                .iter()
                .skip(first)
                .step_by(readers)
                .copied()
                .collect();
            s.spawn(move || {
                for b in mine {
                    let chunk = read_chunk(db, origin, keys, b, chunk_len, target);
                    let failed = chunk.is_err();
                    // A closed channel means the checker stopped: stop too.
                    if tx.send(chunk).is_err() || failed {
                        return;
                    }
                }
            });
        }
        let ready = &ready;
        let chunks = (0..bounds.len()).map(|c| {
            ready
                .get(c % readers)
                .and_then(|rx| rx.recv().ok())
                .unwrap_or_else(|| Err(StoreError::Internal("a verifier thread stopped")))
        });
        check_chunks(chunks, target, &size_now, started)
        // Returning drops the receivers, so readers still running stop at their next send.
    })
}

/// Takes the chunks in order: rebuilds the tree, checks every checkpoint's root as the tree
/// reaches its size, and names the first problem, in the same order a single pass would.
///
/// `size_now` reads the log's current size: an entry met beyond `target` is a problem only if
/// the log has not grown to cover it meanwhile (a live node appends while it is verified, and
/// the writer stores entries and the new size in one atomic batch).
fn check_chunks(
    chunks: impl Iterator<Item = Result<Chunk, StoreError>>,
    target: u64,
    size_now: &dyn Fn() -> Result<u64, StoreError>,
    started: Instant,
) -> Result<Verification, AuditError> {
    let mut frontier = MerkleFrontier::new();
    let mut n_checkpoints = 0u64;
    let mut first_leaf_mismatch: Option<u64> = None;
    let mut redacted = 0u64;
    let mut ranges: Vec<(u64, u64)> = Vec::new();
    let mut redactions: Vec<Redaction> = Vec::new();
    let mut next = 0u64;
    // The first stored entry at or beyond the recorded size; where a malformed key was met.
    let mut beyond: Option<u64> = None;
    let mut malformed_entry: Option<u64> = None;
    let mut malformed_checkpoint = false;
    let mut checkpoints: VecDeque<CheckedCheckpoint> = VecDeque::new();
    let finish = |entries: u64, checkpoints: u64, problem: Option<Problem>| Verification {
        entries,
        checkpoints,
        redacted: 0,
        redacted_ranges: Vec::new(),
        problem,
        elapsed_ms: u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX),
    };
    // Checks every pending checkpoint of size at most `next` against the tree as it stands.
    let reached = |next: u64,
                   frontier: &MerkleFrontier,
                   mismatch: Option<u64>,
                   checkpoints: &mut VecDeque<CheckedCheckpoint>,
                   n: &mut u64|
     -> Option<Problem> {
        while let Some(cp) = checkpoints.front() {
            if cp.size > next {
                break;
            }
            let CheckedCheckpoint { size, root } = checkpoints.pop_front()?;
            *n += 1;
            if size < next {
                return problem(
                    None,
                    Some(size),
                    format!("checkpoint {size} is out of order"),
                );
            }
            let root = match root {
                Ok(r) => r,
                Err(p) => return Some(p),
            };
            if root != frontier.root() {
                let detail = match mismatch {
                    Some(i) => format!("entry {i} was altered: the tree no longer matches signed checkpoint {size}"),
                    None => format!("the entries no longer match signed checkpoint {size} (an entry up to {size} was altered)"),
                };
                return problem(mismatch, Some(size), detail);
            }
        }
        None
    };

    'chunks: for chunk in chunks {
        let chunk = chunk?;
        malformed_checkpoint |= chunk.malformed_checkpoint;
        checkpoints.extend(chunk.checkpoints);
        // Checkpoints of the empty tree (none are made, but tolerate one).
        if next == 0 {
            if let Some(p) = reached(0, &frontier, None, &mut checkpoints, &mut n_checkpoints) {
                return Ok(finish(0, n_checkpoints, Some(p)));
            }
        }
        for found in chunk.found {
            let (index, leaf, matches, was_redacted, redaction) = match found {
                Found::MalformedKey => {
                    malformed_entry.get_or_insert(next);
                    continue;
                }
                Found::Entry {
                    index,
                    leaf,
                    matches,
                    redacted,
                    redaction,
                } => (index, leaf, matches, redacted, redaction),
            };
            if index >= target {
                beyond = Some(index);
                break 'chunks;
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
            if was_redacted {
                redacted += 1;
                match ranges.last_mut() {
                    Some((_, to)) if *to == index => *to = index + 1,
                    _ => ranges.push((index, index + 1)),
                }
            }
            if let Some(r) = redaction {
                redactions.push(r);
            }
            if !matches && first_leaf_mismatch.is_none() {
                first_leaf_mismatch = Some(index);
            }
            frontier.push(leaf).map_err(AuditError::from)?;
            next += 1;
            if let Some(p) = reached(
                next,
                &frontier,
                first_leaf_mismatch,
                &mut checkpoints,
                &mut n_checkpoints,
            ) {
                return Ok(finish(next, n_checkpoints, Some(p)));
            }
        }
    }
    let beyond = match beyond {
        Some(i) if size_now()? > i => None,
        b => b,
    };
    // Problems found only once the whole log has been read, in the order they are reported.
    let found = if next < target {
        problem(
            Some(next),
            None,
            format!("entry {next} is missing (the log has {target})"),
        )
    } else if let Some(i) = first_leaf_mismatch {
        problem(
            Some(i),
            None,
            format!("entry {i} does not match its stored leaf hash"),
        )
    } else if let Some(i) = beyond {
        problem(
            Some(i),
            None,
            format!("entry {i} exists beyond the log's recorded size ({target})"),
        )
    } else if let Some(at) = malformed_entry {
        problem(
            None,
            None,
            format!("an entry is stored under a malformed key (met after {at} entries)"),
        )
    } else if malformed_checkpoint {
        problem(
            None,
            None,
            "a checkpoint is stored under a malformed key".into(),
        )
    } else if let Some(i) = uncovered(&ranges, &redactions) {
        problem(
            Some(i),
            None,
            format!("entry {i} is emptied as if redacted, but no redaction entry logged after it covers it: its content was removed outside retention"),
        )
    } else {
        None
    };
    let mut v = finish(next, n_checkpoints, found);
    // Redactions are counted only for a log that verified.
    if v.ok() {
        v.redacted = redacted;
        v.redacted_ranges = ranges;
    }
    Ok(v)
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use throughgate_protocol::ids::PassportId;
    use throughgate_protocol::keys::SecretKey;

    use super::super::writer::prepare;
    use super::*;
    use crate::db::AuditState;
    use crate::store::{MemoryStore, Store, WriteBatch};

    const ORIGIN: &str = "throughgate/dwp/audit";

    struct Log {
        db: Db,
        store: Arc<MemoryStore>,
        key: SecretKey,
        state: AuditState,
    }

    impl Log {
        fn new() -> Log {
            let store = Arc::new(MemoryStore::new());
            Log {
                db: Db::new(store.clone()),
                store,
                key: SecretKey::generate(),
                state: AuditState::default(),
            }
        }

        /// Appends batches of entries as the writer does, one checkpoint per batch.
        fn append(&mut self, batches: &[usize]) {
            for &n in batches {
                let first = self.state.size;
                let entries: Vec<(Vec<u8>, Option<PassportId>)> = (0..n as u64)
                    .map(|i| {
                        let mut b = format!("entry {} ", first + i).into_bytes();
                        b.resize(180, b'.');
                        (b, Some(PassportId::random()))
                    })
                    .collect();
                self.append_batch(&entries);
            }
        }

        /// Appends these entries as one batch under one checkpoint.
        fn append_batch(&mut self, entries: &[(Vec<u8>, Option<PassportId>)]) {
            let p = prepare(
                &self.state,
                ORIGIN,
                &self.key,
                entries.iter().map(|(b, p)| (b.as_slice(), p.as_ref())),
            )
            .unwrap();
            self.db.apply(p.writes.0).unwrap();
            self.state = p.state;
        }

        /// Appends a redaction entry logged at `at` for `from..to` with `cutoff`.
        fn log_redaction(&mut self, at: u64, from: u64, to: u64, cutoff: u64) {
            let entry = throughgate_protocol::audit::AuditEntry {
                at: Timestamp(at),
                node: throughgate_protocol::ids::AgencyId::new("nhs-wy").unwrap(),
                event: AuditEvent::Redaction {
                    from,
                    to,
                    cutoff: Timestamp(cutoff),
                },
            };
            self.append_batch(&[(entry.to_bytes(), None)]);
        }

        /// Verifies with the defaults, and checks that every chunk size and reader count
        /// finds exactly the same.
        fn verify(&self) -> Verification {
            let keys = [self.key.public()];
            let mut v = verify_log(&self.db, ORIGIN, &keys).unwrap();
            v.elapsed_ms = 0;
            for chunk in [1, 3, 7, 10, 4096] {
                for readers in [1, 2, 3] {
                    let mut w =
                        verify_chunked(&self.db, ORIGIN, &keys, chunk, Some(readers)).unwrap();
                    w.elapsed_ms = 0;
                    assert_eq!(w, v, "chunk {chunk}, readers {readers}");
                }
            }
            v
        }

        fn entry_key(i: u64) -> Vec<u8> {
            format!("aud/e/{i:020}").into_bytes()
        }

        fn put(&self, key: Vec<u8>, value: Vec<u8>) {
            let mut b = WriteBatch::new();
            b.put(key, value);
            self.store.apply(b).unwrap();
        }

        fn delete(&self, key: Vec<u8>) {
            let mut b = WriteBatch::new();
            b.delete(key);
            self.store.apply(b).unwrap();
        }
    }

    #[test]
    fn chunks_cover_the_log_and_the_last_runs_on() {
        assert_eq!(chunk_bounds(0, 4), [(0, None)]);
        assert_eq!(chunk_bounds(3, 4), [(0, None)]);
        assert_eq!(chunk_bounds(4, 4), [(0, None)]);
        assert_eq!(chunk_bounds(5, 4), [(0, Some(4)), (4, None)]);
        assert_eq!(chunk_bounds(9, 3), [(0, Some(3)), (3, Some(6)), (6, None)]);
        assert_eq!(readers_for(1), 1);
        assert!(readers_for(100) >= 1 && readers_for(100) <= MAX_READERS);
    }

    #[test]
    fn a_clean_log_verifies_across_pages() {
        let mut log = Log::new();
        log.append(&[1, 2, 3, 4000, 5000, 1, 7]);
        let v = log.verify();
        assert!(v.ok(), "{v:?}");
        assert_eq!(v.entries, 9014);
        assert_eq!(v.checkpoints, 7);
        assert_eq!(v.redacted, 0);
        // The empty log verifies too.
        assert!(Log::new().verify().ok());
    }

    #[test]
    fn an_altered_entry_is_named() {
        let mut log = Log::new();
        log.append(&[10, 10, 10]);
        let k = Log::entry_key(14);
        let mut v = log.store.get(&k).unwrap().unwrap();
        let at = v.len() / 2;
        v[at] ^= 1;
        log.put(k, v);
        let r = log.verify();
        let p = r.problem.unwrap();
        assert_eq!(p.entry, Some(14), "{p:?}");
        assert_eq!(p.checkpoint, Some(20), "{p:?}");
    }

    #[test]
    fn an_altered_leaf_hash_alone_is_named() {
        let mut log = Log::new();
        log.append(&[10, 10]);
        let k = Log::entry_key(3);
        let mut v = log.store.get(&k).unwrap().unwrap();
        v[0] ^= 1;
        log.put(k, v);
        let p = log.verify().problem.unwrap();
        assert_eq!((p.entry, p.checkpoint), (Some(3), None), "{p:?}");
        assert!(p.detail.contains("stored leaf hash"), "{p:?}");
    }

    #[test]
    fn deleted_missing_and_extra_entries_are_named() {
        let mut log = Log::new();
        log.append(&[10, 10]);
        log.delete(Log::entry_key(4));
        let p = log.verify().problem.unwrap();
        assert_eq!(p.entry, Some(4), "{p:?}");
        assert!(p.detail.contains("deleted"), "{p:?}");

        let mut log = Log::new();
        log.append(&[10, 10]);
        log.delete(Log::entry_key(19));
        let p = log.verify().problem.unwrap();
        assert_eq!(p.entry, Some(19), "{p:?}");
        assert!(p.detail.contains("the log has 20"), "{p:?}");

        // The last entry missing while one lies beyond the recorded size.
        let mut log = Log::new();
        log.append(&[10, 10]);
        let last = log.store.get(&Log::entry_key(19)).unwrap().unwrap();
        log.delete(Log::entry_key(19));
        log.put(Log::entry_key(25), last.clone());
        let p = log.verify().problem.unwrap();
        assert_eq!(p.entry, Some(19), "{p:?}");

        let mut log = Log::new();
        log.append(&[10, 10]);
        log.put(Log::entry_key(20), last.clone());
        let p = log.verify().problem.unwrap();
        assert_eq!(p.entry, Some(20), "{p:?}");
        assert!(p.detail.contains("beyond"), "{p:?}");

        let mut log = Log::new();
        log.append(&[10, 10]);
        log.put(Log::entry_key(31), last);
        let p = log.verify().problem.unwrap();
        assert_eq!(p.entry, Some(31), "{p:?}");
    }

    #[test]
    fn entries_appended_while_a_log_is_verified_are_not_taken_for_tampering() {
        let mut log = Log::new();
        log.append(&[10, 10]);
        let keys = [log.key.public()];
        // The verification began when the log had 10 entries; 10 more were appended since.
        for readers in [1, 2] {
            let v =
                verify_from(&log.db, ORIGIN, &keys, 10, 3, Some(readers), Instant::now()).unwrap();
            assert!(v.ok(), "{:?}", v.problem);
            assert_eq!(v.entries, 10);
        }
        // One the current size does not cover is still named: see
        // `deleted_missing_and_extra_entries_are_named`.
    }

    #[test]
    fn malformed_keys_are_reported() {
        let mut log = Log::new();
        log.append(&[10, 10]);
        log.put(b"aud/e/00000000000000000003x".to_vec(), vec![0; 40]);
        let p = log.verify().problem.unwrap();
        assert!(p.detail.contains("malformed"), "{p:?}");

        let mut log = Log::new();
        log.append(&[10, 10]);
        log.put(b"aud/c/0".to_vec(), b"junk".to_vec());
        let v = log.verify();
        let p = v.problem.unwrap();
        assert!(
            p.detail
                .contains("checkpoint is stored under a malformed key"),
            "{p:?}"
        );
        // The checkpoints behind the junk key were still checked.
        assert_eq!(v.checkpoints, 2);
    }

    #[test]
    fn checkpoints_are_checked_for_signature_size_and_root() {
        let mut log = Log::new();
        log.append(&[10, 10, 10]);
        // Signed by another key.
        let other = SecretKey::generate();
        let text = log.db.audit_checkpoint(20).unwrap().unwrap();
        let v = verify_log(&log.db, ORIGIN, &[other.public()]).unwrap();
        assert_eq!(v.problem.unwrap().checkpoint, Some(10));
        // Stored under the wrong size.
        log.put(b"aud/c/00000000000000000015".to_vec(), text.into_bytes());
        let p = log.verify().problem.unwrap();
        assert_eq!(p.checkpoint, Some(15), "{p:?}");
        assert!(p.detail.contains("claims size 20"), "{p:?}");
        // Damaged.
        let mut log2 = Log::new();
        log2.append(&[4, 4]);
        log2.put(
            b"aud/c/00000000000000000004".to_vec(),
            b"not a checkpoint".to_vec(),
        );
        let p = log2.verify().problem.unwrap();
        assert_eq!(p.checkpoint, Some(4), "{p:?}");
        assert!(p.detail.contains("does not parse"), "{p:?}");
    }

    #[test]
    fn redacted_entries_verify_by_their_stored_hash_and_only_with_a_marker() {
        let mut log = Log::new();
        log.append(&[10, 10, 3]);
        log.log_redaction(1_000, 0, 12, 900);
        let n = log
            .db
            .redact_audit_entries(0, 12, Timestamp(1_000))
            .unwrap();
        assert_eq!(n, 12);
        let v = log.verify();
        assert!(v.ok(), "{v:?}");
        assert_eq!((v.entries, v.redacted), (24, 12));
        assert_eq!(v.redacted_ranges, vec![(0, 12)]);

        // Emptied without a marker: named.
        let k = Log::entry_key(15);
        let value = log.store.get(&k).unwrap().unwrap();
        log.put(k.clone(), value[..32].to_vec());
        let p = log.verify().problem.unwrap();
        assert_eq!(p.entry, Some(15), "{p:?}");
        // Emptied with a forged marker but an altered hash: the tree no longer matches.
        log.put(k, vec![7; 32]);
        log.put(
            [&b"aud/x/"[..], &15u64.to_be_bytes()].concat(),
            5u64.to_be_bytes().to_vec(),
        );
        let p = log.verify().problem.unwrap();
        assert_eq!(p.checkpoint, Some(20), "{p:?}");
    }

    #[test]
    fn a_redaction_no_redaction_entry_accounts_for_is_named() {
        let mut log = Log::new();
        log.append(&[10, 10, 3]);
        // An operator empties entries in the store the way retention does, with markers and
        // the leaf hashes kept: the tree still matches every checkpoint, but nothing logged
        // accounts for it.
        log.db.redact_audit_entries(0, 12, Timestamp(5)).unwrap();
        let p = log.verify().problem.unwrap();
        assert_eq!(p.entry, Some(0), "{p:?}");
        assert!(p.detail.contains("outside retention"), "{p:?}");

        // Retention's own record, logged after the entries, accounts for exactly its range.
        log.log_redaction(1_000, 0, 12, 900);
        let v = log.verify();
        assert!(v.ok(), "{v:?}");
        assert_eq!((v.redacted, v.redacted_ranges.clone()), (12, vec![(0, 12)]));

        // A fresh entry beyond that range turned into a redaction: named.
        log.db
            .redact_audit_entries(15, 16, Timestamp(1_000))
            .unwrap();
        let p = log.verify().problem.unwrap();
        assert_eq!(p.entry, Some(15), "{p:?}");
    }

    #[test]
    fn a_redaction_entry_counts_only_when_logged_after_its_range_and_its_cutoff() {
        // The range reaches past the redaction entry itself (it would cover entries logged
        // after it).
        let mut log = Log::new();
        log.append(&[4]);
        log.log_redaction(1_000, 0, 6, 900);
        log.append(&[2]);
        log.db.redact_audit_entries(5, 6, Timestamp(1_000)).unwrap();
        assert_eq!(log.verify().problem.unwrap().entry, Some(5));

        // A cutoff later than the redaction entry's own time.
        let mut log = Log::new();
        log.append(&[4]);
        log.log_redaction(1_000, 0, 4, 2_000);
        log.db.redact_audit_entries(0, 4, Timestamp(1_000)).unwrap();
        assert_eq!(log.verify().problem.unwrap().entry, Some(0));
    }

    #[test]
    fn retention_keeps_redaction_entries_whole() {
        let mut log = Log::new();
        log.append(&[3]);
        log.log_redaction(1_000, 0, 3, 900);
        log.append(&[2]);
        // A later pass over everything so far, the first redaction entry included.
        log.log_redaction(2_000, 0, 6, 1_900);
        assert_eq!(
            log.db.redact_audit_entries(0, 6, Timestamp(2_000)).unwrap(),
            5
        );
        let v = log.verify();
        assert!(v.ok(), "{v:?}");
        assert_eq!(v.redacted_ranges, vec![(0, 3), (4, 6)]);
    }
}
