//! The PostgreSQL backend: each [`Table`] is a table `chime_<name>` of `k bytea PRIMARY KEY,
//! v bytea NOT NULL` ([`create_tables`]). `bytea` compares as bytes (no collation), so its
//! B-tree index orders keys as redb does. [`PgKv`] works in one transaction on one
//! [`Connection`] (the blocking `postgres` client: the engine thread blocks on its commits
//! already), whose statements are prepared once and kept. Every call is a round trip to the
//! server.

use super::{Entry, KvError, KvRead, KvWrite, Order, Table};
use postgres::types::ToSql;
use std::collections::{BTreeMap, HashMap};
use std::ops::DerefMut;

/// Runs `f`, which blocks on the server, where blocking is allowed: as it is on the engine's
/// thread and the blocking pool, and, on a worker of tokio's multi-threaded runtime (a request
/// reading a snapshot), after handing the worker's other tasks to another thread
/// (`block_in_place`). The `postgres` client runs its own small runtime to wait, which tokio
/// refuses to start on a worker thread.
pub fn off_runtime<R>(f: impl FnOnce() -> R) -> R {
    match tokio::runtime::Handle::try_current() {
        Ok(handle) if handle.runtime_flavor() == tokio::runtime::RuntimeFlavor::MultiThread => {
            tokio::task::block_in_place(f)
        }
        _ => f(),
    }
}

/// A connection to the server and the statements prepared on it.
pub struct Connection {
    /// `None` only while dropped (see `Drop`).
    client: Option<postgres::Client>,
    statements: HashMap<String, postgres::Statement>,
}

impl std::fmt::Debug for Connection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Connection")
            .field("statements", &self.statements.len())
            .finish_non_exhaustive()
    }
}

impl Connection {
    /// Connects with a libpq-style connection string (`host=/run/postgresql dbname=chime` or
    /// `postgresql://...`), without TLS: a Unix socket or a trusted network.
    pub fn open(config: &str) -> Result<Self, KvError> {
        Ok(Self {
            client: Some(off_runtime(|| {
                postgres::Client::connect(config, postgres::NoTls)
            })?),
            statements: HashMap::new(),
        })
    }

    /// Whether the connection broke (the server went away): it is of no more use.
    pub fn is_closed(&self) -> bool {
        self.client.as_ref().is_none_or(postgres::Client::is_closed)
    }

    /// The client, for what is not a table's (creating the tables, say).
    pub fn client(&mut self) -> &mut postgres::Client {
        self.client
            .as_mut()
            .expect("a connection has its client until dropped")
    }
}

/// Creates the tables that do not exist yet.
pub fn create_tables(client: &mut postgres::Client) -> Result<(), KvError> {
    let mut sql = String::new();
    for table in Table::ALL {
        sql.push_str(&format!(
            "CREATE TABLE IF NOT EXISTS chime_{} (k bytea PRIMARY KEY, v bytea NOT NULL);\n",
            table.name()
        ));
    }
    client.batch_execute(&sql)?;
    Ok(())
}

impl Drop for Connection {
    /// Closing a connection waits for the server, so it is done where waiting is allowed.
    fn drop(&mut self) {
        if let Some(client) = self.client.take() {
            off_runtime(move || drop(client));
        }
    }
}

/// One transaction on a connection, borrowed (`&mut Connection`) or owned (a reader's,
/// taken from a pool and given back when it ends). Dropped without [`PgKv::commit`], it rolls
/// back.
pub struct PgKv<C: DerefMut<Target = Connection>> {
    connection: C,
    open: bool,
    /// Writes not sent yet, per table: the last value written to each key (`None`: removed).
    /// Sent together, a statement or two per table, before any read that could see them and at
    /// the commit ([`PgKv::flush`]): a transaction's writes cost a few round trips, not one
    /// each. A key's own reads are answered from here.
    pending: BTreeMap<Table, BTreeMap<Vec<u8>, Option<Vec<u8>>>>,
    /// Something was written to the tables.
    wrote: bool,
}

impl<C: DerefMut<Target = Connection>> std::fmt::Debug for PgKv<C> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PgKv")
            .field("open", &self.open)
            .finish_non_exhaustive()
    }
}

impl<C: DerefMut<Target = Connection>> PgKv<C> {
    /// Begins a read-write transaction (read committed: the fleet's writer lock, not the
    /// isolation level, orders the writers).
    pub fn write(connection: C) -> Result<Self, KvError> {
        Self::write_then(connection, "")
    }

    /// [`PgKv::write`], with `sql` (statements without parameters or results, such as taking
    /// a lock) sent with the `BEGIN`, in the same round trip.
    pub fn write_then(mut connection: C, sql: &str) -> Result<Self, KvError> {
        let begin = if sql.is_empty() {
            "BEGIN".to_owned()
        } else {
            format!("BEGIN; {sql}")
        };
        off_runtime(|| connection.client().batch_execute(&begin))?;
        Ok(Self {
            connection,
            open: true,
            pending: BTreeMap::new(),
            wrote: false,
        })
    }

    /// A write transaction its caller began on `connection` (with `BEGIN` and whatever went
    /// with it, such as taking a lock).
    pub fn begun(connection: C) -> Self {
        Self {
            connection,
            open: true,
            pending: BTreeMap::new(),
            wrote: false,
        }
    }

    /// Begins a read-only snapshot (repeatable read: every statement sees the same commit).
    pub fn read(mut connection: C) -> Result<Self, KvError> {
        off_runtime(|| {
            connection
                .client()
                .batch_execute("BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY")
        })?;
        Ok(Self {
            connection,
            open: true,
            pending: BTreeMap::new(),
            wrote: false,
        })
    }

    /// Commits; durable when it returns with `synchronous_commit = on` (the server's default).
    pub fn commit(self) -> Result<(), KvError> {
        self.commit_after("")
    }

    /// Whether this transaction has written (or holds writes to send).
    pub fn wrote(&self) -> bool {
        self.wrote
    }

    /// [`PgKv::commit`], with `sql` (statements without parameters or results, such as a
    /// `NOTIFY`) sent in the same round trip, before the `COMMIT`.
    pub fn commit_after(mut self, sql: &str) -> Result<(), KvError> {
        self.flush()?;
        self.open = false;
        let end = if sql.is_empty() {
            "COMMIT".to_owned()
        } else {
            format!("{sql}; COMMIT")
        };
        off_runtime(|| self.connection.client().batch_execute(&end))?;
        Ok(())
    }

    /// Ends the transaction, changing nothing.
    pub fn rollback(mut self) -> Result<(), KvError> {
        self.open = false;
        off_runtime(|| self.connection.client().batch_execute("ROLLBACK"))?;
        Ok(())
    }

    /// The client, for statements that are not a table's (the fleet's locks and leases).
    /// Writes not sent yet are sent first, so that what it does sees them.
    pub fn client(&mut self) -> Result<&mut postgres::Client, KvError> {
        self.flush()?;
        Ok(self.connection.client())
    }

    /// Sends the writes not sent yet: per table, the removals in one statement and the
    /// insertions in another (each key once: its last write).
    pub fn flush(&mut self) -> Result<(), KvError> {
        for (table, writes) in std::mem::take(&mut self.pending) {
            let mut removed: Vec<Vec<u8>> = Vec::new();
            let (mut keys, mut values): (Vec<Vec<u8>>, Vec<Vec<u8>>) = (Vec::new(), Vec::new());
            for (key, value) in writes {
                match value {
                    Some(value) => {
                        keys.push(key);
                        values.push(value);
                    }
                    None => removed.push(key),
                }
            }
            if !removed.is_empty() {
                let sql = format!("DELETE FROM chime_{} WHERE k = ANY($1)", table.name());
                let statement = self.statement(sql)?;
                off_runtime(|| self.connection.client().execute(&statement, &[&removed]))?;
            }
            if !keys.is_empty() {
                let sql = format!(
                    "INSERT INTO chime_{} (k, v) SELECT * FROM unnest($1::bytea[], $2::bytea[]) \
                     ON CONFLICT (k) DO UPDATE SET v = EXCLUDED.v",
                    table.name()
                );
                let statement = self.statement(sql)?;
                off_runtime(|| {
                    self.connection
                        .client()
                        .execute(&statement, &[&keys, &values])
                })?;
            }
        }
        Ok(())
    }

    /// A statement prepared once per connection.
    pub fn prepared(&mut self, sql: &str) -> Result<postgres::Statement, KvError> {
        self.statement(sql.to_owned())
    }

    fn end(&mut self) {
        if std::mem::take(&mut self.open) && !self.connection.is_closed() {
            let _ = off_runtime(|| self.connection.client().batch_execute("ROLLBACK"));
        }
    }

    fn statement(&mut self, sql: String) -> Result<postgres::Statement, KvError> {
        if let Some(statement) = self.connection.statements.get(&sql) {
            return Ok(statement.clone());
        }
        let statement = off_runtime(|| self.connection.client().prepare(&sql))?;
        self.connection.statements.insert(sql, statement.clone());
        Ok(statement)
    }
}

impl<C: DerefMut<Target = Connection>> Drop for PgKv<C> {
    fn drop(&mut self) {
        self.end();
    }
}

impl<C: DerefMut<Target = Connection>> KvRead for PgKv<C> {
    fn get(&mut self, table: Table, key: &[u8]) -> Result<Option<Vec<u8>>, KvError> {
        if let Some(written) = self.pending.get(&table).and_then(|t| t.get(key)) {
            return Ok(written.clone());
        }
        let sql = format!("SELECT v FROM chime_{} WHERE k = $1", table.name());
        let statement = self.statement(sql)?;
        let row = off_runtime(|| self.connection.client().query_opt(&statement, &[&key]))?;
        Ok(row.map(|r| r.get(0)))
    }

    fn count(&mut self, table: Table) -> Result<u64, KvError> {
        self.flush()?;
        let sql = format!("SELECT count(*) FROM chime_{}", table.name());
        let statement = self.statement(sql)?;
        let n: i64 = off_runtime(|| self.connection.client().query_one(&statement, &[]))?.get(0);
        Ok(n.unsigned_abs())
    }

    fn range(
        &mut self,
        table: Table,
        from: Option<&[u8]>,
        to: Option<&[u8]>,
        order: Order,
        limit: usize,
    ) -> Result<Vec<Entry>, KvError> {
        self.flush()?;
        let mut sql = format!("SELECT k, v FROM chime_{} WHERE true", table.name());
        let mut params: Vec<&(dyn ToSql + Sync)> = Vec::with_capacity(3);
        if let Some(from) = &from {
            params.push(from);
            sql.push_str(&format!(" AND k >= ${}", params.len()));
        }
        if let Some(to) = &to {
            params.push(to);
            sql.push_str(&format!(" AND k < ${}", params.len()));
        }
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        params.push(&limit);
        sql.push_str(match order {
            Order::Ascending => " ORDER BY k",
            Order::Descending => " ORDER BY k DESC",
        });
        sql.push_str(&format!(" LIMIT ${}", params.len()));
        let statement = self.statement(sql)?;
        let rows = off_runtime(|| self.connection.client().query(&statement, &params))?;
        Ok(rows.into_iter().map(|r| (r.get(0), r.get(1))).collect())
    }
}

impl<C: DerefMut<Target = Connection>> KvWrite for PgKv<C> {
    fn insert(&mut self, table: Table, key: &[u8], value: &[u8]) -> Result<(), KvError> {
        self.wrote = true;
        self.pending
            .entry(table)
            .or_default()
            .insert(key.to_vec(), Some(value.to_vec()));
        Ok(())
    }

    fn delete(&mut self, table: Table, key: &[u8]) -> Result<(), KvError> {
        self.wrote = true;
        self.pending
            .entry(table)
            .or_default()
            .insert(key.to_vec(), None);
        Ok(())
    }

    fn remove_range(&mut self, table: Table, from: &[u8], to: &[u8]) -> Result<u64, KvError> {
        self.wrote = true;
        self.flush()?;
        let sql = format!(
            "DELETE FROM chime_{} WHERE k >= $1 AND k < $2",
            table.name()
        );
        let statement = self.statement(sql)?;
        Ok(off_runtime(|| {
            self.connection.client().execute(&statement, &[&from, &to])
        })?)
    }

    fn remove(&mut self, table: Table, key: &[u8]) -> Result<bool, KvError> {
        self.wrote = true;
        self.flush()?;
        let sql = format!("DELETE FROM chime_{} WHERE k = $1", table.name());
        let statement = self.statement(sql)?;
        Ok(off_runtime(|| self.connection.client().execute(&statement, &[&key]))? > 0)
    }
}
