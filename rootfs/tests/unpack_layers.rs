//! Applying layer stacks: whiteouts and opaque directories across layers,
//! compression detection, modes, mtimes and mapped ownership, diffID
//! checks, and the chain-keyed root cache (hits, races, interrupted runs).

// Test code: a panic is how a check reports failure (helpers included).
#![allow(clippy::unwrap_used)]

mod sandbox_support;

use std::io::Write;
use std::os::unix::fs::MetadataExt;
use std::path::Path;

use kiln_rootfs::sandbox::{IdMap, IdRange};
use kiln_rootfs::unpack::{
    LayerBlob, OnUnsafe, Ownership, RootCache, UnpackError, UnpackOptions, apply_layer_blob,
    apply_tar, chain_id,
};
use tar::{EntryType, Header};

fn file(b: &mut tar::Builder<Vec<u8>>, path: &str, data: &[u8], mode: u32, uid: u64) {
    let mut h = Header::new_gnu();
    h.set_entry_type(EntryType::Regular);
    h.set_size(data.len() as u64);
    h.set_mode(mode);
    h.set_uid(uid);
    h.set_gid(uid);
    h.set_mtime(1_234_567_890);
    b.append_data(&mut h, path, data).unwrap();
}

fn dir(b: &mut tar::Builder<Vec<u8>>, path: &str, mode: u32) {
    let mut h = Header::new_gnu();
    h.set_entry_type(EntryType::Directory);
    h.set_size(0);
    h.set_mode(mode);
    h.set_mtime(1_111_111_111);
    b.append_data(&mut h, path, &[][..]).unwrap();
}

fn tar_of(build: impl FnOnce(&mut tar::Builder<Vec<u8>>)) -> Vec<u8> {
    let mut b = tar::Builder::new(Vec::new());
    build(&mut b);
    b.into_inner().unwrap()
}

fn ignore() -> UnpackOptions {
    UnpackOptions {
        ownership: Ownership::Ignore,
        on_unsafe: OnUnsafe::Fail,
        max_bytes: kiln_rootfs::unpack::DEFAULT_MAX_BYTES,
    }
}

fn sha256(data: &[u8]) -> String {
    use sha2::Digest;
    let d = sha2::Sha256::digest(data);
    format!(
        "sha256:{}",
        d.iter().map(|b| format!("{b:02x}")).collect::<String>()
    )
}

#[test]
fn whiteouts_and_opaque_directories_apply_across_layers() {
    let t = tempfile::tempdir().unwrap();
    let root = t.path();
    let l1 = tar_of(|b| {
        dir(b, "a", 0o755);
        file(b, "a/b", b"1", 0o644, 0);
        file(b, "a/c", b"1", 0o644, 0);
        dir(b, "d", 0o755);
        file(b, "d/old", b"1", 0o644, 0);
        dir(b, "d/sub", 0o755);
        file(b, "d/sub/lower", b"1", 0o644, 0);
        dir(b, "gone", 0o755);
        file(b, "gone/x", b"1", 0o644, 0);
    });
    let l2 = tar_of(|b| {
        file(b, "a/.wh.b", b"", 0o644, 0);
        file(b, ".wh.gone", b"", 0o644, 0);
        // Entries before and after the opaque marker both survive it.
        file(b, "d/new1", b"2", 0o644, 0);
        file(b, "d/sub/upper", b"2", 0o644, 0);
        file(b, "d/.wh..wh..opq", b"", 0o644, 0);
        file(b, "d/new2", b"2", 0o644, 0);
    });
    apply_tar(root, &l1[..], &ignore()).unwrap();
    let r = apply_tar(root, &l2[..], &ignore()).unwrap();
    assert_eq!(r.whiteouts, 3);
    let mut names: Vec<String> = walk(root);
    names.sort();
    assert_eq!(
        names,
        ["a", "a/c", "d", "d/new1", "d/new2", "d/sub", "d/sub/upper"]
    );
}

fn walk(root: &Path) -> Vec<String> {
    let mut out = Vec::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap() {
            let e = e.unwrap();
            let p = e.path();
            out.push(p.strip_prefix(root).unwrap().to_string_lossy().into_owned());
            if e.file_type().unwrap().is_dir() {
                stack.push(p);
            }
        }
    }
    out
}

#[test]
fn gzip_zstd_and_plain_blobs_give_the_same_root_and_diff_id() {
    let plain = tar_of(|b| {
        dir(b, "etc", 0o755);
        file(b, "etc/x", b"hello", 0o640, 0);
    });
    let diff_id = sha256(&plain);
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    gz.write_all(&plain).unwrap();
    let gz = gz.finish().unwrap();
    let zst = zstd::stream::encode_all(&plain[..], 3).unwrap();
    let t = tempfile::tempdir().unwrap();
    for (name, bytes, mt) in [
        (
            "plain",
            &plain,
            Some("application/vnd.oci.image.layer.v1.tar"),
        ),
        (
            "gz",
            &gz,
            Some("application/vnd.oci.image.layer.v1.tar+gzip"),
        ),
        (
            "zst",
            &zst,
            Some("application/vnd.oci.image.layer.v1.tar+zstd"),
        ),
        ("gz-sniffed", &gz, None),
        ("zst-sniffed", &zst, None),
    ] {
        let blob = t.path().join(format!("{name}.blob"));
        std::fs::write(&blob, bytes).unwrap();
        let root = t.path().join(name);
        std::fs::create_dir(&root).unwrap();
        let lb = LayerBlob {
            path: blob,
            media_type: mt.map(str::to_string),
            diff_id: diff_id.clone(),
        };
        let r = apply_layer_blob(&root, &lb, &ignore()).unwrap();
        assert_eq!(r.diff_id, diff_id, "{name}");
        assert_eq!(
            std::fs::read_to_string(root.join("etc/x")).unwrap(),
            "hello",
            "{name}"
        );
    }
}

#[test]
fn a_wrong_diff_id_is_an_error() {
    let plain = tar_of(|b| file(b, "x", b"1", 0o644, 0));
    let t = tempfile::tempdir().unwrap();
    let blob = t.path().join("blob");
    std::fs::write(&blob, &plain).unwrap();
    let root = t.path().join("root");
    std::fs::create_dir(&root).unwrap();
    let lb = LayerBlob {
        path: blob,
        media_type: None,
        diff_id: "sha256:0000".into(),
    };
    let err = apply_layer_blob(&root, &lb, &ignore()).unwrap_err();
    assert!(matches!(err, UnpackError::DiffIdMismatch { .. }), "{err}");
}

#[test]
fn modes_mtimes_and_mapped_owners_are_kept() {
    if rustix::process::geteuid().as_raw() != 0 {
        eprintln!("skipping: chown to mapped ids needs root");
        return;
    }
    // Inner 0 -> 0, inner 1.. -> 200000.. (like --map-root-user --map-auto).
    let r = |inner, outer, count| IdRange {
        inner,
        outer,
        count,
    };
    let ids = IdMap::new(
        vec![r(0, 0, 1), r(1, 200_000, 65535)],
        vec![r(0, 0, 1), r(1, 300_000, 65535)],
    );
    let tar = tar_of(|b| {
        dir(b, "bin", 0o755);
        file(b, "bin/su", b"#!", 0o4755, 0);
        file(b, "bin/tool", b"#!", 0o2750, 100);
        dir(b, "ro", 0o555);
        file(b, "ro/file", b"x", 0o444, 0);
        file(b, "nobodys", b"x", 0o600, 70_000);
    });
    let t = tempfile::tempdir().unwrap();
    let rep = apply_tar(t.path(), &tar[..], &UnpackOptions::mapped(ids)).unwrap();
    let m = |p: &str| std::fs::symlink_metadata(t.path().join(p)).unwrap();
    assert_eq!(
        (m("bin/su").mode() & 0o7777, m("bin/su").uid()),
        (0o4755, 0)
    );
    assert_eq!(
        m("bin/tool").mode() & 0o7777,
        0o2750,
        "set-gid survives the chown"
    );
    assert_eq!(
        (m("bin/tool").uid(), m("bin/tool").gid()),
        (200_099, 300_099)
    );
    assert_eq!(m("ro").mode() & 0o7777, 0o555);
    assert_eq!(m("ro/file").mtime(), 1_234_567_890);
    assert_eq!(
        m("bin").mtime(),
        1_111_111_111,
        "directory mtimes are set after their children"
    );
    assert_eq!(rep.unmapped_ids, 1);
    assert_eq!(
        m("nobodys").uid(),
        200_000 + 65534 - 1,
        "unmapped ids become the overflow id"
    );
}

#[test]
fn the_cache_unpacks_once_per_chain() {
    let t = tempfile::tempdir().unwrap();
    let mk = |name: &str, tar: Vec<u8>| {
        let path = t.path().join(name);
        std::fs::write(&path, &tar).unwrap();
        LayerBlob {
            path,
            media_type: None,
            diff_id: sha256(&tar),
        }
    };
    let l1 = mk("l1", tar_of(|b| file(b, "one", b"1", 0o644, 0)));
    let l2 = mk("l2", tar_of(|b| file(b, "two", b"2", 0o644, 0)));
    let cache = RootCache::new(t.path().join("cache")).unwrap();

    let first = cache
        .get_or_unpack(&[l1.clone(), l2.clone()], &ignore())
        .unwrap();
    assert!(first.unpacked_now);
    assert_eq!(
        first.chain_id,
        chain_id(&[&l1.diff_id, &l2.diff_id]).unwrap()
    );
    assert!(first.rootfs.join("one").is_file() && first.rootfs.join("two").is_file());
    let again = cache
        .get_or_unpack(&[l1.clone(), l2.clone()], &ignore())
        .unwrap();
    assert!(!again.unpacked_now);
    assert_eq!(again.rootfs, first.rootfs);
    // Another order is another chain.
    let other = cache
        .get_or_unpack(&[l2.clone(), l1.clone()], &ignore())
        .unwrap();
    assert!(other.unpacked_now);
    assert_ne!(other.rootfs, first.rootfs);
    assert_eq!(
        cache.lookup(&[&l1.diff_id, &l2.diff_id], &ignore()),
        Some(first.rootfs.clone())
    );
}

#[test]
fn concurrent_unpacks_of_one_chain_agree_and_leave_no_temporaries() {
    let t = tempfile::tempdir().unwrap();
    let tar = tar_of(|b| {
        for i in 0..200 {
            file(b, &format!("f{i}"), &[b'x'; 4096], 0o644, 0);
        }
    });
    let path = t.path().join("l");
    std::fs::write(&path, &tar).unwrap();
    let blob = LayerBlob {
        path,
        media_type: None,
        diff_id: sha256(&tar),
    };
    let cache = RootCache::new(t.path().join("cache")).unwrap();
    let results: Vec<_> = std::thread::scope(|s| {
        let hs: Vec<_> = (0..4)
            .map(|_| {
                s.spawn(|| {
                    cache
                        .get_or_unpack(std::slice::from_ref(&blob), &ignore())
                        .unwrap()
                })
            })
            .collect();
        hs.into_iter().map(|h| h.join().unwrap()).collect()
    });
    assert!(results.iter().all(|r| r.rootfs == results[0].rootfs));
    assert_eq!(std::fs::read_dir(&results[0].rootfs).unwrap().count(), 200);
    let entries: Vec<String> = std::fs::read_dir(cache.dir())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(
        entries.len(),
        1,
        "only the completed entry remains: {entries:?}"
    );
}

#[test]
fn an_interrupted_unpack_is_never_used_and_is_cleaned_up() {
    let t = tempfile::tempdir().unwrap();
    let tar = tar_of(|b| file(b, "whole", b"1", 0o644, 0));
    let path = t.path().join("l");
    std::fs::write(&path, &tar).unwrap();
    let blob = LayerBlob {
        path,
        media_type: None,
        diff_id: sha256(&tar),
    };
    let cache = RootCache::new(t.path().join("cache")).unwrap();
    let key = blob.diff_id.trim_start_matches("sha256:").to_string();
    // A kill mid-unpack leaves a temporary of a dead process, and an entry
    // directory without the completion marker must not count either.
    let stale = cache.dir().join(format!(".tmp-{key}-999999999-1"));
    std::fs::create_dir_all(stale.join("rootfs")).unwrap();
    std::fs::create_dir_all(cache.dir().join(format!("{key}-noown/rootfs"))).unwrap();
    assert_eq!(cache.lookup(&[&blob.diff_id], &ignore()), None);
    let r = cache
        .get_or_unpack(std::slice::from_ref(&blob), &ignore())
        .unwrap();
    assert!(r.unpacked_now);
    assert!(r.rootfs.join("whole").is_file());
    assert!(!stale.exists(), "the dead process's temporary is removed");
}

#[test]
fn the_busybox_base_image_unpacks() {
    let layout = sandbox_support::busybox_layout();
    let blobs = sandbox_support::layout::layout_layers(&layout).unwrap();
    let t = tempfile::tempdir().unwrap();
    let cache = RootCache::new(t.path()).unwrap();
    let r = cache.get_or_unpack(&blobs, &ignore()).unwrap();
    assert!(r.reports.iter().all(|rep| rep.skipped.is_empty()));
    assert!(r.rootfs.join("bin/busybox").is_file());
    assert_eq!(
        std::fs::read_link(r.rootfs.join("bin/sh")).unwrap(),
        Path::new("/bin/busybox")
    );
}
