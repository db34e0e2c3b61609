//! Several node replicas of one agency on one PostgreSQL database, over real QUIC: caseworkers
//! served by either replica at once produce one audit log, and each replica sees what the other
//! recorded.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    missing_docs
)]

mod common;

use std::collections::BTreeMap;
use std::time::Duration;

use common::*;
use throughgate_node::config::Limits;
use throughgate_node::localfed::{FedOptions, LocalFederation};
use throughgate_protocol::credential::StaffRole;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_replicas_of_an_agency_serve_caseworkers_with_one_audit_log() {
    let Some(cluster) = pg::cluster("two_replicas_of_an_agency_serve_caseworkers") else {
        return;
    };
    let url = cluster.create_database("probation").unwrap();
    let mut fed = LocalFederation::start(FedOptions {
        people: 60,
        limits: Limits {
            request_timeout_ms: 5000,
            ..Limits::default()
        },
        postgres: BTreeMap::from([("probation-yorks".to_owned(), url)]),
        ..FedOptions::default()
    })
    .await
    .unwrap();
    let (plan, _) = granted_plan(&fed).await;
    let replica = fed.start_replica("probation-yorks").await.unwrap();
    let second = replica.local_addr().unwrap();
    assert_ne!(second, fed.node("probation-yorks").unwrap().addr);

    // Caseworkers on both replicas assemble passports at the same time.
    let mut clients = Vec::new();
    for at in [None, Some(second), None, Some(second)] {
        clients.push(match at {
            None => fed
                .client("probation-yorks", StaffRole::Caseworker)
                .await
                .unwrap(),
            Some(addr) => fed
                .client_at("probation-yorks", StaffRole::Caseworker, addr)
                .await
                .unwrap(),
        });
    }
    let runs = clients.iter().map(|c| async {
        for _ in 0..2 {
            let (_, v) =
                tokio::time::timeout(Duration::from_secs(60), assemble(c, &plan.passport_id))
                    .await
                    .expect("assembled within the deadline");
            assert!(v.all_valid());
        }
    });
    futures::future::join_all(runs).await;
    for c in clients {
        c.close().await;
    }

    // One log: the DPO of each replica in turn verifies it. Each verification first logs the
    // DPO's access, so the second replica's log is the first's plus its own access entry.
    let mut sizes = Vec::new();
    for at in [fed.node("probation-yorks").unwrap().addr, second] {
        let dpo = fed
            .client_at("probation-yorks", StaffRole::Dpo, at)
            .await
            .unwrap();
        let v = dpo.audit_verify().await.unwrap();
        assert!(v.ok, "{v:?}");
        sizes.push(v.entries);
        dpo.close().await;
    }
    assert_eq!(sizes[1], sizes[0] + 1, "both replicas see one log");
    // Eight passports each logged their queries: the log holds at least those entries.
    assert!(sizes[0] >= 8, "{sizes:?}");
    replica.shutdown().await;
    fed.stop("probation-yorks").await;
    fed.shutdown().await;
    drop(cluster);
}
