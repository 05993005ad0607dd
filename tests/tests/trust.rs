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
        .args([
            "--json",
            "add",
            "--wait",
            "--env-inherit",
            "--",
            "/usr/bin/env",
        ])
        .env("CHIME_SOCKET", &d.socket);
    let out = cmd.output().unwrap();
    assert!(
        out.status.success(),
        "{}\n{}",
        String::from_utf8_lossy(&out.stderr),
        d.log()
    );
    let all = recorded(&record);
    // The job itself got the variable (so the attack was made, and failed only at root).
    let waited: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let env_out = d.ctl_ok(&["logs", &waited["id"].to_string()]);
    assert!(env_out.contains(&preload), "{env_out}");

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

/// Issue 9, item 5: a descriptor chimed inherits from whoever started it reaches neither chimed's
/// jobs nor stays open in chimed. (Before the fix, a root chimed started from a shell holding
/// /etc/shadow passed it to every job.)
#[test]
fn inherited_descriptors_are_closed() {
    let mut d = Daemon::prepare(&[]);
    let secret = d.dir.path().join("secret");
    std::fs::write(&secret, "s3cret").unwrap();
    let cmd = d.command_after(&format!("exec 7<{}", secret.display()));
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

/// Waits until the job's latest run has ended and returns it (`show --json`'s run).
fn ended_run(d: &Daemon, job: u64, runs: usize) -> serde_json::Value {
    chime_tests::wait_until(
        std::time::Duration::from_secs(20),
        &format!("run {runs} of job {job} to end"),
        || {
            let shown = d.show(job);
            let all = shown["runs"].as_array()?.clone();
            (all.len() >= runs && !all[runs - 1]["outcome"].is_null())
                .then(|| all[runs - 1].clone())
        },
    )
}

/// A directory anyone may write, for jobs' markers.
fn shared_dir(d: &Daemon) -> std::path::PathBuf {
    let dir = d.dir.path().join("shared");
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o1777)).unwrap();
    dir
}

/// Issue 9, item 4: jobs are kept by uid, and a deleted user's uid may be given to the next
/// account. Before the fix, the job then ran as that account.
#[test]
fn a_deleted_users_job_never_runs_as_the_next_owner_of_the_uid() {
    if skip_unless_root("a_deleted_users_job_never_runs_as_the_next_owner_of_the_uid") {
        return;
    }
    let d = Daemon::start_with(&["--socket-mode", "0666"]);
    let dir = shared_dir(&d);
    let marker = dir.join("ran-as");
    // A uid outside the range system accounts are given from, so that no other test's user
    // takes it between ann's deletion and bob's creation.
    let free = (61_000..65_000)
        .find(|uid| {
            nix::unistd::User::from_uid(nix::unistd::Uid::from_raw(*uid))
                .ok()
                .flatten()
                .is_none()
        })
        .expect("a free uid");
    let ann = TestUser::create_with_uid("gone", free);
    let script = format!("id -un > {}", marker.display());
    let id = ann.add(
        &d,
        &["--name", "mine", "--in", "1h", "--shell", "--", &script],
    );
    let uid = ann.uid;
    drop(ann);
    let bob = TestUser::create_with_uid("next", uid);
    d.ctl_ok(&["trigger", &id.to_string()]);
    let run = ended_run(&d, id, 1);
    assert_eq!(run["outcome"], "spawn_error", "{run}");
    let error = run["error"].as_str().unwrap_or_default();
    assert!(error.contains("no longer exists"), "{error}");
    assert!(
        !marker.exists(),
        "the job ran as {}",
        std::fs::read_to_string(&marker).unwrap_or_default()
    );
    // The refusal is in chimed's log, with the job, and the job is still there.
    assert!(d.log().contains("no longer exists"), "{}", d.log());
    assert_eq!(d.show(id)["state"], "scheduled");
    drop(bob);
}

/// Issue 9, item 4: an expired (locked) account's jobs do not run, and run again once it is
/// unlocked.
#[test]
fn an_expired_accounts_jobs_do_not_run() {
    if skip_unless_root("an_expired_accounts_jobs_do_not_run") {
        return;
    }
    let d = Daemon::start_with(&["--socket-mode", "0666"]);
    let ann = TestUser::create("exp");
    let id = ann.add(&d, &["--in", "1h", "--", "/bin/true"]);
    let usermod = |args: &[&str]| {
        let status = Command::new("usermod")
            .args(args)
            .arg(&ann.name)
            .status()
            .unwrap();
        assert!(status.success(), "usermod {args:?}");
    };
    usermod(&["--expiredate", "1"]);
    d.ctl_ok(&["trigger", &id.to_string()]);
    let run = ended_run(&d, id, 1);
    assert_eq!(run["outcome"], "spawn_error", "{run}");
    assert!(
        run["error"]
            .as_str()
            .unwrap_or_default()
            .contains("expired"),
        "{run}"
    );
    usermod(&["--expiredate", ""]);
    d.ctl_ok(&["trigger", &id.to_string()]);
    let run = ended_run(&d, id, 2);
    assert_eq!(run["outcome"], "exited", "{run}");
    assert_eq!(run["exit_code"], 0, "{run}");
}

/// A PAM service file for one test, removed when dropped.
struct PamService {
    name: String,
}

impl PamService {
    fn new(stack: &str) -> Self {
        let service = Self {
            name: format!("chime-test-{}", std::process::id()),
        };
        service.set(stack);
        service
    }

    fn set(&self, stack: &str) {
        std::fs::write(Path::new("/etc/pam.d").join(&self.name), stack).unwrap();
    }
}

impl Drop for PamService {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(Path::new("/etc/pam.d").join(&self.name));
    }
}

/// Issue 9, item 4: where PAM is installed, its account stack decides too, and `status` says
/// which checks are in force.
#[test]
fn pams_account_stack_is_checked_before_each_run() {
    if skip_unless_root("pams_account_stack_is_checked_before_each_run") {
        return;
    }
    if !Path::new("/etc/pam.d").is_dir() {
        skipped(
            "pams_account_stack_is_checked_before_each_run",
            "no /etc/pam.d",
        );
        return;
    }
    let pam = PamService::new("account required pam_deny.so\n");
    let mut d = Daemon::prepare(&["--socket-mode", "0666"]);
    d.write_config(&format!("pam_service = \"{}\"\n", pam.name));
    d.launch().unwrap();
    let status = d.ctl_json(&["status"]);
    let checks = status["account_check"].as_str().unwrap();
    assert!(
        checks.contains(&format!("PAM service {}", pam.name)),
        "{checks}"
    );
    let ann = TestUser::create("pam");
    let id = ann.add(&d, &["--in", "1h", "--", "/bin/true"]);
    d.ctl_ok(&["trigger", &id.to_string()]);
    let run = ended_run(&d, id, 1);
    assert_eq!(run["outcome"], "spawn_error", "{run}");
    assert!(
        run["error"].as_str().unwrap_or_default().contains("PAM"),
        "{run}"
    );
    pam.set("account required pam_permit.so\n");
    d.ctl_ok(&["trigger", &id.to_string()]);
    let run = ended_run(&d, id, 2);
    assert_eq!(run["outcome"], "exited", "{run}");
    // Without the service file, chimed says PAM is not in force.
    drop(pam);
    let plain = Daemon::start();
    let checks = plain.ctl_json(&["status"])["account_check"]
        .as_str()
        .unwrap()
        .to_owned();
    assert!(checks.contains("no PAM"), "{checks}");
}

/// Issue 9, fair limits: names are per owner. A user's name never blocks root's or another user's
/// job; root names another user's job as USER/NAME, and is told when a bare name is ambiguous.
#[test]
fn names_belong_to_their_owners() {
    if skip_unless_root("names_belong_to_their_owners") {
        return;
    }
    let d = Daemon::start_with(&["--socket-mode", "0666"]);
    let ann = TestUser::create("nan");
    let bob = TestUser::create("nbo");
    let anns = ann.add(&d, &["--name", "backup", "--in", "1h", "--", "/bin/true"]);
    let bobs = bob.add(&d, &["--name", "backup", "--in", "1h", "--", "/bin/true"]);
    let roots = d.add(&["--name", "backup", "--in", "1h", "--", "/bin/true"]);
    assert_ne!(anns, bobs);
    // Each sees their own under the name.
    let id_of = |out: String| -> u64 {
        serde_json::from_str::<serde_json::Value>(&out).unwrap()["id"]
            .as_u64()
            .unwrap()
    };
    assert_eq!(id_of(ann.ctl_ok(&d, &["--json", "show", "backup"])), anns);
    assert_eq!(id_of(bob.ctl_ok(&d, &["--json", "show", "backup"])), bobs);
    assert_eq!(d.show_ref("backup")["id"], roots);
    assert_eq!(d.show_ref(&format!("{}/backup", ann.name))["id"], anns);
    // Ann cannot reach Bob's by USER/NAME either.
    let out = ann.ctl(&d, &["show", &format!("{}/backup", bob.name)]);
    assert!(!out.status.success());
    // Without root's own, the bare name is ambiguous for root, who is told how to choose.
    d.ctl_ok(&["rm", &roots.to_string()]);
    let out = d.ctl(&["show", "backup"]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains(&format!("{}/backup", ann.name))
            && err.contains(&format!("{}/backup", bob.name)),
        "{err}"
    );
    // Root acts on a user's job by USER/NAME, and the change records who made it.
    d.ctl_ok(&["cancel", &format!("{}/backup", ann.name)]);
    assert_eq!(d.show(anns)["state"], "cancelled");
    let events = d.ctl_ok(&[
        "--json",
        "watch",
        "--since",
        "0",
        "--job",
        &anns.to_string(),
        "--count",
        "2",
    ]);
    let cancelled: Vec<serde_json::Value> = events
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .filter(|e: &serde_json::Value| e["event"] == "state")
        .collect();
    assert_eq!(cancelled.len(), 1, "{events}");
    assert_eq!(cancelled[0]["actor_uid"], 0, "{events}");
    assert_eq!(cancelled[0]["owner_uid"], ann.uid, "{events}");
    let added: serde_json::Value = serde_json::from_str(events.lines().next().unwrap()).unwrap();
    assert_eq!(added["actor_uid"], ann.uid, "{events}");
    // One audit record says who did it, at the default level.
    let log = d.log();
    assert!(
        log.lines().any(|l| l.contains("change by a user")
            && l.contains("actor_uid=0")
            && l.contains("request=\"cancel\"")
            && l.contains(&format!("owner_uid={}", ann.uid))),
        "{log}"
    );
}

/// Issue 9, fair limits: a declared job's name is the administrator's. A user's job of that name
/// loses it (and keeps running under its id) instead of keeping the job file from applying or
/// chimed from starting.
#[test]
fn a_users_job_never_blocks_a_declared_name() {
    if skip_unless_root("a_users_job_never_blocks_a_declared_name") {
        return;
    }
    let mut d = Daemon::start_with(&["--socket-mode", "0666"]);
    let ann = TestUser::create("dec");
    let mine = ann.add(&d, &["--name", "nightly", "--in", "1h", "--", "/bin/true"]);
    d.stop();
    d.write_job(
        "nightly",
        &format!(
            "user = \"{}\"\ncron = \"0 3 * * *\"\ncommand = [\"/bin/true\"]\ncwd = \"/tmp\"\n",
            ann.name
        ),
    );
    d.restart();
    let declared = d.show_ref(&format!("{}/nightly", ann.name));
    assert_ne!(declared["id"], mine);
    assert!(
        declared["source"]
            .as_str()
            .unwrap()
            .ends_with("nightly.toml")
    );
    let old = d.show(mine);
    assert_eq!(old["name"], serde_json::Value::Null, "{old}");
    assert_eq!(old["state"], "scheduled");
    // And Ann cannot take it back from chimectl.
    let out = ann.ctl(
        &d,
        &["add", "--name", "nightly", "--replace", "--", "/bin/true"],
    );
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("is declared in"),
        "{out:?}"
    );
}

/// Issue 9, item 7: each run's start record names its owner and command, as cron logs
/// `(user) CMD (command)`.
#[test]
fn a_runs_start_record_names_its_owner_and_command() {
    let d = Daemon::start();
    let id = d.add(&["--", "/bin/echo", "audit me"]);
    d.wait_state(id, "succeeded", std::time::Duration::from_secs(20));
    let user = nix::unistd::User::from_uid(nix::unistd::getuid())
        .unwrap()
        .unwrap()
        .name;
    let log = d.log();
    let line = log
        .lines()
        .find(|l| l.contains("run started") && l.contains(&format!("job_id={id}")))
        .unwrap_or_else(|| panic!("no start record:\n{log}"));
    assert!(
        line.contains(&format!("user=\"{user}\"")) || line.contains(&format!("user={user}")),
        "{line}"
    );
    assert!(line.contains("/bin/echo 'audit me'"), "{line}");
    assert!(line.contains("owner_uid="), "{line}");
}
