//! Fleet mode's ground (issue 15): the PostgreSQL harness (`chime_tests::pg`: a private cluster
//! as an unprivileged user, reachable only through its socket, durable as a production one,
//! surviving an immediate stop with every committed row), and the store's PostgreSQL backend
//! (`chime_daemon::store::kv::pg`), held to the same answers as the reference and as redb.

use chime_daemon::store::kv::fleet::{self, Refused};
use chime_daemon::store::kv::key::{decode, encode, successor};
use chime_daemon::store::kv::memory::{Memory, contents, same_everywhere};
use chime_daemon::store::kv::pg::{Connection, PgKv, create_tables};
use chime_daemon::store::kv::redb::{RedbRead, RedbWrite};
use chime_daemon::store::kv::{KvRead, KvWrite, Order, Table};
use chime_tests::pg::{Cluster, on_hosts};
use chime_tests::wait_until;
use redb::ReadableDatabase;
use std::time::Duration;

#[test]
fn a_private_cluster_runs_unprivileged_on_its_socket_only_and_keeps_commits_across_a_crash() {
    let Some(mut pg) = Cluster::start(
        "a_private_cluster_runs_unprivileged_on_its_socket_only_and_keeps_commits_across_a_crash",
    ) else {
        return;
    };
    assert_eq!(
        pg.sql(
            "select current_setting('listen_addresses') || '|' || current_setting('fsync') \
             || '|' || current_setting('synchronous_commit')"
        ),
        "|on|on"
    );
    let pid = pg.server_pid().expect("postmaster.pid names the server");
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("the server runs");
    let uid: u32 = status
        .lines()
        .find_map(|l| l.strip_prefix("Uid:"))
        .and_then(|l| l.split_whitespace().next())
        .and_then(|u| u.parse().ok())
        .expect("a Uid line");
    assert_ne!(uid, 0, "the server must not run as root");

    pg.sql("create table acked (id bigint primary key)");
    pg.sql("insert into acked select generate_series(1, 1000)");
    pg.crash();
    // Gone, or a zombie its new parent has yet to reap (pg_ctl left it when it exited).
    let state = std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|s| s.rsplit(") ").next().map(|rest| rest.chars().next()))
        .flatten();
    assert!(
        matches!(state, None | Some('Z')),
        "the server still runs: state {state:?}"
    );
    pg.restart();
    assert_eq!(pg.sql("select count(*) from acked"), "1000");
    assert!(
        pg.log().contains("database system was interrupted")
            || pg.log().contains("was not properly shut down"),
        "the restart recovered from the WAL: {}",
        pg.log()
    );
}

#[test]
fn postgres_tables_answer_as_the_reference_and_redb_through_commits_rollbacks_and_a_crash() {
    let Some(mut pg) = Cluster::start(
        "postgres_tables_answer_as_the_reference_and_redb_through_commits_rollbacks_and_a_crash",
    ) else {
        return;
    };
    let mut connection = Connection::open(&pg.conninfo()).expect("connect over the socket");
    create_tables(connection.client()).unwrap();
    create_tables(connection.client()).expect("creating the tables again changes nothing");
    let dir = tempfile::tempdir().unwrap();
    let db = redb::Database::create(dir.path().join("kv.redb")).unwrap();
    let mut memory = Memory::default();
    for round in 0..12u64 {
        let mut tables = PgKv::write(&mut connection).unwrap();
        let txn = db.begin_write().unwrap();
        let mut local = RedbWrite::new(&txn);
        if round % 4 == 3 {
            // Rolled back: what it wrote is gone, for the reference too.
            let mut scratch = memory.clone();
            same_everywhere(&mut [&mut scratch, &mut local, &mut tables], round, 150);
            tables.rollback().unwrap();
            drop(local);
            txn.abort().unwrap();
        } else {
            same_everywhere(&mut [&mut memory, &mut local, &mut tables], round, 150);
            tables.commit().unwrap();
            drop(local);
            txn.commit().unwrap();
        }
        let mut snapshot = PgKv::read(&mut connection).unwrap();
        assert_eq!(
            contents(&mut snapshot).unwrap(),
            contents(&mut memory).unwrap(),
            "PostgreSQL after round {round}"
        );
        snapshot.commit().unwrap();
        let read = db.begin_read().unwrap();
        assert_eq!(
            contents(&mut RedbRead::new(&read)).unwrap(),
            contents(&mut memory).unwrap(),
            "redb after round {round}"
        );
    }
    let held: usize = contents(&mut memory)
        .unwrap()
        .iter()
        .map(|(_, e)| e.len())
        .sum();
    assert!(held > 20, "{held} entries");

    // Every committed entry is there after a crash of the server.
    drop(connection);
    pg.crash();
    pg.restart();
    let mut connection = Connection::open(&pg.conninfo()).expect("connect after the restart");
    let mut snapshot = PgKv::read(&mut connection).unwrap();
    assert_eq!(
        contents(&mut snapshot).unwrap(),
        contents(&mut memory).unwrap()
    );
}

/// One write of a fleet host: the next number of a shared sequence, taken and recorded in one
/// transaction under the writer lock (as the event log's sequence will be).
fn append(connection: &mut Connection, member: &fleet::Member) -> Result<u64, Refused> {
    let mut kv = fleet::write(&mut *connection, member)?;
    let next = kv
        .get(Table::Meta, b"seq")?
        .map_or(1, |v| u64::from_be_bytes(v.try_into().unwrap()) + 1);
    kv.insert(Table::Meta, b"seq", &next.to_be_bytes())?;
    kv.insert(Table::Events, &next.to_be_bytes(), member.host.as_bytes())?;
    kv.commit()?;
    Ok(next)
}

#[test]
fn fleet_hosts_write_one_at_a_time_and_a_host_past_its_lease_is_fenced() {
    let Some(pg) =
        Cluster::start("fleet_hosts_write_one_at_a_time_and_a_host_past_its_lease_is_fenced")
    else {
        return;
    };
    let mut admin = Connection::open(&pg.conninfo()).unwrap();
    fleet::create_tables(&mut admin).unwrap();
    fleet::create_tables(&mut admin).expect("creating the tables again changes nothing");

    // Three hosts take numbers at once: read-modify-write races would lose some or take one
    // twice; under the writer lock every number is taken once, and none is skipped.
    let per_host = 100;
    let (_, hosts) = on_hosts(&pg, 3, move |connection, member, _| {
        (0..per_host)
            .map(|_| append(connection, member).unwrap())
            .collect::<Vec<u64>>()
    });
    let mut taken: Vec<u64> = hosts.into_iter().flatten().collect();
    taken.sort_unstable();
    assert_eq!(taken, (1..=3 * per_host).collect::<Vec<u64>>());
    let mut kv = PgKv::read(&mut admin).unwrap();
    let events = kv
        .range(
            Table::Events,
            None,
            None,
            chime_daemon::store::kv::Order::Ascending,
            usize::MAX,
        )
        .unwrap();
    assert_eq!(events.len() as u64, 3 * per_host, "one event per number");
    kv.commit().unwrap();

    // A host whose lease ends is declared gone by another, and its late writes are refused.
    let mut alpha = Connection::open(&pg.conninfo()).unwrap();
    let alpha_member = fleet::join(&mut alpha, "alpha", Duration::from_secs(300)).unwrap();
    let mut delta = Connection::open(&pg.conninfo()).unwrap();
    let delta_member = fleet::join(&mut delta, "delta", Duration::from_secs(300)).unwrap();
    append(&mut delta, &delta_member).expect("delta writes within its lease");
    // Then its lease is cut short (as if it stopped renewing it), with no race against the
    // write above however slow the machine is.
    fleet::renew(&mut delta, &delta_member, Duration::from_millis(300)).unwrap();
    let gone = wait_until(Duration::from_secs(60), "delta's lease to end", || {
        let mut kv = fleet::write(&mut alpha, &alpha_member).unwrap();
        let expired = fleet::expired(&mut kv).unwrap();
        match expired.iter().find(|m| m.host == "delta") {
            Some(member) => {
                assert!(fleet::fence(&mut kv, member).unwrap());
                kv.commit().unwrap();
                Some(member.clone())
            }
            None => {
                kv.rollback().unwrap();
                None
            }
        }
    });
    assert_eq!(gone, delta_member);
    assert!(
        matches!(
            append(&mut delta, &delta_member),
            Err(Refused::Fenced { .. })
        ),
        "a fenced host's write is refused"
    );
    assert!(
        matches!(
            fleet::renew(&mut delta, &delta_member, Duration::from_secs(300)),
            Err(Refused::Fenced { .. })
        ),
        "a fenced host cannot renew its way back"
    );
    fleet::renew(&mut alpha, &alpha_member, Duration::from_secs(300)).expect("alpha renews");
    // It joins again, with a new epoch, and writes.
    let rejoined = fleet::join(&mut delta, "delta", Duration::from_secs(300)).unwrap();
    assert!(rejoined.epoch > delta_member.epoch, "{rejoined:?}");
    assert_eq!(append(&mut delta, &rejoined).unwrap(), 3 * per_host + 2);
}

#[test]
fn ten_thousand_occurrences_due_at_once_are_each_started_once_by_three_hosts() {
    let Some(pg) =
        Cluster::start("ten_thousand_occurrences_due_at_once_are_each_started_once_by_three_hosts")
    else {
        return;
    };
    let mut admin = Connection::open(&pg.conninfo()).unwrap();
    fleet::create_tables(&mut admin).unwrap();
    let (jobs, due_ms) = (10_000u64, 1_800_000_000_000i64);
    let mut kv = PgKv::write(&mut admin).unwrap();
    for job in 1..=jobs {
        kv.insert(Table::Due, &encode(&(due_ms, job)), &[]).unwrap();
    }
    kv.commit().unwrap();

    // Each host takes what is due in batches, as an engine would: claims each occurrence,
    // removes it from `due` and records its run, in one transaction.
    let (_, hosts) = on_hosts(&pg, 3, move |connection, member, _| {
        let mut started = Vec::new();
        let due_end = successor(&encode(&(due_ms, u64::MAX)));
        loop {
            let mut kv = fleet::write(&mut *connection, member).unwrap();
            let batch = kv
                .range(Table::Due, None, Some(&due_end), Order::Ascending, 200)
                .unwrap();
            if batch.is_empty() {
                kv.rollback().unwrap();
                return started;
            }
            for (key, _) in batch {
                let (due, job): (i64, u64) = decode(&key).expect("a due key");
                assert!(
                    fleet::claim(&mut kv, member, job, due).unwrap(),
                    "{}: occurrence {job}@{due} was claimed before",
                    member.host
                );
                assert!(kv.remove(Table::Due, &key).unwrap());
                kv.insert(Table::Runs, &encode(&(job, 1u64)), member.host.as_bytes())
                    .unwrap();
                started.push(job);
            }
            kv.commit().unwrap();
        }
    });
    let mut started: Vec<u64> = hosts.into_iter().flatten().collect();
    started.sort_unstable();
    assert_eq!(
        started,
        (1..=jobs).collect::<Vec<u64>>(),
        "each started once"
    );
    assert_eq!(
        pg.sql("select count(*), count(distinct (job, due_ms)) from chime_occurrences"),
        format!("{jobs}|{jobs}")
    );
    // The key refuses a second start of an occurrence, whoever asks.
    let mut connection = Connection::open(&pg.conninfo()).unwrap();
    let member = fleet::join(&mut connection, "delta", Duration::from_secs(300)).unwrap();
    let mut kv = fleet::write(&mut connection, &member).unwrap();
    assert!(!fleet::claim(&mut kv, &member, 42, due_ms).unwrap());
    assert!(
        fleet::claim(&mut kv, &member, 42, due_ms + 1).unwrap(),
        "the next occurrence"
    );
    kv.commit().unwrap();
}

#[test]
fn a_host_stopped_while_holding_the_writer_lock_does_not_stop_the_fleet() {
    let test = "a_host_stopped_while_holding_the_writer_lock_does_not_stop_the_fleet";
    let Some(pg) = Cluster::start(test) else {
        return;
    };
    let mut admin = Connection::open(&pg.conninfo()).unwrap();
    fleet::create_tables(&mut admin).unwrap();
    // Host a takes the writer lock and stops there (as a SIGSTOPped chimed would), with a lease
    // of a second.
    let mut a = Connection::open(&pg.conninfo()).unwrap();
    let a_member = fleet::join(&mut a, "a", Duration::from_secs(1)).unwrap();
    fleet::name_session(&mut a, &a_member).unwrap();
    let mut held = fleet::write(&mut a, &a_member).unwrap();
    held.insert(Table::Meta, b"held", b"1").unwrap();
    held.flush().unwrap();
    // Host b waits for the lock, and once a's lease has ended, ends a's session and writes.
    let mut b = Connection::open(&pg.conninfo()).unwrap();
    let b_member = fleet::join(&mut b, "b", Duration::from_secs(600)).unwrap();
    fleet::name_session(&mut b, &b_member).unwrap();
    let mut kv = fleet::write(&mut b, &b_member).expect("b writes once a's lease ended");
    kv.insert(Table::Meta, b"b", b"1").unwrap();
    kv.commit().unwrap();
    // a's transaction was rolled back with its session: its write never lands.
    assert!(held.commit().is_err(), "a's session was ended");
    let mut kv = PgKv::read(&mut admin).unwrap();
    assert_eq!(kv.get(Table::Meta, b"held").unwrap(), None);
    assert_eq!(kv.get(Table::Meta, b"b").unwrap(), Some(b"1".to_vec()));
}
