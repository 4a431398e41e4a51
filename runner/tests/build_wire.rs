//! `kiln build` as the registry sees it: every request goes through a
//! recording loopback proxy in front of the plain bench registry
//! (testsupport's `proxy`), so uploads are counted on the wire, and the
//! proxy misbehaves on cue (503s, a connection reset in the middle of an
//! upload, a registry that never recovers). Parent and target both go
//! through the proxy, so the parent's layers can be mounted across
//! repositories. Results are checked on the registry itself with skopeo.

#![allow(clippy::unwrap_used)] // test code: a failure is a test failure

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use kiln_testsupport::fixture::{Fixture, report_image, unique_repo};
use kiln_testsupport::proxy::{Outcome, Proxy, Request};
use kiln_testsupport::{Bench, skopeo, skopeo_copy, skopeo_inspect, skopeo_inspect_raw};
use serde_json::Value;

const KILN: &str = env!("CARGO_BIN_EXE_kiln");

/// A proxy in front of the bench registry, with the runtime it runs on.
struct Wire {
    proxy: Proxy,
    _runtime: tokio::runtime::Runtime,
}

impl Wire {
    fn start() -> Wire {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap();
        let proxy = runtime.block_on(Proxy::start(Bench::get().registry()));
        Wire {
            proxy,
            _runtime: runtime,
        }
    }

    /// testdata/codeonly with parent and target through the proxy; also
    /// returns the target repository's path (no registry).
    fn fixture(&self, name: &str) -> (Fixture, String) {
        let f = Fixture::copy(KILN, "codeonly");
        let repo = unique_repo(&self.proxy.registry(), name);
        f.point_at(&self.proxy.registry(), &repo);
        let path = repo.split_once('/').unwrap().1.to_owned();
        (f, path)
    }
}

/// A query parameter of a request, percent-decoded (`:` and `/` are all
/// registry clients escape in digests and repository names).
fn query_param(r: &Request, key: &str) -> Option<String> {
    let query = r.target.split_once('?')?.1;
    query.split('&').find_map(|kv| {
        let (k, v) = kv.split_once('=')?;
        (k == key).then(|| {
            v.replace("%3A", ":")
                .replace("%3a", ":")
                .replace("%2F", "/")
                .replace("%2f", "/")
        })
    })
}

/// The `digest=` of a request's query (a blob upload's final PUT).
fn query_digest(r: &Request) -> Option<String> {
    query_param(r, "digest")
}

/// Requests that send blob data or open an upload session: POSTs and PUTs
/// under `/blobs/uploads/` (cross-repository mounts counted separately),
/// and PATCHes.
fn upload_requests(requests: &[Request]) -> Vec<&Request> {
    requests
        .iter()
        .filter(|r| r.path().contains("/blobs/uploads/") && r.method != "GET")
        .collect()
}

/// Digests of the blobs whose upload the registry completed (final PUT
/// forwarded).
fn uploaded_digests(requests: &[Request]) -> Vec<String> {
    requests
        .iter()
        .filter(|r| {
            r.method == "PUT"
                && r.path().contains("/blobs/uploads/")
                && r.outcome == Outcome::Forwarded
        })
        .map(|r| query_digest(r).unwrap_or_else(|| panic!("upload PUT without digest: {r:?}")))
        .collect()
}

fn manifest_puts(requests: &[Request]) -> Vec<&Request> {
    requests.iter().filter(|r| r.is_manifest_put()).collect()
}

/// The manifest as the bench registry itself (not the proxy) serves it.
fn direct_manifest(path: &str, tag: &str) -> Value {
    skopeo_inspect_raw(
        &format!("{}/{path}:{tag}", Bench::get().registry()),
        &["--tls-verify=false"],
    )
}

fn direct_tag_exists(path: &str, tag: &str) -> bool {
    let reference = format!("docker://{}/{path}:{tag}", Bench::get().registry());
    skopeo(&["inspect", "--raw", "--tls-verify=false", &reference]).code == 0
}

fn digest_of(report: &Value, image: &str) -> String {
    report_image(report, image)["digest"]
        .as_str()
        .unwrap()
        .to_owned()
}

#[test]
fn a_rebuild_with_no_change_uploads_nothing_and_a_code_change_one_layer() {
    let wire = Wire::start();
    let proxy = &wire.proxy;
    let (f, path) = wire.fixture("wire-counts");
    let parent = skopeo_inspect_raw(Bench::get().base_python(), &["--tls-verify=false"]);
    let parent_layers: BTreeSet<String> = parent["layers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| l["digest"].as_str().unwrap().to_owned())
        .collect();

    // First build, one image: the parent's layers are mounted from the
    // parent's repository, never uploaded; the code layer and the config
    // are; one manifest.
    let first = f.build_json(&["--step", "produce"]);
    let requests = proxy.requests();
    let mounted: BTreeSet<String> = requests
        .iter()
        .filter(|r| r.is_mount())
        .map(|r| {
            assert_eq!(
                query_param(r, "from").as_deref(),
                Some("base/python"),
                "{r:?}"
            );
            query_param(r, "mount").unwrap()
        })
        .collect();
    assert_eq!(mounted, parent_layers, "{requests:#?}");
    let manifest = direct_manifest(&path, "codeonly-pipeline");
    let code = report_image(&first, "pipeline")["layers"][0]["digest"]
        .as_str()
        .unwrap()
        .to_owned();
    let config = manifest["config"]["digest"].as_str().unwrap().to_owned();
    let mut uploaded = uploaded_digests(&requests);
    uploaded.sort();
    let mut want = vec![code.clone(), config];
    want.sort();
    assert_eq!(uploaded, want, "{requests:#?}");
    assert_eq!(manifest_puts(&requests).len(), 1, "{requests:#?}");
    assert!(
        requests.iter().all(|r| r.outcome == Outcome::Forwarded),
        "{requests:#?}"
    );

    // No change: no upload of any kind, same manifest digest.
    proxy.clear();
    let again = f.build_json(&["--step", "produce"]);
    assert_eq!(digest_of(&again, "pipeline"), digest_of(&first, "pipeline"));
    let requests = proxy.requests();
    assert!(
        upload_requests(&requests).is_empty(),
        "a no-op rebuild uploaded: {requests:#?}"
    );
    assert_eq!(report_image(&again, "pipeline")["uploaded"], 0);

    // One code file changed: exactly one layer blob (the new code layer)
    // and the config are uploaded, and one manifest is put.
    f.edit("steps/consume.py", |s| format!("{s}# changed\n"));
    proxy.clear();
    let changed = f.build_json(&["--step", "produce"]);
    let requests = proxy.requests();
    let new_code = report_image(&changed, "pipeline")["layers"][0]["digest"]
        .as_str()
        .unwrap()
        .to_owned();
    assert_ne!(new_code, code);
    assert_ne!(
        digest_of(&changed, "pipeline"),
        digest_of(&first, "pipeline")
    );
    let manifest = direct_manifest(&path, "codeonly-pipeline");
    let new_config = manifest["config"]["digest"].as_str().unwrap().to_owned();
    let mut uploaded = uploaded_digests(&requests);
    uploaded.sort();
    let mut want = vec![new_code.clone(), new_config];
    want.sort();
    assert_eq!(uploaded, want, "{requests:#?}");
    assert_eq!(
        upload_requests(&requests)
            .iter()
            .filter(|r| r.method == "POST")
            .count(),
        2,
        "one upload session per blob: {requests:#?}"
    );
    assert!(
        !requests.iter().any(Request::is_mount),
        "the parent's layers are already there: {requests:#?}"
    );
    assert_eq!(manifest_puts(&requests).len(), 1, "{requests:#?}");
    assert_eq!(report_image(&changed, "pipeline")["uploaded"], 2);

    // The other image shares the code layer: only its config and manifest.
    proxy.clear();
    let all = f.build_json(&[]);
    let requests = proxy.requests();
    let report_manifest = direct_manifest(&path, "codeonly-report");
    assert_eq!(
        uploaded_digests(&requests),
        [report_manifest["config"]["digest"].as_str().unwrap()],
        "{requests:#?}"
    );
    // kiln puts every manifest it builds again (idempotent, like Kaniko and
    // Buildah), so the unchanged pipeline image's manifest may be put too.
    let puts: Vec<&str> = manifest_puts(&requests)
        .iter()
        .map(|r| r.path().rsplit('/').next().unwrap())
        .collect();
    assert!(
        puts.contains(&"codeonly-report") && puts.len() <= 2,
        "{requests:#?}"
    );
    assert_eq!(
        report_manifest["layers"]
            .as_array()
            .unwrap()
            .last()
            .unwrap()["digest"],
        new_code.as_str()
    );
    assert_eq!(report_image(&all, "pipeline")["uploaded"], 0);
}

#[test]
fn the_same_sources_at_two_paths_give_the_same_image() {
    let bench = Bench::get();
    let repo = unique_repo(bench.registry(), "wire-repro");
    let a = Fixture::copy(KILN, "codeonly");
    a.point_at(bench.registry(), &repo);
    let b = Fixture::copy(KILN, "codeonly");
    b.point_at(bench.registry(), &repo);
    assert_ne!(a.root(), b.root());
    // Different file times too: they must not reach the image.
    let status = std::process::Command::new("find")
        .arg(b.root())
        .args([
            "-exec",
            "touch",
            "-h",
            "-d",
            "2001-02-03 04:05:06",
            "{}",
            "+",
        ])
        .status()
        .unwrap();
    assert!(status.success());

    let ra = a.build_json(&[]);
    let rb = b.build_json(&[]);
    for image in ["pipeline", "report"] {
        assert_eq!(
            digest_of(&ra, image),
            digest_of(&rb, image),
            "{image}: same sources, fresh caches, different paths"
        );
        assert_eq!(
            report_image(&rb, image)["layers"][0]["status"],
            if image == "pipeline" {
                "built"
            } else {
                "reused"
            },
            "b's cache is its own"
        );
    }
    let inspected = skopeo_inspect(
        &format!("{repo}:codeonly-pipeline"),
        &["--tls-verify=false"],
    );
    assert_eq!(inspected["Digest"], digest_of(&ra, "pipeline").as_str());
}

#[test]
fn survives_three_503s_and_a_reset_in_the_middle_of_an_upload() {
    let wire = Wire::start();
    let proxy = &wire.proxy;
    let (f, path) = wire.fixture("wire-faults");
    proxy.fail_next(3, "");
    proxy.reset_next_upload();
    let started = Instant::now();
    let report = f.build_json(&["--step", "produce"]);
    assert!(
        started.elapsed() < Duration::from_secs(60),
        "{:?}",
        started.elapsed()
    );
    let requests = proxy.requests();
    let failed = requests
        .iter()
        .filter(|r| r.outcome == Outcome::Failed503)
        .count();
    assert_eq!(failed, 3, "{requests:#?}");
    let reset: Vec<&Request> = requests
        .iter()
        .filter(|r| r.outcome == Outcome::Reset)
        .collect();
    assert_eq!(reset.len(), 1, "no upload was reset: {requests:#?}");
    // The reset blob was uploaded again, completely.
    let reset_digest = query_digest(reset[0]);
    if let Some(d) = &reset_digest {
        assert!(
            uploaded_digests(&requests).contains(d),
            "{d} was not uploaded after the reset: {requests:#?}"
        );
    }

    // The registry itself holds the image the report names, and every blob
    // is intact: skopeo copies it out, verifying each digest.
    let digest = digest_of(&report, "pipeline");
    let direct = format!("{}/{path}:codeonly-pipeline", Bench::get().registry());
    let inspected = skopeo_inspect(&direct, &["--tls-verify=false"]);
    assert_eq!(inspected["Digest"], digest.as_str());
    let tmp = tempfile::tempdir().unwrap();
    skopeo_copy(
        &direct,
        &format!("oci:{}:t", tmp.path().join("layout").display()),
        &["--src-tls-verify=false"],
    );
    // A second build after the faults: nothing left to upload.
    proxy.clear();
    let again = f.build_json(&["--step", "produce"]);
    assert_eq!(digest_of(&again, "pipeline"), digest);
    assert!(upload_requests(&proxy.requests()).is_empty());
}

/// Exit 1 within a bounded time and number of requests, an error naming
/// the registry and the attempts, no panic.
fn assert_gave_up(out: &kiln_testsupport::RunOutput, proxy: &Proxy, elapsed: Duration) {
    assert_eq!(out.code, 1, "{}\n{}", out.stdout, out.stderr);
    assert!(
        out.stderr.contains(&proxy.registry()),
        "the error does not name the registry: {}",
        out.stderr
    );
    assert!(
        out.stderr.contains("gave up after") && out.stderr.contains("attempts"),
        "{}",
        out.stderr
    );
    assert!(out.stderr.contains("503"), "{}", out.stderr);
    assert!(!out.stderr.contains("panicked"), "{}", out.stderr);
    let n = proxy.requests().len();
    assert!(
        (2..200).contains(&n),
        "{n} requests: {:#?}",
        proxy.requests()
    );
    assert!(elapsed < Duration::from_secs(120), "{elapsed:?}");
}

#[test]
fn a_registry_that_always_answers_503_fails_the_build_and_creates_no_tag() {
    let wire = Wire::start();
    let proxy = &wire.proxy;
    let (f, path) = wire.fixture("wire-down");
    proxy.fail_always("");
    let started = Instant::now();
    let out = f.kiln(&["build"]);
    assert_gave_up(&out, proxy, started.elapsed());
    assert!(
        proxy
            .requests()
            .iter()
            .all(|r| r.outcome == Outcome::Failed503)
    );
    for tag in ["codeonly-pipeline", "codeonly-report"] {
        assert!(!direct_tag_exists(&path, tag), "{tag} exists");
    }
}

#[test]
fn a_target_that_always_answers_503_fails_the_push_and_creates_no_tag() {
    let wire = Wire::start();
    let proxy = &wire.proxy;
    let (f, path) = wire.fixture("wire-push-down");
    // The parent resolves; every request for the target repository fails.
    proxy.fail_always(&path);
    let started = Instant::now();
    let out = f.kiln(&["build", "--step", "produce"]);
    assert_gave_up(&out, proxy, started.elapsed());
    let requests = proxy.requests();
    assert!(
        requests
            .iter()
            .any(|r| r.outcome == Outcome::Forwarded && r.path().contains("/base/python/")),
        "the parent was not resolved: {requests:#?}"
    );
    assert!(
        requests
            .iter()
            .filter(|r| r.path().contains(&path))
            .all(|r| r.outcome == Outcome::Failed503),
        "{requests:#?}"
    );
    assert!(
        manifest_puts(&requests)
            .iter()
            .all(|r| r.outcome == Outcome::Failed503)
    );
    assert!(!direct_tag_exists(&path, "codeonly-pipeline"));
}
