//! Writing a finished image out: config and manifest bytes, then a push
//! to the registry (parent blobs mounted, kiln's uploaded) or an OCI layout
//! or archive. Shared by pipeline images and Dockerfile builds.

use std::collections::BTreeMap;
use std::str::FromStr as _;

use serde_json::Value;

use crate::error::BuildError;
use crate::image::{self, AddedLayer, Descriptor, Format};
use crate::options::{BuildOptions, Output};
use crate::output::{self, Blob, BlobData, ImageBlobs};
use crate::progress::{Event, Progress};
use crate::registry::{Registry, RegistryError, ResolvedImage};
use crate::store::{self, Store};

/// An image ready to be written.
pub(crate) struct Finished<'a> {
    /// The image's name in messages.
    pub name: &'a str,
    /// The base whose layers come first (mounted from its repository when
    /// pushing to the same registry); no layers for `scratch`.
    pub base: &'a ResolvedImage,
    /// The layers kiln added, in order, in the content store.
    pub added: &'a [AddedLayer],
    /// The final config.
    pub config: &'a Value,
    /// Repository to push to (registry output).
    pub target: Option<&'a str>,
    /// Tag to push or to name in the layout.
    pub tag: &'a str,
}

/// Where the image went.
pub(crate) struct Written {
    /// `repo:tag`, `oci:DIR:tag` or `oci-archive:FILE:tag`.
    pub reference: String,
    /// `repo@digest` when pushed.
    pub pinned: Option<String>,
    /// The manifest digest.
    pub digest: String,
    /// Blobs uploaded.
    pub uploaded: usize,
}

fn registry_err(image: &str, action: String) -> impl FnOnce(RegistryError) -> BuildError {
    let image = image.to_string();
    move |source| BuildError::Registry {
        image,
        action,
        source,
    }
}

/// Writes `f` where `opts.output` says; reports `ImageDone`.
pub(crate) async fn write_image<R: Registry>(
    registry: &R,
    store: &Store,
    f: &Finished<'_>,
    opts: &BuildOptions,
    progress: &dyn Progress,
) -> Result<Written, BuildError> {
    let config_bytes = image::canonical_bytes(f.config);
    let config_type = match opts.format {
        Format::Oci => image::media::OCI_CONFIG,
        Format::Docker => image::media::DOCKER_CONFIG,
    };
    let config_desc = Descriptor::new(
        config_type.into(),
        config_bytes.len() as u64,
        store::Digest::of(&config_bytes).oci(),
    );
    let mut layer_descs: Vec<Descriptor> = f.base.layers.clone();
    layer_descs.extend(f.added.iter().map(|a| a.blob.clone()));
    let manifest = image::manifest(opts.format, &config_desc, &layer_descs, &BTreeMap::new())
        .map_err(|source| BuildError::Image {
            image: f.name.to_string(),
            source,
        })?;
    let manifest_bytes = image::canonical_bytes(&manifest);
    let manifest_digest = image::sha256_digest(&manifest_bytes);
    let manifest_type = manifest["mediaType"]
        .as_str()
        .unwrap_or(image::media::OCI_MANIFEST)
        .to_string();

    let (reference, pinned, uploaded) = match &opts.output {
        Output::Registry => {
            let repo = f.target.unwrap_or_default();
            let uploaded = crate::push::push(
                registry,
                store,
                f.name,
                repo,
                f.base,
                f.added,
                (&config_desc, &config_bytes),
                opts.concurrency,
                progress,
            )
            .await?;
            let digest = registry
                .push_manifest(repo, f.tag, &manifest_type, &manifest_bytes)
                .await
                .map_err(registry_err(
                    f.name,
                    format!("pushing the manifest to {repo}:{}", f.tag),
                ))?;
            debug_assert_eq!(digest, manifest_digest);
            (
                format!("{repo}:{}", f.tag),
                Some(format!("{repo}@{manifest_digest}")),
                uploaded,
            )
        }
        Output::OciLayout(dir) | Output::Archive(dir) => {
            // Parent layers must be local for a self-contained layout.
            for layer in &f.base.layers {
                crate::push::fetch_blob(registry, store, &f.base.repository, layer)
                    .await
                    .map_err(registry_err(
                        f.name,
                        format!("downloading parent layer {}", layer.digest()),
                    ))?;
            }
            let mut blobs = Vec::new();
            for desc in &layer_descs {
                let digest =
                    store::Digest::from_str(desc.digest().as_ref()).map_err(BuildError::Store)?;
                blobs.push(Blob {
                    descriptor: desc.clone(),
                    data: BlobData::File(store.path(&digest)),
                });
            }
            blobs.push(Blob {
                descriptor: config_desc.clone(),
                data: BlobData::Bytes(config_bytes.clone()),
            });
            let image_blobs = ImageBlobs {
                blobs,
                manifest: Blob {
                    descriptor: Descriptor::new(
                        manifest_type.as_str().into(),
                        manifest_bytes.len() as u64,
                        store::Digest::of(&manifest_bytes).oci(),
                    ),
                    data: BlobData::Bytes(manifest_bytes.clone()),
                },
                tag: f.tag.to_string(),
            };
            let written = if let Output::Archive(file) = &opts.output {
                output::write_archive(file, &image_blobs)
                    .map(|()| format!("oci-archive:{}:{}", file.display(), f.tag))
            } else {
                output::write_layout(dir, &image_blobs)
                    .map(|()| format!("oci:{}:{}", dir.display(), f.tag))
            };
            let reference = written.map_err(|source| BuildError::Output {
                path: dir.clone(),
                source,
            })?;
            (reference, None, 0)
        }
    };
    progress.event(Event::ImageDone {
        image: f.name.to_string(),
        reference: reference.clone(),
        digest: manifest_digest.clone(),
    });
    progress.event(Event::ImageDone {
        image: f.name.to_string(),
        reference: reference.clone(),
        digest: manifest_digest.clone(),
    });
    Ok(Written {
        reference,
        pinned,
        digest: manifest_digest,
        uploaded,
    })
}
