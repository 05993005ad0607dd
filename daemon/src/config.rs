//! Command-line options and the paths they resolve to.

use chime_proto::human::{DefaultPaths, parse_duration, parse_size};
use clap::Parser;
use std::path::PathBuf;
use std::time::Duration;

/// chimed: the chime job scheduler daemon.
///
/// Runs jobs now, at an instant or after a delay, keeps every job and timer in a redb database
/// under the state directory, and answers chimectl on a Unix socket. Normally started by systemd
/// (chimed.service); it can also run in a terminal.
#[derive(Debug, Parser)]
#[command(name = "chimed", version, max_term_width = 100)]
pub struct Args {
    /// Unix socket to listen on [default: /run/chime/chimed.sock as root, else
    /// $XDG_RUNTIME_DIR/chime/chimed.sock]
    #[arg(long, env = "CHIME_SOCKET", value_name = "PATH")]
    pub socket: Option<PathBuf>,

    /// Directory for the database and run logs [default: /var/lib/chime as root, else
    /// $XDG_STATE_HOME/chime]
    #[arg(long, env = "CHIME_STATE_DIR", value_name = "DIR")]
    pub state_dir: Option<PathBuf>,

    /// Permissions of the socket, in octal [default: 0660 with group chime as root, else 0600]
    #[arg(long, value_name = "MODE", value_parser = parse_mode)]
    pub socket_mode: Option<u32>,

    /// Most jobs running at once; due jobs wait for a free slot
    #[arg(long, default_value_t = 64, value_name = "N", value_parser = clap::value_parser!(u32).range(1..=100_000))]
    pub max_running: u32,

    /// How long running jobs get between SIGTERM and SIGKILL when chimed stops
    #[arg(long, default_value = "10s", value_name = "DURATION", value_parser = parse_duration)]
    pub stop_grace: Duration,

    /// Default time a run gets between SIGTERM and SIGKILL when it is ended (timeout, cancel,
    /// replace); jobs may set their own
    #[arg(long, default_value = "10s", value_name = "DURATION", value_parser = parse_duration)]
    pub kill_grace: Duration,

    /// Default most output kept per run (the tail is kept); jobs may set their own
    #[arg(long, default_value = "8MiB", value_name = "SIZE", value_parser = parse_size)]
    pub max_output: u64,

    /// Default most runs kept in a job's history; jobs may set their own
    #[arg(long, default_value_t = 100, value_name = "N", value_parser = clap::value_parser!(u32).range(1..=1_000_000))]
    pub keep_runs: u32,

    /// Default time a finished job is kept before it is removed; jobs may set their own
    #[arg(long, default_value = "7d", value_name = "DURATION", value_parser = parse_duration)]
    pub retention: Duration,

    /// Most client connections at once
    #[arg(long, default_value_t = 1024, value_name = "N", value_parser = clap::value_parser!(u32).range(1..=65_536))]
    pub max_connections: u32,

    /// Make reopening after a crash instant, at twice the cost of every commit (see the README)
    #[arg(long)]
    pub quick_repair: bool,

    /// Memory for the database page cache, in MiB
    #[arg(long, default_value_t = 64, value_name = "MIB", value_parser = clap::value_parser!(u32).range(1..=65_536))]
    pub cache_mib: u32,
}

fn parse_mode(text: &str) -> Result<u32, String> {
    let digits = text.strip_prefix("0o").unwrap_or(text);
    match u32::from_str_radix(digits, 8) {
        Ok(mode) if mode <= 0o777 => Ok(mode),
        _ => Err(format!(
            "{text:?} is not an octal mode such as 0600 or 0660"
        )),
    }
}

/// Options with every default filled in.
#[derive(Debug, Clone)]
pub struct Config {
    pub socket: PathBuf,
    pub socket_mode: u32,
    /// Group that owns the socket (the system `chime` group, when it exists and we are root).
    pub socket_group: Option<u32>,
    pub state_dir: PathBuf,
    pub max_running: usize,
    pub stop_grace: Duration,
    pub kill_grace: Duration,
    pub max_connections: usize,
    pub cache_bytes: usize,
    pub quick_repair: bool,
    /// Defaults for new jobs' execution policy.
    pub exec_defaults: crate::job::Exec,
}

impl Config {
    pub fn resolve(args: Args) -> Self {
        let uid = nix::unistd::getuid();
        let defaults = DefaultPaths::for_user(uid.as_raw(), |k| std::env::var(k).ok());
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
        Self {
            socket: absolute(args.socket.unwrap_or(defaults.socket)),
            socket_mode: args.socket_mode.unwrap_or(default_mode),
            socket_group,
            state_dir: absolute(args.state_dir.unwrap_or(defaults.state_dir)),
            max_running: args.max_running as usize,
            stop_grace: args.stop_grace,
            kill_grace: args.kill_grace,
            max_connections: args.max_connections as usize,
            cache_bytes: args.cache_mib as usize * 1024 * 1024,
            quick_repair: args.quick_repair,
            exec_defaults: crate::job::Exec {
                kill_grace_ms: args.kill_grace.as_millis() as u64,
                max_output: args.max_output,
                keep_runs: args.keep_runs,
                retention_ms: args.retention.as_millis().min(u128::from(u64::MAX)) as u64,
                ..crate::job::Exec::default()
            },
        }
    }

    pub fn database_path(&self) -> PathBuf {
        self.state_dir.join("chime.redb")
    }

    pub fn logs_dir(&self) -> PathBuf {
        self.state_dir.join("logs")
    }
}

fn absolute(path: PathBuf) -> PathBuf {
    std::path::absolute(&path).unwrap_or(path)
}
