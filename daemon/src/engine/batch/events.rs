//! Events and audit records: what a batch appends to the event log for each change (in the
//! same transaction), and the audit record of each user's change.

use super::core::{Batch, StepLog};
use super::*;
use crate::job::Job;
use crate::store::StoreError;
use crate::wire::command_line;
use chime_proto::{EventKind, JobRef, Outcome, PauseTarget, Paused, Response, Resumed};

impl Batch<'_, '_> {
    /// The audit record of a user's change that was applied.
    pub(super) fn audit(&self, actor: u32, verb: &'static str, response: &Response) -> Audit {
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

    /// Appends an event to the log, in this transaction.
    pub(super) fn emit(&mut self, job: Option<&Job>, kind: EventKind) -> Result<(), StoreError> {
        let shared = job.is_some_and(|j| !self.env.limits.is_exempt(j.owner));
        let record = self
            .w
            .append_event(self.now, self.actor, job, kind, shared)?;
        self.out.events.push(record);
        Ok(())
    }

    /// The events of one transition: runs ended and started (or a timer fired), occurrences
    /// missed, a pause set or lifted, the state changed.
    pub(super) fn emit_changes(
        &mut self,
        before: &Job,
        after: &Job,
        log: &StepLog,
    ) -> Result<(), StoreError> {
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
                usage: run.usage.clone(),
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
}
