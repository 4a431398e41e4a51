//! `kiln schedules list|update|delete`: a pipeline's schedules, the
//! CronJobs `kiln run --on kubernetes --schedule` creates.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::Context as _;
use kiln_runner::k8s::connect::{Target, connect};
use kiln_runner::k8s::schedules::{self, ScheduleInfo};
use kiln_runner::records::format_utc;

use super::{kube, load_pipeline, table};
use crate::cli::{ScheduleTarget, SchedulesCommand};

/// The pipeline file read when `--pipeline` is not given. Schedules are
/// managed from anywhere, so unlike `kiln run` its absence is no error.
const DEFAULT_PIPELINE: &str = "kiln.yaml";

/// Lists, updates or deletes.
pub(super) fn run(command: &SchedulesCommand, json: bool) -> anyhow::Result<ExitCode> {
    let (SchedulesCommand::List(place)
    | SchedulesCommand::Update { target: place, .. }
    | SchedulesCommand::Delete { target: place, .. }) = command;
    let Some(target) = resolve(place, Path::new(DEFAULT_PIPELINE))? else {
        return Ok(ExitCode::from(1));
    };
    let ns = target.namespace.as_str();
    kube::runtime()?.block_on(async {
        let client = connect(&target)
            .await
            .with_context(|| format!("connecting to the cluster of namespace {ns}"))?;
        match command {
            SchedulesCommand::List(_) => {
                let list = schedules::list_schedules(&client, ns).await?;
                if json {
                    println!("{}", serde_json::to_string_pretty(&list)?);
                } else if list.is_empty() {
                    println!("no schedules in namespace {ns}");
                } else {
                    print!("{}", schedule_table(&list));
                }
            }
            SchedulesCommand::Update { name, cron, .. } => {
                let info = schedules::update_schedule(&client, ns, name, cron).await?;
                if json {
                    println!("{}", serde_json::to_string_pretty(&info)?);
                } else {
                    println!(
                        "schedule {} in namespace {}: cron {:?}",
                        info.name, info.namespace, info.cron
                    );
                }
            }
            SchedulesCommand::Delete { name, .. } => {
                let info = schedules::delete_schedule(&client, ns, name).await?;
                if json {
                    println!("{}", serde_json::to_string_pretty(&info)?);
                } else {
                    println!(
                        "deleted schedule {} in namespace {} (its Jobs and their pods go too)",
                        info.name, info.namespace
                    );
                }
            }
        }
        Ok(ExitCode::SUCCESS)
    })
}

/// The cluster and namespace of a schedules command: `--context` and
/// `--namespace` over the pipeline file's settings over kiln's defaults.
/// `None` when the pipeline file is invalid (its diagnostics are printed).
fn resolve(place: &ScheduleTarget, default: &Path) -> anyhow::Result<Option<Target>> {
    let pipeline = match pipeline_file(place.pipeline.as_deref(), default) {
        Some(file) => match load_pipeline(&file)? {
            Some(p) => Some(p),
            None => return Ok(None),
        },
        None => None,
    };
    Ok(Some(kube::target(pipeline.as_ref(), &place.kube)))
}

/// The pipeline file whose settings apply: the one given (so a missing one
/// is an error when read), else `default` when it is there, else none.
fn pipeline_file(given: Option<&Path>, default: &Path) -> Option<PathBuf> {
    match given {
        Some(file) => Some(file.to_path_buf()),
        None => default.is_file().then(|| default.to_path_buf()),
    }
}

/// `kiln schedules list` as text.
fn schedule_table(list: &[ScheduleInfo]) -> String {
    let dash = |s: &str| {
        if s.is_empty() {
            "-".to_string()
        } else {
            s.to_string()
        }
    };
    let rows = list
        .iter()
        .map(|s| {
            vec![
                s.name.clone(),
                dash(&s.pipeline),
                s.cron.clone(),
                if s.suspend { "yes" } else { "no" }.to_string(),
                s.concurrency_policy.clone(),
                s.last_schedule_time
                    .map_or_else(|| "-".to_string(), format_utc),
                s.active.to_string(),
            ]
        })
        .collect();
    table(
        &[
            "NAME",
            "PIPELINE",
            "CRON",
            "SUSPENDED",
            "CONCURRENCY",
            "LAST SCHEDULE",
            "ACTIVE",
        ],
        rows,
    )
}

#[cfg(test)]
mod tests {
    use std::time::{Duration, UNIX_EPOCH};

    use super::*;
    use crate::cli::KubeArgs;

    fn info(name: &str, pipeline: &str, last: Option<u64>) -> ScheduleInfo {
        ScheduleInfo {
            name: name.into(),
            namespace: "ml".into(),
            pipeline: pipeline.into(),
            cron: "5 2 * * *".into(),
            suspend: false,
            concurrency_policy: "Forbid".into(),
            last_schedule_time: last.map(|s| UNIX_EPOCH + Duration::from_secs(s)),
            active: 1,
        }
    }

    #[test]
    fn the_table_has_a_column_per_field_and_dashes_for_nothing() {
        let text = schedule_table(&[
            info("kiln-train", "train", Some(1_700_000_000)),
            info("kiln-x", "", None),
        ]);
        assert_eq!(
            text,
            "\
NAME        PIPELINE  CRON       SUSPENDED  CONCURRENCY  LAST SCHEDULE         ACTIVE
kiln-train  train     5 2 * * *  no         Forbid       2023-11-14 22:13:20Z  1
kiln-x      -         5 2 * * *  no         Forbid       -                     1
"
        );
    }

    fn place(pipeline: Option<&Path>, namespace: Option<&str>) -> ScheduleTarget {
        ScheduleTarget {
            pipeline: pipeline.map(Path::to_path_buf),
            kube: KubeArgs {
                context: None,
                namespace: namespace.map(Into::into),
            },
        }
    }

    fn tempdir() -> tempfile::TempDir {
        tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"))
    }

    fn write(dir: &Path, text: &str) -> PathBuf {
        let file = dir.join("kiln.yaml");
        std::fs::write(&file, text).unwrap_or_else(|e| panic!("{e}"));
        file
    }

    const PIPELINE: &str = "\
name: train
orchestrator:
  kubernetes:
    kubernetes_namespace: from-file
    kubernetes_context: file-context
steps:
  - name: a
    command: [\"true\"]
";

    fn resolved(place: &ScheduleTarget, default: &Path) -> Target {
        resolve(place, default)
            .unwrap_or_else(|e| panic!("{e:#}"))
            .unwrap_or_else(|| panic!("the pipeline is invalid"))
    }

    #[test]
    fn without_a_pipeline_file_kilns_defaults_apply() {
        let dir = tempdir();
        let missing = dir.path().join("kiln.yaml");
        assert_eq!(pipeline_file(None, &missing), None);
        let t = resolved(&place(None, None), &missing);
        assert_eq!((t.namespace.as_str(), t.context), ("kiln", None));
        assert!(!t.incluster);
        let t = resolved(&place(None, Some("flag")), &missing);
        assert_eq!(t.namespace, "flag");
    }

    #[test]
    fn the_default_pipeline_file_is_read_when_there_and_flags_win() {
        let dir = tempdir();
        let file = write(dir.path(), PIPELINE);
        assert_eq!(pipeline_file(None, &file), Some(file.clone()));
        let t = resolved(&place(None, None), &file);
        assert_eq!(t.namespace, "from-file");
        assert_eq!(t.context.as_deref(), Some("file-context"));
        let t = resolved(&place(None, Some("flag")), &file);
        assert_eq!(t.namespace, "flag");
    }

    #[test]
    fn a_pipeline_file_given_must_be_there_and_valid() {
        let dir = tempdir();
        let elsewhere = dir.path().join("absent.yaml");
        let file = write(dir.path(), PIPELINE);
        let t = resolved(&place(Some(&file), None), &elsewhere);
        assert_eq!(t.namespace, "from-file");
        let err = resolve(&place(Some(&elsewhere), None), &file)
            .map(|_| "resolved")
            .unwrap_err();
        assert!(
            format!("{err:#}").contains("cannot read pipeline file"),
            "{err:#}"
        );
        let bad = write(dir.path(), "name: train\nsteps: 3\n");
        let out = resolve(&place(Some(&bad), None), &elsewhere);
        assert!(matches!(out, Ok(None)), "{out:?}");
    }
}
