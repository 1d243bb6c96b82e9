//! Per-key freshness: the companion jsonb column that records, for each
//! top-level key a write carried a value for, when it was last written.

use crate::jsonb_arg::JsonbRaw;
use crate::merge::engine;
use crate::merge::jsonb::{Container, Kind as JKind, WriteError, Writer, EMPTY_OBJECT};
use crate::merge::policy::Policy;
use crate::merge_sql::{finish, limits};
use pgrx::prelude::*;

/// The stored freshness object with every top-level key of `patch` that
/// carries a value stamped `at`, and every key it deletes removed; `old`
/// unchanged when the patch is not an object.
pub fn stamp(old: Option<JsonbRaw>, patch: &[u8], at: i64) -> Option<JsonbRaw> {
    let Some(p) = Container::new(patch)
        .ok()
        .filter(|p| p.kind() == JKind::Object)
    else {
        return old;
    };
    let mut tz = 0;
    // SAFETY: JsonEncodeDateTime pallocs its result for a NULL buffer.
    let when = unsafe {
        let s = pg_sys::JsonEncodeDateTime(
            std::ptr::null_mut(),
            pg_sys::Datum::from(at),
            pg_sys::TIMESTAMPTZOID,
            &mut tz,
        );
        std::ffi::CStr::from_ptr(s).to_string_lossy().into_owned()
    };
    // The stamps object is written straight in jsonb's binary form: the
    // patch's keys come sorted as jsonb stores them, and a subset keeps that
    // order. A tombstone is copied as it is; every other value is `when`.
    let mut picked = Vec::new();
    let mut pairs = p.pairs();
    while let Some((k, v)) = pairs.next_pair() {
        if engine::is_tombstone(v) {
            picked.push((k, Some(v)));
        } else if !v.is_null() && !matches!(v.container_kind(), Some((JKind::Object, 0))) {
            picked.push((k, None));
        }
    }
    let built = (|| -> Result<Vec<u8>, WriteError> {
        let mut w = Writer::with_capacity(picked.len() * (when.len() + 16) + 16);
        let mut o = w.open(JKind::Object, picked.len())?;
        for (k, _) in &picked {
            w.push_string(&mut o, k)?;
        }
        for (_, v) in &picked {
            match v {
                Some(tombstone) => w.push_item(&mut o, *tombstone)?,
                None => w.push_string(&mut o, when.as_bytes())?,
            }
        }
        Ok(w.into_inner())
    })();
    let Ok(stamps) = built else {
        return old;
    };
    let stamps = JsonbRaw::from_built(&stamps);
    let base = old.as_ref().map_or(EMPTY_OBJECT, JsonbRaw::container);
    let r = engine::deep_merge(base, stamps.container(), &Policy::default(), limits());
    finish(r, old, stamps)
}

/// `syncguard._freshness_stamp(stamps, patch, at)`: `stamps` with each top-level key
/// of `patch` that carries a value set to `at` (ISO 8601, UTC).
#[pg_extern(immutable, parallel_safe, name = "_freshness_stamp")]
fn freshness_stamp(
    stamps: Option<JsonbRaw>,
    patch: Option<JsonbRaw>,
    at: Option<pgrx::datum::TimestampWithTimeZone>,
) -> Option<JsonbRaw> {
    // NULL means "nothing known", as for the merge functions.
    let (Some(patch), Some(at)) = (patch, at) else {
        return stamps;
    };
    let at: i64 = at.into_datum().map_or(0, |d| d.value() as i64);
    stamp(stamps, patch.container(), at)
}
