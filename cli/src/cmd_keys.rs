//! `tg key`: generate Ed25519 keys (staff, governance) as PKCS#8 PEM files with mode 0600.

use std::path::PathBuf;

use anyhow::Result;
use clap::Subcommand;
use throughgate_node::keyfile::{read_secret_key, write_secret_key};
use throughgate_protocol::keys::SecretKey;

use crate::Global;

/// Key commands.
#[derive(Debug, Subcommand)]
pub enum KeyCmd {
    /// Generate a new key file.
    Generate {
        /// Where to write it (must not exist).
        #[arg(long)]
        out: PathBuf,
        /// Protect it with a passphrase (asked for, or taken from TG_PASSPHRASE).
        #[arg(long)]
        passphrase: bool,
    },
    /// Print a key file's public key.
    Show {
        /// The key file.
        file: PathBuf,
    },
}

/// Runs a key command.
pub fn run(g: &Global, cmd: KeyCmd) -> Result<u8> {
    let (path, key) = match cmd {
        KeyCmd::Generate { out, passphrase } => {
            let k = SecretKey::generate();
            if passphrase {
                let p = g.new_passphrase()?;
                throughgate_node::keyfile::write_secret_key_protected(&out, &k, &p)?;
            } else {
                write_secret_key(&out, &k)?;
            }
            (out, k)
        }
        KeyCmd::Show { file } => {
            let k = if throughgate_node::keyfile::is_protected(&file)
                && std::env::var_os(throughgate_node::keyfile::PASSPHRASE_ENV).is_none()
            {
                let p = rpassword::prompt_password(format!("Passphrase for {}: ", file.display()))?;
                throughgate_node::keyfile::read_secret_key_with(&file, Some(&p))?
            } else {
                read_secret_key(&file)?
            };
            (file, k)
        }
    };
    if g.json {
        println!(
            "{}",
            serde_json::json!({"file": path, "public_key": key.public().to_hex(), "fingerprint": key.public().fingerprint()})
        );
    } else {
        println!(
            "{}  public key {} (fingerprint {})",
            path.display(),
            key.public().to_hex(),
            key.public().fingerprint()
        );
    }
    Ok(crate::exit::OK)
}
