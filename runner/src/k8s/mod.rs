//! The Kubernetes backend: names and manifests (pure), the connection, and
//! the in-cluster orchestrator that runs a pipeline one pod per step.

pub mod apply;
pub mod backend;
pub mod connect;
pub mod job;
pub mod names;
pub mod observe;
pub mod orchestrator;
pub mod orchestrator_image;
pub mod plan;
pub mod pod;
pub mod pull_secret;
pub mod records;
pub mod runs;
pub mod schedules;
pub mod status;
pub mod submit;
