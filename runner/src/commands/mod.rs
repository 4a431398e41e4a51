//! One module per subcommand; each loads its input, calls a library and
//! prints.

mod build;
mod cache;
mod kube;
mod kube_run;
mod logs;
mod orchestrate;
mod run;
mod runs;
mod schedules;
mod validate;

use std::process::ExitCode;

use clap::CommandFactory;

use crate::cli::{Cli, Command};

/// Runs the chosen subcommand and returns the process exit code.
pub(crate) fn dispatch(cli: Cli) -> anyhow::Result<ExitCode> {
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
        Command::Schedules(command) => schedules::run(&command, cli.json),
        Command::Cache(command) => cache::run(&command, cli.json),
        Command::Orchestrate => orchestrate::run(),
    }
}

/// The layer cache: `--cache-dir`, else `$XDG_CACHE_HOME/kiln`.
pub(crate) fn cache_dir(given: &Option<std::path::PathBuf>) -> anyhow::Result<std::path::PathBuf> {
    use anyhow::Context as _;
    match given {
        Some(dir) => Ok(dir.clone()),
        None => kiln_builder::store::default_cache_dir().context(
            "cannot find a cache directory: set XDG_CACHE_HOME or HOME, or pass --cache-dir",
        ),
    }
}

/// Loads a pipeline; an invalid one prints its diagnostics (file, line,
/// column) and yields `None` so the caller exits 1.
pub(crate) fn load_pipeline(
    path: &std::path::Path,
) -> anyhow::Result<Option<kiln_pipeline::Pipeline>> {
    match kiln_runner::pipeline_file::load(path) {
        Ok(p) => Ok(Some(p)),
        Err(err @ kiln_pipeline::PipelineError::Invalid { .. }) => {
            eprintln!("{err}");
            Ok(None)
        }
        Err(err) => Err(err.into()),
    }
}

/// Left-aligned columns, two spaces apart, no trailing blanks: the lists
/// `kiln runs` and `kiln schedules` print.
fn table(header: &[&str], rows: Vec<Vec<String>>) -> String {
    let mut widths: Vec<usize> = header.iter().map(|h| h.chars().count()).collect();
    for row in &rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let header = header.iter().map(|h| h.to_string()).collect();
    let mut text = String::new();
    for row in std::iter::once(header).chain(rows) {
        let mut line = String::new();
        for (cell, w) in row.iter().zip(&widths) {
            line.push_str(&format!("{cell:<w$}  "));
        }
        text.push_str(line.trim_end());
        text.push('\n');
    }
    text
}

/// [`table`], on standard output.
fn print_table(header: &[&str], rows: Vec<Vec<String>>) {
    print!("{}", table(header, rows));
}
