//! Planted sockets (issue 9): a socket is only a path, and whoever listens there first hears what
//! a client sends, its jobs' environment included. chimectl talks only to a chimed run by root or
//! by its own user, and no default path lies in a directory others may write. These tests create
//! users, so they need root; elsewhere they say so and pass without checking anything.

use chime_tests::{
    Daemon, TestUser, is_root, public_chimectl, public_chimed, shown, skipped, wait_until,
};
use std::path::{Path, PathBuf};
use std::process::{Child, Stdio};
use std::time::Duration;

const T: Duration = Duration::from_secs(20);

/// The secret a planted socket would steal.
const SECRET: &str = "CHIME_TEST_SECRET=hunter2";

/// Removes a directory when dropped, and any left from an earlier run when made.
struct RemovedOnDrop(PathBuf);

impl RemovedOnDrop {
    fn new(path: PathBuf) -> Self {
        let _ = std::fs::remove_dir_all(&path);
        Self(path)
    }
}

impl Drop for RemovedOnDrop {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A process this test started, killed and reaped when dropped.
struct Started(Child);

impl Drop for Started {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// The uid `uid`'s connections that `daemon` (logging at debug) accepted a hello from.
fn hellos_from(daemon: &Daemon, uid: u32) -> Vec<String> {
    daemon
        .log()
        .lines()
        .filter(|line| line.contains("client connected") && line.contains(&format!("uid={uid} ")))
        .map(str::to_owned)
        .collect()
}

/// Bob's own chimed, on `socket` if given, logging every connection.
fn bobs_chimed(bob: &TestUser, socket: Option<&Path>) -> Daemon {
    let mut d = Daemon::prepare(&["--socket-mode", "0666"]);
    if let Some(socket) = socket {
        d.socket = socket.to_owned();
    }
    let mut cmd = d.command_as(bob);
    cmd.env("CHIME_LOG", "debug");
    d.launch_command(cmd)
        .unwrap_or_else(|err| panic!("bob's chimed did not start: {err}"));
    d
}

/// Bob's jobs, as bob sees them through his own chimed.
fn bobs_jobs(bob: &TestUser, d: &Daemon) -> serde_json::Value {
    let listed: serde_json::Value =
        serde_json::from_str(&bob.ctl_ok(d, &["--json", "ls"])).expect("ls --json");
    listed["jobs"].clone()
}

#[test]
fn chimectl_refuses_a_socket_served_by_another_user() {
    let test = "chimectl_refuses_a_socket_served_by_another_user";
    if !is_root() {
        return skipped(test, "needs root to create users");
    }
    let ann = TestUser::create("ann");
    let bob = TestUser::create("bob");
    let d = bobs_chimed(&bob, None);
    let refusal = format!(
        "chimectl: refusing to talk to {}: it is served by uid {} ({}), which is neither root \
         nor you",
        d.socket.display(),
        bob.uid,
        bob.name
    );

    // Through CHIME_SOCKET.
    let out = ann.ctl(&d, &["add", "--env", SECRET, "--", "/bin/true"]);
    assert_eq!(out.status.code(), Some(1), "{}", shown(&out));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.starts_with(&refusal), "{}", shown(&out));
    assert!(
        err.contains("remove it, or point --socket at your chimed"),
        "{}",
        shown(&out)
    );
    assert!(out.stdout.is_empty(), "{}", shown(&out));

    // Through --socket.
    let out = ann
        .command(public_chimectl(d.dir.path()))
        .arg("--socket")
        .arg(&d.socket)
        .args(["add", "--env", SECRET, "--", "/bin/true"])
        .env_remove("CHIME_SOCKET")
        .output()
        .expect("run chimectl as ann");
    assert_eq!(out.status.code(), Some(1), "{}", shown(&out));
    assert!(
        String::from_utf8_lossy(&out.stderr).starts_with(&refusal),
        "{}",
        shown(&out)
    );

    // Bob's chimed heard nothing from ann: not even her hello, so no job and no secret.
    assert_eq!(bobs_jobs(&bob, &d), serde_json::json!([]));
    assert_eq!(
        hellos_from(&d, ann.uid),
        Vec::<String>::new(),
        "{}",
        d.log()
    );
    assert!(!d.log().contains("hunter2"), "{}", d.log());
    // Bob's own chimectl talks to it (the check lets a user's own chimed through).
    assert!(!hellos_from(&d, bob.uid).is_empty(), "{}", d.log());
}

#[test]
fn without_a_runtime_directory_chimectl_ignores_a_socket_planted_in_tmp() {
    let test = "without_a_runtime_directory_chimectl_ignores_a_socket_planted_in_tmp";
    if !is_root() {
        return skipped(test, "needs root to create users");
    }
    let system = Path::new("/run/chime/chimed.sock");
    if system.exists() {
        return skipped(
            test,
            "a system chimed's socket exists here; ann's chimectl would talk to it",
        );
    }
    let ann = TestUser::create("ann");
    let bob = TestUser::create("bob");
    if Path::new(&format!("/run/user/{}", ann.uid)).exists() {
        return skipped(test, "the new user already has a /run/user directory");
    }
    // The old default socket of a user without XDG_RUNTIME_DIR: bob's chimed listens there
    // first (and makes the directory, as bob).
    let planted_dir = RemovedOnDrop::new(PathBuf::from(format!("/tmp/chime-{}", ann.uid)));
    let planted = planted_dir.0.join("chimed.sock");
    let d = bobs_chimed(&bob, Some(&planted));
    assert!(planted.exists());

    let out = ann
        .command(public_chimectl(d.dir.path()))
        .args(["add", "--env", SECRET, "--", "/bin/true"])
        .env_remove("CHIME_SOCKET")
        .env_remove("XDG_RUNTIME_DIR")
        .output()
        .expect("run chimectl as ann");
    // 69: no chimed could be reached (the system one is not running here), not a refusal.
    assert_eq!(out.status.code(), Some(69), "{}", shown(&out));
    let err = String::from_utf8_lossy(&out.stderr);
    // She went to the system chimed, which is not running here, and was told why she went there.
    assert!(
        err.starts_with("chimectl: cannot connect to chimed at /run/chime/chimed.sock: "),
        "{}",
        shown(&out)
    );
    assert!(err.contains("XDG_RUNTIME_DIR"), "{}", shown(&out));
    assert!(
        !err.contains(&planted.display().to_string()),
        "{}",
        shown(&out)
    );
    assert_eq!(
        hellos_from(&d, ann.uid),
        Vec::<String>::new(),
        "{}",
        d.log()
    );
    assert_eq!(bobs_jobs(&bob, &d), serde_json::json!([]));
    assert!(
        !system.exists(),
        "the test must not create the system socket"
    );
}

#[test]
fn a_users_chimed_without_a_runtime_directory_needs_a_socket() {
    let test = "a_users_chimed_without_a_runtime_directory_needs_a_socket";
    if !is_root() {
        return skipped(test, "needs root to create users");
    }
    let bob = TestUser::create("bob");
    if Path::new(&format!("/run/user/{}", bob.uid)).exists() {
        return skipped(test, "the new user already has a /run/user directory");
    }
    let dir = tempfile::Builder::new()
        .prefix("chime-test-")
        .tempdir()
        .expect("temp dir");
    std::os::unix::fs::chown(dir.path(), Some(bob.uid), Some(bob.gid)).unwrap();
    let old_default = RemovedOnDrop::new(PathBuf::from(format!("/tmp/chime-{}", bob.uid)));
    let state = dir.path().join("state");
    let chimed = bob
        .command(public_chimed(dir.path()))
        .arg("--state-dir")
        .arg(&state)
        .arg("--config")
        .arg(dir.path().join("etc/chimed.toml"))
        .env_remove("XDG_RUNTIME_DIR")
        .env_remove("CHIME_SOCKET")
        .env_remove("CHIME_STATE_DIR")
        .env_remove("CHIME_CONFIG")
        .env_remove("NOTIFY_SOCKET")
        .env_remove("LISTEN_FDS")
        .env_remove("LISTEN_PID")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start chimed as bob");
    let mut chimed = Started(chimed);
    let exited = wait_until(T, "chimed to exit or to listen in /tmp", || {
        match chimed.0.try_wait().expect("poll chimed") {
            Some(status) => Some(Some(status)),
            None => old_default.0.join("chimed.sock").exists().then_some(None),
        }
    });
    let status = exited.unwrap_or_else(|| {
        panic!(
            "chimed listened on {}/chimed.sock, where anyone could have been first",
            old_default.0.display()
        )
    });
    let mut err = String::new();
    std::io::Read::read_to_string(chimed.0.stderr.as_mut().expect("stderr is piped"), &mut err)
        .unwrap();
    assert_eq!(status.code(), Some(1), "{err}");
    assert!(
        err.starts_with("chimed: no socket given and no default one: XDG_RUNTIME_DIR is not set"),
        "{err}"
    );
    assert!(err.contains("give --socket PATH"), "{err}");
    // Refused before anything was made.
    assert!(!state.exists());
    assert!(!old_default.0.exists());
}
