//! The terminal side of a run: step output prefixed with the step's name
//! (coloured on a TTY), a line per attempt start and end, and the final
//! summary table. Backend-neutral: a local run prints it on the user's
//! terminal, the Kubernetes orchestrator into its own log, which `kiln run`
//! follows.

use std::io::Write as _;
use std::time::{Duration, Instant};

use crate::driver::{AttemptOutcome, Observer, Report};
use crate::scheduler::Terminal;

const COLOURS: &[&str] = &["36", "33", "35", "32", "34", "91", "96", "93"];

/// Prints a run's progress to stderr and its steps' output to stdout.
pub struct Console {
    names: Vec<String>,
    width: usize,
    colour: bool,
    started: Vec<Option<Instant>>,
    rows: Vec<Row>,
}

#[derive(Debug, Clone, Default)]
struct Row {
    status: String,
    attempts: u32,
    duration: Option<Duration>,
    reason: String,
}

impl Console {
    /// A console for steps `names`; `colour` on a terminal.
    pub fn new(names: Vec<String>, colour: bool) -> Self {
        let width = names.iter().map(String::len).max().unwrap_or(0);
        let n = names.len();
        Console {
            names,
            width,
            colour,
            started: vec![None; n],
            rows: vec![
                Row {
                    status: "pending".into(),
                    ..Row::default()
                };
                n
            ],
        }
    }

    fn prefix(&self, step: usize) -> String {
        prefix(&self.names, self.width, self.colour, step)
    }

    /// The summary table, one row per step.
    pub fn summary(&self) -> String {
        let mut out = format!(
            "{:<w$}  {:<9}  {:>8}  {:>9}  REASON\n",
            "STEP",
            "STATUS",
            "ATTEMPTS",
            "DURATION",
            w = self.width.max(4)
        );
        for (name, row) in self.names.iter().zip(&self.rows) {
            let duration = row
                .duration
                .map(|d| format!("{:.1}s", d.as_secs_f64()))
                .unwrap_or_else(|| "-".into());
            out.push_str(&format!(
                "{:<w$}  {:<9}  {:>8}  {:>9}  {}\n",
                name,
                row.status,
                row.attempts,
                duration,
                row.reason,
                w = self.width.max(4)
            ));
        }
        out
    }

    /// Marks a step as reused from an earlier run (`--retry-failed`).
    pub fn reused(&mut self, step: usize) {
        self.rows[step].status = "reused".into();
    }
}

fn prefix(names: &[String], width: usize, colour: bool, step: usize) -> String {
    let name = names.get(step).map_or("?", String::as_str);
    if colour {
        let c = COLOURS[step % COLOURS.len()];
        format!("\x1b[{c}m{name:<width$} |\x1b[0m")
    } else {
        format!("{name:<width$} |")
    }
}

impl Observer for Console {
    fn report(&mut self, report: &Report) {
        let mut err = std::io::stderr().lock();
        match report {
            Report::AttemptStarted { step, attempt, .. } => {
                self.started[*step] = Some(Instant::now());
                self.rows[*step].attempts = *attempt;
                self.rows[*step].status = "running".into();
                let _ = writeln!(err, "{} started (attempt {attempt})", self.prefix(*step));
            }
            Report::AttemptEnded {
                step,
                attempt,
                outcome,
                reason,
                ..
            } => {
                let took = self.started[*step].map(|s| s.elapsed());
                self.rows[*step].duration = took;
                let secs = took.map_or(0.0, |d| d.as_secs_f64());
                let what = match outcome {
                    AttemptOutcome::Succeeded => format!("succeeded in {secs:.1}s"),
                    AttemptOutcome::Failed => format!(
                        "failed after {secs:.1}s: {}",
                        reason.as_deref().unwrap_or("unknown")
                    ),
                    AttemptOutcome::Cancelled => format!("cancelled after {secs:.1}s"),
                };
                let _ = writeln!(err, "{} attempt {attempt} {what}", self.prefix(*step));
            }
            Report::RetryScheduled {
                step,
                attempt,
                after,
            } => {
                self.rows[*step].status = "retrying".into();
                let _ = writeln!(
                    err,
                    "{} retrying in {:.1}s (attempt {attempt})",
                    self.prefix(*step),
                    after.as_secs_f64()
                );
            }
            Report::StepEnded { step, end, reason } => {
                let row = &mut self.rows[*step];
                row.status = match end {
                    Terminal::Succeeded => "succeeded",
                    Terminal::Failed => "failed",
                    Terminal::Skipped => "skipped",
                    Terminal::Cancelled => "cancelled",
                }
                .into();
                row.reason = reason.clone().unwrap_or_default();
                if *end == Terminal::Skipped {
                    let why = row.reason.clone();
                    let _ = writeln!(err, "{} skipped: {why}", self.prefix(*step));
                }
            }
            Report::Finished { .. } => {}
        }
    }
}

/// Prints step output lines with the step's prefix.
pub(crate) struct Lines {
    names: Vec<String>,
    width: usize,
    colour: bool,
}

impl Lines {
    /// Lines for steps `names`.
    pub(crate) fn new(names: Vec<String>, colour: bool) -> Self {
        let width = names.iter().map(String::len).max().unwrap_or(0);
        Lines {
            names,
            width,
            colour,
        }
    }

    /// Prints one line of step `step`'s output (an index into `names`).
    pub(crate) fn print(&self, step: usize, text: &str) {
        let p = prefix(&self.names, self.width, self.colour, step);
        let mut out = std::io::stdout().lock();
        let _ = writeln!(out, "{p} {text}");
    }

    /// Prints one line of the output of the step named `step`.
    pub(crate) fn print_named(&self, step: &str, text: &str) {
        let index = self.names.iter().position(|n| n == step).unwrap_or(0);
        self.print(index, text);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_summary_has_a_row_per_step_with_its_end() {
        let mut c = Console::new(vec!["load".into(), "train".into()], false);
        c.report(&Report::AttemptStarted {
            step: 0,
            attempt: 1,
            launched: crate::driver::Launched::Process { log: "l".into() },
        });
        c.report(&Report::StepEnded {
            step: 0,
            end: Terminal::Failed,
            reason: Some("exit code 1".into()),
        });
        c.report(&Report::StepEnded {
            step: 1,
            end: Terminal::Skipped,
            reason: Some("upstream step load failed".into()),
        });
        let table = c.summary();
        let rows: Vec<&str> = table.lines().collect();
        assert!(rows[0].starts_with("STEP"), "{table}");
        assert!(
            rows[1].starts_with("load ") && rows[1].contains("failed"),
            "{table}"
        );
        assert!(rows[1].contains("exit code 1"), "{table}");
        assert!(rows[2].contains("skipped") && rows[2].contains("upstream step load failed"));
    }

    #[test]
    fn prefixes_are_padded_and_coloured_only_on_a_tty() {
        let names = vec!["a".to_string(), "bbb".to_string()];
        assert_eq!(prefix(&names, 3, false, 0), "a   |");
        assert!(prefix(&names, 3, true, 1).starts_with("\x1b["));
    }
}
