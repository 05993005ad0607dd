//! A run's stdout and stderr pipes, watched by the runtime only when the run lasts.
//!
//! Most runs of a busy queue last a few milliseconds. Registering each of a run's pipes with the
//! runtime's epoll, waking on its hang-up and deregistering it costs more than the rest of the
//! run's supervision, so a pipe starts **idle**: the process writes into the pipe's buffer (64 KiB
//! on Linux) and nothing watches it.
//!
//! - If the process ends first, what it wrote is read at once, without waiting ([`Pipe::read_now`]);
//!   usually the pipe is then at its end and nothing was ever registered.
//! - If the process is still running after [`WATCH_AFTER`], or a background child of it still
//!   holds the pipe open when it ends, the pipe is registered ([`Pipe::watch`]) and read as it
//!   fills, as `logs -f` expects.
//!
//! A process that writes more than the buffer holds before [`WATCH_AFTER`] waits for the rest of
//! it, once.

use super::output::OutputLog;
use chime_proto::Stream;
use nix::fcntl::{FcntlArg, OFlag, fcntl};
use std::fs::File;
use std::io::{ErrorKind, Read};
use std::os::fd::OwnedFd;
use std::time::Duration;
use tokio::io::AsyncReadExt;
use tokio::net::unix::pipe::Receiver;

/// How long a run's pipes stay idle.
pub const WATCH_AFTER: Duration = Duration::from_millis(10);

/// Most reads of an idle pipe in one [`Pipe::read_now`]: a background child that keeps writing
/// gets its pipe watched (and bounded by the drain period) instead.
const READS_NOW: usize = 16;

/// The read end of an output pipe.
#[derive(Debug)]
pub enum Pipe {
    /// Not registered with the runtime; non-blocking.
    Idle(File),
    Watched(Receiver),
    /// At its end (or unreadable).
    Closed,
}

/// A new pipe: its read end (idle) and its write end, for the child.
pub fn pair() -> std::io::Result<(Pipe, OwnedFd)> {
    let (read, write) = nix::unistd::pipe2(OFlag::O_CLOEXEC)?;
    // Only the read end: the child's end stays blocking, as programs expect.
    fcntl(&read, FcntlArg::F_SETFL(OFlag::O_NONBLOCK))?;
    Ok((Pipe::Idle(File::from(read)), write))
}

impl Pipe {
    pub fn is_open(&self) -> bool {
        !matches!(self, Self::Closed)
    }

    pub fn is_watched(&self) -> bool {
        matches!(self, Self::Watched(_))
    }

    pub fn is_idle(&self) -> bool {
        matches!(self, Self::Idle(_))
    }

    /// Registers an idle pipe with the runtime, so that [`Pipe::read`] waits for it.
    pub fn watch(&mut self) {
        if let Self::Idle(_) = self
            && let Self::Idle(file) = std::mem::replace(self, Self::Closed)
        {
            match Receiver::from_file_unchecked(file) {
                Ok(receiver) => *self = Self::Watched(receiver),
                Err(error) => {
                    tracing::warn!(%error, "cannot watch a run's output pipe; the rest of its output is lost");
                }
            }
        }
    }

    /// Reads what an idle pipe holds now, without waiting, into `log`. The pipe is closed if it
    /// reached its end; it stays idle if its writer may still write (a background child).
    pub fn read_now(&mut self, stream: Stream, log: &mut OutputLog, buf: &mut [u8]) {
        let Self::Idle(file) = self else {
            return;
        };
        for _ in 0..READS_NOW {
            match file.read(buf) {
                Ok(n) if n > 0 => log.append(stream, &buf[..n]),
                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                Err(e) if e.kind() == ErrorKind::WouldBlock => return,
                // The end, or an error reading it.
                Ok(_) | Err(_) => {
                    *self = Self::Closed;
                    return;
                }
            }
        }
    }

    /// Waits for output from a watched pipe; `None` (and closed) at its end.
    pub async fn read(&mut self, buf: &mut [u8]) -> Option<usize> {
        let Self::Watched(receiver) = self else {
            return std::future::pending().await;
        };
        match receiver.read(buf).await {
            Ok(n) if n > 0 => Some(n),
            _ => {
                *self = Self::Closed;
                None
            }
        }
    }
}
