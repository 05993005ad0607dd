//! `chimed`, the chime daemon: a durable job scheduler and timer service for one Linux host.
//!
//! # Theory of operation
//!
//! ```text
//! chimectl ──frames──▶ server ─▶ connection task (one per client, SO_PEERCRED uid)
//!                                   │ queries: redb read snapshot (never waits for the engine)
//!                                   │ changes: Work + reply slot ──▶ engine (one thread)
//!                                   ◀──── reply after commit ─────┤ owns every change
//!                                   │ watch: log, then live ◀─────┤ appends events, publishes them
//!  config files ─▶ reload ── Reconcile ──────────────────────────▶│ group-commits to redb
//!  (start, SIGHUP, chimectl reload)                               │ sleeps until the next due time
//!                                                                 │ pings systemd's watchdog
//!                                                                 └▶ runner: spawn, supervise, signal
//! ```
//!
//! - **One owner.** Only the [`engine`], on its own thread, changes jobs. Connections send it
//!   [`engine::batch::Work`] with a reply slot; process supervisors send it exits. Reads take a
//!   redb snapshot directly. Connections and supervisors are tasks on a small tokio runtime.
//! - **Persist, then act.** The engine applies a batch in one write transaction and commits it
//!   before it spawns a process, signals one or answers a client. A client that got "ok" has a
//!   durable job; a process that runs has a durable run record.
//! - **Group commit.** Everything ready when a batch starts (requests, exits, due jobs) shares one
//!   commit; under concurrent load the engine waits up to 200 us for the other clients' requests.
//!   With 32 clients a commit carries 15-20 submissions (see `tests/src/bin/bench-submit.rs`).
//! - **Timers in the database.** The timer index is a redb table keyed by (due time, job id). The
//!   engine keeps only the earliest due time and one sleep; a million scheduled jobs cost disk,
//!   not memory or wake-ups.
//! - **A pure state machine.** Every change goes through [`machine::step`], which has no
//!   I/O and is tested pair by pair and by property tests.
//! - **Spawning without fork, into a cgroup.** The [`runner`] starts each run the way
//!   posix_spawn does (a vfork-style clone, never a copy of chimed's memory), and the child
//!   enters its run's cgroup ([`cgroup`]) before it executes, so a run is ended, limited and
//!   accounted as a whole; jobs of other users run through a small exec helper
//!   (`chimed __run-as`).
//! - **Nothing of a user's reaches root.** The helpers that act as a user ([`as_user`]) start
//!   with an empty environment and get their orders on stdin; they become the user before they
//!   touch a path of theirs or apply the job's environment. Before each run of another user's
//!   job the account is checked again ([`as_user::account`]); submission checks are made as the
//!   submitter. Every change records who made it.
//! - **Fair shares.** One user cannot deny service to the others: connections, running slots,
//!   stored jobs, output on disk, the rate of changes and the share of the event log are bounded
//!   per user ([`limits`]), root and chimed's own user excepted.
//! - **Dispatch-ahead.** For a queue whose runs are quick, the engine may open (commit) more runs
//!   than may run at once; the runner starts at most the queue's limit of processes and starts
//!   the next opened run the moment one ends, so a slot never waits for a commit, and ends are
//!   recorded many to a commit, reported through a mailbox that wakes the engine once per batch
//!   rather than once per end. Runs that last are not opened ahead (a job shown `running` is). A run
//!   that never started leaves no record; one lost before its start was recorded runs again
//!   (at-least-once).
//! - **Recovery.** At start, before the socket listens, runs that were open when the daemon died
//!   are closed as `lost`; jobs that came due while it was down start at once.
//! - **Refuse, never replace.** A database that cannot be read or was written by a newer chimed
//!   stops the start with a clear error and is left untouched ([`store`]).
//! - **Events in the same transaction.** Every change appends an event to a bounded log in the
//!   transaction that makes it; after the commit the engine publishes the batch's events to a
//!   broadcast channel that never blocks it. [`watch`] streams the log, then the channel, and a
//!   watcher that falls behind catches up from the log. Timers (jobs without a command) fire as
//!   events.
//! - **Declared configuration.** [`config`] reads and checks `chimed.toml` and `jobs.d/`;
//!   [`reload`] hands the result to the engine, which reconciles declared jobs and queue limits
//!   in one transaction. A file that does not parse keeps its previous jobs.
//! - **Observable.** Runs' starts and ends are log records with the job's fields (journald
//!   under systemd, [`logging`]); [`metrics`] are kept by the engine and read in the Prometheus
//!   text format; [`systemd`] gets READY, STATUS, WATCHDOG (from the engine loop), RELOADING and
//!   STOPPING.
//!
//! # Start and stop
//!
//! Start: close inherited descriptors and set a private umask (`main`), read and check the
//! configuration and job files (any problem stops the start), check the state directory (ours,
//! writable by no one else) and take its lock, open the database, recover, bind the socket (taking its lock) or take
//! the one systemd passed (socket activation), start the engine, apply the declared jobs, then
//! tell systemd `READY=1`. Stop (SIGTERM or SIGINT): tell systemd `STOPPING=1`, stop accepting and
//! remove the socket (unless systemd owns it), let the engine finish the batch in flight, then
//! end running jobs (SIGTERM, grace period, SIGKILL; recorded as `interrupted`). The steps are
//! [`start::Daemon::start`] and [`start::Daemon::stop`]; [`service::run`] is chimed as systemd
//! runs it around them (READY, signals, the status line).
//!
//! # Layers
//!
//! Modules point one way, from those that serve clients down to those that keep state; a lower
//! one never imports a higher one, and no modules import each other in a circle:
//!
//! 1. [`service`], [`start`]: chimed's life;
//! 2. [`server`], [`connection`], [`watch`]: the socket and each client;
//! 3. [`requests`] (one handler per request), [`reload`];
//! 4. [`context`]: what they all share;
//! 5. [`engine`] (the batch loop; [`engine::batch`] applies a batch: its core and one file per
//!    family of change), [`runner`] (identity, command, dispatch, supervision), [`metrics`];
//! 6. [`config`] (the files; `chimed --check-config`), [`logging`] (where its `log` setting
//!    sends chimed's log), [`as_user`] (acting as another user);
//! 7. [`spec`] (every rule of a job spec, once, with typed fields: chimectl's submissions, job
//!    files and the engine all ask it), [`wire`] (stored shapes to wire shapes), [`access`]
//!    (who may see a job);
//! 8. [`machine`] (the pure state machine), [`store`], [`schedule`], [`job`] (what is stored),
//!    [`limits`], and the small ones ([`disk`], [`fds`], [`lock`], [`systemd`]).

pub mod access;
pub mod as_user;
pub mod cgroup;
pub mod config;
pub mod connection;
pub mod context;
pub mod disk;
pub mod engine;
pub mod fds;
pub mod job;
pub mod limits;
pub mod lock;
pub mod logging;
pub mod machine;
pub mod metrics;
pub mod reload;
pub mod requests;
pub mod runner;
pub mod schedule;
pub mod server;
pub mod service;
pub mod spec;
pub mod start;
pub mod store;
pub mod systemd;
pub mod watch;
pub mod wire;

pub use service::run;
pub use start::Daemon;
