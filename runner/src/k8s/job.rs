//! The orchestrator Job (one run) and CronJob (a schedule), pure: built
//! from the pipeline's run-wide Kubernetes settings. The pod template goes
//! through the step pod builder with `orchestrator_pod_settings`, so every
//! pod setting means the same for the orchestrator as for steps.

use k8s_openapi::api::batch::v1::{CronJob, Job};
use kiln_pipeline::{ConcurrencyPolicy, KubernetesSettings};
use serde_json::{Value, json};

use super::names::{dns_label, label_value};
use super::plan::{PLAN_ENV, POD_NAME_ENV, RunPlan};
use super::pod::{
    ANNOTATION_RUN, LABEL_PIPELINE, LABEL_RUN, LABEL_STEP, PodError, StepPod, step_pod,
};

/// Marks kiln's orchestrator Jobs (and their pods) apart from step pods.
pub const LABEL_ROLE: &str = "kiln.dev/role";
/// The value of [`LABEL_ROLE`] on orchestrators.
pub const ROLE_ORCHESTRATOR: &str = "orchestrator";
/// The orchestrator pod's pipeline label (not `pipeline`: that lists
/// step pods).
pub const POD_LABEL_PIPELINE: &str = "kiln.dev/pipeline";
/// The orchestrator pod's run label (not `run`: see [`POD_LABEL_PIPELINE`]).
pub const POD_LABEL_RUN: &str = "kiln.dev/run";
/// The schedule a Job came from, on Jobs a CronJob creates.
pub const LABEL_SCHEDULE: &str = "kiln.dev/schedule";
/// Restarts of the orchestrator pod the Job allows before
/// `backoff_limit_margin` (evictions, node loss, a deleted pod).
pub const ORCHESTRATOR_RESTARTS: i32 = 3;

/// Everything the orchestrator Job is made from.
#[derive(Debug, Clone)]
pub struct OrchestratorJob<'a> {
    /// Pipeline name.
    pub pipeline: &'a str,
    /// The plan handed to `kiln orchestrate`.
    pub plan: &'a RunPlan,
    /// The orchestrator image, pinned by digest.
    pub image: &'a str,
    /// The run-wide Kubernetes settings.
    pub settings: &'a KubernetesSettings,
    /// The service account the orchestrator runs as.
    pub service_account: &'a str,
}

/// A schedule's CronJob fields.
#[derive(Debug, Clone, PartialEq)]
pub struct CronSpec {
    /// Five-field cron expression.
    pub cron: String,
    /// What happens when a run is still going at the next tick.
    pub concurrency: ConcurrencyPolicy,
    /// Seconds after a missed tick during which the run may still start.
    pub starting_deadline_seconds: Option<i64>,
    /// Finished Jobs kept.
    pub successful_jobs_history_limit: Option<i64>,
    /// Failed Jobs kept.
    pub failed_jobs_history_limit: Option<i64>,
}

/// The Job of run `run`: `kiln-PIPELINE-RUN`.
pub fn job_name(pipeline: &str, run: &str) -> String {
    let tail = format!("-{}", dns_label(run, 20));
    format!(
        "{}{tail}",
        dns_label(&format!("kiln-{pipeline}"), 63 - tail.len())
    )
}

/// The CronJob of a pipeline's schedule: `kiln-PIPELINE`, within the 52
/// characters a CronJob name may have (its Jobs add 11).
pub fn cronjob_name(pipeline: &str) -> String {
    dns_label(&format!("kiln-{pipeline}"), 52)
}

/// The orchestrator Job of one run (`plan.run_id` set).
pub fn orchestrator_job(o: &OrchestratorJob<'_>) -> Result<Job, PodError> {
    let run = o.plan.run_id.as_deref().unwrap_or_default();
    let template = job_template(o)?;
    let mut metadata = template["metadata"].clone();
    metadata["name"] = json!(job_name(o.pipeline, run));
    metadata["namespace"] = json!(o.plan.namespace);
    let manifest = json!({
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": metadata,
        "spec": template["spec"],
    });
    typed(manifest)
}

/// The CronJob that starts an orchestrator Job at every tick of `cron`.
pub fn orchestrator_cronjob(o: &OrchestratorJob<'_>, cron: &CronSpec) -> Result<CronJob, PodError> {
    let template = job_template(o)?;
    let mut labels = template["metadata"]["labels"].clone();
    if let Some(l) = labels.as_object_mut() {
        l.remove(LABEL_RUN);
    }
    let name = cronjob_name(o.pipeline);
    let mut job_metadata = template["metadata"].clone();
    job_metadata["labels"][LABEL_SCHEDULE] = json!(name);
    let mut spec = json!({
        "schedule": cron.cron,
        "concurrencyPolicy": match cron.concurrency {
            ConcurrencyPolicy::Allow => "Allow",
            ConcurrencyPolicy::Forbid => "Forbid",
            ConcurrencyPolicy::Replace => "Replace",
        },
        "jobTemplate": {"metadata": job_metadata, "spec": template["spec"]},
    });
    let s = o.settings;
    let history = |own: Option<i64>, setting: &Option<kiln_pipeline::Spanned<i64>>| {
        own.or(setting.as_ref().map(|v| v.value))
    };
    if let Some(d) = cron.starting_deadline_seconds {
        spec["startingDeadlineSeconds"] = json!(d);
    }
    if let Some(n) = history(
        cron.successful_jobs_history_limit,
        &s.successful_jobs_history_limit,
    ) {
        spec["successfulJobsHistoryLimit"] = json!(n);
    }
    if let Some(n) = history(cron.failed_jobs_history_limit, &s.failed_jobs_history_limit) {
        spec["failedJobsHistoryLimit"] = json!(n);
    }
    let manifest = json!({
        "apiVersion": "batch/v1",
        "kind": "CronJob",
        "metadata": {
            "name": name,
            "namespace": o.plan.namespace,
            "labels": labels,
        },
        "spec": spec,
    });
    typed(manifest)
}

/// The Job's metadata and spec, shared by a run's Job and a schedule's
/// template.
fn job_template(o: &OrchestratorJob<'_>) -> Result<Value, PodError> {
    let run = o.plan.run_id.as_deref().unwrap_or_default();
    let mut settings = o.settings.clone();
    settings.pod_settings = settings.orchestrator_pod_settings.clone();
    // The orchestrator's image is in the registry of the steps' images:
    // its pod needs the run's pull secrets as much as theirs.
    super::pull_secret::attach(&mut settings, &o.plan.pull_secrets);
    settings.privileged = None;
    settings.step_pod_service_account_name =
        Some(kiln_pipeline::spanned(o.service_account.to_string()));
    let pod = step_pod(&StepPod {
        namespace: &o.plan.namespace,
        pipeline: o.pipeline,
        run,
        step: ROLE_ORCHESTRATOR,
        attempt: 1,
        image: o.image,
        command: vec!["/usr/local/bin/kiln".into(), "orchestrate".into()],
        env: vec![(PLAN_ENV.into(), o.plan.to_env())],
        settings: &settings,
        owner: None,
    })
    .map_err(|e| PodError {
        setting: format!("orchestrator_{}", e.setting),
        message: e.message,
    })?;
    let mut pod = serde_json::to_value(pod).map_err(|e| PodError {
        setting: "orchestrator_pod_settings".into(),
        message: e.to_string(),
    })?;
    // The pod finds its Job (owner of the step pods) through its own name.
    if let Some(env) = pod["spec"]["containers"][0]["env"].as_array_mut() {
        env.push(json!({
            "name": POD_NAME_ENV,
            "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}},
        }));
    }
    pod["spec"]["containers"][0]["name"] = json!(ROLE_ORCHESTRATOR);
    // The Job carries `run` and `pipeline`; its pod carries kiln's own
    // keys instead, so `kubectl get pods -l pipeline=NAME` lists the step
    // pods only and `kubectl delete pod -l run=ID` leaves the orchestrator.
    let mut labels = pod["metadata"]["labels"].take();
    let mut pod_labels = labels.clone();
    if let Some(l) = labels.as_object_mut() {
        l.remove(LABEL_STEP);
        if run.is_empty() {
            l.remove(LABEL_RUN);
        }
        l.insert(LABEL_ROLE.into(), json!(ROLE_ORCHESTRATOR));
        l.insert(LABEL_PIPELINE.into(), json!(label_value(o.pipeline)));
    }
    if let Some(l) = pod_labels.as_object_mut() {
        l.remove(LABEL_STEP);
        l.remove(LABEL_RUN);
        l.remove(LABEL_PIPELINE);
        l.insert(LABEL_ROLE.into(), json!(ROLE_ORCHESTRATOR));
        l.insert(POD_LABEL_PIPELINE.into(), json!(label_value(o.pipeline)));
        if !run.is_empty() {
            l.insert(POD_LABEL_RUN.into(), json!(label_value(run)));
        }
    }
    let mut annotations = json!({});
    if !run.is_empty() {
        annotations[ANNOTATION_RUN] = json!(run);
    }
    let mut spec = json!({
        "backoffLimit": ORCHESTRATOR_RESTARTS
            + o.settings
                .backoff_limit_margin
                .as_ref()
                .map_or(0, |m| i32::try_from(m.value).unwrap_or(0)),
        "template": {
            "metadata": {"labels": pod_labels, "annotations": pod["metadata"]["annotations"].take()},
            "spec": pod["spec"].take(),
        },
    });
    if let Some(a) = spec["template"]["metadata"]["annotations"].as_object_mut() {
        a.remove(super::pod::ANNOTATION_STEP);
        a.remove(super::pod::ANNOTATION_ATTEMPT);
        if run.is_empty() {
            a.remove(ANNOTATION_RUN);
        }
    }
    if let Some(ttl) = &o.settings.ttl_seconds_after_finished {
        spec["ttlSecondsAfterFinished"] = json!(ttl.value);
    }
    Ok(json!({
        "metadata": {"labels": labels, "annotations": annotations},
        "spec": spec,
    }))
}

fn typed<T: serde::de::DeserializeOwned>(manifest: Value) -> Result<T, PodError> {
    serde_json::from_value(manifest).map_err(|e| PodError {
        setting: "orchestrator_pod_settings".into(),
        message: format!("the orchestrator does not have the shape Kubernetes expects: {e}"),
    })
}

#[cfg(test)]
mod tests;
