//! `tg completions` and `tg man`: shell completion scripts and man pages, generated from the
//! same clap definitions that parse the command line, so they never drift from it.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use clap::{Args, CommandFactory};
use clap_complete::Shell;

use crate::Global;

/// Arguments of `tg completions`.
#[derive(Debug, Args)]
#[command(after_help = "Install, for example:
  bash:  tg completions bash > /etc/bash_completion.d/tg
  zsh:   tg completions zsh > \"${fpath[1]}/_tg\"
  fish:  tg completions fish > ~/.config/fish/completions/tg.fish")]
pub struct CompletionsArgs {
    /// The shell: bash, zsh, fish, elvish or powershell.
    pub shell: Shell,
}

/// Arguments of `tg man`.
#[derive(Debug, Args)]
#[command(
    after_help = "Read one with `man -l DIR/tg-passport-assemble.1`, or install them with \
                        `install -m 0644 DIR/*.1 /usr/local/share/man/man1/`."
)]
pub struct ManArgs {
    /// The folder to write the pages into (created if needed): `tg.1` and one page per
    /// subcommand, e.g. `tg-node-init.1`.
    #[arg(long)]
    pub out: PathBuf,
}

/// Writes the completion script for a shell to stdout.
pub fn completions(a: CompletionsArgs) -> Result<u8> {
    let mut cmd = crate::Cli::command();
    clap_complete::generate(a.shell, &mut cmd, "tg", &mut std::io::stdout());
    Ok(crate::exit::OK)
}

/// Writes one man page per command and subcommand into a folder.
pub fn man(g: &Global, a: ManArgs) -> Result<u8> {
    std::fs::create_dir_all(&a.out).with_context(|| {
        format!(
            "creating {}; choose a folder you can write to with --out",
            a.out.display()
        )
    })?;
    let mut cmd = crate::Cli::command().disable_help_subcommand(true);
    cmd.build();
    let mut written = Vec::new();
    write_pages(&cmd, &a.out, &mut written)?;
    if g.json {
        println!("{}", serde_json::json!({ "dir": a.out, "pages": written }));
    } else {
        println!(
            "{} man pages written to {} (read one with `man -l {}`).",
            written.len(),
            a.out.display(),
            a.out.join("tg.1").display()
        );
    }
    Ok(crate::exit::OK)
}

fn write_pages(cmd: &clap::Command, dir: &Path, written: &mut Vec<PathBuf>) -> Result<()> {
    let man = clap_mangen::Man::new(cmd.clone());
    let path = dir.join(man.get_filename());
    let mut bytes = Vec::new();
    man.render(&mut bytes)
        .with_context(|| format!("rendering the man page for {}", cmd.get_name()))?;
    crate::outfile::write(&path, bytes)
        .context("check the folder is writable or choose another --out")?;
    written.push(path);
    for sub in cmd.get_subcommands().filter(|s| !s.is_hide_set()) {
        write_pages(sub, dir, written)?;
    }
    Ok(())
}
