//! Prepares one run on the host side, before any namespace exists: resolves
//! every mount target inside the root (never following a symlink out of
//! it), creates the missing mount points and working directory owned by the
//! sandbox's root (under an overlay, in its private upper directory), and
//! remembers what it created so it is removed again once the command has
//! ended — the root then looks as before, apart from what the command did.
//! The result is the [`InitPlan`] the init carries out.

use std::collections::HashSet;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::time::SystemTime;

use super::chain::{SETUP_LOG, SETUP_OK};
use super::error::{Result, SandboxError};
use super::init::{InitPlan, PathBufBytes};
use super::spec::{CaBundleMode, PROXY_ENV, RunSpec, SECRETS_DIR, SandboxConfig, Secret};
use crate::unpack::resolve_in_root;

/// Host files bound read-only when `host_network_files` is on.
const NETWORK_FILES: &[&str] = &["/etc/resolv.conf", "/etc/hosts"];

/// A mount point (or working directory) created for a run.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Created {
    /// Host path.
    path: PathBuf,
    /// Directory (else an empty file).
    dir: bool,
}

/// What to undo after the run: mount points created for it, and the
/// modification times of the directories they were created in.
#[derive(Debug, Default)]
pub(crate) struct Cleanup {
    created: Vec<Created>,
    parent_mtimes: Vec<(PathBuf, SystemTime)>,
}

impl Cleanup {
    /// Removes the created mount points (deepest first; a directory the
    /// command put something into stays) and restores the parents' mtimes.
    pub(crate) fn run(&mut self) {
        for c in self.created.drain(..).rev() {
            // Errors are ignored on purpose: a missing entry is fine, and a
            // directory the command wrote into is the command's result.
            let _ = if c.dir {
                std::fs::remove_dir(&c.path)
            } else {
                std::fs::remove_file(&c.path)
            };
        }
        for (dir, mtime) in self.parent_mtimes.drain(..) {
            if let Ok(f) = std::fs::File::open(&dir) {
                let _ = f.set_times(std::fs::FileTimes::new().set_modified(mtime));
            }
        }
    }
}

struct Planner<'a> {
    root: &'a Path,
    /// Where new entries are made: the root, or the overlay's upper dir.
    write_root: &'a Path,
    /// Host uid/gid of the sandbox's root, owner of what is created.
    owner: (u32, u32),
    removable: Vec<Created>,
    seen: HashSet<PathBuf>,
    parent_mtimes: Vec<(PathBuf, SystemTime)>,
}

impl Planner<'_> {
    /// The host path of mount target `target` (inside the root), creating
    /// it when missing. `None` when missing and `create` is false.
    fn target(
        &mut self,
        target: &Path,
        dir: bool,
        create: bool,
        removable: bool,
    ) -> Result<Option<PathBuf>> {
        let fail = |reason: String| SandboxError::MountTarget {
            root: self.root.to_path_buf(),
            target: target.to_path_buf(),
            reason,
        };
        let r = resolve_in_root(self.root, target, true).map_err(|e| fail(e.to_string()))?;
        if r.missing == 0 {
            let meta = std::fs::symlink_metadata(&r.host_path).map_err(|e| fail(e.to_string()))?;
            if meta.is_dir() != dir {
                return Err(fail(if dir {
                    "exists and is not a directory".into()
                } else {
                    "exists and is a directory".into()
                }));
            }
            return Ok(Some(r.host_path));
        }
        if !create {
            return Ok(None);
        }
        let comps: Vec<_> = r.relative.components().collect();
        let first_missing = comps.len() - r.missing;
        let existing: PathBuf = comps[..first_missing].iter().collect();
        let parent = self.root.join(&existing);
        if removable
            && !self.parent_mtimes.iter().any(|(p, _)| *p == parent)
            && let Ok(m) = std::fs::metadata(&parent).and_then(|m| m.modified())
        {
            self.parent_mtimes.push((parent.clone(), m));
        }
        if self.write_root != self.root {
            self.copy_up(&existing).map_err(|e| fail(e.to_string()))?;
        }
        let mut rel = existing;
        for (i, c) in comps.iter().enumerate().skip(first_missing) {
            rel.push(c);
            let is_dir = i + 1 < comps.len() || dir;
            let path = self.write_root.join(&rel);
            if !self.seen.insert(path.clone()) {
                continue;
            }
            if is_dir {
                std::fs::create_dir(&path)
            } else {
                std::fs::File::create(&path).map(drop)
            }
            .and_then(|()| std::os::unix::fs::lchown(&path, Some(self.owner.0), Some(self.owner.1)))
            .map_err(|e| fail(format!("creating {}: {e}", path.display())))?;
            if removable {
                self.removable.push(Created { path, dir: is_dir });
            }
        }
        Ok(Some(r.host_path))
    }

    /// Under an overlay, makes the existing directories `rel` leads through
    /// in the upper directory with the lower ones' owner and mode (what the
    /// kernel's copy-up would do), so new mount points can be made there.
    fn copy_up(&self, rel: &Path) -> std::io::Result<()> {
        let mut cur = PathBuf::new();
        for c in rel.components() {
            cur.push(c);
            let upper = self.write_root.join(&cur);
            if upper.exists() {
                continue;
            }
            let lower = std::fs::metadata(self.root.join(&cur))?;
            std::fs::create_dir(&upper)?;
            std::os::unix::fs::lchown(&upper, Some(lower.uid()), Some(lower.gid()))?;
            std::fs::set_permissions(&upper, std::fs::Permissions::from_mode(lower.mode()))?;
        }
        Ok(())
    }

    /// The bind mounts, in the order the init makes them: the host's
    /// network files, the CA bundle, then the spec's mounts.
    fn binds(
        &mut self,
        config: &SandboxConfig,
        spec: &RunSpec,
    ) -> Result<Vec<(PathBufBytes, PathBufBytes, bool)>> {
        let mut binds = Vec::new();
        let root = self.root;
        let mut bind = |source: PathBuf, target: PathBuf, read_only: bool| {
            binds.push((
                PathBufBytes(source),
                PathBufBytes(inside(root, &target)),
                read_only,
            ));
        };
        if config.host_network_files {
            for f in NETWORK_FILES {
                if Path::new(f).is_file()
                    && let Some(t) = self.target(Path::new(f), false, true, true)?
                {
                    bind(f.into(), t, true);
                }
            }
        }
        if let Some(ca) = &config.ca_bundle
            && ca.is_file()
        {
            let create = config.ca_bundle_mode == CaBundleMode::Always;
            if let Some(t) = self.target(ca, false, create, true)? {
                bind(ca.clone(), t, true);
            }
        }
        for m in &spec.mounts {
            let meta = std::fs::metadata(&m.source).map_err(|e| {
                SandboxError::io(format!("bind mount source {}", m.source.display()), e)
            })?;
            if let Some(t) = self.target(&m.target, meta.is_dir(), true, true)? {
                bind(m.source.clone(), t, m.read_only);
            }
        }
        Ok(binds)
    }

    /// The secrets with their targets as the init writes them, creating
    /// /run/secrets and the mount points of secrets that live elsewhere.
    fn secrets(&mut self, spec: &RunSpec) -> Result<Vec<Secret>> {
        let mut secrets = Vec::new();
        if !spec.secrets.is_empty() {
            self.target(Path::new(SECRETS_DIR), true, true, true)?;
            for s in &spec.secrets {
                let mut s = s.clone();
                if !Path::new(&s.target).starts_with(SECRETS_DIR) {
                    // Bound from the tmpfs onto a mount point in the root: the
                    // path the init uses after the switch, symlinks resolved.
                    let host = self
                        .target(Path::new(&s.target), false, true, true)?
                        .unwrap_or_default();
                    s.target = inside(self.root, &host).to_string_lossy().into_owned();
                }
                secrets.push(s);
            }
        }
        Ok(secrets)
    }
}

/// Resolves the spec against the root and the configuration, creates the
/// mount points, and returns the init's plan and what to clean up
/// afterwards. `owner` is the host uid/gid of the sandbox's root.
pub(crate) fn prepare(
    config: &SandboxConfig,
    spec: &RunSpec,
    rundir: &Path,
    owner: (u32, u32),
) -> Result<(InitPlan, Cleanup)> {
    spec.validate()?;
    let root = canonical_root(spec)?;
    let upper = spec.overlay.as_ref().map(|o| o.upper.clone());
    prepare_overlay(spec, &root, owner)?;
    let mut p = Planner {
        root: &root,
        write_root: upper.as_deref().unwrap_or(&root),
        owner,
        removable: Vec::new(),
        seen: HashSet::new(),
        parent_mtimes: Vec::new(),
    };
    p.target(Path::new("/proc"), true, true, true)?;
    p.target(Path::new("/dev"), true, true, true)?;
    let binds = p.binds(config, spec)?;
    let secrets = p.secrets(spec)?;
    // The working directory is created like Docker's WORKDIR and kept.
    p.target(Path::new(&spec.workdir), true, true, false)?;

    let env = run_env(config, spec);
    // Under an overlay the mount points are made in the private upper
    // directory, which the caller discards: nothing to undo in the root.
    let cleanup = if spec.overlay.is_some() {
        Cleanup::default()
    } else {
        Cleanup {
            created: p.removable,
            parent_mtimes: p.parent_mtimes,
        }
    };
    let plan = InitPlan {
        root: root.clone(),
        overlay: spec
            .overlay
            .as_ref()
            .map(|o| (PathBufBytes(o.upper.clone()), PathBufBytes(o.work.clone()))),
        log: rundir.join(SETUP_LOG),
        ok: rundir.join(SETUP_OK),
        binds,
        secrets,
        hostname: spec.hostname.clone(),
        network: spec.network,
        pids_limit: config.pids_limit,
        env,
        workdir: spec.workdir.clone(),
        uid: spec.user.uid,
        gid: spec.user.gid,
        argv: spec.argv.clone(),
    };
    Ok((plan, cleanup))
}

/// The root with every symlink resolved, so every later path check and the
/// init's mounts work on the directory itself.
fn canonical_root(spec: &RunSpec) -> Result<PathBuf> {
    let root = spec
        .root
        .canonicalize()
        .map_err(|e| SandboxError::io(format!("root directory {}", spec.root.display()), e))?;
    if !root.is_dir() {
        return Err(SandboxError::InvalidSpec {
            field: "root",
            reason: format!("{} is not a directory", root.display()),
        });
    }
    Ok(root)
}

/// Gives the overlay's directories the owners the mount needs: the upper
/// one the root's owner and mode (the merged root takes them from it), the
/// work one the sandbox's root.
fn prepare_overlay(spec: &RunSpec, root: &Path, owner: (u32, u32)) -> Result<()> {
    let Some(o) = &spec.overlay else {
        return Ok(());
    };
    let upper = &o.upper;
    // The merged root takes the upper directory's owner and mode.
    let lower = std::fs::metadata(root)
        .map_err(|e| SandboxError::io(format!("root directory {}", root.display()), e))?;
    std::os::unix::fs::lchown(upper, Some(lower.uid()), Some(lower.gid()))
        .and_then(|()| {
            std::fs::set_permissions(upper, std::fs::Permissions::from_mode(lower.mode()))
        })
        .map_err(|e| SandboxError::io(format!("overlay directory {}", upper.display()), e))?;
    // The overlay is mounted by the sandbox's root, which must be able
    // to write its work directory.
    std::os::unix::fs::lchown(&o.work, Some(owner.0), Some(owner.1))
        .map_err(|e| SandboxError::io(format!("overlay directory {}", o.work.display()), e))
}

/// Targets are given as the init sees them once the root is `/`, their
/// symlinks already resolved inside the root.
fn inside(root: &Path, host: &Path) -> PathBuf {
    Path::new("/").join(host.strip_prefix(root).unwrap_or(host))
}

/// The command's environment: the spec's, plus the host's proxy variables
/// the spec does not set when the configuration passes them on.
fn run_env(config: &SandboxConfig, spec: &RunSpec) -> Vec<(String, String)> {
    let mut env = spec.env.clone();
    if config.pass_proxy_env {
        for k in PROXY_ENV {
            if env.iter().any(|(e, _)| e == k) {
                continue;
            }
            if let Ok(v) = std::env::var(k) {
                env.push((k.to_string(), v));
            }
        }
    }
    env
}
