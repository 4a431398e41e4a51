//! The local backend, kiln's embedded default: each step runs from its
//! image in the rootless sandbox on this machine, on a private overlay over
//! the image's shared root, with the run directory bound into every step.

pub mod backend;
pub mod image;
pub mod leftovers;
pub mod orchestrate;

pub use backend::{LineSink, LocalBackend, LocalStep, RUN_DIR, RunPaths, StepLaunch};
