//! Throughgate conformance suite: a black-box test of any node, driven by its address and
//! public key.
//!
//! The suite acts as a member agency of the target's federation (see [`identity`] for the
//! identity file): it connects over QUIC with its own node key, issues its own caseworkers'
//! credentials, records its own consents and delivers them to the target as `consent_grant`s,
//! and sends signed queries, well-formed and deliberately broken. Each case checks one
//! behaviour against an expected verdict ([`cases`]); results are reported as a table, JSON or
//! JUnit XML ([`report`]).
//!
//! Case ids are stable and grouped by area: `transport.*`, `envelope.*`, `query.*`,
//! `consent.*`, `minimisation.*`, `limits.*`, `audit.*`, `manifest.*`.
//!
//! The suite shares no code with the project's node beyond the protocol crate: its QUIC client
//! and key pinning ([`tls`]), framing ([`wire`]) and key-file reader ([`keyfile`]) are its own,
//! written from the specification, so a defect in the node's versions cannot hide in both ends.
//!
//! A case is `unsupported` when the target answers a message kind the case needs (query,
//! consent_grant, consent_revoke) with an `error` of code `unsupported_kind`, or when the
//! identity file lacks what the case needs (e.g. an identity outside the justice sector for the
//! `risk` cases, or a governance key for the manifest cases that must sign a manifest).

pub mod case;
pub mod cases;
pub mod check;
pub mod craft;
pub mod identity;
pub mod keyfile;
pub mod peer;
pub mod report;
pub mod tls;
pub mod vectors;
pub mod wire;

use std::panic::AssertUnwindSafe;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use futures::FutureExt;
use throughgate_protocol::time::Timestamp;

pub use case::{Area, Case, CaseError, Timing};
pub use identity::Identity;
pub use peer::Target;
pub use report::{exit_code, CaseReport, Verdict};

/// The current time, in whole seconds.
pub fn now() -> Timestamp {
    Timestamp(
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0),
    )
}

/// Everything a run needs.
#[derive(Debug, Clone)]
pub struct SuiteConfig {
    /// The node under test.
    pub target: Target,
    /// The suite's identity.
    pub identity: Identity,
    /// How long to wait.
    pub timing: Timing,
}

/// Every case, in run order.
pub fn all_cases() -> Vec<Case> {
    cases::all()
}

/// The cases `patterns` select, in run order: an exact id, an area name (`query`), or a prefix
/// ending in `*` (`consent.revoke*`, `limits.*`). No patterns selects every case.
pub fn select(patterns: &[String]) -> Result<Vec<Case>, String> {
    let all = all_cases();
    if patterns.is_empty() {
        return Ok(all);
    }
    let matches = |p: &str, c: &Case| -> bool {
        if let Some(prefix) = p.strip_suffix('*') {
            c.id.starts_with(prefix)
        } else {
            c.id == p || c.area.as_str() == p
        }
    };
    for p in patterns {
        if !all.iter().any(|c| matches(p, c)) {
            return Err(format!(
                "no case matches {p:?}; `tg-conformance --list` shows every case id"
            ));
        }
    }
    Ok(all
        .into_iter()
        .filter(|c| patterns.iter().any(|p| matches(p, c)))
        .collect())
}

/// Runs `cases` in order against the configured target, calling `progress` after each.
pub async fn run_with(
    config: &SuiteConfig,
    cases: &[Case],
    mut progress: impl FnMut(&CaseReport),
) -> Result<Vec<CaseReport>, String> {
    let peer = peer::Peer::new(config.target.clone(), config.timing.answer)?;
    let me = identity::Actor::new(config.identity.primary.clone())?;
    let second = match &config.identity.second {
        Some(s) => Some(identity::Actor::new(s.clone())?),
        None => None,
    };
    let ctx = case::Ctx {
        peer,
        me,
        second,
        purpose: config.identity.purpose,
        categories: config.identity.target_categories.clone(),
        subject: config.identity.subject.clone(),
        unknown_subject: config.identity.unknown_subject.clone(),
        other_subject: config.identity.other_subject.clone(),
        timing: config.timing.clone(),
        governance: config.identity.governance.clone(),
    };
    let bound = config.timing.answer * 6 + config.timing.slow_sender + Duration::from_secs(10);
    let mut reports = Vec::with_capacity(cases.len());
    for c in cases {
        let started = Instant::now();
        let run = AssertUnwindSafe((c.run)(&ctx)).catch_unwind();
        let result = match tokio::time::timeout(bound, run).await {
            Ok(Ok(r)) => r,
            Ok(Err(_)) => Err(CaseError::Fail("the case panicked (suite bug)".into())),
            Err(_) => Err(CaseError::Fail(format!(
                "the case did not finish within {bound:?}"
            ))),
        };
        let (outcome, detail) = match result {
            Ok(d) => (Verdict::Pass, d),
            Err(CaseError::Fail(d)) => (Verdict::Fail, d),
            Err(CaseError::Unsupported(d)) => (Verdict::Unsupported, d),
        };
        let report = CaseReport {
            id: c.id.to_owned(),
            area: c.area.as_str().to_owned(),
            outcome,
            detail,
            ms: u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX),
        };
        progress(&report);
        reports.push(report);
    }
    ctx.peer.close().await;
    Ok(reports)
}

/// Runs `cases` in order against the configured target.
pub async fn run(config: &SuiteConfig, cases: &[Case]) -> Result<Vec<CaseReport>, String> {
    run_with(config, cases, |_| {}).await
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn ids_are_unique_prefixed_and_plentiful() {
        let all = all_cases();
        let mut seen = std::collections::BTreeSet::new();
        for c in &all {
            assert!(seen.insert(c.id), "duplicate id {}", c.id);
            assert!(
                c.id.starts_with(&format!("{}.", c.area.as_str())),
                "{} not in area {}",
                c.id,
                c.area
            );
            assert!(c
                .id
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_' || b == b'.'));
        }
        assert!(all.len() >= 50, "{} cases", all.len());
    }

    #[test]
    fn selection() {
        assert_eq!(select(&[]).unwrap().len(), all_cases().len());
        let q = select(&["query".into()]).unwrap();
        assert!(q.iter().all(|c| c.area == Area::Query));
        let r = select(&["consent.revo*".into(), "query.expired".into()]).unwrap();
        assert!(r.iter().any(|c| c.id == "query.expired"));
        assert!(r
            .iter()
            .all(|c| c.id == "query.expired" || c.id.starts_with("consent.revo")));
        assert!(select(&["nope.case".into()]).is_err());
    }
}
