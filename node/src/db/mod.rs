//! Typed access to the node's data over the [`Store`] trait: the key layout and the value
//! encodings live here and nowhere else.
//!
//! Key spaces (keys are UTF-8 text except where a big-endian (BE) integer is shown; `\0`
//! separates a subject from a record id):
//!
//! | prefix | value |
//! |---|---|
//! | `rec/{subject}\0{record_id}` | a [`Record`](throughgate_protocol::record::Record) |
//! | `sub/{subject}` | empty: the subject is known here |
//! | `con/{consent_id}` | a [`StoredConsent`] |
//! | `cpp/{passport_id}/{consent_id}` | empty: index of consents by passport |
//! | `lnc/{consent_id}` | at a holder, the consent's [`Linkage`]: the one local subject it may disclose about |
//! | `lnp/{passport_id}` | at a holder, the local subject the passport id names (fixed by the first consent that linked) |
//! | `csb/{consent_id}\0{agency}` | the id of the consent recorded by `agency` that declared it supersedes this one |
//! | `crp/{consent_id}\0{agency}` | a verified revocation by `agency` that arrived before its consent |
//! | `rpl/{query_id}` | expiry of a seen query (replay cache) |
//! | `stf/{person_id}` | a [`StoredStaff`] |
//! | `stk/{public key hex}` | the person id holding that key |
//! | `man` | the trusted manifest envelope |
//! | `obx/{seq:020}` | an [`OutboxItem`] |
//! | `obl/{agency}` | a replica's claim on the deliveries to that agency: `{process}\0{until}` |
//! | `dlv/{consent_id}/{agency}/{grant,revoke}` | a delivery's state |
//! | `aud/e/{index:020}` | an audit entry's leaf hash (32 bytes), then its bytes (the Merkle leaf data; only the hash once redacted) |
//! | `aud/n/{level: 1 byte}{index: u64 BE}` | the hash of a complete subtree, levels 4 and up (leaf hashes live in the entries; levels 1 to 3 are recomputed from them) |
//! | `aud/c/{size:020}` | the signed checkpoint of the tree of that size |
//! | `aud/p/{passport_id}/{index: u64 BE}` | empty: index of entries by passport |
//! | `aud/state` | the audit writer's [`AuditState`] |
//! | `aud/w/{agency}` | as a witness: that agency's newest cosigned checkpoint |
//! | `aud/cs/{agency}` | that witness's newest cosignature on our checkpoints |
//! | `aud/wa/{agency}` | as a witness: the standing alarm about that agency's log |
//! | `aud/x/{index: u64 BE}` | the time entry `index`'s content was redacted by retention |
//! | `crv/{agency}/{public key hex}` | a staff credential that agency withdrew |
//! | `own/{public key hex}` | empty: a key this node has signed with (current or rotated out) |
//! | `rst/pending` | a restore's note (backup time, log sizes), until the first start logs it |
//! | `imp/{import_id}` | an [`ImportJournal`]: an import (or sync) checked in full and being stored in chunks, then for a sync its absent records deleted |

mod allowance;
mod audit;
mod consents;
mod imports;
mod outbox;
mod records;
mod replay;
mod staff;

use std::sync::Arc;

use serde::{de::DeserializeOwned, Serialize};
use throughgate_protocol::cbor;
use throughgate_protocol::envelope::Envelope;

pub use audit::{
    decode_audit_state, AuditNodes, AuditState, AuditWrites, StoredEntry, StoredHash, AUDIT_HEAD,
    LOWEST_STORED_LEVEL,
};
pub use consents::{supersedes, Linkage, StoredConsent};
pub use imports::ImportJournal;
pub use outbox::{OutboxItem, OutboxPayload};
pub use staff::StoredStaff;

use crate::store::{Store, StoreError, WriteBatch};

/// The largest single stored value accepted on read (records, consents, outbox items).
const MAX_VALUE: usize = 8 * 1024 * 1024;

/// Typed view of a node's store.
#[derive(Clone)]
pub struct Db {
    store: Arc<dyn Store>,
    gated: Arc<crate::store::GatedStore>,
    /// Held across each enqueue, so this process's enqueues take turns at the stored counter
    /// (replicas sharing a store are kept apart by the counter's compare-and-set).
    outbox_seq: Arc<std::sync::Mutex<()>>,
    /// This process's random name in claims on shared work (outbox leases).
    instance: Arc<str>,
}

impl std::fmt::Debug for Db {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Db")
    }
}

impl Db {
    /// Wraps a store.
    pub fn new(store: Arc<dyn Store>) -> Db {
        let gated = Arc::new(crate::store::GatedStore::new(store));
        Db {
            store: gated.clone(),
            gated,
            outbox_seq: Arc::new(std::sync::Mutex::new(())),
            instance: format!("{:016x}", rand::random::<u64>()).into(),
        }
    }

    /// Visits every stored pair, in key order, with writes paused: one consistent state of the
    /// whole node, taken while it runs (for backups). Returns the number of pairs.
    pub fn snapshot(
        &self,
        visit: impl FnMut(&[u8], &[u8]) -> Result<(), StoreError>,
    ) -> Result<u64, StoreError> {
        self.gated.snapshot(4096, visit)
    }

    /// The underlying store.
    pub fn store(&self) -> &Arc<dyn Store> {
        &self.store
    }

    /// Makes all writes so far durable.
    pub fn flush(&self) -> Result<(), StoreError> {
        self.store.flush()
    }

    /// Applies a batch atomically.
    pub fn apply(&self, batch: WriteBatch) -> Result<(), StoreError> {
        self.store.apply(batch)
    }

    fn get_decoded<T: DeserializeOwned>(
        &self,
        what: &'static str,
        key: &[u8],
    ) -> Result<Option<T>, StoreError> {
        match self.store.get(key)? {
            Some(v) => decode(what, key, &v).map(Some),
            None => Ok(None),
        }
    }

    /// The trusted manifest envelope, if one has been stored.
    pub fn manifest(&self) -> Result<Option<Envelope>, StoreError> {
        match self.store.get(b"man")? {
            Some(v) => {
                Envelope::from_bytes(&v, MAX_VALUE)
                    .map(Some)
                    .map_err(|e| StoreError::Corrupt {
                        what: "manifest",
                        key: "man".into(),
                        detail: e.to_string(),
                    })
            }
            None => Ok(None),
        }
    }

    /// Stores the trusted manifest envelope, of manifest version `version`, and flushes;
    /// unless the stored one is of a later version (another replica sharing the store adopted
    /// it meanwhile), which is kept. Returns whether `env` was stored (not when other writers
    /// kept changing the stored manifest through every attempt).
    pub fn put_manifest(&self, env: &Envelope, version: u64) -> Result<bool, StoreError> {
        for _ in 0..16 {
            let stored = self.store.get(b"man")?;
            let stored_version = stored
                .as_deref()
                .and_then(|v| Envelope::from_bytes(v, MAX_VALUE).ok())
                .and_then(|e| e.open::<throughgate_protocol::manifest::Manifest>().ok())
                .map(|m| m.version);
            if stored_version.is_some_and(|v| v > version) {
                return Ok(false);
            }
            let mut b = WriteBatch::new();
            b.put(b"man".to_vec(), env.to_bytes());
            if self.store.apply_if(b"man", stored.as_deref(), b)? {
                self.store.flush()?;
                return Ok(true);
            }
        }
        Ok(false)
    }
}

pub(crate) fn encode<T: Serialize>(value: &T) -> Vec<u8> {
    cbor::to_vec(value)
}

pub(crate) fn decode<T: DeserializeOwned>(
    what: &'static str,
    key: &[u8],
    bytes: &[u8],
) -> Result<T, StoreError> {
    cbor::from_slice(what, bytes, MAX_VALUE).map_err(|e| StoreError::Corrupt {
        what,
        key: String::from_utf8_lossy(key).chars().take(120).collect(),
        detail: e.to_string(),
    })
}

/// Builds a text key from parts.
pub(crate) fn key(parts: &[&str]) -> Vec<u8> {
    parts.concat().into_bytes()
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use std::sync::Arc;

    use throughgate_protocol::envelope::SignerRole;
    use throughgate_protocol::keys::SecretKey;
    use throughgate_protocol::manifest::Manifest;
    use throughgate_protocol::time::Timestamp;

    use super::*;
    use crate::store::MemoryStore;

    fn manifest(version: u64) -> Envelope {
        let m = Manifest {
            federation: "test".into(),
            version,
            issued_at: Timestamp(1),
            expires_at: Timestamp(2),
            members: vec![],
            governance: throughgate_protocol::manifest::Governance {
                keys: vec![],
                threshold: 1,
            },
            witness_threshold: 0,
        };
        Envelope::seal(
            &m,
            &[(SignerRole::Governance, &SecretKey::from_seed(&[1; 32]))],
        )
    }

    #[test]
    fn a_stored_manifest_is_never_replaced_by_an_older_version() {
        let db = Db::new(Arc::new(MemoryStore::new()));
        assert!(db.put_manifest(&manifest(2), 2).unwrap());
        // A replica still on version 1 re-adopting it keeps version 2 stored.
        assert!(!db.put_manifest(&manifest(1), 1).unwrap());
        assert_eq!(
            db.manifest().unwrap().unwrap().to_bytes(),
            manifest(2).to_bytes()
        );
        assert!(db.put_manifest(&manifest(3), 3).unwrap());
        assert_eq!(
            db.manifest().unwrap().unwrap().to_bytes(),
            manifest(3).to_bytes()
        );
    }
}
