//! Client-side passport assembly: choose what to ask of whom, sign the query, fan it out
//! through the home node, and verify every signed response before anyone reads it.

use throughgate_protocol::bundle::{
    verify_bundle_cached, PassportBundle, VerifiedBundle, BUNDLE_FORMAT,
};
use throughgate_protocol::category::{Category, Purpose};
use throughgate_protocol::consent::Consent;
use throughgate_protocol::envelope::Envelope;
use throughgate_protocol::ids::{ConsentId, PassportId};
use throughgate_protocol::manifest::Manifest;
use throughgate_protocol::messages::{HolderRequest, HolderResult, HolderStatus};

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
        let query = self.sign_query(
            passport.clone(),
            consent_id,
            purpose,
            requests,
            QUERY_LIFETIME_SECS,
        );
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
