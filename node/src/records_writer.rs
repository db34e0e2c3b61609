//! The one way the staff operations change the record store: [`RecordsWriter::lock`] waits
//! until no other import, sync or deletion is between its check and its last write, and hands
//! out a [`RecordsWrite`], the only handle to the store those operations hold. A sync's plan,
//! counted against the records held, is therefore still true when it is applied, and a
//! caller cannot forget to take the lock: without the guard it has no store to write to.

use std::sync::Arc;

use tokio::sync::{Mutex, OwnedMutexGuard};

use crate::db::Db;

/// Serialises the operations that change the record store; cheap to clone (one lock shared).
#[derive(Clone)]
pub struct RecordsWriter {
    db: Db,
    lock: Arc<Mutex<()>>,
}

impl std::fmt::Debug for RecordsWriter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RecordsWriter").finish_non_exhaustive()
    }
}

impl RecordsWriter {
    /// The writer of the records in `db`.
    pub fn new(db: Db) -> RecordsWriter {
        RecordsWriter {
            db,
            lock: Arc::new(Mutex::new(())),
        }
    }

    /// Waits for every other change of the record store to finish, then returns the store for
    /// this one; others wait until the returned guard is dropped. The guard is owned (`'static`),
    /// so it can go with the work into a task of its own.
    pub async fn lock(&self) -> RecordsWrite {
        RecordsWrite {
            db: self.db.clone(),
            _held: self.lock.clone().lock_owned().await,
        }
    }
}

/// The record store, while no other import, sync or deletion runs.
pub struct RecordsWrite {
    db: Db,
    _held: OwnedMutexGuard<()>,
}

impl std::fmt::Debug for RecordsWrite {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RecordsWrite").finish_non_exhaustive()
    }
}

impl RecordsWrite {
    /// The store, to check against and write to while this guard is held.
    pub fn db(&self) -> &Db {
        &self.db
    }
}

#[cfg(test)]
mod tests {
    use futures::FutureExt;

    use super::*;
    use crate::store::MemoryStore;

    #[tokio::test]
    async fn a_second_change_of_the_records_waits_until_the_first_guard_is_dropped() {
        let writer = RecordsWriter::new(Db::new(Arc::new(MemoryStore::new())));
        let first = writer.lock().await;
        assert!(writer.lock().now_or_never().is_none());
        // The guard may go with the work into a task; held there, it still excludes others.
        let task = tokio::spawn(async move { first.db().record_count() });
        assert_eq!(task.await.unwrap().unwrap(), 0);
        assert!(writer.lock().now_or_never().is_some());
    }
}
