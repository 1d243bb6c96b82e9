//! The bytes of a varlena datum (text, bytea, numeric, jsonb, …), read in
//! place.

use pgrx::prelude::*;

/// The datum detoasted: decompressed or fetched when it is, a short header
/// kept (an in-line value is returned as it is, without a copy).
pub unsafe fn detoasted(d: pg_sys::Datum) -> pg_sys::Datum {
    unsafe { pg_sys::Datum::from(pg_sys::pg_detoast_datum_packed(d.cast_mut_ptr())) }
}

/// The bytes as stored, header included (no detoasting).
pub unsafe fn raw_bytes<'a>(d: pg_sys::Datum) -> &'a [u8] {
    unsafe {
        let p = d.cast_mut_ptr::<pg_sys::varlena>();
        std::slice::from_raw_parts(p as *const u8, pgrx::varlena::varsize_any(p))
    }
}

/// The bytes after the header, detoasted: a text's UTF-8, a jsonb's root
/// container.
pub unsafe fn payload<'a>(d: pg_sys::Datum) -> &'a [u8] {
    unsafe { pgrx::varlena::varlena_to_byte_slice(detoasted(d).cast_mut_ptr()) }
}
