//! What a parsed Dockerfile is made of: [`Dockerfile`], its
//! [`Instruction`]s and their typed arguments, plus the context an
//! instruction's arguments are read in ([`Ctx`]). Plain data, shared by the
//! line reader, the argument parsers and the evaluation.

use std::time::Duration;

use super::DockerfileError;

/// A parsed Dockerfile: the escape character (needed again for
/// substitution) and its instructions in order.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Dockerfile {
    /// `\` or, with `# escape=\``, a backtick.
    pub escape: char,
    /// The instructions, first to last.
    pub instructions: Vec<Instruction>,
}

/// One instruction with the line it starts on, so every later error and
/// every history entry can point back at the file.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Instruction {
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
pub(crate) enum ShellOrExec {
    /// The text after the instruction name, for `SHELL + [text]`.
    Shell(String),
    /// The argument vector.
    Exec(Vec<String>),
}

/// `RUN --mount=type=secret,...`: a build secret visible while the command
/// runs, never in a layer.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub(crate) struct SecretMount {
    /// The secret's id, as given to the build.
    pub id: String,
    /// Where it appears; `None` means `/run/secrets/<id>`.
    pub target: Option<String>,
    /// Whether a missing secret is an error (Docker's default: no).
    pub required: bool,
}

/// A heredoc (`<<EOF` ... `EOF`) as written in RUN, COPY or ADD.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub(crate) struct Heredoc {
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
    pub(crate) fn body(&self) -> String {
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
pub(crate) struct MountSpec {
    /// `key=value` fields in order; `None` for a bare key such as `ro`.
    pub fields: Vec<(String, Option<String>)>,
}

/// HEALTHCHECK as the image config stores it.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub(crate) struct Healthcheck {
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
pub(crate) struct CopyArgs {
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
pub(crate) enum InstructionKind {
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
