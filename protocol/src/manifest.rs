//! The federation manifest: the one signed document that says who is in the federation.
//!
//! Signed by a threshold of governance keys, in the spirit of TUF's root role. A node accepts a
//! manifest only if it is well formed, unexpired, signed by a threshold of its own governance
//! keys, and, when the node already trusts an earlier version, newer than it and also signed by a
//! threshold of the earlier version's governance keys (so governance keys can rotate but never be
//! bypassed).

use std::collections::BTreeSet;
use std::fmt;

use serde::{Deserialize, Serialize};

use crate::category::Category;
use crate::envelope::{Envelope, Message, MessageKind, OpenError, SignerRole, VerifyError};
use crate::ids::AgencyId;
use crate::keys::PublicKey;
use crate::time::Timestamp;

/// Most members a manifest may list.
pub const MAX_MEMBERS: usize = 1024;

/// What a member does in the federation.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum MemberRole {
    /// Holds records and answers queries.
    Holder,
    /// Sends queries on behalf of its caseworkers.
    Requester,
}

/// The kind of body an agency is; policies and the `risk` rule key on it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Sector {
    /// Prisons and probation.
    Justice,
    /// NHS bodies.
    Health,
    /// Colleges and training providers.
    Education,
    /// Councils.
    LocalGovernment,
    /// DWP and other benefits bodies.
    Welfare,
}

impl Sector {
    /// The wire name.
    pub fn as_str(self) -> &'static str {
        match self {
            Sector::Justice => "justice",
            Sector::Health => "health",
            Sector::Education => "education",
            Sector::LocalGovernment => "local_government",
            Sector::Welfare => "welfare",
        }
    }
}

impl fmt::Display for Sector {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One agency in the federation.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Member {
    /// Federation-wide id, e.g. `hmp-leeds`.
    pub id: AgencyId,
    /// Display name, e.g. "HMP Leeds".
    pub name: String,
    /// The kind of body.
    pub sector: Sector,
    /// Where its node listens, `host:port`.
    pub addresses: Vec<String>,
    /// Its node keys; more than one while a key rotation is under way.
    pub node_keys: Vec<PublicKey>,
    /// Categories it holds.
    pub categories: Vec<Category>,
    /// How it identifies people (requesters send each holder only this identifier).
    pub id_scheme: crate::identifiers::IdScheme,
    /// Holder, requester or both.
    pub roles: Vec<MemberRole>,
    /// Node keys it no longer uses, each with the last instant its signatures are accepted for.
    /// Only saved documents (passport bundles) are checked against them: a signature made at
    /// or before `retired_at` still verifies; live traffic uses `node_keys` alone.
    /// Absent in manifests that predate key history, which is read as none.
    #[serde(default)]
    pub retired_keys: Vec<RetiredKey>,
}

/// A node key a member has retired, kept in the manifest so documents it signed while it was
/// current still verify.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct RetiredKey {
    /// The retired key.
    pub key: PublicKey,
    /// When it was retired: signatures made after this instant are not accepted.
    pub retired_at: Timestamp,
}

/// Most retired keys one member may list.
pub const MAX_RETIRED_KEYS: usize = 16;

/// Where a key stands for a member at an instant, by the manifest's key history.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyStanding {
    /// One of the member's current node keys.
    Current,
    /// Retired at or after the instant asked about: signatures made then are valid.
    RetiredLater(Timestamp),
    /// Retired before the instant asked about: not valid then.
    RetiredBefore(Timestamp),
    /// Never listed for this member.
    Unknown,
}

impl Member {
    /// Whether the member holds records.
    pub fn is_holder(&self) -> bool {
        self.roles.contains(&MemberRole::Holder)
    }

    /// Whether the member may send queries.
    pub fn is_requester(&self) -> bool {
        self.roles.contains(&MemberRole::Requester)
    }

    /// The keys whose signatures made at `at` are valid: the current node keys and those
    /// retired at or after `at`.
    pub fn keys_valid_at(&self, at: Timestamp) -> Vec<PublicKey> {
        self.node_keys
            .iter()
            .copied()
            .chain(
                self.retired_keys
                    .iter()
                    .filter(|r| r.retired_at >= at)
                    .map(|r| r.key),
            )
            .collect()
    }

    /// Where `key` stands for this member at `at`.
    pub fn key_standing(&self, key: &PublicKey, at: Timestamp) -> KeyStanding {
        if self.node_keys.contains(key) {
            return KeyStanding::Current;
        }
        match self.retired_keys.iter().find(|r| &r.key == key) {
            Some(r) if r.retired_at >= at => KeyStanding::RetiredLater(r.retired_at),
            Some(r) => KeyStanding::RetiredBefore(r.retired_at),
            None => KeyStanding::Unknown,
        }
    }
}

/// Who may sign the next manifest.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Governance {
    /// The governance keys.
    pub keys: Vec<PublicKey>,
    /// How many distinct governance keys must sign.
    pub threshold: u32,
}

/// The manifest body.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Manifest {
    /// The federation's name.
    pub federation: String,
    /// Monotonic version; a node never goes back to a lower one.
    pub version: u64,
    /// When it was drafted.
    pub issued_at: Timestamp,
    /// After this instant nodes refuse it.
    pub expires_at: Timestamp,
    /// The members.
    pub members: Vec<Member>,
    /// Governance keys and threshold.
    pub governance: Governance,
    /// How many distinct other members must have cosigned a checkpoint of a holder's log for
    /// a response's evidence to count as witnessed (0: witnessing is not required). At most the
    /// number of members less one (a log never witnesses itself).
    pub witness_threshold: u32,
}

/// The default witness threshold for `members` members: a majority of the other members (so
/// two disjoint groups of witnesses can never both make a quorum), 0 for a lone member.
pub fn default_witness_threshold(members: usize) -> u32 {
    let others = members.saturating_sub(1);
    if others == 0 {
        0
    } else {
        u32::try_from(others / 2 + 1).unwrap_or(u32::MAX)
    }
}

impl Message for Manifest {
    const KIND: MessageKind = MessageKind::Manifest;
    const MAX_BODY: usize = 1024 * 1024;
}

/// Why a manifest is refused.
#[allow(missing_docs)] // variant fields are named by the #[error] message
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ManifestError {
    /// Not a manifest, or it does not decode.
    #[error("malformed manifest: {0}")]
    Malformed(#[from] OpenError),
    /// Structurally invalid (duplicate ids, no keys, bad threshold...).
    #[error("invalid manifest: {0}")]
    Invalid(String),
    /// Past its expiry.
    #[error("manifest version {version} expired at {expires_at}; ask governance for a new one")]
    Expired { version: u64, expires_at: Timestamp },
    /// Not signed by a threshold of its own governance keys.
    #[error("manifest version {version} is under-signed by its own governance keys: {source}")]
    UnderSigned { version: u64, source: VerifyError },
    /// Not signed by a threshold of the previous version's governance keys.
    #[error("manifest version {version} is not signed by a threshold of version {previous}'s governance keys: {source}")]
    NotChained {
        version: u64,
        /// The version trusted so far.
        previous: u64,
        source: VerifyError,
    },
    /// Older than, or the same version as but different from, the one trusted.
    #[error("manifest version {offered} is a rollback: version {current} is already trusted")]
    Rollback { offered: u64, current: u64 },
    /// A different federation.
    #[error("manifest is for federation {offered:?}, not {current:?}")]
    WrongFederation { offered: String, current: String },
}

impl Manifest {
    /// The member with this id.
    pub fn member(&self, id: &AgencyId) -> Option<&Member> {
        self.members.iter().find(|m| &m.id == id)
    }

    /// The member one of whose node keys is `key`.
    pub fn member_by_key(&self, key: &PublicKey) -> Option<&Member> {
        self.members.iter().find(|m| m.node_keys.contains(key))
    }

    /// Checks structure: names, unique ids and keys, sane threshold, size limits.
    pub fn validate(&self) -> Result<(), ManifestError> {
        let bad = |m: String| Err(ManifestError::Invalid(m));
        if self.federation.is_empty() || self.federation.len() > 128 {
            return bad("federation name must be 1-128 characters".into());
        }
        if self.members.len() > MAX_MEMBERS {
            return bad(format!(
                "{} members, over the limit of {MAX_MEMBERS}",
                self.members.len()
            ));
        }
        let mut ids = BTreeSet::new();
        let mut keys = BTreeSet::new();
        for m in &self.members {
            if !ids.insert(&m.id) {
                return bad(format!("member {} is listed twice", m.id));
            }
            if m.name.is_empty() || m.name.len() > 128 || m.name.chars().any(char::is_control) {
                return bad(format!(
                    "member {} has an empty, over-long or unprintable name",
                    m.id
                ));
            }
            if m.node_keys.is_empty() || m.node_keys.len() > 4 {
                return bad(format!("member {} must list 1 to 4 node keys", m.id));
            }
            if m.retired_keys.len() > MAX_RETIRED_KEYS {
                return bad(format!(
                    "member {} lists {} retired keys, over the limit of {MAX_RETIRED_KEYS}",
                    m.id,
                    m.retired_keys.len()
                ));
            }
            if let Some(r) = m
                .retired_keys
                .iter()
                .find(|r| r.retired_at > self.issued_at)
            {
                return bad(format!(
                    "member {}'s key {} is retired at {}, after the manifest was issued ({})",
                    m.id,
                    r.key.fingerprint(),
                    r.retired_at,
                    self.issued_at
                ));
            }
            for k in m
                .node_keys
                .iter()
                .chain(m.retired_keys.iter().map(|r| &r.key))
            {
                if !keys.insert(*k) {
                    return bad(format!(
                        "node key {} is listed more than once",
                        k.fingerprint()
                    ));
                }
            }
            if m.addresses.is_empty()
                || m.addresses.len() > 8
                || m.addresses.iter().any(|a| a.is_empty() || a.len() > 255)
            {
                return bad(format!("member {} must list 1 to 8 addresses", m.id));
            }
            if m.roles.is_empty() {
                return bad(format!("member {} has no roles", m.id));
            }
        }
        let g = &self.governance;
        let distinct: BTreeSet<_> = g.keys.iter().collect();
        if distinct.len() != g.keys.len() || g.keys.is_empty() || g.keys.len() > 16 {
            return bad("governance must list 1 to 16 distinct keys".into());
        }
        if g.threshold == 0 || g.threshold as usize > g.keys.len() {
            return bad(format!(
                "governance threshold {} must be between 1 and the number of keys ({})",
                g.threshold,
                g.keys.len()
            ));
        }
        if self.expires_at <= self.issued_at {
            return bad("expires_at must be after issued_at".into());
        }
        if self.witness_threshold as usize > self.members.len().saturating_sub(1) {
            return bad(format!(
                "witness threshold {} is more than the other members a log can have ({})",
                self.witness_threshold,
                self.members.len().saturating_sub(1)
            ));
        }
        Ok(())
    }
}

/// Verifies a manifest envelope at `now`. With `trusted` (the version the node already holds),
/// also enforces rollback protection and chained governance signatures. Offering the very
/// version already trusted is accepted only if it is the same document.
pub fn verify_manifest(
    env: &Envelope,
    trusted: Option<&Manifest>,
    now: Timestamp,
) -> Result<Manifest, ManifestError> {
    let m: Manifest = env.open()?;
    m.validate()?;
    if now >= m.expires_at {
        return Err(ManifestError::Expired {
            version: m.version,
            expires_at: m.expires_at,
        });
    }
    env.verify_threshold(
        SignerRole::Governance,
        &m.governance.keys,
        m.governance.threshold as usize,
    )
    .map_err(|source| ManifestError::UnderSigned {
        version: m.version,
        source,
    })?;
    if let Some(prev) = trusted {
        if prev.federation != m.federation {
            return Err(ManifestError::WrongFederation {
                offered: m.federation,
                current: prev.federation.clone(),
            });
        }
        if m.version < prev.version || (m.version == prev.version && &m != prev) {
            return Err(ManifestError::Rollback {
                offered: m.version,
                current: prev.version,
            });
        }
        if m.version > prev.version {
            env.verify_threshold(
                SignerRole::Governance,
                &prev.governance.keys,
                prev.governance.threshold as usize,
            )
            .map_err(|source| ManifestError::NotChained {
                version: m.version,
                previous: prev.version,
                source,
            })?;
        }
    }
    Ok(m)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::keys::SecretKey;

    fn key(n: u8) -> SecretKey {
        SecretKey::from_seed(&[n; 32])
    }

    fn manifest(version: u64, gov: &[&SecretKey], threshold: u32) -> Manifest {
        Manifest {
            federation: "demo".into(),
            version,
            issued_at: Timestamp(100),
            expires_at: Timestamp(10_000),
            members: vec![Member {
                id: AgencyId::new("hmp-leeds").unwrap(),
                name: "HMP Leeds".into(),
                sector: Sector::Justice,
                addresses: vec!["127.0.0.1:4000".into()],
                node_keys: vec![key(50).public()],
                categories: vec![Category::FinanceAndId],
                id_scheme: crate::identifiers::IdScheme::NomsNumber,
                roles: vec![MemberRole::Holder, MemberRole::Requester],
                retired_keys: vec![],
            }],
            governance: Governance {
                keys: gov.iter().map(|k| k.public()).collect(),
                threshold,
            },
            witness_threshold: 0,
        }
    }

    fn sign(m: &Manifest, keys: &[&SecretKey]) -> Envelope {
        let signers: Vec<_> = keys.iter().map(|k| (SignerRole::Governance, *k)).collect();
        Envelope::seal(m, &signers)
    }

    #[test]
    fn threshold_expiry_and_rollback() {
        let (a, b, c) = (key(1), key(2), key(3));
        let v1 = manifest(1, &[&a, &b, &c], 2);
        let env1 = sign(&v1, &[&a, &b]);
        assert_eq!(verify_manifest(&env1, None, Timestamp(200)).unwrap(), v1);
        assert!(matches!(
            verify_manifest(&sign(&v1, &[&a]), None, Timestamp(200)),
            Err(ManifestError::UnderSigned { .. })
        ));
        assert!(matches!(
            verify_manifest(&env1, None, Timestamp(10_000)),
            Err(ManifestError::Expired { .. })
        ));
        let v2 = manifest(2, &[&a, &b, &c], 2);
        let env2 = sign(&v2, &[&b, &c]);
        assert!(verify_manifest(&env2, Some(&v1), Timestamp(200)).is_ok());
        assert!(matches!(
            verify_manifest(&env1, Some(&v2), Timestamp(200)),
            Err(ManifestError::Rollback {
                offered: 1,
                current: 2
            })
        ));
        // Same version, same document: accepted (idempotent).
        assert!(verify_manifest(&env1, Some(&v1), Timestamp(200)).is_ok());
    }

    #[test]
    fn governance_rotation_must_be_chained() {
        let (a, b, x, y) = (key(1), key(2), key(8), key(9));
        let v1 = manifest(1, &[&a, &b], 2);
        // v2 hands governance to x and y; it must be signed by a and b as well.
        let v2 = manifest(2, &[&x, &y], 2);
        let only_new = sign(&v2, &[&x, &y]);
        assert!(matches!(
            verify_manifest(&only_new, Some(&v1), Timestamp(200)),
            Err(ManifestError::NotChained { .. })
        ));
        let both = sign(&v2, &[&x, &y, &a, &b]);
        assert!(verify_manifest(&both, Some(&v1), Timestamp(200)).is_ok());
    }

    #[test]
    fn structure_is_checked() {
        let a = key(1);
        let mut m = manifest(1, &[&a], 1);
        m.members.push(m.members[0].clone());
        assert!(matches!(
            verify_manifest(&sign(&m, &[&a]), None, Timestamp(200)),
            Err(ManifestError::Invalid(_))
        ));
        let mut m = manifest(1, &[&a], 2);
        m.governance.threshold = 2;
        assert!(matches!(
            verify_manifest(&sign(&m, &[&a]), None, Timestamp(200)),
            Err(ManifestError::Invalid(_))
        ));
    }
}
