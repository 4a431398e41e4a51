//! The `kiln` command: parse arguments, call the library, print, exit.
//!
//! Exit codes: 0 success, 1 the work failed (invalid pipeline, failed run),
//! 2 bad usage or a command that is not available yet.

// A test reads best as one list of steps; the 120-line limit is for the
// product's code.
#![cfg_attr(test, allow(clippy::too_many_lines))]

mod cli;
mod commands;
mod progress;

use std::process::ExitCode;

use clap::Parser;

fn main() -> ExitCode {
    // First: this process may be started as the sandbox's init.
    kiln_rootfs::sandbox::run_init_if_requested();
    let cli = cli::Cli::parse();
    if matches!(cli.command, cli::Command::Build(_) | cli::Command::Run(_)) {
        // Unprivileged builds run as root of a user namespace mapped to the
        // user's subordinate ids, as rootless Buildah does. If that cannot
        // be set up, carry on: builds without exec layers need no sandbox,
        // and those with them fail later with the sandbox's own advice.
        let _ = kiln_rootfs::sandbox::reexec_in_user_namespace();
    }
    match commands::dispatch(cli) {
        Ok(code) => code,
        Err(err) => {
            eprintln!("kiln: error: {}", describe(&err));
            ExitCode::from(1)
        }
    }
}

/// The error and its causes on one line, each cause said once: library
/// errors already fold their source into their own message, so a cause
/// whose text the line already holds is not repeated.
fn describe(err: &anyhow::Error) -> String {
    kiln_pipeline::error_chain(err.as_ref())
}

#[cfg(test)]
mod tests {
    #[derive(Debug, thiserror::Error)]
    #[error("layer apt: {source}")]
    struct Outer {
        source: std::io::Error,
    }

    #[test]
    fn causes_already_in_the_message_are_not_repeated() {
        let inner = std::io::Error::other("disk full");
        let err = anyhow::Error::new(Outer { source: inner }).context("building image train");
        assert_eq!(
            super::describe(&err),
            "building image train: layer apt: disk full"
        );
    }

    #[test]
    fn distinct_causes_are_all_shown() {
        let err = anyhow::anyhow!("connection reset").context("pushing layer");
        assert_eq!(super::describe(&err), "pushing layer: connection reset");
    }
}
