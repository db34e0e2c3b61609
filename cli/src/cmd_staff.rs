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
    /// List the staff credentials this node has issued.
    List,
    /// Withdraw a member of staff's credential: refused at once here, and announced to every
    /// agency so their nodes refuse it too.
    Revoke {
        /// Their staff id.
        id: PersonId,
    },
}

/// Runs a staff command.
pub async fn run(g: &Global, cmd: StaffCmd) -> Result<u8> {
    let profile = Profile::load(&g.profile_path())?;
    let client = g.client_for(&profile).await?;
    let code = match cmd {
        StaffCmd::Add {
            id,
            name,
            roles,
            valid_days,
            out_dir,
            passphrase,
        } => {
            let passphrase = if passphrase {
                Some(g.new_passphrase()?)
            } else {
                None
            };
            std::fs::create_dir_all(&out_dir)?;
            if out_dir.join(format!("{id}.key")).exists() {
                bail!(
                    "{} already holds a key for {id}; choose another --out-dir, or another staff id (to replace a credential, `tg staff revoke {id}` first)",
                    out_dir.display()
                );
            }
            let key = SecretKey::generate();
            let op = ClientOp::AddStaff {
                person_id: id.clone(),
                display_name: name,
                roles,
                public_key: key.public(),
                valid_days,
            };
            let cred = match client.call(op).await? {
                ClientResponse::Credential(c) => c,
                _ => bail!("unexpected answer from the home node; tg and the node may be different versions: compare `tg --version` with `tg node status`"),
            };
            let path = write_profile(
                &out_dir,
                crate::cmd_node::HomeNode {
                    agency: &profile.agency,
                    address: &profile.node_address,
                    key: &profile.node_key,
                },
                &id,
                &key,
                &cred,
                passphrase.as_deref(),
            )?;
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
                let mut t = table(&["person", "roles", "valid until", "key"]);
                for s in &list {
                    t.add_row(vec![
                        s.person_id.to_string(),
                        s.roles
                            .iter()
                            .map(|r| r.as_str())
                            .collect::<Vec<_>>()
                            .join(", "),
                        s.not_after.to_string(),
                        s.key_fingerprint.clone(),
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
