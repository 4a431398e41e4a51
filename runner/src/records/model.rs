//! What a run record holds: the input the runner gives when a run starts,
//! the statuses, and what readers get back.

use std::fmt;
use std::path::PathBuf;
use std::str::FromStr;
use std::time::SystemTime;

use serde::Serialize;

use super::time::{serialize_opt_time, serialize_time};

/// A run's id: 8 lowercase hex characters, short enough to type and, as a
/// unique prefix, shorter still.
pub type RunId = String;

/// What the runner knows when a run starts; [`Records::create_run`]
/// stores it with every step pending.
///
/// [`Records::create_run`]: super::Records::create_run
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewRun {
    /// The pipeline's name.
    pub pipeline: String,
    /// The pipeline file the run was started from.
    pub file: PathBuf,
    /// The run's working directory (step outputs), kept so a retry can
    /// reuse the outputs of steps that succeeded.
    pub run_dir: PathBuf,
    /// Where the attempts' logs are written.
    pub log_dir: PathBuf,
    /// The steps, in the order `kiln runs show` and `kiln logs` list them.
    pub steps: Vec<NewStep>,
    /// The run this one retries, if any.
    pub retry_of: Option<RunId>,
    /// When the run started.
    pub started: SystemTime,
    /// The process id of the kiln that runs it, which `kiln runs stop`
    /// signals. Whether the run is still alive is decided by its
    /// [`RunLock`](super::RunLock), not by this pid, since pids are reused.
    pub pid: u32,
}

/// One step of a [`NewRun`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewStep {
    /// The step's name, unique in the pipeline.
    pub name: String,
    /// The image it runs in, when known at the start.
    pub image: Option<String>,
    /// The names of the steps it waits for.
    pub upstream: Vec<String>,
}

/// Declares a status enum stored as text: one place for the variant's
/// name in the database, in JSON and on screen, so the three never differ.
macro_rules! status_enum {
    ($(#[$doc:meta])* $name:ident { $($(#[$vdoc:meta])* $variant:ident = $text:literal,)+ }) => {
        $(#[$doc])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
        #[serde(rename_all = "snake_case")]
        pub enum $name {
            $($(#[$vdoc])* $variant,)+
        }

        impl $name {
            /// The status as stored and printed, in snake_case.
            pub fn as_str(self) -> &'static str {
                match self {
                    $($name::$variant => $text,)+
                }
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(self.as_str())
            }
        }

        impl FromStr for $name {
            type Err = String;

            /// Parses [`Self::as_str`]'s text back; the error holds the
            /// text that is not a status.
            fn from_str(s: &str) -> Result<Self, String> {
                match s {
                    $($text => Ok($name::$variant),)+
                    other => Err(other.to_owned()),
                }
            }
        }
    };
}

status_enum! {
    /// Where a step stands in a run.
    StepStatus {
        /// Not started yet.
        Pending = "pending",
        /// An attempt runs.
        Running = "running",
        /// An attempt failed; another will be made.
        Retrying = "retrying",
        /// An attempt succeeded.
        Succeeded = "succeeded",
        /// It ran and will not run again without succeeding.
        Failed = "failed",
        /// It never ran (an upstream step failed, or the run stopped).
        Skipped = "skipped",
        /// A live attempt was stopped, or kiln exited while it ran.
        Cancelled = "cancelled",
        /// It succeeded in the run this one retries; its outputs are reused.
        Reused = "reused",
    }
}

status_enum! {
    /// How one attempt of a step stands.
    AttemptStatus {
        /// It runs.
        Running = "running",
        /// It exited 0.
        Succeeded = "succeeded",
        /// It exited non-zero or could not start.
        Failed = "failed",
        /// It was stopped, or kiln exited while it ran.
        Cancelled = "cancelled",
    }
}

status_enum! {
    /// How a run stands.
    RunStatus {
        /// Its kiln is running it.
        Running = "running",
        /// Every step succeeded (or was reused).
        Succeeded = "succeeded",
        /// Some step failed for good.
        Failed = "failed",
        /// Someone stopped it (`kiln runs stop`, Ctrl-C).
        Stopped = "stopped",
        /// It ran past its timeout.
        TimedOut = "timed_out",
        /// Its kiln exited without finishing it (killed, crashed, machine
        /// rebooted); found by readers, never written by the runner.
        Interrupted = "interrupted",
    }
}

status_enum! {
    /// Where a run's steps run.
    Backend {
        /// On this machine, in kiln's sandbox; the kiln that runs it holds
        /// its [`RunLock`](super::RunLock).
        Local = "local",
        /// On a Kubernetes cluster, driven by an orchestrator Job; the
        /// cluster has the truth and [`ClusterRun`] says where.
        Kubernetes = "kubernetes",
    }
}

/// Where a Kubernetes run lives, recorded by the client that submits it
/// ([`Records::set_cluster_run`]) so later commands can ask the cluster.
///
/// [`Records::set_cluster_run`]: super::Records::set_cluster_run
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ClusterRun {
    /// The kubeconfig context; `None` for the current one (or in-cluster).
    pub context: Option<String>,
    /// The namespace of the run's Job and pods.
    pub namespace: String,
    /// The orchestrator Job's name (`kiln-<pipeline>-<run id>`).
    pub job: String,
}

/// What the cluster said about a Kubernetes run, for
/// [`Records::record_observed`]: the run's, its steps' and its attempts'
/// state as last seen. Parts the cluster did not say are `None` and leave
/// the records as they are.
///
/// [`Records::record_observed`]: super::Records::record_observed
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ObservedRun {
    /// The run's status; `None` while the orchestrator has not written one.
    pub status: Option<RunStatus>,
    /// When it ended, for a final status, when the cluster says.
    pub ended: Option<SystemTime>,
    /// Why it ended as it did, given to steps and attempts a final run
    /// left unfinished (they become `cancelled`).
    pub reason: Option<String>,
    /// The steps the cluster knows about; others are left as they are.
    pub steps: Vec<ObservedStep>,
}

/// One step of an [`ObservedRun`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ObservedStep {
    /// The step's name.
    pub name: String,
    /// Its status; `None` when the orchestrator has not said yet.
    pub status: Option<StepStatus>,
    /// Why it ended as it did.
    pub reason: Option<String>,
    /// The attempts whose pods still exist; recorded attempts whose pods
    /// are gone are kept as they were.
    pub attempts: Vec<ObservedAttempt>,
}

/// One attempt of an [`ObservedStep`], from its pod.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ObservedAttempt {
    /// 1 for the first attempt.
    pub number: u32,
    /// How it stands.
    pub status: AttemptStatus,
    /// When its pod was created.
    pub started: SystemTime,
    /// When its container ended.
    pub ended: Option<SystemTime>,
    /// The container's exit code.
    pub exit_code: Option<i32>,
    /// Why it ended as it did, or why it has not started.
    pub reason: Option<String>,
    /// Where its output is: `pod/<name>` for a pod.
    pub log_path: PathBuf,
}

/// One line of `kiln runs list`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct RunSummary {
    /// The run's id.
    pub id: RunId,
    /// The pipeline's name.
    pub pipeline: String,
    /// How the run stands.
    pub status: RunStatus,
    /// When it started.
    #[serde(serialize_with = "serialize_time")]
    pub started: SystemTime,
    /// When it ended; `None` while it runs, and for an interrupted run,
    /// whose end nobody saw.
    #[serde(serialize_with = "serialize_opt_time")]
    pub ended: Option<SystemTime>,
    /// How many steps the run has.
    pub steps_total: usize,
    /// How many of them succeeded or were reused.
    pub steps_succeeded: usize,
    /// Where it runs.
    pub backend: Backend,
}

/// Everything recorded about one run, for `kiln runs show` and `kiln logs`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct RunDetail {
    /// The run's id.
    pub id: RunId,
    /// The pipeline's name.
    pub pipeline: String,
    /// The pipeline file.
    pub file: PathBuf,
    /// The run's working directory.
    pub run_dir: PathBuf,
    /// Where the attempts' logs are.
    pub log_dir: PathBuf,
    /// How the run stands.
    pub status: RunStatus,
    /// When it started.
    #[serde(serialize_with = "serialize_time")]
    pub started: SystemTime,
    /// When it ended, if anyone saw it end.
    #[serde(serialize_with = "serialize_opt_time")]
    pub ended: Option<SystemTime>,
    /// The run this one retries.
    pub retry_of: Option<RunId>,
    /// The pid of the kiln that ran it (for a Kubernetes run, the kiln
    /// that submitted it), for `kiln runs stop`.
    pub pid: u32,
    /// Where it runs.
    pub backend: Backend,
    /// Where a Kubernetes run lives; `None` for a local one.
    pub cluster: Option<ClusterRun>,
    /// The steps, in the order the run listed them.
    pub steps: Vec<StepDetail>,
}

/// One step of a [`RunDetail`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct StepDetail {
    /// The step's name.
    pub name: String,
    /// The image it runs in.
    pub image: Option<String>,
    /// The steps it waits for.
    pub upstream: Vec<String>,
    /// Where it stands.
    pub status: StepStatus,
    /// Why it ended as it did (skipped because..., failed because...).
    pub reason: Option<String>,
    /// The attempt that comes next, while the step is retrying.
    pub next_attempt: Option<u32>,
    /// When it is due.
    #[serde(serialize_with = "serialize_opt_time")]
    pub next_attempt_at: Option<SystemTime>,
    /// Its attempts, oldest first.
    pub attempts: Vec<AttemptDetail>,
}

/// One attempt of a step.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct AttemptDetail {
    /// 1 for the first attempt.
    pub number: u32,
    /// How it stands.
    pub status: AttemptStatus,
    /// When it started.
    #[serde(serialize_with = "serialize_time")]
    pub started: SystemTime,
    /// When it ended.
    #[serde(serialize_with = "serialize_opt_time")]
    pub ended: Option<SystemTime>,
    /// The process's exit code, when it exited.
    pub exit_code: Option<i32>,
    /// Why it ended as it did, when the exit code does not say.
    pub reason: Option<String>,
    /// Its output, as the runner wrote it.
    pub log_path: PathBuf,
}
