//! Staff credentials: an agency node vouches that a person (caseworker, DPO, operator) of that
//! agency holds a key, with roles and a validity window. Holders verify the credential end to
//! end, so they can name the caseworker who asked without trusting the middle.

use std::fmt;

use serde::{Deserialize, Serialize};

use crate::envelope::{Envelope, Message, MessageKind, OpenError, SignerRole, VerifyError};
use crate::ids::{AgencyId, PersonId};
use crate::keys::PublicKey;
use crate::time::Timestamp;

/// What a member of staff may do.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum StaffRole {
    /// Records consent, assembles passports.
    Caseworker,
    /// Data-protection officer: reviews logs and consents, runs subject-access reports.
    Dpo,
    /// Runs the node: imports records, manages staff and policy.
    Operator,
}

impl StaffRole {
    /// The wire name.
    pub fn as_str(self) -> &'static str {
        match self {
            StaffRole::Caseworker => "caseworker",
            StaffRole::Dpo => "dpo",
            StaffRole::Operator => "operator",
        }
    }
}

impl fmt::Display for StaffRole {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl std::str::FromStr for StaffRole {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "caseworker" => Ok(StaffRole::Caseworker),
            "dpo" => Ok(StaffRole::Dpo),
            "operator" => Ok(StaffRole::Operator),
            other => Err(format!(
                "unknown role {other:?}; expected caseworker, dpo or operator"
            )),
        }
    }
}

/// The body of a credential.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Credential {
    /// The person's staff id within the agency.
    pub person_id: PersonId,
    /// The person's name as colleagues know it (staff data; not logged).
    pub display_name: String,
    /// The issuing agency.
    pub agency: AgencyId,
    /// What the person may do.
    pub roles: Vec<StaffRole>,
    /// The person's key.
    pub public_key: PublicKey,
    /// Valid from.
    pub not_before: Timestamp,
    /// Valid until (exclusive).
    pub not_after: Timestamp,
}

impl Message for Credential {
    const KIND: MessageKind = MessageKind::Credential;
    const MAX_BODY: usize = 4096;
}

/// Why a credential is not acceptable.
#[allow(missing_docs)] // variant fields are named by the #[error] message
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CredentialError {
    /// Not a credential, or the body does not decode.
    #[error("malformed credential: {0}")]
    Malformed(#[from] OpenError),
    /// Not signed by a node key of the agency it names.
    #[error("credential is not signed by a node key of {agency}: {source}")]
    BadIssuer {
        /// The agency the credential claims.
        agency: AgencyId,
        source: VerifyError,
    },
    /// The credential's agency is not the one expected here.
    #[error("credential belongs to {got}, expected {expected}")]
    WrongAgency { expected: AgencyId, got: AgencyId },
    /// Not yet valid.
    #[error("credential of {person} is not valid until {not_before}")]
    NotYetValid {
        person: PersonId,
        not_before: Timestamp,
    },
    /// Expired.
    #[error("credential of {person} expired at {not_after}")]
    Expired {
        person: PersonId,
        not_after: Timestamp,
    },
    /// The credential does not grant the role needed.
    #[error("{person} does not hold the {role} role")]
    MissingRole { person: PersonId, role: StaffRole },
    /// The display name is empty, too long or has control characters.
    #[error("credential display name must be 1-128 printable characters")]
    BadName,
}

/// Clock skew tolerated on validity windows, in seconds.
pub const CLOCK_SKEW_SECS: u64 = 60;

/// Verifies a credential envelope: issued by one of `issuer_keys` (the node keys the manifest
/// lists for `agency`), for that agency, valid at `now`, granting `role`.
pub fn verify_credential(
    env: &Envelope,
    agency: &AgencyId,
    issuer_keys: &[PublicKey],
    now: Timestamp,
    role: StaffRole,
) -> Result<Credential, CredentialError> {
    verify_credential_cached(env, agency, issuer_keys, now, role, None)
}

/// [`verify_credential`], remembering the issuer's signature in `cache` once it verified: a
/// caseworker's credential arrives with every query they send. Every other check runs each time.
pub fn verify_credential_cached(
    env: &Envelope,
    agency: &AgencyId,
    issuer_keys: &[PublicKey],
    now: Timestamp,
    role: StaffRole,
    cache: Option<&crate::sigcache::SigCache>,
) -> Result<Credential, CredentialError> {
    let cred: Credential = env.open()?;
    if &cred.agency != agency {
        return Err(CredentialError::WrongAgency {
            expected: agency.clone(),
            got: cred.agency,
        });
    }
    env.verify_by_any_cached(SignerRole::Node, issuer_keys, cache)
        .map_err(|source| CredentialError::BadIssuer {
            agency: agency.clone(),
            source,
        })?;
    check_window(&cred, now)?;
    if !cred.roles.contains(&role) {
        return Err(CredentialError::MissingRole {
            person: cred.person_id,
            role,
        });
    }
    if cred.display_name.is_empty()
        || cred.display_name.len() > 128
        || cred.display_name.chars().any(char::is_control)
    {
        return Err(CredentialError::BadName);
    }
    Ok(cred)
}

/// Checks a credential's validity window at `now`, with [`CLOCK_SKEW_SECS`] of tolerance.
pub fn check_window(cred: &Credential, now: Timestamp) -> Result<(), CredentialError> {
    if now.plus_secs(CLOCK_SKEW_SECS) < cred.not_before {
        return Err(CredentialError::NotYetValid {
            person: cred.person_id.clone(),
            not_before: cred.not_before,
        });
    }
    if now >= cred.not_after {
        return Err(CredentialError::Expired {
            person: cred.person_id.clone(),
            not_after: cred.not_after,
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::keys::SecretKey;

    fn issue(node: &SecretKey, person: &SecretKey, roles: Vec<StaffRole>) -> Envelope {
        let c = Credential {
            person_id: PersonId::new("cw-1").unwrap(),
            display_name: "Sam Caseworker".into(),
            agency: AgencyId::new("probation-yorks").unwrap(),
            roles,
            public_key: person.public(),
            not_before: Timestamp(1000),
            not_after: Timestamp(2000),
        };
        Envelope::seal(&c, &[(SignerRole::Node, node)])
    }

    #[test]
    fn verifies_issuer_window_and_role() {
        let node = SecretKey::from_seed(&[1; 32]);
        let person = SecretKey::from_seed(&[2; 32]);
        let env = issue(&node, &person, vec![StaffRole::Caseworker]);
        let agency = AgencyId::new("probation-yorks").unwrap();
        let keys = [node.public()];
        assert!(
            verify_credential(&env, &agency, &keys, Timestamp(1500), StaffRole::Caseworker).is_ok()
        );
        assert!(matches!(
            verify_credential(&env, &agency, &keys, Timestamp(2000), StaffRole::Caseworker),
            Err(CredentialError::Expired { .. })
        ));
        assert!(matches!(
            verify_credential(&env, &agency, &keys, Timestamp(100), StaffRole::Caseworker),
            Err(CredentialError::NotYetValid { .. })
        ));
        assert!(matches!(
            verify_credential(&env, &agency, &keys, Timestamp(1500), StaffRole::Dpo),
            Err(CredentialError::MissingRole { .. })
        ));
        let other = AgencyId::new("dwp").unwrap();
        assert!(matches!(
            verify_credential(&env, &other, &keys, Timestamp(1500), StaffRole::Caseworker),
            Err(CredentialError::WrongAgency { .. })
        ));
        let forged = issue(&person, &person, vec![StaffRole::Caseworker]);
        assert!(matches!(
            verify_credential(
                &forged,
                &agency,
                &keys,
                Timestamp(1500),
                StaffRole::Caseworker
            ),
            Err(CredentialError::BadIssuer { .. })
        ));
    }
}

/// A staff credential withdrawn by its issuing agency, announced to every member so holders
/// refuse queries that carry it. Signed by the issuing node.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CredentialRevocation {
    /// The issuing agency.
    pub agency: AgencyId,
    /// The person.
    pub person_id: PersonId,
    /// The key of the withdrawn credential (a later credential with a new key is unaffected).
    pub public_key: PublicKey,
    /// When it was withdrawn.
    pub revoked_at: Timestamp,
}

impl Message for CredentialRevocation {
    const KIND: MessageKind = MessageKind::CredentialRevoke;
    const MAX_BODY: usize = 2048;
}

/// A member's signed acknowledgement that it recorded a credential revocation.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CredentialAck {
    /// The acknowledging agency.
    pub agency: AgencyId,
    /// The agency whose staff credential was revoked.
    pub issuer: AgencyId,
    /// The person.
    pub person_id: PersonId,
    /// When it was recorded.
    pub at: Timestamp,
}

impl Message for CredentialAck {
    const KIND: MessageKind = MessageKind::CredentialAck;
    const MAX_BODY: usize = 1024;
}
