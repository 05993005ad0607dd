//! `show`: one job, its spec, its runs and the occurrences that did not run.

use super::query;
use crate::access::owned_job;
use crate::context::Context;
use crate::job::{CatchUp, Job, Overlap, Run, State, Waiting};
use crate::runner::output;
use crate::wire::summary;
use chime_proto::{
    CatchUpPolicy, ErrorReply, ExecInfo, JobDetail, JobRef, MissedInfo, OverlapPolicy, Response,
    RunInfo,
};
use std::sync::Arc;

fn run_info(context: &Context, run: Run) -> RunInfo {
    RunInfo {
        output_bytes: output::total(&context.info.logs_dir, run.job, run.id),
        ..crate::wire::run_info(run)
    }
}

fn load(context: &Context, uid: u32, job: &JobRef) -> Result<(Job, Vec<RunInfo>), ErrorReply> {
    let reader = context.store.read()?;
    let found = owned_job(uid, job, reader.job_by_ref(uid, job)?, context.store.path())?;
    let runs = reader
        .runs(found.id)?
        .into_iter()
        .map(|run| run_info(context, run))
        .collect();
    Ok((found, runs))
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

fn detail(found: &Job, runs: Vec<RunInfo>, waiting: &Waiting) -> JobDetail {
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
        catch_up: match found.catch_up {
            CatchUp::Skip => CatchUpPolicy::Skip,
            CatchUp::Latest => CatchUpPolicy::Latest,
            CatchUp::All { limit } => CatchUpPolicy::All { limit },
        },
        deadline_ms: found.deadline_ms,
        overlap: match found.overlap {
            Overlap::Skip => OverlapPolicy::Skip,
            Overlap::Queue => OverlapPolicy::Queue,
            Overlap::Allow => OverlapPolicy::Allow,
            Overlap::Replace => OverlapPolicy::Replace,
        },
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
        },
        next_retry_ms,
        journal: exec.journal,
        source: found.source_path().map(str::to_owned),
    }
}

pub async fn handle(context: &Arc<Context>, uid: u32, job: JobRef) -> Result<Response, ErrorReply> {
    query(context, move |context| {
        let (found, runs) = load(context, uid, &job)?;
        Ok(Response::Job(Box::new(detail(
            &found,
            runs,
            &context.runs.waiting(),
        ))))
    })
    .await
}
