//! `kiln schedules` against the test cluster (a real API server and
//! controller-manager, see `kiln_testsupport::cluster`): schedules made
//! with the library's `apply_schedule`, as `kiln run --schedule` makes them,
//! then listed, changed and deleted by the `kiln` binary and judged with
//! kubectl. The CronJobs tick on 1 January only, so no Job starts while a
//! test runs.

#![allow(clippy::too_many_lines)] // a test reads best as one list of steps
#![allow(clippy::unwrap_used)] // test helpers: a failure is a test failure

use std::path::Path;
use std::process::{Command, Output};
use std::time::{Duration, Instant};

use k8s_openapi::api::batch::v1::CronJob;
use kiln_pipeline::{ConcurrencyPolicy, KubernetesSettings};
use kiln_runner::k8s::job::{CronSpec, OrchestratorJob, orchestrator_cronjob};
use kiln_runner::k8s::plan::RunPlan;
use kiln_runner::k8s::schedules::{Applied, apply_schedule};
use kiln_testsupport::cluster::Cluster;
use serde_json::Value;

/// A tick that will not come during a test.
const FAR: &str = "0 0 1 1 *";

/// Pipeline `pipeline`'s schedule CronJob in `namespace`, as `kiln run
/// --schedule` builds it (the image never has to run).
fn cronjob(pipeline: &str, namespace: &str, cron: &str, concurrency: ConcurrencyPolicy) -> CronJob {
    let plan = RunPlan {
        run_id: None,
        file: "kiln.yaml".into(),
        pipeline: format!("name: {pipeline}\n"),
        images: [(
            "a".to_string(),
            "127.0.0.1:5000/kiln/a@sha256:00".to_string(),
        )]
        .into(),
        namespace: namespace.into(),
        pull_secrets: Vec::new(),
    };
    let settings = KubernetesSettings::defaults();
    orchestrator_cronjob(
        &OrchestratorJob {
            pipeline,
            plan: &plan,
            image: "127.0.0.1:5000/kiln/orchestrator@sha256:11",
            settings: &settings,
            service_account: "kiln-service-account",
        },
        &CronSpec {
            cron: cron.into(),
            concurrency,
            starting_deadline_seconds: None,
            successful_jobs_history_limit: None,
            failed_jobs_history_limit: None,
        },
    )
    .unwrap()
}

fn apply(cluster: &Cluster, namespace: &str, cronjob: &CronJob) -> Applied {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        let client = cluster.client().await;
        apply_schedule(&client, namespace, cronjob)
            .await
            .unwrap_or_else(|e| panic!("apply_schedule: {e}"))
    })
}

/// The `kiln` binary against the cluster, in `dir` (no `kiln.yaml` there
/// unless a test writes one).
fn kiln(cluster: &Cluster, dir: &Path, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_kiln"))
        .args(args)
        .current_dir(dir)
        .env("KUBECONFIG", cluster.kubeconfig())
        .output()
        .expect("kiln runs")
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// `kiln ARGS`, which must exit 0; its standard output.
fn kiln_ok(cluster: &Cluster, dir: &Path, args: &[&str]) -> String {
    let out = kiln(cluster, dir, args);
    assert!(
        out.status.success(),
        "kiln {args:?}: {}\n{}{}",
        out.status,
        text(&out.stdout),
        text(&out.stderr)
    );
    text(&out.stdout)
}

/// `kiln ARGS`, which must exit 1 saying `needle`.
fn kiln_fails(cluster: &Cluster, dir: &Path, args: &[&str], needle: &str) {
    let out = kiln(cluster, dir, args);
    let stderr = text(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "kiln {args:?}: {stderr}");
    assert!(
        stderr.contains(needle),
        "kiln {args:?}: wanted {needle:?} in:\n{stderr}"
    );
}

/// `kubectl get cronjob NAME -o OUTPUT`.
fn get_cronjob(cluster: &Cluster, ns: &str, name: &str, output: &str) -> String {
    let args = ["get", "cronjobs.v1.batch", name, "-n", ns, "-o", output];
    cluster.kubectl_ok(&args).stdout
}

fn schedule_of(cluster: &Cluster, ns: &str, name: &str) -> String {
    get_cronjob(cluster, ns, name, "jsonpath={.spec.schedule}")
}

fn cronjobs(cluster: &Cluster, ns: &str) -> String {
    let out = cluster.kubectl_ok(&["get", "cronjobs.v1.batch", "-n", ns, "-o", "name"]);
    out.stdout.trim().to_string()
}

fn tempdir() -> tempfile::TempDir {
    tempfile::tempdir().unwrap()
}

#[test]
fn kiln_schedules_lists_updates_and_deletes_a_schedule() {
    let Some(cluster) = Cluster::get() else {
        return;
    };
    let ns = cluster.fresh_namespace("sched");
    let dir = tempdir();
    let d = dir.path();
    let applied = apply(
        cluster,
        &ns,
        &cronjob("train", &ns, FAR, ConcurrencyPolicy::Forbid),
    );
    assert_eq!(applied, Applied::Created);

    // list: the table, and the same as JSON.
    let table = kiln_ok(cluster, d, &["schedules", "list", "--namespace", &ns]);
    let lines: Vec<&str> = table.lines().collect();
    assert_eq!(lines.len(), 2, "{table}");
    assert!(lines[0].starts_with("NAME "), "{table}");
    let row: Vec<&str> = lines[1]
        .split("  ")
        .map(str::trim)
        .filter(|c| !c.is_empty())
        .collect();
    assert_eq!(
        row,
        ["kiln-train", "train", FAR, "no", "Forbid", "-", "0"],
        "{table}"
    );
    let json = kiln_ok(cluster, d, &["--json", "schedules", "list", "-n", &ns]);
    let list: Value = serde_json::from_str(&json).unwrap();
    assert_eq!(
        list,
        serde_json::json!([{
            "name": "kiln-train",
            "namespace": ns,
            "pipeline": "train",
            "cron": FAR,
            "suspend": false,
            "concurrency_policy": "Forbid",
            "last_schedule_time": null,
            "active": 0,
        }])
    );

    // The namespace may come from the pipeline file, given or found as
    // kiln.yaml; a file given must be there.
    let pipeline = format!(
        "name: train\norchestrator:\n  kubernetes:\n    kubernetes_namespace: {ns}\nsteps:\n  - name: a\n    command: [\"true\"]\n"
    );
    let other = tempdir();
    let file = other.path().join("p.yaml");
    std::fs::write(&file, &pipeline).unwrap();
    let given = file.to_str().unwrap();
    let listed = kiln_ok(cluster, d, &["schedules", "list", "--pipeline", given]);
    assert!(listed.contains("kiln-train"), "{listed}");
    std::fs::write(other.path().join("kiln.yaml"), &pipeline).unwrap();
    let listed = kiln_ok(cluster, other.path(), &["schedules", "list"]);
    assert!(listed.contains("kiln-train"), "{listed}");
    kiln_fails(
        cluster,
        d,
        &["schedules", "list", "--pipeline", "absent.yaml"],
        "cannot read pipeline file absent.yaml",
    );

    // update: by the CronJob's name, and by the pipeline's.
    let out = kiln_ok(
        cluster,
        d,
        &[
            "schedules",
            "update",
            "kiln-train",
            "--cron",
            "*/5 * * * *",
            "-n",
            &ns,
        ],
    );
    assert!(out.contains("*/5 * * * *"), "{out}");
    assert_eq!(schedule_of(cluster, &ns, "kiln-train"), "*/5 * * * *");
    kiln_ok(
        cluster,
        d,
        &["schedules", "update", "train", "--cron", FAR, "-n", &ns],
    );
    assert_eq!(schedule_of(cluster, &ns, "kiln-train"), FAR);

    // A bad expression is named and changes nothing.
    for (cron, needle) in [
        ("61 * * * *", "invalid cron expression \"61 * * * *\""),
        ("* * * *", "expected 5 fields"),
    ] {
        let args = [
            "schedules",
            "update",
            "kiln-train",
            "--cron",
            cron,
            "-n",
            &ns,
        ];
        kiln_fails(cluster, d, &args, needle);
        kiln_fails(cluster, d, &args, "schedule kiln-train not changed");
        assert_eq!(schedule_of(cluster, &ns, "kiln-train"), FAR);
    }
    kiln_fails(
        cluster,
        d,
        &["schedules", "update", "nightly", "--cron", FAR, "-n", &ns],
        &format!("no schedule nightly in namespace {ns} (kiln schedules list)"),
    );

    // delete: gone, and a second delete says so.
    let out = kiln_ok(
        cluster,
        d,
        &["schedules", "delete", "kiln-train", "-n", &ns],
    );
    assert!(out.contains("deleted schedule kiln-train"), "{out}");
    assert_eq!(cronjobs(cluster, &ns), "");
    kiln_fails(
        cluster,
        d,
        &["schedules", "delete", "kiln-train", "-n", &ns],
        &format!("no schedule kiln-train in namespace {ns} (kiln schedules list)"),
    );
    let empty = kiln_ok(cluster, d, &["schedules", "list", "-n", &ns]);
    assert_eq!(empty.trim(), format!("no schedules in namespace {ns}"));
    let empty = kiln_ok(cluster, d, &["--json", "schedules", "list", "-n", &ns]);
    assert_eq!(
        serde_json::from_str::<Value>(&empty).unwrap(),
        serde_json::json!([])
    );
    cluster.delete_namespace(&ns);
}

#[test]
fn applying_a_schedule_again_updates_it() {
    let Some(cluster) = Cluster::get() else {
        return;
    };
    let ns = cluster.fresh_namespace("sched-apply");
    let first = cronjob("etl", &ns, FAR, ConcurrencyPolicy::Forbid);
    assert_eq!(apply(cluster, &ns, &first), Applied::Created);
    let second = cronjob("etl", &ns, "0 0 2 1 *", ConcurrencyPolicy::Replace);
    assert_eq!(apply(cluster, &ns, &second), Applied::Updated);
    assert_eq!(apply(cluster, &ns, &second), Applied::Updated);
    assert_eq!(cronjobs(cluster, &ns), "cronjob.batch/kiln-etl");
    let got: Value = serde_json::from_str(&get_cronjob(cluster, &ns, "kiln-etl", "json")).unwrap();
    assert_eq!(got["spec"]["schedule"], "0 0 2 1 *", "{got}");
    assert_eq!(got["spec"]["concurrencyPolicy"], "Replace", "{got}");
    assert_eq!(got["metadata"]["labels"]["kiln.dev/role"], "orchestrator");
    cluster.delete_namespace(&ns);
}

#[test]
fn deleting_a_schedule_deletes_its_jobs() {
    let Some(cluster) = Cluster::get() else {
        return;
    };
    let ns = cluster.fresh_namespace("sched-jobs");
    apply(
        cluster,
        &ns,
        &cronjob("train", &ns, FAR, ConcurrencyPolicy::Allow),
    );
    // A Job as the CronJob controller makes one: owned by the CronJob.
    let uid = get_cronjob(cluster, &ns, "kiln-train", "jsonpath={.metadata.uid}");
    let job = serde_json::json!({
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": {
            "name": "kiln-train-1",
            "ownerReferences": [{
                "apiVersion": "batch/v1", "kind": "CronJob", "name": "kiln-train",
                "uid": uid, "controller": true, "blockOwnerDeletion": true,
            }],
        },
        "spec": {"backoffLimit": 0, "template": {"spec": {
            "restartPolicy": "Never",
            "containers": [{"name": "main", "image": "127.0.0.1:5000/none:latest"}],
        }}},
    });
    cluster.kubectl_stdin_ok(&["create", "-n", &ns, "-f", "-"], &job.to_string());
    let dir = tempdir();
    kiln_ok(
        cluster,
        dir.path(),
        &["schedules", "delete", "train", "-n", &ns],
    );
    assert_eq!(cronjobs(cluster, &ns), "");
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let jobs = cluster
            .kubectl_ok(&["get", "jobs.v1.batch", "-n", &ns, "-o", "name"])
            .stdout;
        if jobs.trim().is_empty() {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the schedule's Job outlived it by 60 s: {jobs}"
        );
        std::thread::sleep(Duration::from_millis(500));
    }
    cluster.delete_namespace(&ns);
}

#[test]
fn a_cronjob_kiln_did_not_make_is_left_alone() {
    let Some(cluster) = Cluster::get() else {
        return;
    };
    let ns = cluster.fresh_namespace("sched-theirs");
    let theirs = serde_json::json!({
        "apiVersion": "batch/v1",
        "kind": "CronJob",
        "metadata": {"name": "kiln-theirs"},
        "spec": {"schedule": FAR, "jobTemplate": {"spec": {"template": {"spec": {
            "restartPolicy": "Never",
            "containers": [{"name": "main", "image": "127.0.0.1:5000/none:latest"}],
        }}}}},
    });
    cluster.kubectl_stdin_ok(&["create", "-n", &ns, "-f", "-"], &theirs.to_string());
    let dir = tempdir();
    let d = dir.path();
    let listed = kiln_ok(cluster, d, &["schedules", "list", "-n", &ns]);
    assert_eq!(listed.trim(), format!("no schedules in namespace {ns}"));
    let refused = format!("CronJob kiln-theirs in namespace {ns} was not made by kiln");
    kiln_fails(
        cluster,
        d,
        &["schedules", "delete", "kiln-theirs", "-n", &ns],
        &refused,
    );
    kiln_fails(
        cluster,
        d,
        &[
            "schedules",
            "update",
            "theirs",
            "--cron",
            "*/5 * * * *",
            "-n",
            &ns,
        ],
        &refused,
    );
    assert_eq!(schedule_of(cluster, &ns, "kiln-theirs"), FAR);
    // Nor does `kiln run --schedule` of a pipeline `theirs` take it over.
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let err = runtime.block_on(async {
        let client = cluster.client().await;
        let mine = cronjob("theirs", &ns, "*/5 * * * *", ConcurrencyPolicy::Allow);
        apply_schedule(&client, &ns, &mine).await.unwrap_err()
    });
    assert!(err.to_string().contains(&refused), "{err}");
    assert_eq!(schedule_of(cluster, &ns, "kiln-theirs"), FAR);
    cluster.delete_namespace(&ns);
}
