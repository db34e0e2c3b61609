//! Limits: many concurrent streams and connections are all served; a slow sender gets a timeout
//! while others are served; floods, resets and abrupt disconnects cost the sender only.

use std::time::Instant;

use futures::future::join_all;
use throughgate_protocol::messages::{ErrorCode, RefusalReason};

use super::{case, send_query};
use crate::case::{ensure, fail, Area, Case, CaseError, CaseResult, Ctx};
use crate::check;
use crate::craft;
use crate::peer::{Conn, End};

/// The limits cases.
pub fn cases() -> Vec<Case> {
    let a = Area::Limits;
    vec![
        case!(a, "limits.concurrent_streams", "64 queries in flight at once on one connection are all answered", concurrent_streams),
        case!(a, "limits.streams_beyond_window", "300 queries at once on one connection, more than the 256 concurrent streams a node allows by default, are all answered: streams past the limit wait for credit, none is refused or reset, and the connection stays open", streams_beyond_window),
        case!(a, "limits.concurrent_connections", "16 connections with 4 queries each, all at once, are all answered", concurrent_connections),
        case!(a, "limits.slow_sender_header", "a stream that sends 2 bytes and stalls gets error timeout, while a query on the same connection is answered meanwhile", slow_sender_header),
        case!(a, "limits.slow_sender_body", "a stream that sends a frame header and part of the payload, then stalls, gets error timeout", slow_sender_body),
        case!(a, "limits.malformed_flood", "200 concurrent malformed streams each get error malformed, and the connection then still serves a query", malformed_flood),
        case!(a, "limits.large_garbage_frame", "a 1 MiB frame of garbage gets error malformed", large_garbage_frame),
        case!(a, "limits.oversized_body", "a well-formed, signed query envelope whose body is one byte over the 64 KiB query limit gets error too_large (not malformed), and the connection still serves", oversized_body),
        case!(a, "limits.reset_mid_frame", "a stream reset by the client mid-frame costs nothing: the next query on the connection is answered", reset_mid_frame),
        case!(a, "limits.abrupt_disconnect", "a connection closed mid-frame costs nothing: a new connection is served", abrupt_disconnect),
    ]
}

async fn one_query(ctx: &Ctx, conn: &Conn) -> Result<(), CaseError> {
    let q = craft::unconsented_query(ctx, &ctx.me);
    let (env, answer) = send_query(conn, &ctx.me, &q).await?;
    check::refused(ctx.target(), &env, &q, &answer, RefusalReason::NoConsent)?;
    Ok(())
}

fn first_failure(results: Vec<Result<(), CaseError>>) -> Result<usize, CaseError> {
    let n = results.len();
    let failed: Vec<_> = results.into_iter().filter_map(Result::err).collect();
    match failed.first() {
        None => Ok(n),
        Some(e) => fail(format!("{} of {n} failed; first: {e}", failed.len())),
    }
}

async fn concurrent_streams(ctx: &Ctx) -> CaseResult {
    let conn = ctx.conn().await?;
    let started = Instant::now();
    let n = first_failure(join_all((0..64).map(|_| one_query(ctx, &conn))).await)?;
    conn.close();
    Ok(format!("{n} answered in {:?}", started.elapsed()))
}

async fn streams_beyond_window(ctx: &Ctx) -> CaseResult {
    let conn = ctx.conn().await?;
    let started = Instant::now();
    let n = first_failure(join_all((0..300).map(|_| one_query(ctx, &conn))).await)?;
    ensure(conn.conn.close_reason().is_none(), || {
        "the connection was closed".into()
    })?;
    conn.close();
    Ok(format!("{n} answered in {:?}", started.elapsed()))
}

async fn concurrent_connections(ctx: &Ctx) -> CaseResult {
    let started = Instant::now();
    let per_conn = |_| async {
        let conn = ctx.conn().await?;
        let r = first_failure(join_all((0..4).map(|_| one_query(ctx, &conn))).await);
        conn.close();
        r.map(|_| ())
    };
    first_failure(join_all((0..16).map(per_conn)).await)?;
    Ok(format!(
        "64 answered over 16 connections in {:?}",
        started.elapsed()
    ))
}

/// Writes `bytes` on a new stream and stalls; meanwhile a query on the same connection must be
/// answered; then the stalled stream must get error timeout.
async fn stalled(ctx: &Ctx, bytes: &[u8]) -> CaseResult {
    let conn = ctx.conn().await?;
    let (mut send, mut recv) = conn.open().await?;
    send.write_all(bytes)
        .await
        .map_err(|e| CaseError::Fail(format!("could not write: {e}")))?;
    let started = Instant::now();
    let stall = async {
        let a = conn.read_answer(&mut recv, ctx.timing.slow_sender).await;
        (a, started.elapsed())
    };
    let other = async {
        let r = one_query(ctx, &conn).await;
        (r, started.elapsed())
    };
    let ((answer, waited), (served, served_in)) = tokio::join!(stall, other);
    served.map_err(|e| CaseError::Fail(format!("query while a sender stalled: {e}")))?;
    check::error(&answer?, &[ErrorCode::Timeout])?;
    ensure(served_in < waited, || {
        format!(
            "the other query was answered only after the stalled stream timed out ({served_in:?} vs {waited:?})"
        )
    })?;
    drop(send);
    conn.close();
    Ok(format!(
        "error timeout after {waited:?}; other query served in {served_in:?}"
    ))
}

async fn slow_sender_header(ctx: &Ctx) -> CaseResult {
    stalled(ctx, &[0, 0]).await
}

async fn slow_sender_body(ctx: &Ctx) -> CaseResult {
    let mut bytes = 1000u32.to_be_bytes().to_vec();
    bytes.extend_from_slice(&[0xa3; 10]);
    stalled(ctx, &bytes).await
}

async fn malformed_flood(ctx: &Ctx) -> CaseResult {
    let conn = ctx.conn().await?;
    let started = Instant::now();
    let flood = (0..200u32).map(|i| {
        let conn = &conn;
        async move {
            let payload = match i % 4 {
                0 => craft::frame(b"\xff\xfe garbage"),
                1 => vec![0, 0, 0, 0],
                2 => vec![0, 0, 0, 50, 1, 2, 3],
                _ => craft::frame(&[0x81; 200]),
            };
            let answer = conn.exchange_raw(&payload, End::Finish).await?;
            check::error(&answer, &[ErrorCode::Malformed]).map(|_| ())
        }
    });
    let n = first_failure(join_all(flood).await)?;
    ensure(conn.conn.close_reason().is_none(), || {
        "the flood closed the connection".into()
    })?;
    one_query(ctx, &conn)
        .await
        .map_err(|e| CaseError::Fail(format!("query after the flood: {e}")))?;
    conn.close();
    Ok(format!(
        "{n} malformed answered in {:?}; then a query answered",
        started.elapsed()
    ))
}

async fn large_garbage_frame(ctx: &Ctx) -> CaseResult {
    let conn = ctx.conn().await?;
    let payload = vec![0xffu8; 1024 * 1024];
    let answer = conn
        .exchange_raw(&craft::frame(&payload), End::Finish)
        .await?;
    let e = check::error(&answer, &[ErrorCode::Malformed])?;
    one_query(ctx, &conn).await?;
    conn.close();
    Ok(format!("error {}; connection still serves", e.code))
}

async fn oversized_body(ctx: &Ctx) -> CaseResult {
    use throughgate_protocol::envelope::{Envelope, Message, MessageKind, SignerRole};
    let limit = throughgate_protocol::messages::Query::MAX_BODY;
    let env = Envelope::seal_bytes(
        MessageKind::Query,
        vec![0xa0; limit + 1],
        &[
            (SignerRole::Person, &ctx.me.cw.key),
            (SignerRole::Node, ctx.me.node_key()),
        ],
    );
    let conn = ctx.conn().await?;
    let answer = conn
        .exchange_raw(&craft::frame(&env.to_bytes()), End::Finish)
        .await?;
    let e = check::error(&answer, &[ErrorCode::TooLarge])?;
    one_query(ctx, &conn).await?;
    conn.close();
    Ok(format!("error {}; connection still serves", e.code))
}

async fn reset_mid_frame(ctx: &Ctx) -> CaseResult {
    let conn = ctx.conn().await?;
    let (mut send, recv) = conn.open().await?;
    let q = craft::unconsented_query(ctx, &ctx.me);
    let bytes = craft::frame(&craft::seal_query(&ctx.me, &q).to_bytes());
    let half = bytes.get(..bytes.len() / 2).unwrap_or_default();
    send.write_all(half)
        .await
        .map_err(|e| CaseError::Fail(format!("could not write: {e}")))?;
    let _ = send.reset(7u32.into());
    drop(recv);
    one_query(ctx, &conn).await?;
    ensure(conn.conn.close_reason().is_none(), || {
        "the reset closed the connection".into()
    })?;
    conn.close();
    Ok("reset stream ignored; next query answered".into())
}

async fn abrupt_disconnect(ctx: &Ctx) -> CaseResult {
    let conn = ctx.conn().await?;
    let (mut send, _recv) = conn.open().await?;
    send.write_all(&[0, 0, 1, 0, 0xa3, 0x01])
        .await
        .map_err(|e| CaseError::Fail(format!("could not write: {e}")))?;
    conn.conn.close(42u32.into(), b"gone");
    let conn2 = ctx.conn().await?;
    one_query(ctx, &conn2).await?;
    conn2.close();
    Ok("new connection served after an abrupt close".into())
}
