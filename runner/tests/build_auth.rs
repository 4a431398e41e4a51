//! `kiln build` pushing to the bench's TLS + basic-auth registry
//! (127.0.0.1:5443, private CA) from a parent on the plain registry
//! (127.0.0.1:5000), so the parent's blobs are copied across registries;
//! credentials from docker's config.json or `--username` +
//! `--password-stdin`; wrong or missing credentials are a clear error that
//! never prints a password. Judged with skopeo.

#![allow(clippy::unwrap_used)] // test code: a failure is a test failure

use base64::Engine as _;
use kiln_testsupport::fixture::{Fixture, report_image, unique_repo};
use kiln_testsupport::{Bench, RunOutput, skopeo, skopeo_inspect, skopeo_inspect_raw};

const KILN: &str = env!("CARGO_BIN_EXE_kiln");
const WRONG: &str = "wrong-password-5c1e9a";

/// testdata/codeonly with its parent on the plain registry and its target
/// on the TLS one.
fn tls_fixture(name: &str) -> (Fixture, String) {
    let bench = Bench::get();
    let f = Fixture::copy(KILN, "codeonly");
    let repo = unique_repo(bench.tls_registry(), name);
    f.point_at(bench.registry(), &repo);
    (f, repo)
}

/// `$HOME/.docker/config.json` with `auths` for the TLS registry.
fn write_docker_config(f: &Fixture, password: &str) {
    let bench = Bench::get();
    f.write_docker_auth(bench.tls_registry(), bench.username(), password);
}

fn ca() -> String {
    Bench::get().ca_cert().to_str().unwrap().to_owned()
}

/// Fails with exit 1, naming the registry and an authentication failure,
/// and prints no password in any form.
fn assert_auth_failure(out: &RunOutput, passwords: &[&str]) {
    let bench = Bench::get();
    let all = format!("{}\n{}", out.stdout, out.stderr);
    assert_eq!(out.code, 1, "{all}");
    assert!(all.contains(bench.tls_registry()), "{all}");
    let lower = all.to_lowercase();
    assert!(
        all.contains("401") || lower.contains("authentication failed"),
        "{all}"
    );
    assert!(!all.contains("panicked"), "{all}");
    for password in passwords {
        let encoded = base64::engine::general_purpose::STANDARD
            .encode(format!("{}:{password}", bench.username()));
        assert!(
            !all.contains(password) && !all.contains(&encoded),
            "a password was printed:\n{all}"
        );
    }
}

fn tag_on_tls_registry(reference: &str) -> RunOutput {
    let bench = Bench::get();
    let mut args = vec!["inspect", "--raw"];
    args.extend(bench.tls_args());
    let image = format!("docker://{reference}");
    args.push(&image);
    skopeo(&args)
}

#[test]
fn pushes_to_the_tls_registry_with_docker_config_credentials() {
    let bench = Bench::get();
    let (f, repo) = tls_fixture("tls-config");
    write_docker_config(&f, bench.password());
    let report = f.build_json(&["--step", "produce", "--registry-ca", &ca()]);
    let image = report_image(&report, "pipeline");
    let reference = format!("{repo}:codeonly-pipeline");
    assert_eq!(image["reference"], reference.as_str());

    // skopeo, with the bench's credentials and CA, sees the image: the
    // parent's layers (copied from the other registry) and the code layer.
    let inspected = skopeo_inspect(&reference, &bench.tls_args());
    assert_eq!(inspected["Digest"], image["digest"]);
    let manifest = skopeo_inspect_raw(&reference, &bench.tls_args());
    let parent = skopeo_inspect_raw(bench.base_python(), &["--tls-verify=false"]);
    let layers = manifest["layers"].as_array().unwrap();
    let parent_layers = parent["layers"].as_array().unwrap();
    assert_eq!(layers.len(), parent_layers.len() + 1, "{manifest:#}");
    assert_eq!(&layers[..parent_layers.len()], &parent_layers[..]);
    // The parent's blobs really are on the TLS registry (a copy, since a
    // mount cannot cross registries): skopeo copies the image out.
    let tmp = tempfile::tempdir().unwrap();
    kiln_testsupport::skopeo_copy(
        &reference,
        &format!("oci:{}:t", tmp.path().join("layout").display()),
        &bench.tls_src_args(),
    );

    // No credentials at all: refused by the registry, said clearly.
    std::fs::remove_dir_all(f.home().join(".docker")).unwrap();
    let out = f.kiln(&["build", "--step", "report", "--registry-ca", &ca()]);
    assert_auth_failure(&out, &[bench.password()]);
    assert!(
        tag_on_tls_registry(&format!("{repo}:codeonly-report")).code != 0,
        "pushed without credentials"
    );
}

#[test]
fn a_wrong_password_in_docker_config_is_a_clear_error_without_secrets() {
    let bench = Bench::get();
    let (f, repo) = tls_fixture("tls-wrong");
    write_docker_config(&f, WRONG);
    let out = f.kiln(&["build", "--step", "produce", "--registry-ca", &ca()]);
    assert_auth_failure(&out, &[WRONG, bench.password()]);
    assert!(
        tag_on_tls_registry(&format!("{repo}:codeonly-pipeline")).code != 0,
        "a tag exists after a failed build"
    );
    // The same with --json: the error is on stderr, nothing leaks on stdout.
    let out = f.kiln(&[
        "build",
        "--json",
        "--step",
        "produce",
        "--registry-ca",
        &ca(),
    ]);
    assert_auth_failure(&out, &[WRONG, bench.password()]);
}

#[test]
fn password_stdin_right_and_wrong() {
    let bench = Bench::get();
    let (f, repo) = tls_fixture("tls-stdin");
    let args = [
        "build",
        "--step",
        "produce",
        "--registry-ca",
        &ca(),
        "--username",
        bench.username(),
        "--password-stdin",
    ];

    let out = f.kiln_with(&args, Some(&format!("{WRONG}\n")));
    assert_auth_failure(&out, &[WRONG, bench.password()]);
    assert!(tag_on_tls_registry(&format!("{repo}:codeonly-pipeline")).code != 0);

    // The explicit credentials win over a (wrong) docker config.
    write_docker_config(&f, WRONG);
    let out = f.kiln_with(&args, Some(&format!("{}\n", bench.password())));
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert!(
        !out.stdout.contains(bench.password()) && !out.stderr.contains(bench.password()),
        "the password was printed"
    );
    let inspected = tag_on_tls_registry(&format!("{repo}:codeonly-pipeline"));
    assert_eq!(inspected.code, 0, "{}", inspected.stderr);

    // Without --registry-ca the private CA is not trusted: a TLS error
    // naming the registry, not a silent fallback to plain HTTP.
    let out = f.kiln_with(
        &[
            "build",
            "--step",
            "report",
            "--username",
            bench.username(),
            "--password-stdin",
        ],
        Some(bench.password()),
    );
    let all = format!("{}\n{}", out.stdout, out.stderr);
    assert_eq!(out.code, 1, "{all}");
    assert!(all.contains(bench.tls_registry()), "{all}");
    assert!(
        all.to_lowercase().contains("certificate"),
        "the error does not say the certificate is the problem:\n{all}"
    );
    assert!(!all.contains(bench.password()));
}

#[test]
fn password_stdin_goes_to_the_push_registry_only_never_to_the_parents() {
    let bench = Bench::get();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    // The parent's registry wants its own robot's token.
    let proxy = rt.block_on(kiln_testsupport::proxy::Proxy::start(bench.registry()));
    proxy.require_bearer("parent-robot", "parent-pass-7d1e", "unused-refresh");
    let f = Fixture::copy(KILN, "codeonly");
    let repo = unique_repo(bench.tls_registry(), "scoped-creds");
    f.point_at(&proxy.registry(), &repo);
    f.write_docker_auth(&proxy.registry(), "parent-robot", "parent-pass-7d1e");
    let out = f.kiln_with(
        &[
            "build",
            "--step",
            "produce",
            "--registry-ca",
            &ca(),
            "--username",
            bench.username(),
            "--password-stdin",
        ],
        Some(bench.password()),
    );
    assert_eq!(out.code, 0, "{}\n{}", out.stdout, out.stderr);
    // Every token the parent's registry was asked for came with its own
    // robot's credentials: the target's password never went there.
    let tokens = proxy.token_requests();
    assert!(
        !tokens.is_empty() && tokens.iter().all(|t| t.granted),
        "{tokens:#?}"
    );
    assert_eq!(
        tag_on_tls_registry(&format!("{repo}:codeonly-pipeline")).code,
        0
    );
}
