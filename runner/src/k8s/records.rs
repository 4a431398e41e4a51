//! Kubernetes runs in the local run records: what the cluster says about a
//! submitted run (its orchestrator Job's state annotations and its step
//! pods), copied into [`Records`] so `kiln runs` and `kiln logs` show a
//! Kubernetes run as they show a local one, and keep showing its last
//! known state when the cluster cannot be reached or has cleaned up.
//!
//! [`observe`] is the pure part (Job and pods in, [`ObservedRun`] out),
//! tested with hand-made objects; [`refresh`] reads the cluster and
//! records what [`observe`] makes of it.
//!
//! What is taken from where:
//!
//! - the run's status from the Job's `kiln.dev/status` annotation; a Job
//!   that has finished (its orchestrator exited, or gave up restarting)
//!   while that still says `running` never ends it, so the run is
//!   `interrupted`;
//! - the run's end from `kiln.dev/finished`, else the Job's completion time;
//! - each step's status and reason from `kiln.dev/steps`;
//! - each attempt from its step pod: started at the pod's creation, ended
//!   when its container terminated, with its exit code; its log is
//!   `pod/<name>`, which `kiln logs` reads through the API;
//! - a Job that is gone (deleted, or its TTL after finishing ran out) says
//!   nothing new: the last recorded state stays, except that a run still
//!   `running` can no longer end and is `interrupted`
//!   ([`Records::cluster_job_gone`], which waits while the kiln that
//!   submits the run lives, since it may not have created the Job yet).

use std::collections::BTreeMap;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::api::{Api, ListParams};

use super::names::label_value;
use super::observe::{PodState, attempt_of, pending_reason, state_of};
use super::pod::{CONTAINER, LABEL_RUN};
use super::status::{ANNOTATION_FINISHED, ANNOTATION_STATUS, ANNOTATION_STEPS, Steps};
use crate::records::{
    AttemptStatus, ClusterRun, ObservedAttempt, ObservedRun, ObservedStep, Records, RecordsError,
    RunStatus, StepStatus,
};

/// Why a Kubernetes run could not be refreshed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum RefreshError {
    /// The API server refused or could not be reached.
    #[error("{what}: {source}")]
    Api {
        /// What kiln was reading.
        what: String,
        /// The API's answer.
        #[source]
        source: kube::Error,
    },
    /// An annotation on the Job holds what this kiln does not read.
    #[error(transparent)]
    Annotation(#[from] AnnotationError),
    /// The local records refused the update.
    #[error(transparent)]
    Records(#[from] RecordsError),
}

/// An annotation on the Job holds what this kiln does not read: written
/// by hand, or by an orchestrator of another kiln version.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("Job {job}: annotation {annotation} = {value:?}: {message}")]
pub struct AnnotationError {
    /// The Job's name.
    pub job: String,
    /// The annotation's key.
    pub annotation: &'static str,
    /// Its value.
    pub value: String,
    /// What is wrong with it.
    pub message: String,
}

/// Reads run `run`'s orchestrator Job and step pods where `at` says they
/// are, and records what they say ([`Records::record_observed`]); a Job
/// that is gone is handled by [`Records::cluster_job_gone`]. Calling it
/// again with nothing changed in the cluster changes nothing.
///
/// The cluster is read before anything is written, so an API error leaves
/// the records as they were.
pub async fn refresh(
    client: &kube::Client,
    records: &Records,
    run: &str,
    at: &ClusterRun,
) -> Result<(), RefreshError> {
    let jobs: Api<Job> = Api::namespaced(client.clone(), &at.namespace);
    let api = |what: String| move |source| RefreshError::Api { what, source };
    let job = jobs
        .get_opt(&at.job)
        .await
        .map_err(api(format!("reading Job {}/{}", at.namespace, at.job)))?;
    let Some(job) = job else {
        records.cluster_job_gone(
            run,
            &format!("its orchestrator Job {}/{} is gone", at.namespace, at.job),
        )?;
        return Ok(());
    };
    let pods: Api<Pod> = Api::namespaced(client.clone(), &at.namespace);
    let selector = format!("{LABEL_RUN}={}", label_value(run));
    let pods = pods
        .list(&ListParams::default().labels(&selector))
        .await
        .map_err(api(format!(
            "listing the pods of run {run} in {}",
            at.namespace
        )))?;
    let observed = observe(run, &job, &pods.items)?;
    records.record_observed(run, &observed)?;
    Ok(())
}

/// What `job` (run `run`'s orchestrator Job) and `pods` (step pods; those
/// of other runs, whose abridged `run` label matched, are left out by
/// their `kiln.dev/run-id` annotation) say about the run.
pub fn observe(run: &str, job: &Job, pods: &[Pod]) -> Result<ObservedRun, AnnotationError> {
    let job_name = job.metadata.name.clone().unwrap_or_default();
    let bad = |annotation: &'static str, value: &str, message: String| AnnotationError {
        job: job_name.clone(),
        annotation,
        value: value.to_owned(),
        message,
    };
    let annotations = job.metadata.annotations.clone().unwrap_or_default();

    let mut status = match annotations.get(ANNOTATION_STATUS).map(String::as_str) {
        None | Some("") => None,
        Some(word) => Some(run_status(word).ok_or_else(|| {
            bad(
                ANNOTATION_STATUS,
                word,
                "not a run status this kiln knows".into(),
            )
        })?),
    };
    let mut reason = None;
    if status.is_none_or(|s| s == RunStatus::Running)
        && let Some(why) = job_finished(job)
    {
        status = Some(RunStatus::Interrupted);
        reason = Some(why);
    }
    let ended = match status {
        None | Some(RunStatus::Running) => None,
        Some(_) => match annotations.get(ANNOTATION_FINISHED) {
            Some(text) => Some(
                parse_time(text)
                    .ok_or_else(|| bad(ANNOTATION_FINISHED, text, "not an RFC 3339 time".into()))?,
            ),
            None => job
                .status
                .as_ref()
                .and_then(|s| s.completion_time.as_ref())
                .map(system_time),
        },
    };

    let summaries: Steps = match annotations.get(ANNOTATION_STEPS) {
        None => Steps::new(),
        Some(text) => serde_json::from_str(text)
            .map_err(|e| bad(ANNOTATION_STEPS, text, format!("not kiln's step JSON: {e}")))?,
    };
    let mut steps: BTreeMap<String, ObservedStep> = BTreeMap::new();
    for (name, summary) in &summaries {
        let step_status: StepStatus = summary.status.parse().map_err(|word: String| {
            bad(
                ANNOTATION_STEPS,
                &word,
                format!("step {name}: not a step status this kiln knows"),
            )
        })?;
        steps.insert(
            name.clone(),
            ObservedStep {
                name: name.clone(),
                status: Some(step_status),
                reason: summary.reason.clone(),
                attempts: Vec::new(),
            },
        );
    }
    for pod in pods {
        let Some((pod_run, step, number)) = attempt_of(pod) else {
            continue;
        };
        if pod_run != run || number == 0 {
            continue;
        }
        let Some(attempt) = attempt_from(pod, number) else {
            continue;
        };
        let entry = steps.entry(step.clone()).or_insert_with(|| ObservedStep {
            name: step,
            status: None,
            reason: None,
            attempts: Vec::new(),
        });
        // Two pods of one attempt (a pod deleted and made again): the
        // younger stands for it.
        match entry.attempts.iter_mut().find(|a| a.number == number) {
            Some(known) if known.started <= attempt.started => *known = attempt,
            Some(_) => {}
            None => entry.attempts.push(attempt),
        }
    }
    let steps = steps
        .into_values()
        .map(|mut s| {
            s.attempts.sort_by_key(|a| a.number);
            s
        })
        .collect();
    Ok(ObservedRun {
        status,
        ended,
        reason,
        steps,
    })
}

/// The records' status for an annotation's word: the records' own words,
/// and `timed-out` as the orchestrator spells it.
fn run_status(word: &str) -> Option<RunStatus> {
    match word {
        "pending" => Some(RunStatus::Running),
        "timed-out" => Some(RunStatus::TimedOut),
        other => other.parse().ok(),
    }
}

/// Why the Job will run no orchestrator any more, when it has finished:
/// its `Complete` or `Failed` condition is true.
pub(super) fn job_finished(job: &Job) -> Option<String> {
    let condition = job
        .status
        .as_ref()?
        .conditions
        .iter()
        .flatten()
        .find(|c| (c.type_ == "Failed" || c.type_ == "Complete") && c.status == "True")?;
    let why = match (condition.reason.as_deref(), condition.message.as_deref()) {
        (Some(r), Some(m)) if !m.is_empty() => format!(" ({r}: {m})"),
        (Some(r), _) => format!(" ({r})"),
        (None, _) => String::new(),
    };
    Some(if condition.type_ == "Failed" {
        format!("the orchestrator Job failed{why} before the run ended")
    } else {
        "the orchestrator exited before the run ended".to_owned()
    })
}

/// Attempt `number` as its pod tells it; `None` for a pod without a
/// creation time (never one the API server returns).
fn attempt_from(pod: &Pod, number: u32) -> Option<ObservedAttempt> {
    let started = system_time(pod.metadata.creation_timestamp.as_ref()?);
    let terminated = pod
        .status
        .as_ref()
        .and_then(|s| s.container_statuses.as_ref())
        .and_then(|cs| cs.iter().find(|c| c.name == CONTAINER))
        .and_then(|c| c.state.as_ref())
        .and_then(|s| s.terminated.as_ref());
    let ended = terminated
        .and_then(|t| t.finished_at.as_ref())
        .map(system_time);
    let exit_code = terminated.map(|t| t.exit_code);
    let deleting = pod.metadata.deletion_timestamp.is_some();
    let (status, reason) = match state_of(pod) {
        PodState::Succeeded => (AttemptStatus::Succeeded, None),
        PodState::Failed { reason, .. } => (AttemptStatus::Failed, Some(reason)),
        _ if deleting => (AttemptStatus::Cancelled, Some("its pod was deleted".into())),
        PodState::Running => (AttemptStatus::Running, None),
        PodState::Pending => (AttemptStatus::Running, Some(pending_reason(pod))),
        PodState::Stuck { reason } => (AttemptStatus::Running, Some(reason)),
    };
    let name = pod.metadata.name.as_deref().unwrap_or_default();
    Some(ObservedAttempt {
        number,
        status,
        started,
        ended,
        exit_code: exit_code.or((status == AttemptStatus::Succeeded).then_some(0)),
        reason,
        log_path: crate::driver::pod_log_path(name),
    })
}

/// An RFC 3339 time, read as the API reads its own.
fn parse_time(text: &str) -> Option<SystemTime> {
    serde_json::from_value::<Time>(serde_json::Value::String(text.to_owned()))
        .ok()
        .as_ref()
        .map(system_time)
}

/// A Kubernetes time as a `SystemTime`, to the nanosecond.
fn system_time(t: &Time) -> SystemTime {
    let secs = t.0.timestamp();
    let nanos = Duration::from_nanos(u64::from(t.0.timestamp_subsec_nanos()));
    let whole = Duration::from_secs(secs.unsigned_abs());
    if secs >= 0 {
        UNIX_EPOCH + whole + nanos
    } else {
        UNIX_EPOCH - whole + nanos
    }
}

#[cfg(test)]
mod tests;
