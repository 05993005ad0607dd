//! Applying one batch of work inside one write transaction.
//!
//! [`apply`] runs on a blocking thread inside [`crate::store::Store::write`]. It looks up the
//! jobs each piece of work touches, runs the state machine, writes what the machine returns, and
//! collects what must happen after the commit: replies, spawns and signals. Nothing here has an
//! effect outside the transaction, so if the commit fails, nothing happened.

use super::machine::{self, Action, Event, Refusal};
use crate::job::{Job, Ms, State};
use crate::store::{StoreError, Writer};
use chime_proto::{
    Added, Cancelled, Command, ErrorCode, ErrorReply, JobId, JobRef, JobSpec, Response, RunId,
    Schedule,
};

/// One piece of work for the engine. Cloneable, so that runner events can be retried when a
/// commit fails.
#[derive(Debug, Clone)]
pub enum Work {
    /// A user's request that changes something.
    Add {
        uid: u32,
        spec: JobSpec,
    },
    Cancel {
        uid: u32,
        job: JobRef,
    },
    /// Something the runner observed about a run.
    Runner {
        job: JobId,
        event: Event,
    },
}

/// A process the engine must start once the batch is durable.
#[derive(Debug, Clone)]
pub struct SpawnOrder {
    pub job: JobId,
    pub run: RunId,
    pub attempt: u32,
    pub owner: u32,
    pub command: Command,
    pub cwd: String,
    pub env: Vec<(String, String)>,
}

/// What a batch decided, to be carried out after the commit.
#[derive(Debug, Default)]
pub struct Applied {
    /// One result per piece of work, in order; `None` for runner events.
    pub replies: Vec<Option<Result<Response, ErrorReply>>>,
    pub spawns: Vec<SpawnOrder>,
    pub terminations: Vec<RunId>,
    /// Jobs whose state changed (for logging after the commit).
    pub changes: usize,
    /// The earliest due time left in the timer index.
    pub next_due: Option<Ms>,
}

/// The latest due time accepted: year 9999, so that arithmetic on due times never overflows.
const MAX_DUE_MS: Ms = 253_402_300_799_000;

/// Applies `work` and then starts up to `free_slots` due jobs (none when `fire` is false).
pub fn apply(
    w: &mut Writer<'_>,
    work: Vec<Work>,
    now: Ms,
    free_slots: usize,
    fire: bool,
) -> Result<Applied, StoreError> {
    let mut out = Applied::default();
    for item in work {
        let reply = match item {
            Work::Add { uid, spec } => Some(add(w, uid, spec, now, &mut out)?),
            Work::Cancel { uid, job } => Some(cancel(w, uid, &job, now, &mut out)?),
            Work::Runner { job, event } => {
                runner_event(w, job, event, now, &mut out)?;
                None
            }
        };
        out.replies.push(reply);
    }
    if fire && free_slots > 0 {
        for id in w.due_jobs(now, free_slots)? {
            let Some(job) = w.job(id)? else { continue };
            let run = w.allocate_run_id();
            if let Err(refusal) = transition(w, &job, Event::Due { run }, now, &mut out)? {
                // The index and the job row are written together by `put_job`, so this means the
                // database was changed behind our back. Say so; do not spin on it.
                tracing::error!(job_id = id.0, %refusal, "job in the timer index is not scheduled");
            }
        }
    }
    out.next_due = w.first_due()?;
    Ok(out)
}

fn add(
    w: &mut Writer<'_>,
    uid: u32,
    spec: JobSpec,
    now: Ms,
    out: &mut Applied,
) -> Result<Result<Response, ErrorReply>, StoreError> {
    if let Some(name) = &spec.name
        && let Some(existing) = w.job_id_by_name(name)?
    {
        return Ok(Err(ErrorReply::new(
            ErrorCode::Conflict,
            format!("the name {name:?} is taken by job {existing}; choose another name"),
        )));
    }
    let due_ms = match spec.schedule {
        Schedule::Now => now,
        Schedule::At(at) => at.clamp(0, MAX_DUE_MS),
        Schedule::After(ms) => now
            .saturating_add(i64::try_from(ms).unwrap_or(i64::MAX))
            .min(MAX_DUE_MS),
    };
    let job = Job {
        id: w.allocate_job_id(),
        name: spec.name,
        owner: uid,
        created_ms: now,
        command: spec.command,
        cwd: spec.cwd,
        env: spec.env,
        state: State::Scheduled { due_ms },
        attempts: 0,
        last_outcome: None,
    };
    w.put_job(None, &job)?;
    out.changes += 1;
    Ok(Ok(Response::Added(Added {
        id: job.id,
        due_at_ms: due_ms,
    })))
}

fn cancel(
    w: &mut Writer<'_>,
    uid: u32,
    job_ref: &JobRef,
    now: Ms,
    out: &mut Applied,
) -> Result<Result<Response, ErrorReply>, StoreError> {
    let id = match job_ref {
        JobRef::Id(id) => Some(*id),
        JobRef::Name(name) => w.job_id_by_name(name)?,
    };
    let Some(job) = id.map(|id| w.job(id)).transpose()?.flatten() else {
        return Ok(Err(not_found(job_ref)));
    };
    if let Err(refusal) = check_owner(uid, &job) {
        return Ok(Err(refusal));
    }
    Ok(match transition(w, &job, Event::Cancel, now, out)? {
        Ok(state) => Ok(Response::Cancelled(Cancelled { id: job.id, state })),
        Err(refusal) => Err(ErrorReply::new(
            ErrorCode::InvalidState,
            refusal.to_string(),
        )),
    })
}

fn runner_event(
    w: &mut Writer<'_>,
    id: JobId,
    event: Event,
    now: Ms,
    out: &mut Applied,
) -> Result<(), StoreError> {
    let Some(job) = w.job(id)? else {
        tracing::warn!(
            job_id = id.0,
            ?event,
            "runner event for a job that does not exist"
        );
        return Ok(());
    };
    if let Err(refusal) = transition(w, &job, event.clone(), now, out)? {
        tracing::debug!(job_id = id.0, ?event, %refusal, "runner event ignored");
    }
    Ok(())
}

/// Runs the state machine and records its result in the transaction and in `out`. Returns the
/// job's new state, or why the event does not apply. A storage error fails the whole batch.
fn transition(
    w: &mut Writer<'_>,
    job: &Job,
    event: Event,
    now: Ms,
    out: &mut Applied,
) -> Result<Result<chime_proto::JobState, Refusal>, StoreError> {
    let step = match machine::step(job, event, now) {
        Ok(step) => step,
        Err(refusal) => return Ok(Err(refusal)),
    };
    w.put_job(Some(job), &step.job)?;
    if let Some(run) = &step.run {
        w.put_run(run)?;
    }
    out.changes += 1;
    for action in step.actions {
        match action {
            Action::Spawn { run } => out.spawns.push(SpawnOrder {
                job: step.job.id,
                run,
                attempt: step.job.attempts,
                owner: step.job.owner,
                command: step.job.command.clone(),
                cwd: step.job.cwd.clone(),
                env: step.job.env.clone(),
            }),
            Action::Terminate { run } => out.terminations.push(run),
        }
    }
    Ok(Ok(step.job.state.kind()))
}

pub fn not_found(job: &JobRef) -> ErrorReply {
    ErrorReply::new(
        ErrorCode::NotFound,
        format!("no {job}; `chimectl ls` lists your jobs"),
    )
}

/// Only the owner and root may see or change a job.
pub fn check_owner(uid: u32, job: &Job) -> Result<(), ErrorReply> {
    if uid == 0 || uid == job.owner {
        Ok(())
    } else {
        Err(ErrorReply::new(
            ErrorCode::PermissionDenied,
            format!(
                "job {} belongs to uid {}; only its owner or root may change it",
                job.id, job.owner
            ),
        ))
    }
}
