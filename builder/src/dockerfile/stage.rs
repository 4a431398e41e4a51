//! Evaluation: instructions to a [`BuildGraph`] of stages and steps, with
//! Docker's ARG rules (global ARGs before the first FROM feed FROM lines; a
//! stage sees a global only when it redeclares it, and then takes its value
//! unless it gives a default of its own; `--build-arg` sets only declared
//! ARGs and wins over any default; ARG names and defaults are substituted in
//! the scope so far), ENV and ARGs carried into stages built on a stage (as
//! BuildKit does), and the stages the target needs put in a valid build
//! order. An error in a stage the target does not need (through FROM,
//! `COPY --from`, `RUN --mount from=`) does not fail the build, as in
//! BuildKit; errors outside any stage (global ARGs, duplicate stage names)
//! always do.
//!
//! Evaluation is pure and cheap, so base images' ENV and ONBUILD (which
//! substitution and triggers need) come in [`EvalOptions::base_images`]: the
//! executor evaluates once, fetches the configs of the bases it names, and
//! evaluates again with them.

use std::collections::{BTreeSet, HashMap};

use super::DockerfileError;
use super::graph::{Base, CopyFrom, RunMount, Stage, StepKind};
use super::parse::parse_onbuild_triggers;
use super::scope::{PROXY_ARGS, Place, Scope, sub};
use super::step::step;
use super::syntax::{Dockerfile, Instruction, InstructionKind as K};

type R<T> = Result<T, DockerfileError>;

/// The evaluated Dockerfile: the executor walks `order` and, per stage, its
/// steps, keeping a running image config.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct BuildGraph {
    /// Every stage, in file order (indices are what `--from=N` names). Only
    /// the ones in `order` are sure to be whole: a stage the target does not
    /// need is evaluated only as far as its first error, which is not
    /// reported (as BuildKit skips stages the target does not reach), so
    /// its steps may stop short and, if its FROM failed, its base is
    /// `Scratch`.
    pub stages: Vec<Stage>,
    /// The stages to build, dependencies first, ending with the target;
    /// the others are not needed and are skipped.
    pub order: Vec<usize>,
    /// The stage whose result is the image.
    pub target: usize,
    /// Things worth telling the user that do not stop the build (unused
    /// build args, deprecated instructions).
    pub warnings: Vec<String>,
}

/// What evaluation needs to know about a base image's config.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct BaseImage {
    /// Its Env, for substitution in the stage built on it.
    pub env: Vec<(String, String)>,
    /// Its ONBUILD triggers, run right after FROM.
    pub onbuild: Vec<String>,
}

/// The build's inputs besides the text.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct EvalOptions {
    /// `--build-arg K=V`, in order (a later one wins).
    pub build_args: Vec<(String, String)>,
    /// `--target`; `None` builds the last stage.
    pub target: Option<String>,
    /// The platform built for (`os/arch[/variant]`), which sets the
    /// automatic `TARGETPLATFORM`-style args.
    pub platform: String,
    /// Base images' configs by reference as written after substitution.
    pub base_images: HashMap<String, BaseImage>,
}

impl Default for EvalOptions {
    fn default() -> Self {
        Self {
            build_args: Vec::new(),
            target: None,
            platform: "linux/amd64".to_string(),
            base_images: HashMap::new(),
        }
    }
}

/// One stage being evaluated.
struct Current {
    stage: Stage,
    scope: Scope,
    /// ONBUILD triggers this stage adds (its base's were run, not kept).
    onbuild: Vec<String>,
    /// Whether a CMD has been seen in this stage (not inherited from a base
    /// stage, as in BuildKit).
    cmd_set: bool,
    /// Warnings about this stage, given only if the target needs it.
    warnings: Vec<String>,
    /// The first error in this stage, where its evaluation stopped; it
    /// fails the build only if the target needs the stage.
    error: Option<DockerfileError>,
}

struct Eval<'a> {
    df: &'a Dockerfile,
    opts: &'a EvalOptions,
    build_args: HashMap<&'a str, &'a str>,
    used: BTreeSet<String>,
    global: Scope,
    names: HashMap<String, usize>,
    all_names: Vec<String>,
    done: Vec<Current>,
    /// Warnings about the whole build (stages keep their own).
    warnings: Vec<String>,
}

/// Evaluates a parsed Dockerfile into the stages and steps to build.
pub(crate) fn evaluate(df: &Dockerfile, opts: &EvalOptions) -> R<BuildGraph> {
    let mut ev = Eval {
        df,
        opts,
        build_args: opts
            .build_args
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_str()))
            .collect(),
        used: BTreeSet::new(),
        global: Scope::default(),
        names: HashMap::new(),
        all_names: df
            .instructions
            .iter()
            .filter_map(|i| match &i.kind {
                K::From { name, .. } => name.clone(),
                _ => None,
            })
            .collect(),
        done: Vec::new(),
        warnings: Vec::new(),
    };
    for (k, v) in platform_args(&opts.platform) {
        ev.global.set_arg(k, Some(v));
    }
    // The global ARGs (errors there fail any build), then each stage: its
    // FROM and the instructions up to the next.
    let mut stages: Vec<(&Instruction, Vec<&Instruction>)> = Vec::new();
    for ins in &df.instructions {
        match (&ins.kind, stages.last_mut()) {
            (K::From { .. }, _) => stages.push((ins, Vec::new())),
            (K::Arg(list), None) => {
                for (name, default) in list {
                    let name = arg_name(&ev.global, df.escape, ins.line, name)?;
                    let v = ev.arg(ins.line, &name, default.as_deref(), None)?;
                    ev.global.set_arg(&name, v);
                }
            }
            (_, Some((_, body))) => body.push(ins),
            (_, None) => {
                return Err(DockerfileError::at(
                    ins.line,
                    "the first instruction must be FROM or ARG",
                ));
            }
        }
    }
    // Stage names must be unique whichever stages are built, as in BuildKit.
    let mut seen = BTreeSet::new();
    for (from, _) in &stages {
        if let K::From { name: Some(n), .. } = &from.kind
            && !seen.insert(n.as_str())
        {
            return Err(DockerfileError::at(
                from.line,
                format!("duplicate stage name {n:?}"),
            ));
        }
    }
    // Every stage is evaluated (a later one may build on it), each as far
    // as its first error; `finish` reports the errors of needed ones only.
    for (from, body) in &stages {
        let cur = ev.stage(from, body);
        ev.done.push(cur);
    }
    ev.finish()
}

impl Current {
    /// A stage with nothing evaluated yet.
    fn new(index: usize, name: Option<String>, line: usize, base: Base) -> Self {
        Self {
            stage: Stage {
                index,
                name,
                line,
                base,
                steps: Vec::new(),
            },
            scope: Scope::default(),
            onbuild: Vec::new(),
            cmd_set: false,
            warnings: Vec::new(),
            error: None,
        }
    }
}

impl Eval<'_> {
    /// An ARG's value: a build arg, else its default (substituted in the
    /// scope so far), else (in a stage) the global one of that name, else
    /// unset. `name` is already substituted.
    fn arg(
        &mut self,
        line: usize,
        name: &str,
        default: Option<&str>,
        stage: Option<&Scope>,
    ) -> R<Option<String>> {
        if let Some(v) = self.build_args.get(name) {
            self.used.insert(name.to_string());
            return Ok(Some(v.to_string()));
        }
        let scope = stage.unwrap_or(&self.global);
        match default {
            Some(d) => sub(scope, self.df.escape, line, d).map(Some),
            None if stage.is_some() => Ok(self.global.lookup(name)),
            None => Ok(None),
        }
    }

    /// One stage, evaluated up to its first error (kept in the result).
    fn stage(&mut self, from: &Instruction, body: &[&Instruction]) -> Current {
        let index = self.done.len();
        let name = match &from.kind {
            K::From { name, .. } => name.clone(),
            _ => None,
        };
        let (mut cur, triggers) = match self.from(from, index) {
            Ok(x) => x,
            Err(e) => {
                let mut cur = Current::new(index, name.clone(), from.line, Base::Scratch);
                cur.error = Some(e);
                (cur, Vec::new())
            }
        };
        // The name counts from the stage's own FROM on (its triggers and
        // steps see it as their own stage).
        if let Some(n) = name {
            self.names.insert(n, index);
        }
        if cur.error.is_some() {
            return cur;
        }
        let run = |ev: &mut Self, cur: &mut Current| -> R<()> {
            for t in parse_onbuild_triggers(&triggers, ev.df.escape, from.line)? {
                ev.apply(cur, &t)?;
            }
            for ins in body {
                ev.apply(cur, ins)?;
            }
            Ok(())
        };
        if let Err(e) = run(self, &mut cur) {
            cur.error = Some(e);
        }
        cur
    }

    /// A stage's FROM: its base, what it inherits from it, and the base's
    /// ONBUILD triggers to run first.
    fn from(&mut self, ins: &Instruction, index: usize) -> R<(Current, Vec<String>)> {
        let K::From {
            image, platform, ..
        } = &ins.kind
        else {
            return Err(DockerfileError::at(ins.line, "internal: not FROM"));
        };
        let line = ins.line;
        let image = sub(&self.global, self.df.escape, line, image)?;
        let platform = platform
            .as_deref()
            .map(|p| sub(&self.global, self.df.escape, line, p))
            .transpose()?
            .filter(|p| !p.is_empty());
        if image.is_empty() {
            return Err(DockerfileError::at(
                line,
                "FROM's image is empty after substitution (is the ARG set?)",
            ));
        }
        let lower = image.to_ascii_lowercase();
        let earlier = self
            .names
            .get(&lower)
            .copied()
            .or_else(|| lower.parse::<usize>().ok())
            .filter(|i| *i < index);
        let (base, inherited) = if lower == "scratch" {
            (Base::Scratch, None)
        } else if let Some(i) = earlier {
            let d = &self.done[i];
            (
                Base::Stage(i),
                Some((d.scope.env.clone(), d.scope.args.clone(), d.onbuild.clone())),
            )
        } else {
            let b = self.opts.base_images.get(&image);
            let inh = b.map(|b| (b.env.clone(), Vec::new(), b.onbuild.clone()));
            (
                Base::Image {
                    reference: image.clone(),
                    platform,
                },
                inh,
            )
        };
        // A stage built on a stage inherits its ENV and, as in BuildKit,
        // the ARGs it declared (with their values).
        let (env, args, triggers) = inherited.unwrap_or_default();
        let name = match &ins.kind {
            K::From { name, .. } => name.clone(),
            _ => None,
        };
        let mut cur = Current::new(index, name, line, base);
        cur.scope = Scope {
            args,
            env,
            proxies: self.proxies(),
        };
        Ok((cur, triggers))
    }

    fn proxies(&mut self) -> Vec<(String, String)> {
        let mut out = Vec::new();
        for p in PROXY_ARGS {
            if let Some(v) = self.build_args.get(p) {
                self.used.insert(p.to_string());
                out.push((p.to_string(), v.to_string()));
            }
        }
        out
    }

    /// One instruction inside a stage.
    fn apply(&mut self, cur: &mut Current, ins: &Instruction) -> R<()> {
        match &ins.kind {
            K::Arg(list) => {
                for (name, default) in list {
                    let name = arg_name(&cur.scope, self.df.escape, ins.line, name)?;
                    let v = self.arg(ins.line, &name, default.as_deref(), Some(&cur.scope))?;
                    cur.scope.set_arg(&name, v);
                }
            }
            kind => {
                if let K::Maintainer(_) = kind {
                    cur.warnings.push(format!(
                        "Dockerfile:{}: MAINTAINER is deprecated; kiln set the image's author (use LABEL org.opencontainers.image.authors=...)",
                        ins.line
                    ));
                }
                if let K::OnBuild { trigger, .. } = kind {
                    cur.onbuild.push(trigger.clone());
                }
                let at = Place {
                    escape: self.df.escape,
                    names: &self.names,
                    current: cur.stage.index,
                    all_names: &self.all_names,
                    cmd_set: cur.cmd_set,
                };
                if let K::Copy(c) = kind {
                    for raw in &c.sources {
                        if sub(&cur.scope, self.df.escape, ins.line, raw)
                            .is_ok_and(|v| v.is_empty())
                        {
                            cur.warnings.push(format!(
                                "Dockerfile:{}: {} source {raw:?} is empty after substitution: the whole {} is copied, as Docker does (is the ARG set?)",
                                ins.line,
                                if c.add { "ADD" } else { "COPY" },
                                if c.from.is_some() { "stage" } else { "build context" },
                            ));
                        }
                    }
                }
                let s = step(&mut cur.scope, &at, ins)?;
                cur.stage.steps.push(s);
                if let K::Cmd(_) = kind {
                    cur.cmd_set = true;
                }
            }
        }
        Ok(())
    }

    fn finish(mut self) -> R<BuildGraph> {
        let mut stages = Vec::new();
        let mut errors = Vec::new();
        let mut stage_warnings = Vec::new();
        for c in self.done {
            stages.push(c.stage);
            errors.push(c.error);
            stage_warnings.push(c.warnings);
        }
        let target = match &self.opts.target {
            None => stages.len().checked_sub(1).ok_or(DockerfileError::Empty)?,
            Some(t) => {
                let lower = t.to_ascii_lowercase();
                stages
                    .iter()
                    .position(|s| s.name.as_deref() == Some(lower.as_str()))
                    .ok_or_else(|| DockerfileError::UnknownTarget {
                        target: t.clone(),
                        stages: stages
                            .iter()
                            .map(|s| s.name.clone().unwrap_or_else(|| s.index.to_string()))
                            .collect::<Vec<_>>()
                            .join(", "),
                    })?
            }
        };
        // Only what the target needs is built, so only its errors count;
        // `order` is in file order, so this is the first of them.
        let order = needed(&stages, target);
        if let Some(e) = order.iter().find_map(|&i| errors[i].clone()) {
            return Err(e);
        }
        for &i in &order {
            self.warnings.append(&mut stage_warnings[i]);
        }
        for (k, _) in &self.opts.build_args {
            if !self.used.contains(k) && !PROXY_ARGS.contains(&k.as_str()) {
                self.warnings.push(format!(
                    "build-arg {k} was not consumed: no ARG {k} in the Dockerfile"
                ));
            }
        }
        self.warnings.dedup();
        Ok(BuildGraph {
            stages,
            order,
            target,
            warnings: self.warnings,
        })
    }
}

/// An ARG's name, substituted in the scope so far (`ARG ${prefix}_x=1`), as
/// Docker's classic builder does; each name on a line sees the ones before
/// it.
fn arg_name(scope: &Scope, escape: char, line: usize, raw: &str) -> R<String> {
    let name = sub(scope, escape, line, raw)?;
    if name.is_empty() || name.contains(|c: char| c.is_whitespace() || c == '=') {
        return Err(DockerfileError::at(
            line,
            format!("invalid ARG name {raw:?} (it is {name:?} after substitution)"),
        ));
    }
    Ok(name)
}

/// The stages `target` needs, through FROM, COPY --from and RUN --mount
/// from=, in index order (every dependency has a lower index, so that is a
/// valid build order).
fn needed(stages: &[Stage], target: usize) -> Vec<usize> {
    let mut seen = BTreeSet::new();
    let mut todo = vec![target];
    while let Some(i) = todo.pop() {
        let Some(s) = stages.get(i) else { continue };
        if !seen.insert(i) {
            continue;
        }
        if let Base::Stage(b) = s.base {
            todo.push(b);
        }
        for st in &s.steps {
            match &st.kind {
                StepKind::Copy {
                    from: Some(CopyFrom::Stage(f)),
                    ..
                } => todo.push(*f),
                StepKind::Run { mounts, .. } => {
                    todo.extend(mounts.iter().filter_map(|m| match m {
                        RunMount::Cache {
                            from: Some(CopyFrom::Stage(f)),
                            ..
                        }
                        | RunMount::Bind {
                            from: Some(CopyFrom::Stage(f)),
                            ..
                        } => Some(*f),
                        _ => None,
                    }));
                }
                _ => {}
            }
        }
    }
    seen.into_iter().collect()
}

/// BuildKit's automatic platform args; kiln builds natively, so the build
/// platform is the target platform.
fn platform_args(platform: &str) -> Vec<(&'static str, String)> {
    let mut parts = platform.split('/');
    let os = parts.next().unwrap_or("linux").to_string();
    let arch = parts.next().unwrap_or("amd64").to_string();
    let variant = parts.next().unwrap_or("").to_string();
    vec![
        ("TARGETPLATFORM", platform.to_string()),
        ("TARGETOS", os.clone()),
        ("TARGETARCH", arch.clone()),
        ("TARGETVARIANT", variant.clone()),
        ("BUILDPLATFORM", platform.to_string()),
        ("BUILDOS", os),
        ("BUILDARCH", arch),
        ("BUILDVARIANT", variant),
    ]
}
