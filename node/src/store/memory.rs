use std::collections::BTreeMap;
use std::ops::Bound;
use std::sync::RwLock;

use super::{visit_prefixed, KeyValue, Store, StoreError, Write, WriteBatch};

type Map = BTreeMap<Vec<u8>, Vec<u8>>;

/// An in-memory store: for tests, and proof that nothing depends on sled specifics.
#[derive(Debug, Default)]
pub struct MemoryStore {
    map: RwLock<Map>,
}

impl MemoryStore {
    /// An empty store.
    pub fn new() -> MemoryStore {
        MemoryStore::default()
    }

    fn read(&self) -> Result<std::sync::RwLockReadGuard<'_, Map>, StoreError> {
        self.map
            .read()
            .map_err(|_| StoreError::Internal("memory store lock poisoned"))
    }

    fn write(&self) -> Result<std::sync::RwLockWriteGuard<'_, Map>, StoreError> {
        self.map
            .write()
            .map_err(|_| StoreError::Internal("memory store lock poisoned"))
    }
}

fn write_all(map: &mut Map, batch: WriteBatch) {
    for w in batch.writes {
        match w {
            Write::Put(k, v) => {
                map.insert(k, v);
            }
            Write::Delete(k) => {
                map.remove(&k);
            }
        }
    }
}

impl Store for MemoryStore {
    fn get(&self, key: &[u8]) -> Result<Option<Vec<u8>>, StoreError> {
        Ok(self.read()?.get(key).cloned())
    }

    fn visit(
        &self,
        prefix: &[u8],
        start: Option<&[u8]>,
        visit: &mut dyn FnMut(&[u8], &[u8]) -> bool,
    ) -> Result<(), StoreError> {
        let map = self.read()?;
        let from = start.unwrap_or(prefix).to_vec();
        visit_prefixed(
            map.range((Bound::Included(from), Bound::Unbounded)).map(Ok),
            prefix,
            visit,
        )
    }

    fn last(&self, prefix: &[u8]) -> Result<Option<KeyValue>, StoreError> {
        let map = self.read()?;
        Ok(map
            .range(prefix.to_vec()..)
            .take_while(|(k, _)| k.starts_with(prefix))
            .last()
            .map(|(k, v)| (k.clone(), v.clone())))
    }

    fn apply(&self, batch: WriteBatch) -> Result<(), StoreError> {
        let mut map = self.write()?;
        write_all(&mut map, batch);
        Ok(())
    }

    fn apply_if(
        &self,
        guard: &[u8],
        expected: Option<&[u8]>,
        batch: WriteBatch,
    ) -> Result<bool, StoreError> {
        let mut map = self.write()?;
        if map.get(guard).map(Vec::as_slice) != expected {
            return Ok(false);
        }
        write_all(&mut map, batch);
        Ok(true)
    }

    fn insert_if_absent(&self, key: &[u8], value: &[u8]) -> Result<bool, StoreError> {
        let mut map = self.write()?;
        if map.contains_key(key) {
            return Ok(false);
        }
        map.insert(key.to_vec(), value.to_vec());
        Ok(true)
    }

    fn flush(&self) -> Result<(), StoreError> {
        Ok(())
    }

    fn count(&self, prefix: &[u8]) -> Result<u64, StoreError> {
        let map = self.read()?;
        Ok(map
            .range(prefix.to_vec()..)
            .take_while(|(k, _)| k.starts_with(prefix))
            .count() as u64)
    }
}
