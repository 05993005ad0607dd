//! The job state machine: a pure function from (job, event, now) to (job, run record, actions).
//!
//! Every change to a job goes through [`step`]. It does no I/O: the engine persists what it
//! returns (the new job and, when a run opens, changes or closes, the run record) in the batch's
//! write transaction, and performs the [`Action`]s only after that transaction has committed.
//!
//! ```text
//!                  Due                    Spawned (pid recorded)
//!   Scheduled ────────────▶ Running ◀──────────────┐
//!       │                    │   │ └───────────────┘
//!       │ Cancel             │   │ Cancel: SIGTERM to the process group, cancel_requested
//!       ▼                    │   ▼
//!   Cancelled ◀──────────────┴── Exited / SpawnFailed / Lost / Interrupted
//!                                 ├─ cancel_requested        → Cancelled
//!                                 ├─ exited with code 0      → Succeeded
//!                                 └─ anything else           → Failed
//! ```
//!
//! Final states (succeeded, failed, cancelled) absorb: every event is refused in them. Runner
//! events that name a run other than the open one are [`Refusal::Stale`] and change nothing.

use crate::job::{Job, Ms, Run, State};
use chime_proto::{JobState, Outcome, RunId};

/// Something that happens to a job.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    /// The timer index says the job is due; `run` is the id allocated for the new run.
    Due { run: RunId },
    /// The runner started the run's process.
    Spawned { run: RunId, pid: u32 },
    /// The runner could not start the run's process.
    SpawnFailed { run: RunId, error: String },
    /// The run's process ended (`Exited` or `Signaled`).
    Exited { run: RunId, outcome: Outcome },
    /// The daemon was stopped during the run and ended it.
    Interrupted { run: RunId },
    /// Found open at start: the daemon died during the run.
    Lost,
    /// A user cancels the job.
    Cancel,
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
    /// The run record to write, when a run opened, changed or closed.
    pub run: Option<Run>,
    pub actions: Vec<Action>,
}

/// Why an event does not apply.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    #[error("job {id} has already {state}", id = .0.id, state = past_tense(.0.state.kind()))]
    Final(Box<Job>),
    #[error("the event is for a run that is not the job's open run")]
    Stale,
    #[error("event {event} does not apply to a {state} job")]
    NotApplicable {
        event: &'static str,
        state: JobState,
    },
}

fn past_tense(state: JobState) -> &'static str {
    match state {
        JobState::Succeeded => "succeeded",
        JobState::Failed => "failed",
        JobState::Cancelled => "been cancelled",
        JobState::Scheduled => "been scheduled",
        JobState::Running => "started",
    }
}

const fn event_name(event: &Event) -> &'static str {
    match event {
        Event::Due { .. } => "due",
        Event::Spawned { .. } => "spawned",
        Event::SpawnFailed { .. } => "spawn_failed",
        Event::Exited { .. } => "exited",
        Event::Interrupted { .. } => "interrupted",
        Event::Lost => "lost",
        Event::Cancel => "cancel",
    }
}

/// Applies `event` to `job` at `now`.
///
/// Pure: the same inputs give the same output, and nothing outside the return value changes.
pub fn step(job: &Job, event: Event, now: Ms) -> Result<Step, Refusal> {
    if job.state.is_final() {
        return Err(match event {
            Event::Cancel => Refusal::Final(Box::new(job.clone())),
            Event::Spawned { .. }
            | Event::SpawnFailed { .. }
            | Event::Exited { .. }
            | Event::Interrupted { .. } => Refusal::Stale,
            Event::Due { .. } | Event::Lost => Refusal::NotApplicable {
                event: event_name(&event),
                state: job.state.kind(),
            },
        });
    }
    let mut next = job.clone();
    let not_applicable = |event: &Event| Refusal::NotApplicable {
        event: event_name(event),
        state: job.state.kind(),
    };
    match (&job.state, event) {
        (State::Scheduled { due_ms }, Event::Due { run }) => {
            let attempt = job.attempts + 1;
            next.attempts = attempt;
            next.state = State::Running {
                run,
                due_ms: *due_ms,
                started_ms: now,
                pid: None,
                cancel_requested: false,
            };
            let record = Run {
                id: run,
                job: job.id,
                attempt,
                due_ms: *due_ms,
                started_ms: now,
                finished_ms: None,
                pid: None,
                outcome: None,
            };
            Ok(Step {
                job: next,
                run: Some(record),
                actions: vec![Action::Spawn { run }],
            })
        }
        (State::Scheduled { .. }, Event::Cancel) => {
            next.state = State::Cancelled { at_ms: now };
            Ok(Step {
                job: next,
                run: None,
                actions: vec![],
            })
        }
        (State::Scheduled { .. }, event) => Err(match event {
            Event::Spawned { .. }
            | Event::SpawnFailed { .. }
            | Event::Exited { .. }
            | Event::Interrupted { .. } => Refusal::Stale,
            other => not_applicable(&other),
        }),
        (
            State::Running {
                run: open,
                due_ms,
                started_ms,
                pid,
                cancel_requested,
            },
            event,
        ) => {
            let open = *open;
            let record = |pid: Option<u32>, outcome: Option<Outcome>| Run {
                id: open,
                job: job.id,
                attempt: job.attempts,
                due_ms: *due_ms,
                started_ms: *started_ms,
                finished_ms: outcome.as_ref().map(|_| now),
                pid,
                outcome,
            };
            let close = |mut next: Job, outcome: Outcome| {
                next.state = if *cancel_requested {
                    State::Cancelled { at_ms: now }
                } else if outcome.is_success() {
                    State::Succeeded { at_ms: now }
                } else {
                    State::Failed { at_ms: now }
                };
                next.last_outcome = Some(outcome.clone());
                Step {
                    run: Some(record(*pid, Some(outcome))),
                    job: next,
                    actions: vec![],
                }
            };
            match event {
                Event::Spawned { run, pid: new_pid } if run == open => {
                    if let State::Running { pid, .. } = &mut next.state {
                        *pid = Some(new_pid);
                    }
                    let actions = if *cancel_requested {
                        vec![Action::Terminate { run }]
                    } else {
                        vec![]
                    };
                    Ok(Step {
                        job: next,
                        run: Some(record(Some(new_pid), None)),
                        actions,
                    })
                }
                Event::SpawnFailed { run, error } if run == open => {
                    Ok(close(next, Outcome::SpawnError(error)))
                }
                Event::Exited { run, outcome } if run == open => Ok(close(next, outcome)),
                Event::Interrupted { run } if run == open => Ok(close(next, Outcome::Interrupted)),
                Event::Lost => Ok(close(next, Outcome::Lost)),
                Event::Cancel => {
                    if let State::Running {
                        cancel_requested, ..
                    } = &mut next.state
                    {
                        *cancel_requested = true;
                    }
                    // Until the pid is recorded the process may not exist yet; the Spawned event
                    // sends the signal then.
                    let actions = if pid.is_some() {
                        vec![Action::Terminate { run: open }]
                    } else {
                        vec![]
                    };
                    Ok(Step {
                        job: next,
                        run: None,
                        actions,
                    })
                }
                Event::Spawned { .. }
                | Event::SpawnFailed { .. }
                | Event::Exited { .. }
                | Event::Interrupted { .. } => Err(Refusal::Stale),
                other @ Event::Due { .. } => Err(not_applicable(&other)),
            }
        }
        (State::Succeeded { .. } | State::Failed { .. } | State::Cancelled { .. }, _) => {
            unreachable!("final states return early")
        }
    }
}

#[cfg(test)]
mod tests;
