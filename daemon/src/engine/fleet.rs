//! The engine as one host of a fleet (a PostgreSQL store shared by several chimed): what it does
//! that a lone host does not.
//!
//! - **It hears and polls.** Other hosts' commits add jobs, due times, releases, events and
//!   requests to stop its runs: each such commit sends a `NOTIFY`, which wakes this engine for a
//!   batch at once (`Store::on_change`), and as notifications are only a hint (one sent while
//!   the listener reconnects is lost) it also runs a batch at least every [`POLL`] (at most
//!   one woken batch per [`HINT_GAP`]; each batch reads the shared tables
//!   under the fleet's writer lock, and so sees every commit before it). Whichever host commits
//!   first takes a due occurrence; the next finds it gone.
//! - **It declares gone hosts.** Every [`FENCE_EVERY`], its batch is committed through
//!   [`Store::write_fencing`](crate::store::Store::write_fencing): hosts whose lease ended are
//!   declared gone, and their open runs are closed as `lost` in the same transaction
//!   ([`lost_work`]), each job's retry policy deciding what runs again (here, or on whichever
//!   host commits it).
//! - **It stops when fenced.** A write refused because this host was declared gone (it was
//!   stopped or cut off past its lease) means its runs are already closed and may be running
//!   elsewhere: it ends every process it still runs and exits ([`Engine::fenced`]), to be started
//!   again (by systemd) with a new epoch.

use super::batch::Work;
use super::{Engine, Message};
use crate::job::HostId;
use crate::machine::Event;
use crate::store::{StoreError, Writer};
use std::time::{Duration, Instant};

/// Longest a fleet host's engine goes without a batch.
pub const POLL: Duration = Duration::from_millis(250);

/// Least time between a fleet host's batches woken by other hosts' notifications: a storm of
/// commits on one host wakes the others at most this often, so that they do not take the
/// writer lock from it at every commit.
pub const HINT_GAP: Duration = Duration::from_millis(100);

/// How often a fleet host's batch looks for hosts whose lease ended.
pub const FENCE_EVERY: Duration = Duration::from_secs(1);

/// The runs of `gone` hosts, to close as lost: one `lost` event per job and gone host with runs
/// open. What they ran no longer counts against queue limits.
pub fn lost_work(w: &mut Writer<'_>, gone: &[HostId]) -> Result<Vec<Work>, StoreError> {
    let mut work = Vec::new();
    if gone.is_empty() {
        return Ok(work);
    }
    for host in gone {
        w.clear_fleet_running(host)?;
    }
    for id in w.running_jobs()? {
        let Some(job) = w.job(id)? else { continue };
        for host in gone {
            if job
                .state
                .runs()
                .iter()
                .any(|r| r.host.as_deref() == Some(&**host))
            {
                tracing::warn!(job_id = id.0, host = %host, "a gone host's runs of the job are recorded as lost");
                work.push(Work::Runner {
                    job: id,
                    event: Event::Lost {
                        ended: Default::default(),
                        host: Some(host.clone()),
                    },
                });
            }
        }
    }
    Ok(work)
}

impl Engine {
    /// Whether this engine shares its store with other hosts.
    pub(super) fn in_fleet(&self) -> bool {
        self.config.host.is_some()
    }

    /// Whether a fleet host's engine is due to run a batch for what other hosts changed.
    pub(super) fn poll_due(&self) -> bool {
        use std::sync::atomic::Ordering::Relaxed;
        if !self.in_fleet() {
            return false;
        }
        let since = self.last_poll.elapsed();
        if since >= POLL || (since >= HINT_GAP && self.hinted.load(Relaxed)) {
            self.hinted.store(false, Relaxed);
            return true;
        }
        false
    }

    /// How long a fleet host's engine may wait before its next poll (`None`: not in a fleet).
    pub(super) fn time_to_poll(&self) -> Option<Duration> {
        let hinted = self.hinted.load(std::sync::atomic::Ordering::Relaxed);
        let next = if hinted { HINT_GAP } else { POLL };
        self.in_fleet()
            .then(|| next.saturating_sub(self.last_poll.elapsed()))
    }

    /// Whether this batch should look for gone hosts (and notes that it does).
    pub(super) fn fence_now(&mut self) -> bool {
        self.last_poll = Instant::now();
        if self.in_fleet() && self.last_fence.elapsed() >= FENCE_EVERY {
            self.last_fence = Instant::now();
            return true;
        }
        false
    }

    /// This host was declared gone: its runs were closed as lost and may run elsewhere. Ends
    /// every process it still runs (SIGTERM, the stop grace, SIGKILL) and exits with a failure,
    /// writing nothing (every write is refused now).
    pub(super) fn fenced(&mut self, err: &StoreError) -> ! {
        tracing::error!(error = %err, runs = self.runner.len(), "this host was declared gone by the fleet (its lease ended): ending its runs and exiting; starting chimed again (systemd does) joins the fleet anew");
        self.runner.terminate_all(self.config.stop_grace);
        let deadline = Instant::now() + self.config.stop_grace + Duration::from_secs(5);
        while !self.runner.is_empty() && Instant::now() < deadline {
            let mut batch = Vec::new();
            self.take_mail(&mut batch);
            if batch.is_empty()
                && let Ok(message) = self.inbox.recv_timeout(Duration::from_millis(50))
            {
                batch.push(message);
            }
            for message in batch {
                match message {
                    Message::Work {
                        work:
                            Work::Runner {
                                event:
                                    Event::Exited { run, .. }
                                    | Event::Finished { run, .. }
                                    | Event::SpawnFailed { run, .. }
                                    | Event::Unstarted { run },
                                ..
                            },
                        ..
                    } => self.runner.finished(run),
                    Message::Work {
                        reply: Some(reply), ..
                    } => {
                        let _ = reply.send(Err(super::inbox::shutting_down()));
                    }
                    _ => {}
                }
            }
        }
        std::process::exit(1);
    }
}
