//! [`StoreError`]: what can go wrong in the store, and the questions the engine asks of an
//! error (was it the disk? is the disk full?).

use super::SCHEMA_VERSION;
use super::record::Damage;
use std::path::PathBuf;

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
    /// The byte-keyed backend (PostgreSQL) failed: the server is down or refused a statement,
    /// or a row it returned does not decode.
    #[error("{0}")]
    Backend(String),
    /// A fleet host's write was refused: another host declared it gone (its lease expired).
    #[error("{0}")]
    Fenced(String),
    /// A commit failed for want of the disk (said for people: see [`Store::fault`](super::Store::fault)).
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

impl From<super::kv::KvError> for StoreError {
    fn from(err: super::kv::KvError) -> Self {
        StoreError::Backend(err.to_string())
    }
}

impl StoreError {
    /// The error of an I/O operation (the disk), including redb's refusal of every commit after
    /// one failed ("previous I/O error"): what [`Store::reopen`](super::Store::reopen) is for.
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
