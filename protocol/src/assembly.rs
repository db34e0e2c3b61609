//! The assembly statement: what the requester's home node signs about one passport assembly.
//!
//! A passport bundle's `results` list is assembled by the home node, not signed by any holder,
//! so on its own it could be edited (a result dropped, duplicated, reordered, or relabelled)
//! without breaking a signature. The home node therefore signs, under its own message kind
//! `assembly` (and so in its own signature domain), the digest of the query it sent, exactly one
//! outcome per holder the query addressed (with the digest of that holder's signed response
//! where one arrived), the manifest it trusted, and when it finished. A verifier checks the
//! bundle's list against this statement.

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::envelope::{Envelope, Message, MessageKind};
use crate::ids::AgencyId;
use crate::keys::fixed_bytes;
use crate::messages::{HolderResult, HolderStatus};
use crate::time::Timestamp;

/// A SHA-256 digest, a CBOR byte string of 32 bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Sha256Digest(#[serde(with = "fixed_bytes")] pub [u8; 32]);

impl Sha256Digest {
    /// The digest of an envelope's body bytes, as received (never re-encoded).
    pub fn of_body(env: &Envelope) -> Sha256Digest {
        Sha256Digest(Sha256::digest(&env.body).into())
    }

    /// Lowercase hex.
    pub fn to_hex(&self) -> String {
        hex::encode(self.0)
    }
}

/// One holder's outcome, as the home node recorded it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AssemblyOutcome {
    /// The holder asked.
    pub holder: AgencyId,
    /// How it went. A refusal is an `answered` outcome whose response refuses.
    pub status: HolderStatus,
    /// SHA-256 of the body of the holder's response envelope, when a response arrived
    /// (`answered` and `invalid`); `None` otherwise.
    #[serde(deserialize_with = "crate::cbor::required")]
    pub response_digest: Option<Sha256Digest>,
}

/// The home node's signed account of one assembly (message kind `assembly`, signed in role
/// `node` by the requesting agency's node key).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AssemblyStatement {
    /// The requesting agency (whose node signs).
    pub requester: AgencyId,
    /// SHA-256 of the body of the query as sent (caseworker and node signatures).
    pub query_digest: Sha256Digest,
    /// Exactly one outcome per holder the query addressed, in the query's request order.
    pub outcomes: Vec<AssemblyOutcome>,
    /// The version of the manifest the node trusted during the assembly.
    pub manifest_version: u64,
    /// SHA-256 of that manifest envelope's body.
    pub manifest_digest: Sha256Digest,
    /// When the assembly finished, by the node's clock.
    pub assembled_at: Timestamp,
}

impl Message for AssemblyStatement {
    const KIND: MessageKind = MessageKind::Assembly;
    const MAX_BODY: usize = 256 * 1024;
}

impl AssemblyOutcome {
    /// The outcome recording `result`.
    pub fn of(result: &HolderResult) -> AssemblyOutcome {
        AssemblyOutcome {
            holder: result.agency.clone(),
            status: result.status,
            response_digest: result.response.as_ref().map(Sha256Digest::of_body),
        }
    }

    /// Whether `result` is what this outcome records: same holder, same status, and the same
    /// response (or none on both sides).
    pub fn matches(&self, result: &HolderResult) -> bool {
        self.holder == result.agency
            && self.status == result.status
            && self.response_digest == result.response.as_ref().map(Sha256Digest::of_body)
    }
}

impl AssemblyStatement {
    /// The statement for an assembly of `query_env` that produced `results` under the manifest
    /// envelope `manifest_env` (of version `manifest_version`), finished at `assembled_at`.
    pub fn new(
        requester: AgencyId,
        query_env: &Envelope,
        results: &[HolderResult],
        manifest_version: u64,
        manifest_env: &Envelope,
        assembled_at: Timestamp,
    ) -> AssemblyStatement {
        AssemblyStatement {
            requester,
            query_digest: Sha256Digest::of_body(query_env),
            outcomes: results.iter().map(AssemblyOutcome::of).collect(),
            manifest_version,
            manifest_digest: Sha256Digest::of_body(manifest_env),
            assembled_at,
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;
    use crate::envelope::SignerRole;
    use crate::keys::SecretKey;

    fn result(holder: &str, status: HolderStatus, body: Option<&[u8]>) -> HolderResult {
        HolderResult {
            agency: AgencyId::new(holder).unwrap(),
            status,
            response: body.map(|b| Envelope {
                kind: MessageKind::Response,
                body: b.to_vec(),
                sigs: vec![],
            }),
            detail: None,
            elapsed_ms: 1,
        }
    }

    #[test]
    fn an_outcome_matches_only_its_own_result() {
        let r = result("nhs-wy", HolderStatus::Answered, Some(b"\xa0"));
        let o = AssemblyOutcome::of(&r);
        assert!(o.matches(&r));
        let mut relabelled = r.clone();
        relabelled.status = HolderStatus::Unreachable;
        assert!(!o.matches(&relabelled));
        let mut stripped = r.clone();
        stripped.response = None;
        assert!(!o.matches(&stripped));
        let mut swapped = r.clone();
        swapped.response = result("nhs-wy", HolderStatus::Answered, Some(b"\xa1\x00\x00")).response;
        assert!(!o.matches(&swapped));
        let mut renamed = r;
        renamed.agency = AgencyId::new("hmp-leeds").unwrap();
        assert!(!o.matches(&renamed));
    }

    #[test]
    fn the_statement_signs_in_its_own_domain() {
        let key = SecretKey::from_seed(&[7; 32]);
        let manifest = Envelope {
            kind: MessageKind::Manifest,
            body: vec![0xa0],
            sigs: vec![],
        };
        let s = AssemblyStatement::new(
            AgencyId::new("council-leeds").unwrap(),
            &manifest,
            &[],
            1,
            &manifest,
            Timestamp(5),
        );
        let env = Envelope::seal(&s, &[(SignerRole::Node, &key)]);
        assert_eq!(env.kind, MessageKind::Assembly);
        env.verify_by(SignerRole::Node, &key.public()).unwrap();
        // The same body and signature presented as another kind does not verify.
        let mut other = env.clone();
        other.kind = MessageKind::ClientResponse;
        assert!(other.verify_by(SignerRole::Node, &key.public()).is_err());
        assert_eq!(env.open::<AssemblyStatement>().unwrap(), s);
    }
}
