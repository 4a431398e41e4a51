//! Command-line arguments of `kiln`, as clap types.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand, ValueEnum};

/// Build the container images of an ML pipeline without Docker, and run the
/// pipeline from them: on this machine or on Kubernetes.
#[derive(Debug, Parser)]
#[command(name = "kiln", version, propagate_version = true)]
pub struct Cli {
    /// Print machine-readable JSON instead of text.
    #[arg(long, global = true)]
    pub json: bool,

    #[command(subcommand)]
    pub command: Command,
}

/// kiln's subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Build the step images of a pipeline (or a Dockerfile) and push them.
    Build(BuildArgs),
    /// Run the pipeline: build what is missing, then run the step DAG.
    Run(RunArgs),
    /// List, inspect and stop runs.
    #[command(subcommand)]
    Runs(RunsCommand),
    /// Show the logs of a run or of one of its steps.
    Logs(LogsArgs),
    /// Manage cron schedules of pipelines on Kubernetes.
    #[command(subcommand)]
    Schedules(SchedulesCommand),
    /// Inspect and prune the local layer cache.
    #[command(subcommand)]
    Cache(CacheCommand),
    /// Check a pipeline file and print its step DAG.
    Validate(ValidateArgs),
    /// Print a shell completion script.
    Completions(CompletionsArgs),
}

/// Arguments of `kiln build`.
#[derive(Debug, Args)]
pub struct BuildArgs {
    /// The pipeline file.
    #[arg(long = "pipeline", default_value = "kiln.yaml")]
    pub pipeline: PathBuf,
    /// Build only the image(s) this step runs in.
    #[arg(long)]
    pub step: Option<String>,
    /// Build this Dockerfile instead of a pipeline (Kaniko-style).
    #[arg(short = 'f', long = "file")]
    pub dockerfile: Option<PathBuf>,
    /// Tag(s) of the built Dockerfile image.
    #[arg(short = 't', long = "tag")]
    pub tags: Vec<String>,
}

/// Arguments of `kiln run`.
#[derive(Debug, Args)]
pub struct RunArgs {
    /// The pipeline file.
    #[arg(long = "pipeline", default_value = "kiln.yaml")]
    pub pipeline: PathBuf,
    /// Where the steps run.
    #[arg(long = "on", value_enum, default_value_t = Backend::Local)]
    pub on: Backend,
}

/// Where a pipeline runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Backend {
    /// On this machine, in kiln's rootless sandbox.
    Local,
    /// One pod per step on a Kubernetes cluster.
    Kubernetes,
}

/// `kiln runs ...`.
#[derive(Debug, Subcommand)]
pub enum RunsCommand {
    /// List runs.
    List,
    /// Show one run: per-step status, attempts and durations.
    Show {
        /// Run id.
        run: String,
    },
    /// Stop a run.
    Stop {
        /// Run id.
        run: String,
        /// Cancel running steps instead of letting them finish.
        #[arg(long)]
        force: bool,
    },
}

/// Arguments of `kiln logs`.
#[derive(Debug, Args)]
pub struct LogsArgs {
    /// Run id.
    pub run: String,
    /// Only this step.
    pub step: Option<String>,
    /// Keep printing new lines.
    #[arg(short = 'f', long)]
    pub follow: bool,
}

/// `kiln schedules ...`.
#[derive(Debug, Subcommand)]
pub enum SchedulesCommand {
    /// List schedules.
    List,
    /// Change a schedule's cron expression.
    Update {
        /// Schedule name.
        name: String,
        /// New cron expression.
        #[arg(long)]
        cron: String,
    },
    /// Delete a schedule.
    Delete {
        /// Schedule name.
        name: String,
    },
}

/// `kiln cache ...`.
#[derive(Debug, Subcommand)]
pub enum CacheCommand {
    /// List cached layers.
    Ls,
    /// Remove cached layers.
    Prune,
}

/// Arguments of `kiln validate`.
#[derive(Debug, Args)]
pub struct ValidateArgs {
    /// The pipeline file.
    #[arg(default_value = "kiln.yaml")]
    pub file: PathBuf,
    /// Print the effective settings of this step.
    #[arg(long)]
    pub step: Option<String>,
}

/// Arguments of `kiln completions`.
#[derive(Debug, Args)]
pub struct CompletionsArgs {
    /// The shell.
    #[arg(value_enum)]
    pub shell: clap_complete::Shell,
}
