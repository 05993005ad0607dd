//! Benchmark: how close chimed comes to the machine's raw spawn rate.
//!
//! In one run, alternating so that both see the machine in the same state (these machines are
//! noisy, and their speed drifts over seconds):
//! 1. **raw**: spawn `/bin/true` `--jobs` times (default 10,000), `--parallel` at a time
//!    (default 2), from a tokio program, waiting for each: the machine's ceiling.
//! 2. **chimed**: a fresh daemon; submit the same number of one-shot `/bin/true` jobs, all due at
//!    the same moment a few seconds ahead, on a queue with `--parallel` slots, and time from that
//!    moment until the last one has finished (taken from the daemon's own run records).
//!
//! The order is raw, chimed with cgroups, raw, chimed with `--no-cgroups`, raw, ... (`--rounds`
//! pairs of chimed phases, default 3); each chimed phase is compared with the mean of the raw
//! phases on either side of it. Reports every phase, each phase's ratio and their medians per
//! setting (the targets: at least 0.75 with a cgroup per run, 0.8 without), the daemon's commits
//! per job and its CPU. Every job's state is checked: all must have succeeded.
//!
//! Run: `cargo run --release -p chime-tests --bin bench-spawn -- [--jobs 10000] [--parallel 2] [--rounds 3]`

use chime_proto::*;
use chime_tests::Daemon;
use chime_tests::bench::{self, connect, cpu_time, feed, flush, reply};
use std::time::{Duration, Instant};

/// A raw phase.
struct Raw {
    rate: f64,
    /// The whole machine's busy CPU per spawn, in us.
    machine_us: f64,
    /// The spawned processes' own CPU per spawn, in us.
    children_us: f64,
}

async fn raw(jobs: u64, parallel: u64) -> Raw {
    let me = std::process::id();
    let started = Instant::now();
    let busy = bench::machine_busy();
    let children = bench::children_cpu_time(me);
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
    let per_job = |d: Duration| d.as_secs_f64() / jobs as f64 * 1e6;
    Raw {
        rate: jobs as f64 / started.elapsed().as_secs_f64(),
        machine_us: per_job(bench::machine_busy() - busy),
        children_us: per_job(bench::children_cpu_time(me) - children),
    }
}

/// One chimed phase.
struct Phase {
    rate: f64,
    span: f64,
    commits_per_job: f64,
    cpu_us_per_job: f64,
    /// The whole machine's busy CPU per job while the jobs ran.
    machine_us_per_job: f64,
    /// The jobs' own CPU per job.
    children_us_per_job: f64,
}

fn chimed(runtime: &tokio::runtime::Runtime, jobs: u64, parallel: u64, cgroups: bool) -> Phase {
    let d = if cgroups {
        let d = Daemon::start_with(&["--max-running", "1000"]);
        let status = runtime.block_on(bench::status(&d.socket));
        assert_ne!(
            status.containment.mode, "off",
            "cgroups on was asked for, but chimed has none here: {}",
            status.containment.description
        );
        d
    } else {
        Daemon::start_with(&["--max-running", "1000", "--no-cgroups"])
    };
    d.ctl_ok(&["queue", "set", "bench", "--parallel", &parallel.to_string()]);
    let socket = d.socket.clone();
    let cwd = d.dir.path().display().to_string();
    let due = jiff::Timestamp::now().as_millisecond() + 3000 + (jobs as i64 / 20);
    let spec = JobSpec {
        queue: Some("bench".into()),
        ..JobSpec::new(
            Command::Argv(vec!["/bin/true".into()]),
            cwd,
            ScheduleSpec::At(due),
        )
    };
    runtime.block_on(async {
        let mut conn = connect(&socket).await;
        let mut open = 0u64;
        let mut sent = 0u64;
        while sent < jobs || open > 0 {
            while open < 256 && sent < jobs {
                feed(
                    &mut conn,
                    sent + 1,
                    Request::Submit(Box::new(spec.clone().into())),
                )
                .await;
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
    let busy_before = bench::machine_busy();
    let children_before = bench::children_cpu_time(pid);
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
    let busy = (bench::machine_busy() - busy_before).as_secs_f64();
    let children = (bench::children_cpu_time(pid) - children_before).as_secs_f64();
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
                Request::List(ListQuery {
                    state: None,
                    queue: Some("bench".into()),
                    name_prefix: None,
                    after,
                    limit: 10_000,
                }),
            )
            .await
            {
                Response::Jobs(page) => page,
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
    let commits = finished.commits - before.commits;
    Phase {
        rate,
        span,
        commits_per_job: commits as f64 / jobs as f64,
        cpu_us_per_job: cpu / jobs as f64 * 1e6,
        machine_us_per_job: busy / jobs as f64 * 1e6,
        children_us_per_job: children / jobs as f64 * 1e6,
    }
}

fn median(values: &mut [f64]) -> f64 {
    values.sort_by(f64::total_cmp);
    let n = values.len();
    if n % 2 == 1 {
        values[n / 2]
    } else {
        (values[n / 2 - 1] + values[n / 2]) / 2.0
    }
}

fn main() {
    let jobs = bench::arg("--jobs", 10_000);
    let parallel = bench::arg("--parallel", 2);
    let rounds = bench::arg("--rounds", 3).max(1);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    println!(
        "chime bench-spawn: {jobs} /bin/true, {parallel} at a time, {rounds} rounds of (cgroups on, cgroups off)"
    );
    let first = runtime.block_on(raw(jobs, parallel));
    println!(
        "raw       {:.0} spawns/s (tokio::process, waiting for each); CPU per spawn: machine {:.0} us, the process {:.0} us",
        first.rate, first.machine_us, first.children_us
    );
    let mut raw_before = first.rate;
    // Per setting (cgroups on, off): each phase's ratio to the raw rates around it, and the phase.
    let mut ratios: [Vec<f64>; 2] = [Vec::new(), Vec::new()];
    let mut phases: [Vec<Phase>; 2] = [Vec::new(), Vec::new()];
    for round in 1..=rounds {
        for (i, cgroups) in [true, false].into_iter().enumerate() {
            let label = if cgroups { "on " } else { "off" };
            let phase = chimed(&runtime, jobs, parallel, cgroups);
            println!(
                "chimed {label} {:.0} jobs/s ({jobs} jobs in {:.2} s from their due time to the last end); {:.2} commits per job; CPU per job: chimed {:.0} us, machine {:.0} us, the job's process {:.0} us",
                phase.rate,
                phase.span,
                phase.commits_per_job,
                phase.cpu_us_per_job,
                phase.machine_us_per_job,
                phase.children_us_per_job
            );
            let after = runtime.block_on(raw(jobs, parallel));
            println!(
                "raw        {:.0} spawns/s; CPU per spawn: machine {:.0} us, the process {:.0} us",
                after.rate, after.machine_us, after.children_us
            );
            let ratio = phase.rate / ((raw_before + after.rate) / 2.0);
            println!(
                "round {round}    chimed (cgroups {label}) / mean of the raw rates around it: {ratio:.2}"
            );
            ratios[i].push(ratio);
            phases[i].push(phase);
            raw_before = after.rate;
        }
    }
    // Flat keys (tests/bench/summarize.py reads them): the default (cgroups on) unsuffixed, as
    // before; `_off` for `--no-cgroups`.
    let mut summary = Vec::new();
    for (i, suffix) in ["", "_off"].into_iter().enumerate() {
        let mut sorted = ratios[i].clone();
        let median_ratio = median(&mut sorted);
        println!(
            "ratio     cgroups {}: median {median_ratio:.2} (min {:.2}, max {:.2}; target: at least {})",
            if i == 0 { "on " } else { "off" },
            sorted[0],
            sorted[sorted.len() - 1],
            if i == 0 { "0.75" } else { "0.80" }
        );
        let mean =
            |f: fn(&Phase) -> f64| phases[i].iter().map(f).sum::<f64>() / phases[i].len() as f64;
        summary.push(format!(
            "\"ratios{suffix}\":{:?},\"median_ratio{suffix}\":{median_ratio:.3},\"chimed_per_s{suffix}\":{:.0},\"commits_per_job{suffix}\":{:.3},\"cpu_us_per_job{suffix}\":{:.0}",
            ratios[i],
            mean(|p| p.rate),
            mean(|p| p.commits_per_job),
            mean(|p| p.cpu_us_per_job),
        ));
    }
    println!(
        "{{\"bench\":\"spawn\",\"jobs\":{jobs},\"parallel\":{parallel},\"rounds\":{rounds},{}}}",
        summary.join(",")
    );
}
