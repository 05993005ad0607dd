//! `chimed`, the chime daemon: a durable job scheduler and timer service for one Linux host.
//!
//! # Theory of operation
//!
//! ```text
//! chimectl ──frames──▶ server ─▶ connection task (one per client, SO_PEERCRED uid)
//!                                   │ queries: redb read snapshot (never waits for the engine)
//!                                   │ changes: Work + reply slot ──▶ engine (one thread)
//!                                   ◀──── reply after commit ─────┤ owns every change
//!                                   │ watch: log, then live ◀─────┤ appends events, publishes them
//!  config files ─▶ reload ── Reconcile ──────────────────────────▶│ group-commits to redb
//!  (start, SIGHUP, chimectl reload)                               │ sleeps until the next due time
//!                                                                 │ pings systemd's watchdog
//!                                                                 └▶ runner: spawn, supervise, signal
//! ```
//!
//! - **One owner.** Only the [`engine`], on its own thread, changes jobs. Connections send it
//!   [`engine::batch::Work`] with a reply slot; process supervisors send it exits. Reads take a
//!   redb snapshot directly. Connections and supervisors are tasks on a small tokio runtime.
//! - **Persist, then act.** The engine applies a batch in one write transaction and commits it
//!   before it spawns a process, signals one or answers a client. A client that got "ok" has a
//!   durable job; a process that runs has a durable run record.
//! - **Group commit.** Everything ready when a batch starts (requests, exits, due jobs) shares one
//!   commit; under concurrent load the engine waits up to 200 us for the other clients' requests.
//!   With 32 clients a commit carries 15-20 submissions (see `tests/src/bin/bench-submit.rs`).
//! - **Timers in the database.** The timer index is a redb table keyed by (due time, job id). The
//!   engine keeps only the earliest due time and one sleep; a million scheduled jobs cost disk,
//!   not memory or wake-ups.
//! - **A pure state machine.** Every change goes through [`engine::machine::step`], which has no
//!   I/O and is tested pair by pair and by property tests.
//! - **Spawning without fork.** The [`runner`] stays on posix_spawn (process groups, no
//!   `pre_exec`); jobs of other users run through a small exec helper (`chimed __run-as`).
//! - **Nothing of a user's reaches root.** The helpers that act as a user ([`as_user`]) start
//!   with an empty environment and get their orders on stdin; they become the user before they
//!   touch a path of theirs or apply the job's environment. Before each run of another user's
//!   job the account is checked again ([`as_user::account`]); submission checks are made as the
//!   submitter. Every change records who made it.
//! - **Fair shares.** One user cannot deny service to the others: connections, running slots,
//!   stored jobs, output on disk, the rate of changes and the share of the event log are bounded
//!   per user ([`limits`]), root and chimed's own user excepted.
//! - **Dispatch-ahead.** For a queue whose runs are quick, the engine may open (commit) more runs
//!   than may run at once; the runner starts at most the queue's limit of processes and starts
//!   the next opened run the moment one ends, so a slot never waits for a commit, and ends are
//!   recorded many to a commit, reported through a mailbox that wakes the engine once per batch
//!   rather than once per end. Runs that last are not opened ahead (a job shown `running` is). A run
//!   that never started leaves no record; one lost before its start was recorded runs again
//!   (at-least-once).
//! - **Recovery.** At start, before the socket listens, runs that were open when the daemon died
//!   are closed as `lost`; jobs that came due while it was down start at once.
//! - **Refuse, never replace.** A database that cannot be read or was written by a newer chimed
//!   stops the start with a clear error and is left untouched ([`store`]).
//! - **Events in the same transaction.** Every change appends an event to a bounded log in the
//!   transaction that makes it; after the commit the engine publishes the batch's events to a
//!   broadcast channel that never blocks it. [`watch`] streams the log, then the channel, and a
//!   watcher that falls behind catches up from the log. Timers (jobs without a command) fire as
//!   events.
//! - **Declared configuration.** [`config`] reads and checks `chimed.toml` and `jobs.d/`;
//!   [`reload`] hands the result to the engine, which reconciles declared jobs and queue limits
//!   in one transaction. A file that does not parse keeps its previous jobs.
//! - **Observable.** Runs' starts and ends are log records with the job's fields (journald
//!   under systemd, [`logging`]); [`metrics`] are kept by the engine and read in the Prometheus
//!   text format; [`systemd`] gets READY, STATUS, WATCHDOG (from the engine loop), RELOADING and
//!   STOPPING.
//!
//! # Start and stop
//!
//! Start: close inherited descriptors and set a private umask (`main`), read and check the
//! configuration and job files (any problem stops the start), check the state directory (ours,
//! writable by no one else) and take its lock, open the database, recover, bind the socket (taking its lock) or take
//! the one systemd passed (socket activation), start the engine, apply the declared jobs, then
//! tell systemd `READY=1`. Stop (SIGTERM or SIGINT): tell systemd `STOPPING=1`, stop accepting and
//! remove the socket (unless systemd owns it), let the engine finish the batch in flight, then
//! end running jobs (SIGTERM, grace period, SIGKILL; recorded as `interrupted`).

pub mod as_user;
pub mod config;
pub mod connection;
pub mod disk;
pub mod engine;
pub mod fds;
pub mod job;
pub mod limits;
pub mod lock;
pub mod logging;
pub mod metrics;
pub mod reload;
pub mod requests;
pub mod runner;
pub mod schedule;
pub mod server;
pub mod store;
pub mod systemd;
pub mod watch;

use anyhow::{Context, bail};
use config::{Args, Config};
use engine::{Engine, EngineConfig, Stats};
use runner::{Identity, Runner};
use server::{DaemonInfo, Shared};
use std::os::unix::fs::PermissionsExt;
use std::sync::Arc;
use std::time::{Duration, Instant};
use store::{Store, StoreOptions};
use tokio::signal::unix::{SignalKind, signal};
use tokio_util::sync::CancellationToken;

/// How often the one-line status systemd shows is refreshed.
const STATUS_EVERY: Duration = Duration::from_secs(10);

/// Runs the daemon until SIGTERM or SIGINT. Errors are what keeps it from starting.
///
/// Call it from `main` before any other thread exists: first of all it takes the socket systemd
/// may have passed out of the environment ([`server::take_activated`]).
pub fn run(config: Config, args: Args) -> anyhow::Result<()> {
    // SAFETY: as documented above, this is chimed's only thread so far; the runtime's threads
    // start below.
    #[allow(unsafe_code)]
    let activated = unsafe { server::take_activated() }?;
    // Without systemd's socket chimed binds its own, so it must know where, before it touches
    // the state directory.
    if activated.is_none() {
        config.socket.clone()?;
    }
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .thread_name("chimed")
        .build()
        .context("cannot start the async runtime")?;
    runtime.block_on(serve(config, args, activated))
}

/// Creates the state directory `0700` if it is missing, and checks an existing one: it must be a
/// directory owned by chimed's user that no one else may write (or else someone else could
/// replace the database or a job's output). What is in it is made private: the database `0600`,
/// `logs/` `0700` (files created later are, by chimed's umask).
fn prepare_state_dir(dir: &std::path::Path) -> anyhow::Result<()> {
    use std::os::unix::fs::MetadataExt;
    let uid = nix::unistd::geteuid().as_raw();
    if !dir.exists() {
        std::fs::create_dir_all(dir)
            .with_context(|| format!("cannot create the state directory {}", dir.display()))?;
        std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))
            .with_context(|| format!("cannot set the mode of {}", dir.display()))?;
    }
    let meta = std::fs::metadata(dir)
        .with_context(|| format!("cannot read the state directory {}", dir.display()))?;
    if !meta.is_dir() {
        bail!("the state directory {} is not a directory", dir.display());
    }
    if meta.uid() != uid {
        bail!(
            "the state directory {} belongs to uid {}, not to chimed's user (uid {uid}); \
             `chown {uid} {}` it, or give another --state-dir",
            dir.display(),
            meta.uid(),
            dir.display()
        );
    }
    if meta.mode() & 0o022 != 0 {
        bail!(
            "the state directory {} may be written by group or others (mode {:o}); \
             `chmod 700` it",
            dir.display(),
            meta.mode() & 0o7777
        );
    }
    let private = |path: &std::path::Path, mode: u32| -> anyhow::Result<()> {
        match std::fs::symlink_metadata(path) {
            Ok(meta) if meta.uid() == uid && meta.mode() & 0o077 != 0 => {
                std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))
                    .with_context(|| format!("cannot make {} private", path.display()))?;
                tracing::info!(path = %path.display(), mode = format!("{mode:o}"), "made private");
                Ok(())
            }
            _ => Ok(()),
        }
    };
    private(dir, 0o700)?;
    private(&dir.join("chime.redb"), 0o600)?;
    let logs = dir.join("logs");
    if !logs.exists() {
        std::fs::create_dir(&logs).with_context(|| format!("cannot create {}", logs.display()))?;
    }
    private(&logs, 0o700)
}

/// The one line `systemctl status chimed` shows: jobs by state, runs in progress, pauses.
pub fn status_line(shared: &Shared) -> String {
    let Ok(reader) = shared.store.read() else {
        return "running".into();
    };
    let counts = reader.counts().unwrap_or_default();
    let count = |state: chime_proto::JobState| {
        counts
            .iter()
            .find(|(s, _)| *s == state)
            .map_or(0, |(_, n)| *n)
    };
    let running = shared
        .stats
        .running
        .lock()
        .map_or(0, |r| r.values().sum::<usize>());
    let mut line = format!(
        "{} scheduled, {running} running, {} queued, {} paused jobs",
        count(chime_proto::JobState::Scheduled),
        count(chime_proto::JobState::Queued),
        count(chime_proto::JobState::Paused),
    );
    if reader.pause_all().ok().flatten().is_some() {
        line.push_str("; EVERYTHING PAUSED");
    } else {
        let paused: Vec<String> = reader
            .queues()
            .unwrap_or_default()
            .into_iter()
            .filter(|(_, q)| q.pause.is_some())
            .map(|(name, _)| name)
            .collect();
        if !paused.is_empty() {
            line.push_str(&format!("; paused queues: {}", paused.join(", ")));
        }
    }
    line
}

/// A started daemon: its state directory locked, the database open and recovered, the socket
/// bound, the engine running, the declared jobs applied, connections accepted. `chimed` runs one
/// until a signal stops it ([`run`]); an in-process harness (the fuzz target in `tests/fuzz`)
/// starts one the same way and answers requests through [`Daemon::shared`] with
/// [`requests::handle`], as a connection does.
#[derive(Debug)]
pub struct Daemon {
    /// What every connection shares.
    pub shared: Arc<Shared>,
    shutdown: CancellationToken,
    server_task: tokio::task::JoinHandle<()>,
    engine_thread: std::thread::JoinHandle<()>,
    /// Held while the daemon lives: a second chimed on this state directory is refused.
    _state_lock: lock::LockFile,
    /// What the start did, for the "ready" record.
    pub report: StartReport,
}

/// What a start did.
#[derive(Debug, Clone)]
pub struct StartReport {
    /// Runs found open at start and closed as `lost`.
    pub recovered_lost: usize,
    /// Declared jobs (job files) added, updated and removed.
    pub declared_added: usize,
    pub declared_updated: usize,
    pub declared_removed: usize,
    /// systemd's watchdog interval, if it set one.
    pub watchdog: Option<Duration>,
}

impl Daemon {
    /// Starts a daemon, all but telling systemd that it is ready (the steps and their order are
    /// in the crate docs, "Start and stop"). Call it on a tokio runtime: the engine's thread and
    /// the connection tasks use it. `activated` is the socket systemd passed, if any
    /// ([`server::take_activated`]). `after_bind` runs once the socket is bound and before the
    /// engine starts, so before any job can start or any client be answered: chimed registers its
    /// signal handlers there, so that a SIGTERM from then on stops it cleanly.
    ///
    /// Errors: whatever keeps the daemon from starting (the configuration or job files, the state
    /// directory, the database, the socket), said for people.
    pub async fn start<T>(
        config: &Config,
        args: Args,
        activated: Option<std::os::fd::OwnedFd>,
        after_bind: impl FnOnce() -> anyhow::Result<T>,
    ) -> anyhow::Result<(Self, T)> {
        let started = Instant::now();
        let state_dir = &config.state_dir;
        prepare_state_dir(state_dir)?;
        let state_lock = lock::acquire(
            &state_dir.join("chimed.lock"),
            &format!("state directory {}", state_dir.display()),
        )?;

        let identity = Identity::of_this_process().context("cannot read chimed's own identity")?;
        let local_tz = jiff::tz::TimeZone::system();
        let zone_name = local_tz.iana_name().unwrap_or("local").to_owned();

        // The configuration and job files: any problem stops the start, with its message.
        let loaded = {
            let ctx = config::LoadContext {
                daemon_uid: identity.uid,
                local_tz: local_tz.clone(),
                exec_defaults: job::Exec::default(),
            };
            let path = config.config_path.clone();
            let loaded = config::load(&path, Some(&args), &ctx)?;
            if !loaded.errors.is_empty() {
                let lines: Vec<String> = loaded.errors.iter().map(ToString::to_string).collect();
                bail!(
                    "{} problem(s) with the job files; fix them (or move the files out of {}) and start again:\n  {}",
                    lines.len(),
                    config.jobs_dir().display(),
                    lines.join("\n  ")
                );
            }
            loaded
        };

        let db_path = config.database_path();
        let options = StoreOptions {
            cache_bytes: config.cache_bytes,
            quick_repair: config.quick_repair,
        };
        let store = tokio::task::spawn_blocking(move || Store::open(&db_path, &options))
            .await
            .context("opening the database panicked")??;
        let store = Arc::new(store);
        let watchdog = systemd::watchdog_interval();
        let engine_config = EngineConfig {
            max_running: config.max_running,
            stop_grace: config.stop_grace,
            started_ms: job::now_ms(),
            local_tz: local_tz.clone(),
            admin_uid: identity.uid,
            event_retention: config.event_retention,
            watchdog,
            limits: config.limits_cell.clone(),
        };
        let recovered = {
            let store = Arc::clone(&store);
            let engine_config = engine_config.clone();
            tokio::task::spawn_blocking(move || Engine::recover(&store, &engine_config))
                .await
                .context("recovery panicked")?
                .context("recovery failed")?
        };

        let listener = match activated {
            Some(fd) => server::adopt(fd)?,
            None => server::bind(config)?,
        };
        let bound = after_bind()?;

        // Connections get the descriptors that --max-running jobs and chimed itself leave.
        let nofile = fds::raise_limit();
        let max_connections = fds::budget(
            nofile,
            config.max_running as u64,
            config.max_connections as u64,
        ) as usize;
        if max_connections < config.max_connections {
            tracing::warn!(
                open_files_limit = nofile,
                max_running = config.max_running,
                wanted = config.max_connections,
                max_connections,
                "the open files limit leaves room for fewer connections; raise LimitNOFILE= (or ulimit -n)"
            );
        }

        let (handle, inbox) = engine::channel();
        let stats = Arc::new(Stats::default());
        let metrics = Arc::new(metrics::Metrics::new());
        let (events, _) = tokio::sync::broadcast::channel(watch::CHANNEL_CAPACITY);
        let accounts = Arc::new(as_user::account::Accounts::new(&config.pam_service));
        // Each user's run output on disk, counted once from the files (output_per_user).
        let usage = {
            let store = Arc::clone(&store);
            let logs = config.logs_dir();
            tokio::task::spawn_blocking(move || {
                let reader = store.read().ok();
                Arc::new(runner::usage::Usage::scan(&logs, |job| {
                    reader.as_ref()?.job(job).ok().flatten().map(|j| j.owner)
                }))
            })
            .await
            .context("counting run output panicked")?
        };
        let user_limits = config.limits_cell.clone();
        let disk_low = disk::Low::default();
        if identity.is_root() {
            tracing::info!(checks = %accounts.describe(), "accounts are checked before each run of a user's job");
        }
        let runner = Runner::new(
            handle.mailbox(),
            config.logs_dir(),
            identity.clone(),
            config.max_running,
            runner::Shares {
                accounts: Arc::clone(&accounts),
                user_limits: user_limits.clone(),
                usage,
                disk_low: disk_low.clone(),
            },
        )
        .context("cannot open /dev/null for jobs' stdin")?;
        let runs = runner.view();
        let engine = Engine::new(
            Arc::clone(&store),
            inbox,
            runner,
            engine_config.clone(),
            config.logs_dir(),
            engine::Outputs {
                stats: Arc::clone(&stats),
                events: events.clone(),
                metrics: Arc::clone(&metrics),
            },
        );
        let shared = Arc::new(Shared {
            store: Arc::clone(&store),
            engine: handle,
            damage: Default::default(),
            runs,
            stats,
            info: DaemonInfo {
                started,
                started_at_ms: job::now_ms(),
                pid: std::process::id(),
                uid: identity.uid,
                socket: listener.path().to_path_buf(),
                state_dir: config.state_dir.clone(),
                logs_dir: config.logs_dir(),
                max_running: config.max_running,
                local_tz,
                zone_name: zone_name.clone(),
                config_path: config.config_path.clone(),
                socket_activated: listener.is_activated(),
                helper: identity.helper.clone(),
                account_check: accounts.describe(),
                open_files: nofile,
                max_connections,
                event_retention: config.event_retention,
            },
            connections: Default::default(),
            connections_by_uid: Default::default(),
            limits: user_limits.clone(),
            pace: Default::default(),
            checked: Default::default(),
            queries: Default::default(),
            events,
            metrics,
            exec_defaults: std::sync::RwLock::new(config.exec_defaults.clone()),
            reload: Default::default(),
            reload_lock: Default::default(),
            args,
        });

        let shutdown = CancellationToken::new();
        let engine_thread = engine
            .spawn(tokio::runtime::Handle::current())
            .context("cannot start the engine thread")?;

        // The declared jobs and queue limits, before anyone can connect.
        let applied = reload::apply(&shared, loaded, true, None).await;
        if !applied.errors.is_empty() {
            shared.engine.shutdown();
            let _ = tokio::task::spawn_blocking(move || engine_thread.join()).await;
            bail!(
                "the configuration could not be applied:\n  {}",
                applied.errors.join("\n  ")
            );
        }

        let server_task = tokio::spawn(server::serve(
            listener,
            Arc::clone(&shared),
            max_connections,
            shutdown.clone(),
        ));
        tokio::spawn(disk::watch(
            config.state_dir.clone(),
            disk_low,
            shutdown.clone(),
        ));
        if let Some(path) = &config.metrics_file {
            tokio::spawn(metrics::write_file_every(
                Arc::clone(&shared),
                path.clone(),
                config.metrics_interval,
                shutdown.clone(),
            ));
        }

        let report = StartReport {
            recovered_lost: recovered,
            declared_added: applied.added.len(),
            declared_updated: applied.updated.len(),
            declared_removed: applied.removed.len(),
            watchdog,
        };
        let daemon = Self {
            shared,
            shutdown,
            server_task,
            engine_thread,
            _state_lock: state_lock,
            report,
        };
        Ok((daemon, bound))
    }

    /// Stops the daemon as SIGTERM does: stops accepting and removes the socket (unless systemd
    /// owns it), lets the engine finish the batch in flight, then ends running jobs (SIGTERM,
    /// grace period, SIGKILL; recorded as `interrupted`).
    ///
    /// Errors: the server task or the engine thread panicked.
    pub async fn stop(self) -> anyhow::Result<()> {
        self.shutdown.cancel();
        self.server_task.await.context("the server task panicked")?;
        self.shared.engine.shutdown();
        let engine_thread = self.engine_thread;
        tokio::task::spawn_blocking(move || engine_thread.join())
            .await
            .context("waiting for the engine")?
            .map_err(|_| anyhow::anyhow!("the engine thread panicked"))?;
        Ok(())
    }
}

/// The signals chimed answers, registered before READY so that an early SIGTERM is not fatal.
struct Signals {
    term: tokio::signal::unix::Signal,
    int: tokio::signal::unix::Signal,
    hup: tokio::signal::unix::Signal,
    usr2: tokio::signal::unix::Signal,
}

impl Signals {
    fn register() -> anyhow::Result<Self> {
        Ok(Self {
            term: signal(SignalKind::terminate()).context("cannot handle SIGTERM")?,
            int: signal(SignalKind::interrupt()).context("cannot handle SIGINT")?,
            hup: signal(SignalKind::hangup()).context("cannot handle SIGHUP")?,
            usr2: signal(SignalKind::user_defined2()).context("cannot handle SIGUSR2")?,
        })
    }
}

async fn serve(
    config: Config,
    args: Args,
    activated: Option<std::os::fd::OwnedFd>,
) -> anyhow::Result<()> {
    let (daemon, mut signals) = Daemon::start(&config, args, activated, Signals::register).await?;
    let shared = Arc::clone(&daemon.shared);
    let status = status_line(&shared);
    let report = &daemon.report;
    tracing::info!(
        socket = %shared.info.socket.display(),
        socket_activated = shared.info.socket_activated,
        state_dir = %config.state_dir.display(),
        config = %config.config_path.display(),
        zone = %shared.info.zone_name,
        recovered_lost = report.recovered_lost,
        declared_added = report.declared_added,
        declared_updated = report.declared_updated,
        declared_removed = report.declared_removed,
        watchdog_ms = report.watchdog.map(|w| w.as_millis() as u64),
        status = %status,
        "chimed ready"
    );
    systemd::ready(&status);
    tokio::task::spawn_blocking({
        let shared = Arc::clone(&shared);
        move || scrub(&shared)
    });

    let mut status_timer = tokio::time::interval(STATUS_EVERY);
    loop {
        tokio::select! {
            _ = signals.term.recv() => break,
            _ = signals.int.recv() => break,
            _ = signals.hup.recv() => {
                tracing::info!("SIGHUP: reloading the configuration");
                let shared = Arc::clone(&shared);
                tokio::spawn(async move { reload::reload(&shared, None).await });
            }
            _ = signals.usr2.recv() => {
                if config.test_wedge {
                    shared.engine.wedge();
                } else {
                    tracing::info!("SIGUSR2 ignored");
                }
            }
            _ = status_timer.tick() => {
                let shared = Arc::clone(&shared);
                if let Ok(line) = tokio::task::spawn_blocking(move || status_line(&shared)).await {
                    systemd::status(&line);
                }
            }
        }
    }
    tracing::info!("stopping");
    systemd::stopping();
    drop(shared);
    daemon.stop().await?;
    tracing::info!("stopped");
    Ok(())
}

/// Reads every stored record once after the start (see [`store::Store::scrub`]) and reports
/// each damaged one: in the log, with the database file, the record and what to do, and in
/// `status` (`damaged_records`, and `damaged` among the job counts).
fn scrub(shared: &Shared) {
    let started = std::time::Instant::now();
    let db = shared.store.path();
    let result = shared.store.scrub(|damage| {
        let what = match (damage.table, damage.job()) {
            ("jobs", Some(id)) => damage.explain(db, id),
            (_, Some(id)) => format!(
                "{damage} in {}: that run of job {id} is left out of `show`; restore the database \
                 from a backup to get it back",
                db.display()
            ),
            _ => format!(
                "{damage} in {}: that event is left out of `events`; restore the database from a \
                 backup to get it back",
                db.display()
            ),
        };
        tracing::error!(table = damage.table, key = %damage.key, "{what}");
        shared.damage.note(&damage);
    });
    match result {
        Ok(records) => {
            shared.damage.set_scrubbed();
            let damaged = shared.damage.records();
            let ms = started.elapsed().as_millis() as u64;
            if damaged > 0 {
                tracing::error!(
                    records,
                    damaged,
                    ms,
                    "scrub found damaged records in {}",
                    db.display()
                );
            } else {
                tracing::info!(records, ms, "scrub: every stored record is whole");
            }
        }
        Err(err) => tracing::error!(error = %err, "the scrub of the database failed"),
    }
}
