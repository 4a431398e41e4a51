//! The pod of one step attempt, from the step's effective Kubernetes
//! settings: pure, so every field is checked by golden tests without a
//! cluster. The manifest is assembled as JSON (the settings' objects are
//! Kubernetes JSON already), `additional_pod_spec_args` is merged into the
//! spec, and the result is read back as a typed `Pod`: a field of the wrong
//! shape fails here with the setting's name, not later at the API server.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::Pod;
use kiln_pipeline::{KubernetesSettings, PodSettings};
use serde_json::{Map, Value, json};

use super::names::{label_value, pod_name};

/// Label keys kiln sets on every step pod, so `kubectl get pods -l run=ID`
/// and `kubectl delete pod -l run=ID` work.
pub const LABEL_RUN: &str = "run";
/// See [`LABEL_RUN`].
pub const LABEL_PIPELINE: &str = "pipeline";
/// See [`LABEL_RUN`].
pub const LABEL_STEP: &str = "step";
/// Marks every object kiln creates, so kiln touches only its own (`kiln
/// schedules delete` refuses a CronJob without it).
pub const LABEL_MANAGED_BY: &str = "app.kubernetes.io/managed-by";
/// The value of [`LABEL_MANAGED_BY`].
pub const MANAGED_BY_KILN: &str = "kiln";
/// The full run id, step name and attempt, unabridged, as annotations.
pub const ANNOTATION_RUN: &str = "kiln.dev/run-id";
/// See [`ANNOTATION_RUN`].
pub const ANNOTATION_STEP: &str = "kiln.dev/step";
/// See [`ANNOTATION_RUN`].
pub const ANNOTATION_ATTEMPT: &str = "kiln.dev/attempt";
/// The step container's name (ZenML's).
pub const CONTAINER: &str = "main";

/// The object a step pod belongs to (the orchestrator Job), so deleting it
/// deletes the pods.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Owner {
    /// `batch/v1`.
    pub api_version: String,
    /// `Job`.
    pub kind: String,
    /// Its name.
    pub name: String,
    /// Its uid.
    pub uid: String,
}

/// Everything one step attempt's pod is made from.
#[derive(Debug, Clone)]
pub struct StepPod<'a> {
    /// Namespace of the run.
    pub namespace: &'a str,
    /// Pipeline name.
    pub pipeline: &'a str,
    /// Run id.
    pub run: &'a str,
    /// Step name.
    pub step: &'a str,
    /// Attempt, from 1.
    pub attempt: u32,
    /// The image, pinned by digest.
    pub image: &'a str,
    /// Program and arguments.
    pub command: Vec<String>,
    /// The step's environment and kiln's run variables, in order.
    pub env: Vec<(String, String)>,
    /// The step's effective Kubernetes settings.
    pub settings: &'a KubernetesSettings,
    /// The orchestrator Job, when there is one.
    pub owner: Option<Owner>,
}

/// A setting that does not have the shape Kubernetes wants.
#[derive(Debug, thiserror::Error)]
#[error("{setting}: {message}")]
pub struct PodError {
    /// The setting, as written in kiln.yaml (`pod_settings.affinity`).
    pub setting: String,
    /// What is wrong.
    pub message: String,
}

/// The pod manifest of one step attempt.
pub fn step_pod(p: &StepPod<'_>) -> Result<Pod, PodError> {
    let pod_settings = p.settings.pod_settings.clone().unwrap_or_default();
    let container = container(p, &pod_settings)?;
    let manifest = json!({
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": metadata(p, &pod_settings),
        "spec": pod_spec(p.settings, &pod_settings, container)?,
    });
    serde_json::from_value(manifest).map_err(|e| PodError {
        setting: "pod_settings".into(),
        message: format!("the pod does not have the shape Kubernetes expects: {e}"),
    })
}

/// The pod's name, labels and annotations (the user's, then kiln's, which
/// win) and its owner: what `kubectl get pods -l` and the garbage collector
/// go by.
fn metadata(p: &StepPod<'_>, pod_settings: &PodSettings) -> Value {
    let prefix = p
        .settings
        .pod_name_prefix
        .as_ref()
        .map_or_else(|| p.pipeline.to_string(), |x| x.value.clone());
    let mut labels: BTreeMap<String, String> = pod_settings
        .labels
        .as_ref()
        .map(|l| l.value.clone())
        .unwrap_or_default();
    labels.insert(LABEL_RUN.into(), label_value(p.run));
    labels.insert(LABEL_PIPELINE.into(), label_value(p.pipeline));
    labels.insert(LABEL_STEP.into(), label_value(p.step));
    labels.insert(LABEL_MANAGED_BY.into(), MANAGED_BY_KILN.into());
    let mut annotations: BTreeMap<String, String> = pod_settings
        .annotations
        .as_ref()
        .map(|a| a.value.clone())
        .unwrap_or_default();
    annotations.insert(ANNOTATION_RUN.into(), p.run.into());
    annotations.insert(ANNOTATION_STEP.into(), p.step.into());
    annotations.insert(ANNOTATION_ATTEMPT.into(), p.attempt.to_string());

    let mut metadata = json!({
        "name": pod_name(&prefix, p.step, p.run, p.attempt),
        "namespace": p.namespace,
        "labels": labels,
        "annotations": annotations,
    });
    // Owned, not controlled: the Job controller releases pods it controls
    // that its selector does not match (it would strip this reference),
    // while the garbage collector deletes owned pods with the Job either
    // way.
    if let Some(o) = &p.owner {
        metadata["ownerReferences"] = json!([{
            "apiVersion": o.api_version,
            "kind": o.kind,
            "name": o.name,
            "uid": o.uid,
            "controller": false,
            "blockOwnerDeletion": true,
        }]);
    }
    metadata
}

/// The step's one container: kiln's image, command and environment with
/// the container fields of the pod settings.
fn container(p: &StepPod<'_>, pod_settings: &PodSettings) -> Result<Value, PodError> {
    let mut env: Vec<Value> = p
        .env
        .iter()
        .map(|(k, v)| json!({"name": k, "value": v}))
        .collect();
    env.extend(list(
        pod_settings.env.as_ref().map(|e| &e.value),
        "pod_settings.env",
    )?);
    let mut container = json!({
        "name": CONTAINER,
        "image": p.image,
        "command": p.command,
        "env": env,
    });
    let env_from = list(
        pod_settings.env_from.as_ref().map(|e| &e.value),
        "pod_settings.env_from",
    )?;
    if !env_from.is_empty() {
        container["envFrom"] = Value::Array(env_from);
    }
    let mounts = list(
        pod_settings.volume_mounts.as_ref().map(|e| &e.value),
        "pod_settings.volume_mounts",
    )?;
    if !mounts.is_empty() {
        container["volumeMounts"] = Value::Array(mounts);
    }
    if let Some(r) = &pod_settings.resources {
        let mut resources = Map::new();
        if let Some(req) = &r.requests {
            resources.insert("requests".into(), json!(req.value));
        }
        if let Some(lim) = &r.limits {
            resources.insert("limits".into(), json!(lim.value));
        }
        if !resources.is_empty() {
            container["resources"] = Value::Object(resources);
        }
    }
    let mut security = pod_settings
        .security_context
        .as_ref()
        .map_or_else(|| json!({}), |c| c.value.clone());
    if p.settings.privileged == Some(true) {
        security["privileged"] = Value::Bool(true);
    }
    if security.as_object().is_some_and(|m| !m.is_empty()) {
        container["securityContext"] = security;
    }
    Ok(container)
}

/// The `PodSpec` around `container`: the pod-wide settings, then
/// `additional_pod_spec_args` merged over them.
fn pod_spec(
    s: &KubernetesSettings,
    pod_settings: &PodSettings,
    container: Value,
) -> Result<Value, PodError> {
    let mut spec = json!({
        "restartPolicy": "Never",
        "containers": [container],
    });
    let account = s
        .step_pod_service_account_name
        .as_ref()
        .or(s.service_account_name.as_ref())
        .map(|a| a.value.clone());
    if let Some(a) = account {
        spec["serviceAccountName"] = Value::String(a);
    }
    if let Some(n) = &pod_settings.node_selectors {
        spec["nodeSelector"] = json!(n.value);
    }
    if let Some(a) = &pod_settings.affinity {
        spec["affinity"] = a.value.clone();
    }
    let tolerations = list(
        pod_settings.tolerations.as_ref().map(|t| &t.value),
        "pod_settings.tolerations",
    )?;
    if !tolerations.is_empty() {
        spec["tolerations"] = Value::Array(tolerations);
    }
    let volumes = list(
        pod_settings.volumes.as_ref().map(|v| &v.value),
        "pod_settings.volumes",
    )?;
    if !volumes.is_empty() {
        spec["volumes"] = Value::Array(volumes);
    }
    if pod_settings.host_ipc == Some(true) {
        spec["hostIPC"] = Value::Bool(true);
    }
    if let Some(secrets) = &pod_settings.image_pull_secrets {
        spec["imagePullSecrets"] = secrets.iter().map(|n| json!({"name": n.value})).collect();
    }
    if let Some(name) = &pod_settings.scheduler_name {
        spec["schedulerName"] = Value::String(name.clone());
    }
    if let Some(extra) = &pod_settings.additional_pod_spec_args {
        if !extra.value.is_object() {
            return Err(PodError {
                setting: "pod_settings.additional_pod_spec_args".into(),
                message: "expected a mapping of PodSpec fields".into(),
            });
        }
        merge(&mut spec, &extra.value);
    }
    Ok(spec)
}

/// A setting that must be a list (of Kubernetes objects).
fn list(value: Option<&Value>, setting: &str) -> Result<Vec<Value>, PodError> {
    match value {
        None | Some(Value::Null) => Ok(Vec::new()),
        Some(Value::Array(items)) => Ok(items.clone()),
        Some(_) => Err(PodError {
            setting: setting.into(),
            message: "expected a list".into(),
        }),
    }
}

/// Deep merge: mappings merge key by key, anything else replaces.
fn merge(base: &mut Value, over: &Value) {
    match (base, over) {
        (Value::Object(b), Value::Object(o)) => {
            for (k, v) in o {
                merge(b.entry(k.clone()).or_insert(Value::Null), v);
            }
        }
        (b, o) => *b = o.clone(),
    }
}

#[cfg(test)]
mod tests;
