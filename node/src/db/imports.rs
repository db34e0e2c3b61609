//! Journals of record imports being applied: one per import, from the moment its file has been
//! checked in full until its last record is stored, and for a sync until the records it lacks
//! are deleted (`imp/{import_id}`).

use serde::{Deserialize, Serialize};
use throughgate_protocol::identifiers::IdScheme;
use throughgate_protocol::ids::PersonId;
use throughgate_protocol::messages::{ImportFormat, SyncReport};
use throughgate_protocol::record::Record;

use super::{decode, encode, key, Db};
use crate::store::StoreError;

/// An import whose file has been checked and is being stored in chunks: what is needed to
/// finish it after a crash.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ImportJournal {
    /// The import's id, which is also the name of its spool file.
    pub import_id: String,
    /// SHA-256 of the spool file (the upload as checked).
    pub sha256: [u8; 32],
    /// The file's format.
    pub format: ImportFormat,
    /// The identifier scheme it was checked under.
    pub scheme: IdScheme,
    /// Its records (every row is good).
    pub rows: u64,
    /// Its distinct subjects.
    pub subjects: u64,
    /// The first `applied` records, in file order, are stored.
    pub applied: u64,
    /// The operator who imported it.
    pub person_id: Option<PersonId>,
    /// For a sync, what its check planned: once every record of the file is stored, the
    /// records of these kinds that the file lacks are deleted, and then the sync is logged
    /// with these counts.
    #[serde(default)]
    pub sync: Option<SyncReport>,
}

fn journal_key(import_id: &str) -> Vec<u8> {
    key(&["imp/", import_id])
}

impl Db {
    /// Stores an import's journal and flushes.
    pub fn put_import_journal(&self, journal: &ImportJournal) -> Result<(), StoreError> {
        let mut b = crate::store::WriteBatch::new();
        b.put(journal_key(&journal.import_id), encode(journal));
        self.store.apply(b)?;
        self.store.flush()
    }

    /// Stores a chunk of an import's records and its journal advanced past them, in one atomic
    /// batch (not flushed: a crash loses a suffix of chunks and their journal updates together,
    /// and storing a record again is harmless).
    pub fn put_import_chunk(
        &self,
        records: &[Record],
        journal: &ImportJournal,
    ) -> Result<(), StoreError> {
        let mut b = Self::records_batch(records);
        b.put(journal_key(&journal.import_id), encode(journal));
        self.store.apply(b)
    }

    /// Removes an import's journal (it is complete) and flushes.
    pub fn delete_import_journal(&self, import_id: &str) -> Result<(), StoreError> {
        let mut b = crate::store::WriteBatch::new();
        b.delete(journal_key(import_id));
        self.store.apply(b)?;
        self.store.flush()
    }

    /// Every import journal: imports not yet complete.
    pub fn import_journals(&self) -> Result<Vec<ImportJournal>, StoreError> {
        self.store
            .scan(b"imp/", None, usize::MAX)?
            .into_iter()
            .map(|(k, v)| decode("import journal", &k, &v))
            .collect()
    }
}
