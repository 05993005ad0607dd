//! Fleet mode's ground (issue 15): the PostgreSQL harness (`chime_tests::pg`: a private cluster
//! as an unprivileged user, reachable only through its socket, durable as a production one,
//! surviving an immediate stop with every committed row), and the store's PostgreSQL backend
//! (`chime_daemon::store::kv::pg`), held to the same answers as the reference and as redb.

use chime_daemon::store::kv::memory::{Memory, contents, same_everywhere};
use chime_daemon::store::kv::pg::{Connection, PgKv, create_tables};
use chime_daemon::store::kv::redb::{RedbRead, RedbWrite};
use chime_tests::pg::Cluster;
use redb::ReadableDatabase;

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
