//! The judges judged: the bench's registries, skopeo, umoci and runc agree
//! with each other on known-good images, so a failure in a kiln test points
//! at kiln, not at the bench.

use kiln_testsupport::{
    Bench, runc_run, skopeo, skopeo_copy, skopeo_inspect_config, skopeo_inspect_raw, umoci_unpack,
};
use std::path::Path;

/// Pulls `src` (on the plain registry) into an OCI layout under `dir` and
/// unpacks it; returns the bundle directory.
fn unpack_from_plain(src: &str, dir: &Path) -> std::path::PathBuf {
    let layout = dir.join("layout");
    let bundle = dir.join("bundle");
    skopeo_copy(
        src,
        &format!("oci:{}:latest", layout.display()),
        &["--src-tls-verify=false"],
    );
    umoci_unpack(&layout, "latest", &bundle);
    bundle
}

#[test]
fn busybox_round_trips_through_the_tls_registry_and_runs() {
    let bench = Bench::get();
    let pushed = format!(
        "docker://{}/testsupport/judges-busybox:latest",
        bench.tls_registry()
    );
    let copy_args = [&["--src-tls-verify=false"][..], &bench.tls_dest_args()].concat();
    skopeo_copy(bench.base_busybox(), &pushed, &copy_args);

    let manifest = skopeo_inspect_raw(&pushed, &bench.tls_args());
    assert_eq!(manifest["schemaVersion"], 2, "{manifest:#}");
    let layers = manifest["layers"].as_array().expect("layers");
    assert!(!layers.is_empty(), "{manifest:#}");
    for layer in layers {
        assert_eq!(
            layer["mediaType"], "application/vnd.oci.image.layer.v1.tar+gzip",
            "{manifest:#}"
        );
    }
    let config = skopeo_inspect_config(&pushed, &bench.tls_args());
    assert_eq!(config["config"]["Cmd"][0], "/bin/sh", "{config:#}");

    let tmp = tempfile::tempdir().unwrap();
    let layout = tmp.path().join("layout");
    skopeo_copy(
        &pushed,
        &format!("oci:{}:latest", layout.display()),
        &bench.tls_src_args(),
    );
    let bundle = tmp.path().join("bundle");
    umoci_unpack(&layout, "latest", &bundle);
    let out = runc_run(&bundle, &["/bin/sh", "-c", "echo ok"]);
    assert_eq!(out.code, 0, "{out:?}");
    assert_eq!(out.stdout, "ok\n", "{out:?}");
}

#[test]
fn tls_registry_rejects_a_wrong_password() {
    let bench = Bench::get();
    let image = format!(
        "docker://{}/testsupport/judges-busybox:latest",
        bench.tls_registry()
    );
    let wrong = format!("{}:not-the-password", bench.username());
    let out = skopeo(&[
        "inspect",
        "--creds",
        &wrong,
        "--cert-dir",
        bench.cert_dir(),
        &image,
    ]);
    assert_ne!(out.code, 0, "a wrong password was accepted: {out:?}");
    let stderr = out.stderr.to_lowercase();
    assert!(
        stderr.contains("401") || stderr.contains("unauthorized"),
        "expected 401/unauthorized: {out:?}"
    );

    let out = skopeo(&["inspect", "--cert-dir", bench.cert_dir(), &image]);
    assert_ne!(out.code, 0, "an anonymous request was accepted: {out:?}");
}

#[test]
fn runc_run_reports_exit_codes_and_both_streams() {
    let bench = Bench::get();
    let tmp = tempfile::tempdir().unwrap();
    let bundle = unpack_from_plain(bench.base_busybox(), tmp.path());

    let out = runc_run(&bundle, &["sh", "-c", "exit 3"]);
    assert_eq!(out.code, 3, "{out:?}");

    // The same bundle runs again (fresh container id, config rewritten).
    let out = runc_run(&bundle, &["sh", "-c", "echo out; echo err >&2; pwd"]);
    assert_eq!(out.code, 0, "{out:?}");
    assert_eq!(out.stdout, "out\n/\n", "{out:?}");
    assert_eq!(out.stderr, "err\n", "{out:?}");
}

#[test]
fn python_base_image_has_python_pip_venv_and_ca_bundle() {
    let bench = Bench::get();
    let config = skopeo_inspect_config(bench.base_python(), &["--tls-verify=false"]);
    assert_eq!(config["architecture"], "amd64", "{config:#}");
    assert_eq!(config["os"], "linux", "{config:#}");
    assert_eq!(config["config"]["Cmd"][0], "python3", "{config:#}");
    let env = config["config"]["Env"].as_array().expect("Env");
    assert!(env.iter().any(|e| e == "LANG=C.UTF-8"), "{config:#}");

    let tmp = tempfile::tempdir().unwrap();
    let bundle = unpack_from_plain(bench.base_python(), tmp.path());
    let out = runc_run(
        &bundle,
        &[
            "python3",
            "-c",
            "import sys, ssl, pip, venv; \
             print('%d.%d' % sys.version_info[:2]); \
             print(open(ssl.get_default_verify_paths().openssl_cafile or \
             '/etc/ssl/certs/ca-certificates.crt').read().count('BEGIN CERTIFICATE') > 10)",
        ],
    );
    assert_eq!(out.code, 0, "{out:?}");
    assert_eq!(out.stdout, "3.11\nTrue\n", "{out:?}");
}

#[test]
#[should_panic(expected = "runc could not run the container")]
fn runc_run_panics_when_runc_itself_fails() {
    let bench = Bench::get();
    let tmp = tempfile::tempdir().unwrap();
    let bundle = unpack_from_plain(bench.base_busybox(), tmp.path());
    runc_run(&bundle, &["/no/such/program"]);
}
