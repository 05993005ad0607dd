//! Start and stop: from a checked [`Config`] to a daemon that serves, and back.
//!
//! [`Daemon::start`] takes the steps in the order the crate docs give ("Start and stop"): the
//! state directory (checked, locked), the configuration and job files, the database (opened,
//! recovered), the socket, the descriptor budget, the runner and the engine, the daemon context
//! every connection shares ([`Context`]), the declared jobs, then the tasks that serve. It stops
//! short of telling systemd that chimed is ready, which [`crate::service`] does.
//! [`Daemon::stop`] is a clean stop's second half.

use crate::config::{Args, Config};
use crate::context::{Context, DaemonInfo};
use crate::engine::{Engine, EngineConfig, EnginePriority, Stats};
use crate::runner::{Identity, Runner};
use crate::store::{Store, StoreOptions};
use crate::{
    as_user, config, disk, engine, fds, job, lock, metrics, reload, runner, server, systemd, watch,
};
use anyhow::{Context as _, bail};
use std::os::unix::fs::PermissionsExt;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio_util::sync::CancellationToken;

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

/// A started daemon: its state directory locked, the database open and recovered, the socket
/// bound, the engine running, the declared jobs applied, connections accepted. `chimed` runs one
/// until a signal stops it ([`run`]); an in-process harness (the fuzz target in `tests/fuzz`)
/// starts one the same way and answers requests through [`Daemon::context`] with
/// [`requests::handle`], as a connection does.
#[derive(Debug)]
pub struct Daemon {
    /// What every connection shares.
    pub context: Arc<Context>,
    shutdown: CancellationToken,
    server_task: tokio::task::JoinHandle<()>,
    engine_thread: std::thread::JoinHandle<()>,
    /// Held while the daemon lives: a second chimed on this state directory is refused.
    _state_lock: lock::LockFile,
    /// chimed's cgroup subtree: what of it is empty is removed at a clean stop.
    cgroups: Arc<crate::cgroup::Tree>,
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
        let is_root = identity.is_root();
        let local_tz = jiff::tz::TimeZone::system();
        let cgroups = Arc::new(if config.no_cgroups {
            crate::cgroup::Tree::off("--no-cgroups was given")
        } else {
            crate::cgroup::Tree::find(state_dir)
        });
        if cgroups.is_on() {
            tracing::info!(containment = %cgroups.describe(), "runs are contained");
        } else {
            tracing::warn!(containment = %cgroups.describe(), "runs are not contained: what a job starts in a session of its own can outlive its run, and no limit can be set");
        }
        // A limit whose controller the runs' cgroups lack is refused, in files too.
        let loaded = load_declared(config, &args, identity.uid, &local_tz, cgroups.controllers)?;
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
            priority: config.engine_priority,
            host: match config.store {
                crate::config::StoreKind::Redb => None,
                crate::config::StoreKind::Postgres(_) => Some(config.host_id.as_str().into()),
            },
        };
        let (store, recovered) = open_and_recover(config, &engine_config, &cgroups).await?;

        let listener = match activated {
            Some(fd) => server::adopt(fd)?,
            None => server::bind(config)?,
        };
        let bound = after_bind()?;

        let (nofile, max_connections) = connection_budget(config);
        let info = DaemonInfo {
            started,
            started_at_ms: job::now_ms(),
            pid: std::process::id(),
            uid: identity.uid,
            socket: listener.path().to_path_buf(),
            state_dir: config.state_dir.clone(),
            logs_dir: config.logs_dir(),
            max_running: config.max_running,
            zone_name: local_tz.iana_name().unwrap_or("local").to_owned(),
            local_tz,
            config_path: config.config_path.clone(),
            socket_activated: listener.is_activated(),
            helper: identity.helper.clone(),
            account_check: String::new(),
            containment: cgroups.info(),
            open_files: nofile,
            max_connections,
            event_retention: config.event_retention,
        };
        let (engine, context, disk_low) = assemble(
            config,
            args,
            identity,
            store,
            engine_config,
            info,
            Arc::clone(&cgroups),
        )
        .await?;

        let shutdown = CancellationToken::new();
        let (engine_thread, priority) = engine
            .spawn(tokio::runtime::Handle::current())
            .context("cannot start the engine thread")?;
        // Refused to root is unexpected (a cgroup without real-time time); to a user, expected.
        if !priority.realtime && is_root && config.engine_priority == EnginePriority::Realtime {
            tracing::warn!(priority = %priority.description, "the engine thread runs at normal priority: timers may fire late while the CPUs are busy");
        } else {
            tracing::info!(priority = %priority.description, "engine thread scheduling");
        }

        // The declared jobs and queue limits, before anyone can connect.
        let applied = reload::apply(&context, loaded, true, None).await;
        if !applied.errors.is_empty() {
            context.engine.shutdown();
            let _ = tokio::task::spawn_blocking(move || engine_thread.join()).await;
            bail!(
                "the configuration could not be applied:\n  {}",
                applied.errors.join("\n  ")
            );
        }

        let server_task = spawn_tasks(
            config,
            &context,
            listener,
            max_connections,
            disk_low,
            &shutdown,
        );

        let report = StartReport {
            recovered_lost: recovered,
            declared_added: applied.added.len(),
            declared_updated: applied.updated.len(),
            declared_removed: applied.removed.len(),
            watchdog,
        };
        let daemon = Self {
            context,
            shutdown,
            server_task,
            engine_thread,
            _state_lock: state_lock,
            cgroups: Arc::clone(&cgroups),
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
        self.context.engine.shutdown();
        let engine_thread = self.engine_thread;
        tokio::task::spawn_blocking(move || engine_thread.join())
            .await
            .context("waiting for the engine")?
            .map_err(|_| anyhow::anyhow!("the engine thread panicked"))?;
        // The runs have ended and the runner, with its idle cgroups, is gone.
        self.cgroups.remove_empty();
        Ok(())
    }
}

/// Reads and checks `chimed.toml` and the job files: any problem stops the start, with its
/// message.
fn load_declared(
    config: &Config,
    args: &Args,
    daemon_uid: u32,
    local_tz: &jiff::tz::TimeZone,
    controllers: crate::cgroup::Controllers,
) -> anyhow::Result<config::Loaded> {
    let ctx = config::LoadContext {
        daemon_uid,
        local_tz: local_tz.clone(),
        exec_defaults: job::Exec::default(),
        controllers,
        limits: crate::limits::Limits::defaults(daemon_uid),
    };
    let loaded = config::load(&config.config_path, Some(args), &ctx)?;
    if !loaded.errors.is_empty() {
        let lines: Vec<String> = loaded.errors.iter().map(ToString::to_string).collect();
        bail!(
            "{} problem(s) with the job files; fix them (or move the files out of {}) and start again:\n  {}",
            lines.len(),
            config.jobs_dir().display(),
            lines.join("\n  ")
        );
    }
    Ok(loaded)
}

/// Opens the database (refusing one it cannot read, see [`Store::open`]) and closes the runs that
/// were open when chimed last died as `lost`; returns how many.
async fn open_and_recover(
    config: &Config,
    engine_config: &EngineConfig,
    cgroups: &Arc<crate::cgroup::Tree>,
) -> anyhow::Result<(Arc<Store>, usize)> {
    let db_path = config.database_path();
    let options = StoreOptions {
        cache_bytes: config.cache_bytes,
        quick_repair: config.quick_repair,
    };
    let kind = config.store.clone();
    let host = config.host_id.clone();
    let lease = config.fleet_lease;
    let store = tokio::task::spawn_blocking(move || match kind {
        crate::config::StoreKind::Redb => Store::open(&db_path, &options),
        crate::config::StoreKind::Postgres(url) => Store::open_remote(&url, &host, lease),
    })
    .await
    .context("opening the database panicked")??;
    let store = Arc::new(store);
    let recovered = {
        let store = Arc::clone(&store);
        let engine_config = engine_config.clone();
        let cgroups = Arc::clone(cgroups);
        tokio::task::spawn_blocking(move || {
            Engine::recover(&store, &engine_config, &mut |open| {
                let open = open.iter().map(|r| r.0).collect();
                let swept = crate::cgroup::sweep::end_leftovers(&cgroups, &open);
                cgroups.keep_until_empty(swept.kept);
                swept
                    .ended
                    .into_iter()
                    .map(|(run, n)| (chime_proto::RunId(run), n))
                    .collect()
            })
        })
        .await
        .context("recovery panicked")?
        .context("recovery failed")?
    };
    Ok((store, recovered))
}

/// Raises the soft open files limit and gives connections the descriptors that `--max-running`
/// jobs and chimed itself leave: returns the limit and the connections allowed.
fn connection_budget(config: &Config) -> (u64, usize) {
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
    (nofile, max_connections)
}

/// Builds the runner, the engine (not started yet) and the context every connection shares.
/// Returns them and the flag the disk watch raises when the disk is nearly full.
async fn assemble(
    config: &Config,
    args: Args,
    identity: Identity,
    store: Arc<Store>,
    engine_config: EngineConfig,
    mut info: DaemonInfo,
    cgroups: Arc<crate::cgroup::Tree>,
) -> anyhow::Result<(Engine, Arc<Context>, disk::Low)> {
    let (handle, inbox) = engine::channel();
    let stats = Arc::new(Stats::default());
    let metrics = Arc::new(metrics::Metrics::new());
    let (events, _) = tokio::sync::broadcast::channel(watch::CHANNEL_CAPACITY);
    let accounts = Arc::new(as_user::account::Accounts::new(&config.pam_service));
    info.account_check = accounts.describe();
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
        identity,
        config.max_running,
        runner::Shares {
            accounts: Arc::clone(&accounts),
            user_limits: user_limits.clone(),
            usage,
            disk_low: disk_low.clone(),
            cgroups: Arc::clone(&cgroups),
        },
    )
    .context("cannot open /dev/null for jobs' stdin")?;
    let runs = runner.view();
    let engine = Engine::new(
        Arc::clone(&store),
        inbox,
        runner,
        engine_config,
        config.logs_dir(),
        engine::Outputs {
            stats: Arc::clone(&stats),
            events: events.clone(),
            metrics: Arc::clone(&metrics),
        },
    );
    let context = Arc::new(Context {
        store,
        engine: handle,
        damage: Default::default(),
        runs,
        stats,
        info,
        connections: Default::default(),
        connections_by_uid: Default::default(),
        limits: user_limits,
        pace: Default::default(),
        checked: Default::default(),
        queries: Default::default(),
        events,
        metrics,
        exec_defaults: std::sync::RwLock::new(config.exec_defaults.clone()),
        reload: Default::default(),
        reload_lock: Default::default(),
        args,
        controllers: cgroups.controllers,
    });
    Ok((engine, context, disk_low))
}

/// Starts what serves until `shutdown`: the server (returned: a stop waits for it), the watch on
/// the disk's free space, and the metrics file if one is configured.
fn spawn_tasks(
    config: &Config,
    context: &Arc<Context>,
    listener: server::Listener,
    max_connections: usize,
    disk_low: disk::Low,
    shutdown: &CancellationToken,
) -> tokio::task::JoinHandle<()> {
    let server_task = tokio::spawn(server::serve(
        listener,
        Arc::clone(context),
        max_connections,
        shutdown.clone(),
    ));
    tokio::spawn(disk::watch(
        config.state_dir.clone(),
        disk_low,
        shutdown.clone(),
    ));
    if let Some(path) = &config.metrics_file {
        let context = Arc::clone(context);
        tokio::spawn(metrics::write_file_every(
            Arc::new(move || context.render_metrics()),
            path.clone(),
            config.metrics_interval,
            shutdown.clone(),
        ));
    }
    server_task
}
