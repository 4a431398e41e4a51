//! `kiln runs list|show|stop`: what runs did, and stopping one. A
//! Kubernetes run still recorded as running is first refreshed from its
//! cluster (its Job's state annotations and its pods, copied into the
//! records), then shown like a local one; a cluster that does not answer
//! leaves its last known state.

use std::collections::BTreeMap;
use std::process::ExitCode;
use std::time::{Duration, SystemTime};

use anyhow::Context as _;
use kiln_runner::k8s::connect::{self, ConnectError, Target};
use kiln_runner::k8s::records::{RefreshError, refresh};
use kiln_runner::k8s::runs::request_stop;
use kiln_runner::k8s::status::{STOP_FORCE, STOP_GRACEFUL};
use kiln_runner::records::{
    self, AttemptDetail, Backend, ClusterRun, RecordsError, RunDetail, RunId, RunStatus,
    StepDetail, StepStatus,
};

use crate::cli::RunsCommand;

/// How long `kiln runs` waits for one cluster before it shows the last
/// known state of that cluster's runs: listing must not hang on a cluster
/// that is down or unreachable from here.
const REFRESH_TIMEOUT: Duration = Duration::from_secs(5);

/// How long `kiln runs stop` waits for the cluster: stopping is worth a
/// longer wait than showing, but not forever.
const STOP_TIMEOUT: Duration = Duration::from_secs(30);

/// Lists, shows or stops.
pub(super) fn run(command: &RunsCommand, json: bool) -> anyhow::Result<ExitCode> {
    let records = open_records()?;
    match command {
        RunsCommand::List => list(&records, json),
        RunsCommand::Show { run } => show(&records, run, json),
        RunsCommand::Stop { run, force } => stop(&records, run, *force, json),
    }
}

/// The records of the default data directory.
pub(super) fn open_records() -> anyhow::Result<records::Records> {
    let dir = records::default_data_dir()
        .context("cannot find a data directory: set XDG_DATA_HOME or HOME")?;
    records::Records::open(&dir)
        .with_context(|| format!("opening the run records in {}", dir.display()))
}

/// The run `given` names; an unknown one is an error that names the
/// newest runs, so the user sees what does exist.
pub(super) fn find_run(records: &records::Records, given: &str) -> anyhow::Result<RunDetail> {
    match records.run(given) {
        Err(err @ RecordsError::UnknownRun { .. }) => {
            let runs = records.list_runs()?;
            let newest: Vec<&str> = runs.iter().take(5).map(|r| r.id.as_str()).collect();
            if newest.is_empty() {
                anyhow::bail!("{err}: there are no runs yet");
            }
            let more = if runs.len() > newest.len() {
                ", ... (kiln runs list shows all)"
            } else {
                ""
            };
            anyhow::bail!("{err}; the newest runs are {}{more}", newest.join(", "))
        }
        other => Ok(other?),
    }
}

/// The connection target of a submitted run: its context (the current
/// one when it has none) and namespace.
pub(super) fn run_target(at: &ClusterRun) -> Target {
    Target {
        incluster: false,
        context: at.context.clone(),
        namespace: at.namespace.clone(),
    }
}

/// Brings Kubernetes runs' records up to date with their clusters, one
/// cluster (kubeconfig context) at a time, each within
/// [`REFRESH_TIMEOUT`]. A cluster that cannot be reached, or not in time,
/// gets one warning line and its runs keep their last known state; a run
/// whose refresh fails otherwise gets its own line. Only the records
/// failing is an error.
fn refresh_cluster_runs(
    records: &records::Records,
    runs: Vec<(RunId, ClusterRun)>,
) -> anyhow::Result<()> {
    let mut by_cluster: BTreeMap<Option<String>, Vec<(RunId, ClusterRun)>> = BTreeMap::new();
    for (id, at) in runs {
        by_cluster
            .entry(at.context.clone())
            .or_default()
            .push((id, at));
    }
    if by_cluster.is_empty() {
        return Ok(());
    }
    let runtime = super::kube::runtime()?;
    for (context, runs) in by_cluster {
        let cluster = match &context {
            Some(c) => format!("cluster {c:?}"),
            None => "the kubeconfig's current cluster".to_owned(),
        };
        let mut done: Vec<RunId> = Vec::new();
        let mut failed: Vec<(RunId, RefreshError)> = Vec::new();
        let outcome = runtime.block_on(async {
            tokio::time::timeout(REFRESH_TIMEOUT, async {
                let Some((_, first)) = runs.first() else {
                    return Ok(());
                };
                let client = connect::client(&run_target(first)).await?;
                for (id, at) in &runs {
                    match refresh(&client, records, id, at).await {
                        Ok(()) => {}
                        // No answer at all: the cluster is unreachable,
                        // which the other runs need not find out again.
                        Err(RefreshError::Api { source, .. })
                            if !matches!(source, kube::Error::Api(_)) =>
                        {
                            return Err(Unreachable::Api(source));
                        }
                        Err(e) => failed.push((id.clone(), e)),
                    }
                    done.push(id.clone());
                }
                Ok(())
            })
            .await
        });
        let left: Vec<&str> = runs
            .iter()
            .map(|(id, _)| id.as_str())
            .filter(|id| !done.iter().any(|d| d == id))
            .collect();
        let why = match outcome {
            Ok(Ok(())) => None,
            Ok(Err(e)) => Some(kiln_pipeline::error_chain(&e)),
            Err(_) => Some(format!("no answer within {}s", REFRESH_TIMEOUT.as_secs())),
        };
        if let Some(why) = why {
            eprintln!(
                "kiln: warning: cannot reach {cluster} ({why}); showing the last known state of run{} {}",
                if left.len() == 1 { "" } else { "s" },
                left.join(", ")
            );
        }
        for (id, e) in failed {
            if let RefreshError::Records(e) = e {
                return Err(e.into());
            }
            eprintln!(
                "kiln: warning: run {id}: {}; showing its last known state",
                kiln_pipeline::error_chain(&e)
            );
        }
    }
    Ok(())
}

/// Why a cluster could not be asked at all.
#[derive(Debug, thiserror::Error)]
enum Unreachable {
    #[error(transparent)]
    Connect(#[from] ConnectError),
    #[error(transparent)]
    Api(kube::Error),
}

/// The Kubernetes runs among `runs` that the cluster may have news of:
/// those recorded as still running.
fn unfinished_cluster_runs(
    records: &records::Records,
    runs: &[records::RunSummary],
) -> anyhow::Result<Vec<(RunId, ClusterRun)>> {
    let mut out = Vec::new();
    for r in runs {
        if r.backend == Backend::Kubernetes
            && r.status == RunStatus::Running
            && let Some(at) = records.cluster_run(&r.id)?
        {
            out.push((r.id.clone(), at));
        }
    }
    Ok(out)
}

/// `run` as its cluster has it now, when it is a Kubernetes run still
/// recorded as running; a run that has ended has nothing more to learn
/// (its orchestrator wrote the end last), and is shown without asking a
/// cluster that may be long gone.
fn refreshed(records: &records::Records, run: RunDetail) -> anyhow::Result<RunDetail> {
    match &run.cluster {
        Some(at) if run.status == RunStatus::Running => {
            refresh_cluster_runs(records, vec![(run.id.clone(), at.clone())])?;
            Ok(records.run(&run.id)?)
        }
        _ => Ok(run),
    }
}

fn list(records: &records::Records, json: bool) -> anyhow::Result<ExitCode> {
    let mut runs = records.list_runs()?;
    let unfinished = unfinished_cluster_runs(records, &runs)?;
    if !unfinished.is_empty() {
        refresh_cluster_runs(records, unfinished)?;
        runs = records.list_runs()?;
    }
    if json {
        println!("{}", serde_json::to_string_pretty(&runs)?);
        return Ok(ExitCode::SUCCESS);
    }
    if runs.is_empty() {
        println!("no runs yet");
        return Ok(ExitCode::SUCCESS);
    }
    let rows = runs
        .iter()
        .map(|r| {
            vec![
                r.id.clone(),
                r.pipeline.clone(),
                r.status.to_string(),
                records::format_utc(r.started),
                run_duration(r.status, r.started, r.ended),
                format!("{}/{}", r.steps_succeeded, r.steps_total),
                r.backend.to_string(),
            ]
        })
        .collect();
    super::print_table(
        &[
            "RUN", "PIPELINE", "STATUS", "STARTED", "DURATION", "STEPS", "BACKEND",
        ],
        rows,
    );
    Ok(ExitCode::SUCCESS)
}

fn show(records: &records::Records, given: &str, json: bool) -> anyhow::Result<ExitCode> {
    let run = refreshed(records, find_run(records, given)?)?;
    if json {
        println!("{}", serde_json::to_string_pretty(&run)?);
        return Ok(ExitCode::SUCCESS);
    }
    println!("run       {}", run.id);
    println!("pipeline  {} ({})", run.pipeline, run.file.display());
    println!("status    {}", run.status);
    println!("started   {}", records::format_utc(run.started));
    println!(
        "duration  {}",
        run_duration(run.status, run.started, run.ended)
    );
    if let Some(origin) = &run.retry_of {
        println!("retry of  {origin}");
    }
    match &run.cluster {
        Some(at) => println!("backend   kubernetes: {}", where_(at)),
        None => println!("backend   local"),
    }
    if run.status == RunStatus::Running && run.backend == Backend::Local {
        println!("pid       {}", run.pid);
    }
    println!();
    let rows = run.steps.iter().map(step_row).collect();
    super::print_table(
        &[
            "STEP", "STATUS", "ATTEMPTS", "DURATION", "EXIT", "REASON", "LOG",
        ],
        rows,
    );
    Ok(ExitCode::SUCCESS)
}

/// A step's row: its last attempt stands for it (duration, exit, log).
fn step_row(step: &StepDetail) -> Vec<String> {
    let last: Option<&AttemptDetail> = step.attempts.last();
    let dash = || "-".to_owned();
    let reason = match (step.status, step.next_attempt, step.next_attempt_at) {
        (StepStatus::Retrying, Some(n), Some(at)) => {
            format!("attempt {n} at {}", records::format_utc(at))
        }
        _ => step
            .reason
            .clone()
            .or_else(|| last.and_then(|a| a.reason.clone()))
            .unwrap_or_else(dash),
    };
    vec![
        step.name.clone(),
        step.status.to_string(),
        step.attempts.len().to_string(),
        last.map_or_else(dash, |a| match a.ended {
            Some(end) => human_duration(end.duration_since(a.started).unwrap_or_default()),
            None if step.status == StepStatus::Running => human_duration(elapsed(a.started)),
            None => dash(),
        }),
        last.and_then(|a| a.exit_code)
            .map_or_else(dash, |c| c.to_string()),
        reason,
        last.map_or_else(dash, |a| a.log_path.display().to_string()),
    ]
}

fn stop(
    records: &records::Records,
    given: &str,
    force: bool,
    json: bool,
) -> anyhow::Result<ExitCode> {
    let run = refreshed(records, find_run(records, given)?)?;
    if run.status != RunStatus::Running {
        eprintln!("run {} is not running (status: {})", run.id, run.status);
        return Ok(ExitCode::from(1));
    }
    if let Some(at) = &run.cluster {
        return stop_cluster_run(&run.id, at, force, json);
    }
    let pid = i32::try_from(run.pid)
        .ok()
        .and_then(rustix::process::Pid::from_raw)
        .with_context(|| format!("run {} has no kiln pid to signal ({})", run.id, run.pid))?;
    // The running kiln treats SIGUSR1 as a graceful stop and SIGTERM (like
    // SIGINT) as a force stop.
    let (signal, name, what) = if force {
        (
            rustix::process::Signal::TERM,
            "SIGTERM",
            "cancelling its running steps",
        )
    } else {
        (
            rustix::process::Signal::USR1,
            "SIGUSR1",
            "running steps finish, nothing new starts",
        )
    };
    rustix::process::kill_process(pid, signal)
        .with_context(|| format!("signalling kiln (pid {}) of run {}", run.pid, run.id))?;
    if json {
        let value =
            serde_json::json!({"run": run.id, "pid": run.pid, "signal": name, "force": force});
        println!("{value}");
    } else {
        println!(
            "stopping run {} (sent {name} to kiln pid {}): {what}",
            run.id, run.pid
        );
    }
    Ok(ExitCode::SUCCESS)
}

/// Asks a Kubernetes run's orchestrator to stop, through its Job.
fn stop_cluster_run(
    id: &str,
    at: &ClusterRun,
    force: bool,
    json: bool,
) -> anyhow::Result<ExitCode> {
    let runtime = super::kube::runtime()?;
    runtime
        .block_on(async {
            tokio::time::timeout(STOP_TIMEOUT, async {
                let client = connect::client(&run_target(at)).await?;
                request_stop(&client, at, force).await?;
                anyhow::Ok(())
            })
            .await
        })
        .map_err(|_| {
            anyhow::anyhow!(
                "the cluster did not answer within {}s",
                STOP_TIMEOUT.as_secs()
            )
        })?
        .with_context(|| format!("stopping run {id}"))?;
    let mode = if force { STOP_FORCE } else { STOP_GRACEFUL };
    if json {
        let value = serde_json::json!({
            "run": id, "context": at.context, "namespace": at.namespace, "job": at.job,
            "stop": mode, "force": force,
        });
        println!("{value}");
    } else {
        let what = if force {
            "the orchestrator deletes the running steps' pods, nothing new starts"
        } else {
            "running steps finish, nothing new starts"
        };
        println!(
            "stopping run {id} (asked its orchestrator for a {mode} stop: {}): {what}",
            where_(at)
        );
    }
    Ok(ExitCode::SUCCESS)
}

/// `Job NAMESPACE/JOB, context CONTEXT`, for people.
fn where_(at: &ClusterRun) -> String {
    let context = at
        .context
        .as_ref()
        .map(|c| format!(", context {c}"))
        .unwrap_or_default();
    format!("Job {}/{}{context}", at.namespace, at.job)
}

/// How long the run took, or has taken so far; `-` when its end is
/// unknown (interrupted).
fn run_duration(status: RunStatus, started: SystemTime, ended: Option<SystemTime>) -> String {
    match (ended, status) {
        (Some(end), _) => human_duration(end.duration_since(started).unwrap_or_default()),
        (None, RunStatus::Running) => human_duration(elapsed(started)),
        (None, _) => "-".into(),
    }
}

fn elapsed(since: SystemTime) -> Duration {
    SystemTime::now().duration_since(since).unwrap_or_default()
}

/// `42s`, `3m05s`, `2h07m`: precise where it matters, short where not.
pub(super) fn human_duration(d: Duration) -> String {
    let s = d.as_secs();
    match s {
        0..60 => format!("{s}s"),
        60..3600 => format!("{}m{:02}s", s / 60, s % 60),
        _ => format!("{}h{:02}m", s / 3600, s / 60 % 60),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_read_short() {
        assert_eq!(human_duration(Duration::from_millis(4_900)), "4s");
        assert_eq!(human_duration(Duration::from_secs(65)), "1m05s");
        assert_eq!(human_duration(Duration::from_secs(7_620)), "2h07m");
    }
}
