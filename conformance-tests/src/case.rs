//! What a case is, what it returns, and the context every case runs in.

use std::fmt;
use std::time::Duration;

use futures::future::BoxFuture;
use throughgate_protocol::category::{Category, Purpose};
use throughgate_protocol::identifiers::SubjectIdentifier;
use throughgate_protocol::manifest::Sector;

use crate::identity::Actor;
use crate::peer::{Conn, Peer, Target};

/// The areas cases are grouped in; a case id starts with its area and a dot.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Area {
    /// QUIC, TLS, ALPN, pinning, streams.
    Transport,
    /// Frames, CBOR, envelopes and signatures.
    Envelope,
    /// Query checks: freshness, replay, requester, credential, caseworker signature.
    Query,
    /// Consent grants, revocations and the consent decision.
    Consent,
    /// What is released, and what is said about what was held back.
    Minimisation,
    /// Concurrency, slow senders, floods.
    Limits,
    /// Audit receipts, checkpoints, inclusion and consistency, audit queries, witnessing.
    Audit,
    /// Manifest exchange: adoption of newer versions, refusal of rollbacks and bad manifests.
    Manifest,
}

impl Area {
    /// Every area, in run order.
    pub const ALL: [Area; 8] = [
        Area::Transport,
        Area::Envelope,
        Area::Query,
        Area::Consent,
        Area::Minimisation,
        Area::Limits,
        Area::Audit,
        Area::Manifest,
    ];

    /// The area's name (the case-id prefix).
    pub fn as_str(self) -> &'static str {
        match self {
            Area::Transport => "transport",
            Area::Envelope => "envelope",
            Area::Query => "query",
            Area::Consent => "consent",
            Area::Minimisation => "minimisation",
            Area::Limits => "limits",
            Area::Audit => "audit",
            Area::Manifest => "manifest",
        }
    }
}

impl fmt::Display for Area {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Why a case did not pass.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CaseError {
    /// The target behaved otherwise than the case requires (or could not be reached).
    Fail(String),
    /// The case could not run: the target answered a message kind the case needs with
    /// `error` / `unsupported_kind`, or the identity file lacks what the case needs.
    Unsupported(String),
}

impl fmt::Display for CaseError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            CaseError::Fail(s) => write!(f, "fail: {s}"),
            CaseError::Unsupported(s) => write!(f, "unsupported: {s}"),
        }
    }
}

/// A passing case's detail line, or why it did not pass.
pub type CaseResult = Result<String, CaseError>;

/// Shorthand for a failure.
pub fn fail<T>(msg: impl Into<String>) -> Result<T, CaseError> {
    Err(CaseError::Fail(msg.into()))
}

/// Fails with `msg` unless `cond` holds.
pub fn ensure(cond: bool, msg: impl FnOnce() -> String) -> Result<(), CaseError> {
    if cond {
        Ok(())
    } else {
        Err(CaseError::Fail(msg()))
    }
}

/// A case body.
pub type CaseFn = for<'a> fn(&'a Ctx) -> BoxFuture<'a, CaseResult>;

/// One conformance case.
#[derive(Clone, Copy)]
pub struct Case {
    /// Stable id, `area.name`.
    pub id: &'static str,
    /// Its area.
    pub area: Area,
    /// The behaviour checked and the expected verdict, in one line.
    pub expect: &'static str,
    /// The body.
    pub run: CaseFn,
}

impl fmt::Debug for Case {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Case")
            .field("id", &self.id)
            .field("expect", &self.expect)
            .finish_non_exhaustive()
    }
}

/// Options that bound how long cases wait.
#[derive(Debug, Clone)]
pub struct Timing {
    /// How long to wait for an ordinary answer.
    pub answer: Duration,
    /// How long to wait for the target to time out a slow sender.
    pub slow_sender: Duration,
}

impl Default for Timing {
    fn default() -> Timing {
        Timing {
            answer: Duration::from_secs(10),
            slow_sender: Duration::from_secs(30),
        }
    }
}

/// What every case can use.
#[derive(Debug)]
pub struct Ctx {
    /// Connections to the target.
    pub peer: Peer,
    /// The suite's first member identity, with a caseworker.
    pub me: Actor,
    /// The optional second member identity.
    pub second: Option<Actor>,
    /// The purpose positive cases use.
    pub purpose: Purpose,
    /// The categories the target holds.
    pub categories: Vec<Category>,
    /// A person the target holds.
    pub subject: SubjectIdentifier,
    /// A person the target does not hold.
    pub unknown_subject: SubjectIdentifier,
    /// Optionally, a second person the target holds records about.
    pub other_subject: Option<SubjectIdentifier>,
    /// Waits.
    pub timing: Timing,
    /// A governance key of the target's federation, if the identity file gives one.
    pub governance: Option<throughgate_protocol::keys::SecretKey>,
}

impl Ctx {
    /// The target.
    pub fn target(&self) -> &Target {
        self.peer.target()
    }

    /// A fresh connection as the first identity.
    pub async fn conn(&self) -> Result<Conn, CaseError> {
        self.conn_as(&self.me).await
    }

    /// A fresh connection as `actor`.
    pub async fn conn_as(&self, actor: &Actor) -> Result<Conn, CaseError> {
        self.peer
            .connect(&actor.member.key, actor.member.agency.as_str())
            .await
    }

    /// A configured identity outside the justice sector, if any.
    pub fn non_justice(&self) -> Option<&Actor> {
        std::iter::once(&self.me)
            .chain(self.second.iter())
            .find(|a| a.member.sector != Sector::Justice)
    }
}
