//! `logs`: the tail of one run's output, read from its log file.

use super::query;
use crate::engine::batch::{check_owner, not_found};
use crate::runner::log_path;
use crate::server::Shared;
use chime_proto::request::limits;
use chime_proto::{ErrorCode, ErrorReply, LogChunk, LogsRequest, Response};
use std::io::{Read, Seek, SeekFrom};
use std::sync::Arc;

pub async fn handle(
    shared: &Arc<Shared>,
    uid: u32,
    q: LogsRequest,
) -> Result<Response, ErrorReply> {
    query(shared, move |shared| {
        let reader = shared.store.read()?;
        let job = reader
            .job_by_ref(&q.job)?
            .ok_or_else(|| not_found(&q.job))?;
        check_owner(uid, &job)?;
        let run = match q.run {
            Some(run) => reader.run(job.id, run)?.ok_or_else(|| {
                ErrorReply::new(
                    ErrorCode::NotFound,
                    format!(
                        "job {} has no run {run}; `chimectl show {}` lists its runs",
                        job.id, job.id
                    ),
                )
            })?,
            None => reader.last_run(job.id)?.ok_or_else(|| {
                ErrorReply::new(
                    ErrorCode::NotFound,
                    format!("job {} has not run yet, so it has no output", job.id),
                )
            })?,
        };
        let path = log_path(&shared.info.logs_dir, job.id, run.id);
        let max = q.max_bytes.clamp(1, limits::LOG_CHUNK_MAX);
        let (data, skipped) = match std::fs::File::open(&path) {
            Ok(mut file) => {
                let len = file.metadata().map_or(0, |m| m.len());
                let skipped = len.saturating_sub(max);
                let mut data = Vec::with_capacity((len - skipped) as usize);
                file.seek(SeekFrom::Start(skipped))
                    .and_then(|_| file.take(max).read_to_end(&mut data))
                    .map_err(|e| super::internal(format!("reading {}: {e}", path.display())))?;
                (data, skipped)
            }
            // A run that could not be spawned may have no file.
            Err(err) if err.kind() == std::io::ErrorKind::NotFound => (Vec::new(), 0),
            Err(err) => {
                return Err(super::internal(format!(
                    "opening {}: {err}",
                    path.display()
                )));
            }
        };
        Ok(Response::Logs(LogChunk {
            job: job.id,
            run: run.id,
            data,
            skipped,
            running: run.outcome.is_none(),
        }))
    })
    .await
}
