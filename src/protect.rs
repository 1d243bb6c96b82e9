//! Zero-code protection: the row trigger that `protect()` installs. Its
//! configuration is resolved in protect_config.rs, columns are merged by
//! column_merge.rs, and the conflict rules it shares with `merge_upsert`
//! (last write wins, versions, clock skew) are conflict.rs's.
//!
//! The trigger's arguments carry the logical table name and the whole
//! configuration, so it reads no table (on a Citus shard `TG_RELID` names
//! the shard) and `pg_dump` keeps the configuration with the trigger.

use crate::conflict::{check_skew, note_stale};
use crate::errors::{raise, SqlError};
use crate::freshness::stamp;
use crate::jsonb_arg::JsonbRaw;
use crate::merging;
use crate::protect_config::{resolved, Resolved};
use crate::settings::BYPASS_PROTECTION;
use crate::table_info;
use crate::updated_row::UpdatedRow;
use pgrx::prelude::*;
use pgrx::PgTupleDesc;
use std::borrow::Cow;

/// The name a stale write of relation `relid` is counted under: the
/// trigger's logical table name while it names this table, one of its
/// partition ancestors, or (on a Citus worker) the table of this shard;
/// otherwise, after a rename, the table's current name (its partition
/// root's, for a partition). Runs only for ignored writes.
fn counted_name(relid: pg_sys::Oid, logical: &str) -> String {
    // SAFETY: the relation is the trigger's, open; get_rel_name pallocs.
    let relname = unsafe {
        let p = pg_sys::get_rel_name(relid);
        if p.is_null() {
            String::new()
        } else {
            std::ffi::CStr::from_ptr(p).to_string_lossy().into_owned()
        }
    };
    let logical_rel = logical
        .rsplit('.')
        .next()
        .unwrap_or(logical)
        .trim_matches('"');
    let shard = relname
        .strip_prefix(logical_rel)
        .and_then(|r| r.strip_prefix('_'))
        .is_some_and(|d| !d.is_empty() && d.bytes().all(|b| b.is_ascii_digit()));
    if shard {
        return logical.to_string();
    }
    Spi::get_one_with_args::<String>(
        "SELECT CASE WHEN pg_catalog.to_regclass($1)::pg_catalog.oid OPERATOR(pg_catalog.=) ANY
                          (SELECT a.relid::pg_catalog.oid FROM pg_catalog.pg_partition_ancestors($2) AS a)
                     THEN $1
                     ELSE (SELECT pg_catalog.format('%I.%I', n.nspname, c.relname)
                             FROM pg_catalog.pg_class AS c
                             JOIN pg_catalog.pg_namespace AS n ON n.oid OPERATOR(pg_catalog.=) c.relnamespace
                            WHERE c.oid OPERATOR(pg_catalog.=)
                                  COALESCE(pg_catalog.pg_partition_root($2), $2::pg_catalog.regclass)::pg_catalog.oid) END",
        &[logical.into(), pg_sys::Oid::from(relid).into()],
    )
    .ok()
    .flatten()
    .unwrap_or_else(|| logical.to_string())
}

/// A new row of a protected table (the trigger fires on INSERT only when the
/// policy has `last_write_wins` or `freshness`): the timestamp's clock skew
/// is checked and the freshness companions are stamped from the row's
/// values, as `merge_upsert` does for the rows it inserts; a companion value
/// the INSERT carried is ignored.
///
/// # Safety
/// A BEFORE INSERT row trigger's call: its relation and tuple are valid.
unsafe fn inserted_row<'a>(
    trigger: &'a pgrx::PgTrigger<'a>,
    r: &Resolved,
    table: &str,
    relid: pg_sys::Oid,
) -> Result<Option<PgHeapTuple<'a, AllocatedByPostgres>>, SqlError> {
    let td = trigger.trigger_data();
    // SAFETY: as the caller promises.
    unsafe {
        let rel = td.tg_relation;
        let tupdesc = (*rel).rd_att;
        let natts = (*tupdesc).natts as usize;
        let (mut v, mut n) = (vec![pg_sys::Datum::from(0); natts], vec![false; natts]);
        pg_sys::heap_deform_tuple(td.tg_trigtuple, tupdesc, v.as_mut_ptr(), n.as_mut_ptr());
        if let Some((attnum, skew)) = r.lww {
            if !n[attnum - 1] {
                check_skew(
                    v[attnum - 1].value() as i64,
                    skew,
                    table,
                    &column_name(relid, attnum),
                )?;
            }
        }
        if r.freshness.is_empty() {
            return Ok(trigger.new());
        }
        let at = pg_sys::GetCurrentTransactionStartTimestamp();
        let mut cols = Vec::with_capacity(r.freshness.len());
        for &(doc, companion) in &r.freshness {
            let (d, f) = (doc - 1, companion - 1);
            let stamped = if n[d] {
                None
            } else {
                let patch = JsonbRaw::from_datum(v[d], false).unwrap();
                stamp(None, patch.container(), at).and_then(JsonbRaw::into_datum)
            };
            (v[f], n[f]) = stamped.map_or((pg_sys::Datum::from(0), true), |s| (s, false));
            cols.push(companion as i32);
        }
        Ok(Some(with_columns(td.tg_trigtuple, tupdesc, &cols, &v, &n)))
    }
}

/// `tuple` with the columns `cols` (attnums, 1-based) taken from `values`
/// and `nulls` (one entry per attribute), as the trigger returns it.
///
/// # Safety
/// `tuple` is a tuple of `tupdesc`, which lives for the trigger call.
pub unsafe fn with_columns<'a>(
    tuple: pg_sys::HeapTuple,
    tupdesc: pg_sys::TupleDesc,
    cols: &[i32],
    values: &[pg_sys::Datum],
    nulls: &[bool],
) -> PgHeapTuple<'a, AllocatedByPostgres> {
    let vals: Vec<pg_sys::Datum> = cols.iter().map(|&c| values[c as usize - 1]).collect();
    let isnull: Vec<bool> = cols.iter().map(|&c| nulls[c as usize - 1]).collect();
    // SAFETY: as the caller promises; the arrays have cols.len() entries.
    unsafe {
        let modified = pg_sys::heap_modify_tuple_by_cols(
            tuple,
            tupdesc,
            cols.len() as i32,
            cols.as_ptr() as *mut i32,
            vals.as_ptr() as *mut pg_sys::Datum,
            isnull.as_ptr() as *mut bool,
        );
        PgHeapTuple::from_heap_tuple(PgTupleDesc::from_pg_unchecked(tupdesc), modified)
    }
}

/// Only the table's owner (a member of the owning role, or a superuser) may
/// switch its protection off: any other writer would otherwise undo it with
/// one SET.
unsafe fn require_bypass_right(rel: pg_sys::Relation) {
    // SAFETY: the trigger's relation is open; the lookups raise nothing.
    unsafe {
        let owner = (*(*rel).rd_rel).relowner;
        if !pg_sys::has_privs_of_role(pg_sys::GetUserId(), owner) {
            let name =
                std::ffi::CStr::from_ptr(pg_sys::get_rel_name((*rel).rd_id)).to_string_lossy();
            raise(
                PgSqlErrorCode::ERRCODE_INSUFFICIENT_PRIVILEGE,
                format!("syncguard.bypass_protection is on, but only the owner of table {name} may bypass its protection"),
                Some("Turn the setting off, or run the write as the table's owner (or a member of the owning role)."),
            );
        }
    }
}

// `syncguard._protect_trigger()`, by hand rather than with `#[pg_trigger]`,
// whose wrapper panics (XX000) when the function is called other than as a
// trigger; PostgreSQL's own trigger functions answer 39P01.
extension_sql!(
    r#"
CREATE FUNCTION syncguard."_protect_trigger"() RETURNS TRIGGER
LANGUAGE c AS 'MODULE_PATHNAME', 'protect_trigger_wrapper';
"#,
    name = "protect_trigger"
);

crate::finfo_v1!(pg_finfo_protect_trigger_wrapper);

/// # Safety
/// Called by PostgreSQL's function manager with a valid `fcinfo`.
#[pg_guard]
#[no_mangle]
pub unsafe extern "C-unwind" fn protect_trigger_wrapper(
    fcinfo: pg_sys::FunctionCallInfo,
) -> pg_sys::Datum {
    // SAFETY: fcinfo is the manager's; a trigger call's context is TriggerData.
    let outcome = unsafe {
        let ctx = (*fcinfo).context;
        if ctx.is_null() || !pgrx::is_a(ctx, pg_sys::NodeTag::T_TriggerData) {
            raise(
                PgSqlErrorCode::ERRCODE_E_R_I_E_TRIGGER_PROTOCOL_VIOLATED,
                "syncguard._protect_trigger can only be called as a trigger".into(),
                Some("Install it with syncguard.protect(table)."),
            );
        }
        let trigger = pgrx::PgTrigger::from_fcinfo(&*fcinfo).unwrap_or_else(|_| {
            raise(
                PgSqlErrorCode::ERRCODE_E_R_I_E_TRIGGER_PROTOCOL_VIOLATED,
                "syncguard._protect_trigger can only be called as a trigger".into(),
                None,
            )
        });
        protect_row(&trigger).map(|row| {
            row.and_then(|t| t.into_trigger_datum())
                .unwrap_or(pg_sys::Datum::from(0))
        })
    };
    // Raised once nothing with a destructor is left on this frame.
    outcome.unwrap_or_else(|e| e.raise())
}

fn protect_row<'a>(
    trigger: &'a pgrx::PgTrigger<'a>,
) -> Result<Option<PgHeapTuple<'a, AllocatedByPostgres>>, SqlError> {
    let td = trigger.trigger_data();
    let ev = td.tg_event;
    let op = ev & pg_sys::TRIGGER_EVENT_OPMASK;
    let is_before_row = ev & pg_sys::TRIGGER_EVENT_TIMINGMASK == pg_sys::TRIGGER_EVENT_BEFORE
        && ev & pg_sys::TRIGGER_EVENT_ROW != 0;
    if !is_before_row || (op != pg_sys::TRIGGER_EVENT_UPDATE && op != pg_sys::TRIGGER_EVENT_INSERT)
    {
        raise(
            PgSqlErrorCode::ERRCODE_E_R_I_E_TRIGGER_PROTOCOL_VIOLATED,
            "syncguard._protect_trigger must fire BEFORE INSERT OR UPDATE FOR EACH ROW".into(),
            Some("Install it with syncguard.protect(table)."),
        );
    }
    let is_insert = op == pg_sys::TRIGGER_EVENT_INSERT;
    let rel = td.tg_relation;
    // SAFETY: a row trigger's relation is open for the call.
    let relid = unsafe { (*rel).rd_id };
    let new = trigger.new();
    if merging::is_merging(relid) {
        return Ok(new);
    }
    if BYPASS_PROTECTION.get() {
        // SAFETY: as above.
        unsafe { require_bypass_right(rel) };
        return Ok(new);
    }
    let (table, cfg) = trigger_arguments(td);
    let r = resolved(relid, &cfg);
    if is_insert {
        // SAFETY: a BEFORE INSERT row trigger's call.
        return unsafe { inserted_row(trigger, &r, &table, relid) };
    }
    let mut row = UpdatedRow::deform(td);
    row.protect_columns(&r.columns);
    if row.is_stale(&r, &table, relid)? {
        note_stale(&counted_name(relid, &table));
        // Kept: the row counts as written, as it is stored.
        return Ok(if r.stale_skip { None } else { trigger.old() });
    }
    row.check_version(&r, &table, relid)?;
    row.stamp_freshness(&r.freshness);
    Ok(row.into_tuple(td).or(new))
}

/// The trigger's two arguments: the logical table name and the configuration
/// (borrowed: read on every row, they are not copied).
fn trigger_arguments(td: &pg_sys::TriggerData) -> (Cow<'_, str>, Cow<'_, str>) {
    // SAFETY: a trigger call's Trigger and its tgnargs arguments, NUL-terminated.
    unsafe {
        let trig = &*td.tg_trigger;
        if trig.tgnargs != 2 {
            raise(
                PgSqlErrorCode::ERRCODE_E_R_I_E_TRIGGER_PROTOCOL_VIOLATED,
                "syncguard._protect_trigger needs two arguments (table name, configuration)".into(),
                Some("Install it with syncguard.protect(table)."),
            );
        }
        let arg = |i: usize| std::ffi::CStr::from_ptr(*trig.tgargs.add(i)).to_string_lossy();
        (arg(0), arg(1))
    }
}

pub fn column_name(relid: pg_sys::Oid, attnum: usize) -> String {
    let info = table_info::table_info(relid);
    info.columns
        .iter()
        .find(|c| c.attnum as usize == attnum)
        .map_or_else(|| format!("column {attnum}"), |c| c.name.clone())
}
