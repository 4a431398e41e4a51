//! A simulated backend: drives a scheduler with outcomes picked by a list of
//! numbers (from proptest, or a seeded generator), keeps its own view of
//! which attempts are alive, and checks the scheduler's invariants after
//! every call.

use std::collections::BTreeMap;

use super::*;

/// What the backend knows about a live attempt.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Phase {
    Launching,
    Pending,
    Running,
}

pub(super) struct Sim {
    pub sched: Scheduler,
    pub now: Duration,
    specs: Vec<StepSpec>,
    config: RunConfig,
    /// Check that terminal states never change after every call: O(steps)
    /// per call, so off for the big run.
    full_checks: bool,
    /// step -> (attempt, phase): the attempts the backend has alive.
    pub live: BTreeMap<usize, (u32, Phase)>,
    /// Attempts launched per step.
    pub launched: Vec<u32>,
    /// The attempt reported succeeded, per step.
    pub reported_ok: Vec<Option<u32>>,
    /// The last attempt reported failed and when, per step.
    pub reported_fail: Vec<Option<(u32, Duration)>>,
    /// The last attempt the scheduler asked to cancel, per step.
    cancelled: Vec<Option<u32>>,
    skips: Vec<u32>,
    last_launch_at: Option<Duration>,
    terminal_seen: Vec<Option<StepState>>,
    finishes: usize,
    pub stop_sent: bool,
    pub events: usize,
    pub launches: usize,
}

impl Sim {
    pub(super) fn new(sched: Scheduler, full_checks: bool) -> Self {
        let n = sched.steps().len();
        Sim {
            specs: sched.steps().to_vec(),
            config: *sched.config(),
            sched,
            now: Duration::ZERO,
            full_checks,
            live: BTreeMap::new(),
            launched: vec![0; n],
            reported_ok: vec![None; n],
            reported_fail: vec![None; n],
            cancelled: vec![None; n],
            skips: vec![0; n],
            last_launch_at: None,
            terminal_seen: vec![None; n],
            finishes: 0,
            stop_sent: false,
            events: 0,
            launches: 0,
        }
    }

    /// Carries the backend's view over to a resumed scheduler, as an
    /// orchestrator that restarted would find it in the cluster.
    pub(super) fn resumed(self, sched: Scheduler) -> Self {
        let mut next = Sim::new(sched, self.full_checks);
        next.now = self.now;
        next.live = self
            .live
            .iter()
            .map(|(&step, &(attempt, phase))| {
                let phase = if phase == Phase::Launching {
                    Phase::Pending
                } else {
                    phase
                };
                (step, (attempt, phase))
            })
            .collect();
        next.launched = self.launched;
        next.reported_ok = self.reported_ok;
        next.reported_fail = self.reported_fail;
        next
    }

    /// What the cluster would show: one observation per launched attempt.
    pub(super) fn observed(&self) -> Vec<Observed> {
        let mut out = Vec::new();
        for (step, &attempts) in self.launched.iter().enumerate() {
            for attempt in 1..=attempts {
                let state =
                    if let Some(&(a, phase)) = self.live.get(&step).filter(|l| l.0 == attempt) {
                        debug_assert_eq!(a, attempt);
                        if phase == Phase::Running {
                            ObservedState::Running
                        } else {
                            ObservedState::Pending
                        }
                    } else if self.reported_ok[step] == Some(attempt) {
                        ObservedState::Succeeded
                    } else {
                        ObservedState::Failed {
                            exit_code: Some(1),
                            reason: "observed".into(),
                            // Only the last failure's time is known here.
                            at: self.reported_fail[step]
                                .filter(|f| f.0 == attempt)
                                .map(|f| f.1),
                        }
                    };
                out.push(Observed {
                    step,
                    attempt,
                    state,
                });
            }
        }
        out.reverse(); // any order will do
        out
    }

    /// Starts the run and plays `choices`, then plays fallbacks until the
    /// run finishes; panics if it does not within a bound.
    pub(super) fn run(&mut self, choices: &[u32], allow_stop: bool) {
        self.send(Event::Start);
        self.play(choices, allow_stop);
        let max_attempts: usize = self
            .specs
            .iter()
            .map(|s| s.retry.max_retries as usize + 1)
            .sum();
        let bound = 4 * max_attempts + 10;
        for _ in 0..bound {
            if self.sched.is_finished() {
                self.final_check();
                return;
            }
            self.fallback();
        }
        panic!(
            "run not finished after {bound} more events: {:?}",
            self.sched.states()
        );
    }

    /// Plays `choices` only (the run may or may not finish).
    pub(super) fn play(&mut self, choices: &[u32], allow_stop: bool) {
        for &c in choices {
            if self.sched.is_finished() {
                return;
            }
            self.choose(c, allow_stop);
        }
    }

    /// One step of the simulation, picked by `c`: mostly outcomes of live
    /// attempts (successes more often than failures), sometimes letting
    /// time pass, a stale event or a stop.
    fn choose(&mut self, c: u32, allow_stop: bool) {
        let (kind, arg) = (c % 32, c / 32);
        if kind >= 29 {
            return self.stale(arg);
        }
        if kind == 28 && allow_stop && arg % 4 == 0 {
            self.stop_sent = true;
            return self.send(Event::StopRequested {
                force: arg % 8 == 0,
            });
        }
        if self.live.is_empty() {
            return self.advance_time();
        }
        if kind >= 22 {
            // Let up to 5 s pass, stopping at a wake-up on the way.
            let target = self.now + Duration::from_millis(u64::from(arg % 5000));
            self.now = match self.sched.next_wake() {
                Some(at) if at <= target => at,
                _ => target,
            };
            return self.send(Event::TimerFired);
        }
        let Some((&step, &(attempt, phase))) = self.live.iter().nth(arg as usize % self.live.len())
        else {
            return;
        };
        self.now += Duration::from_millis(u64::from(arg % 3000));
        match kind {
            0..=15 => self.report_ok(step, attempt),
            16..=17 => self.report_fail(step, attempt),
            18 if phase != Phase::Running => {
                self.live.remove(&step);
                self.reported_fail[step] = Some((attempt, self.now));
                self.send(Event::PendingTooLong {
                    step,
                    attempt,
                    reason: "Unschedulable".into(),
                });
            }
            19 if phase == Phase::Launching => {
                self.live.insert(step, (attempt, Phase::Pending));
                self.send(Event::Launched { step, attempt });
            }
            _ => {
                self.live.insert(step, (attempt, Phase::Running));
                self.send(Event::Running { step, attempt });
            }
        }
    }

    /// Succeeds the first live attempt, or lets time pass.
    fn fallback(&mut self) {
        if let Some((&step, &(attempt, _))) = self.live.iter().next() {
            self.report_ok(step, attempt);
        } else {
            self.advance_time();
        }
    }

    fn report_ok(&mut self, step: usize, attempt: u32) {
        self.live.remove(&step);
        self.reported_ok[step] = Some(attempt);
        self.send(Event::Succeeded { step, attempt });
    }

    fn report_fail(&mut self, step: usize, attempt: u32) {
        self.live.remove(&step);
        self.reported_fail[step] = Some((attempt, self.now));
        self.send(Event::Failed {
            step,
            attempt,
            exit_code: Some(2),
            reason: "exit code 2".into(),
        });
    }

    /// Jumps to the next time the scheduler asked for. With nothing live
    /// and nothing asked for, the run would hang: that is a bug.
    fn advance_time(&mut self) {
        match self.sched.next_wake() {
            Some(at) => {
                assert!(
                    at > self.now,
                    "wake-up at {at:?} is not after {:?}",
                    self.now
                );
                self.now = at;
                self.send(Event::TimerFired);
            }
            None => {
                assert!(
                    !self.live.is_empty() || self.sched.is_finished(),
                    "stuck: nothing live, no wake-up asked, run not finished: {:?}",
                    self.sched.states()
                );
                self.fallback();
            }
        }
    }

    /// An event about an attempt that is not live must change nothing.
    fn stale(&mut self, arg: u32) {
        let step = arg as usize % self.specs.len();
        let live = self.live.get(&step).map(|l| l.0);
        let attempt = match arg % 3 {
            0 => self.launched[step] + 1,
            1 => self.launched[step].saturating_sub(1),
            _ => self.launched[step],
        };
        if attempt == 0 || live == Some(attempt) {
            return;
        }
        let event = match arg % 4 {
            0 => Event::Succeeded { step, attempt },
            1 => Event::Running { step, attempt },
            2 => Event::PendingTooLong {
                step,
                attempt,
                reason: "late".into(),
            },
            _ => Event::Failed {
                step,
                attempt,
                exit_code: None,
                reason: "late".into(),
            },
        };
        let before = self.sched.states().to_vec();
        let actions = self.sched.handle(self.now, event.clone()).unwrap();
        self.events += 1;
        assert!(actions.is_empty(), "{event:?} gave {actions:?}");
        assert_eq!(self.sched.states(), &before[..], "{event:?} changed state");
    }

    pub(super) fn send(&mut self, event: Event) {
        let actions = self.sched.handle(self.now, event).unwrap();
        self.events += 1;
        let count = actions.len();
        for (i, action) in actions.into_iter().enumerate() {
            self.check_action(action, i + 1 == count);
        }
        self.check_after();
    }

    fn check_action(&mut self, action: Action, last: bool) {
        assert_eq!(self.finishes, 0, "{action:?} after Finish");
        match action {
            Action::Launch { step, attempt } => {
                for &up in &self.specs[step].upstream {
                    assert!(
                        self.reported_ok[up].is_some()
                            && matches!(self.sched.states()[up], StepState::Succeeded { .. }),
                        "step {step} launched before upstream {up} succeeded"
                    );
                }
                assert_eq!(attempt, self.launched[step] + 1, "attempts are sequential");
                assert!(attempt <= self.specs[step].retry.max_retries + 1);
                assert!(
                    !self.live.contains_key(&step),
                    "two live attempts of {step}"
                );
                if attempt > 1 {
                    let (failed, at) = self.reported_fail[step].expect("a retry follows a failure");
                    assert_eq!(failed, attempt - 1);
                    let due = at.saturating_add(self.specs[step].retry.delay_after(failed));
                    assert!(
                        self.now >= due,
                        "retry of {step} at {:?} before {due:?}",
                        self.now
                    );
                }
                if let Some(prev) = self.last_launch_at {
                    assert!(
                        self.now >= prev.saturating_add(self.config.startup_period),
                        "launches closer than the startup period"
                    );
                }
                self.last_launch_at = Some(self.now);
                self.launched[step] = attempt;
                self.launches += 1;
                self.live.insert(step, (attempt, Phase::Launching));
            }
            Action::RetryAfter { step, attempt, at } => {
                assert_eq!(attempt, self.launched[step] + 1);
                let (failed, failed_at) = self.reported_fail[step].expect("retry after a failure");
                assert_eq!(failed + 1, attempt);
                assert_eq!(
                    at,
                    failed_at.saturating_add(self.specs[step].retry.delay_after(failed))
                );
            }
            Action::Cancel { step, attempt } => {
                assert_eq!(attempt, self.launched[step], "only the latest attempt");
                if self.live.get(&step).is_some_and(|l| l.0 == attempt) {
                    self.live.remove(&step);
                }
                self.cancelled[step] = Some(attempt);
            }
            Action::Skip { step, .. } => {
                assert_eq!(self.launched[step], 0, "skipped {step} after it ran");
                self.skips[step] += 1;
                assert_eq!(self.skips[step], 1, "{step} skipped twice");
            }
            Action::WakeAt { at } => assert!(at > self.now),
            Action::Finish { .. } => {
                assert!(last, "Finish is the last action");
                self.finishes += 1;
            }
        }
    }

    fn check_after(&mut self) {
        if let Some(max) = self.config.max_parallelism {
            assert!(self.live.len() <= max.get(), "parallelism exceeded");
        }
        assert_eq!(self.live.len(), self.sched.live());
        for (&step, &(attempt, _)) in &self.live {
            assert_eq!(self.sched.states()[step].live_attempt(), Some(attempt));
        }
        assert_eq!(self.finishes, usize::from(self.sched.is_finished()));
        if self.full_checks {
            for (step, &state) in self.sched.states().iter().enumerate() {
                if state.terminal().is_some() {
                    let seen = self.terminal_seen[step].get_or_insert(state);
                    assert_eq!(*seen, state, "terminal state of {step} changed");
                }
            }
        }
    }

    /// Once finished: every step in one terminal state that matches what
    /// the backend saw, and, when nothing cut the run short, the failure
    /// policy exactly.
    fn final_check(&self) {
        let n = self.specs.len();
        let summary = self.sched.summary();
        assert_eq!(
            summary.succeeded + summary.failed + summary.skipped + summary.cancelled,
            n
        );
        assert!(self.live.is_empty());
        for (step, &state) in self.sched.states().iter().enumerate() {
            let max = self.specs[step].retry.max_retries + 1;
            assert!(self.sched.attempts(step) <= max);
            assert_eq!(self.sched.attempts(step), self.launched[step]);
            match state {
                StepState::Succeeded { attempt } => {
                    assert_eq!(self.reported_ok[step], Some(attempt))
                }
                StepState::Failed { attempt } => {
                    assert_eq!(self.reported_fail[step].map(|f| f.0), Some(attempt))
                }
                StepState::Cancelled { attempt } => assert_eq!(self.cancelled[step], Some(attempt)),
                StepState::Skipped { .. } => assert_eq!(self.skips[step], 1),
                other => panic!("step {step} ended {other:?}"),
            }
        }
        let outcome = self.sched.outcome().unwrap();
        let cut_short = self.stop_sent
            || outcome == RunOutcome::TimedOut
            || (self.config.fail_fast && summary.failed > 0);
        if cut_short {
            return;
        }
        assert_eq!(outcome.is_success(), summary.succeeded == n);
        assert_eq!(summary.cancelled, 0);
        for (step, &state) in self.sched.states().iter().enumerate() {
            match state {
                StepState::Failed { attempt } => {
                    assert_eq!(attempt, self.specs[step].retry.max_retries + 1)
                }
                StepState::Skipped {
                    because: SkipReason::UpstreamFailed { upstream },
                } => {
                    assert!(matches!(
                        self.sched.states()[upstream],
                        StepState::Failed { .. }
                    ));
                    assert!(
                        self.specs[step].upstream.iter().any(|&u| !matches!(
                            self.sched.states()[u],
                            StepState::Succeeded { .. }
                        ))
                    );
                }
                StepState::Skipped { because } => panic!("{step} skipped: {because:?}"),
                _ => {}
            }
        }
    }
}

/// A small deterministic generator for the big run (no dependency).
pub(super) struct XorShift(pub u64);

impl XorShift {
    pub(super) fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
}

/// A random DAG of `n` steps with up to `max_up` upstream steps each,
/// among the previous `window` (so chains are long as well as wide).
pub(super) fn random_dag(
    rng: &mut XorShift,
    n: usize,
    max_up: u64,
    window: usize,
) -> Vec<StepSpec> {
    (0..n)
        .map(|i| {
            let ups = if i == 0 {
                Vec::new()
            } else {
                let span = window.min(i) as u64;
                (0..rng.next() % (max_up + 1))
                    .map(|_| i - 1 - (rng.next() % span) as usize)
                    .collect()
            };
            let mut spec = StepSpec::new(format!("s{i}"), ups);
            spec.retry.max_retries = 1 + (rng.next() % 2) as u32;
            spec.retry.delay = Duration::from_millis(rng.next() % 5000);
            spec.retry.backoff = 2.0;
            spec
        })
        .collect()
}

#[test]
fn ten_thousand_steps_finish_with_every_invariant() {
    let mut rng = XorShift(0x9e37_79b9_7f4a_7c15);
    let spec = random_dag(&mut rng, 10_000, 3, 200);
    let config = RunConfig {
        max_parallelism: limit(64),
        startup_period: Duration::from_millis(1),
        ..RunConfig::default()
    };
    let mut sim = Sim::new(Scheduler::new(spec, config).unwrap(), false);
    // Mostly successes, so failures do not skip most of the graph.
    let choices: Vec<u32> = (0..60_000)
        .map(|_| {
            let kind = match rng.next() % 1000 {
                0..=899 => 0,    // succeed
                900..=904 => 16, // fail
                905..=906 => 18, // pending too long
                907..=979 => 20, // running
                _ => 22,         // let time pass
            };
            kind + 32 * (rng.next() % 1_000_000) as u32
        })
        .collect();
    sim.run(&choices, false);
    assert!(sim.sched.is_finished());
    let summary = sim.sched.summary();
    assert!(summary.succeeded > 0 && summary.failed > 0, "{summary:?}");
}
