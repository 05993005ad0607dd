//! `queue set` and `queue ls`.

use super::{bad, query};
use crate::context::Context;
use crate::engine::batch::{DEFAULT_QUEUE, Work};
use crate::spec::{check_host, check_limits, check_queue_name};
use chime_proto::{ErrorReply, QueueInfo, QueueSettings, Response};
use std::collections::BTreeMap;
use std::sync::Arc;

pub async fn set(
    context: &Arc<Context>,
    uid: u32,
    q: QueueSettings,
) -> Result<Response, ErrorReply> {
    check_queue_name(&q.name).map_err(|e| bad(e.message))?;
    if q.parallel == Some(Some(0)) {
        return Err(bad(
            "--parallel must be at least 1 (pause the queue to stop it)",
        ));
    }
    // The same rules as a job's limits, and the host must be able to enforce them.
    check_limits(&q.limits)?;
    check_host(&q.limits, &context.controllers)?;
    context
        .engine
        .request(Work::SetQueue {
            uid,
            name: q.name,
            parallel: q.parallel,
            clear_limits: q.clear_limits,
            limits: q.limits,
        })
        .await
}

/// Every queue that has a record, jobs, runs or waiting jobs; always `default`.
pub async fn list(context: &Arc<Context>) -> Result<Response, ErrorReply> {
    let running = context
        .stats
        .running
        .lock()
        .map(|r| r.clone())
        .unwrap_or_default();
    query(context, move |context| {
        let reader = context.store.read()?;
        let mut queues: BTreeMap<String, QueueInfo> = BTreeMap::new();
        let blank = |name: &str| QueueInfo {
            name: name.to_owned(),
            parallel: None,
            running: 0,
            waiting: 0,
            pause: None,
            limits: Default::default(),
        };
        queues.insert(DEFAULT_QUEUE.into(), blank(DEFAULT_QUEUE));
        for name in reader.queues_with_jobs()? {
            queues.entry(name.clone()).or_insert_with(|| blank(&name));
        }
        for (name, record) in reader.queues()? {
            let info = queues.entry(name.clone()).or_insert_with(|| blank(&name));
            info.parallel = record.parallel;
            info.pause = record.pause.clone();
            info.limits = record.limits.clone();
        }
        for (name, n) in &running {
            queues
                .entry(name.clone())
                .or_insert_with(|| blank(name))
                .running = *n as u32;
        }
        for info in queues.values_mut() {
            info.waiting = reader.waiting_count(&info.name)?;
        }
        for job in super::held_back(context, &reader)? {
            if let Some(info) = queues.get_mut(&job.queue) {
                info.waiting += 1;
            }
        }
        Ok(Response::Queues(queues.into_values().collect()))
    })
    .await
}
