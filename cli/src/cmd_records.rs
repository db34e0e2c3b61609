//! `tg records`: import an agency's records file through the home node (all or nothing), sync
//! the node to a complete snapshot, delete a person's records (erasure and rectification), and
//! generate synthetic records files for trying things out.

use std::path::{Path, PathBuf};

use anyhow::{anyhow, Context, Result};
use clap::Subcommand;
use throughgate_node::import::{export, format_from_name, format_from_path};
use throughgate_protocol::ids::RecordId;
use throughgate_protocol::messages::{ImportFormat, SyncReport, SyncRequest};
use throughgate_protocol::time::Date;
use throughgate_testkit::synth::{generate_population, records_for, write_people_csv, SynthConfig};

use crate::render::table;
use crate::Global;

/// Records commands.
#[derive(Debug, Subcommand)]
pub enum RecordsCmd {
    /// Import a CSV or JSON Lines records file into your home node (operators). Every bad row
    /// is reported with its line; if any row is bad nothing is stored.
    Import {
        /// The records file to import.
        file: PathBuf,
        /// csv or jsonl (default: from the file's extension).
        #[arg(long)]
        format: Option<String>,
        /// Check every row, store nothing (with --sync: also report what the sync would change).
        #[arg(long)]
        dry_run: bool,
        /// The file is the complete current snapshot of the record kinds it holds (or of
        /// --kinds): new and changed records are stored, and records of those kinds that the
        /// file lacks are deleted, all or nothing.
        #[arg(long)]
        sync: bool,
        /// With --sync: the record kinds the snapshot covers, comma-separated (a kind named here
        /// that the file lacks has every record deleted).
        #[arg(long, value_delimiter = ',', requires = "sync")]
        kinds: Vec<String>,
        /// With --sync: go ahead even if the sync deletes more than the node's configured share
        /// of the records of those kinds (`[records] max_sync_delete_percent`).
        #[arg(long, requires = "sync")]
        allow_mass_delete: bool,
    },
    /// Delete the records your home node holds about one person (operators): every record, one
    /// kind, or one record. For erasure and rectification requests; the deletion is logged
    /// with its counts per kind, never the identifier.
    Delete {
        /// The person's identifier under your agency's scheme, as in the records files; `-`
        /// reads it from standard input (keeping it out of the shell history).
        #[arg(long)]
        subject: String,
        /// Only records of this kind.
        #[arg(long)]
        kind: Option<String>,
        /// Only the record with this id.
        #[arg(long = "record")]
        record: Option<String>,
    },
    /// Export every record your home node holds, in the format `tg records import` reads
    /// (operators).
    Export {
        /// Where to write them.
        #[arg(long)]
        out: PathBuf,
        /// csv or jsonl (default: from the file's extension).
        #[arg(long)]
        format: Option<String>,
    },
    /// Write synthetic records for a demo agency (no real personal data), plus a people file
    /// listing each synthetic person's identifiers at every agency.
    Generate {
        /// The demo agency.
        #[arg(long)]
        agency: String,
        /// How many people.
        #[arg(long, default_value_t = 100)]
        people: usize,
        /// Seed (use the same seed for every agency so the people match).
        #[arg(long, default_value_t = 2026)]
        seed: u64,
        /// Reference date (default today).
        #[arg(long)]
        date: Option<Date>,
        /// csv or jsonl.
        #[arg(long, default_value = "csv")]
        format: String,
        /// Where to write the records.
        #[arg(long)]
        out: PathBuf,
        /// Where to write the people file (CSV of identifiers).
        #[arg(long)]
        people_out: Option<PathBuf>,
    },
}

/// Whether the people file `bytes` must still be written to `path`: yes if nothing is there, no
/// if an identical file is (its size is compared before anything is read), and an error if a
/// different file is.
fn people_file_is_new(path: &std::path::Path, bytes: &[u8]) -> Result<bool> {
    let differs = || {
        anyhow!(
            "{} exists and lists other people (another --seed or --people?); choose another \
             --people-out",
            path.display()
        )
    };
    match std::fs::metadata(path) {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(true),
        Err(e) => Err(e).with_context(|| format!("reading {}", path.display())),
        Ok(m) if m.len() != bytes.len() as u64 => Err(differs()),
        Ok(_) => {
            let old = std::fs::read(path).with_context(|| format!("reading {}", path.display()))?;
            if old == bytes {
                Ok(false)
            } else {
                Err(differs())
            }
        }
    }
}

/// The records format called `name` (csv or jsonl).
fn named_format(name: &str) -> Result<ImportFormat> {
    format_from_name(name).ok_or_else(|| anyhow!("unknown format {name:?}; use csv or jsonl"))
}

/// The format named by `--format`, or else the one `path`'s extension says.
fn resolve_format(format: Option<&str>, path: &Path) -> Result<ImportFormat> {
    match format {
        Some(f) => named_format(f),
        None => format_from_path(path).ok_or_else(|| {
            anyhow!(
                "cannot tell the format from {}; pass --format csv or --format jsonl",
                path.display()
            )
        }),
    }
}

/// Prints what a sync changed, would change, or was refused for.
fn print_sync(s: &SyncReport, dry_run: bool) {
    let mut t = table(&["added", "changed", "unchanged", "deleted", "held before"]);
    t.add_row(vec![
        s.added.to_string(),
        s.changed.to_string(),
        s.unchanged.to_string(),
        s.deleted.to_string(),
        s.held.to_string(),
    ]);
    println!("{t}");
    let kinds = if s.kinds.is_empty() {
        "no kinds".to_owned()
    } else {
        s.kinds.join(", ")
    };
    if s.mass_delete_refused {
        println!(
            "Sync refused, nothing was changed: it would delete {} of the {} records of {kinds}, more than the node's limit of {}%. \
             If the file really is complete, run it again with --allow-mass-delete.",
            s.deleted, s.held, s.max_delete_percent
        );
    } else if dry_run {
        println!("Dry run of a sync of {kinds}: nothing was changed.");
    } else {
        println!("Synced {kinds}: the node now holds exactly the file's records of these kinds.");
    }
}

/// "3 problems in 2 rows": problems and the rows they are on are counted apart (a row can have
/// several), and a list cut short says so.
fn problem_count(report: &throughgate_protocol::messages::ImportReport) -> String {
    let rows: std::collections::BTreeSet<_> = report.errors.iter().map(|e| e.line).collect();
    let plural =
        |n: usize, one: &str, many: &str| format!("{n} {}", if n == 1 { one } else { many });
    format!(
        "{}{} in {}",
        if report.errors_truncated {
            "at least "
        } else {
            ""
        },
        plural(report.errors.len(), "problem", "problems"),
        plural(rows.len(), "row", "rows"),
    )
}

/// Runs a records command.
pub async fn run(g: &Global, cmd: RecordsCmd) -> Result<u8> {
    match cmd {
        RecordsCmd::Import {
            file,
            format,
            dry_run,
            sync,
            kinds,
            allow_mass_delete,
        } => {
            let fmt = resolve_format(format.as_deref(), &file)?;
            std::fs::metadata(&file).with_context(|| format!("reading {}", file.display()))?;
            let syncing = sync;
            let sync = sync.then_some(SyncRequest {
                kinds,
                allow_mass_delete,
            });
            let client = g.client().await?;
            let report = client.import_file(fmt, dry_run, &file, sync).await?;
            client.close().await;
            if syncing && report.errors.is_empty() && report.sync.is_none() {
                return Err(anyhow!(
                    "the home node answered as for a plain import: it does not know syncs (upgrade \
                     it); {} records were {}, and nothing was deleted",
                    report.stored,
                    if report.dry_run { "checked" } else { "stored" }
                ));
            }
            if let (true, Some(s)) = (report.errors.is_empty(), &report.sync) {
                if g.json {
                    println!("{}", serde_json::to_string_pretty(&report)?);
                } else {
                    print_sync(s, report.dry_run);
                }
                return Ok(if s.mass_delete_refused {
                    crate::exit::REFUSED
                } else {
                    crate::exit::OK
                });
            }
            if g.json {
                println!("{}", serde_json::to_string_pretty(&report)?);
                // The same exit code as the human output: bad rows mean nothing was stored.
                if !report.errors.is_empty() {
                    return Ok(crate::exit::FAILURE);
                }
            } else if report.errors.is_empty() {
                if dry_run {
                    println!(
                        "{} rows for {} people checked; all good (dry run: nothing stored).",
                        report.rows, report.subjects
                    );
                } else {
                    println!(
                        "{} records for {} people imported.",
                        report.stored, report.subjects
                    );
                }
            } else {
                let mut t = table(&["line", "problem"]);
                for e in &report.errors {
                    t.add_row(vec![e.line.to_string(), e.reason.clone()]);
                }
                println!("{t}");
                println!(
                    "{}; nothing was imported. Fix them and import the whole file again.",
                    problem_count(&report)
                );
                return Ok(crate::exit::FAILURE);
            }
            Ok(crate::exit::OK)
        }
        RecordsCmd::Delete {
            subject,
            kind,
            record,
        } => {
            let subject = if subject == "-" {
                let mut line = String::new();
                std::io::stdin()
                    .read_line(&mut line)
                    .context("reading the subject from standard input")?;
                line.trim().to_owned()
            } else {
                subject
            };
            if subject.is_empty() {
                return Err(anyhow!(
                    "the subject is empty; give the person's identifier"
                ));
            }
            let record = record
                .map(|r| RecordId::new(r).map_err(|e| anyhow!("--record is not a record id: {e}")))
                .transpose()?;
            let client = g.client().await?;
            let report = client
                .delete_records(&subject, kind.as_deref(), record.as_ref())
                .await?;
            client.close().await;
            if g.json {
                println!("{}", serde_json::to_string_pretty(&report)?);
            } else if report.deleted == 0 {
                println!("No record matched; nothing was deleted (the attempt is logged).");
            } else {
                let mut t = table(&["kind", "deleted"]);
                for k in &report.kinds {
                    t.add_row(vec![k.kind.clone(), k.count.to_string()]);
                }
                println!("{t}");
                println!(
                    "{} record{} deleted and the deletion logged (counts per kind only).",
                    report.deleted,
                    if report.deleted == 1 { "" } else { "s" }
                );
            }
            Ok(crate::exit::OK)
        }
        RecordsCmd::Export { out, format } => {
            let fmt = resolve_format(format.as_deref(), &out)?;
            crate::outfile::refuse_existing(&out, "--out")?;
            let client = g.client().await?;
            let (n, _) = client
                .export_records_to(fmt, &out, crate::outfile::force())
                .await?;
            client.close().await;
            if g.json {
                println!("{}", serde_json::json!({"file": out, "records": n}));
            } else {
                println!("{n} records exported to {}.", out.display());
            }
            Ok(crate::exit::OK)
        }
        RecordsCmd::Generate {
            agency,
            people,
            seed,
            date,
            format,
            out,
            people_out,
        } => {
            let fmt = named_format(&format)?;
            let reference_date =
                date.unwrap_or_else(|| throughgate_node::clock::Clock::system().now().date());
            let cfg = SynthConfig::new(seed, people, reference_date);
            let pop = generate_population(&cfg);
            let records = records_for(&agency, &pop, &cfg).map_err(|e| anyhow!("{e}"))?;
            // Nothing is overwritten, and neither file is written unless both can be. The
            // people file is the same for every agency generated with the same seed and count,
            // so an identical one already there is kept; a different one is refused.
            crate::outfile::refuse_existing(&out, "--out")?;
            let people_file = match &people_out {
                Some(p) => {
                    let mut bytes = Vec::new();
                    write_people_csv(&pop, &mut bytes).context("writing the people file")?;
                    people_file_is_new(p, &bytes)?.then_some((p, bytes))
                }
                None => None,
            };
            let f = crate::outfile::create_new(&out)?;
            export(&records, fmt, std::io::BufWriter::new(f)).map_err(|e| anyhow!("{e}"))?;
            if let Some((p, bytes)) = people_file {
                use std::io::Write as _;
                crate::outfile::create_new(p)?
                    .write_all(&bytes)
                    .with_context(|| format!("writing {}", p.display()))?;
            }
            println!(
                "{} synthetic records for {agency} written to {}",
                records.len(),
                out.display()
            );
            Ok(crate::exit::OK)
        }
    }
}

#[cfg(test)]
mod tests {
    use throughgate_protocol::messages::{ImportReport, ImportRowError};

    #[test]
    fn problems_and_rows_are_counted_apart() {
        let e = |line| ImportRowError {
            line,
            reason: "bad".into(),
        };
        let mut r = ImportReport {
            rows: 10,
            stored: 0,
            subjects: 3,
            dry_run: false,
            errors: vec![e(2), e(2), e(5)],
            errors_truncated: false,
            sync: None,
        };
        assert_eq!(super::problem_count(&r), "3 problems in 2 rows");
        r.errors = vec![e(4)];
        r.errors_truncated = true;
        assert_eq!(super::problem_count(&r), "at least 1 problem in 1 row");
    }
}
