//! `kiln run --on kubernetes` on the test cluster, with real step
//! containers run by the node agent: the quickstart end to end, a failing
//! branch, an image the node cannot pull (and pulls with the image pull
//! secret kiln makes when asked), a pod that cannot be scheduled,
//! the orchestrator pod deleted mid-run, the API server restarted mid-run,
//! schedules, and the service account's rights.

#![allow(clippy::unwrap_used)] // test code: a failure is a test failure

use std::collections::BTreeMap;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use kiln_testsupport::cluster::Cluster;
use kiln_testsupport::fixture::{Fixture, unique_repo};
use kiln_testsupport::{Bench, RunOutput, wait_for};
use serde_json::Value;

const KILN: &str = env!("CARGO_BIN_EXE_kiln");

/// A copy of testdata/NAME pushing to a repository of its own, pointed at
/// the test cluster, the node agent running, and a fresh namespace.
struct Kube {
    f: Fixture,
    cluster: &'static Cluster,
    ns: String,
}

fn kube(name: &str) -> Option<Kube> {
    let cluster = Cluster::get()?;
    cluster.workspace_agent();
    let bench = Bench::get();
    let mut f = Fixture::copy(KILN, name);
    let repo = unique_repo(bench.registry(), &name.replace('/', "-"));
    f.point_at(bench.registry(), &repo);
    f.set_env("KUBECONFIG", cluster.kubeconfig());
    let ns = cluster.fresh_namespace("kiln-run");
    Some(Kube { f, cluster, ns })
}

impl Kube {
    fn run(&self, extra: &[&str]) -> RunOutput {
        let mut args = vec!["run", "--on", "kubernetes", "--namespace", &self.ns];
        args.extend_from_slice(extra);
        self.f.kiln(&args)
    }

    fn json(&self, args: &[&str]) -> Value {
        let mut all = args.to_vec();
        all.extend_from_slice(&["-n", &self.ns, "-o", "json"]);
        let out = self.cluster.kubectl_ok(&all);
        serde_json::from_str(&out.stdout).unwrap()
    }

    /// Step pods of the run: (step label, pod name, phase).
    fn step_pods(&self, pipeline: &str) -> Vec<(String, String, String)> {
        let pods = self.json(&["get", "pods", "-l", &format!("pipeline={pipeline}")]);
        let mut out: Vec<_> = pods["items"]
            .as_array()
            .unwrap()
            .iter()
            .map(|p| {
                (
                    p["metadata"]["labels"]["step"]
                        .as_str()
                        .unwrap_or_default()
                        .to_string(),
                    p["metadata"]["name"].as_str().unwrap().to_string(),
                    p["status"]["phase"]
                        .as_str()
                        .unwrap_or_default()
                        .to_string(),
                )
            })
            .collect();
        out.sort();
        out
    }

    /// The orchestrator Job's annotations.
    fn job_annotations(&self, job: &str) -> BTreeMap<String, String> {
        let j = self.json(&["get", "job", job]);
        serde_json::from_value(j["metadata"]["annotations"].clone()).unwrap_or_default()
    }

    /// Step name -> status, from the Job.
    fn step_statuses(&self, job: &str) -> BTreeMap<String, String> {
        let a = self.job_annotations(job);
        let steps: Value = serde_json::from_str(a.get("kiln.dev/steps").unwrap()).unwrap();
        steps
            .as_object()
            .unwrap()
            .iter()
            .map(|(k, v)| (k.clone(), v["status"].as_str().unwrap().to_string()))
            .collect()
    }
}

impl Drop for Kube {
    fn drop(&mut self) {
        if !std::thread::panicking() {
            self.cluster.delete_namespace(&self.ns);
        }
    }
}

/// The run id and Job kiln announces ("kiln: run ID of P submitted: Job J ...").
fn submitted(out: &RunOutput) -> (String, String) {
    let line = out
        .stderr
        .lines()
        .find(|l| l.contains(" submitted: Job "))
        .unwrap_or_else(|| panic!("no submission line in:\n{}", out.stderr));
    let id = line
        .strip_prefix("kiln: run ")
        .unwrap()
        .split(' ')
        .next()
        .unwrap();
    let job = line
        .split(" submitted: Job ")
        .nth(1)
        .unwrap()
        .split(' ')
        .next()
        .unwrap();
    (id.to_string(), job.to_string())
}

fn statuses(list: &[(&str, &str)]) -> BTreeMap<String, String> {
    list.iter()
        .map(|(a, b)| ((*a).to_string(), (*b).to_string()))
        .collect()
}

#[test]
fn the_quickstart_runs_end_to_end_one_pod_per_step_with_live_logs() {
    let Some(k) = kube("quickstart") else { return };
    // The test cluster has no shared storage: the run directory is a
    // hostPath volume every step pod mounts, as a PVC would be.
    let shared = tempfile::tempdir().unwrap();
    std::fs::set_permissions(
        shared.path(),
        std::os::unix::fs::PermissionsExt::from_mode(0o1777),
    )
    .unwrap();
    let dir = shared.path().to_str().unwrap().to_string();
    k.f.edit("kiln.yaml", |text| {
        text.replacen(
            "    pod_settings:\n      labels:\n        team: ml-platform\n",
            &format!(
                "    pod_settings:\n      labels:\n        team: ml-platform\n      volumes:\n        - {{name: run, hostPath: {{path: {dir}}}}}\n      volume_mounts:\n        - {{name: run, mountPath: /kiln/run}}\n"
            ),
            1,
        )
    });
    let out = k.run(&[]);
    assert_eq!(out.code, 0, "{}\n{}", out.stdout, out.stderr);
    // Every step's output, streamed with its prefix.
    for line in [
        "load      | load: wrote 500 rows",
        "validate  | validate: 500 rows ok",
        "train     | slope",
    ] {
        assert!(out.stdout.contains(line), "no {line:?} in:\n{}", out.stdout);
    }
    let (_, job) = submitted(&out);
    assert_eq!(k.job_annotations(&job)["kiln.dev/status"], "succeeded");
    // One pod per step, found by the pipeline label, each Succeeded and
    // labelled with the run and its step.
    let pods = k.step_pods("quickstart");
    let steps: Vec<&str> = pods.iter().map(|(s, _, _)| s.as_str()).collect();
    assert_eq!(
        steps,
        ["featurize", "load", "train", "validate"],
        "{pods:?}"
    );
    assert!(
        pods.iter().all(|(_, _, phase)| phase == "Succeeded"),
        "{pods:?}"
    );
    let pod = k.json(&["get", "pod", &pods[1].1]);
    let labels = &pod["metadata"]["labels"];
    assert_eq!(labels["team"], "ml-platform");
    assert_eq!(
        labels["run"],
        pod["metadata"]["annotations"]["kiln.dev/run-id"]
    );
    assert_eq!(
        pod["metadata"]["ownerReferences"][0]["name"], job,
        "step pods belong to the orchestrator Job"
    );
    assert!(
        pod["spec"]["containers"][0]["image"]
            .as_str()
            .unwrap()
            .contains("@sha256:"),
        "images are pinned by digest: {pod:#}"
    );
    // The steps shared files through the mounted run directory.
    assert!(shared.path().join("features.json").is_file());
    // The run's record, from the cluster: the same commands as a local run.
    let (id, _) = submitted(&out);
    let show = k.f.kiln(&["runs", "show", &id, "--json"]);
    assert_eq!(show.code, 0, "{}", show.stderr);
    let run: Value = serde_json::from_str(&show.stdout).unwrap();
    assert_eq!(run["status"], "succeeded", "{run:#}");
    assert_eq!(run["backend"], "kubernetes", "{run:#}");
    let steps = run["steps"].as_array().unwrap();
    assert_eq!(steps.len(), 4, "{run:#}");
    assert!(steps.iter().all(|s| s["status"] == "succeeded"), "{run:#}");
    let logs = k.f.kiln(&["logs", &id, "train"]);
    assert_eq!(logs.code, 0, "{}", logs.stderr);
    assert!(logs.stdout.contains("slope"), "{}", logs.stdout);
}

#[test]
fn a_failing_step_skips_its_downstream_while_the_sibling_branch_succeeds() {
    let Some(k) = kube("k8s/branches") else {
        return;
    };
    let out = k.run(&[]);
    assert_eq!(out.code, 1, "{}\n{}", out.stdout, out.stderr);
    assert!(
        out.stderr.contains("step broken failed: exit code 3"),
        "{}",
        out.stderr
    );
    let (_, job) = submitted(&out);
    assert_eq!(k.job_annotations(&job)["kiln.dev/status"], "failed");
    assert_eq!(
        k.step_statuses(&job),
        statuses(&[
            ("after_broken", "skipped"),
            ("broken", "failed"),
            ("prepare", "succeeded"),
            ("sibling", "succeeded"),
        ])
    );
    assert!(out.stdout.contains("| sibling: ran"), "{}", out.stdout);
    assert!(out.stdout.contains("broken: giving up"), "{}", out.stdout);
    // The skipped step never had a pod.
    let steps: Vec<String> = k
        .step_pods("k8s-branches")
        .into_iter()
        .map(|(s, _, _)| s)
        .collect();
    assert_eq!(steps, ["broken", "prepare", "sibling"]);
}

#[test]
fn an_image_the_node_cannot_pull_fails_its_step_within_seconds() {
    let Some(k) = kube("k8s/unpullable") else {
        return;
    };
    let bench = Bench::get();
    unpullable(&k);
    let started = Instant::now();
    let out = k.run(&["--registry-ca", bench.ca_cert().to_str().unwrap()]);
    let took = started.elapsed();
    assert_eq!(out.code, 1, "{}\n{}", out.stdout, out.stderr);
    assert!(
        out.stderr.contains("step private failed: ErrImagePull"),
        "{}",
        out.stderr
    );
    assert!(out.stdout.contains("fine: ran"), "{}", out.stdout);
    // Not after pod_startup_timeout (300 s), nor after retries.
    assert!(took < Duration::from_secs(120), "took {took:?}");
    let (_, job) = submitted(&out);
    let statuses = k.step_statuses(&job);
    assert_eq!(statuses["private"], "failed");
    assert_eq!(statuses["fine"], "succeeded");
}

/// testdata/k8s/unpullable with `private`'s image in the bench's TLS
/// registry, kiln given the credentials (docker config) and the CA; the
/// node has the CA (testsupport passes it), not the credentials.
fn unpullable(k: &Kube) {
    let bench = Bench::get();
    // `private`'s own target: the TLS registry (point_at moved every
    // target to the plain one).
    let private = unique_repo(bench.tls_registry(), "k8s-private");
    k.f.edit("kiln.yaml", |text| {
        let at = text.rfind("target_repository:").unwrap();
        let end = at + text[at..].find('\n').unwrap();
        format!(
            "{}target_repository: {private}{}",
            &text[..at],
            &text[end..]
        )
    });
    // kiln itself may push to the private registry; the node may not pull.
    k.f.write_docker_auth(bench.tls_registry(), bench.username(), bench.password());
}

#[test]
fn with_image_pull_secret_the_node_pulls_from_the_private_registry() {
    let Some(k) = kube("k8s/unpullable") else {
        return;
    };
    let bench = Bench::get();
    unpullable(&k);
    k.f.edit("kiln.yaml", |text| {
        text.replace("\"echo never\"", "\"echo 'private: ran'\"")
    });
    let out = k.run(&[
        "--registry-ca",
        bench.ca_cert().to_str().unwrap(),
        "--image-pull-secret",
    ]);
    assert_eq!(out.code, 0, "{}\n{}", out.stdout, out.stderr);
    assert!(out.stdout.contains("fine: ran"), "{}", out.stdout);
    assert!(out.stdout.contains("private: ran"), "{}", out.stdout);
    let registry = bench.tls_registry();
    let name = format!("kiln-pull-{}", registry.replace(['.', ':'], "-"));
    assert!(
        out.stderr
            .contains(&format!("image pull secret {name} for {registry} applied")),
        "{}",
        out.stderr
    );
    // The plain registry needs no login: no secret for it.
    let secrets = k.json(&["get", "secrets", "-l", "app.kubernetes.io/managed-by=kiln"]);
    let names: Vec<&str> = secrets["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["metadata"]["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, [name.as_str()]);
    let secret = &secrets["items"][0];
    assert_eq!(secret["type"], "kubernetes.io/dockerconfigjson");
    use base64::Engine as _;
    let config: Value = serde_json::from_slice(
        &base64::engine::general_purpose::STANDARD
            .decode(secret["data"][".dockerconfigjson"].as_str().unwrap())
            .unwrap(),
    )
    .unwrap();
    let entry = &config["auths"][registry];
    assert_eq!(entry["username"], bench.username());
    // Compared, never printed.
    assert!(
        entry["password"] == bench.password(),
        "the Secret does not hold the registry's password"
    );
    // Every pod of the run names it: the orchestrator's and the steps'.
    let (_, job) = submitted(&out);
    let pods = k.json(&["get", "pods"]);
    let items = pods["items"].as_array().unwrap();
    assert_eq!(items.len(), 3, "the orchestrator and two steps");
    for pod in items {
        assert_eq!(
            pod["spec"]["imagePullSecrets"],
            serde_json::json!([{"name": name}]),
            "{}",
            pod["metadata"]["name"]
        );
    }
    // The password is nowhere but in the Secret.
    let log = k
        .cluster
        .kubectl_ok(&["logs", "-n", &k.ns, &format!("job/{job}")]);
    for (what, text) in [
        ("kiln's output", &out.stdout),
        ("kiln's errors", &out.stderr),
        ("the orchestrator's log", &log.stdout),
    ] {
        assert!(
            !text.contains(bench.password()),
            "{what} holds the password"
        );
    }
    // A second run updates kiln's Secret rather than fail on it.
    let again = k.run(&[
        "--registry-ca",
        bench.ca_cert().to_str().unwrap(),
        "--image-pull-secret",
    ]);
    assert_eq!(again.code, 0, "{}\n{}", again.stdout, again.stderr);
}

#[test]
fn a_pod_that_cannot_be_scheduled_fails_after_pod_startup_timeout_with_the_reason() {
    let Some(k) = kube("k8s/gpu") else { return };
    let out = k.run(&[]);
    assert_eq!(out.code, 1, "{}\n{}", out.stdout, out.stderr);
    assert!(
        out.stderr.contains("step greedy failed: still Pending after pod_startup_timeout (5s): Unschedulable: 0/1 nodes are available: 1 Insufficient nvidia.com/gpu."),
        "{}",
        out.stderr
    );
    assert!(out.stdout.contains("modest: ran"), "{}", out.stdout);
    // The stuck pod was deleted.
    let left: Vec<String> = k
        .step_pods("k8s-gpu")
        .into_iter()
        .map(|(s, _, _)| s)
        .collect();
    assert_eq!(left, ["modest"]);
}

/// Submits the chain pipeline detached and waits until `middle` runs.
fn chain_running(k: &Kube) -> (String, String) {
    let out = k.run(&["--detach"]);
    assert_eq!(out.code, 0, "{}\n{}", out.stdout, out.stderr);
    assert!(out.stderr.contains(" -f"), "how to follow: {}", out.stderr);
    let (id, job) = submitted(&out);
    wait_for(Duration::from_secs(90), "step middle running", || {
        k.step_pods("k8s-chain")
            .iter()
            .any(|(s, _, phase)| s == "middle" && phase == "Running")
            .then_some(())
    });
    (id, job)
}

/// Waits for the run's final status on its Job.
fn final_status(k: &Kube, job: &str) -> String {
    wait_for(Duration::from_secs(180), "the run's end", || {
        let out = k.cluster.kubectl(&[
            "get",
            "job",
            job,
            "-n",
            &k.ns,
            "-o",
            "jsonpath={.metadata.annotations.kiln\\.dev/status}",
        ]);
        let s = out.stdout.trim().to_string();
        (out.code == 0 && !s.is_empty() && s != "running").then_some(s)
    })
}

#[test]
fn deleting_the_orchestrator_pod_mid_run_resumes_without_re_running_steps() {
    let Some(k) = kube("k8s/chain") else { return };
    let (_, job) = chain_running(&k);
    k.cluster.kubectl_ok(&[
        "delete",
        "pod",
        "-n",
        &k.ns,
        "-l",
        &format!("job-name={job}"),
        "--wait=false",
    ]);
    assert_eq!(final_status(&k, &job), "succeeded");
    // One attempt of each step: the new orchestrator adopted `first`'s
    // success and `middle`'s running pod.
    let pods = k.step_pods("k8s-chain");
    let names: Vec<(&str, bool)> = pods
        .iter()
        .map(|(s, n, _)| (s.as_str(), n.ends_with("-a1")))
        .collect();
    assert_eq!(
        names,
        [("first", true), ("last", true), ("middle", true)],
        "{pods:?}"
    );
    // The orchestrator that finished the run is a second one, and says so.
    let log = k
        .cluster
        .kubectl_ok(&["logs", "-n", &k.ns, &format!("job/{job}")]);
    assert!(
        log.stdout
            .contains("resumed from 2 pods found: 1 of 3 steps already succeeded"),
        "{}",
        log.stdout
    );
    let a = k.job_annotations(&job);
    assert!(a.contains_key("kiln.dev/finished"), "{a:?}");
}

#[test]
fn a_detached_run_is_followed_and_stopped_with_the_same_commands_as_a_local_one() {
    let Some(k) = kube("k8s/chain") else { return };
    let (id, job) = chain_running(&k);
    let list = k.f.kiln(&["runs", "list"]);
    assert_eq!(list.code, 0, "{}", list.stderr);
    let row = list
        .stdout
        .lines()
        .find(|l| l.starts_with(&id))
        .unwrap_or_else(|| panic!("no {id} in:\n{}", list.stdout));
    assert!(
        row.contains("running") && row.contains("kubernetes"),
        "{row}"
    );
    let stop = k.f.kiln(&["runs", "stop", &id, "--force"]);
    assert_eq!(stop.code, 0, "{}", stop.stderr);
    // `kiln logs -f` follows the orchestrator until the run is over.
    let logs = k.f.kiln(&["logs", &id, "-f"]);
    assert_eq!(logs.code, 0, "{}", logs.stderr);
    assert!(logs.stdout.contains("middle: started"), "{}", logs.stdout);
    assert_eq!(final_status(&k, &job), "stopped");
    let show = k.f.kiln(&["runs", "show", &id, "--json"]);
    let run: Value = serde_json::from_str(&show.stdout).unwrap();
    assert_eq!(run["status"], "stopped", "{run:#}");
    let status = |name: &str| {
        run["steps"]
            .as_array()
            .unwrap()
            .iter()
            .find(|s| s["name"] == name)
            .unwrap()["status"]
            .clone()
    };
    assert_eq!(status("first"), "succeeded", "{run:#}");
    assert_eq!(status("middle"), "cancelled", "{run:#}");
    assert_eq!(status("last"), "skipped", "{run:#}");
    // The cancelled step's pod is gone.
    wait_for(Duration::from_secs(60), "middle's pod deleted", || {
        (!k.step_pods("k8s-chain")
            .iter()
            .any(|(s, _, _)| s == "middle"))
        .then_some(())
    });
}

#[test]
fn restarting_the_api_server_mid_run_loses_nothing() {
    let Some(k) = kube("k8s/chain") else { return };
    // The synchronous client follows through the restart too.
    let mut args = vec!["run", "--on", "kubernetes", "--namespace", &k.ns];
    args.push("--pipeline");
    let file = k.f.root().join("kiln.yaml");
    args.push(file.to_str().unwrap());
    let mut child = Command::new(KILN);
    child
        .args(&args)
        .current_dir(k.f.root())
        .env("HOME", k.f.home())
        .env("XDG_CACHE_HOME", k.f.cache_home())
        .env("XDG_DATA_HOME", k.f.data_home())
        .env("KUBECONFIG", k.cluster.kubeconfig())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let child = child.spawn().unwrap();
    wait_for(Duration::from_secs(120), "step middle running", || {
        k.step_pods("k8s-chain")
            .iter()
            .any(|(s, _, phase)| s == "middle" && phase == "Running")
            .then_some(())
    });
    k.cluster.restart_apiserver();
    let out = child.wait_with_output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stdout}\n{stderr}");
    assert!(stderr.contains("succeeded"), "{stderr}");
    let pods = k.step_pods("k8s-chain");
    assert_eq!(pods.len(), 3, "one attempt per step: {pods:?}");
    assert!(pods.iter().all(|(_, _, p)| p == "Succeeded"), "{pods:?}");
}

#[test]
fn a_schedule_is_created_listed_updated_and_deleted() {
    let Some(k) = kube("k8s/branches") else {
        return;
    };
    let out = k.run(&["--schedule", "5 2 * * *"]);
    assert_eq!(out.code, 0, "{}\n{}", out.stdout, out.stderr);
    let name = "kiln-k8s-branches";
    let list = k.f.kiln(&["schedules", "list", "--namespace", &k.ns]);
    assert_eq!(list.code, 0, "{}", list.stderr);
    assert!(
        list.stdout.contains(name) && list.stdout.contains("5 2 * * *"),
        "{}",
        list.stdout
    );
    let cron = k.json(&["get", "cronjob", name]);
    assert_eq!(cron["spec"]["schedule"], "5 2 * * *");
    let template = &cron["spec"]["jobTemplate"]["spec"]["template"]["spec"];
    assert_eq!(template["serviceAccountName"], "kiln-service-account");
    let update = k.f.kiln(&[
        "schedules",
        "update",
        name,
        "--cron",
        "*/10 * * * *",
        "--namespace",
        &k.ns,
    ]);
    assert_eq!(update.code, 0, "{}", update.stderr);
    assert_eq!(
        k.json(&["get", "cronjob", name])["spec"]["schedule"],
        "*/10 * * * *"
    );
    let delete =
        k.f.kiln(&["schedules", "delete", name, "--namespace", &k.ns]);
    assert_eq!(delete.code, 0, "{}", delete.stderr);
    let left = k.json(&["get", "cronjobs"]);
    assert_eq!(left["items"].as_array().unwrap().len(), 0, "{left:#}");
}

#[test]
fn kilns_service_account_may_create_pods_in_its_namespace_only() {
    let Some(k) = kube("k8s/branches") else {
        return;
    };
    let out = k.run(&["--schedule", "0 0 1 1 *"]);
    assert_eq!(out.code, 0, "{}\n{}", out.stdout, out.stderr);
    let other = k.cluster.fresh_namespace("kiln-other");
    let who = format!("system:serviceaccount:{}:kiln-service-account", k.ns);
    let can = |ns: &str, verb: &str, what: &str| {
        let out = k
            .cluster
            .kubectl(&["auth", "can-i", verb, what, "-n", ns, "--as", &who]);
        out.stdout.trim().to_string()
    };
    assert_eq!(can(&k.ns, "create", "pods"), "yes");
    assert_eq!(can(&k.ns, "get", "pods/log"), "yes");
    assert_eq!(can(&k.ns, "patch", "jobs"), "yes");
    assert_eq!(can(&other, "create", "pods"), "no");
    assert_eq!(can(&other, "list", "pods"), "no");
    k.cluster.delete_namespace(&other);
}

#[test]
fn a_namespace_that_does_not_exist_is_a_clear_error_before_anything_is_built() {
    let Some(k) = kube("k8s/branches") else {
        return;
    };
    let out = k.f.kiln(&[
        "run",
        "--on",
        "kubernetes",
        "--namespace",
        "kiln-no-such-namespace",
    ]);
    assert_eq!(out.code, 1, "{}\n{}", out.stdout, out.stderr);
    assert!(
        out.stderr
            .contains("namespace \"kiln-no-such-namespace\" does not exist"),
        "{}",
        out.stderr
    );
    assert!(!out.stderr.contains("building"), "{}", out.stderr);
}
