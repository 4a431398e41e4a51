//! The OCI types kiln's images are made of: oci-spec's descriptors,
//! digests, media types, platforms, manifests and indexes, one set for
//! every crate (the builder writes them, the registry client reads them,
//! the runner and the test node pull with them).
//!
//! Image *configs* are the one exception, and stay JSON: oci-spec's
//! `ImageConfiguration` holds only the fields of the OCI spec, so a parent
//! config read through it loses Docker's `Healthcheck`, `OnBuild`, `Shell`,
//! `StopTimeout` and vendor fields (`config_round_trip_through_oci_spec_loses_docker_fields`
//! below measures it), and a child image must keep them. The builder edits
//! configs as `serde_json::Value` and keeps every field it does not touch.
//!
//! Manifests are serialized through `serde_json::Value`, whose map is sorted
//! (serde_json without `preserve_order`): oci-spec keeps annotations in a
//! `HashMap`, whose order changes from run to run, and a manifest's bytes
//! must not, or the same build would get a new digest every time.

use serde::Serialize;
use sha2::{Digest as _, Sha256};

pub use oci_spec::image::{
    ANNOTATION_BASE_IMAGE_DIGEST, ANNOTATION_REF_NAME, Arch, Descriptor, Digest, ImageIndex,
    ImageIndexBuilder, ImageManifest, ImageManifestBuilder, MediaType, Os, Platform,
};

/// Media type names, for the places that compare or write them as text
/// (the layer store's records, HTTP `Accept` and `Content-Type` headers).
/// oci-spec's [`MediaType`] has the OCI names as variants but no Docker
/// ones; Docker's schema 2 names are here because registries still serve
/// them and old tools still need them.
pub mod media {
    /// OCI image manifest.
    pub const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
    /// OCI image index.
    pub const OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";
    /// OCI image config.
    pub const OCI_CONFIG: &str = "application/vnd.oci.image.config.v1+json";
    /// OCI gzip layer.
    pub const OCI_LAYER_GZIP: &str = "application/vnd.oci.image.layer.v1.tar+gzip";
    /// OCI zstd layer.
    pub const OCI_LAYER_ZSTD: &str = "application/vnd.oci.image.layer.v1.tar+zstd";
    /// OCI uncompressed layer.
    pub const OCI_LAYER_TAR: &str = "application/vnd.oci.image.layer.v1.tar";
    /// Docker schema 2 manifest.
    pub const DOCKER_MANIFEST: &str = "application/vnd.docker.distribution.manifest.v2+json";
    /// Docker manifest list.
    pub const DOCKER_MANIFEST_LIST: &str =
        "application/vnd.docker.distribution.manifest.list.v2+json";
    /// Docker image config.
    pub const DOCKER_CONFIG: &str = "application/vnd.docker.container.image.v1+json";
    /// Docker gzip layer.
    pub const DOCKER_LAYER_GZIP: &str = "application/vnd.docker.image.rootfs.diff.tar.gzip";

    /// Whether a manifest of this type lists per-platform manifests (an OCI
    /// index or a Docker manifest list) rather than describing one image.
    pub fn is_index(media_type: &str) -> bool {
        media_type == OCI_INDEX || media_type == DOCKER_MANIFEST_LIST
    }
}

/// `sha256:<hex>` of bytes, as text: the form digests take in paths, keys
/// and messages.
pub fn sha256_digest(bytes: &[u8]) -> String {
    format!("sha256:{:x}", Sha256::digest(bytes))
}

/// Lower-case hex of bytes (cache keys and record names that are not
/// digests).
pub fn hex(bytes: &[u8]) -> String {
    use std::fmt::Write as _;
    bytes
        .iter()
        .fold(String::with_capacity(bytes.len() * 2), |mut s, b| {
            let _ = write!(s, "{b:02x}");
            s
        })
}

/// Canonical bytes of an OCI document: keys sorted, no whitespace, so the
/// same content always has the same digest (see the module doc).
pub fn canonical_json<T: Serialize>(document: &T) -> Vec<u8> {
    serde_json::to_value(document)
        .and_then(|value| serde_json::to_vec(&value))
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    const DIGEST: &str = "sha256:0000000000000000000000000000000000000000000000000000000000000001";

    fn descriptor(media_type: &str, digest: &str, size: u64) -> Result<Descriptor, String> {
        let digest: Digest = digest.parse().map_err(|e| format!("{e}"))?;
        Ok(Descriptor::new(MediaType::from(media_type), size, digest))
    }

    #[test]
    fn descriptors_serialize_as_the_spec_writes_them() {
        let d = descriptor(media::DOCKER_LAYER_GZIP, DIGEST, 5).unwrap();
        assert_eq!(
            String::from_utf8(canonical_json(&d)).unwrap(),
            format!(
                r#"{{"digest":"{DIGEST}","mediaType":"{}","size":5}}"#,
                media::DOCKER_LAYER_GZIP
            )
        );
        assert_eq!(d.media_type().to_string(), media::DOCKER_LAYER_GZIP);
    }

    #[test]
    fn text_that_is_not_a_digest_is_refused() {
        for bad in ["sha256:c", "sha256:", "nope", "sha256:ZZ"] {
            assert!(descriptor(media::OCI_LAYER_GZIP, bad, 1).is_err(), "{bad}");
        }
    }

    #[test]
    fn hashes_are_lower_case_hex() {
        assert_eq!(hex(&[0, 0xab, 0x10]), "00ab10");
        assert_eq!(
            sha256_digest(b""),
            "sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
        );
    }

    #[test]
    fn annotations_have_one_order() {
        let mut d = descriptor(media::OCI_MANIFEST, DIGEST, 1).unwrap();
        let annotations: std::collections::HashMap<String, String> = (0..32)
            .map(|i| (format!("k{i:02}"), i.to_string()))
            .collect();
        d.set_annotations(Some(annotations));
        let text = String::from_utf8(canonical_json(&d)).unwrap();
        let positions: Vec<usize> = (0..32)
            .map(|i| text.find(&format!("\"k{i:02}\"")).unwrap())
            .collect();
        assert!(positions.windows(2).all(|w| w[0] < w[1]), "{text}");
    }

    /// Why configs stay JSON (module doc): oci-spec's config type has no
    /// room for the fields Docker writes.
    #[test]
    fn config_round_trip_through_oci_spec_loses_docker_fields() {
        let parent = serde_json::json!({
            "architecture": "amd64",
            "os": "linux",
            "config": {
                "Env": ["PATH=/usr/bin"],
                "Healthcheck": {"Test": ["CMD", "true"]},
                "OnBuild": ["RUN true"],
                "Shell": ["/bin/bash", "-c"]
            },
            "rootfs": {"type": "layers", "diff_ids": []}
        });
        let typed: oci_spec::image::ImageConfiguration =
            serde_json::from_value(parent.clone()).unwrap();
        let back = serde_json::to_value(&typed).unwrap();
        for field in ["Healthcheck", "OnBuild", "Shell"] {
            assert!(parent["config"].get(field).is_some());
            assert!(back["config"].get(field).is_none(), "{field} survived");
        }
    }
}
