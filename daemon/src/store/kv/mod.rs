//! The store's boundary with its backends (issue 15, fleet mode; being built): every table of
//! chime is an ordered map from bytes to bytes, read and written in transactions, and a backend
//! is anything that keeps such maps: redb for one host ([`redb`], the default), PostgreSQL for
//! a fleet of hosts sharing one job set ([`pg`]).
//!
//! # Why bytes
//!
//! The tables' keys are tuples (`(due_ms, job id)`, `(queue, owner, since, job id)`...), and
//! what the engine asks of them is order: the first due entries, a user's jobs, a queue's
//! oldest waiting job. [`key`] encodes each tuple into bytes whose order, compared byte by byte,
//! is the tuple's own (integers big-endian with the sign bit flipped, strings escaped and
//! terminated). Both backends then only need to compare bytes, which redb does for `&[u8]` keys
//! and PostgreSQL for `bytea` (memcmp, no collation), and they agree on every range and on its
//! order: what one test shows of one holds for the other (`tests/tests/postgres.rs` runs the
//! same operations on both, and on a `BTreeMap`).
//!
//! # The operations
//!
//! [`KvRead`]: a key's value, and the entries of a half-open key range, in key order or its
//! reverse, at most so many. [`KvWrite`]: insert (or replace) and remove. That is everything
//! `store/writer` and `store/reader` do to their tables; the rest of the store (deriving every
//! index from a job's row, the counters, the event log) is written once over these, so that
//! both backends keep the same rows and the same indexes.
//!
//! # What the boundary costs redb
//!
//! `bench-store --through-kv` does a firing's and a submission's B-tree work through this
//! boundary on redb, beside the same work on redb's typed tables (2026-12-01, alternating,
//! commits of 128 submissions and of 1,000 firings): a firing 5.5-5.8 us of CPU against 4.7-4.9
//! (+15-18%), a submission 6.4-6.7 against 6.0-6.1 (+7-10%). Not allocation (the same with
//! mimalloc): redb compares and lays out variable-length byte keys at more cost than its
//! fixed-width integer tuples. So the store will not put its redb tables through bytes: the
//! boundary the writer and the reader are ported onto is typed per table (each table's key
//! type, as today), redb keeps its typed tables, and encoding keys to ordered bytes is the
//! PostgreSQL backend's own business ([`key`], [`pg`]). The redb implementation here stays as
//! the second witness of the tests that hold PostgreSQL to the reference.
//!
//! # Fleet mode
//!
//! [`fleet`] holds the hosts' side, built and tested over a real cluster: every write
//! transaction of a fleet host first takes the fleet's writer lock, so the hosts' engines
//! commit one after another, as redb's single writer does for one host (ids, counters and the
//! event log's sequence stay gap-free and in commit order with no other coordination, and a due
//! occurrence is taken by whichever host commits first); in the same transaction the host's
//! lease and epoch are checked, and a host declared gone (its epoch moved on, its runs to be
//! closed as `lost`, under the same lock) can commit nothing after that; and each due
//! occurrence is claimed under a key that refuses a second claim. The store's tables reach
//! PostgreSQL through `store/table.rs` and `store/remote.rs` (`--store postgresql://...`). Not
//! built yet: several hosts' engines on one database (closing a gone host's runs, placement).

pub mod fleet;
pub mod key;
pub mod memory;
pub mod pg;
pub mod redb;

/// Every table of chime (see the store's module docs for what each holds).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Table {
    Meta,
    Jobs,
    Names,
    Due,
    Waiting,
    Runs,
    Owners,
    States,
    QueueJobs,
    Queues,
    Settings,
    PauseTimers,
    Expiry,
    Sources,
    Events,
    EventOwners,
}

impl Table {
    pub const ALL: [Self; 16] = [
        Self::Meta,
        Self::Jobs,
        Self::Names,
        Self::Due,
        Self::Waiting,
        Self::Runs,
        Self::Owners,
        Self::States,
        Self::QueueJobs,
        Self::Queues,
        Self::Settings,
        Self::PauseTimers,
        Self::Expiry,
        Self::Sources,
        Self::Events,
        Self::EventOwners,
    ];

    /// Its name: lowercase letters and `_` only (PostgreSQL's table is `chime_<name>`).
    pub const fn name(self) -> &'static str {
        match self {
            Self::Meta => "meta",
            Self::Jobs => "jobs",
            Self::Names => "names",
            Self::Due => "due",
            Self::Waiting => "waiting",
            Self::Runs => "runs",
            Self::Owners => "owners",
            Self::States => "states",
            Self::QueueJobs => "queue_jobs",
            Self::Queues => "queues",
            Self::Settings => "settings",
            Self::PauseTimers => "pause_timers",
            Self::Expiry => "expiry",
            Self::Sources => "sources",
            Self::Events => "events",
            Self::EventOwners => "event_owners",
        }
    }

    /// Its place in [`Table::ALL`].
    pub const fn index(self) -> usize {
        self as usize
    }
}

/// Which way a range is read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Order {
    /// Smallest key first.
    Ascending,
    /// Largest key first.
    Descending,
}

/// A key and its value.
pub type Entry = (Vec<u8>, Vec<u8>);

/// What a backend could not do.
#[derive(Debug, thiserror::Error)]
pub enum KvError {
    #[error("the database (redb) failed: {0}")]
    Redb(String),
    #[error("PostgreSQL failed: {0}")]
    Pg(#[from] postgres::Error),
    /// A value the backend cannot hold (an id beyond PostgreSQL's `bigint`).
    #[error("{0}")]
    Unfit(String),
}

/// Reading tables, within a transaction (a snapshot: what it reads does not change under it,
/// except by its own writes).
pub trait KvRead {
    /// The value at `key`.
    fn get(&mut self, table: Table, key: &[u8]) -> Result<Option<Vec<u8>>, KvError>;

    /// At most `limit` entries with `from <= key < to` (`None`: unbounded on that side), in
    /// `order`.
    fn range(
        &mut self,
        table: Table,
        from: Option<&[u8]>,
        to: Option<&[u8]>,
        order: Order,
        limit: usize,
    ) -> Result<Vec<Entry>, KvError>;

    /// How many entries `table` holds.
    fn count(&mut self, table: Table) -> Result<u64, KvError> {
        Ok(self
            .range(table, None, None, Order::Ascending, usize::MAX)?
            .len() as u64)
    }
}

/// Writing tables, within a write transaction.
pub trait KvWrite: KvRead {
    /// Sets `key` to `value`, replacing what was there.
    fn insert(&mut self, table: Table, key: &[u8], value: &[u8]) -> Result<(), KvError>;

    /// Removes `key`; whether it was there.
    fn remove(&mut self, table: Table, key: &[u8]) -> Result<bool, KvError>;

    /// Removes `key`, not saying whether it was there (which lets a backend send it later).
    fn delete(&mut self, table: Table, key: &[u8]) -> Result<(), KvError> {
        self.remove(table, key).map(drop)
    }

    /// Removes every key with `from <= key < to`; how many.
    fn remove_range(&mut self, table: Table, from: &[u8], to: &[u8]) -> Result<u64, KvError> {
        let doomed = self.range(table, Some(from), Some(to), Order::Ascending, usize::MAX)?;
        for (key, _) in &doomed {
            self.remove(table, key)?;
        }
        Ok(doomed.len() as u64)
    }
}
