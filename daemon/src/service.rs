//! The service: chimed as systemd runs it. [`run`] builds the async runtime, starts a
//! [`Daemon`], tells systemd it is ready, starts the scrub of the database, and answers signals
//! (SIGTERM and SIGINT stop, SIGHUP reloads) and refreshes the status line systemd shows until
//! it is told to stop.

use crate::config::{Args, Config};
use crate::context::Context;
use crate::server;
use crate::start::Daemon;
use crate::{reload, systemd};
use anyhow::Context as _;
use std::sync::Arc;
use std::time::Duration;
use tokio::signal::unix::{SignalKind, signal};

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
    let context = Arc::clone(&daemon.context);
    let status = context.status_line();
    let report = &daemon.report;
    tracing::info!(
        socket = %context.info.socket.display(),
        socket_activated = context.info.socket_activated,
        state_dir = %config.state_dir.display(),
        config = %config.config_path.display(),
        zone = %context.info.zone_name,
        recovered_lost = report.recovered_lost,
        declared_added = report.declared_added,
        declared_updated = report.declared_updated,
        declared_removed = report.declared_removed,
        watchdog_ms = report.watchdog.map(|w| w.as_millis() as u64),
        status = %status,
        "chimed ready"
    );
    systemd::ready(&status);
    // The scrub stops when chimed does: the runtime's end waits for it.
    let scrub_stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    tokio::task::spawn_blocking({
        let context = Arc::clone(&context);
        let stop = Arc::clone(&scrub_stop);
        move || scrub(&context, &stop)
    });

    let mut status_timer = tokio::time::interval(STATUS_EVERY);
    loop {
        tokio::select! {
            _ = signals.term.recv() => break,
            _ = signals.int.recv() => break,
            _ = signals.hup.recv() => {
                tracing::info!("SIGHUP: reloading the configuration");
                let context = Arc::clone(&context);
                tokio::spawn(async move { reload::reload(&context, None).await });
            }
            _ = signals.usr2.recv() => {
                if config.test_wedge {
                    context.engine.wedge();
                } else {
                    tracing::info!("SIGUSR2 ignored");
                }
            }
            _ = status_timer.tick() => {
                let context = Arc::clone(&context);
                if let Ok(line) = tokio::task::spawn_blocking(move || context.status_line()).await {
                    systemd::status(&line);
                }
            }
        }
    }
    tracing::info!("stopping");
    systemd::stopping();
    scrub_stop.store(true, std::sync::atomic::Ordering::Relaxed);
    drop(context);
    daemon.stop().await?;
    tracing::info!("stopped");
    Ok(())
}

/// Reads every stored record once after the start (see [`store::Store::scrub`]) and reports
/// each damaged one: in the log, with the database file, the record and what to do, and in
/// `status` (`damaged_records`, and `damaged` among the job counts). Stops when `stop` is set.
fn scrub(context: &Context, stop: &std::sync::atomic::AtomicBool) {
    let started = std::time::Instant::now();
    let db = context.store.path();
    let go_on = || !stop.load(std::sync::atomic::Ordering::Relaxed);
    let result = context.store.scrub(go_on, |damage| {
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
        context.damage.note(&damage);
    });
    match result {
        Ok(crate::store::Scrubbed {
            records,
            whole: false,
        }) => {
            tracing::info!(
                records,
                "the scrub was stopped by the stop; the next start scrubs again"
            );
        }
        Ok(crate::store::Scrubbed { records, .. }) => {
            context.damage.set_scrubbed();
            let damaged = context.damage.records();
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
