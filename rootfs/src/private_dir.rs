//! Directories only their owner may enter: kiln's cache and data hold
//! unpacked image roots (setuid binaries, world-writable `/tmp`s) and run
//! records, which no other local user may reach.

use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
use std::path::Path;

/// Creates `dir` (and missing parents) with mode 0700, and makes an
/// existing `dir` 0700 too (an older kiln created it 0755). Only `dir`
/// itself is changed when it exists: a parent kiln did not create is not
/// kiln's to change.
///
/// # Errors
///
/// When a directory cannot be created or its mode set.
pub fn create_private_dir(dir: &Path) -> std::io::Result<()> {
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)?;
    let mode = std::fs::metadata(dir)?.permissions().mode() & 0o7777;
    if mode != 0o700 {
        std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))?;
    }
    Ok(())
}

/// Whether `path` was last modified more than `age` ago: how kiln tells a
/// leftover without a lock file from one whose lock is being made now.
pub fn modified_before(path: &Path, age: std::time::Duration) -> bool {
    std::fs::symlink_metadata(path)
        .and_then(|m| m.modified())
        .ok()
        .and_then(|m| std::time::SystemTime::now().duration_since(m).ok())
        .is_some_and(|elapsed| elapsed > age)
}

/// Bytes of the regular files under `dir`, links not followed: what a
/// leftover scratch directory frees.
pub fn bytes_under(dir: &Path) -> u64 {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return 0;
    };
    entries
        .flatten()
        .map(|e| match e.file_type() {
            Ok(t) if t.is_dir() => bytes_under(&e.path()),
            Ok(t) if t.is_file() => e.metadata().map_or(0, |m| m.len()),
            _ => 0,
        })
        .sum()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mode(p: &Path) -> u32 {
        std::fs::metadata(p)
            .map(|m| m.permissions().mode() & 0o7777)
            .unwrap_or(0)
    }

    #[test]
    fn bytes_under_counts_files_in_nested_directories_not_links() {
        let t = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(t.path().join("a/b")).unwrap();
        std::fs::write(t.path().join("a/b/f"), vec![0u8; 300]).unwrap();
        std::fs::write(t.path().join("g"), vec![0u8; 20]).unwrap();
        std::os::unix::fs::symlink(t.path().join("g"), t.path().join("l")).unwrap();
        assert_eq!(bytes_under(t.path()), 320);
        assert_eq!(bytes_under(&t.path().join("missing")), 0);
    }

    #[test]
    fn a_fresh_file_is_not_modified_before_an_hour_ago() {
        let t = tempfile::tempdir().unwrap();
        let hour = std::time::Duration::from_secs(3600);
        assert!(!modified_before(t.path(), hour));
        assert!(!modified_before(
            &t.path().join("missing"),
            std::time::Duration::ZERO
        ));
    }

    #[test]
    fn new_and_existing_directories_end_up_0700_and_a_foreign_parent_is_left_alone() {
        let t = tempfile::tempdir().unwrap();
        let parent = t.path().join("shared");
        std::fs::create_dir(&parent).unwrap();
        std::fs::set_permissions(&parent, std::fs::Permissions::from_mode(0o755)).unwrap();
        let nested = parent.join("a/b");
        create_private_dir(&nested).unwrap();
        assert_eq!(mode(&parent.join("a")), 0o700);
        assert_eq!(mode(&nested), 0o700);
        assert_eq!(mode(&parent), 0o755, "an existing parent is not kiln's");
        let old = parent.join("old");
        std::fs::create_dir(&old).unwrap();
        std::fs::set_permissions(&old, std::fs::Permissions::from_mode(0o1777)).unwrap();
        create_private_dir(&old).unwrap();
        assert_eq!(mode(&old), 0o700);
    }
}
