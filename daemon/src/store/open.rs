//! Opening safely (see "Opening safely" in the store's docs): the read-only check of an existing
//! file, the open that may repair it after a crash (and puts back what a failed repair wrote),
//! the creation of a new database's tables, and the reopen after a write error.

use super::schema::{
    DUE, EVENT_OWNERS, EVENTS, EXPIRY, JOBS, KEY_NEXT_JOB, KEY_NEXT_RUN, KEY_SCHEMA, META, NAMES,
    OWNERS, PAUSE_TIMERS, QUEUE_JOBS, QUEUES, RUNS, SCHEMA_VERSION, SETTINGS, SOURCES, STATES,
    WAITING, count_key,
};
use super::{Store, StoreError, StoreOptions};
use chime_proto::JobState;
use redb::ReadableDatabase;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::path::Path;

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
            super::file::open(&builder, path, !exists)
        }));
        if !matches!(opened, Ok(Ok(_)))
            && let Some(before) = &before
            && let Err(err) = before.restore(path)
        {
            tracing::error!(path = %path.display(), error = %err, "cannot put back what the failed open changed");
        }
        let db = opened_or_refused(path, opened)?;
        let store = Self {
            db: std::sync::RwLock::new(Some(db)),
            path: path.into(),
            quick_repair: options.quick_repair,
            cache_bytes: options.cache_bytes,
            fault: std::sync::Mutex::new(None),
            remote: None,
        };
        store.initialize()?;
        Ok(store)
    }

    /// Opens the store on the PostgreSQL database `config` names, as host `host` (see
    /// `remote.rs`): creates the tables a new database lacks, or checks the schema of an
    /// existing one.
    pub fn open_remote(
        config: &str,
        host: &str,
        lease: std::time::Duration,
    ) -> Result<Self, StoreError> {
        let remote = super::remote::Remote::open(config, host, lease)?;
        let shown = format!("PostgreSQL ({})", remote.shown);
        Self::over(Box::new(remote), shown)
    }

    /// A store whose tables are in memory, kept by the byte-keyed side of the store as
    /// PostgreSQL's are: for tests of that side without a server.
    pub fn open_in_memory(tables: super::InMemoryTables) -> Result<Self, StoreError> {
        Self::over(
            Box::new(super::remote::InMemory { tables }),
            "memory".into(),
        )
    }

    fn over(remote: Box<dyn super::remote::KvStore>, shown: String) -> Result<Self, StoreError> {
        let store = Self {
            db: std::sync::RwLock::new(None),
            path: shown.clone().into(),
            quick_repair: false,
            cache_bytes: 0,
            fault: std::sync::Mutex::new(None),
            remote: Some(remote),
        };
        let remote = store.remote.as_ref().expect("just set");
        remote.write(false, &mut |kv, _| {
            let mut meta = super::table::Source::Kv(kv).open(META)?;
            Self::initialize_meta(&mut meta, Path::new(&shown))
        })?;
        Ok(store)
    }

    /// Closes and reopens the database, as redb asks after an I/O error (it refuses every later
    /// commit until then, even once the cause is gone). Fails while read transactions still hold
    /// the old one open (`InUse`): the caller tries again later. Nothing committed is lost: the
    /// failed commit never became durable, and reopening reads the last one that did.
    pub fn reopen(&self) -> Result<(), StoreError> {
        if self.remote.is_some() {
            // A broken connection is replaced by the next write.
            return Ok(());
        }
        let mut db = self.db.write().unwrap_or_else(|p| p.into_inner());
        drop(db.take());
        let mut builder = redb::Database::builder();
        builder.set_cache_size(self.cache_bytes);
        match catch_unwind(AssertUnwindSafe(|| {
            super::file::open(&builder, &self.path, false)
        })) {
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

    /// Checks an existing file without writing to it: refuses what is not ours or is too new.
    /// A file that needs crash recovery cannot be read read-only; it passes, and the read-write
    /// open repairs it (redb's commits are checksummed, so a torn commit rolls back).
    fn check_read_only(path: &Path) -> Result<(), StoreError> {
        let opened = catch_unwind(AssertUnwindSafe(|| {
            redb::Database::builder().open_read_only(path)
        }));
        let db = match opened {
            Ok(Err(redb::DatabaseError::RepairAborted)) => return Ok(()),
            opened => opened_or_refused(path, opened)?,
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

    /// Writes a new database's schema version and counters, or checks an existing one's
    /// schema (`shown`: the database, for the message). Both backends' opens.
    fn initialize_meta(
        meta: &mut super::table::Tbl<'_, &'static str, u64>,
        shown: &Path,
    ) -> Result<(), StoreError> {
        match meta.get(KEY_SCHEMA)? {
            Some(found) => Self::check_schema(shown, found),
            None => {
                meta.insert(KEY_SCHEMA, SCHEMA_VERSION)?;
                meta.insert(KEY_NEXT_JOB, 1)?;
                meta.insert(KEY_NEXT_RUN, 1)?;
                for state in JobState::ALL {
                    meta.insert(count_key(state), 0)?;
                }
                Ok(())
            }
        }
    }

    /// Creates the tables of a new database, or checks the schema of an existing one.
    fn initialize(&self) -> Result<(), StoreError> {
        let db = self.db.read().unwrap_or_else(|p| p.into_inner());
        let db = db.as_ref().expect("open just made it");
        let mut txn = db.begin_write()?;
        txn.set_quick_repair(self.quick_repair);
        {
            let mut meta = super::table::Source::RedbWrite(&txn).open(META)?;
            Self::initialize_meta(&mut meta, &self.path)?;
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

/// The database redb opened, or why it could not: in use by another chimed, not ours, or a
/// panic in redb (its message is already on stderr).
fn opened_or_refused<Db>(
    path: &Path,
    opened: std::thread::Result<Result<Db, redb::DatabaseError>>,
) -> Result<Db, StoreError> {
    match opened {
        Ok(Ok(db)) => Ok(db),
        Ok(Err(redb::DatabaseError::DatabaseAlreadyOpen)) => {
            Err(StoreError::InUse { path: path.into() })
        }
        Ok(Err(err)) => Err(classify_open_error(path, err)),
        Err(_) => Err(StoreError::NotADatabase {
            path: path.into(),
            reason: "redb could not read it (see the panic message above)".into(),
        }),
    }
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
