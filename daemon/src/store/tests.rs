use super::*;
use crate::engine::batch::{self, Work};
use crate::engine::machine::Event;
use crate::job::State;
use chime_proto::{Command, JobId, JobRef, JobSpec, Outcome, Schedule};
use proptest::prelude::*;
use tempfile::TempDir;

fn open(dir: &TempDir) -> Store {
    Store::open(&dir.path().join("chime.redb"), &StoreOptions::default()).expect("open")
}

fn spec(name: Option<&str>, schedule: Schedule) -> JobSpec {
    JobSpec {
        name: name.map(Into::into),
        command: Command::Argv(vec!["/bin/true".into()]),
        cwd: "/".into(),
        env: vec![],
        schedule,
    }
}

fn add(store: &Store, uid: u32, spec: JobSpec, now: i64) -> JobId {
    let applied = store
        .write(|w| batch::apply(w, vec![Work::Add { uid, spec }], now, 0, false))
        .unwrap();
    match applied.replies.into_iter().next().flatten().unwrap() {
        Ok(chime_proto::Response::Added(added)) => added.id,
        other => panic!("add failed: {other:?}"),
    }
}

#[test]
fn a_new_database_reopens_with_its_jobs() {
    let dir = TempDir::new().unwrap();
    let store = open(&dir);
    let a = add(&store, 1000, spec(Some("a"), Schedule::At(5_000)), 1_000);
    let b = add(&store, 1000, spec(None, Schedule::Now), 1_000);
    assert_eq!((a, b), (JobId(1), JobId(2)));
    drop(store);
    let store = open(&dir);
    let reader = store.read().unwrap();
    let job = reader
        .job_by_ref(&JobRef::Name("a".into()))
        .unwrap()
        .unwrap();
    assert_eq!(job.state, State::Scheduled { due_ms: 5_000 });
    assert_eq!(reader.first_due().unwrap(), Some(1_000));
    // Ids are never reused.
    assert_eq!(
        add(&store, 1000, spec(None, Schedule::Now), 1_000),
        JobId(3)
    );
    store.verify().unwrap();
}

#[test]
fn a_taken_name_is_refused() {
    let dir = TempDir::new().unwrap();
    let store = open(&dir);
    add(&store, 1000, spec(Some("nightly"), Schedule::Now), 1);
    let applied = store
        .write(|w| {
            batch::apply(
                w,
                vec![Work::Add {
                    uid: 1000,
                    spec: spec(Some("nightly"), Schedule::Now),
                }],
                1,
                0,
                false,
            )
        })
        .unwrap();
    let reply = applied.replies.into_iter().next().flatten().unwrap();
    let err = reply.unwrap_err();
    assert_eq!(err.code, chime_proto::ErrorCode::Conflict);
    assert!(err.message.contains("taken by job 1"), "{}", err.message);
}

fn bytes_of(path: &std::path::Path) -> Vec<u8> {
    std::fs::read(path).unwrap()
}

#[test]
fn garbage_is_refused_and_left_untouched() {
    let dir = TempDir::new().unwrap();
    let path = dir.path().join("chime.redb");
    let garbage: Vec<u8> = (0..100_000u32)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
        .collect();
    std::fs::write(&path, &garbage).unwrap();
    let err = Store::open(&path, &StoreOptions::default()).unwrap_err();
    assert!(matches!(err, StoreError::NotADatabase { .. }), "{err}");
    assert!(err.to_string().contains("left untouched"), "{err}");
    assert_eq!(bytes_of(&path), garbage);
}

#[test]
fn a_damaged_database_is_refused_and_left_untouched() {
    let dir = TempDir::new().unwrap();
    let path = dir.path().join("chime.redb");
    let store = open(&dir);
    for i in 0..200 {
        add(&store, 1000, spec(None, Schedule::At(i)), 1);
    }
    drop(store);
    // Overwrite everything after the header with noise.
    let mut bytes = bytes_of(&path);
    for (i, b) in bytes.iter_mut().enumerate().skip(4096) {
        *b = (i as u8).wrapping_mul(31).wrapping_add(7);
    }
    std::fs::write(&path, &bytes).unwrap();
    let result = Store::open(&path, &StoreOptions::default());
    assert!(result.is_err(), "a damaged file opened");
    assert_eq!(bytes_of(&path), bytes, "the damaged file was modified");
}

#[test]
fn a_newer_schema_is_refused_and_left_untouched() {
    let dir = TempDir::new().unwrap();
    let path = dir.path().join("chime.redb");
    {
        let db = redb::Database::create(&path).unwrap();
        let txn = db.begin_write().unwrap();
        txn.open_table(META)
            .unwrap()
            .insert(KEY_SCHEMA, SCHEMA_VERSION + 1)
            .unwrap();
        txn.commit().unwrap();
    }
    let before = bytes_of(&path);
    let err = Store::open(&path, &StoreOptions::default()).unwrap_err();
    assert!(
        matches!(err, StoreError::NewerSchema { found, .. } if found == SCHEMA_VERSION + 1),
        "{err}"
    );
    assert!(err.to_string().contains("upgrade chimed"), "{err}");
    assert_eq!(bytes_of(&path), before);
}

#[test]
fn a_foreign_redb_file_is_refused() {
    let dir = TempDir::new().unwrap();
    let path = dir.path().join("chime.redb");
    {
        let db = redb::Database::create(&path).unwrap();
        let txn = db.begin_write().unwrap();
        const OTHER: TableDefinition<'_, u64, u64> = TableDefinition::new("other");
        txn.open_table(OTHER).unwrap().insert(1, 2).unwrap();
        txn.commit().unwrap();
    }
    let before = bytes_of(&path);
    let err = Store::open(&path, &StoreOptions::default()).unwrap_err();
    assert!(err.to_string().contains("without chime's tables"), "{err}");
    assert_eq!(bytes_of(&path), before);
}

#[test]
fn listing_pages_through_an_index() {
    let dir = TempDir::new().unwrap();
    let store = open(&dir);
    for i in 0..25 {
        add(
            &store,
            if i % 2 == 0 { 1000 } else { 1001 },
            spec(None, Schedule::At(10_000)),
            1,
        );
    }
    let reader = store.read().unwrap();
    let mut seen = Vec::new();
    let mut after = None;
    loop {
        let page = reader
            .list(&JobFilter {
                owner: Some(1000),
                state: None,
                after,
                limit: 5,
            })
            .unwrap();
        assert!(page.jobs.iter().all(|j| j.owner == 1000));
        seen.extend(page.jobs.iter().map(|j| j.id.0));
        match page.next {
            Some(next) => after = Some(next),
            None => break,
        }
    }
    assert_eq!(seen, (1..=25).step_by(2).collect::<Vec<_>>());
    let all = reader
        .list(&JobFilter {
            state: Some(chime_proto::JobState::Scheduled),
            limit: 100,
            ..Default::default()
        })
        .unwrap();
    assert_eq!(all.jobs.len(), 25);
    assert_eq!(all.next, None);
}

#[test]
fn recovery_closes_open_runs_as_lost() {
    let dir = TempDir::new().unwrap();
    let store = open(&dir);
    let id = add(&store, 1000, spec(None, Schedule::Now), 1);
    let applied = store
        .write(|w| batch::apply(w, vec![], 10, 4, true))
        .unwrap();
    assert_eq!(applied.spawns.len(), 1);
    drop(store);
    let store = open(&dir);
    assert_eq!(crate::engine::Engine::recover(&store).unwrap(), 1);
    let reader = store.read().unwrap();
    let job = reader.job(id).unwrap().unwrap();
    assert_eq!(job.state.kind(), chime_proto::JobState::Failed);
    let runs = reader.runs(id).unwrap();
    assert_eq!(runs.len(), 1);
    assert_eq!(runs[0].outcome, Some(Outcome::Lost));
    store.verify().unwrap();
}

// ---- property: whatever happens, every index agrees with the jobs ----

#[derive(Debug, Clone)]
enum Op {
    Add {
        uid: u32,
        name: Option<u8>,
        due: i64,
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
    Recover,
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        3 => (prop_oneof![Just(0u32), Just(1000), Just(1001)], proptest::option::of(0u8..4), 0i64..100)
            .prop_map(|(uid, name, due)| Op::Add { uid, name, due }),
        1 => (1u64..12, prop_oneof![Just(0u32), Just(1000), Just(1001)]).prop_map(|(job, uid)| Op::Cancel { job, uid }),
        2 => (0i64..120, 0usize..4).prop_map(|(now, slots)| Op::Fire { now, slots }),
        2 => (1u64..12, 1u32..1000).prop_map(|(job, pid)| Op::Spawned { job, pid }),
        1 => (1u64..12).prop_map(|job| Op::SpawnFailed { job }),
        2 => (1u64..12, 0i32..3).prop_map(|(job, code)| Op::Exit { job, code }),
        1 => Just(Op::Recover),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 48, ..ProptestConfig::default() })]
    #[test]
    fn indexes_always_agree_with_jobs(ops in proptest::collection::vec(op(), 1..40)) {
        let dir = TempDir::new().unwrap();
        let store = open(&dir);
        for op in ops {
            // Runner events name the job's current open run, as the real runner would.
            let open_run = |job: u64| {
                store.read().unwrap().job(JobId(job)).unwrap().and_then(|j| j.state.open_run())
            };
            let work = match op {
                Op::Add { uid, name, due } => vec![Work::Add {
                    uid,
                    spec: spec(name.map(|n| format!("n{n}")).as_deref(), Schedule::At(due)),
                }],
                Op::Cancel { job, uid } => vec![Work::Cancel { uid, job: JobRef::Id(JobId(job)) }],
                Op::Fire { now, slots } => {
                    store.write(|w| batch::apply(w, vec![], now, slots, true)).unwrap();
                    vec![]
                }
                Op::Spawned { job, pid } => open_run(job)
                    .map(|run| Work::Runner { job: JobId(job), event: Event::Spawned { run, pid } })
                    .into_iter().collect(),
                Op::SpawnFailed { job } => open_run(job)
                    .map(|run| Work::Runner { job: JobId(job), event: Event::SpawnFailed { run, error: "x".into() } })
                    .into_iter().collect(),
                Op::Exit { job, code } => open_run(job)
                    .map(|run| Work::Runner { job: JobId(job), event: Event::Exited { run, outcome: Outcome::Exited(code) } })
                    .into_iter().collect(),
                Op::Recover => {
                    crate::engine::Engine::recover(&store).unwrap();
                    vec![]
                }
            };
            if !work.is_empty() {
                store.write(|w| batch::apply(w, work, 50, 0, false)).unwrap();
            }
            if let Err(problem) = store.verify() {
                prop_assert!(false, "{}", problem);
            }
        }
    }
}
