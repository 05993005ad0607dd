//! `show`: one job, its spec, its runs and the occurrences that did not run.

use super::query;
use crate::access::read_owned_job;
use crate::context::Context;
use crate::job::{Job, Run};
use crate::runner::output;
use crate::wire::job_detail;
use chime_proto::{ErrorReply, JobRef, ResourceLimits, Response, RunInfo};
use std::sync::Arc;

fn run_info(context: &Context, run: Run) -> RunInfo {
    RunInfo {
        output_bytes: output::total(&context.info.logs_dir, run.job, run.id),
        ..crate::wire::run_info(run)
    }
}

/// The job, its runs, its queue's resource limits and what it may wait for, from one read
/// transaction.
fn load(
    context: &Context,
    uid: u32,
    job: &JobRef,
) -> Result<(Job, Vec<RunInfo>, ResourceLimits, super::waits::Waits), ErrorReply> {
    let reader = context.store.read()?;
    let found = read_owned_job(&reader, uid, job, context.store.path())?;
    let runs = reader
        .runs(found.id)?
        .into_iter()
        .map(|run| run_info(context, run))
        .collect();
    let queues = reader.queues()?;
    let queue_limits = queues
        .iter()
        .find(|(name, _)| *name == found.queue)
        .map(|(_, record)| record.limits.clone())
        .unwrap_or_default();
    let waits = super::waits::Waits::with_queues(context, &reader, queues)?;
    Ok((found, runs, queue_limits, waits))
}

pub async fn handle(context: &Arc<Context>, uid: u32, job: JobRef) -> Result<Response, ErrorReply> {
    query(context, move |context| {
        let (found, runs, queue_limits, waits) = load(context, uid, &job)?;
        let mut detail = job_detail(&found, runs, &context.runs.waiting(), &queue_limits);
        detail.summary.waiting_for = waits.why(&detail.summary);
        Ok(Response::Job(Box::new(detail)))
    })
    .await
}
