//! `kiln runs` and `kiln logs` end to end: records written through the
//! library into a temporary XDG_DATA_HOME, read back by the `kiln` binary.
#![allow(clippy::unwrap_used)] // test helpers: a failure is a test failure

mod common;

use std::io::Write as _;
use std::os::unix::process::ExitStatusExt as _;
use std::path::PathBuf;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, SystemTime};

use common::{lines_of, wait_for_exit};
use kiln_runner::records::{
    AttemptStatus, NewRun, NewStep, Records, RunLock, RunStatus, StepStatus,
};

/// A temporary XDG_DATA_HOME and the records in it.
struct Env {
    home: tempfile::TempDir,
    records: Records,
}

impl Env {
    fn new() -> Env {
        let home = tempfile::tempdir().unwrap();
        let records = Records::open(&home.path().join("kiln")).unwrap();
        Env { home, records }
    }

    fn data_dir(&self) -> PathBuf {
        self.home.path().join("kiln")
    }

    fn logs(&self) -> PathBuf {
        self.home.path().join("logs")
    }

    fn command(&self, args: &[&str]) -> Command {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_kiln"));
        cmd.args(args)
            .env("XDG_DATA_HOME", self.home.path())
            .env("HOME", self.home.path());
        cmd
    }

    fn kiln(&self, args: &[&str]) -> Output {
        self.command(args).output().expect("kiln runs")
    }

    /// A run of steps `load` and `train`, recorded as run by `pid`.
    fn create(&self, pid: u32) -> String {
        let step = |name: &str, upstream: &[&str]| NewStep {
            name: name.into(),
            image: None,
            upstream: upstream.iter().map(|s| s.to_string()).collect(),
        };
        self.records
            .create_run(&NewRun {
                pipeline: "quickstart".into(),
                file: "/p/kiln.yaml".into(),
                run_dir: self.home.path().join("run"),
                log_dir: self.logs(),
                steps: vec![step("load", &[]), step("train", &["load"])],
                retry_of: None,
                started: SystemTime::now() - Duration::from_secs(90),
                pid,
            })
            .unwrap()
    }

    /// Starts an attempt whose log holds `text`.
    fn attempt(&self, run: &str, step: &str, n: u32, text: &str) -> PathBuf {
        std::fs::create_dir_all(self.logs()).unwrap();
        let log = self.logs().join(format!("{run}-{step}-{n}.log"));
        std::fs::write(&log, text).unwrap();
        self.records
            .attempt_started(run, step, n, &log, SystemTime::now())
            .unwrap();
        log
    }

    fn end_attempt(&self, run: &str, step: &str, n: u32, code: i32) {
        let status = if code == 0 {
            AttemptStatus::Succeeded
        } else {
            AttemptStatus::Failed
        };
        self.records
            .attempt_ended(run, step, n, status, Some(code), None, SystemTime::now())
            .unwrap();
    }

    /// A live run: `load` failed once then succeeded, `train` runs.
    fn live_run(&self) -> (String, RunLock, PathBuf) {
        let run = self.create(std::process::id());
        let lock = RunLock::acquire(&self.data_dir(), &run).unwrap();
        self.attempt(&run, "load", 1, "fetching\nconnection reset\n");
        self.end_attempt(&run, "load", 1, 7);
        self.records
            .retry_scheduled(&run, "load", 2, SystemTime::now())
            .unwrap();
        let load_log = self.attempt(&run, "load", 2, "fetching\nloaded 10 rows\n");
        self.end_attempt(&run, "load", 2, 0);
        self.records
            .step_ended(&run, "load", StepStatus::Succeeded, None)
            .unwrap();
        self.attempt(&run, "train", 1, "epoch 1\n");
        (run, lock, load_log)
    }
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

#[test]
fn list_says_when_there_are_no_runs() {
    let env = Env::new();
    let out = env.kiln(&["runs", "list"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_eq!(text(&out.stdout), "no runs yet\n");
}

#[test]
fn list_and_show_a_live_run() {
    let env = Env::new();
    let (run, _lock, load_log) = env.live_run();

    let out = env.kiln(&["runs", "list"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let stdout = text(&out.stdout);
    let lines: Vec<&str> = stdout.lines().collect();
    assert_eq!(lines.len(), 2, "{stdout}");
    let header: Vec<&str> = lines[0].split_whitespace().collect();
    assert_eq!(
        header,
        [
            "RUN", "PIPELINE", "STATUS", "STARTED", "DURATION", "STEPS", "BACKEND"
        ]
    );
    let row: Vec<&str> = lines[1].split_whitespace().collect();
    assert_eq!(row[0], run);
    assert_eq!(row[1], "quickstart");
    assert_eq!(row[2], "running");
    assert!(row[4].ends_with('Z'), "UTC start time: {stdout}");
    assert!(row[5].starts_with("1m3"), "about 90 s so far: {stdout}");
    assert_eq!(row[6], "1/2");
    assert_eq!(row[7], "local");

    let out = env.kiln(&["runs", "list", "--json"]);
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(json[0]["id"], run.as_str());
    assert_eq!(json[0]["status"], "running");
    assert_eq!(json[0]["steps_total"], 2);
    assert_eq!(json[0]["backend"], "local");

    let out = env.kiln(&["runs", "show", &run[..4]]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let stdout = text(&out.stdout);
    assert!(
        stdout.starts_with(&format!("run       {run}\n")),
        "{stdout}"
    );
    assert!(stdout.contains("status    running\n"), "{stdout}");
    assert!(stdout.contains("backend   local\n"), "{stdout}");
    let load: Vec<&str> = stdout
        .lines()
        .find(|l| l.starts_with("load "))
        .unwrap()
        .split_whitespace()
        .collect();
    // STEP STATUS ATTEMPTS DURATION EXIT REASON LOG
    assert_eq!(load[..3], ["load", "succeeded", "2"], "{stdout}");
    assert_eq!(load[4], "0", "exit code of the last attempt: {stdout}");
    assert_eq!(load[6], load_log.to_str().unwrap(), "{stdout}");
    let train = stdout.lines().find(|l| l.starts_with("train ")).unwrap();
    assert!(train.contains(" running "), "{stdout}");

    let out = env.kiln(&["runs", "show", &run, "--json"]);
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(json["steps"][0]["attempts"][0]["exit_code"], 7);
    assert_eq!(json["steps"][1]["status"], "running");
}

#[test]
fn logs_of_one_step_and_of_all() {
    let env = Env::new();
    let (run, _lock, _) = env.live_run();

    let out = env.kiln(&["logs", &run, "load"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_eq!(
        text(&out.stdout),
        "== load attempt 1 ==\nfetching\nconnection reset\n\
         == load attempt 2 ==\nfetching\nloaded 10 rows\n"
    );

    let out = env.kiln(&["logs", &run, "train"]);
    assert_eq!(text(&out.stdout), "epoch 1\n", "one attempt: no header");

    let out = env.kiln(&["logs", &run]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let stdout = text(&out.stdout);
    let lines: Vec<&str> = stdout.lines().collect();
    assert_eq!(lines[0], "load | == attempt 1 ==");
    assert_eq!(lines[1], "load | fetching");
    assert_eq!(lines.last(), Some(&"train | epoch 1"));
    assert_eq!(lines.len(), 7, "{stdout}");
}

#[test]
fn unknown_steps_and_runs_exit_1_naming_what_exists() {
    let env = Env::new();
    let (run, _lock, _) = env.live_run();

    let out = env.kiln(&["logs", &run, "nosuchstep"]);
    assert_eq!(out.status.code(), Some(1));
    let stderr = text(&out.stderr);
    assert!(stderr.contains("`nosuchstep`"), "{stderr}");
    assert!(stderr.contains("load, train"), "{stderr}");

    for args in [
        &["runs", "show", "nosuchrun"][..],
        &["logs", "nosuchrun"],
        &["runs", "stop", "nosuchrun"],
    ] {
        let out = env.kiln(args);
        assert_eq!(out.status.code(), Some(1), "{args:?}");
        let stderr = text(&out.stderr);
        assert!(stderr.contains("no run `nosuchrun`"), "{stderr}");
        assert!(stderr.contains(&run), "names the existing run: {stderr}");
    }
}

#[test]
fn a_run_whose_kiln_is_gone_is_interrupted_and_cannot_be_stopped() {
    let env = Env::new();
    let (run, lock, _) = env.live_run();
    drop(lock);

    let out = env.kiln(&["runs", "list"]);
    assert!(
        text(&out.stdout).contains(" interrupted "),
        "{}",
        text(&out.stdout)
    );
    let out = env.kiln(&["runs", "show", &run]);
    let stdout = text(&out.stdout);
    let train = stdout.lines().find(|l| l.starts_with("train ")).unwrap();
    assert!(train.contains("cancelled"), "{stdout}");
    assert!(train.contains("kiln exited during the run"), "{stdout}");

    let out = env.kiln(&["runs", "stop", &run]);
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(
        text(&out.stderr),
        format!("run {run} is not running (status: interrupted)\n")
    );
}

#[test]
fn stopping_a_finished_run_exits_1() {
    let env = Env::new();
    let run = env.create(std::process::id());
    env.records
        .finish_run(&run, RunStatus::Succeeded, SystemTime::now())
        .unwrap();
    let out = env.kiln(&["runs", "stop", &run, "--force"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        text(&out.stderr).contains("is not running (status: succeeded)"),
        "{}",
        text(&out.stderr)
    );
}

/// Stop signals the recorded pid: SIGUSR1 graceful, SIGTERM forced. A
/// `sleep` stands in for the running kiln; both signals end it.
#[test]
fn stop_signals_the_running_kiln() {
    for (force, signal) in [(false, 10), (true, 15)] {
        let env = Env::new();
        let mut kiln = Command::new("sleep").arg("30").spawn().unwrap();
        let run = env.create(kiln.id());
        let _lock = RunLock::acquire(&env.data_dir(), &run).unwrap();
        let mut args = vec!["runs", "stop", run.as_str()];
        if force {
            args.push("--force");
        }
        let out = env.kiln(&args);
        assert!(out.status.success(), "{}", text(&out.stderr));
        assert!(text(&out.stdout).starts_with(&format!("stopping run {run}")));
        let status = kiln.wait().unwrap();
        assert_eq!(status.signal(), Some(signal), "force: {force}");
    }
}

#[test]
fn follow_prints_new_lines_and_attempts_until_the_run_ends() {
    let env = Env::new();
    let run = env.create(std::process::id());
    let lock = RunLock::acquire(&env.data_dir(), &run).unwrap();
    let log = env.attempt(&run, "train", 1, "epoch 1\n");

    let mut follower = env
        .command(&["logs", &run, "train", "--follow"])
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let lines = lines_of(follower.stdout.take().unwrap());
    let next = || lines.recv_timeout(Duration::from_secs(10)).unwrap();
    assert_eq!(next(), "epoch 1");

    let mut file = std::fs::OpenOptions::new().append(true).open(&log).unwrap();
    file.write_all(b"epoch 2\nepoch").unwrap();
    assert_eq!(next(), "epoch 2");
    std::thread::sleep(Duration::from_millis(500));
    file.write_all(b" 3\n").unwrap();
    assert_eq!(next(), "epoch 3", "a partial line waits for its end");
    env.end_attempt(&run, "train", 1, 1);
    env.attempt(&run, "train", 2, "retry epoch 1\n");
    assert_eq!(next(), "== train attempt 2 ==");
    assert_eq!(next(), "retry epoch 1");
    env.end_attempt(&run, "train", 2, 0);
    env.records
        .finish_run(&run, RunStatus::Succeeded, SystemTime::now())
        .unwrap();
    drop(lock);

    wait_for_exit(&mut follower, Duration::from_secs(10));
    assert!(lines.recv().is_err(), "nothing more after the end");
}
