//! A private copy of a `testdata/` project and the `kiln` binary run on it,
//! for the `kiln build` integration tests.
//!
//! Each [`Fixture`] lives in its own temporary directory with its own
//! `HOME`, `XDG_CACHE_HOME` and `XDG_DATA_HOME`, so tests run in parallel
//! and never share a cache, a build record or docker credentials. Its
//! registries are rewritten to the test's own (a unique repository per
//! test, see [`unique_repo`]), so two tests never push to the same tag.
//!
//! ```no_run
//! use kiln_testsupport::fixture::{Fixture, unique_repo};
//! use kiln_testsupport::Bench;
//!
//! # let kiln_bin = "target/debug/kiln"; // env!("CARGO_BIN_EXE_kiln") in a test
//! let bench = Bench::get();
//! let f = Fixture::copy(kiln_bin, "codeonly");
//! f.point_at(bench.registry(), &unique_repo(bench.registry(), "doc"));
//! let report = f.build_json(&[]);
//! assert_eq!(report["pipeline"], "codeonly");
//! ```

use std::ffi::OsString;
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};

use serde_json::Value;

use crate::RunOutput;

/// `REGISTRY/kiln-test/NAME-PID-N`: a repository no other test (nor another
/// run of this one) pushes to. `name` must be lower case.
pub fn unique_repo(registry: &str, name: &str) -> String {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.subsec_nanos());
    format!(
        "{registry}/kiln-test/{name}-{}-{}-{nanos:x}",
        std::process::id(),
        COUNTER.fetch_add(1, Ordering::Relaxed)
    )
}

/// The workspace's `testdata/` directory.
pub fn testdata_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../testdata")
}

/// A copy of `testdata/<name>` in a temporary directory, and the kiln binary
/// to run on it. Removed when dropped.
pub struct Fixture {
    dir: tempfile::TempDir,
    kiln: PathBuf,
    env: Vec<(OsString, OsString)>,
}

impl Fixture {
    /// Copies `testdata/<name>` (file modes and modification times kept) to
    /// `<tmp>/p`; `kiln_bin` is `env!("CARGO_BIN_EXE_kiln")`.
    ///
    /// # Panics
    ///
    /// When the fixture cannot be copied.
    pub fn copy(kiln_bin: &str, name: &str) -> Fixture {
        Fixture::copy_from(kiln_bin, &testdata_dir().join(name))
    }

    /// Like [`Fixture::copy`], from any directory.
    ///
    /// # Panics
    ///
    /// When the directory cannot be copied.
    pub fn copy_from(kiln_bin: &str, src: &Path) -> Fixture {
        let dir = tempfile::Builder::new()
            .prefix("kiln-fixture-")
            .tempdir()
            .unwrap_or_else(|e| panic!("cannot create a temporary directory: {e}"));
        let status = Command::new("cp")
            .arg("-a")
            .arg(format!("{}/.", src.display()))
            .arg(dir.path().join("p"))
            .status()
            .unwrap_or_else(|e| panic!("cannot run cp: {e}"));
        assert!(status.success(), "cp -a {} failed: {status}", src.display());
        Fixture {
            dir,
            kiln: PathBuf::from(kiln_bin),
            env: Vec::new(),
        }
    }

    /// The temporary directory: `HOME` of every kiln run, with `p/` (the
    /// project), `cache/` and `data/` (kiln's XDG dirs) inside.
    pub fn home(&self) -> &Path {
        self.dir.path()
    }

    /// The project: where kiln runs and `kiln.yaml` is.
    pub fn root(&self) -> PathBuf {
        self.dir.path().join("p")
    }

    /// `$XDG_CACHE_HOME` of kiln's runs.
    pub fn cache_home(&self) -> PathBuf {
        self.dir.path().join("cache")
    }

    /// `$XDG_DATA_HOME` of kiln's runs.
    pub fn data_home(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    /// Sets an environment variable for every later kiln run.
    pub fn set_env(&mut self, key: &str, value: impl Into<OsString>) {
        self.env.push((key.into(), value.into()));
    }

    /// Rewrites `file` (relative to the project) with `f`.
    ///
    /// # Panics
    ///
    /// When the file cannot be read or written.
    pub fn edit(&self, file: &str, f: impl FnOnce(&str) -> String) {
        let path = self.root().join(file);
        let text = std::fs::read_to_string(&path)
            .unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()));
        std::fs::write(&path, f(&text))
            .unwrap_or_else(|e| panic!("cannot write {}: {e}", path.display()));
    }

    /// Points `kiln.yaml` at the test's registries: every `parent_image`
    /// keeps its repository and tag but is pulled from `parent_registry`
    /// (`host:port`), and every `target_repository` becomes
    /// `target_repository`.
    ///
    /// # Panics
    ///
    /// When `kiln.yaml` has no `parent_image` or no `target_repository`.
    pub fn point_at(&self, parent_registry: &str, target_repository: &str) {
        self.edit("kiln.yaml", |text| {
            let (mut parents, mut targets) = (0, 0);
            let mut out = String::new();
            for line in text.lines() {
                let trimmed = line.trim_start();
                let indent = &line[..line.len() - trimmed.len()];
                if let Some(value) = trimmed.strip_prefix("parent_image:") {
                    let value = value.trim().trim_matches('"');
                    let path = value.split_once('/').map_or(value, |(_, p)| p);
                    out.push_str(&format!("{indent}parent_image: {parent_registry}/{path}\n"));
                    parents += 1;
                } else if trimmed.starts_with("target_repository:") {
                    out.push_str(&format!("{indent}target_repository: {target_repository}\n"));
                    targets += 1;
                } else {
                    out.push_str(line);
                    out.push('\n');
                }
            }
            assert!(
                parents > 0 && targets > 0,
                "kiln.yaml has no parent_image or no target_repository:\n{text}"
            );
            out
        });
    }

    /// `$HOME/.docker/config.json` with `auths` for `registry`, as
    /// `docker login` writes it: where kiln finds registry credentials.
    pub fn write_docker_auth(&self, registry: &str, username: &str, password: &str) {
        use base64::Engine as _;
        let auth =
            base64::engine::general_purpose::STANDARD.encode(format!("{username}:{password}"));
        let dir = self.home().join(".docker");
        std::fs::create_dir_all(&dir).unwrap_or_else(|e| panic!("creating {}: {e}", dir.display()));
        let file = dir.join("config.json");
        std::fs::write(
            &file,
            format!(r#"{{"auths":{{"{registry}":{{"auth":"{auth}"}}}}}}"#),
        )
        .unwrap_or_else(|e| panic!("writing {}: {e}", file.display()));
    }

    /// Runs `kiln ARGS` in the project, stdin empty.
    pub fn kiln(&self, args: &[&str]) -> RunOutput {
        self.kiln_with(args, None)
    }

    /// Runs `kiln ARGS` in the project with `stdin` (if any) as its
    /// standard input. The environment is the test's, minus what would make
    /// runs depend on the machine (docker config, `SOURCE_DATE_EPOCH`, log
    /// filters), plus `HOME`/`XDG_*` inside the fixture and
    /// [`Fixture::set_env`]'s variables.
    ///
    /// # Panics
    ///
    /// When kiln cannot be started.
    pub fn kiln_with(&self, args: &[&str], stdin: Option<&str>) -> RunOutput {
        let mut cmd = Command::new(&self.kiln);
        cmd.current_dir(self.root())
            .args(args)
            .env("HOME", self.home())
            .env("XDG_CACHE_HOME", self.cache_home())
            .env("XDG_DATA_HOME", self.data_home())
            .env_remove("DOCKER_CONFIG")
            .env_remove("REGISTRY_AUTH_FILE")
            .env_remove("SOURCE_DATE_EPOCH")
            .env_remove("RUST_LOG")
            .env_remove("KILN_LOG")
            .stdin(if stdin.is_some() {
                Stdio::piped()
            } else {
                Stdio::null()
            })
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        for (k, v) in &self.env {
            cmd.env(k, v);
        }
        let mut child = cmd
            .spawn()
            .unwrap_or_else(|e| panic!("cannot run {}: {e}", self.kiln.display()));
        if let (Some(text), Some(mut pipe)) = (stdin, child.stdin.take()) {
            // kiln may exit before reading everything; that is its answer.
            let _ = pipe.write_all(text.as_bytes());
        }
        let out = child
            .wait_with_output()
            .unwrap_or_else(|e| panic!("cannot wait for kiln: {e}"));
        let status = out.status;
        RunOutput::from_parts(status, &out.stdout, &out.stderr)
    }

    /// `kiln build --json EXTRA`, which must succeed; its report.
    ///
    /// # Panics
    ///
    /// With kiln's stderr when the build fails or stdout is not JSON.
    pub fn build_json(&self, extra: &[&str]) -> Value {
        let mut args = vec!["build", "--json"];
        args.extend_from_slice(extra);
        let out = self.kiln(&args);
        assert_eq!(
            out.code, 0,
            "kiln {args:?} failed\n--- stderr ---\n{}\n--- stdout ---\n{}",
            out.stderr, out.stdout
        );
        serde_json::from_str(&out.stdout).unwrap_or_else(|e| {
            panic!(
                "kiln {args:?} printed something that is not JSON ({e}):\n{}",
                out.stdout
            )
        })
    }
}

/// The image called `name` in a `kiln build --json` report.
///
/// # Panics
///
/// When the report has no such image.
pub fn report_image<'a>(report: &'a Value, name: &str) -> &'a Value {
    report["images"]
        .as_array()
        .and_then(|images| images.iter().find(|i| i["name"] == name))
        .unwrap_or_else(|| panic!("the report has no image {name:?}:\n{report:#}"))
}

/// (label, status) of each layer of an image in a `kiln build --json` report.
///
/// # Panics
///
/// When the image has no layer list.
pub fn layer_statuses(image: &Value) -> Vec<(String, String)> {
    image["layers"]
        .as_array()
        .unwrap_or_else(|| panic!("the image has no layers:\n{image:#}"))
        .iter()
        .map(|l| {
            let field = |k: &str| l[k].as_str().unwrap_or_default().to_string();
            (field("label"), field("status"))
        })
        .collect()
}

/// The layer labelled `label` of an image in a `kiln build --json` report.
///
/// # Panics
///
/// When the image has no such layer.
pub fn report_layer<'a>(image: &'a Value, label: &str) -> &'a Value {
    image["layers"]
        .as_array()
        .and_then(|layers| layers.iter().find(|l| l["label"] == label))
        .unwrap_or_else(|| panic!("no layer {label:?} in {image:#}"))
}

/// Copies the pushed image `reference` (plain bench registry) into an OCI
/// layout under `dir` and unpacks it with umoci; returns the bundle.
pub fn unpack_pushed(reference: &str, dir: &Path) -> PathBuf {
    let layout = dir.join("layout");
    crate::skopeo_copy(
        &format!("docker://{reference}"),
        &format!("oci:{}:t", layout.display()),
        &["--src-tls-verify=false"],
    );
    let bundle = dir.join("bundle");
    crate::umoci_unpack(&layout, "t", &bundle);
    bundle
}

/// Whether `REFERENCE` exists on the plain (http) bench registry.
pub fn tag_exists(reference: &str) -> bool {
    crate::skopeo(&[
        "inspect",
        "--raw",
        "--tls-verify=false",
        &format!("docker://{reference}"),
    ])
    .code
        == 0
}

impl Fixture {
    /// testdata/codeonly, pushed to a repository of its own on the bench's
    /// plain registry; returns the fixture and that repository.
    pub fn codeonly(kiln_bin: &str, name: &str) -> (Fixture, String) {
        let registry = crate::Bench::get().registry();
        let f = Fixture::copy(kiln_bin, "codeonly");
        let repo = unique_repo(registry, name);
        f.point_at(registry, &repo);
        (f, repo)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn point_at_rewrites_parents_and_targets_only() {
        let f = Fixture::copy("/bin/false", "codeonly");
        f.point_at("127.0.0.1:9", "127.0.0.1:9/kiln-test/x");
        let text = std::fs::read_to_string(f.root().join("kiln.yaml")).unwrap_or_default();
        assert!(
            text.contains("    parent_image: 127.0.0.1:9/base/python:3.11-bookworm\n"),
            "{text}"
        );
        assert!(
            text.contains("    target_repository: 127.0.0.1:9/kiln-test/x\n"),
            "{text}"
        );
        assert!(text.contains("name: codeonly"), "{text}");
    }

    #[test]
    fn unique_repos_differ() {
        assert_ne!(unique_repo("r", "a"), unique_repo("r", "a"));
    }
}
