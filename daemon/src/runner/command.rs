//! A run's process: what starts it, and starting it.
//!
//! A job of chimed's own user is executed directly, its program looked up in the job's `PATH`.
//! Any other user's job (root's chimed) is handed to the run-as helper, which gets an empty
//! environment and the job on its stdin ([`crate::as_user`]). The spawn stays on std's
//! posix_spawn fast path (no `pre_exec`, no `uid()`/`gid()`). A start that lacks descriptors,
//! memory or processes waits and tries again ([`start_process`]) instead of failing the run.

use super::identity::{Identity, environment};
use super::{Control, Supervised};
use super::{SpawnOrder, pipe};
use crate::as_user;
use chime_proto::Command;
use std::path::Path;
use std::time::Duration;
use tokio::sync::mpsc;

/// A run's process, ready to start.
#[derive(Debug)]
pub(super) struct Prepared {
    pub(super) command: tokio::process::Command,
    /// The program and working directory, for error messages.
    pub(super) program: String,
    pub(super) cwd: String,
    /// The process's stdin when it is not `/dev/null`: the order of the run-as helper.
    pub(super) stdin: Option<std::fs::File>,
    /// Another user's job: the account to check before the process starts (uid, name).
    pub(super) account: Option<(u32, String)>,
}

/// The process that starts a run.
///
/// A job of chimed's own user is executed directly, its program looked up here in the job's
/// `PATH`. Any other user's job (root's chimed) is handed to the run-as helper: the helper gets
/// an empty environment and the job (command, directory, environment) on its stdin, and the
/// program is looked up only once the helper is that user (see [`crate::as_user`]).
pub(super) fn command(identity: &Identity, order: &SpawnOrder) -> Result<Prepared, String> {
    let run_as = order.owner != identity.uid;
    if run_as && !identity.is_root() {
        return Err(format!(
            "this chimed runs as uid {} and cannot run jobs as uid {}",
            identity.uid, order.owner
        ));
    }
    let env = environment(identity, order, run_as);
    let argv: Vec<String> = match &order.command {
        Command::Argv(argv) => argv.clone(),
        Command::Shell(script) => vec!["/bin/sh".into(), "-c".into(), script.clone()],
        // The engine closes a timer's runs itself; one never reaches the runner.
        Command::Timer => return Err("a timer has no command to run".into()),
    };
    if run_as {
        let program = argv[0].clone();
        let account = Some((order.owner, order.owner_name.clone()));
        let order = as_user::Order {
            uid: order.owner,
            user: Some(order.owner_name.clone()),
            cwd: order.cwd.clone(),
            task: as_user::Task::Exec { argv, env },
        };
        let stdin = order
            .to_memfd()
            .map_err(|e| format!("cannot hand the job to the run-as helper: {e}"))?;
        let mut command = tokio::process::Command::new(&identity.helper);
        // The helper enters the working directory after dropping privileges.
        command
            .arg(as_user::RUN_AS)
            .env_clear()
            .current_dir("/")
            .process_group(0)
            .kill_on_drop(false);
        return Ok(Prepared {
            command,
            program,
            cwd: order.cwd,
            stdin: Some(stdin),
            account,
        });
    }
    let path_var = crate::spec::job_path(&env);
    let program = if argv[0].contains('/') {
        argv[0].clone()
    } else {
        as_user::check::find_in_path(&argv[0], path_var)
            .ok_or_else(|| {
                format!(
                    "command not found: {:?} (searched PATH={path_var})",
                    argv[0]
                )
            })?
            .display()
            .to_string()
    };
    let mut command = tokio::process::Command::new(&program);
    // stdin, stdout and stderr are set when the process starts (see `run_inner`).
    command
        .args(&argv[1..])
        .current_dir(&order.cwd)
        .env_clear()
        .envs(env)
        .process_group(0)
        .kill_on_drop(false);
    Ok(Prepared {
        command,
        program,
        cwd: order.cwd.clone(),
        stdin: None,
        account: None,
    })
}

fn spawn_error(program: &str, cwd: &str, err: &std::io::Error) -> String {
    match err.kind() {
        std::io::ErrorKind::NotFound if !Path::new(cwd).is_dir() => {
            format!("working directory {cwd} does not exist")
        }
        std::io::ErrorKind::NotFound => format!("{program}: no such file"),
        std::io::ErrorKind::PermissionDenied => format!("{program}: permission denied"),
        _ => format!("{program}: {err}"),
    }
}

/// Whether a failure to start a process is for want of a resource that comes back by itself
/// (descriptors, memory, processes): then the start is tried again, not recorded as failed.
fn is_transient(err: &std::io::Error) -> bool {
    matches!(
        err.raw_os_error(),
        Some(libc::EMFILE | libc::ENFILE | libc::ENOMEM | libc::EAGAIN)
    )
}

/// Longest wait between two tries to start a process that lacked a resource.
const RETRY_START_MAX: Duration = Duration::from_secs(2);

/// Starts a run's process: its pipes, its stdin, the spawn. When the host is out of descriptors,
/// memory or processes, waits (50 ms, doubling up to [`RETRY_START_MAX`]) and tries again, for as
/// long as it takes, so that a burst never fails runs for good; a termination (cancel, stop)
/// meanwhile ends the waiting.
pub(super) async fn start_process(
    prepared: Prepared,
    stdin: &std::fs::File,
    supervised: &Supervised,
    control: &mut mpsc::UnboundedReceiver<Control>,
) -> Result<(tokio::process::Child, u32, pipe::Pipe, pipe::Pipe), String> {
    let Prepared {
        command: mut cmd,
        program,
        cwd,
        stdin: order,
        account: _,
    } = prepared;
    let helper = order.is_some();
    let mut input = order;
    let mut wait = Duration::from_millis(50);
    let mut warned = false;
    loop {
        let attempt = (|| -> Result<_, (std::io::Error, String)> {
            fn cannot(what: &'static str) -> impl Fn(std::io::Error) -> (std::io::Error, String) {
                move |e| {
                    let message = format!("cannot create {what}: {e}");
                    (e, message)
                }
            }
            let (stdout, stdout_end) = pipe::pair().map_err(cannot("the stdout pipe"))?;
            let (stderr, stderr_end) = pipe::pair().map_err(cannot("the stderr pipe"))?;
            let stdin = match &input {
                Some(order) => order.try_clone(),
                None => stdin.try_clone(),
            }
            .map_err(cannot("stdin"))?;
            cmd.stdin(stdin).stdout(stdout_end).stderr(stderr_end);
            let child = cmd.spawn().map_err(|e| {
                let message = match helper {
                    // The helper itself did not start: that says nothing about the job's paths
                    // (and they are not looked at as root).
                    true => format!("cannot start chimed's run-as helper: {e}"),
                    false => spawn_error(&program, &cwd, &e),
                };
                (e, message)
            })?;
            Ok((child, stdout, stderr))
        })();
        match attempt {
            Ok((child, stdout, stderr)) => {
                // The command holds the child's ends of the pipes (and the helper's order):
                // close them here, so that the pipes end when the process (and its children)
                // close theirs.
                drop(cmd);
                input.take();
                let pid = child
                    .id()
                    .ok_or("the process exited before its pid was read")?;
                return Ok((child, pid, stdout, stderr));
            }
            Err((err, message)) if is_transient(&err) => {
                if !warned {
                    tracing::warn!(job_id = supervised.job.0, run_id = supervised.run.0, error = %message, "cannot start the run's process for now; trying again until it can");
                    warned = true;
                }
                tokio::select! {
                    () = tokio::time::sleep(wait) => {}
                    request = control.recv() => {
                        if matches!(request, Some(Control::Terminate { .. }) | None) {
                            return Err(format!("ended before its process could start ({message})"));
                        }
                    }
                }
                wait = (wait * 2).min(RETRY_START_MAX);
            }
            Err((_, message)) => return Err(message),
        }
    }
}
