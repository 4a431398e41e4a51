//! What the client hands the in-cluster orchestrator: the pipeline file's
//! own text (the orchestrator parses it with the same code, so settings
//! resolve identically on both sides) and the images each step runs,
//! pinned by digest. It travels as one environment variable of the
//! orchestrator container, so a CronJob's template carries it too.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// The environment variable the plan travels in.
pub const PLAN_ENV: &str = "KILN_RUN_PLAN";
/// The orchestrator pod's own name (downward API), to find its Job.
pub const POD_NAME_ENV: &str = "KILN_POD_NAME";

/// One run's (or one schedule's) instructions for `kiln orchestrate`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RunPlan {
    /// The run id, chosen by the client. `None` for a schedule: each Job
    /// the CronJob creates gets an id derived from its own uid.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub run_id: Option<String>,
    /// The pipeline file's name, for messages.
    pub file: String,
    /// The pipeline file's text.
    pub pipeline: String,
    /// Step name to image reference (`registry/repo@sha256:...`).
    pub images: BTreeMap<String, String>,
    /// The namespace of the run.
    pub namespace: String,
    /// Image pull secrets kiln made for the run (`--image-pull-secret`),
    /// added to every step pod's `imagePullSecrets` beside the user's own:
    /// part of the plan, so a restarted orchestrator and each Job of a
    /// schedule attach them too. Absent from plans of kilns before it.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub pull_secrets: Vec<String>,
}

/// Why a plan cannot be read.
#[derive(Debug, thiserror::Error)]
pub enum RunPlanError {
    /// The variable is not set: `kiln orchestrate` runs only in a pod kiln made.
    #[error(
        "{PLAN_ENV} is not set: `kiln orchestrate` runs inside the orchestrator pod that `kiln run --on kubernetes` creates"
    )]
    Missing,
    /// The variable does not hold a plan.
    #[error("{PLAN_ENV} does not hold a run plan: {0}")]
    Malformed(#[from] serde_json::Error),
}

impl RunPlan {
    /// The plan as the variable's value.
    pub fn to_env(&self) -> String {
        // A struct of strings and maps always serializes.
        serde_json::to_string(self).unwrap_or_default()
    }

    /// Reads the plan from the variable's value.
    pub fn from_env_value(value: Option<&str>) -> Result<RunPlan, RunPlanError> {
        let value = value.ok_or(RunPlanError::Missing)?;
        Ok(serde_json::from_str(value)?)
    }
}

/// The run id of a Job a CronJob created: 8 hex digits of its uid, so a
/// restarted orchestrator pod of the same Job finds the same run.
pub fn run_id_from_uid(uid: &str) -> String {
    uid.chars()
        .filter(char::is_ascii_hexdigit)
        .take(8)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_plan_survives_the_environment() {
        let plan = RunPlan {
            run_id: Some("0123abcd".into()),
            file: "kiln.yaml".into(),
            pipeline: "name: p\nsteps: []\n".into(),
            images: [("a".to_string(), "r/x@sha256:00".to_string())].into(),
            namespace: "kiln".into(),
            pull_secrets: vec!["kiln-pull-127-0-0-1-5443".into()],
        };
        let back = RunPlan::from_env_value(Some(&plan.to_env())).unwrap();
        assert_eq!(back, plan);
    }

    #[test]
    fn a_plan_without_pull_secrets_still_reads() {
        let plan = RunPlan::from_env_value(Some(
            r#"{"file":"kiln.yaml","pipeline":"name: p\n","images":{},"namespace":"kiln"}"#,
        ))
        .unwrap();
        assert!(plan.pull_secrets.is_empty());
        assert!(!plan.to_env().contains("pull_secrets"), "{}", plan.to_env());
    }

    #[test]
    fn a_missing_or_broken_plan_says_so() {
        assert!(matches!(
            RunPlan::from_env_value(None),
            Err(RunPlanError::Missing)
        ));
        let e = RunPlan::from_env_value(Some("{")).unwrap_err();
        assert!(e.to_string().contains(PLAN_ENV), "{e}");
    }

    #[test]
    fn scheduled_run_ids_come_from_the_job_uid() {
        assert_eq!(
            run_id_from_uid("5f1c2a9e-77aa-4b1e-9c3d-0e2f4a6b8c0d"),
            "5f1c2a9e"
        );
    }
}
