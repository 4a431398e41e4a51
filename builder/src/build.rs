//! The build: plan -> parent -> layers (cache first) -> config -> manifest
//! -> output (registry push, OCI layout or archive) -> build record.
//!
//! Registry I/O goes through the [`Registry`] trait; files go through the
//! content store. Every layer's cache key is looked up before work starts,
//! and a hit skips both the work and the upload.

use std::collections::BTreeMap;
use std::io;
use std::path::{Path, PathBuf};
use std::str::FromStr as _;

use kiln_common::Pipeline;
use serde::Serialize;

use crate::image::{self, AddedLayer, ConfigEdits, Descriptor, Format};
use crate::layer::{Compression, LayerError};

use crate::plan::{self, ImagePlan, LayerSlot, PlanError};
use crate::progress::{Event, LayerStatus, Progress};
use crate::record::{self, BuildRecord, ImageRecord, LayerRecord};
use crate::registry::{Platform, Registry, RegistryError};
use crate::store::{self, Store, StoreError};

/// Where built images go.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum Output {
    /// Pushed to each image's `target_repository`.
    #[default]
    Registry,
    /// Written into an OCI image layout directory.
    OciLayout(PathBuf),
    /// Written as an OCI archive (one image).
    Archive(PathBuf),
}

impl std::str::FromStr for Output {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s.split_once(':') {
            _ if s == "registry" => Ok(Output::Registry),
            Some(("oci", dir)) if !dir.is_empty() => Ok(Output::OciLayout(dir.into())),
            Some(("tar", file)) if !file.is_empty() => Ok(Output::Archive(file.into())),
            _ => Err(format!(
                "invalid output {s:?}: expected registry, oci:DIR or tar:FILE"
            )),
        }
    }
}

/// How to build.
#[derive(Debug, Clone)]
pub struct BuildOptions {
    /// Build only the image this step runs in.
    pub only_step: Option<String>,
    /// Target platform.
    pub platform: Platform,
    /// OCI or Docker media types.
    pub format: Format,
    /// Layer compression.
    pub compression: Compression,
    /// Where images go.
    pub output: Output,
    /// The content store and cache index.
    pub cache_dir: PathBuf,
    /// Where build records are kept.
    pub data_dir: PathBuf,
    /// Fixed timestamp for files and history (`SOURCE_DATE_EPOCH`), else 0.
    pub source_date_epoch: u64,
    /// Blob uploads at once.
    pub concurrency: usize,
    /// Build secrets for commands (`--secret`).
    pub secrets: Vec<crate::exec::Secret>,
    /// The network commands see (`--network`).
    pub network: kiln_common::sandbox::Network,
}

impl Default for BuildOptions {
    fn default() -> Self {
        Self {
            only_step: None,
            platform: Platform::default(),
            format: Format::Oci,
            compression: Compression::default(),
            output: Output::Registry,
            cache_dir: PathBuf::from(".kiln-cache"),
            data_dir: PathBuf::from(".kiln-data"),
            source_date_epoch: 0,
            concurrency: 4,
            secrets: Vec::new(),
            network: kiln_common::sandbox::Network::Host,
        }
    }
}

/// What a build did.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct BuildReport {
    /// The pipeline.
    pub pipeline: String,
    /// Each image built.
    pub images: Vec<ImageReport>,
}

/// One image of a build.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ImageReport {
    /// Plan name.
    pub name: String,
    /// Steps it serves.
    pub steps: Vec<String>,
    /// Where it was written.
    pub reference: String,
    /// Manifest digest.
    pub digest: String,
    /// Parent, pinned by digest.
    pub parent: String,
    /// kiln's layers.
    pub layers: Vec<LayerReport>,
    /// Blobs uploaded to the registry.
    pub uploaded: usize,
}

/// One layer of a build.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct LayerReport {
    /// Label.
    pub label: String,
    /// Reused or built.
    pub status: LayerStatus,
    /// Compressed digest.
    pub digest: String,
    /// Compressed size.
    pub size: u64,
    /// Why it was built.
    pub reason: Option<String>,
}

/// Why a build failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum BuildError {
    /// Planning failed.
    #[error(transparent)]
    Plan(#[from] PlanError),
    /// A registry operation failed.
    #[error("image {image}: {action}: {source}")]
    Registry {
        /// The image being built.
        image: String,
        /// What kiln was doing.
        action: String,
        /// The registry's error.
        source: RegistryError,
    },
    /// Building a layer failed.
    #[error("image {image}: {layer} layer: {source}")]
    Layer {
        /// The image.
        image: String,
        /// The layer.
        layer: String,
        /// Why.
        source: LayerError,
    },
    /// A layer that runs commands failed.
    #[error("image {image}: {layer} layer: {source}")]
    Exec {
        /// The image.
        image: String,
        /// The layer.
        layer: String,
        /// Why.
        source: crate::exec::ExecError,
    },
    /// The content store failed.
    #[error("layer cache: {0}")]
    Store(#[from] StoreError),
    /// The image could not be assembled.
    #[error("image {image}: {source}")]
    Image {
        /// The image.
        image: String,
        /// Why.
        source: image::ImageError,
    },
    /// Nowhere to push.
    #[error(
        "image {image} has no target_repository: set settings.docker.target_repository in the pipeline, or build with --output oci:DIR or --output tar:FILE"
    )]
    NoTarget {
        /// The image.
        image: String,
    },
    /// A `dockerfile` parent needs a repository to push it to.
    #[error(
        "image {image} names a dockerfile: its image is pushed next to the step image, so set settings.docker.target_repository"
    )]
    DockerfileUnavailable {
        /// The image.
        image: String,
    },
    /// A Dockerfile is wrong, or one of its steps failed.
    #[error("{message}")]
    Dockerfile {
        /// The Dockerfile.
        file: PathBuf,
        /// What went wrong, with the line (`Dockerfile:7: ...`).
        message: String,
    },
    /// An archive holds one image.
    #[error(
        "--output tar:FILE holds one image but the plan has {count}; use --step to pick one, or --output oci:DIR"
    )]
    ArchiveHoldsOneImage {
        /// How many images were planned.
        count: usize,
    },
    /// Writing output failed.
    #[error("writing {}: {source}", path.display())]
    Output {
        /// The output path.
        path: PathBuf,
        /// Why.
        source: io::Error,
    },
}

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

/// A layer ready to go into the image.
pub(crate) struct BuiltLayer {
    pub(crate) added: AddedLayer,
    pub(crate) record: LayerRecord,
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
            let diff_ids: Vec<String> = parent.config["rootfs"]["diff_ids"]
                .as_array()
                .map(|a| {
                    a.iter()
                        .filter_map(|d| d.as_str().map(String::from))
                        .collect()
                })
                .unwrap_or_default();
            for (layer, diff_id) in parent.layers.iter().zip(diff_ids) {
                crate::push::fetch_blob(registry, store, &parent.repository, layer)
                    .await
                    .map_err(registry_err(format!(
                        "downloading parent layer {}",
                        layer.digest
                    )))?;
                let digest = store::Digest::from_str(&layer.digest).map_err(BuildError::Store)?;
                parent_blobs.push(kiln_common::unpack::LayerBlob {
                    path: store.path(&digest),
                    media_type: Some(layer.media_type.clone()),
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
                    blob: Descriptor {
                        media_type: desc.media_type.clone(),
                        digest: desc.digest.to_string(),
                        size: desc.size,
                    },
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
            digest: blob.digest.clone(),
            size: blob.size,
            reason: reason.clone(),
        });
        reports.push(LayerReport {
            label: slot.label(),
            status,
            digest: blob.digest.clone(),
            size: blob.size,
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
        "org.opencontainers.image.base.digest".into(),
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
