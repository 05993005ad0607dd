//! The transaction core: the [`Batch`] a batch of work is applied in ([`apply`]), the
//! dispatch of each piece of work to its family, and the one path every change of a job takes
//! ([`Batch::transition`]: the state machine, then its actions written and its events emitted).

use super::*;
use crate::access::owned_job;
use crate::job::{Job, Ms, PauseInfo, Run};
use crate::machine::{self, Action, Ctx, Event, Refusal};
use crate::runner::SpawnOrder;
use crate::store::{Damage, Found, QueueRecord, StoreError, Writer};
use chime_proto::{
    Cancelled, ErrorCode, ErrorReply, JobId, JobRef, JobState, Outcome, Response, RunId, Triggered,
};
use std::collections::{BTreeSet, HashMap};

/// What the steps of one transition did, for its events.
#[derive(Debug, Default)]
pub(super) struct StepLog {
    /// Runs opened, in order.
    pub(super) opened: Vec<crate::job::OpenRun>,
    /// Runs closed, as recorded.
    pub(super) closed: Vec<Run>,
    /// Runs opened for a timer, to be closed as `fired` at once.
    pub(super) timer_runs: Vec<RunId>,
    /// The job as stored, while the writing of a step that opened a timer's run waits for the
    /// step that closes it: a firing then writes the job's row, its indexes and the run's
    /// record once, as the firing leaves them, not twice.
    pub(super) stored: Option<Job>,
    /// Those timer runs, opened and not yet recorded.
    pub(super) unwritten: Vec<Run>,
}

pub(super) struct Batch<'w, 't> {
    pub(super) w: &'w mut Writer<'t>,
    pub(super) env: &'w Facts,
    pub(super) now: Ms,
    pub(super) fire: bool,
    pub(super) out: Applied,
    /// Runs planned in this batch, per queue and per user.
    pub(super) planned: HashMap<String, usize>,
    pub(super) planned_by_owner: HashMap<u32, usize>,
    pub(super) queues: HashMap<String, QueueRecord>,
    pub(super) pause_all: Option<PauseInfo>,
    /// Queues to release completely (a resume), and queues where slots freed.
    pub(super) resumed: BTreeSet<String>,
    pub(super) resumed_all: bool,
    pub(super) slots_freed: bool,
    /// Who makes the change being applied (recorded in its events); `None`: chimed itself.
    pub(super) actor: Option<u32>,
    /// The job the request being applied found (for its audit record).
    pub(super) found: Option<(JobId, u32, Option<String>)>,
    /// In a fleet: runs in progress per queue, on the other hosts, and on this one as last
    /// recorded (read once, when a queue's slots are first counted).
    pub(super) fleet_running: Option<FleetRunning>,
}

/// Runs in progress per queue across a fleet (see [`Batch::queue_slots`]).
#[derive(Debug, Default)]
pub(super) struct FleetRunning {
    /// On the other hosts, per queue.
    pub(super) others: HashMap<String, usize>,
    /// This host's, as it last recorded them.
    pub(super) recorded: HashMap<String, u64>,
}

/// Applies `work`, then ends timed pauses, fires due occurrences (when `fire`) and releases
/// waiting jobs.
pub fn apply(
    w: &mut Writer<'_>,
    env: &Facts,
    work: Vec<Work>,
    now: Ms,
    fire: bool,
) -> Result<Applied, StoreError> {
    let pause_all = w.pause_all()?;
    // In a fleet: what other hosts asked this one to stop of its runs (cancels, replaces,
    // kills made on them), carried out with this batch's own.
    let stops = match &env.host {
        Some(host) => w.take_stop_requests(host)?,
        None => Vec::new(),
    };
    let mut b = Batch {
        w,
        env,
        now,
        fire,
        out: Applied {
            terminations: stops
                .iter()
                .filter(|(_, signal)| signal.is_none())
                .map(|(run, _)| *run)
                .collect(),
            signals: stops
                .iter()
                .filter_map(|(run, signal)| signal.map(|s| (*run, s)))
                .collect(),
            ..Applied::default()
        },
        planned: HashMap::new(),
        planned_by_owner: HashMap::new(),
        queues: HashMap::new(),
        pause_all,
        resumed: env.continue_release.clone(),
        resumed_all: env.release_all,
        slots_freed: false,
        actor: None,
        found: None,
        fleet_running: None,
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
    b.record_fleet_running()?;
    // Keep the log bounded: remove as many old events as this batch added, and some more, so
    // that a lowered retention converges too.
    let added = b.out.events.len();
    b.w.prune_events(env.event_retention, added + EVENT_PRUNE_EXTRA)?;
    // And no user takes more than their share of it.
    b.w.prune_owner_events(env.limits.events_per_user, added + EVENT_PRUNE_EXTRA)?;
    b.out.event_head = b.w.event_head();
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
    pub(super) fn load(&mut self, id: JobId) -> Result<Option<Job>, StoreError> {
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
    pub(super) fn damaged(
        &mut self,
        job: Option<JobId>,
        damage: Damage,
    ) -> Result<ErrorReply, StoreError> {
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

    pub(super) fn work(
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
            } => self.submit(uid, user, *job, *exec)?,
            Work::Edit {
                uid,
                id,
                revision,
                job,
                exec,
            } => self.edit(uid, id, revision, *job, *exec)?,
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
            Work::Skip { uid, job } => self.skip(uid, &job)?,
            Work::Trigger { uid, job } => self.on_job(uid, &job, Event::Trigger, |j, state| {
                Response::Triggered(Triggered { id: j.id, state })
            })?,
            Work::SetQueue {
                uid,
                name,
                parallel,
                clear_limits,
                limits,
            } => self.set_queue(uid, name, parallel, clear_limits, limits)?,
            Work::Reconcile(plan) => self.reconcile(*plan)?,
            Work::Runner { job, event } => {
                self.runner_event(job, event)?;
                return Ok(None);
            }
        }))
    }

    /// Finds a job a user may change.
    pub(super) fn find(
        &mut self,
        uid: u32,
        job: &JobRef,
    ) -> Result<Result<Job, ErrorReply>, StoreError> {
        // A damaged job is refused here; it is quarantined where chimed meets it by itself.
        let found = self.w.find(uid, job)?;
        if let Found::Job(job) = &found {
            self.found = Some((job.id, job.owner, job.name.clone()));
        }
        Ok(owned_job(uid, job, found, &self.env.database))
    }

    /// Applies a user's event to a job and answers with `reply`.
    pub(super) fn on_job(
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

    /// Runs the state machine on `job` and records the result and its events. Returns the new
    /// job, or why the event does not apply. A storage error fails the whole batch.
    ///
    /// A timer (a job without a command) has no process: a run opened for it ends at once, in
    /// the same transaction, as `fired`.
    pub(super) fn transition(
        &mut self,
        job: &Job,
        event: Event,
    ) -> Result<Result<Job, Refusal>, StoreError> {
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
                usage: None,
            };
            match self.step(&current, fired, &mut log)? {
                Ok(after) => current = after,
                Err(refusal) => {
                    tracing::error!(job_id = job.id.0, run_id = run.0, %refusal, "a timer's run did not close");
                    break;
                }
            }
        }
        // A step whose writing waited for a close that did not come: written as it is.
        if let Some(stored) = log.stored.take() {
            self.w.put_job(Some(&stored), &current)?;
            self.out.changes += 1;
        }
        for run in std::mem::take(&mut log.unwritten) {
            self.w.put_run(&run)?;
        }
        self.emit_changes(job, &current, &log)?;
        Ok(Ok(current))
    }

    /// One step of the state machine, recorded (see [`Batch::transition`]).
    pub(super) fn step(
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
            host: self.env.host.clone(),
        };
        let step = match machine::step(job, event, &mut ctx) {
            Ok(step) => step,
            Err(refusal) => return Ok(Err(refusal)),
        };
        self.w.set_next_run_id(ctx.next_run);
        // A timer's run opened here is closed by the transition's next step: the job and the
        // run are written as that step leaves them ([`StepLog::stored`]).
        let timer_opens = step.job.command.is_timer()
            && step
                .actions
                .iter()
                .any(|a| matches!(a, Action::Spawn { .. }));
        if timer_opens {
            log.stored.get_or_insert_with(|| job.clone());
        } else {
            let stored = log.stored.take();
            let old = stored.as_ref().unwrap_or(job);
            if step.job != *old {
                self.w.put_job(Some(old), &step.job)?;
                self.out.changes += 1;
            }
        }
        for run in &step.unrecorded {
            self.w.delete_run(step.job.id, *run)?;
            // Its admission slot is free again.
            self.slots_freed = true;
        }
        let mut closed = false;
        for run in &step.runs {
            if timer_opens && run.outcome.is_none() {
                log.unwritten.push(run.clone());
                continue;
            }
            log.unwritten.retain(|open| open.id != run.id);
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
                    // The queue as it is now: a change of its limits applies to runs opened
                    // after it.
                    let queue = self.queue(&step.job.queue)?;
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
                        parallel: queue.parallel,
                        name: step.job.name.clone(),
                        journal: step.job.exec.journal,
                        logged: Default::default(),
                        limits: step.job.exec.run_limits(&queue.limits),
                        keep_children: step.job.exec.keep_children,
                    });
                }
                Action::Terminate { run } => {
                    let host = step
                        .job
                        .state
                        .runs()
                        .iter()
                        .find(|r| r.run == *run)
                        .and_then(|r| r.host.clone())
                        .or_else(|| {
                            job.state
                                .runs()
                                .iter()
                                .find(|r| r.run == *run)
                                .and_then(|r| r.host.clone())
                        });
                    self.stop(host.as_deref(), *run, None)?;
                }
            }
        }
        Ok(Ok(step.job))
    }

    /// Ends run `run` (`signal`: sends it that signal instead): this host's runner does, after
    /// the commit; another fleet host's run is asked of that host, through the store.
    pub(super) fn stop(
        &mut self,
        host: Option<&str>,
        run: RunId,
        signal: Option<i32>,
    ) -> Result<(), StoreError> {
        match host {
            Some(host) if Some(host) != self.env.host.as_deref() => {
                self.w.request_stop(host, run, signal)
            }
            _ => {
                match signal {
                    Some(signal) => self.out.signals.push((run, signal)),
                    None => self.out.terminations.push(run),
                }
                Ok(())
            }
        }
    }

    pub(super) fn runner_event(&mut self, id: JobId, event: Event) -> Result<(), StoreError> {
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
}

pub(super) fn refused(refusal: Refusal) -> ErrorReply {
    let code = match refusal {
        Refusal::Final(_) | Refusal::Invalid(_) | Refusal::NotApplicable { .. } => {
            ErrorCode::InvalidState
        }
        Refusal::Stale => ErrorCode::InvalidState,
    };
    ErrorReply::new(code, refusal.to_string())
}
