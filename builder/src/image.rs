//! Image config and manifest generation: plain data in, canonical JSON bytes
//! out.
//!
//! The parent's config is edited as JSON rather than through typed structs so
//! that fields kiln does not know (Docker's `Healthcheck`, `OnBuild`, vendor
//! extensions) survive unchanged into the child image.

use std::collections::BTreeMap;

use kiln_oci::ImageManifestBuilder;
use serde_json::{Value, json};

use crate::config::ConfigEdit;

/// The descriptor type manifests are made of.
pub use kiln_oci::Descriptor;
/// Media type names, one set for all of kiln (oci-spec has no Docker
/// ones).
pub use kiln_oci::media;

/// Which family of media types the image is written with.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Format {
    /// OCI image spec (the default).
    #[default]
    Oci,
    /// Docker image manifest v2 schema 2, for old registries and tools.
    Docker,
}

/// A layer added by kiln: its blob and the history line that explains it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AddedLayer {
    /// The compressed blob.
    pub blob: Descriptor,
    /// sha256 of the uncompressed tar (goes into `rootfs.diff_ids`).
    pub diff_id: String,
    /// What made it, for `history`.
    pub created_by: String,
}

/// The config changes kiln makes on top of the parent's.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ConfigEdits {
    /// Variables set in order; a key already in the parent's Env is replaced
    /// in place.
    pub env: Vec<(String, String)>,
    /// Working directory.
    pub workdir: Option<String>,
    /// User the container runs as.
    pub user: Option<String>,
    /// Labels added or replaced.
    pub labels: BTreeMap<String, String>,
    /// Creation time, RFC 3339 (fixed for reproducible builds).
    pub created: String,
}

/// Digests and hex as kiln writes them everywhere.
pub use kiln_oci::{hex, sha256_digest};

/// Why an image could not be assembled.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ImageError {
    /// The parent's config is not a JSON object.
    #[error("the parent image config is not a JSON object")]
    ParentConfig,
    /// zstd layers cannot be described in a Docker v2 manifest.
    #[error(
        "layer {digest} is zstd-compressed, which Docker v2 manifests cannot describe; use the OCI format"
    )]
    ZstdInDocker {
        /// The layer.
        digest: String,
    },
    /// oci-spec refused a document kiln assembled (a kiln bug, reported
    /// rather than written).
    #[error("assembling an OCI document: {0}")]
    Spec(String),
}

/// The child image's config: the parent's, with kiln's edits, the added
/// layers' diffIDs and one history entry per layer or config change.
pub fn derive_config(
    parent: &Value,
    added: &[AddedLayer],
    edits: &ConfigEdits,
) -> Result<Value, ImageError> {
    if !parent.is_object() {
        return Err(ImageError::ParentConfig);
    }
    let mut config = parent.clone();
    let mut c = ConfigEdit::new(&mut config);
    let mut history = c.view().history();
    let entry = |created_by: String, empty: bool| {
        let mut h = json!({"created": edits.created, "created_by": created_by, "comment": "kiln"});
        if empty {
            h["empty_layer"] = json!(true);
        }
        h
    };

    if !edits.env.is_empty() {
        let mut env = c.view().env();
        for (key, value) in &edits.env {
            let line = format!("{key}={value}");
            match env
                .iter_mut()
                .find(|e| e.split_once('=').map_or(e.as_str(), |(k, _)| k) == key)
            {
                Some(existing) => *existing = line,
                None => env.push(line),
            }
        }
        let names: Vec<&str> = edits.env.iter().map(|(k, _)| k.as_str()).collect();
        history.push(entry(format!("ENV {}", names.join(" ")), true));
        c.set_env(env);
    }
    for layer in added {
        history.push(entry(layer.created_by.clone(), false));
    }
    if let Some(workdir) = &edits.workdir {
        c.set_working_dir(workdir.clone());
        history.push(entry(format!("WORKDIR {workdir}"), true));
    }
    if let Some(user) = &edits.user {
        c.set_user(user.clone());
        history.push(entry(format!("USER {user}"), true));
    }
    for (k, v) in &edits.labels {
        c.set_label(k, v.clone());
    }
    let mut diff_ids = c.view().diff_ids();
    diff_ids.extend(added.iter().map(|l| l.diff_id.clone()));
    c.set_diff_ids(diff_ids);
    c.set_history(history);
    c.set_created(edits.created.clone());
    Ok(config)
}

/// Converts a layer media type to the image format's family (the bytes are
/// the same; only the name differs).
pub fn layer_media_type(media_type: &str, format: Format) -> Result<String, String> {
    let gzip = media_type == media::OCI_LAYER_GZIP || media_type == media::DOCKER_LAYER_GZIP;
    Ok(match (format, gzip) {
        (Format::Oci, true) => media::OCI_LAYER_GZIP.into(),
        (Format::Docker, true) => media::DOCKER_LAYER_GZIP.into(),
        (Format::Docker, false) if media_type == media::OCI_LAYER_ZSTD => {
            return Err(media_type.into());
        }
        _ => media_type.into(),
    })
}

/// The image manifest for a config and its layers (parent's first), as
/// JSON ready for [`canonical_bytes`].
pub fn manifest(
    format: Format,
    config: &Descriptor,
    layers: &[Descriptor],
    annotations: &BTreeMap<String, String>,
) -> Result<Value, ImageError> {
    let (manifest_type, config_type) = match format {
        Format::Oci => (media::OCI_MANIFEST, media::OCI_CONFIG),
        Format::Docker => (media::DOCKER_MANIFEST, media::DOCKER_CONFIG),
    };
    let layers = layers
        .iter()
        .map(|l| {
            let media_type = layer_media_type(l.media_type().as_ref(), format).map_err(|_| {
                ImageError::ZstdInDocker {
                    digest: l.digest().to_string(),
                }
            })?;
            Ok(Descriptor::new(
                media_type.as_str().into(),
                l.size(),
                l.digest().clone(),
            ))
        })
        .collect::<Result<Vec<_>, ImageError>>()?;
    let config = Descriptor::new(config_type.into(), config.size(), config.digest().clone());
    let mut manifest = ImageManifestBuilder::default()
        .schema_version(2u32)
        .media_type(manifest_type)
        .config(config)
        .layers(layers)
        .build()
        .map_err(|e| ImageError::Spec(e.to_string()))?;
    if format == Format::Oci && !annotations.is_empty() {
        manifest.set_annotations(Some(
            annotations
                .iter()
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect(),
        ));
    }
    serde_json::to_value(&manifest).map_err(|e| ImageError::Spec(e.to_string()))
}

/// Canonical bytes of a JSON document: keys sorted, no whitespace, so the
/// same content always has the same digest.
pub fn canonical_bytes(value: &Value) -> Vec<u8> {
    // serde_json's Map is a BTreeMap (no preserve_order feature): keys sorted.
    serde_json::to_vec(value).unwrap_or_default()
}

/// Image `created` times (RFC 3339, UTC).
pub use kiln_pipeline::time::rfc3339;

/// JSON string arrays, read as image configs and pod specs hold them.
pub use crate::config::strings;

#[cfg(test)]
mod tests {
    use super::*;

    fn parent() -> Value {
        json!({
            "architecture": "amd64",
            "os": "linux",
            "config": {"Env": ["PATH=/usr/bin", "LANG=C.UTF-8"], "Cmd": ["python3"], "Healthcheck": {"Test": ["NONE"]}},
            "rootfs": {"type": "layers", "diff_ids": ["sha256:aaa"]},
            "history": [{"created_by": "debootstrap"}]
        })
    }

    /// A descriptor whose digest is `n` repeated to a sha256's length.
    fn desc(media_type: &str, n: &str, size: u64) -> Descriptor {
        let digest: kiln_oci::Digest = format!("sha256:{}", n.repeat(64)).parse().unwrap();
        Descriptor::new(media_type.into(), size, digest)
    }

    fn layer(n: &str) -> AddedLayer {
        AddedLayer {
            blob: desc(media::OCI_LAYER_GZIP, n, 3),
            diff_id: format!("sha256:diff{n}"),
            created_by: "COPY . /app".into(),
        }
    }

    #[test]
    fn config_keeps_unknown_fields_and_appends_layers() {
        let edits = ConfigEdits {
            env: vec![
                ("LANG".into(), "en_US.UTF-8".into()),
                ("A".into(), "1".into()),
            ],
            workdir: Some("/app".into()),
            user: Some("trainer".into()),
            labels: [(
                "org.opencontainers.image.revision".to_string(),
                "abc".to_string(),
            )]
            .into(),
            created: "1970-01-01T00:00:00Z".into(),
        };
        let c = derive_config(&parent(), &[layer("1")], &edits).unwrap();
        assert_eq!(c["config"]["Healthcheck"]["Test"][0], "NONE");
        assert_eq!(c["config"]["Cmd"][0], "python3");
        assert_eq!(
            c["config"]["Env"],
            json!(["PATH=/usr/bin", "LANG=en_US.UTF-8", "A=1"])
        );
        assert_eq!(c["config"]["WorkingDir"], "/app");
        assert_eq!(c["config"]["User"], "trainer");
        assert_eq!(
            c["config"]["Labels"]["org.opencontainers.image.revision"],
            "abc"
        );
        assert_eq!(
            c["rootfs"]["diff_ids"],
            json!(["sha256:aaa", "sha256:diff1"])
        );
        let history = c["history"].as_array().unwrap();
        // parent's + ENV + layer + WORKDIR + USER
        assert_eq!(history.len(), 5);
        let non_empty = history
            .iter()
            .filter(|h| h.get("empty_layer").is_none())
            .count();
        assert_eq!(non_empty, c["rootfs"]["diff_ids"].as_array().unwrap().len());
        assert_eq!(c["created"], "1970-01-01T00:00:00Z");
    }

    #[test]
    fn canonical_bytes_are_stable() {
        let edits = ConfigEdits {
            created: "1970-01-01T00:00:00Z".into(),
            ..ConfigEdits::default()
        };
        let a = canonical_bytes(&derive_config(&parent(), &[layer("1")], &edits).unwrap());
        let b = canonical_bytes(&derive_config(&parent(), &[layer("1")], &edits).unwrap());
        assert_eq!(sha256_digest(&a), sha256_digest(&b));
        let c = canonical_bytes(&derive_config(&parent(), &[layer("2")], &edits).unwrap());
        assert_ne!(a, c);
    }

    #[test]
    fn manifest_converts_layer_types_to_the_format() {
        let config = desc("", "c", 10);
        let layers = [desc(media::DOCKER_LAYER_GZIP, "a", 5), layer("1").blob];
        let oci = manifest(Format::Oci, &config, &layers, &BTreeMap::new()).unwrap();
        assert_eq!(oci["mediaType"], media::OCI_MANIFEST);
        assert_eq!(oci["config"]["mediaType"], media::OCI_CONFIG);
        assert_eq!(oci["layers"][0]["mediaType"], media::OCI_LAYER_GZIP);
        let docker = manifest(Format::Docker, &config, &layers, &BTreeMap::new()).unwrap();
        assert_eq!(docker["mediaType"], media::DOCKER_MANIFEST);
        assert_eq!(docker["layers"][1]["mediaType"], media::DOCKER_LAYER_GZIP);
        let zstd = [desc(media::OCI_LAYER_ZSTD, "f", 1)];
        assert!(manifest(Format::Docker, &config, &zstd, &BTreeMap::new()).is_err());
    }

    #[test]
    fn bad_parent_config_is_an_error() {
        assert!(derive_config(&json!([1]), &[], &ConfigEdits::default()).is_err());
    }
}
