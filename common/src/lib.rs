//! kiln-common: what kiln's builder and runner share — the pipeline file model
//! (`kiln.yaml`), its validation, the step DAG and the naming rules of the
//! systems kiln talks to (OCI references, Kubernetes labels and quantities).

pub mod cron;
pub mod dag;
pub mod distribution;
pub mod k8s;
pub mod pipeline;
pub mod reference;
pub mod sandbox;
pub mod snapshot;
pub mod unpack;

pub use pipeline::{Diagnostic, Pipeline, PipelineError};
