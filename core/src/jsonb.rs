//! PostgreSQL's binary jsonb container format, read and written in place.
//!
//! The merge engine works on this form directly: it walks the sorted key
//! lists of both inputs together and copies every untouched subtree byte for
//! byte. Going through text (or serde_json) instead costs 3–5× the time of
//! jsonb `||` and rewrites numerics; the binary walk never looks inside a
//! numeric it does not have to compare.
//!
//! Layout (src/include/utils/jsonb.h): a container is a `u32` header (count
//! and kind flags), one `u32` JEntry per child, then the children's data. An
//! object has `2n` children: the `n` keys (sorted by length, then bytes,
//! unique) followed by the `n` values. A JEntry holds the child's type and
//! either its length or, every [`STRIDE`]th child, its end offset.
//! Numerics and nested containers start 4-byte aligned; the padding counts as
//! part of the child. Alignment is relative to the root container, which
//! starts 4 bytes into the datum (after the varlena header) — so a writer that
//! reserves those 4 bytes can align on its own buffer length.

use std::cmp::Ordering;

pub const JB_CMASK: u32 = 0x0FFF_FFFF;
pub const JB_FSCALAR: u32 = 0x1000_0000;
pub const JB_FOBJECT: u32 = 0x2000_0000;
pub const JB_FARRAY: u32 = 0x4000_0000;

const JENTRY_OFFLENMASK: u32 = 0x0FFF_FFFF;
const JENTRY_TYPEMASK: u32 = 0x7000_0000;
const JENTRY_HAS_OFF: u32 = 0x8000_0000;

pub const T_STRING: u32 = 0x0000_0000;
pub const T_NUMERIC: u32 = 0x1000_0000;
pub const T_FALSE: u32 = 0x2000_0000;
pub const T_TRUE: u32 = 0x3000_0000;
pub const T_NULL: u32 = 0x4000_0000;
pub const T_CONTAINER: u32 = 0x5000_0000;

/// Every STRIDE'th JEntry stores an end offset instead of a length.
const STRIDE: usize = 32;

/// Bytes before the root container in a datum (the varlena header).
pub const VARHDRSZ: usize = 4;

/// Input that is not a well-formed jsonb container. PostgreSQL never hands
/// us such a datum; the check keeps a corrupted one from becoming a panic.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FormatError;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Object,
    Array,
    /// A top-level scalar, stored as a one-element array flagged scalar.
    Scalar,
}

#[inline]
fn read_u32(b: &[u8], at: usize) -> u32 {
    // One bounds check for the four bytes (indexing each byte costs four).
    u32::from_ne_bytes(b[at..at + 4].try_into().expect("4 bytes"))
}

#[inline]
fn int_align(n: usize) -> usize {
    (n + 3) & !3
}

/// A borrowed container: `bytes` starts at its header.
#[derive(Clone, Copy)]
pub struct Container<'a> {
    bytes: &'a [u8],
    header: u32,
}

/// One child value as stored: its JEntry type and its data without padding.
#[derive(Clone, Copy)]
pub struct Item<'a> {
    pub ty: u32,
    pub data: &'a [u8],
}

/// A decoded view of one child.
#[derive(Clone, Copy)]
pub enum Value<'a> {
    Null,
    Bool(bool),
    String(&'a [u8]),
    /// A numeric datum (varlena header included), never decoded unless compared.
    Numeric(&'a [u8]),
    Container(Container<'a>),
}

impl<'a> Item<'a> {
    #[inline]
    pub fn value(self) -> Result<Value<'a>, FormatError> {
        Ok(match self.ty {
            T_NULL => Value::Null,
            T_TRUE => Value::Bool(true),
            T_FALSE => Value::Bool(false),
            T_STRING => Value::String(self.data),
            T_NUMERIC => Value::Numeric(self.data),
            T_CONTAINER => Value::Container(Container::new(self.data)?),
            _ => return Err(FormatError),
        })
    }

    #[inline]
    pub fn is_null(self) -> bool {
        self.ty == T_NULL
    }

    /// The kind and element count of the container this item holds, read
    /// from its header without validating the rest (see [`Container::new`]).
    #[inline]
    pub fn container_kind(self) -> Option<(Kind, usize)> {
        if self.ty != T_CONTAINER || self.data.len() < 4 {
            return None;
        }
        let h = read_u32(self.data, 0);
        let kind = if h & JB_FOBJECT != 0 {
            Kind::Object
        } else if h & JB_FSCALAR != 0 {
            Kind::Scalar
        } else {
            Kind::Array
        };
        Some((kind, (h & JB_CMASK) as usize))
    }

    /// The container this item holds, if it is an object.
    #[inline]
    pub fn as_object(self) -> Option<Container<'a>> {
        if self.ty == T_CONTAINER {
            Container::new(self.data)
                .ok()
                .filter(|c| c.kind() == Kind::Object)
        } else {
            None
        }
    }

    #[inline]
    pub fn as_array(self) -> Option<Container<'a>> {
        if self.ty == T_CONTAINER {
            Container::new(self.data)
                .ok()
                .filter(|c| c.kind() == Kind::Array)
        } else {
            None
        }
    }
}

impl<'a> Container<'a> {
    /// A view of the container at the start of `bytes` (the datum without its
    /// varlena header). Checks that the header and JEntry array fit.
    pub fn new(bytes: &'a [u8]) -> Result<Self, FormatError> {
        if bytes.len() < 4 {
            return Err(FormatError);
        }
        let header = read_u32(bytes, 0);
        let c = Container { bytes, header };
        let flags = header & (JB_FOBJECT | JB_FARRAY);
        if flags != JB_FOBJECT && flags != JB_FARRAY {
            return Err(FormatError);
        }
        if 4 + 4 * c.children() > bytes.len() {
            return Err(FormatError);
        }
        if header & JB_FSCALAR != 0 && (flags != JB_FARRAY || c.len() != 1) {
            return Err(FormatError);
        }
        Ok(c)
    }

    #[inline]
    pub fn bytes(&self) -> &'a [u8] {
        self.bytes
    }

    /// Number of elements, or of key/value pairs for an object.
    #[inline]
    pub fn len(&self) -> usize {
        (self.header & JB_CMASK) as usize
    }

    #[inline]
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    #[inline]
    pub fn kind(&self) -> Kind {
        if self.header & JB_FOBJECT != 0 {
            Kind::Object
        } else if self.header & JB_FSCALAR != 0 {
            Kind::Scalar
        } else {
            Kind::Array
        }
    }

    #[inline]
    fn children(&self) -> usize {
        if self.header & JB_FOBJECT != 0 {
            2 * self.len()
        } else {
            self.len()
        }
    }

    #[inline]
    fn data_base(&self) -> usize {
        4 + 4 * self.children()
    }

    #[inline]
    fn jentry(&self, i: usize) -> u32 {
        read_u32(self.bytes, 4 + 4 * i)
    }

    /// Start offset of child `i` relative to the data area (getJsonbOffset).
    fn offset(&self, i: usize) -> usize {
        let mut off = 0usize;
        for j in (0..i).rev() {
            let e = self.jentry(j);
            off += (e & JENTRY_OFFLENMASK) as usize;
            if e & JENTRY_HAS_OFF != 0 {
                break;
            }
        }
        off
    }

    /// The child starting at data offset `off`, with its JEntry `e`.
    #[inline(always)]
    fn item_at(&self, e: u32, off: usize) -> Result<(Item<'a>, usize), FormatError> {
        let end = entry_end(e, off);
        let base = self.data_base();
        let ty = e & JENTRY_TYPEMASK;
        let start = if ty == T_NUMERIC || ty == T_CONTAINER {
            int_align(off)
        } else {
            off
        };
        if end < start || base + end > self.bytes.len() {
            return Err(FormatError);
        }
        Ok((
            Item {
                ty,
                data: &self.bytes[base + start..base + end],
            },
            end,
        ))
    }

    /// Child `i` by random access (O(STRIDE) offset search).
    pub fn child(&self, i: usize) -> Result<Item<'a>, FormatError> {
        if i >= self.children() {
            return Err(FormatError);
        }
        Ok(self.item_at(self.jentry(i), self.offset(i))?.0)
    }

    /// Sequential cursor over children `from..to`.
    #[inline]
    pub fn cursor(&self, from: usize, to: usize) -> Cursor<'a> {
        let end = to.min(self.children());
        let from = from.min(end);
        Cursor {
            c: *self,
            i: from,
            end,
            off: self.offset(from),
        }
    }

    /// Every child in storage order: an object's keys, then its values.
    #[inline]
    pub fn all(&self) -> Cursor<'a> {
        self.cursor(0, self.children())
    }

    /// Elements of an array (or the single value of a scalar container).
    #[inline]
    pub fn elements(&self) -> Cursor<'a> {
        self.cursor(0, self.len())
    }

    /// Keys of an object, in storage order.
    #[inline]
    pub fn keys(&self) -> Cursor<'a> {
        self.cursor(0, self.len())
    }

    /// Values of an object, in key order.
    #[inline]
    pub fn values(&self) -> Cursor<'a> {
        self.cursor(self.len(), 2 * self.len())
    }

    /// Key/value pairs of an object in key order.
    #[inline]
    pub fn pairs(&self) -> Pairs<'a> {
        let n = if self.kind() == Kind::Object {
            self.len()
        } else {
            0
        };
        Pairs {
            bytes: self.bytes,
            base: self.data_base(),
            i: 0,
            n,
            key_off: 0,
            value_off: self.offset(n),
        }
    }

    /// The value stored under `key` (binary search, like findJsonbValueFromContainer).
    pub fn get(&self, key: &[u8]) -> Result<Option<Item<'a>>, FormatError> {
        let (mut lo, mut hi) = (0usize, self.len());
        while lo < hi {
            let mid = lo + (hi - lo) / 2;
            let k = self.child(mid)?;
            match key_cmp(k.data, key) {
                Ordering::Less => lo = mid + 1,
                Ordering::Greater => hi = mid,
                Ordering::Equal => return self.child(mid + self.len()).map(Some),
            }
        }
        Ok(None)
    }

    /// The single value of a scalar container.
    pub fn scalar(&self) -> Result<Item<'a>, FormatError> {
        self.child(0)
    }

    /// The whole of a root container seen as one item: the container, or
    /// the value a top-level scalar wraps.
    pub fn root_item(&self) -> Result<Item<'a>, FormatError> {
        if self.kind() == Kind::Scalar {
            self.scalar()
        } else {
            Ok(Item {
                ty: T_CONTAINER,
                data: self.bytes,
            })
        }
    }
}

/// Walks children in order, keeping a running offset so each step is O(1).
#[derive(Clone, Copy)]
pub struct Cursor<'a> {
    c: Container<'a>,
    i: usize,
    end: usize,
    off: usize,
}

impl<'a> Iterator for Cursor<'a> {
    type Item = Result<Item<'a>, FormatError>;

    #[inline(always)]
    fn next(&mut self) -> Option<Self::Item> {
        if self.i >= self.end {
            return None;
        }
        let e = self.c.jentry(self.i);
        self.i += 1;
        Some(self.c.item_at(e, self.off).map(|(item, end)| {
            self.off = end;
            item
        }))
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        let n = self.end - self.i;
        (n, Some(n))
    }
}

/// Walks an object's keys and values together, each step O(1). This is the
/// merge's innermost loop, so it reads the two JEntries itself instead of
/// going through two [`Cursor`]s.
pub struct Pairs<'a> {
    bytes: &'a [u8],
    base: usize,
    i: usize,
    n: usize,
    key_off: usize,
    value_off: usize,
}

impl<'a> Pairs<'a> {
    /// The next pair, or `None` at the end — or at a malformed entry, after
    /// which [`Pairs::failed`] is true. A flag instead of a `Result` keeps the
    /// merge's innermost loop free of error plumbing.
    #[inline]
    pub fn next_pair(&mut self) -> Option<(&'a [u8], Item<'a>)> {
        if self.i >= self.n {
            return None;
        }
        let ke = read_u32(self.bytes, 4 + 4 * self.i);
        let ve = read_u32(self.bytes, 4 + 4 * (self.n + self.i));
        let key_end = entry_end(ke, self.key_off);
        let value_end = entry_end(ve, self.value_off);
        let ty = ve & JENTRY_TYPEMASK;
        let value_start = if ty == T_NUMERIC || ty == T_CONTAINER {
            int_align(self.value_off)
        } else {
            self.value_off
        };
        let key = self
            .bytes
            .get(self.base + self.key_off..self.base + key_end);
        let data = self
            .bytes
            .get(self.base + value_start..self.base + value_end);
        let (Some(key), Some(data)) = (key, data) else {
            self.i = usize::MAX;
            return None;
        };
        self.key_off = key_end;
        self.value_off = value_end;
        self.i += 1;
        Some((key, Item { ty, data }))
    }

    /// Whether the walk stopped at a malformed entry.
    pub fn failed(&self) -> bool {
        self.i == usize::MAX
    }
}

/// End offset of a child whose data starts at `off`, from its JEntry.
#[inline(always)]
fn entry_end(e: u32, off: usize) -> usize {
    if e & JENTRY_HAS_OFF != 0 {
        (e & JENTRY_OFFLENMASK) as usize
    } else {
        off + (e & JENTRY_OFFLENMASK) as usize
    }
}

/// The root container of `{}`.
pub const EMPTY_OBJECT: &[u8] = &JB_FOBJECT.to_ne_bytes();

/// jsonb's key order: shorter keys first, then bytewise.
#[inline]
pub fn key_cmp(a: &[u8], b: &[u8]) -> Ordering {
    match a.len().cmp(&b.len()) {
        // Most keys are short: compared as one big-endian integer, not by a
        // call to memcmp, which costs more than the comparison itself.
        Ordering::Equal if a.len() <= 8 => short_key(a).cmp(&short_key(b)),
        Ordering::Equal => a.cmp(b),
        unequal => unequal,
    }
}

/// A key of at most 8 bytes as an integer whose order is the bytes' order
/// (among keys of the same length).
#[inline(always)]
fn short_key(k: &[u8]) -> u64 {
    k.iter().fold(0, |v, &b| (v << 8) | b as u64)
}

/// Output would exceed what a jsonb can hold (PostgreSQL's limits).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WriteError {
    TooLarge,
    TooManyElements,
}

/// Builds a jsonb datum. The first [`VARHDRSZ`] bytes are reserved for the
/// varlena header, which the caller sets.
pub struct Writer {
    buf: Vec<u8>,
}

/// An open container in a [`Writer`]: children are pushed in storage order
/// (for objects: every key, then every value).
pub struct Open {
    start: usize,
    children: usize,
    next: usize,
}

impl Writer {
    /// A writer that reuses `buf`'s allocation (its contents are dropped).
    pub fn reusing(mut buf: Vec<u8>, cap: usize) -> Self {
        buf.clear();
        buf.reserve(cap + VARHDRSZ);
        buf.extend_from_slice(&[0; VARHDRSZ]);
        Writer { buf }
    }

    pub fn with_capacity(cap: usize) -> Self {
        let mut buf = Vec::with_capacity(cap + VARHDRSZ);
        buf.extend_from_slice(&[0; VARHDRSZ]);
        Writer { buf }
    }

    /// The finished datum, varlena header bytes still zero.
    pub fn into_inner(self) -> Vec<u8> {
        self.buf
    }

    #[inline]
    fn pad(&mut self) {
        let pad = self.buf.len().wrapping_neg() % 4;
        if pad > 0 {
            self.buf.extend_from_slice(&[0; 3][..pad]);
        }
    }

    /// Opens a container; `count` is the number of elements or pairs.
    pub fn open(&mut self, kind: Kind, count: usize) -> Result<Open, WriteError> {
        if count > JB_CMASK as usize {
            return Err(WriteError::TooManyElements);
        }
        self.pad();
        let start = self.buf.len();
        let (flags, count, children) = match kind {
            Kind::Object => (JB_FOBJECT, count, 2 * count),
            Kind::Array => (JB_FARRAY, count, count),
            Kind::Scalar => (JB_FARRAY | JB_FSCALAR, 1, 1),
        };
        self.buf
            .extend_from_slice(&(flags | count as u32).to_ne_bytes());
        self.buf.resize(start + 4 + 4 * children, 0);
        Ok(Open {
            start,
            children,
            next: 0,
        })
    }

    /// Records the JEntry of the child whose data began at `child_start`
    /// (before any alignment padding) and has just been written.
    #[inline]
    fn finish_child(
        &mut self,
        o: &mut Open,
        ty: u32,
        child_start: usize,
    ) -> Result<(), WriteError> {
        debug_assert!(o.next < o.children);
        let data_base = o.start + 4 + 4 * o.children;
        let total = self.buf.len() - data_base;
        if total > JENTRY_OFFLENMASK as usize {
            return Err(WriteError::TooLarge);
        }
        let e = if o.next % STRIDE == 0 {
            ty | total as u32 | JENTRY_HAS_OFF
        } else {
            ty | (self.buf.len() - child_start) as u32
        };
        let at = o.start + 4 + 4 * o.next;
        self.buf[at..at + 4].copy_from_slice(&e.to_ne_bytes());
        o.next += 1;
        Ok(())
    }

    /// Copies a stored child byte for byte (re-aligning it if it needs it).
    #[inline]
    pub fn push_item(&mut self, o: &mut Open, item: Item<'_>) -> Result<(), WriteError> {
        let child_start = self.buf.len();
        if item.ty == T_NUMERIC || item.ty == T_CONTAINER {
            self.pad();
        }
        self.buf.extend_from_slice(item.data);
        self.finish_child(o, item.ty, child_start)
    }

    #[inline]
    pub fn push_string(&mut self, o: &mut Open, s: &[u8]) -> Result<(), WriteError> {
        self.push_item(
            o,
            Item {
                ty: T_STRING,
                data: s,
            },
        )
    }

    /// Starts a nested container as the next child of `o`; close it with
    /// [`Writer::close_nested`].
    pub fn open_nested(&mut self, kind: Kind, count: usize) -> Result<(usize, Open), WriteError> {
        let child_start = self.buf.len();
        Ok((child_start, self.open(kind, count)?))
    }

    pub fn close_nested(
        &mut self,
        parent: &mut Open,
        child_start: usize,
        inner: Open,
    ) -> Result<(), WriteError> {
        debug_assert_eq!(
            inner.next, inner.children,
            "container closed before all children were written"
        );
        self.finish_child(parent, T_CONTAINER, child_start)
    }

    /// Bytes written so far (header included): lets a caller roll back.
    pub fn len(&self) -> usize {
        self.buf.len()
    }

    pub fn is_empty(&self) -> bool {
        self.buf.len() == VARHDRSZ
    }

    /// Writes a root that is exactly one stored item: a container is copied
    /// whole; a scalar gets the scalar-array wrapper.
    pub fn root_from_item(item: Item<'_>) -> Result<Vec<u8>, WriteError> {
        let mut w = Writer::with_capacity(item.data.len() + 12);
        if item.ty == T_CONTAINER {
            w.buf.extend_from_slice(item.data);
        } else {
            let mut o = w.open(Kind::Scalar, 1)?;
            w.push_item(&mut o, item)?;
        }
        Ok(w.into_inner())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Hand-built `{"a": 1-as-string, "bb": [true, null]}`.
    fn sample() -> Vec<u8> {
        let mut w = Writer::with_capacity(64);
        let mut o = w.open(Kind::Object, 2).unwrap();
        w.push_string(&mut o, b"a").unwrap();
        w.push_string(&mut o, b"bb").unwrap();
        w.push_string(&mut o, b"one").unwrap();
        let (s, mut inner) = w.open_nested(Kind::Array, 2).unwrap();
        w.push_item(
            &mut inner,
            Item {
                ty: T_TRUE,
                data: &[],
            },
        )
        .unwrap();
        w.push_item(
            &mut inner,
            Item {
                ty: T_NULL,
                data: &[],
            },
        )
        .unwrap();
        w.close_nested(&mut o, s, inner).unwrap();
        w.into_inner()
    }

    #[test]
    fn writes_and_reads_back() {
        let buf = sample();
        let c = Container::new(&buf[VARHDRSZ..]).unwrap();
        assert_eq!(c.kind(), Kind::Object);
        assert_eq!(c.len(), 2);
        let keys: Vec<_> = c.keys().map(|k| k.unwrap().data.to_vec()).collect();
        assert_eq!(keys, vec![b"a".to_vec(), b"bb".to_vec()]);
        let a = c.get(b"a").unwrap().unwrap();
        assert!(matches!(a.value().unwrap(), Value::String(b"one")));
        let arr = c.get(b"bb").unwrap().unwrap().as_array().unwrap();
        let els: Vec<u32> = arr.elements().map(|e| e.unwrap().ty).collect();
        assert_eq!(els, vec![T_TRUE, T_NULL]);
        assert!(c.get(b"zz").unwrap().is_none());
    }

    #[test]
    fn stride_offsets_round_trip() {
        // 100 children cross several STRIDE boundaries, exercising both the
        // length and the end-offset JEntry forms.
        let mut w = Writer::with_capacity(1024);
        let mut o = w.open(Kind::Array, 100).unwrap();
        for i in 0..100 {
            w.push_string(&mut o, format!("v{i}").as_bytes()).unwrap();
        }
        let buf = w.into_inner();
        let c = Container::new(&buf[VARHDRSZ..]).unwrap();
        for (i, e) in c.elements().enumerate() {
            assert_eq!(e.unwrap().data, format!("v{i}").as_bytes());
            assert_eq!(c.child(i).unwrap().data, format!("v{i}").as_bytes());
        }
    }

    /// The short-key path orders as PostgreSQL does: by length, then bytes
    /// (unsigned), on every pair of keys up to 3 bytes over a few byte values,
    /// and on keys at and around the 8-byte boundary.
    #[test]
    fn key_order_is_length_then_bytes() {
        let bytes = [0u8, 1, 0x7f, 0x80, 0xff];
        let mut keys: Vec<Vec<u8>> = vec![vec![]];
        for len in 1..=3 {
            let mut next = Vec::new();
            for k in keys.iter().filter(|k| k.len() == len - 1) {
                for &b in &bytes {
                    next.push([k.as_slice(), &[b]].concat());
                }
            }
            keys.extend(next);
        }
        for base in [b"abcdefg".as_slice(), b"abcdefgh", b"abcdefghi"] {
            for &b in &bytes {
                let mut k = base.to_vec();
                *k.last_mut().unwrap() = b;
                keys.push(k.clone());
                k[0] = b;
                keys.push(k);
            }
        }
        for a in &keys {
            for b in &keys {
                let want = a.len().cmp(&b.len()).then_with(|| a.as_slice().cmp(b));
                assert_eq!(key_cmp(a, b), want, "{a:?} vs {b:?}");
            }
        }
    }

    #[test]
    fn rejects_truncated_input() {
        let buf = sample();
        assert!(Container::new(&buf[VARHDRSZ..VARHDRSZ + 6]).is_err());
        let short = &buf[VARHDRSZ..buf.len() - 2];
        let c = Container::new(short).unwrap();
        assert!(c.values().any(|v| v.is_err()));
    }
}
