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
use chime_proto::JobState;
use redb::{ReadableTable, Table, WriteTransaction};
use std::collections::HashMap;

/// The tables of one write transaction. Built by [`super::Store::write`]; reads see this transaction's
/// own writes.
pub struct Writer<'t> {
    pub(super) meta: Table<'t, &'static str, u64>,
    pub(super) jobs: Table<'t, u64, &'static [u8]>,
    pub(super) names: Table<'t, (&'static str, u32), u64>,
    pub(super) due: Table<'t, (i64, u64), ()>,
    pub(super) waiting: Table<'t, (&'static str, u32, i64, u64), ()>,
    pub(super) runs: Table<'t, (u64, u64), &'static [u8]>,
    pub(super) owners: Table<'t, (u32, u64), ()>,
    pub(super) states: Table<'t, (u8, u64), ()>,
    pub(super) queue_jobs: Table<'t, (&'static str, u64), ()>,
    pub(super) queues: Table<'t, &'static str, &'static [u8]>,
    pub(super) settings: Table<'t, &'static str, &'static [u8]>,
    pub(super) pause_timers: Table<'t, (i64, &'static str), ()>,
    pub(super) expiry: Table<'t, (i64, u64), ()>,
    pub(super) sources: Table<'t, (&'static str, u64), ()>,
    pub(super) events: Table<'t, u64, &'static [u8]>,
    pub(super) event_owners: Table<'t, (u32, u64), ()>,
    pub(super) next_job: u64,
    pub(super) next_event: u64,
    pub(super) next_run: u64,
    pub(super) count_delta: [i64; JobState::ALL.len()],
    pub(super) waiting_delta: HashMap<String, i64>,
    pub(super) owned_delta: HashMap<u32, i64>,
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
            scratch: Vec::with_capacity(1024),
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
    meta: &mut Table<'_, &'static str, u64>,
    key: &str,
    delta: i64,
) -> Result<(), redb::StorageError> {
    if delta == 0 {
        return Ok(());
    }
    let old = meta.get(key)?.map_or(0, |v| v.value());
    match old.saturating_add_signed(delta) {
        0 => meta.remove(key).map(drop),
        new => meta.insert(key, new).map(drop),
    }
}
