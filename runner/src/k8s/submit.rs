//! A Kubernetes run from the client's side, once its images are pushed:
//! the cluster connection, the orchestrator's service account and pull
//! secrets, the run's record, the orchestrator Job's submission and
//! following its log to the run's end. The client-side counterpart of
//! [`super::orchestrator`]; `kiln run --on kubernetes` pushes the images,
//! calls these and prints the end.

use std::collections::{BTreeSet, HashSet};
use std::time::{Duration, Instant, SystemTime};

use futures_util::{AsyncBufReadExt as _, StreamExt as _};
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::Pod;
use kiln_pipeline::{KubernetesSettings, Pipeline};
use kube::api::{Api, LogParams, PostParams};
use kube::runtime::watcher;

use super::connect::{ConnectError, SERVICE_ACCOUNT, Target, connect, ensure_service_account};
use super::job::{OrchestratorJob, job_name, orchestrator_job};
use super::orchestrator::RUN_DIR;
use super::plan::RunPlan;
use super::pod::PodError;
use super::pull_secret::{self, PullSecretError};
use super::records::refresh;
use super::status::{ANNOTATION_STATUS, ANNOTATION_STEPS, Steps, is_final};
use crate::records::{ClusterRun, NewRun, NewStep, Records, RecordsError, RunStatus};

/// Why a run could not be submitted or followed.
#[derive(Debug, thiserror::Error)]
pub enum SubmitError {
    /// The cluster cannot be reached or used.
    #[error("connecting to the Kubernetes cluster")]
    Connect(#[source] Box<ConnectError>),
    /// kiln's service account could not be made ready.
    #[error(transparent)]
    ServiceAccount(Box<ConnectError>),
    /// The credentials for a registry could not be read.
    #[error("--image-pull-secret: credentials for registry {host}")]
    Credentials {
        /// The registry.
        host: String,
        /// Why.
        #[source]
        source: Box<kiln_oci::RegistryError>,
    },
    /// A pull secret could not be applied.
    #[error(transparent)]
    PullSecret(#[from] PullSecretError),
    /// The orchestrator Job's manifest could not be made.
    #[error(transparent)]
    Manifest(#[from] PodError),
    /// The cluster refused the orchestrator Job.
    #[error("creating the orchestrator Job {name}")]
    CreateJob {
        /// The Job.
        name: String,
        /// The API's answer.
        #[source]
        source: Box<kube::Error>,
    },
    /// The run's Job could not be read.
    #[error("reading Job {job}")]
    ReadJob {
        /// The Job.
        job: String,
        /// The API's answer.
        #[source]
        source: Box<kube::Error>,
    },
    /// The run records could not be written.
    #[error(transparent)]
    Records(#[from] RecordsError),
}

/// The cluster a run is submitted to: kiln's async runtime, a client of
/// the API server, and the context and namespace of the run.
pub struct Cluster {
    /// The runtime the API calls run on.
    pub rt: tokio::runtime::Runtime,
    /// The API server's client.
    pub client: kube::Client,
    /// The context and namespace.
    pub target: Target,
}

impl Cluster {
    /// Connects to `target`, with `rt` for every call to come.
    pub fn connect(target: Target, rt: tokio::runtime::Runtime) -> Result<Cluster, SubmitError> {
        let client = rt
            .block_on(connect(&target))
            .map_err(|e| SubmitError::Connect(Box::new(e)))?;
        Ok(Cluster { rt, client, target })
    }

    /// The orchestrator's service account: the pipeline's, or kiln's own,
    /// created in the namespace when it is missing.
    pub fn service_account(&self, settings: &KubernetesSettings) -> Result<String, SubmitError> {
        Ok(match &settings.service_account_name {
            Some(a) => a.value.clone(),
            None => {
                self.rt
                    .block_on(ensure_service_account(&self.client, &self.target.namespace))
                    .map_err(|e| SubmitError::ServiceAccount(Box::new(e)))?;
                SERVICE_ACCOUNT.to_string()
            }
        })
    }

    /// Creates the orchestrator Job of run `run_id`; its name. A Job the
    /// cluster refuses ends the run's record as failed: no orchestrator
    /// will ever write its end.
    pub fn submit(
        &self,
        records: &Records,
        run_id: &str,
        job: &OrchestratorJob<'_>,
    ) -> Result<String, SubmitError> {
        let job = orchestrator_job(job)?;
        let name = job.metadata.name.clone().unwrap_or_default();
        let jobs: Api<Job> = Api::namespaced(self.client.clone(), &self.target.namespace);
        if let Err(source) = self.rt.block_on(jobs.create(&PostParams::default(), &job)) {
            let _ = records.finish_run(run_id, RunStatus::Failed, SystemTime::now());
            return Err(SubmitError::CreateJob {
                name,
                source: Box::new(source),
            });
        }
        Ok(name)
    }

    /// Follows the orchestrator Job `job` until the run ends (or `limit`
    /// passes) and brings its end into the records; the run's final status
    /// and steps, `None` when `limit` passed first.
    pub fn follow_to_end(
        &self,
        records: &Records,
        run_id: &str,
        at: &ClusterRun,
        job: &str,
        limit: Option<Duration>,
    ) -> Result<Option<(String, Steps)>, SubmitError> {
        let namespace = &self.target.namespace;
        let status = self
            .rt
            .block_on(follow_run(&self.client, namespace, job, limit))?;
        // What the cluster says, into the records (`kiln runs show`).
        if let Err(e) = self.rt.block_on(refresh(&self.client, records, run_id, at)) {
            eprintln!(
                "kiln: warning: could not record the run's end: {}",
                kiln_pipeline::error_chain(&e)
            );
        }
        Ok(status)
    }
}

/// Records the run before it is submitted, with where in the cluster it
/// will live, so that `kiln runs` finds it from the start; its id and
/// that place.
pub fn record_run(
    records: &Records,
    pipeline: &Pipeline,
    plan: &RunPlan,
    target: &Target,
) -> Result<(String, ClusterRun), SubmitError> {
    let new = NewRun {
        pipeline: pipeline.name().to_string(),
        file: std::path::absolute(pipeline.file()).unwrap_or_else(|_| pipeline.file().into()),
        run_dir: std::path::PathBuf::from(RUN_DIR),
        log_dir: std::path::PathBuf::new(),
        steps: pipeline
            .steps()
            .iter()
            .map(|s| NewStep {
                name: s.name.value.clone(),
                image: plan.images.get(&s.name.value).cloned(),
                upstream: s.upstream.iter().map(|u| u.value.clone()).collect(),
            })
            .collect(),
        retry_of: None,
        started: SystemTime::now(),
        pid: std::process::id(),
    };
    let run_id = records.create_run(&new)?;
    let at = ClusterRun {
        context: target.context.clone(),
        namespace: target.namespace.clone(),
        job: job_name(pipeline.name(), &run_id),
    };
    records.set_cluster_run(&run_id, &at)?;
    Ok((run_id, at))
}

/// `--image-pull-secret`: for each registry among `references` (pinned
/// image references) that kiln has credentials for, through the same
/// client (and so the same lookup) that pushed the images, the pull
/// secret is applied in `namespace`; returns the Secrets' names. Only
/// names and registries are printed, never a credential.
pub async fn apply_pull_secrets<'a>(
    client: &kube::Client,
    namespace: &str,
    registry: &kiln_oci::Client,
    references: impl Iterator<Item = &'a str>,
) -> Result<Vec<String>, SubmitError> {
    let hosts: BTreeSet<String> = references
        .map(|r| kiln_oci::Repository::parse(r).registry)
        .collect();
    let mut found = Vec::new();
    for host in hosts {
        let credentials =
            registry
                .credentials(&host)
                .map_err(|source| SubmitError::Credentials {
                    host: host.clone(),
                    source: Box::new(source),
                })?;
        match credentials {
            Some(c) => found.push((host, c)),
            None => eprintln!(
                "kiln: no credentials for registry {host}: its images are pulled without an image pull secret"
            ),
        }
    }
    let mut names = Vec::new();
    for secret in pull_secret::pull_secrets(namespace, &found) {
        let name = secret.metadata.name.clone().unwrap_or_default();
        pull_secret::apply_pull_secret(client, namespace, &secret).await?;
        let registries: Vec<&str> = found
            .iter()
            .filter(|(host, _)| pull_secret::secret_name(host) == name)
            .map(|(host, _)| host.as_str())
            .collect();
        eprintln!(
            "kiln: image pull secret {name} for {} applied",
            registries.join(", ")
        );
        names.push(name);
    }
    Ok(names)
}

/// Follows the orchestrator's log (across restarts of its pod) until the
/// run's status on the Job is final; `None` when `limit` passed first.
async fn follow_run(
    client: &kube::Client,
    namespace: &str,
    job: &str,
    limit: Option<Duration>,
) -> Result<Option<(String, Steps)>, SubmitError> {
    let started = Instant::now();
    let follow = async {
        let mut followed = HashSet::new();
        let mut unreachable_since: Option<Instant> = None;
        loop {
            // The API server may restart under a long run: keep trying
            // for a while before giving up on it.
            match final_status(client, namespace, job).await {
                Ok(Some(done)) => return Ok::<_, SubmitError>(done),
                Ok(None) => unreachable_since = None,
                Err(e) => {
                    let since = *unreachable_since.get_or_insert_with(Instant::now);
                    if since.elapsed() > Duration::from_secs(120) {
                        return Err(e);
                    }
                    tokio::time::sleep(Duration::from_secs(1)).await;
                    continue;
                }
            }
            let pod = next_orchestrator_pod(client, namespace, job, &followed).await;
            if let Some(pod) = pod {
                print_log(client, namespace, &pod).await;
                followed.insert(pod);
            }
        }
    };
    match limit {
        Some(l) => match tokio::time::timeout(l.saturating_sub(started.elapsed()), follow).await {
            Ok(done) => done.map(Some),
            Err(_) => Ok(None),
        },
        None => follow.await.map(Some),
    }
}

/// The run's final status and steps, once the Job says it is over (or the
/// Job failed for good: every orchestrator attempt crashed).
async fn final_status(
    client: &kube::Client,
    namespace: &str,
    job: &str,
) -> Result<Option<(String, Steps)>, SubmitError> {
    let jobs: Api<Job> = Api::namespaced(client.clone(), namespace);
    let j = jobs.get(job).await.map_err(|source| SubmitError::ReadJob {
        job: job.to_string(),
        source: Box::new(source),
    })?;
    let a = j.metadata.annotations.clone().unwrap_or_default();
    let steps: Steps = a
        .get(ANNOTATION_STEPS)
        .and_then(|s| serde_json::from_str(s).ok())
        .unwrap_or_default();
    if let Some(status) = a.get(ANNOTATION_STATUS)
        && is_final(status)
    {
        return Ok(Some((status.clone(), steps)));
    }
    let failed = j
        .status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .is_some_and(|c| c.iter().any(|c| c.type_ == "Failed" && c.status == "True"));
    Ok(failed.then(|| {
        (
            "failed (the orchestrator could not run; kubectl describe job)".to_string(),
            steps,
        )
    }))
}

/// Waits (by watch) for an orchestrator pod of `job` not followed yet that
/// has started (or ended), so its log can be read.
async fn next_orchestrator_pod(
    client: &kube::Client,
    namespace: &str,
    job: &str,
    followed: &HashSet<String>,
) -> Option<String> {
    let pods: Api<Pod> = Api::namespaced(client.clone(), namespace);
    let config = watcher::Config::default().labels(&format!("job-name={job}"));
    let mut stream = watcher(pods, config).boxed();
    let deadline = tokio::time::sleep(Duration::from_secs(5));
    tokio::pin!(deadline);
    loop {
        tokio::select! {
            event = stream.next() => {
                let pod = match event {
                    Some(Ok(watcher::Event::Apply(p) | watcher::Event::InitApply(p))) => p,
                    Some(Ok(_)) => continue,
                    Some(Err(_)) => {
                        tokio::time::sleep(Duration::from_millis(500)).await;
                        continue;
                    }
                    None => return None,
                };
                let name = pod.metadata.name.clone().unwrap_or_default();
                let phase = pod.status.as_ref().and_then(|s| s.phase.clone()).unwrap_or_default();
                if !followed.contains(&name) && matches!(phase.as_str(), "Running" | "Succeeded" | "Failed") {
                    return Some(name);
                }
            }
            // Re-read the Job now and then: the run may have ended with no
            // new pod to follow.
            () = &mut deadline => return None,
        }
    }
}

/// Prints the orchestrator pod's log as it is written.
async fn print_log(client: &kube::Client, namespace: &str, pod: &str) {
    use std::io::Write as _;
    let pods: Api<Pod> = Api::namespaced(client.clone(), namespace);
    let params = LogParams {
        follow: true,
        ..LogParams::default()
    };
    match pods.log_stream(pod, &params).await {
        Ok(stream) => {
            let mut lines = stream.lines();
            while let Some(Ok(line)) = lines.next().await {
                let _ = writeln!(std::io::stdout().lock(), "{line}");
            }
        }
        Err(e) => eprintln!("kiln: reading the orchestrator's log ({pod}): {e}"),
    }
}
