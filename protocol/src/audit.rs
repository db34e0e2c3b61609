//! The audit log's entries and receipts.
//!
//! Every node keeps an append-only RFC 6962 Merkle log of every decision it makes. Entries name
//! passports, agencies and staff ids, never people's names or identifiers. A **receipt** proves
//! that an entry is in the log: the entry's bytes, its leaf index, a checkpoint signed by the
//! node (C2SP tlog-checkpoint in a signed note, key name = origin), and an inclusion proof.
//! Responses carry the receipt of the decision they report, so a holder cannot later deny a
//! disclosure it made.

use std::fmt;

use serde::{Deserialize, Serialize};

use crate::category::{Category, Purpose};
use crate::cbor::{self, DecodeError};
use crate::checkpoint::{audit_origin, CheckpointError, SignedCheckpoint};
use crate::credential::StaffRole;
use crate::ids::{AgencyId, ConsentId, PassportId, PersonId, QueryId};
use crate::keys::{fixed_bytes, PublicKey};
use crate::merkle::{leaf_hash, verify_inclusion, Hash, MerkleError};
use crate::messages::{AckOutcome, Outcome, RefusalReason, Withheld};
use crate::time::Timestamp;

/// The host part of every Throughgate audit-log origin.
pub const ORIGIN_HOST: &str = "throughgate";
/// The largest audit entry accepted.
pub const MAX_ENTRY: usize = 64 * 1024;
/// The longest inclusion or consistency proof accepted (enough for 2^64 leaves).
pub const MAX_PROOF_LEN: usize = 64;

/// The origin (and checkpoint key name) of `agency`'s audit log: `throughgate/<agency>/audit`.
pub fn origin(agency: &AgencyId) -> String {
    audit_origin(ORIGIN_HOST, agency)
}

/// A holder's decision on one query: what was asked, by whom, and what was released.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DecisionEntry {
    /// The query.
    pub query_id: QueryId,
    /// SHA-256 of the query's body bytes.
    #[serde(with = "fixed_bytes")]
    pub query_digest: [u8; 32],
    /// The person.
    pub passport_id: PassportId,
    /// The requesting agency (the recipient of any disclosure).
    pub requester: AgencyId,
    /// The caseworker who asked.
    pub caseworker: PersonId,
    /// The consent relied on (the justification), if one was found.
    #[serde(deserialize_with = "crate::cbor::required")]
    pub consent_id: Option<ConsentId>,
    /// The purpose given.
    pub purpose: Purpose,
    /// Disclosed, refused or not held.
    pub outcome: Outcome,
    /// Why, when refused.
    #[serde(deserialize_with = "crate::cbor::required")]
    pub reason: Option<RefusalReason>,
    /// Categories released.
    pub categories: Vec<Category>,
    /// Fields released, as `kind.field`.
    pub fields: Vec<String>,
    /// Number of records released.
    pub records: u32,
    /// What was withheld by policy or period.
    pub withheld: Withheld,
    /// The live record source's answer the records came from, when the holder read them from
    /// the agency's own system rather than its imported store. Always written (`null` when
    /// none); an entry without it is read as having none.
    #[serde(default)]
    pub source: Option<SourceAnswer>,
}

/// A live record source's answer, as a decision's audit entry records it: enough to match the
/// entry against the agency's own system, never the records.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SourceAnswer {
    /// SHA-256 of the answer's records as checked, encoded as a CBOR array of `record`s in
    /// the order the source gave them (before minimisation).
    #[serde(with = "fixed_bytes")]
    pub digest: [u8; 32],
    /// When the source gave that answer: earlier than the decision when the holder answered
    /// from its short in-memory cache.
    pub read_at: Timestamp,
}

/// A consent event on this node.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ConsentEntry {
    /// The consent.
    pub consent_id: ConsentId,
    /// The person.
    pub passport_id: PassportId,
    /// The recording agency.
    pub recorded_by: AgencyId,
    /// The member of staff who acted (recorder or reviser), when known here.
    #[serde(deserialize_with = "crate::cbor::required")]
    pub person: Option<PersonId>,
    /// The purpose.
    pub purpose: Purpose,
    /// At a holder, the linkage result.
    #[serde(deserialize_with = "crate::cbor::required")]
    pub linkage: Option<AckOutcome>,
}

/// What happened.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AuditEvent {
    /// A query was received and decided (disclosed, refused or not held).
    Decision(DecisionEntry),
    /// This node sent a caseworker's query to holders.
    QuerySent {
        /// The query.
        query_id: QueryId,
        /// SHA-256 of its body.
        #[serde(with = "fixed_bytes")]
        query_digest: [u8; 32],
        /// The person.
        passport_id: PassportId,
        /// The caseworker.
        caseworker: PersonId,
        /// The consent relied on.
        #[serde(deserialize_with = "crate::cbor::required")]
        consent_id: Option<ConsentId>,
        /// The purpose.
        purpose: Purpose,
        /// The holders asked.
        holders: Vec<AgencyId>,
    },
    /// A consent was recorded here by a caseworker.
    ConsentRecorded(ConsentEntry),
    /// A consent from another agency was received and registered.
    ConsentRegistered(ConsentEntry),
    /// A consent was revoked.
    ConsentRevoked(ConsentEntry),
    /// A consent reached the end of its validity.
    ConsentExpired(ConsentEntry),
    /// A consent was replaced by a newer one.
    ConsentSuperseded(ConsentEntry),
    /// A staff credential was issued.
    CredentialIssued {
        /// The person.
        person_id: PersonId,
        /// Their roles.
        roles: Vec<StaffRole>,
        /// Until when.
        not_after: Timestamp,
    },
    /// An administrative action (import, policy change, key change...).
    Admin {
        /// Who did it.
        #[serde(deserialize_with = "crate::cbor::required")]
        person_id: Option<PersonId>,
        /// What, e.g. `records_import`.
        action: String,
        /// Counts and names, never personal data.
        detail: String,
    },
    /// A data-protection officer read this log (search, report, federated report).
    AuditAccess {
        /// The agency whose DPO asked.
        agency: AgencyId,
        /// The DPO.
        dpo: PersonId,
        /// The passport asked about, if any.
        #[serde(deserialize_with = "crate::cbor::required")]
        passport_id: Option<PassportId>,
        /// What was done.
        action: String,
    },
    /// A peer's checkpoint was inconsistent with one already witnessed: a forked or rewritten
    /// log.
    WitnessAlarm {
        /// The peer.
        peer: AgencyId,
        /// What was seen.
        detail: String,
    },
    /// Retention is about to redact the content of entries `from..to` (end exclusive), every
    /// one of them logged before `cutoff`. Logged before the content goes, so a redacted entry
    /// is evidence only when a redaction entry logged after it covers it.
    Redaction {
        /// The first entry redacted.
        from: u64,
        /// One past the last entry redacted.
        to: u64,
        /// Every entry redacted was logged before this instant.
        cutoff: Timestamp,
    },
}

impl AuditEvent {
    /// Every name [`AuditEvent::name`] gives, for validating searches.
    pub const NAMES: &'static [&'static str] = &[
        "disclosed",
        "refused",
        "not_held",
        "query_sent",
        "consent_recorded",
        "consent_registered",
        "consent_revoked",
        "consent_expired",
        "consent_superseded",
        "credential_issued",
        "admin",
        "audit_access",
        "witness_alarm",
        "redaction",
    ];

    /// A short name for the event type.
    pub fn name(&self) -> &'static str {
        match self {
            AuditEvent::Decision(d) => match d.outcome {
                Outcome::Disclosed => "disclosed",
                Outcome::Refused => "refused",
                Outcome::NotHeld => "not_held",
            },
            AuditEvent::QuerySent { .. } => "query_sent",
            AuditEvent::ConsentRecorded(_) => "consent_recorded",
            AuditEvent::ConsentRegistered(_) => "consent_registered",
            AuditEvent::ConsentRevoked(_) => "consent_revoked",
            AuditEvent::ConsentExpired(_) => "consent_expired",
            AuditEvent::ConsentSuperseded(_) => "consent_superseded",
            AuditEvent::CredentialIssued { .. } => "credential_issued",
            AuditEvent::Admin { .. } => "admin",
            AuditEvent::AuditAccess { .. } => "audit_access",
            AuditEvent::WitnessAlarm { .. } => "witness_alarm",
            AuditEvent::Redaction { .. } => "redaction",
        }
    }

    /// The passport the event concerns, if any.
    pub fn passport(&self) -> Option<&PassportId> {
        match self {
            AuditEvent::Decision(d) => Some(&d.passport_id),
            AuditEvent::QuerySent { passport_id, .. } => Some(passport_id),
            AuditEvent::ConsentRecorded(c)
            | AuditEvent::ConsentRegistered(c)
            | AuditEvent::ConsentRevoked(c)
            | AuditEvent::ConsentExpired(c)
            | AuditEvent::ConsentSuperseded(c) => Some(&c.passport_id),
            AuditEvent::AuditAccess { passport_id, .. } => passport_id.as_ref(),
            _ => None,
        }
    }
}

/// The CBOR bytes that begin a `redaction` event inside an entry as this crate encodes it (the
/// key `event`, a map of one entry, the text `redaction`): a cheap filter before decoding when
/// looking for redaction entries among many.
pub const REDACTION_MARK: &[u8] = b"\x65event\xa1\x69redaction";

impl fmt::Display for AuditEvent {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// One entry of a node's audit log.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AuditEntry {
    /// When it happened (node clock).
    pub at: Timestamp,
    /// The node whose log this is.
    pub node: AgencyId,
    /// What happened.
    pub event: AuditEvent,
}

impl AuditEntry {
    /// Encodes the entry (the leaf data of the Merkle tree).
    pub fn to_bytes(&self) -> Vec<u8> {
        cbor::to_vec(self)
    }

    /// Decodes an entry within [`MAX_ENTRY`].
    pub fn from_bytes(bytes: &[u8]) -> Result<AuditEntry, DecodeError> {
        cbor::from_slice("audit entry", bytes, MAX_ENTRY)
    }
}

/// Proof that an entry is in a node's log.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Receipt {
    /// The entry's exact bytes (the Merkle leaf data).
    #[serde(with = "crate::keys::vec_bytes")]
    pub entry: Vec<u8>,
    /// Its index in the log.
    pub leaf_index: u64,
    /// A checkpoint covering it, signed by the node (signed-note text).
    pub checkpoint: String,
    /// The inclusion proof from the leaf to the checkpoint's root.
    pub proof: Vec<ProofHash>,
}

/// One 32-byte hash of a proof, a CBOR byte string.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct ProofHash(#[serde(with = "fixed_bytes")] pub Hash);

impl AsRef<[u8]> for ProofHash {
    fn as_ref(&self) -> &[u8] {
        &self.0
    }
}

/// Why a receipt does not prove what it claims.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ReceiptError {
    /// The checkpoint does not parse, has another origin, or is not signed by the node.
    #[error("checkpoint: {0}")]
    Checkpoint(#[from] CheckpointError),
    /// None of the node's keys signed the checkpoint.
    #[error("the checkpoint is not signed by a key of {0}")]
    NotSigned(AgencyId),
    /// The proof does not lead from the entry to the checkpoint's root.
    #[error("inclusion proof: {0}")]
    Inclusion(#[from] MerkleError),
    /// The proof is longer than any real proof.
    #[error("proof has {0} hashes, over the limit of {MAX_PROOF_LEN}")]
    ProofTooLong(usize),
    /// The entry does not decode.
    #[error("entry: {0}")]
    Entry(#[from] DecodeError),
    /// The entry is from another node's log.
    #[error("the entry belongs to {0}'s log")]
    WrongNode(AgencyId),
}

/// A verified receipt.
#[derive(Debug, Clone)]
pub struct VerifiedReceipt {
    /// The decoded entry.
    pub entry: AuditEntry,
    /// The checkpoint it is included in.
    pub checkpoint: SignedCheckpoint,
}

/// Verifies that `receipt` proves an entry of `node`'s log, with a checkpoint signed by one of
/// `node_keys`.
pub fn verify_receipt(
    receipt: &Receipt,
    node: &AgencyId,
    node_keys: &[PublicKey],
) -> Result<VerifiedReceipt, ReceiptError> {
    verify_receipt_cached(receipt, node, node_keys, None)
}

/// [`verify_receipt`], remembering checkpoint signatures that verified in `cache`.
pub fn verify_receipt_cached(
    receipt: &Receipt,
    node: &AgencyId,
    node_keys: &[PublicKey],
    cache: Option<&crate::sigcache::SigCache>,
) -> Result<VerifiedReceipt, ReceiptError> {
    check_receipt(receipt, node, Some((node_keys, cache)))
}

/// Verifies `receipt` as part of a message that `node` signed (a query response, SPEC 8.6
/// step 8): every check of [`verify_receipt`] except the checkpoint's own signature. The
/// enclosing message's signature covers the receipt's checkpoint text byte for byte, so it
/// binds the node to that log size and root as strongly as the checkpoint's signature would:
/// the same signer, under the same keys. The caller must already have verified that signature
/// with `node`'s keys.
pub fn verify_receipt_signed_within(
    receipt: &Receipt,
    node: &AgencyId,
) -> Result<VerifiedReceipt, ReceiptError> {
    check_receipt(receipt, node, None)
}

/// The receipt checks, with the checkpoint's signature verified against `signature`'s keys when
/// given.
fn check_receipt(
    receipt: &Receipt,
    node: &AgencyId,
    signature: Option<(&[PublicKey], Option<&crate::sigcache::SigCache>)>,
) -> Result<VerifiedReceipt, ReceiptError> {
    if receipt.proof.len() > MAX_PROOF_LEN {
        return Err(ReceiptError::ProofTooLong(receipt.proof.len()));
    }
    let origin = origin(node);
    let signed = SignedCheckpoint::parse(receipt.checkpoint.as_bytes())?;
    let cp = signed.checkpoint();
    if cp.origin != origin {
        return Err(CheckpointError::WrongOrigin {
            expected: origin,
            got: cp.origin.chars().take(100).collect(),
        }
        .into());
    }
    if let Some((node_keys, cache)) = signature {
        if !node_keys
            .iter()
            .any(|k| signed.verify_cached(&origin, k, cache).is_ok())
        {
            return Err(ReceiptError::NotSigned(node.clone()));
        }
    }
    verify_inclusion(
        &leaf_hash(&receipt.entry),
        receipt.leaf_index,
        cp.size,
        &receipt.proof,
        &cp.root_hash,
    )?;
    let entry = AuditEntry::from_bytes(&receipt.entry)?;
    if &entry.node != node {
        return Err(ReceiptError::WrongNode(entry.node));
    }
    Ok(VerifiedReceipt {
        entry,
        checkpoint: signed,
    })
}

/// Why a node's answer to an audit query does not verify.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AuditAnswerError {
    /// The answer does not decode or is not signed by the node.
    #[error("answer: {0}")]
    Envelope(String),
    /// The answer is for another query, from another node, or lists an entry about someone
    /// else.
    #[error("the answer is for another query or node, or lists an entry about someone else")]
    Mismatch,
    /// An entry's proof or the checkpoint does not verify.
    #[error("entry {index}: {source}")]
    Entry {
        /// The entry's index.
        index: u64,
        /// What failed.
        source: ReceiptError,
    },
    /// The access receipt does not verify.
    #[error("access receipt: {0}")]
    Access(ReceiptError),
}

/// Verifies `holder`'s signed answer to the audit query `query_env`: signed by one of `keys`,
/// naming the query's digest, with every entry proven under the answer's checkpoint and the
/// access itself logged. Returns the entries with their indexes.
pub fn verify_audit_answer(
    env: &crate::envelope::Envelope,
    query_env: &crate::envelope::Envelope,
    holder: &AgencyId,
    keys: &[PublicKey],
) -> Result<Vec<(u64, AuditEntry)>, AuditAnswerError> {
    use crate::envelope::SignerRole;
    use crate::messages::AuditAnswer;
    env.verify_by_any(SignerRole::Node, keys)
        .map_err(|e| AuditAnswerError::Envelope(e.to_string()))?;
    let answer: AuditAnswer = env
        .open()
        .map_err(|e| AuditAnswerError::Envelope(e.to_string()))?;
    if &answer.holder != holder || answer.query_digest != crate::messages::query_digest(query_env) {
        return Err(AuditAnswerError::Mismatch);
    }
    let query: crate::messages::AuditQuery = query_env
        .open()
        .map_err(|e| AuditAnswerError::Envelope(format!("audit query: {e}")))?;
    let access =
        verify_receipt(&answer.access_receipt, holder, keys).map_err(AuditAnswerError::Access)?;
    // The access receipt must be this access: the DPO's, about this passport.
    match &access.entry.event {
        AuditEvent::AuditAccess {
            agency,
            dpo,
            passport_id,
            ..
        } if agency == &query.requester
            && dpo == &query.dpo
            && passport_id.as_ref() == Some(&query.passport_id) => {}
        _ => return Err(AuditAnswerError::Mismatch),
    }
    let mut out = Vec::with_capacity(answer.entries.len());
    for e in &answer.entries {
        let receipt = Receipt {
            entry: e.entry.clone(),
            leaf_index: e.leaf_index,
            checkpoint: answer.checkpoint.clone(),
            proof: e.proof.clone(),
        };
        let v =
            verify_receipt(&receipt, holder, keys).map_err(|source| AuditAnswerError::Entry {
                index: e.leaf_index,
                source,
            })?;
        if v.entry.event.passport() != Some(&query.passport_id) {
            return Err(AuditAnswerError::Mismatch);
        }
        out.push((e.leaf_index, v.entry));
    }
    Ok(out)
}
