//! Exec layers end to end: `kiln build` runs apt, pip and useradd in its
//! rootless sandbox on top of a real parent image, pushes to the local
//! registry, and the result is judged with skopeo, umoci and runc (never
//! with kiln's own code): the images run as their user with their packages,
//! layers come in ZenML's order, caching rebuilds only what changed,
//! deletions are whiteouts, secrets are stored nowhere, an unprivileged user
//! can build, and failures are clear.
//!
//! Cold exec builds talk to the Debian mirror and PyPI and take seconds
//! each, so each test shares one cold build across its checks.

#![allow(clippy::too_many_lines)] // a test reads best as one list of steps
#![allow(clippy::unwrap_used)] // test code: a failure is a test failure

use std::collections::{BTreeMap, BTreeSet};
use std::io::{Read as _, Write as _};
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

use kiln_testsupport::fixture::{layer_statuses, report_image, report_layer};
use kiln_testsupport::{
    Bench, ensure_unprivileged_user, runc_run, skopeo, skopeo_copy, skopeo_inspect_config,
    skopeo_inspect_raw, umoci_unpack,
};
use serde_json::Value;

// ---------------------------------------------------------------------------
// A private copy of a fixture and the kiln binary run on it.

/// A fixture copied into a temp dir, with its own cache, data dir and
/// target repository, so tests run in parallel and never see each other's
/// cache.
struct Project {
    dir: tempfile::TempDir,
    repo: String,
}

impl Project {
    /// Copies testdata/`fixture` and points `target_repository` at
    /// `kiln-test/exec-<name>-<pid>` on the bench registry and
    /// `parent_image` at the bench's Python image.
    fn new(fixture: &str, name: &str) -> Self {
        Self::new_in(fixture, name, tempfile::tempdir().unwrap())
    }

    fn new_in(fixture: &str, name: &str, dir: tempfile::TempDir) -> Self {
        let bench = Bench::get();
        let src = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
            .join("../testdata")
            .join(fixture);
        let status = Command::new("cp")
            .arg("-a")
            .arg(format!("{}/.", src.display()))
            .arg(dir.path().join("p"))
            .status()
            .unwrap();
        assert!(status.success(), "copying {}", src.display());
        let repo = format!(
            "{}/kiln-test/exec-{name}-{}",
            bench.registry(),
            std::process::id()
        );
        let p = Project { dir, repo };
        let (repo, parent) = (p.repo.clone(), bench.base_python().to_string());
        p.edit("kiln.yaml", |text| {
            let mut out = String::new();
            let mut replaced = 0;
            for line in text.lines() {
                let indent = &line[..line.len() - line.trim_start().len()];
                if line.trim_start().starts_with("target_repository:") {
                    out.push_str(&format!("{indent}target_repository: {repo}\n"));
                    replaced += 1;
                } else if line.trim_start().starts_with("parent_image:") {
                    out.push_str(&format!("{indent}parent_image: {parent}\n"));
                    replaced += 1;
                } else {
                    out.push_str(line);
                    out.push('\n');
                }
            }
            assert_eq!(replaced, 2, "fixture {fixture} must name both once");
            out
        });
        p
    }

    fn root(&self) -> PathBuf {
        self.dir.path().join("p")
    }

    fn cache_home(&self) -> PathBuf {
        self.dir.path().join("cache")
    }

    fn data_home(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    fn edit(&self, file: &str, f: impl FnOnce(&str) -> String) {
        let path = self.root().join(file);
        let text = std::fs::read_to_string(&path).unwrap();
        let new = f(&text);
        assert_ne!(new, text, "editing {file} changed nothing");
        std::fs::write(&path, new).unwrap();
    }

    /// Runs kiln in the project root with the project's cache and data dirs
    /// and nothing from this machine's kiln or docker configuration.
    fn kiln(&self, args: &[&str], env: &[(&str, &str)]) -> Output {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_kiln"));
        cmd.current_dir(self.root())
            .args(args)
            .env("XDG_CACHE_HOME", self.cache_home())
            .env("XDG_DATA_HOME", self.data_home())
            .env("HOME", self.dir.path())
            .env_remove("DOCKER_CONFIG")
            .env_remove("SOURCE_DATE_EPOCH")
            .env_remove("KILN_SANDBOX_FORCE_NO_USERNS")
            .stdin(Stdio::null());
        for (k, v) in env {
            cmd.env(k, v);
        }
        cmd.output().unwrap()
    }

    /// `kiln build --json EXTRA`, which must succeed; the parsed report.
    fn build_json(&self, extra: &[&str]) -> Value {
        let mut args = vec!["build", "--json"];
        args.extend_from_slice(extra);
        let out = self.kiln(&args, &[]);
        assert!(
            out.status.success(),
            "kiln {args:?} failed ({:?}):\n{}",
            out.status,
            text(&out.stderr)
        );
        serde_json::from_slice(&out.stdout)
            .unwrap_or_else(|e| panic!("--json printed no JSON ({e}):\n{}", text(&out.stdout)))
    }
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// The `kiln: error: ...` part of kiln's stderr (the final message, not the
/// progress lines before it).
fn error_message(stderr: &str) -> &str {
    let start = stderr
        .find("kiln: error:")
        .unwrap_or_else(|| panic!("no `kiln: error:` in stderr:\n{stderr}"));
    &stderr[start..]
}

// ---------------------------------------------------------------------------
// Reading the build report.

fn pairs(list: &[(&str, &str)]) -> Vec<(String, String)> {
    list.iter()
        .map(|(a, b)| (a.to_string(), b.to_string()))
        .collect()
}

// ---------------------------------------------------------------------------
// Judging images through skopeo, umoci and runc.

/// `skopeo copy` of a pushed image into `layout` under `tag`.
fn copy_to_layout(reference: &str, layout: &Path, tag: &str) {
    skopeo_copy(
        &format!("docker://{reference}"),
        &format!("oci:{}:{tag}", layout.display()),
        &["--src-tls-verify=false"],
    );
}

fn blob_path(layout: &Path, digest: &str) -> PathBuf {
    let hex = digest.strip_prefix("sha256:").unwrap();
    layout.join("blobs/sha256").join(hex)
}

/// The manifest of `tag` in an OCI layout.
fn layout_manifest(layout: &Path, tag: &str) -> Value {
    let index: Value =
        serde_json::from_slice(&std::fs::read(layout.join("index.json")).unwrap()).unwrap();
    let desc = index["manifests"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["annotations"]["org.opencontainers.image.ref.name"] == tag)
        .unwrap_or_else(|| panic!("no {tag} in {index:#}"));
    serde_json::from_slice(
        &std::fs::read(blob_path(layout, desc["digest"].as_str().unwrap())).unwrap(),
    )
    .unwrap()
}

fn layer_digests(manifest: &Value) -> Vec<String> {
    manifest["layers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| l["digest"].as_str().unwrap().to_string())
        .collect()
}

/// A layer blob, decompressed (gzip by magic number; anything else is
/// taken as a plain tar).
fn uncompressed(path: &Path) -> Box<dyn std::io::Read> {
    let mut file = std::fs::File::open(path).unwrap();
    let mut magic = [0u8; 2];
    let n = file.read(&mut magic).unwrap();
    let file = std::fs::File::open(path).unwrap();
    if n == 2 && magic == [0x1f, 0x8b] {
        Box::new(flate2::read::MultiGzDecoder::new(file))
    } else {
        Box::new(file)
    }
}

/// One entry of a layer tar.
#[derive(Debug, Clone)]
struct Entry {
    /// Normalised: no leading `./` or `/`, no trailing `/`.
    path: String,
    uid: u64,
    gid: u64,
    is_dir: bool,
}

fn normalise(path: &str) -> String {
    path.trim_start_matches("./")
        .trim_start_matches('/')
        .trim_end_matches('/')
        .to_string()
}

fn entries(blob: &Path) -> Vec<Entry> {
    let mut archive = tar::Archive::new(uncompressed(blob));
    archive
        .entries()
        .unwrap()
        .map(|e| {
            let e = e.unwrap();
            let h = e.header();
            Entry {
                path: normalise(&e.path().unwrap().to_string_lossy()),
                uid: h.uid().unwrap(),
                gid: h.gid().unwrap(),
                is_dir: h.entry_type().is_dir(),
            }
        })
        .collect()
}

/// The content of one file in a layer blob.
fn file_in_layer(blob: &Path, path: &str) -> Option<String> {
    let mut archive = tar::Archive::new(uncompressed(blob));
    for e in archive.entries().unwrap() {
        let mut e = e.unwrap();
        if normalise(&e.path().unwrap().to_string_lossy()) == path {
            let mut s = String::new();
            e.read_to_string(&mut s).unwrap();
            return Some(s);
        }
    }
    None
}

/// sha256 of the decompressed blob, computed by coreutils' sha256sum: the
/// diff ID the config must list.
fn diff_id(blob: &Path) -> String {
    let mut bytes = Vec::new();
    uncompressed(blob).read_to_end(&mut bytes).unwrap();
    let mut child = Command::new("sha256sum")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdin = child.stdin.take().unwrap();
    let writer = std::thread::spawn(move || stdin.write_all(&bytes).unwrap());
    let out = child.wait_with_output().unwrap();
    writer.join().unwrap();
    assert!(out.status.success());
    format!(
        "sha256:{}",
        text(&out.stdout).split_whitespace().next().unwrap()
    )
}

/// Applies layers' entries in order, as an unpacker would, and checks that
/// every whiteout deletes something that a lower layer has (OCI whiteouts
/// apply to lower layers only). Returns, per layer, the paths its whiteouts
/// deleted.
fn apply_whiteouts(layers: &[Vec<Entry>]) -> Vec<Vec<String>> {
    let mut tree: BTreeSet<String> = BTreeSet::new();
    let mut deleted_per_layer = Vec::new();
    let under = |tree: &BTreeSet<String>, dir: &str| -> Vec<String> {
        let prefix = format!("{dir}/");
        tree.range(prefix.clone()..)
            .take_while(|p| p.starts_with(&prefix))
            .cloned()
            .collect()
    };
    for (i, layer) in layers.iter().enumerate() {
        let mut deleted = Vec::new();
        for e in layer {
            let (dir, name) = match e.path.rsplit_once('/') {
                Some((d, n)) => (d.to_string(), n),
                None => (String::new(), e.path.as_str()),
            };
            if name == ".wh..wh..opq" {
                for p in under(&tree, &dir) {
                    tree.remove(&p);
                }
            } else if let Some(target) = name.strip_prefix(".wh.") {
                let target = if dir.is_empty() {
                    target.to_string()
                } else {
                    format!("{dir}/{target}")
                };
                assert!(
                    tree.contains(&target),
                    "layer {i} has a whiteout for {target}, which no lower layer has"
                );
                tree.remove(&target);
                for p in under(&tree, &target) {
                    tree.remove(&p);
                }
                deleted.push(target);
            }
        }
        for e in layer {
            if !e
                .path
                .rsplit('/')
                .next()
                .unwrap_or_default()
                .starts_with(".wh.")
            {
                tree.insert(e.path.clone());
            }
        }
        deleted_per_layer.push(deleted);
    }
    deleted_per_layer
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}

/// The uid and gid of `user` in a passwd file's text.
fn passwd_ids(passwd: &str, user: &str) -> (u64, u64) {
    passwd
        .lines()
        .find_map(|l| {
            let f: Vec<&str> = l.split(':').collect();
            (f.len() > 3 && f[0] == user).then(|| (f[2].parse().unwrap(), f[3].parse().unwrap()))
        })
        .unwrap_or_else(|| panic!("no {user} in passwd:\n{passwd}"))
}

/// The registry has no manifest for `reference`.
fn assert_not_pushed(reference: &str) {
    let out = skopeo(&[
        "inspect",
        "--raw",
        "--tls-verify=false",
        &format!("docker://{reference}"),
    ]);
    assert_ne!(
        out.code, 0,
        "{reference} exists although the build failed:\n{}",
        out.stdout
    );
}

// ---------------------------------------------------------------------------
// 1, 2, 3, 5: the quickstart, built cold once, judged, then rebuilt.

#[test]
fn quickstart_exec_layers_run_stack_in_order_and_rebuild_only_what_changed() {
    let bench = Bench::get();
    let p = Project::new("quickstart", "qs");
    let started = std::time::Instant::now();
    let cold = p.build_json(&[]);
    eprintln!("cold quickstart build: {:?}", started.elapsed());

    // Each distinct layer is built once per build: train finds the apt and
    // code layers that the pipeline image built moments before.
    let exec_labels = ["apt packages", "requirements (user)", "user kiln", "code"];
    let pipeline = report_image(&cold, "pipeline");
    let train = report_image(&cold, "train");
    assert_eq!(
        pipeline["steps"],
        serde_json::json!(["load", "featurize", "validate"])
    );
    assert_eq!(train["steps"], serde_json::json!(["train"]));
    assert_eq!(
        layer_statuses(pipeline),
        pairs(&exec_labels.map(|l| (l, "built"))),
        "cold build"
    );
    assert_eq!(
        layer_statuses(train),
        pairs(&[
            ("apt packages", "reused"),
            ("requirements (user)", "built"),
            ("user kiln", "built"),
            ("code", "reused"),
        ]),
        "cold build, second image"
    );
    for same in ["apt packages", "code"] {
        assert_eq!(
            report_layer(pipeline, same)["digest"],
            report_layer(train, same)["digest"],
            "{same} is shared"
        );
    }
    assert_ne!(
        report_layer(pipeline, "requirements (user)")["digest"],
        report_layer(train, "requirements (user)")["digest"],
        "train has its own requirements"
    );

    // 2. Layer count and order, as the registry serves them.
    let parent_manifest = skopeo_inspect_raw(
        &format!("docker://{}", bench.base_python()),
        &["--tls-verify=false"],
    );
    let parent_layers = layer_digests(&parent_manifest);
    let tmp = tempfile::tempdir().unwrap();
    let layout = tmp.path().join("layout");
    let mut manifests = BTreeMap::new();
    for img in [pipeline, train] {
        let name = img["name"].as_str().unwrap();
        let reference = img["reference"].as_str().unwrap();
        let manifest =
            skopeo_inspect_raw(&format!("docker://{reference}"), &["--tls-verify=false"]);
        let digests = layer_digests(&manifest);
        assert_eq!(
            digests.len(),
            parent_layers.len() + 4,
            "{name}: {manifest:#}"
        );
        assert_eq!(
            digests[..parent_layers.len()],
            parent_layers[..],
            "{name}: parent first"
        );
        let ours: Vec<&str> = img["layers"]
            .as_array()
            .unwrap()
            .iter()
            .map(|l| l["digest"].as_str().unwrap())
            .collect();
        assert_eq!(
            digests[parent_layers.len()..],
            ours[..],
            "{name}: report = registry"
        );

        let config =
            skopeo_inspect_config(&format!("docker://{reference}"), &["--tls-verify=false"]);
        assert_eq!(config["config"]["User"], "kiln", "{name}");
        assert_eq!(config["config"]["WorkingDir"], "/app", "{name}");
        let env: Vec<&str> = config["config"]["Env"]
            .as_array()
            .unwrap()
            .iter()
            .map(|e| e.as_str().unwrap())
            .collect();
        assert!(
            env.contains(&"VIRTUAL_ENV=/opt/kiln/venv"),
            "{name}: {env:?}"
        );
        assert!(
            env.iter()
                .any(|e| e.starts_with("PATH=/opt/kiln/venv/bin:")),
            "{name}: {env:?}"
        );
        let layered: Vec<&str> = config["history"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|h| h["empty_layer"] != true)
            .map(|h| h["created_by"].as_str().unwrap_or_default())
            .collect();
        assert_eq!(
            layered.len(),
            digests.len(),
            "{name}: one history entry per layer"
        );
        let ours = &layered[parent_layers.len()..];
        let expected = ["apt packages", "requirements (user)", "user kiln", "COPY"];
        for (created_by, what) in ours.iter().zip(expected) {
            assert!(created_by.contains(what), "{name}: history {ours:?}");
        }
        assert_eq!(
            config["rootfs"]["diff_ids"].as_array().unwrap().len(),
            digests.len(),
            "{name}"
        );
        copy_to_layout(reference, &layout, name);
        // The diff IDs of kiln's layers are the sha256 of what they unpack to.
        for (i, digest) in digests.iter().enumerate().skip(parent_layers.len()) {
            assert_eq!(
                config["rootfs"]["diff_ids"][i].as_str().unwrap(),
                diff_id(&blob_path(&layout, digest)),
                "{name}: diff_id of layer {i}"
            );
        }
        manifests.insert(name.to_string(), digests);
    }

    // The layers' contents: each holds what its label says, owned right.
    let train_layers = &manifests["train"];
    let n = parent_layers.len();
    let blob = |i: usize| blob_path(&layout, &train_layers[i]);
    let apt = entries(&blob(n));
    assert!(
        apt.iter()
            .any(|e| e.path == "usr/bin/jq" && e.uid == 0 && e.gid == 0),
        "jq, owned by root, in the apt layer"
    );
    let venv_has = |layers: &[String], what: &str| {
        entries(&blob_path(&layout, &layers[n + 1]))
            .iter()
            .any(|e| e.path.starts_with("opt/kiln/venv/lib/") && e.path.ends_with(what))
    };
    assert!(venv_has(train_layers, "site-packages/toolz"));
    assert!(venv_has(train_layers, "site-packages/tabulate"));
    assert!(
        !venv_has(&manifests["pipeline"], "site-packages/toolz"),
        "toolz is train's requirement only"
    );
    let passwd = file_in_layer(&blob(n + 2), "etc/passwd").expect("the user layer has etc/passwd");
    let (uid, gid) = passwd_ids(&passwd, "kiln");
    assert_ne!(uid, 0);
    let code = entries(&blob(n + 3));
    assert!(code.iter().any(|e| e.path == "app/steps/load.py"));
    assert!(
        code.iter()
            .all(|e| e.path.starts_with("app") && (e.uid, e.gid) == (uid, gid)),
        "the code is owned by kiln ({uid}:{gid}): {code:?}"
    );
    assert!(
        !code.iter().any(|e| e.path.starts_with("app/data")),
        ".dockerignore'd data/ is in the code layer"
    );

    // 5. Deletions are whiteouts: the apt layer removes the parent's
    // /var/log/apt, and every whiteout of every kiln layer deletes
    // something a lower layer has.
    let all: Vec<Vec<Entry>> = train_layers
        .iter()
        .map(|d| entries(&blob_path(&layout, d)))
        .collect();
    assert!(
        all[..n]
            .iter()
            .flatten()
            .any(|e| e.path == "var/log/apt" && e.is_dir),
        "the parent has /var/log/apt"
    );
    assert!(
        apt.iter().any(|e| e.path == "var/log/.wh.apt"),
        "no whiteout for /var/log/apt in the apt layer"
    );
    let deleted = apply_whiteouts(&all);
    assert!(
        deleted[n].contains(&"var/log/apt".to_string()),
        "{:?}",
        deleted[n]
    );

    // 1. The train image runs, through umoci and runc, as its user.
    let bundle = tmp.path().join("bundle");
    umoci_unpack(&layout, "train", &bundle);
    let rootfs = bundle.join("rootfs");
    assert!(
        !rootfs.join("var/log/apt").exists(),
        "umoci did not apply the whiteout"
    );
    assert!(rootfs.join("var/log").is_dir());
    let runtime: Value =
        serde_json::from_slice(&std::fs::read(bundle.join("config.json")).unwrap()).unwrap();
    assert_eq!(runtime["process"]["user"]["uid"], uid, "umoci runs as kiln");
    assert_eq!(runtime["process"]["user"]["gid"], gid);
    let script = "set -e; id -un; id -u; echo '{\"k\":[1,2]}' | jq -c '.k|length'; jq --version; \
        python3 -c 'import six, tabulate, toolz, sys; print(sys.prefix, toolz.__version__)'; \
        cd /app && KILN_RUN_DIR=/tmp/r python3 steps/load.py && test -s /tmp/r/raw.json && echo step-ok";
    let out = runc_run(&bundle, &["/bin/sh", "-c", script]);
    assert_eq!(
        out.code, 0,
        "stdout:\n{}\nstderr:\n{}",
        out.stdout, out.stderr
    );
    let lines: Vec<&str> = out.stdout.lines().collect();
    assert_eq!(lines[0], "kiln", "{}", out.stdout);
    assert_eq!(lines[1], uid.to_string(), "{}", out.stdout);
    assert_ne!(lines[1], "0", "runs as root");
    assert_eq!(lines[2], "2", "jq works: {}", out.stdout);
    assert!(lines[3].starts_with("jq-1."), "{}", out.stdout);
    assert_eq!(lines[4], "/opt/kiln/venv 0.12.1", "{}", out.stdout);
    assert!(lines.contains(&"load: wrote 500 rows"), "{}", out.stdout);
    assert_eq!(lines.last(), Some(&"step-ok"), "{}", out.stdout);

    // 3. No change: everything reused, nothing uploaded, same images.
    let again = p.build_json(&[]);
    for name in ["pipeline", "train"] {
        let (a, b) = (report_image(&again, name), report_image(&cold, name));
        assert_eq!(a["digest"], b["digest"], "{name}");
        assert!(
            layer_statuses(a).iter().all(|(_, s)| s == "reused"),
            "{name}: {a:#}"
        );
        assert_eq!(a["uploaded"], 0, "{name}");
    }

    // Code-only change: no exec layer is built, only the (shared) code
    // layer, once; uploads are that blob and the two configs.
    p.edit("steps/load.py", |s| format!("{s}# a code-only change\n"));
    let code_change = p.build_json(&[]);
    let (pl, tr) = (
        report_image(&code_change, "pipeline"),
        report_image(&code_change, "train"),
    );
    let reused3 = [
        ("apt packages", "reused"),
        ("requirements (user)", "reused"),
        ("user kiln", "reused"),
    ];
    assert_eq!(layer_statuses(pl)[..3], pairs(&reused3)[..], "{pl:#}");
    assert_eq!(
        layer_statuses(pl)[3],
        ("code".to_string(), "built".to_string())
    );
    assert_eq!(layer_statuses(tr)[..3], pairs(&reused3)[..], "{tr:#}");
    assert_eq!(
        layer_statuses(tr)[3],
        ("code".to_string(), "reused".to_string()),
        "train's code layer has the same inputs as the one just built"
    );
    assert_eq!(
        report_layer(pl, "code")["digest"],
        report_layer(tr, "code")["digest"]
    );
    assert_ne!(
        report_layer(pl, "code")["digest"],
        report_layer(pipeline, "code")["digest"]
    );
    for img in [pl, tr] {
        let name = img["name"].as_str().unwrap();
        let old = &manifests[name];
        let new = layer_digests(&skopeo_inspect_raw(
            &format!("docker://{}", img["reference"].as_str().unwrap()),
            &["--tls-verify=false"],
        ));
        assert_eq!(
            new[..old.len() - 1],
            old[..old.len() - 1],
            "{name}: only the code layer changed"
        );
        assert_eq!(
            new.last().map(String::as_str),
            report_layer(img, "code")["digest"].as_str()
        );
    }
    assert_eq!(pl["uploaded"], 2, "pipeline: the code blob and its config");
    assert_eq!(
        tr["uploaded"], 1,
        "train: its config only (the code blob is in the repository already)"
    );
    // And in plain output: no command ran, so no sandbox output lines.
    p.edit("steps/load.py", |s| format!("{s}# another one\n"));
    let out = p.kiln(&["build", "--explain"], &[]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let (stdout, stderr) = (text(&out.stdout), text(&out.stderr));
    let sandbox_lines: Vec<&str> = stderr.lines().filter(|l| l.contains(" | ")).collect();
    assert!(
        sandbox_lines.is_empty(),
        "a command ran: {sandbox_lines:?}\n{stderr}"
    );
    for exec in ["apt packages", "requirements (user)", "user kiln"] {
        assert!(
            stderr.contains(&format!("[pipeline] {exec}: reused"))
                && stderr.contains(&format!("[train] {exec}: reused")),
            "{stderr}"
        );
    }
    assert!(stdout.contains("steps/load.py changed"), "{stdout}");

    // Requirements change in train: its requirements layer and the user
    // layer after it (its key chains) are rebuilt; apt is reused. The file
    // is part of the build context, so the code layer changes too, built
    // once and shared: the code key does not chain on the exec layers. The
    // pipeline image runs no command.
    p.edit("requirements-train.txt", |s| {
        s.replace("toolz==0.12.1", "toolz==0.12.0")
    });
    let reqs = p.build_json(&[]);
    let (pl, tr) = (
        report_image(&reqs, "pipeline"),
        report_image(&reqs, "train"),
    );
    assert_eq!(
        layer_statuses(tr),
        pairs(&[
            ("apt packages", "reused"),
            ("requirements (user)", "built"),
            ("user kiln", "built"),
            ("code", "reused"),
        ]),
        "{tr:#}"
    );
    assert_eq!(layer_statuses(pl)[..3], pairs(&reused3)[..], "{pl:#}");
    assert_eq!(
        layer_statuses(pl)[3],
        ("code".to_string(), "built".to_string())
    );
    assert_eq!(
        report_layer(pl, "code")["digest"],
        report_layer(tr, "code")["digest"]
    );
    assert_eq!(
        report_layer(tr, "apt packages")["digest"],
        report_layer(train, "apt packages")["digest"]
    );
    let reason = report_layer(tr, "requirements (user)")["reason"]
        .as_str()
        .unwrap_or_default();
    assert!(reason.contains("requirements-train.txt"), "{reason}");
    // The new requirement is what the registry now serves.
    let reference = tr["reference"].as_str().unwrap();
    copy_to_layout(reference, &layout, "train-2");
    let new = layer_digests(&layout_manifest(&layout, "train-2"));
    let reqs_layer = entries(&blob_path(&layout, &new[n + 1]));
    assert!(
        reqs_layer
            .iter()
            .any(|e| e.path.ends_with("site-packages/toolz-0.12.0.dist-info")),
        "toolz 0.12.0 is not in train's requirements layer"
    );
    assert!(!reqs_layer.iter().any(|e| e.path.contains("toolz-0.12.1")));
    eprintln!("quickstart test: {:?}", started.elapsed());
}

// ---------------------------------------------------------------------------
// 4: an unprivileged user builds exec layers.

#[test]
fn an_unprivileged_user_builds_and_pushes_an_image_that_runs() {
    let user = "kilntest";
    let (uid, subuid, _) = ensure_unprivileged_user(user);
    // Everything the user touches lives in a directory it owns.
    let work = tempfile::Builder::new()
        .prefix("kiln-exec-rootless-")
        .tempdir_in("/var/tmp")
        .unwrap();
    let p = Project::new_in("exec/small", "rootless", work);
    let kiln = p.dir.path().join("kiln");
    std::fs::copy(env!("CARGO_BIN_EXE_kiln"), &kiln).unwrap();
    let status = Command::new("chmod")
        .args(["-R", "a+rX"])
        .arg(p.dir.path())
        .status()
        .unwrap();
    assert!(status.success());
    let status = Command::new("chown")
        .arg("-R")
        .arg(uid.to_string())
        .arg(p.dir.path())
        .status()
        .unwrap();
    assert!(status.success());
    let home = p.dir.path();
    let out = Command::new("runuser")
        .args(["-u", user, "--", "env"])
        .arg(format!("HOME={}", home.display()))
        .arg(format!("XDG_CACHE_HOME={}", p.cache_home().display()))
        .arg(format!("XDG_DATA_HOME={}", p.data_home().display()))
        .arg(&kiln)
        .args(["build", "--json", "--pipeline"])
        .arg(p.root().join("kiln.yaml"))
        .current_dir(p.root())
        .env_remove("DOCKER_CONFIG")
        .env_remove("KILN_SANDBOX_FORCE_NO_USERNS")
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "rootless build as {user} failed ({:?}):\n{}",
        out.status,
        text(&out.stderr)
    );
    let report: Value = serde_json::from_slice(&out.stdout).unwrap();
    let img = &report["images"][0];
    assert_eq!(
        layer_statuses(img),
        pairs(&[
            ("apt packages", "built"),
            ("requirements (user)", "built"),
            ("user runner", "built"),
            ("code", "built"),
        ])
    );
    let reference = img["reference"].as_str().unwrap();
    assert!(reference.starts_with(&p.repo), "{reference}");

    let tmp = tempfile::tempdir().unwrap();
    let layout = tmp.path().join("layout");
    copy_to_layout(reference, &layout, "t");
    let digests = layer_digests(&layout_manifest(&layout, "t"));
    let n = digests.len() - 4;
    let layers: Vec<Vec<Entry>> = digests[n..]
        .iter()
        .map(|d| entries(&blob_path(&layout, d)))
        .collect();
    // Ids inside the image are the image's own, not the subordinate ids nor
    // the building user's: the sandbox's mapping is undone in the layers.
    let passwd = file_in_layer(&blob_path(&layout, &digests[n + 2]), "etc/passwd").unwrap();
    let (runner_uid, runner_gid) = passwd_ids(&passwd, "runner");
    for (i, layer) in layers.iter().enumerate() {
        for e in layer {
            assert!(
                e.uid < 65536 && e.gid < 65536 && e.uid != u64::from(uid),
                "layer {i}: {e:?} carries a host id (kilntest is {uid}, subordinate ids from {subuid})"
            );
        }
    }
    assert!(
        layers[0]
            .iter()
            .any(|e| e.path == "usr/bin/jq" && e.uid == 0)
    );
    assert!(
        layers[2]
            .iter()
            .any(|e| e.path == "home/runner" && (e.uid, e.gid) == (runner_uid, runner_gid))
    );
    assert!(
        layers[3]
            .iter()
            .any(|e| e.path == "app/steps/hello.py" && (e.uid, e.gid) == (runner_uid, runner_gid))
    );

    let bundle = tmp.path().join("bundle");
    umoci_unpack(&layout, "t", &bundle);
    let out = runc_run(
        &bundle,
        &[
            "/bin/sh",
            "-c",
            "id -un && jq --version && python3 steps/hello.py",
        ],
    );
    assert_eq!(
        out.code, 0,
        "stdout:\n{}\nstderr:\n{}",
        out.stdout, out.stderr
    );
    let lines: Vec<&str> = out.stdout.lines().collect();
    assert_eq!(lines[0], "runner", "{}", out.stdout);
    assert!(lines[1].starts_with("jq-1."), "{}", out.stdout);
    assert_eq!(
        lines[2], "hello from six 1.16.0, jq at /usr/bin/jq",
        "{}",
        out.stdout
    );
}

// ---------------------------------------------------------------------------
// 6: secrets are visible to the layer's commands and stored nowhere.

#[test]
fn secrets_reach_pip_and_are_stored_nowhere() {
    let p = Project::new("exec/secret", "secret");
    let nonce = format!(
        "{}-{}",
        std::process::id(),
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_nanos()
    );
    let file_marker = format!("kiln-secret-file-{nonce}");
    let env_marker = format!("kiln-secret-env-{nonce}");
    let secret_file = p.dir.path().join("pipextra.txt");
    std::fs::write(&secret_file, format!("six==1.16.0  # {file_marker}\n")).unwrap();
    let env_value = format!("tabulate==0.9.0  # {env_marker}\n");
    let file_arg = format!("id=pipextra,src={}", secret_file.display());
    let env_arg = "id=pipenv,env=KILN_TEST_PIP_SECRET";
    // Plain output, so that every line the sandbox printed is there to scan.
    let out = p.kiln(
        &[
            "build",
            "--explain",
            "--secret",
            &file_arg,
            "--secret",
            env_arg,
        ],
        &[("KILN_TEST_PIP_SECRET", &env_value)],
    );
    let (stdout, stderr) = (text(&out.stdout), text(&out.stderr));
    assert!(out.status.success(), "build failed:\n{stderr}");
    for marker in [&file_marker, &env_marker] {
        assert!(
            !stdout.contains(marker.as_str()),
            "secret on stdout:\n{stdout}"
        );
        assert!(
            !stderr.contains(marker.as_str()),
            "secret on stderr:\n{stderr}"
        );
    }
    let reference = format!("{}:secret-pipeline", p.repo);
    assert!(stdout.contains(&reference), "{stdout}");

    // Every blob kiln made (layers, config) and the manifest, decompressed.
    let tmp = tempfile::tempdir().unwrap();
    let layout = tmp.path().join("layout");
    copy_to_layout(&reference, &layout, "t");
    let parent = layer_digests(&skopeo_inspect_raw(
        &format!("docker://{}", Bench::get().base_python()),
        &["--tls-verify=false"],
    ));
    let manifest = layout_manifest(&layout, "t");
    let digests = layer_digests(&manifest);
    assert_eq!(
        digests[..parent.len()],
        parent[..],
        "parent layers are the base's, untouched"
    );
    let mut scanned = 0;
    for entry in std::fs::read_dir(layout.join("blobs/sha256")).unwrap() {
        let path = entry.unwrap().path();
        let digest = format!("sha256:{}", path.file_name().unwrap().to_string_lossy());
        if parent.contains(&digest) {
            continue;
        }
        let mut bytes = Vec::new();
        uncompressed(&path).read_to_end(&mut bytes).unwrap();
        for marker in [&file_marker, &env_marker] {
            assert!(
                !contains(&bytes, marker.as_bytes()),
                "secret in blob {digest}"
            );
        }
        scanned += 1;
    }
    // requirements layer, code layer, config, manifest
    assert_eq!(scanned, 4, "blobs scanned");
    let config = skopeo_inspect_config(&format!("docker://{reference}"), &["--tls-verify=false"]);
    let config_text = config.to_string();
    assert!(!config_text.contains(&file_marker) && !config_text.contains(&env_marker));
    for e in entries(&blob_path(&layout, &digests[parent.len()])) {
        assert!(
            !e.path.starts_with("run/secrets") && !e.path.starts_with("run/kiln-inputs"),
            "mount point {e:?} left in the layer"
        );
    }
    // Nor in kiln's cache or build records.
    let mut files = vec![p.cache_home(), p.data_home()];
    let mut checked = 0;
    while let Some(path) = files.pop() {
        if path.is_dir() {
            files.extend(std::fs::read_dir(&path).unwrap().map(|e| e.unwrap().path()));
            continue;
        }
        let mut bytes = Vec::new();
        uncompressed(&path)
            .read_to_end(&mut bytes)
            .unwrap_or_default();
        let raw = std::fs::read(&path).unwrap();
        for marker in [&file_marker, &env_marker] {
            assert!(
                !contains(&bytes, marker.as_bytes()) && !contains(&raw, marker.as_bytes()),
                "secret in {}",
                path.display()
            );
        }
        checked += 1;
    }
    assert!(checked > 3, "only {checked} cache files");

    // pip did read both secrets: both packages are there.
    let bundle = tmp.path().join("bundle");
    umoci_unpack(&layout, "t", &bundle);
    assert!(!bundle.join("rootfs/run/secrets/pipextra").exists());
    let out = runc_run(
        &bundle,
        &[
            "python3",
            "-c",
            "import six, tabulate; print(six.__version__, tabulate.__version__)",
        ],
    );
    assert_eq!(
        (out.code, out.stdout.trim()),
        (0, "1.16.0 0.9.0"),
        "{}",
        out.stderr
    );

    // A secret is not an input (BuildKit's semantics): a rotated secret
    // with the same meaning reuses the layer, and its bytes are in no key.
    std::fs::write(&secret_file, "six==1.16.0  # rotated\n").unwrap();
    let out = p.kiln(
        &[
            "build", "--json", "--secret", &file_arg, "--secret", env_arg,
        ],
        &[("KILN_TEST_PIP_SECRET", "tabulate==0.9.0\n")],
    );
    assert!(out.status.success(), "{}", text(&out.stderr));
    let report: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(
        layer_statuses(&report["images"][0]),
        pairs(&[("requirements (user)", "reused"), ("code", "reused")])
    );
}

// ---------------------------------------------------------------------------
// 7: no user namespaces.

#[test]
fn without_user_namespaces_a_build_with_exec_layers_fails_clearly() {
    let p = Project::new("exec/small", "nouserns");
    let out = p.kiln(&["build"], &[("KILN_SANDBOX_FORCE_NO_USERNS", "1")]);
    let stderr = text(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(!stderr.contains("panicked"), "{stderr}");
    let message = error_message(&stderr);
    assert!(
        message.to_lowercase().contains("user namespace"),
        "{message}"
    );
    assert!(
        message.contains("fix:"),
        "the message says what to do: {message}"
    );
    assert!(!stderr.contains(" | "), "a command ran: {stderr}");
    assert_not_pushed(&format!("{}:small-pipeline", p.repo));
}

/// kiln prints its error chain with `{:#}`; a source error that is also
/// part of its parent's message appears twice. The message a user reads
/// must say each thing once.
#[test]
fn a_build_error_is_printed_once() {
    let p = Project::new("exec/small", "once");
    let out = p.kiln(&["build"], &[("KILN_SANDBOX_FORCE_NO_USERNS", "1")]);
    assert_eq!(out.status.code(), Some(1));
    let stderr = text(&out.stderr);
    let message = error_message(&stderr);
    assert_eq!(
        message
            .matches("KILN_SANDBOX_FORCE_NO_USERNS=1 is set")
            .count(),
        1,
        "the cause is printed more than once:\n{message}"
    );
}

// ---------------------------------------------------------------------------
// 8: a package apt cannot find.

#[test]
fn a_missing_apt_package_fails_naming_the_layer_and_apts_error() {
    let p = Project::new("exec/aptfail", "aptfail");
    let out = p.kiln(&["build", "--json"], &[]);
    let stderr = text(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(!stderr.contains("panicked"), "{stderr}");
    assert!(
        out.stdout.is_empty(),
        "no report for a failed build: {}",
        text(&out.stdout)
    );
    let message = error_message(&stderr);
    let mut problems = Vec::new();
    if !message.contains("apt packages") {
        problems.push("the message does not name the layer (\"apt packages\")");
    }
    if !message.contains("E: Unable to locate package no-such-package-kiln") {
        problems.push("the message lacks apt's own error line");
    }
    if message.contains("`rm -rf") {
        problems.push("the message blames the clean-up command, which never ran");
    }
    assert!(problems.is_empty(), "{problems:?}; the message:\n{message}");

    // Nothing pushed, nothing cached, no scratch root left behind.
    assert_not_pushed(&format!("{}:aptfail-pipeline", p.repo));
    let cache = p.cache_home().join("kiln");
    let out = p.kiln(&["cache", "ls"], &[]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(
        text(&out.stdout).starts_with("0 cached layers"),
        "{}",
        text(&out.stdout)
    );
    let work = cache.join("work");
    let left: Vec<_> = std::fs::read_dir(&work)
        .map(|d| d.map(|e| e.unwrap().path()).collect())
        .unwrap_or_default();
    assert!(
        left.is_empty(),
        "scratch dirs left in {}: {left:?}",
        work.display()
    );
}
