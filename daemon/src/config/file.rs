//! `chimed.toml`: daemon settings, defaults for new jobs, and queue limits.
//!
//! ```toml
//! # Every key is optional; options on chimed's command line win.
//! socket = "/run/chime/chimed.sock"
//! socket_mode = "0660"
//! state_dir = "/var/lib/chime"
//! store = "redb"               # or a PostgreSQL database: see the README's "PostgreSQL store"
//! host_id = "web-1"            # this host's name on a PostgreSQL store (default: the host name)
//! fleet_lease = "15s"          # a fleet host silent this long is declared gone (2s to 10min)
//! max_running = 64
//! max_connections = 1024
//! stop_grace = "10s"
//! cache_mib = 64
//! quick_repair = false
//! event_retention = 100000
//! engine_priority = "realtime"  # or "normal": see crate::engine's priority.rs
//! metrics_file = "/var/lib/prometheus/node-exporter/chime.prom"
//! metrics_interval = "15s"
//! log = "auto"                 # auto, journal or stderr
//! pam_service = "chime"        # the PAM account stack checked before each run of a user's job
//!
//! [defaults]                   # for jobs that do not set their own
//! retries = 0
//! backoff = "10s:1h"
//! retry_on = ["exit", "killed", "timed_out", "lost", "interrupted"]
//! timeout = "2h"
//! kill_grace = "10s"
//! max_output = "8MiB"
//! keep_runs = 100
//! retention = "7d"
//! journal = false              # also send jobs' output lines to the journal
//!
//! memory_max = "4G"           # the resources each run may take (none by default); each
//! cpu_quota = "200%"           # needs its cgroup v2 controller on the host
//! tasks_max = 512
//! io_weight = 100
//! keep_children = false        # end what a run's main process leaves running
//!
//! [queues.backups]
//! parallel = 2
//! memory_max = "1G"            # and cpu_quota, tasks_max, io_weight: for the queue's jobs
//!                              # that set none of their own
//!
//! [limits]                     # per user; root and chimed's own user are exempt
//! connections_per_user = 64    # see crate::limits for each and its default
//! running_per_user = 16
//! jobs_per_user = 10000
//! output_per_user = "1GiB"
//! changes_per_second = 100
//! events_per_user = 25000
//! max_output = "64MiB"         # the most a job may ask for
//! keep_runs = 1000
//! retention = "90d"
//! min_interval = "1s"          # the shortest --every
//! queries_per_user = 4
//! journal_lines_per_second = 50
//! tasks_per_user = 4096        # processes and threads of all of a user's runs at once
//! handshake_timeout = "5s"
//! idle_timeout = "10m"
//! ```
//!
//! The file is read through [`super::trust`], like job files: it must be a regular file (not a
//! link) that only root or chimed's user could have written, in directories that only they
//! could change. A missing file is the defaults.
//!
//! A reload applies `[defaults]` (to jobs submitted afterwards and to declared jobs), `[queues]`
//! and `[limits]`; the other settings take effect when chimed restarts, and a reload says which
//! changed.

use super::defaults::{JobDefaults, RawDefaults, RawResources, job_settings};
use super::trust::{self, Kind};
use super::{FileError, LogTarget, Text};
use crate::cgroup::Controllers;
use crate::job::{Exec, QueueLimits};
use chime_proto::human::{parse_duration, parse_size};
use serde::Deserialize;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;
use toml::Spanned;

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct Raw {
    socket: Option<Spanned<String>>,
    socket_mode: Option<Spanned<String>>,
    state_dir: Option<Spanned<String>>,
    store: Option<Spanned<String>>,
    host_id: Option<Spanned<String>>,
    fleet_lease: Option<Spanned<String>>,
    max_running: Option<Spanned<i64>>,
    max_connections: Option<Spanned<i64>>,
    stop_grace: Option<Spanned<String>>,
    cache_mib: Option<Spanned<i64>>,
    quick_repair: Option<bool>,
    event_retention: Option<Spanned<i64>>,
    engine_priority: Option<crate::engine::EnginePriority>,
    metrics_file: Option<Spanned<String>>,
    metrics_interval: Option<Spanned<String>>,
    log: Option<LogTarget>,
    pam_service: Option<Spanned<String>>,
    defaults: Option<RawDefaults>,
    #[serde(default)]
    queues: BTreeMap<String, Spanned<RawQueue>>,
    limits: Option<RawLimits>,
}

/// `[limits]`, as written.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawLimits {
    connections_per_user: Option<Spanned<i64>>,
    handshake_timeout: Option<Spanned<String>>,
    idle_timeout: Option<Spanned<String>>,
    running_per_user: Option<Spanned<i64>>,
    jobs_per_user: Option<Spanned<i64>>,
    output_per_user: Option<Spanned<String>>,
    changes_per_second: Option<Spanned<i64>>,
    queries_per_user: Option<Spanned<i64>>,
    journal_lines_per_second: Option<Spanned<i64>>,
    events_per_user: Option<Spanned<i64>>,
    max_output: Option<Spanned<String>>,
    keep_runs: Option<Spanned<i64>>,
    retention: Option<Spanned<String>>,
    min_interval: Option<Spanned<String>>,
    tasks_per_user: Option<Spanned<i64>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawQueue {
    parallel: Option<Spanned<i64>>,
    memory_max: Option<Spanned<String>>,
    cpu_quota: Option<Spanned<String>>,
    tasks_max: Option<Spanned<i64>>,
    io_weight: Option<Spanned<i64>>,
}

/// The settings of `chimed.toml`, checked. `None`: the file does not say.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Settings {
    /// The file read, and whether it existed.
    pub path: PathBuf,
    pub exists: bool,
    pub socket: Option<PathBuf>,
    pub socket_mode: Option<u32>,
    pub state_dir: Option<PathBuf>,
    pub store: Option<super::StoreKind>,
    pub host_id: Option<String>,
    pub fleet_lease: Option<Duration>,
    pub max_running: Option<u32>,
    pub max_connections: Option<u32>,
    pub stop_grace: Option<Duration>,
    pub cache_mib: Option<u32>,
    pub quick_repair: Option<bool>,
    pub event_retention: Option<u64>,
    pub engine_priority: Option<crate::engine::EnginePriority>,
    pub metrics_file: Option<PathBuf>,
    pub metrics_interval: Option<Duration>,
    pub log: Option<LogTarget>,
    pub pam_service: Option<String>,
    pub defaults: JobDefaults,
    /// `[limits]`: what each user may take.
    pub limits: crate::limits::Settings,
    /// Each queue's limits.
    pub queues: BTreeMap<String, QueueLimits>,
}

impl Settings {
    /// Fills the job defaults this file sets into `exec`.
    pub fn apply_job_defaults(&self, exec: &mut Exec) {
        self.defaults.apply_as_defaults(exec);
    }

    /// The settings that differ from `other` and take effect only at a restart.
    pub fn restart_only_changes(&self, other: &Settings) -> Vec<String> {
        let mut out = Vec::new();
        macro_rules! check {
            ($($field:ident),*) => {$(
                if self.$field != other.$field {
                    out.push(stringify!($field).to_owned());
                }
            )*};
        }
        check!(
            socket,
            socket_mode,
            state_dir,
            store,
            host_id,
            fleet_lease,
            store,
            host_id,
            fleet_lease,
            max_running,
            max_connections,
            stop_grace,
            cache_mib,
            quick_repair,
            event_retention,
            engine_priority,
            metrics_file,
            metrics_interval,
            log,
            pam_service
        );
        out
    }
}

/// Reads and checks `path`, through checked directories ([`trust`]), without asking whether
/// this host can enforce its resource limits (chimed asks when it loads the configuration,
/// [`super::load`]). A missing file gives empty settings.
pub fn read(path: &Path, daemon_uid: u32) -> Result<Settings, FileError> {
    let dir = trust::open_dir(path.parent().unwrap_or(Path::new("/")), daemon_uid)?;
    read_in(dir.as_ref(), path, None)
}

/// Reads and checks the configuration file `path` in `dir`, the checked descriptor of its
/// directory (`None`: the directory does not exist). A missing file gives empty settings. With
/// `host`, resource limits its controllers cannot enforce are refused.
pub fn read_in(
    dir: Option<&trust::Dir>,
    path: &Path,
    host: Option<&Controllers>,
) -> Result<Settings, FileError> {
    let missing = || Settings {
        path: path.into(),
        ..Settings::default()
    };
    let (Some(dir), Some(name)) = (dir, path.file_name()) else {
        return Ok(missing());
    };
    match dir.read(name, Kind::Config)? {
        Some(text) => parse_on(path, &text, host),
        None => Ok(missing()),
    }
}

/// `[queues.NAME]`: each queue's limits.
fn queues(
    t: &Text<'_>,
    raw: &BTreeMap<String, Spanned<RawQueue>>,
    host: Option<&Controllers>,
) -> Result<BTreeMap<String, QueueLimits>, FileError> {
    let mut queues = BTreeMap::new();
    for (name, queue) in raw {
        crate::spec::check_queue_name(name)
            .map_err(|e| t.error(queue.span(), "queues", e.message))?;
        let queue = queue.get_ref();
        let parallel = queue
            .parallel
            .as_ref()
            .map(|p| ranged_u32(t, p, "parallel", 1, 100_000))
            .transpose()?;
        let limits = RawResources {
            memory_max: &queue.memory_max,
            cpu_quota: &queue.cpu_quota,
            tasks_max: &queue.tasks_max,
            io_weight: &queue.io_weight,
        }
        .check(t, host)?;
        queues.insert(name.clone(), QueueLimits { parallel, limits });
    }
    Ok(queues)
}

/// Checks the text of a configuration file, without asking whether this host can enforce its
/// resource limits ([`parse_on`] asks).
pub fn parse(path: &Path, text: &str) -> Result<Settings, FileError> {
    parse_on(path, text, None)
}

/// Checks the text of a configuration file; with `host` (the controllers of the cgroups chimed
/// makes for runs), a resource limit under `[defaults]` or `[queues.NAME]` that this host cannot
/// enforce is refused at its line, like any other value that is not valid.
pub fn parse_on(
    path: &Path,
    text: &str,
    host: Option<&Controllers>,
) -> Result<Settings, FileError> {
    let t = Text { path, text };
    let raw: Raw = toml::from_str(text).map_err(|e| t.toml_error(&e))?;
    let duration = |v: &Option<Spanned<String>>, field: &str| -> Result<_, FileError> {
        v.as_ref()
            .map(|s| parse_duration(s.get_ref()).map_err(|e| t.error(s.span(), field, e)))
            .transpose()
    };
    let path_value = |v: &Option<Spanned<String>>, field: &str| -> Result<_, FileError> {
        v.as_ref()
            .map(|s| {
                let p = PathBuf::from(s.get_ref());
                if p.is_absolute() {
                    Ok(p)
                } else {
                    Err(t.error(s.span(), field, "give an absolute path"))
                }
            })
            .transpose()
    };
    let socket_mode = raw
        .socket_mode
        .as_ref()
        .map(|s| super::parse_mode(s.get_ref()).map_err(|e| t.error(s.span(), "socket_mode", e)))
        .transpose()?;
    let queues = queues(&t, &raw.queues, host)?;
    Ok(Settings {
        path: path.into(),
        exists: true,
        socket: path_value(&raw.socket, "socket")?,
        socket_mode,
        state_dir: path_value(&raw.state_dir, "state_dir")?,
        store: raw
            .store
            .as_ref()
            .map(|s| super::parse_store(s.get_ref()).map_err(|e| t.error(s.span(), "store", e)))
            .transpose()?,
        host_id: raw
            .host_id
            .as_ref()
            .map(|s| super::parse_host_id(s.get_ref()).map_err(|e| t.error(s.span(), "host_id", e)))
            .transpose()?,
        fleet_lease: raw
            .fleet_lease
            .as_ref()
            .map(|s| {
                super::parse_lease(s.get_ref()).map_err(|e| t.error(s.span(), "fleet_lease", e))
            })
            .transpose()?,
        max_running: raw
            .max_running
            .as_ref()
            .map(|v| ranged_u32(&t, v, "max_running", 1, 100_000))
            .transpose()?,
        max_connections: raw
            .max_connections
            .as_ref()
            .map(|v| ranged_u32(&t, v, "max_connections", 1, 65_536))
            .transpose()?,
        stop_grace: duration(&raw.stop_grace, "stop_grace")?,
        cache_mib: raw
            .cache_mib
            .as_ref()
            .map(|v| ranged_u32(&t, v, "cache_mib", 1, 65_536))
            .transpose()?,
        quick_repair: raw.quick_repair,
        event_retention: raw
            .event_retention
            .as_ref()
            .map(|v| ranged(&t, v, "event_retention", 1000, 100_000_000))
            .transpose()?,
        engine_priority: raw.engine_priority,
        metrics_file: path_value(&raw.metrics_file, "metrics_file")?,
        metrics_interval: duration(&raw.metrics_interval, "metrics_interval")?
            .map(|d| {
                if d < Duration::from_secs(1) {
                    let span = raw.metrics_interval.as_ref().map_or(0..0, Spanned::span);
                    Err(t.error(span, "metrics_interval", "must be at least 1s"))
                } else {
                    Ok(d)
                }
            })
            .transpose()?,
        log: raw.log,
        pam_service: raw
            .pam_service
            .as_ref()
            .map(|s| {
                let name = s.get_ref();
                let fine = !name.is_empty()
                    && name.len() <= 64
                    && name
                        .chars()
                        .all(|c| c.is_ascii_alphanumeric() || "._-".contains(c))
                    && !name.starts_with('.');
                if fine {
                    Ok(name.clone())
                } else {
                    Err(t.error(
                        s.span(),
                        "pam_service",
                        "give the name of a file in /etc/pam.d, such as chime",
                    ))
                }
            })
            .transpose()?,
        defaults: job_settings(&t, &raw.defaults.unwrap_or_default(), host, None)?,
        queues,
        limits: limits(&t, &raw.limits.unwrap_or_default())?,
    })
}

/// Checks `[limits]`.
fn limits(t: &Text<'_>, raw: &RawLimits) -> Result<crate::limits::Settings, FileError> {
    let number = |v: &Option<Spanned<i64>>, field: &str, min: i64, max: i64| {
        v.as_ref()
            .map(|v| ranged(t, v, &format!("limits.{field}"), min, max))
            .transpose()
    };
    let duration = |v: &Option<Spanned<String>>, field: &str, min: Duration, max: Duration| {
        v.as_ref()
            .map(|s| {
                let key = format!("limits.{field}");
                let d = parse_duration(s.get_ref()).map_err(|e| t.error(s.span(), &key, e))?;
                if d < min || d > max {
                    return Err(t.error(
                        s.span(),
                        &key,
                        format!(
                            "give {} to {}",
                            chime_proto::human::format_duration(min),
                            chime_proto::human::format_duration(max)
                        ),
                    ));
                }
                Ok(d)
            })
            .transpose()
    };
    let size = |v: &Option<Spanned<String>>, field: &str, min: u64| {
        v.as_ref()
            .map(|s| {
                let key = format!("limits.{field}");
                let n = parse_size(s.get_ref()).map_err(|e| t.error(s.span(), &key, e))?;
                if n < min {
                    return Err(t.error(
                        s.span(),
                        &key,
                        format!("give at least {}", chime_proto::human::format_size(min)),
                    ));
                }
                Ok(n)
            })
            .transpose()
    };
    const DAY: Duration = Duration::from_secs(86_400);
    Ok(crate::limits::Settings {
        connections_per_user: number(&raw.connections_per_user, "connections_per_user", 1, 65_536)?
            .map(|n| n as u32),
        handshake_timeout: duration(
            &raw.handshake_timeout,
            "handshake_timeout",
            Duration::from_millis(100),
            Duration::from_secs(300),
        )?,
        idle_timeout: duration(
            &raw.idle_timeout,
            "idle_timeout",
            Duration::from_secs(1),
            7 * DAY,
        )?,
        running_per_user: number(&raw.running_per_user, "running_per_user", 1, 100_000)?
            .map(|n| n as u32),
        jobs_per_user: number(&raw.jobs_per_user, "jobs_per_user", 1, 100_000_000)?,
        output_per_user: size(&raw.output_per_user, "output_per_user", 1 << 20)?,
        changes_per_second: number(&raw.changes_per_second, "changes_per_second", 1, 1_000_000)?
            .map(|n| n as u32),
        queries_per_user: number(&raw.queries_per_user, "queries_per_user", 1, 10_000)?
            .map(|n| n as u32),
        journal_lines_per_second: number(
            &raw.journal_lines_per_second,
            "journal_lines_per_second",
            1,
            1_000_000,
        )?
        .map(|n| n as u32),
        events_per_user: number(&raw.events_per_user, "events_per_user", 100, 100_000_000)?,
        max_output: size(&raw.max_output, "max_output", 1 << 10)?,
        keep_runs: number(&raw.keep_runs, "keep_runs", 1, 1_000_000)?.map(|n| n as u32),
        retention: duration(
            &raw.retention,
            "retention",
            Duration::from_secs(60),
            3660 * DAY,
        )?,
        min_interval: duration(&raw.min_interval, "min_interval", Duration::ZERO, DAY)?,
        // Up to the kernel's most processes (PID_MAX_LIMIT); a user's run needs at least one.
        tasks_per_user: number(&raw.tasks_per_user, "tasks_per_user", 1, 4_194_304)?
            .map(|n| n as u32),
    })
}

/// An integer within `min..=max`, for a `u32` setting.
pub(super) fn ranged_u32(
    t: &Text<'_>,
    value: &Spanned<i64>,
    field: &str,
    min: u32,
    max: u32,
) -> Result<u32, FileError> {
    ranged(t, value, field, i64::from(min), i64::from(max)).map(|n| n as u32)
}

/// An integer within `min..=max`.
pub(super) fn ranged(
    t: &Text<'_>,
    value: &Spanned<i64>,
    field: &str,
    min: i64,
    max: i64,
) -> Result<u64, FileError> {
    let n = *value.get_ref();
    if n < min || n > max {
        return Err(t.error(
            value.span(),
            field,
            format!("{n} is out of range; give {min} to {max}"),
        ));
    }
    Ok(n as u64)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn err(text: &str) -> String {
        parse(Path::new("/etc/chime/chimed.toml"), text)
            .unwrap_err()
            .to_string()
    }

    #[test]
    fn a_full_file_parses() {
        let settings = parse(
            Path::new("/c.toml"),
            r#"
socket = "/run/x.sock"
socket_mode = "0660"
max_running = 8
stop_grace = "30s"
event_retention = 5000
engine_priority = "normal"
log = "journal"

[defaults]
retries = 2
backoff = "5s:1m"
retry_on = ["exit", "timed_out"]
journal = true

[queues.backups]
parallel = 2

[queues.free]
"#,
        )
        .unwrap();
        assert_eq!(settings.max_running, Some(8));
        assert_eq!(settings.socket_mode, Some(0o660));
        assert_eq!(settings.stop_grace, Some(Duration::from_secs(30)));
        assert_eq!(settings.log, Some(LogTarget::Journal));
        assert_eq!(
            settings.engine_priority,
            Some(crate::engine::EnginePriority::Normal)
        );
        assert_eq!(
            settings.queues.get("backups").map(|q| q.parallel),
            Some(Some(2))
        );
        assert_eq!(settings.queues.get("free"), Some(&QueueLimits::default()));
        let mut exec = Exec::default();
        settings.apply_job_defaults(&mut exec);
        assert_eq!(exec.retries, 2);
        assert_eq!((exec.backoff_base_ms, exec.backoff_max_ms), (5000, 60_000));
        assert!(exec.journal);
    }

    #[test]
    fn resource_limits_under_defaults_and_queues() {
        let text = r#"
[defaults]
memory_max = "512M"
keep_children = true

[queues.builds]
parallel = 2
cpu_quota = "200%"
tasks_max = 512
io_weight = 50

[limits]
tasks_per_user = 1000
"#;
        let every = Controllers {
            cpu: true,
            memory: true,
            pids: true,
            io: true,
        };
        let settings = parse_on(Path::new("/c.toml"), text, Some(&every)).unwrap();
        let builds = &settings.queues["builds"];
        assert_eq!(builds.parallel, Some(2));
        assert_eq!(builds.limits.cpu_quota_pct, Some(200));
        assert_eq!(builds.limits.tasks_max, Some(512));
        assert_eq!(builds.limits.io_weight, Some(50));
        assert_eq!(settings.limits.tasks_per_user, Some(1000));
        let mut exec = Exec::default();
        settings.apply_job_defaults(&mut exec);
        assert_eq!(exec.default_limits.memory_max, Some(512 << 20));
        assert!(exec.limits.is_empty(), "[defaults] are not the job's own");
        assert!(exec.keep_children);

        // A host without the controllers refuses them at their line; a read that does not ask
        // about the host (chimed's first look at its settings) does not.
        assert!(parse(Path::new("/c.toml"), text).is_ok());
        let none = parse_on(Path::new("/c.toml"), text, Some(&Controllers::default()))
            .unwrap_err()
            .to_string();
        assert_eq!(
            none,
            "/c.toml:8: cpu_quota: needs the cgroup v2 \"cpu\" controller, which chimed's \
             cgroup does not have on this host (it has none); see README \"Containment\""
        );
        let no_pids = Controllers {
            pids: false,
            ..every
        };
        let queue = parse_on(Path::new("/c.toml"), text, Some(&no_pids))
            .unwrap_err()
            .to_string();
        assert!(
            queue.starts_with("/c.toml:9: tasks_max: needs the cgroup v2 \"pids\" controller"),
            "{queue}"
        );
        assert!(queue.contains("(it has: cpu, io, memory)"), "{queue}");
    }

    #[test]
    fn resource_limits_out_of_range_name_their_key() {
        let memory = err("[defaults]\nmemory_max = \"100K\"\n");
        assert!(
            memory.starts_with("/etc/chime/chimed.toml:2: memory_max: 100KiB is out of range"),
            "{memory}"
        );
        let cpu = err("[queues.q]\ncpu_quota = \"50\"\n");
        assert!(
            cpu.starts_with("/etc/chime/chimed.toml:2: cpu_quota: \"50\" is not a CPU quota"),
            "{cpu}"
        );
        let io = err("[queues.q]\nio_weight = 70000\n");
        assert_eq!(
            io,
            "/etc/chime/chimed.toml:2: io_weight: 70000 is out of range; give 1 to 10000 (the kernel's default is 100)"
        );
        let tasks = err("[defaults]\ntasks_max = -1\n");
        assert_eq!(
            tasks,
            "/etc/chime/chimed.toml:2: tasks_max: -1 is negative; give 1 or more"
        );
        let per_user = err("[limits]\ntasks_per_user = 0\n");
        assert!(
            per_user.contains("limits.tasks_per_user: 0 is out of range; give 1 to 4194304"),
            "{per_user}"
        );
    }

    #[test]
    fn errors_name_the_file_line_and_field() {
        let duration = err("max_running = 8\nstop_grace = \"soon\"\n");
        assert!(
            duration
                .starts_with("/etc/chime/chimed.toml:2: stop_grace: \"soon\" is not a duration"),
            "{duration}"
        );
        let unknown = err("\nmax_runing = 3\n");
        assert!(
            unknown.starts_with("/etc/chime/chimed.toml:2: max_runing: unknown field `max_runing`"),
            "{unknown}"
        );
        let range = err("max_running = 0");
        assert_eq!(
            range,
            "/etc/chime/chimed.toml:1: max_running: 0 is out of range; give 1 to 100000"
        );
        let wrong_type = err("[defaults]\nretries = \"three\"\n");
        assert!(
            wrong_type.starts_with("/etc/chime/chimed.toml:2: retries: invalid type"),
            "{wrong_type}"
        );
        let relative = err("state_dir = \"var/lib\"");
        assert!(
            relative.ends_with("state_dir: give an absolute path"),
            "{relative}"
        );
        let syntax = err("max_running = \n");
        assert!(syntax.starts_with("/etc/chime/chimed.toml:1:"), "{syntax}");
        let queue = err("[queues.\"a b\"]\nparallel = 2\n");
        assert!(queue.contains("queues: queue name \"a b\""), "{queue}");
    }
}
