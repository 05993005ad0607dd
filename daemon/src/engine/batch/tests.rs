//! Tests of the batch: work applied in one transaction of a real store (in a temporary
//! directory), what it answers, spawns and records, recovery, and a property test that every
//! index agrees with the jobs whatever work comes.

use crate::engine::batch::{self, Work};
use crate::engine::{Engine, EngineConfig};
use crate::machine::Event;
use crate::store::Store;
use crate::store::testutil::{open, spec};
use chime_proto::{Command, JobId, JobRef, Outcome, ScheduleSpec};
use proptest::prelude::*;
use tempfile::TempDir;

/// The facts a batch is given: `max_running` slots, no limits and nothing running.
fn env(max_running: usize) -> batch::Facts {
    batch::Facts {
        database: std::path::Path::new("test.redb").into(),
        on_time_since: 0,
        event_retention: 1000,
        local_tz: jiff::tz::TimeZone::UTC,
        max_running,
        running: Default::default(),
        running_by_owner: Default::default(),
        limits: std::sync::Arc::new(unlimited()),
        quick: Default::default(),
        admin_uid: 0,
        release_all: false,
        continue_release: Default::default(),
        host: None,
    }
}

/// Limits that hold no one back: these tests are about the engine, not the limits.
fn unlimited() -> crate::limits::Limits {
    let mut limits = crate::limits::Limits::defaults(0);
    limits.running_per_user = 1_000_000;
    limits.jobs_per_user = u64::MAX;
    limits
}

/// Submits `spec` as `uid` at `now` through a batch, as chimed does; the new job's id.
fn add(store: &Store, uid: u32, spec: chime_proto::JobSpec, now: i64) -> JobId {
    let work = vec![Work::Submit {
        uid,
        user: format!("user{uid}"),
        job: Box::new(spec),
        exec: Box::default(),
    }];
    let applied = store
        .write(|w| batch::apply(w, &env(0), work, now, false))
        .unwrap();
    match applied.replies.into_iter().next().flatten().unwrap() {
        Ok(chime_proto::Response::Added(added)) => added.id,
        other => panic!("add failed: {other:?}"),
    }
}

fn config() -> EngineConfig {
    EngineConfig {
        max_running: 64,
        stop_grace: std::time::Duration::from_secs(1),
        started_ms: 0,
        local_tz: jiff::tz::TimeZone::UTC,
        admin_uid: 0,
        event_retention: 1000,
        limits: crate::limits::LimitsCell::new(unlimited()),
        priority: crate::engine::EnginePriority::Normal,
        watchdog: None,
        host: None,
    }
}

#[test]
fn a_taken_name_is_refused() {
    let dir = TempDir::new().unwrap();
    let store = open(&dir);
    add(&store, 1000, spec(Some("nightly"), ScheduleSpec::Now), 1);
    let applied = store
        .write(|w| {
            batch::apply(
                w,
                &env(0),
                vec![Work::Submit {
                    uid: 1000,
                    user: "ann".into(),
                    job: Box::new(spec(Some("nightly"), ScheduleSpec::Now)),
                    exec: Box::default(),
                }],
                1,
                false,
            )
        })
        .unwrap();
    let reply = applied.replies.into_iter().next().flatten().unwrap();
    let err = reply.unwrap_err();
    assert_eq!(err.code, chime_proto::ErrorCode::Conflict);
    assert!(err.message.contains("taken by job 1"), "{}", err.message);
}

#[test]
fn recovery_closes_open_runs_as_lost() {
    let dir = TempDir::new().unwrap();
    let store = open(&dir);
    // Two jobs whose runs were open when chimed died: one whose start was recorded (a pid),
    // one whose start was not.
    let started = add(&store, 1000, spec(None, ScheduleSpec::Now), 1);
    let unconfirmed = add(&store, 1000, spec(None, ScheduleSpec::Now), 1);
    let applied = store
        .write(|w| batch::apply(w, &env(4), vec![], 10, true))
        .unwrap();
    assert_eq!(applied.spawns.len(), 2);
    let run = applied.spawns[0].run;
    assert_eq!(applied.spawns[0].job, started);
    let spawned = Work::Runner {
        job: started,
        event: Event::Spawned {
            run,
            pid: 4242,
            started_ms: 11,
        },
    };
    store
        .write(|w| batch::apply(w, &env(4), vec![spawned], 11, true))
        .unwrap();
    drop(store);
    let store = open(&dir);
    assert_eq!(
        Engine::recover(&store, &config(), &mut |_| Default::default()).unwrap(),
        2
    );
    let reader = store.read().unwrap();
    // A run that had started is lost, and the retry policy (none) decides: failed.
    let job = reader.job(started).unwrap().unwrap();
    assert_eq!(job.kind(), chime_proto::JobState::Failed);
    let runs = reader.runs(started).unwrap();
    assert_eq!(
        (runs.len(), runs[0].outcome.clone()),
        (1, Some(Outcome::Lost))
    );
    // A run whose start was never recorded may not have run: lost, and owed again.
    let job = reader.job(unconfirmed).unwrap().unwrap();
    assert_eq!(job.kind(), chime_proto::JobState::Queued);
    let runs = reader.runs(unconfirmed).unwrap();
    assert_eq!(
        (runs.len(), runs[0].outcome.clone()),
        (1, Some(Outcome::Lost))
    );
    store.verify().unwrap();
}

#[test]
fn recovery_records_what_was_ended_of_each_lost_run() {
    let dir = TempDir::new().unwrap();
    let store = open(&dir);
    let left = add(&store, 1000, spec(None, ScheduleSpec::Now), 1);
    let clean = add(&store, 1000, spec(None, ScheduleSpec::Now), 1);
    let applied = store
        .write(|w| batch::apply(w, &env(4), vec![], 10, true))
        .unwrap();
    let run_of = |job| {
        applied
            .spawns
            .iter()
            .find(|s| s.job == job)
            .expect("a spawn")
            .run
    };
    let (left_run, clean_run) = (run_of(left), run_of(clean));
    let spawned: Vec<Work> = [(left, left_run, 4242), (clean, clean_run, 4243)]
        .into_iter()
        .map(|(job, run, pid)| Work::Runner {
            job,
            event: Event::Spawned {
                run,
                pid,
                started_ms: 11,
            },
        })
        .collect();
    store
        .write(|w| batch::apply(w, &env(4), spawned, 11, true))
        .unwrap();
    drop(store);
    let store = open(&dir);
    // Three processes of one run were left, none of the other (its cgroup was empty); a run
    // the database has closed had one.
    let ended: std::collections::HashMap<_, u32> =
        [(left_run, 3), (clean_run, 0), (chime_proto::RunId(999), 1)]
            .into_iter()
            .collect();
    assert_eq!(
        Engine::recover(&store, &config(), &mut |_| ended.clone()).unwrap(),
        2
    );
    let reader = store.read().unwrap();
    let left_runs = reader.runs(left).unwrap();
    assert_eq!(
        (left_runs[0].outcome.clone(), left_runs[0].ended_at_start),
        (Some(Outcome::Lost), Some(3))
    );
    let clean_runs = reader.runs(clean).unwrap();
    assert_eq!(
        (clean_runs[0].outcome.clone(), clean_runs[0].ended_at_start),
        (Some(Outcome::Lost), None)
    );
    // show gives it to clients.
    let info = crate::wire::run_info(left_runs[0].clone());
    assert_eq!(info.ended_at_start, Some(3));
    assert_eq!(info.usage, None);
    store.verify().unwrap();
}

#[test]
fn a_runs_usage_is_stored_with_it_shown_and_in_its_end_event() {
    let dir = TempDir::new().unwrap();
    let store = open(&dir);
    let id = add(&store, 1000, spec(None, ScheduleSpec::Now), 1);
    let applied = store
        .write(|w| batch::apply(w, &env(4), vec![], 10, true))
        .unwrap();
    let run = applied.spawns[0].run;
    let usage = chime_proto::RunUsage {
        cpu_user_us: 1_200_000,
        cpu_system_us: 30_000,
        memory_peak_bytes: Some(47_395_635),
        io_read_bytes: Some(1_258_291),
        io_write_bytes: None,
    };
    let finished = Work::Runner {
        job: id,
        event: Event::Finished {
            run,
            outcome: Outcome::OomKilled,
            pid: Some(4242),
            started_ms: 11,
            ended_ms: 20,
            usage: Some(usage.clone()),
        },
    };
    let applied = store
        .write(|w| batch::apply(w, &env(4), vec![finished], 21, true))
        .unwrap();
    match &applied.events[0].kind {
        chime_proto::EventKind::Ended {
            outcome,
            usage: carried,
            ..
        } => assert_eq!(
            (outcome, carried.as_ref()),
            (&Outcome::OomKilled, Some(&usage))
        ),
        other => panic!("{other:?}"),
    }
    drop(applied);
    // It survives a reopen: it is in the run's record, not only in memory.
    drop(store);
    let store = open(&dir);
    let reader = store.read().unwrap();
    let runs = reader.runs(id).unwrap();
    assert_eq!(runs[0].usage.as_ref(), Some(&usage));
    let info = crate::wire::run_info(runs[0].clone());
    assert_eq!(
        (info.outcome, info.usage),
        (Some(Outcome::OomKilled), Some(usage))
    );
    let job = reader.job(id).unwrap().unwrap();
    assert_eq!(
        job.kind(),
        chime_proto::JobState::Failed,
        "an OOM kill fails"
    );
}

// ---- property: whatever happens, every index agrees with the jobs ----

#[derive(Debug, Clone)]
enum Op {
    Add {
        uid: u32,
        name: Option<u8>,
        due: i64,
        every: bool,
        queue: u8,
        retries: u32,
        keep: u32,
        retention: u64,
        /// A timer (no command): its firing opens and closes a run in one step.
        timer: bool,
    },
    Remove {
        job: u64,
    },
    Unstart {
        job: u64,
    },
    RetryJob {
        job: u64,
    },
    Cancel {
        job: u64,
        uid: u32,
    },
    Fire {
        now: i64,
        slots: usize,
    },
    Spawned {
        job: u64,
        pid: u32,
    },
    SpawnFailed {
        job: u64,
    },
    Exit {
        job: u64,
        code: i32,
    },
    PauseJob {
        job: u64,
    },
    ResumeJob {
        job: u64,
    },
    PauseQueue {
        queue: u8,
        for_ms: Option<u64>,
    },
    ResumeQueue {
        queue: u8,
    },
    Trigger {
        job: u64,
    },
    Skip {
        job: u64,
    },
    SetQueue {
        queue: u8,
        parallel: Option<u32>,
    },
    Recover,
}

fn uid() -> impl Strategy<Value = u32> {
    prop_oneof![Just(0u32), Just(1000), Just(1001)]
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
                3 => (uid(), proptest::option::of(0u8..4), 0i64..100, any::<bool>(), 0u8..2, 0u32..3, 1u32..3, 1u64..500, proptest::bool::weighted(0.3))
            .prop_map(|(uid, name, due, every, queue, retries, keep, retention, timer)| Op::Add { uid, name, due, every, queue, retries, keep, retention, timer }),
        1 => (1u64..12).prop_map(|job| Op::Remove { job }),
        1 => (1u64..12).prop_map(|job| Op::RetryJob { job }),
        1 => (1u64..12).prop_map(|job| Op::Unstart { job }),
        1 => (1u64..12, uid()).prop_map(|(job, uid)| Op::Cancel { job, uid }),
        3 => (0i64..300, 0usize..4).prop_map(|(now, slots)| Op::Fire { now, slots }),
        2 => (1u64..12, 1u32..1000).prop_map(|(job, pid)| Op::Spawned { job, pid }),
        1 => (1u64..12).prop_map(|job| Op::SpawnFailed { job }),
        2 => (1u64..12, 0i32..3).prop_map(|(job, code)| Op::Exit { job, code }),
        1 => (1u64..12).prop_map(|job| Op::PauseJob { job }),
        1 => (1u64..12).prop_map(|job| Op::ResumeJob { job }),
        1 => (0u8..2, proptest::option::of(1u64..200)).prop_map(|(queue, for_ms)| Op::PauseQueue { queue, for_ms }),
        1 => (0u8..2).prop_map(|queue| Op::ResumeQueue { queue }),
        1 => (1u64..12).prop_map(|job| Op::Trigger { job }),
        1 => (1u64..12).prop_map(|job| Op::Skip { job }),
        1 => (0u8..2, proptest::option::of(1u32..3)).prop_map(|(queue, parallel)| Op::SetQueue { queue, parallel }),
        1 => Just(Op::Recover),
    ]
}

fn queue_name(q: u8) -> String {
    if q == 0 {
        "default".into()
    } else {
        format!("q{q}")
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 48, ..ProptestConfig::default() })]
    #[test]
    fn indexes_always_agree_with_jobs(ops in proptest::collection::vec(op(), 1..40)) {
        let dir = TempDir::new().unwrap();
        let store = open(&dir);
        let mut now = 0i64;
        for op in ops {
            now += 5;
            // Runner events name one of the job's open runs, as the real runner would.
            let open_run = |job: u64| {
                store.read().unwrap().job(JobId(job)).unwrap().and_then(|j| j.state.runs().first().map(|r| r.run))
            };
            let job_ref = |job: u64| JobRef::Id(JobId(job));
            let (work, slots): (Vec<Work>, usize) = match op {
                                Op::Add { uid, name, due, every, queue, retries, keep, retention, timer } => {
                    let mut s = spec(
                        name.map(|n| format!("n{n}")).as_deref(),
                        if every {
                            ScheduleSpec::Every { interval_ms: 30, from_ms: Some(due) }
                        } else {
                            ScheduleSpec::At(due)
                        },
                    );
                                        s.queue = Some(queue_name(queue));
                    if timer {
                        s.command = Command::Timer;
                    }
                    let exec = crate::job::Exec {
                        retries,
                        backoff_base_ms: 7,
                        backoff_max_ms: 20,
                        keep_runs: keep,
                        retention_ms: retention,
                        ..Default::default()
                    };
                    (
                        vec![Work::Submit {
                            uid,
                            user: format!("user{uid}"),
                            job: Box::new(s),
                            exec: Box::new(exec),
                        }],
                        0,
                    )
                }
                Op::Cancel { job, uid } => (vec![Work::Cancel { uid, job: job_ref(job) }], 0),
                Op::Fire { now: t, slots } => {
                    now = now.max(t);
                    (vec![], slots)
                }
                Op::Spawned { job, pid } => (open_run(job)
                    .map(|run| Work::Runner { job: JobId(job), event: Event::Spawned { run, pid, started_ms: now } })
                    .into_iter().collect(), 0),
                Op::SpawnFailed { job } => (open_run(job)
                    .map(|run| Work::Runner { job: JobId(job), event: Event::SpawnFailed { run, error: "x".into() } })
                    .into_iter().collect(), 0),
                Op::Exit { job, code } => (open_run(job)
                    .map(|run| Work::Runner { job: JobId(job), event: Event::Exited { run, outcome: Outcome::Exited(code) } })
                    .into_iter().collect(), 2),
                Op::PauseJob { job } => (vec![Work::Pause { uid: 0, target: chime_proto::PauseTarget::Job(job_ref(job)), until_ms: None, for_ms: None, reason: None }], 0),
                Op::ResumeJob { job } => (vec![Work::Resume { uid: 0, target: chime_proto::PauseTarget::Job(job_ref(job)) }], 1),
                Op::PauseQueue { queue, for_ms } => (vec![Work::Pause { uid: 0, target: chime_proto::PauseTarget::Queue(queue_name(queue)), until_ms: None, for_ms, reason: None }], 0),
                Op::ResumeQueue { queue } => (vec![Work::Resume { uid: 0, target: chime_proto::PauseTarget::Queue(queue_name(queue)) }], 1),
                Op::Trigger { job } => (vec![Work::Trigger { uid: 0, job: job_ref(job) }], 1),
                Op::Skip { job } => (vec![Work::Skip { uid: 0, job: job_ref(job) }], 0),
                Op::SetQueue { queue, parallel } => (vec![Work::SetQueue { uid: 0, name: queue_name(queue), parallel: Some(parallel), clear_limits: false, limits: Default::default() }], 1),
                                Op::Remove { job } => (vec![Work::Remove { uid: 0, job: job_ref(job) }], 0),
                Op::RetryJob { job } => (vec![Work::Retry { uid: 0, job: job_ref(job) }], 1),
                Op::Unstart { job } => (open_run(job)
                    .map(|run| Work::Runner { job: JobId(job), event: Event::Unstarted { run } })
                    .into_iter().collect(), 0),
                Op::Recover => {
                    Engine::recover(&store, &config(), &mut |_| Default::default()).unwrap();
                    (vec![], 0)
                }
            };
            store.write(|w| batch::apply(w, &env(slots), work, now, true)).unwrap();
            if let Err(problem) = store.verify() {
                prop_assert!(false, "{}", problem);
            }
            // Runs are pruned to --keep-runs (open ones aside), and a job never stores more
            // runs than it started (what lets pruning skip reading a young job's runs).
            let reader = store.read().unwrap();
            for id in 1..64 {
                let Some(job) = reader.job(JobId(id)).unwrap() else { continue };
                let runs = reader.runs(JobId(id)).unwrap();
                let finished = runs.iter().filter(|r| r.outcome.is_some()).count();
                prop_assert!(finished <= job.exec.keep_runs as usize, "job {id}: {finished} finished runs, keep {}", job.exec.keep_runs);
                prop_assert!(runs.len() <= job.runs_started as usize, "job {id}: {} runs stored, {} started", runs.len(), job.runs_started);
            }
        }
    }
}

fn kinds(events: &[chime_proto::EventRecord]) -> Vec<&'static str> {
    events.iter().map(|e| e.kind.as_str()).collect()
}

#[test]
fn every_change_is_in_the_event_log_in_commit_order() {
    let dir = TempDir::new().unwrap();
    let store = open(&dir);
    let id = add(&store, 1000, spec(Some("a"), ScheduleSpec::Now), 1);
    let applied = store
        .write(|w| batch::apply(w, &env(4), vec![], 10, true))
        .unwrap();
    let run = applied.spawns[0].run;
    assert_eq!(kinds(&applied.events), ["started", "state"]);
    let finished = Work::Runner {
        job: id,
        event: Event::Finished {
            run,
            outcome: Outcome::Exited(0),
            pid: Some(4242),
            started_ms: 11,
            ended_ms: 20,
            usage: None,
        },
    };
    let applied = store
        .write(|w| batch::apply(w, &env(4), vec![finished], 21, true))
        .unwrap();
    assert_eq!(kinds(&applied.events), ["ended", "state"]);
    match &applied.events[0].kind {
        chime_proto::EventKind::Ended {
            outcome,
            duration_ms,
            ..
        } => assert_eq!((outcome, *duration_ms), (&Outcome::Exited(0), 9)),
        other => panic!("{other:?}"),
    }
    let reader = store.read().unwrap();
    let (oldest, head) = reader.event_bounds().unwrap();
    assert_eq!((oldest, head), (1, 5));
    let (events, last) = reader.events_after(0, 100, None).unwrap();
    assert_eq!(last, 5);
    assert_eq!(
        kinds(&events),
        ["added", "started", "state", "ended", "state"]
    );
    assert!(
        events
            .iter()
            .all(|e| e.job == Some(id) && e.owner == Some(1000))
    );
    assert!(events.windows(2).all(|w| w[1].seq == w[0].seq + 1));
    assert_eq!(
        events[4].kind,
        chime_proto::EventKind::State {
            from: chime_proto::JobState::Running,
            to: chime_proto::JobState::Succeeded
        }
    );
    // Resuming after a sequence number gives exactly what follows it.
    let (after, _) = reader.events_after(3, 100, None).unwrap();
    assert_eq!(after.iter().map(|e| e.seq).collect::<Vec<_>>(), [4, 5]);
}

#[test]
fn the_event_log_keeps_only_the_newest_events() {
    let dir = TempDir::new().unwrap();
    let store = open(&dir);
    let mut small = env(0);
    small.event_retention = 5;
    for i in 0..20 {
        let work = vec![Work::Submit {
            uid: 0,
            user: "root".into(),
            job: Box::new(spec(None, ScheduleSpec::At(1_000_000 + i))),
            exec: Box::default(),
        }];
        store
            .write(|w| batch::apply(w, &small, work, 1, false))
            .unwrap();
    }
    let reader = store.read().unwrap();
    assert_eq!(reader.event_bounds().unwrap(), (16, 20));
    let (events, _) = reader.events_after(0, 100, None).unwrap();
    assert_eq!(events.len(), 5);
    assert_eq!(events[0].seq, 16);
}

#[test]
fn a_timer_fires_without_a_process_and_records_it() {
    let dir = TempDir::new().unwrap();
    let store = open(&dir);
    let mut timer = spec(
        Some("tick"),
        ScheduleSpec::Every {
            interval_ms: 1000,
            from_ms: Some(1000),
        },
    );
    timer.command = Command::Timer;
    let id = add(&store, 1000, timer, 1);
    // Even with no free slot anywhere, a timer fires: it takes none.
    let applied = store
        .write(|w| batch::apply(w, &env(0), vec![], 1005, true))
        .unwrap();
    assert!(applied.spawns.is_empty(), "nothing is spawned for a timer");
    assert_eq!(kinds(&applied.events), ["fired"]);
    match &applied.events[0].kind {
        chime_proto::EventKind::Fired { due_ms, manual, .. } => {
            assert_eq!((*due_ms, *manual), (1000, false))
        }
        other => panic!("{other:?}"),
    }
    let reader = store.read().unwrap();
    let job = reader.job(id).unwrap().unwrap();
    assert_eq!(job.kind(), chime_proto::JobState::Scheduled);
    assert_eq!(job.state.due_ms(), Some(2000));
    assert_eq!(job.last_outcome, Some(Outcome::Fired));
    let runs = reader.runs(id).unwrap();
    assert_eq!(runs.len(), 1);
    assert_eq!(
        (runs[0].started_ms, runs[0].finished_ms, runs[0].pid),
        (1005, Some(1005), None)
    );
    drop(reader);
    store.verify().unwrap();
}

/// A one-shot timer's firing opens its run and closes it in one transition: the job's row, its
/// indexes and the run's record are written once, as the firing leaves them (one change, not
/// one for the open run and one for its close), and the events still tell both.
#[test]
fn a_timers_firing_is_written_once() {
    let dir = TempDir::new().unwrap();
    let store = open(&dir);
    let mut timer = spec(Some("once"), ScheduleSpec::At(1000));
    timer.command = Command::Timer;
    let id = add(&store, 1000, timer, 1);
    let applied = store
        .write(|w| batch::apply(w, &env(1), vec![], 1005, true))
        .unwrap();
    assert_eq!(applied.changes, 1, "the job was written more than once");
    assert_eq!(kinds(&applied.events), ["fired", "state"]);
    let reader = store.read().unwrap();
    let job = reader.job(id).unwrap().unwrap();
    assert_eq!(job.kind(), chime_proto::JobState::Succeeded);
    let runs = reader.runs(id).unwrap();
    assert_eq!(runs.len(), 1);
    assert_eq!(runs[0].outcome, Some(Outcome::Fired));
    drop(reader);
    store.verify().unwrap();
}

#[test]
fn a_declared_job_is_kept_while_its_file_declares_it() {
    let dir = TempDir::new().unwrap();
    let store = open(&dir);
    let mut job = spec(Some("once"), ScheduleSpec::At(5));
    job.command = Command::Timer;
    let declared = crate::config::Declared {
        path: "/etc/chime/jobs.d/once.toml".into(),
        name: "once".into(),
        owner: 0,
        owner_name: "root".into(),
        job,
        exec: crate::job::Exec::default(),
        digest: vec![1],
        stale: None,
    };
    let plan = |declared: Vec<crate::config::Declared>| {
        vec![Work::Reconcile(Box::new(batch::Reconcile {
            declared,
            refused: vec![],
            queues: None,
            actor: None,
        }))]
    };
    let applied = store
        .write(|w| batch::apply(w, &env(4), plan(vec![declared.clone()]), 1, false))
        .unwrap();
    assert!(matches!(
        applied.replies[0],
        Some(Ok(chime_proto::Response::Reloaded(_)))
    ));
    // It fires and succeeds, then a hundred days pass: still there (retention is 7 days).
    store
        .write(|w| batch::apply(w, &env(4), vec![], 10, true))
        .unwrap();
    let later = 10 + 100 * 86_400_000;
    store
        .write(|w| batch::apply(w, &env(4), vec![], later, true))
        .unwrap();
    let reader = store.read().unwrap();
    let found = reader
        .job_by_ref(0, &JobRef::Name("once".into()))
        .unwrap()
        .job()
        .expect("kept");
    assert_eq!(found.kind(), chime_proto::JobState::Succeeded);
    drop(reader);
    store.verify().unwrap();
    // The same declaration again changes nothing: it does not run again.
    let applied = store
        .write(|w| batch::apply(w, &env(4), plan(vec![declared]), later + 1, true))
        .unwrap();
    assert!(applied.spawns.is_empty() && applied.events.is_empty());
    // Its file removed: the job goes.
    store
        .write(|w| batch::apply(w, &env(4), plan(vec![]), later + 2, true))
        .unwrap();
    let reader = store.read().unwrap();
    assert!(
        reader
            .job_by_ref(0, &JobRef::Name("once".into()))
            .unwrap()
            .job()
            .is_none()
    );
    drop(reader);
    store.verify().unwrap();
}

/// A release passes over a user at their running limit in one seek, however many jobs they
/// have waiting, and still finds the next user's, oldest first.
#[test]
fn a_user_at_their_limit_does_not_hide_the_next_users_waiting_jobs() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(&dir);
    let submit = |uid: u32, at: i64| Work::Submit {
        uid,
        user: format!("user{uid}"),
        job: Box::new(spec(None, ScheduleSpec::At(at))),
        exec: Box::default(),
    };
    // 5000 of ann's, due first, then one of bob's.
    let mut work: Vec<Work> = (0..5000).map(|i| submit(1000, 1_000 + i)).collect();
    work.push(submit(1001, 9_000));
    store
        .write(|w| batch::apply(w, &env(0), work, 0, false))
        .unwrap();
    // Both at a running limit of 1 with one run each: every due job waits.
    let mut capped = env(64);
    let mut limits = unlimited();
    limits.running_per_user = 1;
    capped.limits = std::sync::Arc::new(limits);
    capped.running_by_owner = [(1000, 1), (1001, 1)].into_iter().collect();
    capped.running = [(batch::DEFAULT_QUEUE.to_owned(), 2)].into_iter().collect();
    for _ in 0..5 {
        store
            .write(|w| batch::apply(w, &capped, vec![], 10_000, true))
            .unwrap();
    }
    store.verify().unwrap();
    store
        .write(|w| {
            let all = w.waiting_in(batch::DEFAULT_QUEUE, 3, |_| false)?;
            assert_eq!(all.iter().map(|(o, _)| *o).collect::<Vec<_>>(), [1000; 3]);
            let others = w.waiting_in(batch::DEFAULT_QUEUE, 3, |owner| owner == 1000)?;
            assert_eq!(others.len(), 1, "{others:?}");
            assert_eq!(others[0].0, 1001);
            Ok(())
        })
        .unwrap();
}
