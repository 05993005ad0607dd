//! `--output journal`: a job's output lines, also sent to the log (the journal under systemd),
//! one record per line with the job's fields.
//!
//! Records go through `tracing` with the target `job_output` and the fields JOB_ID, JOB_NAME,
//! RUN_ID, QUEUE and STREAM, so `journalctl -u chimed JOB_ID=42` shows a job's output between
//! its run's start and end records. A line longer than [`LINE_MAX`] is cut into pieces; a last
//! line without a newline is sent when the run ends. The run's output file is written as
//! always: this is a copy.
//!
//! journald limits how fast one service may log, and beyond that it drops the service's records,
//! everyone's audit and run records with them. So a user's jobs may send at most
//! `journal_lines_per_second` lines (with ten seconds' worth of slack) to it, all their runs
//! together ([`Budget`]); lines beyond that are counted, and one record at the run's end says how
//! many were not sent. Root's and chimed's own user's jobs are not held to it.
//!
//! The run's `run started` record is written by the engine's postman, after the commit and
//! beside the process's start, not before it; so a run's output is read only once its [`Gate`]
//! opens, when the batch's records are written ([`Opener`]). Output waits in the pipe meanwhile
//! (normally microseconds; on a loaded machine the postman can be late by a whole short run).

use chime_proto::Stream;

/// Longest piece of a line in one record.
pub const LINE_MAX: usize = 4096;

/// Held with a batch's log records; dropping it (once they are written) opens the gates of the
/// runs the batch started.
#[derive(Debug)]
pub struct Opener(tokio::sync::watch::Sender<()>);

impl Opener {
    #[allow(clippy::new_without_default)]
    pub fn new() -> Self {
        Self(tokio::sync::watch::Sender::new(()))
    }

    /// A gate that opens when this opener is dropped.
    pub fn gate(&self) -> Gate {
        Gate(Some(self.0.subscribe()))
    }
}

/// Whether a run's output may go to the log yet (see the module's docs). The default is open.
#[derive(Debug, Clone, Default)]
pub struct Gate(Option<tokio::sync::watch::Receiver<()>>);

impl Gate {
    pub fn is_open(&self) -> bool {
        self.0.is_none()
    }

    /// Returns once the gate is open (its opener dropped).
    pub async fn opened(&mut self) {
        if let Some(receiver) = &mut self.0 {
            // Nothing is ever sent: this returns when the sender is dropped.
            let _ = receiver.changed().await;
        }
        self.0 = None;
    }
}

/// A user's allowance of journal lines, shared by all their runs.
#[derive(Debug)]
pub struct Budget {
    pub pace: std::sync::Arc<crate::limits::Pace>,
    pub owner: u32,
    /// Lines per second.
    pub rate: u32,
    /// The limit and where it is set, for the record that says lines were not sent.
    pub said: String,
}

/// Splits a run's output into lines and logs each.
#[derive(Debug)]
pub struct JournalTee {
    pub job_id: u64,
    pub job_name: Option<String>,
    pub run_id: u64,
    pub queue: String,
    /// Bytes of an unfinished line, per stream.
    partial: [Vec<u8>; 2],
    /// `None`: not limited (root's or chimed's own user's job).
    budget: Option<Budget>,
    /// Lines not sent for want of budget.
    withheld: u64,
}

impl JournalTee {
    pub fn new(job_id: u64, job_name: Option<String>, run_id: u64, queue: String) -> Self {
        Self {
            job_id,
            job_name,
            run_id,
            queue,
            partial: [Vec::new(), Vec::new()],
            budget: None,
            withheld: 0,
        }
    }

    /// Holds the tee to its owner's allowance of journal lines.
    pub fn with_budget(mut self, budget: Budget) -> Self {
        self.budget = Some(budget);
        self
    }

    pub fn feed(&mut self, stream: Stream, mut data: &[u8]) {
        let slot = stream as usize;
        while !data.is_empty() {
            match data.iter().position(|b| *b == b'\n') {
                Some(end) => {
                    let mut line = std::mem::take(&mut self.partial[slot]);
                    line.extend_from_slice(&data[..end]);
                    self.emit(stream, &line);
                    data = &data[end + 1..];
                }
                None => {
                    self.partial[slot].extend_from_slice(data);
                    data = &[];
                }
            }
            while self.partial[slot].len() >= LINE_MAX {
                let rest = self.partial[slot].split_off(LINE_MAX);
                let piece = std::mem::replace(&mut self.partial[slot], rest);
                self.emit(stream, &piece);
            }
        }
    }

    fn emit(&mut self, stream: Stream, line: &[u8]) {
        if let Some(budget) = &self.budget {
            let slack = std::time::Duration::from_secs(10);
            let now = std::time::Instant::now();
            if !budget.pace.try_take(budget.owner, budget.rate, slack, now) {
                self.withheld += 1;
                return;
            }
        }
        let text = String::from_utf8_lossy(line);
        let text = text.strip_suffix('\r').unwrap_or(&text);
        tracing::info!(
            target: "job_output",
            job_id = self.job_id,
            job_name = self.job_name.as_deref(),
            run_id = self.run_id,
            queue = %self.queue,
            stream = stream.as_str(),
            "{text}"
        );
    }
}

impl Drop for JournalTee {
    fn drop(&mut self) {
        for stream in [Stream::Stdout, Stream::Stderr] {
            let rest = std::mem::take(&mut self.partial[stream as usize]);
            if !rest.is_empty() {
                self.emit(stream, &rest);
            }
        }
        if let Some(budget) = &self.budget
            && self.withheld > 0
        {
            tracing::warn!(
                target: "job_output",
                job_id = self.job_id,
                job_name = self.job_name.as_deref(),
                run_id = self.run_id,
                owner_uid = budget.owner,
                withheld = self.withheld,
                limit = %budget.said,
                "lines of this run's output were not sent to the journal (the user's allowance was used up); they are in its log"
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_gate_opens_when_its_opener_is_dropped_and_not_before() {
        assert!(Gate::default().is_open());
        let opener = Opener::new();
        let mut gate = opener.gate();
        let mut early = opener.gate();
        assert!(!gate.is_open());
        let waiting = tokio::time::timeout(std::time::Duration::from_millis(20), early.opened());
        assert!(
            waiting.await.is_err(),
            "the gate opened with its opener alive"
        );
        drop(opener);
        gate.opened().await;
        assert!(gate.is_open());
        early.opened().await;
        assert!(early.is_open());
    }

    /// Collects what the tee logs, through a tracing subscriber of the test's own.
    fn lines(feed: impl FnOnce(&mut JournalTee)) -> Vec<String> {
        use std::sync::{Arc, Mutex};
        #[derive(Clone, Default)]
        struct Sink(Arc<Mutex<Vec<u8>>>);
        impl std::io::Write for Sink {
            fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
                self.0.lock().unwrap().extend_from_slice(buf);
                Ok(buf.len())
            }
            fn flush(&mut self) -> std::io::Result<()> {
                Ok(())
            }
        }
        let sink = Sink::default();
        let writer = sink.clone();
        let subscriber = tracing_subscriber::fmt()
            .with_writer(move || writer.clone())
            .with_ansi(false)
            .without_time()
            .with_target(false)
            .with_level(false)
            .finish();
        tracing::subscriber::with_default(subscriber, || {
            let mut tee = JournalTee::new(7, Some("j".into()), 9, "default".into());
            feed(&mut tee);
        });
        let text = String::from_utf8(sink.0.lock().unwrap().clone()).unwrap();
        text.lines().map(str::to_owned).collect()
    }

    #[test]
    fn output_is_cut_into_lines_per_stream_with_the_jobs_fields() {
        let got = lines(|tee| {
            tee.feed(Stream::Stdout, b"one\ntw");
            tee.feed(Stream::Stderr, b"oops\n");
            tee.feed(Stream::Stdout, b"o\nthree");
        });
        assert_eq!(got.len(), 4, "{got:#?}");
        assert!(got[0].starts_with("one "), "{}", got[0]);
        assert!(got[0].contains("job_id=7") && got[0].contains("run_id=9"));
        assert!(got[0].contains("stream=\"stdout\""), "{}", got[0]);
        assert!(got[1].starts_with("oops ") && got[1].contains("stream=\"stderr\""));
        assert!(got[2].starts_with("two "), "{}", got[2]);
        // The last line has no newline: it goes out when the run ends.
        assert!(got[3].starts_with("three "), "{}", got[3]);
    }

    #[test]
    fn long_lines_are_cut() {
        let got = lines(|tee| tee.feed(Stream::Stdout, &vec![b'x'; LINE_MAX * 2 + 10]));
        assert_eq!(got.len(), 3);
    }
}
