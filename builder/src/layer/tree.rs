//! A file tree given entry by entry (a path in the image, what goes there,
//! its mode), for layers that are not a copy of one directory: the
//! orchestrator image's root (a binary, its libraries, a few files kiln
//! writes). Written by the layers' one tar writer, so the tar is as
//! deterministic as the code layer's: byte-ordered paths with every
//! directory before what it holds, mtime and owner from [`TarOptions`]
//! (0 and root by default), the modes given here.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};

use super::archive::TarWriter;
use super::{LayerError, TarOptions};

/// What one path of a [`FileTree`] holds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TreeEntry {
    /// A directory.
    Dir {
        /// Permission bits (`0o1777` for `/tmp`).
        mode: u32,
    },
    /// A regular file with the bytes of a file on this machine, read when
    /// the tar is written (symlinks followed: the image gets the bytes,
    /// whatever links led to them here).
    Copy {
        /// Where it is read from.
        source: PathBuf,
        /// Permission bits.
        mode: u32,
    },
    /// A regular file with the given content.
    Bytes {
        /// Its content.
        content: Vec<u8>,
        /// Permission bits.
        mode: u32,
    },
}

/// The entries of a layer by path relative to the image root (`etc/passwd`,
/// no leading or trailing `/`), in byte order; parents are added as
/// directories when an entry is. The tar is a function of the entries
/// alone: where a copied file lives on this machine never shows.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FileTree {
    entries: BTreeMap<String, TreeEntry>,
}

impl FileTree {
    /// An empty tree.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds `entry` at `path` and a `0o755` directory for each missing
    /// parent. The first entry for a path wins (a parent added implicitly
    /// counts), so callers add what must not be overridden first. A path
    /// with an empty, `.` or `..` component is refused: `false`, nothing
    /// added.
    pub fn add(&mut self, path: &str, entry: TreeEntry) -> bool {
        let parts: Vec<&str> = path.split('/').collect();
        if parts.iter().any(|p| matches!(*p, "" | "." | "..")) {
            return false;
        }
        let mut parent = String::new();
        if let Some((_, dirs)) = parts.split_last() {
            for dir in dirs {
                if !parent.is_empty() {
                    parent.push('/');
                }
                parent.push_str(dir);
                self.entries
                    .entry(parent.clone())
                    .or_insert(TreeEntry::Dir { mode: 0o755 });
            }
        }
        self.entries.entry(path.to_string()).or_insert(entry);
        true
    }

    /// The entries in tar order.
    pub fn entries(&self) -> impl Iterator<Item = (&str, &TreeEntry)> {
        self.entries
            .iter()
            .map(|(path, entry)| (path.as_str(), entry))
    }

    /// Writes the tree as a tar to `out` and returns it; owner and mtime
    /// from `opts` (`opts.dest` is not used: paths are from the root).
    /// Copied files are streamed; one that changes size while it is read
    /// fails with [`LayerError::FileChanged`].
    pub fn write_tar<W: Write>(&self, out: W, opts: &TarOptions) -> Result<W, LayerError> {
        let mut tar = TarWriter::new(out, opts);
        for (path, entry) in &self.entries {
            let at = Path::new(path);
            match entry {
                TreeEntry::Dir { mode } => tar.dir(Path::new(&format!("{path}/")), *mode, at)?,
                TreeEntry::Bytes { content, mode } => tar.bytes(at, content, *mode, at)?,
                TreeEntry::Copy { source, mode } => tar.file(at, source, Some(*mode))?,
            }
        }
        tar.finish(Path::new("/"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parents_are_added_and_the_first_entry_wins() {
        let mut tree = FileTree::new();
        assert!(tree.add("tmp", TreeEntry::Dir { mode: 0o1777 }));
        assert!(tree.add(
            "usr/local/bin/x",
            TreeEntry::Bytes {
                content: b"x".to_vec(),
                mode: 0o755,
            }
        ));
        assert!(tree.add("usr", TreeEntry::Dir { mode: 0o700 }));
        assert!(tree.add("tmp/a", TreeEntry::Dir { mode: 0o700 }));
        let shown: Vec<(&str, u32)> = tree
            .entries()
            .map(|(path, entry)| {
                let mode = match entry {
                    TreeEntry::Dir { mode }
                    | TreeEntry::Copy { mode, .. }
                    | TreeEntry::Bytes { mode, .. } => *mode,
                };
                (path, mode)
            })
            .collect();
        assert_eq!(
            shown,
            [
                ("tmp", 0o1777),
                ("tmp/a", 0o700),
                ("usr", 0o755),
                ("usr/local", 0o755),
                ("usr/local/bin", 0o755),
                ("usr/local/bin/x", 0o755),
            ]
        );
    }

    #[test]
    fn paths_that_climb_or_are_not_plain_are_refused() {
        let mut tree = FileTree::new();
        let dir = || TreeEntry::Dir { mode: 0o755 };
        for bad in ["", "/etc", "etc/", "a/../b", "./a", "a//b"] {
            assert!(!tree.add(bad, dir()), "{bad:?}");
        }
        assert_eq!(tree.entries().count(), 0);
    }

    #[test]
    fn a_copied_file_that_is_gone_names_it() {
        let mut tree = FileTree::new();
        tree.add(
            "bin/x",
            TreeEntry::Copy {
                source: "/nonexistent/kiln-test".into(),
                mode: 0o755,
            },
        );
        let err = tree.write_tar(Vec::new(), &TarOptions::default());
        assert!(
            matches!(&err, Err(LayerError::Io { action: "opening", path, .. })
                if path == Path::new("/nonexistent/kiln-test")),
            "{err:?}"
        );
    }
}
