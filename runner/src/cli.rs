//! Command-line arguments of `kiln`, as clap types.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand, ValueEnum};

/// Build the container images of an ML pipeline without Docker, and run the
/// pipeline from them: on this machine or on Kubernetes.
#[derive(Debug, Parser)]
#[command(name = "kiln", version, propagate_version = true)]
pub(crate) struct Cli {
    /// Print machine-readable JSON instead of text.
    #[arg(long, global = true)]
    pub json: bool,

    #[command(subcommand)]
    pub command: Command,
}

/// kiln's subcommands.
#[derive(Debug, Subcommand)]
pub(crate) enum Command {
    /// Build the step images of a pipeline (or a Dockerfile) and push them.
    Build(Box<BuildArgs>),
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
    /// Conduct a run inside the cluster (the orchestrator pod's command).
    #[command(hide = true)]
    Orchestrate,
}

/// Arguments of `kiln build`.
#[derive(Debug, Args)]
pub(crate) struct BuildArgs {
    /// The pipeline file.
    #[arg(long = "pipeline", default_value = "kiln.yaml")]
    pub pipeline: PathBuf,
    /// Build only the image(s) this step runs in.
    #[arg(long)]
    pub step: Option<String>,
    /// Build this Dockerfile instead of a pipeline (Kaniko-style).
    #[arg(short = 'f', long = "file")]
    pub dockerfile: Option<PathBuf>,
    /// Tag(s) of the built Dockerfile image (`registry/repo:tag`).
    #[arg(short = 't', long = "tag", requires = "dockerfile")]
    pub tags: Vec<String>,
    /// A Dockerfile build argument, K=V; repeatable.
    #[arg(long = "build-arg", value_name = "K=V", requires = "dockerfile")]
    pub build_args: Vec<String>,
    /// The Dockerfile stage to build (default: the last).
    #[arg(long, requires = "dockerfile")]
    pub target: Option<String>,
    /// A label for the image's config (repeatable), as `docker build --label`.
    #[arg(long = "label", value_name = "K=V", requires = "dockerfile")]
    pub labels: Vec<String>,
    /// The Dockerfile's build context (default: the current directory).
    #[arg(requires = "dockerfile")]
    pub context: Option<PathBuf>,
    /// Print, per layer, whether it was reused or built and what changed.
    #[arg(long)]
    pub explain: bool,
    /// Target platform (OS/ARCH[/VARIANT]).
    #[arg(long, default_value = "linux/amd64", value_parser = |s: &str| s.parse::<kiln_builder::registry::TargetPlatform>().map(|_| s.to_owned()))]
    pub platform: String,
    /// Where images go: registry (each image's target_repository),
    /// oci:DIR (an OCI image layout) or tar:FILE (an OCI archive).
    #[arg(long, default_value = "registry", value_parser = |s: &str| s.parse::<kiln_builder::Output>().map(|_| s.to_owned()))]
    pub output: String,
    /// Layer compression.
    #[arg(long, value_enum, default_value_t = CompressionArg::Gzip)]
    pub compression: CompressionArg,
    /// Manifest media types.
    #[arg(long, value_enum, default_value_t = FormatArg::Oci)]
    pub format: FormatArg,
    /// The layer cache (default: $XDG_CACHE_HOME/kiln).
    #[arg(long)]
    pub cache_dir: Option<PathBuf>,
    /// How to reach registries.
    #[command(flatten)]
    pub registry: RegistryArgs,
    /// A build secret, visible to commands as /run/secrets/NAME and never
    /// stored: id=NAME,src=FILE or id=NAME,env=VAR; repeatable.
    #[arg(long = "secret")]
    pub secrets: Vec<String>,
    /// The network RUN and exec-layer commands see: `host` (the default,
    /// as Buildah's rootless builds) or `none` (loopback only).
    #[arg(long, value_enum, default_value = "host")]
    pub network: NetworkArg,
}

/// `--network`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub(crate) enum NetworkArg {
    /// The host's network.
    Host,
    /// A network namespace with loopback only.
    None,
}

/// How kiln reaches registries; shared by `build` and `run`.
#[derive(Debug, Args)]
pub(crate) struct RegistryArgs {
    /// Registry user name (with --password-stdin).
    #[arg(long, requires = "password_stdin")]
    pub username: Option<String>,
    /// Read the registry password from standard input.
    #[arg(long, requires = "username")]
    pub password_stdin: bool,
    /// Allow plain HTTP to this registry (host[:port]); repeatable.
    /// Loopback registries always may.
    #[arg(long = "insecure-registry")]
    pub insecure_registries: Vec<String>,
    /// Trust this CA certificate (PEM) for registries; repeatable.
    #[arg(long = "registry-ca")]
    pub registry_ca: Vec<PathBuf>,
}

/// `--compression`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub(crate) enum CompressionArg {
    /// gzip: read by every registry and runtime.
    Gzip,
    /// zstd: smaller and faster; needs a recent runtime.
    Zstd,
}

/// `--format`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub(crate) enum FormatArg {
    /// OCI image spec media types.
    Oci,
    /// Docker v2 schema 2 media types.
    Docker,
}

/// Arguments of `kiln run`.
#[derive(Debug, Args)]
pub(crate) struct RunArgs {
    /// The pipeline file.
    #[arg(long = "pipeline", default_value = "kiln.yaml")]
    pub pipeline: PathBuf,
    /// Where the steps run.
    #[arg(long = "on", value_enum, default_value_t = Backend::Local)]
    pub on: Backend,
    /// Re-run only the failed, cancelled and skipped steps of this run,
    /// reusing the outputs of its succeeded steps.
    #[arg(long, value_name = "RUN")]
    pub retry_failed: Option<String>,
    /// The layer cache (default: $XDG_CACHE_HOME/kiln).
    #[arg(long)]
    pub cache_dir: Option<PathBuf>,
    /// How to reach registries.
    #[command(flatten)]
    pub registry: RegistryArgs,
    /// Which cluster and namespace (`--on kubernetes`).
    #[command(flatten)]
    pub kube: KubeArgs,
    /// Submit the run and return at once (`--on kubernetes`); follow it
    /// with `kiln logs RUN -f`.
    #[arg(long)]
    pub detach: bool,
    /// Run on this cron schedule instead of now (`--on kubernetes`):
    /// creates a CronJob; overrides the file's `schedule.cron_expression`.
    #[arg(long, value_name = "CRON")]
    pub schedule: Option<String>,
    /// Opt-in (`--on kubernetes`): for each registry the run's images and
    /// the orchestrator image come from, create or update a Secret
    /// `kiln-pull-REGISTRY` of type kubernetes.io/dockerconfigjson in the
    /// run's namespace holding the credentials kiln itself uses there
    /// (--username/--password-stdin, docker config, credential helpers),
    /// and attach them to the orchestrator and step pods, so the nodes can
    /// pull from a private registry. A registry kiln has no credentials
    /// for gets none; pod_settings.image_pull_secrets stay.
    #[arg(long)]
    pub image_pull_secret: bool,
}

/// Which cluster and namespace: command-line overrides of the pipeline
/// file's `orchestrator.kubernetes` connection settings.
#[derive(Debug, Clone, Default, Args)]
pub(crate) struct KubeArgs {
    /// kubeconfig context (default: the file's `kubernetes_context`, else
    /// the kubeconfig's current context).
    #[arg(long = "context", value_name = "CONTEXT")]
    pub context: Option<String>,
    /// Namespace (default: the file's `kubernetes_namespace`, else `kiln`).
    #[arg(long = "namespace", short = 'n', value_name = "NAMESPACE")]
    pub namespace: Option<String>,
}

/// Where a pipeline runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub(crate) enum Backend {
    /// On this machine, in kiln's rootless sandbox.
    Local,
    /// One pod per step on a Kubernetes cluster.
    Kubernetes,
}

/// `kiln runs ...`.
#[derive(Debug, Subcommand)]
pub(crate) enum RunsCommand {
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
pub(crate) struct LogsArgs {
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
pub(crate) enum SchedulesCommand {
    /// List schedules.
    List(ScheduleTarget),
    /// Change a schedule's cron expression.
    Update {
        /// Schedule name.
        name: String,
        /// New cron expression.
        #[arg(long)]
        cron: String,
        /// Where the schedule lives.
        #[command(flatten)]
        target: ScheduleTarget,
    },
    /// Delete a schedule.
    Delete {
        /// Schedule name.
        name: String,
        /// Where the schedule lives.
        #[command(flatten)]
        target: ScheduleTarget,
    },
}

/// The cluster and namespace of schedules: the pipeline file's connection
/// settings, when there is one, overridden by the flags.
#[derive(Debug, Clone, Args)]
pub(crate) struct ScheduleTarget {
    /// The pipeline file whose connection settings to use (default:
    /// kiln.yaml when there is one; without it, kiln's defaults).
    #[arg(long = "pipeline")]
    pub pipeline: Option<PathBuf>,
    /// Cluster and namespace overrides.
    #[command(flatten)]
    pub kube: KubeArgs,
}

/// `kiln cache ...`.
#[derive(Debug, Subcommand)]
pub(crate) enum CacheCommand {
    /// List cached layers.
    Ls {
        /// The layer cache (default: $XDG_CACHE_HOME/kiln).
        #[arg(long)]
        cache_dir: Option<PathBuf>,
    },
    /// Remove cached layers: those unused for a while, or all.
    Prune {
        /// Remove everything.
        #[arg(long, conflicts_with = "older_than_days")]
        all: bool,
        /// Remove entries unused for this many days (default 7).
        #[arg(long, default_value_t = 7)]
        older_than_days: u64,
        /// The layer cache (default: $XDG_CACHE_HOME/kiln).
        #[arg(long)]
        cache_dir: Option<PathBuf>,
    },
}

/// Arguments of `kiln validate`.
#[derive(Debug, Args)]
pub(crate) struct ValidateArgs {
    /// The pipeline file.
    #[arg(default_value = "kiln.yaml")]
    pub file: PathBuf,
    /// Print the effective settings of this step.
    #[arg(long)]
    pub step: Option<String>,
}

/// Arguments of `kiln completions`.
#[derive(Debug, Args)]
pub(crate) struct CompletionsArgs {
    /// The shell.
    #[arg(value_enum)]
    pub shell: clap_complete::Shell,
}
