//! Exclusive lock files: one chimed per state directory and per socket.
//!
//! A lock is an `flock` on a small file holding the owner's pid. The kernel drops it when the
//! process dies, however it dies, so a stale lock file is never a problem: only a live holder
//! blocks. The pid in the file is only for the error message.
//!
//! Anyone who can open a lock file can hold its lock (a shared `flock` needs only read access),
//! and so keep chimed from starting. A lock file is therefore created `0600`, never through a
//! symbolic link, and one that others could open (an older chimed made them `0644`) or that
//! someone else owns is not trusted: it is removed and created again before it is locked, so a
//! lock held on the old file by someone else holds nothing.

use nix::fcntl::{Flock, FlockArg};
use std::fs::File;
use std::io::{Read, Seek, Write};
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
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

/// Opens the lock file at `path` for this process: creates it `0600` if it is missing, replaces
/// it if others could open it or someone else owns it, and never follows a symbolic link.
fn open(path: &Path) -> std::io::Result<File> {
    let euid = nix::unistd::geteuid().as_raw();
    let options = |create_new: bool| {
        let mut o = std::fs::OpenOptions::new();
        o.read(true)
            .write(true)
            .mode(0o600)
            .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC);
        if create_new {
            o.create_new(true);
        }
        o
    };
    for _ in 0..8 {
        match options(false).open(path) {
            Ok(file) => {
                let meta = file.metadata()?;
                if meta.is_file() && meta.uid() == euid && meta.mode() & 0o077 == 0 {
                    return Ok(file);
                }
                tracing::warn!(path = %path.display(), owner_uid = meta.uid(), mode = format!("{:o}", meta.mode() & 0o7777), "lock file could be held by others; replacing it");
                std::fs::remove_file(path)?;
            }
            Err(err) if err.raw_os_error() == Some(libc::ELOOP) => {
                tracing::warn!(path = %path.display(), "lock file is a symbolic link; replacing it");
                std::fs::remove_file(path)?;
            }
            Err(err) if err.kind() == std::io::ErrorKind::NotFound => {}
            Err(err) => return Err(err),
        }
        match options(true).open(path) {
            Ok(file) => return Ok(file),
            // Another chimed created it meanwhile: open that one.
            Err(err) if err.kind() == std::io::ErrorKind::AlreadyExists => {}
            Err(err) => return Err(err),
        }
    }
    Err(std::io::Error::other(
        "it keeps being replaced by another process",
    ))
}

/// Takes the lock at `path` without waiting. `what` names the protected thing in errors.
pub fn acquire(path: &Path, what: &str) -> Result<LockFile, LockError> {
    let io = |source| LockError::Io {
        path: path.into(),
        source,
    };
    let file = open(path).map_err(io)?;
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

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn a_lock_file_others_could_open_is_replaced() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("x.lock");
        std::fs::write(&path, "1\n").unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
        // Someone holds a lock on the old file.
        let old = Flock::lock(File::open(&path).unwrap(), FlockArg::LockSharedNonblock).unwrap();
        let held = acquire(&path, "test").expect("the old file's lock holds nothing");
        assert_eq!(
            std::fs::metadata(&path).unwrap().mode() & 0o777,
            0o600,
            "a new private file"
        );
        assert!(matches!(
            acquire(&path, "test"),
            Err(LockError::Held { .. })
        ));
        drop((old, held));
    }

    #[test]
    fn a_symbolic_link_is_not_followed() {
        let dir = tempfile::tempdir().unwrap();
        let target = dir.path().join("target");
        std::fs::write(&target, "keep").unwrap();
        let path = dir.path().join("x.lock");
        std::os::unix::fs::symlink(&target, &path).unwrap();
        let _held = acquire(&path, "test").unwrap();
        assert_eq!(std::fs::read_to_string(&target).unwrap(), "keep");
        assert!(!std::fs::symlink_metadata(&path).unwrap().is_symlink());
    }
}
