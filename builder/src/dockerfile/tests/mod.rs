//! Unit tests of the Dockerfile frontend, one file per part.

mod eval;
mod expand;
mod heredoc;
mod parse;
mod testdata;

use super::{BuildGraph, DockerfileError, EvalOptions, evaluate, parse as parse_text};

/// Parses and evaluates with the given build args and target.
fn graph(
    src: &str,
    args: &[(&str, &str)],
    target: Option<&str>,
) -> Result<BuildGraph, DockerfileError> {
    let df = parse_text(src)?;
    let opts = EvalOptions {
        build_args: args
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect(),
        target: target.map(str::to_string),
        ..EvalOptions::default()
    };
    evaluate(&df, &opts)
}

/// The error's line and message, parse or evaluation.
fn fail(src: &str) -> (Option<usize>, String) {
    let e = graph(src, &[], None).unwrap_err();
    (e.line(), e.message())
}
