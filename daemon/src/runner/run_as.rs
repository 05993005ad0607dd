//! `chimed __run-as UID CWD PROGRAM [ARGS...]`: the helper that runs a job as its owner.
//!
//! The daemon, when it is root, starts this mode of its own executable (on the posix_spawn fast
//! path) instead of the job's command. The helper looks up the owner's passwd entry, sets the
//! supplementary groups (`initgroups`), the gid and the uid, checks that root cannot be regained,
//! sets `HOME`, `USER`, `LOGNAME` and `SHELL` from the passwd entry unless the job set them,
//! enters the working directory as the owner, and execs the program. It never returns on success.
//!
//! Failures are printed to stderr (the run's log) and end the helper with exit code 127 (the
//! program could not be executed) or 126 (privileges or working directory), as shells do.

use nix::unistd::{Gid, Uid, User};
use std::ffi::CString;
use std::os::unix::process::CommandExt;

/// The first argument that selects this mode.
pub const ARG: &str = "__run-as";

/// Runs the helper with the arguments after [`ARG`]. Returns the exit code on failure.
pub fn main(args: &[String]) -> i32 {
    match run(args) {
        Ok(never) => match never {},
        Err((code, message)) => {
            eprintln!("chime: {message}");
            code
        }
    }
}

enum Never {}

fn run(args: &[String]) -> Result<Never, (i32, String)> {
    let [uid, cwd, program, rest @ ..] = args else {
        return Err((
            126,
            format!("usage: chimed {ARG} UID CWD PROGRAM [ARGS...]"),
        ));
    };
    let uid: u32 = uid.parse().map_err(|_| (126, format!("bad uid {uid:?}")))?;
    let user = User::from_uid(Uid::from_raw(uid))
        .map_err(|e| (126, format!("cannot look up uid {uid}: {e}")))?
        .ok_or_else(|| (126, format!("uid {uid} has no passwd entry")))?;
    let name = CString::new(user.name.as_bytes())
        .map_err(|_| (126, "user name contains a NUL byte".to_string()))?;
    nix::unistd::initgroups(&name, user.gid)
        .map_err(|e| (126, format!("cannot set the groups of {}: {e}", user.name)))?;
    nix::unistd::setgid(user.gid)
        .map_err(|e| (126, format!("cannot set gid {}: {e}", user.gid)))?;
    nix::unistd::setuid(user.uid)
        .map_err(|e| (126, format!("cannot set uid {}: {e}", user.uid)))?;
    if uid != 0
        && (nix::unistd::setuid(Uid::from_raw(0)).is_ok()
            || Gid::effective().as_raw() == 0 && user.gid.as_raw() != 0)
    {
        return Err((126, "privileges were not dropped".into()));
    }
    std::env::set_current_dir(cwd).map_err(|e| {
        (
            126,
            format!("cannot enter working directory {cwd} as {}: {e}", user.name),
        )
    })?;
    let mut command = std::process::Command::new(program);
    command.args(rest);
    for (key, value) in [
        ("HOME", user.dir.display().to_string()),
        ("USER", user.name.clone()),
        ("LOGNAME", user.name.clone()),
        ("SHELL", user.shell.display().to_string()),
    ] {
        if std::env::var_os(key).is_none() {
            command.env(key, value);
        }
    }
    let err = command.exec();
    Err((127, format!("cannot execute {program}: {err}")))
}
