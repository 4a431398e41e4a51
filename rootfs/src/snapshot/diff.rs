//! Compares two manifests of the same root: what was added, modified,
//! deleted, or deleted and recreated (an opaque directory). Pure.

use std::collections::{BTreeMap, HashSet};
use std::path::{Path, PathBuf};

use super::manifest::{Kind, Manifest};

/// How one path changed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Change {
    /// New (or replaced by another kind of entry: the upper entry then hides
    /// the lower one, no whiteout needed).
    Added,
    /// Same path and kind, different content or metadata.
    Modified,
    /// Gone: written as a `.wh.NAME` whiteout.
    Deleted,
    /// A directory that was deleted and created again (new inode): written
    /// with an opaque marker, and its whole current content is in the layer.
    Recreated,
}

/// The changes between `before` and `after`, sorted by path. A deletion is
/// listed only at its topmost path (not for children of a deleted,
/// replaced or recreated directory); every entry below a recreated directory
/// is listed as added.
pub fn compare(before: &Manifest, after: &Manifest) -> BTreeMap<PathBuf, Change> {
    let mut out = BTreeMap::new();
    let mut recreated: Vec<PathBuf> = Vec::new();
    for (path, a) in after.iter() {
        let change = match before.get(path) {
            None => Some(Change::Added),
            Some(b) if b.kind != a.kind => Some(Change::Added),
            Some(b) if a.kind == Kind::Dir && b.recreated(a) => {
                recreated.push(path.clone());
                Some(Change::Recreated)
            }
            Some(b) if b.changed(a) => Some(Change::Modified),
            Some(_) => None,
        };
        if let Some(c) = change {
            out.insert(path.clone(), c);
        }
    }
    // Everything below a recreated directory belongs to the layer.
    let recreated_set: HashSet<&Path> = recreated.iter().map(PathBuf::as_path).collect();
    for (path, _) in after.iter() {
        if has_ancestor_in(path, &recreated_set) {
            out.entry(path.clone()).or_insert(Change::Added);
        }
    }
    for (path, _) in before.iter() {
        if after.get(path).is_some() {
            continue;
        }
        // Covered by a deleted ancestor, or by an ancestor that is now
        // another kind of entry or recreated.
        let covered = path.ancestors().skip(1).any(|a| {
            !a.as_os_str().is_empty()
                && (after.get(a).is_none_or(|m| m.kind != Kind::Dir) || recreated_set.contains(a))
        });
        if !covered {
            out.insert(path.clone(), Change::Deleted);
        }
    }
    out
}

fn has_ancestor_in(path: &Path, set: &HashSet<&Path>) -> bool {
    path.ancestors().skip(1).any(|a| set.contains(a))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::snapshot::manifest::EntryMeta;

    fn meta(kind: Kind, ino: u64, mtime: i64) -> EntryMeta {
        EntryMeta {
            kind,
            mode: 0o644,
            uid: 0,
            gid: 0,
            size: 1,
            mtime: (mtime, 0),
            ctime: (mtime, 0),
            dev: 1,
            ino,
            nlink: 1,
            btime: None,
            link_target: None,
        }
    }

    fn m(entries: &[(&str, EntryMeta)]) -> Manifest {
        Manifest::from_entries(entries.iter().map(|(p, e)| (PathBuf::from(p), e.clone())))
    }

    fn changes(b: &Manifest, a: &Manifest) -> Vec<(String, Change)> {
        compare(b, a)
            .into_iter()
            .map(|(p, c)| (p.to_string_lossy().into_owned(), c))
            .collect()
    }

    #[test]
    fn added_modified_deleted() {
        let before = m(&[
            ("etc", meta(Kind::Dir, 1, 1)),
            ("etc/a", meta(Kind::File, 2, 1)),
            ("etc/b", meta(Kind::File, 3, 1)),
            ("etc/same", meta(Kind::File, 4, 1)),
        ]);
        let after = m(&[
            ("etc", meta(Kind::Dir, 1, 2)),
            ("etc/a", meta(Kind::File, 2, 5)),
            ("etc/c", meta(Kind::File, 9, 5)),
            ("etc/same", meta(Kind::File, 4, 1)),
        ]);
        assert_eq!(
            changes(&before, &after),
            vec![
                ("etc".into(), Change::Modified),
                ("etc/a".into(), Change::Modified),
                ("etc/b".into(), Change::Deleted),
                ("etc/c".into(), Change::Added),
            ]
        );
    }

    #[test]
    fn deleting_a_tree_whiteouts_only_its_top() {
        let before = m(&[
            ("d", meta(Kind::Dir, 1, 1)),
            ("d/x", meta(Kind::Dir, 2, 1)),
            ("d/x/y", meta(Kind::File, 3, 1)),
        ]);
        let after = m(&[("d", meta(Kind::Dir, 1, 2))]);
        assert_eq!(
            changes(&before, &after),
            vec![
                ("d".into(), Change::Modified),
                ("d/x".into(), Change::Deleted)
            ]
        );
    }

    #[test]
    fn a_recreated_directory_is_opaque_with_all_its_content() {
        let before = m(&[
            ("d", meta(Kind::Dir, 1, 1)),
            ("d/old", meta(Kind::File, 2, 1)),
            ("d/kept", meta(Kind::File, 3, 1)),
        ]);
        let after = m(&[
            ("d", meta(Kind::Dir, 10, 2)),
            ("d/kept", meta(Kind::File, 3, 1)),
            ("d/new", meta(Kind::File, 11, 2)),
        ]);
        assert_eq!(
            changes(&before, &after),
            vec![
                ("d".into(), Change::Recreated),
                ("d/kept".into(), Change::Added),
                ("d/new".into(), Change::Added),
            ]
        );
    }

    #[test]
    fn a_reused_inode_number_with_a_new_birth_time_is_a_recreation() {
        let mut old = meta(Kind::Dir, 5, 1);
        old.btime = Some((1, 0));
        let mut new = meta(Kind::Dir, 5, 2);
        new.btime = Some((2, 0));
        let before = m(&[("d", old), ("d/x", meta(Kind::File, 6, 1))]);
        let after = m(&[("d", new)]);
        assert_eq!(
            changes(&before, &after),
            vec![("d".into(), Change::Recreated)]
        );
    }

    #[test]
    fn a_file_replacing_a_directory_hides_its_children() {
        let before = m(&[
            ("p", meta(Kind::Dir, 1, 1)),
            ("p/c", meta(Kind::File, 2, 1)),
        ]);
        let after = m(&[("p", meta(Kind::File, 3, 2))]);
        assert_eq!(changes(&before, &after), vec![("p".into(), Change::Added)]);
    }

    #[test]
    fn same_size_rewrite_with_restored_mtime_is_caught_by_ctime() {
        let before = m(&[("f", meta(Kind::File, 1, 1))]);
        let mut rewritten = meta(Kind::File, 1, 1);
        rewritten.ctime = (7, 0);
        let after = m(&[("f", rewritten)]);
        assert_eq!(
            changes(&before, &after),
            vec![("f".into(), Change::Modified)]
        );
    }
}
