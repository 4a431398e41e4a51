//! Hostile layer tars built in the test: `..` names, absolute names, symlink
//! and hard-link tricks, whiteouts reaching out. Nothing may be written
//! outside the unpack root (a sibling sentinel directory stays untouched)
//! and every refused entry is reported.

// Test code: a panic is how a check reports failure (helpers included).
#![allow(clippy::unwrap_used)]

use std::path::{Path, PathBuf};

use kiln_rootfs::unpack::{
    ApplyReport, OnUnsafe, Ownership, SkipReason, UnpackError, UnpackOptions, apply_tar,
};
use tar::EntryType;

const EVIL: &str = "evil-kiln-unpack-test";

struct Bench {
    _tmp: tempfile::TempDir,
    base: PathBuf,
    root: PathBuf,
    outside: PathBuf,
}

/// `base/root` (the unpack root) next to `base/outside/sentinel.txt`.
fn bench() -> Bench {
    let tmp = tempfile::tempdir().unwrap();
    let base = tmp.path().canonicalize().unwrap();
    let root = base.join("root");
    let outside = base.join("outside");
    std::fs::create_dir(&root).unwrap();
    std::fs::create_dir(&outside).unwrap();
    std::fs::write(outside.join("sentinel.txt"), "original").unwrap();
    Bench {
        _tmp: tmp,
        base,
        root,
        outside,
    }
}

impl Bench {
    /// Nothing outside the root changed.
    fn assert_outside_untouched(&self) {
        let mut top: Vec<String> = std::fs::read_dir(&self.base)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        top.sort();
        assert_eq!(top, ["outside", "root"], "entries next to the root");
        let inside: Vec<String> = std::fs::read_dir(&self.outside)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        assert_eq!(inside, ["sentinel.txt"]);
        assert_eq!(
            std::fs::read_to_string(self.outside.join("sentinel.txt")).unwrap(),
            "original"
        );
        use std::os::unix::fs::MetadataExt;
        assert_eq!(
            std::fs::metadata(self.outside.join("sentinel.txt"))
                .unwrap()
                .nlink(),
            1
        );
        assert!(!Path::new("/etc").join(EVIL).exists());
        assert!(!Path::new("/").join(EVIL).exists());
        assert!(!self.base.join(EVIL).exists());
    }
}

/// A tar entry with the raw name and link name given (the tar crate refuses
/// to write `..` through its checked setters, attackers do not).
fn entry(b: &mut tar::Builder<Vec<u8>>, kind: EntryType, name: &str, link: &str, data: &[u8]) {
    let mut h = tar::Header::new_gnu();
    {
        let gnu = h.as_gnu_mut().unwrap();
        gnu.name[..name.len()].copy_from_slice(name.as_bytes());
        gnu.linkname[..link.len()].copy_from_slice(link.as_bytes());
    }
    h.set_entry_type(kind);
    h.set_size(data.len() as u64);
    h.set_mode(if kind == EntryType::Directory {
        0o755
    } else {
        0o644
    });
    h.set_mtime(1_600_000_000);
    h.set_cksum();
    b.append(&h, data).unwrap();
}

fn layer(build: impl FnOnce(&mut tar::Builder<Vec<u8>>)) -> Vec<u8> {
    let mut b = tar::Builder::new(Vec::new());
    build(&mut b);
    b.into_inner().unwrap()
}

fn opts(on_unsafe: OnUnsafe) -> UnpackOptions {
    UnpackOptions {
        ownership: Ownership::Ignore,
        on_unsafe,
        max_bytes: kiln_rootfs::unpack::DEFAULT_MAX_BYTES,
    }
}

fn skipped(r: &ApplyReport) -> Vec<(String, SkipReason)> {
    r.skipped
        .iter()
        .map(|s| (s.path.clone(), s.reason.clone()))
        .collect()
}

#[test]
fn dotdot_names_are_refused_or_skipped() {
    let b = bench();
    let tar = layer(|t| {
        entry(
            t,
            EntryType::Regular,
            &format!("../../etc/{EVIL}"),
            "",
            b"x",
        );
        entry(
            t,
            EntryType::Regular,
            "../outside/sentinel.txt",
            "",
            b"pwned",
        );
        entry(t, EntryType::Regular, "ok/../../x", "", b"x");
        entry(t, EntryType::Regular, "fine", "", b"fine");
    });
    let err = apply_tar(&b.root, &tar[..], &opts(OnUnsafe::Fail)).unwrap_err();
    assert!(
        matches!(&err, UnpackError::UnsafeEntry { reason: SkipReason::ParentTraversal, path } if path.starts_with("../../etc")),
        "{err}"
    );
    b.assert_outside_untouched();

    let r = apply_tar(&b.root, &tar[..], &opts(OnUnsafe::Skip)).unwrap();
    assert_eq!(
        skipped(&r),
        vec![
            (format!("../../etc/{EVIL}"), SkipReason::ParentTraversal),
            (
                "../outside/sentinel.txt".into(),
                SkipReason::ParentTraversal
            ),
            ("ok/../../x".into(), SkipReason::ParentTraversal),
        ]
    );
    assert_eq!(
        std::fs::read_to_string(b.root.join("fine")).unwrap(),
        "fine"
    );
    b.assert_outside_untouched();
}

#[test]
fn absolute_names_are_refused_or_skipped() {
    let b = bench();
    let target = b.outside.join(EVIL);
    let tar = layer(|t| {
        entry(t, EntryType::Regular, target.to_str().unwrap(), "", b"x");
        entry(t, EntryType::Regular, &format!("/etc/{EVIL}"), "", b"x");
    });
    let err = apply_tar(&b.root, &tar[..], &opts(OnUnsafe::Fail)).unwrap_err();
    assert!(
        matches!(
            err,
            UnpackError::UnsafeEntry {
                reason: SkipReason::AbsolutePath,
                ..
            }
        ),
        "{err}"
    );
    let r = apply_tar(&b.root, &tar[..], &opts(OnUnsafe::Skip)).unwrap();
    assert_eq!(r.skipped.len(), 2);
    assert!(
        r.skipped
            .iter()
            .all(|s| s.reason == SkipReason::AbsolutePath)
    );
    b.assert_outside_untouched();
}

#[test]
fn a_symlink_to_slash_resolves_inside_the_root() {
    let b = bench();
    let abs_outside = b
        .outside
        .to_str()
        .unwrap()
        .trim_start_matches('/')
        .to_string();
    let tar = layer(|t| {
        entry(t, EntryType::Symlink, "link", "/", b"");
        entry(
            t,
            EntryType::Regular,
            &format!("link/etc/{EVIL}"),
            "",
            b"in-root",
        );
        entry(
            t,
            EntryType::Regular,
            &format!("link/{abs_outside}/sentinel.txt"),
            "",
            b"pwned",
        );
    });
    let r = apply_tar(&b.root, &tar[..], &opts(OnUnsafe::Fail)).unwrap();
    assert!(r.skipped.is_empty());
    // What `link/etc/...` means inside the container: the root's /etc.
    assert_eq!(
        std::fs::read_to_string(b.root.join("etc").join(EVIL)).unwrap(),
        "in-root"
    );
    assert_eq!(
        std::fs::read_to_string(b.root.join(&abs_outside).join("sentinel.txt")).unwrap(),
        "pwned"
    );
    assert!(
        b.root
            .join("link")
            .symlink_metadata()
            .unwrap()
            .file_type()
            .is_symlink()
    );
    b.assert_outside_untouched();
}

#[test]
fn a_symlink_to_dotdot_resolves_inside_the_root() {
    let b = bench();
    let tar = layer(|t| {
        entry(t, EntryType::Directory, "a", "", b"");
        entry(t, EntryType::Symlink, "a/up", "../..", b"");
        entry(t, EntryType::Regular, &format!("a/up/{EVIL}"), "", b"x");
        entry(
            t,
            EntryType::Regular,
            "a/up/outside/sentinel.txt",
            "",
            b"pwned",
        );
        entry(t, EntryType::Symlink, "chain1", "a/up/a/up/..", b"");
        entry(t, EntryType::Regular, "chain1/deep", "", b"x");
    });
    let r = apply_tar(&b.root, &tar[..], &opts(OnUnsafe::Fail)).unwrap();
    assert!(r.skipped.is_empty(), "{:?}", r.skipped);
    assert!(b.root.join(EVIL).is_file());
    assert!(b.root.join("deep").is_file());
    assert_eq!(
        std::fs::read_to_string(b.root.join("outside/sentinel.txt")).unwrap(),
        "pwned"
    );
    b.assert_outside_untouched();
}

#[test]
fn a_final_symlink_is_replaced_not_followed() {
    let b = bench();
    let sentinel = b.outside.join("sentinel.txt");
    let tar = layer(|t| {
        entry(
            t,
            EntryType::Symlink,
            "evil",
            sentinel.to_str().unwrap(),
            b"",
        );
        entry(t, EntryType::Regular, "evil", "", b"pwned");
        entry(
            t,
            EntryType::Symlink,
            "evildir",
            b.outside.to_str().unwrap(),
            b"",
        );
        entry(t, EntryType::Directory, "evildir", "", b"");
    });
    apply_tar(&b.root, &tar[..], &opts(OnUnsafe::Fail)).unwrap();
    assert_eq!(
        std::fs::read_to_string(b.root.join("evil")).unwrap(),
        "pwned"
    );
    assert!(b.root.join("evildir").symlink_metadata().unwrap().is_dir());
    b.assert_outside_untouched();
}

#[test]
fn hard_links_out_of_the_root_are_refused_or_skipped() {
    let b = bench();
    let tar = layer(|t| {
        entry(t, EntryType::Link, "hl-passwd", "/etc/passwd", b"");
        entry(
            t,
            EntryType::Link,
            "hl-outside",
            "../outside/sentinel.txt",
            b"",
        );
        entry(t, EntryType::Symlink, "link", "/", b"");
        // Through a symlink: resolves inside the root, where there is no
        // etc/passwd — never the host's.
        entry(t, EntryType::Link, "hl-via-link", "link/etc/passwd", b"");
        entry(t, EntryType::Regular, "real", "", b"content");
        entry(t, EntryType::Link, "hl-ok", "real", b"");
    });
    let err = apply_tar(&b.root, &tar[..], &opts(OnUnsafe::Fail)).unwrap_err();
    assert!(
        matches!(
            err,
            UnpackError::UnsafeEntry {
                reason: SkipReason::LinkTargetOutside,
                ..
            }
        ),
        "{err}"
    );
    b.assert_outside_untouched();

    let r = apply_tar(&b.root, &tar[..], &opts(OnUnsafe::Skip)).unwrap();
    assert_eq!(
        skipped(&r),
        vec![
            ("hl-passwd".into(), SkipReason::LinkTargetOutside),
            ("hl-outside".into(), SkipReason::LinkTargetOutside),
            ("hl-via-link".into(), SkipReason::LinkTargetMissing),
        ]
    );
    use std::os::unix::fs::MetadataExt;
    let real = std::fs::metadata(b.root.join("real")).unwrap();
    assert_eq!(
        std::fs::metadata(b.root.join("hl-ok")).unwrap().ino(),
        real.ino()
    );
    assert!(!b.root.join("hl-passwd").exists());
    b.assert_outside_untouched();
}

#[test]
fn whiteouts_cannot_reach_out() {
    let b = bench();
    let tar = layer(|t| {
        entry(t, EntryType::Regular, "../.wh.outside", "", b"");
        entry(t, EntryType::Symlink, "up", "../..", b"");
        entry(t, EntryType::Regular, "up/.wh.outside", "", b"");
        entry(t, EntryType::Regular, ".wh..", "", b"");
    });
    let err = apply_tar(&b.root, &tar[..], &opts(OnUnsafe::Fail)).unwrap_err();
    assert!(
        matches!(
            err,
            UnpackError::UnsafeEntry {
                reason: SkipReason::ParentTraversal,
                ..
            }
        ),
        "{err}"
    );
    let r = apply_tar(&b.root, &tar[..], &opts(OnUnsafe::Skip)).unwrap();
    assert_eq!(
        skipped(&r),
        vec![
            ("../.wh.outside".into(), SkipReason::ParentTraversal),
            (".wh..".into(), SkipReason::InvalidWhiteout),
        ]
    );
    b.assert_outside_untouched();
}

#[test]
fn devices_and_fifos_are_skipped_and_counted() {
    let b = bench();
    let tar = layer(|t| {
        entry(t, EntryType::Char, "dev-null", "", b"");
        entry(t, EntryType::Block, "dev-sda", "", b"");
        entry(t, EntryType::Fifo, "fifo", "", b"");
    });
    let r = apply_tar(&b.root, &tar[..], &opts(OnUnsafe::Fail)).unwrap();
    assert_eq!(r.devices_skipped, 3);
    assert_eq!(std::fs::read_dir(&b.root).unwrap().count(), 0);
}

/// A tar made by GNU tar in a scratch directory: `script` creates the file
/// `big` and archives it as `out.tar`.
fn gnu_tar(script: &str) -> Vec<u8> {
    let dir = tempfile::tempdir().unwrap();
    let status = std::process::Command::new("sh")
        .args(["-c", script])
        .current_dir(dir.path())
        .status()
        .unwrap();
    assert!(status.success(), "{script}");
    std::fs::read(dir.path().join("out.tar")).unwrap()
}

/// Bytes the file really occupies on disk.
fn allocated(p: &Path) -> u64 {
    use std::os::unix::fs::MetadataExt;
    std::fs::metadata(p).unwrap().blocks() * 512
}

#[test]
fn sparse_files_unpack_with_their_holes_in_gnu_and_pax_formats() {
    for format in ["gnu", "posix"] {
        let b = bench();
        let tar = gnu_tar(&format!(
            "mkdir d && truncate -s 1G d/big && echo tail >> d/big && tar --sparse --format={format} -cf out.tar d"
        ));
        assert!(tar.len() < 1 << 20, "{format}: the archive is sparse");
        let r = apply_tar(&b.root, &tar[..], &opts(OnUnsafe::Fail)).unwrap();
        assert!(r.skipped.is_empty(), "{format}: {:?}", r.skipped);
        let big = b.root.join("d/big");
        let meta = std::fs::metadata(&big).unwrap();
        assert_eq!(meta.len(), (1 << 30) + 5, "{format}");
        assert!(
            allocated(&big) < 1 << 20,
            "{format}: {} bytes on disk",
            allocated(&big)
        );
        let mut f = std::fs::File::open(&big).unwrap();
        std::io::Seek::seek(&mut f, std::io::SeekFrom::Start(1 << 30)).unwrap();
        let mut tail = String::new();
        std::io::Read::read_to_string(&mut f, &mut tail).unwrap();
        assert_eq!(tail, "tail\n", "{format}");
        // PAX sparse is not mistaken for a directory GNUSparseFile.N.
        let names: Vec<_> = std::fs::read_dir(b.root.join("d"))
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names, vec![std::ffi::OsString::from("big")], "{format}");
        assert!(!b.root.join("GNUSparseFile.0").exists());
    }
}

#[test]
fn a_layer_that_expands_past_the_cap_is_refused_and_zeros_cost_no_disk() {
    // 256 MiB of zeros (a few hundred KB compressed): holes, no data.
    let b = bench();
    let tar = layer(|t| {
        let mut h = tar::Header::new_gnu();
        h.set_entry_type(EntryType::Regular);
        h.set_size(256 << 20);
        h.set_mode(0o644);
        t.append_data(
            &mut h,
            "zeros",
            std::io::Read::take(std::io::repeat(0), 256 << 20),
        )
        .unwrap();
    });
    let mut small_cap = opts(OnUnsafe::Fail);
    small_cap.max_bytes = 1 << 20;
    apply_tar(&b.root, &tar[..], &small_cap).unwrap();
    assert_eq!(
        std::fs::metadata(b.root.join("zeros")).unwrap().len(),
        256 << 20
    );
    assert!(allocated(&b.root.join("zeros")) < 1 << 20);

    // 2 MiB of data against a 1 MiB cap: refused, naming the variable.
    let b = bench();
    let tar = layer(|t| {
        for name in ["a", "b"] {
            let mut h = tar::Header::new_gnu();
            h.set_entry_type(EntryType::Regular);
            h.set_size(1 << 20);
            h.set_mode(0o644);
            t.append_data(
                &mut h,
                name,
                std::io::Read::take(std::io::repeat(7), 1 << 20),
            )
            .unwrap();
        }
    });
    let err = apply_tar(&b.root, &tar[..], &small_cap).unwrap_err();
    assert!(
        matches!(err, UnpackError::TooLarge { limit } if limit == 1 << 20),
        "{err}"
    );
    assert!(err.to_string().contains("KILN_MAX_LAYER_BYTES"), "{err}");
}
