//! The PostgreSQL harness that fleet mode's tests stand on (issue 15; see `chime_tests::pg`):
//! a private cluster as an unprivileged user, reachable only through its socket, durable as a
//! production one, surviving an immediate stop with every committed row.

use chime_tests::pg::Cluster;

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
