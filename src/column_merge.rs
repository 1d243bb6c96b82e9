//! Merging one protected column's new value into its stored one, for the
//! trigger: jsonb (and json, through jsonb) by the column's merge policy.

use crate::jsonb_arg::JsonbRaw;
use crate::merge::engine::{self, Merged};
use crate::merge::jsonb::EMPTY_OBJECT;
use crate::merge::policy::Policy;
use crate::merge_sql::{finish, limits};
use pgrx::prelude::*;

/// What merging a column's new jsonb into its stored one gives.
pub enum MergeOutcome {
    /// The new value as written.
    AsWritten,
    /// The stored value, unchanged.
    Stored,
    /// A new value (None: SQL NULL).
    Value(Option<pg_sys::Datum>),
}

/// # Safety
/// `new` and `stored` are jsonb datums.
pub unsafe fn merge_value(
    new: pg_sys::Datum,
    stored: Option<pg_sys::Datum>,
    policy: &Policy,
) -> MergeOutcome {
    // SAFETY: as the caller promises.
    let (n, o) = unsafe {
        (
            JsonbRaw::from_datum(new, false).unwrap(),
            stored.and_then(|d| JsonbRaw::from_datum(d, false)),
        )
    };
    if o.is_none() && !policy.any_delete && !engine::may_hold_tombstone(n.container()) {
        return MergeOutcome::AsWritten;
    }
    let base = o.as_ref().map_or(EMPTY_OBJECT, JsonbRaw::container);
    match engine::deep_merge(base, n.container(), policy, limits()) {
        Ok(Merged::Patch) => MergeOutcome::AsWritten,
        Ok(Merged::Target) if o.is_some() => MergeOutcome::Stored,
        r => MergeOutcome::Value(finish(r, o, n).and_then(JsonbRaw::into_datum)),
    }
}

/// A `json` datum as jsonb, and back: through their text forms, as the
/// casts do. Only protected `json` columns pay for it.
pub fn json_to_jsonb(d: pg_sys::Datum) -> pg_sys::Datum {
    convert(d, pg_sys::F_JSON_OUT, pg_sys::F_JSONB_IN, pg_sys::JSONBOID)
}

pub fn jsonb_to_json(d: pg_sys::Datum) -> pg_sys::Datum {
    convert(d, pg_sys::F_JSONB_OUT, pg_sys::F_JSON_IN, pg_sys::JSONOID)
}

fn convert(d: pg_sys::Datum, out: u32, input: u32, typioparam: pg_sys::Oid) -> pg_sys::Datum {
    // SAFETY: the output function of the datum's type, then the input
    // function of the other; both raise clear errors on bad input.
    unsafe {
        let text = pg_sys::OidOutputFunctionCall(pg_sys::Oid::from(out), d);
        pg_sys::OidInputFunctionCall(pg_sys::Oid::from(input), text, typioparam, -1)
    }
}
