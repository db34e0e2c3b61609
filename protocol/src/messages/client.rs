use serde::{Deserialize, Serialize};

use crate::audit::AuditEntry;
use crate::consent::ConsentStatus;
use crate::credential::StaffRole;
use crate::envelope::{Envelope, Message, MessageKind};
use crate::identifiers::{SubjectIdentifier, SALT_LEN};
use crate::ids::{AgencyId, ConsentId, PassportId, PersonId, RecordId};
use crate::keys::{fixed_bytes, PublicKey};
use crate::time::Timestamp;
use crate::{
    category::Purpose,
    messages::{AckOutcome, AckSubject},
};

/// A person's identifier at one holder, with the salt of its commitment in the consent.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HolderSubject {
    /// The holder.
    pub agency: AgencyId,
    /// The person's identifier there.
    pub identifier: SubjectIdentifier,
    /// The salt used in the consent's commitment for this holder.
    #[serde(with = "fixed_bytes")]
    pub salt: [u8; SALT_LEN],
}

/// Format of a records file.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ImportFormat {
    /// Comma-separated values with a header row.
    Csv,
    /// JSON Lines: one record object per line.
    Json,
}

/// What a CLI asks its home node to do.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ClientOp {
    /// Countersign and fan out a caseworker-signed query.
    Assemble {
        /// The query, signed by the caseworker.
        query: Envelope,
        /// Whether to stream a status-only progress frame per holder as each answers (for a
        /// live display). Absent means false: the final answer carries everything, and a
        /// client that shows no progress saves a signature per holder on each side.
        #[serde(default, deserialize_with = "crate::cbor::null_as_default")]
        progress: bool,
    },
    /// Countersign, store and deliver a caseworker-signed consent.
    GrantConsent {
        /// The consent artefact, signed by the caseworker.
        consent: Envelope,
        /// Each holder's identifier for the person, with its commitment salt.
        subjects: Vec<HolderSubject>,
        /// When the consent supersedes another: a revocation of the old one, signed by the
        /// caseworker, which the node sends to the agencies the old consent named and the new
        /// one leaves out (so a narrowing takes effect everywhere).
        #[serde(deserialize_with = "crate::cbor::required")]
        retire: Option<Envelope>,
    },
    /// Countersign, apply and deliver a caseworker-signed revocation.
    RevokeConsent {
        /// The revocation, signed by the caseworker.
        revocation: Envelope,
    },
    /// List consents known to this node.
    ListConsents(ConsentFilter),
    /// One consent with its delivery state.
    ShowConsent {
        /// The consent.
        consent_id: ConsentId,
    },
    /// Import a records file, sent as data frames after this request; all or nothing.
    ImportRecords {
        /// The file's format.
        format: ImportFormat,
        /// Validate only; store nothing.
        dry_run: bool,
        /// Total bytes that follow.
        total_bytes: u64,
        /// SHA-256 of those bytes.
        #[serde(with = "fixed_bytes")]
        sha256: [u8; 32],
        /// Treat the file as the complete current snapshot of some record kinds: records of
        /// those kinds that it lacks are deleted. Null: an ordinary import, which only adds
        /// and replaces.
        #[serde(deserialize_with = "crate::cbor::required")]
        sync: Option<SyncRequest>,
    },
    /// Delete records held about one subject (erasure or rectification), atomically (operator).
    DeleteRecords {
        /// The subject's identifier under this node's scheme, as in the records files.
        subject: String,
        /// Only records of this kind.
        #[serde(deserialize_with = "crate::cbor::required")]
        kind: Option<String>,
        /// Only the record with this id.
        #[serde(deserialize_with = "crate::cbor::required")]
        record_id: Option<RecordId>,
    },
    /// Issue a credential to a member of staff.
    AddStaff {
        /// Their staff id.
        person_id: PersonId,
        /// Their name.
        display_name: String,
        /// Their roles.
        roles: Vec<StaffRole>,
        /// Their public key.
        public_key: PublicKey,
        /// Days until the credential expires.
        valid_days: u32,
    },
    /// List staff credentials.
    ListStaff,
    /// Replace a member of staff's credential with one for a new key: the old credential is
    /// revoked (and announced) and a new one issued with the same name and roles (operator).
    ReissueStaff {
        /// Their staff id.
        person_id: PersonId,
        /// Their new public key.
        public_key: PublicKey,
        /// Days until the new credential expires.
        valid_days: u32,
    },
    /// Node health and counts.
    Status,
    /// The manifest the node trusts.
    GetManifest,
    /// Search this node's audit log (DPO).
    AuditSearch(AuditFilter),
    /// Recompute and check this node's whole audit log (DPO).
    AuditVerify,
    /// The subject-access report for one passport: this node's log, or every node's (DPO).
    AuditReport {
        /// The audit query, signed by the DPO.
        query: Envelope,
        /// Ask every member of the federation, not only this node.
        federation: bool,
    },
    /// This node's latest checkpoint, who cosigned it, and what it witnessed (DPO, operator).
    AuditCheckpoints,
    /// Adopt a new governance-signed manifest and spread it to every member (operator).
    PublishManifest {
        /// The manifest envelope.
        manifest: Envelope,
    },
    /// Withdraw a member of staff's credential and announce it to every member (operator).
    RevokeStaff {
        /// The person.
        person_id: PersonId,
    },
    /// Switch to the node's next key (already listed in the manifest) without downtime
    /// (operator).
    RotateKey,
    /// Re-issue under the node's current key every active staff credential a previous node
    /// key signed: the same body (staff id, name, roles, key, validity), newly signed
    /// (operator).
    ReissueCredentials,
    /// The caller's own credential as the node now holds it (after a key rotation, the one
    /// re-issued under the current key) (any role).
    RefreshCredential,
    /// Take a consistent backup of the whole store while the node runs; it streams back as
    /// chunks (operator).
    Backup,
    /// As a witness, forget what was witnessed of a peer's log (and its standing alarm), taking
    /// its next checkpoint as a new baseline: after the peer restored from a backup (DPO,
    /// operator).
    WitnessReset {
        /// The peer.
        peer: AgencyId,
    },
    /// Export every record this node holds in the format `tg records import` reads; it streams
    /// back as chunks (operator).
    ExportRecords {
        /// CSV or JSON Lines.
        format: ImportFormat,
    },
}

/// Filters for the consent register; all given filters must match.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ConsentFilter {
    /// Only this person's.
    #[serde(deserialize_with = "crate::cbor::required")]
    pub passport_id: Option<PassportId>,
    /// Only those with this status now.
    #[serde(deserialize_with = "crate::cbor::required")]
    pub status: Option<ConsentStatus>,
    /// Only those naming this holder.
    #[serde(deserialize_with = "crate::cbor::required")]
    pub holder: Option<AgencyId>,
    /// Only those naming this grantee.
    #[serde(deserialize_with = "crate::cbor::required")]
    pub grantee: Option<AgencyId>,
    /// Only those for this purpose.
    #[serde(deserialize_with = "crate::cbor::required")]
    pub purpose: Option<Purpose>,
    /// Only those whose validity ends before this instant (e.g. to find consents due to expire).
    #[serde(deserialize_with = "crate::cbor::required")]
    pub expires_before: Option<Timestamp>,
}

/// Filters for an audit-log search; all given filters must match.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct AuditFilter {
    /// Entries about this passport.
    #[serde(deserialize_with = "crate::cbor::required")]
    pub passport_id: Option<PassportId>,
    /// Entries naming this member of staff (caseworker, recorder, DPO).
    #[serde(deserialize_with = "crate::cbor::required")]
    pub person: Option<PersonId>,
    /// Entries naming this agency (requester, recorder, peer).
    #[serde(deserialize_with = "crate::cbor::required")]
    pub agency: Option<AgencyId>,
    /// Entries about this consent.
    #[serde(deserialize_with = "crate::cbor::required")]
    pub consent_id: Option<ConsentId>,
    /// Entries of this type (`disclosed`, `refused`, `not_held`, `consent_recorded`...).
    #[serde(deserialize_with = "crate::cbor::required")]
    pub event: Option<String>,
    /// Consent entries whose linkage at this holder was this (`not_held` lists recordings
    /// whose identifiers matched nobody here: the signature of probing).
    #[serde(deserialize_with = "crate::cbor::required")]
    pub linkage: Option<AckOutcome>,
    /// At or after this instant.
    #[serde(deserialize_with = "crate::cbor::required")]
    pub from: Option<Timestamp>,
    /// Before this instant.
    #[serde(deserialize_with = "crate::cbor::required")]
    pub until: Option<Timestamp>,
    /// Most entries returned (default 1000).
    #[serde(deserialize_with = "crate::cbor::required")]
    pub limit: Option<u32>,
}

/// An audit entry with its index in the log.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct IndexedEntry {
    /// Its index.
    pub index: u64,
    /// The entry.
    pub entry: AuditEntry,
}

/// The result of verifying a node's log.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AuditVerification {
    /// Entries checked.
    pub entries: u64,
    /// Checkpoints checked.
    pub checkpoints: u64,
    /// Whether everything verified.
    pub ok: bool,
    /// The first bad entry, if one can be named.
    #[serde(deserialize_with = "crate::cbor::required")]
    pub bad_entry: Option<u64>,
    /// The first bad checkpoint (its size), if any.
    #[serde(deserialize_with = "crate::cbor::required")]
    pub bad_checkpoint: Option<u64>,
    /// What is wrong.
    #[serde(deserialize_with = "crate::cbor::required")]
    pub detail: Option<String>,
    /// Milliseconds taken.
    pub elapsed_ms: u64,
    /// Entries whose content retention redacted, each accounted for by a redaction entry
    /// logged after it (0 unless the log verified).
    pub redacted: u64,
    /// Those entries as ranges, in order.
    pub redacted_ranges: Vec<RedactedRange>,
}

/// A run of redacted entries, `from` to `to` (end exclusive).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct RedactedRange {
    /// The first entry redacted.
    pub from: u64,
    /// One past the last.
    pub to: u64,
}

/// One agency's part of a subject-access report.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AuditSource {
    /// The agency.
    pub agency: AgencyId,
    /// How asking went.
    pub status: HolderStatus,
    /// Its signed answer.
    #[serde(deserialize_with = "crate::cbor::required")]
    pub answer: Option<Envelope>,
    /// Words on a failure.
    #[serde(deserialize_with = "crate::cbor::required")]
    pub detail: Option<String>,
}

/// A witness's cosignature on this node's checkpoint.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Cosignature {
    /// The witness.
    pub witness: AgencyId,
    /// The size of the checkpoint it cosigned.
    pub size: u64,
    /// When it cosigned (from the cosignature).
    #[serde(deserialize_with = "crate::cbor::required")]
    pub at: Option<Timestamp>,
}

/// A peer log this node witnesses.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Witnessed {
    /// The peer.
    pub agency: AgencyId,
    /// The size of its newest checkpoint this node cosigned.
    pub size: u64,
}

/// The node's checkpoint and witnessing status.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CheckpointStatus {
    /// The newest checkpoint (signed-note text).
    #[serde(deserialize_with = "crate::cbor::required")]
    pub latest: Option<String>,
    /// Its size.
    pub size: u64,
    /// The witnesses' newest cosignatures.
    pub cosignatures: Vec<Cosignature>,
    /// The checkpoint responses carry as witnessed: the newest cosigned by the manifest's
    /// witness threshold, else the newest cosigned at all, as a C2SP signed note with the log's
    /// signature and every cosignature line collected for it.
    #[serde(deserialize_with = "crate::cbor::required")]
    pub cosigned: Option<String>,
    /// The peer logs this node witnesses.
    pub witnessed: Vec<Witnessed>,
    /// Witness alarms raised since start.
    pub alarms: u64,
    /// Consents received since start whose identifier named a different person than their
    /// passport id already names here (`subject_mismatch`).
    pub consent_alarms: u64,
}

/// A request from a member of staff's CLI, signed with their key (role `person`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClientRequest {
    /// When it was signed.
    pub issued_at: Timestamp,
    /// What to do.
    pub op: ClientOp,
}

impl Message for ClientRequest {
    const KIND: MessageKind = MessageKind::ClientRequest;
    const MAX_BODY: usize = 1024 * 1024;
}

/// How a holder's part of a passport went.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum HolderStatus {
    /// A signed response arrived (disclosed, refused or not held: see the response).
    Answered,
    /// No connection could be made.
    Unreachable,
    /// Connected, but no answer within the deadline.
    TimedOut,
    /// An answer arrived but failed verification.
    Invalid,
    /// The holder returned a protocol error.
    Error,
}

impl HolderStatus {
    /// The wire name.
    pub fn as_str(self) -> &'static str {
        match self {
            HolderStatus::Answered => "answered",
            HolderStatus::Unreachable => "unreachable",
            HolderStatus::TimedOut => "timed_out",
            HolderStatus::Invalid => "invalid",
            HolderStatus::Error => "error",
        }
    }
}

/// One holder's part of a passport assembly.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HolderResult {
    /// The holder.
    pub agency: AgencyId,
    /// How it went.
    pub status: HolderStatus,
    /// The signed response, when answered.
    #[serde(deserialize_with = "crate::cbor::required")]
    pub response: Option<Envelope>,
    /// Words on a failure (never personal data).
    #[serde(deserialize_with = "crate::cbor::required")]
    pub detail: Option<String>,
    /// Milliseconds from fan-out to answer.
    pub elapsed_ms: u32,
}

/// Whether a grant or revocation reached one agency.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DeliveryState {
    /// Not acknowledged yet; still being retried.
    Pending,
    /// Acknowledged.
    Delivered,
    /// The recipient refused it (see the acknowledgement).
    Rejected,
}

impl DeliveryState {
    /// The wire name.
    pub fn as_str(self) -> &'static str {
        match self {
            DeliveryState::Pending => "pending",
            DeliveryState::Delivered => "delivered",
            DeliveryState::Rejected => "rejected",
        }
    }
}

/// The delivery of one grant or revocation to one agency.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ConsentDelivery {
    /// The recipient.
    pub agency: AgencyId,
    /// Grant or revocation.
    pub subject: AckSubject,
    /// Where it stands.
    pub state: DeliveryState,
    /// Since when it has been in this state.
    pub since: Timestamp,
    /// Attempts so far.
    pub attempts: u32,
    /// The recipient's signed acknowledgement, once delivered.
    #[serde(deserialize_with = "crate::cbor::required")]
    pub ack: Option<Envelope>,
    /// The last failure, while pending.
    #[serde(deserialize_with = "crate::cbor::required")]
    pub last_error: Option<String>,
}

/// A consent as listed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ConsentSummary {
    /// The consent.
    pub consent_id: ConsentId,
    /// The person.
    pub passport_id: PassportId,
    /// Its purpose.
    pub purpose: Purpose,
    /// Its status here, now.
    pub status: ConsentStatus,
    /// The recording agency.
    pub recorded_by: AgencyId,
    /// Valid from.
    pub valid_from: Timestamp,
    /// Valid until.
    pub valid_until: Timestamp,
    /// Holders named.
    pub holders: Vec<AgencyId>,
    /// Grantees named.
    pub grantees: Vec<AgencyId>,
    /// When this node received it.
    pub received_at: Timestamp,
    /// When its status last changed here (for an expired consent: its `valid_until`).
    pub status_since: Timestamp,
    /// For a withdrawn consent, the member of staff at the recording agency who recorded the
    /// withdrawal.
    #[serde(deserialize_with = "crate::cbor::required")]
    pub revoked_by: Option<PersonId>,
}

/// How an import is a sync: the file is the complete current snapshot of these record kinds.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SyncRequest {
    /// The kinds the snapshot covers; empty: every kind the file contains.
    pub kinds: Vec<String>,
    /// Go ahead even if the sync deletes more than the node's configured share of the records
    /// of those kinds.
    pub allow_mass_delete: bool,
}

/// What a sync changes (or, on a dry run or a refusal, would change).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SyncReport {
    /// The kinds the snapshot covers, sorted.
    pub kinds: Vec<String>,
    /// Records of those kinds held before the sync.
    pub held: u64,
    /// Records in the file not held before.
    pub added: u64,
    /// Records in the file held before with other content.
    pub changed: u64,
    /// Records in the file held before with the same content.
    pub unchanged: u64,
    /// Records of those kinds held before and absent from the file.
    pub deleted: u64,
    /// The node's limit on `deleted` as a percentage of `held`.
    pub max_delete_percent: u32,
    /// The sync was refused, and nothing stored, because it would delete more than that share
    /// and mass deletion was not allowed.
    pub mass_delete_refused: bool,
}

/// Records deleted by a `DeleteRecords` request, counted per kind.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeletionReport {
    /// Records deleted.
    pub deleted: u64,
    /// How many of each kind, sorted by kind.
    pub kinds: Vec<KindCount>,
}

/// A number of records of one kind.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct KindCount {
    /// The record kind.
    pub kind: String,
    /// How many.
    pub count: u64,
}

/// One bad row in an import.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ImportRowError {
    /// 1-based line number in the file.
    pub line: u64,
    /// What is wrong with it (never the row's personal data).
    pub reason: String,
}

/// The result of an import.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ImportReport {
    /// Data rows read.
    pub rows: u64,
    /// Records stored (0 on a dry run or when any row is bad).
    pub stored: u64,
    /// Distinct subjects among the rows.
    pub subjects: u64,
    /// Whether this was a dry run.
    pub dry_run: bool,
    /// Every problem found, each naming its row (a row can have several; capped at 1000, then
    /// `errors_truncated`).
    pub errors: Vec<ImportRowError>,
    /// More problems than listed.
    pub errors_truncated: bool,
    /// For a sync: what it changed, or would change.
    #[serde(deserialize_with = "crate::cbor::required")]
    pub sync: Option<SyncReport>,
}

/// A staff credential as listed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StaffSummary {
    /// Their staff id.
    pub person_id: PersonId,
    /// Their roles.
    pub roles: Vec<StaffRole>,
    /// Valid until.
    pub not_after: Timestamp,
    /// Their key's fingerprint.
    pub key_fingerprint: String,
    /// Their name.
    #[serde(default)]
    pub display_name: String,
    /// The fingerprint of the node key that signed the credential.
    #[serde(default)]
    pub issuer_key: String,
    /// `active`, `revoked`, `expired`, `not_yet_valid`, `previous_key` (signed by a node key
    /// the node has rotated away from, still listed in the manifest: reissue before it is
    /// retired), or `issuer_retired` (the signing key is no longer one of the agency's node
    /// keys in the manifest).
    #[serde(default)]
    pub state: String,
    /// When it was revoked.
    #[serde(default)]
    pub revoked_at: Option<Timestamp>,
    /// Who revoked it.
    #[serde(default)]
    pub revoked_by: Option<PersonId>,
}

/// Node health and counts.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeStatus {
    /// This agency.
    pub agency: AgencyId,
    /// Its display name.
    pub name: String,
    /// The software version.
    pub software: String,
    /// The node key's fingerprint.
    pub key_fingerprint: String,
    /// The manifest version trusted.
    pub manifest_version: u64,
    /// Its expiry.
    pub manifest_expires_at: Timestamp,
    /// Records held.
    pub records: u64,
    /// Consents known.
    pub consents: u64,
    /// Deliveries waiting in the outbox.
    pub outbox_pending: u64,
    /// When the node started.
    pub started_at: Timestamp,
    /// The longest consent validity this node records, in days.
    pub max_consent_days: u32,
}

/// What the home node sends back to a CLI, signed by the node.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ClientResponse {
    /// One holder's status, streamed as it arrives during an assembly when progress was asked
    /// for. Status only: `response` is always absent (the `assembled` frame carries it).
    Progress(HolderResult),
    /// The end of an assembly: the countersigned query, every holder's result, and the node's
    /// signed statement of the assembly.
    Assembled {
        /// The query as sent to holders (caseworker and node signatures).
        query: Envelope,
        /// Every holder's result, in request order.
        results: Vec<HolderResult>,
        /// The signed [`crate::assembly::AssemblyStatement`] (kind `assembly`).
        statement: Envelope,
    },
    /// A consent was countersigned, stored and queued for delivery.
    ConsentRecorded {
        /// The consent with both signatures.
        consent: Envelope,
        /// The deliveries queued.
        deliveries: Vec<ConsentDelivery>,
    },
    /// Consents matching a list request.
    Consents(Vec<ConsentSummary>),
    /// One consent in full.
    ConsentDetail {
        /// The signed artefact.
        consent: Envelope,
        /// Its status here.
        status: ConsentStatus,
        /// Its deliveries (on the recording node).
        deliveries: Vec<ConsentDelivery>,
    },
    /// The result of an import.
    Imported(ImportReport),
    /// Records deleted about one subject.
    RecordsDeleted(DeletionReport),
    /// A newly issued credential.
    Credential(Envelope),
    /// Staff credentials.
    Staff(Vec<StaffSummary>),
    /// Node status.
    Status(NodeStatus),
    /// The manifest the node trusts.
    Manifest(Envelope),
    /// Audit entries matching a search.
    AuditEntries {
        /// The entries, oldest first.
        entries: Vec<IndexedEntry>,
        /// More matched than the limit.
        truncated: bool,
    },
    /// The result of verifying the log.
    AuditVerified(AuditVerification),
    /// A subject-access report's raw material: each agency's signed answer.
    AuditReport {
        /// The countersigned audit query.
        query: Envelope,
        /// Each agency's answer.
        sources: Vec<AuditSource>,
    },
    /// Checkpoint and witnessing status.
    AuditCheckpoints(CheckpointStatus),
    /// A piece of a file being downloaded (a backup or a records export), in order.
    FileChunk(#[serde(with = "crate::keys::vec_bytes")] Vec<u8>),
    /// The end of a download.
    FileDone {
        /// Items in it (stored pairs of a backup, records of an export).
        items: u64,
        /// Its size in bytes.
        bytes: u64,
        /// SHA-256 of the whole file.
        #[serde(with = "fixed_bytes")]
        sha256: [u8; 32],
    },
}

impl Message for ClientResponse {
    const KIND: MessageKind = MessageKind::ClientResponse;
    const MAX_BODY: usize = crate::frame::DEFAULT_MAX_FRAME - 1024;
}
