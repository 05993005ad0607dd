//! Fair limits (issue 9): what one user may take of a shared chimed, each limit tried as a real
//! unprivileged user against a root chimed whose `[limits]` are set low. Each test fails on a
//! chimed without the limit. Creating users needs root: elsewhere they say SKIPPED.

use chime_tests::{Daemon, TestUser, is_root, skipped, wait_until};
use serde_json::Value;
use std::io::Read;
use std::process::{Child, Output, Stdio};
use std::time::{Duration, Instant};

const T: Duration = Duration::from_secs(30);

fn skip_unless_root(test: &str) -> bool {
    if is_root() {
        return false;
    }
    skipped(
        test,
        "needs root to create users (run the suite as root to check it)",
    );
    true
}

/// A root chimed that users may reach, with `config` as its chimed.toml.
fn daemon(args: &[&str], config: &str) -> Daemon {
    let mut all = vec!["--socket-mode", "0666"];
    all.extend_from_slice(args);
    let mut d = Daemon::prepare(&all);
    d.write_config(config);
    d.launch().unwrap();
    d
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// Asserts that `out` failed and that its message names `setting` with `value` and where it is set.
fn refused_by(out: &Output, setting: &str, value: &str) -> String {
    assert!(!out.status.success(), "accepted: {out:?}");
    let err = stderr(out);
    assert!(
        err.contains(&format!("{setting} = {value}")) && err.contains("[limits]"),
        "the refusal does not name {setting} = {value} and where it is set: {err}"
    );
    err
}

/// Children killed when dropped (connections held by `chimectl watch`).
struct Held(Vec<Child>);

impl Drop for Held {
    fn drop(&mut self) {
        for child in &mut self.0 {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// `n` connections held open by `user` (each a `chimectl watch`), once chimed counts them.
fn hold_connections(d: &Daemon, user: &TestUser, n: usize) -> Held {
    let before = d.ctl_json(&["status"])["connections"].as_u64().unwrap();
    let held = Held(
        (0..n)
            .map(|_| {
                user.ctl_command(d, &["watch"])
                    .stdout(Stdio::null())
                    .stderr(Stdio::null())
                    .spawn()
                    .unwrap()
            })
            .collect(),
    );
    wait_until(T, &format!("{n} held connections"), || {
        // status's own connection counts too.
        let now = d.ctl_json(&["status"])["connections"].as_u64().unwrap();
        (now >= before + n as u64).then_some(())
    });
    held
}

#[test]
fn a_user_may_hold_only_their_share_of_connections_and_root_always_gets_in() {
    if skip_unless_root("a_user_may_hold_only_their_share_of_connections_and_root_always_gets_in") {
        return;
    }
    let d = daemon(
        &["--max-connections", "20"],
        "[limits]\nconnections_per_user = 3\n",
    );
    let ann = TestUser::create("con");
    let bob = TestUser::create("cob");
    let held = hold_connections(&d, &ann, 3);
    refused_by(&ann.ctl(&d, &["ls"]), "connections_per_user", "3");
    bob.ctl_ok(&d, &["ls"]);
    d.ctl_ok(&["ls"]);
    drop(held);
    wait_until(T, "ann's connections to close", || {
        ann.ctl(&d, &["ls"]).status.success().then_some(())
    });
}

#[test]
fn root_gets_in_when_users_hold_every_connection() {
    if skip_unless_root("root_gets_in_when_users_hold_every_connection") {
        return;
    }
    // A connection limit chimed's descriptors leave untouched, all of it held by two users.
    let d = daemon(
        &["--max-connections", "16"],
        "[limits]\nconnections_per_user = 8\n",
    );
    let ann = TestUser::create("fa");
    let bob = TestUser::create("fb");
    let _ann = hold_connections(&d, &ann, 8);
    let _bob = hold_connections(&d, &bob, 8);
    let cat = TestUser::create("fc");
    let out = cat.ctl(&d, &["ls"]);
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains("all the connections"),
        "{}",
        stderr(&out)
    );
    d.ctl_ok(&["ls"]);
    d.ctl_ok(&["status"]);
}

#[test]
fn silent_and_idle_connections_are_closed() {
    let d = daemon(
        &[],
        "[limits]\nhandshake_timeout = \"300ms\"\nidle_timeout = \"1s\"\n",
    );
    let closed_within = |mut stream: std::os::unix::net::UnixStream, what: &str| {
        stream.set_read_timeout(Some(T)).unwrap();
        let started = Instant::now();
        let mut byte = [0u8; 1];
        // A handshake refusal or nothing, then the end of the stream.
        loop {
            match stream.read(&mut byte) {
                Ok(0) => return started.elapsed(),
                Ok(_) => continue,
                Err(err) => panic!("{what}: the connection was not closed within {T:?}: {err}"),
            }
        }
    };
    // Closed after the timeouts, not before (nothing else closes them).
    let silent = std::os::unix::net::UnixStream::connect(&d.socket).unwrap();
    let took = closed_within(silent, "no hello");
    assert!(took >= Duration::from_millis(250), "closed after {took:?}");
    let idle = chime_tests::raw::Raw::handshaken(&d.socket);
    let took = closed_within(idle.stream, "idle after the hello");
    assert!(took >= Duration::from_millis(900), "closed after {took:?}");
    // A connection in use is not idle: a wait longer than the idle timeout is answered.
    let id = d.add(&["--shell", "--", "sleep 2"]);
    let out = d.ctl(&["wait", &id.to_string()]);
    assert!(out.status.success(), "{out:?}");
}

#[test]
fn a_user_runs_at_most_their_share_of_jobs_at_once() {
    if skip_unless_root("a_user_runs_at_most_their_share_of_jobs_at_once") {
        return;
    }
    let d = daemon(&["--max-running", "8"], "[limits]\nrunning_per_user = 2\n");
    let ann = TestUser::create("run");
    let bob = TestUser::create("rub");
    let anns: Vec<u64> = (0..5)
        .map(|_| ann.add(&d, &["--", "/bin/sleep", "300"]))
        .collect();
    let states = |ids: &[u64]| -> Vec<String> {
        ids.iter()
            .map(|id| d.show(*id)["state"].as_str().unwrap().to_owned())
            .collect()
    };
    wait_until(T, "two of ann's jobs running", || {
        let s = states(&anns);
        (s.iter().filter(|s| *s == "running").count() == 2).then_some(())
    });
    let s = states(&anns);
    assert_eq!(s.iter().filter(|s| *s == "queued").count(), 3, "{s:?}");
    // Bob's and root's jobs start at once.
    let bobs = bob.add(&d, &["--", "/bin/sleep", "300"]);
    let roots = d.add(&["--", "/bin/sleep", "300"]);
    d.wait_state(bobs, "running", T);
    d.wait_state(roots, "running", T);
    // Still two of ann's, whatever else ends or starts.
    assert_eq!(states(&anns).iter().filter(|s| *s == "running").count(), 2);
    // One of hers ends: the next of hers starts.
    let running: Vec<u64> = anns
        .iter()
        .copied()
        .filter(|id| d.show(*id)["state"] == "running")
        .collect();
    d.ctl_ok(&["cancel", &running[0].to_string()]);
    wait_until(T, "another of ann's jobs to start", || {
        let s = states(&anns);
        (s.iter().filter(|s| *s == "running").count() == 2
            && s.iter().filter(|s| *s == "queued").count() == 2)
            .then_some(())
    });
    let status = d.ctl_json(&["status"]);
    let limits = status["limits"].as_array().unwrap();
    let running_limit = limits
        .iter()
        .find(|l| l["setting"] == "running_per_user")
        .unwrap();
    assert_eq!(running_limit["value"], "2", "{running_limit}");
    assert!(
        running_limit["source"]
            .as_str()
            .unwrap()
            .ends_with("chimed.toml")
    );
}

#[test]
fn a_user_stores_at_most_their_share_of_jobs() {
    if skip_unless_root("a_user_stores_at_most_their_share_of_jobs") {
        return;
    }
    let d = daemon(&[], "[limits]\njobs_per_user = 3\n");
    let ann = TestUser::create("job");
    let bob = TestUser::create("jbb");
    let first = ann.add(&d, &["--in", "1h", "--", "/bin/true"]);
    ann.add(&d, &["--in", "1h", "--", "/bin/true"]);
    ann.add(&d, &["--in", "1h", "--", "/bin/true"]);
    refused_by(
        &ann.ctl(&d, &["add", "--in", "1h", "--", "/bin/true"]),
        "jobs_per_user",
        "3",
    );
    bob.add(&d, &["--in", "1h", "--", "/bin/true"]);
    d.add(&["--in", "1h", "--", "/bin/true"]);
    // Removing one makes room.
    d.ctl_ok(&["cancel", &first.to_string()]);
    ann.ctl_ok(&d, &["rm", &first.to_string()]);
    ann.add(&d, &["--in", "1h", "--", "/bin/true"]);
}

#[test]
fn a_user_keeps_at_most_their_share_of_output_on_disk() {
    if skip_unless_root("a_user_keeps_at_most_their_share_of_output_on_disk") {
        return;
    }
    let d = daemon(&[], "[limits]\noutput_per_user = \"1MiB\"\n");
    let ann = TestUser::create("out");
    let bob = TestUser::create("oub");
    // Three runs of 600 KiB each, one after another: the second is cut off at the share.
    let write = "head -c 614400 /dev/zero | tr '\\\\0' x";
    let ids: Vec<u64> = (0..3)
        .map(|_| ann.add(&d, &["--wait", "--shell", "--", write]))
        .collect();
    let kept = |id: u64| -> (u64, String) {
        let logs: Value =
            serde_json::from_str(&ann.ctl_ok(&d, &["--json", "logs", &id.to_string()])).unwrap();
        let text: String = logs["segments"]
            .as_array()
            .unwrap()
            .iter()
            .map(|s| s["text"].as_str().unwrap_or_default().to_owned())
            .collect();
        (text.len() as u64, text)
    };
    assert_eq!(kept(ids[0]).0, 614_400, "the first run fits");
    let (len, text) = kept(ids[1]);
    assert!(
        len < 614_400,
        "the second run was not cut off ({len} bytes kept)"
    );
    assert!(
        text.contains("output_per_user = 1MiB") && text.contains("was not kept"),
        "the cut-off log does not say why: {}",
        &text[text.len().saturating_sub(300)..]
    );
    assert!(d.log().contains("output_per_user"), "{}", d.log());
    // Another user writes as much as they like.
    let bobs = bob.add(&d, &["--wait", "--shell", "--", write]);
    let logs: Value =
        serde_json::from_str(&bob.ctl_ok(&d, &["--json", "logs", &bobs.to_string()])).unwrap();
    assert_eq!(logs["segments"][0]["text"].as_str().unwrap().len(), 614_400);
    // Removing runs gives the share back.
    for id in &ids {
        ann.ctl_ok(&d, &["rm", &id.to_string()]);
    }
    let again = ann.add(&d, &["--wait", "--shell", "--", write]);
    wait_until(T, "a whole run of ann's kept again", || {
        (kept(again).0 == 614_400).then_some(())
    });
}

#[test]
fn a_users_job_may_not_keep_more_than_the_administrator_allows() {
    if skip_unless_root("a_users_job_may_not_keep_more_than_the_administrator_allows") {
        return;
    }
    let d = daemon(
        &[],
        "[limits]\nmax_output = \"1MiB\"\nkeep_runs = 10\nretention = \"1d\"\n",
    );
    let ann = TestUser::create("bnd");
    let add = |args: &[&str]| {
        let mut all = vec!["add", "--in", "1h"];
        all.extend_from_slice(args);
        all.extend_from_slice(&["--", "/bin/true"]);
        ann.ctl(&d, &all)
    };
    refused_by(&add(&["--max-output", "2M"]), "max_output", "1MiB");
    refused_by(&add(&["--keep-runs", "11"]), "keep_runs", "10");
    refused_by(&add(&["--retention", "2d"]), "retention", "1d");
    assert!(
        add(&[
            "--max-output",
            "1M",
            "--keep-runs",
            "10",
            "--retention",
            "1d"
        ])
        .status
        .success()
    );
    // Defaults above the bounds are lowered to them for users.
    let id = ann.add(&d, &["--in", "1h", "--", "/bin/true"]);
    let shown = d.show(id);
    assert_eq!(shown["max_output"], 1 << 20, "{shown}");
    // Root is held to none of them.
    d.add(&[
        "--in",
        "1h",
        "--max-output",
        "100M",
        "--keep-runs",
        "5000",
        "--",
        "/bin/true",
    ]);
}

#[test]
fn recurring_jobs_may_not_fire_more_often_than_the_minimum_interval() {
    if skip_unless_root("recurring_jobs_may_not_fire_more_often_than_the_minimum_interval") {
        return;
    }
    let d = daemon(&[], "[limits]\nmin_interval = \"1m\"\n");
    let ann = TestUser::create("min");
    refused_by(
        &ann.ctl(&d, &["add", "--every", "10s", "--", "/bin/true"]),
        "min_interval",
        "1m",
    );
    refused_by(
        &ann.ctl(&d, &["add", "--cron", "*/10 * * * * *", "--", "/bin/true"]),
        "min_interval",
        "1m",
    );
    ann.add(&d, &["--every", "1m", "--", "/bin/true"]);
    ann.add(&d, &["--cron", "*/5 * * * *", "--", "/bin/true"]);
    // The default is a second.
    let plain = daemon(&[], "");
    refused_by(
        &ann.ctl(&plain, &["add", "--every", "100ms", "--", "/bin/true"]),
        "min_interval",
        "1s",
    );
}

#[test]
fn a_users_changes_are_paced() {
    if skip_unless_root("a_users_changes_are_paced") {
        return;
    }
    let d = daemon(&[], "[limits]\nchanges_per_second = 5\n");
    let ann = TestUser::create("pac");
    // A second's worth may run ahead; after that, one every 200 ms: the 20th change cannot go
    // before 19 x 200 ms - 1 s = 2.8 s after the first.
    let started = Instant::now();
    for _ in 0..20 {
        ann.add(&d, &["--in", "1h", "--", "/bin/true"]);
    }
    let took = started.elapsed();
    assert!(
        took >= Duration::from_millis(2750),
        "20 changes at 5 a second took only {took:?}"
    );
    // Root is not paced (and nothing was refused).
    for _ in 0..15 {
        d.add(&["--in", "1h", "--", "/bin/true"]);
    }
}

#[test]
fn a_user_keeps_only_their_share_of_the_event_log() {
    if skip_unless_root("a_user_keeps_only_their_share_of_the_event_log") {
        return;
    }
    let d = daemon(
        &[],
        "[limits]\nevents_per_user = 100\nchanges_per_second = 10000\n",
    );
    let ann = TestUser::create("evt");
    let bob = TestUser::create("evb");
    let roots = d.add(&["--in", "1h", "--", "/bin/true"]);
    let mut anns = Vec::new();
    for _ in 0..150 {
        anns.push(ann.add(&d, &["--in", "1h", "--", "/bin/true"]));
    }
    let bobs = bob.add(&d, &["--in", "1h", "--", "/bin/true"]);
    // Root's, the newest 100 of ann's, and bob's: the log was not flooded past them.
    let out = d.ctl_ok(&["--json", "watch", "--since", "0", "--count", "102"]);
    let events: Vec<Value> = out
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(events[0]["job"], roots, "root's event was pushed out");
    assert_eq!(events[101]["job"], bobs, "{:?}", events[101]);
    let of_ann: Vec<u64> = events
        .iter()
        .filter(|e| e["owner_uid"] == ann.uid)
        .map(|e| e["job"].as_u64().unwrap())
        .collect();
    assert_eq!(of_ann, anns[50..], "ann keeps her newest 100");
}

#[test]
fn chimed_raises_its_open_files_limit_and_fits_its_connections_in_it() {
    let hard: u64 = String::from_utf8(
        std::process::Command::new("sh")
            .args(["-c", "ulimit -Hn"])
            .output()
            .unwrap()
            .stdout,
    )
    .unwrap()
    .trim()
    .parse()
    .unwrap_or(0);
    if hard <= 256 {
        skipped(
            "chimed_raises_its_open_files_limit_and_fits_its_connections_in_it",
            "the hard open files limit here is too low to see it raised",
        );
        return;
    }
    // A soft limit of 256 (a shell's 1024, smaller): raised to the hard one.
    let mut d = Daemon::prepare(&[]);
    d.launch_command(d.command_after("ulimit -Sn 256")).unwrap();
    let status = d.ctl_json(&["status"]);
    assert_eq!(status["open_files"], hard, "{status}");
    assert_eq!(status["max_connections"], 1024, "{status}");
    d.stop();
    // A hard limit of 200: the connections get what 64 running jobs and chimed leave.
    d.launch_command(d.command_after("ulimit -n 200")).unwrap();
    let status = d.ctl_json(&["status"]);
    assert_eq!(status["open_files"], 200, "{status}");
    assert_eq!(status["max_connections"], 16, "{status}");
    assert!(d.log().contains("raise LimitNOFILE"), "{}", d.log());
}

#[test]
fn users_together_leave_the_administrators_a_reserve_of_slots() {
    if skip_unless_root("users_together_leave_the_administrators_a_reserve_of_slots") {
        return;
    }
    // Eight slots: users may take seven (seven eighths), whatever their own limits.
    let d = daemon(&["--max-running", "8"], "[limits]\nrunning_per_user = 8\n");
    let ann = TestUser::create("rsv");
    let anns: Vec<u64> = (0..8)
        .map(|_| ann.add(&d, &["--", "/bin/sleep", "300"]))
        .collect();
    let running = |ids: &[u64]| {
        ids.iter()
            .filter(|id| d.show(**id)["state"] == "running")
            .count()
    };
    wait_until(T, "seven of ann's jobs running", || {
        (running(&anns) == 7).then_some(())
    });
    let roots = d.add(&["--", "/bin/sleep", "300"]);
    d.wait_state(roots, "running", T);
    assert_eq!(running(&anns), 7);
}

#[test]
fn a_users_jobs_send_the_journal_only_their_allowance_of_lines() {
    if skip_unless_root("a_users_jobs_send_the_journal_only_their_allowance_of_lines") {
        return;
    }
    // chimed logs to stderr here: the job's lines are records of its log like any other.
    let d = daemon(
        &["--log", "stderr"],
        "[limits]\njournal_lines_per_second = 10\n",
    );
    let ann = TestUser::create("jnl");
    let script = "i=0; while [ $i -lt 1000 ]; do echo line-$i; i=$((i+1)); done";
    let anns = ann.add(
        &d,
        &["--wait", "--output", "journal", "--shell", "--", script],
    );
    let roots = d.add(&["--wait", "--output", "journal", "--shell", "--", script]);
    let sent = |job: u64| {
        d.log()
            .lines()
            .filter(|l| {
                l.contains("line-")
                    && l.contains(&format!("job_id={job} "))
                    && l.contains("stream=\"stdout\"")
            })
            .count()
    };
    // Ten seconds' worth at once, then ten a second: far fewer than 1000 (however slow the run).
    let anns_lines = sent(anns);
    assert!(
        (100..500).contains(&anns_lines),
        "{anns_lines} of ann's lines went to the journal"
    );
    let log = d.log();
    assert!(
        log.contains("were not sent to the journal")
            && log.contains("journal_lines_per_second = 10"),
        "{log}"
    );
    // Her run's log has them all, and root's jobs are not held to it.
    let logs = ann.ctl_ok(&d, &["logs", &anns.to_string()]);
    assert_eq!(logs.lines().count(), 1000);
    assert_eq!(sent(roots), 1000);
}

#[test]
fn retries_come_no_faster_than_the_minimum_interval() {
    if skip_unless_root("retries_come_no_faster_than_the_minimum_interval") {
        return;
    }
    let d = daemon(&[], "[limits]\nmin_interval = \"1m\"\n");
    let ann = TestUser::create("bko");
    refused_by(
        &ann.ctl(
            &d,
            &[
                "add",
                "--every",
                "1h",
                "--retries",
                "100",
                "--backoff",
                "1s",
                "--",
                "/bin/false",
            ],
        ),
        "min_interval",
        "1m",
    );
    // Without --backoff, the default first delay (10s) is raised to it.
    let id = ann.add(&d, &["--in", "1h", "--retries", "3", "--", "/bin/false"]);
    assert_eq!(d.show(id)["backoff_base_ms"], 60_000);
}
