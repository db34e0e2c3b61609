//! Backups: a consistent snapshot of a node's whole store, taken while it runs (writes pause
//! for the moment of the copy), in a self-checking file; and restore into an empty store.
//!
//! File format: the line `THROUGHGATE-BACKUP/2`, a JSON metadata line, then for every stored
//! pair a 4-byte big-endian key length, the key, a 4-byte big-endian value length, the value;
//! then the trailer `END`, the pair count (8 bytes big-endian), the SHA-256 D of every byte
//! before the trailer, the node's 32-byte public key and its Ed25519 signature over
//! `"throughgate/2 backup" 0x00 || count || D` (its own domain: no protocol message's signing
//! input starts so). Restore checks the whole file, and the signature against the node keys the
//! federation manifest lists for the agency (never a key the file carries on its own say), before
//! writing anything; then checks what it restored.

use std::io::{BufReader, BufWriter, Read, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use throughgate_protocol::envelope::SignerRole;
use throughgate_protocol::keys::{PublicKey, SecretKey};
use throughgate_protocol::manifest::Manifest;

use crate::audit::Verification;
use crate::config::NodeConfig;
use crate::db::Db;
pub use crate::db::{RestoreNote, RESTORED_KEY};
use crate::store::{SledStore, Store, StoreError, WriteBatch};

const MAGIC: &[u8] = b"THROUGHGATE-BACKUP/2\n";
const TRAILER: &[u8] = b"END";
/// The domain of a backup's signature.
const SIGNING_DOMAIN: &[u8] = b"throughgate/2 backup\x00";
const MAX_KEY: usize = 64 * 1024;
const MAX_VALUE: usize = 64 * 1024 * 1024;
const MAX_META: usize = 64 * 1024;

/// A backup problem.
#[allow(missing_docs)] // variant fields are named by the #[error] message
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
    WrongAgency { backup: String, configured: String },
    /// The old data folder could not be moved aside.
    #[error("moving {} aside: {source}", .path.display())]
    MoveAside {
        path: PathBuf,
        source: std::io::Error,
    },
    /// The restored audit log could not be read for verification.
    #[error(transparent)]
    Audit(#[from] crate::audit::AuditError),
    /// The backup is not signed by a node key the manifest lists for its agency.
    #[error("the backup is not signed by a node key the manifest lists for {agency}: {detail}; it may have been altered, or taken by another node: do not restore it")]
    Unsigned { agency: String, detail: String },
    /// The manifest given to check the backup against is not usable.
    #[error("the manifest to check the backup against: {0}")]
    Manifest(String),
    /// Something restored does not verify (a staff credential, a consent).
    #[error("the backup's content does not verify: {0}; do not use it")]
    Content(String),
    /// The node is running on the data folder.
    #[error("the node is running on {}: stop it before restoring ({source})", .path.display())]
    NodeRunning { path: PathBuf, source: StoreError },
}

/// The integrity-checked trailer of a backup, before its signature is checked.
#[derive(Debug, Clone)]
struct Sealed {
    meta: BackupMeta,
    digest: [u8; 32],
    signer: PublicKey,
    signature: [u8; 64],
}

fn signing_input(count: u64, digest: &[u8; 32]) -> Vec<u8> {
    let mut v = SIGNING_DOMAIN.to_vec();
    v.extend_from_slice(&count.to_be_bytes());
    v.extend_from_slice(digest);
    v
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

/// Writes a backup of `db` to `path`, signed by `key` (atomically: a temporary file, then a
/// rename). Returns the number of pairs.
pub fn write_backup(
    db: &Db,
    meta: &BackupMeta,
    path: &Path,
    key: &SecretKey,
) -> Result<u64, BackupError> {
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
            io_err = Some(e);
            StoreError::Internal("writing the backup failed")
        })
    });
    if let Some(e) = io_err {
        let _ = std::fs::remove_file(&tmp);
        return Err(e.into());
    }
    let n = n?;
    let digest: [u8; 32] = w.hasher.finalize().into();
    let mut inner = w.inner;
    inner.write_all(TRAILER)?;
    inner.write_all(&n.to_be_bytes())?;
    inner.write_all(&digest)?;
    inner.write_all(key.public().as_bytes())?;
    inner.write_all(&key.sign(&signing_input(n, &digest)))?;
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
fn scan(path: &Path, mut pair: Option<PairSink<'_>>) -> Result<Sealed, BackupError> {
    let len = std::fs::metadata(path)?.len();
    let trailer_len = (TRAILER.len() + 8 + 32 + 32 + 64) as u64;
    if len < MAGIC.len() as u64 + trailer_len {
        return Err(BackupError::Invalid("too short".into()));
    }
    let mut r = BufReader::new(std::fs::File::open(path)?).take(len - trailer_len);
    let mut hasher = Sha256::new();
    let mut magic = vec![0u8; MAGIC.len()];
    read_exact_or(&mut r, &mut magic, "the header")?;
    if magic != MAGIC {
        return Err(BackupError::Invalid(
            "it does not start with THROUGHGATE-BACKUP/2 (a backup of another version, or not a backup)".into(),
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
    let bad_trailer = || {
        BackupError::Invalid("its trailer does not match its content (truncated or altered)".into())
    };
    let (t, rest) = trailer.split_at(TRAILER.len());
    let (n, rest) = rest.split_at(8);
    let (digest, rest) = rest.split_at(32);
    let (signer, signature) = rest.split_at(32);
    let n = u64::from_be_bytes(n.try_into().map_err(|_| bad_trailer())?);
    let computed: [u8; 32] = hasher.finalize().into();
    if t != TRAILER || n != count || digest != computed.as_slice() {
        return Err(bad_trailer());
    }
    let signer = signer
        .try_into()
        .ok()
        .and_then(|b: [u8; 32]| PublicKey::from_bytes(b).ok())
        .ok_or_else(|| BackupError::Invalid("its signing key is not a valid key".into()))?;
    let signature: [u8; 64] = signature.try_into().map_err(|_| bad_trailer())?;
    meta.pairs = count;
    Ok(Sealed {
        meta,
        digest: computed,
        signer,
        signature,
    })
}

/// Checks a backup file's integrity completely without restoring it (not its signature: see
/// [`verify_backup`]).
pub fn check_backup(path: &Path) -> Result<BackupMeta, BackupError> {
    scan(path, None).map(|s| s.meta)
}

/// Checks a backup file completely, and that it is signed by one of `keys` (the node keys a
/// trusted manifest lists for the backup's agency). Returns its metadata.
pub fn verify_backup(path: &Path, keys: &[PublicKey]) -> Result<BackupMeta, BackupError> {
    let sealed = scan(path, None)?;
    check_sealed(&sealed, keys)?;
    Ok(sealed.meta)
}

fn check_sealed(sealed: &Sealed, keys: &[PublicKey]) -> Result<(), BackupError> {
    let unsigned = |detail: String| BackupError::Unsigned {
        agency: sealed.meta.agency.clone(),
        detail,
    };
    if !keys.contains(&sealed.signer) {
        return Err(unsigned(format!(
            "it is signed by key {}, which the manifest does not list for this agency",
            sealed.signer.fingerprint()
        )));
    }
    if sealed.signer.verify_strict(
        &signing_input(sealed.meta.pairs, &sealed.digest),
        &sealed.signature,
    ) {
        Ok(())
    } else {
        Err(unsigned("the signature does not verify".into()))
    }
}

/// The node keys `manifest` lists for `agency`, after checking the manifest's own governance
/// signatures (at `now`).
pub fn manifest_keys(
    manifest: &throughgate_protocol::envelope::Envelope,
    agency: &throughgate_protocol::ids::AgencyId,
    now: throughgate_protocol::time::Timestamp,
) -> Result<(Manifest, Vec<PublicKey>), BackupError> {
    let m = throughgate_protocol::manifest::verify_manifest(manifest, None, now)
        .map_err(|e| BackupError::Manifest(e.to_string()))?;
    let keys = m
        .member(agency)
        .map(|me| me.node_keys.clone())
        .ok_or_else(|| BackupError::Manifest(format!("it does not list {agency}")))?;
    Ok((m, keys))
}

/// Restores a backup into `store`, which must be empty, after checking the whole file and its
/// signature by one of `keys`.
pub fn restore_backup(
    path: &Path,
    store: &dyn Store,
    keys: &[PublicKey],
) -> Result<BackupMeta, BackupError> {
    verify_backup(path, keys)?;
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
    let sealed = scan(path, Some(&mut apply))?;
    // The file could have changed since it was checked: check what was actually read.
    check_sealed(&sealed, keys)?;
    store.apply(batch)?;
    store.flush()?;
    Ok(sealed.meta)
}

/// What [`restore_node`] did.
#[derive(Debug)]
pub struct Restored {
    /// The backup's description of itself (agency, when taken, pairs).
    pub meta: BackupMeta,
    /// Where it was restored: the data folder, or `None` for the node's PostgreSQL database.
    pub data_dir: Option<PathBuf>,
    /// Where the data folder that was there before went (with `force`), if it held data.
    pub moved_aside: Option<PathBuf>,
    /// The restored audit log's full verification.
    pub verification: Verification,
}

/// Checks what a restore wrote: every staff credential is this agency's, decodes to the body
/// stored with it, and is signed by one of `own` (the manifest's keys for this agency and the
/// keys the signed backup says this node has signed with); every consent decodes to the body
/// stored with it and is signed by a node key of its recorder valid when it was recorded (in
/// `manifest`'s key history, or one of `own` for a consent recorded here).
fn check_content(
    db: &Db,
    config: &NodeConfig,
    manifest: &Manifest,
    own: &[PublicKey],
) -> Result<(), BackupError> {
    for s in db.all_staff()? {
        let who = s.body.person_id.clone();
        let bad = |why: &str| BackupError::Content(format!("the staff credential of {who} {why}"));
        if s.body.agency != config.agency {
            return Err(bad("is for another agency"));
        }
        let body: throughgate_protocol::credential::Credential =
            s.credential.open().map_err(|_| bad("does not decode"))?;
        if body != s.body {
            return Err(bad("differs from its signed form"));
        }
        s.credential
            .verify_by_any(SignerRole::Node, own)
            .map_err(|_| bad("is not signed by this node's keys"))?;
    }
    for c in db.all_consents()? {
        let id = c.body.consent_id.clone();
        let bad = |why: &str| BackupError::Content(format!("consent {id} {why}"));
        let body: throughgate_protocol::consent::Consent =
            c.envelope.open().map_err(|_| bad("does not decode"))?;
        if body != c.body {
            return Err(bad("differs from its signed form"));
        }
        // The recorder's keys valid when it recorded the consent: a key it has since rotated
        // out still vouches for what it signed before (the manifest's key history).
        let mut keys = manifest
            .member(&body.recorded_by)
            .map(|m| m.keys_valid_at(body.recorded_at))
            .unwrap_or_default();
        if body.recorded_by == config.agency {
            keys.extend_from_slice(own);
        }
        c.envelope
            .verify_by_any(SignerRole::Node, &keys)
            .map_err(|_| bad("is not signed by its recording agency's node"))?;
    }
    Ok(())
}

/// Restores `from` into a fresh store at `dir`, checks its content and log, and leaves the note
/// for the first start.
fn restore_into(
    from: &Path,
    config: &NodeConfig,
    dir: &Path,
    keys: &[PublicKey],
    manifest: &Manifest,
    now: throughgate_protocol::time::Timestamp,
    log_size_before: Option<u64>,
) -> Result<(BackupMeta, Verification), BackupError> {
    let store = Arc::new(SledStore::open(dir)?);
    let meta = restore_backup(from, store.as_ref(), keys)?;
    let db = Db::new(store.clone());
    let mut own = db.own_keys()?;
    own.extend(keys.iter().copied());
    check_content(&db, config, manifest, &own)?;
    let origin = throughgate_protocol::audit::origin(&config.agency);
    let verification = crate::audit::verify_log(&db, &origin, &own)?;
    let note = RestoreNote {
        taken_at: meta.taken_at.clone(),
        restored_at: now,
        log_size_before,
        log_size_after: db.audit_state()?.map_or(0, |s| s.size),
    };
    let mut b = WriteBatch::new();
    b.put(
        RESTORED_KEY.to_vec(),
        serde_json::to_vec(&note).map_err(|e| BackupError::Invalid(e.to_string()))?,
    );
    store.apply(b)?;
    store.flush()?;
    Ok((meta, verification))
}

/// Restores the backup at `from` into the data folder of the stopped node `config` describes.
/// Before touching anything: checks the whole file, that it is this agency's, and that it is
/// signed by a node key `manifest` (a federation manifest the operator trusts, verified here at
/// `now`) lists for the agency. Refuses while a node runs on the data folder (its store is
/// locked). Moves a data folder that holds data aside (to `<data_dir>.replaced-<now>`) only when
/// `force` is given, restores into a fresh sled store, re-checks every staff credential and
/// consent, verifies the restored audit log against every key the node has signed with, and
/// leaves a note for the first start to log. A log that does not verify is reported in
/// `verification`, not as an error: the data is restored either way.
pub fn restore_node(
    config: &NodeConfig,
    from: &Path,
    force: bool,
    now: throughgate_protocol::time::Timestamp,
    manifest: &throughgate_protocol::envelope::Envelope,
) -> Result<Restored, BackupError> {
    let meta = check_backup(from)?;
    if meta.agency != config.agency.as_str() {
        return Err(BackupError::WrongAgency {
            backup: meta.agency,
            configured: config.agency.to_string(),
        });
    }
    let (manifest, keys) = manifest_keys(manifest, &config.agency, now)?;
    verify_backup(from, &keys)?;
    if config.storage.backend == crate::config::Backend::Postgres {
        return restore_database(config, from, now, &keys, &manifest);
    }
    let data_dir = config.resolve(&config.data_dir);
    let holds_data = std::fs::read_dir(&data_dir).is_ok_and(|mut d| d.next().is_some());
    let mut old = None;
    let mut log_size_before = None;
    if holds_data {
        if !force {
            return Err(BackupError::DataFolderNotEmpty(data_dir));
        }
        // Opening the store takes its lock, which a running node holds. It is held until the
        // folder has been moved aside, so no node can start on it meanwhile.
        let store = SledStore::open(&data_dir).map_err(|source| BackupError::NodeRunning {
            path: data_dir.clone(),
            source,
        })?;
        let db = Db::new(Arc::new(store));
        log_size_before = db.audit_state().ok().flatten().map(|s| s.size);
        old = Some(db);
    }
    // Restored and checked beside the data folder; it replaces it only once all is well.
    let staging = data_dir.with_extension(format!("restoring-{}", now.0));
    let restored = restore_into(
        from,
        config,
        &staging,
        &keys,
        &manifest,
        now,
        log_size_before,
    );
    let (meta, verification) = match restored {
        Ok(r) => r,
        Err(e) => {
            let _ = std::fs::remove_dir_all(&staging);
            return Err(e);
        }
    };
    let mut moved_aside = None;
    if holds_data {
        let aside = data_dir.with_extension(format!("replaced-{}", now.0));
        std::fs::rename(&data_dir, &aside).map_err(|source| BackupError::MoveAside {
            path: data_dir.clone(),
            source,
        })?;
        moved_aside = Some(aside);
    } else if data_dir.exists() {
        // An empty folder.
        std::fs::remove_dir(&data_dir)?;
    }
    drop(old);
    std::fs::rename(&staging, &data_dir)?;
    Ok(Restored {
        meta,
        data_dir: Some(data_dir),
        moved_aside,
        verification,
    })
}

/// [`restore_node`] for a node whose state lives in PostgreSQL. The backup is restored and
/// checked in a sled store beside the config first, exactly as for sled; only then is it copied
/// into the database, which must be empty (create a new database for a restore: a running
/// replica would have written to it, so this also refuses while one runs). A marker
/// ([`crate::store::RESTORE_INCOMPLETE`]) written first and removed last keeps every node off a
/// database whose copy did not finish; running the restore again replaces such a copy.
fn restore_database(
    config: &NodeConfig,
    from: &Path,
    now: throughgate_protocol::time::Timestamp,
    keys: &[PublicKey],
    manifest: &Manifest,
) -> Result<Restored, BackupError> {
    use crate::store::{PostgresStore, RESTORE_INCOMPLETE};
    let url = crate::store::postgres_url(config)?;
    let database = PostgresStore::open(&url)?;
    let unfinished = database.get(RESTORE_INCOMPLETE)?.is_some();
    if !unfinished && !database.scan(b"", None, 1)?.is_empty() {
        return Err(BackupError::NotEmpty(
            "the node's PostgreSQL database (stop every replica, create an empty database, point \
             storage.url_file at it, and restore again)"
                .into(),
        ));
    }
    let staging_parent = tempfile::Builder::new()
        .prefix(".restoring-")
        .tempdir_in(config.resolve(std::path::Path::new(".")))?;
    let staging = staging_parent.path().join("data");
    let (meta, verification) = restore_into(from, config, &staging, keys, manifest, now, None)?;
    let staged = SledStore::open(&staging)?;
    let mut marker = WriteBatch::new();
    marker.put(RESTORE_INCOMPLETE.to_vec(), now.0.to_string().into_bytes());
    database.apply(marker)?;
    if unfinished {
        // What an unfinished restore wrote goes first.
        loop {
            let page = database.scan(b"", None, 10_000)?;
            let mut b = WriteBatch::new();
            for (k, _) in page
                .iter()
                .filter(|(k, _)| k.as_slice() != RESTORE_INCOMPLETE)
            {
                b.delete(k.clone());
            }
            if b.is_empty() {
                break;
            }
            database.apply(b)?;
        }
    }
    let mut batch = WriteBatch::new();
    let mut failed = None;
    staged.visit(b"", None, &mut |k, v| {
        batch.put(k.to_vec(), v.to_vec());
        if batch.len() >= 10_000 {
            if let Err(e) = database.apply(std::mem::take(&mut batch)) {
                failed = Some(e);
                return false;
            }
        }
        true
    })?;
    if let Some(e) = failed {
        return Err(e.into());
    }
    batch.delete(RESTORE_INCOMPLETE.to_vec());
    database.apply(batch)?;
    Ok(Restored {
        meta,
        data_dir: None,
        moved_aside: None,
        verification,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::MemoryStore;
    use std::sync::Arc;
    use throughgate_protocol::envelope::Envelope;
    use throughgate_protocol::manifest::{Governance, Member, MemberRole, Sector};
    use throughgate_protocol::time::Timestamp;

    const NOW: Timestamp = Timestamp(1_000_000);

    /// The node key of the agency being backed up.
    fn node_key() -> SecretKey {
        SecretKey::from_seed(&[9; 32])
    }

    /// A key the manifest does not list for the agency.
    fn outsider() -> SecretKey {
        SecretKey::from_seed(&[66; 32])
    }

    /// A manifest listing `dwp` (with [`node_key`]) and `nhs-wy`, signed by its governance key.
    fn manifest() -> Envelope {
        let gov = SecretKey::from_seed(&[1; 32]);
        let member = |id: &str, key: &SecretKey| Member {
            id: throughgate_protocol::ids::AgencyId::new(id).unwrap(),
            name: id.to_uppercase(),
            sector: Sector::Welfare,
            addresses: vec!["127.0.0.1:1".into()],
            node_keys: vec![key.public()],
            categories: vec![],
            id_scheme: throughgate_protocol::identifiers::IdScheme::NiNumber,
            roles: vec![MemberRole::Requester],
            retired_keys: vec![],
        };
        let m = Manifest {
            federation: "test".into(),
            version: 1,
            issued_at: Timestamp(NOW.0 - 10),
            expires_at: Timestamp(NOW.0 + 86_400),
            members: vec![
                member("dwp", &node_key()),
                member("nhs-wy", &SecretKey::from_seed(&[3; 32])),
            ],
            governance: Governance {
                keys: vec![gov.public()],
                threshold: 1,
            },
            witness_threshold: 0,
        };
        Envelope::seal(&m, &[(SignerRole::Governance, &gov)])
    }

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

    fn meta(agency: &str) -> BackupMeta {
        BackupMeta {
            agency: agency.into(),
            taken_at: "2026-01-01T00:00:00Z".into(),
            pairs: 0,
        }
    }

    fn config_for(dir: &Path, agency: &str) -> NodeConfig {
        let mut config = NodeConfig::parse(&format!(
            "agency = \"{agency}\"\nlisten = \"127.0.0.1:0\"\nkey_file = \"node.key\"\n\
             data_dir = \"data\"\nid_scheme = \"ni_number\"\n"
        ))
        .unwrap();
        config.base_dir = dir.to_path_buf();
        config
    }

    /// A node config for `agency` whose data folder is `<dir>/data`, and a backup of
    /// [`filled`] said to be of `backup_of`, signed by [`node_key`], at `<dir>/b.tgbackup`.
    fn node_and_backup(dir: &Path, agency: &str, backup_of: &str) -> (NodeConfig, PathBuf) {
        let path = dir.join("b.tgbackup");
        write_backup(&filled(), &meta(backup_of), &path, &node_key()).unwrap();
        (config_for(dir, agency), path)
    }

    #[test]
    fn a_node_restores_into_an_empty_folder_and_its_log_is_verified() {
        let dir = tempfile::tempdir().unwrap();
        let (config, backup) = node_and_backup(dir.path(), "dwp", "dwp");
        let r = restore_node(&config, &backup, false, NOW, &manifest()).unwrap();
        assert_eq!(r.meta.pairs, 2500);
        assert_eq!(r.data_dir, Some(dir.path().join("data")));
        assert_eq!(r.moved_aside, None);
        assert!(r.verification.ok(), "{:?}", r.verification);
        drop(r);
        let store = Arc::new(SledStore::open(&dir.path().join("data")).unwrap());
        assert_eq!(store.count(b"k/").unwrap(), 2500);
        // The note the first start logs.
        let note = Db::new(store.clone()).restore_note().unwrap().unwrap();
        assert_eq!(
            (
                note.taken_at.as_str(),
                note.log_size_before,
                note.log_size_after
            ),
            ("2026-01-01T00:00:00Z", None, 0)
        );
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
        write_backup(&db, &meta("dwp"), &backup, &node_key()).unwrap();
        let r = restore_node(&config, &backup, true, Timestamp(NOW.0 + 1), &manifest()).unwrap();
        assert_eq!(r.meta.pairs, 2501);
        let problem = r.verification.problem.expect("the log lacks its entries");
        assert_eq!(problem.entry, Some(0), "{problem:?}");
    }

    #[test]
    fn a_node_refuses_another_agencys_backup_and_a_folder_holding_data_unless_forced() {
        let dir = tempfile::tempdir().unwrap();
        let (config, backup) = node_and_backup(dir.path(), "dwp", "nhs-wy");
        match restore_node(&config, &backup, true, NOW, &manifest()) {
            Err(BackupError::WrongAgency { backup, configured }) => {
                assert_eq!((backup.as_str(), configured.as_str()), ("nhs-wy", "dwp"));
            }
            other => panic!("{other:?}"),
        }
        assert!(!dir.path().join("data").exists(), "nothing was written");

        let (config, backup) = node_and_backup(dir.path(), "dwp", "dwp");
        let data = dir.path().join("data");
        {
            // The data folder holds a store (a stopped node's).
            let old = SledStore::open(&data).unwrap();
            let mut b = WriteBatch::new();
            b.put(b"old".to_vec(), b"the old store".to_vec());
            old.apply(b).unwrap();
            old.flush().unwrap();
        }
        match restore_node(&config, &backup, false, NOW, &manifest()) {
            Err(e @ BackupError::DataFolderNotEmpty(_)) => {
                assert!(e.to_string().contains("pass --force"), "{e}");
            }
            other => panic!("{other:?}"),
        }
        let r = restore_node(&config, &backup, true, NOW, &manifest()).unwrap();
        let aside = dir.path().join(format!("data.replaced-{}", NOW.0));
        assert_eq!(r.moved_aside.as_deref(), Some(aside.as_path()));
        let old = SledStore::open(&aside).unwrap();
        assert_eq!(old.get(b"old").unwrap().unwrap(), b"the old store");
        assert_eq!(r.meta.pairs, 2500);
        assert!(r.verification.ok(), "{:?}", r.verification);
    }

    #[test]
    fn a_backup_not_signed_by_a_key_the_manifest_lists_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let config = config_for(dir.path(), "dwp");
        let path = dir.path().join("b.tgbackup");
        // Signed by a key of another member, and by a key nobody lists.
        for key in [SecretKey::from_seed(&[3; 32]), outsider()] {
            write_backup(&filled(), &meta("dwp"), &path, &key).unwrap();
            match restore_node(&config, &path, false, NOW, &manifest()) {
                Err(BackupError::Unsigned { .. }) => {}
                other => panic!("{other:?}"),
            }
            assert!(!dir.path().join("data").exists(), "nothing was written");
        }
        // Altered, its digest recomputed and re-signed by an outsider who swapped in their own
        // key: the key is not the agency's.
        write_backup(&filled(), &meta("dwp"), &path, &node_key()).unwrap();
        let mut bytes = std::fs::read(&path).unwrap();
        let sig_at = bytes.len() - 64;
        bytes[sig_at] ^= 1;
        std::fs::write(&path, &bytes).unwrap();
        match restore_node(&config, &path, false, NOW, &manifest()) {
            Err(BackupError::Unsigned { detail, .. }) => {
                assert!(detail.contains("does not verify"), "{detail}");
            }
            other => panic!("{other:?}"),
        }
        // A manifest that does not verify is no anchor.
        let mut forged = manifest();
        forged.sigs.clear();
        write_backup(&filled(), &meta("dwp"), &path, &node_key()).unwrap();
        assert!(matches!(
            restore_node(&config, &path, false, NOW, &forged),
            Err(BackupError::Manifest(_))
        ));
        assert!(!dir.path().join("data").exists(), "nothing was written");
    }

    #[test]
    fn a_planted_staff_credential_is_refused_at_restore() {
        let dir = tempfile::tempdir().unwrap();
        let config = config_for(dir.path(), "dwp");
        let path = dir.path().join("b.tgbackup");
        let person = SecretKey::from_seed(&[5; 32]);
        let body = throughgate_protocol::credential::Credential {
            person_id: throughgate_protocol::ids::PersonId::new("op-evil").unwrap(),
            display_name: "Planted".into(),
            agency: config.agency.clone(),
            roles: vec![throughgate_protocol::credential::StaffRole::Operator],
            public_key: person.public(),
            not_before: Timestamp(NOW.0 - 10),
            not_after: Timestamp(NOW.0 + 86_400),
        };
        let db = filled();
        db.put_staff(&crate::db::StoredStaff {
            credential: Envelope::seal(&body, &[(SignerRole::Node, &outsider())]),
            body: body.clone(),
            revoked_at: None,
            revoked_by: None,
        })
        .unwrap();
        // Even in a backup the node signed (the outsider never had its key, but the check of
        // the content does not depend on that).
        write_backup(&db, &meta("dwp"), &path, &node_key()).unwrap();
        match restore_node(&config, &path, false, NOW, &manifest()) {
            Err(BackupError::Content(what)) => assert!(what.contains("op-evil"), "{what}"),
            other => panic!("{other:?}"),
        }
        assert!(!dir.path().join("data").exists(), "nothing was restored");
        // The same credential issued by the node's own key restores.
        let db = filled();
        db.put_staff(&crate::db::StoredStaff {
            credential: Envelope::seal(&body, &[(SignerRole::Node, &node_key())]),
            body,
            revoked_at: None,
            revoked_by: None,
        })
        .unwrap();
        write_backup(&db, &meta("dwp"), &path, &node_key()).unwrap();
        restore_node(&config, &path, false, NOW, &manifest()).unwrap();
    }

    #[test]
    fn restore_refuses_while_a_node_holds_the_store() {
        let dir = tempfile::tempdir().unwrap();
        let (config, backup) = node_and_backup(dir.path(), "dwp", "dwp");
        let data = dir.path().join("data");
        let running = SledStore::open(&data).unwrap();
        let mut b = WriteBatch::new();
        b.put(b"live".to_vec(), b"the running node's data".to_vec());
        running.apply(b).unwrap();
        match restore_node(&config, &backup, true, NOW, &manifest()) {
            Err(e @ BackupError::NodeRunning { .. }) => {
                assert!(e.to_string().contains("stop it"), "{e}");
            }
            other => panic!("{other:?}"),
        }
        assert_eq!(
            running.get(b"live").unwrap().unwrap(),
            b"the running node's data"
        );
        assert!(!dir.path().join(format!("data.replaced-{}", NOW.0)).exists());
    }

    #[test]
    fn a_consent_signed_by_a_key_its_recorder_retired_since_still_restores() {
        use throughgate_protocol::category::{Category, Purpose};
        use throughgate_protocol::consent::{Collection, CollectionMethod, Consent, HolderScope};
        use throughgate_protocol::credential::{Credential, StaffRole};
        use throughgate_protocol::ids::{AgencyId, ConsentId, PassportId, PersonId};
        use throughgate_protocol::manifest::RetiredKey;
        let agency = |a: &str| AgencyId::new(a).unwrap();
        let (old, new) = (
            SecretKey::from_seed(&[3; 32]),
            SecretKey::from_seed(&[4; 32]),
        );
        let recorded_at = Timestamp(NOW.0 - 100);
        let body = Consent {
            consent_id: ConsentId::random(),
            passport_id: PassportId::random(),
            purpose: Purpose::Resettlement,
            purpose_text: "resettlement".into(),
            holders: vec![HolderScope {
                agency: agency("dwp"),
                categories: vec![Category::FinanceAndId],
                subject_commitment: [0; 32],
            }],
            grantees: vec![agency("nhs-wy")],
            valid_from: recorded_at,
            valid_until: Timestamp(NOW.0 + 3600),
            records_from: None,
            records_until: None,
            legal_basis: "basis".into(),
            jurisdiction: "England and Wales".into(),
            collection: Collection {
                method: CollectionMethod::SignedPaperForm,
                reference: "F-1".into(),
            },
            privacy_notice_sha256: [0; 32],
            recorded_by: agency("nhs-wy"),
            recorded_by_person: PersonId::new("cw-1").unwrap(),
            recorded_at,
            supersedes: None,
            credential: Envelope::seal(
                &Credential {
                    agency: agency("nhs-wy"),
                    person_id: PersonId::new("cw-1").unwrap(),
                    display_name: "Caseworker".into(),
                    roles: vec![StaffRole::Caseworker],
                    public_key: SecretKey::generate().public(),
                    not_before: recorded_at,
                    not_after: Timestamp(NOW.0 + 86_400),
                },
                &[(SignerRole::Node, &old)],
            ),
        };
        let envelope = Envelope::seal(&body, &[(SignerRole::Node, &old)]);
        let db = Db::new(Arc::new(MemoryStore::new()));
        db.put_consent(
            &crate::consent::newly_active(envelope, body, recorded_at),
            None,
            recorded_at,
        )
        .unwrap();
        let dir = tempfile::tempdir().unwrap();
        let config = config_for(dir.path(), "dwp");
        // nhs-wy has rotated to a new key since; the old one is in its key history.
        let rotated = |retired_at: Timestamp| {
            let mut m: Manifest = manifest().open().unwrap();
            let nhs = m
                .members
                .iter_mut()
                .find(|x| x.id.as_str() == "nhs-wy")
                .unwrap();
            nhs.node_keys = vec![new.public()];
            nhs.retired_keys = vec![RetiredKey {
                key: old.public(),
                retired_at,
            }];
            m
        };
        let own = [node_key().public()];
        check_content(&db, &config, &rotated(Timestamp(NOW.0 - 50)), &own).unwrap();
        // A key retired before the consent's recording time does not vouch for it.
        assert!(matches!(
            check_content(&db, &config, &rotated(Timestamp(NOW.0 - 200)), &own),
            Err(BackupError::Content(_))
        ));
    }

    #[test]
    fn round_trip_and_tamper_detection() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("b.tgbackup");
        let db = filled();
        let keys = [node_key().public()];
        assert_eq!(
            write_backup(&db, &meta("dwp"), &path, &node_key()).unwrap(),
            2500
        );
        assert_eq!(check_backup(&path).unwrap().pairs, 2500);
        let target = MemoryStore::new();
        restore_backup(&path, &target, &keys).unwrap();
        assert_eq!(target.count(b"k/").unwrap(), 2500);
        assert_eq!(
            target.get(b"k/01234").unwrap(),
            db.store().get(b"k/01234").unwrap()
        );
        // Restoring over data is refused.
        assert!(matches!(
            restore_backup(&path, &target, &keys),
            Err(BackupError::NotEmpty(_))
        ));
        // One flipped byte, or a cut, is caught before anything is written.
        let mut bytes = std::fs::read(&path).unwrap();
        let mid = bytes.len() / 2;
        bytes[mid] ^= 1;
        std::fs::write(&path, &bytes).unwrap();
        let empty = MemoryStore::new();
        assert!(matches!(
            restore_backup(&path, &empty, &keys),
            Err(BackupError::Invalid(_))
        ));
        assert_eq!(empty.count(b"").unwrap(), 0);
        bytes[mid] ^= 1;
        bytes.truncate(bytes.len() - 10);
        std::fs::write(&path, &bytes).unwrap();
        assert!(check_backup(&path).is_err());
    }
}
