//! The step scheduler: a pure state machine shared by the local and the
//! Kubernetes backends. Events come in (attempt launched, running,
//! succeeded, failed, pending too long; stop requested; timer fired), each
//! with the run time as data; actions go out (launch, retry after, cancel,
//! skip, wake at, finish). No I/O and no clock, so every rule is tested
//! by feeding events.
//!
//! The rules follow ZenML's Kubernetes orchestrator:
//!
//! - a step launches only once every upstream step has succeeded; ready
//!   steps launch in topological (declaration-stable) order;
//! - at most `max_parallelism` steps are live (launched, not ended) at once;
//!   with a `startup_period`, at most one launch per period;
//! - a failed attempt is retried while `max_retries` allows, the k-th retry
//!   after `delay * backoff^(k - 1)`; pending too long counts as a failed
//!   attempt (and the stuck attempt is cancelled);
//! - a step that failed for good gets its downstream skipped, transitively;
//!   independent branches go on, unless `fail_fast` cancels live steps and
//!   launches nothing more;
//! - a graceful stop launches nothing more (steps not started are skipped,
//!   retries not yet made are dropped) and waits for live steps, which may
//!   still succeed or fail but are not retried; a force stop also cancels
//!   them;
//! - at the run timeout live steps are cancelled and the run times out.
//!
//! Every step ends in exactly one of succeeded, failed (it ran and will not
//! run again), skipped (it never launched) or cancelled (a live attempt was
//! stopped by the scheduler).

mod error;
mod event;
mod machine;
mod spec;
mod state;

#[cfg(test)]
mod tests;

pub use error::SchedulerError;
pub use event::{Action, Event, RunOutcome, SkipReason};
pub use machine::{Observed, ObservedState, Scheduler};
pub use spec::{RetryPolicy, RunConfig, StepSpec};
pub use state::{StepFailure, StepState, Summary, Terminal};
