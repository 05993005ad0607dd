//! The PostgreSQL backend: each [`Table`] is a table `chime_<name>` of `k bytea PRIMARY KEY,
//! v bytea NOT NULL` ([`create_tables`]). `bytea` compares as bytes (no collation), so its
//! B-tree index orders keys as redb does. [`PgKv`] works in one transaction on one
//! [`Connection`] (the blocking `postgres` client: the engine thread blocks on its commits
//! already), whose statements are prepared once and kept. Every call is a round trip to the
//! server.

use super::{Entry, KvError, KvRead, KvWrite, Order, Table};
use postgres::types::ToSql;
use std::collections::HashMap;

/// A connection to the server and the statements prepared on it.
pub struct Connection {
    client: postgres::Client,
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
            client: postgres::Client::connect(config, postgres::NoTls)?,
            statements: HashMap::new(),
        })
    }

    /// The client, for what is not a table's (creating the tables, say).
    pub fn client(&mut self) -> &mut postgres::Client {
        &mut self.client
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

/// One transaction's tables.
pub struct PgKv<'c> {
    txn: postgres::Transaction<'c>,
    statements: &'c mut HashMap<String, postgres::Statement>,
}

impl std::fmt::Debug for PgKv<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PgKv").finish_non_exhaustive()
    }
}

impl<'c> PgKv<'c> {
    /// Begins a transaction that writes.
    pub fn write(connection: &'c mut Connection) -> Result<Self, KvError> {
        let Connection { client, statements } = connection;
        Ok(Self {
            txn: client.transaction()?,
            statements,
        })
    }

    /// Begins a transaction that only reads, from one snapshot (repeatable read).
    pub fn read(connection: &'c mut Connection) -> Result<Self, KvError> {
        let Connection { client, statements } = connection;
        let txn = client
            .build_transaction()
            .isolation_level(postgres::IsolationLevel::RepeatableRead)
            .read_only(true)
            .start()?;
        Ok(Self { txn, statements })
    }

    /// Commits: when it returns `Ok`, the server has made the changes durable as it is set to
    /// (`synchronous_commit`).
    pub fn commit(self) -> Result<(), KvError> {
        Ok(self.txn.commit()?)
    }

    /// Discards the transaction's changes.
    pub fn rollback(self) -> Result<(), KvError> {
        Ok(self.txn.rollback()?)
    }

    /// The transaction, for what is not a table's (the fleet's rows: see [`super::fleet`]).
    pub fn transaction(&mut self) -> &mut postgres::Transaction<'c> {
        &mut self.txn
    }

    /// `sql`, prepared on this connection once.
    fn statement(&mut self, sql: String) -> Result<postgres::Statement, KvError> {
        if let Some(statement) = self.statements.get(&sql) {
            return Ok(statement.clone());
        }
        let statement = self.txn.prepare(&sql)?;
        self.statements.insert(sql, statement.clone());
        Ok(statement)
    }
}

impl KvRead for PgKv<'_> {
    fn get(&mut self, table: Table, key: &[u8]) -> Result<Option<Vec<u8>>, KvError> {
        let sql = format!("SELECT v FROM chime_{} WHERE k = $1", table.name());
        let statement = self.statement(sql)?;
        let row = self.txn.query_opt(&statement, &[&key])?;
        Ok(row.map(|r| r.get(0)))
    }

    fn range(
        &mut self,
        table: Table,
        from: Option<&[u8]>,
        to: Option<&[u8]>,
        order: Order,
        limit: usize,
    ) -> Result<Vec<Entry>, KvError> {
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
        let rows = self.txn.query(&statement, &params)?;
        Ok(rows.into_iter().map(|r| (r.get(0), r.get(1))).collect())
    }
}

impl KvWrite for PgKv<'_> {
    fn insert(&mut self, table: Table, key: &[u8], value: &[u8]) -> Result<(), KvError> {
        let sql = format!(
            "INSERT INTO chime_{} (k, v) VALUES ($1, $2) ON CONFLICT (k) DO UPDATE SET v = EXCLUDED.v",
            table.name()
        );
        let statement = self.statement(sql)?;
        self.txn.execute(&statement, &[&key, &value])?;
        Ok(())
    }

    fn remove(&mut self, table: Table, key: &[u8]) -> Result<bool, KvError> {
        let sql = format!("DELETE FROM chime_{} WHERE k = $1", table.name());
        let statement = self.statement(sql)?;
        Ok(self.txn.execute(&statement, &[&key])? > 0)
    }
}
