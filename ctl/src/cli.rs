//! The command line. Doc comments here are the help text.

use clap::{Args, Parser, Subcommand};
use std::path::PathBuf;

/// chimectl: talk to chimed, the chime job scheduler.
///
/// Exit status: 0 on success, 1 when the daemon refused the request or could not be reached,
/// 2 for a usage error.
#[derive(Debug, Parser)]
#[command(
    name = "chimectl",
    version,
    max_term_width = 100,
    propagate_version = true
)]
pub struct Cli {
    /// The daemon's socket [default: /run/chime/chimed.sock as root, else
    /// $XDG_RUNTIME_DIR/chime/chimed.sock]
    #[arg(long, global = true, env = "CHIME_SOCKET", value_name = "PATH")]
    pub socket: Option<PathBuf>,

    /// Print JSON for scripts instead of text for people (shapes: README, "Scripting with --json")
    #[arg(long, global = true)]
    pub json: bool,

    #[command(subcommand)]
    pub command: Cmd,
}

#[derive(Debug, Subcommand)]
pub enum Cmd {
    /// Submit a job; prints its id
    ///
    /// Examples:
    ///   chimectl add -- /usr/bin/backup --full
    ///   chimectl add --in 90s -- make -C /srv/site deploy
    ///   chimectl add --at '2026-12-24 18:00' --name xmas --shell -- 'echo ho ho ho | wall'
    Add(AddArgs),
    /// List jobs (yours; root sees everyone's)
    Ls(LsArgs),
    /// Show one job: its command, state and runs
    Show {
        /// Job id or name
        job: String,
    },
    /// Cancel a job: a scheduled job never runs, a running one gets SIGTERM
    Cancel {
        /// Job id or name
        job: String,
    },
    /// Print a run's output (default: the latest run)
    Logs(LogsArgs),
    /// Show the daemon's version, uptime, job counts and database
    Status,
}

#[derive(Debug, Args)]
pub struct AddArgs {
    /// A unique name to refer to the job by (letters, digits and . _ @ : -)
    #[arg(long, value_name = "NAME")]
    pub name: Option<String>,

    /// Run at this time: RFC 3339 (2026-11-25T14:30:00Z) or local 'YYYY-MM-DD HH:MM[:SS]'
    #[arg(long, value_name = "TIME", conflicts_with = "delay")]
    pub at: Option<String>,

    /// Run after this delay: 90s, 5m, 1h30m, 2d
    #[arg(long = "in", value_name = "DURATION")]
    pub delay: Option<String>,

    /// Run the command as one string through /bin/sh -c
    #[arg(long)]
    pub shell: bool,

    /// Set an environment variable for the job (repeatable)
    #[arg(long = "env", value_name = "KEY=VALUE")]
    pub env: Vec<String>,

    /// Give the job this shell's whole environment (--env entries still win)
    #[arg(long)]
    pub env_inherit: bool,

    /// Working directory of the job [default: the current directory]
    #[arg(long, value_name = "DIR")]
    pub cwd: Option<PathBuf>,

    /// The command and its arguments (after --)
    #[arg(
        required = true,
        trailing_var_arg = true,
        allow_hyphen_values = true,
        value_name = "COMMAND"
    )]
    pub command: Vec<String>,
}

#[derive(Debug, Args)]
pub struct LsArgs {
    /// Only jobs in this state: scheduled, running, succeeded, failed, cancelled
    #[arg(long, value_name = "STATE")]
    pub state: Option<String>,

    /// At most this many jobs (the daemon caps a page at 10000)
    #[arg(long, default_value_t = 1000, value_name = "N")]
    pub limit: u32,

    /// Start after this job id (the cursor printed at the end of a page)
    #[arg(long, value_name = "ID")]
    pub after: Option<u64>,

    /// Fetch every page, not only the first
    #[arg(long, conflicts_with = "limit")]
    pub all: bool,
}

#[derive(Debug, Args)]
pub struct LogsArgs {
    /// Job id or name
    pub job: String,

    /// Which run (an id from `show`) [default: the latest]
    #[arg(long, value_name = "RUN")]
    pub run: Option<u64>,

    /// At most this many bytes from the end of the output
    #[arg(long, default_value_t = 1024 * 1024, value_name = "BYTES")]
    pub max_bytes: u64,
}
