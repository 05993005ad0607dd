//! The indexes of a job, derived from its row in one place: [`Writer::put_job`] (with one step
//! per index), [`Writer::delete_job`], the quarantine and removal of a job whose row is damaged,
//! and [`Store::verify`], which checks every index and counter against the rows.

use super::record::{decode_job, seal_into};
use super::schema::{
    DUE, EXPIRY, JOBS, NAMES, OWNERS, QUEUE_JOBS, SOURCES, STATES, WAITING, state_code,
};
use super::{PauseKey, Reader, Store, StoreError, Writer};
use crate::job::Job;
use chime_proto::{JobId, JobState, RunId};
use std::collections::{BTreeMap, BTreeSet};

/// When a finished job's retention ends (the `expiry` index key).
///
/// A declared job never expires: it is kept as long as its job file declares it (were it removed,
/// the next reload would create it again and run it again).
pub(super) fn expire_ms(job: &Job) -> Option<i64> {
    if job.source.is_some() {
        return None;
    }
    let retention = i64::try_from(job.exec.retention_ms).unwrap_or(i64::MAX);
    job.state
        .finished_ms()
        .map(|at| at.saturating_add(retention))
}

impl Writer<'_> {
    /// Stores `new`, which replaces `old` (`None` for a new job), and brings every index and
    /// counter in line with it. This is the only function that writes the `jobs` table.
    pub fn put_job(&mut self, old: Option<&Job>, new: &Job) -> Result<(), StoreError> {
        debug_assert!(old.is_none_or(|old| old.id == new.id));
        self.jobs
            .insert(new.id.0, seal_into(&mut self.scratch, new))?;
        self.index_due(old, new)?;
        self.index_waiting(old, new)?;
        self.index_state(old, new)?;
        self.index_name(old, new)?;
        self.index_owner(old, new)?;
        self.index_queue(old, new)?;
        self.index_source(old, new)?;
        self.index_expiry(old, new)
    }

    /// `due`, the timer index: the job's next occurrence, when it is scheduled.
    fn index_due(&mut self, old: Option<&Job>, new: &Job) -> Result<(), StoreError> {
        let id = new.id.0;
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
        Ok(())
    }

    /// `waiting` and the `waiting.<queue>` counters: the job waits in its queue, per owner.
    fn index_waiting(&mut self, old: Option<&Job>, new: &Job) -> Result<(), StoreError> {
        let id = new.id.0;
        let old_wait =
            old.and_then(|o| o.state.waiting_ms().map(|w| (o.queue.as_str(), w, o.owner)));
        let new_wait = new
            .state
            .waiting_ms()
            .map(|w| (new.queue.as_str(), w, new.owner));
        if old_wait != new_wait {
            if let Some((queue, since, owner)) = old_wait {
                self.waiting.remove((queue, owner, since, id))?;
                if new_wait.is_none_or(|(q, _, _)| q != queue) {
                    *self.waiting_delta.entry(queue.to_owned()).or_default() -= 1;
                }
            }
            if let Some((queue, since, owner)) = new_wait {
                self.waiting.insert((queue, owner, since, id), ())?;
                if old_wait.is_none_or(|(q, _, _)| q != queue) {
                    *self.waiting_delta.entry(queue.to_owned()).or_default() += 1;
                }
            }
        }
        Ok(())
    }

    /// `states` and the `count.<state>` counters.
    fn index_state(&mut self, old: Option<&Job>, new: &Job) -> Result<(), StoreError> {
        let id = new.id.0;
        let new_kind = new.kind();
        match old.map(Job::kind) {
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
        Ok(())
    }

    /// `names`: (name, owner) to job.
    fn index_name(&mut self, old: Option<&Job>, new: &Job) -> Result<(), StoreError> {
        let id = new.id.0;
        let old_name = old.and_then(|o| o.name.as_deref().map(|n| (n, o.owner)));
        let new_name = new.name.as_deref().map(|n| (n, new.owner));
        if old_name != new_name {
            if let Some(key) = old_name {
                self.names.remove(key)?;
            }
            if let Some(key) = new_name {
                self.names.insert(key, id)?;
            }
        }
        Ok(())
    }

    /// `owners` and the `owned.<uid>` counters.
    fn index_owner(&mut self, old: Option<&Job>, new: &Job) -> Result<(), StoreError> {
        let id = new.id.0;
        if old.is_none_or(|o| o.owner != new.owner) {
            if let Some(old) = old {
                self.owners.remove((old.owner, id))?;
                *self.owned_delta.entry(old.owner).or_default() -= 1;
            }
            self.owners.insert((new.owner, id), ())?;
            *self.owned_delta.entry(new.owner).or_default() += 1;
        }
        Ok(())
    }

    /// `queue_jobs`: jobs by queue.
    fn index_queue(&mut self, old: Option<&Job>, new: &Job) -> Result<(), StoreError> {
        let id = new.id.0;
        if old.is_none_or(|o| o.queue != new.queue) {
            if let Some(old) = old {
                self.queue_jobs.remove((old.queue.as_str(), id))?;
            }
            self.queue_jobs.insert((new.queue.as_str(), id), ())?;
        }
        Ok(())
    }

    /// `sources`: the job file that declares the job, if one does.
    fn index_source(&mut self, old: Option<&Job>, new: &Job) -> Result<(), StoreError> {
        let id = new.id.0;
        let old_source = old.and_then(Job::source_path);
        if old_source != new.source_path() {
            if let Some(source) = old_source {
                self.sources.remove((source, id))?;
            }
            if let Some(source) = new.source_path() {
                self.sources.insert((source, id), ())?;
            }
        }
        Ok(())
    }

    /// `expiry`: when a finished job's retention ends ([`expire_ms`]).
    fn index_expiry(&mut self, old: Option<&Job>, new: &Job) -> Result<(), StoreError> {
        let id = new.id.0;
        let old_expiry = old.and_then(expire_ms);
        let new_expiry = expire_ms(new);
        if old_expiry != new_expiry {
            if let Some(at) = old_expiry {
                self.expiry.remove((at, id))?;
            }
            if let Some(at) = new_expiry {
                self.expiry.insert((at, id), ())?;
            }
        }
        Ok(())
    }

    /// Removes a job, every index entry derived from it and its runs. Returns the ids of the
    /// runs removed (their output files are the caller's to delete, after the commit).
    pub fn delete_job(&mut self, job: &Job) -> Result<Vec<RunId>, StoreError> {
        let id = job.id.0;
        self.jobs.remove(id)?;
        if let Some(due) = job.state.due_ms() {
            self.due.remove((due, id))?;
        }
        if let Some(since) = job.state.waiting_ms() {
            self.waiting
                .remove((job.queue.as_str(), job.owner, since, id))?;
            *self.waiting_delta.entry(job.queue.clone()).or_default() -= 1;
        }
        let kind = job.kind();
        self.states.remove((state_code(kind), id))?;
        self.count_delta[usize::from(state_code(kind))] -= 1;
        if let Some(name) = job.name.as_deref() {
            self.names.remove((name, job.owner))?;
        }
        self.owners.remove((job.owner, id))?;
        *self.owned_delta.entry(job.owner).or_default() -= 1;
        self.queue_jobs.remove((job.queue.as_str(), id))?;
        if let Some(at) = expire_ms(job) {
            self.expiry.remove((at, id))?;
        }
        if let Some(source) = job.source_path() {
            self.sources.remove((source, id))?;
        }
        if let Some(until) = job.pause.as_ref().and_then(|p| p.until_ms) {
            self.pause_timers
                .remove((until, PauseKey::Job(job.id).encode().as_str()))?;
        }
        let runs = self.run_ids(job.id)?;
        for run in &runs {
            self.runs.remove((id, run.0))?;
        }
        Ok(runs)
    }

    /// Takes a job whose record is damaged out of what chimed does by itself: its entries in
    /// the timer, waiting and expiry indexes, which are keyed by what the record held and so are
    /// found by scanning (rare: once per damaged job). Its record, its runs and the indexes that
    /// list it stay, so that it is shown as damaged until someone removes it
    /// ([`Writer::remove_damaged`]).
    pub fn quarantine(&mut self, id: JobId) -> Result<(), StoreError> {
        self.due.retain(|(_, job), ()| job != id.0)?;
        self.expiry.retain(|(_, job), ()| job != id.0)?;
        let mut left = Vec::new();
        self.waiting.retain(|(queue, _, _, job), ()| {
            if job == id.0 {
                left.push(queue.to_owned());
            }
            job != id.0
        })?;
        for queue in left {
            *self.waiting_delta.entry(queue).or_default() -= 1;
        }
        Ok(())
    }

    /// Removes a job whose record is damaged, and every index entry and run of it. The indexes
    /// are keyed by what the record held, so each is scanned (rare: a user's repair).
    /// Returns its owner by the `owners` index, and its runs.
    pub fn remove_damaged(&mut self, id: JobId) -> Result<(Option<u32>, Vec<RunId>), StoreError> {
        self.quarantine(id)?;
        self.jobs.remove(id.0)?;
        for state in JobState::ALL {
            if self.states.remove_present((state_code(state), id.0))? {
                self.count_delta[usize::from(state_code(state))] -= 1;
            }
        }
        self.names.retain(|_, job| job != id.0)?;
        let mut owners = Vec::new();
        self.owners.retain(|(uid, job), ()| {
            if job == id.0 {
                owners.push(uid);
            }
            job != id.0
        })?;
        for uid in &owners {
            *self.owned_delta.entry(*uid).or_default() -= 1;
        }
        self.queue_jobs.retain(|(_, job), ()| job != id.0)?;
        self.sources.retain(|(_, job), ()| job != id.0)?;
        let pause = PauseKey::Job(id).encode();
        self.pause_timers
            .retain(|(_, target), ()| target != pause.as_str())?;
        let runs = self.run_ids(id)?;
        for run in &runs {
            self.runs.remove((id.0, run.0))?;
        }
        Ok((owners.first().copied(), runs))
    }
}

impl Store {
    /// Checks that every index and counter agrees with the job rows. Reads everything: for
    /// tests and diagnosis, not for the hot path. Returns the first disagreement found.
    pub fn verify(&self) -> Result<(), String> {
        let reader = self.read().map_err(|e| e.to_string())?;
        let expected = Expected::from_rows(&reader)?;
        expected.check_indexes(&reader)?;
        expected.check_counters(&reader)
    }
}

/// What every index and counter should hold, derived from the job rows by [`Store::verify`]
/// (independently of [`Writer::put_job`], which it checks).
#[derive(Default)]
struct Expected {
    due: BTreeSet<(i64, u64)>,
    waiting: BTreeSet<(String, u32, i64, u64)>,
    owners: BTreeSet<(u32, u64)>,
    states: BTreeSet<(u8, u64)>,
    names: BTreeSet<(String, u32, u64)>,
    queue_jobs: BTreeSet<(String, u64)>,
    expiry: BTreeSet<(i64, u64)>,
    sources: BTreeSet<(String, u64)>,
    counts: [u64; JobState::ALL.len()],
    waiting_counts: BTreeMap<String, u64>,
    owned_counts: BTreeMap<u32, u64>,
}

impl Expected {
    /// Reads every job row and derives the index entries and counts it implies.
    fn from_rows(reader: &Reader) -> Result<Self, String> {
        let jobs = reader.table(JOBS).map_err(|_| cannot_open("jobs"))?;
        let mut expected = Self::default();
        for entry in jobs.iter().map_err(|e| e.to_string())? {
            let (key, value) = entry.map_err(|e| e.to_string())?;
            let job = decode_job(key, &value).map_err(|e| e.to_string())?;
            if job.id.0 != key {
                return Err(format!("job row {key} holds job {}", job.id));
            }
            expected.add(&job);
        }
        Ok(expected)
    }

    fn add(&mut self, job: &Job) {
        if let Some(d) = job.state.due_ms() {
            self.due.insert((d, job.id.0));
        }
        if let Some(w) = job.state.waiting_ms() {
            self.waiting
                .insert((job.queue.clone(), job.owner, w, job.id.0));
            *self.waiting_counts.entry(job.queue.clone()).or_default() += 1;
        }
        if let Some(name) = &job.name {
            self.names.insert((name.clone(), job.owner, job.id.0));
        }
        self.owners.insert((job.owner, job.id.0));
        *self.owned_counts.entry(job.owner).or_default() += 1;
        if let Some(source) = job.source_path() {
            self.sources.insert((source.to_owned(), job.id.0));
        }
        self.queue_jobs.insert((job.queue.clone(), job.id.0));
        if let Some(at) = expire_ms(job) {
            self.expiry.insert((at, job.id.0));
        }
        let code = state_code(job.kind());
        self.states.insert((code, job.id.0));
        self.counts[usize::from(code)] += 1;
    }

    /// Compares each index table with what the rows imply.
    fn check_indexes(&self, reader: &Reader) -> Result<(), String> {
        macro_rules! compare {
            ($table:expr, $name:literal, $expected:expr, |$k:ident, $v:ident| $key:expr) => {{
                let table = reader.table($table).map_err(|_| cannot_open($name))?;
                let mut found = BTreeSet::new();
                for entry in table.iter().map_err(|e| e.to_string())? {
                    let ($k, $v) = entry.map_err(|e| e.to_string())?;
                    let _ = &$v;
                    found.insert($key);
                }
                if found != $expected {
                    return Err(format!(
                        "index {} disagrees with the jobs: has {:?}, expected {:?}",
                        $name, found, $expected
                    ));
                }
            }};
        }
        compare!(DUE, "due", self.due, |k, v| k);
        compare!(WAITING, "waiting", self.waiting, |k, v| k);
        compare!(OWNERS, "owners", self.owners, |k, v| k);
        compare!(STATES, "states", self.states, |k, v| k);
        compare!(NAMES, "names", self.names, |k, v| (k.0, k.1, v));
        compare!(EXPIRY, "expiry", self.expiry, |k, v| k);
        compare!(SOURCES, "sources", self.sources, |k, v| k);
        compare!(QUEUE_JOBS, "queue_jobs", self.queue_jobs, |k, v| k);
        Ok(())
    }

    /// Compares the `count.*`, `waiting.*` and `owned.*` counters with what the rows imply.
    fn check_counters(&self, reader: &Reader) -> Result<(), String> {
        let fail = |e: StoreError| e.to_string();
        for (state, n) in reader.counts().map_err(fail)? {
            if self.counts[usize::from(state_code(state))] != n {
                return Err(format!(
                    "count.{state} is {n}, but {} jobs are {state}",
                    self.counts[usize::from(state_code(state))]
                ));
            }
        }
        for (queue, n) in &self.waiting_counts {
            let stored = reader.waiting_count(queue).map_err(fail)?;
            if stored != *n {
                return Err(format!("waiting.{queue} is {stored}, but {n} jobs wait"));
            }
        }
        for (uid, n) in &self.owned_counts {
            let stored = reader.owned_count(*uid).map_err(fail)?;
            if stored != *n {
                return Err(format!(
                    "owned.{uid} is {stored}, but uid {uid} owns {n} jobs"
                ));
            }
        }
        Ok(())
    }
}

fn cannot_open(name: &str) -> String {
    format!("cannot open table {name}")
}
