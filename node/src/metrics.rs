//! Prometheus metrics: what operators watch. Queries by outcome and requester, latencies,
//! passports assembled, outbox depth, witnessing, manifest expiry, limit hits, audit batching.
//! Labels carry agency ids and outcome names only, never anything about a person.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;

/// Labels of a holder's decisions.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct QueryLabels {
    /// disclosed, refused, not_held or error.
    pub outcome: String,
    /// The requesting agency.
    pub requester: String,
}

/// A single `kind` label.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct KindLabel {
    /// What is counted.
    pub kind: String,
}

/// A single `peer` label.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct PeerLabel {
    /// The peer agency.
    pub peer: String,
}

fn latency_buckets() -> impl Iterator<Item = f64> {
    [
        0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0,
    ]
    .into_iter()
}

/// Every metric a node exports.
pub struct Metrics {
    registry: Registry,
    /// Queries decided as a holder, by outcome and requester.
    pub queries: Family<QueryLabels, Counter>,
    /// Time from receiving a query to its signed answer, seconds.
    pub query_seconds: Histogram,
    /// Passports assembled for this node's caseworkers, by result (complete or partial).
    pub passports: Family<KindLabel, Counter>,
    /// Time to assemble a passport (fan-out to the last answer), seconds.
    pub passport_seconds: Histogram,
    /// Consent and credential deliveries waiting in the outbox.
    pub outbox_pending: Gauge,
    /// Delivery attempts this process made from the outbox (successful or not).
    pub outbox_attempts: Counter,
    /// Checkpoints from peers refused as inconsistent with one already witnessed.
    pub witness_alarms: Counter,
    /// Consents refused a link because they named a different person than their passport id.
    pub consent_alarms: Counter,
    /// The size of this node's log each witness last cosigned.
    pub witness_cosigned: Family<PeerLabel, Gauge>,
    /// Seconds until the trusted manifest expires (negative once expired).
    pub manifest_expiry_seconds: Gauge,
    /// The trusted manifest's version.
    pub manifest_version: Gauge,
    /// Limits hit, by kind (frame_too_large, request_timeout, handshake_refused, ...).
    pub limit_hits: Family<KindLabel, Counter>,
    /// Entries in the audit log.
    pub audit_entries: Gauge,
    /// Entries per durable audit commit (group commit).
    pub audit_batch_size: Histogram,
    /// Reads from a live record source that gave no usable answer, by kind (timeout,
    /// unavailable, invalid).
    pub source_errors: Family<KindLabel, Counter>,
    /// Time a live record source took to answer (or to fail), seconds.
    pub source_seconds: Histogram,
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Metrics")
    }
}

impl Default for Metrics {
    fn default() -> Metrics {
        Metrics::new()
    }
}

impl Metrics {
    /// A fresh set of metrics, registered.
    pub fn new() -> Metrics {
        let mut registry = Registry::with_prefix("throughgate");
        let queries = Family::<QueryLabels, Counter>::default();
        let query_seconds = Histogram::new(latency_buckets());
        let passports = Family::<KindLabel, Counter>::default();
        let passport_seconds = Histogram::new(latency_buckets());
        let outbox_pending = Gauge::default();
        let outbox_attempts = Counter::default();
        let witness_alarms = Counter::default();
        let consent_alarms = Counter::default();
        let witness_cosigned = Family::<PeerLabel, Gauge>::default();
        let manifest_expiry_seconds = Gauge::default();
        let manifest_version = Gauge::default();
        let limit_hits = Family::<KindLabel, Counter>::default();
        let audit_entries = Gauge::default();
        let audit_batch_size =
            Histogram::new([1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0, 128.0, 256.0, 1024.0]);
        let source_errors = Family::<KindLabel, Counter>::default();
        let source_seconds = Histogram::new(latency_buckets());
        registry.register(
            "source_errors",
            "Reads from a live record source that gave no usable answer, by kind",
            source_errors.clone(),
        );
        registry.register(
            "source_seconds",
            "Time a live record source took to answer",
            source_seconds.clone(),
        );
        registry.register("queries", "Queries decided as a holder", queries.clone());
        registry.register(
            "query_seconds",
            "Time to decide and sign a query",
            query_seconds.clone(),
        );
        registry.register(
            "passports",
            "Passports assembled for this node's caseworkers",
            passports.clone(),
        );
        registry.register(
            "passport_seconds",
            "Time to assemble a passport",
            passport_seconds.clone(),
        );
        registry.register(
            "outbox_pending",
            "Deliveries waiting in the outbox",
            outbox_pending.clone(),
        );
        registry.register(
            "outbox_attempts",
            "Delivery attempts made from the outbox by this process",
            outbox_attempts.clone(),
        );
        registry.register(
            "witness_alarms",
            "Peer checkpoints refused as inconsistent",
            witness_alarms.clone(),
        );
        registry.register(
            "consent_subject_mismatches",
            "Consents whose identifier named a different person than their passport id already names here",
            consent_alarms.clone(),
        );
        registry.register(
            "witness_cosigned_size",
            "Log size each witness last cosigned",
            witness_cosigned.clone(),
        );
        registry.register(
            "manifest_expiry_seconds",
            "Seconds until the manifest expires",
            manifest_expiry_seconds.clone(),
        );
        registry.register(
            "manifest_version",
            "The trusted manifest's version",
            manifest_version.clone(),
        );
        registry.register("limit_hits", "Limits hit, by kind", limit_hits.clone());
        registry.register(
            "audit_entries",
            "Entries in the audit log",
            audit_entries.clone(),
        );
        registry.register(
            "audit_batch_size",
            "Entries per durable audit commit",
            audit_batch_size.clone(),
        );
        Metrics {
            registry,
            queries,
            query_seconds,
            passports,
            passport_seconds,
            outbox_pending,
            outbox_attempts,
            witness_alarms,
            consent_alarms,
            witness_cosigned,
            manifest_expiry_seconds,
            manifest_version,
            limit_hits,
            audit_entries,
            audit_batch_size,
            source_errors,
            source_seconds,
        }
    }

    /// Counts a limit hit.
    pub fn limit(&self, kind: &str) {
        self.limit_hits
            .get_or_create(&KindLabel {
                kind: kind.to_owned(),
            })
            .inc();
    }

    /// The Prometheus text exposition.
    pub fn encode(&self) -> String {
        let mut out = String::new();
        if prometheus_client::encoding::text::encode(&mut out, &self.registry).is_err() {
            out.clear();
        }
        out
    }
}
