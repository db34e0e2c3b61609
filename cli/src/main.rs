//! `tg`: the Throughgate command line for agency operators, caseworkers and data-protection
//! officers. Thin by design: it parses arguments, talks to the caller's home node, and renders.

mod cmd_audit;
mod cmd_bench;
mod cmd_consent;
mod cmd_keys;
mod cmd_manifest;
mod cmd_node;
mod cmd_passport;
mod cmd_passport_export;
mod cmd_policy;
mod cmd_records;
mod cmd_shell;
mod cmd_staff;
mod demo;
mod exit;
mod outfile;
mod render;
mod render_audit;
mod render_html;
mod render_person;
mod vocabulary;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

/// mimalloc instead of the system allocator: a passport makes and frees many small buffers on
/// several threads (frames, envelopes, records, store values), where glibc's allocator spent
/// about a tenth of the process's CPU.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

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
    /// Log level for diagnostics on stderr (error, warn, info, debug). `tg node run` logs at
    /// info unless told otherwise.
    #[arg(long, global = true)]
    log: Option<String>,
    /// Log format on stderr: text or json (one JSON object per line, for log collectors).
    #[arg(long, global = true, default_value = "text")]
    log_format: String,
    /// Replace output files that already exist (never needed otherwise: tg refuses to
    /// overwrite a file, and never writes through a symbolic link).
    #[arg(long, global = true)]
    force: bool,
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
    /// Print a shell completion script (bash, zsh, fish, elvish, powershell) to stdout.
    Completions(cmd_shell::CompletionsArgs),
    /// Write man pages for tg and every subcommand into a folder.
    Man(cmd_shell::ManArgs),
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

    /// Connects to the home node named by the profile.
    pub async fn client(&self) -> anyhow::Result<throughgate_node::client::HomeClient> {
        let profile = throughgate_node::client::Profile::load(&self.profile_path())?;
        self.client_for(&profile).await
    }

    /// Connects with `profile`, asking for the key's passphrase on a terminal if it is protected
    /// and TG_PASSPHRASE is not set.
    pub async fn client_for(
        &self,
        profile: &throughgate_node::client::Profile,
    ) -> anyhow::Result<throughgate_node::client::HomeClient> {
        use throughgate_node::keyfile::{is_protected, read_secret_key_with, PASSPHRASE_ENV};
        let key_path = profile.key_path();
        let key = if is_protected(&key_path) && std::env::var_os(PASSPHRASE_ENV).is_none() {
            if !std::io::IsTerminal::is_terminal(&std::io::stdin()) {
                anyhow::bail!(
                    "{} is protected by a passphrase; set {PASSPHRASE_ENV} or run on a terminal",
                    key_path.display()
                );
            }
            let pass =
                rpassword::prompt_password(format!("Passphrase for {}: ", key_path.display()))?;
            read_secret_key_with(&key_path, Some(&pass))?
        } else {
            throughgate_node::keyfile::read_secret_key(&key_path)?
        };
        let client =
            throughgate_node::client::HomeClient::connect_profile_with_key(profile, key).await?;
        match client.credential_refreshed() {
            Some(Ok(file)) => eprintln!(
                "note: your node re-issued your credential under its new key; saved to {}",
                file.display()
            ),
            Some(Err(e)) => eprintln!(
                "warning: your node re-issued your credential under its new key, but it could not \
                 be saved ({e}); it is used for this command only. Fix the file's permissions and \
                 run `tg staff refresh`"
            ),
            None => {}
        }
        Ok(client)
    }

    /// Asks for a new passphrase (twice) on a terminal, or takes TG_PASSPHRASE; either way it
    /// must pass `keyfile::check_new_passphrase` (not empty, at least 12 characters).
    pub fn new_passphrase(&self) -> anyhow::Result<String> {
        use throughgate_node::keyfile::{check_new_passphrase, PASSPHRASE_ENV};
        if let Some(p) = std::env::var_os(PASSPHRASE_ENV) {
            let p = p
                .into_string()
                .map_err(|_| anyhow::anyhow!("{PASSPHRASE_ENV} is not valid UTF-8"))?;
            check_new_passphrase(&p)
                .map_err(|e| anyhow::anyhow!("{PASSPHRASE_ENV}: {e}; nothing was written"))?;
            return Ok(p);
        }
        if !std::io::IsTerminal::is_terminal(&std::io::stdin()) {
            anyhow::bail!("set {PASSPHRASE_ENV} or run on a terminal to choose a passphrase");
        }
        let a = rpassword::prompt_password("New passphrase: ")?;
        check_new_passphrase(&a).map_err(|e| anyhow::anyhow!("{e}; nothing was written"))?;
        let b = rpassword::prompt_password("Again: ")?;
        if a != b {
            anyhow::bail!("the passphrases differ; nothing was written");
        }
        Ok(a)
    }
}

fn main() -> ExitCode {
    // `tg ... | head` closes stdout early: end quietly, as other command-line tools do,
    // instead of reporting a panic.
    let default_hook = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        let msg = info
            .payload()
            .downcast_ref::<String>()
            .map(String::as_str)
            .or_else(|| info.payload().downcast_ref::<&str>().copied())
            .unwrap_or("");
        if msg.contains("Broken pipe") {
            std::process::exit(0);
        }
        default_hook(info);
    }));
    let cli = Cli::parse();
    let default_level = if matches!(cli.command, Command::Node(cmd_node::NodeCmd::Run { .. })) {
        "info"
    } else {
        "warn"
    };
    let level = cli.log.clone().unwrap_or_else(|| default_level.to_owned());
    let filter =
        tracing_subscriber::EnvFilter::try_new(format!("{level},sled=warn,quinn=warn,rustls=warn"))
            .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    if cli.log_format == "json" {
        builder.json().init();
    } else {
        builder
            .with_ansi(
                std::env::var_os("NO_COLOR").is_none()
                    && std::io::IsTerminal::is_terminal(&std::io::stderr()),
            )
            .init();
    }
    outfile::set_force(cli.force);
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
            Command::Completions(a) => cmd_shell::completions(a),
            Command::Man(a) => cmd_shell::man(&global, a),
        }
    });
    match result {
        Ok(code) => ExitCode::from(code),
        Err(e) => {
            let code = exit::code_for(&e);
            eprintln!("error: {}", exit::message(&e));
            if let Some(hint) = exit::hint_for(&e) {
                eprintln!("hint: {hint}");
            }
            ExitCode::from(code)
        }
    }
}
