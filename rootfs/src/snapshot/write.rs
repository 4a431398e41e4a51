//! Writes the changes of a root as a deterministic OCI layer tar: sorted
//! entries, parents before children, clamped mtimes, ids as seen inside the
//! sandbox, whiteouts for deletions.

use std::collections::{BTreeMap, HashMap};
use std::fs::File;
use std::io::{self, Read, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use tar::{EntryType, Header};

use super::diff::Change;
use super::error::{Result, SnapshotError};
use super::manifest::{EntryMeta, Kind, Manifest};
use crate::sandbox::{IdMap, OVERFLOW_ID};
use crate::unpack::{OPAQUE_MARKER, WHITEOUT_PREFIX};

/// How the layer tar is written.
#[derive(Debug, Clone)]
pub struct LayerOptions {
    /// `SOURCE_DATE_EPOCH`: every mtime later than this is written as this
    /// (BuildKit's clamping), so rebuilding the same inputs later gives the
    /// same bytes. `None` keeps mtimes (whole seconds).
    pub epoch: Option<u64>,
    /// Maps ids on disk back to sandbox ids (the sandbox's
    /// [`id_map`](crate::sandbox::Sandbox::id_map)).
    pub ids: IdMap,
}

/// What the layer contains.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Summary {
    /// Paths new in this layer (including entries below a recreated
    /// directory and entries that replaced another kind).
    pub added: u64,
    /// Paths modified.
    pub modified: u64,
    /// Whiteouts written.
    pub deleted: u64,
    /// Opaque directories written.
    pub opaque_dirs: u64,
    /// Unchanged parent directories written so that the changed entries have
    /// their parents' mode and owner.
    pub parents: u64,
    /// Tar entries written in all.
    pub entries: u64,
    /// Entries whose on-disk owner the id map does not cover (written as
    /// 65534).
    pub unmapped_ids: u64,
    /// Device nodes and sockets left out.
    pub skipped: u64,
}

enum Emit<'a> {
    Entry(&'a EntryMeta, Option<Change>),
    Whiteout,
}

/// Writes the layer for `changes` (from [`compare`](super::compare) of
/// `after` against the before-manifest) to `out`, reading contents from
/// `root`. Returns the summary; `out` gets a complete tar (end marker
/// included).
pub fn write_layer<W: Write>(
    root: &Path,
    after: &Manifest,
    changes: &BTreeMap<PathBuf, Change>,
    opts: &LayerOptions,
    out: W,
) -> Result<Summary> {
    let plan = plan_entries(after, changes);
    let mut layer = LayerWriter::new(root, opts, out);
    for (path, emit) in &plan {
        match emit {
            Emit::Whiteout => layer.whiteout(path)?,
            Emit::Entry(meta, change) => layer.entry(path, meta, *change)?,
        }
        layer.summary.entries += 1;
    }
    layer.finish()
}

/// Decides, before anything is read from disk, which paths the layer holds
/// and in which order: every change, plus each changed path's unchanged
/// parents (for their mode and owner), sorted so parents come first.
fn plan_entries<'a>(
    after: &'a Manifest,
    changes: &BTreeMap<PathBuf, Change>,
) -> BTreeMap<PathBuf, Emit<'a>> {
    let mut plan: BTreeMap<PathBuf, Emit<'_>> = BTreeMap::new();
    for (path, change) in changes {
        match change {
            Change::Deleted => {
                plan.insert(path.clone(), Emit::Whiteout);
            }
            c => {
                if let Some(meta) = after.get(path) {
                    plan.insert(path.clone(), Emit::Entry(meta, Some(*c)));
                }
            }
        }
        for a in path.ancestors().skip(1) {
            if a.as_os_str().is_empty() || plan.contains_key(a) {
                continue;
            }
            if let Some(meta) = after.get(a) {
                plan.insert(a.to_path_buf(), Emit::Entry(meta, None));
            }
        }
    }
    plan
}

/// Owner and time shared by every header of one entry, so each kind's
/// header differs only in what is particular to it.
#[derive(Clone, Copy)]
struct Stamp {
    uid: u32,
    gid: u32,
    mtime: u64,
}

impl Stamp {
    /// The header of an entry of `kind` with this owner and time.
    fn header(self, kind: EntryType, mode: u32) -> Header {
        base_header(kind, mode, self.uid, self.gid, self.mtime)
    }
}

/// The tar being written together with what the entries written so far
/// leave behind: the first path of each hard-linked inode and the counts.
struct LayerWriter<'a, W: Write> {
    tar: tar::Builder<W>,
    root: &'a Path,
    opts: &'a LayerOptions,
    links: HashMap<(u64, u64), PathBuf>,
    summary: Summary,
}

impl<'a, W: Write> LayerWriter<'a, W> {
    /// Starts the tar in complete header mode, so modes, owners and times
    /// are written as given rather than as the builder would guess them.
    fn new(root: &'a Path, opts: &'a LayerOptions, out: W) -> Self {
        let mut tar = tar::Builder::new(out);
        tar.mode(tar::HeaderMode::Complete);
        LayerWriter {
            tar,
            root,
            opts,
            links: HashMap::new(),
            summary: Summary::default(),
        }
    }

    /// Writes the end marker and flushes `out`; the skipped entries were
    /// counted as entries on the way and are taken back out here.
    fn finish(mut self) -> Result<Summary> {
        self.summary.entries -= self.summary.skipped;
        self.tar
            .into_inner()
            .and_then(|mut w| w.flush())
            .map_err(|e| SnapshotError::io("finishing layer tar", Path::new(""), e))?;
        Ok(self.summary)
    }

    /// Appends a header that carries no data (directories, fifos, markers),
    /// naming `path` in the error.
    fn append_empty(&mut self, h: &mut Header, path: &Path) -> Result<()> {
        h.set_size(0);
        self.tar
            .append_data(h, path, io::empty())
            .map_err(|e| SnapshotError::io("writing layer entry", path, e))
    }

    /// Whiteouts and opaque markers are empty root-owned files stamped with
    /// the epoch (not with any file's time), so they write the same way.
    fn marker(&mut self, name: &Path) -> Result<()> {
        let mut h = base_header(
            EntryType::Regular,
            0o644,
            0,
            0,
            self.opts.epoch.unwrap_or(0),
        );
        self.append_empty(&mut h, name)
    }

    /// A deleted path becomes a `.wh.` entry beside where it was.
    fn whiteout(&mut self, path: &Path) -> Result<()> {
        self.marker(&whiteout_name(path))?;
        self.summary.deleted += 1;
        Ok(())
    }

    /// Writes one entry that exists after the command: its xattrs, then the
    /// entry of its kind, then counts it by what changed.
    fn entry(&mut self, path: &Path, meta: &EntryMeta, change: Option<Change>) -> Result<()> {
        let (uid, gid) = inner_ids(meta, &self.opts.ids, &mut self.summary);
        let stamp = Stamp {
            uid,
            gid,
            mtime: clamp(meta.mtime.0, self.opts.epoch),
        };
        let host = self.root.join(path);
        // Files' and directories' xattrs (file capabilities, user.*)
        // go into a PAX header before the entry.
        if matches!(meta.kind, Kind::Dir | Kind::File)
            && !(meta.kind == Kind::File
                && meta.nlink > 1
                && self.links.contains_key(&(meta.dev, meta.ino)))
        {
            let attrs = crate::xattr::read(&host, &self.opts.ids)
                .map_err(|e| SnapshotError::io("reading xattrs of", &host, e))?;
            crate::xattr::append_pax(&mut self.tar, &attrs)
                .map_err(|e| SnapshotError::io("writing layer entry", path, e))?;
        }
        let written = match meta.kind {
            Kind::Dir => {
                self.dir(path, meta, change, stamp)?;
                true
            }
            Kind::File => {
                self.file(path, &host, meta, stamp)?;
                true
            }
            Kind::Symlink => {
                let target = meta.link_target.clone().unwrap_or_default();
                let mut h = stamp.header(EntryType::Symlink, 0o777);
                h.set_size(0);
                self.tar
                    .append_link(&mut h, path, Path::new(&target))
                    .map_err(|e| SnapshotError::io("writing layer entry", path, e))?;
                true
            }
            Kind::Fifo => {
                let mut h = stamp.header(EntryType::Fifo, meta.mode);
                self.append_empty(&mut h, path)?;
                true
            }
            Kind::Other => {
                self.summary.skipped += 1;
                false
            }
        };
        if written {
            match change {
                Some(Change::Modified) => self.summary.modified += 1,
                Some(Change::Added | Change::Recreated) => self.summary.added += 1,
                Some(Change::Deleted) => {}
                None => self.summary.parents += 1,
            }
        }
        Ok(())
    }

    /// A directory deleted and created again also gets an opaque marker, so
    /// that nothing of the lower layers' directory shows through.
    fn dir(
        &mut self,
        path: &Path,
        meta: &EntryMeta,
        change: Option<Change>,
        stamp: Stamp,
    ) -> Result<()> {
        let mut h = stamp.header(EntryType::Directory, meta.mode);
        self.append_empty(&mut h, path)?;
        if change == Some(Change::Recreated) {
            self.marker(&path.join(OPAQUE_MARKER))?;
            self.summary.opaque_dirs += 1;
            self.summary.entries += 1;
        }
        Ok(())
    }

    /// A file whose inode was already written in this layer becomes a hard
    /// link to that first path; otherwise its contents are copied, without
    /// following a symlink that replaced it since the walk.
    fn file(&mut self, path: &Path, host: &Path, meta: &EntryMeta, stamp: Stamp) -> Result<()> {
        let key = (meta.dev, meta.ino);
        if let Some(first) = self.links.get(&key).filter(|_| meta.nlink > 1) {
            let mut h = stamp.header(EntryType::Link, meta.mode);
            h.set_size(0);
            return self
                .tar
                .append_link(&mut h, path, first)
                .map_err(|e| SnapshotError::io("writing layer entry", path, e));
        }
        let file = std::fs::OpenOptions::new()
            .read(true)
            .custom_flags(rustix::fs::OFlags::NOFOLLOW.bits() as i32)
            .open(host)
            .map_err(|e| SnapshotError::io("reading", host, e))?;
        let mut h = stamp.header(EntryType::Regular, meta.mode);
        h.set_size(meta.size);
        let exact = Exact {
            file,
            left: meta.size,
            path: host,
        };
        self.tar
            .append_data(&mut h, path, exact)
            .map_err(|e| SnapshotError::io("writing layer entry", path, e))?;
        if meta.nlink > 1 {
            self.links.insert(key, path.to_path_buf());
        }
        Ok(())
    }
}

fn whiteout_name(path: &Path) -> PathBuf {
    let mut name = std::ffi::OsString::from(WHITEOUT_PREFIX);
    name.push(path.file_name().unwrap_or_default());
    match path.parent() {
        Some(p) => p.join(name),
        None => PathBuf::from(name),
    }
}

fn clamp(mtime: i64, epoch: Option<u64>) -> u64 {
    let m = u64::try_from(mtime).unwrap_or(0);
    match epoch {
        Some(e) => m.min(e),
        None => m,
    }
}

fn base_header(kind: EntryType, mode: u32, uid: u32, gid: u32, mtime: u64) -> Header {
    let mut h = Header::new_gnu();
    h.set_entry_type(kind);
    h.set_mode(mode & 0o7777);
    h.set_uid(u64::from(uid));
    h.set_gid(u64::from(gid));
    h.set_mtime(mtime);
    h
}

fn inner_ids(meta: &EntryMeta, ids: &IdMap, summary: &mut Summary) -> (u32, u32) {
    match (ids.to_inner_uid(meta.uid), ids.to_inner_gid(meta.gid)) {
        (Some(u), Some(g)) => (u, g),
        (u, g) => {
            summary.unmapped_ids += 1;
            (u.unwrap_or(OVERFLOW_ID), g.unwrap_or(OVERFLOW_ID))
        }
    }
}

/// Reads exactly `left` bytes of a file, failing if it is shorter (it
/// changed after the walk): the tar header already promised that size.
struct Exact<'a> {
    file: File,
    left: u64,
    path: &'a Path,
}

impl Read for Exact<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if self.left == 0 {
            return Ok(0);
        }
        let want = usize::try_from(self.left)
            .unwrap_or(usize::MAX)
            .min(buf.len());
        let n = self.file.read(&mut buf[..want])?;
        if n == 0 {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                format!(
                    "{} shrank while it was being written to the layer",
                    self.path.display()
                ),
            ));
        }
        self.left -= n as u64;
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn whiteout_names() {
        assert_eq!(whiteout_name(Path::new("a/b")), PathBuf::from("a/.wh.b"));
        assert_eq!(whiteout_name(Path::new("top")), PathBuf::from(".wh.top"));
    }

    #[test]
    fn clamps_to_the_epoch() {
        assert_eq!(clamp(2_000_000_000, Some(1_000)), 1_000);
        assert_eq!(clamp(500, Some(1_000)), 500);
        assert_eq!(clamp(-5, None), 0);
    }
}
