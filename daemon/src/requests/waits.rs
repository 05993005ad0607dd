//! Why a job waits, in words, for `ls` and `show`: the pause that holds it (its own, its
//! queue's, everything's, until when and why), or the limit that is full (its queue's, the
//! user's `running_per_user`, chimed's `max_running`).

use crate::context::Context;
use crate::store::Reader;
use crate::store::StoreError;
use chime_proto::human::rfc3339;
use chime_proto::{JobState, JobSummary, PauseInfo};
use std::collections::HashMap;

/// How long a pause holds, and why, as people read it: `until 2026-...Z: db migration`,
/// `until resumed` (also in `next`'s notes).
pub fn how_long(pause: &PauseInfo) -> String {
    let until = pause.until_ms.map_or("until resumed".to_owned(), |u| {
        format!("until {}", rfc3339(u))
    });
    match pause.reason.as_deref() {
        Some(reason) => format!("{until}: {reason}"),
        None => until,
    }
}

/// What every job's reason is judged against, read once per request.
#[derive(Debug)]
pub struct Waits {
    all: Option<PauseInfo>,
    /// Per queue: its pause and its limit of runs at once.
    queues: HashMap<String, (Option<PauseInfo>, Option<u32>)>,
    live: crate::runner::dispatch::Live,
    max_running: usize,
    limits: std::sync::Arc<crate::limits::Limits>,
}

impl Waits {
    pub fn gather(context: &Context, reader: &Reader) -> Result<Self, StoreError> {
        Self::with_queues(context, reader, reader.queues()?)
    }

    /// As [`Waits::gather`], with the queues already read.
    pub fn with_queues(
        context: &Context,
        reader: &Reader,
        queues: Vec<(String, crate::store::QueueRecord)>,
    ) -> Result<Self, StoreError> {
        Ok(Self {
            all: reader.pause_all()?,
            queues: queues
                .into_iter()
                .map(|(name, record)| (name, (record.pause, record.parallel)))
                .collect(),
            live: context.runs.live(),
            max_running: context.info.max_running,
            limits: context.limits.get(),
        })
    }

    /// Why `job` does not run now, if it waits.
    pub fn why(&self, job: &JobSummary) -> Option<String> {
        let paused = |what: String, pause: &PauseInfo| format!("{what}{}", how_long(pause));
        match job.state {
            JobState::Paused => job.pause.as_ref().map(|pause| paused(String::new(), pause)),
            JobState::Queued => {
                let (queue_pause, parallel) =
                    self.queues.get(&job.queue).cloned().unwrap_or_default();
                if let Some(pause) = &self.all {
                    return Some(paused("everything is paused ".into(), pause));
                }
                if let Some(pause) = &queue_pause {
                    return Some(paused(format!("queue {} is paused ", job.queue), pause));
                }
                let live = self.live.by_queue.get(&job.queue).copied().unwrap_or(0);
                if let Some(parallel) = parallel
                    && live >= parallel as usize
                {
                    return Some(format!(
                        "queue {} is full: {live} of {parallel} running",
                        job.queue
                    ));
                }
                let mine = self.live.by_owner.get(&job.owner_uid).copied().unwrap_or(0);
                if !self.limits.is_exempt(job.owner_uid)
                    && mine >= self.limits.running_per_user as usize
                {
                    return Some(format!(
                        "its owner runs their most jobs at once: {mine}, running_per_user"
                    ));
                }
                if self.live.total >= self.max_running {
                    return Some(format!(
                        "chimed runs its most jobs at once: {}, max_running",
                        self.max_running
                    ));
                }
                Some("about to start".into())
            }
            _ => None,
        }
    }
}
