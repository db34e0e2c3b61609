use std::path::Path;

use super::{KeyValue, Store, StoreError, Write, WriteBatch};

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

impl SledStore {
    /// Opens (creating if needed) the store in `dir`, with the default page cache.
    pub fn open(dir: &Path) -> Result<SledStore, StoreError> {
        SledStore::open_with_cache(dir, crate::config::Storage::default().cache_bytes())
    }

    /// Opens (creating if needed) the store in `dir` with a page cache of about `cache_bytes`
    /// (sled's own default, 1 GiB per store, lets a large store hold gigabytes resident).
    pub fn open_with_cache(dir: &Path, cache_bytes: u64) -> Result<SledStore, StoreError> {
        let db = sled::Config::new()
            .path(dir)
            .cache_capacity(cache_bytes)
            .mode(sled::Mode::HighThroughput)
            .open()
            .map_err(backend)?;
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
        let iter = match start {
            Some(s) => self.tree.range(s.to_vec()..),
            None => self.tree.range(prefix.to_vec()..),
        };
        let mut out = Vec::new();
        for item in iter {
            let (k, v) = item.map_err(backend)?;
            if !k.starts_with(prefix) || out.len() >= limit {
                break;
            }
            out.push((k.to_vec(), v.to_vec()));
        }
        Ok(out)
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
