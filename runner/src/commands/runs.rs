//! `kiln runs list|show|stop`: what local runs did, and stopping one.

use std::process::ExitCode;
use std::time::{Duration, SystemTime};

use anyhow::Context as _;
use kiln_runner::records::{
    self, AttemptDetail, RecordsError, RunDetail, RunStatus, StepDetail, StepStatus,
};

use crate::cli::RunsCommand;

/// Lists, shows or stops.
pub fn run(command: &RunsCommand, json: bool) -> anyhow::Result<ExitCode> {
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

fn list(records: &records::Records, json: bool) -> anyhow::Result<ExitCode> {
    let runs = records.list_runs()?;
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
            ]
        })
        .collect();
    super::print_table(
        &["RUN", "PIPELINE", "STATUS", "STARTED", "DURATION", "STEPS"],
        rows,
    );
    Ok(ExitCode::SUCCESS)
}

fn show(records: &records::Records, given: &str, json: bool) -> anyhow::Result<ExitCode> {
    let run = find_run(records, given)?;
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
    if run.status == RunStatus::Running {
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
    let run = find_run(records, given)?;
    if run.status != RunStatus::Running {
        eprintln!("run {} is not running (status: {})", run.id, run.status);
        return Ok(ExitCode::from(1));
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
