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

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    fn log(dir: &tempfile::TempDir) -> OutputLog {
        OutputLog::new(dir.path().join("out.log"), 1 << 20)
    }

    #[test]
    fn an_idle_pipe_is_read_to_its_end_at_once() {
        let dir = tempfile::tempdir().unwrap();
        let mut log = log(&dir);
        let (mut pipe, write) = pair().unwrap();
        File::from(write).write_all(b"hello\n").unwrap(); // and closed: the writer is gone
        let mut buf = [0u8; 4];
        pipe.read_now(Stream::Stdout, &mut log, &mut buf);
        assert!(!pipe.is_open(), "at its end");
        assert_eq!(log.total(), 6, "in several reads of a small buffer");
    }

    #[test]
    fn an_idle_pipe_whose_writer_lives_stays_open_and_its_writer_blocking() {
        let dir = tempfile::tempdir().unwrap();
        let mut log = log(&dir);
        let (mut pipe, write) = pair().unwrap();
        let mut writer = File::from(write);
        writer.write_all(b"partial").unwrap();
        let mut buf = [0u8; 64];
        pipe.read_now(Stream::Stderr, &mut log, &mut buf);
        assert!(pipe.is_idle(), "still open, not yet watched");
        assert_eq!(log.total(), 7);
        let flags = fcntl(&writer, FcntlArg::F_GETFL).unwrap();
        assert_eq!(
            OFlag::from_bits_truncate(flags) & OFlag::O_NONBLOCK,
            OFlag::empty(),
            "the child's end blocks, as programs expect"
        );
    }

    #[tokio::test]
    async fn a_watched_pipe_is_read_as_it_fills_and_closes_at_its_end() {
        let dir = tempfile::tempdir().unwrap();
        let mut log = log(&dir);
        let (mut pipe, write) = pair().unwrap();
        pipe.watch();
        assert!(pipe.is_watched());
        let writer = std::thread::spawn(move || {
            let mut writer = File::from(write);
            writer.write_all(b"one\n").unwrap();
            std::thread::sleep(Duration::from_millis(20));
            writer.write_all(b"two\n").unwrap();
        });
        let mut buf = [0u8; 64];
        while let Some(n) = pipe.read(&mut buf).await {
            log.append(Stream::Stdout, &buf[..n]);
        }
        writer.join().unwrap();
        assert!(!pipe.is_open());
        assert_eq!(log.total(), 8);
    }
}
