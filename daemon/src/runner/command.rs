//! A run's process: what starts it, and starting it.
//!
//! A job of chimed's own user is executed directly, its program looked up in the job's `PATH`.
//! Any other user's job (root's chimed) is handed to the run-as helper, which gets an empty
//! environment and the job on its stdin ([`crate::as_user`]). The spawn ([`spawn`]) is a
//! vfork-style clone that enters the run's cgroup before it executes. A start that lacks
//! descriptors, memory or processes waits and tries again ([`start_process`]) instead of
//! failing the run.

use super::child::Child;
use super::identity::{Identity, environment};
use super::{Control, Supervised};
use super::{SpawnOrder, pipe, spawn};
use crate::{as_user, cgroup};
use chime_proto::Command;
use std::ffi::CString;
use std::os::fd::AsFd;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::mpsc;

/// A run's process, ready to start: everything the spawn needs, made before it.
#[derive(Debug)]
pub(super) struct Prepared {
    program: CString,
    argv: Vec<CString>,
    envp: Vec<CString>,
    dir: CString,
    /// The program and working directory, for error messages.
    pub(super) shown_program: String,
    pub(super) cwd: String,
    /// The process's stdin when it is not `/dev/null`: the order of the run-as helper.
    pub(super) stdin: Option<std::fs::File>,
    /// Another user's job: the account to check before the process starts (uid, name).
    pub(super) account: Option<(u32, String)>,
    /// It is the run-as helper, not the job's program.
    helper: bool,
}

fn c_string(what: &str, s: &str) -> Result<CString, String> {
    CString::new(s).map_err(|_| format!("the {what} contains a NUL byte"))
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
        let shown_program = argv[0].clone();
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
        let helper = identity.helper.display().to_string();
        // The helper enters the working directory after dropping privileges.
        return Ok(Prepared {
            program: c_string("helper's path", &helper)?,
            argv: vec![
                c_string("helper's path", &helper)?,
                c_string("helper's mode", as_user::RUN_AS)?,
            ],
            envp: Vec::new(),
            dir: c_string("directory", "/")?,
            shown_program,
            cwd: order.cwd,
            stdin: Some(stdin),
            account,
            helper: true,
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
    Ok(Prepared {
        program: c_string("program's path", &program)?,
        argv: argv
            .iter()
            .map(|a| c_string("command", a))
            .collect::<Result<_, _>>()?,
        envp: env
            .iter()
            .map(|(k, v)| c_string("environment", &format!("{k}={v}")))
            .collect::<Result<_, _>>()?,
        dir: c_string("directory", &order.cwd)?,
        shown_program: program,
        cwd: order.cwd.clone(),
        stdin: None,
        account: None,
        helper: false,
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

/// Where a run's cgroup is made, and with what, when there is a subtree.
#[derive(Debug, Clone)]
pub(super) struct Contain {
    pub(super) maker: Arc<cgroup::Maker>,
    pub(super) limits: chime_proto::ResourceLimits,
    /// The per-user cgroup's tasks limit (`[limits] tasks_per_user`).
    pub(super) tasks_per_user: Option<u32>,
}

/// A started run's process and what the supervisor reads and ends it by.
pub(super) struct Process {
    pub(super) child: Child,
    pub(super) pid: u32,
    pub(super) stdout: pipe::Pipe,
    pub(super) stderr: pipe::Pipe,
    /// Its cgroup; `None` where chimed has no subtree (a process group only).
    pub(super) cgroup: Option<cgroup::RunCgroup>,
}

/// Starts a run's process: its pipes, its stdin, its cgroup, the spawn. When the host is out of
/// descriptors, memory or processes, waits (50 ms, doubling up to [`RETRY_START_MAX`]) and tries
/// again, for as long as it takes, so that a burst never fails runs for good; a termination
/// (cancel, stop) meanwhile ends the waiting.
pub(super) async fn start_process(
    prepared: Prepared,
    stdin: &std::fs::File,
    supervised: &Supervised,
    contain: Option<&Contain>,
    control: &mut mpsc::UnboundedReceiver<Control>,
) -> Result<Process, String> {
    let mut wait = Duration::from_millis(50);
    let mut warned = false;
    loop {
        match try_start(&prepared, stdin, supervised, contain) {
            Ok(process) => return Ok(process),
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

/// One try of [`start_process`]. Its pipes' and cgroup's ends for the child are closed when it
/// returns, so that the pipes end when the process (and its children) close theirs.
fn try_start(
    prepared: &Prepared,
    stdin: &std::fs::File,
    supervised: &Supervised,
    contain: Option<&Contain>,
) -> Result<Process, (std::io::Error, String)> {
    fn cannot(what: &'static str) -> impl Fn(std::io::Error) -> (std::io::Error, String) {
        move |e| {
            let message = format!("cannot create {what}: {e}");
            (e, message)
        }
    }
    let (stdout, stdout_end) = pipe::pair().map_err(cannot("the stdout pipe"))?;
    let (stderr, stderr_end) = pipe::pair().map_err(cannot("the stderr pipe"))?;
    let input = prepared.stdin.as_ref().unwrap_or(stdin);
    let cgroup = match contain {
        Some(c) => Some(
            c.maker
                .take(
                    supervised.owner,
                    supervised.run.0,
                    &c.limits,
                    c.tasks_per_user,
                )
                .map_err(cannot("the run's cgroup"))?,
        ),
        None => None,
    };
    let spawned = spawn::spawn(&spawn::Spawn {
        program: &prepared.program,
        argv: &prepared.argv,
        envp: &prepared.envp,
        cwd: &prepared.dir,
        stdin: input.as_fd(),
        stdout: stdout_end.as_fd(),
        stderr: stderr_end.as_fd(),
        cgroup: cgroup.as_ref().map(|c| c.handle().as_fd()),
    });
    match spawned {
        Ok(started) => {
            let child = Child::new(started);
            let pid = child.id();
            Ok(Process {
                child,
                pid,
                stdout,
                stderr,
                cgroup,
            })
        }
        Err((step, e)) => {
            if let (Some(cgroup), Some(c)) = (cgroup, contain) {
                c.maker.release(cgroup);
            }
            let message = match (step, prepared.helper) {
                (Some(spawn::Step::EnterCgroup), _) => {
                    format!("cannot enter the run's cgroup: {e}")
                }
                // The helper itself did not start: that says nothing about the job's paths
                // (and they are not looked at as root).
                (_, true) => format!("cannot start chimed's run-as helper: {e}"),
                (_, false) => spawn_error(&prepared.shown_program, &prepared.cwd, &e),
            };
            Err((e, message))
        }
    }
}
