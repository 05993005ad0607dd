//! Other users: who may see and change a job, and as whom it runs. These tests create users, so
//! they need root; elsewhere they say so and pass without checking anything.

use chime_tests::{Daemon, TestUser, is_root};
use std::time::Duration;

const T: Duration = Duration::from_secs(20);

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
    let ann = TestUser::create("ann");
    let bob = TestUser::create("bob");
    let d = Daemon::start_with(&["--socket-mode", "0666"]);

    let id = ann.add(&d, &["--in", "1h", "--", "/bin/true"]);
    assert_eq!(d.show(id)["owner_uid"], ann.uid);

    // Bob may not cancel it, nor look at it, nor see it listed; and he is told exactly what he
    // would be told of a job that does not exist: nothing about Ann.
    let out = bob.ctl(&d, &["cancel", &id.to_string()]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains(&format!("no job {id}")), "{err}");
    assert!(!err.contains(&ann.uid.to_string()), "{err}");
    let missing = bob.ctl(&d, &["cancel", "999999"]);
    assert_eq!(
        String::from_utf8_lossy(&missing.stderr).replace("999999", &id.to_string()),
        err
    );
    let out = bob.ctl(&d, &["show", &id.to_string()]);
    assert!(!out.status.success());
    let out = bob.ctl(&d, &["--json", "ls"]);
    let listed: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(listed["jobs"].as_array().unwrap().len(), 0, "{listed}");
    assert_eq!(d.show(id)["state"], "scheduled");

    // Ann may not cancel root's job.
    let roots = d.add(&["--in", "1h", "--", "/bin/true"]);
    let out = ann.ctl(&d, &["cancel", &roots.to_string()]);
    assert!(!out.status.success());
    assert_eq!(d.show(roots)["state"], "scheduled");

    // Ann may cancel her own, and root may cancel anyone's.
    ann.ctl_ok(&d, &["cancel", &id.to_string()]);
    let other = ann.add(&d, &["--in", "1h", "--", "/bin/true"]);
    d.ctl_ok(&["cancel", &other.to_string()]);
    assert_eq!(d.show(other)["state"], "cancelled");
}

#[test]
fn a_users_job_runs_as_that_user() {
    if skip_unless_root("a_users_job_runs_as_that_user") {
        return;
    }
    let ann = TestUser::create("ann");
    let d = Daemon::start_with(&["--socket-mode", "0666"]);
    let id = ann.add(&d, &["--shell", "--", "id -u; id -g; echo $USER; pwd"]);
    d.wait_state(id, "succeeded", T);
    let output = d.ctl_ok(&["logs", &id.to_string()]);
    assert_eq!(
        output,
        format!("{}\n{}\n{}\n/tmp\n", ann.uid, ann.gid, ann.name)
    );
}

#[test]
fn a_watcher_sees_only_their_own_jobs_events() {
    if skip_unless_root("a_watcher_sees_only_their_own_jobs_events") {
        return;
    }
    let bob = TestUser::create("bob");
    let ann = TestUser::create("ann");
    let d = Daemon::start_with(&["--socket-mode", "0666"]);
    let anns = ann.add(&d, &["--name", "anns", "--in", "1h", "--", "/bin/true"]);
    d.ctl_ok(&["pause", "--queue", "io"]);
    bob.add(&d, &["--name", "bobs", "--in", "1h", "--", "/bin/true"]);
    // Bob's view of the whole log: the queue's pause (everyone's business) and his own job.
    let out = bob.ctl(&d, &["--json", "watch", "--since", "0", "--count", "2"]);
    assert!(out.status.success(), "{out:?}");
    let events: Vec<serde_json::Value> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(events[0]["event"], "paused");
    assert_eq!(events[1]["name"], "bobs");
    assert_eq!(events[1]["owner_uid"], bob.uid);
    // Root sees all three, and Bob may not follow Ann's job.
    assert_eq!(
        d.ctl_ok(&["watch", "--since", "0", "--count", "3"])
            .lines()
            .count(),
        3
    );
    let out = bob.ctl(&d, &["watch", "--job", &anns.to_string()]);
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains(&format!("no job {anns}")),
        "{out:?}"
    );
}
