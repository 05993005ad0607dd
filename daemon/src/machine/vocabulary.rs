//! The state machine's vocabulary: what a step takes ([`Event`], [`Ctx`], and a replacing
//! [`Spec`]) and what it gives back ([`Step`] with its [`Action`]s, or a [`Refusal`]).

use crate::job::{CatchUpPolicy, Exec, Job, Ms, OverlapPolicy, PauseInfo, Run, Schedule, State};
use chime_proto::{Command, JobId, JobState, Outcome, RunId};
use jiff::tz::TimeZone;
use std::collections::BTreeMap;

/// Something that happens to a job.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    /// The timer index says the next occurrence is due.
    Fire,
    /// A pause of the queue or of everything ended, or a slot in the queue freed: handle held
    /// occurrences and start owed runs where possible.
    Release,
    /// The runner started a run's process.
    Spawned {
        run: RunId,
        pid: u32,
        started_ms: Ms,
    },
    /// An opened run's process never started (a pause, a cancel or a shutdown took it back):
    /// the run leaves no record and its occurrence is owed again.
    Unstarted { run: RunId },
    /// The runner could not start a run's process.
    SpawnFailed { run: RunId, error: String },
    /// A run's process ended (`Exited` or `Signaled`).
    Exited { run: RunId, outcome: Outcome },
    /// A run's process ended, as the runner saw it: when it started and ended, and its pid (its
    /// start may not have been reported before). A timer's run has no process and no pid.
    Finished {
        run: RunId,
        outcome: Outcome,
        pid: Option<u32>,
        started_ms: Ms,
        ended_ms: Ms,
        /// What the run cost, from its cgroup (`None`: it had none).
        usage: Option<chime_proto::RunUsage>,
    },
    /// The daemon was stopped during the run and ended it.
    Interrupted { run: RunId },
    /// Found open at start: the daemon died during the job's runs. `ended`: how many processes
    /// of each run were still running in its cgroup and were ended at the start (runs without
    /// any are absent); recorded with the run. `host`: the runs lost are those of this fleet
    /// host (`None`: redb's one host, whose runs have none), which started again or was
    /// declared gone; the job's runs on other hosts go on.
    Lost {
        ended: BTreeMap<RunId, u32>,
        host: Option<crate::job::HostId>,
    },
    /// A user cancels the job.
    Cancel,
    /// A user pauses the job.
    Pause(PauseInfo),
    /// A user resumes the job (or its timed pause ended).
    Resume,
    /// A user skips the next occurrence.
    Skip,
    /// A user runs the job now, outside its schedule.
    Trigger,
    /// A user runs a failed job again now.
    Retry,
    /// A user replaces the job's spec (`add --replace`).
    Replace(Box<Spec>),
}

/// The parts of a job a replace swaps, and what a new job is made of.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Spec {
    pub command: Command,
    pub cwd: String,
    pub env: Vec<(String, String)>,
    pub schedule: Schedule,
    pub count: Option<u32>,
    pub until_ms: Option<Ms>,
    pub catch_up: CatchUpPolicy,
    pub deadline_ms: Option<u64>,
    pub overlap: OverlapPolicy,
    pub queue: String,
    pub exec: Exec,
}

impl Spec {
    /// The spec of a stored job.
    pub fn of(job: &Job) -> Self {
        Self {
            command: job.command.clone(),
            cwd: job.cwd.clone(),
            env: job.env.clone(),
            schedule: job.schedule.clone(),
            count: job.count,
            until_ms: job.until_ms,
            catch_up: job.catch_up,
            deadline_ms: job.deadline_ms,
            overlap: job.overlap,
            queue: job.queue.clone(),
            exec: job.exec.clone(),
        }
    }

    /// A fingerprint of the spec, stable across restarts (FNV-1a over its encoding):
    /// `chimectl edit` carries the revision it started from, and is refused when the job's spec
    /// changed since.
    pub fn revision(&self) -> u64 {
        let bytes = postcard::to_stdvec(self).expect("a spec encodes");
        bytes.iter().fold(0xcbf2_9ce4_8422_2325, |hash, byte| {
            (hash ^ u64::from(*byte)).wrapping_mul(0x0100_0000_01b3)
        })
    }

    /// A new job `id` of `owner` (uid and account name) with this spec, created at
    /// `created_ms` and first due at `first_due`: unnamed, declared by no file, nothing run.
    pub fn into_job(self, id: JobId, owner: (u32, String), created_ms: Ms, first_due: Ms) -> Job {
        Job {
            id,
            name: None,
            owner: owner.0,
            owner_name: owner.1,
            created_ms,
            command: self.command,
            cwd: self.cwd,
            env: self.env,
            schedule: self.schedule,
            count: self.count,
            until_ms: self.until_ms,
            catch_up: self.catch_up,
            deadline_ms: self.deadline_ms,
            overlap: self.overlap,
            queue: self.queue,
            exec: self.exec,
            pause: None,
            state: State::scheduled(Some(first_due)),
            runs_started: 0,
            occurrences_started: 0,
            last_outcome: None,
            missed_total: 0,
            missed: Vec::new(),
            source: None,
        }
    }
}

/// What a step needs to know beyond the job.
#[derive(Debug, Clone)]
pub struct Ctx {
    pub now: Ms,
    /// Since when chimed has kept time: its start, or the end of its last stall (see the
    /// engine's `STALL`). Occurrences due before it were missed, as during a downtime.
    pub on_time_since: Ms,
    /// Runs the job's queue may start now; [`step`](super::step) takes the slots it uses.
    pub free_slots: usize,
    /// The job's queue or everything is paused.
    pub queue_paused: bool,
    /// The next run id to allocate; [`step`](super::step) advances it.
    pub next_run: u64,
    /// The zone of cron schedules that name none.
    pub local_tz: TimeZone,
    /// This host, in a fleet: the runs it opens are its own (`None`: redb, one host).
    pub host: Option<crate::job::HostId>,
}

/// What the engine must do once the change is durable.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    /// Start the run's process.
    Spawn { run: RunId },
    /// Ask the run's process group to stop (SIGTERM, then SIGKILL after the grace period).
    Terminate { run: RunId },
}

/// The result of a transition.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Step {
    pub job: Job,
    /// Run records to write: runs that opened, changed or closed.
    pub runs: Vec<Run>,
    /// Run records to delete: runs whose process never started.
    pub unrecorded: Vec<RunId>,
    pub actions: Vec<Action>,
}

/// Why an event does not apply.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    #[error("job {id} has already {state}", id = .0.id, state = past_tense(.0.kind()))]
    Final(Box<Job>),
    #[error("the event is for a run that is not open")]
    Stale,
    #[error("event {event} does not apply to a {state} job")]
    NotApplicable {
        event: &'static str,
        state: JobState,
    },
    #[error("{0}")]
    Invalid(String),
}

pub(super) fn past_tense(state: JobState) -> &'static str {
    match state {
        JobState::Succeeded => "succeeded",
        JobState::Failed => "failed",
        JobState::Cancelled => "been cancelled",
        _ => "changed",
    }
}

pub(super) const fn event_name(event: &Event) -> &'static str {
    match event {
        Event::Fire => "fire",
        Event::Release => "release",
        Event::Spawned { .. } => "spawned",
        Event::Unstarted { .. } => "unstarted",
        Event::SpawnFailed { .. } => "spawn_failed",
        Event::Exited { .. } => "exited",
        Event::Finished { .. } => "finished",
        Event::Interrupted { .. } => "interrupted",
        Event::Lost { .. } => "lost",
        Event::Cancel => "cancel",
        Event::Pause(_) => "pause",
        Event::Resume => "resume",
        Event::Skip => "skip",
        Event::Trigger => "trigger",
        Event::Retry => "retry",
        Event::Replace(_) => "replace",
    }
}
