//! Applies one layer tar onto a root directory: entries, OCI whiteouts and
//! opaque directories, ownership through the sandbox's id map, modes and
//! mtimes — never writing outside the root.

use std::collections::HashSet;
use std::ffi::OsStr;
use std::fs::{File, OpenOptions, Permissions};
use std::io::{self, Read};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};
use tar::EntryType;

use super::MAX_BYTES_ENV;
use super::error::{ApplyReport, Result, SkipReason, SkippedEntry, UnpackError};
use super::scoped::resolve_in_root;
use crate::sandbox::{IdMap, OVERFLOW_ID};

/// The OCI whiteout prefix: `.wh.NAME` deletes NAME from lower layers.
pub const WHITEOUT_PREFIX: &str = ".wh.";
/// The OCI opaque-directory marker: the directory's lower content is hidden.
pub const OPAQUE_MARKER: &str = ".wh..wh..opq";

/// What to do with files' owners.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Ownership {
    /// chown every entry to its tar uid/gid mapped through the sandbox's id
    /// map ([`Sandbox::id_map`](crate::sandbox::Sandbox::id_map)): the
    /// command in the sandbox then sees the tar's owners. Needs root, real or
    /// inside kiln's user namespace.
    Map(IdMap),
    /// Leave everything owned by this process (for inspecting a root, not
    /// for running commands in it).
    Ignore,
}

/// What to do with an entry that tries to leave the root (`..`, absolute
/// names, hard links out).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OnUnsafe {
    /// Stop with [`UnpackError::UnsafeEntry`]: a layer that contains such entries
    /// is hostile or broken, and no image should be built on it.
    Fail,
    /// Skip the entry, list it in [`ApplyReport::skipped`], go on.
    Skip,
}

/// The most file data one layer may write by default: 64 GiB, above any
/// real image's layer (CUDA's are a few GiB), far below what a 10 KB layer
/// of compressed zeros expanded to.
pub const DEFAULT_MAX_BYTES: u64 = 64 << 30;

/// How layers are applied.
#[derive(Debug, Clone)]
pub struct UnpackOptions {
    /// Owners.
    pub ownership: Ownership,
    /// Hostile entries.
    pub on_unsafe: OnUnsafe,
    /// The most file data (not counting holes) one layer may write.
    pub max_bytes: u64,
}

impl UnpackOptions {
    /// Owners mapped through `ids`, hostile entries refused, the cap from
    /// [`MAX_BYTES_ENV`] or [`DEFAULT_MAX_BYTES`].
    pub fn mapped(ids: IdMap) -> Self {
        UnpackOptions {
            ownership: Ownership::Map(ids),
            on_unsafe: OnUnsafe::Fail,
            max_bytes: max_bytes_from_env(),
        }
    }
}

/// [`MAX_BYTES_ENV`] when it holds a number, else [`DEFAULT_MAX_BYTES`].
pub fn max_bytes_from_env() -> u64 {
    std::env::var(MAX_BYTES_ENV)
        .ok()
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(DEFAULT_MAX_BYTES)
}

/// Applies the uncompressed layer tar `tar` onto `root` (an existing
/// directory) and returns what it did, including the layer's diffID (the
/// sha256 of every byte of the tar stream).
///
/// Parent components are resolved inside the root as the container would
/// (an entry `lib/x` under a `lib -> usr/lib` symlink lands in `usr/lib/x`,
/// one under `link -> /` lands in the root), never outside. Names with `..`
/// or a leading `/`, and hard links to such names, are refused or skipped
/// per [`OnUnsafe`]. Device nodes and FIFOs are skipped and counted.
pub fn apply_tar<R: Read>(root: &Path, tar: R, opts: &UnpackOptions) -> Result<ApplyReport> {
    if let Ownership::Map(_) = opts.ownership {
        let uid = rustix::process::geteuid().as_raw();
        if uid != 0 {
            return Err(UnpackError::NeedsRoot { uid });
        }
    }
    let root = root
        .canonicalize()
        .map_err(|e| UnpackError::io("opening unpack root", root, e))?;
    let hashing = HashingReader {
        inner: tar,
        hasher: Sha256::new(),
    };
    let mut archive = tar::Archive::new(hashing);
    let mut layer = Layer {
        root: &root,
        opts,
        report: ApplyReport::default(),
        written: HashSet::new(),
        ancestors: HashSet::new(),
        dirs: Vec::new(),
        bytes: 0,
    };
    for entry in archive
        .entries()
        .map_err(|source| UnpackError::Tar { source })?
    {
        let mut entry = entry.map_err(|source| UnpackError::Tar { source })?;
        layer.entry(&mut entry)?;
    }
    layer.finish_dirs()?;
    let mut report = layer.report;
    let mut rest = archive.into_inner();
    io::copy(&mut rest, &mut io::sink()).map_err(|source| UnpackError::Tar { source })?;
    report.diff_id = format!("sha256:{:x}", rest.hasher.finalize());
    Ok(report)
}

struct HashingReader<R> {
    inner: R,
    hasher: Sha256,
}

impl<R: Read> Read for HashingReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.hasher.update(&buf[..n]);
        Ok(n)
    }
}

/// The entry name as clean relative components, or why it is unsafe.
/// `Ok(empty)` is the root itself (`.` or `./`).
fn clean_name(raw: &[u8]) -> std::result::Result<PathBuf, SkipReason> {
    if raw.first() == Some(&b'/') {
        return Err(SkipReason::AbsolutePath);
    }
    let mut out = PathBuf::new();
    for comp in raw.split(|&b| b == b'/') {
        match comp {
            b"" | b"." => {}
            b".." => return Err(SkipReason::ParentTraversal),
            c => out.push(OsStr::from_bytes(c)),
        }
    }
    Ok(out)
}

/// A PAX sparse file (GNU format 1.0): its real name and size.
struct PaxSparse {
    name: Vec<u8>,
    real_size: u64,
}

/// The entry's PAX sparse description, if it has one; GNU's older 0.x
/// formats (the map in PAX records) are refused.
fn pax_sparse<R: Read>(
    entry: &mut tar::Entry<'_, R>,
) -> std::result::Result<Option<PaxSparse>, SkipReason> {
    let Ok(Some(pax)) = entry.pax_extensions() else {
        return Ok(None);
    };
    let (mut major, mut minor, mut name, mut size) = (None, None, None, None);
    for ext in pax.flatten() {
        let Ok(key) = ext.key() else { continue };
        let value = ext.value_bytes().to_vec();
        match key {
            "GNU.sparse.major" => major = Some(value),
            "GNU.sparse.minor" => minor = Some(value),
            "GNU.sparse.name" => name = Some(value),
            "GNU.sparse.realsize" | "GNU.sparse.size" => size = Some(value),
            "GNU.sparse.map" | "GNU.sparse.numblocks" | "GNU.sparse.offset" => {
                major.get_or_insert(b"0".to_vec());
            }
            _ => {}
        }
    }
    let Some(major) = major else {
        return Ok(None);
    };
    let version = format!(
        "{}.{}",
        String::from_utf8_lossy(&major),
        String::from_utf8_lossy(minor.as_deref().unwrap_or(b"0"))
    );
    let real_size = size
        .and_then(|s| String::from_utf8(s).ok())
        .and_then(|s| s.trim().parse().ok());
    match (version.as_str(), name, real_size) {
        ("1.0", Some(name), Some(real_size)) => Ok(Some(PaxSparse { name, real_size })),
        _ => Err(SkipReason::UnsupportedSparse(version)),
    }
}

/// Copies `from` into `file`, leaving holes where whole blocks are zero (a
/// GNU sparse entry reads as its full size with the holes as zeros):
/// returns the bytes really written.
fn copy_with_holes<R: Read>(from: &mut R, file: &mut std::fs::File) -> Result<u64> {
    use std::io::{Seek, SeekFrom, Write};
    let mut buf = vec![0u8; 64 * 1024];
    let (mut pos, mut written) = (0u64, 0u64);
    loop {
        let n = read_full(from, &mut buf)?;
        if n == 0 {
            break;
        }
        if buf[..n].iter().all(|&b| b == 0) {
            file.seek(SeekFrom::Current(n as i64))
                .map_err(|e| UnpackError::io("seeking in", "a layer file", e))?;
        } else {
            file.write_all(&buf[..n])
                .map_err(|e| UnpackError::io("writing", "a layer file", e))?;
            written += n as u64;
        }
        pos += n as u64;
    }
    file.set_len(pos)
        .map_err(|e| UnpackError::io("sizing", "a layer file", e))?;
    Ok(written)
}

/// Writes a PAX sparse (GNU 1.0) entry: its data starts with the map (the
/// number of regions, then offset and size of each, one decimal per line,
/// padded to 512 bytes), followed by the regions' bytes.
fn write_pax_sparse<R: Read>(
    from: &mut R,
    file: &mut std::fs::File,
    sparse: &PaxSparse,
    name: &[u8],
) -> Result<u64> {
    use std::io::{Seek, SeekFrom};
    let bad = |why: &str| UnpackError::BadSparseMap {
        path: String::from_utf8_lossy(name).into_owned(),
        why: why.to_string(),
    };
    let mut consumed = 0u64;
    let mut line = || -> Result<u64> {
        let mut text = Vec::new();
        loop {
            let mut b = [0u8; 1];
            from.read_exact(&mut b)
                .map_err(|_| bad("the map ends early"))?;
            consumed += 1;
            if b[0] == b'\n' {
                break;
            }
            if text.len() > 20 {
                return Err(bad("a number is too long"));
            }
            text.push(b[0]);
        }
        std::str::from_utf8(&text)
            .ok()
            .and_then(|t| t.parse().ok())
            .ok_or_else(|| bad("not a decimal number"))
    };
    let count = line()?;
    if count > 1 << 20 {
        return Err(bad("too many regions"));
    }
    let mut regions = Vec::new();
    for _ in 0..count {
        let offset = line()?;
        let size = line()?;
        regions.push((offset, size));
    }
    let pad = (512 - consumed % 512) % 512;
    io::copy(&mut from.take(pad), &mut io::sink()).map_err(|source| UnpackError::Tar { source })?;
    let mut written = 0u64;
    for (offset, size) in regions {
        if offset
            .checked_add(size)
            .is_none_or(|end| end > sparse.real_size)
        {
            return Err(bad("a region lies past the file's size"));
        }
        file.seek(SeekFrom::Start(offset))
            .map_err(|e| UnpackError::io("seeking in", "a layer file", e))?;
        let n =
            io::copy(&mut from.take(size), file).map_err(|source| UnpackError::Tar { source })?;
        if n != size {
            return Err(bad("the data ends early"));
        }
        written += n;
    }
    file.set_len(sparse.real_size)
        .map_err(|e| UnpackError::io("sizing", "a layer file", e))?;
    Ok(written)
}

/// Fills `buf` as far as the reader goes.
fn read_full<R: Read>(from: &mut R, buf: &mut [u8]) -> Result<usize> {
    let mut n = 0;
    while n < buf.len() {
        match from.read(&mut buf[n..]) {
            Ok(0) => break,
            Ok(k) => n += k,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(source) => return Err(UnpackError::Tar { source }),
        }
    }
    Ok(n)
}

struct Layer<'a> {
    root: &'a Path,
    opts: &'a UnpackOptions,
    report: ApplyReport,
    /// Resolved relative paths this layer wrote (opaque markers keep them).
    written: HashSet<PathBuf>,
    /// Every ancestor of a written path.
    ancestors: HashSet<PathBuf>,
    /// Directories of this layer and their mtimes, set last (writing
    /// children changes a directory's mtime).
    dirs: Vec<(PathBuf, u64)>,
    /// File data written so far (holes not counted).
    bytes: u64,
}

impl Layer<'_> {
    fn skip(&mut self, raw: &[u8], reason: SkipReason) -> Result<()> {
        let path = String::from_utf8_lossy(raw).into_owned();
        if reason.is_unsafe() && self.opts.on_unsafe == OnUnsafe::Fail {
            return Err(UnpackError::UnsafeEntry { path, reason });
        }
        self.report.skipped.push(SkippedEntry { path, reason });
        Ok(())
    }

    /// Applies one tar entry: works out its real name, then hands it to the
    /// step for what it is (the root itself, a whiteout, a device, or a
    /// file system entry below a parent resolved inside the root).
    fn entry<R: Read>(&mut self, entry: &mut tar::Entry<'_, R>) -> Result<()> {
        let mut raw = entry.path_bytes().into_owned();
        let kind = entry.header().entry_type();
        if matches!(kind, EntryType::XGlobalHeader | EntryType::XHeader) {
            return Ok(());
        }
        let sparse = match pax_sparse(entry) {
            Ok(s) => s,
            Err(reason) => return self.skip(&raw, reason),
        };
        if let Some(s) = &sparse {
            // GNU tar names the entry GNUSparseFile.N/NAME; the real name
            // is in the PAX header.
            raw = s.name.clone();
        }
        let name = match clean_name(&raw) {
            Ok(n) => n,
            Err(reason) => return self.skip(&raw, reason),
        };
        let (parent_rel, base) = match (name.parent(), name.file_name()) {
            (Some(p), Some(b)) => (p.to_path_buf(), b.to_os_string()),
            _ => return self.root_entry(kind, entry.header()),
        };
        // Whiteouts.
        let base_bytes = base.as_bytes();
        if let Some(rest) = base_bytes.strip_prefix(WHITEOUT_PREFIX.as_bytes()) {
            return self.whiteout(&raw, &parent_rel, base_bytes, rest);
        }
        if matches!(kind, EntryType::Char | EntryType::Block | EntryType::Fifo) {
            self.report.devices_skipped += 1;
            return Ok(());
        }
        let (parent_host, parent_rel) = match self.parent_dir(&parent_rel, true) {
            Ok(Some(p)) => p,
            Ok(None) => return self.skip(&raw, SkipReason::BadParent("parent missing".into())),
            Err(reason) => return self.skip(&raw, reason),
        };
        let path = parent_host.join(&base);
        let rel = parent_rel.join(&base);
        let attrs = crate::xattr::of_entry(entry);
        match kind {
            EntryType::Directory => self.dir(&path, entry.header(), &attrs)?,
            EntryType::Regular | EntryType::Continuous | EntryType::GNUSparse => {
                self.file(entry, &path, sparse.as_ref(), &raw, &attrs)?;
            }
            EntryType::Symlink => self.symlink(entry, &path)?,
            EntryType::Link => {
                let target = match self.link_target(entry) {
                    Ok(t) => t,
                    Err(reason) => return self.skip(&raw, reason),
                };
                // A link onto itself is already in place.
                if target != path {
                    remove_any(&path)?;
                    std::fs::hard_link(&target, &path)
                        .map_err(|e| UnpackError::io("creating hard link", &path, e))?;
                }
            }
            other => return self.skip(&raw, SkipReason::UnsupportedType(other.as_byte())),
        }
        self.note_written(rel);
        self.report.applied += 1;
        Ok(())
    }

    /// The root itself: only a directory entry means anything, and it sets
    /// the root's owner, mode and (last) mtime.
    fn root_entry(&mut self, kind: EntryType, header: &tar::Header) -> Result<()> {
        if kind == EntryType::Directory {
            let root = self.root.to_path_buf();
            self.set_owner_mode(&root, header)?;
            let mtime = header.mtime().unwrap_or(0);
            self.dirs.push((root, mtime));
        }
        Ok(())
    }

    /// A `.wh.` entry: an opaque marker clears its directory, any other
    /// deletes the named sibling; `.wh.`, `.wh..` and `.wh...` name nothing
    /// and are skipped. Nothing is created for a parent that is missing.
    fn whiteout(&mut self, raw: &[u8], parent_rel: &Path, base: &[u8], rest: &[u8]) -> Result<()> {
        let parent = match self.parent_dir(parent_rel, false) {
            Ok(Some(p)) => p,
            Ok(None) => return Ok(()), // nothing below a missing dir to delete
            Err(reason) => return self.skip(raw, reason),
        };
        self.report.whiteouts += 1;
        if base == OPAQUE_MARKER.as_bytes() {
            return self.clear_opaque(&parent.0, &parent.1);
        }
        if rest.is_empty() || rest == b"." || rest == b".." {
            self.report.whiteouts -= 1;
            return self.skip(raw, SkipReason::InvalidWhiteout);
        }
        let victim = parent.0.join(OsStr::from_bytes(rest));
        remove_any(&victim)
    }

    /// A directory entry keeps an existing directory (and what is in it)
    /// and replaces anything else; its mtime is set once the layer is done.
    fn dir(
        &mut self,
        path: &Path,
        header: &tar::Header,
        attrs: &[(String, Vec<u8>)],
    ) -> Result<()> {
        let existing = std::fs::symlink_metadata(path).ok();
        if !existing.as_ref().is_some_and(|m| m.is_dir()) {
            if existing.is_some() {
                remove_any(path)?;
            }
            std::fs::create_dir(path)
                .map_err(|e| UnpackError::io("creating directory", path, e))?;
        }
        self.set_owner_mode(path, header)?;
        self.set_xattrs(path, attrs)?;
        self.dirs
            .push((path.to_path_buf(), header.mtime().unwrap_or(0)));
        Ok(())
    }

    /// A regular file is always created anew, never through a symlink, and
    /// its data counts against the layer's cap before owner and mode (which
    /// may add setuid) are set.
    fn file<R: Read>(
        &mut self,
        entry: &mut tar::Entry<'_, R>,
        path: &Path,
        sparse: Option<&PaxSparse>,
        raw: &[u8],
        attrs: &[(String, Vec<u8>)],
    ) -> Result<()> {
        remove_any(path)?;
        let mut file = OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .custom_flags(rustix::fs::OFlags::NOFOLLOW.bits() as i32)
            .open(path)
            .map_err(|e| UnpackError::io("creating file", path, e))?;
        let written = match sparse {
            Some(s) => write_pax_sparse(entry, &mut file, s, raw)?,
            None => copy_with_holes(entry, &mut file)?,
        };
        self.bytes = self.bytes.saturating_add(written);
        if self.bytes > self.opts.max_bytes {
            return Err(UnpackError::TooLarge {
                limit: self.opts.max_bytes,
            });
        }
        self.set_owner_mode(path, entry.header())?;
        self.set_xattrs(path, attrs)?;
        set_mtime_file(&file, entry.header().mtime().unwrap_or(0))
            .map_err(|e| UnpackError::io("setting mtime of", path, e))
    }

    /// A symlink's target is written as given (it is only followed inside
    /// the container); owner and mtime go on the link, not its target.
    fn symlink<R: Read>(&mut self, entry: &mut tar::Entry<'_, R>, path: &Path) -> Result<()> {
        let target = entry
            .link_name_bytes()
            .map(|t| t.into_owned())
            .unwrap_or_default();
        remove_any(path)?;
        std::os::unix::fs::symlink(OsStr::from_bytes(&target), path)
            .map_err(|e| UnpackError::io("creating symlink", path, e))?;
        self.set_owner(path, entry.header())?;
        set_mtime_nofollow(path, entry.header().mtime().unwrap_or(0))
            .map_err(|e| UnpackError::io("setting mtime of", path, e))
    }

    /// The host path a hard link entry links to, or why it may not: its
    /// target must be a clean name, exist inside the root (symlinks resolved
    /// there) and not be a directory.
    fn link_target<R: Read>(
        &self,
        entry: &mut tar::Entry<'_, R>,
    ) -> std::result::Result<PathBuf, SkipReason> {
        let target_raw = entry
            .link_name_bytes()
            .map(|t| t.into_owned())
            .unwrap_or_default();
        let target_rel = match clean_name(&target_raw) {
            Ok(t) if !t.as_os_str().is_empty() => t,
            _ => return Err(SkipReason::LinkTargetOutside),
        };
        let target = match resolve_in_root(self.root, &target_rel, false) {
            Ok(r) if r.missing == 0 => r.host_path,
            Ok(_) => return Err(SkipReason::LinkTargetMissing),
            Err(e) => return Err(SkipReason::BadParent(e.to_string())),
        };
        if std::fs::symlink_metadata(&target).is_ok_and(|m| m.is_dir()) {
            return Err(SkipReason::LinkTargetMissing);
        }
        Ok(target)
    }

    fn note_written(&mut self, rel: PathBuf) {
        for a in rel.ancestors().skip(1) {
            if !self.ancestors.insert(a.to_path_buf()) {
                break;
            }
        }
        self.written.insert(rel);
    }

    /// Resolves (and with `create`, creates) the parent directory of an
    /// entry inside the root. `Ok(None)` when missing and not created.
    fn parent_dir(
        &mut self,
        rel: &Path,
        create: bool,
    ) -> std::result::Result<Option<(PathBuf, PathBuf)>, SkipReason> {
        let r = resolve_in_root(self.root, rel, true)
            .map_err(|e| SkipReason::BadParent(e.to_string()))?;
        if r.missing == 0 {
            if !std::fs::symlink_metadata(&r.host_path).is_ok_and(|m| m.is_dir()) {
                return Err(SkipReason::BadParent(format!(
                    "{} is not a directory",
                    r.relative.display()
                )));
            }
            return Ok(Some((r.host_path, r.relative)));
        }
        if !create {
            return Ok(None);
        }
        // Create the missing parents (implicit directories, as tar does).
        let comps: Vec<_> = r.relative.components().collect();
        let mut p = self.root.to_path_buf();
        let mut rel_p = PathBuf::new();
        for (i, c) in comps.iter().enumerate() {
            p.push(c);
            rel_p.push(c);
            if i + r.missing >= comps.len() {
                std::fs::create_dir(&p).map_err(|e| SkipReason::BadParent(e.to_string()))?;
                std::fs::set_permissions(&p, Permissions::from_mode(0o755))
                    .map_err(|e| SkipReason::BadParent(e.to_string()))?;
                if let Ownership::Map(ids) = &self.opts.ownership
                    && let (Some(u), Some(g)) = (ids.to_outer_uid(0), ids.to_outer_gid(0))
                {
                    std::os::unix::fs::lchown(&p, Some(u), Some(g))
                        .map_err(|e| SkipReason::BadParent(e.to_string()))?;
                }
                self.note_written(rel_p.clone());
            }
        }
        Ok(Some((r.host_path, r.relative)))
    }

    /// Opaque marker in `dir`: delete everything below it that this layer
    /// did not write.
    fn clear_opaque(&mut self, dir: &Path, rel: &Path) -> Result<()> {
        let entries = match std::fs::read_dir(dir) {
            Ok(e) => e,
            Err(e) => return Err(UnpackError::io("reading directory", dir, e)),
        };
        for e in entries {
            let e = e.map_err(|e| UnpackError::io("reading directory", dir, e))?;
            let child_rel = rel.join(e.file_name());
            let child = e.path();
            if self.written.contains(&child_rel) || self.ancestors.contains(&child_rel) {
                if e.file_type().is_ok_and(|t| t.is_dir()) {
                    self.clear_opaque(&child, &child_rel)?;
                }
            } else {
                remove_any(&child)?;
            }
        }
        Ok(())
    }

    fn ids(&mut self, header: &tar::Header) -> Option<(u32, u32)> {
        let Ownership::Map(ids) = &self.opts.ownership else {
            return None;
        };
        // An empty (NUL-filled) id field means 0, as GNU tar reads it.
        let uid = u32::try_from(header.uid().unwrap_or(0)).ok();
        let gid = u32::try_from(header.gid().unwrap_or(0)).ok();
        let ou = uid.and_then(|u| ids.to_outer_uid(u));
        let og = gid.and_then(|g| ids.to_outer_gid(g));
        match (ou, og) {
            (Some(u), Some(g)) => Some((u, g)),
            _ => {
                self.report.unmapped_ids += 1;
                let u = ou.or_else(|| ids.to_outer_uid(OVERFLOW_ID))?;
                let g = og.or_else(|| ids.to_outer_gid(OVERFLOW_ID))?;
                Some((u, g))
            }
        }
    }

    fn set_owner(&mut self, path: &Path, header: &tar::Header) -> Result<()> {
        if let Some((u, g)) = self.ids(header) {
            std::os::unix::fs::lchown(path, Some(u), Some(g))
                .map_err(|e| UnpackError::io("chown", path, e))?;
        }
        Ok(())
    }

    /// The entry's kept xattrs, after chown (which clears file
    /// capabilities), when owners are mapped for the sandbox.
    fn set_xattrs(&mut self, path: &Path, attrs: &[(String, Vec<u8>)]) -> Result<()> {
        if let (Ownership::Map(ids), false) = (&self.opts.ownership, attrs.is_empty()) {
            crate::xattr::write(path, attrs, ids)
                .map_err(|e| UnpackError::io("setting xattrs of", path, e))?;
        }
        Ok(())
    }

    /// Owner first, then mode: chown clears set-uid/set-gid bits.
    fn set_owner_mode(&mut self, path: &Path, header: &tar::Header) -> Result<()> {
        self.set_owner(path, header)?;
        let mode = header.mode().unwrap_or(0o644) & 0o7777;
        std::fs::set_permissions(path, Permissions::from_mode(mode))
            .map_err(|e| UnpackError::io("chmod", path, e))
    }

    /// Directory mtimes, deepest first, once all their children exist.
    fn finish_dirs(&mut self) -> Result<()> {
        let mut dirs = std::mem::take(&mut self.dirs);
        dirs.sort_by_key(|(p, _)| std::cmp::Reverse(p.components().count()));
        for (p, mtime) in dirs {
            set_mtime_nofollow(&p, mtime)
                .map_err(|e| UnpackError::io("setting mtime of", &p, e))?;
        }
        Ok(())
    }
}

/// Removes whatever is at `path` (a directory recursively, a symlink itself);
/// nothing there is fine.
fn remove_any(path: &Path) -> Result<()> {
    let res = match std::fs::symlink_metadata(path) {
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
        Err(e) => Err(e),
        Ok(m) if m.is_dir() => std::fs::remove_dir_all(path),
        Ok(_) => std::fs::remove_file(path),
    };
    res.map_err(|e| UnpackError::io("removing", path, e))
}

fn timespec(secs: u64) -> rustix::fs::Timestamps {
    let t = rustix::fs::Timespec {
        tv_sec: i64::try_from(secs).unwrap_or(i64::MAX),
        tv_nsec: 0,
    };
    rustix::fs::Timestamps {
        last_access: t,
        last_modification: t,
    }
}

fn set_mtime_file(file: &File, secs: u64) -> io::Result<()> {
    rustix::fs::futimens(file, &timespec(secs)).map_err(io::Error::from)
}

fn set_mtime_nofollow(path: &Path, secs: u64) -> io::Result<()> {
    rustix::fs::utimensat(
        rustix::fs::CWD,
        path,
        &timespec(secs),
        rustix::fs::AtFlags::SYMLINK_NOFOLLOW,
    )
    .map_err(io::Error::from)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cleans_names_and_flags_traversal() {
        assert_eq!(clean_name(b"./a//b/./c").unwrap(), PathBuf::from("a/b/c"));
        assert_eq!(clean_name(b"./").unwrap(), PathBuf::new());
        assert_eq!(clean_name(b"/abs/x"), Err(SkipReason::AbsolutePath));
        assert_eq!(clean_name(b"a/../../x"), Err(SkipReason::ParentTraversal));
        assert_eq!(clean_name(b"..").unwrap_err(), SkipReason::ParentTraversal);
    }
}
