//! Why a build failed, one variant per kind of cause, each naming the image
//! and the layer it was at.

use std::io;
use std::path::PathBuf;

use crate::exec::ExecError;
use crate::image::ImageError;
use crate::layer::LayerError;
use crate::plan::LayerPlanError;
use crate::registry::RegistryFailure;
use crate::store::StoreError;

/// Why a build failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum BuildError {
    /// Planning failed.
    #[error(transparent)]
    Plan(#[from] LayerPlanError),
    /// A registry operation failed.
    #[error("image {image}: {action}: {source}")]
    Registry {
        /// The image being built.
        image: String,
        /// What kiln was doing.
        action: String,
        /// The registry's error.
        source: RegistryFailure,
    },
    /// Building a layer failed.
    #[error("image {image}: {layer} layer: {source}")]
    Layer {
        /// The image.
        image: String,
        /// The layer.
        layer: String,
        /// Why.
        source: LayerError,
    },
    /// A layer that runs commands failed.
    #[error("image {image}: {layer} layer: {source}")]
    Exec {
        /// The image.
        image: String,
        /// The layer.
        layer: String,
        /// Why.
        source: ExecError,
    },
    /// The content store failed.
    #[error("layer cache: {0}")]
    Store(#[from] StoreError),
    /// The image could not be assembled.
    #[error("image {image}: {source}")]
    Image {
        /// The image.
        image: String,
        /// Why.
        source: ImageError,
    },
    /// Nowhere to push.
    #[error(
        "image {image} has no target_repository: set settings.docker.target_repository in the pipeline, or build with --output oci:DIR or --output tar:FILE"
    )]
    NoTarget {
        /// The image.
        image: String,
    },
    /// A `dockerfile` parent needs a repository to push it to.
    #[error(
        "image {image} names a dockerfile: its image is pushed next to the step image, so set settings.docker.target_repository"
    )]
    DockerfileUnavailable {
        /// The image.
        image: String,
    },
    /// A Dockerfile is wrong, or one of its steps failed.
    #[error("{message}")]
    Dockerfile {
        /// The Dockerfile.
        file: PathBuf,
        /// What went wrong, with the line (`Dockerfile:7: ...`).
        message: String,
    },
    /// An archive holds one image.
    #[error(
        "--output tar:FILE holds one image but the plan has {count}; use --step to pick one, or --output oci:DIR"
    )]
    ArchiveHoldsOneImage {
        /// How many images were planned.
        count: usize,
    },
    /// Writing output failed.
    #[error("writing {}: {source}", path.display())]
    Output {
        /// The output path.
        path: PathBuf,
        /// Why.
        source: io::Error,
    },
}
