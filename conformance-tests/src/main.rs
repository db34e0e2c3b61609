//! `tg-conformance`: runs the Throughgate conformance suite against a node.
//!
//! ```text
//! tg-conformance --target 127.0.0.1:4701 --target-agency nhs-wy --target-key HEX \
//!     --identity suite.toml [--case ID ...] [--json | --junit FILE]
//! tg-conformance --list
//! ```
//!
//! Exit status: 0 when every selected case passed; 127 when some case was unsupported and none
//! failed; 1 when any case failed (or the run could not start); 2 on bad arguments.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::Parser;
use throughgate_conformance::{report, select, Identity, SuiteConfig, Target, Timing};
use throughgate_protocol::ids::AgencyId;
use throughgate_protocol::keys::PublicKey;

/// Black-box conformance suite for Throughgate nodes.
#[derive(Debug, Parser)]
#[command(name = "tg-conformance", version)]
struct Args {
    /// The target node's address (host:port).
    #[arg(long, value_name = "ADDR", required_unless_present = "list")]
    target: Option<String>,
    /// The target's agency id, as in the federation manifest (also the TLS server name).
    #[arg(long, value_name = "ID", required_unless_present = "list")]
    target_agency: Option<String>,
    /// The target's node public key, 64 hex digits, as in the federation manifest.
    #[arg(long, value_name = "HEX", required_unless_present = "list")]
    target_key: Option<String>,
    /// The suite's identity file (TOML): its member agency, node key, subject.
    #[arg(long, value_name = "FILE", required_unless_present = "list")]
    identity: Option<PathBuf>,
    /// Run only these cases: an id, an area (`query`), or a prefix ending in `*`. Repeatable.
    #[arg(long = "case", value_name = "ID")]
    cases: Vec<String>,
    /// Print the case ids, one a line, and exit (with --json: id, area and expected verdict).
    #[arg(long)]
    list: bool,
    /// Print results as a JSON array instead of a table.
    #[arg(long, conflicts_with = "junit")]
    json: bool,
    /// Also write results as JUnit XML to FILE.
    #[arg(long, value_name = "FILE")]
    junit: Option<PathBuf>,
    /// Seconds to wait for an ordinary answer.
    #[arg(long, value_name = "SECS", default_value_t = 10)]
    answer_timeout: u64,
    /// Seconds to wait for the target to time out a slow sender.
    #[arg(long, value_name = "SECS", default_value_t = 30)]
    slow_timeout: u64,
}

fn usage(msg: &str) -> ExitCode {
    eprintln!("tg-conformance: {msg}");
    ExitCode::from(2)
}

async fn resolve(addr: &str) -> Result<SocketAddr, String> {
    if let Ok(a) = addr.parse() {
        return Ok(a);
    }
    tokio::net::lookup_host(addr)
        .await
        .map_err(|e| format!("cannot resolve {addr}: {e}"))?
        .next()
        .ok_or_else(|| format!("{addr} resolves to no address"))
}

async fn config(args: &Args) -> Result<SuiteConfig, String> {
    let (Some(addr), Some(agency), Some(key), Some(identity)) = (
        &args.target,
        &args.target_agency,
        &args.target_key,
        &args.identity,
    ) else {
        return Err("--target, --target-agency, --target-key and --identity are required".into());
    };
    let target = Target {
        addr: resolve(addr).await?,
        agency: AgencyId::new(agency.as_str()).map_err(|e| format!("--target-agency: {e}"))?,
        key: PublicKey::from_hex(key.trim()).map_err(|e| format!("--target-key: {e}"))?,
    };
    let identity = Identity::load(identity).map_err(|e| e.to_string())?;
    Ok(SuiteConfig {
        target,
        identity,
        timing: Timing {
            answer: Duration::from_secs(args.answer_timeout.max(1)),
            slow_sender: Duration::from_secs(args.slow_timeout.max(1)),
        },
    })
}

#[tokio::main]
async fn main() -> ExitCode {
    let args = Args::parse();
    let cases = match select(&args.cases) {
        Ok(c) => c,
        Err(e) => return usage(&e),
    };
    if args.list {
        if args.json {
            let list: Vec<serde_json::Value> = cases
                .iter()
                .map(|c| serde_json::json!({"id": c.id, "area": c.area.as_str(), "expect": c.expect}))
                .collect();
            println!(
                "{}",
                serde_json::to_string_pretty(&list).unwrap_or_else(|_| "[]".into())
            );
        } else {
            for c in &cases {
                println!("{}", c.id);
            }
        }
        return ExitCode::SUCCESS;
    }
    let cfg = match config(&args).await {
        Ok(c) => c,
        Err(e) => return usage(&e),
    };
    let human = !args.json;
    let total = cases.len();
    let mut done = 0usize;
    let reports = throughgate_conformance::run_with(&cfg, &cases, |r| {
        done += 1;
        if human {
            eprintln!(
                "[{done}/{total}] {} {} ({} ms)",
                r.outcome.as_str(),
                r.id,
                r.ms
            );
        }
    })
    .await;
    let reports = match reports {
        Ok(r) => r,
        Err(e) => {
            eprintln!("tg-conformance: could not run: {e}");
            return ExitCode::from(1);
        }
    };
    if args.json {
        println!("{}", report::json(&reports));
    } else {
        print!("{}", report::table(&reports));
    }
    if let Some(path) = &args.junit {
        if let Err(e) = std::fs::write(path, report::junit(&reports)) {
            eprintln!("tg-conformance: could not write {}: {e}", path.display());
            return ExitCode::from(1);
        }
    }
    match report::exit_code(&reports) {
        0 => ExitCode::SUCCESS,
        127 => ExitCode::from(127),
        _ => ExitCode::from(1),
    }
}
