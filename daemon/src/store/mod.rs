//! The store: every table chime keeps in redb, and the only code that touches redb.
//!
//! # Layout (schema version 1)
//!
//! | table          | key                          | value              | holds |
//! |----------------|------------------------------|--------------------|-------|
//! | `meta`         | `&str`                       | `u64`              | `schema_version`, `next_job_id`, `next_run_id`, `next_event_seq`, `count.<state>`, `waiting.<queue>`, `owned.<uid>`, `events.<uid>` |
//! | `jobs`         | job id `u64`                 | postcard [`Job`]   | every job |
//! | `names`        | (name `&str`, owner uid `u32`) | job id `u64`     | names, unique per owner: one user's name never blocks another's |
//! | `due`          | (`due_ms`, job id)           | `()`               | the timer index: jobs whose next occurrence is scheduled |
//! | `waiting`      | (queue, owner uid, `since_ms`, job id) | `()`     | jobs waiting for a slot in their queue or for it to resume, per user, so that a release passes over a user at their running limit in one seek however many jobs they have waiting |

//! | `runs`         | (job id, run id)             | postcard [`Run`]   | run history, per job in run order |
//! | `owners`       | (uid `u32`, job id)          | `()`               | jobs by owner, for a user's `ls` |
//! | `states`       | (state `u8`, job id)         | `()`               | jobs by state, for `ls --state` (and recovery: the `running` ones) |
//! | `queue_jobs`   | (queue, job id)              | `()`               | jobs by queue, for `ls --queue` |
//! | `queues`       | queue `&str`                 | postcard [`QueueRecord`] | queue limits and pauses |
//! | `settings`     | `&str`                       | postcard           | `pause.all` |
//! | `pause_timers` | (`until_ms`, target `&str`)  | `()`               | timed pauses: `all`, `queue:NAME`, `job:ID` |
//! | `expiry`       | (`expire_ms`, job id)        | `()`               | finished jobs, by when their retention ends |
//! | `sources`      | (job file `&str`, job id)    | `()`               | jobs declared by job files, for reloads |
//! | `events`       | sequence number `u64`        | postcard [`EventRecord`] | the event log: every change, in commit order, the newest `--event-retention` kept |
//! | `event_owners` | (owner uid, sequence number) | `()`               | the events of each user held to `events_per_user` (not root's or chimed's user's): a user beyond their share loses their own oldest events, not everyone's |
//!
//! Every index of a job is derived from its row by one function, [`Writer::put_job`], which is
//! given the old and the new row, so an index cannot disagree with its job. Events are appended
//! by the engine's batch in the transaction of the change they describe ([`Writer::append_event`]),
//! and the oldest are pruned in the same transactions, so the log's length stays bounded. The `count.*` and
//! `waiting.*` counters are kept the same way so that `status` and `queue ls` never scan, and the
//! `owned.*` counters (jobs stored per owner) so that a user's limit of jobs is checked without
//! one. [`Store::verify`] derives them all again from the rows and compares (tests, diagnosis).
//!
//! # Files
//!
//! - this module: [`Store`], the handle: [`Store::write`] and [`Store::read`], and the write
//!   faults that make a commit fail for want of the disk;
//! - `schema.rs`: the table definitions and `meta` keys above, state codes, [`QueueRecord`] and
//!   [`PauseKey`];
//! - `record.rs`: how rows are encoded: sealed with a checksum (jobs, runs, events) or plain
//!   (queues, settings), and [`Damage`], a record that does not check;
//! - `error.rs`: [`StoreError`];
//! - `open.rs`: [`Store::open`] and [`Store::reopen`] (see "Opening safely");
//! - `file.rs`: the file under redb: its own file backend, except that space the file grows
//!   into is written with zeros a chunk at a time, so that commits while the database grows do
//!   not each pay the file system for allocating blocks (see "Durability");
//! - `scrub.rs`: [`Store::scrub`], [`Scrubbed`] and [`DamageSeen`];
//! - `index.rs`: the derivation of every index from a job's row ([`Writer::put_job`], one step
//!   per index, and [`Writer::delete_job`]), and [`Store::verify`];
//! - `lookup.rs`: how a caller names a job ([`resolve_name`], [`Found`]);
//! - `reader.rs`: [`Reader`], the queries over a snapshot, and the paged listing;
//! - `writer/`: [`Writer`], one write transaction's tables and counters, with one file per family
//!   (jobs, runs, events, the indexes the engine scans for work, queues and pauses);
//! - `table.rs`: [`table::Tbl`], the typed boundary the writer and the reader are written over:
//!   one table in one transaction, kept by redb's typed table or by a byte-keyed backend, with
//!   the same key and value types either way (see its docs for why typed);
//! - `remote.rs`: the byte-keyed backends of a whole store: PostgreSQL (`--store
//!   postgresql://...`: the writer's connection under the fleet's writer lock and this host's
//!   lease, readers' snapshots on pooled connections) and, for tests, memory;
//! - `kv/`: every table as an ordered map of bytes, with keys that sort as the tuples do, kept
//!   by PostgreSQL (or redb, or memory, which hold it to a reference in the tests), and the
//!   fleet's hosts, leases and fencing (`kv/fleet.rs`).
//!
//! # Two backends
//!
//! redb, embedded, is the default. With `--store postgresql://...` the same tables live in
//! PostgreSQL (`chime_<table>`, `bytea` keys in the order-preserving encoding of `kv/key.rs`),
//! written and read by the same code: the writer, the reader and the derivation of indexes
//! only see [`table::Tbl`]. The daemon's unit tests run over both sides (`CHIME_UNIT_STORE=
//! memory` puts the byte side under the store's and the engine's tests), and the integration
//! suites of `tests/tests/on_postgres.rs` run the daemon on a private PostgreSQL cluster.
//!
//! # Versioning
//!
//! `meta.schema_version` is checked at open. A database written by a newer schema is refused with
//! a message naming both versions, and left untouched. Values are postcard, which is not
//! self-describing, so a change to [`Job`] or [`Run`] is a schema change.
//!
//! Until the first release there is one schema, changed in place. From the first release on, a
//! change bumps [`SCHEMA_VERSION`], and the open migrates an older database in the transaction of
//! [`Store::open`]'s initialisation: the released schema's row types are frozen in a `migrate`
//! module, every row is converted to the current types and every index rebuilt through
//! [`Writer::put_job`], tested over a database file the released build wrote (kept under
//! `daemon/tests/fixtures`).
//!
//! # Opening safely
//!
//! An existing file is first opened read-only, which never writes: a file that is not a redb
//! database, is damaged, is not a chime database or has a newer schema is refused here and left
//! byte-for-byte unchanged. Only a file that passes, or one that redb reports as needing crash
//! recovery (the daemon was killed), is opened for writing. redb's repair after a crash scans the
//! file (about a second per few hundred MiB); `--quick-repair` makes it instant at twice the cost
//! of every commit ([`StoreOptions::quick_repair`]).
//!
//! # Durability
//!
//! [`Store::write`] commits with redb's default, immediate durability: when it returns `Ok`, the
//! changes survive a crash or power loss. It blocks (fsync), so callers run it off the async
//! workers.
//!
//! An `fdatasync` of pages written where the file has just grown also commits the blocks the
//! file system allocated for them, which costs it nearly twice the time (measured by
//! `tests/bench/fsync-probe.py`). redb grows its file by leaving a hole; `file.rs` fills each
//! 1 MiB of grown space with zeros when redb first writes into it, so one commit pays for the
//! allocation of 256 pages and those after it overwrite (bench-submit: 11-12% more acknowledged
//! submissions with 32 clients, 5-9% with 8 requests in flight each).
//!
//! [`Job`]: crate::job::Job
//! [`Run`]: crate::job::Run
//! [`EventRecord`]: chime_proto::EventRecord

mod error;
mod file;
mod index;
pub mod kv;
mod lookup;
mod open;
mod reader;
mod record;
mod remote;
mod schema;
mod scrub;
mod table;
mod writer;

pub use error::StoreError;
pub use lookup::{Found, Named, resolve_name};
pub use reader::{JobFilter, PAGE_BYTES, Page, Reader};
pub use record::Damage;
pub use remote::{InMemoryTables, LEASE as FLEET_LEASE, shown as shown_config};
pub use schema::{PauseKey, QueueRecord, SCHEMA_VERSION};
pub use scrub::{DamageSeen, SCRUB_CHUNK, Scrubbed};
pub use writer::{WAITING_SCAN, Writer};

use redb::ReadableDatabase;
use std::path::{Path, PathBuf};

/// How the store is opened.
#[derive(Debug, Clone)]
pub struct StoreOptions {
    /// redb's page cache. Kept small: the daemon's memory also decides how fast spawns are.
    pub cache_bytes: usize,
    /// redb's quick repair: every commit also saves the allocator state, so that reopening
    /// after a crash takes milliseconds instead of a scan that grows with the file. It doubles
    /// the cost of a commit (measured here: 490 us and 275 us of CPU instead of 260 us and
    /// 143 us), which every run of a job pays on its way to being spawned.
    pub quick_repair: bool,
}

impl Default for StoreOptions {
    fn default() -> Self {
        Self {
            cache_bytes: 64 * 1024 * 1024,
            quick_repair: false,
        }
    }
}

/// The database. Cheap to share (`Arc` inside redb's handle is not exposed, so wrap it in one).
#[derive(Debug)]
pub struct Store {
    /// `None` only while [`Store::reopen`] replaces it.
    db: std::sync::RwLock<Option<redb::Database>>,
    path: PathBuf,
    quick_repair: bool,
    cache_bytes: usize,
    /// Why the last commit failed, until one succeeds again.
    fault: std::sync::Mutex<Option<WriteFault>>,
    /// The PostgreSQL store, when chimed keeps its tables there (`db` is then `None`).
    remote: Option<Box<dyn remote::KvStore>>,
}

/// A commit that failed for want of the disk, kept for `status` and the metrics until a commit
/// succeeds again.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WriteFault {
    /// When it began (ms since the epoch).
    pub since_ms: i64,
    /// The disk is full (else another I/O error).
    pub disk_full: bool,
    /// For people: what, where, and what to do.
    pub message: String,
}

impl Store {
    /// Why the last commit failed, if none has succeeded since.
    pub fn fault(&self) -> Option<WriteFault> {
        self.fault.lock().map(|f| f.clone()).unwrap_or(None)
    }

    /// Notes how a commit went: a failure for want of the disk becomes a [`WriteFault`] with a
    /// message for people (which replaces `err`); a success ends one.
    fn note_commit<R>(&self, result: Result<R, StoreError>) -> Result<R, StoreError> {
        let mut fault = self.fault.lock().unwrap_or_else(|p| p.into_inner());
        match result {
            Ok(r) => {
                if let Some(old) = fault.take() {
                    tracing::info!(path = %self.path.display(), since_ms = old.since_ms, "the database can be written again");
                }
                Ok(r)
            }
            Err(err) if err.is_io() => {
                let dir = self.path.parent().unwrap_or(Path::new("/"));
                let free = free_bytes(dir);
                let disk_full = err.is_disk_full() || free == Some(0);
                let message = if disk_full {
                    format!(
                        "the disk holding {} is full ({} bytes free); nothing was changed: free some space there, and chimed goes on by itself",
                        dir.display(),
                        free.map_or_else(|| "?".into(), |f| f.to_string())
                    )
                } else {
                    format!(
                        "chimed cannot write its database {} ({err}); nothing was changed: see its log",
                        self.path.display()
                    )
                };
                if fault.is_none() {
                    tracing::error!(path = %self.path.display(), error = %err, disk_full, "committing to the database failed; chimed reopens it and tries again");
                }
                let since_ms = fault
                    .as_ref()
                    .map_or_else(crate::job::now_ms, |f| f.since_ms);
                *fault = Some(WriteFault {
                    since_ms,
                    disk_full,
                    message: message.clone(),
                });
                Err(StoreError::Write(message))
            }
            Err(err) => Err(err),
        }
    }

    /// The database file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Runs `f` in one write transaction and commits it durably. If `f` fails, nothing is
    /// written. Blocks: call from a blocking thread.
    pub fn write<R>(
        &self,
        f: impl FnOnce(&mut Writer<'_>) -> Result<R, StoreError>,
    ) -> Result<R, StoreError> {
        if self.remote.is_some() {
            return self.write_remote(false, |w, _| f(w));
        }
        let db = self.db.read().unwrap_or_else(|p| p.into_inner());
        let Some(db) = db.as_ref() else {
            return Err(StoreError::Write(format!(
                "the database {} is being reopened after a write error; try again",
                self.path.display()
            )));
        };
        let attempt = || -> Result<R, StoreError> {
            let mut txn = db.begin_write()?;
            txn.set_quick_repair(self.quick_repair);
            let result = {
                let mut writer = Writer::new(table::Source::RedbWrite(&txn))?;
                let result = f(&mut writer)?;
                writer.finish()?;
                result
            };
            txn.commit()?;
            Ok(result)
        };
        self.note_commit(attempt())
    }

    /// As [`Store::write`], and in a fleet (PostgreSQL store) the hosts whose lease ended are
    /// first declared gone, in the same transaction, and given to `f` (which closes their runs
    /// as `lost`); on redb, `f` is given none.
    pub fn write_fencing<R>(
        &self,
        f: impl FnOnce(&mut Writer<'_>, &[crate::job::HostId]) -> Result<R, StoreError>,
    ) -> Result<R, StoreError> {
        if self.remote.is_some() {
            return self.write_remote(true, f);
        }
        self.write(|w| f(w, &[]))
    }

    fn write_remote<R>(
        &self,
        fence: bool,
        f: impl FnOnce(&mut Writer<'_>, &[crate::job::HostId]) -> Result<R, StoreError>,
    ) -> Result<R, StoreError> {
        let remote = self.remote.as_ref().expect("a remote store");
        let mut f = Some(f);
        let mut out = None;
        let written = remote.write(fence, &mut |kv, gone| {
            let f = f.take().expect("a transaction's work is done once");
            let mut writer = Writer::new(table::Source::Kv(kv))?;
            out = Some(f(&mut writer, gone)?);
            writer.finish()
        });
        self.note_commit(written.map(|()| out.expect("a committed transaction did its work")))
    }

    /// In a fleet: calls `wake` when another host commits a change (see `remote.rs`).
    pub fn on_change(&self, wake: Box<dyn Fn() + Send + Sync>) {
        if let Some(remote) = &self.remote {
            remote.on_change(wake);
        }
    }

    /// In a fleet: this host's name (`None` on redb).
    pub fn host(&self) -> Option<String> {
        self.remote.as_ref().and_then(|r| r.host())
    }

    /// In a fleet: this host's name and every host's membership (`None` on redb).
    pub fn fleet(&self) -> Result<Option<(String, Vec<remote::HostLease>)>, StoreError> {
        match &self.remote {
            Some(remote) => remote.fleet(),
            None => Ok(None),
        }
    }

    /// A consistent snapshot for reading (MVCC: never blocks the writer).
    pub fn read(&self) -> Result<Reader, StoreError> {
        if let Some(remote) = &self.remote {
            return Reader::new(reader::ReadTxn::Kv(remote.read()?));
        }
        let db = self.db.read().unwrap_or_else(|p| p.into_inner());
        let Some(db) = db.as_ref() else {
            return Err(StoreError::Write(format!(
                "the database {} is being reopened after a write error; try again",
                self.path.display()
            )));
        };
        Reader::new(reader::ReadTxn::Redb(db.begin_read()?))
    }
}

/// Bytes free for chimed on the filesystem holding `dir`.
pub fn free_bytes(dir: &Path) -> Option<u64> {
    let stat = nix::sys::statvfs::statvfs(dir).ok()?;
    Some(stat.blocks_available().saturating_mul(stat.fragment_size()))
}

#[cfg(test)]
mod tests;
#[cfg(test)]
pub(crate) mod testutil;
