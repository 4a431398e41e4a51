//! The node agent against the real test cluster and the local registry:
//! pods run in kiln's sandbox and their status is what a kubelet reports.

use std::collections::HashSet;
use std::path::Path;
use std::time::{Duration, Instant};

use kiln_testsupport::cluster::{Cluster, NodeAgent};
use kiln_testsupport::fixture::unique_repo;
use kiln_testsupport::{Bench, skopeo_copy};
use serde_json::Value;

const AGENT: &str = env!("CARGO_BIN_EXE_kiln-node-agent");

/// The cluster with the agent running, or `None` when cluster tests are
/// switched off.
fn setup() -> Option<(&'static Cluster, &'static NodeAgent)> {
    let cluster = Cluster::get()?;
    let agent = cluster.agent(Path::new(AGENT));
    Some((cluster, agent))
}

fn busybox() -> String {
    Bench::get().base_busybox().to_string()
}

/// Polls `check` every 250 ms until it returns `Some`, or panics after
/// `timeout` with `what` and the agent's log.
fn wait_for<T>(
    agent: &NodeAgent,
    timeout: Duration,
    what: &str,
    mut check: impl FnMut() -> Option<T>,
) -> T {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(v) = check() {
            return v;
        }
        if Instant::now() >= deadline {
            let log = std::fs::read_to_string(agent.log()).unwrap_or_default();
            panic!("{what}: not within {timeout:?}\n--- agent log ---\n{log}");
        }
        std::thread::sleep(Duration::from_millis(250));
    }
}

fn json(out: &str) -> Value {
    serde_json::from_str(out).unwrap_or_else(|e| panic!("not JSON ({e}): {out}"))
}

fn pod(cluster: &Cluster, ns: &str, name: &str) -> Option<Value> {
    let out = cluster.kubectl(&["get", "pod", name, "-n", ns, "-o", "json"]);
    (out.code == 0).then(|| json(&out.stdout))
}

/// Creates a busybox pod (restartPolicy Never) running `command`.
fn run_pod(cluster: &Cluster, ns: &str, name: &str, image: &str, command: &[&str]) {
    let manifest = serde_json::json!({
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name, "namespace": ns},
        "spec": {
            "restartPolicy": "Never",
            "containers": [{"name": "main", "image": image, "command": command}],
        },
    });
    cluster.kubectl_stdin_ok(&["create", "-f", "-"], &manifest.to_string());
}

/// Waits for the pod to reach `phase` and returns it.
fn wait_phase(cluster: &Cluster, agent: &NodeAgent, ns: &str, name: &str, phase: &str) -> Value {
    wait_for(
        agent,
        Duration::from_secs(60),
        &format!("pod {ns}/{name} {phase}"),
        || pod(cluster, ns, name).filter(|p| p["status"]["phase"] == phase),
    )
}

#[test]
fn the_node_is_ready_with_its_resources() {
    let Some((cluster, agent)) = setup() else {
        return;
    };
    let out = cluster.kubectl_ok(&["get", "nodes"]);
    let line = out
        .stdout
        .lines()
        .find(|l| l.starts_with(agent.node()))
        .unwrap_or_else(|| panic!("no {} in:\n{}", agent.node(), out.stdout));
    assert_eq!(line.split_whitespace().nth(1), Some("Ready"), "{line}");
    let node = json(
        &cluster
            .kubectl_ok(&["get", "node", agent.node(), "-o", "json"])
            .stdout,
    );
    assert_eq!(
        node["status"]["allocatable"]["nvidia.com/gpu"], "1",
        "{node}"
    );
}

#[test]
fn a_pod_that_exits_0_succeeds_and_its_output_is_kept() {
    let Some((cluster, agent)) = setup() else {
        return;
    };
    let ns = cluster.fresh_namespace("agent-ok");
    run_pod(
        cluster,
        &ns,
        "hello",
        &busybox(),
        &["sh", "-c", "echo hello; exit 0"],
    );
    let pod = wait_phase(cluster, agent, &ns, "hello", "Succeeded");
    let state = &pod["status"]["containerStatuses"][0]["state"]["terminated"];
    assert_eq!(state["exitCode"], 0, "{pod}");
    assert_eq!(state["reason"], "Completed", "{pod}");
    assert_eq!(pod["spec"]["nodeName"], agent.node(), "{pod}");
    let log = std::fs::read_to_string(agent.container_log(&ns, "hello", "main"))
        .unwrap_or_else(|e| panic!("the container's log: {e}"));
    assert_eq!(log, "hello\n");
    cluster.delete_namespace(&ns);
}

#[test]
fn a_pod_that_exits_3_fails_with_exit_code_3() {
    let Some((cluster, agent)) = setup() else {
        return;
    };
    let ns = cluster.fresh_namespace("agent-fail");
    run_pod(cluster, &ns, "three", &busybox(), &["sh", "-c", "exit 3"]);
    let pod = wait_phase(cluster, agent, &ns, "three", "Failed");
    let state = &pod["status"]["containerStatuses"][0]["state"]["terminated"];
    assert_eq!(state["exitCode"], 3, "{pod}");
    assert_eq!(state["reason"], "Error", "{pod}");
    cluster.delete_namespace(&ns);
}

#[test]
fn a_pod_with_a_bad_image_shows_err_image_pull_then_image_pull_back_off() {
    let Some((cluster, agent)) = setup() else {
        return;
    };
    let ns = cluster.fresh_namespace("agent-pull");
    let image = format!("{}/kiln-no-such/image:latest", Bench::get().registry());
    run_pod(cluster, &ns, "bad", &image, &["true"]);
    let pod = wait_for(agent, Duration::from_secs(60), "ErrImagePull", || {
        pod(cluster, &ns, "bad").filter(|p| {
            p["status"]["containerStatuses"][0]["state"]["waiting"]["reason"] == "ErrImagePull"
        })
    });
    assert_eq!(pod["status"]["phase"], "Pending", "{pod}");
    let message = &pod["status"]["containerStatuses"][0]["state"]["waiting"]["message"];
    assert!(
        message.as_str().is_some_and(|m| m.contains("not found")),
        "the registry's reason: {pod}"
    );
    // Retried after a pause, as a kubelet does.
    let backoff = wait_for(agent, Duration::from_secs(30), "ImagePullBackOff", || {
        self::pod(cluster, &ns, "bad").filter(|p| {
            p["status"]["containerStatuses"][0]["state"]["waiting"]["reason"] == "ImagePullBackOff"
        })
    });
    assert_eq!(backoff["status"]["phase"], "Pending", "{backoff}");
    cluster.delete_namespace(&ns);
}

/// A copy of the bench's busybox in its TLS registry, which wants a
/// login: the agent trusts the registry's CA (testsupport passes it) but
/// has no credentials of its own.
fn private_busybox() -> String {
    let bench = Bench::get();
    let image = format!(
        "{}:latest",
        unique_repo(bench.tls_registry(), "agent-private")
    );
    let args = [&["--src-tls-verify=false"][..], &bench.tls_dest_args()].concat();
    skopeo_copy(&busybox(), &image, &args);
    image
}

/// Creates Secret `name` of type `kind` whose key `key` holds `config`
/// (through kubectl's stdin: the password stays off command lines).
fn create_secret(cluster: &Cluster, ns: &str, name: &str, kind: &str, key: &str, config: &Value) {
    use base64::Engine as _;
    let data = base64::engine::general_purpose::STANDARD.encode(config.to_string());
    let manifest = serde_json::json!({
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {"name": name, "namespace": ns},
        "type": kind,
        "data": {key: data},
    });
    cluster.kubectl_stdin_ok(&["create", "-f", "-"], &manifest.to_string());
}

#[test]
fn a_private_image_is_pulled_with_the_pods_image_pull_secret_and_not_without() {
    let Some((cluster, agent)) = setup() else {
        return;
    };
    let bench = Bench::get();
    let ns = cluster.fresh_namespace("agent-private");
    let image = private_busybox();
    let spec = |secrets: Value| {
        serde_json::json!({
            "containers": [{"name": "main", "image": image, "command": ["sh", "-c", "echo private"]}],
            "imagePullSecrets": secrets,
        })
    };
    // Without a secret the registry refuses the node, as before.
    create_pod(cluster, &ns, "without", spec(serde_json::json!([])));
    let refused = wait_for(agent, Duration::from_secs(60), "ErrImagePull", || {
        pod(cluster, &ns, "without").filter(|p| {
            p["status"]["containerStatuses"][0]["state"]["waiting"]["reason"] == "ErrImagePull"
        })
    });
    let message = &refused["status"]["containerStatuses"][0]["state"]["waiting"]["message"];
    assert!(
        message.as_str().is_some_and(|m| m.contains("401")),
        "the registry's refusal: {refused}"
    );
    // With one: a docker config Secret, a missing one listed first (skipped
    // with a warning, as a kubelet does), and a legacy dockercfg Secret.
    let entry = serde_json::json!({"username": bench.username(), "password": bench.password()});
    create_secret(
        cluster,
        &ns,
        "regcred",
        "kubernetes.io/dockerconfigjson",
        ".dockerconfigjson",
        &serde_json::json!({"auths": {bench.tls_registry(): entry}}),
    );
    create_secret(
        cluster,
        &ns,
        "legacy",
        "kubernetes.io/dockercfg",
        ".dockercfg",
        &serde_json::json!({format!("https://{}", bench.tls_registry()): entry}),
    );
    create_pod(
        cluster,
        &ns,
        "with",
        spec(serde_json::json!([{"name": "absent"}, {"name": "regcred"}])),
    );
    create_pod(
        cluster,
        &ns,
        "legacy",
        spec(serde_json::json!([{"name": "legacy"}])),
    );
    for name in ["with", "legacy"] {
        wait_phase(cluster, agent, &ns, name, "Succeeded");
        assert_eq!(log_of(agent, &ns, name), "private\n");
    }
    let events = cluster.kubectl_ok(&[
        "get",
        "events",
        "-n",
        &ns,
        "--field-selector",
        "reason=FailedToRetrieveImagePullSecret",
        "-o",
        "jsonpath={.items[*].message}",
    ]);
    assert!(
        events.stdout.contains("image pull secret absent not found"),
        "{}",
        events.stdout
    );
    let log = std::fs::read_to_string(agent.log()).unwrap_or_default();
    assert!(
        !log.contains(bench.password()),
        "the agent's log holds the password"
    );
    cluster.delete_namespace(&ns);
}

/// Pids of processes whose command line is exactly `argv`.
fn processes(argv: &[&str]) -> HashSet<u32> {
    let wanted: Vec<u8> = argv
        .iter()
        .flat_map(|a| [a.as_bytes(), b"\0"].concat())
        .collect();
    std::fs::read_dir("/proc")
        .map(|dir| {
            dir.filter_map(Result::ok)
                .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
                .filter(|pid| {
                    std::fs::read(format!("/proc/{pid}/cmdline")).is_ok_and(|c| c == wanted)
                })
                .collect()
        })
        .unwrap_or_default()
}

#[test]
fn deleting_a_running_pod_kills_its_process_and_removes_it() {
    let Some((cluster, agent)) = setup() else {
        return;
    };
    let ns = cluster.fresh_namespace("agent-delete");
    let argv = ["sleep", "1000"];
    let before = processes(&argv);
    run_pod(cluster, &ns, "sleeper", &busybox(), &argv);
    let running = wait_phase(cluster, agent, &ns, "sleeper", "Running");
    let ready = running["status"]["conditions"]
        .as_array()
        .and_then(|c| c.iter().find(|c| c["type"] == "Ready"));
    assert_eq!(
        ready.map(|c| &c["status"]),
        Some(&Value::from("True")),
        "{running}"
    );
    let ours: HashSet<u32> = wait_for(agent, Duration::from_secs(10), "the sleep process", || {
        let new: HashSet<u32> = processes(&argv).difference(&before).copied().collect();
        (!new.is_empty()).then_some(new)
    });
    cluster.kubectl_ok(&["delete", "pod", "sleeper", "-n", &ns, "--wait=false"]);
    wait_for(agent, Duration::from_secs(30), "the pod removed", || {
        pod(cluster, &ns, "sleeper").is_none().then_some(())
    });
    wait_for(
        agent,
        Duration::from_secs(10),
        "the sleep process gone",
        || processes(&argv).is_disjoint(&ours).then_some(()),
    );
    cluster.delete_namespace(&ns);
}

#[test]
fn a_batch_v1_job_runs_to_completion() {
    let Some((cluster, agent)) = setup() else {
        return;
    };
    let ns = cluster.fresh_namespace("agent-job");
    let job = serde_json::json!({
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": {"name": "once", "namespace": ns},
        "spec": {
            "backoffLimit": 0,
            "template": {"spec": {
                "restartPolicy": "Never",
                "containers": [{
                    "name": "main",
                    "image": busybox(),
                    "command": ["sh", "-c", "echo from a job"],
                }],
            }},
        },
    });
    cluster.kubectl_stdin_ok(&["create", "-f", "-"], &job.to_string());
    wait_for(agent, Duration::from_secs(90), "job once succeeded", || {
        let out = cluster.kubectl_ok(&["get", "job", "once", "-n", &ns, "-o", "json"]);
        (json(&out.stdout)["status"]["succeeded"] == 1).then_some(())
    });
    cluster.delete_namespace(&ns);
}

#[test]
fn kubectl_logs_prints_a_finished_pods_output() {
    let Some((cluster, agent)) = setup() else {
        return;
    };
    let ns = cluster.fresh_namespace("agent-logs");
    run_pod(
        cluster,
        &ns,
        "hello",
        &busybox(),
        &["sh", "-c", "echo hello; exit 0"],
    );
    wait_phase(cluster, agent, &ns, "hello", "Succeeded");
    let out = cluster.kubectl_ok(&["logs", "hello", "-n", &ns]);
    assert_eq!(out.stdout, "hello\n");
    let missing = cluster.kubectl(&["logs", "hello", "-n", &ns, "-c", "nope"]);
    assert_ne!(missing.code, 0, "{}", missing.stdout);
    cluster.delete_namespace(&ns);
}

#[test]
fn kubectl_logs_follow_streams_until_the_pod_ends() {
    let Some((cluster, agent)) = setup() else {
        return;
    };
    let ns = cluster.fresh_namespace("agent-follow");
    run_pod(
        cluster,
        &ns,
        "lines",
        &busybox(),
        &["sh", "-c", "for i in 1 2 3; do echo line$i; sleep 1; done"],
    );
    wait_phase(cluster, agent, &ns, "lines", "Running");
    // Not `Cluster::kubectl`: its request timeout would also bound the
    // stream.
    let child = std::process::Command::new("kubectl")
        .env("KUBECONFIG", cluster.kubeconfig())
        .args(["logs", "-f", "lines", "-n", &ns])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("starting kubectl");
    let pid = child.id();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(child.wait_with_output());
    });
    let out = match rx.recv_timeout(Duration::from_secs(60)) {
        Ok(out) => out.expect("kubectl logs -f"),
        Err(_) => {
            let _ = std::process::Command::new("kill")
                .arg(pid.to_string())
                .status();
            let log = std::fs::read_to_string(agent.log()).unwrap_or_default();
            panic!("kubectl logs -f did not end with the pod\n--- agent log ---\n{log}");
        }
    };
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{}: {stdout}{stderr}", out.status);
    assert_eq!(stdout, "line1\nline2\nline3\n", "{stderr}");
    wait_phase(cluster, agent, &ns, "lines", "Succeeded");
    cluster.delete_namespace(&ns);
}

/// Creates a pod from its `spec` (restartPolicy Never added).
fn create_pod(cluster: &Cluster, ns: &str, name: &str, mut spec: Value) {
    spec["restartPolicy"] = "Never".into();
    let manifest = serde_json::json!({
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name, "namespace": ns},
        "spec": spec,
    });
    cluster.kubectl_stdin_ok(&["create", "-f", "-"], &manifest.to_string());
}

fn log_of(agent: &NodeAgent, ns: &str, pod: &str) -> String {
    std::fs::read_to_string(agent.container_log(ns, pod, "main"))
        .unwrap_or_else(|e| panic!("the container's log: {e}"))
}

#[test]
fn env_comes_from_config_maps_and_secrets() {
    let Some((cluster, agent)) = setup() else {
        return;
    };
    let ns = cluster.fresh_namespace("agent-env");
    cluster.kubectl_ok(&[
        "create",
        "configmap",
        "cm",
        "-n",
        &ns,
        "--from-literal=a=one",
    ]);
    cluster.kubectl_ok(&[
        "create",
        "secret",
        "generic",
        "s",
        "-n",
        &ns,
        "--from-literal=b=two",
    ]);
    let spec = serde_json::json!({"containers": [{
        "name": "main",
        "image": busybox(),
        "command": ["sh", "-c", "echo \"$A $B $a $b $X_a\""],
        "envFrom": [
            {"configMapRef": {"name": "cm"}},
            {"secretRef": {"name": "s"}},
            {"prefix": "X_", "configMapRef": {"name": "cm"}},
            {"secretRef": {"name": "absent", "optional": true}},
        ],
        "env": [
            {"name": "A", "valueFrom": {"configMapKeyRef": {"name": "cm", "key": "a"}}},
            {"name": "B", "valueFrom": {"secretKeyRef": {"name": "s", "key": "b"}}},
        ],
    }]});
    create_pod(cluster, &ns, "env", spec);
    wait_phase(cluster, agent, &ns, "env", "Succeeded");
    assert_eq!(log_of(agent, &ns, "env"), "one two one two one\n");
    cluster.delete_namespace(&ns);
}

#[test]
fn a_missing_secret_holds_the_pod_until_it_is_created() {
    let Some((cluster, agent)) = setup() else {
        return;
    };
    let ns = cluster.fresh_namespace("agent-nosecret");
    let spec = serde_json::json!({"containers": [{
        "name": "main",
        "image": busybox(),
        "command": ["sh", "-c", "echo \"$T\""],
        "env": [{"name": "T", "valueFrom": {"secretKeyRef": {"name": "later", "key": "t"}}}],
    }]});
    create_pod(cluster, &ns, "waits", spec);
    let pod = wait_for(
        agent,
        Duration::from_secs(60),
        "CreateContainerConfigError",
        || {
            pod(cluster, &ns, "waits").filter(|p| {
                p["status"]["containerStatuses"][0]["state"]["waiting"]["reason"]
                    == "CreateContainerConfigError"
            })
        },
    );
    assert_eq!(pod["status"]["phase"], "Pending", "{pod}");
    let message = &pod["status"]["containerStatuses"][0]["state"]["waiting"]["message"];
    assert!(
        message.as_str().is_some_and(|m| m.contains("later")),
        "names the secret: {pod}"
    );
    cluster.kubectl_ok(&[
        "create",
        "secret",
        "generic",
        "later",
        "-n",
        &ns,
        "--from-literal=t=now",
    ]);
    wait_phase(cluster, agent, &ns, "waits", "Succeeded");
    assert_eq!(log_of(agent, &ns, "waits"), "now\n");
    cluster.delete_namespace(&ns);
}

#[test]
fn empty_dir_and_host_path_volumes_are_mounted() {
    let Some((cluster, agent)) = setup() else {
        return;
    };
    let ns = cluster.fresh_namespace("agent-volumes");
    let host = std::env::temp_dir().join(format!("kiln-agent-{ns}"));
    std::fs::create_dir_all(&host).expect("the hostPath directory");
    std::fs::write(host.join("hello"), "from host\n").expect("a file in it");
    let host_path = host.to_str().expect("a UTF-8 temp dir");
    let script = "echo data > /scratch/f && cat /scratch/f && cat /host/hello \
        && echo new > /host/new \
        && if (echo y > /ro/z) 2>/dev/null; then echo writable; else echo refused; fi";
    let spec = serde_json::json!({
        "volumes": [
            {"name": "scratch", "emptyDir": {}},
            {"name": "host", "hostPath": {"path": host_path}},
        ],
        "containers": [{
            "name": "main",
            "image": busybox(),
            "command": ["sh", "-c", script],
            "volumeMounts": [
                {"name": "scratch", "mountPath": "/scratch"},
                {"name": "host", "mountPath": "/host"},
                {"name": "host", "mountPath": "/ro", "readOnly": true},
            ],
        }],
    });
    create_pod(cluster, &ns, "vols", spec);
    let pod = wait_phase(cluster, agent, &ns, "vols", "Succeeded");
    assert_eq!(log_of(agent, &ns, "vols"), "data\nfrom host\nrefused\n");
    assert_eq!(
        std::fs::read_to_string(host.join("new")).ok().as_deref(),
        Some("new\n")
    );
    assert!(!host.join("z").exists(), "the read-only mount took a write");
    let uid = pod["metadata"]["uid"].as_str().expect("the pod's uid");
    let scratch = agent.state_dir().join("pods").join(uid);
    wait_for(
        agent,
        Duration::from_secs(10),
        "the emptyDir removed",
        || (!scratch.exists()).then_some(()),
    );
    let _ = std::fs::remove_dir_all(&host);
    cluster.delete_namespace(&ns);
}

/// A running pod whose shell runs `script` with the host directory `host`
/// at `/host`.
fn run_with_host_dir(cluster: &Cluster, agent: &NodeAgent, ns: &str, host: &Path, script: &str) {
    let host_path = host.to_str().expect("a UTF-8 temp dir");
    let spec = serde_json::json!({
        "volumes": [{"name": "host", "hostPath": {"path": host_path}}],
        "containers": [{
            "name": "main",
            "image": busybox(),
            "command": ["sh", "-c", script],
            "volumeMounts": [{"name": "host", "mountPath": "/host"}],
        }],
    });
    create_pod(cluster, ns, "graceful", spec);
    wait_phase(cluster, agent, ns, "graceful", "Running");
}

#[test]
fn deletion_sends_sigterm_within_the_grace_period() {
    let Some((cluster, agent)) = setup() else {
        return;
    };
    let ns = cluster.fresh_namespace("agent-grace");
    let host = std::env::temp_dir().join(format!("kiln-agent-{ns}"));
    std::fs::create_dir_all(&host).expect("the hostPath directory");
    let script = "trap 'echo term > /host/marker; exit 0' TERM; touch /host/started; \
        sleep 1000 & wait";
    run_with_host_dir(cluster, agent, &ns, &host, script);
    wait_for(agent, Duration::from_secs(10), "the trap set", || {
        host.join("started").exists().then_some(())
    });
    let asked = Instant::now();
    cluster.kubectl_ok(&[
        "delete",
        "pod",
        "graceful",
        "-n",
        &ns,
        "--grace-period=5",
        "--wait=false",
    ]);
    wait_for(agent, Duration::from_secs(30), "the pod removed", || {
        pod(cluster, &ns, "graceful").is_none().then_some(())
    });
    assert_eq!(
        std::fs::read_to_string(host.join("marker")).ok().as_deref(),
        Some("term\n")
    );
    assert!(
        asked.elapsed() < Duration::from_secs(5),
        "not killed at the end of the grace period"
    );
    let _ = std::fs::remove_dir_all(&host);
    cluster.delete_namespace(&ns);
}

#[test]
fn a_pod_that_ignores_sigterm_is_killed_after_the_grace_period() {
    let Some((cluster, agent)) = setup() else {
        return;
    };
    let ns = cluster.fresh_namespace("agent-stubborn");
    let host = std::env::temp_dir().join(format!("kiln-agent-{ns}"));
    std::fs::create_dir_all(&host).expect("the hostPath directory");
    run_with_host_dir(
        cluster,
        agent,
        &ns,
        &host,
        "trap '' TERM; touch /host/started; sleep 1000",
    );
    wait_for(agent, Duration::from_secs(10), "the trap set", || {
        host.join("started").exists().then_some(())
    });
    let asked = Instant::now();
    cluster.kubectl_ok(&[
        "delete",
        "pod",
        "graceful",
        "-n",
        &ns,
        "--grace-period=2",
        "--wait=false",
    ]);
    wait_for(agent, Duration::from_secs(30), "the pod removed", || {
        pod(cluster, &ns, "graceful").is_none().then_some(())
    });
    assert!(
        asked.elapsed() >= Duration::from_secs(2),
        "removed before its grace period ended"
    );
    let _ = std::fs::remove_dir_all(&host);
    cluster.delete_namespace(&ns);
}

/// The pod's `PodScheduled` condition.
fn scheduled_condition(pod: &Value) -> Option<&Value> {
    pod["status"]["conditions"]
        .as_array()
        .and_then(|c| c.iter().find(|c| c["type"] == "PodScheduled"))
}

/// Waits until pod `name` is marked Unschedulable with `message`.
fn wait_unschedulable(
    cluster: &Cluster,
    agent: &NodeAgent,
    ns: &str,
    name: &str,
    message: &str,
) -> Value {
    wait_for(
        agent,
        Duration::from_secs(30),
        &format!("pod {name} Unschedulable: {message}"),
        || {
            pod(cluster, ns, name).filter(|p| {
                scheduled_condition(p).is_some_and(|c| {
                    c["status"] == "False"
                        && c["reason"] == "Unschedulable"
                        && c["message"] == message
                })
            })
        },
    )
}

/// A pod spec running `command` with `resources`.
fn spec_with(command: &[&str], resources: Value) -> Value {
    serde_json::json!({"containers": [{
        "name": "main",
        "image": busybox(),
        "command": command,
        "resources": resources,
    }]})
}

#[test]
fn a_pod_that_does_not_fit_stays_pending_with_the_schedulers_reason() {
    let Some((cluster, agent)) = setup() else {
        return;
    };
    let ns = cluster.fresh_namespace("agent-fit");
    let eight_gpus = serde_json::json!({"limits": {"nvidia.com/gpu": "8"}});
    create_pod(cluster, &ns, "greedy", spec_with(&["true"], eight_gpus));
    let mut elsewhere = spec_with(&["true"], Value::Null);
    elsewhere["nodeSelector"] = serde_json::json!({"kiln.test/pool": "none"});
    create_pod(cluster, &ns, "elsewhere", elsewhere);
    run_pod(cluster, &ns, "small", &busybox(), &["true"]);
    wait_phase(cluster, agent, &ns, "small", "Succeeded");
    let greedy = wait_unschedulable(
        cluster,
        agent,
        &ns,
        "greedy",
        "0/1 nodes are available: 1 Insufficient nvidia.com/gpu.",
    );
    wait_unschedulable(
        cluster,
        agent,
        &ns,
        "elsewhere",
        "0/1 nodes are available: 1 node(s) didn't match node selector.",
    );
    // Looked at on every pass (500 ms), written once.
    std::thread::sleep(Duration::from_secs(2));
    let later = pod(cluster, &ns, "greedy").expect("the pod");
    assert_eq!(
        later["metadata"]["resourceVersion"], greedy["metadata"]["resourceVersion"],
        "rewritten: {later}"
    );
    assert_eq!(later["status"]["phase"], "Pending", "{later}");
    assert!(later["spec"]["nodeName"].is_null(), "bound: {later}");
    cluster.delete_namespace(&ns);
}

#[test]
fn a_pod_is_bound_once_the_gpu_it_needs_is_free() {
    let Some((cluster, agent)) = setup() else {
        return;
    };
    let ns = cluster.fresh_namespace("agent-refit");
    let one_gpu = serde_json::json!({"limits": {"nvidia.com/gpu": "1"}});
    // One create, so both are unbound in the same pass; the older (by
    // name, on the same second) is bound first.
    let pod_of = |name: &str, command: &[&str]| {
        let mut spec = spec_with(command, one_gpu.clone());
        spec["restartPolicy"] = "Never".into();
        serde_json::json!({
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": {"name": name, "namespace": ns},
            "spec": spec,
        })
    };
    let list = serde_json::json!({
        "apiVersion": "v1",
        "kind": "List",
        "items": [pod_of("a-first", &["sleep", "4"]), pod_of("b-second", &["true"])],
    });
    cluster.kubectl_stdin_ok(&["create", "-f", "-"], &list.to_string());
    wait_unschedulable(
        cluster,
        agent,
        &ns,
        "b-second",
        "0/1 nodes are available: 1 Insufficient nvidia.com/gpu.",
    );
    let first = wait_phase(cluster, agent, &ns, "a-first", "Succeeded");
    let second = wait_phase(cluster, agent, &ns, "b-second", "Succeeded");
    let finished = &first["status"]["containerStatuses"][0]["state"]["terminated"]["finishedAt"];
    let started = &second["status"]["containerStatuses"][0]["state"]["terminated"]["startedAt"];
    let (Some(finished), Some(started)) = (finished.as_str(), started.as_str()) else {
        panic!("no times in {first} {second}");
    };
    assert!(started >= finished, "{started} before {finished}");
    assert_eq!(
        scheduled_condition(&second).map(|c| &c["status"]),
        Some(&Value::from("True")),
        "{second}"
    );
    cluster.delete_namespace(&ns);
}

#[test]
fn a_pod_outlives_an_api_server_restart_and_is_reported_after_it() {
    let Some((cluster, agent)) = setup() else {
        return;
    };
    let ns = cluster.fresh_namespace("agent-restart");
    // The API server is away for 5 s at least (it takes that long to
    // start): `short` ends while it is away, so its end is reported after
    // the restart; `sleeper` runs on across it.
    run_pod(cluster, &ns, "sleeper", &busybox(), &["sleep", "8"]);
    run_pod(cluster, &ns, "short", &busybox(), &["sleep", "2"]);
    wait_phase(cluster, agent, &ns, "sleeper", "Running");
    wait_phase(cluster, agent, &ns, "short", "Running");
    let log_before = std::fs::read_to_string(agent.log()).unwrap_or_default();
    cluster.restart_apiserver();
    for name in ["short", "sleeper"] {
        let pod = wait_phase(cluster, agent, &ns, name, "Succeeded");
        let state = &pod["status"]["containerStatuses"][0]["state"]["terminated"];
        assert_eq!(state["exitCode"], 0, "{pod}");
    }
    // The agent saw the outage (its polls failed) and went on.
    let log = std::fs::read_to_string(agent.log()).unwrap_or_default();
    let during = log.get(log_before.len()..).unwrap_or_default();
    assert!(
        during.contains("GET /api/v1/pods"),
        "no failed poll logged during the restart:\n{during}"
    );
    // New pods still run.
    run_pod(cluster, &ns, "after", &busybox(), &["true"]);
    wait_phase(cluster, agent, &ns, "after", "Succeeded");
    cluster.delete_namespace(&ns);
}

/// The one container's log of pod `name` once it has succeeded.
fn output_of(cluster: &Cluster, agent: &NodeAgent, ns: &str, name: &str, spec: Value) -> String {
    create_pod(cluster, ns, name, spec);
    wait_phase(cluster, agent, ns, name, "Succeeded");
    log_of(agent, ns, name)
}

#[test]
fn secret_config_map_and_projected_volumes_hold_their_keys() {
    let Some((cluster, agent)) = setup() else {
        return;
    };
    let ns = cluster.fresh_namespace("agent-apivol");
    cluster.kubectl_ok(&[
        "create",
        "secret",
        "generic",
        "s",
        "-n",
        &ns,
        "--from-literal=a=one",
        "--from-literal=b=two",
    ]);
    cluster.kubectl_ok(&[
        "create",
        "configmap",
        "c",
        "-n",
        &ns,
        "--from-literal=x=ex",
        "--from-literal=y=why",
    ]);
    let script = "cat /s/a /s/b; echo; ls /c; cat /c/sub/why; echo; \
        cat /p/pa /p/px /p/name; echo; test -s /p/token && echo token; \
        stat -c '%n %a' /s/a /c/sub/why /p/pa /p/px; \
        if (echo x > /s/new) 2>/dev/null; then echo writable; else echo read-only; fi";
    let spec = serde_json::json!({
        "volumes": [
            {"name": "s", "secret": {"secretName": "s", "defaultMode": 0o600}},
            {"name": "c", "configMap": {
                "name": "c",
                "items": [{"key": "y", "path": "sub/why", "mode": 0o640}],
            }},
            {"name": "p", "projected": {"sources": [
                {"secret": {"name": "s", "items": [{"key": "a", "path": "pa"}]}},
                {"configMap": {"name": "c", "items": [{"key": "x", "path": "px", "mode": 0o444}]}},
                {"downwardAPI": {"items": [{"path": "name", "fieldRef": {"fieldPath": "metadata.name"}}]}},
                {"serviceAccountToken": {"path": "token", "expirationSeconds": 3600}},
            ]}},
        ],
        "containers": [{
            "name": "main",
            "image": busybox(),
            "command": ["sh", "-c", script],
            "volumeMounts": [
                {"name": "s", "mountPath": "/s"},
                {"name": "c", "mountPath": "/c"},
                {"name": "p", "mountPath": "/p"},
            ],
        }],
    });
    let log = output_of(cluster, agent, &ns, "vols", spec);
    assert_eq!(
        log,
        "onetwo\nsub\nwhy\noneexvols\ntoken\n\
         /s/a 600\n/c/sub/why 640\n/p/pa 644\n/p/px 444\nread-only\n"
    );
    cluster.delete_namespace(&ns);
}

#[test]
fn a_missing_secret_volume_holds_its_pod_and_no_other() {
    let Some((cluster, agent)) = setup() else {
        return;
    };
    let ns = cluster.fresh_namespace("agent-novol");
    let spec = serde_json::json!({
        "volumes": [{"name": "later", "secret": {"secretName": "later"}}],
        "containers": [{
            "name": "main",
            "image": busybox(),
            "command": ["cat", "/later/t"],
            "volumeMounts": [{"name": "later", "mountPath": "/later"}],
        }],
    });
    create_pod(cluster, &ns, "waits", spec);
    let event = wait_for(
        agent,
        Duration::from_secs(30),
        "a FailedMount event",
        || {
            let out = cluster.kubectl_ok(&[
                "get",
                "events",
                "-n",
                &ns,
                "--field-selector",
                "involvedObject.name=waits,reason=FailedMount",
                "-o",
                "json",
            ]);
            json(&out.stdout)["items"].get(0).cloned()
        },
    );
    let message = event["message"].as_str().unwrap_or_default();
    assert!(message.contains("secret \"later\" not found"), "{event}");
    // Another pod runs meanwhile.
    run_pod(cluster, &ns, "other", &busybox(), &["true"]);
    wait_phase(cluster, agent, &ns, "other", "Succeeded");
    let waiting = pod(cluster, &ns, "waits").expect("the waiting pod");
    assert_eq!(waiting["status"]["phase"], "Pending", "{waiting}");
    assert_eq!(
        waiting["status"]["containerStatuses"][0]["state"]["waiting"]["reason"],
        "ContainerCreating",
        "{waiting}"
    );
    cluster.kubectl_ok(&[
        "create",
        "secret",
        "generic",
        "later",
        "-n",
        &ns,
        "--from-literal=t=now",
    ]);
    wait_phase(cluster, agent, &ns, "waits", "Succeeded");
    // The log is kept line by line: the last line ends too.
    assert_eq!(log_of(agent, &ns, "waits"), "now\n");
    cluster.delete_namespace(&ns);
}

/// The decoded value of `key` in Secret `name`.
fn secret_value(cluster: &Cluster, ns: &str, name: &str, key: &str) -> String {
    use base64::Engine as _;
    let out = cluster.kubectl_ok(&["get", "secret", name, "-n", ns, "-o", "json"]);
    let encoded = json(&out.stdout)["data"][key]
        .as_str()
        .unwrap_or_else(|| panic!("secret {name} has no {key}"))
        .to_string();
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(encoded)
        .expect("base64 secret data");
    String::from_utf8(bytes).expect("UTF-8 secret data")
}

#[test]
fn containers_get_the_service_account_token_and_the_api_servers_address() {
    let Some((cluster, agent)) = setup() else {
        return;
    };
    let ns = cluster.fresh_namespace("agent-sa");
    let script = "d=/var/run/secrets/kubernetes.io/serviceaccount; \
        echo \"$KUBERNETES_SERVICE_HOST:$KUBERNETES_SERVICE_PORT\"; \
        cat $d/namespace; echo; cat $d/token; echo; head -n 1 $d/ca.crt; \
        if (echo x > $d/new) 2>/dev/null; then echo writable; else echo read-only; fi";
    let spec = serde_json::json!({"containers": [{
        "name": "main",
        "image": busybox(),
        "command": ["sh", "-c", script],
    }]});
    let log = output_of(cluster, agent, &ns, "sa", spec);
    // The ServiceAccount admission plugin added the token volume.
    let pod = pod(cluster, &ns, "sa").expect("the pod");
    let secret = pod["spec"]["volumes"]
        .as_array()
        .and_then(|v| v.iter().find_map(|v| v["secret"]["secretName"].as_str()))
        .unwrap_or_else(|| panic!("no secret volume in {pod}"))
        .to_string();
    assert!(secret.starts_with("default-token-"), "{secret}");
    let token = secret_value(cluster, &ns, &secret, "token");
    let server = cluster
        .server()
        .strip_prefix("https://")
        .expect("an https server");
    assert_eq!(
        log,
        format!("{server}\n{ns}\n{token}\n-----BEGIN CERTIFICATE-----\nread-only\n")
    );
    cluster.delete_namespace(&ns);
}

#[test]
fn downward_api_env_gives_the_pods_own_fields() {
    let Some((cluster, agent)) = setup() else {
        return;
    };
    let ns = cluster.fresh_namespace("agent-downward");
    let field = |name: &str, path: &str| serde_json::json!({"name": name, "valueFrom": {"fieldRef": {"fieldPath": path}}});
    let manifest = serde_json::json!({
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {
            "name": "me",
            "namespace": ns,
            "labels": {"x": "label-x"},
            "annotations": {"x": "annotation-x"},
        },
        "spec": {
            "restartPolicy": "Never",
            "containers": [{
                "name": "main",
                "image": busybox(),
                "command": ["sh", "-c", "echo \"$N|$NS|$UID_|$NODE|$SA|$IP|$L|$A\""],
                "env": [
                    field("N", "metadata.name"),
                    field("NS", "metadata.namespace"),
                    field("UID_", "metadata.uid"),
                    field("NODE", "spec.nodeName"),
                    field("SA", "spec.serviceAccountName"),
                    field("IP", "status.podIP"),
                    field("L", "metadata.labels['x']"),
                    field("A", "metadata.annotations['x']"),
                ],
            }],
        },
    });
    cluster.kubectl_stdin_ok(&["create", "-f", "-"], &manifest.to_string());
    let pod = wait_phase(cluster, agent, &ns, "me", "Succeeded");
    let uid = pod["metadata"]["uid"].as_str().expect("a uid");
    assert_eq!(
        log_of(agent, &ns, "me"),
        format!(
            "me|{ns}|{uid}|{}|default|127.0.0.1|label-x|annotation-x\n",
            agent.node()
        )
    );
    assert_eq!(pod["status"]["podIP"], "127.0.0.1", "{pod}");
    cluster.delete_namespace(&ns);
}
