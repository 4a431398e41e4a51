//! The descriptor of a built layer: what a manifest needs (media type,
//! digest, size) plus what the image config needs (the diffID).

use super::Digest;

/// A layer blob in the store, as the cache index records it and as the
/// image assembler consumes it.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct LayerDescriptor {
    /// OCI media type, e.g. `application/vnd.oci.image.layer.v1.tar+gzip`.
    #[serde(rename = "mediaType")]
    pub media_type: String,
    /// Digest of the compressed blob (names the file and the registry blob).
    pub digest: Digest,
    /// Size of the compressed blob in bytes.
    pub size: u64,
    /// Digest of the uncompressed tar (goes into the config's
    /// `rootfs.diff_ids`).
    #[serde(rename = "diffId")]
    pub diff_id: Digest,
}

impl LayerDescriptor {
    /// What a manifest says about this layer (the diffID goes to the
    /// config instead).
    pub fn blob(&self) -> kiln_oci::Descriptor {
        kiln_oci::Descriptor::new(
            self.media_type.as_str().into(),
            self.size,
            self.digest.oci(),
        )
    }
}
