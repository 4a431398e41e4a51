//! Unit tests of parsing, validation messages and the settings hierarchy.

use super::*;

fn parse(src: &str) -> Result<Pipeline> {
    Pipeline::parse(src, "kiln.yaml")
}

fn diagnostics(src: &str) -> Vec<Diagnostic> {
    match parse(src) {
        Err(PipelineError::Invalid { diagnostics, .. }) => diagnostics,
        other => panic!("expected invalid pipeline, got {other:?}"),
    }
}

const DIAMOND: &str = "\
name: demo
settings:
  docker:
    parent_image: 127.0.0.1:5000/base/python:3.11-bookworm
    environment: {A: pipeline}
  kubernetes:
    pod_failure_max_retries: 5
    pod_settings:
      labels: {team: ml}
      resources:
        requests: {cpu: '1'}
orchestrator:
  kubernetes:
    kubernetes_namespace: ml
    pod_startup_timeout: 120
steps:
  - name: train
    command: python3 train.py
    upstream: [featurize, validate]
    retry: {max_retries: 2, delay: 1.5}
    settings:
      docker:
        environment: {A: step}
      kubernetes:
        pod_startup_timeout: 30
        pod_settings:
          resources:
            limits: {nvidia.com/gpu: '1'}
  - name: featurize
    command: [python3, featurize.py]
    upstream: [load]
  - name: validate
    command: [python3, validate.py]
    upstream: [load]
  - name: load
    command: [python3, load.py]
";

#[test]
fn orders_steps_topologically() {
    let p = parse(DIAMOND).unwrap();
    let order: Vec<&str> = p.ordered_steps().map(|s| s.name.value.as_str()).collect();
    assert_eq!(order, ["load", "featurize", "validate", "train"]);
}

#[test]
fn step_settings_override_pipeline_which_override_orchestrator() {
    let p = parse(DIAMOND).unwrap();
    let train = p.effective("train").unwrap();
    // step wins over pipeline
    assert_eq!(train.docker.environment.unwrap().value["A"], "step");
    // step wins over orchestrator config
    assert_eq!(train.kubernetes.pod_startup_timeout.unwrap().value, 30);
    // orchestrator config wins over kiln's defaults
    assert_eq!(train.kubernetes.kubernetes_namespace.unwrap().value, "ml");
    // pipeline wins over defaults
    assert_eq!(train.kubernetes.pod_failure_max_retries.unwrap().value, 5);
    // defaults fill the rest
    assert_eq!(train.kubernetes.synchronous, Some(true));
    assert_eq!(train.docker.workdir.unwrap().value, "/app");
    // pod settings merge field by field, resources too
    let pod = train.kubernetes.pod_settings.unwrap();
    assert_eq!(pod.labels.unwrap().value["team"], "ml");
    let resources = pod.resources.unwrap();
    assert_eq!(resources.requests.unwrap().value["cpu"], "1");
    assert_eq!(resources.limits.unwrap().value["nvidia.com/gpu"], "1");
    // the step's retry policy wins; unset fields come from pod_failure_*
    assert_eq!(train.retry.max_retries, 2);
    assert_eq!(train.retry.delay_seconds, 1.5);
    assert_eq!(train.retry.backoff, 1.0);

    let load = p.effective("load").unwrap();
    assert_eq!(load.docker.environment.unwrap().value["A"], "pipeline");
    assert_eq!(load.kubernetes.pod_startup_timeout.unwrap().value, 120);
    assert_eq!(load.retry.max_retries, 5);
    assert_eq!(load.retry.delay_seconds, 10.0);
}

#[test]
fn unknown_step_lists_known_ones() {
    let p = parse(DIAMOND).unwrap();
    let err = p.effective("tran").unwrap_err().to_string();
    assert!(err.contains("unknown step \"tran\""), "{err}");
    assert!(err.contains("featurize"), "{err}");
}

#[test]
fn shell_command_runs_through_sh() {
    let p = parse(DIAMOND).unwrap();
    let argv = p.step("train").unwrap().command.value.argv();
    assert_eq!(argv, ["/bin/sh", "-c", "python3 train.py"]);
}

#[test]
fn reports_every_problem_in_file_order() {
    let d = diagnostics(
        "name: x\nsteps:\n  - name: a\n    command: [true]\n    upstream: [zz]\n  - name: a\n    command: [true]\n",
    );
    assert_eq!(d.len(), 2, "{d:?}");
    assert_eq!((d[0].line, d[0].column), (5, 16));
    assert!(d[0].message.contains("unknown upstream step \"zz\""));
    assert_eq!((d[1].line, d[1].column), (6, 11));
    assert!(d[1].message.contains("duplicate step name"));
}

#[test]
fn error_display_names_file_line_and_column() {
    let err = Pipeline::parse("name: x\nsteps: []\n", "dir/kiln.yaml").unwrap_err();
    assert_eq!(
        err.to_string(),
        "dir/kiln.yaml:2:8: expected at least one step under `steps`"
    );
}

#[test]
fn requests_above_limits_are_rejected() {
    let d = diagnostics(
        "name: x\nsettings:\n  kubernetes:\n    pod_settings:\n      resources:\n        requests: {memory: 2Gi}\n        limits: {memory: 1Gi}\nsteps:\n  - name: a\n    command: [true]\n",
    );
    assert!(
        d[0].message
            .contains("request for memory is above its limit"),
        "{d:?}"
    );
}

#[test]
fn dockerfile_and_parent_image_exclude_each_other() {
    let d = diagnostics(
        "name: x\nsettings:\n  docker:\n    dockerfile: Dockerfile\n    parent_image: python:3.11\nsteps:\n  - name: a\n    command: [true]\n",
    );
    assert!(
        d[0].message.contains("either dockerfile or parent_image"),
        "{d:?}"
    );
}

#[test]
fn object_fields_must_have_the_kubernetes_shape() {
    let d = diagnostics(
        "name: x\nsettings:\n  kubernetes:\n    pod_settings:\n      tolerations: {key: gpu}\nsteps:\n  - name: a\n    command: [true]\n",
    );
    assert!(
        d[0].message
            .contains("tolerations: expected a list of mappings"),
        "{d:?}"
    );
}

#[test]
fn effective_settings_serialize_without_spans() {
    let p = parse(DIAMOND).unwrap();
    let json = serde_json::to_value(p.effective("train").unwrap()).unwrap();
    assert_eq!(json["kubernetes"]["pod_startup_timeout"], 30);
    assert_eq!(
        json["docker"]["parent_image"],
        "127.0.0.1:5000/base/python:3.11-bookworm"
    );
}
