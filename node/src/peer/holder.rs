//! The holder's side of a query: verify, check consent, minimise, sign. Default deny: every
//! path that is not a clean disclosure ends in a signed refusal with a precise reason (or a
//! protocol error when the query is too malformed to refuse).

use std::collections::BTreeSet;

use throughgate_protocol::audit::{AuditEvent, DecisionEntry, SourceAnswer};
use throughgate_protocol::category::Category;
use throughgate_protocol::checkpoint::SignedCheckpoint;
use throughgate_protocol::consent_check::{check_consent, ConsentScope};
use throughgate_protocol::envelope::Envelope;
use throughgate_protocol::ids::AgencyId;
use throughgate_protocol::ids::ConsentId;
use throughgate_protocol::messages::{
    query_digest, ErrorCode, Outcome, Query, RefusalReason, RequesterView, Response, Withheld,
    WitnessedCheckpoint,
};
use throughgate_protocol::query_check::{check_query_cached, QueryVerdict};
use throughgate_protocol::record::DisclosedRecord;
use throughgate_protocol::time::Timestamp;

use std::sync::Arc;

use throughgate_protocol::manifest::Manifest;

use crate::audit::AuditLog;
use crate::clock::Clock;
use crate::config::NodeConfig;
use crate::consent_gate::ConsentGate;
use crate::db::{Db, Linkage, StoredConsent};
use crate::keyring::NodeKey;
use crate::metrics::Metrics;
use crate::policy::Policy;
use crate::source::cache::AnswerCache;
use crate::source::RecordSource;
use crate::state::NodeState;
use crate::trust::Trust;

/// What answering a query uses of the node, and nothing else. The policy is the one in force
/// when the query arrived, read once for the whole decision.
#[derive(Clone)]
pub struct Holder<'a> {
    /// This agency.
    pub agency: &'a AgencyId,
    /// Signs the response (or the error).
    pub key: &'a NodeKey,
    /// The source timeout.
    pub config: &'a NodeConfig,
    /// Revoked credentials, seen queries, consents and their linkage, witnessing.
    pub db: &'a Db,
    /// Where the records disclosed are read.
    pub records: &'a dyn RecordSource,
    /// A live source's recent answers.
    pub source_cache: &'a AnswerCache,
    /// The manifest.
    pub trust: &'a Trust,
    /// The clock.
    pub clock: &'a Clock,
    /// The minimisation policy.
    pub policy: Arc<Policy>,
    /// Query and source metrics.
    pub metrics: &'a Metrics,
    /// Queries per caseworker.
    pub caseworker_rate: &'a crate::ratelimit::RateLimiter,
    /// Where the decision is logged.
    pub audit: &'a AuditLog,
    /// Orders the decision against consent status changes.
    pub consent_gate: &'a ConsentGate,
    /// Caseworker credentials already verified.
    pub sig_cache: &'a throughgate_protocol::sigcache::SigCache,
}

impl<'a> Holder<'a> {
    /// The parts of `state` that answering a query uses, with its current policy.
    pub fn of(state: &'a NodeState) -> Self {
        Holder {
            agency: &state.agency,
            key: &state.key,
            config: &state.config,
            db: &state.db,
            records: &*state.records,
            source_cache: &state.source_cache,
            trust: &state.trust,
            clock: &state.clock,
            policy: state.policy(),
            metrics: &state.metrics,
            caseworker_rate: &state.caseworker_rate,
            audit: &state.audit,
            consent_gate: &state.consent_gate,
            sig_cache: &state.sig_cache,
        }
    }
}

/// The decision for one query, before signing.
#[derive(Debug)]
pub(crate) struct Decision {
    outcome: Outcome,
    reason: Option<RefusalReason>,
    consent_id: Option<ConsentId>,
    records: Vec<DisclosedRecord>,
    withheld: Withheld,
    /// The live source's answer the records came from.
    source: Option<SourceAnswer>,
}

impl Decision {
    fn refuse(reason: RefusalReason, consent_id: Option<ConsentId>) -> Decision {
        Decision {
            outcome: Outcome::Refused,
            reason: Some(reason),
            consent_id,
            records: Vec::new(),
            withheld: Withheld::default(),
            source: None,
        }
    }

    /// The audit entry recording this decision (what was released, to whom, why).
    fn entry(&self, query: &Query, digest: [u8; 32]) -> DecisionEntry {
        let fields: BTreeSet<String> = self
            .records
            .iter()
            .flat_map(|r| r.fields.keys().map(move |f| format!("{}.{f}", r.kind)))
            .collect();
        DecisionEntry {
            query_id: query.query_id.clone(),
            query_digest: digest,
            passport_id: query.passport_id.clone(),
            requester: query.requester.clone(),
            caseworker: query.caseworker.clone(),
            consent_id: self.consent_id.clone(),
            purpose: query.purpose,
            outcome: self.outcome,
            reason: self.reason,
            // The categories actually released (of the records sent), not those policy and
            // consent would have allowed.
            categories: self
                .records
                .iter()
                .map(|r| r.category)
                .collect::<BTreeSet<_>>()
                .into_iter()
                .collect(),
            fields: fields.into_iter().collect(),
            records: u32::try_from(self.records.len()).unwrap_or(u32::MAX),
            withheld: self.withheld.clone(),
            source: self.source.clone(),
        }
    }
}

/// Answers a query that arrived from `peer`.
/// `intent` is the decision's announced audit entry (see [`crate::audit::AuditLog::intent`]).
pub async fn answer(
    node: &Holder<'_>,
    peer: &AgencyId,
    env: &Envelope,
    intent: crate::audit::Intent,
) -> Envelope {
    let started = std::time::Instant::now();
    let (answer, outcome) = decide_and_sign(node, peer, env, intent).await;
    node.metrics
        .query_seconds
        .observe(started.elapsed().as_secs_f64());
    node.metrics
        .queries
        .get_or_create(&crate::metrics::QueryLabels {
            outcome: outcome.into(),
            requester: peer.to_string(),
        })
        .inc();
    answer
}

async fn decide_and_sign(
    node: &Holder<'_>,
    peer: &AgencyId,
    env: &Envelope,
    intent: crate::audit::Intent,
) -> (Envelope, &'static str) {
    let Some(manifest) = node.trust.manifest() else {
        return (
            node.key.error(ErrorCode::Internal, "node has no manifest"),
            "error",
        );
    };
    let now = node.clock.now();
    // Decisions read consent status under the shared gate and queue their log entry before
    // releasing it; status changes (revocation, supersession) take the gate exclusively. So the
    // log orders every decision correctly against the status change it raced with. Records are
    // read with the gate released (a slow source must never hold it), and the consent is
    // checked again, under the gate, before the decision is queued.
    let (query, plan) = {
        let gate = node.consent_gate.decision();
        let (query, plan) = match check_query_cached(env, &manifest, now, Some(node.sig_cache)) {
            QueryVerdict::Malformed(detail) => {
                return (node.key.error(ErrorCode::Malformed, detail), "error")
            }
            QueryVerdict::Refused(query, reason) => {
                (*query, Ok(Plan::Decided(Decision::refuse(reason, None))))
            }
            QueryVerdict::Accepted(checked) => {
                let q = &checked.query;
                if !node
                    .caseworker_rate
                    .allow(&format!("{}/{}", q.requester, q.caseworker))
                {
                    node.metrics.limit("caseworker_rate");
                    let msg = "this caseworker is sending queries too fast; slow down and retry";
                    return (node.key.error(ErrorCode::RateLimited, msg), "error");
                }
                let plan = decide(
                    node,
                    peer,
                    &checked.query,
                    &checked.credential,
                    &manifest,
                    now,
                );
                (checked.query, plan)
            }
        };
        let plan = match plan {
            Ok(p) => p,
            Err(e) => return storage_failure(node, &query, &e),
        };
        match plan {
            Plan::Decided(decision) => {
                let digest = query_digest(env);
                let pending = intent.submit(
                    node.audit,
                    AuditEvent::Decision(decision.entry(&query, digest)),
                );
                drop(gate);
                return finish(node, query, decision, digest, pending, now).await;
            }
            Plan::Fetch(fetch) => (query, fetch),
        }
    };
    let fetched = fetch_records(node, &query, &plan, now).await;
    let decision = match fetched {
        Ok((records, source)) => {
            let (records, withheld) = plan.release.minimise(&records, &plan.scope);
            Decision {
                outcome: Outcome::Disclosed,
                reason: None,
                consent_id: Some(plan.consent_id.clone()),
                records,
                withheld,
                source,
            }
        }
        Err(crate::source::SourceError::Store(e)) => return storage_failure(node, &query, &e),
        Err(e) => {
            let reason = match e {
                crate::source::SourceError::Invalid(_) => RefusalReason::SourceInvalid,
                _ => RefusalReason::SourceUnavailable,
            };
            Decision::refuse(reason, Some(plan.consent_id.clone()))
        }
    };
    let digest = query_digest(env);
    let pending = {
        let _gate = node.consent_gate.decision();
        let decision = match recheck(node, &query, &plan, now) {
            Ok(None) => decision,
            Ok(Some(changed)) => changed,
            Err(e) => return storage_failure(node, &query, &e),
        };
        let pending = intent.submit(
            node.audit,
            AuditEvent::Decision(decision.entry(&query, digest)),
        );
        (pending, decision)
    };
    let (pending, decision) = pending;
    finish(node, query, decision, digest, pending, now).await
}

fn storage_failure(
    node: &Holder<'_>,
    query: &Query,
    e: &crate::store::StoreError,
) -> (Envelope, &'static str) {
    tracing::error!(error = %e, query = %query.query_id, "query failed on storage");
    (
        node.key
            .error(ErrorCode::Internal, "storage failure; retry later"),
        "error",
    )
}

/// Reads the records a planned disclosure needs from the node's record source, within the
/// source timeout and the query's own expiry, counting failures and time for live sources.
/// A live source's answer comes with its digest and time, from the source or from the cache
/// of its recent answers (when on).
async fn fetch_records(
    node: &Holder<'_>,
    query: &Query,
    plan: &Fetch,
    now: Timestamp,
) -> Result<(Records, Option<SourceAnswer>), crate::source::SourceError> {
    let wanted: BTreeSet<Category> = plan.categories.iter().copied().collect();
    if node.records.kind() == crate::config::SourceKind::Store {
        let timeout = source_deadline(node, query, now);
        let got =
            crate::source::within(timeout, node.records.fetch(&plan.subject, &wanted, timeout))
                .await?;
        return Ok((Records::new(got), None));
    }
    let answer = match node.source_cache.get(&plan.subject, &wanted, now) {
        Some(a) => a,
        None => {
            let a = read_source(node, query, &plan.subject, &wanted, now).await?;
            let a = crate::source::cache::Answer::new(a, now);
            node.source_cache.put(&plan.subject, &wanted, a.clone());
            a
        }
    };
    let source = SourceAnswer {
        digest: answer.digest,
        read_at: answer.read_at,
    };
    Ok((answer.records, Some(source)))
}

/// How long a read from the record source may take: the source timeout, within the query's
/// own expiry.
fn source_deadline(node: &Holder<'_>, query: &Query, now: Timestamp) -> std::time::Duration {
    let left = std::time::Duration::from_secs(query.expires_at.0.saturating_sub(now.0));
    node.config.records.source_timeout().min(left)
}

/// A subject's records as the source gave them, shared with the cache.
type Records = std::sync::Arc<Vec<throughgate_protocol::record::Record>>;

/// Reads a live source once, within the source timeout and the query's own expiry, counting
/// its failures and time.
async fn read_source(
    node: &Holder<'_>,
    query: &Query,
    subject: &str,
    wanted: &BTreeSet<Category>,
    now: Timestamp,
) -> Result<Vec<throughgate_protocol::record::Record>, crate::source::SourceError> {
    let timeout = source_deadline(node, query, now);
    let started = std::time::Instant::now();
    let got = crate::source::within(timeout, node.records.fetch(subject, wanted, timeout)).await;
    node.metrics
        .source_seconds
        .observe(started.elapsed().as_secs_f64());
    match &got {
        Ok(records) => {
            tracing::debug!(query = %query.query_id, records = records.len(), "record source answered");
        }
        Err(e) => {
            node.metrics
                .source_errors
                .get_or_create(&crate::metrics::KindLabel {
                    kind: e.metric().into(),
                })
                .inc();
            tracing::warn!(error = %e, query = %query.query_id, source = node.records.kind().as_str(), "record source gave no usable answer; refused, nothing disclosed");
        }
    }
    got
}

/// Checks again, under the consent gate, that the consent a planned disclosure relies on
/// still allows it; gives the decision to log instead when it no longer does.
fn recheck(
    node: &Holder<'_>,
    query: &Query,
    plan: &Fetch,
    now: Timestamp,
) -> Result<Option<Decision>, crate::store::StoreError> {
    let (consent, linkage) = (
        node.db.consent(&plan.consent_id)?,
        node.db.consent_linkage(&plan.consent_id)?,
    );
    let passport_subject = node.db.passport_subject(&query.passport_id)?;
    let facts = ConsentFacts {
        consent: consent.as_ref(),
        linkage: linkage.as_ref(),
        passport_subject: passport_subject.as_deref(),
    };
    Ok(match consent_verdict(query, node.agency, &facts, now) {
        ConsentVerdict::Decided(d) => Some(d),
        ConsentVerdict::Disclose { subject, .. } if subject == plan.subject => None,
        ConsentVerdict::Disclose { consent_id, .. } => Some(Decision::refuse(
            RefusalReason::SubjectMismatch,
            Some(consent_id),
        )),
    })
}

/// Waits for the decision's log entry to be durable, then signs the response.
async fn finish(
    node: &Holder<'_>,
    query: Query,
    decision: Decision,
    digest: [u8; 32],
    pending: crate::audit::PendingReceipt,
    now: Timestamp,
) -> (Envelope, &'static str) {
    // Log before disclose: the response is built from the durable entry's receipt.
    let receipt = match pending.wait().await {
        Ok(r) => r,
        Err(e) => {
            tracing::error!(error = %e, query = %query.query_id, "decision could not be logged; nothing disclosed");
            let msg = "the audit log is unavailable; nothing was disclosed; retry later";
            return (node.key.error(ErrorCode::Internal, msg), "error");
        }
    };
    tracing::info!(
        query = %query.query_id,
        passport = %query.passport_id,
        requester = %query.requester,
        caseworker = %query.caseworker,
        outcome = %decision.outcome,
        reason = decision.reason.map(|r| r.as_str()),
        records = decision.records.len(),
        "query answered"
    );
    let (witnessed, requester_view) = witness_evidence(node, &query.requester, &receipt);
    let response = Response {
        query_id: query.query_id.clone(),
        query_digest: digest,
        holder: node.agency.clone(),
        passport_id: query.passport_id.clone(),
        outcome: decision.outcome,
        reason: decision.reason,
        detail: decision.reason.map(|r| r.explain().to_owned()),
        consent_id: decision.consent_id,
        records: decision.records,
        withheld: decision.withheld,
        as_of: now,
        receipt,
        witnessed,
        requester_view,
        records_read_at: decision.source.map(|s| s.read_at),
    };
    let outcome = response.outcome.as_str();
    (node.key.seal(&response), outcome)
}

/// What deciding under the consent gate leaves to do.
#[derive(Debug)]
enum Plan {
    /// Decided without records (a refusal, or not held).
    Decided(Decision),
    /// The consent and policy allow a disclosure: read the subject's records, then minimise.
    Fetch(Fetch),
}

/// A disclosure that consent and policy allow, waiting for its records.
#[derive(Debug)]
struct Fetch {
    consent_id: ConsentId,
    subject: String,
    scope: ConsentScope,
    release: crate::policy::Release,
    /// Asked for, covered by the consent and released by policy.
    categories: Vec<Category>,
}

/// What a response carries of the witnessing of this node's log (section 16.3): the newest
/// checkpoint cosigned by the manifest's witness threshold (else the newest cosigned at all),
/// and the link to the newest checkpoint `requester` cosigned, each with the consistency proof
/// to the receipt's checkpoint. Either is left out when it cannot be built; the response still
/// goes (the requester then reports the log as not yet witnessed).
fn witness_evidence(
    node: &Holder<'_>,
    requester: &AgencyId,
    receipt: &throughgate_protocol::audit::Receipt,
) -> (Option<WitnessedCheckpoint>, Option<RequesterView>) {
    let Some(r_size) = SignedCheckpoint::parse(receipt.checkpoint.as_bytes())
        .ok()
        .map(|s| s.checkpoint().size)
    else {
        return (None, None);
    };
    let link = |size: u64| {
        let (a, b) = (size.min(r_size), size.max(r_size));
        if a == b {
            Some(Vec::new())
        } else {
            node.audit.consistency_proof(a, b).ok()
        }
    };
    let witnessed = match node.db.cosigned_notes() {
        Ok((any, quorum)) => quorum.or(any).and_then(|(size, checkpoint)| {
            Some(WitnessedCheckpoint {
                checkpoint,
                consistency: link(size)?,
            })
        }),
        Err(e) => {
            tracing::warn!(error = %e, "cannot read the cosigned checkpoint");
            None
        }
    };
    let requester_view = node
        .db
        .cosignatures()
        .ok()
        .and_then(|all| all.into_iter().find(|(w, _, _)| w == requester))
        .and_then(|(_, size, _)| {
            Some(RequesterView {
                size,
                consistency: link(size)?,
            })
        });
    (witnessed, requester_view)
}

/// The part of a holder's decision that needs no records: gathers what the node knows
/// (credential revocations, replay, consent, linkage) and decides from it with [`admission`]
/// and [`plan`], which look at nothing else.
fn decide(
    node: &Holder<'_>,
    peer: &AgencyId,
    query: &Query,
    credential: &throughgate_protocol::credential::Credential,
    manifest: &Manifest,
    now: Timestamp,
) -> Result<Plan, crate::store::StoreError> {
    let revoked = node
        .db
        .credential_revoked(&query.requester, &credential.public_key)?;
    if let Some(reason) = admission(query, peer, node.agency, revoked) {
        return Ok(Plan::Decided(Decision::refuse(reason, None)));
    }
    // Marked only once the query is admitted, so that a copy relayed by another member or sent
    // to the wrong holder cannot use up its id.
    if !node.db.mark_query_seen(&query.query_id, query.expires_at)? {
        return Ok(Plan::Decided(Decision::refuse(
            RefusalReason::QueryReplayed,
            None,
        )));
    }
    let (consent, linkage) = match &query.consent_id {
        Some(id) => (node.db.consent(id)?, node.db.consent_linkage(id)?),
        None => (None, None),
    };
    let passport_subject = node.db.passport_subject(&query.passport_id)?;
    let facts = ConsentFacts {
        consent: consent.as_ref(),
        linkage: linkage.as_ref(),
        passport_subject: passport_subject.as_deref(),
    };
    Ok(plan(
        query,
        node.agency,
        &facts,
        manifest,
        &node.policy,
        now,
    ))
}

/// Whether `holder` considers a query from `peer` at all (checked in this order): sent by its
/// own requester, under a credential not revoked here, addressed to `holder`.
fn admission(
    query: &Query,
    peer: &AgencyId,
    holder: &AgencyId,
    credential_revoked: bool,
) -> Option<RefusalReason> {
    if &query.requester != peer {
        Some(RefusalReason::RequesterMismatch)
    } else if credential_revoked {
        Some(RefusalReason::CredentialRevoked)
    } else if query.request_for(holder).is_none() {
        Some(RefusalReason::NotAddressed)
    } else {
        None
    }
}

/// Decides an admitted, fresh query from the facts about its consent, the manifest, the
/// policy and `now`: refused or not held with its reason, or the records to fetch and how to
/// minimise them.
fn plan(
    query: &Query,
    holder: &AgencyId,
    facts: &ConsentFacts<'_>,
    manifest: &Manifest,
    policy: &Policy,
    now: Timestamp,
) -> Plan {
    let refuse = |reason, id| Plan::Decided(Decision::refuse(reason, id));
    let (consent_id, subject, scope) = match consent_verdict(query, holder, facts, now) {
        ConsentVerdict::Decided(d) => return Plan::Decided(d),
        ConsentVerdict::Disclose {
            consent_id,
            subject,
            scope,
        } => (consent_id, subject, scope),
    };
    let Some(requester) = manifest.member(&query.requester) else {
        return refuse(RefusalReason::RequesterNotAuthorised, Some(consent_id));
    };
    let release = policy.release_for(query.purpose, requester);
    if scope
        .categories
        .iter()
        .all(|c| !release.categories.contains(c))
    {
        return refuse(RefusalReason::PolicyWithholdsAll, Some(consent_id));
    }
    let categories = scope
        .categories
        .iter()
        .copied()
        .filter(|c| release.categories.contains(c))
        .collect();
    Plan::Fetch(Fetch {
        consent_id,
        subject,
        scope,
        release,
        categories,
    })
}

/// What the holder knows about the consent a query names.
#[derive(Debug, Clone, Copy)]
pub(crate) struct ConsentFacts<'a> {
    /// The consent the query names, as stored here.
    pub consent: Option<&'a StoredConsent>,
    /// How that consent was linked here.
    pub linkage: Option<&'a Linkage>,
    /// The local subject the query's passport id names here.
    pub passport_subject: Option<&'a str>,
}

/// The consent part of a holder's decision.
#[derive(Debug)]
pub(crate) enum ConsentVerdict {
    /// Refused or not held: nothing more to look at.
    Decided(Decision),
    /// The consent allows disclosing `scope` about `subject`, subject to policy.
    Disclose {
        /// The consent relied on.
        consent_id: ConsentId,
        /// The one local subject the consent is linked to.
        subject: String,
        /// What it covers for this query.
        scope: ConsentScope,
    },
}

/// Decides what the consent named by `query` allows `holder` to disclose at `now` (SPEC §8.3):
/// only about the subject that consent's own identifier linked, never about whoever else the
/// passport id may name, and nothing at all under a consent that linked nobody.
pub(crate) fn consent_verdict(
    query: &Query,
    holder: &AgencyId,
    facts: &ConsentFacts<'_>,
    now: Timestamp,
) -> ConsentVerdict {
    let refuse = |reason, id: Option<&ConsentId>| {
        ConsentVerdict::Decided(Decision::refuse(reason, id.cloned()))
    };
    let Some(consent_id) = query.consent_id.as_ref() else {
        return refuse(RefusalReason::NoConsent, None);
    };
    let Some(stored) = facts.consent.filter(|c| &c.body.consent_id == consent_id) else {
        return refuse(RefusalReason::NoConsent, Some(consent_id));
    };
    let scope = match check_consent(&stored.body, stored.status_at(now), query, holder, now) {
        Ok(s) => s,
        Err(reason) => return refuse(reason, Some(consent_id)),
    };
    match facts.linkage {
        Some(Linkage::Linked(subject)) if facts.passport_subject == Some(subject.as_str()) => {
            ConsentVerdict::Disclose {
                consent_id: consent_id.clone(),
                subject: subject.clone(),
                scope,
            }
        }
        Some(Linkage::Linked(_) | Linkage::SubjectMismatch) => {
            refuse(RefusalReason::SubjectMismatch, Some(consent_id))
        }
        Some(Linkage::NotHeld) | None => ConsentVerdict::Decided(Decision {
            outcome: Outcome::NotHeld,
            reason: None,
            consent_id: Some(consent_id.clone()),
            records: Vec::new(),
            withheld: Withheld::default(),
            source: None,
        }),
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::indexing_slicing)]

    use throughgate_protocol::category::{Category, Purpose};
    use throughgate_protocol::consent::{Collection, CollectionMethod, Consent, HolderScope};
    use throughgate_protocol::credential::Credential;
    use throughgate_protocol::ids::{PassportId, PersonId, QueryId};
    use throughgate_protocol::keys::SecretKey;
    use throughgate_protocol::messages::HolderRequest;

    use super::*;
    use crate::consent::newly_active;

    const NOW: Timestamp = Timestamp(1_800_000_000);

    fn agency(s: &str) -> AgencyId {
        AgencyId::new(s).unwrap()
    }

    fn credential() -> Envelope {
        let key = SecretKey::generate();
        Envelope::seal(
            &Credential {
                agency: agency("hmp-leeds"),
                person_id: PersonId::new("cw-1").unwrap(),
                display_name: "Caseworker".into(),
                roles: vec![throughgate_protocol::credential::StaffRole::Caseworker],
                public_key: key.public(),
                not_before: NOW.minus_secs(60),
                not_after: NOW.plus_secs(86_400),
            },
            &[],
        )
    }

    fn consent(passport: &PassportId) -> StoredConsent {
        let body = Consent {
            consent_id: ConsentId::random(),
            passport_id: passport.clone(),
            purpose: Purpose::Resettlement,
            purpose_text: "resettlement".into(),
            holders: vec![HolderScope {
                agency: agency("nhs-wy"),
                categories: vec![Category::Health],
                subject_commitment: [0; 32],
            }],
            grantees: vec![agency("probation-yorks")],
            valid_from: NOW.minus_secs(60),
            valid_until: NOW.plus_secs(3600),
            records_from: None,
            records_until: None,
            legal_basis: "basis".into(),
            jurisdiction: "England and Wales".into(),
            collection: Collection {
                method: CollectionMethod::SignedPaperForm,
                reference: "F-1".into(),
            },
            privacy_notice_sha256: [0; 32],
            recorded_by: agency("hmp-leeds"),
            recorded_by_person: PersonId::new("cw-1").unwrap(),
            recorded_at: NOW.minus_secs(60),
            supersedes: None,
            credential: credential(),
        };
        newly_active(Envelope::seal(&body, &[]), body, NOW.minus_secs(60))
    }

    fn query(passport: &PassportId, consent: Option<&ConsentId>) -> Query {
        Query {
            query_id: QueryId::random(),
            passport_id: passport.clone(),
            consent_id: consent.cloned(),
            purpose: Purpose::Resettlement,
            requests: vec![HolderRequest {
                holder: agency("nhs-wy"),
                categories: vec![Category::Health],
            }],
            requester: agency("probation-yorks"),
            caseworker: PersonId::new("cw-2").unwrap(),
            credential: credential(),
            issued_at: NOW,
            expires_at: NOW.plus_secs(60),
            nonce: [0; 16],
        }
    }

    fn verdict(
        q: &Query,
        c: Option<&StoredConsent>,
        linkage: Option<&Linkage>,
        passport_subject: Option<&str>,
    ) -> Result<String, (Outcome, Option<RefusalReason>)> {
        let facts = ConsentFacts {
            consent: c,
            linkage,
            passport_subject,
        };
        match consent_verdict(q, &agency("nhs-wy"), &facts, NOW) {
            ConsentVerdict::Disclose { subject, .. } => Ok(subject),
            ConsentVerdict::Decided(d) => Err((d.outcome, d.reason)),
        }
    }

    #[test]
    fn the_audit_entry_names_the_categories_actually_released_not_those_allowed() {
        use throughgate_protocol::ids::RecordId;
        use throughgate_protocol::record::DisclosedRecord;
        let pp = PassportId::random();
        let q = query(&pp, None);
        let rec = |cat: Category| DisclosedRecord {
            record_id: RecordId::new("r1").unwrap(),
            category: cat,
            kind: "gp_registration".into(),
            fields: [("status".to_owned(), "registered".to_owned())].into(),
            about: throughgate_protocol::time::Date::parse("2026-01-02").unwrap(),
            recorded_at: NOW,
            source_system: "S".into(),
        };
        // The query and consent allowed health and drugs and alcohol; only health was held.
        let d = Decision {
            outcome: Outcome::Disclosed,
            reason: None,
            consent_id: None,
            records: vec![rec(Category::Health), rec(Category::Health)],
            withheld: Withheld::default(),
            source: None,
        };
        let e = d.entry(&q, [0; 32]);
        assert_eq!(e.categories, vec![Category::Health]);
        assert_eq!(e.records, 2);
        // A refusal released nothing.
        let e = Decision::refuse(RefusalReason::NoConsent, None).entry(&q, [0; 32]);
        assert!(e.categories.is_empty());
    }

    #[test]
    fn a_consent_discloses_only_about_the_subject_its_own_identifier_linked() {
        let pp = PassportId::random();
        let c = consent(&pp);
        let q = query(&pp, Some(&c.body.consent_id));
        let linked = Linkage::Linked("9434765919".into());
        assert_eq!(
            verdict(&q, Some(&c), Some(&linked), Some("9434765919")),
            Ok("9434765919".into())
        );
    }

    #[test]
    fn a_consent_that_linked_nobody_discloses_nothing_whoever_the_passport_names() {
        let pp = PassportId::random();
        let c = consent(&pp);
        let q = query(&pp, Some(&c.body.consent_id));
        for linkage in [None, Some(Linkage::NotHeld)] {
            assert_eq!(
                verdict(&q, Some(&c), linkage.as_ref(), Some("9434765919")),
                Err((Outcome::NotHeld, None))
            );
        }
    }

    #[test]
    fn a_consent_naming_another_person_than_the_passport_is_refused() {
        let pp = PassportId::random();
        let c = consent(&pp);
        let q = query(&pp, Some(&c.body.consent_id));
        let mismatch = Err((Outcome::Refused, Some(RefusalReason::SubjectMismatch)));
        assert_eq!(
            verdict(&q, Some(&c), Some(&Linkage::SubjectMismatch), Some("A")),
            mismatch
        );
        // A linkage that disagrees with the passport's subject never discloses either.
        let other = Linkage::Linked("B".into());
        assert_eq!(verdict(&q, Some(&c), Some(&other), Some("A")), mismatch);
        assert_eq!(verdict(&q, Some(&c), Some(&other), None), mismatch);
    }

    #[test]
    fn consent_checks_come_before_linkage_and_a_query_without_its_consent_finds_none() {
        let pp = PassportId::random();
        let mut c = consent(&pp);
        let linked = Linkage::Linked("A".into());
        // No consent named, or one this holder does not hold, or a different one.
        assert_eq!(
            verdict(&query(&pp, None), Some(&c), Some(&linked), Some("A")),
            Err((Outcome::Refused, Some(RefusalReason::NoConsent)))
        );
        let other = ConsentId::random();
        assert_eq!(
            verdict(
                &query(&pp, Some(&other)),
                Some(&c),
                Some(&linked),
                Some("A")
            ),
            Err((Outcome::Refused, Some(RefusalReason::NoConsent)))
        );
        // Withdrawn: refused as such, linked or not.
        c.status = throughgate_protocol::consent::ConsentStatus::Revoked;
        let q = query(&pp, Some(&c.body.consent_id));
        for l in [Some(&linked), None] {
            assert_eq!(
                verdict(&q, Some(&c), l, Some("A")),
                Err((Outcome::Refused, Some(RefusalReason::ConsentRevoked)))
            );
        }
    }

    /// A query answered whole by a holder built from its parts (no socket), with the entry
    /// its receipt names as logged.
    async fn ask(
        parts: &crate::testing::Parts,
        env: &Envelope,
    ) -> (Response, throughgate_protocol::audit::DecisionEntry) {
        use throughgate_protocol::audit::AuditEntry;
        let holder = parts.holder();
        let peer = agency(crate::testing::REQUESTER);
        let answer = answer(&holder, &peer, env, parts.audit.intent()).await;
        answer
            .verify_by(
                throughgate_protocol::envelope::SignerRole::Node,
                &parts.public_key(),
            )
            .unwrap();
        let response: Response = answer.open().unwrap();
        let stored = parts.db.audit_entry(response.receipt.leaf_index).unwrap();
        assert_eq!(
            stored.as_ref(),
            Some(&response.receipt.entry),
            "durably logged"
        );
        let AuditEvent::Decision(entry) = AuditEntry::from_bytes(&response.receipt.entry)
            .unwrap()
            .event
        else {
            panic!("the receipt is not for a decision");
        };
        assert_eq!(entry.query_digest, query_digest(env));
        (response, entry)
    }

    #[tokio::test]
    async fn a_consented_query_is_answered_with_the_released_fields_and_its_decision_logged() {
        let parts = crate::testing::Parts::new();
        let now = parts.clock.now();
        let pp = PassportId::random();
        let consent = crate::testing::consent(&pp, now);
        parts.store_linked(&consent);
        let id = consent.open::<Consent>().unwrap().consent_id;
        let (response, entry) = ask(&parts, &crate::testing::query(&pp, Some(&id), now)).await;
        assert_eq!(response.outcome, Outcome::Disclosed);
        assert_eq!(response.reason, None);
        assert_eq!(response.consent_id.as_ref(), Some(&id));
        assert_eq!(response.holder, agency(crate::testing::HOLDER));
        assert_eq!(response.records.len(), 1);
        let fields: Vec<&str> = response.records[0]
            .fields
            .keys()
            .map(String::as_str)
            .collect();
        assert_eq!(
            fields,
            ["practice", "status"],
            "a field policy withholds stays here"
        );
        assert_eq!(entry.outcome, Outcome::Disclosed);
        assert_eq!(entry.consent_id, Some(id));
        assert_eq!(entry.records, 1);
        assert_eq!(entry.categories, [Category::Health]);
        assert_eq!(
            entry.fields,
            ["gp_registration.practice", "gp_registration.status"]
        );
    }

    #[tokio::test]
    async fn a_query_without_consent_is_refused_as_such_and_its_refusal_logged() {
        let parts = crate::testing::Parts::new();
        let now = parts.clock.now();
        let pp = PassportId::random();
        // The person's consent is held here, but the query names none.
        parts.store_linked(&crate::testing::consent(&pp, now));
        let (response, entry) = ask(&parts, &crate::testing::query(&pp, None, now)).await;
        assert_eq!(response.outcome, Outcome::Refused);
        assert_eq!(response.reason, Some(RefusalReason::NoConsent));
        assert_eq!(
            response.detail.as_deref(),
            Some(RefusalReason::NoConsent.explain())
        );
        assert!(response.records.is_empty());
        assert_eq!(entry.outcome, Outcome::Refused);
        assert_eq!(entry.reason, Some(RefusalReason::NoConsent));
        assert!(entry.records == 0 && entry.fields.is_empty());
    }

    #[tokio::test]
    async fn a_query_seen_before_is_refused_as_a_replay_and_logged_again() {
        let parts = crate::testing::Parts::new();
        let now = parts.clock.now();
        let pp = PassportId::random();
        let consent = crate::testing::consent(&pp, now);
        parts.store_linked(&consent);
        let id = consent.open::<Consent>().unwrap().consent_id;
        let env = crate::testing::query(&pp, Some(&id), now);
        let (first, _) = ask(&parts, &env).await;
        assert_eq!(first.outcome, Outcome::Disclosed);
        let (again, entry) = ask(&parts, &env).await;
        assert_eq!(again.reason, Some(RefusalReason::QueryReplayed));
        assert!(again.records.is_empty());
        assert_eq!(entry.reason, Some(RefusalReason::QueryReplayed));
        assert!(again.receipt.leaf_index > first.receipt.leaf_index);
    }

    #[test]
    fn admission_refuses_a_relayed_query_a_revoked_credential_and_another_holders_query() {
        let pp = PassportId::random();
        let q = query(&pp, None);
        let (requester, holder) = (agency("probation-yorks"), agency("nhs-wy"));
        assert_eq!(admission(&q, &requester, &holder, false), None);
        assert_eq!(
            admission(&q, &agency("hmp-leeds"), &holder, true),
            Some(RefusalReason::RequesterMismatch)
        );
        assert_eq!(
            admission(&q, &requester, &holder, true),
            Some(RefusalReason::CredentialRevoked)
        );
        assert_eq!(
            admission(&q, &requester, &agency("dwp"), false),
            Some(RefusalReason::NotAddressed)
        );
    }

    #[test]
    fn a_consent_that_policy_withholds_entirely_discloses_nothing() {
        let now = NOW;
        let pp = PassportId::random();
        let c = consent(&pp);
        let q = query(&pp, Some(&c.body.consent_id));
        let manifest: throughgate_protocol::manifest::Manifest =
            crate::testing::manifest(now).open().unwrap();
        let linked = Linkage::Linked("A".into());
        let facts = ConsentFacts {
            consent: Some(&c),
            linkage: Some(&linked),
            passport_subject: Some("A"),
        };
        let holder = agency("nhs-wy");
        let decided = |policy: &Policy| match plan(&q, &holder, &facts, &manifest, policy, now) {
            Plan::Decided(d) => Err((d.outcome, d.reason)),
            Plan::Fetch(f) => Ok((f.subject, f.categories)),
        };
        assert_eq!(
            decided(&Policy::deny_all()),
            Err((Outcome::Refused, Some(RefusalReason::PolicyWithholdsAll)))
        );
        let health = Policy::parse(
            "[[release]]\npurpose = \"resettlement\"\nto = [\"*\"]\ncategories = [\"health\"]\n",
        )
        .unwrap();
        assert_eq!(
            decided(&health),
            Ok(("A".to_owned(), vec![Category::Health]))
        );
    }

    #[test]
    fn linking_fixes_the_passports_person_at_the_first_consent_that_links() {
        assert_eq!(Linkage::decide("A", false, None), Linkage::NotHeld);
        assert_eq!(Linkage::decide("A", false, Some("B")), Linkage::NotHeld);
        assert_eq!(
            Linkage::decide("A", true, None),
            Linkage::Linked("A".into())
        );
        assert_eq!(
            Linkage::decide("A", true, Some("A")),
            Linkage::Linked("A".into())
        );
        assert_eq!(
            Linkage::decide("A", true, Some("B")),
            Linkage::SubjectMismatch
        );
    }
}
