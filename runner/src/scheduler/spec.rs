//! What the scheduler is given: the steps with their edges and effective retry
//! policy, and the run-wide limits. Plain data, filled in by whoever resolved
//! `kiln.yaml`'s settings hierarchy; the scheduler never reads the file.

use std::num::NonZeroUsize;
use std::time::Duration;

/// One node of the DAG as the scheduler needs it.
#[derive(Debug, Clone, PartialEq)]
pub struct StepSpec {
    /// The step's name, used only in error messages: actions and events
    /// identify steps by their index in the steps vector.
    pub name: String,
    /// Indices (into the same steps vector) of the steps that must succeed
    /// before this one may start. Duplicates are harmless.
    pub upstream: Vec<usize>,
    /// The step's effective retry policy: step settings over pipeline
    /// settings over the orchestrator's `pod_failure_*` defaults, resolved
    /// by the caller so the scheduler has one rule to follow.
    pub retry: RetryPolicy,
}

impl StepSpec {
    /// A step with no retries; handy for tests and for callers that add the
    /// policy afterwards.
    pub fn new(name: impl Into<String>, upstream: Vec<usize>) -> Self {
        StepSpec {
            name: name.into(),
            upstream,
            retry: RetryPolicy::default(),
        }
    }
}

/// How often and how patiently a failed step is tried again (ZenML's
/// `StepRetryConfig` and the Kubernetes orchestrator's `pod_failure_*`).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RetryPolicy {
    /// Attempts after the first: a step runs at most `max_retries + 1` times.
    pub max_retries: u32,
    /// Wait before the first retry.
    pub delay: Duration,
    /// Factor applied to the wait after each retry: the k-th retry (attempt
    /// k + 1) waits `delay * backoff^(k - 1)`, as ZenML's step launcher does.
    pub backoff: f64,
}

impl Default for RetryPolicy {
    /// No retries: a failure is final.
    fn default() -> Self {
        RetryPolicy {
            max_retries: 0,
            delay: Duration::ZERO,
            backoff: 1.0,
        }
    }
}

impl RetryPolicy {
    /// Whether a step whose attempt `attempt` (1-based) just failed may run
    /// again.
    pub fn allows_attempt_after(&self, attempt: u32) -> bool {
        attempt <= self.max_retries
    }

    /// The wait before attempt `attempt + 1`, after attempt `attempt` failed.
    ///
    /// Total on any input, because the numbers come from a user's file: a
    /// negative or NaN backoff counts as 1, and a wait too large for
    /// `Duration` (an infinite backoff included) saturates instead of
    /// panicking.
    pub fn delay_after(&self, attempt: u32) -> Duration {
        let backoff = if self.backoff >= 0.0 {
            self.backoff
        } else {
            1.0
        };
        let exponent = i32::try_from(attempt.saturating_sub(1)).unwrap_or(i32::MAX);
        let secs = self.delay.as_secs_f64() * backoff.powi(exponent);
        if secs.is_nan() {
            // 0 * inf: no delay was asked for.
            return Duration::ZERO;
        }
        Duration::try_from_secs_f64(secs).unwrap_or(Duration::MAX)
    }
}

/// Run-wide limits (the orchestrator settings that shape scheduling).
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct RunConfig {
    /// Steps launched and not yet ended, at most; `None` means no limit.
    /// Non-zero by type: a limit of zero could never start anything.
    pub max_parallelism: Option<NonZeroUsize>,
    /// `parallel_step_startup_waiting_period`: when non-zero, at most one
    /// launch per period, so a cluster is not hit by a burst of pods.
    pub startup_period: Duration,
    /// Once a step has failed for good, cancel running steps and launch
    /// nothing more.
    pub fail_fast: bool,
    /// Run time after which running steps are cancelled and the run fails.
    /// `None` (and, as in `kiln.yaml`, zero) means no limit.
    pub timeout: Option<Duration>,
}

impl RunConfig {
    /// The timeout as a deadline in run time, zero read as "none".
    pub(crate) fn deadline(&self) -> Option<Duration> {
        self.timeout.filter(|t| !t.is_zero())
    }
}
