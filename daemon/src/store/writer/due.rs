//! The indexes the engine scans for work: occurrences that are due, finished jobs whose
//! retention ended, jobs waiting in a queue (per user), and jobs with runs in progress.

use super::Writer;
use crate::store::StoreError;
use crate::store::schema::state_code;
use chime_proto::{JobId, JobState};

/// Most users whose waiting jobs one release looks at in a queue.
pub const WAITING_SCAN: usize = 4096;

impl Writer<'_> {
    /// Up to `limit` jobs whose next occurrence is due at or before `now`, earliest first.
    pub fn due_jobs(&self, now: i64, limit: usize) -> Result<Vec<JobId>, StoreError> {
        let mut out = Vec::new();
        for entry in self.due.range(..=(now, u64::MAX))?.take(limit) {
            let ((_, id), ()) = entry?;
            out.push(JobId(id));
        }
        Ok(out)
    }

    /// The earliest due time in the timer index.
    pub fn first_due(&self) -> Result<Option<i64>, StoreError> {
        Ok(self.due.first()?.map(|((due, _), ())| due))
    }

    /// Up to `limit` finished jobs whose retention ended at or before `now`.
    pub fn expired_jobs(&self, now: i64, limit: usize) -> Result<Vec<JobId>, StoreError> {
        let mut out = Vec::new();
        for entry in self.expiry.range(..=(now, u64::MAX))?.take(limit) {
            let ((_, id), ()) = entry?;
            out.push(JobId(id));
        }
        Ok(out)
    }

    /// When the earliest retention ends.
    pub fn first_expiry(&self) -> Result<Option<i64>, StoreError> {
        Ok(self.expiry.first()?.map(|((at, _), ())| at))
    }

    /// Up to `limit` jobs waiting in `queue`, longest waiting first, with their owners, passing
    /// over the users `skip` refuses (those at their running limit). One seek per user with
    /// waiting jobs (at most [`WAITING_SCAN`] users), and at most `limit` entries read for each,
    /// however many a passed-over user has waiting.
    pub fn waiting_in(
        &self,
        queue: &str,
        limit: usize,
        skip: impl Fn(u32) -> bool,
    ) -> Result<Vec<(u32, JobId)>, StoreError> {
        let mut found: Vec<(i64, u32, JobId)> = Vec::new();
        let mut owner = 0u32;
        for _ in 0..WAITING_SCAN {
            let from = (queue, owner, i64::MIN, 0);
            let to = (queue, u32::MAX, i64::MAX, u64::MAX);
            let Some(first) = self.waiting.range(from..=to)?.next() else {
                break;
            };
            let ((_, next_owner, _, _), ()) = first?;
            if !skip(next_owner) {
                let own =
                    (queue, next_owner, i64::MIN, 0)..=(queue, next_owner, i64::MAX, u64::MAX);
                for entry in self.waiting.range(own)?.take(limit) {
                    let ((_, _, since, id), ()) = entry?;
                    found.push((since, next_owner, JobId(id)));
                }
            }
            match next_owner.checked_add(1) {
                Some(following) => owner = following,
                None => break,
            }
        }
        found.sort();
        found.truncate(limit);
        Ok(found
            .into_iter()
            .map(|(_, owner, id)| (owner, id))
            .collect())
    }

    /// Queues with waiting jobs, and how many wait in each.
    pub fn waiting_queues(&self) -> Result<Vec<(String, u64)>, StoreError> {
        let mut out = Vec::new();
        for entry in self.meta.range("waiting."..="waiting.\u{10ffff}")? {
            let (key, value) = entry?;
            let queue = key.trim_start_matches("waiting.").to_owned();
            let pending = self.waiting_delta.get(&queue).copied().unwrap_or(0);
            let n = value.saturating_add_signed(pending);
            if n > 0 {
                out.push((queue, n));
            }
        }
        for (queue, delta) in &self.waiting_delta {
            if *delta > 0 && !out.iter().any(|(q, _)| q == queue) {
                out.push((queue.clone(), *delta as u64));
            }
        }
        Ok(out)
    }

    /// Every job with runs in progress (what recovery closes): the `running` state, which a job
    /// is in exactly when it has runs open.
    pub fn running_jobs(&self) -> Result<Vec<JobId>, StoreError> {
        let code = state_code(JobState::Running);
        let mut out = Vec::new();
        for entry in self.states.range((code, 0)..=(code, u64::MAX))? {
            let ((_, id), ()) = entry?;
            out.push(JobId(id));
        }
        Ok(out)
    }
}
