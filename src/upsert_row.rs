//! The row `merge_upsert` returns: the stored row as one jsonb object,
//! built from the statement's RETURNING list in SPI's result.

use crate::errors::{self, corrupt, raise};
use crate::jsonb_arg::JsonbRaw;
use crate::merge::jsonb::{Container, Item, Kind as JKind, Writer};
use crate::table_info::{Column, Kind, TableInfo};
use crate::varlena::{payload, raw_bytes};
use pgrx::prelude::*;

/// Runs `build` over the row the upsert returned (every column, in
/// order); its result is then the SPI tuple table `row_json` reads.
pub unsafe fn build_on_coordinator(build: pg_sys::SPIPlanPtr, ncols: usize) {
    unsafe {
        let tt = &*pg_sys::SPI_tuptable;
        let vals = pg_sys::palloc(ncols.max(1) * 8) as *mut pg_sys::Datum;
        let nls = pg_sys::palloc(ncols.max(1)) as *mut std::ffi::c_char;
        for i in 0..ncols {
            let mut isnull = false;
            *vals.add(i) = pg_sys::SPI_getbinval(*tt.vals, tt.tupdesc, i as i32 + 1, &mut isnull);
            *nls.add(i) = if isnull { b'n' } else { b' ' } as std::ffi::c_char;
        }
        let rc = errors::spi_execute_plan(build, vals, nls);
        if rc != pg_sys::SPI_OK_SELECT as i32 || pg_sys::SPI_processed != 1 {
            pg_sys::SPI_finish();
            raise(
                PgSqlErrorCode::ERRCODE_INTERNAL_ERROR,
                format!("merge_upsert: SPI returned {rc} building the stored row"),
                None,
            );
        }
    }
}

/// The returned row as one jsonb object (a [`Writer`] buffer) from the
/// RETURNING list: every column as it is (`raw`), or an object of the
/// other columns then each jsonb column's value; merged in jsonb key order.
pub unsafe fn row_json(info: &TableInfo, raw: bool) -> Vec<u8> {
    unsafe {
        let tt = &*pg_sys::SPI_tuptable;
        let value = |n: usize| {
            let mut isnull = false;
            let d = pg_sys::SPI_getbinval(*tt.vals, tt.tupdesc, n as i32 + 1, &mut isnull);
            (!isnull).then_some(d)
        };
        // The values the items below borrow from.
        let mut base = None;
        let mut held: Vec<Option<Held>> = Vec::with_capacity(info.columns.len());
        let mut names: Vec<&[u8]> = Vec::with_capacity(info.columns.len());
        if raw {
            for (n, c) in info.columns.iter().enumerate() {
                names.push(c.name.as_bytes());
                held.push(value(n).map(|d| Held::of(d, c)));
            }
        } else {
            base =
                Some(JsonbRaw::from_datum(value(0).unwrap_or_else(|| corrupt()), false).unwrap());
            let docs = info.columns.iter().filter(|c| c.kind == Kind::Jsonb);
            for (n, c) in docs.enumerate() {
                names.push(c.name.as_bytes());
                held.push(value(n + 1).map(|d| Held::of(d, c)));
            }
        }
        let mut pairs: Vec<(&[u8], Item)> = Vec::with_capacity(info.columns.len());
        if let Some(base) = &base {
            let base = Container::new(base.container()).unwrap_or_else(|_| corrupt());
            let mut it = base.pairs();
            while let Some(p) = it.next_pair() {
                pairs.push(p);
            }
        }
        for (name, h) in names.into_iter().zip(&held) {
            let null = Item {
                ty: crate::merge::jsonb::T_NULL,
                data: &[],
            };
            pairs.push((name, h.as_ref().map_or(null, Held::item)));
        }
        pairs.sort_by(|a, b| crate::merge::jsonb::key_cmp(a.0, b.0));
        let size: usize = pairs.iter().map(|(k, v)| k.len() + v.data.len() + 8).sum();
        let mut w = Writer::with_capacity(size + 16);
        let built = (|| {
            let mut o = w.open(JKind::Object, pairs.len())?;
            for (k, _) in &pairs {
                w.push_string(&mut o, k)?;
            }
            for (_, v) in &pairs {
                w.push_item(&mut o, *v)?;
            }
            Ok::<(), crate::merge::jsonb::WriteError>(())
        })();
        if built.is_err() {
            raise(
                PgSqlErrorCode::ERRCODE_PROGRAM_LIMIT_EXCEEDED,
                "merge_upsert: the stored row is too large for one jsonb value".into(),
                None,
            );
        }
        w.into_inner()
    }
}

/// A jsonb document's root as the value it is: its container, or the
/// scalar a top-level scalar wraps.
pub fn root_item(root: &[u8]) -> Item<'_> {
    Container::new(root)
        .and_then(|c| c.root_item())
        .unwrap_or_else(|_| corrupt())
}

/// A returned column's value as `to_jsonb` has it, for its item: a jsonb
/// document, a numeric (of an integer), a string or a boolean.
/// The bytes live in this call's memory context, as long as the row.
enum Held {
    Doc(JsonbRaw),
    Numeric(&'static [u8]),
    String(&'static [u8]),
    Bool(bool),
}

impl Held {
    /// The value of a column `returned_raw` takes.
    unsafe fn of(d: pg_sys::Datum, c: &Column) -> Held {
        unsafe {
            let int = match c.typid {
                _ if c.kind == Kind::Jsonb => {
                    return Held::Doc(JsonbRaw::from_datum(d, false).unwrap());
                }
                pg_sys::BOOLOID => return Held::Bool(d.value() & 0xFF != 0),
                pg_sys::INT2OID => d.value() as i16 as i64,
                pg_sys::INT4OID => d.value() as i32 as i64,
                pg_sys::INT8OID => d.value() as i64,
                _ => return Held::String(payload(d)),
            };
            // A jsonb number is a numeric datum, header included.
            Held::Numeric(raw_bytes(pg_sys::Datum::from(pg_sys::int64_to_numeric(
                int,
            ))))
        }
    }

    fn item(&self) -> Item<'_> {
        use crate::merge::jsonb::{T_FALSE, T_NUMERIC, T_STRING, T_TRUE};
        match *self {
            Held::Doc(ref d) => root_item(d.container()),
            Held::Numeric(data) => Item {
                ty: T_NUMERIC,
                data,
            },
            Held::String(data) => Item { ty: T_STRING, data },
            Held::Bool(b) => Item {
                ty: if b { T_TRUE } else { T_FALSE },
                data: &[],
            },
        }
    }
}

/// Column `i` of the first SPI result row, copied out of SPI's memory.
pub unsafe fn first_value(i: i32) -> Option<pg_sys::Datum> {
    unsafe {
        let tt = &*pg_sys::SPI_tuptable;
        let mut isnull = false;
        let d = pg_sys::SPI_getbinval(*tt.vals, tt.tupdesc, i + 1, &mut isnull);
        (!isnull).then(|| pg_sys::SPI_datumTransfer(d, false, -1))
    }
}

pub unsafe fn text_value(i: i32) -> Option<String> {
    unsafe {
        let tt = &*pg_sys::SPI_tuptable;
        let p = pg_sys::SPI_getvalue(*tt.vals, tt.tupdesc, i + 1);
        (!p.is_null()).then(|| std::ffi::CStr::from_ptr(p).to_string_lossy().into_owned())
    }
}
