use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use super::*;

fn at(secs: u64) -> SystemTime {
    UNIX_EPOCH + Duration::new(1_700_000_000 + secs, 123_456_789)
}

fn new_run(pipeline: &str, started: SystemTime, pid: u32) -> NewRun {
    let step = |name: &str, upstream: &[&str]| NewStep {
        name: name.into(),
        image: Some(format!("registry.test/{name}:1")),
        upstream: upstream.iter().map(|s| s.to_string()).collect(),
    };
    NewRun {
        pipeline: pipeline.into(),
        file: "/p/kiln.yaml".into(),
        run_dir: "/data/runs/x".into(),
        log_dir: "/data/logs/x".into(),
        steps: vec![
            step("load", &[]),
            step("train", &["load"]),
            step("eval", &["train"]),
        ],
        retry_of: None,
        started,
        pid,
    }
}

/// A run whose kiln is this test process, holding the run's lock.
fn live_run(records: &Records, dir: &Path, pipeline: &str) -> (RunId, RunLock) {
    let id = records
        .create_run(&new_run(pipeline, at(0), std::process::id()))
        .unwrap();
    let lock = RunLock::acquire(dir, &id).unwrap();
    (id, lock)
}

/// Lets a run's lock go and waits until nobody holds it: a process that
/// another test thread spawns at that moment holds a copy of the lock's
/// descriptor until it execs (descriptors are closed on exec, not on fork).
fn release(lock: RunLock, dir: &Path, run: &str) {
    drop(lock);
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while super::lock::probe(dir, run).unwrap() == super::lock::Holder::Alive {
        assert!(
            std::time::Instant::now() < deadline,
            "the lock of {run} is still held"
        );
        std::thread::sleep(std::time::Duration::from_millis(5));
    }
}

#[test]
fn a_created_run_reads_back() {
    let dir = tempfile::tempdir().unwrap();
    let records = Records::open(dir.path()).unwrap();
    let (id, _lock) = live_run(&records, dir.path(), "quickstart");
    assert_eq!(id.len(), 8);
    assert!(
        id.bytes()
            .all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase())
    );

    let detail = records.run(&id).unwrap();
    assert_eq!(detail.id, id);
    assert_eq!(detail.pipeline, "quickstart");
    assert_eq!(detail.file, PathBuf::from("/p/kiln.yaml"));
    assert_eq!(detail.log_dir, PathBuf::from("/data/logs/x"));
    assert_eq!(detail.status, RunStatus::Running);
    assert_eq!(detail.started, at(0), "times round-trip to the nanosecond");
    assert_eq!(detail.ended, None);
    assert_eq!(detail.pid, std::process::id());
    let names: Vec<_> = detail.steps.iter().map(|s| s.name.as_str()).collect();
    assert_eq!(names, ["load", "train", "eval"]);
    assert_eq!(detail.steps[1].upstream, ["load"]);
    assert_eq!(
        detail.steps[1].image.as_deref(),
        Some("registry.test/train:1")
    );
    assert!(detail.steps.iter().all(|s| s.status == StepStatus::Pending));
    assert!(detail.steps.iter().all(|s| s.attempts.is_empty()));

    let runs = records.list_runs().unwrap();
    assert_eq!(
        runs,
        [RunSummary {
            id: id.clone(),
            pipeline: "quickstart".into(),
            status: RunStatus::Running,
            started: at(0),
            ended: None,
            steps_total: 3,
            steps_succeeded: 0,
            backend: Backend::Local,
        }]
    );
    assert_eq!(detail.backend, Backend::Local);
    assert_eq!(detail.cluster, None);
    assert_eq!(records.cluster_run(&id).unwrap(), None);
}

#[test]
fn runs_list_newest_first_and_a_retry_names_its_origin() {
    let dir = tempfile::tempdir().unwrap();
    let records = Records::open(dir.path()).unwrap();
    let first = records.create_run(&new_run("a", at(10), 1)).unwrap();
    records
        .finish_run(&first, RunStatus::Failed, at(20))
        .unwrap();
    let mut retry = new_run("a", at(30), 1);
    retry.retry_of = Some(first.clone());
    let second = records.create_run(&retry).unwrap();
    records
        .finish_run(&second, RunStatus::Succeeded, at(40))
        .unwrap();

    let ids: Vec<_> = records
        .list_runs()
        .unwrap()
        .into_iter()
        .map(|r| r.id)
        .collect();
    assert_eq!(ids, [second.clone(), first.clone()]);
    let detail = records.run(&second).unwrap();
    assert_eq!(detail.retry_of, Some(first));
    assert_eq!(detail.status, RunStatus::Succeeded);
    assert_eq!(detail.ended, Some(at(40)));
}

#[test]
fn prefixes_resolve_when_unique_and_are_refused_otherwise() {
    let dir = tempfile::tempdir().unwrap();
    let records = Records::open(dir.path()).unwrap();
    // 17 runs: two of them share a first hex digit.
    let ids: Vec<RunId> = (0..17)
        .map(|i| {
            let id = records.create_run(&new_run("p", at(i), 1)).unwrap();
            records
                .finish_run(&id, RunStatus::Succeeded, at(i))
                .unwrap();
            id
        })
        .collect();

    for id in &ids {
        assert_eq!(&records.run(id).unwrap().id, id, "a full id resolves");
        let unique = (1..=8)
            .map(|n| &id[..n])
            .find(|p| ids.iter().filter(|o| o.starts_with(p)).count() == 1)
            .unwrap();
        assert_eq!(&records.run(unique).unwrap().id, id);
    }

    let shared = ids
        .iter()
        .map(|id| &id[..1])
        .find(|p| ids.iter().filter(|o| o.starts_with(p)).count() > 1)
        .unwrap();
    match records.run(shared) {
        Err(RecordsError::AmbiguousRun { given, candidates }) => {
            assert_eq!(given, shared);
            let mut expected: Vec<_> = ids.iter().filter(|o| o.starts_with(shared)).collect();
            expected.sort();
            assert_eq!(candidates.iter().collect::<Vec<_>>(), expected);
        }
        other => panic!("expected AmbiguousRun, got {other:?}"),
    }

    for given in ["zz", "", "%", "_"] {
        match records.run(given) {
            Err(RecordsError::UnknownRun { given: g }) => assert_eq!(g, given),
            other => panic!("expected UnknownRun for {given:?}, got {other:?}"),
        }
    }
}

#[test]
fn attempts_and_steps_move_through_their_statuses() {
    let dir = tempfile::tempdir().unwrap();
    let records = Records::open(dir.path()).unwrap();
    let (run, _lock) = live_run(&records, dir.path(), "p");
    let step = |name: &str| {
        records
            .run(&run)
            .unwrap()
            .steps
            .into_iter()
            .find(|s| s.name == name)
            .unwrap()
    };

    records
        .attempt_started(&run, "load", 1, Path::new("/logs/load.1"), at(1))
        .unwrap();
    let load = step("load");
    assert_eq!(load.status, StepStatus::Running);
    assert_eq!(load.attempts.len(), 1);
    assert_eq!(load.attempts[0].status, AttemptStatus::Running);
    assert_eq!(load.attempts[0].log_path, PathBuf::from("/logs/load.1"));
    assert_eq!(load.attempts[0].started, at(1));

    records
        .attempt_ended(
            &run,
            "load",
            1,
            AttemptStatus::Failed,
            Some(3),
            Some("exit 3"),
            at(2),
        )
        .unwrap();
    records.retry_scheduled(&run, "load", 2, at(5)).unwrap();
    let load = step("load");
    assert_eq!(load.status, StepStatus::Retrying);
    assert_eq!(load.next_attempt, Some(2));
    assert_eq!(load.next_attempt_at, Some(at(5)));
    assert_eq!(load.attempts[0].status, AttemptStatus::Failed);
    assert_eq!(load.attempts[0].exit_code, Some(3));
    assert_eq!(load.attempts[0].reason.as_deref(), Some("exit 3"));
    assert_eq!(load.attempts[0].ended, Some(at(2)));

    records
        .attempt_started(&run, "load", 2, Path::new("/logs/load.2"), at(5))
        .unwrap();
    assert_eq!(step("load").next_attempt, None);
    records
        .attempt_ended(
            &run,
            "load",
            2,
            AttemptStatus::Succeeded,
            Some(0),
            None,
            at(6),
        )
        .unwrap();
    records
        .step_ended(&run, "load", StepStatus::Succeeded, None)
        .unwrap();
    records
        .step_ended(&run, "train", StepStatus::Failed, Some("out of memory"))
        .unwrap();
    records
        .step_ended(&run, "eval", StepStatus::Skipped, Some("train failed"))
        .unwrap();
    records.finish_run(&run, RunStatus::Failed, at(7)).unwrap();

    let detail = records.run(&run).unwrap();
    let load = &detail.steps[0];
    assert_eq!(load.status, StepStatus::Succeeded);
    let numbers: Vec<_> = load.attempts.iter().map(|a| a.number).collect();
    assert_eq!(numbers, [1, 2]);
    assert_eq!(load.attempts[1].status, AttemptStatus::Succeeded);
    assert_eq!(detail.steps[1].reason.as_deref(), Some("out of memory"));
    assert_eq!(detail.steps[2].status, StepStatus::Skipped);
    assert_eq!(detail.status, RunStatus::Failed);
    let summary = &records.list_runs().unwrap()[0];
    assert_eq!((summary.steps_succeeded, summary.steps_total), (1, 3));
    assert_eq!(summary.ended, Some(at(7)));
}

#[test]
fn reused_steps_count_as_succeeded() {
    let dir = tempfile::tempdir().unwrap();
    let records = Records::open(dir.path()).unwrap();
    let (run, _lock) = live_run(&records, dir.path(), "p");
    records
        .step_ended(&run, "load", StepStatus::Reused, None)
        .unwrap();
    records
        .step_ended(&run, "train", StepStatus::Succeeded, None)
        .unwrap();
    assert_eq!(records.list_runs().unwrap()[0].steps_succeeded, 2);
    assert_eq!(
        records.run(&run).unwrap().steps[0].status,
        StepStatus::Reused
    );
}

#[test]
fn updates_naming_what_does_not_exist_are_errors() {
    let dir = tempfile::tempdir().unwrap();
    let records = Records::open(dir.path()).unwrap();
    let (run, _lock) = live_run(&records, dir.path(), "p");
    let log = Path::new("/l");
    assert!(matches!(
        records.attempt_started(&run, "nope", 1, log, at(1)),
        Err(RecordsError::UnknownStep { step, .. }) if step == "nope"
    ));
    assert!(matches!(
        records.attempt_started("ffffffff", "load", 1, log, at(1)),
        Err(RecordsError::UnknownRun { given }) if given == "ffffffff"
    ));
    assert!(matches!(
        records.attempt_started(&run, "load", 0, log, at(1)),
        Err(RecordsError::AttemptZero { .. })
    ));
    assert!(matches!(
        records.attempt_ended(&run, "load", 4, AttemptStatus::Failed, None, None, at(1)),
        Err(RecordsError::UnknownAttempt { attempt: 4, .. })
    ));
    assert!(matches!(
        records.step_ended(&run, "nope", StepStatus::Failed, None),
        Err(RecordsError::UnknownStep { .. })
    ));
    assert!(matches!(
        records.finish_run("ffffffff", RunStatus::Failed, at(1)),
        Err(RecordsError::UnknownRun { .. })
    ));
    // Nothing of that reached the run.
    let detail = records.run(&run).unwrap();
    assert!(detail.steps.iter().all(|s| s.attempts.is_empty()));
}

#[test]
fn a_run_whose_lock_is_released_reads_as_interrupted() {
    let dir = tempfile::tempdir().unwrap();
    let records = Records::open(dir.path()).unwrap();
    let (run, lock) = live_run(&records, dir.path(), "p");
    let lock_file = lock.path().to_path_buf();
    assert!(lock_file.exists());
    records
        .attempt_started(&run, "load", 1, Path::new("/l/1"), at(1))
        .unwrap();
    records
        .attempt_ended(&run, "load", 1, AttemptStatus::Failed, Some(1), None, at(2))
        .unwrap();
    records.retry_scheduled(&run, "load", 2, at(3)).unwrap();
    records
        .step_ended(&run, "train", StepStatus::Skipped, Some("upstream"))
        .unwrap();

    // Held: the run is alive, as often as anyone looks.
    assert_eq!(records.list_runs().unwrap()[0].status, RunStatus::Running);
    assert_eq!(records.run(&run).unwrap().status, RunStatus::Running);

    release(lock, dir.path(), &run);
    assert_eq!(
        records.list_runs().unwrap()[0].status,
        RunStatus::Interrupted
    );
    let detail = records.run(&run).unwrap();
    assert_eq!(detail.status, RunStatus::Interrupted);
    assert_eq!(detail.ended, None, "nobody saw the run end");
    let load = &detail.steps[0];
    assert_eq!(load.status, StepStatus::Cancelled);
    assert_eq!(load.reason.as_deref(), Some(INTERRUPTED_REASON));
    assert_eq!(load.next_attempt, None);
    let eval = &detail.steps[2];
    assert_eq!(eval.status, StepStatus::Cancelled, "pending steps too");
    assert_eq!(
        detail.steps[1].status,
        StepStatus::Skipped,
        "ended steps keep their status"
    );
    assert_eq!(detail.steps[1].reason.as_deref(), Some("upstream"));
    assert!(!lock_file.exists(), "the stale lock file is cleaned up");

    // Stored, not just computed: even a lock taken now does not revive it.
    let _again = RunLock::acquire(dir.path(), &run).unwrap();
    let reopened = Records::open(dir.path()).unwrap();
    assert_eq!(reopened.run(&run).unwrap().status, RunStatus::Interrupted);
}

#[test]
fn running_attempts_of_an_interrupted_run_are_cancelled() {
    let dir = tempfile::tempdir().unwrap();
    let records = Records::open(dir.path()).unwrap();
    let (run, lock) = live_run(&records, dir.path(), "p");
    records
        .attempt_started(&run, "load", 1, Path::new("/l/1"), at(1))
        .unwrap();
    release(lock, dir.path(), &run);
    let attempt = &records.run(&run).unwrap().steps[0].attempts[0];
    assert_eq!(attempt.status, AttemptStatus::Cancelled);
    assert_eq!(attempt.reason.as_deref(), Some(INTERRUPTED_REASON));
}

#[test]
fn before_the_lock_is_taken_the_pid_decides() {
    let dir = tempfile::tempdir().unwrap();
    let records = Records::open(dir.path()).unwrap();
    let ours = records
        .create_run(&new_run("p", at(0), std::process::id()))
        .unwrap();
    let dead = records
        .create_run(&new_run("p", at(1), dead_pid()))
        .unwrap();

    assert_eq!(records.run(&ours).unwrap().status, RunStatus::Running);
    assert_eq!(records.run(&dead).unwrap().status, RunStatus::Interrupted);
}

#[test]
fn a_run_lock_is_exclusive_until_dropped() {
    let dir = tempfile::tempdir().unwrap();
    let lock = RunLock::acquire(dir.path(), "0badf00d").unwrap();
    assert_eq!(lock.path(), dir.path().join("locks/0badf00d.lock"));
    assert!(matches!(
        RunLock::acquire(dir.path(), "0badf00d"),
        Err(RecordsError::Locked { run }) if run == "0badf00d"
    ));
    release(lock, dir.path(), "0badf00d");
    // A lock file left behind by a kiln that is gone is taken over.
    let again = RunLock::acquire(dir.path(), "0badf00d").unwrap();
    assert!(again.path().exists());
    assert!(matches!(
        RunLock::acquire(dir.path(), "../escape"),
        Err(RecordsError::BadRunId { .. })
    ));
}

#[test]
fn two_connections_read_and_write_the_database_at_once() {
    let dir = tempfile::tempdir().unwrap();
    let here = Records::open(dir.path()).unwrap();
    let path = dir.path().to_path_buf();
    let other = std::thread::spawn(move || {
        let records = Records::open(&path).unwrap();
        for i in 0..30 {
            let id = records.create_run(&new_run("other", at(i), 1)).unwrap();
            records
                .attempt_started(&id, "load", 1, Path::new("/l"), at(i))
                .unwrap();
            records
                .finish_run(&id, RunStatus::Succeeded, at(i))
                .unwrap();
        }
    });
    let mut last_seen = 0;
    for i in 0..30 {
        let id = here.create_run(&new_run("here", at(i), 1)).unwrap();
        here.finish_run(&id, RunStatus::Failed, at(i)).unwrap();
        let seen = here.list_runs().unwrap().len();
        assert!(seen > last_seen, "{seen} runs after {last_seen}");
        last_seen = seen;
    }
    other.join().unwrap();
    let runs = here.list_runs().unwrap();
    let count = |p: &str| runs.iter().filter(|r| r.pipeline == p).count();
    assert_eq!((count("here"), count("other")), (30, 30));
}

#[test]
fn a_database_from_a_newer_kiln_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    drop(Records::open(dir.path()).unwrap());
    let conn = rusqlite::Connection::open(dir.path().join("runs.db")).unwrap();
    conn.pragma_update(None, "user_version", 99).unwrap();
    drop(conn);
    match Records::open(dir.path()) {
        Err(RecordsError::NewerSchema { found, .. }) => assert_eq!(found, 99),
        other => panic!("expected NewerSchema, got {other:?}"),
    }
}

#[test]
fn reopening_keeps_what_was_written() {
    let dir = tempfile::tempdir().unwrap();
    let id = {
        let records = Records::open(dir.path()).unwrap();
        let id = records.create_run(&new_run("p", at(0), 1)).unwrap();
        records.finish_run(&id, RunStatus::Stopped, at(1)).unwrap();
        id
    };
    let records = Records::open(dir.path()).unwrap();
    assert_eq!(records.run(&id).unwrap().status, RunStatus::Stopped);
}

#[test]
fn statuses_print_and_serialize_in_snake_case() {
    assert_eq!(RunStatus::TimedOut.as_str(), "timed_out");
    assert_eq!(StepStatus::Reused.to_string(), "reused");
    assert_eq!("timed_out".parse::<RunStatus>(), Ok(RunStatus::TimedOut));
    assert_eq!("bogus".parse::<AttemptStatus>(), Err("bogus".to_string()));
    let summary = RunSummary {
        id: "abcd0123".into(),
        pipeline: "p".into(),
        status: RunStatus::TimedOut,
        started: UNIX_EPOCH + Duration::from_millis(1_700_000_000_250),
        ended: None,
        steps_total: 2,
        steps_succeeded: 1,
        backend: Backend::Kubernetes,
    };
    let json = serde_json::to_value(&summary).unwrap();
    assert_eq!(json["status"], "timed_out");
    assert_eq!(json["backend"], "kubernetes");
    assert_eq!(json["started"], "2023-11-14T22:13:20.250Z");
    assert_eq!(json["ended"], serde_json::Value::Null);
}

#[test]
fn default_data_dir_follows_xdg() {
    let os = |s: &str| Some(OsString::from(s));
    assert_eq!(
        data_dir_from(os("/x/data"), os("/home/u")),
        Some(PathBuf::from("/x/data/kiln"))
    );
    assert_eq!(
        data_dir_from(os("relative"), os("/home/u")),
        Some(PathBuf::from("/home/u/.local/share/kiln"))
    );
    assert_eq!(data_dir_from(None, None), None);
}

/// A pid no process has: a child that already exited and was reaped.
fn dead_pid() -> u32 {
    let mut child = std::process::Command::new("true").spawn().unwrap();
    let pid = child.id();
    child.wait().unwrap();
    pid
}

fn cluster(job: &str) -> ClusterRun {
    ClusterRun {
        context: Some("kiln-test".into()),
        namespace: "ml".into(),
        job: job.into(),
    }
}

/// A Kubernetes run whose submitting kiln has exited, as after
/// `kiln run --on kubernetes --detach`.
fn detached_run(records: &Records) -> RunId {
    let id = records
        .create_run(&new_run("p", at(0), dead_pid()))
        .unwrap();
    records
        .set_cluster_run(&id, &cluster(&format!("kiln-p-{id}")))
        .unwrap();
    id
}

#[test]
fn a_version_1_database_migrates_and_keeps_its_runs() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("runs.db");
    {
        // What kiln with schema version 1 wrote: one finished run.
        let conn = rusqlite::Connection::open(&db).unwrap();
        conn.execute_batch(super::schema::SCHEMA_V1).unwrap();
        conn.execute_batch(
            "INSERT INTO runs (id, pipeline, file, run_dir, log_dir, status, started, ended, pid)
               VALUES ('0badf00d', 'old', CAST('/p/kiln.yaml' AS BLOB), CAST('/r' AS BLOB),
                       CAST('/l' AS BLOB), 'failed', 1000, 2000, 7);
             INSERT INTO steps (run_id, position, name, upstream, status, reason)
               VALUES ('0badf00d', 0, 'load', '[]', 'failed', 'exit code 3');
             INSERT INTO attempts (run_id, step, number, status, started, ended, exit_code,
                                   log_path)
               VALUES ('0badf00d', 'load', 1, 'failed', 1000, 2000, 3, CAST('load/1.log' AS BLOB));
             PRAGMA user_version = 1;",
        )
        .unwrap();
    }

    let records = Records::open(dir.path()).unwrap();
    let version: i64 = rusqlite::Connection::open(&db)
        .unwrap()
        .pragma_query_value(None, "user_version", |r| r.get(0))
        .unwrap();
    assert_eq!(version, 2);
    let old = records.run("0badf00d").unwrap();
    assert_eq!(old.pipeline, "old");
    assert_eq!(old.status, RunStatus::Failed);
    assert_eq!(old.backend, Backend::Local, "runs from before are local");
    assert_eq!(old.steps[0].reason.as_deref(), Some("exit code 3"));
    assert_eq!(old.steps[0].attempts[0].exit_code, Some(3));
    assert_eq!(
        old.steps[0].attempts[0].log_path,
        PathBuf::from("load/1.log")
    );

    // The new table is there and usable at once; reopening migrates nothing.
    records.set_cluster_run("0badf00d", &cluster("j")).unwrap();
    drop(records);
    let records = Records::open(dir.path()).unwrap();
    assert_eq!(records.cluster_run("0badf00d").unwrap(), Some(cluster("j")));
    assert_eq!(records.list_runs().unwrap().len(), 1);
}

#[test]
fn a_cluster_run_remembers_where_it_lives() {
    let dir = tempfile::tempdir().unwrap();
    let records = Records::open(dir.path()).unwrap();
    let id = detached_run(&records);
    let local = records.create_run(&new_run("p", at(1), 1)).unwrap();
    records
        .finish_run(&local, RunStatus::Succeeded, at(2))
        .unwrap();

    let job = format!("kiln-p-{id}");
    assert_eq!(records.cluster_run(&id).unwrap(), Some(cluster(&job)));
    let detail = records.run(&id).unwrap();
    assert_eq!(detail.backend, Backend::Kubernetes);
    assert_eq!(detail.cluster, Some(cluster(&job)));
    let backends: Vec<_> = records
        .list_runs()
        .unwrap()
        .into_iter()
        .map(|r| (r.id, r.backend))
        .collect();
    assert_eq!(
        backends,
        [(local, Backend::Local), (id.clone(), Backend::Kubernetes)]
    );

    // Set again: replaced, and the context may be the current one.
    let elsewhere = ClusterRun {
        context: None,
        namespace: "other".into(),
        job: "j2".into(),
    };
    records.set_cluster_run(&id, &elsewhere).unwrap();
    assert_eq!(records.cluster_run(&id).unwrap(), Some(elsewhere.clone()));
    let json = serde_json::to_value(records.run(&id).unwrap()).unwrap();
    assert_eq!(json["backend"], "kubernetes");
    assert_eq!(json["cluster"]["namespace"], "other");
    assert_eq!(json["cluster"]["context"], serde_json::Value::Null);

    assert!(matches!(
        records.set_cluster_run("ffffffff", &elsewhere),
        Err(RecordsError::UnknownRun { given }) if given == "ffffffff"
    ));
    assert_eq!(records.cluster_run("ffffffff").unwrap(), None);
}

#[test]
fn a_cluster_run_is_not_interrupted_when_its_kiln_exits() {
    let dir = tempfile::tempdir().unwrap();
    let records = Records::open(dir.path()).unwrap();
    let id = detached_run(&records);
    assert_eq!(records.list_runs().unwrap()[0].status, RunStatus::Running);
    assert_eq!(records.run(&id).unwrap().status, RunStatus::Running);
}

fn observed_attempt(number: u32, status: AttemptStatus, end: Option<u64>) -> ObservedAttempt {
    ObservedAttempt {
        number,
        status,
        started: at(10 * u64::from(number)),
        ended: end.map(at),
        exit_code: end.map(|_| i32::from(status != AttemptStatus::Succeeded)),
        reason: None,
        log_path: format!("pod/p-load-a{number}").into(),
    }
}

/// Records `observed` twice, checks the second time changed nothing, and
/// returns the run as recorded.
fn record_twice(records: &Records, run: &str, observed: &ObservedRun) -> RunDetail {
    records.record_observed(run, observed).unwrap();
    let once = records.run(run).unwrap();
    records.record_observed(run, observed).unwrap();
    assert_eq!(
        records.run(run).unwrap(),
        once,
        "recording again changed the run"
    );
    once
}

#[test]
fn what_the_cluster_says_is_recorded_and_recording_it_again_changes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let records = Records::open(dir.path()).unwrap();
    let id = detached_run(&records);
    let observed = ObservedRun {
        status: Some(RunStatus::Running),
        ended: None,
        reason: None,
        steps: vec![
            ObservedStep {
                name: "load".into(),
                status: Some(StepStatus::Running),
                reason: None,
                attempts: vec![
                    observed_attempt(1, AttemptStatus::Failed, Some(15)),
                    observed_attempt(2, AttemptStatus::Running, None),
                ],
            },
            ObservedStep {
                name: "no-such-step".into(),
                status: Some(StepStatus::Failed),
                reason: None,
                attempts: vec![observed_attempt(1, AttemptStatus::Failed, Some(1))],
            },
        ],
    };
    let once = record_twice(&records, &id, &observed);

    assert_eq!(once.status, RunStatus::Running);
    let load = &once.steps[0];
    assert_eq!(load.status, StepStatus::Running);
    assert_eq!(load.attempts.len(), 2);
    assert_eq!(load.attempts[0].status, AttemptStatus::Failed);
    assert_eq!(load.attempts[0].started, at(10));
    assert_eq!(load.attempts[0].ended, Some(at(15)));
    assert_eq!(load.attempts[0].exit_code, Some(1));
    assert_eq!(load.attempts[1].log_path, PathBuf::from("pod/p-load-a2"));
    assert_eq!(
        once.steps[1].status,
        StepStatus::Pending,
        "untold: as it was"
    );
    assert_eq!(once.steps.len(), 3, "unknown steps are not added");

    // The run ends; attempt 1's pod is gone by then, and its record stays.
    let ended = ObservedRun {
        status: Some(RunStatus::Failed),
        ended: Some(at(40)),
        reason: Some("the run failed".into()),
        steps: vec![ObservedStep {
            name: "load".into(),
            status: Some(StepStatus::Failed),
            reason: Some("exit code 1".into()),
            attempts: vec![observed_attempt(2, AttemptStatus::Failed, Some(30))],
        }],
    };
    let last = record_twice(&records, &id, &ended);
    assert_eq!(last.status, RunStatus::Failed);
    assert_eq!(last.ended, Some(at(40)));
    let load = &last.steps[0];
    assert_eq!(
        (load.status, load.reason.as_deref()),
        (StepStatus::Failed, Some("exit code 1"))
    );
    assert_eq!(load.attempts[0], once.steps[0].attempts[0]);
    assert_eq!(load.attempts[1].status, AttemptStatus::Failed);
    // A final run leaves nothing unfinished.
    for step in &last.steps[1..] {
        assert_eq!(step.status, StepStatus::Cancelled, "{}", step.name);
        assert_eq!(step.reason.as_deref(), Some("the run failed"));
    }

    // Saying nothing changes nothing.
    records
        .record_observed(&id, &ObservedRun::default())
        .unwrap();
    assert_eq!(records.run(&id).unwrap(), last);
    assert!(matches!(
        records.record_observed("ffffffff", &ended),
        Err(RecordsError::UnknownRun { .. })
    ));
}

#[test]
fn a_gone_job_interrupts_a_running_run_once_its_submitter_is_gone() {
    let dir = tempfile::tempdir().unwrap();
    let records = Records::open(dir.path()).unwrap();

    // Still being submitted: the Job may not exist yet.
    let submitting = records
        .create_run(&new_run("p", at(0), std::process::id()))
        .unwrap();
    records
        .set_cluster_run(&submitting, &cluster("j1"))
        .unwrap();
    assert_eq!(
        records.cluster_job_gone(&submitting, "gone").unwrap(),
        RunStatus::Running
    );

    let detached = detached_run(&records);
    records
        .attempt_started(&detached, "load", 1, Path::new("pod/x"), at(1))
        .unwrap();
    assert_eq!(
        records
            .cluster_job_gone(&detached, "the Job is gone")
            .unwrap(),
        RunStatus::Interrupted
    );
    let detail = records.run(&detached).unwrap();
    assert_eq!(detail.status, RunStatus::Interrupted);
    assert_eq!(detail.steps[0].status, StepStatus::Cancelled);
    assert_eq!(
        detail.steps[0].attempts[0].reason.as_deref(),
        Some("the Job is gone")
    );

    // A run that ended keeps its last status when its Job is cleaned up.
    let finished = detached_run(&records);
    records
        .finish_run(&finished, RunStatus::Succeeded, at(5))
        .unwrap();
    assert_eq!(
        records.cluster_job_gone(&finished, "gone").unwrap(),
        RunStatus::Succeeded
    );
}
