//! Where each step stands, as the scheduler sees it, and how it ended.

use std::time::Duration;

use super::event::SkipReason;

/// A step's place in its life cycle. Non-terminal states move forward only;
/// a terminal state never changes. Besides the arrows below, a stop, the
/// timeout or fail-fast ends any non-terminal state: live ones become
/// `Cancelled` (force) or are left to end, the others `Skipped` (never ran)
/// or `Failed` (ran, retry dropped).
///
/// ```text
/// Waiting -> Ready -> Launching -> Pending -> Running -> Succeeded
///    |         ^          \__________\__________\-----> Failed | Cancelled
///    |         |                                 \
///    |         +---------- BackingOff <-----------+ (attempt failed, retries left)
///    +--> Skipped
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StepState {
    /// Some upstream step has not succeeded yet.
    Waiting,
    /// Every upstream step succeeded; queued until parallelism and the
    /// startup period allow attempt `attempt`.
    Ready {
        /// The attempt that will be launched.
        attempt: u32,
    },
    /// [`Action::Launch`](super::Action::Launch) was emitted; the backend
    /// has not confirmed it yet.
    Launching {
        /// The live attempt.
        attempt: u32,
    },
    /// The backend created the attempt; it is not running yet.
    Pending {
        /// The live attempt.
        attempt: u32,
    },
    /// The attempt runs.
    Running {
        /// The live attempt.
        attempt: u32,
    },
    /// An attempt failed; attempt `attempt` becomes ready at `at`.
    BackingOff {
        /// The attempt that will come.
        attempt: u32,
        /// When it becomes ready, in run time.
        at: Duration,
    },
    /// Attempt `attempt` succeeded.
    Succeeded {
        /// The attempt that succeeded.
        attempt: u32,
    },
    /// Attempt `attempt` failed and no other will be made: retries are used
    /// up, or the run stopped, timed out or failed fast before the retry.
    Failed {
        /// The last attempt.
        attempt: u32,
    },
    /// The step never launched.
    Skipped {
        /// Why not.
        because: SkipReason,
    },
    /// The scheduler stopped live attempt `attempt` (force stop, fail-fast,
    /// timeout).
    Cancelled {
        /// The attempt that was stopped.
        attempt: u32,
    },
}

/// The four ways a step can end; every step of a finished run is in exactly
/// one of them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Terminal {
    /// It ran and succeeded.
    Succeeded,
    /// It ran and failed for good.
    Failed,
    /// It never ran.
    Skipped,
    /// It was stopped while running.
    Cancelled,
}

impl StepState {
    /// How the step ended, or `None` while it may still change.
    pub fn terminal(self) -> Option<Terminal> {
        match self {
            StepState::Succeeded { .. } => Some(Terminal::Succeeded),
            StepState::Failed { .. } => Some(Terminal::Failed),
            StepState::Skipped { .. } => Some(Terminal::Skipped),
            StepState::Cancelled { .. } => Some(Terminal::Cancelled),
            _ => None,
        }
    }

    /// The live attempt — launched and not ended — if there is one. Live
    /// attempts are what `max_parallelism` counts.
    pub fn live_attempt(self) -> Option<u32> {
        match self {
            StepState::Launching { attempt }
            | StepState::Pending { attempt }
            | StepState::Running { attempt } => Some(attempt),
            _ => None,
        }
    }
}

/// The last failure of a step, for messages and run records.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StepFailure {
    /// The attempt that failed.
    pub attempt: u32,
    /// Its exit code, if it exited.
    pub exit_code: Option<i32>,
    /// Why, as the backend put it.
    pub reason: String,
}

/// How many steps ended each way; the run record's one-line summary.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Summary {
    /// Steps that succeeded.
    pub succeeded: usize,
    /// Steps that failed for good.
    pub failed: usize,
    /// Steps that never ran.
    pub skipped: usize,
    /// Steps stopped while running.
    pub cancelled: usize,
}
