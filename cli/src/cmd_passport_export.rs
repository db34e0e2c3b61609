//! `tg passport export FILE --html`: a saved bundle, verified, as a printable HTML page.

use std::path::PathBuf;

use anyhow::{Context, Result};
use clap::Args;

use crate::cmd_passport::{all_verified, load_verified, LoadedBundle};
use crate::render_html::passport_html;
use crate::Global;

/// Arguments of `tg passport export`.
#[derive(Debug, Args)]
pub struct ExportArgs {
    /// The bundle file (from `tg passport assemble --out`).
    pub bundle: PathBuf,
    /// The federation manifest to verify against (a file from `tg manifest fetch`). Without it
    /// the copy inside the bundle is used, and the page says so.
    #[arg(long)]
    pub manifest: Option<PathBuf>,
    /// Write a self-contained printable HTML page (the only export format so far).
    #[arg(long, required = true)]
    pub html: bool,
    /// Write to this file instead of stdout.
    #[arg(long)]
    pub out: Option<PathBuf>,
}

/// Runs `tg passport export`.
pub fn run(g: &Global, a: ExportArgs) -> Result<u8> {
    let LoadedBundle {
        verified,
        manifest,
        source,
        ..
    } = load_verified(&a.bundle, a.manifest.as_deref())?;
    let html = passport_html(&verified, &manifest, &source);
    match &a.out {
        Some(p) => {
            crate::outfile::write(p, &html)
                .context("check the folder exists and is writable, or choose another --out")?;
            if g.json {
                println!(
                    "{}",
                    serde_json::json!({"out": p, "verified": verified.all_valid(), "verified_against": source})
                );
            } else {
                println!(
                    "Passport {} written to {} (open it in a browser to read or print it).",
                    verified.query.passport_id,
                    p.display()
                );
            }
        }
        None => print!("{html}"),
    }
    all_verified(
        &verified,
        "agency answer(s)",
        "the page marks them and leaves their records out. Assemble the passport again",
    )
}
