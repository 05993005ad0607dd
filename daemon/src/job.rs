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
//! - `owed`: the due times of runs the job owes but has not started (caught-up occurrences,
//!   occurrences queued behind a running one, runs waiting for a queue slot);
//! - `runs`: the runs in progress.
//!
//! These types are encoded with postcard in redb; [`crate::store`] documents the layout and how
//! it is versioned.

use chime_proto::{Command, JobId, JobState, Outcome, RunId};
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
    pub catch_up: CatchUp,
    /// An occurrence that cannot start within this long of its due time is missed.
    pub deadline_ms: Option<u64>,
    pub overlap: Overlap,
    pub queue: String,
    /// A job-level pause; nothing new starts while it is set.
    pub pause: Option<Pause>,
    pub state: State,
    /// Runs started so far; the next run is attempt `runs_started + 1`.
    pub runs_started: u32,
    /// How the most recent run ended.
    pub last_outcome: Option<Outcome>,
    /// Occurrences that did not run, in all.
    pub missed_total: u64,
    /// The most recent of them ([`MISSED_KEPT`]), oldest first.
    pub missed: Vec<Missed>,
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

/// What happens to occurrences missed while chimed was down or the job was paused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum CatchUp {
    /// None of them runs.
    Skip,
    /// One run stands for all of them.
    Latest,
    /// Each runs, oldest first, at most `limit`.
    All { limit: u32 },
}

/// What happens when an occurrence comes due while a run of the job is in progress.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Overlap {
    /// The occurrence is skipped.
    Skip,
    /// It runs when the current run ends.
    Queue,
    /// It runs at once, beside the current run.
    Allow,
    /// The current run is terminated; the occurrence runs when it has ended.
    Replace,
}

/// A pause of a job, a queue or everything.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Pause {
    pub since_ms: Ms,
    /// Resumes by itself at this instant.
    pub until_ms: Option<Ms>,
    pub reason: Option<String>,
    pub by_uid: u32,
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
    /// Came due while chimed was down or the job was paused; the catch-up policy dropped it.
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
        /// Due times of runs owed but not started, oldest first.
        owed: Vec<Ms>,
        /// Runs in progress, oldest first.
        runs: Vec<OpenRun>,
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
    pub started_ms: Ms,
    /// `None` between the commit that opened the run and the one that records the process.
    pub pid: Option<u32>,
}

impl State {
    /// A new active job whose first occurrence is `due`.
    pub fn scheduled(due: Option<Ms>) -> Self {
        Self::Active {
            next: due.map_or(Next::None, Next::Scheduled),
            owed: Vec::new(),
            runs: Vec::new(),
            waiting: false,
            cancelling: false,
        }
    }

    pub const fn is_final(&self) -> bool {
        !matches!(self, Self::Active { .. })
    }

    /// The timer-index key: present exactly when the next occurrence is scheduled.
    pub fn due_ms(&self) -> Option<Ms> {
        match self {
            Self::Active {
                next: Next::Scheduled(due),
                ..
            } => Some(*due),
            _ => None,
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
                owed.first().copied().into_iter().chain(held).min()
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
}
