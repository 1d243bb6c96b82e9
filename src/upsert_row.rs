//! The row `merge_upsert` returns: the stored row as one jsonb object,
//! built from the statement's RETURNING list in SPI's result.

use crate::errors::{self, corrupt, raise};
use crate::jsonb_arg::JsonbRaw;
use crate::merge::jsonb::{Container, Item, Kind as JKind, Writer};
use crate::table_info::{Kind, TableInfo};
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
/// RETURNING list: an object of the other columns, then each jsonb
/// column's value, merged in jsonb key order.
pub unsafe fn row_json(info: &TableInfo) -> Vec<u8> {
    unsafe {
        let tt = &*pg_sys::SPI_tuptable;
        let mut isnull = false;
        let base = pg_sys::SPI_getbinval(*tt.vals, tt.tupdesc, 1, &mut isnull);
        let base = JsonbRaw::from_datum(base, isnull).unwrap_or_else(|| corrupt());
        let base = Container::new(base.container()).unwrap_or_else(|_| corrupt());
        let mut pairs: Vec<(&[u8], Item)> = Vec::with_capacity(info.columns.len());
        let mut it = base.pairs();
        while let Some(p) = it.next_pair() {
            pairs.push(p);
        }
        let docs: Vec<Option<JsonbRaw>> = (0..info
            .columns
            .iter()
            .filter(|c| c.kind == Kind::Jsonb)
            .count())
            .map(|i| {
                let d = pg_sys::SPI_getbinval(*tt.vals, tt.tupdesc, i as i32 + 2, &mut isnull);
                JsonbRaw::from_datum(d, isnull)
            })
            .collect();
        let names = info
            .columns
            .iter()
            .filter(|c| c.kind == Kind::Jsonb)
            .map(|c| c.name.as_bytes());
        for (name, doc) in names.zip(&docs) {
            let item = match doc {
                None => Item {
                    ty: crate::merge::jsonb::T_NULL,
                    data: &[],
                },
                Some(d) => {
                    let c = Container::new(d.container()).unwrap_or_else(|_| corrupt());
                    if c.kind() == JKind::Scalar {
                        c.scalar().unwrap_or_else(|_| corrupt())
                    } else {
                        Item {
                            ty: crate::merge::jsonb::T_CONTAINER,
                            data: d.container(),
                        }
                    }
                }
            };
            pairs.push((name, item));
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
