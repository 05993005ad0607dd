//! The socket: set-up, the accept loop, and what every connection shares.
//!
//! Set-up follows a careful order: take the socket's lock file (`<socket>.lock`), so a second
//! daemon fails with a clear message instead of stealing the socket; only then remove a stale
//! socket file left by a daemon that died; bind; set the mode and group. The socket file is
//! removed again on a clean stop.
//!
//! Each accepted connection gets its own task ([`crate::connection`]). Connections beyond the
//! limit get a `busy` refusal and are closed.

use crate::config::Config;
use crate::engine::{EngineHandle, Stats};
use crate::lock::{self, LockFile};
use crate::store::Store;
use anyhow::{Context, bail};
use std::os::unix::fs::{FileTypeExt, PermissionsExt};
use std::path::PathBuf;
use std::sync::atomic::AtomicU32;
use std::sync::{Arc, Mutex, RwLock};
use std::time::Instant;
use tokio::net::UnixListener;
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;

/// Facts about this daemon, for `status`.
#[derive(Debug)]
pub struct DaemonInfo {
    pub started: Instant,
    pub started_at_ms: i64,
    pub pid: u32,
    /// The uid chimed runs as.
    pub uid: u32,
    pub socket: PathBuf,
    pub state_dir: PathBuf,
    pub logs_dir: PathBuf,
    pub max_running: usize,
    /// The zone recurring jobs use when they name none, and its name for people.
    pub local_tz: jiff::tz::TimeZone,
    pub zone_name: String,
    /// The configuration file and the job directory.
    pub config_path: PathBuf,
    pub jobs_dir: PathBuf,
    /// chimed got its socket from systemd.
    pub socket_activated: bool,
}

/// What every connection task shares.
#[derive(Debug)]
pub struct Shared {
    pub store: Arc<Store>,
    pub engine: EngineHandle,
    pub stats: Arc<Stats>,
    pub info: DaemonInfo,
    pub connections: AtomicU32,
    /// Committed events, for watchers (see [`crate::watch`]).
    pub events: tokio::sync::broadcast::Sender<Arc<chime_proto::EventRecord>>,
    pub metrics: Arc<crate::metrics::Metrics>,
    /// Defaults for new jobs' execution policy (a reload may change them).
    pub exec_defaults: RwLock<crate::job::Exec>,
    /// What the last reload did, for `status`.
    pub reload: Mutex<crate::reload::ReloadState>,
    /// One reload at a time.
    pub reload_lock: tokio::sync::Mutex<()>,
    /// The command line, whose options win over the configuration file at every reload.
    pub args: crate::config::Args,
}

impl Shared {
    /// The defaults a new job gets for what it does not set.
    pub fn exec_defaults(&self) -> crate::job::Exec {
        self.exec_defaults
            .read()
            .map(|d| d.clone())
            .unwrap_or_default()
    }

    pub fn reload_state(&self) -> crate::reload::ReloadState {
        self.reload.lock().map(|r| r.clone()).unwrap_or_default()
    }
}

/// The bound socket. Removes the socket file when dropped.
#[derive(Debug)]
pub struct Listener {
    listener: UnixListener,
    path: PathBuf,
    _lock: LockFile,
}

impl Drop for Listener {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
    }
}

/// Binds the socket of `config` (see the module docs for the order of steps).
pub fn bind(config: &Config) -> anyhow::Result<Listener> {
    let path = &config.socket;
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
        _lock: lock,
    })
}

/// Accepts connections until `shutdown` is cancelled.
pub async fn serve(
    listener: Listener,
    shared: Arc<Shared>,
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
                let permit = Arc::clone(&slots).try_acquire_owned().ok();
                tokio::spawn(crate::connection::serve(
                    stream,
                    next_id,
                    Arc::clone(&shared),
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
