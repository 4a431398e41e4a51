//! `kiln runs` and `kiln logs` for Kubernetes runs, against the test
//! cluster: a run recorded locally (as `kiln run --on kubernetes` records
//! it) whose orchestrator Job and step pods are made here by hand, shaped
//! as kiln's, with the state annotations an orchestrator would write. The
//! real `kiln` binary reads them back.
//!
//! No pod runs: step pods name a scheduler that does not exist, so even a
//! node agent started by another test leaves them alone. The logs test
//! binds its pods to a Node of its own whose "kubelet" is a TLS server in
//! this test that answers the API server's log requests: the node agent
//! (`kiln-node-agent`, another package) cannot be started from kiln-runner's
//! tests (Cargo builds no other package's binary for them), and one shared
//! agent node would also pick up the pods of tests running at the same
//! time. The API server's log proxy, and kiln's use of it, are real.

#![allow(clippy::too_many_lines)] // a test reads best as one list of steps
#![allow(clippy::unwrap_used)] // test helpers: a failure is a test failure

mod common;

use std::collections::HashMap;
use std::io::{Read as _, Write as _};
use std::net::{TcpListener, TcpStream};
use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use common::{lines_of, wait_for_exit};
use kiln_runner::k8s::job::job_name;
use kiln_runner::k8s::names::pod_name;
use kiln_runner::records::{ClusterRun, NewRun, NewStep, Records, format_rfc3339};
use kiln_testsupport::cluster::Cluster;
use serde_json::{Value, json};

const PIPELINE: &str = "quickstart";

/// A temporary XDG_DATA_HOME with its records, and a fresh namespace.
struct Env {
    cluster: &'static Cluster,
    home: tempfile::TempDir,
    records: Records,
    ns: String,
}

impl Env {
    /// `None` only when cluster tests are switched off by
    /// `KILN_TEST_NO_CLUSTER=1`; a cluster that is missing or broken fails
    /// the test in `Cluster::get`.
    fn new(prefix: &str) -> Option<Env> {
        let cluster = Cluster::get()?;
        let home = tempfile::tempdir().unwrap();
        let records = Records::open(&home.path().join("kiln")).unwrap();
        let ns = cluster.fresh_namespace(prefix);
        Some(Env {
            cluster,
            home,
            records,
            ns,
        })
    }

    /// `kiln ARGS` with this home and the cluster's kubeconfig.
    fn command(&self, args: &[&str]) -> Command {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_kiln"));
        cmd.args(args)
            .env("XDG_DATA_HOME", self.home.path())
            .env("HOME", self.home.path())
            .env("KUBECONFIG", self.cluster.kubeconfig());
        cmd
    }

    fn kiln(&self, args: &[&str]) -> Output {
        self.command(args).output().expect("running kiln")
    }

    /// A run of `load`, `train`, `eval`, recorded as submitted by a kiln
    /// that has exited since (`--detach`), living in `context`/this
    /// namespace; returns its id and Job name.
    fn submitted_run(&self, context: &str) -> (String, String) {
        let step = |name: &str| NewStep {
            name: name.into(),
            image: Some(format!("registry.test/{name}:1")),
            upstream: Vec::new(),
        };
        let id = self
            .records
            .create_run(&NewRun {
                pipeline: PIPELINE.into(),
                file: "/p/kiln.yaml".into(),
                run_dir: self.home.path().join("run"),
                log_dir: self.home.path().join("logs"),
                steps: vec![step("load"), step("train"), step("eval")],
                retry_of: None,
                started: SystemTime::now() - Duration::from_secs(60),
                pid: gone_pid(),
            })
            .unwrap();
        let job = job_name(PIPELINE, &id);
        self.records
            .set_cluster_run(
                &id,
                &ClusterRun {
                    context: Some(context.into()),
                    namespace: self.ns.clone(),
                    job: job.clone(),
                },
            )
            .unwrap();
        (id, job)
    }

    /// An orchestrator Job shaped as kiln's, with `annotations`; it starts
    /// no pod (parallelism 0): the tests make the pods they need.
    fn create_job(&self, run: &str, job: &str, annotations: Value) {
        let labels = json!({"run": run, "pipeline": PIPELINE, "kiln.dev/role": "orchestrator"});
        let mut all = json!({"kiln.dev/run-id": run});
        merge(&mut all, &annotations);
        let manifest = json!({
            "apiVersion": "batch/v1",
            "kind": "Job",
            "metadata": {"name": job, "namespace": self.ns, "labels": labels,
                         "annotations": all},
            "spec": {
                "parallelism": 0,
                "template": {
                    "metadata": {"labels": labels},
                    "spec": {
                        "restartPolicy": "Never",
                        "schedulerName": "kiln-test-no-scheduler",
                        "containers": [{"name": "orchestrator", "image": "kiln-test/none"}],
                    },
                },
            },
        });
        self.cluster
            .kubectl_stdin_ok(&["create", "-f", "-"], &manifest.to_string());
    }

    /// Merges `annotations` into the Job's, as the orchestrator does.
    fn annotate_job(&self, job: &str, annotations: Value) {
        let patch = json!({"metadata": {"annotations": annotations}}).to_string();
        self.cluster.kubectl_ok(&[
            "patch",
            "job",
            job,
            "-n",
            &self.ns,
            "--type=merge",
            "-p",
            &patch,
        ]);
    }

    fn job_annotation(&self, job: &str, key: &str) -> String {
        let path = format!("{{.metadata.annotations.{}}}", key.replace('.', "\\."));
        self.cluster
            .kubectl_ok(&[
                "get",
                "job",
                job,
                "-n",
                &self.ns,
                "-o",
                &format!("jsonpath={path}"),
            ])
            .stdout
    }

    /// Step `step`'s attempt pod, shaped as kiln's: on `node` when given,
    /// else waiting forever for a scheduler that does not exist.
    fn create_step_pod(&self, run: &str, step: &str, attempt: u32, node: Option<&str>) -> String {
        let name = pod_name(PIPELINE, step, run, attempt);
        let mut spec = json!({
            "restartPolicy": "Never",
            "containers": [{"name": "main", "image": "kiln-test/none"}],
        });
        match node {
            Some(node) => spec["nodeName"] = json!(node),
            None => spec["schedulerName"] = json!("kiln-test-no-scheduler"),
        }
        let manifest = json!({
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": {
                "name": name,
                "namespace": self.ns,
                "labels": {"run": run, "pipeline": PIPELINE, "step": step},
                "annotations": {"kiln.dev/run-id": run, "kiln.dev/step": step,
                                "kiln.dev/attempt": attempt.to_string()},
            },
            "spec": spec,
        });
        self.cluster
            .kubectl_stdin_ok(&["create", "-f", "-"], &manifest.to_string());
        name
    }

    /// Sets the pod's status as a kubelet would once its container ended.
    fn pod_ended(&self, pod: &str, exit_code: i32) {
        let finished = format_rfc3339(SystemTime::now());
        let status = json!({"status": {
            "phase": if exit_code == 0 { "Succeeded" } else { "Failed" },
            "containerStatuses": [{
                "name": "main", "image": "kiln-test/none", "imageID": "", "ready": false,
                "restartCount": 0,
                "state": {"terminated": {
                    "exitCode": exit_code,
                    "reason": if exit_code == 0 { "Completed" } else { "Error" },
                    "startedAt": finished, "finishedAt": finished,
                }},
            }],
        }});
        self.cluster.kubectl_ok(&[
            "patch",
            "pod",
            pod,
            "-n",
            &self.ns,
            "--subresource=status",
            "--type=merge",
            "-p",
            &status.to_string(),
        ]);
    }
}

impl Drop for Env {
    fn drop(&mut self) {
        self.cluster.delete_namespace(&self.ns);
    }
}

fn merge(base: &mut Value, over: &Value) {
    if let (Some(b), Some(o)) = (base.as_object_mut(), over.as_object()) {
        for (k, v) in o {
            b.insert(k.clone(), v.clone());
        }
    }
}

/// A pid no process has.
fn gone_pid() -> u32 {
    let mut child = Command::new("true").spawn().unwrap();
    let pid = child.id();
    child.wait().unwrap();
    pid
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// The run's row of `kiln runs list`, split on blanks.
fn list_row(out: &Output, run: &str) -> Vec<String> {
    let stdout = text(&out.stdout);
    let line = stdout
        .lines()
        .find(|l| l.starts_with(run))
        .unwrap_or_else(|| panic!("no run {run} in:\n{stdout}"));
    line.split_whitespace().map(str::to_owned).collect()
}

/// `kiln runs show`'s line of `step`.
fn show_line(stdout: &str, step: &str) -> String {
    stdout
        .lines()
        .find(|l| l.starts_with(&format!("{step} ")))
        .unwrap_or_else(|| panic!("no step {step} in:\n{stdout}"))
        .to_owned()
}

#[test]
fn list_show_and_stop_a_kubernetes_run() {
    let Some(env) = Env::new("runs-cluster") else {
        return;
    };
    let (run, job) = env.submitted_run(env.cluster.context());
    let steps = json!({
        "load": {"status": "succeeded", "attempts": 1, "exit_code": 0},
        "train": {"status": "running", "attempts": 2},
        "eval": {"status": "pending"},
    });
    env.create_job(
        &run,
        &job,
        json!({
            "kiln.dev/status": "running",
            "kiln.dev/started": format_rfc3339(SystemTime::now()),
            "kiln.dev/steps": steps.to_string(),
        }),
    );
    let load = env.create_step_pod(&run, "load", 1, None);
    env.pod_ended(&load, 0);
    let train1 = env.create_step_pod(&run, "train", 1, None);
    env.pod_ended(&train1, 3);
    let train2 = env.create_step_pod(&run, "train", 2, None);

    // The list asks the cluster: the run runs, one step of three is done.
    let out = env.kiln(&["runs", "list"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_eq!(text(&out.stderr), "", "no warning");
    let row = list_row(&out, &run);
    assert_eq!(row[1], PIPELINE);
    assert_eq!(row[2], "running", "{row:?}");
    assert_eq!(row[6], "1/3", "{row:?}");
    assert_eq!(row[7], "kubernetes", "{row:?}");
    let out = env.kiln(&["runs", "list", "--json"]);
    let json: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(json[0]["backend"], "kubernetes", "{json}");
    assert_eq!(json[0]["status"], "running", "{json}");

    // Show: the steps as the annotation says, the attempts as the pods do.
    let out = env.kiln(&["runs", "show", &run]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let stdout = text(&out.stdout);
    assert!(stdout.contains("status    running\n"), "{stdout}");
    assert!(
        stdout.contains(&format!(
            "backend   kubernetes: Job {}/{job}, context {}\n",
            env.ns,
            env.cluster.context()
        )),
        "{stdout}"
    );
    assert!(!stdout.contains("pid "), "no local kiln to show: {stdout}");
    // STEP STATUS ATTEMPTS DURATION EXIT REASON LOG
    let load_line = show_line(&stdout, "load");
    let cells: Vec<&str> = load_line.split_whitespace().collect();
    assert_eq!(cells[..3], ["load", "succeeded", "1"], "{stdout}");
    assert_eq!(cells[4], "0", "{stdout}");
    assert_eq!(
        cells.last(),
        Some(&format!("pod/{load}").as_str()),
        "{stdout}"
    );
    let train_line = show_line(&stdout, "train");
    let cells: Vec<&str> = train_line.split_whitespace().collect();
    assert_eq!(cells[..3], ["train", "running", "2"], "{stdout}");
    assert_eq!(
        cells.last(),
        Some(&format!("pod/{train2}").as_str()),
        "{stdout}"
    );
    assert!(show_line(&stdout, "eval").contains(" pending "), "{stdout}");

    let out = env.kiln(&["runs", "show", &run, "--json"]);
    let json: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(json["backend"], "kubernetes");
    assert_eq!(json["cluster"]["namespace"], env.ns.as_str());
    assert_eq!(json["cluster"]["job"], job.as_str());
    let train = &json["steps"][1];
    assert_eq!(train["attempts"][0]["status"], "failed", "{json}");
    assert_eq!(train["attempts"][0]["exit_code"], 3, "{json}");
    assert_eq!(
        train["attempts"][0]["log_path"],
        format!("pod/{train1}"),
        "{json}"
    );
    assert_eq!(train["attempts"][1]["status"], "running", "{json}");

    // Stop: a request on the Job, which the orchestrator obeys.
    let out = env.kiln(&["runs", "stop", &run[..6]]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let stdout = text(&out.stdout);
    assert!(stdout.contains(&format!("stopping run {run}")), "{stdout}");
    assert!(stdout.contains("graceful"), "{stdout}");
    assert_eq!(env.job_annotation(&job, "kiln.dev/stop"), "graceful");
    let out = env.kiln(&["runs", "stop", &run, "--force", "--json"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let json: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(json["stop"], "force", "{json}");
    assert_eq!(json["job"], job.as_str(), "{json}");
    assert_eq!(env.job_annotation(&job, "kiln.dev/stop"), "force");

    // The orchestrator stops the run and says so on its Job.
    let steps = json!({
        "load": {"status": "succeeded", "attempts": 1, "exit_code": 0},
        "train": {"status": "cancelled", "attempts": 2, "reason": "the run was stopped"},
        "eval": {"status": "skipped", "reason": "the run was stopped"},
    });
    env.annotate_job(
        &job,
        json!({
            "kiln.dev/status": "stopped",
            "kiln.dev/finished": format_rfc3339(SystemTime::now()),
            "kiln.dev/steps": steps.to_string(),
        }),
    );
    let out = env.kiln(&["runs", "list"]);
    let row = list_row(&out, &run);
    assert_eq!(row[2], "stopped", "{row:?}");
    let out = env.kiln(&["runs", "stop", &run]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out.stdout));
    assert!(
        text(&out.stderr).contains("is not running (status: stopped)"),
        "{}",
        text(&out.stderr)
    );

    // The Job is cleaned up: the run keeps its last known state.
    env.cluster
        .kubectl_ok(&["delete", "job", &job, "-n", &env.ns, "--wait=true"]);
    let out = env.kiln(&["runs", "show", &run]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let stdout = text(&out.stdout);
    assert!(stdout.contains("status    stopped\n"), "{stdout}");
    assert!(show_line(&stdout, "eval").contains(" skipped "), "{stdout}");
}

#[test]
fn a_gone_job_interrupts_and_an_unreachable_cluster_leaves_the_last_state() {
    let Some(env) = Env::new("runs-cluster-gone") else {
        return;
    };
    // Submitted by a kiln that exited, and no Job: it will never end.
    let (gone, job) = env.submitted_run(env.cluster.context());
    let out = env.kiln(&["runs", "show", &gone]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let stdout = text(&out.stdout);
    assert!(stdout.contains("status    interrupted\n"), "{stdout}");
    assert!(
        show_line(&stdout, "load")
            .contains(&format!("its orchestrator Job {}/{job} is gone", env.ns)),
        "{stdout}"
    );

    // Two clusters that do not answer: one refuses connections, one
    // accepts them and says nothing.
    let silent = TcpListener::bind("127.0.0.1:0").unwrap();
    let extra = env.home.path().join("extra-kubeconfig");
    let silent_server = format!("https://{}", silent.local_addr().unwrap());
    let cluster = |server: &str| json!({"server": server, "insecure-skip-tls-verify": true});
    let config = json!({
        "apiVersion": "v1", "kind": "Config",
        "clusters": [
            {"name": "down", "cluster": cluster("https://127.0.0.1:1")},
            {"name": "silent", "cluster": cluster(&silent_server)},
        ],
        "users": [{"name": "nobody", "user": {"token": "x"}}],
        "contexts": [
            {"name": "down", "context": {"cluster": "down", "user": "nobody"}},
            {"name": "silent", "context": {"cluster": "silent", "user": "nobody"}},
        ],
    });
    std::fs::write(&extra, config.to_string()).unwrap();
    let (down, _) = env.submitted_run("down");
    let (quiet, _) = env.submitted_run("silent");
    let kubeconfigs = format!("{}:{}", env.cluster.kubeconfig().display(), extra.display());

    let start = Instant::now();
    let out = env
        .command(&["runs", "list"])
        .env("KUBECONFIG", &kubeconfigs)
        .output()
        .unwrap();
    let took = start.elapsed();
    assert!(out.status.success(), "{}", text(&out.stderr));
    let stderr = text(&out.stderr);
    let warnings: Vec<&str> = stderr.lines().collect();
    assert_eq!(warnings.len(), 2, "one line per cluster: {stderr}");
    assert!(
        warnings[0].starts_with("kiln: warning: cannot reach cluster \"down\"")
            && warnings[0].ends_with(&format!("showing the last known state of run {down}")),
        "{stderr}"
    );
    assert!(
        warnings[1].contains("cannot reach cluster \"silent\" (no answer within 5s)")
            && warnings[1].ends_with(&format!("run {quiet}")),
        "{stderr}"
    );
    assert!(took < Duration::from_secs(20), "took {took:?}");
    for run in [&down, &quiet] {
        assert_eq!(list_row(&out, run)[2], "running", "last known state");
    }
    assert_eq!(list_row(&out, &gone)[2], "interrupted");
    drop(silent);
}

/// A kubelet's log endpoint, as much as the API server's log proxy uses:
/// `GET /containerLogs/NS/POD/CONTAINER` over TLS, answered with the text
/// set for that pod and container (404 when none), whole, at once.
struct FakeKubelet {
    port: u16,
    logs: Arc<Mutex<HashMap<String, String>>>,
    requests: Arc<Mutex<Vec<String>>>,
}

impl FakeKubelet {
    fn start(cluster: &Cluster) -> FakeKubelet {
        let pki = cluster.dir().join("pki");
        let config = Arc::new(tls_config(&pki));
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let logs: Arc<Mutex<HashMap<String, String>>> = Arc::default();
        let requests: Arc<Mutex<Vec<String>>> = Arc::default();
        let (l, r) = (Arc::clone(&logs), Arc::clone(&requests));
        std::thread::spawn(move || {
            for tcp in listener.incoming().flatten() {
                let (config, logs, requests) =
                    (Arc::clone(&config), Arc::clone(&l), Arc::clone(&r));
                std::thread::spawn(move || serve(tcp, config, &logs, &requests));
            }
        });
        FakeKubelet {
            port,
            logs,
            requests,
        }
    }

    fn set_log(&self, ns: &str, pod: &str, container: &str, text: &str) {
        self.logs
            .lock()
            .unwrap()
            .insert(format!("{ns}/{pod}/{container}"), text.to_owned());
    }

    fn requested(&self, ns: &str, pod: &str, container: &str) -> bool {
        let path = format!("/containerLogs/{ns}/{pod}/{container}");
        self.requests
            .lock()
            .unwrap()
            .iter()
            .any(|r| r.starts_with(&path))
    }
}

fn tls_config(pki: &Path) -> rustls::ServerConfig {
    use rustls::pki_types::pem::PemObject as _;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer};
    let cert = std::fs::read(pki.join("apiserver.crt")).unwrap();
    let key = std::fs::read(pki.join("apiserver.key")).unwrap();
    let certs = CertificateDer::pem_slice_iter(&cert)
        .collect::<Result<Vec<_>, _>>()
        .unwrap();
    let key = PrivateKeyDer::from_pem_slice(&key).unwrap();
    rustls::ServerConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .unwrap()
}

fn serve(
    tcp: TcpStream,
    config: Arc<rustls::ServerConfig>,
    logs: &Mutex<HashMap<String, String>>,
    requests: &Mutex<Vec<String>>,
) {
    let Ok(conn) = rustls::ServerConnection::new(config) else {
        return;
    };
    let mut tls = rustls::StreamOwned::new(conn, tcp);
    let mut head = Vec::new();
    let mut buf = [0u8; 1024];
    while !head.windows(4).any(|w| w == b"\r\n\r\n") {
        match tls.read(&mut buf) {
            Ok(0) | Err(_) => return,
            Ok(n) => head.extend_from_slice(&buf[..n]),
        }
    }
    let head = text(&head);
    let target = head
        .split_whitespace()
        .nth(1)
        .unwrap_or_default()
        .to_owned();
    requests.lock().unwrap().push(target.clone());
    let path = target.split('?').next().unwrap_or_default();
    let body = path
        .strip_prefix("/containerLogs/")
        .and_then(|key| logs.lock().unwrap().get(key).cloned());
    let response = match body {
        Some(body) => format!(
            "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
            body.len()
        ),
        None => "HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\nConnection: close\r\n\r\n".into(),
    };
    let _ = tls.write_all(response.as_bytes());
    tls.conn.send_close_notify();
    let _ = tls.flush();
}

/// A Node whose kubelet endpoint is `kubelet`, deleted when dropped.
struct FakeNode<'c> {
    cluster: &'c Cluster,
    name: String,
}

impl<'c> FakeNode<'c> {
    fn create(cluster: &'c Cluster, ns: &str, kubelet: &FakeKubelet) -> FakeNode<'c> {
        // Named after the test's namespace, which is unique.
        let name = format!("fake-kubelet-{ns}");
        let manifest = json!({
            "apiVersion": "v1",
            "kind": "Node",
            "metadata": {"name": name, "labels": {"kiln.dev/test": "fake-kubelet"}},
            "spec": {"taints": [{"key": "kiln.dev/fake-kubelet", "effect": "NoSchedule"}]},
            "status": {
                "addresses": [{"type": "InternalIP", "address": "127.0.0.1"}],
                "daemonEndpoints": {"kubeletEndpoint": {"Port": kubelet.port}},
            },
        });
        cluster.kubectl_stdin_ok(&["create", "-f", "-"], &manifest.to_string());
        FakeNode { cluster, name }
    }
}

impl Drop for FakeNode<'_> {
    fn drop(&mut self) {
        let _ = self
            .cluster
            .kubectl(&["delete", "node", &self.name, "--wait=false"]);
    }
}

#[test]
fn logs_of_a_kubernetes_run_come_from_its_pods() {
    let Some(env) = Env::new("runs-cluster-logs") else {
        return;
    };
    let kubelet = FakeKubelet::start(env.cluster);
    let node = FakeNode::create(env.cluster, &env.ns, &kubelet);
    let (run, job) = env.submitted_run(env.cluster.context());
    env.create_job(&run, &job, json!({"kiln.dev/status": "running"}));

    let orchestrator_pod = |name: &str| {
        let manifest = json!({
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": {"name": name, "namespace": env.ns,
                         "labels": {"job-name": job, "run": run, "kiln.dev/role": "orchestrator"},
                         "annotations": {"kiln.dev/run-id": run}},
            "spec": {"nodeName": node.name, "restartPolicy": "Never",
                     "containers": [{"name": "orchestrator", "image": "kiln-test/none"}]},
        });
        env.cluster
            .kubectl_stdin_ok(&["create", "-f", "-"], &manifest.to_string());
    };
    let first = format!("{job}-aaaaa");
    orchestrator_pod(&first);
    kubelet.set_log(
        &env.ns,
        &first,
        "orchestrator",
        "load | fetching\nload | loaded 10 rows\n",
    );
    let train1 = env.create_step_pod(&run, "train", 1, Some(&node.name));
    kubelet.set_log(&env.ns, &train1, "main", "epoch 1\nconnection reset\n");
    let train2 = env.create_step_pod(&run, "train", 2, Some(&node.name));
    kubelet.set_log(&env.ns, &train2, "main", "retry epoch 1\nretry epoch 2");

    // The whole run: the orchestrator's log, its lines prefixed by step.
    let out = env.kiln(&["logs", &run]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_eq!(
        text(&out.stdout),
        "load | fetching\nload | loaded 10 rows\n"
    );
    assert!(kubelet.requested(&env.ns, &first, "orchestrator"));

    // One step: its latest attempt's pod; a last line without its newline
    // is printed whole.
    let out = env.kiln(&["logs", &run, "train"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_eq!(
        text(&out.stdout),
        "== train attempt 2 ==\nretry epoch 1\nretry epoch 2\n"
    );
    assert!(kubelet.requested(&env.ns, &train2, "main"));
    assert!(!kubelet.requested(&env.ns, &train1, "main"));

    // A step without a pod yet says so and is no error.
    let out = env.kiln(&["logs", &run, "eval"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_eq!(text(&out.stdout), "");
    assert!(
        text(&out.stderr).contains("no pod"),
        "{}",
        text(&out.stderr)
    );

    // Following the run goes on across an orchestrator restart, until the
    // Job says the run is over.
    let mut follower = env
        .command(&["logs", &run, "-f"])
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let lines = lines_of(follower.stdout.take().unwrap());
    let next = || lines.recv_timeout(Duration::from_secs(20)).unwrap();
    assert_eq!(next(), "load | fetching");
    assert_eq!(next(), "load | loaded 10 rows");

    env.cluster.kubectl_ok(&[
        "delete",
        "pod",
        &first,
        "-n",
        &env.ns,
        "--grace-period=0",
        "--force",
    ]);
    std::thread::sleep(Duration::from_millis(1100)); // a newer creation time
    let second = format!("{job}-bbbbb");
    kubelet.set_log(
        &env.ns,
        &second,
        "orchestrator",
        "train | epoch 1\ntrain | epoch 2\n",
    );
    orchestrator_pod(&second);
    assert_eq!(
        next(),
        format!("== orchestrator restarted: pod {second} ==")
    );
    assert_eq!(next(), "train | epoch 1");
    assert_eq!(next(), "train | epoch 2");

    env.annotate_job(
        &job,
        json!({"kiln.dev/status": "succeeded", "kiln.dev/finished": format_rfc3339(SystemTime::now())}),
    );
    wait_for_exit(&mut follower, Duration::from_secs(20));
    assert!(lines.recv().is_err(), "nothing more, no line twice");
}
