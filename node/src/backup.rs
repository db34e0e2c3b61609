//! Backups: a consistent snapshot of a node's whole store, taken while it runs (writes pause
//! for the moment of the copy), in a self-checking file; and restore into an empty store.
//!
//! File format: the line `THROUGHGATE-BACKUP/1`, a JSON metadata line, then for every stored
//! pair a 4-byte big-endian key length, the key, a 4-byte big-endian value length, the value;
//! then the trailer `END`, the pair count (8 bytes big-endian) and the SHA-256 of every byte
//! before the trailer. Restore checks the whole file before writing anything.

use std::io::{BufReader, BufWriter, Read, Write};
use std::path::Path;

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::db::Db;
use crate::store::{Store, StoreError, WriteBatch};

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
    let file = std::fs::File::create(&tmp)?;
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
