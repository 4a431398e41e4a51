//! `kiln orchestrate`: the orchestrator pod's command. It exits 0 once the
//! run has ended, whatever the run's outcome (kept on the Job as
//! `kiln.dev/status`): a non-zero exit would make the Job start another
//! orchestrator for a run that is over. It exits non-zero only when it
//! could not conduct the run, and the Job then restarts it.

use std::process::ExitCode;

use kiln_runner::k8s::orchestrator::{orchestrate, percentiles, status_word};

pub(super) fn run() -> anyhow::Result<ExitCode> {
    let (outcome, figures) = orchestrate()?;
    if let Some((median, p95)) = percentiles(&figures.overheads) {
        eprintln!(
            "kiln: orchestration overhead per step (upstream Succeeded seen -> downstream pod created): median {:.1} ms, p95 {:.1} ms over {} launches",
            median.as_secs_f64() * 1e3,
            p95.as_secs_f64() * 1e3,
            figures.overheads.len()
        );
    }
    if let Some((cpu, rss)) = own_usage() {
        eprintln!(
            "kiln: orchestrator CPU {cpu:.2} s, peak RSS {:.1} MB",
            rss / 1e6
        );
    }
    eprintln!("kiln: run {}", status_word(outcome));
    Ok(ExitCode::SUCCESS)
}

/// CPU seconds (user + system) and peak RSS in bytes of this process, from
/// /proc.
fn own_usage() -> Option<(f64, f64)> {
    let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
    // Fields after the command's closing parenthesis; utime and stime are
    // the 14th and 15th fields of the whole line.
    let rest = stat.rsplit_once(')')?.1;
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let ticks = |i: usize| fields.get(i)?.parse::<f64>().ok();
    // rest starts at field 3 (state): utime is field 14 -> index 11.
    let cpu = (ticks(11)? + ticks(12)?) / 100.0;
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let hwm = status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))?
        .trim()
        .trim_end_matches("kB")
        .trim()
        .parse::<f64>()
        .ok()?;
    Some((cpu, hwm * 1024.0))
}
