//! The pid lock: an exclusive `flock` on `run/confluentd.pid`, held for the daemon's lifetime,
//! so that two daemons never share a state directory. The kernel drops the lock when the
//! process dies, even on SIGKILL, so a stale pid file never blocks a restart.

use std::fs::{File, OpenOptions};
use std::io::{self, Write};
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};

#[derive(Debug, thiserror::Error)]
pub enum PidLockError {
    #[error("failed to open pid file {path}")]
    Open {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("another confluentd (pid {holder}) is already using this state directory ({path})")]
    Held { path: PathBuf, holder: String },
    #[error("failed to write pid file {path}")]
    Write {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
}

/// Holds the lock until dropped.
pub struct PidLock {
    _file: File,
}

impl PidLock {
    pub fn acquire(path: &Path) -> Result<PidLock, PidLockError> {
        let mut file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(path)
            .map_err(|source| PidLockError::Open {
                path: path.to_path_buf(),
                source,
            })?;
        // SAFETY: flock on a file descriptor we own; no memory is involved.
        let locked = unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) };
        if locked != 0 {
            let holder = std::fs::read_to_string(path)
                .map(|text| text.trim().to_string())
                .unwrap_or_else(|_| "unknown".to_string());
            return Err(PidLockError::Held {
                path: path.to_path_buf(),
                holder,
            });
        }
        let write = |file: &mut File| -> io::Result<()> {
            file.set_len(0)?;
            writeln!(file, "{}", std::process::id())?;
            file.sync_all()
        };
        write(&mut file).map_err(|source| PidLockError::Write {
            path: path.to_path_buf(),
            source,
        })?;
        Ok(PidLock { _file: file })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn second_lock_on_the_same_file_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("confluentd.pid");
        let first = PidLock::acquire(&path).unwrap();
        let second = PidLock::acquire(&path);
        assert!(matches!(second, Err(PidLockError::Held { .. })));
        drop(first);
        assert!(PidLock::acquire(&path).is_ok());
    }
}
