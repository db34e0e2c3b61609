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
        KeyCmd::Generate { out } => {
            let k = SecretKey::generate();
            write_secret_key(&out, &k)?;
            (out, k)
        }
        KeyCmd::Show { file } => {
            let k = read_secret_key(&file)?;
            (file, k)
        }
    };
    if g.json {
        println!(
            "{}",
            serde_json::json!({"file": path, "public_key": key.public().to_hex(), "fingerprint": key.public().fingerprint()})
        );
    } else {
        println!("{}  public key {}", path.display(), key.public().to_hex());
    }
    Ok(crate::exit::OK)
}
