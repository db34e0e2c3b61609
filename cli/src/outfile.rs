//! Files the CLI writes: private (0600, folders 0700), created exclusively so a link planted in
//! their place is refused rather than written through, through a temporary file so they appear
//! only whole, and never replacing an existing file unless `--force` is given.

use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};

use anyhow::{Context, Result};
use throughgate_node::private::{self, PrivateError};

static FORCE: AtomicBool = AtomicBool::new(false);

/// Records the global `--force` flag: existing output files may be replaced.
pub fn set_force(force: bool) {
    FORCE.store(force, Ordering::Relaxed);
}

/// Whether `--force` was given.
pub fn force() -> bool {
    FORCE.load(Ordering::Relaxed)
}

/// Refuses `path` if anything (a file or a link) is there and `--force` was not given, telling
/// the user to choose another value for `flag`.
pub fn refuse_existing(path: &Path, flag: &str) -> Result<()> {
    if !force() && std::fs::symlink_metadata(path).is_ok() {
        return Err(PrivateError::Exists(path.to_path_buf()))
            .with_context(|| format!("choose another {flag}"));
    }
    Ok(())
}

/// Writes `bytes` to `path` as a new private file (replacing one only with `--force`).
pub fn write(path: &Path, bytes: impl AsRef<[u8]>) -> Result<()> {
    private::write_new(path, bytes.as_ref(), force())
        .with_context(|| format!("writing {}", path.display()))
}

/// Replaces `path`, a file the command was given to update (a manifest draft being signed),
/// keeping it private and never writing through a link.
pub fn replace(path: &Path, bytes: impl AsRef<[u8]>) -> Result<()> {
    private::write_new(path, bytes.as_ref(), true)
        .with_context(|| format!("replacing {}", path.display()))
}

/// Creates `path` as a new private file to stream into, refusing an existing one or a link.
pub fn create_new(path: &Path) -> Result<std::fs::File> {
    private::create_new(path)
        .with_context(|| format!("creating {} (it must not exist yet)", path.display()))
}

/// Creates a private folder (0700) and its missing parents.
pub fn create_dir(path: &Path) -> Result<()> {
    private::create_dir(path).with_context(|| format!("creating {}", path.display()))
}
