//! Jobs as the protocol shows them: ids, states, commands, schedules and runs.
//!
//! Instants are `i64` milliseconds since the Unix epoch, UTC (fields end in `_ms`). Durations are
//! `u64` milliseconds.

use serde::{Deserialize, Serialize};
use std::fmt;

/// A job's id. Assigned by the daemon, increasing, never reused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct JobId(pub u64);

impl fmt::Display for JobId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

/// A run's id. Assigned by the daemon, increasing across all jobs, never reused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct RunId(pub u64);

impl fmt::Display for RunId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

/// How a request names a job.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum JobRef {
    Id(JobId),
    Name(String),
}

impl JobRef {
    /// Reads a user's argument: all digits is an id, anything else a name. (Names may not be all
    /// digits; the daemon refuses such names.)
    pub fn parse(arg: &str) -> Self {
        match arg.parse::<u64>() {
            Ok(id) => Self::Id(JobId(id)),
            Err(_) => Self::Name(arg.to_owned()),
        }
    }
}

impl fmt::Display for JobRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Id(id) => write!(f, "job {id}"),
            Self::Name(name) => write!(f, "job {name:?}"),
        }
    }
}

/// Where a job is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum JobState {
    /// Waiting for its due time.
    Scheduled,
    /// A run is in progress.
    Running,
    /// The last run exited with code 0. Final.
    Succeeded,
    /// The last run failed (non-zero exit, signal, spawn error, lost, interrupted). Final.
    Failed,
    /// Cancelled by a user before or during its run. Final.
    Cancelled,
    /// Due, waiting for a slot in its queue or for its queue (or everything) to resume.
    Queued,
    /// Paused by a user; nothing new starts until it is resumed.
    Paused,
    /// Its stored record is damaged: kept as it is and never run, until it is removed or the
    /// database restored. Never stored as a state: chimed finds it when it reads the record.
    Damaged,
}

impl JobState {
    /// Every state, in wire order.
    pub const ALL: [JobState; 8] = [
        Self::Scheduled,
        Self::Running,
        Self::Succeeded,
        Self::Failed,
        Self::Cancelled,
        Self::Queued,
        Self::Paused,
        Self::Damaged,
    ];

    /// The lowercase word used in tables, `--json` and filters.
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Scheduled => "scheduled",
            Self::Running => "running",
            Self::Succeeded => "succeeded",
            Self::Failed => "failed",
            Self::Cancelled => "cancelled",
            Self::Queued => "queued",
            Self::Paused => "paused",
            Self::Damaged => "damaged",
        }
    }

    /// Parses the word of [`JobState::as_str`].
    pub fn from_word(word: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|s| s.as_str() == word)
    }

    /// Final states never change again.
    pub const fn is_final(self) -> bool {
        matches!(self, Self::Succeeded | Self::Failed | Self::Cancelled)
    }
}

impl fmt::Display for JobState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What to execute.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Command {
    /// A program and its arguments, executed directly (no shell). `argv[0]` is an absolute path or
    /// is looked up in the job's `PATH`.
    Argv(Vec<String>),
    /// One string given to `/bin/sh -c`.
    Shell(String),
    /// Nothing to execute: a timer for other programs. When it fires, an event is recorded and
    /// sent to watchers, and a run is recorded as `fired`.
    Timer,
}

impl Command {
    /// True for a timer, which spawns nothing.
    pub const fn is_timer(&self) -> bool {
        matches!(self, Self::Timer)
    }
}

impl fmt::Display for Command {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Shell(script) => f.write_str(script),
            Self::Timer => f.write_str("(timer)"),
            Self::Argv(argv) => {
                for (i, arg) in argv.iter().enumerate() {
                    if i > 0 {
                        f.write_str(" ")?;
                    }
                    let plain = !arg.is_empty()
                        && arg
                            .bytes()
                            .all(|b| b.is_ascii_alphanumeric() || b"-_./=:,+@%".contains(&b));
                    if plain {
                        f.write_str(arg)?;
                    } else {
                        write!(f, "'{}'", arg.replace('\'', r"'\''"))?;
                    }
                }
                Ok(())
            }
        }
    }
}

/// How a run ended.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Outcome {
    /// The process exited with this code.
    Exited(i32),
    /// The process was killed by this signal number.
    Signaled(i32),
    /// The process could not be started; the reason.
    SpawnError(String),
    /// The daemon died while the run was in progress; its end is unknown.
    Lost,
    /// The daemon was stopped during the run and ended it (SIGTERM, then SIGKILL after the grace
    /// period).
    Interrupted,
    /// The run outlived its timeout and was ended (SIGTERM, then SIGKILL after the kill grace).
    TimedOut,
    /// A timer fired (nothing was executed). A success.
    Fired,
    /// The kernel's OOM killer ended the run (its memory limit was reached). No signal is
    /// recorded ([`Outcome::signal`] is `None`): the OOM killer's is always SIGKILL.
    OomKilled,
}

impl Outcome {
    /// The exit code, if the process exited.
    pub const fn exit_code(&self) -> Option<i32> {
        match self {
            Self::Exited(code) => Some(*code),
            _ => None,
        }
    }

    /// The signal number, if a signal ended the process.
    pub const fn signal(&self) -> Option<i32> {
        match self {
            Self::Signaled(signal) => Some(*signal),
            _ => None,
        }
    }

    /// A stable lowercase word: `exited`, `killed`, `spawn_error`, `lost`, `interrupted`,
    /// `timed_out`, `fired`, `oom_killed`.
    pub const fn as_str(&self) -> &'static str {
        match self {
            Self::Exited(_) => "exited",
            Self::Signaled(_) => "killed",
            Self::SpawnError(_) => "spawn_error",
            Self::Lost => "lost",
            Self::Interrupted => "interrupted",
            Self::TimedOut => "timed_out",
            Self::Fired => "fired",
            Self::OomKilled => "oom_killed",
        }
    }

    /// Only an exit with code 0 (or a timer's firing) is a success.
    pub const fn is_success(&self) -> bool {
        matches!(self, Self::Exited(0) | Self::Fired)
    }
}

impl fmt::Display for Outcome {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Exited(code) => write!(f, "exited {code}"),
            Self::Signaled(sig) => write!(f, "killed by signal {sig}"),
            Self::SpawnError(why) => write!(f, "spawn error: {why}"),
            Self::Lost => f.write_str("lost"),
            Self::Interrupted => f.write_str("interrupted"),
            Self::TimedOut => f.write_str("timed out"),
            Self::Fired => f.write_str("fired"),
            Self::OomKilled => f.write_str("killed by the OOM killer (memory limit)"),
        }
    }
}

/// The resources each run of a job may take, under the names systemd uses. `None`: no limit of
/// the job's own (the queue's, then `[defaults]`, then none).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ResourceLimits {
    /// `--memory-max`: bytes of memory (`memory.max`); beyond it the run's processes are
    /// reclaimed from, then OOM-killed.
    pub memory_max: Option<u64>,
    /// `--cpu-quota`: percent of one CPU (`cpu.max`): 50 is half a CPU, 200 two CPUs.
    pub cpu_quota_pct: Option<u32>,
    /// `--tasks-max`: processes and threads alive at once (`pids.max`).
    pub tasks_max: Option<u32>,
    /// `--io-weight`: 1 to 10000 (`io.weight`; the kernel's default is 100).
    pub io_weight: Option<u16>,
}

impl ResourceLimits {
    /// No limit set.
    pub fn is_empty(&self) -> bool {
        *self == Self::default()
    }

    /// Each limit this sets, else `under`'s: how a job's own limits go over its queue's, and
    /// those over `[defaults]`.
    pub fn or(&self, under: &ResourceLimits) -> ResourceLimits {
        ResourceLimits {
            memory_max: self.memory_max.or(under.memory_max),
            cpu_quota_pct: self.cpu_quota_pct.or(under.cpu_quota_pct),
            tasks_max: self.tasks_max.or(under.tasks_max),
            io_weight: self.io_weight.or(under.io_weight),
        }
    }

    /// The limits set, in systemd's words, for people: `memory_max=512MiB cpu_quota=50%`;
    /// `none` when none is.
    pub fn describe(&self) -> String {
        let parts: Vec<String> = [
            self.memory_max
                .map(|m| format!("memory_max={}", crate::human::format_size(m))),
            self.cpu_quota_pct.map(|c| format!("cpu_quota={c}%")),
            self.tasks_max.map(|t| format!("tasks_max={t}")),
            self.io_weight.map(|w| format!("io_weight={w}")),
        ]
        .into_iter()
        .flatten()
        .collect();
        if parts.is_empty() {
            "none".into()
        } else {
            parts.join(" ")
        }
    }
}

/// What a run cost, read from its cgroup once everything in it ended. A figure the kernel does
/// not keep on this host (no such controller in the cgroup v2 tree) is `None`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RunUsage {
    /// CPU time in user mode, microseconds (`cpu.stat` `user_usec`).
    pub cpu_user_us: u64,
    /// CPU time in the kernel, microseconds (`cpu.stat` `system_usec`).
    pub cpu_system_us: u64,
    /// The most memory the run's processes held at once (`memory.peak`).
    pub memory_peak_bytes: Option<u64>,
    /// Bytes read from and written to block devices (`io.stat` `rbytes`, `wbytes`).
    pub io_read_bytes: Option<u64>,
    pub io_write_bytes: Option<u64>,
}

/// One run of a job, as `show` reports it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RunInfo {
    pub run: RunId,
    /// 1 for the first run of the job.
    pub attempt: u32,
    pub due_at_ms: i64,
    pub started_at_ms: i64,
    /// `None` while the run is in progress.
    pub finished_at_ms: Option<i64>,
    /// `None` until the process was spawned (and forever when it could not be).
    pub pid: Option<u32>,
    /// `None` while the run is in progress.
    pub outcome: Option<Outcome>,
    /// Bytes of output captured so far.
    pub output_bytes: u64,
    /// What the run cost, read from its cgroup when it ended (`None`: in progress, or it had no
    /// cgroup).
    pub usage: Option<RunUsage>,
    /// A run closed as `lost`: this many processes of it were still running when chimed started
    /// again; they were ended before any retry. `None`: none were found (or the run was not lost).
    pub ended_at_start: Option<u32>,
}

/// When a job's occurrences come due.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum ScheduleSpec {
    /// Once, as soon as it is stored.
    Now,
    /// Once, at an instant (ms since the epoch).
    At(i64),
    /// Once, this many ms after it is stored.
    After(u64),
    /// Every `interval_ms` of elapsed time, anchored at `from_ms` (default: when it is stored).
    Every {
        interval_ms: u64,
        from_ms: Option<i64>,
    },
    /// A cron expression in an IANA zone (default: the zone chimed runs in).
    Cron { expr: String, tz: Option<String> },
}

/// What happens to occurrences missed while chimed was down or the job was paused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum CatchUpPolicy {
    Skip,
    Latest,
    /// Each missed occurrence runs, oldest first, at most `limit` of them.
    All {
        limit: u32,
    },
}

impl CatchUpPolicy {
    pub fn as_str(&self) -> String {
        match self {
            Self::Skip => "skip".into(),
            Self::Latest => "latest".into(),
            Self::All { limit } => format!("all (at most {limit})"),
        }
    }
}

/// What happens when an occurrence comes due while a run of the job is in progress.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum OverlapPolicy {
    Skip,
    Queue,
    Allow,
    Replace,
}

impl OverlapPolicy {
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Skip => "skip",
            Self::Queue => "queue",
            Self::Allow => "allow",
            Self::Replace => "replace",
        }
    }
}

/// What a job is: its command, where and when it runs, and its scheduling policies. The part of
/// a submission ([`SubmitJob`]) that chimed stores as the job's spec; job files declare the same.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct JobSpec {
    /// A name unique among its owner's jobs, or none. 1-128 characters of `[A-Za-z0-9._@:-]`,
    /// not all digits.
    pub name: Option<String>,
    pub command: Command,
    /// Absolute working directory of every run.
    pub cwd: String,
    /// Environment entries set for every run, over the daemon's defaults (`PATH`, `HOME`, `USER`,
    /// `LOGNAME`, `SHELL`, `LANG`, `CHIME_JOB_ID`, `CHIME_RUN_ID`, `CHIME_ATTEMPT`).
    pub env: Vec<(String, String)>,
    pub schedule: ScheduleSpec,
    /// End after this many runs.
    pub count: Option<u32>,
    /// No occurrence after this instant.
    pub until_ms: Option<i64>,
    /// Default: latest.
    pub catch_up: Option<CatchUpPolicy>,
    pub deadline_ms: Option<u64>,
    /// Default: skip.
    pub overlap: Option<OverlapPolicy>,
    /// Default: `default`.
    pub queue: Option<String>,
    /// Swap the spec of the job with this name, keeping its id and history.
    pub replace: bool,
}

impl JobSpec {
    /// A job that runs `command` in `cwd` on `schedule`: no name, no environment of its own, the
    /// default queue and every policy at its default. Set the rest with struct update syntax.
    pub fn new(command: Command, cwd: impl Into<String>, schedule: ScheduleSpec) -> Self {
        Self {
            name: None,
            command,
            cwd: cwd.into(),
            env: Vec::new(),
            schedule,
            count: None,
            until_ms: None,
            catch_up: None,
            deadline_ms: None,
            overlap: None,
            queue: None,
            replace: false,
        }
    }
}

/// A pause, as reported.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PauseInfo {
    pub since_ms: i64,
    pub until_ms: Option<i64>,
    pub reason: Option<String>,
    pub by_uid: u32,
}

/// What a pause or resume applies to.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum PauseTarget {
    All,
    Queue(String),
    Job(JobRef),
}

impl fmt::Display for PauseTarget {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::All => f.write_str("everything"),
            Self::Queue(q) => write!(f, "queue {q:?}"),
            Self::Job(job) => job.fmt(f),
        }
    }
}

/// An occurrence that did not run.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MissedInfo {
    pub due_at_ms: i64,
    pub decided_at_ms: i64,
    /// `catch_up`, `deadline`, `overlap`, `skipped` or `too_many`.
    pub reason: String,
}

/// One row of `ls`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct JobSummary {
    pub id: JobId,
    pub name: Option<String>,
    pub owner_uid: u32,
    pub state: JobState,
    pub command: Command,
    pub created_at_ms: i64,
    /// The next occurrence, when there is one.
    pub next_due_ms: Option<i64>,
    /// When the current run started, or the final state was reached.
    pub since_ms: Option<i64>,
    pub last_outcome: Option<Outcome>,
    pub queue: String,
    /// The schedule, for people: `once`, `every 5m`, `cron "0 3 * * *" Europe/Paris`.
    pub schedule: String,
    /// The schedule, for scripts: what recreates it (`Now` for a damaged record's).
    pub schedule_spec: ScheduleSpec,
    /// Why a `queued` or `paused` job does not run now, in words (the pause that holds it,
    /// until when and why, or the limit that is full); `None` otherwise.
    pub waiting_for: Option<String>,
    pub pause: Option<PauseInfo>,
    pub runs_started: u32,
    /// Runs owed but not started.
    pub owed: u32,
}

/// A queue, as `queue ls` shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct QueueInfo {
    pub name: String,
    /// Most runs at once; `None`: no limit but the daemon's.
    pub parallel: Option<u32>,
    pub running: u32,
    /// Jobs waiting for a slot or for the queue to resume.
    pub waiting: u64,
    pub pause: Option<PauseInfo>,
    /// The resources each run of the queue's jobs may take, unless the job sets its own.
    pub limits: ResourceLimits,
}

/// One firing in a preview.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FireTime {
    pub at_ms: i64,
    /// The zone's UTC offset at that instant, in seconds.
    pub offset_s: i32,
}

/// Outcomes a retry policy may retry.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum RetryOn {
    /// Exited with a non-zero code.
    Exit,
    /// Killed by a signal, or by the OOM killer.
    Killed,
    TimedOut,
    Lost,
    Interrupted,
    SpawnError,
}

impl RetryOn {
    pub const ALL: [RetryOn; 6] = [
        Self::Exit,
        Self::Killed,
        Self::TimedOut,
        Self::Lost,
        Self::Interrupted,
        Self::SpawnError,
    ];

    /// Retried unless `--retry-on` says otherwise: every failure but a spawn error (which a retry
    /// rarely mends).
    pub const DEFAULT: [RetryOn; 5] = [
        Self::Exit,
        Self::Killed,
        Self::TimedOut,
        Self::Lost,
        Self::Interrupted,
    ];

    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Exit => "exit",
            Self::Killed => "killed",
            Self::TimedOut => "timed_out",
            Self::Lost => "lost",
            Self::Interrupted => "interrupted",
            Self::SpawnError => "spawn_error",
        }
    }

    pub fn from_word(word: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|r| r.as_str() == word)
    }

    /// Whether `outcome` is of this kind.
    pub fn matches(self, outcome: &Outcome) -> bool {
        matches!(
            (self, outcome),
            (Self::Exit, Outcome::Exited(code)) if *code != 0
        ) || matches!(
            (self, outcome),
            (Self::Killed, Outcome::Signaled(_) | Outcome::OomKilled)
                | (Self::TimedOut, Outcome::TimedOut)
                | (Self::Lost, Outcome::Lost)
                | (Self::Interrupted, Outcome::Interrupted)
                | (Self::SpawnError, Outcome::SpawnError(_))
        )
    }
}

/// How a job's runs are executed, retried, limited and kept. `None` takes chimed's default.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ExecSpec {
    /// Retries after a failed run of an occurrence; `None`: chimed's default (`[defaults]
    /// retries`, else 0).
    pub retries: Option<u32>,
    /// First retry delay; doubles each attempt (default 10s).
    pub backoff_base_ms: Option<u64>,
    /// Longest retry delay (default 1h).
    pub backoff_max_ms: Option<u64>,
    /// Which outcomes are retried (default: all failures but spawn errors).
    pub retry_on: Option<Vec<RetryOn>>,
    /// A run that lasts longer is ended and recorded as timed out.
    pub timeout_ms: Option<u64>,
    /// Between SIGTERM and SIGKILL when a run is ended (timeout, cancel, replace).
    pub kill_grace_ms: Option<u64>,
    /// Most bytes of output kept per run (the tail is kept).
    pub max_output: Option<u64>,
    /// Most runs kept in the history.
    pub keep_runs: Option<u32>,
    /// How long a finished job is kept before it is removed.
    pub retention_ms: Option<u64>,
    /// The resources each run may take; a limit left out is its queue's, else `[defaults]`'s,
    /// else none.
    pub limits: ResourceLimits,
    /// `--keep-children`: when the run's main process exits, what it left running in its
    /// cgroup is not ended (default: chimed's `[defaults]`, else false).
    pub keep_children: Option<bool>,
}

/// How a job is executed, with every default filled in.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ExecInfo {
    pub retries: u32,
    pub backoff_base_ms: u64,
    pub backoff_max_ms: u64,
    pub retry_on: Vec<RetryOn>,
    pub timeout_ms: Option<u64>,
    pub kill_grace_ms: u64,
    pub max_output: u64,
    pub keep_runs: u32,
    pub retention_ms: u64,
    /// The limits the job's next run gets: its own, else its queue's (as it is now), else
    /// `[defaults]`'s as they were when the job was stored.
    pub limits: ResourceLimits,
    /// What a run's main process leaves running is not ended when it exits.
    pub keep_children: bool,
}

/// Which stream a piece of output came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Stream {
    Stdout,
    Stderr,
}

impl Stream {
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Stdout => "stdout",
            Self::Stderr => "stderr",
        }
    }
}

/// Consecutive output of one stream.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LogSegment {
    pub stream: Stream,
    pub data: Vec<u8>,
}

/// A new job: its spec and how its runs are executed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SubmitJob {
    pub job: JobSpec,
    pub exec: ExecSpec,
    /// Also send each line of the job's output to the journal, with the job's fields.
    pub journal: bool,
}

impl From<JobSpec> for SubmitJob {
    /// A submission of `job` with chimed's defaults for everything else.
    fn from(job: JobSpec) -> Self {
        Self {
            job,
            exec: ExecSpec::default(),
            journal: false,
        }
    }
}

/// Everything `show` reports about a job.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct JobDetail {
    pub summary: JobSummary,
    pub cwd: String,
    pub env: Vec<(String, String)>,
    pub count: Option<u32>,
    pub until_ms: Option<i64>,
    pub catch_up: CatchUpPolicy,
    pub deadline_ms: Option<u64>,
    pub overlap: OverlapPolicy,
    /// True while a cancel of the running job waits for its process to end.
    pub cancelling: bool,
    /// Due times of owed runs, oldest first.
    pub owed: Vec<i64>,
    /// Oldest first.
    pub runs: Vec<RunInfo>,
    pub missed_total: u64,
    /// The most recent missed occurrences, oldest first.
    pub missed: Vec<MissedInfo>,
    pub exec: ExecInfo,
    /// When the next retry starts, if one is pending.
    pub next_retry_ms: Option<i64>,
    /// Output lines also go to the journal.
    pub journal: bool,
    /// The job file that declares the job (`jobs.d/NAME.toml`); `None` for jobs added with
    /// chimectl.
    pub source: Option<String>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_oom_kill_is_a_failure_with_no_code_or_signal() {
        let oom = Outcome::OomKilled;
        assert_eq!(oom.as_str(), "oom_killed");
        assert_eq!(oom.to_string(), "killed by the OOM killer (memory limit)");
        assert!(!oom.is_success());
        assert_eq!((oom.exit_code(), oom.signal()), (None, None));
    }

    #[test]
    fn retry_on_killed_covers_signals_and_the_oom_killer_and_nothing_else_does() {
        let covering: Vec<RetryOn> = RetryOn::ALL
            .into_iter()
            .filter(|kind| kind.matches(&Outcome::OomKilled))
            .collect();
        assert_eq!(covering, [RetryOn::Killed]);
        assert!(RetryOn::Killed.matches(&Outcome::Signaled(9)));
        assert!(!RetryOn::Killed.matches(&Outcome::TimedOut));
    }
}
