//! Backups: a consistent snapshot of a node's whole store, taken while it runs (writes pause
//! for the moment of the copy), in a self-checking file; and restore into an empty store.
//!
//! File format: the line `THROUGHGATE-BACKUP/1`, a JSON metadata line, then for every stored
//! pair a 4-byte big-endian key length, the key, a 4-byte big-endian value length, the value;
//! then the trailer `END`, the pair count (8 bytes big-endian) and the SHA-256 of every byte
//! before the trailer. Restore checks the whole file before writing anything.

use std::io::{BufReader, BufWriter, Read, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::audit::Verification;
use crate::config::NodeConfig;
use crate::db::Db;
use crate::store::{SledStore, Store, StoreError, WriteBatch};

const MAGIC: &[u8] = b"THROUGHGATE-BACKUP/1\n";
const TRAILER: &[u8] = b"END";
const MAX_KEY: usize = 64 * 1024;
const MAX_VALUE: usize = 64 * 1024 * 1024;
const MAX_META: usize = 64 * 1024;

/// A backup problem.
#[derive(Debug, thiserror::Error)]
pub enum BackupError {
    /// Reading or writing the file failed.
    #[error("backup file: {0}")]
    Io(#[from] std::io::Error),
    /// The store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The file is not a Throughgate backup, or is damaged.
    #[error("not a valid backup: {0}")]
    Invalid(String),
    /// Restoring would overwrite data.
    #[error("{0} already holds data; restore into an empty folder (or move it aside)")]
    NotEmpty(String),
    /// The node's data folder holds data and moving it aside was not asked for.
    #[error("{} is not empty; stop the node and pass --force to move it aside, or restore elsewhere", .0.display())]
    DataFolderNotEmpty(PathBuf),
    /// The backup is of another agency's node.
    #[error("this is a backup of {backup}, but the node's config is for {configured}")]
    WrongAgency {
        /// The agency the backup names.
        backup: String,
        /// The agency the node's config names.
        configured: String,
    },
    /// The old data folder could not be moved aside.
    #[error("moving {} aside: {source}", .path.display())]
    MoveAside {
        /// The data folder.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// The restored audit log could not be read for verification.
    #[error(transparent)]
    Audit(#[from] crate::audit::AuditError),
}

/// What a backup says about itself.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BackupMeta {
    /// The agency whose node it is.
    pub agency: String,
    /// When it was taken (RFC 3339).
    pub taken_at: String,
    /// Pairs in it (filled in by readers from the trailer).
    #[serde(default)]
    pub pairs: u64,
}

struct Hashing<W: Write> {
    inner: W,
    hasher: Sha256,
}

impl<W: Write> Write for Hashing<W> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.hasher.update(buf.get(..n).unwrap_or_default());
        Ok(n)
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.inner.flush()
    }
}

/// Writes a backup of `db` to `path` (atomically: a temporary file, then a rename). Returns the
/// number of pairs.
pub fn write_backup(db: &Db, meta: &BackupMeta, path: &Path) -> Result<u64, BackupError> {
    let tmp = path.with_extension("partial");
    let file = crate::private::create_new(&tmp).map_err(std::io::Error::other)?;
    let mut w = Hashing {
        inner: BufWriter::new(file),
        hasher: Sha256::new(),
    };
    w.write_all(MAGIC)?;
    let meta_line = serde_json::to_string(meta).map_err(|e| BackupError::Invalid(e.to_string()))?;
    w.write_all(meta_line.as_bytes())?;
    w.write_all(b"\n")?;
    let mut io_err: Option<std::io::Error> = None;
    let n = db.snapshot(|k, v| {
        let r = (|| {
            w.write_all(&u32::try_from(k.len()).unwrap_or(u32::MAX).to_be_bytes())?;
            w.write_all(k)?;
            w.write_all(&u32::try_from(v.len()).unwrap_or(u32::MAX).to_be_bytes())?;
            w.write_all(v)
        })();
        r.map_err(|e| {
            let msg = e.to_string();
            io_err = Some(e);
            StoreError::Backend(msg)
        })
    });
    if let Some(e) = io_err {
        let _ = std::fs::remove_file(&tmp);
        return Err(e.into());
    }
    let n = n?;
    let digest = w.hasher.finalize();
    let mut inner = w.inner;
    inner.write_all(TRAILER)?;
    inner.write_all(&n.to_be_bytes())?;
    inner.write_all(&digest)?;
    inner.flush()?;
    inner.into_inner().map_err(|e| e.into_error())?.sync_all()?;
    std::fs::rename(&tmp, path)?;
    Ok(n)
}

fn read_exact_or(r: &mut impl Read, buf: &mut [u8], what: &str) -> Result<(), BackupError> {
    r.read_exact(buf)
        .map_err(|_| BackupError::Invalid(format!("the file ends inside {what}")))
}

/// Receives each stored pair of a backup being read.
type PairSink<'a> = &'a mut dyn FnMut(Vec<u8>, Vec<u8>) -> Result<(), BackupError>;

/// Reads a backup, calling `pair` for each stored pair (after checking the whole file when
/// `pair` is `None`). Returns its metadata with the pair count.
fn scan(path: &Path, mut pair: Option<PairSink<'_>>) -> Result<BackupMeta, BackupError> {
    let len = std::fs::metadata(path)?.len();
    let trailer_len = (TRAILER.len() + 8 + 32) as u64;
    if len < MAGIC.len() as u64 + trailer_len {
        return Err(BackupError::Invalid("too short".into()));
    }
    let mut r = BufReader::new(std::fs::File::open(path)?).take(len - trailer_len);
    let mut hasher = Sha256::new();
    let mut magic = vec![0u8; MAGIC.len()];
    read_exact_or(&mut r, &mut magic, "the header")?;
    if magic != MAGIC {
        return Err(BackupError::Invalid(
            "it does not start with THROUGHGATE-BACKUP/1".into(),
        ));
    }
    hasher.update(&magic);
    let mut meta_line = Vec::new();
    loop {
        let mut b = [0u8; 1];
        read_exact_or(&mut r, &mut b, "the metadata")?;
        hasher.update(b);
        if b[0] == b'\n' {
            break;
        }
        meta_line.push(b[0]);
        if meta_line.len() > MAX_META {
            return Err(BackupError::Invalid("metadata line too long".into()));
        }
    }
    let mut meta: BackupMeta = serde_json::from_slice(&meta_line)
        .map_err(|e| BackupError::Invalid(format!("metadata: {e}")))?;
    let mut count = 0u64;
    loop {
        let mut lenb = [0u8; 4];
        match r.read(&mut lenb[..1])? {
            0 => break,
            _ => read_exact_or(&mut r, &mut lenb[1..], "a key length")?,
        }
        hasher.update(lenb);
        let klen = u32::from_be_bytes(lenb) as usize;
        if klen > MAX_KEY {
            return Err(BackupError::Invalid(format!(
                "pair {count}: key of {klen} bytes"
            )));
        }
        let mut k = vec![0u8; klen];
        read_exact_or(&mut r, &mut k, "a key")?;
        hasher.update(&k);
        read_exact_or(&mut r, &mut lenb, "a value length")?;
        hasher.update(lenb);
        let vlen = u32::from_be_bytes(lenb) as usize;
        if vlen > MAX_VALUE {
            return Err(BackupError::Invalid(format!(
                "pair {count}: value of {vlen} bytes"
            )));
        }
        let mut v = vec![0u8; vlen];
        read_exact_or(&mut r, &mut v, "a value")?;
        hasher.update(&v);
        if let Some(f) = pair.as_mut() {
            f(k, v)?;
        }
        count += 1;
    }
    let mut trailer = vec![0u8; trailer_len as usize];
    let mut f = r.into_inner();
    f.read_exact(&mut trailer)?;
    let (t, rest) = trailer.split_at(TRAILER.len());
    let (n, digest) = rest.split_at(8);
    let n = u64::from_be_bytes(
        n.try_into()
            .map_err(|_| BackupError::Invalid("trailer".into()))?,
    );
    if t != TRAILER || n != count || digest != hasher.finalize().as_slice() {
        return Err(BackupError::Invalid(
            "its trailer does not match its content (truncated or altered)".into(),
        ));
    }
    meta.pairs = count;
    Ok(meta)
}

/// Checks a backup file completely without restoring it.
pub fn check_backup(path: &Path) -> Result<BackupMeta, BackupError> {
    scan(path, None)
}

/// Restores a checked backup into `store`, which must be empty.
pub fn restore_backup(path: &Path, store: &dyn Store) -> Result<BackupMeta, BackupError> {
    check_backup(path)?;
    if !store.scan(b"", None, 1)?.is_empty() {
        return Err(BackupError::NotEmpty("the target store".into()));
    }
    let mut batch = WriteBatch::new();
    let mut apply = |k: Vec<u8>, v: Vec<u8>| -> Result<(), BackupError> {
        batch.put(k, v);
        if batch.len() >= 10_000 {
            store.apply(std::mem::take(&mut batch))?;
        }
        Ok(())
    };
    let meta = scan(path, Some(&mut apply))?;
    store.apply(batch)?;
    store.flush()?;
    Ok(meta)
}

/// What [`restore_node`] did.
#[derive(Debug)]
pub struct Restored {
    /// The backup's description of itself (agency, when taken, pairs).
    pub meta: BackupMeta,
    /// The data folder restored into.
    pub data_dir: PathBuf,
    /// Where the data folder that was there before went (with `force`), if it held data.
    pub moved_aside: Option<PathBuf>,
    /// The restored audit log's full verification.
    pub verification: Verification,
}

/// Restores the backup at `from` into the data folder of the stopped node `config` describes:
/// checks the whole file and that it is this agency's before touching anything, moves a data
/// folder that holds data aside (to `<data_dir>.replaced-<now>`) only when `force` is given,
/// restores into a fresh sled store, and verifies the restored audit log against every key the
/// node has signed with. A log that does not verify is reported in `verification`, not as an
/// error: the data is restored either way.
pub fn restore_node(
    config: &NodeConfig,
    from: &Path,
    force: bool,
    now: throughgate_protocol::time::Timestamp,
) -> Result<Restored, BackupError> {
    let meta = check_backup(from)?;
    if meta.agency != config.agency.as_str() {
        return Err(BackupError::WrongAgency {
            backup: meta.agency,
            configured: config.agency.to_string(),
        });
    }
    let data_dir = config.resolve(&config.data_dir);
    let holds_data = std::fs::read_dir(&data_dir).is_ok_and(|mut d| d.next().is_some());
    let mut moved_aside = None;
    if holds_data {
        if !force {
            return Err(BackupError::DataFolderNotEmpty(data_dir));
        }
        let aside = data_dir.with_extension(format!("replaced-{}", now.0));
        std::fs::rename(&data_dir, &aside).map_err(|source| BackupError::MoveAside {
            path: data_dir.clone(),
            source,
        })?;
        moved_aside = Some(aside);
    }
    let store = Arc::new(SledStore::open(&data_dir)?);
    let meta = restore_backup(from, store.as_ref())?;
    let db = Db::new(store);
    let origin = throughgate_protocol::audit::origin(&config.agency);
    let verification = crate::audit::verify_log(&db, &origin, &db.own_keys()?)?;
    Ok(Restored {
        meta,
        data_dir,
        moved_aside,
        verification,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::MemoryStore;
    use std::sync::Arc;

    fn filled() -> Db {
        let db = Db::new(Arc::new(MemoryStore::new()));
        let mut b = WriteBatch::new();
        for i in 0..2500u32 {
            b.put(
                format!("k/{i:05}").into_bytes(),
                vec![u8::try_from(i % 251).unwrap_or(0); (i % 40) as usize],
            );
        }
        db.apply(b).unwrap();
        db
    }

    /// A node config for `agency` whose data folder is `<dir>/data`, and a backup of
    /// [`filled`] said to be of `backup_of`, at `<dir>/b.tgbackup`.
    fn node_and_backup(dir: &Path, agency: &str, backup_of: &str) -> (NodeConfig, PathBuf) {
        let mut config = NodeConfig::parse(&format!(
            "agency = \"{agency}\"\nlisten = \"127.0.0.1:0\"\nkey_file = \"node.key\"\n\
             data_dir = \"data\"\nid_scheme = \"ni_number\"\n"
        ))
        .unwrap();
        config.base_dir = dir.to_path_buf();
        let path = dir.join("b.tgbackup");
        let meta = BackupMeta {
            agency: backup_of.into(),
            taken_at: "now".into(),
            pairs: 0,
        };
        write_backup(&filled(), &meta, &path).unwrap();
        (config, path)
    }

    #[test]
    fn a_node_restores_into_an_empty_folder_and_its_log_is_verified() {
        let dir = tempfile::tempdir().unwrap();
        let (config, backup) = node_and_backup(dir.path(), "dwp", "dwp");
        let now = throughgate_protocol::time::Timestamp(77);
        let r = restore_node(&config, &backup, false, now).unwrap();
        assert_eq!(r.meta.pairs, 2500);
        assert_eq!(r.data_dir, dir.path().join("data"));
        assert_eq!(r.moved_aside, None);
        assert!(r.verification.ok(), "{:?}", r.verification);
        drop(r);
        let store = SledStore::open(&dir.path().join("data")).unwrap();
        assert_eq!(store.count(b"k/").unwrap(), 2500);
        drop(store);

        // A backup whose log claims entries it does not hold is restored, and the
        // verification of the restored log says so.
        let db = filled();
        let mut w = crate::db::AuditWrites::default();
        w.state(&crate::db::AuditState {
            size: 3,
            border: Vec::new(),
        });
        db.apply(w.0).unwrap();
        let meta = BackupMeta {
            agency: "dwp".into(),
            taken_at: "now".into(),
            pairs: 0,
        };
        write_backup(&db, &meta, &backup).unwrap();
        let r = restore_node(&config, &backup, true, now).unwrap();
        assert_eq!(r.meta.pairs, 2501);
        let problem = r.verification.problem.expect("the log lacks its entries");
        assert_eq!(problem.entry, Some(0), "{problem:?}");
    }

    #[test]
    fn a_node_refuses_another_agencys_backup_and_a_folder_holding_data_unless_forced() {
        let dir = tempfile::tempdir().unwrap();
        let (config, backup) = node_and_backup(dir.path(), "dwp", "nhs-wy");
        let now = throughgate_protocol::time::Timestamp(77);
        match restore_node(&config, &backup, true, now) {
            Err(BackupError::WrongAgency { backup, configured }) => {
                assert_eq!((backup.as_str(), configured.as_str()), ("nhs-wy", "dwp"));
            }
            other => panic!("{other:?}"),
        }
        assert!(!dir.path().join("data").exists(), "nothing was written");

        let (config, backup) = node_and_backup(dir.path(), "dwp", "dwp");
        let data = dir.path().join("data");
        std::fs::create_dir_all(&data).unwrap();
        std::fs::write(data.join("old"), b"the old store").unwrap();
        match restore_node(&config, &backup, false, now) {
            Err(e @ BackupError::DataFolderNotEmpty(_)) => {
                assert!(e.to_string().contains("pass --force"), "{e}");
            }
            other => panic!("{other:?}"),
        }
        assert_eq!(std::fs::read(data.join("old")).unwrap(), b"the old store");

        let r = restore_node(&config, &backup, true, now).unwrap();
        let aside = dir.path().join("data.replaced-77");
        assert_eq!(r.moved_aside.as_deref(), Some(aside.as_path()));
        assert_eq!(std::fs::read(aside.join("old")).unwrap(), b"the old store");
        assert_eq!(r.meta.pairs, 2500);
        assert!(r.verification.ok(), "{:?}", r.verification);
    }

    #[test]
    fn round_trip_and_tamper_detection() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("b.tgbackup");
        let db = filled();
        let meta = BackupMeta {
            agency: "dwp".into(),
            taken_at: "now".into(),
            pairs: 0,
        };
        assert_eq!(write_backup(&db, &meta, &path).unwrap(), 2500);
        assert_eq!(check_backup(&path).unwrap().pairs, 2500);
        let target = MemoryStore::new();
        restore_backup(&path, &target).unwrap();
        assert_eq!(target.count(b"k/").unwrap(), 2500);
        assert_eq!(
            target.get(b"k/01234").unwrap(),
            db.store().get(b"k/01234").unwrap()
        );
        // Restoring over data is refused.
        assert!(matches!(
            restore_backup(&path, &target),
            Err(BackupError::NotEmpty(_))
        ));
        // One flipped byte, or a cut, is caught before anything is written.
        let mut bytes = std::fs::read(&path).unwrap();
        let mid = bytes.len() / 2;
        bytes[mid] ^= 1;
        std::fs::write(&path, &bytes).unwrap();
        let empty = MemoryStore::new();
        assert!(matches!(
            restore_backup(&path, &empty),
            Err(BackupError::Invalid(_))
        ));
        assert_eq!(empty.count(b"").unwrap(), 0);
        bytes[mid] ^= 1;
        bytes.truncate(bytes.len() - 10);
        std::fs::write(&path, &bytes).unwrap();
        assert!(check_backup(&path).is_err());
    }
}
