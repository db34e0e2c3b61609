//! The pure checks a holder runs on an incoming query before looking at consent: the requester
//! is a member allowed to query, both signatures verify over the exact bytes received, the
//! caseworker's credential was issued by the requester's node and is valid, and the query is
//! fresh. Replay and revocation checks need state and live in the node.

use crate::credential::{
    verify_credential_cached, Credential, CredentialError, StaffRole, CLOCK_SKEW_SECS,
};
use crate::envelope::{Envelope, SignerRole};
use crate::manifest::Manifest;
use crate::messages::{Query, RefusalReason};
use crate::sigcache::SigCache;
use crate::time::Timestamp;

/// Longest lifetime (expiry minus issue time) a holder accepts, in seconds.
pub const MAX_QUERY_LIFETIME_SECS: u64 = 300;

/// Most holders one query may address.
pub const MAX_REQUESTS: usize = 1024;

/// A query that passed the stateless checks.
#[derive(Debug, Clone)]
pub struct CheckedQuery {
    /// The decoded query.
    pub query: Query,
    /// The caseworker's verified credential.
    pub credential: Credential,
}

/// The outcome of the stateless checks.
#[derive(Debug, Clone)]
pub enum QueryVerdict {
    /// All checks passed.
    Accepted(Box<CheckedQuery>),
    /// Decoded, but refused: answer with a signed refusal and log it.
    Refused(Box<Query>, RefusalReason),
    /// Too malformed to answer at all: answer with a protocol error.
    Malformed(String),
}

/// Runs the stateless checks on a query envelope received at `now`.
pub fn check_query(env: &Envelope, manifest: &Manifest, now: Timestamp) -> QueryVerdict {
    check_query_cached(env, manifest, now, None)
}

/// [`check_query`], remembering the credential's issuer signature in `cache` (every check still
/// runs; only a signature already verified is not verified again).
pub fn check_query_cached(
    env: &Envelope,
    manifest: &Manifest,
    now: Timestamp,
    cache: Option<&SigCache>,
) -> QueryVerdict {
    let query: Query = match env.open() {
        Ok(q) => q,
        Err(e) => return QueryVerdict::Malformed(e.to_string()),
    };
    if let Err(detail) = distinct_holders(&query) {
        return QueryVerdict::Malformed(detail);
    }
    match check_decoded(env, &query, manifest, now, cache) {
        Ok(credential) => QueryVerdict::Accepted(Box::new(CheckedQuery { query, credential })),
        Err(reason) => QueryVerdict::Refused(Box::new(query), reason),
    }
}

fn check_decoded(
    env: &Envelope,
    query: &Query,
    manifest: &Manifest,
    now: Timestamp,
    cache: Option<&SigCache>,
) -> Result<Credential, RefusalReason> {
    let member = manifest
        .member(&query.requester)
        .filter(|m| m.is_requester())
        .ok_or(RefusalReason::RequesterNotAuthorised)?;
    env.verify_by_any(SignerRole::Node, &member.node_keys)
        .map_err(|_| RefusalReason::RequesterSignatureInvalid)?;
    let credential = verify_credential_cached(
        &query.credential,
        &query.requester,
        &member.node_keys,
        now,
        StaffRole::Caseworker,
        cache,
    )
    .map_err(credential_reason)?;
    if credential.person_id != query.caseworker {
        return Err(RefusalReason::CredentialInvalid);
    }
    env.verify_by(SignerRole::Person, &credential.public_key)
        .map_err(|_| RefusalReason::CaseworkerSignatureInvalid)?;
    check_freshness(query, now)?;
    Ok(credential)
}

/// Checks the shape of a query's requests before sending it: 1 to [`MAX_REQUESTS`] of them,
/// each holder named once (see [`distinct_holders`]).
pub fn check_requests(query: &Query) -> Result<(), String> {
    if query.requests.is_empty() || query.requests.len() > MAX_REQUESTS {
        return Err(format!("a query must address 1 to {MAX_REQUESTS} holders"));
    }
    distinct_holders(query)
}

/// Checks that a query names each holder at most once: a query naming a holder twice would make
/// it answer (and log) the same query again, once per stream.
pub fn distinct_holders(query: &Query) -> Result<(), String> {
    let mut seen = std::collections::BTreeSet::new();
    for r in &query.requests {
        if !seen.insert(&r.holder) {
            return Err(format!(
                "the query names holder {} more than once; ask each holder once",
                r.holder
            ));
        }
    }
    Ok(())
}

/// Maps a credential failure to the refusal reason holders send.
pub fn credential_reason(e: CredentialError) -> RefusalReason {
    match e {
        CredentialError::Expired { .. } | CredentialError::NotYetValid { .. } => {
            RefusalReason::CredentialExpired
        }
        CredentialError::MissingRole { .. } => RefusalReason::CredentialRole,
        _ => RefusalReason::CredentialInvalid,
    }
}

/// Checks the query's time window: issued no later than `now` plus skew, not expired, and a
/// lifetime no longer than [`MAX_QUERY_LIFETIME_SECS`].
pub fn check_freshness(query: &Query, now: Timestamp) -> Result<(), RefusalReason> {
    if query.expires_at <= query.issued_at
        || query.expires_at.0 - query.issued_at.0 > MAX_QUERY_LIFETIME_SECS
    {
        return Err(RefusalReason::QueryLifetimeTooLong);
    }
    if query.issued_at > now.plus_secs(CLOCK_SKEW_SECS) {
        return Err(RefusalReason::QueryNotYetValid);
    }
    if now >= query.expires_at {
        return Err(RefusalReason::QueryExpired);
    }
    Ok(())
}
