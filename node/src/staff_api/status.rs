//! What a node reports about itself to its staff: identity, key, manifest, counts, start time.

use throughgate_protocol::ids::AgencyId;
use throughgate_protocol::messages::NodeStatus;
use throughgate_protocol::time::Timestamp;

use crate::config::NodeConfig;
use crate::db::Db;
use crate::keyring::NodeKey;
use crate::state::{NodeState, NodeStatusError};
use crate::trust::Trust;

/// What reporting the node's status uses of the node, and nothing else.
#[derive(Clone, Copy, Debug)]
pub struct StatusView<'a> {
    /// This agency.
    pub agency: &'a AgencyId,
    /// The node key (its fingerprint).
    pub key: &'a NodeKey,
    /// Storage (the counts).
    pub db: &'a Db,
    /// The manifest.
    pub trust: &'a Trust,
    /// Configuration (the longest consent).
    pub config: &'a NodeConfig,
    /// When the node started.
    pub started_at: Timestamp,
}

impl<'a> StatusView<'a> {
    /// The parts of `state` that reporting its status uses.
    pub fn of(state: &'a NodeState) -> Self {
        StatusView {
            agency: &state.agency,
            key: &state.key,
            db: &state.db,
            trust: &state.trust,
            config: &state.config,
            started_at: state.started_at,
        }
    }

    /// What the node reports about itself: identity, key, manifest, counts, start time.
    pub fn status(&self) -> Result<NodeStatus, NodeStatusError> {
        let manifest = self.trust.manifest().ok_or(NodeStatusError::NoManifest)?;
        let name = manifest
            .member(self.agency)
            .map(|m| m.name.clone())
            .unwrap_or_default();
        Ok(NodeStatus {
            agency: self.agency.clone(),
            name,
            software: env!("CARGO_PKG_VERSION").into(),
            key_fingerprint: self.key.current().public().fingerprint(),
            manifest_version: manifest.version,
            manifest_expires_at: manifest.expires_at,
            records: self.db.record_count()?,
            consents: self.db.consent_count()?,
            outbox_pending: self.db.outbox_len()?,
            started_at: self.started_at,
            max_consent_days: self.config.consent.max_validity_days,
        })
    }
}
