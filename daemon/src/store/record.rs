//! How records are encoded: jobs, runs and events sealed with a checksum, small records (queues,
//! settings) as plain postcard, and [`Damage`], what a record that does not check or decode is.

use super::StoreError;
use crate::job::{Job, Run};
use chime_proto::EventRecord;
use std::path::Path;

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

    pub(super) fn new(table: &'static str, key: impl ToString, reason: impl ToString) -> Self {
        Self {
            table,
            key: key.to_string(),
            reason: reason.to_string(),
        }
    }
}

/// Encodes a small record that is not sealed (queues, settings).
pub(super) fn encode<T: serde::Serialize>(value: &T) -> Vec<u8> {
    postcard::to_stdvec(value).expect("records always encode")
}

/// Bytes of a checksum at the end of a sealed record.
const SEAL: usize = 4;

/// Encodes a job, run or event, sealed: its postcard bytes and then their CRC-32
/// (little-endian). redb checksums its pages only when it repairs a file after a crash; a bit
/// flipped on disk in a cleanly closed file would otherwise be read as a different job (another
/// name, another command) or not decode at all. The seal makes any such change to a record
/// detected where it is read, so that the record is quarantined rather than trusted.
///
/// The record is sealed into `buffer`, cleared first, which keeps its capacity: a write
/// transaction seals every row it writes through one buffer instead of growing a new vector,
/// with a few reallocations, per row. Returns the sealed bytes.
pub(super) fn seal_into<'b, T: serde::Serialize>(buffer: &'b mut Vec<u8>, value: &T) -> &'b [u8] {
    buffer.clear();
    let mut bytes =
        postcard::to_extend(value, std::mem::take(buffer)).expect("records always encode");
    let crc = crc32fast::hash(&bytes);
    bytes.extend_from_slice(&crc.to_le_bytes());
    *buffer = bytes;
    buffer
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

pub(super) fn decode_job(key: u64, bytes: &[u8]) -> Result<Job, StoreError> {
    unseal("jobs", key, bytes)
}

pub(super) fn decode_event(key: u64, bytes: &[u8]) -> Result<EventRecord, StoreError> {
    unseal("events", key, bytes)
}

pub(super) fn decode_run(key: (u64, u64), bytes: &[u8]) -> Result<Run, StoreError> {
    unseal("runs", format!("{}/{}", key.0, key.1), bytes)
}

/// Decodes a small record that is not sealed (queues, settings).
pub(super) fn decode_record<T: serde::de::DeserializeOwned>(
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
