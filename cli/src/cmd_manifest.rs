//! `tg manifest`: create, sign, show and fetch the federation manifest.

use std::path::PathBuf;

use anyhow::{anyhow, bail, Context, Result};
use clap::Subcommand;
use serde::{Deserialize, Serialize};
use throughgate_node::keyfile::read_secret_key;
use throughgate_protocol::envelope::{Envelope, SignerRole};
use throughgate_protocol::keys::PublicKey;
use throughgate_protocol::manifest::{
    default_witness_threshold, verify_manifest, Governance, Manifest, Member, MemberRole,
};
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
        /// Distinct other members whose cosignatures make a holder's checkpoint witnessed
        /// (default: a majority of the other members; 0 requires no witnessing).
        #[arg(long)]
        witness_threshold: Option<u32>,
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
    /// Draft the next version from the current one: add or remove members, change keys,
    /// addresses, roles or governance. Writes an unsigned draft for the governance key holders.
    Draft(Box<DraftArgs>),
    /// Add your governance signature to a draft (offline; each key holder signs the same file).
    Sign {
        /// The draft (signed in place).
        file: PathBuf,
        /// Your governance key file.
        #[arg(long)]
        key: PathBuf,
    },
    /// Check a manifest: structure, expiry, its own threshold, and with --previous the chain from
    /// the version before (threshold of the old governance keys, no rollback).
    Verify {
        /// The manifest file (`.tgm`) to check.
        file: PathBuf,
        /// The version it replaces.
        #[arg(long)]
        previous: Option<PathBuf>,
    },
    /// Show what changed between two versions.
    Diff {
        /// The older version.
        old: PathBuf,
        /// The newer version.
        new: PathBuf,
    },
    /// Push a signed manifest to your home node, which adopts it and spreads it (operators).
    Publish {
        /// The signed manifest.
        file: PathBuf,
    },
}

/// Arguments of `tg manifest draft`.
#[derive(Debug, clap::Args)]
pub struct DraftArgs {
    /// The current manifest.
    #[arg(long)]
    pub from: PathBuf,
    /// Where to write the draft.
    #[arg(long)]
    pub out: PathBuf,
    /// Add a member from its member.toml (repeatable).
    #[arg(long = "add-member")]
    pub add_members: Vec<PathBuf>,
    /// Remove a member (repeatable).
    #[arg(long = "remove-member")]
    pub remove_members: Vec<throughgate_protocol::ids::AgencyId>,
    /// Add a node key to a member: AGENCY=HEX (repeatable; for rotation).
    #[arg(long = "add-key")]
    pub add_keys: Vec<String>,
    /// Retire a node key of a member: AGENCY=HEX (repeatable). It moves to the member's key
    /// history with this draft's time, so what it signed before still verifies.
    #[arg(long = "retire-key")]
    pub retire_keys: Vec<String>,
    /// Replace a member's addresses: AGENCY=HOST:PORT,HOST:PORT,... (repeatable).
    #[arg(long = "set-address")]
    pub set_addresses: Vec<String>,
    /// Replace a member's roles: AGENCY=holder,requester (repeatable).
    #[arg(long = "set-roles")]
    pub set_roles: Vec<String>,
    /// Replace the governance keys (repeatable, hex); with --threshold.
    #[arg(long = "governance-key")]
    pub governance_keys: Vec<PublicKey>,
    /// The governance threshold of the new version.
    #[arg(long)]
    pub threshold: Option<u32>,
    /// The witness threshold of the new version: distinct other members whose cosignatures
    /// make a holder's checkpoint witnessed (0 requires no witnessing).
    #[arg(long)]
    pub witness_threshold: Option<u32>,
    /// Days until the new version expires.
    #[arg(long, default_value_t = 90)]
    pub expires_days: u64,
}

/// A member entry as `tg node init` writes it.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MemberFile {
    /// The agency's entry for the manifest: name, sector, addresses, node keys, categories.
    pub member: Member,
}

/// Reads a manifest file and verifies it (self-consistency, threshold, expiry at `now`).
pub fn read_manifest(path: &std::path::Path, now: Timestamp) -> Result<(Envelope, Manifest)> {
    let bytes = std::fs::read(path).with_context(|| format!("reading {}", path.display()))?;
    let env = Envelope::from_bytes(&bytes, MAX_MANIFEST_FILE)
        .map_err(|e| anyhow!("{}: {e}; is it a manifest file? `tg manifest fetch --out FILE` saves the one your node trusts", path.display()))?;
    let m = verify_manifest(&env, None, now).map_err(|e| {
        anyhow!(
            "{}: {e} (`tg manifest verify {}` checks a manifest file)",
            path.display(),
            path.display()
        )
    })?;
    Ok((env, m))
}

/// Runs a manifest command.
pub async fn run(g: &Global, cmd: ManifestCmd) -> Result<u8> {
    match cmd {
        ManifestCmd::Create {
            members,
            governance_keys,
            threshold,
            witness_threshold,
            federation,
            version,
            expires_days,
            out,
        } => {
            let mut list = Vec::new();
            for p in &members {
                let text = std::fs::read_to_string(p)
                    .with_context(|| format!("reading {}", p.display()))?;
                let f: MemberFile = toml::from_str(&text).map_err(|e| {
                    anyhow!(
                        "{}: {e}; use the member.toml that `tg node init` wrote",
                        p.display()
                    )
                })?;
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
            let witness_threshold =
                witness_threshold.unwrap_or_else(|| default_witness_threshold(list.len()));
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
                witness_threshold,
            };
            m.validate()
                .map_err(|e| anyhow!("{e}; fix the member files or options named and run again"))?;
            let signers: Vec<_> = keys.iter().map(|k| (SignerRole::Governance, k)).collect();
            let env = Envelope::seal(&m, &signers);
            verify_manifest(&env, None, now).map_err(|e| {
                anyhow!("{e}; check --threshold against the number of --governance-key files")
            })?;
            crate::outfile::refuse_existing(&out, "--out")?;
            crate::outfile::write(&out, env.to_bytes())?;
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
                    let client = g.client().await?;
                    let (_, m) = client.manifest().await?;
                    client.close().await;
                    m
                }
            };
            show(g, &m)
        }
        ManifestCmd::Draft(a) => draft(*a),
        ManifestCmd::Sign { file, key } => sign(&file, &key),
        ManifestCmd::Verify { file, previous } => verify(g, &file, previous.as_deref()),
        ManifestCmd::Diff { old, new } => diff(&old, &new),
        ManifestCmd::Publish { file } => {
            let (env, m) = read_manifest(&file, now())?;
            let client = g.client().await?;
            client.publish_manifest(env).await?;
            client.close().await;
            println!(
                "Manifest version {} adopted by your node and spreading to {} members.",
                m.version,
                m.members.len()
            );
            Ok(crate::exit::OK)
        }
        ManifestCmd::Fetch { out } => {
            let client = g.client().await?;
            let (env, m) = client.manifest().await?;
            client.close().await;
            crate::outfile::write(&out, env.to_bytes())?;
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

fn read_envelope(path: &std::path::Path) -> Result<Envelope> {
    let bytes = std::fs::read(path).with_context(|| format!("reading {}", path.display()))?;
    Envelope::from_bytes(&bytes, MAX_MANIFEST_FILE)
        .map_err(|e| anyhow!("{}: {e}; is it a manifest file? `tg manifest fetch --out FILE` saves the one your node trusts", path.display()))
}

/// Splits an `AGENCY=VALUE` argument. `example` is shown when there is no `=`, and `listed_by`
/// names the command that lists valid agency ids when the id is not one.
pub(crate) fn agency_pair<'a>(
    s: &'a str,
    example: &str,
    listed_by: &str,
) -> Result<(throughgate_protocol::ids::AgencyId, &'a str)> {
    let (a, v) = s
        .split_once('=')
        .ok_or_else(|| anyhow!("{s:?}: expected AGENCY=VALUE, e.g. {example}"))?;
    Ok((
        throughgate_protocol::ids::AgencyId::new(a.trim())
            .map_err(|e| anyhow!("{e}; use the agency ids `{listed_by}` lists"))?,
        v,
    ))
}

fn parse_pair(s: &str) -> Result<(throughgate_protocol::ids::AgencyId, &str)> {
    agency_pair(
        s,
        "--set-address nhs-wy=nhs.example.org:4703",
        "tg manifest show FILE",
    )
}

fn draft(a: DraftArgs) -> Result<u8> {
    let env = read_envelope(&a.from)?;
    let mut m: Manifest = env
        .open()
        .map_err(|e| anyhow!("{}: {e}; is it a manifest file? `tg manifest fetch --out FILE` saves the one your node trusts", a.from.display()))?;
    let member = |m: &mut Manifest, id: &throughgate_protocol::ids::AgencyId| -> Result<usize> {
        m.members.iter().position(|x| &x.id == id).ok_or_else(|| {
            anyhow!(
                "{id} is not a member of version {}; `tg manifest show` lists the members",
                m.version
            )
        })
    };
    let issued = now();
    for p in &a.add_members {
        let text =
            std::fs::read_to_string(p).with_context(|| format!("reading {}", p.display()))?;
        let f: MemberFile = toml::from_str(&text).map_err(|e| {
            anyhow!(
                "{}: {e}; use the member.toml that `tg node init` wrote",
                p.display()
            )
        })?;
        if m.member(&f.member.id).is_some() {
            bail!(
                "{} is already a member; change it with --add-key, --set-address or --set-roles, or --remove-member it first",
                f.member.id
            );
        }
        m.members.push(f.member);
    }
    for id in &a.remove_members {
        let i = member(&mut m, id)?;
        m.members.remove(i);
    }
    for s in &a.add_keys {
        let (id, hex) = parse_pair(s)?;
        let k = PublicKey::from_hex(hex).map_err(|e| {
            anyhow!("{s}: {e}; a key is 64 hex digits, as `tg key show FILE` prints")
        })?;
        let i = member(&mut m, &id)?;
        if let Some(x) = m.members.get_mut(i) {
            if !x.node_keys.contains(&k) {
                x.node_keys.push(k);
            }
        }
    }
    for s in &a.retire_keys {
        let (id, hex) = parse_pair(s)?;
        let k = PublicKey::from_hex(hex).map_err(|e| {
            anyhow!("{s}: {e}; a key is 64 hex digits, as `tg manifest show --json` lists")
        })?;
        let i = member(&mut m, &id)?;
        if let Some(x) = m.members.get_mut(i) {
            if !x.node_keys.contains(&k) {
                bail!(
                    "{} is not a current node key of {id}; `tg manifest show FILE` lists its keys",
                    k.fingerprint()
                );
            }
            x.node_keys.retain(|y| y != &k);
            if x.node_keys.is_empty() {
                bail!("retiring that key would leave {id} with no key; add its new key with --add-key in the same draft");
            }
            // Kept in the key history, so what it signed until now still verifies.
            x.retired_keys
                .push(throughgate_protocol::manifest::RetiredKey {
                    key: k,
                    retired_at: issued,
                });
            let over = x
                .retired_keys
                .len()
                .saturating_sub(throughgate_protocol::manifest::MAX_RETIRED_KEYS);
            x.retired_keys.drain(..over);
        }
    }
    for s in &a.set_addresses {
        let (id, list) = parse_pair(s)?;
        let i = member(&mut m, &id)?;
        if let Some(x) = m.members.get_mut(i) {
            x.addresses = list
                .split(',')
                .map(|v| v.trim().to_owned())
                .filter(|v| !v.is_empty())
                .collect();
        }
    }
    for s in &a.set_roles {
        let (id, list) = parse_pair(s)?;
        let roles = list
            .split(',')
            .map(|r| match r.trim() {
                "holder" => Ok(MemberRole::Holder),
                "requester" => Ok(MemberRole::Requester),
                other => Err(anyhow!("unknown role {other:?}; use holder or requester")),
            })
            .collect::<Result<Vec<_>>>()?;
        let i = member(&mut m, &id)?;
        if let Some(x) = m.members.get_mut(i) {
            x.roles = roles;
        }
    }
    if !a.governance_keys.is_empty() {
        m.governance.keys = a.governance_keys.clone();
    }
    if let Some(t) = a.threshold {
        m.governance.threshold = t;
    }
    if let Some(t) = a.witness_threshold {
        m.witness_threshold = t;
    }
    m.version += 1;
    m.issued_at = issued;
    m.expires_at = issued.plus_secs(a.expires_days.saturating_mul(86_400));
    m.validate()
        .map_err(|e| anyhow!("{e}; change the options named and draft again"))?;
    crate::outfile::refuse_existing(&a.out, "--out")?;
    let draft = Envelope::seal(&m, &[]);
    crate::outfile::write(&a.out, draft.to_bytes())?;
    println!(
        "Draft of version {} written to {}. It needs {} governance signatures (`tg manifest sign`), including a threshold of version {}'s keys.",
        m.version,
        a.out.display(),
        m.governance.threshold,
        m.version - 1
    );
    Ok(crate::exit::OK)
}

fn sign(file: &std::path::Path, key: &std::path::Path) -> Result<u8> {
    let mut env = read_envelope(file)?;
    let m: Manifest = env.open().map_err(|e| {
        anyhow!(
            "{}: {e}; sign the draft file that `tg manifest draft` wrote",
            file.display()
        )
    })?;
    let k = read_secret_key(key)?;
    if env
        .signers(SignerRole::Governance)
        .any(|x| x == &k.public())
    {
        bail!(
            "this key has already signed {}; pass it to the next governance key holder to sign",
            file.display()
        );
    }
    env.add_signature(SignerRole::Governance, &k);
    crate::outfile::replace(file, env.to_bytes())?;
    let listed = m.governance.keys.contains(&k.public());
    println!(
        "Signed version {} with key {}{}; it now has {} governance signatures.",
        m.version,
        k.public().fingerprint(),
        if listed {
            ""
        } else {
            " (a key of the previous version, not of this one)"
        },
        env.signers(SignerRole::Governance).count()
    );
    Ok(crate::exit::OK)
}

fn verify(g: &Global, file: &std::path::Path, previous: Option<&std::path::Path>) -> Result<u8> {
    let env = read_envelope(file)?;
    let prev = match previous {
        Some(p) => {
            let pe = read_envelope(p)?;
            Some(
                pe.open::<Manifest>()
                    .map_err(|e| anyhow!("{}: {e}; is it a manifest file? `tg manifest fetch --out FILE` saves the one your node trusts", p.display()))?,
            )
        }
        None => None,
    };
    match verify_manifest(&env, prev.as_ref(), now()) {
        Ok(m) => {
            if g.json {
                println!(
                    "{}",
                    serde_json::json!({"ok": true, "version": m.version, "expires_at": m.expires_at.to_rfc3339()})
                );
            } else {
                println!(
                    "OK: version {} is well formed, unexpired (until {}), signed by {} of its governance keys{}.",
                    m.version,
                    m.expires_at,
                    m.governance.threshold,
                    if prev.is_some() { " and chained to the previous version" } else { "" }
                );
            }
            Ok(crate::exit::OK)
        }
        Err(e) => Err(crate::exit::VerificationFailed(format!("{}: {e}", file.display())).into()),
    }
}

fn diff(old: &std::path::Path, new: &std::path::Path) -> Result<u8> {
    let a: Manifest = read_envelope(old)?
        .open()
        .map_err(|e| anyhow!("{}: {e}; is it a manifest file? `tg manifest fetch --out FILE` saves the one your node trusts", old.display()))?;
    let b: Manifest = read_envelope(new)?
        .open()
        .map_err(|e| anyhow!("{}: {e}; is it a manifest file? `tg manifest fetch --out FILE` saves the one your node trusts", new.display()))?;
    println!(
        "version {} -> {}; expires {} -> {}",
        a.version, b.version, a.expires_at, b.expires_at
    );
    if a.governance != b.governance {
        println!(
            "governance: {} of {} keys -> {} of {} keys",
            a.governance.threshold,
            a.governance.keys.len(),
            b.governance.threshold,
            b.governance.keys.len()
        );
    }
    for m in &b.members {
        match a.member(&m.id) {
            None => println!("+ member {} ({})", m.id, m.name),
            Some(o) => {
                for k in m.node_keys.iter().filter(|k| !o.node_keys.contains(k)) {
                    println!("  {}: + key {}", m.id, k.fingerprint());
                }
                for k in o.node_keys.iter().filter(|k| !m.node_keys.contains(k)) {
                    println!("  {}: - key {}", m.id, k.fingerprint());
                }
                if o.addresses != m.addresses {
                    println!(
                        "  {}: addresses {} -> {}",
                        m.id,
                        o.addresses.join(","),
                        m.addresses.join(",")
                    );
                }
                if o.roles != m.roles
                    || o.categories != m.categories
                    || o.name != m.name
                    || o.sector != m.sector
                {
                    println!("  {}: name, sector, categories or roles changed", m.id);
                }
            }
        }
    }
    for m in a.members.iter().filter(|m| b.member(&m.id).is_none()) {
        println!("- member {} ({})", m.id, m.name);
    }
    Ok(crate::exit::OK)
}
