//! The store on PostgreSQL (`--store postgresql://...`, issue 15): the same tables, rows and
//! indexes as on redb, kept by a server that several hosts can reach.
//!
//! # How it fits
//!
//! [`Store::write`](super::Store::write) and [`Store::read`](super::Store::read) hand the
//! writer and the reader a [`Source::Kv`](super::table::Source) instead of redb's transaction;
//! everything above (`writer/`, `reader.rs`, `index.rs`) is the same code for both backends.
//!
//! - **Writes**: one connection, used by the engine thread alone (one writer, as with redb).
//!   Every write transaction begins with the fleet's writer lock and this host's lease check
//!   ([`fleet::write`]) and ends with `COMMIT`, durable when the server's `synchronous_commit`
//!   is on (its default): acknowledged means committed on the server.
//! - **Reads**: snapshots (`REPEATABLE READ READ ONLY`) on connections from a small pool, so
//!   requests read beside the engine as they do beside redb's writer.
//! - **The lease**: this host joins the fleet's `chime_hosts` with a new epoch at open, and a
//!   thread renews its lease five times per lease (`fleet_lease`, 15 s by default). A host
//!   whose lease ran out (stopped, cut off) is refused every write from then on
//!   ([`StoreError::Fenced`]): chimed then ends its runs and exits, to be started again by
//!   systemd with a new epoch.
//! - **Hosts that are gone**: [`Store::write_fencing`](super::Store::write_fencing) declares
//!   the hosts whose lease ended gone, under the writer lock, and the engine closes their runs
//!   as `lost` in the same transaction (retried by each job's policy, on whichever host
//!   commits the retry), so that no write of a gone host can follow the transaction that
//!   closed its runs.
//! - **Runs belong to their host**: each open run records the host that opened it
//!   ([`OpenRun::host`](crate::job::OpenRun)); a host's start closes only its own runs as lost.

use super::StoreError;
use super::kv::fleet::{self, Member, Refused};
use super::kv::pg::Connection;
use super::table::KvTxn;
use crate::job::HostId;
use std::cell::RefCell;
use std::ops::{Deref, DerefMut};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// How long a lease lasts from its last renewal, unless `fleet_lease` says otherwise.
pub const LEASE: Duration = Duration::from_secs(15);
/// How many times a lease is renewed within its length.
const RENEWALS: u32 = 5;
/// Sent with every commit that changed something: the other hosts' listeners wake their engines.
const NOTIFY: &str = "NOTIFY chime_changed";

/// Most idle reading connections kept.
const POOL_IDLE: usize = 8;

/// What a write transaction does, given its tables and the hosts it declared gone.
pub(super) type Work<'f> =
    dyn for<'x> FnMut(&'x KvTxn<'x>, &[HostId]) -> Result<(), StoreError> + 'f;

/// A byte-keyed backend holding a [`Store`](super::Store)'s tables: PostgreSQL ([`Remote`]),
/// or memory for the daemon's own tests ([`InMemory`]).
pub(super) trait KvStore: Send + Sync + std::fmt::Debug {
    /// Runs `f` in a write transaction and commits it if `f` succeeds; if `f` fails, nothing
    /// is written. With `fence`, the hosts whose lease ended are first declared gone in the same
    /// transaction, and `f` is given their names (to close their runs as `lost`: see
    /// [`Store::write_fencing`](super::Store::write_fencing)).
    fn write(&self, fence: bool, f: &mut Work<'_>) -> Result<(), StoreError>;

    /// A snapshot for reading.
    fn read(&self) -> Result<Box<KvTxn<'static>>, StoreError>;

    /// This host's name in a fleet (`None`: not a fleet).
    fn host(&self) -> Option<String> {
        None
    }

    /// Calls `wake` whenever another host commits a change (a hint: none is missed for long, as
    /// the engine polls too). Nothing outside a fleet.
    fn on_change(&self, wake: Box<dyn Fn() + Send + Sync>) {
        drop(wake);
    }

    /// This host's name and the fleet's hosts (`None`: not a fleet).
    fn fleet(&self) -> Result<Option<(String, Vec<HostLease>)>, StoreError> {
        Ok(None)
    }
}

/// A fleet host's membership as the database has it: its name, its epoch, and how long its
/// lease has left by the server's clock (ms; negative once it ended).
pub type HostLease = (String, i64, i64);

/// The PostgreSQL side of a [`Store`](super::Store).
pub(super) struct Remote {
    /// The connection string, as given (for connecting).
    config: String,
    /// What is shown for it: the string without a password.
    pub(super) shown: String,
    writer: Mutex<Option<Connection>>,
    member: Arc<Mutex<Member>>,
    pool: Arc<Pool>,
}

impl std::fmt::Debug for Remote {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Remote")
            .field("shown", &self.shown)
            .finish_non_exhaustive()
    }
}

fn backend(err: impl std::fmt::Display) -> StoreError {
    StoreError::Backend(format!("PostgreSQL: {err}"))
}

/// A connection string with any password left out, for messages and `status`.
pub fn shown(config: &str) -> String {
    let mut out = Vec::new();
    for part in config.split_whitespace() {
        if part.starts_with("password=") {
            out.push("password=…".to_owned());
        } else {
            out.push(part.to_owned());
        }
    }
    let joined = out.join(" ");
    // URL form: postgresql://user:secret@host/db
    match (joined.find("://"), joined.find('@')) {
        (Some(scheme), Some(at)) if at > scheme => {
            let userinfo = &joined[scheme + 3..at];
            match userinfo.split_once(':') {
                Some((user, _)) => format!("{}{user}:…{}", &joined[..scheme + 3], &joined[at..]),
                None => joined,
            }
        }
        _ => joined,
    }
}

impl Remote {
    /// Connects, creates the tables a new database lacks, and joins as `host` with leases of
    /// `lease`.
    pub(super) fn open(config: &str, host: &str, lease: Duration) -> Result<Self, StoreError> {
        let mut connection = Connection::open(config).map_err(|err| {
            StoreError::Backend(format!(
                "cannot connect to PostgreSQL ({}): {err}",
                shown(config)
            ))
        })?;
        create_tables_once(&mut connection)?;
        let alive: Vec<String> = connection
            .client()
            .query(
                "SELECT host FROM chime_hosts WHERE host = $1 AND lease_until > now()",
                &[&host],
            )
            .map_err(backend)?
            .into_iter()
            .map(|r| r.get(0))
            .collect();
        if !alive.is_empty() {
            // Its last run ended less than a lease ago (a restart): joining again moves its
            // epoch on, which fences whatever of it might still be writing.
            tracing::info!(
                host,
                "this host's previous lease has not ended yet: joining again fences it"
            );
        }
        let member = fleet::join(&mut connection, host, lease).map_err(backend)?;
        fleet::name_session(&mut connection, &member).map_err(backend)?;
        tracing::info!(host, epoch = member.epoch, database = %shown(config), "joined the database as a host");
        let member = Arc::new(Mutex::new(member));
        spawn_renewer(config.to_owned(), Arc::clone(&member), lease)?;
        Ok(Self {
            config: config.to_owned(),
            shown: shown(config),
            writer: Mutex::new(Some(connection)),
            member,
            pool: Arc::new(Pool {
                config: config.to_owned(),
                idle: Mutex::new(Vec::new()),
            }),
        })
    }
}

impl KvStore for Remote {
    /// A write transaction under the fleet's writer lock, after this host's lease check.
    fn write(&self, fence: bool, f: &mut Work<'_>) -> Result<(), StoreError> {
        let mut slot = self.writer.lock().unwrap_or_else(|p| p.into_inner());
        let member = self
            .member
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone();
        if slot.as_mut().is_none_or(|c| c.client().is_closed()) {
            let mut connection = Connection::open(&self.config).map_err(backend)?;
            fleet::name_session(&mut connection, &member).map_err(backend)?;
            *slot = Some(connection);
        }
        let connection = slot.as_mut().expect("just connected");
        let result = (|| {
            let kv = fleet::write(&mut *connection, &member).map_err(|err| match err {
                Refused::Fenced { .. } => StoreError::Fenced(format!(
                    "{err}; chimed writes nothing until it is restarted (systemctl restart chimed)"
                )),
                Refused::Store(err) => backend(err),
            })?;
            let mut kv = kv;
            let mut gone: Vec<HostId> = Vec::new();
            if fence {
                for expired in fleet::expired(&mut kv).map_err(backend)? {
                    if expired != member && fleet::fence(&mut kv, &expired).map_err(backend)? {
                        tracing::warn!(host = %expired.host, epoch = expired.epoch, "a fleet host's lease ended: it is declared gone, and its runs are closed as lost");
                        gone.push(expired.host.as_str().into());
                    }
                }
            }
            let cell = RefCell::new(kv);
            f(&cell, &gone)?;
            let kv = cell.into_inner();
            // A change wakes the other hosts at its commit (a hint: they poll regardless).
            let notify = if kv.wrote() || !gone.is_empty() {
                NOTIFY
            } else {
                ""
            };
            kv.commit_after(notify).map_err(backend)
        })();
        if connection.client().is_closed() {
            *slot = None;
        }
        result
    }

    /// A snapshot on a pooled connection.
    fn host(&self) -> Option<String> {
        Some(
            self.member
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .host
                .clone(),
        )
    }

    fn on_change(&self, wake: Box<dyn Fn() + Send + Sync>) {
        let config = self.config.clone();
        let spawned = std::thread::Builder::new()
            .name("chime-listen".into())
            .spawn(move || listen(&config, &*wake));
        if let Err(err) = spawned {
            tracing::warn!(error = %err, "cannot start the thread that hears other hosts; polling only");
        }
    }

    fn fleet(&self) -> Result<Option<(String, Vec<HostLease>)>, StoreError> {
        let mut connection = Pool::take(&self.pool)?;
        let rows = super::kv::pg::off_runtime(|| {
            connection.client().query(
                "SELECT host, epoch, \
                 (extract(epoch FROM lease_until - now()) * 1000)::bigint \
                 FROM chime_hosts ORDER BY host",
                &[],
            )
        })
        .map_err(backend)?;
        let this = self
            .member
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .host
            .clone();
        Ok(Some((
            this,
            rows.into_iter()
                .map(|r| (r.get(0), r.get(1), r.get(2)))
                .collect(),
        )))
    }

    /// A pooled connection that broke (the server restarted) is found out here: the pool is
    /// emptied, and the snapshot begun once more on a new connection.
    fn read(&self) -> Result<Box<KvTxn<'static>>, StoreError> {
        let mut tries = 2;
        loop {
            tries -= 1;
            let connection = Pool::take(&self.pool)?;
            match super::kv::pg::PgKv::read(connection) {
                Ok(snapshot) => return Ok(Box::new(RefCell::new(snapshot))),
                Err(_) if tries > 0 => {
                    self.pool
                        .idle
                        .lock()
                        .unwrap_or_else(|p| p.into_inner())
                        .clear();
                }
                Err(err) => return Err(backend(err)),
            }
        }
    }
}

/// Tables in memory, for tests: a write works on a copy that replaces the tables when it
/// commits, a read on a copy of them (so tests of the byte side need no server).
#[derive(Debug, Default)]
pub(super) struct InMemory {
    pub(super) tables: InMemoryTables,
}

/// The tables of an [`InMemory`] store, shared: a test reopening "the same store" gets them.
pub type InMemoryTables = Arc<Mutex<super::kv::memory::Memory>>;

impl KvStore for InMemory {
    fn write(&self, _fence: bool, f: &mut Work<'_>) -> Result<(), StoreError> {
        let mut tables = self.tables.lock().unwrap_or_else(|p| p.into_inner());
        let copy = RefCell::new(tables.clone());
        f(&copy, &[])?;
        *tables = copy.into_inner();
        Ok(())
    }

    fn read(&self) -> Result<Box<KvTxn<'static>>, StoreError> {
        let tables = self.tables.lock().unwrap_or_else(|p| p.into_inner());
        Ok(Box::new(RefCell::new(tables.clone())))
    }
}

/// Creates the tables of a new database; the advisory lock makes hosts starting together take
/// turns.
fn create_tables_once(connection: &mut Connection) -> Result<(), StoreError> {
    connection
        .client()
        .batch_execute("SELECT pg_advisory_lock(7526411283)")
        .map_err(backend)?;
    let created = fleet::create_tables(connection).map_err(backend);
    let _ = connection
        .client()
        .batch_execute("SELECT pg_advisory_unlock(7526411283)");
    created
}

/// Renews the lease until the process ends; a renewal refused (the lease ran out, another host
/// fenced this one) is logged once, and the writes are refused from then on by their own check.
fn spawn_renewer(
    config: String,
    member: Arc<Mutex<Member>>,
    lease: Duration,
) -> Result<(), StoreError> {
    let mut connection = Connection::open(&config).map_err(backend)?;
    std::thread::Builder::new()
        .name("chime-lease".into())
        .spawn(move || {
            let mut fenced = false;
            loop {
                std::thread::sleep(lease / RENEWALS);
                if connection.client().is_closed() {
                    match Connection::open(&config) {
                        Ok(c) => connection = c,
                        Err(err) => {
                            tracing::warn!(error = %err, "cannot reach PostgreSQL to renew this host's lease");
                            continue;
                        }
                    }
                }
                let current = member.lock().unwrap_or_else(|p| p.into_inner()).clone();
                match fleet::renew(&mut connection, &current, lease) {
                    Ok(()) => fenced = false,
                    Err(Refused::Fenced { .. }) if !fenced => {
                        fenced = true;
                        tracing::error!(host = %current.host, epoch = current.epoch, "this host's lease ran out and it is fenced: its writes are refused until chimed is restarted");
                    }
                    Err(Refused::Fenced { .. }) => {}
                    Err(Refused::Store(err)) => {
                        tracing::warn!(error = %err, "renewing this host's lease failed; trying again");
                    }
                }
            }
        })
        .map_err(|err| StoreError::Backend(format!("cannot start the lease thread: {err}")))?;
    Ok(())
}

/// Listens for other hosts' commits (`LISTEN`) on a connection of its own, for good: each
/// notification from another session calls `wake`; a broken connection is made again.
fn listen(config: &str, wake: &(dyn Fn() + Send + Sync)) {
    loop {
        let mut connection = match Connection::open(config) {
            Ok(c) => c,
            Err(err) => {
                tracing::debug!(error = %err, "cannot listen for other hosts yet");
                std::thread::sleep(Duration::from_secs(1));
                continue;
            }
        };
        let client = connection.client();
        if client.batch_execute("LISTEN chime_changed").is_err() {
            std::thread::sleep(Duration::from_secs(1));
            continue;
        }
        let own = client
            .query_one("SELECT pg_backend_pid()", &[])
            .map(|r| r.get::<_, i32>(0))
            .unwrap_or(0);
        let mut notifications = client.notifications();
        let mut heard = notifications.blocking_iter();
        loop {
            match postgres::fallible_iterator::FallibleIterator::next(&mut heard) {
                Ok(Some(note)) if note.process_id() != own => wake(),
                Ok(Some(_)) => {}
                Ok(None) | Err(_) => break,
            }
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// Idle reading connections.
struct Pool {
    config: String,
    idle: Mutex<Vec<Connection>>,
}

impl Pool {
    fn take(pool: &Arc<Self>) -> Result<Pooled, StoreError> {
        let idle = pool.idle.lock().unwrap_or_else(|p| p.into_inner()).pop();
        let connection = match idle {
            Some(c) if !c.is_closed() => c,
            _ => Connection::open(&pool.config).map_err(backend)?,
        };
        Ok(Pooled {
            connection: Some(connection),
            pool: Arc::clone(pool),
        })
    }
}

/// A reading connection, given back to its pool when dropped (unless it broke).
pub(super) struct Pooled {
    connection: Option<Connection>,
    pool: Arc<Pool>,
}

impl Deref for Pooled {
    type Target = Connection;
    fn deref(&self) -> &Connection {
        self.connection.as_ref().expect("held until dropped")
    }
}

impl DerefMut for Pooled {
    fn deref_mut(&mut self) -> &mut Connection {
        self.connection.as_mut().expect("held until dropped")
    }
}

impl Drop for Pooled {
    fn drop(&mut self) {
        if let Some(connection) = self.connection.take()
            && !connection.is_closed()
        {
            let mut idle = self.pool.idle.lock().unwrap_or_else(|p| p.into_inner());
            if idle.len() < POOL_IDLE {
                idle.push(connection);
            }
        }
    }
}
