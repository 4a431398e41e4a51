//! Run records: what `kiln run` did, kept in SQLite so that `kiln runs`
//! and `kiln logs` can show it (from another terminal, while it runs, or
//! days later) and a failed run can be retried.
//!
//! The running kiln writes through [`Records`] as the run goes (run
//! created, attempt started/ended, retry scheduled, step ended, run
//! finished) and holds the run's [`RunLock`]; readers open their own
//! [`Records`] on the same database. A run still marked `running` whose
//! lock nobody holds lost its kiln, and readers record it as
//! [`RunStatus::Interrupted`].
//!
//! A Kubernetes run is recorded the same way, plus where it lives
//! ([`ClusterRun`]); the cluster has its truth, and readers copy what it
//! says into the records ([`Records::record_observed`]) before showing
//! them. Its lock plays no part once it is submitted: the kiln that
//! submitted it may exit while it runs.

mod error;
mod lock;
mod model;
mod schema;
mod store;
mod time;

#[cfg(test)]
mod tests;

use std::ffi::OsString;
use std::path::PathBuf;

pub use error::RecordsError;
pub use lock::RunLock;
pub use model::{
    AttemptDetail, AttemptStatus, Backend, ClusterRun, NewRun, NewStep, ObservedAttempt,
    ObservedRun, ObservedStep, RunDetail, RunId, RunStatus, RunSummary, StepDetail, StepStatus,
};
pub use store::{INTERRUPTED_REASON, Records};
pub(crate) use time::serialize_opt_time;
pub use time::{format_rfc3339, format_utc};

/// Where the run records live: `$XDG_DATA_HOME/kiln`, else
/// `$HOME/.local/share/kiln` (the directory; the database is `runs.db` in
/// it). Data, not cache: records and logs are not to be pruned freely.
pub fn default_data_dir() -> Option<PathBuf> {
    data_dir_from(std::env::var_os("XDG_DATA_HOME"), std::env::var_os("HOME"))
}

/// [`default_data_dir`] from given variable values. A relative
/// `XDG_DATA_HOME` is ignored, as the XDG spec says.
fn data_dir_from(xdg_data_home: Option<OsString>, home: Option<OsString>) -> Option<PathBuf> {
    let absolute = |v: OsString| Some(PathBuf::from(v)).filter(|p| p.is_absolute());
    xdg_data_home
        .and_then(absolute)
        .or_else(|| home.and_then(absolute).map(|h| h.join(".local/share")))
        .map(|base| base.join("kiln"))
}
