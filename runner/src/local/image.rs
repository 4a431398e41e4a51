//! A step image made ready to run: resolved in its registry, its layers in
//! the local store, unpacked once into a shared root (one per layer chain
//! and id mapping), and its config read for env, user and working directory.

use std::str::FromStr as _;

use kiln_builder::registry::{Platform, Registry};
use kiln_builder::store::{Digest, Store};
use kiln_common::Pipeline;
use kiln_common::pipeline::Command;
use kiln_common::sandbox::User;
use kiln_common::unpack::{LayerBlob, RootCache, UnpackOptions};
use serde_json::Value;

use super::backend::StepLaunch;

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
    platform: &Platform,
    unpack: &UnpackOptions,
) -> Result<ReadyImage, String> {
    let image = registry
        .resolve(reference, platform)
        .await
        .map_err(|e| format!("cannot pull image {reference}: {e}"))?;
    let diff_ids: Vec<String> = image.config["rootfs"]["diff_ids"]
        .as_array()
        .map(|a| {
            a.iter()
                .filter_map(|d| d.as_str().map(String::from))
                .collect()
        })
        .unwrap_or_default();
    if diff_ids.len() != image.layers.len() {
        return Err(format!(
            "image {reference}: its config lists {} diff_ids for {} layers",
            diff_ids.len(),
            image.layers.len()
        ));
    }
    let mut blobs = Vec::new();
    for (layer, diff_id) in image.layers.iter().zip(diff_ids) {
        kiln_builder::push::fetch_blob(registry, store, &image.repository, layer)
            .await
            .map_err(|e| format!("cannot pull layer {} of {reference}: {e}", layer.digest))?;
        let digest = Digest::from_str(&layer.digest)
            .map_err(|e| format!("image {reference}: layer {}: {e}", layer.digest))?;
        blobs.push(LayerBlob {
            path: store.path(&digest),
            media_type: Some(layer.media_type.clone()),
            diff_id,
        });
    }
    let root = roots
        .get_or_unpack(&blobs, unpack)
        .map_err(|e| format!("unpacking image {reference}: {e}"))?;
    let config = &image.config["config"];
    Ok(ReadyImage {
        rootfs: root.rootfs,
        env: env_of(config),
        user: config["User"].as_str().unwrap_or_default().to_string(),
        workdir: config["WorkingDir"]
            .as_str()
            .filter(|w| w.starts_with('/'))
            .unwrap_or("/")
            .to_string(),
        entrypoint: strings(&config["Entrypoint"]),
        cmd: strings(&config["Cmd"]),
    })
}

/// A JSON array of strings; anything else is empty.
fn strings(value: &Value) -> Vec<String> {
    value
        .as_array()
        .map(|a| {
            a.iter()
                .filter_map(|s| s.as_str().map(String::from))
                .collect()
        })
        .unwrap_or_default()
}

fn env_of(config: &Value) -> Vec<(String, String)> {
    config["Env"]
        .as_array()
        .map(|a| {
            a.iter()
                .filter_map(|e| e.as_str()?.split_once('='))
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect()
        })
        .unwrap_or_default()
}

/// How `step` starts in `image`: its command (which, as a Kubernetes
/// container's `command`, replaces the image's entrypoint) and arguments,
/// the image's env overlaid by the step's, the image's user and workdir.
pub fn launch_of(
    pipeline: &Pipeline,
    step: &str,
    image: &ReadyImage,
) -> Result<StepLaunch, String> {
    let s = pipeline.step(step).map_err(|e| e.to_string())?;
    let mut argv = match &s.command.value {
        Command::Exec(v) => v.clone(),
        Command::Shell(line) => vec!["/bin/sh".into(), "-c".into(), line.clone()],
    };
    argv.extend(s.args.iter().cloned());
    let mut env = image.env.clone();
    for (k, v) in &s.environment {
        env.retain(|(e, _)| e != k);
        env.push((k.clone(), v.clone()));
    }
    // An image without `User` runs as root, as in every OCI runtime.
    let user = if image.user.is_empty() {
        User::ROOT
    } else {
        User::resolve_in_root(&image.rootfs, &image.user)
            .map_err(|e| format!("image user {:?}: {e}", image.user))?
    };
    Ok(StepLaunch {
        rootfs: image.rootfs.clone(),
        argv,
        env,
        user,
        workdir: image.workdir.clone(),
    })
}

#[cfg(test)]
mod tests {
    #[test]
    fn env_is_read_from_the_config() {
        let config = serde_json::json!({"Env": ["PATH=/usr/bin:/bin", "A=b=c", "junk"]});
        assert_eq!(
            super::env_of(&config),
            vec![
                ("PATH".to_string(), "/usr/bin:/bin".to_string()),
                ("A".to_string(), "b=c".to_string())
            ]
        );
    }
}
