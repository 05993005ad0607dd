//! `ls`: a page of jobs, through an index; a user sees their own jobs, root sees all.

use super::{query, summary};
use crate::server::Shared;
use crate::store::JobFilter;
use chime_proto::request::limits;
use chime_proto::{ErrorReply, JobPage, ListJobs, Response};
use std::sync::Arc;

/// Page size when the client does not say.
const DEFAULT_LIMIT: u32 = 1000;

pub async fn handle(shared: &Arc<Shared>, uid: u32, q: ListJobs) -> Result<Response, ErrorReply> {
    let limit = match q.limit {
        0 => DEFAULT_LIMIT,
        n => n.min(limits::LIST_LIMIT_MAX),
    };
    let filter = JobFilter {
        owner: (uid != 0).then_some(uid),
        state: q.state,
        after: q.after,
        limit: limit as usize,
    };
    query(shared, move |shared| {
        let page = shared.store.read()?.list(&filter)?;
        Ok(Response::Jobs(JobPage {
            jobs: page.jobs.iter().map(summary).collect(),
            next: page.next,
        }))
    })
    .await
}
