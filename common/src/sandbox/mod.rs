//! The rootless sandbox: runs a command inside a root directory (an unpacked
//! image) with no daemon and no root privileges, for the builder's apt, pip
//! and RUN layers, the local pipeline runner and test agents.
//!
//! # How
//!
//! Host programs do the privileged parts (no `unsafe` in kiln): util-linux
//! `unshare` creates the namespaces and maps ids through `newuidmap` /
//! `newgidmap` (`--map-root-user --map-auto`: uid 0 inside = the invoking
//! user, 1.. = its `/etc/subuid` range; the same path when kiln runs as
//! root), a short `/bin/sh` script makes the mounts, and `unshare --root`
//! chroots, changes directory and drops to the spec's uid:gid (the exact
//! chain is drawn at the top of `sandbox/script.rs`). Each run gets new mount, pid, uts
//! and ipc namespaces; the network is the host's.
//!
//! Inside: `/proc` of the new pid namespace; a tmpfs `/dev` with `null`,
//! `zero`, `full`, `random`, `urandom`, `tty` bound from the host, `/dev/shm`
//! and (where allowed) `/dev/pts`; the host's `/etc/resolv.conf` and
//! `/etc/hosts` and CA bundle read-only; the spec's bind mounts. `/sys` is not
//! mounted.
//!
//! # Traces in the root
//!
//! Mount points that did not exist in the root (`/proc`, `/dev`,
//! `/etc/resolv.conf`, `/run/secrets/NAME`, ...) are created for the run and
//! **removed again when it ends** (their parent directory's mtime restored),
//! so a snapshot of the root sees only what the command did. In addition the
//! snapshot's default excludes skip `/proc`, `/dev`, `/sys`, `/run/secrets`,
//! `/etc/resolv.conf` and `/etc/hosts` (see
//! [`snapshot::Excludes`](crate::snapshot::Excludes)). The working directory
//! is created when missing and kept, like Docker's `WORKDIR`.
//!
//! # Security
//!
//! The boundary is the user namespace: root inside has no privilege over
//! anything its mapping does not cover. `chroot` alone is escapable by root
//! inside, so a hostile command run as uid 0 can reach what the *invoking
//! user* can (when kiln runs as root, that is real root: run kiln
//! unprivileged for untrusted builds).

mod error;
mod idmap;
mod preflight;
mod prepare;
mod process;
mod reexec;
mod script;
mod spec;

use std::process::Command;

pub use error::{Error, Result};
pub use idmap::{IdMap, IdRange, OVERFLOW_ID};
pub use preflight::{FORCE_NO_USERNS_ENV, UsernsMode, preflight};
pub use process::{Killer, Running};
pub use reexec::reexec_in_user_namespace;
pub use spec::{
    BindMount, CaBundleMode, DEFAULT_CA_BUNDLE, Output, OutputLine, Overlay, PROXY_ENV, RunSpec,
    SandboxConfig, Stream, User, ca_bundle_env,
};

use preflight::{HOST_PATH, find_tool};

/// A checked sandbox: the preflight passed and the id mapping is known.
/// Cheap to share; every [`spawn`](Sandbox::spawn) is independent.
#[derive(Debug, Clone)]
pub struct Sandbox {
    config: SandboxConfig,
    mode: UsernsMode,
    id_map: IdMap,
    setpriv: std::path::PathBuf,
    unshare: std::path::PathBuf,
}

impl Sandbox {
    /// Runs the preflight checks and, when a user namespace is to be
    /// created per run, probes it once to learn the exact id mapping.
    pub fn new(config: SandboxConfig) -> Result<Sandbox> {
        let mode = preflight()?;
        let tool = |tool, package| find_tool(tool).ok_or(Error::MissingTool { tool, package });
        let setpriv = tool("setpriv", "util-linux")?;
        let unshare = tool("unshare", "util-linux")?;
        let id_map = match mode {
            UsernsMode::Inherit => IdMap::identity(),
            _ => probe_id_map(&unshare)?,
        };
        Ok(Sandbox {
            config,
            mode,
            id_map,
            setpriv,
            unshare,
        })
    }

    /// How this sandbox gets its user namespace.
    pub fn mode(&self) -> UsernsMode {
        self.mode
    }

    /// Sandbox ids ↔ ids on disk as this process sees them: the unpacker
    /// chowns through it and the snapshot maps back through it, so a root
    /// prepared for this sandbox has the owners the command expects.
    pub fn id_map(&self) -> &IdMap {
        &self.id_map
    }

    /// The configuration.
    pub fn config(&self) -> &SandboxConfig {
        &self.config
    }

    /// Starts `spec`. The returned handle kills the run when dropped.
    pub fn spawn(&self, spec: &RunSpec, output: Output) -> Result<Running> {
        let rundir = tempfile::Builder::new()
            .prefix("kiln-sandbox-")
            .tempdir()
            .map_err(|e| Error::io("creating the sandbox's run directory", e))?;
        let (plan, cleanup) = prepare::prepare(&self.config, self.mode, spec, rundir.path())?;
        let argv = plan.command(&self.setpriv, &self.unshare);
        let mut cmd = Command::new(&argv[0]);
        // A process group of its own: a terminal's Ctrl-C reaches kiln,
        // which decides what to stop (the kernel still kills the run if
        // kiln dies: parent-death signal).
        std::os::unix::process::CommandExt::process_group(&mut cmd, 0);
        cmd.args(&argv[1..])
            .env_clear()
            .env("PATH", HOST_PATH)
            .current_dir("/");
        // The set-up runs as root of the new namespace, which is the invoking
        // user: it must be able to write its log into the run directory.
        Running::start(cmd, output, cleanup, rundir)
    }

    /// Runs `spec` to the end and returns its exit code.
    pub fn run(&self, spec: &RunSpec, output: Output) -> Result<i32> {
        self.spawn(spec, output)?.wait()
    }
}

/// Creates a throw-away user namespace the way every run will, and reads its
/// uid/gid maps.
fn probe_id_map(unshare: &std::path::Path) -> Result<IdMap> {
    let out = Command::new(unshare)
        .args([
            "--user",
            "--map-root-user",
            "--map-auto",
            "--",
            "/bin/sh",
            "-c",
            "cat /proc/self/uid_map; echo --; cat /proc/self/gid_map",
        ])
        .env_clear()
        .env("PATH", HOST_PATH)
        .output()
        .map_err(|e| Error::io("running unshare to probe the user namespace", e))?;
    let text = String::from_utf8_lossy(&out.stdout);
    let parsed = text
        .split_once("--")
        .and_then(|(u, g)| Some((IdMap::parse_ranges(u)?, IdMap::parse_ranges(g)?)));
    match parsed {
        Some((u, g)) if out.status.success() && !u.is_empty() && !g.is_empty() => {
            Ok(IdMap::new(u, g))
        }
        _ => Err(Error::UserNamespaceSetup {
            detail: format!(
                "`unshare --user --map-root-user --map-auto` failed ({}): {}",
                out.status,
                String::from_utf8_lossy(&out.stderr).trim()
            ),
        }),
    }
}
