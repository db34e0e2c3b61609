//! The consent artefact, its delivery to holders, and its revocation.
//!
//! The artefact is immutable and signed by the recording caseworker and their node. It names
//! per holder the categories covered and a salted commitment to the person's identifier at that
//! holder; the identifier itself travels only to that holder, inside a [`ConsentGrant`]. Status
//! (active, revoked, expired, superseded) is kept outside the signed body by every node.

use std::fmt;

use serde::{Deserialize, Serialize};

use crate::category::{Category, Purpose};
use crate::envelope::{Envelope, Message, MessageKind};
use crate::identifiers::{SubjectIdentifier, SALT_LEN};
use crate::ids::{AgencyId, ConsentId, PassportId, PersonId};
use crate::keys::fixed_bytes;
use crate::time::{Date, Timestamp};

/// The longest validity any consent may have, in days (ten years). Each agency sets its own,
/// shorter, maximum; this bounds every implementation.
pub const MAX_VALIDITY_DAYS: u32 = 3650;

/// How the person's consent was collected.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CollectionMethod {
    /// A paper form signed by the person; the reference is the form's number.
    SignedPaperForm,
    /// Recorded on the in-cell device; the reference is the device transaction.
    InCellDevice,
    /// Given verbally in front of a witness; the reference names the witness record.
    VerbalWitnessed,
}

impl CollectionMethod {
    /// The wire name.
    pub fn as_str(self) -> &'static str {
        match self {
            CollectionMethod::SignedPaperForm => "signed_paper_form",
            CollectionMethod::InCellDevice => "in_cell_device",
            CollectionMethod::VerbalWitnessed => "verbal_witnessed",
        }
    }
}

impl std::str::FromStr for CollectionMethod {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "signed_paper_form" => Ok(CollectionMethod::SignedPaperForm),
            "in_cell_device" => Ok(CollectionMethod::InCellDevice),
            "verbal_witnessed" => Ok(CollectionMethod::VerbalWitnessed),
            other => Err(format!(
                "unknown collection method {other:?}; expected signed_paper_form, in_cell_device or verbal_witnessed"
            )),
        }
    }
}

impl fmt::Display for CollectionMethod {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// How and where consent was collected.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Collection {
    /// The method.
    pub method: CollectionMethod,
    /// A reference to the evidence (form number, device transaction, witness record).
    pub reference: String,
}

/// What one holder is asked to share under this consent.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HolderScope {
    /// The holder.
    pub agency: AgencyId,
    /// The categories of this holder's records covered.
    pub categories: Vec<Category>,
    /// Salted commitment to the person's identifier at this holder (see
    /// [`crate::identifiers::commitment`]).
    #[serde(with = "fixed_bytes")]
    pub subject_commitment: [u8; 32],
}

/// The consent artefact body.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Consent {
    /// This consent's id.
    pub consent_id: ConsentId,
    /// The person's passport id.
    pub passport_id: PassportId,
    /// The purpose code.
    pub purpose: Purpose,
    /// The purpose as explained to the person.
    pub purpose_text: String,
    /// Per holder, what is covered.
    pub holders: Vec<HolderScope>,
    /// Agencies allowed to receive the records.
    pub grantees: Vec<AgencyId>,
    /// Valid from.
    pub valid_from: Timestamp,
    /// Valid until (exclusive); expiry takes effect without anyone acting.
    pub valid_until: Timestamp,
    /// Earliest date records may be about (inclusive), if limited.
    #[serde(deserialize_with = "crate::cbor::required")]
    pub records_from: Option<Date>,
    /// Latest date records may be about (inclusive), if limited.
    #[serde(deserialize_with = "crate::cbor::required")]
    pub records_until: Option<Date>,
    /// The lawful basis, e.g. "UK GDPR Art. 6(1)(e); Art. 9(2)(h)".
    pub legal_basis: String,
    /// The jurisdiction, e.g. "England and Wales".
    pub jurisdiction: String,
    /// How consent was collected.
    pub collection: Collection,
    /// SHA-256 of the privacy notice the person was shown.
    #[serde(with = "fixed_bytes")]
    pub privacy_notice_sha256: [u8; 32],
    /// The recording agency.
    pub recorded_by: AgencyId,
    /// The recording caseworker.
    pub recorded_by_person: PersonId,
    /// When it was recorded.
    pub recorded_at: Timestamp,
    /// The consent this one replaces, if any (narrowing or widening it).
    #[serde(deserialize_with = "crate::cbor::required")]
    pub supersedes: Option<ConsentId>,
    /// The recording caseworker's credential, so holders can check the person signature.
    pub credential: Envelope,
}

impl Message for Consent {
    const KIND: MessageKind = MessageKind::Consent;
    const MAX_BODY: usize = 64 * 1024;
}

impl Consent {
    /// The scope for one holder, if it is named.
    pub fn scope_for(&self, holder: &AgencyId) -> Option<&HolderScope> {
        self.holders.iter().find(|h| &h.agency == holder)
    }

    /// Whether `agency` may receive records under this consent.
    pub fn is_grantee(&self, agency: &AgencyId) -> bool {
        self.grantees.contains(agency)
    }

    /// Every agency the consent must be delivered to: holders and grantees, each once.
    pub fn recipients(&self) -> Vec<AgencyId> {
        let mut v: Vec<AgencyId> = self.holders.iter().map(|h| h.agency.clone()).collect();
        for g in &self.grantees {
            if !v.contains(g) {
                v.push(g.clone());
            }
        }
        v
    }

    /// Checks the artefact's own consistency (not its signatures).
    pub fn validate(&self) -> Result<(), String> {
        if self.valid_until <= self.valid_from {
            return Err("valid_until must be after valid_from".into());
        }
        if self.valid_until.0 - self.valid_from.0 > u64::from(MAX_VALIDITY_DAYS) * 86_400 {
            return Err(format!(
                "a consent may be valid for at most {MAX_VALIDITY_DAYS} days"
            ));
        }
        if let (Some(a), Some(b)) = (self.records_from, self.records_until) {
            if b < a {
                return Err("records_until must not be before records_from".into());
            }
        }
        if self.holders.is_empty() || self.holders.len() > 256 {
            return Err("a consent must name 1 to 256 holders".into());
        }
        if self.grantees.is_empty() || self.grantees.len() > 256 {
            return Err("a consent must name 1 to 256 grantees".into());
        }
        let mut seen = std::collections::BTreeSet::new();
        for h in &self.holders {
            if !seen.insert(&h.agency) {
                return Err(format!("holder {} is named twice", h.agency));
            }
            if h.categories.is_empty() {
                return Err(format!("holder {} is named with no categories", h.agency));
            }
        }
        for (what, s, max) in [
            ("purpose_text", &self.purpose_text, 1024),
            ("legal_basis", &self.legal_basis, 256),
            ("jurisdiction", &self.jurisdiction, 128),
            ("collection reference", &self.collection.reference, 128),
        ] {
            if s.trim().is_empty() || s.len() > max {
                return Err(format!("{what} must be 1-{max} characters"));
            }
        }
        Ok(())
    }
}

/// Delivery of a consent to one recipient, signed by the sending node. Holders get their own
/// identifier for the person and the salt of its commitment; grantees that hold nothing get
/// neither.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ConsentGrant {
    /// The signed consent artefact.
    pub consent: Envelope,
    /// The recipient this delivery is for.
    pub recipient: AgencyId,
    /// The person's identifier at the recipient, if the recipient is a holder.
    #[serde(deserialize_with = "crate::cbor::required")]
    pub subject: Option<SubjectIdentifier>,
    /// The commitment's salt, if the recipient is a holder.
    #[serde(with = "opt_salt")]
    pub salt: Option<[u8; SALT_LEN]>,
}

impl Message for ConsentGrant {
    const KIND: MessageKind = MessageKind::ConsentGrant;
    const MAX_BODY: usize = 128 * 1024;
}

mod opt_salt {
    use serde::{Deserialize, Deserializer, Serializer};

    use crate::identifiers::SALT_LEN;

    pub fn serialize<S: Serializer>(v: &Option<[u8; SALT_LEN]>, s: S) -> Result<S::Ok, S::Error> {
        struct Salt<'a>(&'a [u8; SALT_LEN]);
        impl serde::Serialize for Salt<'_> {
            fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                crate::keys::fixed_bytes::serialize(self.0, s)
            }
        }
        match v {
            Some(b) => s.serialize_some(&Salt(b)),
            None => s.serialize_none(),
        }
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(
        d: D,
    ) -> Result<Option<[u8; SALT_LEN]>, D::Error> {
        struct Salt([u8; SALT_LEN]);
        impl<'de> Deserialize<'de> for Salt {
            fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                crate::keys::fixed_bytes::deserialize(d).map(Salt)
            }
        }
        Ok(Option::<Salt>::deserialize(d)?.map(|s| s.0))
    }
}

/// Withdrawal of a consent, signed by a caseworker of the recording agency and its node.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ConsentRevocation {
    /// The consent withdrawn.
    pub consent_id: ConsentId,
    /// Its passport id (so a recipient can check it matches).
    pub passport_id: PassportId,
    /// The agency that recorded the consent and now revokes it.
    pub revoked_by: AgencyId,
    /// The caseworker revoking.
    pub revoked_by_person: PersonId,
    /// When it was revoked.
    pub revoked_at: Timestamp,
    /// Why, in words (e.g. "withdrawn by the person").
    pub reason: String,
    /// The revoking caseworker's credential.
    pub credential: Envelope,
}

impl Message for ConsentRevocation {
    const KIND: MessageKind = MessageKind::ConsentRevoke;
    const MAX_BODY: usize = 16 * 1024;
}

/// A consent's status, kept by each node outside the signed body.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ConsentStatus {
    /// In force (subject to its validity window).
    Active,
    /// Withdrawn.
    Revoked,
    /// Replaced by a newer consent.
    Superseded,
    /// Past its `valid_until` (derived at read time from the clock, never stored).
    Expired,
}

impl ConsentStatus {
    /// The wire name.
    pub fn as_str(self) -> &'static str {
        match self {
            ConsentStatus::Active => "active",
            ConsentStatus::Revoked => "revoked",
            ConsentStatus::Superseded => "superseded",
            ConsentStatus::Expired => "expired",
        }
    }
}

impl fmt::Display for ConsentStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl std::str::FromStr for ConsentStatus {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "active" => Ok(ConsentStatus::Active),
            "revoked" => Ok(ConsentStatus::Revoked),
            "superseded" => Ok(ConsentStatus::Superseded),
            "expired" => Ok(ConsentStatus::Expired),
            other => Err(format!(
                "unknown status {other:?}; expected active, revoked, superseded or expired"
            )),
        }
    }
}

/// Why a consent artefact or revocation is not acceptable.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConsentError {
    /// Wrong kind, or the body does not decode.
    #[error("malformed: {0}")]
    Malformed(#[from] crate::envelope::OpenError),
    /// The artefact is inconsistent (dates, holders, text limits).
    #[error("invalid consent: {0}")]
    Invalid(String),
    /// The recording agency is not in the manifest.
    #[error("recording agency {0} is not a member of the federation")]
    UnknownRecorder(AgencyId),
    /// The recording node's signature is missing or does not verify.
    #[error("the recording node's signature does not verify: {0}")]
    NodeSignature(crate::envelope::VerifyError),
    /// The recording caseworker's credential does not verify.
    #[error("the caseworker's credential does not verify: {0}")]
    Credential(crate::credential::CredentialError),
    /// The credential names someone other than the recorder.
    #[error("the credential is for {credential}, but the artefact names {named}")]
    PersonMismatch {
        /// Person in the credential.
        credential: PersonId,
        /// Person named in the artefact.
        named: PersonId,
    },
    /// The caseworker's signature is missing or does not verify.
    #[error("the caseworker's signature does not verify: {0}")]
    PersonSignature(crate::envelope::VerifyError),
    /// A holder or grantee is not a member of the federation.
    #[error("{0} is not a member of the federation")]
    UnknownMember(AgencyId),
}

/// Verifies a consent envelope against the manifest: well formed, signed by a node key of the
/// recording agency and by the recording caseworker, whose credential (issued by that node,
/// caseworker role) was valid when the consent was recorded; every holder and grantee is a
/// member.
pub fn verify_consent(
    env: &Envelope,
    manifest: &crate::manifest::Manifest,
) -> Result<(Consent, crate::credential::Credential), ConsentError> {
    let consent: Consent = env.open()?;
    consent.validate().map_err(ConsentError::Invalid)?;
    let recorder = manifest
        .member(&consent.recorded_by)
        .ok_or_else(|| ConsentError::UnknownRecorder(consent.recorded_by.clone()))?;
    env.verify_by_any(crate::envelope::SignerRole::Node, &recorder.node_keys)
        .map_err(ConsentError::NodeSignature)?;
    let cred = verify_person(
        env,
        &consent.credential,
        &consent.recorded_by,
        &recorder.node_keys,
        &consent.recorded_by_person,
        consent.recorded_at,
    )?;
    for a in consent
        .holders
        .iter()
        .map(|h| &h.agency)
        .chain(consent.grantees.iter())
    {
        if manifest.member(a).is_none() {
            return Err(ConsentError::UnknownMember(a.clone()));
        }
    }
    Ok((consent, cred))
}

/// Verifies a revocation envelope: signed by a node key of the revoking agency and by a
/// caseworker of that agency whose credential was valid at the time of revocation.
pub fn verify_revocation(
    env: &Envelope,
    manifest: &crate::manifest::Manifest,
) -> Result<(ConsentRevocation, crate::credential::Credential), ConsentError> {
    let rev: ConsentRevocation = env.open()?;
    if rev.reason.len() > 1024 {
        return Err(ConsentError::Invalid(
            "reason is over 1024 characters".into(),
        ));
    }
    let agency = manifest
        .member(&rev.revoked_by)
        .ok_or_else(|| ConsentError::UnknownRecorder(rev.revoked_by.clone()))?;
    env.verify_by_any(crate::envelope::SignerRole::Node, &agency.node_keys)
        .map_err(ConsentError::NodeSignature)?;
    let cred = verify_person(
        env,
        &rev.credential,
        &rev.revoked_by,
        &agency.node_keys,
        &rev.revoked_by_person,
        rev.revoked_at,
    )?;
    Ok((rev, cred))
}

/// Verifies the caseworker half of a caseworker-and-node signed envelope.
pub fn verify_person(
    env: &Envelope,
    credential: &Envelope,
    agency: &AgencyId,
    issuer_keys: &[crate::keys::PublicKey],
    named: &PersonId,
    at: Timestamp,
) -> Result<crate::credential::Credential, ConsentError> {
    let cred = crate::credential::verify_credential(
        credential,
        agency,
        issuer_keys,
        at,
        crate::credential::StaffRole::Caseworker,
    )
    .map_err(ConsentError::Credential)?;
    if &cred.person_id != named {
        return Err(ConsentError::PersonMismatch {
            credential: cred.person_id,
            named: named.clone(),
        });
    }
    env.verify_by(crate::envelope::SignerRole::Person, &cred.public_key)
        .map_err(ConsentError::PersonSignature)?;
    Ok(cred)
}
