//! Resource limits (issue 12): a limit whose cgroup v2 controller chimed's runs' cgroups do not
//! have is refused when it is submitted, naming its option, and the same limit in a job file,
//! in `[defaults]` or under a queue stops `config check` and chimed's start at its line.
//! `--keep-children` needs no controller: it is accepted and shown.
//!
//! Which controllers the runs' cgroups have is the host's: `status --json` reports them
//! (`containment.controllers`). Each limit is checked against that list: refused where its
//! controller is missing (every one, where chimed has no cgroup subtree or the subtree has no
//! controllers), and accepted and shown by `show --json` where it is there.

use chime_tests::{Daemon, bin, output_within, shown};
use serde_json::json;
use std::process::{Command, Output};
use std::time::Duration;

const T: Duration = Duration::from_secs(30);

/// Refused by chimed (exit status 1, not a usage error), with `chimectl: FLAG: needs the cgroup
/// v2 "CONTROLLER" controller` on stderr.
fn assert_refused_for_its_controller(out: &Output, flag: &str, controller: &str) {
    assert_eq!(out.status.code(), Some(1), "{}", shown(out));
    let stderr = String::from_utf8_lossy(&out.stderr);
    let said = format!(
        "chimectl: {flag}: needs the cgroup v2 \"{controller}\" controller, which chimed's cgroup does not have on this host"
    );
    assert!(
        stderr.starts_with(&said),
        "expected {said:?}: {}",
        shown(out)
    );
    assert!(stderr.contains("README \"Containment\""), "{}", shown(out));
}

/// The controllers the runs' cgroups of `d` have, as `status --json` reports them.
fn controllers(d: &Daemon) -> Vec<String> {
    let status = d.ctl_json(&["status"]);
    status["containment"]["controllers"]
        .as_array()
        .unwrap_or_else(|| panic!("status reports no containment.controllers: {status}"))
        .iter()
        .map(|c| c.as_str().expect("a controller's name").to_owned())
        .collect()
}

/// The controllers the runs' cgroups have on this host (a daemon started for the asking).
fn host_controllers() -> Vec<String> {
    controllers(&Daemon::start())
}

#[test]
fn a_limit_without_its_controller_is_refused_at_submit() {
    let d = Daemon::start();
    let have = controllers(&d);
    let mut stored = 0;
    for (args, flag, controller, key, value) in [
        (
            ["--memory-max", "64M"],
            "--memory-max",
            "memory",
            "memory_max",
            json!(64u64 << 20),
        ),
        (
            ["--cpu-quota", "50%"],
            "--cpu-quota",
            "cpu",
            "cpu_quota_pct",
            json!(50),
        ),
        (
            ["--tasks-max", "64"],
            "--tasks-max",
            "pids",
            "tasks_max",
            json!(64),
        ),
        (
            ["--io-weight", "200"],
            "--io-weight",
            "io",
            "io_weight",
            json!(200),
        ),
    ] {
        if !have.iter().any(|c| c == controller) {
            let mut all = vec!["add"];
            all.extend_from_slice(&args);
            all.extend_from_slice(&["--", "/bin/true"]);
            assert_refused_for_its_controller(&d.ctl(&all), flag, controller);
            // And for a queue, by root only: anyone else is refused for not being root first.
            if chime_tests::is_root() {
                let mut queue = vec!["queue", "set", "limited"];
                queue.extend_from_slice(&args);
                assert_refused_for_its_controller(&d.ctl(&queue), flag, controller);
            }
            continue;
        }
        // The controller is there: the limit is accepted, and shown.
        let mut all = vec!["--in", "1h"];
        all.extend_from_slice(&args);
        all.extend_from_slice(&["--", "/bin/true"]);
        let job = d.show(d.add(&all));
        stored += 1;
        assert_eq!(
            job["limits"][key], value,
            "{flag} ({controller} is there): {job}"
        );
        if chime_tests::is_root() {
            let queue = format!("limited-{controller}");
            let mut set = vec!["queue", "set", queue.as_str()];
            set.extend_from_slice(&args);
            d.ctl_ok(&set);
            let listed = d.ctl_json(&["queue", "ls"]);
            let shown_queue = listed["queues"]
                .as_array()
                .and_then(|qs| qs.iter().find(|q| q["name"] == queue.as_str()))
                .unwrap_or_else(|| panic!("no queue {queue} in {listed}"));
            assert_eq!(shown_queue["limits"][key], value, "{flag}: {listed}");
            // A job of the queue gets the queue's limit.
            let job = d.show(d.add(&["--in", "1h", "--queue", &queue, "--", "/bin/true"]));
            stored += 1;
            assert_eq!(job["limits"][key], value, "{flag} of queue {queue}: {job}");
        }
    }
    // Nothing refused was stored.
    let listed = d.ctl_json(&["ls"]);
    assert_eq!(
        listed["jobs"].as_array().map(Vec::len),
        Some(stored),
        "{listed}"
    );
}

#[test]
fn a_limit_out_of_range_is_refused_before_the_host_is_asked() {
    let d = Daemon::start();
    let out = d.ctl(&["add", "--memory-max", "100K", "--", "/bin/true"]);
    assert_eq!(out.status.code(), Some(1), "{}", shown(&out));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.starts_with("chimectl: --memory-max: 100KiB is out of range; give 1M to 1024T"),
        "{}",
        shown(&out)
    );
    // A quota without its percent sign is chimectl's own usage check.
    let out = d.ctl(&["add", "--cpu-quota", "50", "--", "/bin/true"]);
    assert_eq!(out.status.code(), Some(1), "{}", shown(&out));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("--cpu-quota: \"50\" is not a CPU quota"),
        "{}",
        shown(&out)
    );
}

#[test]
fn keep_children_is_accepted_and_shown() {
    let d = Daemon::start();
    let kept = d.add(&["--in", "1h", "--keep-children", "--", "/bin/true"]);
    let shown_kept = d.show(kept);
    assert_eq!(shown_kept["keep_children"], true, "{shown_kept}");
    assert_eq!(
        shown_kept["limits"],
        serde_json::json!({
            "memory_max": null,
            "cpu_quota_pct": null,
            "tasks_max": null,
            "io_weight": null,
        }),
        "{shown_kept}"
    );
    let plain = d.add(&["--in", "1h", "--", "/bin/true"]);
    assert_eq!(d.show(plain)["keep_children"], false);
    let text = d.ctl_ok(&["show", &kept.to_string()]);
    assert!(
        text.contains("resources none; what a run leaves running is kept"),
        "{text}"
    );
}

/// Where the controller is there instead, `config check` passes and chimed starts with the
/// limit, which `show --json` shows for the job it applies to.
#[test]
fn a_limit_in_a_job_file_or_the_configuration_stops_check_and_start_at_its_line() {
    let have = host_controllers();
    for (config, job, file, line, key, controller, queue, shown_as, value) in [
        (
            "",
            "command = [\"/bin/true\"]\nevery = \"1h\"\ncwd = \"/\"\nmemory_max = \"64M\"\n",
            "jobs.d/x.toml",
            4,
            "memory_max",
            "memory",
            None,
            "memory_max",
            json!(64u64 << 20),
        ),
        (
            "[defaults]\ncpu_quota = \"50%\"\n",
            "command = [\"/bin/true\"]\nevery = \"1h\"\ncwd = \"/\"\n",
            "chimed.toml",
            2,
            "cpu_quota",
            "cpu",
            None,
            "cpu_quota_pct",
            json!(50),
        ),
        (
            "[queues.io]\nparallel = 2\nio_weight = 200\n",
            "command = [\"/bin/true\"]\nevery = \"1h\"\ncwd = \"/\"\n",
            "chimed.toml",
            3,
            "io_weight",
            "io",
            Some("io"),
            "io_weight",
            json!(200),
        ),
    ] {
        let mut d = Daemon::prepare(&[]);
        d.write_config(config);
        d.write_job("x", job);
        let mut check = Command::new(bin("chimectl"));
        check.args(["config", "check"]).arg(&d.config);
        let check = output_within(check, T);
        if have.iter().any(|c| c == controller) {
            assert!(
                check.status.success(),
                "config check refused {key} ({controller} is there): {}",
                shown(&check)
            );
            d.launch().unwrap_or_else(|err| {
                panic!("chimed did not start with {key} ({controller} is there): {err}")
            });
            // A `[queues.NAME]` limit is the limit of that queue's jobs; the others, of the
            // declared job.
            let shown_job = match queue {
                Some(queue) => d.show(d.add(&["--in", "1h", "--queue", queue, "--", "/bin/true"])),
                None => d.show_ref("x"),
            };
            assert_eq!(
                shown_job["limits"][shown_as], value,
                "{key} in {file}: {shown_job}"
            );
            continue;
        }
        let path = d.config.parent().expect("a directory").join(file);
        let at = format!("{}:{line}: {key}: needs the cgroup v2", path.display());
        let start = output_within(d.command(), T);
        for (what, out) in [("config check", &check), ("chimed's start", &start)] {
            assert_eq!(out.status.code(), Some(1), "{what}: {}", shown(out));
            let stderr = String::from_utf8_lossy(&out.stderr);
            assert!(
                stderr.contains(&at),
                "{what} does not say {at:?}: {}",
                shown(out)
            );
        }
    }
}
