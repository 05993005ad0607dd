//! Logging to journald: records reach the journal with chimed's tracing fields as journal fields
//! of the same name, unprefixed (`state_dir` -> `STATE_DIR`, as `job_id` -> `JOB_ID`), and
//! chimed falls back to stderr when no journald listens.
//!
//! Each test runs a stock `systemd-journald` on its own, without systemd, in a private mount
//! namespace whose /run is a fresh tmpfs: chimed's journal socket path is fixed
//! (/run/systemd/journal/socket), so this keeps the test's journal apart from the machine's, and
//! everything it writes vanishes with the namespace. That needs root, `unshare`, `nsenter` and
//! the journald binary; elsewhere the tests say so and pass without checking anything.

use chime_tests::{Daemon, is_root, skipped, wait_until};
use serde_json::Value;
use std::io::{BufRead, BufReader};
use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

const JOURNALD: &str = "/lib/systemd/systemd-journald";
const T: Duration = Duration::from_secs(20);

fn skip(test: &str) -> bool {
    let why = if !is_root() {
        "needs root for a private mount namespace"
    } else if !Path::new(JOURNALD).exists() {
        "needs systemd-journald (apt-get install systemd)"
    } else if !["unshare", "nsenter", "journalctl"]
        .iter()
        .all(|tool| Command::new(tool).arg("--version").output().is_ok())
    {
        "needs unshare, nsenter (util-linux) and journalctl"
    } else {
        return false;
    };
    skipped(test, why);
    true
}

/// A private mount namespace with a tmpfs on /run, held open by a sleeping process; killed (and
/// so gone, with its /run) on drop.
struct Namespace {
    holder: Child,
    journald: Option<Child>,
}

impl Namespace {
    fn new() -> Self {
        let mut holder = Command::new("unshare")
            .args(["--mount", "--propagation", "private", "--", "sh", "-c"])
            .arg("mount -t tmpfs -o mode=0755 tmpfs /run && echo mounted && exec sleep infinity")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .spawn()
            .expect("run unshare");
        let mut line = String::new();
        BufReader::new(holder.stdout.take().unwrap())
            .read_line(&mut line)
            .unwrap();
        assert_eq!(line, "mounted\n", "the private /run was not mounted");
        Self {
            holder,
            journald: None,
        }
    }

    /// `program args...` inside the namespace (nsenter execs it: the pid is the program's).
    fn command(&self, program: impl AsRef<std::ffi::OsStr>) -> Command {
        let mut cmd = Command::new("nsenter");
        cmd.arg("-t")
            .arg(self.holder.id().to_string())
            .args(["-m", "--"])
            .arg(program);
        cmd
    }

    /// chimed's command `cmd` (from [`Daemon::command`]), run inside the namespace.
    fn wrap(&self, cmd: &Command) -> Command {
        let mut wrapped = self.command(cmd.get_program());
        wrapped.args(cmd.get_args());
        for (key, value) in cmd.get_envs() {
            match value {
                Some(value) => wrapped.env(key, value),
                None => wrapped.env_remove(key),
            };
        }
        wrapped.stdin(Stdio::null());
        wrapped
    }

    /// Starts journald and waits until it answers (`journalctl --sync`; its socket file alone
    /// proves nothing).
    fn start_journald(&mut self) {
        let child = self
            .command(JOURNALD)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start journald");
        self.journald = Some(child);
        wait_until(Duration::from_secs(10), "journald to answer", || {
            self.journalctl(&["--sync"]).status.success().then_some(())
        });
    }

    fn journalctl(&self, args: &[&str]) -> std::process::Output {
        self.command("journalctl")
            .args(args)
            .stdin(Stdio::null())
            .output()
            .expect("run journalctl")
    }

    /// Starts chimed inside the namespace with `args` and waits for it to be ready.
    fn launch(&self, args: &[&str]) -> Daemon {
        let mut d = Daemon::prepare(args);
        d.launch_command(self.wrap(&d.command()))
            .unwrap_or_else(|err| panic!("chimed did not start: {err}"));
        d
    }

    /// The journal records of process `pid`, oldest first, once one says `last_message`.
    fn records_of(&self, pid: u32, last_message: &str) -> Vec<Value> {
        wait_until(
            T,
            &format!("{last_message:?} from pid {pid} in the journal"),
            || {
                assert!(self.journalctl(&["--sync"]).status.success());
                let out = self.journalctl(&["-o", "json", "--no-pager", &format!("_PID={pid}")]);
                let records: Vec<Value> = String::from_utf8_lossy(&out.stdout)
                    .lines()
                    .map(|line| serde_json::from_str(line).expect("journalctl prints JSON lines"))
                    .collect();
                records
                    .iter()
                    .any(|r| r["MESSAGE"] == last_message)
                    .then_some(records)
            },
        )
    }
}

impl Drop for Namespace {
    fn drop(&mut self) {
        if let Some(mut journald) = self.journald.take() {
            chime_tests::signal(journald.id(), libc::SIGTERM);
            let _ = journald.wait();
        }
        let _ = self.holder.kill();
        let _ = self.holder.wait();
    }
}

fn message<'a>(records: &'a [Value], text: &str) -> &'a Value {
    records
        .iter()
        .find(|r| r["MESSAGE"] == text)
        .unwrap_or_else(|| panic!("no {text:?} record in {records:#?}"))
}

#[test]
fn journal_records_carry_chimeds_fields_unprefixed() {
    if skip("journal_records_carry_chimeds_fields_unprefixed") {
        return;
    }
    let mut ns = Namespace::new();
    ns.start_journald();
    let mut d = ns.launch(&["--log", "journal"]);
    let pid = d.pid();
    d.ctl_ok(&["status"]);
    d.stop();

    let records = ns.records_of(pid, "stopped");
    for record in &records {
        assert_eq!(record["SYSLOG_IDENTIFIER"], "chimed", "{record:#}");
        let prefixed: Vec<_> = record
            .as_object()
            .unwrap()
            .keys()
            .filter(|k| k.starts_with("F_"))
            .collect();
        assert!(
            prefixed.is_empty(),
            "prefixed fields {prefixed:?} in {record:#}"
        );
    }
    let ready = message(&records, "chimed ready");
    assert_eq!(
        ready["STATE_DIR"],
        d.state_dir.to_str().unwrap(),
        "{ready:#}"
    );
    assert_eq!(ready["SOCKET"], d.socket.to_str().unwrap(), "{ready:#}");
    assert_eq!(ready["SOCKET_ACTIVATED"], "false", "{ready:#}");
    assert_eq!(ready["RECOVERED_LOST"], "0", "{ready:#}");
    // Records went to the journal, not to stderr.
    assert!(!d.log().contains("chimed ready"), "{}", d.log());
}

#[test]
fn by_default_chimed_logs_to_the_journal_when_stderr_is_the_journal_stream() {
    if skip("by_default_chimed_logs_to_the_journal_when_stderr_is_the_journal_stream") {
        return;
    }
    let mut ns = Namespace::new();
    ns.start_journald();
    // What systemd does for a service: JOURNAL_STREAM names stderr's device and inode. Here
    // stderr is the test's log file, so the variable names that file.
    let mut d = Daemon::prepare(&[]);
    let log = d.dir.path().join("chimed.log");
    std::fs::write(&log, "").unwrap();
    let meta = std::fs::metadata(&log).unwrap();
    let mut cmd = d.command();
    cmd.env("JOURNAL_STREAM", format!("{}:{}", meta.dev(), meta.ino()));
    d.launch_command(ns.wrap(&cmd))
        .unwrap_or_else(|err| panic!("chimed did not start: {err}"));
    let pid = d.pid();
    d.stop();
    let records = ns.records_of(pid, "stopped");
    assert_eq!(
        message(&records, "chimed ready")["SYSLOG_IDENTIFIER"],
        "chimed"
    );

    // A JOURNAL_STREAM that is not stderr (inherited from elsewhere) means stderr.
    let mut cmd = d.command();
    cmd.env(
        "JOURNAL_STREAM",
        format!("{}:{}", meta.dev(), meta.ino() + 1),
    );
    d.launch_command(ns.wrap(&cmd))
        .unwrap_or_else(|err| panic!("chimed did not restart: {err}"));
    d.stop();
    assert!(d.log().contains("chimed ready"), "{}", d.log());
}

#[test]
fn without_journald_logs_go_to_stderr_with_a_warning() {
    if skip("without_journald_logs_go_to_stderr_with_a_warning") {
        return;
    }
    let ns = Namespace::new();
    let mut d = ns.launch(&["--log", "journal"]);
    d.ctl_ok(&["status"]);
    d.stop();
    let log = d.log();
    assert!(
        log.contains("journald cannot be reached; logging to stderr instead"),
        "{log}"
    );
    assert!(log.contains("chimed ready"), "{log}");
}

#[test]
fn a_jobs_runs_and_its_output_lines_are_in_the_journal_under_its_job_id() {
    if skip("a_jobs_runs_and_its_output_lines_are_in_the_journal_under_its_job_id") {
        return;
    }
    let mut ns = Namespace::new();
    ns.start_journald();
    let mut d = ns.launch(&["--log", "journal"]);
    let pid = d.pid();
    let waited = d.ctl_json(&[
        "add",
        "--name",
        "talker",
        "--output",
        "journal",
        "--wait",
        "--shell",
        "--",
        "echo first; echo oops >&2; printf last",
    ]);
    let id = waited["id"].to_string();
    let quiet = d.ctl_json(&["add", "--wait", "--", "/bin/echo", "not in the journal"]);
    d.stop();
    let records = ns.records_of(pid, "stopped");
    let of_job: Vec<&Value> = records
        .iter()
        .filter(|r| r["JOB_ID"] == id.as_str())
        .collect();
    let messages: Vec<&str> = of_job
        .iter()
        .map(|r| r["MESSAGE"].as_str().unwrap())
        .collect();
    // Who added it (the audit record), the run's start, its output lines (the last one without
    // a newline too), its end.
    assert_eq!(
        messages[..2],
        ["change by a user", "run started"],
        "{messages:?}"
    );
    let audit = of_job
        .iter()
        .find(|r| r["MESSAGE"] == "change by a user")
        .unwrap();
    assert_eq!(audit["REQUEST"], "add", "{audit:#}");
    assert_eq!(
        audit["ACTOR_UID"],
        nix::unistd::getuid().as_raw().to_string(),
        "{audit:#}"
    );
    let started = of_job
        .iter()
        .find(|r| r["MESSAGE"] == "run started")
        .unwrap();
    assert_eq!(
        started["COMMAND"], "echo first; echo oops >&2; printf last",
        "{started:#}"
    );
    assert!(started["USER"].is_string(), "{started:#}");
    assert_eq!(messages.last(), Some(&"run ended"), "{messages:?}");
    for line in ["first", "oops", "last"] {
        assert!(
            messages.contains(&line),
            "{line:?} missing from {messages:?}"
        );
    }
    let oops = of_job.iter().find(|r| r["MESSAGE"] == "oops").unwrap();
    assert_eq!(oops["STREAM"], "stderr", "{oops:#}");
    assert_eq!(oops["JOB_NAME"], "talker", "{oops:#}");
    let ended = of_job.iter().find(|r| r["MESSAGE"] == "run ended").unwrap();
    assert_eq!(ended["EXIT_CODE"], "0", "{ended:#}");
    assert_eq!(ended["STATE"], "exited", "{ended:#}");
    assert_eq!(ended["RUN_ID"], oops["RUN_ID"], "{ended:#}");
    // A job without --output journal has its start and end there, not its output.
    let quiet_id = quiet["id"].to_string();
    let quiet: Vec<&str> = records
        .iter()
        .filter(|r| r["JOB_ID"] == quiet_id.as_str())
        .map(|r| r["MESSAGE"].as_str().unwrap())
        .collect();
    assert_eq!(quiet, ["change by a user", "run started", "run ended"]);
}
