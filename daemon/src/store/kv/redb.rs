//! The redb backend: each [`Table`] is a redb table of `&[u8]` to `&[u8]` under the table's
//! name. [`RedbWrite`] works in a write transaction (tables are opened, and created, on first
//! use and kept open for the transaction); [`RedbRead`] in a read transaction, where a table
//! never created reads as empty.

use super::{Entry, KvError, KvRead, KvWrite, Order, Table};
use redb::{ReadableTable, TableDefinition};
use std::ops::Bound;

/// A table as redb opens it for reading, and one entry as its range yields it.
type ReadOnly = redb::ReadOnlyTable<&'static [u8], &'static [u8]>;
type Guards<'a> = (
    redb::AccessGuard<'a, &'static [u8]>,
    redb::AccessGuard<'a, &'static [u8]>,
);

fn definition(table: Table) -> TableDefinition<'static, &'static [u8], &'static [u8]> {
    TableDefinition::new(table.name())
}

fn failed(err: impl std::fmt::Display) -> KvError {
    KvError::Redb(err.to_string())
}

fn bounds<'k>(from: Option<&'k [u8]>, to: Option<&'k [u8]>) -> (Bound<&'k [u8]>, Bound<&'k [u8]>) {
    (
        from.map_or(Bound::Unbounded, Bound::Included),
        to.map_or(Bound::Unbounded, Bound::Excluded),
    )
}

fn read_range<T: ReadableTable<&'static [u8], &'static [u8]>>(
    table: &T,
    from: Option<&[u8]>,
    to: Option<&[u8]>,
    order: Order,
    limit: usize,
) -> Result<Vec<Entry>, KvError> {
    // An empty range (from >= to) is empty, not an error.
    if let (Some(from), Some(to)) = (from, to)
        && from >= to
    {
        return Ok(Vec::new());
    }
    let range = table.range::<&[u8]>(bounds(from, to)).map_err(failed)?;
    let entry = |e: Result<Guards<'_>, redb::StorageError>| {
        e.map(|(k, v)| (k.value().to_vec(), v.value().to_vec()))
            .map_err(failed)
    };
    match order {
        Order::Ascending => range.take(limit).map(entry).collect(),
        Order::Descending => range.rev().take(limit).map(entry).collect(),
    }
}

/// A write transaction's tables.
pub struct RedbWrite<'t> {
    txn: &'t redb::WriteTransaction,
    open: Vec<Option<redb::Table<'t, &'static [u8], &'static [u8]>>>,
}

impl std::fmt::Debug for RedbWrite<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedbWrite").finish_non_exhaustive()
    }
}

impl<'t> RedbWrite<'t> {
    pub fn new(txn: &'t redb::WriteTransaction) -> Self {
        Self {
            txn,
            open: (0..Table::ALL.len()).map(|_| None).collect(),
        }
    }

    fn table(
        &mut self,
        table: Table,
    ) -> Result<&mut redb::Table<'t, &'static [u8], &'static [u8]>, KvError> {
        let slot = &mut self.open[table.index()];
        if slot.is_none() {
            *slot = Some(self.txn.open_table(definition(table)).map_err(failed)?);
        }
        Ok(slot.as_mut().expect("opened above"))
    }
}

impl KvRead for RedbWrite<'_> {
    fn get(&mut self, table: Table, key: &[u8]) -> Result<Option<Vec<u8>>, KvError> {
        let value = self.table(table)?.get(key).map_err(failed)?;
        Ok(value.map(|v| v.value().to_vec()))
    }

    fn range(
        &mut self,
        table: Table,
        from: Option<&[u8]>,
        to: Option<&[u8]>,
        order: Order,
        limit: usize,
    ) -> Result<Vec<Entry>, KvError> {
        read_range(self.table(table)?, from, to, order, limit)
    }
}

impl KvWrite for RedbWrite<'_> {
    fn insert(&mut self, table: Table, key: &[u8], value: &[u8]) -> Result<(), KvError> {
        self.table(table)?.insert(key, value).map_err(failed)?;
        Ok(())
    }

    fn remove(&mut self, table: Table, key: &[u8]) -> Result<bool, KvError> {
        Ok(self.table(table)?.remove(key).map_err(failed)?.is_some())
    }
}

/// A read transaction's tables.
pub struct RedbRead<'t> {
    txn: &'t redb::ReadTransaction,
}

impl std::fmt::Debug for RedbRead<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedbRead").finish_non_exhaustive()
    }
}

impl<'t> RedbRead<'t> {
    pub fn new(txn: &'t redb::ReadTransaction) -> Self {
        Self { txn }
    }

    /// The table, or `None` where it was never created.
    fn table(&self, table: Table) -> Result<Option<ReadOnly>, KvError> {
        match self.txn.open_table(definition(table)) {
            Ok(t) => Ok(Some(t)),
            Err(redb::TableError::TableDoesNotExist(_)) => Ok(None),
            Err(err) => Err(failed(err)),
        }
    }
}

impl KvRead for RedbRead<'_> {
    fn get(&mut self, table: Table, key: &[u8]) -> Result<Option<Vec<u8>>, KvError> {
        let Some(t) = self.table(table)? else {
            return Ok(None);
        };
        let value = t.get(key).map_err(failed)?;
        Ok(value.map(|v| v.value().to_vec()))
    }

    fn range(
        &mut self,
        table: Table,
        from: Option<&[u8]>,
        to: Option<&[u8]>,
        order: Order,
        limit: usize,
    ) -> Result<Vec<Entry>, KvError> {
        match self.table(table)? {
            Some(t) => read_range(&t, from, to, order, limit),
            None => Ok(Vec::new()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::kv::memory::{Memory, contents, same_everywhere};
    use redb::ReadableDatabase;

    #[test]
    fn redb_answers_as_the_reference_through_commits_and_aborts() {
        let dir = tempfile::tempdir().unwrap();
        let db = redb::Database::create(dir.path().join("kv.redb")).unwrap();
        let mut memory = Memory::default();
        for round in 0..30 {
            let txn = db.begin_write().unwrap();
            let mut tables = RedbWrite::new(&txn);
            if round % 5 == 4 {
                // Aborted: what it wrote is gone, for the reference too.
                let mut scratch = memory.clone();
                same_everywhere(&mut [&mut scratch, &mut tables], round, 200);
                drop(tables);
                txn.abort().unwrap();
            } else {
                same_everywhere(&mut [&mut memory, &mut tables], round, 200);
                drop(tables);
                txn.commit().unwrap();
            }
            let read = db.begin_read().unwrap();
            assert_eq!(
                contents(&mut RedbRead::new(&read)).unwrap(),
                contents(&mut memory).unwrap(),
                "after round {round}"
            );
        }
        // Something was written, and something was left.
        let held: usize = contents(&mut memory)
            .unwrap()
            .iter()
            .map(|(_, e)| e.len())
            .sum();
        assert!(held > 20, "{held} entries");
    }

    #[test]
    fn a_table_never_written_reads_as_empty() {
        let dir = tempfile::tempdir().unwrap();
        let db = redb::Database::create(dir.path().join("kv.redb")).unwrap();
        let read = db.begin_read().unwrap();
        let mut tables = RedbRead::new(&read);
        assert_eq!(tables.get(Table::Jobs, b"x").unwrap(), None);
        assert!(
            contents(&mut tables)
                .unwrap()
                .iter()
                .all(|(_, e)| e.is_empty())
        );
    }
}
