//! QUIC and TLS: ALPN, client and server keys pinned during the handshake, one request per
//! stream, streams independent of each other.

use std::sync::Arc;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{DigitallySignedStruct, SignatureScheme};
use throughgate_protocol::keys::SecretKey;
use throughgate_protocol::messages::{ErrorCode, RefusalReason};

use super::{case, send_query};
use crate::case::{ensure, fail, Area, Case, CaseError, CaseResult, Ctx};
use crate::check;
use crate::craft;
use crate::peer::{ConnectFailure, End, MAX_ANSWER};

/// The transport cases.
pub fn cases() -> Vec<Case> {
    let a = Area::Transport;
    vec![
        case!(a, "transport.server_presents_pinned_key", "handshake succeeds pinning the target's key; the target presents exactly that key and selects ALPN throughgate/2", server_presents_pinned_key),
        case!(a, "transport.alpn_mismatch_refused", "a client offering only another ALPN is refused at the handshake", alpn_mismatch_refused),
        case!(a, "transport.unknown_client_key_refused", "a client key not in the manifest is refused during the handshake (seen at the first stream operation at the latest)", unknown_client_key_refused),
        case!(a, "transport.no_client_certificate_refused", "a client presenting no certificate is refused", no_client_certificate_refused),
        case!(a, "transport.empty_stream_error", "a stream finished with no data gets a signed error malformed", empty_stream_error),
        case!(a, "transport.answer_before_fin", "a complete request frame is answered without waiting for the client to finish its side", answer_before_fin),
        case!(a, "transport.streams_independent", "concurrent streams on one connection get their own answers: garbage -> malformed, query -> response, empty frame -> malformed", streams_independent),
        case!(a, "transport.sequential_requests_one_connection", "20 requests in turn on one connection are all answered; errors do not close the connection", sequential_requests),
        case!(a, "transport.error_answers_signed", "protocol errors are signed envelopes of kind error by the target's node key", error_answers_signed),
    ]
}

/// Sends a valid query on a connection that should have been refused; passes only if the
/// connection fails (at the handshake or on that first stream operation).
async fn expect_refused_connection(
    ctx: &Ctx,
    connected: Result<quinn::Connection, ConnectFailure>,
) -> CaseResult {
    let conn = match connected {
        Err(e) => return Ok(format!("refused at the handshake: {}", e.0)),
        Ok(c) => c,
    };
    let q = craft::unconsented_query(ctx, &ctx.me);
    let env = craft::seal_query(&ctx.me, &q);
    let bytes = craft::frame(&env.to_bytes());
    let attempt = async {
        let (mut send, mut recv) = conn.open_bi().await.map_err(|e| e.to_string())?;
        send.write_all(&bytes).await.map_err(|e| e.to_string())?;
        send.finish().map_err(|e| e.to_string())?;
        recv.read_to_end(MAX_ANSWER)
            .await
            .map_err(|e| e.to_string())
    };
    let out = tokio::time::timeout(ctx.timing.answer, attempt).await;
    conn.close(0u32.into(), b"done");
    match out {
        Ok(Err(e)) => Ok(format!("refused; first stream operation failed: {e}")),
        Ok(Ok(bytes)) => fail(format!(
            "the connection was accepted and answered a query ({} bytes)",
            bytes.len()
        )),
        Err(_) => fail(format!(
            "the connection was neither refused nor answered within {:?}",
            ctx.timing.answer
        )),
    }
}

async fn server_presents_pinned_key(ctx: &Ctx) -> CaseResult {
    let conn = ctx.conn().await?;
    let key = crate::tls::peer_key(&conn.conn);
    ensure(key == Some(ctx.target().key), || {
        format!(
            "the target's certificate carries key {:?}, not the pinned key",
            key.map(|k| k.fingerprint())
        )
    })?;
    let alpn = conn
        .conn
        .handshake_data()
        .and_then(|h| h.downcast::<quinn::crypto::rustls::HandshakeData>().ok())
        .and_then(|h| h.protocol);
    ensure(alpn.as_deref() == Some(throughgate_protocol::ALPN), || {
        format!(
            "negotiated ALPN {:?}",
            alpn.map(|p| String::from_utf8_lossy(&p).into_owned())
        )
    })?;
    conn.close();
    Ok(format!(
        "key {} pinned, ALPN throughgate/2",
        ctx.target().key.fingerprint()
    ))
}

async fn alpn_mismatch_refused(ctx: &Ctx) -> CaseResult {
    let cfg = ctx.peer.client_config(
        &ctx.me.member.key,
        ctx.me.agency().as_str(),
        b"throughgate/999",
    )?;
    let connected = ctx.peer.connect_with(cfg).await;
    expect_refused_connection(ctx, connected).await
}

async fn unknown_client_key_refused(ctx: &Ctx) -> CaseResult {
    let stranger = SecretKey::generate();
    let cfg = ctx
        .peer
        .client_config(&stranger, "stranger", throughgate_protocol::ALPN)?;
    let connected = ctx.peer.connect_with(cfg).await;
    expect_refused_connection(ctx, connected).await
}

/// Accepts the target's certificate whatever it is (this case is about the client side).
#[derive(Debug)]
struct AnyServer(Arc<rustls::crypto::CryptoProvider>);

impl ServerCertVerifier for AnyServer {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        _message: &[u8],
        _cert: &CertificateDer<'_>,
        _dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        Err(rustls::Error::PeerIncompatible(
            rustls::PeerIncompatible::Tls12NotOffered,
        ))
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

fn no_cert_config() -> Result<quinn::ClientConfig, CaseError> {
    let provider = crate::tls::provider();
    let mut tls = rustls::ClientConfig::builder_with_provider(provider.clone())
        .with_protocol_versions(&[&rustls::version::TLS13])
        .map_err(|e| CaseError::Fail(format!("TLS configuration: {e}")))?
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(AnyServer(provider)))
        .with_no_client_auth();
    tls.alpn_protocols = vec![throughgate_protocol::ALPN.to_vec()];
    crate::tls::quic_client(tls)
        .map_err(|e| CaseError::Fail(format!("QUIC TLS configuration: {e}")))
}

async fn no_client_certificate_refused(ctx: &Ctx) -> CaseResult {
    let connected = ctx.peer.connect_with(no_cert_config()?).await;
    expect_refused_connection(ctx, connected).await
}

async fn empty_stream_error(ctx: &Ctx) -> CaseResult {
    let conn = ctx.conn().await?;
    let answer = conn.exchange_raw(&[], End::Finish).await?;
    let e = check::error(&answer, &[ErrorCode::Malformed])?;
    conn.close();
    Ok(format!("error malformed: {}", e.message))
}

async fn answer_before_fin(ctx: &Ctx) -> CaseResult {
    let conn = ctx.conn().await?;
    let q = craft::unconsented_query(ctx, &ctx.me);
    let env = craft::seal_query(&ctx.me, &q);
    let answer = conn
        .exchange_raw(&craft::frame(&env.to_bytes()), End::Open)
        .await?;
    check::refused(ctx.target(), &env, &q, &answer, RefusalReason::NoConsent)?;
    conn.close();
    Ok("answered (no_consent) with the request side still open".into())
}

async fn streams_independent(ctx: &Ctx) -> CaseResult {
    let conn = ctx.conn().await?;
    let q = craft::unconsented_query(ctx, &ctx.me);
    let env = craft::seal_query(&ctx.me, &q);
    let garbage = craft::frame(b"\xff\xfenot cbor at all");
    let query_bytes = craft::frame(&env.to_bytes());
    let empty = [0u8; 4];
    let (a, b, c) = tokio::join!(
        conn.exchange_raw(&garbage, End::Finish),
        conn.exchange_raw(&query_bytes, End::Finish),
        conn.exchange_raw(&empty, End::Finish),
    );
    check::error(&a?, &[ErrorCode::Malformed])?;
    check::refused(ctx.target(), &env, &q, &b?, RefusalReason::NoConsent)?;
    check::error(&c?, &[ErrorCode::Malformed])?;
    ensure(conn.conn.close_reason().is_none(), || {
        "the connection was closed".into()
    })?;
    conn.close();
    Ok("malformed / no_consent / malformed, each on its own stream".into())
}

async fn sequential_requests(ctx: &Ctx) -> CaseResult {
    let conn = ctx.conn().await?;
    for i in 0..20 {
        if i % 5 == 4 {
            let answer = conn
                .exchange_raw(&craft::frame(b"\x00garbage"), End::Finish)
                .await?;
            check::error(&answer, &[ErrorCode::Malformed])?;
            continue;
        }
        let q = craft::unconsented_query(ctx, &ctx.me);
        let (env, answer) = send_query(&conn, &ctx.me, &q).await?;
        check::refused(ctx.target(), &env, &q, &answer, RefusalReason::NoConsent)
            .map_err(|e| CaseError::Fail(format!("request {}: {e}", i + 1)))?;
    }
    ensure(conn.conn.close_reason().is_none(), || {
        "the connection was closed".into()
    })?;
    conn.close();
    Ok("16 queries and 4 malformed frames answered on one connection".into())
}

async fn error_answers_signed(ctx: &Ctx) -> CaseResult {
    let conn = ctx.conn().await?;
    // The suite's peer layer already refuses unsigned answers; check the signature's domain
    // explicitly too: kind error, role node, the target's key, over the body bytes received.
    let answer = conn
        .exchange_raw(&craft::frame(b"\xa1\x61x\x01"), End::Finish)
        .await?;
    let env = answer.envelope();
    ensure(
        env.kind == throughgate_protocol::envelope::MessageKind::Error,
        || format!("answer is a {} message", env.kind),
    )?;
    env.verify_by(
        throughgate_protocol::envelope::SignerRole::Node,
        &ctx.target().key,
    )
    .map_err(|e| CaseError::Fail(format!("error answer signature: {e}")))?;
    ensure(env.sigs.len() == 1, || {
        format!("error answer carries {} signatures", env.sigs.len())
    })?;
    conn.close();
    Ok("error signed by the target's node key, domain error/node".into())
}
