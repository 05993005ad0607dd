//! The command line. Doc comments here are the help text.

use clap::{ArgMatches, Args, Command, FromArgMatches, Parser, Subcommand};
use std::path::PathBuf;

/// chimectl: talk to chimed, the chime job scheduler.
///
/// Exit status: 0 on success, 1 when the daemon refused the request, 2 for a usage error, 69
/// when chimed could not be reached; `wait` and `add --wait` exit with the run's own code.
#[derive(Debug, Parser)]
#[command(
    name = "chimectl",
    version,
    max_term_width = 100,
    propagate_version = true
)]
pub struct Cli {
    /// The daemon's socket [default: /run/chime/chimed.sock as root; else
    /// $XDG_RUNTIME_DIR/chime/chimed.sock (or /run/user/UID/chime/chimed.sock), or the system one
    /// when you run no chimed of your own]. chimectl talks only to a chimed run by root or by you
    #[arg(long, global = true, env = "CHIME_SOCKET", value_name = "PATH")]
    pub socket: Option<PathBuf>,

    /// Print JSON for scripts instead of text for people (shapes: README, "Scripting with --json")
    #[arg(long, global = true)]
    pub json: bool,

    /// Print nothing where the output would only confirm what was asked (cancel, pause, resume,
    /// skip, trigger, kill, retry, rm, queue set, reload); errors and warnings still go to stderr
    #[arg(short, long, global = true, conflicts_with = "json")]
    pub quiet: bool,

    #[command(subcommand)]
    pub command: Cmd,
}

/// Arguments (or subcommands) built only when their subcommand is the one used: clap's
/// [`Command::defer`]. Building every subcommand's arguments was most of chimectl's parse time.
#[derive(Debug)]
pub struct Lazy<T>(pub T);

impl<T: FromArgMatches> FromArgMatches for Lazy<T> {
    fn from_arg_matches(matches: &ArgMatches) -> Result<Self, clap::Error> {
        T::from_arg_matches(matches).map(Lazy)
    }
    fn update_from_arg_matches(&mut self, matches: &ArgMatches) -> Result<(), clap::Error> {
        self.0.update_from_arg_matches(matches)
    }
}

impl<T: Args> Args for Lazy<T> {
    fn augment_args(cmd: Command) -> Command {
        cmd.defer(|cmd| keep_about(cmd, T::augment_args))
    }
    fn augment_args_for_update(cmd: Command) -> Command {
        cmd.defer(|cmd| keep_about(cmd, T::augment_args_for_update))
    }
}

/// Applies `augment` to `cmd`, keeping the help text the subcommand was given: built eagerly,
/// the subcommand's own doc comment is set after its arguments, and so wins over that of a group
/// flattened into them; deferred, the arguments come last.
fn keep_about(cmd: Command, augment: fn(Command) -> Command) -> Command {
    let about = cmd.get_about().cloned();
    let long_about = cmd.get_long_about().cloned();
    let cmd = augment(cmd);
    let cmd = match about {
        Some(about) => cmd.about(about),
        None => cmd.about(None::<&str>),
    };
    match long_about {
        Some(long_about) => cmd.long_about(long_about),
        None => cmd.long_about(None::<&str>),
    }
}

#[derive(Debug, Subcommand)]
pub enum Cmd {
    /// Submit a job; prints its id
    #[command(
        after_help = "Examples:\n  chimectl add -- /usr/bin/backup --full\n  chimectl add --in 90s -- make -C /srv/site deploy\n  chimectl add --at '2026-12-24 18:00' --name xmas --shell -- 'echo ho | wall'\n  chimectl add --name rotate --cron @daily -- logrotate /etc/logrotate.conf\n  chimectl add --cron '0 9 * * 1-5' --tz Europe/Paris -- /usr/local/bin/standup\n  chimectl add --every 15m --overlap queue --queue io -- /usr/bin/sync-mirror"
    )]
    Add(Lazy<Box<AddArgs>>),
    /// List jobs (yours; root sees everyone's)
    Ls(Lazy<LsArgs>),
    /// Show one job: its command, schedule, policies, state, runs and missed occurrences
    Show {
        /// Job id or name
        job: String,
    },
    /// Edit a job's spec as a job file in your editor; saved, it is applied as add --replace
    ///
    /// Opens the job's spec, written as a job file (the format of jobs.d/NAME.toml), in $VISUAL,
    /// else $EDITOR, else vi. Save and quit to apply it: chimed checks it as it checks a job file
    /// (errors as NAME.toml:LINE: field: what) and swaps the job's spec as add --replace does,
    /// keeping its id, name, owner and history; what changed is printed. Quit without saving, or
    /// empty the file, to change nothing. A refused file can be edited again (on a terminal), or
    /// is kept where it was edited. A job declared by a job file is edited in that file.
    ///
    /// Exit status: 0 when applied or nothing changed; 1 when refused.
    #[command(
        after_help = "Examples:\n  chimectl edit backup\n  EDITOR='code --wait' chimectl edit 42\n  chimectl edit alice/backup          # root: another user's job"
    )]
    Edit {
        /// Job id or name
        job: String,
    },
    /// Cancel a job: a scheduled job never runs, a running one gets SIGTERM
    Cancel {
        /// Job id or name
        job: String,
    },
    /// Print a run's output (default: the latest run); stdout to stdout, stderr to stderr
    Logs(Lazy<LogsArgs>),
    /// Wait until a job's current or next run has ended (with its retries), and exit with its
    /// exit code
    ///
    /// Exit status: the run's exit code; 1 if it was killed, lost or interrupted; 124 if it timed
    /// out; 127 if it could not be started; 75 if --timeout passed first.
    Wait {
        /// Job id or name
        job: String,
        /// Give up after this long
        #[arg(long, value_name = "DURATION")]
        timeout: Option<String>,
    },
    /// Send a signal to every process of a running job (its cgroup, or its process group)
    Kill {
        /// Job id or name
        job: String,
        /// Signal name or number: TERM, KILL, HUP, INT, USR1, 9, ...
        #[arg(long, short = 's', default_value = "TERM", value_name = "SIG")]
        signal: String,
    },
    /// Run a failed job again now
    Retry {
        /// Job id or name
        job: String,
    },
    /// Remove a job that is not running, with its runs and output
    Rm {
        /// Job id or name
        job: String,
    },
    /// Show the daemon's version, uptime, job counts, pauses and database
    Status,
    /// Print the next firing times of a job or a schedule, without creating anything
    #[command(
        after_help = "Examples:\n  chimectl next backup -n 3\n  chimectl next --cron '30 2 * * *' --tz America/New_York --from 2026-03-07"
    )]
    Next(Lazy<NextArgs>),
    /// Pause a job, a queue or everything: nothing new starts there until resumed
    ///
    /// Running jobs go on. Occurrences that come due while paused meet the job's catch-up
    /// policy when the pause ends. A pause with --for or --until ends by itself, also across
    /// restarts.
    Pause(Lazy<PauseArgs>),
    /// Resume a job, a queue or everything
    Resume(Lazy<TargetArgs>),
    /// Skip the next occurrence of a recurring job
    Skip {
        /// Job id or name
        job: String,
    },
    /// Run a job now, outside its schedule, under its overlap policy
    Trigger {
        /// Job id or name
        job: String,
    },
    /// Queues: their limits, running and waiting jobs, and pauses
    #[command(subcommand)]
    Queue(QueueCmd),
    /// Follow what happens: every job added, started, ended, missed, paused, removed, and every
    /// timer fired, as it is committed
    ///
    /// With --since SEQ, first every retained event after SEQ (the last one you saw), then the
    /// live ones: a watcher that reconnects with the last sequence number it printed misses
    /// nothing still retained. --json prints one JSON object per line (NDJSON).
    #[command(
        after_help = "Examples:\n  chimectl watch\n  chimectl watch --job backup --json\n  chimectl watch --since 0        # everything retained, then live"
    )]
    Watch(Lazy<WatchArgs>),
    /// Timers for other programs: jobs with no command, whose firing is an event
    #[command(subcommand)]
    Timer(TimerCmd),
    /// Re-read chimed.toml and jobs.d/ and apply them (root only); like `systemctl reload chimed`
    ///
    /// Exit status 1 when a file was refused: its previous version stays in effect.
    Reload,
    /// Print chimed's metrics in the Prometheus text format
    Metrics,
    /// Configuration files
    #[command(subcommand)]
    Config(ConfigCmd),
    /// Print a completion script for a shell (bash, zsh, fish, elvish, powershell)
    #[command(
        after_help = "Examples:\n  source <(chimectl completions bash)\n  chimectl completions zsh > ~/.zfunc/_chimectl\n  chimectl completions fish > ~/.config/fish/completions/chimectl.fish"
    )]
    Completions {
        /// The shell
        shell: clap_complete::Shell,
    },
    /// Write chimectl's manual pages (section 1: chimectl and each subcommand) into DIR
    #[command(hide = true)]
    Man {
        /// Where to write chimectl.1, chimectl-add.1, ...
        dir: PathBuf,
    },
}

#[derive(Debug, Args)]
pub struct WatchArgs {
    /// Start after this sequence number (0: every retained event) [default: only new events]
    #[arg(long, value_name = "SEQ")]
    pub since: Option<u64>,
    /// Only this job's events (id or name)
    #[arg(long, value_name = "JOB")]
    pub job: Option<String>,
    /// Stop after this many events (for scripts and tests)
    #[arg(long, value_name = "N")]
    pub count: Option<u64>,
}

#[derive(Debug, Subcommand)]
pub enum TimerCmd {
    /// Create a timer: when it fires, a `fired` event is recorded and sent to watchers, and
    /// nothing runs
    #[command(
        after_help = "Examples:\n  chimectl timer add backup-window --cron '0 2 * * *' --tz Europe/Berlin\n  chimectl timer add heartbeat --every 30s\n  chimectl timer add launch --at '2026-12-24 18:00'"
    )]
    Add(TimerAddArgs),
}

#[derive(Debug, Args)]
pub struct TimerAddArgs {
    /// The timer's name (letters, digits and . _ @ : -)
    pub name: String,

    /// Replace the schedule of the timer with this name, keeping its id and history
    #[arg(long)]
    pub replace: bool,

    #[command(flatten)]
    pub when: ScheduleArgs,

    /// Most firings kept in the timer's history [default: chimed's, 100]
    #[arg(long, value_name = "N")]
    pub keep_runs: Option<u32>,

    /// How long a one-shot timer is kept after it fired [default: chimed's, 7d]
    #[arg(long, value_name = "DURATION")]
    pub retention: Option<String>,
}

#[derive(Debug, Subcommand)]
pub enum ConfigCmd {
    /// Check a configuration file and its jobs.d/, or one job file, without applying anything
    ///
    /// PATH is chimed.toml (default: the one chimed reads), a job file, or a jobs.d directory.
    /// Exit status 1 when anything is wrong; each problem is printed as PATH:LINE: field: what.
    Check {
        /// The file or directory to check
        path: Option<PathBuf>,
    },
}

#[derive(Debug, Subcommand)]
pub enum QueueCmd {
    /// Set how many jobs of a queue may run at once, and the resources each of their runs may
    /// take (unless a job sets its own)
    ///
    /// What is not given stays as it is.
    #[command(
        after_help = "Examples:\n  chimectl queue set io --parallel 2\n  chimectl queue set builds --memory-max 4G --cpu-quota 200%\n  chimectl queue set builds --no-limits --tasks-max 512"
    )]
    #[command(group(
        clap::ArgGroup::new("change")
            .required(true)
            .multiple(true)
            .args(["parallel", "unlimited", "no_limits", "memory_max", "cpu_quota", "tasks_max", "io_weight"])
    ))]
    Set {
        /// Queue name
        name: String,
        /// Most runs at once
        #[arg(long, value_name = "N")]
        parallel: Option<u32>,
        /// Remove the limit of runs at once
        #[arg(long, conflicts_with = "parallel")]
        unlimited: bool,
        /// Remove the queue's resource limits (before setting those given)
        #[arg(long)]
        no_limits: bool,
        #[command(flatten)]
        resources: ResourceArgs,
    },
    /// List queues
    Ls,
}

#[derive(Debug, Args)]
pub struct NextArgs {
    /// Job id or name
    #[arg(required_unless_present_any = ["cron", "every"], conflicts_with_all = ["cron", "every"])]
    pub job: Option<String>,
    /// A cron expression to preview
    #[arg(long, value_name = "EXPR", conflicts_with = "every")]
    pub cron: Option<String>,
    /// The cron expression's time zone (IANA name) [default: chimed's zone]
    #[arg(long, value_name = "ZONE", requires = "cron")]
    pub tz: Option<String>,
    /// An interval to preview
    #[arg(long, value_name = "DURATION")]
    pub every: Option<String>,
    /// How many firings
    #[arg(short = 'n', long = "count", default_value_t = 5, value_name = "N")]
    pub count: u32,
    /// Firings after this time [default: now]; for --every, also its anchor
    #[arg(long, value_name = "TIME")]
    pub from: Option<String>,
}

#[derive(Debug, Args)]
#[group(id = "target", required = true, multiple = false)]
pub struct TargetArgs {
    /// Everything (root only)
    #[arg(long, group = "target")]
    pub all: bool,
    /// A queue (root only)
    #[arg(long, value_name = "NAME", group = "target")]
    pub queue: Option<String>,
    /// A job id or name
    #[arg(group = "target")]
    pub job: Option<String>,
}

#[derive(Debug, Args)]
pub struct PauseArgs {
    #[command(flatten)]
    pub target: TargetArgs,
    /// End the pause after this long: 30m, 2h
    #[arg(long = "for", value_name = "DURATION", conflicts_with = "until")]
    pub for_: Option<String>,
    /// End the pause at this time
    #[arg(long, value_name = "TIME")]
    pub until: Option<String>,
    /// Why, for `status`, `ls` and `show`
    #[arg(long, value_name = "TEXT")]
    pub reason: Option<String>,
}

impl ScheduleArgs {
    /// An option given with a schedule it does not apply to, which clap's `requires` lets
    /// through when another schedule of the group is given (`--at .. --tz ..`): in words.
    pub fn misapplied(&self) -> Option<String> {
        if self.tz.is_some() && self.cron.is_none() {
            return Some(
                "--tz applies only to --cron (the zone its fields are read in); a time given \
                 with --at, --from or --until carries its offset, or is read in your local zone"
                    .into(),
            );
        }
        if self.from.is_some() && self.every.is_none() {
            return Some(
                "--from applies only to --every (the first occurrence, the anchor of the \
                 interval)"
                    .into(),
            );
        }
        None
    }
}

impl AddArgs {
    /// What `add` was given that clap accepts but the user cannot have meant: an option that
    /// does not apply to the schedule, an unknown option taken for the command (`--nmae`), or
    /// one of `add`'s own options after the command, which would be passed to the command
    /// (`add /bin/echo hi --in 5m`) unless `--` came before the command. `raw`: the command
    /// line as given.
    pub fn misused(&self, raw: &[String], own: &[String]) -> Option<String> {
        if let Some(why) = self.when.misapplied() {
            return Some(why);
        }
        let dashes = |words: &[String]| words.iter().filter(|w| *w == "--").count();
        if dashes(raw) > dashes(&self.command) {
            // `--` came before the command: every word after it is the command's.
            return None;
        }
        let first = &self.command[0];
        if first.starts_with('-') {
            return Some(format!(
                "unknown option {first} (`chimectl add --help` lists them); a command whose name \
                 begins with '-' goes after --"
            ));
        }
        for word in &self.command[1..] {
            let name = word.split('=').next().unwrap_or(word);
            if let Some(long) = name.strip_prefix("--")
                && own.iter().any(|o| o == long)
            {
                return Some(format!(
                    "{word} comes after the command ({first}), so it would be passed to the \
                     command, not read by chimectl; put chimectl's options before the command, \
                     or write -- before the command to pass {word} on"
                ));
            }
        }
        None
    }
}

/// When a job or timer comes due, and the policies of a recurring one.
#[derive(Debug, Args)]
pub struct ScheduleArgs {
    /// Run once at this time: RFC 3339 (2026-11-25T14:30:00Z) or local 'YYYY-MM-DD HH:MM[:SS]'
    #[arg(long, value_name = "TIME", group = "when")]
    pub at: Option<String>,

    /// Run once after this delay: 90s, 5m, 1h30m, 2d
    #[arg(long = "in", value_name = "DURATION", group = "when")]
    pub delay: Option<String>,

    /// Run every DURATION of elapsed time, from --from or from now
    #[arg(long, value_name = "DURATION", group = "when")]
    pub every: Option<String>,

    /// With --every: the first occurrence (the anchor of the interval)
    #[arg(long, value_name = "TIME", requires = "every")]
    pub from: Option<String>,

    /// Run on a cron schedule: 5 fields (minute hour day month weekday), 6 with seconds
    /// first, 7 with a year last, or @hourly, @daily, @weekly, @monthly, @yearly
    #[arg(long, value_name = "EXPR", group = "when")]
    pub cron: Option<String>,

    /// With --cron: the time zone (IANA name) [default: chimed's zone]
    #[arg(long, value_name = "ZONE", requires = "cron")]
    pub tz: Option<String>,

    /// End a recurring job after this many runs
    #[arg(long, value_name = "N")]
    pub count: Option<u32>,

    /// End a recurring job at this time
    #[arg(long, value_name = "TIME")]
    pub until: Option<String>,

    /// Occurrences missed while chimed was down or the job paused: skip, latest (one run for
    /// all, the default) or all
    #[arg(long, value_name = "POLICY")]
    pub catch_up: Option<String>,

    /// With --catch-up all: run at most this many missed occurrences [default: 100]
    #[arg(long, value_name = "N")]
    pub catch_up_limit: Option<u32>,

    /// An occurrence that cannot start within this long of its due time is missed
    #[arg(long, value_name = "DURATION")]
    pub deadline: Option<String>,

    /// When an occurrence comes due while the previous run still runs: skip (the default),
    /// queue, allow or replace
    #[arg(long, value_name = "POLICY")]
    pub overlap: Option<String>,
}

#[derive(Debug, Args)]
pub struct AddArgs {
    /// A unique name to refer to the job by (letters, digits and . _ @ : -)
    #[arg(long, value_name = "NAME")]
    pub name: Option<String>,

    /// With --name: replace that job's spec, keeping its id and history
    #[arg(long, requires = "name")]
    pub replace: bool,

    #[command(flatten)]
    pub when: ScheduleArgs,

    /// The queue to run in [default: default]
    #[arg(long, value_name = "NAME")]
    pub queue: Option<String>,

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

    /// Retry a failed run up to N times (each occurrence of a recurring job has its own)
    #[arg(long, value_name = "N")]
    pub retries: Option<u32>,

    /// Delay before the first retry, doubling each time up to MAX, plus up to 10% jitter
    /// [default: 10s:1h]
    #[arg(long, value_name = "BASE[:MAX]")]
    pub backoff: Option<String>,

    /// Which outcomes are retried, comma-separated: exit, killed (by a signal or the OOM
    /// killer), timed_out, lost, interrupted, spawn_error [default: all but spawn_error]
    #[arg(long, value_name = "LIST")]
    pub retry_on: Option<String>,

    /// End a run that lasts longer than this (SIGTERM, then SIGKILL after --kill-grace)
    #[arg(long, value_name = "DURATION")]
    pub timeout: Option<String>,

    /// Time between SIGTERM and SIGKILL when a run is ended [default: chimed's, 10s]
    #[arg(long, value_name = "DURATION")]
    pub kill_grace: Option<String>,

    /// Most output kept per run, the tail [default: chimed's, 8MiB]
    #[arg(long, value_name = "SIZE")]
    pub max_output: Option<String>,

    /// Most runs kept in the job's history [default: chimed's, 100]
    #[arg(long, value_name = "N")]
    pub keep_runs: Option<u32>,

    /// How long the job is kept after it finished [default: chimed's, 7d]
    #[arg(long, value_name = "DURATION")]
    pub retention: Option<String>,

    #[command(flatten)]
    pub resources: ResourceArgs,

    /// When the run's main process exits, leave what it started running in its cgroup (for a
    /// job that starts daemons on purpose) [default: chimed's, no: they are ended]
    #[arg(long)]
    pub keep_children: bool,

    /// Where output goes: file (kept per run, read with `chimectl logs`) or journal (the file,
    /// and each line to the journal too, with JOB_ID, RUN_ID and the job's other fields)
    #[arg(long, value_name = "WHERE", value_parser = ["file", "journal"], default_value = "file")]
    pub output: String,

    /// Wait for the first run to end (with its retries) and exit with its exit code, like
    /// `chimectl wait`
    #[arg(long)]
    pub wait: bool,

    /// The command and its arguments (after --)
    #[arg(
        required = true,
        trailing_var_arg = true,
        allow_hyphen_values = true,
        value_name = "COMMAND"
    )]
    pub command: Vec<String>,
}

/// The resources each run may take, under systemd's names. A limit left out is the queue's,
/// else chimed's `[defaults]`, else none. Each needs its cgroup v2 controller on the host.
#[derive(Debug, Default, Args)]
pub struct ResourceArgs {
    /// Most memory the run's processes may hold (memory.max): bytes, or K, M, G, T (powers of
    /// 1024), at least 1M
    #[arg(long, value_name = "SIZE")]
    pub memory_max: Option<String>,

    /// CPU time as a percent of one CPU (cpu.max): 50% is half a CPU, 200% two CPUs
    #[arg(long, value_name = "PCT%")]
    pub cpu_quota: Option<String>,

    /// Most processes and threads alive at once (pids.max)
    #[arg(long, value_name = "N")]
    pub tasks_max: Option<u32>,

    /// Share of block I/O against other runs, 1 to 10000 (io.weight; the kernel's default is
    /// 100)
    #[arg(long, value_name = "N")]
    pub io_weight: Option<u16>,
}

#[derive(Debug, Args)]
pub struct LsArgs {
    /// Only jobs in this state: scheduled, queued, paused, running, succeeded, failed, cancelled
    #[arg(long, value_name = "STATE")]
    pub state: Option<String>,

    /// Only jobs of this queue
    #[arg(long, value_name = "NAME")]
    pub queue: Option<String>,

    /// Only jobs whose name starts with this
    #[arg(long, value_name = "PREFIX")]
    pub name: Option<String>,

    /// At most this many jobs (the daemon caps a page at 10000)
    #[arg(long, default_value_t = 1000, value_name = "N")]
    pub limit: u32,

    /// Start after this job id (the cursor printed at the end of a page)
    #[arg(long, value_name = "ID")]
    pub after: Option<u64>,

    /// Fetch every page, not only the first
    #[arg(long, conflicts_with = "limit")]
    pub all: bool,

    /// Every column in full: absolute times, whole schedules and commands, however wide
    #[arg(long)]
    pub wide: bool,

    /// Redraw the list every SECONDS (default 2) until interrupted, like watch(1)
    #[arg(long, value_name = "SECONDS", num_args = 0..=1, default_missing_value = "2",
          value_parser = clap::value_parser!(u64).range(1..=3600))]
    pub watch: Option<u64>,
}

#[derive(Debug, Args)]
pub struct LogsArgs {
    /// Job id or name
    pub job: String,

    /// Which run (an id from `show`) [default: the latest]
    #[arg(long, value_name = "RUN")]
    pub run: Option<u64>,

    /// Only the last N lines
    #[arg(long, short = 'n', value_name = "N")]
    pub tail: Option<usize>,

    /// Keep printing output as the run writes it, until it ends
    #[arg(long, short = 'f')]
    pub follow: bool,

    /// At most this many bytes from the end of the output
    #[arg(long, default_value_t = 1024 * 1024, value_name = "BYTES")]
    pub max_bytes: u64,
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn the_command_line_is_consistent() {
        Cli::command().debug_assert();
    }

    /// A deferred subcommand gets its arguments when built (for help, man pages and
    /// completions), and keeps its own help text, not that of a group flattened into it.
    #[test]
    fn deferred_subcommands_keep_their_help_and_get_their_arguments() {
        let mut cli = Cli::command();
        cli.build();
        for (name, about, option) in [
            ("add", "Submit a job; prints its id", "every"),
            ("ls", "List jobs (yours; root sees everyone's)", "state"),
            ("pause", "Pause a job, a queue or everything", "until"),
            ("watch", "Follow what happens", "since"),
        ] {
            let sub = cli.find_subcommand(name).unwrap();
            let got = sub.get_about().map(ToString::to_string).unwrap_or_default();
            assert!(got.starts_with(about), "{name}: {got}");
            assert!(
                sub.get_arguments().any(|a| a.get_long() == Some(option)),
                "{name} lacks --{option}"
            );
        }
    }

    #[test]
    fn a_subcommand_parses_with_only_its_own_arguments_built() {
        let cli =
            Cli::try_parse_from(["chimectl", "--json", "add", "--in", "1h", "--", "true"]).unwrap();
        assert!(cli.json);
        match cli.command {
            Cmd::Add(Lazy(args)) => assert_eq!(args.command, ["true"]),
            other => panic!("{other:?}"),
        }
    }
}
