//! The fleet's hosts on PostgreSQL (issue 15): who is a member, until when (a lease on the
//! server's clock), and the fencing that keeps a host whose lease ran out from writing.
//!
//! # The rules
//!
//! - **One writer at a time.** Every write transaction of every host begins by taking the
//!   fleet's advisory writer lock ([`write`]), so the hosts' transactions commit one after another, as
//!   redb's single writer makes one host's do: ids, counters and the event log's sequence are
//!   taken in commit order and stay gap-free, and a due occurrence is taken by the first host to
//!   commit (the next finds it gone).
//! - **Leases on the server's clock.** A host [`join`]s (and rejoins) with a new epoch, and
//!   [`renew`]s its lease well before it ends; `now()` is the server's, so hosts' clocks may
//!   disagree without harm.
//! - **Fencing under the lock.** [`write`] checks, holding the writer lock, that the host's
//!   epoch is current and its lease has not ended; a host declared gone ([`fence`], by another
//!   host, which closes its runs as `lost` in the same transaction) has its epoch moved on. As
//!   declaring a host gone also needs the writer lock, no write of a host can commit after the
//!   transaction that declared it gone: its late writes are refused, and it must end its runs
//!   and [`join`] again.
//! - **An occurrence starts once.** Opening a run for a due occurrence also [`claim`]s it in
//!   `chime_occurrences`, whose primary key (job, due time) makes a second claim of the same
//!   occurrence fail whatever the hosts do: the writer lock is how it is avoided, the key is
//!   what makes it impossible.

use super::KvError;
use super::pg::{Connection, PgKv};
use std::ops::DerefMut;
use std::time::Duration;

/// Creates what a fleet's store needs and does not have yet: the store's tables
/// ([`super::pg::create_tables`]) and the hosts', the writer lock's and the claims'.
pub fn create_tables(connection: &mut Connection) -> Result<(), KvError> {
    super::pg::create_tables(connection.client())?;
    connection.client().batch_execute(
        "CREATE TABLE IF NOT EXISTS chime_hosts (
             host text PRIMARY KEY,
             epoch bigint NOT NULL,
             lease_until timestamptz NOT NULL
         );
         CREATE TABLE IF NOT EXISTS chime_occurrences (
             job bigint NOT NULL,
             due_ms bigint NOT NULL,
             host text NOT NULL,
             PRIMARY KEY (job, due_ms)
         );",
    )?;
    Ok(())
}

/// A host's membership: its name and the epoch it joined with.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Member {
    pub host: String,
    pub epoch: i64,
}

/// Why a host may not write.
#[derive(Debug, thiserror::Error)]
pub enum Refused {
    /// Its lease ended, or another host declared it gone: it must end its runs and join again.
    #[error(
        "host {host} is fenced (epoch {epoch} is no longer current or its lease ended): it must end its runs and join the fleet again"
    )]
    Fenced { host: String, epoch: i64 },
    #[error(transparent)]
    Store(#[from] KvError),
}

impl From<postgres::Error> for Refused {
    fn from(err: postgres::Error) -> Self {
        Self::Store(err.into())
    }
}

fn seconds(d: Duration) -> f64 {
    d.as_secs_f64()
}

/// Joins the fleet as `host` (or joins again): a new epoch, and a lease of `lease` from now.
pub fn join(connection: &mut Connection, host: &str, lease: Duration) -> Result<Member, KvError> {
    let row = connection.client().query_one(
        "INSERT INTO chime_hosts (host, epoch, lease_until)
             VALUES ($1, 1, now() + make_interval(secs => $2::float8))
         ON CONFLICT (host) DO UPDATE
             SET epoch = chime_hosts.epoch + 1, lease_until = EXCLUDED.lease_until
         RETURNING epoch",
        &[&host, &seconds(lease)],
    )?;
    Ok(Member {
        host: host.to_owned(),
        epoch: row.get(0),
    })
}

/// Extends `member`'s lease to `lease` from now, if it still holds it; otherwise it is fenced.
pub fn renew(connection: &mut Connection, member: &Member, lease: Duration) -> Result<(), Refused> {
    let renewed = connection.client().execute(
        "UPDATE chime_hosts SET lease_until = now() + make_interval(secs => $3::float8)
         WHERE host = $1 AND epoch = $2 AND lease_until > now()",
        &[&member.host, &member.epoch, &seconds(lease)],
    )?;
    if renewed == 1 {
        Ok(())
    } else {
        Err(fenced(member))
    }
}

fn fenced(member: &Member) -> Refused {
    Refused::Fenced {
        host: member.host.clone(),
        epoch: member.epoch,
    }
}

/// The fleet's writer lock: a transaction-scoped advisory lock, which (unlike a row lock) takes
/// no transaction id, so that a transaction that writes nothing (an idle host's poll) commits
/// without a WAL flush. Held until the transaction ends.
const WRITER_LOCK: &str =
    "BEGIN; SET LOCAL lock_timeout = '1s'; SELECT pg_advisory_xact_lock(7526411284)";

/// Ends the sessions that hold the writer lock and are not a live member's (see [`write`]);
/// how many.
fn end_stale_writers(connection: &mut Connection) -> Result<u64, Refused> {
    let ended = super::pg::off_runtime(|| {
        connection.client().query(
            "SELECT a.application_name, pg_terminate_backend(l.pid)
             FROM pg_locks l JOIN pg_stat_activity a ON a.pid = l.pid
             WHERE l.locktype = 'advisory' AND l.granted
               AND l.classid = (7526411284 >> 32)::oid
               AND l.objid = (7526411284 & 4294967295)::oid AND l.objsubid = 1
               AND NOT EXISTS (
                   SELECT 1 FROM chime_hosts h
                   WHERE a.application_name = 'chime/' || h.host || '/' || h.epoch
                     AND h.lease_until > now())",
            &[],
        )
    })?;
    for row in &ended {
        let name: String = row.get(0);
        tracing::warn!(session = %name, "ended the session of a fleet host that held the writer lock past its membership (it was stopped or cut off)");
    }
    Ok(ended.len() as u64)
}

/// Names this connection's session after `member` (`chime/HOST/EPOCH`), so that the other
/// hosts can tell whose it is when it holds the writer lock (see [`write`]).
pub fn name_session(connection: &mut Connection, member: &Member) -> Result<(), KvError> {
    // Host ids are letters, digits, `.`, `_` and `-` (checked at start): nothing to quote.
    let sql = format!(
        "SET application_name = 'chime/{}/{}'",
        member.host.replace('\'', ""),
        member.epoch
    );
    super::pg::off_runtime(|| connection.client().batch_execute(&sql))?;
    Ok(())
}

/// Begins a write transaction for `member`: takes the fleet's writer lock (waiting for the
/// host that holds it to commit), then checks that `member` may still write.
///
/// A host stopped (SIGSTOP, a frozen VM) while it held the lock would hold it for good, and the
/// whole fleet with it: so the lock is waited for a second at a time, and between waits a
/// holder that is no longer a live member (its lease ended, or it was declared gone) has its
/// session ended by the server (`pg_terminate_backend`), which rolls its transaction back.
/// Writers are known by their session's `application_name`, `chime/HOST/EPOCH`
/// ([`name_session`]).
pub fn write<'c>(
    connection: &'c mut Connection,
    member: &Member,
) -> Result<PgKv<&'c mut Connection>, Refused> {
    // The transaction and the lock in one round trip, the check (prepared once) in another.
    loop {
        let taken = super::pg::off_runtime(|| connection.client().batch_execute(WRITER_LOCK));
        match taken {
            Ok(()) => break,
            Err(err) if err.code() == Some(&postgres::error::SqlState::LOCK_NOT_AVAILABLE) => {
                let _ = super::pg::off_runtime(|| connection.client().batch_execute("ROLLBACK"));
                end_stale_writers(connection)?;
            }
            Err(err) => {
                let _ = super::pg::off_runtime(|| connection.client().batch_execute("ROLLBACK"));
                return Err(err.into());
            }
        }
    }
    let mut kv = PgKv::begun(connection);
    let check = kv.prepared(
        "SELECT 1 FROM chime_hosts WHERE host = $1 AND epoch = $2 AND lease_until > now()",
    )?;
    let current = kv
        .client()?
        .query_opt(&check, &[&member.host, &member.epoch])?;
    if current.is_none() {
        kv.rollback()?;
        return Err(fenced(member));
    }
    Ok(kv)
}

/// The members whose lease has ended, as seen in `kv` (a write transaction, which holds the
/// writer lock).
pub fn expired<C: DerefMut<Target = Connection>>(kv: &mut PgKv<C>) -> Result<Vec<Member>, KvError> {
    let rows = kv.client()?.query(
        "SELECT host, epoch FROM chime_hosts WHERE lease_until <= now() ORDER BY host",
        &[],
    )?;
    Ok(rows
        .into_iter()
        .map(|r| Member {
            host: r.get(0),
            epoch: r.get(1),
        })
        .collect())
}

/// Declares `member` gone, in `kv` (a write transaction, which holds the writer lock): its
/// epoch moves on, so that none of its writes can commit after this transaction does. Whether
/// it was still that member (another host may have fenced it first, or it joined again).
pub fn fence<C: DerefMut<Target = Connection>>(
    kv: &mut PgKv<C>,
    member: &Member,
) -> Result<bool, KvError> {
    let moved = kv.client()?.execute(
        "UPDATE chime_hosts SET epoch = epoch + 1 WHERE host = $1 AND epoch = $2",
        &[&member.host, &member.epoch],
    )?;
    Ok(moved == 1)
}

/// Claims the occurrence of `job` due at `due_ms` for `member`, in `kv` (the transaction that
/// opens its run): `false` if it was claimed before, by any host, and then no run may be opened
/// for it.
pub fn claim<C: DerefMut<Target = Connection>>(
    kv: &mut PgKv<C>,
    member: &Member,
    job: u64,
    due_ms: i64,
) -> Result<bool, KvError> {
    let job = i64::try_from(job)
        .map_err(|_| KvError::Unfit(format!("job id {job} does not fit PostgreSQL's bigint")))?;
    let claimed = kv.client()?.execute(
        "INSERT INTO chime_occurrences (job, due_ms, host) VALUES ($1, $2, $3)
         ON CONFLICT (job, due_ms) DO NOTHING",
        &[&job, &due_ms, &member.host],
    )?;
    Ok(claimed == 1)
}
