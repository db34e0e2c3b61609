//! The backup operation on a running node: snapshot the store into a temporary file beside the
//! data folder (writes pause for the copy), stream it to the operator's CLI in signed chunks,
//! then delete the temporary file.

use std::io::Read;

use sha2::{Digest, Sha256};
use throughgate_protocol::audit::AuditEvent;
use throughgate_protocol::messages::{ClientResponse, ErrorCode};

use crate::backup::{write_backup, BackupMeta};
use crate::db::StoredStaff;
use crate::node::NodeState;
use crate::transport::write_envelope;

/// Bytes per streamed chunk.
const CHUNK: usize = 1024 * 1024;

/// Takes and streams a backup; returns the final `BackupDone`.
pub async fn stream_backup(
    state: &NodeState,
    operator: &StoredStaff,
    send: &mut quinn::SendStream,
) -> Result<ClientResponse, (ErrorCode, String)> {
    let internal = |e: String| (ErrorCode::Internal, e);
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
        .map_err(|e| internal(e.to_string()))?
        .map_err(|e| internal(e.to_string()))?;
    let result = async {
        let mut file = std::fs::File::open(&tmp).map_err(|e| internal(e.to_string()))?;
        let mut hasher = Sha256::new();
        let mut total = 0u64;
        let mut buf = vec![0u8; CHUNK];
        loop {
            let n = file.read(&mut buf).map_err(|e| internal(e.to_string()))?;
            if n == 0 {
                break;
            }
            let chunk = buf.get(..n).unwrap_or_default().to_vec();
            hasher.update(&chunk);
            total += n as u64;
            write_envelope(send, &state.seal(&ClientResponse::BackupChunk(chunk)))
                .await
                .map_err(|e| internal(e.to_string()))?;
        }
        Ok::<_, (ErrorCode, String)>((total, <[u8; 32]>::from(hasher.finalize())))
    }
    .await;
    let _ = std::fs::remove_file(&tmp);
    let (bytes, sha256) = result?;
    state
        .audit
        .append(AuditEvent::Admin {
            person_id: Some(operator.body.person_id.clone()),
            action: "backup".into(),
            detail: format!("{pairs} stored pairs, {bytes} bytes"),
        })
        .await
        .map_err(|e| internal(e.to_string()))?;
    tracing::info!(pairs, bytes, by = %operator.body.person_id, "backup taken");
    Ok(ClientResponse::BackupDone {
        pairs,
        bytes,
        sha256,
    })
}
