//! What an instruction is evaluated in: the stage's variables ([`Scope`]),
//! where it stands among the stages ([`Place`]), substitution, and the
//! resolution of a `--from=` (COPY's and RUN --mount's alike).

use std::collections::HashMap;

use super::DockerfileError;
use super::graph::CopyFrom;

type R<T> = Result<T, DockerfileError>;

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
    pub(super) fn lookup(&self, name: &str) -> Option<String> {
        let env = self.env.iter().find(|(k, _)| k == name).map(|(_, v)| v);
        env.cloned().or_else(|| {
            self.args
                .iter()
                .find(|(k, _)| k == name)
                .and_then(|(_, v)| v.clone())
        })
    }

    /// Declares (or redeclares) an ARG; the latest declaration wins.
    pub(super) fn set_arg(&mut self, name: &str, value: Option<String>) {
        self.args.retain(|(k, _)| k != name);
        self.args.push((name.to_string(), value));
    }

    /// Sets an ENV variable, keeping its place if it was set before.
    pub(super) fn set_env(&mut self, name: &str, value: String) {
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
