//! The one vocabulary between what chimed stores and what it sends: every conversion from a
//! stored shape ([`crate::job`]) to a wire shape ([`chime_proto`]) is here. Shapes that are the
//! same on disk and on the wire (the catch-up and overlap policies, a pause) are not converted
//! at all: [`crate::job`] stores the proto types themselves.

use crate::job::{Job, Next, Run, State, Waiting};
use crate::schedule::describe;
use chime_proto::{Command, ExecInfo, JobDetail, JobSummary, MissedInfo, RunInfo};

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
        usage: run.usage,
        ended_at_start: run.ended_at_start,
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
        schedule_spec: chime_proto::ScheduleSpec::Now,
        waiting_for: None,
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
        schedule_spec: match &job.schedule {
            crate::job::Schedule::Once { at_ms } => chime_proto::ScheduleSpec::At(*at_ms),
            crate::job::Schedule::Every {
                anchor_ms,
                interval_ms,
            } => chime_proto::ScheduleSpec::Every {
                interval_ms: *interval_ms,
                from_ms: Some(*anchor_ms),
            },
            crate::job::Schedule::Cron { expr, tz } => chime_proto::ScheduleSpec::Cron {
                expr: expr.clone(),
                tz: tz.clone(),
            },
        },
        // Filled in by the request, which knows the queues and the runner (see `waits`).
        waiting_for: None,
        pause: job.pause.clone(),
        runs_started: job.runs_started,
        owed: match &job.state {
            State::Active { owed, .. } => owed.len() as u32,
            _ => 0,
        },
    }
}

fn cancelling(job: &Job) -> bool {
    matches!(
        job.state,
        State::Active {
            cancelling: true,
            ..
        }
    )
}

/// A job as `show` answers it, with its runs (read apart: their output sizes are on disk) and
/// the resource limits of its queue as they are now (what its next run would take).
pub fn job_detail(
    found: &Job,
    runs: Vec<RunInfo>,
    waiting: &Waiting,
    queue_limits: &chime_proto::ResourceLimits,
) -> JobDetail {
    let exec = &found.exec;
    let next_retry_ms = match &found.state {
        State::Active { owed, .. } => owed
            .iter()
            .filter(|o| o.attempt > 1)
            .map(|o| o.not_before_ms)
            .min(),
        _ => None,
    };
    JobDetail {
        summary: summary(found, waiting),
        cwd: found.cwd.clone(),
        env: found.env.clone(),
        count: found.count,
        until_ms: found.until_ms,
        catch_up: found.catch_up,
        deadline_ms: found.deadline_ms,
        overlap: found.overlap,
        cancelling: cancelling(found),
        owed: match &found.state {
            State::Active { owed, .. } => owed.iter().map(|o| o.due_ms).collect(),
            _ => Vec::new(),
        },
        runs,
        missed_total: found.missed_total,
        missed: found
            .missed
            .iter()
            .map(|m| MissedInfo {
                due_at_ms: m.due_ms,
                decided_at_ms: m.at_ms,
                reason: m.reason.as_str().into(),
            })
            .collect(),
        exec: ExecInfo {
            retries: exec.retries,
            backoff_base_ms: exec.backoff_base_ms,
            backoff_max_ms: exec.backoff_max_ms,
            retry_on: exec.retry_kinds(),
            timeout_ms: exec.timeout_ms,
            kill_grace_ms: exec.kill_grace_ms,
            max_output: exec.max_output,
            keep_runs: exec.keep_runs,
            retention_ms: exec.retention_ms,
            limits: exec.run_limits(queue_limits),
            keep_children: exec.keep_children,
        },
        next_retry_ms,
        journal: exec.journal,
        source: found.source_path().map(str::to_owned),
    }
}
