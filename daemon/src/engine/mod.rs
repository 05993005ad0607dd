//! The engine: the one task that changes jobs.
//!
//! Everything that changes a job reaches the engine as [`Work`] through one channel: users'
//! requests (with a reply slot), process exits from the runner's supervisors, and, internally,
//! the outcome of spawns. The loop:
//!
//! 1. Wait for work, or for the earliest due time in the timer index (one `sleep_until`, however
//!    many jobs are scheduled; capped so that a wall-clock jump is noticed within a minute).
//! 2. Take everything that is ready, up to [`MAX_BATCH`].
//! 3. Apply it in **one** write transaction on a blocking thread ([`batch::apply`]): each item goes
//!    through the pure state machine ([`machine::step`]), then due jobs are started while slots
//!    are free. Commit once (group commit).
//! 4. Only after the commit: spawn processes, send signals, answer requests.
//!
//! While a commit is in flight, new work queues in the channel and becomes the next batch, so
//! under load each commit carries many changes.
//!
//! If a commit fails (disk full, I/O error), requests in the batch are answered with an
//! `internal` error, runner events are kept and retried, and the engine waits a moment before
//! trying again. Nothing is acted on that was not committed.
//!
//! # Shutdown
//!
//! On shutdown the engine stops starting runs and refuses new changes (`shutting_down`), sends
//! SIGTERM to every running process group, waits up to the stop grace period for them to end,
//! then SIGKILLs what is left. Runs ended this way are recorded as `interrupted` (a run that still
//! exits with code 0 is recorded as such). The final batch is committed before the engine returns.

pub mod batch;
pub mod machine;

use crate::job::{Ms, now_ms};
use crate::runner::Runner;
use crate::store::{Store, StoreError};
use batch::{Applied, SpawnOrder, Work};
use chime_proto::{ErrorCode, ErrorReply, Response};
use machine::Event;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};
use tokio::sync::{mpsc, oneshot};
use tokio_util::sync::CancellationToken;

/// Most pieces of work in one transaction.
pub const MAX_BATCH: usize = 4096;

/// Longest sleep without looking at the clock again.
const MAX_SLEEP: Duration = Duration::from_secs(60);

/// A reply slot for a user's request.
pub type ReplySlot = oneshot::Sender<Result<Response, ErrorReply>>;

/// A message in the engine's inbox.
#[derive(Debug)]
pub struct Message {
    pub work: Work,
    pub reply: Option<ReplySlot>,
}

/// Counters the engine keeps for `status` (read without asking the engine).
#[derive(Debug, Default)]
pub struct Stats {
    pub commits: AtomicU64,
    pub changes: AtomicU64,
    pub last_commit_us: AtomicU64,
}

/// The sending side of the engine's inbox. Cheap to clone.
#[derive(Debug, Clone)]
pub struct EngineHandle {
    inbox: mpsc::Sender<Message>,
}

impl EngineHandle {
    /// Sends a change to the engine and waits until it is committed and answered.
    pub async fn request(&self, work: Work) -> Result<Response, ErrorReply> {
        let (reply, answer) = oneshot::channel();
        if self
            .inbox
            .send(Message {
                work,
                reply: Some(reply),
            })
            .await
            .is_err()
        {
            return Err(shutting_down());
        }
        answer.await.unwrap_or_else(|_| Err(shutting_down()))
    }
}

fn shutting_down() -> ErrorReply {
    ErrorReply::new(
        ErrorCode::ShuttingDown,
        "chimed is shutting down and takes no more changes; retry when it is back",
    )
}

/// How the engine behaves.
#[derive(Debug, Clone)]
pub struct EngineConfig {
    /// Most runs in progress at once.
    pub max_running: usize,
    /// How long running jobs get between SIGTERM and SIGKILL when the daemon stops.
    pub stop_grace: Duration,
}

/// The engine task's state.
#[derive(Debug)]
pub struct Engine {
    store: Arc<Store>,
    inbox: mpsc::Receiver<Message>,
    /// Spawn outcomes to record in the next batch, and runner events to retry.
    pending: Vec<Work>,
    runner: Runner,
    config: EngineConfig,
    stats: Arc<Stats>,
    next_due: Option<Ms>,
    shutting_down: bool,
}

/// Creates the engine's inbox: the handle for connections, and the receiver for [`Engine::new`].
/// The runner's supervisors send process exits into the same inbox (a clone of the handle's
/// sender), so exits and requests are applied in the order they arrived.
pub fn channel() -> (EngineHandle, mpsc::Receiver<Message>) {
    let (inbox_tx, inbox_rx) = mpsc::channel::<Message>(MAX_BATCH * 4);
    (EngineHandle { inbox: inbox_tx }, inbox_rx)
}

impl EngineHandle {
    /// A sender for the runner's supervisors.
    pub fn events(&self) -> mpsc::Sender<Message> {
        self.inbox.clone()
    }
}

impl Engine {
    pub fn new(
        store: Arc<Store>,
        inbox: mpsc::Receiver<Message>,
        runner: Runner,
        config: EngineConfig,
        stats: Arc<Stats>,
    ) -> Self {
        Self {
            store,
            inbox,
            pending: Vec::new(),
            runner,
            config,
            stats,
            next_due: None,
            shutting_down: false,
        }
    }

    /// Closes every run that was open when the daemon last stopped as `lost`. Call before the
    /// engine runs (and before the daemon says it is ready). Returns how many runs were closed.
    pub fn recover(store: &Store) -> Result<usize, StoreError> {
        let now = now_ms();
        store.write(|w| {
            let open = w.active_runs()?;
            let work = open
                .iter()
                .map(|(job, run)| {
                    tracing::warn!(
                        job_id = job.0,
                        run_id = run.0,
                        "run was in progress when chimed stopped; recording it as lost"
                    );
                    Work::Runner {
                        job: *job,
                        event: Event::Lost,
                    }
                })
                .collect();
            batch::apply(w, work, now, 0, false)?;
            Ok(open.len())
        })
    }

    /// Runs until `shutdown` is cancelled, then stops the running jobs and returns.
    pub async fn run(mut self, shutdown: CancellationToken) {
        self.next_due = match self.store.read().and_then(|r| r.first_due()) {
            Ok(due) => due,
            Err(err) => {
                tracing::error!(error = %err, "cannot read the timer index");
                Some(now_ms())
            }
        };
        loop {
            let mut batch: Vec<Message> = std::mem::take(&mut self.pending)
                .into_iter()
                .map(|work| Message { work, reply: None })
                .collect();
            if batch.is_empty() {
                let wake = self.wake_time();
                tokio::select! {
                    biased;
                    () = shutdown.cancelled() => break,
                    message = self.inbox.recv() => match message {
                        Some(message) => batch.push(message),
                        None => break,
                    },
                    () = tokio::time::sleep_until(wake) => {}
                }
            }
            while batch.len() < MAX_BATCH {
                match self.inbox.try_recv() {
                    Ok(message) => batch.push(message),
                    Err(_) => break,
                }
            }
            self.apply(batch).await;
        }
        self.stop_runs().await;
    }

    /// When the loop must wake up without work: the next due time, if a slot is free.
    fn wake_time(&self) -> tokio::time::Instant {
        let now = tokio::time::Instant::now();
        match self.next_due {
            Some(due) if self.runner.len() < self.config.max_running => {
                let wait_ms = due.saturating_sub(now_ms()).max(0);
                now + Duration::from_millis(wait_ms as u64).min(MAX_SLEEP)
            }
            _ => now + MAX_SLEEP,
        }
    }

    /// Applies one batch: commit, then act.
    async fn apply(&mut self, batch: Vec<Message>) {
        let mut work = Vec::with_capacity(batch.len());
        let mut replies = Vec::with_capacity(batch.len());
        for Message { work: item, reply } in batch {
            if let Work::Runner {
                event: Event::Exited { run, .. },
                ..
            } = &item
            {
                self.runner.finished(*run);
            }
            let item = match item {
                // During shutdown a run that ends without success was ended by us.
                Work::Runner {
                    job,
                    event: Event::Exited { run, outcome },
                } if self.shutting_down && !outcome.is_success() => Work::Runner {
                    job,
                    event: Event::Interrupted { run },
                },
                Work::Add { .. } | Work::Cancel { .. } if self.shutting_down => {
                    if let Some(reply) = reply {
                        let _ = reply.send(Err(shutting_down()));
                    }
                    continue;
                }
                item => item,
            };
            work.push(item);
            replies.push(reply);
        }
        let free_slots = self.config.max_running.saturating_sub(self.runner.len());
        let fire = !self.shutting_down;
        let now = now_ms();
        let store = Arc::clone(&self.store);
        let retry: Vec<Work> = work
            .iter()
            .filter(|w| matches!(w, Work::Runner { .. }))
            .cloned()
            .collect();
        let started = Instant::now();
        let result = tokio::task::spawn_blocking(move || {
            store.write(|w| batch::apply(w, work, now, free_slots, fire))
        })
        .await
        .unwrap_or_else(|join| panic!("the batch transaction panicked: {join}"));
        let elapsed = started.elapsed();
        match result {
            Ok(applied) => {
                self.stats.commits.fetch_add(1, Ordering::Relaxed);
                self.stats
                    .changes
                    .fetch_add(applied.changes as u64, Ordering::Relaxed);
                self.stats
                    .last_commit_us
                    .store(elapsed.as_micros() as u64, Ordering::Relaxed);
                self.act(applied, replies);
            }
            Err(err) => {
                tracing::error!(error = %err, "committing a batch failed; requests in it were refused, runner events will be retried");
                for reply in replies.into_iter().flatten() {
                    let _ = reply.send(Err(ErrorReply::new(
                        ErrorCode::Internal,
                        format!("chimed could not store the change: {err}"),
                    )));
                }
                self.pending = retry;
                tokio::time::sleep(Duration::from_millis(500)).await;
            }
        }
    }

    /// Carries out a committed batch: spawns, signals, replies.
    fn act(&mut self, applied: Applied, replies: Vec<Option<ReplySlot>>) {
        self.next_due = applied.next_due;
        for order in &applied.spawns {
            self.spawn(order);
        }
        for run in applied.terminations {
            self.runner.terminate(run);
        }
        for (slot, reply) in replies.into_iter().zip(applied.replies) {
            if let (Some(slot), Some(reply)) = (slot, reply) {
                let _ = slot.send(reply);
            }
        }
    }

    fn spawn(&mut self, order: &SpawnOrder) {
        let event = match self.runner.spawn(order) {
            Ok(pid) => {
                tracing::info!(
                    job_id = order.job.0,
                    run_id = order.run.0,
                    attempt = order.attempt,
                    pid,
                    "run started"
                );
                Event::Spawned {
                    run: order.run,
                    pid,
                }
            }
            Err(error) => {
                tracing::warn!(job_id = order.job.0, run_id = order.run.0, %error, "run could not be started");
                Event::SpawnFailed {
                    run: order.run,
                    error,
                }
            }
        };
        self.pending.push(Work::Runner {
            job: order.job,
            event,
        });
    }

    /// Ends every running process (SIGTERM, grace, SIGKILL) and records the outcomes.
    async fn stop_runs(&mut self) {
        self.shutting_down = true;
        let running = self.runner.len();
        if running > 0 {
            tracing::info!(
                running,
                grace_ms = self.config.stop_grace.as_millis() as u64,
                "stopping running jobs"
            );
        }
        self.runner.terminate_all(self.config.stop_grace);
        // Supervisors SIGKILL after their own grace; allow a little more for reaping.
        let deadline =
            tokio::time::Instant::now() + self.config.stop_grace + Duration::from_secs(5);
        loop {
            let mut batch: Vec<Message> = std::mem::take(&mut self.pending)
                .into_iter()
                .map(|work| Message { work, reply: None })
                .collect();
            if batch.is_empty() {
                if self.runner.is_empty() {
                    break;
                }
                tokio::select! {
                    message = self.inbox.recv() => match message {
                        Some(message) => batch.push(message),
                        None => break,
                    },
                    () = tokio::time::sleep_until(deadline) => {
                        tracing::error!(left = self.runner.len(), "processes did not end after SIGKILL; their runs stay open and will be recorded as lost at the next start");
                        break;
                    }
                }
            }
            while batch.len() < MAX_BATCH {
                match self.inbox.try_recv() {
                    Ok(message) => batch.push(message),
                    Err(_) => break,
                }
            }
            self.apply(batch).await;
        }
        // Requests still queued are refused.
        self.inbox.close();
        while let Ok(message) = self.inbox.try_recv() {
            if let Some(reply) = message.reply {
                let _ = reply.send(Err(shutting_down()));
            }
        }
    }
}
