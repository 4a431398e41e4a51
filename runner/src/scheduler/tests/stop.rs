//! Ending a run early: graceful and force stops, and the run timeout.

use super::*;

/// a and b run, c backs off before its retry, d waits on a, e is queued
/// behind the parallelism limit.
fn busy_run(config: RunConfig) -> Harness {
    let mut spec = steps(&[("a", &[]), ("b", &[]), ("c", &[]), ("d", &[0]), ("e", &[])]);
    spec[2].retry = RetryPolicy {
        max_retries: 3,
        delay: secs(30),
        backoff: 1.0,
    };
    spec[4].retry.max_retries = 1;
    let mut h = Harness::new(
        spec,
        RunConfig {
            max_parallelism: limit(3),
            ..config
        },
    );
    assert_eq!(launched(&h.start()), vec![0, 1, 2]);
    h.send(Event::Running {
        step: 1,
        attempt: 1,
    });
    assert_eq!(launched(&h.fail(2)), vec![4]);
    assert!(matches!(h.state(2), StepState::BackingOff { .. }));
    // e took c's slot: the limit is reached.
    assert_eq!(h.sched.live(), 3);
    h
}

#[test]
fn graceful_stop_lets_live_steps_end_and_skips_the_rest() {
    let mut h = busy_run(RunConfig::default());
    let actions = h.send(Event::StopRequested { force: false });
    assert_eq!(
        actions,
        vec![Action::Skip {
            step: 3,
            because: SkipReason::Stopped
        }]
    );
    assert_eq!(
        h.state(2),
        StepState::Failed { attempt: 1 },
        "retry dropped"
    );
    assert_eq!(h.sched.next_wake(), None);
    assert!(h.tick(secs(31)).is_empty(), "no retry after a stop");
    // Live steps still report; a failure is not retried, nothing launches.
    assert!(h.ok(0).is_empty(), "d is already skipped");
    assert!(
        h.fail(4).is_empty(),
        "e has a retry left, but no retry after a stop"
    );
    assert_eq!(h.state(4), StepState::Failed { attempt: 1 });
    let end = h.ok(1);
    assert_eq!(
        end,
        vec![Action::Finish {
            outcome: RunOutcome::Stopped { force: false }
        }]
    );
    assert_eq!(
        h.sched.summary(),
        Summary {
            succeeded: 2,
            failed: 2,
            skipped: 1,
            cancelled: 0
        }
    );
}

#[test]
fn force_stop_cancels_live_steps() {
    let mut h = busy_run(RunConfig::default());
    let actions = h.send(Event::StopRequested { force: true });
    assert_eq!(
        actions,
        vec![
            Action::Cancel {
                step: 0,
                attempt: 1
            },
            Action::Cancel {
                step: 1,
                attempt: 1
            },
            Action::Cancel {
                step: 4,
                attempt: 1
            },
            Action::Skip {
                step: 3,
                because: SkipReason::Stopped
            },
            Action::Finish {
                outcome: RunOutcome::Stopped { force: true }
            },
        ]
    );
    assert_eq!(h.state(1), StepState::Cancelled { attempt: 1 });
    assert_eq!(h.state(2), StepState::Failed { attempt: 1 });
    assert_eq!(h.sched.live(), 0);
}

#[test]
fn a_force_stop_after_a_graceful_one_cancels_what_is_left() {
    let mut h = busy_run(RunConfig::default());
    h.send(Event::StopRequested { force: false });
    h.ok(0);
    assert!(h.send(Event::StopRequested { force: false }).is_empty());
    let actions = h.send(Event::StopRequested { force: true });
    assert_eq!(
        actions,
        vec![
            Action::Cancel {
                step: 1,
                attempt: 1
            },
            Action::Cancel {
                step: 4,
                attempt: 1
            },
            Action::Finish {
                outcome: RunOutcome::Stopped { force: true }
            },
        ]
    );
}

#[test]
fn a_stop_after_every_step_launched_can_still_succeed() {
    let mut h = Harness::new(steps(&[("a", &[]), ("b", &[])]), RunConfig::default());
    h.start();
    assert!(h.send(Event::StopRequested { force: false }).is_empty());
    h.ok(0);
    assert_eq!(finish(&h.ok(1)), Some(RunOutcome::Succeeded));
}

#[test]
fn a_stop_before_start_skips_everything() {
    let mut h = Harness::new(diamond_and_e(), RunConfig::default());
    let actions = h.send(Event::StopRequested { force: false });
    assert_eq!(actions.len(), 6);
    assert_eq!(finish(&actions), Some(RunOutcome::Stopped { force: false }));
    assert_eq!(h.sched.summary().skipped, 5);
    assert!(h.start().is_empty());
}

#[test]
fn the_timeout_cancels_live_steps_and_fails_the_run() {
    let mut h = busy_run(RunConfig {
        timeout: Some(secs(100)),
        ..RunConfig::default()
    });
    assert_eq!(h.sched.next_wake(), Some(secs(30)), "c's retry comes first");
    assert!(launched(&h.tick(secs(99))).is_empty(), "no slot for c yet");
    let actions = h.tick(secs(100));
    assert_eq!(
        actions,
        vec![
            Action::Cancel {
                step: 0,
                attempt: 1
            },
            Action::Cancel {
                step: 1,
                attempt: 1
            },
            Action::Cancel {
                step: 4,
                attempt: 1
            },
            Action::Skip {
                step: 3,
                because: SkipReason::TimedOut
            },
            Action::Finish {
                outcome: RunOutcome::TimedOut
            },
        ]
    );
    // c was ready (its retry was due) but had no slot: its failure stands.
    assert_eq!(h.state(2), StepState::Failed { attempt: 1 });
}

#[test]
fn the_timeout_asks_for_a_wake_up_at_start() {
    let mut h = Harness::new(
        steps(&[("a", &[])]),
        RunConfig {
            timeout: Some(secs(60)),
            ..RunConfig::default()
        },
    );
    assert_eq!(
        h.start(),
        vec![
            Action::WakeAt { at: secs(60) },
            Action::Launch {
                step: 0,
                attempt: 1
            }
        ]
    );
    assert_eq!(h.sched.next_wake(), Some(secs(60)));
}

#[test]
fn an_event_at_or_after_the_deadline_is_moot() {
    let mut h = Harness::new(
        steps(&[("a", &[])]),
        RunConfig {
            timeout: Some(secs(60)),
            ..RunConfig::default()
        },
    );
    h.start();
    h.at(secs(61));
    let actions = h.ok(0);
    assert_eq!(finish(&actions), Some(RunOutcome::TimedOut));
    assert_eq!(h.state(0), StepState::Cancelled { attempt: 1 });
}

#[test]
fn a_zero_timeout_means_none() {
    let mut h = Harness::new(
        steps(&[("a", &[])]),
        RunConfig {
            timeout: Some(Duration::ZERO),
            ..RunConfig::default()
        },
    );
    assert_eq!(launched(&h.start()), vec![0]);
    assert_eq!(h.sched.next_wake(), None);
    h.at(secs(1_000_000));
    assert_eq!(finish(&h.ok(0)), Some(RunOutcome::Succeeded));
}

#[test]
fn the_timeout_during_a_graceful_stop_cancels_what_is_left() {
    let mut h = busy_run(RunConfig {
        timeout: Some(secs(100)),
        ..RunConfig::default()
    });
    h.send(Event::StopRequested { force: false });
    let actions = h.tick(secs(100));
    assert_eq!(finish(&actions), Some(RunOutcome::TimedOut));
    assert_eq!(h.sched.summary().cancelled, 3);
}
