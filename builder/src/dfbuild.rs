//! Building a Dockerfile (`kiln build -f`), Kaniko-style: the evaluated
//! stages in dependency order, one layer per RUN (sandbox + snapshot) and
//! per COPY/ADD (a tar written straight from the files), every one cached
//! under a key chained from the base, the resolved instruction and, for
//! COPY/ADD, the content of its sources. A miss in the middle does not stop
//! later steps from hitting when their inputs are unchanged. A root
//! filesystem is unpacked only when a RUN misses or a stage is copied from.

use std::collections::HashMap;
use std::io::{self, Read as _};
use std::path::{Path, PathBuf};
use std::str::FromStr as _;

use kiln_common::sandbox::{RunSpec, Sandbox, SandboxConfig, User};
use kiln_common::snapshot::{self, Excludes, LayerOptions, Manifest};
use kiln_common::unpack::{self, LayerBlob, UnpackOptions};
use serde_json::{Value, json};

use crate::build::{BuildError, BuildOptions, ImageReport, LayerReport};
use crate::copy::{self, Planned, Stamp, Tree};
use crate::dockerfile::{
    Base, BaseImage, BuildGraph, ConfigChange, CopyFrom, EvalOptions, ShellOrExec, Step, StepKind,
};
use crate::image::{AddedLayer, Descriptor};
use crate::layer::{DockerIgnore, LayerWriter};
use crate::progress::{Event, LayerStatus, Progress};
use crate::registry::{Registry, ResolvedImage};
use crate::store::{self, Check, LayerDescriptor, Store, cache_key};

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
    let text = std::fs::read_to_string(&req.dockerfile).map_err(|source| BuildError::Output {
        path: req.dockerfile.clone(),
        source,
    })?;
    let fail = |message: String| BuildError::Dockerfile {
        file: req.dockerfile.clone(),
        message,
    };
    let parsed = crate::dockerfile::parse(&text).map_err(|e| fail(e.to_string()))?;
    let mut eval = EvalOptions {
        build_args: req.build_args.clone(),
        target: req.target.clone(),
        platform: opts.platform.to_string(),
        base_images: HashMap::new(),
    };
    // Base images are resolved first: their Env and ONBUILD triggers take
    // part in the evaluation.
    let first = crate::dockerfile::evaluate(&parsed, &eval).map_err(|e| fail(e.to_string()))?;
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
                    fail(format!(
                        "Dockerfile:{}: FROM --platform={p}: {e}",
                        first.stages[i].line
                    ))
                })?,
                None => opts.platform.clone(),
            };
            let image = registry
                .resolve(reference, &platform)
                .await
                .map_err(|source| BuildError::Registry {
                    image: name.clone(),
                    action: format!("resolving base image {reference}"),
                    source,
                })?;
            let config = &image.config["config"];
            eval.base_images.insert(
                reference.clone(),
                BaseImage {
                    env: crate::image::config_env(&image.config),
                    onbuild: strings(&config["OnBuild"]),
                },
            );
            resolved.insert(reference.clone(), image);
        }
    }
    let graph = crate::dockerfile::evaluate(&parsed, &eval).map_err(|e| fail(e.to_string()))?;
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
        image: name.clone(),
        layers: steps_with_layers,
    });

    let store = Store::new(&opts.cache_dir)?;
    // Scratch roots of builds that were killed: swept now. One that cannot
    // be removed stays visible in `kiln cache ls`.
    let _ = store.remove_leftovers();
    let ignore = match std::fs::read_to_string(req.context.join(".dockerignore")) {
        Ok(text) => Some(DockerIgnore::parse(&text).map_err(|e| {
            fail(format!(
                ".dockerignore line {}: bad pattern {:?}",
                e.line, e.pattern
            ))
        })?),
        Err(_) => None,
    };
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
        done: HashMap::new(),
        roots: HashMap::new(),
        reports: Vec::new(),
        work: store.scratch("dockerfile-")?,
    };
    for &i in &graph.order {
        let built = b.stage(i, registry, &resolved).await?;
        b.done.insert(i, built);
    }
    let Some(result) = b.done.get(&graph.target).cloned() else {
        return Err(fail("the target stage was not built".into()));
    };
    let reports = std::mem::take(&mut b.reports);
    drop(b);

    let (target, tag) = match opts.output {
        crate::build::Output::Registry => {
            let reference = kiln_common::reference::parse(&name).map_err(fail)?;
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
    };
    let written = crate::finish::write_image(
        registry,
        &store,
        &crate::finish::Finished {
            name: &name,
            base: &result.base,
            added: &result.added,
            config: &result.config,
            target: target.as_deref(),
            tag: &tag,
        },
        opts,
        progress,
    )
    .await?;
    // Further -t tags name the same manifest: its blobs are there already,
    // so each costs a few HEAD requests and the manifest PUT.
    if let crate::build::Output::Registry = opts.output {
        for extra in req.tags.iter().skip(1) {
            let r = kiln_common::reference::parse(extra).map_err(fail)?;
            let repo = format!("{}/{}", r.registry(), r.repository());
            crate::finish::write_image(
                registry,
                &store,
                &crate::finish::Finished {
                    name: extra,
                    base: &result.base,
                    added: &result.added,
                    config: &result.config,
                    target: Some(&repo),
                    tag: r.tag().unwrap_or("latest"),
                },
                opts,
                progress,
            )
            .await?;
        }
    }
    let parent = if result.base.digest.is_empty() {
        "scratch".to_string()
    } else {
        format!("{}@{}", result.base.repository, result.base.digest)
    };
    Ok(ImageReport {
        name: name.clone(),
        steps: Vec::new(),
        reference: written.reference,
        digest: written.digest,
        parent,
        layers: reports,
        uploaded: written.uploaded,
    })
}

fn strings(v: &Value) -> Vec<String> {
    v.as_array()
        .map(|a| {
            a.iter()
                .filter_map(|s| s.as_str().map(String::from))
                .collect()
        })
        .unwrap_or_default()
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
}

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
                let chain = cache_key(&["df-v1", "from", &image.digest]);
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
                chain: cache_key(&["df-v1", "scratch"]),
            }),
            Base::Scratch => Built {
                base: scratch(),
                added: Vec::new(),
                config: scratch().config,
                chain: cache_key(&["df-v1", "scratch"]),
            },
        };
        // The base's ONBUILD triggers ran as this stage's first steps; the
        // image does not pass them on (as in Docker).
        if let Some(c) = built.config["config"].as_object_mut() {
            c.remove("OnBuild");
        }
        let steps = stage.steps.clone();
        for step in &steps {
            match &step.kind {
                StepKind::Config(change) => {
                    apply_config(&mut built.config, change);
                    history(&mut built.config, &step.text, true);
                    built.chain = cache_key(&[&built.chain, &step.resolved]);
                }
                StepKind::Copy {
                    sources,
                    dest,
                    from,
                    chown,
                    chmod,
                    add,
                    parents,
                    exclude,
                    inline,
                    ..
                } => {
                    if !inline.is_empty() {
                        return Err(
                            self.dferr(step, "heredoc files (COPY <<EOF) are not supported yet")
                        );
                    }
                    if *parents {
                        return Err(self.dferr(step, "COPY --parents is not supported yet"));
                    }
                    if !exclude.is_empty() {
                        return Err(self.dferr(step, "--exclude is not supported yet"));
                    }
                    if let Some(url) = sources.iter().find(|s| {
                        let l = s.to_ascii_lowercase();
                        l.starts_with("http://") || l.starts_with("https://")
                    }) {
                        return Err(self
                            .dferr(step, format!("ADD from a URL ({url}) is not supported yet")));
                    }
                    if let Some(CopyFrom::Image(reference)) = from {
                        return Err(self.dferr(
                            step,
                            format!("COPY --from an image ({reference}) is not supported; add a stage `FROM {reference} AS src` and copy from it"),
                        ));
                    }
                    let workdir = built.config["config"]["WorkingDir"]
                        .as_str()
                        .unwrap_or("/")
                        .to_string();
                    let dest = absolute(&workdir, dest);
                    // The key covers the sources' content: the context's
                    // files are hashed (cheap); another stage's files are
                    // named by that stage's own chained key, so a cache hit
                    // needs no unpacked root.
                    let (planned, source_key) = match from {
                        Some(CopyFrom::Stage(i)) => {
                            let chain = self
                                .done
                                .get(i)
                                .map(|b| b.chain.clone())
                                .unwrap_or_default();
                            (None, format!("stage:{chain}"))
                        }
                        _ => {
                            let tree = self.context()?;
                            let planned = copy::plan(&tree, sources, &dest)
                                .map_err(|e| self.dferr(step, e))?;
                            let content =
                                copy::content_key(&planned).map_err(|e| self.dferr(step, e))?;
                            (Some(planned), content)
                        }
                    };
                    let key = cache_key(&[&built.chain, &step.resolved, &source_key]);
                    let (desc, reused) = match self.store.lookup(&key, Check::Full)? {
                        Some(d) => (d, true),
                        None => {
                            let planned = match (planned, from) {
                                (Some(p), _) => p,
                                (None, Some(CopyFrom::Stage(i))) => {
                                    let root = self.root_of(*i, registry).await?;
                                    let tree =
                                        Tree::walk(&root, &format!("stage {i}"), |_, _| false)
                                            .map_err(|e| self.dferr(step, e))?;
                                    copy::plan(&tree, sources, &dest)
                                        .map_err(|e| self.dferr(step, e))?
                                }
                                (None, _) => Vec::new(),
                            };
                            // `COPY file /etc`: into /etc when the image has
                            // that directory, as Docker does (not over it).
                            let dest_rel = dest.trim_start_matches('/').trim_end_matches('/');
                            let planned = match planned.as_slice() {
                                [one]
                                    if one.kind != copy::Kind::Dir
                                        && one.dest == dest_rel
                                        && !dest_rel.is_empty() =>
                                {
                                    let root = match self.roots.get(&index) {
                                        Some(r) => r.clone(),
                                        None => self.materialize(index, &built, registry).await?,
                                    };
                                    let is_dir =
                                        unpack::resolve_in_root(&root, Path::new(dest_rel), true)
                                            .is_ok_and(|r| r.missing == 0 && r.host_path.is_dir());
                                    if is_dir {
                                        let name = one
                                            .source
                                            .file_name()
                                            .map(|n| n.to_string_lossy().into_owned())
                                            .unwrap_or_default();
                                        vec![Planned {
                                            dest: format!("{dest_rel}/{name}"),
                                            ..one.clone()
                                        }]
                                    } else {
                                        planned
                                    }
                                }
                                _ => planned,
                            };
                            let (uid, gid) = match chown {
                                Some(spec) => self
                                    .owner(index, spec, &built, registry)
                                    .await
                                    .map_err(|e| self.dferr(step, e))?,
                                None => (0, 0),
                            };
                            let stamp = Stamp {
                                uid,
                                gid,
                                chmod: *chmod,
                                mtime: self.opts.source_date_epoch,
                            };
                            let d = self
                                .write_copy(&planned, &dest, &stamp, *add)
                                .map_err(|e| self.dferr(step, e))?;
                            self.store.insert(&key, &d)?;
                            (d, false)
                        }
                    };
                    self.add_layer(index, &mut built, step, &desc, reused, key)?;
                }
                StepKind::Run {
                    command,
                    env,
                    secrets,
                    mounts,
                } => {
                    if let Some(m) = mounts.first() {
                        let kind = match m {
                            crate::dockerfile::RunMount::Cache { .. } => "cache",
                            crate::dockerfile::RunMount::Bind { .. } => "bind",
                            crate::dockerfile::RunMount::Tmpfs { .. } => "tmpfs",
                        };
                        return Err(self.dferr(
                            step,
                            format!("RUN --mount=type={kind} is not supported yet"),
                        ));
                    }
                    let ids: Vec<&str> = secrets.iter().map(|s| s.id.as_str()).collect();
                    let key = cache_key(&[&built.chain, &step.resolved, &ids.join(",")]);
                    let (desc, reused) = match self.store.lookup(&key, Check::Full)? {
                        Some(d) => (d, true),
                        None => {
                            let d = self
                                .run(index, &built, step, command, env, secrets, registry)
                                .await?;
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
            blob: Descriptor {
                media_type: desc.media_type.clone(),
                digest: desc.digest.to_string(),
                size: desc.size,
            },
            diff_id: desc.diff_id.to_string(),
            created_by: step.text.clone(),
        });
        if let Some(ids) = built.config["rootfs"]["diff_ids"].as_array_mut() {
            ids.push(Value::String(desc.diff_id.to_string()));
        } else {
            built.config["rootfs"] =
                json!({"type": "layers", "diff_ids": [desc.diff_id.to_string()]});
        }
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
        let status = if reused {
            LayerStatus::Reused
        } else {
            LayerStatus::Built
        };
        let label = label(step);
        self.progress.event(Event::Layer {
            image: self.name.to_string(),
            label: label.clone(),
            status,
            digest: desc.digest.to_string(),
            size: desc.size,
            reason: None,
        });
        self.reports.push(LayerReport {
            label,
            status,
            digest: desc.digest.to_string(),
            size: desc.size,
            reason: None,
        });
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
        let diff_ids = strings(&built.base.config["rootfs"]["diff_ids"]);
        for (layer, diff_id) in built.base.layers.iter().zip(diff_ids) {
            crate::push::fetch_blob(registry, self.store, &built.base.repository, layer)
                .await
                .map_err(|source| BuildError::Registry {
                    image: self.name.to_string(),
                    action: format!("downloading base layer {}", layer.digest),
                    source,
                })?;
            let digest = store::Digest::from_str(&layer.digest)?;
            let blob = LayerBlob {
                path: self.store.path(&digest),
                media_type: Some(layer.media_type.clone()),
                diff_id,
            };
            unpack::apply_layer_blob(&root, &blob, &opts).map_err(|e| BuildError::Dockerfile {
                file: self.req.dockerfile.clone(),
                message: format!("unpacking the base image: {e}"),
            })?;
        }
        for added in &built.added {
            let digest = store::Digest::from_str(&added.blob.digest)?;
            let blob = LayerBlob {
                path: self.store.path(&digest),
                media_type: Some(added.blob.media_type.clone()),
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

    /// `--chown`: numeric ids as given; names from the stage's /etc/passwd
    /// and /etc/group.
    async fn owner<R: Registry>(
        &mut self,
        stage: usize,
        spec: &str,
        built: &Built,
        registry: &R,
    ) -> Result<(u64, u64), String> {
        let (user, group) = match spec.split_once(':') {
            Some((u, g)) => (u, Some(g)),
            None => (spec, None),
        };
        if let (Ok(u), None) = (user.parse::<u64>(), group) {
            return Ok((u, u));
        }
        if let (Ok(u), Some(Ok(g))) = (user.parse::<u64>(), group.map(str::parse::<u64>)) {
            return Ok((u, g));
        }
        let root = match self.roots.get(&stage) {
            Some(r) => r.clone(),
            None => self
                .materialize(stage, built, registry)
                .await
                .map_err(|e| e.to_string())?,
        };
        let u = User::resolve_in_root(&root, spec).map_err(|e| format!("--chown={spec}: {e}"))?;
        Ok((u64::from(u.uid), u64::from(u.gid)))
    }

    fn write_copy(
        &self,
        planned: &[Planned],
        dest: &str,
        stamp: &Stamp,
        add: bool,
    ) -> Result<LayerDescriptor, String> {
        let mut writer =
            LayerWriter::new(self.store, self.opts.compression).map_err(|e| e.to_string())?;
        let result = if add {
            write_add(planned, dest, stamp, &mut writer)
        } else {
            copy::write_tar(planned, dest, stamp, &mut writer)
                .map(|_| ())
                .map_err(|e| e.to_string())
        };
        if let Err(e) = result {
            let _ = writer.abort();
            return Err(e);
        }
        writer.finish().map_err(|e| e.to_string())
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
        registry: &R,
    ) -> Result<LayerDescriptor, BuildError> {
        let sandbox = self.sandbox()?;
        let root = match self.roots.get(&stage) {
            Some(r) => r.clone(),
            None => self.materialize(stage, built, registry).await?,
        };
        let config = &built.config["config"];
        let argv = match command {
            ShellOrExec::Exec(v) => v.clone(),
            ShellOrExec::Shell(text) => {
                let mut shell = strings(&config["Shell"]);
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
        for (k, v) in crate::image::config_env(&built.config)
            .into_iter()
            .chain(env.iter().cloned())
        {
            spec = spec.env(k, v);
        }
        spec.workdir = config["WorkingDir"]
            .as_str()
            .filter(|w| w.starts_with('/'))
            .unwrap_or("/")
            .to_string();
        let user = config["User"].as_str().unwrap_or_default();
        if !user.is_empty() {
            spec.user = User::resolve_in_root(&root, user).map_err(|e| self.dferr(step, e))?;
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

/// ADD: local tar archives (plain or compressed) are extracted into `dest`;
/// other files are copied as COPY does.
fn write_add<W: io::Write>(
    planned: &[Planned],
    dest: &str,
    stamp: &Stamp,
    out: W,
) -> Result<(), String> {
    let (archives, files): (Vec<&Planned>, Vec<&Planned>) = planned
        .iter()
        .partition(|p| p.kind == copy::Kind::File && is_archive(&p.source));
    let files: Vec<Planned> = files.into_iter().cloned().collect();
    let mut out = copy::write_tar_open(&files, dest, stamp, out).map_err(|e| e.to_string())?;
    let prefix = dest.trim_start_matches('/').trim_end_matches('/');
    for a in archives {
        let file =
            std::fs::File::open(&a.source).map_err(|e| format!("{}: {e}", a.source.display()))?;
        let reader =
            unpack::decompress(file, None).map_err(|e| format!("{}: {e}", a.source.display()))?;
        crate::add::append_archive(&a.source, reader, prefix, &mut out)
            .map_err(|e| e.to_string())?;
    }
    out.into_inner().map(|_| ()).map_err(|e| e.to_string())
}

fn is_archive(path: &Path) -> bool {
    let Ok(mut f) = std::fs::File::open(path) else {
        return false;
    };
    let mut magic = [0u8; 262];
    let n = f.read(&mut magic).unwrap_or(0);
    let m = &magic[..n];
    m.starts_with(&[0x1f, 0x8b])
        || m.starts_with(&[0x28, 0xb5, 0x2f, 0xfd])
        || m.starts_with(b"BZh")
        || m.starts_with(&[0xfd, b'7', b'z', b'X', b'Z', 0])
        || (n >= 262 && &m[257..262] == b"ustar")
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
    match config["history"].as_array_mut() {
        Some(h) => h.push(entry),
        None => config["history"] = json!([entry]),
    }
}

/// Applies a config instruction to the OCI config JSON.
fn apply_config(config: &mut Value, change: &ConfigChange) {
    if !config["config"].is_object() {
        config["config"] = json!({});
    }
    let c = &mut config["config"];
    let shell_form = |c: &Value, cmd: &ShellOrExec| -> Value {
        match cmd {
            ShellOrExec::Exec(v) => json!(v),
            ShellOrExec::Shell(text) => {
                let mut shell = strings(&c["Shell"]);
                if shell.is_empty() {
                    shell = vec!["/bin/sh".into(), "-c".into()];
                }
                shell.push(text.clone());
                json!(shell)
            }
        }
    };
    match change {
        ConfigChange::Env(vars) => {
            let mut env: Vec<String> = strings(&c["Env"]);
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
            c["Env"] = json!(env);
        }
        ConfigChange::Label(labels) => {
            if !c["Labels"].is_object() {
                c["Labels"] = json!({});
            }
            for (k, v) in labels {
                c["Labels"][k] = Value::String(v.clone());
            }
        }
        ConfigChange::Workdir(dir) => {
            let current = c["WorkingDir"].as_str().unwrap_or("/").to_string();
            c["WorkingDir"] = Value::String(if dir.starts_with('/') {
                dir.clone()
            } else {
                format!("{}/{dir}", current.trim_end_matches('/'))
            });
        }
        ConfigChange::User(u) => c["User"] = Value::String(u.clone()),
        ConfigChange::Expose(ports) => {
            if !c["ExposedPorts"].is_object() {
                c["ExposedPorts"] = json!({});
            }
            for p in ports {
                c["ExposedPorts"][p] = json!({});
            }
        }
        ConfigChange::Volume(vols) => {
            if !c["Volumes"].is_object() {
                c["Volumes"] = json!({});
            }
            for v in vols {
                c["Volumes"][v] = json!({});
            }
        }
        ConfigChange::Cmd(cmd) => {
            let v = shell_form(c, cmd);
            c["Cmd"] = v;
        }
        ConfigChange::Entrypoint { command, reset_cmd } => {
            let v = shell_form(c, command);
            c["Entrypoint"] = v;
            if *reset_cmd {
                c["Cmd"] = Value::Null;
            }
        }
        ConfigChange::Shell(shell) => c["Shell"] = json!(shell),
        ConfigChange::StopSignal(s) => c["StopSignal"] = Value::String(s.clone()),
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
            c["Healthcheck"] = hc;
        }
        ConfigChange::OnBuild(trigger) => {
            let mut list = strings(&c["OnBuild"]);
            list.push(trigger.clone());
            c["OnBuild"] = json!(list);
        }
        ConfigChange::Author(who) => config["author"] = Value::String(who.clone()),
    }
}
