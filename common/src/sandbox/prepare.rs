//! Prepares one run: resolves every mount target inside the root (never
//! following a symlink out of it), decides which mount points must be
//! created, and remembers them so they are removed again once the command has
//! ended — the root then looks as before, apart from what the command did.

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::time::SystemTime;

use super::error::{Error, Result};
use super::preflight::UsernsMode;
use super::script::{Bind, Create, Plan};
use super::spec::{CaBundleMode, PROXY_ENV, RunSpec, SandboxConfig};
use crate::unpack::resolve_in_root;

/// Host files bound read-only when `host_network_files` is on.
const NETWORK_FILES: &[&str] = &["/etc/resolv.conf", "/etc/hosts"];

/// What to undo after the run: mount points the set-up created, and the
/// modification times of the directories they were created in.
#[derive(Debug, Default)]
pub(crate) struct Cleanup {
    created: Vec<Create>,
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
    create: Vec<Create>,
    removable: Vec<Create>,
    seen: HashSet<PathBuf>,
    parent_mtimes: Vec<(PathBuf, SystemTime)>,
}

impl Planner<'_> {
    /// The host path of mount target `target` (inside the root), planning
    /// its creation when missing. `None` when missing and `create` is false.
    fn target(
        &mut self,
        target: &Path,
        dir: bool,
        create: bool,
        removable: bool,
    ) -> Result<Option<PathBuf>> {
        let fail = |reason: String| Error::MountTarget {
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
        let parent: PathBuf = self
            .root
            .join(comps[..first_missing].iter().collect::<PathBuf>());
        if removable
            && !self.parent_mtimes.iter().any(|(p, _)| *p == parent)
            && let Ok(m) = std::fs::metadata(&parent).and_then(|m| m.modified())
        {
            self.parent_mtimes.push((parent.clone(), m));
        }
        let mut path = parent;
        for (i, c) in comps.iter().enumerate().skip(first_missing) {
            path.push(c);
            let is_dir = i + 1 < comps.len() || dir;
            if self.seen.insert(path.clone()) {
                let c = Create {
                    path: path.clone(),
                    dir: is_dir,
                };
                if removable {
                    self.removable.push(c.clone());
                }
                self.create.push(c);
            }
        }
        Ok(Some(r.host_path))
    }
}

/// Resolves the spec against the root and the configuration; returns the
/// plan for the host command and what to clean up afterwards.
pub(crate) fn prepare(
    config: &SandboxConfig,
    mode: UsernsMode,
    spec: &RunSpec,
    rundir: &Path,
) -> Result<(Plan, Cleanup)> {
    spec.validate()?;
    let root = spec
        .root
        .canonicalize()
        .map_err(|e| Error::io(format!("root directory {}", spec.root.display()), e))?;
    if !root.is_dir() {
        return Err(Error::InvalidSpec {
            field: "root",
            reason: format!("{} is not a directory", root.display()),
        });
    }
    let mut p = Planner {
        root: &root,
        create: Vec::new(),
        removable: Vec::new(),
        seen: HashSet::new(),
        parent_mtimes: Vec::new(),
    };
    let proc = p
        .target(Path::new("/proc"), true, true, true)?
        .unwrap_or_default();
    let dev = p
        .target(Path::new("/dev"), true, true, true)?
        .unwrap_or_default();

    let mut binds = Vec::new();
    if config.host_network_files {
        for f in NETWORK_FILES {
            if Path::new(f).is_file()
                && let Some(t) = p.target(Path::new(f), false, true, true)?
            {
                binds.push(Bind {
                    source: f.into(),
                    target: t,
                    read_only: true,
                });
            }
        }
    }
    if let Some(ca) = &config.ca_bundle
        && ca.is_file()
    {
        let create = config.ca_bundle_mode == CaBundleMode::Always;
        if let Some(t) = p.target(ca, false, create, true)? {
            binds.push(Bind {
                source: ca.clone(),
                target: t,
                read_only: true,
            });
        }
    }
    for m in &spec.mounts {
        let meta = std::fs::metadata(&m.source)
            .map_err(|e| Error::io(format!("bind mount source {}", m.source.display()), e))?;
        if let Some(t) = p.target(&m.target, meta.is_dir(), true, true)? {
            binds.push(Bind {
                source: m.source.clone(),
                target: t,
                read_only: m.read_only,
            });
        }
    }
    // The working directory is created like Docker's WORKDIR and kept.
    p.target(Path::new(&spec.workdir), true, true, false)?;

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
    let removable_set: HashSet<PathBuf> = p.removable.iter().map(|c| c.path.clone()).collect();
    // Under an overlay the mount points are made in the private upper
    // directory, which the caller discards: nothing to undo in the root.
    let cleanup = if spec.overlay.is_some() {
        Cleanup::default()
    } else {
        Cleanup {
            created: p
                .create
                .iter()
                .filter(|c| removable_set.contains(&c.path))
                .cloned()
                .collect(),
            parent_mtimes: p.parent_mtimes,
        }
    };
    let plan = Plan {
        mode,
        root: root.clone(),
        overlay: spec
            .overlay
            .as_ref()
            .map(|o| (o.upper.clone(), o.work.clone())),
        rundir: rundir.to_path_buf(),
        create: p.create,
        dev,
        proc,
        binds,
        hostname: spec.hostname.clone(),
        env,
        workdir: spec.workdir.clone(),
        user: spec.user,
        argv: spec.argv.clone(),
    };
    Ok((plan, cleanup))
}
