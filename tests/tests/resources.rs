//! Resource limits (issue 12): a limit whose cgroup v2 controller chimed's runs' cgroups do not
//! have is refused when it is submitted, naming its option, and the same limit in a job file,
//! in `[defaults]` or under a queue stops `config check` and chimed's start at its line.
//! `--keep-children` needs no controller: it is accepted and shown.
//!
//! chimed does not report its controllers yet (`status --json` has no such field; the runner
//! engineer finds them with chimed's cgroup subtree and will expose them), and until then it
//! has none, so every limit is refused here. When `status` shows them, these tests should check
//! the refusal only for a controller the daemon reports missing, and the acceptance otherwise.

use chime_tests::{Daemon, bin, output_within, shown};
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

#[test]
fn a_limit_without_its_controller_is_refused_at_submit() {
    let d = Daemon::start();
    for (args, flag, controller) in [
        (["--memory-max", "64M"], "--memory-max", "memory"),
        (["--cpu-quota", "50%"], "--cpu-quota", "cpu"),
        (["--tasks-max", "64"], "--tasks-max", "pids"),
        (["--io-weight", "200"], "--io-weight", "io"),
    ] {
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
    }
    // Nothing was stored.
    let listed = d.ctl_json(&["ls"]);
    assert_eq!(listed["jobs"].as_array().map(Vec::len), Some(0), "{listed}");
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

#[test]
fn a_limit_in_a_job_file_or_the_configuration_stops_check_and_start_at_its_line() {
    for (config, job, file, line, key) in [
        (
            "",
            "command = [\"/bin/true\"]\nevery = \"1h\"\ncwd = \"/\"\nmemory_max = \"64M\"\n",
            "jobs.d/x.toml",
            4,
            "memory_max",
        ),
        (
            "[defaults]\ncpu_quota = \"50%\"\n",
            "command = [\"/bin/true\"]\nevery = \"1h\"\ncwd = \"/\"\n",
            "chimed.toml",
            2,
            "cpu_quota",
        ),
        (
            "[queues.io]\nparallel = 2\nio_weight = 200\n",
            "command = [\"/bin/true\"]\nevery = \"1h\"\ncwd = \"/\"\n",
            "chimed.toml",
            3,
            "io_weight",
        ),
    ] {
        let d = Daemon::prepare(&[]);
        d.write_config(config);
        d.write_job("x", job);
        let path = d.config.parent().expect("a directory").join(file);
        let at = format!("{}:{line}: {key}: needs the cgroup v2", path.display());
        let mut check = Command::new(bin("chimectl"));
        check.args(["config", "check"]).arg(&d.config);
        let check = output_within(check, T);
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
