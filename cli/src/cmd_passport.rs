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
use throughgate_protocol::consent::{Consent, ConsentStatus};
use throughgate_protocol::envelope::Envelope;
use throughgate_protocol::ids::{ConsentId, PassportId};
use throughgate_protocol::manifest::{verify_manifest, Manifest};
use throughgate_protocol::messages::{ConsentSummary, HolderResult, HolderStatus};
use throughgate_protocol::time::Timestamp;

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
    /// Judge the bundle as of this instant (a date, 2026-01-31, or RFC 3339,
    /// 2026-01-31T09:00:00Z) instead of now: whether the manifest it was assembled under has
    /// expired since. Signatures are always checked as of the signed assembly time.
    #[arg(long, value_parser = parse_instant)]
    pub at: Option<Timestamp>,
}

fn parse_instant(s: &str) -> Result<Timestamp, String> {
    if let Ok(d) = s.parse::<throughgate_protocol::time::Date>() {
        return Ok(d.start_timestamp());
    }
    Timestamp::parse_rfc3339(s).map_err(|e| {
        format!("{e}; give a date (2026-01-31) or an RFC 3339 instant (2026-01-31T09:00:00Z)")
    })
}

fn now() -> Timestamp {
    Timestamp(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0),
    )
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
    let ended = match (&a.consent, &consent) {
        (Some(id), _) => client
            .consents_of(&a.passport)
            .await?
            .into_iter()
            .find(|c| &c.consent_id == id && c.status != ConsentStatus::Active),
        (None, None) => client.ended_consent(&a.passport).await?,
        (None, Some(_)) => None,
    };
    if let Some(c) = ended {
        client.close().await;
        report_consent_ended(g, &c, &manifest);
        return Ok(exit::CONSENT_ENDED);
    }
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
            serde_json::to_string_pretty(&render::passport_json(&v, &manifest))?
        );
    } else {
        print!("{}", render::passport_text(&v, &manifest));
        if let Some(out) = &a.out {
            println!(
                "\nSigned bundle saved to {} (check it any time with `tg passport verify`).",
                out.display()
            );
        }
    }
    Ok(passport_exit(&v))
}

/// Tells the caseworker that the person's consent ended, and how, instead of asking anyone.
fn report_consent_ended(g: &Global, c: &ConsentSummary, manifest: &Manifest) {
    if g.json {
        println!(
            "{}",
            serde_json::json!({
                "passport_id": c.passport_id,
                "consent_id": c.consent_id,
                "status": c.status,
                "since": c.status_since,
                "recorded_by": c.recorded_by,
                "revoked_by": c.revoked_by,
                "asked": false,
            })
        );
        return;
    }
    let agency = manifest
        .member(&c.recorded_by)
        .map_or_else(|| c.recorded_by.to_string(), |m| m.name.clone());
    let since = c.status_since.date();
    match c.status {
        ConsentStatus::Revoked => println!(
            "The person withdrew their consent {} on {since} (withdrawal recorded by {} at {agency}). Nothing was asked of any agency.",
            c.consent_id,
            c.revoked_by.as_ref().map_or("a caseworker".to_owned(), ToString::to_string),
        ),
        ConsentStatus::Expired => println!(
            "The person's consent {} ended on {since}. Nothing was asked of any agency; record a new consent with the person if they agree.",
            c.consent_id
        ),
        _ => println!(
            "The person's consent {} was replaced on {since} by one that is no longer active. Nothing was asked of any agency.",
            c.consent_id
        ),
    }
}

/// A saved bundle, verified: the verification, the manifest it was checked against
/// and a sentence saying which manifest that was.
pub struct LoadedBundle {
    /// What verified and what did not.
    pub verified: VerifiedBundle,
    /// The manifest it was verified against.
    pub manifest: Manifest,
    /// Which manifest that was, for people.
    pub source: String,
    /// The instant the bundle was judged at (now, or `--at`).
    pub evaluated_at: Timestamp,
    /// When the manifest the bundle was assembled under expired, if it had by `evaluated_at`
    /// (it was valid at the signed assembly time, or the bundle would not verify).
    pub manifest_expired_since: Option<Timestamp>,
}

/// [`load_verified_at`] as of now.
pub fn load_verified(bundle_file: &Path, manifest_file: Option<&Path>) -> Result<LoadedBundle> {
    load_verified_at(bundle_file, manifest_file, None)
}

/// Reads a saved bundle and verifies it against `manifest_file`, or without one against the
/// manifest copy inside the bundle; each manifest is checked as of the assembly time the home
/// node signed. A bundle whose query, assembly statement, results list or manifest does not
/// verify is an error; a bundle some of whose responses do not verify is returned, with the
/// problems in `verified`. `at` (default now) is when the bundle is judged: it must not be
/// before the assembly, and the result says whether the manifest has expired since.
pub fn load_verified_at(
    bundle_file: &Path,
    manifest_file: Option<&Path>,
    at: Option<Timestamp>,
) -> Result<LoadedBundle> {
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
    // Only to choose the instant the manifest is checked at; verify_bundle checks the
    // statement's signature.
    let assembled_at = bundle
        .unverified_statement()
        .map_err(|e| {
            VerificationFailed(format!(
                "the passport does not verify: {e}; assemble the passport again"
            ))
        })?
        .assembled_at;
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
            let m = verify_manifest(&env, None, assembled_at).map_err(|e| {
                VerificationFailed(format!(
                    "manifest {} as of the assembly ({assembled_at}): {e}; check it with `tg manifest verify` or fetch the current one with `tg manifest fetch`",
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
            let m = verify_manifest(&bundle.manifest, None, assembled_at)
                .map_err(|e| {
                    VerificationFailed(format!(
                        "the manifest copy inside the bundle, as of the assembly ({assembled_at}): {e}; pass --manifest FILE (from `tg manifest fetch`)"
                    ))
                })?;
            (m, "the manifest copy inside the bundle (pass --manifest to check against one you trust)".to_owned())
        }
    };
    let verified = verify_bundle(&bundle, &manifest).map_err(|e| {
        VerificationFailed(format!(
            "the passport does not verify: {e}; do not rely on it: check it against the current manifest (--manifest FILE, from `tg manifest fetch`), or assemble the passport again"
        ))
    })?;
    let evaluated_at = at.unwrap_or_else(now);
    if evaluated_at < verified.assembled_at() {
        return Err(VerificationFailed(format!(
            "--at {evaluated_at} is before the assembly finished ({}); a passport cannot be judged before it existed",
            verified.assembled_at()
        ))
        .into());
    }
    let manifest_expired_since =
        (evaluated_at >= verified.manifest.expires_at).then_some(verified.manifest.expires_at);
    Ok(LoadedBundle {
        verified,
        manifest,
        source,
        evaluated_at,
        manifest_expired_since,
    })
}

/// A sentence on a manifest that expired after the assembly, for people.
fn expired_note(v: &VerifiedBundle, since: Timestamp) -> String {
    format!(
        "Note: manifest version {} expired at {since}, after this passport was assembled ({}) while it was valid; check the agencies' keys against the current manifest (--manifest FILE) before relying on it for new decisions.",
        v.manifest.version,
        v.assembled_at()
    )
}

fn verify_cmd(g: &Global, a: VerifyArgs, show: bool) -> Result<u8> {
    let LoadedBundle {
        verified: v,
        manifest,
        source,
        evaluated_at,
        manifest_expired_since,
        ..
    } = load_verified_at(&a.bundle, a.manifest.as_deref(), a.at)?;
    if g.json {
        let mut j = render::passport_json(&v, &manifest);
        if let Some(obj) = j.as_object_mut() {
            obj.insert("verified_against".into(), serde_json::Value::String(source));
            obj.insert(
                "evaluated_at".into(),
                serde_json::Value::String(evaluated_at.to_rfc3339()),
            );
            obj.insert(
                "retired_signatures".into(),
                v.retired_signatures
                    .iter()
                    .map(|r| {
                        serde_json::json!({
                            "agency": r.agency,
                            "signed": r.what,
                            "key": r.key.to_hex(),
                            "retired_at": r.retired_at.to_rfc3339(),
                        })
                    })
                    .collect(),
            );
            obj.insert(
                "manifest_expired_since".into(),
                manifest_expired_since
                    .map(|t| serde_json::Value::String(t.to_rfc3339()))
                    .unwrap_or(serde_json::Value::Null),
            );
        }
        println!("{}", serde_json::to_string_pretty(&j)?);
    } else if show {
        print!("{}", render::passport_text(&v, &manifest));
        println!("\nVerified against {source}.");
        println!("{}", render::witness_summary(&v));
        for r in &v.retired_signatures {
            println!("Note: {r}.");
        }
        if let Some(since) = manifest_expired_since {
            println!("{}", expired_note(&v, since));
        }
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
            let partial = if v.complete() {
                String::new()
            } else {
                format!(
                    " It is a partial passport: {} of {} agencies did not answer (as the assembling node signed).",
                    v.results
                        .iter()
                        .filter(|r| r.result.status != HolderStatus::Answered)
                        .count(),
                    v.results.len()
                )
            };
            println!(
                "OK: query by {} ({}), the assembly statement and {answered} signed responses verify against {source}.{partial}",
                v.query.caseworker, v.query.requester
            );
            println!("{}", render::witness_summary(&v));
        }
        for r in &v.retired_signatures {
            println!("Note: {r}.");
        }
        if let Some(since) = manifest_expired_since {
            println!("{}", expired_note(&v, since));
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
