//! One logical line to an [`Instruction`]: the instruction's name (with a
//! suggestion when it is misspelt) and its arguments: flags, JSON-or-shell
//! forms, key=value pairs, with an error naming what was expected. ONBUILD's
//! trigger is an instruction too, hence one module.

use std::time::Duration;

use super::DockerfileError;
use super::heredoc::opener;
use super::lines::Logical;
use super::syntax::{
    CopyArgs, Ctx, Healthcheck, Heredoc, Instruction, InstructionKind as K, ShellOrExec,
};
use super::words::{json_array, take_flags, words};

type R<T> = Result<T, DockerfileError>;

const NAMES: [&str; 18] = [
    "FROM",
    "ARG",
    "ENV",
    "LABEL",
    "RUN",
    "COPY",
    "ADD",
    "WORKDIR",
    "USER",
    "EXPOSE",
    "VOLUME",
    "CMD",
    "ENTRYPOINT",
    "SHELL",
    "STOPSIGNAL",
    "HEALTHCHECK",
    "ONBUILD",
    "MAINTAINER",
];

pub(crate) fn instruction(l: &Logical, escape: char) -> Result<Instruction, DockerfileError> {
    let text = l.text.as_str();
    let name_end = text.find(char::is_whitespace).unwrap_or(text.len());
    let word = &text[..name_end];
    let upper = word.to_ascii_uppercase();
    let Some(&name) = NAMES.iter().find(|n| **n == upper) else {
        let hint = suggest(&upper)
            .map(|s| format!(" (did you mean {s}?)"))
            .unwrap_or_default();
        return Err(DockerfileError::Line {
            line: l.line,
            column: Some(1).filter(|_| l.single),
            message: format!("unknown instruction {word:?}{hint}"),
        });
    };
    let args = text[name_end..].trim_start();
    let cx = Ctx {
        line: l.line,
        single: l.single,
        name,
        args_at: text.len() - args.len(),
        escape,
        heredocs: &l.heredocs,
    };
    let kind = super::args::kind(&cx, args)?;
    Ok(Instruction {
        line: l.line,
        text: with_bodies(text, &l.heredocs),
        kind,
    })
}

/// An instruction's text with its heredocs after it, each body followed by
/// its delimiter, as written (BuildKit's form, also for ONBUILD triggers).
pub(crate) fn with_bodies(text: &str, heredocs: &[Heredoc]) -> String {
    let mut out = text.to_string();
    for h in heredocs {
        out.push('\n');
        out.push_str(&h.content);
        out.push_str(&h.name);
    }
    out
}

/// The known instruction nearest to a misspelt one, if it is close.
fn suggest(word: &str) -> Option<&'static str> {
    NAMES
        .iter()
        .map(|n| (distance(word, n), *n))
        .filter(|(d, _)| *d <= 2)
        .min()
        .map(|(_, n)| n)
}

fn distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut prev: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut cur = vec![i + 1];
        for (j, cb) in b.iter().enumerate() {
            let sub = prev[j] + usize::from(ca != *cb);
            cur.push(sub.min(prev[j + 1] + 1).min(cur[j] + 1));
        }
        prev = cur;
    }
    prev[b.len()]
}

pub(crate) fn check_trigger(i: &Instruction) -> Result<(), DockerfileError> {
    let bad = match i.kind {
        K::OnBuild { .. } => "ONBUILD ONBUILD",
        K::From { .. } => "ONBUILD FROM",
        K::Maintainer(_) => "ONBUILD MAINTAINER",
        _ => return Ok(()),
    };
    Err(DockerfileError::at(i.line, format!("{bad} is not allowed")))
}

/// Flags by name, with their values.
type Flags = Vec<(String, Option<String>)>;

/// Parses the arguments of the instruction `cx.name`.
pub(crate) fn kind(cx: &Ctx, args: &str) -> R<K> {
    let need = |what: &str| -> R<()> {
        if args.is_empty() {
            Err(cx.err(format!("{} needs {what}", cx.name)))
        } else {
            Ok(())
        }
    };
    Ok(match cx.name {
        "FROM" => from(cx, args)?,
        "ARG" => {
            need("a name")?;
            K::Arg(
                words(args, cx.escape)
                    .into_iter()
                    .map(|(_, w)| match w.split_once('=') {
                        Some((k, v)) => (k.to_string(), Some(v.to_string())),
                        None => (w, None),
                    })
                    .collect(),
            )
        }
        "ENV" => K::Env(pairs(cx, args)?),
        "LABEL" => K::Label(pairs(cx, args)?),
        "RUN" => run(cx, args)?,
        "COPY" | "ADD" => copy(cx, args)?,
        "WORKDIR" => {
            need("a path")?;
            K::Workdir(args.to_string())
        }
        "USER" => K::User(one(cx, args, "a user name or id")?),
        "STOPSIGNAL" => K::StopSignal(one(cx, args, "a signal")?),
        "EXPOSE" => {
            need("at least one port")?;
            K::Expose(words(args, cx.escape).into_iter().map(|(_, w)| w).collect())
        }
        "VOLUME" => {
            need("at least one path")?;
            let v = match json_list(cx, args)? {
                Some(v) => v,
                None => words(args, cx.escape).into_iter().map(|(_, w)| w).collect(),
            };
            if v.is_empty() {
                return Err(cx.err("VOLUME needs at least one path"));
            }
            K::Volume(v)
        }
        "CMD" => K::Cmd(command(cx, args)?),
        "ENTRYPOINT" => K::Entrypoint(command(cx, args)?),
        "SHELL" => match json_list(cx, args)? {
            Some(v) if !v.is_empty() => K::Shell(v),
            _ => {
                return Err(cx.err(r#"SHELL needs a JSON array, e.g. SHELL ["/bin/bash", "-c"]"#));
            }
        },
        "HEALTHCHECK" => K::Healthcheck(healthcheck(cx, args)?),
        "ONBUILD" => {
            need("an instruction")?;
            let l = Logical {
                line: cx.line,
                text: args.to_string(),
                single: false,
                heredocs: cx.heredocs.to_vec(),
            };
            let inner = instruction(&l, cx.escape)?;
            check_trigger(&inner)?;
            K::OnBuild {
                // With its heredocs, as BuildKit stores a trigger.
                trigger: with_bodies(args, cx.heredocs),
                instruction: Box::new(inner),
            }
        }
        _ => {
            need("a name")?;
            K::Maintainer(args.to_string())
        }
    })
}

fn one(cx: &Ctx, args: &str, what: &str) -> R<String> {
    match words(args, cx.escape).as_slice() {
        [(_, w)] => Ok(w.clone()),
        [] => Err(cx.err(format!("{} needs {what}", cx.name))),
        _ => Err(cx.err(format!("{} takes exactly one argument, {what}", cx.name))),
    }
}

/// A JSON array of strings, if the text is one; otherwise (`None`) the
/// caller falls back to shell form, as Docker does. A JSON array with a
/// number or an object in it is an error, as in Docker.
fn json_list(cx: &Ctx, s: &str) -> R<Option<Vec<String>>> {
    json_array(s).map_err(|()| {
        cx.err(format!(
            "{}: a JSON array must hold only strings, e.g. [\"echo\", \"1\"]",
            cx.name
        ))
    })
}

fn command(cx: &Ctx, args: &str) -> R<ShellOrExec> {
    if let Some(v) = json_list(cx, args)? {
        return Ok(ShellOrExec::Exec(v));
    }
    if args.is_empty() {
        return Err(cx.err(format!("{} needs a command", cx.name)));
    }
    Ok(ShellOrExec::Shell(args.to_string()))
}

/// `--name[=value]` flags, checked against what the instruction takes.
fn flags<'a>(cx: &Ctx, args: &'a str, allowed: &[&str]) -> R<(Flags, &'a str)> {
    let (raw, rest) = take_flags(args, cx.escape);
    let mut out: Flags = Vec::new();
    for (at, w) in raw {
        let body = &w[2..];
        let (name, value) = match body.split_once('=') {
            Some((n, v)) => (n, Some(unquote(v))),
            None => (body, None),
        };
        if !allowed.contains(&name) {
            let takes = match allowed {
                [] => "no flags".to_string(),
                _ => allowed
                    .iter()
                    .map(|a| format!("--{a}"))
                    .collect::<Vec<_>>()
                    .join(", "),
            };
            return Err(cx.err_at(
                at,
                format!("unknown flag --{name} for {} (it takes {takes})", cx.name),
            ));
        }
        if !REPEATABLE.contains(&name) && out.iter().any(|(n, _)| n == name) {
            return Err(cx.err_at(at, format!("--{name} is given twice")));
        }
        let value = if BOOLEAN.contains(&name) {
            // `--link`, `--link=true`, `--link=false`, as BuildKit reads them.
            match value.as_deref().map(str::to_ascii_lowercase).as_deref() {
                None | Some("true") => Some("true".to_string()),
                Some("false") => Some("false".to_string()),
                Some(_) => {
                    return Err(cx.err_at(
                        at,
                        format!(
                            "--{name} takes true or false, not {:?}",
                            value.unwrap_or_default()
                        ),
                    ));
                }
            }
        } else {
            value
        };
        if value.is_none() {
            return Err(cx.err_at(at, format!("--{name} needs a value: --{name}=...")));
        }
        out.push((name.to_string(), value));
    }
    Ok((out, rest))
}

/// Flags that may be given more than once, each adding a value.
const REPEATABLE: [&str; 2] = ["mount", "exclude"];

/// Flags that are switches: bare, or `=true` / `=false`.
const BOOLEAN: [&str; 3] = ["link", "parents", "keep-git-dir"];

/// Whether a switch flag is on.
fn on(f: &[(String, Option<String>)], name: &str) -> bool {
    get(f, name).as_deref() == Some("true")
}

/// Every value of a repeatable flag, in order.
fn all(f: &[(String, Option<String>)], name: &str) -> Vec<String> {
    f.iter()
        .filter(|(n, _)| n == name)
        .filter_map(|(_, v)| v.clone())
        .collect()
}

fn unquote(v: &str) -> String {
    let b = v.as_bytes();
    if b.len() >= 2 && (b[0] == b'"' || b[0] == b'\'') && b[b.len() - 1] == b[0] {
        v[1..v.len() - 1].to_string()
    } else {
        v.to_string()
    }
}

fn get(f: &[(String, Option<String>)], name: &str) -> Option<String> {
    f.iter()
        .find(|(n, _)| n == name)
        .and_then(|(_, v)| v.clone())
}

fn from(cx: &Ctx, args: &str) -> R<K> {
    let (f, rest) = flags(cx, args, &["platform"])?;
    let w: Vec<String> = words(rest, cx.escape).into_iter().map(|(_, w)| w).collect();
    let (image, name) = match w.as_slice() {
        [image] => (image.clone(), None),
        [image, kw, name] if kw.eq_ignore_ascii_case("as") => (image.clone(), Some(name.clone())),
        [] => return Err(cx.err("FROM needs an image (or scratch, or a stage name)")),
        _ => return Err(cx.err("FROM takes an image and optionally AS name")),
    };
    if let Some(n) = &name {
        let ok = n.starts_with(|c: char| c.is_ascii_alphabetic())
            && n.chars()
                .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c));
        if !ok {
            return Err(cx.err(format!(
                "invalid stage name {n:?}: it must start with a letter and contain only letters, digits, -, _ and ."
            )));
        }
    }
    Ok(K::From {
        image,
        name: name.map(|n| n.to_ascii_lowercase()),
        platform: get(&f, "platform"),
    })
}

/// `k=v k2="v 2"` or legacy `k v w` (one pair, the rest of the line).
fn pairs(cx: &Ctx, args: &str) -> R<Vec<(String, String)>> {
    let w = words(args, cx.escape);
    let Some((_, first)) = w.first() else {
        return Err(cx.err(format!("{} needs key=value", cx.name)));
    };
    if !first.contains('=') {
        let value = args[first.len()..].trim();
        if value.is_empty() {
            return Err(cx.err(format!("{} {first} needs a value: {first}=value", cx.name)));
        }
        return Ok(vec![(first.clone(), value.to_string())]);
    }
    w.into_iter()
        .map(|(at, w)| match w.split_once('=') {
            Some(("", _)) => {
                Err(cx.err_at(at, format!("{} has a pair with no name: {w:?}", cx.name)))
            }
            Some((k, v)) => Ok((k.to_string(), v.to_string())),
            None => Err(cx.err_at(
                at,
                format!("{} expects key=value pairs; {w:?} has no =", cx.name),
            )),
        })
        .collect()
}

fn run(cx: &Ctx, args: &str) -> R<K> {
    let (f, rest) = flags(cx, args, &["mount"])?;
    let mounts = all(&f, "mount")
        .iter()
        .map(|v| super::mount::spec(cx, v))
        .collect::<R<Vec<_>>>()?;
    let command = if cx.heredocs.is_empty() {
        command(cx, rest)?
    } else {
        ShellOrExec::Shell(super::heredoc::run_command(rest, cx.escape, cx.heredocs))
    };
    Ok(K::Run { command, mounts })
}

fn copy(cx: &Ctx, args: &str) -> R<K> {
    let add = cx.name == "ADD";
    // BuildKit's flags: --parents is COPY's only, --checksum and
    // --keep-git-dir ADD's.
    let allowed: &[&str] = if add {
        &[
            "chown",
            "chmod",
            "link",
            "exclude",
            "checksum",
            "keep-git-dir",
        ]
    } else {
        &["from", "chown", "chmod", "link", "parents", "exclude"]
    };
    let (f, rest) = flags(cx, args, allowed)?;
    if on(&f, "keep-git-dir") {
        return Err(cx.err(
            "ADD --keep-git-dir is for git sources, which kiln does not add; clone the repository in a RUN step",
        ));
    }
    let (mut list, json) = match json_list(cx, rest)? {
        Some(v) => (v, true),
        None => (
            words(rest, cx.escape).into_iter().map(|(_, w)| w).collect(),
            false,
        ),
    };
    if list.len() < 2 {
        return Err(cx.err(format!(
            "{} needs at least a source and a destination",
            cx.name
        )));
    }
    let dest = list.pop().unwrap_or_default();
    // Heredoc sources are files written from the Dockerfile (not in the
    // JSON form, where `<<EOF` is just a name).
    let mut sources = Vec::new();
    let mut inline = Vec::new();
    for w in list {
        match opener(&w).filter(|_| !json) {
            Some(o) => match cx.heredocs.iter().rev().find(|h| h.name == o.name) {
                Some(h) => inline.push(h.clone()),
                None => return Err(cx.err(format!("internal: no body for heredoc {w}"))),
            },
            None => sources.push(w),
        }
    }
    if !json && opener(&dest).is_some() {
        return Err(cx.err(format!(
            "{} cannot take a heredoc as its destination",
            cx.name
        )));
    }
    Ok(K::Copy(CopyArgs {
        add,
        sources,
        dest,
        from: get(&f, "from"),
        chown: get(&f, "chown"),
        chmod: get(&f, "chmod"),
        link: on(&f, "link"),
        parents: on(&f, "parents"),
        exclude: all(&f, "exclude"),
        checksum: get(&f, "checksum"),
        inline,
    }))
}

/// Whether a source is a git repository, as BuildKit's `ParseGitRef` tells
/// them: `git://`, `ssh://`, `git@host:path`, or an http(s) URL whose path
/// ends in `.git` (a `#ref` or `?query` after it aside).
pub(crate) fn is_git_url(s: &str) -> bool {
    let l = s.to_ascii_lowercase();
    if ["git://", "ssh://", "git@"]
        .iter()
        .any(|p| l.starts_with(p))
    {
        return true;
    }
    let Some(rest) = l
        .strip_prefix("http://")
        .or_else(|| l.strip_prefix("https://"))
    else {
        return false;
    };
    let path = rest.split(['#', '?']).next().unwrap_or_default();
    path.contains('/') && path.ends_with(".git")
}

/// Whether a source is a file to download (http or https, not git).
pub(crate) fn is_http_url(s: &str) -> bool {
    let l = s.to_ascii_lowercase();
    (l.starts_with("http://") || l.starts_with("https://")) && !is_git_url(s)
}

fn healthcheck(cx: &Ctx, args: &str) -> R<Healthcheck> {
    let (f, rest) = flags(
        cx,
        args,
        &["interval", "timeout", "start-period", "retries"],
    )?;
    let (kw, cmd) = rest
        .split_once(char::is_whitespace)
        .map(|(a, b)| (a, b.trim_start()))
        .unwrap_or((rest, ""));
    let test = if kw.eq_ignore_ascii_case("none") && cmd.is_empty() {
        if !f.is_empty() {
            return Err(cx.err("HEALTHCHECK NONE takes no flags"));
        }
        vec!["NONE".to_string()]
    } else if kw.eq_ignore_ascii_case("cmd") {
        match command(cx, cmd)? {
            ShellOrExec::Shell(s) => vec!["CMD-SHELL".to_string(), s],
            ShellOrExec::Exec(v) if v.is_empty() => {
                return Err(cx.err("HEALTHCHECK CMD needs a command"));
            }
            ShellOrExec::Exec(v) => std::iter::once("CMD".to_string()).chain(v).collect(),
        }
    } else {
        return Err(cx.err("HEALTHCHECK expects NONE or [flags] CMD command"));
    };
    let dur = |n: &str| -> R<Option<Duration>> {
        get(&f, n)
            .map(|v| {
                duration(&v).ok_or_else(|| {
                    cx.err(format!(
                        "--{n}={v} is not a duration (e.g. 30s, 1m30s, 500ms)"
                    ))
                })
            })
            .transpose()
    };
    let retries = get(&f, "retries")
        .map(|v| {
            v.parse::<u32>()
                .map_err(|_| cx.err(format!("--retries={v} is not a whole number")))
        })
        .transpose()?;
    Ok(Healthcheck {
        test,
        interval: dur("interval")?,
        timeout: dur("timeout")?,
        start_period: dur("start-period")?,
        retries,
    })
}

/// A Go-style duration: `1h2m3s`, `500ms`, `1.5s`.
fn duration(s: &str) -> Option<Duration> {
    let mut total = 0f64;
    let mut rest = s;
    if rest.is_empty() {
        return None;
    }
    while !rest.is_empty() {
        let n = rest
            .find(|c: char| !c.is_ascii_digit() && c != '.')
            .filter(|n| *n > 0)?;
        let value: f64 = rest[..n].parse().ok()?;
        let tail = &rest[n..];
        let u = tail
            .find(|c: char| c.is_ascii_digit())
            .unwrap_or(tail.len());
        let scale = match &tail[..u] {
            "ns" => 1e-9,
            "us" | "µs" => 1e-6,
            "ms" => 1e-3,
            "s" => 1.0,
            "m" => 60.0,
            "h" => 3600.0,
            _ => return None,
        };
        total += value * scale;
        rest = &tail[u..];
    }
    Some(Duration::from_secs_f64(total))
}
