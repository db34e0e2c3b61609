//! A federation of demo agencies on loopback, in one process: each agency a real node with its
//! own QUIC endpoint on an ephemeral port, its own sled store in a temporary folder and its own
//! key, joined by a manifest signed by a governance key. Used by `tg demo`, the integration
//! tests and `tg bench`, so all three exercise the same code as a real deployment.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use throughgate_protocol::credential::{Credential, StaffRole};
use throughgate_protocol::envelope::{Envelope, SignerRole};
use throughgate_protocol::ids::{AgencyId, PersonId};
use throughgate_protocol::keys::SecretKey;
use throughgate_protocol::manifest::{
    default_witness_threshold, Governance, Manifest, Member, MemberRole,
};
use throughgate_protocol::time::{Date, Timestamp};

use crate::agencies::{demo_agencies, DemoAgency};
use crate::client::{ClientError, HomeClient};
use crate::clock::Clock;
use crate::config::{Limits, NodeConfig};
use crate::node::{Node, NodeError, NodeOptions};
use crate::policy::{Policy, PolicyError};
use crate::staff::issue_credential;
use crate::store::{Store, StoreError};
use crate::synth::{generate_population, person_records, Population, SynthConfig};

/// A failure setting up the local federation.
#[derive(Debug, thiserror::Error)]
pub enum LocalFedError {
    /// A node failed.
    #[error(transparent)]
    Node(#[from] NodeError),
    /// Storage failed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// A demo policy failed to parse.
    #[error(transparent)]
    Policy(#[from] PolicyError),
    /// A client failed.
    #[error(transparent)]
    Client(#[from] ClientError),
    /// The temporary folder could not be made.
    #[error("temporary folder: {0}")]
    Io(#[from] std::io::Error),
    /// Bad options.
    #[error("{0}")]
    Options(String),
}

/// The demo minimisation policy of a demo agency (the same files as `deploy/policies/`).
pub fn demo_policy_text(agency: &str) -> Option<&'static str> {
    Some(match agency {
        "hmp-leeds" => include_str!("../../deploy/policies/hmp-leeds.toml"),
        "probation-yorks" => include_str!("../../deploy/policies/probation-yorks.toml"),
        "nhs-wy" => include_str!("../../deploy/policies/nhs-wy.toml"),
        "leeds-college" => include_str!("../../deploy/policies/leeds-college.toml"),
        "leeds-cc" => include_str!("../../deploy/policies/leeds-cc.toml"),
        "dwp" => include_str!("../../deploy/policies/dwp.toml"),
        // A synthetic holder uses the policy of the demo agency whose shape it copies.
        _ => return synthetic_base(agency).and_then(|b| demo_policy_text(b.id)),
    })
}

/// The demo agency a synthetic holder id (`holder-07`, ...) copies: the holder numbered `n`
/// copies the `(n - 1) % 6`-th demo agency (so `holder-07` is shaped like `hmp-leeds`).
pub fn synthetic_base(id: &str) -> Option<&'static DemoAgency> {
    let n: usize = id.strip_prefix("holder-")?.parse().ok()?;
    let agencies = demo_agencies();
    agencies.get(n.checked_sub(1)? % agencies.len())
}

/// The demo agency, or synthetic holder, with this id.
pub fn local_agency(id: &str) -> Option<&'static DemoAgency> {
    crate::agencies::demo_agency(id).or_else(|| {
        let n = id.strip_prefix("holder-")?.parse().ok()?;
        synthetic_holder(n).filter(|a| a.id == id)
    })
}

/// The synthetic holder numbered `n` (from 1): id `holder-NN`, with the kind, categories,
/// identifier scheme, sector and policy of [`synthetic_base`]. Made once per number and kept
/// for the life of the process (agencies are `'static` data).
pub fn synthetic_holder(n: usize) -> Option<&'static DemoAgency> {
    static MADE: std::sync::Mutex<Vec<&'static DemoAgency>> = std::sync::Mutex::new(Vec::new());
    let id = format!("holder-{n:02}");
    let base = synthetic_base(&id)?;
    let mut made = MADE
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    if let Some(a) = made.iter().find(|a| a.id == id) {
        return Some(a);
    }
    let a: &'static DemoAgency = Box::leak(Box::new(DemoAgency {
        id: Box::leak(id.into_boxed_str()),
        name: Box::leak(
            format!("Synthetic holder {n:02} (shaped like {})", base.name).into_boxed_str(),
        ),
        short: Box::leak(format!("h{n:02}").into_boxed_str()),
        ..*base
    }));
    made.push(a);
    Some(a)
}

/// What to start.
#[derive(Debug, Clone)]
pub struct FedOptions {
    /// Synthetic people.
    pub people: usize,
    /// Records per holder per person (approximate).
    pub records_per_person: usize,
    /// Generator seed.
    pub seed: u64,
    /// Which demo agencies (all six by default).
    pub agencies: Vec<&'static str>,
    /// Node limits.
    pub limits: Limits,
    /// Where to keep node folders; a fresh temporary folder when `None`.
    pub dir: Option<PathBuf>,
    /// Extra members to list in the manifest (e.g. a conformance-suite identity).
    pub extra_members: Vec<Member>,
    /// Synthetic holder nodes to add after `agencies` (see [`synthetic_holder`]), numbered on
    /// from the last agency: with the six demo agencies, `holder-07`, `holder-08`, ...
    pub synthetic_holders: usize,
    /// Serve each node's metrics and health endpoints on an ephemeral loopback port.
    pub metrics: bool,
    /// Every node's retention settings.
    pub retention: crate::config::Retention,
    /// Storage tuning for every node.
    pub storage: crate::config::Storage,
    /// Every node's consent rules.
    pub consent: crate::config::ConsentRules,
    /// Agencies whose nodes keep their state in PostgreSQL: agency id to database URL (one
    /// database per agency). The others use `storage` as given.
    pub postgres: BTreeMap<String, String>,
    /// Agencies whose nodes answer from a live record source: agency id to its `[records]`
    /// settings (paths in them absolute, or relative to the node's folder). The others answer
    /// from their store.
    pub records: BTreeMap<String, crate::config::RecordsRules>,
    /// Every node's QUIC settings.
    pub quic: crate::config::Quic,
}

impl Default for FedOptions {
    fn default() -> FedOptions {
        FedOptions {
            people: 300,
            records_per_person: crate::synth::DEFAULT_RECORDS_PER_PERSON,
            seed: 2026,
            agencies: demo_agencies().iter().map(|a| a.id).collect(),
            limits: Limits::default(),
            dir: None,
            extra_members: Vec::new(),
            synthetic_holders: 0,
            metrics: false,
            retention: crate::config::Retention::default(),
            storage: crate::config::Storage::default(),
            consent: crate::config::ConsentRules::default(),
            postgres: BTreeMap::new(),
            records: BTreeMap::new(),
            quic: crate::config::Quic::default(),
        }
    }
}

/// A member of staff's key and credential.
#[derive(Debug, Clone)]
pub struct StaffKey {
    /// Their key.
    pub key: SecretKey,
    /// Their signed credential.
    pub credential: Envelope,
}

/// One node of the local federation.
pub struct LocalNode {
    /// The demo agency it runs.
    pub agency: &'static DemoAgency,
    /// Its id.
    pub id: AgencyId,
    /// The running node (None while stopped).
    pub node: Option<Node>,
    /// Its address (kept across restarts).
    pub addr: SocketAddr,
    /// Its key.
    pub key: SecretKey,
    /// Its folder.
    pub dir: PathBuf,
    /// A caseworker, a DPO and an operator.
    pub staff: BTreeMap<StaffRole, StaffKey>,
    /// Where its metrics and health endpoints listen, if served.
    pub metrics_addr: Option<SocketAddr>,
    config: NodeConfig,
}

impl std::fmt::Debug for LocalNode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LocalNode")
            .field("id", &self.id)
            .field("addr", &self.addr)
            .finish_non_exhaustive()
    }
}

/// The running federation.
pub struct LocalFederation {
    /// The nodes, in agency order.
    pub nodes: Vec<LocalNode>,
    /// The manifest all nodes trust.
    pub manifest: Envelope,
    /// Its decoded body.
    pub manifest_body: Manifest,
    /// The governance key that signed it.
    pub governance: SecretKey,
    /// The synthetic population whose records the holders hold.
    pub population: Population,
    /// The generator configuration.
    pub synth: SynthConfig,
    /// The clock every node shares.
    pub clock: Clock,
    _tmp: Option<tempfile::TempDir>,
}

impl std::fmt::Debug for LocalFederation {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LocalFederation")
            .field("nodes", &self.nodes)
            .finish_non_exhaustive()
    }
}

/// Opens a node from its folder: its key file (0600), its store, its demo policy.
fn open_node(config: &NodeConfig, clock: &Clock) -> Result<Node, LocalFedError> {
    let key = crate::keyfile::read_secret_key(&config.resolve(&config.key_file))
        .map_err(|e| LocalFedError::Options(e.to_string()))?;
    let store: Arc<dyn Store> = crate::store::open_configured(config)?;
    let policy = match demo_policy_text(config.agency.as_str()) {
        Some(t) => Policy::parse(t)?,
        None => Policy::deny_all(),
    };
    Ok(Node::bind(NodeOptions {
        config: config.clone(),
        key,
        store,
        policy,
        clock: clock.clone(),
    })?)
}

impl LocalFederation {
    /// Starts the federation: binds every node, signs the manifest, issues staff credentials,
    /// loads synthetic records and starts serving.
    pub async fn start(opts: FedOptions) -> Result<LocalFederation, LocalFedError> {
        let (tmp, base) = match &opts.dir {
            Some(d) => (None, d.clone()),
            None => {
                let t = tempfile::Builder::new()
                    .prefix("throughgate-demo-")
                    .tempdir()?;
                let p = t.path().to_path_buf();
                (Some(t), p)
            }
        };
        let clock = Clock::system();
        let reference_date = clock.now().date();
        let synth = SynthConfig {
            seed: opts.seed,
            people: opts.people,
            records_per_person: opts.records_per_person,
            reference_date,
        };
        let population = generate_population(&synth);
        let mut nodes = Vec::new();
        let mut members = Vec::new();
        for id in &opts.agencies {
            members.push(
                crate::agencies::demo_agency(id)
                    .ok_or_else(|| LocalFedError::Options(format!("{id} is not a demo agency")))?,
            );
        }
        for _ in 0..opts.synthetic_holders {
            let n = members.len() + 1;
            members.push(synthetic_holder(n).ok_or_else(|| {
                LocalFedError::Options(format!("no synthetic holder number {n}"))
            })?);
        }
        for agency in members {
            let agency_id = agency
                .agency_id()
                .map_err(|e| LocalFedError::Options(e.to_string()))?;
            let dir = base.join(agency.id);
            std::fs::create_dir_all(&dir)?;
            let config = NodeConfig {
                agency: agency_id.clone(),
                listen: "127.0.0.1:0"
                    .parse()
                    .map_err(|_| LocalFedError::Options("bad address".into()))?,
                key_file: PathBuf::from("node.key"),
                next_key_file: PathBuf::from("node-next.key"),
                data_dir: PathBuf::from("data"),
                manifest_file: None,
                policy_file: None,
                id_scheme: agency.scheme,
                metrics_listen: opts
                    .metrics
                    .then(|| std::net::SocketAddr::from(([127, 0, 0, 1], 0))),
                limits: opts.limits.clone(),
                retention: opts.retention.clone(),
                storage: match opts.postgres.get(agency.id) {
                    Some(url) => crate::config::Storage {
                        backend: crate::config::Backend::Postgres,
                        url: Some(url.clone()),
                        url_file: None,
                        ..opts.storage.clone()
                    },
                    None => opts.storage.clone(),
                },
                consent: opts.consent.clone(),
                records: opts.records.get(agency.id).cloned().unwrap_or_default(),
                quic: opts.quic.clone(),
                base_dir: dir.clone(),
            };
            let key = SecretKey::generate();
            crate::keyfile::write_secret_key(&config.resolve(&config.key_file), &key)
                .map_err(|e| LocalFedError::Options(e.to_string()))?;
            let node = open_node(&config, &clock)?;
            let addr = node.local_addr()?;
            let mut config = config;
            config.listen = addr;
            nodes.push(LocalNode {
                agency,
                id: agency_id,
                node: Some(node),
                addr,
                key,
                dir,
                staff: BTreeMap::new(),
                metrics_addr: None,
                config,
            });
        }
        let governance = SecretKey::generate();
        let now = clock.now();
        let manifest_body = Manifest {
            federation: "throughgate-demo".into(),
            version: 1,
            issued_at: now,
            expires_at: now.plus_secs(90 * 86_400),
            members: nodes
                .iter()
                .map(|n| Member {
                    id: n.id.clone(),
                    name: n.agency.name.into(),
                    sector: n.agency.sector,
                    addresses: vec![n.addr.to_string()],
                    node_keys: vec![n.key.public()],
                    categories: n.agency.categories.to_vec(),
                    id_scheme: n.agency.scheme,
                    roles: vec![MemberRole::Holder, MemberRole::Requester],
                    retired_keys: vec![],
                })
                .chain(opts.extra_members.iter().cloned())
                .collect(),
            governance: Governance {
                keys: vec![governance.public()],
                threshold: 1,
            },
            witness_threshold: default_witness_threshold(nodes.len() + opts.extra_members.len()),
        };
        let manifest = Envelope::seal(&manifest_body, &[(SignerRole::Governance, &governance)]);
        for n in &mut nodes {
            let Some(node) = n.node.as_mut() else {
                continue;
            };
            let state = node.state().clone();
            state.adopt_manifest(&manifest)?;
            for (role, prefix) in [
                (StaffRole::Caseworker, "cw"),
                (StaffRole::Dpo, "dpo"),
                (StaffRole::Operator, "op"),
            ] {
                let key = SecretKey::generate();
                let person = PersonId::new(format!("{prefix}-{}", n.agency.short))
                    .map_err(|e| LocalFedError::Options(e.to_string()))?;
                let cred = Credential {
                    person_id: person,
                    display_name: format!("Demo {} at {}", role, n.agency.name),
                    agency: n.id.clone(),
                    roles: vec![role],
                    public_key: key.public(),
                    not_before: now.minus_secs(60),
                    not_after: now.plus_secs(30 * 86_400),
                };
                let staff = issue_credential(&n.key, cred);
                state.db.put_staff(&staff)?;
                state.trust.add_staff(staff.clone());
                n.staff.insert(
                    role,
                    StaffKey {
                        key,
                        credential: staff.credential,
                    },
                );
            }
            load_records(&state.db, n.agency.id, &population, &synth)?;
            n.metrics_addr = node.start_with_metrics().await?;
        }
        Ok(LocalFederation {
            nodes,
            manifest,
            manifest_body,
            governance,
            population,
            synth,
            clock,
            _tmp: tmp,
        })
    }

    /// The node of `agency`.
    pub fn node(&self, agency: &str) -> Option<&LocalNode> {
        self.nodes.iter().find(|n| n.id.as_str() == agency)
    }

    /// A connected client for a member of staff of `agency` in `role`.
    pub async fn client(&self, agency: &str, role: StaffRole) -> Result<HomeClient, LocalFedError> {
        let n = self
            .node(agency)
            .ok_or_else(|| LocalFedError::Options(format!("no node {agency}")))?;
        self.client_at(agency, role, n.addr).await
    }

    /// [`LocalFederation::client`], connected to the node of `agency` listening at `addr`
    /// (a replica started with [`LocalFederation::start_replica`]).
    pub async fn client_at(
        &self,
        agency: &str,
        role: StaffRole,
        addr: SocketAddr,
    ) -> Result<HomeClient, LocalFedError> {
        let n = self
            .node(agency)
            .ok_or_else(|| LocalFedError::Options(format!("no node {agency}")))?;
        let s = n
            .staff
            .get(&role)
            .ok_or_else(|| LocalFedError::Options(format!("no {role} at {agency}")))?;
        Ok(HomeClient::connect(
            addr,
            &n.id,
            vec![n.key.public()],
            s.key.clone(),
            s.credential.clone(),
            self.clock.clone(),
        )
        .await?)
    }

    /// Starts another node process's worth of `agency` (a replica) on a new loopback port,
    /// sharing the agency's PostgreSQL database and key; returns it running. Only an agency
    /// listed in [`FedOptions::postgres`] can have replicas.
    pub async fn start_replica(&self, agency: &str) -> Result<Node, LocalFedError> {
        let n = self
            .node(agency)
            .ok_or_else(|| LocalFedError::Options(format!("no node {agency}")))?;
        if n.config.storage.backend != crate::config::Backend::Postgres {
            return Err(LocalFedError::Options(format!(
                "{agency} keeps its state in sled, which one node alone may open"
            )));
        }
        let mut config = n.config.clone();
        config.listen = SocketAddr::from(([127, 0, 0, 1], 0));
        config.metrics_listen = None;
        let mut node = open_node(&config, &self.clock)?;
        node.start_with_metrics().await?;
        Ok(node)
    }

    /// Stops one node (its data stays).
    pub async fn stop(&mut self, agency: &str) {
        if let Some(n) = self.nodes.iter_mut().find(|n| n.id.as_str() == agency) {
            if let Some(node) = n.node.take() {
                node.shutdown().await;
            }
        }
    }

    /// Restarts a stopped node on the same address, with its stored state.
    pub async fn restart(&mut self, agency: &str) -> Result<(), LocalFedError> {
        let clock = self.clock.clone();
        let n = self
            .nodes
            .iter_mut()
            .find(|n| n.id.as_str() == agency)
            .ok_or_else(|| LocalFedError::Options(format!("no node {agency}")))?;
        if n.node.is_some() {
            return Ok(());
        }
        let mut node = open_node(&n.config, &clock)?;
        n.metrics_addr = node.start_with_metrics().await?;
        n.node = Some(node);
        Ok(())
    }

    /// Stops every node.
    pub async fn shutdown(mut self) {
        for n in &mut self.nodes {
            if let Some(node) = n.node.take() {
                node.shutdown().await;
            }
        }
    }

    /// The folder holding the node folders.
    pub fn dir(&self) -> Option<&Path> {
        self.nodes.first().and_then(|n| n.dir.parent())
    }

    /// One witnessing round: every node offers its newest checkpoint to every other member
    /// (what each node also does every `limits.witness_interval_secs`).
    pub async fn witness_round(&self) {
        let rounds = self
            .nodes
            .iter()
            .filter_map(|n| n.node.as_ref())
            .map(|n| crate::workers::witness::offer_all(n.state()));
        futures::future::join_all(rounds).await;
    }

    /// The current time on the federation's clock.
    pub fn now(&self) -> Timestamp {
        self.clock.now()
    }

    /// The data set's reference date.
    pub fn reference_date(&self) -> Date {
        self.synth.reference_date
    }
}

/// Loads an agency's synthetic records into its store in batches.
pub fn load_records(
    db: &crate::db::Db,
    agency: &str,
    population: &Population,
    synth: &SynthConfig,
) -> Result<u64, LocalFedError> {
    let shape = local_agency(agency)
        .ok_or_else(|| LocalFedError::Options(format!("{agency} is not a demo agency")))?;
    let iter = population
        .people
        .iter()
        .flat_map(|p| person_records(shape, p, synth));
    let mut batch = Vec::with_capacity(10_000);
    let mut n = 0u64;
    for r in iter {
        batch.push(r);
        if batch.len() == 10_000 {
            db.put_records(&batch)?;
            n += batch.len() as u64;
            batch.clear();
        }
    }
    if !batch.is_empty() {
        n += batch.len() as u64;
        db.put_records(&batch)?;
    }
    Ok(n)
}
