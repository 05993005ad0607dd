//! How owed runs become runs and how runs end: starting while the job, its queue and its overlap
//! policy allow, closing a run with its outcome, owing a retry after its backoff or the same
//! attempt again after a loss, and the run records a step writes (steps 3 to 5 of the module
//! docs).

use super::transition::{Active, Transition};
use super::vocabulary::{Action, Refusal};
use crate::job::{MissedReason, Next, OpenRun, OverlapPolicy, Owed, Run};
use chime_proto::{Outcome, RunId};

impl Transition<'_> {
    /// Starts owed runs while the job, its queue and its overlap policy allow, and works out
    /// what the job waits for: a slot or a resume (`waiting`), or a retry's backoff (`wake`).
    pub(super) fn try_start(&mut self, a: &mut Active) {
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
                host: self.ctx.host.clone(),
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

    /// Closes an open run with `outcome`. Returns its record, for what only the event knows
    /// (its usage, what was left of it at a start).
    pub(super) fn close(
        &mut self,
        a: &mut Active,
        run: RunId,
        outcome: Outcome,
    ) -> Result<&mut Run, Refusal> {
        let Some(i) = a.runs.iter().position(|r| r.run == run) else {
            return Err(Refusal::Stale);
        };
        let open = a.runs.remove(i);
        let record = self.record(&open, Some(outcome.clone()));
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
        self.runs.push(record);
        Ok(self.runs.last_mut().expect("the record was just pushed"))
    }

    pub(super) fn record(&self, open: &OpenRun, outcome: Option<Outcome>) -> Run {
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
            usage: None,
            ended_at_start: None,
            host: open.host.clone(),
        }
    }
}
