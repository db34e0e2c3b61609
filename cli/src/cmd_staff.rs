//! `tg staff`: issue and list staff credentials (operators).

use std::path::PathBuf;

use anyhow::{bail, Result};
use clap::Subcommand;
use throughgate_node::client::Profile;
use throughgate_protocol::credential::StaffRole;
use throughgate_protocol::ids::PersonId;
use throughgate_protocol::keys::SecretKey;
use throughgate_protocol::messages::{ClientOp, ClientResponse};

use crate::cmd_node::write_profile;
use crate::render::table;
use crate::Global;

/// Staff commands.
#[derive(Debug, Subcommand)]
pub enum StaffCmd {
    /// Issue a credential to a member of staff and write their key and profile.
    Add {
        /// Their staff id, e.g. cw-0042.
        #[arg(long)]
        id: PersonId,
        /// Their name.
        #[arg(long)]
        name: String,
        /// A role (repeatable): caseworker, dpo or operator.
        #[arg(long = "role", required = true)]
        roles: Vec<StaffRole>,
        /// Days the credential is valid.
        #[arg(long, default_value_t = 90)]
        valid_days: u32,
        /// Folder for their key, credential and profile (created if needed).
        #[arg(long)]
        out_dir: PathBuf,
        /// Protect their key with a passphrase (asked for, or taken from TG_PASSPHRASE); they
        /// will need it for every command.
        #[arg(long)]
        passphrase: bool,
    },
    /// List the staff credentials this node has issued: name, roles, state (active, revoked,
    /// expired, not_yet_valid, issuer_retired), the issuing node key and any revocation.
    List,
    /// Give a member of staff a new key and credential (same name and roles): their current
    /// credential is revoked and announced, the new one issued, and both logged. Writes their new
    /// key and profile like `add`.
    Reissue {
        /// Their staff id.
        id: PersonId,
        /// Days the new credential is valid.
        #[arg(long, default_value_t = 90)]
        valid_days: u32,
        /// Folder for their new key, credential and profile (created if needed; must not hold
        /// a key for them already).
        #[arg(long)]
        out_dir: PathBuf,
        /// Protect their key with a passphrase (asked for, or taken from TG_PASSPHRASE).
        #[arg(long)]
        passphrase: bool,
    },
    /// Withdraw a member of staff's credential: refused at once here, and announced to every
    /// agency so their nodes refuse it too.
    Revoke {
        /// Their staff id.
        id: PersonId,
    },
    /// Re-issue under the node's current key every credential in force that a previous node
    /// key signed: same staff id, name, roles, key and validity, newly signed, each logged.
    /// `tg node rotate-key` does this itself; run it before the old key is retired if
    /// `tg staff list` shows any credential as previous_key.
    ReissueCredentials,
    /// Pick up your own credential as your node now holds it (re-issued under its new key after
    /// a key rotation) and save it in your profile. Any command does this by itself when it
    /// finds your credential signed by a key the node no longer presents; any role may run it.
    Refresh,
}

/// Saves the home node's verified manifest beside a new profile, as the manifest the profile
/// trusts from the start: a later node key rotation is then followed through newer signed
/// manifests instead of locking the profile out.
async fn anchor_profile(
    client: &throughgate_node::client::HomeClient,
    profile: &std::path::Path,
) -> Result<()> {
    let Ok((env, _)) = client.manifest().await else {
        // A node without a manifest yet: the profile starts from its pinned key alone.
        return Ok(());
    };
    let cache = Profile::load(profile)?.manifest_cache_path();
    crate::outfile::write(&cache, env.to_bytes())
}

/// Generates a key for `id` in `out_dir` (refusing a folder that already holds one), has the
/// home node issue a credential for it through the operation `op` builds, and writes the
/// profile (with the key protected by a new passphrase when `passphrase`) and the manifest it
/// trusts. Returns the profile's path.
async fn issue_profile(
    g: &Global,
    client: &throughgate_node::client::HomeClient,
    home: &Profile,
    id: &PersonId,
    out_dir: &std::path::Path,
    passphrase: bool,
    op: impl FnOnce(throughgate_protocol::keys::PublicKey) -> ClientOp,
) -> Result<std::path::PathBuf> {
    let passphrase = if passphrase {
        Some(g.new_passphrase()?)
    } else {
        None
    };
    crate::outfile::create_dir(out_dir)?;
    if out_dir.join(format!("{id}.key")).exists() {
        bail!(
            "{} already holds a key for {id}; choose another --out-dir",
            out_dir.display()
        );
    }
    let key = SecretKey::generate();
    let cred = match client.call(op(key.public())).await? {
        ClientResponse::Credential(c) => c,
        _ => bail!("unexpected answer from the home node; tg and the node may be different versions: compare `tg --version` with `tg node status`"),
    };
    let path = write_profile(
        out_dir,
        crate::cmd_node::HomeNode {
            agency: &home.agency,
            address: &home.node_address,
            replicas: &home.replica_addresses,
            key: &home.node_key,
        },
        id,
        &key,
        &cred,
        passphrase.as_deref(),
    )?;
    anchor_profile(client, &path).await?;
    Ok(path)
}

/// Runs a staff command.
pub async fn run(g: &Global, cmd: StaffCmd) -> Result<u8> {
    let profile = Profile::load(&g.profile_path())?;
    let client = g.client_for(&profile).await?;
    let code = match cmd {
        StaffCmd::Refresh => {
            let refreshed = client.credential_refreshed().cloned();
            let file = profile.resolve_path(&profile.credential_file);
            if let Some(Err(e)) = &refreshed {
                bail!(
                    "your node re-issued your credential under its new key, but {} could not be \
                     written: {e}; fix its permissions and run again",
                    file.display()
                );
            }
            let issuer = client
                .credential_envelope()
                .signers(throughgate_protocol::envelope::SignerRole::Node)
                .next()
                .map(|k| k.fingerprint())
                .unwrap_or_default();
            if g.json {
                println!(
                    "{}",
                    serde_json::json!({"credential": file, "refreshed": refreshed.is_some(), "issuer_key": issuer})
                );
            } else if refreshed.is_some() {
                println!(
                    "Your credential, re-issued under node key {issuer}, is saved to {}.",
                    file.display()
                );
            } else {
                println!(
                    "Your credential is already the one your node holds (signed by node key {issuer}); nothing to do."
                );
            }
            crate::exit::OK
        }
        StaffCmd::ReissueCredentials => {
            let list = match client.call(ClientOp::ReissueCredentials).await? {
                ClientResponse::Staff(l) => l,
                _ => bail!("unexpected answer from the home node; tg and the node may be different versions: compare `tg --version` with `tg node status`"),
            };
            if g.json {
                println!("{}", serde_json::to_string_pretty(&list)?);
            } else if list.is_empty() {
                println!("Every credential in force is already signed by the node's current key.");
            } else {
                println!(
                    "{} credential(s) re-issued under the node's current key: {}. Their holders pick them up at their next command (or `tg staff refresh`).",
                    list.len(),
                    list.iter()
                        .map(|s| s.person_id.to_string())
                        .collect::<Vec<_>>()
                        .join(", ")
                );
            }
            crate::exit::OK
        }
        StaffCmd::Add {
            id,
            name,
            roles,
            valid_days,
            out_dir,
            passphrase,
        } => {
            let path = issue_profile(
                g,
                &client,
                &profile,
                &id,
                &out_dir,
                passphrase,
                |public_key| ClientOp::AddStaff {
                    person_id: id.clone(),
                    display_name: name,
                    roles,
                    public_key,
                    valid_days,
                },
            )
            .await?;
            if g.json {
                println!("{}", serde_json::json!({"person_id": id, "profile": path}));
            } else {
                println!(
                    "Credential issued to {id}; their profile is {} (give them the whole folder).",
                    path.display()
                );
            }
            crate::exit::OK
        }
        StaffCmd::Reissue {
            id,
            valid_days,
            out_dir,
            passphrase,
        } => {
            let path = issue_profile(
                g,
                &client,
                &profile,
                &id,
                &out_dir,
                passphrase,
                |public_key| ClientOp::ReissueStaff {
                    person_id: id.clone(),
                    public_key,
                    valid_days,
                },
            )
            .await?;
            if g.json {
                println!(
                    "{}",
                    serde_json::json!({"person_id": id, "profile": path, "reissued": true})
                );
            } else {
                println!(
                    "{id}'s old credential is revoked and announced; their new profile is {} (give them the whole folder).",
                    path.display()
                );
            }
            crate::exit::OK
        }
        StaffCmd::Revoke { id } => {
            client.revoke_staff(&id).await?;
            if g.json {
                println!("{}", serde_json::json!({"person_id": id, "revoked": true}));
            } else {
                println!("{id}'s credential is revoked here and being announced to every agency.");
            }
            crate::exit::OK
        }
        StaffCmd::List => {
            let list = match client.call(ClientOp::ListStaff).await? {
                ClientResponse::Staff(l) => l,
                _ => bail!("unexpected answer from the home node; tg and the node may be different versions: compare `tg --version` with `tg node status`"),
            };
            if g.json {
                println!("{}", serde_json::to_string_pretty(&list)?);
            } else {
                let mut t = table(&[
                    "person",
                    "name",
                    "roles",
                    "state",
                    "valid until",
                    "revoked",
                    "key",
                    "issuer key",
                ]);
                for s in &list {
                    let revoked = match (&s.revoked_at, &s.revoked_by) {
                        (Some(at), Some(by)) => format!("{at} by {by}"),
                        (Some(at), None) => at.to_string(),
                        _ => String::new(),
                    };
                    t.add_row(vec![
                        s.person_id.to_string(),
                        s.display_name.clone(),
                        s.roles
                            .iter()
                            .map(|r| r.as_str())
                            .collect::<Vec<_>>()
                            .join(", "),
                        s.state.clone(),
                        s.not_after.to_string(),
                        revoked,
                        s.key_fingerprint.clone(),
                        s.issuer_key.clone(),
                    ]);
                }
                println!("{t}");
            }
            crate::exit::OK
        }
    };
    client.close().await;
    Ok(code)
}
