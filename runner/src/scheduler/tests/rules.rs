//! One test (or table) per scheduling rule: graph checks, ordering,
//! parallelism, startup period, retries, failure policy, stale events.

use super::*;

#[test]
fn rejects_cycles_naming_the_steps() {
    let err = Scheduler::new(
        steps(&[("a", &[]), ("b", &[0, 2]), ("c", &[1])]),
        RunConfig::default(),
    )
    .unwrap_err();
    let SchedulerError::Cycle { steps } = &err else {
        panic!("expected a cycle, got {err:?}");
    };
    assert_eq!(steps.first(), steps.last());
    assert!(steps.contains(&"b".to_string()) && steps.contains(&"c".to_string()));
    assert!(err.to_string().contains("b -> c") || err.to_string().contains("c -> b"));
}

#[test]
fn rejects_upstream_out_of_range() {
    let err = Scheduler::new(steps(&[("a", &[3])]), RunConfig::default()).unwrap_err();
    assert_eq!(
        err,
        SchedulerError::UnknownUpstream {
            step: "a".into(),
            upstream: 3,
            steps: 1
        }
    );
}

#[test]
fn duplicate_upstream_entries_count_once() {
    let mut h = Harness::new(steps(&[("a", &[]), ("b", &[0, 0])]), RunConfig::default());
    h.start();
    assert_eq!(launched(&h.ok(0)), vec![1]);
    assert_eq!(h.sched.steps()[1].upstream, vec![0]);
}

#[test]
fn a_step_starts_only_after_all_its_upstream_succeeded() {
    let mut h = Harness::new(diamond_and_e(), RunConfig::default());
    assert_eq!(launched(&h.start()), vec![0, 4]);
    assert_eq!(launched(&h.ok(0)), vec![1, 2]);
    assert_eq!(
        launched(&h.ok(1)),
        Vec::<usize>::new(),
        "d still waits on c"
    );
    assert_eq!(h.state(3), StepState::Waiting);
    assert_eq!(launched(&h.ok(2)), vec![3]);
    h.ok(4);
    let end = h.ok(3);
    assert_eq!(finish(&end), Some(RunOutcome::Succeeded));
    assert!(h.sched.is_finished());
    assert_eq!(h.sched.summary().succeeded, 5);
}

#[test]
fn ready_steps_launch_in_declaration_order_whatever_the_event_order() {
    // Four roots behind one gate, limit 1: they launch as declared.
    let spec = steps(&[
        ("gate", &[]),
        ("w", &[0]),
        ("x", &[0]),
        ("y", &[0]),
        ("z", &[0]),
    ]);
    let config = RunConfig {
        max_parallelism: limit(1),
        ..RunConfig::default()
    };
    let mut h = Harness::new(spec, config);
    h.start();
    let mut order = launched(&h.ok(0));
    while order.len() < 4 {
        let step = *order.last().unwrap();
        order.extend(launched(&h.ok(step)));
    }
    assert_eq!(order, vec![1, 2, 3, 4]);
}

#[test]
fn nothing_launches_before_start() {
    let mut h = Harness::new(diamond_and_e(), RunConfig::default());
    assert!(h.send(Event::TimerFired).is_empty());
    assert_eq!(h.state(0), StepState::Ready { attempt: 1 });
    assert_eq!(h.sched.next_wake(), None);
    assert_eq!(launched(&h.start()), vec![0, 4]);
    assert!(h.start().is_empty(), "a second Start changes nothing");
}

#[test]
fn an_empty_pipeline_succeeds_at_start() {
    let mut h = Harness::new(Vec::new(), RunConfig::default());
    assert_eq!(
        h.start(),
        vec![Action::Finish {
            outcome: RunOutcome::Succeeded
        }]
    );
}

#[test]
fn max_parallelism_bounds_live_steps() {
    // (limit, independent steps, launched at start)
    let table = [
        (None, 6, 6),
        (limit(1), 6, 1),
        (limit(4), 6, 4),
        (limit(10), 6, 6),
    ];
    for (max, n, at_start) in table {
        let spec = (0..n)
            .map(|i| StepSpec::new(format!("s{i}"), vec![]))
            .collect();
        let config = RunConfig {
            max_parallelism: max,
            ..RunConfig::default()
        };
        let mut h = Harness::new(spec, config);
        let first = launched(&h.start());
        assert_eq!(first.len(), at_start, "limit {max:?}");
        // Each end frees exactly one slot while steps remain.
        let next = launched(&h.ok(first[0]));
        assert_eq!(next.len(), usize::from(at_start < n), "limit {max:?}");
        assert!(max.is_none_or(|m| h.sched.live() <= m.get()));
    }
}

#[test]
fn pending_and_running_count_toward_parallelism() {
    let spec = steps(&[("a", &[]), ("b", &[]), ("c", &[])]);
    let config = RunConfig {
        max_parallelism: limit(2),
        ..RunConfig::default()
    };
    let mut h = Harness::new(spec, config);
    assert_eq!(launched(&h.start()), vec![0, 1]);
    assert!(
        h.send(Event::Launched {
            step: 0,
            attempt: 1
        })
        .is_empty()
    );
    assert_eq!(h.state(0), StepState::Pending { attempt: 1 });
    assert!(
        h.send(Event::Running {
            step: 1,
            attempt: 1
        })
        .is_empty()
    );
    assert_eq!(h.state(1), StepState::Running { attempt: 1 });
    assert_eq!(h.sched.live(), 2);
    assert_eq!(launched(&h.ok(1)), vec![2]);
}

#[test]
fn startup_period_allows_one_launch_per_period() {
    let spec = steps(&[("a", &[]), ("b", &[]), ("c", &[])]);
    let config = RunConfig {
        startup_period: secs(10),
        ..RunConfig::default()
    };
    let mut h = Harness::new(spec, config);
    assert_eq!(
        h.start(),
        vec![
            Action::Launch {
                step: 0,
                attempt: 1
            },
            Action::WakeAt { at: secs(10) }
        ]
    );
    assert_eq!(h.sched.next_wake(), Some(secs(10)));
    assert!(
        h.tick(secs(5)).is_empty(),
        "too early, and the wake-up was asked once"
    );
    assert_eq!(
        h.tick(secs(10)),
        vec![
            Action::Launch {
                step: 1,
                attempt: 1
            },
            Action::WakeAt { at: secs(20) }
        ]
    );
    // A late timer launches one, not the backlog.
    assert_eq!(launched(&h.tick(secs(35))), vec![2]);
    assert_eq!(h.sched.next_wake(), None);
}

#[test]
fn startup_period_also_spaces_steps_unblocked_by_an_event() {
    let spec = steps(&[("a", &[]), ("b", &[0]), ("c", &[0])]);
    let config = RunConfig {
        startup_period: secs(3),
        ..RunConfig::default()
    };
    let mut h = Harness::new(spec, config);
    h.start();
    h.at(secs(1));
    // a launched at 0 s: b and c are ready at 1 s but wait for the slot.
    assert_eq!(h.ok(0), vec![Action::WakeAt { at: secs(3) }]);
    assert_eq!(
        h.tick(secs(3)),
        vec![
            Action::Launch {
                step: 1,
                attempt: 1
            },
            Action::WakeAt { at: secs(6) }
        ]
    );
    assert!(launched(&h.tick(secs(5))).is_empty());
    assert_eq!(launched(&h.tick(secs(6))), vec![2]);
}

#[test]
fn retry_delays_grow_by_the_backoff_factor() {
    // (max_retries, delay s, backoff, waits before attempts 2.. in seconds)
    let table: [(u32, u64, f64, &[u64]); 4] = [
        (0, 10, 2.0, &[]),
        (3, 10, 1.0, &[10, 10, 10]),
        (3, 10, 2.0, &[10, 20, 40]),
        (2, 0, 3.0, &[0, 0]),
    ];
    for (max_retries, delay, backoff, waits) in table {
        let mut spec = steps(&[("a", &[])]);
        spec[0].retry = RetryPolicy {
            max_retries,
            delay: secs(delay),
            backoff,
        };
        let mut h = Harness::new(spec, RunConfig::default());
        h.start();
        for (k, &wait) in waits.iter().enumerate() {
            let attempt = k as u32 + 2;
            let failed_at = h.now;
            let actions = h.fail(0);
            let due = failed_at + secs(wait);
            assert_eq!(
                actions.first(),
                Some(&Action::RetryAfter {
                    step: 0,
                    attempt,
                    at: due
                }),
                "{max_retries} retries, delay {delay}, backoff {backoff}"
            );
            if wait > 0 {
                assert!(launched(&actions).is_empty());
                assert_eq!(h.sched.next_wake(), Some(due));
                assert!(launched(&h.tick(due - Duration::from_millis(1))).is_empty());
                assert_eq!(
                    h.tick(due),
                    vec![Action::Launch { step: 0, attempt }],
                    "attempt {attempt}"
                );
            } else {
                assert_eq!(launched(&actions), vec![0], "no delay: relaunched at once");
            }
        }
        let end = h.fail(0);
        assert_eq!(
            h.state(0),
            StepState::Failed {
                attempt: max_retries + 1
            }
        );
        assert_eq!(h.sched.attempts(0), max_retries + 1);
        assert_eq!(finish(&end), Some(RunOutcome::Failed));
    }
}

#[test]
fn a_retry_that_succeeds_unblocks_downstream_and_keeps_the_failure() {
    let mut spec = steps(&[("a", &[]), ("b", &[0])]);
    spec[0].retry.max_retries = 1;
    let mut h = Harness::new(spec, RunConfig::default());
    h.start();
    assert_eq!(launched(&h.fail(0)), vec![0]);
    assert_eq!(launched(&h.ok(0)), vec![1]);
    assert_eq!(h.state(0), StepState::Succeeded { attempt: 2 });
    assert_eq!(h.sched.last_failure(0).map(|f| f.attempt), Some(1));
}

#[test]
fn delay_after_is_total_on_odd_numbers() {
    // (delay s, backoff, failed attempt, expected wait)
    let table = [
        (10.0, 2.0, 1, Some(Duration::from_secs(10))),
        (10.0, 2.0, 3, Some(Duration::from_secs(40))),
        (10.0, 0.5, 2, Some(Duration::from_secs(5))),
        (10.0, f64::NAN, 4, Some(Duration::from_secs(10))),
        (10.0, -2.0, 4, Some(Duration::from_secs(10))),
        (10.0, f64::INFINITY, 2, Some(Duration::MAX)),
        (0.0, f64::INFINITY, 2, Some(Duration::ZERO)),
        (10.0, 1e300, 5, Some(Duration::MAX)),
        (1.0, 2.0, u32::MAX, Some(Duration::MAX)),
        (1.0, 0.0, 1, Some(Duration::from_secs(1))),
    ];
    for (delay, backoff, attempt, want) in table {
        let policy = RetryPolicy {
            max_retries: 9,
            delay: Duration::from_secs_f64(delay),
            backoff,
        };
        assert_eq!(
            Some(policy.delay_after(attempt)),
            want,
            "delay {delay}, backoff {backoff}, attempt {attempt}"
        );
    }
}

#[test]
fn a_huge_retry_delay_saturates_instead_of_panicking() {
    let mut spec = steps(&[("a", &[])]);
    spec[0].retry = RetryPolicy {
        max_retries: 1,
        delay: Duration::MAX,
        backoff: 1.0,
    };
    let mut h = Harness::new(spec, RunConfig::default());
    h.at(secs(5)).start();
    let actions = h.fail(0);
    assert_eq!(
        actions,
        vec![Action::RetryAfter {
            step: 0,
            attempt: 2,
            at: Duration::MAX
        }]
    );
}

#[test]
fn a_failure_skips_downstream_transitively_and_independent_steps_go_on() {
    // a -> b -> c, a -> d, e independent; a fails.
    let spec = steps(&[
        ("a", &[]),
        ("b", &[0]),
        ("c", &[1]),
        ("d", &[0]),
        ("e", &[]),
    ]);
    let mut h = Harness::new(spec, RunConfig::default());
    h.start();
    let actions = h.fail(0);
    let because = SkipReason::UpstreamFailed { upstream: 0 };
    let mut skipped: Vec<_> = actions
        .iter()
        .filter_map(|a| match a {
            Action::Skip { step, because: why } => {
                assert_eq!(*why, because);
                Some(*step)
            }
            _ => None,
        })
        .collect();
    skipped.sort_unstable();
    assert_eq!(skipped, vec![1, 2, 3]);
    assert_eq!(finish(&actions), None, "e still runs");
    assert_eq!(h.state(4), StepState::Launching { attempt: 1 });
    let end = h.ok(4);
    assert_eq!(finish(&end), Some(RunOutcome::Failed));
    assert_eq!(
        h.sched.summary(),
        Summary {
            succeeded: 1,
            failed: 1,
            skipped: 3,
            cancelled: 0
        }
    );
    assert_eq!(h.sched.last_failure(0).unwrap().exit_code, Some(1));
}

#[test]
fn fail_fast_cancels_live_steps_and_skips_the_rest() {
    // a, b, c roots (c retries and is backing off); d after a; e after b.
    let mut spec = steps(&[("a", &[]), ("b", &[]), ("c", &[]), ("d", &[0]), ("e", &[1])]);
    spec[2].retry = RetryPolicy {
        max_retries: 2,
        delay: secs(30),
        backoff: 1.0,
    };
    let config = RunConfig {
        fail_fast: true,
        ..RunConfig::default()
    };
    let mut h = Harness::new(spec, config);
    h.start();
    h.fail(2);
    assert!(matches!(
        h.state(2),
        StepState::BackingOff { attempt: 2, .. }
    ));
    let actions = h.fail(1);
    assert_eq!(
        actions,
        vec![
            Action::Skip {
                step: 4,
                because: SkipReason::UpstreamFailed { upstream: 1 }
            },
            Action::Cancel {
                step: 0,
                attempt: 1
            },
            Action::Skip {
                step: 3,
                because: SkipReason::FailFast { failed: 1 }
            },
            Action::Finish {
                outcome: RunOutcome::Failed
            },
        ]
    );
    let states: Vec<_> = h.sched.states().iter().map(|s| s.terminal()).collect();
    assert_eq!(
        states,
        [
            Terminal::Cancelled,
            Terminal::Failed,
            Terminal::Failed, // its first attempt failed; the retry never came
            Terminal::Skipped,
            Terminal::Skipped
        ]
        .map(Some)
    );
    assert_eq!(h.sched.next_wake(), None);
    assert!(h.tick(secs(60)).is_empty(), "the retry is gone");
}

#[test]
fn pending_too_long_is_a_failed_attempt_and_cancels_the_stuck_one() {
    let mut spec = steps(&[("a", &[]), ("b", &[0])]);
    spec[0].retry = RetryPolicy {
        max_retries: 1,
        delay: secs(5),
        backoff: 1.0,
    };
    let mut h = Harness::new(spec, RunConfig::default());
    h.start();
    h.send(Event::Launched {
        step: 0,
        attempt: 1,
    });
    h.at(secs(600));
    let stuck = Event::PendingTooLong {
        step: 0,
        attempt: 1,
        reason: "Unschedulable".into(),
    };
    assert_eq!(
        h.send(stuck),
        vec![
            Action::Cancel {
                step: 0,
                attempt: 1
            },
            Action::RetryAfter {
                step: 0,
                attempt: 2,
                at: secs(605)
            }
        ]
    );
    assert_eq!(h.sched.live(), 0);
    assert_eq!(launched(&h.tick(secs(605))), vec![0]);
    // Attempt 2 gets stuck too: no retries left, so the step fails.
    let actions = h.send(Event::PendingTooLong {
        step: 0,
        attempt: 2,
        reason: "Unschedulable".into(),
    });
    assert_eq!(
        actions[0],
        Action::Cancel {
            step: 0,
            attempt: 2
        }
    );
    assert_eq!(h.state(0), StepState::Failed { attempt: 2 });
    assert_eq!(h.sched.last_failure(0).unwrap().reason, "Unschedulable");
    assert_eq!(finish(&actions), Some(RunOutcome::Failed));
}

#[test]
fn pending_too_long_for_a_running_attempt_is_ignored() {
    let mut h = Harness::new(steps(&[("a", &[])]), RunConfig::default());
    h.start();
    h.send(Event::Running {
        step: 0,
        attempt: 1,
    });
    let late = Event::PendingTooLong {
        step: 0,
        attempt: 1,
        reason: "x".into(),
    };
    assert!(h.send(late).is_empty());
    assert_eq!(h.state(0), StepState::Running { attempt: 1 });
}

#[test]
fn stale_and_duplicate_events_are_ignored() {
    let mut spec = steps(&[("a", &[]), ("b", &[0])]);
    spec[0].retry.max_retries = 2;
    let mut h = Harness::new(spec, RunConfig::default());
    h.start();
    h.fail(0); // attempt 2 launched at once (no delay)
    assert_eq!(h.state(0), StepState::Launching { attempt: 2 });
    let stale = [
        Event::Succeeded {
            step: 0,
            attempt: 1,
        },
        Event::Failed {
            step: 0,
            attempt: 1,
            exit_code: None,
            reason: "old pod".into(),
        },
        Event::Running {
            step: 0,
            attempt: 3,
        },
        Event::Launched {
            step: 1,
            attempt: 1,
        },
        Event::Succeeded {
            step: 1,
            attempt: 1,
        },
    ];
    for event in stale {
        assert!(h.send(event.clone()).is_empty(), "{event:?}");
        assert_eq!(h.state(0), StepState::Launching { attempt: 2 });
        assert_eq!(h.state(1), StepState::Waiting);
    }
    // Duplicates of a valid event are harmless.
    for _ in 0..2 {
        h.send(Event::Running {
            step: 0,
            attempt: 2,
        });
    }
    assert_eq!(h.state(0), StepState::Running { attempt: 2 });
    // A success straight from Launching (missed watch events) is taken.
    assert_eq!(launched(&h.ok(0)), vec![1]);
    let end = h.ok(1);
    assert_eq!(finish(&end), Some(RunOutcome::Succeeded));
    assert!(
        h.send(Event::Failed {
            step: 1,
            attempt: 1,
            exit_code: Some(1),
            reason: "after the end".into()
        })
        .is_empty()
    );
    assert!(h.send(Event::StopRequested { force: true }).is_empty());
}

#[test]
fn an_unknown_step_is_an_error_not_a_panic() {
    let mut h = Harness::new(steps(&[("a", &[])]), RunConfig::default());
    let err = h
        .sched
        .handle(
            Duration::ZERO,
            Event::Succeeded {
                step: 7,
                attempt: 1,
            },
        )
        .unwrap_err();
    assert_eq!(err, SchedulerError::UnknownStep { step: 7, steps: 1 });
    assert_eq!(h.sched.state(7), None);
    assert_eq!(h.sched.attempts(7), 0);
    assert!(h.sched.downstream(7).is_empty());
}

#[test]
fn time_never_runs_backwards() {
    let mut spec = steps(&[("a", &[])]);
    spec[0].retry = RetryPolicy {
        max_retries: 1,
        delay: secs(10),
        backoff: 1.0,
    };
    let mut h = Harness::new(spec, RunConfig::default());
    h.start();
    h.at(secs(100));
    h.fail(0);
    // An event stamped earlier counts as happening at 100 s.
    h.at(secs(50));
    assert!(launched(&h.send(Event::TimerFired)).is_empty());
    assert_eq!(launched(&h.tick(secs(110))), vec![0]);
}

#[test]
fn an_unrecoverable_failure_is_final_despite_retries_left() {
    let mut spec = steps(&[("a", &[]), ("b", &[0]), ("c", &[])]);
    spec[0].retry.max_retries = 3;
    let mut h = Harness::new(spec, RunConfig::default());
    assert_eq!(launched(&h.start()), vec![0, 2]);
    let actions = h.send(Event::Unrecoverable {
        step: 0,
        attempt: 1,
        reason: "ErrImagePull: not found".into(),
    });
    assert!(
        !actions
            .iter()
            .any(|a| matches!(a, Action::RetryAfter { .. } | Action::Launch { .. })),
        "no retry: {actions:?}"
    );
    assert_eq!(h.state(0), StepState::Failed { attempt: 1 });
    assert!(matches!(h.state(1), StepState::Skipped { .. }));
    let end = h.ok(2);
    assert_eq!(finish(&end), Some(RunOutcome::Failed));
    assert_eq!(
        h.sched.last_failure(0).map(|f| f.reason.as_str()),
        Some("ErrImagePull: not found")
    );
}
