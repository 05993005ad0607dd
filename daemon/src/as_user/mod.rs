//! Acting as another user: the helper modes of chimed's own executable.
//!
//! # Why a helper
//!
//! A root chimed never forks (a fork costs more the larger the daemon is, see `crate::runner`),
//! and it never changes its own identity, which every thread shares. Whatever must be done *as a
//! user* is done by a short-lived process: chimed's own executable started in a helper mode on
//! the posix_spawn fast path. There are two:
//!
//! - [`RUN_AS`]: become the job's owner and execute the job's command ([`exec`]);
//! - [`CHECK_AS`]: become the submitter and check that the job's working directory and program
//!   exist and are usable, so that a refusal tells the user nothing they could not have found out
//!   themselves ([`check`]).
//!
//! # Nothing of the user's reaches root
//!
//! The helper is root until it has switched to the user, and a root process must not be steered by
//! the user. So:
//!
//! - Its environment is empty. The dynamic loader reads `LD_PRELOAD`, `LD_LIBRARY_PATH`,
//!   `LD_AUDIT`, `GCONV_PATH`, `GLIBC_TUNABLES` and more before `main`, and NSS (`getpwuid`,
//!   `initgroups`) reads more still: none of them exists in the helper.
//! - Its arguments are only its mode. What it is asked to do (the user, the directory, the command
//!   and the job's environment) is an [`Order`], postcard-encoded in a memfd that is the helper's
//!   stdin. The helper reads it whole before anything else and puts `/dev/null` in its place.
//!   (Arguments would also be readable by every user in `/proc/PID/cmdline`.)
//! - It looks the account up by uid, checks that its name is the one the job was recorded with,
//!   sets the supplementary groups, the gid and the uid, and checks that root cannot be regained.
//!   Only then does it touch a path the user named (the working directory, the program) or apply
//!   the job's environment, which the final `execve` installs; the program is looked up in the
//!   job's `PATH` at that moment, as the user.
//!
//! A denylist of dangerous variables would be the wrong tool: the list is long, grows with every
//! libc, and one omission is a root shell. An empty environment has no such list.

pub mod account;
pub mod check;
pub mod exec;

use nix::unistd::{Gid, Uid, User};
use serde::{Deserialize, Serialize};
use std::ffi::CString;
use std::fs::File;
use std::io::{Read, Seek, Write};

/// The first argument that selects the helper that executes a job as its owner.
pub const RUN_AS: &str = "__run-as";

/// The first argument that selects the helper that checks a submission's paths as the submitter.
pub const CHECK_AS: &str = "__check-as";

/// The largest order a helper reads: a job spec is at most 256 KiB (`SPEC_BYTES_MAX`), its
/// environment included.
const ORDER_MAX: u64 = 1024 * 1024;

/// What a helper is to do, and as whom. Sent on the helper's stdin, never in its arguments or
/// environment.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Order {
    pub uid: u32,
    /// The account name the job was recorded with: the helper refuses to act if the uid's passwd
    /// entry now has another name (the account was replaced). `None`: not checked.
    pub user: Option<String>,
    /// The working directory, entered as the user.
    pub cwd: String,
    pub task: Task,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Task {
    /// Execute `argv` (looked up in `env`'s `PATH` when it has no slash) with exactly `env`, plus
    /// `HOME`, `USER`, `LOGNAME` and `SHELL` from the account when `env` does not set them.
    Exec {
        argv: Vec<String>,
        env: Vec<(String, String)>,
    },
    /// Check that the working directory can be entered and that `program` (if any) can be
    /// executed, looked up in `path`. The helper prints a refusal on stdout and exits with
    /// [`check::REFUSED`].
    Check {
        program: Option<String>,
        path: String,
    },
}

impl Order {
    /// The order in a memfd, positioned at its start: the helper's stdin.
    pub fn to_memfd(&self) -> std::io::Result<File> {
        let bytes = postcard::to_stdvec(self).map_err(std::io::Error::other)?;
        let fd =
            nix::sys::memfd::memfd_create(c"chime-order", nix::sys::memfd::MFdFlags::MFD_CLOEXEC)
                .map_err(std::io::Error::from)?;
        let mut file = File::from(fd);
        file.write_all(&bytes)?;
        file.rewind()?;
        Ok(file)
    }
}

/// Runs the helper named by `mode` with the order on stdin; `None` if `mode` names no helper.
/// Returns the exit code on failure (on success, [`RUN_AS`] does not return).
pub fn main(mode: &str) -> Option<i32> {
    let result = match mode {
        RUN_AS => read_order().and_then(exec::run),
        CHECK_AS => read_order().and_then(check::run),
        _ => return None,
    };
    Some(match result {
        Ok(code) => code,
        Err(Failure { code, message }) => {
            eprintln!("chime: {message}");
            code
        }
    })
}

/// Why a helper gave up: its exit code (126: could not become the user or enter the directory,
/// 127: could not execute the program, as shells do) and a sentence for the run's log.
#[derive(Debug)]
pub struct Failure {
    pub code: i32,
    pub message: String,
}

impl Failure {
    pub fn new(code: i32, message: impl Into<String>) -> Self {
        Self {
            code,
            message: message.into(),
        }
    }
}

/// Reads the order from stdin, then puts `/dev/null` on stdin and closes every other descriptor
/// above 2.
fn read_order() -> Result<Order, Failure> {
    let mut bytes = Vec::new();
    std::io::stdin()
        .lock()
        .take(ORDER_MAX + 1)
        .read_to_end(&mut bytes)
        .map_err(|e| Failure::new(126, format!("cannot read the helper's order: {e}")))?;
    if bytes.len() as u64 > ORDER_MAX {
        return Err(Failure::new(126, "the helper's order is too large"));
    }
    let null = File::open("/dev/null")
        .map_err(|e| Failure::new(126, format!("cannot open /dev/null: {e}")))?;
    nix::unistd::dup2_stdin(&null)
        .map_err(|e| Failure::new(126, format!("cannot put /dev/null on stdin: {e}")))?;
    drop(null);
    // Whatever else chimed's process held when this one was spawned (a descriptor a library
    // opened without close-on-exec) goes before anything of the user's runs.
    crate::fds::close_from(3);
    postcard::from_bytes(&bytes).map_err(|e| {
        Failure::new(
            126,
            format!("the helper's order does not decode ({e}); is chimed the same build?"),
        )
    })
}

/// Becomes the user `uid`: checks the account's name against `expected`, then sets the
/// supplementary groups, the gid and the uid, and checks that root cannot be regained. The
/// environment is still the helper's own (empty) while this runs.
fn become_user(uid: u32, expected: Option<&str>) -> Result<User, Failure> {
    let user = User::from_uid(Uid::from_raw(uid))
        .map_err(|e| Failure::new(126, format!("cannot look up uid {uid}: {e}")))?
        .ok_or_else(|| Failure::new(126, format!("uid {uid} has no account")))?;
    if let Some(expected) = expected
        && user.name != expected
    {
        return Err(Failure::new(
            126,
            format!(
                "uid {uid} is now the account {:?}, not {expected:?} whose job this is; refusing to run it",
                user.name
            ),
        ));
    }
    if Uid::current().as_raw() == uid && Uid::effective().as_raw() == uid {
        // Already this user (a chimed running its own user's jobs never starts the helper, but
        // the check helper may be started for one).
        return Ok(user);
    }
    let name = CString::new(user.name.as_bytes())
        .map_err(|_| Failure::new(126, "the user name contains a NUL byte"))?;
    nix::unistd::initgroups(&name, user.gid)
        .map_err(|e| Failure::new(126, format!("cannot set the groups of {}: {e}", user.name)))?;
    nix::unistd::setgid(user.gid)
        .map_err(|e| Failure::new(126, format!("cannot set gid {}: {e}", user.gid)))?;
    nix::unistd::setuid(user.uid)
        .map_err(|e| Failure::new(126, format!("cannot set uid {}: {e}", user.uid)))?;
    if uid != 0
        && (nix::unistd::setuid(Uid::from_raw(0)).is_ok()
            || Gid::effective().as_raw() == 0 && user.gid.as_raw() != 0)
    {
        return Err(Failure::new(126, "privileges were not dropped"));
    }
    Ok(user)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_order_survives_the_memfd() {
        let order = Order {
            uid: 1000,
            user: Some("ann".into()),
            cwd: "/home/ann".into(),
            task: Task::Exec {
                argv: vec!["env".into()],
                env: vec![("LD_PRELOAD".into(), "/tmp/x.so".into())],
            },
        };
        let mut file = order.to_memfd().unwrap();
        let mut bytes = Vec::new();
        file.read_to_end(&mut bytes).unwrap();
        assert_eq!(postcard::from_bytes::<Order>(&bytes).unwrap(), order);
    }
}
