//! The one vocabulary between what chimed stores and what it sends: conversions from stored
//! shapes ([`crate::job`]) to wire shapes ([`chime_proto`]).

use crate::job::{Job, Next, Pause, Run, State, Waiting};
use crate::schedule::describe;
use chime_proto::{Command, JobSummary, PauseInfo, RunInfo};

/// A command as one line for the log, at most 1 KiB: an argv with its words quoted where they
/// need it, or a shell command as it is.
pub fn command_line(command: &Command) -> String {
    const MAX: usize = 1024;
    let mut line = match command {
        Command::Argv(argv) => argv
            .iter()
            .map(|word| {
                if !word.is_empty()
                    && word
                        .chars()
                        .all(|c| c.is_ascii_alphanumeric() || "/._-=:,+@%".contains(c))
                {
                    word.clone()
                } else {
                    format!("'{}'", word.replace('\'', "'\\''"))
                }
            })
            .collect::<Vec<_>>()
            .join(" "),
        Command::Shell(script) => script.clone(),
        Command::Timer => "(timer)".into(),
    };
    if line.len() > MAX {
        let mut end = MAX;
        while !line.is_char_boundary(end) {
            end -= 1;
        }
        line.truncate(end);
        line.push_str("...");
    }
    line
}

pub fn pause_info(pause: &Pause) -> PauseInfo {
    PauseInfo {
        since_ms: pause.since_ms,
        until_ms: pause.until_ms,
        reason: pause.reason.clone(),
        by_uid: pause.by_uid,
    }
}

/// A run for a reply, without reading its output size.
pub fn run_info(run: Run) -> RunInfo {
    RunInfo {
        output_bytes: 0,
        run: run.id,
        attempt: run.attempt,
        due_at_ms: run.due_ms,
        started_at_ms: run.started_ms,
        finished_at_ms: run.finished_ms,
        pid: run.pid,
        outcome: run.outcome,
    }
}

/// When the job's current run started, or it reached its final state.
fn since(job: &Job) -> Option<i64> {
    match &job.state {
        State::Active { runs, .. } => runs.iter().map(|r| r.started_ms).min(),
        State::Succeeded { at_ms } | State::Failed { at_ms } | State::Cancelled { at_ms } => {
            Some(*at_ms)
        }
    }
}

/// The next occurrence, scheduled or held.
fn next_due(job: &Job) -> Option<i64> {
    match &job.state {
        State::Active { next, wake, .. } => {
            let next = match next {
                Next::Scheduled(due) | Next::Held(due) => Some(*due),
                _ => None,
            };
            // A retry waiting out its backoff is due then too.
            next.into_iter().chain(*wake).min()
        }
        _ => None,
    }
}

/// The row of a job whose record is damaged: its id, its owner by the index (`u32::MAX` when
/// even that is lost) and the state `damaged`; `show` says what and where.
pub fn damaged_summary(id: chime_proto::JobId, owner: Option<u32>) -> JobSummary {
    JobSummary {
        id,
        name: None,
        owner_uid: owner.unwrap_or(u32::MAX),
        state: chime_proto::JobState::Damaged,
        command: chime_proto::Command::Argv(Vec::new()),
        created_at_ms: 0,
        next_due_ms: None,
        since_ms: None,
        last_outcome: None,
        queue: String::new(),
        schedule: String::new(),
        pause: None,
        runs_started: 0,
        owed: 0,
    }
}

/// The row of a job; `waiting` is the runner's (see [`Job::shown`]).
pub fn summary(job: &Job, waiting: &Waiting) -> JobSummary {
    JobSummary {
        id: job.id,
        name: job.name.clone(),
        owner_uid: job.owner,
        state: job.shown(waiting),
        command: job.command.clone(),
        created_at_ms: job.created_ms,
        next_due_ms: next_due(job),
        since_ms: since(job),
        last_outcome: job.last_outcome.clone(),
        queue: job.queue.clone(),
        schedule: describe(&job.schedule),
        pause: job.pause.as_ref().map(pause_info),
        runs_started: job.runs_started,
        owed: match &job.state {
            State::Active { owed, .. } => owed.len() as u32,
            _ => 0,
        },
    }
}
