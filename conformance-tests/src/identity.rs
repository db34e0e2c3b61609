//! The suite's own identity: the identity file it reads, and the member agencies it acts as.
//!
//! The suite is a member agency of the target's federation. It holds that agency's node key
//! (listed in the target's manifest with the requester role), issues its own caseworkers'
//! credentials with it, records its own consents and signs its own queries, exactly as a real
//! member node and its caseworkers would.
//!
//! # Identity file (TOML)
//!
//! ```toml
//! # The member agency the suite acts as, as the target's manifest lists it (role requester).
//! agency = "tg-conformance"
//! # Its node private key: Ed25519, PKCS#8 PEM, mode 0600. Relative to this file's folder.
//! key_file = "suite.key"
//! # Its sector as the manifest lists it (justice, health, education, local_government,
//! # welfare). Decides what the target's minimisation may release, e.g. `risk`.
//! sector = "welfare"
//! # The purpose the positive cases query for (default resettlement).
//! purpose = "resettlement"
//! # The categories the target holds (as its manifest entry lists them).
//! target_categories = ["supervision", "accommodation", "risk"]
//! # A person the target holds records about, by the target's own identifier.
//! subject = { scheme = "crn", value = "X123456" }
//! # Optional: an identifier of the same scheme the target does not know (a random valid one
//! # is drawn when absent).
//! unknown_subject = { scheme = "crn", value = "Z999999" }
//! # Optional: a second person the target holds records about. Lets the suite check that a
//! # consent cannot redirect a passport from one person to another (`subject_mismatch`).
//! other_subject = { scheme = "crn", value = "X654321" }
//!
//! # Optional: a second member agency the suite controls, ideally of the other sector
//! # (justice or not). Makes the cross-agency cases precise and lets the `risk` cases run when
//! # the first identity is a justice agency.
//! [second]
//! agency = "tg-conformance-justice"
//! key_file = "suite-justice.key"
//! sector = "justice"
//! ```
//!
//! A top-level `governance_key = "governance.key"` (before any table) names a federation
//! governance key (Ed25519, PKCS#8 PEM, mode 0600). Only a test federation's key belongs in a
//! suite's identity: with it the `manifest.*` cases that need a governance-signed manifest
//! (newer, older, expired, without the target) run; without it they are `unsupported`.

use std::path::{Path, PathBuf};

use rand::RngCore;
use serde::Deserialize;
use throughgate_protocol::category::{Category, Purpose};
use throughgate_protocol::credential::{Credential, StaffRole};
use throughgate_protocol::envelope::{Envelope, SignerRole};
use throughgate_protocol::identifiers::{nhs_check_digit, IdScheme, SubjectIdentifier};
use throughgate_protocol::ids::{AgencyId, PersonId};
use throughgate_protocol::keys::SecretKey;
use throughgate_protocol::manifest::Sector;
use throughgate_protocol::time::Timestamp;

use crate::now;

/// A problem with the identity file or its keys.
#[allow(missing_docs)] // variant fields are named by the #[error] message
#[derive(Debug, thiserror::Error)]
pub enum IdentityError {
    /// The file could not be read.
    #[error("identity file {path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    /// The TOML does not parse, or a value is invalid.
    #[error("identity file {path}: {detail}")]
    Parse { path: PathBuf, detail: String },
    /// A key file could not be read.
    #[error("identity file {path}: {source}")]
    Key {
        path: PathBuf,
        source: crate::keyfile::KeyFileError,
    },
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawSubject {
    scheme: IdScheme,
    value: String,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawMember {
    agency: AgencyId,
    key_file: PathBuf,
    sector: Sector,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawIdentity {
    agency: AgencyId,
    key_file: PathBuf,
    sector: Sector,
    #[serde(default)]
    purpose: Option<Purpose>,
    target_categories: Vec<Category>,
    subject: RawSubject,
    #[serde(default)]
    unknown_subject: Option<RawSubject>,
    #[serde(default)]
    other_subject: Option<RawSubject>,
    #[serde(default)]
    second: Option<RawMember>,
    #[serde(default)]
    governance_key: Option<PathBuf>,
}

/// One member agency the suite acts as: its id, node key and sector.
#[derive(Debug, Clone)]
pub struct MemberIdentity {
    /// The agency id.
    pub agency: AgencyId,
    /// Its node key (listed in the target's manifest).
    pub key: SecretKey,
    /// Its sector as the manifest lists it.
    pub sector: Sector,
}

/// Everything the identity file says, with keys loaded.
#[derive(Debug, Clone)]
pub struct Identity {
    /// The first member identity (used by almost every case).
    pub primary: MemberIdentity,
    /// An optional second member identity.
    pub second: Option<MemberIdentity>,
    /// The purpose positive cases query for.
    pub purpose: Purpose,
    /// The categories the target holds.
    pub target_categories: Vec<Category>,
    /// A person the target holds records about.
    pub subject: SubjectIdentifier,
    /// An identifier (same scheme) the target does not know.
    pub unknown_subject: SubjectIdentifier,
    /// Optionally, a second person the target holds records about.
    pub other_subject: Option<SubjectIdentifier>,
    /// An optional governance key of the target's federation (test federations only): lets the
    /// manifest cases sign manifests.
    pub governance: Option<SecretKey>,
}

fn subject(raw: RawSubject, path: &Path) -> Result<SubjectIdentifier, IdentityError> {
    SubjectIdentifier::parse(raw.scheme, &raw.value).map_err(|e| IdentityError::Parse {
        path: path.to_path_buf(),
        detail: format!("subject: {e}"),
    })
}

fn key(path: &Path, file: &Path) -> Result<SecretKey, IdentityError> {
    let resolved = if file.is_absolute() {
        file.to_path_buf()
    } else {
        path.parent().unwrap_or(Path::new(".")).join(file)
    };
    crate::keyfile::read_secret_key(&resolved).map_err(|source| IdentityError::Key {
        path: path.to_path_buf(),
        source,
    })
}

impl Identity {
    /// Reads an identity file and the keys it names.
    pub fn load(path: &Path) -> Result<Identity, IdentityError> {
        let text = std::fs::read_to_string(path).map_err(|source| IdentityError::Io {
            path: path.to_path_buf(),
            source,
        })?;
        Identity::parse(&text, path)
    }

    /// Parses identity-file text; key paths resolve against `path`'s folder.
    pub fn parse(text: &str, path: &Path) -> Result<Identity, IdentityError> {
        let raw: RawIdentity = toml::from_str(text).map_err(|e| IdentityError::Parse {
            path: path.to_path_buf(),
            detail: e.to_string(),
        })?;
        if raw.target_categories.is_empty() {
            return Err(IdentityError::Parse {
                path: path.to_path_buf(),
                detail: "target_categories must name at least one category the target holds".into(),
            });
        }
        let primary = MemberIdentity {
            key: key(path, &raw.key_file)?,
            agency: raw.agency,
            sector: raw.sector,
        };
        let second = match raw.second {
            Some(s) => Some(MemberIdentity {
                key: key(path, &s.key_file)?,
                agency: s.agency,
                sector: s.sector,
            }),
            None => None,
        };
        if second.as_ref().is_some_and(|s| s.agency == primary.agency) {
            return Err(IdentityError::Parse {
                path: path.to_path_buf(),
                detail: "second.agency must differ from agency".into(),
            });
        }
        let subject_id = subject(raw.subject, path)?;
        let unknown = match raw.unknown_subject {
            Some(u) => subject(u, path)?,
            None => random_identifier(subject_id.scheme),
        };
        if unknown.scheme != subject_id.scheme || unknown == subject_id {
            return Err(IdentityError::Parse {
                path: path.to_path_buf(),
                detail: "unknown_subject must be another identifier of the subject's scheme".into(),
            });
        }
        let other = match raw.other_subject {
            Some(o) => {
                let o = subject(o, path)?;
                if o.scheme != subject_id.scheme || o == subject_id || o == unknown {
                    return Err(IdentityError::Parse {
                        path: path.to_path_buf(),
                        detail: "other_subject must be a third identifier of the subject's scheme"
                            .into(),
                    });
                }
                Some(o)
            }
            None => None,
        };
        let governance = match &raw.governance_key {
            Some(f) => Some(key(path, f)?),
            None => None,
        };
        Ok(Identity {
            primary,
            second,
            governance,
            purpose: raw.purpose.unwrap_or(Purpose::Resettlement),
            target_categories: raw.target_categories,
            subject: subject_id,
            unknown_subject: unknown,
            other_subject: other,
        })
    }
}

fn digits(n: usize) -> String {
    let mut rng = rand::rngs::OsRng;
    (0..n)
        .map(|_| char::from(b'0' + u8::try_from(rng.next_u32() % 10).unwrap_or(0)))
        .collect()
}

/// A random, valid identifier of `scheme` (vanishingly unlikely to be one the target holds).
pub fn random_identifier(scheme: IdScheme) -> SubjectIdentifier {
    let mut last = String::new();
    // Draw until the scheme's rules (check digits, excluded prefixes) accept the value; almost
    // every draw is accepted.
    for _ in 0..1000 {
        last = candidate(scheme);
        if let Ok(id) = SubjectIdentifier::parse(scheme, &last) {
            return id;
        }
    }
    SubjectIdentifier {
        scheme,
        value: last,
    }
}

fn candidate(scheme: IdScheme) -> String {
    let mut rng = rand::rngs::OsRng;
    let letter = |r: &mut rand::rngs::OsRng, from: &[u8]| {
        let i = usize::try_from(r.next_u32()).unwrap_or(0) % from.len().max(1);
        char::from(from.get(i).copied().unwrap_or(b'A'))
    };
    const UPPER: &[u8] = b"ABCEGHJKLMNPRSTWXYZ";
    match scheme {
        IdScheme::NomsNumber => format!(
            "{}{}{}{}",
            letter(&mut rng, UPPER),
            digits(4),
            letter(&mut rng, UPPER),
            letter(&mut rng, UPPER)
        ),
        IdScheme::Crn => format!("{}{}", letter(&mut rng, UPPER), digits(6)),
        IdScheme::NhsNumber => {
            let d = digits(9);
            let mut nine = [0u8; 9];
            for (slot, c) in nine.iter_mut().zip(d.bytes()) {
                *slot = c - b'0';
            }
            match nhs_check_digit(&nine) {
                Some(check) => format!("{d}{check}"),
                None => d,
            }
        }
        IdScheme::NiNumber => format!(
            "{}{}{}{}",
            letter(&mut rng, b"ABCEGHJKLMNPRSTWY"),
            letter(&mut rng, b"ABCEGHJKLMNPRSTWXYZ"),
            digits(6),
            letter(&mut rng, b"ABCD")
        ),
        IdScheme::LearnerNumber => digits(10),
        IdScheme::CouncilRef => format!("TGC-{}", digits(8)),
    }
}

/// A caseworker of one of the suite's agencies: key and credential.
#[derive(Debug, Clone)]
pub struct Caseworker {
    /// The person's id.
    pub person: PersonId,
    /// Their key.
    pub key: SecretKey,
    /// The credential, signed by the agency's node key.
    pub credential: Envelope,
    /// The credential's body.
    pub body: Credential,
}

/// A member agency the suite acts as, with a current caseworker.
#[derive(Debug, Clone)]
pub struct Actor {
    /// The agency.
    pub member: MemberIdentity,
    /// A current caseworker of it.
    pub cw: Caseworker,
}

impl Actor {
    /// The actor for `member`, issuing a fresh caseworker credential valid for a day.
    pub fn new(member: MemberIdentity) -> Result<Actor, String> {
        let t = now();
        let person = PersonId::new("conformance-cw").map_err(|e| e.to_string())?;
        let cw = issue(
            &member,
            &person,
            vec![StaffRole::Caseworker],
            t.minus_secs(60),
            t.plus_secs(86_400),
            &member.key,
        );
        Ok(Actor { member, cw })
    }

    /// The agency id.
    pub fn agency(&self) -> &AgencyId {
        &self.member.agency
    }

    /// The node key.
    pub fn node_key(&self) -> &SecretKey {
        &self.member.key
    }
}

/// Issues a credential for a fresh person key, signed (role node) by `issuer`, claiming
/// `member`'s agency.
pub fn issue(
    member: &MemberIdentity,
    person: &PersonId,
    roles: Vec<StaffRole>,
    not_before: Timestamp,
    not_after: Timestamp,
    issuer: &SecretKey,
) -> Caseworker {
    let key = SecretKey::generate();
    let person = person.clone();
    let body = Credential {
        person_id: person.clone(),
        display_name: "Conformance Suite Caseworker".into(),
        agency: member.agency.clone(),
        roles,
        public_key: key.public(),
        not_before,
        not_after,
    };
    let credential = Envelope::seal(&body, &[(SignerRole::Node, issuer)]);
    Caseworker {
        person,
        key,
        credential,
        body,
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn random_identifiers_are_valid() {
        for scheme in IdScheme::ALL {
            for _ in 0..500 {
                let id = random_identifier(scheme);
                assert!(id.validate().is_ok(), "{scheme}: {}", id.value);
            }
        }
    }

    #[test]
    fn parses_an_identity_file() {
        let dir = tempfile::tempdir().unwrap();
        let k = SecretKey::generate();
        throughgate_node::keyfile::write_secret_key(&dir.path().join("s.key"), &k).unwrap();
        let text = r#"
agency = "tg-conformance"
key_file = "s.key"
sector = "welfare"
target_categories = ["health"]
subject = { scheme = "nhs_number", value = "943 476 5919" }
"#;
        let id = Identity::parse(text, &dir.path().join("id.toml")).unwrap();
        assert_eq!(id.primary.key.public(), k.public());
        assert_eq!(id.subject.value, "9434765919");
        assert_eq!(id.unknown_subject.scheme, IdScheme::NhsNumber);
        assert!(id.governance.is_none());
        assert!(Identity::parse(&format!("{text}\nbogus = 1\n"), &dir.path().join("x")).is_err());
        let g = SecretKey::generate();
        throughgate_node::keyfile::write_secret_key(&dir.path().join("g.key"), &g).unwrap();
        let with_gov = format!("governance_key = \"g.key\"\n{text}");
        let id = Identity::parse(&with_gov, &dir.path().join("id.toml")).unwrap();
        assert_eq!(id.governance.map(|k| k.public()), Some(g.public()));
    }
}
