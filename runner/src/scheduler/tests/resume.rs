//! Rebuilding a scheduler from observed attempts after an orchestrator
//! restart.

use super::*;

fn seen(step: usize, attempt: u32, state: ObservedState) -> Observed {
    Observed {
        step,
        attempt,
        state,
    }
}

fn failed() -> ObservedState {
    ObservedState::Failed {
        exit_code: Some(1),
        reason: "exit code 1".into(),
        at: None,
    }
}

fn resume(spec: Vec<StepSpec>, config: RunConfig, observed: &[Observed]) -> Harness {
    Harness {
        sched: Scheduler::resume(spec, config, observed).unwrap(),
        now: secs(50),
    }
}

#[test]
fn succeeded_steps_are_not_run_again() {
    let observed = [
        seen(0, 1, ObservedState::Succeeded),
        seen(4, 1, ObservedState::Succeeded),
        seen(1, 1, ObservedState::Succeeded),
    ];
    let mut h = resume(diamond_and_e(), RunConfig::default(), &observed);
    assert_eq!(launched(&h.start()), vec![2]);
    assert_eq!(launched(&h.ok(2)), vec![3]);
    assert_eq!(finish(&h.ok(3)), Some(RunOutcome::Succeeded));
}

#[test]
fn live_attempts_are_adopted_and_count_toward_parallelism() {
    let observed = [
        seen(0, 1, ObservedState::Succeeded),
        seen(1, 2, ObservedState::Running),
        seen(1, 1, failed()),
        seen(4, 1, ObservedState::Pending),
    ];
    let config = RunConfig {
        max_parallelism: limit(2),
        ..RunConfig::default()
    };
    let mut h = resume(diamond_and_e(), config, &observed);
    assert_eq!(h.state(1), StepState::Running { attempt: 2 });
    assert_eq!(h.state(4), StepState::Pending { attempt: 1 });
    assert_eq!(h.sched.live(), 2);
    assert!(launched(&h.start()).is_empty(), "c waits for a slot");
    assert_eq!(launched(&h.ok(4)), vec![2]);
    assert_eq!(h.sched.last_failure(1).map(|f| f.attempt), Some(1));
}

#[test]
fn a_failed_attempt_with_retries_left_is_retried_with_the_next_number() {
    let mut spec = diamond_and_e();
    spec[0].retry.max_retries = 2;
    let observed = [seen(0, 1, failed()), seen(0, 2, failed())];
    let mut h = resume(spec, RunConfig::default(), &observed);
    assert_eq!(
        launched(&h.start()),
        vec![0, 4],
        "a's third and last attempt, e's first"
    );
    assert_eq!(h.state(0), StepState::Launching { attempt: 3 });
}

#[test]
fn a_retry_keeps_its_backoff_when_the_failure_time_is_known() {
    let mut spec = diamond_and_e();
    spec[4].retry = RetryPolicy {
        max_retries: 1,
        delay: secs(30),
        backoff: 1.0,
    };
    let observed = [seen(
        4,
        1,
        ObservedState::Failed {
            exit_code: Some(137),
            reason: "OOMKilled".into(),
            at: Some(secs(40)),
        },
    )];
    let mut h = resume(spec, RunConfig::default(), &observed);
    assert_eq!(
        h.start(),
        vec![
            Action::RetryAfter {
                step: 4,
                attempt: 2,
                at: secs(70)
            },
            Action::Launch {
                step: 0,
                attempt: 1
            },
        ]
    );
    assert_eq!(h.sched.next_wake(), Some(secs(70)));
    assert_eq!(launched(&h.tick(secs(70))), vec![4]);
    assert_eq!(h.sched.last_failure(4).unwrap().exit_code, Some(137));
}

#[test]
fn a_failed_attempt_with_no_retries_left_applies_the_failure_policy() {
    // (fail_fast, actions of the first call)
    let table = [
        (
            false,
            vec![
                Action::Skip {
                    step: 1,
                    because: SkipReason::UpstreamFailed { upstream: 0 },
                },
                Action::Skip {
                    step: 2,
                    because: SkipReason::UpstreamFailed { upstream: 0 },
                },
                Action::Skip {
                    step: 3,
                    because: SkipReason::UpstreamFailed { upstream: 0 },
                },
            ],
        ),
        (
            true,
            vec![
                Action::Skip {
                    step: 1,
                    because: SkipReason::UpstreamFailed { upstream: 0 },
                },
                Action::Skip {
                    step: 2,
                    because: SkipReason::UpstreamFailed { upstream: 0 },
                },
                Action::Skip {
                    step: 3,
                    because: SkipReason::UpstreamFailed { upstream: 0 },
                },
                Action::Cancel {
                    step: 4,
                    attempt: 1,
                },
                Action::Finish {
                    outcome: RunOutcome::Failed,
                },
            ],
        ),
    ];
    for (fail_fast, want) in table {
        let observed = [seen(0, 1, failed()), seen(4, 1, ObservedState::Running)];
        let config = RunConfig {
            fail_fast,
            ..RunConfig::default()
        };
        let mut h = resume(diamond_and_e(), config, &observed);
        assert_eq!(h.start(), want, "fail_fast {fail_fast}");
        assert_eq!(h.state(0), StepState::Failed { attempt: 1 });
    }
}

#[test]
fn an_ended_attempt_wins_over_a_live_one_with_the_same_number() {
    let observed = [
        seen(4, 1, ObservedState::Running),
        seen(4, 1, ObservedState::Succeeded),
        seen(4, 1, ObservedState::Pending),
    ];
    let h = resume(diamond_and_e(), RunConfig::default(), &observed);
    assert_eq!(h.state(4), StepState::Succeeded { attempt: 1 });
    assert_eq!(h.sched.live(), 0);
}

#[test]
fn resume_keeps_counting_the_timeout_from_the_original_start() {
    let observed = [seen(4, 1, ObservedState::Running)];
    let config = RunConfig {
        timeout: Some(secs(40)),
        ..RunConfig::default()
    };
    let mut h = resume(diamond_and_e(), config, &observed);
    // The orchestrator restarted at 50 s, after the 40 s deadline.
    let actions = h.start();
    assert_eq!(finish(&actions), Some(RunOutcome::TimedOut));
    assert!(actions.contains(&Action::Cancel {
        step: 4,
        attempt: 1
    }));
}

#[test]
fn bad_observations_are_errors() {
    let err = Scheduler::resume(
        diamond_and_e(),
        RunConfig::default(),
        &[seen(9, 1, ObservedState::Running)],
    )
    .unwrap_err();
    assert_eq!(err, SchedulerError::UnknownStep { step: 9, steps: 5 });
    let err = Scheduler::resume(
        diamond_and_e(),
        RunConfig::default(),
        &[seen(2, 0, ObservedState::Running)],
    )
    .unwrap_err();
    assert_eq!(err, SchedulerError::AttemptZero { step: "c".into() });
}
