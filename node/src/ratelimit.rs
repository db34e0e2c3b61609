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

/// Live connections, capped per key and across the node. When the node is full, a key holding
/// fewer connections than the busiest key takes that key's oldest connection (closed with
/// "node busy"): a flood from many keys cannot shut an honest caller out, and every key keeps
/// a fair share of the node-wide allowance.
#[derive(Debug)]
pub struct ConnectionCounter {
    max: u32,
    max_total: u32,
    live: Mutex<Live>,
}

#[derive(Debug, Default)]
struct Live {
    /// Per key, its connections, oldest first: a slot id and the connection (to close it when
    /// it gives way; `None` in unit tests).
    per_key: HashMap<PublicKey, Vec<(u64, Option<quinn::Connection>)>>,
    total: u32,
    next_id: u64,
}

/// Why a connection was not counted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ConnectionRefusal {
    /// The key already holds `max_connections_per_peer`.
    PerKey,
    /// The node holds `max_connections`, and no key holds more than its share.
    Node,
}

/// Holds one counted connection; released on drop.
#[derive(Debug)]
pub struct ConnectionSlot<'a> {
    counter: &'a ConnectionCounter,
    key: PublicKey,
    id: u64,
}

impl ConnectionCounter {
    /// A counter allowing `max` live connections per key and `max_total` in all.
    pub fn new(max: u32, max_total: u32) -> ConnectionCounter {
        ConnectionCounter {
            max,
            max_total: max_total.max(1),
            live: Mutex::new(Live::default()),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Live> {
        self.live
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Live connections counted now.
    pub fn total(&self) -> u32 {
        self.lock().total
    }

    /// Counts a new connection from `key` (held in `conn`, closed should it later give way to
    /// another key's), or refuses it.
    pub fn acquire(
        &self,
        key: PublicKey,
        conn: Option<quinn::Connection>,
    ) -> Result<ConnectionSlot<'_>, ConnectionRefusal> {
        let mut live = self.lock();
        let mine = live.per_key.get(&key).map_or(0, Vec::len);
        if mine >= self.max as usize {
            return Err(ConnectionRefusal::PerKey);
        }
        if live.total >= self.max_total {
            // Take the oldest connection of the busiest key, if it holds more than this key
            // would with one more.
            let busiest = live
                .per_key
                .iter()
                .max_by_key(|(_, v)| v.len())
                .map(|(k, v)| (*k, v.len()));
            match busiest {
                Some((k, n)) if n > mine + 1 => {
                    if let Some(list) = live.per_key.get_mut(&k) {
                        let (_, victim) = list.remove(0);
                        if let Some(c) = victim {
                            c.close(4u32.into(), b"node busy");
                        }
                        if list.is_empty() {
                            live.per_key.remove(&k);
                        }
                    }
                    live.total = live.total.saturating_sub(1);
                }
                _ => return Err(ConnectionRefusal::Node),
            }
        }
        let id = live.next_id;
        live.next_id += 1;
        live.per_key.entry(key).or_default().push((id, conn));
        live.total += 1;
        Ok(ConnectionSlot {
            counter: self,
            key,
            id,
        })
    }
}

impl Drop for ConnectionSlot<'_> {
    fn drop(&mut self) {
        let mut live = self.counter.lock();
        let Some(list) = live.per_key.get_mut(&self.key) else {
            return;
        };
        // A slot that gave way to another key was uncounted then.
        let Some(i) = list.iter().position(|(id, _)| *id == self.id) else {
            return;
        };
        list.remove(i);
        if list.is_empty() {
            live.per_key.remove(&self.key);
        }
        live.total = live.total.saturating_sub(1);
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
        let c = ConnectionCounter::new(2, 100);
        let k = throughgate_protocol::keys::SecretKey::from_seed(&[1; 32]).public();
        let a = c.acquire(k, None).unwrap();
        let _b = c.acquire(k, None).unwrap();
        assert_eq!(c.acquire(k, None).unwrap_err(), ConnectionRefusal::PerKey);
        drop(a);
        assert!(c.acquire(k, None).is_ok());
    }

    #[test]
    fn the_node_wide_cap_holds_and_a_newcomer_takes_the_busiest_keys_oldest() {
        let c = ConnectionCounter::new(16, 4);
        let key = |n: u8| throughgate_protocol::keys::SecretKey::from_seed(&[n; 32]).public();
        let flood: Vec<_> = (0..4).map(|_| c.acquire(key(1), None).unwrap()).collect();
        assert_eq!(c.total(), 4);
        // The flooding key cannot grow, but a newcomer gets in at its expense.
        assert_eq!(
            c.acquire(key(1), None).unwrap_err(),
            ConnectionRefusal::Node
        );
        let honest = c.acquire(key(2), None).unwrap();
        assert_eq!(c.total(), 4);
        let _second = c.acquire(key(3), None).unwrap();
        let _third = c.acquire(key(4), None).unwrap();
        // Four keys holding one each: nobody holds more than a fair share.
        assert_eq!(
            c.acquire(key(5), None).unwrap_err(),
            ConnectionRefusal::Node
        );
        assert_eq!(
            c.acquire(key(2), None).unwrap_err(),
            ConnectionRefusal::Node
        );
        assert_eq!(c.total(), 4);
        // Slots that gave way are not uncounted twice.
        drop(flood);
        assert_eq!(c.total(), 3);
        drop(honest);
        assert_eq!(c.total(), 2);
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
///
/// On a store shared by replicas ([`ConsentLimits::shared`]) the buckets live in the store, so
/// the allowances hold for the agency as a whole, whichever replica a caller uses.
#[derive(Debug)]
pub struct ConsentLimits {
    per_caseworker: RateLimiter,
    per_node: RateLimiter,
    per_peer: RateLimiter,
    shared: Option<crate::db::Db>,
    last_reported: Mutex<HashMap<String, Instant>>,
}

impl ConsentLimits {
    /// Limits as `rules` sets them.
    pub fn new(rules: &crate::config::ConsentRules) -> ConsentLimits {
        ConsentLimits {
            per_caseworker: RateLimiter::per_hour(rules.recordings_per_caseworker_per_hour),
            per_node: RateLimiter::per_hour(rules.recordings_per_node_per_hour),
            per_peer: RateLimiter::per_hour(rules.deliveries_per_peer_per_hour),
            shared: None,
            last_reported: Mutex::new(HashMap::new()),
        }
    }

    /// Limits as `rules` sets them, counted in `db`, a store the agency's replicas share.
    pub fn shared(rules: &crate::config::ConsentRules, db: crate::db::Db) -> ConsentLimits {
        ConsentLimits {
            shared: Some(db),
            ..ConsentLimits::new(rules)
        }
    }

    /// Takes one token from `limiter`'s bucket `key` (named `scope` in a shared store). A
    /// shared store that cannot be read refuses: the allowance fails closed.
    fn allow(&self, limiter: &RateLimiter, scope: &str, key: &str) -> bool {
        let Some(db) = &self.shared else {
            return limiter.allow(key);
        };
        if limiter.rate <= 0.0 {
            return true;
        }
        let now_ms = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX));
        match db.take_token(
            &format!("{scope}/{key}"),
            limiter.rate,
            limiter.burst,
            now_ms,
        ) {
            Ok(taken) => taken,
            Err(e) => {
                tracing::error!(error = %e, "could not read a shared allowance; refusing");
                false
            }
        }
    }

    /// Takes one recording for `caseworker`, or says which limit refuses it.
    pub fn recording(&self, caseworker: &str) -> Result<(), ConsentLimit> {
        if !self.allow(&self.per_caseworker, "recordings", caseworker) {
            return Err(ConsentLimit::Caseworker);
        }
        if !self.allow(&self.per_node, "recordings-node", "") {
            return Err(ConsentLimit::Node);
        }
        Ok(())
    }

    /// Takes one delivery from peer agency `peer`; false when it is over its allowance.
    pub fn delivery(&self, peer: &str) -> bool {
        self.allow(&self.per_peer, "deliveries", peer)
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

    #[test]
    fn replicas_sharing_a_store_share_each_allowance() {
        let db = crate::db::Db::new(std::sync::Arc::new(crate::store::MemoryStore::new()));
        let rules = ConsentRules {
            recordings_per_caseworker_per_hour: 2,
            recordings_per_node_per_hour: 3,
            deliveries_per_peer_per_hour: 1,
            ..ConsentRules::default()
        };
        let (a, b) = (
            ConsentLimits::shared(&rules, db.clone()),
            ConsentLimits::shared(&rules, db),
        );
        assert_eq!(a.recording("cw-1"), Ok(()));
        assert_eq!(b.recording("cw-1"), Ok(()));
        assert_eq!(a.recording("cw-1"), Err(ConsentLimit::Caseworker));
        assert_eq!(b.recording("cw-1"), Err(ConsentLimit::Caseworker));
        assert_eq!(b.recording("cw-2"), Ok(()));
        assert_eq!(a.recording("cw-3"), Err(ConsentLimit::Node));
        assert!(a.delivery("nhs-wy"));
        assert!(!b.delivery("nhs-wy"));
        assert!(b.delivery("dwp"));
    }
}
