//! A flood of new connections from many keys and addresses against one node: the node-wide
//! connection cap holds, memory stays bounded and an honest passport completes. In a test binary
//! of its own, so that the memory it measures is not shared with other attack tests.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    missing_docs
)]

mod common;

use std::sync::Arc;
use std::time::{Duration, Instant};

use common::mem::{PeakRss, MIB};
use common::*;
use throughgate_protocol::credential::StaffRole;
use throughgate_protocol::messages::Outcome;

/// Memory growth the flood may cause, at most (the flooding clients run in this process too).
const FLOOD_BOUND: usize = 48 * MIB;

/// Reads a stream's answer and returns its error code, if it is an error.
/// Assembles `p`'s passport as probation's caseworker; true if every holder disclosed.
async fn try_assemble_as(
    fed: &throughgate_testkit::localfed::LocalFederation,
    p: &throughgate_node::client::ConsentPlan,
) -> (bool, Duration) {
    let cw = fed
        .client("probation-yorks", StaffRole::Caseworker)
        .await
        .unwrap();
    let t = Instant::now();
    let (_, v) = assemble(&cw, &p.passport_id).await;
    let took = t.elapsed();
    cw.close().await;
    let all = v.all_valid()
        && v.results.iter().all(|r| {
            r.response
                .as_ref()
                .is_some_and(|x| x.outcome == Outcome::Disclosed)
        });
    (all, took)
}

/// Connects to `server` as `key`, from a fresh address (an endpoint of its own); `None` if the
/// handshake fails or is refused.
async fn try_connect(
    server: std::net::SocketAddr,
    server_key: throughgate_protocol::keys::PublicKey,
    key: &throughgate_protocol::keys::SecretKey,
) -> Option<(quinn::Endpoint, quinn::Connection)> {
    use throughgate_node::tls::{client_config, PinnedServer, TlsIdentity};
    let identity = TlsIdentity::new(key, "flood").unwrap();
    let policy = Arc::new(PinnedServer {
        agency: "hmp-leeds".into(),
        keys: vec![server_key],
    });
    let cfg = client_config(
        &identity,
        policy,
        &throughgate_node::config::Limits::default(),
    )
    .unwrap();
    let mut ep = quinn::Endpoint::client("127.0.0.1:0".parse().unwrap()).unwrap();
    ep.set_default_client_config(cfg);
    let conn = ep.connect(server, "hmp-leeds").ok()?.await.ok()?;
    Some((ep, conn))
}

/// A flood of new connections from many keys and addresses: eight caseworker keys each open
/// every connection allowed per key (each from its own address, each with streams announcing
/// the largest frame), and strangers' keys open more. The node holds no more connections than
/// `max_connections`, its memory stays bounded, and an honest passport (whose requester's
/// connection the flood cannot take) completes.
#[tokio::test]
async fn a_flood_of_connections_from_many_keys_is_capped_node_wide_and_honest_passports_complete() {
    use throughgate_protocol::ids::PersonId;
    use throughgate_protocol::keys::SecretKey;
    use throughgate_protocol::messages::ClientOp;
    const CAP: u32 = 24;
    let fed = throughgate_testkit::localfed::LocalFederation::start(
        throughgate_testkit::localfed::FedOptions {
            people: 60,
            limits: throughgate_node::config::Limits {
                request_timeout_ms: 1500,
                max_connections: CAP,
                ..throughgate_node::config::Limits::default()
            },
            ..throughgate_testkit::localfed::FedOptions::default()
        },
    )
    .await
    .unwrap();
    let (p, _) = granted_plan(&fed).await;
    let prison = fed.node("hmp-leeds").unwrap();
    let state = node_state(&fed, "hmp-leeds");
    let per_key = state.config.limits.max_connections_per_peer as usize;
    let header = u32::try_from(state.config.limits.max_frame_bytes)
        .unwrap()
        .to_be_bytes();
    let op = fed.client("hmp-leeds", StaffRole::Operator).await.unwrap();
    let mut keys = Vec::new();
    for i in 0..8 {
        let k = SecretKey::generate();
        op.call(ClientOp::AddStaff {
            person_id: PersonId::new(format!("flood-{i}")).unwrap(),
            display_name: "Flood".into(),
            roles: vec![StaffRole::Caseworker],
            public_key: k.public(),
            valid_days: 1,
        })
        .await
        .unwrap();
        keys.push(k);
    }
    op.close().await;
    let (warm, _) = try_assemble_as(&fed, &p).await;
    assert!(warm);

    let meter = PeakRss::start();
    let mut flood = tokio::task::JoinSet::new();
    let strangers: Vec<SecretKey> = (0..32).map(|_| SecretKey::generate()).collect();
    for k in keys
        .iter()
        .flat_map(|k| std::iter::repeat_n(k, per_key))
        .chain(&strangers)
    {
        let (addr, node_key, k) = (prison.addr, prison.key.public(), k.clone());
        flood.spawn(async move {
            let (ep, conn) = try_connect(addr, node_key, &k).await?;
            let mut streams = Vec::new();
            for _ in 0..4 {
                let Ok((mut s, r)) = conn.open_bi().await else {
                    break;
                };
                if s.write_all(&header).await.is_err() {
                    break;
                }
                streams.push((s, r));
            }
            Some((ep, conn, streams))
        });
    }
    let mut held = Vec::new();
    while let Some(r) = flood.join_next().await {
        held.extend(r.unwrap());
    }
    let counted = state.connections.total();
    // Meanwhile a probation caseworker assembles a passport, which asks the prison.
    let (complete, took) = try_assemble_as(&fed, &p).await;
    let open = held
        .iter()
        .filter(|(_, c, _)| c.close_reason().is_none())
        .count();
    let peak = meter.finish();
    eprintln!(
        "connection flood: {} attempts, {} connected from the client's side, {counted} \
         connections counted (cap {CAP}), {open} still open; memory peak +{} KiB; honest passport in {took:?}",
        keys.len() * per_key + strangers.len(),
        held.len(),
        peak / 1024
    );
    assert!(
        counted <= CAP,
        "{counted} connections counted, over the cap of {CAP}"
    );
    assert!(
        keys.len() * per_key > CAP as usize,
        "the flood is larger than the cap"
    );
    assert!(complete, "the honest passport did not complete");
    assert!(
        peak < FLOOD_BOUND,
        "the process's memory grew by {} MiB under the flood (bound {} MiB)",
        peak / MIB,
        FLOOD_BOUND / MIB
    );
    // Close the flood's connections and let its endpoints drain, so nothing of it outlives
    // this test into the next one's memory measurement.
    for (ep, conn, streams) in held {
        drop(streams);
        conn.close(0u32.into(), b"done");
        ep.wait_idle().await;
    }
    fed.shutdown().await;
}
