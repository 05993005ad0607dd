//! The runner: starts runs' processes, watches them, and ends them.
//!
//! Each run is a process in a cgroup of its own ([`crate::cgroup`]) and in its own process
//! group, with stdin from `/dev/null` and stdout and stderr as pipes that its supervisor reads
//! into the run's log ([`output`]: streams kept apart, capped to the tail, a file only if there
//! is output; [`pipe`]: a quick run's pipes are read once it ended, without ever being
//! registered with epoll). [`spawn`] starts it the way posix_spawn does (a vfork-style clone,
//! never a copy of chimed's memory), but the child writes itself into the run's cgroup before it
//! executes, so nothing the job starts is outside; [`child`] waits for it through a pidfd. When
//! chimed runs as root and the job belongs to another user, the process started is chimed
//! itself in its `__run-as` mode ([`crate::as_user`]), with an empty environment and the job on
//! its stdin: it drops to the owner's uid, gid and groups, and only then applies the job's
//! environment and execs the command.
//!
//! One small task per run ([`supervise`]) spawns its process and owns the child: it reports the
//! pid (or why the spawn failed), reads the output, waits for the exit, enforces the timeout,
//! carries out terminations (SIGTERM to every process of the run, `cgroup.kill` after the grace
//! period) and signals, ends what the main process left behind when it exits (unless the job
//! keeps its children), reads the run's cost from its cgroup, and reports the outcome to the
//! engine once the output is written and the cgroup is empty. Because that task owns the
//! child and reaps it only when it exits, the process group id it signals cannot have been reused
//! by then. The engine only starts the task (after the commit that opened the run), so spawning,
//! which blocks until the child has exec'd, happens on the async workers, in parallel, while the
//! engine goes on to its next batch.
//!
//! Supervisors report to the engine through a [`Mailbox`], without waking it for each report.
//! The runner also judges which queues are *quick* (runs lately shorter than `QUICK_RUN`, 100 ms): for
//! those the engine opens runs ahead of the free slots, and the runner starts the next one the
//! moment a process ends.
//!
//! # Layout
//!
//! The runner sits below the engine: the engine owns a [`Runner`], gives it [`SpawnOrder`]s after
//! the commits that open runs and reads its [`Report`]s from the [`Mailbox`]; nothing here
//! imports the engine but the state machine's [`Event`], the vocabulary of a report.
//!
//! - [`identity`]: who runs a job, and the environment it starts from;
//! - [`command`]: the process that starts a run, and starting it;
//! - [`dispatch`]: which opened runs start when (queue, user and daemon limits);
//! - [`supervise`]: one task per run, from its start to its reported end;
//! - [`mailbox`]: how those tasks report without waking the engine for each report;
//! - [`output`], [`pipe`], [`journal`], [`usage`]: a run's output, where it goes and what it
//!   costs its owner.
//! - [`spawn`], [`child`]: a posix_spawn-style start that puts the process in its run's cgroup
//!   before it executes, and the wait for its end through a pidfd.

mod child;
mod command;
pub mod dispatch;
pub mod identity;
pub mod journal;
pub mod mailbox;
pub mod output;
pub mod pipe;
pub mod spawn;
mod supervise;
pub mod usage;

pub use dispatch::View;
pub use identity::Identity;
pub use mailbox::Mailbox;
pub use output::log_path;

use crate::as_user;
use crate::machine::Event;
use chime_proto::{Command, JobId, RunId};
use dispatch::{Dispatch, Dispatcher, Pending, lock};
use output::OutputLog;
use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::mpsc;

/// A queue whose runs have lately taken less than this (on a moving average) is *quick*: the
/// engine opens its runs ahead of its free slots (see [`crate::engine::batch::admission`]).
const QUICK_RUN: Duration = Duration::from_millis(100);

/// A process the engine has the runner start once the batch that opened its run is durable.
#[derive(Debug, Clone)]
pub struct SpawnOrder {
    pub job: JobId,
    pub run: RunId,
    pub attempt: u32,
    pub owner: u32,
    /// The account the job was recorded with: checked before a run of another user's job.
    pub owner_name: String,
    pub queue: String,
    pub command: Command,
    pub cwd: String,
    pub env: Vec<(String, String)>,
    pub timeout_ms: Option<u64>,
    pub kill_grace_ms: u64,
    pub max_output: u64,
    /// The queue's limit of processes, as committed.
    pub parallel: Option<u32>,
    pub name: Option<String>,
    /// Each output line to the journal too.
    pub journal: bool,
    /// With `journal`: open once the run's `run started` record is written.
    pub logged: journal::Gate,
    /// What the run's cgroup may take (resolved: the job's, its queue's, `[defaults]`).
    pub limits: chime_proto::ResourceLimits,
    /// Leave what the main process started running when it exits (`--keep-children`).
    pub keep_children: bool,
}

/// What the runner observed about a run of `job`, for the engine to record.
#[derive(Debug, Clone)]
pub struct Report {
    pub job: JobId,
    pub event: Event,
}

/// What the runner shares with the rest of chimed: the checks and limits it applies to each run.
#[derive(Debug)]
pub struct Shares {
    /// The account checks before each run of another user's job.
    pub accounts: Arc<as_user::account::Accounts>,
    /// What each user may take (`running_per_user`, `output_per_user`, journal lines).
    pub user_limits: crate::limits::LimitsCell,
    /// Output on disk per user.
    pub usage: Arc<usage::Usage>,
    /// The disk is nearly full: output is no longer kept.
    pub disk_low: crate::disk::Low,
    /// chimed's cgroup subtree (or why it has none): each run gets a cgroup under it.
    pub cgroups: Arc<crate::cgroup::Tree>,
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
    dispatch: Dispatcher,
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
    user_limits: crate::limits::LimitsCell,
    /// Each user's allowance of journal lines (`--output journal`).
    journal_pace: Arc<crate::limits::Pace>,
    /// The disk is nearly full: run output is no longer kept.
    disk_low: crate::disk::Low,
    /// Makes and removes the runs' cgroups, where chimed has a subtree.
    cgroups: Option<Arc<crate::cgroup::Maker>>,
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
            cgroups,
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
            cgroups: match cgroups.is_on() {
                true => Some(Arc::new(crate::cgroup::Maker::start(cgroups)?)),
                false => None,
            },
        })
    }

    /// Output on disk per user (shared with whoever deletes output).
    pub fn usage(&self) -> Arc<usage::Usage> {
        Arc::clone(&self.usage)
    }

    /// What queries may see of the runner (see [`View`]).
    pub fn view(&self) -> View {
        View::new(self.dispatch.clone())
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
        self.events.post(Report {
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
            command: command::command(&self.identity, order),
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
                keep_children: order.keep_children,
            },
            contain: self.cgroups.as_ref().map(|maker| {
                let limits = self.user_limits.get();
                command::Contain {
                    maker: Arc::clone(maker),
                    limits: order.limits.clone(),
                    // Root and chimed's own user are exempt, as from every per-user limit.
                    tasks_per_user: (!limits.is_exempt(order.owner))
                        .then_some(limits.tasks_per_user),
                }
            }),
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
            logged: order.logged.clone(),
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
            tokio::spawn(supervise::run(
                launch,
                self.dispatch.clone(),
                Arc::clone(&self.events),
            ));
        }
    }

    /// The jobs of the opened runs, for diagnostics.
    pub fn jobs(&self) -> impl Iterator<Item = JobId> + '_ {
        self.runs.values().map(|h| h.job)
    }
}

/// A request to a running process's supervisor.
#[derive(Debug, Clone, Copy)]
enum Control {
    /// SIGTERM to the group now, SIGKILL after `grace`.
    Terminate { grace: Duration },
    /// This signal to the group, nothing more.
    Signal(i32),
}

/// Everything a run's task needs to start its process and supervise it.
#[derive(Debug)]
struct Launch {
    command: Result<command::Prepared, String>,
    accounts: Arc<as_user::account::Accounts>,
    /// `/dev/null`, for the process's stdin.
    stdin: Arc<std::fs::File>,
    supervised: Supervised,
    log: OutputLog,
    control: mpsc::UnboundedReceiver<Control>,
    /// The run's cgroup to make, where chimed has a subtree.
    contain: Option<command::Contain>,
    /// Its output is read once this opens (see [`journal`]).
    logged: journal::Gate,
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
    /// What the main process leaves running when it exits is not ended.
    keep_children: bool,
}
