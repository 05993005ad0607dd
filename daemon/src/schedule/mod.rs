//! Schedules: when a job's occurrences come due.
//!
//! A schedule turns "the last occurrence was at T" into "the next is at T'". It is pure and
//! deterministic, so the engine stores only the next due time and recomputes from it, and tests
//! can check ten years of firings against an oracle.
//!
//! - **Once**: one occurrence at an instant.
//! - **Every**: exact elapsed time between occurrences, anchored at an instant:
//!   `anchor + k * interval`. Daylight saving time does not exist for it (a 24h interval drifts
//!   by an hour against the wall clock at each change, by design; use cron for wall-clock times).
//! - **Cron**: an expression in a time zone, with the DST rule documented in [`cron`].

pub mod civil;
pub mod cron;

pub use cron::{CronParseError, CronSchedule};

use crate::job::{Ms, Schedule};
use jiff::Timestamp;
use jiff::tz::TimeZone;

/// Every interval: `anchor + k * interval_ms`, k = 0, 1, 2, ...
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Every {
    pub anchor_ms: i64,
    pub interval_ms: u64,
}

impl Every {
    /// The first occurrence strictly after `after_ms`.
    pub fn next_after(&self, after_ms: i64) -> Option<i64> {
        let interval = i64::try_from(self.interval_ms).ok().filter(|i| *i > 0)?;
        if after_ms < self.anchor_ms {
            return Some(self.anchor_ms);
        }
        let k = (after_ms - self.anchor_ms) / interval + 1;
        self.anchor_ms.checked_add(k.checked_mul(interval)?)
    }

    /// The last occurrence at or before `at_ms`, if any.
    pub fn latest_at_or_before(&self, at_ms: i64) -> Option<i64> {
        let interval = i64::try_from(self.interval_ms).ok().filter(|i| *i > 0)?;
        if at_ms < self.anchor_ms {
            return None;
        }
        Some(self.anchor_ms + (at_ms - self.anchor_ms) / interval * interval)
    }
}

/// A stored schedule, ready to evaluate.
#[derive(Debug, Clone)]
pub enum Recurrence {
    Once(Ms),
    Every(Every),
    Cron(Box<CronSchedule>),
}

impl Recurrence {
    /// Prepares `schedule`; cron without a zone uses `local`. Fails only for a stored cron
    /// expression that no longer parses (the database was changed behind chime's back).
    pub fn of(schedule: &Schedule, local: &TimeZone) -> Result<Self, CronParseError> {
        Ok(match schedule {
            Schedule::Once { at_ms } => Self::Once(*at_ms),
            Schedule::Every {
                anchor_ms,
                interval_ms,
            } => Self::Every(Every {
                anchor_ms: *anchor_ms,
                interval_ms: *interval_ms,
            }),
            Schedule::Cron { expr, tz } => {
                let zone = match tz {
                    Some(name) => TimeZone::get(name)
                        .map_err(|e| CronParseError(format!("time zone {name:?}: {e}")))?,
                    None => local.clone(),
                };
                Self::Cron(Box::new(CronSchedule::parse(expr, zone)?))
            }
        })
    }

    /// The first occurrence strictly after `after_ms`.
    pub fn next_after(&self, after_ms: Ms) -> Option<Ms> {
        match self {
            Self::Once(at) => (*at > after_ms).then_some(*at),
            Self::Every(every) => every.next_after(after_ms),
            Self::Cron(cron) => cron_next_after(cron, after_ms),
        }
    }

    /// The last occurrence at or before `at_ms` and not before `not_before`.
    pub fn latest_in(&self, not_before: Ms, at_ms: Ms) -> Option<Ms> {
        let found = match self {
            Self::Once(at) => Some(*at).filter(|at| *at <= at_ms),
            Self::Every(every) => every.latest_at_or_before(at_ms),
            Self::Cron(_) => {
                // Widen a window back from `at_ms` until it holds an occurrence.
                let mut width: i64 = 60_000;
                loop {
                    let start = at_ms.saturating_sub(width).max(not_before - 1);
                    let mut latest = None;
                    let mut t = start;
                    while let Some(next) = self.next_after(t).filter(|n| *n <= at_ms) {
                        latest = Some(next);
                        t = next;
                    }
                    if latest.is_some() || start < not_before {
                        break latest;
                    }
                    width = width.saturating_mul(16);
                }
            }
        };
        found.filter(|t| *t >= not_before)
    }
}

/// The first firing of `cron` strictly after `after_ms`, in ms.
pub fn cron_next_after(cron: &CronSchedule, after_ms: i64) -> Option<i64> {
    let after = Timestamp::from_millisecond(after_ms).ok()?;
    cron.next_after(after).map(|t| t.as_millisecond())
}

/// A schedule described for people: `once`, `every 5m`, `cron "0 3 * * *" Europe/Paris`.
pub fn describe(schedule: &Schedule) -> String {
    match schedule {
        Schedule::Once { .. } => "once".into(),
        Schedule::Every { interval_ms, .. } => format!(
            "every {}",
            chime_proto::human::format_duration(std::time::Duration::from_millis(*interval_ms))
        ),
        Schedule::Cron { expr, tz } => match tz {
            Some(tz) => format!("cron {expr:?} {tz}"),
            None => format!("cron {expr:?} in chimed's zone"),
        },
    }
}

#[cfg(test)]
mod tests;
