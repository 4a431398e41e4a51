//! `kiln build` as the registry sees it, through a recording proxy that can
//! misbehave: uploads counted on the wire, 503s and a connection reset in
//! the middle of an upload survived, a registry that keeps failing leaves no
//! tag, and the Bearer token flow.

#![allow(clippy::unwrap_used)] // test helpers: a failure is a test failure

use std::path::PathBuf;
use std::process::{Command, Output};

use kiln_testsupport::proxy::{Outcome, Proxy, Request};
use kiln_testsupport::{Bench, skopeo};

/// A code-only pipeline whose parent and target both go through `registry`.
struct Project {
    dir: tempfile::TempDir,
    repo: String,
}

impl Project {
    fn new(registry: &str, name: &str) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let src = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../testdata/quickstart");
        let root = dir.path().join("p");
        assert!(
            Command::new("cp")
                .arg("-a")
                .arg(format!("{}/.", src.display()))
                .arg(&root)
                .status()
                .unwrap()
                .success()
        );
        let path = format!("kiln-test/{name}-{}", std::process::id());
        let yaml = format!(
            "name: wire\nsettings:\n  docker:\n    parent_image: {registry}/base/python:3.11-bookworm\n    target_repository: {registry}/{path}\nsteps:\n  - name: main\n    command: [python3, steps/load.py]\n"
        );
        std::fs::write(root.join("kiln.yaml"), yaml).unwrap();
        Project { dir, repo: path }
    }

    fn root(&self) -> PathBuf {
        self.dir.path().join("p")
    }

    fn build(&self) -> Output {
        Command::new(env!("CARGO_BIN_EXE_kiln"))
            .current_dir(self.root())
            .args(["build", "--json"])
            .env("XDG_CACHE_HOME", self.dir.path().join("cache"))
            .env("XDG_DATA_HOME", self.dir.path().join("data"))
            .env("HOME", self.dir.path())
            .env_remove("DOCKER_CONFIG")
            .output()
            .unwrap()
    }

    fn digest(out: &Output) -> String {
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        v["images"][0]["digest"].as_str().unwrap().to_string()
    }
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap()
}

fn uploads(requests: &[Request]) -> usize {
    requests
        .iter()
        .filter(|r| r.method == "PUT" && r.is_blob_upload())
        .count()
}

fn manifest_puts(requests: &[Request]) -> usize {
    requests.iter().filter(|r| r.is_manifest_put()).count()
}

#[test]
fn uploads_counted_on_the_wire() {
    let rt = runtime();
    let proxy = rt.block_on(Proxy::start(Bench::get().registry()));
    let p = Project::new(&proxy.registry(), "wire");

    let first = Project::digest(&p.build());
    let requests = proxy.requests();
    // The parent's layer is mounted, never uploaded: code layer + config.
    assert_eq!(uploads(&requests), 2, "{requests:#?}");
    assert!(
        requests.iter().any(Request::is_mount),
        "parent layer not mounted: {requests:#?}"
    );
    assert_eq!(manifest_puts(&requests), 1);

    proxy.clear();
    let again = Project::digest(&p.build());
    assert_eq!(
        again, first,
        "a rebuild with no change yields the same digest"
    );
    assert_eq!(uploads(&proxy.requests()), 0, "{:#?}", proxy.requests());

    proxy.clear();
    let file = p.root().join("steps/train.py");
    let text = std::fs::read_to_string(&file).unwrap();
    std::fs::write(&file, format!("{text}\n# one change\n")).unwrap();
    let changed = Project::digest(&p.build());
    assert_ne!(changed, first);
    let requests = proxy.requests();
    assert_eq!(
        uploads(&requests),
        2,
        "exactly one layer blob and the config: {requests:#?}"
    );
    assert_eq!(manifest_puts(&requests), 1);
}

#[test]
fn survives_503s_and_a_connection_reset_mid_upload() {
    let rt = runtime();
    let proxy = rt.block_on(Proxy::start(Bench::get().registry()));
    let p = Project::new(&proxy.registry(), "faults");
    proxy.fail_next(3, "");
    proxy.reset_next_upload();
    let out = p.build();
    Project::digest(&out);
    let requests = proxy.requests();
    assert!(
        requests
            .iter()
            .filter(|r| r.outcome == Outcome::Failed503)
            .count()
            >= 3,
        "{requests:#?}"
    );
    assert!(
        requests.iter().any(|r| r.outcome == Outcome::Reset),
        "no upload was reset: {requests:#?}"
    );
    let tag = format!(
        "docker://{}/{}:wire-pipeline",
        Bench::get().registry(),
        p.repo
    );
    assert_eq!(
        skopeo(&["inspect", "--tls-verify=false", &tag]).code,
        0,
        "the tag exists"
    );
}

#[test]
fn a_registry_that_keeps_failing_fails_the_build_and_creates_no_tag() {
    let rt = runtime();
    let proxy = rt.block_on(Proxy::start(Bench::get().registry()));
    let p = Project::new(&proxy.registry(), "down");
    // Resolving the parent works; everything sent to the target fails.
    proxy.fail_always(&p.repo);
    let out = p.build();
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains(&proxy.registry()) && stderr.contains("gave up after"),
        "{stderr}"
    );
    let tag = format!(
        "docker://{}/{}:wire-pipeline",
        Bench::get().registry(),
        p.repo
    );
    let inspected = skopeo(&["inspect", "--tls-verify=false", &tag]);
    assert_ne!(inspected.code, 0, "a tag was created by a failed build");
}

#[test]
fn bearer_tokens_from_docker_config_credentials() {
    let rt = runtime();
    let proxy = rt.block_on(Proxy::start(Bench::get().registry()));
    proxy.require_bearer("robot", "robot-pass-91c2", "unused-refresh");
    let p = Project::new(&proxy.registry(), "bearer");
    use base64::Engine as _;
    let auth = base64::engine::general_purpose::STANDARD.encode("robot:robot-pass-91c2");
    std::fs::create_dir_all(p.dir.path().join(".docker")).unwrap();
    std::fs::write(
        p.dir.path().join(".docker/config.json"),
        format!(
            r#"{{"auths":{{"{}":{{"auth":"{auth}"}}}}}}"#,
            proxy.registry()
        ),
    )
    .unwrap();
    let out = p.build();
    Project::digest(&out);
    let tokens = proxy.token_requests();
    assert!(
        !tokens.is_empty() && tokens.iter().all(|t| t.granted),
        "{tokens:#?}"
    );
    assert!(
        tokens
            .iter()
            .any(|t| t.scopes.iter().any(|s| s.ends_with(":pull,push"))),
        "{tokens:#?}"
    );
    let all = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(!all.contains("robot-pass-91c2"));
}
