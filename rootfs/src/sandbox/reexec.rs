//! Rootless mode: an unprivileged kiln re-executes itself as root of a user
//! namespace (its subordinate ids mapped) before doing anything, like
//! `buildah unshare`, so unpacking, sandboxing and snapshotting all see the
//! same ids and may chown to them.

use std::ffi::OsString;
use std::os::unix::process::CommandExt;
use std::process::Command;

use super::error::{Result, SandboxError};
use super::preflight::{HostFacts, check, find_tool};

/// Set in the re-executed process, so a failed mapping cannot loop.
const REEXEC_ENV: &str = "KILN_IN_USERNS";

/// Makes the rest of this program run as root of a user namespace when it was
/// started by an unprivileged user: re-executes the current binary, with the
/// same arguments and environment, under `unshare --map-root-user
/// --map-auto` (uid 0 inside = the invoking user, uids 1.. = the user's
/// subordinate ids). Returns `Ok(())` without doing anything when already
/// root (real root, or root inside a user namespace). Does not return on
/// success. Call it first in `main`, before any thread is started.
///
/// Files this process then creates as uid 0 belong to the invoking user on
/// the host; those it chowns to uid N (N ≥ 1) belong to subordinate id
/// `base + N - 1`.
pub fn reexec_in_user_namespace() -> Result<()> {
    let euid = rustix::process::geteuid().as_raw();
    if euid == 0 {
        return Ok(());
    }
    if std::env::var_os(REEXEC_ENV).is_some() {
        return Err(SandboxError::UserNamespaceSetup {
            detail: format!(
                "re-executed inside a user namespace but still running as uid {euid} (is {REEXEC_ENV} set in the environment?)"
            ),
        });
    }
    check(&HostFacts::gather())?;
    let unshare = find_tool("unshare").ok_or(SandboxError::MissingTool {
        tool: "unshare",
        package: "util-linux",
    })?;
    let exe = std::env::current_exe()
        .map_err(|e| SandboxError::io("finding the current executable", e))?;
    let args: Vec<OsString> = std::env::args_os().skip(1).collect();
    let err = Command::new(unshare)
        .args(["--user", "--map-root-user", "--map-auto", "--"])
        .arg(&exe)
        .args(args)
        .env(REEXEC_ENV, "1")
        .exec();
    Err(SandboxError::Reexec { exe, source: err })
}
