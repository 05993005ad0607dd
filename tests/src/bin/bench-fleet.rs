//! Fleet mode's store on PostgreSQL, measured before the engine runs on it (issue 15): with 1, 2
//! and 3 hosts (threads, each with its own connection and membership) on one private cluster,
//! how many jobs per second they store and how many due occurrences per second they start, each
//! write transaction under the fleet's writer lock (`chime_daemon::store::kv::fleet`).
//!
//! - **submit**: `--jobs` jobs (default 20,000) split over the hosts, stored in transactions of
//!   `--batch` (default 200): per job the rows chimed writes for a named one-shot job (its row,
//!   `names`, `due`, `states`, `owners`, `queue_jobs`, an event).
//! - **start**: the same jobs all due at once, taken by the hosts in transactions of `--batch`:
//!   per occurrence a claim under its key, `due` removed, `states` moved, a run row and an event.
//!
//! Every statement is a round trip over the cluster's Unix socket (nothing is pipelined yet),
//! and every commit is durable (`fsync`, `synchronous_commit` on). Reports each phase's rate per
//! host count, for `--rounds` rounds (default 3), host counts alternating within a round. Skips
//! with a message where PostgreSQL's server is not installed.
//!
//! Run: `cargo run --release -p chime-tests --bin bench-fleet -- [--jobs 20000] [--batch 200]
//! [--rounds 3]` (as root it runs the cluster as a user made for it).

use chime_daemon::store::kv::fleet::{self, Member};
use chime_daemon::store::kv::key::{decode, encode, successor};
use chime_daemon::store::kv::pg::{Connection, PgKv};
use chime_daemon::store::kv::{KvRead, KvWrite, Order, Table};
use chime_tests::bench;
use chime_tests::pg::{Cluster, on_hosts};

const JOB_ROW: [u8; 105] = [7; 105];
const EVENT: [u8; 48] = [9; 48];
const RUN: [u8; 31] = [3; 31];

/// Stores jobs `ids` for `member`, `batch` per transaction, all due at `due_ms`.
fn submit(connection: &mut Connection, member: &Member, ids: &[u64], batch: usize, due_ms: i64) {
    for chunk in ids.chunks(batch) {
        let mut kv = fleet::write(&mut *connection, member).expect("write as a member");
        for &id in chunk {
            let name = format!("job-{id}");
            kv.insert(Table::Jobs, &encode(&id), &JOB_ROW).unwrap();
            kv.insert(
                Table::Names,
                &encode(&(name.as_str(), 0u32)),
                &id.to_be_bytes(),
            )
            .unwrap();
            kv.insert(Table::Due, &encode(&(due_ms, id)), &[]).unwrap();
            kv.insert(Table::States, &encode(&(0u8, id)), &[]).unwrap();
            kv.insert(Table::Owners, &encode(&(0u32, id)), &[]).unwrap();
            kv.insert(Table::QueueJobs, &encode(&("default", id)), &[])
                .unwrap();
            kv.insert(Table::Events, &encode(&(id, 0u8)), &EVENT)
                .unwrap();
        }
        kv.commit().unwrap();
    }
}

/// Starts what is due at `due_ms`, `batch` per transaction, until nothing is; how many it
/// started.
fn start(connection: &mut Connection, member: &Member, batch: usize, due_ms: i64) -> u64 {
    let due_end = successor(&encode(&(due_ms, u64::MAX)));
    let mut started = 0;
    loop {
        let mut kv = fleet::write(&mut *connection, member).expect("write as a member");
        let due = kv
            .range(Table::Due, None, Some(&due_end), Order::Ascending, batch)
            .unwrap();
        if due.is_empty() {
            kv.rollback().unwrap();
            return started;
        }
        for (key, _) in due {
            let (due, id): (i64, u64) = decode(&key).expect("a due key");
            assert!(
                fleet::claim(&mut kv, member, id, due).unwrap(),
                "claimed twice"
            );
            kv.remove(Table::Due, &key).unwrap();
            kv.remove(Table::States, &encode(&(0u8, id))).unwrap();
            kv.insert(Table::States, &encode(&(1u8, id)), &[]).unwrap();
            kv.insert(Table::Runs, &encode(&(id, 1u64)), &RUN).unwrap();
            kv.insert(Table::Events, &encode(&(id, 1u8)), &EVENT)
                .unwrap();
            started += 1;
        }
        kv.commit().unwrap();
    }
}

fn main() {
    let jobs = bench::arg("--jobs", 20_000);
    let batch = bench::arg("--batch", 200) as usize;
    let rounds = bench::arg("--rounds", 3);
    let Some(pg) = Cluster::start("bench-fleet") else {
        return;
    };
    let mut admin = Connection::open(&pg.conninfo()).expect("connect");
    fleet::create_tables(&mut admin).unwrap();
    println!(
        "chime bench-fleet: {jobs} jobs stored then started, {batch} per transaction, by 1, 2 and 3 hosts on one PostgreSQL cluster; {rounds} rounds"
    );
    let mut next_id = 1u64;
    let mut due_ms = 1_800_000_000_000i64;
    for round in 1..=rounds {
        for hosts in 1..=3usize {
            let first = next_id;
            next_id += jobs;
            due_ms += 1;
            let due = due_ms;
            let (stored_in, _) = on_hosts(&pg, hosts, move |c, m, i| {
                let ids: Vec<u64> = (first..first + jobs)
                    .filter(|id| (id % hosts as u64) as usize == i)
                    .collect();
                submit(c, m, &ids, batch, due);
            });
            let (started_in, per_host) =
                on_hosts(&pg, hosts, move |c, m, _| start(c, m, batch, due));
            let started: u64 = per_host.iter().sum();
            assert_eq!(started, jobs, "every job started once");
            println!(
                "round {round}, {hosts} host(s): stored {:.0}/s, started {:.0}/s (per host {per_host:?})",
                jobs as f64 / stored_in.as_secs_f64(),
                jobs as f64 / started_in.as_secs_f64(),
            );
        }
    }
    let mut kv = PgKv::read(&mut admin).unwrap();
    let left = kv
        .range(Table::Due, None, None, Order::Ascending, 1)
        .unwrap();
    assert!(left.is_empty(), "nothing left due");
    kv.commit().unwrap();
}
