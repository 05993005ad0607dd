//! Keys as bytes that sort as the keys do: for any two keys `a` and `b` of one type,
//! `a.cmp(&b) == encode(&a).cmp(&encode(&b))`, comparing the bytes as unsigned, shortest first
//! where one is a prefix of the other (how redb compares `&[u8]` and PostgreSQL `bytea`).
//!
//! - unsigned integers: big-endian, fixed width (`u8` 1 byte, `u32` 4, `u64` 8);
//! - `i64`: big-endian with the sign bit flipped, so that negative numbers come first;
//! - strings: their bytes, each NUL written as `00 FF`, then `00 01` to end them. The end sorts
//!   before any byte of a longer string (`"a" < "a\0" < "a\x01" < "ab"`), and after a `00` only
//!   `01` (the end) or `FF` (a NUL) can follow, whatever the next field starts with;
//! - tuples: their fields one after another. Every field is of fixed width or ends itself, so
//!   the first field that differs decides, as it does for the tuple.

/// A key that can be written as ordered bytes.
pub trait EncodeKey {
    fn put(&self, out: &mut Vec<u8>);
}

/// A key that can be read back from its bytes.
pub trait DecodeKey: Sized {
    /// Reads one key from the front of `input`, advancing it; `None` if the bytes are not one.
    fn take(input: &mut &[u8]) -> Option<Self>;
}

/// `key`'s bytes.
pub fn encode<K: EncodeKey + ?Sized>(key: &K) -> Vec<u8> {
    let mut out = Vec::with_capacity(16);
    key.put(&mut out);
    out
}

/// The key written as `bytes`, all of them; `None` if they are not one.
pub fn decode<K: DecodeKey>(mut bytes: &[u8]) -> Option<K> {
    let key = K::take(&mut bytes)?;
    bytes.is_empty().then_some(key)
}

/// The smallest bytes after `key`: `key..successor(key)` holds `key` alone, and
/// `..successor(key)` is `..=key`.
pub fn successor(key: &[u8]) -> Vec<u8> {
    let mut next = Vec::with_capacity(key.len() + 1);
    next.extend_from_slice(key);
    next.push(0);
    next
}

/// The smallest bytes after every key that starts with `prefix`: `prefix..end` holds exactly
/// those keys. `None`: there is none (the prefix is all `FF`), so the range is unbounded above.
pub fn prefix_end(prefix: &[u8]) -> Option<Vec<u8>> {
    let mut end = prefix.to_vec();
    while let Some(last) = end.pop() {
        if last < 0xFF {
            end.push(last + 1);
            return Some(end);
        }
    }
    None
}

fn take_array<const N: usize>(input: &mut &[u8]) -> Option<[u8; N]> {
    let (head, rest) = input.split_first_chunk::<N>()?;
    *input = rest;
    Some(*head)
}

macro_rules! unsigned {
    ($($t:ty),*) => {$(
        impl EncodeKey for $t {
            fn put(&self, out: &mut Vec<u8>) {
                out.extend_from_slice(&self.to_be_bytes());
            }
        }

        impl DecodeKey for $t {
            fn take(input: &mut &[u8]) -> Option<Self> {
                take_array(input).map(<$t>::from_be_bytes)
            }
        }
    )*};
}

unsigned!(u8, u32, u64);

const SIGN: u64 = 1 << 63;

impl EncodeKey for i64 {
    fn put(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(&((*self as u64) ^ SIGN).to_be_bytes());
    }
}

impl DecodeKey for i64 {
    fn take(input: &mut &[u8]) -> Option<Self> {
        take_array(input).map(|b| (u64::from_be_bytes(b) ^ SIGN) as i64)
    }
}

impl EncodeKey for str {
    fn put(&self, out: &mut Vec<u8>) {
        for &byte in self.as_bytes() {
            if byte == 0 {
                out.extend_from_slice(&[0, 0xFF]);
            } else {
                out.push(byte);
            }
        }
        out.extend_from_slice(&[0, 1]);
    }
}

impl EncodeKey for &str {
    fn put(&self, out: &mut Vec<u8>) {
        (**self).put(out);
    }
}

impl EncodeKey for String {
    fn put(&self, out: &mut Vec<u8>) {
        self.as_str().put(out);
    }
}

impl DecodeKey for String {
    fn take(input: &mut &[u8]) -> Option<Self> {
        let mut bytes = Vec::new();
        let mut rest = *input;
        loop {
            let (&byte, after) = rest.split_first()?;
            rest = after;
            if byte != 0 {
                bytes.push(byte);
                continue;
            }
            let (&mark, after) = rest.split_first()?;
            rest = after;
            match mark {
                1 => break,
                0xFF => bytes.push(0),
                _ => return None,
            }
        }
        *input = rest;
        String::from_utf8(bytes).ok()
    }
}

macro_rules! tuple {
    ($($name:ident),+) => {
        impl<$($name: EncodeKey),+> EncodeKey for ($($name,)+) {
            #[allow(non_snake_case)]
            fn put(&self, out: &mut Vec<u8>) {
                let ($($name,)+) = self;
                $($name.put(out);)+
            }
        }

        impl<$($name: DecodeKey),+> DecodeKey for ($($name,)+) {
            fn take(input: &mut &[u8]) -> Option<Self> {
                Some(($($name::take(input)?,)+))
            }
        }
    };
}

tuple!(A, B);
tuple!(A, B, C);
tuple!(A, B, C, D);

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// Strings rich in what is hard: NULs, the bytes 01 and FF's neighbours, prefixes.
    fn tricky() -> impl Strategy<Value = String> {
        proptest::collection::vec(
            prop_oneof![
                Just('\0'),
                Just('\u{1}'),
                Just('a'),
                Just('b'),
                Just('\u{7f}'),
                Just('é'),
                Just('\u{10ffff}')
            ],
            0..6,
        )
        .prop_map(|chars| chars.into_iter().collect())
    }

    fn same_order<K: EncodeKey + DecodeKey + Ord + std::fmt::Debug + Clone>(a: K, b: K) {
        let (ea, eb) = (encode(&a), encode(&b));
        assert_eq!(a.cmp(&b), ea.cmp(&eb), "{a:?} vs {b:?}: {ea:x?} vs {eb:x?}");
        assert_eq!(decode::<K>(&ea), Some(a));
        assert_eq!(decode::<K>(&eb), Some(b));
    }

    proptest! {
        #[test]
        fn integers_sort_as_their_bytes(a: i64, b: i64, c: u64, d: u64, e: u32, f: u32, g: u8, h: u8) {
            same_order(a, b);
            same_order(c, d);
            same_order(e, f);
            same_order(g, h);
        }

        #[test]
        fn strings_sort_as_their_bytes(a in tricky(), b in tricky()) {
            same_order(a, b);
        }

        #[test]
        fn tuples_sort_as_their_bytes(
            a in (tricky(), any::<u32>(), any::<i64>(), any::<u64>()),
            b in (tricky(), any::<u32>(), any::<i64>(), any::<u64>()),
            // Often the same string, so that the later fields decide.
            same in any::<bool>(),
        ) {
            let b = if same { (a.0.clone(), b.1, b.2, b.3) } else { b };
            same_order(a.clone(), b.clone());
            same_order((a.2, a.3), (b.2, b.3));
            same_order((a.0.clone(), a.1), (b.0.clone(), b.1));
            // A string followed by a field that starts with FF or 01 stays one key.
            same_order((a.0, u32::MAX), (b.0, 0x0100_0000));
        }
    }

    #[test]
    fn a_string_ends_before_its_extensions() {
        let order = ["", "\0", "\0\0", "\u{1}", "a", "a\0", "a\u{1}", "ab"];
        for pair in order.windows(2) {
            assert!(encode(pair[0]) < encode(pair[1]), "{pair:?}");
        }
    }

    #[test]
    fn bytes_that_are_not_a_key_are_refused() {
        assert_eq!(decode::<u64>(&[1, 2, 3]), None);
        assert_eq!(decode::<u8>(&[1, 2]), None, "a byte left over");
        assert_eq!(decode::<String>(b"ab"), None, "no end");
        assert_eq!(
            decode::<String>(&[b'a', 0, 7]),
            None,
            "00 then neither 01 nor FF"
        );
        assert_eq!(decode::<String>(&[0xC3, 0, 1]), None, "not UTF-8");
    }

    #[test]
    fn ranges_of_a_prefix_and_of_one_key() {
        assert_eq!(prefix_end(&[1, 2]), Some(vec![1, 3]));
        assert_eq!(prefix_end(&[1, 0xFF]), Some(vec![2]));
        assert_eq!(prefix_end(&[0xFF, 0xFF]), None);
        assert_eq!(successor(&[1, 2]), vec![1, 2, 0]);
        // Every (queue, owner) of queue "q" lies within the prefix of "q".
        let p = encode("q");
        let end = prefix_end(&p).unwrap();
        for owner in [0, 1, u32::MAX] {
            let k = encode(&("q", owner));
            assert!(p <= k && k < end);
        }
        assert!(
            encode(&("q\0", 0u32)) >= end,
            "another queue, named with a NUL"
        );
        assert!(encode(&("r", 0u32)) >= end);
    }
}
