//! A transition in progress: the job taken apart while a step changes it ([`Transition`],
//! [`Active`]), what replacing its spec does, and how it is put back together, final when nothing
//! is left.

use super::vocabulary::{Action, Ctx, Event, Refusal, Spec, Step, event_name};
use crate::job::{Job, Ms, Next, OpenRun, Owed, Run, Schedule, State};
use chime_proto::{Outcome, RunId};

/// A transition in progress: the job being changed, and the run records and actions the step
/// produces.
pub(super) struct Transition<'c> {
    pub(super) job: Job,
    /// When the run being closed ended, as the runner saw it (else: now).
    pub(super) ended_ms: Option<Ms>,
    pub(super) runs: Vec<Run>,
    pub(super) unrecorded: Vec<RunId>,
    pub(super) actions: Vec<Action>,
    pub(super) ctx: &'c mut Ctx,
}

/// The mutable parts of an active state, taken out of the job while a step works on them.
pub(super) struct Active {
    pub(super) next: Next,
    pub(super) owed: Vec<Owed>,
    pub(super) runs: Vec<OpenRun>,
    pub(super) wake: Option<Ms>,
    pub(super) waiting: bool,
    pub(super) cancelling: bool,
}

impl Active {
    pub(super) fn fresh() -> Self {
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

impl<'c> Transition<'c> {
    pub(super) fn new(job: Job, ctx: &'c mut Ctx) -> Self {
        Self {
            job,
            ended_ms: None,
            runs: Vec::new(),
            unrecorded: Vec::new(),
            actions: Vec::new(),
            ctx,
        }
    }

    pub(super) fn take_active(&mut self) -> Active {
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

    pub(super) fn not_applicable(&self, event: &Event) -> Refusal {
        Refusal::NotApplicable {
            event: event_name(event),
            state: self.job.kind(),
        }
    }

    /// Swaps the spec, keeping id, name, owner, history, pause and runs in progress.
    pub(super) fn replace(&mut self, a: &mut Active, spec: Spec) -> Result<(), Refusal> {
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
    pub(super) fn finish(mut self, a: Active) -> Step {
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
