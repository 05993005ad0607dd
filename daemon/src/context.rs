//! The daemon's context: what every connection, request, watch and reload shares, built once at
//! start ([`crate::start`]) and held in an `Arc`.
//!
//! It owns nothing that acts: it holds the handles of what does (the [`Store`] for reads, the
//! engine's [`EngineHandle`] for changes, the runner's [`crate::runner::View`] for honest
//! states), the facts about this daemon ([`DaemonInfo`]), the per-user bookkeeping of the limits
//! (connections, pace, queries, submission checks), the broadcast of committed events, the
//! metrics, and what a reload may replace (the defaults for new jobs, the limits, the state of
//! the last reload). It sits below the request handlers, the connections, the server and the
//! reload, which all take it, and above the store, the engine and the runner, which never see it.

use crate::config::Settings;
use crate::engine::{EngineHandle, Stats};
use crate::store::Store;
use std::path::PathBuf;
use std::sync::atomic::AtomicU32;
use std::sync::{Arc, Mutex, RwLock};
use std::time::Instant;

/// What the last reload did, for `status`.
#[derive(Debug, Clone, Default)]
pub struct ReloadState {
    pub last_ms: Option<i64>,
    pub errors: u32,
    /// The settings in effect (to tell which changed settings need a restart).
    pub settings: Settings,
}

/// Facts about this daemon, for `status`.
#[derive(Debug)]
pub struct DaemonInfo {
    pub started: Instant,
    pub started_at_ms: i64,
    pub pid: u32,
    /// The uid chimed runs as.
    pub uid: u32,
    pub socket: PathBuf,
    pub state_dir: PathBuf,
    pub logs_dir: PathBuf,
    pub max_running: usize,
    /// The zone recurring jobs use when they name none, and its name for people.
    pub local_tz: jiff::tz::TimeZone,
    pub zone_name: String,
    /// The configuration file (the job directory is beside it).
    pub config_path: PathBuf,
    /// chimed got its socket from systemd.
    pub socket_activated: bool,
    /// This executable, for the helpers that act as another user ([`crate::as_user`]).
    pub helper: PathBuf,
    /// The account checks before each run of another user's job, in words.
    pub account_check: String,
    /// How runs are contained (`status`).
    pub containment: chime_proto::ContainmentInfo,
    /// The open files limit, and the connections it leaves room for.
    pub open_files: u64,
    pub max_connections: usize,
    /// Most events kept in the log (for the per-user share).
    pub event_retention: u64,
}

impl DaemonInfo {
    /// The job directory: `jobs.d` beside the configuration file.
    pub fn jobs_dir(&self) -> PathBuf {
        crate::config::jobs_dir(&self.config_path)
    }
}

/// What every connection task shares (see the module docs).
#[derive(Debug)]
pub struct Context {
    pub store: Arc<Store>,
    pub engine: EngineHandle,
    /// Damaged records found (by the scrub after the start, or by reads).
    pub damage: crate::store::DamageSeen,
    /// Which opened runs wait in the runner for a slot (for honest states and counts).
    pub runs: crate::runner::View,
    pub stats: Arc<Stats>,
    pub info: DaemonInfo,
    pub connections: AtomicU32,
    /// Open connections per uid (root's are not counted: root always gets in).
    pub connections_by_uid: Mutex<std::collections::HashMap<u32, u32>>,
    /// What each user may take, replaced by a reload.
    pub limits: crate::limits::LimitsCell,
    /// Paces each user's changes (`changes_per_second`).
    pub pace: crate::limits::Pace,
    /// Submission checks made as users that passed lately.
    pub checked: crate::as_user::check::Checked,
    /// Queries each user has being answered (`queries_per_user`).
    pub queries: crate::limits::Turns,
    /// Committed events, for watchers (see [`crate::watch`]).
    pub events: tokio::sync::broadcast::Sender<Arc<chime_proto::EventRecord>>,
    pub metrics: Arc<crate::metrics::Metrics>,
    /// Defaults for new jobs' execution policy (a reload may change them).
    pub exec_defaults: RwLock<crate::job::Exec>,
    /// What the last reload did, for `status`.
    pub reload: Mutex<ReloadState>,
    /// One reload at a time.
    pub reload_lock: tokio::sync::Mutex<()>,
    /// The command line, whose options win over the configuration file at every reload.
    pub args: crate::config::Args,
    /// The controllers the runs' cgroups have: a limit whose controller is missing is refused.
    pub controllers: crate::cgroup::Controllers,
}

impl Context {
    /// The defaults a new job gets for what it does not set.
    pub fn exec_defaults(&self) -> crate::job::Exec {
        self.exec_defaults
            .read()
            .map(|d| d.clone())
            .unwrap_or_default()
    }

    pub fn reload_state(&self) -> ReloadState {
        self.reload.lock().map(|r| r.clone()).unwrap_or_default()
    }

    /// The metrics in the Prometheus text format (see [`crate::metrics`]). Blocks (reads the
    /// database).
    pub fn render_metrics(&self) -> Result<String, crate::store::StoreError> {
        let readings = crate::metrics::Readings {
            running: self
                .stats
                .running
                .lock()
                .map(|r| r.clone())
                .unwrap_or_default(),
            connections: self.connections.load(std::sync::atomic::Ordering::Relaxed),
            watchers: self.events.receiver_count(),
            uptime: self.info.started.elapsed(),
            state_dir: self.info.state_dir.clone(),
        };
        self.metrics.render(&self.store, &readings)
    }

    /// The one line `systemctl status chimed` shows: jobs by state, runs in progress, pauses.
    pub fn status_line(&self) -> String {
        let Ok(reader) = self.store.read() else {
            return "running".into();
        };
        let counts = reader.counts().unwrap_or_default();
        let count = |state: chime_proto::JobState| {
            counts
                .iter()
                .find(|(s, _)| *s == state)
                .map_or(0, |(_, n)| *n)
        };
        let running = self
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
}
