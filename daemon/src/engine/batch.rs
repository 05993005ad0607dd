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
//! the daemon `--max-running`. A queue whose runs are quick (see [`Env::quick`]) may have more
//! open, up to N + 3N (at least 32, at most 64), and the daemon as many beyond `--max-running`
//! for them: the runner starts at most N processes of the queue (and `--max-running` in all) and
//! starts the next open run the moment a process ends, so a slot never waits for a commit. Runs
//! that last are not opened ahead: a commit is nothing next to them, and a job shown `running`
//! should be running. Open runs are counted by the runner; runs planned in this batch are added
//! here.

use crate::job::{CatchUp, Exec, Job, Ms, Overlap, Pause, Run, Schedule, State};
use crate::machine::{self, Action, Ctx, Event, Refusal, Spec};
use crate::runner::SpawnOrder;
use crate::store::{Damage, Found, PauseKey, QueueRecord, StoreError, Writer};
use chime_proto::{
    Added, Cancelled, CatchUpPolicy, Command, ErrorCode, ErrorReply, EventKind, EventRecord, JobId,
    JobRef, JobSpec, JobState, Killed, Outcome, OverlapPolicy, PauseInfo, PauseTarget, Paused,
    QueueInfo, Removed, Response, Resumed, RunId, ScheduleSpec, Skipped, Triggered,
};
use jiff::tz::TimeZone;
use std::collections::{BTreeSet, HashMap};

mod reconcile;
pub use reconcile::Reconcile;

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

/// The queue a job goes to when it names none.
pub const DEFAULT_QUEUE: &str = "default";

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
        exec: Exec,
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
        parallel: Option<u32>,
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
pub struct Env {
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

/// What the steps of one transition did, for its events.
#[derive(Debug, Default)]
struct StepLog {
    /// Runs opened, in order.
    opened: Vec<crate::job::OpenRun>,
    /// Runs closed, as recorded.
    closed: Vec<Run>,
    /// Runs opened for a timer, to be closed as `fired` at once.
    timer_runs: Vec<RunId>,
}

/// The latest due time accepted: year 9999, so that arithmetic on due times never overflows.
pub const MAX_DUE_MS: Ms = 253_402_300_799_000;

struct Batch<'w, 't> {
    w: &'w mut Writer<'t>,
    env: &'w Env,
    now: Ms,
    fire: bool,
    out: Applied,
    /// Runs planned in this batch, per queue and per user.
    planned: HashMap<String, usize>,
    planned_by_owner: HashMap<u32, usize>,
    queues: HashMap<String, QueueRecord>,
    pause_all: Option<Pause>,
    /// Queues to release completely (a resume), and queues where slots freed.
    resumed: BTreeSet<String>,
    resumed_all: bool,
    slots_freed: bool,
    /// Who makes the change being applied (recorded in its events); `None`: chimed itself.
    actor: Option<u32>,
    /// The job the request being applied found (for its audit record).
    found: Option<(JobId, u32, Option<String>)>,
}

/// Applies `work`, then ends timed pauses, fires due occurrences (when `fire`) and releases
/// waiting jobs.
pub fn apply(
    w: &mut Writer<'_>,
    env: &Env,
    work: Vec<Work>,
    now: Ms,
    fire: bool,
) -> Result<Applied, StoreError> {
    let pause_all = w.pause_all()?;
    let mut b = Batch {
        w,
        env,
        now,
        fire,
        out: Applied::default(),
        planned: HashMap::new(),
        planned_by_owner: HashMap::new(),
        queues: HashMap::new(),
        pause_all,
        resumed: env.continue_release.clone(),
        resumed_all: env.release_all,
        slots_freed: false,
        actor: None,
        found: None,
    };
    for (index, item) in work.into_iter().enumerate() {
        b.actor = item.actor();
        b.found = None;
        let (verb, audited) = (item.verb(), !matches!(item, Work::Wait { .. }));
        let reply = match b.work(index, item) {
            Ok(reply) => reply,
            // One damaged record fails its own request, never the batch.
            Err(StoreError::Corrupt(damage)) => Some(Err(b.damaged(damage.job(), damage)?)),
            Err(err) => return Err(err),
        };
        if let (Some(actor), Some(Ok(response)), true) = (b.actor, &reply, audited) {
            let audit = b.audit(actor, verb, response);
            b.out.audit.push(audit);
        }
        b.out.replies.push(reply);
    }
    // What follows is chimed's own doing.
    b.actor = None;
    for (until, key) in b.w.ended_pauses(now)? {
        b.end_pause(until, key)?;
    }
    for id in b.w.expired_jobs(now, EXPIRE_LIMIT)? {
        if let Some(job) = b.load(id)? {
            tracing::info!(job_id = id.0, "retention ended; removing the job");
            b.delete(&job, "expired")?;
        }
    }
    if fire {
        let due = b.w.due_jobs(now, FIRE_LIMIT)?;
        b.out.more_due = due.len() == FIRE_LIMIT;
        for id in due {
            if let Some(job) = b.load(id)? {
                if let Err(refusal) = b.transition(&job, Event::Fire)? {
                    // put_job keeps the index and the row together, so this means the database
                    // was changed behind chime's back. Say so; do not spin on it.
                    tracing::error!(job_id = id.0, %refusal, "job in the timer index is not due");
                }
            }
        }
    }
    b.release()?;
    // Keep the log bounded: remove as many old events as this batch added, and some more, so
    // that a lowered retention converges too.
    let added = b.out.events.len();
    b.w.prune_events(env.event_retention, added + EVENT_PRUNE_EXTRA)?;
    // And no user takes more than their share of it.
    b.w.prune_owner_events(env.limits.events_per_user, added + EVENT_PRUNE_EXTRA)?;
    b.out.next_wake = [
        b.w.first_due()?,
        b.w.first_pause_end()?,
        b.w.first_expiry()?,
    ]
    .into_iter()
    .flatten()
    .min();
    Ok(b.out)
}

impl Batch<'_, '_> {
    /// A job chimed works on by itself (due, waiting, expired, a run's end). A damaged record
    /// is quarantined ([`Writer::quarantine`]: it stops coming due) and passed over, so that it
    /// never stops the batch that meets it.
    fn load(&mut self, id: JobId) -> Result<Option<Job>, StoreError> {
        match self.w.job(id) {
            Err(StoreError::Corrupt(damage)) => {
                self.damaged(Some(id), damage)?;
                Ok(None)
            }
            loaded => loaded,
        }
    }

    /// Says that `job`'s record (or another record a request met) is damaged, in the log and
    /// in the reply, and quarantines the job.
    fn damaged(&mut self, job: Option<JobId>, damage: Damage) -> Result<ErrorReply, StoreError> {
        let message = match job {
            Some(id) => {
                self.w.quarantine(id)?;
                damage.explain(&self.env.database, id)
            }
            None => format!(
                "{} in {}: restore it from a backup",
                damage,
                self.env.database.display()
            ),
        };
        tracing::error!(job_id = job.map(|j| j.0), %damage, "{message}");
        Ok(ErrorReply::new(ErrorCode::Damaged, message))
    }

    fn work(
        &mut self,
        index: usize,
        item: Work,
    ) -> Result<Option<Result<Response, ErrorReply>>, StoreError> {
        Ok(Some(match item {
            Work::Submit {
                uid,
                user,
                job,
                exec,
            } => self.submit(uid, user, *job, exec)?,
            Work::Wait { uid, job, since_ms } => return self.wait(index, uid, &job, since_ms),
            Work::Kill { uid, job, signal } => self.kill(uid, &job, signal)?,
            Work::Retry { uid, job } => self.on_job(uid, &job, Event::Retry, |j, state| {
                Response::Triggered(Triggered { id: j.id, state })
            })?,
            Work::Remove { uid, job } => self.remove(uid, &job)?,
            Work::Cancel { uid, job } => self.on_job(uid, &job, Event::Cancel, |j, state| {
                Response::Cancelled(Cancelled { id: j.id, state })
            })?,
            Work::Pause {
                uid,
                target,
                until_ms,
                for_ms,
                reason,
            } => self.pause(uid, target, until_ms, for_ms, reason)?,
            Work::Resume { uid, target } => self.resume(uid, target)?,
            Work::Skip { uid, job } => {
                let before = self.find(uid, &job)?;
                match before {
                    Err(refusal) => Err(refusal),
                    Ok(before) => {
                        let skipped = match &before.state {
                            State::Active { next, .. } => match next {
                                crate::job::Next::Scheduled(d) | crate::job::Next::Held(d) => {
                                    Some(*d)
                                }
                                crate::job::Next::None => None,
                            },
                            _ => None,
                        };
                        match self.transition(&before, Event::Skip)? {
                            Err(refusal) => Err(refused(refusal)),
                            Ok(after) => Ok(Response::Skipped(Skipped {
                                id: before.id,
                                skipped_due_ms: skipped.unwrap_or_default(),
                                next_due_ms: after.state.due_ms(),
                            })),
                        }
                    }
                }
            }
            Work::Trigger { uid, job } => self.on_job(uid, &job, Event::Trigger, |j, state| {
                Response::Triggered(Triggered { id: j.id, state })
            })?,
            Work::SetQueue {
                uid,
                name,
                parallel,
            } => self.set_queue(uid, name, parallel)?,
            Work::Reconcile(plan) => self.reconcile(*plan)?,
            Work::Runner { job, event } => {
                self.runner_event(job, event)?;
                return Ok(None);
            }
        }))
    }

    /// Finds a job a user may change.
    fn find(&mut self, uid: u32, job: &JobRef) -> Result<Result<Job, ErrorReply>, StoreError> {
        // A damaged job is refused here; it is quarantined where chimed meets it by itself.
        let found = self.w.find(uid, job)?;
        if let Found::Job(job) = &found {
            self.found = Some((job.id, job.owner, job.name.clone()));
        }
        Ok(owned_job(uid, job, found, &self.env.database))
    }

    /// The audit record of a user's change that was applied.
    fn audit(&self, actor: u32, verb: &'static str, response: &Response) -> Audit {
        let (job, target) = match response {
            Response::Added(added) => (self.found.clone().or(Some((added.id, actor, None))), None),
            Response::Paused(Paused { target, .. }) | Response::Resumed(Resumed { target, .. }) => {
                (self.found.clone(), Some(target.to_string()))
            }
            Response::Queues(queues) => (None, queues.first().map(|q| format!("queue {}", q.name))),
            Response::Reloaded(report) => (
                None,
                Some(format!(
                    "{} added, {} updated, {} removed, {} refused",
                    report.added.len(),
                    report.updated.len(),
                    report.removed.len(),
                    report.errors.len()
                )),
            ),
            _ => (self.found.clone(), None),
        };
        Audit {
            actor,
            verb,
            job,
            target,
        }
    }

    /// Applies a user's event to a job and answers with `reply`.
    fn on_job(
        &mut self,
        uid: u32,
        job: &JobRef,
        event: Event,
        reply: impl FnOnce(&Job, JobState) -> Response,
    ) -> Result<Result<Response, ErrorReply>, StoreError> {
        let found = match self.find(uid, job)? {
            Ok(found) => found,
            Err(refusal) => return Ok(Err(refusal)),
        };
        Ok(match self.transition(&found, event)? {
            Ok(after) => Ok(reply(&after, after.kind())),
            Err(refusal) => Err(refused(refusal)),
        })
    }

    fn queue(&mut self, name: &str) -> Result<QueueRecord, StoreError> {
        if let Some(record) = self.queues.get(name) {
            return Ok(record.clone());
        }
        let record = self
            .w
            .queues()?
            .into_iter()
            .find(|(n, _)| n == name)
            .map(|(_, r)| r)
            .unwrap_or_default();
        self.queues.insert(name.to_owned(), record.clone());
        Ok(record)
    }

    /// Runs `owner` may still open: `running_per_user` less those open and planned, and no more
    /// than users in all may open (all but the administrators' reserve of `max_running`: see
    /// [`crate::limits::Limits::users_running`]); unbounded for the administrators. Unlike a
    /// queue's limit it admits no runs ahead, even for a quick queue: a user's job shown
    /// `running` is running, and the ones waiting for their slots are `queued`.
    fn owner_slots(&self, owner: u32) -> usize {
        let limits = &self.env.limits;
        let Some(cap) = limits.running_cap(owner) else {
            return usize::MAX;
        };
        let count = |map: &HashMap<u32, usize>, who: u32| map.get(&who).copied().unwrap_or(0);
        let users = |map: &HashMap<u32, usize>| {
            map.iter()
                .filter(|(who, _)| !limits.is_exempt(**who))
                .map(|(_, n)| n)
                .sum::<usize>()
        };
        let mine = count(&self.env.running_by_owner, owner) + count(&self.planned_by_owner, owner);
        let all_users = users(&self.env.running_by_owner) + users(&self.planned_by_owner);
        let users_max = limits.users_running(self.env.max_running);
        cap.saturating_sub(mine)
            .min(users_max.saturating_sub(all_users))
    }

    /// Runs that may start now in `queue` (its limit and `max_running`), and whether the queue
    /// (or everything) is paused.
    ///
    /// `env.running` counts the runner's live runs at the start of the batch; the engine forgets a
    /// run before the batch that records its end, so ended runs are not in it.
    fn queue_slots(&mut self, queue: &str) -> Result<(usize, bool), StoreError> {
        let record = self.queue(queue)?;
        let paused = record.pause.is_some() || self.pause_all.is_some();
        if !self.fire {
            return Ok((0, paused));
        }
        let in_queue = self.env.running.get(queue).copied().unwrap_or(0)
            + self.planned.get(queue).copied().unwrap_or(0);
        let total = self.env.running.values().sum::<usize>() + self.planned.values().sum::<usize>();
        let quick = self.env.quick.contains(queue);
        let queue_free = record.parallel.map_or(usize::MAX, |p| {
            admission(p as usize, quick).saturating_sub(in_queue)
        });
        let daemon_free = admission(self.env.max_running, quick).saturating_sub(total);
        Ok((queue_free.min(daemon_free), paused))
    }

    /// Runs that may start now in `queue` for `owner` (see [`Batch::queue_slots`] and
    /// [`Batch::owner_slots`]), and whether the queue (or everything) is paused.
    fn slots(&mut self, queue: &str, owner: u32) -> Result<(usize, bool), StoreError> {
        let (free, paused) = self.queue_slots(queue)?;
        Ok((free.min(self.owner_slots(owner)), paused))
    }

    /// Appends an event to the log, in this transaction.
    fn emit(&mut self, job: Option<&Job>, kind: EventKind) -> Result<(), StoreError> {
        let shared = job.is_some_and(|j| !self.env.limits.is_exempt(j.owner));
        let record = self
            .w
            .append_event(self.now, self.actor, job, kind, shared)?;
        self.out.events.push(record);
        Ok(())
    }

    /// Runs the state machine on `job` and records the result and its events. Returns the new
    /// job, or why the event does not apply. A storage error fails the whole batch.
    ///
    /// A timer (a job without a command) has no process: a run opened for it ends at once, in
    /// the same transaction, as `fired`.
    fn transition(&mut self, job: &Job, event: Event) -> Result<Result<Job, Refusal>, StoreError> {
        let mut log = StepLog::default();
        let mut current = match self.step(job, event, &mut log)? {
            Ok(after) => after,
            Err(refusal) => return Ok(Err(refusal)),
        };
        while let Some(run) = log.timer_runs.pop() {
            let fired = Event::Finished {
                run,
                outcome: Outcome::Fired,
                pid: None,
                started_ms: self.now,
                ended_ms: self.now,
            };
            match self.step(&current, fired, &mut log)? {
                Ok(after) => current = after,
                Err(refusal) => {
                    tracing::error!(job_id = job.id.0, run_id = run.0, %refusal, "a timer's run did not close");
                    break;
                }
            }
        }
        self.emit_changes(job, &current, &log)?;
        Ok(Ok(current))
    }

    /// The events of one transition: runs ended and started (or a timer fired), occurrences
    /// missed, a pause set or lifted, the state changed.
    fn emit_changes(&mut self, before: &Job, after: &Job, log: &StepLog) -> Result<(), StoreError> {
        let new_missed = after.missed_total.saturating_sub(before.missed_total);
        let shown = usize::try_from(new_missed)
            .unwrap_or(usize::MAX)
            .min(after.missed.len());
        for missed in &after.missed[after.missed.len() - shown..] {
            let kind = EventKind::Missed {
                due_ms: missed.due_ms,
                reason: missed.reason.as_str().into(),
            };
            self.emit(Some(after), kind)?;
        }
        let timer = after.command.is_timer();
        for run in &log.closed {
            if timer {
                continue;
            }
            let kind = EventKind::Ended {
                run: run.id,
                attempt: run.attempt,
                outcome: run.outcome.clone().unwrap_or(Outcome::Lost),
                duration_ms: run
                    .finished_ms
                    .unwrap_or(self.now)
                    .saturating_sub(run.started_ms)
                    .max(0) as u64,
            };
            self.emit(Some(after), kind)?;
        }
        for open in &log.opened {
            let kind = if timer {
                EventKind::Fired {
                    run: open.run,
                    due_ms: open.due_ms,
                    manual: open.manual,
                }
            } else {
                self.out.started.insert(
                    open.run,
                    (after.owner_name.clone(), command_line(&after.command)),
                );
                EventKind::Started {
                    run: open.run,
                    attempt: open.attempt,
                    due_ms: open.due_ms,
                    queue: after.queue.clone(),
                }
            };
            self.emit(Some(after), kind)?;
        }
        match (&before.pause, &after.pause) {
            (None, Some(pause)) => {
                let kind = EventKind::Paused {
                    target: PauseTarget::Job(JobRef::Id(after.id)),
                    until_ms: pause.until_ms,
                    reason: pause.reason.clone(),
                };
                self.emit(Some(after), kind)?;
            }
            (Some(_), None) => {
                let kind = EventKind::Resumed {
                    target: PauseTarget::Job(JobRef::Id(after.id)),
                };
                self.emit(Some(after), kind)?;
            }
            _ => {}
        }
        let (from, to) = (before.kind(), after.kind());
        if from != to {
            self.emit(Some(after), EventKind::State { from, to })?;
        }
        Ok(())
    }

    /// One step of the state machine, recorded (see [`Batch::transition`]).
    fn step(
        &mut self,
        job: &Job,
        event: Event,
        log: &mut StepLog,
    ) -> Result<Result<Job, Refusal>, StoreError> {
        let (mut free_slots, queue_paused) = self.slots(&job.queue, job.owner)?;
        if job.command.is_timer() && self.fire {
            // A timer's run takes no slot: it ends in the transaction that opens it.
            free_slots = usize::MAX / 2;
        }
        let mut ctx = Ctx {
            now: self.now,
            on_time_since: self.env.on_time_since,
            free_slots,
            queue_paused,
            next_run: self.w.next_run_id(),
            local_tz: self.env.local_tz.clone(),
        };
        let step = match machine::step(job, event, &mut ctx) {
            Ok(step) => step,
            Err(refusal) => return Ok(Err(refusal)),
        };
        self.w.set_next_run_id(ctx.next_run);
        if step.job != *job {
            self.w.put_job(Some(job), &step.job)?;
            self.out.changes += 1;
        }
        for run in &step.unrecorded {
            self.w.delete_run(step.job.id, *run)?;
            // Its admission slot is free again.
            self.slots_freed = true;
        }
        let mut closed = false;
        for run in &step.runs {
            self.w.put_run(run)?;
            if run.outcome.is_some() {
                log.closed.push(run.clone());
                // A slot is free again: waiting jobs may start.
                self.slots_freed = true;
                closed = true;
                if !step.job.state.owes_again(run) {
                    self.out.settled.push(Settled {
                        job: step.job.id,
                        state: step.job.kind(),
                        run: run.clone(),
                    });
                }
            }
        }
        if closed {
            for run in self
                .w
                .prune_runs(&step.job, step.job.exec.keep_runs as usize)?
            {
                self.out
                    .deleted_runs
                    .push((step.job.id, run, step.job.owner));
            }
        }
        for action in &step.actions {
            match action {
                Action::Spawn { run } => {
                    let open = step.job.state.runs().iter().find(|r| r.run == *run);
                    if let Some(open) = open {
                        log.opened.push(open.clone());
                    }
                    if step.job.command.is_timer() {
                        log.timer_runs.push(*run);
                        continue;
                    }
                    let attempt = open.map_or(step.job.runs_started, |r| r.attempt);
                    *self.planned.entry(step.job.queue.clone()).or_default() += 1;
                    *self.planned_by_owner.entry(step.job.owner).or_default() += 1;
                    let parallel = self.queue(&step.job.queue)?.parallel;
                    self.out.spawns.push(SpawnOrder {
                        job: step.job.id,
                        run: *run,
                        attempt,
                        owner: step.job.owner,
                        owner_name: step.job.owner_name.clone(),
                        queue: step.job.queue.clone(),
                        command: step.job.command.clone(),
                        cwd: step.job.cwd.clone(),
                        env: step.job.env.clone(),
                        timeout_ms: step.job.exec.timeout_ms,
                        kill_grace_ms: step.job.exec.kill_grace_ms,
                        max_output: step.job.exec.max_output,
                        parallel,
                        name: step.job.name.clone(),
                        journal: step.job.exec.journal,
                    });
                }
                Action::Terminate { run } => self.out.terminations.push(*run),
            }
        }
        Ok(Ok(step.job))
    }

    fn runner_event(&mut self, id: JobId, event: Event) -> Result<(), StoreError> {
        let Some(job) = self.load(id)? else {
            tracing::warn!(
                job_id = id.0,
                ?event,
                "runner event for a job that does not exist"
            );
            return Ok(());
        };
        if let Err(refusal) = self.transition(&job, event.clone())? {
            tracing::debug!(job_id = id.0, ?event, %refusal, "runner event ignored");
        }
        Ok(())
    }

    fn submit(
        &mut self,
        uid: u32,
        user: String,
        spec: JobSpec,
        exec: Exec,
    ) -> Result<Result<Response, ErrorReply>, StoreError> {
        let (machine_spec, first_due) =
            match machine_spec(&spec, exec, self.now, &self.env.local_tz) {
                Ok(resolved) => resolved,
                Err(message) => return Ok(Err(ErrorReply::new(ErrorCode::BadRequest, message))),
            };
        if let Some(name) = &spec.name
            && let Some(existing) = self.w.job_id_by_name(name, uid)?
        {
            if !spec.replace {
                return Ok(Err(ErrorReply::new(
                    ErrorCode::Conflict,
                    format!(
                        "the name {name:?} is taken by job {existing}; choose another name, or add --replace to swap its spec"
                    ),
                )));
            }
            let job = self
                .w
                .job(existing)?
                .expect("the name index points at a job");
            if let Err(refusal) = check_owner(uid, &job) {
                return Ok(Err(refusal));
            }
            if let Some(source) = job.source_path() {
                return Ok(Err(ErrorReply::new(
                    ErrorCode::Conflict,
                    format!(
                        "job {name:?} is declared by {source}; change that file and run `chimectl reload`"
                    ),
                )));
            }
            return Ok(match self.replace(&job, machine_spec)? {
                Ok(after) => Ok(Response::Added(Added {
                    id: after.id,
                    due_at_ms: after.state.due_ms().unwrap_or(self.now),
                })),
                Err(refusal) => Err(refused(refusal)),
            });
        }
        if spec.replace && spec.name.is_none() {
            return Ok(Err(ErrorReply::new(
                ErrorCode::BadRequest,
                "--replace needs --name: it swaps the spec of the job with that name",
            )));
        }
        let limits = &self.env.limits;
        if !limits.is_exempt(uid) && self.w.owned_count(uid)? >= limits.jobs_per_user {
            return Ok(Err(ErrorReply::new(
                ErrorCode::Busy,
                format!(
                    "you have {} jobs stored, the most a user may have ({}); remove finished ones with `chimectl rm`, or wait for their retention to end",
                    limits.jobs_per_user,
                    limits.said("jobs_per_user")
                ),
            )));
        }
        let job = match self.new_job(uid, user, spec.name, machine_spec, first_due, None) {
            Ok(job) => job,
            Err(message) => return Ok(Err(ErrorReply::new(ErrorCode::BadRequest, message))),
        };
        let first_due = job.state.due_ms().unwrap_or(self.now);
        self.found = Some((job.id, job.owner, job.name.clone()));
        self.add(&job)?;
        Ok(Ok(Response::Added(Added {
            id: job.id,
            due_at_ms: first_due,
        })))
    }

    /// A new job of `owner`, not yet stored: checks that the schedule has an occurrence.
    fn new_job(
        &mut self,
        owner: u32,
        owner_name: String,
        name: Option<String>,
        spec: Spec,
        first_due: Option<Ms>,
        source: Option<crate::job::Source>,
    ) -> Result<Job, String> {
        let Some(first_due) = first_due else {
            return Err(
                "the schedule has no occurrence after now (check --from, --until and the expression)"
                    .into(),
            );
        };
        if spec.until_ms.is_some_and(|until| until < first_due) {
            return Err("--until is before the first occurrence; nothing would run".into());
        }
        Ok(Job {
            id: self.w.allocate_job_id(),
            name,
            owner,
            owner_name,
            created_ms: self.now,
            command: spec.command,
            cwd: spec.cwd,
            env: spec.env,
            schedule: spec.schedule,
            count: spec.count,
            until_ms: spec.until_ms,
            catch_up: spec.catch_up,
            deadline_ms: spec.deadline_ms,
            overlap: spec.overlap,
            queue: spec.queue,
            exec: spec.exec,
            pause: None,
            state: State::scheduled(Some(first_due)),
            runs_started: 0,
            occurrences_started: 0,
            last_outcome: None,
            missed_total: 0,
            missed: Vec::new(),
            source,
        })
    }

    /// Stores a new job and records that it was added.
    fn add(&mut self, job: &Job) -> Result<(), StoreError> {
        self.w.put_job(None, job)?;
        self.out.changes += 1;
        let kind = EventKind::Added {
            queue: job.queue.clone(),
            next_due_ms: job.state.due_ms(),
            timer: job.command.is_timer(),
            source: job.source_path().unwrap_or("chimectl").into(),
        };
        self.emit(Some(job), kind)
    }

    /// Swaps a job's spec, keeping its id and history, and records that it was updated.
    fn replace(&mut self, job: &Job, spec: Spec) -> Result<Result<Job, Refusal>, StoreError> {
        let after = match self.transition(job, Event::Replace(Box::new(spec)))? {
            Ok(after) => after,
            Err(refusal) => return Ok(Err(refusal)),
        };
        let kind = EventKind::Updated {
            next_due_ms: after.state.due_ms(),
        };
        self.emit(Some(&after), kind)?;
        Ok(Ok(after))
    }

    /// Registers a wait, or answers it at once when there is nothing to wait for.
    fn wait(
        &mut self,
        index: usize,
        uid: u32,
        job: &JobRef,
        since_ms: Option<Ms>,
    ) -> Result<Option<Result<Response, ErrorReply>>, StoreError> {
        let found = match self.find(uid, job)? {
            Ok(found) => found,
            Err(refusal) => return Ok(Some(Err(refusal))),
        };
        let last = self.w.last_run(found.id)?;
        // For `add --wait`: the run it waits for may have settled before the wait arrived.
        let settled_already = since_ms.is_some_and(|since| {
            last.as_ref().is_some_and(|run| {
                run.started_ms >= since
                    && run.outcome.is_some()
                    && found.state.runs().is_empty()
                    && !found.state.owes_again(run)
            })
        });
        if found.state.is_final() || settled_already {
            return Ok(Some(Ok(Response::Waited(chime_proto::Waited {
                id: found.id,
                state: found.kind(),
                run: last.map(crate::requests::run_info_bare),
            }))));
        }
        self.out.waits.push(WaitFor {
            index,
            job: found.id,
            since_ms,
        });
        Ok(None)
    }

    fn kill(
        &mut self,
        uid: u32,
        job: &JobRef,
        signal: i32,
    ) -> Result<Result<Response, ErrorReply>, StoreError> {
        let found = match self.find(uid, job)? {
            Ok(found) => found,
            Err(refusal) => return Ok(Err(refusal)),
        };
        // The runner signals the live ones (their pid may not be recorded yet).
        let runs: Vec<RunId> = found.state.runs().iter().map(|r| r.run).collect();
        if runs.is_empty() {
            return Ok(Err(ErrorReply::new(
                ErrorCode::InvalidState,
                format!(
                    "job {} is not running; there is nothing to signal",
                    found.id
                ),
            )));
        }
        for run in &runs {
            self.out.signals.push((*run, signal));
        }
        Ok(Ok(Response::Killed(Killed {
            id: found.id,
            signalled: runs.len() as u32,
        })))
    }

    fn remove(
        &mut self,
        uid: u32,
        job: &JobRef,
    ) -> Result<Result<Response, ErrorReply>, StoreError> {
        if let Found::Damaged {
            id, theirs: true, ..
        } = self.w.find(uid, job)?
        {
            let (owner, runs) = self.w.remove_damaged(id)?;
            tracing::warn!(job_id = id.0, by_uid = uid, "a damaged job was removed");
            let n = runs.len();
            if let Some(owner) = owner {
                self.out
                    .deleted_runs
                    .extend(runs.into_iter().map(|run| (id, run, owner)));
            }
            self.out.removed.push(id);
            self.out.changes += 1;
            return Ok(Ok(Response::Removed(Removed { id, runs: n as u64 })));
        }
        let found = match self.find(uid, job)? {
            Ok(found) => found,
            Err(refusal) => return Ok(Err(refusal)),
        };
        if !found.state.runs().is_empty() {
            return Ok(Err(ErrorReply::new(
                ErrorCode::InvalidState,
                format!(
                    "job {} is running; cancel it (or wait for it) before removing it",
                    found.id
                ),
            )));
        }
        let runs = self.delete(&found, "removed")?;
        Ok(Ok(Response::Removed(Removed {
            id: found.id,
            runs: runs as u64,
        })))
    }

    /// Deletes a job and its runs (their output goes after the commit), and records why:
    /// `removed`, `expired` or `undeclared`.
    fn delete(&mut self, job: &Job, reason: &str) -> Result<usize, StoreError> {
        self.emit(
            Some(job),
            EventKind::Removed {
                reason: reason.into(),
            },
        )?;
        let runs = self.w.delete_job(job)?;
        let n = runs.len();
        self.out
            .deleted_runs
            .extend(runs.into_iter().map(|run| (job.id, run, job.owner)));
        self.out.removed.push(job.id);
        self.out.changes += 1;
        Ok(n)
    }

    fn is_admin(&self, uid: u32) -> bool {
        uid == 0 || uid == self.env.admin_uid
    }

    fn pause(
        &mut self,
        uid: u32,
        target: PauseTarget,
        until_ms: Option<Ms>,
        for_ms: Option<u64>,
        reason: Option<String>,
    ) -> Result<Result<Response, ErrorReply>, StoreError> {
        let until = match (until_ms, for_ms) {
            (Some(until), _) => Some(until),
            (None, Some(ms)) => Some(
                self.now
                    .saturating_add(i64::try_from(ms).unwrap_or(i64::MAX))
                    .min(MAX_DUE_MS),
            ),
            (None, None) => None,
        };
        if until.is_some_and(|u| u <= self.now) {
            return Ok(Err(ErrorReply::new(
                ErrorCode::BadRequest,
                "the pause would end in the past; give a later --until or a positive --for",
            )));
        }
        let pause = Pause {
            since_ms: self.now,
            until_ms: until,
            reason,
            by_uid: uid,
        };
        let key = match &target {
            PauseTarget::All | PauseTarget::Queue(_) if !self.is_admin(uid) => {
                return Ok(Err(ErrorReply::new(
                    ErrorCode::PermissionDenied,
                    format!("only root may pause {target}; you may pause your own jobs"),
                )));
            }
            PauseTarget::All => {
                if let Some(old) = self.pause_all.take().and_then(|p| p.until_ms) {
                    self.w.remove_pause_timer(old, &PauseKey::All)?;
                }
                self.w.set_pause_all(Some(&pause))?;
                self.pause_all = Some(pause.clone());
                self.out.unstarts.push(crate::runner::Unstart::All);
                PauseKey::All
            }
            PauseTarget::Queue(name) => {
                let mut record = self.queue(name)?;
                if let Some(old) = record.pause.take().and_then(|p| p.until_ms) {
                    self.w
                        .remove_pause_timer(old, &PauseKey::Queue(name.clone()))?;
                }
                record.pause = Some(pause.clone());
                self.w.put_queue(name, &record)?;
                self.queues.insert(name.clone(), record);
                self.out
                    .unstarts
                    .push(crate::runner::Unstart::Queue(name.clone()));
                PauseKey::Queue(name.clone())
            }
            PauseTarget::Job(job) => {
                let found = match self.find(uid, job)? {
                    Ok(found) => found,
                    Err(refusal) => return Ok(Err(refusal)),
                };
                if let Some(old) = found.pause.as_ref().and_then(|p| p.until_ms) {
                    self.w.remove_pause_timer(old, &PauseKey::Job(found.id))?;
                }
                if let Err(refusal) = self.transition(&found, Event::Pause(pause.clone()))? {
                    return Ok(Err(refused(refusal)));
                }
                self.out
                    .unstarts
                    .push(crate::runner::Unstart::Job(found.id));
                PauseKey::Job(found.id)
            }
        };
        if let Some(until) = until {
            self.w.add_pause_timer(until, &key)?;
        }
        if !matches!(target, PauseTarget::Job(_)) {
            let kind = EventKind::Paused {
                target: target.clone(),
                until_ms: until,
                reason: pause.reason.clone(),
            };
            self.emit(None, kind)?;
        }
        self.out.changes += 1;
        Ok(Ok(Response::Paused(Paused {
            target,
            pause: pause_info(&pause),
        })))
    }

    fn resume(
        &mut self,
        uid: u32,
        target: PauseTarget,
    ) -> Result<Result<Response, ErrorReply>, StoreError> {
        let released = match &target {
            PauseTarget::All | PauseTarget::Queue(_) if !self.is_admin(uid) => {
                return Ok(Err(ErrorReply::new(
                    ErrorCode::PermissionDenied,
                    format!("only root may resume {target}"),
                )));
            }
            PauseTarget::All => {
                let Some(old) = self.pause_all.take() else {
                    return Ok(Err(ErrorReply::new(
                        ErrorCode::InvalidState,
                        "nothing is paused as a whole; `chimectl status` shows what is",
                    )));
                };
                self.end_all(old)?
            }
            PauseTarget::Queue(name) => {
                let record = self.queue(name)?;
                let Some(old) = record.pause.clone() else {
                    return Ok(Err(ErrorReply::new(
                        ErrorCode::InvalidState,
                        format!("queue {name:?} is not paused"),
                    )));
                };
                self.end_queue(name, old)?
            }
            PauseTarget::Job(job) => {
                let found = match self.find(uid, job)? {
                    Ok(found) => found,
                    Err(refusal) => return Ok(Err(refusal)),
                };
                if let Some(old) = found.pause.as_ref().and_then(|p| p.until_ms) {
                    self.w.remove_pause_timer(old, &PauseKey::Job(found.id))?;
                }
                match self.transition(&found, Event::Resume)? {
                    Ok(_) => 1,
                    Err(refusal) => return Ok(Err(refused(refusal))),
                }
            }
        };
        self.out.changes += 1;
        Ok(Ok(Response::Resumed(Resumed { target, released })))
    }

    /// Ends the pause of everything; returns how many jobs wait to be released.
    fn end_all(&mut self, old: Pause) -> Result<u64, StoreError> {
        if let Some(until) = old.until_ms {
            self.w.remove_pause_timer(until, &PauseKey::All)?;
        }
        self.w.set_pause_all(None)?;
        self.pause_all = None;
        self.resumed_all = true;
        self.emit(
            None,
            EventKind::Resumed {
                target: PauseTarget::All,
            },
        )?;
        Ok(self.w.waiting_queues()?.iter().map(|(_, n)| n).sum())
    }

    fn end_queue(&mut self, name: &str, old: Pause) -> Result<u64, StoreError> {
        if let Some(until) = old.until_ms {
            self.w
                .remove_pause_timer(until, &PauseKey::Queue(name.into()))?;
        }
        let mut record = self.queue(name)?;
        record.pause = None;
        self.w.put_queue(name, &record)?;
        self.queues.insert(name.into(), record);
        self.resumed.insert(name.into());
        self.emit(
            None,
            EventKind::Resumed {
                target: PauseTarget::Queue(name.into()),
            },
        )?;
        Ok(self
            .w
            .waiting_queues()?
            .into_iter()
            .find(|(q, _)| q == name)
            .map_or(0, |(_, n)| n))
    }

    /// A timed pause reached its end.
    fn end_pause(&mut self, until: Ms, key: PauseKey) -> Result<(), StoreError> {
        // Only the pause that set this timer ends; a newer pause has its own.
        match &key {
            PauseKey::All => match self.pause_all.clone() {
                Some(p) if p.until_ms == Some(until) => {
                    tracing::info!("timed pause of everything ended");
                    self.end_all(p)?;
                }
                _ => self.w.remove_pause_timer(until, &key)?,
            },
            PauseKey::Queue(name) => match self.queue(name)?.pause {
                Some(p) if p.until_ms == Some(until) => {
                    tracing::info!(queue = %name, "timed pause of the queue ended");
                    self.end_queue(name, p)?;
                }
                _ => self.w.remove_pause_timer(until, &key)?,
            },
            PauseKey::Job(id) => {
                self.w.remove_pause_timer(until, &key)?;
                if let Some(job) = self.load(*id)?
                    && job.pause.as_ref().and_then(|p| p.until_ms) == Some(until)
                {
                    tracing::info!(job_id = id.0, "timed pause of the job ended");
                    if let Err(refusal) = self.transition(&job, Event::Resume)? {
                        tracing::warn!(job_id = id.0, %refusal, "could not resume the job");
                    }
                }
            }
        }
        self.out.changes += 1;
        Ok(())
    }

    fn set_queue(
        &mut self,
        uid: u32,
        name: String,
        parallel: Option<u32>,
    ) -> Result<Result<Response, ErrorReply>, StoreError> {
        if !self.is_admin(uid) {
            return Ok(Err(ErrorReply::new(
                ErrorCode::PermissionDenied,
                "only root may change queue limits",
            )));
        }
        let record = self.set_limit(name.clone(), parallel)?;
        self.out.changes += 1;
        Ok(Ok(Response::Queues(vec![QueueInfo {
            running: self.env.running.get(&name).copied().unwrap_or(0) as u32,
            waiting: 0,
            pause: record.pause.as_ref().map(pause_info),
            parallel: record.parallel,
            name,
        }])))
    }

    /// Sets a queue's limit and records it.
    fn set_limit(
        &mut self,
        name: String,
        parallel: Option<u32>,
    ) -> Result<QueueRecord, StoreError> {
        let mut record = self.queue(&name)?;
        record.parallel = parallel;
        self.w.put_queue(&name, &record)?;
        self.out.limits.push((name.clone(), parallel));
        self.emit(
            None,
            EventKind::QueueLimit {
                queue: name.clone(),
                parallel,
            },
        )?;
        self.queues.insert(name, record.clone());
        // A higher limit may free slots.
        self.slots_freed = true;
        Ok(record)
    }

    /// Releases waiting jobs: every waiting job of resumed queues (held occurrences meet their
    /// catch-up policy), and as many as there are free slots elsewhere.
    fn release(&mut self) -> Result<(), StoreError> {
        let waiting = self.w.waiting_queues()?;
        for (queue, _) in waiting {
            let (free, paused) = self.queue_slots(&queue)?;
            if paused {
                continue;
            }
            let everything = self.resumed_all || self.resumed.contains(&queue);
            let limit = if everything {
                RELEASE_LIMIT
            } else if self.slots_freed || self.env.release_all {
                free.min(RELEASE_LIMIT)
            } else {
                0
            };
            if limit == 0 {
                continue;
            }
            // Users at their running limit are passed over (their jobs wait on), so that the
            // next user's waiting jobs are not stuck behind them.
            let capped: std::collections::HashSet<u32> = self
                .env
                .running_by_owner
                .keys()
                .chain(self.planned_by_owner.keys())
                .copied()
                .filter(|owner| self.owner_slots(*owner) == 0)
                .collect();
            let skip = |owner: u32| !everything && capped.contains(&owner);
            let ids = self.w.waiting_in(&queue, limit, skip)?;
            if everything && ids.len() == RELEASE_LIMIT {
                self.out.continue_release.insert(queue.clone());
            }
            for (owner, id) in ids {
                if !everything && self.slots(&queue, owner)?.0 == 0 {
                    if self.queue_slots(&queue)?.0 == 0 {
                        break;
                    }
                    continue;
                }
                if let Some(job) = self.load(id)?
                    && let Err(refusal) = self.transition(&job, Event::Release)?
                {
                    tracing::debug!(job_id = id.0, %refusal, "release did not apply");
                }
            }
        }
        Ok(())
    }
}

/// A command as one line for the log, at most 1 KiB: an argv with its words quoted where they
/// need it, or a shell command as it is.
pub fn command_line(command: &Command) -> String {
    const MAX: usize = 1024;
    let mut line = match command {
        Command::Argv(argv) => argv
            .iter()
            .map(|word| {
                if !word.is_empty()
                    && word
                        .chars()
                        .all(|c| c.is_ascii_alphanumeric() || "/._-=:,+@%".contains(c))
                {
                    word.clone()
                } else {
                    format!("'{}'", word.replace('\'', "'\\''"))
                }
            })
            .collect::<Vec<_>>()
            .join(" "),
        Command::Shell(script) => script.clone(),
        Command::Timer => "(timer)".into(),
    };
    if line.len() > MAX {
        let mut end = MAX;
        while !line.is_char_boundary(end) {
            end -= 1;
        }
        line.truncate(end);
        line.push_str("...");
    }
    line
}

fn refused(refusal: Refusal) -> ErrorReply {
    let code = match refusal {
        Refusal::Final(_) | Refusal::Invalid(_) | Refusal::NotApplicable { .. } => {
            ErrorCode::InvalidState
        }
        Refusal::Stale => ErrorCode::InvalidState,
    };
    ErrorReply::new(code, refusal.to_string())
}

pub fn pause_info(pause: &Pause) -> PauseInfo {
    PauseInfo {
        since_ms: pause.since_ms,
        until_ms: pause.until_ms,
        reason: pause.reason.clone(),
        by_uid: pause.by_uid,
    }
}

/// Turns a submission into the state machine's spec and the first occurrence.
pub fn machine_spec(
    spec: &JobSpec,
    exec: Exec,
    now: Ms,
    local: &TimeZone,
) -> Result<(Spec, Option<Ms>), String> {
    let (schedule, first_due) = resolve_schedule(&spec.schedule, now, local)?;
    Ok((
        Spec {
            command: spec.command.clone(),
            cwd: spec.cwd.clone(),
            env: spec.env.clone(),
            schedule,
            count: spec.count,
            until_ms: spec.until_ms,
            catch_up: match spec.catch_up.unwrap_or(CatchUpPolicy::Latest) {
                CatchUpPolicy::Skip => CatchUp::Skip,
                CatchUpPolicy::Latest => CatchUp::Latest,
                CatchUpPolicy::All { limit } => CatchUp::All { limit },
            },
            deadline_ms: spec.deadline_ms,
            overlap: match spec.overlap.unwrap_or(OverlapPolicy::Skip) {
                OverlapPolicy::Skip => Overlap::Skip,
                OverlapPolicy::Queue => Overlap::Queue,
                OverlapPolicy::Allow => Overlap::Allow,
                OverlapPolicy::Replace => Overlap::Replace,
            },
            queue: spec.queue.clone().unwrap_or_else(|| DEFAULT_QUEUE.into()),
            exec,
        },
        first_due,
    ))
}

/// Turns a submitted schedule into the stored one and its first occurrence.
pub fn resolve_schedule(
    spec: &ScheduleSpec,
    now: Ms,
    local: &TimeZone,
) -> Result<(Schedule, Option<Ms>), String> {
    use crate::schedule::Recurrence;
    let once = |at: Ms| (Schedule::Once { at_ms: at }, Some(at));
    Ok(match spec {
        ScheduleSpec::Now => once(now),
        ScheduleSpec::At(at) => once((*at).clamp(0, MAX_DUE_MS)),
        ScheduleSpec::After(ms) => once(
            now.saturating_add(i64::try_from(*ms).unwrap_or(i64::MAX))
                .min(MAX_DUE_MS),
        ),
        ScheduleSpec::Every {
            interval_ms,
            from_ms,
        } => {
            if *interval_ms == 0 {
                return Err("--every must be longer than zero".into());
            }
            let anchor = from_ms.unwrap_or(now).clamp(0, MAX_DUE_MS);
            let schedule = Schedule::Every {
                anchor_ms: anchor,
                interval_ms: *interval_ms,
            };
            // The first occurrence at or after now: the anchor if it is ahead.
            let first = Recurrence::of(&schedule, local)
                .map_err(|e| e.to_string())?
                .next_after(now - 1);
            (schedule, first)
        }
        ScheduleSpec::Cron { expr, tz } => {
            let schedule = Schedule::Cron {
                expr: expr.clone(),
                tz: tz.clone(),
            };
            let first = Recurrence::of(&schedule, local)
                .map_err(|e| e.to_string())?
                .next_after(now);
            (schedule, first)
        }
    })
}

pub fn not_found(job: &JobRef) -> ErrorReply {
    ErrorReply::new(
        ErrorCode::NotFound,
        format!("no {job}; `chimectl ls` lists your jobs"),
    )
}

/// The job `uid` asked for as `job`, if they may see it: only its owner and root may (see
/// [`check_owner`]). A name several users use is ambiguous only to root, who is told how to say
/// which one.
pub fn owned_job(
    uid: u32,
    job: &JobRef,
    found: Found,
    database: &std::path::Path,
) -> Result<Job, ErrorReply> {
    match found {
        Found::Job(found) => check_owner(uid, &found).map(|()| found),
        Found::Missing | Found::Damaged { theirs: false, .. } => Err(not_found(job)),
        Found::Damaged { id, damage, .. } => Err(ErrorReply::new(
            ErrorCode::Damaged,
            damage.explain(database, id),
        )),
        Found::Ambiguous(all) => {
            let name = match job {
                JobRef::Name(name) => name.as_str(),
                JobRef::Id(_) => "",
            };
            let each: Vec<String> = all
                .iter()
                .map(|(owner, id)| {
                    let user = nix::unistd::User::from_uid(nix::unistd::Uid::from_raw(*owner))
                        .ok()
                        .flatten()
                        .map_or_else(|| owner.to_string(), |u| u.name);
                    format!("{user}/{name} (job {id})")
                })
                .collect();
            Err(ErrorReply::new(
                ErrorCode::Conflict,
                format!(
                    "several users have a job named {name:?}: {}; give the job's id or USER/NAME",
                    each.join(", ")
                ),
            ))
        }
    }
}

/// Only the owner and root may see or change a job. Anyone else is told what they would be told
/// of a job that does not exist, so that a refusal reveals neither the job nor its owner.
pub fn check_owner(uid: u32, job: &Job) -> Result<(), ErrorReply> {
    if uid == 0 || uid == job.owner {
        Ok(())
    } else {
        Err(not_found(&JobRef::Id(job.id)))
    }
}
