//! The socket: set-up and the accept loop.
//!
//! Set-up follows a careful order: take the socket's lock file (`<socket>.lock`), so a second
//! daemon fails with a clear message instead of stealing the socket; only then remove a stale
//! socket file left by a daemon that died; bind; set the mode and group. The socket file is
//! removed again on a clean stop.
//!
//! Under socket activation (chimed.socket) systemd owns the socket: it binds it, sets its mode
//! and group, and passes the listening socket as fd 3 ([`take_activated`]). chimed then takes no
//! lock (systemd starts one chimed per socket unit), changes nothing about the file and leaves it
//! in place at stop, so that the next connection starts chimed again.
//!
//! Each accepted connection gets its own task ([`crate::connection`]). Connections beyond the
//! limit get a `busy` refusal and are closed; root's connections are not counted, so root always
//! gets in.

use crate::config::Config;
use crate::context::Context;
use crate::lock::{self, LockFile};
use anyhow::{Context as _, bail};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::fs::{FileTypeExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use tokio::net::UnixListener;
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;

/// The listening socket. When chimed bound it itself, it holds the socket's lock and removes the
/// socket file when dropped; a socket passed by systemd is left to systemd.
#[derive(Debug)]
pub struct Listener {
    listener: UnixListener,
    path: PathBuf,
    /// `Some` when chimed bound the socket (and so owns its file), `None` under activation.
    lock: Option<LockFile>,
}

impl Listener {
    /// The socket's path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Whether systemd passed the socket (socket activation).
    pub fn is_activated(&self) -> bool {
        self.lock.is_none()
    }
}

impl Drop for Listener {
    fn drop(&mut self) {
        if self.lock.is_some() {
            let _ = std::fs::remove_file(&self.path);
        }
    }
}

/// The listening socket systemd passed, when `LISTEN_PID` and `LISTEN_FDS` name this process
/// (socket activation, `sd_listen_fds(3)`); `None` when they do not.
///
/// It also removes `LISTEN_PID`, `LISTEN_FDS` and `LISTEN_FDNAMES` from the environment and marks
/// the descriptor close-on-exec, so that no job inherits either. (Jobs get an environment built
/// from their spec anyway; this keeps it true for anything else chimed may start.)
///
/// Errors: `LISTEN_FDS` names more than one descriptor, or the variables do not parse.
///
/// # Safety
///
/// No other thread may exist: changing the environment is only sound then. [`crate::run`]
/// calls it before it starts the async runtime.
#[allow(unsafe_code)]
pub unsafe fn take_activated() -> anyhow::Result<Option<OwnedFd>> {
    // SAFETY: the caller's promise: no other thread reads or writes the environment meanwhile.
    let fds = unsafe {
        let fds = sd_notify::listen_fds_and_unset_env();
        std::env::remove_var("LISTEN_FDNAMES");
        fds
    }
    .context("cannot read the sockets passed by systemd (LISTEN_PID, LISTEN_FDS)")?;
    let fds: Vec<_> = fds.collect();
    match fds[..] {
        [] => Ok(None),
        // SAFETY: sd_listen_fds(3): with LISTEN_PID naming this process, fd 3 is open and passed
        // to it; the variables are gone now, so nothing else in this process takes it again.
        [fd] => Ok(Some(unsafe { OwnedFd::from_raw_fd(fd) })),
        _ => bail!(
            "systemd passed {} sockets, chimed takes one: give chimed.socket a single \
             ListenStream= (the Unix socket path)",
            fds.len()
        ),
    }
}

/// Listens on the socket systemd passed: it must be a listening Unix stream socket. Its path,
/// mode and group are systemd's business (chimed.socket), so nothing about the file changes.
pub fn adopt(fd: OwnedFd) -> anyhow::Result<Listener> {
    use nix::sys::socket::{AddressFamily, SockType, SockaddrLike, SockaddrStorage, sockopt};
    const REMEDY: &str = "chimed.socket needs ListenStream=/run/chime/chimed.sock \
                          (a Unix stream socket path), without Accept=yes";
    let kind = nix::sys::socket::getsockopt(&fd, sockopt::SockType)
        .with_context(|| format!("fd 3 passed by systemd is not a socket; {REMEDY}"))?;
    let family = nix::sys::socket::getsockname::<SockaddrStorage>(fd.as_raw_fd())
        .context("cannot read the address of the socket passed by systemd")?
        .family();
    if family != Some(AddressFamily::Unix) || kind != SockType::Stream {
        bail!(
            "the socket passed by systemd (fd 3) is not a Unix stream socket (family {}, type \
             {kind:?}); {REMEDY}",
            family.map_or_else(|| "unknown".into(), |f| format!("{f:?}"))
        );
    }
    let listening = nix::sys::socket::getsockopt(&fd, sockopt::AcceptConn)
        .context("cannot tell whether the socket passed by systemd listens")?;
    if !listening {
        bail!("the socket passed by systemd (fd 3) is not listening; {REMEDY}");
    }
    let listener = std::os::unix::net::UnixListener::from(fd);
    let path = listener
        .local_addr()
        .context("cannot read the path of the socket passed by systemd")?
        .as_pathname()
        .map(Path::to_path_buf)
        .with_context(|| format!("the socket passed by systemd has no path; {REMEDY}"))?;
    listener
        .set_nonblocking(true)
        .context("cannot make the socket passed by systemd non-blocking")?;
    let listener = UnixListener::from_std(listener)
        .context("cannot listen on the socket passed by systemd")?;
    Ok(Listener {
        listener,
        path,
        lock: None,
    })
}

/// Binds the socket of `config` (see the module docs for the order of steps).
pub fn bind(config: &Config) -> anyhow::Result<Listener> {
    let path = config.socket.as_ref().map_err(|err| *err)?;
    let dir = path
        .parent()
        .with_context(|| format!("socket path {} has no directory", path.display()))?;
    if !dir.is_dir() {
        std::fs::create_dir_all(dir)
            .with_context(|| format!("cannot create the socket directory {}", dir.display()))?;
        // Private unless the socket itself is meant for others.
        let mode = if config.socket_group.is_some() || config.socket_mode & 0o077 != 0 {
            0o755
        } else {
            0o700
        };
        std::fs::set_permissions(dir, std::fs::Permissions::from_mode(mode))
            .with_context(|| format!("cannot set the mode of {}", dir.display()))?;
    }
    let lock_path = PathBuf::from(format!("{}.lock", path.display()));
    let lock = lock::acquire(&lock_path, &format!("socket {}", path.display()))?;
    match std::fs::symlink_metadata(path) {
        Ok(meta) if meta.file_type().is_socket() => {
            // We hold the lock, so whoever bound it is gone.
            std::fs::remove_file(path)
                .with_context(|| format!("cannot remove the stale socket {}", path.display()))?;
        }
        Ok(_) => bail!(
            "{} exists and is not a socket; remove it or choose another --socket",
            path.display()
        ),
        Err(_) => {}
    }
    let listener =
        UnixListener::bind(path).with_context(|| format!("cannot listen on {}", path.display()))?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(config.socket_mode))
        .with_context(|| format!("cannot set the mode of {}", path.display()))?;
    if let Some(gid) = config.socket_group {
        std::os::unix::fs::chown(path, None, Some(gid))
            .with_context(|| format!("cannot give {} to group chime", path.display()))?;
    }
    Ok(Listener {
        listener,
        path: path.clone(),
        lock: Some(lock),
    })
}

/// Accepts connections until `shutdown` is cancelled.
pub async fn serve(
    listener: Listener,
    context: Arc<Context>,
    max_connections: usize,
    shutdown: CancellationToken,
) {
    let slots = Arc::new(Semaphore::new(max_connections));
    let mut next_id: u64 = 0;
    loop {
        let accepted = tokio::select! {
            () = shutdown.cancelled() => break,
            accepted = listener.listener.accept() => accepted,
        };
        match accepted {
            Ok((stream, _)) => {
                next_id += 1;
                // Root always gets in, even when users hold every connection, and takes none
                // of theirs.
                let permit = if stream.peer_cred().is_ok_and(|c| c.uid() == 0) {
                    Some(crate::connection::Permit::Root)
                } else {
                    Arc::clone(&slots)
                        .try_acquire_owned()
                        .ok()
                        .map(crate::connection::Permit::Slot)
                };
                tokio::spawn(crate::connection::serve(
                    stream,
                    next_id,
                    Arc::clone(&context),
                    permit,
                ));
            }
            Err(err) => {
                // Out of file descriptors, most likely: back off instead of spinning.
                tracing::warn!(error = %err, "accepting a connection failed");
                tokio::time::sleep(std::time::Duration::from_millis(100)).await;
            }
        }
    }
    drop(listener);
}
