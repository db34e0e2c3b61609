//! The backup operation on a running node: snapshot the store into a temporary file beside the
//! data folder (writes pause for the copy), stream it to the operator's CLI in signed chunks,
//! then delete the temporary file.

use std::io::Read;

use sha2::{Digest, Sha256};
use throughgate_protocol::messages::{ClientResponse, ErrorCode};

use crate::backup::{write_backup, BackupMeta};
use crate::db::StoredStaff;
use crate::node::NodeState;
use crate::staff::log_by;
use crate::transport::write_envelope;

/// Bytes per streamed chunk.
const CHUNK: usize = 1024 * 1024;

/// A failure while backing up or exporting, passed to the operator with its message.
fn internal(e: impl std::fmt::Display) -> (ErrorCode, String) {
    (ErrorCode::Internal, e.to_string())
}

/// Takes and streams a backup; returns the final `BackupDone`.
pub async fn stream_backup(
    state: &NodeState,
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
    let pairs = tokio::task::spawn_blocking(move || write_backup(&db, &meta, &path))
        .await
        .map_err(internal)?
        .map_err(internal)?;
    let (bytes, sha256) = stream_temp_file(state, &tmp, send).await?;
    log_by(
        state,
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
    state: &NodeState,
    operator: &StoredStaff,
    format: throughgate_protocol::messages::ImportFormat,
    send: &mut quinn::SendStream,
) -> Result<ClientResponse, (ErrorCode, String)> {
    let dir = state.config.resolve(&state.config.data_dir);
    let tmp = dir.with_extension(format!("export-{}.tmp", state.clock.now().0));
    let db = state.db.clone();
    let path = tmp.clone();
    let count = tokio::task::spawn_blocking(move || -> Result<u64, String> {
        let mut records = Vec::new();
        let mut after: Option<Vec<u8>> = None;
        loop {
            let page = db
                .records_page(after.as_deref(), 10_000)
                .map_err(|e| e.to_string())?;
            let Some((last, _)) = page.last() else { break };
            after = Some(last.clone());
            let full = page.len() == 10_000;
            records.extend(page.into_iter().map(|(_, r)| r));
            if !full {
                break;
            }
        }
        let file = std::fs::File::create(&path).map_err(|e| e.to_string())?;
        crate::import::export(&records, format, std::io::BufWriter::new(file))
            .map_err(|e| e.to_string())?;
        Ok(records.len() as u64)
    })
    .await
    .map_err(internal)?
    .map_err(internal)?;
    let (bytes, sha256) = stream_temp_file(state, &tmp, send).await?;
    log_by(
        state,
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

/// Streams the temporary file `tmp`, then deletes it whether or not the stream went through.
async fn stream_temp_file(
    state: &NodeState,
    tmp: &std::path::Path,
    send: &mut quinn::SendStream,
) -> Result<(u64, [u8; 32]), (ErrorCode, String)> {
    let result = stream_file(state, tmp, send).await;
    let _ = std::fs::remove_file(tmp);
    result
}

/// Streams a file as signed chunks; returns its size and SHA-256.
async fn stream_file(
    state: &NodeState,
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
        write_envelope(send, &state.seal(&ClientResponse::FileChunk(chunk)))
            .await
            .map_err(internal)?;
    }
    Ok((total, hasher.finalize().into()))
}
