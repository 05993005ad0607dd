//! Checking a submission's working directory and program, with the submitter's identity.
//!
//! `chimectl add` refuses a job whose directory does not exist or whose program cannot be found,
//! so that a typo fails at once rather than at 3 a.m. A root chimed must not answer that question
//! with root's eyes: "no such directory" against "permission denied" would tell any member of
//! `chime` what exists under `/root`. So the check runs as the submitter: in chimed itself when the
//! submitter is chimed's own user, otherwise in the [`super::CHECK_AS`] helper, which becomes the
//! submitter first. Either way a refusal says only what the submitter could have seen with `ls`.
//!
//! A helper costs a process start (a millisecond or two of CPU), and a script that submits the
//! same command many times would pay it each time, so a check that passed is remembered for
//! [`CHECK_TTL`] per user, directory, program and `PATH` ([`Checked`]). So is a check made in
//! chimed itself: its `stat` and `access` calls were half the CPU a connection task spent on a
//! submission (profiled under bench-submit). A refusal is never remembered: the user may be
//! fixing it. The check is for the user's sake (a typo found at once), not a guard: a run
//! becomes its owner before anything of theirs is opened, whatever the check said.

use super::{Failure, Order, Task, become_user};
use crate::spec::{SpecError, SpecResult, bad};
pub use chime_proto::human::find_in_path;
use chime_proto::{ErrorCode, ErrorReply, SpecField};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// The helper's exit code for "checked, and refused": its stdout says why.
pub const REFUSED: i32 = 3;

/// How long the check helper may take (an automounted or network directory may be slow).
const HELPER_TIMEOUT: Duration = Duration::from_secs(10);

/// How long a check that passed is taken for granted.
pub const CHECK_TTL: Duration = Duration::from_secs(10);

/// Most checks remembered at once.
const CHECKED_MAX: usize = 4096;

/// What a check is about: (uid, directory, program, PATH).
type CheckKey = (u32, String, Option<String>, String);

/// Check helpers one user may have running at once: a helper may be slow (a directory on the
/// user's own FUSE mount can make it wait out [`HELPER_TIMEOUT`]), and each holds descriptors of
/// chimed's, so one user's checks must not take them all.
const HELPERS_PER_USER: u32 = 2;

/// Check helpers running at once, in all.
const HELPERS_MAX: usize = 16;

/// Checks that passed lately, and the helpers running.
#[derive(Debug)]
pub struct Checked {
    passed: std::sync::Mutex<std::collections::HashMap<CheckKey, std::time::Instant>>,
    per_user: crate::limits::Turns,
    all: std::sync::Arc<tokio::sync::Semaphore>,
}

impl Default for Checked {
    fn default() -> Self {
        Self {
            passed: Default::default(),
            per_user: Default::default(),
            all: std::sync::Arc::new(tokio::sync::Semaphore::new(HELPERS_MAX)),
        }
    }
}

impl Checked {
    /// Checks the paths as `uid` ([`paths`] in chimed itself when `uid` is chimed's own,
    /// `daemon_uid`, else [`as_user`] through `helper`), unless the same check passed within
    /// [`CHECK_TTL`].
    pub async fn check(
        &self,
        (helper, daemon_uid): (&Path, u32),
        uid: u32,
        cwd: &str,
        program: Option<&str>,
        path: &str,
    ) -> Result<(), ErrorReply> {
        let key = (
            uid,
            cwd.to_owned(),
            program.map(str::to_owned),
            path.to_owned(),
        );
        let now = std::time::Instant::now();
        {
            let passed = self.passed.lock().unwrap_or_else(|p| p.into_inner());
            if passed
                .get(&key)
                .is_some_and(|at| now.duration_since(*at) < CHECK_TTL)
            {
                return Ok(());
            }
        }
        if uid == daemon_uid {
            paths(cwd, program, path)?;
        } else {
            let _mine = self.per_user.take(uid, HELPERS_PER_USER).await;
            let _one = self.all.acquire().await.expect("never closed");
            as_user(helper, uid, cwd, program, path).await?;
        }
        let mut passed = self.passed.lock().unwrap_or_else(|p| p.into_inner());
        if passed.len() >= CHECKED_MAX {
            passed.retain(|_, at| now.duration_since(*at) < CHECK_TTL);
            if passed.len() >= CHECKED_MAX {
                passed.clear();
            }
        }
        passed.insert(key, now);
        Ok(())
    }
}

/// Checks, with this process's identity, that `cwd` is a directory that can be entered and
/// that `program`, if given, names an executable file: as it is when it has a slash (relative to
/// `cwd`), else looked up in `path`. The message says what is wrong.
pub fn paths(cwd: &str, program: Option<&str>, path: &str) -> SpecResult {
    let cwd_refused = |message: String| bad(SpecField::Cwd, message);
    let command_refused = |message: String| bad(SpecField::Command, message);
    // stat and access only: no descriptor is needed, so a check works even when chimed has
    // none to spare (a burst of runs).
    let dir = Path::new(cwd);
    match dir.metadata() {
        Ok(meta) if !meta.is_dir() => {
            return cwd_refused(format!("{cwd} is not a directory"));
        }
        Ok(_) => {
            if nix::unistd::access(dir, nix::unistd::AccessFlags::X_OK).is_err() {
                return cwd_refused(format!("{cwd}: permission denied"));
            }
        }
        Err(e) if e.kind() == std::io::ErrorKind::PermissionDenied => {
            return cwd_refused(format!("{cwd}: permission denied"));
        }
        Err(e) if e.raw_os_error() == Some(libc::ENOTDIR) => {
            return cwd_refused(format!("{cwd} is not a directory"));
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return cwd_refused(format!("{cwd} does not exist or is not a directory"));
        }
        Err(e) => return cwd_refused(format!("cannot check {cwd}: {e}")),
    }
    let Some(program) = program else {
        return Ok(());
    };
    if program.contains('/') {
        let full: PathBuf = dir.join(program);
        let meta = match full.metadata() {
            Ok(meta) => meta,
            Err(e) if e.kind() == std::io::ErrorKind::PermissionDenied => {
                return command_refused(format!("{program}: permission denied"));
            }
            Err(_) => return command_refused(format!("{program} does not exist")),
        };
        if !meta.is_file()
            || meta.permissions().mode() & 0o111 == 0
            || nix::unistd::access(&full, nix::unistd::AccessFlags::X_OK).is_err()
        {
            return command_refused(format!("{program} is not an executable file"));
        }
        return Ok(());
    }
    if find_in_path(program, path).is_none() {
        return command_refused(format!(
            "{program:?} was not found in PATH={path}; give its full path"
        ));
    }
    Ok(())
}

/// Checks the paths as `uid` through the [`super::CHECK_AS`] helper (`helper`: chimed's own
/// executable). `Err` carries the refusal (about a field: the helper writes the field's key on
/// one line and the message on the next), or why the check could not be made.
pub async fn as_user(
    helper: &Path,
    uid: u32,
    cwd: &str,
    program: Option<&str>,
    path: &str,
) -> Result<(), ErrorReply> {
    let failed = |why: String| {
        ErrorReply::new(
            ErrorCode::Internal,
            format!("cannot check the paths as uid {uid}: {why}"),
        )
    };
    let order = Order {
        uid,
        user: None,
        cwd: cwd.to_owned(),
        task: Task::Check {
            program: program.map(str::to_owned),
            path: path.to_owned(),
        },
    };
    let stdin = order.to_memfd().map_err(|e| failed(e.to_string()))?;
    let child = tokio::process::Command::new(helper)
        .arg(super::CHECK_AS)
        .env_clear()
        .current_dir("/")
        .stdin(stdin)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .map_err(|e| failed(e.to_string()))?;
    let output = tokio::time::timeout(HELPER_TIMEOUT, child.wait_with_output())
        .await
        .map_err(|_| failed(format!("it took longer than {HELPER_TIMEOUT:?}")))?
        .map_err(|e| failed(e.to_string()))?;
    let said = String::from_utf8_lossy(&output.stdout);
    match (output.status.code(), said.trim().split_once('\n')) {
        (Some(0), _) => Ok(()),
        (Some(REFUSED), Some((key, message))) if let Some(field) = SpecField::from_key(key) => {
            Err(ErrorReply::about(field, message))
        }
        _ => Err(failed(
            String::from_utf8_lossy(&output.stderr).trim().to_owned(),
        )),
    }
}

/// Carries out a [`Task::Check`] order: exit 0 when the paths are fine, [`REFUSED`] with the
/// reason on stdout when not.
pub fn run(order: Order) -> Result<i32, Failure> {
    let Task::Check { program, path } = order.task else {
        return Err(Failure::new(
            126,
            "the check helper was given a command to run",
        ));
    };
    become_user(order.uid, order.user.as_deref())?;
    match paths(&order.cwd, program.as_deref(), &path) {
        Ok(()) => Ok(0),
        Err(SpecError { field, message }) => {
            println!("{}\n{}", field.key(), message.replace('\n', " "));
            Ok(REFUSED)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn directories_and_programs() {
        let path = "/usr/bin:/bin";
        assert!(paths("/", Some("/bin/true"), path).is_ok());
        assert!(paths("/", Some("true"), path).is_ok());
        assert!(paths("/", None, path).is_ok());
        // Relative to the working directory.
        assert!(paths("/bin", Some("./true"), path).is_ok());
        for (cwd, program, field, says) in [
            ("/", Some("/no/such"), SpecField::Command, "does not exist"),
            (
                "/",
                Some("no-such-cmd-xyz"),
                SpecField::Command,
                "not found in PATH",
            ),
            (
                "/",
                Some("/etc/passwd"),
                SpecField::Command,
                "not an executable",
            ),
            (
                "/",
                Some("./no-such-script.sh"),
                SpecField::Command,
                "does not exist",
            ),
            ("/no/such/dir", None, SpecField::Cwd, "does not exist"),
            ("/etc/passwd", None, SpecField::Cwd, "not a directory"),
        ] {
            let err = paths(cwd, program, path).unwrap_err();
            assert_eq!(err.field, field, "{cwd} {program:?}: {err}");
            assert!(err.message.contains(says), "{err}");
        }
    }

    /// A check made in chimed itself is remembered when it passed, and not when it failed: a
    /// directory created after a refusal passes at once, and one removed after a pass is taken
    /// for granted within [`CHECK_TTL`] (a run checks again, as its owner).
    #[tokio::test]
    async fn own_checks_that_passed_are_remembered_and_refusals_are_not() {
        let checked = Checked::default();
        let me = nix::unistd::getuid().as_raw();
        // No helper is run for chimed's own user: this path does not exist.
        let own = (Path::new("/nonexistent/chimed"), me);
        let dir = tempfile::tempdir().unwrap();
        let cwd = dir.path().join("work");
        let cwd = cwd.to_str().unwrap();
        let refused = checked.check(own, me, cwd, None, "/bin").await;
        assert!(refused.is_err(), "a missing directory passed");
        std::fs::create_dir(cwd).unwrap();
        checked.check(own, me, cwd, None, "/bin").await.unwrap();
        std::fs::remove_dir(cwd).unwrap();
        checked.check(own, me, cwd, None, "/bin").await.unwrap();
        // Another program in that directory is another check.
        let other = checked.check(own, me, cwd, Some("true"), "/bin").await;
        assert!(
            other.is_err(),
            "a check of another program was taken for granted"
        );
    }
}
