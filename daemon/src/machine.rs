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

use crate::job::{
    CatchUpPolicy, Exec, Job, MissedReason, Ms, Next, OWED_MAX, OpenRun, OverlapPolicy, Owed,
    PauseInfo, Run, Schedule, State,
};
use crate::schedule::Recurrence;
use chime_proto::{Command, JobState, Outcome, RunId};
use jiff::tz::TimeZone;

/// Something that happens to a job.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    /// The timer index says the next occurrence is due.
    Fire,
    /// A pause of the queue or of everything ended, or a slot in the queue freed: handle held
    /// occurrences and start owed runs where possible.
    Release,
    /// The runner started a run's process.
    Spawned {
        run: RunId,
        pid: u32,
        started_ms: Ms,
    },
    /// An opened run's process never started (a pause, a cancel or a shutdown took it back):
    /// the run leaves no record and its occurrence is owed again.
    Unstarted { run: RunId },
    /// The runner could not start a run's process.
    SpawnFailed { run: RunId, error: String },
    /// A run's process ended (`Exited` or `Signaled`).
    Exited { run: RunId, outcome: Outcome },
    /// A run's process ended, as the runner saw it: when it started and ended, and its pid (its
    /// start may not have been reported before). A timer's run has no process and no pid.
    Finished {
        run: RunId,
        outcome: Outcome,
        pid: Option<u32>,
        started_ms: Ms,
        ended_ms: Ms,
    },
    /// The daemon was stopped during the run and ended it.
    Interrupted { run: RunId },
    /// Found open at start: the daemon died during the job's runs.
    Lost,
    /// A user cancels the job.
    Cancel,
    /// A user pauses the job.
    Pause(PauseInfo),
    /// A user resumes the job (or its timed pause ended).
    Resume,
    /// A user skips the next occurrence.
    Skip,
    /// A user runs the job now, outside its schedule.
    Trigger,
    /// A user runs a failed job again now.
    Retry,
    /// A user replaces the job's spec (`add --replace`).
    Replace(Box<Spec>),
}

/// The parts of a job a replace swaps.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Spec {
    pub command: Command,
    pub cwd: String,
    pub env: Vec<(String, String)>,
    pub schedule: Schedule,
    pub count: Option<u32>,
    pub until_ms: Option<Ms>,
    pub catch_up: CatchUpPolicy,
    pub deadline_ms: Option<u64>,
    pub overlap: OverlapPolicy,
    pub queue: String,
    pub exec: Exec,
}

/// What a step needs to know beyond the job.
#[derive(Debug, Clone)]
pub struct Ctx {
    pub now: Ms,
    /// Since when chimed has kept time: its start, or the end of its last stall (see the
    /// engine's `STALL`). Occurrences due before it were missed, as during a downtime.
    pub on_time_since: Ms,
    /// Runs the job's queue may start now; [`step`] takes the slots it uses.
    pub free_slots: usize,
    /// The job's queue or everything is paused.
    pub queue_paused: bool,
    /// The next run id to allocate; [`step`] advances it.
    pub next_run: u64,
    /// The zone of cron schedules that name none.
    pub local_tz: TimeZone,
}

/// What the engine must do once the change is durable.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    /// Start the run's process.
    Spawn { run: RunId },
    /// Ask the run's process group to stop (SIGTERM, then SIGKILL after the grace period).
    Terminate { run: RunId },
}

/// The result of a transition.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Step {
    pub job: Job,
    /// Run records to write: runs that opened, changed or closed.
    pub runs: Vec<Run>,
    /// Run records to delete: runs whose process never started.
    pub unrecorded: Vec<RunId>,
    pub actions: Vec<Action>,
}

/// Why an event does not apply.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    #[error("job {id} has already {state}", id = .0.id, state = past_tense(.0.kind()))]
    Final(Box<Job>),
    #[error("the event is for a run that is not open")]
    Stale,
    #[error("event {event} does not apply to a {state} job")]
    NotApplicable {
        event: &'static str,
        state: JobState,
    },
    #[error("{0}")]
    Invalid(String),
}

fn past_tense(state: JobState) -> &'static str {
    match state {
        JobState::Succeeded => "succeeded",
        JobState::Failed => "failed",
        JobState::Cancelled => "been cancelled",
        _ => "changed",
    }
}

const fn event_name(event: &Event) -> &'static str {
    match event {
        Event::Fire => "fire",
        Event::Release => "release",
        Event::Spawned { .. } => "spawned",
        Event::Unstarted { .. } => "unstarted",
        Event::SpawnFailed { .. } => "spawn_failed",
        Event::Exited { .. } => "exited",
        Event::Finished { .. } => "finished",
        Event::Interrupted { .. } => "interrupted",
        Event::Lost => "lost",
        Event::Cancel => "cancel",
        Event::Pause(_) => "pause",
        Event::Resume => "resume",
        Event::Skip => "skip",
        Event::Trigger => "trigger",
        Event::Retry => "retry",
        Event::Replace(_) => "replace",
    }
}

/// A step in progress: the job being changed and what it produces.
struct Work<'c> {
    job: Job,
    /// When the run being closed ended, as the runner saw it (else: now).
    ended_ms: Option<Ms>,
    runs: Vec<Run>,
    unrecorded: Vec<RunId>,
    actions: Vec<Action>,
    ctx: &'c mut Ctx,
}

/// The mutable parts of an active state, taken out of the job while a step works on them.
struct Active {
    next: Next,
    owed: Vec<Owed>,
    runs: Vec<OpenRun>,
    wake: Option<Ms>,
    waiting: bool,
    cancelling: bool,
}

/// Applies `event` to `job` in `ctx`.
///
/// Pure: the same inputs give the same output, and nothing outside the return value and `ctx`
/// changes.
pub fn step(job: &Job, event: Event, ctx: &mut Ctx) -> Result<Step, Refusal> {
    if job.state.is_final() {
        match event {
            Event::Replace(spec) => {
                let mut w = Work::new(job.clone(), ctx);
                let mut active = Active::fresh();
                w.replace(&mut active, *spec)?;
                return Ok(w.finish(active));
            }
            Event::Retry if matches!(job.state, State::Failed { .. }) => {
                let mut w = Work::new(job.clone(), ctx);
                let mut active = Active::fresh();
                w.owe_manual(&mut active);
                w.try_start(&mut active);
                return Ok(w.finish(active));
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
            Event::Fire | Event::Release | Event::Lost => {
                return Err(Refusal::NotApplicable {
                    event: event_name(&event),
                    state: job.kind(),
                });
            }
        }
    }
    let mut w = Work::new(job.clone(), ctx);
    let mut a = w.take_active();
    match event {
        Event::Fire => {
            let now = w.ctx.now;
            let due = match a.next {
                Next::Scheduled(due) if due <= now => Some(due),
                _ => None,
            };
            let retry_due = a.wake.is_some_and(|wake| wake <= now);
            if due.is_none() && !retry_due {
                return Err(w.not_applicable(&Event::Fire));
            }
            if let Some(due) = due {
                if w.job.pause.is_some() || w.ctx.queue_paused {
                    a.next = Next::Held(due);
                } else {
                    let missed_before = w.ctx.on_time_since;
                    w.handle_due(&mut a, due, missed_before);
                }
            }
            w.try_start(&mut a);
        }
        Event::Release => {
            if let Next::Held(due) = a.next
                && w.job.pause.is_none()
                && !w.ctx.queue_paused
            {
                let now = w.ctx.now;
                w.handle_due(&mut a, due, now + 1);
            }
            w.try_start(&mut a);
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
            w.runs.push(w.record(&open, None));
            if a.cancelling {
                w.actions.push(Action::Terminate { run });
            }
        }
        Event::Unstarted { run } => {
            let Some(i) = a.runs.iter().position(|r| r.run == run) else {
                return Err(Refusal::Stale);
            };
            let open = a.runs.remove(i);
            w.unrecorded.push(run);
            w.job.runs_started = w.job.runs_started.saturating_sub(1);
            if open.attempt == 1 && !open.manual {
                w.job.occurrences_started = w.job.occurrences_started.saturating_sub(1);
            }
            let replaced = w.job.overlap == OverlapPolicy::Replace && !a.owed.is_empty();
            if replaced {
                let now = w.ctx.now;
                w.job.record_missed(open.due_ms, now, MissedReason::Overlap);
            } else if !a.cancelling {
                a.owed.push(Owed {
                    due_ms: open.due_ms,
                    attempt: open.attempt,
                    not_before_ms: open.due_ms,
                    manual: open.manual,
                });
                a.owed.sort_unstable();
            }
            w.try_start(&mut a);
        }
        Event::SpawnFailed { run, error } => {
            w.close(&mut a, run, Outcome::SpawnError(error))?;
            w.try_start(&mut a);
        }
        Event::Finished {
            run,
            outcome,
            pid,
            started_ms,
            ended_ms,
        } => {
            if let Some(open) = a.runs.iter_mut().find(|r| r.run == run) {
                open.pid = pid.or(open.pid);
                open.started_ms = started_ms;
            }
            w.ended_ms = Some(ended_ms);
            w.close(&mut a, run, outcome)?;
            w.ended_ms = None;
            w.try_start(&mut a);
        }
        Event::Exited { run, outcome } => {
            w.close(&mut a, run, outcome)?;
            w.try_start(&mut a);
        }
        Event::Interrupted { run } => {
            w.close(&mut a, run, Outcome::Interrupted)?;
            w.try_start(&mut a);
        }
        Event::Lost => {
            let open: Vec<RunId> = a.runs.iter().map(|r| r.run).collect();
            if open.is_empty() {
                return Err(w.not_applicable(&Event::Lost));
            }
            for run in open {
                w.close(&mut a, run, Outcome::Lost)?;
            }
            w.try_start(&mut a);
        }
        Event::Cancel => {
            if a.cancelling {
                return Err(Refusal::Invalid(format!(
                    "job {} is already being cancelled; its runs were sent SIGTERM",
                    w.job.id
                )));
            }
            a.cancelling = true;
            a.next = Next::None;
            a.owed.clear();
            a.waiting = false;
            // Every open run: the runner ends the live ones and takes back those not started.
            for open in &a.runs {
                w.actions.push(Action::Terminate { run: open.run });
            }
        }
        Event::Pause(pause) => {
            if a.cancelling {
                return Err(Refusal::Invalid(format!(
                    "job {} is being cancelled",
                    w.job.id
                )));
            }
            w.job.pause = Some(pause);
            // Held and owed work now waits for the job's own resume, not for the queue.
            a.waiting = false;
        }
        Event::Resume => {
            if w.job.pause.is_none() {
                return Err(Refusal::Invalid(format!("job {} is not paused", w.job.id)));
            }
            w.job.pause = None;
            if let Next::Held(due) = a.next
                && !w.ctx.queue_paused
            {
                let now = w.ctx.now;
                w.handle_due(&mut a, due, now + 1);
            }
            w.try_start(&mut a);
        }
        Event::Skip => {
            if !w.job.schedule.is_recurring() {
                return Err(Refusal::Invalid(format!(
                    "job {} runs only once; to keep it from running, cancel it",
                    w.job.id
                )));
            }
            let due = match a.next {
                Next::Scheduled(due) | Next::Held(due) => due,
                Next::None => {
                    return Err(Refusal::Invalid(format!(
                        "job {} has no next occurrence to skip",
                        w.job.id
                    )));
                }
            };
            let now = w.ctx.now;
            w.job.record_missed(due, now, MissedReason::Skipped);
            // The one after it goes back into the timer index (and is held again when it fires,
            // if the job is still paused).
            a.next = w
                .next_occurrence(due, &a)
                .map_or(Next::None, Next::Scheduled);
        }
        Event::Trigger => {
            if a.cancelling {
                return Err(Refusal::Invalid(format!(
                    "job {} is being cancelled",
                    w.job.id
                )));
            }
            if w.job.pause.is_some() {
                return Err(Refusal::Invalid(format!(
                    "job {} is paused; resume it first",
                    w.job.id
                )));
            }
            if !a.runs.is_empty() && w.job.overlap == OverlapPolicy::Skip {
                return Err(Refusal::Invalid(format!(
                    "job {} is running and its overlap policy is skip; wait for the run to end",
                    w.job.id
                )));
            }
            w.owe_manual(&mut a);
            w.try_start(&mut a);
        }
        Event::Retry => {
            // An active job: run it again now, like a trigger.
            if a.cancelling || w.job.pause.is_some() {
                return Err(Refusal::Invalid(format!(
                    "job {} is paused or being cancelled",
                    w.job.id
                )));
            }
            w.owe_manual(&mut a);
            w.try_start(&mut a);
        }
        Event::Replace(spec) => {
            w.replace(&mut a, *spec)?;
        }
    }
    Ok(w.finish(a))
}

impl Active {
    fn fresh() -> Self {
        Self {
            next: Next::None,
            owed: Vec::new(),
            runs: Vec::new(),
            wake: None,
            waiting: false,
            cancelling: false,
        }
    }
}

impl<'c> Work<'c> {
    fn new(job: Job, ctx: &'c mut Ctx) -> Self {
        Self {
            job,
            ended_ms: None,
            runs: Vec::new(),
            unrecorded: Vec::new(),
            actions: Vec::new(),
            ctx,
        }
    }

    fn take_active(&mut self) -> Active {
        match std::mem::replace(&mut self.job.state, State::scheduled(None)) {
            State::Active {
                next,
                owed,
                runs,
                wake,
                waiting,
                cancelling,
            } => Active {
                next,
                owed,
                runs,
                wake,
                waiting,
                cancelling,
            },
            _ => unreachable!("final states are handled before take_active"),
        }
    }

    fn not_applicable(&self, event: &Event) -> Refusal {
        Refusal::NotApplicable {
            event: event_name(event),
            state: self.job.kind(),
        }
    }

    fn recurrence(&self) -> Option<Recurrence> {
        match Recurrence::of(&self.job.schedule, &self.ctx.local_tz) {
            Ok(r) => Some(r),
            Err(err) => {
                // Only a database changed behind chime's back gets here: the job stops firing.
                tracing::error!(job_id = self.job.id.0, error = %err, "stored schedule does not parse");
                None
            }
        }
    }

    /// Scheduled occurrences started or owed (first attempts): what `--count` counts.
    fn occurrences_committed(&self, a: &Active) -> usize {
        self.job.occurrences_started as usize
            + a.owed
                .iter()
                .filter(|o| o.attempt == 1 && !o.manual)
                .count()
    }

    /// The first occurrence after `after` that the job's limits allow.
    fn next_occurrence(&self, after: Ms, a: &Active) -> Option<Ms> {
        if let Some(count) = self.job.count
            && self.occurrences_committed(a) >= count as usize
        {
            return None;
        }
        let next = self.recurrence()?.next_after(after)?;
        match self.job.until_ms {
            Some(until) if next > until => None,
            _ => Some(next),
        }
    }

    /// Handles the occurrences from `due` (itself an occurrence) up to now; those before
    /// `missed_before` were missed. Schedules the next occurrence after now.
    fn handle_due(&mut self, a: &mut Active, due: Ms, missed_before: Ms) {
        let now = self.ctx.now;
        let Some(rec) = self.recurrence() else {
            a.next = Next::None;
            return;
        };
        let within = |t: Ms| self.job.until_ms.is_none_or(|u| t <= u);
        // Enumerate a bounded number of due occurrences, oldest first.
        const SCAN: usize = 1000;
        let mut listed = vec![due];
        let mut cursor = due;
        let mut complete = true;
        while let Some(next) = rec.next_after(cursor).filter(|n| *n <= now && within(*n)) {
            if listed.len() == SCAN {
                complete = false;
                break;
            }
            listed.push(next);
            cursor = next;
        }
        // Beyond the scan, only the latest due occurrence matters (it may be on time).
        if !complete && let Some(latest) = rec.latest_in(cursor + 1, now).filter(|t| within(*t)) {
            listed.push(latest);
        }
        let deadline = self.job.deadline_ms.map(|d| d.min(i64::MAX as u64) as i64);
        let mut missed = Vec::new();
        let mut current = Vec::new();
        for t in listed {
            if deadline.is_some_and(|d| now - t > d) {
                self.job.record_missed(t, now, MissedReason::Deadline);
            } else if t < missed_before {
                missed.push(t);
            } else {
                current.push(t);
            }
        }
        let kept: Vec<Ms> = match self.job.catch_up {
            CatchUpPolicy::Skip => Vec::new(),
            CatchUpPolicy::Latest if current.is_empty() => {
                missed.last().copied().into_iter().collect()
            }
            CatchUpPolicy::Latest => Vec::new(),
            CatchUpPolicy::All { limit } => missed.iter().take(limit as usize).copied().collect(),
        };
        for t in &missed {
            if !kept.contains(t) {
                self.job.record_missed(*t, now, MissedReason::CatchUp);
            }
        }
        let mut new: Vec<Ms> = kept;
        new.extend(current);
        self.owe(a, new);
        // The next occurrence: the first after now (and after what was handled).
        let last = cursor.max(now);
        a.next = self
            .next_occurrence(last, a)
            .map_or(Next::None, Next::Scheduled);
    }

    /// Adds occurrences that should run, under the overlap policy.
    fn owe(&mut self, a: &mut Active, new: Vec<Ms>) {
        if new.is_empty() {
            return;
        }
        let now = self.ctx.now;
        let busy = !a.runs.is_empty();
        let mut new = new;
        if let Some(count) = self.job.count {
            // Occurrences beyond --count do not exist.
            new.truncate((count as usize).saturating_sub(self.occurrences_committed(a)));
            if new.is_empty() {
                return;
            }
        }
        match self.job.overlap {
            OverlapPolicy::Skip if busy => {
                for t in new {
                    self.job.record_missed(t, now, MissedReason::Overlap);
                }
                return;
            }
            OverlapPolicy::Replace if busy || !a.owed.is_empty() => {
                for open in &a.runs {
                    self.actions.push(Action::Terminate { run: open.run });
                }
                let newest = *new.last().expect("new is not empty");
                for o in a.owed.drain(..) {
                    if o.attempt == 1 {
                        self.job.record_missed(o.due_ms, now, MissedReason::Overlap);
                    }
                }
                for t in new {
                    if t != newest {
                        self.job.record_missed(t, now, MissedReason::Overlap);
                    }
                }
                a.owed.push(Owed::first(newest));
                return;
            }
            _ => {}
        }
        for t in new {
            if a.owed.len() >= OWED_MAX {
                self.job.record_missed(t, now, MissedReason::TooMany);
            } else {
                a.owed.push(Owed::first(t));
            }
        }
        // Oldest first: a trigger may have owed `now` before an older occurrence was handled.
        a.owed.sort_unstable();
    }

    /// Owes a run a user asked for, now, under the overlap policy (`replace` terminates what
    /// runs; the others wait their turn or run beside it).
    fn owe_manual(&mut self, a: &mut Active) {
        if self.job.overlap == OverlapPolicy::Replace {
            for open in &a.runs {
                self.actions.push(Action::Terminate { run: open.run });
            }
        }
        a.owed.push(Owed::manual(self.ctx.now));
        a.owed.sort_unstable();
    }

    /// Starts owed runs while the job, its queue and its overlap policy allow, and works out
    /// what the job waits for: a slot or a resume (`waiting`), or a retry's backoff (`wake`).
    fn try_start(&mut self, a: &mut Active) {
        a.waiting = false;
        a.wake = None;
        if a.cancelling || self.job.pause.is_some() {
            return;
        }
        let now = self.ctx.now;
        let deadline = self.job.deadline_ms.map(|d| d.min(i64::MAX as u64) as i64);
        let mut i = 0;
        while i < a.owed.len() {
            let owed = a.owed[i];
            // The deadline is about an occurrence starting at all, not about its retries.
            if owed.attempt == 1 && deadline.is_some_and(|d| now - owed.due_ms > d) {
                a.owed.remove(i);
                self.job
                    .record_missed(owed.due_ms, now, MissedReason::Deadline);
                continue;
            }
            if owed.not_before_ms > now {
                a.wake = Some(
                    a.wake
                        .map_or(owed.not_before_ms, |w| w.min(owed.not_before_ms)),
                );
                i += 1;
                continue;
            }
            if !a.runs.is_empty() && self.job.overlap != OverlapPolicy::Allow {
                // Waits for the job's own run; released by its end.
                break;
            }
            if self.ctx.queue_paused || self.ctx.free_slots == 0 {
                a.waiting = true;
                break;
            }
            a.owed.remove(i);
            self.ctx.free_slots -= 1;
            let run = RunId(self.ctx.next_run);
            self.ctx.next_run += 1;
            self.job.runs_started += 1;
            if owed.attempt == 1 && !owed.manual {
                self.job.occurrences_started += 1;
            }
            let open = OpenRun {
                run,
                attempt: owed.attempt,
                due_ms: owed.due_ms,
                started_ms: now,
                pid: None,
                manual: owed.manual,
            };
            self.runs.push(self.record(&open, None));
            a.runs.push(open);
            self.actions.push(Action::Spawn { run });
        }
        // A held occurrence waiting for the queue or everything to resume.
        if matches!(a.next, Next::Held(_)) && self.ctx.queue_paused {
            a.waiting = true;
        }
    }

    /// Closes an open run with `outcome`.
    fn close(&mut self, a: &mut Active, run: RunId, outcome: Outcome) -> Result<(), Refusal> {
        let Some(i) = a.runs.iter().position(|r| r.run == run) else {
            return Err(Refusal::Stale);
        };
        let open = a.runs.remove(i);
        self.runs.push(self.record(&open, Some(outcome.clone())));
        let exec = &self.job.exec;
        // Lost before its start was recorded, the run may never have started: run the same
        // attempt again (at-least-once). Its record stays, as `lost`; it uses up no retry,
        // since retries count only attempts that ran.
        let unconfirmed = outcome == Outcome::Lost && open.pid.is_none();
        if unconfirmed && !a.cancelling {
            // The occurrence is counted again when it starts again.
            if open.attempt == 1 && !open.manual {
                self.job.occurrences_started = self.job.occurrences_started.saturating_sub(1);
            }
            a.owed.push(Owed {
                due_ms: open.due_ms,
                attempt: open.attempt,
                not_before_ms: self.ctx.now,
                manual: open.manual,
            });
            a.owed.sort_unstable();
        } else if !a.cancelling && open.attempt <= exec.retries && exec.retries_outcome(&outcome) {
            let delay = exec.backoff_ms(open.attempt, open.run.0);
            a.owed.push(Owed {
                due_ms: open.due_ms,
                attempt: open.attempt + 1,
                not_before_ms: self
                    .ctx
                    .now
                    .saturating_add(i64::try_from(delay).unwrap_or(i64::MAX)),
                manual: false,
            });
            a.owed.sort_unstable();
        }
        self.job.last_outcome = Some(outcome);
        Ok(())
    }

    fn record(&self, open: &OpenRun, outcome: Option<Outcome>) -> Run {
        Run {
            id: open.run,
            job: self.job.id,
            attempt: open.attempt,
            due_ms: open.due_ms,
            started_ms: open.started_ms,
            finished_ms: outcome
                .as_ref()
                .map(|_| self.ended_ms.unwrap_or(self.ctx.now)),
            pid: open.pid,
            outcome,
        }
    }

    /// Swaps the spec, keeping id, name, owner, history, pause and runs in progress.
    fn replace(&mut self, a: &mut Active, spec: Spec) -> Result<(), Refusal> {
        if a.cancelling {
            return Err(Refusal::Invalid(format!(
                "job {} is being cancelled; wait for it to end",
                self.job.id
            )));
        }
        let now = self.ctx.now;
        let job = &mut self.job;
        job.command = spec.command;
        job.cwd = spec.cwd;
        job.env = spec.env;
        job.schedule = spec.schedule;
        job.count = spec.count;
        job.until_ms = spec.until_ms;
        job.catch_up = spec.catch_up;
        job.deadline_ms = spec.deadline_ms;
        job.overlap = spec.overlap;
        job.queue = spec.queue;
        job.exec = spec.exec;
        // Counting starts again with the new spec.
        job.occurrences_started = 0;
        a.owed.clear();
        a.waiting = false;
        a.next = match &self.job.schedule {
            Schedule::Once { at_ms } => Next::Scheduled(*at_ms),
            _ => self
                .next_occurrence(now - 1, a)
                .map_or(Next::None, Next::Scheduled),
        };
        Ok(())
    }

    /// Puts the active parts back, and makes the job final when nothing is left.
    fn finish(mut self, a: Active) -> Step {
        let done = a.runs.is_empty() && a.owed.is_empty() && matches!(a.next, Next::None);
        let now = self.ctx.now;
        self.job.state = if done && a.cancelling {
            State::Cancelled { at_ms: now }
        } else if done {
            if self
                .job
                .last_outcome
                .as_ref()
                .is_some_and(Outcome::is_success)
            {
                State::Succeeded { at_ms: now }
            } else {
                State::Failed { at_ms: now }
            }
        } else {
            // Waiting means something waits: owed runs or a held occurrence.
            let waiting = a.waiting && (!a.owed.is_empty() || matches!(a.next, Next::Held(_)));
            // A wake is for an owed retry; events that drop owed runs drop their wake.
            let wake = a
                .wake
                .filter(|w| a.owed.iter().any(|o| o.not_before_ms == *w));
            State::Active {
                next: a.next,
                owed: a.owed,
                runs: a.runs,
                wake,
                waiting,
                cancelling: a.cancelling,
            }
        };
        if self.job.state.is_final() {
            // A finished job holds nothing; a pause on it means nothing.
            self.job.pause = None;
        }
        Step {
            job: self.job,
            runs: self.runs,
            unrecorded: self.unrecorded,
            actions: self.actions,
        }
    }
}

#[cfg(test)]
mod tests;
