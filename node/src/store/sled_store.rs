use std::path::Path;

use super::{scan_prefixed, visit_prefixed, KeyValue, Store, StoreError, Write, WriteBatch};

/// The default store: one sled tree with key prefixes per space, so a batch spanning spaces is
/// one atomic sled batch.
#[derive(Debug, Clone)]
pub struct SledStore {
    _db: sled::Db,
    tree: sled::Tree,
}

fn backend(e: sled::Error) -> StoreError {
    StoreError::Backend(e.to_string())
}

/// How long opening a locked store keeps retrying.
pub const LOCK_WAIT: std::time::Duration = std::time::Duration::from_secs(3);

impl SledStore {
    /// Opens (creating if needed) the store in `dir`, with the default page cache.
    pub fn open(dir: &Path) -> Result<SledStore, StoreError> {
        SledStore::open_with_cache(dir, crate::config::Storage::default().cache_bytes())
    }

    /// Opens (creating if needed) the store in `dir` with a page cache of about `cache_bytes`
    /// (sled's own default, 1 GiB per store, lets a large store hold gigabytes resident).
    ///
    /// sled locks the store's file while it is open. A handle dropped a moment ago can hold the
    /// lock for a few milliseconds more (sled's background writers release it), so a store that
    /// is locked is retried for up to [`LOCK_WAIT`] before giving up with a clear message
    /// (another process, e.g. a second `tg node run`, has it open).
    pub fn open_with_cache(dir: &Path, cache_bytes: u64) -> Result<SledStore, StoreError> {
        let deadline = std::time::Instant::now() + LOCK_WAIT;
        let db = loop {
            match sled::Config::new()
                .path(dir)
                .cache_capacity(cache_bytes)
                .mode(sled::Mode::HighThroughput)
                .open()
            {
                Ok(db) => break db,
                // sled reports a held lock as an I/O error carrying only this text.
                Err(sled::Error::Io(e)) if e.to_string().contains("could not acquire lock") => {
                    if std::time::Instant::now() >= deadline {
                        return Err(StoreError::Backend(format!(
                            "the store in {} is in use by another process (is the node already \
                             running?); stop it first",
                            dir.display()
                        )));
                    }
                    std::thread::sleep(std::time::Duration::from_millis(10));
                }
                Err(e) => return Err(backend(e)),
            }
        };
        let tree = db.open_tree("throughgate").map_err(backend)?;
        Ok(SledStore { _db: db, tree })
    }
}

impl Store for SledStore {
    fn get(&self, key: &[u8]) -> Result<Option<Vec<u8>>, StoreError> {
        Ok(self.tree.get(key).map_err(backend)?.map(|v| v.to_vec()))
    }

    fn scan(
        &self,
        prefix: &[u8],
        start: Option<&[u8]>,
        limit: usize,
    ) -> Result<Vec<KeyValue>, StoreError> {
        let from = start.unwrap_or(prefix).to_vec();
        scan_prefixed(
            self.tree.range(from..).map(|item| item.map_err(backend)),
            prefix,
            limit,
        )
    }

    fn visit(
        &self,
        prefix: &[u8],
        start: Option<&[u8]>,
        visit: &mut dyn FnMut(&[u8], &[u8]) -> bool,
    ) -> Result<(), StoreError> {
        let from = start.unwrap_or(prefix);
        visit_prefixed(
            self.tree.range(from..).map(|item| item.map_err(backend)),
            prefix,
            visit,
        )
    }

    fn last(&self, prefix: &[u8]) -> Result<Option<KeyValue>, StoreError> {
        match self.tree.scan_prefix(prefix).next_back() {
            Some(item) => {
                let (k, v) = item.map_err(backend)?;
                Ok(Some((k.to_vec(), v.to_vec())))
            }
            None => Ok(None),
        }
    }

    fn apply(&self, batch: WriteBatch) -> Result<(), StoreError> {
        let mut b = sled::Batch::default();
        for w in batch.writes {
            match w {
                Write::Put(k, v) => b.insert(k, v),
                Write::Delete(k) => b.remove(k),
            }
        }
        self.tree.apply_batch(b).map_err(backend)
    }

    fn insert_if_absent(&self, key: &[u8], value: &[u8]) -> Result<bool, StoreError> {
        let r = self
            .tree
            .compare_and_swap(key, None as Option<&[u8]>, Some(value))
            .map_err(backend)?;
        Ok(r.is_ok())
    }

    fn flush(&self) -> Result<(), StoreError> {
        self.tree.flush().map(|_| ()).map_err(backend)
    }

    fn count(&self, prefix: &[u8]) -> Result<u64, StoreError> {
        let mut n = 0u64;
        for item in self.tree.scan_prefix(prefix) {
            item.map_err(backend)?;
            n += 1;
        }
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_store_in_use_is_refused_with_a_clear_message_and_reopens_once_released() {
        let dir = tempfile::tempdir().unwrap();
        let held = SledStore::open(dir.path()).unwrap();
        let started = std::time::Instant::now();
        let err = SledStore::open(dir.path()).unwrap_err().to_string();
        assert!(err.contains("in use by another process"), "{err}");
        assert!(started.elapsed() >= LOCK_WAIT);
        drop(held);
        // Released a moment ago: opened at once or after sled's writers let go.
        SledStore::open(dir.path()).unwrap();
    }
}
