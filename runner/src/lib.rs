//! kiln-runner: runs a pipeline's step DAG. The library holds the parts the
//! local and Kubernetes backends share — starting with the pure scheduler —
//! so they are tested without a sandbox or a cluster; the `kiln` binary sits
//! on top.

// A test reads best as one list of steps; the 120-line limit is for the
// product's code.
#![cfg_attr(test, allow(clippy::too_many_lines))]

mod console;
mod driver;
pub mod k8s;
pub mod local;
pub mod pipeline_file;
pub mod records;
pub mod scheduler;
pub mod specs;
