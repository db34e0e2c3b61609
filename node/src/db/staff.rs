use serde::{Deserialize, Serialize};
use throughgate_protocol::credential::Credential;
use throughgate_protocol::envelope::Envelope;
use throughgate_protocol::ids::PersonId;
use throughgate_protocol::keys::PublicKey;
use throughgate_protocol::time::Timestamp;

use super::{decode, encode, key, Db};
use crate::store::{StoreError, WriteBatch};

/// Where [`Db::staff_generation`] is kept.
const STAFF_GENERATION: &[u8] = b"stg";

/// A staff credential as the issuing node keeps it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StoredStaff {
    /// The signed credential.
    pub credential: Envelope,
    /// Its decoded body.
    pub body: Credential,
    /// When it was revoked, if it was.
    pub revoked_at: Option<Timestamp>,
    /// The operator who revoked it (absent in records stored before this was kept).
    #[serde(default)]
    pub revoked_by: Option<throughgate_protocol::ids::PersonId>,
}

impl Db {
    /// Stores a credential (replacing any earlier one for the same person) and flushes.
    pub fn put_staff(&self, staff: &StoredStaff) -> Result<(), StoreError> {
        let mut b = WriteBatch::new();
        let pid = staff.body.person_id.as_str();
        if let Some(old) = self.staff(&staff.body.person_id)? {
            if old.body.public_key != staff.body.public_key {
                b.delete(key(&["stk/", &old.body.public_key.to_hex()]));
            }
        }
        b.put(key(&["stf/", pid]), encode(staff));
        b.put(
            key(&["stk/", &staff.body.public_key.to_hex()]),
            pid.as_bytes().to_vec(),
        );
        // A fresh token in the same write: replicas sharing the store see it change and
        // reload their staff (a counter could be bumped to one value by two replicas at once).
        b.put(
            STAFF_GENERATION.to_vec(),
            rand::random::<[u8; 16]>().to_vec(),
        );
        self.store.apply(b)?;
        self.store.flush()
    }

    /// One member of staff.
    pub fn staff(&self, id: &PersonId) -> Result<Option<StoredStaff>, StoreError> {
        self.get_decoded("staff credential", &key(&["stf/", id.as_str()]))
    }

    /// A token that changes with every staff credential stored (added, re-issued or revoked),
    /// by any replica sharing this store; `None` before the first.
    pub fn staff_generation(&self) -> Result<Option<Vec<u8>>, StoreError> {
        self.store.get(STAFF_GENERATION)
    }

    /// The member of staff holding `public_key`.
    pub fn staff_by_key(&self, public_key: &PublicKey) -> Result<Option<StoredStaff>, StoreError> {
        match self.store.get(&key(&["stk/", &public_key.to_hex()]))? {
            Some(pid) => {
                let pid = String::from_utf8_lossy(&pid).into_owned();
                match PersonId::new(pid) {
                    Ok(id) => self.staff(&id),
                    Err(_) => Ok(None),
                }
            }
            None => Ok(None),
        }
    }

    /// Every member of staff.
    pub fn all_staff(&self) -> Result<Vec<StoredStaff>, StoreError> {
        self.store
            .scan(b"stf/", None, usize::MAX)?
            .into_iter()
            .map(|(k, v)| decode("staff credential", &k, &v))
            .collect()
    }
}

fn revoked_key(agency: &throughgate_protocol::ids::AgencyId, key: &PublicKey) -> Vec<u8> {
    super::key(&["crv/", agency.as_str(), "/", &key.to_hex()])
}

impl Db {
    /// Records that `agency` withdrew the staff credential for `public_key`, then flushes.
    pub fn put_revoked_credential(
        &self,
        agency: &throughgate_protocol::ids::AgencyId,
        public_key: &PublicKey,
        at: Timestamp,
    ) -> Result<(), StoreError> {
        let mut b = WriteBatch::new();
        b.put(revoked_key(agency, public_key), at.0.to_be_bytes().to_vec());
        self.store.apply(b)?;
        self.store.flush()
    }

    /// Whether `agency` withdrew the staff credential for `public_key`.
    pub fn credential_revoked(
        &self,
        agency: &throughgate_protocol::ids::AgencyId,
        public_key: &PublicKey,
    ) -> Result<bool, StoreError> {
        Ok(self.store.get(&revoked_key(agency, public_key))?.is_some())
    }
}

impl Db {
    /// Remembers a public key this node has signed with (its log's checkpoints stay verifiable
    /// after the key is rotated out of the manifest).
    pub fn remember_own_key(&self, key: &PublicKey) -> Result<(), StoreError> {
        if self
            .store
            .get(&super::key(&["own/", &key.to_hex()]))?
            .is_some()
        {
            return Ok(());
        }
        let mut b = WriteBatch::new();
        b.put(super::key(&["own/", &key.to_hex()]), Vec::new());
        self.store.apply(b)?;
        self.store.flush()
    }

    /// Every public key this node has signed with.
    pub fn own_keys(&self) -> Result<Vec<PublicKey>, StoreError> {
        Ok(self
            .store
            .scan(b"own/", None, usize::MAX)?
            .into_iter()
            .filter_map(|(k, _)| {
                PublicKey::from_hex(&String::from_utf8_lossy(k.get(4..).unwrap_or_default())).ok()
            })
            .collect())
    }
}

impl Db {
    /// The note a restore left for the first start to log, if any. A note that does not decode
    /// is reported as a storage failure (it is never silently dropped).
    pub fn restore_note(&self) -> Result<Option<crate::backup::RestoreNote>, StoreError> {
        match self.store.get(crate::backup::RESTORED_KEY)? {
            None => Ok(None),
            Some(v) => serde_json::from_slice(&v)
                .map(Some)
                .map_err(|e| StoreError::Corrupt {
                    what: "restore note",
                    key: String::from_utf8_lossy(crate::backup::RESTORED_KEY).into_owned(),
                    detail: e.to_string(),
                }),
        }
    }

    /// Removes the restore note once the restore is logged, and flushes.
    pub fn forget_restore_note(&self) -> Result<(), StoreError> {
        let mut b = WriteBatch::new();
        b.delete(crate::backup::RESTORED_KEY.to_vec());
        self.store.apply(b)?;
        self.store.flush()
    }
}
