//! `kiln build -f Dockerfile` against the bench registry, judged by skopeo,
//! umoci and runc: a multi-stage build with COPY --from, a RUN that deletes
//! a parent file, config instructions; the per-instruction cache; errors
//! with their line.

#![allow(clippy::unwrap_used)] // test code: a failure is a test failure

use kiln_testsupport::fixture::{
    Fixture, layer_statuses, report_image, unique_repo, unpack_pushed,
};
use kiln_testsupport::{Bench, runc_run, skopeo_inspect_config};
use serde_json::Value;

const KILN: &str = env!("CARGO_BIN_EXE_kiln");

fn fixture(name: &str) -> (Fixture, String) {
    let bench = Bench::get();
    let f = Fixture::copy(KILN, &format!("dockerfile-build/{name}"));
    let base = format!("{}/base/busybox:latest", bench.registry());
    f.edit("Dockerfile", |t| {
        t.replace("127.0.0.1:5000/base/busybox:latest", &base)
    });
    let tag = format!("{}:v1", unique_repo(bench.registry(), name));
    (f, tag)
}

fn build(f: &Fixture, tag: &str, extra: &[&str]) -> Value {
    let mut args = vec!["build", "--json", "-f", "Dockerfile", "-t", tag];
    args.extend_from_slice(extra);
    args.push(".");
    let out = f.kiln(&args);
    assert_eq!(out.code, 0, "{}\n{}", out.stdout, out.stderr);
    serde_json::from_str(&out.stdout).unwrap()
}

#[test]
fn a_multi_stage_build_gives_the_image_docker_would() {
    let (f, tag) = fixture("multistage");
    let report = build(&f, &tag, &["--build-arg", "FLAVOUR=spicy"]);
    let image = &report["images"][0];
    assert!(
        image["reference"].as_str().unwrap().ends_with(":v1"),
        "{report:#}"
    );

    let config = skopeo_inspect_config(&format!("docker://{tag}"), &["--tls-verify=false"]);
    let c = &config["config"];
    let env: Vec<&str> = c["Env"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e.as_str().unwrap())
        .collect();
    assert!(env.contains(&"FLAVOUR=spicy"), "{env:?}");
    assert!(env.contains(&"GREETING_FILE=/app/greeting.txt"), "{env:?}");
    assert_eq!(c["User"], "1000:1000");
    assert_eq!(c["WorkingDir"], "/app");
    assert_eq!(c["Cmd"], serde_json::json!(["/app/run.sh"]));
    assert_eq!(
        c["Labels"]["org.opencontainers.image.title"],
        "kiln dockerfile test"
    );
    // busybox's layer + COPY --from + COPY + RUN: the first stage is not in it.
    assert_eq!(
        config["rootfs"]["diff_ids"].as_array().unwrap().len(),
        4,
        "{config:#}"
    );

    let dir = tempfile::tempdir().unwrap();
    let bundle = unpack_pushed(&tag, dir.path());
    let rootfs = bundle.join("rootfs");
    assert_eq!(
        std::fs::read_to_string(rootfs.join("app/greeting.txt")).unwrap(),
        "hello from the context\nbuilt by stage build\n"
    );
    assert!(
        !rootfs.join("bin/true").exists(),
        "the RUN's deletion was not applied"
    );
    assert!(rootfs.join("bin/sh").exists());
    assert!(
        !rootfs.join("src").exists(),
        "the build stage leaked into the image"
    );
    let out = runc_run(&bundle, &["/app/run.sh"]);
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert_eq!(
        out.stdout,
        "hello from the context\nbuilt by stage build\nflavour: spicy, uid 1000\n"
    );
}

#[test]
fn touching_a_copied_file_rebuilds_that_layer_and_the_ones_after_only() {
    let (f, tag) = fixture("multistage");
    let first = build(&f, &tag, &[]);
    let all_built = layer_statuses(report_image(&first, &tag));
    assert!(all_built.iter().all(|(_, s)| s == "built"), "{all_built:?}");
    // No change: everything from the cache.
    let again = build(&f, &tag, &[]);
    let statuses = layer_statuses(report_image(&again, &tag));
    assert!(statuses.iter().all(|(_, s)| s == "reused"), "{statuses:?}");
    assert_eq!(again["images"][0]["digest"], first["images"][0]["digest"]);
    // The run script changes: its COPY and the RUN after it are rebuilt;
    // the first stage's layers and the COPY --from before it are reused.
    f.edit("run.sh", |t| format!("{t}echo changed\n"));
    let touched = build(&f, &tag, &[]);
    let statuses: Vec<(String, String)> = layer_statuses(report_image(&touched, &tag));
    let by_line = |line: &str| {
        statuses
            .iter()
            .find(|(l, _)| l.starts_with(line))
            .map(|(_, s)| s.as_str())
            .unwrap_or_else(|| panic!("no layer for line {line} in {statuses:?}"))
    };
    assert_eq!(by_line("7:"), "reused", "{statuses:?}");
    assert_eq!(by_line("8:"), "reused", "{statuses:?}");
    assert_eq!(by_line("14:"), "reused", "{statuses:?}");
    assert_eq!(by_line("15:"), "built", "{statuses:?}");
    assert_eq!(by_line("16:"), "built", "{statuses:?}");
}

#[test]
fn an_ignored_file_is_not_in_the_context() {
    let (f, tag) = fixture("multistage");
    f.edit("Dockerfile", |t| {
        t.replace(
            "COPY --chmod=755 run.sh",
            "COPY ignored.txt /app/\nCOPY --chmod=755 run.sh",
        )
    });
    let out = f.kiln(&["build", "-f", "Dockerfile", "-t", &tag, "."]);
    assert_eq!(out.code, 1, "{}", out.stderr);
    assert!(
        out.stderr.contains("ignored.txt") && out.stderr.contains(".dockerignore"),
        "{}",
        out.stderr
    );
}

#[test]
fn a_malformed_dockerfile_fails_with_its_line() {
    let bench = Bench::get();
    let f = Fixture::copy(KILN, "dockerfile-build/bad");
    let tag = format!("{}:v1", unique_repo(bench.registry(), "bad"));
    let out = f.kiln(&["build", "-f", "Dockerfile", "-t", &tag, "."]);
    assert_eq!(out.code, 1, "{}", out.stderr);
    assert!(out.stderr.contains("Dockerfile:4:"), "{}", out.stderr);
    assert!(
        out.stderr.to_lowercase().contains("unknown instruction"),
        "{}",
        out.stderr
    );
    assert!(!out.stderr.contains("panicked"), "{}", out.stderr);

    let out = f.kiln(&["build", "-f", "Dockerfile.missing", "-t", &tag, "."]);
    assert_eq!(out.code, 1, "{}", out.stderr);
    assert!(
        out.stderr.contains("Dockerfile:2:") && out.stderr.contains("no-such-file"),
        "{}",
        out.stderr
    );
}

#[test]
fn a_pipeline_image_on_a_dockerfile_parent_gets_kilns_layers_on_top() {
    let bench = Bench::get();
    let f = Fixture::copy(KILN, "dockerfile-build/zenml");
    let base = format!("{}/base/python:3.11-bookworm", bench.registry());
    f.edit("Dockerfile", |t| {
        t.replace("127.0.0.1:5000/base/python:3.11-bookworm", &base)
    });
    let repo = unique_repo(bench.registry(), "zenml");
    f.edit("kiln.yaml", |t| {
        t.replace("127.0.0.1:5000/kiln-test/zenml-dockerfile", &repo)
    });
    let report = f.build_json(&[]);
    let image = &report["images"][0];
    let labels: Vec<String> = layer_statuses(image).into_iter().map(|(l, _)| l).collect();
    assert_eq!(labels, ["requirements (user)", "code"], "{report:#}");
    assert!(
        image["parent"]
            .as_str()
            .unwrap()
            .starts_with(&format!("{repo}@sha256:")),
        "the parent is the Dockerfile's image, pushed next to it: {report:#}"
    );
    let reference = image["reference"].as_str().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let bundle = unpack_pushed(reference, dir.path());
    let out = runc_run(&bundle, &["python3", "/app/steps/hello.py"]);
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert_eq!(out.stdout, "from the Dockerfile yes 1.16.0\n");
}

#[test]
fn run_secrets_are_visible_to_the_command_and_stored_nowhere() {
    let (f, tag) = fixture("secret");
    // Without the required secret: a clear error naming it.
    let out = f.kiln(&["build", "-f", "Dockerfile", "-t", &tag, "."]);
    assert_eq!(out.code, 1, "{}", out.stderr);
    assert!(
        out.stderr.contains("secret \"token\" is required"),
        "{}",
        out.stderr
    );

    // The secret lives outside the context.
    let secret = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(secret.path(), "s3cr3t-kiln-token").unwrap();
    let src = format!("id=token,src={}", secret.path().display());
    let out = f.kiln(&[
        "build",
        "-f",
        "Dockerfile",
        "-t",
        &tag,
        "--secret",
        &src,
        ".",
    ]);
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert!(!out.stderr.contains("s3cr3t-kiln-token"), "{}", out.stderr);
    let dir = tempfile::tempdir().unwrap();
    let bundle = unpack_pushed(&tag, dir.path());
    let rootfs = bundle.join("rootfs");
    assert_eq!(
        std::fs::read_to_string(rootfs.join("checked")).unwrap(),
        // sha256 of the secret: the command read it.
        "c5387e92a8d0e03b2d60811e99df8d67cbdfdecf03e74b1d5a120e9e2c9b36f4\n"
    );
    assert_eq!(
        std::fs::read_to_string(rootfs.join("size")).unwrap().trim(),
        "17"
    );
    // No byte of it in any blob of the image (layers, config, manifest).
    for entry in walkdir(&dir.path().join("layout/blobs")) {
        let bytes = std::fs::read(&entry).unwrap();
        let plain = match bytes.starts_with(&[0x1f, 0x8b]) {
            true => {
                let mut out = Vec::new();
                std::io::Read::read_to_end(
                    &mut flate2::read::MultiGzDecoder::new(&bytes[..]),
                    &mut out,
                )
                .unwrap();
                out
            }
            false => bytes,
        };
        assert!(
            !plain.windows(17).any(|w| w == b"s3cr3t-kiln-token"),
            "the secret is in {}",
            entry.display()
        );
    }
}

fn walkdir(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    let mut files = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            files.extend(walkdir(&path));
        } else {
            files.push(path);
        }
    }
    files
}

/// The pid of the slow fixture's `sleep 3137`, if it runs.
fn slow_sleep() -> Option<u32> {
    std::fs::read_dir("/proc").ok()?.flatten().find_map(|e| {
        let pid: u32 = e.file_name().to_str()?.parse().ok()?;
        let cmdline = std::fs::read(e.path().join("cmdline")).ok()?;
        (cmdline == b"sleep\x003137\x00").then_some(pid)
    })
}

fn wait_for(secs: u64, mut cond: impl FnMut() -> bool) -> bool {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(secs);
    while std::time::Instant::now() < deadline {
        if cond() {
            return true;
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    false
}

/// Directories in the cache's scratch area.
fn scratch_dirs(f: &Fixture) -> Vec<std::path::PathBuf> {
    std::fs::read_dir(f.cache_home().join("kiln/work"))
        .map(|rd| rd.flatten().map(|e| e.path()).collect())
        .unwrap_or_default()
}

#[test]
fn a_killed_builds_scratch_root_is_listed_and_removed_by_prune_and_by_the_next_build() {
    let (f, tag) = fixture("slow");
    for round in ["prune", "next build"] {
        let mut kiln = std::process::Command::new(KILN)
            .args(["build", "-f", "Dockerfile", "-t", &tag, "."])
            .current_dir(f.root())
            .env("HOME", f.home())
            .env("XDG_CACHE_HOME", f.cache_home())
            .env("XDG_DATA_HOME", f.data_home())
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap();
        assert!(
            wait_for(60, || slow_sleep().is_some()),
            "{round}: the RUN never started"
        );
        kiln.kill().unwrap();
        kiln.wait().unwrap();
        assert!(
            wait_for(10, || slow_sleep().is_none()),
            "{round}: the RUN outlived kiln"
        );
        let left = scratch_dirs(&f);
        assert!(
            left.iter().any(|p| p.is_dir()),
            "{round}: SIGKILL left no scratch root? {left:?}"
        );
        if round == "prune" {
            let out = f.kiln(&["cache", "ls"]);
            assert_eq!(out.code, 0, "{}", out.stderr);
            assert!(
                out.stdout.contains("scratch roots left by killed builds"),
                "{}",
                out.stdout
            );
            let out = f.kiln(&["cache", "prune"]);
            assert_eq!(out.code, 0, "{}", out.stderr);
            assert!(out.stdout.contains("scratch roots"), "{}", out.stdout);
        } else {
            f.edit("Dockerfile", |t| t.replace("sleep 3137", "true"));
            build(&f, &tag, &[]);
        }
        assert_eq!(
            scratch_dirs(&f),
            Vec::<std::path::PathBuf>::new(),
            "{round}: leftovers remain"
        );
    }
}

/// A project with `Dockerfile` (`ADD <archive> /added/` on busybox) and the
/// archive `make` builds in its directory.
fn add_project(archive: &str, make: &str) -> (Fixture, String) {
    let bench = Bench::get();
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("Dockerfile"),
        format!(
            "FROM {}/base/busybox:latest\nADD {archive} /added/\n",
            bench.registry()
        ),
    )
    .unwrap();
    let status = std::process::Command::new("sh")
        .args(["-c", make])
        .current_dir(dir.path())
        .status()
        .unwrap();
    assert!(status.success(), "{make}");
    std::fs::remove_file(dir.path().join("big")).ok();
    let f = Fixture::copy_from(KILN, dir.path());
    let tag = format!("{}:v1", unique_repo(bench.registry(), "add"));
    (f, tag)
}

const PY_TAR: &str = "python3 -c 'import sys, tarfile, io
t = tarfile.open(sys.argv[1], \"w\")
for spec in sys.argv[2:]:
    name, kind, arg = spec.split(\":\", 2)
    i = tarfile.TarInfo(name)
    if kind == \"f\":
        i.size = len(arg); t.addfile(i, io.BytesIO(arg.encode()))
    elif kind == \"h\":
        i.type = tarfile.LNKTYPE; i.linkname = arg; t.addfile(i)
    elif kind == \"c\":
        i.type = tarfile.CHRTYPE; i.devmajor = 1; i.devminor = 3; t.addfile(i)
t.close()' ";

#[test]
fn add_streams_gnu_sparse_files_and_refuses_what_unpacking_a_layer_refuses() {
    // A GNU sparse file comes out whole: 64 MiB of hole, then its data.
    let (f, tag) = add_project(
        "sparse.tar",
        "truncate -s 64M big && echo tail >> big && tar --sparse --format=gnu -cf sparse.tar big",
    );
    build(&f, &tag, &[]);
    let dir = tempfile::tempdir().unwrap();
    let rootfs = unpack_pushed(&tag, dir.path()).join("rootfs");
    let big = std::fs::read(rootfs.join("added/big")).unwrap();
    assert_eq!(big.len(), 64 * 1024 * 1024 + 5);
    assert!(big.ends_with(b"tail\n") && big[..1024].iter().all(|&b| b == 0));

    // Device nodes are skipped as when unpacking; the rest is added, and a
    // hard link is re-rooted with its target.
    let (f, tag) = add_project("dev.tar", &format!("{PY_TAR} dev.tar null:c: a:f:A b:h:a"));
    build(&f, &tag, &[]);
    let dir = tempfile::tempdir().unwrap();
    let rootfs = unpack_pushed(&tag, dir.path()).join("rootfs");
    assert!(!rootfs.join("added/null").exists());
    assert_eq!(
        std::fs::read_to_string(rootfs.join("added/b")).unwrap(),
        "A"
    );

    // A 1 TiB sparse file in a few KB of archive: past the layer cap.
    let (f, tag) = add_project(
        "huge.tar",
        "truncate -s 1T big && tar --sparse --format=gnu -cf huge.tar big",
    );
    let out = f.kiln(&["build", "-f", "Dockerfile", "-t", &tag, "."]);
    assert_eq!(out.code, 1, "{}\n{}", out.stdout, out.stderr);
    assert!(
        out.stderr.contains("KILN_MAX_LAYER_BYTES"),
        "{}",
        out.stderr
    );

    for (make, says) in [
        (
            "truncate -s 8M big && echo x >> big && tar --sparse --format=posix -cf bad.tar big"
                .to_string(),
            "PAX sparse",
        ),
        (format!("{PY_TAR} bad.tar x:h:../../../../tmp/x"), "'..'"),
        (format!("{PY_TAR} bad.tar x:h:/tmp/x"), "absolute"),
        (
            format!("{PY_TAR} bad.tar x:h:etc/passwd"),
            "not a file the archive holds",
        ),
        (format!("{PY_TAR} bad.tar d/.wh.x:f:"), "whiteout"),
    ] {
        let (f, tag) = add_project("bad.tar", &make);
        let out = f.kiln(&["build", "-f", "Dockerfile", "-t", &tag, "."]);
        assert_eq!(out.code, 1, "{make}: {}\n{}", out.stdout, out.stderr);
        assert!(out.stderr.contains(says), "{make}: {}", out.stderr);
        assert!(out.stderr.contains("bad.tar"), "{}", out.stderr);
        assert!(!out.stderr.contains("panicked"), "{}", out.stderr);
    }
}

#[test]
fn copy_to_an_existing_directory_goes_into_it_as_docker_does() {
    let (f, tag) = fixture("copyshape");
    build(&f, &tag, &[]);
    let dir = tempfile::tempdir().unwrap();
    let rootfs = unpack_pushed(&tag, dir.path()).join("rootfs");
    assert_eq!(
        std::fs::read_to_string(rootfs.join("checked")).unwrap(),
        "ok\n"
    );
    assert!(rootfs.join("etc").is_dir() && rootfs.join("etc/passwd").is_file());
    assert_eq!(
        std::fs::read_to_string(rootfs.join("etc/x")).unwrap(),
        "copied\n"
    );
    assert!(rootfs.join("etc/y").is_file() && rootfs.join("newfile").is_file());
}

/// (path, kind, content) of the files under the given paths of a root.
fn shape(rootfs: &std::path::Path, paths: &[&str]) -> Vec<(String, &'static str, String)> {
    paths
        .iter()
        .map(|p| {
            let full = rootfs.join(p);
            let meta = std::fs::symlink_metadata(&full);
            let (kind, content) = match meta {
                Ok(m) if m.is_dir() => ("dir", String::new()),
                Ok(m) if m.is_file() => {
                    ("file", std::fs::read_to_string(&full).unwrap_or_default())
                }
                Ok(_) => ("other", String::new()),
                Err(_) => ("missing", String::new()),
            };
            (p.to_string(), kind, content)
        })
        .collect()
}

#[test]
fn copy_shapes_match_buildahs() {
    let (f, tag) = fixture("copyshape");
    build(&f, &tag, &[]);
    let dir = tempfile::tempdir().unwrap();
    let ours = unpack_pushed(&tag, dir.path()).join("rootfs");
    let work = tempfile::tempdir().unwrap();
    let layout = kiln_testsupport::buildah_build(&f.root(), "Dockerfile", work.path(), &[]);
    let theirs = work.path().join("bundle");
    kiln_testsupport::umoci_unpack(&layout, "t", &theirs);
    let paths = ["etc", "etc/x", "etc/y", "etc/passwd", "newfile", "checked"];
    assert_eq!(shape(&ours, &paths), shape(&theirs.join("rootfs"), &paths));
}
