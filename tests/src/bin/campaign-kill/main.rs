//! The SIGKILL campaign: chimed killed at random moments under mixed load, restarted on the
//! same state each time, and checked.
//!
//! Starts a real chimed (the release build under `cargo run --release`) in a temp dir, and
//! `--clients` protocol clients (default 4) that submit jobs (quick, due soon, long, some timing
//! out, recurring, failing with retries; in the default queue or in queues limited to 1, 2 and 3
//! runs), cancel, pause and resume their jobs, remove finished ones, and pause queues and
//! everything for a moment. Every job runs this binary ([`job_command`]), which appends a line
//! to an execution log when it starts and when it ends, with its job, run and attempt.
//!
//! Then, `--kills` times (default 300): after a random delay (`--min-delay`..`--max-delay` ms,
//! default 50..1500), SIGKILL chimed; kill the runs it left behind, as systemd does with the
//! rest of a service's cgroup when its main process dies (`KillMode=mixed`): this process is
//! their subreaper; restart chimed on the same state and wait for READY=1 (a refused start is a
//! violation); and check ([`check`]):
//!
//! - **acked lost**: every acknowledged job is there, unchanged, unless its removal was
//!   acknowledged (finished jobs are kept: retention is 7 days); acknowledged cancels, pauses,
//!   resumes, removals and queue limits hold;
//! - **executions without record**: every process a run started has that run's record
//!   (a run cut off by the kill is recorded `lost`);
//! - **invariants**: no occurrence runs again after a run of it succeeded, no run's process
//!   starts twice, retries and occurrences as the job's policy says, no run opens after an
//!   acknowledged cancel or while its job, queue or everything is paused (read from the event
//!   log), no queue runs more processes at once than its limit, final jobs never change, no job
//!   appears that no submission explains, no id is given twice, records agree with executions,
//!   `status` agrees with `ls`.
//!
//! At the end the load stops, everything is resumed, jobs are left `--drain-seconds` (default
//! 30) to finish and then cancelled, the last checks run, and chimed gets SIGTERM and must exit
//! cleanly. The report gives each count and the restart times (SIGKILL to READY=1); the exit
//! status is 1 on any violation. The seed (`--seed`, printed) repeats a campaign's choices;
//! timing on a busy machine still varies.
//!
//! Run: `cargo run --release -p chime-tests --bin campaign-kill -- [--kills 300] [--seed N]
//! [--clients 4] [--min-delay 50] [--max-delay 1500] [--drain-seconds 30] [--quick-repair]`

mod check;
mod job_command;
mod ledger;
mod load;
mod wire;

use check::{Checker, Round};
use chime_tests::Daemon;
use chime_tests::bench::percentile;
use ledger::{Ack, Invariant, Ledger, PauseOp};
use load::{ClientState, LoadEnv, QUEUES, Rng, lock};
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

#[derive(Debug)]
struct Options {
    kills: usize,
    seed: u64,
    clients: usize,
    min_delay_ms: u64,
    max_delay_ms: u64,
    drain_seconds: u64,
    quick_repair: bool,
}

fn options(args: &[String]) -> Options {
    let mut o = Options {
        kills: 300,
        seed: jiff::Timestamp::now().as_nanosecond() as u64,
        clients: 4,
        min_delay_ms: 50,
        max_delay_ms: 1500,
        drain_seconds: 30,
        quick_repair: false,
    };
    let mut i = 0;
    while i < args.len() {
        let value = args.get(i + 1).cloned().unwrap_or_default();
        let number = |name: &str| -> u64 {
            value
                .parse()
                .unwrap_or_else(|_| panic!("{name} takes a number, not {value:?}"))
        };
        match args[i].as_str() {
            "--kills" => o.kills = number("--kills") as usize,
            "--seed" => o.seed = number("--seed"),
            "--clients" => o.clients = number("--clients").max(1) as usize,
            "--min-delay" => o.min_delay_ms = number("--min-delay"),
            "--max-delay" => o.max_delay_ms = number("--max-delay"),
            "--drain-seconds" => o.drain_seconds = number("--drain-seconds"),
            "--quick-repair" => {
                o.quick_repair = true;
                i += 1;
                continue;
            }
            other => panic!(
                "unknown option {other}; use --kills, --seed, --clients, --min-delay, --max-delay, --drain-seconds, --quick-repair"
            ),
        }
        i += 2;
    }
    o.max_delay_ms = o.max_delay_ms.max(o.min_delay_ms);
    o
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().collect();
    if args.get(1).map(String::as_str) == Some(job_command::MODE) {
        return job_command::run(&args[2..]);
    }
    let o = options(&args[1..]);
    // Runs a killed chimed leaves behind become this process's children, to be killed.
    nix::sys::prctl::set_child_subreaper(true).expect("become a subreaper");
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .expect("a runtime for the clients");
    let campaign = Campaign::start(&o, &runtime);
    campaign.run(&o, &runtime)
}

/// The daemon under test and everything known about it.
struct Campaign {
    daemon: Daemon,
    env: Arc<LoadEnv>,
    ledger: Arc<Mutex<Ledger>>,
    checker: Checker,
    started: Instant,
    /// SIGKILL to READY=1, and spawn to READY=1, of each restart.
    restarts: Vec<Duration>,
    launches: Vec<Duration>,
    /// How long each round of checks took.
    checks: Vec<Duration>,
    orphans: usize,
    kills: usize,
}

impl Campaign {
    fn start(o: &Options, runtime: &tokio::runtime::Runtime) -> Self {
        let mut args = vec!["--event-retention", "1000000", "--kill-grace", "2s"];
        if o.quick_repair {
            args.push("--quick-repair");
        }
        let mut daemon = Daemon::prepare(&args);
        // Recurring jobs every 200 ms to 1 s.
        daemon.write_config(chime_tests::SHORT_INTERVALS);
        let cmd = quiet(daemon.command());
        daemon
            .launch_command(cmd)
            .unwrap_or_else(|err| panic!("chimed did not start: {err}"));
        let dir = daemon.dir.path();
        let log = dir.join("executions.log");
        let env = Arc::new(LoadEnv {
            socket: daemon.socket.clone(),
            exe: std::env::current_exe()
                .expect("this binary's path")
                .display()
                .to_string(),
            log: log.display().to_string(),
            cwd: dir.display().to_string(),
        });
        runtime
            .block_on(load::set_queue_limits(&daemon.socket))
            .unwrap_or_else(|err| panic!("setting the queue limits failed: {err}"));
        println!(
            "chime campaign-kill: seed {}, {} kills, {} clients, delay {}-{} ms{}, in {}",
            o.seed,
            o.kills,
            o.clients,
            o.min_delay_ms,
            o.max_delay_ms,
            if o.quick_repair { ", quick repair" } else { "" },
            dir.display()
        );
        Self {
            checker: Checker::new(log),
            daemon,
            env,
            ledger: Arc::new(Mutex::new(Ledger::default())),
            started: Instant::now(),
            restarts: Vec::new(),
            launches: Vec::new(),
            checks: Vec::new(),
            orphans: 0,
            kills: 0,
        }
    }

    fn run(mut self, o: &Options, runtime: &tokio::runtime::Runtime) -> ExitCode {
        let mut rng = Rng::new(o.seed);
        let mut clients: Vec<ClientState> = (0..o.clients)
            .map(|i| ClientState::new(i, rng.next_u64()))
            .collect();
        let mut aborted = false;
        for cycle in 1..=o.kills {
            lock(&self.ledger).violations.cycle = cycle;
            let stop = Arc::new(AtomicBool::new(false));
            let tasks: Vec<_> = clients
                .drain(..)
                .map(|state| {
                    runtime.spawn(load::client(
                        state,
                        self.env.clone(),
                        self.ledger.clone(),
                        stop.clone(),
                    ))
                })
                .collect();
            std::thread::sleep(Duration::from_millis(
                rng.range(o.min_delay_ms, o.max_delay_ms),
            ));
            let killed = Instant::now();
            self.daemon.kill();
            stop.store(true, Ordering::Relaxed);
            self.orphans += reap_orphans(self.daemon.pg.as_ref().and_then(|c| c.server_pid()));
            self.checker.kills_us.push(job_command::now_us());
            self.kills += 1;
            let launched = Instant::now();
            let restarted = self.daemon.launch_command(quiet(self.daemon.command()));
            if restarted.is_ok() {
                self.restarts.push(killed.elapsed());
                self.launches.push(launched.elapsed());
            }
            // Each client ends at its next request (its connection is broken) or pause (`stop`),
            // before it could reach the new chimed; the checks need them all ended.
            for task in tasks {
                clients.push(runtime.block_on(task).expect("a client panicked"));
            }
            clients.sort_by_key(|c| c.index);
            if let Err(err) = restarted {
                lock(&self.ledger).violations.add(
                    Invariant::DaemonStart,
                    format!("chimed did not restart: {err}"),
                );
                aborted = true;
                break;
            }
            let checking = Instant::now();
            let checked = runtime.block_on(self.checker.check(
                &self.env.socket,
                &self.ledger,
                Round::AfterRestart,
            ));
            self.checks.push(checking.elapsed());
            if let Err(err) = checked {
                lock(&self.ledger).violations.add(
                    Invariant::Liveness,
                    format!("the checks after a restart failed: {err}"),
                );
                aborted = true;
                break;
            }
            if cycle % 10 == 0 || cycle == o.kills {
                self.progress(cycle, o.kills);
            }
        }
        if !aborted {
            self.finish(o, runtime);
        }
        self.report(o, runtime)
    }

    fn progress(&self, cycle: usize, kills: usize) {
        let ledger = lock(&self.ledger);
        let mut restarts = self.restarts.clone();
        restarts.sort();
        println!(
            "kill {cycle}/{kills}: {} acked jobs, {} jobs stored, {} executions, restart p50 {:.0} ms, {} violations, {:.0} s",
            ledger.acked_submits,
            self.checker.jobs_last,
            self.checker.executions(),
            percentile(&restarts, 0.5),
            ledger.violations.total(),
            self.started.elapsed().as_secs_f64()
        );
    }

    /// Stops the load: resumes everything, lets jobs finish, cancels the rest, checks a last
    /// time, and stops chimed with SIGTERM.
    fn finish(&mut self, o: &Options, runtime: &tokio::runtime::Runtime) {
        lock(&self.ledger).violations.cycle = self.kills;
        let drained = runtime.block_on(drain(
            &self.env.socket,
            &self.ledger,
            Duration::from_secs(o.drain_seconds),
        ));
        if let Err(err) = drained {
            lock(&self.ledger).violations.add(
                Invariant::Liveness,
                format!("chimed stopped answering while the load drained: {err}"),
            );
            return;
        }
        let checked = runtime.block_on(self.checker.check(
            &self.env.socket,
            &self.ledger,
            Round::Final,
        ));
        if let Err(err) = checked {
            lock(&self.ledger).violations.add(
                Invariant::Liveness,
                format!("the final checks failed: {err}"),
            );
        }
        let took = self.daemon.stop_within(Duration::from_secs(30));
        println!("chimed stopped on SIGTERM in {} ms", took.as_millis());
    }

    fn report(self, o: &Options, runtime: &tokio::runtime::Runtime) -> ExitCode {
        let _ = runtime;
        let wall = self.started.elapsed().as_secs_f64();
        let ledger = lock(&self.ledger);
        let v = &ledger.violations;
        let mut restarts = self.restarts.clone();
        restarts.sort();
        let mut launches = self.launches.clone();
        launches.sort();
        let executions = self.checker.executions();
        let stats = &self.checker.stats;
        let acks: u64 = ledger.acks.values().sum();
        let in_doubt: u64 = ledger.in_doubt.values().sum();
        println!();
        println!("== campaign-kill report (seed {})", o.seed);
        println!("kills                          {}", self.kills);
        println!(
            "acked jobs checked             {} (and {acks} acknowledged changes: {})",
            ledger.acked_submits,
            list(&ledger.acks)
        );
        println!(
            "acked lost                     {}",
            v.count(Invariant::AckedLost)
        );
        println!("executions observed            {executions}");
        println!(
            "executions without record      {}",
            v.count(Invariant::WithoutRecord)
        );
        println!("invariant violations:");
        for invariant in Invariant::ALL
            .into_iter()
            .filter(|i| !matches!(i, Invariant::AckedLost | Invariant::WithoutRecord))
        {
            println!("  {:<44} {}", invariant.label(), v.count(invariant));
        }
        println!(
            "restart, SIGKILL to READY=1    p50 {:.0} ms, p99 {:.0} ms, max {:.0} ms (spawn to READY p50 {:.0} ms, p99 {:.0} ms)",
            percentile(&restarts, 0.5),
            percentile(&restarts, 0.99),
            percentile(&restarts, 1.0),
            percentile(&launches, 0.5),
            percentile(&launches, 0.99)
        );
        let mut checks = self.checks.clone();
        checks.sort();
        println!(
            "checks after each restart      p50 {:.0} ms, p99 {:.0} ms",
            percentile(&checks, 0.5),
            percentile(&checks, 0.99)
        );
        println!(
            "also                           {} jobs settled and checked in full, {} runs recorded lost, {} occurrences rerun after a run lost before its start was recorded ({} of those had run to their end: at-least-once), {} runs left behind by kills and reaped, {in_doubt} requests in doubt ({}), {} phantom jobs, {} events read, slowest reply {} ms",
            stats.settled,
            stats.lost_runs,
            stats.reruns_after_lost,
            stats.completed_then_rerun,
            self.orphans,
            list(&ledger.in_doubt),
            stats.phantoms,
            stats.events,
            ledger.slowest_reply_ms
        );
        if !ledger.refusals.is_empty() {
            println!("refusals (expected: cancels, pauses and removals of jobs that had ended):");
            for (what, (n, first)) in &ledger.refusals {
                println!("  {what}: {n} (first: {first})");
            }
        }
        println!("wall time                      {wall:.0} s");
        let counts: Vec<String> = Invariant::ALL
            .iter()
            .map(|i| format!("\"{}\":{}", i.key(), v.count(*i)))
            .collect();
        println!(
            "{{\"bench\":\"campaign-kill\",\"seed\":{},\"kills\":{},\"acked_jobs\":{},\"acked_changes\":{acks},\"executions\":{executions},{},\"violations\":{},\"restart_p50_ms\":{:.1},\"restart_p99_ms\":{:.1},\"restart_max_ms\":{:.1},\"lost_runs\":{},\"reruns_after_lost\":{},\"in_doubt\":{in_doubt},\"wall_s\":{wall:.0}}}",
            o.seed,
            self.kills,
            ledger.acked_submits,
            counts.join(","),
            v.total(),
            percentile(&restarts, 0.5),
            percentile(&restarts, 0.99),
            percentile(&restarts, 1.0),
            stats.lost_runs,
            stats.reruns_after_lost,
        );
        let violations = v.total();
        drop(ledger);
        if violations == 0 && self.kills == o.kills {
            return ExitCode::SUCCESS;
        }
        println!(
            "FAILED: {violations} violations; repeat with --seed {}; state kept in {}",
            o.seed,
            self.daemon.dir.path().display()
        );
        let mut daemon = self.daemon;
        daemon.kill();
        reap_orphans(None);
        // Keep the temp dir (database, execution log, chimed's log) for a look.
        std::mem::forget(daemon);
        ExitCode::FAILURE
    }
}

fn list(counts: &std::collections::BTreeMap<&'static str, u64>) -> String {
    counts
        .iter()
        .map(|(k, n)| format!("{k} {n}"))
        .collect::<Vec<_>>()
        .join(", ")
}

/// chimed logging warnings only: a campaign starts a hundred thousand runs.
fn quiet(mut cmd: std::process::Command) -> std::process::Command {
    cmd.env("CHIME_LOG", "warn");
    cmd
}

/// Resumes everything, waits up to `patience` for every job to finish, then cancels the rest
/// and waits for them. Acknowledgements go to the ledger.
async fn drain(
    socket: &std::path::Path,
    ledger: &Mutex<Ledger>,
    patience: Duration,
) -> Result<(), wire::CallError> {
    use chime_proto::{JobId, JobRef, PauseTarget, Request, Response};
    let mut conn = wire::Client::connect(socket).await?;
    conn.call(Request::Resume(PauseTarget::All)).await?.ok();
    for (queue, _) in QUEUES {
        let resumed = conn
            .call(Request::Resume(PauseTarget::Queue(queue.into())))
            .await?;
        if resumed.is_ok() {
            lock(ledger)
                .queue_pauses
                .insert(queue.into(), (PauseOp::Resume, Ack::Acked));
        }
    }
    for job in conn.list_all().await? {
        if job.pause.is_none() || job.state.is_final() {
            continue;
        }
        let resumed = conn
            .call(Request::Resume(PauseTarget::Job(JobRef::Id(job.id))))
            .await?;
        if resumed.is_ok() {
            let mut ledger = lock(ledger);
            ledger.acked("resume");
            ledger.jobs.entry(job.id.0).or_default().pause = Some((PauseOp::Resume, Ack::Acked));
        }
    }
    let deadline = Instant::now() + patience;
    let active = loop {
        let active: Vec<u64> = conn
            .list_all()
            .await?
            .iter()
            .filter(|j| !j.state.is_final())
            .map(|j| j.id.0)
            .collect();
        if active.is_empty() || Instant::now() > deadline {
            break active;
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    };
    for id in active {
        if let Ok(Response::Cancelled(_)) =
            conn.call(Request::Cancel(JobRef::Id(JobId(id)))).await?
        {
            let (head, runs) = load::cancelled_state(&mut conn, id).await?;
            let mut ledger = lock(ledger);
            ledger.acked("cancel");
            let tracked = ledger.jobs.entry(id).or_default();
            tracked.cancel = Ack::Acked;
            tracked.cancel_head = Some(head);
            tracked.cancel_runs = runs;
        }
    }
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let jobs = conn.list_all().await?;
        if jobs.iter().all(|j| j.state.is_final()) || Instant::now() > deadline {
            return Ok(());
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Kills and reaps this process's children: with chimed dead (and reaped), those are the runs
/// it left behind, reparented to this subreaper. Each run is a process group of its own.
///
/// `keep`: the PostgreSQL server holding the store (`CHIME_TEST_STORE=postgres`), which
/// `pg_ctl` detached and this process, a subreaper, inherited: not an orphan of a job.
fn reap_orphans(keep: Option<u32>) -> usize {
    use nix::sys::signal::{Signal, kill, killpg};
    use nix::unistd::Pid;
    let mut reaped = 0;
    loop {
        let mut children = children();
        children.retain(|pid| Some(*pid as u32) != keep);
        if children.is_empty() {
            return reaped;
        }
        for pid in &children {
            let _ = killpg(Pid::from_raw(*pid), Signal::SIGKILL);
            let _ = kill(Pid::from_raw(*pid), Signal::SIGKILL);
        }
        for pid in &children {
            let _ = nix::sys::wait::waitpid(Pid::from_raw(*pid), None);
            reaped += 1;
        }
    }
}

/// This process's children, from /proc.
fn children() -> Vec<i32> {
    let me = std::process::id().to_string();
    let mut children = Vec::new();
    for entry in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|n| n.parse::<i32>().ok())
        else {
            continue;
        };
        let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
            continue;
        };
        // After the command name (in parentheses, may hold spaces): state, then ppid.
        let ppid = stat
            .rsplit_once(')')
            .and_then(|(_, rest)| rest.split_whitespace().nth(1).map(str::to_owned));
        if ppid.as_deref() == Some(me.as_str()) {
            children.push(pid);
        }
    }
    children
}
