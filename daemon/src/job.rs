//! The daemon's model of a job and its runs: what the state machine transforms and the store
//! keeps.
//!
//! State variants carry their own data (a running job has its run id, start time and pid), so
//! combinations that make no sense, such as a succeeded job with a due time, cannot be stored.
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
    pub state: State,
    /// Runs started so far; the next run is attempt `attempts + 1`.
    pub attempts: u32,
    /// How the most recent run ended.
    pub last_outcome: Option<Outcome>,
}

/// Where a job is, with the data that belongs to that place.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum State {
    /// In the timer index at `due_ms`.
    Scheduled {
        due_ms: Ms,
    },
    /// A run is open. `pid` is `None` between the commit that opened the run and the commit that
    /// records the spawned process.
    Running {
        run: RunId,
        due_ms: Ms,
        started_ms: Ms,
        pid: Option<u32>,
        cancel_requested: bool,
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

impl State {
    /// The protocol's name for this state.
    pub const fn kind(&self) -> JobState {
        match self {
            Self::Scheduled { .. } => JobState::Scheduled,
            Self::Running { .. } => JobState::Running,
            Self::Succeeded { .. } => JobState::Succeeded,
            Self::Failed { .. } => JobState::Failed,
            Self::Cancelled { .. } => JobState::Cancelled,
        }
    }

    /// The timer-index key of a job in this state: present exactly when it is scheduled.
    pub const fn due_ms(&self) -> Option<Ms> {
        match self {
            Self::Scheduled { due_ms } => Some(*due_ms),
            _ => None,
        }
    }

    /// The open run, present exactly when the job is running.
    pub const fn open_run(&self) -> Option<RunId> {
        match self {
            Self::Running { run, .. } => Some(*run),
            _ => None,
        }
    }

    pub const fn is_final(&self) -> bool {
        self.kind().is_final()
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
