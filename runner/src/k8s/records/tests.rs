use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde_json::{Value, json};

use super::*;

/// 2026-01-01T00:00:00Z plus `secs`.
fn at(secs: u64) -> SystemTime {
    UNIX_EPOCH + Duration::from_secs(1_767_225_600 + secs)
}

fn rfc3339(secs: u64) -> String {
    crate::records::format_rfc3339(at(secs))
}

fn job(annotations: Value, status: Value) -> Job {
    serde_json::from_value(json!({
        "metadata": {"name": "kiln-quickstart-c1cc3b6f", "namespace": "ml",
                     "annotations": annotations},
        "status": status,
    }))
    .unwrap()
}

fn steps_annotation(steps: Value) -> String {
    steps.to_string()
}

/// A step pod of `run` as kiln makes them, created at `created`.
fn pod(name: &str, run: &str, step: &str, attempt: u32, created: u64, status: Value) -> Pod {
    serde_json::from_value(json!({
        "metadata": {
            "name": name,
            "creationTimestamp": rfc3339(created),
            "labels": {"run": run, "step": step},
            "annotations": {
                "kiln.dev/run-id": run, "kiln.dev/step": step,
                "kiln.dev/attempt": attempt.to_string(),
            },
        },
        "status": status,
    }))
    .unwrap()
}

fn terminated(phase: &str, code: i32, reason: &str, finished: u64) -> Value {
    json!({"phase": phase, "containerStatuses": [{
        "name": "main", "image": "i", "imageID": "", "ready": false, "restartCount": 0,
        "state": {"terminated": {"exitCode": code, "reason": reason,
                                 "finishedAt": rfc3339(finished)}},
    }]})
}

const RUN: &str = "c1cc3b6f";

#[test]
fn a_running_job_and_its_pods_say_how_each_step_stands() {
    let job = job(
        json!({
            "kiln.dev/status": "running",
            "kiln.dev/started": rfc3339(0),
            "kiln.dev/steps": steps_annotation(json!({
                "load": {"status": "succeeded", "attempts": 1, "exit_code": 0},
                "train": {"status": "retrying", "attempts": 2, "reason": "exit code 3"},
            })),
        }),
        json!({"active": 1}),
    );
    let unschedulable = json!({"phase": "Pending", "conditions": [{
        "type": "PodScheduled", "status": "False", "reason": "Unschedulable",
        "message": "0/1 nodes are available: 1 Insufficient nvidia.com/gpu."
    }]});
    let orchestrator: Pod = serde_json::from_value(json!({
        "metadata": {"name": "kiln-quickstart-c1cc3b6f-x7k2p", "creationTimestamp": rfc3339(0),
                     "labels": {"run": RUN, "kiln.dev/role": "orchestrator"},
                     "annotations": {"kiln.dev/run-id": RUN}},
    }))
    .unwrap();
    let pods = [
        orchestrator,
        pod(
            "q-load-a1",
            RUN,
            "load",
            1,
            1,
            terminated("Succeeded", 0, "Completed", 5),
        ),
        pod("q-train-a2", RUN, "train", 2, 20, unschedulable.clone()),
        pod(
            "q-train-a1",
            RUN,
            "train",
            1,
            6,
            terminated("Failed", 3, "Error", 12),
        ),
        // Another run whose id shares the label: told apart by the annotation.
        pod(
            "other-load-a1",
            "c1cc3b6f0",
            "load",
            1,
            1,
            json!({"phase": "Running"}),
        ),
        // A step the annotation does not list yet.
        pod("q-eval-a1", RUN, "eval", 1, 30, json!({"phase": "Running"})),
    ];

    let observed = observe(RUN, &job, &pods).unwrap();
    assert_eq!(observed.status, Some(RunStatus::Running));
    assert_eq!(observed.ended, None);
    assert_eq!(observed.reason, None);
    let attempt = |number,
                   status,
                   started,
                   ended: Option<u64>,
                   exit_code,
                   reason: Option<&str>,
                   name: &str| {
        ObservedAttempt {
            number,
            status,
            started: at(started),
            ended: ended.map(at),
            exit_code,
            reason: reason.map(str::to_owned),
            log_path: format!("pod/{name}").into(),
        }
    };
    assert_eq!(
        observed.steps,
        [
            ObservedStep {
                name: "eval".into(),
                status: None,
                reason: None,
                attempts: vec![attempt(
                    1,
                    AttemptStatus::Running,
                    30,
                    None,
                    None,
                    None,
                    "q-eval-a1"
                )],
            },
            ObservedStep {
                name: "load".into(),
                status: Some(StepStatus::Succeeded),
                reason: None,
                attempts: vec![attempt(
                    1,
                    AttemptStatus::Succeeded,
                    1,
                    Some(5),
                    Some(0),
                    None,
                    "q-load-a1"
                )],
            },
            ObservedStep {
                name: "train".into(),
                status: Some(StepStatus::Retrying),
                reason: Some("exit code 3".into()),
                attempts: vec![
                    attempt(
                        1,
                        AttemptStatus::Failed,
                        6,
                        Some(12),
                        Some(3),
                        Some("exit code 3"),
                        "q-train-a1"
                    ),
                    attempt(
                        2,
                        AttemptStatus::Running,
                        20,
                        None,
                        None,
                        Some(
                            "Unschedulable: 0/1 nodes are available: 1 Insufficient nvidia.com/gpu."
                        ),
                        "q-train-a2"
                    ),
                ],
            },
        ]
    );
}

#[test]
fn a_job_without_annotations_yet_says_nothing_about_the_run() {
    let observed = observe(RUN, &job(json!({}), json!({})), &[]).unwrap();
    assert_eq!(observed, ObservedRun::default());
}

#[test]
fn a_final_status_ends_the_run_when_the_orchestrator_says() {
    let finished = job(
        json!({"kiln.dev/status": "timed-out", "kiln.dev/finished": rfc3339(90)}),
        json!({"completionTime": rfc3339(95)}),
    );
    let observed = observe(RUN, &finished, &[]).unwrap();
    assert_eq!(observed.status, Some(RunStatus::TimedOut));
    assert_eq!(observed.ended, Some(at(90)));

    // Without `finished`, the Job's own completion time.
    let completed = job(
        json!({"kiln.dev/status": "succeeded"}),
        json!({"completionTime": rfc3339(95), "conditions": [
            {"type": "Complete", "status": "True"}
        ]}),
    );
    let observed = observe(RUN, &completed, &[]).unwrap();
    assert_eq!(observed.status, Some(RunStatus::Succeeded));
    assert_eq!(observed.ended, Some(at(95)));
}

#[test]
fn a_finished_job_whose_run_still_runs_interrupts_it() {
    let failed = job(
        json!({"kiln.dev/status": "running"}),
        json!({"conditions": [{"type": "Failed", "status": "True",
            "reason": "BackoffLimitExceeded", "message": "Job has reached the specified backoff limit"}]}),
    );
    let observed = observe(RUN, &failed, &[]).unwrap();
    assert_eq!(observed.status, Some(RunStatus::Interrupted));
    assert_eq!(
        observed.reason.as_deref(),
        Some(
            "the orchestrator Job failed (BackoffLimitExceeded: Job has reached the specified \
             backoff limit) before the run ended"
        )
    );
    // Never started at all: the same.
    let never = job(
        json!({}),
        json!({"conditions": [{"type": "Failed", "status": "True", "reason": "DeadlineExceeded"}]}),
    );
    assert_eq!(
        observe(RUN, &never, &[]).unwrap().status,
        Some(RunStatus::Interrupted)
    );
    // A condition that is not true yet means nothing.
    let not_yet = job(
        json!({"kiln.dev/status": "running"}),
        json!({"conditions": [{"type": "Failed", "status": "False"}]}),
    );
    assert_eq!(
        observe(RUN, &not_yet, &[]).unwrap().status,
        Some(RunStatus::Running)
    );
}

#[test]
fn a_pod_being_deleted_cancels_its_attempt_unless_it_ended() {
    let mut deleting = pod("q-load-a1", RUN, "load", 1, 1, json!({"phase": "Running"}));
    deleting.metadata.deletion_timestamp = Some(Time(
        k8s_openapi::chrono::DateTime::from_timestamp(1_767_225_700, 0).unwrap(),
    ));
    let mut ended = pod(
        "q-train-a1",
        RUN,
        "train",
        1,
        1,
        terminated("Failed", 137, "OOMKilled", 4),
    );
    ended.metadata.deletion_timestamp = deleting.metadata.deletion_timestamp.clone();
    let observed = observe(RUN, &job(json!({}), json!({})), &[deleting, ended]).unwrap();
    let load = &observed.steps[0].attempts[0];
    assert_eq!(load.status, AttemptStatus::Cancelled);
    assert_eq!(load.reason.as_deref(), Some("its pod was deleted"));
    let train = &observed.steps[1].attempts[0];
    assert_eq!(train.status, AttemptStatus::Failed);
    assert_eq!(train.reason.as_deref(), Some("OOMKilled (exit code 137)"));
    assert_eq!(train.exit_code, Some(137));
}

#[test]
fn annotations_this_kiln_cannot_read_are_errors_naming_them() {
    let cases = [
        (json!({"kiln.dev/status": "paused"}), ANNOTATION_STATUS),
        (
            json!({"kiln.dev/status": "failed", "kiln.dev/finished": "yesterday"}),
            ANNOTATION_FINISHED,
        ),
        (json!({"kiln.dev/steps": "{not json"}), ANNOTATION_STEPS),
        (
            json!({"kiln.dev/steps": steps_annotation(json!({"load": {"status": "dozing"}}))}),
            ANNOTATION_STEPS,
        ),
    ];
    for (annotations, key) in cases {
        match observe(RUN, &job(annotations.clone(), json!({})), &[]) {
            Err(AnnotationError {
                annotation, job, ..
            }) => {
                assert_eq!(annotation, key, "{annotations}");
                assert_eq!(job, "kiln-quickstart-c1cc3b6f");
            }
            other => panic!("{annotations}: expected an annotation error, got {other:?}"),
        }
    }
}

#[test]
fn times_keep_their_nanoseconds() {
    let t = parse_time("2026-01-01T00:00:01.250Z").unwrap();
    assert_eq!(t, at(1) + Duration::from_millis(250));
    assert_eq!(
        parse_time("1969-12-31T23:59:59Z"),
        Some(UNIX_EPOCH - Duration::from_secs(1))
    );
    assert_eq!(parse_time("not a time"), None);
}

#[test]
fn recording_an_observation_twice_changes_nothing() {
    use crate::records::{NewRun, NewStep};
    let dir = tempfile::tempdir().unwrap();
    let records = Records::open(dir.path()).unwrap();
    let mut child = std::process::Command::new("true").spawn().unwrap();
    let gone_pid = child.id();
    child.wait().unwrap();
    let step = |name: &str| NewStep {
        name: name.into(),
        image: None,
        upstream: Vec::new(),
    };
    let id = records
        .create_run(&NewRun {
            pipeline: "quickstart".into(),
            file: "/p/kiln.yaml".into(),
            run_dir: "/r".into(),
            log_dir: "/l".into(),
            steps: vec![step("load"), step("train")],
            retry_of: None,
            started: at(0),
            pid: gone_pid,
        })
        .unwrap();
    let job = job(
        json!({
            "kiln.dev/status": "failed",
            "kiln.dev/finished": rfc3339(40),
            "kiln.dev/steps": steps_annotation(json!({
                "load": {"status": "failed", "attempts": 1, "reason": "exit code 3"},
            })),
        }),
        json!({}),
    );
    let pods = [pod(
        "q-load-a1",
        &id,
        "load",
        1,
        1,
        terminated("Failed", 3, "Error", 5),
    )];
    let observed = observe(&id, &job, &pods).unwrap();
    records.record_observed(&id, &observed).unwrap();
    let once = records.run(&id).unwrap();
    records.record_observed(&id, &observed).unwrap();
    assert_eq!(records.run(&id).unwrap(), once);
    assert_eq!(once.status, RunStatus::Failed);
    assert_eq!(once.ended, Some(at(40)));
    assert_eq!(
        once.steps[0].attempts[0].log_path.to_str(),
        Some("pod/q-load-a1")
    );
    assert_eq!(once.steps[1].status, StepStatus::Cancelled);
}
