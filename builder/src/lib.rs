//! kiln-builder: turns a pipeline's image settings into layered OCI images,
//! daemonless: plan, layers, cache, image, push.

// A test reads best as one list of steps; the 120-line limit is for the
// product's code.
#![cfg_attr(test, allow(clippy::too_many_lines))]

pub mod add;
pub mod build;
mod code;
pub mod config;
pub mod copy;
pub mod dfbuild;
pub mod dockerfile;
mod error;
pub mod exec;
pub mod fetch;
mod finish;
pub mod git;
pub mod image;
pub mod keys;
pub mod layer;
pub mod listing;
pub mod options;
pub mod output;
pub mod plan;
pub mod progress;
pub mod push;
pub mod ready;
pub mod record;
pub mod registry;
pub mod report;
pub mod single_layer;
pub mod store;

pub use error::BuildError;
pub use options::{BuildOptions, Output};
pub use report::{BuildReport, ImageReport, LayerReport};
