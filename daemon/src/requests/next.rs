//! `next`: the next firings of a job or a schedule, like `systemd-analyze calendar`.

use super::{bad, query};
use crate::access::read_owned_job;
use crate::context::Context;
use crate::job::{Ms, Schedule, now_ms};
use crate::schedule::{Recurrence, describe};
use chime_proto::request::limits;
use chime_proto::{ErrorReply, FireTime, NextQuery, NextSource, Preview, Response, ScheduleSpec};
use jiff::tz::TimeZone;
use std::sync::Arc;

pub async fn handle(
    context: &Arc<Context>,
    uid: u32,
    q: NextQuery,
) -> Result<Response, ErrorReply> {
    query(context, move |context| {
        let local = context.info.local_tz.clone();
        let (schedule, first_after): (Schedule, Option<Ms>) = match q.source {
            NextSource::Job(job) => {
                let reader = context.store.read()?;
                let found = read_owned_job(&reader, uid, &job, context.store.path())?;
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
        while times.len() < count as usize {
            let Some(at) = rec.next_after(after) else {
                break;
            };
            let offset = jiff::Timestamp::from_millisecond(at)
                .map(|ts| zone.to_offset(ts).seconds())
                .unwrap_or(0);
            times.push(FireTime {
                at_ms: at,
                offset_s: offset,
            });
            after = at;
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
        }))
    })
    .await
}
