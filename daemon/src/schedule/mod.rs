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

use jiff::Timestamp;

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
}

/// The first firing of `cron` strictly after `after_ms`, in ms.
pub fn cron_next_after(cron: &CronSchedule, after_ms: i64) -> Option<i64> {
    let after = Timestamp::from_millisecond(after_ms).ok()?;
    cron.next_after(after).map(|t| t.as_millisecond())
}

#[cfg(test)]
mod tests;
