//! Benchmark: chimed in a fleet (issue 15), 1, 2 and 3 hosts on one private PostgreSQL cluster,
//! the real daemons (release builds), beside one chimed on redb in the same run.
//!
//! For each configuration (`redb`, then 1, 2 and 3 hosts on PostgreSQL, alternating within each
//! of `--rounds` rounds, default 2):
//!
//! - **submit**: `--connections` clients (default 16), spread over the hosts, each submitting
//!   far-future one-shot jobs one at a time for `--seconds` (default 5): acknowledged
//!   submissions per second and their latency p50/p99 (every reply was sent after its commit);
//! - **start**: `--jobs` one-shot jobs (default 2,000) running `/bin/true`, submitted over the
//!   hosts and all due at one instant: occurrences started per second (from the due time to the
//!   last start) and each start's lateness at commit (the `started` event's time minus its due
//!   time), p50/p99, as a watcher on the first host sees them (in a fleet it sees every host's).
//!
//! Each configuration gets a fresh cluster and fresh daemons. Every commit is durable
//! (`fsync`, `synchronous_commit` on). Skips with a message where PostgreSQL's server is not
//! installed.
//!
//! Run: `cargo build --release -p chime-daemon -p chime-ctl && CHIMED_BIN=target/release/chimed
//! CHIMECTL_BIN=target/release/chimectl cargo run --release -p chime-tests --bin bench-hosts --
//! [--rounds 2] [--seconds 5] [--connections 16] [--jobs 2000]`

use chime_proto::{
    Command as JobCommand, EventKind, JobSpec, Request, Response, ScheduleSpec, ServerMessage,
    WatchItem,
};
use chime_tests::Daemon;
use chime_tests::bench::{self, percentile};
use chime_tests::pg::Cluster;
use futures::StreamExt;
use std::time::{Duration, Instant};

struct Options {
    rounds: usize,
    seconds: f64,
    connections: usize,
    jobs: u64,
}

fn options() -> Options {
    let o = Options {
        rounds: bench::arg("--rounds", 2) as usize,
        seconds: bench::arg("--seconds", 5) as f64,
        connections: bench::arg("--connections", 16) as usize,
        jobs: bench::arg("--jobs", 2000),
    };
    assert!(o.connections > 0 && o.jobs > 0 && o.rounds > 0);
    o
}

/// Daemons for a configuration: one on redb (`hosts == 0`), or `hosts` on `pg`.
fn daemons(pg: Option<&Cluster>, hosts: usize) -> Vec<Daemon> {
    match pg {
        None => vec![Daemon::start_with(&["--max-running", "256"])],
        Some(pg) => (1..=hosts)
            .map(|i| {
                Daemon::start_with(&[
                    "--store",
                    &pg.url(),
                    "--host-id",
                    &format!("h{i}"),
                    "--max-running",
                    "256",
                ])
            })
            .collect(),
    }
}

/// Acknowledged submissions per second over `seconds`, and the latencies.
async fn submit(daemons: &[Daemon], connections: usize, seconds: f64) -> (f64, Vec<Duration>) {
    let spec = JobSpec::new(
        JobCommand::Argv(vec!["/bin/true".into()]),
        "/",
        ScheduleSpec::After(3_600_000),
    );
    let deadline = Instant::now() + Duration::from_secs_f64(seconds);
    let started = Instant::now();
    let clients = (0..connections).map(|i| {
        let socket = daemons[i % daemons.len()].socket.clone();
        let spec = spec.clone();
        async move {
            let mut conn = bench::connect(&socket).await;
            let mut latencies = Vec::new();
            let mut id = 0;
            while Instant::now() < deadline {
                id += 1;
                let sent = Instant::now();
                bench::feed(
                    &mut conn,
                    id,
                    Request::Submit(Box::new(spec.clone().into())),
                )
                .await;
                bench::flush(&mut conn).await;
                match bench::reply(&mut conn).await.1 {
                    Ok(Response::Added(_)) => latencies.push(sent.elapsed()),
                    other => panic!("a submission failed: {other:?}"),
                }
            }
            latencies
        }
    });
    let all: Vec<Duration> = futures::future::join_all(clients)
        .await
        .into_iter()
        .flatten()
        .collect();
    let rate = all.len() as f64 / started.elapsed().as_secs_f64();
    (rate, all)
}

/// `jobs` one-shot jobs due at one instant, submitted over the daemons; occurrences started per
/// second and each start's lateness at commit (ms), as a watcher on the first daemon sees them.
async fn start(daemons: &[Daemon], jobs: u64) -> (f64, Vec<f64>) {
    let (mut watch, _) = bench::watch(&daemons[0].socket).await;
    // Due once everything is stored (a generous margin for slow submissions).
    let due = chime_daemon::job::now_ms() + 2_000 + jobs as i64 * 2;
    let spec = JobSpec::new(
        JobCommand::Argv(vec!["/bin/true".into()]),
        "/",
        ScheduleSpec::At(due),
    );
    let sends = daemons.iter().enumerate().map(|(i, d)| {
        let share =
            jobs / daemons.len() as u64 + u64::from((i as u64) < jobs % daemons.len() as u64);
        let requests: Vec<Request> = (0..share)
            .map(|_| Request::Submit(Box::new(spec.clone().into())))
            .collect();
        let socket = d.socket.clone();
        async move {
            let mut conn = bench::connect(&socket).await;
            bench::send_windowed(&mut conn, &requests).await;
        }
    });
    futures::future::join_all(sends).await;
    assert!(
        chime_daemon::job::now_ms() < due,
        "storing {jobs} jobs went past their due time: raise the margin"
    );
    let mut lateness = Vec::with_capacity(jobs as usize);
    let mut last_ms = due;
    while (lateness.len() as u64) < jobs {
        let frame = tokio::time::timeout(Duration::from_secs(120), watch.next())
            .await
            .expect("starts keep coming")
            .expect("the watch is open")
            .unwrap();
        let ServerMessage::Watch(w) = chime_proto::codec::decode(&frame).unwrap() else {
            continue;
        };
        let WatchItem::Events(events) = w.item else {
            panic!("the watcher fell behind: {:?}", w.item)
        };
        for event in events {
            if let EventKind::Started { due_ms, .. } = event.kind {
                lateness.push((event.at_ms - due_ms) as f64);
                last_ms = last_ms.max(event.at_ms);
            }
        }
    }
    let span = ((last_ms - due).max(1)) as f64 / 1000.0;
    (jobs as f64 / span, lateness)
}

fn main() {
    let o = options();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    println!(
        "chime bench-hosts: {} rounds; submit: {} clients for {} s; start: {} jobs due at once",
        o.rounds, o.connections, o.seconds, o.jobs
    );
    for round in 1..=o.rounds {
        for hosts in [0usize, 1, 2, 3] {
            let pg = if hosts == 0 {
                None
            } else {
                match Cluster::start("bench-hosts") {
                    Some(pg) => Some(pg),
                    None => return,
                }
            };
            let daemons = daemons(pg.as_ref(), hosts);
            let label = if hosts == 0 {
                "redb   ".to_owned()
            } else {
                format!("{hosts} host{}", if hosts == 1 { " " } else { "s" })
            };
            let (rate, mut latencies) =
                runtime.block_on(submit(&daemons, o.connections, o.seconds));
            latencies.sort();
            let (started, mut lateness) = runtime.block_on(start(&daemons, o.jobs));
            lateness.sort_by(f64::total_cmp);
            let pct = |v: &[f64], p: f64| v[((v.len() - 1) as f64 * p) as usize];
            println!(
                "round {round} {label}: submit {rate:>7.0} acked/s (p50 {:.2} ms, p99 {:.2} ms); start {started:>6.0} occurrences/s, lateness at commit p50 {:.0} ms p99 {:.0} ms",
                percentile(&latencies, 0.5),
                percentile(&latencies, 0.99),
                pct(&lateness, 0.5),
                pct(&lateness, 0.99),
            );
            println!(
                "{{\"bench\":\"hosts\",\"round\":{round},\"store\":\"{}\",\"hosts\":{},\"acked_per_s\":{rate:.0},\"submit_p50_ms\":{:.3},\"submit_p99_ms\":{:.3},\"started_per_s\":{started:.0},\"lateness_p50_ms\":{:.0},\"lateness_p99_ms\":{:.0}}}",
                if hosts == 0 { "redb" } else { "postgres" },
                hosts.max(1),
                percentile(&latencies, 0.5),
                percentile(&latencies, 0.99),
                pct(&lateness, 0.5),
                pct(&lateness, 0.99),
            );
            drop(daemons);
            drop(pg);
        }
    }
}
