//! Storage of the audit log: entries, Merkle tree nodes, checkpoints, the passport index, the
//! writer's state, and witnessing state.
//!
//! Layout (see the table in [`crate::db`]):
//!
//! * An entry lives under `aud/e/{index:020}` and its value is its **leaf hash (32 bytes)
//!   followed by the entry's bytes**, so one scan of `aud/e/` gives a verifier everything it
//!   reads per entry, and a proof reads a leaf hash without another key. A redacted entry keeps
//!   only the leaf hash. Entry and checkpoint keys stay zero-padded decimal text (they sort in
//!   index order, and operators' tooling and the tamper tests address them by that name); they
//!   are parsed as bytes, never through UTF-8 and `str::parse`.
//! * Interior tree nodes are stored from level [`LOWEST_STORED_LEVEL`] up, under `aud/n/`, a
//!   level byte and the big-endian index. Levels 1 to 3 are not stored: any of them is at most
//!   8 leaves, recomputed from the leaf hashes in the entries (one scan) when a proof needs it.
//!   That saves 7 of every 8 interior-node writes, the bulk of the log's keys after the entries.
//! * Passport index keys (`aud/p/{passport}/`) and redaction markers (`aud/x/`) end in the
//!   big-endian index.

use std::cell::RefCell;
use std::collections::HashMap;

use serde::{Deserialize, Serialize};
use throughgate_protocol::ids::{AgencyId, PassportId};
use throughgate_protocol::merkle::{root_from_leaves, Hash, HASH_LEN};

use super::{decode, encode, key, Db};
use crate::store::{KeyValue, StoreError, WriteBatch};

/// The audit writer's persistent state: tree size and the right border of complete subtrees.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct AuditState {
    /// Entries in the log.
    pub size: u64,
    /// `border[level]` is the hash of the complete subtree at `level` on the right border, when
    /// bit `level` of `size` is set.
    pub border: Vec<Option<StoredHash>>,
}

/// A 32-byte hash as a CBOR byte string.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct StoredHash(#[serde(with = "throughgate_protocol::keys::fixed_bytes")] pub Hash);

/// The lowest level of interior tree node written to the store. Level 0 (leaf hashes) is kept
/// in each entry's value; levels 1 up to this one minus one are recomputed from leaf hashes.
pub const LOWEST_STORED_LEVEL: u8 = 4;

/// Leaves read together to recompute a node below [`LOWEST_STORED_LEVEL`]: one perfect subtree
/// of level `LOWEST_STORED_LEVEL - 1`.
const LEAF_BLOCK: u64 = 1 << (LOWEST_STORED_LEVEL - 1);

/// The log's head: the writer's [`AuditState`]. Every batch compares and sets it, so writers
/// sharing a store serialise on it.
pub const AUDIT_HEAD: &[u8] = b"aud/state";

/// Decodes the value stored under [`AUDIT_HEAD`].
pub fn decode_audit_state(bytes: &[u8]) -> Result<AuditState, StoreError> {
    decode("audit state", AUDIT_HEAD, bytes)
}

const ENTRY_PREFIX: &[u8] = b"aud/e/";
const NODE_PREFIX: &[u8] = b"aud/n/";
const CHECKPOINT_PREFIX: &[u8] = b"aud/c/";
const REDACTION_PREFIX: &[u8] = b"aud/x/";

/// Digits in a decimal index key.
const DECIMAL_DIGITS: usize = 20;

/// `index` as exactly 20 ASCII decimal digits (zero-padded), as `format!("{index:020}")`.
fn decimal20(mut index: u64) -> [u8; DECIMAL_DIGITS] {
    let mut out = [b'0'; DECIMAL_DIGITS];
    for slot in out.iter_mut().rev() {
        // `index % 10` is below 10, so the cast cannot truncate.
        *slot = b'0' + (index % 10) as u8;
        index /= 10;
    }
    out
}

/// Parses exactly 20 ASCII decimal digits, without UTF-8 validation; `None` for anything else
/// (another length, a non-digit, a value above `u64::MAX`).
fn parse_decimal20(digits: &[u8]) -> Option<u64> {
    if digits.len() != DECIMAL_DIGITS {
        return None;
    }
    let mut v: u64 = 0;
    for &d in digits {
        if !d.is_ascii_digit() {
            return None;
        }
        v = v.checked_mul(10)?.checked_add(u64::from(d - b'0'))?;
    }
    Some(v)
}

/// `prefix` followed by the 20-digit decimal `index`.
fn decimal_key(prefix: &[u8], index: u64) -> Vec<u8> {
    let mut k = Vec::with_capacity(prefix.len() + DECIMAL_DIGITS);
    k.extend_from_slice(prefix);
    k.extend_from_slice(&decimal20(index));
    k
}

/// The index at the end of a decimal key under `prefix`.
fn parse_decimal_key(k: &[u8], prefix: &[u8]) -> Option<u64> {
    parse_decimal20(k.strip_prefix(prefix)?)
}

/// `prefix` followed by the big-endian `index`.
fn be_key(prefix: &[u8], index: u64) -> Vec<u8> {
    let mut k = Vec::with_capacity(prefix.len() + 8);
    k.extend_from_slice(prefix);
    k.extend_from_slice(&index.to_be_bytes());
    k
}

/// The big-endian index that is all of `k` after `prefix`.
fn parse_be_key(k: &[u8], prefix: &[u8]) -> Option<u64> {
    let bytes: [u8; 8] = k.strip_prefix(prefix)?.try_into().ok()?;
    Some(u64::from_be_bytes(bytes))
}

fn entry_key(index: u64) -> Vec<u8> {
    decimal_key(ENTRY_PREFIX, index)
}

fn node_key(level: u8, index: u64) -> Vec<u8> {
    let mut k = Vec::with_capacity(NODE_PREFIX.len() + 9);
    k.extend_from_slice(NODE_PREFIX);
    k.push(level);
    k.extend_from_slice(&index.to_be_bytes());
    k
}

fn checkpoint_key(size: u64) -> Vec<u8> {
    decimal_key(CHECKPOINT_PREFIX, size)
}

fn passport_prefix(passport: &PassportId) -> Vec<u8> {
    key(&["aud/p/", passport.as_str(), "/"])
}

fn passport_key(passport: &PassportId, index: u64) -> Vec<u8> {
    let mut k = passport_prefix(passport);
    k.extend_from_slice(&index.to_be_bytes());
    k
}

/// A checkpoint's size and its signed-note text.
pub type SizedNote = (u64, String);

/// `aud/wh/<peer>/<size, big-endian>`: the root of a checkpoint of `peer`'s log cosigned here.
fn witnessed_root_key(peer: &AgencyId, size: u64) -> Vec<u8> {
    let mut k = key(&["aud/wh/", peer.as_str(), "/"]);
    k.extend_from_slice(&size.to_be_bytes());
    k
}

fn redaction_key(index: u64) -> Vec<u8> {
    be_key(REDACTION_PREFIX, index)
}

/// Where a scan of `prefix` from index `start` begins: the key of `start`, except that a scan
/// from 0 begins at the prefix itself, so that it also meets malformed keys sorting before the
/// key of 0.
fn scan_start(prefix: &[u8], start: u64, key_of: fn(u64) -> Vec<u8>) -> Vec<u8> {
    if start == 0 {
        prefix.to_vec()
    } else {
        key_of(start)
    }
}

/// An entry's stored value: its leaf hash, then its bytes.
fn entry_value(leaf: &Hash, bytes: &[u8]) -> Vec<u8> {
    let mut v = Vec::with_capacity(HASH_LEN + bytes.len());
    v.extend_from_slice(leaf);
    v.extend_from_slice(bytes);
    v
}

/// Splits a stored entry value into its leaf hash and its bytes. A value too short to hold a
/// hash (only a damaged store has one) has no hash and is all bytes.
fn split_entry_value(value: &[u8]) -> (Option<&Hash>, &[u8]) {
    match value.split_first_chunk::<HASH_LEN>() {
        Some((hash, bytes)) => (Some(hash), bytes),
        None => (None, value),
    }
}

/// One stored entry as a scan returns it: its index (parsed from the key), its leaf hash and
/// its bytes, borrowed from the one stored value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredEntry {
    /// The entry's index, or `None` if its key is not a well-formed entry key.
    pub index: Option<u64>,
    value: Vec<u8>,
}

impl StoredEntry {
    /// The entry stored under key `k` with value `value`.
    fn from_stored((k, value): KeyValue) -> StoredEntry {
        StoredEntry {
            index: parse_decimal_key(&k, ENTRY_PREFIX),
            value,
        }
    }

    /// The leaf hash stored with the entry (`None` if the stored value is too short to hold
    /// one: the store was damaged).
    pub fn leaf_hash(&self) -> Option<&Hash> {
        split_entry_value(&self.value).0
    }

    /// The entry's bytes, owned.
    pub fn into_bytes(mut self) -> Vec<u8> {
        if self.value.len() >= HASH_LEN {
            self.value.drain(..HASH_LEN);
        }
        self.value
    }
}

/// What [`Db::audit_entry_visit`] calls with each stored entry: its index (`None` for a
/// malformed key), the leaf hash stored with it (`None` if the value is too short to hold one)
/// and its bytes; returns whether to go on.
pub type EntryVisitor<'a> = dyn FnMut(Option<u64>, Option<&Hash>, &[u8]) -> bool + 'a;

/// Writes that append to the audit log, built by the writer and applied in one batch.
#[derive(Debug, Default)]
pub struct AuditWrites(pub WriteBatch);

impl AuditWrites {
    /// Adds an entry (stored with its leaf hash) and its passport index.
    pub fn entry(&mut self, index: u64, leaf: &Hash, bytes: &[u8], passport: Option<&PassportId>) {
        self.0.put(entry_key(index), entry_value(leaf, bytes));
        if let Some(p) = passport {
            self.0.put(passport_key(p, index), Vec::new());
        }
    }

    /// Adds a tree node. Only levels from [`LOWEST_STORED_LEVEL`] up are written: leaf hashes
    /// are stored with their entries ([`AuditWrites::entry`]) and levels in between are
    /// recomputed from them, so a call for a lower level adds nothing.
    pub fn node(&mut self, level: u8, index: u64, hash: &Hash) {
        if level >= LOWEST_STORED_LEVEL {
            self.0.put(node_key(level, index), hash.to_vec());
        }
    }

    /// Adds a signed checkpoint for the tree of `size`.
    pub fn checkpoint(&mut self, size: u64, text: &str) {
        self.0.put(checkpoint_key(size), text.as_bytes().to_vec());
    }

    /// Records the writer's state.
    pub fn state(&mut self, state: &AuditState) {
        self.0.put(AUDIT_HEAD.to_vec(), encode(state));
    }
}

/// Reads tree nodes for proofs from the store, each stored value at most once: the leaf
/// hashes of a block of 8 entries are read in one scan and kept, and every node looked up is
/// remembered. For one proof or one batch of proofs; not shared between threads.
#[derive(Debug)]
pub struct AuditNodes<'a> {
    db: &'a Db,
    /// Leaf hashes of 8-leaf blocks read so far, by block number: the contiguous run of
    /// stored leaves from the block's start (shorter at the log's end).
    blocks: RefCell<HashMap<u64, Vec<Hash>>>,
    /// Stored nodes (from [`LOWEST_STORED_LEVEL`] up) read so far.
    stored: RefCell<HashMap<(u8, u64), Option<Hash>>>,
}

impl<'a> AuditNodes<'a> {
    /// A reader with nothing read yet.
    pub fn new(db: &'a Db) -> AuditNodes<'a> {
        AuditNodes {
            db,
            blocks: RefCell::new(HashMap::new()),
            stored: RefCell::new(HashMap::new()),
        }
    }

    /// The hash of the perfect subtree at `level` over leaves `[index << level, (index + 1) <<
    /// level)`, or `None` if it is not in the store.
    pub fn get(&self, level: u8, index: u64) -> Result<Option<Hash>, StoreError> {
        if level >= LOWEST_STORED_LEVEL {
            if let Some(h) = self.stored.borrow().get(&(level, index)) {
                return Ok(*h);
            }
            let h = self
                .db
                .store
                .get(&node_key(level, index))?
                .and_then(|v| Hash::try_from(v.as_slice()).ok());
            self.stored.borrow_mut().insert((level, index), h);
            return Ok(h);
        }
        let width = 1u64 << level;
        let Some(first_leaf) = index.checked_mul(width) else {
            return Ok(None);
        };
        let block = first_leaf / LEAF_BLOCK;
        if !self.blocks.borrow().contains_key(&block) {
            let leaves = self.db.audit_leaf_block(block)?;
            self.blocks.borrow_mut().insert(block, leaves);
        }
        let blocks = self.blocks.borrow();
        let Some(leaves) = blocks.get(&block) else {
            return Ok(None);
        };
        // Both bounds are below LEAF_BLOCK (8), so the casts cannot truncate.
        let start = (first_leaf % LEAF_BLOCK) as usize;
        let end = start + width as usize;
        Ok(leaves.get(start..end).map(|l| match l {
            [one] => *one,
            many => root_from_leaves(many),
        }))
    }

    /// Like [`AuditNodes::get`], in the shape `throughgate_protocol::merkle`'s proof builders
    /// take: a failed read or a level above 255 is a missing node.
    pub fn lookup(&self, level: u32, index: u64) -> Option<Hash> {
        let level = u8::try_from(level).ok()?;
        self.get(level, index).ok().flatten()
    }
}

/// A scan of one key space in key order from a start key, reading `page` pairs at a time, so
/// a whole log streams through without being held in memory.
struct Paged<'a> {
    db: &'a Db,
    prefix: &'static [u8],
    /// Where the next page starts; `None` once the key space is exhausted (or a read failed).
    next: Option<Vec<u8>>,
    /// The first key not to return: the scan ends there.
    until: Option<Vec<u8>>,
    page: usize,
    buf: std::vec::IntoIter<KeyValue>,
}

impl<'a> Paged<'a> {
    fn new(db: &'a Db, prefix: &'static [u8], start: Vec<u8>, page: usize) -> Paged<'a> {
        Paged {
            db,
            prefix,
            next: Some(start),
            until: None,
            page: page.max(1),
            buf: Vec::new().into_iter(),
        }
    }

    /// A scan of the keys `key_of(i)` under `prefix` for indexes `i` from `start` (see
    /// [`scan_start`]) up to, not including, `end` (or to the end of the key space).
    fn indexed(
        db: &'a Db,
        prefix: &'static [u8],
        key_of: fn(u64) -> Vec<u8>,
        (start, end): (u64, Option<u64>),
        page: usize,
    ) -> Paged<'a> {
        let mut scan = Paged::new(db, prefix, scan_start(prefix, start, key_of), page);
        scan.until = end.map(key_of);
        scan
    }
}

impl Iterator for Paged<'_> {
    type Item = Result<KeyValue, StoreError>;

    fn next(&mut self) -> Option<Self::Item> {
        loop {
            if let Some(kv) = self.buf.next() {
                if self.until.as_ref().is_some_and(|u| kv.0 >= *u) {
                    self.next = None;
                    self.buf = Vec::new().into_iter();
                    return None;
                }
                return Some(Ok(kv));
            }
            let from = self.next.take()?;
            let batch = match self.db.store.scan(self.prefix, Some(&from), self.page) {
                Ok(b) => b,
                Err(e) => return Some(Err(e)),
            };
            if batch.len() >= self.page {
                if let Some((k, _)) = batch.last() {
                    // The smallest key after the last one read.
                    let mut after = Vec::with_capacity(k.len() + 1);
                    after.extend_from_slice(k);
                    after.push(0);
                    self.next = Some(after);
                }
            }
            if batch.is_empty() {
                return None;
            }
            self.buf = batch.into_iter();
        }
    }
}

impl Db {
    /// The audit writer's state.
    pub fn audit_state(&self) -> Result<Option<AuditState>, StoreError> {
        self.get_decoded("audit state", AUDIT_HEAD)
    }

    /// One entry's bytes (empty if retention redacted it).
    pub fn audit_entry(&self, index: u64) -> Result<Option<Vec<u8>>, StoreError> {
        Ok(self.store.get(&entry_key(index))?.map(|v| {
            StoredEntry {
                index: Some(index),
                value: v,
            }
            .into_bytes()
        }))
    }

    /// Stored entries in key order from `start`, at most `limit`, each with its index, leaf
    /// hash and bytes, owned (for pages handed on; [`Db::audit_entry_visit`] reads without
    /// copying).
    pub fn audit_entry_page(
        &self,
        start: u64,
        limit: usize,
    ) -> Result<Vec<StoredEntry>, StoreError> {
        Ok(self
            .store
            .scan(ENTRY_PREFIX, Some(&entry_key(start)), limit)?
            .into_iter()
            .map(StoredEntry::from_stored)
            .collect())
    }

    /// Calls `visit` with every stored entry from `start` up to (not including) `end`, or to
    /// the end of the log, in key order, borrowing its stored leaf hash and bytes (no copy):
    /// what a verifier reads, in one pass. Keys that are not well-formed entry keys come in
    /// their key order too, with no index (a pass from 0 also meets those sorting before entry
    /// 0). Stops early when `visit` returns `false`.
    pub fn audit_entry_visit(
        &self,
        start: u64,
        end: Option<u64>,
        visit: &mut EntryVisitor<'_>,
    ) -> Result<(), StoreError> {
        let until = end.map(entry_key);
        self.store.visit(
            ENTRY_PREFIX,
            Some(&scan_start(ENTRY_PREFIX, start, entry_key)),
            &mut |k, v| {
                if until.as_deref().is_some_and(|u| k >= u) {
                    return false;
                }
                let (leaf, bytes) = split_entry_value(v);
                visit(parse_decimal_key(k, ENTRY_PREFIX), leaf, bytes)
            },
        )
    }

    /// Entries in index order from `start`, at most `limit`, as (index, bytes). Entries whose
    /// key does not parse are returned with `u64::MAX` so a verifier can report them.
    pub fn audit_entries(
        &self,
        start: u64,
        limit: usize,
    ) -> Result<Vec<(u64, Vec<u8>)>, StoreError> {
        Ok(self
            .audit_entry_page(start, limit)?
            .into_iter()
            .map(|e| (e.index.unwrap_or(u64::MAX), e.into_bytes()))
            .collect())
    }

    /// The leaf hashes of block `block` (leaves `8 * block` onwards): the contiguous run of
    /// stored entries from the block's start that carry a hash, at most 8.
    fn audit_leaf_block(&self, block: u64) -> Result<Vec<Hash>, StoreError> {
        let Some(first) = block.checked_mul(LEAF_BLOCK) else {
            return Ok(Vec::new());
        };
        let mut leaves = Vec::with_capacity(LEAF_BLOCK as usize);
        let mut expected = first;
        self.audit_entry_visit(
            first,
            first.checked_add(LEAF_BLOCK),
            &mut |index, leaf, _| match (index, leaf) {
                (Some(i), Some(h)) if i == expected => {
                    leaves.push(*h);
                    expected = expected.saturating_add(1);
                    true
                }
                _ => false,
            },
        )?;
        Ok(leaves)
    }

    /// A tree node's hash (level 0 is a leaf hash). For many lookups, use one [`AuditNodes`].
    pub fn audit_node(&self, level: u8, index: u64) -> Result<Option<Hash>, StoreError> {
        AuditNodes::new(self).get(level, index)
    }

    /// The signed checkpoint for the tree of `size`, if one was made.
    pub fn audit_checkpoint(&self, size: u64) -> Result<Option<String>, StoreError> {
        Ok(self
            .store
            .get(&checkpoint_key(size))?
            .map(|v| String::from_utf8_lossy(&v).into_owned()))
    }

    /// Every stored checkpoint (size, text), oldest first, from `start`, at most `limit`.
    /// Checkpoints whose key does not parse are returned with size `u64::MAX`.
    pub fn audit_checkpoints(
        &self,
        start: u64,
        limit: usize,
    ) -> Result<Vec<(u64, String)>, StoreError> {
        let from = checkpoint_key(start);
        Ok(self
            .store
            .scan(CHECKPOINT_PREFIX, Some(&from), limit)?
            .into_iter()
            .map(|(k, v)| {
                (
                    parse_decimal_key(&k, CHECKPOINT_PREFIX).unwrap_or(u64::MAX),
                    String::from_utf8(v)
                        .unwrap_or_else(|e| String::from_utf8_lossy(e.as_bytes()).into_owned()),
                )
            })
            .collect())
    }

    /// Every stored checkpoint from size `start` up to (not including) size `end`, or to the
    /// last, streamed in key order (pages of `page`), as (size, text bytes); the size is `None`
    /// if the key is not a well-formed checkpoint key.
    pub fn audit_checkpoint_scan(
        &self,
        start: u64,
        end: Option<u64>,
        page: usize,
    ) -> impl Iterator<Item = Result<(Option<u64>, Vec<u8>), StoreError>> + '_ {
        Paged::indexed(self, CHECKPOINT_PREFIX, checkpoint_key, (start, end), page)
            .map(|kv| kv.map(|(k, v)| (parse_decimal_key(&k, CHECKPOINT_PREFIX), v)))
    }

    /// How many checkpoints are stored.
    pub fn audit_checkpoint_count(&self) -> Result<u64, StoreError> {
        self.store.count(CHECKPOINT_PREFIX)
    }

    /// The newest checkpoint (size, text).
    pub fn audit_latest_checkpoint(&self) -> Result<Option<(u64, String)>, StoreError> {
        Ok(self.store.last(CHECKPOINT_PREFIX)?.map(|(k, v)| {
            (
                parse_decimal_key(&k, CHECKPOINT_PREFIX).unwrap_or(0),
                String::from_utf8_lossy(&v).into_owned(),
            )
        }))
    }

    /// Indexes of the entries about `passport`, oldest first, at most `limit`.
    pub fn audit_entries_about(
        &self,
        passport: &PassportId,
        limit: usize,
    ) -> Result<Vec<u64>, StoreError> {
        let prefix = passport_prefix(passport);
        Ok(self
            .store
            .scan(&prefix, None, limit)?
            .into_iter()
            .filter_map(|(k, _)| parse_be_key(&k, &prefix))
            .collect())
    }

    /// As a witness: the newest checkpoint of `peer`'s log we cosigned (size, text).
    pub fn witnessed(&self, peer: &AgencyId) -> Result<Option<(u64, String)>, StoreError> {
        self.get_decoded("witnessed checkpoint", &key(&["aud/w/", peer.as_str()]))
    }

    /// As a witness: replaces `peer`'s newest cosigned checkpoint, and remembers its root
    /// among every size of `peer`'s log cosigned here, then flushes.
    pub fn put_witnessed(&self, peer: &AgencyId, size: u64, text: &str) -> Result<(), StoreError> {
        let mut b = WriteBatch::new();
        b.put(
            key(&["aud/w/", peer.as_str()]),
            encode(&(size, text.to_owned())),
        );
        if let Ok(signed) =
            throughgate_protocol::checkpoint::SignedCheckpoint::parse(text.as_bytes())
        {
            b.put(
                witnessed_root_key(peer, size),
                signed.checkpoint().root_hash.to_vec(),
            );
        }
        self.store.apply(b)?;
        self.store.flush()
    }

    /// As a witness: the root of the checkpoint of `peer`'s log of `size` cosigned here, if
    /// one was (since the baseline was last reset).
    pub fn witnessed_root(&self, peer: &AgencyId, size: u64) -> Result<Option<Hash>, StoreError> {
        Ok(self
            .store
            .get(&witnessed_root_key(peer, size))?
            .and_then(|v| <Hash>::try_from(v.as_slice()).ok()))
    }

    /// As a log: the newest of our checkpoints cosigned by any witness, and the newest cosigned
    /// by at least the manifest's witness threshold, each as (size, signed note with every
    /// cosignature line collected for that size).
    pub fn cosigned_notes(&self) -> Result<(Option<SizedNote>, Option<SizedNote>), StoreError> {
        Ok((
            self.get_decoded("cosigned checkpoint", b"aud/cn")?,
            self.get_decoded("quorum checkpoint", b"aud/cq")?,
        ))
    }

    /// As a log: records the newest cosigned note (`quorum`: also the newest with a quorum),
    /// unless a newer one is recorded already; flushes.
    pub fn put_cosigned_note(&self, size: u64, note: &str, quorum: bool) -> Result<(), StoreError> {
        let (any, q) = self.cosigned_notes()?;
        let mut b = WriteBatch::new();
        let value = encode(&(size, note.to_owned()));
        if any.as_ref().is_none_or(|(s, _)| *s <= size) {
            b.put(b"aud/cn".to_vec(), value.clone());
        }
        if quorum && q.as_ref().is_none_or(|(s, _)| *s <= size) {
            b.put(b"aud/cq".to_vec(), value);
        }
        self.store.apply(b)?;
        self.store.flush()
    }

    /// As a log: records `witness`'s cosignature line on our checkpoint of `size`.
    pub fn put_cosignature(
        &self,
        witness: &AgencyId,
        size: u64,
        line: &str,
    ) -> Result<(), StoreError> {
        let mut b = WriteBatch::new();
        b.put(
            key(&["aud/cs/", witness.as_str()]),
            encode(&(size, line.to_owned())),
        );
        self.store.apply(b)?;
        self.store.flush()
    }

    /// As a log: every witness's newest cosignature on our checkpoints (witness, size, line).
    pub fn cosignatures(&self) -> Result<Vec<(AgencyId, u64, String)>, StoreError> {
        let mut out = Vec::new();
        for (k, v) in self.store.scan(b"aud/cs/", None, usize::MAX)? {
            let name = String::from_utf8_lossy(k.get(7..).unwrap_or_default()).into_owned();
            let (size, line): (u64, String) = decode("cosignature", &k, &v)?;
            if let Ok(a) = AgencyId::new(name) {
                out.push((a, size, line));
            }
        }
        Ok(out)
    }

    /// All raw audit keys and values (for tests that tamper with a stopped node's log).
    pub fn audit_raw(&self, prefix: &[u8]) -> Result<Vec<KeyValue>, StoreError> {
        self.store.scan(prefix, None, usize::MAX)
    }
}

impl Db {
    /// Where retention stops: the end of the run of entries from `from` (below `size`) logged
    /// before `cutoff`, i.e. the first index that is missing, does not decode (an entry already
    /// redacted does not) or was logged at or after `cutoff`. One streamed pass, no copies.
    pub fn audit_entries_before(
        &self,
        from: u64,
        size: u64,
        cutoff: throughgate_protocol::time::Timestamp,
    ) -> Result<u64, StoreError> {
        let mut end = from;
        self.audit_entry_visit(from, Some(size), &mut |index, _, bytes| {
            // Keys that are not entry keys are not entries: passed over.
            let Some(index) = index else { return true };
            let older = index == end
                && throughgate_protocol::audit::AuditEntry::from_bytes(bytes)
                    .is_ok_and(|e| e.at < cutoff);
            if older {
                end = end.saturating_add(1);
            }
            older
        })?;
        Ok(end)
    }

    /// Redacts entries `from..to` (content replaced by nothing, passport index removed, a
    /// redaction marker kept); their leaf hashes stay so the tree still verifies. Redaction
    /// entries themselves are kept whole: they are what accounts for the redacted ones.
    /// Flushes.
    pub fn redact_audit_entries(
        &self,
        from: u64,
        to: u64,
        at: throughgate_protocol::time::Timestamp,
    ) -> Result<u64, StoreError> {
        let mut b = WriteBatch::new();
        let mut n = 0;
        // One streamed pass over the range rather than a read per index.
        self.audit_entry_visit(from, Some(to), &mut |index, leaf, bytes| {
            // A key that is not an entry key, or a damaged value without a leaf hash to keep,
            // is left for the verifier to report; an empty entry is already redacted.
            let (Some(index), Some(leaf)) = (index, leaf) else {
                return true;
            };
            if bytes.is_empty() {
                return true;
            }
            if let Ok(entry) = throughgate_protocol::audit::AuditEntry::from_bytes(bytes) {
                if matches!(
                    entry.event,
                    throughgate_protocol::audit::AuditEvent::Redaction { .. }
                ) {
                    return true;
                }
                if let Some(p) = entry.event.passport() {
                    b.delete(passport_key(p, index));
                }
            }
            b.put(entry_key(index), leaf.to_vec());
            b.put(redaction_key(index), at.0.to_be_bytes().to_vec());
            n += 1;
            true
        })?;
        self.store.apply(b)?;
        self.store.flush()?;
        Ok(n)
    }

    /// Whether entry `index` was redacted by retention.
    pub fn audit_redacted(&self, index: u64) -> Result<bool, StoreError> {
        Ok(self.store.get(&redaction_key(index))?.is_some())
    }

    /// Indexes of redacted entries from `start` on, streamed in order (pages of `page`).
    /// Markers whose key does not parse mark nothing and are skipped.
    pub fn audit_redaction_scan(
        &self,
        start: u64,
        page: usize,
    ) -> impl Iterator<Item = Result<u64, StoreError>> + '_ {
        Paged::indexed(self, REDACTION_PREFIX, redaction_key, (start, None), page).filter_map(
            |kv| match kv {
                Ok((k, _)) => parse_be_key(&k, REDACTION_PREFIX).map(Ok),
                Err(e) => Some(Err(e)),
            },
        )
    }

    /// The first entry not yet redacted (entries are redacted oldest first).
    pub fn audit_first_unredacted(&self) -> Result<u64, StoreError> {
        Ok(self
            .store
            .last(REDACTION_PREFIX)?
            .and_then(|(k, _)| parse_be_key(&k, REDACTION_PREFIX))
            .map_or(0, |i| i.saturating_add(1)))
    }
}

impl Db {
    /// As a witness: the alarm raised about `peer`'s log, if one stands.
    pub fn witness_alarm(&self, peer: &AgencyId) -> Result<Option<String>, StoreError> {
        Ok(self
            .store
            .get(&key(&["aud/wa/", peer.as_str()]))?
            .map(|v| String::from_utf8_lossy(&v).into_owned()))
    }

    /// As a witness: records that `peer`'s log contradicted what was witnessed; flushes.
    pub fn put_witness_alarm(&self, peer: &AgencyId, detail: &str) -> Result<(), StoreError> {
        let mut b = WriteBatch::new();
        b.put(key(&["aud/wa/", peer.as_str()]), detail.as_bytes().to_vec());
        self.store.apply(b)?;
        self.store.flush()
    }

    /// As a witness: forgets what was witnessed of `peer`'s log and any alarm about it, so its
    /// next checkpoint is taken as a new baseline; flushes.
    pub fn reset_witnessed(&self, peer: &AgencyId) -> Result<(), StoreError> {
        let mut b = WriteBatch::new();
        b.delete(key(&["aud/w/", peer.as_str()]));
        b.delete(key(&["aud/wa/", peer.as_str()]));
        for (k, _) in self
            .store
            .scan(&key(&["aud/wh/", peer.as_str(), "/"]), None, usize::MAX)?
        {
            b.delete(k);
        }
        self.store.apply(b)?;
        self.store.flush()
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use throughgate_protocol::audit::{AuditEntry, AuditEvent};
    use throughgate_protocol::ids::PersonId;
    use throughgate_protocol::merkle::leaf_hash;
    use throughgate_protocol::time::Timestamp;

    use super::*;
    use crate::store::MemoryStore;

    fn entry_text(db: &Db, i: u64) -> String {
        let bytes = db.audit_entry(i).unwrap().unwrap();
        match AuditEntry::from_bytes(&bytes).unwrap().event {
            AuditEvent::AuditAccess { action, .. } => action,
            other => panic!("{other:?}"),
        }
    }

    fn memory_db() -> Db {
        Db::new(Arc::new(MemoryStore::new()))
    }

    #[test]
    fn decimal_keys_round_trip_and_match_the_text_format() {
        for i in [0, 1, 9, 10, 12_345, 999_999_999_999, u64::MAX - 1, u64::MAX] {
            let digits = decimal20(i);
            assert_eq!(digits.as_slice(), format!("{i:020}").as_bytes());
            assert_eq!(parse_decimal20(&digits), Some(i));
            let k = entry_key(i);
            assert_eq!(k, format!("aud/e/{i:020}").into_bytes());
            assert_eq!(parse_decimal_key(&k, ENTRY_PREFIX), Some(i));
            let c = checkpoint_key(i);
            assert_eq!(c, format!("aud/c/{i:020}").into_bytes());
            assert_eq!(parse_decimal_key(&c, CHECKPOINT_PREFIX), Some(i));
        }
        // Key order is index order.
        assert!(entry_key(9) < entry_key(10));
        assert!(entry_key(255) < entry_key(256));
    }

    #[test]
    fn malformed_decimal_keys_do_not_parse() {
        for bad in [
            &b""[..],
            b"1",
            b"0000000000000000001",   // 19 digits
            b"000000000000000000001", // 21 digits
            b"0000000000000000000x",
            b"000000000000000000-1",
            b"99999999999999999999", // above u64::MAX
            b"18446744073709551616", // u64::MAX + 1
        ] {
            assert_eq!(parse_decimal20(bad), None, "{bad:?}");
        }
        assert_eq!(
            parse_decimal_key(b"aud/x/00000000000000000001", ENTRY_PREFIX),
            None
        );
    }

    #[test]
    fn big_endian_keys_round_trip_and_sort_by_index() {
        for i in [0, 1, 255, 256, 1 << 40, u64::MAX] {
            let k = redaction_key(i);
            assert_eq!(parse_be_key(&k, REDACTION_PREFIX), Some(i));
            let p = PassportId::random();
            let pk = passport_key(&p, i);
            assert_eq!(parse_be_key(&pk, &passport_prefix(&p)), Some(i));
        }
        assert!(redaction_key(255) < redaction_key(256));
        assert!(node_key(4, 255) < node_key(4, 256));
        assert!(node_key(4, u64::MAX) < node_key(5, 0));
        assert_eq!(parse_be_key(b"aud/x/short", REDACTION_PREFIX), None);
        assert_eq!(parse_be_key(b"aud/x/123456789", REDACTION_PREFIX), None);
    }

    #[test]
    fn entry_values_carry_the_leaf_hash_then_the_bytes() {
        let leaf = leaf_hash(b"entry");
        let v = entry_value(&leaf, b"entry");
        assert_eq!(split_entry_value(&v), (Some(&leaf), &b"entry"[..]));
        // A redacted entry: the hash alone.
        assert_eq!(split_entry_value(&leaf), (Some(&leaf), &b""[..]));
        // A damaged value too short for a hash.
        assert_eq!(split_entry_value(b"short"), (None, &b"short"[..]));
        let e = StoredEntry {
            index: Some(3),
            value: v,
        };
        assert_eq!(e.leaf_hash(), Some(&leaf));
        assert_eq!(e.into_bytes(), b"entry".to_vec());
    }

    #[test]
    fn retention_stops_at_the_first_entry_that_is_recent_missing_or_redacted() {
        let db = memory_db();
        // Entry i is logged at time i.
        write_entries(&db, 13, &PassportId::random());
        assert_eq!(db.audit_entries_before(0, 13, Timestamp(5)).unwrap(), 5);
        assert_eq!(db.audit_entries_before(3, 13, Timestamp(5)).unwrap(), 5);
        assert_eq!(db.audit_entries_before(6, 13, Timestamp(5)).unwrap(), 6);
        // Bounded by the log's size.
        assert_eq!(db.audit_entries_before(0, 13, Timestamp(100)).unwrap(), 13);
        assert_eq!(db.audit_entries_before(0, 7, Timestamp(100)).unwrap(), 7);
        // A redacted entry no longer decodes: a run never starts at or crosses one.
        db.redact_audit_entries(0, 2, Timestamp(1_000)).unwrap();
        assert_eq!(db.audit_entries_before(0, 13, Timestamp(100)).unwrap(), 0);
        assert_eq!(db.audit_entries_before(2, 13, Timestamp(100)).unwrap(), 13);
        // A missing entry ends the run.
        let mut b = WriteBatch::new();
        b.delete(entry_key(9));
        db.apply(b).unwrap();
        assert_eq!(db.audit_entries_before(2, 13, Timestamp(100)).unwrap(), 9);
    }

    /// Writes `n` entries (every complete node through `AuditWrites`), returning their leaf
    /// hashes.
    fn write_entries(db: &Db, n: u64, passport: &PassportId) -> Vec<Hash> {
        let mut w = AuditWrites::default();
        let mut leaves = Vec::new();
        for i in 0..n {
            let about = (i % 3 == 0).then_some(passport);
            let entry = AuditEntry {
                at: Timestamp(i),
                node: AgencyId::new("dwp").unwrap(),
                event: AuditEvent::AuditAccess {
                    agency: AgencyId::new("dwp").unwrap(),
                    dpo: PersonId::new("dpo-1").unwrap(),
                    passport_id: about.cloned(),
                    action: format!("entry number {i}"),
                },
            };
            let bytes = entry.to_bytes();
            let leaf = leaf_hash(&bytes);
            leaves.push(leaf);
            w.entry(i, &leaf, &bytes, about);
        }
        for level in 1..20u8 {
            let width = 1usize << level;
            for (index, chunk) in (0u64..).zip(leaves.chunks_exact(width)) {
                w.node(level, index, &root_from_leaves(chunk));
            }
        }
        db.apply(w.0).unwrap();
        leaves
    }

    #[test]
    fn every_complete_node_reads_back_whether_stored_or_recomputed() {
        let db = memory_db();
        let p = PassportId::random();
        let n = 77u64;
        let leaves = write_entries(&db, n, &p);
        let nodes = AuditNodes::new(&db);
        for level in 0..8u8 {
            let width = 1u64 << level;
            for index in 0..=(n / width) {
                let complete = (index + 1) * width <= n;
                let want = complete.then(|| {
                    root_from_leaves(
                        &leaves[(index * width) as usize..((index + 1) * width) as usize],
                    )
                });
                let got = nodes.get(level, index).unwrap();
                if complete {
                    assert_eq!(got, want, "level {level} index {index}");
                    assert_eq!(db.audit_node(level, index).unwrap(), want);
                } else if level >= LOWEST_STORED_LEVEL {
                    assert_eq!(got, None, "level {level} index {index}");
                }
            }
        }
        // Only levels from LOWEST_STORED_LEVEL up have keys: 77 leaves close 4 nodes at level
        // 4, 2 at 5 and 1 at 6.
        assert_eq!(db.store.count(NODE_PREFIX).unwrap(), 4 + 2 + 1);
        assert_eq!(db.audit_entries_about(&p, usize::MAX).unwrap().len(), 26);
        assert_eq!(
            db.audit_entries_about(&p, usize::MAX).unwrap()[..3],
            [0, 3, 6]
        );
    }

    #[test]
    fn entries_read_back_without_their_hash_and_are_visited_in_order() {
        let db = memory_db();
        let p = PassportId::random();
        let leaves = write_entries(&db, 20, &p);
        assert_eq!(entry_text(&db, 7), "entry number 7");
        assert_eq!(db.audit_entry(20).unwrap(), None);
        let all = db.audit_entries(0, usize::MAX).unwrap();
        assert_eq!(all.len(), 20);
        assert_eq!(all[19].0, 19);
        assert_eq!(all[19].1, db.audit_entry(19).unwrap().unwrap());
        // What a visit from `start` to `end` meets: (index, leaf hash, bytes).
        type Met = (Option<u64>, Option<Hash>, Vec<u8>);
        let visit = |start: u64, end: Option<u64>| -> Vec<Met> {
            let mut met = Vec::new();
            db.audit_entry_visit(start, end, &mut |index, leaf, bytes| {
                met.push((index, leaf.copied(), bytes.to_vec()));
                true
            })
            .unwrap();
            met
        };
        let met = visit(5, None);
        assert_eq!(met.len(), 15);
        for (i, (index, leaf, bytes)) in (5u64..).zip(&met) {
            assert_eq!(*index, Some(i));
            assert_eq!(leaf.as_ref(), Some(&leaves[i as usize]));
            assert_eq!(*bytes, db.audit_entry(i).unwrap().unwrap());
            assert_eq!(leaf_hash(bytes), leaves[i as usize]);
        }
        // A bounded visit stops before `end`.
        let indexes: Vec<Option<u64>> = visit(3, Some(13)).into_iter().map(|m| m.0).collect();
        assert_eq!(indexes, (3..13).map(Some).collect::<Vec<_>>());
        // A malformed key is met as such, and the visit moves past it.
        let mut b = WriteBatch::new();
        b.put(b"aud/e/00000000000000000005x".to_vec(), b"junk".to_vec());
        db.apply(b).unwrap();
        let met = visit(0, None);
        assert_eq!(met.len(), 21);
        assert_eq!(met[6].0, None);
        assert_eq!(met[7].0, Some(6));
        // Stopping early is honoured.
        let mut n = 0;
        db.audit_entry_visit(0, None, &mut |_, _, _| {
            n += 1;
            n < 4
        })
        .unwrap();
        assert_eq!(n, 4);
    }

    #[test]
    fn checkpoints_and_redactions_stream_in_order() {
        let db = memory_db();
        let mut w = AuditWrites::default();
        for size in [1u64, 9, 10, 11, 100] {
            w.checkpoint(size, &format!("checkpoint {size}"));
        }
        db.apply(w.0).unwrap();
        for page in [1, 2, 10] {
            let cps: Vec<(Option<u64>, Vec<u8>)> = db
                .audit_checkpoint_scan(0, None, page)
                .collect::<Result<_, _>>()
                .unwrap();
            let sizes: Vec<Option<u64>> = cps.iter().map(|c| c.0).collect();
            assert_eq!(sizes, [Some(1), Some(9), Some(10), Some(11), Some(100)]);
            assert_eq!(cps[4].1, b"checkpoint 100");
        }
        assert_eq!(db.audit_checkpoint_count().unwrap(), 5);
        assert_eq!(
            db.audit_checkpoints(10, 2).unwrap()[1],
            (11, "checkpoint 11".into())
        );
        assert_eq!(
            db.audit_latest_checkpoint().unwrap(),
            Some((100, "checkpoint 100".into()))
        );

        let p = PassportId::random();
        let leaves = write_entries(&db, 13, &p);
        let at = Timestamp(1_000);
        assert_eq!(db.redact_audit_entries(0, 10, at).unwrap(), 10);
        // Already redacted entries are not counted again.
        assert_eq!(db.redact_audit_entries(0, 10, at).unwrap(), 0);
        assert_eq!(db.audit_first_unredacted().unwrap(), 10);
        assert!(db.audit_redacted(9).unwrap());
        assert!(!db.audit_redacted(10).unwrap());
        assert_eq!(db.audit_entry(3).unwrap().unwrap(), b"");
        // Redaction drops the passport index of redacted entries only.
        assert_eq!(db.audit_entries_about(&p, usize::MAX).unwrap(), [12]);
        let marks: Vec<u64> = db
            .audit_redaction_scan(4, 3)
            .collect::<Result<_, _>>()
            .unwrap();
        assert_eq!(marks, (4..10).collect::<Vec<_>>());
        // The leaf hashes stay, so every node still reads back.
        let nodes = AuditNodes::new(&db);
        assert_eq!(nodes.get(0, 3).unwrap(), Some(leaves[3]));
        assert_eq!(
            nodes.get(3, 0).unwrap(),
            Some(root_from_leaves(&leaves[..8]))
        );
        assert_eq!(
            nodes.get(2, 2).unwrap(),
            Some(root_from_leaves(&leaves[8..12]))
        );
    }
}
