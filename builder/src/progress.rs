//! Build events: the builder says what it does, the caller decides how to
//! show it (progress bars on a terminal, plain lines in CI, JSON for
//! machines). Keeping display out of the builder keeps it testable.

use serde::Serialize;

/// What happened to one layer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum LayerStatus {
    /// Taken from the cache: no work, no upload.
    Reused,
    /// Built now.
    Built,
    /// A layer of the parent image.
    Parent,
}

/// What happened to one blob on its way to the registry.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum BlobStatus {
    /// The registry had it already (HEAD).
    Present,
    /// Mounted from another repository of the same registry.
    Mounted,
    /// Uploaded.
    Uploaded,
}

/// One thing the builder did.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "event", rename_all = "snake_case")]
pub enum Event {
    /// An image build begins.
    ImageStarted {
        /// Image name in the plan.
        image: String,
        /// Layers kiln adds.
        layers: usize,
    },
    /// A layer is done.
    Layer {
        /// Image name in the plan.
        image: String,
        /// Layer label.
        label: String,
        /// Reused or built.
        status: LayerStatus,
        /// Compressed digest.
        digest: String,
        /// Compressed size.
        size: u64,
        /// Why it was rebuilt, when it was.
        reason: Option<String>,
    },
    /// A blob reached the registry (or was already there).
    Blob {
        /// Image name in the plan.
        image: String,
        /// The blob.
        digest: String,
        /// Its size.
        size: u64,
        /// How it got there.
        status: BlobStatus,
    },
    /// An image is complete.
    ImageDone {
        /// Image name in the plan.
        image: String,
        /// Where it was written.
        reference: String,
        /// Manifest digest.
        digest: String,
    },
    /// A line a layer's command printed.
    Output {
        /// Image name in the plan.
        image: String,
        /// Layer label.
        layer: String,
        /// The line.
        line: String,
    },
    /// Something the user should know but that does not stop the build.
    Warning {
        /// The warning.
        message: String,
    },
}

/// Receives build events. Implementations must be cheap: they are called on
/// the build's path.
pub trait Progress: Send + Sync {
    /// One event.
    fn event(&self, event: Event);
}

/// Discards events.
#[derive(Debug, Default)]
pub struct Silent;

impl Progress for Silent {
    fn event(&self, _: Event) {}
}

/// Keeps events in memory, for tests and `--json`.
#[derive(Debug, Default)]
pub struct Recorder(std::sync::Mutex<Vec<Event>>);

impl Recorder {
    /// The events so far.
    pub fn events(&self) -> Vec<Event> {
        self.0.lock().map(|e| e.clone()).unwrap_or_default()
    }
}

impl Progress for Recorder {
    fn event(&self, event: Event) {
        if let Ok(mut events) = self.0.lock() {
            events.push(event);
        }
    }
}
