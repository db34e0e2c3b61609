//! `tg audit`: the data-protection officer's tools. Search the log, verify it end to end,
//! produce a subject-access report (text, JSON, printable HTML), see checkpoints and witnesses.

use std::path::PathBuf;

use anyhow::{bail, Result};
use clap::Subcommand;
use throughgate_node::client::HomeClient;
use throughgate_protocol::ids::{AgencyId, ConsentId, PassportId, PersonId};
use throughgate_protocol::messages::{AckOutcome, AuditFilter};
use throughgate_protocol::time::{Date, Timestamp};

use crate::exit::{self, VerificationFailed};
use crate::render::table;
use crate::render_audit::{entries_table, report_html, report_text};
use crate::render_person::{person_html, person_text};
use crate::Global;

/// Audit commands.
#[derive(Debug, Subcommand)]
pub enum AuditCmd {
    /// Search your node's audit log.
    Log {
        /// Entries about this passport.
        #[arg(long)]
        passport: Option<PassportId>,
        /// Entries naming this member of staff (caseworker, recorder, DPO).
        #[arg(long)]
        person: Option<PersonId>,
        /// Entries naming this agency (requester, recorder, peer).
        #[arg(long)]
        agency: Option<AgencyId>,
        /// Entries about this consent.
        #[arg(long)]
        consent: Option<ConsentId>,
        /// Entries of this type: disclosed, refused, not_held, query_sent, consent_recorded, ...
        #[arg(long)]
        event: Option<String>,
        /// From this date (YYYY-MM-DD) or instant (RFC 3339).
        #[arg(long)]
        from: Option<String>,
        /// Until (before) this date or instant.
        #[arg(long)]
        until: Option<String>,
        /// Only consents registered here with this linkage: `not_held` lists recordings whose
        /// identifiers matched nobody (each names the recording caseworker), `subject_mismatch`
        /// those that named a different person than their passport id already does.
        #[arg(long)]
        linkage: Option<AckOutcome>,
        /// Most entries.
        #[arg(long, default_value_t = 1000)]
        limit: u32,
    },
    /// Recompute the whole log and check every signed checkpoint; names the first bad entry.
    Verify,
    /// A subject-access report: every disclosure and refusal about one person.
    Report {
        /// The person's passport id.
        #[arg(long)]
        passport: PassportId,
        /// Ask every agency in the federation (each answer signed and proven), not only yours.
        #[arg(long)]
        federation: bool,
        /// text, json or html.
        #[arg(long, default_value = "text")]
        format: String,
        /// The version to hand to the person: plain English (text or html), no ids or codes
        /// but one reference number; what was shared, by whom, with whom, when and why, what
        /// was refused and why, and what they agreed to and when they withdrew (from your
        /// node's consent register).
        #[arg(long)]
        for_person: bool,
        /// Write to this file instead of stdout.
        #[arg(long)]
        out: Option<PathBuf>,
    },
    /// Your node's newest checkpoint, who cosigned it, and whose logs it witnesses.
    Checkpoints {
        /// Export the cosigned checkpoint as a C2SP signed note (the log's signature and the
        /// witnesses' cosignature lines) and print the verifier keys that check it.
        #[arg(long)]
        note: bool,
        /// With --note: write the note to this file (the verifier keys go to standard output).
        #[arg(long, requires = "note")]
        out: Option<PathBuf>,
    },
    /// As a witness, accept a peer's next checkpoint as a new baseline: only after that peer
    /// restored from a backup (its log legitimately lost entries) and you have checked why.
    WitnessReset {
        /// The peer agency.
        #[arg(long)]
        peer: AgencyId,
    },
}

fn instant(s: &str) -> Result<Timestamp> {
    if let Ok(d) = s.parse::<Date>() {
        return Ok(d.start_timestamp());
    }
    Timestamp::parse_rfc3339(s).map_err(|e| {
        anyhow::anyhow!(
            "{s:?}: {e}; give a date (2026-01-31) or an RFC 3339 instant (2026-01-31T09:00:00Z)"
        )
    })
}

/// Runs an audit command.
pub async fn run(g: &Global, cmd: AuditCmd) -> Result<u8> {
    let client = g.client().await?;
    let code = run_with(g, &client, cmd).await;
    client.close().await;
    code
}

async fn run_with(g: &Global, client: &HomeClient, cmd: AuditCmd) -> Result<u8> {
    match cmd {
        AuditCmd::Log {
            passport,
            person,
            agency,
            consent,
            event,
            from,
            until,
            linkage,
            limit,
        } => {
            let filter = AuditFilter {
                passport_id: passport,
                person,
                agency,
                consent_id: consent,
                event,
                from: from.as_deref().map(instant).transpose()?,
                until: until.as_deref().map(instant).transpose()?,
                linkage,
                limit: Some(limit),
            };
            let (entries, truncated) = client.audit_search(filter).await?;
            if g.json {
                println!(
                    "{}",
                    serde_json::to_string_pretty(
                        &serde_json::json!({"entries": entries, "truncated": truncated})
                    )?
                );
            } else {
                println!("{}", entries_table(&entries));
                println!(
                    "{} entries{}",
                    entries.len(),
                    if truncated {
                        " (more match: raise --limit or narrow the filter)"
                    } else {
                        ""
                    }
                );
            }
            Ok(exit::OK)
        }
        AuditCmd::Verify => {
            let v = client.audit_verify().await?;
            if g.json {
                println!("{}", serde_json::to_string_pretty(&v)?);
            } else if v.ok {
                println!(
                    "OK: {} entries and {} signed checkpoints verify ({} ms).",
                    v.entries, v.checkpoints, v.elapsed_ms
                );
                if v.redacted > 0 {
                    let ranges = v
                        .redacted_ranges
                        .iter()
                        .map(|r| format!("{}-{}", r.from, r.to.saturating_sub(1)))
                        .collect::<Vec<_>>()
                        .join(", ");
                    println!(
                        "{} entries ({ranges}) have had their content redacted by retention; each is accounted for by a redaction entry logged after it.",
                        v.redacted
                    );
                }
            }
            if v.ok {
                Ok(exit::OK)
            } else {
                let what = match (v.bad_entry, v.bad_checkpoint) {
                    (Some(e), _) => format!("first bad entry: {e}"),
                    (None, Some(c)) => format!("first bad checkpoint: size {c}"),
                    (None, None) => "log inconsistent".to_owned(),
                };
                Err(VerificationFailed(format!(
                    "audit log verification FAILED ({what}): {}. Stop the node, keep a copy of its data folder as evidence, and tell your DPO and the federation's governance; see docs/operations.md",
                    v.detail.unwrap_or_default()
                ))
                .into())
            }
        }
        AuditCmd::Report {
            passport,
            federation,
            format,
            for_person,
            out,
        } => {
            let (_, manifest) = client.manifest().await?;
            if for_person && format == "json" {
                bail!("--for-person is text or html; the JSON report is the DPO's evidence version (drop --for-person)");
            }
            let report = client
                .subject_access_report(&manifest, &passport, federation)
                .await?;
            let consents = if for_person {
                client.consents_of(&passport).await?
            } else {
                Vec::new()
            };
            let text = match (format.as_str(), for_person) {
                ("text", false) => report_text(&report),
                ("json", _) => serde_json::to_string_pretty(&report)?,
                ("html", false) => report_html(&report),
                ("text", true) => person_text(&report, &manifest, &consents),
                ("html", true) => person_html(&report, &manifest, &consents),
                (other, _) => bail!("unknown format {other:?}; use text, json or html"),
            };
            match &out {
                Some(p) => {
                    crate::outfile::write(p, &text)?;
                    if !g.json {
                        println!("Report written to {}.", p.display());
                    }
                }
                None => print!("{text}"),
            }
            if report
                .sources
                .iter()
                .any(|s| s.status == throughgate_protocol::messages::HolderStatus::Invalid)
            {
                return Err(VerificationFailed(
                    "some agencies' answers did not verify (see the report); do not rely on their entries, and ask those agencies' DPOs to run `tg audit verify`".into(),
                )
                .into());
            }
            Ok(if report.complete() {
                exit::OK
            } else {
                exit::PARTIAL
            })
        }
        AuditCmd::WitnessReset { peer } => {
            client.witness_reset(&peer).await?;
            if g.json {
                println!("{}", serde_json::json!({"peer": peer, "reset": true}));
            } else {
                println!("Baseline for {peer}'s log reset: its next checkpoint will be witnessed afresh. The reset is in your log.");
            }
            Ok(exit::OK)
        }
        AuditCmd::Checkpoints { note: true, out } => export_note(g, client, out.as_deref()).await,
        AuditCmd::Checkpoints { note: false, .. } => {
            let c = client.audit_checkpoints().await?;
            if g.json {
                println!("{}", serde_json::to_string_pretty(&c)?);
                return Ok(exit::OK);
            }
            println!("Latest checkpoint (size {}):", c.size);
            for line in c.latest.as_deref().unwrap_or("(none yet)\n").lines() {
                println!("  {line}");
            }
            let mut t = table(&["witness", "cosigned size", "at"]);
            for s in &c.cosignatures {
                t.add_row(vec![
                    s.witness.to_string(),
                    s.size.to_string(),
                    s.at.map(|t| t.to_string()).unwrap_or_default(),
                ]);
            }
            println!("Cosigned by:\n{t}");
            let mut w = table(&["log witnessed", "size"]);
            for x in &c.witnessed {
                w.add_row(vec![x.agency.to_string(), x.size.to_string()]);
            }
            println!("This node witnesses:\n{w}");
            if c.alarms > 0 {
                println!(
                    "WITNESS ALARMS since start: {} (see `tg audit log --event witness_alarm`)",
                    c.alarms
                );
            }
            if c.consent_alarms > 0 {
                println!(
                    "CONSENT ALARMS since start: {} consents named a different person than their passport id (see `tg audit log --linkage subject_mismatch`)",
                    c.consent_alarms
                );
            }
            Ok(exit::OK)
        }
    }
}

/// `tg audit checkpoints --note`: the cosigned checkpoint as a C2SP signed note, and the
/// verifier keys (from the manifest the node trusts) of the log and of each witness that
/// cosigned it, so anyone can check it with standard signed-note tooling.
async fn export_note(g: &Global, client: &HomeClient, out: Option<&std::path::Path>) -> Result<u8> {
    use throughgate_protocol::bundle::checkpoint_vkeys;
    use throughgate_protocol::checkpoint::SignedCheckpoint;
    let c = client.audit_checkpoints().await?;
    let Some(text) = c.cosigned else {
        bail!("no witness has cosigned a checkpoint of this node's log yet; witnesses cosign every `limits.witness_interval_secs`, so try again shortly (`tg audit checkpoints` shows who has cosigned)");
    };
    let signed = SignedCheckpoint::parse(text.as_bytes())
        .map_err(|e| anyhow::anyhow!("the node's cosigned checkpoint does not parse: {e}"))?;
    let (_, manifest) = client.manifest().await?;
    let origin = signed.checkpoint().origin.clone();
    let agency = origin
        .strip_prefix(&format!("{}/", throughgate_protocol::audit::ORIGIN_HOST))
        .and_then(|s| s.strip_suffix("/audit"))
        .and_then(|s| AgencyId::new(s).ok())
        .ok_or_else(|| {
            anyhow::anyhow!("the checkpoint's origin {origin:?} is not an agency's audit log")
        })?;
    let (log, witnesses) = checkpoint_vkeys(&signed, &agency, &manifest);
    let log = log.ok_or_else(|| {
        anyhow::anyhow!(
            "the checkpoint is not signed by a node key the manifest lists for {agency}"
        )
    })?;
    if let Some(path) = out {
        crate::outfile::refuse_existing(path, "--out")?;
        crate::outfile::write(path, text.as_bytes())?;
    }
    if g.json {
        let doc = serde_json::json!({
            "note": text,
            "size": signed.checkpoint().size,
            "log_vkey": log.to_string(),
            "witness_vkeys": witnesses.iter().map(|(a, v)| serde_json::json!({"witness": a.as_str(), "vkey": v.to_string()})).collect::<Vec<_>>(),
            "threshold": manifest.witness_threshold,
        });
        println!("{}", serde_json::to_string_pretty(&doc)?);
        return Ok(exit::OK);
    }
    let keys = {
        let mut s = format!(
            "log vkey:\n  {log}\nwitness vkeys ({} of threshold {}):\n",
            witnesses.len(),
            manifest.witness_threshold
        );
        for (_, v) in &witnesses {
            s.push_str(&format!("  {v}\n"));
        }
        s
    };
    match out {
        Some(path) => {
            println!(
                "Cosigned checkpoint of size {} written to {} as a C2SP signed note.",
                signed.checkpoint().size,
                path.display()
            );
            print!("{keys}");
        }
        None => {
            print!("{text}");
            eprint!("{keys}");
        }
    }
    Ok(exit::OK)
}
