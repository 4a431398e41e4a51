//! Logical lines to typed instructions. Words are kept as written (quotes,
//! `$VAR` and escapes intact): substitution needs the scope, which only
//! evaluation knows.

use std::time::Duration;

use super::DockerfileError;
use super::lines::{self, Logical};

/// A parsed Dockerfile: the escape character (needed again for
/// substitution) and its instructions in order.
#[derive(Debug, Clone, PartialEq)]
pub struct Dockerfile {
    /// `\` or, with `# escape=\``, a backtick.
    pub escape: char,
    /// The instructions, first to last.
    pub instructions: Vec<Instruction>,
}

/// One instruction with the line it starts on, so every later error and
/// every history entry can point back at the file.
#[derive(Debug, Clone, PartialEq)]
pub struct Instruction {
    /// 1-based line of the instruction's first physical line.
    pub line: usize,
    /// The instruction as written, continuations joined; heredoc bodies
    /// follow on their own lines, each ending with its delimiter.
    pub text: String,
    /// What it says.
    pub kind: InstructionKind,
}

/// A command in shell form (run by the image's SHELL) or exec form (a JSON
/// array run as is); Docker treats them differently, so kiln keeps which.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum ShellOrExec {
    /// The text after the instruction name, for `SHELL + [text]`.
    Shell(String),
    /// The argument vector.
    Exec(Vec<String>),
}

/// `RUN --mount=type=secret,...`: a build secret visible while the command
/// runs, never in a layer.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct SecretMount {
    /// The secret's id, as given to the build.
    pub id: String,
    /// Where it appears; `None` means `/run/secrets/<id>`.
    pub target: Option<String>,
    /// Whether a missing secret is an error (Docker's default: no).
    pub required: bool,
}

/// A heredoc (`<<EOF` ... `EOF`) as written in RUN, COPY or ADD.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Heredoc {
    /// The delimiter, quotes removed; for COPY/ADD, the file's name.
    pub name: String,
    /// The lines between the instruction and the delimiter, each with its
    /// newline, exactly as written.
    pub content: String,
    /// `<<-`: leading tabs are stripped from every line.
    pub chomp: bool,
    /// No part of the delimiter was quoted: COPY/ADD substitute `$VAR` in
    /// the content.
    pub expand: bool,
}

impl Heredoc {
    /// The content with `<<-`'s tabs stripped.
    pub fn body(&self) -> String {
        if !self.chomp {
            return self.content.clone();
        }
        self.content
            .split_inclusive('\n')
            .map(|l| l.trim_start_matches('\t'))
            .collect()
    }
}

/// `RUN --mount=...` as written: its comma-separated fields, keys checked
/// and lowercased, values unsubstituted (BuildKit substitutes them in the
/// stage's scope, so their meaning is settled at evaluation).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct MountSpec {
    /// `key=value` fields in order; `None` for a bare key such as `ro`.
    pub fields: Vec<(String, Option<String>)>,
}

/// HEALTHCHECK as the image config stores it.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Healthcheck {
    /// `["NONE"]`, `["CMD", args...]` or `["CMD-SHELL", command]`.
    pub test: Vec<String>,
    /// `--interval`.
    pub interval: Option<Duration>,
    /// `--timeout`.
    pub timeout: Option<Duration>,
    /// `--start-period`.
    pub start_period: Option<Duration>,
    /// `--retries`.
    pub retries: Option<u32>,
}

/// COPY or ADD before substitution.
#[derive(Debug, Clone, PartialEq)]
pub struct CopyArgs {
    /// ADD (auto-extracts local tars) rather than COPY.
    pub add: bool,
    /// Source words as written.
    pub sources: Vec<String>,
    /// Destination as written.
    pub dest: String,
    /// `--from=` as written.
    pub from: Option<String>,
    /// `--chown=` as written.
    pub chown: Option<String>,
    /// `--chmod=` as written (octal once expanded).
    pub chmod: Option<String>,
    /// `--link`: BuildKit's layer-independent copy; kiln's layers are
    /// independent anyway, so it changes nothing but the cache key.
    pub link: bool,
    /// `--parents` (COPY only): keep each source's path under `dest`.
    pub parents: bool,
    /// `--exclude=PATTERN`, each as written.
    pub exclude: Vec<String>,
    /// `--checksum=` (ADD only) as written.
    pub checksum: Option<String>,
    /// Heredoc sources (`COPY <<EOF /dest`): files written from the
    /// Dockerfile, in order.
    pub inline: Vec<Heredoc>,
}

/// What an instruction says, words unexpanded.
#[derive(Debug, Clone, PartialEq)]
pub enum InstructionKind {
    /// `FROM [--platform=P] image [AS name]`.
    From {
        /// The image reference, `scratch` or a stage name, as written.
        image: String,
        /// The stage name after AS, lowercased.
        name: Option<String>,
        /// `--platform`, as written.
        platform: Option<String>,
    },
    /// `ARG name[=default] ...`.
    Arg(Vec<(String, Option<String>)>),
    /// `ENV k=v ...` or `ENV k v`; values as written.
    Env(Vec<(String, String)>),
    /// `LABEL k=v ...`; keys and values as written.
    Label(Vec<(String, String)>),
    /// `RUN [--mount=...] command`.
    Run {
        /// The command.
        command: ShellOrExec,
        /// `--mount` flags, in order (secrets among them).
        mounts: Vec<MountSpec>,
    },
    /// COPY or ADD.
    Copy(CopyArgs),
    /// `WORKDIR path`.
    Workdir(String),
    /// `USER user[:group]`.
    User(String),
    /// `EXPOSE port[/proto] ...`.
    Expose(Vec<String>),
    /// `VOLUME path ...` or a JSON array.
    Volume(Vec<String>),
    /// `CMD`.
    Cmd(ShellOrExec),
    /// `ENTRYPOINT`.
    Entrypoint(ShellOrExec),
    /// `SHELL ["exe", "arg"]`.
    Shell(Vec<String>),
    /// `STOPSIGNAL sig`.
    StopSignal(String),
    /// `HEALTHCHECK NONE | [flags] CMD ...`.
    Healthcheck(Healthcheck),
    /// `ONBUILD instr`: the trigger text and its parse (checked now, run
    /// when a later build uses this image as a base).
    OnBuild {
        /// The trigger as written, stored in the image config.
        trigger: String,
        /// The parsed trigger.
        instruction: Box<Instruction>,
    },
    /// `MAINTAINER name`: deprecated; sets the image's author, as in Docker.
    Maintainer(String),
}

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

/// Parses a Dockerfile's text.
pub fn parse(src: &str) -> Result<Dockerfile, DockerfileError> {
    let lines = lines::split(src)?;
    let escape = lines.escape;
    let mut instructions = Vec::with_capacity(lines.items.len());
    for l in &lines.items {
        instructions.push(instruction(l, escape)?);
    }
    let Some(first) = instructions
        .iter()
        .find(|i| !matches!(i.kind, InstructionKind::Arg(_)))
    else {
        return Err(match instructions.first() {
            Some(i) => DockerfileError::at(i.line, "there is no FROM after the ARGs"),
            None => DockerfileError::Empty,
        });
    };
    if !matches!(first.kind, InstructionKind::From { .. }) {
        return Err(DockerfileError::at(
            first.line,
            "the first instruction must be FROM or ARG",
        ));
    }
    Ok(Dockerfile {
        escape,
        instructions,
    })
}

/// Parses ONBUILD triggers stored in a base image's config, for the
/// executor to run right after FROM (Docker's semantics). `line` is the
/// FROM's line, used for errors and the steps.
pub fn parse_onbuild_triggers(
    triggers: &[String],
    escape: char,
    line: usize,
) -> Result<Vec<Instruction>, DockerfileError> {
    triggers
        .iter()
        .map(|t| {
            let i = lines::trigger(t, escape, line)
                .and_then(|l| instruction(&l, escape))
                .map_err(|e| {
                    DockerfileError::at(line, format!("base image ONBUILD: {}", e.message()))
                })?;
            check_trigger(&i)?;
            Ok(i)
        })
        .collect()
}

pub(crate) fn check_trigger(i: &Instruction) -> Result<(), DockerfileError> {
    let bad = match i.kind {
        InstructionKind::OnBuild { .. } => "ONBUILD ONBUILD",
        InstructionKind::From { .. } => "ONBUILD FROM",
        InstructionKind::Maintainer(_) => "ONBUILD MAINTAINER",
        _ => return Ok(()),
    };
    Err(DockerfileError::at(i.line, format!("{bad} is not allowed")))
}

/// Context for one instruction's errors.
pub(crate) struct Ctx<'a> {
    pub(crate) line: usize,
    pub(crate) single: bool,
    pub(crate) name: &'a str,
    /// Offset of the arguments in the text, for columns.
    pub(crate) args_at: usize,
    pub(crate) escape: char,
    /// The heredocs the instruction opens, bodies read.
    pub(crate) heredocs: &'a [Heredoc],
}

impl Ctx<'_> {
    pub(crate) fn err(&self, message: impl Into<String>) -> DockerfileError {
        DockerfileError::at(self.line, message)
    }
    pub(crate) fn err_at(&self, offset: usize, message: impl Into<String>) -> DockerfileError {
        DockerfileError::Line {
            line: self.line,
            column: self.single.then_some(self.args_at + offset + 1),
            message: message.into(),
        }
    }
}

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
