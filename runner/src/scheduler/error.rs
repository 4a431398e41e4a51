//! Why a scheduler could not be built or an event could not be taken.
//!
//! Written by hand rather than with `thiserror`: the runner crate does not
//! depend on it yet, and four variants do not need it.

use std::fmt;

/// An error of the scheduler. Bad input from a backend, never a panic.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum SchedulerError {
    /// A step names an upstream index outside the steps vector.
    UnknownUpstream {
        /// The step that names it.
        step: String,
        /// The index it names.
        upstream: usize,
        /// How many steps there are.
        steps: usize,
    },
    /// The steps form a cycle: names in edge order, the first repeated last.
    Cycle {
        /// `a`, `b`, `a` for `a -> b -> a`.
        steps: Vec<String>,
    },
    /// An event or observation names a step index outside the steps vector.
    UnknownStep {
        /// The index given.
        step: usize,
        /// How many steps there are.
        steps: usize,
    },
    /// An observation names attempt 0; attempts are numbered from 1.
    AttemptZero {
        /// The step observed.
        step: String,
    },
}

impl fmt::Display for SchedulerError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SchedulerError::UnknownUpstream {
                step,
                upstream,
                steps,
            } => write!(
                f,
                "step `{step}` depends on step #{upstream}, but there are only {steps} steps"
            ),
            SchedulerError::Cycle { steps } => {
                write!(f, "the steps form a cycle: {}", steps.join(" -> "))
            }
            SchedulerError::UnknownStep { step, steps } => {
                write!(f, "no step #{step}: there are {steps} steps")
            }
            SchedulerError::AttemptZero { step } => {
                write!(f, "step `{step}`: attempts are numbered from 1, got 0")
            }
        }
    }
}

impl std::error::Error for SchedulerError {}
