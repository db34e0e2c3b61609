//! A property over random sequences of grants (for the person, another person, or nobody
//! known), follow-ups that supersede, withdrawals and queries for one passport id, on a real
//! loopback federation: at the NHS holder, every disclosure's records belong to the subject
//! linked by the consent the query names (the passport's first linked person), and none
//! follows a withdrawal or a supersession. An active consent of that person always discloses.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    missing_docs
)]

mod common;

use std::collections::BTreeSet;

use common::*;
use proptest::prelude::*;
use proptest::test_runner::{Config, TestRunner};
use throughgate_node::config::ConsentRules;
use throughgate_protocol::category::{Category, Purpose};
use throughgate_protocol::credential::StaffRole;
use throughgate_protocol::ids::{ConsentId, PassportId};
use throughgate_protocol::messages::{AckSubject, HolderRequest, Outcome, Response};
use throughgate_testkit::localfed::{FedOptions, LocalFederation};
use throughgate_testkit::synth::{PersonGenerator, SynthConfig, SyntheticPerson};

const AGENCIES: [&str; 4] = ["hmp-leeds", "nhs-wy", "probation-yorks", "leeds-cc"];
const RECORDERS: [&str; 2] = ["hmp-leeds", "leeds-cc"];

#[derive(Debug, Clone)]
enum Op {
    /// Record a consent at `RECORDERS[recorder]` for person `who` (0 and 1: people the NHS
    /// knows; 2: nobody it knows), superseding the `supersede`-th consent recorded so far
    /// (counting round) when that one is active and recorded at the same agency.
    Grant {
        recorder: usize,
        who: usize,
        supersede: Option<usize>,
    },
    /// Withdraw the n-th consent recorded so far, counting round (by its recording agency).
    Revoke(usize),
    /// Probation asks the NHS under the n-th consent recorded so far, counting round.
    Query(usize),
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        3 => (0..2usize, 0..3usize, proptest::option::of(0..6usize))
            .prop_map(|(recorder, who, supersede)| Op::Grant { recorder, who, supersede }),
        1 => (0..6usize).prop_map(Op::Revoke),
        3 => (0..6usize).prop_map(Op::Query),
    ]
}

/// The model's view of one recorded consent.
#[derive(Debug, Clone)]
struct Model {
    id: ConsentId,
    recorder: usize,
    who: usize,
    active: bool,
}

struct People {
    known: [SyntheticPerson; 2],
    outsider: SyntheticPerson,
}

impl People {
    fn get(&self, who: usize) -> &SyntheticPerson {
        match who {
            0 | 1 => &self.known[who],
            _ => &self.outsider,
        }
    }
}

fn people(fed: &LocalFederation) -> People {
    let everywhere: Vec<&SyntheticPerson> = fed
        .population
        .people
        .iter()
        .filter(|p| fed.nodes.iter().all(|n| p.is_known_to(n.agency)))
        .take(2)
        .collect();
    let gen = PersonGenerator::new(&SynthConfig::new(99, 500, fed.reference_date()));
    let outsider = (0..500)
        .map(|i| gen.person(i))
        .find(|p| {
            fed.nodes.iter().all(|n| {
                fed.population
                    .find(&p.identifier(n.agency.scheme))
                    .is_none()
            })
        })
        .unwrap();
    People {
        known: [everywhere[0].clone(), everywhere[1].clone()],
        outsider,
    }
}

fn nhs_records(fed: &LocalFederation, person: &SyntheticPerson) -> BTreeSet<String> {
    let state = node_state(fed, "nhs-wy");
    let scheme = fed.node("nhs-wy").unwrap().agency.scheme;
    state
        .db
        .records_of(&person.identifier(scheme).value, 100_000)
        .unwrap()
        .into_iter()
        .map(|r| r.record_id.to_string())
        .collect()
}

async fn run_case(fed: &LocalFederation, people: &People, ops: Vec<Op>) {
    let passport = PassportId::random();
    let mut consents: Vec<Model> = Vec::new();
    // The person the passport id names at the NHS: fixed by the first consent that linked.
    let mut passport_person: Option<usize> = None;
    for op in ops {
        match op {
            Op::Grant {
                recorder,
                who,
                supersede,
            } => {
                let old = supersede
                    .and_then(|i| consents.get(i % consents.len().max(1)))
                    .filter(|c| c.active && c.recorder == recorder)
                    .map(|c| c.id.clone());
                let mut p = plan(fed, people.get(who), 3600);
                p.passport_id = passport.clone();
                p.grantees = vec![agency("probation-yorks")];
                p.supersedes = old.clone();
                let client = fed
                    .client(RECORDERS[recorder], StaffRole::Caseworker)
                    .await
                    .unwrap();
                let signed = client.sign_consent(&p);
                let id = signed.consent_id.clone();
                client.record_consent(signed).await.unwrap();
                wait_deliveries(&client, &id, AckSubject::Grant).await;
                client.close().await;
                if let Some(old) = old {
                    for c in consents.iter_mut().filter(|c| c.id == old) {
                        c.active = false;
                    }
                }
                if who < 2 && passport_person.is_none() {
                    passport_person = Some(who);
                }
                consents.push(Model {
                    id,
                    recorder,
                    who,
                    active: true,
                });
            }
            Op::Revoke(i) => {
                let n = consents.len().max(1);
                let Some(c) = consents.get_mut(i % n).filter(|c| c.active) else {
                    continue;
                };
                let client = fed
                    .client(RECORDERS[c.recorder], StaffRole::Caseworker)
                    .await
                    .unwrap();
                client.revoke_consent(&c.id, "withdrawn").await.unwrap();
                wait_deliveries(&client, &c.id, AckSubject::Revoke).await;
                client.close().await;
                c.active = false;
            }
            Op::Query(i) => {
                let Some(c) = consents.get(i % consents.len().max(1)) else {
                    continue;
                };
                let r = ask_nhs(fed, &passport, &c.id).await;
                let got: BTreeSet<String> =
                    r.records.iter().map(|r| r.record_id.to_string()).collect();
                let linked = c.who < 2 && passport_person == Some(c.who);
                if r.outcome == Outcome::Disclosed || !got.is_empty() {
                    assert!(
                        c.active,
                        "disclosed under a withdrawn or superseded consent"
                    );
                    assert!(linked, "disclosed under a consent that links nobody here");
                    let own = nhs_records(fed, people.get(c.who));
                    assert!(got.is_subset(&own), "records of someone else");
                } else {
                    assert!(
                        !(c.active && linked),
                        "an active consent of the passport's person did not disclose: {:?}",
                        r.reason
                    );
                }
            }
        }
    }
}

async fn ask_nhs(fed: &LocalFederation, passport: &PassportId, consent: &ConsentId) -> Response {
    let client = fed
        .client("probation-yorks", StaffRole::Caseworker)
        .await
        .unwrap();
    let q = client.sign_query(
        passport.clone(),
        Some(consent.clone()),
        Purpose::Resettlement,
        vec![HolderRequest {
            holder: agency("nhs-wy"),
            categories: vec![Category::Health],
        }],
        60,
    );
    let (_, results) = client.assemble(q, None).await.unwrap();
    client.close().await;
    results[0].response.as_ref().unwrap().open().unwrap()
}

#[test]
fn every_disclosure_belongs_to_the_consents_own_person_and_none_follows_a_withdrawal() {
    let rt = tokio::runtime::Runtime::new().unwrap();
    let fed = rt
        .block_on(LocalFederation::start(FedOptions {
            people: 40,
            agencies: AGENCIES.to_vec(),
            consent: ConsentRules {
                recordings_per_caseworker_per_hour: 0,
                recordings_per_node_per_hour: 0,
                ..ConsentRules::default()
            },
            ..FedOptions::default()
        }))
        .unwrap();
    let people = people(&fed);
    let mut runner = TestRunner::new(Config {
        cases: 24,
        failure_persistence: None,
        ..Config::default()
    });
    runner
        .run(&proptest::collection::vec(op(), 1..12), |ops| {
            rt.block_on(run_case(&fed, &people, ops));
            Ok(())
        })
        .unwrap();
    rt.block_on(fed.shutdown());
}
