//! `kiln run --on kubernetes`: build and push what is stale, push the
//! orchestrator image, submit the orchestrator Job (or the schedule's
//! CronJob), then follow the orchestrator's log until the run ends, or
//! return at once with `--detach`.

use std::collections::BTreeMap;
use std::process::ExitCode;
use std::time::{Duration, Instant, SystemTime};

use anyhow::{Context as _, bail};
use futures_util::{AsyncBufReadExt as _, StreamExt as _};
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::Pod;
use kiln_pipeline::{KubernetesSettings, Pipeline};
use kiln_runner::k8s::connect::{SERVICE_ACCOUNT, Target, connect, ensure_service_account};
use kiln_runner::k8s::job::{
    CronSpec, OrchestratorJob, job_name, orchestrator_cronjob, orchestrator_job,
};
use kiln_runner::k8s::orchestrator::RUN_DIR;
use kiln_runner::k8s::orchestrator_image::{OrchestratorImageOptions, push_orchestrator_image};
use kiln_runner::k8s::plan::RunPlan;
use kiln_runner::k8s::pull_secret;
use kiln_runner::k8s::records::refresh;
use kiln_runner::k8s::status::{ANNOTATION_STATUS, ANNOTATION_STEPS, Steps, is_final};
use kiln_runner::records::{ClusterRun, NewRun, NewStep, Records, RunStatus};
use kube::api::{Api, LogParams, PostParams};
use kube::runtime::watcher;

use super::build::build_pinned;
use super::build::{data_dir, push_registries, registry_client};
use super::kube::{runtime, target};
use super::load_pipeline;
use crate::cli::RunArgs;
use crate::progress::Display;

pub fn run(args: &RunArgs, json: bool) -> anyhow::Result<ExitCode> {
    if args.retry_failed.is_some() {
        bail!(
            "--retry-failed is for local runs; a Kubernetes run's orchestrator already resumes from the pods it finds"
        );
    }
    let Some(pipeline) = load_pipeline(&args.pipeline)? else {
        return Ok(ExitCode::from(1));
    };
    let settings = pipeline.kubernetes();
    let cluster = Cluster::connect(&pipeline, args)?;
    let account = cluster.service_account(&settings)?;

    // One registry client for every push: --password-stdin is read once,
    // and --image-pull-secret hands on the credentials those pushes used.
    let registry = registry_client(&args.registry, push_registries(Some(&pipeline), &[]))?;
    // Every step's image, pushed and pinned.
    let cache_dir = super::cache_dir(&args.cache_dir)?;
    let images = push_images(&cluster.rt, &pipeline, &cache_dir, &registry, json)?;
    local_checks(&pipeline, &images);
    let orchestrator = push_orchestrator(&cluster.rt, &pipeline, &images, &registry, &cache_dir)?;

    let mut plan = cluster.run_plan(args, &registry, images, &orchestrator)?;
    let schedule = args.schedule.clone().or_else(|| {
        pipeline
            .model()
            .schedule
            .as_ref()
            .map(|s| s.cron_expression.value.clone())
    });
    if let Some(cron) = schedule {
        return schedule_run(
            &cluster.rt,
            &cluster.client,
            &pipeline,
            &plan,
            &orchestrator,
            &account,
            cron,
        );
    }

    // The run's record: the same ids and commands as a local run; where it
    // lives comes first, so `kiln runs` can find it from the start.
    let records = Records::open(&data_dir()?).context("opening the run records")?;
    let (run_id, at) = record_run(&records, &pipeline, &plan, &cluster.target)?;
    plan.run_id = Some(run_id.clone());
    let job = OrchestratorJob {
        pipeline: pipeline.name(),
        plan: &plan,
        image: &orchestrator,
        settings: &settings,
        service_account: &account,
    };
    let job_name = cluster.submit(&records, &run_id, &job)?;
    let namespace = &cluster.target.namespace;
    eprintln!(
        "kiln: run {run_id} of {} submitted: Job {job_name} in namespace {namespace}",
        pipeline.name(),
    );
    let synchronous = settings.synchronous.unwrap_or(true) && !args.detach;
    if !synchronous {
        eprintln!("kiln: follow it with: kiln logs {run_id} -f");
        if json {
            println!(
                "{}",
                serde_json::json!({"run": run_id, "job": job_name, "namespace": namespace})
            );
        }
        return Ok(ExitCode::SUCCESS);
    }
    let limit = follow_limit(&settings);
    cluster.follow_to_end(&records, &run_id, &at, &job_name, limit, json)
}

/// The cluster a run is submitted to: kiln's async runtime, a client of
/// the API server, and the context and namespace of the run.
struct Cluster {
    rt: tokio::runtime::Runtime,
    client: kube::Client,
    target: Target,
}

impl Cluster {
    /// Connects to the cluster the pipeline and the command line name.
    fn connect(pipeline: &Pipeline, args: &RunArgs) -> anyhow::Result<Cluster> {
        let target = target(Some(pipeline), &args.kube);
        let rt = runtime()?;
        let client = rt
            .block_on(connect(&target))
            .context("connecting to the Kubernetes cluster")?;
        Ok(Cluster { rt, client, target })
    }

    /// The orchestrator's service account: the pipeline's, or kiln's own,
    /// created in the namespace when it is missing.
    fn service_account(&self, settings: &KubernetesSettings) -> anyhow::Result<String> {
        Ok(match &settings.service_account_name {
            Some(a) => a.value.clone(),
            None => {
                self.rt
                    .block_on(ensure_service_account(&self.client, &self.target.namespace))?;
                SERVICE_ACCOUNT.to_string()
            }
        })
    }

    /// The plan the orchestrator reads: the pipeline file as written, the
    /// steps' pinned `images` and, with `--image-pull-secret`, the pull
    /// secrets for them and the `orchestrator` image, applied in the run's
    /// namespace once the file has been read.
    fn run_plan(
        &self,
        args: &RunArgs,
        registry: &kiln_oci::Client,
        images: BTreeMap<String, String>,
        orchestrator: &str,
    ) -> anyhow::Result<RunPlan> {
        let file = args
            .pipeline
            .file_name()
            .map_or_else(|| "kiln.yaml".into(), |f| f.to_string_lossy().into_owned());
        let text = std::fs::read_to_string(&args.pipeline)
            .with_context(|| format!("reading {}", args.pipeline.display()))?;
        let pull_secrets = if args.image_pull_secret {
            let references = images.values().map(String::as_str).chain([orchestrator]);
            self.rt.block_on(apply_pull_secrets(
                &self.client,
                &self.target.namespace,
                registry,
                references,
            ))?
        } else {
            Vec::new()
        };
        Ok(RunPlan {
            run_id: None,
            file,
            pipeline: text,
            images,
            namespace: self.target.namespace.clone(),
            pull_secrets,
        })
    }

    /// Creates the orchestrator Job of run `run_id`; its name. A Job the
    /// cluster refuses ends the run's record as failed: no orchestrator
    /// will ever write its end.
    fn submit(
        &self,
        records: &Records,
        run_id: &str,
        job: &OrchestratorJob<'_>,
    ) -> anyhow::Result<String> {
        let job = orchestrator_job(job)?;
        let name = job.metadata.name.clone().unwrap_or_default();
        let jobs: Api<Job> = Api::namespaced(self.client.clone(), &self.target.namespace);
        if let Err(e) = self.rt.block_on(jobs.create(&PostParams::default(), &job)) {
            let _ = records.finish_run(run_id, RunStatus::Failed, SystemTime::now());
            return Err(
                anyhow::Error::new(e).context(format!("creating the orchestrator Job {name}"))
            );
        }
        Ok(name)
    }

    /// Follows the orchestrator Job `job` until the run ends (or `limit`
    /// passes), brings its end into the records and says it.
    fn follow_to_end(
        &self,
        records: &Records,
        run_id: &str,
        at: &ClusterRun,
        job: &str,
        limit: Option<Duration>,
        json: bool,
    ) -> anyhow::Result<ExitCode> {
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
        let Some((status, steps)) = status else {
            eprintln!(
                "kiln: run {run_id} is still going after the timeout; follow it with: kiln logs {run_id} -f"
            );
            return Ok(ExitCode::from(1));
        };
        say_end(run_id, job, namespace, &status, &steps, json);
        Ok(if status == "succeeded" {
            ExitCode::SUCCESS
        } else {
            ExitCode::from(1)
        })
    }
}

/// How long a synchronous run is followed: the settings' `timeout`, when
/// positive.
fn follow_limit(settings: &KubernetesSettings) -> Option<Duration> {
    settings
        .timeout
        .as_ref()
        .and_then(|t| u64::try_from(t.value).ok())
        .filter(|t| *t > 0)
        .map(Duration::from_secs)
}

/// Pushes the orchestrator image beside the first step's image; its
/// pinned reference.
fn push_orchestrator(
    rt: &tokio::runtime::Runtime,
    pipeline: &Pipeline,
    images: &BTreeMap<String, String>,
    registry: &kiln_oci::Client,
    cache_dir: &std::path::Path,
) -> anyhow::Result<String> {
    let repository = pipeline
        .steps()
        .first()
        .and_then(|s| images.get(&s.name.value))
        .and_then(|r| r.split_once('@'))
        .map(|(repo, _)| repo.to_string())
        .context("the pipeline has no step")?;
    let orchestrator = rt
        .block_on(push_orchestrator_image(
            registry,
            &repository,
            &OrchestratorImageOptions::new(cache_dir),
        ))
        .context("pushing the orchestrator image")?;
    Ok(orchestrator.reference)
}

/// Records the run before it is submitted, with where in the cluster it
/// will live, so that `kiln runs` finds it from the start; its id and
/// that place.
fn record_run(
    records: &Records,
    pipeline: &Pipeline,
    plan: &RunPlan,
    target: &Target,
) -> anyhow::Result<(String, ClusterRun)> {
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

/// Says how the run ended: each failed step's reason, the run's status,
/// and with `--json` the whole of it on stdout.
fn say_end(run_id: &str, job: &str, namespace: &str, status: &str, steps: &Steps, json: bool) {
    for (name, s) in steps {
        if s.status == "failed" {
            eprintln!(
                "kiln: step {name} failed: {}",
                s.reason.as_deref().unwrap_or("unknown")
            );
        }
    }
    eprintln!("kiln: run {run_id} {status}");
    if json {
        println!(
            "{}",
            serde_json::json!({
                "run": run_id,
                "job": job,
                "namespace": namespace,
                "status": status,
                "steps": steps,
            })
        );
    }
}

/// Builds and pushes every image the steps need; step name to pinned
/// reference. A step whose image cannot be built stops the submission:
/// nothing runs in the cluster with a half-built pipeline.
fn push_images(
    rt: &tokio::runtime::Runtime,
    pipeline: &Pipeline,
    cache_dir: &std::path::Path,
    client: &kiln_oci::Client,
    json: bool,
) -> anyhow::Result<BTreeMap<String, String>> {
    let plan = kiln_builder::plan::plan(pipeline, None)?;
    let display = Display::choose(json);
    let data = data_dir()?;
    let mut images = BTreeMap::new();
    for image in &plan.images {
        let reference = build_pinned(rt, pipeline, image, cache_dir, &data, client, &display)
            .map_err(anyhow::Error::msg)?;
        for step in &image.steps {
            images.insert(step.clone(), reference.clone());
        }
    }
    Ok(images)
}

/// `--image-pull-secret`: for each registry among `references` (pinned
/// image references) that kiln has credentials for, through the same
/// client (and so the same lookup) that pushed the images, the pull
/// secret is applied in `namespace`; returns the Secrets' names. Only
/// names and registries are printed, never a credential.
async fn apply_pull_secrets<'a>(
    client: &kube::Client,
    namespace: &str,
    registry: &kiln_oci::Client,
    references: impl Iterator<Item = &'a str>,
) -> anyhow::Result<Vec<String>> {
    let hosts: std::collections::BTreeSet<String> = references
        .map(|r| kiln_oci::Repository::parse(r).registry)
        .collect();
    let mut found = Vec::new();
    for host in hosts {
        match registry
            .credentials(&host)
            .with_context(|| format!("--image-pull-secret: credentials for registry {host}"))?
        {
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

/// `local: true` (a cluster on this machine): its nodes pull from the
/// registry kiln pushed to, which then has to be one they reach; a
/// registry elsewhere usually means a misconfigured stack.
fn local_checks(pipeline: &Pipeline, images: &BTreeMap<String, String>) {
    let s = pipeline.kubernetes();
    let local = s.local.as_ref().is_some_and(|v| v.value);
    let skip = s.skip_local_validations.as_ref().is_some_and(|v| v.value);
    if !local || skip {
        return;
    }
    for (step, reference) in images {
        let host = reference.split('/').next().unwrap_or_default();
        let name = host.rsplit_once(':').map_or(host, |(h, _)| h);
        let on_this_machine =
            matches!(name, "localhost" | "127.0.0.1" | "[::1]") || name.ends_with(".localhost");
        if !on_this_machine {
            eprintln!(
                "kiln: warning: local: true, but step {step}'s image is in registry {host}, which a local cluster may not reach (set skip_local_validations: true to silence)"
            );
        }
    }
}

/// Creates (or updates) the schedule's CronJob.
fn schedule_run(
    rt: &tokio::runtime::Runtime,
    client: &kube::Client,
    pipeline: &Pipeline,
    plan: &RunPlan,
    image: &str,
    account: &str,
    cron: String,
) -> anyhow::Result<ExitCode> {
    let schedule = pipeline.model().schedule.as_ref();
    let spec = CronSpec {
        cron: cron.clone(),
        concurrency: schedule.map(|s| s.concurrency_policy).unwrap_or_default(),
        starting_deadline_seconds: schedule
            .and_then(|s| s.starting_deadline_seconds.as_ref())
            .map(|v| v.value),
        successful_jobs_history_limit: schedule
            .and_then(|s| s.successful_jobs_history_limit.as_ref())
            .map(|v| v.value),
        failed_jobs_history_limit: schedule
            .and_then(|s| s.failed_jobs_history_limit.as_ref())
            .map(|v| v.value),
    };
    kiln_pipeline::cron::check(&cron).map_err(|e| anyhow::anyhow!("schedule {cron:?}: {e}"))?;
    let settings = pipeline.kubernetes();
    let cronjob = orchestrator_cronjob(
        &OrchestratorJob {
            pipeline: pipeline.name(),
            plan,
            image,
            settings: &settings,
            service_account: account,
        },
        &spec,
    )?;
    let name = cronjob.metadata.name.clone().unwrap_or_default();
    let applied = rt
        .block_on(kiln_runner::k8s::schedules::apply_schedule(
            client,
            &plan.namespace,
            &cronjob,
        ))
        .with_context(|| format!("creating schedule {name}"))?;
    let applied = match applied {
        kiln_runner::k8s::schedules::Applied::Created => "created",
        kiln_runner::k8s::schedules::Applied::Updated => "updated",
    };
    eprintln!(
        "kiln: schedule {name} {applied} in namespace {}: {cron}; see kiln schedules list",
        plan.namespace
    );
    Ok(ExitCode::SUCCESS)
}

/// Follows the orchestrator's log (across restarts of its pod) until the
/// run's status on the Job is final; `None` when `limit` passed first.
async fn follow_run(
    client: &kube::Client,
    namespace: &str,
    job: &str,
    limit: Option<Duration>,
) -> anyhow::Result<Option<(String, Steps)>> {
    let started = Instant::now();
    let follow = async {
        let mut followed = std::collections::HashSet::new();
        let mut unreachable_since: Option<Instant> = None;
        loop {
            // The API server may restart under a long run: keep trying
            // for a while before giving up on it.
            match final_status(client, namespace, job).await {
                Ok(Some(done)) => return Ok::<_, anyhow::Error>(done),
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
            let pod = next_orchestrator_pod(client, namespace, job, &followed).await?;
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
) -> anyhow::Result<Option<(String, Steps)>> {
    let jobs: Api<Job> = Api::namespaced(client.clone(), namespace);
    let j = jobs
        .get(job)
        .await
        .with_context(|| format!("reading Job {job}"))?;
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
    followed: &std::collections::HashSet<String>,
) -> anyhow::Result<Option<String>> {
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
                    None => return Ok(None),
                };
                let name = pod.metadata.name.clone().unwrap_or_default();
                let phase = pod.status.as_ref().and_then(|s| s.phase.clone()).unwrap_or_default();
                if !followed.contains(&name) && matches!(phase.as_str(), "Running" | "Succeeded" | "Failed") {
                    return Ok(Some(name));
                }
            }
            // Re-read the Job now and then: the run may have ended with no
            // new pod to follow.
            () = &mut deadline => return Ok(None),
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
