//! Trust on a shared host: what a plain member of the socket's group can do to a root chimed,
//! tried as real unprivileged users. Each test is the attack; each fails on a chimed that lets it
//! through. Creating users needs root: elsewhere the tests say SKIPPED and check nothing.

use chime_tests::{Daemon, TestUser, is_root, skipped};
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::Command;

fn skip_unless_root(test: &str) -> bool {
    if is_root() {
        return false;
    }
    skipped(
        test,
        "needs root to create users (run the suite as root to check it)",
    );
    true
}

/// Builds a shared object whose constructor appends the effective uid of every process that
/// loads it to `record`. `None` when there is no C compiler.
fn euid_recorder(dir: &Path, record: &Path) -> Option<std::path::PathBuf> {
    let source = dir.join("recorder.c");
    std::fs::write(
        &source,
        format!(
            r#"#include <stdio.h>
#include <unistd.h>
__attribute__((constructor)) static void record(void) {{
    FILE *f = fopen("{}", "a");
    if (f) {{ fprintf(f, "%d\n", (int)geteuid()); fclose(f); }}
}}
"#,
            record.display()
        ),
    )
    .unwrap();
    let object = dir.join("recorder.so");
    let built = Command::new("cc")
        .args(["-shared", "-fPIC", "-o"])
        .arg(&object)
        .arg(&source)
        .status()
        .ok()?;
    assert!(built.success(), "cc failed to build the recorder");
    std::fs::set_permissions(&object, std::fs::Permissions::from_mode(0o755)).unwrap();
    std::fs::write(record, "").unwrap();
    std::fs::set_permissions(record, std::fs::Permissions::from_mode(0o666)).unwrap();
    Some(object)
}

/// The euids the recorder saw.
fn recorded(record: &Path) -> Vec<u32> {
    std::fs::read_to_string(record)
        .unwrap()
        .lines()
        .map(|l| l.parse().expect("a uid per line"))
        .collect()
}

/// Issue 9, item 1: a job's environment never reaches a process that still has root's privileges.
/// Before the fix, the run-as helper started as root with `LD_PRELOAD` from `--env` (or
/// `--env-inherit`), and the loader ran the user's constructor with euid 0.
#[test]
fn a_jobs_environment_never_reaches_root() {
    let test = "a_jobs_environment_never_reaches_root";
    if skip_unless_root(test) {
        return;
    }
    let d = Daemon::start_with(&["--socket-mode", "0666"]);
    let record = d.dir.path().join("euids");
    let Some(object) = euid_recorder(d.dir.path(), &record) else {
        skipped(test, "no C compiler (cc) to build the shared object");
        return;
    };
    let ann = TestUser::create("pre");
    let preload = format!("LD_PRELOAD={}", object.display());

    // --env LD_PRELOAD=...
    ann.ctl_ok(
        &d,
        &["add", "--wait", "--env", &preload, "--", "/usr/bin/id"],
    );
    let after_env = recorded(&record);

    // --env-inherit with LD_PRELOAD in the submitter's environment (set only after setpriv has
    // dropped to the user, so that only the user's own processes load it here).
    let mut cmd = ann.command("env");
    cmd.arg(&preload)
        .arg(chime_tests::public_chimectl(d.dir.path()))
        .args(["add", "--wait", "--env-inherit", "--", "/usr/bin/id"])
        .env("CHIME_SOCKET", &d.socket);
    let out = cmd.output().unwrap();
    assert!(
        out.status.success(),
        "{}\n{}",
        String::from_utf8_lossy(&out.stderr),
        d.log()
    );
    let all = recorded(&record);

    assert!(
        !all.contains(&0),
        "the user's constructor ran as root: euids {all:?}"
    );
    // The object was loaded where it may be: by the job itself, as the user (so this test can
    // see the attack work, and would see it at root).
    assert!(
        !after_env.is_empty() && after_env.iter().all(|uid| *uid == ann.uid),
        "--env: euids {after_env:?}"
    );
    assert!(
        all.len() > after_env.len() && all.iter().all(|uid| *uid == ann.uid),
        "--env-inherit: euids {all:?}"
    );
}

/// Issue 9, item 6: the existence checks of a submission run as the submitter, so a refusal tells
/// a user nothing about paths they cannot see.
#[test]
fn submission_checks_see_only_what_the_submitter_sees() {
    if skip_unless_root("submission_checks_see_only_what_the_submitter_sees") {
        return;
    }
    let d = Daemon::start_with(&["--socket-mode", "0666"]);
    let ann = TestUser::create("see");
    // A private directory with a directory and a program in it.
    let private = d.dir.path().join("private");
    std::fs::create_dir_all(private.join("inside")).unwrap();
    std::fs::write(private.join("tool"), "#!/bin/sh\n").unwrap();
    std::fs::set_permissions(private.join("tool"), std::fs::Permissions::from_mode(0o755)).unwrap();
    std::fs::set_permissions(&private, std::fs::Permissions::from_mode(0o700)).unwrap();

    let refusal = |args: &[&str]| {
        let out = ann.ctl(&d, args);
        assert!(!out.status.success(), "{args:?} was accepted");
        String::from_utf8_lossy(&out.stderr).into_owned()
    };
    let inside = private.join("inside");
    let missing = private.join("missing");
    let exists = refusal(&["add", "--cwd", inside.to_str().unwrap(), "--", "/bin/true"]);
    let absent = refusal(&["add", "--cwd", missing.to_str().unwrap(), "--", "/bin/true"]);
    let exists = exists.replace("inside", "X");
    let absent = absent.replace("missing", "X");
    assert_eq!(
        exists, absent,
        "a refusal tells whether a private directory exists"
    );

    let tool = private.join("tool");
    let none = private.join("none");
    let exists = refusal(&["add", "--", tool.to_str().unwrap()]);
    let absent = refusal(&["add", "--", none.to_str().unwrap()]);
    assert_eq!(
        exists.replace("tool", "X"),
        absent.replace("none", "X"),
        "a refusal tells whether a private program exists"
    );
    // Root sees both, and may use them.
    d.ctl_ok(&[
        "add",
        "--in",
        "1h",
        "--cwd",
        inside.to_str().unwrap(),
        "--",
        tool.to_str().unwrap(),
    ]);
}

/// The command that starts `d`, run through `sh -c SCRIPT`, which ends by exec'ing chimed (so
/// the pid stays chimed's).
fn wrapped(d: &Daemon, script: &str) -> Command {
    let inner = d.command();
    let mut cmd = Command::new("sh");
    cmd.arg("-c")
        .arg(format!("{script}; exec \"$@\""))
        .arg("sh")
        .arg(inner.get_program())
        .args(inner.get_args());
    for (key, value) in inner.get_envs() {
        match value {
            Some(value) => cmd.env(key, value),
            None => cmd.env_remove(key),
        };
    }
    cmd.stdin(std::process::Stdio::null());
    cmd
}

/// Issue 9, item 5: a descriptor chimed inherits from whoever started it reaches neither chimed's
/// jobs nor stays open in chimed. (Before the fix, a root chimed started from a shell holding
/// /etc/shadow passed it to every job.)
#[test]
fn inherited_descriptors_are_closed() {
    let mut d = Daemon::prepare(&[]);
    let secret = d.dir.path().join("secret");
    std::fs::write(&secret, "s3cret").unwrap();
    let cmd = wrapped(&d, &format!("exec 7<{}", secret.display()));
    d.launch_command(cmd).unwrap();
    let held: Vec<String> = std::fs::read_dir(format!("/proc/{}/fd", d.pid()))
        .unwrap()
        .filter_map(|e| std::fs::read_link(e.unwrap().path()).ok())
        .map(|p| p.display().to_string())
        .collect();
    assert!(
        !held.iter().any(|p| p.contains("secret")),
        "chimed still holds the inherited descriptor: {held:?}"
    );
    let id = d.add(&[
        "--shell",
        "--",
        "for f in /proc/$$/fd/*; do readlink $f; done; true",
    ]);
    d.wait_state(id, "succeeded", std::time::Duration::from_secs(20));
    let fds = d.ctl_ok(&["logs", &id.to_string()]);
    assert!(!fds.contains("secret"), "a job inherited it: {fds}");
    // Only the job's own stdin, stdout and stderr (and the directory the shell lists).
    assert!(fds.lines().count() <= 4, "{fds}");
}

/// Issue 9, item 5: the database, the run output and the lock files are private, and a state
/// directory someone else owns or may write is refused.
#[test]
fn state_is_private_and_its_directory_checked() {
    use std::os::unix::fs::MetadataExt;
    let mut d = Daemon::start();
    let id = d.add(&["--shell", "--", "echo out"]);
    d.wait_state(id, "succeeded", std::time::Duration::from_secs(20));
    let mode = |p: &Path| std::fs::metadata(p).unwrap().mode() & 0o777;
    assert_eq!(mode(&d.state_dir), 0o700);
    assert_eq!(mode(&d.state_dir.join("chime.redb")), 0o600);
    assert_eq!(mode(&d.state_dir.join("logs")), 0o700);
    assert_eq!(mode(&d.state_dir.join("chimed.lock")), 0o600);
    let socket_lock = Path::new(&format!("{}.lock", d.socket.display())).to_path_buf();
    assert_eq!(mode(&socket_lock), 0o600);
    let log = chime_tests::wait_until(
        std::time::Duration::from_secs(5),
        "the run's log file",
        || {
            walk(&d.state_dir.join("logs"))
                .into_iter()
                .find(|p| p.extension().is_some_and(|e| e == "log"))
        },
    );
    assert_eq!(mode(&log), 0o600, "{}", log.display());
    assert_eq!(mode(log.parent().unwrap()), 0o700);
    d.stop();

    // Writable by others: refused, and said so.
    std::fs::set_permissions(&d.state_dir, std::fs::Permissions::from_mode(0o777)).unwrap();
    let err = d.launch().unwrap_err();
    assert!(err.contains("may be written by group or others"), "{err}");
    std::fs::set_permissions(&d.state_dir, std::fs::Permissions::from_mode(0o700)).unwrap();
    if is_root() {
        let ann = TestUser::create("dir");
        std::os::unix::fs::chown(&d.state_dir, Some(ann.uid), None).unwrap();
        let err = d.launch().unwrap_err();
        assert!(
            err.contains(&format!("belongs to uid {}", ann.uid)),
            "{err}"
        );
        std::os::unix::fs::chown(&d.state_dir, Some(0), None).unwrap();
        assert_eq!(std::fs::metadata(&d.state_dir).unwrap().uid(), 0);
    }
    d.restart();
}

fn walk(dir: &Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        let path = entry.path();
        if path.is_dir() {
            out.extend(walk(&path));
        } else {
            out.push(path);
        }
    }
    out
}

/// Issue 9, item 5: a user who can open chimed's socket lock can hold it and keep chimed from
/// starting. The lock is private, and a lock file others could open (as older chimeds made them)
/// is replaced rather than trusted.
#[test]
fn a_user_cannot_hold_chimeds_locks() {
    if skip_unless_root("a_user_cannot_hold_chimeds_locks") {
        return;
    }
    let mut d = Daemon::start_with(&["--socket-mode", "0666"]);
    d.stop();
    let lock = format!("{}.lock", d.socket.display());
    let ann = TestUser::create("lck");
    // A private lock cannot even be opened.
    let out = ann
        .command("flock")
        .args(["-n", &lock, "true"])
        .output()
        .unwrap();
    assert!(!out.status.success(), "a user could lock {lock}");
    // A lock file left open to all, held by the user: chimed starts anyway.
    std::fs::set_permissions(&lock, std::fs::Permissions::from_mode(0o644)).unwrap();
    let mut holder = ann
        .command("flock")
        .args(["-n", &lock, "-c", "echo held; exec sleep 300"])
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut line = String::new();
    std::io::BufRead::read_line(
        &mut std::io::BufReader::new(holder.stdout.take().unwrap()),
        &mut line,
    )
    .unwrap();
    assert_eq!(
        line.trim(),
        "held",
        "the user could not take the planted lock"
    );
    let started = d.launch();
    let _ = holder.kill();
    let _ = holder.wait();
    started.unwrap();
    use std::os::unix::fs::MetadataExt;
    assert_eq!(std::fs::metadata(&lock).unwrap().mode() & 0o777, 0o600);
}
