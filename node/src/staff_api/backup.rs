//! The backup operation on a running node: snapshot the store into a temporary file beside the
//! data folder (writes pause for the copy), stream it to the operator's CLI in signed chunks,
//! then delete the temporary file.

use std::collections::BTreeSet;
use std::io::{Read, Write};
use std::path::Path;

use sha2::{Digest, Sha256};
use throughgate_protocol::ids::AgencyId;
use throughgate_protocol::messages::{ClientResponse, ErrorCode, ImportFormat};

use crate::audit::AuditLog;
use crate::backup::{write_backup, BackupMeta};
use crate::clock::Clock;
use crate::config::NodeConfig;
use crate::db::{Db, StoredStaff};
use crate::import::{CsvExport, ExportError};
use crate::keyring::NodeKey;
use crate::staff::log_by;
use crate::state::NodeState;
use crate::transport::write_envelope;

/// What backing up and exporting uses of the node, and nothing else.
#[derive(Clone, Copy, Debug)]
pub struct Archiver<'a> {
    /// This agency (named in a backup).
    pub agency: &'a AgencyId,
    /// The node key, which signs the backup and each streamed chunk.
    pub key: &'a NodeKey,
    /// Configuration: where the data folder is.
    pub config: &'a NodeConfig,
    /// The clock.
    pub clock: &'a Clock,
    /// Storage, copied out.
    pub db: &'a Db,
    /// The audit log.
    pub audit: &'a AuditLog,
}

impl<'a> Archiver<'a> {
    /// The parts of `state` that backing up and exporting use.
    pub fn of(state: &'a NodeState) -> Self {
        Archiver {
            agency: &state.agency,
            key: &state.key,
            config: &state.config,
            clock: &state.clock,
            db: &state.db,
            audit: &state.audit,
        }
    }
}

/// Bytes per streamed chunk.
const CHUNK: usize = 1024 * 1024;

/// A failure while backing up or exporting, passed to the operator with its message.
fn internal(e: impl std::fmt::Display) -> (ErrorCode, String) {
    (ErrorCode::Internal, e.to_string())
}

/// Takes and streams a backup; returns the final `BackupDone`.
pub async fn stream_backup(
    state: &Archiver<'_>,
    operator: &StoredStaff,
    send: &mut quinn::SendStream,
) -> Result<ClientResponse, (ErrorCode, String)> {
    let dir = state.config.resolve(&state.config.data_dir);
    let tmp = dir.with_extension(format!("backup-{}.tmp", state.clock.now().0));
    let meta = BackupMeta {
        agency: state.agency.to_string(),
        taken_at: state.clock.now().to_rfc3339(),
        pairs: 0,
    };
    let db = state.db.clone();
    let path = tmp.clone();
    let key = state.key.current();
    let pairs = tokio::task::spawn_blocking(move || write_backup(&db, &meta, &path, &key))
        .await
        .map_err(internal)?
        .map_err(internal)?;
    let (bytes, sha256) = stream_temp_file(state, &tmp, send).await?;
    log_by(
        state.audit,
        operator,
        "backup",
        format!("{pairs} stored pairs, {bytes} bytes"),
    )
    .await?;
    tracing::info!(pairs, bytes, by = %operator.body.person_id, "backup taken");
    Ok(ClientResponse::FileDone {
        items: pairs,
        bytes,
        sha256,
    })
}

/// Exports every record in `format` to a temporary file, streams it, and deletes it.
pub async fn stream_export(
    state: &Archiver<'_>,
    operator: &StoredStaff,
    format: ImportFormat,
    send: &mut quinn::SendStream,
) -> Result<ClientResponse, (ErrorCode, String)> {
    let dir = state.config.resolve(&state.config.data_dir);
    let tmp = dir.with_extension(format!("export-{}.tmp", state.clock.now().0));
    let db = state.db.clone();
    let path = tmp.clone();
    let count =
        tokio::task::spawn_blocking(move || export_records(&db, format, &path, EXPORT_PAGE))
            .await
            .map_err(internal)?
            .map_err(internal)?;
    let (bytes, sha256) = stream_temp_file(state, &tmp, send).await?;
    log_by(
        state.audit,
        operator,
        "records_export",
        format!("{count} records exported"),
    )
    .await?;
    Ok(ClientResponse::FileDone {
        items: count,
        bytes,
        sha256,
    })
}

/// Records read per page while exporting.
const EXPORT_PAGE: usize = 10_000;

/// Writes every stored record to `path` in `format`, holding one page of `page` records at a time;
/// returns how many. A CSV export reads the records twice, its field columns first; if records
/// gain a field between the two passes (an import meanwhile), it starts again, up to three
/// times.
fn export_records(
    db: &Db,
    format: ImportFormat,
    path: &Path,
    page: usize,
) -> Result<u64, ExportError> {
    let mut attempts = 0;
    loop {
        attempts += 1;
        // A retry starts the file again; the export is personal data (0600, never through a link).
        let _ = std::fs::remove_file(path);
        let file = crate::private::create_new(path).map_err(std::io::Error::other)?;
        let mut out = std::io::BufWriter::new(file);
        let mut count = 0u64;
        match format {
            ImportFormat::Json => {
                db.for_each_record_page(page, |page| {
                    count += page.len() as u64;
                    crate::import::export_jsonl(page, &mut out)
                })?;
                out.flush()?;
                return Ok(count);
            }
            ImportFormat::Csv => {
                let mut names = BTreeSet::new();
                db.for_each_record_page(page, |page| {
                    crate::import::add_field_names(page, &mut names);
                    Ok::<_, ExportError>(())
                })?;
                let mut csv = CsvExport::new(out, names)?;
                let written = db.for_each_record_page(page, |page| {
                    count += page.len() as u64;
                    page.iter().try_for_each(|r| csv.write(r))
                });
                match written {
                    Err(ExportError::NewField(_)) if attempts < 3 => continue,
                    other => other?,
                }
                csv.finish()?;
                return Ok(count);
            }
        }
    }
}

/// Streams the temporary file `tmp`, then deletes it whether or not the stream went through.
async fn stream_temp_file(
    state: &Archiver<'_>,
    tmp: &std::path::Path,
    send: &mut quinn::SendStream,
) -> Result<(u64, [u8; 32]), (ErrorCode, String)> {
    let result = stream_file(state, tmp, send).await;
    let _ = std::fs::remove_file(tmp);
    result
}

/// Streams a file as signed chunks; returns its size and SHA-256.
async fn stream_file(
    state: &Archiver<'_>,
    path: &std::path::Path,
    send: &mut quinn::SendStream,
) -> Result<(u64, [u8; 32]), (ErrorCode, String)> {
    let mut file = std::fs::File::open(path).map_err(internal)?;
    let mut hasher = Sha256::new();
    let mut total = 0u64;
    let mut buf = vec![0u8; CHUNK];
    loop {
        let n = file.read(&mut buf).map_err(internal)?;
        if n == 0 {
            break;
        }
        let chunk = buf.get(..n).unwrap_or_default().to_vec();
        hasher.update(&chunk);
        total += n as u64;
        write_envelope(send, &state.key.seal(&ClientResponse::FileChunk(chunk)))
            .await
            .map_err(internal)?;
    }
    Ok((total, hasher.finalize().into()))
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use throughgate_protocol::time::Date;

    use super::*;
    use crate::import::export;
    use crate::store::{MemoryStore, StoreError};
    use throughgate_testkit::synth::{generate_population, records_for, SynthConfig};

    #[test]
    fn a_paged_export_writes_exactly_what_an_export_of_every_record_at_once_does() {
        let cfg = SynthConfig::new(4, 60, Date::parse("2026-03-02").unwrap());
        let mut records = records_for("nhs-wy", &generate_population(&cfg), &cfg).unwrap();
        // One record with a field no other has, far into the key order.
        if let Some(r) = records.last_mut() {
            r.fields.insert("zz_rare".into(), "only here".into());
        }
        let db = Db::new(Arc::new(MemoryStore::new()));
        db.put_records(&records).unwrap();
        // The store's order, as an export of every record at once would take them.
        let mut stored = Vec::new();
        db.for_each_record_page(usize::MAX, |p| {
            stored.extend_from_slice(p);
            Ok::<_, StoreError>(())
        })
        .unwrap();
        assert_eq!(stored.len(), records.len());
        let dir = tempfile::tempdir().unwrap();
        for format in [ImportFormat::Csv, ImportFormat::Json] {
            let mut whole = Vec::new();
            export(&stored, format, &mut whole).unwrap();
            for page in [1, 7, 100, 100_000] {
                let path = dir.path().join("export");
                let n = export_records(&db, format, &path, page).unwrap();
                assert_eq!(n, records.len() as u64);
                let paged = std::fs::read(&path).unwrap();
                assert!(paged == whole, "{format:?}, pages of {page}");
            }
        }
    }

    #[test]
    fn a_csv_export_refuses_a_record_with_a_field_it_has_no_column_for() {
        let cfg = SynthConfig::new(4, 5, Date::parse("2026-03-02").unwrap());
        let mut records = records_for("dwp", &generate_population(&cfg), &cfg).unwrap();
        let r = records.first_mut().unwrap();
        let mut columns = BTreeSet::new();
        crate::import::add_field_names(std::slice::from_ref(r), &mut columns);
        let mut csv = CsvExport::new(Vec::new(), columns).unwrap();
        csv.write(r).unwrap();
        r.fields.insert("new".into(), "x".into());
        match csv.write(r) {
            Err(ExportError::NewField(n)) => assert_eq!(n, "new"),
            other => panic!("{other:?}"),
        }
    }
}
