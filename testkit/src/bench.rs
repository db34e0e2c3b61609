//! The machinery behind `tg bench`: a federation of N holders on loopback in this process, bulk
//! synthetic records, consent for a set of people, caseworkers driving passport assemblies
//! through the real client path ([`HomeClient::passport`], which verifies every response and
//! receipt, or, with [`ClientVerify::Statement`], [`HomeClient::passport_by_statement`], which
//! checks only the home node's signed assembly statement), and the measurements: latency
//! percentiles, CPU and peak RSS of the process, the CPU the caseworkers' clients spent apart
//! from the nodes', the Ed25519 sign and verify cost on this machine, the signatures the
//! protocol does per passport, and the crypto floor they imply.
//!
//! Everything runs in one process, like the yardstick it is compared with, so CPU and memory
//! figures cover the requester, every holder and the caseworkers' clients together.
//!
//! Parameters follow the yardstick's meaning: `people` consented people, `records_per_person`
//! records per person per holder (so each holder holds about `people * records_per_person`
//! records), unless `holder_records` asks for a larger store, filled with people who gave no
//! consent (to measure cost against data size).

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::stream::{self, StreamExt, TryStreamExt};
use serde::Serialize;
use throughgate_protocol::audit::AuditEvent;
use throughgate_protocol::category::Purpose;
use throughgate_protocol::consent::{Collection, CollectionMethod, Consent};
use throughgate_protocol::credential::StaffRole;
use throughgate_protocol::envelope::Envelope;
use throughgate_protocol::ids::{AgencyId, ConsentId, PassportId, PersonId, QueryId};
use throughgate_protocol::manifest::Manifest;
use throughgate_protocol::messages::{
    Ack, AckOutcome, AckSubject, DeliveryState, HolderResult, Outcome, Response,
};

use crate::agencies::DemoAgency;
use crate::client::{passport_complete, ConsentPlan, HomeClient};
use crate::db::Db;
use crate::localfed::{FedOptions, LocalFedError, LocalFederation};
use crate::synth::{person_records, SynthConfig, SyntheticPerson};

/// The requesting agency: its caseworkers assemble every passport.
pub const REQUESTER: &str = "probation-yorks";

/// The order demo agencies join as holders when fewer than six are asked for (the requester
/// first, so it is always in the federation).
pub const HOLDER_ORDER: [&str; 6] = [
    "probation-yorks",
    "hmp-leeds",
    "nhs-wy",
    "dwp",
    "leeds-cc",
    "leeds-college",
];

/// Seconds of warm-up before measuring (as the yardstick).
pub const WARMUP: Duration = Duration::from_secs(2);

/// Connections the caseworker workers share (a node accepts at most 16 live connections per
/// member of staff by default; every worker here is the same caseworker, as in the yardstick).
pub const CLIENT_POOL: usize = 8;

/// Records written per storage batch while loading. Small on purpose: sled holds memory in
/// proportion to the batch when keys land all over a large tree (10^6 random-order keys in
/// batches of 10,000 left a 64 MiB-cache store at 4.8 GB resident; in batches of 100, 0.13 GB).
const LOAD_BATCH: usize = 200;

/// How much of a passport the bench's caseworker client verifies itself.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ClientVerify {
    /// Everything the home node verified, again: the query, the statement, every holder's
    /// response and receipt ([`HomeClient::passport`], as `tg passport assemble` does).
    #[default]
    Full,
    /// Only the home node's signed assembly statement, received over the connection pinned to
    /// the home node ([`HomeClient::passport_by_statement`]); each response is decoded to read
    /// its outcome, not verified again. The model of a conventional requester that verifies each
    /// holder's reply once.
    Statement,
}

impl ClientVerify {
    /// The name used on the command line and in reports.
    pub fn as_str(self) -> &'static str {
        match self {
            ClientVerify::Full => "full",
            ClientVerify::Statement => "statement",
        }
    }
}

/// CPU time of the calling thread so far, nanoseconds.
pub fn thread_cpu_ns() -> u64 {
    let t = rustix::time::clock_gettime(rustix::time::ClockId::ThreadCPUTime);
    u64::try_from(t.tv_sec)
        .unwrap_or(0)
        .saturating_mul(1_000_000_000)
        .saturating_add(u64::try_from(t.tv_nsec).unwrap_or(0))
}

/// Runs `fut`, adding to `ns` the CPU time its polls take on whichever thread polls them (work
/// it hands to other tasks, such as the QUIC connection's driver, is not counted).
pub async fn cpu_timed<F: std::future::Future>(fut: F, ns: &mut u64) -> F::Output {
    let mut fut = std::pin::pin!(fut);
    std::future::poll_fn(|cx| {
        let t0 = thread_cpu_ns();
        let r = fut.as_mut().poll(cx);
        *ns = ns.saturating_add(thread_cpu_ns().saturating_sub(t0));
        r
    })
    .await
}

/// A benchmark failure (setting up; errors during the load are counted, not raised).
#[derive(Debug, thiserror::Error)]
pub enum BenchError {
    /// The federation failed to start or a client failed.
    #[error(transparent)]
    Fed(#[from] LocalFedError),
    /// A client call failed during setup.
    #[error(transparent)]
    Client(#[from] crate::client::ClientError),
    /// Storage failed while loading records.
    #[error(transparent)]
    Store(#[from] crate::store::StoreError),
    /// The audit log failed.
    #[error(transparent)]
    Audit(#[from] crate::audit::AuditError),
    /// Something else went wrong while setting up.
    #[error("{0}")]
    Setup(String),
}

fn setup_err(m: impl Into<String>) -> BenchError {
    BenchError::Setup(m.into())
}

/// What federation to build.
#[derive(Debug, Clone)]
pub struct BenchOptions {
    /// Holder nodes (the requester is one of them, as in the demo federation).
    pub holders: usize,
    /// Consented people (each known to every holder).
    pub people: usize,
    /// Records per person per holder (the synthetic generator gives each person this number
    /// plus or minus one).
    pub records_per_person: usize,
    /// Fill every holder's store to at least this many records with people who gave no consent
    /// (for the data-size sweep). `None`: only the consented people's records.
    pub holder_records: Option<u64>,
    /// Generator seed.
    pub seed: u64,
    /// Every node's storage tuning (`[storage]` in a node's config; the page cache above all).
    pub storage: crate::config::Storage,
    /// Keep every node's state in PostgreSQL instead of sled: one throwaway cluster (fsync
    /// on) from the system's `initdb`/`pg_ctl`, one database per agency.
    pub postgres: bool,
    /// Where holders read records when they answer: their imported store, or (`Postgres`) a
    /// live PostgreSQL source each, a database of the agency's own in a throwaway cluster on
    /// this machine (the same cluster as the nodes' state with `postgres`), read through a
    /// mapping as a read-only role. `Http` is not benchmarked.
    pub records_source: crate::config::SourceKind,
}

impl Default for BenchOptions {
    fn default() -> BenchOptions {
        BenchOptions {
            holders: 6,
            people: 1000,
            records_per_person: 5,
            holder_records: None,
            seed: 2026,
            storage: crate::config::Storage::default(),
            postgres: false,
            records_source: crate::config::SourceKind::Store,
        }
    }
}

/// The agencies and synthetic holders for `holders` holders: the first `holders` of
/// [`HOLDER_ORDER`], then synthetic holders (`holder-07`, ...) shaped like the demo agencies in
/// turn.
pub fn holder_layout(holders: usize) -> (Vec<&'static str>, usize) {
    let demo: Vec<&'static str> = HOLDER_ORDER.iter().copied().take(holders.max(1)).collect();
    (demo, holders.saturating_sub(HOLDER_ORDER.len()))
}

/// One consented person.
#[derive(Debug, Clone)]
pub struct Consented {
    /// Their passport id.
    pub passport: PassportId,
    /// The consent recorded for them.
    pub consent: Consent,
}

/// How long setting up took.
#[derive(Debug, Clone, Default, Serialize)]
pub struct SetupTimes {
    /// Starting the nodes, seconds.
    pub start_s: f64,
    /// Generating and loading records, seconds.
    pub load_s: f64,
    /// Recording consent and waiting for every delivery, seconds.
    pub consent_s: f64,
}

/// A running benchmark federation with consent recorded.
pub struct BenchFederation {
    /// The federation.
    pub fed: LocalFederation,
    /// What it was built with.
    pub options: BenchOptions,
    /// The manifest as the requester's node serves it.
    pub manifest_env: Envelope,
    /// Its body.
    pub manifest: Manifest,
    /// The consented people.
    pub people: Arc<Vec<Consented>>,
    /// Records loaded per holder, in node order.
    pub records_per_holder: Vec<u64>,
    /// Setup timings.
    pub setup: SetupTimes,
    /// Peak RSS of the process while setting up (MiB).
    pub setup_peak_rss_mib: f64,
    /// The PostgreSQL cluster the nodes keep their state in, with `postgres`; stopped when
    /// the federation is shut down.
    cluster: Option<crate::pgcluster::TempCluster>,
    /// With a live source: the folder of its URL and mapping files.
    _source_files: Option<tempfile::TempDir>,
}

impl std::fmt::Debug for BenchFederation {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BenchFederation")
            .field("options", &self.options)
            .finish_non_exhaustive()
    }
}

fn known_to_all(p: &SyntheticPerson, agencies: &[&'static DemoAgency]) -> bool {
    agencies.iter().all(|a| p.is_known_to(a))
}

/// Loads `people`'s records into one holder's store in batches; with `target`, stops once the
/// store holds at least that many (the first `must` people are always loaded).
fn load_holder(
    db: &Db,
    agency: &'static DemoAgency,
    consented: &[SyntheticPerson],
    background: impl Iterator<Item = SyntheticPerson>,
    synth: &SynthConfig,
    target: Option<u64>,
) -> Result<u64, BenchError> {
    let mut batch = Vec::with_capacity(LOAD_BATCH + 16);
    let mut n = 0u64;
    let mut background = background;
    let mut i = 0usize;
    loop {
        let person = match consented.get(i) {
            Some(p) => p.clone(),
            None => {
                if target.is_none_or(|t| n + batch.len() as u64 >= t) {
                    break;
                }
                match background.next() {
                    Some(p) => p,
                    None => break,
                }
            }
        };
        i += 1;
        batch.extend(person_records(agency, &person, synth));
        if batch.len() >= LOAD_BATCH {
            db.put_records(&batch)?;
            n += batch.len() as u64;
            batch.clear();
        }
    }
    if !batch.is_empty() {
        db.put_records(&batch)?;
        n += batch.len() as u64;
    }
    Ok(n)
}

/// [`load_holder`] for a holder answering from a live PostgreSQL source: into the agency's
/// own database.
async fn load_source(
    client: &mut tokio_postgres::Client,
    agency: &'static DemoAgency,
    consented: &[SyntheticPerson],
    mut background: impl Iterator<Item = SyntheticPerson>,
    synth: &SynthConfig,
    target: Option<u64>,
) -> Result<u64, BenchError> {
    let mut n = 0u64;
    let mut batch = Vec::with_capacity(LOAD_BATCH + 16);
    let mut people = consented.iter().cloned();
    loop {
        let person = match people.next() {
            Some(p) => p,
            None if target.is_some_and(|t| n + (batch.len() as u64) < t) => {
                match background.next() {
                    Some(p) => p,
                    None => break,
                }
            }
            None => break,
        };
        batch.extend(person_records(agency, &person, synth));
        if batch.len() >= LOAD_BATCH {
            n += crate::livesource::load(client, &batch)
                .await
                .map_err(|e| setup_err(e.to_string()))?;
            batch.clear();
        }
    }
    if !batch.is_empty() {
        n += crate::livesource::load(client, &batch)
            .await
            .map_err(|e| setup_err(e.to_string()))?;
    }
    Ok(n)
}

/// Writes `text` to a new file readable by its owner only.
fn write_private(path: &std::path::Path, text: &str) -> Result<(), BenchError> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .and_then(|mut f| f.write_all(text.as_bytes()))
        .map_err(|e| setup_err(format!("{}: {e}", path.display())))
}

impl BenchFederation {
    /// Starts the federation, loads records and records consent for every person, waiting
    /// (by polling each consent's delivery state) until every holder has acknowledged and
    /// linked it.
    pub async fn setup(options: BenchOptions) -> Result<BenchFederation, BenchError> {
        if options.holders == 0 || options.people == 0 {
            return Err(setup_err("need at least one holder and one person"));
        }
        let t = Instant::now();
        let (agencies, synthetic) = holder_layout(options.holders);
        let live = match options.records_source {
            crate::config::SourceKind::Store => false,
            crate::config::SourceKind::Postgres => true,
            crate::config::SourceKind::Http => {
                return Err(setup_err("the benchmark has no http record source"))
            }
        };
        let shapes: Vec<&'static DemoAgency> = agencies
            .iter()
            .filter_map(|id| crate::agencies::demo_agency(id))
            .chain(
                (0..synthetic)
                    .filter_map(|k| crate::localfed::synthetic_holder(agencies.len() + k + 1)),
            )
            .collect();
        let cluster = if options.postgres || live {
            Some(
                crate::pgcluster::TempCluster::start(true)
                    .map_err(|e| setup_err(format!("PostgreSQL: {e}")))?,
            )
        } else {
            None
        };
        let mut postgres = std::collections::BTreeMap::new();
        let mut records = std::collections::BTreeMap::new();
        let mut sources = BTreeMap::new();
        let source_files = if live {
            Some(tempfile::tempdir().map_err(|e| setup_err(format!("temporary folder: {e}")))?)
        } else {
            None
        };
        let pg = |e: crate::pgcluster::ClusterError| setup_err(format!("PostgreSQL: {e}"));
        for a in &shapes {
            let db = a.id.replace('-', "_");
            if let (Some(cluster), true) = (&cluster, options.postgres) {
                postgres.insert(a.id.to_owned(), cluster.create_database(&db).map_err(pg)?);
            }
            if let (Some(cluster), Some(dir)) = (&cluster, &source_files) {
                let src = format!("source_{db}");
                let url = cluster.create_database(&src).map_err(pg)?;
                let client = crate::livesource::create(&url)
                    .await
                    .map_err(|e| setup_err(e.to_string()))?;
                sources.insert(a.id.to_owned(), client);
                let url_file = dir.path().join(format!("{}-url", a.id));
                let mapping_file = dir.path().join(format!("{}-mapping.toml", a.id));
                write_private(
                    &url_file,
                    &crate::livesource::reader_url(cluster.socket_dir(), &src),
                )?;
                std::fs::write(
                    &mapping_file,
                    crate::livesource::mapping(a, options.seed, options.records_per_person),
                )
                .map_err(|e| setup_err(format!("mapping file: {e}")))?;
                records.insert(
                    a.id.to_owned(),
                    crate::config::RecordsRules {
                        source: crate::config::SourceKind::Postgres,
                        postgres: Some(crate::config::PostgresSource {
                            url_file,
                            mapping_file,
                        }),
                        ..Default::default()
                    },
                );
            }
        }
        let fed = LocalFederation::start(FedOptions {
            people: 0,
            records_per_person: options.records_per_person,
            seed: options.seed,
            agencies,
            synthetic_holders: synthetic,
            // A benchmark drives one caseworker far past any human rate: no rate limits here.
            limits: crate::config::Limits {
                caseworker_queries_per_sec: 0,
                peer_requests_per_sec: 0,
                ..Default::default()
            },
            // Nor on consent recording: setup records one consent per person from one
            // caseworker.
            consent: crate::config::ConsentRules {
                recordings_per_caseworker_per_hour: 0,
                recordings_per_node_per_hour: 0,
                deliveries_per_peer_per_hour: 0,
                ..Default::default()
            },
            storage: options.storage.clone(),
            postgres,
            records,
            ..FedOptions::default()
        })
        .await?;
        let start_s = t.elapsed().as_secs_f64();

        // The population: the first `people` persons every holder knows are consented; the
        // rest (only made when a store size is asked for) fill the stores.
        let t = Instant::now();
        let shapes: Vec<&'static DemoAgency> = fed.nodes.iter().map(|n| n.agency).collect();
        let mut synth = SynthConfig {
            seed: options.seed,
            people: options.people.saturating_mul(2).max(1000),
            records_per_person: options.records_per_person,
            reference_date: fed.reference_date(),
        };
        // People are made one at a time by index, so filling stores with millions of records
        // never holds millions of people in memory: the consented ones are the first
        // `people` indices known to every holder; the rest, in index order, fill the stores.
        synth.people = crate::synth::MAX_PEOPLE;
        let generator = crate::synth::PersonGenerator::new(&synth);
        let mut consented = Vec::with_capacity(options.people);
        let mut consented_index = std::collections::HashSet::new();
        for i in 0..crate::synth::MAX_PEOPLE {
            if consented.len() >= options.people {
                break;
            }
            let p = generator.person(i);
            if known_to_all(&p, &shapes) {
                consented_index.insert(i);
                consented.push(p);
            }
        }
        if consented.len() < options.people {
            return Err(setup_err(
                "not enough synthetic people known to every holder",
            ));
        }
        let consented_index = Arc::new(consented_index);
        let shared: Arc<Vec<SyntheticPerson>> = Arc::new(consented.clone());
        let mut records_per_holder = Vec::new();
        // A live source: the records go to the agency's own database, none to the node.
        for n in fed.nodes.iter().filter(|_| live) {
            let Some(client) = sources.get_mut(n.id.as_str()) else {
                return Err(setup_err(format!("no record source for {}", n.id)));
            };
            let background = (0..crate::synth::MAX_PEOPLE)
                .filter(|i| !consented_index.contains(i))
                .map(|i| generator.person(i));
            records_per_holder.push(
                load_source(
                    client,
                    n.agency,
                    &consented,
                    background,
                    &synth,
                    options.holder_records,
                )
                .await?,
            );
        }
        drop(sources);
        let loads = fed.nodes.iter().filter(|_| !live).filter_map(|n| {
            let db = n.node.as_ref()?.state().db.clone();
            let agency = n.agency;
            let people = shared.clone();
            let skip = consented_index.clone();
            let generator = generator.clone();
            let target = options.holder_records;
            Some(tokio::task::spawn_blocking(move || {
                let background = (0..crate::synth::MAX_PEOPLE)
                    .filter(|i| !skip.contains(i))
                    .map(|i| generator.person(i));
                load_holder(&db, agency, &people, background, &synth, target)
            }))
        });
        for r in futures::future::join_all(loads).await {
            records_per_holder.push(r.map_err(|e| setup_err(e.to_string()))??);
        }
        drop(shared);
        let load_s = t.elapsed().as_secs_f64();

        // Consent, recorded at the requester by its caseworker, for every holder.
        let t = Instant::now();
        let client = fed.client(REQUESTER, StaffRole::Caseworker).await?;
        let (manifest_env, manifest) = client.manifest().await?;
        let requester = AgencyId::new(REQUESTER).map_err(|e| setup_err(e.to_string()))?;
        let now = fed.now();
        let plans: Vec<ConsentPlan> = consented
            .iter()
            .map(|p| ConsentPlan {
                passport_id: PassportId::random(),
                purpose: Purpose::Resettlement,
                holders: fed
                    .nodes
                    .iter()
                    .map(|n| {
                        (
                            n.id.clone(),
                            p.identifier(n.agency.scheme),
                            n.agency.categories.to_vec(),
                        )
                    })
                    .collect(),
                grantees: vec![requester.clone()],
                valid_from: now,
                valid_until: now.plus_secs(7 * 86_400),
                records_from: None,
                records_until: None,
                legal_basis: "UK GDPR Art. 6(1)(e)".into(),
                jurisdiction: "England and Wales".into(),
                collection: Collection {
                    method: CollectionMethod::SignedPaperForm,
                    reference: format!("BENCH-{}", p.index),
                },
                privacy_notice: "Throughgate benchmark: synthetic people only.".into(),
                supersedes: None,
            })
            .collect();
        let client = &client;
        let recorded: Vec<(ConsentId, Consented)> = stream::iter(plans)
            .map(|plan| async move {
                let signed = client.sign_consent(&plan);
                let consent: Consent = signed
                    .envelope
                    .open()
                    .map_err(|e| setup_err(format!("consent: {e}")))?;
                let id = signed.consent_id.clone();
                client.record_consent(signed).await?;
                Ok::<_, BenchError>((
                    id,
                    Consented {
                        passport: plan.passport_id,
                        consent,
                    },
                ))
            })
            .buffered(16)
            .try_collect()
            .await?;
        let deadline = Instant::now()
            + Duration::from_secs(60)
            + Duration::from_millis(20 * (options.people * options.holders) as u64);
        stream::iter(recorded.iter().map(|(id, _)| id))
            .map(|id| wait_linked(client, id, deadline))
            .buffer_unordered(16)
            .try_collect::<Vec<()>>()
            .await?;
        let consent_s = t.elapsed().as_secs_f64();
        let setup_peak_rss_mib = peak_rss_mib();
        Ok(BenchFederation {
            fed,
            cluster,
            _source_files: source_files,
            options,
            manifest_env,
            manifest,
            people: Arc::new(recorded.into_iter().map(|(_, c)| c).collect()),
            records_per_holder,
            setup: SetupTimes {
                start_s,
                load_s,
                consent_s,
            },
            setup_peak_rss_mib,
        })
    }

    /// A pool of connected caseworker clients at the requester (the workers share them; each
    /// call is its own QUIC stream, so a connection carries many passports at once).
    pub async fn clients(&self, n: usize) -> Result<Vec<HomeClient>, BenchError> {
        let mut out = Vec::with_capacity(n);
        for _ in 0..n {
            out.push(self.fed.client(REQUESTER, StaffRole::Caseworker).await?);
        }
        Ok(out)
    }

    /// Audit log sizes and checkpoint counts of every node, now.
    pub fn audit_marks(&self) -> Result<Vec<AuditMark>, BenchError> {
        let mut out = Vec::new();
        for n in &self.fed.nodes {
            let Some(node) = n.node.as_ref() else {
                continue;
            };
            let db = &node.state().db;
            let size = db.audit_state()?.map_or(0, |s| s.size);
            let checkpoints = db.audit_checkpoints(0, usize::MAX)?.len() as u64;
            out.push(AuditMark {
                agency: n.id.to_string(),
                entries: size,
                checkpoints,
            });
        }
        Ok(out)
    }

    /// Warms up for `warmup`, then drives `concurrency` caseworkers, each verifying as `verify`
    /// says, for `duration` and measures. `crypto` is the cost measured in the same run.
    pub async fn measure(
        &self,
        concurrency: usize,
        verify: ClientVerify,
        warmup: Duration,
        duration: Duration,
        crypto: &CryptoCost,
    ) -> Result<BenchReport, BenchError> {
        let concurrency = concurrency.max(1);
        let clients: Arc<Vec<HomeClient>> =
            Arc::new(self.clients(concurrency.min(CLIENT_POOL)).await?);
        drive(self, &clients, concurrency, verify, warmup).await;
        reset_peak_rss();
        let before = self.audit_marks()?;
        let cpu0 = cpu_seconds();
        let switches0 = context_switches();
        let (signs0, verifies0) = throughgate_protocol::keys::counts::get();
        let t0 = Instant::now();
        let run = drive(self, &clients, concurrency, verify, duration).await;
        let wall = t0.elapsed().as_secs_f64();
        let cpu = cpu_seconds() - cpu0;
        let switches = context_switches().saturating_sub(switches0);
        let (signs1, verifies1) = throughgate_protocol::keys::counts::get();
        let after = self.audit_marks()?;
        let peak = peak_rss_mib();
        if let Ok(c) = Arc::try_unwrap(clients) {
            for client in c {
                client.close().await;
            }
        }
        let passports_n = run.latencies_us.len() as u64;
        let passports = passports_n as f64;
        let holders = self.options.holders as f64;
        // Checkpoints signed during the run, per passport, and the mean batch size.
        let new_cp: u64 = after
            .iter()
            .zip(&before)
            .map(|(a, b)| a.checkpoints.saturating_sub(b.checkpoints))
            .sum();
        let new_entries: u64 = after
            .iter()
            .zip(&before)
            .map(|(a, b)| a.entries.saturating_sub(b.entries))
            .sum();
        let cp_per_passport = if passports > 0.0 {
            new_cp as f64 / passports
        } else {
            holders + 1.0
        };
        // The signature work actually done in the window (every party is in this process),
        // per passport; the floor is computed from it.
        let per = |n: u64| {
            if passports > 0.0 {
                n as f64 / passports
            } else {
                0.0
            }
        };
        let measured = MeasuredCrypto {
            signs: per(signs1.saturating_sub(signs0)),
            verifies: per(verifies1.saturating_sub(verifies0)),
        };
        let floor = crypto.floor(measured.signs, measured.verifies);
        let pps = passports / wall.max(1e-9);
        let mut lat = run.latencies_us;
        lat.sort_unstable();
        Ok(BenchReport {
            system: format!(
                "throughgate quic+cbor+ed25519, merkle audit log, {} store, records from {}",
                if self.options.postgres {
                    "postgresql"
                } else {
                    "sled"
                },
                self.records_source()
            ),
            records_source: self.records_source().to_owned(),
            holders: self.options.holders,
            nodes: self.fed.nodes.len(),
            people: self.options.people,
            records_per_person: self.options.records_per_person,
            records_per_holder: self.records_per_holder.clone(),
            concurrency,
            durable: true,
            commit_delay_ms: self.options.storage.commit_delay_ms,
            duration_s: wall,
            passports: passports_n,
            passports_per_sec: pps,
            holder_queries_per_sec: run.holder_queries as f64 / wall.max(1e-9),
            latency_ms: Latency::from_sorted_us(&lat),
            client_verify: verify,
            cpu_ms_per_passport: if passports > 0.0 {
                cpu * 1000.0 / passports
            } else {
                0.0
            },
            client_cpu_ms_per_passport: per(run.client_cpu_ns) / 1e6,
            node_cpu_ms_per_passport: if passports > 0.0 {
                (cpu - run.client_cpu_ns as f64 / 1e9).max(0.0) * 1000.0 / passports
            } else {
                0.0
            },
            cpu_utilisation: cpu / wall.max(1e-9) / crypto.cores,
            context_switches_per_passport: per(switches),
            peak_rss_mib: peak,
            peak_rss_per_node_mib: peak / self.fed.nodes.len().max(1) as f64,
            setup_peak_rss_mib: self.setup_peak_rss_mib,
            sign_us: crypto.sign_us,
            verify_us: crypto.verify_us,
            verify_with_key_decode_us: crypto.verify_with_key_decode_us,
            cores: crypto.cores,
            signs_per_passport: measured.signs,
            verifies_per_passport: measured.verifies,
            checkpoint_signs_per_passport: cp_per_passport,
            audit_per_node: after
                .iter()
                .zip(&before)
                .map(|(a, b)| AuditMark {
                    agency: a.agency.clone(),
                    entries: a.entries.saturating_sub(b.entries),
                    checkpoints: a.checkpoints.saturating_sub(b.checkpoints),
                })
                .collect(),
            audit_entries_per_checkpoint: if new_cp > 0 {
                new_entries as f64 / new_cp as f64
            } else {
                0.0
            },
            crypto_floor_passports_per_sec: floor,
            floor_fraction: if floor > 0.0 { pps / floor } else { 0.0 },
            errors: run.errors,
            error_samples: run.error_samples,
            setup: self.setup.clone(),
        })
    }

    /// Where the holders read records, in words.
    fn records_source(&self) -> &'static str {
        match self.options.records_source {
            crate::config::SourceKind::Store => "the store",
            _ => "a live postgresql source",
        }
    }

    /// Stops every node.
    pub async fn shutdown(self) {
        self.fed.shutdown().await;
        drop(self.cluster);
    }
}

/// `tg passport assemble` timed as a whole, fresh process.
#[derive(Debug, Clone, Serialize)]
pub struct ColdReport {
    /// Runs that succeeded.
    pub runs: usize,
    /// Runs that failed (non-zero exit).
    pub failures: usize,
    /// Median wall-clock milliseconds, process start to exit.
    pub p50_ms: f64,
    /// Fastest run.
    pub min_ms: f64,
    /// Slowest run.
    pub max_ms: f64,
    /// The command timed (one of them).
    pub command: String,
}

impl BenchFederation {
    /// Writes a profile (key, credential, pinned node key) for the requester's caseworker into
    /// `dir`, as `tg staff` would give one; returns its path.
    pub fn write_profile(&self, dir: &std::path::Path) -> Result<std::path::PathBuf, BenchError> {
        let n = self
            .fed
            .node(REQUESTER)
            .ok_or_else(|| setup_err("no requester node"))?;
        let staff = n
            .staff
            .get(&StaffRole::Caseworker)
            .ok_or_else(|| setup_err("no caseworker"))?;
        let cred: throughgate_protocol::credential::Credential = staff
            .credential
            .open()
            .map_err(|e| setup_err(e.to_string()))?;
        let io = |e: crate::keyfile::KeyFileError| setup_err(e.to_string());
        crate::keyfile::write_secret_key(&dir.join("caseworker.key"), &staff.key).map_err(io)?;
        crate::keyfile::write_private_file(
            &dir.join("caseworker.cred"),
            &staff.credential.to_bytes(),
        )
        .map_err(io)?;
        let profile = crate::client::Profile {
            agency: n.id.clone(),
            node_address: n.addr.to_string(),
            replica_addresses: Vec::new(),
            node_key: n.key.public(),
            person_id: cred.person_id,
            key_file: "caseworker.key".into(),
            credential_file: "caseworker.cred".into(),
            base_dir: dir.to_path_buf(),
        };
        let path = dir.join("profile.toml");
        std::fs::write(&path, profile.to_toml()).map_err(|e| setup_err(e.to_string()))?;
        Ok(path)
    }

    /// Runs `exe passport assemble --passport P --profile ... --json` `runs` times, one after
    /// another, each a fresh process (key and profile read, QUIC handshake, manifest and
    /// consent look-up, assembly, verification, rendering), and times each from spawn to exit.
    pub async fn cold_assemble(
        &self,
        exe: &std::path::Path,
        runs: usize,
    ) -> Result<ColdReport, BenchError> {
        let dir = tempfile::Builder::new()
            .prefix("throughgate-bench-profile-")
            .tempdir()
            .map_err(|e| setup_err(e.to_string()))?;
        let profile = self.write_profile(dir.path())?;
        let exe = exe.to_path_buf();
        let passports: Vec<String> = self
            .people
            .iter()
            .take(runs.max(1))
            .map(|p| p.passport.to_string())
            .collect();
        let command = format!(
            "{} passport assemble --passport PASSPORT --profile {} --json",
            exe.display(),
            profile.display()
        );
        let runs = runs.max(1);
        let (mut times, failures) = tokio::task::spawn_blocking(move || {
            let mut times = Vec::new();
            let mut failures = 0usize;
            for i in 0..runs {
                let Some(pp) = passports.get(i % passports.len().max(1)) else {
                    break;
                };
                let t = Instant::now();
                let status = std::process::Command::new(&exe)
                    .args(["passport", "assemble", "--passport", pp, "--json"])
                    .arg("--profile")
                    .arg(&profile)
                    .stdout(std::process::Stdio::null())
                    .stderr(std::process::Stdio::null())
                    .status();
                let ms = t.elapsed().as_secs_f64() * 1000.0;
                match status {
                    Ok(s) if s.success() => times.push(ms),
                    _ => failures += 1,
                }
            }
            (times, failures)
        })
        .await
        .map_err(|e| setup_err(e.to_string()))?;
        drop(dir);
        times.sort_by(f64::total_cmp);
        Ok(ColdReport {
            runs: times.len(),
            failures,
            p50_ms: times.get(times.len() / 2).copied().unwrap_or(0.0),
            min_ms: times.first().copied().unwrap_or(0.0),
            max_ms: times.last().copied().unwrap_or(0.0),
            command,
        })
    }
}

/// Polls a consent's delivery state until every recipient acknowledged it; every holder must
/// have linked the person.
async fn wait_linked(
    client: &HomeClient,
    id: &ConsentId,
    deadline: Instant,
) -> Result<(), BenchError> {
    loop {
        let (_, _, deliveries) = client.show_consent(id).await?;
        let grants: Vec<_> = deliveries
            .iter()
            .filter(|d| d.subject == AckSubject::Grant)
            .collect();
        if !grants.is_empty() && grants.iter().all(|d| d.state != DeliveryState::Pending) {
            for d in grants {
                if d.state != DeliveryState::Delivered {
                    return Err(setup_err(format!(
                        "consent {id} was rejected by {}: {}",
                        d.agency,
                        d.last_error.as_deref().unwrap_or("")
                    )));
                }
                let ack: Option<Ack> = d.ack.as_ref().and_then(|a| a.open().ok());
                if let Some(ack) = ack {
                    if ack.outcome == AckOutcome::NotHeld {
                        return Err(setup_err(format!(
                            "{} does not hold the person of consent {id}",
                            d.agency
                        )));
                    }
                }
            }
            return Ok(());
        }
        if Instant::now() > deadline {
            let pending: Vec<String> = deliveries
                .iter()
                .filter(|d| d.state == DeliveryState::Pending)
                .map(|d| {
                    format!(
                        "{} ({} attempts: {})",
                        d.agency,
                        d.attempts,
                        d.last_error.as_deref().unwrap_or("no answer yet")
                    )
                })
                .collect();
            return Err(setup_err(format!(
                "deliveries of consent {id} still pending: {}",
                pending.join("; ")
            )));
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// A node's audit log at one moment.
#[derive(Debug, Clone, Serialize)]
pub struct AuditMark {
    /// The node.
    pub agency: String,
    /// Entries in its log.
    pub entries: u64,
    /// Signed checkpoints stored (one per commit batch).
    pub checkpoints: u64,
}

/// What the workers saw.
#[derive(Debug, Default)]
struct RunResult {
    latencies_us: Vec<u32>,
    holder_queries: u64,
    /// CPU the caseworker clients' calls took, nanoseconds, over every passport (failed ones
    /// included).
    client_cpu_ns: u64,
    errors: u64,
    error_samples: Vec<String>,
}

/// What one caseworker's passport gave, as far as the bench checks it: each holder's result
/// and, for an answered one, its decoded response (verified, with [`ClientVerify::Full`]).
struct Seen {
    results: Vec<(HolderResult, Option<Response>, Option<String>)>,
    complete: bool,
}

/// One passport for `person` through `client`, verified as `verify` says.
async fn one_passport(
    client: &HomeClient,
    menv: &Envelope,
    manifest: &Manifest,
    person: &Consented,
    verify: ClientVerify,
) -> Result<Seen, String> {
    match verify {
        ClientVerify::Full => {
            let (_, v) = client
                .passport(
                    menv,
                    manifest,
                    &person.passport,
                    Some(&person.consent),
                    None,
                    Purpose::Resettlement,
                    &[],
                    None,
                )
                .await
                .map_err(|e| e.to_string())?;
            Ok(Seen {
                complete: passport_complete(&v),
                results: v
                    .results
                    .into_iter()
                    .map(|r| (r.result, r.response, r.problem.map(|p| p.to_string())))
                    .collect(),
            })
        }
        ClientVerify::Statement => {
            let (bundle, _) = client
                .passport_by_statement(
                    menv,
                    manifest,
                    &person.passport,
                    Some(&person.consent),
                    None,
                    Purpose::Resettlement,
                    &[],
                )
                .await
                .map_err(|e| e.to_string())?;
            let results: Vec<_> = bundle
                .results
                .into_iter()
                .map(|r| {
                    let (response, problem) = match r.response.as_ref().map(Envelope::open) {
                        Some(Ok(x)) => (Some(x), None),
                        Some(Err(e)) => (None, Some(e.to_string())),
                        None => (None, None),
                    };
                    (r, response, problem)
                })
                .collect();
            Ok(Seen {
                complete: results.iter().all(|(r, _, p)| {
                    p.is_none()
                        && r.status == throughgate_protocol::messages::HolderStatus::Answered
                }),
                results,
            })
        }
    }
}

/// Why a passport the bench saw is not a success (every holder answered and disclosed), if
/// it is not.
fn problem_of(res: &Result<Seen, String>, holders: usize) -> Option<String> {
    let v = match res {
        Err(e) => return Some(e.clone()),
        Ok(v) => v,
    };
    if !v.complete {
        return Some(
            v.results
                .iter()
                .find(|(r, _, p)| {
                    p.is_some()
                        || r.status != throughgate_protocol::messages::HolderStatus::Answered
                })
                .map_or_else(
                    || "incomplete or invalid".to_owned(),
                    |(r, _, p)| {
                        format!(
                            "{}: {} {}",
                            r.agency,
                            r.status.as_str(),
                            p.clone()
                                .unwrap_or_else(|| r.detail.clone().unwrap_or_default())
                        )
                    },
                ),
        );
    }
    if v.results.len() != holders {
        return Some(format!("{} of {holders} holders answered", v.results.len()));
    }
    v.results
        .iter()
        .find(|(_, x, _)| x.as_ref().is_none_or(|x| x.outcome != Outcome::Disclosed))
        .map(|(r, x, _)| {
            format!(
                "{}: {}",
                r.agency,
                x.as_ref().map_or_else(
                    || r.status.as_str().to_owned(),
                    |x| format!(
                        "{} {}",
                        x.outcome,
                        x.reason.map(|r| r.as_str()).unwrap_or("")
                    )
                )
            )
        })
}

/// Runs every client in a loop for `duration`: pick a consented person, assemble and verify as
/// `verify` says, timing the CPU each client call takes.
async fn drive(
    bench: &BenchFederation,
    clients: &Arc<Vec<HomeClient>>,
    workers: usize,
    verify: ClientVerify,
    duration: Duration,
) -> RunResult {
    let stop = Instant::now() + duration;
    let mut tasks = tokio::task::JoinSet::new();
    for i in 0..workers {
        let clients = clients.clone();
        let people = bench.people.clone();
        let menv = bench.manifest_env.clone();
        let manifest = bench.manifest.clone();
        let holders = bench.options.holders;
        tasks.spawn(async move {
            let mut out = RunResult::default();
            let Some(client) = clients.get(i % clients.len().max(1)) else {
                return out;
            };
            let mut rng = rand::rngs::OsRng;
            while Instant::now() < stop {
                let pick = rand::Rng::gen_range(&mut rng, 0..people.len().max(1));
                let Some(person) = people.get(pick) else {
                    break;
                };
                let t = Instant::now();
                let res = cpu_timed(
                    one_passport(client, &menv, &manifest, person, verify),
                    &mut out.client_cpu_ns,
                )
                .await;
                let us = u32::try_from(t.elapsed().as_micros()).unwrap_or(u32::MAX);
                let problem = problem_of(&res, holders);
                match problem {
                    None => {
                        out.latencies_us.push(us);
                        if let Ok(v) = &res {
                            out.holder_queries += v.results.len() as u64;
                        }
                    }
                    Some(p) => {
                        out.errors += 1;
                        if out.error_samples.len() < 3 {
                            out.error_samples.push(p);
                        }
                    }
                }
            }
            out
        });
    }
    let mut all = RunResult::default();
    while let Some(r) = tasks.join_next().await {
        match r {
            Ok(r) => {
                all.latencies_us.extend(r.latencies_us);
                all.holder_queries += r.holder_queries;
                all.client_cpu_ns += r.client_cpu_ns;
                all.errors += r.errors;
                for s in r.error_samples {
                    if all.error_samples.len() < 5 {
                        all.error_samples.push(s);
                    }
                }
            }
            Err(e) => {
                all.errors += 1;
                all.error_samples.push(format!("worker failed: {e}"));
            }
        }
    }
    all
}

/// Latency percentiles in milliseconds.
#[derive(Debug, Clone, Copy, Default, Serialize)]
pub struct Latency {
    /// Median.
    pub p50: f64,
    /// 95th percentile.
    pub p95: f64,
    /// 99th percentile.
    pub p99: f64,
    /// Slowest.
    pub max: f64,
}

impl Latency {
    /// Nearest-rank percentiles of sorted microsecond samples.
    pub fn from_sorted_us(sorted: &[u32]) -> Latency {
        let q = |p: f64| -> f64 {
            if sorted.is_empty() {
                return 0.0;
            }
            let rank = ((p * sorted.len() as f64).ceil() as usize).clamp(1, sorted.len());
            sorted.get(rank - 1).map_or(0.0, |v| f64::from(*v) / 1000.0)
        };
        Latency {
            p50: q(0.50),
            p95: q(0.95),
            p99: q(0.99),
            max: sorted.last().map_or(0.0, |v| f64::from(*v) / 1000.0),
        }
    }
}

/// One benchmark point's results. Field names match the yardstick's JSON.
#[derive(Debug, Clone, Serialize)]
pub struct BenchReport {
    /// What was measured.
    pub system: String,
    /// Where the holders read records: `the store` or `a live postgresql source`.
    pub records_source: String,
    /// Holder nodes.
    pub holders: usize,
    /// Nodes in the process (the requester is also a holder).
    pub nodes: usize,
    /// Consented people.
    pub people: usize,
    /// Records per person per holder (about).
    pub records_per_person: usize,
    /// Records loaded into each holder's store.
    pub records_per_holder: Vec<u64>,
    /// Concurrent caseworkers.
    pub concurrency: usize,
    /// Always true: Throughgate's audit log is always durable (fsync before any disclosure).
    pub durable: bool,
    /// Every node's audit commit delay, milliseconds (`[storage] commit_delay_ms`).
    pub commit_delay_ms: u64,
    /// Measured seconds.
    pub duration_s: f64,
    /// Passports assembled and verified in the measured window.
    pub passports: u64,
    /// Passports per second.
    pub passports_per_sec: f64,
    /// Holder queries answered per second.
    pub holder_queries_per_sec: f64,
    /// Latency of one passport as the caseworker sees it (sign, assemble, verify).
    pub latency_ms: Latency,
    /// How much the caseworker clients verified themselves.
    pub client_verify: ClientVerify,
    /// CPU (user + system, whole process) per passport, milliseconds.
    pub cpu_ms_per_passport: f64,
    /// CPU the caseworker clients' calls took per passport, milliseconds: thread CPU time while
    /// each call was being polled (signing, encoding, stream reads and writes, decoding and
    /// verification). The QUIC driver tasks of the clients' connections are not in it.
    pub client_cpu_ms_per_passport: f64,
    /// `cpu_ms_per_passport` less `client_cpu_ms_per_passport`: the nodes' share (with the
    /// clients' QUIC drivers and the bench's own bookkeeping).
    pub node_cpu_ms_per_passport: f64,
    /// CPU seconds used per second of wall time, over the cores available (0 to 1).
    pub cpu_utilisation: f64,
    /// Context switches of every thread of the process per passport (a lower bound: see
    /// [`context_switches`]). Threads waking each other is where CPU goes besides the work.
    pub context_switches_per_passport: f64,
    /// Peak resident memory of the whole process (every node) during the run, MiB.
    pub peak_rss_mib: f64,
    /// `peak_rss_mib` divided by the nodes (all share one process; not measured per node).
    pub peak_rss_per_node_mib: f64,
    /// Peak resident memory while setting up (loading records), MiB.
    pub setup_peak_rss_mib: f64,
    /// Ed25519 sign, microseconds (measured in this run).
    pub sign_us: f64,
    /// Ed25519 strict verify with a decoded key, microseconds (measured in this run).
    pub verify_us: f64,
    /// Strict verify including decoding the public key, as Throughgate's `verify_strict` does.
    pub verify_with_key_decode_us: f64,
    /// Cores available.
    pub cores: f64,
    /// Signatures made per passport (all parties).
    pub signs_per_passport: f64,
    /// Signature verifications per passport (all parties).
    pub verifies_per_passport: f64,
    /// Audit checkpoints signed per passport in the run (one per commit batch, all nodes).
    pub checkpoint_signs_per_passport: f64,
    /// Audit entries appended and checkpoints signed at each node during the run.
    pub audit_per_node: Vec<AuditMark>,
    /// Audit entries per signed checkpoint in the run (the mean commit batch).
    pub audit_entries_per_checkpoint: f64,
    /// Passports per second if signatures were the only cost.
    pub crypto_floor_passports_per_sec: f64,
    /// Achieved fraction of the crypto floor.
    pub floor_fraction: f64,
    /// Passports that failed (any holder not answered and disclosed, any verification failure).
    pub errors: u64,
    /// A few of the errors.
    pub error_samples: Vec<String>,
    /// Setup timings.
    pub setup: SetupTimes,
}

// ---------------------------------------------------------------------------------------------
// Crypto cost and the signature budget.

/// Ed25519 costs on this machine, measured now.
#[derive(Debug, Clone, Copy, Serialize)]
pub struct CryptoCost {
    /// Microseconds per signature.
    pub sign_us: f64,
    /// Microseconds per strict verification (key already decoded; as the yardstick measures).
    pub verify_us: f64,
    /// Microseconds per strict verification through Throughgate's `PublicKey::verify_strict`,
    /// which decodes the key point each time.
    pub verify_with_key_decode_us: f64,
    /// Cores available to this process.
    pub cores: f64,
}

impl CryptoCost {
    /// Measures sign and strict verify over a 200-byte message, `n` iterations each (the
    /// yardstick uses 3000).
    pub fn measure(n: usize) -> CryptoCost {
        use ed25519_dalek::{Signer, SigningKey};
        let n = n.max(1);
        let key = SigningKey::generate(&mut rand::rngs::OsRng);
        let vk = key.verifying_key();
        let msg = vec![7u8; 200];
        let t = Instant::now();
        let mut sig = key.sign(&msg);
        for _ in 0..n {
            sig = key.sign(std::hint::black_box(&msg));
        }
        let sign_us = t.elapsed().as_secs_f64() * 1e6 / n as f64;
        let t = Instant::now();
        let mut ok = 0usize;
        for _ in 0..n {
            ok += usize::from(vk.verify_strict(std::hint::black_box(&msg), &sig).is_ok());
        }
        let verify_us = t.elapsed().as_secs_f64() * 1e6 / n as f64;
        let pk = throughgate_protocol::keys::PublicKey::from_bytes(vk.to_bytes());
        let bytes = sig.to_bytes();
        let t = Instant::now();
        if let Ok(pk) = pk {
            for _ in 0..n {
                ok += usize::from(pk.verify_strict(std::hint::black_box(&msg), &bytes));
            }
        }
        let verify_with_key_decode_us = t.elapsed().as_secs_f64() * 1e6 / n as f64;
        std::hint::black_box(ok);
        CryptoCost {
            sign_us,
            verify_us,
            verify_with_key_decode_us,
            cores: std::thread::available_parallelism().map_or(1, |c| c.get()) as f64,
        }
    }

    /// Passports per second if `signs` signatures and `verifies` verifications per passport
    /// were the only work, on every core: `cores / (signs * sign + verifies * verify)` (the
    /// yardstick's formula).
    pub fn floor(&self, signs: f64, verifies: f64) -> f64 {
        let per = signs * self.sign_us + verifies * self.verify_us;
        if per > 0.0 {
            self.cores * 1e6 / per
        } else {
            0.0
        }
    }
}

/// Signature work counted in a measured window, per passport.
#[derive(Debug, Clone, Copy)]
struct MeasuredCrypto {
    signs: f64,
    verifies: f64,
}

/// One line of the per-passport signature budget.
#[derive(Debug, Clone, Serialize)]
pub struct BudgetLine {
    /// Who does it.
    pub who: &'static str,
    /// What.
    pub what: &'static str,
    /// Signatures per passport.
    pub signs: f64,
    /// Verifications per passport, before any cache.
    pub verifies: f64,
    /// Whether the party remembers the signature once verified (a credential, a checkpoint
    /// shared by a commit batch), so that in steady state most of these are not repeated.
    pub cached: bool,
}

/// The signatures and verifications one passport needs, party by party, as the code does them
/// (the client path of `tg passport assemble` without live progress, the home node's fan-out,
/// each holder), before signature caches. The run reports the counts actually made.
#[derive(Debug, Clone, Serialize)]
pub struct SignatureBudget {
    /// Holders asked.
    pub holders: usize,
    /// The lines.
    pub lines: Vec<BudgetLine>,
}

impl SignatureBudget {
    /// The budget for `holders` holders, with `checkpoint_signs` audit checkpoints signed per
    /// passport across all nodes (measured; at most `holders + 1`, one per log entry).
    pub fn new(holders: usize, checkpoint_signs: f64) -> SignatureBudget {
        let h = holders as f64;
        let l = |who, what, signs, verifies, cached| BudgetLine {
            who,
            what,
            signs,
            verifies,
            cached,
        };
        SignatureBudget {
            holders,
            lines: vec![
                l("caseworker", "sign the query", 1.0, 0.0, false),
                l("caseworker", "sign the client request", 1.0, 0.0, false),
                l("home node", "verify the client request", 0.0, 1.0, false),
                l(
                    "home node",
                    "verify the caseworker's credential",
                    0.0,
                    1.0,
                    true,
                ),
                l(
                    "home node",
                    "verify the caseworker's query signature",
                    0.0,
                    1.0,
                    false,
                ),
                l("home node", "countersign the query", 1.0, 0.0, false),
                l(
                    "holders",
                    "verify the requester node's signature",
                    0.0,
                    h,
                    false,
                ),
                l(
                    "holders",
                    "verify the caseworker's credential",
                    0.0,
                    h,
                    true,
                ),
                l(
                    "holders",
                    "verify the caseworker's signature",
                    0.0,
                    h,
                    false,
                ),
                l(
                    "all nodes",
                    "sign audit checkpoints (one per commit batch, measured)",
                    checkpoint_signs,
                    0.0,
                    false,
                ),
                l("holders", "sign the response", h, 0.0, false),
                l(
                    "home node",
                    "verify each response (its signature covers the receipt's checkpoint)",
                    0.0,
                    h,
                    false,
                ),
                l("home node", "sign the assembly statement", 1.0, 0.0, false),
                l("home node", "sign the final answer", 1.0, 0.0, false),
                l("caseworker", "verify the final answer", 0.0, 1.0, false),
                l(
                    "caseworker",
                    "verify the assembly statement",
                    0.0,
                    1.0,
                    false,
                ),
                l(
                    "caseworker",
                    "verify the query's node signature",
                    0.0,
                    1.0,
                    false,
                ),
                l(
                    "caseworker",
                    "check its own signature on the query (remembered when signed)",
                    0.0,
                    1.0,
                    true,
                ),
                l(
                    "caseworker",
                    "verify the query's credential",
                    0.0,
                    1.0,
                    true,
                ),
                l(
                    "caseworker",
                    "verify each response (its signature covers the receipt's checkpoint)",
                    0.0,
                    h,
                    false,
                ),
            ],
        }
    }

    /// The budget with the caseworker verifying as `verify` says: checking only the statement,
    /// the caseworker verifies the final answer and the assembly statement and nothing else.
    pub fn for_client(self, verify: ClientVerify) -> SignatureBudget {
        match verify {
            ClientVerify::Full => self,
            ClientVerify::Statement => SignatureBudget {
                holders: self.holders,
                lines: self
                    .lines
                    .into_iter()
                    .filter(|l| {
                        l.who != "caseworker"
                            || l.verifies == 0.0
                            || matches!(
                                l.what,
                                "verify the final answer" | "verify the assembly statement"
                            )
                    })
                    .collect(),
            },
        }
    }

    /// Signatures per passport.
    pub fn signs(&self) -> f64 {
        self.lines.iter().map(|l| l.signs).sum()
    }

    /// Verifications per passport, before caches.
    pub fn verifies(&self) -> f64 {
        self.lines.iter().map(|l| l.verifies).sum()
    }

    /// The budget once every cache is warm: the cached lines cost nothing (the lower bound;
    /// checkpoints are only shared within a commit batch, so the measured count lies between).
    pub fn warm(&self) -> SignatureBudget {
        SignatureBudget {
            holders: self.holders,
            lines: self.lines.iter().filter(|l| !l.cached).cloned().collect(),
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Process measurements.

/// User plus system CPU seconds of this process so far (from `/proc/self/stat`, in clock ticks
/// of 1/100 s, as Linux reports them).
pub fn cpu_seconds() -> f64 {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    let after = stat.rsplit(')').next().unwrap_or("");
    let f: Vec<&str> = after.split_whitespace().collect();
    let tick = 100.0;
    let field = |i: usize| f.get(i).and_then(|x| x.parse::<f64>().ok()).unwrap_or(0.0);
    (field(11) + field(12)) / tick
}

/// Context switches (voluntary and involuntary) summed over this process's live threads, from
/// `/proc/self/task/*/status` (0 where there is no `/proc`). A thread that exits between two
/// readings takes its count with it, so a difference is a lower bound; the threads that matter
/// here (tokio's workers and blocking pool, sled's I/O threads) outlive a measured window.
pub fn context_switches() -> u64 {
    let Ok(tasks) = std::fs::read_dir("/proc/self/task") else {
        return 0;
    };
    tasks
        .flatten()
        .map(|t| {
            std::fs::read_to_string(t.path().join("status"))
                .unwrap_or_default()
                .lines()
                .filter(|l| {
                    l.starts_with("voluntary_ctxt_switches:")
                        || l.starts_with("nonvoluntary_ctxt_switches:")
                })
                .filter_map(|l| l.split_whitespace().nth(1)?.parse::<u64>().ok())
                .sum::<u64>()
        })
        .sum()
}

fn status_kib(name: &str) -> f64 {
    let s = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    s.lines()
        .find(|l| l.starts_with(name))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|k| k.parse::<f64>().ok())
        .unwrap_or(0.0)
}

/// Peak resident memory of this process (`VmHWM`), MiB.
pub fn peak_rss_mib() -> f64 {
    status_kib("VmHWM:") / 1024.0
}

/// Current resident memory of this process (`VmRSS`), MiB.
pub fn rss_mib() -> f64 {
    status_kib("VmRSS:") / 1024.0
}

/// Resets the peak-RSS mark to the current RSS (Linux `clear_refs` 5), so a later
/// [`peak_rss_mib`] covers only what follows. Harmless where unsupported.
pub fn reset_peak_rss() {
    let _ = std::fs::write("/proc/self/clear_refs", "5");
}

// ---------------------------------------------------------------------------------------------
// Audit verification at scale.

/// Appending and verifying a large audit log.
#[derive(Debug, Clone, Serialize)]
pub struct AuditVerifyReport {
    /// Entries appended.
    pub appended: u64,
    /// Seconds to append them (durable group commit, callers keeping `window` in flight).
    pub append_s: f64,
    /// Entries appended per second.
    pub append_per_sec: f64,
    /// Entries per signed checkpoint while appending (mean batch).
    pub entries_per_checkpoint: f64,
    /// Entries verified (the whole log).
    pub verified: u64,
    /// Checkpoints verified.
    pub checkpoints: u64,
    /// Seconds `verify_log` took.
    pub verify_s: f64,
    /// Entries verified per second.
    pub verify_per_sec: f64,
    /// Whether the log verified.
    pub ok: bool,
    /// The node's page cache, MiB (`[storage] cache_mib`).
    pub cache_mib: u64,
    /// Peak resident memory of the process (one node) while appending, MiB.
    pub append_peak_rss_mib: f64,
    /// Peak resident memory of the process while verifying, MiB (measured from the resident
    /// memory the append left).
    pub verify_peak_rss_mib: f64,
}

/// Appends `entries` query-sent entries (a realistic size) to a fresh node's audit log, keeping
/// `window` appends in flight, then times [`crate::audit::verify_log`] over the whole log. The
/// node's store is tuned by `storage`: the verifier reads the log through its page cache.
pub async fn audit_verify(
    entries: u64,
    window: usize,
    storage: crate::config::Storage,
) -> Result<AuditVerifyReport, BenchError> {
    let cache_mib = storage.cache_mib;
    let fed = LocalFederation::start(FedOptions {
        people: 0,
        agencies: vec![REQUESTER],
        storage,
        ..FedOptions::default()
    })
    .await?;
    reset_peak_rss();
    let n = fed.nodes.first().ok_or_else(|| setup_err("no node"))?;
    let node = n.node.as_ref().ok_or_else(|| setup_err("node stopped"))?;
    let state = node.state().clone();
    let holders: Vec<AgencyId> = HOLDER_ORDER
        .iter()
        .filter_map(|a| AgencyId::new(*a).ok())
        .collect();
    let caseworker = PersonId::new("cw-prb").map_err(|e| setup_err(e.to_string()))?;
    let cp0 = state.db.audit_checkpoints(0, usize::MAX)?.len() as u64;
    let t = Instant::now();
    let mut done = 0u64;
    let window = window.max(1) as u64;
    while done < entries {
        let k = window.min(entries - done);
        let pending: Vec<_> = (0..k)
            .map(|i| {
                state.audit.submit(AuditEvent::QuerySent {
                    query_id: QueryId::random(),
                    query_digest: [((done + i) & 0xff) as u8; 32],
                    passport_id: PassportId::random(),
                    caseworker: caseworker.clone(),
                    consent_id: Some(ConsentId::random()),
                    purpose: Purpose::Resettlement,
                    holders: holders.clone(),
                })
            })
            .collect();
        for p in pending {
            p.wait().await?;
        }
        done += k;
    }
    let append_s = t.elapsed().as_secs_f64();
    let append_peak_rss_mib = peak_rss_mib();
    reset_peak_rss();
    let cp1 = state.db.audit_checkpoints(0, usize::MAX)?.len() as u64;
    let origin = state.audit.origin().to_owned();
    let keys = vec![n.key.public()];
    let db = state.db.clone();
    let v = tokio::task::spawn_blocking(move || crate::audit::verify_log(&db, &origin, &keys))
        .await
        .map_err(|e| setup_err(e.to_string()))??;
    let verify_s = v.elapsed_ms as f64 / 1000.0;
    drop(state);
    fed.shutdown().await;
    Ok(AuditVerifyReport {
        appended: entries,
        append_s,
        append_per_sec: entries as f64 / append_s.max(1e-9),
        entries_per_checkpoint: entries as f64 / cp1.saturating_sub(cp0).max(1) as f64,
        verified: v.entries,
        checkpoints: v.checkpoints,
        verify_s,
        verify_per_sec: v.entries as f64 / verify_s.max(1e-3),
        ok: v.ok(),
        cache_mib,
        append_peak_rss_mib,
        verify_peak_rss_mib: peak_rss_mib(),
    })
}

/// Records loaded per holder, summarised as (min, max).
pub fn records_range(r: &[u64]) -> (u64, u64) {
    (
        r.iter().copied().min().unwrap_or(0),
        r.iter().copied().max().unwrap_or(0),
    )
}

/// Parses a count like `1000`, `1e6` or `10k`.
pub fn parse_count(s: &str) -> Option<u64> {
    let s = s.trim();
    let (num, mul) = match s.chars().last()? {
        'k' | 'K' => (s.get(..s.len() - 1)?, 1e3),
        'm' | 'M' => (s.get(..s.len() - 1)?, 1e6),
        _ => (s, 1.0),
    };
    let v: f64 = num.parse().ok()?;
    let v = v * mul;
    (v.is_finite() && (0.0..=1e12).contains(&v)).then_some(v.round() as u64)
}

/// Groups per-agency audit marks by agency (for printing).
pub fn marks_by_agency(marks: &[AuditMark]) -> BTreeMap<String, (u64, u64)> {
    marks
        .iter()
        .map(|m| (m.agency.clone(), (m.entries, m.checkpoints)))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_parse() {
        assert_eq!(parse_count("1e6"), Some(1_000_000));
        assert_eq!(parse_count("10k"), Some(10_000));
        assert_eq!(parse_count("64"), Some(64));
        assert_eq!(parse_count("x"), None);
    }

    #[test]
    fn percentiles_are_nearest_rank() {
        let v: Vec<u32> = (1..=100).map(|x| x * 1000).collect();
        let l = Latency::from_sorted_us(&v);
        assert_eq!((l.p50, l.p95, l.p99, l.max), (50.0, 95.0, 99.0, 100.0));
        assert_eq!(Latency::from_sorted_us(&[]).p50, 0.0);
    }

    #[test]
    fn the_budget_for_six_holders() {
        // A response's receipt checkpoint is covered by the response's signature, so each
        // verifier checks one signature per holder's answer (SPEC 8.6 step 8).
        let b = SignatureBudget::new(6, 7.0);
        assert_eq!(b.signs(), 18.0);
        assert_eq!(b.verifies(), 38.0);
        assert_eq!(b.warm().signs(), b.signs());
        assert_eq!(b.warm().verifies(), 29.0);
        // Checking only the statement, the caseworker verifies 2 signatures instead of 5 + H.
        let st = b.for_client(ClientVerify::Statement);
        assert_eq!(st.signs(), 18.0);
        assert_eq!(st.verifies(), 29.0);
        assert_eq!(st.warm().verifies(), 22.0);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn the_audit_bench_appends_verifies_and_reports_its_cache() {
        let storage = crate::config::Storage {
            cache_mib: 8,
            ..crate::config::Storage::default()
        };
        let r = audit_verify(500, 64, storage).await.unwrap();
        assert!(r.ok);
        assert_eq!(r.appended, 500);
        // The node's own entries from its first start come first.
        assert!(r.verified >= 500 && r.verified < 510, "{r:?}");
        assert!(r.checkpoints >= 1, "{r:?}");
        assert_eq!(r.cache_mib, 8);
        assert!(
            r.append_peak_rss_mib > 0.0 && r.verify_peak_rss_mib > 0.0,
            "{r:?}"
        );
    }

    #[test]
    fn layouts() {
        assert_eq!(holder_layout(1), (vec!["probation-yorks"], 0));
        assert_eq!(holder_layout(6).0.len(), 6);
        assert_eq!(holder_layout(32), (HOLDER_ORDER.to_vec(), 26));
    }
}
