//! Client-side audit operations for data-protection officers: search, verify, checkpoints, and
//! subject-access reports whose every entry is verified against its node's signed checkpoint.

use serde::Serialize;
use throughgate_protocol::audit::{verify_audit_answer, AuditEntry};
use throughgate_protocol::envelope::{Envelope, SignerRole};
use throughgate_protocol::ids::{AgencyId, PassportId, PersonId, QueryId};
use throughgate_protocol::manifest::Manifest;
use throughgate_protocol::messages::{
    AuditAnswer, AuditFilter, AuditQuery, AuditVerification, CheckpointStatus, ClientOp,
    ClientResponse, HolderStatus, IndexedEntry,
};
use throughgate_protocol::time::Timestamp;

use super::{unexpected, ClientError, HomeClient};

/// One agency's part of a subject-access report.
#[derive(Debug, Clone, Serialize)]
pub struct ReportSource {
    /// The agency.
    pub agency: AgencyId,
    /// Its display name.
    pub name: String,
    /// Whether it answered.
    pub status: HolderStatus,
    /// Whether its answer verified (signature, checkpoint, every inclusion proof).
    pub verified: bool,
    /// What failed, if anything.
    pub problem: Option<String>,
    /// Its entries about the person, oldest first, with their log indexes.
    pub entries: Vec<IndexedEntry>,
    /// It holds more entries than it sent.
    pub truncated: bool,
    /// The size of the checkpoint the entries are proven under.
    pub checkpoint_size: Option<u64>,
}

/// A subject-access report: who did what with one person's data, where.
#[derive(Debug, Clone, Serialize)]
pub struct SubjectAccessReport {
    /// The person.
    pub passport_id: PassportId,
    /// When it was produced.
    pub generated_at: Timestamp,
    /// The DPO who asked.
    pub requested_by: PersonId,
    /// Their agency.
    pub agency: AgencyId,
    /// Whether every member was asked.
    pub federation: bool,
    /// Per agency.
    pub sources: Vec<ReportSource>,
}

impl SubjectAccessReport {
    /// Whether every source answered and verified.
    pub fn complete(&self) -> bool {
        self.sources
            .iter()
            .all(|s| s.status == HolderStatus::Answered && s.verified)
    }
}

impl HomeClient {
    /// Searches the home node's audit log.
    pub async fn audit_search(
        &self,
        filter: AuditFilter,
    ) -> Result<(Vec<IndexedEntry>, bool), ClientError> {
        match self.call(ClientOp::AuditSearch(filter)).await? {
            ClientResponse::AuditEntries { entries, truncated } => Ok((entries, truncated)),
            other => Err(unexpected(&other)),
        }
    }

    /// Has the home node recompute and check its whole log.
    pub async fn audit_verify(&self) -> Result<AuditVerification, ClientError> {
        match self.call(ClientOp::AuditVerify).await? {
            ClientResponse::AuditVerified(v) => Ok(v),
            other => Err(unexpected(&other)),
        }
    }

    /// The home node's checkpoint and witnessing status.
    pub async fn audit_checkpoints(&self) -> Result<CheckpointStatus, ClientError> {
        match self.call(ClientOp::AuditCheckpoints).await? {
            ClientResponse::AuditCheckpoints(c) => Ok(c),
            other => Err(unexpected(&other)),
        }
    }

    /// As a witness, takes `peer`'s next checkpoint as a new baseline (DPO, operator).
    pub async fn witness_reset(&self, peer: &AgencyId) -> Result<CheckpointStatus, ClientError> {
        match self
            .call(ClientOp::WitnessReset { peer: peer.clone() })
            .await?
        {
            ClientResponse::AuditCheckpoints(c) => Ok(c),
            other => Err(unexpected(&other)),
        }
    }

    /// A subject-access report for `passport`: from the home node's log, or with `federation`
    /// from every member's. Each answer is verified here against `manifest`.
    pub async fn subject_access_report(
        &self,
        manifest: &Manifest,
        passport: &PassportId,
        federation: bool,
    ) -> Result<SubjectAccessReport, ClientError> {
        let cred = self.credential();
        let now = self.clock().now();
        let q = AuditQuery {
            query_id: QueryId::random(),
            passport_id: passport.clone(),
            requester: cred.agency.clone(),
            dpo: cred.person_id.clone(),
            credential: self.credential_envelope().clone(),
            issued_at: now,
            expires_at: now.plus_secs(120),
        };
        let env = Envelope::seal(&q, &[(SignerRole::Person, self.key())]);
        let (query, sources) = match self
            .call(ClientOp::AuditReport {
                query: env,
                federation,
            })
            .await?
        {
            ClientResponse::AuditReport { query, sources } => (query, sources),
            other => return Err(unexpected(&other)),
        };
        let sources = sources
            .into_iter()
            .map(|s| {
                let member = manifest.member(&s.agency);
                let name = member.map(|m| m.name.clone()).unwrap_or_default();
                let keys = member.map(|m| m.node_keys.clone()).unwrap_or_default();
                let mut src = ReportSource {
                    agency: s.agency.clone(),
                    name,
                    status: s.status,
                    verified: false,
                    problem: s.detail.clone(),
                    entries: Vec::new(),
                    truncated: false,
                    checkpoint_size: None,
                };
                if let Some(answer) = &s.answer {
                    if answer.kind == throughgate_protocol::envelope::MessageKind::Error {
                        src.status = HolderStatus::Error;
                        src.problem = answer
                            .open::<throughgate_protocol::messages::ErrorBody>()
                            .map(|b| format!("{}: {}", b.code, b.message))
                            .ok();
                        return src;
                    }
                    match verify_audit_answer(answer, &query, &s.agency, &keys) {
                        Ok(entries) => {
                            src.verified = true;
                            src.entries = entries
                                .into_iter()
                                .map(|(index, entry)| IndexedEntry { index, entry })
                                .collect();
                            if let Ok(a) = answer.open::<AuditAnswer>() {
                                src.truncated = a.truncated;
                                src.checkpoint_size =
                                    throughgate_protocol::checkpoint::SignedCheckpoint::parse(
                                        a.checkpoint.as_bytes(),
                                    )
                                    .ok()
                                    .map(|c| c.checkpoint().size);
                            }
                        }
                        Err(e) => {
                            src.status = HolderStatus::Invalid;
                            src.problem = Some(e.to_string());
                        }
                    }
                }
                src
            })
            .collect();
        Ok(SubjectAccessReport {
            passport_id: passport.clone(),
            generated_at: now,
            requested_by: cred.person_id.clone(),
            agency: cred.agency.clone(),
            federation,
            sources,
        })
    }
}

/// Entries of a report, all agencies merged, oldest first, in cause-and-effect order: each
/// agency's entries stay in its log's order, and among entries logged in the same second by
/// different agencies a cause comes before its effect (a consent's recording before its
/// registration at a holder, a query's sending before the decisions it asked for).
pub fn merged_entries(report: &SubjectAccessReport) -> Vec<(&AgencyId, &AuditEntry)> {
    // Each agency's entries in log order; a k-way merge keeps that order and picks, among the
    // queue heads, the earliest by (time, causal rank, agency).
    let mut queues: Vec<(&AgencyId, std::collections::VecDeque<&IndexedEntry>)> = report
        .sources
        .iter()
        .map(|s| {
            let mut q: Vec<&IndexedEntry> = s.entries.iter().collect();
            q.sort_by_key(|e| e.index);
            (&s.agency, q.into_iter().collect())
        })
        .collect();
    let mut all = Vec::new();
    loop {
        let next = queues
            .iter()
            .enumerate()
            .filter_map(|(i, (a, q))| q.front().map(|e| (i, *a, *e)))
            .min_by_key(|(_, a, e)| (e.entry.at, causal_rank(&e.entry), a.as_str()));
        let Some((i, a, e)) = next else { break };
        if let Some((_, q)) = queues.get_mut(i) {
            q.pop_front();
        }
        all.push((a, &e.entry));
    }
    all
}

/// Where an entry sits in a chain of cause and effect, for ordering entries logged in the same
/// second: a consent is recorded, then registered, then relied on (queries and decisions), then
/// ended; a query is sent before it is decided.
fn causal_rank(e: &AuditEntry) -> u8 {
    use throughgate_protocol::audit::AuditEvent;
    match &e.event {
        AuditEvent::ConsentRecorded(_) => 0,
        AuditEvent::ConsentRegistered(_) => 1,
        AuditEvent::QuerySent { .. } => 2,
        AuditEvent::Decision(_) => 3,
        AuditEvent::ConsentRevoked(_)
        | AuditEvent::ConsentExpired(_)
        | AuditEvent::ConsentSuperseded(_) => 4,
        _ => 5,
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::indexing_slicing)]

    use throughgate_protocol::audit::{AuditEvent, DecisionEntry};
    use throughgate_protocol::category::Purpose;
    use throughgate_protocol::ids::{ConsentId, QueryId};
    use throughgate_protocol::messages::{Outcome, Withheld};

    use super::*;

    fn source(agency: &str, entries: Vec<(u64, AuditEvent)>) -> ReportSource {
        let agency = AgencyId::new(agency).unwrap();
        ReportSource {
            name: agency.to_string(),
            status: HolderStatus::Answered,
            verified: true,
            problem: None,
            entries: entries
                .into_iter()
                .map(|(index, event)| IndexedEntry {
                    index,
                    entry: AuditEntry {
                        at: Timestamp(1_800_000_000),
                        node: agency.clone(),
                        event,
                    },
                })
                .collect(),
            truncated: false,
            checkpoint_size: Some(10),
            agency,
        }
    }

    #[test]
    fn entries_of_one_second_merge_cause_before_effect_and_keep_each_logs_order() {
        let pp = PassportId::new("pp-00000000000000000000000000000001").unwrap();
        let q = QueryId::random();
        let requester = AgencyId::new("zz-requester").unwrap();
        let caseworker = PersonId::new("cw-1").unwrap();
        let decision = |outcome| {
            AuditEvent::Decision(DecisionEntry {
                query_id: q.clone(),
                query_digest: [0; 32],
                passport_id: pp.clone(),
                requester: requester.clone(),
                caseworker: caseworker.clone(),
                consent_id: Some(ConsentId::random()),
                purpose: Purpose::Resettlement,
                outcome,
                reason: None,
                categories: Vec::new(),
                fields: Vec::new(),
                records: 0,
                withheld: Withheld::default(),
                source: None,
            })
        };
        let sent = AuditEvent::QuerySent {
            query_id: q.clone(),
            query_digest: [0; 32],
            passport_id: pp.clone(),
            caseworker: caseworker.clone(),
            consent_id: None,
            purpose: Purpose::Resettlement,
            holders: vec![AgencyId::new("aa-holder").unwrap()],
        };
        // The holder's id sorts first, and its decision was logged in the same second as the
        // query that caused it.
        let report = SubjectAccessReport {
            passport_id: pp.clone(),
            generated_at: Timestamp(1_800_000_100),
            requested_by: caseworker.clone(),
            agency: requester.clone(),
            federation: true,
            sources: vec![
                source(
                    "aa-holder",
                    vec![
                        (7, decision(Outcome::NotHeld)),
                        (3, decision(Outcome::Disclosed)),
                    ],
                ),
                source("zz-requester", vec![(1, sent)]),
            ],
        };
        let names: Vec<&str> = merged_entries(&report)
            .iter()
            .map(|(_, e)| match &e.event {
                AuditEvent::Decision(d) => d.outcome.as_str(),
                other => other.name(),
            })
            .collect();
        // The query first; then the holder's entries in its own log order (index 3, then 7).
        assert_eq!(names, ["query_sent", "disclosed", "not_held"]);
    }
}
