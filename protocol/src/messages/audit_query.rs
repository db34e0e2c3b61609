use serde::{Deserialize, Serialize};

use crate::audit::{ProofHash, Receipt};
use crate::envelope::{Envelope, Message, MessageKind};
use crate::ids::{AgencyId, PassportId, PersonId, QueryId};
use crate::keys::fixed_bytes;
use crate::time::Timestamp;

/// A data-protection officer's request, through their node, for every entry another node's log
/// holds about one passport (the federated subject-access report). Signed by the DPO (role
/// `person`) and their node (role `node`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AuditQuery {
    /// Fresh per request (replay-checked like a query).
    pub query_id: QueryId,
    /// The person.
    pub passport_id: PassportId,
    /// The DPO's agency.
    pub requester: AgencyId,
    /// The DPO.
    pub dpo: PersonId,
    /// The DPO's credential (role `dpo`), signed by the requesting node.
    pub credential: Envelope,
    /// When signed.
    pub issued_at: Timestamp,
    /// When it stops being valid.
    pub expires_at: Timestamp,
}

impl Message for AuditQuery {
    const KIND: MessageKind = MessageKind::AuditQuery;
    const MAX_BODY: usize = 16 * 1024;
}

/// One log entry with its inclusion proof under the answer's checkpoint.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LoggedEntry {
    /// The entry's bytes.
    #[serde(with = "crate::keys::vec_bytes")]
    pub entry: Vec<u8>,
    /// Its index.
    pub leaf_index: u64,
    /// Its inclusion proof.
    pub proof: Vec<ProofHash>,
}

/// A node's answer to an [`AuditQuery`], signed by the node.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AuditAnswer {
    /// SHA-256 of the audit query's body.
    #[serde(with = "fixed_bytes")]
    pub query_digest: [u8; 32],
    /// The answering node.
    pub holder: AgencyId,
    /// Every entry about the passport (oldest first), each provable under `checkpoint`.
    pub entries: Vec<LoggedEntry>,
    /// More entries exist than were sent.
    pub truncated: bool,
    /// The checkpoint the proofs lead to (signed-note text).
    pub checkpoint: String,
    /// The receipt of the access itself (the answering node logs every audit query).
    pub access_receipt: Receipt,
}

impl Message for AuditAnswer {
    const KIND: MessageKind = MessageKind::AuditAnswer;
    const MAX_BODY: usize = crate::frame::DEFAULT_MAX_FRAME - 1024;
}
