//! The local test cluster: a real kube-apiserver (1.20, serving batch/v1
//! CronJob too), etcd and kube-controller-manager on loopback, started by
//! `scripts/cluster`.
//!
//! Kubernetes tests run against this real API server (validation, defaulting,
//! RBAC, Jobs, CronJobs, garbage collection), not a mock, and judge with the
//! machine's `kubectl`. Pods run only in tests that start the node agent
//! ([`Cluster::agent`], the `kiln-node-agent` package); otherwise they are
//! created but never run.
//!
//! ```no_run
//! use kiln_testsupport::cluster::Cluster;
//!
//! let Some(cluster) = Cluster::get() else { return }; // KILN_TEST_NO_CLUSTER=1
//! let ns = cluster.fresh_namespace("doc");
//! let out = cluster.kubectl_ok(&["get", "serviceaccounts", "-n", &ns, "-o", "name"]);
//! assert!(out.stdout.contains("serviceaccount/default"));
//! cluster.delete_namespace(&ns);
//! ```

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use crate::{EnvFile, RunOutput, display_cmd, output_with_stdin};

/// Where `scripts/cluster` keeps its state when `KILN_CLUSTER_DIR` is not set;
/// both sides must agree on it, so it is spelled once here.
pub const DEFAULT_CLUSTER_DIR: &str = "/var/tmp/kiln-cluster";

/// Set to `1` to skip the cluster tests (they pass without doing anything).
/// CI does not set it: there, a missing cluster is a failure.
pub const OPT_OUT_VAR: &str = "KILN_TEST_NO_CLUSTER";

/// The script that builds and starts the cluster, in this checkout.
const SCRIPT: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../scripts/cluster");

/// The test cluster `scripts/cluster` started: its kubeconfig and server.
#[derive(Debug, Clone)]
pub struct Cluster {
    dir: PathBuf,
    kubeconfig: PathBuf,
    server: String,
    version: String,
    context: String,
}

impl Cluster {
    /// The cluster, checked once per test process: read from
    /// `$KILN_CLUSTER_DIR/env` (default [`DEFAULT_CLUSTER_DIR`]), and when that
    /// is missing or the API server is not ready, `scripts/cluster` is run
    /// first (it builds the binaries the first time: minutes).
    ///
    /// `None` only when [`OPT_OUT_VAR`] is `1`: the caller returns early.
    ///
    /// # Panics
    ///
    /// When the cluster cannot be started or is not ready after
    /// `scripts/cluster`, with that script's output. Tests never skip
    /// silently.
    pub fn get() -> Option<&'static Cluster> {
        if std::env::var(OPT_OUT_VAR).is_ok_and(|v| v == "1") {
            eprintln!("{OPT_OUT_VAR}=1: not using the test cluster, the test does nothing");
            return None;
        }
        static CLUSTER: OnceLock<Cluster> = OnceLock::new();
        Some(CLUSTER.get_or_init(|| {
            let dir = std::env::var_os("KILN_CLUSTER_DIR")
                .filter(|d| !d.is_empty())
                .map_or_else(|| PathBuf::from(DEFAULT_CLUSTER_DIR), PathBuf::from);
            match Cluster::load(&dir).and_then(|c| c.ready().map(|()| c)) {
                Ok(cluster) => return cluster,
                Err(why) => eprintln!("test cluster not ready ({why}): running {SCRIPT}"),
            }
            let out = Command::new("bash")
                .arg(SCRIPT)
                .env("KILN_CLUSTER_DIR", &dir)
                .output()
                .unwrap_or_else(|e| panic!("cannot run {SCRIPT}: {e}"));
            let shown = |o: &std::process::Output| {
                format!(
                    "--- stderr ---\n{}\n--- stdout ---\n{}",
                    String::from_utf8_lossy(&o.stderr).trim_end(),
                    String::from_utf8_lossy(&o.stdout).trim_end()
                )
            };
            if !out.status.success() {
                panic!(
                    "\n\n*** kiln test cluster: {SCRIPT} failed ({})\n{}\n",
                    out.status,
                    shown(&out)
                );
            }
            match Cluster::load(&dir).and_then(|c| c.ready().map(|()| c)) {
                Ok(cluster) => cluster,
                Err(why) => panic!(
                    "\n\n*** kiln test cluster not usable after {SCRIPT}: {why}\n{}\n",
                    shown(&out)
                ),
            }
        }))
    }

    /// Reads the env file without checking the server.
    fn load(dir: &Path) -> Result<Cluster, String> {
        let env = EnvFile::read(dir)?;
        let get = |key: &str| env.get(key);
        let kubeconfig = PathBuf::from(get("KUBECONFIG")?);
        if !kubeconfig.is_file() {
            return Err(format!("{} is missing", kubeconfig.display()));
        }
        Ok(Cluster {
            dir: dir.to_owned(),
            kubeconfig,
            server: get("KILN_CLUSTER_SERVER")?,
            version: get("KILN_CLUSTER_VERSION")?,
            context: get("KILN_CLUSTER_CONTEXT")?,
        })
    }

    /// `/readyz` answers `ok`.
    fn ready(&self) -> Result<(), String> {
        let out = self.kubectl(&["get", "--raw", "/readyz"]);
        if out.code == 0 && out.stdout.trim() == "ok" {
            Ok(())
        } else {
            Err(format!(
                "`kubectl get --raw /readyz` gave exit code {}: {}{}",
                out.code,
                out.stdout.trim(),
                out.stderr.trim()
            ))
        }
    }

    /// The state directory (logs of etcd, kube-apiserver and
    /// kube-controller-manager are in `logs/`).
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The admin kubeconfig (bearer token in `system:masters`, CA embedded).
    pub fn kubeconfig(&self) -> &Path {
        &self.kubeconfig
    }

    /// A kube-rs client for the cluster, from its kubeconfig: what kiln's
    /// Kubernetes backend uses, so tests talk to the API the same way.
    ///
    /// # Panics
    ///
    /// When the kubeconfig cannot be read or the client cannot be built.
    pub async fn client(&self) -> kube::Client {
        let kubeconfig = kube::config::Kubeconfig::read_from(&self.kubeconfig)
            .unwrap_or_else(|e| panic!("reading {}: {e}", self.kubeconfig.display()));
        let config = kube::Config::from_custom_kubeconfig(
            kubeconfig,
            &kube::config::KubeConfigOptions::default(),
        )
        .await
        .unwrap_or_else(|e| panic!("kubeconfig {}: {e}", self.kubeconfig.display()));
        kube::Client::try_from(config).unwrap_or_else(|e| panic!("building a kube client: {e}"))
    }

    /// The API server's URL, `https://127.0.0.1:6443`.
    pub fn server(&self) -> &str {
        &self.server
    }

    /// The API server's version, e.g. `v1.20.2`.
    pub fn version(&self) -> &str {
        &self.version
    }

    /// The kubeconfig's context name, `kiln-test`.
    pub fn context(&self) -> &str {
        &self.context
    }

    fn kubectl_cmd(&self, args: &[&str]) -> Command {
        let mut cmd = Command::new("kubectl");
        cmd.env("KUBECONFIG", &self.kubeconfig)
            .arg("--request-timeout=30s")
            .args(args);
        cmd
    }

    /// Runs the machine's `kubectl ARGS` against the cluster as admin and
    /// returns what happened without judging it.
    ///
    /// # Panics
    ///
    /// When kubectl cannot be started.
    pub fn kubectl(&self, args: &[&str]) -> RunOutput {
        let out = self
            .kubectl_cmd(args)
            .stdin(std::process::Stdio::null())
            .output()
            .unwrap_or_else(|e| {
                panic!(
                    "cannot run `{}`: {e} (scripts/cluster installs kubectl)",
                    display_cmd("kubectl", args)
                )
            });
        RunOutput::from_parts(out.status, &out.stdout, &out.stderr)
    }

    /// [`Cluster::kubectl`] with `stdin` fed to it, e.g. a manifest for
    /// `apply -f -`.
    pub fn kubectl_stdin(&self, args: &[&str], stdin: &str) -> RunOutput {
        let out = output_with_stdin(&mut self.kubectl_cmd(args), stdin).unwrap_or_else(|e| {
            panic!("cannot run `{}`: {e}", display_cmd("kubectl", args));
        });
        RunOutput::from_parts(out.status, &out.stdout, &out.stderr)
    }

    /// [`Cluster::kubectl`], panicking with the command line and its output
    /// unless it exits 0.
    pub fn kubectl_ok(&self, args: &[&str]) -> RunOutput {
        checked(args, self.kubectl(args))
    }

    /// The node agent built from this workspace, for tests of other
    /// packages (cargo gives a test the path of its own package's binaries
    /// only): `kiln-node-agent` beside the test's target directory, built
    /// with cargo first when it is not there.
    ///
    /// # Panics
    ///
    /// When it is missing and cannot be built.
    pub fn workspace_agent(&self) -> &'static NodeAgent {
        let exe = std::env::current_exe().unwrap_or_else(|e| panic!("current_exe: {e}"));
        // target/<profile>/deps/<test> -> target/<profile>/kiln-node-agent
        let profile = exe
            .parent()
            .and_then(Path::parent)
            .unwrap_or_else(|| panic!("{} has no target directory", exe.display()));
        let bin = profile.join("kiln-node-agent");
        if !bin.is_file() {
            let status = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()))
                .args(["build", "-p", "kiln-node-agent", "--bin", "kiln-node-agent"])
                .env("CARGO_TARGET_DIR", profile.parent().unwrap_or(profile))
                .status()
                .unwrap_or_else(|e| panic!("running cargo build -p kiln-node-agent: {e}"));
            assert!(
                status.success() && bin.is_file(),
                "cargo build -p kiln-node-agent failed ({status}); {} is missing",
                bin.display()
            );
        }
        self.agent(&bin)
    }

    /// [`Cluster::kubectl_stdin`], panicking unless it exits 0.
    pub fn kubectl_stdin_ok(&self, args: &[&str], stdin: &str) -> RunOutput {
        checked(args, self.kubectl_stdin(args, stdin))
    }

    /// Creates a namespace no other test (or earlier run) uses, named
    /// `PREFIX-<unique suffix>`, and waits (up to 30 s) until the
    /// controller-manager has given it its `default` ServiceAccount and that
    /// account its token Secret, so pods can be created in it at once (a
    /// 1.20 API server refuses a pod whose service account has no token
    /// yet: "No API token found for service account").
    ///
    /// # Panics
    ///
    /// When the namespace cannot be created, or its ServiceAccount or token
    /// does not appear.
    pub fn fresh_namespace(&self, prefix: &str) -> String {
        let name = unique_name(prefix);
        self.kubectl_ok(&["create", "namespace", &name]);
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let out = self.kubectl(&[
                "get",
                "serviceaccount",
                "default",
                "-n",
                &name,
                "-o",
                "jsonpath={.secrets[*].name}",
            ]);
            if out.code == 0 && !out.stdout.trim().is_empty() {
                return name;
            }
            assert!(
                Instant::now() < deadline,
                "namespace {name}: no `default` ServiceAccount with a token after 30 s \
                 (is kube-controller-manager running? logs in {}/logs): {}",
                self.dir.display(),
                out.stderr.trim()
            );
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    /// Stops kube-apiserver alone (etcd and the controller-manager keep
    /// running) and starts it again with `scripts/cluster start`, returning
    /// once `/readyz` answers `ok`: for tests of clients that must outlive
    /// an API server restart, as on a real cluster's upgrade.
    ///
    /// Every other test using the cluster at that moment sees the outage,
    /// so a test calling this must run alone (nextest: `threads-required =
    /// "num-test-threads"` in `.config/nextest.toml`).
    ///
    /// # Panics
    ///
    /// When the API server's pid cannot be read, it does not stop, or the
    /// script fails or leaves it not ready.
    pub fn restart_apiserver(&self) {
        let pid_file = self.dir.join("run/kube-apiserver.pid");
        let pid = std::fs::read_to_string(&pid_file)
            .unwrap_or_else(|e| panic!("reading {}: {e}", pid_file.display()));
        let pid = pid.trim();
        assert!(
            api_server_runs(pid),
            "pid {pid} in {} is not a running kube-apiserver",
            pid_file.display()
        );
        // As `scripts/cluster stop`: SIGTERM, and SIGKILL when it is still
        // there (this 1.20 server often stops listening on SIGTERM but
        // never exits).
        for (signal, wait) in [("-TERM", 5), ("-KILL", 10)] {
            let sent = Command::new("kill")
                .args([signal, pid])
                .status()
                .unwrap_or_else(|e| panic!("cannot run kill: {e}"));
            let deadline = Instant::now() + Duration::from_secs(wait);
            while sent.success() && api_server_runs(pid) && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(100));
            }
        }
        assert!(
            !api_server_runs(pid),
            "kube-apiserver (pid {pid}) still runs after SIGKILL"
        );
        let out = Command::new("bash")
            .arg(SCRIPT)
            .arg("start")
            .env("KILN_CLUSTER_DIR", &self.dir)
            .output()
            .unwrap_or_else(|e| panic!("cannot run {SCRIPT}: {e}"));
        assert!(
            out.status.success(),
            "{SCRIPT} start failed ({}):\n{}{}",
            out.status,
            String::from_utf8_lossy(&out.stderr),
            String::from_utf8_lossy(&out.stdout)
        );
        if let Err(why) = self.ready() {
            panic!("kube-apiserver not ready after {SCRIPT} start: {why}");
        }
    }

    /// Deletes a namespace without waiting (best effort: tests call it at
    /// the end so the cluster does not fill up over many runs).
    pub fn delete_namespace(&self, name: &str) {
        let _ = self.kubectl(&["delete", "namespace", name, "--wait=false"]);
    }
}

/// The node agent this test process started (see [`Cluster::agent`]).
#[derive(Debug)]
pub struct NodeAgent {
    node: String,
    state_dir: PathBuf,
    log: PathBuf,
    /// Held for the life of the test process: the agent exits when its
    /// standard input closes, so it never outlives the tests.
    _child: Mutex<std::process::Child>,
}

impl NodeAgent {
    /// The Node's name, `kiln-node`.
    pub fn node(&self) -> &str {
        &self.node
    }

    /// The agent's state directory (image cache, scratch, container logs).
    pub fn state_dir(&self) -> &Path {
        &self.state_dir
    }

    /// The agent's own log (its stderr).
    pub fn log(&self) -> &Path {
        &self.log
    }

    /// Where the agent keeps a container's output, as
    /// `kiln_node_agent::log_path` lays it out.
    pub fn container_log(&self, namespace: &str, pod: &str, container: &str) -> PathBuf {
        self.state_dir
            .join("logs")
            .join(namespace)
            .join(pod)
            .join(format!("{container}.log"))
    }
}

impl Cluster {
    /// Starts the node agent `bin` once per test process (tests of the
    /// `kiln-node-agent` package pass `env!("CARGO_BIN_EXE_kiln-node-agent")`)
    /// as Node `kiln-node`, with its state in `<cluster dir>/node-agent`,
    /// its log endpoint on a free port and the bench's CA trusted for
    /// registries (as a node's runtime is set up for a private registry; it
    /// still has no credentials: pods need an image pull secret for the TLS
    /// registry), and waits (up to 60 s) until it has registered the Node
    /// Ready.
    ///
    /// # Panics
    ///
    /// When the agent cannot start or does not register, with its log.
    pub fn agent(&self, bin: &Path) -> &'static NodeAgent {
        static AGENT: OnceLock<NodeAgent> = OnceLock::new();
        AGENT.get_or_init(|| {
            let node = "kiln-node".to_string();
            let state_dir = self.dir.join("node-agent");
            std::fs::create_dir_all(&state_dir)
                .unwrap_or_else(|e| panic!("creating {}: {e}", state_dir.display()));
            let log = state_dir.join("agent.log");
            let log_file = std::fs::File::create(&log)
                .unwrap_or_else(|e| panic!("creating {}: {e}", log.display()));
            let mut child = Command::new(bin)
                .arg("--kubeconfig")
                .arg(&self.kubeconfig)
                .arg("--state-dir")
                .arg(&state_dir)
                .args(["--node-name", &node, "--gpus", "1", "--exit-on-stdin-eof"])
                // The log endpoint (`kubectl logs`) on a free port, with the
                // API server's own serving certificate (127.0.0.1): the API
                // server does not verify the kubelet's certificate (no
                // --kubelet-certificate-authority), so any would do.
                .args(["--kubelet-port", "0"])
                .arg("--tls-cert-file")
                .arg(self.dir.join("pki/apiserver.crt"))
                .arg("--tls-private-key-file")
                .arg(self.dir.join("pki/apiserver.key"))
                .arg("--registry-ca")
                .arg(crate::Bench::get().ca_cert())
                // No credentials of its own, whatever this machine's
                // docker config holds: a directory without config.json.
                .env("DOCKER_CONFIG", state_dir.join("no-docker-config"))
                .stdin(std::process::Stdio::piped())
                .stdout(std::process::Stdio::null())
                .stderr(log_file)
                .spawn()
                .unwrap_or_else(|e| panic!("cannot start {}: {e}", bin.display()));
            let registered = format!("node {node} registered");
            let deadline = Instant::now() + Duration::from_secs(60);
            loop {
                let text = std::fs::read_to_string(&log).unwrap_or_default();
                if text.contains(&registered) {
                    break;
                }
                if let Ok(Some(status)) = child.try_wait() {
                    panic!(
                        "\n\n*** kiln node agent {} exited ({status}) before registering; its log:\n{text}\n",
                        bin.display()
                    );
                }
                assert!(
                    Instant::now() < deadline,
                    "\n\n*** kiln node agent {} did not register node {node} in 60 s; its log:\n{text}\n",
                    bin.display()
                );
                std::thread::sleep(Duration::from_millis(100));
            }
            NodeAgent {
                node,
                state_dir,
                log,
                _child: Mutex::new(child),
            }
        })
    }
}

/// Process `pid` is alive and a kube-apiserver, as `scripts/cluster`
/// checks it (a zombie has no executable and counts as gone).
fn api_server_runs(pid: &str) -> bool {
    std::fs::read_link(format!("/proc/{pid}/exe"))
        .is_ok_and(|exe| exe.to_string_lossy().contains("kube-apiserver"))
}

fn checked(args: &[&str], out: RunOutput) -> RunOutput {
    if out.code != 0 {
        panic!(
            "`{}` failed with exit code {}\n--- stderr ---\n{}\n--- stdout ---\n{}",
            display_cmd("kubectl", args),
            out.code,
            out.stderr.trim_end(),
            out.stdout.trim_end()
        );
    }
    out
}

/// `PREFIX-<pid><counter><time>` as a valid DNS-1123 label (at most 63
/// characters, lower case alphanumerics and `-`).
fn unique_name(prefix: &str) -> String {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos());
    let suffix = format!(
        "{:x}-{:x}-{:x}",
        std::process::id(),
        COUNTER.fetch_add(1, Ordering::Relaxed),
        nanos & 0xffff_ffff
    );
    let mut prefix: String = prefix
        .chars()
        .map(|c| c.to_ascii_lowercase())
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '-' })
        .collect();
    prefix.truncate(63 - suffix.len() - 1);
    let prefix = prefix.trim_matches('-');
    if prefix.is_empty() {
        format!("t-{suffix}")
    } else {
        format!("{prefix}-{suffix}")
    }
}

#[cfg(test)]
mod tests {
    use super::unique_name;

    #[test]
    fn unique_names_are_dns_labels() {
        let long = "A_Very/Long prefix that goes on and on and on and on and on and on";
        for p in ["rbac", long, "--", ""] {
            let n = unique_name(p);
            assert!(n.len() <= 63, "{n}");
            assert!(
                n.chars()
                    .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-'),
                "{n}"
            );
            assert!(!n.starts_with('-') && !n.ends_with('-'), "{n}");
        }
        assert_ne!(unique_name("x"), unique_name("x"));
    }
}
