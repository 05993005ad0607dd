//! The reference backend: each table a `BTreeMap` of bytes, in memory, with no transactions.
//! The real backends are held to it ([`same_everywhere`]): the same operations, drawn at random
//! with keys that collide, ranges of every shape, both orders, must give the same answers on
//! each (the store's unit tests for redb, `tests/tests/postgres.rs` for PostgreSQL).

use super::key::{encode, prefix_end};
use super::{Entry, KvError, KvRead, KvWrite, Order, Table};
use std::collections::BTreeMap;
use std::ops::Bound;

/// Tables in memory.
#[derive(Debug, Default, Clone)]
pub struct Memory {
    tables: BTreeMap<Table, BTreeMap<Vec<u8>, Vec<u8>>>,
}

impl KvRead for Memory {
    fn get(&mut self, table: Table, key: &[u8]) -> Result<Option<Vec<u8>>, KvError> {
        Ok(self.tables.get(&table).and_then(|t| t.get(key)).cloned())
    }

    fn range(
        &mut self,
        table: Table,
        from: Option<&[u8]>,
        to: Option<&[u8]>,
        order: Order,
        limit: usize,
    ) -> Result<Vec<Entry>, KvError> {
        let Some(t) = self.tables.get(&table) else {
            return Ok(Vec::new());
        };
        if let (Some(from), Some(to)) = (from, to)
            && from >= to
        {
            return Ok(Vec::new());
        }
        let range = t.range::<[u8], _>((
            from.map_or(Bound::Unbounded, Bound::Included),
            to.map_or(Bound::Unbounded, Bound::Excluded),
        ));
        let entry = |(k, v): (&Vec<u8>, &Vec<u8>)| (k.clone(), v.clone());
        Ok(match order {
            Order::Ascending => range.take(limit).map(entry).collect(),
            Order::Descending => range.rev().take(limit).map(entry).collect(),
        })
    }
}

impl KvWrite for Memory {
    fn insert(&mut self, table: Table, key: &[u8], value: &[u8]) -> Result<(), KvError> {
        self.tables
            .entry(table)
            .or_default()
            .insert(key.to_vec(), value.to_vec());
        Ok(())
    }

    fn remove(&mut self, table: Table, key: &[u8]) -> Result<bool, KvError> {
        Ok(self
            .tables
            .get_mut(&table)
            .is_some_and(|t| t.remove(key).is_some()))
    }
}

/// A small random number generator (xorshift), so that a failing sequence is replayed from its
/// seed.
#[derive(Debug, Clone)]
pub struct Dice(u64);

impl Dice {
    pub fn new(seed: u64) -> Self {
        Self(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1)
    }

    /// A number below `n` (`n` > 0).
    pub fn below(&mut self, n: u64) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0 % n
    }
}

/// The tables the operations use, with keys shaped as theirs are.
const TABLES: [Table; 3] = [Table::Due, Table::Waiting, Table::Jobs];

/// A key of `table`, from a small domain, so that operations meet the same keys often. Due
/// times are around zero (negative ones encode with their sign bit clear), queue names carry
/// NULs and share prefixes.
fn key(table: Table, dice: &mut Dice) -> Vec<u8> {
    let names = ["", "a", "a\0", "ab", "b", "\0"];
    match table {
        Table::Due => encode(&(dice.below(7) as i64 - 3, dice.below(4))),
        Table::Waiting => encode(&(
            names[dice.below(names.len() as u64) as usize],
            dice.below(3) as u32,
            dice.below(5) as i64 - 2,
            dice.below(3),
        )),
        _ => encode(&dice.below(40)),
    }
}

/// A bound: a key, a key's prefix (a queue's, a user's within it), or none.
fn bound(table: Table, dice: &mut Dice) -> Option<Vec<u8>> {
    match dice.below(5) {
        0 => None,
        1 if table == Table::Waiting => {
            let names = ["a", "b", ""];
            let prefix = encode(names[dice.below(3) as usize]);
            if dice.below(2) == 0 {
                Some(prefix)
            } else {
                prefix_end(&prefix)
            }
        }
        _ => Some(key(table, dice)),
    }
}

/// Runs `ops` random operations (from `seed`) on every backend at once, and panics, naming the
/// operation and the backends' answers, at the first on which they differ. The first backend
/// is the reference.
pub fn same_everywhere(backends: &mut [&mut dyn KvWrite], seed: u64, ops: usize) {
    let mut dice = Dice::new(seed);
    for step in 0..ops {
        let table = TABLES[dice.below(TABLES.len() as u64) as usize];
        let (what, answers): (String, Vec<String>) = match dice.below(10) {
            0..=3 => {
                let (k, len) = (key(table, &mut dice), dice.below(12) as usize);
                let value: Vec<u8> = (0..len).map(|_| dice.below(256) as u8).collect();
                let what = format!("insert {k:x?} = {value:x?}");
                let answers = backends
                    .iter_mut()
                    .map(|b| {
                        format!(
                            "{:?}",
                            b.insert(table, &k, &value).map_err(|e| e.to_string())
                        )
                    })
                    .collect();
                (what, answers)
            }
            4 => {
                let k = key(table, &mut dice);
                let answers = backends
                    .iter_mut()
                    .map(|b| format!("{:?}", b.remove(table, &k).map_err(|e| e.to_string())))
                    .collect();
                (format!("remove {k:x?}"), answers)
            }
            5 => {
                // A removal a backend may hold back until a read needs it.
                let k = key(table, &mut dice);
                let answers = backends
                    .iter_mut()
                    .map(|b| format!("{:?}", b.delete(table, &k).map_err(|e| e.to_string())))
                    .collect();
                (format!("delete {k:x?}"), answers)
            }
            6 => {
                let k = key(table, &mut dice);
                let answers = backends
                    .iter_mut()
                    .map(|b| format!("{:?}", b.get(table, &k).map_err(|e| e.to_string())))
                    .collect();
                (format!("get {k:x?}"), answers)
            }
            _ => {
                let (from, to) = (bound(table, &mut dice), bound(table, &mut dice));
                let order = if dice.below(2) == 0 {
                    Order::Ascending
                } else {
                    Order::Descending
                };
                let limit = [0, 1, 3, 100][dice.below(4) as usize];
                let what = format!("range {from:x?}..{to:x?} {order:?} limit {limit}");
                let answers = backends
                    .iter_mut()
                    .map(|b| {
                        format!(
                            "{:?}",
                            b.range(table, from.as_deref(), to.as_deref(), order, limit)
                                .map_err(|e| e.to_string())
                        )
                    })
                    .collect();
                (what, answers)
            }
        };
        for (i, answer) in answers.iter().enumerate().skip(1) {
            assert_eq!(
                &answers[0], answer,
                "seed {seed}, step {step}, table {table:?}, {what}: backend {i} differs from the reference"
            );
        }
    }
}

/// Every entry of every table, in order: what a backend holds, to compare with another's.
pub fn contents(backend: &mut dyn KvRead) -> Result<Vec<(Table, Vec<Entry>)>, KvError> {
    Table::ALL
        .iter()
        .map(|&t| {
            Ok((
                t,
                backend.range(t, None, None, Order::Ascending, usize::MAX)?,
            ))
        })
        .collect()
}
