//! Reliable execution through the real daemon: retries and their backoff, timeouts that take
//! the whole process group, output capture and its cap, `logs -f`, `wait` and its exit codes,
//! history and retention, and what happens to runs when chimed is stopped or killed.

use chime_tests::{
    Daemon, SHORT_INTERVALS, TestUser, alive, is_root, ms, signal, skipped, wait_until,
};
use serde_json::Value;
use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

const T: Duration = Duration::from_secs(30);

#[test]
fn retries_follow_the_backoff() {
    let d = Daemon::start();
    let id = d.add(&[
        "--retries",
        "3",
        "--backoff",
        "500ms:1s",
        "--shell",
        "--",
        "exit 3",
    ]);
    let job = d.wait_state(id, "failed", T);
    let runs = job["runs"].as_array().unwrap();
    assert_eq!(runs.len(), 4, "one run and three retries: {job:#}");
    let attempts: Vec<u64> = runs
        .iter()
        .map(|r| r["attempt"].as_u64().unwrap())
        .collect();
    assert_eq!(attempts, [1, 2, 3, 4]);
    assert!(
        runs.iter().all(|r| r["due_at"] == runs[0]["due_at"]),
        "one occurrence"
    );
    // From one run's end to the next start: 500 ms, then doubled, then capped at 1 s, each plus
    // up to 10% jitter. The tolerance above that is 250 ms for scheduling on a busy machine.
    let expected = [500, 1000, 1000];
    for (i, want) in expected.iter().enumerate() {
        let gap = ms(&runs[i + 1]["started_at"]) - ms(&runs[i]["finished_at"]);
        assert!(
            (*want..=want + want / 10 + 250).contains(&gap),
            "retry {} started {gap} ms after the previous run ended (expected {want} ms + jitter)",
            i + 1
        );
    }
    assert_eq!(job["retries"], 3);
}

#[test]
fn a_retry_that_succeeds_ends_the_job_succeeded() {
    let d = Daemon::start();
    let marker = d.dir.path().join("second-time");
    let script = format!(
        "if [ -e {m} ]; then echo ok; else touch {m}; exit 1; fi",
        m = marker.display()
    );
    let id = d.add(&[
        "--retries",
        "2",
        "--backoff",
        "100ms",
        "--shell",
        "--",
        &script,
    ]);
    let job = d.wait_state(id, "succeeded", T);
    let outcomes: Vec<i64> = job["runs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["exit_code"].as_i64().unwrap())
        .collect();
    assert_eq!(outcomes, [1, 0]);
}

/// A job waiting out a retry's backoff says when the retry is due, in `ls` as in `show`.
#[test]
fn a_pending_retry_is_listed_with_its_due_time() {
    let d = Daemon::start();
    let id = d.add(&[
        "--retries",
        "1",
        "--backoff",
        "1h",
        "--shell",
        "--",
        "exit 1",
    ]);
    wait_until(T, "the first attempt to end", || {
        d.show(id)["runs"][0]["outcome"].as_str().map(|_| ())
    });
    let listed = d.ctl_json(&["ls"])["jobs"]
        .as_array()
        .unwrap()
        .iter()
        .find(|j| j["id"] == id)
        .cloned()
        .unwrap();
    let due = ms(&listed["next_due_at"]);
    let ended = ms(&d.show(id)["runs"][0]["finished_at"]);
    // One hour, plus at most 10% of jitter (and the moment it took to record the end).
    assert!(
        (ended + 3_600_000..=ended + 3_965_000).contains(&due),
        "retry listed as due at {due}, the first attempt ended at {ended}: {listed:#}"
    );
    d.ctl_ok(&["cancel", &id.to_string()]);
}

#[test]
fn a_timeout_ends_the_whole_process_group() {
    let d = Daemon::start();
    let pidfile = d.dir.path().join("background.pid");
    let script = format!("sleep 1000 & echo $! > {}; sleep 1000", pidfile.display());
    let added = d.ctl_json(&[
        "add",
        "--timeout",
        "1s",
        "--kill-grace",
        "1s",
        "--shell",
        "--",
        &script,
    ]);
    let id = added["id"].as_u64().unwrap().to_string();
    let out = d.ctl(&["wait", &id]);
    assert_eq!(
        out.status.code(),
        Some(124),
        "wait exits 124 for a timeout: {out:?}"
    );
    let job = d.show(added["id"].as_u64().unwrap());
    assert_eq!(job["runs"][0]["outcome"], "timed_out");
    let took = ms(&job["runs"][0]["finished_at"]) - ms(&job["runs"][0]["started_at"]);
    assert!(
        (1000..3000).contains(&took),
        "the run lasted {took} ms with a 1 s timeout"
    );
    let background: u32 = std::fs::read_to_string(&pidfile)
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    wait_until(T, "the background sleep to be gone", || {
        (!alive(background)).then_some(())
    });
}

#[test]
fn a_run_that_ignores_sigterm_is_killed_after_the_grace() {
    let d = Daemon::start();
    let id = d.add(&[
        "--timeout",
        "500ms",
        "--kill-grace",
        "700ms",
        "--shell",
        "--",
        "trap '' TERM; sleep 30",
    ]);
    let job = d.wait_state(id, "failed", T);
    let run = &job["runs"][0];
    assert_eq!(run["outcome"], "timed_out");
    let took = ms(&run["finished_at"]) - ms(&run["started_at"]);
    assert!(
        (1200..4000).contains(&took),
        "SIGKILL came after {took} ms (timeout 500 + grace 700)"
    );
}

#[test]
fn logs_follow_prints_lines_while_the_job_runs() {
    let d = Daemon::start();
    let id = d.add(&[
        "--shell",
        "--",
        "for i in 1 2 3; do echo line$i; sleep 0.7; done; echo done >&2",
    ]);
    let mut follower = d
        .ctl_command(&["logs", "-f", &id.to_string()])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(follower.stdout.take().unwrap()).lines();
    let first = lines.next().unwrap().unwrap();
    assert_eq!(first, "line1");
    assert_eq!(
        d.show(id)["state"],
        "running",
        "the first line came before the job ended"
    );
    let rest: Vec<String> = lines.map(|l| l.unwrap()).collect();
    assert_eq!(rest, ["line2", "line3"]);
    let status = follower.wait().unwrap();
    assert!(status.success());
    let mut err = String::new();
    std::io::Read::read_to_string(&mut follower.stderr.take().unwrap(), &mut err).unwrap();
    assert_eq!(err, "done\n", "stderr follows on stderr");
    assert_eq!(d.show(id)["state"], "succeeded");
}

#[test]
fn the_output_cap_keeps_the_tail() {
    let d = Daemon::start();
    let id = d.add(&["--max-output", "4K", "--shell", "--", "seq 1 20000"]);
    d.wait_state(id, "succeeded", T);
    let logs = d.ctl_json(&["logs", &id.to_string()]);
    let output = logs["output"].as_str().unwrap();
    assert!(
        output.ends_with("19999\n20000\n"),
        "the tail is kept: {:?}",
        &output[output.len().saturating_sub(40)..]
    );
    assert!(
        output.len() <= 4096,
        "{} bytes kept with a 4K cap",
        output.len()
    );
    let total: usize = (1..=20000).map(|n: u32| n.to_string().len() + 1).sum();
    assert_eq!(
        logs["dropped_bytes"].as_u64().unwrap() as usize + output.len(),
        total
    );
    assert_eq!(
        d.show(id)["runs"][0]["output_bytes"].as_u64().unwrap() as usize,
        total
    );
    // People are told that earlier output is missing.
    let text = d.ctl(&["logs", &id.to_string()]);
    assert!(String::from_utf8_lossy(&text.stderr).contains("earlier bytes not shown"));
    // --tail counts lines.
    assert_eq!(
        d.ctl_ok(&["logs", "--tail", "2", &id.to_string()]),
        "19999\n20000\n"
    );
}

/// Output is read whatever its timing (see the daemon's `runner::pipe`): a short job's pipes are
/// read only after it ended, a longer one's as they fill, and a background child may still write
/// for a moment after the job's own process ended.
#[test]
fn output_is_complete_whatever_its_timing() {
    let d = Daemon::start();
    let stream_text = |id: u64, stream: &str| -> String {
        let logs = d.ctl_json(&["logs", &id.to_string()]);
        logs["segments"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|s| s["stream"] == stream)
            .map(|s| s["text"].as_str().unwrap().to_owned())
            .collect()
    };
    // Ends at once, having written more than a pipe holds.
    let big = d.add(&["--shell", "--", "head -c 300000 /dev/zero | tr '\\0' x"]);
    // Closes its stdout, then fills stderr past a pipe's buffer before it is watched.
    let stderr_only = d.add(&[
        "--shell",
        "--",
        "exec >&-; head -c 200000 /dev/zero | tr '\\0' y >&2; echo done >&2",
    ]);
    // Its background child writes after the job's own process has ended (kept: without
    // --keep-children, what the main process leaves running is ended with it).
    let background = d.add(&[
        "--keep-children",
        "--shell",
        "--",
        "echo parent; (sleep 0.05; echo child) &",
    ]);
    // Writes, pauses past the moment its pipes are watched, writes again on both streams.
    let slow = d.add(&[
        "--shell",
        "--",
        "echo one; sleep 0.1; echo two >&2; sleep 0.1; echo three",
    ]);
    for id in [big, stderr_only, background, slow] {
        d.wait_state(id, "succeeded", T);
    }
    assert_eq!(stream_text(big, "stdout"), "x".repeat(300_000));
    assert_eq!(stream_text(stderr_only, "stdout"), "");
    assert_eq!(
        stream_text(stderr_only, "stderr"),
        format!("{}done\n", "y".repeat(200_000))
    );
    assert_eq!(stream_text(background, "stdout"), "parent\nchild\n");
    assert_eq!(stream_text(slow, "stdout"), "one\nthree\n");
    assert_eq!(stream_text(slow, "stderr"), "two\n");
    let logs = d.ctl_json(&["logs", &slow.to_string()]);
    let order: Vec<&str> = logs["segments"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["text"].as_str().unwrap())
        .collect();
    assert_eq!(order, ["one\n", "two\n", "three\n"], "in the order written");
}

#[test]
fn wait_exits_with_the_runs_exit_code() {
    let d = Daemon::start();
    let code = |args: &[&str]| d.ctl(args).status.code();
    // add --wait: success and failure.
    assert_eq!(code(&["add", "--wait", "--", "/bin/true"]), Some(0));
    assert_eq!(code(&["add", "--wait", "--shell", "--", "exit 3"]), Some(3));
    // wait on a job that was killed.
    let id = d.add(&["--", "/bin/sleep", "30"]);
    d.wait_state(id, "running", T);
    wait_until(T, "the pid", || d.show(id)["runs"][0]["pid"].as_u64());
    let waiter = d.ctl_command(&["wait", &id.to_string()]).spawn().unwrap();
    d.ctl_ok(&["kill", "--signal", "KILL", &id.to_string()]);
    let out = waiter.wait_with_output().unwrap();
    assert_eq!(out.status.code(), Some(1), "killed: 1");
    assert_eq!(d.show(id)["runs"][0]["signal"], 9);
    // Timed out: 124.
    assert_eq!(
        code(&[
            "add",
            "--wait",
            "--timeout",
            "300ms",
            "--",
            "/bin/sleep",
            "30"
        ]),
        Some(124)
    );
    // A finished job answers at once; wait's own --timeout gives 75.
    assert_eq!(code(&["wait", &id.to_string()]), Some(1));
    let slow = d.add(&["--in", "1h", "--", "/bin/true"]);
    let started = Instant::now();
    assert_eq!(
        code(&["wait", "--timeout", "300ms", &slow.to_string()]),
        Some(75)
    );
    assert!(started.elapsed() < Duration::from_secs(5));
}

#[test]
fn kill_retry_and_rm() {
    let d = Daemon::start();
    let id = d.add(&["--", "/bin/sleep", "30"]);
    d.wait_state(id, "running", T);
    wait_until(T, "the pid", || d.show(id)["runs"][0]["pid"].as_u64());
    // A bad signal is refused before anything is sent.
    let out = d.ctl(&["kill", "--signal", "FROB", &id.to_string()]);
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("not a signal"));
    // rm of a running job is refused.
    let out = d.ctl(&["rm", &id.to_string()]);
    assert!(String::from_utf8_lossy(&out.stderr).contains("is running"));
    d.ctl_ok(&["kill", "--signal", "INT", &id.to_string()]);
    let job = d.wait_state(id, "failed", T);
    assert_eq!(job["runs"][0]["signal"], 2);
    // retry runs a failed job again.
    d.ctl_ok(&["retry", &id.to_string()]);
    d.wait_state(id, "running", T);
    d.ctl_ok(&["kill", &id.to_string()]);
    let job = d.wait_state(id, "failed", T);
    assert_eq!(job["runs"].as_array().unwrap().len(), 2);
    // rm removes it, with its history.
    d.ctl_ok(&["rm", &id.to_string()]);
    let out = d.ctl(&["show", &id.to_string()]);
    assert!(String::from_utf8_lossy(&out.stderr).contains(&format!("no job {id}")));
}

fn log_files(d: &Daemon, job: u64) -> Vec<String> {
    let dir = d.state_dir.join("logs").join((job / 1024).to_string());
    let mut names: Vec<String> = std::fs::read_dir(&dir)
        .map(|entries| {
            entries
                .filter_map(|e| e.ok())
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .filter(|n| n.starts_with(&format!("{job}-")))
                .collect()
        })
        .unwrap_or_default();
    names.sort();
    names
}

#[test]
fn history_is_pruned_with_its_output_and_finished_jobs_expire() {
    let d = Daemon::start_configured(SHORT_INTERVALS, &[]);
    let id = d.add(&[
        "--every",
        "300ms",
        "--count",
        "5",
        "--keep-runs",
        "2",
        "--shell",
        "--",
        "echo run $CHIME_RUN_ID",
    ]);
    let job = d.wait_state(id, "succeeded", T);
    let kept = job["runs"].as_array().unwrap();
    assert_eq!(kept.len(), 2, "only the last two runs are kept: {job:#}");
    // Only the kept runs' output is on disk.
    let expected: Vec<String> = kept
        .iter()
        .map(|r| format!("{id}-{}.log", r["run_id"]))
        .collect();
    wait_until(T, "pruned output to be deleted", || {
        (log_files(&d, id) == expected).then_some(())
    });
    // A finished job goes when its retention ends.
    let brief = d.add(&["--retention", "1s", "--", "/bin/echo", "bye"]);
    d.wait_state(brief, "succeeded", T);
    assert_eq!(log_files(&d, brief).len(), 1);
    wait_until(T, "the job to expire", || {
        let out = d.ctl(&["show", &brief.to_string()]);
        (!out.status.success()).then_some(())
    });
    wait_until(T, "its output to be deleted", || {
        log_files(&d, brief).is_empty().then_some(())
    });
}

/// A job whose first attempt sleeps (and counts its start), and whose later attempts succeed.
fn flaky_script(d: &Daemon) -> String {
    let dir = d.dir.path();
    format!(
        "echo start >> {started}; if [ -e {marker} ]; then exit 0; fi; touch {marker}; echo $$ > {pid}; sleep 30",
        started = dir.join("started").display(),
        marker = dir.join("marker").display(),
        pid = dir.join("pid").display(),
    )
}

fn starts(d: &Daemon) -> usize {
    std::fs::read_to_string(d.dir.path().join("started"))
        .unwrap_or_default()
        .lines()
        .count()
}

/// Runs a [`flaky_script`] job with one retry, cuts its first attempt off with `cut` (the
/// daemon stopped or killed), restarts the daemon and returns the job once it has succeeded,
/// with its runs' outcomes.
fn flaky_job_across_a_restart(d: &mut Daemon, cut: fn(&mut Daemon)) -> (Value, Vec<String>) {
    let script = flaky_script(d);
    let id = d.add(&[
        "--retries",
        "1",
        "--backoff",
        "200ms",
        "--shell",
        "--",
        &script,
    ]);
    wait_until(T, "the first attempt", || (starts(d) == 1).then_some(()));
    wait_until(T, "the pid", || d.show(id)["runs"][0]["pid"].as_u64());
    cut(d);
    d.restart();
    let job = d.wait_state(id, "succeeded", T);
    let outcomes = job["runs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["outcome"].as_str().unwrap().to_owned())
        .collect();
    (job, outcomes)
}

#[test]
fn a_run_interrupted_by_sigterm_is_retried_after_the_restart() {
    let mut d = Daemon::start_with(&["--stop-grace", "1s"]);
    let (job, outcomes) = flaky_job_across_a_restart(&mut d, |d| {
        d.stop();
    });
    let runs = job["runs"].as_array().unwrap();
    assert_eq!(outcomes, ["interrupted", "exited"], "{job:#}");
    assert_eq!(runs[1]["attempt"], 2);
    assert_eq!(starts(&d), runs.len(), "every start is in the history");
}

#[test]
fn a_run_cut_off_by_sigkill_is_lost_and_retried_and_every_start_is_in_the_history() {
    let mut d = Daemon::start();
    let (job, outcomes) = flaky_job_across_a_restart(&mut d, Daemon::kill);
    let runs = job["runs"].as_array().unwrap();
    assert_eq!(outcomes, ["lost", "exited"], "{job:#}");
    assert_eq!(
        starts(&d),
        runs.len(),
        "no job ran without its run in the history"
    );
    // The orphan of the first attempt outlived the daemon; end it.
    let orphan: u32 = std::fs::read_to_string(d.dir.path().join("pid"))
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    if alive(orphan) {
        signal(orphan, libc::SIGKILL);
    }
}

#[test]
fn a_users_job_runs_with_that_users_groups() {
    if !is_root() {
        eprintln!("SKIPPED a_users_job_runs_with_that_users_groups: needs root to create users");
        return;
    }
    let ann = TestUser::create("grp");
    let group = format!("ct{}-extra", std::process::id());
    let status = Command::new("groupadd").arg(&group).status().unwrap();
    assert!(status.success());
    let status = Command::new("usermod")
        .args(["-aG", &group, &ann.name])
        .status()
        .unwrap();
    assert!(status.success());
    let extra = nix::unistd::Group::from_name(&group)
        .unwrap()
        .unwrap()
        .gid
        .as_raw();
    let d = Daemon::start_with(&["--socket-mode", "0666"]);
    let out = ann.ctl(
        &d,
        &["--json", "add", "--wait", "--shell", "--", "id -u; id -G"],
    );
    let _ = Command::new("groupdel").arg(&group).status();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let waited: Value = serde_json::from_slice(&out.stdout).unwrap();
    let job = waited["id"].as_u64().unwrap();
    let printed = d.ctl_ok(&["logs", &job.to_string()]);
    let mut lines = printed.lines();
    assert_eq!(lines.next().unwrap(), ann.uid.to_string());
    let groups: Vec<u32> = lines
        .next()
        .unwrap()
        .split_whitespace()
        .map(|g| g.parse().unwrap())
        .collect();
    assert!(
        groups.contains(&extra),
        "supplementary group {extra} missing from {groups:?}"
    );
}

/// The scheduling policy (`SCHED_OTHER` 0, `SCHED_RR` 2) and niceness in a `/proc/.../stat` line.
fn policy_and_nice(stat: &str) -> (u64, i64) {
    // Fields after the command's closing parenthesis start at field 3 (state).
    let rest: Vec<&str> = stat[stat.rfind(')').expect("a stat line") + 2..]
        .split_whitespace()
        .collect();
    (rest[41 - 3].parse().unwrap(), rest[19 - 3].parse().unwrap())
}

/// Each of chimed's threads by name, with its policy and niceness.
fn threads(pid: u32) -> Vec<(String, u64, i64)> {
    std::fs::read_dir(format!("/proc/{pid}/task"))
        .unwrap()
        .filter_map(|task| {
            let dir = task.ok()?.path();
            let name = std::fs::read_to_string(dir.join("comm")).ok()?;
            let (policy, nice) = policy_and_nice(&std::fs::read_to_string(dir.join("stat")).ok()?);
            Some((name.trim().to_owned(), policy, nice))
        })
        .collect()
}

/// Every thread of chimed `pid`, the engine's among them, is under `SCHED_OTHER`.
fn assert_every_thread_normal(pid: u32) {
    let all = threads(pid);
    assert!(all.iter().all(|(_, policy, _)| *policy == 0), "{all:?}");
    assert!(
        all.iter().any(|(name, _, _)| name == "chimed-engine"),
        "{all:?}"
    );
}

/// A job's process reports its own scheduling: `(policy, nice)`.
fn jobs_scheduling(d: &Daemon) -> (u64, i64) {
    let id = d.add(&["--", "cat", "/proc/self/stat"]);
    d.wait_state(id, "succeeded", T);
    policy_and_nice(&d.ctl_ok(&["logs", &id.to_string()]))
}

/// By default the engine thread waits for due times under `SCHED_RR` (so that timers fire on
/// time while the CPUs are busy); no other thread does, and nothing a job runs inherits it.
#[test]
fn only_the_engine_thread_is_realtime_and_jobs_run_normally() {
    if !is_root() {
        skipped(
            "only_the_engine_thread_is_realtime_and_jobs_run_normally",
            "SCHED_RR needs root",
        );
        return;
    }
    let d = Daemon::start();
    let status = d.ctl_json(&["status"]);
    let described = status["engine_priority"].as_str().unwrap();
    assert!(described.starts_with("realtime"), "{status:#}");
    assert_eq!(
        jobs_scheduling(&d),
        (0, 0),
        "a job runs under SCHED_OTHER at nice 0"
    );
    // Once idle, the engine waits for the clock under SCHED_RR, and it is the only thread that
    // ever does.
    let all = wait_until(T, "the idle engine thread under SCHED_RR", || {
        let all = threads(d.pid());
        all.iter()
            .any(|(name, policy, _)| name == "chimed-engine" && *policy == 2)
            .then_some(all)
    });
    let realtime: Vec<&str> = all
        .iter()
        .filter(|(_, policy, _)| *policy != 0)
        .map(|(name, _, _)| name.as_str())
        .collect();
    assert_eq!(realtime, ["chimed-engine"], "threads: {all:?}");
}

#[test]
fn engine_priority_normal_keeps_every_thread_normal() {
    let d = Daemon::start_with(&["--engine-priority", "normal"]);
    let status = d.ctl_json(&["status"]);
    assert!(
        status["engine_priority"]
            .as_str()
            .unwrap()
            .starts_with("normal (engine_priority"),
        "{status:#}"
    );
    assert_every_thread_normal(d.pid());
    assert_eq!(jobs_scheduling(&d), (0, 0));
}

/// A chimed without the privilege (a user's own, no RLIMIT_RTPRIO) keeps its engine thread
/// under the normal scheduler, serves as usual, and says why in `status`.
#[test]
fn a_users_chimed_is_refused_realtime_and_says_so() {
    let test = "a_users_chimed_is_refused_realtime_and_says_so";
    if !is_root() {
        skipped(test, "creating a user needs root");
        return;
    }
    use nix::sys::resource::{Resource, getrlimit};
    if getrlimit(Resource::RLIMIT_RTPRIO).is_ok_and(|(soft, _)| soft > 0) {
        skipped(
            test,
            "RLIMIT_RTPRIO is above 0 here, so a user may use SCHED_RR",
        );
        return;
    }
    let user = TestUser::create("rtu");
    let d = Daemon::start_as(&user, &[]);
    let out = user.ctl(&d, &["--json", "status"]);
    assert!(out.status.success(), "{out:?}\n{}", d.log());
    let status: Value = serde_json::from_slice(&out.stdout).unwrap();
    let described = status["engine_priority"].as_str().unwrap();
    assert!(
        described.starts_with("normal: realtime was refused"),
        "{described}"
    );
    assert_every_thread_normal(d.pid());
    // It serves as usual.
    let out = user.ctl(&d, &["add", "--", "true"]);
    assert!(out.status.success(), "{out:?}\n{}", d.log());
}
