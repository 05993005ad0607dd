//! Benchmark: acknowledged durable submissions per second.
//!
//! Starts a real chimed (release build) in a temp dir, opens `--connections` client connections
//! (default 32), and has each submit far-future one-shot jobs as fast as its replies come back
//! (one request in flight per connection, like 32 independent clients). Every reply counted was
//! sent after the job's commit. Reports acknowledged submissions/s, latency percentiles, the
//! daemon's commits/s and changes per commit, its CPU and memory.
//!
//! In the same run it measures the ceiling of "a commit per request": redb on the same disk,
//! inserting one job-shaped row pair per durable transaction. The ratio between the two is the
//! figure to quote; these machines are noisy, absolute numbers drift.
//!
//! Run: `cargo run --release -p chime-tests --bin bench-submit -- [--seconds 10] [--connections 32]`

use chime_proto::*;
use chime_tests::Daemon;
use chime_tests::bench::{
    self, connect, cpu_time, feed, flush, memory_kib, percentile, reply, thread_cpu_time,
};
use std::time::{Duration, Instant};

struct Options {
    seconds: f64,
    connections: usize,
    pipeline: usize,
}

fn options() -> Options {
    let mut o = Options {
        seconds: 10.0,
        connections: 32,
        pipeline: 1,
    };
    let args: Vec<String> = std::env::args().skip(1).collect();
    let mut i = 0;
    while i < args.len() {
        let value = args.get(i + 1).cloned().unwrap_or_default();
        match args[i].as_str() {
            "--seconds" => o.seconds = value.parse().expect("--seconds N"),
            "--connections" => o.connections = value.parse().expect("--connections N"),
            "--pipeline" => o.pipeline = value.parse().expect("--pipeline N"),
            other => panic!("unknown option {other}; use --seconds, --connections, --pipeline"),
        }
        i += 2;
    }
    o
}

/// The ceiling of one durable commit per request: one job row and one due-index row per
/// transaction, on a fresh redb file in the same kind of directory, committed as chimed
/// commits (redb's default durability, without quick repair: chimed leaves it off unless
/// started with `--quick-repair`, and it doubles a commit's cost).
fn commit_per_request_baseline(dir: &std::path::Path, seconds: f64) -> f64 {
    const JOBS: redb::TableDefinition<'_, u64, &[u8]> = redb::TableDefinition::new("jobs");
    const DUE: redb::TableDefinition<'_, (i64, u64), ()> = redb::TableDefinition::new("due");
    let db = redb::Database::create(dir.join("baseline.redb")).unwrap();
    let row = vec![7u8; 120];
    let started = Instant::now();
    let mut n = 0u64;
    while started.elapsed().as_secs_f64() < seconds {
        let txn = db.begin_write().unwrap();
        {
            txn.open_table(JOBS)
                .unwrap()
                .insert(n, row.as_slice())
                .unwrap();
            txn.open_table(DUE)
                .unwrap()
                .insert((4_000_000_000_000 + n as i64, n), ())
                .unwrap();
        }
        txn.commit().unwrap();
        n += 1;
    }
    n as f64 / started.elapsed().as_secs_f64()
}

/// One client: submits until `deadline`, returns the latency of every acknowledged submission.
async fn client(
    socket: std::path::PathBuf,
    cwd: String,
    deadline: Instant,
    pipeline: usize,
) -> Vec<Duration> {
    let mut conn = connect(&socket).await;
    let spec = JobSpec::new(
        Command::Argv(vec!["/bin/true".into()]),
        cwd,
        ScheduleSpec::After(365 * 86_400_000),
    );
    let mut latencies = Vec::new();
    let mut sent_at = std::collections::HashMap::new();
    let mut next_id = 1u64;
    loop {
        while sent_at.len() < pipeline && Instant::now() < deadline {
            feed(
                &mut conn,
                next_id,
                Request::Submit(Box::new(spec.clone().into())),
            )
            .await;
            sent_at.insert(next_id, Instant::now());
            next_id += 1;
        }
        flush(&mut conn).await;
        if sent_at.is_empty() {
            break;
        }
        let (id, result) = reply(&mut conn).await;
        match result {
            Ok(Response::Added(_)) => {}
            other => panic!("submission refused: {other:?}"),
        }
        latencies.push(sent_at.remove(&id).unwrap().elapsed());
    }
    latencies
}

async fn round(o: &Options, socket: &std::path::Path, cwd: &str, seconds: f64) -> Vec<Duration> {
    let deadline = Instant::now() + Duration::from_secs_f64(seconds);
    let tasks: Vec<_> = (0..o.connections)
        .map(|_| {
            tokio::spawn(client(
                socket.to_path_buf(),
                cwd.to_owned(),
                deadline,
                o.pipeline,
            ))
        })
        .collect();
    let mut all = Vec::new();
    for t in tasks {
        all.extend(t.await.unwrap());
    }
    all
}

fn main() {
    let o = options();
    let daemon = Daemon::start();
    let pid = daemon.pid();
    let socket = daemon.socket.clone();
    let cwd = daemon.dir.path().display().to_string();
    // One thread for all clients: the daemon gets the other core.
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();

    println!(
        "chime bench-submit: {} connections, {} in flight each, {} s",
        o.connections, o.pipeline, o.seconds
    );
    let baseline = commit_per_request_baseline(daemon.dir.path(), (o.seconds / 3.0).max(2.0));
    println!("baseline  redb, one durable commit per request: {baseline:.0} commits/s");

    runtime.block_on(round(&o, &socket, &cwd, 1.0)); // warm-up
    let before = runtime.block_on(bench::status(&socket));
    let cpu_before = cpu_time(pid);
    let engine_before = thread_cpu_time(pid, "chimed-engine");
    let started = Instant::now();
    let mut latencies = runtime.block_on(round(&o, &socket, &cwd, o.seconds));
    let elapsed = started.elapsed().as_secs_f64();
    let cpu = (cpu_time(pid) - cpu_before).as_secs_f64();
    let engine = (thread_cpu_time(pid, "chimed-engine") - engine_before).as_secs_f64();
    let after = runtime.block_on(bench::status(&socket));
    latencies.sort();

    let acked = latencies.len() as f64;
    let commits = (after.commits - before.commits) as f64;
    let changes = (after.changes - before.changes) as f64;
    let rate = acked / elapsed;
    let scheduled = after
        .counts
        .iter()
        .find(|(s, _)| *s == JobState::Scheduled)
        .map_or(0, |c| c.1);
    println!(
        "chimed    acknowledged durable submissions: {rate:.0}/s ({acked:.0} in {elapsed:.1} s)"
    );
    println!(
        "          latency ms: p50 {:.2}  p90 {:.2}  p99 {:.2}  p99.9 {:.2}  max {:.2}",
        percentile(&latencies, 0.50),
        percentile(&latencies, 0.90),
        percentile(&latencies, 0.99),
        percentile(&latencies, 0.999),
        percentile(&latencies, 1.0)
    );
    println!(
        "          commits: {:.0}/s, {:.1} changes per commit",
        commits / elapsed,
        changes / commits.max(1.0)
    );
    println!(
        "          memory: RSS {} MiB, peak {} MiB, with {} jobs stored ({:.1} MiB database)",
        memory_kib(pid, "VmRSS:") / 1024,
        memory_kib(pid, "VmHWM:") / 1024,
        scheduled,
        after.database_bytes as f64 / 1_048_576.0
    );
    println!(
        "          daemon CPU: {:.0}% of one core, {:.1} us per submission; engine thread {:.0}% of one core, {:.1} us per submission",
        cpu / elapsed * 100.0,
        cpu / acked.max(1.0) * 1e6,
        engine / elapsed * 100.0,
        engine / acked.max(1.0) * 1e6
    );
    println!(
        "ratio     chimed / commit-per-request: {:.1}x",
        rate / baseline
    );
    println!(
        "{{\"bench\":\"submit\",\"connections\":{},\"pipeline\":{},\"acked_per_s\":{rate:.0},\"baseline_commits_per_s\":{baseline:.0},\"ratio\":{:.2},\"commits_per_s\":{:.0},\"changes_per_commit\":{:.1},\"p50_ms\":{:.3},\"p99_ms\":{:.3},\"rss_mib\":{},\"engine_us\":{:.1}}}",
        o.connections,
        o.pipeline,
        rate / baseline,
        commits / elapsed,
        changes / commits.max(1.0),
        percentile(&latencies, 0.5),
        percentile(&latencies, 0.99),
        memory_kib(pid, "VmRSS:") / 1024,
        engine / acked.max(1.0) * 1e6
    );
}
