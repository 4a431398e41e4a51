//! Shared helpers of the sandbox/unpack/snapshot integration tests: the
//! busybox base image from the local registry (via skopeo, once), fresh
//! unpacked roots, a sandbox, output capture and process searches.

#![allow(dead_code)]

pub(crate) mod layout;

use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::sync::mpsc;

use kiln_rootfs::sandbox::{
    IdMap, OutputLine, OutputRoute, RunSpec, Sandbox, SandboxConfig, Stream,
};
use kiln_rootfs::unpack::{UnpackOptions, apply_layer_blob};

/// Where fetched layouts are kept between test runs.
pub(crate) const CACHE_DIR: &str = "/var/tmp/kiln-sandbox-tests";

static FETCH: Mutex<()> = Mutex::new(());

/// The image reference of a base image from the bench's env file.
fn bench_ref(key: &str, fallback: &str) -> String {
    let env = std::fs::read_to_string("/var/tmp/kiln-bench/env").unwrap_or_default();
    env.lines()
        .find_map(|l| l.strip_prefix(&format!("{key}=")).map(str::to_string))
        .unwrap_or_else(|| fallback.to_string())
}

/// An OCI layout of `reference` under [`CACHE_DIR`]/`name` (fetched with
/// skopeo on first use, renamed into place when complete).
pub(crate) fn fetch_layout(name: &str, reference: &str) -> PathBuf {
    let _guard = FETCH.lock().unwrap_or_else(|e| e.into_inner());
    let dir = Path::new(CACHE_DIR).join(name);
    if dir.join("index.json").is_file() {
        return dir;
    }
    std::fs::create_dir_all(CACHE_DIR).unwrap();
    let tmp = Path::new(CACHE_DIR).join(format!("{name}.tmp-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&tmp);
    let out = std::process::Command::new("skopeo")
        .args(["copy", "--src-tls-verify=false"])
        .arg(format!("docker://{reference}"))
        .arg(format!("oci:{}:latest", tmp.display()))
        .output()
        .expect("skopeo runs (install Debian package skopeo)");
    assert!(
        out.status.success(),
        "skopeo copy {reference} failed (is the local registry up? scripts/setup): {}",
        String::from_utf8_lossy(&out.stderr)
    );
    if std::fs::rename(&tmp, &dir).is_err() {
        let _ = std::fs::remove_dir_all(&tmp);
    }
    // World-readable: the rootless test reads it as another user.
    let _ = std::process::Command::new("chmod")
        .args(["-R", "a+rX", CACHE_DIR])
        .status();
    dir
}

/// The busybox base image's layout.
pub(crate) fn busybox_layout() -> PathBuf {
    let r = bench_ref("KILN_BASE_BUSYBOX", "127.0.0.1:5000/base/busybox:latest");
    fetch_layout("busybox-oci", &r)
}

/// A sandbox with the default configuration.
pub(crate) fn sandbox() -> Sandbox {
    Sandbox::new(SandboxConfig::default()).expect("sandbox preflight passes on this machine")
}

/// A fresh busybox root (in its own temp dir, `root/` inside it), owners
/// mapped through `ids`.
pub(crate) fn busybox_root(ids: &IdMap) -> (tempfile::TempDir, PathBuf) {
    let layout = busybox_layout();
    let tmp = tempfile::Builder::new()
        .prefix("kiln-sbx-test-")
        .tempdir_in("/var/tmp")
        .unwrap();
    let root = tmp.path().join("root");
    std::fs::create_dir(&root).unwrap();
    let opts = UnpackOptions::mapped(ids.clone());
    for blob in layout::layout_layers(&layout).unwrap() {
        apply_layer_blob(&root, &blob, &opts).unwrap();
    }
    (tmp, root)
}

/// Output of a captured run.
pub(crate) struct Captured {
    pub code: i32,
    pub stdout: Vec<String>,
    pub stderr: Vec<String>,
}

/// Runs `spec` to the end, capturing its lines.
pub(crate) fn run_capture(sb: &Sandbox, spec: &RunSpec) -> Captured {
    let (tx, rx) = mpsc::channel::<OutputLine>();
    let code = sb.run(spec, OutputRoute::Lines(tx)).expect("sandbox run");
    let (mut stdout, mut stderr) = (Vec::new(), Vec::new());
    for l in rx.try_iter() {
        match l.stream {
            Stream::Stdout => stdout.push(l.line),
            Stream::Stderr => stderr.push(l.line),
        }
    }
    Captured {
        code,
        stdout,
        stderr,
    }
}

/// `sh -c SCRIPT` in `root`.
pub(crate) fn sh(root: &Path, script: &str) -> RunSpec {
    RunSpec::new(root, ["/bin/sh", "-c", script])
}

/// Host pids of processes whose root directory is `root` (chrooted into
/// it) or whose command line mentions it.
pub(crate) fn processes_in(root: &Path) -> Vec<(u32, String)> {
    // The sandbox's init names its root in its arguments; every process
    // of the run descends from it.
    let needle = root.to_string_lossy().into_owned();
    let mut all = Vec::new();
    if let Ok(rd) = std::fs::read_dir("/proc") {
        for e in rd.flatten() {
            let Ok(pid) = e.file_name().to_string_lossy().parse::<u32>() else {
                continue;
            };
            let cmdline = std::fs::read(format!("/proc/{pid}/cmdline"))
                .map(|b| String::from_utf8_lossy(&b).replace('\0', " "))
                .unwrap_or_default();
            let ppid = std::fs::read_to_string(format!("/proc/{pid}/stat"))
                .ok()
                .and_then(|s| {
                    let after = s.rsplit_once(')')?.1.to_string();
                    after.split_whitespace().nth(1)?.parse::<u32>().ok()
                })
                .unwrap_or(0);
            all.push((pid, ppid, cmdline));
        }
    }
    let mut ours: std::collections::HashSet<u32> = all
        .iter()
        .filter(|(_, _, c)| c.contains(&needle))
        .map(|(p, _, _)| *p)
        .collect();
    loop {
        let before = ours.len();
        for (p, pp, _) in &all {
            if ours.contains(pp) {
                ours.insert(*p);
            }
        }
        if ours.len() == before {
            break;
        }
    }
    all.into_iter()
        .filter(|(p, _, _)| ours.contains(p))
        .map(|(p, _, c)| (p, c))
        .collect()
}

/// Polls `cond` for up to `secs` seconds.
pub(crate) fn wait_until(secs: u64, mut cond: impl FnMut() -> bool) -> bool {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(secs);
    while std::time::Instant::now() < deadline {
        if cond() {
            return true;
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    cond()
}

/// The sandbox_run example binary (built by `cargo test` with the tests).
pub(crate) fn example_binary() -> PathBuf {
    let exe = std::env::current_exe().unwrap();
    let debug = exe.parent().and_then(Path::parent).unwrap();
    let path = debug.join("examples/sandbox_run");
    assert!(
        path.is_file(),
        "{} missing: run `cargo build -p kiln-rootfs --example sandbox_run`",
        path.display()
    );
    path
}

/// The entries of a tar stream: (path, type byte, uid, gid, mode, content).
pub(crate) fn tar_entries(bytes: &[u8]) -> Vec<(String, u8, u64, u64, u32, Vec<u8>)> {
    use std::io::Read;
    let mut a = tar::Archive::new(bytes);
    a.entries()
        .unwrap()
        .map(|e| {
            let mut e = e.unwrap();
            let path = String::from_utf8_lossy(&e.path_bytes()).into_owned();
            let h = e.header().clone();
            let mut data = Vec::new();
            e.read_to_end(&mut data).unwrap();
            (
                path,
                h.entry_type().as_byte(),
                h.uid().unwrap(),
                h.gid().unwrap(),
                h.mode().unwrap(),
                data,
            )
        })
        .collect()
}
