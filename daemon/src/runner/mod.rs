//! The runner: starts runs' processes, watches them, and signals them.
//!
//! Each run is a process in its own process group (`process_group(0)`), with stdin from
//! `/dev/null` and stdout and stderr appended to the run's log file
//! (`<state dir>/logs/<job id>/<run id>.log`). The spawn stays on std's posix_spawn fast path: no
//! `pre_exec`, no `uid()`/`gid()` (those force a fork whose cost grows with the daemon's memory).
//! When chimed runs as root and the job belongs to another user, the process started is chimed
//! itself in its `__run-as` mode ([`run_as`]), which drops to the owner's uid, gid and groups and
//! then execs the command.
//!
//! One small task per running process ([`supervise`]) owns the child: it waits for the exit,
//! carries out a termination (SIGTERM to the group, SIGKILL after the grace period) and reports
//! the outcome to the engine. Because that task owns the child and reaps it only when it exits,
//! the process group id it signals cannot have been reused by then.

pub mod run_as;

use crate::engine::Message;
use crate::engine::batch::{SpawnOrder, Work};
use crate::engine::machine::Event;
use chime_proto::{Command, JobId, Outcome, RunId};
use nix::sys::signal::{Signal, killpg};
use nix::unistd::Pid;
use std::collections::HashMap;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::mpsc as std_mpsc;
use std::time::Duration;
use tokio::sync::mpsc;

/// The path of a run's log file.
pub fn log_path(logs_dir: &Path, job: JobId, run: RunId) -> PathBuf {
    logs_dir
        .join(job.0.to_string())
        .join(format!("{}.log", run.0))
}

/// Who the daemon is, and what every job's environment starts from.
#[derive(Debug, Clone)]
pub struct Identity {
    pub uid: u32,
    /// The daemon's own user: HOME, USER and SHELL for jobs that run as the daemon's user.
    pub home: String,
    pub user: String,
    pub shell: String,
    /// `PATH` for jobs that do not set their own.
    pub path: String,
    pub lang: String,
    /// This executable, for `__run-as`.
    pub helper: PathBuf,
}

impl Identity {
    /// Reads the daemon's identity. Call once at start (it may consult NSS).
    pub fn of_this_process() -> std::io::Result<Self> {
        let uid = nix::unistd::getuid();
        let user = nix::unistd::User::from_uid(uid).ok().flatten();
        let path = if uid.is_root() {
            "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
        } else {
            "/usr/local/bin:/usr/bin:/bin"
        };
        Ok(Self {
            uid: uid.as_raw(),
            home: user
                .as_ref()
                .map(|u| u.dir.display().to_string())
                .or_else(|| std::env::var("HOME").ok())
                .unwrap_or_else(|| "/".into()),
            user: user
                .as_ref()
                .map(|u| u.name.clone())
                .unwrap_or_else(|| uid.to_string()),
            shell: user
                .as_ref()
                .map(|u| u.shell.display().to_string())
                .unwrap_or_else(|| "/bin/sh".into()),
            path: path.into(),
            lang: std::env::var("LANG").unwrap_or_else(|_| "C.UTF-8".into()),
            helper: std::env::current_exe()?,
        })
    }

    pub fn is_root(&self) -> bool {
        self.uid == 0
    }
}

/// A request to a running process's supervisor.
#[derive(Debug, Clone, Copy)]
enum Control {
    /// SIGTERM to the group now, SIGKILL after `grace`.
    Terminate { grace: Duration },
}

#[derive(Debug)]
struct RunHandle {
    control: mpsc::UnboundedSender<Control>,
    queue: String,
}

/// Starts and tracks the processes of running jobs. Owned by the engine.
#[derive(Debug)]
pub struct Runner {
    runs: HashMap<RunId, RunHandle>,
    /// Where supervisors report exits: the engine's inbox.
    events: std_mpsc::Sender<Message>,
    logs_dir: PathBuf,
    identity: Identity,
    kill_grace: Duration,
}

impl Runner {
    pub fn new(
        events: std_mpsc::Sender<Message>,
        logs_dir: PathBuf,
        identity: Identity,
        kill_grace: Duration,
    ) -> Self {
        Self {
            runs: HashMap::new(),
            events,
            logs_dir,
            identity,
            kill_grace,
        }
    }

    /// Runs whose process has been started and has not been reported as ended.
    pub fn len(&self) -> usize {
        self.runs.len()
    }

    pub fn is_empty(&self) -> bool {
        self.runs.is_empty()
    }

    /// Runs in progress per queue.
    pub fn running_by_queue(&self) -> std::collections::HashMap<String, usize> {
        let mut out = std::collections::HashMap::new();
        for handle in self.runs.values() {
            *out.entry(handle.queue.clone()).or_default() += 1;
        }
        out
    }

    /// Forgets a run whose end the engine has received.
    pub fn finished(&mut self, run: RunId) {
        self.runs.remove(&run);
    }

    /// Asks a run's process group to stop: SIGTERM now, SIGKILL after the kill grace period.
    pub fn terminate(&self, run: RunId) {
        if let Some(handle) = self.runs.get(&run) {
            let _ = handle.control.send(Control::Terminate {
                grace: self.kill_grace,
            });
        }
    }

    /// Asks every running process group to stop: SIGTERM now, SIGKILL after `grace`.
    pub fn terminate_all(&self, grace: Duration) {
        for handle in self.runs.values() {
            let _ = handle.control.send(Control::Terminate { grace });
        }
    }

    /// Starts a run's process. Returns its pid, or why it could not be started (which the engine
    /// records as the run's `spawn_error`).
    pub fn spawn(&mut self, order: &SpawnOrder) -> Result<u32, String> {
        let run_as = self.identity.is_root() && order.owner != 0;
        if !self.identity.is_root() && order.owner != self.identity.uid {
            return Err(format!(
                "this chimed runs as uid {} and cannot run jobs as uid {}",
                self.identity.uid, order.owner
            ));
        }
        let env = self.environment(order, run_as);
        let path_var = env
            .iter()
            .rev()
            .find(|(k, _)| k == "PATH")
            .map(|(_, v)| v.as_str())
            .unwrap_or(&self.identity.path);
        let argv: Vec<String> = match &order.command {
            Command::Argv(argv) => {
                let program = resolve_program(&argv[0], path_var).ok_or_else(|| {
                    format!(
                        "command not found: {:?} (searched PATH={path_var})",
                        argv[0]
                    )
                })?;
                std::iter::once(program)
                    .chain(argv[1..].iter().cloned())
                    .collect()
            }
            Command::Shell(script) => vec!["/bin/sh".into(), "-c".into(), script.clone()],
        };

        let log = self.open_log(order.job, order.run)?;
        let log_err = log
            .try_clone()
            .map_err(|e| format!("cannot duplicate the log file handle: {e}"))?;

        let mut cmd = if run_as {
            let mut cmd = tokio::process::Command::new(&self.identity.helper);
            cmd.arg(run_as::ARG)
                .arg(order.owner.to_string())
                .arg(&order.cwd)
                .args(&argv);
            // The helper enters the working directory after dropping privileges.
            cmd.current_dir("/");
            cmd
        } else {
            let mut cmd = tokio::process::Command::new(&argv[0]);
            cmd.args(&argv[1..]).current_dir(&order.cwd);
            cmd
        };
        cmd.env_clear()
            .envs(env)
            .stdin(Stdio::null())
            .stdout(Stdio::from(log))
            .stderr(Stdio::from(log_err))
            .process_group(0)
            .kill_on_drop(false);
        let child = cmd
            .spawn()
            .map_err(|e| spawn_error(&argv[0], &order.cwd, &e))?;
        let pid = child
            .id()
            .ok_or("the process exited before its pid was read")?;
        let (control, control_rx) = mpsc::unbounded_channel();
        self.runs.insert(
            order.run,
            RunHandle {
                control,
                queue: order.queue.clone(),
            },
        );
        tokio::spawn(supervise(
            child,
            pid,
            order.job,
            order.run,
            control_rx,
            self.events.clone(),
        ));
        Ok(pid)
    }

    /// The run's environment: defaults, then the job's own entries (which win), then chime's.
    fn environment(&self, order: &SpawnOrder, run_as: bool) -> Vec<(String, String)> {
        let id = &self.identity;
        let mut env: Vec<(String, String)> = vec![
            ("PATH".into(), id.path.clone()),
            ("LANG".into(), id.lang.clone()),
        ];
        if !run_as {
            // For another user, the helper sets these from that user's passwd entry.
            env.push(("HOME".into(), id.home.clone()));
            env.push(("USER".into(), id.user.clone()));
            env.push(("LOGNAME".into(), id.user.clone()));
            env.push(("SHELL".into(), id.shell.clone()));
        }
        for (key, value) in &order.env {
            env.retain(|(k, _)| k != key);
            env.push((key.clone(), value.clone()));
        }
        for (key, value) in [
            ("CHIME_JOB_ID", order.job.0.to_string()),
            ("CHIME_RUN_ID", order.run.0.to_string()),
            ("CHIME_ATTEMPT", order.attempt.to_string()),
        ] {
            env.retain(|(k, _)| k != key);
            env.push((key.into(), value));
        }
        env
    }

    fn open_log(&self, job: JobId, run: RunId) -> Result<std::fs::File, String> {
        let path = log_path(&self.logs_dir, job, run);
        let dir = path.parent().expect("log paths have a parent");
        if !dir.is_dir() {
            std::fs::create_dir_all(dir)
                .and_then(|()| {
                    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o750))
                })
                .map_err(|e| format!("cannot create the log directory {}: {e}", dir.display()))?;
        }
        std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .mode(0o640)
            .open(&path)
            .map_err(|e| format!("cannot open the log file {}: {e}", path.display()))
    }
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

/// Finds `program` in `path` the way a shell would; a name with a slash is used as it is.
pub fn resolve_program(program: &str, path: &str) -> Option<String> {
    if program.contains('/') {
        return Some(program.to_owned());
    }
    path.split(':')
        .filter(|dir| !dir.is_empty())
        .map(|dir| Path::new(dir).join(program))
        .find(|candidate| {
            candidate
                .metadata()
                .is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
        })
        .map(|p| p.display().to_string())
}

/// Owns one running process until it ends, then reports how it ended.
async fn supervise(
    mut child: tokio::process::Child,
    pid: u32,
    job: JobId,
    run: RunId,
    mut control: mpsc::UnboundedReceiver<Control>,
    events: std_mpsc::Sender<Message>,
) {
    let group = Pid::from_raw(pid as i32);
    let mut terminating = false;
    let status = loop {
        tokio::select! {
            status = child.wait() => break status,
            Some(Control::Terminate { grace }) = control.recv(), if !terminating => {
                terminating = true;
                let _ = killpg(group, Signal::SIGTERM);
                tracing::info!(job_id = job.0, run_id = run.0, pid, "sent SIGTERM to the run's process group");
                tokio::select! {
                    status = child.wait() => break status,
                    () = tokio::time::sleep(grace) => {
                        tracing::warn!(job_id = job.0, run_id = run.0, pid, grace_ms = grace.as_millis() as u64,
                            "process group still running after the grace period; sending SIGKILL");
                        let _ = killpg(group, Signal::SIGKILL);
                    }
                }
            }
        }
    };
    if terminating {
        // Whatever the leader left behind in its group goes too.
        let _ = killpg(group, Signal::SIGKILL);
    }
    let outcome = match status {
        Ok(status) => match (status.code(), status.signal()) {
            (Some(code), _) => Outcome::Exited(code),
            (None, Some(signal)) => Outcome::Signaled(signal),
            (None, None) => Outcome::Exited(-1),
        },
        Err(err) => {
            tracing::error!(job_id = job.0, run_id = run.0, pid, error = %err, "waiting for the process failed");
            Outcome::Lost
        }
    };
    let event = Event::Exited { run, outcome };
    let message = Message::Work {
        work: Work::Runner { job, event },
        reply: None,
    };
    if events.send(message).is_err() {
        tracing::warn!(
            job_id = job.0,
            run_id = run.0,
            "engine gone before the run's end was recorded"
        );
    }
}
