//! The row hash of reconciliation (`syncguard._reconcile_row_hash`): 64 bits
//! over a row's values in order, which each server computes over its own
//! rows, so that only sums of them cross the network.
//!
//! Values PostgreSQL's equality calls equal hash equal where that is cheap to
//! see: a numeric's display scale (`1.0` and `1.00`), a float's zero sign and
//! NaN payload, the scale of a jsonb number (jsonb's binary form already holds
//! an object's keys in one order). Values equal in a way the hash does not see
//! (text under a nondeterministic collation, say) hash apart: that costs
//! reconcile a fetch of the row, which the server's own equality then
//! compares, never a missed difference. Unlike PostgreSQL's jsonb hash, a
//! document's structure counts: `[[1], 2]` and `[1, [2]]` differ.
//!
//! Every input is read as numbers and fed in one byte order (little-endian),
//! so servers of either byte order agree.

use crate::jsonb::{
    Container, Cursor, FormatError, Item, Kind, T_CONTAINER, T_FALSE, T_NULL, T_NUMERIC, T_STRING,
    T_TRUE,
};
use crate::numeric::{self, Canonical};
use std::mem::MaybeUninit;

// A tag per kind of value in the low byte of its first word, so that the
// words of a sequence of values decode back to it (each value's words tell
// where it ends): values that differ feed different words.
const NULL: u64 = 1;
const INT: u64 = 2;
const FLOAT: u64 = 3;
const BYTES: u64 = 4;
/// Up to 6 bytes, in the word itself.
const SHORT_BYTES: u64 = 5;
const NUM_ZERO: u64 = 6;
const NUM: u64 = 7;
/// One or two digits, in the word itself.
const NUM_1: u64 = 8;
const NUM_2: u64 = 9;
const NUM_NAN: u64 = 10;
const NUM_INF: u64 = 11;
const NUM_NEG_INF: u64 = 12;
const JSON_OBJECT: u64 = 13;
const JSON_ARRAY: u64 = 14;
const JSON_NULL: u64 = 15;
const JSON_TRUE: u64 = 16;
const JSON_FALSE: u64 = 17;

const P0: u64 = 0xA076_1D64_78BD_642F;
const P1: u64 = 0xE703_7ED1_A0B4_28DB;

/// The high and low halves of the 128-bit product, folded.
#[inline(always)]
fn fold(a: u64, b: u64) -> u64 {
    let r = (a as u128).wrapping_mul(b as u128);
    (r as u64) ^ ((r >> 64) as u64)
}

/// Fed one value per column, in column order.
pub struct RowHash {
    h: u64,
}

impl Default for RowHash {
    fn default() -> Self {
        RowHash { h: P1 }
    }
}

impl RowHash {
    #[inline(always)]
    fn word(&mut self, w: u64) {
        self.h = fold(self.h ^ w, P0).wrapping_add(P1);
    }

    pub fn null(&mut self) {
        self.word(NULL);
    }

    pub fn int(&mut self, v: i64) {
        self.word(INT);
        self.word(v as u64);
    }

    /// float4 and float8 (as f64): `-0 = 0`, and every NaN is one value.
    pub fn float(&mut self, v: f64) {
        let v = if v == 0.0 {
            0.0
        } else if v.is_nan() {
            f64::NAN
        } else {
            v
        };
        self.word(FLOAT);
        self.word(v.to_bits());
    }

    /// Text, bytea, uuid, json: the bytes as stored.
    #[inline]
    pub fn bytes(&mut self, b: &[u8]) {
        // (byte by byte: a copy of a few bytes would call memcpy)
        let pack = |b: &[u8]| b.iter().rev().fold(0u64, |w, &c| w << 8 | c as u64);
        if b.len() <= 6 {
            self.word(SHORT_BYTES | (b.len() as u64) << 8 | pack(b) << 16);
            return;
        }
        self.word(BYTES | (b.len() as u64) << 8);
        let mut chunks = b.chunks_exact(8);
        for c in &mut chunks {
            self.word(u64::from_le_bytes(c.try_into().expect("8 bytes")));
        }
        if !chunks.remainder().is_empty() {
            self.word(pack(chunks.remainder()));
        }
    }

    /// A numeric datum (4-byte or short varlena header), by value.
    #[inline]
    pub fn numeric(&mut self, datum: &[u8]) -> Result<(), FormatError> {
        match numeric::canonical(datum)? {
            Canonical::Zero => self.word(NUM_ZERO),
            Canonical::NaN => self.word(NUM_NAN),
            Canonical::Infinity { neg: false } => self.word(NUM_INF),
            Canonical::Infinity { neg: true } => self.word(NUM_NEG_INF),
            Canonical::Finite {
                neg,
                weight,
                digits,
            } => {
                let digit =
                    |i: usize| u16::from_ne_bytes([digits[2 * i], digits[2 * i + 1]]) as u64;
                let head = (neg as u64) << 8 | (weight as u16 as u64) << 16;
                match digits.len() / 2 {
                    1 => self.word(NUM_1 | head | digit(0) << 32),
                    2 => self.word(NUM_2 | head | digit(0) << 32 | digit(1) << 48),
                    n => {
                        self.word(NUM | head | (n as u64) << 32);
                        for first in (0..n).step_by(4) {
                            let four = first..n.min(first + 4);
                            self.word(four.fold(0, |w, i| w | digit(i) << (16 * (i - first))));
                        }
                    }
                }
            }
        }
        Ok(())
    }

    /// A jsonb document: `root` is the datum without its varlena header.
    pub fn jsonb(&mut self, root: &[u8]) -> Result<(), FormatError> {
        let c = Container::new(root)?;
        if c.kind() == Kind::Scalar {
            return self.json_scalar(c.scalar()?);
        }
        // Depth first without recursion (a document may nest thousands
        // deep); the container being walked stays out of the stack.
        let mut parents = Stack::default();
        self.json_open(&c);
        let mut cursor = c.all();
        loop {
            match cursor.next() {
                Some(item) => {
                    let item = item?;
                    if item.ty == T_CONTAINER {
                        let c = Container::new(item.data)?;
                        self.json_open(&c);
                        parents.push(cursor);
                        cursor = c.all();
                    } else {
                        self.json_scalar(item)?;
                    }
                }
                None => match parents.pop() {
                    Some(parent) => cursor = parent,
                    None => return Ok(()),
                },
            }
        }
    }

    /// A container's kind and size; its children (an object's keys, then its
    /// values) follow.
    fn json_open(&mut self, c: &Container<'_>) {
        let kind = if c.kind() == Kind::Object {
            JSON_OBJECT
        } else {
            JSON_ARRAY
        };
        self.word(kind | (c.len() as u64) << 8);
    }

    #[inline]
    fn json_scalar(&mut self, item: Item<'_>) -> Result<(), FormatError> {
        match item.ty {
            T_STRING => self.bytes(item.data),
            T_NUMERIC => self.numeric(item.data)?,
            T_NULL => self.word(JSON_NULL),
            T_TRUE => self.word(JSON_TRUE),
            T_FALSE => self.word(JSON_FALSE),
            _ => return Err(FormatError),
        }
        Ok(())
    }

    /// The hash of the values fed so far.
    pub fn finish(&self) -> i64 {
        // MurmurHash3's finalizer: every input bit reaches every output bit.
        let mut x = self.h;
        x ^= x >> 33;
        x = x.wrapping_mul(0xFF51_AFD7_ED55_8CCD);
        x ^= x >> 33;
        x = x.wrapping_mul(0xC4CE_B9FE_1A85_EC53);
        x ^= x >> 33;
        x as i64
    }
}

/// The open containers of a walk: the first few in place (left
/// uninitialized: most documents nest a level or two), deeper ones on the heap.
struct Stack<'a> {
    near: [MaybeUninit<Cursor<'a>>; NEAR],
    len: usize,
    deep: Vec<Cursor<'a>>,
}

const NEAR: usize = 16;

impl Default for Stack<'_> {
    fn default() -> Self {
        Stack {
            near: [const { MaybeUninit::uninit() }; NEAR],
            len: 0,
            deep: Vec::new(),
        }
    }
}

impl<'a> Stack<'a> {
    #[inline]
    fn push(&mut self, c: Cursor<'a>) {
        if self.len < NEAR {
            self.near[self.len].write(c);
        } else {
            self.deep.push(c);
        }
        self.len += 1;
    }

    #[inline]
    fn pop(&mut self) -> Option<Cursor<'a>> {
        if self.len == 0 {
            return None;
        }
        self.len -= 1;
        if self.len < NEAR {
            // SAFETY: push wrote every entry below the old len.
            Some(unsafe { self.near[self.len].assume_init() })
        } else {
            self.deep.pop()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::jsonb::VARHDRSZ;
    use crate::text::json;

    fn hash(feed: impl FnOnce(&mut RowHash)) -> i64 {
        let mut h = RowHash::default();
        feed(&mut h);
        h.finish()
    }

    fn doc(s: &str) -> i64 {
        let d = json(s);
        hash(|h| h.jsonb(&d[VARHDRSZ..]).unwrap())
    }

    fn num(s: &str) -> i64 {
        let d = numeric::parse(s).unwrap();
        hash(|h| h.numeric(&d).unwrap())
    }

    #[test]
    fn documents_equal_by_value_hash_equal() {
        assert_eq!(
            doc(r#"{"b": 1.0, "a": [1, 2, {"x": null}]}"#),
            doc(r#"{"a": [1, 2.00, {"x": null}], "b": 1}"#)
        );
        assert_eq!(doc("-0"), doc("0.000"));
    }

    #[test]
    fn a_documents_structure_counts() {
        let distinct = [
            "[[1], 2]",
            "[1, [2]]",
            "[1, 2]",
            "[1]",
            "1",
            "\"1\"",
            "-1",
            "10000",
            r#"{"a": {}}"#,
            r#"{"a": []}"#,
            r#"{"a": "b"}"#,
            r#"["a", "b"]"#,
            r#"{"ab": ""}"#,
            r#"{"a": "b", "c": null}"#,
            r#"{"a": "b", "c": false}"#,
            r#"{"a": "b", "c": true}"#,
            "{}",
            "[]",
            "null",
        ];
        let hashes: std::collections::HashSet<i64> = distinct.iter().map(|s| doc(s)).collect();
        assert_eq!(hashes.len(), distinct.len());
    }

    #[test]
    fn numerics_hash_by_value() {
        assert_eq!(num("1.0"), num("1.00"));
        assert_eq!(num("1"), num("1.000000"));
        assert_eq!(num("0"), num("-0.00"));
        assert_ne!(num("1"), num("-1"));
        assert_ne!(num("1"), num("10000"));
        assert_ne!(num("1.5"), num("15"));
        assert_ne!(num("12345678901234567890.5"), num("12345678901234567890.6"));
        // NaN and the infinities, as a column stores them (2-byte header after a short varlena header)
        let special = |h: u16| {
            let mut d = vec![(3 << 1) | 1];
            d.extend_from_slice(&h.to_ne_bytes());
            hash(|x| x.numeric(&d).unwrap())
        };
        let s = [special(0xC000), special(0xD000), special(0xF000), num("0")];
        assert_eq!(s.iter().collect::<std::collections::HashSet<_>>().len(), 4);
    }

    #[test]
    fn floats_hash_as_float_equality_compares() {
        let f = |v: f64| hash(|h| h.float(v));
        assert_eq!(f(0.0), f(-0.0));
        assert_eq!(f(f64::NAN), f(f64::from_bits(0x7FF8_0000_0000_0001)));
        assert_ne!(f(1.0), f(2.0));
        assert_ne!(f(f64::INFINITY), f(f64::NEG_INFINITY));
    }

    #[test]
    fn columns_count_in_order() {
        let row = |a: Option<i64>, b: Option<i64>| {
            hash(|h| {
                for v in [a, b] {
                    match v {
                        Some(v) => h.int(v),
                        None => h.null(),
                    }
                }
            })
        };
        assert_ne!(row(Some(1), Some(2)), row(Some(2), Some(1)));
        assert_ne!(row(None, Some(0)), row(Some(0), None));
        assert_eq!(row(Some(7), None), row(Some(7), None));
        let split = |a: &[u8], b: &[u8]| {
            hash(|h| {
                h.bytes(a);
                h.bytes(b)
            })
        };
        assert_ne!(split(b"ab", b"c"), split(b"a", b"bc"));
        assert_ne!(split(b"12345678", b""), split(b"1234567", b"8"));
        assert_ne!(hash(|h| h.bytes(b"")), hash(|h| h.null()));
    }

    #[test]
    fn deep_documents_walk_without_recursion() {
        let nest = |n: usize| format!("{}1{}", "[".repeat(n), "]".repeat(n));
        assert_eq!(doc(&nest(5000)), doc(&nest(5000)));
        assert_ne!(doc(&nest(5000)), doc(&nest(4999)));
        assert_ne!(doc(&nest(NEAR)), doc(&nest(NEAR + 1)));
    }

    #[test]
    fn a_malformed_document_is_an_error() {
        let d = json(r#"{"a": [1, 2, {"b": "c"}]}"#);
        for cut in VARHDRSZ..d.len() - 1 {
            let mut h = RowHash::default();
            // (a cut may still parse as a smaller document; it must not panic)
            let _ = h.jsonb(&d[VARHDRSZ..cut]);
        }
        let mut h = RowHash::default();
        assert_eq!(h.jsonb(&[0, 0, 0, 0x80]), Err(FormatError));
    }
}
