//! `kiln build --output oci:DIR` and `--output tar:FILE`: an OCI image
//! layout and an OCI archive that skopeo and umoci read and runc runs,
//! without pushing anything.

#![allow(clippy::unwrap_used)] // test code: a failure is a test failure

use std::path::Path;
use std::process::Command;

use kiln_testsupport::fixture::{Fixture, report_image};
use kiln_testsupport::{Bench, runc_run, skopeo, skopeo_inspect, skopeo_inspect_raw, umoci_unpack};
use serde_json::Value;

const KILN: &str = env!("CARGO_BIN_EXE_kiln");

fn codeonly(name: &str) -> (Fixture, String) {
    Fixture::codeonly(KILN, name)
}

fn nothing_pushed(repo: &str) {
    for tag in ["codeonly-pipeline", "codeonly-report"] {
        let reference = format!("docker://{repo}:{tag}");
        assert_ne!(
            skopeo(&["inspect", "--raw", "--tls-verify=false", &reference]).code,
            0,
            "{reference} was pushed by a build with --output"
        );
    }
}

fn parent_layers() -> Vec<Value> {
    let parent = skopeo_inspect_raw(Bench::get().base_python(), &["--tls-verify=false"]);
    parent["layers"].as_array().unwrap().clone()
}

/// Each image's `reference@digest` line is said once, not once per
/// progress event kind that ends an image.
#[test]
fn each_image_is_announced_once() {
    let (f, _repo) = codeonly("out-once");
    let layout = f.home().join("layout");
    let out = f.kiln(&["build", "--output", &format!("oci:{}", layout.display())]);
    assert_eq!(out.code, 0, "{}", out.stderr);
    for image in ["pipeline", "report"] {
        let prefix = format!("[{image}] oci:{}:", layout.display());
        let done = out
            .stderr
            .lines()
            .chain(out.stdout.lines())
            .filter(|l| l.starts_with(&prefix) && l.contains("@sha256:"))
            .count();
        assert_eq!(done, 1, "{image}:\n{}", out.stderr);
    }
}

#[test]
fn an_oci_layout_is_read_by_skopeo_and_umoci_and_runs() {
    let (f, repo) = codeonly("out-oci");
    let layout = f.home().join("layout");
    let report = f.build_json(&["--output", &format!("oci:{}", layout.display())]);
    nothing_pushed(&repo);
    assert!(layout.join("oci-layout").is_file());
    assert!(layout.join("index.json").is_file());

    let parent = parent_layers();
    for (image, tag) in [
        ("pipeline", "codeonly-pipeline"),
        ("report", "codeonly-report"),
    ] {
        let reference = format!("oci:{}:{tag}", layout.display());
        let inspected = skopeo_inspect(&reference, &[]);
        assert_eq!(inspected["Digest"], report_image(&report, image)["digest"]);
        let manifest = skopeo_inspect_raw(&reference, &[]);
        let layers = manifest["layers"].as_array().unwrap();
        assert_eq!(layers.len(), parent.len() + 1, "{manifest:#}");
        assert_eq!(&layers[..parent.len()], &parent[..]);
        assert_eq!(
            layers.last().unwrap()["digest"],
            report_image(&report, image)["layers"][0]["digest"]
        );
    }
    // Every blob a manifest names is in the layout, intact: skopeo copies
    // it into another layout, verifying each digest.
    let copy = f.home().join("copy");
    kiln_testsupport::skopeo_copy(
        &format!("oci:{}:codeonly-report", layout.display()),
        &format!("oci:{}:r", copy.display()),
        &[],
    );

    let bundle = f.home().join("bundle");
    umoci_unpack(&layout, "codeonly-report", &bundle);
    assert!(bundle.join("rootfs/app/steps/report.py").is_file());
    assert!(!bundle.join("rootfs/app/data").exists());
    let out = runc_run(
        &bundle,
        &[
            "/bin/sh",
            "-c",
            "export KILN_RUN_DIR=/tmp/run && python3 steps/produce.py && python3 steps/consume.py \
             && python3 steps/report.py",
        ],
    );
    assert_eq!(out.code, 0, "{}\n{}", out.stdout, out.stderr);
    assert_eq!(
        out.stdout,
        "produce: wrote 10 numbers\nconsume: sum=55\nreport (text): sum=55; hello from kiln\n"
    );

    // Building into the same layout again keeps one entry per tag.
    f.build_json(&["--output", &format!("oci:{}", layout.display())]);
    let index: Value =
        serde_json::from_str(&std::fs::read_to_string(layout.join("index.json")).unwrap()).unwrap();
    let mut tags: Vec<&str> = index["manifests"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| {
            m["annotations"]["org.opencontainers.image.ref.name"]
                .as_str()
                .unwrap()
        })
        .collect();
    tags.sort_unstable();
    assert_eq!(tags, ["codeonly-pipeline", "codeonly-report"]);
}

#[test]
fn an_oci_archive_is_read_by_skopeo_and_umoci() {
    let (f, repo) = codeonly("out-tar");
    let archive = f.home().join("image.tar");
    let report = f.build_json(&[
        "--step",
        "produce",
        "--output",
        &format!("tar:{}", archive.display()),
    ]);
    nothing_pushed(&repo);
    let inspected = skopeo_inspect(&format!("oci-archive:{}", archive.display()), &[]);
    assert_eq!(
        inspected["Digest"],
        report_image(&report, "pipeline")["digest"]
    );
    let manifest = skopeo_inspect_raw(&format!("oci-archive:{}", archive.display()), &[]);
    assert_eq!(
        manifest["layers"].as_array().unwrap().len(),
        parent_layers().len() + 1
    );

    // The archive is a tarred OCI layout: unpacked with tar, umoci reads it.
    let layout = f.home().join("from-archive");
    std::fs::create_dir(&layout).unwrap();
    let status = Command::new("tar")
        .arg("-xf")
        .arg(&archive)
        .arg("-C")
        .arg(&layout)
        .status()
        .unwrap();
    assert!(status.success());
    let tag = only_tag(&layout);
    let bundle = f.home().join("bundle");
    umoci_unpack(&layout, &tag, &bundle);
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

    // Two images do not fit one archive: a clear error, no archive.
    let other = f.home().join("two.tar");
    let out = f.kiln(&["build", "--output", &format!("tar:{}", other.display())]);
    assert_eq!(out.code, 1, "{}", out.stderr);
    assert!(
        out.stderr.contains("--step") && out.stderr.contains("oci:DIR"),
        "{}",
        out.stderr
    );
    assert!(!other.exists());
}

#[test]
fn zstd_layers_in_a_layout() {
    let (f, _) = codeonly("out-zstd");
    let layout = f.home().join("layout");
    let report = f.build_json(&[
        "--step",
        "produce",
        "--compression",
        "zstd",
        "--output",
        &format!("oci:{}", layout.display()),
    ]);
    let manifest = skopeo_inspect_raw(&format!("oci:{}:codeonly-pipeline", layout.display()), &[]);
    let code = manifest["layers"]
        .as_array()
        .unwrap()
        .last()
        .unwrap()
        .clone();
    assert_eq!(
        code["mediaType"],
        "application/vnd.oci.image.layer.v1.tar+zstd"
    );
    assert_eq!(
        code["digest"],
        report_image(&report, "pipeline")["layers"][0]["digest"]
    );
    let hex = code["digest"]
        .as_str()
        .unwrap()
        .strip_prefix("sha256:")
        .unwrap();
    let blob = std::fs::read(layout.join("blobs/sha256").join(hex)).unwrap();
    assert!(
        blob.starts_with(&[0x28, 0xb5, 0x2f, 0xfd]),
        "not a zstd frame"
    );
    // skopeo (not kiln) decompresses it: recompressed as gzip into another
    // layout, verifying digests, then unpacked by umoci.
    let gzip = f.home().join("gzip-layout");
    kiln_testsupport::skopeo_copy(
        &format!("oci:{}:codeonly-pipeline", layout.display()),
        &format!("oci:{}:g", gzip.display()),
        &["--dest-compress-format", "gzip", "--dest-compress"],
    );
    let bundle = f.home().join("bundle");
    umoci_unpack(&gzip, "g", &bundle);
    assert!(bundle.join("rootfs/app/steps/produce.py").is_file());
}

/// The one tag of an OCI layout's index.
fn only_tag(layout: &Path) -> String {
    let index: Value =
        serde_json::from_str(&std::fs::read_to_string(layout.join("index.json")).unwrap()).unwrap();
    let manifests = index["manifests"].as_array().unwrap();
    assert_eq!(manifests.len(), 1, "{index:#}");
    manifests[0]["annotations"]["org.opencontainers.image.ref.name"]
        .as_str()
        .unwrap_or_else(|| panic!("no ref.name annotation: {index:#}"))
        .to_owned()
}
