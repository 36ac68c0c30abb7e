//! `flowctl completions SHELL` and `flowctl man`: generated from the command-line
//! definitions, so they never drift from the real options.

use std::io::Write;
use std::path::Path;

use anyhow::Context;
use clap::CommandFactory;

use super::exit;
use crate::cli::Cli;

/// Prints the completion script for `shell` on stdout.
pub fn run_completions(shell: clap_complete::Shell) -> anyhow::Result<i32> {
    let mut cmd = Cli::command();
    let mut out = Vec::new();
    clap_complete::generate(shell, &mut cmd, "flowctl", &mut out);
    write_stdout(&out)?;
    Ok(exit::OK)
}

/// Prints `flowctl.1` on stdout, or writes it and one page per command into `out`.
pub fn run_man(out: Option<&Path>) -> anyhow::Result<i32> {
    let cmd = Cli::command();
    match out {
        None => {
            let mut page = Vec::new();
            clap_mangen::Man::new(cmd).render(&mut page)?;
            write_stdout(&page)?;
        }
        Some(dir) => {
            std::fs::create_dir_all(dir)
                .with_context(|| format!("cannot create {}", dir.display()))?;
            clap_mangen::generate_to(cmd, dir)
                .with_context(|| format!("cannot write the manual pages into {}", dir.display()))?;
            eprintln!("flowctl: manual pages written to {}", dir.display());
        }
    }
    Ok(exit::OK)
}

/// Writes the generated text; a reader that went away (`flowctl completions bash | head`)
/// is a normal end, as everywhere else.
fn write_stdout(bytes: &[u8]) -> anyhow::Result<()> {
    let mut stdout = std::io::stdout().lock();
    match stdout.write_all(bytes).and_then(|()| stdout.flush()) {
        Err(e) if e.kind() != std::io::ErrorKind::BrokenPipe => {
            Err(anyhow::Error::from(e).context("cannot write to stdout"))
        }
        _ => Ok(()),
    }
}
