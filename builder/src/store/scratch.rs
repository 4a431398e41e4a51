//! Scratch directories under `<store>/work` (the roots Dockerfile stages
//! and exec layers run in, and their inputs): each is locked by the process
//! using it, through a lock file beside it, so one left behind by a build
//! killed with SIGKILL (41 MB and up each) is recognised by any later kiln
//! as a leftover: `kiln cache ls` shows it, and the next build and `kiln
//! cache prune` remove it. The kernel drops the lock however the process
//! ends, so a live build's directory is never taken for a leftover.

use std::fs::File;
use std::path::{Path, PathBuf};
use std::time::Duration;

use kiln_rootfs::private_dir::create_private_dir;

use super::Store;
use super::error::{IoContext as _, Result};

/// Suffix of the lock file beside each scratch directory.
const LOCK_SUFFIX: &str = ".lock";

/// A scratch directory without a lock file is a leftover only once this
/// old: it may be one whose lock is being created right now.
const UNLOCKED_GRACE: Duration = Duration::from_secs(3600);

/// A scratch directory in use; removed (with its lock) when dropped.
#[derive(Debug)]
pub struct Scratch {
    dir: Option<tempfile::TempDir>,
    lock_path: PathBuf,
    _lock: File,
}

impl Scratch {
    /// The directory.
    pub fn path(&self) -> &Path {
        self.dir.as_ref().map_or(Path::new(""), |d| d.path())
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        // The directory first: while it exists its lock stays held.
        drop(self.dir.take());
        let _ = std::fs::remove_file(&self.lock_path);
    }
}

/// A scratch directory nobody holds any more.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Leftover {
    /// The directory.
    pub path: PathBuf,
    /// Bytes of the files in it.
    pub bytes: u64,
}

impl Store {
    /// Where scratch directories go.
    pub fn work_dir(&self) -> PathBuf {
        self.root.join("work")
    }

    /// A new scratch directory named `<prefix>XXXXXX`, private to kiln's
    /// user and locked for as long as the result lives.
    ///
    /// # Errors
    ///
    /// When the directory or its lock cannot be made.
    pub fn scratch(&self, prefix: &str) -> Result<Scratch> {
        let work = self.work_dir();
        create_private_dir(&work).at("creating", work.clone())?;
        let dir = tempfile::Builder::new()
            .prefix(prefix)
            .tempdir_in(&work)
            .at("creating a scratch directory in", work.clone())?;
        let lock_path = lock_path(dir.path());
        let lock = File::create(&lock_path).at("creating", lock_path.clone())?;
        lock.try_lock()
            .map_err(|e| match e {
                std::fs::TryLockError::Error(e) => e,
                std::fs::TryLockError::WouldBlock => std::io::ErrorKind::WouldBlock.into(),
            })
            .at("locking", lock_path.clone())?;
        Ok(Scratch {
            dir: Some(dir),
            lock_path,
            _lock: lock,
        })
    }

    /// Scratch directories whose process is gone.
    ///
    /// # Errors
    ///
    /// When the work directory cannot be listed.
    pub fn leftovers(&self) -> Result<Vec<Leftover>> {
        Ok(self
            .unheld()?
            .into_iter()
            .map(|(path, _lock)| Leftover {
                bytes: kiln_rootfs::private_dir::bytes_under(&path),
                path,
            })
            .collect())
    }

    /// Removes every leftover scratch directory; returns how many and the
    /// bytes freed.
    ///
    /// # Errors
    ///
    /// When one cannot be removed.
    pub fn remove_leftovers(&self) -> Result<(usize, u64)> {
        let mut freed = (0, 0);
        for (path, lock) in self.unheld()? {
            let bytes = kiln_rootfs::private_dir::bytes_under(&path);
            std::fs::remove_dir_all(&path).at("removing", path.clone())?;
            drop(lock);
            let _ = std::fs::remove_file(lock_path(&path));
            freed.0 += 1;
            freed.1 += bytes;
        }
        Ok(freed)
    }

    /// The scratch directories nobody holds, each with its lock taken (so
    /// no other sweeper removes it at the same time).
    fn unheld(&self) -> Result<Vec<(PathBuf, Option<File>)>> {
        let work = self.work_dir();
        let entries = match std::fs::read_dir(&work) {
            Ok(rd) => rd,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(e).at("listing", work),
        };
        let mut out = Vec::new();
        for entry in entries.flatten() {
            let path = entry.path();
            if !entry.file_type().is_ok_and(|t| t.is_dir()) {
                continue;
            }
            match File::open(lock_path(&path)) {
                Ok(lock) => {
                    if lock.try_lock().is_ok() {
                        out.push((path, Some(lock)));
                    }
                }
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                    if kiln_rootfs::private_dir::modified_before(&path, UNLOCKED_GRACE) {
                        out.push((path, None));
                    }
                }
                Err(_) => {}
            }
        }
        out.sort_by(|a, b| a.0.cmp(&b.0));
        Ok(out)
    }
}

fn lock_path(dir: &Path) -> PathBuf {
    let mut name = dir.as_os_str().to_owned();
    name.push(LOCK_SUFFIX);
    PathBuf::from(name)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_held_scratch_is_not_a_leftover_and_a_dropped_one_leaves_nothing() {
        let t = tempfile::tempdir().unwrap();
        let store = Store::new(t.path()).unwrap();
        let s = store.scratch("root-").unwrap();
        std::fs::write(s.path().join("f"), vec![0u8; 1000]).unwrap();
        assert_eq!(store.leftovers().unwrap(), Vec::new());
        assert_eq!(store.remove_leftovers().unwrap(), (0, 0));
        assert!(
            s.path().join("f").is_file(),
            "a live scratch is never removed"
        );
        let path = s.path().to_path_buf();
        drop(s);
        assert!(!path.exists());
        assert_eq!(std::fs::read_dir(store.work_dir()).unwrap().count(), 0);
    }

    #[test]
    fn an_unlocked_scratch_is_a_leftover_with_its_size_and_is_removed() {
        let t = tempfile::tempdir().unwrap();
        let store = Store::new(t.path()).unwrap();
        // What a killed build leaves: the directory and an unlocked lock.
        let dead = store.work_dir().join("root-dead");
        std::fs::create_dir_all(dead.join("rootfs/tmp")).unwrap();
        std::fs::write(dead.join("rootfs/tmp/big"), vec![1u8; 4096]).unwrap();
        File::create(lock_path(&dead)).unwrap();
        // A fresh directory without a lock may be starting: kept.
        let starting = store.work_dir().join("root-starting");
        std::fs::create_dir(&starting).unwrap();
        let live = store.scratch("root-").unwrap();
        assert_eq!(
            store.leftovers().unwrap(),
            vec![Leftover {
                path: dead.clone(),
                bytes: 4096
            }]
        );
        assert_eq!(store.remove_leftovers().unwrap(), (1, 4096));
        assert!(!dead.exists() && !lock_path(&dead).exists());
        assert!(starting.exists() && live.path().exists());
    }
}
