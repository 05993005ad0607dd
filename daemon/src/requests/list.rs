//! `ls`: a page of jobs, through an index; a user sees their own jobs, root sees all.

use super::{damaged_summary, query, summary, summary_v1};
use crate::server::Shared;
use crate::store::JobFilter;
use chime_proto::request::limits;
use chime_proto::{ErrorReply, JobPage, JobPage2, ListJobs, ListQuery, Response};
use std::sync::Arc;

/// Page size when the client does not say.
const DEFAULT_LIMIT: u32 = 1000;

fn limit(requested: u32) -> usize {
    match requested {
        0 => DEFAULT_LIMIT,
        n => n.min(limits::LIST_LIMIT_MAX),
    }
    .try_into()
    .expect("a u32 fits in usize")
}

pub async fn handle(shared: &Arc<Shared>, uid: u32, q: ListQuery) -> Result<Response, ErrorReply> {
    let filter = JobFilter {
        owner: (uid != 0).then_some(uid),
        state: q.state,
        queue: q.queue,
        name_prefix: q.name_prefix,
        after: q.after,
        limit: limit(q.limit),
        max_bytes: crate::store::PAGE_BYTES,
        waiting: Default::default(),
    };
    query(shared, move |shared| {
        let reader = shared.store.read()?;
        // After the snapshot: a run that started since shows as running.
        let mut filter = filter;
        filter.waiting = Arc::new(shared.runs.waiting());
        let page = reader.list(&filter)?;
        let mut jobs: Vec<_> = page
            .jobs
            .iter()
            .map(|job| summary(job, &filter.waiting))
            .chain(
                page.damaged
                    .iter()
                    .map(|(id, owner, _)| damaged_summary(*id, *owner)),
            )
            .collect();
        jobs.sort_unstable_by_key(|j| j.id);
        Ok(Response::Jobs2(JobPage2 {
            jobs,
            next: page.next,
        }))
    })
    .await
}

/// Protocol 1: states as protocol 1 knows them (`scheduled` includes queued and paused jobs).
pub async fn handle_v1(
    shared: &Arc<Shared>,
    uid: u32,
    q: ListJobs,
) -> Result<Response, ErrorReply> {
    let filter = JobFilter {
        owner: (uid != 0).then_some(uid),
        state: None,
        queue: None,
        name_prefix: None,
        after: q.after,
        limit: limit(q.limit),
        max_bytes: crate::store::PAGE_BYTES,
        waiting: Default::default(),
    };
    let wanted = q.state;
    query(shared, move |shared| {
        let reader = shared.store.read()?;
        let mut filter = filter;
        filter.waiting = Arc::new(shared.runs.waiting());
        // Filtering on the v1 word is done here, since it covers several stored states.
        let mut jobs = Vec::new();
        let next = loop {
            let page = reader.list(&filter)?;
            jobs.extend(
                page.jobs
                    .iter()
                    .map(|job| summary_v1(job, &filter.waiting))
                    .filter(|j| wanted.is_none_or(|s| s == j.state)),
            );
            match page.next {
                Some(next) if jobs.len() < filter.limit => filter.after = Some(next),
                next => break next,
            }
        };
        Ok(Response::Jobs(JobPage { jobs, next }))
    })
    .await
}
