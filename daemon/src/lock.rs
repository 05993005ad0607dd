//! Exclusive lock files: one chimed per state directory and per socket.
//!
//! A lock is an `flock` on a small file holding the owner's pid. The kernel drops it when the
//! process dies, however it dies, so a stale lock file is never a problem: only a live holder
//! blocks. The pid in the file is only for the error message.

use nix::fcntl::{Flock, FlockArg};
use std::fs::File;
use std::io::{Read, Seek, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

/// A held lock; released on drop (or when the process ends).
#[derive(Debug)]
pub struct LockFile {
    _lock: Flock<File>,
    pub path: PathBuf,
}

#[derive(Debug, thiserror::Error)]
pub enum LockError {
    #[error("{what} is in use by another chimed{holder} (lock {path})", holder = .pid.map(|p| format!(" (pid {p})")).unwrap_or_default())]
    Held {
        what: String,
        path: PathBuf,
        pid: Option<u32>,
    },
    #[error("cannot open the lock file {path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

/// Takes the lock at `path` without waiting. `what` names the protected thing in errors.
pub fn acquire(path: &Path, what: &str) -> Result<LockFile, LockError> {
    let io = |source| LockError::Io {
        path: path.into(),
        source,
    };
    let file = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .mode(0o644)
        .open(path)
        .map_err(io)?;
    let mut lock = match Flock::lock(file, FlockArg::LockExclusiveNonblock) {
        Ok(lock) => lock,
        Err((mut file, _)) => {
            let mut text = String::new();
            let _ = file.read_to_string(&mut text);
            return Err(LockError::Held {
                what: what.into(),
                path: path.into(),
                pid: text.trim().parse().ok(),
            });
        }
    };
    lock.set_len(0).map_err(io)?;
    lock.rewind().map_err(io)?;
    writeln!(lock, "{}", std::process::id()).map_err(io)?;
    Ok(LockFile {
        _lock: lock,
        path: path.into(),
    })
}
