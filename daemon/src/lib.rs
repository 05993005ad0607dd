//! `chimed`, the chime daemon: a durable job scheduler and timer service for one Linux host.
//!
//! # Theory of operation
//!
//! ```text
//! chimectl ──frames──▶ server ─▶ connection task (one per client, SO_PEERCRED uid)
//!                                   │ queries: redb read snapshot (never waits for the engine)
//!                                   │ changes: Work + reply slot ──▶ engine (one thread)
//!                                   ◀──── reply after commit ─────┤ owns every change
//!                                                                 │ group-commits to redb
//!                                                                 │ sleeps until the next due time
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
//! - **Dispatch-ahead.** The engine may open (commit) more runs of a queue than may run at once;
//!   the runner starts at most the queue's limit of processes and starts the next opened run the
//!   moment one ends, so a slot never waits for a commit, and ends are recorded in batches. A run
//!   that never started leaves no record; one lost before its start was recorded runs again
//!   (at-least-once).
//! - **Recovery.** At start, before the socket listens, runs that were open when the daemon died
//!   are closed as `lost`; jobs that came due while it was down start at once.
//! - **Refuse, never replace.** A database that cannot be read or was written by a newer chimed
//!   stops the start with a clear error and is left untouched ([`store`]).
//!
//! # Start and stop
//!
//! Start: take the state directory's lock, open the database, recover, bind the socket (taking
//! its lock), start the engine, then tell systemd `READY=1`. Stop (SIGTERM or SIGINT): tell
//! systemd `STOPPING=1`, stop accepting and remove the socket, let the engine finish the batch in
//! flight, then end running jobs (SIGTERM, grace period, SIGKILL; recorded as `interrupted`).

pub mod config;
pub mod connection;
pub mod engine;
pub mod job;
pub mod lock;
pub mod logging;
pub mod requests;
pub mod runner;
pub mod schedule;
pub mod server;
pub mod store;
pub mod systemd;

use anyhow::Context;
use config::Config;
use engine::{Engine, EngineConfig, Stats};
use runner::{Identity, Runner};
use server::{DaemonInfo, Shared};
use std::os::unix::fs::PermissionsExt;
use std::sync::Arc;
use std::time::Instant;
use store::{Store, StoreOptions};
use tokio::signal::unix::{SignalKind, signal};
use tokio_util::sync::CancellationToken;

/// Runs the daemon until SIGTERM or SIGINT. Errors are what keeps it from starting.
pub fn run(config: Config) -> anyhow::Result<()> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .thread_name("chimed")
        .build()
        .context("cannot start the async runtime")?;
    runtime.block_on(serve(config))
}

async fn serve(config: Config) -> anyhow::Result<()> {
    let started = Instant::now();
    let state_dir = &config.state_dir;
    if !state_dir.is_dir() {
        std::fs::create_dir_all(state_dir).with_context(|| {
            format!("cannot create the state directory {}", state_dir.display())
        })?;
        std::fs::set_permissions(state_dir, std::fs::Permissions::from_mode(0o700))
            .with_context(|| format!("cannot set the mode of {}", state_dir.display()))?;
    }
    let _state_lock = lock::acquire(
        &state_dir.join("chimed.lock"),
        &format!("state directory {}", state_dir.display()),
    )?;

    let db_path = config.database_path();
    let options = StoreOptions {
        cache_bytes: config.cache_bytes,
        quick_repair: config.quick_repair,
    };
    let store = tokio::task::spawn_blocking(move || Store::open(&db_path, &options))
        .await
        .context("opening the database panicked")??;
    let store = Arc::new(store);
    let identity = Identity::of_this_process().context("cannot read chimed's own identity")?;
    let local_tz = jiff::tz::TimeZone::system();
    let zone_name = local_tz.iana_name().unwrap_or("local").to_owned();
    let engine_config = EngineConfig {
        max_running: config.max_running,
        stop_grace: config.stop_grace,
        started_ms: job::now_ms(),
        local_tz: local_tz.clone(),
        admin_uid: identity.uid,
    };
    let recovered = {
        let store = Arc::clone(&store);
        let engine_config = engine_config.clone();
        tokio::task::spawn_blocking(move || Engine::recover(&store, &engine_config))
            .await
            .context("recovery panicked")?
            .context("recovery failed")?
    };

    let listener = server::bind(&config)?;
    // Signals are registered before READY so that an early SIGTERM is not fatal.
    let mut sigterm = signal(SignalKind::terminate()).context("cannot handle SIGTERM")?;
    let mut sigint = signal(SignalKind::interrupt()).context("cannot handle SIGINT")?;
    let mut sighup = signal(SignalKind::hangup()).context("cannot handle SIGHUP")?;

    let (handle, inbox) = engine::channel();
    let stats = Arc::new(Stats::default());
    let runner = Runner::new(
        handle.events(),
        config.logs_dir(),
        identity.clone(),
        config.max_running,
    );
    let engine = Engine::new(
        Arc::clone(&store),
        inbox,
        runner,
        engine_config.clone(),
        Arc::clone(&stats),
        config.logs_dir(),
    );
    let shared = Arc::new(Shared {
        store: Arc::clone(&store),
        engine: handle,
        stats,
        info: DaemonInfo {
            started,
            started_at_ms: job::now_ms(),
            pid: std::process::id(),
            uid: identity.uid,
            socket: config.socket.clone(),
            state_dir: config.state_dir.clone(),
            logs_dir: config.logs_dir(),
            max_running: config.max_running,
            local_tz,
            zone_name: zone_name.clone(),
            exec_defaults: config.exec_defaults.clone(),
        },
        connections: Default::default(),
    });

    let shutdown = CancellationToken::new();
    let engine_thread = engine
        .spawn(tokio::runtime::Handle::current())
        .context("cannot start the engine thread")?;
    let server_task = tokio::spawn(server::serve(
        listener,
        Arc::clone(&shared),
        config.max_connections,
        shutdown.clone(),
    ));

    let counts = store.read()?.counts()?;
    let summary = counts
        .iter()
        .map(|(state, n)| format!("{n} {state}"))
        .collect::<Vec<_>>()
        .join(", ");
    tracing::info!(
        socket = %config.socket.display(),
        state_dir = %config.state_dir.display(),
        zone = %zone_name,
        recovered_lost = recovered,
        jobs = %summary,
        "chimed ready"
    );
    systemd::ready(&format!("ready; {summary}"));

    loop {
        tokio::select! {
            _ = sigterm.recv() => break,
            _ = sigint.recv() => break,
            _ = sighup.recv() => {
                tracing::info!("SIGHUP: this version has no configuration file to reload");
            }
        }
    }
    tracing::info!("stopping");
    systemd::stopping();
    shutdown.cancel();
    server_task.await.context("the server task panicked")?;
    shared.engine.shutdown();
    tokio::task::spawn_blocking(move || engine_thread.join())
        .await
        .context("waiting for the engine")?
        .map_err(|_| anyhow::anyhow!("the engine thread panicked"))?;
    tracing::info!("stopped");
    Ok(())
}
