use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use throughgate_protocol::ids::{AgencyId, PersonId};
use throughgate_protocol::keys::PublicKey;

use super::ClientError;

/// Where a member of staff's CLI finds its home node and its own key and credential.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Profile {
    /// The home agency.
    pub agency: AgencyId,
    /// The home node's address, `host:port`.
    pub node_address: String,
    /// The home node's public key (hex), pinned.
    pub node_key: PublicKey,
    /// This person's staff id.
    pub person_id: PersonId,
    /// This person's private key file (relative to the profile's folder).
    pub key_file: PathBuf,
    /// This person's credential file (CBOR envelope, relative to the profile's folder).
    pub credential_file: PathBuf,
    /// The profile's folder (not in the file).
    #[serde(skip)]
    pub base_dir: PathBuf,
}

impl Profile {
    /// Reads a profile file.
    pub fn load(path: &Path) -> Result<Profile, ClientError> {
        let bad = |detail: String| ClientError::Profile {
            path: path.to_path_buf(),
            detail,
        };
        let meta = std::fs::metadata(path).map_err(|e| bad(e.to_string()))?;
        if meta.len() > 64 * 1024 {
            return Err(bad("file is too large to be a profile".into()));
        }
        let text = std::fs::read_to_string(path).map_err(|e| bad(e.to_string()))?;
        let mut p: Profile = toml::from_str(&text).map_err(|e| bad(e.to_string()))?;
        p.base_dir = path.parent().map(Path::to_path_buf).unwrap_or_default();
        Ok(p)
    }

    /// The profile as TOML.
    pub fn to_toml(&self) -> String {
        toml::to_string_pretty(self).unwrap_or_default()
    }

    /// The person's key file.
    pub fn key_path(&self) -> PathBuf {
        self.resolve(&self.key_file)
    }

    /// Where the client caches the last manifest it verified (next to the profile).
    pub fn manifest_cache_path(&self) -> PathBuf {
        self.base_dir
            .join(format!("{}.manifest.tgm", self.person_id))
    }

    /// A path from the profile (`key_file`, `credential_file`), relative to its folder.
    pub fn resolve_path(&self, p: &Path) -> PathBuf {
        self.resolve(p)
    }

    pub(crate) fn resolve(&self, p: &Path) -> PathBuf {
        if p.is_absolute() {
            p.to_path_buf()
        } else {
            self.base_dir.join(p)
        }
    }
}
