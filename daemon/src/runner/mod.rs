//! The runner: starts runs' processes, watches them, and signals them.
//!
//! Each run is a process in its own process group (`process_group(0)`), with stdin from
//! `/dev/null` and stdout and stderr as pipes that its supervisor reads into the run's log
//! ([`output`]: streams kept apart, capped to the tail, a file only if there is output). The
//! spawn stays on std's posix_spawn fast path: no `pre_exec`, no `uid()`/`gid()` (those force a
//! fork whose cost grows with the daemon's memory). When chimed runs as root and the job belongs to
//! another user, the process started is chimed itself in its `__run-as` mode ([`run_as`]), which
//! drops to the owner's uid, gid and groups and then execs the command.
//!
//! One small task per run ([`supervise`]) spawns its process and owns the child: it reports the
//! pid (or why the spawn failed), reads the output, waits for the exit, enforces the timeout,
//! carries out terminations (SIGTERM to the group, SIGKILL after the grace period) and signals,
//! and reports the outcome to the engine once the output is written. Because that task owns the
//! child and reaps it only when it exits, the process group id it signals cannot have been reused
//! by then. The engine only starts the task (after the commit that opened the run), so spawning,
//! which blocks until the child has exec'd, happens on the async workers, in parallel, while the
//! engine goes on to its next batch.

pub mod output;
pub mod run_as;

pub use output::log_path;

use crate::engine::Message;
use crate::engine::batch::{SpawnOrder, Work};
use crate::engine::machine::Event;
use chime_proto::{Command, JobId, Outcome, RunId, Stream};
use nix::sys::signal::{Signal, killpg};
use nix::unistd::Pid;
use output::OutputLog;
use std::collections::HashMap;
use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::mpsc as std_mpsc;
use std::time::Duration;
use tokio::io::AsyncReadExt;
use tokio::sync::mpsc;
use tokio::time::Instant;

/// How long a supervisor keeps reading output after the process exited, for what its
/// background children still write before their pipes are closed.
const DRAIN: Duration = Duration::from_millis(100);

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
    /// This signal to the group, nothing more.
    Signal(i32),
}

#[derive(Debug)]
struct RunHandle {
    control: mpsc::UnboundedSender<Control>,
    queue: String,
    /// The job's grace between SIGTERM and SIGKILL.
    kill_grace: Duration,
}

/// Starts and tracks the processes of running jobs. Owned by the engine.
#[derive(Debug)]
pub struct Runner {
    runs: HashMap<RunId, RunHandle>,
    /// Where supervisors report exits: the engine's inbox.
    events: std_mpsc::Sender<Message>,
    logs_dir: PathBuf,
    identity: Identity,
}

impl Runner {
    pub fn new(events: std_mpsc::Sender<Message>, logs_dir: PathBuf, identity: Identity) -> Self {
        Self {
            runs: HashMap::new(),
            events,
            logs_dir,
            identity,
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
    pub fn running_by_queue(&self) -> HashMap<String, usize> {
        let mut out = HashMap::new();
        for handle in self.runs.values() {
            *out.entry(handle.queue.clone()).or_default() += 1;
        }
        out
    }

    /// Forgets a run whose end the engine has received.
    pub fn finished(&mut self, run: RunId) {
        self.runs.remove(&run);
    }

    /// Asks a run's process group to stop: SIGTERM now, SIGKILL after the job's kill grace.
    pub fn terminate(&self, run: RunId) {
        if let Some(handle) = self.runs.get(&run) {
            let _ = handle.control.send(Control::Terminate {
                grace: handle.kill_grace,
            });
        }
    }

    /// Asks every running process group to stop: SIGTERM now, SIGKILL after `grace`.
    pub fn terminate_all(&self, grace: Duration) {
        for handle in self.runs.values() {
            let _ = handle.control.send(Control::Terminate { grace });
        }
    }

    /// Sends `signal` to a run's process group.
    pub fn signal(&self, run: RunId, signal: i32) {
        if let Some(handle) = self.runs.get(&run) {
            let _ = handle.control.send(Control::Signal(signal));
        }
    }

    /// Starts a run: its supervisor spawns the process and reports `Spawned` with the pid, or
    /// `SpawnFailed` with why (recorded as the run's `spawn_error`). Call after the commit that
    /// opened the run. Signals sent before the process exists wait for it.
    pub fn start(&mut self, order: &SpawnOrder) {
        let (control, control_rx) = mpsc::unbounded_channel();
        let kill_grace = Duration::from_millis(order.kill_grace_ms);
        self.runs.insert(
            order.run,
            RunHandle {
                control,
                queue: order.queue.clone(),
                kill_grace,
            },
        );
        let supervised = Supervised {
            pid: 0,
            job: order.job,
            run: order.run,
            timeout: order.timeout_ms.map(Duration::from_millis),
            kill_grace,
        };
        let events = self.events.clone();
        let command = self.command(order);
        let log = OutputLog::new(
            log_path(&self.logs_dir, order.job, order.run),
            order.max_output,
        );
        tokio::spawn(async move {
            let report = |event| Message::Work {
                work: Work::Runner {
                    job: supervised.job,
                    event,
                },
                reply: None,
            };
            let spawned = command.and_then(|(mut cmd, program, cwd)| {
                let child = cmd.spawn().map_err(|e| spawn_error(&program, &cwd, &e))?;
                let pid = child
                    .id()
                    .ok_or("the process exited before its pid was read")?;
                Ok((child, pid))
            });
            match spawned {
                Ok((child, pid)) => {
                    tracing::info!(
                        job_id = supervised.job.0,
                        run_id = supervised.run.0,
                        pid,
                        "run started"
                    );
                    let _ = events.send(report(Event::Spawned {
                        run: supervised.run,
                        pid,
                    }));
                    let supervised = Supervised { pid, ..supervised };
                    supervise(child, supervised, log, control_rx, events).await;
                }
                Err(error) => {
                    tracing::warn!(job_id = supervised.job.0, run_id = supervised.run.0, %error, "run could not be started");
                    let _ = events.send(report(Event::SpawnFailed {
                        run: supervised.run,
                        error,
                    }));
                }
            }
        });
    }

    /// The command that starts a run, with the program and directory for error messages.
    fn command(
        &self,
        order: &SpawnOrder,
    ) -> Result<(tokio::process::Command, String, String), String> {
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
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .process_group(0)
            .kill_on_drop(false);
        Ok((cmd, argv[0].clone(), order.cwd.clone()))
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

/// What a supervisor needs to know about its run.
#[derive(Debug, Clone, Copy)]
struct Supervised {
    pid: u32,
    job: JobId,
    run: RunId,
    timeout: Option<Duration>,
    kill_grace: Duration,
}

/// Reads from a pipe into `log`; `None` when the pipe is closed.
async fn pump<R: tokio::io::AsyncRead + Unpin>(
    pipe: &mut Option<R>,
    buf: &mut [u8],
) -> Option<usize> {
    let reader = pipe.as_mut()?;
    match reader.read(buf).await {
        Ok(0) | Err(_) => None,
        Ok(n) => Some(n),
    }
}

/// Owns one running process until it ends, then reports how it ended.
async fn supervise(
    mut child: tokio::process::Child,
    s: Supervised,
    mut log: OutputLog,
    mut control: mpsc::UnboundedReceiver<Control>,
    events: std_mpsc::Sender<Message>,
) {
    let group = Pid::from_raw(s.pid as i32);
    let mut stdout = child.stdout.take();
    let mut stderr = child.stderr.take();
    let mut out_buf = vec![0u8; 16 * 1024];
    let mut err_buf = vec![0u8; 16 * 1024];
    let timeout_at = s.timeout.map(|t| Instant::now() + t);
    // When a termination is under way: when to send SIGKILL.
    let mut kill_at: Option<Instant> = None;
    let mut ended_by_us = false;
    let mut timed_out = false;
    let term = |grace: Duration, why: &str| {
        let _ = killpg(group, Signal::SIGTERM);
        tracing::info!(
            job_id = s.job.0,
            run_id = s.run.0,
            pid = s.pid,
            why,
            "sent SIGTERM to the run's process group"
        );
        Instant::now() + grace
    };
    let status = loop {
        tokio::select! {
            status = child.wait() => break status,
            n = pump(&mut stdout, &mut out_buf), if stdout.is_some() => match n {
                Some(n) => log.append(Stream::Stdout, &out_buf[..n]),
                None => stdout = None,
            },
            n = pump(&mut stderr, &mut err_buf), if stderr.is_some() => match n {
                Some(n) => log.append(Stream::Stderr, &err_buf[..n]),
                None => stderr = None,
            },
            Some(request) = control.recv() => match request {
                Control::Terminate { grace } if kill_at.is_none() => {
                    ended_by_us = true;
                    kill_at = Some(term(grace, "terminate"));
                }
                Control::Terminate { .. } => {}
                Control::Signal(signal) => {
                    if let Ok(signal) = Signal::try_from(signal) {
                        let _ = killpg(group, signal);
                        tracing::info!(job_id = s.job.0, run_id = s.run.0, pid = s.pid, %signal, "signalled the run's process group");
                    }
                }
            },
            () = sleep_until(timeout_at), if timeout_at.is_some() && kill_at.is_none() => {
                timed_out = true;
                ended_by_us = true;
                kill_at = Some(term(s.kill_grace, "timeout"));
            }
            () = sleep_until(kill_at), if kill_at.is_some() => {
                tracing::warn!(job_id = s.job.0, run_id = s.run.0, pid = s.pid,
                    "process group still running after the grace period; sending SIGKILL");
                let _ = killpg(group, Signal::SIGKILL);
                kill_at = Some(Instant::now() + Duration::from_secs(3600));
            }
        }
    };
    // What is still in the pipes, and what background children write for a moment more.
    let drain_until = Instant::now() + DRAIN;
    while stdout.is_some() || stderr.is_some() {
        tokio::select! {
            n = pump(&mut stdout, &mut out_buf), if stdout.is_some() => match n {
                Some(n) => log.append(Stream::Stdout, &out_buf[..n]),
                None => stdout = None,
            },
            n = pump(&mut stderr, &mut err_buf), if stderr.is_some() => match n {
                Some(n) => log.append(Stream::Stderr, &err_buf[..n]),
                None => stderr = None,
            },
            () = tokio::time::sleep_until(drain_until) => break,
        }
    }
    if ended_by_us {
        // Whatever the leader left behind in its group goes too.
        let _ = killpg(group, Signal::SIGKILL);
    }
    let outcome = match status {
        Ok(_) if timed_out => Outcome::TimedOut,
        Ok(status) => match (status.code(), status.signal()) {
            (Some(code), _) => Outcome::Exited(code),
            (None, Some(signal)) => Outcome::Signaled(signal),
            (None, None) => Outcome::Exited(-1),
        },
        Err(err) => {
            tracing::error!(job_id = s.job.0, run_id = s.run.0, pid = s.pid, error = %err, "waiting for the process failed");
            Outcome::Lost
        }
    };
    let event = Event::Exited {
        run: s.run,
        outcome,
    };
    let message = Message::Work {
        work: Work::Runner { job: s.job, event },
        reply: None,
    };
    if events.send(message).is_err() {
        tracing::warn!(
            job_id = s.job.0,
            run_id = s.run.0,
            "engine gone before the run's end was recorded"
        );
    }
}

/// Sleeps until `at`, or forever.
async fn sleep_until(at: Option<Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}
