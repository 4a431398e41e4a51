//! How to build and where the images go: what the command line and the
//! pipeline's settings become before any work starts.

use std::path::PathBuf;

use crate::image::Format;
use crate::layer::Compression;
use crate::registry::TargetPlatform;

/// Where built images go.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum Output {
    /// Pushed to each image's `target_repository`.
    #[default]
    Registry,
    /// Written into an OCI image layout directory.
    OciLayout(PathBuf),
    /// Written as an OCI archive (one image).
    Archive(PathBuf),
}

impl std::str::FromStr for Output {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s.split_once(':') {
            _ if s == "registry" => Ok(Output::Registry),
            Some(("oci", dir)) if !dir.is_empty() => Ok(Output::OciLayout(dir.into())),
            Some(("tar", file)) if !file.is_empty() => Ok(Output::Archive(file.into())),
            _ => Err(format!(
                "invalid output {s:?}: expected registry, oci:DIR or tar:FILE"
            )),
        }
    }
}

/// How to build.
#[derive(Debug, Clone)]
pub struct BuildOptions {
    /// Build only the image this step runs in.
    pub only_step: Option<String>,
    /// Target platform.
    pub platform: TargetPlatform,
    /// OCI or Docker media types.
    pub format: Format,
    /// Layer compression.
    pub compression: Compression,
    /// Where images go.
    pub output: Output,
    /// The content store and cache index.
    pub cache_dir: PathBuf,
    /// Where build records are kept.
    pub data_dir: PathBuf,
    /// Fixed timestamp for files and history (`SOURCE_DATE_EPOCH`), else 0.
    pub source_date_epoch: u64,
    /// Blob uploads at once.
    pub concurrency: usize,
    /// Build secrets for commands (`--secret`).
    pub secrets: Vec<crate::exec::Secret>,
    /// The network commands see (`--network`).
    pub network: kiln_rootfs::sandbox::Network,
}

impl Default for BuildOptions {
    fn default() -> Self {
        Self {
            only_step: None,
            platform: TargetPlatform::default(),
            format: Format::Oci,
            compression: Compression::default(),
            output: Output::Registry,
            cache_dir: PathBuf::from(".kiln-cache"),
            data_dir: PathBuf::from(".kiln-data"),
            source_date_epoch: 0,
            concurrency: 4,
            secrets: Vec::new(),
            network: kiln_rootfs::sandbox::Network::Host,
        }
    }
}
