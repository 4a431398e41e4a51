//! Tests of the scheduler: one module per group of rules, a simulated
//! backend, and property tests that drive it with random DAGs and outcomes.

#![allow(clippy::unwrap_used)]

mod props;
mod resume;
mod rules;
mod sim;
mod stop;

use std::num::NonZeroUsize;
use std::time::Duration;

use super::*;

/// Seconds as run time.
fn secs(s: u64) -> Duration {
    Duration::from_secs(s)
}

/// Steps from `(name, upstream)` pairs, no retries.
fn steps(spec: &[(&str, &[usize])]) -> Vec<StepSpec> {
    spec.iter()
        .map(|(name, up)| StepSpec::new(*name, up.to_vec()))
        .collect()
}

/// The diamond a -> {b, c} -> d plus an independent step e.
fn diamond_and_e() -> Vec<StepSpec> {
    steps(&[
        ("a", &[]),
        ("b", &[0]),
        ("c", &[0]),
        ("d", &[1, 2]),
        ("e", &[]),
    ])
}

fn limit(n: usize) -> Option<NonZeroUsize> {
    NonZeroUsize::new(n)
}

/// A scheduler plus a clock, with shorthands for the events a test sends.
struct Harness {
    sched: Scheduler,
    now: Duration,
}

impl Harness {
    fn new(steps: Vec<StepSpec>, config: RunConfig) -> Self {
        Harness {
            sched: Scheduler::new(steps, config).unwrap(),
            now: Duration::ZERO,
        }
    }

    fn send(&mut self, event: Event) -> Vec<Action> {
        self.sched.handle(self.now, event).unwrap()
    }

    fn at(&mut self, now: Duration) -> &mut Self {
        self.now = now;
        self
    }

    fn start(&mut self) -> Vec<Action> {
        self.send(Event::Start)
    }

    /// The live attempt of `step`; panics if there is none.
    fn live(&self, step: usize) -> u32 {
        self.sched.states()[step]
            .live_attempt()
            .unwrap_or_else(|| panic!("step {step} is not live: {:?}", self.sched.states()[step]))
    }

    fn ok(&mut self, step: usize) -> Vec<Action> {
        let attempt = self.live(step);
        self.send(Event::Succeeded { step, attempt })
    }

    fn fail(&mut self, step: usize) -> Vec<Action> {
        let attempt = self.live(step);
        self.send(Event::Failed {
            step,
            attempt,
            exit_code: Some(1),
            reason: "exit code 1".into(),
        })
    }

    fn tick(&mut self, now: Duration) -> Vec<Action> {
        self.now = now;
        self.send(Event::TimerFired)
    }

    fn state(&self, step: usize) -> StepState {
        self.sched.states()[step]
    }
}

/// The steps launched by `actions`, in order.
fn launched(actions: &[Action]) -> Vec<usize> {
    actions
        .iter()
        .filter_map(|a| match a {
            Action::Launch { step, .. } => Some(*step),
            _ => None,
        })
        .collect()
}

/// The outcome of a `Finish` among `actions`, if there is one.
fn finish(actions: &[Action]) -> Option<RunOutcome> {
    actions.iter().find_map(|a| match a {
        Action::Finish { outcome } => Some(*outcome),
        _ => None,
    })
}
