//! `tg`: the Throughgate command line for agency operators, caseworkers and data-protection
//! officers. Thin by design: it parses arguments, talks to the caller's home node, and renders.

mod cmd_audit;
mod cmd_bench;
mod cmd_consent;
mod cmd_keys;
mod cmd_manifest;
mod cmd_node;
mod cmd_passport;
mod cmd_policy;
mod cmd_records;
mod cmd_staff;
mod demo;
mod exit;
mod render;
mod render_audit;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

/// Throughgate: consented, signed, audited record exchange for people leaving prison.
#[derive(Debug, Parser)]
#[command(name = "tg", version, about, long_about = None, after_help = exit::EXIT_CODES_HELP)]
struct Cli {
    /// Print machine-readable JSON instead of human output.
    #[arg(long, global = true)]
    json: bool,
    /// Your profile (home node, key, credential). Default: $TG_PROFILE, then ./profile.toml.
    #[arg(long, global = true, env = "TG_PROFILE")]
    profile: Option<PathBuf>,
    /// Log level for diagnostics on stderr (error, warn, info, debug).
    #[arg(long, global = true, default_value = "warn")]
    log: String,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the six-agency demo federation on loopback, end to end.
    Demo(demo::DemoArgs),
    /// Set up and run an agency node (operators).
    #[command(subcommand)]
    Node(cmd_node::NodeCmd),
    /// Create and inspect the signed federation manifest (governance).
    #[command(subcommand)]
    Manifest(cmd_manifest::ManifestCmd),
    /// Generate keys.
    #[command(subcommand)]
    Key(cmd_keys::KeyCmd),
    /// Manage staff credentials (operators).
    #[command(subcommand)]
    Staff(cmd_staff::StaffCmd),
    /// Import and generate records (operators).
    #[command(subcommand)]
    Records(cmd_records::RecordsCmd),
    /// Record, revoke and review consent (caseworkers, DPOs).
    #[command(subcommand)]
    Consent(cmd_consent::ConsentCmd),
    /// Assemble, verify and show resettlement passports (caseworkers).
    #[command(subcommand)]
    Passport(cmd_passport::PassportCmd),
    /// Validate and explain minimisation policies (operators).
    #[command(subcommand)]
    Policy(cmd_policy::PolicyCmd),
    /// Review and verify the audit log; subject-access reports (DPOs).
    #[command(subcommand)]
    Audit(cmd_audit::AuditCmd),
    /// Benchmark a federation on loopback: passports/s, latency, CPU, memory, crypto floor.
    Bench(cmd_bench::BenchArgs),
}

/// Settings every command sees.
#[derive(Debug, Clone)]
pub struct Global {
    /// JSON output.
    pub json: bool,
    /// The profile path, if given.
    pub profile: Option<PathBuf>,
}

impl Global {
    /// The profile to use.
    pub fn profile_path(&self) -> PathBuf {
        self.profile
            .clone()
            .unwrap_or_else(|| PathBuf::from("profile.toml"))
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let filter = tracing_subscriber::EnvFilter::try_new(format!("{},sled=warn", cli.log))
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn"));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .init();
    let global = Global {
        json: cli.json,
        profile: cli.profile,
    };
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::from(exit::FAILURE);
        }
    };
    let result = runtime.block_on(async move {
        match cli.command {
            Command::Demo(a) => demo::run(&global, a).await,
            Command::Node(c) => cmd_node::run(&global, c).await,
            Command::Manifest(c) => cmd_manifest::run(&global, c).await,
            Command::Key(c) => cmd_keys::run(&global, c),
            Command::Staff(c) => cmd_staff::run(&global, c).await,
            Command::Records(c) => cmd_records::run(&global, c).await,
            Command::Consent(c) => cmd_consent::run(&global, c).await,
            Command::Passport(c) => cmd_passport::run(&global, c).await,
            Command::Audit(c) => cmd_audit::run(&global, c).await,
            Command::Policy(c) => cmd_policy::run(&global, c),
            Command::Bench(a) => cmd_bench::run(&global, a).await,
        }
    });
    match result {
        Ok(code) => ExitCode::from(code),
        Err(e) => {
            let code = exit::code_for(&e);
            eprintln!("error: {e:#}");
            if let Some(hint) = exit::hint_for(&e) {
                eprintln!("hint: {hint}");
            }
            ExitCode::from(code)
        }
    }
}
