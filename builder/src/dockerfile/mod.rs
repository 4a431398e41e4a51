//! The Dockerfile frontend's pure half: text to instructions ([`parse`]),
//! and instructions to a build graph of stages and steps ([`evaluate`]).
//! Nothing here reads files or the network; the executor walks the graph.
//!
//! Why a parser of kiln's own: of the crates on crates.io, `dockerfile-parser`
//! (pest-based) has had no release in years, sits on old snafu and
//! lazy_static, and knows nothing of BuildKit flags; `parse-dockerfile` is
//! kept and reads the syntax (escape directive, heredocs) but hands back a
//! raw tree: no variable substitution, no checking of flags such as
//! `--mount`, and its own error wording. Both would need a checking and
//! substitution layer as large as the small lexer below, and kiln needs
//! errors that name the line and what was expected. So: a few hundred lines
//! of our own, following Docker's rules where it matters (directives,
//! continuations, comment lines inside continuations, JSON-or-shell forms,
//! `$VAR` substitution with quote handling) and BuildKit's where Docker's
//! classic builder has none: heredocs (`RUN <<EOF`, `COPY <<EOF /file`),
//! `RUN --mount` of every type but ssh, COPY/ADD's `--link`, `--parents`,
//! `--exclude`, `--checksum`, and `ADD <http(s) url>`.
//!
//! The graph says what those mean and the executor (`dfbuild`) does all of
//! it. Git sources (`ADD <repo>.git`), ADD `--keep-git-dir` and
//! `--mount=type=ssh` are refused here, with the line.

mod args;
mod error;
mod expand;
mod graph;
mod heredoc;
mod lines;
mod mount;
mod parse;
mod scope;
mod stage;
mod step;
mod syntax;
mod words;

pub(crate) use error::DockerfileError;
pub(crate) use expand::expand;
pub(crate) use graph::{
    Base, CacheSharing, ConfigChange, CopyFrom, InlineFile, RunMount, Step, StepKind,
};
pub(crate) use parse::parse;
pub(crate) use stage::{BaseImage, BuildGraph, EvalOptions, evaluate};
pub(crate) use syntax::{Dockerfile, SecretMount, ShellOrExec};

// What only the parser's tests name.
#[cfg(test)]
pub(crate) use parse::parse_onbuild_triggers;
#[cfg(test)]
pub(crate) use syntax::{Heredoc, InstructionKind, MountSpec};

#[cfg(test)]
mod tests;
