//! The import operation on the home node: the operator's CLI uploads a records file as data
//! frames after the signed request; the node checks size and hash, validates every row, and
//! stores all records in one atomic write, or none.

use sha2::{Digest, Sha256};
use throughgate_protocol::messages::{
    ClientResponse, ErrorCode, ImportFormat, ImportReport, ImportRowError,
};

use crate::db::StoredStaff;
use crate::node::NodeState;
use crate::transport::read_frame;

/// The largest import accepted in one request.
pub const MAX_IMPORT_BYTES: u64 = 512 * 1024 * 1024;
/// The most bad rows reported back.
const MAX_REPORTED_ERRORS: usize = 1000;

/// Receives and imports (or dry-runs) a records file.
pub async fn import(
    state: &NodeState,
    staff: &StoredStaff,
    format: ImportFormat,
    dry_run: bool,
    total_bytes: u64,
    sha256: [u8; 32],
    recv: &mut quinn::RecvStream,
) -> Result<ClientResponse, (ErrorCode, String)> {
    if total_bytes > MAX_IMPORT_BYTES {
        return Err((
            ErrorCode::TooLarge,
            format!("imports are limited to {MAX_IMPORT_BYTES} bytes; split the file"),
        ));
    }
    let cap = usize::try_from(total_bytes).unwrap_or(0);
    let mut data = Vec::with_capacity(cap.min(64 * 1024 * 1024));
    while (data.len() as u64) < total_bytes {
        let frame = tokio::time::timeout(
            state.config.limits.request_timeout() * 10,
            read_frame(recv, 2 * 1024 * 1024),
        )
        .await
        .map_err(|_| (ErrorCode::Timeout, "the upload stalled".to_owned()))?
        .map_err(|e| (ErrorCode::Malformed, e.to_string()))?
        .ok_or((
            ErrorCode::BadRequest,
            "the upload ended before the announced size".to_owned(),
        ))?;
        data.extend_from_slice(&frame);
        if data.len() as u64 > total_bytes {
            return Err((
                ErrorCode::BadRequest,
                "the upload is longer than announced".into(),
            ));
        }
    }
    if <[u8; 32]>::from(Sha256::digest(&data)) != sha256 {
        return Err((
            ErrorCode::BadRequest,
            "the upload does not match its hash; retry".into(),
        ));
    }
    let parsed = crate::import::parse(format, &data, state.config.id_scheme);
    let report = match parsed {
        Ok(records) => {
            let subjects = records
                .iter()
                .map(|r| r.subject.as_str())
                .collect::<std::collections::BTreeSet<_>>()
                .len() as u64;
            let rows = records.len() as u64;
            let stored = if dry_run {
                0
            } else {
                state.db.put_records(&records).map_err(|e| {
                    tracing::error!(error = %e, "import failed on storage");
                    (
                        ErrorCode::Internal,
                        "storage failure; nothing was imported".to_owned(),
                    )
                })?;
                rows
            };
            ImportReport {
                rows,
                stored,
                subjects,
                dry_run,
                errors: Vec::new(),
                errors_truncated: false,
            }
        }
        Err(errors) => {
            let all = errors.rows();
            ImportReport {
                rows: errors.rows_read(),
                stored: 0,
                subjects: 0,
                dry_run,
                errors_truncated: all.len() > MAX_REPORTED_ERRORS,
                errors: all
                    .iter()
                    .take(MAX_REPORTED_ERRORS)
                    .map(|(line, reason)| ImportRowError {
                        line: *line,
                        reason: reason.clone(),
                    })
                    .collect(),
            }
        }
    };
    tracing::info!(person = %staff.body.person_id, rows = report.rows, stored = report.stored, bad_rows = report.errors.len(), dry_run, "records import");
    if !dry_run && report.stored > 0 {
        state
            .log_admin(
                Some(&staff.body.person_id),
                "records_import",
                format!("{} records for {} subjects", report.stored, report.subjects),
            )
            .await
            .map_err(|e| {
                (
                    ErrorCode::Internal,
                    format!("records imported but the import could not be logged: {e}"),
                )
            })?;
    }
    Ok(ClientResponse::Imported(report))
}
