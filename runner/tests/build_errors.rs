//! `kiln build` given bad input: a bad image reference is a validation error
//! at file:line:column, a missing parent or an unreachable registry is a
//! clear error naming the registry, bad flag values are usage errors (exit
//! 2), and every error says each cause once and never panics.

#![allow(clippy::unwrap_used)] // test code: a failure is a test failure

use std::time::{Duration, Instant};

use kiln_testsupport::fixture::{Fixture, tag_exists};
use kiln_testsupport::{Bench, RunOutput};

const KILN: &str = env!("CARGO_BIN_EXE_kiln");

fn codeonly(name: &str) -> (Fixture, String) {
    Fixture::codeonly(KILN, name)
}

/// (line, column), 1-based, of the value of the first `key:` in the
/// fixture's kiln.yaml.
fn position_of_value(f: &Fixture, key: &str) -> (usize, usize) {
    let text = std::fs::read_to_string(f.root().join("kiln.yaml")).unwrap();
    text.lines()
        .enumerate()
        .find_map(|(i, line)| {
            let at = line.find(&format!("{key}:"))?;
            let after = at + key.len() + 1;
            let value = after + line[after..].len() - line[after..].trim_start().len();
            Some((i + 1, value + 1))
        })
        .unwrap_or_else(|| panic!("no {key}: in kiln.yaml:\n{text}"))
}

fn assert_failed_cleanly(out: &RunOutput, code: i32) {
    assert_eq!(out.code, code, "{}\n{}", out.stdout, out.stderr);
    assert!(!out.stderr.contains("panicked"), "{}", out.stderr);
    assert!(out.stdout.trim().is_empty(), "stdout: {}", out.stdout);
}

#[test]
fn a_bad_parent_image_reference_is_a_validation_error_at_its_position() {
    let (f, repo) = codeonly("err-ref");
    f.edit("kiln.yaml", |s| {
        s.replace(
            "parent_image: 127.0.0.1:5000/base/python:3.11-bookworm",
            "parent_image: Python:3.11",
        )
    });
    let (line, col) = position_of_value(&f, "parent_image");

    let out = f.kiln(&["build"]);
    assert_failed_cleanly(&out, 1);
    let want = format!("kiln.yaml:{line}:{col}: invalid image reference \"Python:3.11\"");
    assert!(
        out.stderr.contains(&want),
        "want {want:?} in:\n{}",
        out.stderr
    );

    // With --pipeline PATH the message names that path; --json changes
    // nothing (the error is not a report).
    let file = f.root().join("kiln.yaml");
    let out = f.kiln(&["build", "--json", "--pipeline", file.to_str().unwrap()]);
    assert_failed_cleanly(&out, 1);
    assert!(
        out.stderr
            .contains(&format!("{}:{line}:{col}: ", file.display())),
        "{}",
        out.stderr
    );
    assert!(!tag_exists(&format!("{repo}:codeonly-pipeline")));
}

#[test]
fn a_bad_target_repository_is_a_validation_error_at_its_position() {
    let (f, _) = codeonly("err-target");
    f.edit("kiln.yaml", |s| {
        let start = s.find("target_repository: ").unwrap();
        let end = start + s[start..].find('\n').unwrap();
        format!(
            "{}target_repository: 127.0.0.1:5000/Kiln-Test/UPPER{}",
            &s[..start],
            &s[end..]
        )
    });
    let (line, col) = position_of_value(&f, "target_repository");
    let out = f.kiln(&["build"]);
    assert_failed_cleanly(&out, 1);
    assert!(
        out.stderr.contains(&format!("kiln.yaml:{line}:{col}: ")),
        "want kiln.yaml:{line}:{col} in:\n{}",
        out.stderr
    );
    assert!(out.stderr.contains("Kiln-Test/UPPER"), "{}", out.stderr);
}

#[test]
fn a_parent_image_that_does_not_exist_is_not_found_on_its_registry() {
    let bench = Bench::get();
    for (what, parent) in [
        ("tag", "base/python:no-such-tag"),
        ("repository", "base/no-such-image:1"),
    ] {
        let (f, repo) = codeonly("err-noparent");
        f.edit("kiln.yaml", |s| {
            s.replace("base/python:3.11-bookworm", parent)
        });
        let out = f.kiln(&["build"]);
        assert_failed_cleanly(&out, 1);
        assert!(
            out.stderr.contains(bench.registry()) && out.stderr.contains("not found"),
            "{what}: {}",
            out.stderr
        );
        assert!(out.stderr.contains(parent), "{what}: {}", out.stderr);
        assert!(!tag_exists(&format!("{repo}:codeonly-pipeline")));
    }
}

#[test]
fn an_unreachable_registry_is_a_bounded_clear_error() {
    // Nothing listens on port 1 of the loopback interface.
    let (f, _) = codeonly("err-refused");
    f.edit("kiln.yaml", |s| {
        s.replace("127.0.0.1:5000/base/python", "127.0.0.1:1/base/python")
    });
    let started = Instant::now();
    let out = f.kiln(&["build"]);
    assert!(started.elapsed() < Duration::from_secs(60));
    assert_failed_cleanly(&out, 1);
    assert!(
        out.stderr.contains("127.0.0.1:1") && out.stderr.to_lowercase().contains("refused"),
        "{}",
        out.stderr
    );
}

#[test]
fn bad_flag_values_are_usage_errors() {
    let (f, _) = codeonly("err-usage");
    for (args, says) in [
        (
            &["build", "--output", "bogus:x"][..],
            "expected registry, oci:DIR or tar:FILE",
        ),
        (&["build", "--output", "oci:"][..], "oci:DIR"),
        (&["build", "--platform", "bogus"][..], "linux/amd64"),
        (
            &["build", "--platform", "linux/arm64,linux/amd64"][..],
            "names several platforms",
        ),
        (&["build", "--compression", "lz4"][..], "gzip"),
    ] {
        let out = f.kiln(args);
        // README: exit 2 is bad usage, like clap's own usage errors.
        assert_eq!(out.code, 2, "{args:?}: {}", out.stderr);
        assert!(out.stderr.contains(says), "{args:?}: {}", out.stderr);
        assert!(
            out.stderr.contains("--help") || out.stderr.contains("Usage"),
            "{args:?}: not a usage message: {}",
            out.stderr
        );
    }
}

#[test]
fn an_error_says_each_cause_once() {
    let (f, _) = codeonly("err-once");
    f.edit("kiln.yaml", |s| {
        s.replace("base/python:3.11-bookworm", "base/python:no-such-tag")
    });
    let out = f.kiln(&["build"]);
    assert_failed_cleanly(&out, 1);
    assert_eq!(
        out.stderr.matches("not found").count(),
        1,
        "the cause is repeated:\n{}",
        out.stderr
    );

    let out = f.kiln(&["build", "--pipeline", "/nonexistent/kiln.yaml"]);
    assert_failed_cleanly(&out, 1);
    assert_eq!(
        out.stderr.matches("No such file or directory").count(),
        1,
        "the cause is repeated:\n{}",
        out.stderr
    );
}

#[test]
fn kiln_yaml_paths_stay_in_the_project_symlinks_included() {
    // A host directory with something that must not leave the machine.
    let host = tempfile::tempdir().unwrap();
    std::fs::write(host.path().join("id_ed25519"), "HOST-PRIVATE-KEY-7f3a").unwrap();
    std::fs::write(host.path().join("passwd"), "root:x:0:0:HOST-PASSWD-9c1e").unwrap();
    let cases: [(&str, String, Option<&str>); 4] = [
        // (setting, value, a symlink in the project the value goes through)
        ("requirements", "../../../../etc/passwd".into(), None),
        ("source_root", host.path().display().to_string(), None),
        ("source_root", "code-link".into(), Some("code-link")),
        ("requirements", "reqs/passwd".into(), Some("reqs")),
    ];
    for (key, value, link) in cases {
        let (f, _) = codeonly(&format!("paths-{key}"));
        if let Some(link) = link {
            std::os::unix::fs::symlink(host.path(), f.root().join(link)).unwrap();
        }
        f.edit("kiln.yaml", |t| {
            t.replacen(
                "    environment:\n",
                &format!("    {key}: {value}\n    environment:\n"),
                1,
            )
        });
        let (line, column) = position_of_value(&f, key);
        for cmd in [&["validate"][..], &["build"][..]] {
            let out = f.kiln(cmd);
            assert_failed_cleanly(&out, 1);
            let all = format!("{}{}", out.stdout, out.stderr);
            assert!(
                all.contains(&format!("kiln.yaml:{line}:{column}: {key}: ")),
                "{cmd:?} {key}: {value}: no located error:\n{all}"
            );
            assert!(
                all.contains("outside the project") || all.contains("is absolute"),
                "{all}"
            );
            assert!(
                !all.contains("HOST-PRIVATE-KEY")
                    && !all.contains("HOST-PASSWD")
                    && !all.contains("root:x:"),
                "host content printed:\n{all}"
            );
        }
    }
}

#[test]
fn a_missing_dockerfile_or_context_is_said_before_any_work() {
    let (f, _) = codeonly("err-df-inputs");
    let out = f.kiln(&["build", "-f", "Nope", "-t", "127.0.0.1:1/x:y", "."]);
    assert_failed_cleanly(&out, 1);
    assert!(
        out.stderr.contains("Nope") && out.stderr.contains("no such Dockerfile"),
        "{}",
        out.stderr
    );
    assert!(!out.stderr.contains("writing"), "{}", out.stderr);
    std::fs::write(f.root().join("Dockerfile"), "FROM scratch\nCOPY x /\n").unwrap();
    let out = f.kiln(&[
        "build",
        "-f",
        "Dockerfile",
        "-t",
        "127.0.0.1:1/x:y",
        "no-such-dir",
    ]);
    assert_failed_cleanly(&out, 1);
    assert!(
        out.stderr
            .contains("the build context no-such-dir is not a directory"),
        "{}",
        out.stderr
    );
    assert!(!out.stderr.contains("walking"), "{}", out.stderr);
    assert!(!out.stderr.contains("building"), "{}", out.stderr);
}
