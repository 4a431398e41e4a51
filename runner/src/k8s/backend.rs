//! The driver's [`Backend`] on Kubernetes: one pod per attempt, their fate
//! learnt from one watch on the run's pods (kube-runtime's watcher, which
//! resumes from the last resourceVersion after a dropped connection and
//! relists when that is too old), never from polling.
//!
//! The driver's loop is synchronous; this backend hands every API call to
//! an async runtime and reports back through the driver's channel. Each
//! attempt's end is reported exactly once, whichever of the watch, a
//! cancellation or a failed create sees it first.

use std::collections::HashMap;
use std::sync::mpsc::Sender;
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use futures_util::{AsyncBufReadExt as _, StreamExt as _};
use k8s_openapi::api::core::v1::Pod;
use kiln_pipeline::KubernetesSettings;
use kube::api::{Api, DeleteParams, LogParams, PostParams};
use kube::runtime::watcher;

use super::names::label_value;
use super::observe::{PodState, attempt_of, pending_reason, state_of};
use super::pod::{CONTAINER, LABEL_RUN, Owner, StepPod, step_pod};
use crate::driver::{Backend, Input, Launched};
use crate::scheduler::Event;

/// Where step output lines go (the orchestrator's log, with prefixes).
pub trait StepLines: Send + Sync {
    /// One line of step `step`'s output.
    fn line(&self, step: usize, text: &str);
}

/// The orchestrator's copy of step pod logs: the same prefixes as a local
/// run's.
impl StepLines for crate::console::Lines {
    fn line(&self, step: usize, text: &str) {
        self.print(step, text);
    }
}

/// What one step's pods are made from.
#[derive(Debug, Clone)]
pub struct KubeStep {
    /// Step name.
    pub name: String,
    /// Image, pinned by digest.
    pub image: String,
    /// Program and arguments.
    pub command: Vec<String>,
    /// kiln's variables and the step's environment.
    pub env: Vec<(String, String)>,
    /// The step's effective Kubernetes settings.
    pub settings: KubernetesSettings,
    /// Its upstream steps (for the orchestration overhead figures).
    pub upstream: Vec<usize>,
}

/// The run the backend works for.
#[derive(Debug, Clone)]
pub struct KubeRun {
    /// Namespace.
    pub namespace: String,
    /// Pipeline name.
    pub pipeline: String,
    /// Run id.
    pub run: String,
    /// The orchestrator Job, owner of the step pods.
    pub owner: Option<Owner>,
    /// Stream each step's log into the orchestrator's.
    pub stream_logs: bool,
}

/// An attempt found in the cluster when the orchestrator (re)started.
#[derive(Debug, Clone)]
pub struct Adopted {
    /// Step index.
    pub step: usize,
    /// Attempt number.
    pub attempt: u32,
    /// Its pod.
    pub pod: String,
    /// Its state then.
    pub state: PodState,
}

/// Runs step attempts as pods.
pub struct KubeBackend {
    rt: tokio::runtime::Handle,
    shared: Arc<Shared>,
    watch: Option<tokio::task::JoinHandle<()>>,
}

struct Shared {
    pods: Api<Pod>,
    run: KubeRun,
    steps: Vec<KubeStep>,
    inputs: Sender<Input>,
    lines: Arc<dyn StepLines>,
    state: Mutex<State>,
    idle: Condvar,
}

#[derive(Default)]
struct State {
    attempts: HashMap<(usize, u32), Attempt>,
    by_pod: HashMap<String, (usize, u32)>,
    /// Attempts started and not yet reported ended.
    live: usize,
    /// When each step's success was seen (for the overhead figures).
    succeeded_at: HashMap<usize, Instant>,
    /// Upstream success seen to downstream pod created, per launch.
    overheads: Vec<Duration>,
    /// Log followers still writing.
    logs: Vec<tokio::task::JoinHandle<()>>,
}

#[derive(Default)]
struct Attempt {
    pod: String,
    running: bool,
    ended: bool,
    cancelled: bool,
    log_started: bool,
    /// The watch has seen the pod (a later disappearance is a deletion).
    seen: bool,
}

impl KubeBackend {
    /// A backend for `run`, watching its pods from now on. `adopted` are
    /// the attempts the cluster already holds (an orchestrator restart):
    /// ended ones are not reported again, live ones are followed.
    pub fn new(
        rt: tokio::runtime::Handle,
        client: kube::Client,
        run: KubeRun,
        steps: Vec<KubeStep>,
        adopted: &[Adopted],
        inputs: Sender<Input>,
        lines: Arc<dyn StepLines>,
    ) -> KubeBackend {
        let pods = Api::namespaced(client, &run.namespace);
        let mut state = State::default();
        for a in adopted {
            let ended = matches!(
                a.state,
                PodState::Succeeded | PodState::Failed { .. } | PodState::Stuck { .. }
            );
            if !ended {
                state.live += 1;
            }
            state.by_pod.insert(a.pod.clone(), (a.step, a.attempt));
            state.attempts.insert(
                (a.step, a.attempt),
                Attempt {
                    pod: a.pod.clone(),
                    running: a.state == PodState::Running,
                    ended,
                    // Its earlier lines were streamed by the orchestrator
                    // before; follow from now on only.
                    log_started: false,
                    seen: true,
                    cancelled: false,
                },
            );
        }
        let shared = Arc::new(Shared {
            pods,
            run,
            steps,
            inputs,
            lines,
            state: Mutex::new(state),
            idle: Condvar::new(),
        });
        // An adopted pod still Pending gets a whole startup timeout anew
        // (its start time before the restart is not known here).
        for a in adopted.iter().filter(|a| a.state == PodState::Pending) {
            if let Some(after) = startup_timeout(&shared.steps[a.step]) {
                rt.spawn(startup_deadline(shared.clone(), a.step, a.attempt, after));
            }
        }
        let watch = rt.spawn(watch_pods(shared.clone()));
        KubeBackend {
            rt,
            shared,
            watch: Some(watch),
        }
    }

    /// Upstream success to downstream pod creation, one figure per launch
    /// of a step with upstream steps.
    pub fn overheads(&self) -> Vec<Duration> {
        self.shared.lock().overheads.clone()
    }

    /// Waits (up to `limit`) for the log followers to write their last
    /// lines, so a step's output is not cut short when the run ends.
    pub fn flush_logs(&self, limit: Duration) {
        let handles = std::mem::take(&mut self.shared.lock().logs);
        self.rt.block_on(async {
            let _ = tokio::time::timeout(limit, futures_util::future::join_all(handles)).await;
        });
    }
}

impl Drop for KubeBackend {
    fn drop(&mut self) {
        if let Some(w) = self.watch.take() {
            w.abort();
        }
    }
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, State> {
        self.state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn send(&self, event: Event) {
        let _ = self.inputs.send(Input::Step(event));
    }

    /// A launched attempt, live until its end is reported; `pod` is empty
    /// when no pod could be made for it.
    fn register(&self, step: usize, attempt: u32, pod: String) {
        let mut s = self.lock();
        s.live += 1;
        if !pod.is_empty() {
            s.by_pod.insert(pod.clone(), (step, attempt));
        }
        s.attempts.insert(
            (step, attempt),
            Attempt {
                pod,
                ..Attempt::default()
            },
        );
    }

    /// Reports the end of an attempt once; false when it was already.
    fn end(&self, event: Event) -> bool {
        let (step, attempt) = match &event {
            Event::Succeeded { step, attempt }
            | Event::Failed { step, attempt, .. }
            | Event::Unrecoverable { step, attempt, .. } => (*step, *attempt),
            _ => return false,
        };
        {
            let mut s = self.lock();
            let Some(a) = s.attempts.get_mut(&(step, attempt)) else {
                return false;
            };
            if a.ended {
                return false;
            }
            a.ended = true;
            s.live = s.live.saturating_sub(1);
            if matches!(event, Event::Succeeded { .. }) {
                s.succeeded_at.insert(step, Instant::now());
            }
        }
        self.send(event);
        self.idle.notify_all();
        true
    }

    /// The pod manifest of an attempt.
    fn manifest(&self, step: usize, attempt: u32) -> Result<Pod, String> {
        let s = &self.steps[step];
        step_pod(&StepPod {
            namespace: &self.run.namespace,
            pipeline: &self.run.pipeline,
            run: &self.run.run,
            step: &s.name,
            attempt,
            image: &s.image,
            command: s.command.clone(),
            env: s
                .env
                .iter()
                .cloned()
                .chain([("KILN_ATTEMPT".to_string(), attempt.to_string())])
                .collect(),
            settings: &s.settings,
            owner: self.run.owner.clone(),
        })
        .map_err(|e| format!("step {}: {e}", s.name))
    }
}

impl Backend for KubeBackend {
    fn launch(&mut self, step: usize, attempt: u32, _inputs: Sender<Input>) -> Launched {
        let shared = self.shared.clone();
        let pod = match shared.manifest(step, attempt) {
            Ok(pod) => pod,
            Err(reason) => {
                shared.register(step, attempt, String::new());
                shared.end(Event::Unrecoverable {
                    step,
                    attempt,
                    reason,
                });
                return Launched::Nothing;
            }
        };
        let name = pod.metadata.name.clone().unwrap_or_default();
        shared.register(step, attempt, name.clone());
        self.rt.spawn(create(shared.clone(), step, attempt, pod));
        if let Some(after) = startup_timeout(&shared.steps[step]) {
            self.rt
                .spawn(startup_deadline(shared, step, attempt, after));
        }
        Launched::Pod { name }
    }

    fn cancel(&mut self, step: usize, attempt: u32) {
        let shared = self.shared.clone();
        let pod = {
            let mut s = shared.lock();
            match s.attempts.get_mut(&(step, attempt)) {
                Some(a) if !a.ended => {
                    a.cancelled = true;
                    a.pod.clone()
                }
                _ => return,
            }
        };
        self.rt.spawn(async move {
            match shared.pods.delete(&pod, &DeleteParams::default()).await {
                // Gone already: nobody else will report it.
                Err(kube::Error::Api(e)) if e.code == 404 => {
                    cancelled(&shared, step, attempt);
                }
                Err(e) => {
                    eprintln!("kiln: deleting pod {pod}: {e}");
                    cancelled(&shared, step, attempt);
                }
                // The watch reports the end when the pod stops or goes.
                Ok(_) => {}
            }
        });
    }

    fn wait_all(&mut self) {
        let mut s = self.shared.lock();
        while s.live > 0 {
            s = self
                .shared
                .idle
                .wait(s)
                .unwrap_or_else(std::sync::PoisonError::into_inner);
        }
    }
}

fn cancelled(shared: &Shared, step: usize, attempt: u32) {
    shared.end(Event::Failed {
        step,
        attempt,
        exit_code: None,
        reason: "cancelled".into(),
    });
}

/// Creates an attempt's pod, retrying what a restarting API server or a
/// dropped connection makes fail; a pod that exists already (a retried
/// create that had landed) is the one.
async fn create(shared: Arc<Shared>, step: usize, attempt: u32, pod: Pod) {
    let mut delay = Duration::from_millis(200);
    let started = Instant::now();
    loop {
        match shared.pods.create(&PostParams::default(), &pod).await {
            Ok(_) => break,
            Err(kube::Error::Api(e)) if e.code == 409 => break,
            Err(kube::Error::Api(e)) if e.code < 500 && e.code != 429 => {
                let reason = format!("creating the pod: {} ({})", e.message, e.reason);
                shared.end(Event::Unrecoverable {
                    step,
                    attempt,
                    reason,
                });
                return;
            }
            Err(e) if started.elapsed() > Duration::from_secs(120) => {
                let reason = format!("creating the pod: {e}");
                shared.end(Event::Failed {
                    step,
                    attempt,
                    exit_code: None,
                    reason,
                });
                return;
            }
            Err(e) => {
                eprintln!(
                    "kiln: creating pod for step {}: {e}; retrying",
                    shared.steps[step].name
                );
                tokio::time::sleep(delay).await;
                delay = (delay * 2).min(Duration::from_secs(5));
            }
        }
    }
    {
        let mut s = shared.lock();
        let upstream_done = shared.steps[step]
            .upstream
            .iter()
            .filter_map(|u| s.succeeded_at.get(u))
            .max()
            .copied();
        if let Some(t) = upstream_done {
            s.overheads.push(t.elapsed());
        }
    }
    shared.send(Event::Launched { step, attempt });
}

/// A step's `pod_startup_timeout` (default 600 s); none when zero.
fn startup_timeout(step: &KubeStep) -> Option<Duration> {
    let secs = step
        .settings
        .pod_startup_timeout
        .as_ref()
        .map_or(600, |t| t.value);
    u64::try_from(secs)
        .ok()
        .filter(|s| *s > 0)
        .map(Duration::from_secs)
}

/// `pod_startup_timeout`: an attempt that has not started running by then
/// is reported with its Pending reason; the scheduler cancels it.
async fn startup_deadline(shared: Arc<Shared>, step: usize, attempt: u32, after: Duration) {
    tokio::time::sleep(after).await;
    let pod = {
        let s = shared.lock();
        match s.attempts.get(&(step, attempt)) {
            Some(a) if !a.running && !a.ended => a.pod.clone(),
            _ => return,
        }
    };
    let why = match shared.pods.get_opt(&pod).await {
        Ok(Some(p)) => pending_reason(&p),
        Ok(None) => "the pod does not exist".into(),
        Err(e) => format!("Pending (its status could not be read: {e})"),
    };
    let reason = format!(
        "still Pending after pod_startup_timeout ({}s): {why}",
        after.as_secs()
    );
    shared.send(Event::PendingTooLong {
        step,
        attempt,
        reason,
    });
}

/// The one watch on the run's pods, for the run's whole life.
async fn watch_pods(shared: Arc<Shared>) {
    let config =
        watcher::Config::default().labels(&format!("{LABEL_RUN}={}", label_value(&shared.run.run)));
    let mut stream = watcher(shared.pods.clone(), config).boxed();
    while let Some(event) = stream.next().await {
        match event {
            Ok(watcher::Event::Apply(pod) | watcher::Event::InitApply(pod)) => {
                seen(&shared, &pod);
            }
            Ok(watcher::Event::Delete(pod)) => gone(&shared, &pod),
            Ok(watcher::Event::Init | watcher::Event::InitDone) => {}
            Err(e) => {
                eprintln!("kiln: watching the run's pods: {e}; resuming");
                tokio::time::sleep(Duration::from_millis(500)).await;
            }
        }
    }
}

/// The attempt of a pod event, if it is one of this run's.
fn attempt_key(shared: &Shared, pod: &Pod) -> Option<(usize, u32)> {
    let (run, step, attempt) = attempt_of(pod)?;
    if run != shared.run.run {
        return None;
    }
    let index = shared.steps.iter().position(|s| s.name == step)?;
    Some((index, attempt))
}

fn seen(shared: &Arc<Shared>, pod: &Pod) {
    let Some((step, attempt)) = attempt_key(shared, pod) else {
        return;
    };
    let name = pod.metadata.name.clone().unwrap_or_default();
    let state = state_of(pod);
    let (first_run, follow, cancelled) = {
        let mut s = shared.lock();
        let Some(a) = s.attempts.get_mut(&(step, attempt)) else {
            return;
        };
        a.seen = true;
        if a.ended {
            return;
        }
        let running = matches!(state, PodState::Running);
        let first_run = running && !a.running;
        if running {
            a.running = true;
        }
        let follow = shared.run.stream_logs
            && !a.log_started
            && matches!(
                state,
                PodState::Running | PodState::Succeeded | PodState::Failed { .. }
            );
        if follow {
            a.log_started = true;
        }
        (first_run, follow, a.cancelled)
    };
    if follow {
        let handle = tokio::spawn(follow_log(shared.clone(), step, name.clone()));
        shared.lock().logs.push(handle);
    }
    match state {
        PodState::Pending => {}
        PodState::Running => {
            if first_run {
                shared.send(Event::Running { step, attempt });
            }
        }
        PodState::Succeeded => {
            shared.end(Event::Succeeded { step, attempt });
        }
        PodState::Failed { exit_code, reason } => {
            let reason = if cancelled {
                "cancelled".into()
            } else {
                reason
            };
            shared.end(Event::Failed {
                step,
                attempt,
                exit_code,
                reason,
            });
        }
        PodState::Stuck { reason } => {
            if shared.end(Event::Unrecoverable {
                step,
                attempt,
                reason,
            }) {
                let pods = shared.pods.clone();
                tokio::spawn(async move {
                    let _ = pods.delete(&name, &DeleteParams::default()).await;
                });
            }
        }
    }
}

fn gone(shared: &Shared, pod: &Pod) {
    let Some((step, attempt)) = attempt_key(shared, pod) else {
        return;
    };
    // A pod deleted after it ended says nothing new; one deleted before
    // ended with the deletion.
    let final_state = state_of(pod);
    let event = match final_state {
        PodState::Succeeded => Event::Succeeded { step, attempt },
        PodState::Failed { exit_code, reason } => Event::Failed {
            step,
            attempt,
            exit_code,
            reason,
        },
        _ => {
            let cancelled = shared
                .lock()
                .attempts
                .get(&(step, attempt))
                .is_some_and(|a| a.cancelled);
            Event::Failed {
                step,
                attempt,
                exit_code: None,
                reason: if cancelled {
                    "cancelled".into()
                } else {
                    "the pod was deleted".into()
                },
            }
        }
    };
    shared.end(event);
}

/// Copies a step pod's log into the orchestrator's, line by line, as it
/// is written.
async fn follow_log(shared: Arc<Shared>, step: usize, pod: String) {
    let params = LogParams {
        container: Some(CONTAINER.into()),
        follow: true,
        ..LogParams::default()
    };
    let mut tries = 0;
    loop {
        match shared.pods.log_stream(&pod, &params).await {
            Ok(stream) => {
                let mut lines = stream.lines();
                while let Some(line) = lines.next().await {
                    match line {
                        Ok(text) => shared.lines.line(step, &text),
                        Err(_) => break,
                    }
                }
                return;
            }
            // The container may not be there to read yet.
            Err(_) if tries < 10 => {
                tries += 1;
                tokio::time::sleep(Duration::from_millis(300)).await;
            }
            Err(e) => {
                shared
                    .lines
                    .line(step, &format!("(kiln: the log cannot be read: {e})"));
                return;
            }
        }
    }
}

/// The set of step names, for looking pods up (used by resumption).
pub fn step_index(steps: &[KubeStep]) -> HashMap<&str, usize> {
    steps
        .iter()
        .enumerate()
        .map(|(i, s)| (s.name.as_str(), i))
        .collect()
}
