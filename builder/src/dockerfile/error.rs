//! One error type for every way a Dockerfile can be wrong, so callers print
//! `Dockerfile:LINE: what was expected` and tests can match line and text.

/// Why a Dockerfile could not be parsed or evaluated; most variants carry
/// the 1-based line of the instruction so a user can go straight to it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub(crate) enum DockerfileError {
    /// A problem with one instruction (syntax, a flag, a reference).
    #[error("Dockerfile:{line}: {message}")]
    Line {
        /// 1-based line where the instruction starts.
        line: usize,
        /// 1-based column inside that line, when the instruction is on one
        /// line and the spot is known.
        column: Option<usize>,
        /// What was wrong or expected.
        message: String,
    },
    /// The file has no instructions at all.
    #[error("Dockerfile: no instructions; it needs at least a FROM")]
    Empty,
    /// `--target` names no stage.
    #[error("target stage {target:?} not found; the stages are: {stages}")]
    UnknownTarget {
        /// The target asked for.
        target: String,
        /// The stages there are, by name or index, comma-separated.
        stages: String,
    },
}

impl DockerfileError {
    /// An error at a line, without a column.
    pub(crate) fn at(line: usize, message: impl Into<String>) -> Self {
        Self::Line {
            line,
            column: None,
            message: message.into(),
        }
    }

    /// The line the error is about, if it is about one (the tests check
    /// it; users read it in the message).
    #[cfg(test)]
    pub(crate) fn line(&self) -> Option<usize> {
        match self {
            Self::Line { line, .. } => Some(*line),
            _ => None,
        }
    }

    /// The message without the `Dockerfile:LINE:` prefix.
    pub(crate) fn message(&self) -> String {
        match self {
            Self::Line { message, .. } => message.clone(),
            other => other.to_string(),
        }
    }
}
