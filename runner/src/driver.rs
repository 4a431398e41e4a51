//! The loop between the pure scheduler and a backend: carries out the
//! scheduler's actions, feeds it what the backend and the user report, and
//! turns both into [`Report`]s for the run records and the terminal.
//!
//! Backend-neutral, so the local backend and the Kubernetes orchestrator
//! share it: a backend only starts and cancels attempts and reports their
//! ends through a channel. The clock is read here (and only here), as the
//! run time since [`drive`] started, and handed to the scheduler as data.

use std::collections::BTreeSet;
use std::path::PathBuf;
use std::sync::mpsc::{self, Receiver, RecvTimeoutError, Sender};
use std::time::{Duration, Instant};

use crate::scheduler::{
    Action, Event, RunOutcome, Scheduler, SchedulerError, SkipReason, StepState, Terminal,
};

/// What reaches the driver: a backend's word about an attempt, or a stop
/// request (a signal, `kiln runs stop`).
#[derive(Debug, Clone, PartialEq)]
pub enum Input {
    /// An attempt was launched, runs, succeeded or failed.
    Step(Event),
    /// Stop the run: gracefully, or cancelling running steps.
    Stop {
        /// Cancel running steps too.
        force: bool,
    },
}

/// Starts and stops attempts. Implementations report every attempt's
/// progress as [`Input::Step`] events on the sender they are given.
pub(crate) trait Backend {
    /// Starts attempt `attempt` of `step`; returns what it started.
    fn launch(&mut self, step: usize, attempt: u32, inputs: Sender<Input>) -> Launched;
    /// Stops a live attempt; its end is still reported (as a failure).
    fn cancel(&mut self, step: usize, attempt: u32);
    /// Waits until every attempt started has ended and been reported.
    fn wait_all(&mut self);
}

/// What a backend started for one attempt: the run records keep where its
/// output is, and that differs by backend.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Launched {
    /// A process on this machine; its output is saved in the file `log`.
    Process {
        /// The attempt's log file.
        log: PathBuf,
    },
    /// A Kubernetes pod; its output is read through the API.
    Pod {
        /// The pod's name.
        name: String,
    },
    /// Nothing could be started; the attempt's failure is reported as an
    /// event.
    Nothing,
}

impl Launched {
    /// Where the run records say the attempt's output is: the log file,
    /// `pod/<name>` for a pod (which `kiln logs` reads through the API),
    /// or an empty path when nothing started.
    pub(crate) fn log_path(&self) -> PathBuf {
        match self {
            Launched::Process { log } => log.clone(),
            Launched::Pod { name } => pod_log_path(name),
            Launched::Nothing => PathBuf::new(),
        }
    }
}

/// The records' log path of a pod's output: `pod/<name>`.
pub(crate) fn pod_log_path(name: &str) -> PathBuf {
    PathBuf::from(format!("pod/{name}"))
}

/// How one attempt ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum AttemptOutcome {
    /// Exit code 0.
    Succeeded,
    /// It failed (non-zero exit, could not start).
    Failed,
    /// kiln stopped it (stop, fail-fast).
    Cancelled,
}

/// Something the run records and the terminal want to know.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Report {
    /// An attempt started, as `launched`.
    AttemptStarted {
        /// The step.
        step: usize,
        /// The attempt, from 1.
        attempt: u32,
        /// What the backend started.
        launched: Launched,
    },
    /// An attempt ended.
    AttemptEnded {
        /// The step.
        step: usize,
        /// The attempt.
        attempt: u32,
        /// How.
        outcome: AttemptOutcome,
        /// The exit code, when it exited.
        exit_code: Option<i32>,
        /// Why it failed, in words.
        reason: Option<String>,
    },
    /// A failed step will be tried again after `after`.
    RetryScheduled {
        /// The step.
        step: usize,
        /// The attempt that will come.
        attempt: u32,
        /// The wait.
        after: Duration,
    },
    /// A step reached its end state.
    StepEnded {
        /// The step.
        step: usize,
        /// How it ended.
        end: Terminal,
        /// Why, when it did not succeed.
        reason: Option<String>,
    },
    /// The run is over; always the last report.
    Finished {
        /// How it ended.
        outcome: RunOutcome,
    },
}

/// Receives reports; the run records and the terminal each implement it.
pub(crate) trait Observer {
    /// One report, in order.
    fn report(&mut self, report: &Report);
}

/// An observer lent for one run: the caller keeps it (the console, for
/// its summary at the end).
impl<T: Observer + ?Sized> Observer for &mut T {
    fn report(&mut self, report: &Report) {
        (**self).report(report);
    }
}

/// Two observers, each told everything in order: a run's console and its
/// record.
impl<A: Observer, B: Observer> Observer for (A, B) {
    fn report(&mut self, report: &Report) {
        self.0.report(report);
        self.1.report(report);
    }
}

/// The driver's inputs: a sender for signal handlers and the like, and the
/// receiving end the loop reads.
pub(crate) fn channel() -> (Sender<Input>, Receiver<Input>) {
    mpsc::channel()
}

/// Runs `scheduler` to its end with `backend`, reporting to `observer`;
/// returns how the run ended. `inputs` is the receiving end of
/// [`channel`]; `sender` its sending end, handed to the backend.
pub(crate) fn drive(
    scheduler: &mut Scheduler,
    backend: &mut dyn Backend,
    observer: &mut dyn Observer,
    sender: &Sender<Input>,
    inputs: &Receiver<Input>,
) -> Result<RunOutcome, SchedulerError> {
    let start = Instant::now();
    let mut d = Driver {
        reported: scheduler
            .states()
            .iter()
            .map(|s| s.terminal().is_some())
            .collect(),
        cancelled: BTreeSet::new(),
        stop_requested: false,
    };
    let mut actions = scheduler.handle(Duration::ZERO, Event::Start)?;
    loop {
        for action in actions.drain(..) {
            if let Some(outcome) = d.carry_out(start.elapsed(), backend, observer, sender, action) {
                d.report_ends(scheduler, observer);
                backend.wait_all();
                while let Ok(Input::Step(event)) = inputs.try_recv() {
                    d.report_attempt_end(observer, &event);
                }
                observer.report(&Report::Finished { outcome });
                return Ok(outcome);
            }
        }
        d.report_ends(scheduler, observer);
        let received = match scheduler.next_wake() {
            Some(at) => inputs.recv_timeout(at.saturating_sub(start.elapsed())),
            None => inputs.recv().map_err(|_| RecvTimeoutError::Disconnected),
        };
        let event = match received {
            Ok(Input::Step(event)) => {
                d.report_attempt_end(observer, &event);
                event
            }
            Ok(Input::Stop { force }) => {
                d.stop_requested = true;
                Event::StopRequested { force }
            }
            // Nobody can report anything any more: stop what runs.
            Err(RecvTimeoutError::Disconnected) => Event::StopRequested { force: true },
            Err(RecvTimeoutError::Timeout) => Event::TimerFired,
        };
        actions = scheduler.handle(start.elapsed(), event)?;
    }
}

struct Driver {
    /// Steps whose end was reported.
    reported: Vec<bool>,
    /// Attempts kiln cancelled: their failure is a cancellation.
    cancelled: BTreeSet<(usize, u32)>,
    stop_requested: bool,
}

impl Driver {
    /// Carries out one action; `Some` when it was the run's end.
    fn carry_out(
        &mut self,
        now: Duration,
        backend: &mut dyn Backend,
        observer: &mut dyn Observer,
        sender: &Sender<Input>,
        action: Action,
    ) -> Option<RunOutcome> {
        match action {
            Action::Launch { step, attempt } => {
                let launched = backend.launch(step, attempt, sender.clone());
                observer.report(&Report::AttemptStarted {
                    step,
                    attempt,
                    launched,
                });
            }
            Action::RetryAfter { step, attempt, at } => {
                observer.report(&Report::RetryScheduled {
                    step,
                    attempt,
                    after: at.saturating_sub(now),
                });
            }
            Action::Cancel { step, attempt } => {
                self.cancelled.insert((step, attempt));
                backend.cancel(step, attempt);
            }
            // The skip's reason is in the step's state, reported with its end.
            Action::Skip { .. } => {}
            Action::WakeAt { .. } => {}
            Action::Finish { outcome } => return Some(outcome),
        }
        None
    }

    /// Reports an attempt's end (before the scheduler hears of it).
    fn report_attempt_end(&self, observer: &mut dyn Observer, event: &Event) {
        let (step, attempt, outcome, exit_code, reason) = match event {
            Event::Succeeded { step, attempt } => {
                (*step, *attempt, AttemptOutcome::Succeeded, Some(0), None)
            }
            Event::Failed {
                step,
                attempt,
                exit_code,
                reason,
            } => {
                let outcome = if self.cancelled.contains(&(*step, *attempt)) {
                    AttemptOutcome::Cancelled
                } else {
                    AttemptOutcome::Failed
                };
                (*step, *attempt, outcome, *exit_code, Some(reason.clone()))
            }
            Event::Unrecoverable {
                step,
                attempt,
                reason,
            } => (
                *step,
                *attempt,
                AttemptOutcome::Failed,
                None,
                Some(reason.clone()),
            ),
            _ => return,
        };
        observer.report(&Report::AttemptEnded {
            step,
            attempt,
            outcome,
            exit_code,
            reason,
        });
    }

    /// Reports every step that reached its end since the last call.
    fn report_ends(&mut self, scheduler: &Scheduler, observer: &mut dyn Observer) {
        for (step, state) in scheduler.states().iter().enumerate() {
            let Some(end) = state.terminal() else {
                continue;
            };
            if std::mem::replace(&mut self.reported[step], true) {
                continue;
            }
            let name = |i: usize| scheduler.steps()[i].name.clone();
            let reason = match (end, state) {
                (Terminal::Succeeded, _) => None,
                (Terminal::Failed, _) => scheduler.last_failure(step).map(|f| f.reason.clone()),
                (Terminal::Skipped, StepState::Skipped { because }) => Some(match because {
                    SkipReason::UpstreamFailed { upstream } => {
                        format!("upstream step {} failed", name(*upstream))
                    }
                    SkipReason::FailFast { failed } => {
                        format!("fail_fast: step {} failed", name(*failed))
                    }
                    SkipReason::Stopped => "the run was stopped".into(),
                    SkipReason::TimedOut => "the run timed out".into(),
                }),
                (Terminal::Skipped, _) => None,
                (Terminal::Cancelled, _) => Some(if self.stop_requested {
                    "cancelled: the run was stopped".into()
                } else if scheduler.config().fail_fast {
                    "cancelled: fail_fast after a failed step".into()
                } else {
                    "cancelled: the run timed out".into()
                }),
            };
            observer.report(&Report::StepEnded { step, end, reason });
        }
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use super::*;
    use crate::scheduler::{RetryPolicy, RunConfig, StepSpec};

    /// Ends each attempt as soon as it is launched: the steps in `fail`
    /// fail (their first `fail[step]` attempts), the others succeed. With
    /// `hold`, attempts never end by themselves; a cancel ends them (137).
    #[derive(Default)]
    struct Fake {
        fail: HashMap<usize, u32>,
        hold: bool,
        launched: Vec<(usize, u32)>,
        cancelled: Vec<(usize, u32)>,
        senders: Vec<Sender<Input>>,
    }

    impl Backend for Fake {
        fn launch(&mut self, step: usize, attempt: u32, inputs: Sender<Input>) -> Launched {
            self.launched.push((step, attempt));
            let send = |e| inputs.send(Input::Step(e)).unwrap();
            send(Event::Launched { step, attempt });
            send(Event::Running { step, attempt });
            if self.hold {
                self.senders.push(inputs.clone());
            } else if self.fail.get(&step).is_some_and(|n| attempt <= *n) {
                send(Event::Failed {
                    step,
                    attempt,
                    exit_code: Some(1),
                    reason: "exit code 1".into(),
                });
            } else {
                send(Event::Succeeded { step, attempt });
            }
            Launched::Process {
                log: PathBuf::from(format!("{step}.{attempt}.log")),
            }
        }

        fn cancel(&mut self, step: usize, attempt: u32) {
            self.cancelled.push((step, attempt));
            if let Some(s) = self.senders.first() {
                s.send(Input::Step(Event::Failed {
                    step,
                    attempt,
                    exit_code: Some(137),
                    reason: "killed".into(),
                }))
                .unwrap();
            }
        }

        fn wait_all(&mut self) {}
    }

    #[derive(Default)]
    struct Collect(Vec<Report>);

    impl Observer for Collect {
        fn report(&mut self, report: &Report) {
            self.0.push(report.clone());
        }
    }

    impl Collect {
        fn ends(&self) -> Vec<(usize, Terminal, Option<String>)> {
            let mut ends: Vec<_> = self
                .0
                .iter()
                .filter_map(|r| match r {
                    Report::StepEnded { step, end, reason } => Some((*step, *end, reason.clone())),
                    _ => None,
                })
                .collect();
            ends.sort_by_key(|e| e.0);
            ends
        }
    }

    fn run(steps: Vec<StepSpec>, backend: &mut Fake, before: &[Input]) -> (RunOutcome, Collect) {
        let mut scheduler = Scheduler::new(steps, RunConfig::default()).unwrap();
        let mut seen = Collect::default();
        let (tx, rx) = channel();
        for input in before {
            tx.send(input.clone()).unwrap();
        }
        let outcome = drive(&mut scheduler, backend, &mut seen, &tx, &rx).unwrap();
        (outcome, seen)
    }

    #[test]
    fn a_launch_says_where_its_output_is() {
        let process = Launched::Process {
            log: PathBuf::from("/runs/x/logs/a.1.log"),
        };
        assert_eq!(process.log_path(), PathBuf::from("/runs/x/logs/a.1.log"));
        let pod = Launched::Pod {
            name: "p-a-a1".into(),
        };
        assert_eq!(pod.log_path(), PathBuf::from("pod/p-a-a1"));
        assert_eq!(Launched::Nothing.log_path(), PathBuf::new());
    }

    #[test]
    fn a_failure_skips_its_downstream_and_the_sibling_still_runs() {
        // a -> b (fails) -> c, a -> d
        let steps = vec![
            StepSpec::new("a", vec![]),
            StepSpec::new("b", vec![0]),
            StepSpec::new("c", vec![1]),
            StepSpec::new("d", vec![0]),
        ];
        let mut backend = Fake {
            fail: HashMap::from([(1, u32::MAX)]),
            ..Fake::default()
        };
        let (outcome, seen) = run(steps, &mut backend, &[]);
        assert_eq!(outcome, RunOutcome::Failed);
        assert!(!backend.launched.iter().any(|(s, _)| *s == 2));
        assert_eq!(
            seen.ends(),
            vec![
                (0, Terminal::Succeeded, None),
                (1, Terminal::Failed, Some("exit code 1".into())),
                (2, Terminal::Skipped, Some("upstream step b failed".into())),
                (3, Terminal::Succeeded, None),
            ]
        );
        assert_eq!(
            seen.0.last(),
            Some(&Report::Finished {
                outcome: RunOutcome::Failed
            })
        );
    }

    #[test]
    fn a_retry_is_reported_with_its_delay_then_the_step_succeeds() {
        let mut step = StepSpec::new("flaky", vec![]);
        step.retry = RetryPolicy {
            max_retries: 2,
            delay: Duration::from_millis(20),
            backoff: 2.0,
        };
        let mut backend = Fake {
            fail: HashMap::from([(0, 2)]),
            ..Fake::default()
        };
        let (outcome, seen) = run(vec![step], &mut backend, &[]);
        assert_eq!(outcome, RunOutcome::Succeeded);
        assert_eq!(backend.launched, vec![(0, 1), (0, 2), (0, 3)]);
        let waits: Vec<Duration> = seen
            .0
            .iter()
            .filter_map(|r| match r {
                Report::RetryScheduled { after, .. } => Some(*after),
                _ => None,
            })
            .collect();
        assert_eq!(waits.len(), 2, "{:?}", seen.0);
        assert!(waits[0] <= Duration::from_millis(20) && waits[0] > Duration::from_millis(10));
        assert!(waits[1] <= Duration::from_millis(40) && waits[1] > Duration::from_millis(30));
    }

    #[test]
    fn a_force_stop_cancels_live_attempts_and_reports_them_cancelled() {
        let steps = vec![
            StepSpec::new("nap", vec![]),
            StepSpec::new("after", vec![0]),
        ];
        let mut backend = Fake {
            hold: true,
            ..Fake::default()
        };
        let (outcome, seen) = run(steps, &mut backend, &[Input::Stop { force: true }]);
        assert_eq!(outcome, RunOutcome::Stopped { force: true });
        assert_eq!(backend.cancelled, vec![(0, 1)]);
        assert!(seen.0.contains(&Report::AttemptEnded {
            step: 0,
            attempt: 1,
            outcome: AttemptOutcome::Cancelled,
            exit_code: Some(137),
            reason: Some("killed".into()),
        }));
        let ends = seen.ends();
        assert_eq!(ends[0].1, Terminal::Cancelled);
        assert!(ends[0].2.as_deref().unwrap_or_default().contains("stopped"));
        assert_eq!(ends[1].1, Terminal::Skipped);
    }
}
