//! Client-side passport assembly: choose what to ask of whom, sign the query, fan it out
//! through the home node, and verify every signed response before anyone reads it
//! ([`HomeClient::passport`]), or, where the home node's verification is trusted, check only
//! its signed assembly statement ([`HomeClient::passport_by_statement`]).

use throughgate_protocol::assembly::{AssemblyStatement, Sha256Digest};
use throughgate_protocol::bundle::{
    verify_bundle_cached, BundleError, PassportBundle, VerifiedBundle, BUNDLE_FORMAT,
};
use throughgate_protocol::category::{Category, Purpose};
use throughgate_protocol::consent::Consent;
use throughgate_protocol::credential::CLOCK_SKEW_SECS;
use throughgate_protocol::envelope::{Envelope, OpenError, SignerRole, VerifyError};
use throughgate_protocol::ids::{AgencyId, ConsentId, PassportId};
use throughgate_protocol::keys::PublicKey;
use throughgate_protocol::manifest::Manifest;
use throughgate_protocol::messages::{HolderRequest, HolderResult, HolderStatus, Query};

use super::{ClientError, HomeClient};

/// Lifetime of the queries the client signs, in seconds.
pub const QUERY_LIFETIME_SECS: u64 = 60;

impl HomeClient {
    /// Assembles a passport: asks every holder `consent` covers (or, without one, every holder
    /// in the manifest, which will refuse), verifies the whole bundle against `manifest`, and
    /// returns it. `on_progress`, if given, sees each holder's status as it arrives. A bundle that fails
    /// verification is returned too, with its problems recorded per holder.
    #[allow(clippy::too_many_arguments)]
    pub async fn passport(
        &self,
        manifest_env: &Envelope,
        manifest: &Manifest,
        passport: &PassportId,
        consent: Option<&Consent>,
        explicit_consent: Option<&ConsentId>,
        purpose: Purpose,
        categories: &[Category],
        on_progress: Option<&mut (dyn FnMut(HolderResult) + Send)>,
    ) -> Result<(PassportBundle, VerifiedBundle), ClientError> {
        let query = self.passport_query(
            manifest,
            passport,
            consent,
            explicit_consent,
            purpose,
            categories,
        )?;
        let (query, results, statement) = self.assemble_signed(query, on_progress).await?;
        let mut bundle = PassportBundle {
            format: BUNDLE_FORMAT.into(),
            query,
            results,
            statement,
            manifest: manifest_env.clone(),
        };
        let named = bundle
            .unverified_statement()
            .map_err(|e| ClientError::Invalid(e.to_string()))?;
        if named.manifest_version == manifest.version {
            let verified = verify_bundle_cached(&bundle, manifest, Some(&self.sig_cache))
                .map_err(|e| ClientError::Invalid(e.to_string()))?;
            return Ok((bundle, verified));
        }
        // The federation moved on while the query was out (or this client's copy is behind):
        // the home node names the manifest it used, which must be the one it trusts now, and
        // must chain from the one this client trusts (`manifest` checks that).
        let (env, newer) = self.manifest().await?;
        if newer.version != named.manifest_version {
            return Err(ClientError::Invalid(format!(
                "the home node assembled under manifest version {}, but now trusts version {}; assemble the passport again",
                named.manifest_version, newer.version
            )));
        }
        bundle.manifest = env;
        let verified = verify_bundle_cached(&bundle, &newer, Some(&self.sig_cache))
            .map_err(|e| ClientError::Invalid(e.to_string()))?;
        Ok((bundle, verified))
    }
}

impl HomeClient {
    /// The signed query for a passport: every holder `consent` covers (or, without one, every
    /// holder in `manifest`), narrowed to `categories` when given.
    fn passport_query(
        &self,
        manifest: &Manifest,
        passport: &PassportId,
        consent: Option<&Consent>,
        explicit_consent: Option<&ConsentId>,
        purpose: Purpose,
        categories: &[Category],
    ) -> Result<Envelope, ClientError> {
        let requests = match consent {
            Some(c) => requests_under(c, categories),
            None => requests_without_consent(manifest, categories),
        };
        if requests.is_empty() {
            return Err(ClientError::Protocol(
                "nothing to ask: no holder covers the categories asked for".into(),
            ));
        }
        let consent_id = consent
            .map(|c| c.consent_id.clone())
            .or_else(|| explicit_consent.cloned());
        Ok(self.sign_query(
            passport.clone(),
            consent_id,
            purpose,
            requests,
            QUERY_LIFETIME_SECS,
        ))
    }

    /// Assembles a passport as [`HomeClient::passport`] does, but checks only the home node's
    /// signed assembly statement ([`check_statement`]), trusting the home node's verification
    /// of every holder's response: one signature check instead of one per holder. The answer
    /// arrives over the connection pinned to the home node's key, and the statement binds the
    /// exact query sent and each response's digest. `manifest_env` must be the manifest
    /// `manifest` was read from; a statement naming another manifest version is refused (assemble
    /// again once the client has the newer manifest).
    ///
    /// This is the model of a conventional requester that verifies each holder's reply once;
    /// `tg passport assemble` keeps full end-to-end verification.
    #[allow(clippy::too_many_arguments)]
    pub async fn passport_by_statement(
        &self,
        manifest_env: &Envelope,
        manifest: &Manifest,
        passport: &PassportId,
        consent: Option<&Consent>,
        explicit_consent: Option<&ConsentId>,
        purpose: Purpose,
        categories: &[Category],
    ) -> Result<(PassportBundle, AssemblyStatement), ClientError> {
        let sent = self.passport_query(
            manifest,
            passport,
            consent,
            explicit_consent,
            purpose,
            categories,
        )?;
        let (query, results, statement_env) = self.assemble_signed(sent.clone(), None).await?;
        let bundle = PassportBundle {
            format: BUNDLE_FORMAT.into(),
            query,
            results,
            statement: statement_env,
            manifest: manifest_env.clone(),
        };
        let statement = check_statement(
            &bundle,
            &sent,
            &self.credential.agency,
            &self.node_keys(),
            manifest.version,
        )
        .map_err(|e| ClientError::Invalid(e.to_string()))?;
        Ok((bundle, statement))
    }
}

/// Why a home node's assembly statement was not accepted by [`check_statement`].
#[derive(Debug, thiserror::Error)]
pub enum StatementError {
    /// The statement is not signed in role `node` by one of the home node's pinned keys.
    #[error("the assembly statement is not signed by the home node: {0}")]
    Signature(#[source] VerifyError),
    /// The statement or the query sent does not decode.
    #[error("the assembly statement or the query does not decode: {0}")]
    Decode(#[source] OpenError),
    /// The statement names another requesting agency.
    #[error("the assembly statement names requester {named}, not {ours}")]
    Requester {
        /// The agency the statement names.
        named: AgencyId,
        /// The client's own agency.
        ours: AgencyId,
    },
    /// The query the home node returned is not the one the client signed and sent.
    #[error("the home node returned another query than the one sent")]
    QueryChanged,
    /// The statement names another query than the one sent.
    #[error("the assembly statement names another query than the one sent")]
    QueryDigest,
    /// The statement does not record exactly one outcome per holder asked, in request order.
    #[error("the assembly statement's outcomes do not match the query's requests: {0}")]
    Outcomes(String),
    /// The results returned differ from the outcomes the statement signs.
    #[error("the results differ from the signed assembly statement: {0}")]
    Results(String),
    /// The statement names a manifest other than the client's.
    #[error("the assembly statement names manifest version {named}, the client trusts version {trusted} (assemble again)")]
    Manifest {
        /// The version the statement names.
        named: u64,
        /// The version the client checked against.
        trusted: u64,
    },
    /// The statement's time lies outside the query's lifetime.
    #[error(
        "the assembly statement says the assembly finished at {0}, outside the query's lifetime"
    )]
    Time(throughgate_protocol::time::Timestamp),
}

/// Checks a home node's signed assembly statement for the query `sent` (as the client signed
/// it), without verifying any holder's response: the statement is signed in role `node` by one
/// of `node_keys` (the home node's keys the client pins), names `agency` as requester, names
/// the manifest of `manifest_version` (and `bundle.manifest` by its digest), was made during
/// the query's lifetime, and binds the query's exact body; the returned query has that body; and
/// it records exactly one outcome per requested holder, in request order, each matching the
/// returned result (holder, status and response digest). Returns the statement.
pub fn check_statement(
    bundle: &PassportBundle,
    sent: &Envelope,
    agency: &AgencyId,
    node_keys: &[PublicKey],
    manifest_version: u64,
) -> Result<AssemblyStatement, StatementError> {
    bundle
        .statement
        .verify_by_any(SignerRole::Node, node_keys)
        .map_err(StatementError::Signature)?;
    let statement: AssemblyStatement = bundle.statement.open().map_err(StatementError::Decode)?;
    if &statement.requester != agency {
        return Err(StatementError::Requester {
            named: statement.requester,
            ours: agency.clone(),
        });
    }
    if bundle.query.body != sent.body {
        return Err(StatementError::QueryChanged);
    }
    if statement.query_digest != Sha256Digest::of_body(sent) {
        return Err(StatementError::QueryDigest);
    }
    if statement.manifest_version != manifest_version
        || statement.manifest_digest != Sha256Digest::of_body(&bundle.manifest)
    {
        return Err(StatementError::Manifest {
            named: statement.manifest_version,
            trusted: manifest_version,
        });
    }
    let query: Query = sent.open().map_err(StatementError::Decode)?;
    if statement.assembled_at.plus_secs(CLOCK_SKEW_SECS) < query.issued_at
        || statement.assembled_at > query.expires_at.plus_secs(CLOCK_SKEW_SECS)
    {
        return Err(StatementError::Time(statement.assembled_at));
    }
    throughgate_protocol::bundle::check_results(bundle, &query, &statement).map_err(
        |e| match e {
            BundleError::Statement(m) => StatementError::Outcomes(m),
            other => StatementError::Results(other.to_string()),
        },
    )?;
    Ok(statement)
}

/// Whether every holder answered with a response that verified.
pub fn passport_complete(v: &VerifiedBundle) -> bool {
    v.all_valid()
        && v.results
            .iter()
            .all(|r| r.result.status == HolderStatus::Answered)
}

/// The per-holder requests for a query under `consent`: every holder it names, with the
/// categories it covers there, narrowed to `only` when given.
pub fn requests_under(consent: &Consent, only: &[Category]) -> Vec<HolderRequest> {
    consent
        .holders
        .iter()
        .map(|h| HolderRequest {
            holder: h.agency.clone(),
            categories: h
                .categories
                .iter()
                .copied()
                .filter(|c| only.is_empty() || only.contains(c))
                .collect(),
        })
        .filter(|r| !r.categories.is_empty())
        .collect()
}

/// The per-holder requests when no consent is known: every holder in the manifest, for the
/// categories it holds (holders will refuse; the attempt is logged at each).
pub fn requests_without_consent(manifest: &Manifest, only: &[Category]) -> Vec<HolderRequest> {
    manifest
        .members
        .iter()
        .filter(|m| m.is_holder())
        .map(|m| HolderRequest {
            holder: m.id.clone(),
            categories: m
                .categories
                .iter()
                .copied()
                .filter(|c| only.is_empty() || only.contains(c))
                .collect(),
        })
        .filter(|r| !r.categories.is_empty())
        .collect()
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::indexing_slicing)]

    use super::*;
    use throughgate_protocol::category::Category;
    use throughgate_protocol::envelope::MessageKind;
    use throughgate_protocol::ids::{PersonId, QueryId};
    use throughgate_protocol::keys::SecretKey;
    use throughgate_protocol::time::Timestamp;

    struct Case {
        node: SecretKey,
        sent: Envelope,
        bundle: PassportBundle,
        statement: AssemblyStatement,
    }

    fn agency(s: &str) -> AgencyId {
        AgencyId::new(s).unwrap()
    }

    fn answered(holder: &str, body: &[u8]) -> HolderResult {
        HolderResult {
            agency: agency(holder),
            status: HolderStatus::Answered,
            response: Some(Envelope {
                kind: MessageKind::Response,
                body: body.to_vec(),
                sigs: vec![],
            }),
            detail: None,
            elapsed_ms: 1,
        }
    }

    /// A query to two holders as the caseworker sent it, the node's countersigned copy, both
    /// answers and the node's statement over them.
    fn case() -> Case {
        let node = SecretKey::from_seed(&[1; 32]);
        let caseworker = SecretKey::from_seed(&[2; 32]);
        let request = |h: &str| HolderRequest {
            holder: agency(h),
            categories: vec![Category::Accommodation],
        };
        let q = Query {
            query_id: QueryId::random(),
            passport_id: PassportId::random(),
            consent_id: None,
            purpose: Purpose::Resettlement,
            requests: vec![request("hmp-leeds"), request("nhs-wy")],
            requester: agency("probation-yorks"),
            caseworker: PersonId::new("cw-1").unwrap(),
            credential: Envelope {
                kind: MessageKind::Credential,
                body: vec![0xa0],
                sigs: vec![],
            },
            issued_at: Timestamp(1_000),
            expires_at: Timestamp(1_060),
            nonce: [3; 16],
        };
        let sent = Envelope::seal(&q, &[(SignerRole::Person, &caseworker)]);
        let mut returned = sent.clone();
        returned.add_signature(SignerRole::Node, &node);
        let manifest = Envelope {
            kind: MessageKind::Manifest,
            body: vec![0xa1, 0x01, 0x02],
            sigs: vec![],
        };
        let results = vec![
            answered("hmp-leeds", b"\xa0"),
            answered("nhs-wy", b"\xa1\x00\x00"),
        ];
        let statement = AssemblyStatement::new(
            agency("probation-yorks"),
            &sent,
            &results,
            4,
            &manifest,
            Timestamp(1_001),
        );
        let bundle = PassportBundle {
            format: BUNDLE_FORMAT.into(),
            query: returned,
            results,
            statement: Envelope::seal(&statement, &[(SignerRole::Node, &node)]),
            manifest,
        };
        Case {
            node,
            sent,
            bundle,
            statement,
        }
    }

    fn check(c: &Case) -> Result<AssemblyStatement, StatementError> {
        check_statement(
            &c.bundle,
            &c.sent,
            &agency("probation-yorks"),
            &[c.node.public()],
            4,
        )
    }

    /// Re-signs `c`'s statement after `edit`, as a home node that lied would.
    fn resign(c: &mut Case, edit: impl FnOnce(&mut AssemblyStatement)) {
        edit(&mut c.statement);
        c.bundle.statement = Envelope::seal(&c.statement, &[(SignerRole::Node, &c.node)]);
    }

    #[test]
    fn a_matching_statement_signed_by_the_home_node_is_accepted() {
        let c = case();
        assert_eq!(check(&c).unwrap(), c.statement);
    }

    #[test]
    fn a_statement_not_signed_by_the_pinned_node_key_fails() {
        let mut c = case();
        let other = SecretKey::from_seed(&[9; 32]);
        c.bundle.statement = Envelope::seal(&c.statement, &[(SignerRole::Node, &other)]);
        assert!(matches!(check(&c), Err(StatementError::Signature(_))));
        // Tampered bytes under the right key's signature.
        let mut c = case();
        let last = c.bundle.statement.body.len() - 1;
        c.bundle.statement.body[last] ^= 1;
        assert!(matches!(check(&c), Err(StatementError::Signature(_))));
        // Signed in another role.
        let mut c = case();
        c.bundle.statement = Envelope::seal(&c.statement, &[(SignerRole::Person, &c.node)]);
        assert!(matches!(check(&c), Err(StatementError::Signature(_))));
    }

    #[test]
    fn a_statement_for_another_query_or_requester_fails() {
        let mut c = case();
        resign(&mut c, |s| s.query_digest = Sha256Digest([0; 32]));
        assert!(matches!(check(&c), Err(StatementError::QueryDigest)));
        let mut c = case();
        resign(&mut c, |s| s.requester = agency("leeds-cc"));
        assert!(matches!(check(&c), Err(StatementError::Requester { .. })));
        // The node returned a query other than the one sent.
        let mut c = case();
        c.bundle.query.body.push(0);
        assert!(matches!(check(&c), Err(StatementError::QueryChanged)));
    }

    #[test]
    fn a_statement_that_does_not_list_one_outcome_per_holder_fails() {
        let mut c = case();
        resign(&mut c, |s| {
            s.outcomes.pop();
        });
        assert!(matches!(check(&c), Err(StatementError::Outcomes(_))));
        let mut c = case();
        resign(&mut c, |s| s.outcomes.swap(0, 1));
        assert!(matches!(check(&c), Err(StatementError::Outcomes(_))));
        let mut c = case();
        resign(&mut c, |s| {
            let extra = s.outcomes[0].clone();
            s.outcomes.push(extra);
        });
        assert!(matches!(check(&c), Err(StatementError::Outcomes(_))));
    }

    #[test]
    fn results_that_differ_from_the_signed_outcomes_fail() {
        // A response swapped after signing.
        let mut c = case();
        c.bundle.results[1] = answered("nhs-wy", b"\xa0");
        assert!(matches!(check(&c), Err(StatementError::Results(_))));
        // A result relabelled.
        let mut c = case();
        c.bundle.results[0].status = HolderStatus::Unreachable;
        assert!(matches!(check(&c), Err(StatementError::Results(_))));
        // A result dropped.
        let mut c = case();
        c.bundle.results.pop();
        assert!(matches!(check(&c), Err(StatementError::Results(_))));
    }

    #[test]
    fn a_statement_under_another_manifest_or_time_fails() {
        let mut c = case();
        resign(&mut c, |s| s.manifest_version = 5);
        assert!(matches!(check(&c), Err(StatementError::Manifest { .. })));
        let mut c = case();
        c.bundle.manifest.body.push(0);
        assert!(matches!(check(&c), Err(StatementError::Manifest { .. })));
        let mut c = case();
        resign(&mut c, |s| s.assembled_at = Timestamp(5_000));
        assert!(matches!(check(&c), Err(StatementError::Time(_))));
    }
}
