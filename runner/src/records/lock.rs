//! Whether a run's kiln is still alive, told by a lock rather than a pid:
//! the kiln that runs a run holds an exclusive `flock` on
//! `<data_dir>/locks/<run>.lock` for as long as it lives, and the kernel
//! drops it when the process ends, however it ends (SIGKILL, OOM killer).
//! A reader that can take the lock knows nobody runs the run any more. A
//! pid would say less: after a reboot or enough forks it names someone
//! else.
//!
//! `flock` through rustix: std's `File::try_lock` is newer than the
//! workspace's rust-version.

use std::fs::File;
use std::io;
use std::path::{Path, PathBuf};

use rustix::fs::{FlockOperation, flock};

use super::RecordsError;

/// The lock of a running run; dropping it (or the process ending) releases
/// it. The runner takes it right after [`Records::create_run`] and keeps it
/// until the run is finished.
///
/// [`Records::create_run`]: super::Records::create_run
#[derive(Debug)]
pub struct RunLock {
    /// The locked file; the lock lives as long as this descriptor.
    _file: File,
    path: PathBuf,
}

impl RunLock {
    /// Takes the lock of `run`. The file is locked before it appears under
    /// its name (made aside, then renamed), so a reader never finds an
    /// unlocked lock file of a live run.
    pub fn acquire(data_dir: &Path, run: &str) -> Result<RunLock, RecordsError> {
        let path = lock_path(data_dir, run)?;
        let dir = locks_dir(data_dir);
        let io_err = |path: &Path| {
            let path = path.to_path_buf();
            move |source| RecordsError::Io { path, source }
        };
        kiln_rootfs::private_dir::create_private_dir(&dir).map_err(io_err(&dir))?;
        let tmp = tempfile::Builder::new()
            .prefix(".taking-")
            .tempfile_in(&dir)
            .map_err(io_err(&dir))?;
        flock(tmp.as_file(), FlockOperation::LockExclusive)
            .map_err(|e| io_err(tmp.path())(e.into()))?;
        let file = match tmp.persist_noclobber(&path) {
            Ok(file) => file,
            Err(e) if e.error.kind() == io::ErrorKind::AlreadyExists => {
                // A lock file left by a kiln that is gone may be replaced;
                // one that is held may not.
                if probe(data_dir, run)? == Holder::Alive {
                    return Err(RecordsError::Locked {
                        run: run.to_owned(),
                    });
                }
                e.file.persist(&path).map_err(|e| RecordsError::Io {
                    path: path.clone(),
                    source: e.error,
                })?
            }
            Err(e) => return Err(io_err(&path)(e.error)),
        };
        Ok(RunLock { _file: file, path })
    }

    /// The lock file.
    pub fn path(&self) -> &Path {
        &self.path
    }
}

/// What a reader learns from a run's lock file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Holder {
    /// Someone holds the lock: the run's kiln lives.
    Alive,
    /// The lock is free: the run's kiln is gone.
    Gone,
    /// There is no lock file: the run's kiln has not taken it yet (or it
    /// was removed), so only the pid can tell.
    NoLock,
}

/// Tries the lock of `run` without waiting, and lets it go at once.
pub(crate) fn probe(data_dir: &Path, run: &str) -> Result<Holder, RecordsError> {
    let path = lock_path(data_dir, run)?;
    let file = match File::open(&path) {
        Ok(f) => f,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Holder::NoLock),
        Err(source) => return Err(RecordsError::Io { path, source }),
    };
    match flock(&file, FlockOperation::NonBlockingLockExclusive) {
        Ok(()) => Ok(Holder::Gone),
        Err(rustix::io::Errno::WOULDBLOCK) => Ok(Holder::Alive),
        Err(e) => Err(RecordsError::Io {
            path,
            source: e.into(),
        }),
    }
}

/// Removes the lock file of a run that is over, so `locks/` does not grow
/// with every run. The holder, if any, keeps its lock on the unlinked file
/// until it exits, and nobody asks: the run is no longer `running`.
pub(crate) fn remove(data_dir: &Path, run: &str) {
    if let Ok(path) = lock_path(data_dir, run) {
        let _ = std::fs::remove_file(path);
    }
}

fn locks_dir(data_dir: &Path) -> PathBuf {
    data_dir.join("locks")
}

/// `<data_dir>/locks/<run>.lock`; a run id that could leave `locks/` (or
/// name a hidden file) is refused.
fn lock_path(data_dir: &Path, run: &str) -> Result<PathBuf, RecordsError> {
    let valid = !run.is_empty()
        && run
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
    if !valid {
        return Err(RecordsError::BadRunId {
            given: run.to_owned(),
        });
    }
    Ok(locks_dir(data_dir).join(format!("{run}.lock")))
}
