//! Benchmark: what a million pending recurring jobs cost.
//!
//! Starts a real chimed (release build) in a temp dir and loads `--jobs` recurring jobs
//! (default 1,000,000; half cron expressions in five zones, half intervals, spread over ten
//! queues), all due no sooner than a day ahead so that nothing fires while we measure. Then:
//!
//! - daemon memory (RSS) with everything loaded;
//! - CPU used while idle between fires, over `--idle-seconds` (default 10);
//! - `chimectl ls --limit 100` latency, as a user runs it (a new process each time), plus the
//!   `--state` and `--queue` filters;
//! - time from start to READY after a clean shutdown, several times;
//! - memory again after the restart.
//!
//! Run: `cargo run --release -p chime-tests --bin bench-pending -- [--jobs 1000000]`

use chime_proto::*;
use chime_tests::bench::{self, connect, cpu_time, feed, flush, memory_kib, percentile, reply};
use chime_tests::{Daemon, bin};
use std::process::{Command as Process, Stdio};
use std::time::{Duration, Instant};

const ZONES: [&str; 5] = [
    "America/New_York",
    "Europe/London",
    "Australia/Lord_Howe",
    "Asia/Kolkata",
    "UTC",
];

/// The i-th job: due at the earliest a day from now.
fn job(i: u64, cwd: &str, now: jiff::Timestamp) -> JobSpec {
    let schedule = if i % 2 == 0 {
        // Yearly, on the date a week ahead, at a time spread over the day.
        let date = (now + jiff::SignedDuration::from_hours(24 * 7))
            .to_zoned_datetime(jiff::tz::TimeZone::UTC)
            .date();
        ScheduleSpec::Cron {
            expr: format!(
                "{} {} {} {} *",
                i % 60,
                (i / 60) % 24,
                date.day(),
                date.month()
            ),
            tz: Some(ZONES[(i as usize / 2) % ZONES.len()].into()),
        }
    } else {
        ScheduleSpec::Every {
            interval_ms: 3_600_000 * (1 + i % 48),
            from_ms: Some(now.as_millisecond() + 86_400_000 + (i as i64 % 86_400) * 1000),
        }
    };
    JobSpec {
        queue: Some(format!("q{}", i % 10)),
        ..JobSpec::new(Command::Argv(vec!["/bin/true".into()]), cwd, schedule)
    }
}

/// Loads `n` jobs over `connections` connections with `in_flight` requests each.
async fn load(socket: &std::path::Path, cwd: &str, n: u64, connections: u64, in_flight: u64) {
    let now = jiff::Timestamp::now();
    let mut tasks = Vec::new();
    for c in 0..connections {
        let socket = socket.to_path_buf();
        let cwd = cwd.to_owned();
        tasks.push(tokio::spawn(async move {
            let mut conn = connect(&socket).await;
            let mine: Vec<u64> = (c..n).step_by(connections as usize).collect();
            let mut sent = 0usize;
            let mut open = 0u64;
            while sent < mine.len() || open > 0 {
                while open < in_flight && sent < mine.len() {
                    let i = mine[sent];
                    feed(
                        &mut conn,
                        i + 1,
                        Request::Submit(Box::new(job(i, &cwd, now).into())),
                    )
                    .await;
                    sent += 1;
                    open += 1;
                }
                flush(&mut conn).await;
                let (id, result) = reply(&mut conn).await;
                if let Err(err) = result {
                    panic!("job {id} refused: {err}");
                }
                open -= 1;
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
}

/// Runs `chimectl ARGS` `times` times against the daemon and returns the wall times, sorted.
fn chimectl_times(d: &Daemon, args: &[&str], times: usize) -> Vec<Duration> {
    let mut out = Vec::new();
    for _ in 0..times {
        let started = Instant::now();
        let status = Process::new(bin("chimectl"))
            .args(args)
            .env("CHIME_SOCKET", &d.socket)
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .status()
            .unwrap();
        out.push(started.elapsed());
        assert!(status.success(), "chimectl {args:?} failed");
    }
    out.sort();
    out
}

fn main() {
    let n = bench::arg("--jobs", 1_000_000);
    let idle_seconds = bench::arg("--idle-seconds", 10);
    let mut d = Daemon::start();
    let socket = d.socket.clone();
    let cwd = d.dir.path().display().to_string();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();

    println!("chime bench-pending: {n} recurring jobs");
    let started = Instant::now();
    runtime.block_on(load(&socket, &cwd, n, 4, 256));
    let load_s = started.elapsed().as_secs_f64();
    let status = runtime.block_on(bench::status(&socket));
    let pending: u64 = status
        .counts
        .iter()
        .filter(|(s, _)| matches!(s, JobState::Scheduled))
        .map(|(_, n)| n)
        .sum();
    assert_eq!(pending, n, "not every job is pending: {:?}", status.counts);
    let db_mib = status.database_bytes as f64 / 1_048_576.0;
    println!(
        "load      {n} jobs in {load_s:.1} s ({:.0}/s), database {db_mib:.0} MiB",
        n as f64 / load_s
    );

    let pid = d.pid();
    let rss_loaded = memory_kib(pid, "VmRSS:") / 1024;
    let peak_loaded = memory_kib(pid, "VmHWM:") / 1024;
    println!("memory    RSS {rss_loaded} MiB after loading (peak {peak_loaded} MiB)");

    // Idle: nothing is due for a day.
    let cpu_before = cpu_time(pid);
    let idle_started = Instant::now();
    std::thread::sleep(Duration::from_secs(idle_seconds));
    let idle_cpu =
        (cpu_time(pid) - cpu_before).as_secs_f64() / idle_started.elapsed().as_secs_f64();
    println!(
        "idle      {:.2}% of one core over {idle_seconds} s",
        idle_cpu * 100.0
    );

    let ls = chimectl_times(&d, &["ls", "--limit", "100"], 30);
    let ls_state = chimectl_times(&d, &["ls", "--state", "scheduled", "--limit", "100"], 10);
    let ls_queue = chimectl_times(&d, &["ls", "--queue", "q7", "--limit", "100"], 10);
    let ls_late = chimectl_times(
        &d,
        &["ls", "--limit", "100", "--after", &(n - 200).to_string()],
        10,
    );
    println!(
        "ls        `chimectl ls --limit 100` p50 {:.1} ms, p99 {:.1} ms (whole command, 30 runs)",
        percentile(&ls, 0.5),
        percentile(&ls, 0.99)
    );
    println!(
        "          --state scheduled p50 {:.1} ms, --queue q7 p50 {:.1} ms, last page p50 {:.1} ms",
        percentile(&ls_state, 0.5),
        percentile(&ls_queue, 0.5),
        percentile(&ls_late, 0.5)
    );

    let mut ready = Vec::new();
    let mut stops = Vec::new();
    for _ in 0..3 {
        stops.push(d.stop());
        let started = Instant::now();
        d.restart();
        ready.push(started.elapsed());
    }
    ready.sort();
    println!(
        "restart   start to READY after a clean stop: {} (stop took {})",
        ready
            .iter()
            .map(|t| format!("{:.0} ms", t.as_secs_f64() * 1000.0))
            .collect::<Vec<_>>()
            .join(", "),
        stops
            .iter()
            .map(|t| format!("{:.0} ms", t.as_secs_f64() * 1000.0))
            .collect::<Vec<_>>()
            .join(", ")
    );
    let pid = d.pid();
    // Let the first batches after the start settle, then look at memory.
    let _ = runtime.block_on(bench::status(&socket));
    let ls_after = chimectl_times(&d, &["ls", "--limit", "100"], 10);
    let rss_restarted = memory_kib(pid, "VmRSS:") / 1024;
    println!(
        "memory    RSS {rss_restarted} MiB after the restart and an ls (ls p50 {:.1} ms cold)",
        percentile(&ls_after, 0.5)
    );
    println!(
        "{{\"bench\":\"pending\",\"jobs\":{n},\"load_per_s\":{:.0},\"database_mib\":{db_mib:.0},\"rss_loaded_mib\":{rss_loaded},\"rss_restarted_mib\":{rss_restarted},\"idle_cpu_percent\":{:.3},\"ls_p50_ms\":{:.1},\"ls_p99_ms\":{:.1},\"ready_ms\":[{}]}}",
        n as f64 / load_s,
        idle_cpu * 100.0,
        percentile(&ls, 0.5),
        percentile(&ls, 0.99),
        ready
            .iter()
            .map(|t| format!("{:.0}", t.as_secs_f64() * 1000.0))
            .collect::<Vec<_>>()
            .join(",")
    );
}
