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
    match commands::dispatch(cli) {
        Ok(code) => code,
        Err(err) => {
            eprintln!("kiln: error: {err:#}");
            ExitCode::from(1)
        }
    }
}
