//! A live source's answers kept in memory for a short time (`records.cache_ttl_secs`, off by
//! default): a holder asked about one person several times in a minute reads the agency's
//! system once.
//!
//! The cache holds records only, never a decision: consent, linkage and policy are decided
//! afresh for every query, so a consent withdrawn a moment ago is refused even while the
//! person's records are cached. It lives in memory only (never on disk), is keyed by the
//! asked subject and categories, and each answer keeps the time the source gave it, which the
//! response carries (`records_read_at`) so the passport shows the records' age.

use std::collections::{BTreeSet, HashMap};
use std::sync::{Arc, Mutex, PoisonError};

use sha2::{Digest, Sha256};
use throughgate_protocol::category::Category;
use throughgate_protocol::record::Record;
use throughgate_protocol::time::Timestamp;

/// Most answers kept at once; past it, expired answers are dropped and, if still full, a new
/// answer is not kept (the next query reads the source again).
pub const MAX_ENTRIES: usize = 10_000;

/// One live source answer: its records as checked, their digest and when the source gave them.
#[derive(Debug, Clone)]
pub struct Answer {
    /// The records, as the source returned them (before minimisation).
    pub records: Arc<Vec<Record>>,
    /// SHA-256 of the CBOR array of `records`.
    pub digest: [u8; 32],
    /// When the source gave this answer.
    pub read_at: Timestamp,
}

impl Answer {
    /// An answer the source gave at `read_at`.
    pub fn new(records: Vec<Record>, read_at: Timestamp) -> Answer {
        let bytes = throughgate_protocol::cbor::to_vec(&records);
        Answer {
            records: Arc::new(records),
            digest: Sha256::digest(&bytes).into(),
            read_at,
        }
    }
}

type Key = (String, BTreeSet<Category>);

/// The in-memory cache of a live source's answers.
#[derive(Debug)]
pub struct AnswerCache {
    ttl_secs: u64,
    entries: Mutex<HashMap<Key, Answer>>,
}

impl AnswerCache {
    /// A cache keeping answers `ttl_secs` seconds; 0 keeps none.
    pub fn new(ttl_secs: u64) -> AnswerCache {
        AnswerCache {
            ttl_secs,
            entries: Mutex::new(HashMap::new()),
        }
    }

    /// Whether answers are kept at all.
    pub fn enabled(&self) -> bool {
        self.ttl_secs > 0
    }

    fn fresh(&self, a: &Answer, now: Timestamp) -> bool {
        a.read_at <= now && now.0 - a.read_at.0 < self.ttl_secs
    }

    /// The answer for `subject` and `categories` the source gave less than the time-to-live
    /// before `now`, if kept.
    pub fn get(
        &self,
        subject: &str,
        categories: &BTreeSet<Category>,
        now: Timestamp,
    ) -> Option<Answer> {
        if !self.enabled() {
            return None;
        }
        let entries = self.entries.lock().unwrap_or_else(PoisonError::into_inner);
        entries
            .get(&(subject.to_owned(), categories.clone()))
            .filter(|a| self.fresh(a, now))
            .cloned()
    }

    /// Keeps `answer` for `subject` and `categories`.
    pub fn put(&self, subject: &str, categories: &BTreeSet<Category>, answer: Answer) {
        if !self.enabled() {
            return;
        }
        let mut entries = self.entries.lock().unwrap_or_else(PoisonError::into_inner);
        if entries.len() >= MAX_ENTRIES {
            let now = answer.read_at;
            entries.retain(|_, a| self.fresh(a, now));
            if entries.len() >= MAX_ENTRIES {
                return;
            }
        }
        entries.insert((subject.to_owned(), categories.clone()), answer);
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    fn cats() -> BTreeSet<Category> {
        [Category::Health].into()
    }

    #[test]
    fn an_answer_is_kept_for_its_time_to_live_and_no_longer() {
        let c = AnswerCache::new(30);
        c.put("A", &cats(), Answer::new(Vec::new(), Timestamp(1000)));
        assert!(c.get("A", &cats(), Timestamp(1029)).is_some());
        assert!(c.get("A", &cats(), Timestamp(1030)).is_none());
        // Another subject or other categories are other keys; a clock gone back reads again.
        assert!(c.get("B", &cats(), Timestamp(1001)).is_none());
        assert!(c
            .get("A", &[Category::Accommodation].into(), Timestamp(1001))
            .is_none());
        assert!(c.get("A", &cats(), Timestamp(999)).is_none());
    }

    #[test]
    fn a_cache_with_no_time_to_live_keeps_nothing() {
        let c = AnswerCache::new(0);
        c.put("A", &cats(), Answer::new(Vec::new(), Timestamp(1000)));
        assert!(c.get("A", &cats(), Timestamp(1000)).is_none());
    }
}
