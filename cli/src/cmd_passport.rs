//! `tg passport`: assemble a passport through the home node, verify a saved bundle offline,
//! show a saved bundle.

use std::io::IsTerminal;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use clap::{Args, Subcommand};
use indicatif::{MultiProgress, ProgressBar, ProgressStyle};
use throughgate_node::client::{requests_under, requests_without_consent, HomeClient, Profile};
use throughgate_protocol::bundle::{verify_bundle, PassportBundle, VerifiedBundle, BUNDLE_FORMAT};
use throughgate_protocol::category::{Category, Purpose};
use throughgate_protocol::consent::{Consent, ConsentStatus};
use throughgate_protocol::envelope::Envelope;
use throughgate_protocol::ids::{ConsentId, PassportId};
use throughgate_protocol::manifest::{verify_manifest, Manifest};
use throughgate_protocol::messages::{ClientOp, ClientResponse, HolderStatus};

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
    }
}

/// Finds the consent to use: the given one, or the newest active one naming `client`'s agency.
pub async fn pick_consent(
    client: &HomeClient,
    passport: &PassportId,
    given: Option<&ConsentId>,
) -> Result<Option<Consent>> {
    if let Some(id) = given {
        return match client
            .call(ClientOp::ShowConsent {
                consent_id: id.clone(),
            })
            .await
        {
            Ok(ClientResponse::ConsentDetail { consent, .. }) => {
                Ok(Some(consent.open().context("stored consent")?))
            }
            Ok(_) => bail!("unexpected answer from the home node"),
            // The home node may not have received it yet; holders will decide.
            Err(e) if e.code() == Some(throughgate_protocol::messages::ErrorCode::NotFound) => {
                Ok(None)
            }
            Err(e) => Err(e.into()),
        };
    }
    let list = match client
        .call(ClientOp::ListConsents {
            passport_id: Some(passport.clone()),
            status: Some(ConsentStatus::Active),
        })
        .await?
    {
        ClientResponse::Consents(l) => l,
        _ => bail!("unexpected answer from the home node"),
    };
    let me = &client.credential().agency;
    let Some(best) = list
        .into_iter()
        .filter(|c| c.grantees.contains(me))
        .max_by_key(|c| c.valid_from)
    else {
        return Ok(None);
    };
    match client
        .call(ClientOp::ShowConsent {
            consent_id: best.consent_id,
        })
        .await?
    {
        ClientResponse::ConsentDetail { consent, .. } => {
            Ok(Some(consent.open().context("stored consent")?))
        }
        _ => bail!("unexpected answer from the home node"),
    }
}

/// Assembles a passport: signs the query, fans it out through the home node with live
/// progress, verifies every response, and returns the bundle with its verification.
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
    let requests = match consent {
        Some(c) => requests_under(c, categories),
        None => requests_without_consent(manifest, categories),
    };
    if requests.is_empty() {
        bail!("nothing to ask: the consent covers none of the categories asked for");
    }
    let consent_id = consent
        .map(|c| c.consent_id.clone())
        .or_else(|| explicit_consent.cloned());
    let query = client.sign_query(passport.clone(), consent_id, purpose, requests.clone(), 60);
    let bars = MultiProgress::new();
    let mut spinners = Vec::new();
    if show_progress {
        let style = ProgressStyle::with_template("  {spinner} {prefix:<18} {msg}")
            .unwrap_or_else(|_| ProgressStyle::default_spinner());
        for r in &requests {
            let pb = bars.add(ProgressBar::new_spinner());
            pb.set_style(style.clone());
            pb.set_prefix(r.holder.to_string());
            pb.set_message("asking...");
            pb.enable_steady_tick(Duration::from_millis(80));
            spinners.push((r.holder.clone(), pb));
        }
    }
    let (query, results) = client
        .assemble(query, |r| {
            if let Some((_, pb)) = spinners.iter().find(|(a, _)| a == &r.agency) {
                pb.finish_with_message(format!(
                    "{} in {} ms",
                    r.status.as_str().replace('_', " "),
                    r.elapsed_ms
                ));
            }
        })
        .await?;
    for (_, pb) in &spinners {
        pb.finish_and_clear();
    }
    let _ = bars.clear();
    let bundle = PassportBundle {
        format: BUNDLE_FORMAT.into(),
        query,
        results,
        assembled_at: client.clock().now(),
        manifest_version: manifest.version,
        manifest: Some(manifest_env.clone()),
    };
    let verified = verify_bundle(&bundle, manifest)
        .map_err(|e| VerificationFailed(format!("the passport does not verify: {e}")))?;
    Ok((bundle, verified))
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
    let client = HomeClient::connect_profile(&profile).await?;
    let (manifest_env, manifest) = client.manifest().await?;
    let consent = pick_consent(&client, &a.passport, a.consent.as_ref()).await?;
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
        std::fs::write(out, bundle.to_bytes())
            .with_context(|| format!("writing {}", out.display()))?;
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

fn verify_cmd(g: &Global, a: VerifyArgs, show: bool) -> Result<u8> {
    let bytes =
        std::fs::read(&a.bundle).with_context(|| format!("reading {}", a.bundle.display()))?;
    let bundle = PassportBundle::from_bytes(&bytes)
        .map_err(|e| VerificationFailed(format!("{}: {e}", a.bundle.display())))?;
    let (manifest, source) = match &a.manifest {
        Some(p) => {
            let b = std::fs::read(p).with_context(|| format!("reading {}", p.display()))?;
            let env = Envelope::from_bytes(&b, 4 * 1024 * 1024)
                .map_err(|e| VerificationFailed(format!("{}: {e}", p.display())))?;
            let m = verify_manifest(&env, None, bundle.assembled_at)
                .map_err(|e| VerificationFailed(format!("manifest: {e}")))?;
            (
                m,
                format!(
                    "manifest file {} (version {})",
                    p.display(),
                    bundle.manifest_version
                ),
            )
        }
        None => {
            let env = bundle.manifest.as_ref().ok_or_else(|| {
                VerificationFailed("the bundle carries no manifest; pass --manifest".into())
            })?;
            let m = verify_manifest(env, None, bundle.assembled_at)
                .map_err(|e| VerificationFailed(format!("embedded manifest: {e}")))?;
            (m, "the manifest copy inside the bundle (pass --manifest to check against one you trust)".to_owned())
        }
    };
    let v = verify_bundle(&bundle, &manifest)
        .map_err(|e| VerificationFailed(format!("the passport does not verify: {e}")))?;
    if g.json {
        let mut j = render::passport_json(&bundle, &v);
        j["verified_against"] = serde_json::Value::String(source);
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
    if v.all_valid() {
        Ok(exit::OK)
    } else {
        Err(VerificationFailed(format!(
            "{} response(s) fail verification",
            v.results.iter().filter(|r| r.problem.is_some()).count()
        ))
        .into())
    }
}
