//! What a client may ask. Append new variants at the end only (see the crate docs).

use crate::job::{JobId, JobRef, JobSpec, JobState, RunId};
use serde::{Deserialize, Serialize};

/// Limits every request is held to. The daemon enforces them; clients check them first to give a
/// better message.
pub mod limits {
    /// Longest job name.
    pub const NAME_MAX: usize = 128;
    /// Most argv entries.
    pub const ARGV_MAX: usize = 4096;
    /// Most environment entries.
    pub const ENV_MAX: usize = 1024;
    /// Total bytes of argv (or the shell string), environment and working directory together.
    pub const SPEC_BYTES_MAX: usize = 256 * 1024;
    /// Most jobs in one `List` page.
    pub const LIST_LIMIT_MAX: u32 = 10_000;
    /// Most bytes of output in one `Logs` reply.
    pub const LOG_CHUNK_MAX: u64 = 4 * 1024 * 1024;
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Request {
    /// Store a new job. Answered with [`crate::Response::Added`] once it is durable.
    Add(JobSpec),
    /// A page of jobs, in id order. Answered with [`crate::Response::Jobs`].
    List(ListJobs),
    /// One job with its runs. Answered with [`crate::Response::Job`].
    Show(JobRef),
    /// Cancel a job: a scheduled job never runs; a running job's process group gets SIGTERM and
    /// the job is `cancelled` when it ends. Answered with [`crate::Response::Cancelled`] once the
    /// cancel is durable.
    Cancel(JobRef),
    /// The daemon's version, uptime, counts and storage. Answered with [`crate::Response::Status`].
    Status,
    /// Output of one run (default: the latest). Answered with [`crate::Response::Logs`].
    Logs(LogsRequest),
}

/// A filter and a page.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ListJobs {
    /// Only jobs in this state.
    pub state: Option<JobState>,
    /// Only jobs with an id greater than this (the `next` of the previous page).
    pub after: Option<JobId>,
    /// At most this many jobs (capped at [`limits::LIST_LIMIT_MAX`]).
    pub limit: u32,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LogsRequest {
    pub job: JobRef,
    /// Which run; `None` for the latest.
    pub run: Option<RunId>,
    /// At most this many bytes, from the end of the output (capped at [`limits::LOG_CHUNK_MAX`]).
    pub max_bytes: u64,
}
