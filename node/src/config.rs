//! The node's TOML configuration: one file per node. Paths in it are relative to the file's own
//! directory, so a node folder can be moved as a whole.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use throughgate_protocol::identifiers::IdScheme;
use throughgate_protocol::ids::AgencyId;

/// The largest config file read.
const MAX_CONFIG: u64 = 256 * 1024;

/// A configuration problem.
#[allow(missing_docs)] // variant fields are named by the #[error] message
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read or written.
    #[error("cannot read or write {path}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    /// The TOML does not parse or has unknown or missing keys.
    #[error("{path}: {detail}")]
    Parse {
        path: PathBuf,
        /// The parser's message, with line and column.
        detail: String,
    },
    /// A value is out of range.
    #[error("{path}: {detail}")]
    Invalid {
        path: PathBuf,
        /// What is wrong and what to do.
        detail: String,
    },
}

/// Limits and timeouts, with safe defaults.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Limits {
    /// Largest frame accepted, in bytes.
    pub max_frame_bytes: usize,
    /// Deadline for one request to a peer (or for a peer's request to arrive), in milliseconds.
    pub request_timeout_ms: u64,
    /// A connection idle this long is closed, in milliseconds.
    pub idle_timeout_ms: u64,
    /// Concurrent streams a peer node may open on a connection.
    pub max_streams_per_connection: u32,
    /// Concurrent streams a member of staff may open on a connection (the CLI uses one at a
    /// time; a load benchmark a few). Every connection starts with this allowance and a peer
    /// node's is raised once its key is known.
    pub max_streams_per_staff_connection: u32,
    /// Bytes of requests still arriving that one connection may hold, in bytes. Also the QUIC
    /// receive window of a connection. At least `max_frame_bytes`.
    pub max_request_bytes_per_connection: usize,
    /// Bytes of requests still arriving that one key (a peer node or a member of staff) may hold
    /// across its connections. At least `max_request_bytes_per_connection`.
    pub max_request_bytes_per_key: usize,
    /// Bytes of requests still arriving that the whole node may hold. At least
    /// `max_request_bytes_per_key`.
    pub max_request_bytes_per_node: usize,
    /// The longest lifetime (expiry minus issue time) this node accepts on queries its
    /// caseworkers sign, in seconds (the CLI signs queries valid for 60 s).
    pub query_lifetime_secs: u64,
    /// How often the node offers its newest audit checkpoint to its peers to witness, in
    /// seconds.
    pub witness_interval_secs: u64,
    /// Live connections one peer (or member of staff) may hold to this node.
    pub max_connections_per_peer: u32,
    /// Live connections the whole node holds, across every key. When full, a new connection
    /// from a key holding fewer than the busiest key takes that key's oldest connection;
    /// otherwise it is closed ("node busy").
    pub max_connections: u32,
    /// Handshakes in progress at once; further connection attempts are refused at once, before
    /// any cryptography (a flood of new connections from many addresses).
    pub max_handshakes: u32,
    /// Requests a second one peer agency may send on average (0: unlimited).
    pub peer_requests_per_sec: u32,
    /// Bursts allowed above that rate.
    pub peer_burst: u32,
    /// Queries a second one caseworker may cause, at their home node and at each holder, on
    /// average (0: unlimited).
    pub caseworker_queries_per_sec: u32,
    /// Bursts allowed above that rate.
    pub caseworker_burst: u32,
}

impl Default for Limits {
    fn default() -> Limits {
        Limits {
            max_frame_bytes: throughgate_protocol::frame::DEFAULT_MAX_FRAME,
            request_timeout_ms: 3000,
            idle_timeout_ms: 30_000,
            max_streams_per_connection: 256,
            max_streams_per_staff_connection: 32,
            max_request_bytes_per_connection: 8 * 1024 * 1024,
            max_request_bytes_per_key: 32 * 1024 * 1024,
            max_request_bytes_per_node: 256 * 1024 * 1024,
            query_lifetime_secs: 60,
            witness_interval_secs: 10,
            max_connections_per_peer: 16,
            max_connections: 1024,
            max_handshakes: 256,
            peer_requests_per_sec: 5000,
            peer_burst: 10_000,
            caseworker_queries_per_sec: 50,
            caseworker_burst: 500,
        }
    }
}

impl Limits {
    /// The per-request deadline.
    pub fn request_timeout(&self) -> Duration {
        Duration::from_millis(self.request_timeout_ms)
    }
}

fn default_next_key_file() -> PathBuf {
    PathBuf::from("node-next.key")
}

/// How long data is kept. Unset: kept indefinitely.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Retention {
    /// Records about dates more than this many days ago are deleted.
    pub records_days: Option<u32>,
    /// Audit entries older than this many days have their content redacted; their leaf hashes
    /// stay, so the log and every checkpoint remain verifiable.
    pub audit_days: Option<u32>,
}

/// Storage tuning.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Storage {
    /// The store's page cache, in MiB (sled's `cache_capacity`; approximate). Bounds the
    /// node's memory whatever the number of records; a larger cache serves big stores faster.
    pub cache_mib: u64,
    /// How long, at most, the audit writer holds a commit batch open for entries that queries
    /// being answered at that moment are about to add, in milliseconds (0: never). The wait
    /// happens only while such queries are in progress, so a lone query is committed at once;
    /// under load, fewer and larger batches mean fewer fsyncs and checkpoint signatures.
    pub commit_delay_ms: u64,
    /// Where the node keeps its state.
    pub backend: Backend,
    /// With `backend = "postgres"`: the database URL (`postgresql://…` or `key=value` pairs)
    /// naming a Unix socket or a loopback address. Use `url_file` instead when the URL holds
    /// a password.
    pub url: Option<String>,
    /// With `backend = "postgres"`: a file (mode 0600) holding the database URL.
    pub url_file: Option<PathBuf>,
}

/// A storage backend.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Backend {
    /// sled, embedded in the node, in `data_dir` (the default).
    #[default]
    Sled,
    /// A PostgreSQL database, which several replicas of one agency may share.
    Postgres,
}

impl Default for Storage {
    fn default() -> Storage {
        Storage {
            cache_mib: 64,
            commit_delay_ms: 2,
            backend: Backend::Sled,
            url: None,
            url_file: None,
        }
    }
}

impl Storage {
    /// The page cache sizes a node accepts, MiB.
    pub const CACHE_MIB: std::ops::RangeInclusive<u64> = 8..=1024 * 1024;

    /// The commit delays a node accepts, milliseconds.
    pub const COMMIT_DELAY_MS: std::ops::RangeInclusive<u64> = 0..=100;

    /// The commit delay.
    pub fn commit_delay(&self) -> std::time::Duration {
        std::time::Duration::from_millis(self.commit_delay_ms)
    }

    /// The cache size in bytes.
    pub fn cache_bytes(&self) -> u64 {
        self.cache_mib.saturating_mul(1024 * 1024)
    }
}

/// Rules for the consents this node records and receives.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ConsentRules {
    /// The longest validity (`valid_until` minus `valid_from`) of a consent this node records
    /// or accepts from another agency, in days.
    pub max_validity_days: u32,
    /// Consents one caseworker may record here in any hour (0: unlimited). Each recording
    /// tells the caseworker whether every holder knows the identifiers given, so this bounds
    /// how fast one caseworker can probe for identifiers.
    pub recordings_per_caseworker_per_hour: u32,
    /// Consents all of this node's caseworkers together may record in any hour (0: unlimited).
    pub recordings_per_node_per_hour: u32,
    /// Consent deliveries one other agency's node may make here in any hour (0: unlimited).
    pub deliveries_per_peer_per_hour: u32,
}

impl Default for ConsentRules {
    fn default() -> ConsentRules {
        ConsentRules {
            max_validity_days: 400,
            recordings_per_caseworker_per_hour: 20,
            recordings_per_node_per_hour: 300,
            deliveries_per_peer_per_hour: 1200,
        }
    }
}

impl ConsentRules {
    /// The validities a node accepts as its maximum, days.
    pub const MAX_VALIDITY_DAYS: std::ops::RangeInclusive<u32> =
        1..=throughgate_protocol::consent::MAX_VALIDITY_DAYS;

    /// The longest validity accepted, in seconds.
    pub fn max_validity_secs(&self) -> u64 {
        u64::from(self.max_validity_days) * 86_400
    }
}

/// QUIC settings that matter when replicas share one address behind a UDP load balancer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Quic {
    /// Whether a client may move a connection to a new address (RFC 9000 section 9). Behind a
    /// load balancer that routes by client address, turn it off: a moved connection would
    /// reach a replica that does not hold it.
    pub migration: bool,
    /// This replica's name, when several replicas of the agency share one address. The
    /// stateless-reset and connection-id keys are derived from the node key and this name, so
    /// a replica cannot reset a connection another replica holds (RFC 9000 section 10.3.2).
    /// Without it, every process with the node key derives the same keys.
    pub replica: Option<String>,
}

impl Default for Quic {
    fn default() -> Quic {
        Quic {
            migration: true,
            replica: None,
        }
    }
}

/// Rules for changing the record store.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RecordsRules {
    /// The largest share of the records of the synced kinds, in percent, that a sync
    /// (`tg records import --sync`) may delete without `--allow-mass-delete`: a truncated
    /// export must not wipe a node.
    pub max_sync_delete_percent: u32,
    /// Where the node reads records when it answers a query: its own imported store (the
    /// default), or the agency's own system at the time of asking.
    pub source: SourceKind,
    /// With a live source: how long one read from it may take, in milliseconds, connecting
    /// included. Past it the query is refused `source_unavailable`. At most three quarters of
    /// `limits.request_timeout_ms`, so a refusal reaches the requester inside its deadline.
    pub source_timeout_ms: u64,
    /// With `source = "postgres"`: the database and the mapping of record kinds to queries.
    pub postgres: Option<PostgresSource>,
    /// With `source = "http"`: the endpoint, its token and the CA that signs its certificate.
    pub http: Option<HttpSource>,
    /// With a live source: how long, in seconds, the node may answer from a source's answer
    /// kept in memory (never on disk) instead of reading the source again. 0 (the default)
    /// keeps nothing; at most [`RecordsRules::MAX_CACHE_TTL_SECS`]. Consent is still checked
    /// afresh for every query; the passport shows the records' age.
    pub cache_ttl_secs: u64,
}

impl Default for RecordsRules {
    fn default() -> RecordsRules {
        RecordsRules {
            max_sync_delete_percent: 10,
            source: SourceKind::Store,
            source_timeout_ms: 1000,
            postgres: None,
            http: None,
            cache_ttl_secs: 0,
        }
    }
}

impl RecordsRules {
    /// The longest a live source's answer may be kept.
    pub const MAX_CACHE_TTL_SECS: u64 = 300;

    /// The longest one read from a live source may take.
    pub fn source_timeout(&self) -> Duration {
        Duration::from_millis(self.source_timeout_ms)
    }
}

/// Where a node's records come from when it answers.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SourceKind {
    /// The records imported into the node's own store (`tg records import`).
    #[default]
    Store,
    /// The agency's own PostgreSQL database, read through a mapping of read-only queries.
    Postgres,
    /// An HTTPS endpoint of the agency's own that answers with JSON Lines records.
    Http,
}

impl SourceKind {
    /// The name used in the config and in metrics.
    pub fn as_str(self) -> &'static str {
        match self {
            SourceKind::Store => "store",
            SourceKind::Postgres => "postgres",
            SourceKind::Http => "http",
        }
    }
}

/// A live PostgreSQL source (`[records.postgres]`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PostgresSource {
    /// A file (mode 0600) holding the database URL, for a read-only role; a Unix socket or a
    /// loopback address (connections carry no TLS).
    pub url_file: PathBuf,
    /// The mapping (TOML): per record kind, its query and how its columns map to a record.
    pub mapping_file: PathBuf,
}

/// A live HTTPS source (`[records.http]`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HttpSource {
    /// The endpoint (`https://host:port/path`); the node POSTs the subject to it.
    pub url: String,
    /// A file (mode 0600) holding the bearer token sent with every request.
    pub token_file: PathBuf,
    /// The CA certificates (PEM) the endpoint's certificate must chain to; no other root is
    /// trusted.
    pub ca_file: PathBuf,
}

/// Refuses `value` outside `range`, naming the key and the range ("K must be between A and B").
fn within<T: PartialOrd + std::fmt::Display>(
    key: &str,
    value: T,
    range: std::ops::RangeInclusive<T>,
) -> Result<(), String> {
    if range.contains(&value) {
        Ok(())
    } else {
        Err(format!(
            "{key} must be between {} and {}",
            range.start(),
            range.end()
        ))
    }
}

/// A node's configuration file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NodeConfig {
    /// This node's agency id, as in the manifest.
    pub agency: AgencyId,
    /// The UDP address to listen on.
    pub listen: SocketAddr,
    /// The node's private key (PKCS#8 PEM, mode 0600).
    pub key_file: PathBuf,
    /// The next node key, for rotation (`tg node rotate-key` switches to it).
    #[serde(default = "default_next_key_file")]
    pub next_key_file: PathBuf,
    /// The storage folder.
    pub data_dir: PathBuf,
    /// A manifest file (CBOR envelope) to adopt at start if newer than the stored one.
    pub manifest_file: Option<PathBuf>,
    /// The minimisation policy (TOML). Without one the node releases nothing.
    pub policy_file: Option<PathBuf>,
    /// The identifier scheme this agency's records use for people.
    pub id_scheme: IdScheme,
    /// Where to serve `/metrics`, `/healthz` and `/readyz` (HTTP; keep it on loopback). None:
    /// not served.
    #[serde(default)]
    pub metrics_listen: Option<SocketAddr>,
    /// Limits and timeouts.
    #[serde(default)]
    pub limits: Limits,
    /// Retention of records and audit entries.
    #[serde(default)]
    pub retention: Retention,
    /// Storage tuning.
    #[serde(default)]
    pub storage: Storage,
    /// Consent validity and recording limits.
    #[serde(default)]
    pub consent: ConsentRules,
    /// Rules for changing the record store.
    #[serde(default)]
    pub records: RecordsRules,
    /// QUIC settings for replicas behind a load balancer.
    #[serde(default)]
    pub quic: Quic,
    /// The folder the file was read from (paths resolve against it). Not in the file.
    #[serde(skip)]
    pub base_dir: PathBuf,
}

impl NodeConfig {
    /// Reads and checks a config file.
    pub fn load(path: &Path) -> Result<NodeConfig, ConfigError> {
        let io = |source| ConfigError::Io {
            path: path.to_path_buf(),
            source,
        };
        let meta = std::fs::metadata(path).map_err(io)?;
        if meta.len() > MAX_CONFIG {
            return Err(ConfigError::Invalid {
                path: path.to_path_buf(),
                detail: format!("config file is over {MAX_CONFIG} bytes"),
            });
        }
        let text = std::fs::read_to_string(path).map_err(io)?;
        let mut cfg = NodeConfig::parse(&text).map_err(|detail| ConfigError::Parse {
            path: path.to_path_buf(),
            detail,
        })?;
        cfg.base_dir = path.parent().map(Path::to_path_buf).unwrap_or_default();
        cfg.check().map_err(|detail| ConfigError::Invalid {
            path: path.to_path_buf(),
            detail,
        })?;
        Ok(cfg)
    }

    /// Parses config text (no path resolution).
    pub fn parse(text: &str) -> Result<NodeConfig, String> {
        toml::from_str(text).map_err(|e| e.to_string())
    }

    /// Checks value ranges.
    pub fn check(&self) -> Result<(), String> {
        let l = &self.limits;
        within(
            "limits.max_frame_bytes",
            l.max_frame_bytes,
            1024..=64 * 1024 * 1024,
        )?;
        within(
            "limits.request_timeout_ms",
            l.request_timeout_ms,
            100..=120_000,
        )?;
        within(
            "limits.idle_timeout_ms",
            l.idle_timeout_ms,
            1000..=3_600_000,
        )?;
        within(
            "limits.max_streams_per_connection",
            l.max_streams_per_connection,
            1..=10_000,
        )?;
        within(
            "limits.max_streams_per_staff_connection",
            l.max_streams_per_staff_connection,
            1..=l.max_streams_per_connection,
        )?;
        within(
            "limits.max_request_bytes_per_connection",
            l.max_request_bytes_per_connection,
            l.max_frame_bytes..=1024 * 1024 * 1024,
        )?;
        within(
            "limits.max_request_bytes_per_key",
            l.max_request_bytes_per_key,
            l.max_request_bytes_per_connection..=16 * 1024 * 1024 * 1024,
        )?;
        within(
            "limits.max_request_bytes_per_node",
            l.max_request_bytes_per_node,
            l.max_request_bytes_per_key..=64 * 1024 * 1024 * 1024,
        )?;
        within("limits.max_connections", l.max_connections, 1..=1_000_000)?;
        within("limits.max_handshakes", l.max_handshakes, 1..=100_000)?;
        within(
            "limits.query_lifetime_secs",
            l.query_lifetime_secs,
            5..=throughgate_protocol::query_check::MAX_QUERY_LIFETIME_SECS,
        )?;
        within(
            "limits.witness_interval_secs",
            l.witness_interval_secs,
            1..=86_400,
        )?;
        within(
            "storage.cache_mib",
            self.storage.cache_mib,
            Storage::CACHE_MIB,
        )?;
        within(
            "storage.commit_delay_ms",
            self.storage.commit_delay_ms,
            Storage::COMMIT_DELAY_MS,
        )?;
        if let Some(name) = &self.quic.replica {
            if name.is_empty() || name.len() > 64 || name.chars().any(char::is_control) {
                return Err(
                    "quic.replica must be a name of 1 to 64 printable characters, unique \
                     among the agency's replicas"
                        .into(),
                );
            }
        }
        match (
            self.storage.backend,
            &self.storage.url,
            &self.storage.url_file,
        ) {
            (Backend::Sled, None, None) | (Backend::Postgres, Some(_), None) => {}
            (Backend::Postgres, None, Some(_)) => {}
            (Backend::Sled, _, _) => {
                return Err(
                    "storage.url and storage.url_file are for backend = \"postgres\"; \
                            remove them or set storage.backend = \"postgres\""
                        .into(),
                )
            }
            (Backend::Postgres, None, None) => {
                return Err(
                    "storage.backend = \"postgres\" needs storage.url_file (a 0600 \
                            file holding the database URL) or storage.url"
                        .into(),
                )
            }
            (Backend::Postgres, Some(_), Some(_)) => {
                return Err("set one of storage.url and storage.url_file, not both".into())
            }
        }
        within(
            "consent.max_validity_days",
            self.consent.max_validity_days,
            ConsentRules::MAX_VALIDITY_DAYS,
        )?;
        within(
            "records.max_sync_delete_percent",
            self.records.max_sync_delete_percent,
            0..=100,
        )?;
        let r = &self.records;
        within(
            "records.source_timeout_ms",
            r.source_timeout_ms,
            10..=(l.request_timeout_ms * 3 / 4).max(10),
        )?;
        within(
            "records.cache_ttl_secs",
            r.cache_ttl_secs,
            0..=RecordsRules::MAX_CACHE_TTL_SECS,
        )?;
        if r.cache_ttl_secs > 0 && r.source == SourceKind::Store {
            return Err(
                "records.cache_ttl_secs applies to a live source only (records.source = \"postgres\" or \"http\")"
                    .into(),
            );
        }
        match (r.source, &r.postgres, &r.http) {
            (SourceKind::Store, None, None)
            | (SourceKind::Postgres, Some(_), None)
            | (SourceKind::Http, None, Some(_)) => Ok(()),
            (SourceKind::Postgres, None, _) => Err(
                "records.source = \"postgres\" needs a [records.postgres] section with url_file \
                 and mapping_file"
                    .into(),
            ),
            (SourceKind::Http, _, None) => Err(
                "records.source = \"http\" needs a [records.http] section with url, token_file \
                 and ca_file"
                    .into(),
            ),
            (kind, _, _) => Err(format!(
                "records.source is \"{}\"; remove the [records.*] sections of other sources",
                kind.as_str()
            )),
        }
    }

    /// Resolves a path from the file against the file's folder.
    pub fn resolve(&self, p: &Path) -> PathBuf {
        if p.is_absolute() {
            p.to_path_buf()
        } else {
            self.base_dir.join(p)
        }
    }

    /// The config as TOML text.
    pub fn to_toml(&self) -> String {
        toml::to_string_pretty(self).unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const GOOD: &str = r#"
agency = "hmp-leeds"
listen = "127.0.0.1:4701"
key_file = "node.key"
data_dir = "data"
id_scheme = "noms_number"
"#;

    #[test]
    fn parses_with_defaults() {
        let c = NodeConfig::parse(GOOD).unwrap();
        assert_eq!(c.agency.as_str(), "hmp-leeds");
        assert_eq!(c.limits, Limits::default());
        assert!(c.check().is_ok());
        let again = NodeConfig::parse(&c.to_toml()).unwrap();
        assert_eq!(again, c);
    }

    #[test]
    fn typos_and_bad_values_are_named() {
        let err = NodeConfig::parse(&format!("{GOOD}\nlisten_port = 3\n")).unwrap_err();
        assert!(err.contains("listen_port"), "{err}");
        let err = NodeConfig::parse(&GOOD.replace("hmp-leeds", "HMP Leeds")).unwrap_err();
        assert!(err.contains("agency id"), "{err}");
        let mut c = NodeConfig::parse(GOOD).unwrap();
        c.limits.request_timeout_ms = 5;
        assert!(c.check().unwrap_err().contains("request_timeout_ms"));
        let mut c = NodeConfig::parse(GOOD).unwrap();
        c.storage.cache_mib = 4;
        assert_eq!(
            c.check().unwrap_err(),
            "storage.cache_mib must be between 8 and 1048576"
        );
        c.storage.cache_mib = 8;
        assert!(c.check().is_ok());
        c.storage.commit_delay_ms = 101;
        assert_eq!(
            c.check().unwrap_err(),
            "storage.commit_delay_ms must be between 0 and 100"
        );
        c.storage.commit_delay_ms = 0;
        assert!(c.check().is_ok());
        let c = NodeConfig::parse(&format!(
            "{GOOD}\n[records]\nmax_sync_delete_percent = 101\n"
        ))
        .unwrap();
        assert_eq!(
            c.check().unwrap_err(),
            "records.max_sync_delete_percent must be between 0 and 100"
        );
        let err = NodeConfig::parse(&format!("{GOOD}\n[records]\nmax_sync_delete_share = 0.1\n"))
            .unwrap_err();
        assert!(err.contains("max_sync_delete_share"), "{err}");
    }

    #[test]
    fn a_live_source_needs_its_own_section_and_a_timeout_inside_the_request_deadline() {
        let c = NodeConfig::parse(GOOD).unwrap();
        assert_eq!(c.records.source, SourceKind::Store);
        let c = NodeConfig::parse(&format!("{GOOD}\n[records]\nsource = \"postgres\"\n")).unwrap();
        assert!(c.check().unwrap_err().contains("[records.postgres]"));
        let pg = format!(
            "{GOOD}\n[records]\nsource = \"postgres\"\n[records.postgres]\n\
             url_file = \"source-url\"\nmapping_file = \"mapping.toml\"\n"
        );
        let c = NodeConfig::parse(&pg).unwrap();
        assert!(c.check().is_ok());
        assert_eq!(NodeConfig::parse(&c.to_toml()).unwrap(), c);
        let c = NodeConfig::parse(&pg.replace("\"postgres\"\n[", "\"http\"\n[")).unwrap();
        assert!(c.check().unwrap_err().contains("[records.http]"));
        let mut c = NodeConfig::parse(&pg).unwrap();
        c.records.source = SourceKind::Store;
        assert!(c.check().unwrap_err().contains("remove the [records.*]"));
        let mut c = NodeConfig::parse(&pg).unwrap();
        c.records.source_timeout_ms = 2251;
        assert_eq!(
            c.check().unwrap_err(),
            "records.source_timeout_ms must be between 10 and 2250"
        );
    }

    #[test]
    fn a_records_cache_is_off_by_default_short_and_for_a_live_source_only() {
        assert_eq!(NodeConfig::parse(GOOD).unwrap().records.cache_ttl_secs, 0);
        let pg = format!(
            "{GOOD}\n[records]\nsource = \"postgres\"\ncache_ttl_secs = 60\n[records.postgres]\n\
             url_file = \"source-url\"\nmapping_file = \"mapping.toml\"\n"
        );
        let mut c = NodeConfig::parse(&pg).unwrap();
        assert!(c.check().is_ok());
        c.records.cache_ttl_secs = 301;
        assert_eq!(
            c.check().unwrap_err(),
            "records.cache_ttl_secs must be between 0 and 300"
        );
        let mut c = NodeConfig::parse(GOOD).unwrap();
        c.records.cache_ttl_secs = 60;
        assert!(c.check().unwrap_err().contains("live source only"));
    }

    #[test]
    fn request_byte_caps_nest() {
        let mut c = NodeConfig::parse(GOOD).unwrap();
        c.limits.max_request_bytes_per_connection = c.limits.max_frame_bytes - 1;
        assert!(c
            .check()
            .unwrap_err()
            .starts_with("limits.max_request_bytes_per_connection must be between"));
        let mut c = NodeConfig::parse(GOOD).unwrap();
        c.limits.max_request_bytes_per_node = c.limits.max_request_bytes_per_key - 1;
        assert!(c
            .check()
            .unwrap_err()
            .starts_with("limits.max_request_bytes_per_node must be between"));
        let mut c = NodeConfig::parse(GOOD).unwrap();
        c.limits.max_streams_per_staff_connection = c.limits.max_streams_per_connection + 1;
        assert!(c
            .check()
            .unwrap_err()
            .starts_with("limits.max_streams_per_staff_connection must be between"));
    }
}
