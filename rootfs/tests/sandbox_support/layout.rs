//! Reads the layers of the single image in an OCI image layout directory (as
//! written by `skopeo copy ... oci:DIR:TAG`), for tests and the sandbox_run
//! example, without kiln's registry client.

use std::path::{Path, PathBuf};

use kiln_rootfs::unpack::LayerBlob;

/// The layers (bottom first) of the first manifest in `layout`'s index.
pub(crate) fn layout_layers(layout: &Path) -> Result<Vec<LayerBlob>, String> {
    let read_json = |p: PathBuf| -> Result<serde_json::Value, String> {
        let text = std::fs::read_to_string(&p).map_err(|e| format!("{}: {e}", p.display()))?;
        serde_json::from_str(&text).map_err(|e| format!("{}: {e}", p.display()))
    };
    let blob = |digest: &str| -> Result<PathBuf, String> {
        let hex = digest
            .strip_prefix("sha256:")
            .ok_or_else(|| format!("unsupported digest {digest}"))?;
        Ok(layout.join("blobs/sha256").join(hex))
    };
    let index = read_json(layout.join("index.json"))?;
    let manifest_digest = index["manifests"][0]["digest"]
        .as_str()
        .ok_or("index.json has no manifest")?;
    let manifest = read_json(blob(manifest_digest)?)?;
    let config_digest = manifest["config"]["digest"]
        .as_str()
        .ok_or("manifest has no config")?;
    let config = read_json(blob(config_digest)?)?;
    let diff_ids = config["rootfs"]["diff_ids"]
        .as_array()
        .ok_or("config has no rootfs.diff_ids")?;
    let layers = manifest["layers"]
        .as_array()
        .ok_or("manifest has no layers")?;
    if layers.len() != diff_ids.len() {
        return Err("layers and diff_ids differ in number".into());
    }
    layers
        .iter()
        .zip(diff_ids)
        .map(|(l, d)| {
            Ok(LayerBlob {
                path: blob(l["digest"].as_str().ok_or("layer without digest")?)?,
                media_type: l["mediaType"].as_str().map(str::to_string),
                diff_id: d.as_str().ok_or("bad diff_id")?.to_string(),
            })
        })
        .collect()
}

/// The `Env` of the image config (`KEY=VALUE` strings split).
#[allow(dead_code)]
pub(crate) fn layout_env(layout: &Path) -> Vec<(String, String)> {
    let read = |p: PathBuf| {
        std::fs::read_to_string(p)
            .ok()
            .and_then(|t| serde_json::from_str::<serde_json::Value>(&t).ok())
    };
    let blob = |d: &str| {
        layout
            .join("blobs/sha256")
            .join(d.trim_start_matches("sha256:"))
    };
    let Some(index) = read(layout.join("index.json")) else {
        return Vec::new();
    };
    let Some(manifest) = index["manifests"][0]["digest"]
        .as_str()
        .and_then(|d| read(blob(d)))
    else {
        return Vec::new();
    };
    let Some(config) = manifest["config"]["digest"]
        .as_str()
        .and_then(|d| read(blob(d)))
    else {
        return Vec::new();
    };
    config["config"]["Env"]
        .as_array()
        .map(|a| {
            a.iter()
                .filter_map(|v| v.as_str()?.split_once('='))
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect()
        })
        .unwrap_or_default()
}
