//! Recurring jobs through the real daemon: catch-up after downtime, overlap, queues, timed
//! pauses across restarts, skip, trigger, count, until and replace.
//!
//! Short intervals keep these fast. Tests wait for states and for the clock, never for a fixed
//! time as synchronisation.

use chime_tests::{Daemon, SHORT_INTERVALS, ms, wait_until};
use serde_json::Value;
use std::time::Duration;

const T: Duration = Duration::from_secs(30);

fn now_ms() -> i64 {
    jiff::Timestamp::now().as_millisecond()
}

fn runs(d: &Daemon, id: u64) -> Vec<Value> {
    d.show(id)["runs"].as_array().unwrap().clone()
}

fn finished_runs(d: &Daemon, id: u64) -> Vec<Value> {
    runs(d, id)
        .into_iter()
        .filter(|r| !r["outcome"].is_null())
        .collect()
}

/// Waits until the job has at least `n` runs (started).
fn wait_runs(d: &Daemon, id: u64, n: usize) -> Vec<Value> {
    wait_until(T, &format!("job {id} to have {n} runs"), || {
        let r = runs(d, id);
        (r.len() >= n).then_some(r)
    })
}

/// Waits for the wall clock to pass `at_ms`.
fn wait_clock(at_ms: i64) {
    wait_until(T, "the clock", || (now_ms() > at_ms).then_some(()));
}

/// Stops the daemon through several occurrences of an every-second job, restarts it, and returns
/// the job's runs that were due before the restart, and the restart instant.
fn downtime(policy: &[&str]) -> (Vec<Value>, i64, Value) {
    let mut d = Daemon::start();
    let mut args = vec!["--every", "1s"];
    args.extend_from_slice(policy);
    args.extend(["--", "/bin/true"]);
    let id = d.add(&args);
    wait_runs(&d, id, 1);
    d.stop();
    let stopped = now_ms();
    wait_clock(stopped + 3500); // three or four occurrences come due while chimed is down
    d.restart();
    let restarted = ms(&d.ctl_json(&["status"])["started_at"]);
    // Wait until the first occurrence after the restart has been handled.
    wait_until(T, "an occurrence after the restart", || {
        let job = d.show(id);
        (ms(&job["next_due_at"]) > restarted + 1000).then_some(())
    });
    wait_until(T, "runs to finish", || {
        let job = d.show(id);
        (job["owed"] == 0 && job["state"] != "running").then_some(())
    });
    let job = d.show(id);
    let missed_runs: Vec<Value> = job["runs"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|r| {
            let due = ms(&r["due_at"]);
            due > stopped && due < restarted
        })
        .cloned()
        .collect();
    (missed_runs, restarted, job)
}

#[test]
fn catch_up_skip_runs_nothing_missed_during_downtime() {
    let (missed_runs, _, job) = downtime(&["--catch-up", "skip"]);
    assert!(
        missed_runs.is_empty(),
        "ran missed occurrences: {missed_runs:?}"
    );
    let reasons: Vec<&str> = job["missed"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["reason"].as_str().unwrap())
        .collect();
    assert!(
        reasons.iter().filter(|r| **r == "catch_up").count() >= 3,
        "{job:#}"
    );
}

#[test]
fn catch_up_latest_runs_once_for_downtime() {
    let (missed_runs, restarted, job) = downtime(&[]);
    assert_eq!(missed_runs.len(), 1, "{job:#}");
    assert!(ms(&missed_runs[0]["started_at"]) >= restarted);
    assert!(job["missed_total"].as_u64().unwrap() >= 2, "{job:#}");
}

#[test]
fn catch_up_all_runs_each_missed_occurrence() {
    let (missed_runs, restarted, job) = downtime(&["--catch-up", "all", "--catch-up-limit", "10"]);
    assert!(missed_runs.len() >= 3, "{job:#}");
    for run in &missed_runs {
        assert!(ms(&run["started_at"]) >= restarted);
    }
    // They ran one after another (overlap skip), oldest first.
    let dues: Vec<i64> = missed_runs.iter().map(|r| ms(&r["due_at"])).collect();
    assert!(dues.windows(2).all(|w| w[0] < w[1]), "{dues:?}");
}

/// An every-second job that runs for 2.5 s, with `policy`, until it has `n` finished runs.
fn overlapping(policy: &str, n: usize) -> (Daemon, u64, Vec<Value>) {
    let d = Daemon::start_with(&["--kill-grace", "2s"]);
    let id = d.add(&[
        "--every",
        "1s",
        "--overlap",
        policy,
        "--",
        "/bin/sleep",
        "2.5",
    ]);
    let done = wait_until(T, "finished runs", || {
        let r = finished_runs(&d, id);
        (r.len() >= n).then_some(r)
    });
    (d, id, done)
}

fn interval(run: &Value) -> (i64, i64) {
    (ms(&run["started_at"]), ms(&run["finished_at"]))
}

#[test]
fn overlap_skip_never_runs_two_at_once() {
    let (d, id, done) = overlapping("skip", 2);
    let (a, b) = (interval(&done[0]), interval(&done[1]));
    assert!(b.0 >= a.1, "runs overlapped: {a:?} {b:?}");
    let job = d.show(id);
    assert!(
        job["missed"]
            .as_array()
            .unwrap()
            .iter()
            .any(|m| m["reason"] == "overlap"),
        "{job:#}"
    );
}

#[test]
fn overlap_queue_runs_them_back_to_back() {
    let (d, id, done) = overlapping("queue", 2);
    let (a, b) = (interval(&done[0]), interval(&done[1]));
    assert!(b.0 >= a.1, "runs overlapped: {a:?} {b:?}");
    assert!(
        b.0 - a.1 < 500,
        "the queued run did not start when the first ended: {a:?} {b:?}"
    );
    let job = d.show(id);
    assert!(job["owed"].as_u64().unwrap() >= 1, "nothing owed: {job:#}");
    assert!(
        !job["missed"]
            .as_array()
            .unwrap()
            .iter()
            .any(|m| m["reason"] == "overlap")
    );
}

#[test]
fn overlap_allow_runs_them_side_by_side() {
    let d = Daemon::start();
    let id = d.add(&[
        "--every",
        "1s",
        "--overlap",
        "allow",
        "--",
        "/bin/sleep",
        "2.5",
    ]);
    let both = wait_until(T, "two runs at once", || {
        let open: Vec<Value> = runs(&d, id)
            .into_iter()
            .filter(|r| r["outcome"].is_null())
            .collect();
        (open.len() >= 2).then_some(open)
    });
    assert_eq!(both.len(), 2);
    assert_eq!(d.show(id)["state"], "running");
}

#[test]
fn overlap_replace_terminates_the_previous_run_first() {
    let (_d, _id, done) = overlapping("replace", 2);
    let first = &done[0];
    assert_eq!(first["outcome"], "killed", "{first:#}");
    assert_eq!(first["signal"], 15);
    let (a, b) = (interval(&done[0]), interval(&done[1]));
    assert!(
        b.0 >= a.1,
        "the replacement started before the old run ended: {a:?} {b:?}"
    );
}

#[test]
fn a_burst_of_200_on_a_queue_of_3_never_runs_more_than_3() {
    let d = Daemon::start();
    d.ctl_ok(&["queue", "set", "burst", "--parallel", "3"]);
    let dir = d.dir.path().join("active");
    std::fs::create_dir(&dir).unwrap();
    let log = d.dir.path().join("concurrency.log");
    // Each job registers itself, records how many are registered, and leaves.
    let script = format!(
        "touch {dir}/$CHIME_JOB_ID; ls {dir} | wc -l >> {log}; sleep 0.02; rm {dir}/$CHIME_JOB_ID",
        dir = dir.display(),
        log = log.display()
    );
    // The 200 come due at once: added while their queue is paused, released by one resume
    // (a due time a few seconds ahead was in the past before a busy machine had added them all).
    d.ctl_ok(&["pause", "--queue", "burst"]);
    let mut ids = Vec::new();
    for _ in 0..200 {
        ids.push(d.add(&["--queue", "burst", "--shell", "--", &script]));
    }
    d.ctl_ok(&["resume", "--queue", "burst"]);
    // While they drain, the queue never reports more than 3 running.
    let mut seen_queued = false;
    wait_until(Duration::from_secs(120), "all 200 jobs to finish", || {
        let q = d.ctl_json(&["queue", "ls"]);
        let burst = q["queues"]
            .as_array()
            .unwrap()
            .iter()
            .find(|q| q["name"] == "burst")
            .cloned()
            .unwrap();
        assert!(burst["running"].as_u64().unwrap() <= 3, "{burst}");
        let counts = &d.ctl_json(&["status"])["counts"];
        if counts["queued"].as_u64().unwrap_or(0) > 0 {
            seen_queued = true;
        }
        (counts["succeeded"].as_u64().unwrap() == 200).then_some(())
    });
    assert!(seen_queued, "the jobs never waited in the queue");
    let observed: Vec<u32> = std::fs::read_to_string(&log)
        .unwrap()
        .lines()
        .map(|l| l.trim().parse().unwrap())
        .collect();
    assert_eq!(observed.len(), 200);
    let max = *observed.iter().max().unwrap();
    assert!(max <= 3, "{max} jobs ran at once");
    // Run records agree: no instant with more than 3 runs open.
    let mut edges: Vec<(i64, i32)> = Vec::new();
    for id in ids {
        let r = &runs(&d, id)[0];
        edges.push((ms(&r["started_at"]), 1));
        edges.push((ms(&r["finished_at"]), -1));
    }
    edges.sort_by_key(|(t, delta)| (*t, *delta)); // an end at t frees its slot before a start at t
    let (mut open, mut peak) = (0, 0);
    for (_, delta) in edges {
        open += delta;
        peak = peak.max(open);
    }
    assert!(peak <= 3, "run records show {peak} at once");
}

/// Runs are opened ahead of a queue's free slots only when its runs are quick; jobs waiting
/// for a slot behind runs that last are shown `queued`, not `running`.
#[test]
fn jobs_waiting_behind_lasting_runs_are_queued_not_running() {
    let d = Daemon::start();
    d.ctl_ok(&["queue", "set", "slow", "--parallel", "1"]);
    let ids: Vec<u64> = (0..5)
        .map(|_| d.add(&["--queue", "slow", "--", "/bin/sleep", "30"]))
        .collect();
    d.wait_state(ids[0], "running", T);
    let states = || -> Vec<String> {
        ids.iter()
            .map(|id| d.show(*id)["state"].as_str().unwrap().to_owned())
            .collect()
    };
    // Give the engine every chance to open more (it would within a batch or two).
    wait_until(T, "the first run's pid", || {
        d.show(ids[0])["runs"][0]["pid"].as_u64()
    });
    assert_eq!(
        states(),
        ["running", "queued", "queued", "queued", "queued"],
        "one slot, one running"
    );
    // As each ends, the next starts: the queue still runs one at a time.
    d.ctl_ok(&["cancel", &ids[0].to_string()]);
    d.wait_state(ids[1], "running", T);
    assert_eq!(states()[2..], ["queued", "queued", "queued"]);
    for id in &ids[1..] {
        d.ctl_ok(&["cancel", &id.to_string()]);
    }
}

#[test]
fn a_timed_pause_ends_by_itself_even_across_a_restart() {
    let mut d = Daemon::start_configured(SHORT_INTERVALS, &[]);
    let id = d.add(&["--every", "500ms", "--", "/bin/true"]);
    wait_runs(&d, id, 1);
    let paused = d.ctl_json(&["pause", "--all", "--for", "3s", "--reason", "maintenance"]);
    let until = ms(&paused["pause"]["until"]);
    let status = d.ctl_json(&["status"]);
    assert_eq!(status["paused_all"]["reason"], "maintenance");
    // Restart in the middle of the pause: it is still there, and still ends by itself.
    d.stop();
    d.restart();
    assert_eq!(
        d.ctl_json(&["status"])["paused_all"]["until"],
        paused["pause"]["until"]
    );
    wait_until(T, "the pause to end", || {
        d.ctl_json(&["status"])["paused_all"]
            .is_null()
            .then_some(())
    });
    assert!(now_ms() >= until, "the pause ended early");
    let after = wait_until(T, "a run after the pause", || {
        runs(&d, id)
            .into_iter()
            .find(|r| ms(&r["started_at"]) >= until)
    });
    // Nothing started during the pause.
    let since = ms(&paused["pause"]["since"]);
    for r in runs(&d, id) {
        let started = ms(&r["started_at"]);
        assert!(
            !(since + 50..until).contains(&started),
            "a run started during the pause: {r}"
        );
    }
    assert!(
        ms(&after["started_at"]) - until < 1000,
        "the job resumed late: {after}"
    );
}

#[test]
fn a_paused_job_and_queue_hold_and_resume() {
    let d = Daemon::start_configured(SHORT_INTERVALS, &[]);
    let id = d.add(&["--every", "500ms", "--queue", "q1", "--", "/bin/true"]);
    wait_runs(&d, id, 1);
    d.ctl_ok(&["pause", &id.to_string(), "--reason", "looking into it"]);
    let job = d.show(id);
    assert_eq!(job["state"], "paused");
    assert_eq!(job["pause"]["reason"], "looking into it");
    let before = runs(&d, id).len();
    let held_since = now_ms();
    wait_clock(held_since + 1200);
    assert_eq!(runs(&d, id).len(), before, "a paused job ran");
    d.ctl_ok(&["resume", &id.to_string()]);
    wait_runs(&d, id, before + 1);
    let job = d.show(id);
    assert!(
        job["missed"]
            .as_array()
            .unwrap()
            .iter()
            .any(|m| m["reason"] == "catch_up"),
        "{job:#}"
    );
    // A paused queue holds its jobs the same way.
    d.ctl_ok(&["pause", "--queue", "q1"]);
    let ls = d.ctl_json(&["queue", "ls"]);
    let q1 = ls["queues"]
        .as_array()
        .unwrap()
        .iter()
        .find(|q| q["name"] == "q1")
        .unwrap()
        .clone();
    assert!(q1["pause"].is_object(), "{ls}");
    let before = runs(&d, id).len();
    wait_clock(now_ms() + 1200);
    assert_eq!(runs(&d, id).len(), before, "a job of a paused queue ran");
    d.ctl_ok(&["resume", "--queue", "q1"]);
    wait_runs(&d, id, before + 1);
}

#[test]
fn skip_trigger_count_until_and_replace() {
    let d = Daemon::start_configured(SHORT_INTERVALS, &[]);
    // skip: the next occurrence moves on by one interval. (--every anchors at submission, so the
    // first occurrence runs at once; the next is an hour later.)
    let id = d.add(&["--every", "1h", "--", "/bin/true"]);
    wait_until(T, "the first run", || {
        (finished_runs(&d, id).len() == 1).then_some(())
    });
    let next = ms(&d.show(id)["next_due_at"]);
    let skipped = d.ctl_json(&["skip", &id.to_string()]);
    assert_eq!(ms(&skipped["skipped_due_at"]), next);
    assert_eq!(ms(&skipped["next_due_at"]), next + 3_600_000);
    assert_eq!(d.show(id)["missed"][0]["reason"], "skipped");

    // trigger: runs now, outside the schedule.
    let yearly = d.add(&["--cron", "0 0 1 1 *", "--", "/bin/echo", "triggered"]);
    d.ctl_ok(&["trigger", &yearly.to_string()]);
    wait_until(T, "the triggered run", || {
        (finished_runs(&d, yearly).len() == 1).then_some(())
    });
    assert_eq!(d.ctl_ok(&["logs", &yearly.to_string()]), "triggered\n");
    assert_eq!(d.show(yearly)["state"], "scheduled");

    // --count: exactly that many runs, then final by the last one.
    let counted = d.add(&["--every", "300ms", "--count", "3", "--", "/bin/true"]);
    let job = d.wait_state(counted, "succeeded", T);
    assert_eq!(job["runs"].as_array().unwrap().len(), 3);
    assert!(job["next_due_at"].is_null());

    // --until: no occurrence after it.
    let until = jiff::Timestamp::now() + jiff::SignedDuration::from_millis(1500);
    let bounded = d.add(&[
        "--every",
        "400ms",
        "--until",
        &until.to_string(),
        "--shell",
        "--",
        "exit 2",
    ]);
    let job = d.wait_state(bounded, "failed", T);
    let runs = job["runs"].as_array().unwrap();
    assert!(!runs.is_empty());
    for r in runs {
        assert!(ms(&r["due_at"]) <= until.as_millisecond(), "{r}");
    }

    // --replace: same id, new spec, history kept; a taken name without it is refused.
    // Anchored an hour ahead, so the trigger is its only run.
    let later = (jiff::Timestamp::now() + jiff::SignedDuration::from_hours(1)).to_string();
    let first = d.add(&[
        "--name",
        "swap",
        "--every",
        "1h",
        "--from",
        &later,
        "--",
        "/bin/echo",
        "old",
    ]);
    d.ctl_ok(&["trigger", "swap"]);
    wait_until(T, "the old run", || {
        (finished_runs(&d, first).len() == 1).then_some(())
    });
    let taken = d.ctl(&["add", "--name", "swap", "--", "/bin/true"]);
    assert!(!taken.status.success());
    assert!(String::from_utf8_lossy(&taken.stderr).contains("--replace"));
    let again = d.add(&[
        "--name",
        "swap",
        "--replace",
        "--every",
        "300ms",
        "--count",
        "1",
        "--",
        "/bin/echo",
        "new",
    ]);
    assert_eq!(again, first);
    let job = d.wait_state(first, "succeeded", T);
    assert_eq!(
        job["runs"].as_array().unwrap().len(),
        2,
        "history kept: {job:#}"
    );
    assert_eq!(job["command"]["argv"][1], "new");
    assert_eq!(d.ctl_ok(&["logs", "swap"]), "new\n");
}

#[test]
fn next_previews_without_creating_anything() {
    let d = Daemon::start();
    let out = d.ctl_json(&[
        "next",
        "--cron",
        "30 2 * * *",
        "--tz",
        "America/New_York",
        "--from",
        "2026-03-07T12:00:00Z",
        "-n",
        "2",
    ]);
    let times: Vec<&str> = out["times"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["at"].as_str().unwrap())
        .collect();
    // Spring forward: 02:30 does not exist on 2026-03-08, so it runs at 03:00 EDT.
    assert_eq!(
        times,
        ["2026-03-08T07:00:00.000Z", "2026-03-09T06:30:00.000Z"]
    );
    assert_eq!(out["dst_rule"], "wall clock");
    let text = d.ctl_ok(&[
        "next",
        "--every",
        "90m",
        "--from",
        "2026-01-01T00:00:00Z",
        "-n",
        "2",
    ]);
    assert!(
        text.contains("2026-01-01") && text.contains("01:30:00"),
        "{text}"
    );
    assert_eq!(d.ctl_json(&["ls"])["jobs"].as_array().unwrap().len(), 0);
}

#[test]
fn bad_schedules_are_refused_naming_the_flag() {
    let d = Daemon::start();
    let cases: &[(&[&str], &str)] = &[
        (&["--cron", "61 * * * *"], "field 1 (minute)"),
        (&["--cron", "0 0 30 2 *"], "never fires"),
        (
            &["--cron", "0 * * * *", "--tz", "Mars/Olympus"],
            "--tz: \"Mars/Olympus\" is not a known time zone",
        ),
        (&["--every", "0s"], "--every"),
        (&["--every", "-5m"], "negative"),
        (&["--every", "1m", "--until", "2020-01-01 00:00"], "--until"),
        (
            &["--every", "1m", "--catch-up", "sometimes"],
            "--catch-up \"sometimes\"",
        ),
        (
            &["--every", "1m", "--overlap", "merge"],
            "--overlap \"merge\"",
        ),
        (&["--every", "1m", "--deadline", "0s"], "--deadline"),
        (&["--every", "1m", "--count", "0"], "--count"),
        (&["--count", "3"], "--count: applies to recurring jobs"),
        (
            &["--every", "1m", "--catch-up-limit", "5"],
            "--catch-up-limit needs --catch-up all",
        ),
        (&["--every", "1m", "--queue", "no spaces"], "queue name"),
    ];
    for (flags, needle) in cases {
        let mut args = vec!["add"];
        args.extend_from_slice(flags);
        args.extend(["--", "/bin/true"]);
        let out = d.ctl(&args);
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{flags:?}: {err}");
        assert!(err.contains(needle), "{flags:?}: {err:?} lacks {needle:?}");
    }
    // Conflicting schedule flags are usage errors.
    let out = d.ctl(&[
        "add",
        "--every",
        "1m",
        "--cron",
        "* * * * *",
        "--",
        "/bin/true",
    ]);
    assert_eq!(out.status.code(), Some(2));
    assert_eq!(
        d.ctl_json(&["ls"])["jobs"].as_array().unwrap().len(),
        0,
        "something was stored"
    );
}

/// `next JOB` shows the job's real future, not its schedule's: a skip moves it on, `--count`
/// and `--until` end it, a pause is noted, and an ended job has none (issue 13, item 1).
#[test]
fn next_shows_the_jobs_own_future() {
    let d = Daemon::start();
    let times = |job: &str, n: &str| -> (Vec<String>, Vec<String>) {
        let v = d.ctl_json(&["next", job, "-n", n]);
        let strings = |key: &str, field: Option<&str>| -> Vec<String> {
            v[key]
                .as_array()
                .unwrap_or_else(|| panic!("no {key} in {v}"))
                .iter()
                .map(|x| {
                    field
                        .map_or(x, |f| &x[f])
                        .as_str()
                        .unwrap_or_default()
                        .to_owned()
                })
                .collect()
        };
        (strings("times", Some("at")), strings("notes", None))
    };
    // --count 2: two firings, not five.
    d.add(&[
        "--name",
        "counted",
        "--every",
        "1h",
        "--from",
        "2030-01-01T00:00:00Z",
        "--count",
        "2",
        "--",
        "/bin/true",
    ]);
    let (at, notes) = times("counted", "5");
    assert_eq!(
        at,
        ["2030-01-01T00:00:00.000Z", "2030-01-01T01:00:00.000Z"],
        "{notes:?}"
    );
    assert!(notes.iter().any(|n| n.contains("--count 2")), "{notes:?}");
    // --until: nothing after it.
    d.add(&[
        "--name",
        "until",
        "--every",
        "1h",
        "--from",
        "2030-01-01T00:00:00Z",
        "--until",
        "2030-01-01T01:30:00Z",
        "--",
        "/bin/true",
    ]);
    let (at, _) = times("until", "5");
    assert_eq!(at, ["2030-01-01T00:00:00.000Z", "2030-01-01T01:00:00.000Z"]);
    // A skipped firing is not listed.
    d.add(&[
        "--name",
        "yearly",
        "--cron",
        "0 0 1 1 *",
        "--tz",
        "UTC",
        "--",
        "/bin/true",
    ]);
    let (before, _) = times("yearly", "2");
    d.ctl_ok(&["skip", "yearly"]);
    let (after, _) = times("yearly", "2");
    assert_eq!(
        after[0], before[1],
        "after skip: {after:?}, before: {before:?}"
    );
    // A pause is noted, with its reason.
    d.ctl_ok(&["pause", "yearly", "--reason", "maintenance"]);
    let (_, notes) = times("yearly", "1");
    assert!(
        notes
            .iter()
            .any(|n| n.contains("the job is paused") && n.contains("maintenance")),
        "{notes:?}"
    );
    // An ended job has no future.
    d.ctl_ok(&["cancel", "counted"]);
    let (at, notes) = times("counted", "5");
    assert!(at.is_empty(), "{at:?}");
    assert!(
        notes.iter().any(|n| n.contains("ended (cancelled)")),
        "{notes:?}"
    );
}

/// One rule for zones (issue 13, item 3): what you give without a zone is in yours (`TZ`, else
/// the system's): an `--at` time, and a cron schedule, which is recorded with your zone's name
/// so that it says where it runs and does not move with chimed's zone; a job file's cron without
/// `tz` runs in chimed's zone and says so. `add --replace` says what it changed.
#[test]
fn times_and_schedules_without_a_zone_are_in_yours() {
    let d = Daemon::start();
    let in_paris = |args: &[&str]| {
        let out = d
            .ctl_command(args)
            .env("TZ", "Europe/Paris")
            .output()
            .unwrap();
        assert!(out.status.success(), "{}", chime_tests::shown(&out));
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    in_paris(&[
        "add",
        "--name",
        "rotate",
        "--cron",
        "0 4 * * *",
        "--",
        "/bin/true",
    ]);
    let job = d.show_ref("rotate");
    assert_eq!(
        job["schedule"],
        serde_json::json!({"kind": "cron", "expr": "0 4 * * *", "tz": "Europe/Paris"}),
        "{job}"
    );
    assert_eq!(job["schedule_text"], "cron \"0 4 * * *\" Europe/Paris");
    in_paris(&[
        "add",
        "--name",
        "xmas",
        "--at",
        "2030-12-24 18:00",
        "--",
        "/bin/true",
    ]);
    assert_eq!(d.show_ref("xmas")["due_at"], "2030-12-24T17:00:00.000Z");
    // Replaced from a shell in UTC: the move is said, not silent.
    let said = d.ctl_ok(&[
        "add",
        "--name",
        "rotate",
        "--replace",
        "--cron",
        "0 4 * * *",
        "--",
        "/bin/true",
    ]);
    assert!(
        said.contains("schedule: cron \"0 4 * * *\" Europe/Paris -> cron \"0 4 * * *\" UTC"),
        "{said}"
    );
    let said = d.ctl_ok(&[
        "add",
        "--name",
        "rotate",
        "--replace",
        "--cron",
        "0 4 * * *",
        "--",
        "/bin/true",
    ]);
    assert!(said.contains("nothing changed"), "{said}");
    // A job file's cron without tz: chimed's zone, said so.
    d.write_job(
        "nightly",
        "command = [\"/bin/true\"]\ncron = \"0 3 * * *\"\n",
    );
    d.ctl_ok(&["reload"]);
    let text = d.show_ref("nightly")["schedule_text"].clone();
    assert_eq!(text, "cron \"0 3 * * *\" in chimed's zone", "{text}");
}
