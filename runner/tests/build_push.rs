//! `kiln build` of a code-only pipeline (testdata/codeonly: a parent image
//! and a code layer, two images) pushed to the plain bench registry, judged
//! with skopeo, umoci and runc, never with kiln's own code: the parent's
//! layers then exactly one code layer, OCI media types, gzip, the config
//! (Env, WorkingDir, labels), the layer's tar (owner, mtime,
//! .dockerignore), the image runs; `--step` builds only that step's image.

#![allow(clippy::too_many_lines)] // a test reads best as one list of steps
#![allow(clippy::unwrap_used)] // test code: a failure is a test failure

use std::collections::BTreeMap;
use std::io::Read as _;
use std::path::Path;

use kiln_testsupport::fixture::{Fixture, report_image, tag_exists};
use kiln_testsupport::{
    Bench, runc_run, skopeo_copy, skopeo_inspect, skopeo_inspect_config, skopeo_inspect_raw,
    umoci_unpack,
};
use serde_json::{Value, json};

const KILN: &str = env!("CARGO_BIN_EXE_kiln");
/// skopeo options for the plain-HTTP bench registry.
const PLAIN: &[&str] = &["--tls-verify=false"];
const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
const OCI_CONFIG: &str = "application/vnd.oci.image.config.v1+json";
const OCI_GZIP_LAYER: &str = "application/vnd.oci.image.layer.v1.tar+gzip";

fn codeonly(name: &str) -> (Fixture, String) {
    Fixture::codeonly(KILN, name)
}

fn strings(v: &Value) -> Vec<&str> {
    v.as_array()
        .unwrap_or_else(|| panic!("not an array: {v}"))
        .iter()
        .map(|s| s.as_str().unwrap())
        .collect()
}

/// One tar entry of a layer: type, uid, gid, mtime, mode.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Entry {
    kind: char,
    uid: u64,
    gid: u64,
    mtime: u64,
    mode: u32,
}

/// The entries of a gzip-compressed layer blob, by path.
fn gzip_layer_entries(blob: &[u8]) -> BTreeMap<String, Entry> {
    assert!(
        blob.starts_with(&[0x1f, 0x8b]),
        "the layer is not gzip-compressed"
    );
    let mut plain = Vec::new();
    flate2::read::MultiGzDecoder::new(blob)
        .read_to_end(&mut plain)
        .unwrap();
    let mut archive = tar::Archive::new(&plain[..]);
    let mut entries = BTreeMap::new();
    for e in archive.entries().unwrap() {
        let e = e.unwrap();
        let h = e.header();
        let raw = e.path().unwrap().to_string_lossy().into_owned();
        // `app/steps/` and `./app/steps` are the same entry.
        let path = raw
            .trim_start_matches("./")
            .trim_end_matches('/')
            .to_owned();
        let entry = Entry {
            kind: match h.entry_type() {
                tar::EntryType::Directory => 'd',
                tar::EntryType::Regular => 'f',
                tar::EntryType::Symlink => 'l',
                other => panic!("unexpected tar entry type {other:?} for {path}"),
            },
            uid: h.uid().unwrap(),
            gid: h.gid().unwrap(),
            mtime: h.mtime().unwrap(),
            mode: h.mode().unwrap(),
        };
        assert!(
            entries.insert(path.clone(), entry).is_none(),
            "{path} twice in the layer"
        );
    }
    entries
}

/// A blob of an OCI layout.
fn layout_blob(layout: &Path, digest: &str) -> Vec<u8> {
    let hex = digest.strip_prefix("sha256:").unwrap();
    std::fs::read(layout.join("blobs/sha256").join(hex)).unwrap()
}

/// A blob straight from the plain registry's HTTP API (curl, not kiln).
fn registry_blob(reference_repo: &str, digest: &str) -> Vec<u8> {
    let (registry, path) = reference_repo.split_once('/').unwrap();
    let out = std::process::Command::new("curl")
        .args(["-sSfL", "--max-time", "60"])
        .arg(format!("http://{registry}/v2/{path}/blobs/{digest}"))
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "curl {digest}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    out.stdout
}

#[test]
fn code_only_image_is_the_parent_plus_one_code_layer_and_runs() {
    let bench = Bench::get();
    let (f, repo) = codeonly("push");
    let report = f.build_json(&[]);

    // The report: two images, which steps each runs, one built code layer.
    assert_eq!(report["pipeline"], "codeonly");
    let names: Vec<&str> = report["images"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["pipeline", "report"], "{report:#}");
    let pipeline = report_image(&report, "pipeline");
    let report_img = report_image(&report, "report");
    assert_eq!(pipeline["steps"], json!(["produce", "consume"]));
    assert_eq!(report_img["steps"], json!(["report"]));
    let reference = format!("{repo}:codeonly-pipeline");
    assert_eq!(pipeline["reference"], reference.as_str());
    assert_eq!(report_img["reference"], format!("{repo}:codeonly-report"));
    let layers = pipeline["layers"].as_array().unwrap();
    assert_eq!(layers.len(), 1, "{pipeline:#}");
    assert_eq!(layers[0]["label"], "code");
    assert_eq!(layers[0]["status"], "built");
    // Both images share the code layer: built once, reused by the second.
    assert_eq!(report_img["layers"][0]["digest"], layers[0]["digest"]);
    assert_eq!(report_img["layers"][0]["status"], "reused");
    let code_digest = layers[0]["digest"].as_str().unwrap();

    // The manifest as the registry serves it: the parent's layers, unchanged
    // and in order, then exactly one gzip code layer; OCI media types.
    let manifest = skopeo_inspect_raw(&reference, PLAIN);
    let parent = skopeo_inspect_raw(bench.base_python(), PLAIN);
    assert_eq!(manifest["mediaType"], OCI_MANIFEST, "{manifest:#}");
    assert_eq!(manifest["schemaVersion"], 2);
    assert_eq!(manifest["config"]["mediaType"], OCI_CONFIG);
    let ours = manifest["layers"].as_array().unwrap();
    let theirs = parent["layers"].as_array().unwrap();
    assert_eq!(ours.len(), theirs.len() + 1, "{manifest:#}");
    assert_eq!(&ours[..theirs.len()], &theirs[..], "parent layers first");
    let code = &ours[theirs.len()];
    assert_eq!(code["mediaType"], OCI_GZIP_LAYER);
    assert_eq!(code["digest"], code_digest);
    assert_eq!(code["size"], layers[0]["size"]);
    assert_eq!(
        skopeo_inspect(&reference, PLAIN)["Digest"],
        pipeline["digest"],
        "the report's digest is the registry's"
    );
    assert!(
        pipeline["parent"]
            .as_str()
            .unwrap()
            .starts_with(&format!("{}/base/python@sha256:", bench.registry())),
        "{pipeline:#}"
    );

    // The config: the pipeline's environment on top of the parent's, the
    // workdir, kiln's labels, one diff ID per layer.
    let config = skopeo_inspect_config(&reference, PLAIN);
    let parent_config = skopeo_inspect_config(bench.base_python(), PLAIN);
    let env = strings(&config["config"]["Env"]);
    for want in ["PYTHONUNBUFFERED=1", "CODEONLY_GREETING=hello from kiln"] {
        assert!(env.contains(&want), "{want} not in {env:?}");
    }
    for inherited in strings(&parent_config["config"]["Env"]) {
        let key = inherited.split('=').next().unwrap();
        assert!(
            env.iter().any(|e| e.starts_with(&format!("{key}="))),
            "the parent's {key} was dropped: {env:?}"
        );
    }
    assert!(
        !env.iter().any(|e| e.starts_with("REPORT_FORMAT=")),
        "the report step's environment leaked into the pipeline image: {env:?}"
    );
    assert_eq!(config["config"]["WorkingDir"], "/app");
    assert_eq!(config["config"]["Labels"]["dev.kiln.pipeline"], "codeonly");
    assert_eq!(config["architecture"], "amd64");
    assert_eq!(config["os"], "linux");
    let diff_ids = config["rootfs"]["diff_ids"].as_array().unwrap();
    assert_eq!(diff_ids.len(), ours.len());
    assert_eq!(
        &diff_ids[..theirs.len()],
        parent_config["rootfs"]["diff_ids"]
            .as_array()
            .unwrap()
            .as_slice()
    );
    let report_config = skopeo_inspect_config(&format!("{repo}:codeonly-report"), PLAIN);
    let report_env = strings(&report_config["config"]["Env"]);
    assert!(
        report_env.contains(&"REPORT_FORMAT=text")
            && report_env.contains(&"CODEONLY_GREETING=hello from kiln"),
        "{report_env:?}"
    );

    // Pulled by skopeo into an OCI layout: the code layer's tar is owned by
    // root, mtime 0 (no SOURCE_DATE_EPOCH), under /app, without data/.
    let tmp = tempfile::tempdir().unwrap();
    let layout = tmp.path().join("layout");
    for tag in ["codeonly-pipeline", "codeonly-report"] {
        skopeo_copy(
            &format!("{repo}:{tag}"),
            &format!("oci:{}:{tag}", layout.display()),
            &["--src-tls-verify=false"],
        );
    }
    let blob = layout_blob(&layout, code_digest);
    let entries = gzip_layer_entries(&blob);
    for want in [
        "app/steps/produce.py",
        "app/steps/consume.py",
        "app/steps/report.py",
        "app/steps/shared.py",
        "app/kiln.yaml",
    ] {
        assert_eq!(
            entries.get(want).map(|e| e.kind),
            Some('f'),
            "{want}: {entries:#?}"
        );
    }
    assert_eq!(entries["app/steps"].kind, 'd');
    for (path, e) in &entries {
        assert!(
            path == "app" || path.starts_with("app/"),
            "{path} is outside /app"
        );
        assert!(
            !path.starts_with("app/data"),
            ".dockerignore'd {path} is in the layer"
        );
        assert_eq!((e.uid, e.gid, e.mtime), (0, 0, 0), "{path}: {e:?}");
    }
    assert_eq!(entries["app/steps/produce.py"].mode & 0o777, 0o644);
    // The diff ID is the digest of the uncompressed tar.
    let mut plain = Vec::new();
    flate2::read::MultiGzDecoder::new(&blob[..])
        .read_to_end(&mut plain)
        .unwrap();
    let sha = sha256_hex(&plain);
    assert_eq!(diff_ids.last().unwrap(), &format!("sha256:{sha}"));

    // Unpacked by umoci and run by runc: the steps exchange a file through
    // $KILN_RUN_DIR, the pipeline's environment is set, the workdir is /app.
    let bundle = tmp.path().join("bundle-pipeline");
    umoci_unpack(&layout, "codeonly-pipeline", &bundle);
    let rootfs = bundle.join("rootfs");
    for script in ["produce", "consume", "report", "shared"] {
        assert!(
            rootfs.join(format!("app/steps/{script}.py")).is_file(),
            "{script}.py"
        );
    }
    assert!(
        !rootfs.join("app/data").exists(),
        ".dockerignore'd data/ is in the image"
    );
    let out = runc_run(
        &bundle,
        &[
            "/usr/bin/env",
            "KILN_RUN_DIR=/tmp",
            "python3",
            "/app/steps/produce.py",
        ],
    );
    assert_eq!(
        (out.code, out.stdout.as_str()),
        (0, "produce: wrote 10 numbers\n"),
        "{}",
        out.stderr
    );
    let out = runc_run(
        &bundle,
        &[
            "/bin/sh",
            "-c",
            "export KILN_RUN_DIR=/tmp/run && python3 steps/produce.py && python3 steps/consume.py \
             && python3 steps/report.py && pwd",
        ],
    );
    assert_eq!(out.code, 0, "{}\n{}", out.stdout, out.stderr);
    assert_eq!(
        out.stdout,
        "produce: wrote 10 numbers\nconsume: sum=55\nreport (?): sum=55; hello from kiln\n/app\n"
    );

    // The report image runs with its step's own environment.
    let bundle = tmp.path().join("bundle-report");
    umoci_unpack(&layout, "codeonly-report", &bundle);
    let out = runc_run(
        &bundle,
        &[
            "/bin/sh",
            "-c",
            "export KILN_RUN_DIR=/tmp/run && python3 steps/produce.py >/dev/null \
             && python3 steps/consume.py >/dev/null && python3 steps/report.py",
        ],
    );
    assert_eq!(
        (out.code, out.stdout.as_str()),
        (0, "report (text): sum=55; hello from kiln\n"),
        "{}",
        out.stderr
    );
}

#[test]
fn step_builds_only_the_image_that_step_runs_in() {
    let (f, repo) = codeonly("step");
    let pipeline_tag = format!("{repo}:codeonly-pipeline");
    let report_tag = format!("{repo}:codeonly-report");

    let only_report = f.build_json(&["--step", "report"]);
    let images = only_report["images"].as_array().unwrap();
    assert_eq!(images.len(), 1, "{only_report:#}");
    assert_eq!(images[0]["name"], "report");
    assert_eq!(images[0]["steps"], json!(["report"]));
    assert!(tag_exists(&report_tag));
    assert!(
        !tag_exists(&pipeline_tag),
        "--step report also pushed the pipeline image"
    );

    // A step that shares the pipeline image: that image, with every step
    // that runs in it.
    let only_consume = f.build_json(&["--step", "consume"]);
    let images = only_consume["images"].as_array().unwrap();
    assert_eq!(images.len(), 1, "{only_consume:#}");
    assert_eq!(images[0]["name"], "pipeline");
    assert_eq!(images[0]["steps"], json!(["produce", "consume"]));
    assert_eq!(
        images[0]["layers"][0]["status"], "reused",
        "the code layer built for `report` is reused"
    );
    assert!(tag_exists(&pipeline_tag));

    // Everything: both images, each listing its steps; nothing new.
    let all = f.build_json(&[]);
    let steps: Vec<(String, Value)> = all["images"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| (i["name"].as_str().unwrap().to_owned(), i["steps"].clone()))
        .collect();
    assert_eq!(
        steps,
        [
            ("pipeline".to_owned(), json!(["produce", "consume"])),
            ("report".to_owned(), json!(["report"])),
        ]
    );
    assert_eq!(
        report_image(&all, "report")["digest"],
        report_image(&only_report, "report")["digest"]
    );
    assert_eq!(
        report_image(&all, "pipeline")["digest"],
        report_image(&only_consume, "pipeline")["digest"]
    );
    for image in all["images"].as_array().unwrap() {
        assert_eq!(image["uploaded"], 0, "{image:#}");
    }

    // The text output names each image with its steps.
    let out = f.kiln(&["build"]);
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert!(
        out.stdout.contains(&format!(
            "pipeline (produce, consume): {pipeline_tag}@sha256:"
        )),
        "{}",
        out.stdout
    );

    // A step that does not exist: an error naming the steps there are.
    let out = f.kiln(&["build", "--step", "nosuch"]);
    assert_ne!(out.code, 0);
    assert!(
        out.stderr.contains("nosuch") && out.stderr.contains("produce, consume, report"),
        "{}",
        out.stderr
    );
}

#[test]
fn source_date_epoch_sets_file_times_and_created() {
    let (mut f, repo) = codeonly("sde");
    f.set_env("SOURCE_DATE_EPOCH", "1700000000");
    let report = f.build_json(&["--step", "produce"]);
    let image = report_image(&report, "pipeline");
    let code_digest = image["layers"][0]["digest"].as_str().unwrap();
    let entries = gzip_layer_entries(&registry_blob(&repo, code_digest));
    assert!(entries.contains_key("app/steps/produce.py"), "{entries:#?}");
    for (path, e) in &entries {
        assert_eq!((e.uid, e.gid, e.mtime), (0, 0, 1_700_000_000), "{path}");
    }
    let config = skopeo_inspect_config(&format!("{repo}:codeonly-pipeline"), PLAIN);
    assert_eq!(config["created"], "2023-11-14T22:13:20Z", "{config:#}");

    // Without it, times are 0: a different layer, hence a different image.
    let (g, _) = codeonly("sde0");
    let plain = g.build_json(&["--step", "produce"]);
    assert_ne!(
        report_image(&plain, "pipeline")["layers"][0]["digest"],
        code_digest
    );
}

/// SHA-256 of `bytes` as hex, computed by coreutils (not kiln's code).
fn sha256_hex(bytes: &[u8]) -> String {
    use std::io::Write as _;
    let mut child = std::process::Command::new("sha256sum")
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdin = child.stdin.take().unwrap();
    let data = bytes.to_vec();
    let writer = std::thread::spawn(move || stdin.write_all(&data).unwrap());
    let out = child.wait_with_output().unwrap();
    writer.join().unwrap();
    String::from_utf8(out.stdout)
        .unwrap()
        .split_whitespace()
        .next()
        .unwrap()
        .to_owned()
}
