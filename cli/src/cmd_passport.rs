//! `tg passport`: assemble a passport through the home node, verify a saved bundle offline,
//! show a saved bundle.

use std::io::IsTerminal;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, Result};
use clap::{Args, Subcommand};
use indicatif::{MultiProgress, ProgressBar, ProgressStyle};
use throughgate_node::client::{
    requests_under, requests_without_consent, ClientError, HomeClient, Profile,
};
use throughgate_protocol::bundle::{verify_bundle, PassportBundle, VerifiedBundle};
use throughgate_protocol::category::{Category, Purpose};
use throughgate_protocol::consent::Consent;
use throughgate_protocol::envelope::Envelope;
use throughgate_protocol::ids::{ConsentId, PassportId};
use throughgate_protocol::manifest::{verify_manifest, Manifest};
use throughgate_protocol::messages::{HolderResult, HolderStatus};

use crate::exit::{self, VerificationFailed};
use crate::render;
use crate::Global;

/// Passport commands.
#[derive(Debug, Subcommand)]
pub enum PassportCmd {
    /// Assemble a person's passport from every agency their consent covers.
    Assemble(AssembleArgs),
    /// Verify a saved passport bundle offline against a manifest.
    Verify(VerifyArgs),
    /// Show a saved passport bundle (verifying it first).
    Show(VerifyArgs),
    /// Export a saved passport bundle (verifying it first) as a printable, self-contained HTML
    /// page: every section names its source agency, as-of time and verification status.
    Export(crate::cmd_passport_export::ExportArgs),
}

/// Arguments of `tg passport assemble`.
#[derive(Debug, Args)]
pub struct AssembleArgs {
    /// The person's passport id (pp-...).
    #[arg(long)]
    pub passport: PassportId,
    /// The consent to rely on. Default: the newest active consent your node holds for this
    /// person that names your agency as a grantee.
    #[arg(long)]
    pub consent: Option<ConsentId>,
    /// The purpose of the query.
    #[arg(long, default_value = "resettlement")]
    pub purpose: Purpose,
    /// Only these categories (repeatable). Default: everything the consent covers.
    #[arg(long = "category")]
    pub categories: Vec<Category>,
    /// Save the signed bundle to this file (verify later with `tg passport verify`).
    #[arg(long)]
    pub out: Option<PathBuf>,
}

/// Arguments of `tg passport verify` and `show`.
#[derive(Debug, Args)]
pub struct VerifyArgs {
    /// The bundle file.
    pub bundle: PathBuf,
    /// The federation manifest to verify against (a file from `tg manifest fetch`). Without it
    /// the copy inside the bundle is used, and the output says so.
    #[arg(long)]
    pub manifest: Option<PathBuf>,
}

/// Runs a passport command.
pub async fn run(g: &Global, cmd: PassportCmd) -> Result<u8> {
    match cmd {
        PassportCmd::Assemble(a) => assemble_cmd(g, a).await,
        PassportCmd::Verify(a) => verify_cmd(g, a, false),
        PassportCmd::Show(a) => verify_cmd(g, a, true),
        PassportCmd::Export(a) => crate::cmd_passport_export::run(g, a),
    }
}

/// Assembles a passport through the home node, with live progress on a terminal.
#[allow(clippy::too_many_arguments)]
pub async fn assemble(
    client: &HomeClient,
    manifest_env: &Envelope,
    manifest: &Manifest,
    passport: &PassportId,
    consent: Option<&Consent>,
    explicit_consent: Option<&ConsentId>,
    purpose: Purpose,
    categories: &[Category],
    show_progress: bool,
) -> Result<(PassportBundle, VerifiedBundle)> {
    let bars = MultiProgress::new();
    let mut spinners = Vec::new();
    if show_progress {
        let holders: Vec<_> = match consent {
            Some(c) => requests_under(c, categories),
            None => requests_without_consent(manifest, categories),
        }
        .into_iter()
        .map(|r| r.holder)
        .collect();
        let style = ProgressStyle::with_template("  {spinner} {prefix:<18} {msg}")
            .unwrap_or_else(|_| ProgressStyle::default_spinner());
        for h in holders {
            let pb = bars.add(ProgressBar::new_spinner());
            pb.set_style(style.clone());
            pb.set_prefix(h.to_string());
            pb.set_message("asking...");
            pb.enable_steady_tick(Duration::from_millis(80));
            spinners.push((h, pb));
        }
    }
    let mut on_progress = |r: HolderResult| {
        if let Some((_, pb)) = spinners.iter().find(|(a, _)| a == &r.agency) {
            pb.finish_with_message(format!(
                "{} in {} ms",
                r.status.as_str().replace('_', " "),
                r.elapsed_ms
            ));
        }
    };
    let out = client
        .passport(
            manifest_env,
            manifest,
            passport,
            consent,
            explicit_consent,
            purpose,
            categories,
            show_progress.then_some(&mut on_progress as _),
        )
        .await;
    for (_, pb) in &spinners {
        pb.finish_and_clear();
    }
    let _ = bars.clear();
    match out {
        Ok(x) => Ok(x),
        Err(ClientError::Invalid(m)) => {
            Err(VerificationFailed(format!(
                "the passport does not verify: {m}; do not rely on it. Assemble it again, and if it still fails tell your node's operator (an agency's key may not match the manifest: `tg manifest show`)"
            ))
            .into())
        }
        Err(e) => Err(e.into()),
    }
}

/// The exit code for an assembled passport.
pub fn passport_exit(v: &VerifiedBundle) -> u8 {
    if !v.all_valid() {
        exit::INVALID
    } else if v
        .results
        .iter()
        .any(|r| r.result.status != HolderStatus::Answered)
    {
        exit::PARTIAL
    } else {
        exit::OK
    }
}

async fn assemble_cmd(g: &Global, a: AssembleArgs) -> Result<u8> {
    let profile = Profile::load(&g.profile_path())?;
    let client = g.client_for(&profile).await?;
    let (manifest_env, manifest) = client.manifest().await?;
    let consent = client.consent_for(&a.passport, a.consent.as_ref()).await?;
    let progress = !g.json && std::io::stderr().is_terminal();
    let (bundle, v) = assemble(
        &client,
        &manifest_env,
        &manifest,
        &a.passport,
        consent.as_ref(),
        a.consent.as_ref(),
        a.purpose,
        &a.categories,
        progress,
    )
    .await?;
    client.close().await;
    if let Some(out) = &a.out {
        crate::outfile::write(out, bundle.to_bytes())?;
    }
    if g.json {
        println!(
            "{}",
            serde_json::to_string_pretty(&render::passport_json(&bundle, &v))?
        );
    } else {
        print!("{}", render::passport_text(&bundle, &v, &manifest));
        if let Some(out) = &a.out {
            println!(
                "\nSigned bundle saved to {} (check it any time with `tg passport verify`).",
                out.display()
            );
        }
    }
    Ok(passport_exit(&v))
}

/// A saved bundle, verified: the bundle, the verification, the manifest it was checked against
/// and a sentence saying which manifest that was.
pub struct LoadedBundle {
    /// The bundle as saved.
    pub bundle: PassportBundle,
    /// What verified and what did not.
    pub verified: VerifiedBundle,
    /// The manifest it was verified against.
    pub manifest: Manifest,
    /// Which manifest that was, for people.
    pub source: String,
}

/// Reads a saved bundle and verifies it against `manifest_file`, or without one against the
/// manifest copy inside the bundle. A bundle whose query does not verify is an error; a bundle
/// some of whose responses do not verify is returned, with the problems in `verified`.
pub fn load_verified(bundle_file: &Path, manifest_file: Option<&Path>) -> Result<LoadedBundle> {
    let bytes = std::fs::read(bundle_file).with_context(|| {
        format!(
            "reading {}; check the path (`tg passport assemble --out FILE` saves bundles)",
            bundle_file.display()
        )
    })?;
    let bundle = PassportBundle::from_bytes(&bytes).map_err(|e| {
        VerificationFailed(format!(
            "{}: {e}; it is not an intact passport bundle: assemble the passport again",
            bundle_file.display()
        ))
    })?;
    let (manifest, source) = match manifest_file {
        Some(p) => {
            let b = std::fs::read(p).with_context(|| {
                format!(
                    "reading {}; save the manifest your node trusts with `tg manifest fetch --out FILE`",
                    p.display()
                )
            })?;
            let env = Envelope::from_bytes(&b, 4 * 1024 * 1024).map_err(|e| {
                VerificationFailed(format!(
                    "{}: {e}; it is not a manifest file: fetch one with `tg manifest fetch --out FILE`",
                    p.display()
                ))
            })?;
            let m = verify_manifest(&env, None, bundle.assembled_at).map_err(|e| {
                VerificationFailed(format!(
                    "manifest {}: {e}; check it with `tg manifest verify` or fetch the current one with `tg manifest fetch`",
                    p.display()
                ))
            })?;
            let version = m.version;
            (
                m,
                format!("manifest file {} (version {version})", p.display()),
            )
        }
        None => {
            let env = bundle.manifest.as_ref().ok_or_else(|| {
                VerificationFailed(
                    "the bundle carries no manifest copy; pass --manifest FILE (from `tg manifest fetch`)"
                        .into(),
                )
            })?;
            let m = verify_manifest(env, None, bundle.assembled_at)
                .map_err(|e| {
                    VerificationFailed(format!(
                        "the manifest copy inside the bundle: {e}; pass --manifest FILE (from `tg manifest fetch`)"
                    ))
                })?;
            (m, "the manifest copy inside the bundle (pass --manifest to check against one you trust)".to_owned())
        }
    };
    let verified = verify_bundle(&bundle, &manifest)
        .map_err(|e| VerificationFailed(format!("the passport does not verify: {e}")))?;
    Ok(LoadedBundle {
        bundle,
        verified,
        manifest,
        source,
    })
}

fn verify_cmd(g: &Global, a: VerifyArgs, show: bool) -> Result<u8> {
    let LoadedBundle {
        bundle,
        verified: v,
        manifest,
        source,
    } = load_verified(&a.bundle, a.manifest.as_deref())?;
    if g.json {
        let mut j = render::passport_json(&bundle, &v);
        if let Some(obj) = j.as_object_mut() {
            obj.insert("verified_against".into(), serde_json::Value::String(source));
        }
        println!("{}", serde_json::to_string_pretty(&j)?);
    } else if show {
        print!("{}", render::passport_text(&bundle, &v, &manifest));
        println!("\nVerified against {source}.");
    } else {
        let answered = v.results.iter().filter(|r| r.response.is_some()).count();
        for r in v.results.iter().filter(|r| r.problem.is_some()) {
            println!(
                "FAIL {}: {}",
                r.result.agency,
                r.problem
                    .as_ref()
                    .map(ToString::to_string)
                    .unwrap_or_default()
            );
        }
        if v.all_valid() {
            println!(
                "OK: query by {} ({}) and {answered} signed responses verify against {source}.",
                v.query.caseworker, v.query.requester
            );
        }
    }
    all_verified(
        &v,
        "response(s)",
        "do not rely on them. Check against the current manifest (`tg manifest fetch --out FILE`, then --manifest FILE), or assemble the passport again",
    )
}

/// `exit::OK` when every answer in `v` verified; otherwise a [`VerificationFailed`] saying how
/// many `what` failed, then `advice`.
pub fn all_verified(v: &VerifiedBundle, what: &str, advice: &str) -> Result<u8> {
    if v.all_valid() {
        Ok(exit::OK)
    } else {
        Err(VerificationFailed(format!(
            "{} {what} fail verification; {advice}",
            v.results.iter().filter(|r| r.problem.is_some()).count()
        ))
        .into())
    }
}
