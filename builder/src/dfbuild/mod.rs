//! Building a Dockerfile (`kiln build -f`), Kaniko-style: the evaluated
//! stages in dependency order, one layer per RUN (sandbox + snapshot) and
//! per COPY/ADD (a tar written straight from the files), every one cached
//! under a key chained from the base, the resolved instruction and, for
//! COPY/ADD, the content of its sources. A miss in the middle does not stop
//! later steps from hitting when their inputs are unchanged. A root
//! filesystem is unpacked only when a RUN misses or a stage is copied from;
//! COPY, ADD, WORKDIR and VOLUME are placed on a listing of the stage read
//! from its layers' headers ([`crate::listing`]), and RUN's `--mount`s are
//! the sandbox's bind mounts (`mounts`).

use std::collections::HashMap;
use std::path::PathBuf;
use std::str::FromStr as _;

use kiln_rootfs::sandbox::{RunSpec, Sandbox, SandboxConfig, User};
use kiln_rootfs::snapshot::{self, Excludes, LayerOptions, Manifest};
use kiln_rootfs::unpack::{self, LayerBlob, UnpackOptions};
use serde_json::{Value, json};

use crate::config::{ConfigEdit, ConfigView, strip_onbuild};
use crate::copy::Tree;
use crate::dockerfile::{
    Base, BaseImage, BuildGraph, ConfigChange, CopyFrom, Dockerfile, EvalOptions, ShellOrExec,
    Step, StepKind,
};
use crate::error::BuildError;
use crate::image::{AddedLayer, Descriptor};
use crate::keys;
use crate::layer::{DockerIgnore, LayerWriter};
use crate::listing::Listing;
use crate::options::BuildOptions;
use crate::progress::{Event, LayerStatus, Progress};
use crate::registry::{Registry, ResolvedImage};
use crate::report::{ImageReport, LayerReport};
use crate::store::{self, Check, LayerDescriptor, Store};

/// What to build.
#[derive(Debug, Clone)]
pub struct DockerfileRequest {
    /// The Dockerfile.
    pub dockerfile: PathBuf,
    /// The build context directory.
    pub context: PathBuf,
    /// Where the image goes: `registry/repo:tag` (the first is pushed, the
    /// others tag the same manifest); for OCI outputs, the tag.
    pub tags: Vec<String>,
    /// `--build-arg K=V`.
    pub build_args: Vec<(String, String)>,
    /// `--target`.
    pub target: Option<String>,
    /// `--label K=V`: set on the image's config, as `docker build --label`
    /// does; kiln adds no label of its own to a Dockerfile's image.
    pub labels: Vec<(String, String)>,
}

/// A stage's result: the base's layers plus what the stage added, and the
/// config as it stands.
#[derive(Clone)]
struct Built {
    base: ResolvedImage,
    added: Vec<AddedLayer>,
    config: Value,
    /// Cache chain so far.
    chain: String,
}

impl DockerfileRequest {
    /// An error about the Dockerfile as a whole, not one of its lines.
    fn fail(&self, message: String) -> BuildError {
        BuildError::Dockerfile {
            file: self.dockerfile.clone(),
            message,
        }
    }
}

impl Built {
    /// The stage's image as it is written out, under `name`, to
    /// `target` (a registry's repository) and `tag`.
    fn finished<'a>(
        &'a self,
        name: &'a str,
        target: Option<&'a str>,
        tag: &'a str,
    ) -> crate::finish::Finished<'a> {
        crate::finish::Finished {
            name,
            base: &self.base,
            added: &self.added,
            config: &self.config,
            target,
            tag,
        }
    }
}

/// Builds the Dockerfile; errors name the Dockerfile line.
pub async fn build_dockerfile<R: Registry>(
    req: &DockerfileRequest,
    opts: &BuildOptions,
    registry: &R,
    progress: &dyn Progress,
) -> Result<ImageReport, BuildError> {
    let name = req
        .tags
        .first()
        .cloned()
        .unwrap_or_else(|| "dockerfile".to_string());
    let parsed = read_dockerfile(req)?;
    let (graph, resolved) = evaluate_with_bases(req, &parsed, opts, registry, &name).await?;
    let (images, image_stages) = copy_from_images(&graph, registry, opts, &name).await?;
    announce(&graph, &name, progress);

    let store = Store::new(&opts.cache_dir)?;
    // Scratch roots of builds that were killed: swept now. One that cannot
    // be removed stays visible in `kiln cache ls`.
    let _ = store.remove_leftovers();
    let ignore = dockerignore(req)?;
    let mut b = Builder {
        req,
        opts,
        store: &store,
        progress,
        name: &name,
        graph: &graph,
        ignore,
        context_tree: None,
        sandbox: None,
        done: image_stages,
        images,
        roots: HashMap::new(),
        reports: Vec::new(),
        work: store.scratch("dockerfile-")?,
        listings: HashMap::new(),
    };
    for &i in &graph.order {
        let built = b.stage(i, registry, &resolved).await?;
        b.done.insert(i, built);
    }
    let Some(mut result) = b.done.get(&graph.target).cloned() else {
        return Err(req.fail("the target stage was not built".into()));
    };
    if !req.labels.is_empty() {
        apply_config(&mut result.config, &ConfigChange::Label(req.labels.clone()));
    }
    let reports = std::mem::take(&mut b.reports);
    drop(b);

    let written = write_tags(req, opts, registry, &store, &name, &result, progress).await?;
    Ok(ImageReport {
        name: name.clone(),
        steps: Vec::new(),
        reference: written.reference,
        digest: written.digest,
        parent: parent_name(&result.base),
        layers: reports,
        uploaded: written.uploaded,
    })
}

/// The Dockerfile, read and parsed. The inputs are checked before any
/// work, in the user's words.
#[allow(clippy::result_large_err)] // the builder's one error type
fn read_dockerfile(req: &DockerfileRequest) -> Result<Dockerfile, BuildError> {
    let text = std::fs::read_to_string(&req.dockerfile).map_err(|e| match e.kind() {
        std::io::ErrorKind::NotFound => req.fail(format!(
            "no such Dockerfile: {} (give its path with -f)",
            req.dockerfile.display()
        )),
        _ => req.fail(format!(
            "cannot read the Dockerfile {}: {e}",
            req.dockerfile.display()
        )),
    })?;
    if !req.context.is_dir() {
        return Err(req.fail(format!(
            "the build context {} is not a directory (the last argument of kiln build -f)",
            req.context.display()
        )));
    }
    crate::dockerfile::parse(&text).map_err(|e| req.fail(e.to_string()))
}

/// The build graph, with the base images it names resolved by reference.
/// Base images are resolved first: their Env and ONBUILD triggers take
/// part in the evaluation, so the file is evaluated once to find them
/// and again with them.
async fn evaluate_with_bases<R: Registry>(
    req: &DockerfileRequest,
    parsed: &Dockerfile,
    opts: &BuildOptions,
    registry: &R,
    name: &str,
) -> Result<(BuildGraph, HashMap<String, ResolvedImage>), BuildError> {
    let mut eval = EvalOptions {
        build_args: req.build_args.clone(),
        target: req.target.clone(),
        platform: opts.platform.to_string(),
        base_images: HashMap::new(),
    };
    let first = crate::dockerfile::evaluate(parsed, &eval).map_err(|e| req.fail(e.to_string()))?;
    let mut resolved: HashMap<String, ResolvedImage> = HashMap::new();
    for &i in &first.order {
        if let Base::Image {
            reference,
            platform,
        } = &first.stages[i].base
        {
            // `FROM --platform=P` picks that platform of a multi-platform
            // base; otherwise the build's.
            let platform = match platform {
                Some(p) => p.parse().map_err(|e: String| {
                    req.fail(format!(
                        "Dockerfile:{}: FROM --platform={p}: {e}",
                        first.stages[i].line
                    ))
                })?,
                None => opts.platform.clone(),
            };
            let image = resolve(registry, name, reference, &platform, "base image").await?;
            let config = ConfigView::new(&image.config);
            eval.base_images.insert(
                reference.clone(),
                BaseImage {
                    env: config.env_pairs(),
                    onbuild: config.onbuild(),
                },
            );
            resolved.insert(reference.clone(), image);
        }
    }
    let graph = crate::dockerfile::evaluate(parsed, &eval).map_err(|e| req.fail(e.to_string()))?;
    Ok((graph, resolved))
}

/// The evaluation's warnings, then the image's start with the number of
/// steps that make layers, for the progress display.
fn announce(graph: &BuildGraph, name: &str, progress: &dyn Progress) {
    for w in &graph.warnings {
        progress.event(Event::Warning { message: w.clone() });
    }
    let steps_with_layers = graph
        .order
        .iter()
        .flat_map(|&i| &graph.stages[i].steps)
        .filter(|s| !matches!(s.kind, StepKind::Config(_)))
        .count();
    progress.event(Event::ImageStarted {
        image: name.to_string(),
        layers: steps_with_layers,
    });
}

/// The patterns that keep context files out of COPY and ADD. BuildKit's
/// rule: `<Dockerfile>.dockerignore` beside the Dockerfile wins over the
/// context's `.dockerignore`.
#[allow(clippy::result_large_err)] // the builder's one error type
fn dockerignore(req: &DockerfileRequest) -> Result<Option<DockerIgnore>, BuildError> {
    let own_ignore = {
        let mut name = req.dockerfile.as_os_str().to_os_string();
        name.push(".dockerignore");
        PathBuf::from(name)
    };
    let ignore_file = [own_ignore, req.context.join(".dockerignore")]
        .into_iter()
        .find(|p| p.is_file());
    let Some(path) = &ignore_file else {
        return Ok(None);
    };
    let text = std::fs::read_to_string(path)
        .map_err(|e| req.fail(format!("reading {}: {e}", path.display())))?;
    DockerIgnore::parse(&text).map(Some).map_err(|e| {
        req.fail(format!(
            "{} line {}: bad pattern {:?}",
            path.display(),
            e.line,
            e.pattern
        ))
    })
}

/// The image written under its first tag (`name`) where the output
/// says; for a registry, further -t tags name the same manifest: its
/// blobs are there already, so each costs a few HEAD requests and the
/// manifest PUT.
async fn write_tags<R: Registry>(
    req: &DockerfileRequest,
    opts: &BuildOptions,
    registry: &R,
    store: &Store,
    name: &str,
    result: &Built,
    progress: &dyn Progress,
) -> Result<crate::finish::Written, BuildError> {
    let (target, tag) = first_tag_target(opts, name).map_err(|m| req.fail(m.to_string()))?;
    let written = crate::finish::write_image(
        registry,
        store,
        &result.finished(name, target.as_deref(), &tag),
        opts,
        progress,
    )
    .await?;
    if let crate::options::Output::Registry = opts.output {
        for extra in req.tags.iter().skip(1) {
            let r = kiln_pipeline::reference::parse(extra).map_err(|m| req.fail(m.to_string()))?;
            let repo = format!("{}/{}", r.registry(), r.repository());
            let tag = r.tag().unwrap_or("latest");
            crate::finish::write_image(
                registry,
                store,
                &result.finished(extra, Some(&repo), tag),
                opts,
                progress,
            )
            .await?;
        }
    }
    Ok(written)
}

/// Where the first tag puts the image: for a registry, the repository
/// to push to and the tag; for a layout or archive, only the tag.
/// `latest` when the tag names none.
fn first_tag_target(
    opts: &BuildOptions,
    name: &str,
) -> Result<(Option<String>, String), kiln_pipeline::reference::ReferenceError> {
    Ok(match opts.output {
        crate::options::Output::Registry => {
            let reference = kiln_pipeline::reference::parse(name)?;
            (
                Some(format!(
                    "{}/{}",
                    reference.registry(),
                    reference.repository()
                )),
                reference.tag().unwrap_or("latest").to_string(),
            )
        }
        _ => (
            None,
            name.rsplit_once(':')
                .map_or("latest", |(_, t)| t)
                .to_string(),
        ),
    })
}

/// The base as the report names it: pinned by digest, or `scratch`.
fn parent_name(base: &ResolvedImage) -> String {
    if base.digest.is_empty() {
        "scratch".to_string()
    } else {
        format!("{}@{}", base.repository, base.digest)
    }
}

/// An image reference resolved for `platform`; errors say what it was for.
async fn resolve<R: Registry>(
    registry: &R,
    name: &str,
    reference: &str,
    platform: &crate::registry::TargetPlatform,
    what: &str,
) -> Result<ResolvedImage, BuildError> {
    registry
        .resolve(reference, platform)
        .await
        .map_err(|source| BuildError::Registry {
            image: name.to_string(),
            action: format!("resolving {what} {reference}"),
            source,
        })
}

/// `COPY --from=IMAGE` reads an image as a stage would: each one the
/// needed stages name is resolved now and stands for a stage of its own
/// past the file's (its index, by reference), whose root is unpacked only
/// when a copy from it misses the cache.
#[allow(clippy::type_complexity)]
async fn copy_from_images<R: Registry>(
    graph: &BuildGraph,
    registry: &R,
    opts: &BuildOptions,
    name: &str,
) -> Result<(HashMap<String, usize>, HashMap<usize, Built>), BuildError> {
    let mut images: HashMap<String, usize> = HashMap::new();
    let mut stages: HashMap<usize, Built> = HashMap::new();
    for &i in &graph.order {
        for step in &graph.stages[i].steps {
            let StepKind::Copy {
                from: Some(CopyFrom::Image(reference)),
                ..
            } = &step.kind
            else {
                continue;
            };
            if images.contains_key(reference) {
                continue;
            }
            let image = resolve(
                registry,
                name,
                reference,
                &opts.platform,
                "COPY --from image",
            )
            .await?;
            let index = graph.stages.len() + images.len();
            images.insert(reference.clone(), index);
            stages.insert(
                index,
                Built {
                    config: image.config.clone(),
                    chain: keys::dockerfile_base(&image.digest),
                    base: image,
                    added: Vec::new(),
                },
            );
        }
    }
    Ok((images, stages))
}

struct Builder<'a> {
    req: &'a DockerfileRequest,
    opts: &'a BuildOptions,
    store: &'a Store,
    progress: &'a dyn Progress,
    name: &'a str,
    graph: &'a BuildGraph,
    ignore: Option<DockerIgnore>,
    context_tree: Option<Tree>,
    sandbox: Option<Sandbox>,
    done: HashMap<usize, Built>,
    /// Unpacked roots of stages, by stage index, in sync with their layers.
    roots: HashMap<usize, PathBuf>,
    reports: Vec<LayerReport>,
    work: crate::store::Scratch,
    /// `COPY --from` images by reference: the index of the stage each
    /// stands for (past the file's own).
    images: HashMap<String, usize>,
    /// Listings of stages' filesystems, by stage index, in sync with their
    /// layers once made (COPY, WORKDIR and VOLUME need them).
    listings: HashMap<usize, std::sync::Arc<Listing>>,
}

mod copy_step;
mod mounts;

fn scratch() -> ResolvedImage {
    ResolvedImage {
        repository: String::new(),
        digest: String::new(),
        config: json!({
            "architecture": "amd64",
            "os": "linux",
            "config": {},
            "rootfs": {"type": "layers", "diff_ids": []},
            "history": [],
        }),
        layers: Vec::new(),
    }
}

// The private steps return the builder's one error type, as build.rs does.
#[allow(clippy::result_large_err)]
impl Builder<'_> {
    fn dferr(&self, step: &Step, message: impl std::fmt::Display) -> BuildError {
        BuildError::Dockerfile {
            file: self.req.dockerfile.clone(),
            message: format!("Dockerfile:{}: {}: {message}", step.line, step.text),
        }
    }

    /// An image reference as the stage resolved for it; stages as they are.
    fn source_stage(
        &self,
        step: &Step,
        from: &Option<CopyFrom>,
    ) -> Result<Option<usize>, BuildError> {
        match from {
            None => Ok(None),
            Some(CopyFrom::Stage(i)) => Ok(Some(*i)),
            Some(CopyFrom::Image(r)) => self
                .images
                .get(r)
                .copied()
                .map(Some)
                .ok_or_else(|| self.dferr(step, format!("image {r} was not resolved"))),
        }
    }

    fn sandbox(&mut self) -> Result<Sandbox, BuildError> {
        if let Some(s) = &self.sandbox {
            return Ok(s.clone());
        }
        let s = Sandbox::new(SandboxConfig::default()).map_err(|e| BuildError::Dockerfile {
            file: self.req.dockerfile.clone(),
            message: format!("RUN needs the sandbox: {e}"),
        })?;
        self.sandbox = Some(s.clone());
        Ok(s)
    }

    async fn stage<R: Registry>(
        &mut self,
        index: usize,
        registry: &R,
        resolved: &HashMap<String, ResolvedImage>,
    ) -> Result<Built, BuildError> {
        let graph = self.graph;
        let stage = &graph.stages[index];
        let mut built = match &stage.base {
            Base::Image { reference, .. } => {
                let image = resolved.get(reference).cloned().unwrap_or_else(scratch);
                let chain = keys::dockerfile_base(&image.digest);
                Built {
                    config: image.config.clone(),
                    base: image,
                    added: Vec::new(),
                    chain,
                }
            }
            Base::Stage(i) => self.done.get(i).cloned().unwrap_or_else(|| Built {
                base: scratch(),
                added: Vec::new(),
                config: scratch().config,
                chain: keys::dockerfile_scratch(),
            }),
            Base::Scratch => Built {
                base: scratch(),
                added: Vec::new(),
                config: scratch().config,
                chain: keys::dockerfile_scratch(),
            },
        };
        // A base without PATH (scratch included) gets Docker's default.
        ensure_default_path(&mut built.config);
        // The base's ONBUILD triggers ran as this stage's first steps; the
        // image does not pass them on (as in Docker).
        strip_onbuild(&mut built.config);
        let steps = stage.steps.clone();
        for step in &steps {
            match &step.kind {
                StepKind::Config(change) => {
                    apply_config(&mut built.config, change);
                    history(&mut built.config, &step.text, true);
                    built.chain = keys::dockerfile_step(&built.chain, &step.resolved);
                    // WORKDIR and VOLUME also make their directories, as
                    // Docker does: a layer of the missing ones, if any.
                    let dirs = match change {
                        ConfigChange::Workdir(_) => vec![workdir(&built.config)],
                        ConfigChange::Volume(v) => v.iter().map(|p| absolute("/", p)).collect(),
                        _ => Vec::new(),
                    };
                    if !dirs.is_empty() {
                        self.mkdir_step(index, &mut built, step, &dirs, registry)
                            .await?;
                    }
                }
                StepKind::Copy { .. } => self.copy_step(index, &mut built, step, registry).await?,
                StepKind::Run {
                    command,
                    env,
                    secrets,
                    mounts,
                } => {
                    let ids: Vec<&str> = secrets.iter().map(|s| s.id.as_str()).collect();
                    let bound = self.mounts_key(step, mounts)?;
                    let key = keys::dockerfile_run(&built.chain, &step.resolved, &ids, &bound);
                    let (desc, reused) = match self.store.lookup(&key, Check::Full)? {
                        Some(d) => (d, true),
                        None => {
                            let (binds, held) = self
                                .prepare_mounts(index, &built, step, mounts, registry)
                                .await?;
                            let d = self
                                .run(index, &built, step, command, env, secrets, &binds, registry)
                                .await?;
                            drop(held);
                            self.store.insert(&key, &d)?;
                            (d, false)
                        }
                    };
                    self.add_layer(index, &mut built, step, &desc, reused, key)?;
                }
            }
        }
        Ok(built)
    }

    fn add_layer(
        &mut self,
        stage: usize,
        built: &mut Built,
        step: &Step,
        desc: &LayerDescriptor,
        reused: bool,
        key: String,
    ) -> Result<(), BuildError> {
        built.chain = key;
        built.added.push(AddedLayer {
            blob: desc.blob(),
            diff_id: desc.diff_id.to_string(),
            created_by: step.text.clone(),
        });
        ConfigEdit::new(&mut built.config).push_diff_id(desc.diff_id.to_string());
        history(&mut built.config, &step.text, false);
        // A root already unpacked for this stage follows its layers.
        if let Some(root) = self.roots.get(&stage).cloned() {
            let blob = LayerBlob {
                path: self.store.path(&desc.digest),
                media_type: Some(desc.media_type.clone()),
                diff_id: desc.diff_id.to_string(),
            };
            // A RUN that ran here already changed the root itself.
            let ran_here = !reused && matches!(step.kind, StepKind::Run { .. });
            if !ran_here {
                let opts = self.unpack_opts()?;
                unpack::apply_layer_blob(&root, &blob, &opts).map_err(|e| self.dferr(step, e))?;
            }
        }
        // So does a listing of it.
        if self.listings.contains_key(&stage) {
            let layer = self
                .layer_listing(&desc.digest, &desc.media_type, &desc.diff_id.to_string())
                .map_err(|e| self.dferr(step, format!("listing its layer: {e}")))?;
            if let Some(listing) = self.listings.get_mut(&stage) {
                std::sync::Arc::make_mut(listing).apply(&layer);
            }
        }
        let status = if reused {
            LayerStatus::Reused
        } else {
            LayerStatus::Built
        };
        let label = label(step);
        // What `--explain` says of a layer that was built: what its key
        // covers, so a user sees what to keep stable for a hit.
        let reason = (!reused).then(|| {
            match &step.kind {
                StepKind::Run { .. } => "no cached layer for this command (with its args, env and secret ids) on this parent",
                StepKind::Copy { .. } => "no cached layer for these sources' content on this parent",
                StepKind::Config(_) => "no cached layer for these directories on this parent",
            }
            .to_string()
        });
        let report = LayerReport {
            label,
            status,
            digest: desc.digest.to_string(),
            size: desc.size,
            reason,
        };
        self.progress.event(report.event(self.name));
        self.reports.push(report);
        Ok(())
    }

    fn unpack_opts(&mut self) -> Result<UnpackOptions, BuildError> {
        Ok(UnpackOptions::mapped(self.sandbox()?.id_map().clone()))
    }

    fn context(&mut self) -> Result<Tree, BuildError> {
        if let Some(t) = &self.context_tree {
            return Ok(t.clone());
        }
        let ignore = self.ignore.clone();
        let tree = Tree::walk(
            &self.req.context,
            "the build context (or excluded by .dockerignore)",
            |rel, _| ignore.as_ref().is_some_and(|i| i.is_excluded(rel)),
        )
        .map_err(|e| BuildError::Dockerfile {
            file: self.req.dockerfile.clone(),
            message: e.to_string(),
        })?;
        self.context_tree = Some(tree.clone());
        Ok(tree)
    }

    /// The stage's root as built so far, unpacked now if it is not yet.
    async fn root_of<R: Registry>(
        &mut self,
        stage: usize,
        registry: &R,
    ) -> Result<PathBuf, BuildError> {
        if let Some(r) = self.roots.get(&stage) {
            return Ok(r.clone());
        }
        let built = match self.done.get(&stage) {
            Some(b) => b.clone(),
            None => {
                return Err(BuildError::Dockerfile {
                    file: self.req.dockerfile.clone(),
                    message: format!("stage {stage} is used before it is built"),
                });
            }
        };
        self.materialize(stage, &built, registry).await
    }

    /// A base layer's blob, in the store once this returns.
    async fn fetch_base_layer<R: Registry>(
        &self,
        built: &Built,
        layer: &Descriptor,
        registry: &R,
    ) -> Result<(), BuildError> {
        crate::push::fetch_blob(registry, self.store, &built.base.repository, layer)
            .await
            .map_err(|source| BuildError::Registry {
                image: self.name.to_string(),
                action: format!("downloading base layer {}", layer.digest()),
                source,
            })
    }

    async fn materialize<R: Registry>(
        &mut self,
        stage: usize,
        built: &Built,
        registry: &R,
    ) -> Result<PathBuf, BuildError> {
        let root = self.work.path().join(format!("stage-{stage}"));
        std::fs::create_dir_all(&root).map_err(|e| BuildError::Dockerfile {
            file: self.req.dockerfile.clone(),
            message: format!("creating a stage root: {e}"),
        })?;
        let opts = self.unpack_opts()?;
        let diff_ids = ConfigView::new(&built.base.config).diff_ids();
        for (layer, diff_id) in built.base.layers.iter().zip(diff_ids) {
            self.fetch_base_layer(built, layer, registry).await?;
            let digest = store::Digest::from_str(layer.digest().as_ref())?;
            let blob = LayerBlob {
                path: self.store.path(&digest),
                media_type: Some(layer.media_type().to_string()),
                diff_id,
            };
            unpack::apply_layer_blob(&root, &blob, &opts).map_err(|e| BuildError::Dockerfile {
                file: self.req.dockerfile.clone(),
                message: format!("unpacking the base image: {e}"),
            })?;
        }
        for added in &built.added {
            let digest = store::Digest::from_str(added.blob.digest().as_ref())?;
            let blob = LayerBlob {
                path: self.store.path(&digest),
                media_type: Some(added.blob.media_type().to_string()),
                diff_id: added.diff_id.clone(),
            };
            unpack::apply_layer_blob(&root, &blob, &opts).map_err(|e| BuildError::Dockerfile {
                file: self.req.dockerfile.clone(),
                message: format!("unpacking layer {}: {e}", added.created_by),
            })?;
        }
        self.roots.insert(stage, root.clone());
        Ok(root)
    }

    #[allow(clippy::too_many_arguments)]
    async fn run<R: Registry>(
        &mut self,
        stage: usize,
        built: &Built,
        step: &Step,
        command: &ShellOrExec,
        env: &[(String, String)],
        secrets: &[crate::dockerfile::SecretMount],
        binds: &[kiln_rootfs::sandbox::BindMount],
        registry: &R,
    ) -> Result<LayerDescriptor, BuildError> {
        let sandbox = self.sandbox()?;
        let root = match self.roots.get(&stage) {
            Some(r) => r.clone(),
            None => self.materialize(stage, built, registry).await?,
        };
        let config = ConfigView::new(&built.config);
        let argv = match command {
            ShellOrExec::Exec(v) => v.clone(),
            ShellOrExec::Shell(text) => {
                let mut shell = config.shell();
                if shell.is_empty() {
                    shell = vec!["/bin/sh".into(), "-c".into()];
                }
                shell.push(text.clone());
                shell
            }
        };
        let excludes = Excludes::default();
        let before = Manifest::capture(&root, &excludes).map_err(|e| self.dferr(step, e))?;
        let mut spec = RunSpec::new(&root, argv);
        for (k, v) in config.env_pairs().into_iter().chain(env.iter().cloned()) {
            spec = spec.env(k, v);
        }
        spec.workdir = config
            .working_dir()
            .filter(|w| w.starts_with('/'))
            .unwrap_or("/")
            .to_string();
        let user = config.user().unwrap_or_default();
        if !user.is_empty() {
            spec.user = User::resolve_in_root(&root, user).map_err(|e| self.dferr(step, e))?;
        }
        // HOME, when the config does not set it, is the user's from the
        // image's /etc/passwd (root's `/root`, anyone else unknown `/`),
        // as Docker sets it.
        let env_home = ConfigView::new(&built.config)
            .env_pairs()
            .iter()
            .chain(env)
            .any(|(k, _)| k == "HOME");
        if !env_home {
            let passwd = std::fs::read_to_string(root.join("etc/passwd")).unwrap_or_default();
            let home = User::home_in(&passwd, spec.user.uid)
                .unwrap_or_else(|| if spec.user.uid == 0 { "/root" } else { "/" }.to_string());
            spec = spec.env("HOME", home);
        }
        for s in secrets {
            match self.opts.secrets.iter().find(|x| x.id == s.id) {
                Some(secret) => {
                    let target = match &s.target {
                        Some(t) => t.clone(),
                        None => format!("/run/secrets/{}", s.id),
                    };
                    spec = spec.secret(target, secret.data.clone());
                }
                None if s.required => {
                    return Err(self.dferr(
                        step,
                        format!(
                            "secret {:?} is required: pass --secret id={},src=FILE",
                            s.id, s.id
                        ),
                    ));
                }
                None => {}
            }
        }
        for b in binds {
            spec = spec.mount(b.clone());
        }
        spec.network = self.opts.network;
        let label = label(step);
        let (code, tail) =
            crate::exec::run_streaming(&sandbox, &spec, self.progress, self.name, &label);
        let code = code.map_err(|e| self.dferr(step, e))?;
        if code != 0 {
            return Err(self.dferr(
                step,
                format!("exited with code {code}; last output:\n{}", tail.join("\n")),
            ));
        }
        let mut writer =
            LayerWriter::new(self.store, self.opts.compression).map_err(|e| self.dferr(step, e))?;
        let layer_opts = LayerOptions {
            epoch: Some(self.opts.source_date_epoch),
            ids: sandbox.id_map().clone(),
        };
        if let Err(e) = snapshot::layer(&root, &before, &excludes, &layer_opts, &mut writer) {
            let _ = writer.abort();
            return Err(self.dferr(step, e));
        }
        writer.finish().map_err(|e| self.dferr(step, e))
    }
}

/// Docker's PATH for Linux images, set on a stage whose base has none.
const DEFAULT_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

fn ensure_default_path(config: &mut Value) {
    let view = ConfigView::new(config);
    if view.env_pairs().iter().any(|(k, _)| k == "PATH") {
        return;
    }
    let mut env = view.env();
    env.insert(0, format!("PATH={DEFAULT_PATH}"));
    ConfigEdit::new(config).set_env(env);
}

/// The config's WorkingDir, `/` when unset.
fn workdir(config: &Value) -> String {
    ConfigView::new(config)
        .working_dir()
        .filter(|w| !w.is_empty())
        .unwrap_or("/")
        .to_string()
}

fn absolute(workdir: &str, dest: &str) -> String {
    if dest.starts_with('/') {
        dest.to_string()
    } else {
        let mut d = format!("{}/{dest}", workdir.trim_end_matches('/'));
        if dest == "." || dest == "./" {
            d = format!("{}/", workdir.trim_end_matches('/'));
        }
        d
    }
}

/// A step as progress and reports name it: its line and its text, cut.
fn label(step: &Step) -> String {
    format!("{}: {}", step.line, truncate(&step.text, 60))
}

fn truncate(text: &str, n: usize) -> String {
    if text.chars().count() <= n {
        text.to_string()
    } else {
        format!("{}…", text.chars().take(n).collect::<String>())
    }
}

fn history(config: &mut Value, created_by: &str, empty: bool) {
    let mut entry = json!({"created_by": created_by, "created": "1970-01-01T00:00:00Z"});
    if empty {
        entry["empty_layer"] = Value::Bool(true);
    }
    ConfigEdit::new(config).push_history(entry);
}

/// Applies a config instruction to the image config.
fn apply_config(config: &mut Value, change: &ConfigChange) {
    let mut c = ConfigEdit::new(config);
    // CMD and ENTRYPOINT in shell form run through the config's SHELL.
    let shell_form = |c: &ConfigEdit<'_>, cmd: &ShellOrExec| -> Vec<String> {
        match cmd {
            ShellOrExec::Exec(v) => v.clone(),
            ShellOrExec::Shell(text) => {
                let mut shell = c.view().shell();
                if shell.is_empty() {
                    shell = vec!["/bin/sh".into(), "-c".into()];
                }
                shell.push(text.clone());
                shell
            }
        }
    };
    match change {
        ConfigChange::Env(vars) => {
            let mut env: Vec<String> = c.view().env();
            for (k, v) in vars {
                let entry = format!("{k}={v}");
                match env
                    .iter_mut()
                    .find(|e| e.split_once('=').is_some_and(|(ek, _)| ek == k))
                {
                    Some(e) => *e = entry,
                    None => env.push(entry),
                }
            }
            c.set_env(env);
        }
        ConfigChange::Label(labels) => {
            for (k, v) in labels {
                c.set_label(k, v.clone());
            }
        }
        ConfigChange::Workdir(dir) => {
            let current = c.view().working_dir().unwrap_or("/").to_string();
            c.set_working_dir(if dir.starts_with('/') {
                dir.clone()
            } else {
                format!("{}/{dir}", current.trim_end_matches('/'))
            });
        }
        ConfigChange::User(u) => c.set_user(u.clone()),
        ConfigChange::Expose(ports) => ports.iter().for_each(|p| c.expose(p)),
        ConfigChange::Volume(vols) => vols.iter().for_each(|v| c.add_volume(v)),
        ConfigChange::Cmd(cmd) => {
            let v = shell_form(&c, cmd);
            c.set_cmd(Some(v));
        }
        ConfigChange::Entrypoint { command, reset_cmd } => {
            let v = shell_form(&c, command);
            c.set_entrypoint(v);
            if *reset_cmd {
                c.set_cmd(None);
            }
        }
        ConfigChange::Shell(shell) => c.set_shell(shell.clone()),
        ConfigChange::StopSignal(s) => c.set_stop_signal(s.clone()),
        ConfigChange::Healthcheck(h) => {
            let ns = |d: Option<std::time::Duration>| d.map(|d| d.as_nanos() as u64);
            let mut hc = json!({"Test": h.test});
            if let Some(v) = ns(h.interval) {
                hc["Interval"] = json!(v);
            }
            if let Some(v) = ns(h.timeout) {
                hc["Timeout"] = json!(v);
            }
            if let Some(v) = ns(h.start_period) {
                hc["StartPeriod"] = json!(v);
            }
            if let Some(r) = h.retries {
                hc["Retries"] = json!(r);
            }
            c.set_healthcheck(hc);
        }
        ConfigChange::OnBuild(trigger) => {
            let mut list = c.view().onbuild();
            list.push(trigger.clone());
            c.set_onbuild(list);
        }
        ConfigChange::Author(who) => c.set_author(who.clone()),
    }
}
