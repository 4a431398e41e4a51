//! Every Dockerfile under testdata/dockerfiles: good ones parse and
//! evaluate; bad ones fail with exactly the line and text on their first
//! line (`# expect: LINE: message`).

use std::path::{Path, PathBuf};

use crate::dockerfile::{EvalOptions, evaluate, parse};

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../testdata/dockerfiles")
}

fn files() -> (Vec<PathBuf>, Vec<PathBuf>) {
    let mut good = Vec::new();
    let mut bad = Vec::new();
    for e in walkdir::WalkDir::new(root()).sort_by_file_name() {
        let e = e.unwrap();
        let name = e.file_name().to_string_lossy().to_string();
        if !(name == "Dockerfile" || name.ends_with(".Dockerfile")) {
            continue;
        }
        let p = e.into_path();
        if p.components().any(|c| c.as_os_str() == "bad") {
            bad.push(p);
        } else {
            good.push(p);
        }
    }
    (good, bad)
}

#[test]
fn dockerfile_testdata_good_ones_evaluate() {
    let (good, _) = files();
    assert!(good.len() >= 6, "{good:?}");
    for p in good {
        let text = std::fs::read_to_string(&p).unwrap();
        let df = parse(&text).unwrap_or_else(|e| panic!("{}: {e}", p.display()));
        let g = evaluate(&df, &EvalOptions::default())
            .unwrap_or_else(|e| panic!("{}: {e}", p.display()));
        assert_eq!(g.order.last(), Some(&g.target), "{}", p.display());
        assert!(
            g.warnings.iter().all(|w| w.contains("MAINTAINER")),
            "{}: {:?}",
            p.display(),
            g.warnings
        );
    }
}

#[test]
fn dockerfile_testdata_bad_ones_fail_as_expected() {
    let (_, bad) = files();
    assert!(bad.len() >= 5, "{bad:?}");
    for p in bad {
        let text = std::fs::read_to_string(&p).unwrap();
        let expect = text
            .lines()
            .next()
            .and_then(|l| l.strip_prefix("# expect: "))
            .unwrap();
        let (line, msg) = expect.split_once(": ").unwrap();
        let err = parse(&text)
            .and_then(|df| evaluate(&df, &EvalOptions::default()))
            .expect_err(&p.display().to_string());
        assert_eq!(
            err.line(),
            Some(line.parse().unwrap()),
            "{}: {err}",
            p.display()
        );
        assert_eq!(err.message(), msg, "{}", p.display());
        assert_eq!(err.to_string(), format!("Dockerfile:{expect}"));
    }
}

#[test]
fn dockerfile_testdata_shapes() {
    let read = |d: &str| {
        let text = std::fs::read_to_string(root().join(d).join("Dockerfile")).unwrap();
        evaluate(&parse(&text).unwrap(), &EvalOptions::default()).unwrap()
    };
    let g = read("copy-from");
    assert_eq!(g.order, vec![0, 1]);
    let g = read("args");
    assert_eq!(
        g.stages[0].base,
        crate::dockerfile::Base::Image {
            reference: "127.0.0.1:5000/base/busybox:latest".into(),
            platform: None
        }
    );
    use crate::dockerfile::{ConfigChange as C, StepKind};
    let env = |k: &str, v: &str| (k.to_string(), v.to_string());
    assert_eq!(
        g.stages[0].steps[0].kind,
        StepKind::Config(C::Env(vec![
            env("MODE", "plain"),
            env("SUFFIX", ""),
            env("LITERAL", "$TAG"),
            env("ESCAPED", "$TAG"),
        ]))
    );
    assert_eq!(
        g.stages[0].steps[1].kind,
        StepKind::Config(C::Workdir("/out/latest".into()))
    );
    assert!(root().join("copy-from/files.tar").is_file());
}
