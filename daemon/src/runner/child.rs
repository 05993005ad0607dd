//! A started run's process, waited for through its pidfd.
//!
//! The pidfd becomes readable when the process exits; then it is reaped with `waitpid` on its
//! pid, which cannot have been reused: only this owner reaps it. No SIGCHLD handler is involved
//! and nothing in chimed waits for any child (`waitpid(-1)`), so no one else reaps it. The pidfd
//! is registered with the runtime only if the process is still running at the first look: a
//! quick run is reaped without it.

use nix::sys::wait::{WaitPidFlag, WaitStatus, waitpid};
use nix::unistd::Pid;
use std::io;
use std::os::fd::OwnedFd;
use std::os::unix::process::ExitStatusExt;
use std::process::ExitStatus;
use tokio::io::unix::AsyncFd;

/// A process started by [`super::spawn`], not yet reaped.
#[derive(Debug)]
pub struct Child {
    pid: Pid,
    pidfd: Option<OwnedFd>,
    watched: Option<AsyncFd<OwnedFd>>,
}

impl Child {
    pub fn new(started: super::spawn::Started) -> Self {
        Self {
            pid: Pid::from_raw(started.pid),
            pidfd: Some(started.pidfd),
            watched: None,
        }
    }

    pub fn id(&self) -> u32 {
        self.pid.as_raw() as u32
    }

    /// Waits until the process exits, and reaps it.
    pub async fn wait(&mut self) -> io::Result<ExitStatus> {
        if let Some(status) = reap(self.pid)? {
            return Ok(status);
        }
        if self.watched.is_none() {
            let fd = self.pidfd.take().expect("a pidfd until it is watched");
            self.watched = Some(super::spawn::watch_pidfd(fd)?);
        }
        let watched = self.watched.as_ref().expect("watched");
        loop {
            let mut ready = watched.readable().await?;
            if let Some(status) = reap(self.pid)? {
                return Ok(status);
            }
            ready.clear_ready();
        }
    }
}

/// Reaps `pid` if it has exited, without waiting.
fn reap(pid: Pid) -> io::Result<Option<ExitStatus>> {
    loop {
        match waitpid(pid, Some(WaitPidFlag::WNOHANG)) {
            Ok(WaitStatus::Exited(_, code)) => return Ok(Some(ExitStatus::from_raw(code << 8))),
            Ok(WaitStatus::Signaled(_, signal, core)) => {
                let raw = signal as i32 | if core { 0x80 } else { 0 };
                return Ok(Some(ExitStatus::from_raw(raw)));
            }
            Ok(_) => return Ok(None),
            Err(nix::errno::Errno::EINTR) => continue,
            Err(e) => return Err(e.into()),
        }
    }
}
