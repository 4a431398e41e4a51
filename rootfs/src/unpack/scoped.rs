//! Path resolution confined to a root directory: a path means what it would
//! mean to a process chrooted there (symlinks followed, absolute symlinks
//! restart at the root, `..` stops at the root), so no lookup ever leaves it.

use std::collections::VecDeque;
use std::ffi::{OsStr, OsString};
use std::io;
use std::path::{Component, Path, PathBuf};

/// Symlinks followed in one resolution before giving up (Linux's limit).
const MAX_SYMLINKS: usize = 40;

/// Where a path inside a root lands on the host.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Resolved {
    /// Host path: the root joined with the resolved components. Every
    /// existing component of it is a real directory (or, for the last one, a
    /// non-symlink unless it was not followed), never a symlink.
    pub host_path: PathBuf,
    /// The resolved path relative to the root.
    pub relative: PathBuf,
    /// How many trailing components of `relative` do not exist yet (0: it
    /// exists). They can be created one by one without following anything.
    pub missing: usize,
}

/// Resolves `path` (absolute or relative, interpreted inside `root`) the way
/// the kernel would after `chroot(root)`, but never following a symlink out of
/// `root`. With `follow_last` false a final symlink is not followed (as for
/// `lstat`, `unlink` or creating an entry in its place).
///
/// Fails with `NotADirectory` when a middle component is a file and with
/// `ELOOP` after too many symlinks. Safe when nothing else modifies
/// the tree meanwhile (the unpacker and the sandbox set-up are the only
/// writers at that time).
pub fn resolve_in_root(root: &Path, path: &Path, follow_last: bool) -> io::Result<Resolved> {
    let mut pending: VecDeque<OsString> = components(path).collect();
    let mut stack: Vec<OsString> = Vec::new();
    let mut missing = 0usize;
    let mut links = 0usize;
    while let Some(c) = pending.pop_front() {
        if c == ".." {
            if stack.pop().is_some() && missing > 0 {
                missing -= 1;
            }
            continue;
        }
        if missing > 0 {
            // Below a missing directory nothing exists to follow.
            stack.push(c);
            missing += 1;
            continue;
        }
        let is_last = pending.is_empty();
        let mut candidate = root.to_path_buf();
        candidate.extend(&stack);
        candidate.push(&c);
        match std::fs::symlink_metadata(&candidate) {
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                stack.push(c);
                missing = 1;
            }
            Err(e) => return Err(e),
            Ok(meta) if meta.file_type().is_symlink() && (!is_last || follow_last) => {
                links += 1;
                if links > MAX_SYMLINKS {
                    // ELOOP, as the kernel reports it.
                    return Err(rustix::io::Errno::LOOP.into());
                }
                let target = std::fs::read_link(&candidate)?;
                if target.is_absolute() {
                    stack.clear();
                }
                for t in components(&target).collect::<Vec<_>>().into_iter().rev() {
                    pending.push_front(t);
                }
            }
            Ok(meta) => {
                if !is_last && !meta.is_dir() {
                    return Err(io::Error::new(
                        io::ErrorKind::NotADirectory,
                        format!("{} is not a directory", candidate.display()),
                    ));
                }
                stack.push(c);
            }
        }
    }
    let relative: PathBuf = stack.iter().collect();
    Ok(Resolved {
        host_path: root.join(&relative),
        relative,
        missing,
    })
}

/// The normal components of `path` plus `..`, dropping `/` and `.`.
fn components(path: &Path) -> impl Iterator<Item = OsString> + '_ {
    path.components().filter_map(|c| match c {
        Component::Normal(n) => Some(n.to_os_string()),
        Component::ParentDir => Some(OsStr::new("..").to_os_string()),
        Component::RootDir | Component::CurDir | Component::Prefix(_) => None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::symlink;

    fn tree() -> tempfile::TempDir {
        let d = tempfile::tempdir().unwrap();
        let r = d.path();
        std::fs::create_dir_all(r.join("usr/lib")).unwrap();
        std::fs::write(r.join("usr/lib/f"), "x").unwrap();
        symlink("usr/lib", r.join("lib")).unwrap();
        symlink("/", r.join("toroot")).unwrap();
        symlink("../../../..", r.join("up")).unwrap();
        symlink("/usr/lib/f", r.join("abs")).unwrap();
        symlink("loop2", r.join("loop1")).unwrap();
        symlink("loop1", r.join("loop2")).unwrap();
        d
    }

    fn rel(r: &Path, p: &str, follow: bool) -> (String, usize) {
        let x = resolve_in_root(r, Path::new(p), follow).unwrap();
        assert!(x.host_path.starts_with(r));
        (x.relative.to_string_lossy().into_owned(), x.missing)
    }

    #[test]
    fn follows_symlinks_inside_the_root() {
        let d = tree();
        let r = d.path();
        assert_eq!(rel(r, "lib/f", false), ("usr/lib/f".into(), 0));
        assert_eq!(
            rel(r, "/lib/new/deeper", false),
            ("usr/lib/new/deeper".into(), 2)
        );
        assert_eq!(rel(r, "abs", true), ("usr/lib/f".into(), 0));
        assert_eq!(rel(r, "abs", false), ("abs".into(), 0));
    }

    #[test]
    fn never_leaves_the_root() {
        let d = tree();
        let r = d.path();
        assert_eq!(rel(r, "toroot/etc/evil", false), ("etc/evil".into(), 2));
        assert_eq!(rel(r, "up/evil", false), ("evil".into(), 1));
        assert_eq!(rel(r, "../../etc/evil", false), ("etc/evil".into(), 2));
        assert_eq!(rel(r, "/", false), (String::new(), 0));
        assert_eq!(rel(r, "missing/../usr", false), ("usr".into(), 0));
    }

    #[test]
    fn reports_loops_and_files_in_the_middle() {
        let d = tree();
        let r = d.path();
        let e = resolve_in_root(r, Path::new("loop1/x"), false).unwrap_err();
        assert_eq!(
            e.raw_os_error(),
            Some(rustix::io::Errno::LOOP.raw_os_error())
        );
        let e = resolve_in_root(r, Path::new("usr/lib/f/x"), false).unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::NotADirectory);
    }
}
