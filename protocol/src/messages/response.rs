use std::fmt;

use serde::{Deserialize, Serialize};

use crate::category::Category;
use crate::envelope::{Message, MessageKind};
use crate::ids::{AgencyId, ConsentId, PassportId, QueryId};
use crate::keys::fixed_bytes;
use crate::record::DisclosedRecord;
use crate::time::Timestamp;

/// What a holder decided.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    /// Records (possibly none in the asked categories) released under consent and policy.
    Disclosed,
    /// Refused; the reason says why.
    Refused,
    /// The holder has no record of this person. Reveals nothing else.
    NotHeld,
}

impl Outcome {
    /// The wire name.
    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::Disclosed => "disclosed",
            Outcome::Refused => "refused",
            Outcome::NotHeld => "not_held",
        }
    }
}

impl fmt::Display for Outcome {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

macro_rules! reasons {
    ($($(#[$doc:meta])* $variant:ident => $name:literal, $text:literal;)*) => {
        /// A machine-readable refusal reason.
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
        #[serde(rename_all = "snake_case")]
        pub enum RefusalReason {
            $($(#[$doc])* $variant,)*
        }

        impl RefusalReason {
            /// Every reason.
            pub const ALL: &'static [RefusalReason] = &[$(RefusalReason::$variant,)*];

            /// The wire name.
            pub fn as_str(self) -> &'static str {
                match self {
                    $(RefusalReason::$variant => $name,)*
                }
            }

            /// What it means and what to do, for people.
            pub fn explain(self) -> &'static str {
                match self {
                    $(RefusalReason::$variant => $text,)*
                }
            }
        }
    };
}

reasons! {
    /// The holder holds no consent with the query's consent id (or the query named none).
    NoConsent => "no_consent", "no consent for this person is registered at this holder; record consent with `tg consent grant` and wait for delivery";
    /// The consent was withdrawn.
    ConsentRevoked => "consent_revoked", "the person withdrew this consent; a new consent is needed";
    /// The consent was replaced by a newer one.
    ConsentSuperseded => "consent_superseded", "this consent was replaced by a newer one; query under the newer consent";
    /// The consent's validity has ended.
    ConsentExpired => "consent_expired", "the consent has expired; record a new consent with the person";
    /// The consent is not valid yet.
    ConsentNotYetValid => "consent_not_yet_valid", "the consent's validity has not started yet";
    /// The consent is for a different passport.
    ConsentPassportMismatch => "consent_passport_mismatch", "the consent belongs to a different person";
    /// The requesting agency is not among the consent's grantees.
    RequesterNotGrantee => "requester_not_grantee", "the person did not agree to share with your agency";
    /// The query's purpose differs from the consent's.
    PurposeNotCovered => "purpose_not_covered", "the consent does not cover this purpose";
    /// The consent does not name this holder.
    HolderNotCovered => "holder_not_covered", "the consent does not cover this agency's records";
    /// A category asked for is not covered for this holder.
    CategoryNotCovered => "category_not_covered", "the consent does not cover one of the categories asked for; ask only for covered categories";
    /// The query asks nothing of this holder.
    NotAddressed => "not_addressed", "the query does not ask this agency for anything";
    /// The query is past its expiry.
    QueryExpired => "query_expired", "the query expired before it was answered; retry";
    /// The query claims to be issued in the future (clock skew).
    QueryNotYetValid => "query_not_yet_valid", "the query is dated in the future; check the requester's clock";
    /// The query's lifetime is longer than holders accept.
    QueryLifetimeTooLong => "query_lifetime_too_long", "the query's expiry is too far after its issue time";
    /// The query id was seen before.
    QueryReplayed => "query_replayed", "this exact query was already answered; send a fresh query";
    /// The caseworker's credential is malformed or not issued by the requesting agency's node.
    CredentialInvalid => "credential_invalid", "the caseworker's credential is not valid; the requesting agency should reissue it";
    /// The caseworker's credential is outside its validity window.
    CredentialExpired => "credential_expired", "the caseworker's credential has expired; the requesting agency should renew it";
    /// The caseworker's credential was revoked by its agency.
    CredentialRevoked => "credential_revoked", "the caseworker's credential has been revoked";
    /// The credential does not grant the caseworker role.
    CredentialRole => "credential_role", "only caseworkers may query";
    /// The caseworker's signature on the query does not verify.
    CaseworkerSignatureInvalid => "caseworker_signature_invalid", "the caseworker's signature on the query does not verify";
    /// The requesting node's signature on the query does not verify.
    RequesterSignatureInvalid => "requester_signature_invalid", "the requesting node's signature on the query does not verify";
    /// The query's requester is not the authenticated peer that sent it.
    RequesterMismatch => "requester_mismatch", "the query names a different requester than the node that sent it";
    /// The requester is not a member allowed to query.
    RequesterNotAuthorised => "requester_not_authorised", "the requesting agency is not a requester in the federation manifest";
    /// The consent's identifier names a different person here than the passport id does.
    SubjectMismatch => "subject_mismatch", "this consent identifies a different person at this agency than the passport id already does; nothing is shared under it; the recording agency must check the person's identifiers";
    /// Policy releases nothing of what was asked to this requester for this purpose.
    PolicyWithholdsAll => "policy_withholds_all", "this agency's policy releases none of the asked categories to your agency for this purpose";
    /// The holder's own system of record did not answer in time, or failed.
    SourceUnavailable => "source_unavailable", "this agency's system of record did not answer in time; nothing was disclosed; retry later";
    /// The holder's own system of record answered with something that is not a valid record.
    SourceInvalid => "source_invalid", "this agency's system of record returned records it could not check; nothing was disclosed; its operators can see why in its log";
}

impl fmt::Display for RefusalReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What the holder held back, by name, never by value.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Withheld {
    /// Categories asked for and covered by consent but withheld by policy.
    pub categories: Vec<Category>,
    /// Fields withheld by policy, as `kind.field`.
    pub fields: Vec<String>,
    /// Records outside the period the consent covers.
    pub records_out_of_period: u32,
}

impl Withheld {
    /// Whether nothing was withheld.
    pub fn is_empty(&self) -> bool {
        self.categories.is_empty() && self.fields.is_empty() && self.records_out_of_period == 0
    }
}

/// A holder's signed answer to a query.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Response {
    /// The query answered.
    pub query_id: QueryId,
    /// SHA-256 of the query's body bytes.
    #[serde(with = "fixed_bytes")]
    pub query_digest: [u8; 32],
    /// The answering holder.
    pub holder: AgencyId,
    /// The passport id asked about.
    pub passport_id: PassportId,
    /// The decision.
    pub outcome: Outcome,
    /// Why, when refused.
    #[serde(deserialize_with = "crate::cbor::required")]
    pub reason: Option<RefusalReason>,
    /// Extra words on a refusal (never personal data).
    #[serde(deserialize_with = "crate::cbor::required")]
    pub detail: Option<String>,
    /// The consent the decision was made under, when one was found.
    #[serde(deserialize_with = "crate::cbor::required")]
    pub consent_id: Option<ConsentId>,
    /// The released records (empty unless disclosed).
    pub records: Vec<DisclosedRecord>,
    /// What policy and the consent period held back.
    pub withheld: Withheld,
    /// When the holder decided.
    pub as_of: Timestamp,
    /// Proof that the decision was logged (durably) before this response left the holder.
    pub receipt: crate::audit::Receipt,
    /// The holder's newest checkpoint its witnesses cosigned, tied to the receipt's checkpoint
    /// by a consistency proof; `None` while no witness has cosigned any.
    #[serde(deserialize_with = "crate::cbor::required")]
    pub witnessed: Option<WitnessedCheckpoint>,
    /// The receipt's checkpoint tied to the newest checkpoint of this log the requester (as a
    /// witness) has cosigned, as the holder recorded it; `None` when it recorded none.
    #[serde(deserialize_with = "crate::cbor::required")]
    pub requester_view: Option<RequesterView>,
    /// When the disclosed records were read from the holder's live record source: before
    /// `as_of` when the holder answered from its short cache. `None` when it answered from its
    /// own imported store, or disclosed nothing. Always written; read as `None` when absent.
    #[serde(default)]
    pub records_read_at: Option<Timestamp>,
}

impl Response {
    /// How old the disclosed records were when the holder decided, in seconds: `None` unless
    /// they came from a live source.
    pub fn records_age_secs(&self) -> Option<u64> {
        self.records_read_at
            .map(|t| self.as_of.0.saturating_sub(t.0))
    }
}

/// A cosigned checkpoint of the holder's log and its link to the receipt's checkpoint: what
/// lets an offline verifier check the witness quorum the manifest asks for.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WitnessedCheckpoint {
    /// The signed note: the checkpoint, the holder's log signature and the witnesses'
    /// cosignature lines (C2SP tlog-cosignature).
    pub checkpoint: String,
    /// The RFC 6962 consistency proof between this checkpoint's size and the receipt
    /// checkpoint's size, from the smaller to the larger; empty when they are equal.
    pub consistency: Vec<crate::audit::ProofHash>,
}

/// The link between a receipt's checkpoint and the newest checkpoint the requester cosigned.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RequesterView {
    /// The size of the newest checkpoint of this log the requester cosigned, as the holder
    /// recorded it.
    pub size: u64,
    /// The consistency proof between that size and the receipt checkpoint's size, from the
    /// smaller to the larger; empty when they are equal.
    pub consistency: Vec<crate::audit::ProofHash>,
}

impl Message for Response {
    const KIND: MessageKind = MessageKind::Response;
    const MAX_BODY: usize = crate::frame::DEFAULT_MAX_FRAME - 1024;
}
