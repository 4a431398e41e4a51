//! The shape of `kiln.yaml`, as serde types.
//!
//! Settings blocks mirror ZenML's `DockerSettings`, `KubernetesOrchestrator`
//! config, `KubernetesOrchestratorSettings` and `KubernetesPodSettings`, with
//! the same snake_case names, so a ZenML user's settings carry over. Every
//! settings field is optional: a block only says what it overrides, and
//! [`ImageSettings::overlay`] and friends merge blocks level by level.
//! Values that validation must point at are wrapped in [`Spanned`] to keep
//! their line and column.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
pub use serde_saphyr::Spanned;

/// Declares a settings struct whose fields are all optional, with an
/// `overlay` that lets a more specific level win field by field. Fields in the
/// `nested` list are settings structs themselves and are overlaid recursively.
macro_rules! settings_struct {
    (
        $(#[$meta:meta])*
        pub struct $name:ident {
            $( $(#[$fmeta:meta])* $field:ident : $ty:ty ),* $(,)?
        }
        $( nested { $( $(#[$nmeta:meta])* $nfield:ident : $nty:ty ),* $(,)? } )?
    ) => {
        $(#[$meta])*
        #[derive(Debug, Clone, Default, PartialEq, Deserialize, Serialize)]
        #[serde(deny_unknown_fields)]
        pub struct $name {
            $(
                $(#[$fmeta])*
                #[serde(default, skip_serializing_if = "Option::is_none")]
                pub $field: Option<$ty>,
            )*
            $($(
                $(#[$nmeta])*
                #[serde(default, skip_serializing_if = "Option::is_none")]
                pub $nfield: Option<$nty>,
            )*)?
        }

        impl $name {
            /// Returns these settings with every field that `over` sets
            /// replaced by `over`'s value (ZenML's hierarchy: the more
            /// specific level wins).
            #[must_use]
            pub fn overlay(self, over: Self) -> Self {
                Self {
                    $( $field: over.$field.or(self.$field), )*
                    $($( $nfield: match (self.$nfield, over.$nfield) {
                        (Some(base), Some(top)) => Some(base.overlay(top)),
                        (base, top) => top.or(base),
                    }, )*)?
                }
            }

            /// The keys this block accepts, for messages and docs.
            pub const FIELDS: &'static [&'static str] = &[
                $( stringify!($field), )* $($( stringify!($nfield), )*)?
            ];
        }
    };
}

/// A map of strings whose location is kept for validation messages.
pub type SpannedMap = Spanned<BTreeMap<String, String>>;

/// A Kubernetes object given as plain YAML (affinity, volumes, ...), checked
/// for shape by kiln and for content by the API server's own schema.
pub type SpannedObject = Spanned<serde_json::Value>;

/// The whole `kiln.yaml` file as written.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct PipelineFile {
    /// The pipeline's name: a label on every pod and a prefix of image names.
    pub name: Spanned<String>,
    /// Cancel running steps and launch nothing more once one step fails.
    #[serde(default)]
    pub fail_fast: bool,
    /// Pipeline-level settings; each step's own settings override them.
    #[serde(default)]
    pub settings: Settings,
    /// The orchestrators' own configuration: the lowest level of the
    /// hierarchy, and the home of options that cannot change per run.
    #[serde(default)]
    pub orchestrator: OrchestratorConfig,
    /// Run the pipeline on a cron schedule (Kubernetes CronJob).
    #[serde(default)]
    pub schedule: Option<Schedule>,
    /// The steps, in any order; `upstream` makes the DAG.
    pub steps: Spanned<Vec<Step>>,
}

/// The settings a pipeline or a step may carry.
#[derive(Debug, Clone, Default, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Settings {
    // Boxed: most steps set none of them, and a step's settings inline
    // took 5 KB (4.5 GB for a file of 830,000 steps).
    /// How the step's image is built (ZenML's `DockerSettings`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub docker: Option<Box<ImageSettings>>,
    /// How the step runs on Kubernetes (`KubernetesOrchestratorSettings`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kubernetes: Option<Box<KubernetesSettings>>,
    /// How the step runs on this machine.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub local: Option<Box<LocalSettings>>,
}

/// The orchestrator component's configuration (`orchestrator:` in kiln.yaml).
#[derive(Debug, Clone, Default, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct OrchestratorConfig {
    /// Kubernetes orchestrator config: connection options plus defaults for
    /// every Kubernetes setting.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kubernetes: Option<KubernetesSettings>,
    /// Local orchestrator defaults.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub local: Option<LocalSettings>,
}

/// One step of the pipeline.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Step {
    /// Unique within the pipeline; used in pod names, labels and logs.
    pub name: Spanned<String>,
    /// What the step runs: a list (exec form) or a string run by `/bin/sh -c`.
    pub command: Spanned<Command>,
    /// Extra arguments appended to `command`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub args: Vec<String>,
    /// Steps that must succeed before this one starts.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub upstream: Vec<Spanned<String>>,
    /// Environment variables for this step only, on top of the image's.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub environment: BTreeMap<String, String>,
    /// Step-level settings: override the pipeline's.
    #[serde(default)]
    pub settings: Settings,
    /// Step retries (ZenML's `StepRetryConfig`); override the orchestrator's
    /// `pod_failure_*` settings for this step.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retry: Option<StepRetry>,
}

/// A step's command.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(untagged)]
pub enum Command {
    /// Run through `/bin/sh -c`.
    Shell(String),
    /// Exec form: program and arguments.
    Exec(Vec<String>),
}

/// Accepts a shell line or a list whose items may be any scalar
/// (`[sleep, 5]`, `[true]`): YAML would otherwise read `5` and `true` as a
/// number and a boolean, and an untagged enum would give a vague error.
impl<'de> Deserialize<'de> for Command {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct CommandVisitor;
        impl<'de> serde::de::Visitor<'de> for CommandVisitor {
            type Value = Command;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a command: a list such as [python3, steps/train.py] or a shell line")
            }
            fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<Command, E> {
                Ok(Command::Shell(v.to_string()))
            }
            fn visit_seq<A: serde::de::SeqAccess<'de>>(
                self,
                mut seq: A,
            ) -> Result<Command, A::Error> {
                let mut argv = Vec::new();
                while let Some(item) = seq.next_element::<String>()? {
                    argv.push(item);
                }
                Ok(Command::Exec(argv))
            }
        }
        deserializer.deserialize_any(CommandVisitor)
    }
}

impl Command {
    /// The argv the container runs.
    pub fn argv(&self) -> Vec<String> {
        match self {
            Command::Shell(line) => vec!["/bin/sh".into(), "-c".into(), line.clone()],
            Command::Exec(argv) => argv.clone(),
        }
    }
}

/// Retry policy of one step.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct StepRetry {
    /// Attempts after the first.
    pub max_retries: Spanned<i64>,
    /// Seconds before the first retry.
    #[serde(default)]
    pub delay: Option<Spanned<f64>>,
    /// Factor applied to the delay after each retry.
    #[serde(default)]
    pub backoff: Option<Spanned<f64>>,
}

/// A cron schedule: the pipeline becomes a Kubernetes CronJob.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Schedule {
    /// Five-field cron expression, or a macro such as `@daily`.
    pub cron_expression: Spanned<String>,
    /// What to do when a run is still going at the next tick.
    #[serde(default)]
    pub concurrency_policy: ConcurrencyPolicy,
    /// Seconds after a missed tick during which the run may still start.
    #[serde(default)]
    pub starting_deadline_seconds: Option<Spanned<i64>>,
    /// How many finished runs to keep.
    #[serde(default)]
    pub successful_jobs_history_limit: Option<Spanned<i64>>,
    /// How many failed runs to keep.
    #[serde(default)]
    pub failed_jobs_history_limit: Option<Spanned<i64>>,
}

/// Kubernetes CronJob concurrency policy.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, Serialize)]
pub enum ConcurrencyPolicy {
    /// Runs may overlap.
    #[default]
    Allow,
    /// Skip a tick while a run is going.
    Forbid,
    /// Stop the running run and start the new one.
    Replace,
}

/// Python package installer used for requirement layers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Installer {
    /// pip, in a virtual environment at a fixed path.
    Pip,
    /// uv, installed into the image first when missing.
    Uv,
}

/// `requirements`: a file or an inline list, as in ZenML.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(untagged)]
pub enum Requirements {
    /// Path of a requirements file, relative to the pipeline file.
    File(String),
    /// Requirement specifiers.
    List(Vec<String>),
}

/// `replicate_local_python_environment`: how to export the local packages.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(untagged)]
pub enum ReplicateLocal {
    /// `true` means `pip_freeze`, `false` means off.
    Enabled(bool),
    /// `pip_freeze` or `poetry_export`.
    Method(String),
    /// A custom command whose output is a requirements file.
    Command(Vec<String>),
}

settings_struct! {
    /// How a step's image is built: ZenML's `DockerSettings`.
    pub struct ImageSettings {
        /// Image the layers go on top of.
        parent_image: Spanned<String>,
        /// A Dockerfile built first; its image becomes the parent.
        dockerfile: Spanned<String>,
        /// Build context of `dockerfile`, relative to the pipeline file.
        build_context_root: Spanned<String>,
        /// `ARG` values for `dockerfile`.
        build_args: BTreeMap<String, String>,
        /// Debian packages, installed in one layer.
        apt_packages: Vec<Spanned<String>>,
        /// Replicate the local Python environment in the first requirement layer.
        replicate_local_python_environment: Spanned<ReplicateLocal>,
        /// Install `stack_requirements` (the stack components' packages).
        install_stack_requirements: bool,
        /// Requirements of the stack's components (second requirement layer).
        stack_requirements: Vec<String>,
        /// Extra requirement files (third requirement layer).
        extra_requirements_files: Vec<Spanned<String>>,
        /// Integration names whose requirements are installed (fourth layer).
        required_integrations: Vec<String>,
        /// pyproject.toml whose dependencies are exported (fifth layer).
        pyproject_path: Spanned<String>,
        /// Command that exports `pyproject_path` as requirements.
        pyproject_export_command: Vec<String>,
        /// The user's requirements (last requirement layer).
        requirements: Spanned<Requirements>,
        /// pip or uv.
        python_package_installer: Installer,
        /// Extra installer arguments: `{index-url: URL}` becomes `--index-url URL`.
        python_package_installer_args: BTreeMap<String, String>,
        /// Environment during the build and at run time.
        environment: SpannedMap,
        /// Environment at run time only.
        runtime_environment: SpannedMap,
        /// User the step runs as; created when absent.
        user: Spanned<String>,
        /// Working directory and code location in the image.
        workdir: Spanned<String>,
        /// A .dockerignore-style file for the code layer.
        dockerignore: Spanned<String>,
        /// Root of the code copied into the image, relative to the pipeline file.
        source_root: Spanned<String>,
        /// Put the code in the image (ZenML's code inclusion).
        allow_including_files_in_images: bool,
        /// Repository the image is pushed to.
        target_repository: Spanned<String>,
        /// Tag of the pushed image.
        image_tag: Spanned<String>,
        /// Use `parent_image` as is, building nothing.
        skip_build: bool,
        /// Never reuse an earlier build of the same image.
        prevent_build_reuse: bool,
    }
}

settings_struct! {
    /// Resources of a pod's main container.
    pub struct Resources {
        /// What the scheduler reserves.
        requests: SpannedMap,
        /// The hard cap.
        limits: SpannedMap,
    }
}

settings_struct! {
    /// Pod settings: ZenML's `KubernetesPodSettings`. Object-valued fields use
    /// the Kubernetes API's own camelCase field names.
    pub struct PodSettings {
        /// `nodeSelector` labels.
        node_selectors: SpannedMap,
        /// A Kubernetes `Affinity`.
        affinity: SpannedObject,
        /// A list of Kubernetes `Toleration`s.
        tolerations: SpannedObject,
        /// Pod annotations.
        annotations: SpannedMap,
        /// Pod labels, beside kiln's own.
        labels: SpannedMap,
        /// A list of Kubernetes `Volume`s.
        volumes: SpannedObject,
        /// A list of `VolumeMount`s of the main container.
        volume_mounts: SpannedObject,
        /// A list of `EnvVar`s.
        env: SpannedObject,
        /// A list of `EnvFromSource`s.
        env_from: SpannedObject,
        /// Share the host's IPC namespace.
        host_ipc: bool,
        /// Names of image pull secrets.
        image_pull_secrets: Vec<Spanned<String>>,
        /// Scheduler to use instead of the default one.
        scheduler_name: String,
        /// The main container's `SecurityContext`.
        security_context: SpannedObject,
        /// Extra `PodSpec` fields, merged into the generated spec.
        additional_pod_spec_args: SpannedObject,
    }
    nested {
        /// Requests and limits, `nvidia.com/gpu` included.
        resources: Resources,
    }
}

settings_struct! {
    /// Kubernetes orchestrator settings and config: ZenML's
    /// `KubernetesOrchestratorConfig` + `KubernetesOrchestratorSettings`.
    /// The fields in [`KubernetesSettings::CONFIG_ONLY`] may only appear under
    /// `orchestrator.kubernetes`.
    pub struct KubernetesSettings {
        /// Run inside the cluster kiln runs in, ignoring `kubernetes_context`.
        incluster: Spanned<bool>,
        /// kubeconfig context to use.
        kubernetes_context: Spanned<String>,
        /// Namespace of the run (must exist). Default `kiln`.
        kubernetes_namespace: Spanned<String>,
        /// The cluster is local: check the registry is reachable from it.
        local: Spanned<bool>,
        /// Skip the checks `local` turns on.
        skip_local_validations: Spanned<bool>,
        /// Seconds between starting parallel steps.
        parallel_step_startup_waiting_period: Spanned<f64>,
        /// Wait for the run to finish. Default true.
        synchronous: bool,
        /// Seconds to wait for a synchronous run; 0 waits forever.
        timeout: Spanned<i64>,
        /// Stream step pod logs into the orchestrator's log. Default true.
        stream_step_logs: bool,
        /// Service account of the orchestrator pod.
        service_account_name: Spanned<String>,
        /// Service account of the step pods.
        step_pod_service_account_name: Spanned<String>,
        /// Run the step containers privileged.
        privileged: bool,
        /// Prefix of pod names.
        pod_name_prefix: Spanned<String>,
        /// Seconds a step pod may stay Pending. Default 600.
        pod_startup_timeout: Spanned<i64>,
        /// Retries of a step pod that fails. Default 3.
        pod_failure_max_retries: Spanned<i64>,
        /// Seconds before the first retry. Default 10.
        pod_failure_retry_delay: Spanned<f64>,
        /// Factor applied to the delay after each retry. Default 1.0.
        pod_failure_backoff: Spanned<f64>,
        /// Added to the orchestrator Job's backoff limit. Default 0.
        backoff_limit_margin: Spanned<i64>,
        /// Step pods running at once; unset means no limit.
        max_parallelism: Spanned<i64>,
        /// Finished orchestrator Jobs kept per schedule.
        successful_jobs_history_limit: Spanned<i64>,
        /// Failed orchestrator Jobs kept per schedule.
        failed_jobs_history_limit: Spanned<i64>,
        /// Seconds after which finished Jobs and pods are deleted.
        ttl_seconds_after_finished: Spanned<i64>,
        /// Do not compute cached steps before starting step pods.
        prevent_orchestrator_pod_caching: bool,
    }
    nested {
        /// Settings of the step pods.
        pod_settings: PodSettings,
        /// Settings of the orchestrator pod.
        orchestrator_pod_settings: PodSettings,
    }
}

impl KubernetesSettings {
    /// Options that only the orchestrator config may set (as in ZenML).
    pub const CONFIG_ONLY: &'static [&'static str] = &[
        "incluster",
        "kubernetes_context",
        "kubernetes_namespace",
        "local",
        "skip_local_validations",
        "parallel_step_startup_waiting_period",
    ];
}

impl ImageSettings {
    /// Every path these settings name (key, where, value): each must stay
    /// inside the project directory.
    pub fn project_paths(&self) -> Vec<(&'static str, serde_saphyr::Location, &str)> {
        let mut out = Vec::new();
        for (key, v) in [
            ("dockerfile", &self.dockerfile),
            ("build_context_root", &self.build_context_root),
            ("pyproject_path", &self.pyproject_path),
            ("dockerignore", &self.dockerignore),
            ("source_root", &self.source_root),
        ] {
            if let Some(v) = v {
                out.push((key, v.referenced, v.value.as_str()));
            }
        }
        for f in self.extra_requirements_files.iter().flatten() {
            out.push(("extra_requirements_files", f.referenced, f.value.as_str()));
        }
        if let Some(r) = &self.requirements
            && let Requirements::File(f) = &r.value
        {
            out.push(("requirements", r.referenced, f.as_str()));
        }
        out
    }
}

impl LocalSettings {
    /// The paths these settings name, as [`ImageSettings::project_paths`].
    pub fn project_paths(&self) -> Vec<(&'static str, serde_saphyr::Location, &str)> {
        self.run_directory
            .iter()
            .map(|d| ("run_directory", d.referenced, d.value.as_str()))
            .collect()
    }
}

settings_struct! {
    /// Settings of the local orchestrator (the embedded default).
    pub struct LocalSettings {
        /// Steps running at once. Default: the number of cores.
        max_parallelism: Spanned<i64>,
        /// Directory shared by the steps of a run, under which each run gets
        /// its own folder. Default: kiln's data dir.
        run_directory: Spanned<String>,
    }
}
