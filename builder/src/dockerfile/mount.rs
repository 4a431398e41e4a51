//! `RUN --mount=...`, BuildKit's keys, defaults and checks. Parsing
//! ([`spec`]) splits the comma-separated fields and checks the keys; the
//! values are substituted in the stage's scope, as BuildKit does, so their
//! meaning is settled at evaluation ([`resolve`]): a secret, or a cache, bind
//! or tmpfs mount for the executor.

use super::DockerfileError;
use super::graph::{CacheSharing, CopyFrom, RunMount};
use super::scope::{Place, Scope, copy_from, sub};
use super::syntax::{Ctx, MountSpec, SecretMount};

type R<T> = Result<T, DockerfileError>;

/// A `type=` that kiln does not mount.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub(crate) enum MountTypeError {
    /// `type=ssh`: there is no agent to forward.
    #[error("RUN --mount=type=ssh is not supported: kiln forwards no SSH agent")]
    Ssh,
    /// A type BuildKit does not have either.
    #[error("unsupported mount type {kind:?} (kiln takes bind, cache, tmpfs, secret)")]
    Unsupported {
        /// The type as written.
        kind: String,
    },
}

/// A boolean key whose value Go's `strconv.ParseBool` refuses.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("--mount {key}={value} is not true or false")]
pub(crate) struct MountBoolError {
    /// The key.
    key: String,
    /// The value given.
    value: String,
}

/// A `--mount` value that is not one line of CSV.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub(crate) enum CsvError {
    /// The value ends inside a quoted field.
    #[error("a quoted field has no closing \"")]
    UnclosedQuote,
    /// A character other than `,` follows a quoted field.
    #[error("{found:?} after a quoted field")]
    AfterQuote {
        /// The character.
        found: char,
    },
    /// A `"` in the middle of an unquoted field.
    #[error("a \" inside a field; quote the whole field")]
    QuoteInside,
}

/// Every key BuildKit takes (`src`, `dst`, `destination`, `ro`, `rw` are
/// aliases).
const KEYS: [&str; 19] = [
    "type",
    "from",
    "source",
    "src",
    "target",
    "dst",
    "destination",
    "readonly",
    "ro",
    "readwrite",
    "rw",
    "required",
    "size",
    "id",
    "sharing",
    "mode",
    "uid",
    "gid",
    "env",
];

/// Keys that may stand alone, meaning true.
const BARE: [&str; 5] = ["readonly", "ro", "readwrite", "rw", "required"];

/// One `--mount` value, split and its keys checked.
pub(crate) fn spec(cx: &Ctx, value: &str) -> R<MountSpec> {
    let fields = csv(value).map_err(|e| cx.err(format!("--mount={value}: {e}")))?;
    let mut out = Vec::new();
    for field in fields {
        let (key, v) = match field.split_once('=') {
            Some((k, v)) => (k.to_ascii_lowercase(), Some(v.to_string())),
            None => (field.to_ascii_lowercase(), None),
        };
        if !KEYS.contains(&key.as_str()) {
            return Err(cx.err(format!(
                "--mount option {key:?} is unknown; kiln takes type, target, source, from, id, sharing, mode, uid, gid, readonly, readwrite, size, required"
            )));
        }
        if v.is_none() && !BARE.contains(&key.as_str()) {
            return Err(cx.err(format!("--mount field {field:?} needs a value: {key}=...")));
        }
        // A literal type is checked now; one with a variable once substituted.
        if let (true, Some(t)) = (key == "type", &v)
            && !t.contains('$')
        {
            check_type(t).map_err(|m| cx.err(m.to_string()))?;
        }
        out.push((key, v));
    }
    Ok(MountSpec { fields: out })
}

fn check_type(t: &str) -> Result<(), MountTypeError> {
    match t.to_ascii_lowercase().as_str() {
        "bind" | "cache" | "tmpfs" | "secret" => Ok(()),
        "ssh" => Err(MountTypeError::Ssh),
        _ => Err(MountTypeError::Unsupported { kind: t.into() }),
    }
}

/// What a `--mount` is once its values are substituted.
pub(crate) enum Resolved {
    /// `type=secret`, which the step keeps apart from the other mounts.
    Secret(SecretMount),
    /// Any other type.
    Mount(RunMount),
}

/// Substitutes a mount's values in the stage's scope and gives it meaning,
/// with BuildKit's defaults (type bind; bind read-only; cache shared, id
/// its target, mode 0755 owned by root).
pub(crate) fn resolve(spec: &MountSpec, scope: &Scope, at: &Place, line: usize) -> R<Resolved> {
    let m = Fields::substitute(spec, scope, at, line)?;
    if m.kind == "secret" {
        return m.secret().map(Resolved::Secret);
    }
    if m.get("required").is_some() {
        return Err(m.err("required= is only for secret mounts".into()));
    }
    let target = match m.get("target") {
        Some(t) if !t.is_empty() => t,
        _ => return Err(m.err("needs target=PATH, where it is mounted".into())),
    };
    if clean(&target) == "/" {
        return Err(m.err(format!("{target:?} cannot be a mount target")));
    }
    Ok(Resolved::Mount(match m.kind.as_str() {
        "cache" => m.cache(target, at)?,
        "bind" => m.bind(target, at)?,
        _ => m.tmpfs(target)?,
    }))
}

/// A mount's fields once substituted, their aliases folded into one name
/// each, with the type they settle on: what reading each type asks of.
struct Fields {
    /// Keys (aliases folded) and values in the order given; `None` for a
    /// bare key.
    list: Vec<(&'static str, Option<String>)>,
    /// `readonly` and `readwrite` set one switch; the last one given wins.
    read_only: Option<bool>,
    /// The mount type, lower case (`bind` when none is given).
    kind: String,
    /// The instruction's line, for errors.
    line: usize,
}

impl Fields {
    /// Substitutes every value and folds the aliases, then settles and
    /// checks the type: this is where a type given through a variable is
    /// checked.
    fn substitute(spec: &MountSpec, scope: &Scope, at: &Place, line: usize) -> R<Self> {
        let mut list: Vec<(&'static str, Option<String>)> = Vec::new();
        let mut read_only: Option<bool> = None;
        for (k, v) in &spec.fields {
            let v = v
                .as_deref()
                .map(|w| sub(scope, at.escape, line, w))
                .transpose()?;
            let key = match k.as_str() {
                "src" => "source",
                "dst" | "destination" => "target",
                "ro" => "readonly",
                "rw" => "readwrite",
                other => match KEYS.iter().find(|x| **x == other) {
                    Some(k) => k,
                    None => {
                        return Err(DockerfileError::at(
                            line,
                            format!("--mount option {other:?} is unknown"),
                        ));
                    }
                },
            };
            // readonly and readwrite set one switch; the last one given wins.
            if key == "readonly" || key == "readwrite" {
                let b = boolean(k, v.as_deref())
                    .map_err(|m| DockerfileError::at(line, m.to_string()))?;
                read_only = Some(if key == "readonly" { b } else { !b });
            }
            list.push((key, v));
        }
        let mut m = Fields {
            list,
            read_only,
            kind: String::new(),
            line,
        };
        m.kind = m
            .get("type")
            .unwrap_or_else(|| "bind".to_string())
            .to_ascii_lowercase();
        check_type(&m.kind).map_err(|e| DockerfileError::at(line, e.to_string()))?;
        Ok(m)
    }

    /// The last value given for a key (`Some(None)` for a bare key).
    fn raw(&self, k: &str) -> Option<Option<String>> {
        self.list
            .iter()
            .rev()
            .find(|(n, _)| *n == k)
            .map(|(_, v)| v.clone())
    }

    /// The last value given for a key, a bare key reading as empty.
    fn get(&self, k: &str) -> Option<String> {
        self.raw(k).map(Option::unwrap_or_default)
    }

    /// An error that names the mount's type.
    fn err(&self, m: String) -> DockerfileError {
        DockerfileError::at(self.line, format!("--mount=type={}: {m}", self.kind))
    }

    /// Fails on the first of `keys` that was given: they mean nothing for
    /// this type.
    fn refuse(&self, keys: &[&str]) -> R<()> {
        match keys.iter().find(|k| self.get(k).is_some()) {
            Some(k) => Err(self.err(format!("{k}= is not for {} mounts", self.kind))),
            None => Ok(()),
        }
    }

    /// `from=`, the stage, image or context a cache or bind mount reads.
    fn from(&self, at: &Place) -> R<Option<CopyFrom>> {
        self.get("from")
            .filter(|f| !f.is_empty())
            .map(|f| copy_from(at, self.line, "RUN --mount from", &f))
            .transpose()
    }

    /// A numeric key of a cache mount, in `radix` and at most `max`; `what`
    /// says what it should have been.
    fn number(&self, k: &str, radix: u32, max: u32, what: &str) -> R<Option<u32>> {
        self.get(k)
            .map(|v| {
                u32::from_str_radix(&v, radix)
                    .ok()
                    .filter(|n| *n <= max)
                    .ok_or_else(|| self.err(format!("{k}={v} is not {what}")))
            })
            .transpose()
    }

    /// `type=secret`: an id (or, as Docker does, the target's file name),
    /// an optional target and whether the secret must exist.
    fn secret(&self) -> R<SecretMount> {
        self.refuse(&["from", "sharing", "size"])?;
        if let Some(k) = ["mode", "uid", "gid", "env"]
            .iter()
            .find(|k| self.get(k).is_some())
        {
            return Err(self.err(format!("{k}= is not supported for secrets yet")));
        }
        let (id, source) = (self.get("id"), self.get("source"));
        if id.is_some() && source.is_some() {
            return Err(self.err("give id= or source= (the same thing), not both".into()));
        }
        let target = self.get("target").filter(|t| !t.is_empty());
        let required = match self.raw("required") {
            None => false,
            Some(v) => boolean("required", v.as_deref())
                .map_err(|m| DockerfileError::at(self.line, m.to_string()))?,
        };
        // Docker names the secret after the target's file name when no id
        // is given.
        let id = id.or(source).filter(|i| !i.is_empty()).or_else(|| {
            target
                .as_deref()
                .and_then(|t| t.rsplit('/').next())
                .filter(|n| !n.is_empty())
                .map(str::to_string)
        });
        match id {
            Some(id) => Ok(SecretMount {
                id,
                target,
                required,
            }),
            None => Err(self.err("needs id=NAME or target=PATH".into())),
        }
    }

    /// `type=cache`: shared, named after its target, 0755 and owned by root
    /// unless told otherwise.
    fn cache(&self, target: String, at: &Place) -> R<RunMount> {
        self.refuse(&["size", "env"])?;
        let sharing = match self
            .get("sharing")
            .map(|s| s.to_ascii_lowercase())
            .as_deref()
        {
            None | Some("shared") => CacheSharing::Shared,
            Some("private") => CacheSharing::Private,
            Some("locked") => CacheSharing::Locked,
            Some(other) => {
                return Err(self.err(format!("sharing={other} is not shared, private or locked")));
            }
        };
        Ok(RunMount::Cache {
            id: self
                .get("id")
                .filter(|i| !i.is_empty())
                .unwrap_or_else(|| clean(&target)),
            sharing,
            from: self.from(at)?,
            source: self.get("source").filter(|s| !s.is_empty()),
            mode: self
                .number("mode", 8, 0o7777, "an octal mode such as 0755")?
                .unwrap_or(0o755),
            uid: self
                .number("uid", 10, u32::MAX, "a numeric user id")?
                .unwrap_or(0),
            gid: self
                .number("gid", 10, u32::MAX, "a numeric group id")?
                .unwrap_or(0),
            readonly: self.read_only.unwrap_or(false),
            target,
        })
    }

    /// `type=bind`: the whole source (`/`), read-only unless told otherwise.
    fn bind(&self, target: String, at: &Place) -> R<RunMount> {
        self.refuse(&["size", "sharing", "id", "mode", "uid", "gid", "env"])?;
        Ok(RunMount::Bind {
            source: self
                .get("source")
                .filter(|s| !s.is_empty())
                .unwrap_or_else(|| "/".to_string()),
            from: self.from(at)?,
            readwrite: !self.read_only.unwrap_or(true),
            target,
        })
    }

    /// `type=tmpfs`: only a target and an optional size.
    fn tmpfs(&self, target: String) -> R<RunMount> {
        self.refuse(&[
            "from",
            "source",
            "id",
            "sharing",
            "mode",
            "uid",
            "gid",
            "readonly",
            "readwrite",
            "env",
        ])?;
        let size = self
            .get("size")
            .map(|v| {
                bytes(&v)
                    .ok_or_else(|| self.err(format!("size={v} is not a size such as 64m or 1g")))
            })
            .transpose()?;
        Ok(RunMount::Tmpfs { target, size })
    }
}

/// Go's `strconv.ParseBool`, which BuildKit uses; a bare key is true.
fn boolean(key: &str, v: Option<&str>) -> Result<bool, MountBoolError> {
    match v {
        None | Some("1" | "t" | "T" | "TRUE" | "true" | "True") => Ok(true),
        Some("0" | "f" | "F" | "FALSE" | "false" | "False") => Ok(false),
        Some(other) => Err(MountBoolError {
            key: key.into(),
            value: other.into(),
        }),
    }
}

/// Go's `path.Clean`: what BuildKit names a cache after when it has no id.
pub(crate) fn clean(p: &str) -> String {
    let rooted = p.starts_with('/');
    let mut parts: Vec<&str> = Vec::new();
    for seg in p.split('/') {
        match seg {
            "" | "." => {}
            ".." if parts.last().is_some_and(|l| *l != "..") => {
                parts.pop();
            }
            ".." if rooted => {}
            s => parts.push(s),
        }
    }
    let joined = parts.join("/");
    match (rooted, joined.is_empty()) {
        (true, _) => format!("/{joined}"),
        (false, true) => ".".to_string(),
        (false, false) => joined,
    }
}

/// docker/go-units' `RAMInBytes`: `1024`, `64m`, `1.5GiB`, `2 g`; binary
/// multiples.
fn bytes(s: &str) -> Option<u64> {
    let t = s.trim();
    let n = t
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(t.len());
    let value: f64 = t[..n].parse().ok()?;
    let mut unit = t[n..].strip_prefix(' ').unwrap_or(&t[n..]).chars();
    let scale = match unit.next().map(|c| c.to_ascii_lowercase()) {
        None => 1u64,
        Some('b') => {
            return unit.next().is_none().then_some(value as u64);
        }
        Some(c) => 1024u64.pow(match c {
            'k' => 1,
            'm' => 2,
            'g' => 3,
            't' => 4,
            'p' => 5,
            _ => return None,
        }),
    };
    let rest: String = unit.collect::<String>().to_ascii_lowercase();
    if !matches!(rest.as_str(), "" | "i" | "b" | "ib") {
        return None;
    }
    Some((value * scale as f64) as u64)
}

/// One line of CSV, as Go's `encoding/csv` reads a `--mount` value: commas
/// split fields; a field may be quoted (`"a,b"`, `""` for a quote inside).
fn csv(s: &str) -> Result<Vec<String>, CsvError> {
    let mut out = Vec::new();
    let mut chars = s.chars().peekable();
    loop {
        let mut field = String::new();
        if chars.peek() == Some(&'"') {
            chars.next();
            loop {
                match chars.next() {
                    Some('"') if chars.peek() == Some(&'"') => {
                        chars.next();
                        field.push('"');
                    }
                    Some('"') => break,
                    Some(c) => field.push(c),
                    None => return Err(CsvError::UnclosedQuote),
                }
            }
            match chars.next() {
                None => {
                    out.push(field);
                    return Ok(out);
                }
                Some(',') => {}
                Some(c) => return Err(CsvError::AfterQuote { found: c }),
            }
        } else {
            loop {
                match chars.next() {
                    None => {
                        out.push(field);
                        return Ok(out);
                    }
                    Some(',') => break,
                    Some('"') => return Err(CsvError::QuoteInside),
                    Some(c) => field.push(c),
                }
            }
        }
        out.push(field);
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn dockerfile_mount_helpers() {
        assert_eq!(super::clean("/a/./b/../c/"), "/a/c");
        assert_eq!(super::clean("a//b/.."), "a");
        assert_eq!(super::clean("../x"), "../x");
        assert_eq!(super::clean("/.."), "/");
        assert_eq!(super::clean(""), ".");
        assert_eq!(super::bytes("1024"), Some(1024));
        assert_eq!(super::bytes("64m"), Some(64 << 20));
        assert_eq!(super::bytes("1.5GiB"), Some(3 << 29));
        assert_eq!(super::bytes("2 k"), Some(2048));
        assert_eq!(super::bytes("10b"), Some(10));
        assert_eq!(super::bytes("1x"), None);
        assert_eq!(super::bytes("m"), None);
        assert_eq!(
            super::csv("type=bind,\"target=/a,b\",x").unwrap(),
            vec!["type=bind", "target=/a,b", "x"]
        );
        assert_eq!(super::csv("\"a\"\"b\"").unwrap(), vec!["a\"b".to_string()]);
        assert!(super::csv("a=\"b\"").is_err());
        assert!(super::csv("\"open").is_err());
    }
}
