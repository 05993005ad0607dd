//! `logs`: a run's output, read from its log ([`crate::runner::output`]).

use super::query;
use crate::access::read_owned_job;
use crate::context::Context;
use crate::job::Run;
use crate::runner::output;
use chime_proto::request::limits;
use chime_proto::{ErrorCode, ErrorReply, JobRef, LogChunk, LogsQuery, Response, RunId};
use std::sync::Arc;

/// Finds the run a logs request names (default: the latest).
fn find_run(
    context: &Context,
    uid: u32,
    job: &JobRef,
    run: Option<RunId>,
) -> Result<Run, ErrorReply> {
    let reader = context.store.read()?;
    let job = read_owned_job(&reader, uid, job, context.store.path())?;
    let found = match run {
        Some(run) => reader.run(job.id, run)?.ok_or_else(|| {
            ErrorReply::new(
                ErrorCode::NotFound,
                format!(
                    "job {} has no run {run} (old runs are pruned); `chimectl show {}` lists its runs",
                    job.id, job.id
                ),
            )
        }),
        None => reader.last_run(job.id)?.ok_or_else(|| {
            ErrorReply::new(
                ErrorCode::NotFound,
                format!("job {} has not run yet, so it has no output", job.id),
            )
        }),
    }?;
    elsewhere(context, &found)?;
    Ok(found)
}

/// In a fleet, a run's output stays on the host that ran it: asked on another host, the answer
/// says where it is, and whether that host is up.
fn elsewhere(context: &Context, run: &Run) -> Result<(), ErrorReply> {
    let (Some(ran_on), Some(here)) = (run.host.as_deref(), context.store.host()) else {
        return Ok(());
    };
    if ran_on == here {
        return Ok(());
    }
    let up = match context.store.fleet() {
        Ok(Some((_, hosts))) => hosts
            .iter()
            .find(|(host, _, _)| host == ran_on)
            .map(|(_, _, left_ms)| *left_ms > 0),
        _ => None,
    };
    let state = match up {
        Some(true) => "",
        Some(false) => " (its lease has ended: it is offline)",
        None => " (it is not a member of the fleet any more)",
    };
    Err(ErrorReply::new(
        ErrorCode::NotFound,
        format!(
            "run {} of job {} ran on host {ran_on}{state}, which keeps its output: run `chimectl logs {} --run {}` there",
            run.id, run.job, run.job, run.id
        ),
    ))
}

fn read(
    context: &Context,
    run: &Run,
    from: Option<u64>,
    max: u64,
) -> Result<output::LogRead, ErrorReply> {
    output::read(
        &context.info.logs_dir,
        run.job,
        run.id,
        from,
        max.clamp(1, limits::LOG_CHUNK_MAX),
    )
    .map_err(|e| super::internal(format!("reading the output of run {}: {e}", run.id)))
}

/// Output by stream, from an offset (`None`: the tail), for `logs` and `logs -f`.
pub async fn handle(
    context: &Arc<Context>,
    uid: u32,
    q: LogsQuery,
) -> Result<Response, ErrorReply> {
    query(context, move |context| {
        let run = find_run(context, uid, &q.job, q.run)?;
        let out = read(context, &run, q.from, q.max_bytes)?;
        Ok(Response::Logs(LogChunk {
            job: run.job,
            run: run.id,
            segments: out.segments,
            from: out.from,
            next: out.next,
            dropped: out.dropped,
            running: run.outcome.is_none(),
        }))
    })
    .await
}
