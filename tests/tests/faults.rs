//! Faults a host really has (issue 10): exhausted descriptors, a full disk, damage, huge pages.
//! Each test is the fault; each fails on a chimed that does not survive it.

use chime_tests::{Daemon, ms, signal, wait_until};
use std::time::Duration;

/// Issue 10, item 2: at a low open files limit, a burst of runs used to fail some for good
/// ("Too many open files"). A run that cannot get descriptors now waits and starts once some
/// are free.
#[test]
fn a_burst_beyond_the_open_files_limit_runs_every_job() {
    let mut d = Daemon::prepare(&[]);
    d.launch_command(d.command_after("ulimit -n 128")).unwrap();
    // Sixty-four at once need about 384 descriptors; chimed has 128.
    let ids: Vec<u64> = (0..200)
        .map(|_| d.add(&["--", "/bin/sleep", "0.5"]))
        .collect();
    wait_until(Duration::from_secs(180), "200 jobs to finish", || {
        ids.iter()
            .all(|id| {
                matches!(
                    d.show(*id)["state"].as_str(),
                    Some("succeeded" | "failed" | "cancelled")
                )
            })
            .then_some(())
    });
    let failed: Vec<(u64, serde_json::Value)> = ids
        .iter()
        .map(|id| (*id, d.show(*id)))
        .filter(|(_, job)| job["state"] != "succeeded")
        .collect();
    assert!(
        failed.is_empty(),
        "{} of 200 jobs did not succeed, e.g. {}",
        failed.len(),
        failed[0].1["runs"]
    );
}

/// A small filesystem of its own (tmpfs), unmounted when dropped.
struct SmallDisk {
    dir: std::path::PathBuf,
}

impl SmallDisk {
    /// Mounts a tmpfs of `size` at `dir` (created, mode 0700); `None` when this machine does
    /// not let the test mount one.
    fn mount(dir: &std::path::Path, size: &str) -> Option<Self> {
        std::fs::create_dir_all(dir).ok()?;
        let status = std::process::Command::new("mount")
            .args([
                "-t",
                "tmpfs",
                "-o",
                &format!("size={size},mode=0700"),
                "tmpfs",
            ])
            .arg(dir)
            .status()
            .ok()?;
        status.success().then(|| Self { dir: dir.into() })
    }

    /// Fills it up with one file; returns that file.
    fn fill(&self) -> std::path::PathBuf {
        let filler = self.dir.join("filler");
        let _ = std::process::Command::new("dd")
            .args(["if=/dev/zero", "bs=64k"])
            .arg(format!("of={}", filler.display()))
            .stderr(std::process::Stdio::null())
            .status();
        filler
    }
}

impl Drop for SmallDisk {
    fn drop(&mut self) {
        let _ = std::process::Command::new("umount")
            .arg("-l")
            .arg(&self.dir)
            .status();
    }
}

/// Adds jobs with a 64 KiB environment until chimed refuses one; returns the ids acknowledged
/// and the refusal.
fn add_until_refused(d: &Daemon) -> (Vec<u64>, String) {
    let big = format!("PAD={}", "x".repeat(64 * 1024));
    let mut acked = Vec::new();
    for _ in 0..1000 {
        let out = d.ctl(&[
            "--json",
            "add",
            "--in",
            "1h",
            "--env",
            &big,
            "--",
            "/bin/true",
        ]);
        if !out.status.success() {
            return (acked, String::from_utf8_lossy(&out.stderr).into_owned());
        }
        let added: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        acked.push(added["id"].as_u64().unwrap());
    }
    panic!("1000 adds of 64 KiB fitted on a full disk:\n{}", d.log());
}

/// Issue 10, item 1: a full disk used to brick chimed until a restart (redb refuses every commit
/// after one failed, even once space is back). Now chimed says the disk is full, shows it, records
/// a run that ended meanwhile once it can, accepts changes again by itself once space is freed,
/// stops within its grace with a run in flight, and loses nothing acknowledged.
#[test]
fn a_full_disk_is_survived_without_a_restart() {
    let test = "a_full_disk_is_survived_without_a_restart";
    let mut d = Daemon::prepare(&["--stop-grace", "2s"]);
    let Some(disk) = SmallDisk::mount(&d.state_dir, "16m") else {
        chime_tests::skipped(test, "cannot mount a tmpfs here (needs root)");
        return;
    };
    d.launch().unwrap();
    let mut acked = vec![d.add(&["--in", "1h", "--", "/bin/true"])];
    let running = d.add(&["--shell", "--", "sleep 2; echo done"]);
    d.wait_state(running, "running", Duration::from_secs(20));

    let filler = disk.fill();
    let (more, refusal) = add_until_refused(&d);
    acked.extend(more);
    assert!(
        refusal.contains("is full") && refusal.contains("nothing was changed"),
        "{refusal}"
    );
    let status = d.ctl_json(&["status"]);
    assert!(
        status["storage_fault"]
            .as_str()
            .is_some_and(|f| f.contains("is full")),
        "{status}"
    );
    assert!(
        d.ctl_ok(&["metrics"]).contains("chime_storage_fault 1"),
        "the metrics do not show the fault"
    );
    // The running job ends while nothing can be written.
    std::thread::sleep(Duration::from_secs(3));

    // Space comes back: chimed goes on by itself, and records how the run ended.
    std::fs::remove_file(&filler).unwrap();
    wait_until(
        Duration::from_secs(30),
        "chimed to take changes again",
        || {
            let out = d.ctl(&["--json", "add", "--in", "1h", "--", "/bin/true"]);
            out.status.success().then(|| {
                let added: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
                acked.push(added["id"].as_u64().unwrap());
            })
        },
    );
    let ended = d.wait_state(running, "succeeded", Duration::from_secs(30));
    assert_eq!(ended["runs"][0]["exit_code"], 0, "{ended}");
    assert!(d.ctl_json(&["status"])["storage_fault"].is_null());

    // A stop with a run in flight while the disk is full completes.
    let sleeper = d.add(&["--", "/bin/sleep", "300"]);
    acked.push(sleeper);
    d.wait_state(sleeper, "running", Duration::from_secs(20));
    let filler = disk.fill();
    let _ = add_until_refused(&d);
    // Its stop grace is 2 s (and 5 s more to reap): well within systemd's TimeoutStopSec.
    let took = d.stop_within(Duration::from_secs(60));
    assert!(took < Duration::from_secs(30), "the stop took {took:?}");

    // Nothing acknowledged is lost.
    std::fs::remove_file(&filler).unwrap();
    d.restart();
    for id in &acked {
        let job = d.show(*id);
        assert_eq!(job["id"], *id, "job {id} was lost");
    }
    drop(d);
    drop(disk);
}

/// Issue 10, item 4: a crashed and then truncated database was refused, but the attempt to
/// repair it had changed a header byte, and the message ("failed to fill whole buffer") did not
/// say the file was damaged. A refused file is byte-for-byte as it was.
#[test]
fn a_truncated_database_is_refused_as_damaged_and_left_as_it_was() {
    let mut d = Daemon::start();
    for _ in 0..50 {
        d.add(&["--in", "1h", "--", "/bin/true"]);
    }
    d.kill();
    let db = d.state_dir.join("chime.redb");
    let len = std::fs::metadata(&db).unwrap().len();
    for cut in [len * 3 / 5, len / 3, 5000] {
        let file = std::fs::OpenOptions::new().write(true).open(&db).unwrap();
        file.set_len(cut).unwrap();
        drop(file);
        let before = std::fs::read(&db).unwrap();
        let err = d.launch().unwrap_err();
        assert!(
            err.contains("damaged") || err.contains("not a chime database"),
            "cut at {cut} of {len}: {err}"
        );
        assert!(!err.contains("failed to fill whole buffer"), "{err}");
        assert!(
            std::fs::read(&db).unwrap() == before,
            "cut at {cut} of {len}: the refused file changed"
        );
    }
}

/// Issue 10, item 5: a page of `ls` was built in full before it was refused as too large (300
/// jobs of 200 KB: 245 MB at the peak, and `chimectl ls` failed). Pages are bounded in bytes
/// too, and `ls` always works.
#[test]
fn ls_works_whatever_the_size_of_the_jobs() {
    let d = Daemon::start();
    // 200 KB each, in four variables (one argument may have at most 128 KiB).
    let pads: Vec<String> = (0..4)
        .map(|i| format!("PAD{i}={}", "x".repeat(50 * 1024)))
        .collect();
    let mut args = vec!["--in", "1h"];
    for pad in &pads {
        args.extend(["--env", pad.as_str()]);
    }
    args.extend(["--", "/bin/true"]);
    for _ in 0..300 {
        d.add(&args);
    }
    // One request gets a page cut short by its size, with where to go on.
    let mut raw = chime_tests::raw::Raw::handshaken(&d.socket);
    raw.request(
        1,
        chime_proto::Request::List(chime_proto::ListQuery {
            state: None,
            queue: None,
            name_prefix: None,
            after: None,
            limit: 1000,
        }),
    );
    let Some(chime_proto::ServerMessage::Reply(reply)) = raw.reply() else {
        panic!("no reply");
    };
    let Ok(chime_proto::Response::Jobs(page)) = reply.result else {
        panic!("ls was refused: {:?}", reply.result);
    };
    assert!(
        page.jobs.len() < 300 && page.next.is_some(),
        "{} jobs",
        page.jobs.len()
    );
    // chimectl goes on to the end of what was asked.
    let listed = d.ctl_json(&["ls"]);
    assert_eq!(listed["jobs"].as_array().unwrap().len(), 300);
    assert_eq!(
        d.ctl_ok(&["ls"]).lines().count(),
        301,
        "a header and 300 jobs"
    );
}

/// Issue 10, item 6: a run lost before its process started (opened ahead for a busy queue when
/// chimed was killed) used up a retry, so always-failing `--retries 2` jobs ran only twice. Each
/// attempt that ran counts; one lost before its start was recorded runs again as itself.
#[test]
fn runs_lost_before_they_started_use_up_no_retry() {
    let mut d = Daemon::start();
    d.ctl_ok(&["queue", "set", "q", "--parallel", "2"]);
    // Paused while the jobs are added, so that they come due at once: a backlog.
    d.ctl_ok(&["pause", "--queue", "q"]);
    let ran = d.dir.path().join("ran");
    let script = format!("echo \"$CHIME_JOB_ID\" >> {}; exit 1", ran.display());
    let ids: Vec<u64> = (0..150)
        .map(|_| {
            d.add(&[
                "--queue",
                "q",
                "--retries",
                "2",
                "--backoff",
                "50ms",
                "--",
                "/bin/sh",
                "-c",
                &script,
            ])
        })
        .collect();
    d.ctl_ok(&["resume", "--queue", "q"]);
    let executions = || std::fs::read_to_string(&ran).unwrap_or_default();
    // Killed twice while the quick queue has runs opened ahead of its two slots.
    for lines in [60, 200] {
        wait_until(
            Duration::from_secs(120),
            &format!("{lines} executions"),
            || (executions().lines().count() >= lines).then_some(()),
        );
        d.kill();
        d.restart();
    }
    wait_until(Duration::from_secs(300), "150 jobs to fail", || {
        ids.iter()
            .all(|id| d.show(*id)["state"] == "failed")
            .then_some(())
    });
    for id in &ids {
        let runs = d.show(*id)["runs"].clone();
        let beyond = runs
            .as_array()
            .unwrap()
            .iter()
            .any(|r| r["attempt"].as_u64() > Some(3));
        assert!(!beyond, "job {id} went beyond 3 attempts: {runs}");
    }
    let text = executions();
    let short: Vec<(u64, usize)> = ids
        .iter()
        .map(|id| {
            let id_text = id.to_string();
            (*id, text.lines().filter(|l| *l == id_text).count())
        })
        .filter(|(_, n)| *n < 3)
        .collect();
    assert!(
        short.is_empty(),
        "{} of 150 jobs with --retries 2 ran fewer than 3 times, e.g. job {} ran {} times: {}",
        short.len(),
        short[0].0,
        short[0].1,
        d.show(short[0].0)["runs"]
    );
}

/// Issue 10, item 6: after a stall (here chimed stopped for 10 s by SIGSTOP; a suspend or a
/// clock jump is the same) an every-second job ran eleven times back to back. What came due
/// during a stall is missed, as during a downtime, and the catch-up policy decides: `latest`
/// (the default) runs one of them, `skip` none.
#[test]
fn a_stall_meets_the_catch_up_policy_as_a_downtime_does() {
    let d = Daemon::start();
    let latest = d.add(&["--every", "1s", "--", "/bin/true"]);
    let skip = d.add(&["--every", "1s", "--catch-up", "skip", "--", "/bin/true"]);
    let runs = |id: u64| d.show(id)["runs"].as_array().unwrap().clone();
    wait_until(Duration::from_secs(30), "both jobs to run", || {
        (!runs(latest).is_empty() && !runs(skip).is_empty()).then_some(())
    });
    let stopped = now_ms();
    signal(d.pid(), libc::SIGSTOP);
    wait_until(Duration::from_secs(30), "10 s of stall", || {
        (now_ms() >= stopped + 10_000).then_some(())
    });
    let resumed = now_ms();
    signal(d.pid(), libc::SIGCONT);
    for id in [latest, skip] {
        wait_until(
            Duration::from_secs(30),
            "an occurrence after the stall",
            || {
                let job = d.show(id);
                (ms(&job["next_due_at"]) > resumed + 1000 && job["owed"] == 0).then_some(())
            },
        );
    }
    // Occurrences due in the stall (after its first second, which may have run on time).
    let in_stall = |id: u64| -> Vec<serde_json::Value> {
        runs(id)
            .into_iter()
            .filter(|r| (stopped + 1000..resumed).contains(&ms(&r["due_at"])))
            .collect()
    };
    assert_eq!(
        in_stall(latest).len(),
        1,
        "catch-up latest runs one of the occurrences missed in a stall: {:#}",
        d.show(latest)
    );
    assert_eq!(
        in_stall(skip).len(),
        0,
        "catch-up skip runs none of them: {:#}",
        d.show(skip)
    );
    let missed = d.show(skip)["missed"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|m| m["reason"] == "catch_up")
        .count();
    assert!(missed >= 8, "{:#}", d.show(skip));
    assert!(
        d.log().contains("behind its timers"),
        "the stall is logged: {}",
        d.log()
    );
}

fn now_ms() -> i64 {
    jiff::Timestamp::now().as_millisecond()
}

/// Issue 10, item 7: on a queue limited to 2, `status` showed 34 jobs `running` while 2
/// processes existed: runs opened ahead for a quick queue wait in chimed for a slot, and are not
/// running. Counts, listings and `show` now say `queued` for them.
#[test]
fn runs_opened_ahead_are_not_shown_running() {
    let d = Daemon::start();
    d.ctl_ok(&["queue", "set", "q", "--parallel", "2"]);
    // A few quick runs make the queue quick: chimed then opens its runs ahead of its slots.
    let quick: Vec<u64> = (0..8)
        .map(|_| d.add(&["--queue", "q", "--", "/bin/true"]))
        .collect();
    for id in &quick {
        d.wait_final(*id, Duration::from_secs(60));
    }
    let dir = d.dir.path().to_path_buf();
    // Each run waits for `go` (written when the test ends, also when it fails), at most 5 min.
    let script = format!(
        "touch {dir}/started.$CHIME_JOB_ID; i=0; \
         while [ -d {dir} ] && [ ! -e {dir}/go ] && [ $i -lt 6000 ]; do sleep 0.05; i=$((i+1)); done",
        dir = dir.display()
    );
    let _go = Go(dir.join("go"));
    let ids: Vec<u64> = (0..50)
        .map(|_| d.add(&["--queue", "q", "--", "/bin/sh", "-c", &script]))
        .collect();
    let started = || -> Vec<u64> {
        let mut ids: Vec<u64> = std::fs::read_dir(&dir)
            .unwrap()
            .filter_map(|e| {
                let name = e.ok()?.file_name().into_string().ok()?;
                name.strip_prefix("started.")?.parse().ok()
            })
            .collect();
        ids.sort_unstable();
        ids
    };
    let live = wait_until(Duration::from_secs(60), "two runs to start", || {
        let live = started();
        (live.len() == 2).then_some(live)
    });
    let status = d.ctl_json(&["status"]);
    assert_eq!(
        (
            status["counts"]["running"].as_u64(),
            status["counts"]["queued"].as_u64()
        ),
        (Some(2), Some(48)),
        "two processes run, 48 jobs wait: {}",
        status["counts"]
    );
    assert_eq!(status["running"], 2, "{status:#}");
    let listed = |state: &str| -> Vec<u64> {
        d.ctl_json(&["ls", "--state", state])["jobs"]
            .as_array()
            .unwrap()
            .iter()
            .filter_map(|j| j["id"].as_u64())
            .filter(|id| ids.contains(id))
            .collect()
    };
    assert_eq!(listed("running"), live, "ls --state running");
    let queued = listed("queued");
    assert_eq!(queued.len(), 48, "ls --state queued: {queued:?}");
    assert!(queued.iter().all(|id| !live.contains(id)));
    let waiting = ids.iter().find(|id| !live.contains(id)).unwrap();
    assert_eq!(d.show(*waiting)["state"], "queued");
    let queues = d.ctl_json(&["queue", "ls"])["queues"].clone();
    let q = queues
        .as_array()
        .unwrap()
        .iter()
        .find(|q| q["name"] == "q")
        .unwrap();
    assert_eq!(
        (q["running"].as_u64(), q["waiting"].as_u64()),
        (Some(2), Some(48)),
        "{q}"
    );
    std::fs::write(dir.join("go"), "").unwrap();
    for id in &ids {
        d.wait_final(*id, Duration::from_secs(120));
    }
}

/// Writes a file when dropped: lets a test's runs end also when the test fails.
struct Go(std::path::PathBuf);

impl Drop for Go {
    fn drop(&mut self) {
        let _ = std::fs::write(&self.0, "");
    }
}

/// Issue 10, item 3: one flipped byte inside a job's record in a cleanly stopped database was
/// trusted: the job ran with what the flip made of it (here: another argument). Each record now
/// carries a checksum: the damaged job is quarantined (shown `damaged`, never run, its bytes
/// kept), the message names the file, the record and what to do, and everything else is served
/// and changed as usual, also when the damaged job is due at the start.
#[test]
fn a_damaged_record_is_quarantined_and_everything_else_goes_on() {
    let mut d = Daemon::start();
    let dir = d.dir.path().to_path_buf();
    let ran = dir.join("victim-ran");
    let marker = "CHIME-DAMAGE-MARKER-0123456789";
    let touch = format!("touch {}", ran.display());
    // Due a few seconds from now: due at the restart.
    let victim = d.add(&[
        "--name", "victim", "--in", "3s", "--", "/bin/sh", "-c", &touch, marker,
    ]);
    let other_ran = dir.join("other-ran");
    let other = d.add(&[
        "--name",
        "other",
        "--in",
        "3s",
        "--",
        "/bin/touch",
        other_ran.to_str().unwrap(),
    ]);
    let due = ms(&d.show(victim)["next_due_at"]);
    d.stop();
    // Both are due when chimed starts again.
    wait_until(Duration::from_secs(30), "the jobs' due time", || {
        (now_ms() > due).then_some(())
    });
    // Flip one bit in every copy of the marker (redb may keep older copies of a page).
    let db = d.state_dir.join("chime.redb");
    let mut bytes = std::fs::read(&db).unwrap();
    let mut flipped = 0;
    let mut at = 0;
    while let Some(i) = find(&bytes[at..], marker.as_bytes()) {
        bytes[at + i + 6] ^= 0x01; // "CHIME-DAMAGE" becomes "CHIME-EAMAGE"
        flipped += 1;
        at += i + marker.len();
    }
    assert!(flipped > 0, "the marker is not in the database file");
    std::fs::write(&db, &bytes).unwrap();
    let damaged_marker = marker.replacen("DAMAGE", "EAMAGE", 1);

    d.restart();
    // Everything else is served and changed as usual.
    let done = d.wait_final(other, Duration::from_secs(60));
    assert_eq!(done["state"], "succeeded", "{done:#}");
    assert!(other_ran.exists());
    let added = d.add(&["--", "/bin/true"]);
    assert_eq!(
        d.wait_final(added, Duration::from_secs(60))["state"],
        "succeeded"
    );
    // The damaged job: said so, with the file, the record and what to do; never run.
    let out = d.ctl(&["show", "victim"]);
    let said = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "show of a damaged job: {said}");
    for part in [
        db.to_str().unwrap(),
        &format!("record {victim} of table `jobs`"),
        "checksum",
        &format!("chimectl rm {victim}"),
    ] {
        assert!(said.contains(part), "{part:?} not in: {said}");
    }
    assert!(!ran.exists(), "the damaged job ran");
    let listed = d.ctl_json(&["ls"])["jobs"].clone();
    let row = listed
        .as_array()
        .unwrap()
        .iter()
        .find(|j| j["id"] == victim)
        .unwrap_or_else(|| panic!("job {victim} not listed: {listed:#}"))
        .clone();
    assert_eq!(row["state"], "damaged", "{row:#}");
    let status = wait_until(Duration::from_secs(60), "the scrub", || {
        let status = d.ctl_json(&["status"]);
        (status["scrubbed"] == true).then_some(status)
    });
    assert_eq!(status["counts"]["damaged"], 1, "{status:#}");
    assert!(
        d.log()
            .contains(&format!("job {victim} is damaged in {}", db.display())),
        "{}",
        d.log()
    );
    // Its bytes are kept as they were.
    let kept = std::fs::read(&db).unwrap();
    assert!(find(&kept, damaged_marker.as_bytes()).is_some());
    // Removing it works, and leaves nothing behind.
    d.ctl_ok(&["rm", &victim.to_string()]);
    let status = d.ctl_json(&["status"]);
    assert_eq!(status["counts"]["damaged"], 0, "{status:#}");
    let listed = d.ctl_json(&["ls"])["jobs"].clone();
    assert!(
        listed.as_array().unwrap().iter().all(|j| j["id"] != victim),
        "{listed:#}"
    );
    // The name is free again.
    d.add(&["--name", "victim", "--in", "1h", "--", "/bin/true"]);
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}
