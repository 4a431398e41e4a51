//! A run's scratch (each attempt's overlay upper and work directories) is
//! removed when the attempt ends, but a kiln killed with SIGKILL leaves it
//! behind. Each run directory is locked (`.lock`, an `flock` the kernel
//! drops however kiln ends) for as long as its kiln lives, so the next
//! `kiln run` and `kiln cache prune` remove the scratch of every run whose
//! kiln is gone, and never that of a run in progress. Logs and the run
//! directory's files are the run's results and stay.

use std::fs::File;
use std::path::Path;
use std::time::Duration;

/// Name of the lock file in a run's directory.
const LOCK: &str = ".lock";

/// A run directory without a lock file (made by an older kiln) counts as
/// abandoned only once this old.
const UNLOCKED_GRACE: Duration = Duration::from_secs(3600);

/// The lock of a run directory in use; released when dropped.
#[derive(Debug)]
pub struct RunDirLock {
    _file: File,
}

/// Locks `run_root` for this process.
///
/// # Errors
///
/// When the lock file cannot be created or is held by another kiln.
pub fn lock_run_dir(run_root: &Path) -> std::io::Result<RunDirLock> {
    let file = File::create(run_root.join(LOCK))?;
    file.try_lock().map_err(|e| match e {
        std::fs::TryLockError::Error(e) => e,
        std::fs::TryLockError::WouldBlock => std::io::Error::new(
            std::io::ErrorKind::WouldBlock,
            format!("{} is in use by another kiln", run_root.display()),
        ),
    })?;
    Ok(RunDirLock { _file: file })
}

/// Removes the scratch of every run under `run_base` whose kiln is gone;
/// returns how many runs' scratch and the bytes freed. Best effort: a
/// scratch that cannot be removed now is tried again next time.
pub fn sweep_scratch(run_base: &Path) -> (usize, u64) {
    let Ok(entries) = std::fs::read_dir(run_base) else {
        return (0, 0);
    };
    let mut freed = (0, 0);
    for entry in entries.flatten() {
        let dir = entry.path();
        let scratch = dir.join("scratch");
        let has_scratch = std::fs::read_dir(&scratch).is_ok_and(|mut d| d.next().is_some());
        if !has_scratch {
            continue;
        }
        let _held = match File::open(dir.join(LOCK)) {
            Ok(lock) => match lock.try_lock() {
                Ok(()) => lock,
                Err(_) => continue,
            },
            Err(_) => {
                if !kiln_rootfs::private_dir::modified_before(&dir, UNLOCKED_GRACE) {
                    continue;
                }
                match File::open(&dir) {
                    Ok(f) => f,
                    Err(_) => continue,
                }
            }
        };
        let bytes = kiln_rootfs::private_dir::bytes_under(&scratch);
        let Ok(attempts) = std::fs::read_dir(&scratch) else {
            continue;
        };
        let mut removed = false;
        for a in attempts.flatten() {
            removed |= std::fs::remove_dir_all(a.path()).is_ok();
        }
        if removed {
            freed.0 += 1;
            freed.1 += bytes;
        }
    }
    freed
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_scratch_of_runs_whose_kiln_is_gone_is_removed() {
        let t = tempfile::tempdir().unwrap();
        let make = |name: &str| {
            let run = t.path().join(name);
            std::fs::create_dir_all(run.join("scratch/step.1/upper")).unwrap();
            std::fs::write(run.join("scratch/step.1/upper/f"), vec![0u8; 100]).unwrap();
            std::fs::create_dir_all(run.join("logs")).unwrap();
            std::fs::write(run.join("logs/step.1.log"), "kept").unwrap();
            run
        };
        let live = make("live");
        let _lock = lock_run_dir(&live).unwrap();
        let dead = make("dead");
        drop(lock_run_dir(&dead).unwrap());
        let fresh = make("fresh-without-lock");
        assert_eq!(sweep_scratch(t.path()), (1, 100));
        assert!(!dead.join("scratch/step.1").exists());
        assert!(dead.join("logs/step.1.log").is_file(), "results stay");
        assert!(live.join("scratch/step.1/upper/f").is_file());
        assert!(fresh.join("scratch/step.1").exists());
        assert!(lock_run_dir(&live).is_err(), "held by this test");
    }
}
