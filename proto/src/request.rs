//! What a client may ask. Append new variants at the end only (see the crate docs, "Evolving the
//! protocol").

use crate::event::WatchQuery;
use crate::job::{JobId, JobRef, JobState, PauseTarget, RunId, SubmitJob};
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
    /// Longest queue name.
    pub const QUEUE_NAME_MAX: usize = 64;
    /// Longest pause reason.
    pub const REASON_MAX: usize = 512;
    /// Longest cron expression.
    pub const CRON_MAX: usize = 256;
    /// Most firings in one preview.
    pub const PREVIEW_MAX: u32 = 1000;
    /// Most bytes of an edited job file (`chimectl edit`): what fits one request frame with
    /// room for the rest of the request. A job file in `jobs.d` may have a little more (1 MiB).
    pub const JOB_FILE_TEXT_MAX: usize = crate::codec::MAX_REQUEST_FRAME - 4096;
}

/// Everything a client may ask, one variant per operation.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Request {
    /// Store a new job, or replace a named one. Answered with [`crate::Response::Added`] once it
    /// is durable.
    Submit(Box<SubmitJob>),
    /// A page of jobs, in id order. Answered with [`crate::Response::Jobs`].
    List(ListQuery),
    /// One job with its spec and runs. Answered with [`crate::Response::Job`].
    Show(JobRef),
    /// Cancel a job: a scheduled job never runs; a running job's process group gets SIGTERM and
    /// the job is `cancelled` when it ends. Answered with [`crate::Response::Cancelled`] once the
    /// cancel is durable.
    Cancel(JobRef),
    /// The daemon's version, uptime, counts, pauses, storage and limits. Answered with
    /// [`crate::Response::Status`].
    Status,
    /// Output of a run (default: the latest) from a logical offset, by stream. Answered with
    /// [`crate::Response::Logs`].
    Logs(LogsQuery),
    /// The next firings of a job or of a schedule, without storing anything. Answered with
    /// [`crate::Response::Preview`].
    Next(NextQuery),
    /// Pause a job, a queue or everything. Answered with [`crate::Response::Paused`].
    Pause(PauseRequest),
    /// Resume a job, a queue or everything. Answered with [`crate::Response::Resumed`].
    Resume(PauseTarget),
    /// Skip a job's next occurrence. Answered with [`crate::Response::Skipped`].
    Skip(JobRef),
    /// Run a job now, outside its schedule, under its overlap policy. Answered with
    /// [`crate::Response::Triggered`].
    Trigger(JobRef),
    /// Set a queue's limit. Answered with [`crate::Response::Queues`] (that queue).
    SetQueue(QueueSettings),
    /// Every queue that has a setting, jobs, or a pause. Answered with
    /// [`crate::Response::Queues`].
    Queues,
    /// Answer once the job's current or next run has ended and no retry of it is pending (at
    /// once for a finished job). Answered with [`crate::Response::Waited`].
    Wait(WaitQuery),
    /// Send a signal to the process groups of a job's runs. Answered with
    /// [`crate::Response::Killed`].
    Kill(KillRequest),
    /// Run a failed job again now. Answered with [`crate::Response::Triggered`].
    Retry(JobRef),
    /// Remove a job that is not running, with its runs and output. Answered with
    /// [`crate::Response::Removed`].
    Remove(JobRef),
    /// Follow the event log. Answered with [`crate::Response::Watching`], then
    /// [`crate::ServerMessage::Watch`] frames until the client closes the connection. A watch
    /// takes over its connection: requests sent after it are not answered.
    Watch(WatchQuery),
    /// Re-read the configuration file and the job files and apply them (root or chimed's own
    /// user only). Answered with [`crate::Response::Reloaded`], which lists any file that was
    /// refused.
    Reload,
    /// The daemon's metrics in the Prometheus text format. Answered with
    /// [`crate::Response::Metrics`].
    Metrics,
    /// A job's spec as the text of a job file (`jobs.d/NAME.toml`), for `chimectl edit`. A job
    /// declared by a job file is refused (edit that file). Answered with
    /// [`crate::Response::JobFile`].
    JobFile(JobRef),
    /// Replace a job's spec with an edited job file's, as `add --replace` does (same id, owner,
    /// name and history). The text is checked as a job file is, and refused as one is
    /// (`NAME.toml:LINE: field: what`). Answered with [`crate::Response::Added`] once durable.
    Edit(EditJob),
}

/// An edited job file, for [`Request::Edit`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EditJob {
    /// The job, by the id [`crate::JobFile`] gave.
    pub id: JobId,
    /// The job's revision as [`crate::JobFile`] gave it: the edit is refused if the job's spec
    /// changed since (someone else replaced or edited it meanwhile).
    pub revision: u64,
    /// The edited text, at most [`limits::JOB_FILE_TEXT_MAX`] bytes.
    pub text: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LogsQuery {
    pub job: JobRef,
    /// Which run; `None` for the latest.
    pub run: Option<RunId>,
    /// Output from this logical offset (bytes since the run started); `None`: the last
    /// `max_bytes`.
    pub from: Option<u64>,
    /// At most this many bytes (capped at [`limits::LOG_CHUNK_MAX`]).
    pub max_bytes: u64,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WaitQuery {
    pub job: JobRef,
    /// Only a run that started at or after this instant counts (for `add --wait`).
    pub since_ms: Option<i64>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct KillRequest {
    pub job: JobRef,
    /// The signal number (1-64).
    pub signal: i32,
}

/// What `next` previews.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum NextSource {
    Job(JobRef),
    Cron {
        expr: String,
        tz: Option<String>,
    },
    Every {
        interval_ms: u64,
        from_ms: Option<i64>,
    },
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NextQuery {
    pub source: NextSource,
    /// How many firings (capped at 1000).
    pub count: u32,
    /// Firings after this instant (default: now).
    pub from_ms: Option<i64>,
}

/// A filter and a page.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ListQuery {
    /// Only jobs in this state.
    pub state: Option<JobState>,
    /// Only jobs in this queue.
    pub queue: Option<String>,
    /// Only jobs whose name starts with this.
    pub name_prefix: Option<String>,
    /// Only jobs with an id greater than this (the `next` of the previous page).
    pub after: Option<JobId>,
    /// At most this many jobs (0: chimed's default; capped at [`limits::LIST_LIMIT_MAX`]).
    pub limit: u32,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PauseRequest {
    pub target: PauseTarget,
    /// Resume by itself at this instant.
    pub until_ms: Option<i64>,
    /// Resume by itself after this long (from when the daemon stores the pause).
    pub for_ms: Option<u64>,
    pub reason: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct QueueSettings {
    pub name: String,
    /// Most runs at once: `Some(Some(n))` sets it, `Some(None)` removes it, `None` leaves it.
    pub parallel: Option<Option<u32>>,
    /// The queue's resource limits are removed before `limits` are set (`--no-limits`).
    pub clear_limits: bool,
    /// Each limit set here replaces the queue's; those left out stay as they are.
    pub limits: crate::ResourceLimits,
}
