//! Writing a built image somewhere other than a registry: an OCI image layout
//! directory (`--output oci:DIR`) or an OCI archive (`--output tar:FILE`),
//! both of which `skopeo` and `umoci` read.

use std::fs;
use std::io::{self, Write};
use std::path::{Path, PathBuf};

use kiln_oci::{ANNOTATION_REF_NAME as REF_NAME, ImageIndex, ImageIndexBuilder};

use crate::image::{Descriptor, media};

/// Where a blob's bytes come from.
#[derive(Debug, Clone)]
pub(crate) enum BlobData {
    /// A file in the content store.
    File(PathBuf),
    /// Small in-memory JSON (configs, manifests).
    Bytes(Vec<u8>),
}

/// A blob to write: descriptor plus bytes.
#[derive(Debug, Clone)]
pub(crate) struct Blob {
    /// Digest, size, media type.
    pub descriptor: Descriptor,
    /// Where its bytes are.
    pub data: BlobData,
}

/// An image ready to be written: every blob it needs and its manifest.
#[derive(Debug, Clone)]
pub(crate) struct ImageBlobs {
    /// Layers and config.
    pub blobs: Vec<Blob>,
    /// The manifest blob.
    pub manifest: Blob,
    /// The tag to record as `org.opencontainers.image.ref.name`.
    pub tag: String,
}

/// Writes (or adds to) an OCI image layout at `dir`. Blobs already present
/// are kept; the index entry for `tag` is replaced.
pub(crate) fn write_layout(dir: &Path, image: &ImageBlobs) -> io::Result<()> {
    let blobs_dir = dir.join("blobs").join("sha256");
    fs::create_dir_all(&blobs_dir)?;
    fs::write(dir.join("oci-layout"), br#"{"imageLayoutVersion":"1.0.0"}"#)?;
    for blob in image.blobs.iter().chain(std::iter::once(&image.manifest)) {
        let hex = blob.descriptor.as_digest_sha256().ok_or_else(|| {
            io::Error::new(
                io::ErrorKind::InvalidData,
                "only sha256 digests are supported",
            )
        })?;
        let target = blobs_dir.join(hex);
        if target.exists() {
            continue;
        }
        let tmp = blobs_dir.join(format!(".{hex}.tmp"));
        match &blob.data {
            BlobData::File(path) => {
                // A hard link is instant and safe (blobs are immutable); copy
                // across file systems.
                if fs::hard_link(path, &tmp).is_err() {
                    fs::copy(path, &tmp)?;
                }
            }
            BlobData::Bytes(bytes) => fs::write(&tmp, bytes)?,
        }
        fs::rename(&tmp, &target)?;
    }
    let index_path = dir.join("index.json");
    let mut manifests: Vec<Descriptor> = match fs::read(&index_path) {
        Ok(bytes) => serde_json::from_slice::<ImageIndex>(&bytes)
            .map(|index| index.manifests().clone())
            .unwrap_or_default(),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Vec::new(),
        Err(e) => return Err(e),
    };
    manifests.retain(|m| {
        m.annotations()
            .as_ref()
            .and_then(|a| a.get(REF_NAME))
            .map(String::as_str)
            != Some(image.tag.as_str())
    });
    let mut entry = image.manifest.descriptor.clone();
    entry.set_annotations(Some([(REF_NAME.to_string(), image.tag.clone())].into()));
    manifests.push(entry);
    let index = ImageIndexBuilder::default()
        .schema_version(2u32)
        .media_type(media::OCI_INDEX)
        .manifests(manifests)
        .build()
        .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e.to_string()))?;
    let tmp = dir.join(".index.json.tmp");
    fs::write(&tmp, kiln_oci::canonical_json(&index))?;
    fs::rename(tmp, index_path)
}

/// Writes an OCI archive (a tar of an OCI layout) at `file`, as
/// `skopeo copy oci-archive:FILE` expects. Written to a temporary file and
/// renamed, so a failed build never leaves half an archive.
pub(crate) fn write_archive(file: &Path, image: &ImageBlobs) -> io::Result<()> {
    let parent = match file.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    };
    let staging = tempfile::Builder::new()
        .prefix(".kiln-layout")
        .tempdir_in(&parent)?;
    write_layout(staging.path(), image)?;
    let mut tmp = tempfile::NamedTempFile::new_in(&parent)?;
    {
        let mut builder = tar::Builder::new(io::BufWriter::new(tmp.as_file_mut()));
        builder.mode(tar::HeaderMode::Deterministic);
        builder.follow_symlinks(false);
        let mut entries: Vec<PathBuf> = walkdir::WalkDir::new(staging.path())
            .sort_by_file_name()
            .into_iter()
            .filter_map(Result::ok)
            .map(|e| e.into_path())
            .collect();
        entries.sort();
        for path in entries {
            let Ok(rel) = path.strip_prefix(staging.path()) else {
                continue;
            };
            if rel.as_os_str().is_empty() {
                continue;
            }
            builder.append_path_with_name(&path, rel)?;
        }
        builder.into_inner()?.flush()?;
    }
    tmp.persist(file).map_err(|e| e.error)?;
    Ok(())
}
