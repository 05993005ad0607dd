//! One write transaction, seen through chime's tables.

use super::*;
use crate::job::PauseInfo;
use chime_proto::{JobId, RunId};
use redb::{ReadableTable, Table, WriteTransaction};
use std::collections::HashMap;

/// The tables of one write transaction. Built by [`Store::write`]; reads see this transaction's
/// own writes.
pub struct Writer<'t> {
    meta: Table<'t, &'static str, u64>,
    jobs: Table<'t, u64, &'static [u8]>,
    names: Table<'t, (&'static str, u32), u64>,
    due: Table<'t, (i64, u64), ()>,
    waiting: Table<'t, (&'static str, u32, i64, u64), ()>,
    runs: Table<'t, (u64, u64), &'static [u8]>,
    owners: Table<'t, (u32, u64), ()>,
    states: Table<'t, (u8, u64), ()>,
    queue_jobs: Table<'t, (&'static str, u64), ()>,
    queues: Table<'t, &'static str, &'static [u8]>,
    settings: Table<'t, &'static str, &'static [u8]>,
    pause_timers: Table<'t, (i64, &'static str), ()>,
    expiry: Table<'t, (i64, u64), ()>,
    sources: Table<'t, (&'static str, u64), ()>,
    events: Table<'t, u64, &'static [u8]>,
    event_owners: Table<'t, (u32, u64), ()>,
    next_job: u64,
    next_event: u64,
    next_run: u64,
    count_delta: [i64; JobState::ALL.len()],
    waiting_delta: HashMap<String, i64>,
    owned_delta: HashMap<u32, i64>,
    /// Events indexed per user in this transaction, per user.
    owner_events_delta: HashMap<u32, i64>,
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
        let next_event = meta.get(KEY_NEXT_EVENT)?.map_or(1, |v| v.value());
        Ok(Self {
            meta,
            jobs: txn.open_table(JOBS)?,
            names: txn.open_table(NAMES)?,
            due: txn.open_table(DUE)?,
            waiting: txn.open_table(WAITING)?,
            runs: txn.open_table(RUNS)?,
            owners: txn.open_table(OWNERS)?,
            states: txn.open_table(STATES)?,
            queue_jobs: txn.open_table(QUEUE_JOBS)?,
            queues: txn.open_table(QUEUES)?,
            settings: txn.open_table(SETTINGS)?,
            pause_timers: txn.open_table(PAUSE_TIMERS)?,
            expiry: txn.open_table(EXPIRY)?,
            sources: txn.open_table(SOURCES)?,
            events: txn.open_table(EVENTS)?,
            event_owners: txn.open_table(EVENT_OWNERS)?,
            next_job,
            next_event,
            next_run,
            count_delta: [0; JobState::ALL.len()],
            waiting_delta: HashMap::new(),
            owned_delta: HashMap::new(),
            owner_events_delta: HashMap::new(),
        })
    }

    /// Writes the counters kept in memory during the transaction.
    pub(super) fn finish(mut self) -> Result<(), StoreError> {
        self.meta.insert(KEY_NEXT_JOB, self.next_job)?;
        self.meta.insert(KEY_NEXT_RUN, self.next_run)?;
        self.meta.insert(KEY_NEXT_EVENT, self.next_event)?;
        for state in JobState::ALL {
            let delta = self.count_delta[usize::from(state_code(state))];
            if delta != 0 {
                let key = count_key(state);
                let old = self.meta.get(key)?.map_or(0, |v| v.value());
                self.meta.insert(key, old.saturating_add_signed(delta))?;
            }
        }
        for (uid, delta) in std::mem::take(&mut self.owner_events_delta) {
            if delta != 0 {
                let key = events_key(uid);
                let old = self.meta.get(key.as_str())?.map_or(0, |v| v.value());
                let new = old.saturating_add_signed(delta);
                if new == 0 {
                    self.meta.remove(key.as_str())?;
                } else {
                    self.meta.insert(key.as_str(), new)?;
                }
            }
        }
        for (uid, delta) in std::mem::take(&mut self.owned_delta) {
            if delta != 0 {
                let key = owned_key(uid);
                let old = self.meta.get(key.as_str())?.map_or(0, |v| v.value());
                let new = old.saturating_add_signed(delta);
                if new == 0 {
                    self.meta.remove(key.as_str())?;
                } else {
                    self.meta.insert(key.as_str(), new)?;
                }
            }
        }
        for (queue, delta) in std::mem::take(&mut self.waiting_delta) {
            if delta != 0 {
                let key = waiting_key(&queue);
                let old = self.meta.get(key.as_str())?.map_or(0, |v| v.value());
                let new = old.saturating_add_signed(delta);
                if new == 0 {
                    self.meta.remove(key.as_str())?;
                } else {
                    self.meta.insert(key.as_str(), new)?;
                }
            }
        }
        Ok(())
    }

    /// Allocates a job id. Ids increase and are never reused: the counter is written on commit,
    /// so only an id that no one saw can be handed out again.
    pub fn allocate_job_id(&mut self) -> JobId {
        let id = JobId(self.next_job);
        self.next_job += 1;
        id
    }

    /// The next run id to allocate. The state machine allocates run ids from it; give back the
    /// advanced value with [`Writer::set_next_run_id`].
    pub fn next_run_id(&self) -> u64 {
        self.next_run
    }

    pub fn set_next_run_id(&mut self, next: u64) {
        debug_assert!(next >= self.next_run, "run ids never go back");
        self.next_run = self.next_run.max(next);
    }

    pub fn job(&self, id: JobId) -> Result<Option<Job>, StoreError> {
        match self.jobs.get(id.0)? {
            Some(bytes) => decode_job(id.0, bytes.value()).map(Some),
            None => Ok(None),
        }
    }

    /// Appends an event to the log under the next sequence number, which it returns with the
    /// event. `actor`: who made the change (`None`: chimed itself). `shared`: the job's owner is
    /// held to a share of the log (see [`Writer::prune_owner_events`]).
    pub fn append_event(
        &mut self,
        at_ms: i64,
        actor: Option<u32>,
        job: Option<&Job>,
        kind: chime_proto::EventKind,
        shared: bool,
    ) -> Result<EventRecord, StoreError> {
        let record = EventRecord {
            seq: self.next_event,
            at_ms,
            job: job.map(|j| j.id),
            name: job.and_then(|j| j.name.clone()),
            owner: job.map(|j| j.owner),
            kind,
            actor,
        };
        self.events.insert(record.seq, seal(&record).as_slice())?;
        if shared && let Some(owner) = record.owner {
            self.event_owners.insert((owner, record.seq), ())?;
            *self.owner_events_delta.entry(owner).or_default() += 1;
        }
        self.next_event += 1;
        Ok(record)
    }

    /// Holds each user who got events in this transaction to `share` of the log: removes their
    /// own oldest events beyond it (at most `limit` now; the rest in later transactions).
    /// Entries of events the log already pruned by age are dropped on the way, so the per-user
    /// index never outgrows the shares.
    pub fn prune_owner_events(&mut self, share: u64, limit: usize) -> Result<usize, StoreError> {
        let touched: Vec<u32> = self
            .owner_events_delta
            .iter()
            .filter(|(_, d)| **d > 0)
            .map(|(o, _)| *o)
            .collect();
        let mut removed = 0;
        for owner in touched {
            let stored = self
                .meta
                .get(events_key(owner).as_str())?
                .map_or(0, |v| v.value());
            let delta = self.owner_events_delta.get(&owner).copied().unwrap_or(0);
            let count = stored.saturating_add_signed(delta);
            let excess = usize::try_from(count.saturating_sub(share))
                .unwrap_or(usize::MAX)
                .min(limit.saturating_sub(removed));
            if excess == 0 {
                continue;
            }
            let oldest: Vec<u64> = self
                .event_owners
                .range((owner, 0)..=(owner, u64::MAX))?
                .take(excess)
                .map(|e| e.map(|(k, _)| k.value().1))
                .collect::<Result<_, _>>()?;
            for seq in &oldest {
                self.event_owners.remove((owner, *seq))?;
                self.events.remove(*seq)?;
            }
            *self.owner_events_delta.entry(owner).or_default() -= oldest.len() as i64;
            removed += oldest.len();
        }
        Ok(removed)
    }

    /// Removes the oldest events so that at most `keep` remain, removing at most `limit` now (the
    /// rest go in later transactions). Returns how many were removed.
    pub fn prune_events(&mut self, keep: u64, limit: usize) -> Result<usize, StoreError> {
        let Some(first) = self.events.first()?.map(|(k, _)| k.value()) else {
            return Ok(0);
        };
        let retained = self.next_event.saturating_sub(first);
        let excess = usize::try_from(retained.saturating_sub(keep)).unwrap_or(usize::MAX);
        let n = excess.min(limit);
        if n == 0 {
            return Ok(0);
        }
        let end = first + n as u64;
        self.events.retain_in(first..end, |_, _| false)?;
        Ok(n)
    }

    /// Jobs declared by job files: (file, job id), by file.
    pub fn declared_jobs(&self) -> Result<Vec<(String, JobId)>, StoreError> {
        let mut out = Vec::new();
        for entry in self.sources.iter()? {
            let (key, _) = entry?;
            let (source, id) = key.value();
            out.push((source.to_owned(), JobId(id)));
        }
        Ok(out)
    }

    /// The job of `owner` named `name`.
    pub fn job_id_by_name(&self, name: &str, owner: u32) -> Result<Option<JobId>, StoreError> {
        Ok(self.names.get((name, owner))?.map(|v| JobId(v.value())))
    }

    /// How `caller` names a job (see [`resolve_name`]).
    pub fn resolve_name(&self, caller: u32, name: &str) -> Result<Named, StoreError> {
        resolve_name(&self.names, caller, name)
    }

    /// Jobs stored for `uid`, finished ones included.
    pub fn owned_count(&self, uid: u32) -> Result<u64, StoreError> {
        let stored = self
            .meta
            .get(owned_key(uid).as_str())?
            .map_or(0, |v| v.value());
        let pending = self.owned_delta.get(&uid).copied().unwrap_or(0);
        Ok(stored.saturating_add_signed(pending))
    }

    /// Stores `new`, which replaces `old` (`None` for a new job), and brings every index and
    /// counter in line with it. This is the only function that writes the `jobs` table.
    pub fn put_job(&mut self, old: Option<&Job>, new: &Job) -> Result<(), StoreError> {
        let id = new.id.0;
        debug_assert!(old.is_none_or(|old| old.id == new.id));
        self.jobs.insert(id, seal(new).as_slice())?;

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

        if old.is_none_or(|o| o.owner != new.owner) {
            if let Some(old) = old {
                self.owners.remove((old.owner, id))?;
                *self.owned_delta.entry(old.owner).or_default() -= 1;
            }
            self.owners.insert((new.owner, id), ())?;
            *self.owned_delta.entry(new.owner).or_default() += 1;
        }

        if old.is_none_or(|o| o.queue != new.queue) {
            if let Some(old) = old {
                self.queue_jobs.remove((old.queue.as_str(), id))?;
            }
            self.queue_jobs.insert((new.queue.as_str(), id), ())?;
        }

        let old_source = old.and_then(Job::source_path);
        if old_source != new.source_path() {
            if let Some(source) = old_source {
                self.sources.remove((source, id))?;
            }
            if let Some(source) = new.source_path() {
                self.sources.insert((source, id), ())?;
            }
        }

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

    /// Whether the `owners` index holds job `id` for `uid` (root owns everything).
    pub fn owns(&self, uid: u32, id: JobId) -> Result<bool, StoreError> {
        Ok(uid == 0 || self.owners.get((uid, id.0))?.is_some())
    }

    /// The job `caller` means by `job`, or why there is none (see [`Found::of`]).
    pub fn find(&self, caller: u32, job: &chime_proto::JobRef) -> Result<Found, StoreError> {
        let (id, name) = match job {
            chime_proto::JobRef::Id(id) => (*id, None),
            chime_proto::JobRef::Name(name) => match resolve_name(&self.names, caller, name)? {
                Named::Job(id) => (id, Some(name.as_str())),
                Named::Missing => return Ok(Found::Missing),
                Named::Ambiguous(all) => return Ok(Found::Ambiguous(all)),
            },
        };
        Found::of(self.job(id), id, name, || self.owns(caller, id))
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
            if self.states.remove((state_code(state), id.0))?.is_some() {
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

    /// A job's run ids, oldest first.
    pub fn run_ids(&self, job: JobId) -> Result<Vec<RunId>, StoreError> {
        let mut out = Vec::new();
        for entry in self.runs.range((job.0, 0)..=(job.0, u64::MAX))? {
            let (key, _) = entry?;
            out.push(RunId(key.value().1));
        }
        Ok(out)
    }

    /// A job's latest run.
    pub fn last_run(&self, job: JobId) -> Result<Option<Run>, StoreError> {
        match self.runs.range((job.0, 0)..=(job.0, u64::MAX))?.next_back() {
            Some(entry) => {
                let (key, value) = entry?;
                decode_run(key.value(), value.value()).map(Some)
            }
            None => Ok(None),
        }
    }

    /// Removes a job's oldest finished runs beyond `keep`. Returns the ids removed.
    pub fn prune_runs(&mut self, job: &Job, keep: usize) -> Result<Vec<RunId>, StoreError> {
        let open: Vec<RunId> = job.state.runs().iter().map(|r| r.run).collect();
        let finished: Vec<RunId> = self
            .run_ids(job.id)?
            .into_iter()
            .filter(|r| !open.contains(r))
            .collect();
        let excess = finished.len().saturating_sub(keep);
        let doomed: Vec<RunId> = finished.into_iter().take(excess).collect();
        for run in &doomed {
            self.runs.remove((job.id.0, run.0))?;
        }
        Ok(doomed)
    }

    /// Up to `limit` finished jobs whose retention ended at or before `now`.
    pub fn expired_jobs(&self, now: i64, limit: usize) -> Result<Vec<JobId>, StoreError> {
        let mut out = Vec::new();
        for entry in self.expiry.range(..=(now, u64::MAX))?.take(limit) {
            let (key, _) = entry?;
            out.push(JobId(key.value().1));
        }
        Ok(out)
    }

    /// When the earliest retention ends.
    pub fn first_expiry(&self) -> Result<Option<i64>, StoreError> {
        Ok(self.expiry.first()?.map(|(k, _)| k.value().0))
    }

    /// Deletes a run record (a run whose process never started).
    pub fn delete_run(&mut self, job: JobId, run: RunId) -> Result<(), StoreError> {
        self.runs.remove((job.0, run.0))?;
        Ok(())
    }

    /// Stores a run record (new or updated).
    pub fn put_run(&mut self, run: &Run) -> Result<(), StoreError> {
        self.runs
            .insert((run.job.0, run.id.0), seal(run).as_slice())?;
        Ok(())
    }

    /// Up to `limit` jobs whose next occurrence is due at or before `now`, earliest first.
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
            let (_, next_owner, _, _) = first?.0.value();
            if !skip(next_owner) {
                let own =
                    (queue, next_owner, i64::MIN, 0)..=(queue, next_owner, i64::MAX, u64::MAX);
                for entry in self.waiting.range(own)?.take(limit) {
                    let (_, _, since, id) = entry?.0.value();
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
            let queue = key.value().trim_start_matches("waiting.").to_owned();
            let pending = self.waiting_delta.get(&queue).copied().unwrap_or(0);
            let n = value.value().saturating_add_signed(pending);
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
            let (key, _) = entry?;
            out.push(JobId(key.value().1));
        }
        Ok(out)
    }

    /// Every stored queue record.
    pub fn queues(&self) -> Result<Vec<(String, QueueRecord)>, StoreError> {
        let mut out = Vec::new();
        for entry in self.queues.iter()? {
            let (name, value) = entry?;
            out.push((
                name.value().to_owned(),
                decode_record("queues", name.value(), value.value())?,
            ));
        }
        Ok(out)
    }

    /// Stores a queue's record; the default record (no limit, no pause) is not kept.
    pub fn put_queue(&mut self, name: &str, record: &QueueRecord) -> Result<(), StoreError> {
        if *record == QueueRecord::default() {
            self.queues.remove(name)?;
        } else {
            self.queues.insert(name, encode(record).as_slice())?;
        }
        Ok(())
    }

    /// The pause of everything.
    /// A setting stored by key (postcard bytes), such as the queues chimed.toml manages.
    pub fn setting(&self, key: &str) -> Result<Option<Vec<u8>>, StoreError> {
        Ok(self.settings.get(key)?.map(|v| v.value().to_vec()))
    }

    pub fn set_setting(&mut self, key: &str, value: Option<&[u8]>) -> Result<(), StoreError> {
        match value {
            Some(bytes) => {
                self.settings.insert(key, bytes)?;
            }
            None => {
                self.settings.remove(key)?;
            }
        }
        Ok(())
    }

    pub fn pause_all(&self) -> Result<Option<PauseInfo>, StoreError> {
        match self.settings.get(KEY_PAUSE_ALL)? {
            Some(value) => decode_record("settings", KEY_PAUSE_ALL, value.value()).map(Some),
            None => Ok(None),
        }
    }

    pub fn set_pause_all(&mut self, pause: Option<&PauseInfo>) -> Result<(), StoreError> {
        match pause {
            Some(pause) => {
                self.settings
                    .insert(KEY_PAUSE_ALL, encode(pause).as_slice())?;
            }
            None => {
                self.settings.remove(KEY_PAUSE_ALL)?;
            }
        }
        Ok(())
    }

    /// Records when a timed pause ends.
    pub fn add_pause_timer(&mut self, until: i64, key: &PauseKey) -> Result<(), StoreError> {
        self.pause_timers
            .insert((until, key.encode().as_str()), ())?;
        Ok(())
    }

    pub fn remove_pause_timer(&mut self, until: i64, key: &PauseKey) -> Result<(), StoreError> {
        self.pause_timers.remove((until, key.encode().as_str()))?;
        Ok(())
    }

    /// Timed pauses that end at or before `now`.
    pub fn ended_pauses(&self, now: i64) -> Result<Vec<(i64, PauseKey)>, StoreError> {
        let mut out = Vec::new();
        for entry in self.pause_timers.range(..=(now, "\u{10ffff}"))? {
            let (key, _) = entry?;
            let (until, target) = key.value();
            match PauseKey::decode(target) {
                Some(k) => out.push((until, k)),
                None => tracing::error!(target, "pause timer with an unknown target"),
            }
        }
        Ok(out)
    }

    /// When the earliest timed pause ends.
    pub fn first_pause_end(&self) -> Result<Option<i64>, StoreError> {
        Ok(self.pause_timers.first()?.map(|(k, _)| k.value().0))
    }
}

fn decode_record<T: serde::de::DeserializeOwned>(
    table: &'static str,
    key: &str,
    bytes: &[u8],
) -> Result<T, StoreError> {
    postcard::from_bytes(bytes).map_err(|err| {
        StoreError::Corrupt(Damage::new(
            table,
            key,
            format!("it does not decode: {err}"),
        ))
    })
}
