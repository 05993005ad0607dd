//! What the daemon answers. Append new variants at the end only (see the crate docs).

use crate::job::{JobDetail, JobId, JobState, JobSummary, RunId};
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Response {
    Added(Added),
    Jobs(JobPage),
    Job(Box<JobDetail>),
    Cancelled(Cancelled),
    Status(Box<DaemonStatus>),
    Logs(LogChunk),
}

/// A job is stored durably and will run.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Added {
    pub id: JobId,
    /// When it comes due.
    pub due_at_ms: i64,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct JobPage {
    pub jobs: Vec<JobSummary>,
    /// Pass as `after` to get the next page; `None` on the last page.
    pub next: Option<JobId>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Cancelled {
    pub id: JobId,
    /// `cancelled`, or `running` when the job's process was signalled and the job becomes
    /// `cancelled` when it ends.
    pub state: JobState,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DaemonStatus {
    pub daemon_version: String,
    pub protocol_version: u32,
    pub pid: u32,
    pub started_at_ms: i64,
    pub uptime_ms: u64,
    pub state_dir: String,
    pub socket: String,
    pub database_path: String,
    pub database_bytes: u64,
    /// Jobs per state, every state present, in [`JobState::ALL`] order (all users' jobs).
    pub counts: Vec<(JobState, u64)>,
    /// The earliest due time in the timer index.
    pub next_due_at_ms: Option<i64>,
    /// Write transactions committed since start.
    pub commits: u64,
    /// Changes (commands, timer fires, process exits) applied since start.
    pub changes: u64,
    /// Duration of the last commit, in microseconds.
    pub last_commit_us: u64,
    /// Connections open now.
    pub connections: u32,
    /// Most runs in progress at once.
    pub max_running: u32,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LogChunk {
    pub job: JobId,
    pub run: RunId,
    /// The output, possibly only its tail (see `skipped`).
    pub data: Vec<u8>,
    /// Bytes of output before `data` that were not sent.
    pub skipped: u64,
    /// True while the run is still in progress (more output may come).
    pub running: bool,
}
