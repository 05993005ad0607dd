//! Containment (issue 12): every run in a cgroup of its own, ended as a whole.
//!
//! A job that leaves its process group with `setsid` is still in its run's cgroup, so a
//! timeout, a cancel and the main process's own end take it too; a run that was running when
//! chimed was SIGKILLed is ended before its retry starts, which the job checks itself with a
//! lock its processes hold. Where chimed has no cgroup subtree (not root, no cgroup v2), these
//! tests say SKIPPED and why.

use chime_tests::*;
use serde_json::Value;
use std::path::Path;
use std::time::Duration;

const T: Duration = Duration::from_secs(30);

/// chimed's containment as `status --json` reports it; `None` (and a SKIPPED line) when runs
/// are not contained here.
fn contained(d: &Daemon, test: &str) -> Option<Value> {
    let status = d.ctl_json(&["status"]);
    let containment = status["containment"].clone();
    if containment["mode"] == "off" {
        skipped(
            test,
            &format!(
                "chimed has no cgroup subtree here: {}",
                containment["description"]
            ),
        );
        return None;
    }
    Some(containment)
}

/// Whether `pid` is a live process (not a zombie) running `marker` in its command line: the
/// check cannot be fooled by the pid's reuse.
fn running(pid: u32, marker: &str) -> bool {
    let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
        return false;
    };
    let state = stat.rsplit_once(") ").map(|(_, rest)| rest.chars().next());
    if state == Some(Some('Z')) {
        return false;
    }
    std::fs::read(format!("/proc/{pid}/cmdline"))
        .map(|c| {
            String::from_utf8_lossy(&c)
                .replace('\0', " ")
                .contains(marker)
        })
        .unwrap_or(false)
}

/// A shell script that starts `sleep SECONDS` in a session of its own (out of its process
/// group), writes that sleep's pid to `pidfile`, then runs `rest`.
fn escaping(pidfile: &Path, seconds: u32, rest: &str) -> String {
    format!(
        "setsid sleep {seconds} >/dev/null 2>&1 </dev/null & echo $! > {p}.tmp && mv {p}.tmp {p}; {rest}",
        p = pidfile.display()
    )
}

/// The run a cgroup serves or served last, from its label (`user.chime.run`).
fn label(dir: &Path) -> Option<u64> {
    let mut buf = [0u8; 32];
    let n = rustix::fs::getxattr(dir, "user.chime.run", &mut buf).ok()?;
    std::str::from_utf8(&buf[..n]).ok()?.parse().ok()
}

/// The cgroup labelled with `run` under chimed's subtree (`<base>/u<uid>/c<n>`).
fn cgroup_of(containment: &Value, uid: u32, run: u64) -> Option<std::path::PathBuf> {
    let user = Path::new(containment["cgroup"].as_str()?).join(format!("u{uid}"));
    std::fs::read_dir(user)
        .ok()?
        .flatten()
        .map(|e| e.path())
        .find(|dir| label(dir) == Some(run))
}

fn escaped_pid(pidfile: &Path) -> u32 {
    wait_until(T, "the job to write its escaped child's pid", || {
        std::fs::read_to_string(pidfile).ok()?.trim().parse().ok()
    })
}

#[test]
fn a_run_is_in_a_cgroup_of_its_own() {
    let mut d = Daemon::start();
    let Some(containment) = contained(&d, "a_run_is_in_a_cgroup_of_its_own") else {
        return;
    };
    let id = d.add(&["--shell", "--", "cat /proc/self/cgroup"]);
    let job = d.wait_final(id, T);
    assert_eq!(job["state"], "succeeded", "{job}");
    let run = job["runs"][0]["run_id"].as_u64().unwrap();
    let out = d.ctl_ok(&["logs", &id.to_string()]);
    let own = out
        .lines()
        .find_map(|l| l.strip_prefix("0::"))
        .unwrap_or_else(|| panic!("no cgroup v2 line in {out}"));
    let base = containment["cgroup"].as_str().unwrap();
    let (subtree, name) = own
        .rsplit_once("/u0/")
        .unwrap_or_else(|| panic!("run {run} ran in {own}, not in a cgroup of uid 0's runs"));
    assert!(
        base.ends_with(subtree) && name.starts_with('c'),
        "run {run} ran in {own}, not under chimed's subtree {base}"
    );
    let dir = Path::new(base).join("u0").join(name);
    let per_run = containment["controllers"]
        .as_array()
        .is_some_and(|c| c.iter().any(|x| x == "memory"));
    if per_run {
        // With the memory controller a cgroup serves one run and is removed after it, on a
        // thread of its own: it is gone, or still there, empty and labelled with its run.
        if let Ok(events) = std::fs::read_to_string(dir.join("cgroup.events")) {
            assert!(
                events.contains("populated 0"),
                "{}: {events}",
                dir.display()
            );
        }
        assert!(
            label(&dir) == Some(run) || !dir.exists(),
            "{} is left labelled {:?}, not with its run {run}",
            dir.display(),
            label(&dir)
        );
    } else {
        // Labelled with its run, and empty once the run ended (kept for the next run).
        assert_eq!(label(&dir), Some(run), "{}", dir.display());
        let events = std::fs::read_to_string(dir.join("cgroup.events")).unwrap();
        assert!(events.contains("populated 0"), "{events}");
    }
    // A clean stop removes what chimed made.
    d.stop();
    assert!(
        !Path::new(base).exists(),
        "{base} is left after a clean stop"
    );
}

#[test]
fn a_setsid_child_is_ended_by_the_timeout() {
    let d = Daemon::start();
    if contained(&d, "a_setsid_child_is_ended_by_the_timeout").is_none() {
        return;
    }
    let pidfile = d.dir.path().join("escaped.pid");
    let id = d.add(&[
        "--timeout",
        "1s",
        "--kill-grace",
        "1s",
        "--shell",
        "--",
        &escaping(&pidfile, 3101, "sleep 1000"),
    ]);
    let escaped = escaped_pid(&pidfile);
    let job = d.wait_final(id, T);
    assert_eq!(job["runs"][0]["outcome"], "timed_out", "{job}");
    // The run's end is recorded once its cgroup is empty.
    assert!(
        !running(escaped, "sleep 3101"),
        "the setsid'd sleep {escaped} outlived its run's timeout"
    );
}

/// A cgroup ended with `cgroup.kill` serves no other run: on this kernel a process started
/// into a cgroup killed before is killed at once. Runs after a killed one succeed.
#[test]
fn the_run_after_a_killed_one_runs() {
    let d = Daemon::start();
    if contained(&d, "the_run_after_a_killed_one_runs").is_none() {
        return;
    }
    let pidfile = d.dir.path().join("escaped.pid");
    let killed = d.add(&[
        "--timeout",
        "500ms",
        "--kill-grace",
        "500ms",
        "--shell",
        "--",
        &escaping(&pidfile, 3109, "trap '' TERM; sleep 1000"),
    ]);
    let job = d.wait_final(killed, T);
    assert_eq!(job["runs"][0]["outcome"], "timed_out", "{job}");
    for _ in 0..3 {
        let next = d.add(&["--", "/bin/true"]);
        let job = d.wait_final(next, T);
        assert_eq!(job["state"], "succeeded", "{job}");
    }
}

#[test]
fn a_setsid_child_is_ended_by_cancel() {
    let d = Daemon::start();
    if contained(&d, "a_setsid_child_is_ended_by_cancel").is_none() {
        return;
    }
    let pidfile = d.dir.path().join("escaped.pid");
    let id = d.add(&[
        "--kill-grace",
        "1s",
        "--shell",
        "--",
        &escaping(&pidfile, 3102, "sleep 1000"),
    ]);
    let escaped = escaped_pid(&pidfile);
    assert!(running(escaped, "sleep 3102"));
    d.ctl_ok(&["cancel", &id.to_string()]);
    let job = d.wait_final(id, T);
    assert_eq!(job["state"], "cancelled", "{job}");
    wait_until(T, "the cancelled run's end to be recorded", || {
        let job = d.show(id);
        job["runs"][0]["finished_at"].is_string().then_some(())
    });
    assert!(
        !running(escaped, "sleep 3102"),
        "the setsid'd sleep {escaped} outlived its cancelled run"
    );
}

#[test]
fn a_setsid_child_is_ended_when_the_main_process_exits() {
    let d = Daemon::start();
    if contained(&d, "a_setsid_child_is_ended_when_the_main_process_exits").is_none() {
        return;
    }
    let pidfile = d.dir.path().join("escaped.pid");
    let id = d.add(&[
        "--kill-grace",
        "1s",
        "--shell",
        "--",
        &escaping(&pidfile, 3103, "echo done"),
    ]);
    let job = d.wait_final(id, T);
    assert_eq!(job["state"], "succeeded", "{job}");
    let escaped = escaped_pid(&pidfile);
    assert!(
        !running(escaped, "sleep 3103"),
        "the setsid'd sleep {escaped} outlived its run's main process"
    );
}

/// `--overlap replace`: the next occurrence ends the running one as a whole, what it started in
/// a session of its own too.
#[test]
fn a_setsid_child_is_ended_when_its_run_is_replaced() {
    let d = Daemon::start();
    if contained(&d, "a_setsid_child_is_ended_when_its_run_is_replaced").is_none() {
        return;
    }
    let dir = d.dir.path().to_owned();
    // Each run writes its escaped child's pid to a file of its own (its attempt's start time).
    let script = format!(
        "setsid sleep 3107 >/dev/null 2>&1 </dev/null & echo $! > {dir}/escaped.$$; sleep 1000",
        dir = dir.display()
    );
    let id = d.add(&[
        "--every",
        "1s",
        "--overlap",
        "replace",
        "--kill-grace",
        "1s",
        "--shell",
        "--",
        &script,
    ]);
    let escaped = |dir: &Path| -> Vec<u32> {
        std::fs::read_dir(dir)
            .unwrap()
            .flatten()
            .filter(|e| e.file_name().to_string_lossy().starts_with("escaped."))
            .filter_map(|e| std::fs::read_to_string(e.path()).ok()?.trim().parse().ok())
            .collect()
    };
    // Two runs have started: the first was replaced by the second.
    let first = wait_until(T, "a second run to start", || {
        let pids = escaped(&dir);
        (pids.len() >= 2).then_some(pids)
    });
    d.ctl_ok(&["cancel", &id.to_string()]);
    d.wait_final(id, T);
    wait_until(T, "the last run's end to be recorded", || {
        let job = d.show(id);
        job["runs"]
            .as_array()?
            .iter()
            .all(|r| r["finished_at"].is_string())
            .then_some(())
    });
    for pid in first {
        assert!(
            !running(pid, "sleep 3107"),
            "the setsid'd sleep {pid} of a replaced run is still running"
        );
    }
}

/// Stopping chimed ends every run as a whole.
#[test]
fn a_setsid_child_is_ended_when_chimed_stops() {
    let mut d = Daemon::start();
    if contained(&d, "a_setsid_child_is_ended_when_chimed_stops").is_none() {
        return;
    }
    let pidfile = d.dir.path().join("escaped.pid");
    d.add(&[
        "--kill-grace",
        "1s",
        "--shell",
        "--",
        &escaping(&pidfile, 3108, "sleep 1000"),
    ]);
    let escaped = escaped_pid(&pidfile);
    d.stop();
    assert!(
        !running(escaped, "sleep 3108"),
        "the setsid'd sleep {escaped} outlived chimed's stop"
    );
}

/// chimed is SIGKILLed while a run (and what it started in a session of its own) runs. At the
/// restart, the run is recorded lost and retried; the retry must never run beside the first
/// copy. The job checks that itself: every process of a copy holds a lock on one file (the
/// setsid'd sleep inherits it), and a copy that cannot take the lock records a duplicate.
#[test]
fn a_run_left_by_a_killed_chimed_is_ended_before_its_retry() {
    let mut d = Daemon::start();
    if contained(
        &d,
        "a_run_left_by_a_killed_chimed_is_ended_before_its_retry",
    )
    .is_none()
    {
        return;
    }
    let dir = d.dir.path().to_owned();
    let (lock, starts, dups) = (
        dir.join("copy.lock"),
        dir.join("starts"),
        dir.join("duplicates"),
    );
    let script = format!(
        "exec 9>{lock}; if ! flock -n 9; then echo duplicate >> {dups}; exit 3; fi; \
         echo $$ >> {starts}; setsid sleep 3104 >/dev/null 2>&1 </dev/null & sleep 3105",
        lock = lock.display(),
        dups = dups.display(),
        starts = starts.display()
    );
    let id = d.add(&[
        "--retries",
        "2",
        "--backoff",
        "1s",
        "--shell",
        "--",
        &script,
    ]);
    let lines = |path: &Path| {
        std::fs::read_to_string(path)
            .map(|t| t.lines().count())
            .unwrap_or(0)
    };
    wait_until(T, "the first copy to start", || {
        (lines(&starts) == 1).then_some(())
    });
    d.kill();
    d.restart();
    wait_until(
        T,
        "the retry to start (or to find the first copy running)",
        || (lines(&starts) == 2 || dups.exists()).then_some(()),
    );
    assert!(
        !dups.exists(),
        "the retry ran beside the first copy: {}",
        std::fs::read_to_string(&dups).unwrap_or_default()
    );
    let job = d.show(id);
    let first = job["runs"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["attempt"] == 1)
        .unwrap_or_else(|| panic!("no first attempt in {job}"));
    assert_eq!(first["outcome"], "lost", "{job}");
    // sh, the setsid'd sleep and sleep 3105: in the run's history.
    assert!(
        first["ended_at_start"].as_u64().is_some_and(|n| n >= 2),
        "the lost run does not record what was ended of it: {first}"
    );
    assert!(
        d.log().contains("ended what a lost run left running"),
        "the restart does not say it ended the lost run's processes"
    );
    d.ctl_ok(&["cancel", &id.to_string()]);
    d.wait_final(id, T);
}

#[test]
fn without_cgroups_status_and_the_log_say_so() {
    let d = Daemon::start_with(&["--no-cgroups"]);
    let status = d.ctl_json(&["status"]);
    assert_eq!(status["containment"]["mode"], "off", "{status}");
    assert!(
        status["containment"]["description"]
            .as_str()
            .unwrap()
            .contains("--no-cgroups"),
        "{status}"
    );
    let human = d.ctl_ok(&["status"]);
    assert!(human.contains("runs are process groups"), "{human}");
    assert_eq!(
        d.log().matches("runs are not contained").count(),
        1,
        "the log says it once: {}",
        d.log()
    );
}

/// A job starts with every signal at its default disposition and none blocked, as systemd starts
/// a service, whatever chimed itself ignores, blocks or was started with (a Rust program ignores
/// SIGPIPE, and a job that inherited that would not end when its reader goes; glibc's sigaction
/// cannot reset signals 32 and 33, which chimed may inherit ignored): with a cgroup per run and
/// without one (`--no-cgroups`), the two ways chimed starts a run. The job's shell reports its
/// own masks (a non-interactive sh ignores and blocks nothing of itself, so what it reports is
/// what chimed gave it), then a program it starts reports its own; a program chimed starts
/// directly reports its own too.
#[test]
fn a_job_starts_with_no_signal_ignored_or_blocked() {
    let zero = "0000000000000000";
    for args in [&[][..], &["--no-cgroups"][..]] {
        let d = Daemon::start_with(args);
        let mode = d.ctl_json(&["status"])["containment"]["mode"].clone();
        // The shell reads its own status with a builtin: no process of its own in between.
        let shell = d.add(&[
            "--shell",
            "--",
            "while read -r line; do case $line in SigIgn*|SigBlk*) echo \"sh $line\";; esac; \
             done </proc/self/status; grep -E '^Sig(Ign|Blk)' /proc/self/status",
        ]);
        let direct = d.add(&["--", "grep", "-E", "^Sig(Ign|Blk)", "/proc/self/status"]);
        for (id, expected) in [
            (
                shell,
                format!(
                    "sh SigBlk:\t{zero}\nsh SigIgn:\t{zero}\nSigBlk:\t{zero}\nSigIgn:\t{zero}\n"
                ),
            ),
            (direct, format!("SigBlk:\t{zero}\nSigIgn:\t{zero}\n")),
        ] {
            let job = d.wait_final(id, T);
            assert_eq!(job["state"], "succeeded", "containment {mode}: {job}");
            let said = d.ctl_ok(&["logs", &id.to_string()]);
            assert_eq!(
                said, expected,
                "containment {mode}: job {id} ({}) started with signals ignored or blocked \
                 (hex masks: bit n-1 is signal n, 0x1000 SIGPIPE)",
                job["command"]
            );
        }
    }
}

/// `--keep-children`: what the main process leaves running is not ended with the run, and stays
/// in the run's cgroup (still contained) until it ends.
#[test]
fn keep_children_leaves_a_daemon_running_in_its_cgroup() {
    let d = Daemon::start();
    let Some(containment) = contained(&d, "keep_children_leaves_a_daemon_running_in_its_cgroup")
    else {
        return;
    };
    let pidfile = d.dir.path().join("escaped.pid");
    let id = d.add(&[
        "--keep-children",
        "--shell",
        "--",
        &escaping(&pidfile, 3106, "echo started"),
    ]);
    let job = d.wait_final(id, T);
    assert_eq!(job["state"], "succeeded", "{job}");
    assert_eq!(job["keep_children"], true, "{job}");
    let escaped = escaped_pid(&pidfile);
    assert!(
        running(escaped, "sleep 3106"),
        "the kept child {escaped} was ended"
    );
    let run = job["runs"][0]["run_id"].as_u64().unwrap();
    let procs = cgroup_of(&containment, 0, run)
        .unwrap_or_else(|| panic!("no cgroup labelled with run {run} in {containment}"))
        .join("cgroup.procs");
    let inside = std::fs::read_to_string(&procs).unwrap_or_default();
    assert!(
        inside.lines().any(|l| l.trim() == escaped.to_string()),
        "the kept child {escaped} is not in its run's cgroup {}: {inside:?}",
        procs.display()
    );
    signal(escaped, libc::SIGKILL);
}

/// A CPU-bound job of known cost: the CPU time recorded for its run (from its cgroup) is within
/// 10% of what the job itself says it burned (the shell's `times`). Another CPU-bound run goes
/// first, so that the measured run reuses its cgroup: a run's figures are its own.
#[test]
fn a_runs_cpu_time_is_what_it_burned() {
    let d = Daemon::start();
    if contained(&d, "a_runs_cpu_time_is_what_it_burned").is_none() {
        return;
    }
    let before = d.add(&[
        "--shell",
        "--",
        "i=0; while [ $i -lt 500000 ]; do i=$((i+1)); done",
    ]);
    d.wait_final(before, Duration::from_secs(120));
    let id = d.add(&[
        "--shell",
        "--",
        "i=0; while [ $i -lt 1500000 ]; do i=$((i+1)); done; times",
    ]);
    let job = d.wait_final(id, Duration::from_secs(120));
    assert_eq!(job["state"], "succeeded", "{job}");
    // dash: "0m1.300000s 0m0.000000s" for the shell, then the same for its children.
    let said = d.ctl_ok(&["logs", &id.to_string()]);
    let burned: f64 = said
        .split_whitespace()
        .map(|t| {
            let (m, s) = t
                .trim_end_matches('s')
                .split_once('m')
                .unwrap_or_else(|| panic!("not a time from times: {t:?} in {said:?}"));
            m.parse::<f64>().unwrap() * 60.0 + s.parse::<f64>().unwrap()
        })
        .sum();
    let usage = &job["runs"][0]["usage"];
    let recorded = (usage["cpu_user_us"]
        .as_u64()
        .unwrap_or_else(|| panic!("no usage: {job}"))
        + usage["cpu_system_us"].as_u64().unwrap()) as f64
        / 1e6;
    assert!(
        burned > 0.2,
        "the loop burned only {burned} s: too little to compare"
    );
    assert!(
        (recorded - burned).abs() <= burned * 0.10,
        "recorded {recorded:.3} s of CPU, the job burned {burned:.3} s: {usage}"
    );
    let human = d.ctl_ok(&["show", &id.to_string()]);
    assert!(
        human.contains("cpu "),
        "show prints the run's cost: {human}"
    );
}

/// Limits hold where the host has their controllers: a run with `--tasks-max 8` cannot have a
/// ninth process (its cgroup says so while it runs: `pids.max` 8, no more than 8 tasks, forks
/// refused), and one with `--memory-max 32M` that takes more is recorded as `oom_killed`.
#[test]
fn limits_hold_where_the_controller_exists() {
    let d = Daemon::start();
    let Some(containment) = contained(&d, "limits_hold_where_the_controller_exists") else {
        return;
    };
    let has = |name: &str| {
        containment["controllers"]
            .as_array()
            .is_some_and(|c| c.iter().any(|x| x == name))
    };
    if has("pids") {
        // A shell in the background starts 20 sleeps, as many as the limit lets it (a refused
        // fork may end it, or make it retry: either way it forks no more than it may), while
        // the run's main process becomes a sleep, which needs no fork.
        let script = "sh -c 'i=0; while [ $i -lt 20 ]; do sleep 1000 >/dev/null 2>&1 & i=$((i+1)); done' \
                      >/dev/null 2>&1 & exec sleep 1000";
        let id = d.add(&["--tasks-max", "8", "--shell", "--", script]);
        let job = d.wait_state(id, "running", T);
        let run = job["runs"][0]["run_id"]
            .as_u64()
            .unwrap_or_else(|| panic!("no run id in {job}"));
        let dir = wait_until(T, &format!("the cgroup labelled with run {run}"), || {
            cgroup_of(&containment, 0, run)
        });
        let read = |file: &str| std::fs::read_to_string(dir.join(file)).ok();
        let refused = |events: &str| -> u64 {
            events
                .lines()
                .find_map(|l| l.strip_prefix("max "))
                .and_then(|n| n.trim().parse().ok())
                .unwrap_or(0)
        };
        // The tasks in the run's cgroup (which is gone if the run ended: then the job says why).
        let tasks = || -> u64 {
            read("pids.current")
                .and_then(|t| t.trim().parse().ok())
                .unwrap_or_else(|| {
                    panic!(
                        "cannot read pids.current of {}: {}",
                        dir.display(),
                        d.show(id)
                    )
                })
        };
        // Until the limit is met: a fork was refused (pids.events, where the kernel has it), or
        // 8 tasks; or until the run has more than 8, which fails below.
        wait_until(
            T,
            &format!(
                "the run's forks to meet --tasks-max 8 in {} (a refused fork in pids.events, or 8 tasks)",
                dir.display()
            ),
            || {
                let current = tasks();
                let met = match read("pids.events") {
                    Some(events) => refused(&events) > 0,
                    None => current >= 8,
                };
                (met || current > 8).then_some(())
            },
        );
        assert_eq!(
            read("pids.max").as_deref().map(str::trim),
            Some("8"),
            "pids.max of {}",
            dir.display()
        );
        let current = tasks();
        assert!(
            current <= 8,
            "the run has {current} tasks with --tasks-max 8 in {}",
            dir.display()
        );
        if let Some(events) = read("pids.events") {
            assert!(
                refused(&events) > 0,
                "no fork was refused in {}: pids.events {events:?}",
                dir.display()
            );
        }
        d.ctl_ok(&["cancel", &id.to_string()]);
        let job = d.wait_final(id, T);
        assert_eq!(job["state"], "cancelled", "{job}");
    } else {
        skipped(
            "limits_hold_where_the_controller_exists (tasks)",
            "the runs' cgroups have no pids controller on this host",
        );
    }
    if has("memory") {
        // tail keeps the last 100 MB of what it reads (from a pipe: of a file it would seek).
        let id = d.add(&[
            "--memory-max",
            "32M",
            "--shell",
            "--",
            "head -c 200000000 /dev/zero | tail -c 100000000 >/dev/null",
        ]);
        let job = d.wait_final(id, T);
        assert_eq!(job["runs"][0]["outcome"], "oom_killed", "{job}");
    } else {
        skipped(
            "limits_hold_where_the_controller_exists (memory)",
            "the runs' cgroups have no memory controller on this host",
        );
    }
}

/// A user's run, under root's chimed, sits in that user's cgroup (`u<uid>`), and the job, as
/// the real unprivileged user it runs as, can neither leave its cgroup, nor end it, nor make
/// cgroups below it: the cgroups are root's.
#[test]
fn a_users_run_cannot_leave_or_rearrange_its_cgroup() {
    if !is_root() {
        skipped(
            "a_users_run_cannot_leave_or_rearrange_its_cgroup",
            "needs root to create a user",
        );
        return;
    }
    // Other users reach the socket.
    let d = Daemon::start_with(&["--socket-mode", "0666"]);
    let Some(containment) = contained(&d, "a_users_run_cannot_leave_or_rearrange_its_cgroup")
    else {
        return;
    };
    let ann = TestUser::create("cg");
    let base = containment["cgroup"].as_str().unwrap().to_owned();
    // The run's own cgroup directory is the mount point plus its path in /proc/self/cgroup.
    let mount = chime_tests::cgroup2_mount().expect("a cgroup v2 mount, since runs are contained");
    let script = format!(
        "cg=$(sed -n 's/^0:://p' /proc/self/cgroup); own={mount}$cg; echo \"in $cg\"; \
         try() {{ if sh -c \"$1\" 2>/dev/null; then echo \"$2 allowed\"; else echo \"$2 refused\"; fi; }}; \
         try \"echo $$ > {base}/u{uid}/cgroup.procs\" leave; \
         try \"echo $$ > {mount}/cgroup.procs\" escape; \
         try \"echo 1 > $own/cgroup.kill\" kill; \
         try \"mkdir $own/sub\" mkdir; \
         true",
        mount = mount.display(),
        uid = ann.uid,
    );
    let id = ann.add(&d, &["--shell", "--", &script]);
    let job = d.wait_final(id, T);
    assert_eq!(job["state"], "succeeded", "{job}");
    let said = d.ctl_ok(&["logs", &id.to_string()]);
    let within = format!("/u{}/c", ann.uid);
    assert!(
        said.lines().next().is_some_and(|l| l.contains(&within)),
        "ann's run is not in her cgroup ({within}...): {said}"
    );
    for what in ["leave", "escape", "kill", "mkdir"] {
        assert!(
            said.contains(&format!("{what} refused")),
            "ann's job could {what}: {said}"
        );
    }
}
