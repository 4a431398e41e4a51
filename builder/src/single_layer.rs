//! One-layer images from a file tree: for images kiln assembles itself
//! rather than from a pipeline's settings or a Dockerfile (the Kubernetes
//! backend's orchestrator image), with nothing beneath them.
//!
//! The caller lists what goes where ([`FileTree`]: directories, files
//! copied from this machine, bytes, each with its mode); [`build_layer`]
//! writes it with the builder's one tar writer (the code layer's: sorted
//! paths, mtime 0, owner 0:0, the given modes) into the content store, and
//! [`push`] sends the layer, the caller's config and the manifest to a
//! registry under a tag. The same tree gives the same layer digest on every
//! machine, so a tag derived from it names the image's content.
//!
//! Caching is the caller's: only it knows what identifies its inputs
//! cheaply (a binary's inode and mtime, say), so it looks the layer up with
//! [`Store::lookup`] under its own key before building the tree, and
//! [`Store::insert`]s what [`build_layer`] returns.
//!
//! ```no_run
//! # async fn example() -> Result<(), Box<dyn std::error::Error>> {
//! use kiln_builder::layer::Compression;
//! use kiln_builder::single_layer::{FileTree, SingleLayerImage, TreeEntry, build_layer, push};
//! use kiln_builder::store::Store;
//!
//! let store = Store::new("/home/me/.cache/kiln")?;
//! let mut tree = FileTree::new();
//! tree.add("tmp", TreeEntry::Dir { mode: 0o1777 });
//! tree.add("usr/local/bin/tool", TreeEntry::Copy { source: "/usr/bin/true".into(), mode: 0o755 });
//! let layer = build_layer(&store, &tree, Compression::gzip())?;
//! let config = serde_json::json!({
//!     "architecture": "amd64",
//!     "os": "linux",
//!     "config": {"Entrypoint": ["/usr/local/bin/tool"]},
//!     "rootfs": {"type": "layers", "diff_ids": [layer.diff_id.as_str()]},
//! });
//! let client = kiln_oci::Client::new(Default::default())?;
//! let digest = push(&client, &store, &SingleLayerImage {
//!     name: "tool",
//!     layer: &layer,
//!     created_by: "COPY tool /usr/local/bin/tool",
//!     config: &config,
//!     repository: "127.0.0.1:5000/team/tool",
//!     tag: "v1",
//! }, 4).await?;
//! println!("127.0.0.1:5000/team/tool@{digest}");
//! # Ok(()) }
//! ```

use serde_json::{Value, json};

use crate::error::BuildError;
use crate::finish::{Finished, write_image};
use crate::image::{AddedLayer, Format};
use crate::layer::{Compression, LayerError, LayerWriter, TarOptions};
use crate::options::{BuildOptions, Output};
use crate::progress::Silent;
use crate::registry::{Registry, ResolvedImage};
use crate::store::{LayerDescriptor, Store};

pub use crate::layer::{FileTree, TreeEntry};

/// Writes `tree` as a layer blob into `store` (mtime 0, owner 0:0) and
/// returns its descriptor. Runs on the caller's thread, compression on the
/// layer writer's own; the store's key index is not touched.
pub fn build_layer(
    store: &Store,
    tree: &FileTree,
    compression: Compression,
) -> Result<LayerDescriptor, LayerError> {
    let mut writer = LayerWriter::new(store, compression)?;
    if let Err(e) = tree.write_tar(&mut writer, &TarOptions::default()) {
        // "Compressor stopped" hides the cause: prefer the compressor's.
        return Err(writer.abort().unwrap_or(e));
    }
    writer.finish()
}

/// A one-layer image ready to push: the layer in the store, the config
/// that names it, where it goes.
#[derive(Debug, Clone, Copy)]
pub struct SingleLayerImage<'a> {
    /// The image's name in errors.
    pub name: &'a str,
    /// The layer, as [`build_layer`] (or the cache) gave it.
    pub layer: &'a LayerDescriptor,
    /// The history line of the layer.
    pub created_by: &'a str,
    /// The whole image config, written as given (canonical JSON): its
    /// `rootfs.diff_ids` must be `[layer.diff_id]`.
    pub config: &'a Value,
    /// `registry/repository`, without tag or digest.
    pub repository: &'a str,
    /// The tag the manifest is put under.
    pub tag: &'a str,
}

/// Pushes `image` (the layer, then the config, then the manifest under the
/// tag, so a registry that has the tag has the whole image), OCI media
/// types, `concurrency` blob uploads at once. Returns the manifest's
/// digest, for a `repository@digest` reference.
pub async fn push<R: Registry>(
    registry: &R,
    store: &Store,
    image: &SingleLayerImage<'_>,
    concurrency: usize,
) -> Result<String, BuildError> {
    let base = ResolvedImage {
        repository: String::new(),
        digest: String::new(),
        config: json!({}),
        layers: Vec::new(),
    };
    let added = [AddedLayer {
        blob: image.layer.blob(),
        diff_id: image.layer.diff_id.to_string(),
        created_by: image.created_by.to_string(),
    }];
    let options = BuildOptions {
        output: Output::Registry,
        format: Format::Oci,
        concurrency,
        ..BuildOptions::default()
    };
    let finished = Finished {
        name: image.name,
        base: &base,
        added: &added,
        config: image.config,
        target: Some(image.repository),
        tag: image.tag,
    };
    let written = write_image(registry, store, &finished, &options, &Silent).await?;
    Ok(written.digest)
}

#[cfg(test)]
mod tests {
    use std::fs;
    use std::os::unix::fs::PermissionsExt as _;

    use super::*;

    /// The layer of a small fixed tree. Pinned: these are the bytes the
    /// orchestrator image's tar writer produced before it became this
    /// module's, so a change here changes every image built from a tree
    /// (and their tags, and their cache keys' hits).
    #[test]
    fn small_tree_layer_digest_is_pinned() {
        let dir = tempfile::tempdir().unwrap();
        let tool = dir.path().join("tool");
        fs::write(&tool, b"#!/bin/sh\necho tool\n").unwrap();
        fs::set_permissions(&tool, fs::Permissions::from_mode(0o700)).unwrap();
        let mut tree = FileTree::new();
        tree.add("tmp", TreeEntry::Dir { mode: 0o1777 });
        tree.add("var/empty", TreeEntry::Dir { mode: 0o555 });
        tree.add(
            "opt/tool/bin/tool",
            TreeEntry::Copy {
                source: tool,
                mode: 0o755,
            },
        );
        tree.add(
            "etc/tool.conf",
            TreeEntry::Bytes {
                content: b"answer = 42\n".to_vec(),
                mode: 0o644,
            },
        );
        let store_dir = tempfile::tempdir().unwrap();
        let store = Store::new(store_dir.path()).unwrap();
        let layer = build_layer(&store, &tree, Compression::gzip()).unwrap();
        assert_eq!(
            (layer.diff_id.as_str(), layer.digest.as_str()),
            (
                "sha256:d5133fca7f9b4d490e3b022e2e58caf0ccdc77cd49024dbdc2b3db8454ce3639",
                "sha256:a6b26e940f6bb44516187dbb3ca15c19fd246a97f3ebb281bb3861dcfc64e8a2"
            )
        );
        assert_eq!(store.verify(&layer.digest).unwrap(), layer.size);
    }
}
