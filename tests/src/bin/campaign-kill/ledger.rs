//! What the clients were told, and what the checks found wrong.
//!
//! The ledger holds every acknowledgement a client received (a submission's id, a cancel, a
//! pause or resume, a removal) and every request a kill left in doubt (written, never
//! answered: it may or may not have been applied). Each job is changed by the one client that
//! submitted it, so the last request sent about a job says what its state must be.

use chime_proto::{JobDetail, JobState};
use std::collections::{BTreeMap, BTreeSet};

/// What became of a request.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Ack {
    /// Never sent, or refused.
    #[default]
    None,
    /// Answered with success: the change is durable.
    Acked,
    /// Written, but the connection broke before the answer: it may or may not have happened.
    InDoubt,
}

/// A pause or a resume, of a job or a queue.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PauseOp {
    /// `timed`: with `--for`, so it may have ended by itself since.
    Pause {
        timed: bool,
    },
    Resume,
}

/// A submission, as the client made it.
#[derive(Debug, Clone)]
pub struct Submitted {
    pub argv: Vec<String>,
    pub queue: String,
    pub retries: u32,
    pub count: Option<u32>,
    pub recurring: bool,
}

/// A job that reached a final state, as first seen so.
#[derive(Debug, Clone)]
pub struct Settled {
    pub state: JobState,
    pub runs_started: u32,
    pub runs: BTreeSet<u64>,
}

/// One job: what its client was told about it.
#[derive(Debug, Default)]
pub struct Tracked {
    /// `None` for a job found in `ls` that no acknowledged submission created (its submission
    /// was in doubt).
    pub spec: Option<Submitted>,
    pub cancel: Ack,
    /// The job's runs right after its cancel was acknowledged: no other may ever be recorded.
    pub cancel_runs: Option<BTreeSet<u64>>,
    /// The newest event right after its cancel was acknowledged: no run of the job may open
    /// after it. (A run opened before the cancel and taken back before it started leaves no
    /// record, only its `started` event.)
    pub cancel_head: Option<u64>,
    /// The last pause or resume sent for the job.
    pub pause: Option<(PauseOp, Ack)>,
    pub remove: Ack,
    /// The job as `show` gave it just before its removal was sent (it was final then).
    pub snapshot: Option<Box<JobDetail>>,
    pub settled: Option<Settled>,
}

/// The invariants the campaign checks. A violation of any fails the campaign.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Invariant {
    /// An acknowledged job is missing or changed, or an acknowledged removal was undone.
    AckedLost,
    /// A run's process executed, and chimed has no record of that run.
    WithoutRecord,
    /// An occurrence ran again after a run of it succeeded, a run's process started twice, or a
    /// one-shot job ran more than one occurrence.
    DoubleRun,
    /// Retries or occurrences not as the job's policy says: a retry without a cause, a retry
    /// owed that never ran, attempts out of order, more occurrences than `--count`.
    RunPolicy,
    /// A cancel that was acknowledged did not hold, or a run opened after it.
    Cancel,
    /// A run opened while its job, queue or everything was paused, or an acknowledged pause or
    /// resume did not hold.
    Pause,
    /// More runs of a queue at once than its limit, or an acknowledged limit lost.
    QueueLimit,
    /// `status` counts disagree with `ls`.
    StatusVsLs,
    /// A job in a final state changed, or opened a run.
    FinalChanged,
    /// More jobs appeared than submissions left in doubt can explain.
    Phantom,
    /// An id was given to two jobs.
    IdReuse,
    /// A run record and its execution disagree (attempt, exit code), a final job has an open run,
    /// or a run never ended.
    RecordMismatch,
    /// chimed refused to start, or died outside the campaign's kills.
    DaemonStart,
    /// chimed did not answer, or jobs did not finish when all was resumed.
    Liveness,
}

impl Invariant {
    pub const ALL: [Invariant; 14] = [
        Self::AckedLost,
        Self::WithoutRecord,
        Self::DoubleRun,
        Self::RunPolicy,
        Self::Cancel,
        Self::Pause,
        Self::QueueLimit,
        Self::StatusVsLs,
        Self::FinalChanged,
        Self::Phantom,
        Self::IdReuse,
        Self::RecordMismatch,
        Self::DaemonStart,
        Self::Liveness,
    ];

    /// A key for the JSON summary.
    pub const fn key(self) -> &'static str {
        match self {
            Self::AckedLost => "acked_lost",
            Self::WithoutRecord => "executions_without_record",
            Self::DoubleRun => "double_runs",
            Self::RunPolicy => "run_policy",
            Self::Cancel => "cancel",
            Self::Pause => "pause",
            Self::QueueLimit => "queue_limit",
            Self::StatusVsLs => "status_vs_ls",
            Self::FinalChanged => "final_changed",
            Self::Phantom => "phantom_jobs",
            Self::IdReuse => "id_reuse",
            Self::RecordMismatch => "record_mismatch",
            Self::DaemonStart => "daemon_start",
            Self::Liveness => "liveness",
        }
    }

    /// For the report.
    pub const fn label(self) -> &'static str {
        match self {
            Self::AckedLost => "acked lost (jobs and acknowledged changes)",
            Self::WithoutRecord => "executions without record",
            Self::DoubleRun => "double runs",
            Self::RunPolicy => "runs vs retry policy and --count",
            Self::Cancel => "runs or state against an acked cancel",
            Self::Pause => "runs opened while paused, pauses lost",
            Self::QueueLimit => "queue limits exceeded or lost",
            Self::StatusVsLs => "status counts vs ls",
            Self::FinalChanged => "final jobs changed",
            Self::Phantom => "phantom jobs",
            Self::IdReuse => "job ids reused",
            Self::RecordMismatch => "run records vs executions",
            Self::DaemonStart => "daemon refused to start or died",
            Self::Liveness => "hung requests, unfinished jobs",
        }
    }
}

/// Violations found, by invariant, with the first few described.
#[derive(Debug, Default)]
pub struct Violations {
    pub counts: BTreeMap<Invariant, u64>,
    pub examples: Vec<(Invariant, String)>,
    /// The kill cycle the checks are in, for messages.
    pub cycle: usize,
}

/// How many violations of each invariant are described in full.
const EXAMPLES_PER_INVARIANT: u64 = 10;

impl Violations {
    pub fn add(&mut self, invariant: Invariant, what: impl Into<String>) {
        let what = what.into();
        let count = self.counts.entry(invariant).or_default();
        *count += 1;
        if *count <= EXAMPLES_PER_INVARIANT {
            eprintln!(
                "VIOLATION ({}) after kill {}: {what}",
                invariant.key(),
                self.cycle
            );
            self.examples.push((invariant, what));
        }
    }

    pub fn count(&self, invariant: Invariant) -> u64 {
        self.counts.get(&invariant).copied().unwrap_or(0)
    }

    pub fn total(&self) -> u64 {
        self.counts.values().sum()
    }
}

/// Everything the clients were told, and the violations found.
#[derive(Debug, Default)]
pub struct Ledger {
    pub jobs: BTreeMap<u64, Tracked>,
    pub acked_submits: u64,
    /// Acknowledged changes other than submissions, by request.
    pub acks: BTreeMap<&'static str, u64>,
    /// Requests a kill left in doubt, by request.
    pub in_doubt: BTreeMap<&'static str, u64>,
    /// Refusals, by request and code: how many, and the first message.
    pub refusals: BTreeMap<String, (u64, String)>,
    /// The last untimed pause or resume of each queue.
    pub queue_pauses: BTreeMap<String, (PauseOp, Ack)>,
    /// The slowest answer a client waited for, in ms.
    pub slowest_reply_ms: u64,
    pub violations: Violations,
}

impl Ledger {
    pub fn acked(&mut self, request: &'static str) {
        *self.acks.entry(request).or_default() += 1;
    }

    pub fn in_doubt(&mut self, request: &'static str) {
        *self.in_doubt.entry(request).or_default() += 1;
    }

    pub fn refused(&mut self, request: &'static str, refusal: &chime_proto::ErrorReply) {
        let entry = self
            .refusals
            .entry(format!("{request}: {:?}", refusal.code))
            .or_insert_with(|| (0, refusal.message.clone()));
        entry.0 += 1;
    }

    pub fn in_doubt_submits(&self) -> u64 {
        self.in_doubt.get("submit").copied().unwrap_or(0)
    }
}
