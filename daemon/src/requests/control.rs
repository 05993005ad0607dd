//! `wait`, `kill`, `retry` and `rm`: the engine checks ownership and state in its transaction.

use super::bad;
use crate::context::Context;
use crate::engine::batch::Work;
use chime_proto::{ErrorReply, JobRef, KillRequest, Response, WaitQuery};
use std::sync::Arc;

pub async fn wait(context: &Arc<Context>, uid: u32, q: WaitQuery) -> Result<Response, ErrorReply> {
    context
        .engine
        .request(Work::Wait {
            uid,
            job: q.job,
            since_ms: q.since_ms,
        })
        .await
}

pub async fn kill(
    context: &Arc<Context>,
    uid: u32,
    k: KillRequest,
) -> Result<Response, ErrorReply> {
    // Standard signals only: the ones a process group can be sent by name.
    if nix::sys::signal::Signal::try_from(k.signal).is_err() {
        return Err(bad(format!(
            "signal {} is not a signal this system knows; use a name such as TERM, KILL, HUP, INT or USR1",
            k.signal
        )));
    }
    context
        .engine
        .request(Work::Kill {
            uid,
            job: k.job,
            signal: k.signal,
        })
        .await
}

pub async fn retry(context: &Arc<Context>, uid: u32, job: JobRef) -> Result<Response, ErrorReply> {
    context.engine.request(Work::Retry { uid, job }).await
}

pub async fn remove(context: &Arc<Context>, uid: u32, job: JobRef) -> Result<Response, ErrorReply> {
    let response = context.engine.request(Work::Remove { uid, job }).await?;
    if let Response::Removed(removed) = &response {
        // A damaged job the scrub found is gone with it.
        context.damage.forget_job(removed.id);
    }
    Ok(response)
}
