use std::sync::{Arc, RwLock};

use super::{KeyValue, Store, StoreError, WriteBatch};

/// A store whose writes can be paused: every write holds the gate shared; a snapshot holds it
/// exclusively, so it sees one consistent state of the whole store while the node runs.
pub struct GatedStore {
    inner: Arc<dyn Store>,
    gate: RwLock<()>,
}

impl std::fmt::Debug for GatedStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("GatedStore")
    }
}

impl GatedStore {
    /// Wraps a store.
    pub fn new(inner: Arc<dyn Store>) -> GatedStore {
        GatedStore {
            inner,
            gate: RwLock::new(()),
        }
    }

    /// Runs `visit` over every pair in key order as one consistent state: the inner store's own
    /// snapshot where it has one ([`Store::snapshot`]), else pages of `page` with this
    /// process's writes paused.
    pub fn snapshot(
        &self,
        page: usize,
        mut visit: impl FnMut(&[u8], &[u8]) -> Result<(), StoreError>,
    ) -> Result<u64, StoreError> {
        // A shared database gives one snapshot across every replica writing to it.
        if let Some(done) = self.inner.snapshot(&mut visit) {
            return done;
        }
        let _exclusive = self
            .gate
            .write()
            .map_err(|_| StoreError::Internal("store gate poisoned"))?;
        self.inner.flush()?;
        let mut n = 0u64;
        let mut start: Option<Vec<u8>> = None;
        loop {
            let batch = self.inner.scan(b"", start.as_deref(), page)?;
            for (k, v) in &batch {
                visit(k, v)?;
                n += 1;
            }
            match batch.last() {
                Some((k, _)) if batch.len() == page => {
                    let mut next = k.clone();
                    next.push(0);
                    start = Some(next);
                }
                _ => break,
            }
        }
        Ok(n)
    }

    fn shared(&self) -> Result<std::sync::RwLockReadGuard<'_, ()>, StoreError> {
        self.gate
            .read()
            .map_err(|_| StoreError::Internal("store gate poisoned"))
    }
}

impl Store for GatedStore {
    fn get(&self, key: &[u8]) -> Result<Option<Vec<u8>>, StoreError> {
        self.inner.get(key)
    }

    fn visit(
        &self,
        prefix: &[u8],
        start: Option<&[u8]>,
        visit: &mut dyn FnMut(&[u8], &[u8]) -> bool,
    ) -> Result<(), StoreError> {
        self.inner.visit(prefix, start, visit)
    }

    fn last(&self, prefix: &[u8]) -> Result<Option<KeyValue>, StoreError> {
        self.inner.last(prefix)
    }

    fn apply(&self, batch: WriteBatch) -> Result<(), StoreError> {
        let _shared = self.shared()?;
        self.inner.apply(batch)
    }

    fn apply_if(
        &self,
        guard: &[u8],
        expected: Option<&[u8]>,
        batch: WriteBatch,
    ) -> Result<bool, StoreError> {
        let _shared = self.shared()?;
        self.inner.apply_if(guard, expected, batch)
    }

    fn insert_if_absent(&self, key: &[u8], value: &[u8]) -> Result<bool, StoreError> {
        let _shared = self.shared()?;
        self.inner.insert_if_absent(key, value)
    }

    fn flush(&self) -> Result<(), StoreError> {
        self.inner.flush()
    }

    fn count(&self, prefix: &[u8]) -> Result<u64, StoreError> {
        self.inner.count(prefix)
    }
}
