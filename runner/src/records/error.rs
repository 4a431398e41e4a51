//! Why a run record could not be written or read.

use std::path::PathBuf;

use super::RunId;

/// An error of the run records.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum RecordsError {
    /// A file or directory of the records could not be made or opened.
    #[error("{}: {source}", path.display())]
    Io {
        /// The file or directory.
        path: PathBuf,
        /// What the system said.
        source: std::io::Error,
    },
    /// SQLite refused: the database is damaged, the disk is full, or
    /// another kiln held it for longer than the busy timeout.
    #[error("run records {}: {source}", path.display())]
    Sqlite {
        /// The database file.
        path: PathBuf,
        /// What SQLite said.
        source: rusqlite::Error,
    },
    /// The database was written by a newer kiln whose schema this one
    /// does not know; reading it could misread it.
    #[error(
        "run records {}: schema version {found} is newer than this kiln's {supported}; use a newer kiln",
        path.display()
    )]
    NewerSchema {
        /// The database file.
        path: PathBuf,
        /// Its `user_version`.
        found: i64,
        /// The newest version this kiln knows.
        supported: i64,
    },
    /// A stored value is not one this kiln writes (edited by hand, or
    /// damaged).
    #[error("run records: unexpected {what} `{value}`")]
    Corrupt {
        /// Which column.
        what: &'static str,
        /// The value found.
        value: String,
    },
    /// No run has this id or id prefix.
    #[error("no run `{given}`")]
    UnknownRun {
        /// The id or prefix given.
        given: String,
    },
    /// The prefix matches several runs.
    #[error("run prefix `{given}` matches several runs: {}", candidates.join(", "))]
    AmbiguousRun {
        /// The prefix given.
        given: String,
        /// The ids it matches.
        candidates: Vec<RunId>,
    },
    /// The run has no such step: a runner bug, since the runner named the
    /// steps when it created the run.
    #[error("run {run} has no step `{step}`")]
    UnknownStep {
        /// The run.
        run: RunId,
        /// The step given.
        step: String,
    },
    /// The step has no such attempt: ended before it started.
    #[error("step `{step}` of run {run} has no attempt {attempt}")]
    UnknownAttempt {
        /// The run.
        run: RunId,
        /// The step.
        step: String,
        /// The attempt given.
        attempt: u32,
    },
    /// Attempts are numbered from 1.
    #[error("step `{step}`: attempts are numbered from 1, got 0")]
    AttemptZero {
        /// The step.
        step: String,
    },
    /// A run id that cannot be a file name; ids are hex.
    #[error("`{given}` is not a run id")]
    BadRunId {
        /// The id given.
        given: String,
    },
    /// Another process already holds the run's lock: two kilns would run
    /// the same run.
    #[error("run {run} is already held by another kiln")]
    Locked {
        /// The run.
        run: RunId,
    },
    /// No free run id after many tries: the random source is broken.
    #[error("run records: no free run id found")]
    NoFreeId,
}
