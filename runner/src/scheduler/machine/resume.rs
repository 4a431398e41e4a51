//! Rebuilding a scheduler from what an orchestrator finds after a restart
//! (step pods and their phases), so succeeded steps are not run again and
//! live ones are adopted rather than launched twice.

use std::cmp::Reverse;
use std::time::Duration;

use super::Scheduler;
use crate::scheduler::error::SchedulerError;
use crate::scheduler::event::Action;
use crate::scheduler::spec::{RunConfig, StepSpec};
use crate::scheduler::state::{StepFailure, StepState};

/// One attempt of one step as found after a restart: typically one per step
/// pod, read from its labels and phase.
#[derive(Debug, Clone, PartialEq)]
pub struct Observed {
    /// The step (index into the steps vector).
    pub step: usize,
    /// The attempt, from 1.
    pub attempt: u32,
    /// Where that attempt stands.
    pub state: ObservedState,
}

/// Where an observed attempt stands.
#[derive(Debug, Clone, PartialEq)]
pub enum ObservedState {
    /// Created, not running yet.
    Pending,
    /// Running.
    Running,
    /// Exited successfully.
    Succeeded,
    /// Failed.
    Failed {
        /// The exit code, if it exited.
        exit_code: Option<i32>,
        /// Why.
        reason: String,
        /// When it failed, in run time, if known (a pod's `finishedAt`):
        /// the retry then keeps its backoff delay instead of coming at once.
        at: Option<Duration>,
    },
}

impl ObservedState {
    fn is_terminal(&self) -> bool {
        matches!(
            self,
            ObservedState::Succeeded | ObservedState::Failed { .. }
        )
    }
}

impl Scheduler {
    /// A scheduler for a run already under way, from what was observed of
    /// it. Pass every attempt found, in any order: per step the latest
    /// attempt counts (an ended one over a live one of the same number).
    ///
    /// - a succeeded step stays succeeded and is not run again;
    /// - a pending or running attempt is adopted as live: it counts toward
    ///   `max_parallelism` and its events are expected;
    /// - a failed attempt with retries left is retried once its upstream
    ///   steps have succeeded, after its backoff delay counted from the
    ///   failure's time when that is known, at once when it is not;
    /// - a failed attempt with no retries left applies the failure policy
    ///   (downstream skipped; with `fail_fast`, live attempts cancelled).
    ///
    /// As with [`new`](Self::new), nothing launches before [`Event::Start`]
    /// (send it with the run time since the original start, so the timeout
    /// keeps counting from there). Actions decided here — skips, cancels —
    /// come out of that first call.
    ///
    /// [`Event::Start`]: crate::scheduler::Event::Start
    pub fn resume(
        steps: Vec<StepSpec>,
        config: RunConfig,
        observed: &[Observed],
    ) -> Result<Self, SchedulerError> {
        let mut sched = Scheduler::build(steps, config)?;
        let n = sched.steps.len();
        let mut latest: Vec<Option<&Observed>> = vec![None; n];
        // The latest failure per step, kept for `last_failure` even when a
        // later attempt is live or succeeded.
        let mut latest_failure: Vec<Option<&Observed>> = vec![None; n];
        for obs in observed {
            sched.check_step(obs.step)?;
            if obs.attempt == 0 {
                return Err(SchedulerError::AttemptZero {
                    step: sched.steps[obs.step].name.clone(),
                });
            }
            let slot = &mut latest[obs.step];
            let newer = match slot {
                None => true,
                Some(seen) => {
                    obs.attempt > seen.attempt
                        || (obs.attempt == seen.attempt
                            && obs.state.is_terminal()
                            && !seen.state.is_terminal())
                }
            };
            if newer {
                *slot = Some(obs);
            }
            if let ObservedState::Failed { .. } = obs.state {
                let slot = &mut latest_failure[obs.step];
                if slot.is_none_or(|seen| obs.attempt > seen.attempt) {
                    *slot = Some(obs);
                }
            }
        }
        for (step, obs) in latest_failure.iter().enumerate() {
            if let Some(Observed {
                attempt,
                state:
                    ObservedState::Failed {
                        exit_code, reason, ..
                    },
                ..
            }) = obs
            {
                sched.failures[step] = Some(StepFailure {
                    attempt: *attempt,
                    exit_code: *exit_code,
                    reason: reason.clone(),
                });
            }
        }

        let mut failed_for_good = Vec::new();
        let mut retry_at: Vec<Option<Duration>> = vec![None; n];
        for r in 0..n {
            let step = sched.order[r];
            let Some(obs) = latest[step] else { continue };
            let attempt = obs.attempt;
            sched.attempts[step] = attempt;
            match &obs.state {
                ObservedState::Pending => {
                    sched.states[step] = StepState::Pending { attempt };
                    sched.live += 1;
                }
                ObservedState::Running => {
                    sched.states[step] = StepState::Running { attempt };
                    sched.live += 1;
                }
                ObservedState::Succeeded => {
                    sched.set_terminal(step, StepState::Succeeded { attempt });
                    sched.unblock_downstream(step, false);
                }
                ObservedState::Failed { at, .. } => {
                    // With retries left it stays `Waiting` with `attempts`
                    // set, and backs off or becomes ready below.
                    let policy = sched.steps[step].retry;
                    if policy.allows_attempt_after(attempt) {
                        retry_at[step] =
                            at.map(|at| at.saturating_add(policy.delay_after(attempt)));
                    } else {
                        failed_for_good.push(step);
                    }
                }
            }
        }
        // In topological order, so a cascade from an upstream failure has
        // already retired a downstream one that also failed.
        for step in failed_for_good {
            if sched.states[step] == StepState::Waiting {
                sched.fail_for_good(step, sched.attempts[step]);
            }
        }
        if !sched.halted() {
            for r in 0..n {
                let step = sched.order[r];
                if sched.blocked_by[step] != 0 || sched.states[step] != StepState::Waiting {
                    continue;
                }
                match retry_at[step] {
                    Some(at) => {
                        let attempt = sched.attempts[step] + 1;
                        sched.states[step] = StepState::BackingOff { attempt, at };
                        sched.retries.push(Reverse((at, r)));
                        sched.out.push(Action::RetryAfter { step, attempt, at });
                    }
                    None => sched.make_ready(step),
                }
            }
        }
        Ok(sched)
    }
}
