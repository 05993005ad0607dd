//! What the engine tells the world after a commit, besides replies: each committed event goes to
//! metrics, to watchers and to the log (runs' starts and ends at `info`, as journal fields); each
//! user's change gets an audit record. The log records of a batch ([`Records`]) are written by
//! the postman after the batch's replies ([`super::replies`]), off the engine thread: formatting
//! them and handing them to journald or stderr was a tenth of the engine's time under 32
//! clients, and nothing waits on them.

use super::Engine;
use super::batch;
use chime_proto::{EventRecord, RunId};
use std::collections::HashMap;
use std::sync::Arc;

/// A committed batch's log records, to be written in this order: the audit records of users'
/// changes, then the events.
#[derive(Debug, Default)]
pub(super) struct Records {
    pub(super) audits: Vec<batch::Audit>,
    pub(super) events: Vec<Arc<EventRecord>>,
    /// The owner and command line of each run started, for its `run started` record.
    pub(super) started: HashMap<RunId, (String, String)>,
    /// Dropped with the records, once they are written: lets the output of the batch's
    /// `--output journal` runs into the log after their `run started` records.
    pub(super) opener: Option<crate::runner::journal::Opener>,
}

impl Records {
    /// Writes the records, then lets the batch's runs' output follow them.
    pub(super) fn write(self) {
        for audit in &self.audits {
            log_audit(audit);
        }
        for event in &self.events {
            log_event(event, &self.started);
        }
        drop(self.opener);
    }
}

impl Engine {
    /// Sends committed events to metrics and watchers, and returns them for the log (one record
    /// per run's start and end, with the job's fields, so that `journalctl JOB_ID=N` tells its
    /// story). Never blocks: a watcher that cannot keep up lags and catches up from the log.
    /// In a fleet, sends this host's watchers the events other hosts committed since the last
    /// batch, in order, before this batch's own (which begin at `first_own`, and end at `head`):
    /// every host's watchers see the whole log, gap-free and in commit order, within a poll.
    /// They are read back from the log (and logged to the journal by the host that made them).
    pub(super) fn relay_others(&mut self, head: u64, first_own: Option<u64>) {
        if !self.in_fleet() {
            return;
        }
        let upto = first_own.map_or(head, |first| first.saturating_sub(1));
        if upto > self.published && self.events.receiver_count() > 0 {
            let mut after = self.published;
            while after < upto {
                let read = self
                    .store
                    .read()
                    .and_then(|reader| reader.events_after(after, 1024, None));
                match read {
                    Ok((events, examined)) => {
                        for event in events.into_iter().filter(|e| e.seq <= upto) {
                            let _ = self.events.send(Arc::new(event));
                        }
                        if examined <= after {
                            break;
                        }
                        after = examined;
                    }
                    Err(err) => {
                        // A watcher that misses them reads them from the log when it lags.
                        tracing::warn!(error = %err, "cannot read other hosts' events to relay them");
                        break;
                    }
                }
            }
        }
        self.published = self.published.max(head);
    }

    pub(super) fn publish(&mut self, events: Vec<EventRecord>) -> Vec<Arc<EventRecord>> {
        let watched = self.events.receiver_count() > 0;
        let mut logged = Vec::with_capacity(events.len());
        for event in events {
            self.metrics.event(&event);
            let event = Arc::new(event);
            if watched {
                let _ = self.events.send(event.clone());
            }
            logged.push(event);
        }
        logged
    }
}

/// The audit record of a user's change: who (ACTOR_UID), what (REQUEST), to which job and whose
/// (JOB_ID, OWNER_UID), at `info`.
fn log_audit(audit: &batch::Audit) {
    let (job_id, owner_uid, job_name) = match &audit.job {
        Some((id, owner, name)) => (Some(id.0), Some(*owner), name.as_deref()),
        None => (None, None, None),
    };
    tracing::info!(
        actor_uid = audit.actor,
        request = audit.verb,
        job_id,
        owner_uid,
        job_name,
        target = audit.target.as_deref(),
        "change by a user"
    );
}

/// The log record of an event: runs' starts and ends at `info`, everything else at `debug`.
/// Fields become journal fields (JOB_ID, JOB_NAME, RUN_ID, QUEUE, STATE, EXIT_CODE, and a run's
/// usage: CPU_USER_US, MEMORY_PEAK_BYTES, ...). A
/// run's start names its owner and command (OWNER_UID, USER, COMMAND), as cron logs
/// `(user) CMD (command)`.
fn log_event(event: &EventRecord, started: &HashMap<RunId, (String, String)>) {
    use chime_proto::EventKind;
    let job_id = event.job.map(|j| j.0);
    let job_name = event.name.as_deref();
    match &event.kind {
        EventKind::Started {
            run,
            attempt,
            due_ms,
            queue,
        } => {
            let (user, command) = started
                .get(run)
                .map_or((None, None), |(u, c)| (Some(u.as_str()), Some(c.as_str())));
            tracing::info!(
                job_id,
                job_name,
                run_id = run.0,
                attempt,
                queue = %queue,
                owner_uid = event.owner,
                user,
                command,
                state = "running",
                late_ms = event.at_ms.saturating_sub(*due_ms),
                seq = event.seq,
                "run started"
            )
        }
        EventKind::Ended {
            run,
            attempt,
            outcome,
            duration_ms,
            usage,
        } => {
            let (exit_code, signal) = (outcome.exit_code(), outcome.signal());
            let usage = usage.as_ref();
            tracing::info!(
                job_id,
                job_name,
                run_id = run.0,
                attempt,
                state = outcome.as_str(),
                outcome = %outcome,
                exit_code,
                signal,
                duration_ms,
                cpu_user_us = usage.map(|u| u.cpu_user_us),
                cpu_system_us = usage.map(|u| u.cpu_system_us),
                memory_peak_bytes = usage.and_then(|u| u.memory_peak_bytes),
                io_read_bytes = usage.and_then(|u| u.io_read_bytes),
                io_write_bytes = usage.and_then(|u| u.io_write_bytes),
                seq = event.seq,
                "run ended"
            );
        }
        EventKind::State { from, to } => tracing::debug!(
            job_id,
            job_name,
            from = from.as_str(),
            state = to.as_str(),
            seq = event.seq,
            "job state changed"
        ),
        other => tracing::debug!(
            job_id,
            job_name,
            event = other.as_str(),
            seq = event.seq,
            "event"
        ),
    }
}
