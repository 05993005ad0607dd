//! Benchmark: how close chimed comes to the machine's raw spawn rate.
//!
//! In one run:
//! 1. **raw**: spawn `/bin/true` `--jobs` times (default 10,000), `--parallel` at a time
//!    (default 2), from a tokio program, waiting for each: the machine's ceiling.
//! 2. **chimed**: submit the same number of one-shot `/bin/true` jobs, all due at the same
//!    moment a few seconds ahead, on a queue with `--parallel` slots, and time from that moment
//!    until the last one has finished (taken from the daemon's own run records).
//!
//! Reports both rates and their ratio (the target: at least 0.8), the daemon's commits
//! per job and its CPU. Every job's state is checked: all must have succeeded.
//!
//! Run: `cargo run --release -p chime-tests --bin bench-spawn -- [--jobs 10000] [--parallel 2]`

use chime_proto::*;
use chime_tests::Daemon;
use chime_tests::bench::{self, connect, cpu_time, feed, flush, reply};
use std::time::{Duration, Instant};

fn arg(name: &str, default: u64) -> u64 {
    let args: Vec<String> = std::env::args().collect();
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1))
        .map(|v| v.parse().unwrap_or_else(|_| panic!("{name} N")))
        .unwrap_or(default)
}

async fn raw(jobs: u64, parallel: u64) -> f64 {
    let started = Instant::now();
    let next = std::sync::Arc::new(std::sync::atomic::AtomicU64::new(0));
    let mut tasks = Vec::new();
    for _ in 0..parallel {
        let next = next.clone();
        tasks.push(tokio::spawn(async move {
            while next.fetch_add(1, std::sync::atomic::Ordering::Relaxed) < jobs {
                let status = tokio::process::Command::new("/bin/true")
                    .process_group(0)
                    .status()
                    .await
                    .unwrap();
                assert!(status.success());
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    jobs as f64 / started.elapsed().as_secs_f64()
}

fn main() {
    let jobs = arg("--jobs", 10_000);
    let parallel = arg("--parallel", 2);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    println!("chime bench-spawn: {jobs} /bin/true, {parallel} at a time");
    let raw_rate = runtime.block_on(raw(jobs, parallel));
    println!("raw       {raw_rate:.0} spawns/s (tokio::process, waiting for each)");

    let d = Daemon::start_with(&["--max-running", "1000"]);
    d.ctl_ok(&["queue", "set", "bench", "--parallel", &parallel.to_string()]);
    let socket = d.socket.clone();
    let cwd = d.dir.path().display().to_string();
    let due = jiff::Timestamp::now().as_millisecond() + 3000 + (jobs as i64 / 20);
    let spec = SubmitJob {
        name: None,
        command: Command::Argv(vec!["/bin/true".into()]),
        cwd,
        env: vec![],
        schedule: ScheduleSpec::At(due),
        count: None,
        until_ms: None,
        catch_up: None,
        deadline_ms: None,
        overlap: None,
        queue: Some("bench".into()),
        replace: false,
    };
    runtime.block_on(async {
        let mut conn = connect(&socket).await;
        let mut open = 0u64;
        let mut sent = 0u64;
        while sent < jobs || open > 0 {
            while open < 256 && sent < jobs {
                feed(&mut conn, sent + 1, Request::Submit(Box::new(spec.clone()))).await;
                sent += 1;
                open += 1;
            }
            flush(&mut conn).await;
            reply(&mut conn).await.1.expect("submission accepted");
            open -= 1;
        }
    });
    assert!(
        jiff::Timestamp::now().as_millisecond() < due,
        "submitting took longer than the lead time; raise it"
    );
    let pid = d.pid();
    let before = runtime.block_on(bench::status(&socket));
    let cpu_before = cpu_time(pid);
    // Wait for every job to finish.
    let finished = chime_tests::wait_until(Duration::from_secs(600), "all jobs to finish", || {
        let s = runtime.block_on(bench::status(&socket));
        let done: u64 = s
            .counts
            .iter()
            .filter(|(state, _)| state.is_final())
            .map(|(_, n)| n)
            .sum();
        (done == jobs).then_some(s)
    });
    let cpu = (cpu_time(pid) - cpu_before).as_secs_f64();
    let succeeded = finished
        .counts
        .iter()
        .find(|(s, _)| *s == JobState::Succeeded)
        .map_or(0, |c| c.1);
    assert_eq!(
        succeeded, jobs,
        "not every job succeeded: {:?}",
        finished.counts
    );
    // The span: from the due moment to the last run's end, from the run records.
    let last_end = runtime.block_on(async {
        let mut conn = connect(&socket).await;
        let mut last = 0i64;
        let mut after = None;
        loop {
            let page = match bench::call(
                &mut conn,
                Request::List2(ListQuery {
                    state: None,
                    queue: Some("bench".into()),
                    name_prefix: None,
                    after,
                    limit: 10_000,
                }),
            )
            .await
            {
                Response::Jobs2(page) => page,
                other => panic!("{other:?}"),
            };
            for job in &page.jobs {
                last = last.max(job.since_ms.unwrap_or(0));
            }
            match page.next {
                Some(next) => after = Some(next),
                None => break last,
            }
        }
    });
    let span = (last_end - due) as f64 / 1000.0;
    let rate = jobs as f64 / span;
    let commits = finished.v1.commits - before.v1.commits;
    println!(
        "chimed    {rate:.0} jobs/s ({jobs} jobs in {span:.2} s from their due time to the last end)"
    );
    println!(
        "          {:.2} commits per job, daemon CPU {:.0} us per job",
        commits as f64 / jobs as f64,
        cpu / jobs as f64 * 1e6
    );
    println!(
        "ratio     chimed / raw: {:.2} (target: at least 0.80)",
        rate / raw_rate
    );
    println!(
        "{{\"bench\":\"spawn\",\"jobs\":{jobs},\"parallel\":{parallel},\"raw_per_s\":{raw_rate:.0},\"chimed_per_s\":{rate:.0},\"ratio\":{:.3},\"commits_per_job\":{:.2}}}",
        rate / raw_rate,
        commits as f64 / jobs as f64
    );
}
