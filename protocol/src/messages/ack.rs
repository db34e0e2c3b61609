use serde::{Deserialize, Serialize};

use crate::envelope::{Message, MessageKind};
use crate::ids::{AgencyId, ConsentId};
use crate::time::Timestamp;

/// What an acknowledgement answers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AckSubject {
    /// A consent grant.
    Grant,
    /// A consent revocation.
    Revoke,
}

/// The recipient's answer to a grant or revocation.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AckOutcome {
    /// Holder: consent stored and the passport id linked to a local subject.
    Linked,
    /// Holder: consent stored; no local subject has that identifier, so nothing is ever
    /// disclosed under it.
    NotHeld,
    /// Holder: consent stored but not linked: its identifier names a different local subject
    /// than an earlier consent for the same passport id did. Nothing is disclosed under it.
    SubjectMismatch,
    /// Grantee that holds nothing: consent stored.
    Stored,
    /// Not stored; the reason says why.
    Rejected,
    /// Revocation applied.
    Revoked,
}

impl AckOutcome {
    /// The wire name.
    pub fn as_str(self) -> &'static str {
        match self {
            AckOutcome::Linked => "linked",
            AckOutcome::NotHeld => "not_held",
            AckOutcome::SubjectMismatch => "subject_mismatch",
            AckOutcome::Stored => "stored",
            AckOutcome::Rejected => "rejected",
            AckOutcome::Revoked => "revoked",
        }
    }
}

impl std::str::FromStr for AckOutcome {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        const ALL: [AckOutcome; 6] = [
            AckOutcome::Linked,
            AckOutcome::NotHeld,
            AckOutcome::SubjectMismatch,
            AckOutcome::Stored,
            AckOutcome::Rejected,
            AckOutcome::Revoked,
        ];
        ALL.into_iter().find(|o| o.as_str() == s).ok_or_else(|| {
            let names: Vec<&str> = ALL.iter().map(|o| o.as_str()).collect();
            format!(
                "unknown outcome {s:?}; expected one of {}",
                names.join(", ")
            )
        })
    }
}

/// A signed acknowledgement of a consent grant or revocation.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Ack {
    /// Grant or revocation.
    pub subject: AckSubject,
    /// The consent concerned.
    pub consent_id: ConsentId,
    /// The acknowledging agency.
    pub agency: AgencyId,
    /// The result.
    pub outcome: AckOutcome,
    /// Why, when rejected.
    #[serde(deserialize_with = "crate::cbor::required")]
    pub reason: Option<String>,
    /// When it was processed.
    pub at: Timestamp,
}

impl Message for Ack {
    const KIND: MessageKind = MessageKind::Ack;
    const MAX_BODY: usize = 4096;
}
