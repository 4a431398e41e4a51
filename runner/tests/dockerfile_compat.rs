//! Dockerfiles as Docker builds them: each case under
//! `testdata/dockerfile-compat/` is built by kiln and by Buildah (Debian's,
//! chroot isolation), and the two images' filesystems (type, mode, owner,
//! link target, content, xattrs) and configs are compared entry by entry.
//!
//! What may differ by design is listed once, in [`ALLOWED`],
//! [`ALLOWED_LABELS`] and [`BY_DESIGN`] (the paths of single cases where
//! Buildah 1.28 departs from Docker's BuildKit, each with the reason). Cases using
//! syntax Buildah 1.28 does not read (heredocs, `RUN --mount=type=cache`,
//! `ADD --checksum`) are compared with an equivalent Dockerfile it does,
//! named `Dockerfile.buildah`.

#![allow(clippy::unwrap_used)] // test code: a failure is a test failure

use kiln_testsupport::Bench;
use kiln_testsupport::fixture::Fixture;
use kiln_testsupport::imagetree::{Allowed, ImageTree, content_digest, differences, read_layout};

const KILN: &str = env!("CARGO_BIN_EXE_kiln");

/// Paths Buildah's RUN leaves behind and Docker's does not: the mount
/// points its chroot runtime creates when the image lacks them (empty
/// files for the three it bind-mounts, `/run` for its secrets).
const ALLOWED: &[&str] = &["run", "etc/hostname", "etc/hosts", "etc/resolv.conf"];

/// Labels Buildah adds by itself (kiln adds none to a Dockerfile's image).
const ALLOWED_LABELS: &[&str] = &["io.buildah.version"];

/// Paths of one case that differ because Buildah 1.28 is not BuildKit
/// there: (case, path, why). kiln follows BuildKit, and each case's test
/// checks kiln's side of these paths itself.
const BY_DESIGN: &[(&str, &str, &str)] = &[
    (
        "volume-dirs",
        "vol/a/x",
        "Buildah drops what a RUN writes into a declared VOLUME (the classic builder's rule); BuildKit keeps it",
    ),
    (
        "arg-scoping",
        "inherited",
        "a stage built on a stage inherits its ARGs in BuildKit, not in Buildah",
    ),
    (
        "run-mounts",
        "bound-listing",
        "Buildah binds the context without applying .dockerignore",
    ),
    (
        "run-mounts",
        "after-rw",
        "Buildah lets a rw bind write into the context; BuildKit throws the writes away",
    ),
    (
        "run-mounts",
        "var/cache",
        "Buildah leaves the parents of the mount points it created",
    ),
];

/// How a case is built and judged beyond the defaults.
#[derive(Default)]
struct Case<'a> {
    /// `--target` for both builders.
    target: Option<&'a str>,
    /// Compare Env as a set (see [`Allowed::env_order`]).
    env_order: bool,
    /// `--build-arg`s for both builders.
    build_args: &'a [String],
    /// `--label`s for both builders.
    labels: &'a [&'a str],
}

/// Builds the case with both, returns the differences not allowed and
/// kiln's image.
fn compare(case: &str, how: &Case) -> (Vec<String>, ImageTree) {
    let bench = Bench::get();
    let f = Fixture::copy(KILN, &format!("dockerfile-compat/{case}"));
    let busybox = format!("{}/base/busybox:latest", bench.registry());
    let python = bench.base_python().to_string();
    for name in ["Dockerfile", "Dockerfile.buildah"] {
        if f.root().join(name).exists() {
            f.edit(name, |t| {
                t.replace("127.0.0.1:5000/base/busybox:latest", &busybox)
                    .replace("127.0.0.1:5000/base/python:3.11-bookworm", &python)
            });
        }
    }
    apply_modes(&f.root());
    let out_dir = tempfile::tempdir().unwrap();
    let layout = out_dir.path().join("kiln");
    let output = format!("oci:{}", layout.display());
    let mut args = vec![
        "build",
        "-f",
        "Dockerfile",
        "-t",
        "compat:t",
        "--output",
        &output,
    ];
    let mut target: Vec<&str> = how.target.map(|t| vec!["--target", t]).unwrap_or_default();
    for a in how.build_args {
        target.extend(["--build-arg", a.as_str()]);
    }
    for l in how.labels {
        target.extend(["--label", l]);
    }
    args.extend(&target);
    args.push(".");
    args.insert(1, "--explain");
    let out = f.kiln(&args);
    assert_eq!(out.code, 0, "kiln: {}\n{}", out.stdout, out.stderr);
    let ours = read_layout(&layout, "t");
    // `--explain` lists every layer the Dockerfile made (the target's and
    // the stages' it copies from), each built, and says why.
    let built = out
        .stdout
        .lines()
        .filter(|l| l.contains(" built ") && l.contains(" — no cached layer for "))
        .count();
    assert!(
        built >= own_layers(&ours.config),
        "--explain: {}",
        out.stdout
    );
    let work = tempfile::tempdir().unwrap();
    let theirs_file = if f.root().join("Dockerfile.buildah").exists() {
        "Dockerfile.buildah"
    } else {
        "Dockerfile"
    };
    let theirs_layout =
        kiln_testsupport::buildah_build(&f.root(), theirs_file, work.path(), &target);
    let theirs = read_layout(&theirs_layout, "t");
    let allowed = Allowed {
        paths: ALLOWED
            .iter()
            .chain(
                BY_DESIGN
                    .iter()
                    .filter(|(c, _, _)| *c == case)
                    .map(|(_, p, _)| p),
            )
            .map(|s| s.to_string())
            .collect(),
        labels: ALLOWED_LABELS.iter().map(|s| s.to_string()).collect(),
        env_order: how.env_order,
    };
    (differences(&ours, &theirs, &allowed), ours)
}

/// How many layers of the image its Dockerfile made (history entries kiln
/// stamps with the epoch, not empty).
fn own_layers(config: &serde_json::Value) -> usize {
    let history = config["history"].as_array().cloned().unwrap_or_default();
    history
        .iter()
        .filter(|h| h["empty_layer"] != true && h["created"] == "1970-01-01T00:00:00Z")
        .count()
}

fn assert_same(case: &str, how: &Case) -> ImageTree {
    let (d, ours) = compare(case, how);
    assert!(
        d.is_empty(),
        "{case} (target {:?}): kiln and Buildah differ:\n{}",
        how.target,
        d.join("\n")
    );
    ours
}

/// Git keeps no modes but the executable bit: a case's `.modes` lists
/// `OCTAL PATH` lines to set before building.
fn apply_modes(root: &std::path::Path) {
    use std::os::unix::fs::PermissionsExt as _;
    let Ok(text) = std::fs::read_to_string(root.join(".modes")) else {
        return;
    };
    // Deepest first, so a directory made private is changed last.
    let mut lines: Vec<(&str, &str)> = text.lines().filter_map(|l| l.split_once(' ')).collect();
    lines.sort_by_key(|(_, p)| std::cmp::Reverse(p.matches('/').count()));
    for (mode, path) in lines {
        let mode = u32::from_str_radix(mode, 8).unwrap();
        std::fs::set_permissions(root.join(path), std::fs::Permissions::from_mode(mode)).unwrap();
    }
}

#[test]
fn parents_copy_passes_through_keep_their_mode_and_owner() {
    assert_same("existing-parents", &Case::default());
}

#[test]
fn a_destination_through_a_symlink_writes_through_it() {
    assert_same("symlink-dest", &Case::default());
}

#[test]
fn chown_makes_the_missing_parents_the_users() {
    assert_same("chown-parents", &Case::default());
}

#[test]
fn copied_directories_keep_their_mode_and_chmod_sets_both() {
    assert_same("dir-modes", &Case::default());
}

#[test]
fn copy_from_a_stage_keeps_its_owners_and_modes() {
    assert_same("copy-from-owner", &Case::default());
}

#[test]
fn a_wildcard_that_matches_nothing_beside_one_that_does_copies_what_matches() {
    assert_same("copy-wildcards", &Case::default());
}

#[test]
fn run_as_a_named_user_gets_its_home() {
    assert_same("user-home", &Case::default());
}

#[test]
fn volume_creates_its_directories() {
    let ours = assert_same("volume-dirs", &Case::default());
    assert_eq!(ours.files["vol/a/x"].content, content_digest(b"x\n"));
}

#[test]
fn workdir_creates_its_directory() {
    assert_same("workdir", &Case::default());
}

#[test]
fn from_scratch_gets_the_default_path() {
    assert_same("scratch-path", &Case::default());
}

#[test]
fn a_uid_without_a_passwd_entry_runs_with_gid_0() {
    assert_same("user-uid-gid", &Case::default());
}

#[test]
fn add_extracts_every_tar_variant_named_and_copies_the_rest() {
    assert_same("add-archives", &Case::default());
}

#[test]
fn file_capabilities_and_user_xattrs_survive_copy_from_and_the_next_run() {
    assert_same("xattrs", &Case::default());
}

#[test]
fn paths_removed_and_made_again_end_as_dockers() {
    assert_same("recreated", &Case::default());
}

#[test]
fn copy_from_an_image_pulls_it_like_a_stage() {
    assert_same("copy-from-image", &Case::default());
}

#[test]
fn the_dockerfiles_own_dockerignore_wins_over_the_contexts() {
    assert_same("own-dockerignore", &Case::default());
}
#[test]
fn cmd_and_entrypoint_interplay_as_docker() {
    for target in ["one", "two", "four"] {
        assert_same(
            "cmd-entrypoint",
            &Case {
                target: Some(target),
                ..Case::default()
            },
        );
    }
}
#[test]
fn env_forms_and_substitution_as_docker() {
    assert_same(
        "env",
        &Case {
            env_order: true,
            ..Case::default()
        },
    );
}
#[test]
fn maintainer_is_the_author_and_no_label_is_added() {
    assert_same("labels-maintainer", &Case::default());
    // Labels the user asks for with --label, as docker build's.
    let ours = assert_same(
        "labels-maintainer",
        &Case {
            labels: &["org.example.team=ml", "a=overridden"],
            ..Case::default()
        },
    );
    assert_eq!(ours.config["config"]["Labels"]["a"], "overridden");
}

#[test]
fn arg_scoping_follows_docker() {
    let ours = assert_same("arg-scoping", &Case::default());
    assert_eq!(
        ours.files["inherited"].content,
        content_digest(b"W=stage-default V=global\n")
    );
}

#[test]
fn target_builds_only_the_stages_it_needs() {
    assert_same(
        "target-only",
        &Case {
            target: Some("wanted"),
            ..Case::default()
        },
    );
}

#[test]
fn heredocs_run_and_copy_as_buildkit() {
    assert_same("heredocs", &Case::default());
}

#[test]
fn copy_parents_exclude_link_and_add_from_a_url_with_its_checksum() {
    let server = kiln_testsupport::http::FileServer::start(
        [("/data.txt".to_string(), b"hello\n".to_vec())].into(),
    );
    let ours = assert_same(
        "copy-flags",
        &Case {
            build_args: &[format!("BASE_URL={}", server.url())],
            ..Case::default()
        },
    );
    assert_eq!(ours.files["dl/data.txt"].mode, 0o600);
}

#[test]
fn add_refuses_a_download_whose_checksum_differs() {
    let server = kiln_testsupport::http::FileServer::start(
        [("/data.txt".to_string(), b"not hello\n".to_vec())].into(),
    );
    let f = Fixture::copy(KILN, "dockerfile-compat/copy-flags");
    let base = format!("{}/base/busybox:latest", Bench::get().registry());
    f.edit("Dockerfile", |t| {
        t.replace("127.0.0.1:5000/base/busybox:latest", &base)
    });
    let out_dir = tempfile::tempdir().unwrap();
    let output = format!("oci:{}", out_dir.path().join("k").display());
    let arg = format!("BASE_URL={}", server.url());
    let out = f.kiln(&[
        "build",
        "-f",
        "Dockerfile",
        "-t",
        "x:t",
        "--output",
        &output,
        "--build-arg",
        &arg,
        ".",
    ]);
    assert_eq!(out.code, 1, "{}\n{}", out.stdout, out.stderr);
    assert!(out.stderr.contains("checksum mismatch"), "{}", out.stderr);
    assert!(out.stderr.contains("Dockerfile:10"), "{}", out.stderr);
    assert!(
        out.stderr
            .contains("5891b5b522d5df086d0ff0b110fbd9d21bb4fc7163af34d08286a2e846f6be03"),
        "{}",
        out.stderr
    );
}

#[test]
fn run_mounts_cache_bind_and_tmpfs_as_buildkit() {
    let ours = assert_same("run-mounts", &Case::default());
    for path in ["bound-listing", "after-rw", "bound"] {
        assert_eq!(
            ours.files[path].content,
            content_digest(b"input\n"),
            "{path}"
        );
    }
    assert_eq!(ours.files["rw"].content, content_digest(b"changed\n"));
    assert!(!ours.files.contains_key("var/cache/app/hit"));
}

#[test]
fn a_source_substituted_to_nothing_copies_the_context_as_docker() {
    assert_same("empty-source", &Case::default());
}
