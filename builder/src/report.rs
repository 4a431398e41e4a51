//! What a build produced: the report the command line prints (and `--json`
//! writes), and the layers on their way into an image.

use serde::Serialize;

use crate::image::AddedLayer;
use crate::progress::{Event, LayerStatus};
use crate::record::LayerRecord;

/// What a build did.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct BuildReport {
    /// The pipeline.
    pub pipeline: String,
    /// Each image built.
    pub images: Vec<ImageReport>,
}

/// One image of a build.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ImageReport {
    /// Plan name.
    pub name: String,
    /// Steps it serves.
    pub steps: Vec<String>,
    /// Where it was written.
    pub reference: String,
    /// Manifest digest.
    pub digest: String,
    /// Parent, pinned by digest.
    pub parent: String,
    /// kiln's layers.
    pub layers: Vec<LayerReport>,
    /// Blobs uploaded to the registry.
    pub uploaded: usize,
}

/// One layer of a build.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct LayerReport {
    /// Label.
    pub label: String,
    /// Reused or built.
    pub status: LayerStatus,
    /// Compressed digest.
    pub digest: String,
    /// Compressed size.
    pub size: u64,
    /// Why it was built.
    pub reason: Option<String>,
}

impl LayerReport {
    /// The progress line of the layer: it says what its report says.
    pub(crate) fn event(&self, image: &str) -> Event {
        Event::Layer {
            image: image.to_string(),
            label: self.label.clone(),
            status: self.status,
            digest: self.digest.clone(),
            size: self.size,
            reason: self.reason.clone(),
        }
    }
}

/// A layer ready to go into the image.
pub(crate) struct BuiltLayer {
    pub(crate) added: AddedLayer,
    pub(crate) record: LayerRecord,
}
