//! The daemon's model of a job and its runs: what the state machine transforms and the store
//! keeps.
//!
//! A job has a **schedule** (once, every interval, or cron in a zone) that yields occurrences,
//! **policies** that say what happens to them (catch-up, deadline, overlap, count, until), a
//! **queue**, and an optional **pause**. Its state is either final (succeeded, failed,
//! cancelled) or [`State::Active`], which holds three things the engine tracks:
//!
//! - `next`: the next occurrence not yet handled, either in the timer index (`Scheduled`) or
//!   `Held` because it came due while the job, its queue or everything was paused;
//! - `owed`: runs the job owes but has not started (caught-up occurrences, occurrences queued
//!   behind a running one, runs waiting for a queue slot, retries waiting out their backoff);
//! - `runs`: the runs in progress.
//!
//! An *attempt* is one run of one occurrence: the first run is attempt 1, each retry of that
//! occurrence the next.
//!
//! These types are encoded with postcard in redb; [`crate::store`] documents the layout and how
//! it is versioned.

/// The catch-up and overlap policies and a pause are stored in the shapes the wire carries: one
/// vocabulary, no copies to keep in step (see [`crate::wire`] for the shapes that do differ).
pub use chime_proto::{CatchUpPolicy, OverlapPolicy, PauseInfo};
use chime_proto::{Command, JobId, JobState, Outcome, ResourceLimits, RunId, RunUsage};
use serde::{Deserialize, Serialize};

/// Milliseconds since the Unix epoch, UTC.
pub type Ms = i64;

/// The current wall-clock time in [`Ms`].
pub fn now_ms() -> Ms {
    jiff::Timestamp::now().as_millisecond()
}

/// How many missed or skipped occurrences a job remembers (the total is counted too).
pub const MISSED_KEPT: usize = 20;

/// Most runs a job may owe at once; occurrences beyond it are recorded as missed.
pub const OWED_MAX: usize = 1000;

/// A job as stored.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Job {
    pub id: JobId,
    pub name: Option<String>,
    /// The uid of the user who submitted it (from `SO_PEERCRED`); runs execute as this user.
    pub owner: u32,
    /// The owner's account name when the job was stored. Before each run of another user's job
    /// a root chimed checks that the uid still belongs to this account (a deleted user's uid may
    /// be given to someone else) and that the account may run jobs ([`crate::as_user::account`]).
    pub owner_name: String,
    pub created_ms: Ms,
    pub command: Command,
    pub cwd: String,
    /// Explicit environment entries, applied over the defaults at each run.
    pub env: Vec<(String, String)>,
    pub schedule: Schedule,
    /// Stop after this many runs have started.
    pub count: Option<u32>,
    /// No occurrence after this instant.
    pub until_ms: Option<Ms>,
    pub catch_up: CatchUpPolicy,
    /// An occurrence that cannot start within this long of its due time is missed.
    pub deadline_ms: Option<u64>,
    pub overlap: OverlapPolicy,
    pub queue: String,
    /// Retries, timeout, output cap and retention.
    pub exec: Exec,
    /// A job-level pause; nothing new starts while it is set.
    pub pause: Option<PauseInfo>,
    pub state: State,
    /// Runs started so far, retries included.
    pub runs_started: u32,
    /// Scheduled occurrences started so far (first attempts, not manual runs): what `count`
    /// limits.
    pub occurrences_started: u32,
    /// How the most recent run ended.
    pub last_outcome: Option<Outcome>,
    /// Occurrences that did not run, in all.
    pub missed_total: u64,
    /// The most recent of them ([`MISSED_KEPT`]), oldest first.
    pub missed: Vec<Missed>,
    /// The job file that declares this job (`None`: added with chimectl). Reloads manage such
    /// jobs and leave the others alone.
    pub source: Option<Source>,
}

/// Where a declared job comes from.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Source {
    /// The job file.
    pub path: String,
    /// The declaration as last applied (an encoding of everything the file and the defaults
    /// decided): a reload updates the job exactly when this changes.
    pub digest: Vec<u8>,
}

impl Job {
    /// The job file that declares this job.
    pub fn source_path(&self) -> Option<&str> {
        self.source.as_ref().map(|s| s.path.as_str())
    }
}

/// When occurrences come due. See [`crate::schedule`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Schedule {
    /// One occurrence.
    Once { at_ms: Ms },
    /// `anchor + k * interval`, exact elapsed time.
    Every { anchor_ms: Ms, interval_ms: u64 },
    /// A cron expression in a zone (`None`: the zone chimed runs in).
    Cron { expr: String, tz: Option<String> },
}

impl Schedule {
    pub const fn is_recurring(&self) -> bool {
        !matches!(self, Self::Once { .. })
    }
}

/// How a job's runs are executed, retried, limited and kept. Defaults are resolved when the job
/// is submitted, so a later change of chimed's defaults does not change stored jobs.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Exec {
    /// Retries after a failed attempt of an occurrence.
    pub retries: u32,
    /// The first retry waits this long; each further one twice as long, up to `backoff_max_ms`,
    /// plus up to 10% jitter.
    pub backoff_base_ms: u64,
    pub backoff_max_ms: u64,
    /// Which outcomes are retried: a bit per [`chime_proto::RetryOn`] in `ALL` order.
    pub retry_on: u8,
    pub timeout_ms: Option<u64>,
    pub kill_grace_ms: u64,
    /// Most bytes of output kept per run (the tail).
    pub max_output: u64,
    /// Most runs kept in the history.
    pub keep_runs: u32,
    /// A finished job is removed this long after it finished.
    pub retention_ms: u64,
    /// Each line of output also goes to the journal, with the job's fields.
    pub journal: bool,
    /// The resources each run may take, as the job itself set them. A limit it leaves out is
    /// its queue's, looked up when each run is opened, so that a change of the queue applies to
    /// later runs ([`Exec::run_limits`]).
    pub limits: ResourceLimits,
    /// `[defaults]`' limits when the job was stored: what a run gets for a limit neither the
    /// job nor its queue sets.
    pub default_limits: ResourceLimits,
    /// What a run's main process leaves running in its cgroup is not ended when it exits.
    pub keep_children: bool,
}

/// What a queue limits, as `[queues.NAME]` in `chimed.toml` or `chimectl queue set` gives it.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct QueueLimits {
    /// Most runs at once; `None`: only the daemon's limit.
    pub parallel: Option<u32>,
    /// The resources each run of the queue's jobs may take, where the job sets none.
    pub limits: ResourceLimits,
}

/// The defaults chimed is built with (its options may override them for new jobs).
pub mod defaults {
    pub const BACKOFF_BASE_MS: u64 = 10_000;
    pub const BACKOFF_MAX_MS: u64 = 3_600_000;
    pub const KILL_GRACE_MS: u64 = 10_000;
    pub const MAX_OUTPUT: u64 = 8 * 1024 * 1024;
    pub const KEEP_RUNS: u32 = 100;
    pub const RETENTION_MS: u64 = 7 * 86_400_000;
}

impl Exec {
    /// The bit of `retry_on` for `kind`.
    pub fn retry_bit(kind: chime_proto::RetryOn) -> u8 {
        let index = chime_proto::RetryOn::ALL
            .iter()
            .position(|k| *k == kind)
            .expect("every kind is in ALL");
        1 << index
    }

    /// Whether an attempt that ended with `outcome` is retried by this policy.
    pub fn retries_outcome(&self, outcome: &Outcome) -> bool {
        chime_proto::RetryOn::ALL
            .iter()
            .any(|kind| self.retry_on & Self::retry_bit(*kind) != 0 && kind.matches(outcome))
    }

    /// The limits of a run of this job in a queue whose limits are `queue`: each the job's own,
    /// else the queue's, else `[defaults]`', else none.
    pub fn run_limits(&self, queue: &ResourceLimits) -> ResourceLimits {
        self.limits.or(queue).or(&self.default_limits)
    }

    /// The kinds in `retry_on`.
    pub fn retry_kinds(&self) -> Vec<chime_proto::RetryOn> {
        chime_proto::RetryOn::ALL
            .into_iter()
            .filter(|kind| self.retry_on & Self::retry_bit(*kind) != 0)
            .collect()
    }

    /// The delay before retry number `retry` (1 for the first) of run `seed`: `base * 2^(n-1)`,
    /// capped at the maximum, plus up to 10% jitter derived from `seed` (so it is reproducible).
    pub fn backoff_ms(&self, retry: u32, seed: u64) -> u64 {
        let doubled = self.backoff_base_ms.saturating_mul(
            1u64.checked_shl(retry.saturating_sub(1))
                .unwrap_or(u64::MAX),
        );
        let delay = doubled.min(self.backoff_max_ms);
        // A cheap, well-mixed hash of the seed (splitmix64's finaliser).
        let mut x = seed.wrapping_add(0x9e37_79b9_7f4a_7c15);
        x = (x ^ (x >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        x = (x ^ (x >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        x ^= x >> 31;
        delay.saturating_add(x % (delay / 10 + 1))
    }
}

impl Default for Exec {
    fn default() -> Self {
        Self {
            retries: 0,
            backoff_base_ms: defaults::BACKOFF_BASE_MS,
            backoff_max_ms: defaults::BACKOFF_MAX_MS,
            retry_on: chime_proto::RetryOn::DEFAULT
                .iter()
                .fold(0, |bits, kind| bits | Self::retry_bit(*kind)),
            timeout_ms: None,
            kill_grace_ms: defaults::KILL_GRACE_MS,
            max_output: defaults::MAX_OUTPUT,
            keep_runs: defaults::KEEP_RUNS,
            retention_ms: defaults::RETENTION_MS,
            journal: false,
            limits: ResourceLimits::default(),
            default_limits: ResourceLimits::default(),
            keep_children: false,
        }
    }
}

/// Runs opened and waiting in the runner for a slot, per job (the runner's, see
/// [`crate::runner::View`]): the database cannot tell them from runs whose start is not recorded
/// yet, so queries ask the runner to show such jobs honestly ([`Job::shown`]).
pub type Waiting = std::collections::HashMap<JobId, usize>;

/// A run owed but not started.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub struct Owed {
    /// The occurrence it runs for.
    pub due_ms: Ms,
    /// 1 for the first run of the occurrence, then each retry.
    pub attempt: u32,
    /// Not before this instant (a retry's backoff); the due time otherwise.
    pub not_before_ms: Ms,
    /// Asked for by a user (`trigger`, `retry`): outside the schedule, not counted by `count`.
    pub manual: bool,
}

impl Owed {
    /// The first attempt of a scheduled occurrence.
    pub const fn first(due_ms: Ms) -> Self {
        Self {
            due_ms,
            attempt: 1,
            not_before_ms: due_ms,
            manual: false,
        }
    }

    /// A run a user asked for at `now`.
    pub const fn manual(now: Ms) -> Self {
        Self {
            manual: true,
            ..Self::first(now)
        }
    }
}

/// An occurrence that did not run, and why.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Missed {
    pub due_ms: Ms,
    /// When chimed decided.
    pub at_ms: Ms,
    pub reason: MissedReason,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum MissedReason {
    /// Came due while chimed was down or stalled, or the job was paused; the catch-up policy
    /// dropped it.
    CatchUp,
    /// Could not start within the deadline.
    Deadline,
    /// Came due while a run was in progress and the overlap policy is skip.
    Overlap,
    /// Skipped by `chimectl skip`.
    Skipped,
    /// The job already owed [`OWED_MAX`] runs.
    TooMany,
}

impl MissedReason {
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::CatchUp => "catch_up",
            Self::Deadline => "deadline",
            Self::Overlap => "overlap",
            Self::Skipped => "skipped",
            Self::TooMany => "too_many",
        }
    }
}

/// Where a job is, with the data that belongs to that place.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum State {
    Active {
        next: Next,
        /// Runs owed but not started, oldest occurrence first.
        owed: Vec<Owed>,
        /// Runs in progress, oldest first.
        runs: Vec<OpenRun>,
        /// When an owed retry may start: the job is in the timer index for it.
        wake: Option<Ms>,
        /// Owed runs wait for a slot in the queue, or for the queue or everything to resume:
        /// the job is in the waiting index.
        waiting: bool,
        /// A cancel is in progress: the runs were signalled, nothing new starts.
        cancelling: bool,
    },
    Succeeded {
        at_ms: Ms,
    },
    Failed {
        at_ms: Ms,
    },
    Cancelled {
        at_ms: Ms,
    },
}

/// The next occurrence of an active job.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Next {
    /// No more occurrences.
    None,
    /// In the timer index at this due time.
    Scheduled(Ms),
    /// Came due at this time while the job, its queue or everything was paused; handled when the
    /// pause ends.
    Held(Ms),
}

/// A run in progress.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OpenRun {
    pub run: RunId,
    pub attempt: u32,
    pub due_ms: Ms,
    /// When its process started; until that is recorded, when the run was opened.
    pub started_ms: Ms,
    /// `None` until the process's start is recorded (it may be waiting for a slot, or started
    /// moments ago).
    pub pid: Option<u32>,
    /// Asked for by a user (see [`Owed::manual`]).
    pub manual: bool,
    /// The fleet host that opened it and runs its process (PostgreSQL store); `None` on redb,
    /// where there is one host.
    pub host: Option<HostId>,
}

/// A fleet host's name (`--host-id`), shared by the runs it opens.
pub type HostId = std::sync::Arc<str>;

impl State {
    /// A new active job whose first occurrence is `due`.
    pub fn scheduled(due: Option<Ms>) -> Self {
        Self::Active {
            next: due.map_or(Next::None, Next::Scheduled),
            owed: Vec::new(),
            runs: Vec::new(),
            wake: None,
            waiting: false,
            cancelling: false,
        }
    }

    pub const fn is_final(&self) -> bool {
        !matches!(self, Self::Active { .. })
    }

    /// The timer-index key: the next scheduled occurrence or the time an owed retry may start,
    /// whichever comes first.
    pub fn due_ms(&self) -> Option<Ms> {
        match self {
            Self::Active { next, wake, .. } => {
                let scheduled = match next {
                    Next::Scheduled(due) => Some(*due),
                    _ => None,
                };
                scheduled.into_iter().chain(*wake).min()
            }
            _ => None,
        }
    }

    /// The next scheduled occurrence.
    pub fn next_occurrence(&self) -> Option<Ms> {
        match self {
            Self::Active {
                next: Next::Scheduled(due) | Next::Held(due),
                ..
            } => Some(*due),
            _ => None,
        }
    }

    /// The final state's instant.
    pub fn finished_ms(&self) -> Option<Ms> {
        match self {
            Self::Succeeded { at_ms } | Self::Failed { at_ms } | Self::Cancelled { at_ms } => {
                Some(*at_ms)
            }
            Self::Active { .. } => None,
        }
    }

    /// The waiting-index key: present exactly when the job waits for its queue.
    pub fn waiting_ms(&self) -> Option<Ms> {
        match self {
            Self::Active {
                waiting: true,
                next,
                owed,
                ..
            } => {
                let held = match next {
                    Next::Held(due) => Some(*due),
                    _ => None,
                };
                owed.first().map(|o| o.due_ms).into_iter().chain(held).min()
            }
            _ => None,
        }
    }

    /// The runs in progress.
    pub fn runs(&self) -> &[OpenRun] {
        match self {
            Self::Active { runs, .. } => runs,
            _ => &[],
        }
    }

    /// Whether another attempt of `run`'s occurrence is owed after it: a retry, or the same
    /// attempt again when `run` was lost before its start was recorded. A wait for `run`'s
    /// occurrence is not over then.
    pub fn owes_again(&self, run: &Run) -> bool {
        let lost = run.outcome == Some(chime_proto::Outcome::Lost);
        match self {
            Self::Active { owed, .. } => owed.iter().any(|o| {
                o.due_ms == run.due_ms
                    && (o.attempt > run.attempt || (lost && o.attempt == run.attempt))
            }),
            _ => false,
        }
    }
}

impl Job {
    /// The state the protocol shows (and the `states` index holds).
    pub fn kind(&self) -> JobState {
        match &self.state {
            State::Succeeded { .. } => JobState::Succeeded,
            State::Failed { .. } => JobState::Failed,
            State::Cancelled { .. } => JobState::Cancelled,
            State::Active {
                runs,
                waiting,
                owed,
                ..
            } => {
                if !runs.is_empty() {
                    JobState::Running
                } else if self.pause.is_some() {
                    JobState::Paused
                } else if *waiting || !owed.is_empty() {
                    JobState::Queued
                } else {
                    JobState::Scheduled
                }
            }
        }
    }

    /// The state users are shown: [`Job::kind`], except that a job whose open runs all wait in
    /// the runner for a slot (opened ahead of a busy queue's free slots, see
    /// [`crate::engine::batch::admission`]) is `queued`: no process of it runs yet.
    pub fn shown(&self, waiting: &Waiting) -> JobState {
        match self.kind() {
            JobState::Running
                if waiting
                    .get(&self.id)
                    .is_some_and(|n| *n >= self.state.runs().len()) =>
            {
                JobState::Queued
            }
            kind => kind,
        }
    }

    /// Records an occurrence that did not run.
    pub fn record_missed(&mut self, due_ms: Ms, at_ms: Ms, reason: MissedReason) {
        self.missed_total += 1;
        if self.missed.len() == MISSED_KEPT {
            self.missed.remove(0);
        }
        self.missed.push(Missed {
            due_ms,
            at_ms,
            reason,
        });
    }
}

/// One run of a job, as stored in the run history.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Run {
    pub id: RunId,
    pub job: JobId,
    pub attempt: u32,
    pub due_ms: Ms,
    pub started_ms: Ms,
    pub finished_ms: Option<Ms>,
    pub pid: Option<u32>,
    pub outcome: Option<Outcome>,
    /// What the run cost, read from its cgroup by the runner when it ended (`None`: in progress,
    /// or it had no cgroup).
    pub usage: Option<RunUsage>,
    /// Closed as `lost` at a start of chimed: how many of its processes were still running in
    /// its cgroup then, and were ended before any retry (`None`: none were found).
    pub ended_at_start: Option<u32>,
    /// The fleet host that ran it (see [`OpenRun::host`]).
    pub host: Option<HostId>,
}
