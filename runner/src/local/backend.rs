//! Runs step attempts in the rootless sandbox: each on a private overlay
//! over its image's shared, unpacked root, with the run directory bound at
//! [`RUN_DIR`], its output streamed to the terminal and saved per attempt.

use std::collections::HashMap;
use std::fs::File;
use std::io::{BufWriter, Write as _};
use std::path::{Path, PathBuf};
use std::sync::mpsc::{self, Sender};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;

use kiln_rootfs::sandbox::{
    BindMount, Killer, OutputLine, OutputRoute, RunSpec, Sandbox, Stream, User,
};

use crate::driver::{Backend, Input, Launched};
use crate::scheduler::Event;

/// Where the run directory appears inside every step.
pub const RUN_DIR: &str = "/kiln/run";

/// Everything needed to start one step, resolved from its image and
/// `kiln.yaml` before the run starts.
#[derive(Debug, Clone)]
pub struct StepLaunch {
    /// The image's unpacked root (shared, never written).
    pub rootfs: PathBuf,
    /// Program and arguments.
    pub argv: Vec<String>,
    /// Image env, then the step's, then kiln's run variables are added.
    pub env: Vec<(String, String)>,
    /// The image's user, resolved in its root.
    pub user: User,
    /// The image's working directory.
    pub workdir: String,
}

/// One step as the backend sees it: how to start it, or why it cannot.
#[derive(Debug, Clone)]
pub struct LocalStep {
    /// The step's name (log file names, prefixes).
    pub name: String,
    /// How to start it; `Err` holds why its image is not available (the
    /// step then fails with that reason, and its siblings still run).
    pub launch: Result<StepLaunch, String>,
}

/// Where a run keeps its files.
#[derive(Debug, Clone)]
pub struct RunPaths {
    /// Shared by the steps (bound at [`RUN_DIR`]).
    pub files: PathBuf,
    /// One log file per step attempt.
    pub logs: PathBuf,
    /// Per-attempt overlay directories, removed when the attempt ends.
    pub scratch: PathBuf,
}

/// Receives every output line of every attempt: the terminal printer.
pub trait LineSink: Send + Sync {
    /// One line of `step`'s output.
    fn line(&self, step: &str, stream: Stream, text: &str);
}

/// The console prints every line of a local run on the terminal.
impl LineSink for crate::console::Lines {
    fn line(&self, step: &str, _stream: Stream, text: &str) {
        self.print_named(step, text);
    }
}

/// The local backend.
pub struct LocalBackend {
    sandbox: Sandbox,
    run_id: String,
    steps: Vec<LocalStep>,
    paths: RunPaths,
    sink: Arc<dyn LineSink>,
    killers: Arc<Mutex<HashMap<(usize, u32), Killer>>>,
    threads: Vec<JoinHandle<()>>,
}

impl LocalBackend {
    /// A backend for one run.
    pub fn new(
        sandbox: Sandbox,
        run_id: &str,
        steps: Vec<LocalStep>,
        paths: RunPaths,
        sink: Arc<dyn LineSink>,
    ) -> Self {
        LocalBackend {
            sandbox,
            run_id: run_id.to_string(),
            steps,
            paths,
            sink,
            killers: Arc::default(),
            threads: Vec::new(),
        }
    }

    fn spec(&self, step: usize, attempt: u32, launch: &StepLaunch, scratch: &Path) -> RunSpec {
        let name = &self.steps[step].name;
        let mut spec = RunSpec::new(&launch.rootfs, launch.argv.clone());
        for (k, v) in &launch.env {
            spec = spec.env(k.clone(), v.clone());
        }
        for (k, v) in [
            ("KILN_RUN_ID", self.run_id.clone()),
            ("KILN_STEP", name.clone()),
            ("KILN_ATTEMPT", attempt.to_string()),
            ("KILN_RUN_DIR", RUN_DIR.to_string()),
        ] {
            spec = spec.env(k, v);
        }
        spec.user = launch.user;
        spec.workdir = launch.workdir.clone();
        spec.hostname = hostname(name);
        spec.mount(BindMount::read_write(&self.paths.files, RUN_DIR))
            .writable_overlay(scratch.join("upper"), scratch.join("work"))
    }

    fn start(
        &mut self,
        step: usize,
        attempt: u32,
        log: &Path,
        inputs: Sender<Input>,
    ) -> Result<(), String> {
        let launch = self.steps[step].launch.clone()?;
        let name = self.steps[step].name.clone();
        let scratch = self.paths.scratch.join(format!("{name}.{attempt}"));
        for dir in ["upper", "work"] {
            std::fs::create_dir_all(scratch.join(dir))
                .map_err(|e| format!("creating {}: {e}", scratch.display()))?;
        }
        let file = File::create(log).map_err(|e| format!("creating {}: {e}", log.display()))?;
        let spec = self.spec(step, attempt, &launch, &scratch);
        let (tx, rx) = mpsc::channel::<OutputLine>();
        let mut running = self
            .sandbox
            .spawn(&spec, OutputRoute::Lines(tx))
            .map_err(|e| e.to_string())?;
        if let Ok(killer) = running.killer()
            && let Ok(mut k) = self.killers.lock()
        {
            k.insert((step, attempt), killer);
        }
        let _ = inputs.send(Input::Step(Event::Launched { step, attempt }));
        let _ = inputs.send(Input::Step(Event::Running { step, attempt }));
        let sink = Arc::clone(&self.sink);
        let killers = Arc::clone(&self.killers);
        let forward = std::thread::spawn(move || {
            let mut out = BufWriter::new(file);
            for line in rx {
                sink.line(&name, line.stream, &line.line);
                let _ = writeln!(out, "{}", line.line);
                // Each line reaches the file promptly, for `kiln logs -f`.
                let _ = out.flush();
            }
        });
        self.threads.push(std::thread::spawn(move || {
            let code = running.wait();
            drop(running);
            let _ = forward.join();
            if let Ok(mut k) = killers.lock() {
                k.remove(&(step, attempt));
            }
            let _ = std::fs::remove_dir_all(&scratch);
            let event = match code {
                Ok(0) => Event::Succeeded { step, attempt },
                Ok(code) => Event::Failed {
                    step,
                    attempt,
                    exit_code: Some(code),
                    reason: exit_reason(code),
                },
                Err(e) => Event::Failed {
                    step,
                    attempt,
                    exit_code: None,
                    reason: format!("the sandbox failed: {e}"),
                },
            };
            let _ = inputs.send(Input::Step(event));
        }));
        Ok(())
    }
}

/// A step's exit code in words.
fn exit_reason(code: i32) -> String {
    match code {
        137 => "killed (SIGKILL, exit code 137)".into(),
        143 => "terminated (SIGTERM, exit code 143)".into(),
        130 => "interrupted (SIGINT, exit code 130)".into(),
        c => format!("exit code {c}"),
    }
}

/// A host name from a step name (host names allow `[A-Za-z0-9-]`).
fn hostname(step: &str) -> String {
    let h: String = step
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '-' })
        .take(63)
        .collect();
    let h = h.trim_matches('-').to_string();
    if h.is_empty() { "kiln-step".into() } else { h }
}

impl Backend for LocalBackend {
    fn launch(&mut self, step: usize, attempt: u32, inputs: Sender<Input>) -> Launched {
        let name = &self.steps[step].name;
        let log = self.paths.logs.join(format!("{name}.{attempt}.log"));
        if let Err(reason) = self.start(step, attempt, &log, inputs.clone()) {
            let _ = std::fs::write(&log, format!("kiln: {reason}\n"));
            self.sink.line(
                &self.steps[step].name,
                Stream::Stderr,
                &format!("kiln: {reason}"),
            );
            let _ = inputs.send(Input::Step(Event::Failed {
                step,
                attempt,
                exit_code: None,
                reason,
            }));
        }
        Launched::Process { log }
    }

    fn cancel(&mut self, step: usize, attempt: u32) {
        if let Ok(k) = self.killers.lock()
            && let Some(killer) = k.get(&(step, attempt))
        {
            let _ = killer.kill();
        }
    }

    fn wait_all(&mut self) {
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
    }
}

impl Drop for LocalBackend {
    /// Leaves no process behind, whatever ended the run.
    fn drop(&mut self) {
        if let Ok(k) = self.killers.lock() {
            for killer in k.values() {
                let _ = killer.kill();
            }
        }
        self.wait_all();
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn host_names_from_step_names() {
        assert_eq!(super::hostname("train_model"), "train-model");
        assert_eq!(super::hostname("__"), "kiln-step");
        assert_eq!(super::hostname(&"a".repeat(80)).len(), 63);
    }

    #[test]
    fn exit_codes_in_words() {
        assert_eq!(super::exit_reason(1), "exit code 1");
        assert!(super::exit_reason(137).contains("SIGKILL"));
    }
}
