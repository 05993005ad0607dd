//! `cancel`: the engine checks ownership and state inside its transaction.

use crate::engine::batch::Work;
use crate::server::Shared;
use chime_proto::{ErrorReply, JobRef, Response};
use std::sync::Arc;

pub async fn handle(shared: &Arc<Shared>, uid: u32, job: JobRef) -> Result<Response, ErrorReply> {
    shared.engine.request(Work::Cancel { uid, job }).await
}
