//! How occurrences become owed runs: the job's recurrence and its limits (`--count`, `--until`),
//! the due occurrences sorted into missed and on time, the catch-up policy and the deadline,
//! and the overlap policy for what is kept (steps 1 and 2 of the module docs).

use super::transition::{Active, Transition};
use super::vocabulary::Action;
use crate::job::{CatchUpPolicy, MissedReason, Ms, Next, OWED_MAX, OverlapPolicy, Owed};
use crate::schedule::Recurrence;

impl Transition<'_> {
    pub(super) fn recurrence(&self) -> Option<Recurrence> {
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
    pub(super) fn occurrences_committed(&self, a: &Active) -> usize {
        self.job.occurrences_started as usize
            + a.owed
                .iter()
                .filter(|o| o.attempt == 1 && !o.manual)
                .count()
    }

    /// The first occurrence after `after` that the job's limits allow.
    pub(super) fn next_occurrence(&self, after: Ms, a: &Active) -> Option<Ms> {
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
    pub(super) fn handle_due(&mut self, a: &mut Active, due: Ms, missed_before: Ms) {
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
    pub(super) fn owe(&mut self, a: &mut Active, new: Vec<Ms>) {
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
    pub(super) fn owe_manual(&mut self, a: &mut Active) {
        if self.job.overlap == OverlapPolicy::Replace {
            for open in &a.runs {
                self.actions.push(Action::Terminate { run: open.run });
            }
        }
        a.owed.push(Owed::manual(self.ctx.now));
        a.owed.sort_unstable();
    }
}
