//! `kiln orchestrate`: the run's conductor, inside the cluster. It reads
//! the plan the client left in its environment, finds its own Job (the
//! owner of every step pod, and the run's record), rebuilds the run's
//! state from the step pods already there (a restarted orchestrator pod
//! does not re-run what succeeded), and walks the DAG with the same
//! scheduler and driver as a local run, one pod per attempt.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::Pod;
use kiln_pipeline::Pipeline;
use kube::api::{Api, ListParams, Patch, PatchParams};
use kube::runtime::watcher;
use serde_json::json;
use tokio::sync::watch;

use super::backend::{Adopted, KubeBackend, KubeRun, KubeStep, StepLines};
use super::names::label_value;
use super::observe::{PodState, attempt_of, state_of};
use super::plan::{PLAN_ENV, POD_NAME_ENV, RunPlan, RunPlanError, run_id_from_uid};
use super::pod::{ANNOTATION_RUN, LABEL_RUN, Owner};
use super::status::{
    ANNOTATION_FINISHED, ANNOTATION_STARTED, ANNOTATION_STATUS, ANNOTATION_STEPS, ANNOTATION_STOP,
    StepSummary, Steps, is_final,
};
use crate::driver::{self, AttemptOutcome, Input, Observer, Report};
use crate::scheduler::{
    Observed, ObservedState, RunConfig, RunOutcome, Scheduler, SchedulerError, Terminal,
};
use crate::specs::Retries;

/// Where a run directory would be: a volume the user mounts there is shared
/// by the steps (the same path as in a local run).
pub const RUN_DIR: &str = "/kiln/run";

/// Why the orchestrator cannot conduct the run.
#[derive(Debug, thiserror::Error)]
pub enum OrchestrateError {
    /// No plan, or a broken one.
    #[error(transparent)]
    Plan(#[from] RunPlanError),
    /// The pipeline in the plan does not parse (a kiln version mismatch).
    #[error("the pipeline in the run plan: {0}")]
    Pipeline(#[from] kiln_pipeline::PipelineError),
    /// The plan has no image for a step.
    #[error("the run plan has no image for step {0:?}")]
    NoImage(String),
    /// The API server refused or could not be reached.
    #[error("{what}: {source}")]
    Api {
        /// What kiln was doing.
        what: String,
        /// The API's answer.
        #[source]
        source: Box<kube::Error>,
    },
    /// The DAG or the observed state is not one the scheduler accepts.
    #[error(transparent)]
    Scheduler(#[from] SchedulerError),
    /// The async runtime could not start.
    #[error("starting the async runtime: {0}")]
    Runtime(#[source] std::io::Error),
}

fn api(what: impl Into<String>) -> impl FnOnce(kube::Error) -> OrchestrateError {
    let what = what.into();
    move |source| OrchestrateError::Api {
        what,
        source: Box::new(source),
    }
}

/// What the orchestrator measured of itself, for `scripts/bench`.
#[derive(Debug, Clone, Default)]
pub struct Figures {
    /// Upstream Succeeded seen to downstream pod created, per launch.
    pub overheads: Vec<Duration>,
}

/// Conducts the run described by `$KILN_RUN_PLAN` to its end.
pub fn orchestrate() -> Result<(RunOutcome, Figures), OrchestrateError> {
    let (c, job) = Conductor::start()?;
    let annotations = job.and_then(|j| j.metadata.annotations).unwrap_or_default();
    if let Some(status) = annotations.get(ANNOTATION_STATUS)
        && is_final(status)
    {
        eprintln!(
            "kiln: run {} already ended ({status}); nothing to do",
            c.run
        );
        return Ok((outcome_of(status), Figures::default()));
    }
    let writer = c.writer();
    if let Some(w) = &writer {
        c.rt.block_on(w.patch(running_patch(&c.run, &annotations)));
    }

    let pipeline = Pipeline::parse(&c.plan.pipeline, &c.plan.file)?;
    let names = crate::specs::step_names(&pipeline);
    let steps = kube_steps(&pipeline, &c.plan, &c.run, &names)?;
    // A step fails as a pod here, so the `pod_failure_*` settings count.
    let specs = crate::specs::step_specs(&pipeline, Retries::Effective);
    // What the cluster holds of this run already.
    let adopted = c.adopted(&names)?;
    let mut scheduler = Scheduler::resume(specs, run_config(&pipeline), &observed(&adopted))?;
    c.say_start(&pipeline, &names, &adopted);

    let (sender, inputs) = driver::channel();
    let mut backend = c.backend(&pipeline, &names, steps, &adopted, sender.clone());
    let stop_watch = c.owner.as_ref().map(|o| {
        c.rt.spawn(watch_stop(c.jobs.clone(), o.name.clone(), sender.clone()))
    });
    let mut console = crate::console::Console::new(names.clone(), false);
    let mut record = JobRecord::new(names.clone(), writer.clone(), &c.rt);
    // Steps that ended before a restart keep their record.
    record.restore(&annotations);
    let mut observers = (&mut console, &mut record);
    let outcome = driver::drive(
        &mut scheduler,
        &mut backend,
        &mut observers,
        &sender,
        &inputs,
    )?;
    backend.flush_logs(Duration::from_secs(5));
    if let Some(w) = stop_watch {
        w.abort();
    }
    eprintln!();
    eprint!("{}", console.summary());
    let figures = Figures {
        overheads: backend.overheads(),
    };
    drop(backend);
    record.finish(&c.rt, writer.as_ref(), outcome);
    Ok((outcome, figures))
}

/// The run being conducted and the cluster it is conducted in: what every
/// stage of [`orchestrate`] reads.
struct Conductor {
    rt: tokio::runtime::Runtime,
    client: kube::Client,
    plan: RunPlan,
    /// The run's id.
    run: String,
    /// The orchestrator's Job, when it runs in one.
    owner: Option<Owner>,
    jobs: Api<Job>,
}

impl Conductor {
    /// Reads the plan, connects to the API server and finds our Job: the
    /// run's record and the owner of its pods. The Job comes back beside
    /// the conductor, as its annotations hold the run's record so far.
    fn start() -> Result<(Conductor, Option<Job>), OrchestrateError> {
        let plan = RunPlan::from_env_value(std::env::var(PLAN_ENV).ok().as_deref())?;
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .map_err(OrchestrateError::Runtime)?;
        let client = rt
            .block_on(kube::Client::try_default())
            .map_err(api("connecting to the API server"))?;
        let jobs: Api<Job> = Api::namespaced(client.clone(), &plan.namespace);
        let (job, owner) = rt.block_on(own_job(&client, &plan))?;
        let run = match (&plan.run_id, &owner) {
            (Some(id), _) => id.clone(),
            (None, Some(o)) => run_id_from_uid(&o.uid),
            (None, None) => run_id_from_uid(&std::process::id().to_string()),
        };
        let conductor = Conductor {
            rt,
            client,
            plan,
            run,
            owner,
            jobs,
        };
        Ok((conductor, job))
    }

    /// Where the run's state is written: our Job, when there is one.
    fn writer(&self) -> Option<StatusWriter> {
        self.owner.as_ref().map(|o| StatusWriter {
            jobs: self.jobs.clone(),
            name: o.name.clone(),
        })
    }

    /// The step pods of this run already in the cluster (a restarted
    /// orchestrator finds those of the one before).
    fn adopted(&self, names: &[String]) -> Result<Vec<Adopted>, OrchestrateError> {
        let pods: Api<Pod> = Api::namespaced(self.client.clone(), &self.plan.namespace);
        let selector = format!("{LABEL_RUN}={}", label_value(&self.run));
        let existing = self
            .rt
            .block_on(pods.list(&ListParams::default().labels(&selector)))
            .map_err(api("listing the run's pods"))?;
        Ok(adopt(&existing.items, &self.run, names))
    }

    /// The run's first line: what is conducted where, and what a restart
    /// found done.
    fn say_start(&self, pipeline: &Pipeline, names: &[String], adopted: &[Adopted]) {
        let reused = adopted
            .iter()
            .filter(|a| a.state == PodState::Succeeded)
            .count();
        eprintln!(
            "kiln: orchestrating run {} of {} ({} steps) in namespace {}{}",
            self.run,
            pipeline.name(),
            names.len(),
            self.plan.namespace,
            if adopted.is_empty() {
                String::new()
            } else {
                format!(
                    "; resumed from {} pods found: {reused} of {} steps already succeeded",
                    adopted.len(),
                    names.len()
                )
            }
        );
    }

    /// The backend that runs each attempt as a pod of the run, taking over
    /// the `adopted` pods; step lines go to the orchestrator's own log.
    fn backend(
        &self,
        pipeline: &Pipeline,
        names: &[String],
        steps: Vec<KubeStep>,
        adopted: &[Adopted],
        sender: std::sync::mpsc::Sender<Input>,
    ) -> KubeBackend {
        let settings = pipeline.kubernetes();
        let lines: Arc<dyn StepLines> = Arc::new(crate::console::Lines::new(names.to_vec(), false));
        KubeBackend::new(
            self.rt.handle().clone(),
            self.client.clone(),
            KubeRun {
                namespace: self.plan.namespace.clone(),
                pipeline: pipeline.name().to_string(),
                run: self.run.clone(),
                owner: self.owner.clone(),
                stream_logs: settings.stream_step_logs.unwrap_or(true),
            },
            steps,
            adopted,
            sender,
            lines,
        )
    }
}

/// The patch that marks the Job's run as running: its labels and id, and
/// when it started unless a run before a restart said so already.
fn running_patch(run: &str, annotations: &BTreeMap<String, String>) -> serde_json::Value {
    let mut labels = BTreeMap::new();
    labels.insert(LABEL_RUN.to_string(), label_value(run));
    let mut a = BTreeMap::new();
    a.insert(ANNOTATION_RUN.to_string(), run.to_string());
    a.insert(ANNOTATION_STATUS.to_string(), "running".to_string());
    if !annotations.contains_key(ANNOTATION_STARTED) {
        a.insert(
            ANNOTATION_STARTED.to_string(),
            kiln_pipeline::time::now_rfc3339(),
        );
    }
    json!({"metadata": {"labels": labels, "annotations": a}})
}

/// The `pods` that are attempts of a step of `run`, with their state.
fn adopt(pods: &[Pod], run: &str, names: &[String]) -> Vec<Adopted> {
    pods.iter()
        .filter_map(|p| {
            let (r, step, attempt) = attempt_of(p)?;
            let step = names.iter().position(|n| *n == step)?;
            (r == run).then(|| Adopted {
                step,
                attempt,
                pod: p.metadata.name.clone().unwrap_or_default(),
                state: state_of(p),
            })
        })
        .collect()
}

/// The adopted pods as the scheduler resumes from them: a stuck pod is a
/// failed attempt.
fn observed(adopted: &[Adopted]) -> Vec<Observed> {
    adopted
        .iter()
        .map(|a| Observed {
            step: a.step,
            attempt: a.attempt,
            state: match &a.state {
                PodState::Pending => ObservedState::Pending,
                PodState::Running => ObservedState::Running,
                PodState::Succeeded => ObservedState::Succeeded,
                PodState::Failed { exit_code, reason } => ObservedState::Failed {
                    exit_code: *exit_code,
                    reason: reason.clone(),
                    at: None,
                },
                PodState::Stuck { reason } => ObservedState::Failed {
                    exit_code: None,
                    reason: reason.clone(),
                    at: None,
                },
            },
        })
        .collect()
}

/// The orchestrator's own pod's Job (`None` when run by hand outside one).
async fn own_job(
    client: &kube::Client,
    plan: &RunPlan,
) -> Result<(Option<Job>, Option<Owner>), OrchestrateError> {
    let Some(name) = std::env::var(POD_NAME_ENV)
        .ok()
        .or_else(|| std::env::var("HOSTNAME").ok())
    else {
        return Ok((None, None));
    };
    let pods: Api<Pod> = Api::namespaced(client.clone(), &plan.namespace);
    let Some(pod) = pods
        .get_opt(&name)
        .await
        .map_err(api(format!("reading this pod ({name})")))?
    else {
        return Ok((None, None));
    };
    let Some(owner) = pod
        .metadata
        .owner_references
        .iter()
        .flatten()
        .find(|o| o.kind == "Job")
    else {
        return Ok((None, None));
    };
    let jobs: Api<Job> = Api::namespaced(client.clone(), &plan.namespace);
    let job = jobs
        .get(&owner.name)
        .await
        .map_err(api(format!("reading this pod's Job {}", owner.name)))?;
    let owner = Owner {
        api_version: "batch/v1".into(),
        kind: "Job".into(),
        name: owner.name.clone(),
        uid: owner.uid.clone(),
    };
    Ok((Some(job), Some(owner)))
}

/// Each step's pod ingredients: its pinned image, command, environment
/// and effective settings.
fn kube_steps(
    pipeline: &Pipeline,
    plan: &RunPlan,
    run: &str,
    names: &[String],
) -> Result<Vec<KubeStep>, OrchestrateError> {
    pipeline
        .steps()
        .iter()
        .enumerate()
        .map(|(i, s)| {
            let name = s.name.value.clone();
            let image = plan
                .images
                .get(&name)
                .cloned()
                .ok_or_else(|| OrchestrateError::NoImage(name.clone()))?;
            let mut command = s.command.value.argv();
            command.extend(s.args.iter().cloned());
            let mut env = vec![
                ("KILN_RUN_ID".to_string(), run.to_string()),
                ("KILN_PIPELINE".to_string(), pipeline.name().to_string()),
                ("KILN_STEP".to_string(), name.clone()),
                ("KILN_RUN_DIR".to_string(), RUN_DIR.to_string()),
            ];
            env.extend(s.environment.iter().map(|(k, v)| (k.clone(), v.clone())));
            let mut settings = pipeline.effective(&name)?.kubernetes;
            super::pull_secret::attach(&mut settings, &plan.pull_secrets);
            Ok(KubeStep {
                settings,
                upstream: crate::specs::upstream(pipeline, names, i),
                name,
                image,
                command,
                env,
            })
        })
        .collect()
}

/// The run-wide limits from the Kubernetes settings.
fn run_config(pipeline: &Pipeline) -> RunConfig {
    let s = pipeline.kubernetes();
    RunConfig {
        max_parallelism: s
            .max_parallelism
            .as_ref()
            .and_then(|p| usize::try_from(p.value).ok())
            .and_then(std::num::NonZeroUsize::new),
        startup_period: s
            .parallel_step_startup_waiting_period
            .as_ref()
            .map_or(Duration::ZERO, |p| {
                kiln_pipeline::time::duration_from_secs(p.value)
            }),
        fail_fast: pipeline.model().fail_fast,
        timeout: None,
    }
}

/// `kiln runs stop` writes its wish on the Job; the orchestrator obeys.
async fn watch_stop(jobs: Api<Job>, name: String, sender: std::sync::mpsc::Sender<Input>) {
    use futures_util::StreamExt as _;
    let config = watcher::Config::default().fields(&format!("metadata.name={name}"));
    let mut stream = watcher(jobs, config).boxed();
    let mut asked: Option<bool> = None;
    while let Some(event) = stream.next().await {
        let job = match event {
            Ok(watcher::Event::Apply(j) | watcher::Event::InitApply(j)) => j,
            Ok(_) => continue,
            Err(_) => {
                tokio::time::sleep(Duration::from_millis(500)).await;
                continue;
            }
        };
        let wish = job
            .metadata
            .annotations
            .as_ref()
            .and_then(|a| a.get(ANNOTATION_STOP))
            .map(|v| v == "force");
        if let Some(force) = wish
            && asked != Some(true)
            && asked != Some(force)
        {
            asked = Some(force);
            if sender.send(Input::Stop { force }).is_err() {
                return;
            }
        }
    }
}

/// Writes the run's state onto the Job.
#[derive(Clone)]
struct StatusWriter {
    jobs: Api<Job>,
    name: String,
}

impl StatusWriter {
    /// A merge patch, retried through a restarting API server; a record
    /// that cannot be written is said, not fatal.
    async fn patch(&self, patch: serde_json::Value) {
        let mut delay = Duration::from_millis(200);
        for _ in 0..30 {
            match self
                .jobs
                .patch(&self.name, &PatchParams::default(), &Patch::Merge(&patch))
                .await
            {
                Ok(_) => return,
                Err(kube::Error::Api(e)) if e.code < 500 && e.code != 429 => {
                    eprintln!(
                        "kiln: recording the run on Job {}: {}",
                        self.name, e.message
                    );
                    return;
                }
                Err(_) => {
                    tokio::time::sleep(delay).await;
                    delay = (delay * 2).min(Duration::from_secs(5));
                }
            }
        }
        eprintln!("kiln: recording the run on Job {}: gave up", self.name);
    }
}

/// Keeps the steps' states on the Job as they end.
struct JobRecord {
    names: Vec<String>,
    steps: Steps,
    /// The latest record for [`write_steps`], and that task.
    updates: Option<(watch::Sender<Option<String>>, tokio::task::JoinHandle<()>)>,
}

impl JobRecord {
    /// Every step pending; with a writer, the task that writes the record
    /// onto the Job as steps end.
    fn new(
        names: Vec<String>,
        writer: Option<StatusWriter>,
        rt: &tokio::runtime::Runtime,
    ) -> JobRecord {
        let steps = names
            .iter()
            .map(|n| {
                (
                    n.clone(),
                    StepSummary {
                        status: "pending".into(),
                        ..StepSummary::default()
                    },
                )
            })
            .collect();
        JobRecord {
            names,
            steps,
            updates: writer.map(|w| {
                let (tx, rx) = watch::channel(None);
                (tx, rt.spawn(write_steps(w, rx)))
            }),
        }
    }

    /// Takes back the steps' record from the Job's annotations, which an
    /// orchestrator before a restart wrote.
    fn restore(&mut self, annotations: &BTreeMap<String, String>) {
        if let Some(prior) = annotations
            .get(ANNOTATION_STEPS)
            .and_then(|s| serde_json::from_str::<Steps>(s).ok())
        {
            for (name, summary) in prior {
                if let Some(s) = self.steps.get_mut(&name) {
                    *s = summary;
                }
            }
        }
    }

    /// Writes the run's end onto the Job. The last intermediate record
    /// lands before the final one.
    fn finish(
        mut self,
        rt: &tokio::runtime::Runtime,
        writer: Option<&StatusWriter>,
        outcome: RunOutcome,
    ) {
        if let Some((tx, task)) = self.updates.take() {
            drop(tx);
            let _ = rt.block_on(task);
        }
        if let Some(w) = writer {
            let mut a = BTreeMap::new();
            a.insert(
                ANNOTATION_STATUS.to_string(),
                status_word(outcome).to_string(),
            );
            a.insert(
                ANNOTATION_STEPS.to_string(),
                serde_json::to_string(&self.steps).unwrap_or_default(),
            );
            a.insert(
                ANNOTATION_FINISHED.to_string(),
                kiln_pipeline::time::now_rfc3339(),
            );
            rt.block_on(w.patch(json!({"metadata": {"annotations": a}})));
        }
    }
}

/// Writes the steps' record onto the Job one patch at a time, the latest
/// only: the step ends that come while a patch is under way go together in
/// the next. (A patch per step end, all in flight at once, had the API
/// server retry the conflicting updates of the one Job over and over: 0.5
/// to 6 s per patch with 20 steps in flight, and the step pods' creation
/// slowed with them.) It also keeps an older record from landing last.
async fn write_steps(writer: StatusWriter, mut updates: watch::Receiver<Option<String>>) {
    while updates.changed().await.is_ok() {
        let Some(text) = updates.borrow_and_update().clone() else {
            continue;
        };
        writer
            .patch(json!({"metadata": {"annotations": {ANNOTATION_STEPS: text}}}))
            .await;
    }
}

impl Observer for JobRecord {
    fn report(&mut self, report: &Report) {
        let name = |i: &usize| self.names[*i].clone();
        let changed = match report {
            Report::AttemptStarted { step, attempt, .. } => {
                let s = self.steps.entry(name(step)).or_default();
                s.status = "running".into();
                s.attempts = *attempt;
                false
            }
            Report::AttemptEnded {
                step,
                exit_code,
                outcome,
                ..
            } => {
                let s = self.steps.entry(name(step)).or_default();
                s.exit_code = *exit_code;
                if *outcome == AttemptOutcome::Failed {
                    s.status = "retrying".into();
                }
                false
            }
            Report::RetryScheduled { .. } => false,
            Report::StepEnded { step, end, reason } => {
                let s = self.steps.entry(name(step)).or_default();
                s.status = match end {
                    Terminal::Succeeded => "succeeded",
                    Terminal::Failed => "failed",
                    Terminal::Skipped => "skipped",
                    Terminal::Cancelled => "cancelled",
                }
                .into();
                s.reason.clone_from(reason);
                true
            }
            Report::Finished { .. } => false,
        };
        if changed && let Some((updates, _)) = &self.updates {
            updates.send_replace(Some(serde_json::to_string(&self.steps).unwrap_or_default()));
        }
    }
}

/// The records' word for how a run ended.
pub fn status_word(outcome: RunOutcome) -> &'static str {
    match outcome {
        RunOutcome::Succeeded => "succeeded",
        RunOutcome::Failed => "failed",
        RunOutcome::Stopped { .. } => "stopped",
        RunOutcome::TimedOut => "timed-out",
    }
}

/// The outcome a final status word stands for.
pub fn outcome_of(status: &str) -> RunOutcome {
    match status {
        "succeeded" => RunOutcome::Succeeded,
        "stopped" => RunOutcome::Stopped { force: false },
        "timed-out" => RunOutcome::TimedOut,
        _ => RunOutcome::Failed,
    }
}

/// Median and 95th percentile of `figures` (nearest rank).
pub fn percentiles(figures: &[Duration]) -> Option<(Duration, Duration)> {
    if figures.is_empty() {
        return None;
    }
    let mut sorted = figures.to_vec();
    sorted.sort();
    let rank = |p: f64| {
        let r = (p * sorted.len() as f64).ceil() as usize;
        sorted[r.clamp(1, sorted.len()) - 1]
    };
    Some((rank(0.5), rank(0.95)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_use_the_nearest_rank() {
        let ms = |v: u64| Duration::from_millis(v);
        let figures: Vec<Duration> = (1..=100).rev().map(ms).collect();
        assert_eq!(percentiles(&figures), Some((ms(50), ms(95))));
        assert_eq!(percentiles(&[ms(7)]), Some((ms(7), ms(7))));
        assert_eq!(percentiles(&[]), None);
    }

    #[test]
    fn every_step_gets_the_runs_pull_secrets_beside_its_own() {
        let text = "name: p\nsteps:\n  - name: a\n    command: [true]\n    settings:\n      kubernetes:\n        pod_settings:\n          image_pull_secrets: [regcred]\n  - name: b\n    command: [true]\n";
        let pipeline = Pipeline::parse(text, "kiln.yaml").unwrap_or_else(|e| panic!("{e}"));
        let plan = RunPlan {
            run_id: Some("r".into()),
            file: "kiln.yaml".into(),
            pipeline: text.into(),
            images: [("a", "r/a@sha256:00"), ("b", "r/b@sha256:00")]
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .into(),
            namespace: "kiln".into(),
            pull_secrets: vec!["kiln-pull-r".into()],
        };
        let names = vec!["a".to_string(), "b".to_string()];
        let steps = kube_steps(&pipeline, &plan, "r", &names).unwrap_or_else(|e| panic!("{e}"));
        let secrets: Vec<Vec<String>> = steps
            .iter()
            .map(|s| {
                s.settings
                    .pod_settings
                    .as_ref()
                    .and_then(|p| p.image_pull_secrets.clone())
                    .unwrap_or_default()
                    .into_iter()
                    .map(|n| n.value)
                    .collect()
            })
            .collect();
        assert_eq!(
            secrets,
            [vec!["regcred", "kiln-pull-r"], vec!["kiln-pull-r"]]
        );
    }

    #[test]
    fn status_words_round_trip() {
        for o in [
            RunOutcome::Succeeded,
            RunOutcome::Failed,
            RunOutcome::Stopped { force: false },
            RunOutcome::TimedOut,
        ] {
            assert_eq!(outcome_of(status_word(o)), o);
            assert!(is_final(status_word(o)));
        }
        assert!(!is_final("running"));
    }
}
