//! The sandbox against a real busybox root: output and exit codes, pid and
//! uts isolation, /dev and /proc, binds, users, preflight failures, and
//! killing every process on drop and on kiln's death.

// Test code: a panic is how a check reports failure (helpers included).
#![allow(clippy::unwrap_used)]

mod sandbox_support;

use std::path::Path;
use std::process::Command;

use kiln_rootfs::sandbox::{
    BindMount, CaBundleMode, FORCE_NO_USERNS_ENV, OutputRoute, RunSpec, Sandbox, SandboxConfig,
    SandboxError, User,
};
use sandbox_support::*;

#[test]
fn echo_hi_exit_3() {
    let sb = sandbox();
    let (_t, root) = busybox_root(sb.id_map());
    let out = run_capture(&sb, &sh(&root, "echo hi; exit 3"));
    assert_eq!(out.stdout, vec!["hi".to_string()]);
    assert_eq!(out.code, 3);
}

#[test]
fn signals_become_128_plus_n_and_missing_programs_127() {
    let sb = sandbox();
    let (_t, root) = busybox_root(sb.id_map());
    let out = run_capture(&sb, &sh(&root, "echo before >&2; kill -TERM $$"));
    assert_eq!(out.code, 143);
    assert_eq!(
        out.stderr,
        vec!["before"],
        "the init adds nothing to stderr"
    );
    assert_eq!(run_capture(&sb, &sh(&root, "kill -KILL $$")).code, 137);
    let out = run_capture(&sb, &RunSpec::new(&root, ["/no/such/program"]));
    assert_eq!(out.code, 127, "stderr: {:?}", out.stderr);
}

#[test]
fn the_command_is_a_low_pid_of_its_own_pid_namespace() {
    let sb = sandbox();
    let (_t, root) = busybox_root(sb.id_map());
    let out = run_capture(
        &sb,
        &sh(
            &root,
            "echo $$; ls /proc | grep -c '^[0-9]'; ps -o pid,args",
        ),
    );
    assert_eq!(out.code, 0, "{:?}", out.stderr);
    let pid: u32 = out.stdout[0].parse().unwrap();
    assert!(pid <= 2, "command pid {pid} inside the namespace");
    let nprocs: u32 = out.stdout[1].parse().unwrap();
    assert!(
        nprocs <= 5,
        "only the sandbox's processes are visible: {:?}",
        out.stdout
    );
    assert!(
        out.stdout
            .iter()
            .any(|l| l.trim_start().starts_with(&format!("{pid} ")) && l.contains("echo $$")),
        "ps shows the command: {:?}",
        out.stdout
    );
}

#[test]
fn hostname_is_isolated() {
    let sb = sandbox();
    let (_t, root) = busybox_root(sb.id_map());
    let host_before = std::fs::read_to_string("/proc/sys/kernel/hostname").unwrap();
    let mut spec = sh(&root, "hostname; hostname changed-inside; hostname");
    spec.hostname = "kiln-test-host".into();
    let out = run_capture(&sb, &spec);
    // Changing it needs CAP_SYS_ADMIN, which a run does not keep.
    assert_eq!(out.stdout, vec!["kiln-test-host", "kiln-test-host"]);
    let host_after = std::fs::read_to_string("/proc/sys/kernel/hostname").unwrap();
    assert_eq!(host_before, host_after);
}

#[test]
fn dev_proc_and_network_files_are_there() {
    let sb = sandbox();
    let (_t, root) = busybox_root(sb.id_map());
    let out = run_capture(
        &sb,
        &sh(
            &root,
            "echo x > /dev/null && head -c 4 /dev/urandom | wc -c && head -c 3 /dev/zero | wc -c \
             && ! test -e /dev/tty && test -d /dev/shm && touch /dev/shm/x && cat /proc/self/status | grep -c ^Pid \
             && cat /etc/resolv.conf && cat /etc/hosts | wc -l",
        ),
    );
    assert_eq!(out.code, 0, "stderr: {:?}", out.stderr);
    assert_eq!(out.stdout[..3], ["4", "3", "1"]);
    let resolv = std::fs::read_to_string("/etc/resolv.conf").unwrap();
    let first = resolv.lines().next().unwrap_or_default();
    assert!(out.stdout.iter().any(|l| l == first), "{:?}", out.stdout);
    // The resolver files are read-only.
    let out = run_capture(
        &sb,
        &sh(&root, "echo nameserver 1.1.1.1 > /etc/resolv.conf"),
    );
    assert_ne!(out.code, 0);
    // busybox has no /etc/resolv.conf or /etc/hosts: the mount points are gone again.
    assert!(!root.join("etc/resolv.conf").exists());
    assert!(!root.join("etc/hosts").exists());
}

#[test]
fn the_ca_bundle_is_visible_at_the_same_path_and_removed_after() {
    let bundle = "/etc/ssl/certs/ca-certificates.crt";
    if !Path::new(bundle).is_file() {
        panic!("this test needs the host CA bundle {bundle} (Debian package ca-certificates)");
    }
    let sb = Sandbox::new(SandboxConfig {
        ca_bundle_mode: CaBundleMode::Always,
        ..SandboxConfig::default()
    })
    .unwrap();
    let (_t, root) = busybox_root(sb.id_map());
    let out = run_capture(&sb, &sh(&root, &format!("md5sum {bundle}")));
    assert_eq!(out.code, 0, "{:?}", out.stderr);
    let host = Command::new("md5sum").arg(bundle).output().unwrap();
    assert_eq!(
        out.stdout[0].split_whitespace().next(),
        String::from_utf8_lossy(&host.stdout)
            .split_whitespace()
            .next()
    );
    assert!(
        !root.join("etc/ssl").exists(),
        "created mount points are removed"
    );
    // By default a root without a bundle gets none (so that installing
    // ca-certificates can create it).
    let out = run_capture(&sandbox(), &sh(&root, &format!("test -e {bundle}")));
    assert_eq!(out.code, 1);
}

#[test]
fn secrets_are_readable_during_the_run_and_gone_after() {
    let sb = sandbox();
    let (t, root) = busybox_root(sb.id_map());
    let spec = sh(
        &root,
        "cat /run/secrets/x; touch /run/secrets/y && exit 0; stat -c %a /run/secrets/x; cat /etc/token; echo nope > /run/secrets/x",
    )
    .secret("/run/secrets/x", "s3cr3t\n")
    .secret("/etc/token", "elsewhere\n");
    let out = run_capture(&sb, &spec);
    assert_eq!(out.stdout, vec!["s3cr3t", "400", "elsewhere"]);
    assert_ne!(out.code, 0, "the secret is read-only");
    drop(t);
    assert!(
        !root.join("etc/token").exists(),
        "no trace of the secret's mount point"
    );
    assert!(
        !root.join("run").exists(),
        "busybox has no /run: the mount points are removed"
    );
}

#[test]
fn read_write_binds_write_through() {
    let sb = sandbox();
    let (t, root) = busybox_root(sb.id_map());
    let shared = t.path().join("shared");
    std::fs::create_dir(&shared).unwrap();
    let (uid, gid) = sb.root_owner();
    std::os::unix::fs::chown(&shared, Some(uid), Some(gid)).unwrap();
    let spec = sh(&root, "echo out > /work/result").mount(BindMount::read_write(&shared, "/work"));
    assert_eq!(run_capture(&sb, &spec).code, 0);
    assert_eq!(
        std::fs::read_to_string(shared.join("result")).unwrap(),
        "out\n"
    );
}

#[test]
fn user_env_and_workdir() {
    let sb = sandbox();
    let (_t, root) = busybox_root(sb.id_map());
    let mut spec = sh(
        &root,
        "id -u; id -g; pwd; echo \"$GREETING\"; echo \"[$HOME]\"",
    )
    .env("GREETING", "hello world");
    spec.user = User {
        uid: 1000,
        gid: 1001,
    };
    spec.workdir = "/srv/app".into();
    let out = run_capture(&sb, &spec);
    assert_eq!(out.code, 0, "{:?}", out.stderr);
    assert_eq!(
        out.stdout,
        vec!["1000", "1001", "/srv/app", "hello world", "[]"]
    );
    assert!(
        root.join("srv/app").is_dir(),
        "the working directory is created and kept"
    );
}

#[test]
fn a_bad_mount_target_is_a_clear_error_before_anything_runs() {
    let sb = sandbox();
    let (t, root) = busybox_root(sb.id_map());
    let file = t.path().join("f");
    std::fs::write(&file, "x").unwrap();
    let err = sb
        .run(
            &sh(&root, "true").mount(BindMount::read_only(&file, "/etc")),
            OutputRoute::Null,
        )
        .unwrap_err();
    assert!(matches!(err, SandboxError::MountTarget { .. }), "{err}");
    assert!(err.to_string().contains("is a directory"), "{err}");
}

#[test]
fn dropping_the_handle_kills_every_process() {
    let sb = sandbox();
    let (_t, root) = busybox_root(sb.id_map());
    let root = root.canonicalize().unwrap();
    let running = sb
        .spawn(&sh(&root, "sleep 1000 & sleep 1000"), OutputRoute::Null)
        .unwrap();
    assert!(
        wait_until(10, || processes_in(&root)
            .iter()
            .filter(|(_, c)| c.starts_with("sleep 1000"))
            .count()
            == 2),
        "both sleeps start: {:?}",
        processes_in(&root)
    );
    drop(running);
    // The kernel tears the pid namespace down asynchronously once its init
    // is killed: give it a moment, not forever.
    assert!(
        wait_until(5, || processes_in(&root).is_empty()),
        "processes left after drop: {:?}",
        processes_in(&root)
    );
}

#[test]
fn killing_kiln_kills_the_sandbox() {
    let sb = sandbox();
    let (_t, root) = busybox_root(sb.id_map());
    let root = root.canonicalize().unwrap();
    let mut kiln = Command::new(example_binary())
        .arg("--root")
        .arg(&root)
        .args(["--", "sleep", "1000"])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    assert!(wait_until(10, || processes_in(&root)
        .iter()
        .any(|(_, c)| c.starts_with("sleep 1000"))));
    // Ctrl-C reaches kiln, which dies of it (no handler): the kernel must
    // take the sandbox down too.
    let st = Command::new("kill")
        .args(["-INT", &kiln.id().to_string()])
        .status()
        .unwrap();
    assert!(st.success());
    let _ = kiln.wait();
    assert!(
        wait_until(5, || processes_in(&root).is_empty()),
        "processes left after kiln died: {:?}",
        processes_in(&root)
    );
}

#[test]
fn forced_missing_user_namespaces_fail_with_a_clear_message() {
    let (_t, root) = busybox_root(sandbox().id_map());
    let out = Command::new(example_binary())
        .env(FORCE_NO_USERNS_ENV, "1")
        .arg("--root")
        .arg(&root)
        .args(["--", "true"])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(125), "stderr: {stderr}");
    assert!(
        stderr.contains("user namespaces are not available"),
        "{stderr}"
    );
    assert!(
        stderr.contains("fix: unset KILN_SANDBOX_FORCE_NO_USERNS"),
        "{stderr}"
    );
    assert!(!stderr.contains("panicked"), "{stderr}");
}

#[test]
fn runs_on_an_overlay_share_one_root_and_leave_it_untouched() {
    let sb = sandbox();
    let (_t, root) = busybox_root(sb.id_map());
    let scratch = tempfile::tempdir().unwrap();
    let before = tree(&root);
    let mut uppers = Vec::new();
    for n in 0..2 {
        let upper = scratch.path().join(format!("upper{n}"));
        let work = scratch.path().join(format!("work{n}"));
        std::fs::create_dir_all(&upper).unwrap();
        std::fs::create_dir_all(&work).unwrap();
        let mut spec = sh(
            &root,
            "cat /seen 2>/dev/null || echo fresh; echo mine > /seen; rm /bin/true; mkdir -p /w/x; pwd",
        )
        .writable_overlay(&upper, &work);
        spec.workdir = "/w/x".into();
        let out = run_capture(&sb, &spec);
        assert_eq!(out.code, 0, "{:?}", out.stderr);
        // Each run sees the shared root as it was, not the other's writes.
        assert_eq!(out.stdout, vec!["fresh", "/w/x"], "run {n}");
        uppers.push(upper);
    }
    assert_eq!(tree(&root), before, "the shared root changed");
    for upper in &uppers {
        assert_eq!(
            std::fs::read_to_string(upper.join("seen")).unwrap(),
            "mine\n"
        );
        assert!(upper.join("w/x").is_dir());
    }
}

#[test]
fn an_overlay_with_a_comma_in_a_path_is_refused() {
    let sb = sandbox();
    let (_t, root) = busybox_root(sb.id_map());
    let spec = sh(&root, "true").writable_overlay("/tmp/a,b", "/tmp/w");
    let err = sb.run(&spec, OutputRoute::Inherit).unwrap_err();
    assert!(matches!(err, SandboxError::InvalidSpec { .. }), "{err}");
    assert!(err.to_string().contains("overlay"), "{err}");
}

/// Every path below `root` with its size and mtime: what "unchanged" means.
fn tree(root: &Path) -> Vec<(std::path::PathBuf, u64, std::time::SystemTime)> {
    let mut out = Vec::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(dir) = stack.pop() {
        for entry in std::fs::read_dir(&dir).unwrap() {
            let entry = entry.unwrap();
            let meta = entry.path().symlink_metadata().unwrap();
            if meta.is_dir() {
                stack.push(entry.path());
            }
            out.push((entry.path(), meta.len(), meta.modified().unwrap()));
        }
        let meta = dir.symlink_metadata().unwrap();
        out.push((dir, meta.len(), meta.modified().unwrap()));
    }
    out.sort();
    out
}
