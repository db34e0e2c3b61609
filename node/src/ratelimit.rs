//! Rate and connection limits: token buckets keyed by peer agency or member of staff, and a
//! count of live connections per peer key. Every limit hit is counted in the metrics.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Instant;

use throughgate_protocol::keys::PublicKey;

#[derive(Debug)]
struct Bucket {
    tokens: f64,
    last: Instant,
}

/// Token buckets: `rate` requests a second on average, bursts up to `burst`.
#[derive(Debug)]
pub struct RateLimiter {
    rate: f64,
    burst: f64,
    buckets: Mutex<HashMap<String, Bucket>>,
}

impl RateLimiter {
    /// A limiter; a `rate` of 0 means unlimited.
    pub fn new(rate: u32, burst: u32) -> RateLimiter {
        RateLimiter {
            rate: f64::from(rate),
            burst: f64::from(burst.max(1)),
            buckets: Mutex::new(HashMap::new()),
        }
    }

    /// A limiter allowing `per_hour` requests in any hour on average, all of them at once at
    /// most; 0 means unlimited.
    pub fn per_hour(per_hour: u32) -> RateLimiter {
        RateLimiter {
            rate: f64::from(per_hour) / 3600.0,
            burst: f64::from(per_hour.max(1)),
            buckets: Mutex::new(HashMap::new()),
        }
    }

    /// Takes one token for `key`; false when the key is over its rate.
    pub fn allow(&self, key: &str) -> bool {
        if self.rate <= 0.0 {
            return true;
        }
        let now = Instant::now();
        let mut buckets = self
            .buckets
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if buckets.len() > 100_000 {
            // Forget idle keys rather than grow without bound.
            let burst = self.burst;
            let rate = self.rate;
            buckets
                .retain(|_, b| b.tokens + now.duration_since(b.last).as_secs_f64() * rate < burst);
        }
        let b = buckets.entry(key.to_owned()).or_insert(Bucket {
            tokens: self.burst,
            last: now,
        });
        b.tokens =
            (b.tokens + now.duration_since(b.last).as_secs_f64() * self.rate).min(self.burst);
        b.last = now;
        if b.tokens >= 1.0 {
            b.tokens -= 1.0;
            true
        } else {
            false
        }
    }
}

/// Live connections per peer key, capped.
#[derive(Debug)]
pub struct ConnectionCounter {
    max: u32,
    live: Mutex<HashMap<PublicKey, u32>>,
}

/// Holds one counted connection; released on drop.
#[derive(Debug)]
pub struct ConnectionSlot<'a> {
    counter: &'a ConnectionCounter,
    key: PublicKey,
}

impl ConnectionCounter {
    /// A counter allowing `max` live connections per key.
    pub fn new(max: u32) -> ConnectionCounter {
        ConnectionCounter {
            max,
            live: Mutex::new(HashMap::new()),
        }
    }

    /// Counts a new connection from `key`, or refuses it when `key` already has `max`.
    pub fn acquire(&self, key: PublicKey) -> Option<ConnectionSlot<'_>> {
        let mut live = self
            .live
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let n = live.entry(key).or_insert(0);
        if *n >= self.max {
            return None;
        }
        *n += 1;
        Some(ConnectionSlot { counter: self, key })
    }
}

impl Drop for ConnectionSlot<'_> {
    fn drop(&mut self) {
        let mut live = self
            .counter
            .live
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if let Some(n) = live.get_mut(&self.key) {
            *n = n.saturating_sub(1);
            if *n == 0 {
                live.remove(&self.key);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buckets_allow_bursts_then_the_rate() {
        let l = RateLimiter::new(1, 3);
        assert!(l.allow("a") && l.allow("a") && l.allow("a"));
        assert!(!l.allow("a"));
        assert!(l.allow("b"), "keys are independent");
        assert!(RateLimiter::new(0, 0).allow("x"), "rate 0 is unlimited");
    }

    #[test]
    fn connections_are_capped_per_key_and_released() {
        let c = ConnectionCounter::new(2);
        let k = throughgate_protocol::keys::SecretKey::from_seed(&[1; 32]).public();
        let a = c.acquire(k).unwrap();
        let _b = c.acquire(k).unwrap();
        assert!(c.acquire(k).is_none());
        drop(a);
        assert!(c.acquire(k).is_some());
    }
}

/// Which consent limit a request ran into.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ConsentLimit {
    /// The caseworker's own hourly allowance.
    Caseworker,
    /// The node's hourly allowance for all its caseworkers.
    Node,
}

/// Limits on recording and receiving consents. Every recording tells the caseworker whether
/// each holder knows the identifiers given, so these bound how fast a caseworker (or a node)
/// can probe for identifiers, and how fast anyone can fill every agency's consent register.
/// Refusals are reported for the audit log at most once a minute per caseworker or peer.
#[derive(Debug)]
pub struct ConsentLimits {
    per_caseworker: RateLimiter,
    per_node: RateLimiter,
    per_peer: RateLimiter,
    last_reported: Mutex<HashMap<String, Instant>>,
}

impl ConsentLimits {
    /// Limits as `rules` sets them.
    pub fn new(rules: &crate::config::ConsentRules) -> ConsentLimits {
        ConsentLimits {
            per_caseworker: RateLimiter::per_hour(rules.recordings_per_caseworker_per_hour),
            per_node: RateLimiter::per_hour(rules.recordings_per_node_per_hour),
            per_peer: RateLimiter::per_hour(rules.deliveries_per_peer_per_hour),
            last_reported: Mutex::new(HashMap::new()),
        }
    }

    /// Takes one recording for `caseworker`, or says which limit refuses it.
    pub fn recording(&self, caseworker: &str) -> Result<(), ConsentLimit> {
        if !self.per_caseworker.allow(caseworker) {
            return Err(ConsentLimit::Caseworker);
        }
        if !self.per_node.allow("") {
            return Err(ConsentLimit::Node);
        }
        Ok(())
    }

    /// Takes one delivery from peer agency `peer`; false when it is over its allowance.
    pub fn delivery(&self, peer: &str) -> bool {
        self.per_peer.allow(peer)
    }

    /// Whether a refusal for `who` should be written to the audit log now: the first refusal,
    /// then at most one a minute, so a flood of refused requests cannot flood the log.
    pub fn report_refusal(&self, who: &str) -> bool {
        let now = Instant::now();
        let mut last = self
            .last_reported
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        match last.get(who) {
            Some(t) if now.duration_since(*t).as_secs() < 60 => false,
            _ => {
                last.insert(who.to_owned(), now);
                true
            }
        }
    }
}

#[cfg(test)]
mod consent_limit_tests {
    use super::*;
    use crate::config::ConsentRules;

    #[test]
    fn recordings_are_limited_per_caseworker_then_per_node_and_refusals_reported_once() {
        let limits = ConsentLimits::new(&ConsentRules {
            recordings_per_caseworker_per_hour: 2,
            recordings_per_node_per_hour: 3,
            ..ConsentRules::default()
        });
        assert_eq!(limits.recording("cw-1"), Ok(()));
        assert_eq!(limits.recording("cw-1"), Ok(()));
        assert_eq!(limits.recording("cw-1"), Err(ConsentLimit::Caseworker));
        assert_eq!(limits.recording("cw-2"), Ok(()));
        assert_eq!(limits.recording("cw-3"), Err(ConsentLimit::Node));
        assert!(limits.report_refusal("staff/cw-1"));
        assert!(!limits.report_refusal("staff/cw-1"));
        assert!(limits.report_refusal("staff/cw-3"));
    }

    #[test]
    fn zero_means_unlimited() {
        let limits = ConsentLimits::new(&ConsentRules {
            recordings_per_caseworker_per_hour: 0,
            recordings_per_node_per_hour: 0,
            deliveries_per_peer_per_hour: 0,
            ..ConsentRules::default()
        });
        for _ in 0..1000 {
            assert_eq!(limits.recording("cw-1"), Ok(()));
            assert!(limits.delivery("nhs-wy"));
        }
    }
}
