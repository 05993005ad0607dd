//! What the daemon answers. Append new variants at the end only (see the crate docs, "Evolving
//! the protocol").

use crate::event::WatchStart;
use crate::job::{
    FireTime, JobDetail, JobId, JobState, JobSummary, LogSegment, PauseInfo, PauseTarget,
    QueueInfo, RunId, RunInfo,
};
use serde::{Deserialize, Serialize};

/// Everything the daemon answers, one variant per kind of answer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Response {
    Added(Added),
    Jobs(JobPage),
    Job(Box<JobDetail>),
    Cancelled(Cancelled),
    Status(Box<DaemonStatus>),
    Logs(LogChunk),
    Preview(Preview),
    Paused(Paused),
    Resumed(Resumed),
    Skipped(Skipped),
    Triggered(Triggered),
    Queues(Vec<QueueInfo>),
    Waited(Waited),
    Killed(Killed),
    Removed(Removed),
    Watching(WatchStart),
    Reloaded(ReloadReport),
    /// The Prometheus text exposition format.
    Metrics(String),
    JobFile(JobFile),
}

/// A job's spec as a job file, for `chimectl edit`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct JobFile {
    pub id: JobId,
    pub name: Option<String>,
    /// The file's name, which refusals of an edit give (`NAME.toml`, or `ID.toml` for a job
    /// without a name).
    pub file_name: String,
    /// Identifies the job's spec as rendered: give it back with the edit
    /// ([`crate::EditJob::revision`]).
    pub revision: u64,
    /// The job file, with a comment header saying which job it is and how to abort.
    pub text: String,
}

/// What a reload did.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReloadReport {
    /// The configuration file read (it may not exist: then every default applies).
    pub config: String,
    /// The job directory read.
    pub jobs_dir: String,
    /// Names of jobs created, updated in place and removed.
    pub added: Vec<String>,
    pub updated: Vec<String>,
    pub removed: Vec<String>,
    /// Declared jobs that did not change.
    pub unchanged: u32,
    /// Files that were refused, each `PATH:LINE: field: what is wrong`. Their previous jobs stay
    /// in effect.
    pub errors: Vec<String>,
    /// Settings that changed in the file but take effect only when chimed restarts.
    pub restart_needed: Vec<String>,
    /// Declarations with nothing left to run (an `until` past, say), each `PATH:LINE: field:
    /// what`: a new one adds no job, a changed one is applied and its job ends. Not errors:
    /// time alone never makes a file that was fine wrong.
    pub warnings: Vec<String>,
}

/// The daemon's state, for `status`.
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
    /// The database file's length.
    pub database_bytes: u64,
    /// The space it takes on disk: less than its length where redb has grown the file ahead of
    /// its pages and not written there yet (a hole).
    pub database_disk_bytes: u64,
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
    pub paused_all: Option<PauseInfo>,
    pub paused_queues: Vec<(String, PauseInfo)>,
    /// The zone recurring jobs use when they name none.
    pub zone: String,
    /// Runs in progress now.
    pub running: u32,
    /// The oldest retained and the newest event's sequence numbers (0: none).
    pub events_oldest: u64,
    pub events_head: u64,
    /// Clients following the event log now.
    pub watchers: u32,
    /// The configuration file and the job directory.
    pub config: String,
    pub jobs_dir: String,
    /// Jobs declared by job files.
    pub declared_jobs: u64,
    /// When the configuration was last applied, and how many files it refused.
    pub last_reload_ms: Option<i64>,
    pub reload_errors: u32,
    /// Changes carried by the last commit.
    pub last_batch: u32,
    /// Whether chimed got its socket from systemd (socket activation).
    pub socket_activated: bool,
    /// What a run of another user's job passes first (the account, its expiry, PAM's account
    /// stack), in words.
    pub account_check: String,
    /// How runs are contained: a cgroup per run, or process groups only (and why).
    pub containment: ContainmentInfo,
    /// The CPU scheduling chimed's engine thread (which fires timers) got, in words:
    /// `realtime (...)` or `normal...` with why.
    pub engine_priority: String,
    /// The limits every user but root and chimed's own user is held to: (setting in
    /// `chimed.toml`'s `[limits]`, its value, and where it was set).
    pub limits: Vec<LimitInfo>,
    /// The open files limit chimed runs with, and the connections it leaves room for.
    pub open_files: u64,
    pub max_connections: u32,
    /// Why commits to the database fail, while they do (the disk is full...): what, where, and
    /// what to do. `None` when all is well.
    pub storage_fault: Option<String>,
    /// Space free on the filesystem of the state directory.
    pub disk_free_bytes: u64,
    /// Stored records (jobs, runs, events) found damaged since chimed started: by the scrub
    /// that reads every record after the start, and by any read since. Each is logged with
    /// the database file, the record and what to do; damaged jobs are also counted in
    /// `counts` as `damaged`.
    pub damaged_records: u64,
    /// The scrub after the start has read every record.
    pub scrubbed: bool,
    /// In a fleet (a PostgreSQL store shared by several chimed): this host's name, and every
    /// host of the fleet. `None` on redb.
    pub fleet: Option<FleetStatus>,
}

/// A fleet's hosts, for `status`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct FleetStatus {
    /// The host answering.
    pub this_host: String,
    pub hosts: Vec<FleetHost>,
}

/// One host of a fleet, for `status`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FleetHost {
    pub host: String,
    /// Its membership's number: it moves on each time the host joins again or is declared gone.
    pub epoch: i64,
    /// How long its lease has left, by the database server's clock (negative: it ended that
    /// long ago, and the host is gone or about to be declared so).
    pub lease_left_ms: i64,
    /// Its runs in progress, as the job set records them.
    pub running: u64,
}

/// How runs are contained, for `status`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ContainmentInfo {
    /// `delegated` (by systemd, `Delegate=yes`), `own` (a root chimed's own subtree) or `off`
    /// (process groups only).
    pub mode: String,
    /// The cgroup under which the runs' cgroups are, when there is one.
    pub cgroup: Option<String>,
    /// The controllers the runs' cgroups have: a limit needs its controller.
    pub controllers: Vec<String>,
    /// In words; with `off`, why.
    pub description: String,
}

/// One limit, for `status`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LimitInfo {
    /// Its key under `[limits]` in `chimed.toml`.
    pub setting: String,
    /// Its value, for people (`16`, `1GiB`, `5m`).
    pub value: String,
    /// `default`, or the file that set it.
    pub source: String,
}

/// Output of a run, by stream, from a logical offset.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LogChunk {
    pub job: JobId,
    pub run: RunId,
    pub segments: Vec<LogSegment>,
    /// The logical offset of the first byte in `segments`.
    pub from: u64,
    /// The offset to ask for next (to follow the output).
    pub next: u64,
    /// Bytes of output dropped because the run exceeded its output cap (always the oldest).
    pub dropped: u64,
    /// True while the run is in progress.
    pub running: bool,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Waited {
    pub id: JobId,
    pub state: JobState,
    /// The run that ended, or the last run of a finished job.
    pub run: Option<RunInfo>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Killed {
    pub id: JobId,
    /// Runs whose process group got the signal.
    pub signalled: u32,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Removed {
    pub id: JobId,
    /// Runs removed with it.
    pub runs: u64,
}

/// The next firings of a schedule.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Preview {
    /// The schedule, for people.
    pub schedule: String,
    /// The zone the offsets are in.
    pub zone: String,
    /// For cron: `wall clock` (fixed hour) or `real time` (wildcard hour); see the DST rule.
    pub dst_rule: Option<String>,
    pub times: Vec<FireTime>,
    /// For a job: what shapes its future beyond the schedule, in words (its count and until,
    /// an occurrence held by a pause, the pauses of the job, its queue or everything, its end).
    pub notes: Vec<String>,
}

/// A page of jobs, in id order.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct JobPage {
    pub jobs: Vec<JobSummary>,
    /// Pass as `after` to get the next page; `None` on the last page.
    pub next: Option<JobId>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Paused {
    pub target: PauseTarget,
    pub pause: PauseInfo,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Resumed {
    pub target: PauseTarget,
    /// Jobs whose held occurrences or owed runs were released.
    pub released: u64,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Skipped {
    pub id: JobId,
    /// The occurrence that will not run.
    pub skipped_due_ms: i64,
    /// The one after it, if any.
    pub next_due_ms: Option<i64>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Triggered {
    pub id: JobId,
    /// `running` when a run started, `queued` when it waits for a slot or its previous run.
    pub state: JobState,
}

/// A job is stored durably and will run.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Added {
    pub id: JobId,
    /// When it comes due.
    pub due_at_ms: i64,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Cancelled {
    pub id: JobId,
    /// `cancelled`, or `running` when the job's process was signalled and the job becomes
    /// `cancelled` when it ends.
    pub state: JobState,
}
