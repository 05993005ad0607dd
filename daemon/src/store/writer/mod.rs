//! One write transaction, seen through chime's tables: [`Writer`] holds the tables and the
//! counters kept in memory until the commit. Its methods are grouped by family:
//!
//! - [`jobs`]: job ids and lookups;
//! - [`runs`]: run ids and records;
//! - [`events`]: the event log;
//! - [`due`]: the indexes the engine scans for work (due, expiry, waiting, running);
//! - [`queues`]: queue records, settings and pauses;
//! - writing a job and every index derived from it is `store/index.rs`'s.

mod due;
mod events;
mod jobs;
mod queues;
mod runs;

pub use due::WAITING_SCAN;

use super::StoreError;
use super::schema::{
    DUE, EVENT_OWNERS, EVENTS, EXPIRY, JOBS, KEY_NEXT_EVENT, KEY_NEXT_JOB, KEY_NEXT_RUN, META,
    NAMES, OWNERS, PAUSE_TIMERS, QUEUE_JOBS, QUEUES, RUNS, SETTINGS, SOURCES, STATES, WAITING,
    count_key, events_key, owned_key, state_code, waiting_key,
};
use crate::store::table::{Source, Tbl};
use chime_proto::JobState;
use std::collections::HashMap;

/// The tables of one write transaction. Built by [`super::Store::write`]; reads see this transaction's
/// own writes.
pub struct Writer<'t> {
    pub(super) meta: Tbl<'t, &'static str, u64>,
    pub(super) jobs: Tbl<'t, u64, &'static [u8]>,
    pub(super) names: Tbl<'t, (&'static str, u32), u64>,
    pub(super) due: Tbl<'t, (i64, u64), ()>,
    pub(super) waiting: Tbl<'t, (&'static str, u32, i64, u64), ()>,
    pub(super) runs: Tbl<'t, (u64, u64), &'static [u8]>,
    pub(super) owners: Tbl<'t, (u32, u64), ()>,
    pub(super) states: Tbl<'t, (u8, u64), ()>,
    pub(super) queue_jobs: Tbl<'t, (&'static str, u64), ()>,
    pub(super) queues: Tbl<'t, &'static str, &'static [u8]>,
    pub(super) settings: Tbl<'t, &'static str, &'static [u8]>,
    pub(super) pause_timers: Tbl<'t, (i64, &'static str), ()>,
    pub(super) expiry: Tbl<'t, (i64, u64), ()>,
    pub(super) sources: Tbl<'t, (&'static str, u64), ()>,
    pub(super) events: Tbl<'t, u64, &'static [u8]>,
    pub(super) event_owners: Tbl<'t, (u32, u64), ()>,
    pub(super) next_job: u64,
    pub(super) next_event: u64,
    pub(super) next_run: u64,
    /// The three as the transaction found them: only those that moved are written back.
    pub(super) next_found: (u64, u64, u64),
    pub(super) count_delta: [i64; JobState::ALL.len()],
    pub(super) waiting_delta: HashMap<String, i64>,
    pub(super) owned_delta: HashMap<u32, i64>,
    /// `owned.<uid>` as stored when this transaction began, for the users asked about.
    pub(super) owned_stored: std::cell::RefCell<HashMap<u32, u64>>,
    /// Events indexed per user in this transaction, per user.
    pub(super) owner_events_delta: HashMap<u32, i64>,
    /// Where rows are sealed before they are written ([`super::record::seal_into`]).
    pub(super) scratch: Vec<u8>,
}

impl std::fmt::Debug for Writer<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Writer").finish_non_exhaustive()
    }
}

impl<'t> Writer<'t> {
    pub(super) fn new(txn: Source<'t>) -> Result<Self, StoreError> {
        let meta = txn.open(META)?;
        // The three `next_*` keys sort together: one read for them.
        let (mut next_job, mut next_run, mut next_event) = (1, 1, 1);
        for entry in meta.range("next_".."next`")? {
            let (key, value) = entry?;
            match key.as_str() {
                KEY_NEXT_JOB => next_job = value,
                KEY_NEXT_RUN => next_run = value,
                KEY_NEXT_EVENT => next_event = value,
                _ => {}
            }
        }
        Ok(Self {
            meta,
            jobs: txn.open(JOBS)?,
            names: txn.open(NAMES)?,
            due: txn.open(DUE)?,
            waiting: txn.open(WAITING)?,
            runs: txn.open(RUNS)?,
            owners: txn.open(OWNERS)?,
            states: txn.open(STATES)?,
            queue_jobs: txn.open(QUEUE_JOBS)?,
            queues: txn.open(QUEUES)?,
            settings: txn.open(SETTINGS)?,
            pause_timers: txn.open(PAUSE_TIMERS)?,
            expiry: txn.open(EXPIRY)?,
            sources: txn.open(SOURCES)?,
            events: txn.open(EVENTS)?,
            event_owners: txn.open(EVENT_OWNERS)?,
            next_job,
            next_event,
            next_run,
            next_found: (next_job, next_run, next_event),
            count_delta: [0; JobState::ALL.len()],
            waiting_delta: HashMap::new(),
            owned_delta: HashMap::new(),
            owned_stored: Default::default(),
            owner_events_delta: HashMap::new(),
            scratch: Vec::with_capacity(1024),
        })
    }

    /// Writes the counters kept in memory during the transaction.
    pub(super) fn finish(mut self) -> Result<(), StoreError> {
        // A transaction that changed nothing writes nothing (an idle fleet host's poll, say).
        let (job, run, event) = self.next_found;
        if self.next_job != job {
            self.meta.insert(KEY_NEXT_JOB, self.next_job)?;
        }
        if self.next_run != run {
            self.meta.insert(KEY_NEXT_RUN, self.next_run)?;
        }
        if self.next_event != event {
            self.meta.insert(KEY_NEXT_EVENT, self.next_event)?;
        }
        for state in JobState::ALL {
            let delta = self.count_delta[usize::from(state_code(state))];
            if delta != 0 {
                let key = count_key(state);
                let old = self.meta.get(key)?.unwrap_or(0);
                self.meta.insert(key, old.saturating_add_signed(delta))?;
            }
        }
        for (uid, delta) in std::mem::take(&mut self.owner_events_delta) {
            add_to_counter(&mut self.meta, &events_key(uid), delta)?;
        }
        for (uid, delta) in std::mem::take(&mut self.owned_delta) {
            add_to_counter(&mut self.meta, &owned_key(uid), delta)?;
        }
        for (queue, delta) in std::mem::take(&mut self.waiting_delta) {
            add_to_counter(&mut self.meta, &waiting_key(&queue), delta)?;
        }
        Ok(())
    }
}

/// Adds `delta` to the counter at `key` in `meta`; a counter that reaches zero is removed, so
/// that users and queues with nothing left leave no key behind.
fn add_to_counter(
    meta: &mut Tbl<'_, &'static str, u64>,
    key: &str,
    delta: i64,
) -> Result<(), StoreError> {
    if delta == 0 {
        return Ok(());
    }
    let old = meta.get(key)?.unwrap_or(0);
    match old.saturating_add_signed(delta) {
        0 => meta.remove(key).map(drop),
        new => meta.insert(key, new),
    }
}
