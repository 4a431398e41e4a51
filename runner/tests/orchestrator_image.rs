//! The orchestrator image (`kiln_runner::k8s::orchestrator_image`) built
//! from the kiln binary under test, pushed to the plain bench registry and
//! judged with skopeo, umoci and runc, never with kiln's own code:
//! entrypoint, command, platform, one gzip layer holding nothing but kiln,
//! its libraries, its loader and the few files a pod needs; `kiln --version`
//! really starts in that root; a second call uploads nothing and names the
//! same digest; and the same binary gives the same image in a fresh cache
//! and repository.

#![allow(clippy::too_many_lines)] // a test reads best as one list of steps
#![allow(clippy::unwrap_used)] // test code: a failure is a test failure

use std::future::Future;
use std::path::Path;
use std::sync::atomic::Ordering;
use std::time::Instant;

use kiln_oci::{Client, ClientOptions};
use kiln_runner::k8s::orchestrator_image::{
    OrchestratorImage, OrchestratorImageOptions, push_orchestrator_image,
};
use kiln_testsupport::fixture::unique_repo;
use kiln_testsupport::proxy::{Proxy, Request};
use kiln_testsupport::{
    Bench, runc_run, skopeo_copy, skopeo_inspect, skopeo_inspect_config, skopeo_inspect_raw,
    umoci_unpack,
};
use serde_json::{Value, json};

const KILN: &str = env!("CARGO_BIN_EXE_kiln");
const VERSION: &str = env!("CARGO_PKG_VERSION");
/// skopeo options for the plain-HTTP bench registry.
const PLAIN: &[&str] = &["--tls-verify=false"];

fn block_on<F: Future>(future: F) -> F::Output {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
        .block_on(future)
}

fn options(cache: &Path) -> OrchestratorImageOptions {
    OrchestratorImageOptions {
        binary: Some(KILN.into()),
        ..OrchestratorImageOptions::new(cache)
    }
}

/// (blob uploads, manifest pushes) the client made so far.
fn pushes(client: &Client) -> (usize, usize) {
    let c = client.counters();
    (
        c.blob_uploads.load(Ordering::Relaxed),
        c.manifest_pushes.load(Ordering::Relaxed),
    )
}

fn digest_of(reference: &str) -> &str {
    reference.split_once('@').unwrap().1
}

#[test]
fn orchestrator_image_runs_kiln_and_is_pushed_once() {
    let bench = Bench::get();
    let repo = unique_repo(bench.registry(), "orchestrator");
    let cache = tempfile::tempdir().unwrap();
    let client = Client::new(ClientOptions::default()).unwrap();

    // Cold: ldd, archive, gzip, upload.
    let started = Instant::now();
    let first = block_on(push_orchestrator_image(
        &client,
        &repo,
        &options(cache.path()),
    ))
    .unwrap();
    let cold = started.elapsed();
    assert!(first.uploaded);
    assert_eq!(
        pushes(&client),
        (2, 1),
        "the layer and the config, then the manifest"
    );
    let prefix = format!("kiln-orchestrator-{VERSION}-");
    let short = first.tag.strip_prefix(&prefix).unwrap_or_else(|| {
        panic!("tag {} does not start with {prefix}", first.tag);
    });
    assert_eq!(short.len(), 12);
    assert!(short.bytes().all(|b| b.is_ascii_hexdigit()));
    assert!(first.reference.starts_with(&format!("{repo}@sha256:")));

    // What the registry holds, seen by skopeo.
    let tagged = format!("{repo}:{}", first.tag);
    let summary = skopeo_inspect(&tagged, PLAIN);
    assert_eq!(summary["Digest"], digest_of(&first.reference));
    assert_eq!(summary["Architecture"], "amd64");
    assert_eq!(summary["Os"], "linux");
    let manifest = skopeo_inspect_raw(&first.reference, PLAIN);
    assert_eq!(
        manifest["mediaType"],
        "application/vnd.oci.image.manifest.v1+json"
    );
    let layers = manifest["layers"].as_array().unwrap();
    assert_eq!(layers.len(), 1, "one self-contained layer: {manifest}");
    assert_eq!(
        layers[0]["mediaType"],
        "application/vnd.oci.image.layer.v1.tar+gzip"
    );
    let layer_digest = layers[0]["digest"].as_str().unwrap();
    assert!(
        layer_digest.starts_with(&format!("sha256:{short}")),
        "the tag names the layer {layer_digest}"
    );
    let config = skopeo_inspect_config(&first.reference, PLAIN);
    assert_eq!(
        config["config"]["Entrypoint"],
        json!(["/usr/local/bin/kiln"])
    );
    assert_eq!(config["config"]["Cmd"], json!(["orchestrate"]));
    assert_eq!(
        config["config"]["Env"],
        json!(["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"])
    );
    assert!(
        config["config"]["User"]
            .as_str()
            .unwrap_or_default()
            .is_empty(),
        "{config}"
    );
    assert_eq!(config["architecture"], "amd64");
    assert_eq!(config["os"], "linux");

    // Unpacked by umoci and run by runc: kiln starts from that root alone.
    let work = tempfile::tempdir().unwrap();
    let layout = work.path().join("layout");
    let bundle = work.path().join("bundle");
    skopeo_copy(
        &first.reference,
        &format!("oci:{}:orchestrator", layout.display()),
        &["--src-tls-verify=false"],
    );
    umoci_unpack(&layout, "orchestrator", &bundle);
    let runtime: Value =
        serde_json::from_str(&std::fs::read_to_string(bundle.join("config.json")).unwrap())
            .unwrap();
    assert_eq!(
        runtime["process"]["args"],
        json!(["/usr/local/bin/kiln", "orchestrate"])
    );
    let rootfs = bundle.join("rootfs");
    assert!(
        std::fs::read(rootfs.join("usr/local/bin/kiln")).unwrap() == std::fs::read(KILN).unwrap(),
        "the image's kiln is the binary under test"
    );
    for dir in [
        "proc",
        "dev",
        "sys",
        "tmp",
        "etc",
        "var/run/secrets/kubernetes.io/serviceaccount",
    ] {
        assert!(rootfs.join(dir).is_dir(), "/{dir} missing");
    }
    let passwd = std::fs::read_to_string(rootfs.join("etc/passwd")).unwrap();
    assert!(passwd.contains("nobody:x:65534:65534:"), "{passwd}");
    let group = std::fs::read_to_string(rootfs.join("etc/group")).unwrap();
    assert!(group.contains("nobody:x:65534:"), "{group}");
    assert!(
        !rootfs.join("bin/sh").exists() && !rootfs.join("usr/bin").exists(),
        "nothing but kiln and its libraries: no shell, no user image"
    );
    let out = runc_run(&bundle, &["/usr/local/bin/kiln", "--version"]);
    assert_eq!(out.code, 0, "kiln --version in the image: {out:?}");
    assert_eq!(out.stdout, format!("kiln {VERSION}\n"));

    // Warm: the tag is there, nothing is built or uploaded.
    let before = pushes(&client);
    let started = Instant::now();
    let second = block_on(push_orchestrator_image(
        &client,
        &repo,
        &options(cache.path()),
    ))
    .unwrap();
    let warm = started.elapsed();
    assert!(!second.uploaded);
    let expected = OrchestratorImage {
        uploaded: false,
        ..first.clone()
    };
    assert_eq!(second, expected, "same reference and tag, nothing uploaded");
    assert_eq!(pushes(&client), before, "nothing pushed the second time");

    // A fresh cache: the layer is rebuilt bit for bit, so the same tag is
    // found and still nothing is uploaded.
    let cache2 = tempfile::tempdir().unwrap();
    let started = Instant::now();
    let third = block_on(push_orchestrator_image(
        &client,
        &repo,
        &options(cache2.path()),
    ))
    .unwrap();
    let rebuilt = started.elapsed();
    assert_eq!(third, second);
    assert_eq!(pushes(&client), before);

    // A fresh cache and a fresh repository: pushed again, same manifest.
    let cache3 = tempfile::tempdir().unwrap();
    let repo2 = unique_repo(bench.registry(), "orchestrator");
    let fourth = block_on(push_orchestrator_image(
        &client,
        &repo2,
        &options(cache3.path()),
    ))
    .unwrap();
    assert!(fourth.uploaded);
    assert_eq!(fourth.tag, first.tag);
    assert_eq!(digest_of(&fourth.reference), digest_of(&first.reference));

    let size = std::fs::metadata(KILN).unwrap().len();
    eprintln!(
        "orchestrator image of a {} MiB kiln: cold build+push {cold:?}, already there {warm:?}, \
         fresh cache (rebuild, tag found) {rebuilt:?}",
        size / (1024 * 1024)
    );
}

/// On the wire, through a recording proxy: the cold call uploads the layer
/// and the config and puts the manifest; a warm one is a single HEAD of the
/// tag's manifest.
#[test]
fn already_pushed_image_costs_one_head_request() {
    let proxy_runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let proxy = proxy_runtime.block_on(Proxy::start(Bench::get().registry()));
    let repo = unique_repo(&proxy.registry(), "orchestrator-wire");
    let path = repo.split_once('/').unwrap().1.to_owned();
    let cache = tempfile::tempdir().unwrap();
    let client = Client::new(ClientOptions::default()).unwrap();

    let first = block_on(push_orchestrator_image(
        &client,
        &repo,
        &options(cache.path()),
    ))
    .unwrap();
    assert!(first.uploaded);
    let cold = proxy.requests();
    let finished_uploads: Vec<&Request> = cold
        .iter()
        .filter(|r| r.is_blob_upload() && r.method == "PUT")
        .collect();
    assert_eq!(finished_uploads.len(), 2, "layer and config: {cold:#?}");
    assert_eq!(
        cold.iter().filter(|r| r.is_manifest_put()).count(),
        1,
        "{cold:#?}"
    );
    assert!(!cold.iter().any(Request::is_mount), "{cold:#?}");

    proxy.clear();
    let second = block_on(push_orchestrator_image(
        &client,
        &repo,
        &options(cache.path()),
    ))
    .unwrap();
    assert!(!second.uploaded);
    assert_eq!(second.reference, first.reference);
    let warm: Vec<(String, String)> = proxy
        .requests()
        .into_iter()
        .map(|r| (r.method, r.target))
        .collect();
    assert_eq!(
        warm,
        [(
            "HEAD".to_string(),
            format!("/v2/{path}/manifests/{}", first.tag)
        )]
    );
}
