//! An image made ready to run: resolved in its registry, its layers in the
//! local store, unpacked once into a shared root (one per layer chain and id
//! mapping), and its config read for env, user and working directory. The
//! local runner and the test cluster's node both start containers from it,
//! so it lives with the store and the registry, not in either of them.

use std::str::FromStr as _;

use kiln_rootfs::unpack::{LayerBlob, RootCache, UnpackOptions};

use crate::config::ConfigView;
use crate::registry::{Registry, RegistryFailure, TargetPlatform};
use crate::store::{Digest, Store};

/// Why an image could not be made ready; each names the image.
#[derive(Debug, thiserror::Error)]
pub enum ReadyError {
    /// The registry could not resolve the reference.
    #[error("cannot pull image {reference}: {source}")]
    Resolve {
        /// The image.
        reference: String,
        /// The registry's reason.
        source: RegistryFailure,
    },
    /// The config and the manifest disagree on the number of layers.
    #[error("image {reference}: its config lists {diff_ids} diff_ids for {layers} layers")]
    LayerCount {
        /// The image.
        reference: String,
        /// `rootfs.diff_ids` in the config.
        diff_ids: usize,
        /// Layers in the manifest.
        layers: usize,
    },
    /// A layer could not be fetched into the store.
    #[error("cannot pull layer {digest} of {reference}: {source}")]
    Layer {
        /// The image.
        reference: String,
        /// The layer's digest as the manifest gives it.
        digest: String,
        /// Why.
        source: RegistryFailure,
    },
    /// The layers could not be unpacked.
    #[error("unpacking image {reference}: {source}")]
    Unpack {
        /// The image.
        reference: String,
        /// Why.
        source: kiln_rootfs::unpack::UnpackError,
    },
}

/// An image ready to run steps in.
#[derive(Debug, Clone)]
pub struct ReadyImage {
    /// Its unpacked root.
    pub rootfs: std::path::PathBuf,
    /// The config's `Env`.
    pub env: Vec<(String, String)>,
    /// The config's `User` (name or uid[:gid]; empty is root).
    pub user: String,
    /// The config's `WorkingDir` (`/` when unset).
    pub workdir: String,
    /// The config's `Entrypoint` (empty when unset): a Kubernetes container
    /// without `command` runs it.
    pub entrypoint: Vec<String>,
    /// The config's `Cmd` (empty when unset): the arguments of a container
    /// that sets neither `command` nor `args`.
    pub cmd: Vec<String>,
}

/// Resolves `reference` (pinned by digest) and unpacks it; the error is a
/// sentence for the user, naming the image and the registry's reason.
pub async fn ready<R: Registry>(
    registry: &R,
    store: &Store,
    roots: &RootCache,
    reference: &str,
    platform: &TargetPlatform,
    unpack: &UnpackOptions,
) -> Result<ReadyImage, ReadyError> {
    let image = registry
        .resolve(reference, platform)
        .await
        .map_err(|source| ReadyError::Resolve {
            reference: reference.to_string(),
            source,
        })?;
    let config = ConfigView::new(&image.config);
    let diff_ids: Vec<String> = config.diff_ids();
    if diff_ids.len() != image.layers.len() {
        return Err(ReadyError::LayerCount {
            reference: reference.to_string(),
            diff_ids: diff_ids.len(),
            layers: image.layers.len(),
        });
    }
    let mut blobs = Vec::new();
    for (layer, diff_id) in image.layers.iter().zip(diff_ids) {
        let layer_error = |source: RegistryFailure| ReadyError::Layer {
            reference: reference.to_string(),
            digest: layer.digest().to_string(),
            source,
        };
        crate::push::fetch_blob(registry, store, &image.repository, layer)
            .await
            .map_err(layer_error)?;
        let digest =
            Digest::from_str(layer.digest().as_ref()).map_err(|e| layer_error(e.into()))?;
        blobs.push(LayerBlob {
            path: store.path(&digest),
            media_type: Some(layer.media_type().to_string()),
            diff_id,
        });
    }
    let root = roots
        .get_or_unpack(&blobs, unpack)
        .map_err(|source| ReadyError::Unpack {
            reference: reference.to_string(),
            source,
        })?;
    Ok(ReadyImage {
        rootfs: root.rootfs,
        env: config.env_pairs(),
        user: config.user().unwrap_or_default().to_string(),
        workdir: config
            .working_dir()
            .filter(|w| w.starts_with('/'))
            .unwrap_or("/")
            .to_string(),
        entrypoint: config.entrypoint(),
        cmd: config.cmd(),
    })
}

#[cfg(test)]
mod tests {
    #[test]
    fn env_is_read_from_the_config() {
        let config =
            serde_json::json!({"config": {"Env": ["PATH=/usr/bin:/bin", "A=b=c", "junk"]}});
        assert_eq!(
            crate::config::ConfigView::new(&config).env_pairs(),
            vec![
                ("PATH".to_string(), "/usr/bin:/bin".to_string()),
                ("A".to_string(), "b=c".to_string())
            ]
        );
    }
}
