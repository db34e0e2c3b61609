//! `tg node`: set up a node folder (`init`), run a node (`run`), ask a node how it is
//! (`status`).

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::{anyhow, bail, Context, Result};
use clap::{Args, Subcommand};
use throughgate_node::backup::BackupError;
use throughgate_node::client::Profile;
use throughgate_node::client_api::issue_credential;
use throughgate_node::clock::Clock;
use throughgate_node::config::{Limits, NodeConfig};
use throughgate_node::db::Db;
use throughgate_node::keyfile::{read_secret_key, write_private_file, write_secret_key};
use throughgate_node::node::{Node, NodeOptions};
use throughgate_node::policy::Policy;
use throughgate_node::store::Store;
use throughgate_protocol::category::Category;
use throughgate_protocol::credential::{Credential, StaffRole};
use throughgate_protocol::envelope::Envelope;
use throughgate_protocol::identifiers::IdScheme;
use throughgate_protocol::ids::{AgencyId, PersonId};
use throughgate_protocol::keys::SecretKey;
use throughgate_protocol::manifest::{Member, MemberRole, Sector};
use throughgate_protocol::messages::{ClientOp, ClientResponse};
use throughgate_testkit::agencies::demo_agency;
use throughgate_testkit::localfed::demo_policy_text;

use crate::cmd_manifest::MemberFile;
use crate::Global;

/// Node commands.
#[derive(Debug, Subcommand)]
pub enum NodeCmd {
    /// Create a node folder: key, config, policy, member entry, and a first operator.
    Init(Box<InitArgs>),
    /// Run a node until interrupted (Ctrl-C or SIGTERM).
    Run {
        /// The node's config file.
        #[arg(long, default_value = "node.toml")]
        config: PathBuf,
    },
    /// Ask your home node for its status.
    Status,
    /// Switch your node to its next key (the config's next_key_file), once a manifest listing
    /// both keys has been adopted. No downtime (operators).
    RotateKey,
    /// Take a consistent backup of your node while it runs (operators). Keep the node's key
    /// files safe separately: they are not in the backup.
    Backup {
        /// Where to write the backup file.
        #[arg(long)]
        out: PathBuf,
    },
    /// Restore a backup into a stopped node's empty data folder, then verify its audit log.
    Restore {
        /// The node's config file.
        #[arg(long, default_value = "node.toml")]
        config: PathBuf,
        /// The backup file.
        #[arg(long)]
        from: PathBuf,
        /// Move an existing data folder aside (to data.replaced-TIME) instead of refusing.
        #[arg(long)]
        force: bool,
        /// The federation manifest to check the backup's signature against (a `.tgm` file from
        /// `tg manifest fetch` or governance). Default: the config's `manifest_file`.
        #[arg(long)]
        manifest: Option<PathBuf>,
    },
}

/// Arguments of `tg node init`.
#[derive(Debug, Args)]
pub struct InitArgs {
    /// The agency id, e.g. leeds-cc.
    #[arg(long)]
    pub agency: AgencyId,
    /// Fill in name, sector, identifier scheme, categories and release policy from the demo
    /// agency of this id (one of the six used by `tg demo`; for trials only). Without it every
    /// one of those must be given and the policy starts as deny-all.
    #[arg(long)]
    pub demo_agency: bool,
    /// The folder to create.
    #[arg(long)]
    pub dir: PathBuf,
    /// Display name (required unless --demo-agency).
    #[arg(long)]
    pub name: Option<String>,
    /// Sector: justice, health, education, local_government or welfare.
    #[arg(long)]
    pub sector: Option<String>,
    /// How the agency identifies people, e.g. nhs_number.
    #[arg(long)]
    pub id_scheme: Option<IdScheme>,
    /// A category the agency holds (repeatable).
    #[arg(long = "category")]
    pub categories: Vec<Category>,
    /// UDP address to listen on.
    #[arg(long, default_value = "127.0.0.1:4701")]
    pub listen: SocketAddr,
    /// Address peers should use, if not the listen address (host:port).
    #[arg(long)]
    pub advertise: Option<String>,
    /// Staff id of the first operator.
    #[arg(long, default_value = "op-1")]
    pub operator_id: PersonId,
    /// Name of the first operator.
    #[arg(long, default_value = "Node operator")]
    pub operator_name: String,
    /// Keep the node's state in PostgreSQL instead of sled: a file (mode 0600) holding the
    /// database URL, named in node.toml as `[storage] url_file`. Replicas of one agency share
    /// the database (see docs/operations.md, "High availability").
    #[arg(long, value_name = "FILE")]
    pub postgres_url_file: Option<PathBuf>,
}

/// Runs a node command.
pub async fn run(g: &Global, cmd: NodeCmd) -> Result<u8> {
    match cmd {
        NodeCmd::Init(a) => init(g, *a),
        NodeCmd::Run { config } => run_node(&config).await,
        NodeCmd::Status => status(g).await,
        NodeCmd::Backup { out } => {
            crate::outfile::refuse_existing(&out, "--out")?;
            let client = g.client().await?;
            let (pairs, sha) = client.backup_to(&out, crate::outfile::force()).await?;
            client.close().await;
            if g.json {
                println!(
                    "{}",
                    serde_json::json!({"file": out, "pairs": pairs, "sha256": hex::encode(sha)})
                );
            } else {
                println!(
                    "Backup of {pairs} stored pairs written to {} (sha256 {}).",
                    out.display(),
                    hex::encode(sha)
                );
            }
            Ok(crate::exit::OK)
        }
        NodeCmd::Restore {
            config,
            from,
            force,
            manifest,
        } => restore(g, &config, &from, force, manifest.as_deref()),
        NodeCmd::RotateKey => {
            let client = g.client().await?;
            let s = client.rotate_key().await?;
            client.close().await;
            println!(
                "{} now uses key {}. Retire the old key in the next manifest version.",
                s.agency, s.key_fingerprint
            );
            Ok(crate::exit::OK)
        }
    }
}

fn init(g: &Global, a: InitArgs) -> Result<u8> {
    // Demo defaults only when asked for: an agency whose id happens to match a demo agency's
    // must not silently get the demo's scheme, categories and policy.
    let demo = if a.demo_agency {
        Some(demo_agency(a.agency.as_str()).ok_or_else(|| {
            anyhow!(
                "--demo-agency: {} is not a demo agency; the demo agencies are {}",
                a.agency,
                throughgate_testkit::agencies::DEMO_AGENCIES
                    .iter()
                    .map(|d| d.id)
                    .collect::<Vec<_>>()
                    .join(", ")
            )
        })?)
    } else {
        None
    };
    let name = a
        .name
        .clone()
        .or_else(|| demo.map(|d| d.name.to_owned()))
        .ok_or_else(|| anyhow!("--name is required (or --demo-agency for a demo agency)"))?;
    let sector = match (&a.sector, demo) {
        (Some(s), _) => serde_json::from_value::<Sector>(serde_json::Value::String(s.clone()))
            .map_err(|_| anyhow!("unknown sector {s:?}; expected justice, health, education, local_government or welfare"))?,
        (None, Some(d)) => d.sector,
        (None, None) => bail!("--sector is required (or --demo-agency for a demo agency)"),
    };
    let scheme = a
        .id_scheme
        .or(demo.map(|d| d.scheme))
        .ok_or_else(|| anyhow!("--id-scheme is required (or --demo-agency for a demo agency)"))?;
    let categories = if a.categories.is_empty() {
        demo.map(|d| d.categories.to_vec()).unwrap_or_default()
    } else {
        a.categories.clone()
    };
    if categories.is_empty() {
        bail!("give at least one --category the agency holds");
    }
    let dir = &a.dir;
    if dir.join("node.toml").exists() {
        bail!(
            "{} already holds a node (node.toml exists); choose another --dir",
            dir.display()
        );
    }
    crate::outfile::create_dir(dir)?;
    crate::outfile::create_dir(&dir.join("staff"))?;
    let key = SecretKey::generate();
    write_secret_key(&dir.join("node.key"), &key)?;
    let policy_text = demo
        .and_then(|d| demo_policy_text(d.id))
        .unwrap_or(DENY_ALL_POLICY);
    crate::outfile::write(&dir.join("policy.toml"), policy_text)?;
    let config = NodeConfig {
        agency: a.agency.clone(),
        listen: a.listen,
        key_file: "node.key".into(),
        next_key_file: "node-next.key".into(),
        data_dir: "data".into(),
        manifest_file: Some("manifest.tgm".into()),
        policy_file: Some("policy.toml".into()),
        id_scheme: scheme,
        // Metrics and health on loopback, 1000 above the QUIC port (none if that overflows).
        metrics_listen: a
            .listen
            .port()
            .checked_add(1000)
            .map(|p| SocketAddr::new(std::net::Ipv4Addr::LOCALHOST.into(), p)),
        limits: Limits::default(),
        retention: throughgate_node::config::Retention::default(),
        storage: match &a.postgres_url_file {
            Some(f) => throughgate_node::config::Storage {
                backend: throughgate_node::config::Backend::Postgres,
                url_file: Some(
                    std::fs::canonicalize(f)
                        .with_context(|| format!("--postgres-url-file {}", f.display()))?,
                ),
                ..Default::default()
            },
            None => throughgate_node::config::Storage::default(),
        },
        consent: throughgate_node::config::ConsentRules::default(),
        records: throughgate_node::config::RecordsRules::default(),
        quic: throughgate_node::config::Quic::default(),
        base_dir: dir.clone(),
    };
    crate::outfile::write(
        &dir.join("node.toml"),
        format!(
            "# Throughgate node configuration. Paths are relative to this file.\n{}",
            config.to_toml()
        ),
    )?;
    let address = a.advertise.clone().unwrap_or_else(|| {
        if a.listen.ip().is_unspecified() {
            format!("127.0.0.1:{}", a.listen.port())
        } else {
            a.listen.to_string()
        }
    });
    let member = Member {
        id: a.agency.clone(),
        name,
        sector,
        addresses: vec![address.clone()],
        node_keys: vec![key.public()],
        categories,
        id_scheme: scheme,
        roles: vec![MemberRole::Holder, MemberRole::Requester],
        retired_keys: vec![],
    };
    crate::outfile::write(
        &dir.join("member.toml"),
        toml::to_string_pretty(&MemberFile { member })?,
    )?;

    // The first operator: key, credential (stored in the node's database) and profile.
    let op_key = SecretKey::generate();
    let now = Clock::system().now();
    let cred = Credential {
        person_id: a.operator_id.clone(),
        display_name: a.operator_name.clone(),
        agency: a.agency.clone(),
        roles: vec![StaffRole::Operator],
        public_key: op_key.public(),
        not_before: now,
        not_after: now.plus_secs(365 * 86_400),
    };
    let staff = issue_credential(&key, cred);
    let db = Db::new(throughgate_node::store::open_configured(&config)?);
    db.put_staff(&staff)?;
    drop(db);
    let profile = write_profile(
        &dir.join("staff"),
        HomeNode {
            agency: &a.agency,
            address: &address,
            replicas: &[],
            key: &key.public(),
        },
        &a.operator_id,
        &op_key,
        &staff.credential,
        None,
    )?;
    if g.json {
        println!(
            "{}",
            serde_json::json!({"dir": dir, "agency": a.agency, "public_key": key.public().to_hex(), "operator_profile": profile})
        );
    } else {
        println!("Node folder {} created for {}.", dir.display(), a.agency);
        println!(
            "  node key      {} (public {}, fingerprint {})",
            dir.join("node.key").display(),
            key.public().to_hex(),
            key.public().fingerprint()
        );
        println!(
            "  member entry  {}  (send it to your federation's governance)",
            dir.join("member.toml").display()
        );
        println!(
            "  policy        {}  (what you release, to whom, for what)",
            dir.join("policy.toml").display()
        );
        println!("  operator      {}", profile.display());
        println!(
            "Next: put the signed manifest at {} and run `tg node run --config {}`.",
            dir.join("manifest.tgm").display(),
            dir.join("node.toml").display()
        );
    }
    Ok(crate::exit::OK)
}

/// The home node a profile points at.
pub struct HomeNode<'a> {
    /// Its agency.
    pub agency: &'a AgencyId,
    /// Its address, as `host:port`.
    pub address: &'a str,
    /// Addresses of its other replicas.
    pub replicas: &'a [String],
    /// Its node key (pinned).
    pub key: &'a throughgate_protocol::keys::PublicKey,
}

/// Writes a member of staff's key, credential and profile into `dir`; returns the profile path.
pub fn write_profile(
    dir: &Path,
    home: HomeNode<'_>,
    person: &PersonId,
    key: &SecretKey,
    credential: &throughgate_protocol::envelope::Envelope,
    passphrase: Option<&str>,
) -> Result<PathBuf> {
    let key_file = PathBuf::from(format!("{person}.key"));
    let cred_file = PathBuf::from(format!("{person}.cred"));
    match passphrase {
        Some(p) => {
            throughgate_node::keyfile::write_secret_key_protected(&dir.join(&key_file), key, p)?
        }
        None => write_secret_key(&dir.join(&key_file), key)?,
    }
    write_private_file(&dir.join(&cred_file), &credential.to_bytes())?;
    let profile = Profile {
        agency: home.agency.clone(),
        node_address: home.address.to_owned(),
        replica_addresses: home.replicas.to_vec(),
        node_key: *home.key,
        person_id: person.clone(),
        key_file,
        credential_file: cred_file,
        base_dir: dir.to_path_buf(),
    };
    let path = dir.join(format!("{person}.profile.toml"));
    crate::outfile::write(&path, profile.to_toml())?;
    Ok(path)
}

const DENY_ALL_POLICY: &str =
    "# Minimisation policy: what this node releases, to whom, for which purpose.
# Nothing is released unless a rule below allows it. Example:
#
# [[release]]
# purpose = \"resettlement\"
# to = [\"sector:justice\"]          # agency ids, \"sector:<name>\" or \"*\"
# categories = [\"finance_and_id\"]
# [release.fields]
# bank_account_application = [\"bank\", \"status\"]
";

async fn run_node(config_path: &Path) -> Result<u8> {
    let config = NodeConfig::load(config_path)?;
    let key = read_secret_key(&config.resolve(&config.key_file))?;
    let store: Arc<dyn Store> = throughgate_node::store::open_configured(&config)?;
    let policy = match &config.policy_file {
        Some(p) => Policy::load(&config.resolve(p))
            .with_context(|| format!("policy {}", config.resolve(p).display()))?,
        None => {
            tracing::warn!("no policy_file configured: this node releases nothing");
            Policy::deny_all()
        }
    };
    let mut node = Node::bind(NodeOptions {
        config: config.clone(),
        key,
        store,
        policy,
        clock: Clock::system(),
    })?;
    if let Some(mf) = &config.manifest_file {
        let path = config.resolve(mf);
        if path.exists() {
            // Compare versions before anything else: an old file (even an expired one) is
            // ignored when the node already trusts a newer manifest.
            let bytes =
                std::fs::read(&path).with_context(|| format!("reading {}", path.display()))?;
            let env = Envelope::from_bytes(&bytes, crate::cmd_manifest::MAX_MANIFEST_FILE)
                .map_err(|e| anyhow!("{}: {e}", path.display()))?;
            let file_version = env
                .open::<throughgate_protocol::manifest::Manifest>()
                .map_err(|e| anyhow!("{}: {e}", path.display()))?
                .version;
            let current = node.state().manifest().map(|c| c.version);
            if current.is_none_or(|v| file_version > v) {
                node.state()
                    .adopt_manifest(&env)
                    .with_context(|| format!("manifest {}", path.display()))?;
            } else if current != Some(file_version) {
                tracing::warn!(file_version, trusted = ?current, "manifest file is older than the trusted manifest; ignored");
            }
        }
    }
    let metrics = node.start_with_metrics().await?;
    let addr = node.local_addr()?;
    match metrics {
        Some(m) => eprintln!(
            "{} serving on {addr}; metrics and health on http://{m} (Ctrl-C to stop)",
            config.agency
        ),
        None => eprintln!("{} serving on {addr} (Ctrl-C to stop)", config.agency),
    }
    wait_for_shutdown().await;
    eprintln!("stopping...");
    node.shutdown().await;
    Ok(crate::exit::OK)
}

async fn wait_for_shutdown() {
    #[cfg(unix)]
    {
        let mut term =
            match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                Ok(s) => s,
                Err(_) => {
                    let _ = tokio::signal::ctrl_c().await;
                    return;
                }
            };
        tokio::select! {
            _ = tokio::signal::ctrl_c() => {}
            _ = term.recv() => {}
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}

async fn status(g: &Global) -> Result<u8> {
    let client = g.client().await?;
    let s = match client.call(ClientOp::Status).await? {
        ClientResponse::Status(s) => s,
        _ => bail!("unexpected answer from the home node"),
    };
    let reached = client.remote_address();
    client.close().await;
    if g.json {
        // The node's status, and the address that answered (which replica, when the profile
        // or manifest lists several).
        let mut v = serde_json::to_value(&s)?;
        if let Some(o) = v.as_object_mut() {
            o.insert("reached".into(), reached.to_string().into());
        }
        println!("{}", serde_json::to_string_pretty(&v)?);
    } else {
        println!(
            "{} ({}) running throughgate {}",
            s.agency, s.name, s.software
        );
        println!("  reached         {reached}");
        println!("  node key        {}", s.key_fingerprint);
        println!("  started         {}", s.started_at);
        println!(
            "  manifest        version {}, expires {}",
            s.manifest_version, s.manifest_expires_at
        );
        println!("  records         {}", s.records);
        println!("  consents        {}", s.consents);
        println!("  outbox pending  {}", s.outbox_pending);
    }
    Ok(crate::exit::OK)
}

fn restore(
    g: &Global,
    config_path: &Path,
    from: &Path,
    force: bool,
    manifest: Option<&Path>,
) -> Result<u8> {
    let config = NodeConfig::load(config_path)?;
    let manifest_path = match (manifest, &config.manifest_file) {
        (Some(p), _) => p.to_path_buf(),
        (None, Some(p)) => config.resolve(p),
        (None, None) => bail!(
            "a backup is checked against the federation manifest's keys for {}: pass --manifest FILE (from `tg manifest fetch` or your federation's governance)",
            config.agency
        ),
    };
    let manifest_bytes = std::fs::read(&manifest_path)
        .with_context(|| format!("reading the manifest {}", manifest_path.display()))?;
    let manifest_env = Envelope::from_bytes(&manifest_bytes, 4 * 1024 * 1024).map_err(|e| {
        anyhow!(
            "{} is not a manifest file ({e}); fetch one with `tg manifest fetch --out FILE`",
            manifest_path.display()
        )
    })?;
    let r = match throughgate_node::backup::restore_node(
        &config,
        from,
        force,
        Clock::system().now(),
        &manifest_env,
    ) {
        Ok(r) => r,
        Err(BackupError::WrongAgency { backup, configured }) => bail!(
            "{} is a backup of {backup}, but {} configures {configured}",
            from.display(),
            config_path.display(),
        ),
        Err(e @ (BackupError::Io(_) | BackupError::Invalid(_))) => {
            return Err(e).with_context(|| format!("checking {}", from.display()))
        }
        Err(e @ (BackupError::Unsigned { .. } | BackupError::Content(_))) => {
            return Err(crate::exit::VerificationFailed(format!("{}: {e}", from.display())).into())
        }
        Err(e) => return Err(e.into()),
    };
    if let Some(aside) = &r.moved_aside {
        eprintln!("moved the old data folder to {}", aside.display());
    }
    let v = &r.verification;
    if g.json {
        println!(
            "{}",
            serde_json::json!({"pairs": r.meta.pairs, "taken_at": r.meta.taken_at, "audit_entries": v.entries, "audit_ok": v.ok()})
        );
    } else {
        println!(
            "Restored {} stored pairs (backup taken {}) into {}.",
            r.meta.pairs,
            r.meta.taken_at,
            r.data_dir.as_ref().map_or_else(
                || "the node's PostgreSQL database".to_owned(),
                |d| d.display().to_string()
            )
        );
        println!(
            "Audit log: {} entries, {} checkpoints: {}",
            v.entries,
            v.checkpoints,
            if v.ok() { "verified" } else { "FAILED" }
        );
    }
    if v.ok() {
        Ok(crate::exit::OK)
    } else {
        Err(crate::exit::VerificationFailed(format!(
            "the restored audit log does not verify: {}",
            r.verification.problem.map(|p| p.detail).unwrap_or_default()
        ))
        .into())
    }
}
