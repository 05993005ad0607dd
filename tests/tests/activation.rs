//! Socket activation: chimed takes the listening socket systemd passes as fd 3 (`LISTEN_FDS=1`,
//! `LISTEN_PID` = its pid), serves on it, and leaves the socket file to systemd at stop. The
//! tests play systemd's part: they bind the socket and start chimed through a wrapper that puts
//! it on fd 3 and sets the variables, as chimed.socket does (the e2e test in `systemd.rs` does
//! the same under a real systemd).

use chime_tests::Daemon;
use std::os::fd::OwnedFd;
use std::os::unix::fs::{FileTypeExt, PermissionsExt};
use std::os::unix::net::{UnixListener, UnixStream};
use std::process::{Command, Stdio};

/// `cmd` (chimed's, from [`Daemon::command`]) started the way systemd starts a socket-activated
/// service: `socket` on fd 3, `LISTEN_FDS=1`, `LISTEN_PID` = chimed's pid. The wrapper shell gets
/// the socket as its stdin (std passes no other descriptor), moves it to fd 3 and execs chimed,
/// so its `$$` is chimed's pid.
fn activated(cmd: &Command, socket: impl Into<OwnedFd>) -> Command {
    let mut wrapper = Command::new("/bin/sh");
    wrapper
        .arg("-c")
        .arg(r#"exec 3<&0 0</dev/null; LISTEN_PID=$$ LISTEN_FDS=1 LISTEN_FDNAMES=chimed.socket exec "$@""#)
        .arg("sh")
        .arg(cmd.get_program())
        .args(cmd.get_args());
    for (key, value) in cmd.get_envs() {
        match value {
            Some(value) => wrapper.env(key, value),
            None => wrapper.env_remove(key),
        };
    }
    wrapper.stdin(Stdio::from(socket.into()));
    wrapper
}

/// Binds and listens on the daemon's socket path, as chimed.socket would, with `mode`.
fn bind_for(d: &Daemon, mode: u32) -> UnixListener {
    std::fs::create_dir_all(d.socket.parent().unwrap()).unwrap();
    let listener = UnixListener::bind(&d.socket).expect("bind the test socket");
    std::fs::set_permissions(&d.socket, std::fs::Permissions::from_mode(mode)).unwrap();
    listener
}

fn launch_activated(d: &mut Daemon, listener: &UnixListener) {
    let cmd = activated(&d.command(), listener.try_clone().unwrap());
    d.launch_command(cmd)
        .unwrap_or_else(|err| panic!("socket-activated chimed did not start: {err}"));
}

fn mode_of(path: &std::path::Path) -> u32 {
    std::fs::symlink_metadata(path)
        .unwrap()
        .permissions()
        .mode()
        & 0o7777
}

#[test]
fn chimed_serves_on_the_socket_systemd_passes_and_leaves_it_at_stop() {
    let mut d = Daemon::prepare(&[]);
    // A mode chimed would never choose (0600 here, 0660 as root with group chime): it must keep it.
    let listener = bind_for(&d, 0o640);
    launch_activated(&mut d, &listener);

    let status = d.ctl_json(&["status"]);
    assert_eq!(status["pid"], d.pid(), "{status:#}");
    assert_eq!(status["socket"], d.socket.to_str().unwrap(), "{status:#}");
    assert!(d.log().contains("socket_activated=true"), "{}", d.log());
    let out = d.ctl(&["add", "--wait", "--", "/bin/echo", "hi"]);
    assert!(out.status.success(), "add --wait failed: {out:?}");
    assert_eq!(d.ctl_ok(&["logs", "1"]), "hi\n");

    // systemd owns the socket: no lock beside it, its mode untouched, and it survives the stop.
    let lock = d.socket.with_extension("sock.lock");
    assert!(
        !lock.exists(),
        "chimed took the socket lock {}",
        lock.display()
    );
    assert_eq!(mode_of(&d.socket), 0o640);
    d.stop();
    let meta = std::fs::symlink_metadata(&d.socket).expect("the socket file survives the stop");
    assert!(meta.file_type().is_socket());
    // Still systemd's listening socket: a client connecting now would start the next chimed.
    drop(UnixStream::connect(&d.socket).expect("connect to the socket after the stop"));

    // The next activation serves the same socket and the same state.
    launch_activated(&mut d, &listener);
    assert_eq!(d.show(1)["state"], "succeeded");
    assert_eq!(d.ctl_json(&["status"])["pid"], d.pid());
}

#[test]
fn jobs_inherit_neither_the_socket_nor_the_listen_variables() {
    let mut d = Daemon::prepare(&[]);
    let listener = bind_for(&d, 0o600);
    launch_activated(&mut d, &listener);
    let out = d.ctl(&[
        "add",
        "--wait",
        "--shell",
        "--",
        "env | grep ^LISTEN_; [ -e /proc/$$/fd/3 ] && echo fd 3 is open; echo done",
    ]);
    assert!(out.status.success(), "add --wait failed: {out:?}");
    assert_eq!(d.ctl_ok(&["logs", "1"]), "done\n");
}

#[test]
fn a_passed_descriptor_that_is_not_a_listening_unix_socket_is_refused() {
    let d = Daemon::prepare(&[]);
    let file = std::fs::File::open("/dev/null").unwrap();
    let tcp = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let (connected, _peer) = UnixStream::pair().unwrap();
    let cases: [(&str, OwnedFd, &str); 3] = [
        ("a file", file.into(), "is not a socket"),
        ("a TCP listener", tcp.into(), "is not a Unix stream socket"),
        (
            "a connected Unix socket",
            connected.into(),
            "is not listening",
        ),
    ];
    for (what, fd, expected) in cases {
        let out = activated(&d.command(), fd).output().expect("run chimed");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "chimed accepted {what} as fd 3");
        assert!(
            stderr.contains(expected) && stderr.contains("chimed.socket"),
            "{what}: unclear error: {stderr}"
        );
        // It refuses; it does not fall back to binding a socket of its own.
        assert!(
            !d.socket.exists(),
            "{what}: chimed bound {}",
            d.socket.display()
        );
    }
}
