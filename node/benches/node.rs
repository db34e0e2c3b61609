//! Micro-benchmarks of the node: record lookup by subject in a sled store holding 10^4 and 10^6
//! records, audit-log appends with durable group commit (1, 16 and 256 concurrent appenders,
//! each append waiting for its receipt, i.e. for the fsync), and verification of a 10^5-entry
//! audit log. Each store or log is built only if its benchmark is selected (e.g. `-- audit`).
//!
//! Run with `cargo bench -p throughgate-node`; loading 10^6 records takes a little while.
//! See docs/performance.md.
#![allow(
    missing_docs,
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing
)]

use std::sync::Arc;

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use throughgate_node::audit::verify_log;
use throughgate_node::db::Db;
use throughgate_node::node::NodeState;
use throughgate_node::store::SledStore;
use throughgate_protocol::audit::AuditEvent;
use throughgate_protocol::category::Purpose;
use throughgate_protocol::ids::{AgencyId, ConsentId, PassportId, PersonId, QueryId};
use throughgate_protocol::keys::PublicKey;
use throughgate_protocol::time::Date;
use throughgate_testkit::agencies::demo_agency;
use throughgate_testkit::localfed::{FedOptions, LocalFederation};
use throughgate_testkit::synth::{generate_population, person_records, SynthConfig};

/// A sled store in a temporary folder with about `n` prison records (five or so per person);
/// returns it with the subjects it holds.
fn store_with(n: usize) -> (tempfile::TempDir, Db, Vec<String>) {
    let dir = tempfile::tempdir().unwrap();
    let db = Db::new(Arc::new(SledStore::open(dir.path()).unwrap()));
    let prison = demo_agency("hmp-leeds").unwrap();
    let synth = SynthConfig::new(2026, n / 5 + 1, Date::from_ymd(2026, 11, 26).unwrap());
    let population = generate_population(&synth);
    let mut subjects = Vec::new();
    let mut batch = Vec::new();
    let mut total = 0;
    for p in &population.people {
        let rs = person_records(prison, p, &synth);
        if let Some(r) = rs.first() {
            subjects.push(r.subject.clone());
        }
        batch.extend(rs);
        if batch.len() >= 10_000 {
            total += batch.len();
            db.put_records(&batch).unwrap();
            batch.clear();
        }
        if total >= n {
            break;
        }
    }
    if !batch.is_empty() {
        db.put_records(&batch).unwrap();
    }
    (dir, db, subjects)
}

fn lookup(c: &mut Criterion) {
    let mut g = c.benchmark_group("record lookup by subject");
    g.sample_size(50);
    for n in [10_000usize, 1_000_000] {
        // Built on first use, so that a filter leaving this benchmark out does not load it.
        let mut store: Option<(tempfile::TempDir, Db, Vec<String>)> = None;
        let mut i = 0usize;
        g.bench_with_input(BenchmarkId::from_parameter(n), &n, |b, _| {
            let (_dir, db, subjects) = store.get_or_insert_with(|| store_with(n));
            b.iter(|| {
                i = (i + 7919) % subjects.len();
                let rs = db.records_of(&subjects[i], 10_000).unwrap();
                assert!(!rs.is_empty());
                rs
            })
        });
    }
    g.finish();
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap()
}

/// A one-node federation (a probation service, no people) and that node's state.
fn probation_node(rt: &tokio::runtime::Runtime) -> (LocalFederation, Arc<NodeState>) {
    let fed = rt
        .block_on(LocalFederation::start(FedOptions {
            people: 0,
            agencies: vec!["probation-yorks"],
            ..FedOptions::default()
        }))
        .unwrap();
    let state = fed.nodes[0].node.as_ref().unwrap().state().clone();
    (fed, state)
}

/// A query-sent audit event with fresh ids, as a caseworker's query to `holders` logs.
fn query_sent(caseworker: &PersonId, holders: &[AgencyId]) -> AuditEvent {
    AuditEvent::QuerySent {
        query_id: QueryId::random(),
        query_digest: [9; 32],
        passport_id: PassportId::random(),
        caseworker: caseworker.clone(),
        consent_id: Some(ConsentId::random()),
        purpose: Purpose::Resettlement,
        holders: holders.to_vec(),
    }
}

fn audit_append(c: &mut Criterion) {
    let rt = runtime();
    let (fed, state) = probation_node(&rt);
    let holders: Vec<AgencyId> = ["hmp-leeds", "nhs-wy", "leeds-college", "leeds-cc", "dwp"]
        .iter()
        .map(|a| AgencyId::new(*a).unwrap())
        .collect();
    let caseworker = PersonId::new("cw-prb").unwrap();
    let event = || query_sent(&caseworker, &holders);
    let mut g = c.benchmark_group("audit append, durable group commit");
    g.sample_size(20);
    for k in [1usize, 16, 256] {
        g.throughput(Throughput::Elements(k as u64));
        g.bench_with_input(BenchmarkId::new("concurrent appenders", k), &k, |b, &k| {
            b.iter(|| {
                rt.block_on(async {
                    let pending: Vec<_> = (0..k).map(|_| state.audit.submit(event())).collect();
                    for p in pending {
                        p.wait().await.unwrap();
                    }
                })
            })
        });
    }
    g.finish();
    drop(state);
    rt.block_on(fed.shutdown());
}

/// Verifies a log of 10^5 query-sent entries written by the real group-commit writer (callers
/// keeping 4,096 appends in flight, so about 30 checkpoints).
fn audit_verify(c: &mut Criterion) {
    const ENTRIES: usize = 100_000;
    let rt = runtime();
    let mut g = c.benchmark_group("audit verify");
    g.sample_size(10);
    g.throughput(Throughput::Elements(ENTRIES as u64));
    let mut log: Option<(LocalFederation, Db, String, Vec<PublicKey>)> = None;
    g.bench_function(BenchmarkId::new("entries", ENTRIES), |b| {
        let (_fed, db, origin, keys) = log.get_or_insert_with(|| {
            let (fed, state) = probation_node(&rt);
            let caseworker = PersonId::new("cw-prb").unwrap();
            let holders = [AgencyId::new("dwp").unwrap()];
            rt.block_on(async {
                for _ in 0..ENTRIES / 4096 + 1 {
                    let pending: Vec<_> = (0..4096)
                        .map(|_| state.audit.submit(query_sent(&caseworker, &holders)))
                        .collect();
                    for p in pending {
                        p.wait().await.unwrap();
                    }
                }
            });
            let keys = vec![fed.nodes[0].key.public()];
            (fed, state.db.clone(), state.audit.origin().to_owned(), keys)
        });
        b.iter(|| {
            let v = verify_log(db, origin, keys).unwrap();
            assert!(v.ok() && v.entries >= ENTRIES as u64, "{v:?}");
            v
        })
    });
    g.finish();
    if let Some((fed, ..)) = log {
        rt.block_on(fed.shutdown());
    }
}

criterion_group!(benches, lookup, audit_append, audit_verify);
criterion_main!(benches);
