//! What survives: restarts after SIGTERM and SIGKILL, runs cut off by a crash, refused databases,
//! and a second daemon on the same state.

use chime_tests::{Daemon, alive, ms, signal, wait_until};
use serde_json::Value;
use std::time::Duration;

const T: Duration = Duration::from_secs(20);

/// Every job as `ls --all --json` shows it, by id.
fn all_jobs(d: &Daemon) -> Vec<Value> {
    d.ctl_json(&["ls", "--all"])["jobs"]
        .as_array()
        .unwrap()
        .clone()
}

fn submit_batch(d: &Daemon) -> Vec<u64> {
    let mut ids = Vec::new();
    for i in 0..40 {
        let name = format!("job-{i}");
        let mut args = vec!["--in", "2h"];
        if i % 3 == 0 {
            args.extend(["--name", &name]);
        }
        args.extend(["--", "/bin/true"]);
        ids.push(d.add(&args));
    }
    ids
}

#[test]
fn every_acknowledged_job_survives_sigkill() {
    let mut d = Daemon::start();
    let ids = submit_batch(&d);
    let before = all_jobs(&d);
    d.kill();
    d.restart();
    let after = all_jobs(&d);
    assert_eq!(after, before, "jobs changed across SIGKILL");
    assert_eq!(after.len(), ids.len());
    assert_eq!(d.ctl_json(&["show", "job-9"])["id"], ids[9]);
    // Ids continue; none is reused.
    let next = d.add(&["--", "/bin/true"]);
    assert!(next > *ids.last().unwrap());
}

#[test]
fn every_acknowledged_job_survives_sigterm() {
    let mut d = Daemon::start();
    submit_batch(&d);
    let before = all_jobs(&d);
    let took = d.stop();
    assert!(
        took < Duration::from_secs(5),
        "a stop with nothing running took {took:?}"
    );
    assert!(
        !d.socket.exists(),
        "the socket was left behind after a clean stop"
    );
    d.restart();
    assert_eq!(all_jobs(&d), before);
}

#[test]
fn acknowledged_jobs_survive_a_kill_during_a_burst_of_submissions() {
    // Clients keep submitting while the daemon is killed: every job whose add was acknowledged
    // must be there afterwards.
    let mut d = Daemon::start();
    let socket = d.socket.clone();
    let submitter = std::thread::spawn(move || {
        let mut acked = Vec::new();
        for _ in 0..2000 {
            let out = std::process::Command::new(chime_tests::bin("chimectl"))
                .args(["--json", "add", "--in", "3h", "--", "/bin/true"])
                .env("CHIME_SOCKET", &socket)
                .output()
                .unwrap();
            if !out.status.success() {
                break;
            }
            let v: Value = serde_json::from_slice(&out.stdout).unwrap();
            acked.push(v["id"].as_u64().unwrap());
        }
        acked
    });
    wait_until(T, "some submissions", || {
        (d.ctl_json(&["status"])["counts"]["scheduled"].as_u64()? >= 20).then_some(())
    });
    d.kill();
    let acked = submitter.join().unwrap();
    d.restart();
    let stored: std::collections::BTreeSet<u64> = all_jobs(&d)
        .iter()
        .map(|j| j["id"].as_u64().unwrap())
        .collect();
    let missing: Vec<_> = acked.iter().filter(|id| !stored.contains(id)).collect();
    assert!(missing.is_empty(), "acknowledged jobs lost: {missing:?}");
    assert!(acked.len() >= 20);
}

#[test]
fn a_job_due_while_the_daemon_was_down_runs_at_start() {
    let mut d = Daemon::start();
    let added = d.ctl_json(&["add", "--in", "300ms", "--", "/bin/true"]);
    let id = added["id"].as_u64().unwrap();
    d.kill();
    let due = ms(&added["due_at"]);
    wait_until(T, "the due time to pass", || {
        (jiff::Timestamp::now().as_millisecond() > due + 200).then_some(())
    });
    d.restart();
    let job = d.wait_state(id, "succeeded", T);
    assert_eq!(job["runs"].as_array().unwrap().len(), 1);
}

#[test]
fn a_run_cut_off_by_sigkill_is_lost_after_restart() {
    let mut d = Daemon::start();
    let id = d.add(&["--", "/bin/sleep", "30"]);
    d.wait_state(id, "running", T);
    let pid = wait_until(T, "the pid", || d.show(id)["runs"][0]["pid"].as_u64()) as u32;
    d.kill();
    d.restart();
    let job = d.show(id);
    assert_eq!(job["state"], "failed", "{job:#}");
    assert_eq!(job["runs"][0]["outcome"], "lost");
    assert!(job["runs"][0]["finished_at"].is_string());
    // The orphan outlived the daemon (no one else kills it here); clean it up.
    if alive(pid) {
        signal(pid, libc::SIGKILL);
    }
}

#[test]
fn sigterm_interrupts_running_jobs_within_the_grace_period() {
    let mut d = Daemon::start_with(&["--stop-grace", "2s"]);
    // One job ends on SIGTERM, the other ignores it and must be SIGKILLed after the grace.
    let polite = d.add(&["--", "/bin/sleep", "30"]);
    let stubborn = d.add(&["--shell", "--", "trap '' TERM; sleep 30; sleep 30"]);
    d.wait_state(polite, "running", T);
    d.wait_state(stubborn, "running", T);
    wait_until(T, "both pids", || {
        d.show(polite)["runs"][0]["pid"].as_u64()?;
        d.show(stubborn)["runs"][0]["pid"].as_u64()
    });
    let took = d.stop();
    assert!(
        took >= Duration::from_secs(2),
        "stop did not wait for the grace period: {took:?}"
    );
    assert!(took < Duration::from_secs(8), "stop took {took:?}");
    d.restart();
    for id in [polite, stubborn] {
        let job = d.show(id);
        assert_eq!(job["state"], "failed", "{job:#}");
        assert_eq!(job["runs"][0]["outcome"], "interrupted", "{job:#}");
    }
}

#[test]
fn an_unreadable_database_is_refused_and_left_unchanged() {
    if !chime_tests::on_redb("an_unreadable_database_is_refused_and_left_unchanged") {
        return;
    }
    let mut d = Daemon::start();
    d.add(&["--in", "1h", "--", "/bin/true"]);
    d.stop();
    let db = d.state_dir.join("chime.redb");
    let garbage: Vec<u8> = (0..65536u32)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 11) as u8)
        .collect();
    std::fs::write(&db, &garbage).unwrap();
    let out = d.command().output().unwrap();
    assert!(
        !out.status.success(),
        "chimed started on a garbage database"
    );
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("is not a chime database") && err.contains("left untouched"),
        "{err}"
    );
    assert!(!err.contains("panicked"), "{err}");
    assert_eq!(
        std::fs::read(&db).unwrap(),
        garbage,
        "the refused file was modified"
    );
}

#[test]
fn a_second_daemon_on_the_same_state_or_socket_is_refused() {
    let d = Daemon::start();
    // Same state directory, another socket.
    let out = std::process::Command::new(chime_tests::bin("chimed"))
        .arg("--socket")
        .arg(d.dir.path().join("other.sock"))
        .arg("--state-dir")
        .arg(&d.state_dir)
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("in use by another chimed") && err.contains(&format!("pid {}", d.pid())),
        "{err}"
    );
    // Same socket, another state directory.
    let out = std::process::Command::new(chime_tests::bin("chimed"))
        .arg("--socket")
        .arg(&d.socket)
        .arg("--state-dir")
        .arg(d.dir.path().join("other-state"))
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("socket") && err.contains("in use by another chimed"),
        "{err}"
    );
    // The first daemon is unaffected.
    d.ctl_ok(&["status"]);
}

#[test]
fn a_stale_socket_from_a_killed_daemon_is_replaced() {
    let mut d = Daemon::start();
    d.kill();
    assert!(d.socket.exists(), "SIGKILL leaves the socket file behind");
    d.restart();
    d.ctl_ok(&["status"]);
}

#[test]
fn the_sigkill_campaign_finds_nothing_wrong_in_three_kills() {
    // The SIGKILL campaign (tests/src/bin/campaign-kill, README "Benchmarks") in miniature, so
    // that its code cannot rot: three kills under load, the drain, and every check.
    let mut campaign = std::process::Command::new(env!("CARGO_BIN_EXE_campaign-kill"));
    campaign.args([
        "--kills",
        "3",
        "--seed",
        "1",
        "--max-delay",
        "400",
        "--drain-seconds",
        "2",
    ]);
    let out = chime_tests::output_within(campaign, Duration::from_secs(300));
    assert!(
        out.status.success(),
        "the campaign failed with {}:\n{}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}
