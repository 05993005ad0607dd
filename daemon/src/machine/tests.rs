//! The state machine's tests: each event in each state, the catch-up, overlap, retry and
//! count/until rules, and a property test that no sequence of events breaks its invariants.

use super::*;
use crate::job::{
    CatchUpPolicy, Exec, MissedReason, Ms, OpenRun, OverlapPolicy, Owed, PauseInfo, Run, Schedule,
};
use chime_proto::{Command, JobId, JobState};
use jiff::tz::TimeZone;
use proptest::prelude::*;
use std::collections::HashMap;

// A multiple of MIN, so that NOW is an occurrence of the every-minute test schedule.
const NOW: Ms = 10_020_000;
const MIN: Ms = 60_000;
const OPEN: RunId = RunId(7);
const OTHER: RunId = RunId(6);

fn ctx() -> Ctx {
    Ctx {
        now: NOW,
        on_time_since: 0,
        free_slots: 10,
        queue_paused: false,
        next_run: 100,
        local_tz: TimeZone::UTC,
        host: None,
    }
}

/// A job that fires every minute on the minute, with default policies.
fn job(state: State) -> Job {
    Job {
        id: JobId(1),
        name: None,
        owner: 1000,
        owner_name: "ann".into(),
        created_ms: 0,
        command: Command::Argv(vec!["/bin/true".into()]),
        cwd: "/".into(),
        env: vec![],
        schedule: Schedule::Every {
            anchor_ms: 0,
            interval_ms: MIN as u64,
        },
        count: None,
        until_ms: None,
        catch_up: CatchUpPolicy::Latest,
        deadline_ms: None,
        overlap: OverlapPolicy::Skip,
        queue: "default".into(),
        exec: Exec::default(),
        pause: None,
        runs_started: state.runs().len() as u32,
        occurrences_started: state.runs().len() as u32,
        state,
        last_outcome: None,
        missed_total: 0,
        missed: vec![],
        source: None,
    }
}

fn active(next: Next, owed: Vec<Ms>, runs: Vec<OpenRun>, waiting: bool, cancelling: bool) -> State {
    State::Active {
        next,
        owed: owed.into_iter().map(Owed::first).collect(),
        runs,
        wake: None,
        waiting,
        cancelling,
    }
}

fn open(pid: Option<u32>) -> OpenRun {
    OpenRun {
        run: OPEN,
        attempt: 1,
        due_ms: NOW - MIN,
        started_ms: NOW - MIN,
        pid,
        manual: false,
        host: None,
    }
}

fn pause() -> PauseInfo {
    PauseInfo {
        since_ms: NOW - 1,
        until_ms: None,
        reason: Some("maintenance".into()),
        by_uid: 0,
    }
}

/// Every state a job can be in, with a label.
fn states() -> Vec<(&'static str, Job)> {
    let due = NOW; // an occurrence due now
    let later = NOW + MIN;
    let mut held = job(active(Next::Held(due), vec![], vec![], false, false));
    held.pause = Some(pause());
    vec![
        (
            "due",
            job(active(Next::Scheduled(due), vec![], vec![], false, false)),
        ),
        (
            "future",
            job(active(Next::Scheduled(later), vec![], vec![], false, false)),
        ),
        ("held", held),
        (
            "held-queue",
            job(active(Next::Held(due), vec![], vec![], true, false)),
        ),
        (
            "queued",
            job(active(
                Next::Scheduled(later),
                vec![due],
                vec![],
                true,
                false,
            )),
        ),
        (
            "starting",
            job(active(
                Next::Scheduled(later),
                vec![],
                vec![open(None)],
                false,
                false,
            )),
        ),
        (
            "running",
            job(active(
                Next::Scheduled(later),
                vec![],
                vec![open(Some(42))],
                false,
                false,
            )),
        ),
        (
            "cancelling",
            job(active(
                Next::None,
                vec![],
                vec![open(Some(42))],
                false,
                true,
            )),
        ),
        ("succeeded", job(State::Succeeded { at_ms: 1 })),
        ("failed", job(State::Failed { at_ms: 1 })),
        ("cancelled", job(State::Cancelled { at_ms: 1 })),
    ]
}

fn spec() -> Spec {
    Spec {
        command: Command::Shell("echo new".into()),
        cwd: "/tmp".into(),
        env: vec![],
        schedule: Schedule::Every {
            anchor_ms: 0,
            interval_ms: 5 * MIN as u64,
        },
        count: None,
        until_ms: None,
        catch_up: CatchUpPolicy::Latest,
        deadline_ms: None,
        overlap: OverlapPolicy::Skip,
        queue: "default".into(),
        exec: Exec::default(),
    }
}

fn events() -> Vec<(&'static str, Event)> {
    vec![
        ("fire", Event::Fire),
        ("release", Event::Release),
        (
            "spawned",
            Event::Spawned {
                run: OPEN,
                pid: 43,
                started_ms: NOW,
            },
        ),
        ("unstarted", Event::Unstarted { run: OPEN }),
        (
            "spawned-other",
            Event::Spawned {
                run: OTHER,
                pid: 43,
                started_ms: NOW,
            },
        ),
        (
            "spawn-failed",
            Event::SpawnFailed {
                run: OPEN,
                error: "enoent".into(),
            },
        ),
        (
            "spawn-failed-other",
            Event::SpawnFailed {
                run: OTHER,
                error: "enoent".into(),
            },
        ),
        (
            "exit-0",
            Event::Exited {
                run: OPEN,
                outcome: Outcome::Exited(0),
            },
        ),
        (
            "exit-3",
            Event::Exited {
                run: OPEN,
                outcome: Outcome::Exited(3),
            },
        ),
        (
            "signaled",
            Event::Exited {
                run: OPEN,
                outcome: Outcome::Signaled(9),
            },
        ),
        (
            "exit-other",
            Event::Exited {
                run: OTHER,
                outcome: Outcome::Exited(0),
            },
        ),
        ("interrupted", Event::Interrupted { run: OPEN }),
        ("interrupted-other", Event::Interrupted { run: OTHER }),
        (
            "lost",
            Event::Lost {
                ended: Default::default(),
                host: None,
            },
        ),
        ("cancel", Event::Cancel),
        ("pause", Event::Pause(pause())),
        ("resume", Event::Resume),
        ("skip", Event::Skip),
        ("trigger", Event::Trigger),
        ("retry", Event::Retry),
        ("replace", Event::Replace(Box::new(spec()))),
    ]
}

/// What each pair must give, written as a table: the new state, or the refusal.
fn expected(state: &str, event: &str) -> &'static str {
    let is_final = matches!(state, "succeeded" | "failed" | "cancelled");
    let has_run = matches!(state, "starting" | "running" | "cancelling");
    match (state, event) {
        // Final states absorb everything but a replace, and a retry of a failed job.
        (_, "replace") if is_final => "scheduled",
        ("failed", "retry") => "running",
        (_, "retry") if is_final => "refused:invalid",
        ("held" | "cancelling", "retry") => "refused:invalid",
        (_, "retry") => "running",
        (_, "cancel" | "trigger" | "skip" | "pause" | "resume") if is_final => "refused:final",
        (_, "fire" | "release" | "lost") if is_final => "refused:not-applicable",
        _ if is_final => "refused:stale",
        // Runner events for a run that is not open.
        (_, e) if e.ends_with("-other") => "refused:stale",
        (
            _,
            "spawned" | "unstarted" | "spawn-failed" | "exit-0" | "exit-3" | "signaled"
            | "interrupted",
        ) if !has_run => "refused:stale",
        (_, "lost") if !has_run => "refused:not-applicable",
        // The timer only fires a scheduled occurrence that is due.
        ("due", "fire") => "running",
        (_, "fire") => "refused:not-applicable",
        // A paused job holds; everything else starts what it owes or holds.
        ("held", "release") => "paused",
        ("held", "resume") => "running",
        ("held-queue" | "queued", "release") => "running",
        ("due" | "future", "release") => "scheduled",
        (_, "release") => "running",
        (_, "resume") => "refused:invalid",
        (_, "pause") if state == "cancelling" => "refused:invalid",
        (_, "pause") if has_run => "running",
        (_, "pause") => "paused",
        // Cancel: at once without a run, after the run otherwise.
        ("cancelling", "cancel") => "refused:invalid",
        (_, "cancel") if has_run => "running",
        (_, "cancel") => "cancelled",
        ("cancelling", "skip") => "refused:invalid",
        ("held", "skip") => "paused",
        ("queued", "skip") => "queued",
        (_, "skip") if has_run => "running",
        (_, "skip") => "scheduled",
        ("held", "trigger") => "refused:invalid",
        ("cancelling", "trigger") => "refused:invalid",
        (_, "trigger") if has_run => "refused:invalid", // overlap skip
        (_, "trigger") => "running",
        ("cancelling", "replace") => "refused:invalid",
        ("held", "replace") => "paused",
        (_, "replace") if has_run => "running",
        (_, "replace") => "scheduled",
        // Run events on a job with a run.
        ("cancelling", "spawned") => "running",
        (_, "spawned") => "running",
        ("cancelling", _) => "cancelled",
        // Lost before its start was recorded: it may never have run, so it runs again.
        ("starting", "lost") => "running",
        // A run that never started is owed again, and starts again here (a slot is free).
        (_, "unstarted") => "running",
        (_, "spawn-failed" | "exit-0" | "exit-3" | "signaled" | "interrupted" | "lost") => {
            "scheduled"
        }
        _ => unreachable!("pair {state} / {event} missing from the table"),
    }
}

#[test]
fn every_state_and_event_pair() {
    let mut checked = 0;
    for (state_label, before) in states() {
        for (event_label, event) in events() {
            let got = match step(&before, event.clone(), &mut ctx()) {
                Ok(step) => step.job.kind().as_str().to_owned(),
                Err(Refusal::Final(_)) => "refused:final".into(),
                Err(Refusal::Stale) => "refused:stale".into(),
                Err(Refusal::NotApplicable { .. }) => "refused:not-applicable".into(),
                Err(Refusal::Invalid(_)) => "refused:invalid".into(),
            };
            assert_eq!(
                got,
                expected(state_label, event_label),
                "{state_label} + {event_label}"
            );
            checked += 1;
        }
    }
    assert_eq!(checked, 11 * 21);
}

fn fire(j: &Job, c: &mut Ctx) -> Step {
    step(j, Event::Fire, c).unwrap()
}

fn owed(j: &Job) -> Vec<Ms> {
    match &j.state {
        State::Active { owed, .. } => owed.iter().map(|o| o.due_ms).collect(),
        _ => vec![],
    }
}

fn next(j: &Job) -> Next {
    match &j.state {
        State::Active { next, .. } => *next,
        _ => Next::None,
    }
}

#[test]
fn a_due_occurrence_starts_a_run_and_schedules_the_next() {
    let j = job(State::scheduled(Some(NOW)));
    let mut c = ctx();
    let s = fire(&j, &mut c);
    assert_eq!(s.actions, vec![Action::Spawn { run: RunId(100) }]);
    assert_eq!(s.runs.len(), 1);
    assert_eq!(
        (s.runs[0].due_ms, s.runs[0].started_ms, s.runs[0].attempt),
        (NOW, NOW, 1)
    );
    assert_eq!(next(&s.job), Next::Scheduled(NOW + MIN));
    assert_eq!((c.next_run, c.free_slots), (101, 9));
}

/// Chimed was down from before NOW-20m until just after NOW-10m: eleven occurrences missed.
fn after_downtime(catch_up: CatchUpPolicy) -> (Step, Ctx) {
    let mut j = job(State::scheduled(Some(NOW - 20 * MIN)));
    j.catch_up = catch_up;
    let mut c = ctx();
    c.on_time_since = NOW - 10 * MIN + 100;
    c.now = c.on_time_since + 400; // the first batch after the start
    (fire(&j, &mut c), c)
}

#[test]
fn catch_up_skip_runs_nothing_that_was_missed() {
    let (s, _) = after_downtime(CatchUpPolicy::Skip);
    assert!(s.actions.is_empty());
    assert_eq!(s.job.missed_total, 11);
    assert!(
        s.job
            .missed
            .iter()
            .all(|m| m.reason == MissedReason::CatchUp)
    );
    assert_eq!(next(&s.job), Next::Scheduled(NOW - 9 * MIN));
    assert_eq!(s.job.kind(), JobState::Scheduled);
}

#[test]
fn catch_up_latest_runs_once_for_everything_missed() {
    let (s, _) = after_downtime(CatchUpPolicy::Latest);
    assert_eq!(s.actions.len(), 1);
    assert_eq!(
        s.runs[0].due_ms,
        NOW - 10 * MIN,
        "the latest missed occurrence"
    );
    assert_eq!(s.job.missed_total, 10);
}

#[test]
fn catch_up_all_runs_each_missed_one_in_turn_up_to_the_limit() {
    let (s, _) = after_downtime(CatchUpPolicy::All { limit: 4 });
    // OverlapPolicy skip: one runs now, the other three are owed and run one after another.
    assert_eq!(s.actions.len(), 1);
    assert_eq!(s.runs[0].due_ms, NOW - 20 * MIN);
    assert_eq!(
        owed(&s.job),
        vec![NOW - 19 * MIN, NOW - 18 * MIN, NOW - 17 * MIN]
    );
    assert_eq!(s.job.missed_total, 7);
    // Each end starts the next.
    let mut c = ctx();
    let s2 = step(
        &s.job,
        Event::Exited {
            run: RunId(100),
            outcome: Outcome::Exited(0),
        },
        &mut c,
    )
    .unwrap();
    assert_eq!(s2.runs.iter().filter(|r| r.outcome.is_none()).count(), 1);
    assert_eq!(owed(&s2.job).len(), 2);
}

#[test]
fn a_deadline_drops_occurrences_that_cannot_start_in_time() {
    let mut j = job(State::scheduled(Some(NOW - 3 * MIN)));
    j.deadline_ms = Some(90_000);
    j.catch_up = CatchUpPolicy::All { limit: 10 };
    let mut c = ctx();
    let s = fire(&j, &mut c);
    // NOW-3m and NOW-2m are past the deadline; NOW-1m and NOW are within it.
    assert_eq!(
        s.job
            .missed
            .iter()
            .filter(|m| m.reason == MissedReason::Deadline)
            .count(),
        2
    );
    assert_eq!(s.runs[0].due_ms, NOW - MIN);
}

#[test]
fn overlap_policies() {
    let busy = || {
        job(active(
            Next::Scheduled(NOW),
            vec![],
            vec![open(Some(42))],
            false,
            false,
        ))
    };
    let mut c = ctx();
    // skip: the occurrence is recorded as missed.
    let s = fire(&busy(), &mut c);
    assert!(s.actions.is_empty());
    assert_eq!(s.job.missed[0].reason, MissedReason::Overlap);
    // queue: owed until the run ends.
    let mut j = busy();
    j.overlap = OverlapPolicy::Queue;
    let s = fire(&j, &mut ctx());
    assert!(s.actions.is_empty());
    assert_eq!(owed(&s.job), vec![NOW]);
    assert_eq!(s.job.kind(), JobState::Running);
    let s = step(
        &s.job,
        Event::Exited {
            run: OPEN,
            outcome: Outcome::Exited(0),
        },
        &mut ctx(),
    )
    .unwrap();
    assert!(matches!(s.actions[..], [Action::Spawn { .. }]));
    // allow: runs beside it.
    let mut j = busy();
    j.overlap = OverlapPolicy::Allow;
    let s = fire(&j, &mut ctx());
    assert!(matches!(s.actions[..], [Action::Spawn { .. }]));
    assert_eq!(s.job.state.runs().len(), 2);
    // replace: the running run is terminated; the new one starts when it has ended.
    let mut j = busy();
    j.overlap = OverlapPolicy::Replace;
    let s = fire(&j, &mut ctx());
    assert_eq!(s.actions, vec![Action::Terminate { run: OPEN }]);
    assert_eq!(owed(&s.job), vec![NOW]);
    let s = step(
        &s.job,
        Event::Exited {
            run: OPEN,
            outcome: Outcome::Signaled(15),
        },
        &mut ctx(),
    )
    .unwrap();
    assert!(matches!(s.actions[..], [Action::Spawn { .. }]));
}

#[test]
fn a_full_queue_makes_the_job_wait_and_a_slot_releases_it() {
    let j = job(State::scheduled(Some(NOW)));
    let mut c = ctx();
    c.free_slots = 0;
    let s = fire(&j, &mut c);
    assert!(s.actions.is_empty());
    assert_eq!(s.job.kind(), JobState::Queued);
    assert_eq!(s.job.state.waiting_ms(), Some(NOW));
    let mut c = ctx();
    c.now = NOW + 5_000;
    let s = step(&s.job, Event::Release, &mut c).unwrap();
    assert_eq!(s.runs[0].due_ms, NOW, "starts with its own due time");
    assert_eq!(s.job.state.waiting_ms(), None);
}

#[test]
fn a_paused_job_holds_and_catches_up_on_resume() {
    let mut j = job(State::scheduled(Some(NOW - 5 * MIN)));
    j.pause = Some(pause());
    let mut c = ctx();
    c.now = NOW - 5 * MIN;
    let held = fire(&j, &mut c).job;
    assert_eq!(next(&held), Next::Held(NOW - 5 * MIN));
    assert_eq!(held.kind(), JobState::Paused);
    assert_eq!(
        held.state.waiting_ms(),
        None,
        "a job-level pause is not in the waiting index"
    );
    // Resumed five minutes later: six occurrences came due while held; latest runs once.
    let s = step(&held, Event::Resume, &mut ctx()).unwrap();
    assert_eq!(s.actions.len(), 1);
    assert_eq!(s.runs[0].due_ms, NOW);
    assert_eq!(s.job.missed_total, 5);
    assert_eq!(next(&s.job), Next::Scheduled(NOW + MIN));
    assert_eq!(s.job.pause, None);
}

#[test]
fn a_paused_queue_holds_the_job_in_the_waiting_index() {
    let j = job(State::scheduled(Some(NOW)));
    let mut c = ctx();
    c.queue_paused = true;
    let s = fire(&j, &mut c);
    assert_eq!(next(&s.job), Next::Held(NOW));
    assert_eq!(s.job.state.waiting_ms(), Some(NOW));
    assert_eq!(s.job.kind(), JobState::Queued);
}

#[test]
fn count_and_until_end_a_recurring_job_by_its_last_run() {
    let mut j = job(State::scheduled(Some(NOW)));
    j.count = Some(2);
    let mut c = ctx();
    let s = fire(&j, &mut c);
    let s = step(
        &s.job,
        Event::Exited {
            run: RunId(100),
            outcome: Outcome::Exited(0),
        },
        &mut c,
    )
    .unwrap();
    c.now = NOW + MIN;
    let s = fire(&s.job, &mut c);
    assert_eq!(
        next(&s.job),
        Next::None,
        "two runs started: no more occurrences"
    );
    let s = step(
        &s.job,
        Event::Exited {
            run: RunId(101),
            outcome: Outcome::Exited(1),
        },
        &mut c,
    )
    .unwrap();
    assert_eq!(s.job.kind(), JobState::Failed, "final by its last run");

    let mut j = job(State::scheduled(Some(NOW)));
    j.until_ms = Some(NOW + 30_000);
    let s = fire(&j, &mut ctx());
    assert_eq!(next(&s.job), Next::None);
    let s = step(
        &s.job,
        Event::Exited {
            run: RunId(100),
            outcome: Outcome::Exited(0),
        },
        &mut ctx(),
    )
    .unwrap();
    assert_eq!(s.job.kind(), JobState::Succeeded);
}

#[test]
fn skip_skips_only_the_next_occurrence() {
    let j = job(State::scheduled(Some(NOW + MIN)));
    let s = step(&j, Event::Skip, &mut ctx()).unwrap();
    assert_eq!(next(&s.job), Next::Scheduled(NOW + 2 * MIN));
    assert_eq!(s.job.missed[0].reason, MissedReason::Skipped);
    let mut once = job(State::scheduled(Some(NOW + MIN)));
    once.schedule = Schedule::Once { at_ms: NOW + MIN };
    assert!(matches!(
        step(&once, Event::Skip, &mut ctx()),
        Err(Refusal::Invalid(_))
    ));
}

#[test]
fn a_one_shot_job_due_while_chimed_was_down_runs_at_start() {
    let mut j = job(State::scheduled(Some(NOW - 5 * MIN)));
    j.schedule = Schedule::Once {
        at_ms: NOW - 5 * MIN,
    };
    let mut c = ctx();
    c.on_time_since = NOW - 1000;
    let s = fire(&j, &mut c);
    assert_eq!(s.runs[0].due_ms, NOW - 5 * MIN);
    assert_eq!(next(&s.job), Next::None);
    let s = step(
        &s.job,
        Event::Exited {
            run: RunId(100),
            outcome: Outcome::Exited(0),
        },
        &mut c,
    )
    .unwrap();
    assert_eq!(s.job.kind(), JobState::Succeeded);
}

#[test]
fn cron_schedules_fire_in_their_zone() {
    let mut j = job(State::scheduled(Some(NOW)));
    j.schedule = Schedule::Cron {
        expr: "0 3 * * *".into(),
        tz: Some("Asia/Kolkata".into()),
    };
    let s = fire(&j, &mut ctx());
    let Next::Scheduled(due) = next(&s.job) else {
        panic!("no next")
    };
    let at = jiff::Timestamp::from_millisecond(due)
        .unwrap()
        .to_zoned_datetime(TimeZone::get("Asia/Kolkata").unwrap());
    assert_eq!((at.hour(), at.minute()), (3, 0));
}

fn with_retries(retries: u32) -> Job {
    let mut j = job(State::scheduled(Some(NOW)));
    j.schedule = Schedule::Once { at_ms: NOW };
    j.exec.retries = retries;
    j.exec.backoff_base_ms = 10_000;
    j.exec.backoff_max_ms = 25_000;
    j
}

fn exit(j: &Job, code: i32, c: &mut Ctx) -> Step {
    let run = j.state.runs()[0].run;
    step(
        j,
        Event::Exited {
            run,
            outcome: Outcome::Exited(code),
        },
        c,
    )
    .unwrap()
}

#[test]
fn a_failed_attempt_is_retried_after_its_backoff_then_the_job_fails() {
    let mut c = ctx();
    let s = fire(&with_retries(2), &mut c);
    assert_eq!(s.runs[0].attempt, 1);
    // Attempt 1 fails: attempt 2 is owed no sooner than 10 s (plus at most 10% jitter).
    let s = exit(&s.job, 1, &mut c);
    let owed = match &s.job.state {
        State::Active { owed, wake, .. } => {
            assert_eq!(
                *wake,
                Some(owed[0].not_before_ms),
                "the job waits in the timer index"
            );
            owed.clone()
        }
        other => panic!("{other:?}"),
    };
    assert_eq!((owed[0].due_ms, owed[0].attempt), (NOW, 2));
    let delay = owed[0].not_before_ms - NOW;
    assert!((10_000..=11_000).contains(&delay), "{delay}");
    assert_eq!(s.job.state.due_ms(), Some(owed[0].not_before_ms));
    assert_eq!(s.job.kind(), JobState::Queued);
    // Not before its time.
    assert!(matches!(
        step(&s.job, Event::Fire, &mut ctx()),
        Err(Refusal::NotApplicable { .. })
    ));
    c.now = owed[0].not_before_ms;
    let s = fire(&s.job, &mut c);
    assert_eq!(
        (s.runs[0].attempt, s.runs[0].due_ms),
        (2, NOW),
        "same occurrence, attempt 2"
    );
    // Attempt 2 fails: attempt 3 waits twice as long, capped at 25 s.
    let s = exit(&s.job, 1, &mut c);
    let State::Active { owed, .. } = &s.job.state else {
        panic!()
    };
    let delay = owed[0].not_before_ms - c.now;
    assert!((20_000..=22_000).contains(&delay), "{delay}");
    c.now = owed[0].not_before_ms;
    let s = fire(&s.job, &mut c);
    let s = exit(&s.job, 1, &mut c);
    assert_eq!(s.job.kind(), JobState::Failed, "retries exhausted");
    assert_eq!(s.job.runs_started, 3);
}

#[test]
fn a_success_or_an_outcome_not_retried_ends_the_occurrence() {
    let mut c = ctx();
    let s = fire(&with_retries(3), &mut c);
    let s = exit(&s.job, 0, &mut c);
    assert_eq!(s.job.kind(), JobState::Succeeded);

    let mut j = with_retries(3);
    j.exec.retry_on = Exec::retry_bit(chime_proto::RetryOn::TimedOut);
    let s = fire(&j, &mut c);
    let s = exit(&s.job, 2, &mut c);
    assert_eq!(
        s.job.kind(),
        JobState::Failed,
        "exit codes are not retried by this policy"
    );
    let s = fire(&j, &mut ctx());
    let run = s.job.state.runs()[0].run;
    let s = step(
        &s.job,
        Event::Exited {
            run,
            outcome: Outcome::TimedOut,
        },
        &mut ctx(),
    )
    .unwrap();
    assert_eq!(s.job.kind(), JobState::Queued, "a timeout is retried");
}

#[test]
fn a_lost_run_is_retried_by_policy() {
    let j = job(active(
        Next::None,
        vec![],
        vec![open(Some(42))],
        false,
        false,
    ));
    let mut j = j;
    j.schedule = Schedule::Once { at_ms: NOW - MIN };
    j.exec.retries = 1;
    let s = step(
        &j,
        Event::Lost {
            ended: Default::default(),
            host: None,
        },
        &mut ctx(),
    )
    .unwrap();
    assert_eq!(s.runs[0].outcome, Some(Outcome::Lost));
    let State::Active { owed, .. } = &s.job.state else {
        panic!("{:?}", s.job.state)
    };
    assert_eq!(owed[0].attempt, 2);
}

#[test]
fn a_run_lost_before_its_start_was_recorded_uses_up_no_retry() {
    // Attempt 2 of 2 (one retry) was opened, and chimed died before its start was recorded.
    let mut unstarted = open(None);
    unstarted.attempt = 2;
    let mut j = job(active(Next::None, vec![], vec![unstarted], false, false));
    j.schedule = Schedule::Once { at_ms: NOW - MIN };
    j.exec.retries = 1;
    let s = step(
        &j,
        Event::Lost {
            ended: Default::default(),
            host: None,
        },
        &mut ctx(),
    )
    .unwrap();
    assert_eq!(s.runs[0].outcome, Some(Outcome::Lost));
    // The same attempt runs again: the retry it was is still owed.
    assert_eq!((s.runs[1].attempt, s.runs[1].outcome.clone()), (2, None));
    let rerun = s.runs[1].id;
    // It fails: that was the last retry, since attempt 2 has now run.
    let s = step(
        &s.job,
        Event::Exited {
            run: rerun,
            outcome: Outcome::Exited(1),
        },
        &mut ctx(),
    )
    .unwrap();
    assert_eq!(s.job.kind(), JobState::Failed);
}

#[test]
fn retry_runs_a_failed_job_again_now() {
    let s = step(&job(State::Failed { at_ms: 1 }), Event::Retry, &mut ctx()).unwrap();
    assert_eq!(s.runs[0].due_ms, NOW);
    assert_eq!(s.runs[0].attempt, 1);
    let err = step(
        &job(State::Succeeded { at_ms: 1 }),
        Event::Retry,
        &mut ctx(),
    )
    .unwrap_err();
    assert!(err.to_string().contains("only a failed job"), "{err}");
}

#[test]
fn backoff_doubles_up_to_its_cap_with_bounded_jitter() {
    let e = Exec {
        backoff_base_ms: 1000,
        backoff_max_ms: 5000,
        ..Exec::default()
    };
    for seed in 0..200 {
        let d: Vec<u64> = (1..=5).map(|n| e.backoff_ms(n, seed)).collect();
        for (n, (got, want)) in d.iter().zip([1000u64, 2000, 4000, 5000, 5000]).enumerate() {
            assert!(
                (want..=want + want / 10).contains(got),
                "retry {}: {got} for {want}",
                n + 1
            );
        }
    }
    assert_eq!(e.backoff_ms(3, 7), e.backoff_ms(3, 7), "reproducible");
}

#[test]
fn cancel_ends_every_open_run_whether_or_not_its_start_was_recorded() {
    for pid in [None, Some(42)] {
        let s = step(
            &job(active(Next::None, vec![], vec![open(pid)], false, false)),
            Event::Cancel,
            &mut ctx(),
        )
        .unwrap();
        assert_eq!(
            s.actions,
            vec![Action::Terminate { run: OPEN }],
            "pid {pid:?}"
        );
        assert_eq!(
            s.job.kind(),
            JobState::Running,
            "cancelled when the run has ended"
        );
        let s = step(&s.job, Event::Unstarted { run: OPEN }, &mut ctx()).unwrap();
        assert_eq!(s.job.kind(), JobState::Cancelled);
        assert_eq!(
            s.unrecorded,
            vec![OPEN],
            "a run that never started leaves no record"
        );
    }
}

fn usage() -> chime_proto::RunUsage {
    chime_proto::RunUsage {
        cpu_user_us: 1_200_000,
        cpu_system_us: 30_000,
        memory_peak_bytes: Some(45 << 20),
        io_read_bytes: None,
        io_write_bytes: Some(4096),
    }
}

#[test]
fn a_finished_run_records_its_usage_with_its_end() {
    let j = job(active(
        Next::None,
        vec![],
        vec![open(Some(42))],
        false,
        false,
    ));
    let s = step(
        &j,
        Event::Finished {
            run: OPEN,
            outcome: Outcome::Exited(0),
            pid: Some(42),
            started_ms: NOW - MIN,
            ended_ms: NOW - 5,
            usage: Some(usage()),
        },
        &mut ctx(),
    )
    .unwrap();
    let closed = s.runs.iter().find(|r| r.id == OPEN).expect("its record");
    assert_eq!(closed.outcome, Some(Outcome::Exited(0)));
    assert_eq!(closed.finished_ms, Some(NOW - 5));
    assert_eq!(closed.usage, Some(usage()));
    assert_eq!(closed.ended_at_start, None);
    // A run that ends without usage (no cgroup) records none.
    let s = step(
        &j,
        Event::Finished {
            run: OPEN,
            outcome: Outcome::Exited(0),
            pid: Some(42),
            started_ms: NOW - MIN,
            ended_ms: NOW - 5,
            usage: None,
        },
        &mut ctx(),
    )
    .unwrap();
    assert_eq!(s.runs[0].usage, None);
}

#[test]
fn a_run_still_open_has_no_usage() {
    let s = fire(&job(State::scheduled(Some(NOW))), &mut ctx());
    assert_eq!(
        (s.runs[0].outcome.clone(), s.runs[0].usage.clone()),
        (None, None)
    );
}

#[test]
fn a_lost_run_records_how_many_of_its_processes_were_ended_at_start() {
    let mut second = open(Some(43));
    second.run = OTHER;
    let mut j = job(active(
        Next::None,
        vec![],
        vec![open(Some(42)), second],
        false,
        false,
    ));
    j.overlap = OverlapPolicy::Allow;
    let ended = [(OPEN, 3), (RunId(99), 1)].into_iter().collect();
    let s = step(&j, Event::Lost { ended, host: None }, &mut ctx()).unwrap();
    let record = |id| s.runs.iter().find(|r| r.id == id).expect("a record");
    assert_eq!(record(OPEN).outcome, Some(Outcome::Lost));
    assert_eq!(record(OPEN).ended_at_start, Some(3));
    assert_eq!(record(OTHER).outcome, Some(Outcome::Lost));
    assert_eq!(
        record(OTHER).ended_at_start,
        None,
        "nothing of it was found"
    );
    assert!(s.runs.iter().all(|r| r.id != RunId(99)));
}

#[test]
fn an_oom_kill_is_retried_as_a_kill() {
    let killed_only = |kind| {
        let mut j = with_retries(1);
        j.exec.retry_on = Exec::retry_bit(kind);
        j
    };
    let oom = |j: &Job| {
        let s = fire(j, &mut ctx());
        let run = s.job.state.runs()[0].run;
        step(
            &s.job,
            Event::Exited {
                run,
                outcome: Outcome::OomKilled,
            },
            &mut ctx(),
        )
        .unwrap()
    };
    let s = oom(&killed_only(chime_proto::RetryOn::Killed));
    assert_eq!(
        s.job.kind(),
        JobState::Queued,
        "killed covers the OOM killer"
    );
    assert_eq!(s.job.last_outcome, Some(Outcome::OomKilled));
    let s = oom(&killed_only(chime_proto::RetryOn::Exit));
    assert_eq!(
        s.job.kind(),
        JobState::Failed,
        "an OOM kill is no exit code"
    );
}

// ---- property test: random event sequences keep the invariants ----

fn any_event() -> impl Strategy<Value = Event> {
    let run = (100u64..106).prop_map(RunId);
    prop_oneof![
        4 => Just(Event::Fire),
        2 => Just(Event::Release),
                3 => (run.clone(), 1u32..100).prop_map(|(run, pid)| Event::Spawned { run, pid, started_ms: NOW }),
        1 => run.clone().prop_map(|run| Event::Unstarted { run }),
        1 => run.clone().prop_map(|run| Event::SpawnFailed { run, error: "x".into() }),
        3 => (run.clone(), -1i32..3).prop_map(|(run, code)| Event::Exited { run, outcome: Outcome::Exited(code) }),
        1 => run.prop_map(|run| Event::Interrupted { run }),
        1 => Just(Event::Lost { ended: Default::default(), host: None }),
        1 => Just(Event::Cancel),
        1 => Just(Event::Pause(pause())),
        1 => Just(Event::Resume),
                1 => Just(Event::Skip),
        1 => Just(Event::Trigger),
        1 => Just(Event::Retry),
        1 => run_id().prop_map(|run| Event::Exited { run, outcome: Outcome::TimedOut }),
        1 => run_id().prop_map(|run| Event::Exited { run, outcome: Outcome::OomKilled }),
    ]
}

fn run_id() -> impl Strategy<Value = RunId> {
    (100u64..106).prop_map(RunId)
}

fn any_policies() -> impl Strategy<Value = (OverlapPolicy, CatchUpPolicy, Option<u32>, usize, bool)>
{
    (
        prop_oneof![
            Just(OverlapPolicy::Skip),
            Just(OverlapPolicy::Queue),
            Just(OverlapPolicy::Allow),
            Just(OverlapPolicy::Replace)
        ],
        prop_oneof![
            Just(CatchUpPolicy::Skip),
            Just(CatchUpPolicy::Latest),
            (1u32..4).prop_map(|limit| CatchUpPolicy::All { limit })
        ],
        proptest::option::of(1u32..5),
        0usize..3,
        any::<bool>(),
    )
}

proptest! {
    #[test]
    fn random_sequences_keep_the_invariants(
        (overlap, catch_up, count, slots, queue_paused) in any_policies(),
        events in proptest::collection::vec((any_event(), 0i64..(3 * MIN)), 0..60)
    ) {
        let mut current = job(State::scheduled(Some(NOW)));
        current.overlap = overlap;
        current.catch_up = catch_up;
                current.count = count;
        current.exec.retries = 2;
        current.exec.backoff_base_ms = 1000;
        current.exec.backoff_max_ms = 4000;
        let mut c = ctx();
        c.now = NOW - MIN;
        c.on_time_since = NOW - 30 * MIN;
        c.free_slots = slots;
        c.queue_paused = queue_paused;
                let mut runs: HashMap<RunId, Run> = HashMap::new();
        for (event, dt) in events {
            c.now += dt;
            c.free_slots = slots;
                        // The timer fires only when the job's timer-index key is due, as the engine does.
            if event == Event::Fire && current.state.due_ms().is_none_or(|d| d > c.now) {
                continue;
            }
            let was_final = current.state.is_final();
            let before = current.clone();
            let Ok(s) = step(&current, event.clone(), &mut c) else { continue };
                        // Final states absorb everything but a retry of a failed job (and a replace).
            prop_assert!(
                !was_final || (event == Event::Retry && matches!(before.state, State::Failed { .. })),
                "a final state changed: {:?} by {:?}", before.state, event
            );
            for run in &s.runs {
                match runs.get(&run.id) {
                                        None => {
                        prop_assert!(run.outcome.is_none(), "run {} opened closed", run.id);
                                                prop_assert!(run.attempt >= 1 && run.attempt <= 3, "attempt {}", run.attempt);
                    }
                                        Some(old) => {
                        prop_assert!(old.outcome.is_none(), "closed run {} changed", run.id);
                        // The start time changes once: when the process's start is recorded.
                        if old.pid.is_some() {
                            prop_assert_eq!(old.started_ms, run.started_ms);
                        }
                    }
                }
                                runs.insert(run.id, run.clone());
            }
            // A run that never started leaves no record; it was open until now.
            for run in &s.unrecorded {
                let gone = runs.remove(run);
                prop_assert!(gone.is_some_and(|r| r.outcome.is_none()), "unrecorded run {} was not open", run);
            }
            current = s.job;
            // Slots: never more runs started than the queue had.
            let spawned = s.actions.iter().filter(|a| matches!(a, Action::Spawn { .. })).count();
            prop_assert!(spawned <= slots, "{} runs started with {} slots", spawned, slots);
            if queue_paused {
                prop_assert_eq!(spawned, 0, "started a run in a paused queue");
            }
            // The open runs of the job are exactly the run records without an outcome.
            let mut open_records: Vec<RunId> = runs.values().filter(|r| r.outcome.is_none()).map(|r| r.id).collect();
            let mut open_state: Vec<RunId> = current.state.runs().iter().map(|r| r.run).collect();
            open_records.sort();
            open_state.sort();
            prop_assert_eq!(open_records, open_state);
            // Counting.
                        prop_assert_eq!(current.runs_started as usize, runs.len());

            if let Some(count) = count {
                prop_assert!(current.occurrences_started <= count, "{} occurrences for --count {}", current.occurrences_started, count);
            }
            // Overlap: only allow runs two at once.
            if overlap != OverlapPolicy::Allow {
                prop_assert!(current.state.runs().len() <= 1, "{} runs at once with {:?}", current.state.runs().len(), overlap);
            }
            // Indexes: due exactly when scheduled next; waiting only with something waiting.
                        if let State::Active { next: n, owed, waiting, wake, .. } = &current.state {
                prop_assert_eq!(current.state.due_ms().is_some(), matches!(n, Next::Scheduled(_)) || wake.is_some());
                if let Some(wake) = wake {
                    prop_assert!(owed.iter().any(|o| o.not_before_ms == *wake), "wake {} for nothing owed", wake);
                }
                if *waiting {
                    prop_assert!(!owed.is_empty() || matches!(n, Next::Held(_)));
                    prop_assert!(current.pause.is_none(), "a job-paused job in the waiting index");
                }
                prop_assert!(owed.windows(2).all(|w| w[0] <= w[1]), "owed out of order: {:?}", owed);
            } else {
                prop_assert!(current.state.runs().is_empty());
                prop_assert_eq!(current.pause.clone(), None);
            }
            if current.kind() == JobState::Succeeded {
                prop_assert!(current.last_outcome.as_ref().is_some_and(Outcome::is_success));
            }
        }
    }
}

#[test]
fn a_hosts_lost_runs_are_closed_and_the_other_hosts_go_on() {
    // Two runs side by side (overlap allow) on two fleet hosts; host "a" is declared gone.
    let mut on_a = open(Some(11));
    on_a.host = Some("a".into());
    let mut on_b = open(Some(12));
    on_b.run = OTHER;
    on_b.host = Some("b".into());
    let mut j = job(active(Next::None, vec![], vec![on_a, on_b], false, false));
    j.overlap = OverlapPolicy::Allow;
    let lost_a = Event::Lost {
        ended: Default::default(),
        host: Some("a".into()),
    };
    let s = step(&j, lost_a, &mut ctx()).unwrap();
    assert_eq!(s.runs.len(), 1, "{:?}", s.runs);
    assert_eq!(
        (s.runs[0].id, &s.runs[0].outcome),
        (OPEN, &Some(Outcome::Lost))
    );
    assert_eq!(s.runs[0].host.as_deref(), Some("a"));
    let open: Vec<RunId> = s.job.state.runs().iter().map(|r| r.run).collect();
    assert_eq!(open, vec![OTHER], "host b's run goes on");
    // A host with no runs of the job has nothing to lose; redb's (no host) none either.
    for host in [Some("c".into()), None] {
        let lost = Event::Lost {
            ended: Default::default(),
            host,
        };
        assert!(step(&j, lost, &mut ctx()).is_err());
    }
}
