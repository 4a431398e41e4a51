//! The scheduler's vocabulary: events a backend reports in, actions it is
//! asked to carry out. Steps are named by index into the steps vector and
//! attempts are numbered from 1, so a late event from an abandoned attempt
//! can be told apart from one about the current attempt.

use std::time::Duration;

/// Something a backend observed, or a request from the user or a timer.
///
/// Step events name the attempt they are about. An event about an attempt
/// that is no longer the step's live attempt (a watch replaying history, a
/// pod deleted after its startup timed out) is ignored, so backends can
/// forward what they see without filtering.
#[derive(Debug, Clone, PartialEq)]
pub enum Event {
    /// Begin the run: launch what is ready. Nothing launches before it, so
    /// a caller can build (or [`resume`](super::Scheduler::resume)) a
    /// scheduler and look at it first.
    Start,
    /// The attempt exists (pod created, process spawned) but is not running
    /// yet.
    Launched {
        /// The step.
        step: usize,
        /// The attempt the backend created.
        attempt: u32,
    },
    /// The attempt is running.
    Running {
        /// The step.
        step: usize,
        /// The attempt that runs.
        attempt: u32,
    },
    /// The attempt exited successfully.
    Succeeded {
        /// The step.
        step: usize,
        /// The attempt that succeeded.
        attempt: u32,
    },
    /// The attempt failed: non-zero exit, pod evicted, image pull error, or
    /// the backend could not create it at all.
    Failed {
        /// The step.
        step: usize,
        /// The attempt that failed.
        attempt: u32,
        /// The container's exit code, when it got as far as exiting.
        exit_code: Option<i32>,
        /// Why, for the user: "exit code 2", "OOMKilled", ...
        reason: String,
    },
    /// The attempt failed in a way another attempt cannot mend (its image
    /// cannot be pulled, its configuration names a missing Secret): the
    /// step fails for good whatever its retry policy says.
    Unrecoverable {
        /// The step.
        step: usize,
        /// The attempt that failed.
        attempt: u32,
        /// Why, for the user: "ErrImagePull: ...".
        reason: String,
    },
    /// The attempt stayed pending longer than `pod_startup_timeout`. Counts
    /// as a failed attempt with this reason; the scheduler also asks for the
    /// stuck attempt to be cancelled.
    PendingTooLong {
        /// The step.
        step: usize,
        /// The attempt that never started.
        attempt: u32,
        /// Why, for the user (e.g. the pod's last condition).
        reason: String,
    },
    /// The user asked the run to stop: gracefully (launch nothing more,
    /// let running steps end) or by force (cancel running steps too).
    StopRequested {
        /// Cancel running steps instead of waiting for them.
        force: bool,
    },
    /// A time the scheduler asked for (see [`Action::WakeAt`],
    /// [`Action::RetryAfter`], [`Scheduler::next_wake`]) has come.
    ///
    /// [`Scheduler::next_wake`]: super::Scheduler::next_wake
    TimerFired,
}

impl Event {
    /// The step an event is about, if any.
    pub fn step(&self) -> Option<usize> {
        match self {
            Event::Launched { step, .. }
            | Event::Running { step, .. }
            | Event::Succeeded { step, .. }
            | Event::Failed { step, .. }
            | Event::Unrecoverable { step, .. }
            | Event::PendingTooLong { step, .. } => Some(*step),
            Event::Start | Event::StopRequested { .. } | Event::TimerFired => None,
        }
    }
}

/// Something the backend must do. Actions of one call are in order: carry
/// them out in sequence (a `Cancel` comes before the `Finish` it leads to).
#[derive(Debug, Clone, PartialEq)]
pub enum Action {
    /// Start attempt `attempt` of `step` (create its pod, spawn its process).
    Launch {
        /// The step.
        step: usize,
        /// The attempt to start, from 1.
        attempt: u32,
    },
    /// Attempt `attempt` of `step` will be launched at `at` (or later, when
    /// parallelism allows). For the user's log and the run record; it is
    /// also a wake-up request: deliver [`Event::TimerFired`] at or after `at`.
    RetryAfter {
        /// The step.
        step: usize,
        /// The attempt that will come.
        attempt: u32,
        /// When, in run time.
        at: Duration,
    },
    /// Stop attempt `attempt` of `step` (delete its pod, kill its process).
    /// Either the step is now cancelled, or the attempt was abandoned after
    /// pending too long and the step may retry.
    Cancel {
        /// The step.
        step: usize,
        /// The attempt to stop.
        attempt: u32,
    },
    /// `step` will not run; record it as skipped.
    Skip {
        /// The step.
        step: usize,
        /// Why it will not run.
        because: SkipReason,
    },
    /// Deliver [`Event::TimerFired`] at or after `at` (run time): the next
    /// launch slot of `parallel_step_startup_waiting_period`, or the run's
    /// timeout.
    WakeAt {
        /// When, in run time.
        at: Duration,
    },
    /// Every step has reached its end; nothing more will be asked. Always
    /// the last action, emitted once.
    Finish {
        /// How the run ended.
        outcome: RunOutcome,
    },
}

/// Why a step was skipped (it never launched).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum SkipReason {
    /// An upstream step failed (possibly several levels up); `upstream` is
    /// the step that failed, so the message names the cause, not the chain.
    UpstreamFailed {
        /// The failed step.
        upstream: usize,
    },
    /// `fail_fast` is set and `failed` failed.
    FailFast {
        /// The failed step.
        failed: usize,
    },
    /// The run was stopped before the step could start.
    Stopped,
    /// The run timed out before the step could start.
    TimedOut,
}

/// How a run ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum RunOutcome {
    /// Every step succeeded.
    Succeeded,
    /// At least one step failed (and, with it, others may be skipped or
    /// cancelled).
    Failed,
    /// A stop was requested and not every step succeeded.
    Stopped {
        /// Whether running steps were cancelled (a force stop was asked).
        force: bool,
    },
    /// The run's timeout was reached.
    TimedOut,
}

impl RunOutcome {
    /// Whether the run counts as successful (exit code 0).
    pub fn is_success(self) -> bool {
        self == RunOutcome::Succeeded
    }
}
