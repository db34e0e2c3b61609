//! Node key rotation without downtime. The operator generates the next key in the node's
//! folder (`next_key_file`), governance publishes a manifest listing both keys, and once this
//! node has adopted it the operator switches: the node starts presenting and signing with the
//! next key at once (open connections carry on), and the key files are renamed so a restart
//! keeps the new key. Peers accept either key during the overlap; the next manifest retires the
//! old one.

use std::sync::Arc;

use throughgate_protocol::ids::AgencyId;
use throughgate_protocol::messages::ErrorCode;
use throughgate_protocol::time::Timestamp;

use crate::audit::AuditLog;
use crate::clock::Clock;
use crate::config::NodeConfig;
use crate::db::{Db, StoredStaff};
use crate::keyfile::read_secret_key;
use crate::keyring::NodeKey;
use crate::peers::Peers;
use crate::queue::Outbox;
use crate::staff::Staffing;
use crate::staff_api::status::StatusView;
use crate::state::NodeState;
use crate::tls::{client_config, server_config, TlsIdentity};
use crate::trust::Trust;

/// What rotating the node key uses of the node, and nothing else.
#[derive(Clone, Copy, Debug)]
pub struct Rotator<'a> {
    /// This agency.
    pub agency: &'a AgencyId,
    /// The node key, swapped here.
    pub key: &'a NodeKey,
    /// The QUIC endpoint, which starts presenting the next key.
    pub endpoint: &'a quinn::Endpoint,
    /// Configuration: the key files, limits and QUIC settings.
    pub config: &'a NodeConfig,
    /// Storage: the node's own keys, staff credentials, counts for the status.
    pub db: &'a Db,
    /// The manifest and staff keys.
    pub trust: &'a Arc<Trust>,
    /// The clock.
    pub clock: &'a Clock,
    /// Outgoing connections, which start presenting the next key.
    pub peers: &'a Peers,
    /// The audit log.
    pub audit: &'a AuditLog,
    /// The delivery queue: re-issuing staff credentials goes through [`Staffing`].
    pub outbox: &'a Outbox,
    /// When the node started (its status).
    pub started_at: Timestamp,
}

impl<'a> Rotator<'a> {
    /// The parts of `state` that rotating the node key uses.
    pub fn of(state: &'a NodeState) -> Self {
        Rotator {
            agency: &state.agency,
            key: &state.key,
            endpoint: &state.endpoint,
            config: &state.config,
            db: &state.db,
            trust: &state.trust,
            clock: &state.clock,
            peers: &state.peers,
            audit: &state.audit,
            outbox: &state.outbox,
            started_at: state.started_at,
        }
    }

    /// The parts of these that staff credentials use.
    fn staffing(&self) -> Staffing<'a> {
        Staffing {
            agency: self.agency,
            key: self.key,
            db: self.db,
            clock: self.clock,
            trust: self.trust,
            audit: self.audit,
            outbox: self.outbox,
        }
    }

    /// The parts of these that reporting the node's status uses.
    fn status_view(&self) -> StatusView<'a> {
        StatusView {
            agency: self.agency,
            key: self.key,
            db: self.db,
            trust: self.trust,
            config: self.config,
            started_at: self.started_at,
        }
    }
}

/// Switches the node to its next key.
pub async fn rotate(
    state: &Rotator<'_>,
    operator: &StoredStaff,
) -> Result<String, (ErrorCode, String)> {
    let cfg = state.config;
    let next_path = cfg.resolve(&cfg.next_key_file);
    let key_path = cfg.resolve(&cfg.key_file);
    let next = read_secret_key(&next_path).map_err(|e| {
        (
            ErrorCode::BadRequest,
            format!(
                "{e}; generate it first with `tg key generate --out {}`",
                next_path.display()
            ),
        )
    })?;
    let manifest = state
        .trust
        .manifest()
        .ok_or((ErrorCode::Internal, "node has no manifest".to_owned()))?;
    let me = manifest.member(state.agency).ok_or((
        ErrorCode::Internal,
        "this agency is not in the manifest".to_owned(),
    ))?;
    if !me.node_keys.contains(&next.public()) {
        return Err((
            ErrorCode::BadRequest,
            format!(
                "the next key {} is not in manifest version {}; publish a manifest that lists it (alongside the current key) first",
                next.public().to_hex(),
                manifest.version
            ),
        ));
    }
    let old = state.key.current().public();
    if old == next.public() {
        return Err((
            ErrorCode::BadRequest,
            "the next key is already the current key".into(),
        ));
    }
    let identity = TlsIdentity::new(&next, state.agency.as_str())
        .map_err(|e| (ErrorCode::Internal, e.to_string()))?;
    let server = server_config(
        &identity,
        state.trust.clone(),
        &cfg.limits,
        cfg.quic.migration,
    )
    .map_err(|e| (ErrorCode::Internal, e.to_string()))?;
    let client = client_config(&identity, state.trust.clone(), &cfg.limits)
        .map_err(|e| (ErrorCode::Internal, e.to_string()))?;
    // Files first, so that whatever happens next a restart uses the new key.
    let retired = key_path.with_extension(format!("retired-{}", state.clock.now().0));
    std::fs::rename(&key_path, &retired).map_err(|e| {
        (
            ErrorCode::Internal,
            format!("renaming {}: {e}", key_path.display()),
        )
    })?;
    if let Err(e) = std::fs::rename(&next_path, &key_path) {
        let _ = std::fs::rename(&retired, &key_path);
        return Err((
            ErrorCode::Internal,
            format!("renaming {}: {e}", next_path.display()),
        ));
    }
    state
        .db
        .remember_own_key(&next.public())
        .map_err(|e| (ErrorCode::Internal, e.to_string()))?;
    state.endpoint.set_server_config(Some(server));
    state.peers.set_client_config(client);
    state.key.replace(next);
    let new = state.key.current().public();
    tracing::warn!(old = %old.fingerprint(), new = %new.fingerprint(), "node key rotated");
    state
        .audit
        .log_admin(
            Some(&operator.body.person_id),
            "key_rotated",
            format!(
                "node key {} replaced by {}",
                old.fingerprint(),
                new.fingerprint()
            ),
        )
        .await
        .map_err(|e| (ErrorCode::Internal, e.to_string()))?;
    // Staff credentials follow the node's key, so that retiring the old one strands no one.
    let reissued =
        crate::staff::reissue_under_current_key(&state.staffing(), Some(&operator.body.person_id))
            .await?;
    Ok(format!(
        "now signing with {}; the old key is kept as {}; {} staff credential(s) re-issued under the new key",
        new.fingerprint(),
        retired.display(),
        reissued.len()
    ))
}

/// The client API wrapper: rotates, then reports status, signed by both the old and the new
/// key so that clients still pinning the old one accept the answer.
pub async fn rotate_op(
    state: &Rotator<'_>,
    operator: &StoredStaff,
) -> Result<throughgate_protocol::envelope::Envelope, (ErrorCode, String)> {
    let old = state.key.current();
    rotate(state, operator).await?;
    let status = state.status_view().status().map_err(|e| match e {
        crate::state::NodeStatusError::NoManifest => (ErrorCode::Internal, e.to_string()),
        crate::state::NodeStatusError::Store(e) => {
            tracing::error!(error = %e, "status after rotation failed");
            (
                ErrorCode::Internal,
                "storage failure; see the node's log".into(),
            )
        }
    })?;
    let mut env = state
        .key
        .seal(&throughgate_protocol::messages::ClientResponse::Status(
            status,
        ));
    env.add_signature(throughgate_protocol::envelope::SignerRole::Node, &old);
    Ok(env)
}
