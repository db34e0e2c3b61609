//! Files the CLI writes: it never overwrites one it was asked to create.

use std::path::Path;

use anyhow::{bail, Context, Result};

/// Refuses `path` if it exists, telling the user to choose another value for `flag`.
pub fn refuse_existing(path: &Path, flag: &str) -> Result<()> {
    if path.exists() {
        bail!("{} exists; choose another {flag}", path.display());
    }
    Ok(())
}

/// Creates `path`, refusing to replace a file that appeared since it was checked.
pub fn create_new(path: &Path) -> Result<std::fs::File> {
    std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(path)
        .with_context(|| format!("creating {} (it must not exist yet)", path.display()))
}
