use std::collections::{BTreeMap, BTreeSet};

use throughgate_protocol::record::Record;

use super::{decode, encode, key, Db};
use crate::store::{StoreError, WriteBatch};

fn record_key(subject: &str, record_id: &str) -> Vec<u8> {
    key(&["rec/", subject, "\0", record_id])
}

impl Db {
    /// Stores records and their subjects in one atomic batch, then flushes. Existing records with
    /// the same subject and id are replaced (an agency re-exporting an updated record).
    pub fn put_records(&self, records: &[Record]) -> Result<(), StoreError> {
        self.store.apply(Self::records_batch(records))?;
        self.store.flush()
    }

    /// The writes that store records and their subjects.
    pub(super) fn records_batch(records: &[Record]) -> WriteBatch {
        let mut b = WriteBatch::new();
        let mut subjects = BTreeSet::new();
        for r in records {
            b.put(record_key(&r.subject, r.record_id.as_str()), encode(r));
            subjects.insert(r.subject.as_str());
        }
        for s in subjects {
            b.put(key(&["sub/", s]), Vec::new());
        }
        b
    }

    /// The record of this local subject with this id, if held.
    pub fn record(&self, subject: &str, record_id: &str) -> Result<Option<Record>, StoreError> {
        self.get_decoded("record", &record_key(subject, record_id))
    }

    /// Deletes these records (subject, record id) in one atomic batch, and forgets each subject
    /// left with no record (so that it is no longer known here). Not flushed.
    pub fn delete_records(&self, records: &[(String, String)]) -> Result<(), StoreError> {
        let mut b = WriteBatch::new();
        let mut per_subject: BTreeMap<&str, BTreeSet<Vec<u8>>> = BTreeMap::new();
        for (subject, record_id) in records {
            let k = record_key(subject, record_id);
            b.delete(k.clone());
            per_subject.entry(subject.as_str()).or_default().insert(k);
        }
        for (subject, going) in per_subject {
            let prefix = key(&["rec/", subject, "\0"]);
            let left = self
                .store
                .scan(&prefix, None, going.len().saturating_add(1))?;
            if left.iter().all(|(k, _)| going.contains(k)) {
                b.delete(key(&["sub/", subject]));
            }
        }
        self.store.apply(b)
    }

    /// Whether any record of this local subject is held.
    pub fn subject_known(&self, subject: &str) -> Result<bool, StoreError> {
        Ok(self.store.get(&key(&["sub/", subject]))?.is_some())
    }

    /// All records of one local subject, at most `limit`.
    pub fn records_of(&self, subject: &str, limit: usize) -> Result<Vec<Record>, StoreError> {
        let prefix = key(&["rec/", subject, "\0"]);
        self.store
            .scan(&prefix, None, limit)?
            .into_iter()
            .map(|(k, v)| decode("record", &k, &v))
            .collect()
    }

    /// Number of records held.
    pub fn record_count(&self) -> Result<u64, StoreError> {
        self.store.count(b"rec/")
    }

    /// Every record, in key order, a page at a time (`after` is the last key of the previous page).
    pub fn records_page(
        &self,
        after: Option<&[u8]>,
        limit: usize,
    ) -> Result<Vec<(Vec<u8>, Record)>, StoreError> {
        let start = after.map(|a| {
            let mut k = a.to_vec();
            k.push(0);
            k
        });
        self.store
            .scan(b"rec/", start.as_deref(), limit)?
            .into_iter()
            .map(|(k, v)| decode("record", &k, &v).map(|r| (k, r)))
            .collect()
    }
}

impl Db {
    /// Hands every stored record to `each`, a page of at most `page` in key order at a time, so
    /// a pass over all of them holds one page in memory.
    pub fn for_each_record_page<E: From<StoreError>>(
        &self,
        page: usize,
        mut each: impl FnMut(&[Record]) -> Result<(), E>,
    ) -> Result<(), E> {
        let page = page.max(1);
        let mut after: Option<Vec<u8>> = None;
        loop {
            let got = self.records_page(after.as_deref(), page)?;
            let Some((last, _)) = got.last() else { break };
            after = Some(last.clone());
            let full = got.len() == page;
            let records: Vec<Record> = got.into_iter().map(|(_, r)| r).collect();
            each(&records)?;
            if !full {
                break;
            }
        }
        Ok(())
    }

    /// Deletes every record about a date before `before`; returns how many. Flushes.
    pub fn delete_records_before(
        &self,
        before: throughgate_protocol::time::Date,
    ) -> Result<u64, StoreError> {
        let mut after: Option<Vec<u8>> = None;
        let mut deleted = 0;
        loop {
            let page = self.records_page(after.as_deref(), 10_000)?;
            let Some((last, _)) = page.last() else { break };
            after = Some(last.clone());
            let full = page.len() == 10_000;
            let mut b = WriteBatch::new();
            for (k, r) in page {
                if r.about < before {
                    b.delete(k);
                    deleted += 1;
                }
            }
            self.store.apply(b)?;
            if !full {
                break;
            }
        }
        self.store.flush()?;
        Ok(deleted)
    }
}
