//! `kiln run`: build what is missing or stale (through the layer cache),
//! then run the step DAG on this machine, recording the run.

use std::collections::HashMap;
use std::io::IsTerminal as _;
use std::num::NonZeroUsize;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use anyhow::{Context as _, bail};
use kiln_builder::registry::Platform;
use kiln_builder::store::Store;
use kiln_pipeline::Pipeline;
use kiln_rootfs::sandbox::{Sandbox, SandboxConfig};
use kiln_rootfs::unpack::{RootCache, UnpackOptions};
use kiln_runner::console::{Console, Lines};
use kiln_runner::driver::{self, AttemptOutcome, Observer, Report};
use kiln_runner::local::leftovers::RunDirLock;
use kiln_runner::local::{LocalBackend, LocalStep, RunPaths, image};
use kiln_runner::records::{
    AttemptStatus, NewRun, NewStep, Records, RunDetail, RunLock, RunStatus, StepStatus,
};
use kiln_runner::scheduler::{Observed, ObservedState, RunConfig, RunOutcome, Scheduler, Terminal};
use kiln_runner::specs::{Retries, step_names, step_specs};

use super::build::{build_pinned, data_dir, push_registries, registry_client};
use super::load_pipeline;
use crate::cli::{Backend, RunArgs};
use crate::progress::Display;

pub fn run(args: &RunArgs, json: bool) -> anyhow::Result<ExitCode> {
    if args.on == Backend::Kubernetes {
        return super::kube_run::run(args, json);
    }
    let data = data_dir()?;
    let records = Records::open(&data).context("opening the run records")?;
    let previous = match &args.retry_failed {
        Some(id) => Some(records.run(id)?),
        None => None,
    };
    let file = previous
        .as_ref()
        .map_or_else(|| args.pipeline.clone(), |p| p.file.clone());
    let Some(pipeline) = load_pipeline(&file)? else {
        return Ok(ExitCode::from(1));
    };
    let names = step_names(&pipeline);
    let reused = reused_steps(&names, previous.as_ref())?;

    let sandbox = Sandbox::new(SandboxConfig::default()).context("the sandbox cannot start")?;
    let cache_dir = super::cache_dir(&args.cache_dir)?;
    let launches = prepare_steps(&pipeline, &names, &reused, &sandbox, &cache_dir, args, json)?;

    // The run and where its files go.
    let started = SystemTime::now();
    let (paths, _run_lock) = create_run_dirs(&pipeline, &data, previous.as_ref(), started)?;
    let new = new_run(&pipeline, &names, &paths, previous.as_ref(), started);
    let (run_id, _lock) = record_run(&records, &data, &new, &reused)?;

    let mut scheduler = resumed_scheduler(&pipeline, &reused)?;
    let colour = std::io::stdout().is_terminal();
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
    let mut observers = Both {
        console: &mut console,
        records: RecordWriter {
            records: &records,
            run: &run_id,
            names: &names,
        },
    };
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

    say_end(&records, &run_id, &console, outcome, started, json)?;
    Ok(if outcome.is_success() {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
}

/// Creates the run's folders and locks them for as long as this kiln
/// lives. A folder per run, named before the run has its id (the id comes
/// from the records); a retry works in the original run's files, so the
/// outputs of the steps it reuses are there.
fn create_run_dirs(
    pipeline: &Pipeline,
    data: &std::path::Path,
    previous: Option<&RunDetail>,
    started: SystemTime,
) -> anyhow::Result<(RunPaths, RunDirLock)> {
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
        .with_context(|| format!("creating {}", run_root.display()))?;
    // Scratch left by runs whose kiln was killed goes first; this run's
    // directory is locked for as long as this kiln lives.
    kiln_runner::local::leftovers::sweep_scratch(&run_base(pipeline, data));
    let run_lock = kiln_runner::local::leftovers::lock_run_dir(&run_root)
        .with_context(|| format!("locking {}", run_root.display()))?;
    for dir in [&paths.files, &paths.logs, &paths.scratch] {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    }
    // Every step may write the run directory, whatever user its image has.
    std::fs::set_permissions(
        &paths.files,
        std::os::unix::fs::PermissionsExt::from_mode(0o1777),
    )
    .with_context(|| format!("opening {} to the steps", paths.files.display()))?;
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
    data: &std::path::Path,
    new: &NewRun,
    reused: &[bool],
) -> anyhow::Result<(String, RunLock)> {
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
fn resumed_scheduler(pipeline: &Pipeline, reused: &[bool]) -> anyhow::Result<Scheduler> {
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
    launches: &HashMap<String, Result<kiln_runner::local::StepLaunch, String>>,
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

/// The run's end, as its record (`--json`) or as the console's summary
/// and a last line.
fn say_end(
    records: &Records,
    run_id: &str,
    console: &Console,
    outcome: RunOutcome,
    started: SystemTime,
    json: bool,
) -> anyhow::Result<()> {
    if json {
        println!("{}", serde_json::to_string_pretty(&records.run(run_id)?)?);
    } else {
        eprintln!();
        eprint!("{}", console.summary());
        eprintln!(
            "kiln: run {run_id} {} in {:.1}s",
            outcome_words(outcome),
            started.elapsed().unwrap_or_default().as_secs_f64()
        );
    }
    Ok(())
}

/// How the run's last line says it ended.
fn outcome_words(outcome: RunOutcome) -> &'static str {
    match outcome {
        RunOutcome::Succeeded => "succeeded",
        RunOutcome::Failed => "failed",
        RunOutcome::Stopped { force } => {
            if force {
                "was cancelled"
            } else {
                "was stopped"
            }
        }
        RunOutcome::TimedOut => "timed out",
    }
}

/// Steps to reuse from the run being retried: those that succeeded there.
fn reused_steps(names: &[String], previous: Option<&RunDetail>) -> anyhow::Result<Vec<bool>> {
    let Some(previous) = previous else {
        return Ok(vec![false; names.len()]);
    };
    if matches!(previous.status, RunStatus::Running) {
        bail!(
            "run {} is still running; stop it first (kiln runs stop {})",
            previous.id,
            previous.id
        );
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

/// Builds (through the cache) and unpacks the image of every step that
/// will run. A step whose image cannot be built or pulled gets the reason
/// instead, so it fails with it and its siblings still run.
fn prepare_steps(
    pipeline: &Pipeline,
    names: &[String],
    reused: &[bool],
    sandbox: &Sandbox,
    cache_dir: &std::path::Path,
    args: &RunArgs,
    json: bool,
) -> anyhow::Result<HashMap<String, Result<kiln_runner::local::StepLaunch, String>>> {
    let plan = kiln_builder::plan::plan(pipeline, None)?;
    let store = Store::new(cache_dir)?;
    let roots = RootCache::new(cache_dir.join("roots"))?;
    let client = registry_client(&args.registry, push_registries(Some(pipeline), &[]))?;
    let display = Display::choose(json);
    let platform = Platform::default();
    let unpack = UnpackOptions::mapped(sandbox.id_map().clone());
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    let data = data_dir()?;
    let mut launches = HashMap::new();
    for image in &plan.images {
        let needed = image.steps.iter().any(|s| {
            names
                .iter()
                .position(|n| n == s)
                .is_some_and(|i| !reused[i])
        });
        if !needed {
            continue;
        }
        let ready = build_pinned(
            &runtime, pipeline, image, cache_dir, &data, &client, &display,
        )
        .and_then(|reference| {
            runtime
                .block_on(kiln_builder::ready::ready(
                    &client, &store, &roots, &reference, &platform, &unpack,
                ))
                .map_err(|e| e.to_string())
        });
        if let Err(reason) = &ready {
            eprintln!("kiln: {reason}");
        }
        for step in &image.steps {
            let launch = ready
                .as_ref()
                .map_err(Clone::clone)
                .and_then(|r| image::launch_of(pipeline, step, r));
            launches.insert(step.clone(), launch);
        }
    }
    Ok(launches)
}

/// Where runs keep their files: the local settings' `run_directory`, else
/// kiln's data directory.
fn run_base(pipeline: &Pipeline, data: &std::path::Path) -> PathBuf {
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
fn stop_on_signals(sender: std::sync::mpsc::Sender<driver::Input>) -> anyhow::Result<()> {
    use signal_hook::consts::{SIGINT, SIGTERM, SIGUSR1};
    let mut signals = signal_hook::iterator::Signals::new([SIGINT, SIGTERM, SIGUSR1])
        .context("installing signal handlers")?;
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

/// The console and the records, each told everything.
struct Both<'a> {
    console: &'a mut Console,
    records: RecordWriter<'a>,
}

impl Observer for Both<'_> {
    fn report(&mut self, report: &Report) {
        self.console.report(report);
        self.records.report(report);
    }
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
