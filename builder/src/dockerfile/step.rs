//! The build graph's parts ([`Stage`], [`Step`]) and the turning of one
//! instruction into a step: substitution done, references resolved, and a
//! `resolved` text that changes exactly when the step's meaning does (the
//! executor's cache-key text).

use std::collections::HashMap;

use super::DockerfileError;
use super::args::{is_git_url, is_http_url};
use super::parse::{
    CopyArgs, Healthcheck, Instruction, InstructionKind as K, SecretMount, ShellOrExec,
};

type R<T> = Result<T, DockerfileError>;

/// One `FROM` and the steps after it.
#[derive(Debug, Clone, PartialEq)]
pub struct Stage {
    /// 0-based position among the stages (what `--from=N` names).
    pub index: usize,
    /// The `AS` name, lowercased.
    pub name: Option<String>,
    /// The line of its FROM.
    pub line: usize,
    /// What it starts from.
    pub base: Base,
    /// Its steps, first to last; ONBUILD triggers of the base come first.
    pub steps: Vec<Step>,
}

/// What a stage starts from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Base {
    /// A registry image, with FROM's `--platform` if given.
    Image {
        /// The reference, args substituted.
        reference: String,
        /// `--platform`, args substituted.
        platform: Option<String>,
    },
    /// An earlier stage's result (its index).
    Stage(usize),
    /// An empty filesystem and config.
    Scratch,
}

/// One step for the executor: a RUN, a COPY/ADD, or a config change.
#[derive(Debug, Clone, PartialEq)]
pub struct Step {
    /// The line it came from (for ONBUILD triggers, the FROM's line).
    pub line: usize,
    /// The instruction as written, for the image history.
    pub text: String,
    /// The instruction with args and env substituted: the text to chain
    /// into cache keys. Config steps make no layer but must be chained too,
    /// which is how ENV changes reach the keys of later RUN steps.
    pub resolved: String,
    /// What to do.
    pub kind: StepKind,
}

/// What a step does.
#[derive(Debug, Clone, PartialEq)]
pub enum StepKind {
    /// Run a command in the sandbox; its changes make a layer. A shell-form
    /// command runs under the config's SHELL (default `/bin/sh -c`).
    Run {
        /// The command, unsubstituted (the shell does that). Heredocs are
        /// already in it as shell text (a lone `#!` heredoc as its
        /// interpreter reading the script from fd 3), so they need nothing
        /// of the executor but a POSIX shell.
        command: ShellOrExec,
        /// ARG values visible to the command as environment variables, on
        /// top of the config's Env; not stored in the image.
        env: Vec<(String, String)>,
        /// Secrets to mount while it runs.
        secrets: Vec<SecretMount>,
        /// The other `--mount`s (cache, bind, tmpfs), in order.
        mounts: Vec<RunMount>,
    },
    /// COPY or ADD: a layer built straight from files, no sandbox.
    Copy {
        /// Source paths or globs, relative to the context or `from`.
        sources: Vec<String>,
        /// The destination; relative ones are under the config's WorkingDir,
        /// and one ending in `/` (or with several sources) is a directory.
        dest: String,
        /// Where the sources come from; `None` is the build context.
        from: Option<CopyFrom>,
        /// `--chown=user[:group]`, names or ids (names resolve in the image).
        chown: Option<String>,
        /// `--chmod`, octal.
        chmod: Option<u32>,
        /// ADD: a local tar source is extracted into `dest`; an http(s)
        /// source (kept in `sources` as the URL) is downloaded, not
        /// extracted.
        add: bool,
        /// `--link`: accepted for BuildKit compatibility; kiln's layers do
        /// not depend on the ones below them anyway, so nothing changes.
        link: bool,
        /// `--parents` (COPY): each source keeps its path relative to the
        /// context (or `from`) under `dest`, BuildKit's meaning; a `/./` in a
        /// source marks where the kept part starts (`a/./b/c` puts `b/c`).
        parents: bool,
        /// `--exclude` patterns (substituted): matching files among the
        /// sources are not copied, with .dockerignore's pattern syntax.
        exclude: Vec<String>,
        /// ADD `--checksum`: the digest (`sha256:…`) the one downloaded
        /// source must have.
        checksum: Option<String>,
        /// Heredoc sources (`COPY <<EOF /etc/x`): files written from the
        /// Dockerfile, after `sources`, with the same `dest` rules (one
        /// file becomes `dest`, or `dest/name` when `dest` is a directory),
        /// mode 0644 unless `chmod`, owned per `chown`. ADD does not extract
        /// them.
        inline: Vec<InlineFile>,
    },
    /// A change to the running image config; no layer.
    Config(ConfigChange),
}

/// A file a COPY/ADD heredoc writes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InlineFile {
    /// The heredoc's delimiter word, which names the file.
    pub name: String,
    /// Its content: `<<-` tabs stripped and, unless the delimiter was
    /// quoted, `$VAR` substituted (quotes kept), as BuildKit does.
    pub content: String,
}

/// A `RUN --mount` other than a secret: something the executor mounts while
/// the command runs and that never becomes part of the layer. A relative
/// `target` is under the config's WorkingDir, as in BuildKit.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RunMount {
    /// `type=cache`: a directory kept between builds (package caches). Its
    /// contents are never part of a cache key.
    Cache {
        /// Where it appears.
        target: String,
        /// Which cache: builds with the same id share it. Defaults to the
        /// target, cleaned, as in BuildKit.
        id: String,
        /// How concurrent builds share it.
        sharing: CacheSharing,
        /// `from=`: a stage or image whose files seed an empty cache.
        from: Option<CopyFrom>,
        /// `source=`: the directory in `from` that seeds it (its root when
        /// `None`).
        source: Option<String>,
        /// The cache directory's mode when created (default 0755).
        mode: u32,
        /// Its owner (default 0).
        uid: u32,
        /// Its group (default 0).
        gid: u32,
        /// `ro`: mounted read-only.
        readonly: bool,
    },
    /// `type=bind`: files from the build context, a stage or an image,
    /// read-only unless `rw`, and even then writes are thrown away. What is
    /// bound from the context must count in the step's cache key, as COPY's
    /// sources do.
    Bind {
        /// Where it appears.
        target: String,
        /// The path in `from` (or the context) to bind; `/` is its root.
        source: String,
        /// Where the files come from; `None` is the build context.
        from: Option<CopyFrom>,
        /// `rw`: writable for the command (changes are discarded).
        readwrite: bool,
    },
    /// `type=tmpfs`: an empty in-memory directory.
    Tmpfs {
        /// Where it appears.
        target: String,
        /// `size=`, in bytes; `None` is the kernel's default.
        size: Option<u64>,
    },
}

/// `sharing=` of a cache mount, BuildKit's three modes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CacheSharing {
    /// Any number of builds use it at once (the default).
    Shared,
    /// A build that finds it in use gets a fresh cache of its own.
    Private,
    /// A build waits until no other build uses it.
    Locked,
}

/// Where `COPY --from` reads.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CopyFrom {
    /// An earlier stage's filesystem.
    Stage(usize),
    /// An image's filesystem, by reference.
    Image(String),
}

/// A change to the image config, in the terms of the OCI config.
#[derive(Debug, Clone, PartialEq)]
pub enum ConfigChange {
    /// Set (or replace) these environment variables.
    Env(Vec<(String, String)>),
    /// Set (or replace) these labels.
    Label(Vec<(String, String)>),
    /// Set WorkingDir; a relative path is joined to the current one.
    Workdir(String),
    /// Set User.
    User(String),
    /// Add exposed ports, normalized as `port/proto`.
    Expose(Vec<String>),
    /// Add volumes.
    Volume(Vec<String>),
    /// Set Cmd (shell form goes through SHELL).
    Cmd(ShellOrExec),
    /// Set Entrypoint (shell form goes through SHELL).
    Entrypoint {
        /// The new entrypoint.
        command: ShellOrExec,
        /// Whether Cmd is cleared too: Docker clears it unless this stage
        /// has set a CMD of its own before (its `cmdSet`), so a base
        /// image's CMD does not become arguments of a new entrypoint.
        reset_cmd: bool,
    },
    /// Set the shell for later shell-form commands (kept in the config).
    Shell(Vec<String>),
    /// Set StopSignal.
    StopSignal(String),
    /// Set the health check.
    Healthcheck(Healthcheck),
    /// Add an ONBUILD trigger, as written.
    OnBuild(String),
    /// Set the image's author: the top-level `author` of the OCI config,
    /// which is all MAINTAINER does in Docker (no label).
    Author(String),
}

/// Proxy build args Docker passes to RUN without an ARG (never stored).
pub(crate) const PROXY_ARGS: [&str; 8] = [
    "HTTP_PROXY",
    "http_proxy",
    "HTTPS_PROXY",
    "https_proxy",
    "FTP_PROXY",
    "ftp_proxy",
    "NO_PROXY",
    "no_proxy",
];

/// The variables an instruction sees: the stage's ARGs and ENV.
#[derive(Debug, Clone, Default)]
pub(crate) struct Scope {
    /// Declared ARGs in order; `None` when declared without a value.
    pub args: Vec<(String, Option<String>)>,
    /// ENV in order (base's first).
    pub env: Vec<(String, String)>,
    /// Proxy build args given, passed to RUN.
    pub proxies: Vec<(String, String)>,
}

impl Scope {
    /// ENV wins over ARG, as in Docker.
    pub fn lookup(&self, name: &str) -> Option<String> {
        let env = self.env.iter().find(|(k, _)| k == name).map(|(_, v)| v);
        env.cloned().or_else(|| {
            self.args
                .iter()
                .find(|(k, _)| k == name)
                .and_then(|(_, v)| v.clone())
        })
    }

    /// Declares (or redeclares) an ARG; the latest declaration wins.
    pub fn set_arg(&mut self, name: &str, value: Option<String>) {
        self.args.retain(|(k, _)| k != name);
        self.args.push((name.to_string(), value));
    }

    /// Sets an ENV variable, keeping its place if it was set before.
    pub fn set_env(&mut self, name: &str, value: String) {
        match self.env.iter_mut().find(|(k, _)| k == name) {
            Some(slot) => slot.1 = value,
            None => self.env.push((name.to_string(), value)),
        }
    }
}

/// What a step needs to know about the stages around it.
pub(crate) struct Place<'a> {
    pub escape: char,
    /// Stage names seen so far (including the current one).
    pub names: &'a HashMap<String, usize>,
    /// The current stage's index.
    pub current: usize,
    /// Every stage name in the file, to tell a later stage from an image.
    pub all_names: &'a [String],
    /// Whether the current stage has had a CMD (Docker's `cmdSet`), which
    /// decides whether ENTRYPOINT clears Cmd.
    pub cmd_set: bool,
}

/// Substitutes one word, errors at `line`.
pub(crate) fn sub(scope: &Scope, escape: char, line: usize, word: &str) -> R<String> {
    super::expand(word, escape, &|n| scope.lookup(n))
        .map_err(|e| DockerfileError::at(line, format!("substitution failed: {e}")))
}

/// ENV: every name and value is substituted in the scope as it was before
/// the line, as Docker does (`ENV a=2 b=$a` gives `b` the old `a`); only
/// then are they set.
fn env(scope: &mut Scope, at: &Place, ins: &Instruction) -> R<Step> {
    let K::Env(pairs) = &ins.kind else {
        return Err(DockerfileError::at(ins.line, "internal: not ENV"));
    };
    let s = |w: &str| sub(scope, at.escape, ins.line, w);
    let out = pairs
        .iter()
        .map(|(k, v)| Ok((s(k)?, s(v)?)))
        .collect::<R<Vec<_>>>()?;
    if let Some(((raw, _), _)) = pairs.iter().zip(&out).find(|(_, (k, _))| k.is_empty()) {
        return Err(DockerfileError::at(
            ins.line,
            format!("ENV name {raw:?} is empty after substitution"),
        ));
    }
    for (k, v) in &out {
        scope.set_env(k, v.clone());
    }
    Ok(Step {
        line: ins.line,
        text: ins.text.clone(),
        resolved: format!("ENV {}", kv(&out)),
        kind: StepKind::Config(ConfigChange::Env(out)),
    })
}

/// Turns an instruction (not FROM or ARG) into a step, updating the scope.
pub(crate) fn step(scope: &mut Scope, at: &Place, ins: &Instruction) -> R<Step> {
    if matches!(ins.kind, K::Env(_)) {
        return env(scope, at, ins);
    }
    let scope = &*scope;
    let line = ins.line;
    let s = |w: &str| sub(scope, at.escape, line, w);
    let words = |ws: &[String]| ws.iter().map(|w| s(w)).collect::<R<Vec<_>>>();
    let (kind, resolved) = match &ins.kind {
        K::Label(pairs) => {
            let out = pairs
                .iter()
                .map(|(k, v)| Ok((s(k)?, s(v)?)))
                .collect::<R<Vec<_>>>()?;
            let r = format!("LABEL {}", kv(&out));
            (StepKind::Config(ConfigChange::Label(out)), r)
        }
        K::Maintainer(who) => one("MAINTAINER", who.clone(), ConfigChange::Author),
        K::Run { command, mounts } => {
            let mut secrets = Vec::new();
            let mut others = Vec::new();
            for m in mounts {
                match super::mount::resolve(m, scope, at, line)? {
                    super::mount::Resolved::Secret(s) => secrets.push(s),
                    super::mount::Resolved::Mount(m) => others.push(m),
                }
            }
            let mut env: Vec<(String, String)> = scope
                .args
                .iter()
                .filter(|(k, _)| !scope.env.iter().any(|(e, _)| e == k))
                .filter_map(|(k, v)| Some((k.clone(), v.clone()?)))
                .collect();
            for p in &scope.proxies {
                if !env.iter().any(|(k, _)| *k == p.0) {
                    env.push(p.clone());
                }
            }
            let mut r = String::from("RUN ");
            if !env.is_empty() {
                r.push_str(&format!("|{} {} ", env.len(), kv(&env)));
            }
            for m in &secrets {
                r.push_str(&format!(
                    "--mount=type=secret,id={},target={},required={} ",
                    m.id,
                    m.target.as_deref().unwrap_or(""),
                    m.required
                ));
            }
            for m in &others {
                r.push_str(&mount_text(m));
                r.push(' ');
            }
            r.push_str(&cmd_text(command));
            let k = StepKind::Run {
                command: command.clone(),
                env,
                secrets,
                mounts: others,
            };
            (k, r)
        }
        K::Copy(c) => copy(scope, at, line, c)?,
        K::Workdir(p) => one("WORKDIR", s(p)?, ConfigChange::Workdir),
        K::User(u) => one("USER", s(u)?, ConfigChange::User),
        K::StopSignal(v) => one("STOPSIGNAL", s(v)?, ConfigChange::StopSignal),
        K::Expose(ws) => {
            let mut ports = Vec::new();
            for w in words(ws)? {
                for p in w.split_whitespace() {
                    ports.extend(port(line, p)?);
                }
            }
            let r = format!("EXPOSE {}", ports.join(" "));
            (StepKind::Config(ConfigChange::Expose(ports)), r)
        }
        K::Volume(ws) => {
            let v = words(ws)?;
            if v.iter().any(|p| p.trim().is_empty()) {
                return Err(DockerfileError::at(line, "VOLUME paths cannot be empty"));
            }
            let r = format!("VOLUME {}", list(&v));
            (StepKind::Config(ConfigChange::Volume(v)), r)
        }
        K::Cmd(c) => cfg(format!("CMD {}", cmd_text(c)), ConfigChange::Cmd(c.clone())),
        K::Entrypoint(c) => cfg(
            format!("ENTRYPOINT {}", cmd_text(c)),
            ConfigChange::Entrypoint {
                command: c.clone(),
                reset_cmd: !at.cmd_set,
            },
        ),
        K::Shell(v) => cfg(format!("SHELL {}", list(v)), ConfigChange::Shell(v.clone())),
        K::Healthcheck(h) => cfg(
            format!(
                "HEALTHCHECK {} interval={:?} timeout={:?} start-period={:?} retries={:?}",
                list(&h.test),
                h.interval,
                h.timeout,
                h.start_period,
                h.retries
            ),
            ConfigChange::Healthcheck(h.clone()),
        ),
        K::OnBuild { trigger, .. } => cfg(
            format!("ONBUILD {trigger}"),
            ConfigChange::OnBuild(trigger.clone()),
        ),
        K::From { .. } | K::Arg(_) | K::Env(_) => {
            return Err(DockerfileError::at(
                line,
                "internal: FROM/ARG is not a step",
            ));
        }
    };
    Ok(Step {
        line,
        text: ins.text.clone(),
        resolved,
        kind,
    })
}

fn cfg(resolved: String, c: ConfigChange) -> (StepKind, String) {
    (StepKind::Config(c), resolved)
}

fn one(name: &str, v: String, f: fn(String) -> ConfigChange) -> (StepKind, String) {
    let r = format!("{name} {}", quote(&v));
    (StepKind::Config(f(v)), r)
}

fn copy(scope: &Scope, at: &Place, line: usize, c: &CopyArgs) -> R<(StepKind, String)> {
    let s = |w: &str| sub(scope, at.escape, line, w);
    let err = |m: String| DockerfileError::at(line, m);
    let name = if c.add { "ADD" } else { "COPY" };
    let sources = c.sources.iter().map(|w| s(w)).collect::<R<Vec<_>>>()?;
    let dest = s(&c.dest)?;
    if let Some(url) = sources.iter().find(|u| is_git_url(u)) {
        return Err(err(format!(
            "{name} from a git repository is not supported ({url}); clone it in a RUN step"
        )));
    }
    if let Some(url) = sources.iter().find(|u| !c.add && is_http_url(u)) {
        return Err(err(format!(
            "COPY cannot take a URL ({url}); ADD downloads one"
        )));
    }
    // A source that substitutes to nothing is the root of the context (or
    // stage), as BuildKit reads it: the whole of it is copied. Evaluation
    // warns, since an unset ARG rarely meant that.
    let sources: Vec<String> = sources
        .into_iter()
        .map(|v| if v.is_empty() { ".".to_string() } else { v })
        .collect();
    // An empty destination is the working directory, as in BuildKit.
    let dest = if dest.is_empty() {
        "./".to_string()
    } else {
        dest
    };
    let from = match &c.from {
        None => None,
        Some(f) => Some(copy_from(at, line, "COPY --from", &s(f)?)?),
    };
    let chown = c.chown.as_deref().map(s).transpose()?;
    let chmod = match &c.chmod {
        None => None,
        Some(m) => {
            let m = s(m)?;
            let v = u32::from_str_radix(&m, 8)
                .ok()
                .filter(|v| *v <= 0o7777)
                .ok_or_else(|| err(format!("--chmod={m} is not an octal mode such as 0755")))?;
            Some(v)
        }
    };
    let exclude = c.exclude.iter().map(|w| s(w)).collect::<R<Vec<_>>>()?;
    let inline = c
        .inline
        .iter()
        .map(|h| {
            let body = h.body();
            let content = if h.expand {
                super::expand::expand_raw(&body, &|n| scope.lookup(n))
                    .map_err(|e| err(format!("substitution failed in heredoc <<{}: {e}", h.name)))?
            } else {
                body
            };
            Ok(InlineFile {
                name: h.name.clone(),
                content,
            })
        })
        .collect::<R<Vec<_>>>()?;
    let checksum = match &c.checksum {
        None => None,
        Some(d) => {
            let d = s(d)?;
            if !is_digest(&d) {
                return Err(err(format!(
                    "--checksum={d} is not a digest such as sha256:<64 hex digits>"
                )));
            }
            // BuildKit's rule: a checksum pins one downloaded file.
            match sources.as_slice() {
                [one] if is_http_url(one) => {}
                [_] => {
                    return Err(err(
                        "ADD --checksum is only for a source downloaded over http(s)".into(),
                    ));
                }
                _ => {
                    return Err(err(
                        "ADD --checksum takes exactly one source, the URL it checks".into(),
                    ));
                }
            }
            Some(d)
        }
    };
    let mut r = format!("{name} ");
    match &from {
        Some(CopyFrom::Stage(i)) => r.push_str(&format!("--from=stage:{i} ")),
        Some(CopyFrom::Image(i)) => r.push_str(&format!("--from=image:{i} ")),
        None => {}
    }
    if let Some(o) = &chown {
        r.push_str(&format!("--chown={} ", quote(o)));
    }
    if let Some(m) = chmod {
        r.push_str(&format!("--chmod={m:o} "));
    }
    if c.link {
        r.push_str("--link ");
    }
    if c.parents {
        r.push_str("--parents ");
    }
    for e in &exclude {
        r.push_str(&format!("--exclude={} ", quote(e)));
    }
    if let Some(d) = &checksum {
        r.push_str(&format!("--checksum={d} "));
    }
    r.push_str(&list(&sources));
    // The files' contents are part of what the step means.
    for f in &inline {
        r.push_str(&format!(" <<{}:{:?}", quote(&f.name), f.content));
    }
    r.push(' ');
    r.push_str(&quote(&dest));
    let k = StepKind::Copy {
        sources,
        dest,
        from,
        chown,
        chmod,
        add: c.add,
        link: c.link,
        parents: c.parents,
        exclude,
        checksum,
        inline,
    };
    Ok((k, r))
}

/// `algorithm:hex` as an OCI digest: sha256, sha384 or sha512, lowercase
/// hex of the right length.
fn is_digest(d: &str) -> bool {
    let Some((alg, hex)) = d.split_once(':') else {
        return false;
    };
    let len = match alg {
        "sha256" => 64,
        "sha384" => 96,
        "sha512" => 128,
        _ => return false,
    };
    hex.len() == len
        && hex
            .bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

/// `COPY --from=` or a mount's `from=` (`what` names which, for errors): a
/// stage index, an earlier stage's name, or an image.
pub(crate) fn copy_from(at: &Place, line: usize, what: &str, f: &str) -> R<CopyFrom> {
    let err = |m: String| DockerfileError::at(line, m);
    if f.is_empty() {
        return Err(err(format!("{what} needs a stage name, index or image")));
    }
    let idx = match f.parse::<usize>() {
        Ok(i) => Some(i),
        Err(_) => at.names.get(&f.to_ascii_lowercase()).copied(),
    };
    match idx {
        Some(i) if i == at.current => Err(err(format!("{what}={f} refers to its own stage"))),
        Some(i) if i > at.current => Err(err(format!(
            "{what}={f}: there is no stage {i} before this one"
        ))),
        Some(i) => Ok(CopyFrom::Stage(i)),
        None if at.all_names.contains(&f.to_ascii_lowercase()) => Err(err(format!(
            "{what}={f}: stage {:?} is defined after this one; stages can only copy from earlier ones",
            f.to_ascii_lowercase()
        ))),
        None => Ok(CopyFrom::Image(f.to_string())),
    }
}

/// A mount as it enters the cache key: every setting that changes what the
/// command sees (a cache's contents are not among them).
fn mount_text(m: &RunMount) -> String {
    let from = |f: &Option<CopyFrom>| match f {
        Some(CopyFrom::Stage(i)) => format!(",from=stage:{i}"),
        Some(CopyFrom::Image(r)) => format!(",from=image:{}", quote(r)),
        None => String::new(),
    };
    match m {
        RunMount::Cache {
            target,
            id,
            sharing,
            from: f,
            source,
            mode,
            uid,
            gid,
            readonly,
        } => format!(
            "--mount=type=cache,id={},target={},sharing={}{}{},mode={mode:o},uid={uid},gid={gid}{}",
            quote(id),
            quote(target),
            match sharing {
                CacheSharing::Shared => "shared",
                CacheSharing::Private => "private",
                CacheSharing::Locked => "locked",
            },
            from(f),
            source
                .as_deref()
                .map(|s| format!(",source={}", quote(s)))
                .unwrap_or_default(),
            if *readonly { ",ro" } else { "" },
        ),
        RunMount::Bind {
            target,
            source,
            from: f,
            readwrite,
        } => format!(
            "--mount=type=bind,target={},source={}{}{}",
            quote(target),
            quote(source),
            from(f),
            if *readwrite { ",rw" } else { "" },
        ),
        RunMount::Tmpfs { target, size } => format!(
            "--mount=type=tmpfs,target={}{}",
            quote(target),
            size.map(|n| format!(",size={n}")).unwrap_or_default(),
        ),
    }
}

/// `80`, `80/udp`, `8000-8002/tcp` to `port/proto` entries.
fn port(line: usize, p: &str) -> R<Vec<String>> {
    let bad = || {
        DockerfileError::at(
            line,
            format!("EXPOSE {p:?} is not a port: expected PORT[-PORT][/tcp|udp|sctp]"),
        )
    };
    let (range, proto) = p.split_once('/').unwrap_or((p, "tcp"));
    let proto = proto.to_ascii_lowercase();
    if !matches!(proto.as_str(), "tcp" | "udp" | "sctp") {
        return Err(bad());
    }
    let (lo, hi) = range.split_once('-').unwrap_or((range, range));
    let lo: u16 = lo.parse().map_err(|_| bad())?;
    let hi: u16 = hi.parse().map_err(|_| bad())?;
    if lo > hi {
        return Err(bad());
    }
    Ok((lo..=hi).map(|n| format!("{n}/{proto}")).collect())
}

/// A word, quoted when it would not read back as one word.
fn quote(s: &str) -> String {
    if s.is_empty()
        || s.chars()
            .any(|c| c.is_whitespace() || "\"'\\=$".contains(c))
    {
        format!("{s:?}")
    } else {
        s.to_string()
    }
}

fn list(v: &[String]) -> String {
    v.iter().map(|w| quote(w)).collect::<Vec<_>>().join(" ")
}

fn kv(v: &[(String, String)]) -> String {
    v.iter()
        .map(|(k, v)| format!("{}={}", quote(k), quote(v)))
        .collect::<Vec<_>>()
        .join(" ")
}

fn cmd_text(c: &ShellOrExec) -> String {
    match c {
        ShellOrExec::Shell(s) => s.clone(),
        ShellOrExec::Exec(v) => format!("{v:?}"),
    }
}
