//! Bounded resources under hostile load from a caller with a valid key: a member of staff who
//! opens every connection allowed and many streams, each announcing the largest frame and then
//! idling (the slow-header attack), or sending large frames slowly. The node's heap grows by a
//! bounded amount, the staff stream allowance and the request-byte caps hold, and an honest
//! passport still completes.
//!
//! Memory is the test process's resident set (the six nodes run in it), sampled every
//! millisecond: the peak above the level before the attack. Tests in this file run one at a time
//! so they do not count each other.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    missing_docs
)]

mod common;

use std::time::{Duration, Instant};

use common::mem::{PeakRss, MIB};
use common::*;
use throughgate_protocol::credential::StaffRole;
use throughgate_protocol::envelope::Envelope;
use throughgate_protocol::messages::{ErrorBody, ErrorCode, Outcome};

/// One test at a time: they share the process's memory.
static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// Memory growth the slow-header attack below may cause, at most. The attack announces
/// 20 × 64 × 4 MiB = 5 GiB; the node holds a few kilobytes per open stream.
const SLOW_HEADER_BOUND: usize = 48 * MIB;

/// Reads a stream's answer and returns its error code, if it is an error.
async fn answer_code(mut r: quinn::RecvStream) -> Option<ErrorCode> {
    let got = r.read_to_end(1 << 16).await.ok()?;
    let e: ErrorBody = Envelope::from_bytes(got.get(4..)?, 1 << 16)
        .ok()?
        .open()
        .ok()?;
    Some(e.code)
}

#[tokio::test]
async fn the_slow_header_attack_keeps_memory_bounded_and_honest_passports_complete() {
    let _one = SERIAL.lock().await;
    let fed = federation().await;
    let (p, _) = granted_plan(&fed).await;
    let prison = fed.node("hmp-leeds").unwrap();
    let attacker = prison.staff[&StaffRole::Caseworker].key.clone();
    let limits = &node_state(&fed, "hmp-leeds").config.limits;
    let (per_key, staff_streams) = (
        limits.max_connections_per_peer as usize,
        limits.max_streams_per_staff_connection as usize,
    );
    let header = u32::try_from(limits.max_frame_bytes).unwrap().to_be_bytes();
    // Warm the honest path (connections, caches) before measuring.
    let (warm, _) = try_assemble_as(&fed, &p).await;
    assert!(warm);

    let meter = PeakRss::start();
    // A caseworker's key opens more connections than allowed, and 64 streams on each, every one
    // announcing the largest frame and then going idle.
    let mut conns = Vec::new();
    let mut endpoints = Vec::new();
    for _ in 0..per_key + 4 {
        let (ep, conn) =
            raw_connection(prison.addr, "hmp-leeds", prison.key.public(), &attacker).await;
        endpoints.push(ep);
        conns.push(conn);
    }
    let mut attack = tokio::task::JoinSet::new();
    for conn in &conns {
        let conn = conn.clone();
        attack.spawn(async move {
            let mut answers = tokio::task::JoinSet::new();
            let mut opened = 0usize;
            for _ in 0..64 {
                let Ok((mut s, r)) = conn.open_bi().await else {
                    break;
                };
                if s.write_all(&header).await.is_err() {
                    break;
                }
                opened += 1;
                answers.spawn(async move {
                    let code = answer_code(r).await;
                    drop(s);
                    code
                });
            }
            let mut timeouts = 0usize;
            while let Some(code) = answers.join_next().await {
                if code.unwrap() == Some(ErrorCode::Timeout) {
                    timeouts += 1;
                }
            }
            (opened, timeouts)
        });
    }
    // Meanwhile a probation caseworker assembles a passport, which asks the prison.
    let t = Instant::now();
    let (complete, _) = try_assemble_as(&fed, &p).await;
    let took = t.elapsed();
    let mut opened = 0;
    let mut timed_out = 0;
    while let Some(r) = attack.join_next().await {
        let (o, t) = r.unwrap();
        opened += o;
        timed_out += t;
    }
    let peak = meter.finish();
    eprintln!(
        "slow-header attack: {opened} idle streams answered, memory peak +{} KiB (bound {} MiB); \
         honest passport in {took:?}",
        peak / 1024,
        SLOW_HEADER_BOUND / MIB
    );
    assert!(complete, "the honest passport did not complete");
    assert!(
        took < Duration::from_secs(3),
        "the honest passport took {took:?}"
    );
    // Every stream the node read was held until its timeout: the attack was in full effect.
    assert!(
        timed_out == per_key * 64,
        "only {timed_out} of {opened} idle streams were answered with a timeout"
    );
    assert!(
        peak < SLOW_HEADER_BOUND,
        "the process's memory grew by {} MiB under the attack (bound {} MiB)",
        peak / MIB,
        SLOW_HEADER_BOUND / MIB
    );
    // The staff allowance: at most that many of one connection's streams are open at a time,
    // so a staff connection cannot have 64 requests waiting at once.
    assert!(staff_streams < 64);
    drop(conns);
    drop(endpoints);
    fed.shutdown().await;
}

#[tokio::test]
async fn a_staff_connection_gets_the_smaller_stream_allowance() {
    let _one = SERIAL.lock().await;
    let fed = federation().await;
    let prison = fed.node("hmp-leeds").unwrap();
    let limits = node_state(&fed, "hmp-leeds").config.limits.clone();
    let staff = prison.staff[&StaffRole::Caseworker].key.clone();
    let (_ep, conn) = raw_connection(prison.addr, "hmp-leeds", prison.key.public(), &staff).await;
    // Streams are opened without waiting on the node's answers; when the allowance is spent,
    // opening another waits for the node to grant more, which it does only as streams end.
    let mut held = Vec::new();
    let waited = loop {
        let open = conn.open_bi();
        tokio::pin!(open);
        match futures_poll_once(&mut open) {
            Some(Ok((mut s, r))) => {
                s.write_all(&[0]).await.unwrap();
                held.push((s, r));
            }
            Some(Err(e)) => panic!("{e}"),
            None => break held.len(),
        }
        assert!(held.len() <= limits.max_streams_per_connection as usize);
    };
    assert_eq!(
        waited, limits.max_streams_per_staff_connection as usize,
        "a staff connection may open the staff allowance of streams at once"
    );
    // A peer node's connection gets the larger allowance.
    let dwp_key = node_state(&fed, "dwp").key.current();
    let (_ep2, peer) =
        raw_connection(prison.addr, "hmp-leeds", prison.key.public(), &dwp_key).await;
    let mut peer_streams = Vec::new();
    // The raise arrives as a frame just after the handshake: open the first streams, then wait
    // for more credit than the staff allowance with a generous deadline (it arrives at once).
    for _ in 0..limits.max_streams_per_staff_connection + 8 {
        let (mut s, r) = tokio::time::timeout(Duration::from_secs(5), peer.open_bi())
            .await
            .expect("a peer node's connection is limited to the staff allowance")
            .unwrap();
        s.write_all(&[0]).await.unwrap();
        peer_streams.push((s, r));
    }
    drop(held);
    fed.shutdown().await;
}

#[tokio::test]
async fn large_frames_sent_slowly_are_stopped_at_the_request_byte_caps() {
    let _one = SERIAL.lock().await;
    // Smaller frames and caps than the defaults keep the bytes sent through QUIC (and the test's
    // time) small; the proportions are the defaults'.
    let fed = throughgate_testkit::localfed::LocalFederation::start(
        throughgate_testkit::localfed::FedOptions {
            people: 60,
            limits: throughgate_node::config::Limits {
                request_timeout_ms: 1500,
                max_frame_bytes: MIB,
                max_request_bytes_per_connection: 2 * MIB,
                max_request_bytes_per_key: 8 * MIB,
                max_request_bytes_per_node: 64 * MIB,
                ..Default::default()
            },
            ..Default::default()
        },
    )
    .await
    .unwrap();
    let prison = fed.node("hmp-leeds").unwrap();
    let state = node_state(&fed, "hmp-leeds");
    let limits = state.config.limits.clone();
    let attacker = prison.staff[&StaffRole::Caseworker].key.clone();
    let header = u32::try_from(limits.max_frame_bytes).unwrap().to_be_bytes();
    let body = std::sync::Arc::new(vec![0u8; limits.max_frame_bytes - 1]);
    let meter = PeakRss::start();
    // Four connections, 16 streams each, each sending all but the last byte of the largest
    // frame: 64 frames held if nothing stopped them.
    let mut eps = Vec::new();
    let mut attack = tokio::task::JoinSet::new();
    for _ in 0..4 {
        let (ep, conn) =
            raw_connection(prison.addr, "hmp-leeds", prison.key.public(), &attacker).await;
        eps.push(ep);
        for _ in 0..16 {
            let conn = conn.clone();
            let body = body.clone();
            attack.spawn(async move {
                let (mut s, r) = conn.open_bi().await.ok()?;
                s.write_all(&header).await.ok()?;
                // The node stops reading a refused stream; the write then fails.
                let _ = s.write_all(&body).await;
                let code = answer_code(r).await;
                drop(s);
                code
            });
        }
    }
    let mut limited = 0;
    let mut other = Vec::new();
    while let Some(r) = attack.join_next().await {
        match r.unwrap() {
            Some(ErrorCode::RateLimited) => limited += 1,
            c => other.push(c),
        }
    }
    let peak = meter.finish();
    eprintln!(
        "large slow frames: {limited} of 64 refused, memory peak +{} MiB (per-key cap {} MiB)",
        peak / MIB,
        limits.max_request_bytes_per_key / MIB
    );
    // Each connection can hold two almost whole frames at a time.
    assert!(
        limited >= 64 - 4 * (limits.max_request_bytes_per_connection / limits.max_frame_bytes),
        "only {limited} of 64 streams were refused at the caps: {other:?}"
    );
    // The node's request buffers hold at most the key's cap; QUIC adds what it buffers per
    // connection before the node reads it (the receive window, one connection cap), and this
    // process's attacker side its send buffers (quinn's default window, 10 MB a connection).
    let allowed = limits.max_request_bytes_per_key
        + 4 * (limits.max_request_bytes_per_connection + 10 * MIB)
        + 16 * MIB;
    assert!(
        peak < allowed,
        "memory grew by {} MiB (bound {} MiB); unbounded it would be over 256 MiB",
        peak / MIB,
        allowed / MIB
    );
    let m = state.metrics.encode();
    assert!(
        m.contains(r#"kind="request_bytes_per_key""#)
            || m.contains(r#"kind="request_bytes_per_connection""#),
        "cap hits are not in the metrics"
    );
    drop(eps);
    assert_eq!(
        state.budgets.node_held(),
        0,
        "request bytes are given back when streams end"
    );
    // The node still serves its own staff.
    let (p, _) = granted_plan(&fed).await;
    let (complete, _) = try_assemble_as(&fed, &p).await;
    assert!(complete);
    fed.shutdown().await;
}

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

/// Polls a future once: `Some` if it is ready now.
fn futures_poll_once<F: std::future::Future + Unpin>(f: &mut F) -> Option<F::Output> {
    let waker = std::task::Waker::noop();
    let mut cx = std::task::Context::from_waker(waker);
    match std::pin::Pin::new(f).poll(&mut cx) {
        std::task::Poll::Ready(v) => Some(v),
        std::task::Poll::Pending => None,
    }
}
