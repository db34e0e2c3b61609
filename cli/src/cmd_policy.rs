//! `tg policy check`: validate a minimisation policy file and explain what a given requester
//! would receive for a given purpose (offline; no node needed).

use std::path::PathBuf;

use anyhow::{anyhow, Result};
use clap::Subcommand;
use throughgate_node::policy::Policy;
use throughgate_protocol::category::{Category, Purpose};
use throughgate_protocol::ids::AgencyId;
use throughgate_protocol::keys::SecretKey;
use throughgate_protocol::manifest::{Member, MemberRole, Sector};

use crate::render::table;
use crate::Global;

/// Policy commands.
#[derive(Debug, Subcommand)]
pub enum PolicyCmd {
    /// Validate a policy file; with --requester, show exactly what that agency would receive.
    Check {
        /// The policy file (TOML).
        file: PathBuf,
        /// The requesting agency to explain for.
        #[arg(long)]
        requester: Option<AgencyId>,
        /// The requester's sector (justice, health, education, local_government, welfare); with
        /// --requester, this or --manifest is needed.
        #[arg(long)]
        sector: Option<String>,
        /// A manifest file to take the requester's sector from.
        #[arg(long)]
        manifest: Option<PathBuf>,
        /// The purpose to explain for.
        #[arg(long, default_value = "resettlement")]
        purpose: Purpose,
    },
}

/// Runs a policy command.
pub fn run(g: &Global, cmd: PolicyCmd) -> Result<u8> {
    let PolicyCmd::Check {
        file,
        requester,
        sector,
        manifest,
        purpose,
    } = cmd;
    let policy = Policy::load(&file).map_err(|e| anyhow!("{}: {e}", file.display()))?;
    let Some(requester) = requester else {
        if g.json {
            println!(
                "{}",
                serde_json::json!({"file": file, "valid": true, "rules": policy.rules().len()})
            );
        } else {
            println!(
                "{} is valid: {} release rules.",
                file.display(),
                policy.rules().len()
            );
            let mut t = table(&["#", "purpose", "to", "categories", "kinds"]);
            for (i, r) in policy.rules().iter().enumerate() {
                t.add_row(vec![
                    (i + 1).to_string(),
                    r.purpose.to_string(),
                    r.to.iter()
                        .map(ToString::to_string)
                        .collect::<Vec<_>>()
                        .join(", "),
                    r.categories
                        .iter()
                        .map(|c| c.as_str())
                        .collect::<Vec<_>>()
                        .join(", "),
                    r.fields.keys().cloned().collect::<Vec<_>>().join(", "),
                ]);
            }
            println!("{t}");
            println!("Anything not listed is never released; risk is never released for resettlement outside justice.");
        }
        return Ok(crate::exit::OK);
    };
    let sector = match (sector, manifest) {
        (Some(s), _) => serde_json::from_value::<Sector>(serde_json::Value::String(s.clone()))
            .map_err(|_| {
                anyhow!("unknown sector {s:?}; use justice, health, education, local_government or welfare")
            })?,
        (None, Some(p)) => {
            let (_, m) = crate::cmd_manifest::read_manifest(
                &p,
                throughgate_node::clock::Clock::system().now(),
            )?;
            m.member(&requester)
                .map(|x| x.sector)
                .ok_or_else(|| {
                    anyhow!(
                        "{requester} is not in {}; check the agency id (`tg manifest show {}` lists the members)",
                        p.display(),
                        p.display()
                    )
                })?
        }
        (None, None) => {
            return Err(anyhow!(
                "the requester's sector is needed to explain a policy: give --sector (justice, health, education, local_government or welfare) or --manifest FILE (the federation manifest that lists {requester})"
            ))
        }
    };
    let member = Member {
        id: requester.clone(),
        name: requester.to_string(),
        sector,
        addresses: vec!["-".into()],
        node_keys: vec![SecretKey::from_seed(&[0; 32]).public()],
        categories: Vec::new(),
        id_scheme: throughgate_protocol::identifiers::IdScheme::Crn,
        roles: vec![MemberRole::Requester],
        retired_keys: vec![],
    };
    let release = policy.release_for(purpose, &member);
    if g.json {
        println!(
            "{}",
            serde_json::json!({
                "requester": requester, "sector": sector, "purpose": purpose,
                "categories": release.categories, "fields": release.fields,
            })
        );
        return Ok(crate::exit::OK);
    }
    println!("For {purpose}, {requester} ({sector}) would receive:");
    if release.categories.is_empty() {
        println!("  nothing: no rule releases anything to it for this purpose.");
        return Ok(crate::exit::OK);
    }
    let mut t = table(&["record kind", "fields released"]);
    for (kind, fields) in &release.fields {
        t.add_row(vec![
            kind.clone(),
            fields.iter().cloned().collect::<Vec<_>>().join(", "),
        ]);
    }
    println!(
        "  categories: {}",
        release
            .categories
            .iter()
            .map(|c| c.as_str())
            .collect::<Vec<_>>()
            .join(", ")
    );
    println!("{t}");
    if purpose == Purpose::Resettlement
        && sector != Sector::Justice
        && !release.categories.contains(&Category::Risk)
    {
        println!("  (risk is never released for resettlement to a non-justice agency)");
    }
    println!(
        "Fields and record kinds not listed are withheld and reported by name in each response."
    );
    Ok(crate::exit::OK)
}
