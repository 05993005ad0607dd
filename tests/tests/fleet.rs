//! Fleet mode (issue 15): several chimed, each with its own state directory, socket and host id,
//! sharing one job set in one private PostgreSQL cluster (`chime_tests::pg`). What users rely
//! on: an occurrence runs once however many hosts could take it; a host that dies has its runs
//! recorded as lost after its lease and retried elsewhere; a host stopped past its lease writes
//! nothing more and ends its runs; nothing acknowledged is lost when the database server
//! crashes.
//!
//! Each run appends a line with its job, its run and the pid of the chimed that started it
//! (`$PPID`: chimed spawns runs itself), so the shared file says what ran, how often and where.

use chime_proto::{
    Command as JobCommand, EventKind, JobSpec, Request, Response, ScheduleSpec, ServerMessage,
    WatchItem,
};
use chime_tests::bench;
use chime_tests::pg::Cluster;
use chime_tests::{Daemon, alive, signal, wait_until};
use futures::StreamExt;
use serde_json::Value;
use std::collections::BTreeMap;
use std::path::Path;
use std::time::{Duration, Instant};

/// `n` daemons on `pg`'s database, hosts `h1`..`hn`, with leases of `lease`.
fn hosts(pg: &Cluster, n: usize, lease: &str) -> Vec<Daemon> {
    (1..=n)
        .map(|i| {
            let host = format!("h{i}");
            Daemon::start_with(&[
                "--store",
                &pg.url(),
                "--host-id",
                &host,
                "--fleet-lease",
                lease,
            ])
        })
        .collect()
}

/// A command that appends `JOB RUN CHIMED-PID SHELL-PID` to `file`, then sleeps `sleep`.
fn recorder(file: &Path, sleep: &str) -> Vec<String> {
    vec![
        "/bin/sh".into(),
        "-c".into(),
        format!(
            "echo \"$CHIME_JOB_ID $CHIME_RUN_ID $PPID $$\" >> {} && exec sleep {sleep}",
            file.display()
        ),
    ]
}

/// The lines of `file`: (job, run, chimed's pid, the run's pid).
fn lines(file: &Path) -> Vec<(u64, u64, u32, u32)> {
    let text = std::fs::read_to_string(file).unwrap_or_default();
    text.lines()
        .map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            assert_eq!(f.len(), 4, "a torn line: {l:?}");
            (
                f[0].parse().unwrap(),
                f[1].parse().unwrap(),
                f[2].parse().unwrap(),
                f[3].parse().unwrap(),
            )
        })
        .collect()
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
}

#[test]
fn ten_thousand_occurrences_due_at_once_on_three_hosts_each_run_exactly_once() {
    let test = "ten_thousand_occurrences_due_at_once_on_three_hosts_each_run_exactly_once";
    let Some(pg) = Cluster::start(test) else {
        return;
    };
    let hosts = hosts(&pg, 3, "5s");
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("ran");
    const JOBS: u64 = 10_000;
    // Due together, late enough that all are stored first; submitted to the three hosts alike.
    let due = chime_daemon::job::now_ms() + 20_000;
    let spec = JobSpec::new(
        JobCommand::Argv(recorder(&file, "0")),
        "/",
        ScheduleSpec::At(due),
    );
    let started = Instant::now();
    runtime().block_on(async {
        let mut conns = Vec::new();
        for host in &hosts {
            conns.push(bench::connect(&host.socket).await);
        }
        let mut sends = Vec::new();
        for (i, mut conn) in conns.into_iter().enumerate() {
            let share = JOBS / 3 + u64::from((i as u64) < JOBS % 3);
            let requests: Vec<Request> = (0..share)
                .map(|_| Request::Submit(Box::new(spec.clone().into())))
                .collect();
            sends.push(async move { bench::send_windowed(&mut conn, &requests).await });
        }
        futures::future::join_all(sends).await;
    });
    assert!(
        chime_daemon::job::now_ms() < due,
        "storing {JOBS} jobs took {:?}, past their due time: the test cannot say they were due at once",
        started.elapsed()
    );
    let ran = wait_until(
        Duration::from_secs(300),
        &format!("{JOBS} runs to have appended their line"),
        || {
            let ran = lines(&file);
            (ran.len() as u64 >= JOBS).then_some(ran)
        },
    );
    // Whatever else is still to come would be a second run: give it a moment to show.
    std::thread::sleep(Duration::from_secs(2));
    let ran = {
        let again = lines(&file);
        assert_eq!(again.len(), ran.len(), "runs went on after all had run");
        again
    };
    let mut per_job: BTreeMap<u64, usize> = BTreeMap::new();
    let mut per_host: BTreeMap<u32, usize> = BTreeMap::new();
    for (job, _, chimed, _) in &ran {
        *per_job.entry(*job).or_default() += 1;
        *per_host.entry(*chimed).or_default() += 1;
    }
    let twice: Vec<_> = per_job.iter().filter(|(_, n)| **n > 1).collect();
    assert!(
        twice.is_empty(),
        "occurrences run more than once: {twice:?}"
    );
    assert_eq!(ran.len() as u64, JOBS, "lines");
    assert_eq!(per_job.len() as u64, JOBS, "distinct jobs");
    let pids: Vec<u32> = hosts.iter().map(Daemon::pid).collect();
    assert!(
        per_host.keys().all(|p| pids.contains(p)),
        "runs started by someone else than the three chimed {pids:?}: {per_host:?}"
    );
    eprintln!("runs per host (chimed pid: runs): {per_host:?}");
    // Every host sees the same job set, each job succeeded.
    for host in &hosts {
        let status = host.ctl_json(&["status"]);
        assert_eq!(status["counts"]["succeeded"], JOBS, "{status:#}");
    }
}

/// A job's runs, as `show --json` lists them.
fn runs(d: &Daemon, job: u64) -> Vec<Value> {
    d.show(job)["runs"].as_array().cloned().unwrap_or_default()
}

#[test]
fn a_killed_hosts_run_is_lost_after_its_lease_and_retried_on_another_host() {
    let test = "a_killed_hosts_run_is_lost_after_its_lease_and_retried_on_another_host";
    let Some(pg) = Cluster::start(test) else {
        return;
    };
    let mut hosts = hosts(&pg, 2, "3s");
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("ran");
    let command = recorder(&file, "600");
    let mut args = vec!["--retries", "1", "--"];
    args.extend(command.iter().map(String::as_str));
    let job = hosts[0].add(&args);
    let first = wait_until(Duration::from_secs(30), "the first run's line", || {
        lines(&file).first().copied()
    });
    // The host that started it dies with its machine: chimed and the run's process.
    let (doomed, survivor) = if first.2 == hosts[0].pid() {
        (0, 1)
    } else {
        (1, 0)
    };
    hosts[doomed].kill();
    signal(first.3, libc::SIGKILL);
    let killed = chime_daemon::job::now_ms();
    let retry = wait_until(
        Duration::from_secs(60),
        "the run to be retried on the surviving host",
        || lines(&file).get(1).copied(),
    );
    assert_eq!(retry.0, job);
    assert_eq!(
        retry.2,
        hosts[survivor].pid(),
        "the retry runs on the host alive"
    );
    let runs = runs(&hosts[survivor], job);
    assert_eq!(runs.len(), 2, "{runs:#?}");
    assert_eq!(runs[0]["outcome"], "lost", "{runs:#?}");
    // Not before the dead host's lease could have ended: never two copies at once.
    let retried_ms = chime_tests::ms(&runs[1]["started_at"]);
    assert!(
        retried_ms >= killed,
        "the retry started before the host died: {runs:#?}"
    );
    assert!(alive(retry.3));
    // status shows the fleet: the dead host's lease ended and it runs nothing; the survivor
    // runs the retry.
    let status = hosts[survivor].ctl_json(&["status"]);
    let fleet = &status["fleet"];
    let this = format!("h{}", survivor + 1);
    assert_eq!(fleet["this_host"], this.as_str(), "{status:#}");
    let host = |name: String| {
        fleet["hosts"]
            .as_array()
            .unwrap()
            .iter()
            .find(|h| h["host"] == name.as_str())
            .cloned()
            .unwrap_or_else(|| panic!("{name} in {status:#}"))
    };
    let (dead, alive_host) = (host(format!("h{}", doomed + 1)), host(this));
    assert!(dead["lease_left_ms"].as_i64().unwrap() < 0, "{status:#}");
    assert_eq!(dead["running"], 0, "{status:#}");
    assert!(
        alive_host["lease_left_ms"].as_i64().unwrap() > 0,
        "{status:#}"
    );
    assert_eq!(alive_host["running"], 1, "{status:#}");
    let text = hosts[survivor].ctl_ok(&["status"]);
    assert!(text.contains("GONE: lease ended"), "{text}");
    // The lost run's output stayed on the dead host: asking for it here says where, and that
    // the host is offline; the retry's is here.
    let lost_run = runs[0]["run_id"].as_u64().unwrap().to_string();
    let out = hosts[survivor].ctl(&["logs", &job.to_string(), "--run", &lost_run]);
    let said = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{said}");
    assert!(
        said.contains(&format!("ran on host h{}", doomed + 1)) && said.contains("offline"),
        "{said}"
    );
    hosts[survivor].ctl_ok(&["logs", &job.to_string()]);
    hosts[survivor].ctl_ok(&["cancel", &job.to_string()]);
}

#[test]
fn a_host_stopped_past_its_lease_is_fenced_ends_its_runs_and_exits() {
    let test = "a_host_stopped_past_its_lease_is_fenced_ends_its_runs_and_exits";
    let Some(pg) = Cluster::start(test) else {
        return;
    };
    let mut hosts = hosts(&pg, 2, "3s");
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("ran");
    let command = recorder(&file, "600");
    let mut args = vec!["--retries", "1", "--"];
    args.extend(command.iter().map(String::as_str));
    let job = hosts[0].add(&args);
    let first = wait_until(Duration::from_secs(30), "the first run's line", || {
        lines(&file).first().copied()
    });
    let (stopped, other) = if first.2 == hosts[0].pid() {
        (0, 1)
    } else {
        (1, 0)
    };
    let stopped_pid = hosts[stopped].pid();
    signal(stopped_pid, libc::SIGSTOP);
    // The other host declares it gone after its lease and retries the run.
    let retry = wait_until(
        Duration::from_secs(60),
        "the run to be retried on the other host",
        || lines(&file).get(1).copied(),
    );
    assert_eq!(retry.2, hosts[other].pid());
    signal(stopped_pid, libc::SIGCONT);
    // Its next write is refused: it ends its run and exits, with a failure.
    let status = wait_until(Duration::from_secs(60), "the fenced host to exit", || {
        hosts[stopped].exited()
    });
    assert!(!status.success(), "{status}");
    wait_until(
        Duration::from_secs(30),
        "the fenced host's run to end",
        || (!alive(first.3)).then_some(()),
    );
    assert!(
        hosts[stopped]
            .log()
            .contains("this host was declared gone by the fleet"),
        "{}",
        hosts[stopped].log()
    );
    let runs = runs(&hosts[other], job);
    assert_eq!(runs[0]["outcome"], "lost", "{runs:#?}");
    assert_eq!(
        runs.len(),
        2,
        "nothing written by the fenced host: {runs:#?}"
    );
    assert!(alive(retry.3), "the retry goes on");
    hosts[other].ctl_ok(&["cancel", &job.to_string()]);
}

#[test]
fn a_watch_on_one_host_sees_every_hosts_events_in_commit_order_without_gaps() {
    let test = "a_watch_on_one_host_sees_every_hosts_events_in_commit_order_without_gaps";
    let Some(pg) = Cluster::start(test) else {
        return;
    };
    let hosts = hosts(&pg, 3, "5s");
    let spec = JobSpec::new(
        JobCommand::Argv(vec!["/bin/true".into()]),
        "/",
        ScheduleSpec::After(3_600_000),
    );
    const JOBS: u64 = 600;
    runtime().block_on(async {
        // A watcher on the third host, which is submitted nothing.
        let (mut watch, start) = bench::watch(&hosts[2].socket).await;
        // The first two hosts take submissions at once, so that their commits interleave.
        let mut sends = Vec::new();
        for host in &hosts[..2] {
            let mut conn = bench::connect(&host.socket).await;
            let requests: Vec<Request> = (0..JOBS / 2)
                .map(|_| Request::Submit(Box::new(spec.clone().into())))
                .collect();
            sends.push(async move { bench::send_windowed(&mut conn, &requests).await });
        }
        futures::future::join_all(sends).await;
        let mut next = start.from;
        let mut jobs = std::collections::BTreeSet::new();
        while jobs.len() < JOBS as usize {
            let frame = tokio::time::timeout(Duration::from_secs(30), watch.next())
                .await
                .unwrap_or_else(|_| {
                    panic!("the watcher got {} of {JOBS} additions in 30 s", jobs.len())
                })
                .expect("open")
                .unwrap();
            match chime_proto::codec::decode::<ServerMessage>(&frame).unwrap() {
                ServerMessage::Watch(w) => match w.item {
                    WatchItem::Events(events) => {
                        for event in events {
                            assert_eq!(event.seq, next, "no gap, no duplicate, in order");
                            next += 1;
                            if let EventKind::Added { .. } = event.kind {
                                jobs.insert(event.job.expect("an addition names its job"));
                            }
                        }
                    }
                    other => panic!("unexpected {other:?}"),
                },
                other => panic!("unexpected {other:?}"),
            }
        }
    });
}

#[test]
fn every_acknowledged_job_survives_a_crash_of_the_database_server_during_a_submit_storm() {
    let test =
        "every_acknowledged_job_survives_a_crash_of_the_database_server_during_a_submit_storm";
    let Some(mut pg) = Cluster::start(test) else {
        return;
    };
    let hosts = hosts(&pg, 2, "10s");
    let storm = Storm::start(&hosts);
    storm.wait_for(200);
    pg.crash();
    let at_crash = storm.acked().len();
    std::thread::sleep(Duration::from_millis(500));
    pg.restart();
    storm.wait_for(at_crash + 200);
    let (acked, refused) = storm.stop();
    eprintln!(
        "{} acknowledged ({at_crash} before the crash), {refused} refused while the server was down",
        acked.len()
    );
    all_stored(&hosts[1], &acked);
}

/// Clients submitting jobs one at a time, four per host, keeping what was acknowledged and
/// counting what was refused.
struct Storm {
    acked: std::sync::Arc<std::sync::Mutex<Vec<u64>>>,
    refused: std::sync::Arc<std::sync::atomic::AtomicU64>,
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    clients: Vec<std::thread::JoinHandle<()>>,
}

impl Storm {
    fn start(hosts: &[Daemon]) -> Self {
        let spec = JobSpec::new(
            JobCommand::Argv(vec!["/bin/true".into()]),
            "/",
            ScheduleSpec::After(3_600_000),
        );
        let acked = std::sync::Arc::new(std::sync::Mutex::new(Vec::<u64>::new()));
        let refused = std::sync::Arc::new(std::sync::atomic::AtomicU64::new(0));
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let clients = hosts
            .iter()
            .flat_map(|h| std::iter::repeat_n(h.socket.clone(), 4))
            .map(|socket| {
                let (acked, refused, stop, spec) =
                    (acked.clone(), refused.clone(), stop.clone(), spec.clone());
                std::thread::spawn(move || {
                    runtime().block_on(async {
                        let mut conn = bench::connect(&socket).await;
                        let mut id = 0;
                        while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                            id += 1;
                            let submit = Request::Submit(Box::new(spec.clone().into()));
                            bench::feed(&mut conn, id, submit).await;
                            bench::flush(&mut conn).await;
                            match bench::reply(&mut conn).await.1 {
                                Ok(Response::Added(added)) => {
                                    acked.lock().unwrap().push(added.id.0)
                                }
                                Ok(other) => panic!("unexpected {other:?}"),
                                Err(_) => {
                                    refused.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                                }
                            }
                        }
                    })
                })
            })
            .collect();
        Self {
            acked,
            refused,
            stop,
            clients,
        }
    }

    fn acked(&self) -> Vec<u64> {
        self.acked.lock().unwrap().clone()
    }

    /// Waits until `n` submissions in all were acknowledged.
    fn wait_for(&self, n: usize) {
        wait_until(
            Duration::from_secs(120),
            &format!("{n} acknowledged submissions"),
            || (self.acked.lock().unwrap().len() >= n).then_some(()),
        );
    }

    /// Stops the clients; what was acknowledged, and how many were refused.
    fn stop(mut self) -> (Vec<u64>, u64) {
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
        for client in std::mem::take(&mut self.clients) {
            client.join().expect("a client panicked");
        }
        let refused = self.refused.load(std::sync::atomic::Ordering::Relaxed);
        (self.acked(), refused)
    }
}

/// Every id in `acked` is stored, as `d` lists them, and none was acknowledged twice.
fn all_stored(d: &Daemon, acked: &[u64]) {
    let listed = d.ctl_json(&["ls", "--all"]);
    let stored: std::collections::BTreeSet<u64> = listed["jobs"]
        .as_array()
        .expect("ls --json lists jobs")
        .iter()
        .map(|j| j["id"].as_u64().unwrap())
        .collect();
    let lost: Vec<u64> = acked
        .iter()
        .filter(|id| !stored.contains(id))
        .copied()
        .collect();
    assert!(lost.is_empty(), "acknowledged and lost: {lost:?}");
    let unique: std::collections::BTreeSet<u64> = acked.iter().copied().collect();
    assert_eq!(unique.len(), acked.len(), "an id acknowledged twice");
}

#[test]
fn every_acknowledged_job_is_on_a_synchronous_standby_promoted_after_the_primary_dies() {
    let test = "every_acknowledged_job_is_on_a_synchronous_standby_promoted_after_the_primary_dies";
    let Some(mut primary) = Cluster::start(test) else {
        return;
    };
    let mut standby = primary.standby();
    // Both servers in one connection string: chimed writes to whichever accepts writes.
    let store = format!(
        "host={},{} user=chime dbname=postgres target_session_attrs=read-write",
        primary.socket_dir().display(),
        standby.socket_dir().display()
    );
    let host = Daemon::start_with(&["--store", &store, "--host-id", "h1"]);
    let storm = Storm::start(std::slice::from_ref(&host));
    storm.wait_for(200);
    primary.crash();
    let at_crash = storm.acked().len();
    standby.promote();
    storm.wait_for(at_crash + 200);
    let (acked, refused) = storm.stop();
    eprintln!(
        "{} acknowledged ({at_crash} before the primary died), {refused} refused meanwhile",
        acked.len()
    );
    all_stored(&host, &acked);
}

#[test]
fn a_run_on_one_host_is_cancelled_and_signalled_from_another() {
    let test = "a_run_on_one_host_is_cancelled_and_signalled_from_another";
    let Some(pg) = Cluster::start(test) else {
        return;
    };
    let hosts = hosts(&pg, 2, "5s");
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("ran");
    // A run that says when it gets SIGUSR1, then sleeps on.
    let script = format!(
        "echo \"$CHIME_JOB_ID $CHIME_RUN_ID $PPID $$\" >> {f}; trap 'echo usr1 >> {f}.sig' USR1; \
         while :; do sleep 0.1; done",
        f = file.display()
    );
    let job = hosts[0].add(&["--", "/bin/sh", "-c", &script]);
    let run = wait_until(Duration::from_secs(30), "the run's line", || {
        lines(&file).first().copied()
    });
    // From the host that does not run it.
    let other = if run.2 == hosts[0].pid() { 1 } else { 0 };
    hosts[other].ctl_ok(&["kill", "--signal", "USR1", &job.to_string()]);
    let signalled = file.with_extension("sig");
    wait_until(
        Duration::from_secs(30),
        "the signal to reach the run on the other host",
        || {
            std::fs::read_to_string(&signalled)
                .ok()
                .filter(|t| t.contains("usr1"))
        },
    );
    hosts[other].ctl_ok(&["cancel", &job.to_string()]);
    let show = hosts[other].wait_state(job, "cancelled", Duration::from_secs(60));
    assert!(!alive(run.3), "the run's process ended: {show:#}");
}

#[test]
fn a_queue_limit_holds_across_the_fleet() {
    let test = "a_queue_limit_holds_across_the_fleet";
    let Some(pg) = Cluster::start(test) else {
        return;
    };
    let hosts = hosts(&pg, 3, "5s");
    hosts[0].ctl_ok(&["queue", "set", "one", "--parallel", "2"]);
    // Which host starts a run is the fleet's choice: a round whose runs all ran on one host
    // would not test the shared count, so rounds go on (at most five) until one spread them.
    // Every round must hold the limit.
    let mut spread = None;
    for round in 0..5 {
        let dir = tempfile::tempdir().unwrap();
        let ran_on = queue_round(&hosts, dir.path(), round);
        if ran_on.len() > 1 {
            spread = Some(ran_on);
            break;
        }
    }
    assert!(
        spread.is_some(),
        "in five rounds the runs never ran on more than one host"
    );
}

/// One round of [`a_queue_limit_holds_across_the_fleet`]: 12 jobs of queue `one`, due 300 ms
/// apart and running 1 s, submitted to the hosts in turn; asserts that no more than 2 ran at
/// once, and returns the chimed pids that started them.
fn queue_round(hosts: &[Daemon], dir: &Path, round: usize) -> std::collections::BTreeSet<String> {
    let active = dir.join("active");
    std::fs::create_dir(&active).unwrap();
    let log = dir.join("concurrency.log");
    // Each run registers itself, records how many are registered, stays a while, and leaves.
    let script = format!(
        "touch {a}/$CHIME_JOB_ID; ls {a} | wc -l >> {log}; echo $PPID >> {log}.hosts; \
         sleep 1; rm {a}/$CHIME_JOB_ID",
        a = active.display(),
        log = log.display()
    );
    // Due one after another, so that whichever host runs a batch first after each due time
    // starts it; each host alone would admit 2.
    const JOBS: usize = 12;
    let first = chime_daemon::job::now_ms() + 2_000;
    let mut ids = Vec::new();
    for i in 0..JOBS {
        let due = jiff::Timestamp::from_millisecond(first + 300 * i as i64)
            .unwrap()
            .to_string();
        let host = &hosts[(i + round) % hosts.len()];
        ids.push(host.add(&["--queue", "one", "--at", &due, "--shell", "--", &script]));
    }
    for id in ids {
        hosts[0].wait_state(id, "succeeded", Duration::from_secs(120));
    }
    let observed: Vec<u32> = std::fs::read_to_string(&log)
        .unwrap()
        .lines()
        .map(|l| l.trim().parse().unwrap())
        .collect();
    assert_eq!(observed.len(), JOBS, "{observed:?}");
    assert!(
        observed.iter().all(|n| *n <= 2),
        "more than 2 at once in a queue limited to 2: {observed:?}"
    );
    std::fs::read_to_string(log.with_extension("log.hosts"))
        .unwrap()
        .lines()
        .map(str::to_owned)
        .collect()
}
