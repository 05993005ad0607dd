//! The schedules' tests: cron expressions in their zones (DST gaps and folds, checked against
//! an oracle over ten years of transitions), intervals from an anchor, and bad expressions
//! named by their field.

use super::*;
use jiff::civil::DateTime;
use jiff::tz::{AmbiguousOffset, TimeZone};
use jiff::{SignedDuration, Timestamp};
use std::collections::BTreeSet;

fn tz(name: &str) -> TimeZone {
    TimeZone::get(name).unwrap()
}

fn at(text: &str) -> Timestamp {
    text.parse().unwrap()
}

/// The firings of `expr` in `zone` after `from`, as RFC 3339 with offsets.
fn firings(expr: &str, zone: &str, from: &str, n: usize) -> Vec<String> {
    let z = tz(zone);
    let cron = CronSchedule::parse(expr, z.clone()).unwrap();
    let mut t = at(from);
    let mut out = Vec::new();
    for _ in 0..n {
        t = cron.next_after(t).unwrap();
        out.push(
            t.to_zoned_datetime(z.clone())
                .strftime("%Y-%m-%d %H:%M:%S %:z")
                .to_string(),
        );
    }
    out
}

#[test]
fn the_documented_examples_in_new_york() {
    // Spring forward, 2026-03-08: 02:00 EST becomes 03:00 EDT.
    assert_eq!(
        firings("30 2 * * *", "America/New_York", "2026-03-07T12:00:00Z", 2),
        ["2026-03-08 03:00:00 -04:00", "2026-03-09 02:30:00 -04:00"]
    );
    assert_eq!(
        firings(
            "*/30 2 * * *",
            "America/New_York",
            "2026-03-08T05:00:00Z",
            2
        ),
        ["2026-03-08 03:00:00 -04:00", "2026-03-09 02:00:00 -04:00"]
    );
    assert_eq!(
        firings("30 * * * *", "America/New_York", "2026-03-08T06:00:00Z", 2),
        ["2026-03-08 01:30:00 -05:00", "2026-03-08 03:30:00 -04:00"]
    );
    // Fall back, 2026-11-01: 02:00 EDT becomes 01:00 EST.
    assert_eq!(
        firings("30 1 * * *", "America/New_York", "2026-10-31T12:00:00Z", 2),
        ["2026-11-01 01:30:00 -04:00", "2026-11-02 01:30:00 -05:00"]
    );
    assert_eq!(
        firings("30 * * * *", "America/New_York", "2026-11-01T05:00:00Z", 3),
        [
            "2026-11-01 01:30:00 -04:00",
            "2026-11-01 01:30:00 -05:00",
            "2026-11-01 02:30:00 -05:00"
        ]
    );
    assert_eq!(
        firings(
            "*/30 2 * * *",
            "America/New_York",
            "2026-11-01T04:00:00Z",
            2
        ),
        ["2026-11-01 02:00:00 -05:00", "2026-11-01 02:30:00 -05:00"]
    );
}

#[test]
fn lord_howe_moves_by_half_an_hour() {
    // 2026-10-04 02:00 +10:30 becomes 02:30 +11:00; 2026-04-05 02:00 +11:00 becomes 01:30 +10:30.
    assert_eq!(
        firings(
            "15 2 * * *",
            "Australia/Lord_Howe",
            "2026-10-03T00:00:00Z",
            2
        ),
        ["2026-10-04 02:30:00 +11:00", "2026-10-05 02:15:00 +11:00"]
    );
    assert_eq!(
        firings(
            "*/20 * * * *",
            "Australia/Lord_Howe",
            "2026-04-04T14:30:00Z",
            4
        ),
        [
            "2026-04-05 01:40:00 +11:00",
            "2026-04-05 01:40:00 +10:30",
            "2026-04-05 02:00:00 +10:30",
            "2026-04-05 02:20:00 +10:30"
        ]
    );
}

#[test]
fn special_forms_seconds_and_years() {
    assert_eq!(
        firings("@hourly", "UTC", "2026-01-01T00:10:00Z", 1),
        ["2026-01-01 01:00:00 +00:00"]
    );
    assert_eq!(
        firings("*/20 * * * * *", "UTC", "2026-01-01T00:00:00Z", 2),
        ["2026-01-01 00:00:20 +00:00", "2026-01-01 00:00:40 +00:00"]
    );
    assert_eq!(
        firings("0 0 12 1 1 * 2030", "UTC", "2026-01-01T00:00:00Z", 1),
        ["2030-01-01 12:00:00 +00:00"]
    );
    assert_eq!(
        firings("0 9 L * *", "Asia/Kolkata", "2026-02-01T00:00:00Z", 1),
        ["2026-02-28 09:00:00 +05:30"]
    );
    assert_eq!(
        firings("0 9 * * 1#2", "UTC", "2026-12-01T00:00:00Z", 1),
        ["2026-12-14 09:00:00 +00:00"]
    );
}

#[test]
fn bad_expressions_name_the_field() {
    let err = CronSchedule::parse("61 * * * *", TimeZone::UTC).unwrap_err();
    assert!(err.0.contains("field 1 (minute)"), "{}", err.0);
    let err = CronSchedule::parse("0 25 * * *", TimeZone::UTC).unwrap_err();
    assert!(err.0.contains("field 2 (hour)"), "{}", err.0);
    let err = CronSchedule::parse("0 0 * * funday", TimeZone::UTC).unwrap_err();
    assert!(err.0.contains("day of week"), "{}", err.0);
    let err = CronSchedule::parse("* * *", TimeZone::UTC).unwrap_err();
    assert!(err.0.contains("has 3 fields"), "{}", err.0);
    let err = CronSchedule::parse("@often", TimeZone::UTC).unwrap_err();
    assert!(err.0.contains("@hourly"), "{}", err.0);
    let err =
        CronSchedule::parse_checked("0 0 30 2 *", TimeZone::UTC, Timestamp::now()).unwrap_err();
    assert!(err.0.contains("never fires"), "{}", err.0);
}

#[test]
fn every_counts_exact_elapsed_time_from_its_anchor() {
    let every = Every {
        anchor_ms: 1_000,
        interval_ms: 250,
    };
    assert_eq!(every.next_after(0), Some(1_000));
    assert_eq!(every.next_after(1_000), Some(1_250));
    assert_eq!(every.next_after(1_249), Some(1_250));
    assert_eq!(every.next_after(10_000), Some(10_250));
    let zero = Every {
        anchor_ms: 0,
        interval_ms: 0,
    };
    assert_eq!(zero.next_after(5), None);
}

// ---- ten years, five zones: the rule checked against an oracle around every transition ----

const ZONES: [&str; 5] = [
    "America/New_York",
    "Europe/London",
    "Australia/Lord_Howe",
    "Asia/Kolkata",
    "UTC",
];

/// Minute-resolution expressions: wildcard-hour (real time) and fixed-hour (wall clock) ones,
/// chosen to land in the gaps and folds of the zones above (including Lord Howe's half hour).
const EXPRESSIONS: [&str; 14] = [
    "*/15 * * * *",
    "@hourly",
    "30 */2 * * *",
    "*/7 * * * *",
    "0,30 * * * 1-5",
    "45 * * * *",
    "30 2 * * *",
    "0 1 * * *",
    "15,45 1,2 * * *",
    "*/10 2 * * *",
    "@daily",
    "30 1 * * 0",
    "0 2-3 * * *",
    "20 0-4/2 * * *",
];

fn civil_of(t: Timestamp, z: &TimeZone) -> DateTime {
    t.to_zoned_datetime(z.clone()).datetime()
}

/// What the rule says fires in [from, to), by brute force at one-minute resolution.
fn oracle(
    cron: &CronSchedule,
    z: &TimeZone,
    from: Timestamp,
    to: Timestamp,
) -> BTreeSet<Timestamp> {
    let raw: croner::Cron = cron_pattern(cron);
    let matches = |d: DateTime| raw.is_time_matching(&civil::Civil(d)).unwrap();
    let mut out = BTreeSet::new();
    let mut t = from;
    while t < to {
        let d = civil_of(t, z);
        if matches(d) {
            let second_pass = match z.to_ambiguous_timestamp(d).offset() {
                AmbiguousOffset::Fold { after, .. } => after.to_timestamp(d).unwrap() == t,
                _ => false,
            };
            if !(cron.follows_wall_clock() && second_pass) {
                out.insert(t);
            }
        }
        t += SignedDuration::from_mins(1);
    }
    if cron.follows_wall_clock() {
        // Each gap whose wall-clock times match fires once, at the transition.
        for transition in z.following(from).take_while(|tr| tr.timestamp() < to) {
            let ts = transition.timestamp();
            let before = ts - SignedDuration::from_secs(1);
            let old = civil_of(before, z) + SignedDuration::from_secs(1);
            let new = civil_of(ts, z);
            let mut d = old;
            while d < new {
                if matches(d) {
                    out.insert(ts);
                    break;
                }
                d += SignedDuration::from_mins(1);
            }
        }
    }
    out
}

fn cron_pattern(cron: &CronSchedule) -> croner::Cron {
    cron.raw().clone()
}

#[test]
fn ten_years_of_transitions_follow_the_rule() {
    let start = at("2026-01-01T00:00:00Z");
    let end = at("2036-01-01T00:00:00Z");
    let mut checked = 0;
    for zone in ZONES {
        let z = tz(zone);
        // The windows: a day either side of every transition, or a few plain days for UTC and
        // Kolkata, which have none.
        let mut windows: Vec<(Timestamp, Timestamp)> = z
            .following(start)
            .take_while(|tr| tr.timestamp() < end)
            .map(|tr| {
                let ts = tr.timestamp();
                (
                    ts - SignedDuration::from_hours(26),
                    ts + SignedDuration::from_hours(26),
                )
            })
            .collect();
        if windows.is_empty() {
            windows.push((start, start + SignedDuration::from_hours(72)));
            windows.push((end - SignedDuration::from_hours(72), end));
        } else {
            assert!(
                windows.len() >= 18,
                "{zone}: only {} transitions",
                windows.len()
            );
        }
        for expr in EXPRESSIONS {
            let cron = CronSchedule::parse(expr, z.clone()).unwrap();
            for &(from, to) in &windows {
                let expected = oracle(&cron, &z, from, to);
                let mut got = BTreeSet::new();
                let mut t = from - SignedDuration::from_secs(1);
                loop {
                    let next = cron.next_after(t).unwrap();
                    assert!(next > t, "{zone} {expr}: {next} does not follow {t}");
                    if next >= to {
                        break;
                    }
                    got.insert(next);
                    t = next;
                }
                let show = |s: &BTreeSet<Timestamp>| {
                    s.iter()
                        .map(|t| {
                            t.to_zoned_datetime(z.clone())
                                .strftime("%F %T %:z")
                                .to_string()
                        })
                        .collect::<Vec<_>>()
                };
                if got != expected {
                    let missing: BTreeSet<_> = expected.difference(&got).copied().collect();
                    let extra: BTreeSet<_> = got.difference(&expected).copied().collect();
                    panic!(
                        "{zone} {expr} around {from}: missing {:?}, extra {:?}",
                        show(&missing),
                        show(&extra)
                    );
                }
                // From any instant, not only from the previous firing (a restart, `--from`):
                // the next firing is the oracle's first one after it.
                let mut t = from;
                while t < to - SignedDuration::from_hours(3) {
                    let want = expected
                        .range((std::ops::Bound::Excluded(t), std::ops::Bound::Unbounded))
                        .next();
                    if let Some(want) = want {
                        let next = cron.next_after(t).unwrap();
                        assert_eq!(next, *want, "{zone} {expr}: next after {t}");
                    }
                    t += SignedDuration::from_secs(7 * 60 + 13);
                }
                checked += 1;
            }
        }
    }
    // 3 zones with about 20 transitions each in ten years, 2 without; 14 expressions.
    assert!(
        checked >= 14 * (3 * 18 + 4),
        "only {checked} windows checked"
    );
}

#[test]
fn ten_years_strictly_increase() {
    let start = at("2026-01-01T00:00:00Z");
    let end = at("2036-01-01T00:00:00Z");
    for zone in ZONES {
        let z = tz(zone);
        for expr in [
            "@hourly",
            "30 2 * * *",
            "30 1 * * *",
            "0 */3 * * *",
            "15 1,2,3 * * *",
            "0 0 L * *",
        ] {
            let cron = CronSchedule::parse(expr, z.clone()).unwrap();
            let mut t = start;
            let mut n = 0u64;
            while t < end {
                let next = cron.next_after(t).unwrap();
                assert!(next > t, "{zone} {expr}: {next} after {t}");
                t = next;
                n += 1;
            }
            assert!(n >= 100, "{zone} {expr}: {n} firings");
        }
        let every = Every {
            anchor_ms: start.as_millisecond(),
            interval_ms: 90 * 60_000,
        };
        let mut t = start.as_millisecond() - 1;
        while t < end.as_millisecond() {
            let next = every.next_after(t).unwrap();
            assert_eq!((next - start.as_millisecond()) % (90 * 60_000), 0);
            assert!(next > t);
            t = next;
        }
    }
}
