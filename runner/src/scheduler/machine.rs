//! The state machine itself: per-step states and counters, a ready queue and
//! a retry queue, and one `handle` that turns an event into actions.
//!
//! Work per event is proportional to the degree of the step it is about
//! (plus a logarithm for the queues): downstream counters are decremented,
//! never recomputed, and nothing scans all steps — except the single wind
//! down of a stop, timeout or fail-fast, which happens at most a few times
//! per run.

mod resume;

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::time::Duration;

use kiln_pipeline::dag::topological_order;

pub use resume::{Observed, ObservedState};

use super::error::SchedulerError;
use super::event::{Action, Event, RunOutcome, SkipReason};
use super::spec::{RunConfig, StepSpec};
use super::state::{StepFailure, StepState, Summary};

/// Decides what runs when. Feed it [`Event`]s with the current run time;
/// carry out the [`Action`]s it returns. It does no I/O and reads no clock.
///
/// A driver loop, in outline:
///
/// ```
/// use std::time::Duration;
/// use kiln_runner::scheduler::{Action, Event, RunConfig, Scheduler, StepSpec};
///
/// let steps = vec![StepSpec::new("load", vec![]), StepSpec::new("train", vec![0])];
/// let mut sched = Scheduler::new(steps, RunConfig::default())?;
/// let mut inbox = vec![Event::Start];
/// while let Some(event) = inbox.pop() {
///     for action in sched.handle(Duration::ZERO, event)? {
///         if let Action::Launch { step, attempt } = action {
///             // A real backend starts a pod here and reports back later.
///             inbox.push(Event::Succeeded { step, attempt });
///         }
///     }
/// }
/// assert!(sched.outcome().is_some_and(|o| o.is_success()));
/// # Ok::<(), kiln_runner::scheduler::SchedulerError>(())
/// ```
#[derive(Debug, Clone)]
pub struct Scheduler {
    steps: Vec<StepSpec>,
    config: RunConfig,
    /// Downstream edges, compressed: the steps that depend on step `i` are
    /// `down[down_at[i]..down_at[i + 1]]`.
    down_at: Vec<usize>,
    down: Vec<usize>,
    /// `order[r]` is the step at position `r` of the topological order;
    /// `rank` is its inverse. Queues hold ranks, so ready steps launch in a
    /// stable, declaration-like order whatever order events came in.
    order: Vec<usize>,
    rank: Vec<usize>,

    states: Vec<StepState>,
    /// Attempts launched so far (observed ones included after a resume).
    attempts: Vec<u32>,
    /// Upstream steps that have not succeeded yet; zero means ready.
    blocked_by: Vec<usize>,
    failures: Vec<Option<StepFailure>>,

    /// Ranks of `Ready` steps.
    ready: BinaryHeap<Reverse<usize>>,
    /// (due time, rank) of `BackingOff` steps.
    retries: BinaryHeap<Reverse<(Duration, usize)>>,

    /// Steps with a live attempt.
    live: usize,
    /// Steps not in a terminal state.
    unfinished: usize,
    summary: Summary,

    started: bool,
    /// The latest time seen; time never runs backwards for the scheduler.
    now: Duration,
    last_launch: Option<Duration>,
    /// The last startup-slot wake-up asked for, so it is asked once.
    slot_wake: Option<Duration>,
    /// `Some(force)` once a stop was asked (force wins over graceful).
    stop: Option<bool>,
    timed_out: bool,
    failed_fast: bool,
    outcome: Option<RunOutcome>,
    /// Actions produced by the current call (or by `resume`, until the
    /// first call).
    out: Vec<Action>,
}

impl Scheduler {
    /// A scheduler for a fresh run. Fails if an upstream index is out of
    /// range or the steps form a cycle.
    pub fn new(steps: Vec<StepSpec>, config: RunConfig) -> Result<Self, SchedulerError> {
        let mut sched = Scheduler::build(steps, config)?;
        sched.enqueue_unblocked();
        Ok(sched)
    }

    /// Validates the graph and lays out the state, every step `Waiting`.
    fn build(mut steps: Vec<StepSpec>, config: RunConfig) -> Result<Self, SchedulerError> {
        let n = steps.len();
        for spec in &mut steps {
            if let Some(&bad) = spec.upstream.iter().find(|&&up| up >= n) {
                return Err(SchedulerError::UnknownUpstream {
                    step: spec.name.clone(),
                    upstream: bad,
                    steps: n,
                });
            }
            spec.upstream.sort_unstable();
            spec.upstream.dedup();
        }
        let upstream: Vec<Vec<usize>> = steps.iter().map(|s| s.upstream.clone()).collect();
        let order = topological_order(&upstream).map_err(|cycle| SchedulerError::Cycle {
            steps: cycle.0.iter().map(|&i| steps[i].name.clone()).collect(),
        })?;
        drop(upstream);

        let mut down_at = vec![0usize; n + 1];
        for spec in &steps {
            for &up in &spec.upstream {
                down_at[up + 1] += 1;
            }
        }
        for i in 0..n {
            down_at[i + 1] += down_at[i];
        }
        let mut next = down_at.clone();
        let mut down = vec![0usize; down_at[n]];
        for (step, spec) in steps.iter().enumerate() {
            for &up in &spec.upstream {
                down[next[up]] = step;
                next[up] += 1;
            }
        }
        let mut rank = vec![0usize; n];
        for (r, &step) in order.iter().enumerate() {
            rank[step] = r;
        }
        let blocked_by = steps.iter().map(|s| s.upstream.len()).collect();

        Ok(Scheduler {
            config,
            down_at,
            down,
            order,
            rank,
            states: vec![StepState::Waiting; n],
            attempts: vec![0; n],
            blocked_by,
            failures: vec![None; n],
            ready: BinaryHeap::new(),
            retries: BinaryHeap::new(),
            live: 0,
            unfinished: n,
            summary: Summary::default(),
            started: false,
            now: Duration::ZERO,
            last_launch: None,
            slot_wake: None,
            stop: None,
            timed_out: false,
            failed_fast: false,
            outcome: None,
            out: Vec::new(),
            steps,
        })
    }

    /// Takes one event at run time `now` (time since the run started; a
    /// `now` earlier than one already seen counts as that one) and returns
    /// what to do, in order.
    ///
    /// Events about attempts that are not live any more, and every event
    /// after the run finished, are ignored: they are normal with watches.
    /// The only error is a step index out of range — a backend bug.
    pub fn handle(&mut self, now: Duration, event: Event) -> Result<Vec<Action>, SchedulerError> {
        if let Some(step) = event.step() {
            self.check_step(step)?;
        }
        self.now = self.now.max(now);
        if self.outcome.is_none() {
            // Once the deadline has passed, what happened after it is moot.
            if !self.deadline_passed() {
                self.apply(event);
            }
            if self.deadline_passed() {
                self.time_out();
            } else {
                self.advance();
            }
            self.finish_if_done();
        }
        Ok(std::mem::take(&mut self.out))
    }

    fn check_step(&self, step: usize) -> Result<(), SchedulerError> {
        if step < self.steps.len() {
            Ok(())
        } else {
            Err(SchedulerError::UnknownStep {
                step,
                steps: self.steps.len(),
            })
        }
    }

    fn apply(&mut self, event: Event) {
        match event {
            Event::Start => {
                if !self.started {
                    self.started = true;
                    if let Some(at) = self.config.deadline().filter(|&at| at > self.now) {
                        self.out.push(Action::WakeAt { at });
                    }
                }
            }
            Event::Launched { step, attempt } => {
                if self.states[step] == (StepState::Launching { attempt }) {
                    self.states[step] = StepState::Pending { attempt };
                }
            }
            Event::Running { step, attempt } => {
                if let StepState::Launching { attempt: a } | StepState::Pending { attempt: a } =
                    self.states[step]
                    && a == attempt
                {
                    self.states[step] = StepState::Running { attempt };
                }
            }
            Event::Succeeded { step, attempt } => {
                if self.states[step].live_attempt() == Some(attempt) {
                    self.live -= 1;
                    self.set_terminal(step, StepState::Succeeded { attempt });
                    self.unblock_downstream(step, true);
                }
            }
            Event::Failed {
                step,
                attempt,
                exit_code,
                reason,
            } => {
                if self.states[step].live_attempt() == Some(attempt) {
                    self.fail_attempt(
                        step,
                        StepFailure {
                            attempt,
                            exit_code,
                            reason,
                        },
                    );
                }
            }
            Event::Unrecoverable {
                step,
                attempt,
                reason,
            } => {
                if self.states[step].live_attempt() == Some(attempt) {
                    self.live -= 1;
                    self.failures[step] = Some(StepFailure {
                        attempt,
                        exit_code: None,
                        reason,
                    });
                    self.fail_for_good(step, attempt);
                }
            }
            Event::PendingTooLong {
                step,
                attempt,
                reason,
            } => {
                if let StepState::Launching { attempt: a } | StepState::Pending { attempt: a } =
                    self.states[step]
                    && a == attempt
                {
                    self.out.push(Action::Cancel { step, attempt });
                    self.fail_attempt(
                        step,
                        StepFailure {
                            attempt,
                            exit_code: None,
                            reason,
                        },
                    );
                }
            }
            Event::StopRequested { force } => self.request_stop(force),
            Event::TimerFired => {}
        }
    }

    /// One live attempt ended badly: back off and retry if the policy and
    /// the run allow it, else the step has failed for good.
    fn fail_attempt(&mut self, step: usize, failure: StepFailure) {
        let attempt = failure.attempt;
        self.live -= 1;
        self.failures[step] = Some(failure);
        let policy = self.steps[step].retry;
        if !self.halted() && policy.allows_attempt_after(attempt) {
            let at = self.now.saturating_add(policy.delay_after(attempt));
            let next = attempt + 1;
            self.states[step] = StepState::BackingOff { attempt: next, at };
            self.retries.push(Reverse((at, self.rank[step])));
            self.out.push(Action::RetryAfter {
                step,
                attempt: next,
                at,
            });
        } else {
            self.fail_for_good(step, attempt);
        }
    }

    /// The failure policy: skip everything downstream; with `fail_fast`,
    /// wind the whole run down.
    fn fail_for_good(&mut self, step: usize, attempt: u32) {
        self.set_terminal(step, StepState::Failed { attempt });
        self.skip_downstream(step);
        if self.config.fail_fast && !self.failed_fast {
            self.failed_fast = true;
            self.wind_down(SkipReason::FailFast { failed: step }, true);
        }
    }

    /// Retires every step that waits, directly or not, on `failed`. Each
    /// step leaves `Waiting` once, so a whole run's cascades cost O(edges).
    fn skip_downstream(&mut self, failed: usize) {
        let because = SkipReason::UpstreamFailed { upstream: failed };
        let mut stack = vec![failed];
        while let Some(step) = stack.pop() {
            for k in self.down_at[step]..self.down_at[step + 1] {
                let down = self.down[k];
                if self.states[down] == StepState::Waiting {
                    self.retire(down, because);
                    stack.push(down);
                }
            }
        }
    }

    /// `step` succeeded: one fewer upstream to wait for, downstream.
    fn unblock_downstream(&mut self, step: usize, enqueue: bool) {
        for k in self.down_at[step]..self.down_at[step + 1] {
            let down = self.down[k];
            self.blocked_by[down] -= 1;
            if enqueue
                && self.blocked_by[down] == 0
                && self.states[down] == StepState::Waiting
                && !self.halted()
            {
                self.make_ready(down);
            }
        }
    }

    fn make_ready(&mut self, step: usize) {
        let attempt = self.attempts[step] + 1;
        self.states[step] = StepState::Ready { attempt };
        self.ready.push(Reverse(self.rank[step]));
    }

    /// Queues every waiting step with nothing left to wait for.
    fn enqueue_unblocked(&mut self) {
        if self.halted() {
            return;
        }
        for r in 0..self.order.len() {
            let step = self.order[r];
            if self.blocked_by[step] == 0 && self.states[step] == StepState::Waiting {
                self.make_ready(step);
            }
        }
    }

    /// Ends a step that has no live attempt and will get none: skipped if
    /// it never ran, failed (its last attempt's failure stands) if it did.
    fn retire(&mut self, step: usize, because: SkipReason) {
        match self.attempts[step] {
            0 => {
                self.set_terminal(step, StepState::Skipped { because });
                self.out.push(Action::Skip { step, because });
            }
            attempt => self.set_terminal(step, StepState::Failed { attempt }),
        }
    }

    fn set_terminal(&mut self, step: usize, state: StepState) {
        debug_assert!(self.states[step].terminal().is_none());
        self.states[step] = state;
        self.unfinished -= 1;
        match state {
            StepState::Succeeded { .. } => self.summary.succeeded += 1,
            StepState::Failed { .. } => self.summary.failed += 1,
            StepState::Skipped { .. } => self.summary.skipped += 1,
            _ => self.summary.cancelled += 1,
        }
    }

    fn request_stop(&mut self, force: bool) {
        match self.stop {
            Some(true) => return,
            Some(false) if !force => return,
            _ => {}
        }
        self.stop = Some(force);
        self.wind_down(SkipReason::Stopped, force);
    }

    fn time_out(&mut self) {
        self.timed_out = true;
        self.wind_down(SkipReason::TimedOut, true);
    }

    /// Launches nothing more: cancels live attempts if asked, then retires
    /// every step that is not live, in topological order. The only scan of
    /// all steps, done once per stop, timeout or fail-fast.
    fn wind_down(&mut self, because: SkipReason, cancel_live: bool) {
        self.ready.clear();
        self.retries.clear();
        if cancel_live {
            for r in 0..self.order.len() {
                let step = self.order[r];
                if let Some(attempt) = self.states[step].live_attempt() {
                    self.live -= 1;
                    self.set_terminal(step, StepState::Cancelled { attempt });
                    self.out.push(Action::Cancel { step, attempt });
                }
            }
        }
        for r in 0..self.order.len() {
            let step = self.order[r];
            if let StepState::Waiting | StepState::Ready { .. } | StepState::BackingOff { .. } =
                self.states[step]
            {
                self.retire(step, because);
            }
        }
    }

    fn halted(&self) -> bool {
        self.stop.is_some() || self.timed_out || self.failed_fast
    }

    fn deadline_passed(&self) -> bool {
        self.started && !self.timed_out && self.config.deadline().is_some_and(|at| self.now >= at)
    }

    /// Moves due retries to the ready queue and launches what the limits
    /// allow.
    fn advance(&mut self) {
        if !self.started || self.halted() {
            return;
        }
        while let Some(&Reverse((at, r))) = self.retries.peek() {
            if at > self.now {
                break;
            }
            self.retries.pop();
            let step = self.order[r];
            if let StepState::BackingOff { attempt, .. } = self.states[step] {
                self.states[step] = StepState::Ready { attempt };
                self.ready.push(Reverse(r));
            }
        }
        while let Some(&Reverse(r)) = self.ready.peek() {
            if self.parallelism_full() {
                break;
            }
            if let Some(slot) = self.next_slot() {
                if self.slot_wake != Some(slot) {
                    self.slot_wake = Some(slot);
                    self.out.push(Action::WakeAt { at: slot });
                }
                break;
            }
            self.ready.pop();
            let step = self.order[r];
            if let StepState::Ready { attempt } = self.states[step] {
                self.states[step] = StepState::Launching { attempt };
                self.attempts[step] = attempt;
                self.live += 1;
                self.last_launch = Some(self.now);
                self.out.push(Action::Launch { step, attempt });
            }
        }
    }

    fn parallelism_full(&self) -> bool {
        self.config
            .max_parallelism
            .is_some_and(|max| self.live >= max.get())
    }

    /// The next startup slot, if the startup period keeps a launch from
    /// happening now.
    fn next_slot(&self) -> Option<Duration> {
        if self.config.startup_period.is_zero() {
            return None;
        }
        let slot = self.last_launch?.saturating_add(self.config.startup_period);
        (slot > self.now).then_some(slot)
    }

    fn finish_if_done(&mut self) {
        if self.outcome.is_some() || self.unfinished > 0 || !(self.started || self.halted()) {
            return;
        }
        let outcome = if self.timed_out {
            RunOutcome::TimedOut
        } else if self.summary.succeeded == self.steps.len() {
            RunOutcome::Succeeded
        } else if let Some(force) = self.stop {
            RunOutcome::Stopped { force }
        } else {
            RunOutcome::Failed
        };
        self.outcome = Some(outcome);
        self.out.push(Action::Finish { outcome });
    }

    /// The steps, as given, with each `upstream` sorted and deduplicated.
    pub fn steps(&self) -> &[StepSpec] {
        &self.steps
    }

    /// The run-wide limits in force.
    pub fn config(&self) -> &RunConfig {
        &self.config
    }

    /// Every step's state, indexed like [`steps`](Self::steps).
    pub fn states(&self) -> &[StepState] {
        &self.states
    }

    /// One step's state; `None` for an index out of range.
    pub fn state(&self, step: usize) -> Option<StepState> {
        self.states.get(step).copied()
    }

    /// Attempts of `step` launched so far (0 for an unknown step).
    pub fn attempts(&self, step: usize) -> u32 {
        self.attempts.get(step).copied().unwrap_or(0)
    }

    /// The most recent failure of `step`, for messages: kept after a retry
    /// succeeds, so a run record can say "succeeded on attempt 2 after ...".
    pub fn last_failure(&self, step: usize) -> Option<&StepFailure> {
        self.failures.get(step)?.as_ref()
    }

    /// The steps that depend directly on `step`.
    pub fn downstream(&self, step: usize) -> &[usize] {
        match (self.down_at.get(step), self.down_at.get(step + 1)) {
            (Some(&from), Some(&to)) => &self.down[from..to],
            _ => &[],
        }
    }

    /// Steps with a live attempt (launched, not ended): what
    /// `max_parallelism` bounds.
    pub fn live(&self) -> usize {
        self.live
    }

    /// How many steps ended each way so far.
    pub fn summary(&self) -> Summary {
        self.summary
    }

    /// How the run ended, once it has.
    pub fn outcome(&self) -> Option<RunOutcome> {
        self.outcome
    }

    /// Whether [`Action::Finish`] has been emitted.
    pub fn is_finished(&self) -> bool {
        self.outcome.is_some()
    }

    /// The earliest run time at which [`Event::TimerFired`] would change
    /// something: a retry falling due, a startup slot, the timeout. A driver
    /// may arm one timer with this after every call instead of tracking
    /// `WakeAt`/`RetryAfter` actions.
    pub fn next_wake(&self) -> Option<Duration> {
        if self.outcome.is_some() || !self.started {
            return None;
        }
        let mut next = self.config.deadline().filter(|_| !self.timed_out);
        if !self.halted() {
            let mut consider = |at: Duration| next = Some(next.map_or(at, |n| n.min(at)));
            if let Some(Reverse((at, _))) = self.retries.peek() {
                consider(*at);
            }
            if !self.ready.is_empty()
                && !self.parallelism_full()
                && let Some(slot) = self.next_slot()
            {
                consider(slot);
            }
        }
        next
    }
}
