//! The build graph's parts: [`Stage`]s of [`Step`]s, each with what the
//! executor needs (substitution done, references resolved). Plain data, so
//! the evaluation ([`super::stage`], [`super::step`], [`super::mount`]) and
//! the executor meet here without importing each other.

use super::syntax::{Healthcheck, SecretMount, ShellOrExec};

/// One `FROM` and the steps after it.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Stage {
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
pub(crate) enum Base {
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
pub(crate) struct Step {
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
pub(crate) enum StepKind {
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
pub(crate) struct InlineFile {
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
pub(crate) enum RunMount {
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
pub(crate) enum CacheSharing {
    /// Any number of builds use it at once (the default).
    Shared,
    /// A build that finds it in use gets a fresh cache of its own.
    Private,
    /// A build waits until no other build uses it.
    Locked,
}

/// Where `COPY --from` reads.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum CopyFrom {
    /// An earlier stage's filesystem.
    Stage(usize),
    /// An image's filesystem, by reference.
    Image(String),
}

/// A change to the image config, in the terms of the OCI config.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum ConfigChange {
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
