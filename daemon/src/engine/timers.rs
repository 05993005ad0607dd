//! The engine's clock: how long the loop may sleep (until the earliest due time in the timer
//! index, which is all the engine keeps of it, and never longer than a minute), noticing when it
//! has fallen behind its timers ([`STALL`]), and the systemd watchdog's ping from the loop.

use super::Engine;
use crate::job::{Ms, now_ms};
use std::time::{Duration, Instant};

/// Longest sleep without looking at the clock again.
const MAX_SLEEP: Duration = Duration::from_secs(60);

/// How late on its timers the engine may find itself before it counts as having stalled: the
/// process was stopped, the machine suspended, the wall clock jumped forward, or the engine could
/// not commit for a while (a full disk). Occurrences that came due during a stall are *missed*,
/// exactly as during a downtime: each job's catch-up policy decides which of them still run (by
/// default only the latest), instead of all of them running back to back. The engine is never
/// this late when it is merely busy: a batch fires at most [`super::batch::FIRE_LIMIT`] jobs and
/// commits in milliseconds.
pub const STALL: Duration = Duration::from_secs(5);

impl Engine {
    /// Tells systemd the engine is alive, at half of the watchdog interval. Sent from this loop,
    /// not from a timer of its own, so that an engine that stops turning is restarted.
    pub(super) fn ping_watchdog(&mut self) {
        if let Some(interval) = self.config.watchdog
            && self.last_ping.elapsed() >= interval / 2
        {
            crate::systemd::watchdog();
            self.last_ping = Instant::now();
        }
    }

    /// How long the loop may wait without work: until the next due occurrence or pause end.
    pub(super) fn time_to_wake(&self) -> Duration {
        match self.next_wake {
            Some(due) => {
                let wait_ms = due.saturating_sub(now_ms()).max(0);
                Duration::from_millis(wait_ms as u64).min(MAX_SLEEP)
            }
            None => MAX_SLEEP,
        }
    }

    /// Notices that the engine is [`STALL`] or more late on its earliest timer: what came due
    /// until `now` was missed, and is handled as after a downtime.
    pub(super) fn notice_stall(&mut self, now: Ms) {
        let Some(wake) = self.next_wake else { return };
        let late_ms = now.saturating_sub(wake);
        if late_ms < STALL.as_millis() as i64 || self.shutting_down {
            return;
        }
        tracing::warn!(
            late_ms,
            "chimed fell {late_ms} ms behind its timers (it was stopped, the machine was suspended, \
             the clock jumped or it could not write): occurrences that came due meanwhile are \
             handled by each job's catch-up policy, as after a downtime"
        );
        self.on_time_since = self.on_time_since.max(now);
    }
}
