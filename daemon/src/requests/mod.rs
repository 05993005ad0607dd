//! One file per request: how each is checked and answered.
//!
//! Changes (`add`, `cancel`) are checked here for everything that does not need the database,
//! then sent to the engine, which commits them before it answers. Queries (`ls`, `show`, `logs`,
//! `status`) read a redb snapshot on a blocking thread and never wait for the engine.

mod add;
mod cancel;
mod list;
mod logs;
mod show;
mod status;

use crate::job::{Job, State};
use crate::server::Shared;
use crate::store::StoreError;
use chime_proto::{ErrorCode, ErrorReply, JobSummary, Request, Response};
use std::sync::Arc;

/// Answers one request from the user `uid`.
pub async fn handle(
    shared: &Arc<Shared>,
    uid: u32,
    request: Request,
) -> Result<Response, ErrorReply> {
    match request {
        Request::Add(spec) => add::handle(shared, uid, spec).await,
        Request::Cancel(job) => cancel::handle(shared, uid, job).await,
        Request::List(query) => list::handle(shared, uid, query).await,
        Request::Show(job) => show::handle(shared, uid, job).await,
        Request::Status => status::handle(shared).await,
        Request::Logs(query) => logs::handle(shared, uid, query).await,
    }
}

/// Runs a read-only query on a blocking thread.
async fn query<T: Send + 'static>(
    shared: &Arc<Shared>,
    f: impl FnOnce(&Shared) -> Result<T, ErrorReply> + Send + 'static,
) -> Result<T, ErrorReply> {
    let shared = Arc::clone(shared);
    tokio::task::spawn_blocking(move || f(&shared))
        .await
        .unwrap_or_else(|err| Err(internal(format!("query failed: {err}"))))
}

fn internal(message: impl std::fmt::Display) -> ErrorReply {
    tracing::error!(error = %message, "request failed inside chimed");
    ErrorReply::new(
        ErrorCode::Internal,
        format!("chimed failed: {message} (see its log)"),
    )
}

impl From<StoreError> for ErrorReply {
    fn from(err: StoreError) -> Self {
        internal(err)
    }
}

/// The `ls` row of a job.
pub fn summary(job: &Job) -> JobSummary {
    let since_ms = match &job.state {
        State::Scheduled { .. } => None,
        State::Running { started_ms, .. } => Some(*started_ms),
        State::Succeeded { at_ms } | State::Failed { at_ms } | State::Cancelled { at_ms } => {
            Some(*at_ms)
        }
    };
    JobSummary {
        id: job.id,
        name: job.name.clone(),
        owner_uid: job.owner,
        state: job.state.kind(),
        command: job.command.clone(),
        created_at_ms: job.created_ms,
        due_at_ms: job.state.due_ms(),
        since_ms,
        last_outcome: job.last_outcome.clone(),
    }
}
