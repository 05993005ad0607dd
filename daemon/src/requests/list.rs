//! `ls`: a page of jobs, through an index; a user sees their own jobs, root sees all.

use super::query;
use crate::context::Context;
use crate::store::JobFilter;
use crate::wire::{damaged_summary, summary};
use chime_proto::request::limits;
use chime_proto::{ErrorReply, JobPage, ListQuery, Response};
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

pub async fn handle(
    context: &Arc<Context>,
    uid: u32,
    q: ListQuery,
) -> Result<Response, ErrorReply> {
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
    query(context, move |context| {
        let reader = context.store.read()?;
        // After the snapshot: a run that started since shows as running.
        let mut filter = filter;
        filter.waiting = Arc::new(context.runs.waiting());
        let page = reader.list(&filter)?;
        let waits = super::waits::Waits::gather(context, &reader)?;
        let mut jobs: Vec<_> = page
            .jobs
            .iter()
            .map(|job| {
                let mut row = summary(job, &filter.waiting);
                row.waiting_for = waits.why(&row);
                row
            })
            .chain(
                page.damaged
                    .iter()
                    .map(|(id, owner, _)| damaged_summary(*id, *owner)),
            )
            .collect();
        jobs.sort_unstable_by_key(|j| j.id);
        Ok(Response::Jobs(JobPage {
            jobs,
            next: page.next,
        }))
    })
    .await
}
