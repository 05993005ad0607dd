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
//!
//! # Files
//!
//! - `mod.rs`: the engine's state, its thread and its loop (steps 1 to 4);
//! - `priority.rs`: the thread's CPU scheduling (by default `SCHED_RR` while it waits for due
//!   times and fires them, so that timers fire on time when the machine's CPUs are busy);
//! - `inbox.rs`: how work reaches the engine: messages, the handle that sends them, reply slots;
//! - `gather.rs`: group commit: gathering a batch, the windows that wait for more, lazy pids;
//! - `timers.rs`: when the loop wakes: the next due time, stalls, the watchdog's ping;
//! - `commit.rs`: one batch: one transaction, then acting on it (or refusing it if the commit
//!   failed);
//! - `replies.rs`: answering requests after the commit (through the postman, a task that fills
//!   a batch's reply slots on the runtime and then writes its log records), and `wait`s until a
//!   run settles;
//! - `publish.rs`: committed events to metrics and watchers; the log records of events and the
//!   audit records of users' changes;
//! - `recovery.rs`: closing the runs left open when chimed last stopped;
//! - `shutdown.rs`: ending running jobs when chimed stops;
//! - `janitor.rs`: deleting removed runs' output off the engine thread;
//! - [`batch`]: applying a batch inside the transaction (the state machine's caller).

pub mod batch;
mod commit;
mod fleet;
mod gather;
mod inbox;
mod janitor;
mod priority;
mod publish;
mod recovery;
mod replies;
mod shutdown;
mod timers;

pub use gather::{ENDS_WINDOW, GATHER_WINDOW};
pub use inbox::{EngineHandle, Inbox, Message, ReplySlot, channel};
pub use priority::EnginePriority;
pub use timers::STALL;

use crate::job::{Ms, now_ms};
use crate::runner::{Mailbox, Runner};
use crate::store::Store;
use batch::Work;
use chime_proto::JobId;
use gather::{LAZY_MAX, is_lazy};
use replies::Waiter;
use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::AtomicU64;
use std::sync::mpsc::{self, RecvTimeoutError};
use std::time::{Duration, Instant};

/// Most pieces of work in one transaction.
pub const MAX_BATCH: usize = 4096;

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
    /// The CPU scheduling the engine thread got, in words (set as the thread starts).
    pub priority: std::sync::OnceLock<String>,
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
    /// The CPU scheduling the engine thread asks for.
    pub priority: EnginePriority,
    /// This host's name, when it shares a PostgreSQL store with others (a fleet).
    pub host: Option<crate::job::HostId>,
}

/// Where the engine reports what it did, besides replies: counters for `status`, committed
/// events for watchers, and metrics.
#[derive(Debug)]
pub struct Outputs {
    pub stats: Arc<Stats>,
    pub events: tokio::sync::broadcast::Sender<Arc<chime_proto::EventRecord>>,
    pub metrics: Arc<crate::metrics::Metrics>,
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
    /// Fills the reply slots of a committed batch on the runtime (set when the thread starts;
    /// `None` in tests that drive the engine by hand: replies are then filled here).
    postman: Option<replies::Postman>,
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
    /// In a fleet: when the last batch ran, and when one last looked for gone hosts (see
    /// `fleet.rs`).
    last_poll: Instant,
    last_fence: Instant,
    /// In a fleet: the newest event sent to this host's watchers (see `publish.rs`).
    published: u64,
    /// In a fleet: another host committed a change since the last batch (its `NOTIFY`).
    hinted: Arc<std::sync::atomic::AtomicBool>,
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
        let hinted = Arc::new(std::sync::atomic::AtomicBool::new(false));
        {
            let (hinted, mailbox) = (Arc::clone(&hinted), Arc::clone(&inbox.mailbox));
            store.on_change(Box::new(move || {
                hinted.store(true, std::sync::atomic::Ordering::Relaxed);
                mailbox.ring();
            }));
        }
        Self {
            events,
            metrics,
            last_ping: Instant::now(),
            last_poll: Instant::now(),
            last_fence: Instant::now(),
            hinted,
            published: store
                .read()
                .and_then(|r| r.event_bounds())
                .map_or(0, |(_, head)| head),
            store,
            inbox: inbox.receiver,
            mailbox: inbox.mailbox,
            pending: Vec::new(),
            lazy: Vec::new(),
            lazy_since: None,
            waiters: HashMap::new(),
            postman: None,
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

    /// Starts the engine on its own thread. `runtime` is where process supervisors run.
    /// Returns once the thread has set its CPU scheduling ([`priority`]), with what it got.
    /// The thread ends after [`EngineHandle::shutdown`] once running jobs have been stopped.
    pub fn spawn(
        self,
        runtime: tokio::runtime::Handle,
    ) -> std::io::Result<(std::thread::JoinHandle<()>, priority::Outcome)> {
        let (told, hear) = mpsc::sync_channel(1);
        let thread = std::thread::Builder::new()
            .name("chimed-engine".into())
            .spawn(move || {
                let _context = runtime.enter();
                let mut engine = self;
                engine.postman = Some(replies::Postman::start(&runtime));
                engine.janitor = Some(janitor::janitor(
                    engine.logs_dir.clone(),
                    engine.runner.usage(),
                ));
                // After the helper threads are started: they stay under the normal scheduler.
                let (switch, outcome) = priority::Switch::start(engine.config.priority);
                let _ = engine.stats.priority.set(outcome.description.clone());
                let _ = told.send(outcome);
                engine.run(switch);
            })?;
        let outcome = hear
            .recv()
            .map_err(|_| std::io::Error::other("the engine thread ended as it started"))?;
        Ok((thread, outcome))
    }

    fn run(mut self, mut priority: priority::Switch) {
        loop {
            let mut batch: Vec<Message> = std::mem::take(&mut self.pending)
                .into_iter()
                .map(Message::work)
                .collect();
            let kicked = std::mem::take(&mut self.kick);
            if batch.is_empty() && !kicked {
                let mut wait = self.time_to_wake();
                if let Some(poll) = self.time_to_poll() {
                    wait = wait.min(poll);
                }
                if let Some(since) = self.lazy_since {
                    wait = wait.min((since + LAZY_MAX).saturating_duration_since(Instant::now()));
                }
                if let Some(interval) = self.config.watchdog {
                    wait = wait.min(
                        (self.last_ping + interval / 2).saturating_duration_since(Instant::now()),
                    );
                }
                // Reports already in the mailbox are work; otherwise it rings with the next one.
                if self.mailbox.ring_at(1) {
                    priority.requests();
                } else {
                    // Real-time while waiting for the clock, so that a due time is met on a busy
                    // machine; normal for what a message starts (see priority.rs).
                    let message = match self.inbox.try_recv() {
                        Ok(message) => Ok(message),
                        Err(mpsc::TryRecvError::Empty) => {
                            priority.clock();
                            self.inbox.recv_timeout(wait)
                        }
                        Err(mpsc::TryRecvError::Disconnected) => break,
                    };
                    match message {
                        Ok(message) => {
                            priority.requests();
                            batch.push(message);
                        }
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
            if batch.is_empty() && !kicked && !lazy_due && !timer_due && !stop && !self.poll_due() {
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
}

/// Hangs the engine thread for good (test only: see [`Message::Wedge`]).
fn wedge() -> ! {
    tracing::warn!("engine wedged on request (--test-wedge); the watchdog should restart chimed");
    loop {
        std::thread::park();
    }
}
