//! The event log, `chimectl watch`, timers and metrics, against the real daemon.

use chime_proto::{
    Command as JobCommand, EventKind, JobSpec, Request, ScheduleSpec, ServerMessage, WatchItem,
};
use chime_tests::bench::{self, Conn};
use chime_tests::{Daemon, SHORT_INTERVALS, wait_until};
use futures::StreamExt;
use serde_json::Value;
use std::io::{BufRead, BufReader};
use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

const T: Duration = Duration::from_secs(30);

/// `chimectl watch --json` in the background, after it is connected.
struct Watcher {
    child: Child,
    lines: std::sync::mpsc::Receiver<Value>,
}

impl Watcher {
    fn start(d: &Daemon, args: &[&str]) -> Self {
        let before = watchers(d);
        let mut all = vec!["--json", "watch"];
        all.extend_from_slice(args);
        let mut child = d
            .ctl_command(&all)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start chimectl watch");
        let stdout = child.stdout.take().unwrap();
        let (tx, lines) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                let value: Value = serde_json::from_str(&line)
                    .unwrap_or_else(|e| panic!("watch printed a bad line ({e}): {line}"));
                if tx.send(value).is_err() {
                    break;
                }
            }
        });
        wait_until(T, "the watcher to be connected", || {
            (watchers(d) > before).then_some(())
        });
        Self { child, lines }
    }

    fn next(&self) -> Value {
        self.lines
            .recv_timeout(T)
            .expect("an event within the time limit")
    }

    /// Events until one matches `stop` (included).
    fn until(&self, stop: impl Fn(&Value) -> bool) -> Vec<Value> {
        let mut out = Vec::new();
        loop {
            let event = self.next();
            let done = stop(&event);
            out.push(event);
            if done {
                return out;
            }
        }
    }
}

impl Drop for Watcher {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn watchers(d: &Daemon) -> u64 {
    d.ctl_json(&["status"])["watchers"].as_u64().unwrap()
}

fn head(d: &Daemon) -> u64 {
    d.ctl_json(&["status"])["events_head"].as_u64().unwrap()
}

/// `watch --since SINCE --count N --json`, collected.
fn watch_since(d: &Daemon, since: u64, count: u64, job: Option<&str>) -> Vec<Value> {
    let since = since.to_string();
    let count = count.to_string();
    let mut args = vec!["watch", "--since", &since, "--count", &count];
    if let Some(job) = job {
        args.extend(["--job", job]);
    }
    let text = d.ctl_ok(&[&["--json"], args.as_slice()].concat());
    text.lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

fn seqs(events: &[Value]) -> Vec<u64> {
    events.iter().map(|e| e["seq"].as_u64().unwrap()).collect()
}

fn kinds_of(events: &[Value], job: u64) -> Vec<String> {
    events
        .iter()
        .filter(|e| e["job"] == job)
        .map(|e| e["event"].as_str().unwrap().to_owned())
        .collect()
}

#[test]
fn watch_tells_a_jobs_story_as_it_is_committed() {
    let d = Daemon::start();
    let w = Watcher::start(&d, &[]);
    let id = d.add(&["--name", "story", "--", "/bin/sh", "-c", "exit 3"]);
    let events = w.until(|e| e["event"] == "state" && e["to"] == "failed");
    assert_eq!(
        kinds_of(&events, id),
        ["added", "started", "state", "ended", "state"]
    );
    let added = &events[0];
    assert_eq!(added["name"], "story");
    assert_eq!(added["source"], "chimectl");
    assert_eq!(added["owner_uid"], 0);
    let ended = events.iter().find(|e| e["event"] == "ended").unwrap();
    assert_eq!(ended["outcome"], "exited");
    assert_eq!(ended["exit_code"], 3);
    let started = events.iter().find(|e| e["event"] == "started").unwrap();
    assert_eq!(started["attempt"], 1);
    assert!(started["late_ms"].as_i64().unwrap() < 1000, "{started}");
    // Sequence numbers follow each other: nothing in between was hidden from root.
    let s = seqs(&events);
    assert!(s.windows(2).all(|w| w[1] == w[0] + 1), "{s:?}");
}

#[test]
fn watch_resumes_after_a_reconnect_and_a_crash_without_gaps() {
    let mut d = Daemon::start();
    for i in 0..3 {
        d.add(&["--name", &format!("a{i}"), "--in", "1h", "--", "/bin/true"]);
    }
    let first = watch_since(&d, 0, 3, None);
    assert_eq!(seqs(&first), [1, 2, 3]);
    let last = 3;
    // While nobody watches: more changes, then the daemon dies without cleaning up.
    let job = d.add(&["--name", "b", "--", "/bin/true"]);
    d.wait_state(job, "succeeded", T);
    d.ctl_ok(&["pause", "--queue", "io", "--reason", "maintenance"]);
    d.kill();
    d.restart();
    let missed = head(&d) - last;
    let resumed = watch_since(&d, last, missed, None);
    assert_eq!(
        seqs(&resumed),
        ((last + 1)..=(last + missed)).collect::<Vec<_>>(),
        "every event after {last}, once, in order"
    );
    assert_eq!(
        kinds_of(&resumed, job),
        ["added", "started", "state", "ended", "state"]
    );
    let paused = resumed.iter().find(|e| e["event"] == "paused").unwrap();
    assert_eq!(paused["target"]["queue"], "io");
    assert_eq!(paused["reason"], "maintenance");
    // --job filters.
    let only = watch_since(&d, 0, 1, Some("a1"));
    assert_eq!(only[0]["name"], "a1");
    assert_eq!(only[0]["event"], "added");
}

/// Submits `n` jobs due in an hour over one connection; returns how long the acknowledgements
/// took.
async fn submit_many(conn: &mut Conn, n: u64) -> Duration {
    let job = JobSpec::new(
        JobCommand::Argv(vec!["/bin/true".into()]),
        "/",
        ScheduleSpec::After(3_600_000),
    );
    let requests: Vec<Request> = (0..n)
        .map(|_| Request::Submit(Box::new(job.clone().into())))
        .collect();
    let started = Instant::now();
    bench::send_windowed(conn, &requests).await;
    started.elapsed()
}

#[test]
fn a_slow_watcher_does_not_slow_the_engine_and_catches_up_without_loss() {
    let d = Daemon::start();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        // A watcher that stops reading after the start of its watch.
        let (mut slow, start) = bench::watch(&d.socket).await;
        let mut conn = bench::connect(&d.socket).await;
        // Far more events than the channel (4096) and the socket buffers hold.
        let n = 12_000;
        // Nothing waits on the stalled watcher. An engine that did would never finish; 60 s is
        // a generous bound for 12,000 durable submissions on a slow machine (about 1 s here).
        let took = tokio::time::timeout(Duration::from_secs(60), submit_many(&mut conn, n))
            .await
            .expect("submissions finish while a watcher is stalled");
        // Now read: a lag notice, then every event, in order, none lost.
        eprintln!("12,000 submissions with a stalled watcher took {took:?}");
        let mut next = start.from;
        let mut lagged = 0;
        while next < start.from + n {
            let frame = tokio::time::timeout(T, slow.next())
                .await
                .expect("the watcher gets frames")
                .expect("open")
                .unwrap();
            match chime_proto::codec::decode::<ServerMessage>(&frame).unwrap() {
                ServerMessage::Watch(w) => match w.item {
                    WatchItem::Events(events) => {
                        for event in events {
                            assert_eq!(event.seq, next, "no gap, no duplicate");
                            assert!(matches!(event.kind, EventKind::Added { .. }));
                            next += 1;
                        }
                    }
                    WatchItem::Lagged { resume_from, lost } => {
                        assert_eq!((resume_from, lost), (next, 0));
                        lagged += 1;
                    }
                },
                other => panic!("unexpected {other:?}"),
            }
        }
        assert!(lagged >= 1, "the slow watcher was told it fell behind");
    });
}

#[test]
fn a_since_already_pruned_says_so_and_starts_at_the_oldest() {
    let d = Daemon::start_with(&["--event-retention", "1000"]);
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        let mut conn = bench::connect(&d.socket).await;
        submit_many(&mut conn, 1500).await;
    });
    let status = d.ctl_json(&["status"]);
    let oldest = status["events_oldest"].as_u64().unwrap();
    assert!(oldest > 1, "old events were pruned: {status}");
    assert!(status["events_head"].as_u64().unwrap() - oldest < 1000 + 300);
    let out = d.ctl(&["--json", "watch", "--since", "1", "--count", "1"]);
    assert!(out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("already pruned") && stderr.contains(&format!("({oldest})")),
        "{stderr}"
    );
    let first: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(first["seq"], oldest);
}

#[test]
fn a_timer_fires_on_time_as_an_event_and_runs_nothing() {
    let d = Daemon::start_configured(SHORT_INTERVALS, &[]);
    let id: u64 = d
        .ctl_ok(&["timer", "add", "tick", "--every", "300ms"])
        .trim()
        .parse()
        .unwrap();
    let fired = watch_since(&d, 0, 4, Some("tick"));
    assert_eq!(fired[0]["event"], "added");
    assert_eq!(fired[0]["timer"], true);
    for event in &fired[1..] {
        assert_eq!(event["event"], "fired", "{event}");
        assert_eq!(event["manual"], false);
        let late = event["late_ms"].as_i64().unwrap();
        assert!((0..500).contains(&late), "fired {late} ms late");
    }
    let dues: Vec<i64> = fired[1..]
        .iter()
        .map(|e| e["due_ms"].as_i64().unwrap())
        .collect();
    assert!(dues.windows(2).all(|w| w[1] - w[0] == 300), "{dues:?}");
    let show = d.show(id);
    assert_eq!(show["command"]["timer"], true);
    assert_eq!(show["state"], "scheduled");
    let runs = show["runs"].as_array().unwrap();
    assert!(runs.len() >= 3);
    assert!(
        runs.iter()
            .all(|r| r["outcome"] == "fired" && r["pid"].is_null())
    );
    // A timer is triggered like a job; wait works on it.
    d.ctl_ok(&["trigger", "tick"]);
    let manual = wait_until(T, "the triggered firing", || {
        let events = watch_since(&d, head(&d).saturating_sub(5), 5, Some("tick"));
        events.into_iter().find(|e| e["manual"] == true)
    });
    assert_eq!(manual["event"], "fired");
    // A timer needs a schedule.
    let out = d.ctl(&["timer", "add", "nothing"]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("needs a schedule"));
}

#[test]
fn metrics_count_runs_jobs_commits_and_lateness() {
    let d = Daemon::start();
    let ok = d.add(&["--", "/bin/true"]);
    let bad = d.add(&["--", "/bin/false"]);
    d.wait_state(ok, "succeeded", T);
    d.wait_state(bad, "failed", T);
    d.add(&["--in", "1h", "--queue", "io", "--", "/bin/true"]);
    let text = d.ctl_ok(&["metrics"]);
    let has = |line: &str| {
        assert!(
            text.lines().any(|l| l == line),
            "metrics lack {line:?}:\n{text}"
        )
    };
    has("chime_runs_total{outcome=\"exited\"} 2");
    has("chime_jobs{state=\"succeeded\"} 1");
    has("chime_jobs{state=\"failed\"} 1");
    has("chime_jobs{state=\"scheduled\"} 1");
    has("chime_run_duration_seconds_count 2");
    has("chime_schedule_lateness_seconds_count 2");
    has("# TYPE chime_commit_latency_seconds histogram");
    has("# TYPE chime_commit_batch_size histogram");
    has("chime_connections 1");
    has("chime_event_subscribers 0");
    let commits: u64 = text
        .lines()
        .find_map(|l| l.strip_prefix("chime_commits_total "))
        .unwrap()
        .parse()
        .unwrap();
    assert!(commits >= 3, "{commits}");
}

#[test]
fn the_metrics_file_is_rewritten_for_node_exporter() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("chime.prom");
    let d = Daemon::start_with(&[
        "--metrics-file",
        path.to_str().unwrap(),
        "--metrics-interval",
        "1s",
    ]);
    let id = d.add(&["--", "/bin/true"]);
    d.wait_state(id, "succeeded", T);
    let text = wait_until(T, "the metrics file to count the run", || {
        std::fs::read_to_string(&path)
            .ok()
            .filter(|t| t.contains("chime_runs_total{outcome=\"exited\"} 1"))
    });
    assert!(text.contains("# TYPE chime_jobs gauge"), "{text}");
    assert!(!dir.path().join("chime.prom.tmp").exists());
}
