//! Composite-typed columns: `merge_upsert` takes a JSON object for one (and
//! a JSON array of objects for an array of them) as `jsonb_populate_record`
//! does, and a write keeps the stored fields where its own are NULL, in
//! `merge_upsert` and on protected tables alike (one level: a NULL field
//! keeps the stored field, a non-NULL one replaces it whole).

use crate::errors::corrupt;
use crate::merge::jsonb::{Item, Kind as JKind};
use pgrx::prelude::*;
use pgrx::PgTupleDesc;

/// The base type of `typid` when it is a composite type (through domains).
pub fn base_composite(typid: pg_sys::Oid) -> Option<pg_sys::Oid> {
    // SAFETY: syscache lookups of an existing type.
    unsafe {
        let base = pg_sys::getBaseType(typid);
        (pg_sys::get_typtype(base) == pg_sys::TYPTYPE_COMPOSITE as std::ffi::c_char).then_some(base)
    }
}

/// The fields of composite type `typid`: (name, type), dropped ones left out.
pub fn fields(typid: pg_sys::Oid) -> Vec<(String, pg_sys::Oid)> {
    PgTupleDesc::for_composite_type_by_oid(typid)
        .map(|d| {
            d.iter()
                .filter(|a| !a.is_dropped())
                .map(|a| (a.name().to_string(), a.type_oid().value()))
                .collect()
        })
        .unwrap_or_default()
}

/// A record literal (`("a","1",)`) of composite type `typid` from a JSON
/// object: each field from the key of its name (a missing key or a JSON
/// null is NULL), nested objects and arrays converted the same way.
pub fn record_literal(object: Item, typid: pg_sys::Oid, text: &dyn Fn(Item) -> String) -> String {
    let o = object.as_object().unwrap_or_else(|| corrupt());
    let mut out = String::from("(");
    for (n, (name, ftype)) in fields(typid).iter().enumerate() {
        if n > 0 {
            out.push(',');
        }
        let v = o.get(name.as_bytes()).unwrap_or_else(|_| corrupt());
        let Some(v) = v.filter(|v| !v.is_null()) else {
            continue; // an empty field is NULL
        };
        let value = literal(v, *ftype, text);
        out.push('"');
        out.push_str(&value.replace('\\', "\\\\").replace('"', "\\\""));
        out.push('"');
    }
    out.push(')');
    out
}

/// The text of a JSON value for a column or field of type `typid`.
pub fn literal(v: Item, typid: pg_sys::Oid, text: &dyn Fn(Item) -> String) -> String {
    match v.container_kind() {
        Some((JKind::Object, _)) => match base_composite(typid) {
            Some(t) => record_literal(v, t, text),
            None => text(v),
        },
        Some((JKind::Array, _)) => {
            // SAFETY: a syscache lookup.
            let elem = unsafe { pg_sys::get_element_type(pg_sys::getBaseType(typid)) };
            if elem == pg_sys::InvalidOid {
                return text(v);
            }
            let a = v.as_array().unwrap_or_else(|| corrupt());
            let mut out = String::from("{");
            for (n, e) in a.elements().enumerate() {
                let e = e.unwrap_or_else(|_| corrupt());
                if n > 0 {
                    out.push(',');
                }
                if e.is_null() {
                    out.push_str("NULL");
                } else if e.as_array().is_some() && base_composite(elem).is_none() {
                    // A nested array of a multidimensional array.
                    out.push_str(&literal(e, typid, text));
                } else {
                    out.push('"');
                    out.push_str(
                        &literal(e, elem, text)
                            .replace('\\', "\\\\")
                            .replace('"', "\\\""),
                    );
                    out.push('"');
                }
            }
            out.push('}');
            out
        }
        _ => text(v),
    }
}

/// The stored composite value `old` with the fields that `new` carries
/// (non-NULL) written over it; None when `new` carries every field (nothing
/// to keep).
///
/// # Safety
/// Both are datums of the same composite type.
pub unsafe fn keep_stored_fields(new: pg_sys::Datum, old: pg_sys::Datum) -> Option<pg_sys::Datum> {
    // SAFETY: composite datums are (possibly toasted) HeapTupleHeaders
    // carrying their type; the tuple descriptor is released before return.
    unsafe {
        let nh = pg_sys::pg_detoast_datum(new.cast_mut_ptr()) as pg_sys::HeapTupleHeader;
        let oh = pg_sys::pg_detoast_datum(old.cast_mut_ptr()) as pg_sys::HeapTupleHeader;
        let typid = (*nh).t_choice.t_datum.datum_typeid;
        let typmod = (*nh).t_choice.t_datum.datum_typmod;
        let desc = pg_sys::lookup_rowtype_tupdesc(typid, typmod);
        let natts = (*desc).natts as usize;
        let deform = |h: pg_sys::HeapTupleHeader| {
            let mut t: pg_sys::HeapTupleData = std::mem::zeroed();
            t.t_len = pgrx::varlena::varsize_any(h as *const pg_sys::varlena) as u32;
            t.t_data = h;
            let (mut v, mut n) = (vec![pg_sys::Datum::from(0); natts], vec![false; natts]);
            pg_sys::heap_deform_tuple(&mut t, desc, v.as_mut_ptr(), n.as_mut_ptr());
            (v, n)
        };
        let (mut nv, mut nn) = deform(nh);
        let (ov, on) = deform(oh);
        let mut kept = false;
        for i in 0..natts {
            if nn[i] && !on[i] {
                (nv[i], nn[i], kept) = (ov[i], false, true);
            }
        }
        let out = kept.then(|| {
            let t = pg_sys::heap_form_tuple(desc, nv.as_mut_ptr(), nn.as_mut_ptr());
            pg_sys::heap_copy_tuple_as_datum(t, desc)
        });
        pg_sys::DecrTupleDescRefCount(desc);
        out
    }
}
