//! `syncguard._reconcile_row_hash(VARIADIC "any")`: reconcile's row hash
//! (core's `row_hash`), one call per row over the columns compared.
//! reconcile ships it to a remote server that has syncguard too (listed in
//! the foreign server's `extensions` option), so that each server hashes its
//! own rows; it costs a fraction of the built-in hash functions it replaces
//! there, above all jsonb's.
//!
//! It takes the types `reconcile`'s SQL passes it (`_reconcile_row_hash_args`
//! in sql/install/reconcile.sql); other columns keep their SQL hash.

use crate::errors::raise;
use crate::varlena::{detoasted, payload, raw_bytes};
use pgrx::pg_sys::Oid;
use pgrx::prelude::*;
use syncguard_core::jsonb::FormatError;
use syncguard_core::row_hash::RowHash;

/// How a column's value is read, from its type (a domain's base type).
#[derive(Clone, Copy)]
#[repr(u8)]
enum Read {
    Int2,
    Int4,
    Int8,
    Bool,
    Float4,
    Float8,
    Numeric,
    /// text, varchar, bytea, json: the bytes as stored
    Bytes,
    /// bpchar: the bytes without trailing spaces, which its equality ignores
    Bpchar,
    Jsonb,
    Uuid,
}

/// The reader of a type's values; `None` for a type it does not hash, or
/// none at all. This is the list reconcile's SQL asks for, through
/// `_reconcile_row_hash_takes`.
fn read_of(typ: Oid) -> Option<Read> {
    // SAFETY: syscache lookups; getBaseType only of a type that exists.
    let base = unsafe {
        if pg_sys::get_typtype(typ) == 0 {
            return None;
        }
        pg_sys::getBaseType(typ)
    };
    Some(match base {
        pg_sys::INT2OID => Read::Int2,
        pg_sys::INT4OID | pg_sys::DATEOID => Read::Int4,
        pg_sys::INT8OID | pg_sys::TIMESTAMPOID | pg_sys::TIMESTAMPTZOID | pg_sys::TIMEOID => {
            Read::Int8
        }
        pg_sys::BOOLOID => Read::Bool,
        pg_sys::FLOAT4OID => Read::Float4,
        pg_sys::FLOAT8OID => Read::Float8,
        pg_sys::NUMERICOID => Read::Numeric,
        pg_sys::TEXTOID | pg_sys::VARCHAROID | pg_sys::BYTEAOID | pg_sys::JSONOID => Read::Bytes,
        pg_sys::BPCHAROID => Read::Bpchar,
        pg_sys::JSONBOID => Read::Jsonb,
        pg_sys::UUIDOID => Read::Uuid,
        _ => return None,
    })
}

/// The readers of the call's arguments from `first` on, looked up once per
/// call site and kept in `fn_extra` (the function's memory context lives as
/// long).
unsafe fn readers<'a>(fcinfo: pg_sys::FunctionCallInfo, first: usize) -> &'a [Read] {
    unsafe {
        let flinfo = (*fcinfo).flinfo;
        let n = ((*fcinfo).nargs as usize).saturating_sub(first);
        if (*flinfo).fn_extra.is_null() {
            let reads = pg_sys::MemoryContextAlloc((*flinfo).fn_mcxt, n.max(1)) as *mut Read;
            for i in 0..n {
                let typ = pg_sys::get_fn_expr_argtype(flinfo, (first + i) as i32);
                let Some(read) = read_of(typ) else {
                    raise(
                        PgSqlErrorCode::ERRCODE_FEATURE_NOT_SUPPORTED,
                        format!(
                            "reconcile's row hash: value {} has a type it does not hash ({})",
                            i + 1,
                            type_name(typ)
                        ),
                        Some("reconcile passes it only the types it hashes; other columns keep their SQL hash."),
                    )
                };
                reads.add(i).write(read);
            }
            (*flinfo).fn_extra = reads.cast();
        }
        std::slice::from_raw_parts((*flinfo).fn_extra as *const Read, n)
    }
}

fn type_name(typ: Oid) -> String {
    if typ == pg_sys::InvalidOid {
        return "unknown".into();
    }
    // SAFETY: format_type_be returns a palloc'd C string for any OID.
    unsafe {
        std::ffi::CStr::from_ptr(pg_sys::format_type_be(typ))
            .to_string_lossy()
            .into_owned()
    }
}

/// Feeds one non-NULL value to `h`.
unsafe fn feed(h: &mut RowHash, read: Read, d: pg_sys::Datum) -> Result<(), FormatError> {
    // SAFETY: `d` is a value of the type `read` was chosen for.
    unsafe {
        match read {
            Read::Numeric => return h.numeric(raw_bytes(detoasted(d))),
            Read::Jsonb => return h.jsonb(payload(d)),
            Read::Int2 => h.int(d.value() as i16 as i64),
            Read::Int4 => h.int(d.value() as i32 as i64),
            Read::Int8 => h.int(d.value() as i64),
            Read::Bool => h.int((d.value() & 0xFF != 0) as i64),
            Read::Float4 => h.float(f32::from_bits(d.value() as u32) as f64),
            Read::Float8 => h.float(f64::from_bits(d.value() as u64)),
            Read::Bytes => h.bytes(payload(d)),
            Read::Bpchar => {
                let b = payload(d);
                let end = b.iter().rposition(|&c| c != b' ').map_or(0, |p| p + 1);
                h.bytes(&b[..end]);
            }
            Read::Uuid => h.bytes(std::slice::from_raw_parts(d.cast_mut_ptr::<u8>(), 16)),
        }
    }
    Ok(())
}

/// The row hash of the arguments from `first` on.
unsafe fn row_hash(fcinfo: pg_sys::FunctionCallInfo, first: usize) -> i64 {
    // SAFETY: the manager's fcinfo; each argument is read as its type says.
    unsafe {
        let mut h = RowHash::default();
        for (i, read) in readers(fcinfo, first).iter().enumerate() {
            let Some(d) = pgrx::fcinfo::pg_getarg_datum(fcinfo, first + i) else {
                h.null();
                continue;
            };
            let ok = feed(&mut h, *read, d);
            if ok.is_err() {
                raise(
                    PgSqlErrorCode::ERRCODE_DATA_CORRUPTED,
                    format!(
                        "reconcile's row hash: value {} is not a well-formed value of its type",
                        i + 1
                    ),
                    None,
                );
            }
        }
        h.finish()
    }
}

/// `_reconcile_row_hash(VARIADIC "any")`: the hash of one row.
///
/// # Safety
/// Called by PostgreSQL's function manager with a valid `fcinfo`.
#[pg_guard]
#[no_mangle]
pub unsafe extern "C-unwind" fn reconcile_row_hash_wrapper(
    fcinfo: pg_sys::FunctionCallInfo,
) -> pg_sys::Datum {
    // SAFETY: the manager's fcinfo.
    pg_sys::Datum::from(unsafe { row_hash(fcinfo, 0) })
}

crate::finfo_v1!(pg_finfo_reconcile_row_hash_wrapper);

/// `_reconcile_row_hash_takes(regtype)`: whether `_reconcile_row_hash`
/// hashes values of the type.
///
/// # Safety
/// Called by PostgreSQL's function manager with a valid `fcinfo`.
#[pg_guard]
#[no_mangle]
pub unsafe extern "C-unwind" fn reconcile_row_hash_takes_wrapper(
    fcinfo: pg_sys::FunctionCallInfo,
) -> pg_sys::Datum {
    // SAFETY: the manager's fcinfo, with the one regtype argument of the
    // SQL declaration (STRICT: never NULL here).
    let typ = unsafe { pgrx::fcinfo::pg_getarg_datum(fcinfo, 0) }
        .map_or(pg_sys::InvalidOid, |d| pg_sys::Oid::from(d.value() as u32));
    pg_sys::Datum::from(read_of(typ).is_some())
}

crate::finfo_v1!(pg_finfo_reconcile_row_hash_takes_wrapper);

/// The state of `_reconcile_checksums(segment, VARIADIC "any")`: per segment
/// number, the rows' count and the wrapping sum of their hashes, in the
/// aggregate's memory context (nothing here needs dropping when a query
/// fails).
#[repr(C)]
struct Sums {
    len: usize,
    cells: *mut [i64; 2],
}

/// Segment numbers above this are an error: reconcile numbers segments
/// densely, and 100,000 segments a pass is its maximum.
const MAX_SEGMENT: i32 = 1 << 24;

impl Sums {
    /// An empty state in `context`.
    unsafe fn new(context: pg_sys::MemoryContext) -> *mut Sums {
        unsafe {
            let s = pg_sys::MemoryContextAllocZero(context, size_of::<Sums>()) as *mut Sums;
            (*s).cells = pg_sys::MemoryContextAllocZero(context, size_of::<[i64; 2]>()).cast();
            (*s).len = 1;
            s
        }
    }

    /// Counts a row of hash `h` in segment `seg`, the cells grown to hold
    /// it (in the context they were made in).
    fn add(&mut self, seg: usize, h: i64) {
        // SAFETY: `new` made len zeroed cells; repalloc keeps their context.
        let cell = unsafe {
            if seg >= self.len {
                let len = (seg + 1).max(2 * self.len);
                let cells: *mut [i64; 2] =
                    pg_sys::repalloc(self.cells.cast(), len * size_of::<[i64; 2]>()).cast();
                std::ptr::write_bytes(cells.add(self.len), 0, len - self.len);
                self.cells = cells;
                self.len = len;
            }
            &mut *self.cells.add(seg)
        };
        cell[0] += 1;
        cell[1] = cell[1].wrapping_add(h);
    }

    /// `(segment, count, sum)` of every segment with rows, in order.
    fn triples(&self) -> impl Iterator<Item = [i64; 3]> + '_ {
        // SAFETY: len cells were allocated and zeroed.
        let cells = unsafe { std::slice::from_raw_parts(self.cells, self.len) };
        cells
            .iter()
            .enumerate()
            .filter(|(_, [n, _])| *n > 0)
            .map(|(seg, [n, h])| [seg as i64, *n, *h])
    }
}

/// The aggregate's step: adds the row of the arguments after the segment.
///
/// # Safety
/// Called by PostgreSQL's function manager with a valid `fcinfo`.
#[pg_guard]
#[no_mangle]
pub unsafe extern "C-unwind" fn reconcile_checksums_step_wrapper(
    fcinfo: pg_sys::FunctionCallInfo,
) -> pg_sys::Datum {
    // SAFETY: the manager's fcinfo; the state is ours, made below.
    unsafe {
        let mut context: pg_sys::MemoryContext = std::ptr::null_mut();
        if pg_sys::AggCheckCallContext(fcinfo, &mut context) == 0 {
            raise(
                PgSqlErrorCode::ERRCODE_FEATURE_NOT_SUPPORTED,
                "syncguard._reconcile_checksums_step can only be called by its aggregate".into(),
                None,
            )
        }
        let seg = match pgrx::fcinfo::pg_getarg_datum(fcinfo, 1) {
            Some(d) if (0..MAX_SEGMENT).contains(&(d.value() as i32)) => d.value() as i32 as usize,
            _ => raise(
                PgSqlErrorCode::ERRCODE_PROGRAM_LIMIT_EXCEEDED,
                format!(
                    "syncguard._reconcile_checksums: a segment number must be 0 … {}",
                    MAX_SEGMENT - 1
                ),
                None,
            ),
        };
        let sums = match pgrx::fcinfo::pg_getarg_datum(fcinfo, 0) {
            Some(d) => d.cast_mut_ptr::<Sums>(),
            None => Sums::new(context),
        };
        (*sums).add(seg, row_hash(fcinfo, 2));
        pg_sys::Datum::from(sums)
    }
}

crate::finfo_v1!(pg_finfo_reconcile_checksums_step_wrapper);

/// The aggregate's result: `{segment, count, sum, …}` for every segment
/// with rows, in segment order.
///
/// # Safety
/// Called by PostgreSQL's function manager with a valid `fcinfo`.
#[pg_guard]
#[no_mangle]
pub unsafe extern "C-unwind" fn reconcile_checksums_final_wrapper(
    fcinfo: pg_sys::FunctionCallInfo,
) -> pg_sys::Datum {
    // SAFETY: the state the step made, or NULL when no row came.
    unsafe {
        let out: Vec<i64> = match pgrx::fcinfo::pg_getarg_datum(fcinfo, 0) {
            Some(d) => (*d.cast_mut_ptr::<Sums>()).triples().flatten().collect(),
            None => Vec::new(),
        };
        out.into_datum().expect("an array")
    }
}

crate::finfo_v1!(pg_finfo_reconcile_checksums_final_wrapper);
