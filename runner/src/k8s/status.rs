//! A Kubernetes run's state, kept on its orchestrator Job as annotations:
//! the Job is the run's record in the cluster, readable by any client
//! (`kiln runs`, `kubectl describe job`) and by a restarted orchestrator.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// The run's status: `running`, `succeeded`, `failed`, `stopped`,
/// `timed-out` (the records' run status words).
pub const ANNOTATION_STATUS: &str = "kiln.dev/status";
/// Every step's state, as JSON ([`StepSummary`] by step name).
pub const ANNOTATION_STEPS: &str = "kiln.dev/steps";
/// Set by `kiln runs stop`: [`STOP_GRACEFUL`] or [`STOP_FORCE`].
pub const ANNOTATION_STOP: &str = "kiln.dev/stop";
/// [`ANNOTATION_STOP`]: running steps finish, nothing new starts.
pub const STOP_GRACEFUL: &str = "graceful";
/// [`ANNOTATION_STOP`]: running steps are cancelled (their pods deleted).
pub const STOP_FORCE: &str = "force";
/// When the orchestrator began and ended (RFC 3339).
pub const ANNOTATION_STARTED: &str = "kiln.dev/started";
/// See [`ANNOTATION_STARTED`].
pub const ANNOTATION_FINISHED: &str = "kiln.dev/finished";

/// One step's state as the orchestrator last wrote it.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct StepSummary {
    /// The records' step status word (`pending`, `running`, `succeeded`, ...).
    pub status: String,
    /// Attempts started.
    #[serde(default)]
    pub attempts: u32,
    /// Why it failed or was skipped.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// The last attempt's exit code.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exit_code: Option<i32>,
}

/// All steps, by name.
pub type Steps = BTreeMap<String, StepSummary>;

/// Is `status` an end state (the orchestrator has nothing more to do)?
pub fn is_final(status: &str) -> bool {
    !matches!(status, "" | "pending" | "running")
}
