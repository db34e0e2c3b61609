//! The default store, on sled.
//!
//! Batches are not sled's `apply_batch`: that takes a write lock shared by every sled database
//! in the process, and once any batch has run, every sled read and write in the process, and
//! sled's background flush through its fsync, go through that lock. Nodes sharing a process
//! (`tg bench`, `tg demo`, tests) then wait for each other's disk. Instead each store has its own
//! gate: a batch holds it exclusively while it writes a redo record (see [`super::redo`]), its
//! keys one by one, and removes the record; every other operation holds it shared. So a reader
//! that sees any key of a batch sees all of it, as with sled's batches, and a crash mid-batch is
//! completed from the redo record when the store is next opened.

use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, PoisonError, RwLock, RwLockReadGuard, RwLockWriteGuard};

use super::redo;
use super::{visit_prefixed, KeyValue, Store, StoreError, Write, WriteBatch};

/// The redo tree's only key.
const REDO_KEY: &[u8] = b"batch";

/// The default store: one sled tree with key prefixes per space, and a second tree holding the
/// redo record of the batch being written, if any.
#[derive(Debug, Clone)]
pub struct SledStore {
    _db: sled::Db,
    tree: sled::Tree,
    redo: sled::Tree,
    gate: Arc<RwLock<()>>,
    /// Set when a batch failed halfway; every later operation is refused until the store is
    /// opened again, which completes the batch from its redo record.
    broken: Arc<AtomicBool>,
}

/// Takes `gate` shared for each step of `inner`, so a scan never sees half a batch at a step.
struct Gated<'a, I> {
    gate: &'a RwLock<()>,
    inner: I,
}

impl<I: Iterator> Iterator for Gated<'_, I> {
    type Item = I::Item;

    fn next(&mut self) -> Option<I::Item> {
        let _shared = self.gate.read().unwrap_or_else(PoisonError::into_inner);
        self.inner.next()
    }
}

fn backend(e: sled::Error) -> StoreError {
    StoreError::Backend(Box::new(e))
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
    /// is locked is retried for up to `LOCK_WAIT` (3 s) before giving up with a clear message
    /// (another process, e.g. a second `tg node run`, has it open).
    pub fn open_with_cache(dir: &Path, cache_bytes: u64) -> Result<SledStore, StoreError> {
        // The store is personal data: its folder is 0700 before sled writes into it.
        crate::private::create_dir(dir).map_err(|e| StoreError::Backend(Box::new(e)))?;
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
                        return Err(StoreError::InUse {
                            dir: dir.to_path_buf(),
                        });
                    }
                    std::thread::sleep(std::time::Duration::from_millis(10));
                }
                Err(e) => return Err(backend(e)),
            }
        };
        let tree = db.open_tree("throughgate").map_err(backend)?;
        let redo = db.open_tree("throughgate-redo").map_err(backend)?;
        // sled creates its files with the default mode: narrow them (and any left by an older
        // version) to the node's user.
        crate::private::tighten_tree(dir).map_err(|e| StoreError::Backend(Box::new(e)))?;
        let store = SledStore {
            _db: db,
            tree,
            redo,
            gate: Arc::new(RwLock::new(())),
            broken: Arc::new(AtomicBool::new(false)),
        };
        store.complete_interrupted_batch()?;
        Ok(store)
    }

    /// Applies again, in full, a batch whose writing was cut short (a crash, or a failure that
    /// marked the store broken), then removes its redo record and makes that durable.
    fn complete_interrupted_batch(&self) -> Result<(), StoreError> {
        let Some(record) = self.redo.get(REDO_KEY).map_err(backend)? else {
            return Ok(());
        };
        let writes = redo::decode(&record).map_err(|e| StoreError::Corrupt {
            what: "redo record of an interrupted batch",
            key: String::from_utf8_lossy(REDO_KEY).into_owned(),
            detail: format!(
                "{e}; the store cannot be completed safely, restore the node from a backup"
            ),
        })?;
        for w in &writes {
            self.write_one(w)?;
        }
        self.redo.remove(REDO_KEY).map_err(backend)?;
        self.tree.flush().map_err(backend)?;
        tracing::info!(
            writes = writes.len(),
            "completed a batch interrupted by a crash"
        );
        Ok(())
    }

    fn write_one(&self, w: &Write) -> Result<(), StoreError> {
        match w {
            Write::Put(k, v) => self.tree.insert(k, v.as_slice()).map(|_| ()),
            Write::Delete(k) => self.tree.remove(k).map(|_| ()),
        }
        .map_err(backend)
    }

    fn shared(&self) -> Result<RwLockReadGuard<'_, ()>, StoreError> {
        let g = self.gate.read().unwrap_or_else(PoisonError::into_inner);
        self.check_whole()?;
        Ok(g)
    }

    fn exclusive(&self) -> Result<RwLockWriteGuard<'_, ()>, StoreError> {
        let g = self.gate.write().unwrap_or_else(PoisonError::into_inner);
        self.check_whole()?;
        Ok(g)
    }

    fn check_whole(&self) -> Result<(), StoreError> {
        if self.broken.load(Ordering::Acquire) {
            return Err(StoreError::Broken);
        }
        Ok(())
    }

    /// Writes a batch of several writes: redo record, keys, removal of the record.
    fn apply_several(&self, writes: &[Write]) -> Result<(), StoreError> {
        let record = redo::encode(writes).map_err(|e| StoreError::Backend(Box::new(e)))?;
        let _only = self.exclusive()?;
        self.apply_several_locked(writes, record)
    }

    /// [`SledStore::apply_several`] with the gate already held exclusively.
    fn apply_several_locked(&self, writes: &[Write], record: Vec<u8>) -> Result<(), StoreError> {
        self.redo.insert(REDO_KEY, record).map_err(backend)?;
        let applied = writes
            .iter()
            .try_for_each(|w| self.write_one(w))
            .and_then(|()| self.redo.remove(REDO_KEY).map(|_| ()).map_err(backend));
        if applied.is_err() {
            self.broken.store(true, Ordering::Release);
        }
        applied
    }

    /// Test hook: writes the redo record and the first `keys` writes of `batch`, then stops, as
    /// a crash at that point would.
    #[cfg(test)]
    fn apply_cut_short(&self, batch: &WriteBatch, keys: usize) {
        self.redo
            .insert(REDO_KEY, redo::encode(&batch.writes).unwrap())
            .unwrap();
        for w in batch.writes.iter().take(keys) {
            self.write_one(w).unwrap();
        }
        self.tree.flush().unwrap();
    }
}

impl Store for SledStore {
    fn get(&self, key: &[u8]) -> Result<Option<Vec<u8>>, StoreError> {
        let _shared = self.shared()?;
        Ok(self.tree.get(key).map_err(backend)?.map(|v| v.to_vec()))
    }

    fn visit(
        &self,
        prefix: &[u8],
        start: Option<&[u8]>,
        visit: &mut dyn FnMut(&[u8], &[u8]) -> bool,
    ) -> Result<(), StoreError> {
        self.check_whole()?;
        let from = start.unwrap_or(prefix);
        let items = Gated {
            gate: &self.gate,
            inner: self.tree.range(from..),
        };
        visit_prefixed(items.map(|item| item.map_err(backend)), prefix, visit)
    }

    fn last(&self, prefix: &[u8]) -> Result<Option<KeyValue>, StoreError> {
        let _shared = self.shared()?;
        match self.tree.scan_prefix(prefix).next_back() {
            Some(item) => {
                let (k, v) = item.map_err(backend)?;
                Ok(Some((k.to_vec(), v.to_vec())))
            }
            None => Ok(None),
        }
    }

    fn apply(&self, batch: WriteBatch) -> Result<(), StoreError> {
        match batch.writes.as_slice() {
            [] => self.check_whole(),
            // One write is atomic in sled on its own.
            [one] => {
                let _shared = self.shared()?;
                self.write_one(one)
            }
            several => self.apply_several(several),
        }
    }

    fn apply_if(
        &self,
        guard: &[u8],
        expected: Option<&[u8]>,
        batch: WriteBatch,
    ) -> Result<bool, StoreError> {
        let record = redo::encode(&batch.writes).map_err(|e| StoreError::Backend(Box::new(e)))?;
        // sled locks its files, so this process is the store's only writer: the gate, held
        // exclusively from the comparison to the last write, is the whole exclusion needed.
        let _only = self.exclusive()?;
        let current = self.tree.get(guard).map_err(backend)?;
        if current.as_deref() != expected {
            return Ok(false);
        }
        match batch.writes.as_slice() {
            [] => Ok(true),
            [one] => self.write_one(one).map(|()| true),
            several => self.apply_several_locked(several, record).map(|()| true),
        }
    }

    fn insert_if_absent(&self, key: &[u8], value: &[u8]) -> Result<bool, StoreError> {
        let _shared = self.shared()?;
        let r = self
            .tree
            .compare_and_swap(key, None as Option<&[u8]>, Some(value))
            .map_err(backend)?;
        Ok(r.is_ok())
    }

    fn flush(&self) -> Result<(), StoreError> {
        self.check_whole()?;
        self.tree.flush().map(|_| ()).map_err(backend)
    }

    fn count(&self, prefix: &[u8]) -> Result<u64, StoreError> {
        self.check_whole()?;
        let mut n = 0u64;
        let items = Gated {
            gate: &self.gate,
            inner: self.tree.scan_prefix(prefix),
        };
        for item in items {
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
        let err = SledStore::open(dir.path()).unwrap_err();
        assert!(
            matches!(&err, StoreError::InUse { dir: d } if d == dir.path()),
            "{err}"
        );
        assert!(
            err.to_string().contains("in use by another process"),
            "{err}"
        );
        assert!(started.elapsed() >= LOCK_WAIT);
        drop(held);
        // Released a moment ago: opened at once or after sled's writers let go.
        SledStore::open(dir.path()).unwrap();
    }

    fn batch(n: u32, keys: u32) -> WriteBatch {
        let mut b = WriteBatch::new();
        for k in 0..keys {
            b.put(format!("a/{k}").into_bytes(), n.to_be_bytes().to_vec());
        }
        b.delete(b"gone".to_vec());
        b
    }

    fn value(s: &SledStore, key: &str) -> Option<u32> {
        s.get(key.as_bytes())
            .unwrap()
            .map(|v| u32::from_be_bytes(v.try_into().unwrap()))
    }

    #[test]
    fn a_batch_cut_short_by_a_crash_is_completed_when_the_store_opens() {
        for cut in 0..=5 {
            let dir = tempfile::tempdir().unwrap();
            {
                let s = SledStore::open(dir.path()).unwrap();
                let mut before = batch(1, 4);
                before.put(b"gone".to_vec(), b"here".to_vec());
                s.apply(before).unwrap();
                s.apply_cut_short(&batch(2, 4), cut);
            }
            let s = SledStore::open(dir.path()).unwrap();
            for k in 0..4 {
                assert_eq!(
                    value(&s, &format!("a/{k}")),
                    Some(2),
                    "cut after {cut} keys"
                );
            }
            assert!(s.get(b"gone").unwrap().is_none(), "cut after {cut} keys");
            assert!(s.redo.get(REDO_KEY).unwrap().is_none());
            assert_eq!(s.count(b"").unwrap(), 4);
        }
    }

    #[test]
    fn a_finished_batch_leaves_no_redo_record_and_is_not_applied_again() {
        let dir = tempfile::tempdir().unwrap();
        {
            let s = SledStore::open(dir.path()).unwrap();
            s.apply(batch(1, 3)).unwrap();
            assert!(s.redo.get(REDO_KEY).unwrap().is_none());
            let mut later = WriteBatch::new();
            later.put(b"a/0".to_vec(), 9u32.to_be_bytes().to_vec());
            s.apply(later).unwrap();
        }
        let s = SledStore::open(dir.path()).unwrap();
        assert_eq!(
            value(&s, "a/0"),
            Some(9),
            "a later single write survives reopening"
        );
        assert_eq!(value(&s, "a/2"), Some(1));
    }

    #[test]
    fn a_damaged_redo_record_stops_the_store_from_opening_with_a_clear_message() {
        let dir = tempfile::tempdir().unwrap();
        {
            let s = SledStore::open(dir.path()).unwrap();
            s.apply(batch(1, 2)).unwrap();
            s.redo.insert(REDO_KEY, b"tgredo01\0".to_vec()).unwrap();
            s.tree.flush().unwrap();
        }
        let err = SledStore::open(dir.path()).unwrap_err().to_string();
        assert!(err.contains("redo record"), "{err}");
        assert!(err.contains("restore the node from a backup"), "{err}");
    }

    #[test]
    fn a_reader_that_sees_part_of_a_batch_sees_all_of_it() {
        let dir = tempfile::tempdir().unwrap();
        let s = SledStore::open(dir.path()).unwrap();
        s.apply(batch(0, 2)).unwrap();
        let writer = {
            let s = s.clone();
            std::thread::spawn(move || {
                for n in 1..=3_000 {
                    s.apply(batch(n, 2)).unwrap();
                }
            })
        };
        let mut checked = 0u32;
        while !writer.is_finished() || checked == 0 {
            // The batch writes a/0 before a/1: having seen a/0 at n, a/1 is at least n.
            let first = value(&s, "a/0").unwrap();
            let second = value(&s, "a/1").unwrap();
            assert!(second >= first, "saw a/0 = {first} but then a/1 = {second}");
            let seen: Vec<u32> = s
                .scan(b"a/", None, 10)
                .unwrap()
                .into_iter()
                .map(|(_, v)| u32::from_be_bytes(v.try_into().unwrap()))
                .collect();
            assert!(seen[1] >= seen[0], "scan saw {seen:?}");
            checked += 1;
        }
        writer.join().unwrap();
        assert_eq!(value(&s, "a/1"), Some(3_000));
    }
}
