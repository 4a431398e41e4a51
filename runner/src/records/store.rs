//! [`Records`]: writing a run as it goes and reading it back.

use std::collections::HashMap;
use std::ffi::OsString;
use std::hash::{BuildHasher, Hash, Hasher};
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::SystemTime;

use rusqlite::{Connection, OptionalExtension, Transaction, TransactionBehavior, params};

use super::lock::{self, Holder};
use super::model::{
    AttemptDetail, AttemptStatus, Backend, ClusterRun, NewRun, ObservedRun, RunDetail, RunId,
    RunStatus, RunSummary, StepDetail, StepStatus,
};
use super::time::{from_nanos, to_nanos};
use super::{RecordsError, schema};

/// The reason given to steps of a run whose kiln went away.
pub const INTERRUPTED_REASON: &str = "kiln exited during the run";

/// The run records of one data directory: `runs.db` plus the run locks.
/// The running kiln writes through one, `kiln runs`/`kiln logs` read
/// through another, at the same time.
#[derive(Debug)]
pub struct Records {
    conn: Connection,
    data_dir: PathBuf,
    db: PathBuf,
}

impl Records {
    /// Opens the records in `data_dir`, creating the directory, `runs.db`
    /// and its schema as needed.
    pub fn open(data_dir: &Path) -> Result<Records, RecordsError> {
        kiln_rootfs::private_dir::create_private_dir(data_dir).map_err(|source| {
            RecordsError::Io {
                path: data_dir.to_path_buf(),
                source,
            }
        })?;
        let db = data_dir.join("runs.db");
        let conn = schema::open(&db)?;
        Ok(Records {
            conn,
            data_dir: data_dir.to_path_buf(),
            db,
        })
    }

    /// Records a new run, `running`, with every step `pending`, and returns
    /// its fresh id. The runner then takes the run's
    /// [`RunLock`](super::RunLock) at once: until it does, readers can
    /// only judge by the pid whether the run is alive.
    pub fn create_run(&self, new: &NewRun) -> Result<RunId, RecordsError> {
        let tx = self.write()?;
        let mut id = None;
        for _ in 0..64 {
            let candidate = fresh_id();
            let inserted = tx
                .execute(
                    "INSERT OR IGNORE INTO runs
                     (id, pipeline, file, run_dir, log_dir, status, started, retry_of, pid)
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)",
                    params![
                        candidate,
                        new.pipeline,
                        new.file.as_os_str().as_bytes(),
                        new.run_dir.as_os_str().as_bytes(),
                        new.log_dir.as_os_str().as_bytes(),
                        RunStatus::Running.as_str(),
                        to_nanos(new.started),
                        new.retry_of,
                        new.pid,
                    ],
                )
                .map_err(self.sql())?;
            if inserted == 1 {
                id = Some(candidate);
                break;
            }
        }
        let id = id.ok_or(RecordsError::NoFreeId)?;
        for (position, step) in new.steps.iter().enumerate() {
            let upstream = serde_json::to_string(&step.upstream).unwrap_or_else(|_| "[]".into());
            tx.execute(
                "INSERT INTO steps (run_id, position, name, image, upstream, status)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
                params![
                    id,
                    i64::try_from(position).unwrap_or(i64::MAX),
                    step.name,
                    step.image,
                    upstream,
                    StepStatus::Pending.as_str(),
                ],
            )
            .map_err(self.sql())?;
        }
        tx.commit().map_err(self.sql())?;
        Ok(id)
    }

    /// Attempt `attempt` of `step` started, writing to `log_path`; the step
    /// is `running`. Reporting the same attempt again restarts its record.
    pub fn attempt_started(
        &self,
        run: &str,
        step: &str,
        attempt: u32,
        log_path: &Path,
        at: SystemTime,
    ) -> Result<(), RecordsError> {
        check_attempt(step, attempt)?;
        let tx = self.write()?;
        self.set_step(
            &tx,
            run,
            step,
            "status = ?3, next_attempt = NULL, next_attempt_at = NULL",
            params![run, step, StepStatus::Running.as_str()],
        )?;
        tx.execute(
            "INSERT OR REPLACE INTO attempts (run_id, step, number, status, started, log_path)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
            params![
                run,
                step,
                attempt,
                AttemptStatus::Running.as_str(),
                to_nanos(at),
                log_path.as_os_str().as_bytes(),
            ],
        )
        .map_err(self.sql())?;
        tx.commit().map_err(self.sql())
    }

    /// Attempt `attempt` of `step` ended. The step's own status is the
    /// runner's next call: [`Self::retry_scheduled`] or
    /// [`Self::step_ended`].
    #[allow(clippy::too_many_arguments)]
    pub fn attempt_ended(
        &self,
        run: &str,
        step: &str,
        attempt: u32,
        status: AttemptStatus,
        exit_code: Option<i32>,
        reason: Option<&str>,
        at: SystemTime,
    ) -> Result<(), RecordsError> {
        check_attempt(step, attempt)?;
        let changed = self
            .conn
            .execute(
                "UPDATE attempts SET status = ?4, exit_code = ?5, reason = ?6, ended = ?7
                 WHERE run_id = ?1 AND step = ?2 AND number = ?3",
                params![
                    run,
                    step,
                    attempt,
                    status.as_str(),
                    exit_code,
                    reason,
                    to_nanos(at)
                ],
            )
            .map_err(self.sql())?;
        if changed == 0 {
            return Err(RecordsError::UnknownAttempt {
                run: run.to_owned(),
                step: step.to_owned(),
                attempt,
            });
        }
        Ok(())
    }

    /// `step` failed an attempt and waits for attempt `next_attempt`, due
    /// at `at`; the step is `retrying`.
    pub fn retry_scheduled(
        &self,
        run: &str,
        step: &str,
        next_attempt: u32,
        at: SystemTime,
    ) -> Result<(), RecordsError> {
        check_attempt(step, next_attempt)?;
        self.set_step(
            &self.conn,
            run,
            step,
            "status = ?3, next_attempt = ?4, next_attempt_at = ?5",
            params![
                run,
                step,
                StepStatus::Retrying.as_str(),
                next_attempt,
                to_nanos(at)
            ],
        )
    }

    /// `step` ended for good (or was reused): its final status and why.
    pub fn step_ended(
        &self,
        run: &str,
        step: &str,
        status: StepStatus,
        reason: Option<&str>,
    ) -> Result<(), RecordsError> {
        self.set_step(
            &self.conn,
            run,
            step,
            "status = ?3, reason = ?4, next_attempt = NULL, next_attempt_at = NULL",
            params![run, step, status.as_str(), reason],
        )
    }

    /// The run ended with `status` at `at`. Its lock file goes: the lock
    /// matters only while the run is `running`.
    pub fn finish_run(
        &self,
        run: &str,
        status: RunStatus,
        at: SystemTime,
    ) -> Result<(), RecordsError> {
        let changed = self
            .conn
            .execute(
                "UPDATE runs SET status = ?2, ended = ?3 WHERE id = ?1",
                params![run, status.as_str(), to_nanos(at)],
            )
            .map_err(self.sql())?;
        if changed == 0 {
            return Err(RecordsError::UnknownRun {
                given: run.to_owned(),
            });
        }
        lock::remove(&self.data_dir, run);
        Ok(())
    }

    /// Every run, newest first. Runs whose kiln is gone read (and are
    /// stored) as `interrupted`.
    pub fn list_runs(&self) -> Result<Vec<RunSummary>, RecordsError> {
        self.reap(None)?;
        let mut stmt = self
            .conn
            .prepare(
                "SELECT r.id, r.pipeline, r.status, r.started, r.ended,
                   (SELECT count(*) FROM steps s WHERE s.run_id = r.id),
                   (SELECT count(*) FROM steps s WHERE s.run_id = r.id
                      AND s.status IN ('succeeded', 'reused')),
                   EXISTS (SELECT 1 FROM cluster_runs c WHERE c.run_id = r.id)
                 FROM runs r ORDER BY r.started DESC, r.rowid DESC",
            )
            .map_err(self.sql())?;
        let rows = stmt
            .query_map([], |row| {
                Ok((
                    row.get::<_, String>(0)?,
                    row.get::<_, String>(1)?,
                    row.get::<_, String>(2)?,
                    row.get::<_, i64>(3)?,
                    row.get::<_, Option<i64>>(4)?,
                    row.get::<_, i64>(5)?,
                    row.get::<_, i64>(6)?,
                    row.get::<_, bool>(7)?,
                ))
            })
            .map_err(self.sql())?;
        let mut runs = Vec::new();
        for row in rows {
            let (id, pipeline, status, started, ended, total, succeeded, in_cluster) =
                row.map_err(self.sql())?;
            runs.push(RunSummary {
                id,
                pipeline,
                status: parse(&status, "run status")?,
                started: from_nanos(started),
                ended: ended.map(from_nanos),
                steps_total: usize::try_from(total).unwrap_or(0),
                steps_succeeded: usize::try_from(succeeded).unwrap_or(0),
                backend: backend(in_cluster),
            });
        }
        Ok(runs)
    }

    /// One run, by id or unique id prefix, with its steps in creation
    /// order and their attempts.
    pub fn run(&self, id_or_prefix: &str) -> Result<RunDetail, RecordsError> {
        let id = self.resolve(id_or_prefix)?;
        self.reap(Some(&id))?;
        type RunRow = (
            String,
            Vec<u8>,
            Vec<u8>,
            Vec<u8>,
            String,
            i64,
            Option<i64>,
            Option<String>,
            u32,
        );
        let (pipeline, file, run_dir, log_dir, status, started, ended, retry_of, pid): RunRow =
            self.conn
                .query_row(
                    "SELECT pipeline, file, run_dir, log_dir, status, started, ended, retry_of, pid
                     FROM runs WHERE id = ?1",
                    [&id],
                    |r| {
                        Ok((
                            r.get(0)?,
                            r.get(1)?,
                            r.get(2)?,
                            r.get(3)?,
                            r.get(4)?,
                            r.get(5)?,
                            r.get(6)?,
                            r.get(7)?,
                            r.get(8)?,
                        ))
                    },
                )
                .map_err(self.sql())?;
        let cluster = self.cluster_run(&id)?;
        let mut attempts = self.attempts(&id)?;
        let steps = self
            .steps(&id)?
            .into_iter()
            .map(|mut s| {
                s.attempts = attempts.remove(&s.name).unwrap_or_default();
                s
            })
            .collect();
        Ok(RunDetail {
            id,
            pipeline,
            file: path_from(file),
            run_dir: path_from(run_dir),
            log_dir: path_from(log_dir),
            status: parse(&status, "run status")?,
            started: from_nanos(started),
            ended: ended.map(from_nanos),
            retry_of,
            pid,
            backend: backend(cluster.is_some()),
            cluster,
            steps,
        })
    }

    /// Records where Kubernetes run `run` lives (its id as
    /// [`Self::create_run`] returned it); from now on it is a Kubernetes
    /// run, which readers refresh from the cluster instead of judging by
    /// its lock. Setting it again replaces it.
    pub fn set_cluster_run(&self, run: &str, where_: &ClusterRun) -> Result<(), RecordsError> {
        let tx = self.write()?;
        self.known_run(&tx, run)?;
        tx.execute(
            "INSERT OR REPLACE INTO cluster_runs (run_id, context, namespace, job)
             VALUES (?1, ?2, ?3, ?4)",
            params![run, where_.context, where_.namespace, where_.job],
        )
        .map_err(self.sql())?;
        tx.commit().map_err(self.sql())
    }

    /// Where Kubernetes run `run` (a full id) lives; `None` for a local
    /// run or an unknown id.
    pub fn cluster_run(&self, run: &str) -> Result<Option<ClusterRun>, RecordsError> {
        self.conn
            .query_row(
                "SELECT context, namespace, job FROM cluster_runs WHERE run_id = ?1",
                [run],
                |r| {
                    Ok(ClusterRun {
                        context: r.get(0)?,
                        namespace: r.get(1)?,
                        job: r.get(2)?,
                    })
                },
            )
            .optional()
            .map_err(self.sql())
    }

    /// Copies what the cluster said about run `run` (a full id) into its
    /// records, in one transaction: the run's status and end, each known
    /// step's status and reason, and the attempts seen (replacing their
    /// rows; attempts no longer seen stay as recorded). Steps the run does
    /// not have are ignored: the cluster is not allowed to add steps. A
    /// final status leaves no step or attempt unfinished: those left are
    /// `cancelled`, with `observed.reason`.
    ///
    /// The same observation recorded twice changes nothing the second
    /// time: every value written comes from `observed` (or is kept).
    pub fn record_observed(&self, run: &str, observed: &ObservedRun) -> Result<(), RecordsError> {
        let tx = self.write()?;
        self.known_run(&tx, run)?;
        let known: Vec<String> = {
            let mut stmt = tx
                .prepare("SELECT name FROM steps WHERE run_id = ?1")
                .map_err(self.sql())?;
            stmt.query_map([run], |r| r.get(0))
                .map_err(self.sql())?
                .collect::<Result<_, _>>()
                .map_err(self.sql())?
        };
        for step in observed.steps.iter().filter(|s| known.contains(&s.name)) {
            if let Some(status) = step.status {
                tx.execute(
                    "UPDATE steps SET status = ?3, reason = ?4, next_attempt = NULL,
                       next_attempt_at = NULL
                     WHERE run_id = ?1 AND name = ?2",
                    params![run, step.name, status.as_str(), step.reason],
                )
                .map_err(self.sql())?;
            }
            for a in &step.attempts {
                check_attempt(&step.name, a.number)?;
                tx.execute(
                    "INSERT OR REPLACE INTO attempts
                     (run_id, step, number, status, started, ended, exit_code, reason, log_path)
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)",
                    params![
                        run,
                        step.name,
                        a.number,
                        a.status.as_str(),
                        to_nanos(a.started),
                        a.ended.map(to_nanos),
                        a.exit_code,
                        a.reason,
                        a.log_path.as_os_str().as_bytes(),
                    ],
                )
                .map_err(self.sql())?;
            }
        }
        if let Some(status) = observed.status {
            tx.execute(
                "UPDATE runs SET status = ?2, ended = coalesce(?3, ended) WHERE id = ?1",
                params![run, status.as_str(), observed.ended.map(to_nanos)],
            )
            .map_err(self.sql())?;
            if status != RunStatus::Running {
                let reason = observed
                    .reason
                    .clone()
                    .unwrap_or_else(|| format!("the run ended ({status})"));
                cancel_unfinished(&tx, run, &reason).map_err(self.sql())?;
            }
        }
        tx.commit().map_err(self.sql())
    }

    /// Kubernetes run `run`'s orchestrator Job is gone (deleted, or its
    /// namespace was). A run recorded as `running` then never ends by
    /// itself, and is marked `interrupted` with `reason` (its unfinished
    /// steps `cancelled`) unless the kiln that submits it is still alive:
    /// that one may not have created the Job yet. Any other status is the
    /// last one seen and stays. Returns the status now recorded.
    pub fn cluster_job_gone(&self, run: &str, reason: &str) -> Result<RunStatus, RecordsError> {
        let (status, pid): (String, u32) = self
            .conn
            .query_row("SELECT status, pid FROM runs WHERE id = ?1", [run], |r| {
                Ok((r.get(0)?, r.get(1)?))
            })
            .optional()
            .map_err(self.sql())?
            .ok_or_else(|| RecordsError::UnknownRun {
                given: run.to_owned(),
            })?;
        let status: RunStatus = parse(&status, "run status")?;
        if status != RunStatus::Running || self.submitter_alive(run, pid)? {
            return Ok(status);
        }
        self.mark_interrupted(run, reason)?;
        Ok(RunStatus::Interrupted)
    }

    /// The run's steps in creation order, without attempts.
    fn steps(&self, run: &str) -> Result<Vec<StepDetail>, RecordsError> {
        let mut stmt = self
            .conn
            .prepare(
                "SELECT name, image, upstream, status, reason, next_attempt, next_attempt_at
                 FROM steps WHERE run_id = ?1 ORDER BY position",
            )
            .map_err(self.sql())?;
        let rows = stmt
            .query_map([run], |r| {
                Ok((
                    r.get::<_, String>(0)?,
                    r.get::<_, Option<String>>(1)?,
                    r.get::<_, String>(2)?,
                    r.get::<_, String>(3)?,
                    r.get::<_, Option<String>>(4)?,
                    r.get::<_, Option<u32>>(5)?,
                    r.get::<_, Option<i64>>(6)?,
                ))
            })
            .map_err(self.sql())?;
        let mut steps = Vec::new();
        for row in rows {
            let (name, image, upstream, status, reason, next_attempt, next_at) =
                row.map_err(self.sql())?;
            let upstream = serde_json::from_str(&upstream).map_err(|_| RecordsError::Corrupt {
                what: "upstream list",
                value: upstream,
            })?;
            steps.push(StepDetail {
                name,
                image,
                upstream,
                status: parse(&status, "step status")?,
                reason,
                next_attempt,
                next_attempt_at: next_at.map(from_nanos),
                attempts: Vec::new(),
            });
        }
        Ok(steps)
    }

    /// The run's attempts, by step, oldest first.
    fn attempts(&self, run: &str) -> Result<HashMap<String, Vec<AttemptDetail>>, RecordsError> {
        let mut stmt = self
            .conn
            .prepare(
                "SELECT step, number, status, started, ended, exit_code, reason, log_path
                 FROM attempts WHERE run_id = ?1 ORDER BY step, number",
            )
            .map_err(self.sql())?;
        let rows = stmt
            .query_map([run], |r| {
                Ok((
                    r.get::<_, String>(0)?,
                    r.get::<_, u32>(1)?,
                    r.get::<_, String>(2)?,
                    r.get::<_, i64>(3)?,
                    r.get::<_, Option<i64>>(4)?,
                    r.get::<_, Option<i32>>(5)?,
                    r.get::<_, Option<String>>(6)?,
                    r.get::<_, Vec<u8>>(7)?,
                ))
            })
            .map_err(self.sql())?;
        let mut by_step: HashMap<String, Vec<AttemptDetail>> = HashMap::new();
        for row in rows {
            let (step, number, status, started, ended, exit_code, reason, log_path) =
                row.map_err(self.sql())?;
            by_step.entry(step).or_default().push(AttemptDetail {
                number,
                status: parse(&status, "attempt status")?,
                started: from_nanos(started),
                ended: ended.map(from_nanos),
                exit_code,
                reason,
                log_path: path_from(log_path),
            });
        }
        Ok(by_step)
    }

    /// The one run id that `given` is, or is a prefix of.
    fn resolve(&self, given: &str) -> Result<RunId, RecordsError> {
        let unknown = || RecordsError::UnknownRun {
            given: given.to_owned(),
        };
        if given.is_empty() {
            return Err(unknown());
        }
        let mut stmt = self
            .conn
            .prepare("SELECT id FROM runs WHERE substr(id, 1, length(?1)) = ?1 ORDER BY id")
            .map_err(self.sql())?;
        let mut ids = stmt
            .query_map([given], |r| r.get::<_, String>(0))
            .map_err(self.sql())?
            .collect::<Result<Vec<_>, _>>()
            .map_err(self.sql())?;
        match ids.len() {
            0 => Err(unknown()),
            1 => Ok(ids.remove(0)),
            _ if ids.iter().any(|id| id == given) => Ok(given.to_owned()),
            _ => Err(RecordsError::AmbiguousRun {
                given: given.to_owned(),
                candidates: ids,
            }),
        }
    }

    /// Marks `running` local runs (all, or just `only`) whose kiln is gone
    /// as `interrupted`, and their unfinished steps and attempts
    /// `cancelled`. Kubernetes runs are not judged here: their kiln may
    /// exit while the cluster runs them ([`Self::record_observed`] and
    /// [`Self::cluster_job_gone`] judge them).
    fn reap(&self, only: Option<&str>) -> Result<(), RecordsError> {
        let mut stmt = self
            .conn
            .prepare(
                "SELECT id, pid FROM runs WHERE status = ?1 AND (?2 IS NULL OR id = ?2)
                   AND id NOT IN (SELECT run_id FROM cluster_runs)",
            )
            .map_err(self.sql())?;
        let running = stmt
            .query_map(params![RunStatus::Running.as_str(), only], |r| {
                Ok((r.get::<_, String>(0)?, r.get::<_, u32>(1)?))
            })
            .map_err(self.sql())?
            .collect::<Result<Vec<_>, _>>()
            .map_err(self.sql())?;
        for (id, pid) in running {
            if !self.submitter_alive(&id, pid)? {
                self.mark_interrupted(&id, INTERRUPTED_REASON)?;
            }
        }
        Ok(())
    }

    /// Whether the kiln that runs (or submits) `run` lives: its lock is
    /// held, or, before it took the lock, its pid exists.
    fn submitter_alive(&self, run: &str, pid: u32) -> Result<bool, RecordsError> {
        Ok(match lock::probe(&self.data_dir, run)? {
            Holder::Alive => true,
            Holder::Gone => false,
            Holder::NoLock => pid_alive(pid),
        })
    }

    /// A `running` run becomes `interrupted`, its unfinished steps and
    /// attempts `cancelled` with `reason`.
    fn mark_interrupted(&self, run: &str, reason: &str) -> Result<(), RecordsError> {
        let tx = self.write()?;
        let changed = tx
            .execute(
                "UPDATE runs SET status = ?2 WHERE id = ?1 AND status = ?3",
                params![
                    run,
                    RunStatus::Interrupted.as_str(),
                    RunStatus::Running.as_str()
                ],
            )
            .map_err(self.sql())?;
        if changed == 1 {
            cancel_unfinished(&tx, run, reason).map_err(self.sql())?;
        }
        tx.commit().map_err(self.sql())?;
        lock::remove(&self.data_dir, run);
        Ok(())
    }

    /// `UnknownRun` unless `run` is a recorded run id.
    fn known_run(&self, conn: &Connection, run: &str) -> Result<(), RecordsError> {
        conn.query_row("SELECT 1 FROM runs WHERE id = ?1", [run], |_| Ok(()))
            .optional()
            .map_err(self.sql())?
            .ok_or_else(|| RecordsError::UnknownRun {
                given: run.to_owned(),
            })
    }

    /// Updates one step's row with `set` (which uses `?1` run, `?2` step
    /// and further parameters); no such step is an error.
    fn set_step(
        &self,
        conn: &Connection,
        run: &str,
        step: &str,
        set: &str,
        params: &[&dyn rusqlite::ToSql],
    ) -> Result<(), RecordsError> {
        let changed = conn
            .execute(
                &format!("UPDATE steps SET {set} WHERE run_id = ?1 AND name = ?2"),
                params,
            )
            .map_err(self.sql())?;
        if changed == 0 {
            let run_known = conn
                .query_row("SELECT 1 FROM runs WHERE id = ?1", [run], |_| Ok(()))
                .optional()
                .map_err(self.sql())?
                .is_some();
            return Err(if run_known {
                RecordsError::UnknownStep {
                    run: run.to_owned(),
                    step: step.to_owned(),
                }
            } else {
                RecordsError::UnknownRun {
                    given: run.to_owned(),
                }
            });
        }
        Ok(())
    }

    /// A write transaction that takes the write lock at once, so the busy
    /// timeout applies (a deferred one upgrading later would fail at once
    /// on contention).
    fn write(&self) -> Result<Transaction<'_>, RecordsError> {
        Transaction::new_unchecked(&self.conn, TransactionBehavior::Immediate).map_err(self.sql())
    }

    fn sql(&self) -> impl Fn(rusqlite::Error) -> RecordsError + '_ {
        |source| RecordsError::Sqlite {
            path: self.db.clone(),
            source,
        }
    }
}

/// The run's steps still pending, running or retrying, and its attempts
/// still running, become `cancelled` with `reason`: what a run that ended
/// without finishing them leaves.
fn cancel_unfinished(conn: &Connection, run: &str, reason: &str) -> rusqlite::Result<()> {
    conn.execute(
        "UPDATE steps SET status = ?2, reason = ?3, next_attempt = NULL, next_attempt_at = NULL
         WHERE run_id = ?1 AND status IN ('pending', 'running', 'retrying')",
        params![run, StepStatus::Cancelled.as_str(), reason],
    )?;
    conn.execute(
        "UPDATE attempts SET status = ?2, reason = ?3 WHERE run_id = ?1 AND status = ?4",
        params![
            run,
            AttemptStatus::Cancelled.as_str(),
            reason,
            AttemptStatus::Running.as_str()
        ],
    )?;
    Ok(())
}

fn backend(in_cluster: bool) -> Backend {
    if in_cluster {
        Backend::Kubernetes
    } else {
        Backend::Local
    }
}

/// 8 hex digits from a randomly keyed hash of the time, the pid and a
/// counter: distinct across processes and calls; the database's primary
/// key catches the rare collision, and the caller draws again.
fn fresh_id() -> RunId {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    SystemTime::now().hash(&mut h);
    std::process::id().hash(&mut h);
    COUNTER.fetch_add(1, Ordering::Relaxed).hash(&mut h);
    format!("{:08x}", h.finish() & 0xffff_ffff)
}

fn check_attempt(step: &str, attempt: u32) -> Result<(), RecordsError> {
    if attempt == 0 {
        return Err(RecordsError::AttemptZero {
            step: step.to_owned(),
        });
    }
    Ok(())
}

fn parse<T: std::str::FromStr<Err = String>>(
    text: &str,
    what: &'static str,
) -> Result<T, RecordsError> {
    text.parse()
        .map_err(|value| RecordsError::Corrupt { what, value })
}

fn path_from(bytes: Vec<u8>) -> PathBuf {
    PathBuf::from(OsString::from_vec(bytes))
}

/// Whether a process with this pid exists: only for the moment between
/// `create_run` and the lock being taken. EPERM means it exists (someone
/// else's).
fn pid_alive(pid: u32) -> bool {
    let Some(pid) = i32::try_from(pid)
        .ok()
        .and_then(rustix::process::Pid::from_raw)
    else {
        return false;
    };
    match rustix::process::test_kill_process(pid) {
        Ok(()) => true,
        Err(e) => e == rustix::io::Errno::PERM,
    }
}
