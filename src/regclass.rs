//! `RegClass`: a `regclass` argument as its bare oid. The cast from text
//! (`'profiles'::regclass`) has already resolved and checked the name; an
//! oid whose table was dropped since is reported by the callee.

use pgrx::prelude::*;

#[derive(Clone, Copy, Debug)]
pub struct RegClass(pub pg_sys::Oid);

impl FromDatum for RegClass {
    unsafe fn from_polymorphic_datum(
        d: pg_sys::Datum,
        is_null: bool,
        _: pg_sys::Oid,
    ) -> Option<Self> {
        (!is_null).then(|| RegClass(pg_sys::Oid::from(d.value() as u32)))
    }
}

impl IntoDatum for RegClass {
    fn into_datum(self) -> Option<pg_sys::Datum> {
        Some(pg_sys::Datum::from(self.0))
    }

    fn type_oid() -> pg_sys::Oid {
        pg_sys::REGCLASSOID
    }
}

crate::jsonb_arg::arg_abi_via_from_datum!(RegClass);

pgrx::impl_sql_translatable!(RegClass, "regclass");
