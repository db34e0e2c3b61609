//! Passport bundles and the verification of holder responses.
//!
//! A bundle is the signed query, every holder's result (each answered result carrying the
//! holder's signed response), the home node's signed assembly statement and the manifest that
//! statement names. Anyone holding the federation manifest can verify it offline: the query's
//! caseworker and node signatures and the caseworker's credential; the statement's signature,
//! and that the results list is exactly the one it signed; that the manifest was valid when
//! the statement says the assembly finished; and for every response, the holder's node
//! signature, that it answers exactly this query (by digest) under the query's consent, that it
//! comes from the holder it claims, and that the holder logged a decision on this very query.
//!
//! Every node signature is checked against the keys the verifier's manifest gives the signing
//! agency at the instant the signed document names (the query's `issued_at`, the statement's
//! `assembled_at`, a response's `as_of`): its current keys and those retired at or after it
//! (the manifest's key history), so a passport saved before a key rotation keeps verifying.

use serde::{Deserialize, Serialize};

use crate::assembly::{AssemblyStatement, Sha256Digest};
use crate::audit::{verify_receipt_signed_within, AuditEvent};
use crate::cbor::{self, DecodeError};
use crate::checkpoint::SignedCheckpoint;
use crate::credential::{
    verify_credential_cached, Credential, CredentialError, StaffRole, CLOCK_SKEW_SECS,
};
use crate::envelope::{Envelope, SignerRole};
use crate::keys::PublicKey;
use crate::manifest::{verify_manifest, KeyStanding, Manifest, Member};
use crate::merkle::{verify_consistency, Hash};
use crate::messages::{query_digest, HolderResult, HolderStatus, Outcome, Query, Response};
use crate::sigcache::SigCache;
use crate::time::Timestamp;

/// The bundle format name, written into every bundle.
pub const BUNDLE_FORMAT: &str = "throughgate-passport-bundle/2";
/// The largest bundle file accepted: 64 MiB.
pub const MAX_BUNDLE: usize = 64 * 1024 * 1024;

/// A saved passport: the signed query, every holder's result, the home node's signed statement
/// of the assembly and the manifest it names.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PassportBundle {
    /// Always [`BUNDLE_FORMAT`].
    pub format: String,
    /// The query, signed by caseworker and requesting node.
    pub query: Envelope,
    /// Every holder's result, in the query's request order.
    pub results: Vec<HolderResult>,
    /// The home node's signed [`AssemblyStatement`] (kind `assembly`).
    pub statement: Envelope,
    /// The manifest envelope the statement names (by version and digest).
    pub manifest: Envelope,
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

    /// The statement's claims, **unverified**: for choosing the time at which to check a
    /// manifest before [`verify_bundle`] checks the statement's signature.
    pub fn unverified_statement(&self) -> Result<AssemblyStatement, BundleError> {
        self.statement
            .open()
            .map_err(|e| BundleError::Statement(format!("does not decode: {e}")))
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
    /// The response names a consent other than the query's, or discloses under none.
    #[error("the response names consent {found}, but the query was made under {expected}")]
    ConsentMismatch {
        /// The query's consent id (or "none").
        expected: String,
        /// The response's consent id (or "none").
        found: String,
    },
    /// The logged decision names another requester, caseworker or purpose than the query.
    #[error("the holder's logged decision names another {0} than the query")]
    DecisionMismatch(&'static str),
    /// The response's witnessed checkpoint is malformed, not the holder's, carries a bad
    /// cosignature by a witness, or is not consistent with the receipt's checkpoint.
    #[error("witnessed checkpoint: {0}")]
    Witness(String),
    /// The assembly statement does not decode, is not signed by the requesting node, or names
    /// another query.
    #[error("assembly statement: {0}")]
    Statement(String),
    /// The results list differs from the one the statement signs (a result dropped, added,
    /// duplicated, reordered or relabelled).
    #[error("the results differ from the signed assembly statement: {0}")]
    ResultsMismatch(String),
    /// The bundle's manifest is not the one the statement names, or was not valid when the
    /// assembly finished.
    #[error("manifest: {0}")]
    Manifest(String),
}

/// A node signature in a verified bundle by a key its agency has retired since: valid, because
/// the key was current at the instant the signed document names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RetiredSignature {
    /// The agency whose key signed.
    pub agency: crate::ids::AgencyId,
    /// What it signed: `query`, `credential`, `assembly statement` or `response`.
    pub what: &'static str,
    /// The retired key.
    pub key: PublicKey,
    /// When it was retired.
    pub retired_at: Timestamp,
}

impl std::fmt::Display for RetiredSignature {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{}'s {} is signed by a key retired on {} ({}), valid when it was signed",
            self.agency,
            self.what,
            self.retired_at,
            self.key.fingerprint()
        )
    }
}

/// Why no key of `member` valid at `at` signed `env` in role node, by the key history: a key
/// retired before `at`, a key never listed, or `fallback`.
fn node_signer_problem(
    env: &Envelope,
    member: &Member,
    at: Timestamp,
    fallback: &crate::envelope::VerifyError,
) -> String {
    let signers: Vec<&PublicKey> = env.signers(SignerRole::Node).collect();
    for k in &signers {
        if let KeyStanding::RetiredBefore(t) = member.key_standing(k, at) {
            return format!(
                "signed by {}'s key {}, which was retired on {t}, before the signed time {at}",
                member.id,
                k.fingerprint()
            );
        }
    }
    if let Some(k) = signers.first() {
        if member.key_standing(k, at) == KeyStanding::Unknown {
            return format!(
                "signed by key {}, which the manifest never listed for {}",
                k.fingerprint(),
                member.id
            );
        }
    }
    fallback.to_string()
}

/// Verifies `env`'s node signature by a key of `member` valid at `at`. Returns the retired key
/// that signed, if it was one.
fn verify_node_at(
    env: &Envelope,
    member: &Member,
    at: Timestamp,
    what: &'static str,
    cache: Option<&SigCache>,
) -> Result<Option<RetiredSignature>, String> {
    match env.verify_by_any_cached(SignerRole::Node, &member.keys_valid_at(at), cache) {
        Ok(k) => Ok(retired_note(member, &k, at, what)),
        Err(e) => Err(node_signer_problem(env, member, at, &e)),
    }
}

fn retired_note(
    member: &Member,
    key: &PublicKey,
    at: Timestamp,
    what: &'static str,
) -> Option<RetiredSignature> {
    match member.key_standing(key, at) {
        KeyStanding::RetiredLater(retired_at) => Some(RetiredSignature {
            agency: member.id.clone(),
            what,
            key: *key,
            retired_at,
        }),
        _ => None,
    }
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
    let (query, credential, _) = verify_query_at(env, manifest, cache)?;
    Ok((query, credential))
}

/// [`verify_query_cached`], also returning the signatures by keys retired since.
fn verify_query_at(
    env: &Envelope,
    manifest: &Manifest,
    cache: Option<&SigCache>,
) -> Result<(Query, Credential, Vec<RetiredSignature>), BundleError> {
    let query: Query = env
        .open()
        .map_err(|e| BundleError::MalformedQuery(e.to_string()))?;
    let member = manifest
        .member(&query.requester)
        .filter(|m| m.is_requester())
        .ok_or_else(|| BundleError::UnknownRequester(query.requester.to_string()))?;
    let at = query.issued_at;
    let mut retired = Vec::new();
    retired.extend(
        verify_node_at(env, member, at, "query", None).map_err(BundleError::QueryNodeSignature)?,
    );
    let credential = verify_credential_cached(
        &query.credential,
        &query.requester,
        &member.keys_valid_at(at),
        at,
        StaffRole::Caseworker,
        cache,
    )
    .map_err(|e| match e {
        CredentialError::BadIssuer { agency, source } => BundleError::Credential(format!(
            "credential is not signed by a node key of {agency}: {}",
            node_signer_problem(&query.credential, member, at, &source)
        )),
        e => BundleError::Credential(e.to_string()),
    })?;
    retired.extend(
        query
            .credential
            .signers(SignerRole::Node)
            .find_map(|k| retired_note(member, k, at, "credential")),
    );
    if credential.person_id != query.caseworker {
        return Err(BundleError::Credential(
            "credential is for a different person".into(),
        ));
    }
    env.verify_by_cached(SignerRole::Person, &credential.public_key, cache)
        .map_err(|e| BundleError::QueryPersonSignature(e.to_string()))?;
    Ok((query, credential, retired))
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

/// [`verify_response`], remembering the witnessed checkpoint's signatures in `cache` (they return
/// on every response until the holder's next cosigned checkpoint). The response's own signature
/// is always verified.
pub fn verify_response_cached(
    env: &Envelope,
    query_env: &Envelope,
    query: &Query,
    expected_holder: &crate::ids::AgencyId,
    manifest: &Manifest,
    cache: Option<&SigCache>,
) -> Result<Response, BundleError> {
    verify_response_at(env, query_env, query, expected_holder, manifest, cache)
        .map(|(resp, _, _)| resp)
}

/// [`verify_response_cached`], also returning what the response shows of the witnessing of
/// the holder's log (section 14.3 step 5 of the specification).
pub fn verify_response_witnessed(
    env: &Envelope,
    query_env: &Envelope,
    query: &Query,
    expected_holder: &crate::ids::AgencyId,
    manifest: &Manifest,
    cache: Option<&SigCache>,
) -> Result<(Response, WitnessVerdict), BundleError> {
    verify_response_at(env, query_env, query, expected_holder, manifest, cache)
        .map(|(resp, witness, _)| (resp, witness))
}

/// [`verify_response_witnessed`], also returning the retired key that signed, if one did.
fn verify_response_at(
    env: &Envelope,
    query_env: &Envelope,
    query: &Query,
    expected_holder: &crate::ids::AgencyId,
    manifest: &Manifest,
    cache: Option<&SigCache>,
) -> Result<(Response, WitnessVerdict, Option<RetiredSignature>), BundleError> {
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
    let retired = verify_node_at(env, member, resp.as_of, "response", None)
        .map_err(BundleError::HolderSignature)?;
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
    match resp.records_read_at {
        Some(_) if resp.outcome != Outcome::Disclosed => {
            return Err(BundleError::Inconsistent(format!(
                "a records-read time on a {} response",
                resp.outcome
            )))
        }
        Some(t) if t > resp.as_of => {
            return Err(BundleError::Inconsistent(
                "records read after the decision".into(),
            ))
        }
        _ => {}
    }
    if let Some(e) = resp.records.iter().find_map(|r| r.validate().err()) {
        return Err(BundleError::Inconsistent(format!(
            "a disclosed record is malformed: {e}"
        )));
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
    // The instant the holder's key is judged at may not precede the query it answers.
    if resp.as_of.plus_secs(CLOCK_SKEW_SECS) < query.issued_at {
        return Err(BundleError::Inconsistent(
            "answered before the query was issued".into(),
        ));
    }
    // A disclosure must name the query's consent; a refusal names it or none.
    let consent_ok = match (&resp.outcome, &resp.consent_id, &query.consent_id) {
        (Outcome::Disclosed, Some(r), Some(q)) => r == q,
        (Outcome::Disclosed, _, _) => false,
        (_, None, _) => true,
        (_, Some(r), q) => Some(r) == q.as_ref(),
    };
    if !consent_ok {
        let name = |c: Option<&crate::ids::ConsentId>| {
            c.map_or_else(|| "none".to_owned(), ToString::to_string)
        };
        return Err(BundleError::ConsentMismatch {
            expected: name(query.consent_id.as_ref()),
            found: name(resp.consent_id.as_ref()),
        });
    }
    let receipt_checkpoint = check_receipt(&resp, query)?;
    let verdict = check_witnessed(&resp, &receipt_checkpoint, manifest, cache)?;
    Ok((resp, verdict, retired))
}

/// Checks that a response's receipt proves a logged decision matching the response. The
/// response's signature, verified before this, covers the receipt's checkpoint (SPEC 8.6
/// step 8), so the checkpoint's own signature is not verified again.
fn check_receipt(resp: &Response, query: &Query) -> Result<SignedCheckpoint, BundleError> {
    let v = verify_receipt_signed_within(&resp.receipt, &resp.holder)
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
        || d.source.as_ref().map(|s| s.read_at) != resp.records_read_at
    {
        return Err(BundleError::Receipt(
            "the logged decision differs from the response".into(),
        ));
    }
    if d.requester != query.requester {
        return Err(BundleError::DecisionMismatch("requester"));
    }
    if d.caseworker != query.caseworker {
        return Err(BundleError::DecisionMismatch("caseworker"));
    }
    if d.purpose != query.purpose {
        return Err(BundleError::DecisionMismatch("purpose"));
    }
    Ok(v.checkpoint)
}

/// What a response shows of the witnessing of its holder's log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WitnessVerdict {
    /// The manifest asks for no witnessing (`witness_threshold` 0) and the response carries
    /// no cosigned checkpoint.
    NotRequired,
    /// A checkpoint consistent with the receipt's carries valid cosignatures by at least the
    /// manifest's threshold of distinct witnesses.
    Witnessed {
        /// The cosigned checkpoint's size.
        size: u64,
        /// The witnesses whose cosignatures verified, in manifest order.
        witnesses: Vec<crate::ids::AgencyId>,
        /// The manifest's threshold.
        threshold: u32,
    },
    /// Fewer valid cosignatures by listed witnesses than the threshold (a young log, or
    /// witnesses not reached yet): not evidence of tampering, but not witnessed either.
    NotYetWitnessed {
        /// The cosigned checkpoint's size, when the response carries one.
        size: Option<u64>,
        /// The witnesses whose cosignatures verified.
        witnesses: Vec<crate::ids::AgencyId>,
        /// The manifest's threshold.
        threshold: u32,
    },
}

impl WitnessVerdict {
    /// The wire-style name: `witnessed`, `not_yet_witnessed` or `not_required`.
    pub fn name(&self) -> &'static str {
        match self {
            WitnessVerdict::NotRequired => "not_required",
            WitnessVerdict::Witnessed { .. } => "witnessed",
            WitnessVerdict::NotYetWitnessed { .. } => "not_yet_witnessed",
        }
    }

    /// Whether a quorum of witnesses cosigned a checkpoint consistent with the receipt's.
    pub fn is_witnessed(&self) -> bool {
        matches!(self, WitnessVerdict::Witnessed { .. })
    }
}

/// The witness name of `agency`'s node: `throughgate/<agency>/witness`.
pub fn witness_name(agency: &crate::ids::AgencyId) -> String {
    format!("{}/{agency}/witness", crate::audit::ORIGIN_HOST)
}

/// Verifies `proof` links the checkpoints `a` and `b` of one log, in whichever order their
/// sizes come (RFC 6962 consistency from the smaller to the larger; equal sizes need equal
/// roots and an empty proof).
pub fn verify_link(
    a: (u64, &Hash),
    b: (u64, &Hash),
    proof: &[crate::audit::ProofHash],
) -> Result<(), crate::merkle::MerkleError> {
    let ((s1, r1), (s2, r2)) = if a.0 <= b.0 { (a, b) } else { (b, a) };
    verify_consistency(s1, s2, proof, r1, r2)
}

/// Counts the listed witnesses of `holder`'s log that validly cosigned `signed`: every other
/// member of `manifest`, under its witness name, with any of its node keys. Each counts once;
/// lines by anyone else are ignored; a line by a listed witness that fails is an error.
/// Verified cosignatures are remembered in `cache`, if given.
pub fn count_witnesses(
    signed: &SignedCheckpoint,
    holder: &crate::ids::AgencyId,
    manifest: &Manifest,
    cache: Option<&crate::sigcache::SigCache>,
) -> Result<Vec<crate::ids::AgencyId>, crate::witness::WitnessError> {
    let mut out = Vec::new();
    for m in manifest.members.iter().filter(|m| &m.id != holder) {
        let name = witness_name(&m.id);
        let mut counted = false;
        for key in &m.node_keys {
            match crate::witness::verify_cosigned_cached(signed, &name, key, cache) {
                Ok(_) => counted = true,
                Err(crate::witness::WitnessError::MissingCosignature { .. }) => {}
                Err(e) => return Err(e),
            }
        }
        if counted {
            out.push(m.id.clone());
        }
    }
    Ok(out)
}

/// The C2SP verifier keys ("vkeys") that check `signed`, a checkpoint of `agency`'s log, as
/// `manifest` publishes them: the log key whose note signature verifies, and for each other
/// member whose cosignature verifies, its witness key (type 0x04). What an outsider needs to
/// check an exported note with standard signed-note tooling.
pub fn checkpoint_vkeys(
    signed: &SignedCheckpoint,
    agency: &crate::ids::AgencyId,
    manifest: &Manifest,
) -> (
    Option<crate::note::VerifierKey>,
    Vec<(crate::ids::AgencyId, crate::note::VerifierKey)>,
) {
    use crate::note::VerifierKey;
    let origin = crate::audit::origin(agency);
    let log = manifest.member(agency).and_then(|m| {
        m.node_keys
            .iter()
            .find(|k| signed.verify(&origin, k).is_ok())
            .and_then(|k| VerifierKey::ed25519(&origin, *k).ok())
    });
    let witnesses = manifest
        .members
        .iter()
        .filter(|m| &m.id != agency)
        .filter_map(|m| {
            let name = witness_name(&m.id);
            m.node_keys
                .iter()
                .find(|k| crate::witness::verify_cosigned(signed, &name, k).is_ok())
                .and_then(|k| VerifierKey::cosignature_v1(&name, *k).ok())
                .map(|v| (m.id.clone(), v))
        })
        .collect();
    (log, witnesses)
}

/// Checks a response's witnessed checkpoint: the holder's own log, signed by it, linked to the
/// receipt's checkpoint by its consistency proof, every cosignature line by a listed witness
/// valid; then counts the witnesses against the manifest's threshold.
fn check_witnessed(
    resp: &Response,
    receipt: &SignedCheckpoint,
    manifest: &Manifest,
    cache: Option<&SigCache>,
) -> Result<WitnessVerdict, BundleError> {
    let threshold = manifest.witness_threshold;
    let Some(w) = &resp.witnessed else {
        return Ok(if threshold == 0 {
            WitnessVerdict::NotRequired
        } else {
            WitnessVerdict::NotYetWitnessed {
                size: None,
                witnesses: Vec::new(),
                threshold,
            }
        });
    };
    let bad = |m: String| BundleError::Witness(m);
    if w.consistency.len() > crate::audit::MAX_PROOF_LEN {
        return Err(bad(format!(
            "the consistency proof has {} hashes, over the limit of {}",
            w.consistency.len(),
            crate::audit::MAX_PROOF_LEN
        )));
    }
    let signed =
        SignedCheckpoint::parse(w.checkpoint.as_bytes()).map_err(|e| bad(e.to_string()))?;
    let origin = crate::audit::origin(&resp.holder);
    if signed.checkpoint().origin != origin {
        return Err(bad(format!(
            "it is of log {:?}, not the holder's",
            signed
                .checkpoint()
                .origin
                .chars()
                .take(100)
                .collect::<String>()
        )));
    }
    let keys = manifest
        .member(&resp.holder)
        .map(|m| m.node_keys.as_slice())
        .unwrap_or_default();
    if !keys
        .iter()
        .any(|k| signed.verify_cached(&origin, k, cache).is_ok())
    {
        return Err(bad("it is not signed by a node key of the holder".into()));
    }
    let (c, r) = (signed.checkpoint(), receipt.checkpoint());
    if c.size == 0 {
        return Err(bad("it is of the empty log".into()));
    }
    verify_link(
        (c.size, &c.root_hash),
        (r.size, &r.root_hash),
        &w.consistency,
    )
    .map_err(|e| {
        bad(format!(
            "size {} is not proven consistent with the receipt's size {}: {e}",
            c.size, r.size
        ))
    })?;
    let witnesses =
        count_witnesses(&signed, &resp.holder, manifest, cache).map_err(|e| bad(e.to_string()))?;
    Ok(if threshold > 0 && witnesses.len() >= threshold as usize {
        WitnessVerdict::Witnessed {
            size: c.size,
            witnesses,
            threshold,
        }
    } else if threshold == 0 && witnesses.is_empty() {
        WitnessVerdict::NotRequired
    } else if threshold == 0 {
        WitnessVerdict::Witnessed {
            size: c.size,
            witnesses,
            threshold,
        }
    } else {
        WitnessVerdict::NotYetWitnessed {
            size: Some(c.size),
            witnesses,
            threshold,
        }
    })
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
    /// What the verified response shows of the witnessing of the holder's log.
    pub witness: Option<WitnessVerdict>,
}

/// A verified bundle.
#[derive(Debug, Clone)]
pub struct VerifiedBundle {
    /// The query.
    pub query: Query,
    /// The caseworker's credential.
    pub credential: Credential,
    /// The home node's statement, its signature verified and the results checked against it.
    pub statement: AssemblyStatement,
    /// The manifest the statement names (the bundle's copy, verified as valid at the
    /// statement's `assembled_at`).
    pub manifest: Manifest,
    /// Per holder, in request order.
    pub results: Vec<VerifiedResult>,
    /// Signatures that verified by keys retired since they were made (the manifest's key
    /// history), to tell the reader.
    pub retired_signatures: Vec<RetiredSignature>,
}

impl VerifiedBundle {
    /// Whether every answered response verified.
    pub fn all_valid(&self) -> bool {
        self.results.iter().all(|r| r.problem.is_none())
    }

    /// Whether the passport is complete: every response verified and every holder answered.
    /// A bundle that verifies but is not complete is a *partial* passport.
    pub fn complete(&self) -> bool {
        self.all_valid()
            && self
                .results
                .iter()
                .all(|r| r.result.status == HolderStatus::Answered)
    }

    /// Whether every verified response shows a checkpoint witnessed by the manifest's quorum
    /// (or the manifest asks for no witnessing).
    pub fn all_witnessed(&self) -> bool {
        self.results
            .iter()
            .filter_map(|r| r.witness.as_ref())
            .all(|w| !matches!(w, WitnessVerdict::NotYetWitnessed { .. }))
    }

    /// When the assembly finished, as the home node signed it.
    pub fn assembled_at(&self) -> Timestamp {
        self.statement.assembled_at
    }
}

/// Verifies a whole bundle against `manifest`, a manifest the verifier trusts. The query, the
/// assembly statement, the results list against the statement and the manifest the statement
/// names must verify, or the whole bundle fails; each response is then verified independently
/// and its problem, if any, recorded.
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
    let (query, credential, mut retired) = verify_query_at(&bundle.query, manifest, cache)?;
    let statement = verify_statement(bundle, &query, manifest, &mut retired)?;
    let named = verify_named_manifest(bundle, &statement, manifest)?;
    check_results(bundle, &query, &statement)?;
    let results = bundle
        .results
        .iter()
        .map(|r| {
            let (response, problem, witness) = match (&r.status, &r.response) {
                (HolderStatus::Answered, Some(env)) => {
                    match verify_response_at(env, &bundle.query, &query, &r.agency, manifest, cache)
                    {
                        Ok((resp, w, note)) => {
                            retired.extend(note);
                            (Some(resp), None, Some(w))
                        }
                        Err(e) => (None, Some(e), None),
                    }
                }
                (HolderStatus::Answered, None) => (
                    None,
                    Some(BundleError::MalformedResponse(
                        "answered but no response saved".into(),
                    )),
                    None,
                ),
                _ => (None, None, None),
            };
            VerifiedResult {
                result: r.clone(),
                response,
                problem,
                witness,
            }
        })
        .collect();
    Ok(VerifiedBundle {
        query,
        credential,
        statement,
        manifest: named,
        results,
        retired_signatures: retired,
    })
}

/// The statement decodes, is signed in role `node` by a node key of the query's requester in
/// `manifest`, names that requester and the query's digest, and was made while the query was
/// out.
fn verify_statement(
    bundle: &PassportBundle,
    query: &Query,
    manifest: &Manifest,
    retired: &mut Vec<RetiredSignature>,
) -> Result<AssemblyStatement, BundleError> {
    let statement = bundle.unverified_statement()?;
    let member = manifest
        .member(&query.requester)
        .ok_or_else(|| BundleError::UnknownRequester(query.requester.to_string()))?;
    retired.extend(
        verify_node_at(
            &bundle.statement,
            member,
            statement.assembled_at,
            "assembly statement",
            None,
        )
        .map_err(|e| BundleError::Statement(format!("not signed by the requesting node: {e}")))?,
    );
    if statement.requester != query.requester {
        return Err(BundleError::Statement(format!(
            "it names requester {}, but the query is {}'s",
            statement.requester, query.requester
        )));
    }
    if statement.query_digest.0 != query_digest(&bundle.query) {
        return Err(BundleError::Statement(
            "it names another query than the bundle's".into(),
        ));
    }
    if statement.assembled_at.plus_secs(CLOCK_SKEW_SECS) < query.issued_at
        || statement.assembled_at > query.expires_at.plus_secs(CLOCK_SKEW_SECS)
    {
        return Err(BundleError::Statement(format!(
            "it says the assembly finished at {}, outside the query's lifetime ({} to {})",
            statement.assembled_at, query.issued_at, query.expires_at
        )));
    }
    Ok(statement)
}

/// The bundle's manifest is the one the statement names (version and digest), verifies as in
/// section 13 at the statement's `assembled_at` (governance threshold, not yet expired, issued
/// by then), and, when the verifier's own `trusted` manifest is that same version, is that
/// same manifest.
fn verify_named_manifest(
    bundle: &PassportBundle,
    statement: &AssemblyStatement,
    trusted: &Manifest,
) -> Result<Manifest, BundleError> {
    if Sha256Digest::of_body(&bundle.manifest) != statement.manifest_digest {
        return Err(BundleError::Manifest(
            "the bundle's manifest is not the one the assembly statement names".into(),
        ));
    }
    let at = statement.assembled_at;
    let invalid_then = |e: String| {
        BundleError::Manifest(format!("not valid when the assembly finished ({at}): {e}"))
    };
    // The verifier's own manifest has had its signatures checked already; a copy that is the
    // very same document needs only its validity at the signed time checked.
    let m = match bundle.manifest.open::<Manifest>() {
        Ok(copy) if &copy == trusted => {
            if at >= copy.expires_at {
                return Err(invalid_then(format!(
                    "manifest version {} expired at {}",
                    copy.version, copy.expires_at
                )));
            }
            copy
        }
        _ => {
            verify_manifest(&bundle.manifest, None, at).map_err(|e| invalid_then(e.to_string()))?
        }
    };
    if m.version != statement.manifest_version {
        return Err(BundleError::Manifest(format!(
            "the statement names version {}, the manifest is version {}",
            statement.manifest_version, m.version
        )));
    }
    if m.issued_at > at.plus_secs(CLOCK_SKEW_SECS) {
        return Err(BundleError::Manifest(format!(
            "version {} was issued at {}, after the assembly finished ({at})",
            m.version, m.issued_at
        )));
    }
    if trusted.version == m.version && trusted != &m {
        return Err(BundleError::Manifest(format!(
            "the bundle's manifest version {} differs from the trusted manifest of that version",
            m.version
        )));
    }
    Ok(m)
}

/// One result per request, in request order, each exactly as the statement records it.
pub fn check_results(
    bundle: &PassportBundle,
    query: &Query,
    statement: &AssemblyStatement,
) -> Result<(), BundleError> {
    let asked = query.requests.len();
    if statement.outcomes.len() != asked {
        return Err(BundleError::Statement(format!(
            "it records {} outcomes for a query to {asked} holders",
            statement.outcomes.len()
        )));
    }
    if bundle.results.len() != asked {
        return Err(BundleError::ResultsMismatch(format!(
            "{} results for a query to {asked} holders",
            bundle.results.len()
        )));
    }
    for (i, ((request, outcome), result)) in query
        .requests
        .iter()
        .zip(&statement.outcomes)
        .zip(&bundle.results)
        .enumerate()
    {
        if outcome.holder != request.holder {
            return Err(BundleError::Statement(format!(
                "outcome {} is for {}, but the query's request {} is to {}",
                i + 1,
                outcome.holder,
                i + 1,
                request.holder
            )));
        }
        if !outcome.matches(result) {
            return Err(BundleError::ResultsMismatch(format!(
                "result {} ({} {}) is not the signed outcome ({} {}{})",
                i + 1,
                result.agency,
                result.status.as_str(),
                outcome.holder,
                outcome.status.as_str(),
                if outcome.response_digest.is_some() {
                    ", with a response"
                } else {
                    ""
                }
            )));
        }
    }
    Ok(())
}
