//! `kiln build` end to end against the local registries, judged by skopeo,
//! umoci and runc: the quickstart's exec layers (apt, requirements, user)
//! and code layer, caching and uploads, outputs, credentials, secrets and
//! a sandbox that cannot start.

#![allow(clippy::too_many_lines)] // a test reads best as one list of steps
#![allow(clippy::unwrap_used)] // test helpers: a failure is a test failure

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

use kiln_testsupport::fixture::{layer_statuses, report_image, unpack_pushed};
use kiln_testsupport::{
    Bench, runc_run, skopeo, skopeo_copy, skopeo_inspect_config, skopeo_inspect_raw, umoci_unpack,
};
use serde_json::Value;

/// A private copy of a fixture, with kiln's cache and data dirs beside it.
struct Project {
    dir: tempfile::TempDir,
}

impl Project {
    /// Copies testdata/`name` and points its target repository at a
    /// repository unique to this test.
    fn new(name: &str, repo_suffix: &str) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let src = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
            .join("../testdata")
            .join(name);
        let status = Command::new("cp")
            .arg("-a")
            .arg(format!("{}/.", src.display()))
            .arg(dir.path().join("p"))
            .status()
            .unwrap();
        assert!(status.success());
        let p = Project { dir };
        let repo = format!(
            "{}/kiln-test/{repo_suffix}-{}",
            Bench::get().registry(),
            std::process::id()
        );
        p.edit("kiln.yaml", |s| {
            s.replace(
                "target_repository: 127.0.0.1:5000/kiln/quickstart",
                &format!("target_repository: {repo}"),
            )
        });
        p
    }

    fn root(&self) -> PathBuf {
        self.dir.path().join("p")
    }

    fn edit(&self, file: &str, f: impl FnOnce(&str) -> String) {
        let path = self.root().join(file);
        let text = std::fs::read_to_string(&path).unwrap();
        std::fs::write(&path, f(&text)).unwrap();
    }

    fn kiln(&self, args: &[&str]) -> Output {
        self.kiln_with(args, &[], None)
    }

    fn kiln_with(&self, args: &[&str], env: &[(&str, &str)], stdin: Option<&str>) -> Output {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_kiln"));
        cmd.current_dir(self.root())
            .args(args)
            .env("XDG_CACHE_HOME", self.dir.path().join("cache"))
            .env("XDG_DATA_HOME", self.dir.path().join("data"))
            .env("HOME", self.dir.path())
            .env_remove("DOCKER_CONFIG")
            .stdin(if stdin.is_some() {
                Stdio::piped()
            } else {
                Stdio::null()
            })
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        for (k, v) in env {
            cmd.env(k, v);
        }
        let mut child = cmd.spawn().unwrap();
        if let Some(text) = stdin {
            use std::io::Write as _;
            child
                .stdin
                .take()
                .unwrap()
                .write_all(text.as_bytes())
                .unwrap();
        }
        child.wait_with_output().unwrap()
    }

    /// Builds with `--json` and returns the report.
    fn build_json(&self, extra: &[&str]) -> Value {
        let mut args = vec!["build", "--json"];
        args.extend_from_slice(extra);
        let out = self.kiln(&args);
        assert!(
            out.status.success(),
            "kiln build failed:\n{}",
            text(&out.stderr)
        );
        serde_json::from_slice(&out.stdout).unwrap()
    }
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

/// Every entry name of every gzip layer in an OCI layout.
fn layer_entries(layout: &Path) -> Vec<String> {
    let mut names = Vec::new();
    for entry in std::fs::read_dir(layout.join("blobs/sha256")).unwrap() {
        let bytes = std::fs::read(entry.unwrap().path()).unwrap();
        if !bytes.starts_with(&[0x1f, 0x8b]) {
            continue;
        }
        let mut archive = tar::Archive::new(flate2::read::MultiGzDecoder::new(&bytes[..]));
        for e in archive.entries().unwrap() {
            names.push(e.unwrap().path().unwrap().to_string_lossy().into_owned());
        }
    }
    names
}

#[test]
fn quickstart_builds_runs_and_rebuilds_only_what_changed() {
    let p = Project::new("quickstart", "qs");
    let report = p.build_json(&[]);
    let train = report_image(&report, "train");
    assert_eq!(train["steps"], serde_json::json!(["train"]));
    assert_eq!(
        report_image(&report, "pipeline")["steps"],
        serde_json::json!(["load", "featurize", "validate"])
    );
    let labels: Vec<String> = layer_statuses(train).into_iter().map(|(l, _)| l).collect();
    assert_eq!(
        labels,
        ["apt packages", "requirements (user)", "user kiln", "code"]
    );
    let reference = train["reference"].as_str().unwrap().to_string();

    // Layers and order as the registry serves them.
    let manifest = skopeo_inspect_raw(&format!("docker://{reference}"), &["--tls-verify=false"]);
    let parent = skopeo_inspect_raw(
        &format!("docker://{}", Bench::get().base_python()),
        &["--tls-verify=false"],
    );
    let layers = manifest["layers"].as_array().unwrap();
    let parent_layers = parent["layers"].as_array().unwrap();
    assert_eq!(layers.len(), parent_layers.len() + 4);
    assert_eq!(
        &layers[..parent_layers.len()],
        &parent_layers[..],
        "parent layers come first, unchanged"
    );
    assert!(
        layers
            .iter()
            .all(|l| l["mediaType"] == "application/vnd.oci.image.layer.v1.tar+gzip")
    );
    let config = skopeo_inspect_config(&format!("docker://{reference}"), &["--tls-verify=false"]);
    assert_eq!(config["config"]["User"], "kiln");
    assert_eq!(config["config"]["WorkingDir"], "/app");
    let env: Vec<&str> = config["config"]["Env"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e.as_str().unwrap())
        .collect();
    assert!(env.contains(&"PYTHONUNBUFFERED=1"), "{env:?}");
    assert!(
        env.iter()
            .any(|e| e.starts_with("PATH=/opt/kiln/venv/bin:")),
        "{env:?}"
    );
    let created: Vec<&str> = config["history"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|h| h.get("empty_layer").is_none())
        .map(|h| h["created_by"].as_str().unwrap_or_default())
        .collect();
    let ours = &created[created.len() - 4..];
    assert!(
        ours[0].contains("apt packages")
            && ours[1].contains("requirements")
            && ours[2].contains("user kiln")
            && ours[3].contains("COPY"),
        "{ours:?}"
    );

    // The image runs: as the configured user, jq and every requirement there,
    // the code under /app without what .dockerignore excludes.
    let tmp = tempfile::tempdir().unwrap();
    let bundle = unpack_pushed(&reference, tmp.path());
    assert!(bundle.join("rootfs/app/steps/train.py").is_file());
    assert!(
        !bundle.join("rootfs/app/data").exists(),
        ".dockerignore'd data/ is in the image"
    );
    // The apt layer deletes the parent's /var/log/apt: a whiteout that umoci
    // applies.
    let entries = layer_entries(&tmp.path().join("layout"));
    assert!(
        entries
            .iter()
            .any(|e| e == "var/log/apt/" || e == "./var/log/apt/"),
        "the parent has /var/log/apt"
    );
    assert!(
        entries.iter().any(|e| e.ends_with("var/log/.wh.apt")),
        "no whiteout for /var/log/apt"
    );
    assert!(
        !bundle.join("rootfs/var/log/apt").exists(),
        "the whiteout was not applied"
    );
    let out = runc_run(
        &bundle,
        &[
            "/bin/sh",
            "-c",
            "id -u; jq --version; python3 -c 'import six, tabulate, toolz; print(\"imports ok\")'; mkdir -p /tmp/r && KILN_RUN_DIR=/tmp/r python3 steps/load.py",
        ],
    );
    assert_eq!(out.code, 0, "{}\n{}", out.stdout, out.stderr);
    let mut lines = out.stdout.lines();
    assert_ne!(lines.next(), Some("0"), "runs as root");
    assert!(out.stdout.contains("jq-1."), "{}", out.stdout);
    assert!(out.stdout.contains("imports ok"), "{}", out.stdout);
    assert!(
        out.stdout.contains("load: wrote 500 rows"),
        "{}",
        out.stdout
    );

    // No change: nothing uploaded, same digests.
    let again = p.build_json(&[]);
    for name in ["pipeline", "train"] {
        assert_eq!(
            report_image(&again, name)["digest"],
            report_image(&report, name)["digest"]
        );
        assert_eq!(report_image(&again, name)["uploaded"], 0, "{name}");
        assert!(
            layer_statuses(report_image(&again, name))
                .iter()
                .all(|(_, s)| s == "reused")
        );
    }

    // Code-only change: no command runs, only code blob + config uploaded.
    p.edit("steps/load.py", |s| format!("{s}\n# changed\n"));
    let code_change = p.build_json(&[]);
    for name in ["pipeline", "train"] {
        let s = layer_statuses(report_image(&code_change, name));
        assert!(s[..3].iter().all(|(_, st)| st == "reused"), "{name}: {s:?}");
    }
    assert_eq!(
        layer_statuses(report_image(&code_change, "pipeline"))[3].1,
        "built"
    );
    // One new layer blob (the shared code layer) and a config per image.
    assert_eq!(report_image(&code_change, "pipeline")["uploaded"], 2);
    assert_eq!(report_image(&code_change, "train")["uploaded"], 1);
    p.edit("steps/load.py", |s| format!("{s}\n# changed again\n"));
    let out = p.kiln(&["build", "--explain"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(
        !text(&out.stderr).contains(" | "),
        "a command ran in the sandbox:\n{}",
        text(&out.stderr)
    );
    assert!(
        text(&out.stdout).contains("steps/load.py changed"),
        "{}",
        text(&out.stdout)
    );
    let code_only = p.build_json(&[]);
    for name in ["pipeline", "train"] {
        let s = layer_statuses(report_image(&code_only, name));
        assert!(
            s.iter().all(|(_, st)| st == "reused"),
            "second identical build reuses all: {s:?}"
        );
    }

    // Requirements change in train: that group and the exec layers after it
    // are rebuilt, apt is reused. The requirements file is also part of the
    // build context, so the code layer changes too (once: the second image
    // finds it in the cache).
    p.edit("requirements-train.txt", |s| {
        s.replace("toolz==0.12.1", "toolz==0.12.0")
    });
    let reqs = p.build_json(&[]);
    let train = layer_statuses(report_image(&reqs, "train"));
    assert_eq!(
        train[..3],
        [
            ("apt packages".to_string(), "reused".to_string()),
            ("requirements (user)".to_string(), "built".to_string()),
            ("user kiln".to_string(), "built".to_string()),
        ]
    );
    let pipeline = layer_statuses(report_image(&reqs, "pipeline"));
    assert!(
        pipeline[..3].iter().all(|(_, s)| s == "reused"),
        "{pipeline:?}"
    );
    assert_eq!(pipeline[3], ("code".to_string(), "built".to_string()));

    // --step builds just that step's image.
    let one = p.build_json(&["--step", "featurize"]);
    assert_eq!(one["images"].as_array().unwrap().len(), 1);
    assert_eq!(one["images"][0]["name"], "pipeline");
}

#[test]
fn code_only_image_is_reproducible_and_writes_oci_outputs() {
    let a = Project::new("quickstart", "repro");
    let strip = |s: &str| {
        s.replace("    apt_packages: [jq]\n", "")
            .replace("    requirements: requirements.txt\n", "")
            .replace("    user: kiln\n", "")
    };
    a.edit("kiln.yaml", strip);
    let b = Project::new("quickstart", "repro");
    b.edit("kiln.yaml", strip);
    let ra = a.build_json(&["--step", "load"]);
    let rb = b.build_json(&["--step", "load"]);
    assert_eq!(
        ra["images"][0]["digest"], rb["images"][0]["digest"],
        "same context at two paths, same image"
    );

    let layout = a.dir.path().join("out-layout");
    let out = a.kiln(&[
        "build",
        "--step",
        "load",
        "--output",
        &format!("oci:{}", layout.display()),
    ]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let inspected = skopeo(&[
        "inspect",
        &format!("oci:{}:quickstart-pipeline", layout.display()),
    ]);
    assert_eq!(inspected.code, 0, "{}", inspected.stderr);
    let bundle = a.dir.path().join("bundle");
    umoci_unpack(&layout, "quickstart-pipeline", &bundle);
    assert!(bundle.join("rootfs/app/steps/load.py").is_file());

    let archive = a.dir.path().join("image.tar");
    let out = a.kiln(&[
        "build",
        "--step",
        "load",
        "--output",
        &format!("tar:{}", archive.display()),
    ]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let inspected = skopeo(&["inspect", &format!("oci-archive:{}", archive.display())]);
    assert_eq!(inspected.code, 0, "{}", inspected.stderr);

    let out = a.kiln(&["build", "--output", "bogus:x"]);
    assert_ne!(out.status.code(), Some(0));
    assert!(
        text(&out.stderr).contains("expected registry, oci:DIR or tar:FILE"),
        "{}",
        text(&out.stderr)
    );
}

#[test]
fn tls_registry_with_docker_config_credentials_and_a_wrong_password() {
    let bench = Bench::get();
    let p = Project::new("quickstart", "tls");
    let repo = format!(
        "{}/kiln-test/tls-{}",
        bench.tls_registry(),
        std::process::id()
    );
    p.edit("kiln.yaml", |s| {
        let s = s
            .replace("    apt_packages: [jq]\n", "")
            .replace("    requirements: requirements.txt\n", "")
            .replace("    user: kiln\n", "");
        let start = s.find("target_repository: ").unwrap();
        let end = start + s[start..].find('\n').unwrap();
        format!("{}target_repository: {repo}{}", &s[..start], &s[end..])
    });
    let write_config = |password: &str| {
        use base64::Engine as _;
        let auth = base64::engine::general_purpose::STANDARD
            .encode(format!("{}:{password}", bench.username()));
        let dir = p.dir.path().join(".docker");
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(
            dir.join("config.json"),
            format!(
                r#"{{"auths":{{"{}":{{"auth":"{auth}"}}}}}}"#,
                bench.tls_registry()
            ),
        )
        .unwrap();
    };
    let ca = bench.ca_cert().to_str().unwrap().to_string();

    write_config(bench.password());
    let out = p.kiln(&["build", "--step", "load", "--registry-ca", &ca]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let inspected = skopeo(&[
        "inspect",
        "--creds",
        bench.creds(),
        "--cert-dir",
        bench.cert_dir(),
        &format!("docker://{repo}:quickstart-pipeline"),
    ]);
    assert_eq!(inspected.code, 0, "{}", inspected.stderr);

    let wrong = "not-the-password-7f3a";
    write_config(wrong);
    let out = p.kiln(&["build", "--step", "load", "--registry-ca", &ca]);
    assert_eq!(out.status.code(), Some(1));
    let all = format!("{}{}", text(&out.stdout), text(&out.stderr));
    assert!(
        all.contains(bench.tls_registry()) && all.contains("401"),
        "{all}"
    );
    assert!(
        !all.contains(wrong) && !all.contains(bench.password()),
        "a secret was printed:\n{all}"
    );

    std::fs::remove_dir_all(p.dir.path().join(".docker")).unwrap();
    let out = p.kiln_with(
        &[
            "build",
            "--step",
            "load",
            "--registry-ca",
            &ca,
            "--username",
            bench.username(),
            "--password-stdin",
        ],
        &[],
        Some(&format!("{wrong}\n")),
    );
    assert_eq!(out.status.code(), Some(1));
    let all = format!("{}{}", text(&out.stdout), text(&out.stderr));
    assert!(all.contains("authentication failed"), "{all}");
    assert!(!all.contains(wrong), "the password was printed:\n{all}");
}

#[test]
fn secrets_are_visible_to_commands_and_stored_nowhere() {
    let p = Project::new("quickstart", "secret");
    let marker = format!("kiln-secret-{}", std::process::id());
    let secret = p.dir.path().join("extra.txt");
    std::fs::write(&secret, format!("six==1.16.0  # {marker}\n")).unwrap();
    p.edit("kiln.yaml", |s| {
        s.replace("    apt_packages: [jq]\n", "")
            .replace("    user: kiln\n", "")
            .replace(
                "    requirements: requirements.txt\n",
                "    requirements: [\"-r /run/secrets/pipextra\"]\n",
            )
    });
    let out = p.kiln(&[
        "build",
        "--step",
        "load",
        "--json",
        "--secret",
        &format!("id=pipextra,src={}", secret.display()),
    ]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(!text(&out.stdout).contains(&marker) && !text(&out.stderr).contains(&marker));
    let report: Value = serde_json::from_slice(&out.stdout).unwrap();
    let reference = report["images"][0]["reference"].as_str().unwrap();
    let tmp = tempfile::tempdir().unwrap();
    let layout = tmp.path().join("layout");
    skopeo_copy(
        &format!("docker://{reference}"),
        &format!("oci:{}:t", layout.display()),
        &["--src-tls-verify=false"],
    );
    // Every blob, decompressed where it is gzip: no marker anywhere.
    for entry in std::fs::read_dir(layout.join("blobs/sha256")).unwrap() {
        let bytes = std::fs::read(entry.unwrap().path()).unwrap();
        let mut plain = Vec::new();
        if bytes.starts_with(&[0x1f, 0x8b]) {
            use std::io::Read as _;
            flate2::read::MultiGzDecoder::new(&bytes[..])
                .read_to_end(&mut plain)
                .unwrap();
        } else {
            plain = bytes;
        }
        assert!(
            !plain.windows(marker.len()).any(|w| w == marker.as_bytes()),
            "the secret is in a blob"
        );
    }
    let bundle = tmp.path().join("bundle");
    umoci_unpack(&layout, "t", &bundle);
    let out = runc_run(
        &bundle,
        &["python3", "-c", "import six; print(six.__version__)"],
    );
    assert_eq!(out.stdout.trim(), "1.16.0", "{}", out.stderr);
    assert!(!bundle.join("rootfs/run/secrets/pipextra").exists());
}

#[test]
fn a_sandbox_that_cannot_start_is_a_clear_error() {
    let p = Project::new("quickstart", "nouserns");
    let out = p.kiln_with(
        &["build", "--step", "load"],
        &[("KILN_SANDBOX_FORCE_NO_USERNS", "1")],
        None,
    );
    assert_eq!(out.status.code(), Some(1), "{}", text(&out.stderr));
    let stderr = text(&out.stderr);
    assert!(stderr.to_lowercase().contains("user namespace"), "{stderr}");
    assert!(!stderr.contains("panicked"), "{stderr}");
}

#[test]
fn a_missing_parent_image_names_the_registry() {
    let p = Project::new("quickstart", "noparent");
    p.edit("kiln.yaml", |s| {
        s.replace("base/python:3.11-bookworm", "base/python:no-such-tag")
    });
    let out = p.kiln(&["build"]);
    assert_eq!(out.status.code(), Some(1));
    let stderr = text(&out.stderr);
    assert!(
        stderr.contains("127.0.0.1:5000") && stderr.contains("not found"),
        "{stderr}"
    );
}

#[test]
fn an_unprivileged_user_builds_exec_layers_rootless() {
    let user = "kilntest";
    let (uid, _, _) = kiln_testsupport::ensure_unprivileged_user(user);
    // Everything the user touches lives in a directory it owns.
    let work = tempfile::Builder::new()
        .prefix("kiln-rootless-build-")
        .tempdir_in("/var/tmp")
        .unwrap();
    let p = Project::new("quickstart", "rootless");
    p.edit("kiln.yaml", |s| s.replace("    user: kiln\n", ""));
    let status = Command::new("cp")
        .arg("-a")
        .arg(p.root())
        .arg(work.path().join("p"))
        .status()
        .unwrap();
    assert!(status.success());
    let kiln = work.path().join("kiln");
    std::fs::copy(env!("CARGO_BIN_EXE_kiln"), &kiln).unwrap();
    let status = Command::new("chown")
        .arg("-R")
        .arg(format!("{uid}"))
        .arg(work.path())
        .status()
        .unwrap();
    assert!(status.success());
    let pipeline = work.path().join("p/kiln.yaml");
    let args = [
        std::ffi::OsStr::new("build"),
        "--json".as_ref(),
        "--step".as_ref(),
        "load".as_ref(),
        "--pipeline".as_ref(),
        pipeline.as_os_str(),
    ];
    let out = kiln_testsupport::kiln_as_user(user, &kiln, work.path(), work.path(), args);
    assert!(
        out.status.success(),
        "rootless build failed:\n{}",
        text(&out.stderr)
    );
    let report: Value = serde_json::from_slice(&out.stdout).unwrap();
    let layers = layer_statuses(&report["images"][0]);
    assert!(
        layers
            .iter()
            .any(|(l, s)| l == "apt packages" && s == "built"),
        "{layers:?}"
    );
    let reference = report["images"][0]["reference"].as_str().unwrap();
    let tmp = tempfile::tempdir().unwrap();
    let bundle = unpack_pushed(reference, tmp.path());
    let out = runc_run(
        &bundle,
        &[
            "/bin/sh",
            "-c",
            "jq --version && python3 -c 'import six, tabulate'",
        ],
    );
    assert_eq!(out.code, 0, "{}\n{}", out.stdout, out.stderr);
    // Files apt created for its own user keep their in-image owner.
    let meta = std::fs::metadata(bundle.join("rootfs/usr/bin/jq")).unwrap();
    assert_eq!(
        std::os::unix::fs::MetadataExt::uid(&meta),
        0,
        "jq is owned by root inside the image"
    );
}
