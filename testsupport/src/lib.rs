//! Test support: the local registries and the judges of kiln's output.
//!
//! kiln's integration tests run against real servers and judge kiln's output
//! with independent, widely used tools rather than with kiln's own code:
//!
//! - [`Bench`]: the local registries `scripts/setup` starts (plain HTTP on
//!   127.0.0.1:5000, TLS + basic auth on 127.0.0.1:5443) and the base images it
//!   pushes. A missing bench is a loud failure, never a silent skip.
//! - [`cluster::Cluster`]: the local Kubernetes control plane `scripts/cluster`
//!   starts (kube-apiserver 1.20 on 127.0.0.1:6443, etcd,
//!   kube-controller-manager), judged with the machine's `kubectl`.
//! - judges: [`skopeo_inspect`], [`skopeo_copy`], [`umoci_unpack`] and
//!   [`runc_run`] shell out to skopeo, umoci and runc. Each panics with the
//!   command line and its stderr when the tool fails, so a test reads as a
//!   list of steps.
//!
//! Typical use, from another crate's `tests/`:
//!
//! ```no_run
//! use kiln_testsupport::{Bench, runc_run, skopeo_copy, umoci_unpack};
//!
//! let bench = Bench::get();
//! let dir = std::env::temp_dir().join("doc-example");
//! let layout = dir.join("layout");
//! skopeo_copy(
//!     &format!("docker://{}", bench.base_busybox()),
//!     &format!("oci:{}:latest", layout.display()),
//!     &["--src-tls-verify=false"],
//! );
//! umoci_unpack(&layout, "latest", &dir.join("bundle"));
//! let out = runc_run(&dir.join("bundle"), &["/bin/sh", "-c", "echo ok"]);
//! assert_eq!((out.code, out.stdout.as_str()), (0, "ok\n"));
//! ```

// A test reads best as one list of steps; the 120-line limit is for the
// product's code.
#![cfg_attr(test, allow(clippy::too_many_lines))]

pub mod cluster;
pub mod fixture;
pub mod http;
pub mod imagetree;
pub mod imports;
pub mod proxy;

use std::collections::HashMap;
use std::ffi::OsStr;
use std::io::{Read, Write};
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::sync::OnceLock;
use std::sync::atomic::{AtomicU64, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use serde_json::Value;

/// Where `scripts/setup` keeps the bench when `KILN_BENCH_DIR` is not set;
/// both sides must agree on it, so it is spelled once here.
pub const DEFAULT_BENCH_DIR: &str = "/var/tmp/kiln-bench";

/// How long [`runc_run`] lets a container run before it kills it and fails
/// the test: a hung container must not hang CI.
pub const RUNC_TIMEOUT: Duration = Duration::from_secs(300);

/// The local test bench that `scripts/setup` prepared: registry addresses, the
/// TLS registry's CA and credentials, and the base images.
///
/// It exists so that every integration test finds the same servers the same
/// way, and fails loudly (with the fix: run `scripts/setup`) when they are not
/// there.
#[derive(Clone)]
pub struct Bench {
    dir: PathBuf,
    registry: String,
    tls_registry: String,
    ca_cert: PathBuf,
    cert_dir: String,
    username: String,
    password: String,
    creds: String,
    base_python: String,
    base_busybox: String,
}

impl Bench {
    /// The bench, read from `$KILN_BENCH_DIR/env` (default
    /// [`DEFAULT_BENCH_DIR`]) and checked once per test process: both
    /// registries must answer `/v2/` (the TLS one verified against the bench
    /// CA, with the bench credentials).
    ///
    /// # Panics
    ///
    /// With a message saying to run `scripts/setup` when the bench is missing
    /// or a registry does not answer. Tests that need the bench fail; they are
    /// never skipped.
    pub fn get() -> &'static Bench {
        static BENCH: OnceLock<Bench> = OnceLock::new();
        BENCH.get_or_init(|| {
            let dir = std::env::var_os("KILN_BENCH_DIR")
                .filter(|d| !d.is_empty())
                .map_or_else(|| PathBuf::from(DEFAULT_BENCH_DIR), PathBuf::from);
            match Bench::load(&dir).and_then(|b| b.check().map(|()| b)) {
                Ok(bench) => bench,
                Err(why) => panic!(
                    "\n\n*** kiln test bench not usable: {why}\n\
                     *** run scripts/setup first (it starts the local registries \
                     and pushes the base images; bench dir: {})\n\n",
                    dir.display()
                ),
            }
        })
    }

    /// Reads the env file without checking the servers.
    fn load(dir: &Path) -> Result<Bench, String> {
        let env = EnvFile::read(dir)?;
        let get = |key: &str| env.get(key);
        let password_file = PathBuf::from(get("KILN_TLS_PASSWORD_FILE")?);
        let password = std::fs::read_to_string(&password_file)
            .map_err(|e| format!("cannot read {}: {e}", password_file.display()))?
            .trim()
            .to_owned();
        if password.is_empty() {
            return Err(format!("{} is empty", password_file.display()));
        }
        let ca_cert = PathBuf::from(get("KILN_TLS_CA")?);
        if !ca_cert.is_file() {
            return Err(format!("CA certificate {} is missing", ca_cert.display()));
        }
        let cert_dir = get("KILN_TLS_CERT_DIR")?;
        if !Path::new(&cert_dir).join("ca.crt").is_file() {
            return Err(format!("{cert_dir}/ca.crt is missing"));
        }
        let username = get("KILN_TLS_USER")?;
        Ok(Bench {
            dir: dir.to_owned(),
            registry: get("KILN_REGISTRY")?,
            tls_registry: get("KILN_TLS_REGISTRY")?,
            ca_cert,
            cert_dir,
            creds: format!("{username}:{password}"),
            username,
            password,
            base_python: get("KILN_BASE_PYTHON")?,
            base_busybox: get("KILN_BASE_BUSYBOX")?,
        })
    }

    /// Both registries answer `/v2/` with 200.
    fn check(&self) -> Result<(), String> {
        let plain = format!("http://{}/v2/", self.registry);
        let code = curl_status(&plain, &[], None)?;
        if code != "200" {
            return Err(format!("{plain} answered HTTP {code}, expected 200"));
        }
        let tls = format!("https://{}/v2/", self.tls_registry);
        let ca = self.ca_cert.to_string_lossy();
        // The credentials go through curl's stdin, not its command line.
        let config = format!("user = \"{}\"\n", self.creds.replace('"', "\\\""));
        let code = curl_status(&tls, &["--cacert", &ca, "--config", "-"], Some(&config))?;
        if code != "200" {
            return Err(format!(
                "{tls} answered HTTP {code} with the bench CA and credentials, expected 200"
            ));
        }
        Ok(())
    }

    /// The bench's state directory, for tests that want to look at the
    /// registries' logs or storage.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// `host:port` of the plain-HTTP registry without auth (skopeo needs
    /// `--tls-verify=false` for it); where base images live and most tests
    /// push.
    pub fn registry(&self) -> &str {
        &self.registry
    }

    /// `host:port` of the TLS registry with basic auth, to prove kiln handles
    /// a private CA and credentials.
    pub fn tls_registry(&self) -> &str {
        &self.tls_registry
    }

    /// PEM file of the CA that signed the TLS registry's certificate, for
    /// clients (kiln included) that take a CA file.
    pub fn ca_cert(&self) -> &Path {
        &self.ca_cert
    }

    /// A directory holding just the CA as `ca.crt`: what skopeo's
    /// `--cert-dir` and the containers tooling expect.
    pub fn cert_dir(&self) -> &str {
        &self.cert_dir
    }

    /// The TLS registry's user name.
    pub fn username(&self) -> &str {
        &self.username
    }

    /// The TLS registry's password (generated once by `scripts/setup`).
    pub fn password(&self) -> &str {
        &self.password
    }

    /// `user:password`, the form skopeo's `--creds` options take.
    pub fn creds(&self) -> &str {
        &self.creds
    }

    /// Full reference of the Debian bookworm + Python 3.11 base image on the
    /// plain registry: the parent image of the example pipelines.
    pub fn base_python(&self) -> &str {
        &self.base_python
    }

    /// Full reference of the small busybox image on the plain registry: a
    /// parent image that is quick to pull, unpack and run.
    pub fn base_busybox(&self) -> &str {
        &self.base_busybox
    }

    /// skopeo options to talk to the TLS registry as the source or only
    /// image (`inspect`): credentials and CA.
    pub fn tls_args(&self) -> [&str; 4] {
        ["--creds", &self.creds, "--cert-dir", &self.cert_dir]
    }

    /// skopeo `copy` options to read from the TLS registry.
    pub fn tls_src_args(&self) -> [&str; 4] {
        ["--src-creds", &self.creds, "--src-cert-dir", &self.cert_dir]
    }

    /// skopeo `copy` options to write to the TLS registry.
    pub fn tls_dest_args(&self) -> [&str; 4] {
        [
            "--dest-creds",
            &self.creds,
            "--dest-cert-dir",
            &self.cert_dir,
        ]
    }
}

/// Shows everything but the password, so a bench in a panic message or a
/// log does not leak it.
impl std::fmt::Debug for Bench {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Bench")
            .field("dir", &self.dir)
            .field("registry", &self.registry)
            .field("tls_registry", &self.tls_registry)
            .field("ca_cert", &self.ca_cert)
            .field("cert_dir", &self.cert_dir)
            .field("username", &self.username)
            .field("password", &"***")
            .field("base_python", &self.base_python)
            .field("base_busybox", &self.base_busybox)
            .finish()
    }
}

/// `KEY=value` lines of a sourceable env file; comments, blank lines, an
/// `export ` prefix and quotes around the value are tolerated.
/// The `env` file a set-up script writes into its state directory.
pub(crate) struct EnvFile {
    path: PathBuf,
    vars: HashMap<String, String>,
}

impl EnvFile {
    /// Reads `DIR/env`.
    pub(crate) fn read(dir: &Path) -> Result<EnvFile, String> {
        let path = dir.join("env");
        let text = std::fs::read_to_string(&path)
            .map_err(|e| format!("cannot read {}: {e}", path.display()))?;
        Ok(EnvFile {
            vars: parse_env(&text),
            path,
        })
    }

    /// A variable that must be there and not empty.
    pub(crate) fn get(&self, key: &str) -> Result<String, String> {
        self.vars
            .get(key)
            .filter(|v| !v.is_empty())
            .cloned()
            .ok_or_else(|| format!("{} has no {key}", self.path.display()))
    }
}

fn parse_env(text: &str) -> HashMap<String, String> {
    text.lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .filter_map(|l| {
            let l = l.strip_prefix("export ").unwrap_or(l);
            let (k, v) = l.split_once('=')?;
            let v = v.trim();
            let v = ['"', '\'']
                .iter()
                .find_map(|q| v.strip_prefix(*q).and_then(|v| v.strip_suffix(*q)))
                .unwrap_or(v);
            Some((k.trim().to_owned(), v.to_owned()))
        })
        .collect()
}

/// The HTTP status curl got for `url` ("000" when it could not connect).
fn curl_status(url: &str, args: &[&str], stdin: Option<&str>) -> Result<String, String> {
    let mut cmd = Command::new("curl");
    cmd.args([
        "-sS",
        "--max-time",
        "10",
        "-o",
        "/dev/null",
        "-w",
        "%{http_code}",
    ])
    .args(args)
    .arg(url);
    let out = output_with_stdin(&mut cmd, stdin.unwrap_or(""))
        .map_err(|e| format!("cannot run curl (is it installed?): {e}"))?;
    let code = String::from_utf8_lossy(&out.stdout).trim().to_owned();
    if code == "000" || code.is_empty() {
        return Err(format!(
            "{url} does not answer: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        ));
    }
    Ok(code)
}

fn output_with_stdin(cmd: &mut Command, stdin: &str) -> std::io::Result<std::process::Output> {
    let mut child = cmd
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()?;
    if let Some(mut pipe) = child.stdin.take() {
        pipe.write_all(stdin.as_bytes())?;
    }
    child.wait_with_output()
}

/// What a command (or a container) printed and how it ended: the judges'
/// common result, so tests can assert on any of the three.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RunOutput {
    /// Exit code; 128 + N when killed by signal N (the shell's convention).
    pub code: i32,
    /// Standard output, lossily decoded as UTF-8.
    pub stdout: String,
    /// Standard error, lossily decoded as UTF-8.
    pub stderr: String,
}

impl RunOutput {
    fn from_parts(status: ExitStatus, stdout: &[u8], stderr: &[u8]) -> RunOutput {
        RunOutput {
            code: exit_code(status),
            stdout: String::from_utf8_lossy(stdout).into_owned(),
            stderr: String::from_utf8_lossy(stderr).into_owned(),
        }
    }
}

fn exit_code(status: ExitStatus) -> i32 {
    status
        .code()
        .or_else(|| status.signal().map(|s| 128 + s))
        .unwrap_or(-1)
}

/// A command line as a test log should show it, with passwords in
/// `--creds`-style options masked.
fn display_cmd<S: AsRef<OsStr>>(program: &str, args: &[S]) -> String {
    let mut shown = vec![program.to_owned()];
    let mut mask_next = false;
    for a in args {
        let a = a.as_ref().to_string_lossy();
        let masked = if mask_next {
            a.split_once(':')
                .map_or_else(|| "***".to_owned(), |(u, _)| format!("{u}:***"))
        } else {
            a.into_owned()
        };
        mask_next = matches!(masked.as_str(), "--creds" | "--src-creds" | "--dest-creds");
        shown.push(if masked.contains(' ') {
            format!("'{masked}'")
        } else {
            masked
        });
    }
    shown.join(" ")
}

/// Runs `program args`; panics when it cannot start.
fn run_unchecked<S: AsRef<OsStr>>(program: &str, args: &[S]) -> RunOutput {
    let out = Command::new(program)
        .args(args)
        .stdin(Stdio::null())
        .output()
        .unwrap_or_else(|e| {
            panic!(
                "cannot run `{}`: {e} (run scripts/setup to install it)",
                display_cmd(program, args)
            )
        });
    RunOutput::from_parts(out.status, &out.stdout, &out.stderr)
}

/// Runs `program args`; panics with the command line and stderr unless it
/// exits 0.
fn run_checked<S: AsRef<OsStr>>(program: &str, args: &[S]) -> RunOutput {
    let out = run_unchecked(program, args);
    if out.code != 0 {
        panic!(
            "`{}` failed with exit code {}\n--- stderr ---\n{}\n--- stdout ---\n{}",
            display_cmd(program, args),
            out.code,
            out.stderr.trim_end(),
            out.stdout.trim_end()
        );
    }
    out
}

/// skopeo's global options for the judges: no signature policy (the images
/// are our own) and a bound on how long one call may take.
const SKOPEO_GLOBAL: [&str; 3] = ["--insecure-policy", "--command-timeout", "300s"];

/// Transports skopeo knows; a reference without one is taken as `docker://`.
const SKOPEO_TRANSPORTS: [&str; 7] = [
    "docker://",
    "oci:",
    "oci-archive:",
    "dir:",
    "docker-archive:",
    "docker-daemon:",
    "containers-storage:",
];

fn with_transport(image_ref: &str) -> String {
    if SKOPEO_TRANSPORTS.iter().any(|t| image_ref.starts_with(t)) {
        image_ref.to_owned()
    } else {
        format!("docker://{image_ref}")
    }
}

/// Polls `check` every 300 ms until it returns `Some`, or panics after
/// `timeout` with `what`: for state a test waits on in a cluster or a
/// registry, where no event tells it.
///
/// # Panics
///
/// When `check` has not answered within `timeout`.
pub fn wait_for<T>(timeout: Duration, what: &str, mut check: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(v) = check() {
            return v;
        }
        assert!(Instant::now() < deadline, "{what}: not within {timeout:?}");
        std::thread::sleep(Duration::from_millis(300));
    }
}

/// Runs skopeo with `args` (after the judges' global options) and returns
/// what happened without judging it: for tests that expect a failure, such
/// as a registry refusing bad credentials.
pub fn skopeo(args: &[&str]) -> RunOutput {
    let all: Vec<&str> = SKOPEO_GLOBAL.iter().chain(args).copied().collect();
    run_unchecked("skopeo", &all)
}

/// `skopeo inspect EXTRA IMAGE` as JSON: how a test sees what a registry (or
/// an OCI layout) really holds, through a client other than kiln.
///
/// `image_ref` may carry a transport (`docker://`, `oci:DIR:TAG`, ...);
/// without one it is a `docker://` reference. `extra_args` go before the
/// image: `--raw` gives the manifest (or index) exactly as stored,
/// `--config` the image config, neither skopeo's summary (Digest, Layers,
/// Labels, ...). For the plain registry pass `--tls-verify=false`; for the
/// TLS one [`Bench::tls_args`].
///
/// # Panics
///
/// With the command line and skopeo's stderr when skopeo fails, or when its
/// output is not JSON.
pub fn skopeo_inspect(image_ref: &str, extra_args: &[&str]) -> Value {
    let image = with_transport(image_ref);
    let args: Vec<&str> = SKOPEO_GLOBAL
        .iter()
        .copied()
        .chain(["inspect"])
        .chain(extra_args.iter().copied())
        .chain([image.as_str()])
        .collect();
    let out = run_checked("skopeo", &args);
    serde_json::from_str(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "`{}` printed something that is not JSON ({e}):\n{}",
            display_cmd("skopeo", &args),
            out.stdout
        )
    })
}

/// The manifest or index exactly as the registry stores it
/// (`skopeo inspect --raw`): to check media types, layer digests and sizes.
pub fn skopeo_inspect_raw(image_ref: &str, extra_args: &[&str]) -> Value {
    let args: Vec<&str> = ["--raw"].iter().chain(extra_args).copied().collect();
    skopeo_inspect(image_ref, &args)
}

/// The image config (`skopeo inspect --config`): to check Env, Cmd, User,
/// WorkingDir, labels, history and diff IDs.
pub fn skopeo_inspect_config(image_ref: &str, extra_args: &[&str]) -> Value {
    let args: Vec<&str> = ["--config"].iter().chain(extra_args).copied().collect();
    skopeo_inspect(image_ref, &args)
}

/// `skopeo copy EXTRA SRC DST`: moves images between registries and OCI
/// layouts with a client other than kiln, e.g. to pull what kiln pushed into
/// a layout that [`umoci_unpack`] can extract. References without a
/// transport are `docker://` ones.
///
/// # Panics
///
/// With the command line and skopeo's stderr when the copy fails.
pub fn skopeo_copy(src: &str, dst: &str, extra_args: &[&str]) {
    let (src, dst) = (with_transport(src), with_transport(dst));
    let args: Vec<&str> = SKOPEO_GLOBAL
        .iter()
        .copied()
        .chain(["copy", "--quiet"])
        .chain(extra_args.iter().copied())
        .chain([src.as_str(), dst.as_str()])
        .collect();
    run_checked("skopeo", &args);
}

/// Whether this process runs as root (umoci needs `--rootless` otherwise).
fn is_root() -> bool {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("Uid:"))
                .and_then(|l| l.split_whitespace().nth(1).map(|euid| euid == "0"))
        })
        .unwrap_or(false)
}

/// `umoci unpack --image LAYOUT:TAG BUNDLE`: extracts an image into an OCI
/// runtime bundle (`rootfs/` + `config.json` made from the image config) with
/// an extractor other than kiln's, so [`runc_run`] can run it.
///
/// `bundle_dir` must not exist yet. As non-root, `--rootless` is added.
///
/// # Panics
///
/// With the command line and umoci's stderr when the unpack fails.
pub fn umoci_unpack(layout_dir: &Path, tag: &str, bundle_dir: &Path) {
    let image = format!("{}:{tag}", layout_dir.display());
    let mut args: Vec<&OsStr> = vec![OsStr::new("unpack")];
    if !is_root() {
        args.push(OsStr::new("--rootless"));
    }
    args.extend([
        OsStr::new("--image"),
        OsStr::new(&image),
        bundle_dir.as_os_str(),
    ]);
    run_checked("umoci", &args);
}

/// Buildah (Debian's) builds `dir`'s `dockerfile` into the OCI layout
/// `work/oci` (tag `t`), in private vfs storage under `work`, with chroot
/// isolation: the reference result kiln's Dockerfile builds are compared
/// with. Returns the layout's path.
///
/// # Panics
///
/// With buildah's stderr when the build or the push fails.
pub fn buildah_build(dir: &Path, dockerfile: &str, work: &Path, extra: &[&str]) -> PathBuf {
    let storage = [
        "--root".to_string(),
        work.join("root").display().to_string(),
        "--runroot".to_string(),
        work.join("runroot").display().to_string(),
        "--storage-driver".to_string(),
        "vfs".to_string(),
    ];
    let run = |args: &[&str]| {
        let out = Command::new("buildah")
            .args(&storage)
            .args(args)
            .current_dir(dir)
            .output()
            .unwrap_or_else(|e| panic!("buildah cannot start: {e}"));
        assert!(
            out.status.success(),
            "buildah {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    };
    let mut bud = vec![
        "bud",
        "--tls-verify=false",
        "--isolation",
        "chroot",
        "-t",
        "localhost/kiln-reference:t",
        "-f",
        dockerfile,
    ];
    bud.extend_from_slice(extra);
    bud.push(".");
    run(&bud);
    let layout = work.join("oci");
    let dest = format!("oci:{}:t", layout.display());
    run(&["push", "localhost/kiln-reference:t", &dest]);
    layout
}

/// Rewrites the bundle's config.json so runc runs `args` non-interactively
/// on this machine.
fn prepare_bundle(bundle_dir: &Path, args: &[&str]) {
    let path = bundle_dir.join("config.json");
    let text = std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()));
    let mut config: Value = serde_json::from_str(&text)
        .unwrap_or_else(|e| panic!("{} is not JSON: {e}", path.display()));
    let process = config
        .get_mut("process")
        .and_then(Value::as_object_mut)
        .unwrap_or_else(|| panic!("{} has no process object", path.display()));
    process.insert(
        "args".into(),
        args.iter().map(|a| Value::from(*a)).collect(),
    );
    process.insert("terminal".into(), Value::Bool(false));
    // umoci fills cwd from the image's WorkingDir; runc requires one.
    let cwd_missing = process
        .get("cwd")
        .and_then(Value::as_str)
        .is_none_or(str::is_empty);
    if cwd_missing {
        process.insert("cwd".into(), Value::from("/"));
    }
    // umoci adds RLIMIT_NOFILE; setting rlimits needs CAP_SYS_RESOURCE, which
    // sandboxed CI machines may not grant. Containers inherit runc's limits.
    process.remove("rlimits");
    let text = serde_json::to_string_pretty(&config).unwrap_or_else(|e| {
        panic!("cannot serialise {}: {e}", path.display());
    });
    std::fs::write(&path, text).unwrap_or_else(|e| panic!("cannot write {}: {e}", path.display()));
}

/// A container id no other test (or earlier run) uses.
fn unique_container_id() -> String {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.subsec_nanos());
    format!(
        "kiln-test-{}-{}-{nanos:08x}",
        std::process::id(),
        COUNTER.fetch_add(1, Ordering::Relaxed)
    )
}

fn read_pipe(pipe: Option<impl Read + Send + 'static>) -> JoinHandle<Vec<u8>> {
    std::thread::spawn(move || {
        let mut buf = Vec::new();
        if let Some(mut p) = pipe {
            // A read error just truncates what the test sees.
            let _ = p.read_to_end(&mut buf);
        }
        buf
    })
}

/// Waits for `child`, killing the container if it outlives `timeout`.
fn wait_or_kill(child: &mut Child, id: &str, timeout: Duration, shown: &str) -> ExitStatus {
    let deadline = Instant::now() + timeout;
    loop {
        match child.try_wait() {
            Ok(Some(status)) => return status,
            Ok(None) if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(10)),
            Ok(None) => {
                let _ = run_unchecked("runc", &["kill", id, "KILL"]);
                let _ = child.kill();
                let _ = child.wait();
                let _ = run_unchecked("runc", &["delete", "--force", id]);
                panic!("`{shown}` still running after {timeout:?}: killed");
            }
            Err(e) => panic!("cannot wait for `{shown}`: {e}"),
        }
    }
}

/// Runs `args` in the bundle with runc and returns its exit code and output:
/// the final judge that an image kiln built really runs, with a runtime
/// other than kiln's sandbox.
///
/// The bundle's config.json is rewritten first: `process.args` = `args`,
/// `terminal` off, `cwd` kept from the image (`/` if none), and
/// `process.rlimits` removed (setting rlimits needs a capability this CI
/// machine does not have). Each call uses a fresh container id and deletes
/// the container afterwards. A non-zero exit of the container's process is
/// reported in [`RunOutput::code`], not as a panic.
///
/// # Panics
///
/// When runc itself fails (the container could not be created or started),
/// with the command line, runc's log and stderr; or when the container runs
/// longer than [`RUNC_TIMEOUT`].
pub fn runc_run(bundle_dir: &Path, args: &[&str]) -> RunOutput {
    prepare_bundle(bundle_dir, args);
    let id = unique_container_id();
    let log = bundle_dir.join(format!("runc-{id}.log"));
    let runc_args: Vec<&OsStr> = vec![
        OsStr::new("--log"),
        log.as_os_str(),
        OsStr::new("--log-format"),
        OsStr::new("json"),
        OsStr::new("run"),
        OsStr::new("--bundle"),
        bundle_dir.as_os_str(),
        OsStr::new(&id),
    ];
    let shown = format!(
        "{} # process.args = {args:?}",
        display_cmd("runc", &runc_args)
    );
    let mut child = Command::new("runc")
        .args(&runc_args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot run `{shown}`: {e} (run scripts/setup)"));
    let stdout = read_pipe(child.stdout.take());
    let stderr = read_pipe(child.stderr.take());
    let status = wait_or_kill(&mut child, &id, RUNC_TIMEOUT, &shown);
    let stdout = stdout.join().unwrap_or_default();
    let stderr = stderr.join().unwrap_or_default();
    // `runc run` removes a container whose process exited; this catches the
    // rest (e.g. a failed start) and is a no-op otherwise.
    let _ = run_unchecked("runc", &["delete", "--force", &id]);
    let out = RunOutput::from_parts(status, &stdout, &stderr);
    let log_text = std::fs::read_to_string(&log).unwrap_or_default();
    let _ = std::fs::remove_file(&log);
    let runc_failed = log_text
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .any(|entry| matches!(entry["level"].as_str(), Some("error" | "fatal" | "panic")));
    if out.code != 0 && runc_failed {
        panic!(
            "`{shown}` failed: runc could not run the container (exit code {})\n\
             --- runc log ---\n{}\n--- stderr ---\n{}\n--- stdout ---\n{}",
            out.code,
            log_text.trim_end(),
            out.stderr.trim_end(),
            out.stdout.trim_end()
        );
    }
    out
}

/// Runs the kiln binary `kiln` as `user` (through `runuser`) in `cwd`,
/// with `HOME=home`, the XDG cache and data homes `home/cache` and
/// `home/data`, and none of root's docker config or sandbox overrides: a
/// rootless kiln as a user would start it.
///
/// # Panics
///
/// When `runuser` cannot be started.
pub fn kiln_as_user<I, S>(user: &str, kiln: &Path, home: &Path, cwd: &Path, args: I) -> Output
where
    I: IntoIterator<Item = S>,
    S: AsRef<OsStr>,
{
    Command::new("runuser")
        .args(["-u", user, "--", "env"])
        .arg(format!("HOME={}", home.display()))
        .arg(format!("XDG_CACHE_HOME={}/cache", home.display()))
        .arg(format!("XDG_DATA_HOME={}/data", home.display()))
        .arg(kiln)
        .args(args)
        .current_dir(cwd)
        .env_remove("DOCKER_CONFIG")
        .env_remove("KILN_SANDBOX_FORCE_NO_USERNS")
        .stdin(Stdio::null())
        .output()
        .unwrap_or_else(|e| panic!("cannot run runuser: {e}"))
}

/// An unprivileged user with subordinate uid/gid ranges, created when
/// missing, for the rootless tests. Returns (uid, first subuid, first subgid).
/// Needs root: panics with the reason otherwise (tests never skip).
pub fn ensure_unprivileged_user(user: &str) -> (u32, u32, u32) {
    let euid = Command::new("id")
        .arg("-u")
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string());
    assert_eq!(
        euid.as_deref().unwrap_or_default(),
        "0",
        "the rootless tests create the user `{user}` and its subordinate ids: run them as root (scripts/test does)"
    );
    let exists = Command::new("id")
        .arg("-u")
        .arg(user)
        .output()
        .map(|o| o.status.success())
        .unwrap_or(false);
    if !exists {
        let status = Command::new("useradd")
            .args(["-m", user])
            .status()
            .expect("useradd runs");
        assert!(status.success(), "useradd -m {user} failed");
    }
    let out = Command::new("id")
        .arg("-u")
        .arg(user)
        .output()
        .expect("id runs");
    let uid: u32 = String::from_utf8_lossy(&out.stdout)
        .trim()
        .parse()
        .expect("a numeric uid");
    (
        uid,
        ensure_subids("/etc/subuid", user),
        ensure_subids("/etc/subgid", user),
    )
}

/// The user's first subordinate id in `file` (`/etc/subuid` or
/// `/etc/subgid`), adding a 65536-id range after the highest one when
/// missing.
fn ensure_subids(file: &str, user: &str) -> u32 {
    let text = std::fs::read_to_string(file).unwrap_or_default();
    if let Some(start) = text.lines().find_map(|l| {
        let mut f = l.split(':');
        (f.next() == Some(user)).then(|| f.next()?.parse::<u32>().ok())?
    }) {
        return start;
    }
    let next = text
        .lines()
        .filter_map(|l| {
            let mut f = l.split(':').skip(1);
            Some(f.next()?.parse::<u32>().ok()? + f.next()?.parse::<u32>().ok()?)
        })
        .fold(100_000, u32::max);
    let mut text = text;
    if !text.is_empty() && !text.ends_with('\n') {
        text.push('\n');
    }
    text.push_str(&format!("{user}:{next}:65536\n"));
    std::fs::write(file, text).unwrap_or_else(|e| panic!("writing {file}: {e}"));
    next
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn env_file_lines_are_parsed_like_a_shell_would() {
        let env = parse_env(
            "# comment\n\nKILN_REGISTRY=127.0.0.1:5000\nexport KILN_TLS_USER='kiln'\n A = \"b c\" \n",
        );
        assert_eq!(env["KILN_REGISTRY"], "127.0.0.1:5000");
        assert_eq!(env["KILN_TLS_USER"], "kiln");
        assert_eq!(env["A"], "b c");
        assert_eq!(env.len(), 3);
    }

    #[test]
    fn passwords_are_masked_in_shown_command_lines() {
        let shown = display_cmd(
            "skopeo",
            &["copy", "--dest-creds", "kiln:secret", "a b", "docker://x"],
        );
        assert_eq!(shown, "skopeo copy --dest-creds kiln:*** 'a b' docker://x");
    }

    #[test]
    fn references_without_transport_are_docker_references() {
        assert_eq!(
            with_transport("127.0.0.1:5000/base/busybox:latest"),
            "docker://127.0.0.1:5000/base/busybox:latest"
        );
        assert_eq!(with_transport("oci:/tmp/l:latest"), "oci:/tmp/l:latest");
        assert_eq!(with_transport("docker://r/x:y"), "docker://r/x:y");
    }

    #[test]
    fn container_ids_are_unique() {
        assert_ne!(unique_container_id(), unique_container_id());
    }
}
