//! The sandbox's init: pid 1 of every run's pid namespace, and the only
//! process that ever sees both the host's tree and the image root.
//!
//! It is kiln's own code (a binary re-executed with [`INIT_ARG`]), so that
//! nothing of the host is needed once the root is switched: it reads the
//! [`InitPlan`] from its stdin, makes the mounts, `pivot_root`s into the
//! image root and detaches the old one — from then on no process of the run,
//! this one included, has a path, a working directory or a descriptor on the
//! host's tree — then becomes root of the run's user namespace (an
//! unprivileged host id unless the caller opted out), writes build secrets
//! into a tmpfs, locks itself down (`no_new_privs`, a capability bounding set
//! like rootless Podman/Buildah's, a process limit) and starts the command,
//! reaping every orphan until it ends. Its exit code is the command's
//! (128+N for signal N), and its exit ends every other process of the run.
//!
//! Why not util-linux alone: `unshare --root` only `chroot`s the last
//! process of the chain, so pid 1 (a host shell) kept the host's `/` and any
//! process could walk out through `/proc/1/root`.

use std::io::{Read, Write};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};

use rustix::fd::OwnedFd;
use rustix::fs::{Mode, OFlags};
use rustix::mount::{MountAttrFlags, MountFlags, MoveMountFlags, OpenTreeFlags, UnmountFlags};
use rustix::thread::CapabilitySet;
use serde::{Deserialize, Serialize};

use super::preflight::find_tool;
use super::spec::{Network, SECRETS_DIR, Secret};

/// Devices bind-mounted from the host into the sandbox's `/dev` tmpfs.
///
/// Not `tty`: the run shares kiln's session (signals to kiln's process
/// group reach it, as a node's graceful stop needs), so `/dev/tty` would
/// be kiln's terminal, and `TIOCSTI` could type into the caller's shell.
pub(crate) const DEVICES: &[&str] = &["null", "zero", "full", "random", "urandom"];

/// The first argument that makes a kiln binary act as the sandbox's init.
pub const INIT_ARG: &str = "__kiln-sandbox-init";

/// Environment variable naming the init program explicitly (a kiln binary
/// or `kiln-sandbox-init`).
pub const INIT_ENV: &str = "KILN_SANDBOX_INIT";

/// Set once this process's `main` has called [`run_init_if_requested`]: its
/// own executable can then serve as the init.
static HOSTS_INIT: AtomicBool = AtomicBool::new(false);

/// The capabilities a command keeps: rootless Podman's and Buildah's
/// default set (containers.conf `default_capabilities`). Everything else —
/// `SYS_ADMIN` (mounts), `SYS_PTRACE`, `NET_ADMIN`, `MKNOD`, `SYS_MODULE`, … —
/// leaves the bounding set, so not even a setuid binary gets it back.
const KEPT_CAPABILITIES: CapabilitySet = CapabilitySet::CHOWN
    .union(CapabilitySet::DAC_OVERRIDE)
    .union(CapabilitySet::FOWNER)
    .union(CapabilitySet::FSETID)
    .union(CapabilitySet::KILL)
    .union(CapabilitySet::NET_BIND_SERVICE)
    .union(CapabilitySet::SETFCAP)
    .union(CapabilitySet::SETGID)
    .union(CapabilitySet::SETPCAP)
    .union(CapabilitySet::SETUID)
    .union(CapabilitySet::SYS_CHROOT);

/// Call first in `main` of every binary that runs the sandbox: when the
/// process was started as the sandbox's init it runs as such and exits;
/// otherwise it records that this executable can serve as the init and
/// returns at once.
pub fn run_init_if_requested() {
    if std::env::args_os().nth(1).is_some_and(|a| a == INIT_ARG) {
        std::process::exit(init_main());
    }
    HOSTS_INIT.store(true, Ordering::Relaxed);
}

/// The program to start as the init: [`INIT_ENV`], else this executable when
/// its `main` hosts the init, else `kiln-sandbox-init` (or `kiln`) beside
/// this executable or one directory up (where Cargo puts binaries relative
/// to test executables).
pub(crate) fn init_program() -> Option<PathBuf> {
    if let Some(p) = std::env::var_os(INIT_ENV) {
        return Some(PathBuf::from(p));
    }
    let exe = std::env::current_exe().ok()?;
    if HOSTS_INIT.load(Ordering::Relaxed) {
        return Some(exe);
    }
    let dir = exe.parent()?;
    [Some(dir), dir.parent()]
        .into_iter()
        .flatten()
        .flat_map(|d| ["kiln-sandbox-init", "kiln"].map(|n| d.join(n)))
        .find(|p| p.is_file())
}

/// Everything the init does, as plain data (JSON on its stdin).
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
pub(crate) struct InitPlan {
    /// Host path of the root (becomes `/`).
    #[serde(with = "path_bytes")]
    pub root: PathBuf,
    /// Lower root is overlaid: (upper, work).
    pub overlay: Option<(PathBufBytes, PathBufBytes)>,
    /// Where the init writes why it failed before the command started.
    #[serde(with = "path_bytes")]
    pub log: PathBuf,
    /// Written (non-empty) once the root is switched and the command starts.
    #[serde(with = "path_bytes")]
    pub ok: PathBuf,
    /// Bind mounts: (host source, target inside the root, read-only).
    pub binds: Vec<(PathBufBytes, PathBufBytes, bool)>,
    /// Build secrets, written into a tmpfs at /run/secrets.
    pub secrets: Vec<Secret>,
    pub hostname: String,
    pub network: Network,
    /// Highest number of processes the run's uid may have (`RLIMIT_NPROC`).
    pub pids_limit: Option<u64>,
    pub env: Vec<(String, String)>,
    pub workdir: String,
    pub uid: u32,
    pub gid: u32,
    pub argv: Vec<String>,
}

/// A path that survives JSON whatever its bytes.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
pub(crate) struct PathBufBytes(#[serde(with = "path_bytes")] pub PathBuf);

mod path_bytes {
    use std::os::unix::ffi::{OsStrExt, OsStringExt};
    use std::path::PathBuf;

    pub(super) fn serialize<S: serde::Serializer>(
        p: &std::path::Path,
        s: S,
    ) -> Result<S::Ok, S::Error> {
        s.collect_seq(p.as_os_str().as_bytes())
    }

    pub(super) fn deserialize<'de, D: serde::Deserializer<'de>>(d: D) -> Result<PathBuf, D::Error> {
        let bytes: Vec<u8> = serde::Deserialize::deserialize(d)?;
        Ok(PathBuf::from(std::ffi::OsString::from_vec(bytes)))
    }
}

/// Exit code of a run whose set-up failed (as `unshare` and runc use).
const SETUP_FAILED: i32 = 125;

fn init_main() -> i32 {
    close_on_exec_inherited();
    let mut text = Vec::new();
    if let Err(e) = std::io::stdin().read_to_end(&mut text) {
        eprintln!("kiln-sandbox: reading the run's plan: {e}");
        return SETUP_FAILED;
    }
    let plan: InitPlan = match serde_json::from_slice(&text) {
        Ok(p) => p,
        Err(e) => {
            eprintln!("kiln-sandbox: the run's plan is not valid: {e}");
            return SETUP_FAILED;
        }
    };
    let mut log = std::fs::OpenOptions::new()
        .append(true)
        .create(true)
        .open(&plan.log)
        .ok();
    let ok = std::fs::File::create(&plan.ok);
    let fail = |log: &mut Option<std::fs::File>, msg: String| {
        match log {
            Some(f) => {
                let _ = writeln!(f, "kiln-sandbox: {msg}");
            }
            None => eprintln!("kiln-sandbox: {msg}"),
        }
        SETUP_FAILED
    };
    let mut ok = match ok {
        Ok(f) => f,
        Err(e) => return fail(&mut log, format!("creating {}: {e}", plan.ok.display())),
    };
    if let Err(e) = enter_root(&plan) {
        return fail(&mut log, e.to_string());
    }
    // The host tree is gone; only these two descriptors on plain files in
    // kiln's private run directory remain, and they close now.
    let _ = ok.write_all(b"ok\n");
    drop(ok);
    if let Err(e) = lock_down(&plan) {
        return fail(&mut log, e.to_string());
    }
    drop(log);
    run_command(&plan)
}

/// Marks every descriptor above stderr that the init inherited (from kiln,
/// a test harness, a CI runner) close-on-exec, so none reaches the command:
/// an inherited directory or socket would be a handle on the host.
fn close_on_exec_inherited() {
    let Ok(dir) = std::fs::read_dir("/proc/self/fd") else {
        return;
    };
    let fds: Vec<i32> = dir
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse().ok())
        .filter(|&n| n > 2)
        .collect();
    for n in fds {
        // SAFETY: the kernel listed `n` as open; this single-threaded
        // process closes nothing until the loop ends, and the borrow lives
        // for one fcntl(2) only. (The listing's own descriptor is closed
        // by now: the call then fails with EBADF, which is fine.)
        #[allow(unsafe_code)]
        let fd = unsafe { rustix::fd::BorrowedFd::borrow_raw(n) };
        let _ = rustix::io::fcntl_setfd(fd, rustix::io::FdFlags::CLOEXEC);
    }
}

/// Mounts, then switches to the root and detaches the host's tree.
///
/// Everything on the host side (the root, the overlay's directories, bind
/// sources, device nodes) is opened first with the caller's credentials:
/// running as host root, the directories above the root may be private to
/// host root (the cache is 0700), which the sandbox's own root — an
/// unprivileged host id — cannot search. Then the init becomes that root,
/// so every file system it mounts and every file it creates belongs to the
/// namespace, and it mounts from those handles. Targets inside the root are
/// mounted only once the root is `/`, so an image's symlink can never send
/// a mount out of it.
fn enter_root(p: &InitPlan) -> Result<(), InitError> {
    let root = &p.root;
    let HostHandles {
        root_fd,
        lower,
        root_tree,
        binds,
        devices,
    } = HostHandles::open(p)?;

    become_namespace_root()?;

    let root_mount = mount_root(root, &root_fd, lower.as_ref(), root_tree)?;
    let _proc = mount_proc(&root_mount, root)?;
    // sethostname(2) needs CAP_SYS_ADMIN over the new uts namespace only.
    rustix::system::sethostname(p.hostname.as_bytes())
        .map_err(|e| InitError::call("setting the host name", e))?;
    if p.network == Network::None {
        loopback_up()?;
    }
    detach_host(root)?;
    drop((root_fd, lower));

    // From here every path is inside the root.
    populate_dev(devices)?;
    mount_binds(binds)?;
    if !p.secrets.is_empty() {
        rustix::mount::mount(
            "kiln-secrets",
            SECRETS_DIR,
            "tmpfs",
            MountFlags::NOSUID | MountFlags::NODEV | MountFlags::NOEXEC,
            Some(c"mode=755,size=16m"),
        )
        .map_err(|e| InitError::call(format!("mounting a tmpfs on {SECRETS_DIR}"), e))?;
    }
    // Not dumpable: no process of the run may open /proc/1/{exe,fd,mem,...}
    // (that needs CAP_SYS_PTRACE, which leaves the bounding set below).
    rustix::process::set_dumpable_behavior(rustix::process::DumpableBehavior::NotDumpable)
        .map_err(|e| InitError::call("prctl(PR_SET_DUMPABLE)", e))?;
    Ok(())
}

/// Why the init could not set the run up. Its text, after `kiln-sandbox: `,
/// is what the run's log says.
#[derive(Debug, thiserror::Error)]
pub(crate) enum InitError {
    /// A system call on a path (on the host's side or inside the root) failed.
    #[error("{what} {}: {source}", path.display())]
    At {
        /// What the call was for (`opening`, `mounting the root`, ...).
        what: &'static str,
        /// The path it was on.
        path: PathBuf,
        /// The kernel's answer.
        source: rustix::io::Errno,
    },
    /// A system call failed; `what` says which, or what it was for.
    #[error("{what}: {source}")]
    Call {
        /// The call, or what it was for.
        what: String,
        /// The kernel's answer.
        source: rustix::io::Errno,
    },
    /// Creating, writing or linking a file, or starting `ip`, failed.
    #[error("{what}: {source}")]
    Io {
        /// What was being done.
        what: String,
        /// Why it failed.
        source: std::io::Error,
    },
    /// `ip link set lo up` ran and failed.
    #[error("ip link set lo up failed ({status})")]
    Loopback {
        /// How `ip` exited.
        status: std::process::ExitStatus,
    },
}

impl InitError {
    /// A failed system call; `what` says which.
    fn call(what: impl Into<String>, source: rustix::io::Errno) -> Self {
        Self::Call {
            what: what.into(),
            source,
        }
    }

    /// A failed file operation; `what` says which.
    fn io(what: impl Into<String>, source: std::io::Error) -> Self {
        Self::Io {
            what: what.into(),
            source,
        }
    }
}

/// The init's error for a failed call on a path.
fn at(what: &'static str, path: &Path, e: rustix::io::Errno) -> InitError {
    InitError::At {
        what,
        path: path.to_path_buf(),
        source: e,
    }
}

/// A handle on a host directory that lets the init name it after it has
/// given up the credentials that could search its way there.
fn dir_fd(path: &Path) -> Result<OwnedFd, InitError> {
    rustix::fs::open(
        path,
        OFlags::PATH | OFlags::DIRECTORY | OFlags::CLOEXEC,
        Mode::empty(),
    )
    .map_err(|e| at("opening", path, e))
}

/// A detached copy of the mount at a host path, to be attached inside the
/// root once the root is `/`.
fn clone_tree(path: &Path, recursive: bool) -> Result<OwnedFd, InitError> {
    let mut flags = OpenTreeFlags::OPEN_TREE_CLONE | OpenTreeFlags::OPEN_TREE_CLOEXEC;
    if recursive {
        flags |= OpenTreeFlags::AT_RECURSIVE;
    }
    rustix::mount::open_tree(rustix::fs::CWD, path, flags)
        .map_err(|e| at("taking a mount of", path, e))
}

/// Every handle on the host's side that [`enter_root`] needs, taken while
/// the init still has the caller's credentials.
struct HostHandles<'p> {
    /// The root directory (the overlay's lower directory, or the bind's
    /// mount point).
    root_fd: OwnedFd,
    /// The overlay's upper and work directories.
    lower: Option<(OwnedFd, OwnedFd)>,
    /// Without an overlay: the root's own tree, bound onto itself.
    root_tree: Option<OwnedFd>,
    /// Bind sources' trees with their targets inside the root and whether
    /// they are read-only.
    binds: Vec<(OwnedFd, &'p PathBuf, bool)>,
    /// The host's device nodes named in [`DEVICES`].
    devices: Vec<(&'static str, OwnedFd)>,
}

impl<'p> HostHandles<'p> {
    /// Opens, in this order, the root, the overlay's directories, the root's
    /// tree, the bind sources and the devices; the first failure ends it.
    fn open(p: &'p InitPlan) -> Result<Self, InitError> {
        let root = &p.root;
        let root_fd = dir_fd(root)?;
        let lower = match &p.overlay {
            Some((upper, work)) => Some((dir_fd(&upper.0)?, dir_fd(&work.0)?)),
            None => None,
        };
        let root_tree = match lower {
            Some(_) => None,
            None => Some(clone_tree(root, true)?),
        };
        let mut binds = Vec::with_capacity(p.binds.len());
        for (source, target, read_only) in &p.binds {
            binds.push((clone_tree(&source.0, true)?, &target.0, *read_only));
        }
        let mut devices = Vec::with_capacity(DEVICES.len());
        for d in DEVICES {
            devices.push((*d, clone_tree(&Path::new("/dev").join(d), false)?));
        }
        Ok(HostHandles {
            root_fd,
            lower,
            root_tree,
            binds,
            devices,
        })
    }
}

/// Mounts the root onto its own directory and enters it: the overlay (its
/// directories named through this process's descriptors) or a recursive
/// bind of the root onto itself, since pivot_root wants a mount point.
fn mount_root(
    root: &Path,
    root_fd: &OwnedFd,
    lower: Option<&(OwnedFd, OwnedFd)>,
    root_tree: Option<OwnedFd>,
) -> Result<OwnedFd, InitError> {
    let root_mount = match (lower, root_tree) {
        (Some((upper, work)), _) => overlay_mount(root, root_fd, upper, work)?,
        (None, Some(tree)) => tree,
        (None, None) => unreachable!("a root without an overlay has its tree"),
    };
    rustix::mount::move_mount(
        &root_mount,
        "",
        root_fd,
        "",
        MoveMountFlags::MOVE_MOUNT_F_EMPTY_PATH | MoveMountFlags::MOVE_MOUNT_T_EMPTY_PATH,
    )
    .map_err(|e| at("mounting the root", root, e))?;
    rustix::process::fchdir(&root_mount).map_err(|e| at("entering", root, e))?;
    Ok(root_mount)
}

/// A detached overlay of `upper` over the root, each option saying which
/// step failed.
fn overlay_mount(
    root: &Path,
    root_fd: &OwnedFd,
    upper: &OwnedFd,
    work: &OwnedFd,
) -> Result<OwnedFd, InitError> {
    let fd = |f: &OwnedFd| {
        use rustix::fd::AsRawFd;
        format!("/proc/self/fd/{}", f.as_raw_fd())
    };
    let fs = rustix::mount::fsopen("overlay", rustix::mount::FsOpenFlags::FSOPEN_CLOEXEC)
        .map_err(|e| InitError::call("opening the overlay file system", e))?;
    for (key, value) in [
        ("lowerdir", fd(root_fd)),
        ("upperdir", fd(upper)),
        ("workdir", fd(work)),
    ] {
        rustix::mount::fsconfig_set_string(&fs, key, value.as_str())
            .map_err(|e| InitError::call(format!("overlay option {key}"), e))?;
    }
    rustix::mount::fsconfig_create(&fs).map_err(|e| at("mounting the overlay on", root, e))?;
    rustix::mount::fsmount(
        &fs,
        rustix::mount::FsMountFlags::FSMOUNT_CLOEXEC,
        MountAttrFlags::empty(),
    )
    .map_err(|e| at("mounting the overlay on", root, e))
}

/// /proc before the host's tree goes: the kernel lets a namespace mount
/// proc only while a full one is visible. Its mount point is resolved
/// inside the root, never through a symlink out of it. Returns the proc
/// mount and its mount point's handle, which [`enter_root`] holds to its
/// end.
fn mount_proc(root_mount: &OwnedFd, root: &Path) -> Result<(OwnedFd, OwnedFd), InitError> {
    let proc_at = rustix::fs::openat2(
        root_mount,
        "proc",
        OFlags::PATH | OFlags::DIRECTORY | OFlags::CLOEXEC,
        Mode::empty(),
        rustix::fs::ResolveFlags::IN_ROOT | rustix::fs::ResolveFlags::NO_MAGICLINKS,
    )
    .map_err(|e| at("opening /proc in", root, e))?;
    let proc = fs_mount(
        "proc",
        &[],
        MountAttrFlags::MOUNT_ATTR_NOSUID
            | MountAttrFlags::MOUNT_ATTR_NODEV
            | MountAttrFlags::MOUNT_ATTR_NOEXEC,
    )
    .map_err(|e| InitError::call("mounting /proc", e))?;
    attach(&proc, &proc_at).map_err(|e| InitError::call("mounting /proc", e))?;
    Ok((proc, proc_at))
}

/// Switch roots: the old root is stacked on the new one and detached, so
/// nothing of the host remains reachable from this mount namespace.
fn detach_host(root: &Path) -> Result<(), InitError> {
    rustix::process::pivot_root(".", ".").map_err(|e| at("pivot_root into", root, e))?;
    rustix::mount::unmount(".", UnmountFlags::DETACH)
        .map_err(|e| InitError::call("detaching the host's root", e))?;
    rustix::process::chdir("/").map_err(|e| InitError::call("entering the new root", e))
}

/// Attaches the bind sources' trees at their targets, which are resolved
/// only now that the root is `/`.
fn mount_binds(binds: Vec<(OwnedFd, &PathBuf, bool)>) -> Result<(), InitError> {
    for (tree, target, read_only) in binds {
        rustix::mount::move_mount(
            &tree,
            "",
            rustix::fs::CWD,
            target,
            MoveMountFlags::MOVE_MOUNT_F_EMPTY_PATH,
        )
        .map_err(|e| at("bind-mounting onto", target, e))?;
        if read_only {
            remount_read_only(target).map_err(|e| at("making read-only", target, e))?;
        }
    }
    Ok(())
}

/// Becomes uid/gid 0 of the run's user namespace. Where the caller is that
/// already (a rootless run) this changes nothing; running as host root the
/// caller is not mapped, and the capabilities `unshare --keep-caps` kept
/// carry over, since the new ids are the namespace's root.
fn become_namespace_root() -> Result<(), InitError> {
    use rustix::process::{Gid, Uid};
    // Dropping supplementary groups is refused where setgroups(2) is denied
    // in the namespace; the groups then are the namespace's already.
    let _ = rustix::thread::set_thread_groups(&[]);
    rustix::thread::set_thread_res_gid(Gid::ROOT, Gid::ROOT, Gid::ROOT)
        .map_err(|e| InitError::call("setresgid(0)", e))?;
    rustix::thread::set_thread_res_uid(Uid::ROOT, Uid::ROOT, Uid::ROOT)
        .map_err(|e| InitError::call("setresuid(0)", e))?;
    // A change of credentials clears the parent-death signal `unshare
    // --kill-child` set: set it again, or the run would outlive kiln.
    rustix::process::set_parent_process_death_signal(Some(rustix::process::Signal::KILL))
        .map_err(|e| InitError::call("prctl(PR_SET_PDEATHSIG)", e))
}

/// A new file system, detached, ready to attach with [`attach`].
fn fs_mount(
    fstype: &str,
    options: &[(&str, &str)],
    attrs: rustix::mount::MountAttrFlags,
) -> rustix::io::Result<rustix::fd::OwnedFd> {
    let fs = rustix::mount::fsopen(fstype, rustix::mount::FsOpenFlags::FSOPEN_CLOEXEC)?;
    for (key, value) in options {
        rustix::mount::fsconfig_set_string(&fs, *key, *value)?;
    }
    rustix::mount::fsconfig_create(&fs)?;
    rustix::mount::fsmount(&fs, rustix::mount::FsMountFlags::FSMOUNT_CLOEXEC, attrs)
}

/// Attaches a detached mount onto the directory `at` is open on.
fn attach(mount: &rustix::fd::OwnedFd, at: &rustix::fd::OwnedFd) -> rustix::io::Result<()> {
    use rustix::mount::MoveMountFlags as F;
    rustix::mount::move_mount(
        mount,
        "",
        at,
        "",
        F::MOVE_MOUNT_F_EMPTY_PATH | F::MOVE_MOUNT_T_EMPTY_PATH,
    )
}

/// A fresh /dev: a tmpfs with the host's harmless devices bound in, /dev/shm,
/// a private /dev/pts where the kernel allows one, and the usual links.
fn populate_dev(devices: Vec<(&str, rustix::fd::OwnedFd)>) -> Result<(), InitError> {
    rustix::mount::mount(
        "kiln-dev",
        "/dev",
        "tmpfs",
        MountFlags::NOSUID | MountFlags::NOEXEC,
        Some(c"mode=755,size=65536k"),
    )
    .map_err(|e| InitError::call("mounting a tmpfs on /dev", e))?;
    for (d, tree) in devices {
        let target = Path::new("/dev").join(d);
        std::fs::File::create(&target)
            .map_err(|e| InitError::io(format!("creating {}", target.display()), e))?;
        rustix::mount::move_mount(
            &tree,
            "",
            rustix::fs::CWD,
            &target,
            rustix::mount::MoveMountFlags::MOVE_MOUNT_F_EMPTY_PATH,
        )
        .map_err(|e| InitError::call(format!("binding /dev/{d}"), e))?;
    }
    for d in ["shm", "pts"] {
        std::fs::create_dir(Path::new("/dev").join(d))
            .map_err(|e| InitError::io(format!("creating /dev/{d}"), e))?;
    }
    rustix::mount::mount(
        "shm",
        "/dev/shm",
        "tmpfs",
        MountFlags::NOSUID | MountFlags::NODEV,
        Some(c"mode=1777,size=65536k"),
    )
    .map_err(|e| InitError::call("mounting a tmpfs on /dev/shm", e))?;
    // /dev/pts is best effort: not every kernel lets a user namespace mount
    // a new devpts instance.
    if rustix::mount::mount(
        "devpts",
        "/dev/pts",
        "devpts",
        MountFlags::NOSUID | MountFlags::NOEXEC,
        Some(c"newinstance,ptmxmode=0666,mode=0620"),
    )
    .is_ok()
    {
        std::os::unix::fs::symlink("pts/ptmx", "/dev/ptmx")
            .map_err(|e| InitError::io("linking /dev/ptmx", e))?;
    }
    for (link, to) in [
        ("fd", "/proc/self/fd"),
        ("stdin", "/proc/self/fd/0"),
        ("stdout", "/proc/self/fd/1"),
        ("stderr", "/proc/self/fd/2"),
    ] {
        std::os::unix::fs::symlink(to, Path::new("/dev").join(link))
            .map_err(|e| InitError::io(format!("linking /dev/{link}"), e))?;
    }
    Ok(())
}

/// Brings up `lo` in a fresh network namespace (with `ip`, still reachable
/// before the root is switched); without it the run has no network at all.
fn loopback_up() -> Result<(), InitError> {
    let Some(ip) = find_tool("ip") else {
        return Ok(());
    };
    let status = Command::new(ip)
        .args(["link", "set", "lo", "up"])
        .env_clear()
        .stdin(Stdio::null())
        .status()
        .map_err(|e| InitError::io("running ip link set lo up", e))?;
    if status.success() {
        Ok(())
    } else {
        Err(InitError::Loopback { status })
    }
}

/// A read-only remount keeping the flags the kernel locked on the source
/// mount (nosuid, nodev, noexec, atime): a user namespace may not clear
/// them, and a remount that omits them fails with EPERM.
fn remount_read_only(target: &Path) -> rustix::io::Result<()> {
    use rustix::fs::StatVfsMountFlags as F;
    let have = rustix::fs::statvfs(target)?.f_flag;
    let mut flags = MountFlags::BIND | MountFlags::RDONLY;
    for (st, mf) in [
        (F::NOSUID, MountFlags::NOSUID),
        (F::NODEV, MountFlags::NODEV),
        (F::NOEXEC, MountFlags::NOEXEC),
        (F::NOATIME, MountFlags::NOATIME),
        (F::NODIRATIME, MountFlags::NODIRATIME),
        (F::RELATIME, MountFlags::RELATIME),
    ] {
        if have.contains(st) {
            flags |= mf;
        }
    }
    rustix::mount::mount_remount(target, flags, "")
}

/// Writes the secrets and locks the process down; the command inherits
/// all of it.
fn lock_down(p: &InitPlan) -> Result<(), InitError> {
    for (i, s) in p.secrets.iter().enumerate() {
        let target = Path::new(&s.target);
        let inside = target.starts_with(SECRETS_DIR);
        let file = if inside {
            target.to_path_buf()
        } else {
            Path::new(SECRETS_DIR).join(format!(".kiln-{i}"))
        };
        if let Some(dir) = file.parent() {
            std::fs::create_dir_all(dir)
                .map_err(|e| InitError::io(format!("creating {}", dir.display()), e))?;
        }
        std::fs::write(&file, &s.data)
            .map_err(|e| InitError::io(format!("writing secret {}", s.target), e))?;
        std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o400))
            .map_err(|e| InitError::io(format!("protecting secret {}", s.target), e))?;
        if !inside {
            rustix::mount::mount_bind(&file, target)
                .map_err(|e| InitError::call(format!("binding secret onto {}", s.target), e))?;
        }
    }
    if !p.secrets.is_empty() {
        // The whole tmpfs read-only: even root of the run (which has
        // CAP_DAC_OVERRIDE) cannot change a secret or leave a file there.
        rustix::mount::mount_remount(
            SECRETS_DIR,
            MountFlags::RDONLY | MountFlags::NOSUID | MountFlags::NODEV | MountFlags::NOEXEC,
            "",
        )
        .map_err(|e| InitError::call(format!("making {SECRETS_DIR} read-only"), e))?;
    }
    rustix::thread::set_no_new_privs(true).map_err(|e| InitError::call("no_new_privs", e))?;
    for bit in 0..64u32 {
        let cap = CapabilitySet::from_bits_retain(1u64 << bit);
        if KEPT_CAPABILITIES.contains(cap) {
            continue;
        }
        match rustix::thread::remove_capability_from_bounding_set(cap) {
            // EINVAL: a capability this kernel does not know.
            Ok(()) | Err(rustix::io::Errno::INVAL) => {}
            Err(e) => return Err(InitError::call(format!("dropping capability {bit}"), e)),
        }
    }
    let mut sets = rustix::thread::capabilities(None).map_err(|e| InitError::call("capget", e))?;
    sets.effective &= KEPT_CAPABILITIES;
    sets.permitted &= KEPT_CAPABILITIES;
    sets.inheritable = CapabilitySet::empty();
    rustix::thread::set_capabilities(None, sets).map_err(|e| InitError::call("capset", e))?;
    if let Some(n) = p.pids_limit {
        let limit = rustix::process::Rlimit {
            current: Some(n),
            maximum: Some(n),
        };
        rustix::process::setrlimit(rustix::process::Resource::Nproc, limit)
            .map_err(|e| InitError::call("setting the process limit", e))?;
    }
    Ok(())
}

/// Starts the command and reaps every process until it ends.
fn run_command(p: &InitPlan) -> i32 {
    let mut cmd = Command::new(&p.argv[0]);
    cmd.args(&p.argv[1..])
        .env_clear()
        .envs(p.env.iter().map(|(k, v)| (k, v)))
        .current_dir(&p.workdir)
        .stdin(Stdio::null())
        .arg0(&p.argv[0]);
    if p.uid != 0 || p.gid != 0 {
        cmd.uid(p.uid).gid(p.gid);
    }
    let child = match cmd.spawn() {
        Ok(c) => c,
        Err(e) => {
            eprintln!("kiln-sandbox: cannot run {}: {e}", p.argv[0]);
            return match e.kind() {
                std::io::ErrorKind::NotFound => 127,
                _ => 126,
            };
        }
    };
    let main = rustix::process::Pid::from_child(&child);
    loop {
        match rustix::process::wait(rustix::process::WaitOptions::empty()) {
            Ok(Some((pid, status))) if pid == main => {
                let raw = std::process::ExitStatus::from_raw(status.as_raw());
                return match (raw.code(), raw.signal()) {
                    (Some(c), _) => c,
                    (None, Some(sig)) => 128 + sig,
                    (None, None) => 255,
                };
            }
            Ok(_) => {}
            Err(rustix::io::Errno::INTR) => {}
            Err(e) => {
                eprintln!("kiln-sandbox: waiting for the command: {e}");
                return 255;
            }
        }
    }
}

/// Reads a plan back (for tests of the wire format).
#[cfg(test)]
fn round_trip(p: &InitPlan) -> InitPlan {
    let text = serde_json::to_vec(p).unwrap_or_default();
    serde_json::from_slice(&text).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::ffi::OsString;
    use std::os::unix::ffi::OsStringExt;

    #[test]
    fn a_plan_survives_the_pipe_whatever_its_paths_hold() {
        let odd = PathBuf::from(OsString::from_vec(b"/r\xffo'ot".to_vec()));
        let p = InitPlan {
            root: odd.clone(),
            overlay: Some((PathBufBytes("/u".into()), PathBufBytes("/w".into()))),
            binds: vec![(PathBufBytes(odd.clone()), PathBufBytes("/t".into()), true)],
            secrets: vec![Secret {
                target: "/run/secrets/pip".into(),
                data: b"s3cr\0t".to_vec(),
            }],
            argv: vec!["sh".into()],
            ..InitPlan::default()
        };
        assert_eq!(round_trip(&p), p);
    }

    #[test]
    fn the_kept_capabilities_are_podmans_defaults_and_nothing_that_escapes() {
        for bad in [
            CapabilitySet::SYS_ADMIN,
            CapabilitySet::SYS_PTRACE,
            CapabilitySet::NET_ADMIN,
            CapabilitySet::MKNOD,
            CapabilitySet::SYS_MODULE,
            CapabilitySet::DAC_READ_SEARCH,
        ] {
            assert!(!KEPT_CAPABILITIES.contains(bad), "{bad:?}");
        }
        assert_eq!(KEPT_CAPABILITIES.bits().count_ones(), 11);
    }
}
