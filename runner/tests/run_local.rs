//! `kiln run` on this machine against the bench registry: the quickstart
//! end to end, a failing branch, retries with their delays, retrying only
//! what failed, Ctrl-C and SIGKILL during a run, and an image that cannot be
//! pulled.

#![allow(clippy::unwrap_used)] // test code: a failure is a test failure

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use kiln_testsupport::fixture::{Fixture, unique_repo};
use kiln_testsupport::{Bench, RunOutput};
use serde_json::Value;

const KILN: &str = env!("CARGO_BIN_EXE_kiln");

/// A copy of testdata/NAME pushing to a repository of its own.
fn project(name: &str) -> Fixture {
    let bench = Bench::get();
    let f = Fixture::copy(KILN, name);
    let repo = unique_repo(bench.registry(), &name.replace('/', "-"));
    f.point_at(bench.registry(), &repo);
    f
}

/// The run id kiln announces on stderr ("kiln: run ID of ...").
fn run_id(out: &RunOutput) -> String {
    out.stderr
        .lines()
        .find_map(|l| l.strip_prefix("kiln: run ")?.split(' ').next())
        .unwrap_or_else(|| panic!("no run id in:\n{}", out.stderr))
        .to_string()
}

fn show(f: &Fixture, run: &str) -> Value {
    let out = f.kiln(&["runs", "show", run, "--json"]);
    assert_eq!(out.code, 0, "{}", out.stderr);
    serde_json::from_str(&out.stdout).unwrap_or_else(|e| panic!("{e}: {}", out.stdout))
}

fn step<'a>(run: &'a Value, name: &str) -> &'a Value {
    run["steps"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["name"] == name)
        .unwrap_or_else(|| panic!("no step {name} in {run:#}"))
}

/// (step, status) of every step of a run record.
fn statuses(run: &Value) -> Vec<(String, String)> {
    run["steps"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| {
            (
                s["name"].as_str().unwrap().to_string(),
                s["status"].as_str().unwrap().to_string(),
            )
        })
        .collect()
}

fn pairs(list: &[(&str, &str)]) -> Vec<(String, String)> {
    list.iter()
        .map(|(a, b)| (a.to_string(), b.to_string()))
        .collect()
}

/// Seconds since the epoch of a recorded time (RFC 3339, UTC).
fn secs(v: &Value) -> f64 {
    // RFC 3339 in UTC: YYYY-MM-DDTHH:MM:SS[.fff]Z
    let text = v.as_str().unwrap_or_else(|| panic!("not a time: {v}"));
    let num = |r: std::ops::Range<usize>| -> i64 { text[r].parse().unwrap() };
    let (y, m, d) = (num(0..4), num(5..7), num(8..10));
    // Days from the civil date (Howard Hinnant's algorithm).
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let doy = (153 * ((m + 9) % 12) + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    let clock = num(11..13) * 3600 + num(14..16) * 60 + num(17..19);
    let frac: f64 = text[19..]
        .trim_end_matches('Z')
        .parse::<f64>()
        .unwrap_or(0.0);
    (days * 86_400 + clock) as f64 + frac
}

#[test]
fn the_quickstart_runs_green_and_a_second_run_reuses_everything() {
    let f = project("quickstart");
    let out = f.kiln(&["run"]);
    assert_eq!(out.code, 0, "{}\n{}", out.stdout, out.stderr);
    for line in [
        "load      | load: wrote 500 rows",
        "validate  | validate: 500 rows ok",
        "train     | slope",
    ] {
        assert!(out.stdout.contains(line), "no {line:?} in:\n{}", out.stdout);
    }
    assert!(
        out.stderr.contains("STEP"),
        "no summary table:\n{}",
        out.stderr
    );
    let run = show(&f, &run_id(&out));
    assert_eq!(run["status"], "succeeded", "{run:#}");
    assert!(
        statuses(&run).iter().all(|(_, s)| s == "succeeded"),
        "{run:#}"
    );
    // The steps exchanged files through the run directory.
    let files = std::path::PathBuf::from(run["run_dir"].as_str().unwrap());
    for file in ["raw.json", "features.json", "validation.json"] {
        assert!(
            files.join(file).is_file(),
            "{file} missing in {}",
            files.display()
        );
    }
    // Nothing to build the second time: every layer comes from the cache.
    let again = f.kiln(&["run"]);
    assert_eq!(again.code, 0, "{}", again.stderr);
    assert!(!again.stderr.contains(": built "), "{}", again.stderr);
}

#[test]
fn recorded_times_are_read_as_epoch_seconds() {
    let t = secs(&Value::String("2026-12-02T06:04:21.611Z".into()));
    assert!((t - 1_796_191_461.611).abs() < 1e-6, "{t}");
}

#[test]
fn a_failing_step_skips_its_downstream_and_the_sibling_branch_still_runs() {
    let f = project("runs/branches");
    let out = f.kiln(&["run"]);
    assert_eq!(out.code, 1, "{}\n{}", out.stdout, out.stderr);
    let id = run_id(&out);
    let run = show(&f, &id);
    assert_eq!(run["status"], "failed");
    assert_eq!(
        statuses(&run),
        pairs(&[
            ("prepare", "succeeded"),
            ("broken", "failed"),
            ("after_broken", "skipped"),
            ("sibling", "succeeded"),
        ])
    );
    let broken = step(&run, "broken");
    assert_eq!(broken["attempts"][0]["exit_code"], 1, "{broken:#}");
    assert!(
        step(&run, "after_broken")["reason"]
            .as_str()
            .unwrap()
            .contains("broken"),
        "{run:#}"
    );

    // The failing step's own output, from its log.
    let logs = f.kiln(&["logs", &id, "broken"]);
    assert_eq!(logs.code, 0, "{}", logs.stderr);
    assert!(
        logs.stdout.contains("broken: looking for the fix")
            && logs.stdout.contains("broken: no fix, giving up"),
        "{}",
        logs.stdout
    );

    // Fix the cause, retry: only the failed and skipped steps run.
    let files = std::path::PathBuf::from(run["run_dir"].as_str().unwrap());
    std::fs::write(files.join("fixed"), "yes").unwrap();
    let retry = f.kiln(&["run", "--retry-failed", &id]);
    assert_eq!(retry.code, 0, "{}\n{}", retry.stdout, retry.stderr);
    assert!(!retry.stdout.contains("prepare: done"), "{}", retry.stdout);
    assert!(!retry.stdout.contains("sibling: ran"), "{}", retry.stdout);
    assert!(retry.stdout.contains("broken: fixed"), "{}", retry.stdout);
    // after_broken reads what `prepare` wrote in the first run.
    assert!(
        retry.stdout.contains("after_broken | prepared"),
        "{}",
        retry.stdout
    );
    let second = show(&f, &run_id(&retry));
    assert_eq!(second["status"], "succeeded");
    assert_eq!(second["retry_of"], Value::String(id.clone()));
    assert_eq!(
        statuses(&second),
        pairs(&[
            ("prepare", "reused"),
            ("broken", "succeeded"),
            ("after_broken", "succeeded"),
            ("sibling", "reused"),
        ])
    );
}

#[test]
fn a_step_that_fails_twice_succeeds_on_attempt_3_after_the_configured_delays() {
    let f = project("runs/flaky");
    let out = f.kiln(&["run"]);
    assert_eq!(out.code, 0, "{}\n{}", out.stdout, out.stderr);
    let run = show(&f, &run_id(&out));
    let flaky = step(&run, "flaky");
    assert_eq!(flaky["status"], "succeeded");
    let attempts = flaky["attempts"].as_array().unwrap();
    let states: Vec<&str> = attempts
        .iter()
        .map(|a| a["status"].as_str().unwrap())
        .collect();
    assert_eq!(states, ["failed", "failed", "succeeded"]);
    // delay 1 s, backoff 2: the retries wait 1 s, then 2 s.
    for (i, want) in [(1, 1.0), (2, 2.0)] {
        let gap = secs(&attempts[i]["started"]) - secs(&attempts[i - 1]["ended"]);
        assert!(
            (want - 0.05..want + 0.75).contains(&gap),
            "attempt {} started {gap:.3} s after attempt {i} ended; want {want} s",
            i + 1
        );
    }
    assert!(out.stdout.contains("KILN_ATTEMPT=3"), "{}", out.stdout);
}

#[test]
fn an_image_that_cannot_be_pulled_fails_its_step_with_the_registrys_reason() {
    let f = project("runs/unpullable");
    let out = f.kiln(&["run"]);
    assert_eq!(out.code, 1, "{}", out.stderr);
    let run = show(&f, &run_id(&out));
    assert_eq!(step(&run, "fine")["status"], "succeeded");
    let ghost = step(&run, "ghost");
    assert_eq!(ghost["status"], "failed");
    let reason = ghost["reason"].as_str().unwrap();
    assert!(
        reason.contains("base/no-such-image:1") && reason.contains("not found"),
        "{reason}"
    );
}

/// Starts `kiln run` of testdata/runs/sleepy and waits until its step runs.
fn start_sleepy(f: &Fixture) -> (Child, String) {
    let mut child = Command::new(KILN)
        .current_dir(f.root())
        .arg("run")
        .env("HOME", f.home())
        .env("XDG_CACHE_HOME", f.cache_home())
        .env("XDG_DATA_HOME", f.data_home())
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        assert!(Instant::now() < deadline, "the step never started");
        if let Ok(Some(status)) = child.try_wait() {
            panic!("kiln ended early: {status}");
        }
        if sleeping().is_some() {
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    let list = f.kiln(&["runs", "list", "--json"]);
    let runs: Value = serde_json::from_str(&list.stdout).unwrap();
    let id = runs[0]["id"].as_str().unwrap().to_string();
    (child, id)
}

/// The pid of the step's `sleep 3131`, if it runs.
fn sleeping() -> Option<u32> {
    std::fs::read_dir("/proc").ok()?.flatten().find_map(|e| {
        let pid: u32 = e.file_name().to_str()?.parse().ok()?;
        let cmdline = std::fs::read(e.path().join("cmdline")).ok()?;
        (cmdline == b"sleep\x003131\x00").then_some(pid)
    })
}

fn gone_within(secs: u64) -> bool {
    let deadline = Instant::now() + Duration::from_secs(secs);
    while Instant::now() < deadline {
        if sleeping().is_none() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    false
}

// One test for both signals: they share the step's marker process.
#[test]
fn ctrl_c_cancels_running_steps_and_sigkill_leaves_an_interrupted_run() {
    let f = project("runs/sleepy");
    // SIGINT: the running step is cancelled and recorded so.
    let (mut child, id) = start_sleepy(&f);
    Command::new("kill")
        .args(["-INT", &child.id().to_string()])
        .status()
        .unwrap();
    let status = child.wait().unwrap();
    assert_eq!(status.code(), Some(1), "{status}");
    assert!(gone_within(5), "the step's process outlived kiln");
    let run = show(&f, &id);
    assert_eq!(run["status"], "stopped", "{run:#}");
    assert_eq!(
        statuses(&run),
        pairs(&[("nap", "cancelled"), ("after", "skipped")])
    );

    // SIGKILL: kiln cannot clean up; the kernel kills the step, and the
    // record reads as interrupted, not running forever.
    let (mut child, id) = start_sleepy(&f);
    child.kill().unwrap();
    child.wait().unwrap();
    assert!(gone_within(5), "the step's process outlived kiln");
    let run = show(&f, &id);
    assert_eq!(run["status"], "interrupted", "{run:#}");
    let list = f.kiln(&["runs", "list"]);
    assert!(list.stdout.contains("interrupted"), "{}", list.stdout);

    // The killed run's scratch (its step's overlay) is left behind, and
    // `kiln cache prune` removes it; its logs stay.
    let run_root = std::path::PathBuf::from(run["run_dir"].as_str().unwrap())
        .parent()
        .unwrap()
        .to_path_buf();
    let scratch = |root: &std::path::Path| {
        std::fs::read_dir(root.join("scratch"))
            .map(|d| d.count())
            .unwrap_or(0)
    };
    assert!(scratch(&run_root) > 0, "no scratch after SIGKILL?");
    let out = f.kiln(&["cache", "prune"]);
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert_eq!(scratch(&run_root), 0, "{}", out.stdout);
    assert!(run_root.join("logs").is_dir());
}
