//! Storage of the audit log: entries, Merkle tree nodes, checkpoints, the passport index, the
//! writer's state, and witnessing state.

use serde::{Deserialize, Serialize};
use throughgate_protocol::ids::{AgencyId, PassportId};
use throughgate_protocol::merkle::Hash;

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

fn entry_key(index: u64) -> Vec<u8> {
    key(&["aud/e/", &format!("{index:020}")])
}

fn node_key(level: u8, index: u64) -> Vec<u8> {
    key(&["aud/n/", &format!("{level:02}/{index:020}")])
}

fn checkpoint_key(size: u64) -> Vec<u8> {
    key(&["aud/c/", &format!("{size:020}")])
}

fn parse_index(k: &[u8], prefix_len: usize) -> Option<u64> {
    std::str::from_utf8(k.get(prefix_len..)?).ok()?.parse().ok()
}

/// Writes that append to the audit log, built by the writer and applied in one batch.
#[derive(Debug, Default)]
pub struct AuditWrites(pub WriteBatch);

impl AuditWrites {
    /// Adds an entry and its passport index.
    pub fn entry(&mut self, index: u64, bytes: &[u8], passport: Option<&PassportId>) {
        self.0.put(entry_key(index), bytes.to_vec());
        if let Some(p) = passport {
            self.0.put(
                key(&["aud/p/", p.as_str(), "/", &format!("{index:020}")]),
                Vec::new(),
            );
        }
    }

    /// Adds a tree node (level 0 is a leaf hash).
    pub fn node(&mut self, level: u8, index: u64, hash: &Hash) {
        self.0.put(node_key(level, index), hash.to_vec());
    }

    /// Adds a signed checkpoint for the tree of `size`.
    pub fn checkpoint(&mut self, size: u64, text: &str) {
        self.0.put(checkpoint_key(size), text.as_bytes().to_vec());
    }

    /// Records the writer's state.
    pub fn state(&mut self, state: &AuditState) {
        self.0.put(b"aud/state".to_vec(), encode(state));
    }
}

impl Db {
    /// The audit writer's state.
    pub fn audit_state(&self) -> Result<Option<AuditState>, StoreError> {
        self.get_decoded("audit state", b"aud/state")
    }

    /// One entry's bytes.
    pub fn audit_entry(&self, index: u64) -> Result<Option<Vec<u8>>, StoreError> {
        self.store.get(&entry_key(index))
    }

    /// Entries in index order from `start`, at most `limit`, as (index, bytes). Entries whose
    /// key does not parse are returned with `u64::MAX` so a verifier can report them.
    pub fn audit_entries(
        &self,
        start: u64,
        limit: usize,
    ) -> Result<Vec<(u64, Vec<u8>)>, StoreError> {
        let from = entry_key(start);
        Ok(self
            .store
            .scan(b"aud/e/", Some(&from), limit)?
            .into_iter()
            .map(|(k, v)| (parse_index(&k, 6).unwrap_or(u64::MAX), v))
            .collect())
    }

    /// A tree node's hash.
    pub fn audit_node(&self, level: u8, index: u64) -> Result<Option<Hash>, StoreError> {
        Ok(self
            .store
            .get(&node_key(level, index))?
            .and_then(|v| v.as_slice().try_into().ok()))
    }

    /// Leaf hashes in index order from `start`, at most `limit`.
    pub fn audit_leaf_hashes(
        &self,
        start: u64,
        limit: usize,
    ) -> Result<Vec<(u64, Vec<u8>)>, StoreError> {
        let prefix = key(&["aud/n/00/"]);
        let from = node_key(0, start);
        Ok(self
            .store
            .scan(&prefix, Some(&from), limit)?
            .into_iter()
            .map(|(k, v)| (parse_index(&k, prefix.len()).unwrap_or(u64::MAX), v))
            .collect())
    }

    /// The signed checkpoint for the tree of `size`, if one was made.
    pub fn audit_checkpoint(&self, size: u64) -> Result<Option<String>, StoreError> {
        Ok(self
            .store
            .get(&checkpoint_key(size))?
            .map(|v| String::from_utf8_lossy(&v).into_owned()))
    }

    /// Every stored checkpoint (size, text), oldest first, from `start`, at most `limit`.
    pub fn audit_checkpoints(
        &self,
        start: u64,
        limit: usize,
    ) -> Result<Vec<(u64, String)>, StoreError> {
        let from = checkpoint_key(start);
        Ok(self
            .store
            .scan(b"aud/c/", Some(&from), limit)?
            .into_iter()
            .map(|(k, v)| {
                (
                    parse_index(&k, 6).unwrap_or(u64::MAX),
                    String::from_utf8_lossy(&v).into_owned(),
                )
            })
            .collect())
    }

    /// The newest checkpoint (size, text).
    pub fn audit_latest_checkpoint(&self) -> Result<Option<(u64, String)>, StoreError> {
        Ok(self.store.last(b"aud/c/")?.map(|(k, v)| {
            (
                parse_index(&k, 6).unwrap_or(0),
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
        let prefix = key(&["aud/p/", passport.as_str(), "/"]);
        Ok(self
            .store
            .scan(&prefix, None, limit)?
            .into_iter()
            .filter_map(|(k, _)| parse_index(&k, prefix.len()))
            .collect())
    }

    /// As a witness: the newest checkpoint of `peer`'s log we cosigned (size, text).
    pub fn witnessed(&self, peer: &AgencyId) -> Result<Option<(u64, String)>, StoreError> {
        self.get_decoded("witnessed checkpoint", &key(&["aud/w/", peer.as_str()]))
    }

    /// As a witness: replaces `peer`'s newest cosigned checkpoint, then flushes.
    pub fn put_witnessed(&self, peer: &AgencyId, size: u64, text: &str) -> Result<(), StoreError> {
        let mut b = WriteBatch::new();
        b.put(
            key(&["aud/w/", peer.as_str()]),
            encode(&(size, text.to_owned())),
        );
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

fn redaction_key(index: u64) -> Vec<u8> {
    key(&["aud/x/", &format!("{index:020}")])
}

impl Db {
    /// Redacts entries `from..to` (content replaced by nothing, passport index removed, a
    /// redaction marker kept); their leaf hashes stay so the tree still verifies. Flushes.
    pub fn redact_audit_entries(
        &self,
        from: u64,
        to: u64,
        at: throughgate_protocol::time::Timestamp,
    ) -> Result<u64, StoreError> {
        let mut b = WriteBatch::new();
        let mut n = 0;
        for index in from..to {
            let Some(bytes) = self.audit_entry(index)? else {
                continue;
            };
            if bytes.is_empty() {
                continue;
            }
            if let Ok(entry) = throughgate_protocol::audit::AuditEntry::from_bytes(&bytes) {
                if let Some(p) = entry.event.passport() {
                    b.delete(key(&["aud/p/", p.as_str(), "/", &format!("{index:020}")]));
                }
            }
            b.put(entry_key(index), Vec::new());
            b.put(redaction_key(index), at.0.to_be_bytes().to_vec());
            n += 1;
        }
        self.store.apply(b)?;
        self.store.flush()?;
        Ok(n)
    }

    /// Whether entry `index` was redacted by retention.
    pub fn audit_redacted(&self, index: u64) -> Result<bool, StoreError> {
        Ok(self.store.get(&redaction_key(index))?.is_some())
    }

    /// The first entry not yet redacted (entries are redacted oldest first).
    pub fn audit_first_unredacted(&self) -> Result<u64, StoreError> {
        Ok(self
            .store
            .last(b"aud/x/")?
            .and_then(|(k, _)| parse_index(&k, 6))
            .map_or(0, |i| i + 1))
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
        self.store.apply(b)?;
        self.store.flush()
    }
}
