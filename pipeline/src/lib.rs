//! kiln-pipeline: the pipeline file (`kiln.yaml`): parse, validate, and
//! resolve each step's effective settings (step > pipeline > orchestrator >
//! kiln's defaults); the step DAG; and the naming rules of the systems kiln
//! talks to (OCI references, Kubernetes labels and quantities, cron).
//!
//! Pure by design: it parses from text and does no I/O at all (no async
//! runtime, no network, no file reads), so the model can be tested with
//! plain strings and used by every other kiln crate without pulling I/O in.
//! Reading kiln.yaml and resolving the paths it names on disk is the
//! runner's (`kiln_runner::pipeline_file`), through
//! [`Pipeline::parse_bytes`] and [`Pipeline::check_paths`].

// A test reads best as one list of steps; the 120-line limit is for the
// product's code.
#![cfg_attr(test, allow(clippy::too_many_lines))]

pub mod cron;
pub mod dag;
mod error;
mod k8s;
mod model;
pub mod paths;
pub mod reference;
pub mod time;
mod validate;

use std::path::{Path, PathBuf};

use serde::Serialize;
use serde_saphyr::Location;

pub use error::{Diagnostic, PipelineError, Result};
pub use model::*;

/// A pipeline file that parsed and passed validation.
#[derive(Debug, Clone)]
pub struct Pipeline {
    file: PathBuf,
    model: PipelineFile,
    order: Vec<usize>,
}

/// The settings a step runs with once every level is merged.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct EffectiveSettings {
    /// Image settings.
    pub docker: ImageSettings,
    /// Kubernetes settings.
    pub kubernetes: KubernetesSettings,
    /// Local orchestrator settings.
    pub local: LocalSettings,
    /// The retry policy in force.
    pub retry: EffectiveRetry,
}

/// A resolved retry policy: the step's own, else the orchestrator's
/// `pod_failure_*` settings.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct EffectiveRetry {
    /// Attempts after the first.
    pub max_retries: u32,
    /// Seconds before the first retry.
    pub delay_seconds: f64,
    /// Factor applied to the delay after each retry.
    pub backoff: f64,
}

/// A value with no place in the file: a default, or one set on the
/// command line.
pub fn spanned<T>(value: T) -> Spanned<T> {
    Spanned::new(value, Location::UNKNOWN, Location::UNKNOWN)
}

/// The default parent image, as for a ZenML user without one configured.
pub const DEFAULT_PARENT_IMAGE: &str = "docker.io/library/python:3.11-slim-bookworm";

impl ImageSettings {
    /// kiln's defaults: the lowest level of the hierarchy.
    pub fn defaults() -> Self {
        Self {
            parent_image: Some(spanned(DEFAULT_PARENT_IMAGE.to_string())),
            install_stack_requirements: Some(true),
            python_package_installer: Some(Installer::Pip),
            workdir: Some(spanned("/app".into())),
            source_root: Some(spanned(".".into())),
            allow_including_files_in_images: Some(true),
            skip_build: Some(false),
            prevent_build_reuse: Some(false),
            ..Self::default()
        }
    }
}

impl KubernetesSettings {
    /// The orchestrator's defaults, as documented by ZenML (namespace `kiln`).
    pub fn defaults() -> Self {
        Self {
            incluster: Some(spanned(false)),
            kubernetes_namespace: Some(spanned("kiln".into())),
            local: Some(spanned(false)),
            skip_local_validations: Some(spanned(false)),
            parallel_step_startup_waiting_period: Some(spanned(0.0)),
            synchronous: Some(true),
            timeout: Some(spanned(0)),
            stream_step_logs: Some(true),
            privileged: Some(false),
            pod_startup_timeout: Some(spanned(600)),
            pod_failure_max_retries: Some(spanned(3)),
            pod_failure_retry_delay: Some(spanned(10.0)),
            pod_failure_backoff: Some(spanned(1.0)),
            backoff_limit_margin: Some(spanned(0)),
            prevent_orchestrator_pod_caching: Some(false),
            ..Self::default()
        }
    }
}

impl Pipeline {
    /// Parses and validates pipeline text; `file` names it in messages.
    pub fn parse(source: &str, file: impl Into<PathBuf>) -> Result<Self> {
        let file = file.into();
        let model: PipelineFile =
            serde_saphyr::from_str_with_options(source, parse_options(source)).map_err(|e| {
                let location = e.location().unwrap_or(Location::UNKNOWN);
                PipelineError::Invalid {
                    file: file.clone(),
                    diagnostics: vec![Diagnostic::at(
                        location,
                        parse_message(&e, source, location),
                    )],
                }
            })?;
        let diagnostics = validate::validate(&model);
        if !diagnostics.is_empty() {
            return Err(PipelineError::Invalid { file, diagnostics });
        }
        let upstream: Vec<Vec<usize>> = model
            .steps
            .value
            .iter()
            .map(|s| {
                s.upstream
                    .iter()
                    .filter_map(|u| {
                        model
                            .steps
                            .value
                            .iter()
                            .position(|o| o.name.value == u.value)
                    })
                    .collect()
            })
            .collect();
        let order =
            crate::dag::topological_order(&upstream).map_err(|_| PipelineError::Invalid {
                file: file.clone(),
                diagnostics: vec![Diagnostic::at(
                    model.steps.referenced,
                    "the steps form a cycle",
                )],
            })?;
        Ok(Self { file, model, order })
    }

    /// Parses and validates the bytes of a pipeline file: as [`parse`](Self::parse),
    /// with a located error for bytes that are not UTF-8.
    pub fn parse_bytes(bytes: &[u8], file: impl Into<PathBuf>) -> Result<Self> {
        let file = file.into();
        match std::str::from_utf8(bytes) {
            Ok(source) => Self::parse(source, file),
            Err(e) => Err(PipelineError::Invalid {
                file,
                diagnostics: vec![invalid_utf8(bytes, e.valid_up_to())],
            }),
        }
    }

    /// Judges every path the file names (at every settings level) with
    /// `check`; one located diagnostic per path it refuses, in file order.
    /// The loader passes a check that resolves each path on disk, symlinks
    /// followed, so this crate does no I/O.
    pub fn check_paths<E: std::fmt::Display>(
        &self,
        check: impl Fn(&str) -> std::result::Result<(), E>,
    ) -> Result<()> {
        let m = &self.model;
        let mut paths = Vec::new();
        for s in std::iter::once(&m.settings).chain(m.steps.value.iter().map(|s| &s.settings)) {
            if let Some(d) = &s.docker {
                paths.extend(d.project_paths());
            }
            if let Some(l) = &s.local {
                paths.extend(l.project_paths());
            }
        }
        if let Some(l) = &m.orchestrator.local {
            paths.extend(l.project_paths());
        }
        let mut diagnostics: Vec<Diagnostic> = paths
            .into_iter()
            .filter_map(|(key, at, value)| {
                let e = check(value).err()?;
                Some(Diagnostic::at(at, format!("{key}: {e}")))
            })
            .collect();
        if diagnostics.is_empty() {
            return Ok(());
        }
        diagnostics.sort_by_key(|d| (d.line, d.column));
        Err(PipelineError::Invalid {
            file: self.file.clone(),
            diagnostics,
        })
    }

    /// The file this pipeline came from.
    pub fn file(&self) -> &Path {
        &self.file
    }

    /// The directory relative paths in the file are resolved against.
    pub fn base_dir(&self) -> &Path {
        match self.file.parent() {
            Some(p) if !p.as_os_str().is_empty() => p,
            _ => Path::new("."),
        }
    }

    /// The pipeline's name.
    pub fn name(&self) -> &str {
        &self.model.name.value
    }

    /// The parsed file.
    pub fn model(&self) -> &PipelineFile {
        &self.model
    }

    /// Steps in declaration order.
    pub fn steps(&self) -> &[Step] {
        &self.model.steps.value
    }

    /// Steps in a topological order: every step after all its upstream steps.
    pub fn ordered_steps(&self) -> impl Iterator<Item = &Step> {
        self.order.iter().map(|&i| &self.model.steps.value[i])
    }

    /// The step with this name.
    pub fn step(&self, name: &str) -> Result<&Step> {
        self.steps()
            .iter()
            .find(|s| s.name.value == name)
            .ok_or_else(|| PipelineError::UnknownStep {
                name: name.to_string(),
                known: self.steps().iter().map(|s| s.name.value.clone()).collect(),
            })
    }

    /// The Kubernetes settings of the run as a whole (the orchestrator Job,
    /// connection, parallelism): the pipeline's settings over the
    /// orchestrator config over kiln's defaults, without any step's own.
    pub fn kubernetes(&self) -> KubernetesSettings {
        let m = &self.model;
        layer(
            KubernetesSettings::defaults(),
            [
                m.orchestrator.kubernetes.clone(),
                m.settings.kubernetes.as_deref().cloned(),
            ],
        )
    }

    /// The settings step `name` runs with: its own settings over the
    /// pipeline's over the orchestrator config over kiln's defaults. Each
    /// field set at a more specific level replaces the less specific value;
    /// pod settings and resources merge field by field too.
    pub fn effective(&self, name: &str) -> Result<EffectiveSettings> {
        let step = self.step(name)?;
        let m = &self.model;
        let docker = layer(
            ImageSettings::defaults(),
            [
                None,
                m.settings.docker.as_deref().cloned(),
                step.settings.docker.as_deref().cloned(),
            ],
        );
        let kubernetes = layer(
            KubernetesSettings::defaults(),
            [
                m.orchestrator.kubernetes.clone(),
                m.settings.kubernetes.as_deref().cloned(),
                step.settings.kubernetes.as_deref().cloned(),
            ],
        );
        let local = layer(
            LocalSettings::default(),
            [
                m.orchestrator.local.clone(),
                m.settings.local.as_deref().cloned(),
                step.settings.local.as_deref().cloned(),
            ],
        );
        let k = &kubernetes;
        let value_or = |v: &Option<Spanned<f64>>, d: f64| v.as_ref().map_or(d, |s| s.value);
        let retry = match &step.retry {
            Some(r) => EffectiveRetry {
                max_retries: u32::try_from(r.max_retries.value).unwrap_or(0),
                delay_seconds: value_or(&r.delay, value_or(&k.pod_failure_retry_delay, 10.0)),
                backoff: value_or(&r.backoff, value_or(&k.pod_failure_backoff, 1.0)),
            },
            None => EffectiveRetry {
                max_retries: k
                    .pod_failure_max_retries
                    .as_ref()
                    .and_then(|s| u32::try_from(s.value).ok())
                    .unwrap_or(3),
                delay_seconds: value_or(&k.pod_failure_retry_delay, 10.0),
                backoff: value_or(&k.pod_failure_backoff, 1.0),
            },
        };
        Ok(EffectiveSettings {
            docker,
            kubernetes,
            local,
            retry,
        })
    }
}

/// Trait the settings macro's structs share, so levels fold generically.
trait Overlay: Sized {
    fn overlay_with(self, over: Self) -> Self;
}

macro_rules! impl_overlay {
    ($($t:ty),*) => {$(
        impl Overlay for $t {
            fn overlay_with(self, over: Self) -> Self {
                self.overlay(over)
            }
        }
    )*};
}
impl_overlay!(ImageSettings, KubernetesSettings, LocalSettings);

fn layer<T: Overlay, const N: usize>(base: T, levels: [Option<T>; N]) -> T {
    levels.into_iter().flatten().fold(base, T::overlay_with)
}

/// The message of a YAML error without its position prefix (we print our own
/// `file:line:column:`).
/// Parser limits for `source`: the defaults stop alias-expansion bombs and
/// deep nesting; the event, node and byte limits grow with the file itself,
/// so a large but honest file (830,000 steps, 48 MB) reaches its real error
/// instead of a budget's.
fn parse_options(source: &str) -> serde_saphyr::Options {
    let mut budget = serde_saphyr::Budget::default();
    let n = source.len();
    budget.max_events = budget.max_events.max(n.saturating_mul(2));
    budget.max_nodes = budget.max_nodes.max(n);
    budget.max_total_scalar_bytes = budget.max_total_scalar_bytes.max(n);
    let mut options = serde_saphyr::Options::default();
    options.budget = Some(budget);
    options
}

/// Where the first byte that is not UTF-8 is, as a diagnostic.
fn invalid_utf8(bytes: &[u8], at: usize) -> Diagnostic {
    let before = &bytes[..at.min(bytes.len())];
    let line_start = before
        .iter()
        .rposition(|&b| b == b'\n')
        .map_or(0, |i| i + 1);
    let line = before.iter().filter(|&&b| b == b'\n').count() + 1;
    let column = String::from_utf8_lossy(&before[line_start..])
        .chars()
        .count()
        + 1;
    Diagnostic {
        line: line as u64,
        column: column as u64,
        message: format!(
            "invalid UTF-8 (byte 0x{:02x} at offset {at}): kiln.yaml must be UTF-8 text",
            bytes.get(at).copied().unwrap_or(0)
        ),
    }
}

fn parse_message(e: &serde_saphyr::Error, source: &str, at: Location) -> String {
    let text = e.without_snippet().to_string();
    let first = text.lines().next().unwrap_or_default();
    let first = first.strip_prefix("error: ").unwrap_or(first);
    // "line 4 column 5: unknown field ..." -> "unknown field ..."
    let message = match first.split_once(": ") {
        Some((pos, rest)) if pos.starts_with("line ") && pos.contains(" column ") => rest,
        _ => first,
    };
    // "... at line 6, column 9" -> "..."
    let message = match message.rsplit_once(" at line ") {
        Some((head, tail)) if tail.contains(", column ") => head,
        _ => message,
    };
    // The parser's advice to its own users (serde types, its options) is
    // not for kiln's: say what is wrong with the file instead.
    if let Some(rest) = message.strip_prefix("duplicate mapping key: ") {
        let key = rest.split(", set ").next().unwrap_or(rest).trim();
        return format!("duplicate key `{key}`: a key may appear only once in a mapping");
    }
    if message.starts_with("multiple YAML documents") {
        return "a second YAML document starts here: kiln.yaml holds exactly one (no `---` between pipelines)".into();
    }
    if message.starts_with("cannot deserialize null into") {
        let (key, _) = key_and_token_at(source, at);
        return match key {
            Some(key) => format!("{key}: expected a value, found null (nothing, `~` or `null`)"),
            None => "expected a value, found null (nothing, `~` or `null`)".into(),
        };
    }
    let lower = message.to_ascii_lowercase();
    if lower.contains("budget") || lower.contains("alias") && lower.contains("limit") {
        return "the file is too large or expands too much through YAML aliases (`*name`): kiln refuses it".into();
    }
    let message = message
        .split("; use ")
        .next()
        .unwrap_or(message)
        .split(", set ")
        .next()
        .unwrap_or(message);
    // "invalid i64" says what failed, not what was expected.
    let expected = match message {
        "invalid i64" | "invalid u64" | "invalid u32" | "invalid i32" => "a whole number",
        "invalid f64" | "invalid f32" => "a number",
        "invalid bool" | "invalid boolean" => "true or false",
        _ => return message.to_string(),
    };
    let (key, token) = key_and_token_at(source, at);
    match key {
        Some(key) => format!("{key}: expected {expected}, found {token:?}"),
        None => format!("expected {expected}, found {token:?}"),
    }
}

/// The key before a location on its line (block mappings only) and the
/// scalar that starts there, for "KEY: ... found TOKEN" in messages.
fn key_and_token_at(source: &str, at: Location) -> (Option<String>, String) {
    let line = usize::try_from(at.line()).unwrap_or(0);
    let column = usize::try_from(at.column()).unwrap_or(0);
    let Some(text) = line.checked_sub(1).and_then(|l| source.lines().nth(l)) else {
        return (None, String::new());
    };
    let before: String = text.chars().take(column.saturating_sub(1)).collect();
    let rest: String = text.chars().skip(column.saturating_sub(1)).collect();
    let token = rest.split(['#', ',', '}', ']']).next().unwrap_or_default();
    let token = token.trim().trim_matches(['"', '\'']).to_string();
    let key = before
        .trim_end()
        .strip_suffix(':')
        .map(|k| k.trim_start().trim_start_matches("- ").trim().to_string())
        .filter(|k| !k.is_empty() && !k.contains([' ', '{', '[']));
    (key, token)
}

/// An error and its causes on one line, each said once: many errors fold
/// their source into their own message already.
pub fn error_chain(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        let s_text = s.to_string();
        if !text.contains(&s_text) {
            text.push_str(": ");
            text.push_str(&s_text);
        }
        source = s.source();
    }
    text
}

#[cfg(test)]
mod tests;
