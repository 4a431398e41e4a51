use std::path::PathBuf;

use kiln_pipeline::Pipeline;

use super::*;

fn testdata(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../testdata/k8s")
        .join(name)
}

fn pipeline() -> Pipeline {
    crate::pipeline_file::load(&testdata("orchestrator.yaml")).unwrap_or_else(|e| panic!("{e}"))
}

fn plan(run: Option<&str>) -> RunPlan {
    RunPlan {
        run_id: run.map(Into::into),
        file: "kiln.yaml".into(),
        pipeline: "name: golden\n".into(),
        images: [(
            "train".to_string(),
            "127.0.0.1:5000/kiln/golden@sha256:00".to_string(),
        )]
        .into(),
        namespace: "ml".into(),
        pull_secrets: vec!["kiln-pull-127-0-0-1-5000".into()],
    }
}

fn golden(name: &str, text: &str) {
    let golden = testdata(name);
    if std::env::var_os("KILN_UPDATE_GOLDEN").is_some() {
        std::fs::write(&golden, text).unwrap();
    }
    let want = std::fs::read_to_string(&golden).unwrap();
    assert_eq!(text, want, "the manifest differs from {}", golden.display());
}

/// Set KILN_UPDATE_GOLDEN=1 to rewrite the golden files after a
/// deliberate change, and review the diff.
#[test]
fn the_orchestrator_job_matches_the_golden_manifest() {
    let p = pipeline();
    let settings = p.kubernetes();
    let plan = plan(Some("c1cc3b6f"));
    let job = orchestrator_job(&OrchestratorJob {
        pipeline: p.name(),
        plan: &plan,
        image: "127.0.0.1:5000/kiln/golden@sha256:11",
        settings: &settings,
        service_account: "kiln-service-account",
    })
    .unwrap();
    let text = serde_json::to_string_pretty(&job).unwrap() + "\n";
    golden("orchestrator-job.golden.json", &text);
    // What the orchestrator relies on, said outright.
    let spec = job.spec.unwrap();
    assert_eq!(spec.backoff_limit, Some(ORCHESTRATOR_RESTARTS + 2));
    let pod = spec.template.spec.unwrap();
    assert_eq!(pod.restart_policy.as_deref(), Some("Never"));
    let env = pod.containers[0].env.clone().unwrap();
    let plan_env = env.iter().find(|e| e.name == PLAN_ENV).unwrap();
    assert_eq!(
        RunPlan::from_env_value(plan_env.value.as_deref()).unwrap(),
        plan
    );
    assert!(
        env.iter()
            .any(|e| e.name == POD_NAME_ENV && e.value_from.is_some())
    );
    assert_eq!(
        pod.containers[0].security_context, None,
        "privileged is for steps only"
    );
    // The run's pull secrets: the orchestrator's image is in the same
    // registry as the steps'.
    let secrets: Vec<String> = pod
        .image_pull_secrets
        .unwrap_or_default()
        .into_iter()
        .map(|s| s.name)
        .collect();
    assert_eq!(secrets, ["kiln-pull-127-0-0-1-5000"]);
}

#[test]
fn the_schedule_cronjob_matches_the_golden_manifest() {
    let p = pipeline();
    let settings = p.kubernetes();
    let plan = plan(None);
    let s = p.model().schedule.clone().unwrap();
    let cron = orchestrator_cronjob(
        &OrchestratorJob {
            pipeline: p.name(),
            plan: &plan,
            image: "127.0.0.1:5000/kiln/golden@sha256:11",
            settings: &settings,
            service_account: "kiln-service-account",
        },
        &CronSpec {
            cron: s.cron_expression.value.clone(),
            concurrency: s.concurrency_policy,
            starting_deadline_seconds: s.starting_deadline_seconds.map(|v| v.value),
            successful_jobs_history_limit: None,
            failed_jobs_history_limit: None,
        },
    )
    .unwrap();
    let text = serde_json::to_string_pretty(&cron).unwrap() + "\n";
    golden("orchestrator-cronjob.golden.json", &text);
    let labels = cron.metadata.labels.unwrap();
    assert!(!labels.contains_key(LABEL_RUN), "a schedule has no run id");
    assert_eq!(cron.spec.unwrap().successful_jobs_history_limit, Some(5));
}

#[test]
fn job_names_keep_the_run_id_whatever_the_pipeline_name() {
    let long = job_name(&"x".repeat(80), "c1cc3b6f");
    assert!(long.len() <= 63 && long.ends_with("-c1cc3b6f"), "{long}");
    assert_eq!(
        job_name("Quick_Start", "0a1b2c3d"),
        "kiln-quick-start-0a1b2c3d"
    );
    assert!(cronjob_name(&"y".repeat(80)).len() <= 52);
}
