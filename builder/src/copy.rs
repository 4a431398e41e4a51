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
pub enum CopyError {
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
pub enum Kind {
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
pub struct Tree {
    root: PathBuf,
    entries: BTreeMap<String, Kind>,
    place: String,
}

impl Tree {
    /// Every file under `root`, except the relative paths `skip` rejects.
    pub fn walk(
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

/// One entry of the layer: where it comes from and where it lands.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Planned {
    /// The host file.
    pub source: PathBuf,
    /// Path in the image, relative to `/`, no trailing slash.
    pub dest: String,
    /// Its kind.
    pub kind: Kind,
}

/// Plans a COPY of `sources` to `dest` (already absolute) from `tree`:
/// a directory source copies its contents; several sources, a directory
/// source or a `dest` ending in `/` make `dest` a directory.
pub fn plan(tree: &Tree, sources: &[String], dest: &str) -> Result<Vec<Planned>, CopyError> {
    let mut matched: Vec<(String, Kind)> = Vec::new();
    for raw in sources {
        let pattern = normalize(raw).ok_or_else(|| CopyError::Outside(raw.clone()))?;
        if pattern.is_empty() {
            matched.push((String::new(), Kind::Dir));
            continue;
        }
        if pattern.contains(['*', '?', '[']) {
            let glob = matcher(&pattern)?;
            let before = matched.len();
            for (rel, kind) in &tree.entries {
                if glob.is_match(rel) {
                    matched.push((rel.clone(), *kind));
                }
            }
            if matched.len() == before {
                return Err(CopyError::NotFound {
                    source_path: raw.clone(),
                    place: tree.place.clone(),
                });
            }
        } else {
            match tree.entries.get(&pattern) {
                Some(kind) => matched.push((pattern, *kind)),
                None => {
                    return Err(CopyError::NotFound {
                        source_path: raw.clone(),
                        place: tree.place.clone(),
                    });
                }
            }
        }
    }
    let dest_rel = dest
        .trim_start_matches('/')
        .trim_end_matches('/')
        .to_string();
    let as_dir =
        dest.ends_with('/') || matched.len() > 1 || matched.iter().any(|(_, k)| *k == Kind::Dir);
    let join = |a: &str, b: &str| match (a.is_empty(), b.is_empty()) {
        (true, _) => b.to_string(),
        (_, true) => a.to_string(),
        _ => format!("{a}/{b}"),
    };
    let mut out: BTreeMap<String, Planned> = BTreeMap::new();
    for (rel, kind) in matched {
        if kind == Kind::Dir {
            // The directory's contents, not the directory itself.
            let prefix = if rel.is_empty() {
                String::new()
            } else {
                format!("{rel}/")
            };
            for (sub, k) in tree.entries.range(prefix.clone()..) {
                let Some(tail) = sub.strip_prefix(&prefix) else {
                    break;
                };
                out.insert(
                    join(&dest_rel, tail),
                    Planned {
                        source: tree.root.join(sub),
                        dest: join(&dest_rel, tail),
                        kind: *k,
                    },
                );
            }
        } else {
            let target = if as_dir {
                let base = rel.rsplit('/').next().unwrap_or(&rel);
                join(&dest_rel, base)
            } else {
                dest_rel.clone()
            };
            out.insert(
                target.clone(),
                Planned {
                    source: tree.root.join(&rel),
                    dest: target,
                    kind,
                },
            );
        }
    }
    Ok(out.into_values().collect())
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
pub struct Stamp {
    /// Owner (`--chown`), numeric.
    pub uid: u64,
    /// Group.
    pub gid: u64,
    /// `--chmod`: replaces every entry's mode.
    pub chmod: Option<u32>,
    /// Every entry's mtime (fixed for reproducible layers).
    pub mtime: u64,
}

/// A digest of what the layer will hold: paths, kinds, modes, link targets
/// and file contents. The COPY's cache key: touching a file without
/// changing it keeps the key.
pub fn content_key(planned: &[Planned]) -> Result<String, CopyError> {
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

/// Writes the layer tar: `dest`'s missing parents (root-owned, 0755), then
/// every planned entry with the stamp's owner, mode and mtime.
pub fn write_tar<W: Write>(
    planned: &[Planned],
    dest: &str,
    stamp: &Stamp,
    out: W,
) -> Result<W, CopyError> {
    write_tar_open(planned, dest, stamp, out)?
        .into_inner()
        .map_err(io_err("archiving", Path::new(dest)))
}

/// As [`write_tar`], leaving the archive open so more entries can follow
/// (ADD's extracted archives).
pub fn write_tar_open<W: Write>(
    planned: &[Planned],
    dest: &str,
    stamp: &Stamp,
    out: W,
) -> Result<tar::Builder<W>, CopyError> {
    let mut tar = tar::Builder::new(out);
    let fail = |path: &Path| io_err("archiving", path);
    let header = |kind: tar::EntryType, mode: u32, owned: bool| {
        let mut h = tar::Header::new_gnu();
        h.set_entry_type(kind);
        h.set_mode(mode);
        h.set_mtime(stamp.mtime);
        let (uid, gid) = if owned {
            (stamp.uid, stamp.gid)
        } else {
            (0, 0)
        };
        h.set_uid(uid);
        h.set_gid(gid);
        h.set_size(0);
        h
    };
    let dest_rel = dest.trim_start_matches('/').trim_end_matches('/');
    // DEST is a directory unless a file or link is copied to it by name:
    // then only its parents are (`COPY x /etc/x` has no directory etc/x/).
    let parts: Vec<&str> = dest_rel.split('/').filter(|p| !p.is_empty()).collect();
    let dest_is_file = planned
        .iter()
        .any(|p| p.dest == dest_rel && p.kind != Kind::Dir);
    let dirs = if dest_is_file {
        &parts[..parts.len().saturating_sub(1)]
    } else {
        &parts[..]
    };
    let mut parent = String::new();
    let mut written: std::collections::HashSet<String> = std::collections::HashSet::new();
    for part in dirs {
        parent.push_str(part);
        parent.push('/');
        let mut h = header(tar::EntryType::Directory, 0o755, false);
        tar.append_data(&mut h, &parent, io::empty())
            .map_err(fail(Path::new(dest)))?;
        written.insert(parent.trim_end_matches('/').to_string());
    }
    for p in planned {
        // Parents of nested entries that the plan does not list (a file
        // copied to a new directory) come first.
        let mut prefix = String::new();
        let parts: Vec<&str> = p.dest.split('/').collect();
        for part in &parts[..parts.len().saturating_sub(1)] {
            if !prefix.is_empty() {
                prefix.push('/');
            }
            prefix.push_str(part);
            if written.insert(prefix.clone()) {
                let mut h = header(tar::EntryType::Directory, 0o755, false);
                tar.append_data(&mut h, format!("{prefix}/"), io::empty())
                    .map_err(fail(&p.source))?;
            }
        }
        written.insert(p.dest.clone());
        match p.kind {
            Kind::Dir => {
                let mode = stamp.chmod.unwrap_or(0o755);
                let mut h = header(tar::EntryType::Directory, mode, true);
                tar.append_data(&mut h, format!("{}/", p.dest), io::empty())
                    .map_err(fail(&p.source))?;
            }
            Kind::Symlink => {
                let target =
                    std::fs::read_link(&p.source).map_err(io_err("reading link", &p.source))?;
                let mut h = header(tar::EntryType::Symlink, 0o777, true);
                tar.append_link(&mut h, &p.dest, target)
                    .map_err(fail(&p.source))?;
            }
            Kind::File => {
                let f = File::open(&p.source).map_err(io_err("opening", &p.source))?;
                let meta = f
                    .metadata()
                    .map_err(io_err("reading metadata of", &p.source))?;
                let mode = stamp.chmod.unwrap_or(meta.permissions().mode() & 0o7777);
                let mut h = header(tar::EntryType::Regular, mode, true);
                h.set_size(meta.len());
                tar.append_data(&mut h, &p.dest, f.take(meta.len()))
                    .map_err(fail(&p.source))?;
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

    #[test]
    fn the_tar_has_parents_owner_and_mode() {
        let (_d, t) = tree();
        let p = plan(&t, &["src/pkg/b.py".into()], "/opt/app/").unwrap();
        let stamp = Stamp {
            uid: 1000,
            gid: 1000,
            chmod: Some(0o640),
            mtime: 0,
        };
        let bytes = write_tar(&p, "/opt/app/", &stamp, Vec::new()).unwrap();
        let mut archive = tar::Archive::new(&bytes[..]);
        let entries: Vec<(String, u64, u32)> = archive
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
            .collect();
        assert_eq!(
            entries,
            vec![
                ("opt/".to_string(), 0, 0o755),
                ("opt/app/".to_string(), 0, 0o755),
                ("opt/app/b.py".to_string(), 1000, 0o640),
            ]
        );
    }

    #[test]
    fn a_file_copied_to_a_path_by_name_has_only_its_parents_as_directories() {
        let (_d, t) = tree();
        let p = plan(&t, &["src/pkg/b.py".into()], "/etc/x").unwrap();
        let stamp = Stamp {
            uid: 0,
            gid: 0,
            chmod: None,
            mtime: 0,
        };
        let bytes = write_tar(&p, "/etc/x", &stamp, Vec::new()).unwrap();
        let mut archive = tar::Archive::new(&bytes[..]);
        let names: Vec<String> = archive
            .entries()
            .unwrap()
            .map(|e| e.unwrap().path().unwrap().to_string_lossy().into_owned())
            .collect();
        assert_eq!(names, vec!["etc/".to_string(), "etc/x".to_string()]);
    }
}
