//! The scrub: every sealed record read once after the start, so that damage anywhere is reported
//! at once, and [`DamageSeen`], what it found (shared with `status`).

use super::record::{Damage, decode_event, decode_job, decode_run};
use super::schema::{EVENTS, JOBS, RUNS};
use super::table::Column;
use super::{Store, StoreError};
use redb::TableDefinition;

/// Most records one read transaction of [`Store::scrub`] covers.
pub const SCRUB_CHUNK: usize = 10_000;

impl Store {
    /// Reads every sealed record (jobs, runs, events) and checks that it is whole and decodes,
    /// calling `damaged` for each that is not. Each read transaction covers at most
    /// [`SCRUB_CHUNK`] records, so that the scrub never holds old pages from being reused for
    /// long, and before each one `go_on` says whether to go on: chimed stops its scrub when it
    /// stops (ten million records take seconds to scrub, and a stop must not wait for them).
    /// chimed runs it once after it starts, on a thread of its own: damage anywhere is reported
    /// at once, not when the record is next needed.
    pub fn scrub(
        &self,
        mut go_on: impl FnMut() -> bool,
        mut damaged: impl FnMut(Damage),
    ) -> Result<Scrubbed, StoreError> {
        let mut done = Scrubbed {
            records: 0,
            whole: true,
        };
        // Each table's count is added; the next table is scrubbed only if this one was whole.
        let mut add = |(records, whole): (u64, bool)| {
            done.records += records;
            done.whole = whole;
            whole
        };
        let _ = add(self.scrub_table(
            JOBS,
            |k, v| decode_job(k, v).map(drop),
            &mut damaged,
            &mut go_on,
        )?) && add(self.scrub_table(
            RUNS,
            |k, v| decode_run(k, v).map(drop),
            &mut damaged,
            &mut go_on,
        )?) && add(self.scrub_table(
            EVENTS,
            |k, v| decode_event(k, v).map(drop),
            &mut damaged,
            &mut go_on,
        )?);
        Ok(done)
    }

    /// Scrubs one table: the records read, and whether all were (not stopped by `go_on`).
    fn scrub_table<K>(
        &self,
        table: TableDefinition<'static, K, &'static [u8]>,
        check: impl Fn(K, &[u8]) -> Result<(), StoreError>,
        damaged: &mut impl FnMut(Damage),
        go_on: &mut impl FnMut() -> bool,
    ) -> Result<(u64, bool), StoreError>
    where
        K: redb::Key + Column<Owned = K> + Copy + 'static,
        for<'a> K: std::borrow::Borrow<K::SelfType<'a>>,
    {
        let mut after: Option<K> = None;
        let mut read = 0;
        loop {
            if !go_on() {
                return Ok((read, false));
            }
            let reader = self.read()?;
            let table = reader.table(table)?;
            let mut last = None;
            let range = match &after {
                Some(key) => table.range((
                    std::ops::Bound::Excluded(K::view(key)),
                    std::ops::Bound::Unbounded,
                ))?,
                None => table.range(..)?,
            };
            for entry in range.take(SCRUB_CHUNK) {
                let (key, value) = entry?;
                read += 1;
                match check(key, &value) {
                    Ok(()) => {}
                    Err(StoreError::Corrupt(damage)) => damaged(damage),
                    Err(err) => return Err(err),
                }
                last = Some(key);
            }
            match last {
                Some(key) => after = Some(key),
                None => return Ok((read, true)),
            }
        }
    }
}

/// What a scrub did: the records it read, and whether it read them all (it was not stopped).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Scrubbed {
    pub records: u64,
    pub whole: bool,
}

/// Damaged records found by the scrub after the start (shared with `status`).
#[derive(Debug, Default)]
pub struct DamageSeen {
    /// (table, key), each once; at most [`DamageSeen::MAX`].
    seen: std::sync::Mutex<std::collections::BTreeSet<(&'static str, String)>>,
    scrubbed: std::sync::atomic::AtomicBool,
}

impl DamageSeen {
    /// Most damaged records remembered (each is logged anyway).
    pub const MAX: usize = 100_000;

    /// Notes a damaged record.
    pub fn note(&self, damage: &Damage) {
        if let Ok(mut seen) = self.seen.lock()
            && seen.len() < Self::MAX
        {
            seen.insert((damage.table, damage.key.clone()));
        }
    }

    /// Forgets a removed job's damaged records (its own and its runs').
    pub fn forget_job(&self, id: chime_proto::JobId) {
        if let Ok(mut seen) = self.seen.lock() {
            let runs = format!("{id}/");
            seen.retain(|(table, key)| match *table {
                "jobs" => *key != id.to_string(),
                "runs" => !key.starts_with(&runs),
                _ => true,
            });
        }
    }

    pub fn records(&self) -> u64 {
        self.seen.lock().map_or(0, |seen| seen.len() as u64)
    }

    /// Damaged jobs (records of the `jobs` table).
    pub fn jobs(&self) -> u64 {
        self.seen.lock().map_or(0, |seen| {
            seen.iter().filter(|(table, _)| *table == "jobs").count() as u64
        })
    }

    pub fn scrubbed(&self) -> bool {
        self.scrubbed.load(std::sync::atomic::Ordering::Relaxed)
    }

    pub fn set_scrubbed(&self) {
        self.scrubbed
            .store(true, std::sync::atomic::Ordering::Relaxed);
    }
}
