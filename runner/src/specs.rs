//! The pipeline's steps as the scheduler sees them: one translation from
//! `kiln.yaml` to [`StepSpec`]s, shared by the local run and the
//! Kubernetes orchestrator so that both walk the same DAG. Where the two
//! backends really differ (what a retry is), the difference is a
//! parameter.

use kiln_pipeline::Pipeline;

use crate::scheduler::{RetryPolicy, StepSpec};

/// Which settings give a step its retries. The backends differ on purpose,
/// and each keeps its meaning.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Retries {
    /// Only a step with its own `retry` block is retried (with its
    /// effective retry settings). A local run has no pods, so the
    /// orchestrator's `pod_failure_*` settings, which stand in for a
    /// missing `retry` block, mean nothing there: without a `retry` block a
    /// failure is final.
    OwnBlockOnly,
    /// Every step gets its effective retry settings, where the
    /// `pod_failure_*` settings stand in for a missing `retry` block: a
    /// Kubernetes step fails as a pod, which those settings are about.
    Effective,
}

/// The names of the pipeline's steps, in declaration order: the indices
/// the scheduler and the backends share.
pub fn step_names(pipeline: &Pipeline) -> Vec<String> {
    pipeline
        .steps()
        .iter()
        .map(|s| s.name.value.clone())
        .collect()
}

/// The indices (into [`step_names`]) of step `i`'s upstream steps.
pub fn upstream(pipeline: &Pipeline, names: &[String], i: usize) -> Vec<usize> {
    pipeline.steps()[i]
        .upstream
        .iter()
        .filter_map(|u| names.iter().position(|n| *n == u.value))
        .collect()
}

/// Every step as the scheduler needs it: its name, its upstream steps and
/// its retries, read as `retries` says.
pub fn step_specs(pipeline: &Pipeline, retries: Retries) -> Vec<StepSpec> {
    let names = step_names(pipeline);
    names
        .iter()
        .enumerate()
        .map(|(i, n)| StepSpec {
            name: n.clone(),
            upstream: upstream(pipeline, &names, i),
            retry: retry_policy(pipeline, n, retries),
        })
        .collect()
}

/// A step's retries, read as `retries` says; none when the step's
/// settings cannot be resolved.
fn retry_policy(pipeline: &Pipeline, step: &str, retries: Retries) -> RetryPolicy {
    let counts = match retries {
        Retries::OwnBlockOnly => pipeline.step(step).is_ok_and(|s| s.retry.is_some()),
        Retries::Effective => true,
    };
    match pipeline.effective(step) {
        Ok(e) if counts => RetryPolicy {
            max_retries: e.retry.max_retries,
            delay: kiln_pipeline::time::duration_from_secs(e.retry.delay_seconds),
            backoff: e.retry.backoff,
        },
        _ => RetryPolicy::default(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pipeline(text: &str) -> Pipeline {
        Pipeline::parse(text, "kiln.yaml").unwrap_or_else(|e| panic!("{e}"))
    }

    #[test]
    fn upstream_steps_are_indices_in_declaration_order() {
        let p = pipeline(
            "name: p\nsteps:\n  - name: a\n    command: [true]\n  - name: b\n    command: [true]\n    upstream: [a]\n",
        );
        let specs = step_specs(&p, Retries::Effective);
        assert_eq!(specs[0].upstream, Vec::<usize>::new());
        assert_eq!(specs[1].upstream, vec![0]);
        assert_eq!(specs[1].name, "b");
    }

    #[test]
    fn a_step_without_its_own_retry_block_is_retried_only_by_effective_settings() {
        let p = pipeline(
            "name: p\nsteps:\n  - name: a\n    command: [true]\n  - name: b\n    command: [true]\n    retry:\n      max_retries: 2\n",
        );
        let own = step_specs(&p, Retries::OwnBlockOnly);
        assert_eq!(own[0].retry, RetryPolicy::default());
        assert_eq!(own[1].retry.max_retries, 2);
        let effective = step_specs(&p, Retries::Effective);
        assert_eq!(effective[1].retry.max_retries, 2);
        let default = p.effective("a").unwrap_or_else(|e| panic!("{e}")).retry;
        assert_eq!(effective[0].retry.max_retries, default.max_retries);
    }
}
