//! The typed boundary between the store's logic and its backends: [`Tbl`], one of chime's
//! tables in one transaction, with each table's own key and value types (the same types as
//! redb's table definitions in `schema.rs`), kept either by redb itself or by a byte-keyed
//! backend ([`kv`]: PostgreSQL for a fleet).
//!
//! # Why typed, and not bytes for everyone
//!
//! redb compares fixed-width integer tuples faster than variable-length byte strings:
//! `bench-store --through-kv` measured a firing's B-tree work at +15-18% through byte keys. So
//! the redb side is redb's typed table, untouched, behind one `match`; the byte side encodes
//! each key with the order-preserving codec of [`kv::key`] (through [`Column`]) and decodes what
//! it reads back into the same owned types. The writer and the reader (`writer/`, `reader.rs`,
//! `index.rs`) are written once over [`Tbl`], so both backends keep the same rows and the same
//! indexes by the same code.
//!
//! # What a read gives back
//!
//! Owned keys and values ([`Column::Owned`]: `String` for `&str`, `Vec<u8>` for `&[u8]`), except
//! [`Tbl::get_with`], which lends the value to a closure (a job's row is decoded straight from
//! redb's page, as before). Ranges are read lazily on redb and a page at a time on the byte
//! side ([`Rows`]), so a scan that stops early reads little on either.

use super::StoreError;
use super::kv::{self, KvWrite, Order};
use redb::{ReadableTable, ReadableTableMetadata, TableDefinition, TableHandle};
use std::cell::RefCell;
use std::ops::{Bound, RangeBounds};

/// A key or value type of chime's tables: its owned form, and its bytes for a byte-keyed
/// backend (keys in an order-preserving encoding: see [`kv::key`]).
pub trait Column: redb::Value + 'static {
    /// What a read returns.
    type Owned: std::fmt::Debug;
    fn own(value: Self::SelfType<'_>) -> Self::Owned;
    fn view(owned: &Self::Owned) -> Self::SelfType<'_>;
    fn put(value: &Self::SelfType<'_>, out: &mut Vec<u8>);
    /// Reads one from the front of `input`; `None` if the bytes are not one.
    fn take(input: &mut &[u8]) -> Option<Self::Owned>;
}

macro_rules! integer_column {
    ($($t:ty),*) => {$(
        impl Column for $t {
            type Owned = $t;
            fn own(value: $t) -> $t {
                value
            }
            fn view(owned: &$t) -> $t {
                *owned
            }
            fn put(value: &$t, out: &mut Vec<u8>) {
                kv::key::EncodeKey::put(value, out);
            }
            fn take(input: &mut &[u8]) -> Option<$t> {
                kv::key::DecodeKey::take(input)
            }
        }
    )*};
}

integer_column!(u8, u32, u64, i64);

impl Column for &'static str {
    type Owned = String;
    fn own(value: &str) -> String {
        value.to_owned()
    }
    fn view(owned: &String) -> &str {
        owned
    }
    fn put(value: &&str, out: &mut Vec<u8>) {
        kv::key::EncodeKey::put(*value, out);
    }
    fn take(input: &mut &[u8]) -> Option<String> {
        kv::key::DecodeKey::take(input)
    }
}

/// Raw bytes: values only (they take the rest of the input, so they cannot be followed).
impl Column for &'static [u8] {
    type Owned = Vec<u8>;
    fn own(value: &[u8]) -> Vec<u8> {
        value.to_vec()
    }
    fn view(owned: &Vec<u8>) -> &[u8] {
        owned
    }
    fn put(value: &&[u8], out: &mut Vec<u8>) {
        out.extend_from_slice(value);
    }
    fn take(input: &mut &[u8]) -> Option<Vec<u8>> {
        Some(std::mem::take(input).to_vec())
    }
}

impl Column for () {
    type Owned = ();
    fn own((): ()) {}
    fn view((): &()) {}
    fn put((): &(), _: &mut Vec<u8>) {}
    fn take(_: &mut &[u8]) -> Option<()> {
        Some(())
    }
}

macro_rules! tuple_column {
    ($($name:ident $index:tt),+) => {
        impl<$($name: Column),+> Column for ($($name,)+) {
            type Owned = ($($name::Owned,)+);
            fn own(value: Self::SelfType<'_>) -> Self::Owned {
                ($($name::own(value.$index),)+)
            }
            fn view(owned: &Self::Owned) -> Self::SelfType<'_> {
                ($($name::view(&owned.$index),)+)
            }
            fn put(value: &Self::SelfType<'_>, out: &mut Vec<u8>) {
                $($name::put(&value.$index, out);)+
            }
            fn take(input: &mut &[u8]) -> Option<Self::Owned> {
                Some(($($name::take(input)?,)+))
            }
        }
    };
}

tuple_column!(A 0, B 1);
tuple_column!(A 0, B 1, C 2, D 3);

fn encode<C: Column>(value: &C::SelfType<'_>) -> Vec<u8> {
    let mut out = Vec::with_capacity(16);
    C::put(value, &mut out);
    out
}

fn decode<C: Column>(table: kv::Table, mut bytes: &[u8]) -> Result<C::Owned, StoreError> {
    match C::take(&mut bytes) {
        Some(value) if bytes.is_empty() => Ok(value),
        _ => Err(StoreError::Backend(format!(
            "a key or value of table {} does not decode ({} bytes)",
            table.name(),
            bytes.len()
        ))),
    }
}

/// An entry, owned.
pub type Owned<K, V> = (<K as Column>::Owned, <V as Column>::Owned);

/// The byte-keyed side of a transaction, shared by its tables.
pub type KvTxn<'t> = RefCell<dyn KvWrite + 't>;

/// The [`kv::Table`] a table definition names.
pub fn kv_table<K: redb::Key, V: redb::Value>(def: TableDefinition<'_, K, V>) -> kv::Table {
    let name = def.name();
    kv::Table::ALL
        .into_iter()
        .find(|t| t.name() == name)
        .expect("every table definition has a kv::Table of its name")
}

/// One table in one transaction.
pub enum Tbl<'t, K: redb::Key + Column, V: Column> {
    /// redb, writing.
    Redb(redb::Table<'t, K, V>),
    /// redb, reading a snapshot.
    RedbRead(redb::ReadOnlyTable<K, V>),
    /// A byte-keyed backend.
    Kv(&'t KvTxn<'t>, kv::Table),
}

impl<K: redb::Key + Column, V: Column> std::fmt::Debug for Tbl<'_, K, V> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Redb(_) | Self::RedbRead(_) => f.write_str("Tbl::Redb"),
            Self::Kv(_, table) => write!(f, "Tbl::Kv({})", table.name()),
        }
    }
}

impl<K: redb::Key + Column, V: Column> std::fmt::Debug for Rows<'_, '_, K, V> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Rows")
    }
}

/// How many entries a byte-keyed range reads per round trip.
const PAGE: usize = 512;

impl<'t, K: redb::Key + Column, V: Column> Tbl<'t, K, V> {
    /// The value at `key`, owned.
    pub fn get<'a>(&self, key: K::SelfType<'a>) -> Result<Option<V::Owned>, StoreError> {
        self.get_with(key, V::own)
    }

    /// `f` of the value at `key`, lent.
    pub fn get_with<'a, R>(
        &self,
        key: K::SelfType<'a>,
        f: impl FnOnce(V::SelfType<'_>) -> R,
    ) -> Result<Option<R>, StoreError> {
        Ok(match self {
            Self::Redb(t) => t.get(key)?.map(|v| f(v.value())),
            Self::RedbRead(t) => t.get(key)?.map(|v| f(v.value())),
            Self::Kv(kv, table) => match kv.borrow_mut().get(*table, &encode::<K>(&key))? {
                Some(bytes) => Some(f(V::view(&decode::<V>(*table, &bytes)?))),
                None => None,
            },
        })
    }

    /// Sets `key` to `value`.
    pub fn insert<'a, 'b>(
        &mut self,
        key: K::SelfType<'a>,
        value: V::SelfType<'b>,
    ) -> Result<(), StoreError> {
        match self {
            Self::Redb(t) => {
                t.insert(key, value)?;
            }
            Self::RedbRead(_) => return Err(read_only()),
            Self::Kv(kv, table) => {
                kv.borrow_mut()
                    .insert(*table, &encode::<K>(&key), &encode::<V>(&value))?;
            }
        }
        Ok(())
    }

    /// Removes `key` (the byte side may send it with the transaction's other writes).
    pub fn remove<'a>(&mut self, key: K::SelfType<'a>) -> Result<(), StoreError> {
        match self {
            Self::Redb(t) => {
                t.remove(key)?;
            }
            Self::RedbRead(_) => return Err(read_only()),
            Self::Kv(kv, table) => kv.borrow_mut().delete(*table, &encode::<K>(&key))?,
        }
        Ok(())
    }

    /// Removes `key`; whether it was there (a round trip on the byte side).
    pub fn remove_present<'a>(&mut self, key: K::SelfType<'a>) -> Result<bool, StoreError> {
        Ok(match self {
            Self::Redb(t) => t.remove(key)?.is_some(),
            Self::RedbRead(_) => return Err(read_only()),
            Self::Kv(kv, table) => kv.borrow_mut().remove(*table, &encode::<K>(&key))?,
        })
    }

    /// The entries of `range`, smallest key first, read as they are consumed.
    pub fn range<'a>(
        &self,
        range: impl RangeBounds<K::SelfType<'a>> + 'a,
    ) -> Result<Rows<'_, 't, K, V>, StoreError> {
        Ok(match self {
            Self::Redb(t) => Rows::Redb(t.range(range)?),
            Self::RedbRead(t) => Rows::Redb(t.range(range)?),
            Self::Kv(kv, table) => {
                let (from, to) = byte_bounds::<K>(&range);
                Rows::Kv {
                    kv,
                    table: *table,
                    from: Some(from),
                    to,
                    page: Vec::new().into_iter(),
                }
            }
        })
    }

    /// The entries of `range`, as [`Tbl::range`], outliving this handle (a snapshot's tables
    /// only: a write transaction's redb table lends its ranges).
    pub fn into_range<'a>(
        self,
        range: impl RangeBounds<K::SelfType<'a>> + 'a,
    ) -> Result<Rows<'t, 't, K, V>, StoreError> {
        Ok(match self {
            Self::RedbRead(t) => Rows::Redb(t.range(range)?),
            Self::Kv(kv, table) => {
                let (from, to) = byte_bounds::<K>(&range);
                Rows::Kv {
                    kv,
                    table,
                    from: Some(from),
                    to,
                    page: Vec::new().into_iter(),
                }
            }
            Self::Redb(_) => {
                return Err(StoreError::Backend(
                    "a write transaction's table lends its ranges".into(),
                ));
            }
        })
    }

    /// Every entry, smallest key first.
    pub fn iter(&self) -> Result<Rows<'_, 't, K, V>, StoreError> {
        self.range(..)
    }

    /// The last entry of `range` (largest key).
    pub fn last_in<'a>(
        &self,
        range: impl RangeBounds<K::SelfType<'a>> + 'a,
    ) -> Result<Option<Owned<K, V>>, StoreError> {
        let owned = |(k, v): (redb::AccessGuard<'_, K>, redb::AccessGuard<'_, V>)| {
            (K::own(k.value()), V::own(v.value()))
        };
        Ok(match self {
            Self::Redb(t) => t.range(range)?.next_back().transpose()?.map(owned),
            Self::RedbRead(t) => t.range(range)?.next_back().transpose()?.map(owned),
            Self::Kv(kv, table) => {
                let (from, to) = byte_bounds::<K>(&range);
                let rows = kv.borrow_mut().range(
                    *table,
                    Some(&from),
                    to.as_deref(),
                    Order::Descending,
                    1,
                )?;
                match rows.into_iter().next() {
                    Some((k, v)) => Some((decode::<K>(*table, &k)?, decode::<V>(*table, &v)?)),
                    None => None,
                }
            }
        })
    }

    /// The first entry (smallest key).
    pub fn first(&self) -> Result<Option<Owned<K, V>>, StoreError> {
        self.iter()?.next().transpose()
    }

    /// How many entries (redb keeps the count; the byte side counts).
    pub fn len(&self) -> Result<u64, StoreError> {
        Ok(match self {
            Self::Redb(t) => t.len()?,
            Self::RedbRead(t) => t.len()?,
            Self::Kv(kv, table) => kv.borrow_mut().count(*table)?,
        })
    }

    /// Removes the entries of `range`.
    pub fn remove_range<'a>(
        &mut self,
        range: impl RangeBounds<K::SelfType<'a>> + 'a,
    ) -> Result<(), StoreError> {
        match self {
            Self::Redb(t) => t.retain_in(range, |_, _| false)?,
            Self::RedbRead(_) => return Err(read_only()),
            Self::Kv(kv, table) => {
                let (from, to) = byte_bounds::<K>(&range);
                let mut kv = kv.borrow_mut();
                match to {
                    Some(to) => {
                        kv.remove_range(*table, &from, &to)?;
                    }
                    None => {
                        for (key, _) in
                            kv.range(*table, Some(&from), None, Order::Ascending, usize::MAX)?
                        {
                            kv.remove(*table, &key)?;
                        }
                    }
                }
            }
        }
        Ok(())
    }

    /// Keeps only the entries `keep` accepts (a scan of the whole table: for rare repairs).
    pub fn retain(
        &mut self,
        mut keep: impl for<'f> FnMut(K::SelfType<'f>, V::SelfType<'f>) -> bool,
    ) -> Result<(), StoreError> {
        match self {
            Self::Redb(t) => t.retain(keep)?,
            Self::RedbRead(_) => return Err(read_only()),
            Self::Kv(kv, table) => {
                let mut kv = kv.borrow_mut();
                for (k, v) in kv.range(*table, None, None, Order::Ascending, usize::MAX)? {
                    let (key, value) = (decode::<K>(*table, &k)?, decode::<V>(*table, &v)?);
                    if !keep(K::view(&key), V::view(&value)) {
                        kv.remove(*table, &k)?;
                    }
                }
            }
        }
        Ok(())
    }
}

fn read_only() -> StoreError {
    StoreError::Backend("a snapshot for reading cannot be written".into())
}

/// A range's bounds as bytes: `from <= key < to` (`to` `None`: unbounded).
fn byte_bounds<'a, K: Column>(
    range: &impl RangeBounds<K::SelfType<'a>>,
) -> (Vec<u8>, Option<Vec<u8>>) {
    let from = match range.start_bound() {
        Bound::Included(k) => encode::<K>(k),
        Bound::Excluded(k) => kv::key::successor(&encode::<K>(k)),
        Bound::Unbounded => Vec::new(),
    };
    let to = match range.end_bound() {
        Bound::Included(k) => Some(kv::key::successor(&encode::<K>(k))),
        Bound::Excluded(k) => Some(encode::<K>(k)),
        Bound::Unbounded => None,
    };
    (from, to)
}

/// A range's entries, owned, smallest key first.
#[allow(clippy::large_enum_variant)] // Made once per range, and redb's is the common one.
pub enum Rows<'r, 't, K: redb::Key + Column, V: Column> {
    Redb(redb::Range<'r, K, V>),
    Kv {
        kv: &'t KvTxn<'t>,
        table: kv::Table,
        /// Where the next page starts; `None`: no more.
        from: Option<Vec<u8>>,
        to: Option<Vec<u8>>,
        page: std::vec::IntoIter<kv::Entry>,
    },
}

impl<K: redb::Key + Column, V: Column> Iterator for Rows<'_, '_, K, V> {
    type Item = Result<(K::Owned, V::Owned), StoreError>;

    fn next(&mut self) -> Option<Self::Item> {
        match self {
            Self::Redb(range) => Some(
                range
                    .next()?
                    .map(|(k, v)| (K::own(k.value()), V::own(v.value())))
                    .map_err(StoreError::from),
            ),
            Self::Kv {
                kv,
                table,
                from,
                to,
                page,
            } => {
                if page.len() == 0 {
                    let start = from.take()?;
                    let rows = match kv.borrow_mut().range(
                        *table,
                        Some(&start),
                        to.as_deref(),
                        Order::Ascending,
                        PAGE,
                    ) {
                        Ok(rows) => rows,
                        Err(err) => return Some(Err(err.into())),
                    };
                    if rows.len() == PAGE {
                        *from = rows.last().map(|(k, _)| kv::key::successor(k));
                    }
                    *page = rows.into_iter();
                }
                let (k, v) = page.next()?;
                Some(decode::<K>(*table, &k).and_then(|k| Ok((k, decode::<V>(*table, &v)?))))
            }
        }
    }
}

/// Where a transaction's tables are opened from.
#[derive(Clone, Copy)]
#[allow(missing_debug_implementations)] // Borrows of transactions, shown by nothing.
pub enum Source<'t> {
    RedbWrite(&'t redb::WriteTransaction),
    RedbRead(&'t redb::ReadTransaction),
    Kv(&'t KvTxn<'t>),
}

impl<'t> Source<'t> {
    /// The table `def` names, in this transaction.
    pub fn open<K: redb::Key + Column, V: Column>(
        self,
        def: TableDefinition<'static, K, V>,
    ) -> Result<Tbl<'t, K, V>, StoreError> {
        Ok(match self {
            Self::RedbWrite(txn) => Tbl::Redb(txn.open_table(def)?),
            Self::RedbRead(txn) => Tbl::RedbRead(txn.open_table(def)?),
            Self::Kv(kv) => Tbl::Kv(kv, kv_table(def)),
        })
    }
}

#[cfg(test)]
mod tests {
    //! [`Tbl`] over redb's typed table and over the byte side (in memory) must answer every
    //! operation alike: random operations on keys from a small domain (strings with NULs and
    //! shared prefixes, negative times, the extremes of each integer), ranges with every kind
    //! of bound, more entries than a page of the byte side.

    use super::*;
    use crate::store::kv::memory::{Dice, Memory};
    use crate::store::schema::{RUNS, WAITING};

    type WaitKey = (&'static str, u32, i64, u64);
    const NAMES: [&str; 5] = ["", "a", "a\0", "ab", "b"];
    const OWNERS: [u32; 3] = [0, 1, u32::MAX];
    const TIMES: [i64; 4] = [i64::MIN, -1, 0, i64::MAX];

    fn wait_key(dice: &mut Dice) -> WaitKey {
        (
            NAMES[dice.below(5) as usize],
            OWNERS[dice.below(3) as usize],
            TIMES[dice.below(4) as usize],
            dice.below(60),
        )
    }

    fn bound(dice: &mut Dice) -> Bound<WaitKey> {
        match dice.below(3) {
            0 => Bound::Unbounded,
            1 => Bound::Included(wait_key(dice)),
            _ => Bound::Excluded(wait_key(dice)),
        }
    }

    fn both<T: PartialEq + std::fmt::Debug>(step: usize, what: &str, a: T, b: T) {
        assert_eq!(
            a, b,
            "step {step}: {what}: redb (left) and the byte side (right) differ"
        );
    }

    #[test]
    fn redb_and_the_byte_side_answer_alike() {
        let dir = tempfile::TempDir::new().unwrap();
        let db = redb::Database::create(dir.path().join("t.redb")).unwrap();
        let txn = db.begin_write().unwrap();
        let memory = RefCell::new(Memory::default());
        let kv: &KvTxn<'_> = &memory;
        let mut redb_waiting = Source::RedbWrite(&txn).open(WAITING).unwrap();
        let mut kv_waiting = Source::Kv(kv).open(WAITING).unwrap();
        let mut redb_runs = Source::RedbWrite(&txn).open(RUNS).unwrap();
        let mut kv_runs = Source::Kv(kv).open(RUNS).unwrap();
        let mut dice = Dice::new(7);
        // Enough entries that a range spans several of the byte side's pages.
        for _ in 0..3 * PAGE {
            let key = wait_key(&mut dice);
            redb_waiting.insert(key, ()).unwrap();
            kv_waiting.insert(key, ()).unwrap();
        }
        for step in 0..4000 {
            match dice.below(12) {
                0..=2 => {
                    let key = wait_key(&mut dice);
                    redb_waiting.insert(key, ()).unwrap();
                    kv_waiting.insert(key, ()).unwrap();
                }
                3 => {
                    let key = wait_key(&mut dice);
                    let a = redb_waiting.remove_present(key).unwrap();
                    let b = kv_waiting.remove_present(key).unwrap();
                    both(step, &format!("remove {key:?}"), a, b);
                }
                4 => {
                    let key = wait_key(&mut dice);
                    let a = redb_waiting.get(key).unwrap();
                    let b = kv_waiting.get(key).unwrap();
                    both(step, &format!("get {key:?}"), a, b);
                }
                5..=7 => {
                    let range = (bound(&mut dice), bound(&mut dice));
                    let valid = match (range.0, range.1) {
                        (
                            Bound::Included(a) | Bound::Excluded(a),
                            Bound::Included(b) | Bound::Excluded(b),
                        ) => {
                            a < b
                                || (a == b
                                    && matches!(range, (Bound::Included(_), Bound::Included(_))))
                        }
                        _ => true,
                    };
                    if !valid {
                        continue; // redb panics on a range that ends before it starts
                    }
                    let take = dice.below(3 * PAGE as u64) as usize;
                    let a: Vec<_> = redb_waiting
                        .range(range)
                        .unwrap()
                        .take(take)
                        .collect::<Result<_, _>>()
                        .unwrap();
                    let b: Vec<_> = kv_waiting
                        .range(range)
                        .unwrap()
                        .take(take)
                        .collect::<Result<_, _>>()
                        .unwrap();
                    both(step, &format!("range {range:?}, first {take}"), a, b);
                    let a = redb_waiting.last_in(range).unwrap();
                    let b = kv_waiting.last_in(range).unwrap();
                    both(step, &format!("last in {range:?}"), a, b);
                }
                8 => {
                    both(
                        step,
                        "first",
                        redb_waiting.first().unwrap(),
                        kv_waiting.first().unwrap(),
                    );
                    both(
                        step,
                        "len",
                        redb_waiting.len().unwrap(),
                        kv_waiting.len().unwrap(),
                    );
                }
                9 => {
                    let (queue, owner) = (
                        NAMES[dice.below(5) as usize],
                        OWNERS[dice.below(3) as usize],
                    );
                    let range = (queue, owner, i64::MIN, 0)..(queue, owner, i64::MAX, 30);
                    redb_waiting.remove_range(range.clone()).unwrap();
                    kv_waiting.remove_range(range).unwrap();
                }
                10 => {
                    let doomed = dice.below(60);
                    redb_waiting
                        .retain(|(_, _, _, id), ()| id != doomed)
                        .unwrap();
                    kv_waiting.retain(|(_, _, _, id), ()| id != doomed).unwrap();
                }
                _ => {
                    // Byte values, and a get that lends them.
                    let key = (dice.below(4), dice.below(4));
                    let value = vec![0u8; dice.below(5) as usize];
                    redb_runs.insert(key, value.as_slice()).unwrap();
                    kv_runs.insert(key, value.as_slice()).unwrap();
                    let job = dice.below(4);
                    let a = redb_runs.last_in((job, 0)..=(job, u64::MAX)).unwrap();
                    let b = kv_runs.last_in((job, 0)..=(job, u64::MAX)).unwrap();
                    both(step, "last run", a, b);
                    let a = redb_runs.get_with(key, <[u8]>::len).unwrap();
                    let b = kv_runs.get_with(key, <[u8]>::len).unwrap();
                    both(step, "value length", a, b);
                }
            }
        }
        let a: Vec<_> = redb_waiting
            .iter()
            .unwrap()
            .collect::<Result<_, _>>()
            .unwrap();
        let b: Vec<_> = kv_waiting
            .iter()
            .unwrap()
            .collect::<Result<_, _>>()
            .unwrap();
        both(4000, "everything", a, b);
    }
}
