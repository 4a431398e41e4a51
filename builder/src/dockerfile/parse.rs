//! A Dockerfile's text to typed instructions ([`parse`]), and the ONBUILD
//! triggers a base image carries. Words are kept as written (quotes, `$VAR`
//! and escapes intact): substitution needs the scope, which only evaluation
//! knows.

use super::DockerfileError;
use super::args::{check_trigger, instruction};
use super::lines;
use super::syntax::{Dockerfile, Instruction, InstructionKind};

/// Parses a Dockerfile's text.
pub(crate) fn parse(src: &str) -> Result<Dockerfile, DockerfileError> {
    let lines = lines::split(src)?;
    let escape = lines.escape;
    let mut instructions = Vec::with_capacity(lines.items.len());
    for l in &lines.items {
        instructions.push(instruction(l, escape)?);
    }
    let Some(first) = instructions
        .iter()
        .find(|i| !matches!(i.kind, InstructionKind::Arg(_)))
    else {
        return Err(match instructions.first() {
            Some(i) => DockerfileError::at(i.line, "there is no FROM after the ARGs"),
            None => DockerfileError::Empty,
        });
    };
    if !matches!(first.kind, InstructionKind::From { .. }) {
        return Err(DockerfileError::at(
            first.line,
            "the first instruction must be FROM or ARG",
        ));
    }
    Ok(Dockerfile {
        escape,
        instructions,
    })
}

/// Parses ONBUILD triggers stored in a base image's config, for the
/// executor to run right after FROM (Docker's semantics). `line` is the
/// FROM's line, used for errors and the steps.
pub(crate) fn parse_onbuild_triggers(
    triggers: &[String],
    escape: char,
    line: usize,
) -> Result<Vec<Instruction>, DockerfileError> {
    triggers
        .iter()
        .map(|t| {
            let i = lines::trigger(t, escape, line)
                .and_then(|l| instruction(&l, escape))
                .map_err(|e| {
                    DockerfileError::at(line, format!("base image ONBUILD: {}", e.message()))
                })?;
            check_trigger(&i)?;
            Ok(i)
        })
        .collect()
}
