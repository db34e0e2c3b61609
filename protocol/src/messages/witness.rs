use serde::{Deserialize, Serialize};

use crate::audit::ProofHash;
use crate::envelope::{Message, MessageKind};

/// A node offers its newest checkpoint to a peer acting as witness (C2SP tlog-witness
/// `add-checkpoint` semantics): the size of the last checkpoint of this log the witness is known
/// to hold, a consistency proof from that size to the new one, and the new signed checkpoint.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WitnessRequest {
    /// The size of the checkpoint the witness last cosigned for this log (0 for none).
    pub old_size: u64,
    /// The consistency proof from `old_size` to the new checkpoint's size.
    pub consistency: Vec<ProofHash>,
    /// The new checkpoint, signed by the log's node (signed-note text).
    pub checkpoint: String,
}

impl Message for WitnessRequest {
    const KIND: MessageKind = MessageKind::WitnessRequest;
    const MAX_BODY: usize = 64 * 1024;
}

/// What the witness did.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum WitnessOutcome {
    /// Verified, stored and cosigned.
    Cosigned,
    /// `old_size` is not what the witness holds; retry with `known_size`.
    Conflict,
    /// The checkpoint is inconsistent with one already witnessed, or badly signed: refused and
    /// raised as an alarm.
    Refused,
}

/// A witness's answer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WitnessResponse {
    /// The outcome.
    pub outcome: WitnessOutcome,
    /// The cosignature line (C2SP cosignature/v1), when cosigned.
    #[serde(deserialize_with = "crate::cbor::required")]
    pub cosignature: Option<String>,
    /// The size the witness holds for this log, on a conflict.
    #[serde(deserialize_with = "crate::cbor::required")]
    pub known_size: Option<u64>,
    /// Why, when refused.
    #[serde(deserialize_with = "crate::cbor::required")]
    pub detail: Option<String>,
}

impl Message for WitnessResponse {
    const KIND: MessageKind = MessageKind::WitnessResponse;
    const MAX_BODY: usize = 8 * 1024;
}
