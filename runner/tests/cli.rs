//! The `kiln` binary end to end: arguments in, text and exit code out.

use std::path::PathBuf;
use std::process::{Command, Output};

fn testdata(rel: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../testdata")
        .join(rel)
}

fn kiln(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_kiln"))
        .args(args)
        .output()
        .expect("kiln runs")
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

#[test]
fn validate_prints_the_dag_in_topological_order() {
    let file = testdata("quickstart/kiln.yaml");
    let out = kiln(&["validate", file.to_str().unwrap()]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let stdout = text(&out.stdout);
    let lines: Vec<&str> = stdout.lines().collect();
    assert!(lines[0].starts_with("pipeline quickstart"), "{stdout}");
    assert!(lines[1].trim_start().starts_with("1. load"), "{stdout}");
    let pos = |name: &str| stdout.find(&format!(". {name}")).unwrap();
    assert!(pos("load") < pos("featurize") && pos("load") < pos("validate"));
    assert!(pos("featurize") < pos("train") && pos("validate") < pos("train"));
    assert!(
        stdout.contains("train      <- featurize, validate"),
        "{stdout}"
    );
}

#[test]
fn validate_json_lists_steps_with_upstream() {
    let file = testdata("quickstart/kiln.yaml");
    let out = kiln(&["validate", "--json", file.to_str().unwrap()]);
    assert!(out.status.success());
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["pipeline"], "quickstart");
    assert_eq!(v["steps"][3]["name"], "train");
    assert_eq!(
        v["steps"][3]["upstream"],
        serde_json::json!(["featurize", "validate"])
    );
}

#[test]
fn validate_step_prints_effective_settings() {
    let file = testdata("quickstart/kiln.yaml");
    let out = kiln(&["validate", file.to_str().unwrap(), "--step", "train"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["docker"]["requirements"], "requirements-train.txt");
    assert_eq!(v["kubernetes"]["max_parallelism"], 2);
    assert_eq!(
        v["kubernetes"]["pod_settings"]["labels"]["team"],
        "ml-platform"
    );
    assert_eq!(
        v["kubernetes"]["pod_settings"]["resources"]["requests"]["cpu"],
        "500m"
    );
}

#[test]
fn validate_rejects_a_bad_file_with_its_position() {
    let file = testdata("bad/cycle.yaml");
    let out = kiln(&["validate", file.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(1));
    let stderr = text(&out.stderr);
    assert!(
        stderr.contains("cycle.yaml:4:11: the steps form a cycle: a -> c -> b -> a"),
        "{stderr}"
    );
    assert!(out.stdout.is_empty());
}

#[test]
fn validate_unknown_step_names_the_known_ones() {
    let file = testdata("quickstart/kiln.yaml");
    let out = kiln(&["validate", file.to_str().unwrap(), "--step", "tain"]);
    assert_eq!(out.status.code(), Some(1));
    let stderr = text(&out.stderr);
    assert!(stderr.contains("unknown step \"tain\""), "{stderr}");
    assert!(stderr.contains("train"), "{stderr}");
}

#[test]
fn validate_missing_file_is_a_clear_error() {
    let out = kiln(&["validate", "/nonexistent/kiln.yaml"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(text(&out.stderr).contains("cannot read pipeline file /nonexistent/kiln.yaml"));
}

#[test]
fn kubernetes_without_a_usable_kubeconfig_is_a_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    let pipeline =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../testdata/quickstart/kiln.yaml");
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_kiln"))
        .args(["run", "--on", "kubernetes", "--pipeline"])
        .arg(&pipeline)
        .args(["--context", "nowhere"])
        .env("KUBECONFIG", dir.path().join("missing-kubeconfig"))
        .env("HOME", dir.path())
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1), "{}", text(&out.stderr));
    let err = text(&out.stderr);
    assert!(
        err.contains("connecting to the Kubernetes cluster") && err.contains("kubeconfig"),
        "{err}"
    );
    assert!(err.contains("\"nowhere\""), "names the context: {err}");
}

#[test]
fn completions_and_version() {
    let out = kiln(&["completions", "bash"]);
    assert!(out.status.success());
    assert!(text(&out.stdout).contains("_kiln"));
    let out = kiln(&["--version"]);
    assert_eq!(
        text(&out.stdout).trim(),
        format!("kiln {}", env!("CARGO_PKG_VERSION"))
    );
}

#[test]
fn cache_ls_and_prune_work_on_an_empty_cache() {
    let dir = tempfile::tempdir().unwrap();
    let cache = dir.path().join("cache");
    let out = kiln(&["cache", "ls", "--cache-dir", cache.to_str().unwrap()]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(
        text(&out.stdout).contains("0 cached layers"),
        "{}",
        text(&out.stdout)
    );
    let out = kiln(&[
        "cache",
        "prune",
        "--all",
        "--cache-dir",
        cache.to_str().unwrap(),
    ]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(
        text(&out.stdout).contains("removed 0 entries"),
        "{}",
        text(&out.stdout)
    );
}
