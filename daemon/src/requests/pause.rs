//! `pause`, `resume`, `skip` and `trigger`: the engine checks ownership and state inside its
//! transaction; pausing a queue or everything is for root (and the daemon's own user).

use super::bad;
use crate::context::Context;
use crate::engine::batch::Work;
use crate::spec::check_queue_name;
use chime_proto::request::limits;
use chime_proto::{ErrorReply, JobRef, PauseRequest, PauseTarget, Response};
use std::sync::Arc;

fn check_target(target: &PauseTarget) -> Result<(), ErrorReply> {
    if let PauseTarget::Queue(name) = target {
        check_queue_name(name).map_err(|e| bad(e.message))?;
    }
    Ok(())
}

pub async fn pause(
    context: &Arc<Context>,
    uid: u32,
    p: PauseRequest,
) -> Result<Response, ErrorReply> {
    check_target(&p.target)?;
    if p.until_ms.is_some() && p.for_ms.is_some() {
        return Err(bad("give --for or --until, not both"));
    }
    if p.for_ms == Some(0) {
        return Err(bad("--for must be longer than zero"));
    }
    if let Some(reason) = &p.reason
        && (reason.len() > limits::REASON_MAX || reason.contains('\0'))
    {
        return Err(bad(format!(
            "--reason must be at most {} bytes, without NUL",
            limits::REASON_MAX
        )));
    }
    context
        .engine
        .request(Work::Pause {
            uid,
            target: p.target,
            until_ms: p.until_ms,
            for_ms: p.for_ms,
            reason: p.reason,
        })
        .await
}

pub async fn resume(
    context: &Arc<Context>,
    uid: u32,
    target: PauseTarget,
) -> Result<Response, ErrorReply> {
    check_target(&target)?;
    context.engine.request(Work::Resume { uid, target }).await
}

pub async fn skip(context: &Arc<Context>, uid: u32, job: JobRef) -> Result<Response, ErrorReply> {
    context.engine.request(Work::Skip { uid, job }).await
}

pub async fn trigger(
    context: &Arc<Context>,
    uid: u32,
    job: JobRef,
) -> Result<Response, ErrorReply> {
    context.engine.request(Work::Trigger { uid, job }).await
}
