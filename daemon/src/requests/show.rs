//! `show`: one job, its spec and its runs.

use super::{query, summary};
use crate::engine::batch::{check_owner, not_found};
use crate::job::State;
use crate::runner::log_path;
use crate::server::Shared;
use chime_proto::{ErrorReply, JobDetail, JobRef, Response, RunInfo};
use std::sync::Arc;

pub async fn handle(shared: &Arc<Shared>, uid: u32, job: JobRef) -> Result<Response, ErrorReply> {
    query(shared, move |shared| {
        let reader = shared.store.read()?;
        let found = reader.job_by_ref(&job)?.ok_or_else(|| not_found(&job))?;
        check_owner(uid, &found)?;
        let runs = reader
            .runs(found.id)?
            .into_iter()
            .map(|run| RunInfo {
                output_bytes: std::fs::metadata(log_path(&shared.info.logs_dir, run.job, run.id))
                    .map_or(0, |m| m.len()),
                run: run.id,
                attempt: run.attempt,
                due_at_ms: run.due_ms,
                started_at_ms: run.started_ms,
                finished_at_ms: run.finished_ms,
                pid: run.pid,
                outcome: run.outcome,
            })
            .collect();
        Ok(Response::Job(Box::new(JobDetail {
            summary: summary(&found),
            cwd: found.cwd.clone(),
            env: found.env.clone(),
            cancel_requested: matches!(
                found.state,
                State::Running {
                    cancel_requested: true,
                    ..
                }
            ),
            runs,
        })))
    })
    .await
}
