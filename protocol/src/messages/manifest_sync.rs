use serde::{Deserialize, Serialize};

use crate::envelope::{Envelope, Message, MessageKind};

/// Two nodes exchange the manifests they trust: the sender offers its own; the receiver adopts
/// it if it is a valid newer version and answers with its own, which the sender adopts if newer.
/// Signed by the sending node.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ManifestSync {
    /// The manifest the sender trusts (governance-signed envelope).
    pub manifest: Envelope,
}

impl Message for ManifestSync {
    const KIND: MessageKind = MessageKind::ManifestSync;
    const MAX_BODY: usize = 1024 * 1024 + 4096;
}
