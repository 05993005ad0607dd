//! `cancel`: the engine checks ownership and state inside its transaction.

use crate::context::Context;
use crate::engine::batch::Work;
use chime_proto::{ErrorReply, JobRef, Response};
use std::sync::Arc;

pub async fn handle(context: &Arc<Context>, uid: u32, job: JobRef) -> Result<Response, ErrorReply> {
    context.engine.request(Work::Cancel { uid, job }).await
}
