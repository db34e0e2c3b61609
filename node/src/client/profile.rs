use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use throughgate_protocol::ids::{AgencyId, PersonId};
use throughgate_protocol::keys::PublicKey;

use super::ClientError;

/// The most further addresses a profile may list (a manifest lists at most 8 per agency).
pub const MAX_REPLICA_ADDRESSES: usize = 7;

/// Where a member of staff's CLI finds its home node and its own key and credential.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Profile {
    /// The home agency.
    pub agency: AgencyId,
    /// The home node's address, `host:port`.
    pub node_address: String,
    /// Further addresses of the home node (its other replicas), raced with `node_address`
    /// when connecting so that one replica being down does not stop the member of staff.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub replica_addresses: Vec<String>,
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
        if p.replica_addresses.len() > MAX_REPLICA_ADDRESSES {
            return Err(bad(format!(
                "replica_addresses lists {} addresses; at most {MAX_REPLICA_ADDRESSES} are \
                 allowed (as many as a manifest may list for one agency)",
                p.replica_addresses.len()
            )));
        }
        p.base_dir = path.parent().map(Path::to_path_buf).unwrap_or_default();
        Ok(p)
    }

    /// The profile as TOML.
    pub fn to_toml(&self) -> String {
        toml::to_string_pretty(self).unwrap_or_default()
    }

    /// Every address of the home node this profile names: `node_address` first, then the
    /// replicas, without repeats.
    pub fn addresses(&self) -> Vec<&str> {
        let mut out: Vec<&str> = vec![self.node_address.as_str()];
        for a in &self.replica_addresses {
            if !out.contains(&a.as_str()) {
                out.push(a);
            }
        }
        out
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

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn load(text: &str) -> Result<Profile, ClientError> {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("p.profile.toml");
        std::fs::write(&path, text).unwrap();
        Profile::load(&path)
    }

    fn text(extra: &str) -> String {
        let key = throughgate_protocol::keys::SecretKey::from_seed(&[1; 32])
            .public()
            .to_hex();
        format!(
            "agency = \"dwp\"\nnode_address = \"a.example:4700\"\nnode_key = \"{key}\"\n\
             person_id = \"cw-1\"\nkey_file = \"cw-1.key\"\ncredential_file = \"cw-1.cred\"\n{extra}"
        )
    }

    #[test]
    fn a_profile_without_replica_addresses_names_one_address() {
        let p = load(&text("")).unwrap();
        assert_eq!(p.addresses(), vec!["a.example:4700"]);
        assert!(!p.to_toml().contains("replica_addresses"));
    }

    #[test]
    fn replica_addresses_follow_the_node_address_without_repeats_and_round_trip() {
        let p = load(&text(
            "replica_addresses = [\"b.example:4700\", \"a.example:4700\", \"c.example:4700\"]\n",
        ))
        .unwrap();
        assert_eq!(
            p.addresses(),
            vec!["a.example:4700", "b.example:4700", "c.example:4700"]
        );
        let again = load(&p.to_toml()).unwrap();
        assert_eq!(again.replica_addresses, p.replica_addresses);
    }

    #[test]
    fn more_replica_addresses_than_a_manifest_may_list_are_refused() {
        let many: Vec<String> = (0..=MAX_REPLICA_ADDRESSES)
            .map(|i| format!("\"r{i}.example:4700\""))
            .collect();
        let err = load(&text(&format!(
            "replica_addresses = [{}]\n",
            many.join(", ")
        )))
        .unwrap_err()
        .to_string();
        assert!(err.contains("at most 7"), "{err}");
    }
}
