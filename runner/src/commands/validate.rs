//! `kiln validate`: check a pipeline file, print its DAG or one step's
//! effective settings.

use std::process::ExitCode;

use anyhow::Context;
use kiln_pipeline::PipelineError;

use crate::cli::ValidateArgs;

/// Prints the DAG (or `--step`'s effective settings); exit 1 when invalid.
pub(super) fn run(args: &ValidateArgs, json: bool) -> anyhow::Result<ExitCode> {
    let pipeline = match kiln_runner::pipeline_file::load(&args.file) {
        Ok(p) => p,
        Err(err @ PipelineError::Invalid { .. }) => {
            // The diagnostics already name file, line and column.
            eprintln!("{err}");
            return Ok(ExitCode::from(1));
        }
        Err(err) => return Err(err.into()),
    };
    if let Some(step) = &args.step {
        let settings = pipeline.effective(step)?;
        let text = serde_json::to_string_pretty(&settings).context("serializing settings")?;
        println!("{text}");
        return Ok(ExitCode::SUCCESS);
    }
    let steps: Vec<(&str, Vec<&str>)> = pipeline
        .ordered_steps()
        .map(|s| {
            let ups = s.upstream.iter().map(|u| u.value.as_str()).collect();
            (s.name.value.as_str(), ups)
        })
        .collect();
    if json {
        let value = serde_json::json!({
            "pipeline": pipeline.name(),
            "file": pipeline.file(),
            "steps": steps.iter().map(|(name, ups)| serde_json::json!({"name": name, "upstream": ups})).collect::<Vec<_>>(),
        });
        println!("{value}");
        return Ok(ExitCode::SUCCESS);
    }
    println!(
        "pipeline {} ({}): {} steps, valid",
        pipeline.name(),
        pipeline.file().display(),
        steps.len()
    );
    let width = steps.iter().map(|(n, _)| n.len()).max().unwrap_or(0);
    for (i, (name, ups)) in steps.iter().enumerate() {
        if ups.is_empty() {
            println!("  {:>2}. {name}", i + 1);
        } else {
            println!("  {:>2}. {name:<width$}  <- {}", i + 1, ups.join(", "));
        }
    }
    Ok(ExitCode::SUCCESS)
}
