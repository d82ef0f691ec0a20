//! One daemon per user, enforced by the kernel: an exclusive lock
//! (`File::try_lock`, an `flock` on Unix) on `paths.lock_path()`, held for the life of the process and released by
//! the kernel however the process ends (even `kill -9`). A pid file could
//! only guess; a lock cannot be stale.

use std::fs::{File, OpenOptions, TryLockError};
use std::io::{self, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

#[derive(Debug, thiserror::Error)]
pub enum LockError {
    #[error("claudemeshd is already running for this user (it holds {}); `claudemesh-ctl status` talks to it", path.display())]
    AlreadyRunning { path: PathBuf },
    #[error("cannot open the lock file {}: {source}", path.display())]
    Io { path: PathBuf, source: io::Error },
}

/// The held lock; dropping it (or exiting) releases it.
#[derive(Debug)]
pub struct InstanceLock {
    _file: File,
}

impl InstanceLock {
    /// Takes the lock without waiting, or says who has it.
    pub fn acquire(path: &Path) -> Result<InstanceLock, LockError> {
        let io_err = |source| LockError::Io {
            path: path.to_path_buf(),
            source,
        };
        let mut file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .mode(0o600)
            .open(path)
            .map_err(io_err)?;
        match file.try_lock() {
            Ok(()) => {}
            Err(TryLockError::WouldBlock) => {
                return Err(LockError::AlreadyRunning {
                    path: path.to_path_buf(),
                });
            }
            Err(TryLockError::Error(err)) => return Err(io_err(err)),
        }
        // For people looking at the file; the lock is what counts.
        let _ = file.set_len(0);
        let _ = writeln!(file, "{}", std::process::id());
        Ok(InstanceLock { _file: file })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_second_lock_is_refused_until_the_first_is_dropped() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("d.lock");
        let first = InstanceLock::acquire(&path).unwrap();
        // The lock belongs to the open file description (flock), so a
        // second open in the same process conflicts just as another
        // process would.
        assert!(matches!(
            InstanceLock::acquire(&path),
            Err(LockError::AlreadyRunning { .. })
        ));
        drop(first);
        assert!(InstanceLock::acquire(&path).is_ok());
    }
}
