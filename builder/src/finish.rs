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
use crate::registry::{Registry, RegistryFailure, ResolvedImage};
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

/// A registry failure, saying which image and what kiln was doing.
pub(crate) fn registry_err(
    image: &str,
    action: String,
) -> impl FnOnce(RegistryFailure) -> BuildError {
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
    let encoded = encode(f, opts)?;
    let (reference, pinned, uploaded) = match &opts.output {
        Output::Registry => push_image(registry, store, f, &encoded, opts, progress).await?,
        Output::OciLayout(dir) | Output::Archive(dir) => {
            // Parent layers must be local for a self-contained layout.
            fetch_base_layers(registry, store, f).await?;
            let image_blobs = image_blobs(store, f, &encoded)?;
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
    let manifest_digest = encoded.manifest_digest;
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

/// The image as the bytes every output writes: its config and manifest,
/// with the descriptors that name the config and the layers.
struct Encoded {
    config_desc: Descriptor,
    config_bytes: Vec<u8>,
    layer_descs: Vec<Descriptor>,
    manifest_bytes: Vec<u8>,
    manifest_digest: String,
    manifest_type: String,
}

/// Config and manifest bytes, the same whichever output takes them.
#[allow(clippy::result_large_err)] // the builder's one error type
fn encode(f: &Finished<'_>, opts: &BuildOptions) -> Result<Encoded, BuildError> {
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
    Ok(Encoded {
        config_desc,
        config_bytes,
        layer_descs,
        manifest_bytes,
        manifest_digest,
        manifest_type,
    })
}

/// Registry output: the blobs pushed (the base's mounted from its
/// repository), then the manifest under the tag. Returns the reference,
/// the pinned reference and how many blobs were uploaded.
async fn push_image<R: Registry>(
    registry: &R,
    store: &Store,
    f: &Finished<'_>,
    e: &Encoded,
    opts: &BuildOptions,
    progress: &dyn Progress,
) -> Result<(String, Option<String>, usize), BuildError> {
    let repo = f.target.unwrap_or_default();
    let uploaded = crate::push::push(
        registry,
        store,
        f.name,
        repo,
        f.base,
        f.added,
        (&e.config_desc, &e.config_bytes),
        opts.concurrency,
        progress,
    )
    .await?;
    let digest = registry
        .push_manifest(repo, f.tag, &e.manifest_type, &e.manifest_bytes)
        .await
        .map_err(registry_err(
            f.name,
            format!("pushing the manifest to {repo}:{}", f.tag),
        ))?;
    debug_assert_eq!(digest, e.manifest_digest);
    Ok((
        format!("{repo}:{}", f.tag),
        Some(format!("{repo}@{}", e.manifest_digest)),
        uploaded,
    ))
}

/// The base's layers, downloaded into the store: a layout or an archive
/// holds every blob of the image.
async fn fetch_base_layers<R: Registry>(
    registry: &R,
    store: &Store,
    f: &Finished<'_>,
) -> Result<(), BuildError> {
    for layer in &f.base.layers {
        crate::push::fetch_blob(registry, store, &f.base.repository, layer)
            .await
            .map_err(registry_err(
                f.name,
                format!("downloading parent layer {}", layer.digest()),
            ))?;
    }
    Ok(())
}

/// Every blob of a layout or archive: the layers from the store, the
/// config and the manifest from memory.
#[allow(clippy::result_large_err)] // the builder's one error type
fn image_blobs(store: &Store, f: &Finished<'_>, e: &Encoded) -> Result<ImageBlobs, BuildError> {
    let Encoded {
        manifest_bytes,
        manifest_digest,
        manifest_type,
        ..
    } = e;
    let mut blobs = Vec::new();
    for desc in &e.layer_descs {
        let digest = store::Digest::from_str(desc.digest().as_ref()).map_err(BuildError::Store)?;
        blobs.push(Blob {
            descriptor: desc.clone(),
            data: BlobData::File(store.path(&digest)),
        });
    }
    blobs.push(Blob {
        descriptor: e.config_desc.clone(),
        data: BlobData::Bytes(e.config_bytes.clone()),
    });
    Ok(ImageBlobs {
        blobs,
        manifest: Blob {
            descriptor: Descriptor::new(
                manifest_type.as_str().into(),
                manifest_bytes.len() as u64,
                store::Digest::from_str(manifest_digest)
                    .map_err(BuildError::Store)?
                    .oci(),
            ),
            data: BlobData::Bytes(manifest_bytes.clone()),
        },
        tag: f.tag.to_string(),
    })
}
