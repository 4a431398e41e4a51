//! `kiln logs RUN [STEP] [--follow]`: the output of a run's attempts, from
//! the log files the runner wrote, in step order, attempt by attempt; for a
//! Kubernetes run, from its pods through the API server (the orchestrator
//! pod's log for the whole run, the latest attempt's pod for a step).

use std::collections::{HashMap, HashSet};
use std::fs::File;
use std::io::{self, BufRead, BufReader, Seek, SeekFrom, Write};
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context as _;
use kiln_runner::k8s::connect;
use kiln_runner::k8s::runs::{ClusterRunError, LogEnd, LogSource, print_logs};
use kiln_runner::records::{ClusterRun, RunDetail, RunStatus};

use super::runs::{find_run, open_records, run_target};
use crate::cli::LogsArgs;

/// How often `--follow` looks for new lines and new attempts.
const POLL: Duration = Duration::from_millis(200);

/// Prints the logs; exit 1 for an unknown run or step.
pub(super) fn run(args: &LogsArgs) -> anyhow::Result<ExitCode> {
    let records = open_records()?;
    let mut run = find_run(&records, &args.run)?;
    let steps: Vec<usize> = match &args.step {
        None => (0..run.steps.len()).collect(),
        Some(name) => match run.steps.iter().position(|s| &s.name == name) {
            Some(i) => vec![i],
            None => {
                let names: Vec<&str> = run.steps.iter().map(|s| s.name.as_str()).collect();
                eprintln!(
                    "kiln: error: run {} has no step `{name}`; its steps are: {}",
                    run.id,
                    names.join(", ")
                );
                return Ok(ExitCode::from(1));
            }
        },
    };
    if let Some(at) = &run.cluster {
        return cluster_logs(&run, at, args);
    }
    let mut tail = Tail {
        prefixed: args.step.is_none(),
        ..Tail::default()
    };
    let stdout = io::stdout();
    let mut out = stdout.lock();
    let result = (|| -> io::Result<()> {
        if args.follow {
            while run.status == RunStatus::Running {
                tail.pass(&run, &steps, false, &mut out)?;
                out.flush()?;
                std::thread::sleep(POLL);
                run = records.run(&run.id).map_err(io::Error::other)?;
            }
        }
        tail.pass(&run, &steps, true, &mut out)?;
        out.flush()
    })();
    match result {
        // `kiln logs ... | head` is not an error.
        Err(e) if e.kind() == io::ErrorKind::BrokenPipe => Ok(ExitCode::SUCCESS),
        Err(e) => Err(e.into()),
        Ok(()) => Ok(ExitCode::SUCCESS),
    }
}

/// The logs of a Kubernetes run, read through the API server.
fn cluster_logs(run: &RunDetail, at: &ClusterRun, args: &LogsArgs) -> anyhow::Result<ExitCode> {
    let source = match &args.step {
        Some(step) => LogSource::Step(step),
        None => LogSource::Run,
    };
    let runtime = super::kube::runtime()?;
    let stdout = io::stdout();
    let mut out = stdout.lock();
    let end = runtime.block_on(async {
        let client = connect::client(&run_target(at))
            .await
            .with_context(|| format!("connecting to the cluster of run {}", run.id))?;
        anyhow::Ok(print_logs(&client, &run.id, at, source, args.follow, &mut out).await)
    })?;
    let whose = match &args.step {
        Some(step) => format!("step {step} of run {}", run.id),
        None => format!("run {} (its orchestrator)", run.id),
    };
    match end {
        Ok(LogEnd::Printed) => {}
        Ok(LogEnd::NoPod) => {
            eprintln!("kiln: {whose} has no pod in the cluster (not started yet, or cleaned up)");
        }
        Ok(LogEnd::NotStarted { pod, why }) => {
            eprintln!("kiln: {whose}: pod {pod} has not started yet: {why}");
        }
        // `kiln logs ... | head` is not an error.
        Err(ClusterRunError::Output(e)) if e.kind() == io::ErrorKind::BrokenPipe => {}
        Err(e) => return Err(anyhow::Error::new(e).context(format!("logs of {whose}"))),
    }
    Ok(ExitCode::SUCCESS)
}

/// What has been printed so far: per (step index, attempt), the offset
/// read up to, and whether any of its lines is out.
#[derive(Default)]
struct Tail {
    /// Lines carry `STEP | ` (several steps shown).
    prefixed: bool,
    offsets: HashMap<(usize, u32), u64>,
    begun: HashSet<(usize, u32)>,
}

impl Tail {
    /// Prints what is new in the attempts' logs. Before the `last` pass a
    /// line without its newline yet is left for the next pass; in it,
    /// everything goes out.
    fn pass(
        &mut self,
        run: &RunDetail,
        steps: &[usize],
        last: bool,
        out: &mut impl Write,
    ) -> io::Result<()> {
        for &i in steps {
            let Some(step) = run.steps.get(i) else {
                continue;
            };
            let prefix = if self.prefixed {
                format!("{} | ", step.name)
            } else {
                String::new()
            };
            let several = step.attempts.len() > 1;
            for attempt in &step.attempts {
                let key = (i, attempt.number);
                let path = run.log_dir.join(&attempt.log_path);
                let file = match File::open(&path) {
                    Ok(f) => f,
                    // Not written yet (the attempt is starting), or
                    // removed: nothing to show.
                    Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
                    Err(e) => {
                        return Err(io::Error::new(
                            e.kind(),
                            format!("reading {}: {e}", path.display()),
                        ));
                    }
                };
                let offset = self.offsets.entry(key).or_insert(0);
                let mut reader = BufReader::new(file);
                reader.seek(SeekFrom::Start(*offset))?;
                let mut line = Vec::new();
                loop {
                    line.clear();
                    let n = reader.read_until(b'\n', &mut line)?;
                    if n == 0 || (!last && !line.ends_with(b"\n")) {
                        break;
                    }
                    *offset += n as u64;
                    // The header goes before an attempt's first line, or never:
                    // one printed later would land mid-output under --follow.
                    if self.begun.insert(key) && (several || attempt.number > 1) {
                        let n = attempt.number;
                        if self.prefixed {
                            writeln!(out, "{prefix}== attempt {n} ==")?;
                        } else {
                            writeln!(out, "== {} attempt {n} ==", step.name)?;
                        }
                    }
                    let text = String::from_utf8_lossy(&line);
                    writeln!(out, "{prefix}{}", text.trim_end_matches(['\n', '\r']))?;
                }
            }
        }
        Ok(())
    }
}
