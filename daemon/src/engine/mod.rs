//! The engine: the one thread that changes jobs.
//!
//! Everything that changes a job reaches the engine as [`Work`]: users' requests (with a reply
//! slot) through its inbox, each waking it, and the runner's reports (processes' ends, pids,
//! spawn failures) through the runner's [`Mailbox`], which rings the inbox only when as many
//! reports are waiting as the engine asked for. The engine runs on its own OS thread, because its
//! work is a blocking redb commit, and the loop is:
//!
//! 1. Wait for work, or for the earliest due time in the timer index (one timed wait, however
//!    many jobs are scheduled; capped so that a wall-clock jump is noticed within a minute).
//! 2. Take everything that is ready, up to [`MAX_BATCH`]. When the previous batch carried several
//!    requests (clients are working concurrently), wait up to [`GATHER_WINDOW`] for as many
//!    requests to arrive before committing: the clients that were answered by the last commit
//!    are about to send their next request, and one commit for all of them is far cheaper than
//!    two. (PostgreSQL's `commit_delay` does the same.) A lone client never waits. When the batch
//!    holds only runs' ends and the runner has opened runs in hand (a quick queue, see
//!    [`batch::admission`]), wait up to [`ENDS_WINDOW`] for three quarters as many ends as there
//!    are runs in hand: the rest keep the slots busy meanwhile, and one commit records many ends.
//! 3. Apply it in **one** write transaction ([`batch::apply`]): each item goes through the pure
//!    state machine ([`crate::machine::step`]), then due jobs are started while slots are free. Commit
//!    once (group commit).
//! 4. Only after the commit: spawn processes, send signals, answer requests.
//!
//! If a commit fails (disk full, I/O error), requests in the batch are answered with an
//! `internal` error, runner events are kept and retried, and the engine waits a moment before
//! trying again. Nothing is acted on that was not committed.
//!
//! # Shutdown
//!
//! [`EngineHandle::shutdown`] makes the engine stop starting runs and refuse new changes
//! (`shutting_down`), send SIGTERM to every running process group, wait up to the stop grace
//! period for them to end, then SIGKILL what is left. Runs ended this way are recorded as
//! `interrupted` (a run that still exits with code 0 is recorded as such). The last batch is
//! committed before the engine thread ends.

pub mod batch;

use crate::job::{Ms, now_ms};
use crate::machine::Event;
use crate::runner::Runner;
use crate::runner::{Mailbox, Report, SpawnOrder};
use crate::store::{Store, StoreError};
use batch::{Applied, Facts, Work};
use chime_proto::JobId;
use chime_proto::{ErrorCode, ErrorReply, Response};
use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{self, RecvTimeoutError};
use std::time::{Duration, Instant};
use tokio::sync::oneshot;

/// Most pieces of work in one transaction.
pub const MAX_BATCH: usize = 4096;

/// Longest wait for more concurrent requests before a commit.
pub const GATHER_WINDOW: Duration = Duration::from_micros(200);

/// Longest wait for more runs' ends before a commit, when a batch holds only runs' ends and the
/// runner has opened runs in hand. No slot waits on recording an end (the runner has already
/// started the next opened run), so ends arriving close together share a commit; `wait` hears of
/// an end this much later at most.
pub const ENDS_WINDOW: Duration = Duration::from_millis(8);

/// Most runs' ends gathered for one commit.
const ENDS_MAX: usize = 64;

/// Longest sleep without looking at the clock again.
const MAX_SLEEP: Duration = Duration::from_secs(60);

/// How late on its timers the engine may find itself before it counts as having stalled: the
/// process was stopped, the machine suspended, the wall clock jumped forward, or the engine could
/// not commit for a while (a full disk). Occurrences that came due during a stall are *missed*,
/// exactly as during a downtime: each job's catch-up policy decides which of them still run (by
/// default only the latest), instead of all of them running back to back. The engine is never
/// this late when it is merely busy: a batch fires at most [`batch::FIRE_LIMIT`] jobs and commits
/// in milliseconds.
pub const STALL: Duration = Duration::from_secs(5);

/// Longest a spawned run's pid waits to be recorded with other work. The pid is for people
/// (`show`); recovery does not need it, so it does not cost a commit of its own while the
/// engine is busy.
const LAZY_MAX: Duration = Duration::from_millis(200);

/// A reply slot for a user's request.
pub type ReplySlot = oneshot::Sender<Result<Response, ErrorReply>>;

/// A message in the engine's inbox.
#[derive(Debug)]
pub enum Message {
    Work {
        work: Work,
        reply: Option<ReplySlot>,
    },
    /// Stop: end running jobs and return.
    Shutdown,
    /// Test only (`chimed --test-wedge`): the engine stops working without ending, as a bug
    /// that hangs it would, so that the watchdog can be seen to restart chimed.
    Wedge,
    /// The runner's [`Mailbox`] holds as many reports as the engine asked to be rung for.
    Doorbell,
}

impl From<Report> for Work {
    fn from(Report { job, event }: Report) -> Self {
        Work::Runner { job, event }
    }
}

impl Message {
    fn work(work: Work) -> Self {
        Self::Work { work, reply: None }
    }
}

/// Counters the engine keeps for `status` (read without asking the engine).
#[derive(Debug, Default)]
pub struct Stats {
    pub commits: AtomicU64,
    pub changes: AtomicU64,
    pub last_commit_us: AtomicU64,
    /// Changes carried by the last commit.
    pub last_batch: AtomicU64,
    /// Runs in progress per queue, after the last batch.
    pub running: std::sync::Mutex<std::collections::HashMap<String, usize>>,
}

/// The sending side of the engine's inbox. Cheap to clone.
///
/// The inbox is unbounded, but what can be in it is bounded: each connection has at most
/// [`crate::connection::MAX_IN_FLIGHT`] requests outstanding, connections are limited, and each
/// running process sends one exit.
#[derive(Debug, Clone)]
pub struct EngineHandle {
    inbox: mpsc::Sender<Message>,
    mailbox: Arc<Mailbox>,
}

impl EngineHandle {
    /// Sends a change to the engine and waits until it is committed and answered.
    pub async fn request(&self, work: Work) -> Result<Response, ErrorReply> {
        let (reply, answer) = oneshot::channel();
        let message = Message::Work {
            work,
            reply: Some(reply),
        };
        if self.inbox.send(message).is_err() {
            return Err(shutting_down());
        }
        answer.await.unwrap_or_else(|_| Err(shutting_down()))
    }

    /// Where the runner's supervisors report.
    pub fn mailbox(&self) -> Arc<Mailbox> {
        Arc::clone(&self.mailbox)
    }

    /// Asks the engine to stop (see the module docs); its thread ends when it has.
    pub fn shutdown(&self) {
        let _ = self.inbox.send(Message::Shutdown);
    }

    /// Hangs the engine (test only; see [`Message::Wedge`]).
    pub fn wedge(&self) {
        let _ = self.inbox.send(Message::Wedge);
    }
}

fn shutting_down() -> ErrorReply {
    ErrorReply::new(
        ErrorCode::ShuttingDown,
        "chimed is shutting down and takes no more changes; retry when it is back",
    )
}

/// The engine's receiving side: its inbox and the runner's mailbox.
#[derive(Debug)]
pub struct Inbox {
    receiver: mpsc::Receiver<Message>,
    mailbox: Arc<Mailbox>,
}

/// Creates the engine's inbox and mailbox: the handle for connections and supervisors, and the
/// receiving side for [`Engine::new`].
pub fn channel() -> (EngineHandle, Inbox) {
    let (inbox, receiver) = mpsc::channel();
    let bell = inbox.clone();
    let mailbox = Arc::new(Mailbox::new(Box::new(move || {
        bell.send(Message::Doorbell).is_ok()
    })));
    (
        EngineHandle {
            inbox,
            mailbox: Arc::clone(&mailbox),
        },
        Inbox { receiver, mailbox },
    )
}

/// How the engine behaves.
#[derive(Debug, Clone)]
pub struct EngineConfig {
    /// Most runs in progress at once.
    pub max_running: usize,
    /// How long running jobs get between SIGTERM and SIGKILL when the daemon stops.
    pub stop_grace: Duration,
    /// When this daemon started: occurrences due before it were missed.
    pub started_ms: Ms,
    /// The zone of cron schedules that name none.
    pub local_tz: jiff::tz::TimeZone,
    /// The daemon's own uid (may pause queues and everything, like root).
    pub admin_uid: u32,
    /// Most events kept in the log.
    pub event_retention: u64,
    /// systemd's watchdog interval: the loop tells systemd it is alive at half of it.
    pub watchdog: Option<Duration>,
    /// What each user may take (a reload may change it).
    pub limits: crate::limits::LimitsCell,
}

/// Whether a message is a spawned pid, which can wait to be recorded.
fn is_lazy(message: &Message) -> bool {
    matches!(
        message,
        Message::Work {
            work: Work::Runner {
                event: Event::Spawned { .. },
                ..
            },
            reply: None,
        }
    )
}

/// Where the engine reports what it did, besides replies: counters for `status`, committed
/// events for watchers, and metrics.
#[derive(Debug)]
pub struct Outputs {
    pub stats: Arc<Stats>,
    pub events: tokio::sync::broadcast::Sender<Arc<chime_proto::EventRecord>>,
    pub metrics: Arc<crate::metrics::Metrics>,
}

/// A `wait` that is waiting.
#[derive(Debug)]
struct Waiter {
    since_ms: Option<Ms>,
    reply: ReplySlot,
}

/// The engine's state, owned by its thread.
#[derive(Debug)]
pub struct Engine {
    store: Arc<Store>,
    inbox: mpsc::Receiver<Message>,
    /// Reports from the runner's supervisors.
    mailbox: Arc<Mailbox>,
    /// Runner events to record in the next batch (spawn failures, retried events).
    pending: Vec<Work>,
    /// Spawned pids to record with the next batch, or after [`LAZY_MAX`].
    lazy: Vec<Work>,
    lazy_since: Option<Instant>,
    /// Waits, per job, until a run of it settles.
    waiters: HashMap<JobId, Vec<Waiter>>,
    /// Where removed runs' output goes to be deleted, off the engine thread.
    janitor: Option<mpsc::Sender<(JobId, chime_proto::RunId, u32)>>,
    logs_dir: std::path::PathBuf,
    runner: Runner,
    config: EngineConfig,
    stats: Arc<Stats>,
    /// Where committed events go to watchers (never blocks: a slow watcher lags instead).
    events: tokio::sync::broadcast::Sender<Arc<chime_proto::EventRecord>>,
    metrics: Arc<crate::metrics::Metrics>,
    last_ping: Instant,
    /// The earliest due occurrence or pause end.
    next_wake: Option<Ms>,
    /// Since when the engine has kept time: chimed's start, or the end of its last stall.
    on_time_since: Ms,
    /// The database file, for messages about damaged records.
    database: Arc<std::path::Path>,
    /// How many user requests the last batch carried: the hint for gathering the next one.
    last_requests: usize,
    shutting_down: bool,
    /// Run a batch without waiting: more is due, a release continues, or the daemon just started.
    kick: bool,
    release_all: bool,
    continue_release: std::collections::BTreeSet<String>,
}

impl Engine {
    pub fn new(
        store: Arc<Store>,
        inbox: Inbox,
        runner: Runner,
        config: EngineConfig,
        logs_dir: std::path::PathBuf,
        outputs: Outputs,
    ) -> Self {
        let Outputs {
            stats,
            events,
            metrics,
        } = outputs;
        let started_ms = config.started_ms;
        let database = store.path().into();
        Self {
            events,
            metrics,
            last_ping: Instant::now(),
            store,
            inbox: inbox.receiver,
            mailbox: inbox.mailbox,
            pending: Vec::new(),
            lazy: Vec::new(),
            lazy_since: None,
            waiters: HashMap::new(),
            janitor: None,
            logs_dir,
            runner,
            config,
            stats,
            next_wake: None,
            on_time_since: started_ms,
            database,
            last_requests: 0,
            shutting_down: false,
            // The first batch releases whatever waited when chimed stopped.
            kick: true,
            release_all: true,
            continue_release: Default::default(),
        }
    }

    /// Closes every run that was open when the daemon last stopped as `lost`. Call before the
    /// engine runs (and before the daemon says it is ready). Returns how many jobs had runs open.
    pub fn recover(store: &Store, config: &EngineConfig) -> Result<usize, StoreError> {
        let now = now_ms();
        store.write(|w| {
            let open = w.running_jobs()?;
            let work = open
                .iter()
                .map(|job| {
                    tracing::warn!(
                        job_id = job.0,
                        "job had runs in progress when chimed stopped; recording them as lost"
                    );
                    Work::Runner {
                        job: *job,
                        event: Event::Lost,
                    }
                })
                .collect();
            let env = Facts {
                database: store.path().into(),
                on_time_since: config.started_ms,
                event_retention: config.event_retention,
                local_tz: config.local_tz.clone(),
                max_running: config.max_running,
                running: Default::default(),
                running_by_owner: Default::default(),
                limits: config.limits.get(),
                quick: Default::default(),
                admin_uid: config.admin_uid,
                release_all: false,
                continue_release: Default::default(),
            };
            batch::apply(w, &env, work, now, false)?;
            Ok(open.len())
        })
    }

    /// Starts the engine on its own thread. `runtime` is where process supervisors run.
    /// The thread ends after [`EngineHandle::shutdown`] once running jobs have been stopped.
    pub fn spawn(
        self,
        runtime: tokio::runtime::Handle,
    ) -> std::io::Result<std::thread::JoinHandle<()>> {
        std::thread::Builder::new()
            .name("chimed-engine".into())
            .spawn(move || {
                let _context = runtime.enter();
                let mut engine = self;
                engine.janitor = Some(janitor(engine.logs_dir.clone(), engine.runner.usage()));
                engine.run();
            })
    }

    fn run(mut self) {
        loop {
            let mut batch: Vec<Message> = std::mem::take(&mut self.pending)
                .into_iter()
                .map(Message::work)
                .collect();
            let kicked = std::mem::take(&mut self.kick);
            if batch.is_empty() && !kicked {
                let mut wait = self.time_to_wake();
                if let Some(since) = self.lazy_since {
                    wait = wait.min((since + LAZY_MAX).saturating_duration_since(Instant::now()));
                }
                if let Some(interval) = self.config.watchdog {
                    wait = wait.min(
                        (self.last_ping + interval / 2).saturating_duration_since(Instant::now()),
                    );
                }
                // Reports already in the mailbox are work; otherwise it rings with the next one.
                if !self.mailbox.ring_at(1) {
                    match self.inbox.recv_timeout(wait) {
                        Ok(message) => batch.push(message),
                        Err(RecvTimeoutError::Timeout) => {}
                        Err(RecvTimeoutError::Disconnected) => break,
                    }
                }
            }
            self.ping_watchdog();
            if batch.iter().any(|m| matches!(m, Message::Wedge)) {
                wedge();
            }
            let stop = self.gather(&mut batch);
            // Spawned pids are set aside, to ride along with the next batch that records
            // something else, or to be recorded alone after LAZY_MAX.
            let (lazy, batch): (Vec<Message>, Vec<Message>) = batch.into_iter().partition(is_lazy);
            if !lazy.is_empty() {
                self.lazy_since.get_or_insert_with(Instant::now);
                self.lazy.extend(lazy.into_iter().filter_map(|m| match m {
                    Message::Work { work, .. } => Some(work),
                    Message::Shutdown | Message::Wedge | Message::Doorbell => None,
                }));
            }
            let lazy_due = self
                .lazy_since
                .is_some_and(|since| since.elapsed() >= LAZY_MAX);
            let timer_due = self.next_wake.is_some_and(|wake| wake <= now_ms());
            if batch.is_empty() && !kicked && !lazy_due && !timer_due && !stop {
                continue;
            }
            self.lazy_since = None;
            let mut batch = batch;
            batch.splice(
                0..0,
                std::mem::take(&mut self.lazy)
                    .into_iter()
                    .map(Message::work),
            );
            self.apply(batch);
            if stop {
                break;
            }
        }
        self.stop_runs();
    }

    /// Tells systemd the engine is alive, at half of the watchdog interval. Sent from this loop,
    /// not from a timer of its own, so that an engine that stops turning is restarted.
    fn ping_watchdog(&mut self) {
        if let Some(interval) = self.config.watchdog
            && self.last_ping.elapsed() >= interval / 2
        {
            crate::systemd::watchdog();
            self.last_ping = Instant::now();
        }
    }

    /// Adds what is ready to `batch` (see step 2 of the module docs). Returns true when a
    /// shutdown request was among it.
    fn gather(&mut self, batch: &mut Vec<Message>) -> bool {
        batch.retain(|m| !matches!(m, Message::Doorbell));
        self.take_mail(batch);
        let mut stop = batch.iter().any(|m| matches!(m, Message::Shutdown));
        let requests = |batch: &[Message]| {
            batch
                .iter()
                .filter(|m| matches!(m, Message::Work { reply: Some(_), .. }))
                .count()
        };
        let target = self.last_requests;
        let deadline = Instant::now() + GATHER_WINDOW;
        let ends_deadline = Instant::now() + ENDS_WINDOW;
        // Only runs' ends (and pids) so far, and more runs open: worth waiting for their ends.
        let only_ends = |batch: &[Message]| {
            !batch.is_empty()
                && batch.iter().all(|m| {
                    matches!(
                        m,
                        Message::Work {
                            work: Work::Runner {
                                event: Event::Exited { .. }
                                    | Event::Finished { .. }
                                    | Event::Spawned { .. },
                                ..
                            },
                            reply: None,
                        }
                    )
                })
        };
        let mut waited_for_ends = false;
        while batch.len() < MAX_BATCH && !stop {
            let next = match self.inbox.try_recv() {
                Ok(message) => Some(message),
                Err(mpsc::TryRecvError::Disconnected) => break,
                Err(mpsc::TryRecvError::Empty) => {
                    let now = Instant::now();
                    // Worth waiting for only while the runner has opened runs in hand to start
                    // as processes end; otherwise slots would wait for this commit.
                    let in_hand = self.runner.pending();
                    let ends = only_ends(batch)
                        && in_hand > 0
                        && now < ends_deadline
                        && batch.len() < ENDS_MAX;
                    if !ends && (target < 2 || requests(batch) >= target || now >= deadline) {
                        break;
                    }
                    if ends {
                        // Sleep until as many more runs have ended as three quarters of the runs
                        // in hand (the mailbox rings), a request arrives, or the window closes;
                        // not once per end. The last quarter keeps the slots busy while this
                        // commits.
                        let expected = (in_hand * 3 / 4).clamp(1, ENDS_MAX - batch.len());
                        if self.mailbox.ring_at(expected) {
                            break;
                        }
                        waited_for_ends = true;
                        self.inbox.recv_timeout(ends_deadline - now).ok()
                    } else {
                        self.inbox.recv_timeout(deadline - now).ok()
                    }
                }
            };
            match next {
                Some(Message::Shutdown) => stop = true,
                Some(Message::Wedge) => wedge(),
                // The ends waited for are in.
                Some(Message::Doorbell) if waited_for_ends => break,
                Some(Message::Doorbell) => self.take_mail(batch),
                Some(message) => batch.push(message),
                None => break,
            }
        }
        // What came in while waiting, and a ring for the next report.
        self.take_mail(batch);
        self.last_requests = requests(batch);
        stop
    }

    /// Moves the runner's reports from the mailbox into `batch`.
    fn take_mail(&self, batch: &mut Vec<Message>) {
        batch.extend(
            self.mailbox
                .take()
                .into_iter()
                .map(|report| Message::work(report.into())),
        );
    }

    /// How long the loop may wait without work: until the next due occurrence or pause end.
    fn time_to_wake(&self) -> Duration {
        match self.next_wake {
            Some(due) => {
                let wait_ms = due.saturating_sub(now_ms()).max(0);
                Duration::from_millis(wait_ms as u64).min(MAX_SLEEP)
            }
            None => MAX_SLEEP,
        }
    }

    /// Notices that the engine is [`STALL`] or more late on its earliest timer: what came due
    /// until `now` was missed, and is handled as after a downtime.
    fn notice_stall(&mut self, now: Ms) {
        let Some(wake) = self.next_wake else { return };
        let late_ms = now.saturating_sub(wake);
        if late_ms < STALL.as_millis() as i64 || self.shutting_down {
            return;
        }
        tracing::warn!(
            late_ms,
            "chimed fell {late_ms} ms behind its timers (it was stopped, the machine was suspended, \
             the clock jumped or it could not write): occurrences that came due meanwhile are \
             handled by each job's catch-up policy, as after a downtime"
        );
        self.on_time_since = self.on_time_since.max(now);
    }

    /// Applies one batch: commit, then act.
    fn apply(&mut self, batch: Vec<Message>) {
        let mut work = Vec::with_capacity(batch.len());
        let mut replies = Vec::with_capacity(batch.len());
        for message in batch {
            let Message::Work { work: item, reply } = message else {
                continue;
            };
            if let Work::Runner {
                event:
                    Event::Exited { run, .. }
                    | Event::Finished { run, .. }
                    | Event::SpawnFailed { run, .. }
                    | Event::Unstarted { run },
                ..
            } = &item
            {
                self.runner.finished(*run);
            }
            let item = match item {
                // During shutdown a run that ends without success was ended by us.
                Work::Runner {
                    job,
                    event: Event::Exited { run, outcome } | Event::Finished { run, outcome, .. },
                } if self.shutting_down && !outcome.is_success() => Work::Runner {
                    job,
                    event: Event::Interrupted { run },
                },
                Work::Runner { .. } => item,
                _ if self.shutting_down => {
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
        let now = now_ms();
        self.notice_stall(now);
        let env = Facts {
            database: self.database.clone(),
            on_time_since: self.on_time_since,
            event_retention: self.config.event_retention,
            local_tz: self.config.local_tz.clone(),
            max_running: self.config.max_running,
            running: self.runner.running_by_queue(),
            running_by_owner: self.runner.running_by_owner(),
            limits: self.config.limits.get(),
            quick: self.runner.quick_queues(),
            admin_uid: self.config.admin_uid,
            release_all: std::mem::take(&mut self.release_all),
            continue_release: std::mem::take(&mut self.continue_release),
        };
        let fire = !self.shutting_down;
        let retry: Vec<Work> = work
            .iter()
            .filter(|w| matches!(w, Work::Runner { .. }))
            .cloned()
            .collect();
        let started = Instant::now();
        let result = self.store.write(|w| batch::apply(w, &env, work, now, fire));
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
                self.stats
                    .last_batch
                    .store(applied.changes as u64, Ordering::Relaxed);
                self.metrics.commit(elapsed, applied.changes);
                self.act(applied, replies);
            }
            Err(err) => {
                let message = if err.is_io() {
                    // The store said what and where (once, in its log); redb refuses every
                    // commit after an I/O error until the database is reopened.
                    if let Err(reopen) = self.store.reopen() {
                        tracing::debug!(error = %reopen, "the database could not be reopened yet");
                    }
                    err.to_string()
                } else {
                    tracing::error!(error = %err, "committing a batch failed; requests in it were refused, runner events will be retried");
                    format!("chimed could not store the change: {err}")
                };
                for reply in replies.into_iter().flatten() {
                    let _ = reply.send(Err(ErrorReply::new(ErrorCode::Internal, message.clone())));
                }
                self.pending = retry;
                self.release_all = env.release_all;
                self.continue_release = env.continue_release;
                std::thread::sleep(Duration::from_millis(500));
            }
        }
    }

    /// Carries out a committed batch: spawns, signals, replies, events.
    fn act(&mut self, mut applied: Applied, replies: Vec<Option<ReplySlot>>) {
        for audit in std::mem::take(&mut applied.audit) {
            log_audit(&audit);
        }
        let started = std::mem::take(&mut applied.started);
        self.publish(std::mem::take(&mut applied.events), &started);
        self.next_wake = applied.next_wake;
        self.kick = applied.more_due || !applied.continue_release.is_empty();
        self.continue_release = applied.continue_release;
        for order in &applied.spawns {
            self.spawn_run(order);
        }
        for run in applied.terminations {
            self.runner.terminate(run);
        }
        for (run, signal) in applied.signals {
            self.runner.signal(run, signal);
        }
        for (queue, parallel) in &applied.limits {
            self.runner.set_limit(queue, *parallel);
        }
        for which in &applied.unstarts {
            self.runner.unstart(which);
        }
        if let Some(janitor) = &self.janitor {
            for deleted in applied.deleted_runs {
                let _ = janitor.send(deleted);
            }
        }
        let mut deferred: HashMap<usize, batch::WaitFor> =
            applied.waits.into_iter().map(|w| (w.index, w)).collect();
        for (index, (slot, reply)) in replies.into_iter().zip(applied.replies).enumerate() {
            match (slot, reply) {
                (Some(slot), Some(reply)) => {
                    let _ = slot.send(reply);
                }
                (Some(slot), None) => {
                    if let Some(wait) = deferred.remove(&index) {
                        self.waiters.entry(wait.job).or_default().push(Waiter {
                            since_ms: wait.since_ms,
                            reply: slot,
                        });
                    }
                }
                _ => {}
            }
        }
        for settled in applied.settled {
            let Some(waiters) = self.waiters.get_mut(&settled.job) else {
                continue;
            };
            let (done, keep): (Vec<Waiter>, Vec<Waiter>) = waiters.drain(..).partition(|w| {
                w.since_ms
                    .is_none_or(|since| settled.run.started_ms >= since)
            });
            *waiters = keep;
            for waiter in done {
                let _ = waiter
                    .reply
                    .send(Ok(chime_proto::Response::Waited(chime_proto::Waited {
                        id: settled.job,
                        state: settled.state,
                        run: Some(crate::wire::run_info(settled.run.clone())),
                    })));
            }
        }
        for job in applied.removed {
            for waiter in self.waiters.remove(&job).unwrap_or_default() {
                let _ = waiter.reply.send(Err(ErrorReply::new(
                    ErrorCode::NotFound,
                    format!("job {job} was removed while waiting for it"),
                )));
            }
        }
        self.waiters.retain(|_, w| !w.is_empty());
        if let Ok(mut running) = self.stats.running.lock() {
            *running = self.runner.live_by_queue();
        }
    }

    /// Sends committed events to metrics, the log (one record per run's start and end, with the
    /// job's fields, so that `journalctl JOB_ID=N` tells its story) and watchers. Never blocks:
    /// a watcher that cannot keep up lags and catches up from the log.
    fn publish(
        &mut self,
        events: Vec<chime_proto::EventRecord>,
        started: &HashMap<chime_proto::RunId, (String, String)>,
    ) {
        let watched = self.events.receiver_count() > 0;
        for event in events {
            self.metrics.event(&event);
            log_event(&event, started);
            if watched {
                let _ = self.events.send(Arc::new(event));
            }
        }
    }

    fn spawn_run(&mut self, order: &SpawnOrder) {
        self.runner.start(order);
    }

    /// Ends every running process (SIGTERM, grace, SIGKILL) and records the outcomes.
    fn stop_runs(&mut self) {
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
        // Supervisors SIGKILL after the grace; allow a little more for reaping.
        let deadline = Instant::now() + self.config.stop_grace + Duration::from_secs(5);
        loop {
            let mut batch: Vec<Message> = std::mem::take(&mut self.lazy)
                .into_iter()
                .chain(std::mem::take(&mut self.pending))
                .chain(self.mailbox.take().into_iter().map(Work::from))
                .map(Message::work)
                .collect();
            if batch.is_empty() {
                if self.runner.is_empty() {
                    break;
                }
                let left = deadline.saturating_duration_since(Instant::now());
                if self.mailbox.ring_at(1) {
                    continue;
                }
                match self.inbox.recv_timeout(left) {
                    Ok(message) => batch.push(message),
                    Err(RecvTimeoutError::Timeout) => {
                        tracing::error!(
                            left = self.runner.len(),
                            "processes did not end after SIGKILL; their runs stay open and will be recorded as lost at the next start"
                        );
                        break;
                    }
                    Err(RecvTimeoutError::Disconnected) => break,
                }
            }
            while batch.len() < MAX_BATCH {
                match self.inbox.try_recv() {
                    Ok(message) => batch.push(message),
                    Err(_) => break,
                }
            }
            self.take_mail(&mut batch);
            self.apply(batch);
            // A stop always completes: when the ends cannot be recorded (the disk is full), it
            // ends at the deadline, and those runs are recorded as lost at the next start.
            if Instant::now() >= deadline {
                if let Some(fault) = self.store.fault() {
                    tracing::error!(
                        runs = self.runner.len(),
                        fault = %fault.message,
                        "stopping without recording how these runs ended; they will be recorded as lost at the next start"
                    );
                }
                break;
            }
        }
        // Requests still queued are refused.
        while let Ok(message) = self.inbox.try_recv() {
            if let Message::Work {
                reply: Some(reply), ..
            } = message
            {
                let _ = reply.send(Err(shutting_down()));
            }
        }
    }
}

/// Hangs the engine thread for good (test only: see [`Message::Wedge`]).
fn wedge() -> ! {
    tracing::warn!("engine wedged on request (--test-wedge); the watchdog should restart chimed");
    loop {
        std::thread::park();
    }
}

/// Deletes removed runs' output files, off the engine thread, and gives their bytes back to
/// their owners' share of the disk.
fn janitor(
    logs_dir: std::path::PathBuf,
    usage: std::sync::Arc<crate::runner::usage::Usage>,
) -> mpsc::Sender<(JobId, chime_proto::RunId, u32)> {
    let (tx, rx) = mpsc::channel::<(JobId, chime_proto::RunId, u32)>();
    let spawned = std::thread::Builder::new()
        .name("chimed-janitor".into())
        .spawn(move || {
            for (job, run, owner) in rx {
                let freed = crate::runner::output::delete(&logs_dir, job, run);
                usage.release(owner, freed);
            }
        });
    if let Err(err) = spawned {
        tracing::error!(error = %err, "cannot start the janitor thread; pruned output stays on disk");
    }
    tx
}

/// The audit record of a user's change: who (ACTOR_UID), what (REQUEST), to which job and whose
/// (JOB_ID, OWNER_UID), at `info`.
fn log_audit(audit: &batch::Audit) {
    let (job_id, owner_uid, job_name) = match &audit.job {
        Some((id, owner, name)) => (Some(id.0), Some(*owner), name.as_deref()),
        None => (None, None, None),
    };
    tracing::info!(
        actor_uid = audit.actor,
        request = audit.verb,
        job_id,
        owner_uid,
        job_name,
        target = audit.target.as_deref(),
        "change by a user"
    );
}

/// The log record of an event: runs' starts and ends at `info`, everything else at `debug`.
/// Fields become journal fields (JOB_ID, JOB_NAME, RUN_ID, QUEUE, STATE, EXIT_CODE, ...). A
/// run's start names its owner and command (OWNER_UID, USER, COMMAND), as cron logs
/// `(user) CMD (command)`.
fn log_event(
    event: &chime_proto::EventRecord,
    started: &HashMap<chime_proto::RunId, (String, String)>,
) {
    use chime_proto::EventKind;
    let job_id = event.job.map(|j| j.0);
    let job_name = event.name.as_deref();
    match &event.kind {
        EventKind::Started {
            run,
            attempt,
            due_ms,
            queue,
        } => {
            let (user, command) = started
                .get(run)
                .map_or((None, None), |(u, c)| (Some(u.as_str()), Some(c.as_str())));
            tracing::info!(
                job_id,
                job_name,
                run_id = run.0,
                attempt,
                queue = %queue,
                owner_uid = event.owner,
                user,
                command,
                state = "running",
                late_ms = event.at_ms.saturating_sub(*due_ms),
                seq = event.seq,
                "run started"
            )
        }
        EventKind::Ended {
            run,
            attempt,
            outcome,
            duration_ms,
        } => {
            let (exit_code, signal) = (outcome.exit_code(), outcome.signal());
            tracing::info!(
                job_id,
                job_name,
                run_id = run.0,
                attempt,
                state = outcome.as_str(),
                outcome = %outcome,
                exit_code,
                signal,
                duration_ms,
                seq = event.seq,
                "run ended"
            );
        }
        EventKind::State { from, to } => tracing::debug!(
            job_id,
            job_name,
            from = from.as_str(),
            state = to.as_str(),
            seq = event.seq,
            "job state changed"
        ),
        other => tracing::debug!(
            job_id,
            job_name,
            event = other.as_str(),
            seq = event.seq,
            "event"
        ),
    }
}
