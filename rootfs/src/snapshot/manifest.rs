//! The cheap "before" state of a root: path → metadata from one `lstat` walk,
//! no file contents, compared with a second walk after the command.

use std::collections::{BTreeMap, BTreeSet};
use std::ffi::OsString;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use super::error::{Result, SnapshotError};

/// Paths the sandbox mounts over or binds into: never part of a layer.
pub const SANDBOX_EXCLUDES: &[&str] = &[
    "proc",
    "dev",
    "sys",
    "run/secrets",
    "etc/resolv.conf",
    "etc/hosts",
];

/// Paths (relative to the root) left out of manifests and layers, each with
/// everything below it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Excludes {
    paths: BTreeSet<PathBuf>,
}

impl Default for Excludes {
    /// [`SANDBOX_EXCLUDES`].
    fn default() -> Self {
        Excludes {
            paths: SANDBOX_EXCLUDES.iter().map(PathBuf::from).collect(),
        }
    }
}

impl Excludes {
    /// Nothing excluded.
    pub fn none() -> Self {
        Excludes {
            paths: BTreeSet::new(),
        }
    }

    /// Also exclude `path` (absolute or relative to the root) and its
    /// subtree.
    pub fn with(mut self, path: impl AsRef<Path>) -> Self {
        let rel: PathBuf = path
            .as_ref()
            .components()
            .filter(|c| matches!(c, std::path::Component::Normal(_)))
            .collect();
        self.paths.insert(rel);
        self
    }

    /// Whether `rel` itself is listed (its subtree is then never visited).
    pub fn contains(&self, rel: &Path) -> bool {
        self.paths.contains(rel)
    }
}

/// The kind of a filesystem entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// Regular file.
    File,
    /// Directory.
    Dir,
    /// Symbolic link.
    Symlink,
    /// FIFO.
    Fifo,
    /// Device node or socket: never put into a layer.
    Other,
}

/// What the snapshot compares for one path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EntryMeta {
    /// Kind.
    pub kind: Kind,
    /// Permission bits with set-uid/set-gid/sticky.
    pub mode: u32,
    /// Owner as stored on disk (host view).
    pub uid: u32,
    /// Group as stored on disk (host view).
    pub gid: u32,
    /// Size in bytes (files).
    pub size: u64,
    /// Modification time (seconds, nanoseconds).
    pub mtime: (i64, i64),
    /// Status change time: any write, chmod, chown, link or rename sets it,
    /// and nothing in user space can set it back.
    pub ctime: (i64, i64),
    /// Device and inode: a replaced file (written to a temp name and renamed,
    /// as dpkg and pip do) gets a new one.
    pub dev: u64,
    /// Inode number.
    pub ino: u64,
    /// Hard link count.
    pub nlink: u64,
    /// Birth time (statx), where the filesystem records one: tells a
    /// directory deleted and created again even when the inode number is
    /// reused.
    pub btime: Option<(i64, i64)>,
    /// Symlink target.
    pub link_target: Option<OsString>,
}

impl EntryMeta {
    fn from_path(path: &Path) -> std::io::Result<EntryMeta> {
        let m = std::fs::symlink_metadata(path)?;
        let ft = m.file_type();
        use std::os::unix::fs::FileTypeExt;
        let kind = if ft.is_file() {
            Kind::File
        } else if ft.is_dir() {
            Kind::Dir
        } else if ft.is_symlink() {
            Kind::Symlink
        } else if ft.is_fifo() {
            Kind::Fifo
        } else {
            Kind::Other
        };
        let link_target = if kind == Kind::Symlink {
            Some(std::fs::read_link(path)?.into_os_string())
        } else {
            None
        };
        Ok(EntryMeta {
            kind,
            mode: m.mode() & 0o7777,
            uid: m.uid(),
            gid: m.gid(),
            size: if kind == Kind::File { m.size() } else { 0 },
            mtime: (m.mtime(), m.mtime_nsec()),
            ctime: (m.ctime(), m.ctime_nsec()),
            dev: m.dev(),
            ino: m.ino(),
            nlink: m.nlink(),
            btime: m
                .created()
                .ok()
                .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
                .map(|d| (d.as_secs() as i64, i64::from(d.subsec_nanos()))),
            link_target,
        })
    }

    /// Whether this directory was deleted and created again: another inode,
    /// or the same inode number with another birth time.
    pub fn recreated(&self, after: &EntryMeta) -> bool {
        self.ino != after.ino
            || self.dev != after.dev
            || matches!((self.btime, after.btime), (Some(a), Some(b)) if a != b)
    }

    /// Whether `after` differs from `self` in a way that puts the path into
    /// the layer. Files: any of size, mtime, mode, owner, inode or ctime
    /// (ctime catches same-size rewrites that restored the mtime, so no
    /// change is missed; a pure metadata touch may include an unchanged
    /// file, which is harmless). Directories: mode, owner, mtime (their
    /// children are compared one by one). Symlinks: target, owner, inode.
    pub fn changed(&self, after: &EntryMeta) -> bool {
        if self.kind != after.kind {
            return true;
        }
        let owner_mode = self.mode != after.mode || self.uid != after.uid || self.gid != after.gid;
        match self.kind {
            Kind::File => {
                owner_mode
                    || self.size != after.size
                    || self.mtime != after.mtime
                    || self.ino != after.ino
                    || self.dev != after.dev
                    || self.ctime != after.ctime
            }
            Kind::Dir => owner_mode || self.mtime != after.mtime,
            Kind::Symlink => {
                self.link_target != after.link_target
                    || self.uid != after.uid
                    || self.gid != after.gid
                    || self.ino != after.ino
            }
            Kind::Fifo | Kind::Other => owner_mode || self.ino != after.ino,
        }
    }
}

/// Path (relative to the root) → metadata for every entry of a root except
/// the excluded subtrees and the root itself.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Manifest {
    entries: BTreeMap<PathBuf, EntryMeta>,
}

impl Manifest {
    /// Walks `root` (without following symlinks) and records every entry's
    /// metadata. Takes about as long as `find root -ls` and holds no file
    /// contents.
    pub fn capture(root: &Path, excludes: &Excludes) -> Result<Manifest> {
        let mut entries = BTreeMap::new();
        let mut stack = vec![PathBuf::new()];
        while let Some(rel_dir) = stack.pop() {
            let dir = root.join(&rel_dir);
            let rd = std::fs::read_dir(&dir)
                .map_err(|e| SnapshotError::io("reading directory", &dir, e))?;
            for e in rd {
                let e = e.map_err(|e| SnapshotError::io("reading directory", &dir, e))?;
                let rel = rel_dir.join(e.file_name());
                if excludes.contains(&rel) {
                    continue;
                }
                let path = root.join(&rel);
                let meta = EntryMeta::from_path(&path)
                    .map_err(|e| SnapshotError::io("lstat", &path, e))?;
                if meta.kind == Kind::Dir {
                    stack.push(rel.clone());
                }
                entries.insert(rel, meta);
            }
        }
        Ok(Manifest { entries })
    }

    /// A manifest from explicit entries (tests, or a state recorded
    /// elsewhere).
    pub fn from_entries(entries: impl IntoIterator<Item = (PathBuf, EntryMeta)>) -> Manifest {
        Manifest {
            entries: entries.into_iter().collect(),
        }
    }

    /// Number of entries.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether there are no entries.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Metadata of one path.
    pub fn get(&self, rel: &Path) -> Option<&EntryMeta> {
        self.entries.get(rel)
    }

    /// All entries, sorted by path.
    pub fn iter(&self) -> impl Iterator<Item = (&PathBuf, &EntryMeta)> {
        self.entries.iter()
    }
}
