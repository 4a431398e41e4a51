//! kiln-runner: runs a pipeline's step DAG. The library holds the parts the
//! local and Kubernetes backends share — starting with the pure scheduler —
//! so they are tested without a sandbox or a cluster; the `kiln` binary sits
//! on top.

pub mod driver;
pub mod k8s;
pub mod local;
pub mod records;
pub mod scheduler;
