//! Errors of taking a snapshot.

use std::path::PathBuf;

/// Why a manifest or layer could not be produced.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SnapshotError {
    /// A filesystem operation (or writing the output) failed.
    #[error("{context} {path}: {source}")]
    Io {
        /// What was being done.
        context: &'static str,
        /// On which path (relative or host path).
        path: PathBuf,
        /// The error.
        #[source]
        source: std::io::Error,
    },
}

/// Result of snapshot operations.
pub type Result<T> = std::result::Result<T, SnapshotError>;

impl SnapshotError {
    pub(crate) fn io(
        context: &'static str,
        path: impl Into<PathBuf>,
        source: std::io::Error,
    ) -> Self {
        SnapshotError::Io {
            context,
            path: path.into(),
            source,
        }
    }
}
