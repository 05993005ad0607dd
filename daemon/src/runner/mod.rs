//! The runner: starts runs' processes, watches them, and signals them.
//!
//! Each run is a process in its own process group (`process_group(0)`), with stdin from
//! `/dev/null` and stdout and stderr as pipes that its supervisor reads into the run's log
//! ([`output`]: streams kept apart, capped to the tail, a file only if there is output; [`pipe`]:
//! a quick run's pipes are read once it ended, without ever being registered with epoll). The
//! spawn stays on std's posix_spawn fast path: no `pre_exec`, no `uid()`/`gid()` (those force a
//! fork whose cost grows with the daemon's memory). When chimed runs as root and the job belongs to
//! another user, the process started is chimed itself in its `__run-as` mode
//! ([`crate::as_user`]), with an empty environment and the job on its stdin: it drops to the
//! owner's uid, gid and groups, and only then applies the job's environment and execs the
//! command.
//!
//! One small task per run ([`supervise`]) spawns its process and owns the child: it reports the
//! pid (or why the spawn failed), reads the output, waits for the exit, enforces the timeout,
//! carries out terminations (SIGTERM to the group, SIGKILL after the grace period) and signals,
//! and reports the outcome to the engine once the output is written. Because that task owns the
//! child and reaps it only when it exits, the process group id it signals cannot have been reused
//! by then. The engine only starts the task (after the commit that opened the run), so spawning,
//! which blocks until the child has exec'd, happens on the async workers, in parallel, while the
//! engine goes on to its next batch.
//!
//! Supervisors report to the engine through its [`Mailbox`], without waking it for each report.
//! The runner also judges which queues are *quick* (runs lately shorter than `QUICK_RUN`, 100 ms): for
//! those the engine opens runs ahead of the free slots, and the runner starts the next one the
//! moment a process ends.

pub mod journal;
pub mod output;
pub mod pipe;
pub mod usage;

pub use output::log_path;

use crate::as_user;
use crate::engine::Mailbox;
use crate::engine::batch::{SpawnOrder, Work};
use crate::engine::machine::Event;
use chime_proto::{Command, JobId, Outcome, RunId, Stream};
use nix::sys::signal::{Signal, killpg};
use nix::unistd::Pid;
use output::OutputLog;
use std::collections::HashMap;
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::mpsc;
use tokio::time::Instant;

/// How long a supervisor keeps reading output after the process exited, for what its
/// background children still write before their pipes are closed.
const DRAIN: Duration = Duration::from_millis(100);

/// A run still alive this long after its start has its pid and start time recorded; a shorter
/// one has them recorded with its end (one record instead of two).
const ANNOUNCE_AFTER: Duration = Duration::from_millis(100);

/// A queue whose runs have lately taken less than this (on a moving average) is *quick*: the
/// engine opens its runs ahead of its free slots (see [`crate::engine::batch::admission`]).
const QUICK_RUN: Duration = Duration::from_millis(100);

/// Who the daemon is, and what every job's environment starts from.
#[derive(Debug, Clone)]
pub struct Identity {
    pub uid: u32,
    /// The daemon's own user: HOME, USER and SHELL for jobs that run as the daemon's user.
    pub home: String,
    pub user: String,
    pub shell: String,
    /// `PATH` for jobs that do not set their own.
    pub path: String,
    pub lang: String,
    /// This executable, for `__run-as`.
    pub helper: PathBuf,
}

impl Identity {
    /// Reads the daemon's identity. Call once at start (it may consult NSS).
    pub fn of_this_process() -> std::io::Result<Self> {
        let uid = nix::unistd::getuid();
        let user = nix::unistd::User::from_uid(uid).ok().flatten();
        let path = as_user::default_path(uid.as_raw());
        Ok(Self {
            uid: uid.as_raw(),
            home: user
                .as_ref()
                .map(|u| u.dir.display().to_string())
                .or_else(|| std::env::var("HOME").ok())
                .unwrap_or_else(|| "/".into()),
            user: user
                .as_ref()
                .map(|u| u.name.clone())
                .unwrap_or_else(|| uid.to_string()),
            shell: user
                .as_ref()
                .map(|u| u.shell.display().to_string())
                .unwrap_or_else(|| "/bin/sh".into()),
            path: path.into(),
            lang: std::env::var("LANG").unwrap_or_else(|_| "C.UTF-8".into()),
            // This very executable, even once a package upgrade has replaced or removed the file
            // it was started from: a spawned child is a copy of chimed until it execs, so its
            // /proc/self/exe is chimed's own (and the helper speaks this build's orders).
            helper: if Path::new("/proc/self/exe").exists() {
                PathBuf::from("/proc/self/exe")
            } else {
                std::env::current_exe()?
            },
        })
    }

    pub fn is_root(&self) -> bool {
        self.uid == 0
    }
}

/// What the runner shares with the rest of chimed: the checks and limits it applies to each run.
#[derive(Debug)]
pub struct Shares {
    /// The account checks before each run of another user's job.
    pub accounts: Arc<as_user::account::Accounts>,
    /// What each user may take (`running_per_user`, `output_per_user`, journal lines).
    pub user_limits: crate::limits::Shared,
    /// Output on disk per user.
    pub usage: Arc<usage::Usage>,
    /// The disk is nearly full: output is no longer kept.
    pub disk_low: crate::disk::Low,
}

/// A request to a running process's supervisor.
#[derive(Debug, Clone, Copy)]
enum Control {
    /// SIGTERM to the group now, SIGKILL after `grace`.
    Terminate { grace: Duration },
    /// This signal to the group, nothing more.
    Signal(i32),
}

#[derive(Debug)]
struct RunHandle {
    control: mpsc::UnboundedSender<Control>,
    job: JobId,
    queue: String,
    owner: u32,
    /// The job's grace between SIGTERM and SIGKILL.
    kill_grace: Duration,
}

/// Which opened runs a pause or shutdown takes back before their processes start.
#[derive(Debug, Clone)]
pub enum Unstart {
    All,
    Queue(String),
    Job(JobId),
}

/// A run the engine has opened whose process has not started yet.
#[derive(Debug)]
struct Pending {
    queue: String,
    owner: u32,
    launch: Launch,
}

/// What queries may see of the runner: which opened runs still wait for a slot.
#[derive(Debug, Clone)]
pub struct View(Shared);

impl View {
    /// Runs opened ahead and waiting for a slot, per job (at most a few per quick queue).
    pub fn waiting(&self) -> crate::job::Waiting {
        let mut out = crate::job::Waiting::new();
        for pending in &lock(&self.0).pending {
            *out.entry(pending.launch.supervised.job).or_default() += 1;
        }
        out
    }
}

/// A run's process, ready to start.
#[derive(Debug)]
struct Prepared {
    command: tokio::process::Command,
    /// The program and working directory, for error messages.
    program: String,
    cwd: String,
    /// The process's stdin when it is not `/dev/null`: the order of the run-as helper.
    stdin: Option<std::fs::File>,
    /// Another user's job: the account to check before the process starts (uid, name).
    account: Option<(u32, String)>,
}

/// Everything a run's task needs to start its process and supervise it.
#[derive(Debug)]
struct Launch {
    command: Result<Prepared, String>,
    accounts: Arc<as_user::account::Accounts>,
    /// `/dev/null`, for the process's stdin.
    stdin: Arc<std::fs::File>,
    supervised: Supervised,
    log: OutputLog,
    control: mpsc::UnboundedReceiver<Control>,
}

/// Processes alive per queue and per user, and runs waiting for a slot: shared by the engine
/// (which adds opened runs) and the supervisors (which start the next run when their process
/// ends).
#[derive(Debug)]
struct Dispatch {
    live: HashMap<String, usize>,
    live_total: usize,
    live_by_owner: HashMap<u32, usize>,
    /// `running_per_user`, for each user but the administrators.
    user_limits: crate::limits::Shared,
    /// Most processes per queue; a queue without an entry has no limit but `max_running`.
    limits: HashMap<String, usize>,
    max_running: usize,
    /// In the order the engine opened them (due order within a queue).
    pending: std::collections::VecDeque<Pending>,
    /// How long each queue's runs have lately taken (a moving average over about four runs).
    recent: HashMap<String, Duration>,
}

impl Dispatch {
    /// Takes the pending runs that may start now, in order, and counts them as live.
    fn take_ready(&mut self) -> Vec<Launch> {
        let mut ready = Vec::new();
        let mut i = 0;
        let limits = self.user_limits.get();
        while i < self.pending.len() && self.live_total < self.max_running {
            let queue = &self.pending[i].queue;
            let live = self.live.get(queue).copied().unwrap_or(0);
            let owner = self.pending[i].owner;
            let owners = self.live_by_owner.get(&owner).copied().unwrap_or(0);
            let users: usize = self
                .live_by_owner
                .iter()
                .filter(|(who, _)| !limits.is_exempt(**who))
                .map(|(_, n)| n)
                .sum();
            if self.limits.get(queue).is_some_and(|limit| live >= *limit)
                || limits.running_cap(owner).is_some_and(|cap| {
                    owners >= cap || users >= limits.users_running(self.max_running)
                })
            {
                i += 1;
                continue;
            }
            let pending = self.pending.remove(i).expect("index in range");
            *self.live.entry(pending.queue).or_default() += 1;
            *self.live_by_owner.entry(owner).or_default() += 1;
            self.live_total += 1;
            ready.push(pending.launch);
        }
        ready
    }

    /// A process of `queue` and `owner` ended after `took` (`None`: it never started).
    fn ended(&mut self, queue: &str, owner: u32, took: Option<Duration>) {
        if let Some(live) = self.live.get_mut(queue) {
            *live = live.saturating_sub(1);
        }
        if let Some(live) = self.live_by_owner.get_mut(&owner) {
            *live = live.saturating_sub(1);
            if *live == 0 {
                self.live_by_owner.remove(&owner);
            }
        }
        self.live_total = self.live_total.saturating_sub(1);
        if let Some(took) = took {
            let average = self.recent.entry(queue.to_owned()).or_insert(took);
            *average = (*average * 3 + took) / 4;
        }
    }
}

type Shared = std::sync::Arc<std::sync::Mutex<Dispatch>>;

fn lock(dispatch: &Shared) -> std::sync::MutexGuard<'_, Dispatch> {
    // A supervisor that panicked while holding the lock left consistent counts (every update is
    // one statement); carry on.
    dispatch
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// Starts and tracks the processes of running jobs. Owned by the engine.
///
/// The engine may open more runs of a queue than the queue may run at once (see
/// [`crate::engine::batch`]); the runner starts at most the queue's limit of processes (and
/// `--max-running` in all), and when a process ends, its supervisor starts the next opened run of
/// that queue at once, without waiting for the engine.
#[derive(Debug)]
pub struct Runner {
    /// Every opened run: pending or live.
    runs: HashMap<RunId, RunHandle>,
    dispatch: Shared,
    /// Where supervisors report to the engine.
    events: Arc<Mailbox>,
    logs_dir: PathBuf,
    identity: Identity,
    /// `/dev/null`, opened once: each process's stdin is a duplicate of it.
    stdin: Arc<std::fs::File>,
    /// The account checks made before each run of another user's job.
    accounts: Arc<as_user::account::Accounts>,
    /// Output on disk per user, and the limits it is held to.
    usage: Arc<usage::Usage>,
    user_limits: crate::limits::Shared,
    /// Each user's allowance of journal lines (`--output journal`).
    journal_pace: Arc<crate::limits::Pace>,
    /// The disk is nearly full: run output is no longer kept.
    disk_low: crate::disk::Low,
}

impl Runner {
    pub fn new(
        events: Arc<Mailbox>,
        logs_dir: PathBuf,
        identity: Identity,
        max_running: usize,
        shares: Shares,
    ) -> std::io::Result<Self> {
        let Shares {
            accounts,
            user_limits,
            usage,
            disk_low,
        } = shares;
        let stdin = Arc::new(std::fs::File::open("/dev/null")?);
        Ok(Self {
            runs: HashMap::new(),
            dispatch: std::sync::Arc::new(std::sync::Mutex::new(Dispatch {
                max_running,
                user_limits: user_limits.clone(),
                live: HashMap::new(),
                live_total: 0,
                live_by_owner: HashMap::new(),
                limits: HashMap::new(),
                pending: std::collections::VecDeque::new(),
                recent: HashMap::new(),
            })),
            events,
            logs_dir,
            identity,
            stdin,
            accounts,
            usage,
            user_limits,
            journal_pace: Arc::default(),
            disk_low,
        })
    }

    /// Output on disk per user (shared with whoever deletes output).
    pub fn usage(&self) -> Arc<usage::Usage> {
        Arc::clone(&self.usage)
    }

    /// What queries may see of the runner (see [`View`]).
    pub fn view(&self) -> View {
        View(self.dispatch.clone())
    }

    /// Opened runs (pending or live) that have not been reported as ended.
    pub fn len(&self) -> usize {
        self.runs.len()
    }

    pub fn is_empty(&self) -> bool {
        self.runs.is_empty()
    }

    /// Opened runs per user, pending or live: what the engine's admission counts against
    /// `running_per_user`.
    pub fn running_by_owner(&self) -> HashMap<u32, usize> {
        let mut out = HashMap::new();
        for handle in self.runs.values() {
            *out.entry(handle.owner).or_default() += 1;
        }
        out
    }

    /// Opened runs per queue, pending or live: what the engine's admission counts.
    pub fn running_by_queue(&self) -> HashMap<String, usize> {
        let mut out = HashMap::new();
        for handle in self.runs.values() {
            *out.entry(handle.queue.clone()).or_default() += 1;
        }
        out
    }

    /// Processes alive per queue: what `queue ls` shows.
    pub fn live_by_queue(&self) -> HashMap<String, usize> {
        lock(&self.dispatch).live.clone()
    }

    /// Opened runs whose processes have not started yet (waiting for a slot).
    pub fn pending(&self) -> usize {
        lock(&self.dispatch).pending.len()
    }

    /// Queues whose recent runs were quick: the engine opens their runs ahead.
    pub fn quick_queues(&self) -> std::collections::BTreeSet<String> {
        lock(&self.dispatch)
            .recent
            .iter()
            .filter(|(_, took)| **took < QUICK_RUN)
            .map(|(queue, _)| queue.clone())
            .collect()
    }

    /// Forgets a run whose end (or unstart) the engine has received.
    pub fn finished(&mut self, run: RunId) {
        self.runs.remove(&run);
    }

    /// Sets how many processes of `queue` may run at once (`None`: no limit of its own).
    pub fn set_limit(&self, queue: &str, parallel: Option<u32>) {
        let ready = {
            let mut d = lock(&self.dispatch);
            match parallel {
                Some(p) => d.limits.insert(queue.to_owned(), p as usize),
                None => d.limits.remove(queue),
            };
            d.take_ready()
        };
        self.launch(ready);
    }

    /// Ends a run: a live one gets SIGTERM (SIGKILL after the job's grace); a pending one never
    /// starts and is reported `Unstarted`.
    pub fn terminate(&self, run: RunId) {
        if self.unstart_run(run) {
            return;
        }
        if let Some(handle) = self.runs.get(&run) {
            let _ = handle.control.send(Control::Terminate {
                grace: handle.kill_grace,
            });
        }
    }

    /// Ends every run: pending ones never start; live ones get SIGTERM, then SIGKILL after
    /// `grace`.
    pub fn terminate_all(&self, grace: Duration) {
        self.unstart(&Unstart::All);
        for handle in self.runs.values() {
            let _ = handle.control.send(Control::Terminate { grace });
        }
    }

    /// Sends `signal` to a live run's process group.
    pub fn signal(&self, run: RunId, signal: i32) {
        if let Some(handle) = self.runs.get(&run) {
            let _ = handle.control.send(Control::Signal(signal));
        }
    }

    /// Takes back pending runs (a pause, a shutdown): their processes never start, and each is
    /// reported `Unstarted`, so that the engine owes its occurrence again.
    pub fn unstart(&self, which: &Unstart) {
        let taken: Vec<Launch> = {
            let mut d = lock(&self.dispatch);
            let (keep, take): (Vec<Pending>, Vec<Pending>) =
                d.pending.drain(..).partition(|p| match which {
                    Unstart::All => false,
                    Unstart::Queue(q) => p.queue != *q,
                    Unstart::Job(job) => p.launch.supervised.job != *job,
                });
            d.pending = keep.into();
            take.into_iter().map(|p| p.launch).collect()
        };
        for launch in taken {
            self.report_unstarted(&launch.supervised);
        }
    }

    fn unstart_run(&self, run: RunId) -> bool {
        let taken = {
            let mut d = lock(&self.dispatch);
            let index = d
                .pending
                .iter()
                .position(|p| p.launch.supervised.run == run);
            index.and_then(|i| d.pending.remove(i))
        };
        match taken {
            Some(pending) => {
                self.report_unstarted(&pending.launch.supervised);
                true
            }
            None => false,
        }
    }

    fn report_unstarted(&self, s: &Supervised) {
        self.events.post(Work::Runner {
            job: s.job,
            event: Event::Unstarted { run: s.run },
        });
    }

    /// Opens a run: its process starts now if its queue has a free slot, otherwise as soon as
    /// one frees. Its task reports `Spawned` with the pid and start time, or `SpawnFailed` with
    /// why (recorded as the run's `spawn_error`). Call after the commit that opened the run.
    pub fn start(&mut self, order: &SpawnOrder) {
        let (control, control_rx) = mpsc::unbounded_channel();
        let kill_grace = Duration::from_millis(order.kill_grace_ms);
        self.runs.insert(
            order.run,
            RunHandle {
                control,
                job: order.job,
                queue: order.queue.clone(),
                owner: order.owner,
                kill_grace,
            },
        );
        let launch = Launch {
            command: self.command(order),
            accounts: Arc::clone(&self.accounts),
            stdin: Arc::clone(&self.stdin),
            supervised: Supervised {
                pid: 0,
                job: order.job,
                run: order.run,
                queue: order.queue.clone(),
                owner: order.owner,
                timeout: order.timeout_ms.map(Duration::from_millis),
                kill_grace,
            },
            log: {
                let limits = self.user_limits.get();
                let log = OutputLog::new(
                    log_path(&self.logs_dir, order.job, order.run),
                    order.max_output,
                )
                .with_charge(output::Charge {
                    usage: Arc::clone(&self.usage),
                    owner: order.owner,
                    limit: (!limits.is_exempt(order.owner)).then_some(limits.output_per_user),
                    said: limits.said("output_per_user"),
                    disk_low: self.disk_low.clone(),
                });
                if order.journal {
                    let tee = journal::JournalTee::new(
                        order.job.0,
                        order.name.clone(),
                        order.run.0,
                        order.queue.clone(),
                    );
                    log.with_journal(if limits.is_exempt(order.owner) {
                        tee
                    } else {
                        tee.with_budget(journal::Budget {
                            pace: Arc::clone(&self.journal_pace),
                            owner: order.owner,
                            rate: limits.journal_lines_per_second,
                            said: limits.said("journal_lines_per_second"),
                        })
                    })
                } else {
                    log
                }
            },
            control: control_rx,
        };
        let ready = {
            let mut d = lock(&self.dispatch);
            match order.parallel {
                Some(p) => d.limits.insert(order.queue.clone(), p as usize),
                None => d.limits.remove(&order.queue),
            };
            d.pending.push_back(Pending {
                queue: order.queue.clone(),
                owner: order.owner,
                launch,
            });
            d.take_ready()
        };
        self.launch(ready);
    }

    fn launch(&self, ready: Vec<Launch>) {
        for launch in ready {
            tokio::spawn(run(launch, self.dispatch.clone(), Arc::clone(&self.events)));
        }
    }

    /// The jobs of the opened runs, for diagnostics.
    pub fn jobs(&self) -> impl Iterator<Item = JobId> + '_ {
        self.runs.values().map(|h| h.job)
    }

    /// The process that starts a run.
    ///
    /// A job of chimed's own user is executed directly, its program looked up here in the job's
    /// `PATH`. Any other user's job (root's chimed) is handed to the run-as helper: the helper gets
    /// an empty environment and the job (command, directory, environment) on its stdin, and the
    /// program is looked up only once the helper is that user (see [`crate::as_user`]).
    fn command(&self, order: &SpawnOrder) -> Result<Prepared, String> {
        let run_as = order.owner != self.identity.uid;
        if run_as && !self.identity.is_root() {
            return Err(format!(
                "this chimed runs as uid {} and cannot run jobs as uid {}",
                self.identity.uid, order.owner
            ));
        }
        let env = self.environment(order, run_as);
        let argv: Vec<String> = match &order.command {
            Command::Argv(argv) => argv.clone(),
            Command::Shell(script) => vec!["/bin/sh".into(), "-c".into(), script.clone()],
            // The engine closes a timer's runs itself; one never reaches the runner.
            Command::Timer => return Err("a timer has no command to run".into()),
        };
        if run_as {
            let program = argv[0].clone();
            let account = Some((order.owner, order.owner_name.clone()));
            let order = as_user::Order {
                uid: order.owner,
                user: Some(order.owner_name.clone()),
                cwd: order.cwd.clone(),
                task: as_user::Task::Exec { argv, env },
            };
            let stdin = order
                .to_memfd()
                .map_err(|e| format!("cannot hand the job to the run-as helper: {e}"))?;
            let mut command = tokio::process::Command::new(&self.identity.helper);
            // The helper enters the working directory after dropping privileges.
            command
                .arg(as_user::RUN_AS)
                .env_clear()
                .current_dir("/")
                .process_group(0)
                .kill_on_drop(false);
            return Ok(Prepared {
                command,
                program,
                cwd: order.cwd,
                stdin: Some(stdin),
                account,
            });
        }
        let path_var = env
            .iter()
            .rev()
            .find(|(k, _)| k == "PATH")
            .map_or(self.identity.path.as_str(), |(_, v)| v.as_str());
        let program = if argv[0].contains('/') {
            argv[0].clone()
        } else {
            as_user::check::find_in_path(&argv[0], path_var)
                .ok_or_else(|| {
                    format!(
                        "command not found: {:?} (searched PATH={path_var})",
                        argv[0]
                    )
                })?
                .display()
                .to_string()
        };
        let mut command = tokio::process::Command::new(&program);
        // stdin, stdout and stderr are set when the process starts (see `run_inner`).
        command
            .args(&argv[1..])
            .current_dir(&order.cwd)
            .env_clear()
            .envs(env)
            .process_group(0)
            .kill_on_drop(false);
        Ok(Prepared {
            command,
            program,
            cwd: order.cwd.clone(),
            stdin: None,
            account: None,
        })
    }

    /// The run's environment: defaults, then the job's own entries (which win), then chime's.
    fn environment(&self, order: &SpawnOrder, run_as: bool) -> Vec<(String, String)> {
        let id = &self.identity;
        let mut env: Vec<(String, String)> = vec![
            ("PATH".into(), id.path.clone()),
            ("LANG".into(), id.lang.clone()),
        ];
        if !run_as {
            // For another user, the helper sets these from that user's passwd entry.
            env.push(("HOME".into(), id.home.clone()));
            env.push(("USER".into(), id.user.clone()));
            env.push(("LOGNAME".into(), id.user.clone()));
            env.push(("SHELL".into(), id.shell.clone()));
        }
        for (key, value) in &order.env {
            env.retain(|(k, _)| k != key);
            env.push((key.clone(), value.clone()));
        }
        for (key, value) in [
            ("CHIME_JOB_ID", order.job.0.to_string()),
            ("CHIME_RUN_ID", order.run.0.to_string()),
            ("CHIME_ATTEMPT", order.attempt.to_string()),
        ] {
            env.retain(|(k, _)| k != key);
            env.push((key.into(), value));
        }
        env
    }
}

fn spawn_error(program: &str, cwd: &str, err: &std::io::Error) -> String {
    match err.kind() {
        std::io::ErrorKind::NotFound if !Path::new(cwd).is_dir() => {
            format!("working directory {cwd} does not exist")
        }
        std::io::ErrorKind::NotFound => format!("{program}: no such file"),
        std::io::ErrorKind::PermissionDenied => format!("{program}: permission denied"),
        _ => format!("{program}: {err}"),
    }
}

/// What a supervisor needs to know about its run.
#[derive(Debug, Clone)]
struct Supervised {
    pid: u32,
    job: JobId,
    run: RunId,
    queue: String,
    owner: u32,
    timeout: Option<Duration>,
    kill_grace: Duration,
}

/// A run's task: starts its process, supervises it, and when it ends, starts the next runs that
/// may start, before reporting the end to the engine. (Boxed: it spawns more of itself.)
fn run(
    launch: Launch,
    dispatch: Shared,
    events: Arc<Mailbox>,
) -> std::pin::Pin<Box<dyn std::future::Future<Output = ()> + Send>> {
    Box::pin(run_inner(launch, dispatch, events))
}

async fn run_inner(launch: Launch, dispatch: Shared, events: Arc<Mailbox>) {
    let Launch {
        command,
        accounts,
        stdin,
        supervised,
        log,
        mut control,
    } = launch;
    let report = |event| Work::Runner {
        job: supervised.job,
        event,
    };
    let began = Instant::now();
    // Another user's job runs only while its account is still the one it was recorded with and
    // may run jobs (as_user::account); the check may block (NSS, PAM).
    let command = match command {
        Ok(mut prepared) if prepared.account.is_some() => {
            let (uid, name) = prepared.account.take().expect("checked just above");
            let checked = tokio::task::spawn_blocking(move || accounts.check(uid, &name)).await;
            match checked {
                Ok(Ok(())) => Ok(prepared),
                Ok(Err(refusal)) => Err(format!("refused: {refusal}")),
                Err(err) => Err(format!("the account check failed: {err}")),
            }
        }
        other => other,
    };
    let spawned = match command {
        Ok(prepared) => start_process(prepared, &stdin, &supervised, &mut control).await,
        Err(error) => Err(error),
    };
    let outcome = match spawned {
        Ok((child, pid, stdout, stderr)) => {
            let started_ms = crate::job::now_ms();
            tracing::debug!(
                job_id = supervised.job.0,
                run_id = supervised.run.0,
                pid,
                "run started"
            );
            let supervised = Supervised {
                pid,
                ..supervised.clone()
            };
            let mut announce = Some(report(Event::Spawned {
                run: supervised.run,
                pid,
                started_ms,
            }));
            let (outcome, ended_ms) = supervise(
                child,
                [stdout, stderr],
                &supervised,
                log,
                control,
                &mut announce,
                &events,
            )
            .await;
            // The end carries the start too (it may never have been announced), and when the
            // process ended, so that the record says when it did, not when it was written.
            Some((
                Event::Finished {
                    run: supervised.run,
                    outcome,
                    pid: Some(pid),
                    started_ms,
                    ended_ms,
                },
                began.elapsed(),
            ))
        }
        Err(error) => {
            tracing::warn!(job_id = supervised.job.0, run_id = supervised.run.0, %error, "run could not be started");
            events.post(report(Event::SpawnFailed {
                run: supervised.run,
                error,
            }));
            None
        }
    };
    // The slot is free: the next opened runs start now, before the engine hears of this end.
    let ready = {
        let mut d = lock(&dispatch);
        d.ended(
            &supervised.queue,
            supervised.owner,
            outcome.as_ref().map(|(_, took)| *took),
        );
        d.take_ready()
    };
    for next in ready {
        tokio::spawn(run(next, dispatch.clone(), Arc::clone(&events)));
    }
    if let Some((event, _)) = outcome
        && !events.post(report(event))
    {
        tracing::warn!(
            job_id = supervised.job.0,
            run_id = supervised.run.0,
            "engine gone before the run's end was recorded"
        );
    }
}

/// Whether a failure to start a process is for want of a resource that comes back by itself
/// (descriptors, memory, processes): then the start is tried again, not recorded as failed.
fn is_transient(err: &std::io::Error) -> bool {
    matches!(
        err.raw_os_error(),
        Some(libc::EMFILE | libc::ENFILE | libc::ENOMEM | libc::EAGAIN)
    )
}

/// Longest wait between two tries to start a process that lacked a resource.
const RETRY_START_MAX: Duration = Duration::from_secs(2);

/// Starts a run's process: its pipes, its stdin, the spawn. When the host is out of descriptors,
/// memory or processes, waits (50 ms, doubling up to [`RETRY_START_MAX`]) and tries again, for as
/// long as it takes, so that a burst never fails runs for good; a termination (cancel, stop)
/// meanwhile ends the waiting.
async fn start_process(
    prepared: Prepared,
    stdin: &std::fs::File,
    supervised: &Supervised,
    control: &mut mpsc::UnboundedReceiver<Control>,
) -> Result<(tokio::process::Child, u32, pipe::Pipe, pipe::Pipe), String> {
    let Prepared {
        command: mut cmd,
        program,
        cwd,
        stdin: order,
        account: _,
    } = prepared;
    let helper = order.is_some();
    let mut input = order;
    let mut wait = Duration::from_millis(50);
    let mut warned = false;
    loop {
        let attempt = (|| -> Result<_, (std::io::Error, String)> {
            fn cannot(what: &'static str) -> impl Fn(std::io::Error) -> (std::io::Error, String) {
                move |e| {
                    let message = format!("cannot create {what}: {e}");
                    (e, message)
                }
            }
            let (stdout, stdout_end) = pipe::pair().map_err(cannot("the stdout pipe"))?;
            let (stderr, stderr_end) = pipe::pair().map_err(cannot("the stderr pipe"))?;
            let stdin = match &input {
                Some(order) => order.try_clone(),
                None => stdin.try_clone(),
            }
            .map_err(cannot("stdin"))?;
            cmd.stdin(stdin).stdout(stdout_end).stderr(stderr_end);
            let child = cmd.spawn().map_err(|e| {
                let message = match helper {
                    // The helper itself did not start: that says nothing about the job's paths
                    // (and they are not looked at as root).
                    true => format!("cannot start chimed's run-as helper: {e}"),
                    false => spawn_error(&program, &cwd, &e),
                };
                (e, message)
            })?;
            Ok((child, stdout, stderr))
        })();
        match attempt {
            Ok((child, stdout, stderr)) => {
                // The command holds the child's ends of the pipes (and the helper's order):
                // close them here, so that the pipes end when the process (and its children)
                // close theirs.
                drop(cmd);
                input.take();
                let pid = child
                    .id()
                    .ok_or("the process exited before its pid was read")?;
                return Ok((child, pid, stdout, stderr));
            }
            Err((err, message)) if is_transient(&err) => {
                if !warned {
                    tracing::warn!(job_id = supervised.job.0, run_id = supervised.run.0, error = %message, "cannot start the run's process for now; trying again until it can");
                    warned = true;
                }
                tokio::select! {
                    () = tokio::time::sleep(wait) => {}
                    request = control.recv() => {
                        if matches!(request, Some(Control::Terminate { .. }) | None) {
                            return Err(format!("ended before its process could start ({message})"));
                        }
                    }
                }
                wait = (wait * 2).min(RETRY_START_MAX);
            }
            Err((_, message)) => return Err(message),
        }
    }
}

/// Owns one running process until it ends; returns how and when it ended, once its output is
/// written. If the process is still alive after [`ANNOUNCE_AFTER`], sends `announce` (its start)
/// and takes it. Its output pipes are watched only after [`pipe::WATCH_AFTER`] (see [`pipe`]).
async fn supervise(
    mut child: tokio::process::Child,
    [mut stdout, mut stderr]: [pipe::Pipe; 2],
    s: &Supervised,
    mut log: OutputLog,
    mut control: mpsc::UnboundedReceiver<Control>,
    announce: &mut Option<Work>,
    events: &Mailbox,
) -> (Outcome, crate::job::Ms) {
    let announce_at = Instant::now() + ANNOUNCE_AFTER;
    let watch_at = Instant::now() + pipe::WATCH_AFTER;
    let group = Pid::from_raw(s.pid as i32);
    let mut buffer = vec![0u8; 32 * 1024];
    let (out_buf, err_buf) = buffer.split_at_mut(16 * 1024);
    let timeout_at = s.timeout.map(|t| Instant::now() + t);
    // When a termination is under way: when to send SIGKILL.
    let mut kill_at: Option<Instant> = None;
    let mut ended_by_us = false;
    let mut timed_out = false;
    let term = |grace: Duration, why: &str| {
        // Captures only copies, so `s` stays borrowed immutably.
        let _ = killpg(group, Signal::SIGTERM);
        tracing::info!(
            job_id = s.job.0,
            run_id = s.run.0,
            pid = s.pid,
            why,
            "sent SIGTERM to the run's process group"
        );
        Instant::now() + grace
    };
    let status = loop {
        tokio::select! {
            status = child.wait() => break status,
            () = tokio::time::sleep_until(watch_at), if stdout.is_idle() || stderr.is_idle() => {
                stdout.watch();
                stderr.watch();
            }
            read = stdout.read(out_buf), if stdout.is_watched() => if let Some(n) = read {
                log.append(Stream::Stdout, &out_buf[..n]);
            },
            read = stderr.read(err_buf), if stderr.is_watched() => if let Some(n) = read {
                log.append(Stream::Stderr, &err_buf[..n]);
            },
            Some(request) = control.recv() => match request {
                Control::Terminate { grace } if kill_at.is_none() => {
                    ended_by_us = true;
                    kill_at = Some(term(grace, "terminate"));
                }
                Control::Terminate { .. } => {}
                Control::Signal(signal) => {
                    if let Ok(signal) = Signal::try_from(signal) {
                        let _ = killpg(group, signal);
                        tracing::info!(job_id = s.job.0, run_id = s.run.0, pid = s.pid, %signal, "signalled the run's process group");
                    }
                }
            },
                        () = tokio::time::sleep_until(announce_at), if announce.is_some() => {
                if let Some(message) = announce.take() {
                    tracing::info!(job_id = s.job.0, run_id = s.run.0, pid = s.pid, "run started");
                    events.post(message);
                }
            }
            () = sleep_until(timeout_at), if timeout_at.is_some() && kill_at.is_none() => {
                timed_out = true;
                ended_by_us = true;
                kill_at = Some(term(s.kill_grace, "timeout"));
            }
            () = sleep_until(kill_at), if kill_at.is_some() => {
                tracing::warn!(job_id = s.job.0, run_id = s.run.0, pid = s.pid,
                    "process group still running after the grace period; sending SIGKILL");
                let _ = killpg(group, Signal::SIGKILL);
                kill_at = Some(Instant::now() + Duration::from_secs(3600));
            }
        }
    };
    let ended_ms = crate::job::now_ms();
    // What is still in the pipes: usually all of it is there already and they are at their end.
    stdout.read_now(Stream::Stdout, &mut log, out_buf);
    stderr.read_now(Stream::Stderr, &mut log, err_buf);
    // What background children write for a moment more.
    let drain_until = Instant::now() + DRAIN;
    stdout.watch();
    stderr.watch();
    while stdout.is_open() || stderr.is_open() {
        tokio::select! {
            // (A pipe's end closes it; the loop ends when both are closed.)
            read = stdout.read(out_buf), if stdout.is_open() => if let Some(n) = read {
                log.append(Stream::Stdout, &out_buf[..n]);
            },
            read = stderr.read(err_buf), if stderr.is_open() => if let Some(n) = read {
                log.append(Stream::Stderr, &err_buf[..n]);
            },
            () = tokio::time::sleep_until(drain_until) => break,
        }
    }
    if ended_by_us {
        // Whatever the leader left behind in its group goes too.
        let _ = killpg(group, Signal::SIGKILL);
    }
    let outcome = match status {
        Ok(_) if timed_out => Outcome::TimedOut,
        Ok(status) => match (status.code(), status.signal()) {
            (Some(code), _) => Outcome::Exited(code),
            (None, Some(signal)) => Outcome::Signaled(signal),
            (None, None) => Outcome::Exited(-1),
        },
        Err(err) => {
            tracing::error!(job_id = s.job.0, run_id = s.run.0, pid = s.pid, error = %err, "waiting for the process failed");
            Outcome::Lost
        }
    };
    (outcome, ended_ms)
}

/// Sleeps until `at`, or forever.
async fn sleep_until(at: Option<Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}
