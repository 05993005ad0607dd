//! Configuration: command-line options, the configuration file and the job files.
//!
//! Three layers decide each setting, the first that says something wins: an option on the
//! command line, the configuration file (`/etc/chime/chimed.toml`, for a user
//! `$XDG_CONFIG_HOME/chime/chimed.toml`, or `--config PATH`), and the defaults built in. A
//! missing configuration file is not an error: chimed runs on its defaults.
//!
//! The default paths follow one rule, [`DefaultPaths`], which chimectl shares through
//! [`defaults`]. A user without a private runtime directory has no default socket: chimed then
//! refuses to start unless given one ([`MissingPath`]), rather than listen where another user
//! could have been first.
//!
//! - [`file`] reads `chimed.toml`: daemon settings, defaults for new jobs, queue limits.
//! - [`jobs`] reads the job files in `jobs.d/` beside it: one declared job per `NAME.toml`.
//! - [`trust`] is the only way either is read: since these files decide what runs as whom,
//!   a file is read only when it and every directory from `/` down to it could have been written
//!   by no one but root and chimed's user (sticky directories such as `/tmp` excepted above the
//!   files), and the checks are made with `fstat` on the very descriptors the text is read
//!   from: directories are walked by descriptor with `O_NOFOLLOW`, files are opened once with
//!   `O_NOFOLLOW | O_NONBLOCK` relative to their directory's descriptor. A symbolic link, a FIFO,
//!   a file or directory others may write is refused; a missing file or directory is not.
//! - [`load`] opens the configuration's directory once, reads `chimed.toml` and then `jobs.d`
//!   relative to it, checks every file, and reports each problem as `PATH:LINE: field: what is
//!   wrong` ([`FileError`]; line 0 for a whole file or directory). A refused `jobs.d` is one
//!   error naming the directory, and keeps the jobs its files declared before.
//!
//! Everything here only reads and checks; the daemon applies the result at start and on reload
//! ([`crate::reload`]), and `chimectl config check` runs the same code without applying, so the
//! three agree.

pub mod check;
pub mod defaults;
pub mod file;
pub mod jobs;
pub mod trust;

use chime_proto::human::{DefaultPaths, NoDefault, parse_duration, parse_size};
use clap::{Parser, ValueEnum};
use std::path::{Path, PathBuf};
use std::time::Duration;

pub use file::Settings;
pub use jobs::Declared;

/// The chime job scheduler daemon
///
/// Runs jobs now, at an instant, after a delay or on a schedule, keeps every job and timer in a
/// redb database under the state directory, and answers chimectl on a Unix socket. Normally
/// started by systemd (chimed.service); it can also run in a terminal. Options given here win
/// over the configuration file, which wins over the defaults shown.
#[derive(Debug, Parser)]
#[command(name = "chimed", version, max_term_width = 100)]
pub struct Args {
    /// The configuration file [default: /etc/chime/chimed.toml as root, else
    /// $XDG_CONFIG_HOME/chime/chimed.toml or ~/.config/chime/chimed.toml]; job files are read
    /// from jobs.d/ beside it
    #[arg(long, env = "CHIME_CONFIG", value_name = "PATH")]
    pub config: Option<PathBuf>,

    /// Unix socket to listen on (unless systemd passes one) [default: /run/chime/chimed.sock as
    /// root, else $XDG_RUNTIME_DIR/chime/chimed.sock or /run/user/UID/chime/chimed.sock; without
    /// either directory a user must give one]
    #[arg(long, env = "CHIME_SOCKET", value_name = "PATH")]
    pub socket: Option<PathBuf>,

    /// Directory for the database and run logs [default: /var/lib/chime as root, else
    /// $XDG_STATE_HOME/chime or ~/.local/state/chime]
    #[arg(long, env = "CHIME_STATE_DIR", value_name = "DIR")]
    pub state_dir: Option<PathBuf>,

    /// Where chimed keeps its jobs: `redb` (a file in the state directory), or a PostgreSQL
    /// database (`postgresql://USER@/DB?host=/run/postgresql`, or `host=... dbname=...`): see the
    /// README's "PostgreSQL store". Give no password here: use peer or certificate
    /// authentication [default: redb]
    #[arg(long, env = "CHIME_STORE", value_name = "redb|URL", value_parser = parse_store)]
    pub store: Option<StoreKind>,

    /// How long a fleet host's lease lasts: a host not heard from for this long is declared
    /// gone and its runs are closed as lost, and one stopped this long may write nothing more
    /// (PostgreSQL store; 2s to 10min) [default: 15s]
    #[arg(long, value_name = "DURATION", value_parser = parse_lease)]
    pub fleet_lease: Option<Duration>,

    /// This host's name among those sharing a PostgreSQL store [default: the host name]
    #[arg(long, env = "CHIME_HOST_ID", value_name = "NAME", value_parser = parse_host_id)]
    pub host_id: Option<String>,

    /// Permissions of the socket, in octal [default: 0660 with group chime as root, else 0600]
    #[arg(long, value_name = "MODE", value_parser = parse_mode)]
    pub socket_mode: Option<u32>,

    /// Most jobs running at once; due jobs wait for a free slot [default: 64]
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u32).range(1..=100_000))]
    pub max_running: Option<u32>,

    /// How long running jobs get between SIGTERM and SIGKILL when chimed stops [default: 10s]
    #[arg(long, value_name = "DURATION", value_parser = parse_duration)]
    pub stop_grace: Option<Duration>,

    /// Default time a run gets between SIGTERM and SIGKILL when it is ended (timeout, cancel,
    /// replace); jobs may set their own [default: 10s]
    #[arg(long, value_name = "DURATION", value_parser = parse_duration)]
    pub kill_grace: Option<Duration>,

    /// Default most output kept per run (the tail is kept); jobs may set their own [default: 8MiB]
    #[arg(long, value_name = "SIZE", value_parser = parse_size)]
    pub max_output: Option<u64>,

    /// Default most runs kept in a job's history; jobs may set their own [default: 100]
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u32).range(1..=1_000_000))]
    pub keep_runs: Option<u32>,

    /// Default time a finished job is kept before it is removed; jobs may set their own
    /// [default: 7d]
    #[arg(long, value_name = "DURATION", value_parser = parse_duration)]
    pub retention: Option<Duration>,

    /// Most client connections at once [default: 1024]
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u32).range(1..=65_536))]
    pub max_connections: Option<u32>,

    /// Most events kept in the event log (`chimectl watch --since`) [default: 100000]
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u64).range(1000..=100_000_000))]
    pub event_retention: Option<u64>,

    /// The engine thread's CPU scheduling: realtime (it waits for due times and fires them
    /// under SCHED_RR at priority 1, so that timers fire on time while the CPUs are busy; needs
    /// root or RLIMIT_RTPRIO) or normal [default: realtime]
    #[arg(long, value_enum, value_name = "PRIORITY")]
    pub engine_priority: Option<crate::engine::EnginePriority>,

    /// Rewrite this file with the metrics periodically (for node_exporter's textfile collector)
    #[arg(long, value_name = "PATH")]
    pub metrics_file: Option<PathBuf>,

    /// How often --metrics-file is rewritten [default: 15s]
    #[arg(long, value_name = "DURATION", value_parser = parse_duration)]
    pub metrics_interval: Option<Duration>,

    /// Where chimed logs: the journal (with JOB_ID, RUN_ID, ... fields), readable stderr, or
    /// auto: the journal when started by systemd with its output connected to it
    #[arg(long, value_enum, value_name = "WHERE")]
    pub log: Option<LogTarget>,

    /// Make reopening after a crash instant, at twice the cost of every commit (see the README)
    #[arg(long)]
    pub quick_repair: bool,

    /// Run jobs as process groups, without a cgroup per run: no limits, no accounting, and what
    /// a job starts in a session of its own can outlive its run (see the README's Containment)
    #[arg(long, env = "CHIME_NO_CGROUPS")]
    pub no_cgroups: bool,

    /// Memory for the database page cache, in MiB [default: 64]
    #[arg(long, value_name = "MIB", value_parser = clap::value_parser!(u32).range(1..=65_536))]
    pub cache_mib: Option<u32>,

    /// Check the configuration file (or a job file, or a jobs.d directory, if given) and every
    /// job file exactly as chimed would read them, print what is wrong, and exit (0: all fine,
    /// 1: problems), without starting, as `nginx -t` and `sshd -t`. Check as the user whose
    /// chimed reads the files: root's rules are not a user's
    #[arg(long)]
    pub check_config: bool,

    /// With --check-config: what to check [default: the configuration file]
    #[arg(value_name = "PATH", requires = "check_config")]
    pub check_path: Option<PathBuf>,

    /// With --check-config: the report as JSON ({"ok", "checked", "errors", "warnings"})
    #[arg(long, requires = "check_config")]
    pub json: bool,

    /// Print chimed's manual page (roff, section 8) and exit; systemd/install.sh installs it
    #[arg(long, hide = true)]
    pub man: bool,

    /// Test only: SIGUSR2 hangs the engine, so that tests can see the watchdog restart chimed
    #[arg(long, hide = true)]
    pub test_wedge: bool,
}

/// Where logs go.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogTarget {
    Auto,
    Journal,
    Stderr,
}

/// The host name, made a valid host id (`localhost` if it has none).
fn default_host_id() -> String {
    let name = nix::unistd::gethostname()
        .ok()
        .and_then(|n| n.into_string().ok())
        .unwrap_or_default();
    let name: String = name
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || "._-".contains(c) {
                c
            } else {
                '-'
            }
        })
        .take(64)
        .collect();
    parse_host_id(&name).unwrap_or_else(|_| "localhost".into())
}

/// Where the jobs are kept.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum StoreKind {
    /// redb, in the state directory.
    #[default]
    Redb,
    /// A PostgreSQL database: its connection string, as given.
    Postgres(String),
}

/// `redb`, or a PostgreSQL connection string the client library accepts.
pub fn parse_store(text: &str) -> Result<StoreKind, String> {
    if text == "redb" {
        return Ok(StoreKind::Redb);
    }
    if text.len() > 4096 {
        return Err("a store's connection string is at most 4096 bytes".into());
    }
    let url = text.starts_with("postgresql://") || text.starts_with("postgres://");
    if !url && !text.contains('=') {
        return Err(format!(
            "{text:?} is neither `redb` nor a PostgreSQL connection string \
             (postgresql://USER@/DB?host=/run/postgresql, or host=/run/postgresql dbname=DB)"
        ));
    }
    match text.parse::<postgres::Config>() {
        Ok(_) => Ok(StoreKind::Postgres(text.to_owned())),
        Err(err) => Err(format!(
            "not a PostgreSQL connection string ({err}): give postgresql://USER@/DB?host=/run/postgresql \
             or host=/run/postgresql dbname=DB"
        )),
    }
}

/// A fleet lease: a duration from 2 s to 10 min.
pub fn parse_lease(text: &str) -> Result<Duration, String> {
    let lease = parse_duration(text)?;
    if (Duration::from_secs(2)..=Duration::from_secs(600)).contains(&lease) {
        Ok(lease)
    } else {
        Err(format!("{text:?}: a fleet lease is 2s to 10min"))
    }
}

/// A host's name in a fleet: 1 to 64 of `A-Z a-z 0-9 . _ -`, not starting with `.` or `-`.
pub fn parse_host_id(text: &str) -> Result<String, String> {
    let fine = !text.is_empty()
        && text.len() <= 64
        && text
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "._-".contains(c))
        && !text.starts_with(['.', '-']);
    if fine {
        Ok(text.to_owned())
    } else {
        Err(format!(
            "{text:?} is not a host id: 1 to 64 letters, digits, `.`, `_` or `-`, not starting with `.` or `-`"
        ))
    }
}

pub fn parse_mode(text: &str) -> Result<u32, String> {
    let digits = text.strip_prefix("0o").unwrap_or(text);
    match u32::from_str_radix(digits, 8) {
        Ok(mode) if mode <= 0o777 => Ok(mode),
        _ => Err(format!(
            "{text:?} is not an octal mode such as 0600 or 0660"
        )),
    }
}

/// A problem in a configuration or job file, where it is and what to do about it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{}:{line}: {field}{}{message}", path.display(), if field.is_empty() { "" } else { ": " })]
pub struct FileError {
    pub path: PathBuf,
    /// 1-based; 0 when the problem is the file as a whole.
    pub line: usize,
    /// The key at fault, or empty.
    pub field: String,
    pub message: String,
}

impl FileError {
    pub fn whole(path: &Path, message: impl Into<String>) -> Self {
        Self {
            path: path.into(),
            line: 0,
            field: String::new(),
            message: message.into(),
        }
    }
}

/// A file's text, to turn byte offsets into line numbers for messages.
#[derive(Debug, Clone, Copy)]
pub struct Text<'a> {
    pub path: &'a Path,
    pub text: &'a str,
}

impl Text<'_> {
    /// The 1-based line of byte `offset`.
    pub fn line_of(&self, offset: usize) -> usize {
        let end = offset.min(self.text.len());
        self.text.as_bytes()[..end]
            .iter()
            .filter(|b| **b == b'\n')
            .count()
            + 1
    }

    /// An error about the value at `span`, in key `field`.
    pub fn error(
        &self,
        span: std::ops::Range<usize>,
        field: &str,
        message: impl Into<String>,
    ) -> FileError {
        FileError {
            path: self.path.into(),
            line: self.line_of(span.start),
            field: field.into(),
            message: message.into(),
        }
    }

    /// A broken rule of a job spec ([`crate::spec`]), at the line of the value it is about
    /// (`span`; the file as a whole when the value is not in the file, as a default).
    pub fn spec_error(
        &self,
        span: Option<std::ops::Range<usize>>,
        e: crate::spec::SpecError,
    ) -> FileError {
        FileError {
            path: self.path.into(),
            line: span.map_or(0, |span| self.line_of(span.start)),
            field: e.field.key().into(),
            message: e.message,
        }
    }

    /// A TOML syntax or type error, with the key named when it can be found on its line.
    pub fn toml_error(&self, err: &toml::de::Error) -> FileError {
        let line = err.span().map_or(0, |span| self.line_of(span.start));
        let field = if line == 0 {
            String::new()
        } else {
            self.text
                .lines()
                .nth(line - 1)
                .and_then(|l| l.split_once('='))
                .map(|(key, _)| key.trim().trim_matches('"').to_owned())
                .filter(|key| {
                    !key.is_empty()
                        && key
                            .chars()
                            .all(|c| c.is_ascii_alphanumeric() || "_-.".contains(c))
                })
                .unwrap_or_default()
        };
        FileError {
            path: self.path.into(),
            line,
            field,
            message: err.message().trim().to_owned(),
        }
    }
}

/// Most bytes a configuration or job file may have.
pub const FILE_MAX: u64 = 1024 * 1024;

/// What chimed needs to know to read job files.
#[derive(Debug, Clone)]
pub struct LoadContext {
    /// chimed's uid: root may declare jobs for any user, anyone else only for themselves.
    pub daemon_uid: u32,
    /// The zone of times and cron schedules that name none.
    pub local_tz: jiff::tz::TimeZone,
    /// Defaults for job settings the files leave out (command line, then chimed.toml).
    pub exec_defaults: crate::job::Exec,
    /// The controllers of the cgroups chimed makes for runs: a resource limit (in `[defaults]`,
    /// `[queues.NAME]` or a job file) whose controller is missing is refused.
    pub controllers: crate::cgroup::Controllers,
    /// The limits declared jobs are held to as everyone's are (`min_interval`): [`load`] sets
    /// them from the file it reads; elsewhere the defaults.
    pub limits: crate::limits::Limits,
}

impl LoadContext {
    /// This context under the configuration file `config`, whose `settings` are read: job files
    /// get its `[defaults]` (below `args`, the command line's) and are held to its `[limits]`.
    fn under(&self, settings: &Settings, config: &Path, args: Option<&Args>) -> Self {
        Self {
            exec_defaults: job_defaults(self.exec_defaults.clone(), settings, args),
            limits: crate::limits::Limits::resolve(
                &settings.limits,
                config.to_path_buf(),
                max_running(args, settings),
                event_retention(args, settings),
                self.daemon_uid,
            ),
            ..self.clone()
        }
    }

    /// This context for the job files of `jobs_dir` checked on their own (`chimectl config
    /// check FILE`): under the `chimed.toml` beside that directory when there is one, as chimed
    /// reading that configuration would hold them.
    pub fn for_jobs_in(&self, jobs_dir: &Path) -> Result<Self, FileError> {
        let parent = jobs_dir.parent().unwrap_or_else(|| Path::new("/"));
        let config = parent.join("chimed.toml");
        if !config.exists() {
            return Ok(self.clone());
        }
        let dir = trust::open_dir(parent, self.daemon_uid)?;
        let settings = file::read_in(dir.as_ref(), &config, Some(&self.controllers))?;
        Ok(self.under(&settings, &config, None))
    }
}

/// Everything read from the configuration file and the job directory.
#[derive(Debug, Clone)]
pub struct Loaded {
    pub settings: Settings,
    /// Defaults for job settings: the built-in ones, under `[defaults]`, under the command line.
    pub job_defaults: crate::job::Exec,
    pub jobs: Vec<Declared>,
    /// Job files (or `jobs.d` as a whole) refused; their jobs stay as they were.
    pub errors: Vec<FileError>,
    /// The paths of the refused job files, or of `jobs.d` when it was refused as a whole.
    pub refused: Vec<String>,
}

/// The job directory of a configuration file: `jobs.d` beside it.
pub fn jobs_dir(config: &Path) -> PathBuf {
    config
        .parent()
        .unwrap_or_else(|| Path::new("/"))
        .join("jobs.d")
}

/// Reads and checks the configuration file and every job file, through one checked descriptor
/// of the configuration's directory ([`trust`]). An error in the configuration file itself, or
/// in the directories that lead to it, is returned as `Err` (nothing can be applied); errors in
/// job files, or in `jobs.d` itself, are collected in [`Loaded::errors`]. `args` are the command
/// line's options, which win over the file.
pub fn load(config: &Path, args: Option<&Args>, ctx: &LoadContext) -> Result<Loaded, FileError> {
    let dir = trust::open_dir(
        config.parent().unwrap_or_else(|| Path::new("/")),
        ctx.daemon_uid,
    )?;
    let settings = file::read_in(dir.as_ref(), config, Some(&ctx.controllers))?;
    let ctx = ctx.under(&settings, config, args);
    let (jobs, errors) = match dir.as_ref().map(|d| d.subdir("jobs.d")).transpose() {
        Ok(Some(Some(jobs_dir))) => jobs::read_in(&jobs_dir, &ctx),
        Ok(_) => (Vec::new(), Vec::new()),
        Err(err) => (Vec::new(), vec![err]),
    };
    let refused = errors
        .iter()
        .map(|e| e.path.display().to_string())
        .collect();
    Ok(Loaded {
        job_defaults: ctx.exec_defaults,
        settings,
        jobs,
        errors,
        refused,
    })
}

/// `--max-running`, over the configuration file, over the default (64).
pub fn max_running(args: Option<&Args>, file: &Settings) -> usize {
    args.and_then(|a| a.max_running)
        .or(file.max_running)
        .unwrap_or(64) as usize
}

/// `--event-retention`, over the configuration file, over the default (100,000).
pub fn event_retention(args: Option<&Args>, file: &Settings) -> u64 {
    args.and_then(|a| a.event_retention)
        .or(file.event_retention)
        .unwrap_or(100_000)
}

/// A path chimed needs that neither the command line, the configuration file nor the defaults
/// give (see [`DefaultPaths`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum MissingPath {
    #[error(
        "no socket given and no default one: {0}; set XDG_RUNTIME_DIR (a login session sets it), \
         or give --socket PATH in a directory only you may write"
    )]
    Socket(NoDefault),
    #[error("no state directory given and no default one: {0}; set HOME, or give --state-dir DIR")]
    StateDir(NoDefault),
    #[error("no configuration file given and no default one: {0}; set HOME, or give --config PATH")]
    Config(NoDefault),
}

/// Options with every default filled in.
#[derive(Debug, Clone)]
pub struct Config {
    pub config_path: PathBuf,
    /// `Err` when none was given and the user has none by default; chimed may still run on a
    /// socket systemd passes, and refuses to start otherwise.
    pub socket: Result<PathBuf, MissingPath>,
    pub socket_mode: u32,
    /// Group that owns the socket (the system `chime` group, when it exists and we are root).
    pub socket_group: Option<u32>,
    pub state_dir: PathBuf,
    /// Where the jobs are kept.
    pub store: StoreKind,
    /// This host's name in a fleet (PostgreSQL store).
    pub host_id: String,
    /// How long a fleet host's lease lasts.
    pub fleet_lease: Duration,
    pub max_running: usize,
    pub stop_grace: Duration,
    pub max_connections: usize,
    pub cache_bytes: usize,
    pub quick_repair: bool,
    /// The engine thread's CPU scheduling.
    pub engine_priority: crate::engine::EnginePriority,
    /// `--no-cgroups`: runs are process groups only.
    pub no_cgroups: bool,
    pub event_retention: u64,
    pub metrics_file: Option<PathBuf>,
    pub metrics_interval: Duration,
    pub test_wedge: bool,
    /// The PAM service whose account stack is checked before each run of a user's job.
    pub pam_service: String,
    /// What each user may take (`[limits]`), shared by everything that enforces them and
    /// replaced by a reload.
    pub limits_cell: crate::limits::LimitsCell,
    /// Defaults for new jobs' execution policy.
    pub exec_defaults: crate::job::Exec,
}

/// The configuration file a daemon with these options reads.
pub fn config_path(args: &Args) -> Result<PathBuf, MissingPath> {
    match &args.config {
        Some(path) => Ok(absolute(path.clone())),
        None => defaults().config.map(absolute).map_err(MissingPath::Config),
    }
}

/// The default paths of this process's user ([`DefaultPaths::of_this_user`]).
pub fn defaults() -> DefaultPaths {
    DefaultPaths::of_this_user()
}

/// `base` with the configuration file's `[defaults]` over it, and the command line's options
/// over those.
pub fn job_defaults(
    mut base: crate::job::Exec,
    file: &Settings,
    args: Option<&Args>,
) -> crate::job::Exec {
    file.apply_job_defaults(&mut base);
    if let Some(args) = args {
        apply_exec_args(args, &mut base);
    }
    base
}

/// Overrides job defaults with the options given on the command line.
fn apply_exec_args(args: &Args, exec: &mut crate::job::Exec) {
    if let Some(grace) = args.kill_grace {
        exec.kill_grace_ms = grace.as_millis() as u64;
    }
    if let Some(max) = args.max_output {
        exec.max_output = max;
    }
    if let Some(keep) = args.keep_runs {
        exec.keep_runs = keep;
    }
    if let Some(retention) = args.retention {
        exec.retention_ms = retention.as_millis().min(u128::from(u64::MAX)) as u64;
    }
}

impl Config {
    /// The options, over the configuration file's settings, over the defaults. Fails when a
    /// needed path has no value at all; a missing socket is only reported in
    /// [`Config::socket`] (systemd may pass one).
    pub fn resolve(args: &Args, file: &Settings) -> Result<Self, MissingPath> {
        let uid = nix::unistd::getuid();
        let defaults = defaults();
        let root = uid.is_root();
        let socket_group = if root {
            nix::unistd::Group::from_name("chime")
                .ok()
                .flatten()
                .map(|g| g.gid.as_raw())
        } else {
            None
        };
        let default_mode = if socket_group.is_some() { 0o660 } else { 0o600 };
        let exec_defaults = job_defaults(crate::job::Exec::default(), file, Some(args));
        let config_path = config_path(args)?;
        let max_running = max_running(Some(args), file);
        let event_retention = event_retention(Some(args), file);
        Ok(Self {
            limits_cell: crate::limits::LimitsCell::new(crate::limits::Limits::resolve(
                &file.limits,
                config_path.clone(),
                max_running,
                event_retention,
                uid.as_raw(),
            )),
            config_path,
            socket: match args.socket.clone().or_else(|| file.socket.clone()) {
                Some(path) => Ok(path),
                None => defaults.socket.map_err(MissingPath::Socket),
            }
            .map(absolute),
            socket_mode: args
                .socket_mode
                .or(file.socket_mode)
                .unwrap_or(default_mode),
            socket_group,
            state_dir: absolute(
                match args.state_dir.clone().or_else(|| file.state_dir.clone()) {
                    Some(path) => path,
                    None => defaults.state_dir.map_err(MissingPath::StateDir)?,
                },
            ),
            store: args
                .store
                .clone()
                .or_else(|| file.store.clone())
                .unwrap_or_default(),
            host_id: match args.host_id.clone().or_else(|| file.host_id.clone()) {
                Some(id) => id,
                None => default_host_id(),
            },
            fleet_lease: args
                .fleet_lease
                .or(file.fleet_lease)
                .unwrap_or(crate::store::FLEET_LEASE),
            max_running,
            stop_grace: args
                .stop_grace
                .or(file.stop_grace)
                .unwrap_or(Duration::from_secs(10)),
            max_connections: args
                .max_connections
                .or(file.max_connections)
                .unwrap_or(1024) as usize,
            cache_bytes: args.cache_mib.or(file.cache_mib).unwrap_or(64) as usize * 1024 * 1024,
            quick_repair: args.quick_repair || file.quick_repair.unwrap_or(false),
            engine_priority: args
                .engine_priority
                .or(file.engine_priority)
                .unwrap_or_default(),
            event_retention,
            metrics_file: args
                .metrics_file
                .clone()
                .or_else(|| file.metrics_file.clone())
                .map(absolute),
            metrics_interval: args
                .metrics_interval
                .or(file.metrics_interval)
                .unwrap_or(Duration::from_secs(15)),
            test_wedge: args.test_wedge,
            no_cgroups: args.no_cgroups,
            pam_service: file.pam_service.clone().unwrap_or_else(|| "chime".into()),
            exec_defaults,
        })
    }

    /// Where the jobs are kept, for people: the redb file, or the PostgreSQL database (without
    /// a password).
    pub fn store_shown(&self) -> String {
        match &self.store {
            StoreKind::Redb => self.database_path().display().to_string(),
            StoreKind::Postgres(config) => crate::store::shown_config(config),
        }
    }

    pub fn database_path(&self) -> PathBuf {
        self.state_dir.join("chime.redb")
    }

    pub fn logs_dir(&self) -> PathBuf {
        self.state_dir.join("logs")
    }

    pub fn jobs_dir(&self) -> PathBuf {
        jobs_dir(&self.config_path)
    }
}

fn absolute(path: PathBuf) -> PathBuf {
    std::path::absolute(&path).unwrap_or(path)
}
