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
use kiln_rootfs::unpack::LayerBlob;

use crate::error::BuildError;
use crate::exec::PreparedLayer;
use crate::image::{self, AddedLayer, ConfigEdits};
use crate::options::{BuildOptions, Output};
use crate::plan::{self, ImagePlan, LayerSlot};
use crate::progress::{Event, LayerStatus, Progress};
use crate::record::{self, BuildRecord, ImageRecord, LayerRecord};
use crate::registry::{Registry, RegistryFailure, ResolvedImage};
use crate::report::{BuildReport, BuiltLayer, ImageReport, LayerReport};
use crate::store::{self, LayerDescriptor, Store};

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

/// One image: its parent resolved (built first from a Dockerfile when the
/// settings name one), its exec then code layers, its config, then written
/// out; returns its report and its build record.
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
    let b = ImageBuild {
        pipeline,
        image,
        opts,
        registry,
        store,
        progress,
        previous: previous.images.get(&image.name),
    };
    let name = image.name.clone();
    let target = match (&opts.output, &image.repository) {
        (Output::Registry, None) => return Err(BuildError::NoTarget { image: name }),
        (_, repo) => repo.clone(),
    };
    let parent_ref = b.parent_reference().await?;
    progress.event(Event::ImageStarted {
        image: name.clone(),
        layers: image.layers.len(),
    });

    let parent = registry
        .resolve(&parent_ref, &opts.platform)
        .await
        .map_err(b.registry_err(format!("resolving parent image {parent_ref}")))?;
    let mut layers = Layers::default();
    let code_owner = b.exec_layers(&parent, &mut layers).await?;
    b.code_layers(code_owner, &mut layers)?;

    let edits = b.config_edits(&parent, &parent_ref, labels);
    let added: Vec<AddedLayer> = layers.built.iter().map(|b| b.added.clone()).collect();
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
    Ok(assemble(
        image,
        format!("{}@{}", parent.repository, parent.digest),
        layers,
        written,
    ))
}

/// What one image's build shares between its stages.
struct ImageBuild<'a, R> {
    pipeline: &'a Pipeline,
    image: &'a ImagePlan,
    opts: &'a BuildOptions,
    registry: &'a R,
    store: &'a Store,
    progress: &'a dyn Progress,
    /// The image as the last build recorded it, for `--explain`.
    previous: Option<&'a ImageRecord>,
}

/// The image's layers so far, in order, and the report's line for each.
#[derive(Default)]
struct Layers {
    built: Vec<BuiltLayer>,
    reports: Vec<LayerReport>,
}

impl<R: Registry> ImageBuild<'_, R> {
    /// For registry failures, naming the image and what kiln was doing.
    fn registry_err(&self, action: String) -> impl FnOnce(RegistryFailure) -> BuildError {
        crate::finish::registry_err(&self.image.name, action)
    }

    /// For exec failures outside one layer (preparing, looking up).
    fn exec_error(&self, layer: &str) -> impl FnOnce(crate::exec::ExecError) -> BuildError {
        let (image, layer) = (self.image.name.clone(), layer.to_string());
        move |source| BuildError::Exec {
            image,
            layer,
            source,
        }
    }

    /// The parent image's reference. ZenML's `dockerfile`: that
    /// Dockerfile's image is built first, pushed as `<tag>-parent` next to
    /// the image, and becomes the parent.
    async fn parent_reference(&self) -> Result<String, BuildError> {
        let image = self.image;
        let Some(dockerfile) = &image.settings.dockerfile else {
            return Ok(image.parent.clone());
        };
        let Some(repo) = &image.repository else {
            return Err(BuildError::DockerfileUnavailable {
                image: image.name.clone(),
            });
        };
        let request = self.parent_request(&dockerfile.value, repo);
        let parent_opts = BuildOptions {
            output: Output::Registry,
            ..self.opts.clone()
        };
        let built = Box::pin(crate::dfbuild::build_dockerfile(
            &request,
            &parent_opts,
            self.registry,
            self.progress,
        ))
        .await?;
        Ok(format!("{repo}@{}", built.digest))
    }

    /// The parent's Dockerfile build: its context is `build_context_root`,
    /// else the Dockerfile's directory; the image's `build_args` are its
    /// ARGs.
    fn parent_request(&self, dockerfile: &str, repo: &str) -> crate::dfbuild::DockerfileRequest {
        let (image, base_dir) = (self.image, self.pipeline.base_dir());
        let file = base_dir.join(dockerfile);
        let context = match &image.settings.build_context_root {
            Some(root) => base_dir.join(&root.value),
            None => file
                .parent()
                .map_or_else(|| base_dir.to_path_buf(), Path::to_path_buf),
        };
        crate::dfbuild::DockerfileRequest {
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
        }
    }

    /// The layers that run commands: keys first; the parent is fetched
    /// and unpacked only when one misses. Returns who owns the code: the
    /// user a user layer made, else root.
    async fn exec_layers(
        &self,
        parent: &ResolvedImage,
        layers: &mut Layers,
    ) -> Result<(u64, u64), BuildError> {
        let (opts, store) = (self.opts, self.store);
        let exec_slots: Vec<&LayerSlot> = self
            .image
            .layers
            .iter()
            .filter(|l| l.runs_commands())
            .collect();
        let mut code_owner = (0, 0);
        if exec_slots.is_empty() {
            return Ok(code_owner);
        }
        let prepared = crate::exec::prepare(
            &exec_slots,
            self.pipeline.base_dir(),
            &parent.digest,
            &opts.platform.to_string(),
            opts.compression,
        )
        .map_err(self.exec_error("exec"))?;
        let found = crate::exec::lookup(store, &prepared).map_err(self.exec_error("exec"))?;
        let parent_blobs = match found.iter().any(Option::is_none) {
            true => self.parent_blobs(parent).await?,
            false => Vec::new(),
        };
        let results = crate::exec::execute(
            store,
            &self.image.name,
            &prepared,
            found,
            &parent_blobs,
            &self.exec_env(parent),
            &opts.secrets,
            opts.network,
            opts.compression,
            opts.source_date_epoch,
            self.progress,
        )
        .map_err(|f| BuildError::Exec {
            image: self.image.name.clone(),
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
            self.add_layer(
                layers,
                layer.label.clone(),
                status,
                exec_layer(layer, &desc),
            );
        }
        Ok(code_owner)
    }

    /// The parent's layers, downloaded into the store, as the blobs an
    /// exec layer's root is unpacked from.
    async fn parent_blobs(&self, parent: &ResolvedImage) -> Result<Vec<LayerBlob>, BuildError> {
        let store = self.store;
        let mut parent_blobs = Vec::new();
        let diff_ids: Vec<String> = crate::config::ConfigView::new(&parent.config).diff_ids();
        for (layer, diff_id) in parent.layers.iter().zip(diff_ids) {
            crate::push::fetch_blob(self.registry, store, &parent.repository, layer)
                .await
                .map_err(
                    self.registry_err(format!("downloading parent layer {}", layer.digest())),
                )?;
            let digest =
                store::Digest::from_str(layer.digest().as_ref()).map_err(BuildError::Store)?;
            parent_blobs.push(LayerBlob {
                path: store.path(&digest),
                media_type: Some(layer.media_type().to_string()),
                diff_id,
            });
        }
        Ok(parent_blobs)
    }

    /// The environment exec layers run with: the parent's, then the
    /// image's `environment`.
    fn exec_env(&self, parent: &ResolvedImage) -> Vec<(String, String)> {
        let mut env = crate::config::ConfigView::new(&parent.config).env_pairs();
        env.extend(
            self.image
                .settings
                .environment
                .clone()
                .map(|e| e.value)
                .unwrap_or_default(),
        );
        env
    }

    /// The code layers, owned by `code_owner`, each cached by the content
    /// it copies.
    #[allow(clippy::result_large_err)] // the builder's one error type
    fn code_layers(&self, code_owner: (u64, u64), layers: &mut Layers) -> Result<(), BuildError> {
        let base_dir = self.pipeline.base_dir();
        for slot in &self.image.layers {
            let LayerSlot::Code {
                source_root,
                dockerignore,
                workdir,
            } = slot
            else {
                continue;
            };
            let root = base_dir.join(source_root);
            let ignore = dockerignore.as_ref().map(|d| base_dir.join(d));
            let (layer, status) = crate::code::code_layer(
                self.store,
                &root,
                ignore.as_deref(),
                workdir,
                code_owner,
                self.opts,
                self.previous_layer(&slot.label()),
            )
            .map_err(|source| BuildError::Layer {
                image: self.image.name.clone(),
                layer: slot.label(),
                source,
            })?;
            self.add_layer(layers, slot.label(), status, layer);
        }
        Ok(())
    }

    /// The last build's record of the layer with this label.
    fn previous_layer(&self, label: &str) -> Option<&LayerRecord> {
        self.previous
            .and_then(|p| p.layers.iter().find(|l| l.label == label))
    }

    /// A finished layer joins the image: its progress line and its report
    /// say why it was built, against the last build's record.
    fn add_layer(
        &self,
        layers: &mut Layers,
        label: String,
        status: LayerStatus,
        layer: BuiltLayer,
    ) {
        let reason = (status == LayerStatus::Built).then(|| {
            record::explain_change(
                self.previous_layer(&label),
                &layer.record.key,
                &layer.record.inputs,
            )
        });
        let blob = &layer.added.blob;
        let report = LayerReport {
            label,
            status,
            digest: blob.digest().to_string(),
            size: blob.size(),
            reason,
        };
        self.progress.event(report.event(&self.image.name));
        layers.reports.push(report);
        layers.built.push(layer);
    }

    /// The config's changes to the parent's: kiln's virtual environment
    /// first on PATH when Python packages go in, the image's environment,
    /// and labels naming the source, the pipeline, its steps and the base.
    fn config_edits(
        &self,
        parent: &ResolvedImage,
        parent_ref: &str,
        labels: &BTreeMap<String, String>,
    ) -> ConfigEdits {
        let settings = &self.image.settings;
        let mut labels = labels.clone();
        labels.insert("dev.kiln.pipeline".into(), self.pipeline.name().into());
        labels.insert("dev.kiln.steps".into(), self.image.steps.join(","));
        labels.insert(
            kiln_oci::ANNOTATION_BASE_IMAGE_DIGEST.into(),
            parent.digest.clone(),
        );
        labels.insert(
            "org.opencontainers.image.base.name".into(),
            parent_ref.to_string(),
        );
        ConfigEdits {
            env: self.config_env(parent),
            workdir: settings.workdir.clone().map(|w| w.value),
            user: settings.user.clone().map(|u| u.value),
            labels,
            created: image::rfc3339(self.opts.source_date_epoch),
        }
    }

    /// The environment the image's config adds: the virtual environment
    /// (when Python packages were installed), then `environment` and
    /// `runtime_environment`.
    fn config_env(&self, parent: &ResolvedImage) -> Vec<(String, String)> {
        let settings = &self.image.settings;
        let mut env: Vec<(String, String)> = Vec::new();
        if self
            .image
            .layers
            .iter()
            .any(|l| matches!(l, LayerSlot::Requirements { .. } | LayerSlot::InstallUv))
        {
            let path = crate::config::ConfigView::new(&parent.config)
                .env_pairs()
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
        env
    }
}

/// An exec layer as it goes into the image and into the build record.
fn exec_layer(layer: &PreparedLayer, desc: &LayerDescriptor) -> BuiltLayer {
    BuiltLayer {
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
    }
}

/// The image's report and its record in the build record, from where
/// it was written.
fn assemble(
    image: &ImagePlan,
    parent_pinned: String,
    layers: Layers,
    written: crate::finish::Written,
) -> (ImageReport, ImageRecord) {
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
        layers: layers.built.into_iter().map(|b| b.record).collect(),
    };
    (
        ImageReport {
            name: image.name.clone(),
            steps: image.steps.clone(),
            reference,
            digest: manifest_digest,
            parent: parent_pinned,
            layers: layers.reports,
            uploaded,
        },
        record,
    )
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
