//! One check of a job spec (issue 11): `chimectl add`, `chimectl config check` (which runs
//! `chimed --check-config`) and chimed's start all meet the same rules and name the same field,
//! as an option for chimectl and as a key and line for a job file. The three defects the issue
//! reproduced are here: an oversized `env` in a job file reported at `:0: cwd:`; an `until`
//! before the first occurrence passing `config check` silently and then stopping chimed's start
//! with a message about `--until`; and a default `PATH` that differed between the check and the
//! run. And one found on the way: a job file whose `until` had passed stopped every later start.

use chime_tests::{Daemon, TestUser, bin, is_root, output_within, shown, skipped, wait_until};
use std::path::Path;
use std::process::{Command, Output};
use std::time::Duration;

const T: Duration = Duration::from_secs(30);

/// `chimectl config check PATH`.
fn config_check(path: &Path) -> Output {
    let mut cmd = Command::new(bin("chimectl"));
    cmd.args(["config", "check"]).arg(path).env("TZ", "UTC");
    output_within(cmd, T)
}

/// A daemon with `jobs.d/x.toml` holding `job`: what `config check` and a start say of it.
fn checked_and_started(job: &str) -> (Daemon, Output, Output) {
    let d = Daemon::prepare(&[]);
    d.write_config("");
    d.write_job("x", job);
    let check = config_check(&d.config);
    let start = output_within(d.command(), T);
    (d, check, start)
}

/// Both refused, both saying `PREFIX` (`jobs.d/x.toml:LINE: KEY: `) at the start of a line.
fn assert_both_refuse(d: &Daemon, check: &Output, start: &Output, line: usize, key: &str) {
    let at = format!("{}:{line}: {key}: ", d.jobs_dir().join("x.toml").display());
    assert!(
        !check.status.success(),
        "config check passed: {}",
        shown(check)
    );
    assert!(!start.status.success(), "chimed started: {}", shown(start));
    for (what, out) in [("config check", check), ("chimed's start", start)] {
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(
            stderr.lines().any(|l| l.trim_start().starts_with(&at)),
            "{what} does not say {at:?}: {}",
            shown(out)
        );
    }
}

#[test]
fn an_oversized_environment_in_a_job_file_is_reported_at_its_key() {
    // Three entries of 100,000 bytes: more than the 256 KiB a spec may take, each less than the
    // 128 KiB one argument of chimectl may be.
    let big = "x".repeat(100_000);
    let (d, check, start) = checked_and_started(&format!(
        "timer = true\nevery = \"1h\"\ncwd = \"/\"\n\nenv = {{ A = \"{big}\", B = \"{big}\", C = \"{big}\" }}\n"
    ));
    assert_both_refuse(&d, &check, &start, 5, "env");
    // chimectl names the same field by its option.
    let d = Daemon::start();
    let (a, b, c) = (format!("A={big}"), format!("B={big}"), format!("C={big}"));
    let out = d.ctl(&[
        "add",
        "--every",
        "1h",
        "--env",
        &a,
        "--env",
        &b,
        "--env",
        &c,
        "--",
        "/bin/true",
    ]);
    assert!(!out.status.success(), "{}", shown(&out));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("chimectl: --env: "), "{}", shown(&out));
}

#[test]
fn an_until_before_the_first_occurrence_is_named_everywhere_at_its_line() {
    let mut d = Daemon::prepare(&[]);
    d.write_config("");
    d.write_job(
        "x",
        "timer = true\nevery = \"1h\"\nfrom = \"2100-01-01 00:00\"\nuntil = \"2099-06-01 00:00\"\n",
    );
    let at = format!(
        "{}:4: until: is before the first occurrence",
        d.jobs_dir().join("x.toml").display()
    );
    // Nothing would ever run. Time alone never makes a file wrong (an old file may be restored
    // from a backup), so everywhere this is a warning at the line, not a refusal of the start.
    let check = config_check(&d.config);
    let said = String::from_utf8_lossy(&check.stderr);
    assert!(
        check.status.success() && said.contains(&format!("warning: {at}")),
        "config check: {}",
        shown(&check)
    );
    d.launch()
        .expect("chimed starts beside a file that declares nothing to run");
    let log = d.log();
    assert!(
        log.lines().any(|l| l.contains("WARN") && l.contains(&at)),
        "chimed's log does not warn at {at:?}: {log}"
    );
    assert!(!log.contains("--until"), "a job file has no options: {log}");
    assert_eq!(
        d.ctl_json(&["ls"])["jobs"].as_array().map(Vec::len),
        Some(0),
        "no job was added"
    );
    let reload = d.ctl(&["--json", "reload"]);
    assert!(reload.status.success(), "reload: {}", shown(&reload));
    let report: serde_json::Value = serde_json::from_slice(&reload.stdout).expect("reload --json");
    let warnings = report["warnings"].as_array().cloned().unwrap_or_default();
    assert!(
        warnings
            .iter()
            .any(|w| w.as_str().is_some_and(|w| w.starts_with(&at))),
        "reload does not warn at {at:?}: {report}"
    );
    // A submission is refused outright: the user is there to hear it.
    let out = d.ctl(&[
        "add",
        "--every",
        "1h",
        "--from",
        "2100-01-01 00:00",
        "--until",
        "2099-06-01 00:00",
        "--",
        "/bin/true",
    ]);
    assert!(!out.status.success(), "{}", shown(&out));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("chimectl: --until: is before the first occurrence"),
        "{}",
        shown(&out)
    );
    assert_eq!(
        d.ctl_json(&["ls"])["jobs"].as_array().map(Vec::len),
        Some(0),
        "nothing was stored"
    );
}

/// A declared job whose `until` passes has run out: chimed starts again as before, keeping it,
/// a reload leaves it as it is, and a change of `[defaults]` (which changes the declaration)
/// does not stop a start either.
#[test]
fn a_job_file_whose_until_has_passed_does_not_stop_a_restart() {
    let mut d = Daemon::prepare(&[]);
    d.write_config("");
    let until = jiff::Timestamp::now() + jiff::SignedDuration::from_secs(2);
    let until = until.strftime("%Y-%m-%d %H:%M:%S").to_string();
    d.write_job(
        "short",
        &format!("timer = true\nevery = \"1h\"\ntz = \"UTC\"\nuntil = \"{until}\"\n"),
    );
    d.launch().expect("chimed starts with the job file");
    let id = d.show_ref("short")["id"]
        .as_u64()
        .expect("the declared job");
    d.stop();
    wait_until(T, "the job's until to pass", || {
        (jiff::Timestamp::now()
            .strftime("%Y-%m-%d %H:%M:%S")
            .to_string()
            > until)
            .then_some(())
    });
    d.launch()
        .expect("chimed starts again once the job's until has passed");
    assert_eq!(
        d.show_ref("short")["id"].as_u64(),
        Some(id),
        "the same job, kept"
    );
    let out = d.ctl(&["reload"]);
    assert!(out.status.success(), "reload: {}", shown(&out));
    // A change elsewhere makes the declaration differ (its defaults are part of it): it is
    // applied, and its job, with nothing left to run, stays ended.
    d.stop();
    d.write_config("[defaults]\nretries = 1\n");
    d.launch()
        .expect("chimed starts after [defaults] changed under a job that has run out");
    let job = d.show_ref("short");
    assert_eq!(job["id"].as_u64(), Some(id), "the same job: {job}");
    assert!(job["next_due_at"].is_null(), "nothing left to run: {job}");
}

/// A program found only in an `sbin` directory: what the check accepts is what runs, for a
/// user's chimed as for root's (one default `PATH`).
#[test]
fn a_users_chimed_runs_what_its_check_accepted() {
    let test = "a_users_chimed_runs_what_its_check_accepted";
    if !is_root() {
        return skipped(test, "it creates a user, which needs root");
    }
    if !Path::new("/usr/sbin/sysctl").exists() && !Path::new("/sbin/sysctl").exists() {
        return skipped(test, "sysctl is not installed in an sbin directory");
    }
    let bob = TestUser::create("spec");
    let mut d = Daemon::prepare(&[]);
    d.write_config("");
    d.write_job(
        "kernel",
        "command = [\"sysctl\", \"-n\", \"kernel.ostype\"]\nevery = \"1h\"\ncwd = \"/\"\n",
    );
    let cmd = d.command_as(&bob);
    // Checked as bob, as bob's chimed will read it.
    let mut check = bob.ctl_command(&d, &["config", "check"]);
    check.arg(&d.config);
    let check = output_within(check, T);
    assert!(
        check.status.success(),
        "config check as bob: {}",
        shown(&check)
    );
    d.launch_command(cmd)
        .unwrap_or_else(|err| panic!("bob's chimed did not start: {err}"));
    bob.ctl_ok(&d, &["trigger", "kernel"]);
    let run = wait_until(T, "the triggered run of kernel to end", || {
        let shown: serde_json::Value =
            serde_json::from_str(&bob.ctl_ok(&d, &["--json", "show", "kernel"])).ok()?;
        let run = shown["runs"].as_array()?.last()?.clone();
        run["outcome"].is_string().then_some(run)
    });
    assert_eq!(
        run["outcome"], "exited",
        "the run that the check accepted did not run: {run}"
    );
    assert_eq!(run["exit_code"], 0, "{run}");
}

/// A fresh install has no chimed.toml, and chimed runs on its defaults: checking the default is
/// fine. A path given that names nothing is a typo, and says so.
#[test]
fn config_check_of_a_path_that_does_not_exist_fails() {
    let dir = tempfile::tempdir().expect("temp dir");
    let out = config_check(&dir.path().join("chimed.tml"));
    assert!(!out.status.success(), "{}", shown(&out));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("does not exist"),
        "{}",
        shown(&out)
    );
}
