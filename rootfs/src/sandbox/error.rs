//! Errors of the sandbox: each preflight failure names what is wrong on this
//! machine and the command that fixes it.

use std::path::PathBuf;

/// Why a sandbox could not be prepared, started or waited for.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SandboxError {
    /// The kernel (or a test hook) does not allow user namespaces.
    #[error("user namespaces are not available: {reason}; fix: {fix}")]
    UserNamespacesDisabled {
        /// What was found.
        reason: String,
        /// What to run to allow them.
        fix: String,
    },

    /// The invoking user has no subordinate id range, so the sandbox could
    /// map no ids besides its own.
    #[error(
        "no subordinate {kind} range for user `{user}` (uid {uid}) in {file}; fix: add the line \
         `{suggested_line}` to {file} (e.g. `usermod --add-sub{kind}s {suggested_range} {user}`)"
    )]
    NoSubordinateIds {
        /// `uid` or `gid`.
        kind: &'static str,
        /// The user name (or number when it has no passwd entry).
        user: String,
        /// The user's uid.
        uid: u32,
        /// `/etc/subuid` or `/etc/subgid`.
        file: PathBuf,
        /// A line that would fix it, with a range not used by anyone else.
        suggested_line: String,
        /// The same range as `FIRST-LAST` for usermod.
        suggested_range: String,
    },

    /// A host program the sandbox drives is not installed.
    #[error(
        "`{tool}` was not found in PATH; fix: install the Debian package `{package}` (apt-get install {package})"
    )]
    MissingTool {
        /// The program.
        tool: &'static str,
        /// The Debian package that ships it.
        package: &'static str,
    },

    /// No program to run as the sandbox's init was found.
    #[error(
        "kiln's sandbox init was not found: this program does not host it (call \
         `kiln_rootfs::sandbox::run_init_if_requested()` first in main) and there is no \
         `kiln-sandbox-init` or `kiln` beside {exe}; fix: set {env} to a kiln binary"
    )]
    NoInit {
        /// This executable.
        exe: PathBuf,
        /// The variable that names the init.
        env: &'static str,
    },

    /// The user namespace could be created but its id mapping failed
    /// (newuidmap/newgidmap refused it).
    #[error("could not set up the sandbox's user namespace: {detail}")]
    UserNamespaceSetup {
        /// What unshare/newuidmap said.
        detail: String,
    },

    /// The operation needs root (real root, or root inside kiln's user
    /// namespace) and this process is neither.
    #[error(
        "{what} needs root or kiln's user namespace, and this process runs as uid {uid}; fix: \
         call `kiln_rootfs::sandbox::reexec_in_user_namespace()` at the start of main (the kiln \
         binary does), or run as root"
    )]
    NeedsRoot {
        /// The operation.
        what: &'static str,
        /// The effective uid.
        uid: u32,
    },

    /// The run specification is not usable.
    #[error("invalid sandbox spec: {field}: {reason}")]
    InvalidSpec {
        /// The offending field.
        field: &'static str,
        /// What is wrong with it.
        reason: String,
    },

    /// A mount target inside the root cannot be used (e.g. goes through a
    /// file, or loops).
    #[error("mount target {target} inside {root}: {reason}")]
    MountTarget {
        /// The root directory.
        root: PathBuf,
        /// The target path inside it.
        target: PathBuf,
        /// Why it cannot be used.
        reason: String,
    },

    /// The mounts or namespaces could not be set up; the command never ran.
    #[error("sandbox setup failed (exit code {code}): {log}")]
    SetupFailed {
        /// Exit code of the setup stage.
        code: i32,
        /// What the setup stage reported.
        log: String,
    },

    /// Re-executing this program inside a user namespace failed.
    #[error("re-executing {exe} inside a user namespace failed: {source}")]
    Reexec {
        /// The program.
        exe: PathBuf,
        /// The exec error.
        #[source]
        source: std::io::Error,
    },

    /// An operating-system call failed.
    #[error("{context}: {source}")]
    Io {
        /// What was being done.
        context: String,
        /// The error.
        #[source]
        source: std::io::Error,
    },
}

/// Result of sandbox operations.
pub type Result<T> = std::result::Result<T, SandboxError>;

impl SandboxError {
    pub(crate) fn io(context: impl Into<String>, source: std::io::Error) -> Self {
        SandboxError::Io {
            context: context.into(),
            source,
        }
    }
}
