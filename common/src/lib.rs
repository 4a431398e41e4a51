//! kiln-common: what kiln's builder and runner share — the pipeline file model
//! (`kiln.yaml`), its validation, the step DAG and the naming rules of the
//! systems kiln talks to (OCI references, Kubernetes labels and quantities).

pub mod cron;
pub mod dag;
pub mod distribution;
pub mod k8s;
pub mod pipeline;
pub mod private_dir;
pub mod reference;
pub mod sandbox;
pub mod snapshot;
pub mod time;
pub mod unpack;
pub mod xattr;

pub use pipeline::{Diagnostic, Pipeline, PipelineError};

/// An error and its causes on one line, each said once: many errors fold
/// their source into their own message already.
pub fn error_chain(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        let s_text = s.to_string();
        if !text.contains(&s_text) {
            text.push_str(": ");
            text.push_str(&s_text);
        }
        source = s.source();
    }
    text
}
