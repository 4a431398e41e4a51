//! `kiln run`: build what is missing or stale (through the layer cache),
//! then run the step DAG on this machine (the library's
//! [`kiln_runner::local::orchestrate`]), recording the run.

use std::collections::HashMap;
use std::io::IsTerminal as _;
use std::process::ExitCode;

use anyhow::Context as _;
use kiln_builder::registry::TargetPlatform;
use kiln_builder::store::Store;
use kiln_pipeline::Pipeline;
use kiln_rootfs::sandbox::{Sandbox, SandboxConfig};
use kiln_rootfs::unpack::{RootCache, UnpackOptions};
use kiln_runner::local::orchestrate::{LocalRun, LocalRunEnd, reused_steps};
use kiln_runner::local::{StepLaunch, image};
use kiln_runner::records::Records;
use kiln_runner::scheduler::RunOutcome;
use kiln_runner::specs::step_names;

use super::build::{build_pinned, data_dir, push_registries, registry_client};
use super::load_pipeline;
use crate::cli::{Backend, RunArgs};
use crate::progress::Display;

pub(super) fn run(args: &RunArgs, json: bool) -> anyhow::Result<ExitCode> {
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

    let end = kiln_runner::local::orchestrate::run(LocalRun {
        pipeline: &pipeline,
        data: &data,
        records: &records,
        previous: previous.as_ref(),
        reused: &reused,
        sandbox,
        launches,
        colour: std::io::stdout().is_terminal(),
    })?;
    say_end(&records, &end, json)?;
    Ok(if end.outcome.is_success() {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
}

/// The run's end, as its record (`--json`) or as the console's summary
/// and a last line.
fn say_end(records: &Records, end: &LocalRunEnd, json: bool) -> anyhow::Result<()> {
    if json {
        println!(
            "{}",
            serde_json::to_string_pretty(&records.run(&end.run_id)?)?
        );
    } else {
        eprintln!();
        eprint!("{}", end.console.summary());
        eprintln!(
            "kiln: run {} {} in {:.1}s",
            end.run_id,
            outcome_words(end.outcome),
            end.started.elapsed().unwrap_or_default().as_secs_f64()
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
) -> anyhow::Result<HashMap<String, Result<StepLaunch, String>>> {
    let plan = kiln_builder::plan::plan(pipeline, None)?;
    let store = Store::new(cache_dir)?;
    let roots = RootCache::new(cache_dir.join("roots"))?;
    let client = registry_client(&args.registry, push_registries(Some(pipeline), &[]))?;
    let display = Display::choose(json);
    let platform = TargetPlatform::default();
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
