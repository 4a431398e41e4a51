//! `RUN --mount`: what a command sees while it runs and what never becomes
//! part of its layer, each prepared as a bind mount of the sandbox.
//!
//! - `type=cache`: a directory kept in the cache directory
//!   (`run-caches/<id's digest>`), shared by every build with that id;
//!   `sharing=locked` waits for other builds, `private` takes a fresh
//!   directory when another build holds it; seeded from `from`/`source`
//!   when first made. Its content is never part of a key.
//! - `type=bind`: files of the context (after `.dockerignore`, copied into
//!   scratch so no ignored file shows), of a stage or of an image, read-only
//!   unless `rw`, and then a scratch copy whose changes are thrown away.
//!   The bound files count in the key: the context's by content, a stage's
//!   by its key.
//! - `type=tmpfs`: an empty scratch directory, removed after the command
//!   (no kernel tmpfs: a build needs the emptiness, not the memory; `size`
//!   is not enforced).

use std::fs::File;
use std::path::{Path, PathBuf};

use kiln_rootfs::sandbox::BindMount;
use sha2::{Digest as _, Sha256};

use super::{Builder, Built, absolute, workdir};
use crate::copy::{self, Kind, Tree};
use crate::dockerfile::{CacheSharing, CopyFrom, RunMount, Step};
use crate::error::BuildError;
use crate::registry::Registry;

/// What must live until the command has run: cache locks.
pub(super) struct Held {
    _locks: Vec<File>,
}

// The private steps return the builder's one error type, as build.rs does.
#[allow(clippy::result_large_err)]
impl Builder<'_> {
    /// The part of a RUN's key its bind mounts add: the bound context
    /// files' content, or the bound stage's key.
    pub(super) fn mounts_key(
        &mut self,
        step: &Step,
        mounts: &[RunMount],
    ) -> Result<String, BuildError> {
        let mut out = String::new();
        for m in mounts {
            let RunMount::Bind { source, from, .. } = m else {
                continue;
            };
            match self.source_stage(step, from)? {
                Some(i) => {
                    let chain = self
                        .done
                        .get(&i)
                        .map(|b| b.chain.clone())
                        .unwrap_or_default();
                    out.push_str(&format!("bind:stage:{chain}\n"));
                }
                None => {
                    let tree = self.context()?;
                    let planned = copy::plan(&tree, std::slice::from_ref(source), "/")
                        .map_err(|e| self.dferr(step, e))?;
                    let content = copy::content_key(&planned).map_err(|e| self.dferr(step, e))?;
                    out.push_str(&format!("bind:{source}:{content}\n"));
                }
            }
        }
        Ok(out)
    }

    /// The sandbox's bind mounts for a RUN's `--mount`s, and what must stay
    /// held while it runs.
    pub(super) async fn prepare_mounts<R: Registry>(
        &mut self,
        stage: usize,
        built: &Built,
        step: &Step,
        mounts: &[RunMount],
        registry: &R,
    ) -> Result<(Vec<BindMount>, Held), BuildError> {
        let wd = workdir(&built.config);
        let mut binds = Vec::new();
        let mut locks = Vec::new();
        for (n, m) in mounts.iter().enumerate() {
            let scratch = self
                .work
                .path()
                .join(format!("mount-{stage}-{}-{n}", step.line));
            let file = self.req.dockerfile.clone();
            let io = |what: &str, p: &Path, e: std::io::Error| mount_io(&file, step, what, p, e);
            match m {
                RunMount::Tmpfs { target, .. } => {
                    let _ = std::fs::remove_dir_all(&scratch);
                    std::fs::create_dir_all(&scratch).map_err(|e| io("creating", &scratch, e))?;
                    self.own_as_root(&scratch, 0o1777)?;
                    binds.push(BindMount::read_write(&scratch, absolute(&wd, target)));
                }
                RunMount::Bind {
                    target,
                    source,
                    from,
                    readwrite,
                } => {
                    let target = absolute(&wd, target);
                    let dir = match self.source_stage(step, from)? {
                        None => self.context_bind(step, source, &scratch)?,
                        Some(i) => {
                            let found = self.stage_path(step, i, source, "bind", registry).await?;
                            if *readwrite {
                                // Writes must not reach the stage's root.
                                let _ = std::fs::remove_dir_all(&scratch);
                                copy_tree(&found.host_path, &scratch)
                                    .map_err(|e| io("copying", &found.host_path, e))?;
                                scratch.clone()
                            } else {
                                found.host_path
                            }
                        }
                    };
                    binds.push(if *readwrite {
                        BindMount::read_write(dir, target)
                    } else {
                        BindMount::read_only(dir, target)
                    });
                }
                RunMount::Cache {
                    target,
                    id,
                    sharing,
                    from,
                    source,
                    mode,
                    uid,
                    gid,
                    readonly,
                } => {
                    let (dir, lock) = self
                        .cache_dir(
                            step,
                            id,
                            *sharing,
                            from,
                            source.as_deref(),
                            (*uid, *gid, *mode),
                            &scratch,
                            registry,
                        )
                        .await?;
                    locks.extend(lock);
                    let target = absolute(&wd, target);
                    binds.push(if *readonly {
                        BindMount::read_only(dir, target)
                    } else {
                        BindMount::read_write(dir, target)
                    });
                }
            }
        }
        Ok((binds, Held { _locks: locks }))
    }

    /// A bind of the context: a scratch copy of the files `.dockerignore`
    /// lets through (a single file as `file` in it), owned by the
    /// sandbox's root, as COPY would make them.
    fn context_bind(
        &mut self,
        step: &Step,
        source: &str,
        scratch: &Path,
    ) -> Result<PathBuf, BuildError> {
        let file = self.req.dockerfile.clone();
        let io = |what: &str, p: &Path, e: std::io::Error| mount_io(&file, step, what, p, e);
        let tree = self.context()?;
        let planned =
            copy::plan(&tree, &[source.to_string()], "/").map_err(|e| self.dferr(step, e))?;
        let _ = std::fs::remove_dir_all(scratch);
        std::fs::create_dir_all(scratch).map_err(|e| io("creating", scratch, e))?;
        let single = matches!(planned.as_slice(), [p] if p.kind != Kind::Dir && p.dest.is_empty());
        for p in &planned {
            let to = if single {
                scratch.join("file")
            } else {
                scratch.join(&p.dest)
            };
            copy_entry(&p.source, &to, p.kind).map_err(|e| io("copying", &p.source, e))?;
        }
        let ids = self.sandbox()?.id_map().clone();
        let (u, g) = (ids.to_outer_uid(0), ids.to_outer_gid(0));
        for entry in walkdir::WalkDir::new(scratch) {
            let entry = entry.map_err(|e| io("walking", scratch, e.into()))?;
            std::os::unix::fs::lchown(entry.path(), u, g)
                .map_err(|e| io("chown", entry.path(), e))?;
        }
        Ok(if single {
            scratch.join("file")
        } else {
            scratch.to_path_buf()
        })
    }

    /// A cache mount's directory (under the cache directory, by id; a
    /// scratch one for `sharing=private` when another build holds it),
    /// made and seeded when new, and the lock to hold while it is used.
    #[allow(clippy::too_many_arguments)]
    async fn cache_dir<R: Registry>(
        &mut self,
        step: &Step,
        id: &str,
        sharing: CacheSharing,
        from: &Option<CopyFrom>,
        source: Option<&str>,
        (uid, gid, mode): (u32, u32, u32),
        scratch: &Path,
        registry: &R,
    ) -> Result<(PathBuf, Option<File>), BuildError> {
        let file = self.req.dockerfile.clone();
        let io = |what: &str, p: &Path, e: std::io::Error| mount_io(&file, step, what, p, e);
        let hex = crate::image::hex(&Sha256::digest(id.as_bytes()));
        let caches = self.store.root().join("run-caches");
        std::fs::create_dir_all(&caches).map_err(|e| io("creating", &caches, e))?;
        let lock_path = caches.join(format!("{hex}.lock"));
        let lock = File::create(&lock_path).map_err(|e| io("opening", &lock_path, e))?;
        let mut dir = caches.join(&hex);
        let held = match sharing {
            CacheSharing::Shared => None,
            CacheSharing::Locked => {
                lock.lock().map_err(|e| io("locking", &lock_path, e))?;
                Some(lock)
            }
            CacheSharing::Private if lock.try_lock().is_ok() => Some(lock),
            CacheSharing::Private => {
                dir = scratch.to_path_buf();
                let _ = std::fs::remove_dir_all(&dir);
                None
            }
        };
        if !dir.exists() {
            match self.source_stage(step, from)? {
                Some(i) => {
                    let rel = source.unwrap_or("/");
                    let found = self.stage_path(step, i, rel, "cache", registry).await?;
                    copy_tree(&found.host_path, &dir).map_err(|e| io("seeding", &dir, e))?;
                }
                None => {
                    std::fs::create_dir_all(&dir).map_err(|e| io("creating", &dir, e))?;
                    self.own(&dir, uid, gid, mode)?;
                }
            }
        }
        Ok((dir, held))
    }

    /// `source` inside stage `i`'s root (unpacked now if need be), its
    /// links resolved inside that root.
    async fn stage_path<R: Registry>(
        &mut self,
        step: &Step,
        i: usize,
        source: &str,
        kind: &str,
        registry: &R,
    ) -> Result<kiln_rootfs::unpack::Resolved, BuildError> {
        let root = self.root_of(i, registry).await?;
        let rel = source.trim_start_matches('/');
        kiln_rootfs::unpack::resolve_in_root(&root, Path::new(rel), true)
            .ok()
            .filter(|r| r.missing == 0)
            .ok_or_else(|| {
                self.dferr(
                    step,
                    format!("--mount=type={kind}: {source:?} not found in stage {i}"),
                )
            })
    }

    fn own_as_root(&mut self, dir: &Path, mode: u32) -> Result<(), BuildError> {
        self.own(dir, 0, 0, mode)
    }

    /// Gives `dir` the owner the sandbox sees as `uid:gid` and `mode`.
    fn own(&mut self, dir: &Path, uid: u32, gid: u32, mode: u32) -> Result<(), BuildError> {
        use std::os::unix::fs::PermissionsExt as _;
        let ids = self.sandbox()?.id_map().clone();
        let (u, g) = (ids.to_outer_uid(uid), ids.to_outer_gid(gid));
        let fail = |e: std::io::Error| BuildError::Dockerfile {
            file: self.req.dockerfile.clone(),
            message: format!("--mount: preparing {}: {e}", dir.display()),
        };
        if !ids.is_identity() {
            std::os::unix::fs::lchown(dir, u, g).map_err(fail)?;
        }
        std::fs::set_permissions(dir, std::fs::Permissions::from_mode(mode)).map_err(fail)
    }
}

/// A `--mount` preparation error, at the step.
fn mount_io(file: &Path, step: &Step, what: &str, p: &Path, e: std::io::Error) -> BuildError {
    BuildError::Dockerfile {
        file: file.to_path_buf(),
        message: format!(
            "Dockerfile:{}: {}: --mount: {what} {}: {e}",
            step.line,
            step.text,
            p.display()
        ),
    }
}

/// One planned entry copied to `to` (parents made as needed).
fn copy_entry(from: &Path, to: &Path, kind: Kind) -> std::io::Result<()> {
    if let Some(parent) = to.parent() {
        std::fs::create_dir_all(parent)?;
    }
    match kind {
        Kind::Dir => std::fs::create_dir_all(to),
        Kind::Symlink => std::os::unix::fs::symlink(std::fs::read_link(from)?, to),
        Kind::File => std::fs::copy(from, to).map(|_| ()),
    }
}

/// A directory tree (or one file) copied with modes and owners, links as
/// links.
fn copy_tree(from: &Path, to: &Path) -> std::io::Result<()> {
    use std::os::unix::fs::MetadataExt as _;
    let meta = std::fs::symlink_metadata(from)?;
    if !meta.is_dir() {
        if let Some(parent) = to.parent() {
            std::fs::create_dir_all(parent)?;
        }
        std::fs::copy(from, to)?;
        return std::os::unix::fs::lchown(to, Some(meta.uid()), Some(meta.gid()));
    }
    let tree = Tree::walk(from, "the mount source", |_, _| false).map_err(std::io::Error::other)?;
    let planned = copy::plan(&tree, &[String::new()], "/").map_err(std::io::Error::other)?;
    std::fs::create_dir_all(to)?;
    for p in planned {
        let dest: PathBuf = to.join(&p.dest);
        copy_entry(&p.source, &dest, p.kind)?;
        let m = std::fs::symlink_metadata(&p.source)?;
        std::os::unix::fs::lchown(&dest, Some(m.uid()), Some(m.gid()))?;
        if p.kind != Kind::Symlink {
            std::fs::set_permissions(&dest, m.permissions())?;
        }
    }
    std::os::unix::fs::lchown(to, Some(meta.uid()), Some(meta.gid()))?;
    std::fs::set_permissions(to, meta.permissions())
}
