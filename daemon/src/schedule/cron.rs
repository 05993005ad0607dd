//! Cron expressions in a time zone, with chime's DST rule.
//!
//! # The rule
//!
//! Which instants a cron expression fires at is decided by its **hour field**:
//!
//! - **Wildcard hour** (`*` or `*/N`): the job follows real time, so an hourly job stays hourly.
//!   A wall-clock time that does not exist (skipped by a spring-forward change) does not fire; a
//!   wall-clock time that happens twice (a fall-back change) fires in both passes.
//! - **Fixed hour** (numbers, lists, ranges, also with steps such as `1-5/2`): the job follows
//!   the wall clock. A time inside a spring-forward gap fires once, at the first instant after
//!   the gap; several such times coalesce into that one firing. A time inside a fall-back fold
//!   fires once, at its first occurrence.
//!
//! This is cronie's rule, decided by the hour field alone. Examples in America/New_York:
//!
//! | expression     | 2026-03-08 (02:00 → 03:00)        | 2026-11-01 (02:00 → 01:00)            |
//! |----------------|-----------------------------------|----------------------------------------|
//! | `30 2 * * *`   | 03:00 EDT (after the gap)         | 02:30 EST, once (no fold at 02:30)     |
//! | `30 1 * * *`   | 01:30 EST                         | 01:30 EDT only (first pass)            |
//! | `*/30 2 * * *` | 03:00 EDT once (02:00 and 02:30 coalesce) | 02:00, 02:30 EST               |
//! | `30 * * * *`   | 01:30 EST, 03:30 EDT (no 02:30)   | 01:30 EDT, 01:30 EST, 02:30 EST        |
//!
//! Fire times strictly increase. The function is pure: the same expression, zone and instant
//! always give the same next firing.
//!
//! croner parses the expression (5 fields, or 6 with seconds first, or 7 with a year last;
//! `@hourly`, `@daily`, `@weekly`, `@monthly`, `@yearly`; `L`, `#`, `W`) and finds matching
//! wall-clock times over a zone-less type ([`super::civil::Civil`]); this module maps them to
//! instants.

use super::civil::Civil;
use croner::Cron;
use croner::parser::CronParser;
use jiff::civil::DateTime;
use jiff::tz::{AmbiguousOffset, TimeZone};
use jiff::{SignedDuration, Timestamp};

/// A parsed cron expression bound to a time zone.
#[derive(Debug, Clone)]
pub struct CronSchedule {
    cron: Cron,
    tz: TimeZone,
    /// The hour field is fixed: follow the wall clock (see the module docs).
    wall_clock: bool,
}

/// How an expression was refused, for the user.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct CronParseError(pub String);

const FIELD_NAMES_5: [&str; 5] = ["minute", "hour", "day of month", "month", "day of week"];
const FIELD_NAMES_6: [&str; 6] = [
    "second",
    "minute",
    "hour",
    "day of month",
    "month",
    "day of week",
];
const FIELD_NAMES_7: [&str; 7] = [
    "second",
    "minute",
    "hour",
    "day of month",
    "month",
    "day of week",
    "year",
];

fn parser() -> CronParser {
    CronParser::new()
}

impl CronSchedule {
    /// Parses `expr` for the zone `tz`. The error names the field that is wrong, where it can.
    pub fn parse(expr: &str, tz: TimeZone) -> Result<Self, CronParseError> {
        let cron = parser()
            .parse(expr)
            .map_err(|err| CronParseError(locate_error(expr, &err.to_string())))?;
        let wall_clock = !cron.pattern.hours.from_wildcard;
        Ok(Self {
            cron,
            tz,
            wall_clock,
        })
    }

    /// Parses `expr` and checks that it fires at all after `now` (30 February never does), for
    /// input from users.
    pub fn parse_checked(expr: &str, tz: TimeZone, now: Timestamp) -> Result<Self, CronParseError> {
        let schedule = Self::parse(expr, tz)?;
        if schedule.next_after(now).is_none() {
            return Err(CronParseError(format!(
                "cron expression {expr:?} never fires (no matching date within the years croner searches)"
            )));
        }
        Ok(schedule)
    }

    /// The zone the expression is read in.
    pub fn zone(&self) -> &TimeZone {
        &self.tz
    }

    /// The parsed pattern (for tests that check it by brute force).
    #[cfg(test)]
    pub(crate) fn raw(&self) -> &Cron {
        &self.cron
    }

    /// Whether the expression follows the wall clock (fixed hour) or real time (wildcard hour).
    pub fn follows_wall_clock(&self) -> bool {
        self.wall_clock
    }

    /// The first firing strictly after `after`, or `None` if there is none.
    pub fn next_after(&self, after: Timestamp) -> Option<Timestamp> {
        // Firings are whole seconds; compare at that resolution.
        let after = Timestamp::from_second(after.as_second()).ok()?;
        let mut best: Option<Timestamp> = None;

        // Real time, inside the first pass of a fold: wall-clock times earlier than ours will
        // come round again in the second pass, possibly before anything later on the wall clock.
        if !self.wall_clock
            && let Some(candidate) = self.second_pass_candidate(after)
        {
            best = Some(candidate);
        }

        let mut civil = self.tz.to_datetime(after);
        // Bounded walk: each step moves past a wall-clock match, a gap or a fold.
        for _ in 0..10_000 {
            let next = self.cron.find_next_occurrence(&Civil(civil), false).ok()?.0;
            let ambiguous = self.tz.to_ambiguous_timestamp(next);
            match ambiguous.offset() {
                AmbiguousOffset::Unambiguous { offset } => {
                    let ts = next.to_zoned_datetime_offset(offset)?;
                    if ts > after {
                        return min(best, ts);
                    }
                    civil = next;
                }
                AmbiguousOffset::Fold {
                    before,
                    after: later_offset,
                } => {
                    let earlier = next.to_zoned_datetime_offset(before)?;
                    let later = next.to_zoned_datetime_offset(later_offset)?;
                    if earlier > after {
                        return min(best, earlier);
                    }
                    if !self.wall_clock && later > after {
                        return min(best, later);
                    }
                    civil = next;
                }
                AmbiguousOffset::Gap { before, .. } => {
                    // The transition: the first instant after the gap.
                    let inside = next.to_zoned_datetime_offset(before)?;
                    let transition = self
                        .tz
                        .preceding(inside.checked_add(SignedDuration::from_secs(1)).ok()?)
                        .next()?
                        .timestamp();
                    if self.wall_clock {
                        if transition > after {
                            return min(best, transition);
                        }
                        civil = next;
                    } else {
                        // Nothing in the gap fires; resume the search at its end.
                        let end = self.tz.to_datetime(transition);
                        civil = end.checked_sub(SignedDuration::from_secs(1)).ok()?;
                    }
                }
            }
        }
        best
    }

    /// For real-time expressions: if `after` lies in the first pass of a fold, the earliest firing
    /// in the fold's second pass.
    fn second_pass_candidate(&self, after: Timestamp) -> Option<Timestamp> {
        let here = self.tz.to_datetime(after);
        let AmbiguousOffset::Fold {
            after: later_offset,
            ..
        } = self.tz.to_ambiguous_timestamp(here).offset()
        else {
            return None;
        };
        let later_here = here.to_zoned_datetime_offset(later_offset)?;
        if later_here <= after {
            return None; // already in the second pass
        }
        let transition = self.tz.following(after).next()?.timestamp();
        let start = self.tz.to_datetime(transition);
        let first = self.cron.find_next_occurrence(&Civil(start), true).ok()?.0;
        match self.tz.to_ambiguous_timestamp(first).offset() {
            AmbiguousOffset::Fold { after: later, .. } => {
                let ts = first.to_zoned_datetime_offset(later)?;
                (ts > after).then_some(ts)
            }
            _ => None,
        }
    }
}

fn min(best: Option<Timestamp>, ts: Timestamp) -> Option<Timestamp> {
    Some(best.map_or(ts, |b| b.min(ts)))
}

/// The instant of a civil time at a fixed offset.
trait AtOffset {
    fn to_zoned_datetime_offset(self, offset: jiff::tz::Offset) -> Option<Timestamp>;
}

impl AtOffset for DateTime {
    fn to_zoned_datetime_offset(self, offset: jiff::tz::Offset) -> Option<Timestamp> {
        offset.to_timestamp(self).ok()
    }
}

/// Says which field of a refused expression is wrong, by parsing each field alone in an
/// otherwise valid expression.
fn locate_error(expr: &str, croner_message: &str) -> String {
    let fields: Vec<&str> = expr.split_whitespace().collect();
    let names: &[&str] = match fields.len() {
        5 => &FIELD_NAMES_5,
        6 => &FIELD_NAMES_6,
        7 => &FIELD_NAMES_7,
        _ if expr.trim_start().starts_with('@') => {
            return format!(
                "cron expression {expr:?} is not valid: use @hourly, @daily, @weekly, @monthly or @yearly"
            );
        }
        n => {
            return format!(
                "cron expression {expr:?} has {n} fields; give 5 (minute hour day-of-month month day-of-week), 6 (seconds first) or 7 (year last)"
            );
        }
    };
    for (i, field) in fields.iter().enumerate() {
        let mut probe: Vec<&str> = vec!["*"; fields.len()];
        if fields.len() == 7 {
            probe[6] = "*";
        }
        probe[i] = field;
        if parser().parse(&probe.join(" ")).is_err() {
            return format!(
                "cron expression {expr:?}: field {} ({}) {field:?} is not valid",
                i + 1,
                names[i]
            );
        }
    }
    format!(
        "cron expression {expr:?} is not valid: {}",
        croner_message.to_lowercase()
    )
}
