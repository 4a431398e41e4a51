//! Rootless end to end: an unprivileged user (`kilntest`, created with
//! subordinate id ranges when missing) runs the sandbox_run example, which
//! re-executes itself in a user namespace, unpacks busybox and runs a
//! command. uid 0 inside must be the user outside, and `chown 100:100` inside
//! must land as the user's subordinate base + 99.

// Test code: a panic is how a check reports failure (helpers included).
#![allow(clippy::unwrap_used)]

mod sandbox_support;

use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::process::Command;

use sandbox_support::*;

const USER: &str = "kilntest";

#[test]
fn an_unprivileged_user_runs_the_sandbox_with_its_subordinate_ids() {
    let (uid, subuid, subgid) = kiln_testsupport::ensure_unprivileged_user(USER);

    let layout = busybox_layout();
    let work = tempfile::Builder::new()
        .prefix("kiln-rootless-")
        .tempdir_in("/var/tmp")
        .unwrap();
    std::os::unix::fs::chown(work.path(), Some(uid), None).unwrap();
    let root = work.path().join("root");
    let layer = work.path().join("layer.tar");

    let out = Command::new("runuser")
        .args(["-u", USER, "--"])
        .arg(example_binary())
        .arg("--layout")
        .arg(&layout)
        .arg("--root")
        .arg(&root)
        .arg("--snapshot")
        .arg(&layer)
        .args([
            "--",
            "/bin/sh",
            "-c",
            "id -u; touch /inside; mkdir /owned && chown 100:100 /owned && echo x > /owned/f && chown 100:100 /owned/f && ls -ln /owned",
        ])
        .current_dir("/")
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(
        out.status.code(),
        Some(0),
        "stdout: {stdout}\nstderr: {stderr}"
    );
    assert_eq!(stdout.lines().next(), Some("0"), "root inside: {stdout}");

    let meta = |p: &str| std::fs::symlink_metadata(root.join(p)).unwrap();
    // uid 0 inside is the user outside.
    assert_eq!(
        (meta("inside").uid(), meta("inside").gid()),
        (uid, gid_of(uid))
    );
    assert_eq!(
        meta("bin/busybox").uid(),
        uid,
        "tar uid 0 unpacked as the user"
    );
    // chown 100:100 inside = subordinate base + 99 outside.
    assert_eq!(meta("owned").uid(), subuid + 99);
    assert_eq!(meta("owned").gid(), subgid + 99);
    assert_eq!(meta("owned/f").uid(), subuid + 99);
    // The layer records the ids as the command saw them.
    let entries = tar_entries(&std::fs::read(&layer).unwrap());
    let owned = entries.iter().find(|e| e.0 == "owned").unwrap();
    assert_eq!((owned.2, owned.3), (100, 100));
    let inside = entries.iter().find(|e| e.0 == "inside").unwrap();
    assert_eq!((inside.2, inside.3), (0, 0));
    assert!(Path::new(&root).join("owned/f").is_file());
}

fn gid_of(uid: u32) -> u32 {
    let passwd = std::fs::read_to_string("/etc/passwd").unwrap();
    passwd
        .lines()
        .find_map(|l| {
            let f: Vec<&str> = l.split(':').collect();
            (f.get(2)?.parse::<u32>().ok()? == uid).then(|| f.get(3)?.parse().ok())?
        })
        .unwrap()
}
