//! The job state machine: a pure function from (job, event, context) to (job, run records,
//! actions).
//!
//! Every change to a job goes through [`step`]. It does no I/O: the engine persists what it
//! returns (the new job, and every run record that opened, changed or closed) in the batch's
//! write transaction, and performs the [`Action`]s only after that transaction has committed.
//! The context ([`Ctx`]) carries what the job cannot know about itself: the time, when chimed
//! started, how many runs its queue may start now and whether the queue is paused.
//!
//! # How occurrences become runs
//!
//! 1. **Fire.** The timer index says the next occurrence is due. If the job, its queue or
//!    everything is paused, the occurrence is *held* until the pause ends. Otherwise the
//!    occurrences due so far are handled (2) and the next one is scheduled.
//! 2. **Handling due occurrences.** Occurrences that came due before chimed started, or while
//!    they were held by a pause, are *missed*: the catch-up policy keeps none of them (`skip`),
//!    the latest (`latest`, the default; none when an on-time occurrence stands for them) or the
//!    oldest `limit` (`all`). Any occurrence older than the deadline is missed too. What is kept
//!    meets the overlap policy if a run is in progress: `skip` drops it, `queue` and `allow` owe
//!    it, `replace` terminates the running runs and owes only the newest. What is kept is *owed*.
//! 3. **Starting.** Owed runs start oldest first while the job is not paused or cancelling, the
//!    queue is not paused and has a free slot, and (unless the overlap policy is `allow`) no run
//!    of the job is in progress. A job whose owed runs wait for its queue is *waiting* (in the
//!    waiting index, shown as `queued`) and is released when a slot frees or the pause ends.
//! 4. **Retrying.** An attempt that fails with an outcome the job's retry policy covers, while
//!    retries are left, owes another attempt of the same occurrence, not before its backoff
//!    (`wake` puts the job in the timer index for it).
//! 5. **Ending.** A run's end records its outcome and may start the next owed run. A job with no
//!    run in progress, nothing owed, nothing held and no next occurrence is final: `succeeded`
//!    if its last run exited 0, `failed` otherwise (also when it never ran), `cancelled` if it was
//!    cancelled. `--count` ends the occurrences after that many runs, `--until` after that
//!    instant.
//!
//! Final states absorb: every event is refused in them except `Replace`, which gives the job a
//! new spec and makes it active again. Runner events that name a run the job does not have open
//! are [`Refusal::Stale`] and change nothing.

//!
//! # Files
//!
//! - `mod.rs`: [`step`], the one transition function: one arm per event.
//! - `vocabulary.rs`: what goes in and out of a step: [`Event`], [`Spec`], [`Ctx`], [`Step`],
//!   [`Action`] and [`Refusal`].
//! - `transition.rs`: a transition in progress (the job taken apart while a step changes it,
//!   and what the step produces), replacing a spec, and putting the job back together
//!   (final or not).
//! - `occurrences.rs`: occurrences becoming owed runs: the schedule, `--count` and `--until`,
//!   the catch-up and deadline rules and the overlap policy.
//! - `runs.rs`: owed runs becoming runs and runs ending: starting while slots allow, closing
//!   with an outcome, retries and their backoff, run records.

mod occurrences;
mod runs;
mod transition;
mod vocabulary;

pub use vocabulary::{Action, Ctx, Event, Refusal, Spec, Step};

use crate::job::{Job, MissedReason, Next, OverlapPolicy, Owed, State};
use chime_proto::{Outcome, RunId};
use transition::{Active, Transition};
use vocabulary::{event_name, past_tense};

/// Applies `event` to `job` in `ctx`.
///
/// Pure: the same inputs give the same output, and nothing outside the return value and `ctx`
/// changes.
pub fn step(job: &Job, event: Event, ctx: &mut Ctx) -> Result<Step, Refusal> {
    if job.state.is_final() {
        match event {
            Event::Replace(spec) => {
                let mut t = Transition::new(job.clone(), ctx);
                let mut active = Active::fresh();
                t.replace(&mut active, *spec)?;
                return Ok(t.finish(active));
            }
            Event::Retry if matches!(job.state, State::Failed { .. }) => {
                let mut t = Transition::new(job.clone(), ctx);
                let mut active = Active::fresh();
                t.owe_manual(&mut active);
                t.try_start(&mut active);
                return Ok(t.finish(active));
            }
            Event::Retry => {
                return Err(Refusal::Invalid(format!(
                    "job {} has {}, not failed; only a failed job can be retried",
                    job.id,
                    past_tense(job.kind())
                )));
            }
            Event::Cancel | Event::Trigger | Event::Skip | Event::Pause(_) | Event::Resume => {
                return Err(Refusal::Final(Box::new(job.clone())));
            }
            Event::Spawned { .. }
            | Event::Unstarted { .. }
            | Event::SpawnFailed { .. }
            | Event::Exited { .. }
            | Event::Finished { .. }
            | Event::Interrupted { .. } => return Err(Refusal::Stale),
            Event::Fire | Event::Release | Event::Lost { .. } => {
                return Err(Refusal::NotApplicable {
                    event: event_name(&event),
                    state: job.kind(),
                });
            }
        }
    }
    let mut t = Transition::new(job.clone(), ctx);
    let mut a = t.take_active();
    match event {
        Event::Fire => {
            let now = t.ctx.now;
            let due = match a.next {
                Next::Scheduled(due) if due <= now => Some(due),
                _ => None,
            };
            let retry_due = a.wake.is_some_and(|wake| wake <= now);
            if due.is_none() && !retry_due {
                return Err(t.not_applicable(&Event::Fire));
            }
            if let Some(due) = due {
                if t.job.pause.is_some() || t.ctx.queue_paused {
                    a.next = Next::Held(due);
                } else {
                    let missed_before = t.ctx.on_time_since;
                    t.handle_due(&mut a, due, missed_before);
                }
            }
            t.try_start(&mut a);
        }
        Event::Release => {
            if let Next::Held(due) = a.next
                && t.job.pause.is_none()
                && !t.ctx.queue_paused
            {
                let now = t.ctx.now;
                t.handle_due(&mut a, due, now + 1);
            }
            t.try_start(&mut a);
        }
        Event::Spawned {
            run,
            pid,
            started_ms,
        } => {
            let Some(open) = a.runs.iter_mut().find(|r| r.run == run) else {
                return Err(Refusal::Stale);
            };
            open.pid = Some(pid);
            open.started_ms = started_ms;
            let open = open.clone();
            t.runs.push(t.record(&open, None));
            if a.cancelling {
                t.actions.push(Action::Terminate { run });
            }
        }
        Event::Unstarted { run } => {
            let Some(i) = a.runs.iter().position(|r| r.run == run) else {
                return Err(Refusal::Stale);
            };
            let open = a.runs.remove(i);
            t.unrecorded.push(run);
            t.job.runs_started = t.job.runs_started.saturating_sub(1);
            if open.attempt == 1 && !open.manual {
                t.job.occurrences_started = t.job.occurrences_started.saturating_sub(1);
            }
            let replaced = t.job.overlap == OverlapPolicy::Replace && !a.owed.is_empty();
            if replaced {
                let now = t.ctx.now;
                t.job.record_missed(open.due_ms, now, MissedReason::Overlap);
            } else if !a.cancelling {
                a.owed.push(Owed {
                    due_ms: open.due_ms,
                    attempt: open.attempt,
                    not_before_ms: open.due_ms,
                    manual: open.manual,
                });
                a.owed.sort_unstable();
            }
            t.try_start(&mut a);
        }
        Event::SpawnFailed { run, error } => {
            t.close(&mut a, run, Outcome::SpawnError(error))?;
            t.try_start(&mut a);
        }
        Event::Finished {
            run,
            outcome,
            pid,
            started_ms,
            ended_ms,
            usage,
        } => {
            if let Some(open) = a.runs.iter_mut().find(|r| r.run == run) {
                open.pid = pid.or(open.pid);
                open.started_ms = started_ms;
            }
            t.ended_ms = Some(ended_ms);
            t.close(&mut a, run, outcome)?.usage = usage;
            t.ended_ms = None;
            t.try_start(&mut a);
        }
        Event::Exited { run, outcome } => {
            t.close(&mut a, run, outcome)?;
            t.try_start(&mut a);
        }
        Event::Interrupted { run } => {
            t.close(&mut a, run, Outcome::Interrupted)?;
            t.try_start(&mut a);
        }
        Event::Lost { ended, host } => {
            let open: Vec<RunId> = a
                .runs
                .iter()
                .filter(|r| r.host == host)
                .map(|r| r.run)
                .collect();
            if open.is_empty() {
                return Err(t.not_applicable(&Event::Lost { ended, host }));
            }
            for run in open {
                t.close(&mut a, run, Outcome::Lost)?.ended_at_start = ended.get(&run).copied();
            }
            t.try_start(&mut a);
        }
        Event::Cancel => {
            if a.cancelling {
                return Err(Refusal::Invalid(format!(
                    "job {} is already being cancelled; its runs were sent SIGTERM",
                    t.job.id
                )));
            }
            a.cancelling = true;
            a.next = Next::None;
            a.owed.clear();
            a.waiting = false;
            // Every open run: the runner ends the live ones and takes back those not started.
            for open in &a.runs {
                t.actions.push(Action::Terminate { run: open.run });
            }
        }
        Event::Pause(pause) => {
            if a.cancelling {
                return Err(Refusal::Invalid(format!(
                    "job {} is being cancelled",
                    t.job.id
                )));
            }
            t.job.pause = Some(pause);
            // Held and owed work now waits for the job's own resume, not for the queue.
            a.waiting = false;
        }
        Event::Resume => {
            if t.job.pause.is_none() {
                return Err(Refusal::Invalid(format!("job {} is not paused", t.job.id)));
            }
            t.job.pause = None;
            if let Next::Held(due) = a.next
                && !t.ctx.queue_paused
            {
                let now = t.ctx.now;
                t.handle_due(&mut a, due, now + 1);
            }
            t.try_start(&mut a);
        }
        Event::Skip => {
            if !t.job.schedule.is_recurring() {
                return Err(Refusal::Invalid(format!(
                    "job {} runs only once; to keep it from running, cancel it",
                    t.job.id
                )));
            }
            let due = match a.next {
                Next::Scheduled(due) | Next::Held(due) => due,
                Next::None => {
                    return Err(Refusal::Invalid(format!(
                        "job {} has no next occurrence to skip",
                        t.job.id
                    )));
                }
            };
            let now = t.ctx.now;
            t.job.record_missed(due, now, MissedReason::Skipped);
            // The one after it goes back into the timer index (and is held again when it fires,
            // if the job is still paused).
            a.next = t
                .next_occurrence(due, &a)
                .map_or(Next::None, Next::Scheduled);
        }
        Event::Trigger => {
            if a.cancelling {
                return Err(Refusal::Invalid(format!(
                    "job {} is being cancelled",
                    t.job.id
                )));
            }
            if t.job.pause.is_some() {
                return Err(Refusal::Invalid(format!(
                    "job {} is paused; resume it first",
                    t.job.id
                )));
            }
            if !a.runs.is_empty() && t.job.overlap == OverlapPolicy::Skip {
                return Err(Refusal::Invalid(format!(
                    "job {} is running and its overlap policy is skip; wait for the run to end",
                    t.job.id
                )));
            }
            t.owe_manual(&mut a);
            t.try_start(&mut a);
        }
        Event::Retry => {
            // An active job: run it again now, like a trigger.
            if a.cancelling || t.job.pause.is_some() {
                return Err(Refusal::Invalid(format!(
                    "job {} is paused or being cancelled",
                    t.job.id
                )));
            }
            t.owe_manual(&mut a);
            t.try_start(&mut a);
        }
        Event::Replace(spec) => {
            t.replace(&mut a, *spec)?;
        }
    }
    Ok(t.finish(a))
}

#[cfg(test)]
mod tests;
