//! Applying one batch of work inside one write transaction.
//!
//! [`apply`] runs on the engine thread inside [`crate::store::Store::write`]. It looks up the
//! jobs each piece of work touches, runs the state machine, writes what the machine returns, and
//! collects what must happen after the commit: replies, spawns and signals. Nothing here has an
//! effect outside the transaction, so if the commit fails, nothing happened.
//!
//! After the work itself, a batch
//! 1. ends timed pauses whose time has come,
//! 2. fires due occurrences from the timer index (at most [`FIRE_LIMIT`] per batch), and
//! 3. releases waiting jobs: all of a queue's waiting jobs when it (or everything) resumed, so
//!    that held occurrences meet their catch-up policy, and as many as there are free slots when
//!    runs ended.
//!
//! Slots and dispatch-ahead: a queue with a limit of N may have N runs *open* (committed), and
//! the daemon `--max-running`. A queue whose runs are quick (see [`Facts::quick`]) may have more
//! open, up to N + 3N (at least 32, at most 64), and the daemon as many beyond `--max-running`
//! for them: the runner starts at most N processes of the queue (and `--max-running` in all) and
//! starts the next open run the moment a process ends, so a slot never waits for a commit. Runs
//! that last are not opened ahead: a commit is nothing next to them, and a job shown `running`
//! should be running. Open runs are counted by the runner; runs planned in this batch are added
//! here.
//!
//! # Layout
//!
//! - this module: the interface: [`Work`] in, [`Applied`] out, and the [`Facts`] a batch is given;
//! - [`core`]: the transaction core ([`apply`], the dispatch of work, every job's transition);
//! - [`jobs`]: submissions and the other changes of one job;
//! - [`pauses`]: pauses, queue limits, slots and the release of waiting jobs;
//! - [`events`]: the event log and the audit records of a batch;
//! - [`reconcile`]: the declared jobs and queue limits of a (re)load.

mod core;
mod events;
mod jobs;
mod pauses;
mod reconcile;

pub use core::apply;
pub use reconcile::Reconcile;

use crate::job::{Exec, Ms, Run};
use crate::machine::Event;
use crate::runner::SpawnOrder;
use chime_proto::{
    ErrorReply, EventRecord, JobId, JobRef, JobSpec, JobState, PauseTarget, Response, RunId,
};
use jiff::tz::TimeZone;
use std::collections::{BTreeSet, HashMap};

/// Most due occurrences fired in one batch; the rest fire in the next one, at once.
pub const FIRE_LIMIT: usize = 1024;

/// Most waiting jobs released in one batch per queue after a resume; the rest follow.
pub const RELEASE_LIMIT: usize = 1024;

/// Most finished jobs removed in one batch when their retention ends; the rest follow.
pub const EXPIRE_LIMIT: usize = 256;

/// Old events removed per batch beyond as many as the batch added.
pub const EVENT_PRUNE_EXTRA: usize = 256;

/// Fewest runs opened ahead of a quick queue's free slots.
pub const PREFETCH_MIN: usize = 32;

/// Most runs opened ahead of a quick queue's free slots.
pub const PREFETCH_MAX: usize = 64;

/// How many runs may be open for a limit of `limit` processes: the limit, plus, when its runs are
/// quick, three times as many waiting to start (at least [`PREFETCH_MIN`], at most
/// [`PREFETCH_MAX`]), so that the runner has the next runs at hand while the engine records the
/// last ones (in one commit for many: see the engine's `ENDS_WINDOW`).
pub fn admission(limit: usize, quick: bool) -> usize {
    if quick {
        limit.saturating_add(limit.saturating_mul(3).clamp(PREFETCH_MIN, PREFETCH_MAX))
    } else {
        limit
    }
}

pub use crate::spec::{DEFAULT_QUEUE, MAX_DUE_MS};

/// One piece of work for the engine. Cloneable, so that runner events can be retried when a
/// commit fails.
#[derive(Debug, Clone)]
pub enum Work {
    /// A user's request that changes something.
    /// `user` is the account name of `uid` (recorded with the job); `exec` has chimed's defaults
    /// filled in.
    Submit {
        uid: u32,
        user: String,
        job: Box<JobSpec>,
        exec: Box<Exec>,
    },
    /// `chimectl edit`: replace job `id`'s spec, as a submission with `replace` does, if the
    /// spec is still at `revision` ([`crate::machine::Spec::revision`]). `job` and `exec` are
    /// checked, with chimed's defaults filled in.
    Edit {
        uid: u32,
        id: JobId,
        revision: u64,
        job: Box<JobSpec>,
        exec: Box<Exec>,
    },
    Cancel {
        uid: u32,
        job: JobRef,
    },
    Pause {
        uid: u32,
        target: PauseTarget,
        until_ms: Option<Ms>,
        for_ms: Option<u64>,
        reason: Option<String>,
    },
    Resume {
        uid: u32,
        target: PauseTarget,
    },
    Skip {
        uid: u32,
        job: JobRef,
    },
    Trigger {
        uid: u32,
        job: JobRef,
    },
    SetQueue {
        uid: u32,
        name: String,
        /// `None`: unchanged; `Some(None)`: no limit.
        parallel: Option<Option<u32>>,
        /// Remove the queue's resource limits before setting `limits`.
        clear_limits: bool,
        /// Each limit set here replaces the queue's.
        limits: chime_proto::ResourceLimits,
    },
    /// Answered when the job's current or next run has settled (see [`Applied::waits`]).
    Wait {
        uid: u32,
        job: JobRef,
        since_ms: Option<Ms>,
    },
    Kill {
        uid: u32,
        job: JobRef,
        signal: i32,
    },
    Retry {
        uid: u32,
        job: JobRef,
    },
    Remove {
        uid: u32,
        job: JobRef,
    },
    /// Apply the job files and queue limits of a (re)load (see [`Reconcile`]).
    Reconcile(Box<Reconcile>),
    /// Something the runner observed about a run.
    Runner {
        job: JobId,
        event: Event,
    },
}

impl Work {
    /// Who asks for this change: the user of a request; `None` for what chimed does by itself
    /// (runs ending, timers) and for a reload chimed started (SIGHUP, start).
    pub fn actor(&self) -> Option<u32> {
        match self {
            Self::Submit { uid, .. }
            | Self::Edit { uid, .. }
            | Self::Cancel { uid, .. }
            | Self::Pause { uid, .. }
            | Self::Resume { uid, .. }
            | Self::Skip { uid, .. }
            | Self::Trigger { uid, .. }
            | Self::SetQueue { uid, .. }
            | Self::Wait { uid, .. }
            | Self::Kill { uid, .. }
            | Self::Retry { uid, .. }
            | Self::Remove { uid, .. } => Some(*uid),
            Self::Reconcile(plan) => plan.actor,
            Self::Runner { .. } => None,
        }
    }

    /// The request's word in the audit log.
    pub const fn verb(&self) -> &'static str {
        match self {
            Self::Submit { .. } => "add",
            Self::Edit { .. } => "edit",
            Self::Cancel { .. } => "cancel",
            Self::Pause { .. } => "pause",
            Self::Resume { .. } => "resume",
            Self::Skip { .. } => "skip",
            Self::Trigger { .. } => "trigger",
            Self::SetQueue { .. } => "queue set",
            Self::Wait { .. } => "wait",
            Self::Kill { .. } => "kill",
            Self::Retry { .. } => "retry",
            Self::Remove { .. } => "rm",
            Self::Reconcile(_) => "reload",
            Self::Runner { .. } => "runner",
        }
    }
}

/// A change a user made, for the audit log: one record at `info` after the commit, as cron logs
/// each command it runs.
#[derive(Debug, Clone)]
pub struct Audit {
    /// Who made it (`SO_PEERCRED`), also when root acts on someone else's job.
    pub actor: u32,
    /// What was asked: `add`, `cancel`, `pause`, ...
    pub verb: &'static str,
    /// The job it changed, with its owner and name.
    pub job: Option<(JobId, u32, Option<String>)>,
    /// What else it is about: a queue, `all`, or the reload's summary.
    pub target: Option<String>,
}

/// A `wait` that could not be answered at once: the engine keeps its reply slot until a run of
/// the job settles.
#[derive(Debug, Clone)]
pub struct WaitFor {
    /// The index of the request in the batch.
    pub index: usize,
    pub job: JobId,
    pub since_ms: Option<Ms>,
}

/// A run that ended with no retry of its occurrence pending: what `wait` waits for.
#[derive(Debug, Clone)]
pub struct Settled {
    pub job: JobId,
    pub state: JobState,
    pub run: Run,
}

/// What the engine knows that a batch needs: the daemon's facts and the runs in progress.
#[derive(Debug, Clone)]
pub struct Facts {
    /// The database file, for messages about damaged records.
    pub database: std::sync::Arc<std::path::Path>,
    /// Since when chimed has kept time (see [`Ctx::on_time_since`]).
    pub on_time_since: Ms,
    /// Most events kept in the log.
    pub event_retention: u64,
    pub local_tz: TimeZone,
    pub max_running: usize,
    /// Runs in progress per queue (started and not yet reported ended).
    pub running: HashMap<String, usize>,
    /// The same, per user (for `running_per_user`).
    pub running_by_owner: HashMap<u32, usize>,
    /// What each user may take.
    pub limits: std::sync::Arc<crate::limits::Limits>,
    /// Queues whose recent runs were quick (the runner's judgement): runs are opened ahead.
    pub quick: BTreeSet<String>,
    /// Uids that may pause queues and everything: root and the daemon's own user.
    pub admin_uid: u32,
    /// Release every waiting queue in this batch (after a start).
    pub release_all: bool,
    /// Queues whose release after a resume did not finish in the last batch.
    pub continue_release: BTreeSet<String>,
    /// This host, in a fleet (see [`Ctx::host`]).
    pub host: Option<crate::job::HostId>,
}

/// What a batch decided, to be carried out after the commit.
#[derive(Debug, Default)]
pub struct Applied {
    /// One result per piece of work, in order; `None` for runner events.
    pub replies: Vec<Option<Result<Response, ErrorReply>>>,
    pub spawns: Vec<SpawnOrder>,
    pub terminations: Vec<RunId>,
    /// Signals for runs' process groups (`kill`).
    pub signals: Vec<(RunId, i32)>,
    /// Runs removed (pruned history, removed or expired jobs): their output is to be deleted.
    /// (job, run, the job's owner, whose disk share they took)
    pub deleted_runs: Vec<(JobId, RunId, u32)>,
    /// Waits to keep until a run settles.
    pub waits: Vec<WaitFor>,
    /// Runs that settled in this batch.
    pub settled: Vec<Settled>,
    /// Jobs removed in this batch (their waiters are told).
    pub removed: Vec<JobId>,
    /// Open runs to take back before they start (a pause).
    pub unstarts: Vec<crate::runner::Unstart>,
    /// Queue limits that changed.
    pub limits: Vec<(String, Option<u32>)>,
    /// Jobs whose state changed.
    pub changes: usize,
    /// The earliest due time left in the timer index, or the end of a timed pause.
    pub next_wake: Option<Ms>,
    /// The newest event in the log when the batch committed (its own included): in a fleet,
    /// what other hosts committed before it is relayed to this host's watchers up to it.
    pub event_head: u64,
    /// Queues whose release after a resume must continue in the next batch.
    pub continue_release: BTreeSet<String>,
    /// More due occurrences than one batch fires.
    pub more_due: bool,
    /// Events appended to the log in this batch, in order (sent to watchers after the commit).
    pub events: Vec<EventRecord>,
    /// Users' changes in this batch, for the audit log.
    pub audit: Vec<Audit>,
    /// For the log record of each run started in this batch: its owner's account and its
    /// command, as cron logs `(user) CMD (command)`.
    pub started: HashMap<RunId, (String, String)>,
}

#[cfg(test)]
mod tests;
