//! The `kiln` command: parse arguments, call the library, print, exit.
//!
//! Exit codes: 0 success, 1 the work failed (invalid pipeline, failed run),
//! 2 bad usage or a command that is not available yet.

mod cli;
mod commands;
mod progress;

use std::process::ExitCode;

use clap::Parser;

fn main() -> ExitCode {
    let cli = cli::Cli::parse();
    if matches!(cli.command, cli::Command::Build(_)) {
        // Unprivileged builds run as root of a user namespace mapped to the
        // user's subordinate ids, as rootless Buildah does. If that cannot
        // be set up, carry on: builds without exec layers need no sandbox,
        // and those with them fail later with the sandbox's own advice.
        let _ = kiln_common::sandbox::reexec_in_user_namespace();
    }
    match commands::dispatch(cli) {
        Ok(code) => code,
        Err(err) => {
            eprintln!("kiln: error: {err:#}");
            ExitCode::from(1)
        }
    }
}
