//! One module per subcommand; each loads its input, calls a library and
//! prints.

mod build;
mod cache;
mod kube;
mod logs;
mod run;
mod runs;
mod validate;

use std::process::ExitCode;

use clap::CommandFactory;

use crate::cli::{Cli, Command};

/// Runs the chosen subcommand and returns the process exit code.
pub fn dispatch(cli: Cli) -> anyhow::Result<ExitCode> {
    match cli.command {
        Command::Validate(args) => validate::run(&args, cli.json),
        Command::Completions(args) => {
            let mut command = Cli::command();
            clap_complete::generate(args.shell, &mut command, "kiln", &mut std::io::stdout());
            Ok(ExitCode::SUCCESS)
        }
        Command::Build(args) => build::run(&args, cli.json),
        Command::Run(args) => run::run(&args, cli.json),
        Command::Runs(command) => runs::run(&command, cli.json),
        Command::Logs(args) => logs::run(&args),
        Command::Schedules(_) => not_yet("schedules", "the Kubernetes backend"),
        Command::Cache(command) => cache::run(&command, cli.json),
    }
}

/// Loads a pipeline; an invalid one prints its diagnostics (file, line,
/// column) and yields `None` so the caller exits 1.
pub fn load_pipeline(path: &std::path::Path) -> anyhow::Result<Option<kiln_common::Pipeline>> {
    match kiln_common::Pipeline::load(path) {
        Ok(p) => Ok(Some(p)),
        Err(err @ kiln_common::PipelineError::Invalid { .. }) => {
            eprintln!("{err}");
            Ok(None)
        }
        Err(err) => Err(err.into()),
    }
}

/// Commands whose machinery does not exist yet say so plainly and exit 2,
/// rather than pretend to work.
fn not_yet(command: &str, part: &str) -> anyhow::Result<ExitCode> {
    eprintln!("kiln {command}: not built yet ({part} is not part of this kiln version)");
    Ok(ExitCode::from(2))
}
