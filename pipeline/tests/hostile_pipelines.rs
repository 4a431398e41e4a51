//! kiln.yaml as an attacker (or a generator gone wrong) writes it: a huge
//! but honest file reaches its real error at its last line, and no input —
//! every prefix of every test file, random YAML-shaped text, random bytes —
//! makes validation panic or answer without a location.

use std::path::Path;

use kiln_pipeline::{Pipeline, PipelineError};
use proptest::prelude::*;

/// Parses `text`; a panic fails the test, an error must be located.
fn judge(text: &str) {
    match Pipeline::parse(text, "kiln.yaml") {
        Ok(_) => {}
        Err(PipelineError::Invalid { diagnostics, .. }) => {
            assert!(!diagnostics.is_empty(), "no diagnostic for {text:?}");
            for d in &diagnostics {
                assert!(
                    d.line >= 1 && d.column >= 1,
                    "unlocated error {:?} for {text:?}",
                    d.message
                );
                for internal in [
                    "budget breached",
                    "DuplicateKeyPolicy",
                    "Option<",
                    "from_str_multiple",
                ] {
                    assert!(
                        !d.message.contains(internal),
                        "a parser internal in {:?}",
                        d.message
                    );
                }
            }
        }
        Err(other) => panic!("parse gave {other} for {text:?}"),
    }
}

#[test]
fn a_huge_honest_file_reaches_its_real_error_at_its_last_line() {
    // 200,000 steps: ten times the parser's default event budget.
    let steps = 200_000;
    let mut text = String::from("name: big\nsteps:\n");
    for i in 0..steps {
        text.push_str(&format!(
            "  - name: s{i}\n    command: [python3, steps/x.py]\n"
        ));
    }
    text.push_str("  - name: last\n    command: [true]\n    upstream: [nope]\n");
    let last_line = text.lines().count() as u64;
    let Err(PipelineError::Invalid { diagnostics, .. }) = Pipeline::parse(&text, "big.yaml") else {
        panic!("the unknown upstream is not reported");
    };
    assert_eq!(diagnostics.len(), 1, "{:?}", diagnostics.first());
    let d = &diagnostics[0];
    assert_eq!(d.line, last_line, "{}", d.message);
    assert!(
        d.message.contains("unknown upstream step \"nope\""),
        "{}",
        d.message
    );
    assert!(
        d.message.contains("and 199981 more"),
        "a bounded list: {}",
        d.message
    );
}

#[test]
fn no_prefix_of_any_test_pipeline_panics_or_goes_unlocated() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../testdata");
    let mut files = Vec::new();
    for dir in ["bad", "quickstart", "codeonly", "escape"] {
        for e in std::fs::read_dir(root.join(dir)).unwrap().flatten() {
            let p = e.path();
            if p.extension().is_some_and(|x| x == "yaml") {
                files.push(p);
            }
        }
    }
    assert!(files.len() > 20, "{files:?}");
    for f in files {
        let text = String::from_utf8_lossy(&std::fs::read(&f).unwrap()).into_owned();
        let mut cut = 0;
        while cut <= text.len() {
            if text.is_char_boundary(cut) {
                judge(&text[..cut]);
            }
            cut += 7;
        }
    }
}

/// YAML-shaped lines from kiln.yaml's own vocabulary, at random depths.
fn yamlish() -> impl Strategy<Value = String> {
    let key = prop_oneof![
        Just("name"),
        Just("steps"),
        Just("settings"),
        Just("docker"),
        Just("kubernetes"),
        Just("local"),
        Just("orchestrator"),
        Just("command"),
        Just("upstream"),
        Just("retry"),
        Just("max_retries"),
        Just("delay"),
        Just("apt_packages"),
        Just("requirements"),
        Just("environment"),
        Just("user"),
        Just("workdir"),
        Just("source_root"),
        Just("pod_settings"),
        Just("resources"),
        Just("schedule"),
        Just("cron_expression"),
        Just("- name"),
        Just("-"),
        Just("x"),
    ];
    let value = prop_oneof![
        Just("".to_string()),
        Just("a".to_string()),
        Just("[true]".to_string()),
        Just("[a, a]".to_string()),
        Just("~".to_string()),
        Just("null".to_string()),
        Just("1e20".to_string()),
        Just("-1".to_string()),
        Just("99999999999999999999".to_string()),
        Just("&a [x]".to_string()),
        Just("*a".to_string()),
        Just("{a: b}".to_string()),
        Just("\"\"".to_string()),
        Just("../../etc".to_string()),
        Just("/abs".to_string()),
        Just("---".to_string()),
        Just("|".to_string()),
        Just("'".to_string()),
        Just("\"\\x00\"".to_string()),
        Just("!!binary AA==".to_string()),
        Just("<<: *a".to_string()),
        "[a-z0-9 _.:/-]{0,12}",
    ];
    prop::collection::vec((0usize..4, key, value), 0..40).prop_map(|lines| {
        lines
            .into_iter()
            .map(|(depth, k, v)| format!("{}{k}: {v}\n", "  ".repeat(depth)))
            .collect()
    })
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

    #[test]
    fn random_yaml_shaped_text_never_panics_and_errors_are_located(text in yamlish()) {
        judge(&text);
    }

    #[test]
    fn random_text_never_panics_and_errors_are_located(text in "\\PC{0,300}") {
        judge(&text);
    }
}
