//! `tg manifest`: create, sign, show and fetch the federation manifest.

use std::path::PathBuf;

use anyhow::{anyhow, bail, Context, Result};
use clap::Subcommand;
use serde::{Deserialize, Serialize};
use throughgate_node::client::{HomeClient, Profile};
use throughgate_node::keyfile::read_secret_key;
use throughgate_protocol::envelope::{Envelope, SignerRole};
use throughgate_protocol::manifest::{verify_manifest, Governance, Manifest, Member};
use throughgate_protocol::time::Timestamp;

use crate::render::table;
use crate::Global;

/// The largest manifest file read.
pub const MAX_MANIFEST_FILE: usize = 4 * 1024 * 1024;

/// Manifest commands.
#[derive(Debug, Subcommand)]
pub enum ManifestCmd {
    /// Create and sign a manifest from members' `member.toml` files (written by `tg node init`).
    Create {
        /// A member file (repeatable).
        #[arg(long = "member", required = true)]
        members: Vec<PathBuf>,
        /// A governance key file that signs (repeatable).
        #[arg(long = "governance-key", required = true)]
        governance_keys: Vec<PathBuf>,
        /// Signatures required for this and the next version (default: all the keys given).
        #[arg(long)]
        threshold: Option<u32>,
        /// The federation's name.
        #[arg(long, default_value = "throughgate")]
        federation: String,
        /// The version number.
        #[arg(long, default_value_t = 1)]
        version: u64,
        /// Days until it expires.
        #[arg(long, default_value_t = 90)]
        expires_days: u64,
        /// Where to write it.
        #[arg(long)]
        out: PathBuf,
    },
    /// Show a manifest file (or, without a file, the one your home node trusts).
    Show {
        /// The manifest file.
        file: Option<PathBuf>,
    },
    /// Save the manifest your home node trusts to a file (for offline verification).
    Fetch {
        /// Where to write it.
        #[arg(long)]
        out: PathBuf,
    },
}

/// A member entry as `tg node init` writes it.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MemberFile {
    /// The member.
    pub member: Member,
}

/// Reads a manifest file and verifies it (self-consistency, threshold, expiry at `now`).
pub fn read_manifest(path: &std::path::Path, now: Timestamp) -> Result<(Envelope, Manifest)> {
    let bytes = std::fs::read(path).with_context(|| format!("reading {}", path.display()))?;
    let env = Envelope::from_bytes(&bytes, MAX_MANIFEST_FILE)
        .map_err(|e| anyhow!("{}: {e}", path.display()))?;
    let m = verify_manifest(&env, None, now).map_err(|e| anyhow!("{}: {e}", path.display()))?;
    Ok((env, m))
}

/// Runs a manifest command.
pub async fn run(g: &Global, cmd: ManifestCmd) -> Result<u8> {
    match cmd {
        ManifestCmd::Create {
            members,
            governance_keys,
            threshold,
            federation,
            version,
            expires_days,
            out,
        } => {
            let mut list = Vec::new();
            for p in &members {
                let text = std::fs::read_to_string(p)
                    .with_context(|| format!("reading {}", p.display()))?;
                let f: MemberFile =
                    toml::from_str(&text).map_err(|e| anyhow!("{}: {e}", p.display()))?;
                list.push(f.member);
            }
            let keys = governance_keys
                .iter()
                .map(|p| read_secret_key(p))
                .collect::<Result<Vec<_>, _>>()?;
            let now = Timestamp(
                std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .map(|d| d.as_secs())
                    .unwrap_or(0),
            );
            let m = Manifest {
                federation,
                version,
                issued_at: now,
                expires_at: now.plus_secs(expires_days.saturating_mul(86_400)),
                members: list,
                governance: Governance {
                    keys: keys.iter().map(|k| k.public()).collect(),
                    threshold: threshold.unwrap_or(u32::try_from(keys.len()).unwrap_or(u32::MAX)),
                },
            };
            m.validate().map_err(|e| anyhow!("{e}"))?;
            let signers: Vec<_> = keys.iter().map(|k| (SignerRole::Governance, k)).collect();
            let env = Envelope::seal(&m, &signers);
            verify_manifest(&env, None, now).map_err(|e| anyhow!("{e}"))?;
            if out.exists() {
                bail!("{} exists; choose another --out", out.display());
            }
            std::fs::write(&out, env.to_bytes())
                .with_context(|| format!("writing {}", out.display()))?;
            println!(
                "Manifest version {} with {} members written to {}",
                m.version,
                m.members.len(),
                out.display()
            );
            Ok(crate::exit::OK)
        }
        ManifestCmd::Show { file } => {
            let m = match file {
                Some(p) => read_manifest(&p, now())?.1,
                None => {
                    let client =
                        HomeClient::connect_profile(&Profile::load(&g.profile_path())?).await?;
                    let (_, m) = client.manifest().await?;
                    client.close().await;
                    m
                }
            };
            show(g, &m)
        }
        ManifestCmd::Fetch { out } => {
            let client = HomeClient::connect_profile(&Profile::load(&g.profile_path())?).await?;
            let (env, m) = client.manifest().await?;
            client.close().await;
            std::fs::write(&out, env.to_bytes())
                .with_context(|| format!("writing {}", out.display()))?;
            println!("Manifest version {} saved to {}", m.version, out.display());
            Ok(crate::exit::OK)
        }
    }
}

fn now() -> Timestamp {
    Timestamp(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0),
    )
}

fn show(g: &Global, m: &Manifest) -> Result<u8> {
    if g.json {
        println!("{}", serde_json::to_string_pretty(m)?);
        return Ok(crate::exit::OK);
    }
    println!(
        "Federation {}  version {}  issued {}  expires {}\nGovernance: {} of {} keys",
        m.federation,
        m.version,
        m.issued_at,
        m.expires_at,
        m.governance.threshold,
        m.governance.keys.len()
    );
    let mut t = table(&[
        "agency",
        "name",
        "sector",
        "addresses",
        "keys",
        "categories",
        "roles",
    ]);
    for mem in &m.members {
        t.add_row(vec![
            mem.id.to_string(),
            mem.name.clone(),
            mem.sector.to_string(),
            mem.addresses.join(" "),
            mem.node_keys
                .iter()
                .map(|k| k.fingerprint())
                .collect::<Vec<_>>()
                .join(" "),
            mem.categories
                .iter()
                .map(|c| c.as_str())
                .collect::<Vec<_>>()
                .join(", "),
            mem.roles
                .iter()
                .map(|r| format!("{r:?}").to_lowercase())
                .collect::<Vec<_>>()
                .join(", "),
        ]);
    }
    println!("{t}");
    Ok(crate::exit::OK)
}
