//! The floor under chimed's engine: what redb alone costs for the B-tree work that chimed's
//! engine thread does per submission and per timer firing, with chimed's tables, key types and
//! row sizes, and nothing else: rows are prepared bytes (no encoding, no checksums, no state
//! machine, no events to publish, no replies).
//!
//! Issue 14 sets targets for the engine's CPU (<= 5 us per submission, <= 4 us per firing). This
//! says how much of what bench-submit and bench-timers measure is redb's and how much is chime's:
//! run it beside them (same build, same machine, one after the other) and compare.
//!
//! - **submit**: `--jobs` one-shot jobs (default 100,000) stored in commits of `--per-commit`
//!   (default 32: bench-submit's 32 clients with one request each); per job the rows chimed
//!   writes for a timer added with a name: the job row (105 B), `names`, `due`, `states`,
//!   `owners`, `queue_jobs` and an `added` event (56 B), and per commit the three id counters.
//! - **fire**: all of them due at one instant, fired in commits of `--per-firing-commit`
//!   (default 1,000, about what chimed's batches hold then); per firing what chimed writes for a
//!   one-shot timer: the due range read, the job row read and rewritten (100 B), `due` removed,
//!   `states` moved, `expiry` added, a run (31 B) and two events (`fired` 38 B, `state` 32 B),
//!   and per commit the counters.
//!
//! `--through-kv` does the same work through the store's byte-keyed boundary
//! (`chime_daemon::store::kv`, being built for fleet mode) on redb: the keys encoded as ordered
//! bytes, every value copied out. Run it beside the default to see what the boundary costs.
//!
//! `--leave-out OP,...` leaves operations out of each firing, to measure what each costs: `get`
//! (the row's read), `row` (its rewrite), `states`, `expiry`, `run`, `state-event`. (`due` cannot
//! be left out: the batches are read from it.)
//!
//! Each is reported as thread CPU per job (this program is one thread), wall time and commits.
//! Durability is redb's default (`Immediate`: an fsync per commit), the page cache chimed's (64
//! MiB), the file in `--dir` (default: a temporary directory under /var/tmp, on the disk).
//!
//! Run: `cargo run --release -p chime-tests --bin bench-store -- [--jobs 100000]
//! [--per-commit 32] [--per-firing-commit 1000] [--rounds 3] [--leave-out OP,...] [--through-kv]`

use chime_daemon::store::kv::key::{encode, successor};
use chime_daemon::store::kv::redb::RedbWrite;
use chime_daemon::store::kv::{KvRead, KvWrite, Order, Table};
use chime_tests::bench;
use redb::{Database, ReadableDatabase, ReadableTable, ReadableTableMetadata, TableDefinition};
use std::time::{Duration, Instant};

const META: TableDefinition<'_, &str, u64> = TableDefinition::new("meta");
const JOBS: TableDefinition<'_, u64, &[u8]> = TableDefinition::new("jobs");
const NAMES: TableDefinition<'_, (&str, u32), u64> = TableDefinition::new("names");
const DUE: TableDefinition<'_, (i64, u64), ()> = TableDefinition::new("due");
const RUNS: TableDefinition<'_, (u64, u64), &[u8]> = TableDefinition::new("runs");
const OWNERS: TableDefinition<'_, (u32, u64), ()> = TableDefinition::new("owners");
const STATES: TableDefinition<'_, (u8, u64), ()> = TableDefinition::new("states");
const QUEUE_JOBS: TableDefinition<'_, (&str, u64), ()> = TableDefinition::new("queue_jobs");
const EXPIRY: TableDefinition<'_, (i64, u64), ()> = TableDefinition::new("expiry");
const EVENTS: TableDefinition<'_, u64, &[u8]> = TableDefinition::new("events");

/// Row sizes of a named timer as chimed stores them (sealed postcard), measured on this build.
const JOB_ADDED: usize = 105;
const JOB_FIRED: usize = 100;
const RUN: usize = 31;
const EVENT_ADDED: usize = 56;
const EVENT_FIRED: usize = 38;
const EVENT_STATE: usize = 32;

/// What a firing may leave out (`--leave-out`).
const OPTIONAL: [&str; 6] = ["get", "row", "states", "expiry", "run", "state-event"];

/// The operations of a firing, each on unless left out.
#[derive(Clone, Copy)]
struct Ops {
    get: bool,
    row: bool,
    states: bool,
    expiry: bool,
    run: bool,
    state_event: bool,
}

impl Ops {
    fn leaving_out(list: &str) -> Self {
        let out: Vec<&str> = list.split(',').filter(|s| !s.is_empty()).collect();
        for op in &out {
            assert!(
                OPTIONAL.contains(op),
                "--leave-out: {op:?} is not one of {OPTIONAL:?}"
            );
        }
        let on = |op| !out.contains(&op);
        Self {
            get: on("get"),
            row: on("row"),
            states: on("states"),
            expiry: on("expiry"),
            run: on("run"),
            state_event: on("state-event"),
        }
    }
}

/// This thread's CPU time.
fn thread_cpu() -> Duration {
    let t = rustix::time::clock_gettime(rustix::time::ClockId::ThreadCPUTime);
    Duration::new(t.tv_sec as u64, t.tv_nsec as u32)
}

/// What one phase cost.
struct Cost {
    cpu: Duration,
    wall: Duration,
    commits: u64,
}

impl Cost {
    fn report(&self, phase: &str, n: u64) {
        println!(
            "{phase}: {n} in {:.0} ms ({:.0}/s) over {} commits; CPU {:.2} us per job, {:.0} per CPU second",
            self.wall.as_secs_f64() * 1000.0,
            n as f64 / self.wall.as_secs_f64(),
            self.commits,
            self.cpu.as_secs_f64() * 1e6 / n as f64,
            n as f64 / self.cpu.as_secs_f64(),
        );
    }
}

fn measure(work: impl FnOnce() -> u64) -> Cost {
    let (cpu, wall) = (thread_cpu(), Instant::now());
    let commits = work();
    Cost {
        cpu: thread_cpu() - cpu,
        wall: wall.elapsed(),
        commits,
    }
}

/// Writes the three id counters, as chimed does at each commit.
fn counters(meta: &mut redb::Table<'_, &str, u64>, next: u64) -> Result<(), redb::Error> {
    meta.insert("next_job_id", next)?;
    meta.insert("next_run_id", next)?;
    meta.insert("next_event_seq", next * 3)?;
    Ok(())
}

fn submit(db: &Database, jobs: u64, per_commit: u64, due_ms: i64) -> Result<u64, redb::Error> {
    let job = vec![7u8; JOB_ADDED];
    let event = vec![9u8; EVENT_ADDED];
    let mut name = String::new();
    let mut commits = 0;
    let mut id = 1;
    while id <= jobs {
        let txn = db.begin_write()?;
        {
            let mut meta = txn.open_table(META)?;
            let mut rows = txn.open_table(JOBS)?;
            let mut names = txn.open_table(NAMES)?;
            let mut due = txn.open_table(DUE)?;
            let mut states = txn.open_table(STATES)?;
            let mut owners = txn.open_table(OWNERS)?;
            let mut queue_jobs = txn.open_table(QUEUE_JOBS)?;
            let mut events = txn.open_table(EVENTS)?;
            let last = (id + per_commit - 1).min(jobs);
            for job_id in id..=last {
                use std::fmt::Write;
                name.clear();
                write!(name, "instant-{job_id}").unwrap();
                rows.insert(job_id, job.as_slice())?;
                names.insert((name.as_str(), 0), job_id)?;
                due.insert((due_ms, job_id), ())?;
                states.insert((0, job_id), ())?;
                owners.insert((0, job_id), ())?;
                queue_jobs.insert(("default", job_id), ())?;
                events.insert(job_id, event.as_slice())?;
            }
            counters(&mut meta, last + 1)?;
            id = last + 1;
        }
        txn.commit()?;
        commits += 1;
    }
    Ok(commits)
}

fn fire(
    db: &Database,
    per_commit: usize,
    now_ms: i64,
    first_seq: u64,
    ops: Ops,
) -> Result<u64, redb::Error> {
    let mut row = vec![0u8; JOB_FIRED];
    let run = vec![3u8; RUN];
    let (fired, state) = (vec![5u8; EVENT_FIRED], vec![6u8; EVENT_STATE]);
    let mut seq = first_seq;
    let mut commits = 0;
    loop {
        let txn = db.begin_write()?;
        let more = {
            let mut meta = txn.open_table(META)?;
            let mut rows = txn.open_table(JOBS)?;
            let mut due = txn.open_table(DUE)?;
            let mut states = txn.open_table(STATES)?;
            let mut expiry = txn.open_table(EXPIRY)?;
            let mut runs = txn.open_table(RUNS)?;
            let mut events = txn.open_table(EVENTS)?;
            let batch: Vec<(i64, u64)> = due
                .range(..=(now_ms, u64::MAX))?
                .take(per_commit)
                .map(|e| e.map(|(k, _)| k.value()))
                .collect::<Result<_, _>>()?;
            for &(at, id) in &batch {
                // The row is read (and decoded), then written as the firing leaves it.
                if ops.get {
                    let old = rows.get(id)?.expect("the job is stored");
                    row[..8].copy_from_slice(&old.value()[..8]);
                }
                if ops.row {
                    rows.insert(id, row.as_slice())?;
                }
                due.remove((at, id))?;
                if ops.states {
                    states.remove((0, id))?;
                    states.insert((2, id), ())?;
                }
                if ops.expiry {
                    expiry.insert((now_ms + 86_400_000, id), ())?;
                }
                if ops.run {
                    runs.insert((id, id), run.as_slice())?;
                }
                events.insert(seq, fired.as_slice())?;
                if ops.state_event {
                    events.insert(seq + 1, state.as_slice())?;
                }
                seq += 2;
            }
            counters(&mut meta, seq)?;
            batch.len() == per_commit
        };
        txn.commit()?;
        commits += 1;
        if !more {
            return Ok(commits);
        }
    }
}

/// [`submit`], through the byte-keyed boundary.
fn submit_kv(db: &Database, jobs: u64, per_commit: u64, due_ms: i64) -> anyhow::Result<u64> {
    let job = vec![7u8; JOB_ADDED];
    let event = vec![9u8; EVENT_ADDED];
    let mut commits = 0;
    let mut id = 1;
    while id <= jobs {
        let txn = db.begin_write()?;
        {
            let mut kv = RedbWrite::new(&txn);
            let last = (id + per_commit - 1).min(jobs);
            for job_id in id..=last {
                let name = format!("instant-{job_id}");
                kv.insert(Table::Jobs, &encode(&job_id), &job)?;
                kv.insert(
                    Table::Names,
                    &encode(&(name.as_str(), 0u32)),
                    &job_id.to_le_bytes(),
                )?;
                kv.insert(Table::Due, &encode(&(due_ms, job_id)), &[])?;
                kv.insert(Table::States, &encode(&(0u8, job_id)), &[])?;
                kv.insert(Table::Owners, &encode(&(0u32, job_id)), &[])?;
                kv.insert(Table::QueueJobs, &encode(&("default", job_id)), &[])?;
                kv.insert(Table::Events, &encode(&job_id), &event)?;
            }
            kv_counters(&mut kv, last + 1)?;
            id = last + 1;
        }
        txn.commit()?;
        commits += 1;
    }
    Ok(commits)
}

fn kv_counters(kv: &mut RedbWrite<'_>, next: u64) -> anyhow::Result<()> {
    kv.insert(Table::Meta, &encode("next_job_id"), &next.to_le_bytes())?;
    kv.insert(Table::Meta, &encode("next_run_id"), &next.to_le_bytes())?;
    kv.insert(
        Table::Meta,
        &encode("next_event_seq"),
        &(next * 3).to_le_bytes(),
    )?;
    Ok(())
}

/// [`fire`] with every operation, through the byte-keyed boundary.
fn fire_kv(db: &Database, per_commit: usize, now_ms: i64, first_seq: u64) -> anyhow::Result<u64> {
    let mut row = vec![0u8; JOB_FIRED];
    let run = vec![3u8; RUN];
    let (fired, state) = (vec![5u8; EVENT_FIRED], vec![6u8; EVENT_STATE]);
    let mut seq = first_seq;
    let mut commits = 0;
    let due_end = successor(&encode(&(now_ms, u64::MAX)));
    loop {
        let txn = db.begin_write()?;
        let more = {
            let mut kv = RedbWrite::new(&txn);
            let batch = kv.range(
                Table::Due,
                None,
                Some(&due_end),
                Order::Ascending,
                per_commit,
            )?;
            for (key, _) in &batch {
                let (_, id): (i64, u64) =
                    chime_daemon::store::kv::key::decode(key).expect("a due key");
                let job = encode(&id);
                let old = kv.get(Table::Jobs, &job)?.expect("the job is stored");
                row[..8].copy_from_slice(&old[..8]);
                kv.insert(Table::Jobs, &job, &row)?;
                kv.remove(Table::Due, key)?;
                kv.remove(Table::States, &encode(&(0u8, id)))?;
                kv.insert(Table::States, &encode(&(2u8, id)), &[])?;
                kv.insert(Table::Expiry, &encode(&(now_ms + 86_400_000, id)), &[])?;
                kv.insert(Table::Runs, &encode(&(id, id)), &run)?;
                kv.insert(Table::Events, &encode(&seq), &fired)?;
                kv.insert(Table::Events, &encode(&(seq + 1)), &state)?;
                seq += 2;
            }
            kv_counters(&mut kv, seq)?;
            batch.len() == per_commit
        };
        txn.commit()?;
        commits += 1;
        if !more {
            return Ok(commits);
        }
    }
}

fn main() -> anyhow::Result<()> {
    let jobs = bench::arg("--jobs", 100_000);
    let per_commit = bench::arg("--per-commit", 32);
    let per_firing_commit = bench::arg("--per-firing-commit", 1000) as usize;
    let rounds = bench::arg("--rounds", 3);
    let text = |name: &str, default: &str| {
        std::env::args()
            .skip_while(|a| a != name)
            .nth(1)
            .unwrap_or_else(|| default.into())
    };
    let base = text("--dir", "/var/tmp");
    let left_out = text("--leave-out", "");
    let ops = Ops::leaving_out(&left_out);
    let through_kv = std::env::args().any(|a| a == "--through-kv");
    assert!(
        !through_kv || left_out.is_empty(),
        "--through-kv does every operation: no --leave-out"
    );
    println!(
        "chime bench-store: redb alone, chimed's rows and B-tree operations: {jobs} submissions in commits of {per_commit}, then as many firings in commits of {per_firing_commit}; {rounds} rounds"
    );
    if !left_out.is_empty() {
        println!("firings leave out: {left_out}");
    }
    if through_kv {
        println!("through the byte-keyed boundary (store::kv)");
    }
    for round in 1..=rounds {
        let dir = tempfile::Builder::new()
            .prefix("chime-bench-store-")
            .tempdir_in(&base)
            .expect("a temporary directory");
        let mut builder = redb::Builder::new();
        builder.set_cache_size(64 * 1024 * 1024);
        let db = builder.create(dir.path().join("store.redb"))?;
        let now_ms = 1_800_000_000_000;
        let (submitted, fired) = if through_kv {
            let mut failed = None;
            let submitted = measure(|| {
                submit_kv(&db, jobs, per_commit, now_ms).unwrap_or_else(|err| {
                    failed = Some(err);
                    0
                })
            });
            let fired = measure(|| {
                fire_kv(&db, per_firing_commit, now_ms, jobs + 1).unwrap_or_else(|err| {
                    failed = Some(err);
                    0
                })
            });
            if let Some(err) = failed {
                return Err(err);
            }
            let mut kv_left = 0;
            let txn = db.begin_write()?;
            kv_left += RedbWrite::new(&txn)
                .range(Table::Due, None, None, Order::Ascending, 1)?
                .len();
            txn.abort()?;
            assert_eq!(kv_left, 0, "every job fired");
            (submitted, fired)
        } else {
            let mut failed = None;
            let submitted = measure(|| {
                submit(&db, jobs, per_commit, now_ms).unwrap_or_else(|err| {
                    failed = Some(err);
                    0
                })
            });
            let fired = measure(|| {
                fire(&db, per_firing_commit, now_ms, jobs + 1, ops).unwrap_or_else(|err| {
                    failed = Some(err);
                    0
                })
            });
            if let Some(err) = failed {
                return Err(err.into());
            }
            let left = db.begin_read()?.open_table(DUE)?.len()?;
            assert_eq!(left, 0, "every job fired");
            (submitted, fired)
        };
        println!("round {round}:");
        submitted.report("  submit", jobs);
        fired.report("  fire  ", jobs);
    }
    Ok(())
}
