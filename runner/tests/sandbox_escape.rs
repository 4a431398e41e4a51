//! The sandbox is a boundary: `testdata/escape/escape.sh` tries every way
//! out it knows — `/proc/1/root`, `/proc/self/root`, `/proc/*/{root,cwd}`,
//! `..` past the root, kiln's open descriptors, mounts, device nodes,
//! writing through init's root — from a Dockerfile RUN and from a `kiln
//! run` step, each as root and as an unprivileged user. None may reach a host
//! marker file, and the run's facts (id map, capabilities, no_new_privs,
//! process limit, network) are the ones the README promises.

#![allow(clippy::unwrap_used)] // test code: a failure is a test failure

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;

use kiln_testsupport::fixture::{Fixture, unique_repo, unpack_pushed};
use kiln_testsupport::{Bench, ensure_unprivileged_user, kiln_as_user};

const KILN: &str = env!("CARGO_BIN_EXE_kiln");

/// Every probe the script must have run (per-process ones come on top).
const PROBES: &[&str] = &[
    "direct",
    "proc-1-root",
    "proc-self-root",
    "proc-1-cwd",
    "dotdot",
    "proc-1-exe",
    "proc-1-environ",
    "proc-1-mem",
    "mount-tmpfs",
    "mknod",
    "write-proc-1-root",
    "controlling-tty",
    "chroot-out",
];

/// A host directory holding a secret marker file and the path a run must
/// not be able to create, both private to `owner`.
struct HostFiles {
    dir: tempfile::TempDir,
    secret: String,
}

impl HostFiles {
    fn new(owner: Option<u32>) -> HostFiles {
        let dir = tempfile::Builder::new()
            .prefix("kiln-escape-host-")
            .tempdir_in("/var/tmp")
            .unwrap();
        let secret = format!(
            "kiln-host-marker-{}",
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .as_nanos()
        );
        std::fs::write(dir.path().join("marker"), &secret).unwrap();
        std::fs::set_permissions(
            dir.path().join("marker"),
            std::fs::Permissions::from_mode(0o600),
        )
        .unwrap();
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o700)).unwrap();
        if let Some(uid) = owner {
            for p in [dir.path().to_path_buf(), dir.path().join("marker")] {
                std::os::unix::fs::chown(&p, Some(uid), None).unwrap();
            }
        }
        HostFiles { dir, secret }
    }

    fn marker(&self) -> PathBuf {
        self.dir.path().join("marker")
    }

    fn write(&self) -> PathBuf {
        self.dir.path().join("written-from-inside")
    }
}

/// What the report says of the process, once every probe was blocked.
#[derive(Debug, Default)]
struct Facts {
    uid_map: Vec<u64>,
    cap_bnd: u64,
    no_new_privs: String,
    nproc: String,
    net: String,
}

/// Fails on any probe that reached out, on a missing probe, on a leaked
/// descriptor, and when the host files were touched; returns the facts.
fn judge(report: &str, host: &HostFiles) -> Facts {
    eprintln!("escape report:\n{report}");
    assert!(
        !report.contains(&host.secret),
        "the run read the host's marker:\n{report}"
    );
    assert!(
        !host.write().exists(),
        "the run wrote {} on the host",
        host.write().display()
    );
    let mut facts = Facts::default();
    let mut seen = Vec::new();
    for line in report.lines() {
        let Some((key, value)) = line.split_once(": ") else {
            continue;
        };
        match key {
            "fd" => {
                let (n, target) = value.split_once(' ').unwrap_or((value, ""));
                let n: u32 = n.parse().unwrap();
                let allowed = match n {
                    // stdin, stdout, stderr: what kiln gave the command.
                    0..=2 => {
                        target == "/dev/null" || target.starts_with("pipe:") || target == "/report"
                    }
                    // ls's handle on the directory it lists.
                    _ => target.starts_with("/proc/") && target.ends_with("/fd"),
                };
                assert!(allowed, "descriptor {value:?} reached the run:\n{report}");
            }
            "uid_map" => {
                facts.uid_map = value
                    .split_whitespace()
                    .map(|n| n.parse().unwrap())
                    .collect();
            }
            "CapBnd" => facts.cap_bnd = u64::from_str_radix(value.trim(), 16).unwrap(),
            "NoNewPrivs" => facts.no_new_privs = value.trim().to_string(),
            "nproc" => facts.nproc = value.trim().to_string(),
            "net" => facts.net = value.trim().to_string(),
            "CapEff" => {}
            probe => {
                assert_eq!(value, "blocked", "probe {probe} got out:\n{report}");
                seen.push(probe.to_string());
            }
        }
    }
    for p in PROBES {
        assert!(
            seen.iter().any(|s| s == p),
            "probe {p} did not run:\n{report}"
        );
    }
    assert!(
        seen.iter().filter(|s| s.ends_with("-root")).count() > 3,
        "no per-process probes:\n{report}"
    );
    // Capabilities that would undo the boundary are not even bounding.
    for (bit, name) in [
        (21, "SYS_ADMIN"),
        (19, "SYS_PTRACE"),
        (12, "NET_ADMIN"),
        (27, "MKNOD"),
        (16, "SYS_MODULE"),
        (2, "DAC_READ_SEARCH"),
    ] {
        assert_eq!(
            facts.cap_bnd & (1 << bit),
            0,
            "{name} is in CapBnd:\n{report}"
        );
    }
    assert_eq!(facts.no_new_privs, "1", "no_new_privs is off:\n{report}");
    assert_eq!(
        facts.nproc,
        kiln_rootfs::sandbox::DEFAULT_PIDS_LIMIT.to_string(),
        "{report}"
    );
    assert_eq!(facts.uid_map.len(), 3, "{report}");
    facts
}

/// The escape fixture, its Dockerfile's parent on the bench registry.
fn fixture() -> (Fixture, String) {
    let bench = Bench::get();
    let f = Fixture::copy(KILN, "escape");
    let base = format!("{}/base/busybox:latest", bench.registry());
    f.edit("Dockerfile", |t| {
        t.replace("127.0.0.1:5000/base/busybox:latest", &base)
    });
    let tag = format!("{}:v1", unique_repo(bench.registry(), "escape"));
    (f, tag)
}

fn build_args<'a>(tag: &'a str, marker: &'a str, write: &'a str) -> Vec<String> {
    [
        "build",
        "-f",
        "Dockerfile",
        "-t",
        tag,
        "--build-arg",
        &format!("MARKER={marker}"),
        "--build-arg",
        &format!("WRITE={write}"),
    ]
    .iter()
    .map(|s| s.to_string())
    .collect()
}

fn report_of(tag: &str) -> String {
    let dir = tempfile::tempdir().unwrap();
    let bundle = unpack_pushed(tag, dir.path());
    std::fs::read_to_string(bundle.join("rootfs/report")).unwrap()
}

#[test]
fn a_dockerfile_run_as_root_reaches_nothing_of_the_host_and_is_not_host_root() {
    let (f, tag) = fixture();
    let host = HostFiles::new(None);
    let marker = host.marker().display().to_string();
    let write = host.write().display().to_string();
    let mut args = build_args(&tag, &marker, &write);
    args.push(".".into());
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let out = f.kiln(&args);
    assert_eq!(out.code, 0, "{}\n{}", out.stdout, out.stderr);
    let report = report_of(&tag);
    let facts = judge(&report, &host);
    // uid 0 inside is root's subordinate range, not host uid 0.
    assert_eq!(facts.uid_map[0], 0, "{report}");
    assert_ne!(facts.uid_map[1], 0, "uid 0 inside is host root:\n{report}");
    // Buildah's default: the host's network.
    assert_ne!(facts.net, "lo", "{report}");
}

#[test]
fn a_dockerfile_run_with_network_none_has_only_loopback() {
    let (f, tag) = fixture();
    let host = HostFiles::new(None);
    let marker = host.marker().display().to_string();
    let write = host.write().display().to_string();
    let mut args = build_args(&tag, &marker, &write);
    args.extend(["--network".into(), "none".into(), ".".into()]);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let out = f.kiln(&args);
    assert_eq!(out.code, 0, "{}\n{}", out.stdout, out.stderr);
    let facts = judge(&report_of(&tag), &host);
    assert_eq!(facts.net, "lo");
}

#[test]
fn a_dockerfile_run_of_an_unprivileged_user_reaches_none_of_its_files() {
    let user = "kilntest";
    let (uid, _, _) = ensure_unprivileged_user(user);
    let (f, tag) = fixture();
    // The user's own private file: readable by the user, not by its runs.
    let host = HostFiles::new(Some(uid));
    let (work, kiln, project) = rootless_workspace(uid, &f.root());
    let marker = host.marker().display().to_string();
    let write = host.write().display().to_string();
    let mut args = build_args(&tag, &marker, &write);
    args.push(".".into());
    let out = kiln_as_user(user, &kiln, work.path(), &project, &args);
    assert!(
        out.status.success(),
        "rootless build as {user} failed ({:?}):\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    // The user itself can read its marker: the run could not.
    let facts = judge(&report_of(&tag), &host);
    assert_eq!(facts.uid_map[0], 0);
}

#[test]
fn a_kiln_run_step_reaches_nothing_of_the_host() {
    let bench = Bench::get();
    let f = Fixture::copy(KILN, "escape");
    f.point_at(
        bench.registry(),
        &unique_repo(bench.registry(), "escape-run"),
    );
    let host = HostFiles::new(None);
    let marker = host.marker().display().to_string();
    let write = host.write().display().to_string();
    f.edit("kiln.yaml", |t| {
        t.replace("__MARKER__", &marker)
            .replace("__WRITE__", &write)
    });
    let out = f.kiln(&["run"]);
    assert_eq!(out.code, 0, "{}\n{}", out.stdout, out.stderr);
    let report: String = out
        .stdout
        .lines()
        .filter_map(|l| {
            let (step, line) = l.split_once(" | ")?;
            (step.trim() == "probe").then(|| format!("{line}\n"))
        })
        .collect();
    let facts = judge(&report, &host);
    assert_ne!(facts.uid_map[1], 0, "uid 0 inside is host root:\n{report}");

    // The unpacked roots (setuid binaries, 1777 /tmp), the layer store, the
    // records and the run's own directory are private to kiln's user.
    let cache = f.cache_home().join("kiln");
    let data = f.data_home().join("kiln");
    let run_root = std::fs::read_dir(data.join("runs"))
        .unwrap()
        .flatten()
        .next()
        .unwrap()
        .path();
    for dir in [
        cache.join("roots"),
        cache.join("blobs"),
        cache.join("index"),
        data.clone(),
        run_root,
    ] {
        let mode = std::fs::metadata(&dir).unwrap().permissions().mode() & 0o7777;
        assert_eq!(mode, 0o700, "{} is {mode:o}", dir.display());
    }
}

/// A directory the unprivileged user `uid` owns, holding a copy of kiln
/// and of the project at `src`: (the directory, kiln, the project).
fn rootless_workspace(uid: u32, src: &Path) -> (tempfile::TempDir, PathBuf, PathBuf) {
    let work = tempfile::Builder::new()
        .prefix("kiln-escape-rootless-")
        .tempdir_in("/var/tmp")
        .unwrap();
    let kiln = work.path().join("kiln");
    std::fs::copy(KILN, &kiln).unwrap();
    let project = work.path().join("p");
    copy_dir(src, &project);
    let owner = uid.to_string();
    for (cmd, arg) in [("chmod", "a+rX"), ("chown", owner.as_str())] {
        let status = Command::new(cmd)
            .args(["-R", arg])
            .arg(work.path())
            .status()
            .unwrap();
        assert!(status.success(), "{cmd} -R {arg}");
    }
    (work, kiln, project)
}

fn copy_dir(from: &Path, to: &Path) {
    let status = Command::new("cp")
        .arg("-a")
        .arg(from)
        .arg(to)
        .status()
        .unwrap();
    assert!(status.success());
}

#[test]
fn a_kiln_run_step_of_an_unprivileged_user_reaches_none_of_its_files() {
    let user = "kilntest";
    let (uid, _, _) = ensure_unprivileged_user(user);
    let bench = Bench::get();
    let f = Fixture::copy(KILN, "escape");
    f.point_at(
        bench.registry(),
        &unique_repo(bench.registry(), "escape-run-rootless"),
    );
    let host = HostFiles::new(Some(uid));
    let marker = host.marker().display().to_string();
    let write = host.write().display().to_string();
    f.edit("kiln.yaml", |t| {
        t.replace("__MARKER__", &marker)
            .replace("__WRITE__", &write)
    });
    let (work, kiln, project) = rootless_workspace(uid, &f.root());
    let out = kiln_as_user(user, &kiln, work.path(), &project, ["run"]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "rootless kiln run as {user} failed ({:?}):\n{stdout}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    let report: String = stdout
        .lines()
        .filter_map(|l| {
            let (step, line) = l.split_once(" | ")?;
            (step.trim() == "probe").then(|| format!("{line}\n"))
        })
        .collect();
    let facts = judge(&report, &host);
    // Root inside is the user outside, never host root.
    assert_eq!(facts.uid_map[..2], [0, u64::from(uid)], "{report}");
}
