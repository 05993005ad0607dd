//! Events: what happened to jobs, in the order it was committed.
//!
//! The daemon appends an [`EventRecord`] for every change of a job, queue or pause in the same
//! transaction as the change, under a sequence number that only grows. The log keeps the most
//! recent events (a bounded number; `chimed --event-retention`). A client follows it with
//! [`crate::Request::Watch`]: the daemon answers with [`WatchStart`], then sends
//! [`crate::ServerMessage::Watch`] frames until the client closes the connection.
//!
//! Resuming: a client that remembers the last sequence number it saw reconnects with
//! `since: Some(seq)` and gets every later event still retained, then the live ones, with no gap
//! and no duplicate. If `seq` was already pruned, [`WatchStart::pruned`] says so and the stream
//! starts at the oldest retained event.

use crate::job::{JobId, JobRef, JobState, Outcome, PauseTarget, RunId, RunUsage};
use serde::{Deserialize, Serialize};

/// One committed change.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EventRecord {
    /// Increasing, never reused, from 1.
    pub seq: u64,
    /// When the change was committed (ms since the epoch, UTC).
    pub at_ms: i64,
    /// The job it happened to; `None` for a queue or a pause of everything.
    pub job: Option<JobId>,
    /// The job's name, if it has one.
    pub name: Option<String>,
    /// The uid of the job's owner. A watcher who is not root (or chimed's user) sees only the
    /// events of their own jobs, and those of queues and of everything.
    pub owner: Option<u32>,
    pub kind: EventKind,
    /// Who made the change: the uid of the user whose request it was (root's too, when root acts
    /// on someone else's job); `None` when chimed did it by itself (a run ended, a timer fired, a
    /// timed pause ran out, a reload on SIGHUP).
    pub actor: Option<u32>,
}

/// What happened. Append new variants at the end only.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum EventKind {
    /// A job was stored. `source` is `chimectl` or the job file that declares it.
    Added {
        queue: String,
        next_due_ms: Option<i64>,
        timer: bool,
        source: String,
    },
    /// A job's spec was replaced (`add --replace`, or its job file changed).
    Updated { next_due_ms: Option<i64> },
    /// A job moved from one state to another.
    State { from: JobState, to: JobState },
    /// A run was started (its process is being spawned).
    Started {
        run: RunId,
        attempt: u32,
        due_ms: i64,
        queue: String,
    },
    /// A run ended. `usage`: what it cost, read from its cgroup (`None`: it had none).
    Ended {
        run: RunId,
        attempt: u32,
        outcome: Outcome,
        duration_ms: u64,
        usage: Option<RunUsage>,
    },
    /// A timer fired: `due_ms` is when it was due, `at_ms` of the record when it fired.
    Fired {
        run: RunId,
        due_ms: i64,
        manual: bool,
    },
    /// An occurrence did not run (`catch_up`, `deadline`, `overlap`, `skipped`, `too_many`).
    Missed { due_ms: i64, reason: String },
    /// A job, a queue or everything was paused.
    Paused {
        target: PauseTarget,
        until_ms: Option<i64>,
        reason: Option<String>,
    },
    /// A job, a queue or everything was resumed (by a user or because its pause ended).
    Resumed { target: PauseTarget },
    /// A job was removed: `removed` (by a user), `expired` (its retention ended) or `undeclared`
    /// (its job file was removed).
    Removed { reason: String },
    /// A queue's limits changed: how many of its jobs may run at once, and the resources each
    /// run may take.
    QueueLimit {
        queue: String,
        parallel: Option<u32>,
        limits: crate::ResourceLimits,
    },
}

impl EventKind {
    /// A stable lowercase word for filters and `--json`.
    pub const fn as_str(&self) -> &'static str {
        match self {
            Self::Added { .. } => "added",
            Self::Updated { .. } => "updated",
            Self::State { .. } => "state",
            Self::Started { .. } => "started",
            Self::Ended { .. } => "ended",
            Self::Fired { .. } => "fired",
            Self::Missed { .. } => "missed",
            Self::Paused { .. } => "paused",
            Self::Resumed { .. } => "resumed",
            Self::Removed { .. } => "removed",
            Self::QueueLimit { .. } => "queue_limit",
        }
    }
}

/// Follow the event log.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WatchQuery {
    /// Send events after this sequence number (the last one the client saw); `None`: only events
    /// committed from now on. `Some(0)`: every retained event.
    pub since: Option<u64>,
    /// Only events of this job.
    pub job: Option<JobRef>,
}

/// The answer to a watch, before the stream of events.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WatchStart {
    /// The oldest retained event's sequence number (0 when the log is empty).
    pub oldest: u64,
    /// The newest committed event's sequence number (0 when none yet).
    pub head: u64,
    /// The first sequence number that may be sent.
    pub from: u64,
    /// True when `since` asked for events already pruned: the stream starts at `oldest`.
    pub pruned: bool,
    /// The job the watch is limited to, resolved.
    pub job: Option<JobId>,
}

/// A frame of a watch stream.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WatchFrame {
    /// The id of the watch request.
    pub id: u64,
    pub item: WatchItem,
}

/// What a watch stream carries.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum WatchItem {
    /// Events, in sequence order.
    Events(Vec<EventRecord>),
    /// The client read more slowly than events were committed, so the daemon stopped buffering
    /// for it; the events from `resume_from` on follow from the log. Nothing is lost unless
    /// `lost` (they were pruned from the log before the client caught up).
    Lagged { resume_from: u64, lost: u64 },
}
