//! Supervision: one small task per run ([`run`]) starts its process and owns the child until it
//! ends: it reports the pid (or why the spawn failed), reads the output into the run's log,
//! waits for the exit, enforces the timeout, carries out terminations (SIGTERM to the group,
//! SIGKILL after the grace period) and signals, starts the next runs that may start when its
//! process ends, and reports the outcome to the engine once the output is written. Because the
//! task owns the child and reaps it only when it exits, the process group id it signals cannot
//! have been reused by then.

use super::command::{Prepared, start_process};
use super::dispatch::{Dispatcher, lock};
use super::mailbox::Mailbox;
use super::output::OutputLog;
use super::{Report, pipe};
use crate::as_user;
use crate::machine::Event;
use chime_proto::{JobId, Outcome, RunId, Stream};
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

/// A request to a running process's supervisor.
#[derive(Debug, Clone, Copy)]
pub(super) enum Control {
    /// SIGTERM to the group now, SIGKILL after `grace`.
    Terminate { grace: Duration },
    /// This signal to the group, nothing more.
    Signal(i32),
}

/// Everything a run's task needs to start its process and supervise it.
#[derive(Debug)]
pub(super) struct Launch {
    pub(super) command: Result<Prepared, String>,
    pub(super) accounts: Arc<as_user::account::Accounts>,
    /// `/dev/null`, for the process's stdin.
    pub(super) stdin: Arc<std::fs::File>,
    pub(super) supervised: Supervised,
    pub(super) log: OutputLog,
    pub(super) control: mpsc::UnboundedReceiver<Control>,
}

/// What a supervisor needs to know about its run.
#[derive(Debug, Clone)]
pub(super) struct Supervised {
    pub(super) pid: u32,
    pub(super) job: JobId,
    pub(super) run: RunId,
    pub(super) queue: String,
    pub(super) owner: u32,
    pub(super) timeout: Option<Duration>,
    pub(super) kill_grace: Duration,
}

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
    } = launch;
    let report = |event| Report {
        job: supervised.job,
        event,
    };
    let began = Instant::now();
    // Another user's job runs only while its account is still the one it was recorded with and
    // may run jobs (as_user::account); the check may block (NSS, PAM).
    let command = match command {
        Ok(mut prepared) if prepared.account.is_some() => {
            let (uid, name) = prepared.account.take().expect("checked just above");
            let checked = tokio::task::spawn_blocking(move || accounts.check(uid, &name)).await;
            match checked {
                Ok(Ok(())) => Ok(prepared),
                Ok(Err(refusal)) => Err(format!("refused: {refusal}")),
                Err(err) => Err(format!("the account check failed: {err}")),
            }
        }
        other => other,
    };
    let spawned = match command {
        Ok(prepared) => start_process(prepared, &stdin, &supervised, &mut control).await,
        Err(error) => Err(error),
    };
    let outcome = match spawned {
        Ok((child, pid, stdout, stderr)) => {
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
            let mut announce = Some(report(Event::Spawned {
                run: supervised.run,
                pid,
                started_ms,
            }));
            let (outcome, ended_ms) = supervise(
                child,
                [stdout, stderr],
                &supervised,
                log,
                control,
                &mut announce,
                &events,
            )
            .await;
            // The end carries the start too (it may never have been announced), and when the
            // process ended, so that the record says when it did, not when it was written.
            Some((
                Event::Finished {
                    run: supervised.run,
                    outcome,
                    pid: Some(pid),
                    started_ms,
                    ended_ms,
                },
                began.elapsed(),
            ))
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
    // The slot is free: the next opened runs start now, before the engine hears of this end.
    let ready = {
        let mut d = lock(&dispatch);
        d.ended(
            &supervised.queue,
            supervised.owner,
            outcome.as_ref().map(|(_, took)| *took),
        );
        d.take_ready()
    };
    for next in ready {
        tokio::spawn(run(next, dispatch.clone(), Arc::clone(&events)));
    }
    if let Some((event, _)) = outcome
        && !events.post(report(event))
    {
        tracing::warn!(
            job_id = supervised.job.0,
            run_id = supervised.run.0,
            "engine gone before the run's end was recorded"
        );
    }
}

/// Owns one running process until it ends; returns how and when it ended, once its output is
/// written. If the process is still alive after [`ANNOUNCE_AFTER`], sends `announce` (its start)
/// and takes it. Its output pipes are watched only after [`pipe::WATCH_AFTER`] (see [`pipe`]).
async fn supervise(
    mut child: tokio::process::Child,
    [mut stdout, mut stderr]: [pipe::Pipe; 2],
    s: &Supervised,
    mut log: OutputLog,
    mut control: mpsc::UnboundedReceiver<Control>,
    announce: &mut Option<Report>,
    events: &Mailbox,
) -> (Outcome, crate::job::Ms) {
    let announce_at = Instant::now() + ANNOUNCE_AFTER;
    let watch_at = Instant::now() + pipe::WATCH_AFTER;
    let group = Pid::from_raw(s.pid as i32);
    let mut buffer = vec![0u8; 32 * 1024];
    let (out_buf, err_buf) = buffer.split_at_mut(16 * 1024);
    let timeout_at = s.timeout.map(|t| Instant::now() + t);
    // When a termination is under way: when to send SIGKILL.
    let mut kill_at: Option<Instant> = None;
    let mut ended_by_us = false;
    let mut timed_out = false;
    let term = |grace: Duration, why: &str| {
        // Captures only copies, so `s` stays borrowed immutably.
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
            () = tokio::time::sleep_until(watch_at), if stdout.is_idle() || stderr.is_idle() => {
                stdout.watch();
                stderr.watch();
            }
            read = stdout.read(out_buf), if stdout.is_watched() => if let Some(n) = read {
                log.append(Stream::Stdout, &out_buf[..n]);
            },
            read = stderr.read(err_buf), if stderr.is_watched() => if let Some(n) = read {
                log.append(Stream::Stderr, &err_buf[..n]);
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
                        () = tokio::time::sleep_until(announce_at), if announce.is_some() => {
                if let Some(message) = announce.take() {
                    tracing::info!(job_id = s.job.0, run_id = s.run.0, pid = s.pid, "run started");
                    events.post(message);
                }
            }
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
    let ended_ms = crate::job::now_ms();
    // What is still in the pipes: usually all of it is there already and they are at their end.
    stdout.read_now(Stream::Stdout, &mut log, out_buf);
    stderr.read_now(Stream::Stderr, &mut log, err_buf);
    // What background children write for a moment more.
    let drain_until = Instant::now() + DRAIN;
    stdout.watch();
    stderr.watch();
    while stdout.is_open() || stderr.is_open() {
        tokio::select! {
            // (A pipe's end closes it; the loop ends when both are closed.)
            read = stdout.read(out_buf), if stdout.is_open() => if let Some(n) = read {
                log.append(Stream::Stdout, &out_buf[..n]);
            },
            read = stderr.read(err_buf), if stderr.is_open() => if let Some(n) = read {
                log.append(Stream::Stderr, &err_buf[..n]);
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
    (outcome, ended_ms)
}

/// Sleeps until `at`, or forever.
async fn sleep_until(at: Option<Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}
