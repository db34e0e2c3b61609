//! Storage behind one narrow trait.
//!
//! Everything a node keeps (records, consents, links, staff, outbox, replay cache, audit log)
//! goes through [`Store`]: ordered byte keys to byte values, point reads, prefix scans, atomic
//! batches, batches applied only if a guard key still holds the value the caller read,
//! insert-if-absent, and an explicit durability barrier. sled is the default implementation;
//! PostgreSQL lets several replicas of one agency share their state ([`PostgresStore`]); an
//! in-memory one serves tests and shows the trait is honest.

mod gated;
mod memory;
mod postgres;
mod redo;
mod sled_store;
pub(crate) use postgres::check_local;

pub use gated::GatedStore;
pub use memory::MemoryStore;
pub use postgres::{PostgresStore, CONNECTIONS as POSTGRES_CONNECTIONS};
pub use sled_store::SledStore;

/// A storage failure. Each kind is its own variant, so callers (the CLI's exit codes and hints)
/// decide on the kind, never on message text; the backend's own error is kept as the source.
#[allow(missing_docs)] // variant fields are named by the #[error] message
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The backend failed (I/O, corruption); the backend's error is the source.
    #[error("storage backend failed")]
    Backend(#[source] Box<dyn std::error::Error + Send + Sync + 'static>),
    /// Another process holds the store open.
    #[error("the store in {} is in use by another process (is the node already running?); stop it first", dir.display())]
    InUse { dir: std::path::PathBuf },
    /// A batch failed halfway; the store refuses reads and writes until the node restarts and
    /// completes the batch from its redo record.
    #[error(
        "a batch failed halfway through; restart the node, which completes it from its redo record"
    )]
    Broken,
    /// A lock was poisoned or a task or thread working on the store stopped.
    #[error("{0}")]
    Internal(&'static str),
    /// A task working on the store stopped (panicked or was cancelled).
    #[error("{what} stopped")]
    Task {
        what: &'static str,
        #[source]
        source: tokio::task::JoinError,
    },
    /// A stored value did not decode: the store holds something this version cannot read.
    #[error("stored {what} under key {key} does not decode: {detail}")]
    Corrupt {
        what: &'static str,
        key: String,
        detail: String,
    },
    /// A PostgreSQL operation failed (the database is unreachable, refused the statement, or
    /// the connection broke); the operation did not happen.
    #[error("PostgreSQL: {what} failed: {source}")]
    Postgres {
        what: &'static str,
        #[source]
        source: tokio_postgres::Error,
    },
    /// A schema migration failed; the database is left as it was before it.
    #[error("PostgreSQL schema migration {version} ({name}) failed: {source}")]
    Migration {
        version: i32,
        name: &'static str,
        #[source]
        source: tokio_postgres::Error,
    },
    /// The database was migrated by a newer node than this one.
    #[error(
        "the PostgreSQL database has schema version {found}, newer than this node's {known}; \
         upgrade this node"
    )]
    SchemaTooNew { found: i32, known: i32 },
    /// The file holding the database URL could not be read, or others may read it.
    #[error("storage.url_file {path}: {source}")]
    UrlFile {
        path: std::path::PathBuf,
        #[source]
        source: crate::keyfile::KeyFileError,
    },
    /// The store's configuration is unusable.
    #[error("storage configuration: {0}")]
    Config(String),
}

/// The longest database URL file read.
const MAX_URL_FILE: u64 = 64 * 1024;

/// Opens the store `config` names: sled in its data folder (the default), or the PostgreSQL
/// database at its `storage.url` or in its `storage.url_file` (which must be mode 0600).
pub fn open_configured(
    config: &crate::config::NodeConfig,
) -> Result<std::sync::Arc<dyn Store>, StoreError> {
    use crate::config::Backend;
    match config.storage.backend {
        Backend::Sled => Ok(std::sync::Arc::new(SledStore::open_with_cache(
            &config.resolve(&config.data_dir),
            config.storage.cache_bytes(),
        )?)),
        Backend::Postgres => {
            let store = PostgresStore::open(&postgres_url(config)?)?;
            if store.get(RESTORE_INCOMPLETE)?.is_some() {
                return Err(StoreError::Config(
                    "a restore into this database did not finish; run `tg node restore` again \
                     (it replaces what the unfinished restore wrote)"
                        .into(),
                ));
            }
            Ok(std::sync::Arc::new(store))
        }
    }
}

/// Present in a database while `tg node restore` writes into it: no node serves from a
/// half-restored database.
pub const RESTORE_INCOMPLETE: &[u8] = b"rst/incomplete";

/// The database URL `config` names: its `storage.url`, or the content of its
/// `storage.url_file` (which must be mode 0600).
pub fn postgres_url(config: &crate::config::NodeConfig) -> Result<String, StoreError> {
    match (&config.storage.url, &config.storage.url_file) {
        (Some(url), _) => Ok(url.clone()),
        (None, Some(file)) => {
            let path = config.resolve(file);
            let bytes =
                crate::keyfile::read_private_file(&path, MAX_URL_FILE).map_err(|source| {
                    StoreError::UrlFile {
                        path: path.clone(),
                        source,
                    }
                })?;
            Ok(String::from_utf8(bytes)
                .map_err(|_| {
                    StoreError::Config(format!(
                        "{} does not hold a UTF-8 database URL",
                        path.display()
                    ))
                })?
                .trim()
                .to_owned())
        }
        (None, None) => Err(StoreError::Config(
            "storage.backend = \"postgres\" needs storage.url or storage.url_file".into(),
        )),
    }
}

/// One write in a batch.
#[derive(Debug, Clone)]
pub enum Write {
    /// Set `key` to `value`.
    Put(Vec<u8>, Vec<u8>),
    /// Remove `key`.
    Delete(Vec<u8>),
}

/// Writes applied together, all or none.
#[derive(Debug, Clone, Default)]
pub struct WriteBatch {
    /// The writes, in order.
    pub writes: Vec<Write>,
}

impl WriteBatch {
    /// An empty batch.
    pub fn new() -> WriteBatch {
        WriteBatch::default()
    }

    /// Adds a put.
    pub fn put(&mut self, key: impl Into<Vec<u8>>, value: impl Into<Vec<u8>>) {
        self.writes.push(Write::Put(key.into(), value.into()));
    }

    /// Adds a delete.
    pub fn delete(&mut self, key: impl Into<Vec<u8>>) {
        self.writes.push(Write::Delete(key.into()));
    }

    /// Number of writes.
    pub fn len(&self) -> usize {
        self.writes.len()
    }

    /// Whether the batch is empty.
    pub fn is_empty(&self) -> bool {
        self.writes.is_empty()
    }
}

/// A key-value pair from a scan.
pub type KeyValue = (Vec<u8>, Vec<u8>);

/// A visitor of stored pairs that may fail (and so stop the visit).
pub type PairVisitor<'a> = dyn FnMut(&[u8], &[u8]) -> Result<(), StoreError> + 'a;

/// How every store answers [`Store::visit`], given its pairs in key order from
/// `start.unwrap_or(prefix)`.
fn visit_prefixed<K: AsRef<[u8]>, V: AsRef<[u8]>>(
    from_start: impl Iterator<Item = Result<(K, V), StoreError>>,
    prefix: &[u8],
    visit: &mut dyn FnMut(&[u8], &[u8]) -> bool,
) -> Result<(), StoreError> {
    for item in from_start {
        let (k, v) = item?;
        if !k.as_ref().starts_with(prefix) || !visit(k.as_ref(), v.as_ref()) {
            break;
        }
    }
    Ok(())
}

/// The node's storage: an ordered map of byte keys to byte values.
pub trait Store: Send + Sync + 'static {
    /// Reads one key.
    fn get(&self, key: &[u8]) -> Result<Option<Vec<u8>>, StoreError>;

    /// All pairs whose key starts with `prefix`, in key order, starting at `start` (a full key
    /// at or after which to begin, or `None` for the beginning of the prefix), at most `limit`.
    /// Every store answers it through [`Store::visit`], copying the pairs out.
    fn scan(
        &self,
        prefix: &[u8],
        start: Option<&[u8]>,
        limit: usize,
    ) -> Result<Vec<KeyValue>, StoreError> {
        let mut out = Vec::new();
        if limit == 0 {
            return Ok(out);
        }
        self.visit(prefix, start, &mut |k, v| {
            out.push((k.to_vec(), v.to_vec()));
            out.len() < limit
        })?;
        Ok(out)
    }

    /// Calls `visit` with each pair [`Store::scan`] would return from `start` (without a
    /// limit), borrowing the stored bytes instead of copying them out, until `visit` returns
    /// `false` or the prefix ends. For long sequential reads such as the audit verifier's, where
    /// copying every value costs more than reading it.
    fn visit(
        &self,
        prefix: &[u8],
        start: Option<&[u8]>,
        visit: &mut dyn FnMut(&[u8], &[u8]) -> bool,
    ) -> Result<(), StoreError>;

    /// The last pair whose key starts with `prefix`, if any.
    fn last(&self, prefix: &[u8]) -> Result<Option<KeyValue>, StoreError>;

    /// Applies every write in the batch atomically.
    fn apply(&self, batch: WriteBatch) -> Result<(), StoreError>;

    /// Applies the batch atomically only if `guard` still holds `expected` (`None`: absent),
    /// checked and written as one step that excludes every other `apply_if` on `guard`, in
    /// this process and, for a shared store, in every process; returns whether it was applied.
    /// A writer that reads a head key, prepares a batch from it and applies it here can never
    /// overwrite another writer's batch prepared from the same head.
    fn apply_if(
        &self,
        guard: &[u8],
        expected: Option<&[u8]>,
        batch: WriteBatch,
    ) -> Result<bool, StoreError>;

    /// Sets `key` to `value` only if it is absent; returns whether it was inserted.
    fn insert_if_absent(&self, key: &[u8], value: &[u8]) -> Result<bool, StoreError>;

    /// Makes every write applied so far durable on disk.
    fn flush(&self) -> Result<(), StoreError>;

    /// Counts keys with `prefix` (may be slow; for status and tests).
    fn count(&self, prefix: &[u8]) -> Result<u64, StoreError>;

    /// Calls `visit` with every pair in key order as one consistent state of the whole store,
    /// taken by the store itself while other processes may write (a database snapshot);
    /// returns the number of pairs. `None` (the default) means the store has no such snapshot,
    /// and the caller pauses this process's writes instead, which is consistent when no other
    /// process writes ([`GatedStore::snapshot`]).
    fn snapshot(&self, _visit: &mut PairVisitor<'_>) -> Option<Result<u64, StoreError>> {
        None
    }
}

// Every backend's behaviour is held to one suite in `node/tests/storage.rs`; this checks only
// what that suite cannot: sled's data outliving the process's handle.
#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sled_store_persists_across_reopening() {
        let dir = tempfile::tempdir().unwrap();
        {
            let s = SledStore::open(dir.path()).unwrap();
            let mut b = WriteBatch::new();
            b.put(b"a/2".to_vec(), b"two".to_vec());
            s.apply(b).unwrap();
            s.flush().unwrap();
        }
        let s = SledStore::open(dir.path()).unwrap();
        assert_eq!(s.get(b"a/2").unwrap().unwrap(), b"two");
    }
}
