//! Group commit: gathering a batch. What is ready is taken at once; then the engine may wait a
//! little for more (concurrent clients' next requests, or runs' ends from a quick queue) so
//! that one commit carries them all (step 2 of the engine's module docs). Spawned pids are
//! recorded lazily, riding along with other work.

use super::batch::Work;
use super::{Engine, MAX_BATCH, Message, wedge};
use crate::machine::Event;
use std::sync::mpsc;
use std::time::{Duration, Instant};

/// Longest wait for more concurrent requests before a commit.
pub const GATHER_WINDOW: Duration = Duration::from_micros(200);

/// Longest wait for more runs' ends before a commit, when a batch holds only runs' ends and the
/// runner has opened runs in hand. No slot waits on recording an end (the runner has already
/// started the next opened run), so ends arriving close together share a commit; `wait` hears of
/// an end this much later at most.
pub const ENDS_WINDOW: Duration = Duration::from_millis(8);

/// Most runs' ends gathered for one commit.
const ENDS_MAX: usize = 64;

/// Longest a spawned run's pid waits to be recorded with other work. The pid is for people
/// (`show`); recovery does not need it, so it does not cost a commit of its own while the
/// engine is busy.
pub(super) const LAZY_MAX: Duration = Duration::from_millis(200);

/// Whether a message is a spawned pid, which can wait to be recorded.
pub(super) fn is_lazy(message: &Message) -> bool {
    matches!(
        message,
        Message::Work {
            work: Work::Runner {
                event: Event::Spawned { .. },
                ..
            },
            reply: None,
        }
    )
}

impl Engine {
    /// Adds what is ready to `batch` (see step 2 of the engine's module docs). Returns true when a
    /// shutdown request was among it.
    pub(super) fn gather(&mut self, batch: &mut Vec<Message>) -> bool {
        batch.retain(|m| !matches!(m, Message::Doorbell));
        self.take_mail(batch);
        let mut stop = batch.iter().any(|m| matches!(m, Message::Shutdown));
        let requests = |batch: &[Message]| {
            batch
                .iter()
                .filter(|m| matches!(m, Message::Work { reply: Some(_), .. }))
                .count()
        };
        let target = self.last_requests;
        let deadline = Instant::now() + GATHER_WINDOW;
        let ends_deadline = Instant::now() + ENDS_WINDOW;
        // Only runs' ends (and pids) so far, and more runs open: worth waiting for their ends.
        let only_ends = |batch: &[Message]| {
            !batch.is_empty()
                && batch.iter().all(|m| {
                    matches!(
                        m,
                        Message::Work {
                            work: Work::Runner {
                                event: Event::Exited { .. }
                                    | Event::Finished { .. }
                                    | Event::Spawned { .. },
                                ..
                            },
                            reply: None,
                        }
                    )
                })
        };
        let mut waited_for_ends = false;
        while batch.len() < MAX_BATCH && !stop {
            let next = match self.inbox.try_recv() {
                Ok(message) => Some(message),
                Err(mpsc::TryRecvError::Disconnected) => break,
                Err(mpsc::TryRecvError::Empty) => {
                    let now = Instant::now();
                    // Worth waiting for only while the runner has opened runs in hand to start
                    // as processes end; otherwise slots would wait for this commit.
                    let in_hand = self.runner.pending();
                    let ends = only_ends(batch)
                        && in_hand > 0
                        && now < ends_deadline
                        && batch.len() < ENDS_MAX;
                    if !ends && (target < 2 || requests(batch) >= target || now >= deadline) {
                        break;
                    }
                    if ends {
                        // Sleep until as many more runs have ended as three quarters of the runs
                        // in hand (the mailbox rings), a request arrives, or the window closes;
                        // not once per end. The last quarter keeps the slots busy while this
                        // commits.
                        let expected = (in_hand * 3 / 4).clamp(1, ENDS_MAX - batch.len());
                        if self.mailbox.ring_at(expected) {
                            break;
                        }
                        waited_for_ends = true;
                        self.inbox.recv_timeout(ends_deadline - now).ok()
                    } else {
                        self.inbox.recv_timeout(deadline - now).ok()
                    }
                }
            };
            match next {
                Some(Message::Shutdown) => stop = true,
                Some(Message::Wedge) => wedge(),
                // The ends waited for are in.
                Some(Message::Doorbell) if waited_for_ends => break,
                Some(Message::Doorbell) => self.take_mail(batch),
                Some(message) => batch.push(message),
                None => break,
            }
        }
        // What came in while waiting, and a ring for the next report.
        self.take_mail(batch);
        self.last_requests = requests(batch);
        stop
    }

    /// Moves the runner's reports from the mailbox into `batch`.
    pub(super) fn take_mail(&self, batch: &mut Vec<Message>) {
        batch.extend(
            self.mailbox
                .take()
                .into_iter()
                .map(|report| Message::work(report.into())),
        );
    }
}
