//! Passport bundles and the verification of holder responses.
//!
//! A bundle is the signed query plus every holder's result, each answered result carrying the
//! holder's signed response. Anyone holding the federation manifest can verify it offline: the
//! query's caseworker and node signatures and the caseworker's credential; and for every
//! response, the holder's node signature, that it answers exactly this query (by digest), and
//! that it comes from the holder it claims.

use serde::{Deserialize, Serialize};

use crate::audit::{verify_receipt_cached, AuditEvent};
use crate::cbor::{self, DecodeError};
use crate::credential::{verify_credential_cached, Credential, StaffRole, CLOCK_SKEW_SECS};
use crate::envelope::{Envelope, SignerRole};
use crate::manifest::Manifest;
use crate::messages::{query_digest, HolderResult, HolderStatus, Outcome, Query, Response};
use crate::sigcache::SigCache;
use crate::time::Timestamp;

/// The bundle format name, written into every bundle.
pub const BUNDLE_FORMAT: &str = "throughgate-passport-bundle/1";
/// The largest bundle file accepted: 64 MiB.
pub const MAX_BUNDLE: usize = 64 * 1024 * 1024;

/// A saved passport: the signed query and every holder's result.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PassportBundle {
    /// Always [`BUNDLE_FORMAT`].
    pub format: String,
    /// The query, signed by caseworker and requesting node.
    pub query: Envelope,
    /// Every holder's result.
    pub results: Vec<HolderResult>,
    /// When the assembly finished.
    pub assembled_at: Timestamp,
    /// The manifest version the assembling node trusted.
    pub manifest_version: u64,
    /// A copy of that manifest, for convenience. Verifiers should check the bundle against a
    /// manifest they trust, not only against this copy.
    pub manifest: Option<Envelope>,
}

impl PassportBundle {
    /// Encodes the bundle as CBOR.
    pub fn to_bytes(&self) -> Vec<u8> {
        cbor::to_vec(self)
    }

    /// Decodes a bundle, within [`MAX_BUNDLE`].
    pub fn from_bytes(bytes: &[u8]) -> Result<PassportBundle, DecodeError> {
        let b: PassportBundle = cbor::from_slice("passport bundle", bytes, MAX_BUNDLE)?;
        if b.format != BUNDLE_FORMAT {
            return Err(DecodeError::Invalid {
                what: "passport bundle",
                detail: format!(
                    "unknown format {:?}",
                    b.format.chars().take(60).collect::<String>()
                ),
            });
        }
        Ok(b)
    }
}

/// Why a response or bundle fails verification.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BundleError {
    /// The query does not decode.
    #[error("query is malformed: {0}")]
    MalformedQuery(String),
    /// The requester is not in the manifest as a requester.
    #[error("requesting agency {0} is not a requester in the manifest")]
    UnknownRequester(String),
    /// The query's node signature does not verify.
    #[error("requesting node's signature on the query does not verify: {0}")]
    QueryNodeSignature(String),
    /// The caseworker's credential does not verify.
    #[error("caseworker credential does not verify: {0}")]
    Credential(String),
    /// The caseworker's signature does not verify.
    #[error("caseworker's signature on the query does not verify: {0}")]
    QueryPersonSignature(String),
    /// The response does not decode.
    #[error("response is malformed: {0}")]
    MalformedResponse(String),
    /// The responding agency is not in the manifest.
    #[error("holder {0} is not in the manifest")]
    UnknownHolder(String),
    /// The response's signature does not verify against the holder's keys.
    #[error("holder signature does not verify: {0}")]
    HolderSignature(String),
    /// The response answers a different query.
    #[error("response answers a different query")]
    WrongQuery,
    /// The response claims to come from a different holder than the one asked.
    #[error("response claims holder {claimed}, but was received as {expected}'s")]
    WrongHolder {
        /// The holder the result is filed under.
        expected: String,
        /// The holder the response names.
        claimed: String,
    },
    /// The response is internally inconsistent (records on a refusal, etc).
    #[error("response is inconsistent: {0}")]
    Inconsistent(String),
    /// The receipt does not prove that this decision was logged.
    #[error("receipt: {0}")]
    Receipt(String),
}

/// Verifies the query of a bundle: requester known, node and caseworker signatures, and the
/// credential as it stood when the query was issued.
pub fn verify_query(
    env: &Envelope,
    manifest: &Manifest,
) -> Result<(Query, Credential), BundleError> {
    verify_query_cached(env, manifest, None)
}

/// [`verify_query`], remembering the credential's issuer signature in `cache`, and looking the
/// caseworker's signature up there (a client finds its own query's signature, remembered when
/// it signed, see [`SigCache::sign`]).
pub fn verify_query_cached(
    env: &Envelope,
    manifest: &Manifest,
    cache: Option<&SigCache>,
) -> Result<(Query, Credential), BundleError> {
    let query: Query = env
        .open()
        .map_err(|e| BundleError::MalformedQuery(e.to_string()))?;
    let member = manifest
        .member(&query.requester)
        .filter(|m| m.is_requester())
        .ok_or_else(|| BundleError::UnknownRequester(query.requester.to_string()))?;
    env.verify_by_any(SignerRole::Node, &member.node_keys)
        .map_err(|e| BundleError::QueryNodeSignature(e.to_string()))?;
    let credential = verify_credential_cached(
        &query.credential,
        &query.requester,
        &member.node_keys,
        query.issued_at,
        StaffRole::Caseworker,
        cache,
    )
    .map_err(|e| BundleError::Credential(e.to_string()))?;
    if credential.person_id != query.caseworker {
        return Err(BundleError::Credential(
            "credential is for a different person".into(),
        ));
    }
    env.verify_by_cached(SignerRole::Person, &credential.public_key, cache)
        .map_err(|e| BundleError::QueryPersonSignature(e.to_string()))?;
    Ok((query, credential))
}

/// Verifies one holder's response to `query` (whose envelope is `query_env`): signed by a node
/// key of `expected_holder` in the manifest, naming this query's digest, id, passport and
/// holder, and internally consistent.
pub fn verify_response(
    env: &Envelope,
    query_env: &Envelope,
    query: &Query,
    expected_holder: &crate::ids::AgencyId,
    manifest: &Manifest,
) -> Result<Response, BundleError> {
    verify_response_cached(env, query_env, query, expected_holder, manifest, None)
}

/// [`verify_response`], remembering the receipt's checkpoint signature in `cache` (responses
/// from one commit batch share a checkpoint). The response's own signature is always verified.
pub fn verify_response_cached(
    env: &Envelope,
    query_env: &Envelope,
    query: &Query,
    expected_holder: &crate::ids::AgencyId,
    manifest: &Manifest,
    cache: Option<&SigCache>,
) -> Result<Response, BundleError> {
    let resp: Response = env
        .open()
        .map_err(|e| BundleError::MalformedResponse(e.to_string()))?;
    if &resp.holder != expected_holder {
        return Err(BundleError::WrongHolder {
            expected: expected_holder.to_string(),
            claimed: resp.holder.to_string(),
        });
    }
    let member = manifest
        .member(&resp.holder)
        .ok_or_else(|| BundleError::UnknownHolder(resp.holder.to_string()))?;
    env.verify_by_any(SignerRole::Node, &member.node_keys)
        .map_err(|e| BundleError::HolderSignature(e.to_string()))?;
    if resp.query_digest != query_digest(query_env)
        || resp.query_id != query.query_id
        || resp.passport_id != query.passport_id
    {
        return Err(BundleError::WrongQuery);
    }
    match resp.outcome {
        Outcome::Refused if resp.reason.is_none() => {
            return Err(BundleError::Inconsistent("refusal without a reason".into()))
        }
        Outcome::Refused | Outcome::NotHeld if !resp.records.is_empty() => {
            return Err(BundleError::Inconsistent(format!(
                "records on a {} response",
                resp.outcome
            )))
        }
        Outcome::Disclosed | Outcome::NotHeld if resp.reason.is_some() => {
            return Err(BundleError::Inconsistent(format!(
                "a refusal reason on a {} response",
                resp.outcome
            )))
        }
        _ => {}
    }
    // A holder may only disclose what it was asked for.
    let asked = query
        .request_for(expected_holder)
        .ok_or_else(|| BundleError::Inconsistent("the query did not address this holder".into()))?;
    if let Some(r) = resp
        .records
        .iter()
        .find(|r| !asked.categories.contains(&r.category))
    {
        return Err(BundleError::Inconsistent(format!(
            "a {} record was disclosed but not asked for",
            r.category
        )));
    }
    if resp.as_of > query.expires_at.plus_secs(CLOCK_SKEW_SECS) {
        return Err(BundleError::Inconsistent(
            "answered after the query expired".into(),
        ));
    }
    check_receipt(&resp, &member.node_keys, cache)?;
    Ok(resp)
}

/// Checks that a response's receipt proves a logged decision matching the response.
fn check_receipt(
    resp: &Response,
    keys: &[crate::keys::PublicKey],
    cache: Option<&SigCache>,
) -> Result<(), BundleError> {
    let v = verify_receipt_cached(&resp.receipt, &resp.holder, keys, cache)
        .map_err(|e| BundleError::Receipt(e.to_string()))?;
    let AuditEvent::Decision(d) = &v.entry.event else {
        return Err(BundleError::Receipt(format!(
            "the logged entry is a {}, not a decision",
            v.entry.event
        )));
    };
    let records = u32::try_from(resp.records.len()).unwrap_or(u32::MAX);
    if d.query_digest != resp.query_digest
        || d.query_id != resp.query_id
        || d.passport_id != resp.passport_id
        || d.outcome != resp.outcome
        || d.reason != resp.reason
        || d.consent_id != resp.consent_id
        || d.records != records
    {
        return Err(BundleError::Receipt(
            "the logged decision differs from the response".into(),
        ));
    }
    Ok(())
}

/// One holder's part of a verified bundle.
#[derive(Debug, Clone)]
pub struct VerifiedResult {
    /// The holder's result as saved.
    pub result: HolderResult,
    /// The verified response, when answered and valid.
    pub response: Option<Response>,
    /// Why the answered response failed verification.
    pub problem: Option<BundleError>,
}

/// A verified bundle.
#[derive(Debug, Clone)]
pub struct VerifiedBundle {
    /// The query.
    pub query: Query,
    /// The caseworker's credential.
    pub credential: Credential,
    /// Per holder.
    pub results: Vec<VerifiedResult>,
}

impl VerifiedBundle {
    /// Whether every answered response verified.
    pub fn all_valid(&self) -> bool {
        self.results.iter().all(|r| r.problem.is_none())
    }
}

/// Verifies a whole bundle against `manifest`. The query must verify; each response is verified
/// independently and its problem, if any, recorded.
pub fn verify_bundle(
    bundle: &PassportBundle,
    manifest: &Manifest,
) -> Result<VerifiedBundle, BundleError> {
    verify_bundle_cached(bundle, manifest, None)
}

/// [`verify_bundle`], remembering credential and checkpoint signatures in `cache`: a client
/// assembling many passports sees the same ones again and again.
pub fn verify_bundle_cached(
    bundle: &PassportBundle,
    manifest: &Manifest,
    cache: Option<&SigCache>,
) -> Result<VerifiedBundle, BundleError> {
    let (query, credential) = verify_query_cached(&bundle.query, manifest, cache)?;
    let results = bundle
        .results
        .iter()
        .map(|r| {
            let (response, problem) = match (&r.status, &r.response) {
                (HolderStatus::Answered, Some(env)) => {
                    match verify_response_cached(
                        env,
                        &bundle.query,
                        &query,
                        &r.agency,
                        manifest,
                        cache,
                    ) {
                        Ok(resp) => (Some(resp), None),
                        Err(e) => (None, Some(e)),
                    }
                }
                (HolderStatus::Answered, None) => (
                    None,
                    Some(BundleError::MalformedResponse(
                        "answered but no response saved".into(),
                    )),
                ),
                _ => (None, None),
            };
            VerifiedResult {
                result: r.clone(),
                response,
                problem,
            }
        })
        .collect();
    Ok(VerifiedBundle {
        query,
        credential,
        results,
    })
}
