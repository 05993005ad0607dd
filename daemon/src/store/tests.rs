//! Tests of the store itself: opening (and refusing) database files, reopening, listings,
//! damaged records and the scrub. They fill stores through [`super::testutil`], without the
//! engine; the engine's batch is tested beside it (`engine/batch/tests.rs`).

use super::schema::{JOBS, KEY_SCHEMA, META, NAMES};
use super::testutil::{add, open, open_file, put, spec};
use super::*;
use crate::job::State;
use chime_proto::{JobId, JobRef, ScheduleSpec};
use redb::{ReadableTable, TableDefinition};
use tempfile::TempDir;

#[test]
fn a_new_database_reopens_with_its_jobs() {
    let dir = TempDir::new().unwrap();
    let store = open(&dir);
    let a = add(
        &store,
        1000,
        spec(Some("a"), ScheduleSpec::At(5_000)),
        1_000,
    );
    let b = add(&store, 1000, spec(None, ScheduleSpec::Now), 1_000);
    assert_eq!((a, b), (JobId(1), JobId(2)));
    drop(store);
    let store = open(&dir);
    let reader = store.read().unwrap();
    let job = reader
        .job_by_ref(0, &JobRef::Name("a".into()))
        .unwrap()
        .job()
        .unwrap();
    assert_eq!(job.state, State::scheduled(Some(5_000)));
    assert_eq!(reader.first_due().unwrap(), Some(1_000));
    // Ids are never reused.
    assert_eq!(
        add(&store, 1000, spec(None, ScheduleSpec::Now), 1_000),
        JobId(3)
    );
    store.verify().unwrap();
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
    let store = open_file(&dir);
    for i in 0..200 {
        add(&store, 1000, spec(None, ScheduleSpec::At(i)), 1);
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
            spec(None, ScheduleSpec::At(10_000)),
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
                after,
                limit: 5,
                ..Default::default()
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

/// A name index entry that points to a job of another name (a flipped bit in the index) is
/// damage, not that other job; a record whose checksum does not match is damage, not a job.
#[test]
fn damaged_records_and_index_entries_are_found_not_trusted() {
    let dir = TempDir::new().unwrap();
    let path = dir.path().join("chime.redb");
    let store = open_file(&dir);
    let a = add(
        &store,
        1000,
        spec(Some("a"), ScheduleSpec::At(5_000)),
        1_000,
    );
    let b = add(
        &store,
        1000,
        spec(Some("b"), ScheduleSpec::At(5_000)),
        1_000,
    );
    drop(store);
    {
        let db = redb::Database::create(&path).unwrap();
        let txn = db.begin_write().unwrap();
        {
            // The name `a` now points to job b.
            let mut names = txn.open_table(NAMES).unwrap();
            names.insert(("a", 1000), b.0).unwrap();
            // Job b's record loses a bit.
            let mut jobs = txn.open_table(JOBS).unwrap();
            let mut bytes = jobs.get(b.0).unwrap().unwrap().value().to_vec();
            bytes[3] ^= 0x10;
            jobs.insert(b.0, bytes.as_slice()).unwrap();
        }
        txn.commit().unwrap();
    }
    let store = open_file(&dir);
    let reader = store.read().unwrap();
    match reader.job_by_ref(1000, &JobRef::Name("a".into())).unwrap() {
        Found::Damaged { id, damage, theirs } => {
            assert_eq!((id, theirs), (b, true));
            assert_eq!(damage.table, "jobs", "{damage}");
        }
        other => panic!("{other:?}"),
    }
    match reader.job_by_ref(2000, &JobRef::Id(b)).unwrap() {
        Found::Damaged { theirs, .. } => assert!(!theirs, "another user's damaged job"),
        other => panic!("{other:?}"),
    }
    assert!(matches!(
        reader.job_by_ref(0, &JobRef::Id(a)).unwrap(),
        Found::Job(_)
    ));
    drop(reader);
    let mut found = Vec::new();
    store.scrub(|| true, |d| found.push(d)).unwrap();
    assert_eq!(found.len(), 1, "{found:?}");
    assert_eq!((found[0].table, found[0].job()), ("jobs", Some(b)));
    // A name pointing to a whole job of another name.
    {
        store
            .write(|w| {
                w.remove_damaged(b)?;
                Ok(())
            })
            .unwrap();
    }
    let c = add(
        &store,
        1000,
        spec(Some("c"), ScheduleSpec::At(5_000)),
        1_000,
    );
    drop(store);
    {
        let db = redb::Database::create(&path).unwrap();
        let txn = db.begin_write().unwrap();
        txn.open_table(NAMES)
            .unwrap()
            .insert(("a", 1000), c.0)
            .unwrap();
        txn.commit().unwrap();
    }
    let store = open_file(&dir);
    match store
        .read()
        .unwrap()
        .job_by_ref(1000, &JobRef::Name("a".into()))
        .unwrap()
    {
        Found::Damaged { id, damage, .. } => {
            assert_eq!((id, damage.table), (c, "names"), "{damage}");
        }
        other => panic!("{other:?}"),
    }
    // The scrub finds nothing else wrong, and indexes agree with the jobs left.
    let mut found = Vec::new();
    store.scrub(|| true, |d| found.push(d)).unwrap();
    assert!(found.is_empty(), "{found:?}");
}

/// Puts `jobs` far-future jobs of uid 1000, 10,000 to a transaction.
fn fill(store: &Store, jobs: usize) {
    for chunk in 0..jobs.div_ceil(10_000) {
        let n = 10_000.min(jobs - chunk * 10_000);
        store
            .write(|w| {
                for _ in 0..n {
                    put(
                        w,
                        1000,
                        spec(None, ScheduleSpec::At(4_000_000_000_000)),
                        1_000,
                    );
                }
                Ok(())
            })
            .unwrap();
    }
}

/// A scrub asked to stop stops before its next chunk of records, and says it did not read
/// them all; one let go on reads every record.
#[test]
fn a_scrub_stops_when_asked() {
    let dir = TempDir::new().unwrap();
    let store = open(&dir);
    let jobs = SCRUB_CHUNK as u64 * 2 + 5;
    fill(&store, jobs as usize);
    let mut chunks = 0;
    let stopped = store
        .scrub(
            || {
                chunks += 1;
                chunks <= 1
            },
            |d| panic!("{d}"),
        )
        .unwrap();
    assert_eq!(
        stopped,
        Scrubbed {
            records: SCRUB_CHUNK as u64,
            whole: false
        }
    );
    let whole = store.scrub(|| true, |d| panic!("{d}")).unwrap();
    assert_eq!(
        whole,
        Scrubbed {
            records: jobs,
            whole: true
        }
    );
}

/// How long the scrub takes next to redb's integrity check at open, on a database of
/// `CHIME_SCRUB_JOBS` jobs (default 1,000,000) with a run each: the measurement behind the
/// choice of a checksum per record and a scrub in the background (issue 10, item 3). Run with
/// `cargo test --release -p chime-daemon measure_scrub -- --ignored --nocapture`.
#[test]
#[ignore = "a measurement: minutes, and a large temporary file"]
fn measure_scrub_and_integrity_check() {
    use std::time::Instant;
    let jobs: usize = std::env::var("CHIME_SCRUB_JOBS")
        .ok()
        .and_then(|n| n.parse().ok())
        .unwrap_or(1_000_000);
    let dir = TempDir::new().unwrap();
    let path = dir.path().join("chime.redb");
    let store = open_file(&dir);
    let started = Instant::now();
    fill(&store, jobs);
    let filled = started.elapsed();
    drop(store);
    let bytes = std::fs::metadata(&path).unwrap().len();
    let store = open_file(&dir);
    let started = Instant::now();
    let mut damaged = 0;
    let records = store.scrub(|| true, |_| damaged += 1).unwrap().records;
    let scrub = started.elapsed();
    drop(store);
    let started = Instant::now();
    let db = redb::Database::builder()
        .set_check_integrity_on_open(true)
        .open(&path)
        .unwrap();
    let check = started.elapsed();
    drop(db);
    let started = Instant::now();
    drop(open_file(&dir));
    let plain = started.elapsed();
    println!(
        "{jobs} jobs, {:.0} MiB (filled in {filled:.1?}): scrub {records} records in {scrub:.2?} \
         ({:.0} records/s, {damaged} damaged); redb integrity check at open {check:.2?}; plain \
         open {plain:.2?}",
        bytes as f64 / 1_048_576.0,
        records as f64 / scrub.as_secs_f64()
    );
    assert_eq!(damaged, 0);
}

/// Every test of this crate again, with the stores `testutil::open` makes kept by the byte side
/// (PostgreSQL's, in memory: `CHIME_UNIT_STORE=memory`), in a child of this test binary, so
/// that `cargo test` holds both sides to the store's and the engine's tests.
#[test]
fn every_test_passes_with_the_byte_side_too() {
    if std::env::var_os("CHIME_UNIT_STORE").is_some() {
        return; // the child itself
    }
    let out = std::process::Command::new(std::env::current_exe().unwrap())
        .env("CHIME_UNIT_STORE", "memory")
        .args(["--test-threads", "2"])
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success() && stdout.contains("test result: ok"),
        "the tests over the byte side failed:\n{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
}
