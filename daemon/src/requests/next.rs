//! `next`: the next firings of a job or a schedule, like `systemd-analyze calendar`.

use super::{bad, query};
use crate::access::read_owned_job;
use crate::context::Context;
use crate::job::{Job, Ms, Next, Schedule, State, now_ms};
use crate::schedule::{Recurrence, describe};
use chime_proto::human::rfc3339;
use chime_proto::request::limits;
use chime_proto::{
    ErrorReply, FireTime, NextQuery, NextSource, PauseInfo, Preview, Response, ScheduleSpec,
};
use jiff::tz::TimeZone;
use std::sync::Arc;

pub async fn handle(
    context: &Arc<Context>,
    uid: u32,
    q: NextQuery,
) -> Result<Response, ErrorReply> {
    query(context, move |context| {
        let local = context.info.local_tz.clone();
        let mut future = Future::default();
        let (schedule, first_after): (Schedule, Option<Ms>) = match q.source {
            NextSource::Job(job) => {
                let reader = context.store.read()?;
                let found = read_owned_job(&reader, uid, &job, context.store.path())?;
                let queue = reader
                    .queues()?
                    .into_iter()
                    .find(|(name, _)| *name == found.queue)
                    .and_then(|(_, record)| record.pause);
                future = Future::of(&found, queue.as_ref(), reader.pause_all()?.as_ref());
                (found.schedule.clone(), None)
            }
            NextSource::Cron { expr, tz } => {
                crate::spec::cron_schedule(&expr, tz.as_deref(), &local)?;
                (Schedule::Cron { expr, tz }, None)
            }
            NextSource::Every {
                interval_ms,
                from_ms,
            } => {
                let every = ScheduleSpec::Every {
                    interval_ms,
                    from_ms,
                };
                crate::spec::check_schedule(&every, &local, None)?;
                let anchor = from_ms.unwrap_or_else(now_ms);
                (
                    Schedule::Every {
                        anchor_ms: anchor,
                        interval_ms,
                    },
                    Some(anchor - 1),
                )
            }
        };
        let zone = match &schedule {
            Schedule::Cron { tz: Some(name), .. } => TimeZone::get(name).unwrap_or(local.clone()),
            _ => local.clone(),
        };
        let rec = Recurrence::of(&schedule, &local).map_err(|e| bad(e.to_string()))?;
        let count = q.count.clamp(1, limits::PREVIEW_MAX);
        let mut after = q.from_ms.or(first_after).unwrap_or_else(now_ms);
        let mut times = Vec::new();
        // A job's next occurrence is its own (after skips; held by a pause, it may be past).
        let mut first = future
            .first
            .filter(|at| q.from_ms.is_none_or(|from| *at > from));
        let floor = if first.is_some() { now_ms() } else { Ms::MIN };
        if let Some(at) = first {
            after = after.min(at - 1);
        }
        while times.len() < count as usize {
            let Some(at) = first.take().or_else(|| rec.next_after(after)) else {
                break;
            };
            if future.ended
                || future.until_ms.is_some_and(|until| at > until)
                || future
                    .left
                    .is_some_and(|left| times.len() as u64 >= u64::from(left))
            {
                break;
            }
            let offset = jiff::Timestamp::from_millisecond(at)
                .map(|ts| zone.to_offset(ts).seconds())
                .unwrap_or(0);
            times.push(FireTime {
                at_ms: at,
                offset_s: offset,
            });
            // After a held occurrence (past), what comes next is in the future: the ones
            // between are caught up by the job's policy, not run one by one.
            after = at.max(floor);
        }
        Ok(Response::Preview(Preview {
            schedule: describe(&schedule),
            zone: zone.iana_name().unwrap_or("local").to_owned(),
            dst_rule: match &rec {
                Recurrence::Cron(c) if c.follows_wall_clock() => Some("wall clock".into()),
                Recurrence::Cron(_) => Some("real time".into()),
                _ => None,
            },
            times,
            notes: future.notes,
        }))
    })
    .await
}

/// A job's future beyond its schedule: where it stands now.
#[derive(Debug, Default)]
struct Future {
    /// Its next occurrence, as the job has it (a skip moved it on).
    first: Option<Ms>,
    /// Occurrences it may still start (`--count`).
    left: Option<u32>,
    until_ms: Option<Ms>,
    /// Nothing more comes: the job ended, or has no occurrence left.
    ended: bool,
    notes: Vec<String>,
}

impl Future {
    fn of(job: &Job, queue_pause: Option<&PauseInfo>, all_pause: Option<&PauseInfo>) -> Self {
        let mut future = Self {
            until_ms: job.until_ms,
            left: job
                .count
                .map(|count| count.saturating_sub(job.occurrences_started)),
            ..Self::default()
        };
        match &job.state {
            State::Active { next, .. } => match next {
                Next::Scheduled(at) => future.first = Some(*at),
                Next::Held(at) => {
                    future.first = Some(*at);
                    future.notes.push(format!(
                        "the occurrence due {} came while paused; it is handled when the pause ends",
                        rfc3339(*at)
                    ));
                }
                Next::None => {
                    future.ended = true;
                    future.notes.push("no occurrence is left to come".into());
                }
            },
            _ => {
                future.ended = true;
                future
                    .notes
                    .push(format!("the job has ended ({})", job.kind().as_str()));
            }
        }
        if let (Some(count), Some(left)) = (job.count, future.left) {
            future.notes.push(format!(
                "--count {count}: {} started, {left} left",
                job.occurrences_started
            ));
        }
        if let Some(until) = job.until_ms {
            future.notes.push(format!(
                "--until {}: no occurrence after it",
                rfc3339(until)
            ));
        }
        let paused = |what: &str, pause: &PauseInfo| {
            format!(
                "{what} is paused {}; nothing starts meanwhile",
                super::waits::how_long(pause)
            )
        };
        if !future.ended {
            if let Some(pause) = &job.pause {
                future.notes.push(paused("the job", pause));
            }
            if let Some(pause) = queue_pause {
                future
                    .notes
                    .push(paused(&format!("its queue {:?}", job.queue), pause));
            }
            if let Some(pause) = all_pause {
                future.notes.push(paused("everything", pause));
            }
        }
        future
    }
}
