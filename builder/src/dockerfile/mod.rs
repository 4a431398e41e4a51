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
//! `$VAR` substitution with quote handling).
//!
//! Heredocs (`RUN <<EOF`) and `ADD <url>` are refused with a clear error
//! rather than half-supported.

mod args;
mod error;
mod expand;
mod lines;
mod mount;
mod parse;
mod stage;
mod step;

pub use error::DockerfileError;
pub use expand::expand;
pub use parse::{
    CopyArgs, Dockerfile, Healthcheck, Instruction, InstructionKind, MountSpec, SecretMount,
    ShellOrExec, parse, parse_onbuild_triggers,
};
pub use stage::{BaseImage, BuildGraph, EvalOptions, evaluate};
pub use step::{Base, CacheSharing, ConfigChange, CopyFrom, RunMount, Stage, Step, StepKind};

#[cfg(test)]
mod tests;
