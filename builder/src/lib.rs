//! kiln-builder: turns a pipeline's image settings into layered OCI images,
//! daemonless: plan, layers, cache, image, push.

pub mod image;
pub mod output;
pub mod plan;
pub mod record;
