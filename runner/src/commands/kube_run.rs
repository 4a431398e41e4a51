//! `kiln run --on kubernetes`: build and push what is stale, push the
//! orchestrator image, submit the orchestrator Job (or the schedule's
//! CronJob), then follow the orchestrator's log until the run ends, or
//! return at once with `--detach`. Connecting, submitting and following
//! are the library's ([`kiln_runner::k8s::submit`]); this module builds,
//! pushes and prints.

use std::collections::BTreeMap;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{Context as _, bail};
use kiln_pipeline::{KubernetesSettings, Pipeline};
use kiln_runner::k8s::job::{CronSpec, OrchestratorJob, orchestrator_cronjob};
use kiln_runner::k8s::orchestrator_image::{OrchestratorImageOptions, push_orchestrator_image};
use kiln_runner::k8s::plan::RunPlan;
use kiln_runner::k8s::status::Steps;
use kiln_runner::k8s::submit::{Cluster, apply_pull_secrets, record_run};
use kiln_runner::records::{ClusterRun, Records};

use super::build::build_pinned;
use super::build::{data_dir, push_registries, registry_client};
use super::kube::{runtime, target};
use super::load_pipeline;
use crate::cli::RunArgs;
use crate::progress::Display;

pub(super) fn run(args: &RunArgs, json: bool) -> anyhow::Result<ExitCode> {
    if args.retry_failed.is_some() {
        bail!(
            "--retry-failed is for local runs; a Kubernetes run's orchestrator already resumes from the pods it finds"
        );
    }
    let Some(pipeline) = load_pipeline(&args.pipeline)? else {
        return Ok(ExitCode::from(1));
    };
    let settings = pipeline.kubernetes();
    let cluster = Cluster::connect(target(Some(&pipeline), &args.kube), runtime()?)?;
    let account = cluster.service_account(&settings)?;

    // One registry client for every push: --password-stdin is read once,
    // and --image-pull-secret hands on the credentials those pushes used.
    let registry = registry_client(&args.registry, push_registries(Some(&pipeline), &[]))?;
    // Every step's image, pushed and pinned.
    let cache_dir = super::cache_dir(&args.cache_dir)?;
    let images = push_images(&cluster.rt, &pipeline, &cache_dir, &registry, json)?;
    local_checks(&pipeline, &images);
    let orchestrator = push_orchestrator(&cluster.rt, &pipeline, &images, &registry, &cache_dir)?;

    let mut plan = run_plan(&cluster, args, &registry, images, &orchestrator)?;
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
    follow_to_end(&cluster, &records, &run_id, &at, &job_name, limit, json)
}

/// The plan the orchestrator reads: the pipeline file as written, the
/// steps' pinned `images` and, with `--image-pull-secret`, the pull
/// secrets for them and the `orchestrator` image, applied in the run's
/// namespace once the file has been read.
fn run_plan(
    cluster: &Cluster,
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
        cluster.rt.block_on(apply_pull_secrets(
            &cluster.client,
            &cluster.target.namespace,
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
        namespace: cluster.target.namespace.clone(),
        pull_secrets,
    })
}

/// Follows the orchestrator Job `job` until the run ends (or `limit`
/// passes), brings its end into the records and says it.
fn follow_to_end(
    cluster: &Cluster,
    records: &Records,
    run_id: &str,
    at: &ClusterRun,
    job: &str,
    limit: Option<Duration>,
    json: bool,
) -> anyhow::Result<ExitCode> {
    let Some((status, steps)) = cluster.follow_to_end(records, run_id, at, job, limit)? else {
        eprintln!(
            "kiln: run {run_id} is still going after the timeout; follow it with: kiln logs {run_id} -f"
        );
        return Ok(ExitCode::from(1));
    };
    say_end(
        run_id,
        job,
        &cluster.target.namespace,
        &status,
        &steps,
        json,
    );
    Ok(if status == "succeeded" {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
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
