//! COPY and ADD as Docker defines them, built straight into a layer tar (no
//! sandbox, no unpacked root): which files a source list names (paths,
//! globs, directories whose contents are copied), where each lands, a key
//! over exactly those bytes for the cache, and the tar itself.

use std::collections::BTreeMap;
use std::fs::File;
use std::io::{self, Read, Write};
use std::os::unix::fs::PermissionsExt as _;
use std::path::{Path, PathBuf};

use globset::{GlobBuilder, GlobMatcher};
use sha2::{Digest as _, Sha256};

use crate::image::hex;

/// Why a COPY cannot be planned or written.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub(crate) enum CopyError {
    /// A source matches nothing.
    #[error("{source_path:?} not found in {place}")]
    NotFound {
        /// As written.
        source_path: String,
        /// "the build context (or excluded by .dockerignore)", "stage builder"...
        place: String,
    },
    /// A source leaves its root (`../x`).
    #[error("{0:?} points outside its root")]
    Outside(String),
    /// A glob does not parse.
    #[error("bad pattern {pattern:?}: {message}")]
    Pattern {
        /// As written.
        pattern: String,
        /// Why.
        message: String,
    },
    /// Reading or writing failed.
    #[error("{action} {}: {source}", path.display())]
    Io {
        /// What kiln was doing.
        action: &'static str,
        /// The file.
        path: PathBuf,
        /// The error.
        source: io::Error,
    },
}

fn io_err(action: &'static str, path: &Path) -> impl FnOnce(io::Error) -> CopyError + use<> {
    let path = path.to_path_buf();
    move |source| CopyError::Io {
        action,
        path,
        source,
    }
}

/// What kind of file an entry is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Kind {
    /// A directory.
    Dir,
    /// A regular file.
    File,
    /// A symbolic link (copied as a link, never followed).
    Symlink,
}

/// The files a COPY may read: relative paths under a root with their kind
/// (the build context after .dockerignore, or a stage's root).
#[derive(Debug, Clone)]
pub(crate) struct Tree {
    root: PathBuf,
    entries: BTreeMap<String, Kind>,
    place: String,
}

impl Tree {
    /// Every file under `root`, except the relative paths `skip` rejects.
    pub(crate) fn walk(
        root: &Path,
        place: &str,
        skip: impl Fn(&str, bool) -> bool,
    ) -> Result<Tree, CopyError> {
        let mut entries = BTreeMap::new();
        let mut walker = walkdir::WalkDir::new(root)
            .follow_links(false)
            .sort_by_file_name()
            .min_depth(1)
            .into_iter();
        while let Some(item) = walker.next() {
            let item = item.map_err(|e| CopyError::Io {
                action: "walking",
                path: root.to_path_buf(),
                source: e.into(),
            })?;
            let rel = item
                .path()
                .strip_prefix(root)
                .map(|p| p.to_string_lossy().into_owned())
                .unwrap_or_default();
            let ft = item.file_type();
            if skip(&rel, ft.is_dir()) {
                if ft.is_dir() {
                    walker.skip_current_dir();
                }
                continue;
            }
            let kind = if ft.is_dir() {
                Kind::Dir
            } else if ft.is_symlink() {
                Kind::Symlink
            } else if ft.is_file() {
                Kind::File
            } else {
                continue; // sockets, fifos, devices: not copied
            };
            entries.insert(rel, kind);
        }
        Ok(Tree {
            root: root.to_path_buf(),
            entries,
            place: place.to_string(),
        })
    }
}

impl Tree {
    /// Where a symlink at `rel` leads inside the tree, and what is there;
    /// anything else (or a link out of the tree, dangling or looping) is
    /// itself.
    fn follow(&self, rel: &str, kind: Kind) -> (String, Kind) {
        let mut at = rel.to_string();
        let mut kind = kind;
        for _ in 0..40 {
            if kind != Kind::Symlink {
                return (at, kind);
            }
            let Ok(target) = std::fs::read_link(self.root.join(&at)) else {
                break;
            };
            let target = target.to_string_lossy().into_owned();
            let joined = if target.starts_with('/') {
                target
            } else {
                match at.rsplit_once('/') {
                    Some((dir, _)) => format!("{dir}/{target}"),
                    None => target,
                }
            };
            let Some(next) = normalize_clamped(&joined) else {
                break;
            };
            match self.entries.get(&next) {
                Some(k) => {
                    at = next;
                    kind = *k;
                }
                None => break,
            }
        }
        (rel.to_string(), Kind::Symlink)
    }
}

/// `a/../../b` -> `b`: `..` stops at the root, as the kernel resolves
/// inside a chroot.
fn normalize_clamped(raw: &str) -> Option<String> {
    let mut parts: Vec<&str> = Vec::new();
    for part in raw.split('/') {
        match part {
            "" | "." => {}
            ".." => {
                parts.pop();
            }
            p => parts.push(p),
        }
    }
    (!parts.is_empty()).then(|| parts.join("/"))
}

/// One entry of the layer: where it comes from and where it lands.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Planned {
    /// The host file.
    pub source: PathBuf,
    /// Its path relative to the tree's root (where a stage's listing has
    /// its metadata).
    pub origin: String,
    /// Named by the source list itself (a path or a glob match), not found
    /// inside a directory source: ADD extracts only such archives.
    pub direct: bool,
    /// Path in the image, relative to `/`, no trailing slash.
    pub dest: String,
    /// Its kind.
    pub kind: Kind,
}

/// How sources are laid out beyond Docker's defaults.
#[derive(Debug, Clone, Default)]
pub(crate) struct PlanOptions<'a> {
    /// `dest` is a directory whatever the sources (more sources of other
    /// kinds, heredoc files or downloads, share the COPY).
    pub dir: bool,
    /// `--parents`: each source keeps its path under `dest`; in a source
    /// with `/./`, the part after it.
    pub parents: bool,
    /// `--exclude`: entries (and what is under them) these patterns match
    /// are left out.
    pub exclude: Option<&'a crate::layer::DockerIgnore>,
}

/// Plans a COPY of `sources` to `dest` (already absolute) from `tree`:
/// a directory source copies its contents; several sources, a directory
/// source or a `dest` ending in `/` make `dest` a directory.
pub(crate) fn plan(tree: &Tree, sources: &[String], dest: &str) -> Result<Vec<Planned>, CopyError> {
    plan_with(tree, sources, dest, &PlanOptions::default())
}

/// [`plan`], with `opts`.
pub(crate) fn plan_with(
    tree: &Tree,
    sources: &[String],
    dest: &str,
    opts: &PlanOptions,
) -> Result<Vec<Planned>, CopyError> {
    let matched = match_sources(tree, sources, opts.parents)?;
    let as_dir = opts.dir
        || opts.parents
        || dest.ends_with('/')
        || matched.len() > 1
        || matched.iter().any(|m| m.kind == Kind::Dir);
    let layout = Layout {
        tree,
        opts,
        dest_rel: dest
            .trim_start_matches('/')
            .trim_end_matches('/')
            .to_string(),
        as_dir,
    };
    let mut out: BTreeMap<String, Planned> = BTreeMap::new();
    // BuildKit matches `--exclude` against paths relative to the source
    // being copied: a named entry by its name, a directory's by their path
    // under it.
    for m in matched {
        if layout.excluded(m.name.rsplit('/').next().unwrap_or(&m.name)) {
            continue;
        }
        if m.kind == Kind::Dir {
            layout.dir_contents(&m, &mut out);
        } else {
            layout.entry(m, &mut out);
        }
    }
    Ok(out.into_values().collect())
}

/// One entry a source names: a symlink named as a source is followed
/// (inside the tree), as Docker does; links inside a copied directory stay
/// links.
struct Matched {
    /// The name it is copied under.
    name: String,
    /// The path read.
    read: String,
    /// The kind read.
    kind: Kind,
    /// With --parents, how many leading components it drops (those before
    /// a `/./`).
    cut: usize,
}

/// What the sources name in the tree, in the order given. A source that is
/// not there is an error; a glob matching nothing is one only when nothing
/// at all matches.
fn match_sources(
    tree: &Tree,
    sources: &[String],
    parents: bool,
) -> Result<Vec<Matched>, CopyError> {
    let mut matched: Vec<Matched> = Vec::new();
    let mut unmatched: Option<String> = None;
    for raw in sources {
        let pattern = normalize(raw).ok_or_else(|| CopyError::Outside(raw.clone()))?;
        let cut = raw
            .find("/./")
            .and_then(|i| normalize(&raw[..i]))
            .map_or(0, |p| p.split('/').filter(|c| !c.is_empty()).count());
        let cut = if parents { cut } else { 0 };
        if pattern.is_empty() {
            matched.push(Matched {
                name: String::new(),
                read: String::new(),
                kind: Kind::Dir,
                cut: 0,
            });
            continue;
        }
        if pattern.contains(['*', '?', '[']) {
            let glob = matcher(&pattern)?;
            let before = matched.len();
            for (rel, kind) in &tree.entries {
                if glob.is_match(rel) {
                    let (read, kind) = tree.follow(rel, *kind);
                    matched.push(Matched {
                        name: rel.clone(),
                        read,
                        kind,
                        cut,
                    });
                }
            }
            // A glob matching nothing is fine while another source
            // matches something (Docker copies what matches).
            if matched.len() == before && unmatched.is_none() {
                unmatched = Some(raw.clone());
            }
        } else {
            match tree.entries.get(&pattern) {
                Some(kind) => {
                    let (read, kind) = tree.follow(&pattern, *kind);
                    matched.push(Matched {
                        name: pattern,
                        read,
                        kind,
                        cut,
                    });
                }
                None => {
                    return Err(CopyError::NotFound {
                        source_path: raw.clone(),
                        place: tree.place.clone(),
                    });
                }
            }
        }
    }
    if let (true, Some(raw)) = (matched.is_empty(), unmatched) {
        return Err(CopyError::NotFound {
            source_path: raw,
            place: tree.place.clone(),
        });
    }
    Ok(matched)
}

/// Where matched entries land: everything about the COPY that is the same
/// for each of them.
struct Layout<'a> {
    tree: &'a Tree,
    opts: &'a PlanOptions<'a>,
    /// `dest` relative to `/`, without slashes at either end.
    dest_rel: String,
    /// `dest` is a directory the entries go into.
    as_dir: bool,
}

impl Layout<'_> {
    /// Left out by `--exclude` (the source's root never is).
    fn excluded(&self, origin: &str) -> bool {
        !origin.is_empty() && self.opts.exclude.is_some_and(|e| e.is_excluded(origin))
    }

    /// With --parents, the part of `rel` kept under `dest`.
    fn kept(rel: &str, cut: usize) -> String {
        rel.split('/').skip(cut).collect::<Vec<_>>().join("/")
    }

    /// A directory source: its contents, not the directory itself (with
    /// --parents, under its own path).
    fn dir_contents(&self, m: &Matched, out: &mut BTreeMap<String, Planned>) {
        let prefix = if m.read.is_empty() {
            String::new()
        } else {
            format!("{}/", m.read)
        };
        let base = if self.opts.parents {
            join_rel(&self.dest_rel, &Self::kept(&m.name, m.cut))
        } else {
            self.dest_rel.clone()
        };
        for (sub, k) in self.tree.entries.range(prefix.clone()..) {
            let Some(tail) = sub.strip_prefix(&prefix) else {
                break;
            };
            if self.excluded(tail) {
                continue;
            }
            out.insert(
                join_rel(&base, tail),
                Planned {
                    source: self.tree.root.join(sub),
                    origin: sub.clone(),
                    direct: false,
                    dest: join_rel(&base, tail),
                    kind: *k,
                },
            );
        }
    }

    /// Any other source: the entry itself, at `dest`, under it by its own
    /// name, or with --parents under its kept path.
    fn entry(&self, m: Matched, out: &mut BTreeMap<String, Planned>) {
        let target = if self.opts.parents {
            join_rel(&self.dest_rel, &Self::kept(&m.name, m.cut))
        } else if self.as_dir {
            let base = m.name.rsplit('/').next().unwrap_or(&m.name);
            join_rel(&self.dest_rel, base)
        } else {
            self.dest_rel.clone()
        };
        out.insert(
            target.clone(),
            Planned {
                source: self.tree.root.join(&m.read),
                origin: m.read.clone(),
                direct: true,
                dest: target,
                kind: m.kind,
            },
        );
    }
}

/// `./a/../b/` -> `b`; `None` when it climbs out of the root.
fn normalize(raw: &str) -> Option<String> {
    let mut parts: Vec<&str> = Vec::new();
    for part in raw.split('/') {
        match part {
            "" | "." => {}
            ".." => {
                parts.pop()?;
            }
            p => parts.push(p),
        }
    }
    Some(parts.join("/"))
}

fn matcher(pattern: &str) -> Result<GlobMatcher, CopyError> {
    GlobBuilder::new(pattern)
        .literal_separator(true)
        .build()
        .map(|g| g.compile_matcher())
        .map_err(|e| CopyError::Pattern {
            pattern: pattern.to_string(),
            message: e.to_string(),
        })
}

/// How the entries are owned and stamped.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub(crate) struct Stamp {
    /// `--chown`, numeric: the owner of every copied entry and of every
    /// directory the copy creates on the way.
    pub chown: Option<(u64, u64)>,
    /// `--chmod`: replaces every copied entry's mode (not the parents').
    pub chmod: Option<u32>,
    /// Every entry's mtime (fixed for reproducible layers).
    pub mtime: u64,
}

/// A source entry's metadata as the copy keeps it.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub(crate) struct SourceMeta {
    /// Permission bits (with setuid/setgid/sticky).
    pub mode: u32,
    /// Owner (0 for the build context, as Docker does).
    pub uid: u64,
    /// Group.
    pub gid: u64,
    /// Extended attributes to keep.
    pub xattrs: Vec<(String, Vec<u8>)>,
}

/// The metadata of a build-context entry: its mode, owned by root.
pub(crate) fn context_meta(p: &Planned) -> Result<SourceMeta, CopyError> {
    let meta =
        std::fs::symlink_metadata(&p.source).map_err(io_err("reading metadata of", &p.source))?;
    Ok(SourceMeta {
        mode: meta.permissions().mode() & 0o7777,
        ..SourceMeta::default()
    })
}

/// One entry of the layer as it will be written.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Placed {
    /// Path in the image, relative, every symlink on the way resolved.
    pub path: String,
    /// Its kind.
    pub kind: Kind,
    /// Where its content (or link target) comes from; `None` for a parent
    /// directory the copy creates.
    pub source: Option<PathBuf>,
    /// Mode, owner and xattrs.
    pub meta: SourceMeta,
}

/// Where a COPY's entries land in the image as it stands, as Docker puts
/// them: a destination (or a parent) that is a symlink is written through;
/// one file copied to a path the image has as a directory goes into it;
/// directories the image already has (the destination, its parents, a
/// directory the source tree also has) are left as they are; the missing
/// ones are created 0755, owned by `--chown`'s owner or root. Copied
/// entries keep their source's mode and owner unless `--chown`/`--chmod`
/// say otherwise. `extra_dirs` are directories that must exist (ADD's
/// extraction targets) though nothing is planned in them.
pub(crate) fn place(
    planned: &[Planned],
    dest: &str,
    image: &crate::listing::Listing,
    stamp: &Stamp,
    meta_of: &dyn Fn(&Planned) -> Result<SourceMeta, CopyError>,
) -> Result<Vec<Placed>, CopyError> {
    let dest_rel = normalize(dest).unwrap_or_default();
    let real_dest = image.resolve(&dest_rel, true);
    let into_dir = matches!(planned, [one] if one.kind != Kind::Dir && one.dest == dest_rel && !dest_rel.is_empty())
        && image.is_dir(&real_dest);
    let mut out: BTreeMap<String, Placed> = BTreeMap::new();
    for p in planned {
        let rebased = if p.dest == dest_rel {
            if into_dir {
                let name = p
                    .source
                    .file_name()
                    .map(|n| n.to_string_lossy().into_owned())
                    .unwrap_or_default();
                join_rel(&real_dest, &name)
            } else {
                real_dest.clone()
            }
        } else {
            let tail = if dest_rel.is_empty() {
                p.dest.as_str()
            } else {
                p.dest
                    .strip_prefix(&format!("{dest_rel}/"))
                    .unwrap_or(&p.dest)
            };
            join_rel(&real_dest, tail)
        };
        // Parents resolved through the image's links; a directory the
        // image has already (or a link to one) is kept, not rewritten.
        let (parent, name) = match rebased.rsplit_once('/') {
            Some((d, n)) => (image.resolve(d, true), n.to_string()),
            None => (String::new(), rebased.clone()),
        };
        let path = join_rel(&parent, &name);
        if p.kind == Kind::Dir && image.is_dir(&image.resolve(&path, true)) {
            continue;
        }
        let mut meta = meta_of(p)?;
        if p.kind == Kind::Symlink {
            meta.mode = 0o777;
        } else if let Some(m) = stamp.chmod {
            meta.mode = m;
        }
        if let Some((u, g)) = stamp.chown {
            meta.uid = u;
            meta.gid = g;
        }
        out.insert(
            path.clone(),
            Placed {
                path,
                kind: p.kind,
                source: Some(p.source.clone()),
                meta,
            },
        );
    }
    let mut needed: Vec<String> = out
        .keys()
        .filter_map(|k| k.rsplit_once('/').map(|(d, _)| d.to_string()))
        .collect();
    if planned.is_empty() || planned.iter().any(|p| p.dest != dest_rel) {
        needed.push(real_dest.clone());
    }
    let (uid, gid) = stamp.chown.unwrap_or((0, 0));
    for dir in needed {
        let mut at = String::new();
        for part in dir.split('/').filter(|p| !p.is_empty()) {
            at = join_rel(&at, part);
            if out.contains_key(&at) || image.get(&at).is_some() {
                continue;
            }
            out.insert(
                at.clone(),
                Placed {
                    path: at.clone(),
                    kind: Kind::Dir,
                    source: None,
                    meta: SourceMeta {
                        mode: 0o755,
                        uid,
                        gid,
                        xattrs: Vec::new(),
                    },
                },
            );
        }
    }
    Ok(out.into_values().collect())
}

fn join_rel(a: &str, b: &str) -> String {
    match (a.is_empty(), b.is_empty()) {
        (true, _) => b.to_string(),
        (_, true) => a.to_string(),
        _ => format!("{a}/{b}"),
    }
}

/// A digest of what the layer will hold: paths, kinds, modes, link targets
/// and file contents. The COPY's cache key: touching a file without
/// changing it keeps the key.
pub(crate) fn content_key(planned: &[Planned]) -> Result<String, CopyError> {
    let mut h = Sha256::new();
    for p in planned {
        h.update(p.dest.as_bytes());
        h.update([0, p.kind as u8]);
        match p.kind {
            Kind::Dir => {}
            Kind::Symlink => {
                let target =
                    std::fs::read_link(&p.source).map_err(io_err("reading link", &p.source))?;
                h.update(target.as_os_str().as_encoded_bytes());
            }
            Kind::File => {
                let mut f = File::open(&p.source).map_err(io_err("opening", &p.source))?;
                let mode = f
                    .metadata()
                    .map_err(io_err("reading metadata of", &p.source))?
                    .permissions()
                    .mode();
                h.update(mode.to_le_bytes());
                let mut buf = vec![0u8; 64 * 1024];
                loop {
                    let n = f.read(&mut buf).map_err(io_err("reading", &p.source))?;
                    if n == 0 {
                        break;
                    }
                    h.update(&buf[..n]);
                }
            }
        }
        h.update([0xff]);
    }
    Ok(hex(&h.finalize()))
}

/// Writes the placed entries into a layer tar, parents first, every entry
/// stamped with `mtime`; the archive stays open so more entries can
/// follow (ADD's extracted archives).
pub(crate) fn write_placed<W: Write>(
    placed: &[Placed],
    mtime: u64,
    out: W,
) -> Result<tar::Builder<W>, CopyError> {
    let mut tar = tar::Builder::new(out);
    for p in placed {
        let mut h = tar::Header::new_gnu();
        h.set_mode(p.meta.mode);
        h.set_mtime(mtime);
        h.set_uid(p.meta.uid);
        h.set_gid(p.meta.gid);
        h.set_size(0);
        let fail = || {
            io_err(
                "archiving",
                p.source.as_deref().unwrap_or(Path::new(&p.path)),
            )
        };
        kiln_rootfs::xattr::append_pax(&mut tar, &p.meta.xattrs).map_err(fail())?;
        let fail = fail();
        match (p.kind, &p.source) {
            (Kind::Dir, _) | (_, None) => {
                h.set_entry_type(tar::EntryType::Directory);
                tar.append_data(&mut h, format!("{}/", p.path), io::empty())
                    .map_err(fail)?;
            }
            (Kind::Symlink, Some(src)) => {
                let target = std::fs::read_link(src).map_err(io_err("reading link", src))?;
                h.set_entry_type(tar::EntryType::Symlink);
                tar.append_link(&mut h, &p.path, target).map_err(fail)?;
            }
            (Kind::File, Some(src)) => {
                let f = File::open(src).map_err(io_err("opening", src))?;
                let len = f
                    .metadata()
                    .map_err(io_err("reading metadata of", src))?
                    .len();
                h.set_entry_type(tar::EntryType::Regular);
                h.set_size(len);
                tar.append_data(&mut h, &p.path, f.take(len))
                    .map_err(fail)?;
            }
        }
    }
    Ok(tar)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tree() -> (tempfile::TempDir, Tree) {
        let dir = tempfile::tempdir().unwrap();
        let r = dir.path();
        std::fs::create_dir_all(r.join("src/pkg")).unwrap();
        std::fs::write(r.join("src/a.py"), "a").unwrap();
        std::fs::write(r.join("src/pkg/b.py"), "b").unwrap();
        std::fs::write(r.join("README.md"), "r").unwrap();
        std::fs::write(r.join("x.txt"), "x").unwrap();
        std::fs::write(r.join("y.txt"), "y").unwrap();
        let t = Tree::walk(r, "the build context", |rel, _| rel == "README.md").unwrap();
        (dir, t)
    }

    fn dests(p: &[Planned]) -> Vec<&str> {
        p.iter().map(|p| p.dest.as_str()).collect()
    }

    #[test]
    fn a_directory_copies_its_contents() {
        let (_d, t) = tree();
        let p = plan(&t, &["src".into()], "/app").unwrap();
        assert_eq!(dests(&p), ["app/a.py", "app/pkg", "app/pkg/b.py"]);
    }

    #[test]
    fn one_file_to_a_file_path_or_into_a_directory() {
        let (_d, t) = tree();
        assert_eq!(
            dests(&plan(&t, &["x.txt".into()], "/etc/conf").unwrap()),
            ["etc/conf"]
        );
        assert_eq!(
            dests(&plan(&t, &["./x.txt".into()], "/etc/").unwrap()),
            ["etc/x.txt"]
        );
    }

    #[test]
    fn globs_and_several_sources_land_in_a_directory() {
        let (_d, t) = tree();
        let p = plan(&t, &["*.txt".into()], "/data").unwrap();
        assert_eq!(dests(&p), ["data/x.txt", "data/y.txt"]);
        let p = plan(&t, &["x.txt".into(), "src/a.py".into()], "/d").unwrap();
        assert_eq!(dests(&p), ["d/a.py", "d/x.txt"]);
    }

    #[test]
    fn missing_ignored_and_escaping_sources_are_errors() {
        let (_d, t) = tree();
        let err = plan(&t, &["README.md".into()], "/").unwrap_err();
        assert!(
            err.to_string().contains("not found in the build context"),
            "{err}"
        );
        assert!(matches!(
            plan(&t, &["nope*".into()], "/").unwrap_err(),
            CopyError::NotFound { .. }
        ));
        assert!(matches!(
            plan(&t, &["../etc/passwd".into()], "/").unwrap_err(),
            CopyError::Outside(_)
        ));
    }

    #[test]
    fn the_key_follows_content_not_mtime() {
        let (d, t) = tree();
        let p = plan(&t, &["src".into()], "/app").unwrap();
        let k1 = content_key(&p).unwrap();
        std::fs::write(d.path().join("src/a.py"), "a").unwrap();
        assert_eq!(content_key(&p).unwrap(), k1);
        std::fs::write(d.path().join("src/a.py"), "changed").unwrap();
        assert_ne!(content_key(&p).unwrap(), k1);
    }

    fn tar_entries(placed: &[Placed]) -> Vec<(String, u64, u32)> {
        let bytes = write_placed(placed, 0, Vec::new())
            .unwrap()
            .into_inner()
            .unwrap();
        let mut archive = tar::Archive::new(&bytes[..]);
        archive
            .entries()
            .unwrap()
            .map(|e| {
                let e = e.unwrap();
                let h = e.header();
                (
                    e.path().unwrap().to_string_lossy().into_owned(),
                    h.uid().unwrap(),
                    h.mode().unwrap(),
                )
            })
            .collect()
    }

    fn image(entries: &[(&str, crate::listing::EntryKind, u32, Option<&str>)]) -> Listing {
        let mut l = Listing::default();
        l.apply(&crate::listing::LayerListing {
            entries: entries
                .iter()
                .map(|(p, k, mode, link)| {
                    (
                        p.to_string(),
                        crate::listing::Meta {
                            kind: *k,
                            mode: *mode,
                            uid: 0,
                            gid: 0,
                            link: link.map(String::from),
                            xattrs: Vec::new(),
                        },
                    )
                })
                .collect(),
            ..Default::default()
        });
        l
    }

    fn paths(p: &[Placed]) -> Vec<&str> {
        p.iter().map(|p| p.path.as_str()).collect()
    }

    use crate::listing::{EntryKind as E, Listing};

    #[test]
    fn the_tar_has_parents_owner_and_mode() {
        let (_d, t) = tree();
        let p = plan(&t, &["src/pkg/b.py".into()], "/opt/app/").unwrap();
        let stamp = Stamp {
            chown: Some((1000, 1000)),
            chmod: Some(0o640),
            mtime: 0,
        };
        let placed = place(&p, "/opt/app/", &Listing::default(), &stamp, &context_meta).unwrap();
        assert_eq!(
            tar_entries(&placed),
            vec![
                ("opt/".to_string(), 1000, 0o755),
                ("opt/app/".to_string(), 1000, 0o755),
                ("opt/app/b.py".to_string(), 1000, 0o640),
            ]
        );
    }

    #[test]
    fn a_file_copied_to_a_path_by_name_has_only_its_parents_as_directories() {
        let (_d, t) = tree();
        let p = plan(&t, &["src/pkg/b.py".into()], "/etc/x").unwrap();
        let placed = place(
            &p,
            "/etc/x",
            &Listing::default(),
            &Stamp::default(),
            &context_meta,
        )
        .unwrap();
        assert_eq!(paths(&placed), ["etc", "etc/x"]);
    }

    #[test]
    fn parents_the_image_has_are_left_alone_and_a_file_goes_into_an_existing_directory() {
        let (_d, t) = tree();
        let img = image(&[("tmp", E::Dir, 0o1777, None), ("etc", E::Dir, 0o755, None)]);
        let p = plan(&t, &["x.txt".into()], "/tmp/new/").unwrap();
        let placed = place(&p, "/tmp/new/", &img, &Stamp::default(), &context_meta).unwrap();
        assert_eq!(paths(&placed), ["tmp/new", "tmp/new/x.txt"]);
        let p = plan(&t, &["x.txt".into()], "/etc").unwrap();
        let placed = place(&p, "/etc", &img, &Stamp::default(), &context_meta).unwrap();
        assert_eq!(paths(&placed), ["etc/x.txt"]);
    }

    #[test]
    fn links_on_the_way_are_written_through() {
        let (_d, t) = tree();
        let img = image(&[
            ("usr", E::Dir, 0o755, None),
            ("usr/lib", E::Dir, 0o755, None),
            ("lib", E::Symlink, 0o777, Some("usr/lib")),
            ("opt", E::Dir, 0o755, None),
            ("opt/real", E::Dir, 0o755, None),
            ("opt/link", E::Symlink, 0o777, Some("/opt/real")),
        ]);
        let p = plan(&t, &["x.txt".into()], "/opt/link/").unwrap();
        let placed = place(&p, "/opt/link/", &img, &Stamp::default(), &context_meta).unwrap();
        assert_eq!(paths(&placed), ["opt/real/x.txt"]);
        // A directory source whose `pkg` lands on `lib` (a link to a
        // directory): its content goes through the link.
        let p = plan(&t, &["src".into()], "/lib/py").unwrap();
        let placed = place(&p, "/lib/py", &img, &Stamp::default(), &context_meta).unwrap();
        assert_eq!(
            paths(&placed),
            [
                "usr/lib/py",
                "usr/lib/py/a.py",
                "usr/lib/py/pkg",
                "usr/lib/py/pkg/b.py"
            ]
        );
    }

    #[test]
    fn a_glob_matching_nothing_is_an_error_only_when_nothing_matches() {
        let (_d, t) = tree();
        let p = plan(&t, &["nothing*".into(), "*.txt".into()], "/d/").unwrap();
        assert_eq!(dests(&p), ["d/x.txt", "d/y.txt"]);
        let err = plan(&t, &["nothing*".into(), "none?".into()], "/d/").unwrap_err();
        assert!(err.to_string().contains("nothing*"), "{err}");
    }

    #[test]
    fn a_symlink_named_as_a_source_is_followed_inside_the_tree_only() {
        let (d, _) = tree();
        let r = d.path();
        std::os::unix::fs::symlink("x.txt", r.join("to-file")).unwrap();
        std::os::unix::fs::symlink("/src", r.join("to-dir")).unwrap();
        std::os::unix::fs::symlink("/etc/passwd", r.join("out")).unwrap();
        let t = Tree::walk(r, "the build context", |_, _| false).unwrap();
        let p = plan(&t, &["to-file".into()], "/etc/").unwrap();
        assert_eq!((p[0].dest.as_str(), p[0].kind), ("etc/to-file", Kind::File));
        assert_eq!(p[0].source, r.join("x.txt"));
        let p = plan(&t, &["to-dir".into()], "/app").unwrap();
        assert_eq!(dests(&p), ["app/a.py", "app/pkg", "app/pkg/b.py"]);
        // Outside the tree (the host's /etc/passwd): copied as the link.
        let p = plan(&t, &["out".into()], "/x").unwrap();
        assert_eq!(p[0].kind, Kind::Symlink);
    }

    #[test]
    fn parents_keep_paths_and_exclude_leaves_entries_out() {
        let (_d, t) = tree();
        let ignore = crate::layer::DockerIgnore::parse("*.txt\nsrc/pkg").unwrap();
        let p = plan_with(
            &t,
            &["src".into()],
            "/s/",
            &PlanOptions {
                exclude: Some(&crate::layer::DockerIgnore::parse("pkg").unwrap()),
                ..PlanOptions::default()
            },
        )
        .unwrap();
        assert_eq!(dests(&p), ["s/a.py"]);
        let opts = PlanOptions {
            exclude: Some(&ignore),
            ..PlanOptions::default()
        };
        let p = plan_with(&t, &[".".into()], "/all/", &opts).unwrap();
        assert_eq!(dests(&p), ["all/src", "all/src/a.py"]);
        let opts = PlanOptions {
            parents: true,
            ..PlanOptions::default()
        };
        let p = plan_with(
            &t,
            &["src/pkg/b.py".into(), "./src/./pkg".into()],
            "/p/",
            &opts,
        )
        .unwrap();
        assert_eq!(dests(&p), ["p/pkg/b.py", "p/src/pkg/b.py"]);
    }
}
