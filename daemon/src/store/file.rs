//! The file under the database: redb's own file backend, except that space the file grows into
//! is written with zeros, a chunk at a time, the first time redb writes a page into it.
//!
//! Why: redb grows its file with `set_len`, which leaves a hole, and writes pages into it as it
//! allocates them. On ext4 (and most file systems) a write into a hole allocates blocks, and the
//! commit's `fdatasync` must then also commit that allocation to the file system's journal. While
//! the database grows, which is while jobs are being added, nearly every commit pays for that.
//! Measured here (`tests/bench/fsync-probe.py`): 24 KiB written and `fdatasync`ed takes 0.17-0.19
//! ms and 65-78 us of CPU when it lands in new space, 0.10 ms and 47 us when it lands on blocks
//! written before.
//!
//! So the first write into a [`CHUNK`] of grown space writes the rest of that chunk with zeros,
//! and the next commit's `fdatasync` allocates the whole chunk at once: one commit in 256 pays
//! for the allocation instead of nearly every one.
//!
//! Why it is safe: a chunk is filled only if no byte of it was written since the file was opened
//! and it lies wholly beyond the file's length at open, so the zeros land where the file reads
//! as zeros anyway (a hole), never over a page redb wrote. The zeros need no durability of their
//! own: a hole reads as zeros too. Zeros are never written past the file's length, so the file's
//! size is redb's alone. Everything else (reads, locks, sync) is redb's backend unchanged.

use redb::backends::FileBackend;
use redb::{BackendError, StorageBackend};
use std::collections::HashSet;
use std::fs::File;
use std::io::Error as BackendIoError;
use std::ops::Bound;
use std::sync::Mutex;

/// How much grown space one first write initialises: 1 MiB, 256 pages of redb's 4 KiB.
pub(super) const CHUNK: u64 = 1 << 20;

static ZEROS: [u8; CHUNK as usize] = [0; CHUNK as usize];

#[derive(Debug)]
pub(super) struct GrownFile {
    inner: FileBackend,
    chunks: Mutex<Chunks>,
}

#[derive(Debug)]
struct Chunks {
    /// The first chunk wholly beyond the file's length at open: chunks before it are the file
    /// as it was, never filled.
    first_new: u64,
    /// Chunks from `first_new` on that hold something written since the open.
    written: HashSet<u64>,
}

impl GrownFile {
    pub(super) fn new(file: File) -> Result<Self, redb::DatabaseError> {
        let len = file.metadata()?.len();
        Ok(Self {
            inner: FileBackend::new(file)?,
            chunks: Mutex::new(Chunks {
                first_new: len.div_ceil(CHUNK),
                written: HashSet::new(),
            }),
        })
    }
}

impl StorageBackend for GrownFile {
    fn len(&self) -> Result<u64, BackendIoError> {
        self.inner.len()
    }

    fn read(&self, offset: u64, out: &mut [u8]) -> Result<(), BackendIoError> {
        self.inner.read(offset, out)
    }

    fn set_len(&self, len: u64) -> Result<(), BackendIoError> {
        let mut chunks = self.chunks.lock().unwrap_or_else(|p| p.into_inner());
        self.inner.set_len(len)?;
        // Space cut off and grown again is a hole again: forget what was written there, except
        // in the chunk the new end falls in, whose first part still holds data.
        let kept = len.div_ceil(CHUNK);
        chunks.written.retain(|&c| c < kept);
        Ok(())
    }

    fn sync_data(&self) -> Result<(), BackendIoError> {
        self.inner.sync_data()
    }

    fn write(&self, offset: u64, data: &[u8]) -> Result<(), BackendIoError> {
        let end = offset + data.len() as u64;
        let mut chunks = self.chunks.lock().unwrap_or_else(|p| p.into_inner());
        if end > chunks.first_new * CHUNK {
            let mut len = None;
            for chunk in (offset / CHUNK).max(chunks.first_new)..end.div_ceil(CHUNK) {
                if !chunks.written.insert(chunk) {
                    continue;
                }
                let file_len = match len {
                    Some(len) => len,
                    None => *len.insert(self.inner.len()?),
                };
                let (start, stop) = (chunk * CHUNK, ((chunk + 1) * CHUNK).min(file_len));
                // Before the data and after it, within the chunk and the file.
                for (from, to) in [(start, offset.min(stop)), (end.max(start), stop)] {
                    if from < to {
                        self.inner.write(from, &ZEROS[..(to - from) as usize])?;
                    }
                }
            }
        }
        drop(chunks);
        self.inner.write(offset, data)
    }

    fn close(&self) -> Result<(), BackendIoError> {
        self.inner.close()
    }

    fn try_lock_range(&self, start: Bound<u64>, end: Bound<u64>) -> Result<bool, BackendError> {
        self.inner.try_lock_range(start, end)
    }

    fn try_lock_shared_range(
        &self,
        start: Bound<u64>,
        end: Bound<u64>,
    ) -> Result<bool, BackendError> {
        self.inner.try_lock_shared_range(start, end)
    }

    fn lock_range(&self, start: Bound<u64>, end: Bound<u64>) -> Result<(), BackendError> {
        self.inner.lock_range(start, end)
    }

    fn lock_shared_range(&self, start: Bound<u64>, end: Bound<u64>) -> Result<(), BackendError> {
        self.inner.lock_shared_range(start, end)
    }

    fn unlock_range(&self, start: Bound<u64>, end: Bound<u64>) -> Result<(), BackendError> {
        self.inner.unlock_range(start, end)
    }

    fn query_lock_range(&self, start: Bound<u64>, end: Bound<u64>) -> Result<bool, BackendError> {
        self.inner.query_lock_range(start, end)
    }
}

/// Opens the database at `path` through a [`GrownFile`]; `create`: make the file if it is
/// missing (else it must exist).
pub(super) fn open(
    builder: &redb::Builder,
    path: &std::path::Path,
    create: bool,
) -> Result<redb::Database, redb::DatabaseError> {
    let file = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create(create)
        .truncate(false)
        .open(path)?;
    builder.create_with_backend(GrownFile::new(file)?)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::os::unix::fs::MetadataExt;

    fn backend(dir: &tempfile::TempDir, existing: &[u8]) -> (GrownFile, std::path::PathBuf) {
        let path = dir.path().join("db");
        std::fs::write(&path, existing).unwrap();
        let file = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open(&path)
            .unwrap();
        (GrownFile::new(file).unwrap(), path)
    }

    #[derive(Debug, Clone)]
    enum Op {
        Write { at: u64, len: usize, byte: u8 },
        SetLen(u64),
    }

    fn op(max: u64) -> impl Strategy<Value = Op> {
        prop_oneof![
            4 => (0..max, 1..20_000usize, 1..=255u8)
                .prop_map(|(at, len, byte)| Op::Write { at, len, byte }),
            1 => (0..max).prop_map(Op::SetLen),
        ]
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 48, ..ProptestConfig::default() })]

        /// Whatever redb writes, wherever, and however the file grows and shrinks, the file
        /// reads back as a file without the zero filling would: the zeros never land on data,
        /// and never make the file longer.
        #[test]
        fn the_file_reads_as_what_was_written(
            existing in 0..(3 * CHUNK),
            ops in proptest::collection::vec(op(6 * CHUNK), 1..40),
        ) {
            let dir = tempfile::tempdir().unwrap();
            let mut model: Vec<u8> = (0..existing).map(|i| (i % 251) as u8 | 1).collect();
            let (file, path) = backend(&dir, &model);
            for op in ops {
                match op {
                    Op::Write { at, len, byte } => {
                        // redb writes within the file's length, having grown it first.
                        let end = at as usize + len;
                        if end > model.len() {
                            model.resize(end, 0);
                            file.set_len(end as u64).unwrap();
                        }
                        model[at as usize..end].fill(byte);
                        file.write(at, &vec![byte; len]).unwrap();
                    }
                    Op::SetLen(len) => {
                        model.resize(len as usize, 0);
                        file.set_len(len).unwrap();
                    }
                }
            }
            prop_assert_eq!(file.len().unwrap(), model.len() as u64);
            let on_disk = std::fs::read(&path).unwrap();
            prop_assert!(on_disk == model, "the file differs from what was written");
        }
    }

    /// The first page written into grown space takes its whole chunk's blocks at once (what
    /// makes later commits into that chunk cheap); space the file had at open is left alone.
    #[test]
    fn a_first_write_into_grown_space_allocates_its_chunk() {
        let dir = tempfile::tempdir().unwrap();
        let (file, path) = backend(&dir, &[7; 4096]);
        file.set_len(4 * CHUNK).unwrap();
        let blocks = || std::fs::metadata(&path).unwrap().blocks() * 512;
        let before = blocks();
        file.write(2 * CHUNK + 8192, &[1; 4096]).unwrap();
        assert!(
            blocks() >= before + CHUNK,
            "one page into grown space allocated {} bytes, not the chunk's {CHUNK}",
            blocks() - before
        );
        // The same chunk again: no more filling.
        let after = blocks();
        file.write(2 * CHUNK + 16384, &[2; 4096]).unwrap();
        assert_eq!(blocks(), after);
    }
}
