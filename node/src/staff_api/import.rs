//! The import operation on the home node: the operator's CLI uploads a records file as data
//! frames after the signed request. The node writes the upload to a spool file beside its data
//! folder as it arrives (checking the size and SHA-256 on the way, never holding the file in
//! memory), then reads the spool once to check every row (keeping only the problems), and, if
//! every row is good and this is not a dry run, reads it again to store the records in chunks of
//! [`APPLY_CHUNK`].
//!
//! All or nothing, with bounded memory: before the first chunk is stored, a journal
//! ([`ImportJournal`], key `imp/{import_id}`) records the spool file, its SHA-256 and how many
//! records are stored; each chunk is written in one atomic batch with the journal advanced past
//! it. A file with any bad row stores nothing. Once the last chunk is stored the import is
//! logged (`records_import`), the journal removed and the spool deleted. A node that stops or
//! crashes in between finishes the import when it next starts ([`resume`]): the file was checked
//! in full before the first chunk, so it can always be finished. Readers (queries, exports) may
//! see an import's records appear progressively while it is stored.
//!
//! A sync (the request's `sync`) is an import whose file is the complete current snapshot of
//! some record kinds. After the check, [`plan_sync`] counts what it adds, changes, leaves and
//! deletes against the records held; a plan that deletes more than the configured share is
//! refused ([`over_guard`]) unless mass deletion is allowed. The plan goes into the journal:
//! once every record of the file is stored, [`delete_absent`] deletes the records of the synced
//! kinds that the file lacks, a page at a time (deleting again is harmless, so a restart simply
//! runs it again), and only then is the sync logged (`records_sync`, with the plan's counts and
//! the file's SHA-256) and its journal removed. Imports, syncs and deletions reach the store
//! only through a [`RecordsWrite`] guard, held from their check to their last write, so a plan
//! is what happens.

use std::collections::{BTreeSet, HashSet};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use sha2::{Digest, Sha256};
use throughgate_protocol::identifiers::IdScheme;
use throughgate_protocol::messages::{
    ClientResponse, ErrorCode, ImportFormat, ImportReport, ImportRowError, SyncReport, SyncRequest,
};
use throughgate_protocol::record::{valid_name, Record};
use tokio::io::AsyncWriteExt;

use crate::audit::AuditLog;
use crate::clock::Clock;
use crate::config::NodeConfig;
use crate::db::{Db, ImportJournal, StoredStaff};
use crate::import::{digest16, import_each, ImportErrors, ImportLimits};
use crate::records_writer::{RecordsWrite, RecordsWriter};
use crate::state::NodeState;
use crate::store::StoreError;
use crate::transport::{read_frame_charged, FrameIoError};

/// The largest import accepted in one request.
pub const MAX_IMPORT_BYTES: u64 = 512 * 1024 * 1024;
/// The most bad rows reported back.
const MAX_REPORTED_ERRORS: usize = 1000;
/// Records stored per atomic write while an import is applied: sled's memory grows with the
/// size of a batch of keys in random order, and stays flat at a few hundred.
pub const APPLY_CHUNK: usize = 256;
/// The extension of spool files.
const SPOOL_EXT: &str = "spool";

/// Why an import could not be spooled, checked or stored.
#[allow(missing_docs)] // variant fields are named by the #[error] message
#[derive(Debug, thiserror::Error)]
pub enum ImportRunError {
    /// The spool file could not be written or read.
    #[error("import spool file {file}: {source}")]
    Spool {
        file: String,
        source: std::io::Error,
    },
    /// Storage failed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The spool file is not the file that was checked (changed or truncated since).
    #[error("import spool file {file} no longer matches the upload that was checked")]
    SpoolChanged { file: String },
    /// The spool file no longer passes the checks (for example, the node's identifier scheme
    /// was changed in between).
    #[error("import spool file {file} no longer passes the checks: {problems} problems")]
    Recheck { file: String, problems: u64 },
    /// The blocking task that reads the spool failed.
    #[error("the import task failed: {0}")]
    Task(String),
}

/// What importing and syncing records uses of the node, and nothing else: the record store
/// only through [`RecordsWriter`].
#[derive(Clone, Copy, Debug)]
pub struct Importer<'a> {
    /// Where spool files go, the identifier scheme, the upload timeout and the sync guard.
    pub config: &'a NodeConfig,
    /// The clock (import ids).
    pub clock: &'a Clock,
    /// The only way to the record store.
    pub records_writer: &'a RecordsWriter,
    /// Where imports and syncs are logged.
    pub audit: &'a AuditLog,
}

impl<'a> Importer<'a> {
    /// The parts of `state` that importing uses.
    pub fn of(state: &'a NodeState) -> Self {
        Importer {
            config: &state.config,
            clock: &state.clock,
            records_writer: &state.records_writer,
            audit: &state.audit,
        }
    }
}

/// The folder spool files live in: beside the data folder, `<data_dir>.imports`.
pub fn spool_dir(config: &NodeConfig) -> PathBuf {
    let data = config.resolve(&config.data_dir);
    match data.file_name().and_then(|n| n.to_str()) {
        Some(name) => data.with_file_name(format!("{name}.imports")),
        None => data.join("imports"),
    }
}

fn spool_path(dir: &Path, import_id: &str) -> PathBuf {
    dir.join(format!("{import_id}.{SPOOL_EXT}"))
}

/// Deletes a spool file when dropped, unless a journal has taken it over.
struct SpoolGuard {
    path: PathBuf,
    armed: bool,
}

impl Drop for SpoolGuard {
    fn drop(&mut self) {
        if self.armed {
            let _ = std::fs::remove_file(&self.path);
        }
    }
}

/// What checking a spool file found.
enum Checked {
    /// Every row is good: the number of rows and of distinct subjects.
    Good { rows: u64, subjects: u64 },
    /// Problems (at most [`MAX_REPORTED_ERRORS`] kept).
    Bad(ImportErrors),
}

/// Checks every row of a spool file, keeping only counts and problems.
fn check_spool(
    path: &Path,
    format: ImportFormat,
    scheme: IdScheme,
) -> Result<Checked, ImportRunError> {
    let file = open_spool(path)?;
    let mut subjects: HashSet<[u8; 16]> = HashSet::new();
    let result = import_each(
        std::io::BufReader::with_capacity(256 * 1024, file),
        format,
        scheme,
        &limits(),
        MAX_REPORTED_ERRORS,
        &mut |r| {
            subjects.insert(digest16(&r.subject));
            true
        },
    );
    Ok(match result {
        Ok(rows) => Checked::Good {
            rows,
            subjects: subjects.len() as u64,
        },
        Err(errors) => Checked::Bad(errors),
    })
}

fn limits() -> ImportLimits {
    ImportLimits {
        max_bytes: usize::try_from(MAX_IMPORT_BYTES).unwrap_or(usize::MAX),
        ..ImportLimits::default()
    }
}

fn file_name(path: &Path) -> String {
    path.file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default()
}

fn open_spool(path: &Path) -> Result<std::fs::File, ImportRunError> {
    std::fs::File::open(path).map_err(|source| ImportRunError::Spool {
        file: file_name(path),
        source,
    })
}

/// A hook the tests use to stop an import part-way, as a crash would: called before each chunk
/// with the number of records stored so far; returning false stops the apply there.
pub type ApplyHook = dyn Fn(u64) -> bool + Send + Sync;

/// Stores the records of a checked spool file from `journal.applied` on, in chunks of
/// [`APPLY_CHUNK`], each with the journal advanced past it; then flushes. With `verify`, first
/// checks that the spool still has the SHA-256 the journal recorded (when resuming after a
/// restart). Returns false if `hook` stopped it early.
pub fn apply(
    db: &Db,
    spool: &Path,
    journal: &mut ImportJournal,
    verify: bool,
    hook: Option<&ApplyHook>,
) -> Result<bool, ImportRunError> {
    let file = || file_name(spool);
    if verify {
        let mut f = open_spool(spool)?;
        let mut hasher = Sha256::new();
        std::io::copy(&mut f, &mut hasher).map_err(|source| ImportRunError::Spool {
            file: file(),
            source,
        })?;
        if <[u8; 32]>::from(hasher.finalize()) != journal.sha256 {
            return Err(ImportRunError::SpoolChanged { file: file() });
        }
    }
    let reader = std::io::BufReader::with_capacity(256 * 1024, open_spool(spool)?);
    let mut chunk: Vec<Record> = Vec::with_capacity(APPLY_CHUNK);
    let mut index = 0u64;
    let mut failure: Option<StoreError> = None;
    let mut stopped = false;
    let mut store_chunk = |chunk: &mut Vec<Record>, journal: &mut ImportJournal| {
        if chunk.is_empty() {
            return true;
        }
        if let Some(h) = hook {
            if !h(journal.applied) {
                stopped = true;
                return false;
            }
        }
        let mut next = journal.clone();
        next.applied = journal.applied.saturating_add(chunk.len() as u64);
        match db.put_import_chunk(chunk, &next) {
            Ok(()) => {
                *journal = next;
                chunk.clear();
                true
            }
            Err(e) => {
                failure = Some(e);
                false
            }
        }
    };
    let checked = import_each(
        reader,
        journal.format,
        journal.scheme,
        &limits(),
        1,
        &mut |r| {
            index += 1;
            if index <= journal.applied {
                return true;
            }
            chunk.push(r);
            chunk.len() < APPLY_CHUNK || store_chunk(&mut chunk, journal)
        },
    );
    let mut complete = match checked {
        Err(errors) => {
            return Err(ImportRunError::Recheck {
                file: file(),
                problems: (errors.errors.len() as u64).saturating_add(errors.omitted),
            })
        }
        Ok(_) => store_chunk(&mut chunk, journal),
    };
    if let Some(e) = failure {
        return Err(e.into());
    }
    complete &= !stopped;
    if complete && journal.applied != journal.rows {
        return Err(ImportRunError::SpoolChanged { file: file() });
    }
    db.flush()?;
    Ok(complete)
}

/// The most record kinds a sync may name.
pub const MAX_SYNC_KINDS: usize = 256;

/// 16 bytes of SHA-256 of a record's key (its subject and record id): enough to tell the
/// records of a snapshot apart without keeping them.
fn record_digest(subject: &str, record_id: &str) -> [u8; 16] {
    digest16(&format!("{subject}\0{record_id}"))
}

/// The keys of every record in a checked spool file, as [`record_digest`]s.
fn snapshot_keys(
    spool: &Path,
    format: ImportFormat,
    scheme: IdScheme,
) -> Result<HashSet<[u8; 16]>, ImportRunError> {
    let reader = std::io::BufReader::with_capacity(256 * 1024, open_spool(spool)?);
    let mut keys = HashSet::new();
    import_each(reader, format, scheme, &limits(), 1, &mut |r| {
        keys.insert(record_digest(&r.subject, r.record_id.as_str()));
        true
    })
    .map_err(|errors| ImportRunError::Recheck {
        file: file_name(spool),
        problems: (errors.errors.len() as u64).saturating_add(errors.omitted),
    })?;
    Ok(keys)
}

/// What planning a sync found.
#[derive(Debug)]
pub enum SyncPlan {
    /// What the sync changes (the guard is not applied here).
    Plan(SyncReport),
    /// The file holds records of kinds that were not named; they are listed.
    UnnamedKinds(Vec<String>),
}

/// Plans a sync of a checked spool file against the records held now: which records are new,
/// changed or unchanged, and how many records of the synced kinds (`named`, or else every kind
/// the file holds) the file lacks.
pub fn plan_sync(
    db: &Db,
    spool: &Path,
    format: ImportFormat,
    scheme: IdScheme,
    named: &[String],
    max_delete_percent: u32,
) -> Result<SyncPlan, ImportRunError> {
    let reader = std::io::BufReader::with_capacity(256 * 1024, open_spool(spool)?);
    let mut in_file: BTreeSet<String> = BTreeSet::new();
    let mut keys = HashSet::new();
    let (mut added, mut changed, mut unchanged) = (0u64, 0u64, 0u64);
    let mut failure: Option<StoreError> = None;
    let checked = import_each(reader, format, scheme, &limits(), 1, &mut |r| {
        keys.insert(record_digest(&r.subject, r.record_id.as_str()));
        match db.record(&r.subject, r.record_id.as_str()) {
            Ok(None) => added += 1,
            Ok(Some(old)) if old == r => unchanged += 1,
            Ok(Some(_)) => changed += 1,
            Err(e) => {
                failure = Some(e);
                return false;
            }
        }
        if !in_file.contains(&r.kind) {
            in_file.insert(r.kind);
        }
        true
    });
    if let Some(e) = failure {
        return Err(e.into());
    }
    if let Err(errors) = checked {
        return Err(ImportRunError::Recheck {
            file: file_name(spool),
            problems: (errors.errors.len() as u64).saturating_add(errors.omitted),
        });
    }
    let kinds: BTreeSet<String> = if named.is_empty() {
        in_file
    } else {
        let named: BTreeSet<String> = named.iter().cloned().collect();
        let stray: Vec<String> = in_file.difference(&named).cloned().collect();
        if !stray.is_empty() {
            return Ok(SyncPlan::UnnamedKinds(stray));
        }
        named
    };
    let (mut held, mut deleted) = (0u64, 0u64);
    db.for_each_record_page(APPLY_CHUNK, |page| {
        for r in page.iter().filter(|r| kinds.contains(&r.kind)) {
            held += 1;
            if !keys.contains(&record_digest(&r.subject, r.record_id.as_str())) {
                deleted += 1;
            }
        }
        Ok::<(), StoreError>(())
    })?;
    Ok(SyncPlan::Plan(SyncReport {
        kinds: kinds.into_iter().collect(),
        held,
        added,
        changed,
        unchanged,
        deleted,
        max_delete_percent,
        mass_delete_refused: false,
    }))
}

/// Whether a sync deletes more than its share of the records of its kinds.
pub fn over_guard(plan: &SyncReport) -> bool {
    u128::from(plan.deleted) * 100 > u128::from(plan.held) * u128::from(plan.max_delete_percent)
}

#[cfg(test)]
mod guard_tests {
    use super::*;

    fn plan(held: u64, deleted: u64, max_delete_percent: u32) -> SyncReport {
        SyncReport {
            held,
            deleted,
            max_delete_percent,
            ..SyncReport::default()
        }
    }

    #[test]
    fn the_guard_allows_up_to_its_share_and_refuses_more() {
        assert!(!over_guard(&plan(1000, 100, 10)));
        assert!(over_guard(&plan(1000, 101, 10)));
        assert!(!over_guard(&plan(0, 0, 10)));
        assert!(!over_guard(&plan(5, 0, 0)));
        assert!(over_guard(&plan(5, 1, 0)));
        assert!(!over_guard(&plan(5, 5, 100)));
        assert!(!over_guard(&plan(u64::MAX, u64::MAX, 100)));
        assert!(over_guard(&plan(u64::MAX, u64::MAX, 99)));
    }
}

/// For a sync whose records are all stored: deletes the records of its kinds that the spool
/// file lacks, a page at a time (each page's deletions in one atomic batch; deleting again is
/// harmless, so a crash part-way is finished by running it again), then flushes. A plain
/// import has nothing to delete. Returns false if `hook` (called before each batch with the
/// number deleted so far) stopped it early.
pub fn delete_absent(
    db: &Db,
    spool: &Path,
    journal: &ImportJournal,
    hook: Option<&ApplyHook>,
) -> Result<bool, ImportRunError> {
    let Some(plan) = &journal.sync else {
        return Ok(true);
    };
    let kinds: BTreeSet<&str> = plan.kinds.iter().map(String::as_str).collect();
    let keys = snapshot_keys(spool, journal.format, journal.scheme)?;
    let mut deleted = 0u64;
    let mut stopped = false;
    db.for_each_record_page(APPLY_CHUNK, |page| {
        if stopped {
            return Ok(());
        }
        let going: Vec<(String, String)> = page
            .iter()
            .filter(|r| {
                kinds.contains(r.kind.as_str())
                    && !keys.contains(&record_digest(&r.subject, r.record_id.as_str()))
            })
            .map(|r| (r.subject.clone(), r.record_id.as_str().to_owned()))
            .collect();
        if going.is_empty() {
            return Ok(());
        }
        if let Some(h) = hook {
            if !h(deleted) {
                stopped = true;
                return Ok(());
            }
        }
        db.delete_records(&going)?;
        deleted = deleted.saturating_add(going.len() as u64);
        Ok::<(), StoreError>(())
    })?;
    db.flush()?;
    Ok(!stopped)
}

/// The audit detail of a sync: counts, kinds and the file's digest, never a record.
fn sync_detail(plan: &SyncReport, journal: &ImportJournal) -> String {
    const LISTED: usize = 32;
    let mut kinds = plan
        .kinds
        .iter()
        .take(LISTED)
        .cloned()
        .collect::<Vec<_>>()
        .join(",");
    if plan.kinds.len() > LISTED {
        kinds.push_str(&format!(" and {} more", plan.kinds.len() - LISTED));
    }
    format!(
        "{} added, {} changed, {} unchanged, {} deleted of {} held; kinds {}; {} records for {} subjects; file sha256 {} (import {})",
        plan.added,
        plan.changed,
        plan.unchanged,
        plan.deleted,
        plan.held,
        if kinds.is_empty() { "none".to_owned() } else { kinds },
        journal.rows,
        journal.subjects,
        hex::encode(journal.sha256),
        journal.import_id
    )
}

/// Stores a checked import (and for a sync, deletes what the file lacks) from its journal.
/// Returns false if a hook stopped it early.
pub fn apply_all(
    db: &Db,
    spool: &Path,
    journal: &mut ImportJournal,
    verify: bool,
    hook: Option<&ApplyHook>,
    delete_hook: Option<&ApplyHook>,
) -> Result<bool, ImportRunError> {
    Ok(apply(db, spool, journal, verify, hook)? && delete_absent(db, spool, journal, delete_hook)?)
}

/// Logs a stored import, removes its journal and deletes its spool file.
async fn finish(
    state: &Importer<'_>,
    write: &RecordsWrite,
    journal: &ImportJournal,
) -> Result<(), ImportRunError> {
    let (action, detail) = match &journal.sync {
        Some(plan) => ("records_sync", sync_detail(plan, journal)),
        None => (
            "records_import",
            format!(
                "{} records for {} subjects (import {})",
                journal.rows, journal.subjects, journal.import_id
            ),
        ),
    };
    state
        .audit
        .log_admin(journal.person_id.as_ref(), action, detail)
        .await
        .map_err(|e| ImportRunError::Task(format!("the import could not be logged: {e}")))?;
    write.db().delete_import_journal(&journal.import_id)?;
    let _ = std::fs::remove_file(spool_path(&spool_dir(state.config), &journal.import_id));
    Ok(())
}

/// Where storing an import failed.
enum Stage {
    /// Storing the records.
    Store(ImportRunError),
    /// Logging the import or removing its journal.
    Log(ImportRunError),
}

/// Stores a checked import's records, then logs it and removes its journal. Owns its node
/// reference and its guard, as a task of its own that outlives the request.
async fn store_and_log(
    state: Arc<NodeState>,
    spool: PathBuf,
    mut journal: ImportJournal,
    write: RecordsWrite,
) -> Result<ImportJournal, Stage> {
    let db = write.db().clone();
    let journal = tokio::task::spawn_blocking(move || {
        apply_all(&db, &spool, &mut journal, false, None, None).map(|_| journal)
    })
    .await
    .map_err(|e| Stage::Store(ImportRunError::Task(e.to_string())))?
    .map_err(Stage::Store)?;
    finish(&Importer::of(&state), &write, &journal)
        .await
        .map_err(Stage::Log)?;
    Ok(journal)
}

/// What an import request asks for.
#[derive(Debug, Clone)]
pub struct ImportRequest {
    /// The file's format.
    pub format: ImportFormat,
    /// Check (and for a sync, plan) only; store nothing.
    pub dry_run: bool,
    /// The upload's size.
    pub total_bytes: u64,
    /// The upload's SHA-256.
    pub sha256: [u8; 32],
    /// Whether the file is a snapshot to sync to.
    pub sync: Option<SyncRequest>,
}

/// Refuses a sync request whose kinds are not record kind names.
fn check_sync_request(sync: &SyncRequest) -> Result<(), (ErrorCode, String)> {
    if sync.kinds.len() > MAX_SYNC_KINDS {
        return Err((
            ErrorCode::BadRequest,
            format!("a sync may name at most {MAX_SYNC_KINDS} record kinds"),
        ));
    }
    if let Some(position) = sync.kinds.iter().position(|k| !valid_name(k)) {
        return Err((
            ErrorCode::BadRequest,
            format!(
                "record kind {} of the sync is not a kind name (lowercase letters, digits and underscores)",
                position + 1
            ),
        ));
    }
    Ok(())
}

/// Receives and imports (or dry-runs) a records file; for a sync, also deletes the records of
/// the synced kinds that the file lacks. Only the storing step, a task of its own that
/// completes even if the operator's connection drops meanwhile, holds the node; every other
/// step uses [`Importer`].
pub async fn import(
    state: &Arc<NodeState>,
    staff: &StoredStaff,
    request: ImportRequest,
    recv: &mut quinn::RecvStream,
    budget: &std::sync::Arc<crate::budget::ConnectionBudget>,
) -> Result<ClientResponse, (ErrorCode, String)> {
    let node = state.clone();
    let store =
        move |spool, journal, write| tokio::spawn(store_and_log(node, spool, journal, write));
    receive_and_import(&Importer::of(state), staff, request, recv, budget, store).await
}

/// [`import`], with `store` starting the storing step.
async fn receive_and_import(
    state: &Importer<'_>,
    staff: &StoredStaff,
    request: ImportRequest,
    recv: &mut quinn::RecvStream,
    budget: &std::sync::Arc<crate::budget::ConnectionBudget>,
    store: impl FnOnce(
        PathBuf,
        ImportJournal,
        RecordsWrite,
    ) -> tokio::task::JoinHandle<Result<ImportJournal, Stage>>,
) -> Result<ClientResponse, (ErrorCode, String)> {
    let ImportRequest {
        format,
        dry_run,
        total_bytes,
        sha256,
        sync,
    } = request;
    if total_bytes > MAX_IMPORT_BYTES {
        return Err((
            ErrorCode::TooLarge,
            format!("imports are limited to {MAX_IMPORT_BYTES} bytes; split the file"),
        ));
    }
    if let Some(sync) = &sync {
        check_sync_request(sync)?;
    }
    let internal = |e: ImportRunError| {
        tracing::error!(error = %e, "import failed");
        (
            ErrorCode::Internal,
            "the node could not spool or check the upload; nothing was imported".to_owned(),
        )
    };
    let dir = spool_dir(state.config);
    let import_id = format!("{}-{:016x}", state.clock.now().0, rand::random::<u64>());
    let path = spool_path(&dir, &import_id);
    let mut guard = SpoolGuard {
        path: path.clone(),
        armed: true,
    };
    receive(state, &dir, &path, (total_bytes, sha256), recv, budget)
        .await
        .map_err(|e| match e {
            Received::Refused(code, msg) => (code, msg),
            Received::Failed(e) => internal(e),
        })?;

    // Held until the import is stored (or refused): a sync's plan must still hold when it is
    // applied.
    let write = state.records_writer.lock().await;
    let scheme = state.config.id_scheme;
    let check_path = path.clone();
    let checked = tokio::task::spawn_blocking(move || check_spool(&check_path, format, scheme))
        .await
        .map_err(|e| internal(ImportRunError::Task(e.to_string())))?
        .map_err(internal)?;
    let (rows, subjects) = match checked {
        Checked::Bad(errors) => {
            let report = ImportReport {
                rows: errors.rows_read(),
                stored: 0,
                subjects: 0,
                dry_run,
                errors_truncated: errors.omitted > 0,
                errors: errors
                    .rows()
                    .into_iter()
                    .take(MAX_REPORTED_ERRORS)
                    .map(|(line, reason)| ImportRowError { line, reason })
                    .collect(),
                sync: None,
            };
            tracing::info!(person = %staff.body.person_id, rows = report.rows, bad_rows = report.errors.len(), dry_run, "records import rejected");
            return Ok(ClientResponse::Imported(report));
        }
        Checked::Good { rows, subjects } => (rows, subjects),
    };
    let plan = match sync {
        None => None,
        Some(request) => {
            let db = write.db().clone();
            let plan_path = path.clone();
            let max = state.config.records.max_sync_delete_percent;
            let planned = tokio::task::spawn_blocking(move || {
                plan_sync(&db, &plan_path, format, scheme, &request.kinds, max)
                    .map(|p| (p, request.allow_mass_delete))
            })
            .await
            .map_err(|e| internal(ImportRunError::Task(e.to_string())))?
            .map_err(internal)?;
            match planned {
                (SyncPlan::UnnamedKinds(stray), _) => {
                    return Err((
                        ErrorCode::BadRequest,
                        format!(
                            "the file holds records of kinds the sync does not name ({}); name them too, or leave the kinds out to sync every kind the file holds; nothing was stored",
                            stray.join(", ")
                        ),
                    ))
                }
                (SyncPlan::Plan(mut plan), allow) => {
                    if over_guard(&plan) && !allow {
                        plan.mass_delete_refused = true;
                        tracing::warn!(person = %staff.body.person_id, deleted = plan.deleted, held = plan.held, max_percent = plan.max_delete_percent, "records sync refused: it would delete more than the allowed share");
                        return Ok(ClientResponse::Imported(ImportReport {
                            rows,
                            stored: 0,
                            subjects,
                            dry_run,
                            errors: Vec::new(),
                            errors_truncated: false,
                            sync: Some(plan),
                        }));
                    }
                    Some(plan)
                }
            }
        }
    };
    let nothing_to_delete = plan.as_ref().is_none_or(|p| p.deleted == 0);
    if dry_run || (rows == 0 && nothing_to_delete) {
        tracing::info!(person = %staff.body.person_id, rows, dry_run, sync = plan.is_some(), "records import checked");
        return Ok(ClientResponse::Imported(ImportReport {
            rows,
            stored: 0,
            subjects,
            dry_run,
            errors: Vec::new(),
            errors_truncated: false,
            sync: plan,
        }));
    }

    // From here the journal owns the spool file: a failure leaves both for the next start.
    let journal = ImportJournal {
        import_id,
        sha256,
        format,
        scheme,
        rows,
        subjects,
        applied: 0,
        person_id: Some(staff.body.person_id.clone()),
        sync: plan.clone(),
    };
    write
        .db()
        .put_import_journal(&journal)
        .map_err(|e| internal(e.into()))?;
    guard.armed = false;
    tracing::info!(person = %staff.body.person_id, import = %journal.import_id, rows, "records import checked; storing");
    // Stored and logged by a task of its own, so that it completes even if the operator's
    // connection drops meanwhile.
    let task = store(path, journal, write);
    let journal = match task.await {
        Ok(Ok(journal)) => journal,
        Ok(Err(Stage::Store(e))) => {
            tracing::error!(error = %e, "import failed while storing; its journal is kept and the node finishes it at its next start");
            return Err((
                ErrorCode::Internal,
                "storage failure while storing the records; the node finishes this import when it next starts".to_owned(),
            ));
        }
        Ok(Err(Stage::Log(e))) => {
            tracing::error!(error = %e, "records imported but not logged; the node logs it at its next start");
            return Err((
                ErrorCode::Internal,
                "records imported but the import could not be logged; the node logs it when it next starts".to_owned(),
            ));
        }
        Err(e) => {
            tracing::error!(error = %e, "import task failed; the node finishes the import at its next start");
            return Err((
                ErrorCode::Internal,
                "the import task failed; the node finishes this import when it next starts"
                    .to_owned(),
            ));
        }
    };
    tracing::info!(person = %staff.body.person_id, import = %journal.import_id, rows, subjects, "records import stored");
    Ok(ClientResponse::Imported(ImportReport {
        rows,
        stored: rows,
        subjects,
        dry_run,
        errors: Vec::new(),
        errors_truncated: false,
        sync: plan,
    }))
}

/// Why receiving an upload failed.
enum Received {
    /// The upload itself was wrong (short, long, stalled, hash mismatch).
    Refused(ErrorCode, String),
    /// The node could not write it.
    Failed(ImportRunError),
}

/// Writes the upload's data frames to the spool file, checking the size and SHA-256, and makes
/// the file durable.
async fn receive(
    state: &Importer<'_>,
    dir: &Path,
    path: &Path,
    (total_bytes, sha256): (u64, [u8; 32]),
    recv: &mut quinn::RecvStream,
    budget: &std::sync::Arc<crate::budget::ConnectionBudget>,
) -> Result<(), Received> {
    let io = |source: std::io::Error| {
        Received::Failed(ImportRunError::Spool {
            file: file_name(path),
            source,
        })
    };
    // The upload is personal data: only the node's user may read it.
    let mut folder = tokio::fs::DirBuilder::new();
    folder.recursive(true);
    #[cfg(unix)]
    folder.mode(0o700);
    folder.create(dir).await.map_err(io)?;
    let mut options = tokio::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    options.mode(0o600);
    let mut file = options.open(path).await.map_err(io)?;
    let mut hasher = Sha256::new();
    let mut received = 0u64;
    while received < total_bytes {
        // Each data frame is charged to the connection's budget until it is written out.
        let mut charge = budget.request();
        let frame = tokio::time::timeout(
            state.config.limits.request_timeout() * 10,
            read_frame_charged(recv, 2 * 1024 * 1024, &mut charge),
        )
        .await
        .map_err(|_| Received::Refused(ErrorCode::Timeout, "the upload stalled".to_owned()))?
        .map_err(|e| match e {
            FrameIoError::Busy(cap) => Received::Refused(ErrorCode::RateLimited, cap.to_string()),
            e => Received::Refused(ErrorCode::Malformed, e.to_string()),
        })?
        .ok_or(Received::Refused(
            ErrorCode::BadRequest,
            "the upload ended before the announced size".to_owned(),
        ))?;
        received = received.saturating_add(frame.len() as u64);
        if received > total_bytes {
            return Err(Received::Refused(
                ErrorCode::BadRequest,
                "the upload is longer than announced".into(),
            ));
        }
        hasher.update(&frame);
        file.write_all(&frame).await.map_err(io)?;
    }
    if <[u8; 32]>::from(hasher.finalize()) != sha256 {
        return Err(Received::Refused(
            ErrorCode::BadRequest,
            "the upload does not match its hash; retry".into(),
        ));
    }
    file.flush().await.map_err(io)?;
    file.sync_all().await.map_err(io)?;
    Ok(())
}

/// At start: deletes spool files no journal refers to (uploads cut off by a stop or crash before
/// they were checked in full). Returns the journals of imports to finish.
pub fn clean_spools(config: &NodeConfig, db: &Db) -> Result<Vec<ImportJournal>, ImportRunError> {
    let journals = db.import_journals()?;
    let dir = spool_dir(config);
    let entries = match std::fs::read_dir(&dir) {
        Ok(entries) => entries,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(journals),
        Err(source) => {
            return Err(ImportRunError::Spool {
                file: file_name(&dir),
                source,
            })
        }
    };
    let wanted: HashSet<PathBuf> = journals
        .iter()
        .map(|j| spool_path(&dir, &j.import_id))
        .collect();
    for entry in entries.flatten() {
        let path = entry.path();
        let is_spool = path.extension().and_then(|e| e.to_str()) == Some(SPOOL_EXT);
        if is_spool && !wanted.contains(&path) {
            tracing::info!(file = %file_name(&path), "deleting an import upload that was cut off before it was checked (nothing of it was stored)");
            let _ = std::fs::remove_file(&path);
        }
    }
    Ok(journals)
}

/// At start: finishes every import a stop or crash interrupted while it was being stored, and
/// logs each. Runs beside the node's other tasks (readers may see the records appear).
pub async fn resume(state: Arc<NodeState>, journals: Vec<ImportJournal>) {
    resume_with(&Importer::of(&state), journals).await;
}

/// [`resume`], with only what importing uses.
async fn resume_with(state: &Importer<'_>, journals: Vec<ImportJournal>) {
    let write = state.records_writer.lock().await;
    for journal in journals {
        let id = journal.import_id.clone();
        tracing::warn!(import = %id, stored = journal.applied, rows = journal.rows, "finishing an import interrupted by a stop or crash");
        let db = write.db().clone();
        let path = spool_path(&spool_dir(state.config), &id);
        let mut j = journal;
        let applied = tokio::task::spawn_blocking(move || {
            apply_all(&db, &path, &mut j, true, None, None).map(|done| (done, j))
        })
        .await
        .map_err(|e| ImportRunError::Task(e.to_string()))
        .and_then(|r| r);
        match applied {
            Ok((true, j)) => match finish(state, &write, &j).await {
                Ok(()) => {
                    tracing::warn!(import = %id, rows = j.rows, "interrupted import finished: every record is stored");
                }
                Err(e) => {
                    tracing::error!(import = %id, error = %e, "interrupted import stored but not logged; retried at the next start");
                }
            },
            Ok((false, _)) => {}
            Err(e @ (ImportRunError::SpoolChanged { .. } | ImportRunError::Recheck { .. })) => {
                tracing::error!(import = %id, error = %e, "an interrupted import cannot be finished: some of its records may be stored; import the file again to store all of them");
                if let Err(e) = write.db().delete_import_journal(&id) {
                    tracing::error!(import = %id, error = %e, "could not remove the import's journal");
                }
                let _ = std::fs::remove_file(spool_path(&spool_dir(state.config), &id));
            }
            Err(ImportRunError::Spool { source, file })
                if source.kind() == std::io::ErrorKind::NotFound =>
            {
                tracing::error!(import = %id, file = %file, "an interrupted import cannot be finished: its spool file is gone; some of its records may be stored; import the file again to store all of them");
                if let Err(e) = write.db().delete_import_journal(&id) {
                    tracing::error!(import = %id, error = %e, "could not remove the import's journal");
                }
            }
            Err(e) => {
                tracing::error!(import = %id, error = %e, "an interrupted import could not be finished now; retried at the next start");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::import::export_csv;
    use throughgate_protocol::time::Date;
    use throughgate_testkit::synth::{generate_population, records_for, SynthConfig};

    #[test]
    fn apply_stores_in_chunks_resumes_from_the_journal_and_refuses_a_changed_spool() {
        let dir = tempfile::tempdir().unwrap();
        let db = Db::new(Arc::new(crate::store::MemoryStore::new()));
        let cfg = SynthConfig::new(3, 400, Date::parse("2026-03-02").unwrap());
        let pop = generate_population(&cfg);
        let records = records_for("nhs-wy", &pop, &cfg).unwrap();
        assert!(records.len() > 3 * APPLY_CHUNK, "{}", records.len());
        let mut file = Vec::new();
        export_csv(&records, &mut file).unwrap();
        let spool = dir.path().join("x.spool");
        std::fs::write(&spool, &file).unwrap();
        let mut journal = ImportJournal {
            import_id: "x".into(),
            sha256: Sha256::digest(&file).into(),
            format: ImportFormat::Csv,
            scheme: IdScheme::NhsNumber,
            rows: records.len() as u64,
            subjects: 0,
            applied: 0,
            person_id: None,
            sync: None,
        };
        db.put_import_journal(&journal).unwrap();
        // Stopped (as by a crash) after two chunks: those are stored, with the journal.
        let hook = |applied: u64| applied < 2 * APPLY_CHUNK as u64;
        assert!(!apply(&db, &spool, &mut journal, false, Some(&hook)).unwrap());
        assert_eq!(db.record_count().unwrap(), 2 * APPLY_CHUNK as u64);
        let mut stored = db.import_journals().unwrap();
        assert_eq!(stored, vec![journal.clone()]);
        assert_eq!(journal.applied, 2 * APPLY_CHUNK as u64);

        // Resumed from the stored journal: every record, each once.
        let mut resumed = stored.remove(0);
        assert!(apply(&db, &spool, &mut resumed, true, None).unwrap());
        assert_eq!(resumed.applied, resumed.rows);
        assert_eq!(db.record_count().unwrap(), records.len() as u64);
        let mut back: Vec<Record> = db
            .records_page(None, usize::MAX)
            .unwrap()
            .into_iter()
            .map(|(_, r)| r)
            .collect();
        let mut want = records.clone();
        back.sort_by(|a, b| a.record_id.as_str().cmp(b.record_id.as_str()));
        want.sort_by(|a, b| a.record_id.as_str().cmp(b.record_id.as_str()));
        assert_eq!(back, want);

        // A spool that is not the checked file is refused.
        std::fs::write(&spool, file.get(..file.len() - 1).unwrap()).unwrap();
        assert!(matches!(
            apply(&db, &spool, &mut resumed, true, None),
            Err(ImportRunError::SpoolChanged { .. })
        ));
        std::fs::remove_file(&spool).unwrap();
        assert!(matches!(
            apply(&db, &spool, &mut resumed, true, None),
            Err(ImportRunError::Spool { .. })
        ));
    }
}
