//! Measures the scheduler's CPU cost per state transition (one `handle`
//! call) and its memory, on random DAGs driven by simulated events:
//! `cargo run --release -p kiln-runner --example scheduler_bench [STEPS...]`
//! (default 10000 and 100000, to show both stay flat / linear as the graph
//! grows).
//!
//! CPU time is the thread's own, from `/proc/thread-self/schedstat` on Linux
//! (wall time elsewhere); that counter moves in scheduler ticks, so each size
//! is run repeatedly until a third of a second of CPU has accumulated.
//! Memory is the growth of the resident set during the first run. A second
//! scenario force-stops each run half way, to time the one call that walks
//! every step (the wind-down).

use std::collections::VecDeque;
use std::num::NonZeroUsize;
use std::time::{Duration, Instant};

use kiln_runner::scheduler::{
    Action, Event, RetryPolicy, RunConfig, RunOutcome, Scheduler, StepSpec,
};

/// A tiny deterministic generator, so runs are repeatable without a
/// dependency.
struct XorShift(u64);

impl XorShift {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }
}

/// Up to 3 upstream steps each, among the previous 500: long chains and
/// wide levels at once.
fn random_dag(rng: &mut XorShift, n: usize) -> Vec<StepSpec> {
    (0..n)
        .map(|i| {
            let upstream = if i == 0 {
                Vec::new()
            } else {
                let span = i.min(500) as u64;
                (0..rng.below(4))
                    .map(|_| i - 1 - rng.below(span) as usize)
                    .collect()
            };
            StepSpec {
                name: format!("step-{i}"),
                upstream,
                retry: RetryPolicy {
                    max_retries: 2,
                    delay: Duration::from_millis(rng.below(10_000)),
                    backoff: 2.0,
                },
            }
        })
        .collect()
}

/// The calling thread's CPU time, or wall time where that is unknown.
fn cpu_now(wall_start: Instant) -> Duration {
    std::fs::read_to_string("/proc/thread-self/schedstat")
        .ok()
        .and_then(|s| s.split_whitespace().next()?.parse::<u64>().ok())
        .map(Duration::from_nanos)
        .unwrap_or_else(|| wall_start.elapsed())
}

/// Resident set size in KiB (Linux), 0 elsewhere.
fn rss_kib() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmRSS:"))?
                .split_whitespace()
                .nth(1)?
                .parse()
                .ok()
        })
        .unwrap_or(0)
}

struct Report {
    transitions: u64,
    cpu: Duration,
    worst: Duration,
    /// What the worst call was about.
    worst_event: &'static str,
    /// The cost of the force stop, when one was sent.
    stop: Option<Duration>,
    rss_growth_kib: u64,
    outcome: Option<RunOutcome>,
    launches: u64,
}

/// Drives one run: attempts end in random order (97% succeed, 2% fail,
/// 1% stay pending too long; every step may retry twice); when nothing is
/// live, time jumps to the next wake-up the scheduler asked for. With
/// `stop_half_way`, a force stop is sent once half the steps launched.
fn drive(n: usize, seed: u64, stop_half_way: bool) -> Result<Report, Box<dyn std::error::Error>> {
    let mut rng = XorShift(seed);
    let steps = random_dag(&mut rng, n);
    let rss_before = rss_kib();
    let config = RunConfig {
        max_parallelism: NonZeroUsize::new(256),
        startup_period: Duration::ZERO,
        fail_fast: false,
        timeout: None,
    };
    let wall = Instant::now();
    let cpu_start = cpu_now(wall);
    let mut sched = Scheduler::new(steps, config)?;
    let mut live: Vec<(usize, u32)> = Vec::new();
    let mut inbox: VecDeque<Event> = VecDeque::from([Event::Start]);
    let mut now = Duration::ZERO;
    let (mut transitions, mut launches, mut worst) = (0u64, 0u64, Duration::ZERO);
    let mut stop = None;
    let mut worst_event = "";
    loop {
        let stopping = stop_half_way && stop.is_none() && launches as usize >= n / 2;
        if stopping {
            inbox.push_back(Event::StopRequested { force: true });
        }
        let event = match inbox.pop_front() {
            Some(event) => event,
            None if sched.is_finished() => break,
            None if !live.is_empty() => {
                let (step, attempt) = live.swap_remove(rng.below(live.len() as u64) as usize);
                now += Duration::from_millis(rng.below(100));
                match rng.below(100) {
                    0..=96 => Event::Succeeded { step, attempt },
                    97..=98 => Event::Failed {
                        step,
                        attempt,
                        exit_code: Some(1),
                        reason: "exit code 1".into(),
                    },
                    _ => Event::PendingTooLong {
                        step,
                        attempt,
                        reason: "Unschedulable".into(),
                    },
                }
            }
            None => match sched.next_wake() {
                Some(at) => {
                    now = now.max(at);
                    Event::TimerFired
                }
                None => return Err("run stuck: nothing live and no wake-up".into()),
            },
        };
        let label = match event {
            Event::Start => "start",
            Event::Succeeded { .. } => "succeeded",
            Event::Failed { .. } => "failed",
            Event::PendingTooLong { .. } => "pending-too-long",
            Event::TimerFired => "timer",
            _ => "other",
        };
        let t = Instant::now();
        let actions = sched.handle(now, event)?;
        let took = t.elapsed();
        if stopping {
            stop = Some(took);
        } else if took > worst {
            worst = took;
            worst_event = label;
        }
        transitions += 1;
        for action in actions {
            match action {
                Action::Launch { step, attempt } => {
                    launches += 1;
                    live.push((step, attempt));
                }
                Action::Cancel { step, attempt } => live.retain(|&l| l != (step, attempt)),
                _ => {}
            }
        }
    }
    let cpu = cpu_now(wall).saturating_sub(cpu_start);
    let rss_growth_kib = rss_kib().saturating_sub(rss_before);
    Ok(Report {
        transitions,
        cpu,
        worst,
        worst_event,
        stop,
        rss_growth_kib,
        outcome: sched.outcome(),
        launches,
    })
}

/// Runs size `n` until enough CPU time accumulated; sums the reports.
fn repeat(n: usize, stop_half_way: bool) -> Result<(Report, u32), Box<dyn std::error::Error>> {
    let mut total = drive(n, 0x2545_f491_4f6c_dd1d ^ n as u64, stop_half_way)?;
    let mut runs = 1;
    while total.cpu < Duration::from_millis(300) || runs < 3 {
        let r = drive(
            n,
            0x2545_f491_4f6c_dd1d ^ (n as u64 + u64::from(runs)),
            stop_half_way,
        )?;
        total.transitions += r.transitions;
        total.launches += r.launches;
        total.cpu += r.cpu;
        if r.worst > total.worst {
            total.worst = r.worst;
            total.worst_event = r.worst_event;
        }
        total.stop = total.stop.max(r.stop);
        runs += 1;
    }
    Ok((total, runs))
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let sizes: Vec<usize> = {
        let args: Vec<usize> = std::env::args()
            .skip(1)
            .map(|a| a.parse())
            .collect::<Result<_, _>>()?;
        if args.is_empty() {
            vec![10_000, 100_000]
        } else {
            args
        }
    };
    println!(
        "{:>8} {:>5} {:>6} {:>12} {:>14} {:>28} {:>10} {:>11}  first outcome",
        "steps",
        "runs",
        "stop",
        "transitions",
        "cpu/transition",
        "worst call (event)",
        "stop call",
        "rss growth"
    );
    for n in sizes {
        for stop_half_way in [false, true] {
            let (r, runs) = repeat(n, stop_half_way)?;
            let per = r.cpu.as_nanos() / u128::from(r.transitions.max(1));
            let stop = r.stop.map_or("-".to_string(), |d| format!("{d:.1?}"));
            println!(
                "{:>8} {:>5} {:>6} {:>12} {:>11} ns {:>28} {:>10} {:>7} KiB  {:?}",
                n,
                runs,
                if stop_half_way { "force" } else { "-" },
                r.transitions,
                per,
                format!("{:.1?} ({})", r.worst, r.worst_event),
                stop,
                r.rss_growth_kib,
                r.outcome
            );
        }
    }
    Ok(())
}
