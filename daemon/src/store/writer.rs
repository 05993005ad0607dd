//! One write transaction, seen through chime's tables.

use super::*;
use chime_proto::{JobId, RunId};
use redb::{ReadableTable, Table, WriteTransaction};

/// The tables of one write transaction. Built by [`Store::write`]; reads see this transaction's
/// own writes.
pub struct Writer<'t> {
    meta: Table<'t, &'static str, u64>,
    jobs: Table<'t, u64, &'static [u8]>,
    names: Table<'t, &'static str, u64>,
    due: Table<'t, (i64, u64), ()>,
    active: Table<'t, u64, u64>,
    runs: Table<'t, (u64, u64), &'static [u8]>,
    owners: Table<'t, (u32, u64), ()>,
    states: Table<'t, (u8, u64), ()>,
    next_job: u64,
    next_run: u64,
    count_delta: [i64; 5],
}

impl std::fmt::Debug for Writer<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Writer").finish_non_exhaustive()
    }
}

impl<'t> Writer<'t> {
    pub(super) fn new(txn: &'t WriteTransaction) -> Result<Self, StoreError> {
        let meta = txn.open_table(META)?;
        let next_job = meta.get(KEY_NEXT_JOB)?.map_or(1, |v| v.value());
        let next_run = meta.get(KEY_NEXT_RUN)?.map_or(1, |v| v.value());
        Ok(Self {
            meta,
            jobs: txn.open_table(JOBS)?,
            names: txn.open_table(NAMES)?,
            due: txn.open_table(DUE)?,
            active: txn.open_table(ACTIVE)?,
            runs: txn.open_table(RUNS)?,
            owners: txn.open_table(OWNERS)?,
            states: txn.open_table(STATES)?,
            next_job,
            next_run,
            count_delta: [0; 5],
        })
    }

    /// Writes the counters kept in memory during the transaction.
    pub(super) fn finish(mut self) -> Result<(), StoreError> {
        self.meta.insert(KEY_NEXT_JOB, self.next_job)?;
        self.meta.insert(KEY_NEXT_RUN, self.next_run)?;
        for state in JobState::ALL {
            let delta = self.count_delta[usize::from(state_code(state))];
            if delta != 0 {
                let key = count_key(state);
                let old = self.meta.get(key)?.map_or(0, |v| v.value());
                let new = old.saturating_add_signed(delta);
                self.meta.insert(key, new)?;
            }
        }
        Ok(())
    }

    /// Allocates a job id. Ids increase and are never reused, even if the transaction that
    /// allocated one is not committed (the counter is only written on commit, so an aborted
    /// transaction frees it again, which is fine: no one saw it).
    pub fn allocate_job_id(&mut self) -> JobId {
        let id = JobId(self.next_job);
        self.next_job += 1;
        id
    }

    /// Allocates a run id (same rules as job ids).
    pub fn allocate_run_id(&mut self) -> RunId {
        let id = RunId(self.next_run);
        self.next_run += 1;
        id
    }

    pub fn job(&self, id: JobId) -> Result<Option<Job>, StoreError> {
        match self.jobs.get(id.0)? {
            Some(bytes) => decode_job(id.0, bytes.value()).map(Some),
            None => Ok(None),
        }
    }

    pub fn job_id_by_name(&self, name: &str) -> Result<Option<JobId>, StoreError> {
        Ok(self.names.get(name)?.map(|v| JobId(v.value())))
    }

    /// Stores `new`, which replaces `old` (`None` for a new job), and brings every index and
    /// counter in line with it. This is the only function that writes the `jobs` table.
    pub fn put_job(&mut self, old: Option<&Job>, new: &Job) -> Result<(), StoreError> {
        let id = new.id.0;
        debug_assert!(old.is_none_or(|old| old.id == new.id));
        self.jobs.insert(id, encode(new).as_slice())?;

        let old_due = old.and_then(|o| o.state.due_ms());
        let new_due = new.state.due_ms();
        if old_due != new_due {
            if let Some(due) = old_due {
                self.due.remove((due, id))?;
            }
            if let Some(due) = new_due {
                self.due.insert((due, id), ())?;
            }
        }

        let old_run = old.and_then(|o| o.state.open_run());
        let new_run = new.state.open_run();
        if old_run != new_run {
            match new_run {
                Some(run) => {
                    self.active.insert(id, run.0)?;
                }
                None => {
                    self.active.remove(id)?;
                }
            }
        }

        let new_kind = new.state.kind();
        match old.map(|o| o.state.kind()) {
            Some(old_kind) if old_kind == new_kind => {}
            Some(old_kind) => {
                self.states.remove((state_code(old_kind), id))?;
                self.states.insert((state_code(new_kind), id), ())?;
                self.count_delta[usize::from(state_code(old_kind))] -= 1;
                self.count_delta[usize::from(state_code(new_kind))] += 1;
            }
            None => {
                self.states.insert((state_code(new_kind), id), ())?;
                self.count_delta[usize::from(state_code(new_kind))] += 1;
            }
        }

        let old_name = old.and_then(|o| o.name.as_deref());
        if old_name != new.name.as_deref() {
            if let Some(name) = old_name {
                self.names.remove(name)?;
            }
            if let Some(name) = new.name.as_deref() {
                self.names.insert(name, id)?;
            }
        }

        if old.is_none_or(|o| o.owner != new.owner) {
            if let Some(old) = old {
                self.owners.remove((old.owner, id))?;
            }
            self.owners.insert((new.owner, id), ())?;
        }
        Ok(())
    }

    /// Stores a run record (new or updated).
    pub fn put_run(&mut self, run: &Run) -> Result<(), StoreError> {
        self.runs
            .insert((run.job.0, run.id.0), encode(run).as_slice())?;
        Ok(())
    }

    /// Up to `limit` jobs due at or before `now`, earliest first.
    pub fn due_jobs(&self, now: i64, limit: usize) -> Result<Vec<JobId>, StoreError> {
        let mut out = Vec::new();
        for entry in self.due.range(..=(now, u64::MAX))?.take(limit) {
            let (key, _) = entry?;
            out.push(JobId(key.value().1));
        }
        Ok(out)
    }

    /// The earliest due time in the timer index.
    pub fn first_due(&self) -> Result<Option<i64>, StoreError> {
        Ok(self.due.first()?.map(|(k, _)| k.value().0))
    }

    /// Every running job and its open run.
    pub fn active_runs(&self) -> Result<Vec<(JobId, RunId)>, StoreError> {
        let mut out = Vec::new();
        for entry in self.active.iter()? {
            let (job, run) = entry?;
            out.push((JobId(job.value()), RunId(run.value())));
        }
        Ok(out)
    }
}
