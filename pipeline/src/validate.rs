//! Semantic checks of a parsed pipeline file: everything serde cannot see
//! (names, references between steps, cycles, values Kubernetes or a registry
//! would reject). Pure: works on the parsed model only.

use std::collections::HashMap;
use std::fmt;

use serde_saphyr::{Location, Spanned};

use super::error::Diagnostic;
use super::model::*;
use crate::{cron, dag, k8s, reference};

/// Collects every problem of a pipeline file, sorted by position.
/// The longest delay or wait a setting may give, in seconds (a day).
const MAX_SECONDS: f64 = 86_400.0;

/// The largest backoff factor.
const MAX_FACTOR: f64 = 100.0;

/// How many names a "expected one of" list shows before "and N more".
const LIST_AT_MOST: usize = 20;

pub(crate) fn validate(file: &PipelineFile) -> Vec<Diagnostic> {
    let mut c = Checker::default();
    c.name("pipeline name", &file.name);
    c.settings(&file.settings, Level::Pipeline);
    if let Some(k) = &file.orchestrator.kubernetes {
        c.kubernetes(k, Level::Orchestrator);
    }
    if let Some(l) = &file.orchestrator.local {
        c.local(l);
    }
    if let Some(s) = &file.schedule {
        c.schedule(s);
    }
    c.steps(&file.steps);
    c.diagnostics.sort_by_key(|d| (d.line, d.column));
    c.diagnostics
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Level {
    Orchestrator,
    Pipeline,
    Step,
}

#[derive(Default)]
struct Checker {
    diagnostics: Vec<Diagnostic>,
}

impl Checker {
    fn error(&mut self, at: Location, message: impl Into<String>) {
        self.diagnostics.push(Diagnostic::at(at, message));
    }

    fn check(&mut self, at: Location, result: Result<(), impl fmt::Display>) {
        if let Err(message) = result {
            self.error(at, message.to_string());
        }
    }

    /// Pipeline and step names: used in labels, pod names and file names.
    fn name(&mut self, what: &str, name: &Spanned<String>) {
        let n = &name.value;
        let ok = !n.is_empty()
            && n.len() <= 63
            && n.chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
            && n.starts_with(|c: char| c.is_ascii_alphanumeric());
        if !ok {
            self.error(
                name.referenced,
                format!(
                    "invalid {what} {n:?}: expected 1 to 63 letters, digits, '-', '_' or '.', starting with a letter or digit"
                ),
            );
        }
    }

    /// The steps: each on its own, then their names against each other and
    /// the DAG their upstream lists make.
    fn steps(&mut self, steps: &Spanned<Vec<Step>>) {
        if steps.value.is_empty() {
            self.error(steps.referenced, "expected at least one step under `steps`");
            return;
        }
        let index = self.step_index(&steps.value);
        self.folded_collisions(&steps.value);
        let upstream = self.upstream_edges(&steps.value, &index);
        if let Err(dag::Cycle(cycle)) = dag::topological_order(&upstream) {
            self.cycle(steps, cycle);
        }
    }

    /// Checks each step on its own and indexes the steps by name (the first
    /// of a duplicate keeps the name), which the upstream checks resolve
    /// against.
    fn step_index<'s>(&mut self, steps: &'s [Step]) -> HashMap<&'s str, usize> {
        let mut index: HashMap<&str, usize> = HashMap::new();
        for (i, step) in steps.iter().enumerate() {
            self.name("step name", &step.name);
            if let Some(&first) = index.get(step.name.value.as_str()) {
                let first_line = steps[first].name.referenced.line();
                self.error(
                    step.name.referenced,
                    format!(
                        "duplicate step name {:?} (first defined on line {first_line}); step names must be unique",
                        step.name.value
                    ),
                );
            } else {
                index.insert(&step.name.value, i);
            }
            self.step(step);
        }
        index
    }

    /// The fields of one step that need no other step to check.
    fn step(&mut self, step: &Step) {
        self.command(&step.command);
        self.environment(
            step.name.referenced,
            &format!("step {:?}: environment", step.name.value),
            &step.environment,
        );
        self.settings(&step.settings, Level::Step);
        if let Some(retry) = &step.retry {
            self.at_least("retry.max_retries", &retry.max_retries, 0);
            if let Some(d) = &retry.delay {
                self.at_least_f("retry.delay", d, 0.0);
            }
            if let Some(b) = &retry.backoff {
                self.above_f("retry.backoff", b, 0.0);
            }
        }
    }

    /// Pod names and Kubernetes labels fold case and turn `_` and `.`
    /// into `-`: two steps that fold alike would share their pods.
    fn folded_collisions(&mut self, steps: &[Step]) {
        let mut folded: HashMap<String, &Spanned<String>> = HashMap::new();
        for step in steps {
            let key = fold_k8s(&step.name.value);
            match folded.get(&key) {
                Some(first) if first.value != step.name.value => {
                    let message = format!(
                        "step name {:?} collides with {:?} (line {}) as a Kubernetes name ({key:?}): step names must differ in more than case, '_' and '.'",
                        step.name.value,
                        first.value,
                        first.referenced.line()
                    );
                    self.error(step.name.referenced, message);
                }
                Some(_) => {}
                None => {
                    folded.insert(key, &step.name);
                }
            }
        }
    }

    /// Each step's upstream steps as indices into `steps`, for the cycle
    /// check; an upstream listed twice or naming no step is an error and
    /// is left out.
    fn upstream_edges(&mut self, steps: &[Step], index: &HashMap<&str, usize>) -> Vec<Vec<usize>> {
        let mut upstream = vec![Vec::new(); steps.len()];
        for (i, step) in steps.iter().enumerate() {
            let mut listed: HashMap<&str, u64> = HashMap::new();
            for up in &step.upstream {
                if let Some(line) = listed.insert(&up.value, up.referenced.line()) {
                    self.error(
                        up.referenced,
                        format!(
                            "step {:?} lists upstream step {:?} twice (first on line {line})",
                            step.name.value, up.value
                        ),
                    );
                    continue;
                }
                match index.get(up.value.as_str()) {
                    Some(&j) => upstream[i].push(j),
                    None => {
                        let message = format!(
                            "step {:?} names unknown upstream step {:?}; expected one of: {}",
                            step.name.value,
                            up.value,
                            known_steps(index)
                        );
                        self.error(up.referenced, message);
                    }
                }
            }
        }
        upstream
    }

    /// Says the cycle `dag` found, as a loop of step names.
    fn cycle(&mut self, steps: &Spanned<Vec<Step>>, cycle: Vec<usize>) {
        let cycle = cycle_from_first(cycle);
        let names: Vec<&str> = cycle
            .iter()
            .map(|&i| steps.value[i].name.value.as_str())
            .collect();
        let at = cycle
            .first()
            .map_or(steps.referenced, |&i| steps.value[i].name.referenced);
        self.error(
            at,
            format!(
                "the steps form a cycle: {} (each must finish before the next starts); a pipeline must be a DAG",
                names.join(" -> ")
            ),
        );
    }

    fn command(&mut self, command: &Spanned<Command>) {
        let empty = match &command.value {
            Command::Shell(s) => s.trim().is_empty(),
            Command::Exec(v) => v.is_empty() || v[0].is_empty(),
        };
        if empty {
            self.error(
                command.referenced,
                "expected a non-empty command: a list such as [python3, steps/train.py] or a shell line",
            );
        }
    }

    fn settings(&mut self, settings: &Settings, level: Level) {
        if let Some(d) = &settings.docker {
            self.image(d);
        }
        if let Some(k) = &settings.kubernetes {
            self.kubernetes(k, level);
        }
        if let Some(l) = &settings.local {
            self.local(l);
        }
    }

    fn image(&mut self, d: &ImageSettings) {
        for p in d.apt_packages.iter().flatten() {
            self.check(p.referenced, check_apt_package(&p.value));
        }
        if let Some(u) = &d.user {
            self.check(u.referenced, check_user(&u.value));
        }
        if let Some(w) = &d.workdir {
            self.check(w.referenced, check_workdir(&w.value));
        }
        for (key, env) in [
            ("environment", &d.environment),
            ("runtime_environment", &d.runtime_environment),
        ] {
            if let Some(env) = env {
                self.environment(env.referenced, key, &env.value);
            }
        }
        for (key, at, value) in d.project_paths() {
            self.check(
                at,
                super::paths::check_relative(value).map_err(|e| format!("{key}: {e}")),
            );
        }
        if let Some(p) = &d.parent_image {
            self.check(p.referenced, reference::parse(&p.value).map(|_| ()));
        }
        if let Some(t) = &d.target_repository {
            self.check(t.referenced, reference::check_repository(&t.value));
        }
        if let Some(tag) = &d.image_tag {
            let v = &tag.value;
            let ok = !v.is_empty()
                && v.len() <= 128
                && v.starts_with(|c: char| c.is_ascii_alphanumeric() || c == '_')
                && v.chars()
                    .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-'));
            if !ok {
                self.error(
                    tag.referenced,
                    format!("invalid image tag {v:?}: expected up to 128 letters, digits, '_', '.' or '-', not starting with '.' or '-'"),
                );
            }
        }
        if let Some(r) = &d.requirements {
            let bad = match &r.value {
                Requirements::File(f) => f.trim().is_empty(),
                Requirements::List(l) => l.iter().any(|s| s.trim().is_empty()),
            };
            if bad {
                self.error(r.referenced, "expected a requirements file path or a list of non-empty requirement specifiers");
            }
        }
        if let Some(r) = &d.replicate_local_python_environment
            && let ReplicateLocal::Method(m) = &r.value
            && m != "pip_freeze"
            && m != "poetry_export"
        {
            self.error(
                        r.referenced,
                        format!("replicate_local_python_environment: expected pip_freeze, poetry_export, true, false or a command list, found {m:?}"),
                    );
        }
        if let Some(dockerfile) = &d.dockerfile {
            if d.skip_build == Some(true) {
                self.error(dockerfile.referenced, "dockerfile and skip_build: true exclude each other: with skip_build the parent image is used as is");
            }
            if d.parent_image.is_some() {
                self.error(dockerfile.referenced, "set either dockerfile or parent_image, not both: the Dockerfile's image is the parent");
            }
        }
    }

    fn kubernetes(&mut self, k: &KubernetesSettings, level: Level) {
        if level != Level::Orchestrator {
            self.config_only(k);
        }
        if let Some(ns) = &k.kubernetes_namespace {
            self.check(
                ns.referenced,
                k8s::check_dns_label(&ns.value).map_err(|e| format!("kubernetes_namespace: {e}")),
            );
        }
        for (what, sa) in [
            ("service_account_name", &k.service_account_name),
            (
                "step_pod_service_account_name",
                &k.step_pod_service_account_name,
            ),
        ] {
            if let Some(sa) = sa {
                self.check(
                    sa.referenced,
                    k8s::check_dns_subdomain(&sa.value).map_err(|e| format!("{what}: {e}")),
                );
            }
        }
        if let Some(p) = &k.pod_name_prefix {
            self.check(
                p.referenced,
                k8s::check_dns_label(&p.value).map_err(|e| format!("pod_name_prefix: {e}")),
            );
        }
        if let Some(v) = &k.parallel_step_startup_waiting_period {
            self.at_least_f("parallel_step_startup_waiting_period", v, 0.0);
        }
        for (what, v, min) in [
            ("timeout", &k.timeout, 0),
            ("pod_startup_timeout", &k.pod_startup_timeout, 1),
            ("pod_failure_max_retries", &k.pod_failure_max_retries, 0),
            ("backoff_limit_margin", &k.backoff_limit_margin, 0),
            ("max_parallelism", &k.max_parallelism, 1),
            (
                "successful_jobs_history_limit",
                &k.successful_jobs_history_limit,
                0,
            ),
            ("failed_jobs_history_limit", &k.failed_jobs_history_limit, 0),
            (
                "ttl_seconds_after_finished",
                &k.ttl_seconds_after_finished,
                0,
            ),
        ] {
            if let Some(v) = v {
                self.at_least(what, v, min);
            }
        }
        if let Some(v) = &k.pod_failure_retry_delay {
            self.at_least_f("pod_failure_retry_delay", v, 0.0);
        }
        if let Some(v) = &k.pod_failure_backoff {
            self.above_f("pod_failure_backoff", v, 0.0);
        }
        if let Some(p) = &k.pod_settings {
            self.pod("pod_settings", p);
        }
        if let Some(p) = &k.orchestrator_pod_settings {
            self.pod("orchestrator_pod_settings", p);
        }
    }

    /// ZenML lets some options be set only on the orchestrator component; a
    /// per-run or per-step value would be silently ignored, so it is an error.
    fn config_only(&mut self, k: &KubernetesSettings) {
        let set: [(&str, Option<Location>); 6] = [
            ("incluster", k.incluster.as_ref().map(|s| s.referenced)),
            (
                "kubernetes_context",
                k.kubernetes_context.as_ref().map(|s| s.referenced),
            ),
            (
                "kubernetes_namespace",
                k.kubernetes_namespace.as_ref().map(|s| s.referenced),
            ),
            ("local", k.local.as_ref().map(|s| s.referenced)),
            (
                "skip_local_validations",
                k.skip_local_validations.as_ref().map(|s| s.referenced),
            ),
            (
                "parallel_step_startup_waiting_period",
                k.parallel_step_startup_waiting_period
                    .as_ref()
                    .map(|s| s.referenced),
            ),
        ];
        for (key, at) in set {
            if let Some(at) = at {
                self.error(
                    at,
                    format!("`{key}` can only be set under `orchestrator.kubernetes`, not in pipeline or step settings"),
                );
            }
        }
    }

    fn pod(&mut self, what: &str, p: &PodSettings) {
        for (field, map, values_are_labels) in [
            ("labels", &p.labels, true),
            ("node_selectors", &p.node_selectors, true),
            ("annotations", &p.annotations, false),
        ] {
            let Some(map) = map else { continue };
            for (key, value) in &map.value {
                self.check(
                    map.referenced,
                    k8s::check_label_key(key).map_err(|e| format!("{what}.{field}: {e}")),
                );
                if values_are_labels {
                    self.check(
                        map.referenced,
                        k8s::check_label_value(value).map_err(|e| format!("{what}.{field}: {e}")),
                    );
                }
            }
        }
        if let Some(r) = &p.resources {
            self.resources(what, r);
        }
        for s in p.image_pull_secrets.iter().flatten() {
            self.check(
                s.referenced,
                k8s::check_dns_subdomain(&s.value)
                    .map_err(|e| format!("{what}.image_pull_secrets: {e}")),
            );
        }
        let lists = [
            ("tolerations", &p.tolerations),
            ("volumes", &p.volumes),
            ("volume_mounts", &p.volume_mounts),
            ("env", &p.env),
            ("env_from", &p.env_from),
        ];
        for (field, value) in lists {
            if let Some(v) = value {
                let ok = v
                    .value
                    .as_array()
                    .is_some_and(|items| items.iter().all(|i| i.is_object()));
                if !ok {
                    self.error(
                        v.referenced,
                        format!("{what}.{field}: expected a list of mappings (Kubernetes objects)"),
                    );
                }
            }
        }
        let objects = [
            ("affinity", &p.affinity),
            ("security_context", &p.security_context),
            ("additional_pod_spec_args", &p.additional_pod_spec_args),
        ];
        for (field, value) in objects {
            if let Some(v) = value
                && !v.value.is_object()
            {
                self.error(
                    v.referenced,
                    format!("{what}.{field}: expected a mapping (a Kubernetes object)"),
                );
            }
        }
    }

    fn resources(&mut self, what: &str, r: &Resources) {
        let mut parsed: [HashMap<&str, f64>; 2] = [HashMap::new(), HashMap::new()];
        for (slot, (field, map)) in [("requests", &r.requests), ("limits", &r.limits)]
            .into_iter()
            .enumerate()
        {
            let Some(map) = map else { continue };
            for (name, quantity) in &map.value {
                match k8s::parse_quantity(quantity) {
                    Ok(v) if v < 0.0 => self.error(
                        map.referenced,
                        format!("{what}.resources.{field}.{name}: expected a non-negative quantity, found {quantity:?}"),
                    ),
                    Ok(v) => {
                        parsed[slot].insert(name, v);
                    }
                    Err(e) => self.error(map.referenced, format!("{what}.resources.{field}.{name}: {e}")),
                }
            }
        }
        let [requests, limits] = &parsed;
        for (name, request) in requests {
            if let Some(limit) = limits.get(name)
                && request > limit
            {
                let at = r
                    .requests
                    .as_ref()
                    .map_or(Location::UNKNOWN, |m| m.referenced);
                self.error(
                    at,
                    format!("{what}.resources: the request for {name} is above its limit"),
                );
            }
        }
    }

    fn local(&mut self, l: &LocalSettings) {
        for (key, at, value) in l.project_paths() {
            self.check(
                at,
                super::paths::check_relative(value).map_err(|e| format!("local.{key}: {e}")),
            );
        }
        if let Some(p) = &l.max_parallelism {
            self.at_least("local.max_parallelism", p, 1);
        }
    }

    fn schedule(&mut self, s: &Schedule) {
        self.check(
            s.cron_expression.referenced,
            cron::check(&s.cron_expression.value)
                .map_err(|e| format!("schedule.cron_expression: {e}")),
        );
        for (what, v) in [
            (
                "schedule.starting_deadline_seconds",
                &s.starting_deadline_seconds,
            ),
            (
                "schedule.successful_jobs_history_limit",
                &s.successful_jobs_history_limit,
            ),
            (
                "schedule.failed_jobs_history_limit",
                &s.failed_jobs_history_limit,
            ),
        ] {
            if let Some(v) = v {
                self.at_least(what, v, 0);
            }
        }
    }

    /// Whole-number settings: at least `min`, and at most what Kubernetes'
    /// int32 fields hold (a larger value wrapped to 0 before).
    fn at_least(&mut self, what: &str, v: &Spanned<i64>, min: i64) {
        let max = i64::from(i32::MAX);
        if v.value < min || v.value > max {
            let expected = match (v.value > max, min) {
                (true, _) => format!("at most {max}"),
                (false, 0) => "zero or more".to_string(),
                (false, min) => format!("at least {min}"),
            };
            self.error(
                v.referenced,
                format!("{what}: expected {expected}, found {}", v.value),
            );
        }
    }

    /// Seconds (delays, waits): finite, at least `min`, at most a day
    /// (`1e20` passed validation and then panicked `kiln run`).
    fn at_least_f(&mut self, what: &str, v: &Spanned<f64>, min: f64) {
        if !v.value.is_finite() || v.value < min || v.value > MAX_SECONDS {
            self.error(
                v.referenced,
                format!(
                    "{what}: expected seconds from {min} to {MAX_SECONDS} (a day), found {}",
                    v.value
                ),
            );
        }
    }

    /// Factors (backoff): finite, above `min`, at most [`MAX_FACTOR`].
    fn above_f(&mut self, what: &str, v: &Spanned<f64>, min: f64) {
        if !v.value.is_finite() || v.value <= min || v.value > MAX_FACTOR {
            self.error(
                v.referenced,
                format!(
                    "{what}: expected a number above {min} and at most {MAX_FACTOR}, found {}",
                    v.value
                ),
            );
        }
    }

    /// Environment keys and values a process environment can carry.
    fn environment(
        &mut self,
        at: Location,
        what: &str,
        env: &std::collections::BTreeMap<String, String>,
    ) {
        for (k, value) in env {
            let key_ok = !k.is_empty()
                && !k.starts_with(|c: char| c.is_ascii_digit())
                && k.chars()
                    .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-'));
            if !key_ok {
                self.error(
                    at,
                    format!("{what}: invalid variable name {k:?}: expected letters, digits, '_', '.' or '-', not starting with a digit"),
                );
            }
            if value.contains('\0') {
                self.error(
                    at,
                    format!("{what}: the value of {k:?} contains a NUL byte"),
                );
            }
        }
    }
}

/// What Kubernetes makes of a step name in pod names and DNS labels.
fn fold_k8s(name: &str) -> String {
    name.to_ascii_lowercase()
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '-' })
        .collect::<String>()
        .trim_matches('-')
        .to_string()
}

/// The step names an unknown upstream could have meant, sorted, at most
/// [`LIST_AT_MOST`] of them and a count of the rest.
fn known_steps(index: &HashMap<&str, usize>) -> String {
    let mut names: Vec<&str> = index.keys().copied().collect();
    names.sort_unstable();
    let more = names.len().saturating_sub(LIST_AT_MOST);
    let mut text = names[..names.len().min(LIST_AT_MOST)].join(", ");
    if more > 0 {
        text.push_str(&format!(", and {more} more"));
    }
    text
}

/// A cycle as `dag` gives it (closed: its last step is its first) turned
/// to start at the step declared first, so the message reads like the
/// file; closed again.
fn cycle_from_first(mut cycle: Vec<usize>) -> Vec<usize> {
    cycle.pop();
    if let Some(first) = cycle
        .iter()
        .enumerate()
        .min_by_key(|&(_, &n)| n)
        .map(|(i, _)| i)
    {
        cycle.rotate_left(first);
    }
    if let Some(&head) = cycle.first() {
        cycle.push(head);
    }
    cycle
}

/// An `apt_packages` entry that is not a Debian package name.
#[derive(Debug, thiserror::Error)]
#[error(
    "apt_packages: {spec:?} is not a Debian package: expected NAME[:ARCH][=VERSION|/RELEASE], NAME of lower-case letters, digits, '+', '-' and '.', starting with a letter or digit"
)]
struct AptPackageError {
    /// The entry as written.
    spec: String,
}

/// A `user` that `useradd` would not accept.
#[derive(Debug, thiserror::Error)]
#[error(
    "user: {user:?} is not a user name: expected up to 32 lower-case letters, digits, '_', '-' or '.', starting with a letter or '_' (or a numeric uid)"
)]
struct UserNameError {
    /// The user as written.
    user: String,
}

/// A `workdir` that is relative or climbs with `..`.
#[derive(Debug, thiserror::Error)]
#[error("workdir: {dir:?} must be an absolute path in the image without '..' (such as /app)")]
struct WorkdirError {
    /// The directory as written.
    dir: String,
}

/// A Debian package name (Policy 5.6.7) with an optional `:arch` and
/// `=version` or `/release`: anything else would reach apt-get as an
/// option (`-oAPT::...`) or through a shell.
fn check_apt_package(spec: &str) -> Result<(), AptPackageError> {
    let fail = || Err(AptPackageError { spec: spec.into() });
    let (rest, version) = match spec.split_once('=') {
        Some((n, v)) => (n, Some(v)),
        None => match spec.split_once('/') {
            Some((n, r)) => (n, Some(r)),
            None => (spec, None),
        },
    };
    let (name, arch) = match rest.split_once(':') {
        Some((n, a)) => (n, Some(a)),
        None => (rest, None),
    };
    let name_ok = name.len() >= 2
        && name.starts_with(|c: char| c.is_ascii_lowercase() || c.is_ascii_digit())
        && name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || matches!(c, '+' | '-' | '.'));
    let arch_ok = arch.is_none_or(|a| {
        !a.is_empty()
            && a.chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
    });
    let version_ok = version.is_none_or(|v| {
        !v.is_empty()
            && v.chars().all(|c| {
                c.is_ascii_alphanumeric() || matches!(c, '.' | '+' | '~' | ':' | '-' | '_')
            })
    });
    if name_ok && arch_ok && version_ok {
        Ok(())
    } else {
        fail()
    }
}

/// A user name `useradd` accepts (or a numeric uid).
fn check_user(user: &str) -> Result<(), UserNameError> {
    let numeric = !user.is_empty() && user.chars().all(|c| c.is_ascii_digit());
    let name = !user.is_empty()
        && user.len() <= 32
        && user.starts_with(|c: char| c.is_ascii_lowercase() || c == '_')
        && user
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || matches!(c, '_' | '-' | '.'));
    if numeric || name {
        Ok(())
    } else {
        Err(UserNameError { user: user.into() })
    }
}

/// An absolute directory without `..` in the image.
fn check_workdir(dir: &str) -> Result<(), WorkdirError> {
    let ok = dir.starts_with('/')
        && !dir.contains('\0')
        && !dir.contains('\n')
        && !std::path::Path::new(dir)
            .components()
            .any(|c| c == std::path::Component::ParentDir);
    if ok {
        Ok(())
    } else {
        Err(WorkdirError { dir: dir.into() })
    }
}
