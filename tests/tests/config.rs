//! chimed.toml and jobs.d: applied at start, reconciled on reload (chimectl reload and SIGHUP),
//! bad files refused with their line and field while everything else goes on.

use chime_tests::{Daemon, bin, signal, wait_until};
use serde_json::Value;
use std::time::Duration;

const T: Duration = Duration::from_secs(30);

fn argv1(job: &Value) -> String {
    job["command"]["argv"][1]
        .as_str()
        .unwrap_or_default()
        .to_owned()
}

fn reload(d: &Daemon) -> (bool, Value, String) {
    let out = d.ctl(&["--json", "reload"]);
    let report: Value = serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("reload printed bad JSON ({e}): {out:?}"));
    (
        out.status.success(),
        report,
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn names(report: &Value, key: &str) -> Vec<String> {
    report[key]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap().to_owned())
        .collect()
}

#[test]
fn job_files_are_applied_at_start_and_reconciled_on_reload() {
    let mut d = Daemon::prepare(&[]);
    d.write_job(
        "nightly",
        "command = [\"/bin/echo\", \"one\"]\ncron = \"30 2 * * *\"\ntz = \"Europe/Paris\"\nretries = 2\n",
    );
    d.write_job("tick", "timer = true\nevery = \"1h\"\n");
    d.launch().unwrap();
    let nightly = d.ctl_json(&["show", "nightly"]);
    assert_eq!(argv1(&nightly), "one");
    assert_eq!(nightly["retries"], 2);
    assert_eq!(
        nightly["source"],
        d.jobs_dir().join("nightly.toml").display().to_string()
    );
    let id = nightly["id"].clone();
    // A job added with chimectl is left alone by every reload.
    let mine = d.add(&["--name", "mine", "--in", "1h", "--", "/bin/true"]);
    // Trigger a run, so that there is history to keep.
    d.ctl_ok(&["trigger", "nightly"]);
    wait_until(T, "the triggered run to end", || {
        let job = d.ctl_json(&["show", "nightly"]);
        (job["runs"][0]["outcome"] == "exited").then_some(())
    });

    // Changed, removed and new files.
    d.write_job(
        "nightly",
        "command = [\"/bin/echo\", \"two\"]\ncron = \"30 2 * * *\"\ntz = \"Europe/Paris\"\nretries = 2\n",
    );
    d.remove_job("tick");
    d.write_job("fresh", "shell = \"echo fresh\"\nevery = \"1d\"\n");
    let (ok, report, stderr) = reload(&d);
    assert!(ok, "{report:#} {stderr}");
    assert_eq!(names(&report, "added"), ["fresh"]);
    assert_eq!(names(&report, "updated"), ["nightly"]);
    assert_eq!(names(&report, "removed"), ["tick"]);
    assert_eq!(report["unchanged"], 0);
    let nightly = d.ctl_json(&["show", "nightly"]);
    assert_eq!(nightly["id"], id, "updated in place");
    assert_eq!(argv1(&nightly), "two");
    assert_eq!(nightly["runs"].as_array().unwrap().len(), 1, "history kept");
    assert!(!d.ctl(&["show", "tick"]).status.success(), "tick is gone");
    assert_eq!(d.show(mine)["state"], "scheduled");

    // Nothing changed: nothing happens.
    let (ok, report, _) = reload(&d);
    assert!(ok);
    assert_eq!(report["unchanged"], 2);
    assert!(names(&report, "updated").is_empty());

    // A restart applies the files as they are now, without duplicates.
    d.stop();
    d.restart();
    let listed = d.ctl_json(&["ls"]);
    let mut listed: Vec<&str> = listed["jobs"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|j| j["name"].as_str())
        .collect();
    listed.sort();
    assert_eq!(listed, ["fresh", "mine", "nightly"]);
}

#[test]
fn a_bad_file_on_reload_keeps_its_previous_job_and_says_where() {
    let d = Daemon::prepare(&[]);
    d.write_job(
        "backup",
        "command = [\"/bin/echo\", \"v1\"]\nevery = \"1h\"\n",
    );
    d.write_job("other", "timer = true\nevery = \"1h\"\n");
    let mut d = d;
    d.launch().unwrap();
    d.write_job(
        "backup",
        "command = [\"/bin/echo\", \"v2\"]\n\nevery = \"soon\"\n",
    );
    d.write_job("other", "timer = true\nevery = \"2h\"\n");
    let (ok, report, _) = reload(&d);
    assert!(!ok, "a refused file fails the reload");
    let errors = names(&report, "errors");
    assert_eq!(errors.len(), 1, "{errors:?}");
    let path = d.jobs_dir().join("backup.toml").display().to_string();
    assert!(
        errors[0].starts_with(&format!("{path}:3: every: \"soon\" is not a duration")),
        "{errors:?}"
    );
    let out = d.ctl(&["reload"]);
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains(&format!("refused: {path}:3: every")),
        "{stderr}"
    );
    assert!(
        stderr.contains("previous versions stay in effect"),
        "{stderr}"
    );
    // The good file still applied; the bad one's job is as it was.
    assert_eq!(names(&report, "updated"), ["other"]);
    assert_eq!(argv1(&d.ctl_json(&["show", "backup"])), "v1");
    // The daemon serves on, and logged the problem.
    d.ctl_json(&["status"]);
    assert!(d.log().contains(&format!("{path}:3: every")), "{}", d.log());
    // A refused file's job is not removed either, even when the file stays bad.
    let (_, report, _) = reload(&d);
    assert!(names(&report, "removed").is_empty());
    // Fixed: applied.
    d.write_job(
        "backup",
        "command = [\"/bin/echo\", \"v3\"]\nevery = \"1h\"\n",
    );
    let (ok, _, _) = reload(&d);
    assert!(ok);
    assert_eq!(argv1(&d.ctl_json(&["show", "backup"])), "v3");
    assert_eq!(d.ctl_json(&["status"])["reload_errors"], 0);
}

#[test]
fn a_bad_file_at_start_stops_chimed_with_its_message() {
    let mut d = Daemon::prepare(&[]);
    d.write_job("x", "command = [\"/bin/true\"]\ncron = \"61 * * * *\"\n");
    let err = d.launch().unwrap_err();
    let path = d.jobs_dir().join("x.toml").display().to_string();
    assert!(err.contains(&format!("{path}:2: cron: ")), "{err}");
    d.remove_job("x");
    d.write_config("max_running = \"many\"\n");
    let err = d.launch().unwrap_err();
    assert!(
        err.contains(&format!(
            "{}:1: max_running: invalid type",
            d.config.display()
        )),
        "{err}"
    );
    // A file others may write is refused: it decides what runs as whom.
    d.write_config("max_running = 4\n");
    std::fs::set_permissions(
        &d.config,
        std::os::unix::fs::PermissionsExt::from_mode(0o666),
    )
    .unwrap();
    let err = d.launch().unwrap_err();
    assert!(err.contains("writable by group or others"), "{err}");
}

#[test]
fn sighup_reloads_too() {
    let d = Daemon::start();
    d.write_job("late", "timer = true\nevery = \"1h\"\n");
    signal(d.pid(), libc::SIGHUP);
    wait_until(T, "SIGHUP to apply the new file", || {
        d.ctl(&["show", "late"]).status.success().then_some(())
    });
}

#[test]
fn a_declared_name_goes_to_the_declared_job_and_the_chimectl_job_is_kept() {
    let d = Daemon::start();
    let mine = d.add(&["--name", "taken", "--in", "1h", "--", "/bin/true"]);
    d.write_job("taken", "timer = true\nevery = \"1h\"\n");
    let (ok, report, _) = reload(&d);
    assert!(ok, "{report}");
    assert_eq!(names(&report, "added"), ["taken"]);
    // The administrator's file decides the name; the user's job keeps its id and history.
    let declared = d.ctl_json(&["show", "taken"]);
    assert_ne!(declared["id"], mine);
    assert_eq!(declared["command"]["timer"], true);
    let kept = d.show(mine);
    assert_eq!(kept["command"]["argv"][0], "/bin/true");
    assert_eq!(kept["name"], serde_json::Value::Null);
    assert!(d.log().contains("loses the name"), "{}", d.log());
    // And a declared job cannot be replaced from chimectl.
    d.write_job("declared", "timer = true\nevery = \"1h\"\n");
    reload(&d);
    let out = d.ctl(&[
        "add",
        "--name",
        "declared",
        "--replace",
        "--in",
        "1h",
        "--",
        "/bin/true",
    ]);
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("edit that file and run `chimectl reload`"),
        "{out:?}"
    );
}

#[test]
fn defaults_and_queue_limits_come_from_chimed_toml() {
    let mut d = Daemon::prepare(&[]);
    d.write_config(
        "[defaults]\nretries = 2\nkeep_runs = 7\n\n[queues.io]\nparallel = 3\n\n[queues.net]\nparallel = 1\n",
    );
    d.launch().unwrap();
    let id = d.add(&["--in", "1h", "--", "/bin/true"]);
    let job = d.show(id);
    assert_eq!(
        (job["retries"].clone(), job["keep_runs"].clone()),
        (2.into(), 7.into())
    );
    // A job's own setting wins over the default.
    let own = d.add(&["--retries", "0", "--in", "1h", "--", "/bin/true"]);
    assert_eq!(d.show(own)["retries"], 0);
    let limit = |name: &str| {
        d.ctl_json(&["queue", "ls"])["queues"]
            .as_array()
            .unwrap()
            .iter()
            .find(|q| q["name"] == name)
            .map(|q| q["parallel"].clone())
    };
    assert_eq!(limit("io"), Some(3.into()));
    // Removing a queue from the file removes the limit it set; changing one changes it.
    d.write_config("[defaults]\nretries = 1\n\n[queues.io]\nparallel = 5\n");
    let (ok, report, _) = reload(&d);
    assert!(ok, "{report:#}");
    assert_eq!(limit("io"), Some(5.into()));
    assert!(
        limit("net").is_none_or(|p| p.is_null()),
        "{:?}",
        limit("net")
    );
    let later = d.add(&["--in", "1h", "--", "/bin/true"]);
    assert_eq!(
        d.show(later)["retries"],
        1,
        "new defaults apply to new jobs"
    );
    assert_eq!(d.show(id)["retries"], 2, "stored jobs keep theirs");
    // Settings that need a restart are named.
    d.write_config("max_running = 3\n");
    let (_, report, _) = reload(&d);
    assert_eq!(names(&report, "restart_needed"), ["max_running"]);
}

#[test]
fn config_check_validates_without_a_daemon() {
    let d = Daemon::prepare(&[]);
    d.write_config("max_running = 8\n");
    d.write_job("good", "timer = true\nevery = \"1h\"\n");
    let check = |path: &std::path::Path| {
        std::process::Command::new(bin("chimectl"))
            .args(["config", "check"])
            .arg(path)
            .env("TZ", "UTC")
            .output()
            .unwrap()
    };
    let out = check(&d.config);
    assert!(out.status.success(), "{out:?}");
    assert!(String::from_utf8_lossy(&out.stdout).contains("ok: 2 file(s) checked"));
    d.write_job(
        "bad",
        "timer = true\nevery = \"1h\"\noverlap = \"sometimes\"\n",
    );
    let out = check(&d.config);
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    let path = d.jobs_dir().join("bad.toml").display().to_string();
    assert!(
        stderr.contains(&format!(
            "{path}:3: overlap: \"sometimes\": use skip, queue, allow or replace"
        )),
        "{stderr}"
    );
    // One job file alone, and a directory.
    assert!(check(&d.jobs_dir().join("good.toml")).status.success());
    assert!(!check(&d.jobs_dir()).status.success());
    // Nothing was started or written.
    assert!(!d.state_dir.exists());
}

#[test]
fn the_minimum_interval_holds_for_declared_jobs_and_is_the_administrators_to_lower() {
    let mut d = Daemon::prepare(&[]);
    d.write_job("fast", "timer = true\nevery = \"100ms\"\n");
    let path = d.jobs_dir().join("fast.toml").display().to_string();
    let err = d
        .launch()
        .expect_err("a declared job every 100 ms is refused like anyone's");
    let said = format!(
        "{path}:2: every: the interval must be at least 1s (min_interval = 1s, the default; set it under [limits] in {})",
        d.config.display()
    );
    assert!(err.contains(&said), "{err}");
    // `config check` of the file alone says the same, held to the configuration beside jobs.d.
    let check_file = || {
        std::process::Command::new(bin("chimectl"))
            .args(["config", "check"])
            .arg(d.jobs_dir().join("fast.toml"))
            .output()
            .unwrap()
    };
    let out = check_file();
    assert!(!out.status.success(), "{out:?}");
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("the interval must be at least 1s"),
        "{out:?}"
    );
    // Lowered by the administrator: the declared job and chimectl's are both accepted, and
    // checking the file alone agrees.
    d.write_config(chime_tests::SHORT_INTERVALS);
    let out = check_file();
    assert!(out.status.success(), "{out:?}");
    d.launch().unwrap();
    assert_eq!(d.ctl_json(&["show", "fast"])["name"], "fast");
    let out = d.ctl(&["add", "--every", "100ms", "--", "/bin/true"]);
    assert!(out.status.success(), "{out:?}");
    let out = d.ctl(&["add", "--every", "50ms", "--", "/bin/true"]);
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("min_interval = 100ms, set under [limits]"),
        "{out:?}"
    );
    // And on reload, as at start.
    d.write_job("faster", "timer = true\nevery = \"50ms\"\n");
    let (ok, report, _) = reload(&d);
    assert!(!ok, "{report}");
    let errors = names(&report, "errors");
    assert_eq!(errors.len(), 1, "{errors:?}");
    assert!(
        errors[0].contains("faster.toml:2: every: the interval must be at least 100ms"),
        "{errors:?}"
    );
}
