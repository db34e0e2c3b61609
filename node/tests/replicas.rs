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
use throughgate_protocol::credential::StaffRole;
use throughgate_protocol::messages::{AckSubject, Outcome};
use throughgate_testkit::localfed::{FedOptions, LocalFederation};

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
    // Witnesses see one log: both replicas offer their newest checkpoints to every peer, and
    // no peer finds a fork.
    fed.witness_round().await;
    throughgate_node::workers::witness::offer_all(replica.state()).await;
    fed.witness_round().await;
    for n in &fed.nodes {
        let alarms = n
            .node
            .as_ref()
            .unwrap()
            .state()
            .witness_alarms
            .load(std::sync::atomic::Ordering::SeqCst);
        assert_eq!(alarms, 0, "{} saw a fork", n.id);
        if n.id.as_str() != "probation-yorks" {
            // ...and each peer did witness the log, at the size both replicas reached.
            let seen = n
                .node
                .as_ref()
                .unwrap()
                .state()
                .db
                .witnessed(&agency("probation-yorks"))
                .unwrap();
            assert!(
                seen.as_ref().is_some_and(|(size, _)| *size >= sizes[0]),
                "{} witnessed {seen:?}",
                n.id
            );
        }
    }
    replica.shutdown().await;
    fed.stop("probation-yorks").await;
    fed.shutdown().await;
    drop(cluster);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_replicas_deliver_each_queued_consent_once() {
    let Some(cluster) = pg::cluster("two_replicas_deliver_each_queued_consent_once") else {
        return;
    };
    let url = cluster.create_database("prison").unwrap();
    let mut fed = LocalFederation::start(FedOptions {
        people: 40,
        postgres: BTreeMap::from([("hmp-leeds".to_owned(), url)]),
        ..FedOptions::default()
    })
    .await
    .unwrap();
    let replica = fed.start_replica("hmp-leeds").await.unwrap();
    let second = replica.local_addr().unwrap();
    let first = node_state(&fed, "hmp-leeds");

    // Consents recorded through both replicas, whose delivery loops share one outbox.
    let mut recorded = Vec::new();
    for (n, person) in fed.population.people.iter().take(8).enumerate() {
        let client = if n % 2 == 0 {
            fed.client("hmp-leeds", StaffRole::Caseworker).await
        } else {
            fed.client_at("hmp-leeds", StaffRole::Caseworker, second)
                .await
        }
        .unwrap();
        let signed = client.sign_consent(&plan(&fed, person, 3600));
        recorded.push(signed.consent_id.clone());
        client.record_consent(signed).await.unwrap();
        client.close().await;
    }
    let prison = fed
        .client("hmp-leeds", StaffRole::Caseworker)
        .await
        .unwrap();
    let mut attempts_recorded = 0u64;
    for id in &recorded {
        wait_deliveries(&prison, id, AckSubject::Grant).await;
        let (_, _, deliveries) = prison.show_consent(id).await.unwrap();
        assert!(
            deliveries.len() >= 6,
            "every holder and grantee: {deliveries:?}"
        );
        attempts_recorded += deliveries
            .iter()
            .map(|d| u64::from(d.attempts))
            .sum::<u64>();
    }
    prison.close().await;

    // Every attempt either replica made is one the queue recorded: no item went out twice.
    let attempts_made =
        first.metrics.outbox_attempts.get() + replica.state().metrics.outbox_attempts.get();
    assert_eq!(attempts_made, attempts_recorded);
    assert_eq!(first.db.outbox_len().unwrap(), 0);
    replica.shutdown().await;
    fed.stop("hmp-leeds").await;
    fed.shutdown().await;
    drop(cluster);
}

/// A UDP relay in front of `upstream` that forwards both ways until `cut` is set, then drops
/// everything: a replica that died without a word (as under kill -9, no connection close).
async fn cuttable_relay(
    upstream: std::net::SocketAddr,
    cut: std::sync::Arc<std::sync::atomic::AtomicBool>,
) -> std::net::SocketAddr {
    use std::sync::atomic::Ordering;
    use std::sync::Arc;
    use tokio::net::UdpSocket;
    let front = Arc::new(UdpSocket::bind("127.0.0.1:0").await.unwrap());
    let addr = front.local_addr().unwrap();
    tokio::spawn(async move {
        let mut backs = std::collections::HashMap::new();
        let mut buf = vec![0u8; 65_536];
        while let Ok((n, client)) = front.recv_from(&mut buf).await {
            if cut.load(Ordering::SeqCst) {
                continue;
            }
            let back = match backs.get(&client) {
                Some(b) => Arc::clone(b),
                None => {
                    let b = Arc::new(UdpSocket::bind("127.0.0.1:0").await.unwrap());
                    b.connect(upstream).await.unwrap();
                    let (b2, f2, cut2) = (b.clone(), front.clone(), cut.clone());
                    tokio::spawn(async move {
                        let mut buf = vec![0u8; 65_536];
                        while let Ok(n) = b2.recv(&mut buf).await {
                            if !cut2.load(Ordering::SeqCst) {
                                let _ = f2.send_to(&buf[..n], client).await;
                            }
                        }
                    });
                    backs.insert(client, b.clone());
                    b
                }
            };
            let _ = back.send(&buf[..n]).await;
        }
    });
    addr
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn when_the_holder_replica_in_use_dies_silently_passports_complete_through_the_other() {
    let Some(cluster) = pg::cluster("when_the_holder_replica_in_use_dies_silently") else {
        return;
    };
    let url = cluster.create_database("nhs").unwrap();
    let fed = LocalFederation::start(FedOptions {
        people: 40,
        limits: Limits {
            request_timeout_ms: 6000,
            ..Limits::default()
        },
        postgres: BTreeMap::from([("nhs-wy".to_owned(), url)]),
        ..FedOptions::default()
    })
    .await
    .unwrap();
    let (plan, _) = granted_plan(&fed).await;
    let replica = fed.start_replica("nhs-wy").await.unwrap();
    let second = replica.local_addr().unwrap();
    // Replica 1 is reached through a relay that can go silent.
    let cut = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let first = cuttable_relay(fed.node("nhs-wy").unwrap().addr, cut.clone()).await;

    // The manifest lists both replicas of the health agency, under its one key.
    let mut next = next_manifest(&fed.manifest_body, fed.now());
    next.members
        .iter_mut()
        .find(|m| m.id.as_str() == "nhs-wy")
        .unwrap()
        .addresses = vec![first.to_string(), second.to_string()];
    let op = fed
        .client("probation-yorks", StaffRole::Operator)
        .await
        .unwrap();
    op.publish_manifest(sign_manifest(&next, &[&fed.governance]))
        .await
        .unwrap();
    op.close().await;
    wait_manifest_everywhere(&fed, next.version).await;
    let home = node_state(&fed, "probation-yorks");
    home.peers.forget(&agency("nhs-wy"));

    let cw = fed
        .client("probation-yorks", StaffRole::Caseworker)
        .await
        .unwrap();
    let (_, v) = assemble(&cw, &plan.passport_id).await;
    assert!(v.all_valid() && v.complete(), "{:?}", v.results);
    assert_eq!(home.peers.preferred(&agency("nhs-wy")), Some(first));

    // Replica 1 goes silent with the home node's connection to it open: the very next
    // passport is still complete, answered by replica 2 within the deadline.
    cut.store(true, std::sync::atomic::Ordering::SeqCst);
    for _ in 0..2 {
        let (_, v) = assemble(&cw, &plan.passport_id).await;
        assert!(v.all_valid() && v.complete(), "{:?}", v.results);
    }
    assert_eq!(home.peers.preferred(&agency("nhs-wy")), Some(second));
    cw.close().await;
    replica.shutdown().await;
    fed.shutdown().await;
    drop(cluster);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_database_outage_under_load_discloses_nothing_and_the_holder_recovers_by_itself() {
    let Some(cluster) = pg::cluster("a_database_outage_under_load") else {
        return;
    };
    let url = cluster.create_database("nhs").unwrap();
    let fed = LocalFederation::start(FedOptions {
        people: 40,
        limits: Limits {
            request_timeout_ms: 3000,
            ..Limits::default()
        },
        postgres: BTreeMap::from([("nhs-wy".to_owned(), url)]),
        ..FedOptions::default()
    })
    .await
    .unwrap();
    let (plan, _) = granted_plan(&fed).await;
    let nhs = agency("nhs-wy");
    let cw = fed
        .client("probation-yorks", StaffRole::Caseworker)
        .await
        .unwrap();
    let answered = |v: &throughgate_protocol::bundle::VerifiedBundle| {
        v.results
            .iter()
            .find(|r| r.result.agency == nhs)
            .and_then(|r| r.response.as_ref().map(|x| x.outcome))
    };
    let (_, v) = assemble(&cw, &plan.passport_id).await;
    assert!(v.all_valid() && v.complete());
    assert_eq!(answered(&v), Some(Outcome::Disclosed));

    // Caseworkers keep assembling while the database goes away.
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let load = {
        let stop = stop.clone();
        let cws = vec![
            fed.client("probation-yorks", StaffRole::Caseworker)
                .await
                .unwrap(),
            fed.client("leeds-cc", StaffRole::Caseworker).await.unwrap(),
        ];
        let passport = plan.passport_id.clone();
        tokio::spawn(async move {
            let runs = cws.into_iter().map(|c| {
                let (stop, passport) = (stop.clone(), passport.clone());
                async move {
                    let mut seen = Vec::new();
                    while !stop.load(std::sync::atomic::Ordering::SeqCst) {
                        if let Ok((_, v)) = try_assemble(&c, &passport).await {
                            seen.push(v);
                        }
                    }
                    c.close().await;
                    seen
                }
            });
            futures::future::join_all(runs).await.concat()
        })
    };
    let (_, before) = assemble(&cw, &plan.passport_id).await;
    assert!(before.complete());
    cluster.stop_server().unwrap();
    let (_, during) = assemble(&cw, &plan.passport_id).await;
    assert!(during.all_valid());
    assert_eq!(
        answered(&during),
        None,
        "nothing comes from a holder without its log"
    );
    assert!(!during.complete());
    cluster.start_server().unwrap();

    // No operator: the holder answers again once the database is back.
    let mut recovered = false;
    for _ in 0..100 {
        let (_, v) = assemble(&cw, &plan.passport_id).await;
        if v.complete() {
            assert_eq!(answered(&v), Some(Outcome::Disclosed));
            recovered = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(
        recovered,
        "the holder did not recover after the database returned"
    );
    stop.store(true, std::sync::atomic::Ordering::SeqCst);
    let seen = load.await.unwrap();
    // Every passport under load verifies: each disclosure it holds carries its receipt in the
    // holder's log.
    assert!(!seen.is_empty());
    for v in &seen {
        assert!(v.all_valid(), "{:?}", v.results);
    }
    let dpo = fed.client("nhs-wy", StaffRole::Dpo).await.unwrap();
    let verified = dpo.audit_verify().await.unwrap();
    assert!(verified.ok, "{verified:?}");
    dpo.close().await;
    cw.close().await;
    fed.shutdown().await;
    drop(cluster);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_caseworker_whose_home_replica_died_reaches_the_other_listed_in_the_profile() {
    use throughgate_node::client::{HomeClient, Profile};
    let Some(cluster) = pg::cluster("a_caseworker_whose_home_replica_died") else {
        return;
    };
    let url = cluster.create_database("probation").unwrap();
    let fed = LocalFederation::start(FedOptions {
        people: 40,
        limits: Limits {
            request_timeout_ms: 6000,
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
    // Replica 1 is reached through a relay that can go silent (killed without a word).
    let cut = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let first = cuttable_relay(fed.node("probation-yorks").unwrap().addr, cut.clone()).await;

    // A profile naming replica 1, with replica 2 as a further address; and one naming replica
    // 1 only, though the manifest it trusts lists both replicas.
    let tmp = tempfile::tempdir().unwrap();
    let listed = staff_profile(
        &fed,
        "probation-yorks",
        "cw-listed",
        StaffRole::Caseworker,
        tmp.path(),
    )
    .await;
    let listed = Profile {
        node_address: first.to_string(),
        replica_addresses: vec![second.to_string()],
        ..listed
    };
    let mut next = next_manifest(&fed.manifest_body, fed.now());
    next.members
        .iter_mut()
        .find(|m| m.id.as_str() == "probation-yorks")
        .unwrap()
        .addresses = vec![first.to_string(), second.to_string()];
    let op = fed
        .client("probation-yorks", StaffRole::Operator)
        .await
        .unwrap();
    op.publish_manifest(sign_manifest(&next, &[&fed.governance]))
        .await
        .unwrap();
    op.close().await;
    wait_manifest_everywhere(&fed, next.version).await;
    let pinned = staff_profile(
        &fed,
        "probation-yorks",
        "cw-pinned",
        StaffRole::Caseworker,
        tmp.path(),
    )
    .await;
    let pinned = Profile {
        node_address: first.to_string(),
        ..pinned
    };
    // Replica 2 knows both credentials issued through replica 1, whichever replica a race
    // picks.
    for p in [&listed, &pinned] {
        let key = throughgate_node::keyfile::read_secret_key(&p.key_path())
            .unwrap()
            .public();
        wait_for(|| replica.state().trust.principal(&key).is_some()).await;
    }
    // While replica 1 answers, both profiles use it.
    for p in [&listed, &pinned] {
        let c = HomeClient::connect_profile(p).await.unwrap();
        assert_eq!(c.remote_address(), first);
        let (_, v) = assemble(&c, &plan.passport_id).await;
        assert!(v.all_valid() && v.complete(), "{:?}", v.results);
        c.close().await;
    }

    // Replica 1 goes silent: the profile listing replica 2 is served by it, within the
    // connection deadline.
    cut.store(true, std::sync::atomic::Ordering::SeqCst);
    let c = HomeClient::connect_profile(&listed)
        .await
        .expect("connected to the live replica");
    assert_eq!(c.remote_address(), second);
    let (_, v) = assemble(&c, &plan.passport_id).await;
    assert!(v.all_valid() && v.complete(), "{:?}", v.results);
    c.close().await;
    // A profile names the replicas it may use: one naming only the dead replica is not
    // answered by another (an operator asking one replica gets that replica or an error).
    assert!(HomeClient::connect_profile(&pinned).await.is_err());
    replica.shutdown().await;
    fed.shutdown().await;
    drop(cluster);
}

/// Polls `ready` until it holds, for at most 30 s (the state it waits for is polled by the
/// node every second).
async fn wait_for(ready: impl Fn() -> bool) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    while !ready() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "not reached within 30 s"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_credential_issued_or_withdrawn_on_one_replica_is_honoured_by_the_other() {
    use throughgate_node::client::HomeClient;
    let Some(cluster) = pg::cluster("a_credential_issued_or_withdrawn_on_one_replica") else {
        return;
    };
    let url = cluster.create_database("probation").unwrap();
    let fed = LocalFederation::start(FedOptions {
        people: 40,
        postgres: BTreeMap::from([("probation-yorks".to_owned(), url)]),
        ..FedOptions::default()
    })
    .await
    .unwrap();
    let replica = fed.start_replica("probation-yorks").await.unwrap();
    let second = replica.local_addr().unwrap();
    // Issued on replica 1 after replica 2 started: replica 2 accepts it.
    let tmp = tempfile::tempdir().unwrap();
    let profile = staff_profile(
        &fed,
        "probation-yorks",
        "cw-moving",
        StaffRole::Caseworker,
        tmp.path(),
    )
    .await;
    let key = throughgate_node::keyfile::read_secret_key(&profile.key_path())
        .unwrap()
        .public();
    wait_for(|| replica.state().trust.principal(&key).is_some()).await;
    let on_second = throughgate_node::client::Profile {
        node_address: second.to_string(),
        ..profile.clone()
    };
    let c = HomeClient::connect_profile(&on_second).await.unwrap();
    c.status().await.unwrap();

    // Withdrawn on replica 1: replica 2 refuses it, on the connection already open and on a
    // new one.
    let op = fed
        .client("probation-yorks", StaffRole::Operator)
        .await
        .unwrap();
    op.revoke_staff(&profile.person_id).await.unwrap();
    op.close().await;
    wait_for(|| replica.state().trust.principal(&key).is_none()).await;
    assert!(c.status().await.is_err(), "the open connection is refused");
    c.close().await;
    let refused = match HomeClient::connect_profile(&on_second).await {
        Ok(c) => c.status().await.unwrap_err().to_string(),
        Err(e) => e.to_string(),
    };
    assert!(refused.contains("withdrawn"), "{refused}");

    // A manifest adopted through replica 1 is adopted by replica 2.
    let next = next_manifest(&fed.manifest_body, fed.now());
    let op = fed
        .client("probation-yorks", StaffRole::Operator)
        .await
        .unwrap();
    op.publish_manifest(sign_manifest(&next, &[&fed.governance]))
        .await
        .unwrap();
    op.close().await;
    wait_for(|| {
        replica
            .state()
            .trust
            .manifest()
            .is_some_and(|m| m.version == next.version)
    })
    .await;
    replica.shutdown().await;
    fed.shutdown().await;
    drop(cluster);
}
