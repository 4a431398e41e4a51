#![allow(dead_code)] // used by the Kubernetes commands as they land
//! What the Kubernetes commands share: which cluster and namespace, from
//! the pipeline file's connection settings and the command line.

use kiln_pipeline::KubernetesSettings;
use kiln_pipeline::Pipeline;
use kiln_runner::k8s::connect::Target;

use crate::cli::KubeArgs;

/// The connection target: flags over the pipeline's run-wide settings over
/// kiln's defaults (namespace `kiln`, the kubeconfig's current context).
pub(super) fn target(pipeline: Option<&Pipeline>, args: &KubeArgs) -> Target {
    let settings = pipeline.map_or_else(KubernetesSettings::defaults, Pipeline::kubernetes);
    let incluster = settings.incluster.as_ref().is_some_and(|v| v.value);
    Target {
        incluster: incluster && args.context.is_none(),
        context: args.context.clone().or_else(|| {
            settings
                .kubernetes_context
                .as_ref()
                .map(|c| c.value.clone())
        }),
        namespace: args
            .namespace
            .clone()
            .or_else(|| {
                settings
                    .kubernetes_namespace
                    .as_ref()
                    .map(|n| n.value.clone())
            })
            .unwrap_or_else(|| "kiln".into()),
    }
}

/// An async runtime for one command's API calls.
pub(super) fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    use anyhow::Context as _;
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .context("starting the async runtime")
}
