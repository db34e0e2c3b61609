//! The suite's connections to the target: QUIC with TLS 1.3, the suite's (or a deliberately
//! wrong) certificate, the target's key pinned; one request per bidirectional stream, answers
//! read as signed envelopes and checked against the target's key.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use throughgate_protocol::envelope::{Envelope, Message, MessageKind, SignerRole};
use throughgate_protocol::ids::AgencyId;
use throughgate_protocol::keys::{PublicKey, SecretKey};
use throughgate_protocol::messages::{Ack, ErrorBody, ErrorCode, Response};

use crate::case::CaseError;
use crate::tls::{client_config, CertifiedKey, PinnedTarget};
use crate::wire::{read_envelope, write_envelope, WireError};

/// Largest answer frame the suite reads (responses may carry thousands of records).
pub const MAX_ANSWER: usize = 16 * 1024 * 1024;

/// The node under test.
#[derive(Debug, Clone)]
pub struct Target {
    /// Its UDP address.
    pub addr: SocketAddr,
    /// Its agency id (the TLS server name).
    pub agency: AgencyId,
    /// Its node key, as its manifest entry lists it.
    pub key: PublicKey,
}

/// One QUIC client endpoint from which every connection of a run is made.
#[derive(Debug)]
pub struct Peer {
    endpoint: quinn::Endpoint,
    target: Target,
    answer_timeout: Duration,
}

/// What the target answered on one stream, its signature by the target key checked.
#[derive(Debug, Clone)]
pub enum Answer {
    /// A signed `response`.
    Response(Envelope, Box<Response>),
    /// A signed `ack`.
    Ack(Envelope, Ack),
    /// A signed `error`.
    Error(Envelope, ErrorBody),
}

impl Answer {
    /// A short description, for failure messages.
    pub fn describe(&self) -> String {
        match self {
            Answer::Response(_, r) => match r.reason {
                Some(reason) => format!("response {} ({reason})", r.outcome),
                None => format!("response {} ({} records)", r.outcome, r.records.len()),
            },
            Answer::Ack(_, a) => match &a.reason {
                Some(why) => format!("ack {} ({why})", a.outcome.as_str()),
                None => format!("ack {}", a.outcome.as_str()),
            },
            Answer::Error(_, e) => format!("error {} ({})", e.code, e.message),
        }
    }

    /// The signed envelope.
    pub fn envelope(&self) -> &Envelope {
        match self {
            Answer::Response(e, _) | Answer::Ack(e, _) | Answer::Error(e, _) => e,
        }
    }
}

fn open<M: Message>(env: &Envelope) -> Result<M, CaseError> {
    env.open::<M>().map_err(|e| {
        CaseError::Fail(format!(
            "the target's {} answer does not decode: {e}",
            env.kind
        ))
    })
}

/// Checks an answer envelope is signed by the target key (role node) and decodes it.
pub fn classify(target: &Target, env: Envelope) -> Result<Answer, CaseError> {
    if let Err(e) = env.verify_by(SignerRole::Node, &target.key) {
        return Err(CaseError::Fail(format!(
            "the target's {} answer is not signed by its node key: {e}",
            env.kind
        )));
    }
    match env.kind {
        MessageKind::Response => {
            let r: Response = open(&env)?;
            Ok(Answer::Response(env, Box::new(r)))
        }
        MessageKind::Ack => {
            let a: Ack = open(&env)?;
            Ok(Answer::Ack(env, a))
        }
        MessageKind::Error => {
            let e: ErrorBody = open(&env)?;
            Ok(Answer::Error(env, e))
        }
        other => Err(CaseError::Fail(format!(
            "the target answered with a {other} message, expected response, ack or error"
        ))),
    }
}

/// Why a connection attempt failed (some cases expect it to).
#[derive(Debug, Clone)]
pub struct ConnectFailure(pub String);

impl Peer {
    /// A client endpoint for talking to `target`.
    pub fn new(target: Target, answer_timeout: Duration) -> Result<Peer, String> {
        let bind: SocketAddr = if target.addr.is_ipv6() {
            SocketAddr::from(([0u16; 8], 0))
        } else {
            SocketAddr::from(([0u8; 4], 0))
        };
        let endpoint = quinn::Endpoint::client(bind)
            .map_err(|e| format!("could not open a UDP socket: {e}"))?;
        Ok(Peer {
            endpoint,
            target,
            answer_timeout,
        })
    }

    /// The target.
    pub fn target(&self) -> &Target {
        &self.target
    }

    /// How long the suite waits for an answer.
    pub fn answer_timeout(&self) -> Duration {
        self.answer_timeout
    }

    /// A client configuration presenting `key` (certificate naming `name`) with `alpn`,
    /// pinning the target's key.
    pub fn client_config(
        &self,
        key: &SecretKey,
        name: &str,
        alpn: &[u8],
    ) -> Result<quinn::ClientConfig, CaseError> {
        let identity = CertifiedKey::new(key, name)
            .map_err(|e| CaseError::Fail(format!("suite certificate: {e}")))?;
        let pin = Arc::new(PinnedTarget::new(
            self.target.agency.as_str(),
            self.target.key,
        ));
        client_config(&identity, pin, alpn)
            .map_err(|e| CaseError::Fail(format!("suite TLS configuration: {e}")))
    }

    /// Connects with a prepared client configuration.
    pub async fn connect_with(
        &self,
        cfg: quinn::ClientConfig,
    ) -> Result<quinn::Connection, ConnectFailure> {
        let connecting = self
            .endpoint
            .connect_with(cfg, self.target.addr, self.target.agency.as_str())
            .map_err(|e| ConnectFailure(format!("could not start connecting: {e}")))?;
        match tokio::time::timeout(self.answer_timeout, connecting).await {
            Ok(Ok(c)) => Ok(c),
            Ok(Err(e)) => Err(ConnectFailure(e.to_string())),
            Err(_) => Err(ConnectFailure(format!(
                "handshake did not complete within {:?}",
                self.answer_timeout
            ))),
        }
    }

    /// Connects as the member holding `key` (agency `name`), with the protocol's ALPN.
    pub async fn connect(&self, key: &SecretKey, name: &str) -> Result<Conn, CaseError> {
        let cfg = self.client_config(key, name, throughgate_protocol::ALPN)?;
        let conn = self.connect_with(cfg).await.map_err(|e| {
            CaseError::Fail(format!(
                "could not connect to the target as {name}: {}",
                e.0
            ))
        })?;
        Ok(Conn {
            conn,
            target: self.target.clone(),
            answer_timeout: self.answer_timeout,
        })
    }

    /// Closes the endpoint.
    pub async fn close(&self) {
        self.endpoint.close(0u32.into(), b"done");
        let _ = tokio::time::timeout(Duration::from_secs(1), self.endpoint.wait_idle()).await;
    }
}

/// An established connection to the target, as one member agency.
#[derive(Debug, Clone)]
pub struct Conn {
    /// The QUIC connection.
    pub conn: quinn::Connection,
    target: Target,
    answer_timeout: Duration,
}

/// How to end the request side of a stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum End {
    /// Finish the send side after writing.
    Finish,
    /// Leave the send side open.
    Open,
}

impl Conn {
    /// The target.
    pub fn target(&self) -> &Target {
        &self.target
    }

    /// Opens a stream, writes `env` as one frame, finishes, and reads the signed answer.
    pub async fn request(&self, env: &Envelope) -> Result<Answer, CaseError> {
        let (mut send, mut recv) = self.open().await?;
        write_envelope(&mut send, env)
            .await
            .map_err(|e| CaseError::Fail(format!("could not send the request: {e}")))?;
        let _ = send.finish();
        self.read_answer(&mut recv, self.answer_timeout).await
    }

    /// Opens a stream, writes `env` as one frame, finishes, and reads the answer envelope of
    /// any kind, checking only that the target's node key signed it.
    pub async fn request_raw(&self, env: &Envelope) -> Result<Envelope, CaseError> {
        let (mut send, mut recv) = self.open().await?;
        write_envelope(&mut send, env)
            .await
            .map_err(|e| CaseError::Fail(format!("could not send the request: {e}")))?;
        let _ = send.finish();
        let answer = match read_envelope(&mut recv, MAX_ANSWER, self.answer_timeout).await {
            Ok(Some(env)) => env,
            Ok(None) => {
                return Err(CaseError::Fail(
                    "the target closed the stream without answering".into(),
                ))
            }
            Err(WireError::Timeout(t)) => {
                return Err(CaseError::Fail(format!(
                    "no answer from the target within {t:?}"
                )))
            }
            Err(e) => {
                return Err(CaseError::Fail(format!(
                    "the target's answer is not a valid frame: {e}"
                )))
            }
        };
        if let Err(e) = answer.verify_by(SignerRole::Node, &self.target.key) {
            return Err(CaseError::Fail(format!(
                "the target's {} answer is not signed by its node key: {e}",
                answer.kind
            )));
        }
        Ok(answer)
    }

    /// Sends `env` and expects an answer of kind `M` or an `error`: `Ok(Ok(body))` or
    /// `Ok(Err(error))`. An `unsupported_kind` error makes the case unsupported; any other kind
    /// of answer fails it.
    pub async fn request_typed<M: Message>(
        &self,
        env: &Envelope,
    ) -> Result<Result<(Envelope, M), ErrorBody>, CaseError> {
        let answer = self.request_raw(env).await?;
        if answer.kind == MessageKind::Error {
            let e: ErrorBody = open(&answer)?;
            if e.code == ErrorCode::UnsupportedKind {
                return Err(CaseError::Unsupported(format!(
                    "the target does not accept {} messages: {}",
                    env.kind, e.message
                )));
            }
            return Ok(Err(e));
        }
        if answer.kind != M::KIND {
            return Err(CaseError::Fail(format!(
                "the target answered a {} with a {} message, expected {} or error",
                env.kind,
                answer.kind,
                M::KIND
            )));
        }
        let body: M = open(&answer)?;
        Ok(Ok((answer, body)))
    }

    /// Like [`Conn::request_typed`], failing the case on an `error` answer.
    pub async fn request_expect<M: Message>(
        &self,
        env: &Envelope,
    ) -> Result<(Envelope, M), CaseError> {
        match self.request_typed::<M>(env).await? {
            Ok(ok) => Ok(ok),
            Err(e) => Err(CaseError::Fail(format!(
                "expected a {} answer to the {}, got error {} ({})",
                M::KIND,
                env.kind,
                e.code,
                e.message
            ))),
        }
    }

    /// Opens a stream, writes raw `bytes` (frames or not), ends the send side as `end` says,
    /// and reads the signed answer. Write errors are ignored: the target may stop reading
    /// early, and its answer is what counts.
    pub async fn exchange_raw(&self, bytes: &[u8], end: End) -> Result<Answer, CaseError> {
        let (mut send, mut recv) = self.open().await?;
        if !bytes.is_empty() {
            let _ = send.write_all(bytes).await;
        }
        if end == End::Finish {
            let _ = send.finish();
        }
        let answer = self.read_answer(&mut recv, self.answer_timeout).await;
        drop(send);
        answer
    }

    /// Opens a bidirectional stream.
    pub async fn open(&self) -> Result<(quinn::SendStream, quinn::RecvStream), CaseError> {
        self.conn
            .open_bi()
            .await
            .map_err(|e| CaseError::Fail(format!("could not open a stream: {e}")))
    }

    /// Reads one signed answer within `timeout`.
    pub async fn read_answer(
        &self,
        recv: &mut quinn::RecvStream,
        timeout: Duration,
    ) -> Result<Answer, CaseError> {
        match read_envelope(recv, MAX_ANSWER, timeout).await {
            Ok(Some(env)) => classify(&self.target, env),
            Ok(None) => Err(CaseError::Fail(
                "the target closed the stream without answering".into(),
            )),
            Err(WireError::Timeout(t)) => Err(CaseError::Fail(format!(
                "no answer from the target within {t:?}"
            ))),
            Err(e) => Err(CaseError::Fail(format!(
                "the target's answer is not a valid frame: {e}"
            ))),
        }
    }

    /// Closes the connection.
    pub fn close(&self) {
        self.conn.close(0u32.into(), b"case done");
    }
}

/// The error code of an answer, if it is an error.
pub fn error_code(a: &Answer) -> Option<ErrorCode> {
    match a {
        Answer::Error(_, e) => Some(e.code),
        _ => None,
    }
}
