//! Other users: who may see and change a job, and as whom it runs. These tests create users, so
//! they need root; elsewhere they say so and pass without checking anything.

use chime_tests::{Daemon, is_root, public_chimectl, test_user};
use std::process::{Command, Output};
use std::time::Duration;

const T: Duration = Duration::from_secs(20);

fn as_user(d: &Daemon, user: &str, args: &[&str]) -> Output {
    let chimectl = public_chimectl(d.dir.path());
    Command::new("setpriv")
        .args([
            &format!("--reuid={user}"),
            &format!("--regid={user}"),
            "--init-groups",
            "--",
        ])
        .arg(chimectl)
        .args(args)
        .env("CHIME_SOCKET", &d.socket)
        .current_dir("/tmp")
        .output()
        .expect("run setpriv")
}

fn skip_unless_root(test: &str) -> bool {
    if is_root() {
        return false;
    }
    eprintln!("SKIPPED {test}: needs root to create users (run the suite as root to check it)");
    true
}

#[test]
fn another_user_cannot_cancel_or_see_your_job() {
    if skip_unless_root("another_user_cannot_cancel_or_see_your_job") {
        return;
    }
    let ann_uid = test_user("chime-test-ann");
    test_user("chime-test-bob");
    let d = Daemon::start_with(&["--socket-mode", "0666"]);

    let out = as_user(
        &d,
        "chime-test-ann",
        &["--json", "add", "--in", "1h", "--", "/bin/true"],
    );
    assert!(
        out.status.success(),
        "ann's add failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let id: u64 = serde_json::from_slice::<serde_json::Value>(&out.stdout).unwrap()["id"]
        .as_u64()
        .unwrap();
    assert_eq!(d.show(id)["owner_uid"], ann_uid);

    // Bob may not cancel it, nor look at it, nor see it listed.
    let out = as_user(&d, "chime-test-bob", &["cancel", &id.to_string()]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains(&format!("belongs to uid {ann_uid}")), "{err}");
    let out = as_user(&d, "chime-test-bob", &["show", &id.to_string()]);
    assert!(!out.status.success());
    let out = as_user(&d, "chime-test-bob", &["--json", "ls"]);
    let listed: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(listed["jobs"].as_array().unwrap().len(), 0, "{listed}");
    assert_eq!(d.show(id)["state"], "scheduled");

    // Ann may not cancel root's job.
    let roots = d.add(&["--in", "1h", "--", "/bin/true"]);
    let out = as_user(&d, "chime-test-ann", &["cancel", &roots.to_string()]);
    assert!(!out.status.success());
    assert_eq!(d.show(roots)["state"], "scheduled");

    // Ann may cancel her own, and root may cancel anyone's.
    let out = as_user(&d, "chime-test-ann", &["cancel", &id.to_string()]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let other = as_user(
        &d,
        "chime-test-ann",
        &["--json", "add", "--in", "1h", "--", "/bin/true"],
    );
    let other: u64 = serde_json::from_slice::<serde_json::Value>(&other.stdout).unwrap()["id"]
        .as_u64()
        .unwrap();
    d.ctl_ok(&["cancel", &other.to_string()]);
    assert_eq!(d.show(other)["state"], "cancelled");
}

#[test]
fn a_users_job_runs_as_that_user() {
    if skip_unless_root("a_users_job_runs_as_that_user") {
        return;
    }
    let ann_uid = test_user("chime-test-ann");
    let d = Daemon::start_with(&["--socket-mode", "0666"]);
    let out = as_user(
        &d,
        "chime-test-ann",
        &[
            "--json",
            "add",
            "--shell",
            "--",
            "id -u; id -g; echo $USER; pwd",
        ],
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let id = serde_json::from_slice::<serde_json::Value>(&out.stdout).unwrap()["id"]
        .as_u64()
        .unwrap();
    d.wait_state(id, "succeeded", T);
    let output = d.ctl_ok(&["logs", &id.to_string()]);
    let gid = nix::unistd::User::from_uid(nix::unistd::Uid::from_raw(ann_uid))
        .unwrap()
        .unwrap()
        .gid;
    assert_eq!(output, format!("{ann_uid}\n{gid}\nchime-test-ann\n/tmp\n"));
}

#[test]
fn a_watcher_sees_only_their_own_jobs_events() {
    if skip_unless_root("a_watcher_sees_only_their_own_jobs_events") {
        return;
    }
    let bob_uid = test_user("chime-test-bob");
    test_user("chime-test-ann");
    let d = Daemon::start_with(&["--socket-mode", "0666"]);
    let ann = as_user(
        &d,
        "chime-test-ann",
        &["add", "--name", "anns", "--in", "1h", "--", "/bin/true"],
    );
    assert!(ann.status.success(), "{ann:?}");
    d.ctl_ok(&["pause", "--queue", "io"]);
    let bob = as_user(
        &d,
        "chime-test-bob",
        &["add", "--name", "bobs", "--in", "1h", "--", "/bin/true"],
    );
    assert!(bob.status.success(), "{bob:?}");
    // Bob's view of the whole log: the queue's pause (everyone's business) and his own job.
    let out = as_user(
        &d,
        "chime-test-bob",
        &["--json", "watch", "--since", "0", "--count", "2"],
    );
    assert!(out.status.success(), "{out:?}");
    let events: Vec<serde_json::Value> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(events[0]["event"], "paused");
    assert_eq!(events[1]["name"], "bobs");
    assert_eq!(events[1]["owner_uid"], bob_uid);
    // Root sees all three, and Bob may not follow Ann's job.
    assert_eq!(
        d.ctl_ok(&["watch", "--since", "0", "--count", "3"])
            .lines()
            .count(),
        3
    );
    let out = as_user(&d, "chime-test-bob", &["watch", "--job", "anns"]);
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("only its owner or root"),
        "{out:?}"
    );
}
