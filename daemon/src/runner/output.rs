//! Run output: how it is stored, capped and read back.
//!
//! A run's stdout and stderr are pipes that its supervisor reads. What arrives is appended to the
//! run's log file as records, so the two streams stay apart and in arrival order:
//!
//! ```text
//! file   := start:u64le record*
//! record := stream:u8 (1 stdout, 2 stderr)  length:u32le  bytes[length]
//! ```
//!
//! `start` is the *logical offset* of the file's first byte of output: bytes of output (record
//! payloads only) since the run began. Offsets are what `logs` and `logs -f` ask for.
//!
//! **The cap.** Output is kept in two halves: when the current file would pass half the cap, it
//! becomes `RUN.log.1` (replacing the previous one, whose bytes are dropped) and a new `RUN.log`
//! starts. So at most about the cap is kept, always the latest output, and the start of the
//! oldest kept file says how much was dropped.
//!
//! **The user's share of the disk.** Every byte written is charged to the job's owner
//! ([`super::usage`]); a write that would take a user past `output_per_user` is not kept, nor is
//! anything after it in that run, and the log ends with a line from chime that says so.
//!
//! **Lazily.** The file is created when the first byte arrives: a run that prints nothing costs no
//! file at all. Files live in shard directories of 1024 jobs (`logs/<job / 1024>/`), created once.

use chime_proto::{JobId, LogSegment, RunId, Stream};
use std::fs::File;
use std::io::{self, Read, Write};
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

const HEADER: usize = 8;
const RECORD_HEADER: usize = 5;
/// Largest record written; bigger writes are split.
const RECORD_MAX: usize = 64 * 1024;

/// The path of a run's log file; the older half of a capped run's output is at `<path>.1`.
pub fn log_path(logs_dir: &Path, job: JobId, run: RunId) -> PathBuf {
    logs_dir
        .join((job.0 / 1024).to_string())
        .join(format!("{}-{}.log", job.0, run.0))
}

fn older(path: &Path) -> PathBuf {
    let mut os = path.as_os_str().to_owned();
    os.push(".1");
    PathBuf::from(os)
}

/// Deletes a run's output files, if any. Returns the bytes they took.
pub fn delete(logs_dir: &Path, job: JobId, run: RunId) -> u64 {
    let path = log_path(logs_dir, job, run);
    let mut freed = 0;
    for p in [older(&path), path] {
        let size = std::fs::symlink_metadata(&p).map_or(0, |m| m.len());
        match std::fs::remove_file(&p) {
            Ok(()) => freed += size,
            Err(err) if err.kind() == io::ErrorKind::NotFound => {}
            Err(err) => {
                tracing::warn!(path = %p.display(), error = %err, "cannot delete run output");
            }
        }
    }
    freed
}

/// The writing side, owned by a run's supervisor.
#[derive(Debug)]
pub struct OutputLog {
    path: PathBuf,
    file: Option<File>,
    /// Bytes of output in the current file.
    in_file: u64,
    /// Bytes of output so far (the logical offset of the next byte).
    logical: u64,
    half_cap: u64,
    failed: bool,
    /// With `--output journal`: each line to the journal too.
    journal: Option<super::journal::JournalTee>,
    /// Whose disk share the files are charged to.
    charge: Option<Charge>,
    /// Bytes of the current file and of the older half this run wrote, as charged.
    file_bytes: u64,
    older_bytes: u64,
}

/// The user a run's output is charged to, and their limit.
#[derive(Debug)]
pub struct Charge {
    pub usage: std::sync::Arc<super::usage::Usage>,
    pub owner: u32,
    /// `None`: root or chimed's own user, who are counted but not limited.
    pub limit: Option<u64>,
    /// The limit and where it is set, for the note that ends a cut-off log.
    pub said: String,
    /// The disk is nearly full: output is no longer kept (see [`crate::disk`]).
    pub disk_low: crate::disk::Low,
}

impl OutputLog {
    /// Also sends each line to the journal (see [`super::journal`]).
    pub fn with_journal(mut self, tee: super::journal::JournalTee) -> Self {
        self.journal = Some(tee);
        self
    }

    pub fn new(path: PathBuf, cap: u64) -> Self {
        Self {
            path,
            file: None,
            in_file: 0,
            logical: 0,
            half_cap: (cap / 2).max(1),
            failed: false,
            journal: None,
            charge: None,
            file_bytes: 0,
            older_bytes: 0,
        }
    }

    /// Charges what the files take on disk to a user (see [`super::usage`]).
    pub fn with_charge(mut self, charge: Charge) -> Self {
        self.charge = Some(charge);
        self
    }

    /// Charges `bytes` more on disk; `false` when that would pass the user's limit (`forced`:
    /// charged anyway, for the few bytes of a header or of the note that ends the log).
    fn charge(&mut self, bytes: u64, forced: bool) -> bool {
        let Some(charge) = &self.charge else {
            return true;
        };
        let limit = if forced { None } else { charge.limit };
        charge.usage.charge(charge.owner, bytes, limit)
    }

    /// Gives back what the older half took, once it is replaced.
    fn release_older(&mut self) {
        if let Some(charge) = &self.charge {
            charge.usage.release(charge.owner, self.older_bytes);
        }
        self.older_bytes = 0;
    }

    /// Bytes of output so far.
    pub fn total(&self) -> u64 {
        self.logical
    }

    fn open_new(&mut self) -> io::Result<()> {
        if let Some(dir) = self.path.parent()
            && !dir.is_dir()
        {
            std::fs::create_dir_all(dir)?;
            std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))?;
        }
        let mut file = std::fs::OpenOptions::new()
            .create(true)
            .write(true)
            .truncate(true)
            .mode(0o600)
            .open(&self.path)?;
        file.write_all(&self.logical.to_le_bytes())?;
        self.file = Some(file);
        self.in_file = 0;
        self.charge(HEADER as u64, true);
        self.file_bytes = HEADER as u64;
        Ok(())
    }

    /// Appends output. A failure to write (disk full) is logged once; the run goes on and later
    /// output is dropped.
    pub fn append(&mut self, stream: Stream, mut data: &[u8]) {
        // The journal gets what the log keeps going for: not a cut-off run's flood.
        if let Some(tee) = &mut self.journal
            && !self.failed
        {
            tee.feed(stream, data);
        }
        if self.failed {
            self.logical += data.len() as u64;
            return;
        }
        // A record is never more than half the cap, so that each half stays within it.
        let most = RECORD_MAX.min(usize::try_from(self.half_cap).unwrap_or(usize::MAX));
        while !data.is_empty() {
            let n = data.len().min(most);
            // Room first: a full half is replaced (and given back) before the next bytes are
            // charged, so a run at its user's limit goes on writing within its own cap.
            let mut written = self.make_room(n);
            if written.is_ok() {
                if self.charge.as_ref().is_some_and(|c| c.disk_low.is_set()) {
                    self.cut_off(
                        "the disk holding chimed's state is nearly full (what is left is for its database)",
                    );
                    self.logical += data.len() as u64;
                    return;
                }
                if !self.charge((RECORD_HEADER + n) as u64, false) {
                    self.over_share();
                    self.logical += data.len() as u64;
                    return;
                }
                written = self.append_record(stream, &data[..n]);
                if written.is_err() {
                    // Nothing of it is on disk to count.
                    self.refund((RECORD_HEADER + n) as u64);
                }
            }
            if let Err(err) = written {
                tracing::warn!(path = %self.path.display(), error = %err, "cannot write run output; dropping the rest");
                self.failed = true;
                self.logical += data.len() as u64;
                return;
            }
            data = &data[n..];
        }
    }

    /// Gives back a charge for bytes that were not written.
    fn refund(&mut self, bytes: u64) {
        if let Some(charge) = &self.charge {
            charge.usage.release(charge.owner, bytes);
        }
    }

    /// The user's share is used up: the log ends with a line saying so, and nothing more is kept.
    fn over_share(&mut self) {
        let Some(charge) = &self.charge else {
            self.failed = true;
            return;
        };
        let why = format!(
            "uid {}'s output on disk reached its limit ({}); remove old runs (chimectl rm) or lower --keep-runs",
            charge.owner, charge.said
        );
        tracing::warn!(path = %self.path.display(), owner_uid = charge.owner, limit = %charge.said, "a user's output on disk reached output_per_user; this run's output is cut off");
        self.cut_off(&why);
    }

    /// Nothing more of this run's output is kept; the log ends with a line that says `why`.
    fn cut_off(&mut self, why: &str) {
        self.failed = true;
        let note = format!("chime: the rest of this run's output was not kept: {why}\n");
        let written = self.make_room(note.len()).and_then(|()| {
            self.charge((RECORD_HEADER + note.len()) as u64, true);
            self.append_record(Stream::Stderr, note.as_bytes())
        });
        if let Err(err) = written {
            tracing::warn!(path = %self.path.display(), error = %err, "cannot write run output");
        }
    }

    /// Opens the run's file if it has none yet, or starts a new half if `n` more bytes would
    /// take the current one past half the cap.
    fn make_room(&mut self, n: usize) -> io::Result<()> {
        if self.file.is_none() {
            self.open_new()?;
        } else if self.in_file + n as u64 > self.half_cap {
            std::fs::rename(&self.path, older(&self.path))?;
            // The older half this run wrote is gone; the current file is the older half now.
            self.release_older();
            self.older_bytes = self.file_bytes;
            self.open_new()?;
        }
        Ok(())
    }

    /// Writes one record to the current file (see [`OutputLog::make_room`]).
    fn append_record(&mut self, stream: Stream, data: &[u8]) -> io::Result<()> {
        let file = self.file.as_mut().expect("make_room opened it");
        let mut record = Vec::with_capacity(RECORD_HEADER + data.len());
        record.push(match stream {
            Stream::Stdout => 1,
            Stream::Stderr => 2,
        });
        record.extend_from_slice(&(data.len() as u32).to_le_bytes());
        record.extend_from_slice(data);
        file.write_all(&record)?;
        self.in_file += data.len() as u64;
        self.file_bytes += record.len() as u64;
        self.logical += data.len() as u64;
        Ok(())
    }
}

/// One file of a run's output, parsed.
struct Part {
    start: u64,
    records: Vec<(Stream, Vec<u8>)>,
}

fn parse(path: &Path) -> io::Result<Option<Part>> {
    let mut bytes = Vec::new();
    match File::open(path) {
        Ok(mut f) => f.read_to_end(&mut bytes)?,
        Err(err) if err.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(err) => return Err(err),
    };
    if bytes.len() < HEADER {
        return Ok(None);
    }
    let start = u64::from_le_bytes(bytes[..HEADER].try_into().expect("eight bytes"));
    let mut records = Vec::new();
    let mut at = HEADER;
    // A record still being written at the end is not read yet.
    while at + RECORD_HEADER <= bytes.len() {
        let stream = match bytes[at] {
            1 => Stream::Stdout,
            2 => Stream::Stderr,
            _ => break,
        };
        let len =
            u32::from_le_bytes(bytes[at + 1..at + 5].try_into().expect("four bytes")) as usize;
        let end = at + RECORD_HEADER + len;
        if end > bytes.len() {
            break;
        }
        records.push((stream, bytes[at + RECORD_HEADER..end].to_vec()));
        at = end;
    }
    Ok(Some(Part { start, records }))
}

/// What a read of a run's output found.
#[derive(Debug, Default)]
pub struct LogRead {
    pub segments: Vec<LogSegment>,
    /// Logical offset of the first byte returned.
    pub from: u64,
    /// Logical offset after the last byte returned.
    pub next: u64,
    /// Bytes dropped by the cap.
    pub dropped: u64,
    /// Bytes of output kept and dropped, in all.
    pub total: u64,
}

/// Reads up to `max` bytes of a run's output from logical offset `from` (or the last `max`
/// bytes). Safe while the run still writes: a half-written record is left for the next read.
pub fn read(
    logs_dir: &Path,
    job: JobId,
    run: RunId,
    from: Option<u64>,
    max: u64,
) -> io::Result<LogRead> {
    let path = log_path(logs_dir, job, run);
    let parts: Vec<Part> = [parse(&older(&path))?, parse(&path)?]
        .into_iter()
        .flatten()
        .collect();
    let Some(first) = parts.first() else {
        return Ok(LogRead::default());
    };
    let dropped = first.start;
    let last = parts.last().expect("not empty");
    let total = last.start
        + last
            .records
            .iter()
            .map(|(_, d)| d.len() as u64)
            .sum::<u64>();
    let from = from.unwrap_or(total.saturating_sub(max)).max(dropped);
    let until = from.saturating_add(max).min(total);
    let mut segments: Vec<LogSegment> = Vec::new();
    for part in &parts {
        let mut offset = part.start;
        for (stream, data) in &part.records {
            let (lo, hi) = (offset, offset + data.len() as u64);
            offset = hi;
            if hi <= from || lo >= until {
                continue;
            }
            let slice = &data[(from.max(lo) - lo) as usize..(until.min(hi) - lo) as usize];
            match segments.last_mut() {
                Some(seg) if seg.stream == *stream => seg.data.extend_from_slice(slice),
                _ => segments.push(LogSegment {
                    stream: *stream,
                    data: slice.to_vec(),
                }),
            }
        }
    }
    let got: u64 = segments.iter().map(|s| s.data.len() as u64).sum();
    Ok(LogRead {
        segments,
        from,
        next: from + got,
        dropped,
        total,
    })
}

/// Bytes of output of a run, kept and dropped (for `show`).
pub fn total(logs_dir: &Path, job: JobId, run: RunId) -> u64 {
    read(logs_dir, job, run, None, 0).map_or(0, |r| r.total)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn text(r: &LogRead) -> String {
        r.segments
            .iter()
            .map(|s| String::from_utf8_lossy(&s.data).into_owned())
            .collect()
    }

    #[test]
    fn streams_stay_apart_and_offsets_follow() {
        let dir = tempfile::tempdir().unwrap();
        let (job, run) = (JobId(5), RunId(9));
        let mut log = OutputLog::new(log_path(dir.path(), job, run), 1 << 20);
        assert!(
            !log_path(dir.path(), job, run).exists(),
            "no output, no file"
        );
        log.append(Stream::Stdout, b"out1\n");
        log.append(Stream::Stderr, b"err1\n");
        log.append(Stream::Stdout, b"out2\n");
        let all = read(dir.path(), job, run, Some(0), 1000).unwrap();
        assert_eq!(all.segments.len(), 3);
        assert_eq!(all.segments[1].stream, Stream::Stderr);
        assert_eq!(text(&all), "out1\nerr1\nout2\n");
        assert_eq!((all.from, all.next, all.total, all.dropped), (0, 15, 15, 0));
        // Following: from the offset returned last time.
        let part = read(dir.path(), job, run, Some(5), 5).unwrap();
        assert_eq!(text(&part), "err1\n");
        log.append(Stream::Stdout, b"more\n");
        let more = read(dir.path(), job, run, Some(all.next), 1000).unwrap();
        assert_eq!(text(&more), "more\n");
    }

    #[test]
    fn big_writes_are_capped_too() {
        let dir = tempfile::tempdir().unwrap();
        let (job, run) = (JobId(2), RunId(3));
        let mut log = OutputLog::new(log_path(dir.path(), job, run), 4096);
        let big: Vec<u8> = (0..20_000u32).map(|i| b'a' + (i % 26) as u8).collect();
        log.append(Stream::Stdout, &big);
        let r = read(dir.path(), job, run, None, 1 << 20).unwrap();
        let kept: Vec<u8> = r.segments.iter().flat_map(|s| s.data.clone()).collect();
        assert!(kept.len() <= 4096, "{} bytes kept", kept.len());
        assert_eq!(
            kept.as_slice(),
            &big[big.len() - kept.len()..],
            "the tail is kept"
        );
        assert_eq!(r.dropped as usize + kept.len(), big.len());
    }

    #[test]
    fn the_cap_keeps_the_tail_and_counts_what_it_dropped() {
        let dir = tempfile::tempdir().unwrap();
        let (job, run) = (JobId(1), RunId(1));
        let mut log = OutputLog::new(log_path(dir.path(), job, run), 100);
        for i in 0..100 {
            log.append(Stream::Stdout, format!("line {i:03}\n").as_bytes());
        }
        let r = read(dir.path(), job, run, None, 1 << 20).unwrap();
        assert_eq!(r.total, 900);
        assert!(r.dropped > 0 && r.dropped < 900, "{}", r.dropped);
        let kept = text(&r);
        assert!(kept.len() <= 100, "{} bytes kept", kept.len());
        assert!(kept.ends_with("line 099\n"), "{kept}");
        assert_eq!(r.from, r.dropped);
        // Asking for dropped bytes starts where the kept output starts.
        assert_eq!(
            read(dir.path(), job, run, Some(0), 10).unwrap().from,
            r.dropped
        );
    }
}
