//! A pipeline's schedule in the cluster: the CronJob [`orchestrator_cronjob`]
//! builds, created or updated by `kiln run --schedule`, listed, changed and
//! deleted by `kiln schedules`. Only CronJobs that carry kiln's labels are
//! listed, changed or deleted: a namespace is shared with other tools, and a
//! CronJob someone else made is not kiln's to touch.
//!
//! [`orchestrator_cronjob`]: super::job::orchestrator_cronjob

use std::time::SystemTime;

use k8s_openapi::api::batch::v1::CronJob;
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams, Preconditions};
use serde::Serialize;
use serde_json::json;

pub use super::apply::Applied;
use super::apply::{ApplyError, create_or_replace, is_kiln, status};
use super::job::{LABEL_ROLE, ROLE_ORCHESTRATOR, cronjob_name};
use super::pod::{LABEL_MANAGED_BY, LABEL_PIPELINE, MANAGED_BY_KILN};

/// One schedule as the cluster has it: what `kiln schedules list` shows.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ScheduleInfo {
    /// The CronJob's name, `kiln-PIPELINE`.
    pub name: String,
    /// Its namespace.
    pub namespace: String,
    /// The pipeline (its `pipeline` label; empty when missing).
    pub pipeline: String,
    /// The cron expression.
    pub cron: String,
    /// Whether ticks are suspended.
    pub suspend: bool,
    /// `Allow`, `Forbid` or `Replace` (the API server's default `Allow`
    /// when unset).
    pub concurrency_policy: String,
    /// When the last Job was started, if ever.
    #[serde(serialize_with = "crate::records::serialize_opt_time")]
    pub last_schedule_time: Option<SystemTime>,
    /// Jobs of this schedule running now.
    pub active: usize,
}

/// Why a schedule could not be applied, listed, changed or deleted.
#[derive(Debug, thiserror::Error)]
pub enum ScheduleError {
    /// The new cron expression does not parse; nothing was changed.
    #[error("{reason}; schedule {name} not changed")]
    InvalidCron {
        /// The schedule named.
        name: String,
        /// What is wrong with the expression, from kiln's cron parser.
        reason: String,
    },
    /// No CronJob of that name (nor of `kiln-NAME`).
    #[error("no schedule {name} in namespace {namespace} (kiln schedules list)")]
    NotFound {
        /// The schedule named.
        name: String,
        /// Where it was looked for.
        namespace: String,
    },
    /// The CronJob exists but kiln did not make it.
    #[error(
        "CronJob {name} in namespace {namespace} was not made by kiln (it lacks the label {LABEL_MANAGED_BY}={MANAGED_BY_KILN}); kiln leaves it alone"
    )]
    NotKiln {
        /// The CronJob's name.
        name: String,
        /// Its namespace.
        namespace: String,
    },
    /// The CronJob handed to [`apply_schedule`] has no `metadata.name`.
    #[error("the schedule's CronJob has no name")]
    Unnamed,
    /// The API server refused or could not be reached.
    #[error("{what}: {source}")]
    Api {
        /// What kiln was doing.
        what: String,
        /// The API's answer (boxed: it is large, and errors are rare).
        #[source]
        source: Box<kube::Error>,
    },
}

/// Creates `cronjob` in `namespace`, or, when kiln's CronJob of that name is
/// there already, replaces its spec (and adds the new labels and
/// annotations): so `kiln run --schedule` run twice updates the schedule
/// rather than fail, and a field dropped from the pipeline file is dropped
/// from the CronJob too (a merge would keep it).
pub async fn apply_schedule(
    client: &kube::Client,
    namespace: &str,
    cronjob: &CronJob,
) -> Result<Applied, ScheduleError> {
    let name = cronjob
        .metadata
        .name
        .clone()
        .ok_or(ScheduleError::Unnamed)?;
    let api: Api<CronJob> = Api::namespaced(client.clone(), namespace);
    let update = |mut existing: CronJob| {
        existing.spec.clone_from(&cronjob.spec);
        extend(
            &mut existing.metadata.labels,
            cronjob.metadata.labels.as_ref(),
        );
        extend(
            &mut existing.metadata.annotations,
            cronjob.metadata.annotations.as_ref(),
        );
        existing
    };
    create_or_replace(&api, &name, cronjob, update)
        .await
        .map_err(|e| match e {
            ApplyError::NotKiln => ScheduleError::NotKiln {
                name: name.clone(),
                namespace: namespace.to_string(),
            },
            ApplyError::Vanished => not_found(&name, namespace),
            ApplyError::Api { doing, source } => api_error(
                format!("{doing} CronJob {name} in namespace {namespace}"),
                source,
            ),
        })
}

/// kiln's schedules in `namespace` (its CronJobs: labels
/// `app.kubernetes.io/managed-by=kiln` and `kiln.dev/role=orchestrator`),
/// by name.
pub async fn list_schedules(
    client: &kube::Client,
    namespace: &str,
) -> Result<Vec<ScheduleInfo>, ScheduleError> {
    let api: Api<CronJob> = Api::namespaced(client.clone(), namespace);
    let selector = format!("{LABEL_MANAGED_BY}={MANAGED_BY_KILN},{LABEL_ROLE}={ROLE_ORCHESTRATOR}");
    let list = api
        .list(&ListParams::default().labels(&selector))
        .await
        .map_err(|e| api_error(format!("listing CronJobs in namespace {namespace}"), e))?;
    let mut schedules: Vec<ScheduleInfo> = list
        .items
        .iter()
        .map(|c| schedule_info(c, namespace))
        .collect();
    schedules.sort_by(|a, b| a.name.cmp(&b.name));
    Ok(schedules)
}

/// Sets the cron expression of schedule `name` (the CronJob's name, or the
/// pipeline's: `kiln-NAME`). The expression is checked with kiln's own
/// parser first, so a typo is named plainly and the CronJob is left as it
/// was; only `spec.schedule` is patched, so nothing else the CronJob holds
/// changes.
pub async fn update_schedule(
    client: &kube::Client,
    namespace: &str,
    name: &str,
    cron: &str,
) -> Result<ScheduleInfo, ScheduleError> {
    kiln_pipeline::cron::check(cron).map_err(|reason| ScheduleError::InvalidCron {
        name: name.to_string(),
        // The parser's sentences may end in a full stop; this one goes on.
        reason: reason.to_string().trim_end_matches('.').to_string(),
    })?;
    let api: Api<CronJob> = Api::namespaced(client.clone(), namespace);
    let found = find(&api, namespace, name).await?;
    let found_name = found.metadata.name.clone().unwrap_or_default();
    // The uid precondition: the CronJob checked above is the one patched,
    // not one made under the same name in between.
    let mut patch = json!({"spec": {"schedule": cron.trim()}});
    if let Some(uid) = &found.metadata.uid {
        patch["metadata"] = json!({"uid": uid});
    }
    let patched = api
        .patch(&found_name, &PatchParams::default(), &Patch::Merge(&patch))
        .await
        .map_err(|e| {
            gone_or(e, name, namespace, || {
                format!("changing the schedule of CronJob {found_name} in namespace {namespace}")
            })
        })?;
    Ok(schedule_info(&patched, namespace))
}

/// Deletes schedule `name` (the CronJob's name, or the pipeline's) with
/// propagation `Background`: its Jobs, and their pods, are deleted by the
/// garbage collector after it, rather than left running unowned. Returns
/// what was deleted.
pub async fn delete_schedule(
    client: &kube::Client,
    namespace: &str,
    name: &str,
) -> Result<ScheduleInfo, ScheduleError> {
    let api: Api<CronJob> = Api::namespaced(client.clone(), namespace);
    let found = find(&api, namespace, name).await?;
    let found_name = found.metadata.name.clone().unwrap_or_default();
    // Only the CronJob checked above: one made in between under the same
    // name may not be kiln's.
    let params = DeleteParams::background().preconditions(Preconditions {
        uid: found.metadata.uid.clone(),
        resource_version: None,
    });
    api.delete(&found_name, &params).await.map_err(|e| {
        gone_or(e, name, namespace, || {
            format!("deleting CronJob {found_name} in namespace {namespace}")
        })
    })?;
    Ok(schedule_info(&found, namespace))
}

/// The CronJob schedule `name` stands for: that name, else the pipeline's
/// CronJob `kiln-NAME` (what users know a schedule by); it must be kiln's.
async fn find(api: &Api<CronJob>, namespace: &str, name: &str) -> Result<CronJob, ScheduleError> {
    let mut candidates = vec![name.to_string()];
    let by_pipeline = cronjob_name(name);
    if by_pipeline != name {
        candidates.push(by_pipeline);
    }
    for candidate in candidates {
        let got = api.get_opt(&candidate).await.map_err(|e| {
            api_error(
                format!("reading CronJob {candidate} in namespace {namespace}"),
                e,
            )
        })?;
        if let Some(cronjob) = got {
            ensure_kiln(&cronjob, namespace)?;
            return Ok(cronjob);
        }
    }
    Err(not_found(name, namespace))
}

/// Refuses a CronJob without kiln's managed-by label.
fn ensure_kiln(cronjob: &CronJob, namespace: &str) -> Result<(), ScheduleError> {
    if is_kiln(&cronjob.metadata) {
        Ok(())
    } else {
        Err(ScheduleError::NotKiln {
            name: cronjob.metadata.name.clone().unwrap_or_default(),
            namespace: namespace.to_string(),
        })
    }
}

fn not_found(name: &str, namespace: &str) -> ScheduleError {
    ScheduleError::NotFound {
        name: name.to_string(),
        namespace: namespace.to_string(),
    }
}

fn api_error(what: String, source: kube::Error) -> ScheduleError {
    ScheduleError::Api {
        what,
        source: Box::new(source),
    }
}

/// A write to schedule `name` that found it gone (deleted since it was
/// read) says so as plainly as a read would; other refusals say `what`.
fn gone_or(
    e: kube::Error,
    name: &str,
    namespace: &str,
    what: impl FnOnce() -> String,
) -> ScheduleError {
    match status(&e) {
        Some(404) => not_found(name, namespace),
        _ => api_error(what(), e),
    }
}

/// Adds `new`'s entries to `map`, keeping the others.
fn extend(
    map: &mut Option<std::collections::BTreeMap<String, String>>,
    new: Option<&std::collections::BTreeMap<String, String>>,
) {
    if let Some(new) = new {
        map.get_or_insert_default()
            .extend(new.iter().map(|(k, v)| (k.clone(), v.clone())));
    }
}

/// A CronJob as `kiln schedules list` shows it; `namespace` stands in when
/// the object does not say.
pub fn schedule_info(cronjob: &CronJob, namespace: &str) -> ScheduleInfo {
    let spec = cronjob.spec.as_ref();
    let status = cronjob.status.as_ref();
    ScheduleInfo {
        name: cronjob.metadata.name.clone().unwrap_or_default(),
        namespace: cronjob
            .metadata
            .namespace
            .clone()
            .unwrap_or_else(|| namespace.to_string()),
        pipeline: cronjob
            .metadata
            .labels
            .as_ref()
            .and_then(|l| l.get(LABEL_PIPELINE))
            .cloned()
            .unwrap_or_default(),
        cron: spec.map(|s| s.schedule.clone()).unwrap_or_default(),
        suspend: spec.and_then(|s| s.suspend).unwrap_or(false),
        concurrency_policy: spec
            .and_then(|s| s.concurrency_policy.clone())
            .unwrap_or_else(|| "Allow".into()),
        last_schedule_time: status
            .and_then(|s| s.last_schedule_time.as_ref())
            .map(|t| SystemTime::from(t.0)),
        active: status.and_then(|s| s.active.as_ref()).map_or(0, Vec::len),
    }
}

#[cfg(test)]
mod tests {
    use std::time::{Duration, UNIX_EPOCH};

    use super::*;

    fn cronjob(manifest: serde_json::Value) -> CronJob {
        serde_json::from_value(manifest).unwrap_or_else(|e| panic!("{e}"))
    }

    #[test]
    fn a_cronjob_reads_as_its_schedule() {
        let c = cronjob(json!({
            "metadata": {
                "name": "kiln-train",
                "namespace": "ml",
                "labels": {"pipeline": "train", LABEL_MANAGED_BY: MANAGED_BY_KILN},
            },
            "spec": {
                "schedule": "5 2 * * *",
                "suspend": true,
                "concurrencyPolicy": "Forbid",
                "jobTemplate": {"spec": {"template": {}}},
            },
            "status": {
                "lastScheduleTime": "2023-11-14T22:13:20Z",
                "active": [{"name": "kiln-train-1"}, {"name": "kiln-train-2"}],
            },
        }));
        let info = schedule_info(&c, "other");
        assert_eq!(
            info,
            ScheduleInfo {
                name: "kiln-train".into(),
                namespace: "ml".into(),
                pipeline: "train".into(),
                cron: "5 2 * * *".into(),
                suspend: true,
                concurrency_policy: "Forbid".into(),
                last_schedule_time: Some(UNIX_EPOCH + Duration::from_secs(1_700_000_000)),
                active: 2,
            }
        );
        let text = serde_json::to_value(&info).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(text["last_schedule_time"], "2023-11-14T22:13:20.000Z");
    }

    #[test]
    fn unset_fields_read_as_the_api_server_defaults_them() {
        let c = cronjob(json!({
            "metadata": {"name": "kiln-x"},
            "spec": {"schedule": "@hourly", "jobTemplate": {}},
        }));
        let info = schedule_info(&c, "ns");
        assert_eq!(
            (info.namespace.as_str(), info.pipeline.as_str()),
            ("ns", "")
        );
        assert_eq!((info.suspend, info.active), (false, 0));
        assert_eq!(info.concurrency_policy, "Allow");
        assert_eq!(info.last_schedule_time, None);
    }

    #[test]
    fn only_cronjobs_with_kilns_label_are_kilns() {
        let mine = cronjob(json!({
            "metadata": {"name": "a", "labels": {LABEL_MANAGED_BY: MANAGED_BY_KILN}},
        }));
        ensure_kiln(&mine, "ns").unwrap_or_else(|e| panic!("{e}"));
        for labels in [json!(null), json!({}), json!({LABEL_MANAGED_BY: "helm"})] {
            let theirs = cronjob(json!({"metadata": {"name": "b", "labels": labels}}));
            let err = ensure_kiln(&theirs, "ns").map(|()| "accepted").unwrap_err();
            assert!(
                err.to_string()
                    .starts_with("CronJob b in namespace ns was not made by kiln"),
                "{err}"
            );
        }
    }

    #[test]
    fn new_labels_are_added_to_the_old() {
        let mut map = Some([("a".to_string(), "1".to_string())].into());
        let new = [("b".to_string(), "2".to_string())].into();
        extend(&mut map, Some(&new));
        assert_eq!(map.map(|m| m.len()), Some(2));
        let mut none = None;
        extend(&mut none, Some(&new));
        assert_eq!(none, Some(new));
    }
}
