//! Errors of loading and validating a pipeline file.

use std::fmt;
use std::path::PathBuf;

/// One problem in a pipeline file, at a line and column (1-based; 0 when the
/// position is unknown).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Diagnostic {
    /// 1-based line.
    pub line: u64,
    /// 1-based column.
    pub column: u64,
    /// What is wrong and what was expected.
    pub message: String,
}

impl Diagnostic {
    pub(crate) fn at(location: serde_saphyr::Location, message: impl Into<String>) -> Self {
        Self {
            line: location.line(),
            column: location.column(),
            message: message.into(),
        }
    }
}

/// Why a pipeline could not be loaded.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum PipelineError {
    /// The file could not be read.
    #[error("cannot read pipeline file {}: {source}", file.display())]
    Read {
        /// The pipeline file.
        file: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// The file was read but is not a valid pipeline.
    #[error("{}", render(file, diagnostics))]
    Invalid {
        /// The pipeline file.
        file: PathBuf,
        /// Every problem found, in file order.
        diagnostics: Vec<Diagnostic>,
    },
    /// A step name that the pipeline does not have.
    #[error("unknown step {name:?}; the pipeline has: {}", known.join(", "))]
    UnknownStep {
        /// The name asked for.
        name: String,
        /// The steps the pipeline has.
        known: Vec<String>,
    },
}

fn render(file: &std::path::Path, diagnostics: &[Diagnostic]) -> String {
    struct Lines<'a>(&'a std::path::Path, &'a [Diagnostic]);
    impl fmt::Display for Lines<'_> {
        fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            for (i, d) in self.1.iter().enumerate() {
                if i > 0 {
                    writeln!(f)?;
                }
                write!(
                    f,
                    "{}:{}:{}: {}",
                    self.0.display(),
                    d.line,
                    d.column,
                    d.message
                )?;
            }
            Ok(())
        }
    }
    Lines(file, diagnostics).to_string()
}

/// Convenience alias for this module's results.
pub type Result<T> = std::result::Result<T, PipelineError>;
