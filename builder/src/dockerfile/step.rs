//! The turning of one instruction into a [`Step`]: substitution done,
//! references resolved, and a `resolved` text that changes exactly when the
//! step's meaning does (the executor's cache-key text).

use super::DockerfileError;
use super::args::{is_git_url, is_http_url};
use super::graph::{CacheSharing, ConfigChange, CopyFrom, InlineFile, RunMount, Step, StepKind};
use super::scope::{Place, Scope, copy_from, sub};
use super::syntax::{
    CopyArgs, Instruction, InstructionKind as K, MountSpec, SecretMount, ShellOrExec,
};

type R<T> = Result<T, DockerfileError>;

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
        K::Run { command, mounts } => run(scope, at, line, command, mounts)?,
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

/// RUN: its mounts resolved (secrets kept apart), and the build args and
/// proxies it sees as its environment.
fn run(
    scope: &Scope,
    at: &Place,
    line: usize,
    command: &ShellOrExec,
    mounts: &[MountSpec],
) -> R<(StepKind, String)> {
    let mut secrets = Vec::new();
    let mut others = Vec::new();
    for m in mounts {
        match super::mount::resolve(m, scope, at, line)? {
            super::mount::Resolved::Secret(s) => secrets.push(s),
            super::mount::Resolved::Mount(m) => others.push(m),
        }
    }
    let env = run_env(scope);
    let r = run_text(&env, &secrets, &others, command);
    let k = StepKind::Run {
        command: command.clone(),
        env,
        secrets,
        mounts: others,
    };
    Ok((k, r))
}

/// A RUN's environment beyond the image's: the declared ARGs with a value
/// that no ENV hides, then the proxy args not among them.
fn run_env(scope: &Scope) -> Vec<(String, String)> {
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
    env
}

/// A RUN's cache-key text: its environment, secrets and mounts, then the
/// command.
fn run_text(
    env: &[(String, String)],
    secrets: &[SecretMount],
    others: &[RunMount],
    command: &ShellOrExec,
) -> String {
    let mut r = String::from("RUN ");
    if !env.is_empty() {
        r.push_str(&format!("|{} {} ", env.len(), kv(env)));
    }
    for m in secrets {
        r.push_str(&format!(
            "--mount=type=secret,id={},target={},required={} ",
            m.id,
            m.target.as_deref().unwrap_or(""),
            m.required
        ));
    }
    for m in others {
        r.push_str(&mount_text(m));
        r.push(' ');
    }
    r.push_str(&cmd_text(command));
    r
}

/// COPY and ADD: every word substituted and checked, in the order the
/// flags are read, and the cache-key text of the result.
fn copy(scope: &Scope, at: &Place, line: usize, c: &CopyArgs) -> R<(StepKind, String)> {
    let s = |w: &str| sub(scope, at.escape, line, w);
    let name = if c.add { "ADD" } else { "COPY" };
    let (sources, dest) = copy_paths(scope, at, line, c, name)?;
    let from = match &c.from {
        None => None,
        Some(f) => Some(copy_from(at, line, "COPY --from", &s(f)?)?),
    };
    let chown = c.chown.as_deref().map(s).transpose()?;
    let chmod = match &c.chmod {
        None => None,
        Some(m) => Some(octal_mode(line, &s(m)?)?),
    };
    let exclude = c.exclude.iter().map(|w| s(w)).collect::<R<Vec<_>>>()?;
    let inline = inline_files(scope, line, c)?;
    let checksum = match &c.checksum {
        None => None,
        Some(d) => Some(pinned_checksum(line, s(d)?, &sources)?),
    };
    let r = format!(
        "{name} {}{}",
        copy_flags_text(
            from.as_ref(),
            chown.as_deref(),
            chmod,
            c,
            &exclude,
            checksum.as_deref()
        ),
        copy_operands_text(&sources, &inline, &dest)
    );
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

/// The sources and destination substituted, with git and (for COPY) URL
/// sources refused and BuildKit's meaning of empty ones filled in.
fn copy_paths(
    scope: &Scope,
    at: &Place,
    line: usize,
    c: &CopyArgs,
    name: &str,
) -> R<(Vec<String>, String)> {
    let s = |w: &str| sub(scope, at.escape, line, w);
    let err = |m: String| DockerfileError::at(line, m);
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
    Ok((sources, dest))
}

/// `--chmod`'s substituted value as a mode.
fn octal_mode(line: usize, m: &str) -> R<u32> {
    u32::from_str_radix(m, 8)
        .ok()
        .filter(|v| *v <= 0o7777)
        .ok_or_else(|| {
            DockerfileError::at(
                line,
                format!("--chmod={m} is not an octal mode such as 0755"),
            )
        })
}

/// The heredoc sources' files, their bodies substituted where the heredoc
/// asks for it.
fn inline_files(scope: &Scope, line: usize, c: &CopyArgs) -> R<Vec<InlineFile>> {
    c.inline
        .iter()
        .map(|h| {
            let body = h.body();
            let content = if h.expand {
                super::expand::expand_raw(&body, &|n| scope.lookup(n)).map_err(|e| {
                    DockerfileError::at(
                        line,
                        format!("substitution failed in heredoc <<{}: {e}", h.name),
                    )
                })?
            } else {
                body
            };
            Ok(InlineFile {
                name: h.name.clone(),
                content,
            })
        })
        .collect()
}

/// ADD `--checksum`'s substituted value, checked to be a digest that pins
/// the one downloaded file (BuildKit's rule).
fn pinned_checksum(line: usize, d: String, sources: &[String]) -> R<String> {
    let err = |m: String| DockerfileError::at(line, m);
    if !is_digest(&d) {
        return Err(err(format!(
            "--checksum={d} is not a digest such as sha256:<64 hex digits>"
        )));
    }
    // BuildKit's rule: a checksum pins one downloaded file.
    match sources {
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
    Ok(d)
}

/// The flags part of a COPY/ADD's cache-key text, each followed by a space.
fn copy_flags_text(
    from: Option<&CopyFrom>,
    chown: Option<&str>,
    chmod: Option<u32>,
    c: &CopyArgs,
    exclude: &[String],
    checksum: Option<&str>,
) -> String {
    let mut r = String::new();
    match from {
        Some(CopyFrom::Stage(i)) => r.push_str(&format!("--from=stage:{i} ")),
        Some(CopyFrom::Image(i)) => r.push_str(&format!("--from=image:{i} ")),
        None => {}
    }
    if let Some(o) = chown {
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
    for e in exclude {
        r.push_str(&format!("--exclude={} ", quote(e)));
    }
    if let Some(d) = checksum {
        r.push_str(&format!("--checksum={d} "));
    }
    r
}

/// The sources, heredoc files and destination part of a COPY/ADD's
/// cache-key text.
fn copy_operands_text(sources: &[String], inline: &[InlineFile], dest: &str) -> String {
    let mut r = list(sources);
    // The files' contents are part of what the step means.
    for f in inline {
        r.push_str(&format!(" <<{}:{:?}", quote(&f.name), f.content));
    }
    r.push(' ');
    r.push_str(&quote(dest));
    r
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
