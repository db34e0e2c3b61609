//! Faults between nodes: a slow holder (answers after the deadline), a lossy and delaying link
//! (an in-test UDP relay), a peer that opens streams and never writes, and a peer that floods.
//! The passport still assembles from the healthy nodes within the deadline, with the others
//! marked, and nodes stay responsive to everyone else.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    missing_docs
)]

mod common;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::*;
use rand::{Rng, SeedableRng};
use throughgate_protocol::credential::StaffRole;
use throughgate_protocol::messages::{HolderStatus, Outcome};
use throughgate_testkit::localfed::LocalFederation;
use tokio::net::UdpSocket;

/// What the relay does to each datagram.
#[derive(Clone, Copy)]
struct Link {
    /// Probability of dropping a datagram (each direction).
    loss: f64,
    /// Delay added to every datagram.
    delay: Duration,
}

/// A UDP relay in front of `upstream`: clients talk to the relay's address; each client gets its
/// own upstream socket so answers find their way back. Counts dropped datagrams.
async fn relay(upstream: SocketAddr, link: Link, seed: u64) -> (SocketAddr, Arc<AtomicU64>) {
    let front = Arc::new(UdpSocket::bind("127.0.0.1:0").await.unwrap());
    let addr = front.local_addr().unwrap();
    let dropped = Arc::new(AtomicU64::new(0));
    let d = dropped.clone();
    tokio::spawn(async move {
        let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
        let mut backs: HashMap<SocketAddr, Arc<UdpSocket>> = HashMap::new();
        let mut buf = vec![0u8; 65_536];
        loop {
            let Ok((n, client)) = front.recv_from(&mut buf).await else {
                return;
            };
            let back = match backs.get(&client) {
                Some(b) => b.clone(),
                None => {
                    let b = Arc::new(UdpSocket::bind("127.0.0.1:0").await.unwrap());
                    b.connect(upstream).await.unwrap();
                    let (b2, f2, d2) = (b.clone(), front.clone(), d.clone());
                    let mut rng2 = rand::rngs::StdRng::seed_from_u64(seed ^ 0x5eed);
                    // Answers from upstream back to this client.
                    tokio::spawn(async move {
                        let mut buf = vec![0u8; 65_536];
                        loop {
                            let Ok(n) = b2.recv(&mut buf).await else {
                                return;
                            };
                            if rng2.gen_bool(link.loss) {
                                d2.fetch_add(1, Ordering::Relaxed);
                                continue;
                            }
                            let pkt = buf[..n].to_vec();
                            let f = f2.clone();
                            tokio::spawn(async move {
                                tokio::time::sleep(link.delay).await;
                                let _ = f.send_to(&pkt, client).await;
                            });
                        }
                    });
                    backs.insert(client, b.clone());
                    b
                }
            };
            if rng.gen_bool(link.loss) {
                d.fetch_add(1, Ordering::Relaxed);
                continue;
            }
            let pkt = buf[..n].to_vec();
            tokio::spawn(async move {
                tokio::time::sleep(link.delay).await;
                let _ = back.send(&pkt).await;
            });
        }
    });
    (addr, dropped)
}

/// Points the manifest's address for `agency` at `addr` (a new version, spread everywhere).
async fn reroute(
    fed: &LocalFederation,
    agency: &str,
    addr: SocketAddr,
    version: &mut throughgate_protocol::manifest::Manifest,
) {
    reroute_all(fed, agency, &[addr], version).await;
}

/// Lists `addrs`, in order, as `agency`'s addresses (a new version, spread everywhere).
async fn reroute_all(
    fed: &LocalFederation,
    agency: &str,
    addrs: &[SocketAddr],
    version: &mut throughgate_protocol::manifest::Manifest,
) {
    let mut next = next_manifest(version, fed.now());
    next.members
        .iter_mut()
        .find(|m| m.id.as_str() == agency)
        .unwrap()
        .addresses = addrs.iter().map(ToString::to_string).collect();
    let env = sign_manifest(&next, &[&fed.governance]);
    let op = fed
        .client("probation-yorks", StaffRole::Operator)
        .await
        .unwrap();
    op.publish_manifest(env).await.unwrap();
    op.close().await;
    wait_manifest_everywhere(fed, next.version).await;
    // Drop pooled connections that still go the old way.
    for n in fed.nodes.iter().filter_map(|n| n.node.as_ref()) {
        n.state().peers.forget(&agency_id(agency));
    }
    *version = next;
}

fn agency_id(a: &str) -> throughgate_protocol::ids::AgencyId {
    agency(a)
}

async fn passport(
    fed: &LocalFederation,
    p: &throughgate_node::client::ConsentPlan,
) -> (throughgate_protocol::bundle::VerifiedBundle, Duration) {
    let cw = fed
        .client("probation-yorks", StaffRole::Caseworker)
        .await
        .unwrap();
    let t = Instant::now();
    let (_, v) = assemble(&cw, &p.passport_id).await;
    let took = t.elapsed();
    cw.close().await;
    (v, took)
}

#[tokio::test]
async fn a_holder_slower_than_the_deadline_is_marked_and_the_rest_answer_in_time() {
    let fed = federation().await;
    let (p, _) = granted_plan(&fed).await;
    let mut m = fed.manifest_body.clone();
    // Every datagram to and from the health node takes 2 s: longer than the 1.5 s deadline.
    let nhs = fed.node("nhs-wy").unwrap().addr;
    let (slow, _) = relay(
        nhs,
        Link {
            loss: 0.0,
            delay: Duration::from_millis(2000),
        },
        1,
    )
    .await;
    reroute(&fed, "nhs-wy", slow, &mut m).await;
    let (v, took) = passport(&fed, &p).await;
    assert!(v.all_valid());
    for r in &v.results {
        if r.result.agency.as_str() == "nhs-wy" {
            assert!(
                matches!(
                    r.result.status,
                    HolderStatus::TimedOut | HolderStatus::Unreachable
                ),
                "{:?}",
                r.result.status
            );
        } else {
            assert_eq!(
                r.response.as_ref().map(|x| x.outcome),
                Some(Outcome::Disclosed),
                "{}",
                r.result.agency
            );
        }
    }
    assert!(
        took < Duration::from_millis(2500),
        "the passport waited {took:?} for the slow holder"
    );
    fed.shutdown().await;
}

#[tokio::test]
async fn a_dead_address_listed_first_is_passed_over_within_the_deadline_and_the_live_one_remembered(
) {
    let fed = federation().await;
    let (p, _) = granted_plan(&fed).await;
    let mut m = fed.manifest_body.clone();
    // A socket that swallows every datagram: a replica that died without a word.
    let dead = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let live = fed.node("nhs-wy").unwrap().addr;
    reroute_all(&fed, "nhs-wy", &[dead.local_addr().unwrap(), live], &mut m).await;
    for _ in 0..2 {
        let (v, _) = passport(&fed, &p).await;
        assert!(v.all_valid() && v.complete(), "{:?}", v.results);
    }
    let home = node_state(&fed, "probation-yorks");
    assert_eq!(home.peers.preferred(&agency("nhs-wy")), Some(live));
    drop(dead);
    fed.shutdown().await;
}

#[tokio::test]
async fn a_lossy_delaying_link_still_delivers_every_answer() {
    let fed = federation().await;
    let (p, _) = granted_plan(&fed).await;
    let mut m = fed.manifest_body.clone();
    // 15% loss each way and 20 ms delay on the link to the council.
    let cc = fed.node("leeds-cc").unwrap().addr;
    let (lossy, dropped) = relay(
        cc,
        Link {
            loss: 0.15,
            delay: Duration::from_millis(20),
        },
        7,
    )
    .await;
    reroute(&fed, "leeds-cc", lossy, &mut m).await;
    let mut answered = 0;
    for _ in 0..5 {
        let (v, _) = passport(&fed, &p).await;
        assert!(v.all_valid());
        let council = v
            .results
            .iter()
            .find(|r| r.result.agency.as_str() == "leeds-cc")
            .unwrap();
        if council
            .response
            .as_ref()
            .is_some_and(|x| x.outcome == Outcome::Disclosed)
        {
            answered += 1;
        }
        for r in v
            .results
            .iter()
            .filter(|r| r.result.agency.as_str() != "leeds-cc")
        {
            assert_eq!(
                r.response.as_ref().map(|x| x.outcome),
                Some(Outcome::Disclosed)
            );
        }
    }
    assert!(
        dropped.load(Ordering::Relaxed) > 0,
        "the relay dropped nothing; the test proves nothing"
    );
    // QUIC retransmits: losses cost time, not answers.
    assert!(
        answered >= 4,
        "only {answered} of 5 passports got the council's answer through a lossy link"
    );
    fed.shutdown().await;
}

#[tokio::test]
async fn a_peer_that_opens_streams_and_never_writes_does_not_stall_the_node() {
    let fed = federation().await;
    let (p, _) = granted_plan(&fed).await;
    // The DWP node's key opens 200 streams to the prison and sends nothing on them.
    let prison = fed.node("hmp-leeds").unwrap();
    let dwp_key = node_state(&fed, "dwp").key.current();
    let (_ep, conn) = raw_connection(prison.addr, "hmp-leeds", prison.key.public(), &dwp_key).await;
    let mut idle = Vec::new();
    for _ in 0..200 {
        match conn.open_bi().await {
            Ok((mut s, r)) => {
                // Opening a stream sends nothing until data is written: write one byte of a
                // frame header and stop there.
                let _ = s.write_all(&[0]).await;
                idle.push((s, r));
            }
            Err(_) => break,
        }
    }
    assert!(idle.len() >= 100, "could open only {} streams", idle.len());
    let (v, took) = passport(&fed, &p).await;
    assert!(v.all_valid());
    assert!(v.results.iter().all(|r| r
        .response
        .as_ref()
        .is_some_and(|x| x.outcome == Outcome::Disclosed)));
    assert!(
        took < Duration::from_millis(1500),
        "slow with stalled streams open: {took:?}"
    );
    // The stalled streams are answered with a timeout error, one frame each, then closed.
    let (_keep_open, mut r) = idle.pop().unwrap();
    let got = tokio::time::timeout(Duration::from_secs(10), r.read_to_end(1 << 16))
        .await
        .unwrap()
        .unwrap();
    let err: throughgate_protocol::messages::ErrorBody =
        throughgate_protocol::envelope::Envelope::from_bytes(&got[4..], 1 << 16)
            .unwrap()
            .open()
            .unwrap();
    assert_eq!(err.code, throughgate_protocol::messages::ErrorCode::Timeout);
    drop(idle);
    fed.shutdown().await;
}

#[tokio::test]
async fn a_flooding_peer_is_rate_limited_and_others_are_served() {
    let limits = throughgate_node::config::Limits {
        request_timeout_ms: 5000,
        witness_interval_secs: 86_400,
        peer_requests_per_sec: 200,
        peer_burst: 400,
        ..Default::default()
    };
    let fed = LocalFederation::start(throughgate_testkit::localfed::FedOptions {
        people: 60,
        limits,
        ..Default::default()
    })
    .await
    .unwrap();
    let (p, _) = granted_plan(&fed).await;
    let prison = fed.node("hmp-leeds").unwrap();
    let dwp_key = node_state(&fed, "dwp").key.current();
    let (_ep, conn) = raw_connection(prison.addr, "hmp-leeds", prison.key.public(), &dwp_key).await;
    // 5,000 small garbage requests, 64 in flight, in the background.
    let flood = {
        let conn = conn.clone();
        tokio::spawn(async move {
            let mut limited = 0u32;
            let mut sent = 0u32;
            let garbage = throughgate_protocol::frame::encode(b"\xa0");
            let mut tasks = tokio::task::JoinSet::new();
            for _ in 0..5_000 {
                let c = conn.clone();
                let g = garbage.clone();
                tasks.spawn(async move {
                    let (mut s, mut r) = c.open_bi().await.ok()?;
                    s.write_all(&g).await.ok()?;
                    s.finish().ok()?;
                    let got = r.read_to_end(1 << 16).await.ok()?;
                    let e: throughgate_protocol::messages::ErrorBody =
                        throughgate_protocol::envelope::Envelope::from_bytes(
                            got.get(4..)?,
                            1 << 16,
                        )
                        .ok()?
                        .open()
                        .ok()?;
                    Some(e.code)
                });
                sent += 1;
                while tasks.len() > 64 {
                    if let Some(Ok(Some(throughgate_protocol::messages::ErrorCode::RateLimited))) =
                        tasks.join_next().await
                    {
                        limited += 1;
                    }
                }
            }
            while let Some(r) = tasks.join_next().await {
                if let Ok(Some(throughgate_protocol::messages::ErrorCode::RateLimited)) = r {
                    limited += 1;
                }
            }
            (sent, limited)
        })
    };
    // Meanwhile probation's caseworker assembles passports.
    let mut served = 0;
    for _ in 0..5 {
        let (v, _) = passport(&fed, &p).await;
        assert!(v.all_valid());
        if v.results.iter().all(|r| {
            r.response
                .as_ref()
                .is_some_and(|x| x.outcome == Outcome::Disclosed)
        }) {
            served += 1;
        }
    }
    let (sent, limited) = flood.await.unwrap();
    assert_eq!(
        served, 5,
        "the prison stopped serving probation during the flood"
    );
    assert!(limited > 0, "{sent} flood requests and none rate limited");
    let m = prison.node.as_ref().unwrap().state().metrics.encode();
    assert!(
        m.contains(r#"throughgate_limit_hits_total{kind="peer_rate"}"#),
        "limit hits are not in the metrics"
    );
    fed.shutdown().await;
}

/// Whether the node at the other end of `conn` still hears it: one malformed frame on a fresh
/// stream, and any outcome (an error answer, a reset stream, a closed connection) within
/// `within` counts as heard.
async fn node_hears(conn: &quinn::Connection, within: Duration) -> bool {
    tokio::time::timeout(within, async {
        if let Ok((mut send, mut recv)) = conn.open_bi().await {
            let _ = send.write_all(&[0, 0, 0, 3, 0xff, 0xff, 0xff]).await;
            let _ = send.finish();
            let _ = recv.read_to_end(1 << 20).await;
        }
    })
    .await
    .is_ok()
}

/// A peer's connection to probation, moved to a new client address mid-connection (as a NAT
/// rebinding, or a load balancer would see a different flow), with `migration` as set.
async fn moved_connection_is_heard(migration: bool) -> bool {
    let fed = LocalFederation::start(throughgate_testkit::localfed::FedOptions {
        people: 10,
        agencies: vec!["probation-yorks", "nhs-wy"],
        quic: throughgate_node::config::Quic {
            migration,
            replica: Some("a".into()),
        },
        ..Default::default()
    })
    .await
    .unwrap();
    let home = fed.node("probation-yorks").unwrap();
    let peer = fed.node("nhs-wy").unwrap();
    let (ep, conn) =
        raw_connection(home.addr, "probation-yorks", home.key.public(), &peer.key).await;
    assert!(
        node_hears(&conn, Duration::from_secs(5)).await,
        "heard before moving"
    );
    ep.rebind(std::net::UdpSocket::bind("127.0.0.1:0").unwrap())
        .unwrap();
    let heard = node_hears(&conn, Duration::from_secs(2)).await;
    conn.close(0u32.into(), b"done");
    fed.shutdown().await;
    heard
}

#[tokio::test]
async fn a_connection_that_moves_address_is_served_only_while_migration_is_on() {
    assert!(
        moved_connection_is_heard(true).await,
        "migration on (the default)"
    );
    assert!(
        !moved_connection_is_heard(false).await,
        "migration off: a moved connection reaches no replica that holds it"
    );
}
