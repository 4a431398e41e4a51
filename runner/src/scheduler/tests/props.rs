//! Property tests: random DAGs, retry policies and limits, driven by random
//! outcome orders through the simulated backend, which checks after every
//! call that no step starts before its upstream succeeded, parallelism and
//! the startup period hold, attempts stay within retries + 1, and at the
//! end that every step is in exactly one terminal state and the run ended
//! within a bound.

use proptest::collection::vec;
use proptest::option;
use proptest::prelude::*;
use proptest::sample::Index;
use proptest::test_runner::FileFailurePersistence;

use super::sim::Sim;
use super::*;

#[derive(Debug, Clone)]
struct Case {
    steps: Vec<StepSpec>,
    config: RunConfig,
    choices: Vec<u32>,
}

/// A DAG over a random permutation of `n` steps (so index order is not
/// topological order): each step picks up to 3 upstream steps among those
/// placed before it.
fn arb_steps(max_steps: usize) -> impl Strategy<Value = Vec<StepSpec>> {
    (1..=max_steps)
        .prop_flat_map(|n| {
            let order = Just((0..n).collect::<Vec<usize>>()).prop_shuffle();
            let picks = vec(vec(any::<Index>(), 0..4), n);
            let retries = vec(
                (
                    0u32..3,
                    0u64..4000,
                    prop_oneof![Just(0.5), Just(1.0), Just(2.0)],
                ),
                n,
            );
            (order, picks, retries)
        })
        .prop_map(|(order, picks, retries)| {
            let mut steps: Vec<StepSpec> = (0..order.len())
                .map(|i| StepSpec::new(format!("s{i}"), Vec::new()))
                .collect();
            for (pos, picks) in picks.iter().enumerate().skip(1) {
                steps[order[pos]].upstream = picks.iter().map(|ix| order[ix.index(pos)]).collect();
            }
            for (spec, (max_retries, delay_ms, backoff)) in steps.iter_mut().zip(retries) {
                spec.retry = RetryPolicy {
                    max_retries,
                    delay: Duration::from_millis(delay_ms),
                    backoff,
                };
            }
            steps
        })
}

fn arb_config(with_timeout: bool) -> impl Strategy<Value = RunConfig> {
    let timeout = if with_timeout {
        option::of(5u64..300).boxed()
    } else {
        Just(None).boxed()
    };
    (
        option::of(1usize..5),
        prop_oneof![Just(0u64), 1u64..2000],
        proptest::bool::weighted(0.25),
        timeout,
    )
        .prop_map(|(max, period_ms, fail_fast, timeout)| RunConfig {
            max_parallelism: max.and_then(NonZeroUsize::new),
            startup_period: Duration::from_millis(period_ms),
            fail_fast,
            timeout: timeout.map(secs),
        })
}

fn arb_case(max_steps: usize, with_timeout: bool) -> impl Strategy<Value = Case> {
    (
        arb_steps(max_steps),
        arb_config(with_timeout),
        vec(any::<u32>(), 0..300),
    )
        .prop_map(|(steps, config, choices)| Case {
            steps,
            config,
            choices,
        })
}

/// 1000 cases unless `PROPTEST_CASES` says otherwise; a failing case is
/// saved next to this file (`props.regressions`), inside the scheduler's
/// own directory.
fn config() -> ProptestConfig {
    let base = ProptestConfig::default();
    ProptestConfig {
        cases: if std::env::var_os("PROPTEST_CASES").is_some() {
            base.cases
        } else {
            1000
        },
        failure_persistence: Some(Box::new(FileFailurePersistence::WithSource("regressions"))),
        ..base
    }
}

proptest! {
    #![proptest_config(config())]

    /// Every invariant, with stops, timeouts and fail-fast in the mix.
    #[test]
    fn random_runs_keep_every_invariant(case in arb_case(24, true), allow_stop in any::<bool>()) {
        let sched = Scheduler::new(case.steps, case.config).unwrap();
        let mut sim = Sim::new(sched, true);
        sim.run(&case.choices, allow_stop);
    }

    /// Without stops or deadlines, failures only skip what is downstream
    /// (checked exactly by the simulator's final check).
    #[test]
    fn failures_skip_only_downstream(case in arb_case(24, false)) {
        let config = RunConfig { fail_fast: false, ..case.config };
        let sched = Scheduler::new(case.steps, config).unwrap();
        let mut sim = Sim::new(sched, true);
        sim.run(&case.choices, false);
        prop_assert!(sim.sched.outcome().is_some());
    }

    /// An orchestrator that restarts mid-run and resumes from what it
    /// observes never runs a succeeded step again, and the run still ends
    /// with every invariant.
    #[test]
    fn resumed_runs_never_rerun_succeeded_steps(
        case in arb_case(16, false),
        cut in any::<Index>(),
    ) {
        let steps = case.steps.clone();
        let mut sim = Sim::new(Scheduler::new(case.steps, case.config).unwrap(), true);
        sim.send(Event::Start);
        // Cut in the first half, where the run is usually still going.
        let cut = cut.index(case.choices.len() / 2 + 1);
        sim.play(&case.choices[..cut], false);
        if sim.sched.is_finished() {
            return Ok(());
        }

        let observed = sim.observed();
        let resumed = Scheduler::resume(steps, case.config, &observed).unwrap();
        let done: Vec<bool> = sim.reported_ok.iter().map(Option::is_some).collect();
        let launched_before = sim.launched.clone();
        let mut sim = sim.resumed(resumed);
        sim.run(&case.choices[cut..], false);
        for (step, was_done) in done.into_iter().enumerate() {
            if was_done {
                prop_assert_eq!(sim.launched[step], launched_before[step], "step {} re-ran", step);
            }
        }
    }
}

#[test]
fn a_dense_dag_with_tight_limits_ends() {
    // Every step depends on every earlier one: the longest chain there is.
    let n = 40;
    let spec = (0..n)
        .map(|i| StepSpec::new(format!("s{i}"), (0..i).collect()))
        .collect();
    let config = RunConfig {
        max_parallelism: limit(1),
        startup_period: secs(1),
        ..RunConfig::default()
    };
    let mut sim = Sim::new(Scheduler::new(spec, config).unwrap(), true);
    sim.run(&[], false);
    assert_eq!(sim.sched.outcome(), Some(RunOutcome::Succeeded));
}
