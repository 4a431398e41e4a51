use std::path::PathBuf;

use kiln_pipeline::Pipeline;

use super::*;

fn testdata(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../testdata/k8s")
        .join(name)
}

fn settings(step: &str) -> KubernetesSettings {
    let path = testdata("pod-settings.yaml");
    let pipeline = crate::pipeline_file::load(&path).unwrap_or_else(|e| panic!("{e}"));
    pipeline.effective(step).unwrap().kubernetes
}

fn pod(settings: &KubernetesSettings) -> Result<Pod, PodError> {
    step_pod(&StepPod {
        namespace: "kiln",
        pipeline: "golden",
        run: "c1cc3b6f",
        step: "train_model",
        attempt: 2,
        image: "127.0.0.1:5000/kiln/golden@sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef",
        command: vec!["python3".into(), "train.py".into()],
        env: vec![
            ("EPOCHS".into(), "3".into()),
            ("KILN_RUN_ID".into(), "c1cc3b6f".into()),
        ],
        settings,
        owner: Some(Owner {
            api_version: "batch/v1".into(),
            kind: "Job".into(),
            name: "gold-orchestrator-c1cc3b6f".into(),
            uid: "6f1c9a52-0000-4000-8000-000000000001".into(),
        }),
    })
}

/// Every pod setting lands where Kubernetes wants it; the step's own
/// settings win field by field. Set KILN_UPDATE_GOLDEN=1 to rewrite the
/// golden file after a deliberate change, and review the diff.
#[test]
fn the_step_pod_matches_the_golden_manifest() {
    let pod = pod(&settings("train_model")).unwrap();
    let text = serde_json::to_string_pretty(&pod).unwrap() + "\n";
    let golden = testdata("step-pod.golden.json");
    if std::env::var_os("KILN_UPDATE_GOLDEN").is_some() {
        std::fs::write(&golden, &text).unwrap();
    }
    let want = std::fs::read_to_string(&golden).unwrap();
    assert_eq!(text, want, "the step pod differs from {}", golden.display());
}

#[test]
fn a_setting_of_the_wrong_shape_fails_before_the_api_server() {
    let text = std::fs::read_to_string(testdata("pod-settings.yaml")).unwrap();
    let start = text.find("      affinity:").unwrap();
    let end = text.find("      tolerations:").unwrap();
    let bad = format!(
        "{}      affinity: {{nodeAffinity: 5}}\n{}",
        &text[..start],
        &text[end..]
    );
    let pipeline = Pipeline::parse(&bad, "bad.yaml").unwrap_or_else(|e| panic!("{e}"));
    let s = pipeline.effective("train_model").unwrap().kubernetes;
    let err = pod(&s).unwrap_err();
    assert_eq!(err.setting, "pod_settings", "{err}");
    assert!(
        err.to_string().contains("shape Kubernetes expects"),
        "{err}"
    );
}

#[test]
fn without_settings_the_pod_is_minimal_and_never_restarts() {
    let s = KubernetesSettings::default();
    let pod = pod(&s).unwrap();
    let spec = pod.spec.unwrap();
    assert_eq!(spec.restart_policy.as_deref(), Some("Never"));
    assert_eq!(spec.containers.len(), 1);
    assert!(spec.containers[0].security_context.is_none());
    let labels = pod.metadata.labels.unwrap();
    assert_eq!(labels["step"], "train_model");
    assert_eq!(labels["run"], "c1cc3b6f");
    assert_eq!(
        pod.metadata.name.as_deref(),
        Some("golden-train-model-c1cc3b6f-a2")
    );
}
