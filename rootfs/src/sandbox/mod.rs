//! The rootless sandbox: runs a command inside a root directory (an unpacked
//! image) with no daemon and no root privileges, for the builder's apt, pip
//! and RUN layers, the local pipeline runner and test agents.
//!
//! # How
//!
//! Host programs create the namespaces (no `unsafe` in kiln): util-linux
//! `unshare` makes user, mount, pid, uts and ipc namespaces (and a network
//! one for [`Network::None`]) and maps ids through `newuidmap` /
//! `newgidmap`; its forked child, pid 1 of the new pid namespace, is kiln's
//! own init (`sandbox/init.rs`), which makes the mounts, `pivot_root`s into
//! the image root, detaches the host's tree, and starts the command (the
//! exact chain is drawn at the top of `sandbox/chain.rs`).
//!
//! Inside: `/proc` of the new pid namespace; a tmpfs `/dev` with `null`,
//! `zero`, `full`, `random`, `urandom`, `tty` bound from the host, `/dev/shm`
//! and (where allowed) `/dev/pts`; the host's `/etc/resolv.conf` and
//! `/etc/hosts` and CA bundle read-only; the spec's bind mounts; build
//! secrets in a tmpfs at `/run/secrets`. `/sys` is not mounted.
//!
//! # Traces in the root
//!
//! Mount points that did not exist in the root (`/proc`, `/dev`,
//! `/etc/resolv.conf`, `/run/secrets`, ...) are created for the run and
//! **removed again when it ends** (their parent directory's mtime restored),
//! so a snapshot of the root sees only what the command did. In addition the
//! snapshot's default excludes skip `/proc`, `/dev`, `/sys`, `/run/secrets`,
//! `/etc/resolv.conf` and `/etc/hosts` (see
//! [`snapshot::Excludes`](crate::snapshot::Excludes)). The working directory
//! is created when missing and kept, like Docker's `WORKDIR`.
//!
//! # What the sandbox promises
//!
//! - **No handle on the host's files.** Every process of a run, pid 1
//!   included, lives in the image root after `pivot_root`; the host's tree
//!   is detached, so `/proc/*/root`, `/proc/*/cwd`, `..` and inherited
//!   descriptors lead nowhere outside (pid 1 is not dumpable, and
//!   `CAP_SYS_PTRACE` is gone, so its `/proc` entries are closed too). The
//!   init marks every descriptor it inherited close-on-exec, and there is
//!   no `/dev/tty`: the run stays in kiln's process group (a graceful stop
//!   signals the group), and kiln's terminal must not be reachable from it
//!   (no `TIOCSTI` into the caller's shell).
//! - **Root inside is not root outside.** Rootless kiln maps root inside to
//!   the invoking user and uids 1.. to its subordinate range. kiln running as
//!   root maps the sandbox's root to the first id of *root's* subordinate
//!   range (`/etc/subuid`, as for any user), so a process that got out would
//!   be an unprivileged nobody. [`SandboxConfig::host_root`]
//!   ([`HOST_ROOT_ENV`]`=1`) restores host root for images that truly need
//!   it.
//! - **Least privilege.** `no_new_privs` (setuid binaries and file
//!   capabilities grant nothing), the capability bounding set of rootless
//!   Podman and Buildah (`CHOWN DAC_OVERRIDE FOWNER FSETID KILL
//!   NET_BIND_SERVICE SETFCAP SETGID SETPCAP SETUID SYS_CHROOT`: no
//!   `SYS_ADMIN`, `SYS_PTRACE`, `NET_ADMIN`, `MKNOD`), and a process limit
//!   ([`SandboxConfig::pids_limit`], `RLIMIT_NPROC`, 2048 by default; cgroups
//!   are not used, as a rootless process cannot create them).
//!
//! What it does **not** promise: the network is the host's unless a run
//! asks for [`Network::None`] (RUN steps reach what kiln reaches, the
//! Kaniko and Buildah default); there is no seccomp filter (the kernel's
//! whole syscall surface is reachable, as with `--security-opt
//! seccomp=unconfined`), and no memory or CPU limit; the host's resolver
//! files and CA bundle are visible, read-only.

mod chain;
mod error;
mod idmap;
mod init;
mod preflight;
mod prepare;
mod process;
mod reexec;
mod spec;

use std::process::Command;

pub use error::{Result, SandboxError};
pub use idmap::{IdMap, IdRange, OVERFLOW_ID};
pub use init::{INIT_ARG, INIT_ENV, run_init_if_requested};
pub use preflight::{FORCE_NO_USERNS_ENV, UsernsMode, preflight};
pub use process::{Killer, Running};
pub use reexec::reexec_in_user_namespace;
pub use spec::{
    BindMount, CaBundleMode, DEFAULT_CA_BUNDLE, DEFAULT_PIDS_LIMIT, HOST_ROOT_ENV, Network,
    OutputLine, OutputRoute, Overlay, PROXY_ENV, RunSpec, SECRETS_DIR, SandboxConfig, Secret,
    Stream, User, ca_bundle_env,
};

use chain::{Chain, UsernsArgs};
use preflight::{HOST_PATH, find_tool};

/// A checked sandbox: the preflight passed and the id mapping is known.
/// Cheap to share; every [`spawn`](Sandbox::spawn) is independent.
#[derive(Debug, Clone)]
pub struct Sandbox {
    config: SandboxConfig,
    userns: UsernsArgs,
    id_map: IdMap,
    init: std::path::PathBuf,
    setpriv: std::path::PathBuf,
    unshare: std::path::PathBuf,
}

impl Sandbox {
    /// Runs the preflight checks and, when a user namespace is to be
    /// created per run, probes it once to learn the exact id mapping.
    pub fn new(config: SandboxConfig) -> Result<Sandbox> {
        let mode = preflight()?;
        let tool =
            |tool, package| find_tool(tool).ok_or(SandboxError::MissingTool { tool, package });
        let setpriv = tool("setpriv", "util-linux")?;
        let unshare = tool("unshare", "util-linux")?;
        let init = init::init_program().ok_or_else(|| SandboxError::NoInit {
            exe: std::env::current_exe().unwrap_or_default(),
            env: INIT_ENV,
        })?;
        let userns = match mode {
            UsernsMode::Inherit => UsernsArgs::Inherit,
            _ if rustix::process::geteuid().is_root() && !config.host_root => root_range()?,
            _ => UsernsArgs::RootIsCaller,
        };
        let id_map = match userns {
            UsernsArgs::Inherit => IdMap::identity(),
            _ => probe_id_map(&unshare, &userns)?,
        };
        Ok(Sandbox {
            config,
            userns,
            id_map,
            init,
            setpriv,
            unshare,
        })
    }

    /// How this sandbox gets its user namespace.
    pub fn mode(&self) -> UsernsMode {
        self.userns.mode()
    }

    /// Host uid and gid of root inside the sandbox, as this process sees
    /// them: the owner a directory needs for a run's root to write into it
    /// (a read-write bind mount such as a run directory).
    pub fn root_owner(&self) -> (u32, u32) {
        (
            self.id_map.to_outer_uid(0).unwrap_or(OVERFLOW_ID),
            self.id_map.to_outer_gid(0).unwrap_or(OVERFLOW_ID),
        )
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
    pub fn spawn(&self, spec: &RunSpec, output: OutputRoute) -> Result<Running> {
        let rundir = tempfile::Builder::new()
            .prefix("kiln-sandbox-")
            .tempdir()
            .map_err(|e| SandboxError::io("creating the sandbox's run directory", e))?;
        let (plan, cleanup) =
            prepare::prepare(&self.config, spec, rundir.path(), self.root_owner())?;
        let chain = Chain {
            userns: self.userns.clone(),
            network: spec.network,
            init: self.init.clone(),
            plan,
        };
        let argv = chain.command(&self.setpriv, &self.unshare);
        let plan = serde_json::to_vec(&chain.plan)
            .map_err(|e| SandboxError::io("encoding the run's plan", std::io::Error::other(e)))?;
        let mut cmd = Command::new(&argv[0]);
        // A process group of its own: a terminal's Ctrl-C reaches kiln,
        // which decides what to stop (the kernel still kills the run if
        // kiln dies: parent-death signal).
        std::os::unix::process::CommandExt::process_group(&mut cmd, 0);
        cmd.args(&argv[1..])
            .env_clear()
            .env("PATH", HOST_PATH)
            .current_dir("/");
        // The init starts with this process's own host ids (it drops to the
        // sandbox's root only after the switch): it writes its log into the
        // private run directory.
        Running::start(cmd, plan, output, cleanup, rundir)
    }

    /// Runs `spec` to the end and returns its exit code.
    pub fn run(&self, spec: &RunSpec, output: OutputRoute) -> Result<i32> {
        self.spawn(spec, output)?.wait()
    }
}

/// Root's own subordinate ranges (`/etc/subuid`, `/etc/subgid`), onto which
/// a root kiln maps its sandboxes.
fn root_range() -> Result<UsernsArgs> {
    let range = |kind: &'static str, file: &str| {
        let text = std::fs::read_to_string(file).unwrap_or_default();
        preflight::subordinate_range(&text, "root", 0).ok_or_else(|| {
            SandboxError::NoSubordinateIds {
                kind,
                user: "root".into(),
                uid: 0,
                file: file.into(),
                suggested_line: "root:100000:65536".into(),
                suggested_range: "100000-165535".into(),
            }
        })
    };
    Ok(UsernsArgs::Range {
        uid: range("uid", "/etc/subuid")?,
        gid: range("gid", "/etc/subgid")?,
    })
}

/// Creates a throw-away user namespace the way every run will, and reads its
/// uid/gid maps.
fn probe_id_map(unshare: &std::path::Path, userns: &UsernsArgs) -> Result<IdMap> {
    let out = Command::new(unshare)
        .args(userns.args())
        .args([
            "--",
            "/bin/sh",
            "-c",
            "cat /proc/self/uid_map; echo --; cat /proc/self/gid_map",
        ])
        .env_clear()
        .env("PATH", HOST_PATH)
        .output()
        .map_err(|e| SandboxError::io("running unshare to probe the user namespace", e))?;
    let text = String::from_utf8_lossy(&out.stdout);
    let parsed = text
        .split_once("--")
        .and_then(|(u, g)| Some((IdMap::parse_ranges(u)?, IdMap::parse_ranges(g)?)));
    match parsed {
        Some((u, g)) if out.status.success() && !u.is_empty() && !g.is_empty() => {
            Ok(IdMap::new(u, g))
        }
        _ => Err(SandboxError::UserNamespaceSetup {
            detail: format!(
                "`unshare {}` failed ({}): {}",
                userns.args().join(" "),
                out.status,
                String::from_utf8_lossy(&out.stderr).trim()
            ),
        }),
    }
}
