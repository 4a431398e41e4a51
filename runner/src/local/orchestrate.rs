//! A run on this machine, from prepared steps to its end: the run's
//! folders and record, the scheduler (resumed past the steps a retry
//! reuses), the sandboxed backend, the console and the records as the
//! driver's observers, and signals as stop requests. The local
//! counterpart of [`crate::k8s::orchestrator`]; `kiln run` builds the
//! images, calls [`run`] and prints the end.

use std::collections::HashMap;
use std::num::NonZeroUsize;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use kiln_pipeline::Pipeline;
use kiln_rootfs::sandbox::Sandbox;

use super::backend::{LocalBackend, LocalStep, RunPaths, StepLaunch};
use super::leftovers::{RunDirLock, lock_run_dir, sweep_scratch};
use crate::console::{Console, Lines};
use crate::driver::{self, AttemptOutcome, Observer, Report};
use crate::records::{
    AttemptStatus, NewRun, NewStep, Records, RecordsError, RunDetail, RunLock, RunStatus,
    StepStatus,
};
use crate::scheduler::{
    Observed, ObservedState, RunConfig, RunOutcome, Scheduler, SchedulerError, Terminal,
};
use crate::specs::{Retries, step_names, step_specs};

/// Why a local run could not be carried out (a step's failure is not one:
/// it is the run's outcome).
#[derive(Debug, thiserror::Error)]
pub enum LocalRunError {
    /// `--retry-failed` of a run that has not ended.
    #[error("run {0} is still running; stop it first (kiln runs stop {0})")]
    StillRunning(String),
    /// A run folder could not be made ready.
    #[error("{what} {}", path.display())]
    Folder {
        /// What kiln was doing: `creating`, `locking`, ….
        what: &'static str,
        /// The folder.
        path: PathBuf,
        /// Why it failed.
        #[source]
        source: std::io::Error,
    },
    /// The run directory could not be opened to every step's user.
    #[error("opening {} to the steps", path.display())]
    OpenToSteps {
        /// The run directory.
        path: PathBuf,
        /// Why it failed.
        #[source]
        source: std::io::Error,
    },
    /// The signal handlers could not be installed.
    #[error("installing signal handlers")]
    Signals(#[source] std::io::Error),
    /// The run records could not be read or written.
    #[error(transparent)]
    Records(#[from] RecordsError),
    /// The DAG is not one the scheduler accepts.
    #[error(transparent)]
    Scheduler(#[from] SchedulerError),
}

fn folder(what: &'static str, path: &Path) -> impl FnOnce(std::io::Error) -> LocalRunError {
    let path = path.to_path_buf();
    move |source| LocalRunError::Folder { what, path, source }
}

/// What a local run is given: the pipeline, where its records and files
/// go, the run it retries (if any) and each step's prepared launch.
pub struct LocalRun<'a> {
    /// The pipeline.
    pub pipeline: &'a Pipeline,
    /// kiln's data directory (records, locks, default run folders).
    pub data: &'a Path,
    /// The run records.
    pub records: &'a Records,
    /// The run being retried (`--retry-failed`).
    pub previous: Option<&'a RunDetail>,
    /// Per step, whether it is reused from `previous` and not run.
    pub reused: &'a [bool],
    /// The sandbox the steps run in.
    pub sandbox: Sandbox,
    /// Each step to run with what it runs, or why it cannot.
    pub launches: HashMap<String, Result<StepLaunch, String>>,
    /// Colour the console (a terminal).
    pub colour: bool,
}

/// How a local run ended: its id, the console (for its summary) and the
/// outcome.
pub struct LocalRunEnd {
    /// The run's id in the records.
    pub run_id: String,
    /// The console that followed the run.
    pub console: Console,
    /// How the run ended.
    pub outcome: RunOutcome,
    /// When it started.
    pub started: SystemTime,
}

/// Carries out a local run to its end and records it.
pub fn run(r: LocalRun<'_>) -> Result<LocalRunEnd, LocalRunError> {
    let LocalRun {
        pipeline,
        data,
        records,
        previous,
        reused,
        sandbox,
        launches,
        colour,
    } = r;
    let names = step_names(pipeline);
    // The run and where its files go.
    let started = SystemTime::now();
    let (paths, _run_lock) = create_run_dirs(pipeline, data, previous, started)?;
    let new = new_run(pipeline, &names, &paths, previous, started);
    let (run_id, _lock) = record_run(records, data, &new, reused)?;

    let mut scheduler = resumed_scheduler(pipeline, reused)?;
    let mut console = Console::new(names.clone(), colour);
    for (i, r) in reused.iter().enumerate() {
        if *r {
            console.reused(i);
        }
    }
    let mut backend = LocalBackend::new(
        sandbox,
        &run_id,
        local_steps(&names, &launches),
        paths.clone(),
        Arc::new(Lines::new(names.clone(), colour)),
    );
    let (sender, inputs) = driver::channel();
    stop_on_signals(sender.clone())?;
    eprintln!(
        "kiln: run {run_id} of {} ({} steps); logs in {}",
        pipeline.name(),
        names.len(),
        paths.logs.display()
    );
    let mut observers = (
        &mut console,
        RecordWriter {
            records,
            run: &run_id,
            names: &names,
        },
    );
    let outcome = driver::drive(
        &mut scheduler,
        &mut backend,
        &mut observers,
        &sender,
        &inputs,
    )?;
    drop(backend);
    let _ = std::fs::remove_dir_all(&paths.scratch);
    records.finish_run(&run_id, run_status(outcome), SystemTime::now())?;
    Ok(LocalRunEnd {
        run_id,
        console,
        outcome,
        started,
    })
}

/// Steps to reuse from the run being retried: those that succeeded there.
pub fn reused_steps(
    names: &[String],
    previous: Option<&RunDetail>,
) -> Result<Vec<bool>, LocalRunError> {
    let Some(previous) = previous else {
        return Ok(vec![false; names.len()]);
    };
    if matches!(previous.status, RunStatus::Running) {
        return Err(LocalRunError::StillRunning(previous.id.clone()));
    }
    Ok(names
        .iter()
        .map(|n| {
            previous.steps.iter().any(|s| {
                s.name == *n && matches!(s.status, StepStatus::Succeeded | StepStatus::Reused)
            })
        })
        .collect())
}

/// Creates the run's folders and locks them for as long as this kiln
/// lives. A folder per run, named before the run has its id (the id comes
/// from the records); a retry works in the original run's files, so the
/// outputs of the steps it reuses are there.
fn create_run_dirs(
    pipeline: &Pipeline,
    data: &Path,
    previous: Option<&RunDetail>,
    started: SystemTime,
) -> Result<(RunPaths, RunDirLock), LocalRunError> {
    let stamp = started
        .duration_since(SystemTime::UNIX_EPOCH)
        .unwrap_or_default();
    let run_root = run_base(pipeline, data).join(format!(
        "{}-{}-{}",
        pipeline.name(),
        stamp.as_secs(),
        std::process::id()
    ));
    let paths = RunPaths {
        files: previous.map_or_else(|| run_root.join("files"), |p| p.run_dir.clone()),
        logs: run_root.join("logs"),
        scratch: run_root.join("scratch"),
    };
    // A run's logs and scratch roots are its owner's only; the steps reach
    // the run directory through kiln's bind mount, not through the path.
    kiln_rootfs::private_dir::create_private_dir(&run_root)
        .map_err(folder("creating", &run_root))?;
    // Scratch left by runs whose kiln was killed goes first; this run's
    // directory is locked for as long as this kiln lives.
    sweep_scratch(&run_base(pipeline, data));
    let run_lock = lock_run_dir(&run_root).map_err(folder("locking", &run_root))?;
    for dir in [&paths.files, &paths.logs, &paths.scratch] {
        std::fs::create_dir_all(dir).map_err(folder("creating", dir))?;
    }
    // Every step may write the run directory, whatever user its image has.
    std::fs::set_permissions(
        &paths.files,
        std::os::unix::fs::PermissionsExt::from_mode(0o1777),
    )
    .map_err(|source| LocalRunError::OpenToSteps {
        path: paths.files.clone(),
        source,
    })?;
    Ok((paths, run_lock))
}

/// The run as the records first hold it: its steps, with no image (a
/// local run has no pushed reference), and where its files are.
fn new_run(
    pipeline: &Pipeline,
    names: &[String],
    paths: &RunPaths,
    previous: Option<&RunDetail>,
    started: SystemTime,
) -> NewRun {
    NewRun {
        pipeline: pipeline.name().to_string(),
        file: std::path::absolute(pipeline.file()).unwrap_or_else(|_| pipeline.file().into()),
        run_dir: paths.files.clone(),
        log_dir: paths.logs.clone(),
        steps: (0..names.len())
            .map(|i| NewStep {
                name: names[i].clone(),
                image: None,
                upstream: upstream_names(pipeline, i),
            })
            .collect(),
        retry_of: previous.map(|p| p.id.clone()),
        started,
        pid: std::process::id(),
    }
}

/// Records the run and its reused steps, and takes the run's lock, held
/// until the run is finished so that readers know it is alive.
fn record_run(
    records: &Records,
    data: &Path,
    new: &NewRun,
    reused: &[bool],
) -> Result<(String, RunLock), LocalRunError> {
    let run_id = records.create_run(new)?;
    let lock = RunLock::acquire(data, &run_id)?;
    for (step, r) in new.steps.iter().zip(reused) {
        if *r {
            records.step_ended(&run_id, &step.name, StepStatus::Reused, None)?;
        }
    }
    Ok((run_id, lock))
}

/// The names of step `i`'s upstream steps, as the pipeline lists them.
fn upstream_names(pipeline: &Pipeline, i: usize) -> Vec<String> {
    pipeline.steps()[i]
        .upstream
        .iter()
        .map(|u| u.value.clone())
        .collect()
}

/// The scheduler, resumed past the reused steps.
fn resumed_scheduler(pipeline: &Pipeline, reused: &[bool]) -> Result<Scheduler, LocalRunError> {
    // A local run has no pods: only a step's own `retry` block retries it.
    let specs = step_specs(pipeline, Retries::OwnBlockOnly);
    let observed: Vec<Observed> = (0..specs.len())
        .filter(|&i| reused.get(i).copied().unwrap_or(false))
        .map(|i| Observed {
            step: i,
            attempt: 1,
            state: ObservedState::Succeeded,
        })
        .collect();
    Ok(Scheduler::resume(specs, run_config(pipeline), &observed)?)
}

/// Each step with what it runs, or why it cannot: a step with no prepared
/// image (a reused one) fails if it is ever started.
fn local_steps(
    names: &[String],
    launches: &HashMap<String, Result<StepLaunch, String>>,
) -> Vec<LocalStep> {
    names
        .iter()
        .map(|n| LocalStep {
            name: n.clone(),
            launch: launches
                .get(n)
                .cloned()
                .unwrap_or_else(|| Err(format!("no image was prepared for step {n}"))),
        })
        .collect()
}

/// Where runs keep their files: the local settings' `run_directory`, else
/// kiln's data directory.
fn run_base(pipeline: &Pipeline, data: &Path) -> PathBuf {
    let m = pipeline.model();
    m.settings
        .local
        .as_ref()
        .and_then(|l| l.run_directory.clone())
        .or_else(|| {
            m.orchestrator
                .local
                .as_ref()
                .and_then(|l| l.run_directory.clone())
        })
        .map(|d| pipeline.base_dir().join(d.value))
        .unwrap_or_else(|| data.join("runs"))
}

/// The run-wide limits: `max_parallelism` of the local settings (default:
/// the number of cores) and the pipeline's `fail_fast`.
fn run_config(pipeline: &Pipeline) -> RunConfig {
    let m = pipeline.model();
    let parallelism = m
        .settings
        .local
        .as_ref()
        .and_then(|l| l.max_parallelism.as_ref())
        .or_else(|| {
            m.orchestrator
                .local
                .as_ref()
                .and_then(|l| l.max_parallelism.as_ref())
        })
        .and_then(|p| usize::try_from(p.value).ok())
        .and_then(NonZeroUsize::new)
        .or_else(|| std::thread::available_parallelism().ok());
    RunConfig {
        max_parallelism: parallelism,
        startup_period: Duration::ZERO,
        fail_fast: m.fail_fast,
        timeout: None,
    }
}

fn run_status(outcome: RunOutcome) -> RunStatus {
    match outcome {
        RunOutcome::Succeeded => RunStatus::Succeeded,
        RunOutcome::Failed => RunStatus::Failed,
        RunOutcome::Stopped { .. } => RunStatus::Stopped,
        RunOutcome::TimedOut => RunStatus::TimedOut,
    }
}

/// Ctrl-C and SIGTERM cancel the running steps; SIGUSR1 (`kiln runs stop`
/// without `--force`) lets them finish and starts nothing more.
fn stop_on_signals(sender: std::sync::mpsc::Sender<driver::Input>) -> Result<(), LocalRunError> {
    use signal_hook::consts::{SIGINT, SIGTERM, SIGUSR1};
    let mut signals = signal_hook::iterator::Signals::new([SIGINT, SIGTERM, SIGUSR1])
        .map_err(LocalRunError::Signals)?;
    std::thread::spawn(move || {
        for signal in signals.forever() {
            let force = signal != SIGUSR1;
            eprintln!(
                "kiln: {}",
                if force {
                    "stopping: cancelling running steps"
                } else {
                    "stopping: no new steps; running steps finish"
                }
            );
            if sender.send(driver::Input::Stop { force }).is_err() {
                break;
            }
        }
    });
    Ok(())
}

/// Writes reports into the run records. A failed write is said, not fatal:
/// the run itself goes on.
struct RecordWriter<'a> {
    records: &'a Records,
    run: &'a str,
    names: &'a [String],
}

impl Observer for RecordWriter<'_> {
    fn report(&mut self, report: &Report) {
        let now = SystemTime::now();
        let name = |i: &usize| self.names[*i].as_str();
        let result = match report {
            Report::AttemptStarted {
                step,
                attempt,
                launched,
            } => self.records.attempt_started(
                self.run,
                name(step),
                *attempt,
                &launched.log_path(),
                now,
            ),
            Report::AttemptEnded {
                step,
                attempt,
                outcome,
                exit_code,
                reason,
            } => self.records.attempt_ended(
                self.run,
                name(step),
                *attempt,
                match outcome {
                    AttemptOutcome::Succeeded => AttemptStatus::Succeeded,
                    AttemptOutcome::Failed => AttemptStatus::Failed,
                    AttemptOutcome::Cancelled => AttemptStatus::Cancelled,
                },
                *exit_code,
                reason.as_deref(),
                now,
            ),
            Report::RetryScheduled {
                step,
                attempt,
                after,
            } => self
                .records
                .retry_scheduled(self.run, name(step), *attempt, now + *after),
            Report::StepEnded { step, end, reason } => self.records.step_ended(
                self.run,
                name(step),
                match end {
                    Terminal::Succeeded => StepStatus::Succeeded,
                    Terminal::Failed => StepStatus::Failed,
                    Terminal::Skipped => StepStatus::Skipped,
                    Terminal::Cancelled => StepStatus::Cancelled,
                },
                reason.as_deref(),
            ),
            Report::Finished { .. } => Ok(()),
        };
        if let Err(e) = result {
            eprintln!("kiln: warning: could not record the run: {e}");
        }
    }
}
