//! Snapshots of real sandbox runs: new, modified and deleted files, opaque
//! directories, ownership as seen inside, nothing the sandbox mounted, and
//! byte-for-byte reproducible layers that unpack back to the same tree.

// Test code: a panic is how a check reports failure (helpers included).
#![allow(clippy::unwrap_used)]

mod sandbox_support;

use std::path::Path;

use kiln_rootfs::sandbox::{IdMap, Sandbox};
use kiln_rootfs::snapshot::{self, Excludes, LayerOptions, Manifest};
use kiln_rootfs::unpack::{UnpackOptions, apply_tar};
use sandbox_support::*;

const EPOCH: u64 = 1_700_000_000;

fn opts(sb: &Sandbox) -> LayerOptions {
    LayerOptions {
        epoch: Some(EPOCH),
        ids: sb.id_map().clone(),
    }
}

/// Runs `script` in `root` and returns the layer bytes.
fn run_and_snapshot(
    sb: &Sandbox,
    root: &Path,
    spec: kiln_rootfs::sandbox::RunSpec,
) -> (Vec<u8>, snapshot::Summary) {
    let before = Manifest::capture(root, &Excludes::default()).unwrap();
    let out = run_capture(sb, &spec);
    assert_eq!(out.code, 0, "stderr: {:?}", out.stderr);
    let mut layer = Vec::new();
    let summary =
        snapshot::layer(root, &before, &Excludes::default(), &opts(sb), &mut layer).unwrap();
    (layer, summary)
}

fn names(layer: &[u8]) -> Vec<String> {
    tar_entries(layer).into_iter().map(|e| e.0).collect()
}

#[test]
fn new_files_and_deletions_become_entries_and_whiteouts() {
    let sb = sandbox();
    let (_t, root) = busybox_root(sb.id_map());
    let (layer, summary) = run_and_snapshot(
        &sb,
        &root,
        sh(
            &root,
            "echo data > /new.txt; rm /etc/group; mkdir -p /opt/x && echo y > /opt/x/f; echo more >> /etc/passwd; ls /proc /dev >/dev/null",
        ),
    );
    let entries = tar_entries(&layer);
    let find = |p: &str| {
        entries
            .iter()
            .find(|e| e.0 == p)
            .unwrap_or_else(|| panic!("{p} not in {:?}", names(&layer)))
    };
    assert_eq!(find("new.txt").5, b"data\n");
    assert_eq!(find("etc/.wh.group").1, b'0');
    assert_eq!(find("opt/x/f").5, b"y\n");
    assert!(find("etc/passwd").5.ends_with(b"more\n"));
    assert_eq!(find("opt").1, b'5');
    assert_eq!(summary.deleted, 1);
    assert_eq!(summary.modified, 1);
    assert!(summary.added >= 3);
    // Nothing the sandbox mounted or created for itself.
    for n in names(&layer) {
        assert!(
            !(n.starts_with("proc")
                || n.starts_with("dev")
                || n.starts_with("sys")
                || n.starts_with("run")
                || n == "etc/resolv.conf"
                || n == "etc/hosts"
                || n.starts_with("etc/ssl")),
            "{n} must not be in the layer"
        );
    }
    // mtimes clamped, parents before children, sorted.
    let mut a = tar::Archive::new(&layer[..]);
    for e in a.entries().unwrap() {
        assert!(e.unwrap().header().mtime().unwrap() <= EPOCH);
    }
    let ns = names(&layer);
    assert!(
        ns.iter().position(|n| n == "opt").unwrap()
            < ns.iter().position(|n| n == "opt/x/f").unwrap()
    );
}

#[test]
fn proc_dev_and_resolver_files_never_appear_even_if_present_in_the_root() {
    let sb = sandbox();
    let (_t, root) = busybox_root(sb.id_map());
    // A root that has these files itself (like Debian images do).
    std::fs::write(root.join("etc/resolv.conf"), "").unwrap();
    std::fs::write(root.join("etc/hosts"), "").unwrap();
    let (layer, _) = run_and_snapshot(
        &sb,
        &root,
        sh(
            &root,
            "cat /etc/resolv.conf >/dev/null; echo x > /dev/shm/y; touch /marker",
        ),
    );
    assert_eq!(names(&layer), vec!["marker"]);
    assert_eq!(std::fs::read(root.join("etc/resolv.conf")).unwrap(), b"");
}

#[test]
fn a_secret_is_read_during_the_run_and_absent_from_the_snapshot() {
    let sb = sandbox();
    let (_t, root) = busybox_root(sb.id_map());
    let spec =
        sh(&root, "cat /run/secrets/x > /copied-on-purpose").secret("/run/secrets/x", "token-123");
    let (layer, _) = run_and_snapshot(&sb, &root, spec);
    let entries = tar_entries(&layer);
    assert_eq!(names(&layer), vec!["copied-on-purpose"]);
    assert_eq!(entries[0].5, b"token-123", "the secret was readable inside");
}

#[test]
fn ownership_is_written_as_seen_inside_the_sandbox() {
    let sb = sandbox();
    let (_t, root) = busybox_root(sb.id_map());
    let (layer, _) = run_and_snapshot(
        &sb,
        &root,
        sh(
            &root,
            "mkdir /owned && chown 100:101 /owned && touch /byroot && chmod 4755 /byroot",
        ),
    );
    let entries = tar_entries(&layer);
    let owned = entries.iter().find(|e| e.0 == "owned").unwrap();
    assert_eq!((owned.2, owned.3), (100, 101));
    let byroot = entries.iter().find(|e| e.0 == "byroot").unwrap();
    assert_eq!((byroot.2, byroot.3, byroot.4 & 0o7777), (0, 0, 0o4755));
    // On disk the ids are the mapped ones.
    use std::os::unix::fs::MetadataExt;
    let m = std::fs::metadata(root.join("owned")).unwrap();
    assert_eq!(Some(m.uid()), sb.id_map().to_outer_uid(100));
    assert_eq!(Some(m.gid()), sb.id_map().to_outer_gid(101));
}

#[test]
fn a_recreated_directory_is_opaque() {
    let sb = sandbox();
    let (_t, root) = busybox_root(sb.id_map());
    let (layer, summary) = run_and_snapshot(
        &sb,
        &root,
        sh(&root, "rm -rf /usr && mkdir /usr && echo a > /usr/new"),
    );
    assert_eq!(names(&layer), vec!["usr", "usr/.wh..wh..opq", "usr/new"]);
    assert_eq!(summary.opaque_dirs, 1);
}

#[test]
fn the_same_run_gives_the_same_bytes() {
    let sb = sandbox();
    let script = "mkdir -p /app/lib && echo 1 > /app/a && echo 2 > /app/lib/b && ln -s a /app/link && ln /app/a /app/hard && rm /bin/ed";
    let (_t1, r1) = busybox_root(sb.id_map());
    let (l1, _) = run_and_snapshot(&sb, &r1, sh(&r1, script));
    std::thread::sleep(std::time::Duration::from_millis(1100));
    let (_t2, r2) = busybox_root(sb.id_map());
    let (l2, _) = run_and_snapshot(&sb, &r2, sh(&r2, script));
    assert!(!l1.is_empty());
    assert_eq!(
        l1,
        l2,
        "layers differ: {:?} vs {:?}",
        names(&l1),
        names(&l2)
    );
    let entries = tar_entries(&l1);
    let hard = entries
        .iter()
        .find(|e| e.0 == "app/hard" || e.0 == "app/a")
        .unwrap();
    assert_eq!(
        hard.1, b'0',
        "the first name of a hard-linked file carries the content"
    );
    assert!(
        entries.iter().any(|e| e.1 == b'1'),
        "the second name is a hard link: {:?}",
        names(&l1)
    );
}

#[test]
fn the_layer_unpacks_back_to_the_same_tree() {
    let sb = sandbox();
    let (_t, root) = busybox_root(sb.id_map());
    let (layer, _) = run_and_snapshot(
        &sb,
        &root,
        sh(
            &root,
            "rm -rf /usr/bin && echo z > /z && mkdir /d && chown 7:8 /d && rm /etc/group && ln -s /z /zl",
        ),
    );
    let (_t2, fresh) = busybox_root(sb.id_map());
    apply_tar(
        &fresh,
        &layer[..],
        &UnpackOptions::mapped(sb.id_map().clone()),
    )
    .unwrap();
    let ex = Excludes::default();
    let strip = |m: &Manifest| -> Vec<(String, u32, u32, u32, u64, Option<std::ffi::OsString>)> {
        m.iter()
            .map(|(p, e)| {
                (
                    p.to_string_lossy().into_owned(),
                    e.mode,
                    e.uid,
                    e.gid,
                    e.size,
                    e.link_target.clone(),
                )
            })
            .collect()
    };
    assert_eq!(
        strip(&Manifest::capture(&root, &ex).unwrap()),
        strip(&Manifest::capture(&fresh, &ex).unwrap())
    );
}

#[test]
fn an_identity_map_keeps_ids() {
    // Snapshot without a sandbox (files created by this process).
    let t = tempfile::tempdir().unwrap();
    let before = Manifest::capture(t.path(), &Excludes::none()).unwrap();
    std::fs::write(t.path().join("f"), "x").unwrap();
    let mut layer = Vec::new();
    let s = snapshot::layer(
        t.path(),
        &before,
        &Excludes::none(),
        &LayerOptions {
            epoch: None,
            ids: IdMap::identity(),
        },
        &mut layer,
    )
    .unwrap();
    assert_eq!(s.added, 1);
    let e = &tar_entries(&layer)[0];
    assert_eq!(
        (e.0.as_str(), e.2 as u32),
        ("f", rustix::process::geteuid().as_raw())
    );
}
