//! kiln-builder: turns a pipeline's image settings into layered OCI images,
//! daemonless: plan, layers, cache, image, push.

// A test reads best as one list of steps; the 120-line limit is for the
// product's code.
#![cfg_attr(test, allow(clippy::too_many_lines))]

mod add;
pub mod build;
mod code;
mod config;
mod copy;
pub mod dfbuild;
mod dockerfile;
mod error;
pub mod exec;
mod fetch;
mod finish;
mod git;
pub mod image;
pub mod keys;
pub mod layer;
mod listing;
mod options;
mod output;
pub mod plan;
pub mod progress;
mod push;
pub mod ready;
mod record;
pub mod registry;
mod report;
pub mod single_layer;
pub mod store;

pub use error::BuildError;
pub use options::{BuildOptions, Output};
pub use report::{BuildReport, ImageReport, LayerReport};
