//! Every Dockerfile of testdata/dockerfiles built by `kiln build -f` against
//! the bench registry and judged by skopeo (config), umoci (files, owners,
//! modes, whiteouts) and runc (the image runs).

#![allow(clippy::unwrap_used)] // test code: a failure is a test failure

use std::os::unix::fs::{MetadataExt as _, PermissionsExt as _};
use std::path::{Path, PathBuf};

use kiln_testsupport::fixture::{Fixture, unique_repo, unpack_pushed};
use kiln_testsupport::{Bench, runc_run, skopeo_inspect_config};
use serde_json::{Value, json};

const KILN: &str = env!("CARGO_BIN_EXE_kiln");

/// Builds testdata/dockerfiles/NAME; returns the fixture (kept alive), the
/// pushed reference, its config and the unpacked bundle.
struct Built {
    _f: Fixture,
    _dir: tempfile::TempDir,
    config: Value,
    bundle: PathBuf,
}

impl Built {
    fn rootfs(&self) -> PathBuf {
        self.bundle.join("rootfs")
    }

    fn read(&self, path: &str) -> String {
        std::fs::read_to_string(self.rootfs().join(path.trim_start_matches('/')))
            .unwrap_or_else(|e| panic!("{path}: {e}"))
    }

    fn exists(&self, path: &str) -> bool {
        self.rootfs()
            .join(path.trim_start_matches('/'))
            .symlink_metadata()
            .is_ok()
    }
}

fn build(name: &str, extra: &[&str]) -> Built {
    let bench = Bench::get();
    let f = Fixture::copy(KILN, &format!("dockerfiles/{name}"));
    f.edit("Dockerfile", |t| {
        t.replace("127.0.0.1:5000", bench.registry())
    });
    let tag = format!("{}:v1", unique_repo(bench.registry(), name));
    let mut args = vec!["build", "-f", "Dockerfile", "-t", &tag];
    args.extend_from_slice(extra);
    args.push(".");
    let out = f.kiln(&args);
    assert_eq!(out.code, 0, "{}\n{}", out.stdout, out.stderr);
    // --raw: the config as stored (skopeo would drop Docker-only fields such
    // as Healthcheck when it parses the config).
    let config =
        skopeo_inspect_config(&format!("docker://{tag}"), &["--tls-verify=false", "--raw"]);
    let dir = tempfile::tempdir().unwrap();
    let bundle = unpack_pushed(&tag, dir.path());
    Built {
        _f: f,
        _dir: dir,
        config,
        bundle,
    }
}

fn env_of(config: &Value) -> Vec<String> {
    config["config"]["Env"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e.as_str().unwrap().to_string())
        .collect()
}

#[test]
fn instructions_set_the_config_docker_would() {
    let b = build("instructions", &[]);
    let c = &b.config["config"];
    assert_eq!(
        c["Labels"]["org.opencontainers.image.title"],
        "kiln instructions"
    );
    assert_eq!(c["Labels"]["kiln.test"], "instructions");
    // MAINTAINER sets the author, as Docker does, and no label.
    assert_eq!(b.config["author"], "kiln tests");
    assert!(c["Labels"].get("maintainer").is_none(), "{c}");
    let env = env_of(&b.config);
    assert!(env.contains(&"APP_HOME=/app".to_string()), "{env:?}");
    assert!(env.contains(&"GREETING=hello world".to_string()), "{env:?}");
    assert_eq!(c["WorkingDir"], "/app");
    assert_eq!(c["ExposedPorts"], json!({"8080/tcp": {}, "9090/udp": {}}));
    assert_eq!(c["Volumes"], json!({"/data": {}}));
    assert_eq!(c["User"], "1000:1000");
    assert_eq!(c["StopSignal"], "SIGINT");
    assert_eq!(
        c["Healthcheck"]["Test"],
        json!(["CMD-SHELL", "test -f /app/greeting.txt"])
    );
    assert_eq!(c["Healthcheck"]["Interval"], json!(30_000_000_000_u64));
    assert_eq!(c["Healthcheck"]["Retries"], json!(2));
    assert_eq!(
        c["OnBuild"],
        json!(["RUN echo built on the instructions image"])
    );
    assert_eq!(c["Entrypoint"], json!(["/bin/sh", "-c"]));
    assert_eq!(c["Cmd"], json!(["cat /app/greeting.txt"]));
    assert_eq!(
        b.read("/app/greeting.txt"),
        "hello world\nhello from kiln\n"
    );
    assert_eq!(b.read("/etc/hello-added.txt"), "hello from kiln\n");
    let out = runc_run(
        &b.bundle,
        &["/bin/sh", "-c", "cat /app/greeting.txt; id -u"],
    );
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert_eq!(out.stdout, "hello world\nhello from kiln\n1000\n");
}

#[test]
fn a_multi_stage_python_build_runs_as_its_user() {
    let b = build("multistage-python", &[]);
    let main = b.rootfs().join("home/app/main.py");
    let meta = main.metadata().unwrap();
    assert_eq!(
        (meta.uid(), meta.gid()),
        (1000, 1000),
        "COPY --chown=app:app"
    );
    assert!(b.exists("/opt/deps/six.py"));
    assert!(!b.exists("/root/.cache/pip"), "the builder stage leaked");
    let out = runc_run(&b.bundle, &["python3", "main.py"]);
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert_eq!(out.stdout, "six 1.16.0\n");
    let out = runc_run(&b.bundle, &["id", "-un"]);
    assert_eq!(out.stdout, "app\n");
}

#[test]
fn apt_pip_and_a_non_root_user() {
    let b = build("apt-pip-nonroot", &[]);
    let out = runc_run(
        &b.bundle,
        &[
            "/bin/sh",
            "-c",
            "jq --version && python3 -c 'import six; print(six.__version__)' && id -un",
        ],
    );
    assert_eq!(out.code, 0, "{}", out.stderr);
    let lines: Vec<&str> = out.stdout.lines().collect();
    assert!(lines[0].starts_with("jq-"), "{}", out.stdout);
    assert_eq!(&lines[1..], ["1.16.0", "runner"]);
    assert!(
        !b.exists("/var/lib/apt/lists/lock"),
        "apt lists were removed in the same RUN"
    );
}

#[test]
fn args_and_substitution_follow_docker() {
    let b = build("args", &["--build-arg", "FLAVOR=spicy"]);
    assert_eq!(
        b.read("/out/latest-spicy/args.txt"),
        "tag=latest mode=spicy suffix=-spicy literal=$TAG escaped=$TAG\n"
    );
    // The second stage did not declare TAG, so its RUN's `${TAG:-latest}`
    // names a directory that does not exist and the fallback file is written.
    assert_eq!(b.read("/out/stage.txt"), "second stage\n");
    let labels = &b.config["config"]["Labels"];
    assert_eq!(labels["kiln.mode"], "spicy");
    assert_eq!(labels["kiln.stage"], "second stage");
    let env = env_of(&b.config);
    assert!(env.contains(&"MODE=spicy".to_string()), "{env:?}");
    assert!(
        !env.iter()
            .any(|e| e.starts_with("FLAVOR=") || e.starts_with("STAGE_ONLY=")),
        "build args are not stored in the image: {env:?}"
    );
}

#[test]
fn copy_from_stages_globs_owners_modes_and_add_extracts_a_tar() {
    let b = build("copy-from", &[]);
    assert_eq!(b.read("/copied/by-name.txt"), "generated\n");
    assert_eq!(b.read("/copied/by-index.txt"), "a\n");
    assert_eq!(b.read("/globbed/a.txt"), "a\n");
    assert_eq!(b.read("/globbed/b.txt"), "b\n");
    assert!(!b.exists("/globbed/sub"), "the glob matched a directory");
    let conf = b.rootfs().join("etc/kiln/c.conf");
    let meta = conf.metadata().unwrap();
    assert_eq!((meta.uid(), meta.gid()), (1000, 1000));
    assert_eq!(meta.permissions().mode() & 0o7777, 0o640);
    assert_eq!(b.read("/etc/kiln/c.conf"), "key=value\n");
    assert!(b.exists("/extracted/top.txt") && b.exists("/extracted/inner/t.txt"));
    assert!(
        !b.exists("/extracted/files.tar"),
        "ADD copied the archive instead of extracting it"
    );
}

#[test]
fn a_run_that_deletes_parent_files_leaves_whiteouts() {
    let b = build("run-deletes", &[]);
    assert_eq!(b.read("/data/keep/k.txt"), "keep\n");
    for gone in ["/data/gone", "/data/file.txt", "/bin/vi"] {
        assert!(!b.exists(gone), "{gone} is still in the image");
    }
    assert!(b.exists("/bin/sh"));
    let out = runc_run(&b.bundle, &["ls", "-R", "/data"]);
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert!(!out.stdout.contains("gone"), "{}", out.stdout);
}

#[test]
fn every_bad_dockerfile_fails_with_its_line_before_building() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../testdata/dockerfiles/bad");
    let bench = Bench::get();
    let mut checked = 0;
    for entry in std::fs::read_dir(&dir).unwrap() {
        let path = entry.unwrap().path();
        let text = std::fs::read_to_string(&path).unwrap();
        let Some(expect) = text
            .lines()
            .next()
            .and_then(|l| l.strip_prefix("# expect: "))
        else {
            continue;
        };
        let (line, message) = expect.split_once(": ").unwrap();
        let tag = format!("{}:bad", unique_repo(bench.registry(), "bad"));
        let f = Fixture::copy_from(KILN, &dir);
        let name = path.file_name().unwrap().to_str().unwrap();
        let out = f.kiln(&["build", "-f", name, "-t", &tag, "."]);
        assert_eq!(out.code, 1, "{name}: {}", out.stderr);
        assert!(
            out.stderr
                .contains(&format!("Dockerfile:{line}: {message}")),
            "{name}: want line {line} and {message:?} in:\n{}",
            out.stderr
        );
        assert!(!out.stderr.contains("panicked"), "{}", out.stderr);
        checked += 1;
    }
    assert!(checked >= 5, "only {checked} bad Dockerfiles checked");
}
