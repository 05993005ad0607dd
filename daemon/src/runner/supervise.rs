//! Supervision: one small task per run ([`run`]) starts its process and owns the child until it
//! ends: it reports the pid (or why the spawn failed), reads the output into the run's log,
//! waits for the exit, enforces the timeout, carries out terminations (SIGTERM to the group,
//! SIGKILL after the grace period) and signals, starts the next runs that may start when its
//! process ends, and reports the outcome to the engine once the output is written. Because the
//! task owns the child and reaps it only when it exits, the process group id it signals cannot
//! have been reused by then.

use super::child::Child;
use super::command::{Prepared, Process, start_process};
use super::dispatch::{Dispatcher, lock};
use super::journal::Gate;
use super::mailbox::Mailbox;
use super::output::OutputLog;
use super::{Control, Launch, Report, Supervised, pipe};
use crate::machine::Event;
use crate::{as_user, cgroup};
use chime_proto::{Outcome, Stream};
use nix::sys::signal::{Signal, killpg};
use nix::unistd::Pid;
use std::os::unix::process::ExitStatusExt;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::mpsc;
use tokio::time::Instant;

/// How long a supervisor keeps reading output after the process exited, for what its
/// background children still write before their pipes are closed.
const DRAIN: Duration = Duration::from_millis(100);

/// A run still alive this long after its start has its pid and start time recorded; a shorter
/// one has them recorded with its end (one record instead of two).
const ANNOUNCE_AFTER: Duration = Duration::from_millis(100);

/// A run's task: starts its process, supervises it, and when it ends, starts the next runs that
/// may start, before reporting the end to the engine. (Boxed: it spawns more of itself.)
pub(super) fn run(
    launch: Launch,
    dispatch: Dispatcher,
    events: Arc<Mailbox>,
) -> std::pin::Pin<Box<dyn std::future::Future<Output = ()> + Send>> {
    Box::pin(run_inner(launch, dispatch, events))
}

async fn run_inner(launch: Launch, dispatch: Dispatcher, events: Arc<Mailbox>) {
    let Launch {
        command,
        accounts,
        stdin,
        supervised,
        log,
        mut control,
        contain,
        logged,
    } = launch;
    let report = |event| Report {
        job: supervised.job,
        event,
    };
    let began = Instant::now();
    let spawned = match check_account(command, accounts).await {
        Ok(prepared) => {
            start_process(
                prepared,
                &stdin,
                &supervised,
                contain.as_ref(),
                &mut control,
            )
            .await
        }
        Err(error) => Err(error),
    };
    let ended = match spawned {
        Ok(process) => {
            let (finished, cgroup) =
                supervise_run(process, &supervised, log, logged, control, &events).await;
            Some((finished, began.elapsed(), cgroup))
        }
        Err(error) => {
            tracing::warn!(job_id = supervised.job.0, run_id = supervised.run.0, %error, "run could not be started");
            events.post(report(Event::SpawnFailed {
                run: supervised.run,
                error,
            }));
            None
        }
    };
    start_next(
        &dispatch,
        &supervised,
        ended.as_ref().map(|(_, took, _)| *took),
        &events,
    );
    if let Some((event, _, cgroup)) = ended {
        if !events.post(report(event)) {
            tracing::warn!(
                job_id = supervised.job.0,
                run_id = supervised.run.0,
                "engine gone before the run's end was recorded"
            );
        }
        // Removed once the end is reported: not on the way to the next run's start.
        if let (Some(cgroup), Some(contain)) = (cgroup, &contain) {
            contain.maker.release(cgroup);
        }
    }
}

/// Another user's job runs only while its account is still the one it was recorded with and may
/// run jobs ([`as_user::account`]); the check may block (NSS, PAM). Errors: why the run may not
/// start, as `command` already does when it could not be prepared.
async fn check_account(
    command: Result<Prepared, String>,
    accounts: Arc<as_user::account::Accounts>,
) -> Result<Prepared, String> {
    let mut prepared = command?;
    let Some((uid, name)) = prepared.account.take() else {
        return Ok(prepared);
    };
    match tokio::task::spawn_blocking(move || accounts.check(uid, &name)).await {
        Ok(Ok(())) => Ok(prepared),
        Ok(Err(refusal)) => Err(format!("refused: {refusal}")),
        Err(err) => Err(format!("the account check failed: {err}")),
    }
}

/// Supervises the run's process, just started, until it ends: the end to report, which carries
/// the start too (it may never have been announced), and when the process ended, so that the
/// record says when it did, not when it was written.
async fn supervise_run(
    process: Process,
    supervised: &Supervised,
    log: OutputLog,
    logged: Gate,
    control: mpsc::UnboundedReceiver<Control>,
    events: &Mailbox,
) -> (Event, Option<cgroup::RunCgroup>) {
    let pid = process.pid;
    let started_ms = crate::job::now_ms();
    tracing::debug!(
        job_id = supervised.job.0,
        run_id = supervised.run.0,
        pid,
        "run started"
    );
    let supervised = Supervised {
        pid,
        ..supervised.clone()
    };
    let announce = Report {
        job: supervised.job,
        event: Event::Spawned {
            run: supervised.run,
            pid,
            started_ms,
        },
    };
    let (outcome, ended_ms, usage, cgroup) =
        supervise(process, &supervised, log, logged, control, announce, events).await;
    let event = Event::Finished {
        run: supervised.run,
        outcome,
        pid: Some(pid),
        started_ms,
        ended_ms,
        usage,
    };
    (event, cgroup)
}

/// The run's slot is free: the next opened runs start now, before the engine hears of this end.
/// `took`: how long the run took, from its launch to its end (`None`: it never started).
fn start_next(
    dispatch: &Dispatcher,
    supervised: &Supervised,
    took: Option<Duration>,
    events: &Arc<Mailbox>,
) {
    let ready = {
        let mut d = lock(dispatch);
        d.ended(&supervised.queue, supervised.owner, took);
        d.take_ready()
    };
    for next in ready {
        tokio::spawn(run(next, dispatch.clone(), Arc::clone(events)));
    }
}

/// Owns one running process until it ends; returns how and when it ended, and what it cost (from
/// its cgroup), once its output is written and everything it left in its cgroup has ended. If the
/// process is still alive after [`ANNOUNCE_AFTER`], sends `announce` (its start). Its output pipes
/// are watched only after [`pipe::WATCH_AFTER`] (see [`pipe`]), and read only once `logged`
/// is open (see [`super::journal`]).
async fn supervise(
    process: Process,
    s: &Supervised,
    log: OutputLog,
    logged: Gate,
    control: mpsc::UnboundedReceiver<Control>,
    announce: Report,
    events: &Mailbox,
) -> (
    Outcome,
    crate::job::Ms,
    Option<chime_proto::RunUsage>,
    Option<cgroup::RunCgroup>,
) {
    let Process {
        mut child,
        pid: _,
        stdout,
        stderr,
        cgroup,
    } = process;
    let mut buffer = vec![0u8; 32 * 1024];
    let (out_buf, err_buf) = buffer.split_at_mut(16 * 1024);
    let mut supervisor = Supervisor {
        s,
        group: Pid::from_raw(s.pid as i32),
        cgroup,
        stdout,
        stderr,
        log,
        logged,
        control,
        announce: Some(announce),
        events,
        kill_at: None,
        ended_by_us: false,
        timed_out: false,
    };
    let status = supervisor.wait(&mut child, out_buf, err_buf).await;
    let ended_ms = crate::job::now_ms();
    supervisor.logged.opened().await;
    supervisor
        .stdout
        .read_now(Stream::Stdout, &mut supervisor.log, out_buf);
    supervisor
        .stderr
        .read_now(Stream::Stderr, &mut supervisor.log, err_buf);
    supervisor.end_the_rest().await;
    supervisor.drain(out_buf, err_buf).await;
    let (usage, oom) = supervisor.account();
    let outcome = supervisor.outcome(status, oom);
    let cgroup = supervisor.cgroup.take();
    (outcome, ended_ms, usage, cgroup)
}

/// The state of one run's supervision, while its process runs and while its output drains.
struct Supervisor<'a> {
    s: &'a Supervised,
    /// The process group: its id is the process's pid.
    group: Pid,
    /// The run's cgroup; `None` without a subtree: the process group is all there is.
    cgroup: Option<cgroup::RunCgroup>,
    stdout: pipe::Pipe,
    stderr: pipe::Pipe,
    log: OutputLog,
    /// Output is read once this is open: after the run's start is in the log.
    logged: Gate,
    control: mpsc::UnboundedReceiver<Control>,
    /// The run's start, until it is sent (see [`ANNOUNCE_AFTER`]).
    announce: Option<Report>,
    events: &'a Mailbox,
    /// When a termination is under way: when to send SIGKILL.
    kill_at: Option<Instant>,
    /// A termination or the timeout ended the process (its group is killed once it exits).
    ended_by_us: bool,
    /// The timeout ended it: the run timed out, whatever the exit status says.
    timed_out: bool,
}

impl Supervisor<'_> {
    /// Until the process exits: reads its output into the log, and acts on controls and on the
    /// announcement, timeout and kill deadlines. Its exit status.
    async fn wait(
        &mut self,
        child: &mut Child,
        out_buf: &mut [u8],
        err_buf: &mut [u8],
    ) -> std::io::Result<std::process::ExitStatus> {
        let announce_at = Instant::now() + ANNOUNCE_AFTER;
        let watch_at = Instant::now() + pipe::WATCH_AFTER;
        let timeout_at = self.s.timeout.map(|t| Instant::now() + t);
        loop {
            tokio::select! {
                status = child.wait() => return status,
                () = tokio::time::sleep_until(watch_at), if self.stdout.is_idle() || self.stderr.is_idle() => {
                    self.stdout.watch();
                    self.stderr.watch();
                }
                () = self.logged.opened(), if !self.logged.is_open() => {}
                read = self.stdout.read(out_buf), if self.stdout.is_watched() && self.logged.is_open() => if let Some(n) = read {
                    self.log.append(Stream::Stdout, &out_buf[..n]);
                },
                read = self.stderr.read(err_buf), if self.stderr.is_watched() && self.logged.is_open() => if let Some(n) = read {
                    self.log.append(Stream::Stderr, &err_buf[..n]);
                },
                Some(request) = self.control.recv() => self.on_control(request),
                () = tokio::time::sleep_until(announce_at), if self.announce.is_some() => self.announce_start(),
                () = sleep_until(timeout_at), if timeout_at.is_some() && self.kill_at.is_none() => {
                    self.timed_out = true;
                    self.terminate(self.s.kill_grace, "timeout");
                }
                () = sleep_until(self.kill_at), if self.kill_at.is_some() => self.kill_after_grace(),
            }
        }
    }

    /// A request from the engine: terminate, or pass on a signal.
    fn on_control(&mut self, request: Control) {
        let s = self.s;
        match request {
            Control::Terminate { grace } if self.kill_at.is_none() => {
                self.terminate(grace, "terminate")
            }
            Control::Terminate { .. } => {}
            Control::Signal(signal) => {
                if let Ok(signal) = Signal::try_from(signal) {
                    self.signal_all(signal);
                    tracing::info!(job_id = s.job.0, run_id = s.run.0, pid = s.pid, %signal, "signalled the run's processes");
                }
            }
        }
    }

    /// The process lived long enough to have its start recorded on its own.
    fn announce_start(&mut self) {
        let s = self.s;
        if let Some(message) = self.announce.take() {
            tracing::info!(
                job_id = s.job.0,
                run_id = s.run.0,
                pid = s.pid,
                "run started"
            );
            self.events.post(message);
        }
    }

    /// `signal` to every process of the run: all of its cgroup, or its process group.
    fn signal_all(&self, signal: Signal) {
        match &self.cgroup {
            Some(cgroup) => {
                cgroup.signal_all(signal);
            }
            None => {
                let _ = killpg(self.group, signal);
            }
        }
    }

    /// Every process of the run ends now: `cgroup.kill`, or SIGKILL to the process group.
    fn kill_all(&self) {
        match &self.cgroup {
            Some(cgroup) => cgroup.kill(),
            None => {
                let _ = killpg(self.group, Signal::SIGKILL);
            }
        }
    }

    /// SIGTERM to every process of the run now, SIGKILL after `grace`.
    fn terminate(&mut self, grace: Duration, why: &str) {
        let s = self.s;
        self.signal_all(Signal::SIGTERM);
        tracing::info!(
            job_id = s.job.0,
            run_id = s.run.0,
            pid = s.pid,
            why,
            "sent SIGTERM to the run's processes"
        );
        self.ended_by_us = true;
        self.kill_at = Some(Instant::now() + grace);
    }

    /// The grace period of a termination is over.
    fn kill_after_grace(&mut self) {
        let s = self.s;
        tracing::warn!(
            job_id = s.job.0,
            run_id = s.run.0,
            pid = s.pid,
            "the run's processes are still running after the grace period; killing them"
        );
        self.kill_all();
        self.kill_at = Some(Instant::now() + Duration::from_secs(3600));
    }

    /// The process exited: reads what is left in its pipes, and what its background children
    /// still write for [`DRAIN`].
    async fn drain(&mut self, out_buf: &mut [u8], err_buf: &mut [u8]) {
        let drain_until = Instant::now() + DRAIN;
        self.stdout.watch();
        self.stderr.watch();
        while self.stdout.is_open() || self.stderr.is_open() {
            tokio::select! {
                // (A pipe's end closes it; the loop ends when both are closed.)
                read = self.stdout.read(out_buf), if self.stdout.is_open() => if let Some(n) = read {
                    self.log.append(Stream::Stdout, &out_buf[..n]);
                },
                read = self.stderr.read(err_buf), if self.stderr.is_open() => if let Some(n) = read {
                    self.log.append(Stream::Stderr, &err_buf[..n]);
                },
                () = tokio::time::sleep_until(drain_until) => break,
            }
        }
    }

    /// The main process exited: what it left running in the run's cgroup (or process group)
    /// ends too. After a termination (timeout, cancel, stop) at once; otherwise SIGTERM, and
    /// SIGKILL after the job's grace, unless the job keeps its children (`--keep-children`).
    async fn end_the_rest(&mut self) {
        let s = self.s;
        if !self.ended_by_us && s.keep_children {
            return;
        }
        let Some(cgroup) = &self.cgroup else {
            // Without a cgroup only the process group can be reached; `kill(-group, 0)` says
            // whether anything is left in it.
            if killpg(self.group, None).is_ok() {
                if !self.ended_by_us {
                    self.signal_all(Signal::SIGTERM);
                    let deadline = Instant::now() + s.kill_grace;
                    while killpg(self.group, None).is_ok() && Instant::now() < deadline {
                        tokio::time::sleep(Duration::from_millis(10)).await;
                    }
                }
                self.kill_all();
            }
            return;
        };
        if !cgroup.populated() {
            return;
        }
        let left = cgroup::run::procs(cgroup.dir()).len();
        if !self.ended_by_us {
            tracing::info!(
                job_id = s.job.0,
                run_id = s.run.0,
                processes = left,
                "the run's main process exited and left processes running; ending them (--keep-children keeps them)"
            );
            cgroup.signal_all(Signal::SIGTERM);
            let dir = cgroup.dir().to_owned();
            if !self.wait_empty(&dir, s.kill_grace).await {
                self.kill_all();
            }
        } else {
            cgroup.kill();
        }
        let Some(cgroup) = &self.cgroup else { return };
        if !cgroup::run::until_empty(cgroup.dir(), EMPTY_WITHIN).await {
            tracing::error!(job_id = s.job.0, run_id = s.run.0, cgroup = %cgroup.dir().display(), "the run's cgroup is not empty 10 s after cgroup.kill");
        }
    }

    /// Waits up to `limit` for the run's cgroup at `dir` to empty, acting on requests meanwhile:
    /// a termination (stop, cancel, replace) ends the wait at once (the caller then kills what
    /// is left), a signal is passed on. Whether it emptied.
    async fn wait_empty(&mut self, dir: &std::path::Path, limit: Duration) -> bool {
        let deadline = Instant::now() + limit;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            tokio::select! {
                empty = cgroup::run::until_empty(dir, left) => return empty,
                request = self.control.recv() => match request {
                    Some(Control::Terminate { .. }) => {
                        self.ended_by_us = true;
                        return false;
                    }
                    Some(Control::Signal(signal)) => {
                        if let Ok(signal) = Signal::try_from(signal) {
                            self.signal_all(signal);
                        }
                    }
                    // The runner is gone: nothing more will come.
                    None => return cgroup::run::until_empty(dir, left).await,
                },
            }
        }
    }

    /// Reads what the run cost from its cgroup. `true` if the OOM killer acted in it.
    fn account(&mut self) -> (Option<chime_proto::RunUsage>, bool) {
        match &mut self.cgroup {
            Some(cgroup) => {
                let (usage, oom) = cgroup.usage();
                (Some(usage), oom)
            }
            None => (None, false),
        }
    }

    /// How the run ended, from the process's exit `status`; `oom`: the OOM killer acted in its
    /// cgroup.
    fn outcome(&self, status: std::io::Result<std::process::ExitStatus>, oom: bool) -> Outcome {
        let s = self.s;
        match status {
            Ok(_) if self.timed_out => Outcome::TimedOut,
            // The OOM killer acted in the run's cgroup and the run failed: usually it took a
            // child (a shell's command), and the shell then exited non-zero.
            Ok(status) if oom && !status.success() => Outcome::OomKilled,
            Ok(status) => match (status.code(), status.signal()) {
                (Some(code), _) => Outcome::Exited(code),
                (None, Some(signal)) => Outcome::Signaled(signal),
                (None, None) => Outcome::Exited(-1),
            },
            Err(err) => {
                tracing::error!(job_id = s.job.0, run_id = s.run.0, pid = s.pid, error = %err, "waiting for the process failed");
                Outcome::Lost
            }
        }
    }
}

/// How long a run's cgroup may take to empty after `cgroup.kill` before chimed says so.
const EMPTY_WITHIN: Duration = Duration::from_secs(10);

/// Sleeps until `at`, or forever.
async fn sleep_until(at: Option<Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}
