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
//! one.
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

mod reader;
mod writer;

pub use reader::{JobFilter, PAGE_BYTES, Page, Reader};
pub use writer::Writer;

use crate::job::{Job, Run};
use chime_proto::{EventRecord, JobState};
use redb::{ReadableDatabase, ReadableTable, TableDefinition};
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::path::{Path, PathBuf};

/// The schema this build writes and reads.
pub const SCHEMA_VERSION: u64 = 1;

const META: TableDefinition<'_, &str, u64> = TableDefinition::new("meta");
const JOBS: TableDefinition<'_, u64, &[u8]> = TableDefinition::new("jobs");
const NAMES: TableDefinition<'_, (&str, u32), u64> = TableDefinition::new("names");
const DUE: TableDefinition<'_, (i64, u64), ()> = TableDefinition::new("due");
const WAITING: TableDefinition<'_, (&str, u32, i64, u64), ()> = TableDefinition::new("waiting");

const RUNS: TableDefinition<'_, (u64, u64), &[u8]> = TableDefinition::new("runs");
const OWNERS: TableDefinition<'_, (u32, u64), ()> = TableDefinition::new("owners");
const STATES: TableDefinition<'_, (u8, u64), ()> = TableDefinition::new("states");
const QUEUE_JOBS: TableDefinition<'_, (&str, u64), ()> = TableDefinition::new("queue_jobs");
const QUEUES: TableDefinition<'_, &str, &[u8]> = TableDefinition::new("queues");
const SETTINGS: TableDefinition<'_, &str, &[u8]> = TableDefinition::new("settings");
const PAUSE_TIMERS: TableDefinition<'_, (i64, &str), ()> = TableDefinition::new("pause_timers");
const EXPIRY: TableDefinition<'_, (i64, u64), ()> = TableDefinition::new("expiry");
const SOURCES: TableDefinition<'_, (&str, u64), ()> = TableDefinition::new("sources");
const EVENTS: TableDefinition<'_, u64, &[u8]> = TableDefinition::new("events");
const EVENT_OWNERS: TableDefinition<'_, (u32, u64), ()> = TableDefinition::new("event_owners");

const KEY_SCHEMA: &str = "schema_version";
const KEY_NEXT_JOB: &str = "next_job_id";
const KEY_NEXT_RUN: &str = "next_run_id";
const KEY_NEXT_EVENT: &str = "next_event_seq";
const KEY_PAUSE_ALL: &str = "pause.all";

fn count_key(state: JobState) -> &'static str {
    match state {
        JobState::Scheduled => "count.scheduled",
        JobState::Running => "count.running",
        JobState::Succeeded => "count.succeeded",
        JobState::Failed => "count.failed",
        JobState::Cancelled => "count.cancelled",
        JobState::Queued => "count.queued",
        JobState::Paused => "count.paused",
        JobState::Damaged => "count.damaged",
    }
}

fn waiting_key(queue: &str) -> String {
    format!("waiting.{queue}")
}

fn owned_key(uid: u32) -> String {
    format!("owned.{uid}")
}

fn events_key(uid: u32) -> String {
    format!("events.{uid}")
}

fn state_code(state: JobState) -> u8 {
    match state {
        JobState::Scheduled => 0,
        JobState::Running => 1,
        JobState::Succeeded => 2,
        JobState::Failed => 3,
        JobState::Cancelled => 4,
        JobState::Queued => 5,
        JobState::Paused => 6,
        JobState::Damaged => 7,
    }
}

/// Most users whose waiting jobs one release looks at in a queue.
pub const WAITING_SCAN: usize = 4096;

/// What a job name means to a caller (see [`resolve_name`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Named {
    Job(chime_proto::JobId),
    Missing,
    /// Several users have a job of that name (only root can be in doubt): (owner, job).
    Ambiguous(Vec<(u32, chime_proto::JobId)>),
}

/// A job looked up for a caller.
#[derive(Debug, Clone)]
#[allow(clippy::large_enum_variant)] // Short-lived, and almost always the job.
pub enum Found {
    Job(Job),
    Missing,
    /// See [`Named::Ambiguous`].
    Ambiguous(Vec<(u32, chime_proto::JobId)>),
    /// The job's record is damaged, or the name index points to a job of another name.
    /// `theirs`: the `owners` index says the caller owns it (or the caller is root), so the
    /// caller may be told, and may remove it.
    Damaged {
        id: chime_proto::JobId,
        damage: Damage,
        theirs: bool,
    },
}

impl Found {
    /// The job, if exactly one was found.
    pub fn job(self) -> Option<Job> {
        match self {
            Self::Job(job) => Some(job),
            Self::Missing | Self::Ambiguous(_) | Self::Damaged { .. } => None,
        }
    }

    /// What a lookup of job `id` (by `name`, when it was looked up by one) found. A record that
    /// is damaged, or that is not named what the name index says, is [`Found::Damaged`] rather
    /// than an error: the caller is answered, and everything else goes on. `theirs` asks the
    /// `owners` index whether the caller owns `id`.
    fn of(
        loaded: Result<Option<Job>, StoreError>,
        id: chime_proto::JobId,
        name: Option<&str>,
        theirs: impl FnOnce() -> Result<bool, StoreError>,
    ) -> Result<Self, StoreError> {
        let damage = match loaded {
            Ok(Some(job)) => {
                // `USER/NAME` names the job NAME.
                let bare = name.map(|n| n.rsplit_once('/').map_or(n, |(_, bare)| bare));
                match bare {
                    Some(bare) if job.name.as_deref() != Some(bare) => Damage::new(
                        "names",
                        bare,
                        format!("it points to job {id}, which is named {:?}", job.name),
                    ),
                    _ => return Ok(Self::Job(job)),
                }
            }
            Ok(None) => return Ok(Self::Missing),
            Err(StoreError::Corrupt(damage)) => damage,
            Err(err) => return Err(err),
        };
        tracing::error!(job_id = id.0, %damage, "a damaged record was found");
        Ok(Self::Damaged {
            id,
            damage,
            theirs: theirs()?,
        })
    }
}

/// How `caller` names a job. Names are unique per owner, so that one user's name never blocks
/// another's:
///
/// - `NAME` is the caller's own job of that name; for root, who may act on everyone's jobs and
///   has none of that name, the one job of any owner with that name ([`Named::Ambiguous`] when
///   several users have one);
/// - `USER/NAME` (names never contain `/`) is that user's job, for that user and root.
pub fn resolve_name(
    names: &impl ReadableTable<(&'static str, u32), u64>,
    caller: u32,
    name: &str,
) -> Result<Named, StoreError> {
    let id = |v: redb::AccessGuard<'_, u64>| chime_proto::JobId(v.value());
    if let Some((user, name)) = name.split_once('/') {
        let owner = match user.parse::<u32>() {
            Ok(uid) => Some(uid),
            Err(_) => nix::unistd::User::from_name(user)
                .ok()
                .flatten()
                .map(|u| u.uid.as_raw()),
        };
        return Ok(match owner {
            Some(owner) if caller == 0 || caller == owner => names
                .get((name, owner))?
                .map_or(Named::Missing, |v| Named::Job(id(v))),
            _ => Named::Missing,
        });
    }
    if let Some(v) = names.get((name, caller))? {
        return Ok(Named::Job(id(v)));
    }
    if caller != 0 {
        return Ok(Named::Missing);
    }
    let mut all = Vec::new();
    for entry in names.range((name, 0)..=(name, u32::MAX))?.take(16) {
        let (key, value) = entry?;
        all.push((key.value().1, chime_proto::JobId(value.value())));
    }
    Ok(match all[..] {
        [] => Named::Missing,
        [(_, only)] => Named::Job(only),
        _ => Named::Ambiguous(all),
    })
}

/// A queue's settings, as stored. A queue without a record has no limit and no pause.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct QueueRecord {
    /// Most runs at once; `None`: only the daemon's limit.
    pub parallel: Option<u32>,
    pub pause: Option<crate::job::PauseInfo>,
}

/// What a timed pause ends: the key of `pause_timers`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum PauseKey {
    All,
    Queue(String),
    Job(chime_proto::JobId),
}

impl PauseKey {
    fn encode(&self) -> String {
        match self {
            Self::All => "all".into(),
            Self::Queue(q) => format!("queue:{q}"),
            Self::Job(id) => format!("job:{id}"),
        }
    }

    fn decode(text: &str) -> Option<Self> {
        if text == "all" {
            return Some(Self::All);
        }
        if let Some(q) = text.strip_prefix("queue:") {
            return Some(Self::Queue(q.into()));
        }
        text.strip_prefix("job:")?
            .parse()
            .ok()
            .map(|id| Self::Job(chime_proto::JobId(id)))
    }
}

/// What can go wrong in the store. Each variant says which file or record.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error(
        "{path} is not a chime database ({reason}); it was left untouched: move it away to start with an empty database, or restore a backup"
    )]
    NotADatabase { path: PathBuf, reason: String },
    #[error(
        "{path} is damaged ({reason}); it was left untouched: restore it from a backup, or move it away to start with an empty database"
    )]
    Damaged { path: PathBuf, reason: String },
    #[error(
        "{path} was written by a newer chimed (schema version {found}, this build knows up to {SCHEMA_VERSION}); it was left untouched: upgrade chimed"
    )]
    NewerSchema { path: PathBuf, found: u64 },
    #[error(
        "{path} is in use by another process (is another chimed running on this state directory?)"
    )]
    InUse { path: PathBuf },
    #[error("cannot open the database {path}: {source}")]
    Open {
        path: PathBuf,
        #[source]
        source: redb::DatabaseError,
    },
    /// One stored record is damaged (see [`Damage`]); the rest of the database is not.
    #[error("{0}")]
    Corrupt(Damage),
    #[error("database error: {0}")]
    Redb(#[from] redb::Error),
    /// A commit failed for want of the disk (said for people: see [`Store::fault`]).
    #[error("{0}")]
    Write(String),
}

macro_rules! from_redb {
    ($($ty:ty),*) => {$(
        impl From<$ty> for StoreError {
            fn from(err: $ty) -> Self {
                StoreError::Redb(err.into())
            }
        }
    )*};
}
from_redb!(
    redb::TransactionError,
    redb::TableError,
    redb::StorageError,
    redb::CommitError
);

impl StoreError {
    /// The error of an I/O operation (the disk), including redb's refusal of every commit after
    /// one failed ("previous I/O error"): what [`Store::reopen`] is for.
    pub fn is_io(&self) -> bool {
        match self {
            Self::Write(_) => true,
            Self::Redb(err) => matches!(err, redb::Error::Io(_) | redb::Error::PreviousIo),
            _ => false,
        }
    }

    /// The disk is full (`ENOSPC`, or `EDQUOT` for a quota).
    pub fn is_disk_full(&self) -> bool {
        match self {
            Self::Redb(redb::Error::Io(io)) => {
                matches!(io.raw_os_error(), Some(libc::ENOSPC | libc::EDQUOT))
            }
            _ => false,
        }
    }
}

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
    /// Opens the database at `path`, creating it if the file does not exist.
    ///
    /// Errors: the file is not a chime database or is damaged ([`StoreError::NotADatabase`]), has
    /// a newer schema ([`StoreError::NewerSchema`]), or is open in another process
    /// ([`StoreError::InUse`]). In all three cases nothing was written to it.
    pub fn open(path: &Path, options: &StoreOptions) -> Result<Self, StoreError> {
        let exists = path.exists();
        if exists {
            Self::check_read_only(path)?;
        }
        let mut builder = redb::Database::builder();
        builder.set_cache_size(options.cache_bytes);
        // A file that needs repair is written to by the repair (its header first); if the repair
        // fails, what it wrote is put back, so that a refused file is byte-for-byte as it was.
        let before = if exists {
            Some(Untouched::take(path).map_err(|source| StoreError::Open {
                path: path.into(),
                source: redb::DatabaseError::Storage(redb::StorageError::Io(source)),
            })?)
        } else {
            None
        };
        let opened = catch_unwind(AssertUnwindSafe(|| {
            if exists {
                builder.open(path)
            } else {
                builder.create(path)
            }
        }));
        if !matches!(opened, Ok(Ok(_)))
            && let Some(before) = &before
            && let Err(err) = before.restore(path)
        {
            tracing::error!(path = %path.display(), error = %err, "cannot put back what the failed open changed");
        }
        let db = match opened {
            Ok(Ok(db)) => db,
            Ok(Err(redb::DatabaseError::DatabaseAlreadyOpen)) => {
                return Err(StoreError::InUse { path: path.into() });
            }
            Ok(Err(err)) => return Err(classify_open_error(path, err)),
            Err(_) => {
                return Err(StoreError::NotADatabase {
                    path: path.into(),
                    reason: "redb could not read it (see the panic message above)".into(),
                });
            }
        };
        let store = Self {
            db: std::sync::RwLock::new(Some(db)),
            path: path.into(),
            quick_repair: options.quick_repair,
            cache_bytes: options.cache_bytes,
            fault: std::sync::Mutex::new(None),
        };
        store.initialize()?;
        Ok(store)
    }

    /// Why the last commit failed, if none has succeeded since.
    pub fn fault(&self) -> Option<WriteFault> {
        self.fault.lock().map(|f| f.clone()).unwrap_or(None)
    }

    /// Closes and reopens the database, as redb asks after an I/O error (it refuses every later
    /// commit until then, even once the cause is gone). Fails while read transactions still hold
    /// the old one open (`InUse`): the caller tries again later. Nothing committed is lost: the
    /// failed commit never became durable, and reopening reads the last one that did.
    pub fn reopen(&self) -> Result<(), StoreError> {
        let mut db = self.db.write().unwrap_or_else(|p| p.into_inner());
        drop(db.take());
        let mut builder = redb::Database::builder();
        builder.set_cache_size(self.cache_bytes);
        match catch_unwind(AssertUnwindSafe(|| builder.open(&self.path))) {
            Ok(Ok(reopened)) => {
                *db = Some(reopened);
                tracing::info!(path = %self.path.display(), "database reopened after a write error");
                Ok(())
            }
            Ok(Err(redb::DatabaseError::DatabaseAlreadyOpen)) => Err(StoreError::InUse {
                path: self.path.clone(),
            }),
            Ok(Err(err)) => Err(classify_open_error(&self.path, err)),
            Err(_) => Err(StoreError::NotADatabase {
                path: self.path.clone(),
                reason: "redb could not reopen it (see the panic message above)".into(),
            }),
        }
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

    /// Checks an existing file without writing to it: refuses what is not ours or is too new.
    /// A file that needs crash recovery cannot be read read-only; it passes, and the read-write
    /// open repairs it (redb's commits are checksummed, so a torn commit rolls back).
    fn check_read_only(path: &Path) -> Result<(), StoreError> {
        let opened = catch_unwind(AssertUnwindSafe(|| {
            redb::Database::builder().open_read_only(path)
        }));
        let db = match opened {
            Ok(Ok(db)) => db,
            Ok(Err(redb::DatabaseError::RepairAborted)) => return Ok(()),
            Ok(Err(redb::DatabaseError::DatabaseAlreadyOpen)) => {
                return Err(StoreError::InUse { path: path.into() });
            }
            Ok(Err(err)) => return Err(classify_open_error(path, err)),
            Err(_) => {
                return Err(StoreError::NotADatabase {
                    path: path.into(),
                    reason: "redb could not read it (see the panic message above)".into(),
                });
            }
        };
        let check = catch_unwind(AssertUnwindSafe(|| -> Result<Option<u64>, StoreError> {
            let txn = db.begin_read()?;
            match txn.open_table(META) {
                Ok(meta) => Ok(meta.get(KEY_SCHEMA)?.map(|v| v.value())),
                Err(redb::TableError::TableDoesNotExist(_)) => Ok(None),
                Err(err) => Err(err.into()),
            }
        }));
        match check {
            Ok(Ok(Some(found))) => Self::check_schema(path, found),
            Ok(Ok(None)) if is_empty_database(&db) => Ok(()),
            Ok(Ok(None)) => Err(StoreError::NotADatabase {
                path: path.into(),
                reason: "a redb file without chime's tables".into(),
            }),
            Ok(Err(err)) => Err(StoreError::NotADatabase {
                path: path.into(),
                reason: err.to_string(),
            }),
            Err(_) => Err(StoreError::NotADatabase {
                path: path.into(),
                reason: "redb could not read it (see the panic message above)".into(),
            }),
        }
    }

    fn check_schema(path: &Path, found: u64) -> Result<(), StoreError> {
        if found > SCHEMA_VERSION {
            return Err(StoreError::NewerSchema {
                path: path.into(),
                found,
            });
        }
        if found == 0 {
            return Err(StoreError::NotADatabase {
                path: path.into(),
                reason: "schema version 0".into(),
            });
        }
        Ok(())
    }

    /// Creates the tables of a new database, or checks the schema of an existing one.
    fn initialize(&self) -> Result<(), StoreError> {
        let db = self.db.read().unwrap_or_else(|p| p.into_inner());
        let db = db.as_ref().expect("open just made it");
        let mut txn = db.begin_write()?;
        txn.set_quick_repair(self.quick_repair);
        {
            let mut meta = txn.open_table(META)?;
            let found = meta.get(KEY_SCHEMA)?.map(|v| v.value());
            match found {
                Some(found) => Self::check_schema(&self.path, found)?,
                None => {
                    meta.insert(KEY_SCHEMA, SCHEMA_VERSION)?;
                    meta.insert(KEY_NEXT_JOB, 1)?;
                    meta.insert(KEY_NEXT_RUN, 1)?;
                    for state in JobState::ALL {
                        meta.insert(count_key(state), 0)?;
                    }
                }
            }
        }
        txn.open_table(JOBS)?;
        txn.open_table(NAMES)?;
        txn.open_table(DUE)?;
        txn.open_table(WAITING)?;

        txn.open_table(RUNS)?;
        txn.open_table(OWNERS)?;
        txn.open_table(STATES)?;
        txn.open_table(QUEUE_JOBS)?;
        txn.open_table(QUEUES)?;
        txn.open_table(SETTINGS)?;
        txn.open_table(PAUSE_TIMERS)?;
        txn.open_table(EXPIRY)?;
        txn.open_table(SOURCES)?;
        txn.open_table(EVENTS)?;
        txn.open_table(EVENT_OWNERS)?;
        txn.commit()?;
        Ok(())
    }

    /// The database file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Reads every sealed record (jobs, runs, events) and checks that it is whole and decodes,
    /// calling `damaged` for each that is not; returns how many records it read. Each read
    /// transaction covers at most [`SCRUB_CHUNK`] records, so that the scrub never holds old
    /// pages from being reused for long. chimed runs it once after it starts, on a thread of
    /// its own: damage anywhere is reported at once, not when the record is next needed.
    pub fn scrub(&self, mut damaged: impl FnMut(Damage)) -> Result<u64, StoreError> {
        let mut read = 0;
        read += self.scrub_table(JOBS, |k| k, |k, v| decode_job(k, v).map(drop), &mut damaged)?;
        read += self.scrub_table(RUNS, |k| k, |k, v| decode_run(k, v).map(drop), &mut damaged)?;
        read += self.scrub_table(
            EVENTS,
            |k| k,
            |k, v| decode_event(k, v).map(drop),
            &mut damaged,
        )?;
        Ok(read)
    }

    fn scrub_table<K>(
        &self,
        table: TableDefinition<'static, K, &'static [u8]>,
        own: impl Fn(K::SelfType<'_>) -> K,
        check: impl Fn(K, &[u8]) -> Result<(), StoreError>,
        damaged: &mut impl FnMut(Damage),
    ) -> Result<u64, StoreError>
    where
        K: redb::Key + Copy + std::borrow::Borrow<K::SelfType<'static>> + 'static,
    {
        let mut after: Option<K> = None;
        let mut read = 0;
        loop {
            let reader = self.read()?;
            let table = reader.into_txn().open_table(table)?;
            let mut last = None;
            let range = match &after {
                Some(key) => table
                    .range::<K>((std::ops::Bound::Excluded(*key), std::ops::Bound::Unbounded))?,
                None => table.range::<K>(..)?,
            };
            for entry in range.take(SCRUB_CHUNK) {
                let (key, value) = entry?;
                let key = own(key.value());
                read += 1;
                match check(key, value.value()) {
                    Ok(()) => {}
                    Err(StoreError::Corrupt(damage)) => damaged(damage),
                    Err(err) => return Err(err),
                }
                last = Some(key);
            }
            match last {
                Some(key) => after = Some(key),
                None => return Ok(read),
            }
        }
    }

    /// Runs `f` in one write transaction and commits it durably. If `f` fails, nothing is
    /// written. Blocks: call from a blocking thread.
    pub fn write<R>(
        &self,
        f: impl FnOnce(&mut Writer<'_>) -> Result<R, StoreError>,
    ) -> Result<R, StoreError> {
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
                let mut writer = Writer::new(&txn)?;
                let result = f(&mut writer)?;
                writer.finish()?;
                result
            };
            txn.commit()?;
            Ok(result)
        };
        self.note_commit(attempt())
    }

    /// A consistent snapshot for reading (MVCC: never blocks the writer).
    pub fn read(&self) -> Result<Reader, StoreError> {
        let db = self.db.read().unwrap_or_else(|p| p.into_inner());
        let Some(db) = db.as_ref() else {
            return Err(StoreError::Write(format!(
                "the database {} is being reopened after a write error; try again",
                self.path.display()
            )));
        };
        Reader::new(db.begin_read()?)
    }
}

/// Bytes free for chimed on the filesystem holding `dir`.
pub fn free_bytes(dir: &Path) -> Option<u64> {
    let stat = nix::sys::statvfs::statvfs(dir).ok()?;
    Some(stat.blocks_available().saturating_mul(stat.fragment_size()))
}

/// The start of a database file and its length, as they were before an open that may repair it.
struct Untouched {
    head: Vec<u8>,
    len: u64,
}

impl Untouched {
    /// How much of the start is kept: redb's header and region headers, which a repair writes
    /// before anything else.
    const HEAD: u64 = 1024 * 1024;

    fn take(path: &Path) -> std::io::Result<Self> {
        use std::io::Read;
        let file = std::fs::File::open(path)?;
        let len = file.metadata()?.len();
        let mut head = Vec::new();
        file.take(Self::HEAD).read_to_end(&mut head)?;
        Ok(Self { head, len })
    }

    /// Writes the start back and restores the length, if either changed.
    fn restore(&self, path: &Path) -> std::io::Result<()> {
        use std::io::{Read, Seek, Write};
        let mut file = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open(path)?;
        let mut now = Vec::new();
        (&mut file).take(Self::HEAD).read_to_end(&mut now)?;
        let len = file.metadata()?.len();
        if now != self.head || len != self.len {
            tracing::warn!(path = %path.display(), "the refused database was changed by the attempt to open it; putting it back as it was");
            file.set_len(self.len)?;
            file.rewind()?;
            file.write_all(&self.head)?;
            file.sync_all()?;
        }
        Ok(())
    }
}

fn is_empty_database(db: &redb::ReadOnlyDatabase) -> bool {
    db.begin_read()
        .ok()
        .and_then(|txn| txn.list_tables().ok().map(|mut t| t.next().is_none()))
        .unwrap_or(false)
}

fn classify_open_error(path: &Path, err: redb::DatabaseError) -> StoreError {
    match err {
        redb::DatabaseError::Storage(redb::StorageError::Io(io))
            if io.kind() == std::io::ErrorKind::UnexpectedEof =>
        {
            StoreError::Damaged {
                path: path.into(),
                reason: "it ends before its own data does (cut short: a crash of the disk, or a copy that did not finish)".into(),
            }
        }
        redb::DatabaseError::Storage(redb::StorageError::Corrupted(what)) => StoreError::Damaged {
            path: path.into(),
            reason: what,
        },
        redb::DatabaseError::Storage(redb::StorageError::Io(io))
            if io.kind() != std::io::ErrorKind::InvalidData =>
        {
            StoreError::Open {
                path: path.into(),
                source: redb::DatabaseError::Storage(redb::StorageError::Io(io)),
            }
        }
        redb::DatabaseError::Storage(storage) => StoreError::NotADatabase {
            path: path.into(),
            reason: storage.to_string(),
        },
        redb::DatabaseError::UpgradeRequired(version) => StoreError::NotADatabase {
            path: path.into(),
            reason: format!("redb file format {version} is not supported by this build"),
        },
        other => StoreError::Open {
            path: path.into(),
            source: other,
        },
    }
}

/// When a finished job's retention ends (the `expiry` index key).
///
/// A declared job never expires: it is kept as long as its job file declares it (were it removed,
/// the next reload would create it again and run it again).
fn expire_ms(job: &Job) -> Option<i64> {
    if job.source.is_some() {
        return None;
    }
    let retention = i64::try_from(job.exec.retention_ms).unwrap_or(i64::MAX);
    job.state
        .finished_ms()
        .map(|at| at.saturating_add(retention))
}

/// A stored record that is damaged: its checksum does not match its bytes, or it does not
/// decode. Its bytes are left as they are.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("record {key} of table `{table}` is damaged ({reason})")]
pub struct Damage {
    pub table: &'static str,
    pub key: String,
    pub reason: String,
}

impl Damage {
    /// For people: which job, which record of which file, and what to do.
    pub fn explain(&self, database: &Path, id: chime_proto::JobId) -> String {
        format!(
            "job {id} is damaged in {db}: {self}. chimed keeps the record as it is and never runs \
             the job; everything else works as usual. Remove the job with `chimectl rm {id}`, or \
             stop chimed and restore {db} from a backup",
            db = database.display()
        )
    }

    /// The job whose record (or run's record) this is.
    pub fn job(&self) -> Option<chime_proto::JobId> {
        match self.table {
            "jobs" => self.key.parse().ok().map(chime_proto::JobId),
            "runs" => self
                .key
                .split('/')
                .next()?
                .parse()
                .ok()
                .map(chime_proto::JobId),
            _ => None,
        }
    }

    fn new(table: &'static str, key: impl ToString, reason: impl ToString) -> Self {
        Self {
            table,
            key: key.to_string(),
            reason: reason.to_string(),
        }
    }
}

/// Encodes a small record that is not sealed (queues, settings).
fn encode<T: serde::Serialize>(value: &T) -> Vec<u8> {
    postcard::to_stdvec(value).expect("records always encode")
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

/// Most records one read transaction of [`Store::scrub`] covers.
pub const SCRUB_CHUNK: usize = 10_000;

/// Bytes of a checksum at the end of a sealed record.
const SEAL: usize = 4;

/// Encodes a job, run or event, sealed: its postcard bytes and then their CRC-32
/// (little-endian). redb checksums its pages only when it repairs a file after a crash; a bit
/// flipped on disk in a cleanly closed file would otherwise be read as a different job (another
/// name, another command) or not decode at all. The seal makes any such change to a record
/// detected where it is read, so that the record is quarantined rather than trusted.
fn seal<T: serde::Serialize>(value: &T) -> Vec<u8> {
    let mut bytes = encode(value);
    let crc = crc32fast::hash(&bytes);
    bytes.extend_from_slice(&crc.to_le_bytes());
    bytes
}

/// Checks a sealed record's checksum and decodes it.
fn unseal<T: serde::de::DeserializeOwned>(
    table: &'static str,
    key: impl ToString,
    bytes: &[u8],
) -> Result<T, StoreError> {
    let damaged = |reason: String| StoreError::Corrupt(Damage::new(table, key.to_string(), reason));
    let Some(split) = bytes.len().checked_sub(SEAL) else {
        return Err(damaged(format!(
            "{} bytes, shorter than its checksum",
            bytes.len()
        )));
    };
    let (body, crc) = bytes.split_at(split);
    let stored = u32::from_le_bytes(crc.try_into().expect("SEAL bytes"));
    if crc32fast::hash(body) != stored {
        return Err(damaged("its checksum does not match its bytes".into()));
    }
    postcard::from_bytes(body).map_err(|err| damaged(format!("it does not decode: {err}")))
}

fn decode_job(key: u64, bytes: &[u8]) -> Result<Job, StoreError> {
    unseal("jobs", key, bytes)
}

fn decode_event(key: u64, bytes: &[u8]) -> Result<EventRecord, StoreError> {
    unseal("events", key, bytes)
}

fn decode_run(key: (u64, u64), bytes: &[u8]) -> Result<Run, StoreError> {
    unseal("runs", format!("{}/{}", key.0, key.1), bytes)
}

#[cfg(test)]
mod tests;

impl Store {
    /// Checks that every index and counter agrees with the job rows. Reads everything: for
    /// tests and diagnosis, not for the hot path. Returns the first disagreement found.
    pub fn verify(&self) -> Result<(), String> {
        use std::collections::{BTreeMap, BTreeSet};
        let fail = |e: StoreError| e.to_string();
        let txn = self.read().map_err(|e| e.to_string())?.into_txn();
        let open = |name| format!("cannot open table {name}");
        let jobs = txn.open_table(JOBS).map_err(|_| open("jobs"))?;
        let mut due = BTreeSet::new();
        let mut waiting = BTreeSet::new();

        let mut owners = BTreeSet::new();
        let mut states = BTreeSet::new();
        let mut names = BTreeSet::new();
        let mut queue_jobs = BTreeSet::new();
        let mut expiry = BTreeSet::new();
        let mut sources = BTreeSet::new();
        let mut counts = [0u64; JobState::ALL.len()];
        let mut waiting_counts: BTreeMap<String, u64> = BTreeMap::new();
        let mut owned_counts: BTreeMap<u32, u64> = BTreeMap::new();
        for entry in jobs.iter().map_err(|e| e.to_string())? {
            let (key, value) = entry.map_err(|e| e.to_string())?;
            let job = decode_job(key.value(), value.value()).map_err(fail)?;
            if job.id.0 != key.value() {
                return Err(format!("job row {} holds job {}", key.value(), job.id));
            }
            if let Some(d) = job.state.due_ms() {
                due.insert((d, job.id.0));
            }
            if let Some(w) = job.state.waiting_ms() {
                waiting.insert((job.queue.clone(), job.owner, w, job.id.0));
                *waiting_counts.entry(job.queue.clone()).or_default() += 1;
            }

            if let Some(name) = &job.name {
                names.insert((name.clone(), job.owner, job.id.0));
            }
            owners.insert((job.owner, job.id.0));
            *owned_counts.entry(job.owner).or_default() += 1;
            if let Some(source) = job.source_path() {
                sources.insert((source.to_owned(), job.id.0));
            }
            queue_jobs.insert((job.queue.clone(), job.id.0));
            if let Some(at) = expire_ms(&job) {
                expiry.insert((at, job.id.0));
            }
            let code = state_code(job.kind());
            states.insert((code, job.id.0));
            counts[usize::from(code)] += 1;
        }
        macro_rules! compare {
            ($table:expr, $name:literal, $expected:expr, |$k:ident, $v:ident| $key:expr) => {{
                let table = txn.open_table($table).map_err(|_| open($name))?;
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
        compare!(DUE, "due", due, |k, v| k.value());
        compare!(WAITING, "waiting", waiting, |k, v| {
            let (q, owner, t, id) = k.value();
            (q.to_owned(), owner, t, id)
        });

        compare!(OWNERS, "owners", owners, |k, v| k.value());
        compare!(STATES, "states", states, |k, v| k.value());
        compare!(NAMES, "names", names, |k, v| {
            let (name, owner) = k.value();
            (name.to_owned(), owner, v.value())
        });
        compare!(EXPIRY, "expiry", expiry, |k, v| k.value());
        compare!(SOURCES, "sources", sources, |k, v| {
            let (s, id) = k.value();
            (s.to_owned(), id)
        });
        compare!(QUEUE_JOBS, "queue_jobs", queue_jobs, |k, v| {
            let (q, id) = k.value();
            (q.to_owned(), id)
        });
        let reader = Reader::new(txn).map_err(fail)?;
        for (state, n) in reader.counts().map_err(fail)? {
            if counts[usize::from(state_code(state))] != n {
                return Err(format!(
                    "count.{state} is {n}, but {} jobs are {state}",
                    counts[usize::from(state_code(state))]
                ));
            }
        }
        for (queue, n) in &waiting_counts {
            let stored = reader.waiting_count(queue).map_err(fail)?;
            if stored != *n {
                return Err(format!("waiting.{queue} is {stored}, but {n} jobs wait"));
            }
        }
        for (uid, n) in &owned_counts {
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
