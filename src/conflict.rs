//! The conflict rules both writers apply, `merge_upsert` and the protection
//! trigger: last-write-wins (a write older than the stored row is ignored
//! and counted), versions (a write must carry a greater version than the
//! stored one) and clock skew (a timestamp too far ahead is refused). The
//! decisions are the pure functions `is_stale` and `version_refused`;
//! `merge_upsert`'s statement makes the same two comparisons in its
//! `ON CONFLICT … WHERE` (upsert_statement.rs), and calls `version_refused`
//! to tell which one refused a write.

use crate::errors::{self, raise, SqlError};
use crate::settings::MAX_CLOCK_SKEW;
use crate::write_policy::WritePolicy;
use pgrx::prelude::*;
use std::ffi::CString;

/// Whether a last-write-wins write is stale: its timestamp is older than
/// the stored one. An equal timestamp goes through (a retry of the same
/// write), and so does a NULL one on either side (not ordered).
pub fn is_stale(incoming: i64, stored: i64) -> bool {
    incoming < stored
}

/// Whether the version rule refuses a write: the stored row has a version
/// and the write carries none, or one that is not greater.
pub fn version_refused(incoming: Option<i64>, stored: Option<i64>) -> bool {
    stored.is_some() && (incoming.is_none() || incoming <= stored)
}

/// `max_clock_skew` of the policy (interval text) or the setting, in µs.
pub fn skew_micros(wp: &WritePolicy) -> i64 {
    match &wp.max_clock_skew {
        None => MAX_CLOCK_SKEW.get() as i64 * 1000,
        Some(text) => {
            let c = CString::new(text.as_str()).unwrap_or_default();
            // SAFETY: interval_in is the interval type's input function; it
            // raises 22007 on bad text. It returns a palloc'd Interval.
            unsafe {
                let d = pg_sys::OidInputFunctionCall(
                    pg_sys::Oid::from(pg_sys::F_INTERVAL_IN),
                    c.as_ptr() as *mut _,
                    pg_sys::INTERVALOID,
                    -1,
                );
                let iv = &*(d.cast_mut_ptr::<pg_sys::Interval>());
                let micros = iv.time.saturating_add(
                    (iv.day as i64 + iv.month as i64 * 30).saturating_mul(86_400_000_000),
                );
                if micros < 0 {
                    raise(
                        PgSqlErrorCode::ERRCODE_INVALID_PARAMETER_VALUE,
                        format!("invalid write policy: \"max_clock_skew\" must not be negative, got {text}"),
                        Some("It is how far in the future a last_write_wins timestamp may lie, e.g. \"2 minutes\"."),
                    );
                }
                micros
            }
        }
    }
}

pub fn check_skew(ts: i64, skew: i64, table: &str, column: &str) -> Result<(), SqlError> {
    // SAFETY: reads the clock.
    let now = unsafe { pg_sys::GetCurrentTimestamp() };
    if ts > now.saturating_add(skew) {
        return Err(SqlError::own(
            errors::CLOCK_SKEW,
            format!(
                "{table}.{column} is {:.3} s ahead of the server clock, more than max_clock_skew ({:.3} s) allows",
                (ts - now) as f64 / 1e6,
                skew as f64 / 1e6
            ),
        )
        .detail(format!("incoming {}, server clock {}", show_ts(ts), show_ts(now)))
        .hint("Fix the writer's clock, or raise syncguard.max_clock_skew or the policy's max_clock_skew. Nothing was written."));
    }
    Ok(())
}

fn show_ts(ts: i64) -> String {
    // SAFETY: timestamptz_out of a timestamptz datum.
    unsafe {
        let p = pg_sys::OidOutputFunctionCall(
            pg_sys::Oid::from(pg_sys::F_TIMESTAMPTZ_OUT),
            pg_sys::Datum::from(ts),
        );
        std::ffi::CStr::from_ptr(p).to_string_lossy().into_owned()
    }
}

pub fn version_error(
    table: &str,
    column: &str,
    stored: Option<i64>,
    incoming: Option<i64>,
) -> SqlError {
    let show = |v: Option<i64>| v.map_or("NULL".to_string(), |v| v.to_string());
    SqlError::own(
        errors::VERSION_CONFLICT,
        format!(
            "version conflict on {table}: the write carries {column} = {}, the stored row has {}",
            show(incoming),
            show(stored)
        ),
    )
    .detail("A write must carry a version greater than the stored one.")
    .hint("Reread the row and write its version plus one. The row is unchanged.")
}

/// A timestamptz datum as microseconds (its representation).
pub fn micros(d: pg_sys::Datum) -> i64 {
    d.value() as i64
}

/// The version datum of a smallint/integer/bigint column as i64.
pub fn version_value(d: pg_sys::Datum, typid: pg_sys::Oid) -> i64 {
    match typid {
        pg_sys::INT2OID => d.value() as i16 as i64,
        pg_sys::INT4OID => d.value() as i32 as i64,
        _ => d.value() as i64,
    }
}

/// Counts a write ignored by last-write-wins (in the writer's transaction).
///
/// The counters belong to the extension's owner and writers only read them,
/// so the count is written as the owner of `syncguard.stale_writes`, in a
/// security-restricted context, by this one statement: no SQL function
/// counts, so nobody but the trigger and `merge_upsert` can. Every name in
/// the statement is qualified, operators too, since it runs under the
/// writer's search_path. An error aborts the writer's (sub)transaction,
/// which restores the user.
pub fn note_stale(table: &str) {
    // SAFETY: catalog lookups that raise a clear error for a missing schema
    // or table.
    let owner = unsafe {
        let nsp = pg_sys::get_namespace_oid(c"syncguard".as_ptr(), false);
        let relid = pg_sys::get_relname_relid(c"stale_writes".as_ptr(), nsp);
        if relid == pg_sys::InvalidOid {
            raise(
                PgSqlErrorCode::ERRCODE_UNDEFINED_TABLE,
                "relation \"syncguard.stale_writes\" does not exist".into(),
                Some("Reinstall the extension: DROP EXTENSION syncguard; CREATE EXTENSION syncguard."),
            )
        }
        (*pgrx::PgRelation::open(relid).rd_rel).relowner
    };
    crate::roles::as_role(owner, || {
        Spi::run_with_args(
            "INSERT INTO syncguard.stale_writes AS s (table_name, backend_pid, ignored, last_ignored_at)
             VALUES ($1, pg_catalog.pg_backend_pid(), 1, pg_catalog.clock_timestamp())
             ON CONFLICT (table_name, backend_pid) DO UPDATE
                SET ignored = s.ignored OPERATOR(pg_catalog.+) 1, last_ignored_at = EXCLUDED.last_ignored_at",
            &[table.into()],
        )
        .unwrap_or_else(|e| raise(PgSqlErrorCode::ERRCODE_INTERNAL_ERROR, e.to_string(), None))
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_an_older_timestamp_is_stale() {
        assert!(is_stale(1, 2));
        assert!(!is_stale(2, 2));
        assert!(!is_stale(3, 2));
        assert!(is_stale(i64::MIN, 0));
    }

    #[test]
    fn a_version_must_grow_once_there_is_one() {
        assert!(!version_refused(None, None));
        assert!(!version_refused(Some(1), None));
        assert!(!version_refused(Some(4), Some(3)));
        assert!(version_refused(Some(3), Some(3)));
        assert!(version_refused(Some(2), Some(3)));
        assert!(version_refused(None, Some(3)));
    }
}
