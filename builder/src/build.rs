//! The build: plan -> parent -> layers (cache first) -> config -> manifest
//! -> output (registry push, OCI layout or archive) -> build record.
//!
//! Registry I/O goes through the [`Registry`] trait; files go through the
//! content store. Every layer's cache key is looked up before work starts,
//! and a hit skips both the work and the upload.

use std::collections::BTreeMap;
use std::path::Path;
use std::str::FromStr as _;

use kiln_pipeline::Pipeline;

use crate::error::BuildError;
use crate::image::{self, AddedLayer, ConfigEdits};
use crate::options::{BuildOptions, Output};
use crate::plan::{self, ImagePlan, LayerSlot};
use crate::progress::{Event, LayerStatus, Progress};
use crate::record::{self, BuildRecord, ImageRecord, LayerRecord};
use crate::registry::{Registry, RegistryError};
use crate::report::{BuildReport, BuiltLayer, ImageReport, LayerReport};
use crate::store::{self, Store};

/// Builds the images of `pipeline` (or the one `--step` needs).
pub async fn build<R: Registry>(
    pipeline: &Pipeline,
    opts: &BuildOptions,
    registry: &R,
    progress: &dyn Progress,
) -> Result<BuildReport, BuildError> {
    let plan = plan::plan(pipeline, opts.only_step.as_deref())?;
    if let Output::Archive(_) = opts.output
        && plan.images.len() != 1
    {
        return Err(BuildError::ArchiveHoldsOneImage {
            count: plan.images.len(),
        });
    }
    let store = Store::new(&opts.cache_dir)?;
    // Scratch roots of builds that were killed: swept now. One that cannot
    // be removed stays visible in `kiln cache ls`.
    let _ = store.remove_leftovers();
    let file =
        std::path::absolute(pipeline.file()).unwrap_or_else(|_| pipeline.file().to_path_buf());
    let record_path = record::record_path(&opts.data_dir, pipeline.name(), &file);
    let previous = record::load(&record_path).unwrap_or_default();
    let mut next = BuildRecord {
        pipeline: pipeline.name().into(),
        file,
        images: previous.images.clone(),
    };
    let labels = crate::git::source_labels(pipeline.base_dir());

    let mut images = Vec::new();
    for image in &plan.images {
        let (report, rec) = build_image(
            pipeline, image, opts, registry, &store, &previous, &labels, progress,
        )
        .await?;
        next.images.insert(image.name.clone(), rec);
        images.push(report);
    }
    // Keep only images the pipeline still has.
    let names: Vec<String> = plan::plan(pipeline, None)
        .map(|p| p.images.into_iter().map(|i| i.name).collect())
        .unwrap_or_default();
    next.images.retain(|name, _| names.contains(name));
    if let Err(e) = record::save(&record_path, &next) {
        progress.event(Event::Warning {
            message: format!(
                "could not save the build record {}: {e}",
                record_path.display()
            ),
        });
    }
    Ok(BuildReport {
        pipeline: pipeline.name().into(),
        images,
    })
}

#[allow(clippy::too_many_arguments)]
async fn build_image<R: Registry>(
    pipeline: &Pipeline,
    image: &ImagePlan,
    opts: &BuildOptions,
    registry: &R,
    store: &Store,
    previous: &BuildRecord,
    labels: &BTreeMap<String, String>,
    progress: &dyn Progress,
) -> Result<(ImageReport, ImageRecord), BuildError> {
    let name = image.name.clone();
    let registry_err = |action: String| {
        let name = name.clone();
        move |source: RegistryError| BuildError::Registry {
            image: name,
            action,
            source,
        }
    };
    let target = match (&opts.output, &image.repository) {
        (Output::Registry, None) => return Err(BuildError::NoTarget { image: name }),
        (_, repo) => repo.clone(),
    };
    // ZenML's `dockerfile`: that Dockerfile's image is built first, pushed
    // as `<tag>-parent` next to the image, and becomes the parent.
    let parent_ref = match &image.settings.dockerfile {
        Some(dockerfile) => {
            let Some(repo) = &image.repository else {
                return Err(BuildError::DockerfileUnavailable { image: name });
            };
            let file = pipeline.base_dir().join(&dockerfile.value);
            let context = match &image.settings.build_context_root {
                Some(root) => pipeline.base_dir().join(&root.value),
                None => file
                    .parent()
                    .map_or_else(|| pipeline.base_dir().to_path_buf(), Path::to_path_buf),
            };
            let request = crate::dfbuild::DockerfileRequest {
                dockerfile: file,
                context,
                tags: vec![format!("{repo}:{}-parent", image.tag)],
                build_args: image
                    .settings
                    .build_args
                    .clone()
                    .unwrap_or_default()
                    .into_iter()
                    .collect(),
                target: None,
                labels: Vec::new(),
            };
            let parent_opts = BuildOptions {
                output: Output::Registry,
                ..opts.clone()
            };
            let built = Box::pin(crate::dfbuild::build_dockerfile(
                &request,
                &parent_opts,
                registry,
                progress,
            ))
            .await?;
            format!("{repo}@{}", built.digest)
        }
        None => image.parent.clone(),
    };
    progress.event(Event::ImageStarted {
        image: name.clone(),
        layers: image.layers.len(),
    });

    let parent = registry
        .resolve(&parent_ref, &opts.platform)
        .await
        .map_err(registry_err(format!("resolving parent image {parent_ref}")))?;
    let parent_pinned = format!("{}@{}", parent.repository, parent.digest);
    let previous_image = previous.images.get(&image.name);

    let mut built = Vec::new();
    let mut reports = Vec::new();
    let exec_error = |layer: String| {
        let name = name.clone();
        move |source| BuildError::Exec {
            image: name,
            layer,
            source,
        }
    };

    // Exec layers: keys first; the parent is fetched and unpacked only when
    // one misses.
    let exec_slots: Vec<&LayerSlot> = image.layers.iter().filter(|l| l.runs_commands()).collect();
    let mut code_owner = (0, 0);
    if !exec_slots.is_empty() {
        let prepared = crate::exec::prepare(
            &exec_slots,
            pipeline.base_dir(),
            &parent.digest,
            &opts.platform.to_string(),
            opts.compression,
        )
        .map_err(exec_error("exec".into()))?;
        let found = crate::exec::lookup(store, &prepared).map_err(exec_error("exec".into()))?;
        let mut parent_blobs = Vec::new();
        if found.iter().any(Option::is_none) {
            let diff_ids: Vec<String> = image::strings(&parent.config["rootfs"]["diff_ids"]);
            for (layer, diff_id) in parent.layers.iter().zip(diff_ids) {
                crate::push::fetch_blob(registry, store, &parent.repository, layer)
                    .await
                    .map_err(registry_err(format!(
                        "downloading parent layer {}",
                        layer.digest()
                    )))?;
                let digest =
                    store::Digest::from_str(layer.digest().as_ref()).map_err(BuildError::Store)?;
                parent_blobs.push(kiln_rootfs::unpack::LayerBlob {
                    path: store.path(&digest),
                    media_type: Some(layer.media_type().to_string()),
                    diff_id,
                });
            }
        }
        let mut env = image::config_env(&parent.config);
        env.extend(
            image
                .settings
                .environment
                .clone()
                .map(|e| e.value)
                .unwrap_or_default(),
        );
        let results = crate::exec::execute(
            store,
            &name,
            &prepared,
            found,
            &parent_blobs,
            &env,
            &opts.secrets,
            opts.network,
            opts.compression,
            opts.source_date_epoch,
            progress,
        )
        .map_err(|f| BuildError::Exec {
            image: name.clone(),
            layer: f.layer,
            source: *f.source,
        })?;
        for ((layer, (desc, reused)), slot) in prepared.iter().zip(results).zip(&exec_slots) {
            if let LayerSlot::User { name: user, .. } = slot {
                code_owner = crate::exec::user_ids_from_layer(
                    &store.path(&desc.digest),
                    &desc.media_type,
                    user,
                )
                .unwrap_or((0, 0));
            }
            let status = if reused {
                LayerStatus::Reused
            } else {
                LayerStatus::Built
            };
            let previous_layer =
                previous_image.and_then(|p| p.layers.iter().find(|l| l.label == layer.label));
            let reason = (!reused)
                .then(|| record::explain_change(previous_layer, &layer.key, &layer.inputs));
            progress.event(Event::Layer {
                image: name.clone(),
                label: layer.label.clone(),
                status,
                digest: desc.digest.to_string(),
                size: desc.size,
                reason: reason.clone(),
            });
            reports.push(LayerReport {
                label: layer.label.clone(),
                status,
                digest: desc.digest.to_string(),
                size: desc.size,
                reason,
            });
            built.push(BuiltLayer {
                added: AddedLayer {
                    blob: desc.blob(),
                    diff_id: desc.diff_id.to_string(),
                    created_by: format!("RUN {} # kiln", layer.label),
                },
                record: LayerRecord {
                    label: layer.label.clone(),
                    key: layer.key.clone(),
                    inputs: layer.inputs.clone(),
                },
            });
        }
    }

    for slot in image.layers.iter().filter(|l| !l.runs_commands()) {
        let previous_layer =
            previous_image.and_then(|p| p.layers.iter().find(|l| l.label == slot.label()));
        let (layer, status) = match slot {
            LayerSlot::Code {
                source_root,
                dockerignore,
                workdir,
            } => {
                let root = pipeline.base_dir().join(source_root);
                let ignore = dockerignore.as_ref().map(|d| pipeline.base_dir().join(d));
                crate::code::code_layer(
                    store,
                    &root,
                    ignore.as_deref(),
                    workdir,
                    code_owner,
                    opts,
                    previous_layer,
                )
                .map_err(|source| BuildError::Layer {
                    image: name.clone(),
                    layer: slot.label(),
                    source,
                })?
            }
            _ => continue,
        };
        let reason = (status == LayerStatus::Built).then(|| {
            record::explain_change(previous_layer, &layer.record.key, &layer.record.inputs)
        });
        let blob = &layer.added.blob;
        progress.event(Event::Layer {
            image: name.clone(),
            label: slot.label(),
            status,
            digest: blob.digest().to_string(),
            size: blob.size(),
            reason: reason.clone(),
        });
        reports.push(LayerReport {
            label: slot.label(),
            status,
            digest: blob.digest().to_string(),
            size: blob.size(),
            reason,
        });
        built.push(layer);
    }

    // Config and manifest.
    let settings = &image.settings;
    let mut env: Vec<(String, String)> = Vec::new();
    if image
        .layers
        .iter()
        .any(|l| matches!(l, LayerSlot::Requirements { .. } | LayerSlot::InstallUv))
    {
        let path = image::config_env(&parent.config)
            .into_iter()
            .find(|(k, _)| k == "PATH")
            .map_or_else(
                || "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin".to_string(),
                |(_, v)| v,
            );
        env.push(("VIRTUAL_ENV".into(), crate::exec::VENV.into()));
        env.push(("PATH".into(), format!("{}/bin:{path}", crate::exec::VENV)));
    }
    env.extend(
        settings
            .environment
            .clone()
            .map(|e| e.value)
            .unwrap_or_default(),
    );
    env.extend(
        settings
            .runtime_environment
            .clone()
            .map(|e| e.value)
            .unwrap_or_default(),
    );
    let mut labels = labels.clone();
    labels.insert("dev.kiln.pipeline".into(), pipeline.name().into());
    labels.insert("dev.kiln.steps".into(), image.steps.join(","));
    labels.insert(
        kiln_oci::ANNOTATION_BASE_IMAGE_DIGEST.into(),
        parent.digest.clone(),
    );
    labels.insert(
        "org.opencontainers.image.base.name".into(),
        parent_ref.clone(),
    );
    let edits = ConfigEdits {
        env,
        workdir: settings.workdir.clone().map(|w| w.value),
        user: settings.user.clone().map(|u| u.value),
        labels,
        created: image::rfc3339(opts.source_date_epoch),
    };
    let added: Vec<AddedLayer> = built.iter().map(|b| b.added.clone()).collect();
    let config = image::derive_config(&parent.config, &added, &edits).map_err(|source| {
        BuildError::Image {
            image: name.clone(),
            source,
        }
    })?;
    let written = crate::finish::write_image(
        registry,
        store,
        &crate::finish::Finished {
            name: &name,
            base: &parent,
            added: &added,
            config: &config,
            target: target.as_deref(),
            tag: &image.tag,
        },
        opts,
        progress,
    )
    .await?;
    let crate::finish::Written {
        reference,
        pinned,
        digest: manifest_digest,
        uploaded,
    } = written;
    let record = ImageRecord {
        steps: image.steps.clone(),
        reference: reference.clone(),
        pinned,
        digest: manifest_digest.clone(),
        parent: parent_pinned.clone(),
        layers: built.into_iter().map(|b| b.record).collect(),
    };
    Ok((
        ImageReport {
            name,
            steps: image.steps.clone(),
            reference,
            digest: manifest_digest,
            parent: parent_pinned,
            layers: reports,
            uploaded,
        },
        record,
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats_times() {
        use crate::image::rfc3339;
        assert_eq!(rfc3339(0), "1970-01-01T00:00:00Z");
        assert_eq!(rfc3339(1_700_000_000), "2023-11-14T22:13:20Z");
        assert_eq!(rfc3339(951_782_400), "2000-02-29T00:00:00Z");
    }

    #[test]
    fn cache_keys_separate_parts() {
        use crate::store::cache_key;
        assert_ne!(cache_key(&["ab", "c"]), cache_key(&["a", "bc"]));
        assert_eq!(cache_key(&["x"]), cache_key(&["x"]));
    }

    #[test]
    fn parses_outputs() {
        assert_eq!(
            "oci:/tmp/x".parse::<Output>().unwrap(),
            Output::OciLayout("/tmp/x".into())
        );
        assert_eq!(
            "tar:img.tar".parse::<Output>().unwrap(),
            Output::Archive("img.tar".into())
        );
        assert!("docker:x".parse::<Output>().is_err());
        assert!("oci:".parse::<Output>().is_err());
    }
}
