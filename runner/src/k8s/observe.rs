//! What a step pod's status means for its attempt, read from plain `Pod`
//! objects: pure, so each rule is tested with hand-made pods.

use k8s_openapi::api::core::v1::Pod;

use super::pod::{ANNOTATION_ATTEMPT, ANNOTATION_RUN, ANNOTATION_STEP, CONTAINER};

/// Container waiting reasons that no amount of waiting mends: the attempt
/// fails at once with the reason, instead of after `pod_startup_timeout`.
pub const FAIL_FAST_REASONS: &[&str] = &[
    "ErrImagePull",
    "ImagePullBackOff",
    "InvalidImageName",
    "CreateContainerConfigError",
];

/// Where one attempt's pod stands.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PodState {
    /// Not scheduled or not started yet.
    Pending,
    /// Its container runs.
    Running,
    /// Exit code 0.
    Succeeded,
    /// It ended badly: a non-zero exit, an eviction.
    Failed {
        /// The container's exit code, when it exited.
        exit_code: Option<i32>,
        /// Why, for the user.
        reason: String,
    },
    /// Stuck on one of [`FAIL_FAST_REASONS`].
    Stuck {
        /// `Reason: message`.
        reason: String,
    },
}

/// The run, step and attempt a kiln step pod belongs to, from its
/// annotations (labels are abridged; annotations are not).
pub fn attempt_of(pod: &Pod) -> Option<(String, String, u32)> {
    let a = pod.metadata.annotations.as_ref()?;
    Some((
        a.get(ANNOTATION_RUN)?.clone(),
        a.get(ANNOTATION_STEP)?.clone(),
        a.get(ANNOTATION_ATTEMPT)?.parse().ok()?,
    ))
}

/// The state of `pod`'s attempt.
pub fn state_of(pod: &Pod) -> PodState {
    let Some(status) = &pod.status else {
        return PodState::Pending;
    };
    let container = status
        .container_statuses
        .iter()
        .flatten()
        .find(|c| c.name == CONTAINER)
        .or_else(|| status.container_statuses.iter().flatten().next());
    let terminated = container
        .and_then(|c| c.state.as_ref())
        .and_then(|s| s.terminated.as_ref());
    match status.phase.as_deref() {
        Some("Succeeded") => return PodState::Succeeded,
        Some("Failed") => {
            let exit_code = terminated.map(|t| t.exit_code);
            let reason = match (terminated, &status.reason) {
                (Some(t), r) if r.as_deref() != Some("Evicted") => match t.reason.as_deref() {
                    Some(r) if r != "Error" && r != "Completed" => {
                        format!("{r} (exit code {})", t.exit_code)
                    }
                    _ => format!("exit code {}", t.exit_code),
                },
                (_, Some(r)) => with_message(r, status.message.as_deref()),
                (_, None) => "the pod failed".to_string(),
            };
            return PodState::Failed { exit_code, reason };
        }
        Some("Running") => return PodState::Running,
        _ => {}
    }
    if let Some(w) = container
        .and_then(|c| c.state.as_ref())
        .and_then(|s| s.waiting.as_ref())
        && let Some(r) = w.reason.as_deref()
        && FAIL_FAST_REASONS.contains(&r)
    {
        return PodState::Stuck {
            reason: with_message(r, w.message.as_deref()),
        };
    }
    PodState::Pending
}

/// Why `pod` is still Pending, for a `pod_startup_timeout` failure: the
/// scheduler's word (`Unschedulable: 0/1 nodes are available: ...`), else
/// the container's waiting reason, else the phase.
pub fn pending_reason(pod: &Pod) -> String {
    let Some(status) = &pod.status else {
        return "Pending: the pod has no status yet".into();
    };
    if let Some(c) = status
        .conditions
        .iter()
        .flatten()
        .find(|c| c.type_ == "PodScheduled" && c.status == "False")
    {
        return with_message(
            c.reason.as_deref().unwrap_or("Unschedulable"),
            c.message.as_deref(),
        );
    }
    if let Some(w) = status
        .container_statuses
        .iter()
        .flatten()
        .filter_map(|c| c.state.as_ref()?.waiting.as_ref())
        .next()
    {
        return with_message(
            w.reason.as_deref().unwrap_or("Waiting"),
            w.message.as_deref(),
        );
    }
    "Pending".into()
}

fn with_message(reason: &str, message: Option<&str>) -> String {
    match message.filter(|m| !m.is_empty()) {
        Some(m) => format!("{reason}: {m}"),
        None => reason.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn pod(status: serde_json::Value) -> Pod {
        serde_json::from_value(json!({
            "metadata": {"name": "p", "annotations": {
                ANNOTATION_RUN: "c1cc3b6f", ANNOTATION_STEP: "train_model", ANNOTATION_ATTEMPT: "2"
            }},
            "status": status,
        }))
        .unwrap()
    }

    fn waiting(reason: &str, message: &str) -> serde_json::Value {
        json!({"phase": "Pending", "containerStatuses": [{
            "name": "main", "image": "i", "imageID": "", "ready": false, "restartCount": 0,
            "state": {"waiting": {"reason": reason, "message": message}},
        }]})
    }

    fn terminated(phase: &str, code: i32, reason: &str) -> serde_json::Value {
        json!({"phase": phase, "containerStatuses": [{
            "name": "main", "image": "i", "imageID": "", "ready": false, "restartCount": 0,
            "state": {"terminated": {"exitCode": code, "reason": reason}},
        }]})
    }

    #[test]
    fn the_attempt_comes_from_the_annotations() {
        assert_eq!(
            attempt_of(&pod(json!({}))),
            Some(("c1cc3b6f".into(), "train_model".into(), 2))
        );
        let bare: Pod = serde_json::from_value(json!({"metadata": {"name": "x"}})).unwrap();
        assert_eq!(attempt_of(&bare), None);
    }

    #[test]
    fn phases_map_to_attempt_states() {
        assert_eq!(
            state_of(&pod(json!({"phase": "Pending"}))),
            PodState::Pending
        );
        assert_eq!(
            state_of(&pod(json!({"phase": "Running"}))),
            PodState::Running
        );
        assert_eq!(
            state_of(&pod(terminated("Succeeded", 0, "Completed"))),
            PodState::Succeeded
        );
        assert_eq!(
            state_of(&pod(terminated("Failed", 3, "Error"))),
            PodState::Failed {
                exit_code: Some(3),
                reason: "exit code 3".into()
            }
        );
        assert_eq!(
            state_of(&pod(terminated("Failed", 137, "OOMKilled"))),
            PodState::Failed {
                exit_code: Some(137),
                reason: "OOMKilled (exit code 137)".into()
            }
        );
        let evicted = json!({"phase": "Failed", "reason": "Evicted", "message": "low on memory"});
        assert_eq!(
            state_of(&pod(evicted)),
            PodState::Failed {
                exit_code: None,
                reason: "Evicted: low on memory".into()
            }
        );
    }

    #[test]
    fn image_and_config_errors_fail_fast_but_other_waits_do_not() {
        for reason in FAIL_FAST_REASONS {
            assert_eq!(
                state_of(&pod(waiting(reason, "no such image"))),
                PodState::Stuck {
                    reason: format!("{reason}: no such image")
                }
            );
        }
        assert_eq!(
            state_of(&pod(waiting("ContainerCreating", ""))),
            PodState::Pending
        );
    }

    #[test]
    fn a_pending_pod_says_why_in_the_schedulers_words() {
        let unschedulable = json!({"phase": "Pending", "conditions": [{
            "type": "PodScheduled", "status": "False", "reason": "Unschedulable",
            "message": "0/1 nodes are available: 1 Insufficient nvidia.com/gpu."
        }]});
        assert_eq!(
            pending_reason(&pod(unschedulable)),
            "Unschedulable: 0/1 nodes are available: 1 Insufficient nvidia.com/gpu."
        );
        assert_eq!(
            pending_reason(&pod(waiting("ContainerCreating", ""))),
            "ContainerCreating"
        );
        assert_eq!(pending_reason(&pod(json!({"phase": "Pending"}))), "Pending");
    }
}
