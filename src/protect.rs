//! Zero-code protection: the `BEFORE UPDATE` row trigger that `protect()`
//! installs, its configuration, and the conflict rules it shares with
//! `merge_upsert` (last write wins, versions, per-key freshness).
//!
//! The trigger's arguments carry the logical table name and the whole
//! configuration, so it reads no table (on a Citus shard `TG_RELID` names
//! the shard) and `pg_dump` keeps the configuration with the trigger.

use crate::errors::{self, raise, raise_own, OwnError};
use crate::jsonb_arg::JsonbRaw;
use crate::merge::engine::{self, Merged};
use crate::merge::jsonb::{Container, Kind as JKind, EMPTY_OBJECT};
use crate::merge::policy::Policy;
use crate::merge::text;
use crate::merge_sql::{finish, limits};
use crate::regclass::RegClass;
use crate::table_info::{self, Kind, TableInfo};
use crate::upsert;
use crate::write_policy::{ColumnRule, WritePolicy};
use pgrx::prelude::*;
use pgrx::{GucContext, GucFlags, GucRegistry, GucSetting, PgTupleDesc};
use serde_json::Value as Json;
use std::cell::RefCell;
use std::collections::HashMap;
use std::rc::Rc;

pub static BYPASS_PROTECTION: GucSetting<bool> = GucSetting::<bool>::new(false);
/// Milliseconds.
pub static MAX_CLOCK_SKEW: GucSetting<i32> = GucSetting::<i32>::new(5 * 60 * 1000);

pub fn init_gucs() {
    GucRegistry::define_bool_guc(
        c"syncguard.bypass_protection",
        c"Protected tables take updates as given (a full replace) while on.",
        c"Use SET LOCAL in the transaction that must really replace or delete data.",
        &BYPASS_PROTECTION,
        GucContext::Userset,
        GucFlags::default(),
    );
    GucRegistry::define_int_guc(
        c"syncguard.max_clock_skew",
        c"How far in the future a last_write_wins timestamp may lie.",
        c"A write whose timestamp is later than the server clock plus this is rejected with SQLSTATE SG004.",
        &MAX_CLOCK_SKEW,
        0,
        i32::MAX,
        GucContext::Userset,
        GucFlags::UNIT_MS,
    );
}

/// What the trigger does for one protected column.
enum Protected {
    /// Deep-merge the new jsonb into the stored one; a `json` column
    /// through jsonb (it loses key order, duplicate keys and whitespace).
    Merge {
        attnum: usize,
        policy: Rc<Policy>,
        nulls_overwrite: bool,
        json: bool,
    },
    /// Keep a stored non-NULL value from being replaced by NULL.
    KeepNonNull { attnum: usize },
    /// A composite value: keep the stored fields the write leaves NULL.
    Record { attnum: usize },
}

/// A protection configuration resolved against the table's columns
/// (attnums 1-based, as in the tuple descriptor).
struct Resolved {
    columns: Vec<Protected>,
    lww: Option<(usize, i64)>,
    /// An ignored stale write reports no row (`"stale": "skip"`).
    stale_skip: bool,
    version: Option<(usize, pg_sys::Oid)>,
    freshness: Vec<(usize, usize)>,
}

/// The configuration argument: `{"columns": [...] | null, "policy": {...}}`.
fn parse_config(cfg: &str) -> (Option<Vec<String>>, WritePolicy) {
    let bad = |m: String| -> ! {
        raise(
            PgSqlErrorCode::ERRCODE_INVALID_PARAMETER_VALUE,
            format!("invalid syncguard protection configuration: {m}"),
            Some("Run syncguard.protect again to rewrite the trigger."),
        )
    };
    let doc: Json = serde_json::from_str(cfg).unwrap_or_else(|e| bad(e.to_string()));
    let columns = match doc.get("columns") {
        None | Some(Json::Null) => None,
        Some(Json::Array(a)) => Some(
            a.iter()
                .map(|c| {
                    c.as_str()
                        .map(str::to_string)
                        .unwrap_or_else(|| bad(c.to_string()))
                })
                .collect(),
        ),
        Some(other) => bad(other.to_string()),
    };
    let policy = WritePolicy::parse(doc.get("policy").unwrap_or(&Json::Null)).unwrap_or_else(|e| {
        raise(
            PgSqlErrorCode::ERRCODE_INVALID_PARAMETER_VALUE,
            e.message,
            Some(&e.hint),
        )
    });
    (columns, policy)
}

/// The write policy of a protection configuration (for `merge_upsert`).
pub fn config_policy(cfg: &str) -> WritePolicy {
    parse_config(cfg).1
}

fn resolve(info: &TableInfo, cfg: &str) -> Resolved {
    let (names, wp) = parse_config(cfg);
    upsert::check_policy_columns(info, &wp);
    let companions: Vec<&str> = wp.freshness.iter().map(|(_, f)| f.as_str()).collect();
    let guards = wp.guard_columns();
    let attnum = |name: &str| info.require(name).attnum as usize;
    let selected: Vec<&table_info::Column> = match &names {
        Some(n) => n
            .iter()
            .map(|c| {
                let col = info.require(c);
                if col.generated {
                    raise(
                        PgSqlErrorCode::ERRCODE_INVALID_PARAMETER_VALUE,
                        format!(
                            "protect: column \"{c}\" of {} is generated; nothing writes it",
                            info.qualified
                        ),
                        Some("Leave generated columns out of the list."),
                    );
                }
                col
            })
            .collect(),
        None => info.columns.iter().filter(|c| !c.generated).collect(),
    };
    let mut columns = Vec::new();
    for c in selected {
        if companions.contains(&c.name.as_str()) {
            continue;
        }
        if guards.contains(&c.name.as_str()) {
            // No policy lets a NULL erase a guard.
            columns.push(Protected::KeepNonNull {
                attnum: c.attnum as usize,
            });
            continue;
        }
        let document = c.kind.is_document();
        match wp.rule(&c.name, document) {
            ColumnRule::Replace
            | ColumnRule::Merge {
                nulls_overwrite: true,
                ..
            } if !document => {}
            ColumnRule::Replace => {}
            ColumnRule::Merge {
                policy,
                nulls_overwrite,
            } if document => {
                let policy = Policy::parse_str(&policy).unwrap_or_else(|e| {
                    raise(
                        PgSqlErrorCode::ERRCODE_INVALID_PARAMETER_VALUE,
                        e.message,
                        Some(&e.hint),
                    )
                });
                columns.push(Protected::Merge {
                    attnum: c.attnum as usize,
                    policy: Rc::new(policy),
                    nulls_overwrite,
                    json: c.kind == Kind::Json,
                });
            }
            ColumnRule::Merge { .. } if c.kind == Kind::Composite => {
                columns.push(Protected::Record {
                    attnum: c.attnum as usize,
                })
            }
            ColumnRule::Merge { .. } => columns.push(Protected::KeepNonNull {
                attnum: c.attnum as usize,
            }),
        }
    }
    Resolved {
        columns,
        lww: wp
            .last_write_wins
            .as_deref()
            .map(|c| (attnum(c), upsert::skew_micros(&wp))),
        stale_skip: wp.stale_skip,
        version: wp
            .version
            .as_deref()
            .map(|c| (attnum(c), info.require(c).typid)),
        freshness: wp
            .freshness
            .iter()
            .map(|(d, f)| (attnum(d), attnum(f)))
            .collect(),
    }
}

thread_local! {
    /// Resolved configurations by table, with the configuration text and
    /// the table description they were resolved against: rebuilt when
    /// either changes. Looked up on every protected row, without allocating.
    static RESOLVED: RefCell<HashMap<pg_sys::Oid, (String, Rc<TableInfo>, Rc<Resolved>)>> =
        RefCell::new(HashMap::new());
}

fn resolved(relid: pg_sys::Oid, cfg: &str) -> Rc<Resolved> {
    let info = table_info::table_info(relid);
    let hit = RESOLVED.with_borrow(|m| {
        m.get(&relid)
            .filter(|(c, i, _)| c == cfg && Rc::ptr_eq(i, &info))
            .map(|(_, _, r)| r.clone())
    });
    if let Some(r) = hit {
        return r;
    }
    still_fits(&info, cfg);
    let r = Rc::new(resolve(&info, cfg));
    RESOLVED.with_borrow_mut(|m| m.insert(relid, (cfg.to_string(), info, r.clone())));
    r
}

/// A configuration names columns as they were when `protect` ran; one
/// renamed or dropped since is the table owner's to fix, said as such (not
/// as an unknown column of a statement that never named it).
fn still_fits(info: &TableInfo, cfg: &str) {
    let (names, wp) = parse_config(cfg);
    let named = names.iter().flatten().map(String::as_str);
    let gone = named
        .chain(wp.named_columns().into_iter().map(|(_, c)| c))
        .find(|c| info.column(c).is_none());
    if let Some(c) = gone {
        raise(
            PgSqlErrorCode::ERRCODE_UNDEFINED_COLUMN,
            format!(
                "the protection of {} names column \"{c}\", which the table no longer has",
                info.qualified
            ),
            Some("A protected column was renamed or dropped: run syncguard.protect on the table again (or unprotect it)."),
        );
    }
}

/// Checks and canonicalizes a configuration for `protect()`: the columns
/// and policy must fit the table.
#[pg_extern(volatile, parallel_unsafe)]
fn protect_config(
    target: Option<RegClass>,
    columns: Option<Vec<Option<String>>>,
    policy: Option<JsonbRaw>,
) -> String {
    let Some(target) = target else {
        raise(
            PgSqlErrorCode::ERRCODE_NULL_VALUE_NOT_ALLOWED,
            "protect: target must not be NULL".into(),
            Some("Pass the table, e.g. 'profiles'::regclass."),
        )
    };
    let columns: Option<Vec<String>> = columns.map(|c| {
        c.into_iter()
            .map(|n| {
                n.unwrap_or_else(|| {
                    raise(
                        PgSqlErrorCode::ERRCODE_NULL_VALUE_NOT_ALLOWED,
                        "protect: a column name is NULL".into(),
                        None,
                    )
                })
            })
            .collect()
    });
    if let Some(c) = &columns {
        if c.is_empty() {
            raise(
                PgSqlErrorCode::ERRCODE_INVALID_PARAMETER_VALUE,
                "protect: the column list is empty".into(),
                Some("Pass NULL (or leave the argument out) to protect every column."),
            );
        }
        if let Some(d) = c.iter().enumerate().find(|(i, n)| c[..*i].contains(n)) {
            raise(
                PgSqlErrorCode::ERRCODE_INVALID_PARAMETER_VALUE,
                format!("protect: column \"{}\" is listed twice", d.1),
                None,
            );
        }
    }
    let policy: Json = match &policy {
        None => Json::Object(Default::default()),
        Some(p) => serde_json::from_str(&text::to_text(p.container()).unwrap_or_default())
            .unwrap_or(Json::Null),
    };
    let cfg = serde_json::json!({ "columns": columns, "policy": policy }).to_string();
    let info = table_info::table_info(target.0);
    resolve(&info, &cfg);
    cfg
}

pub fn check_skew(ts: i64, skew: i64, table: &str, column: &str) -> Result<(), OwnError> {
    // SAFETY: reads the clock.
    let now = unsafe { pg_sys::GetCurrentTimestamp() };
    if ts > now.saturating_add(skew) {
        return Err(OwnError {
            code: errors::CLOCK_SKEW,
            message: format!(
                "{table}.{column} is {:.3} s ahead of the server clock, more than max_clock_skew ({:.3} s) allows",
                (ts - now) as f64 / 1e6,
                skew as f64 / 1e6
            ),
            detail: format!("incoming {}, server clock {}", show_ts(ts), show_ts(now)),
            hint: "Fix the writer's clock, or raise syncguard.max_clock_skew or the policy's max_clock_skew. Nothing was written.",
        });
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
) -> OwnError {
    let show = |v: Option<i64>| v.map_or("NULL".to_string(), |v| v.to_string());
    OwnError {
        code: errors::VERSION_CONFLICT,
        message: format!(
            "version conflict on {table}: the write carries {column} = {}, the stored row has {}",
            show(incoming),
            show(stored)
        ),
        detail: "A write must carry a version greater than the stored one.".to_string(),
        hint: "Reread the row and write its version plus one. The row is unchanged.",
    }
}

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

/// The stored freshness object with every top-level key of `patch` that
/// carries a value stamped `at`, and every key it deletes removed; `old`
/// unchanged when the patch is not an object.
fn stamp(old: Option<JsonbRaw>, patch: &[u8], at: i64) -> Option<JsonbRaw> {
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
    let mut doc = serde_json::Map::new();
    let mut pairs = p.pairs();
    while let Some((k, v)) = pairs.next_pair() {
        let k = String::from_utf8_lossy(k).into_owned();
        if engine::is_tombstone(v) {
            doc.insert(k, serde_json::json!({"$delete": true}));
        } else if !v.is_null() && !matches!(v.container_kind(), Some((JKind::Object, 0))) {
            doc.insert(k, Json::String(when.clone()));
        }
    }
    let Ok(stamps) = text::parse(&Json::Object(doc).to_string()) else {
        return old;
    };
    let stamps = JsonbRaw::from_built(&stamps);
    let base = old.as_ref().map_or(EMPTY_OBJECT, JsonbRaw::container);
    let r = engine::deep_merge(base, stamps.container(), &Policy::default(), limits());
    finish(r, old, stamps)
}

/// `freshness_stamp(stamps, patch, at)`: `stamps` with each top-level key
/// of `patch` that carries a value set to `at` (ISO 8601, UTC).
#[pg_extern(immutable, parallel_safe)]
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

/// The varlena bytes of a datum, as stored (no detoasting).
unsafe fn raw_bytes<'a>(d: pg_sys::Datum) -> &'a [u8] {
    unsafe {
        let p = d.cast_mut_ptr::<pg_sys::varlena>();
        std::slice::from_raw_parts(p as *const u8, pgrx::varlena::varsize_any(p))
    }
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
) -> Result<Option<PgHeapTuple<'a, AllocatedByPostgres>>, OwnError> {
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
unsafe fn with_columns<'a>(
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

/// What merging a column's new jsonb into its stored one gives.
enum MergeOutcome {
    /// The new value as written.
    AsWritten,
    /// The stored value, unchanged.
    Stored,
    /// A new value (None: SQL NULL).
    Value(Option<pg_sys::Datum>),
}

/// # Safety
/// `new` and `stored` are jsonb datums.
unsafe fn merge_value(
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
fn json_to_jsonb(d: pg_sys::Datum) -> pg_sys::Datum {
    convert(d, pg_sys::F_JSON_OUT, pg_sys::F_JSONB_IN, pg_sys::JSONBOID)
}

fn jsonb_to_json(d: pg_sys::Datum) -> pg_sys::Datum {
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

// `syncguard.protect_trigger()`, by hand rather than with `#[pg_trigger]`,
// whose wrapper panics (XX000) when the function is called other than as a
// trigger; PostgreSQL's own trigger functions answer 39P01.
extension_sql!(
    r#"
CREATE FUNCTION syncguard."protect_trigger"() RETURNS TRIGGER
LANGUAGE c AS 'MODULE_PATHNAME', 'protect_trigger_wrapper';
"#,
    name = "protect_trigger"
);

#[no_mangle]
#[doc(hidden)]
pub extern "C-unwind" fn pg_finfo_protect_trigger_wrapper() -> &'static pg_sys::Pg_finfo_record {
    const V1: pg_sys::Pg_finfo_record = pg_sys::Pg_finfo_record { api_version: 1 };
    &V1
}

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
                "syncguard.protect_trigger can only be called as a trigger".into(),
                Some("Install it with syncguard.protect(table)."),
            );
        }
        let trigger = pgrx::PgTrigger::from_fcinfo(&*fcinfo).unwrap_or_else(|_| {
            raise(
                PgSqlErrorCode::ERRCODE_E_R_I_E_TRIGGER_PROTOCOL_VIOLATED,
                "syncguard.protect_trigger can only be called as a trigger".into(),
                None,
            )
        });
        protect_row(&trigger).map(|row| {
            row.and_then(|t| t.into_trigger_datum())
                .unwrap_or(pg_sys::Datum::from(0))
        })
    };
    // Raised once nothing with a destructor is left on this frame.
    outcome.unwrap_or_else(|e| raise_own(e))
}

fn protect_row<'a>(
    trigger: &'a pgrx::PgTrigger<'a>,
) -> Result<Option<PgHeapTuple<'a, AllocatedByPostgres>>, OwnError> {
    let td = trigger.trigger_data();
    let ev = td.tg_event;
    let op = ev & pg_sys::TRIGGER_EVENT_OPMASK;
    let is_before_row = ev & pg_sys::TRIGGER_EVENT_TIMINGMASK == pg_sys::TRIGGER_EVENT_BEFORE
        && ev & pg_sys::TRIGGER_EVENT_ROW != 0;
    if !is_before_row || (op != pg_sys::TRIGGER_EVENT_UPDATE && op != pg_sys::TRIGGER_EVENT_INSERT)
    {
        raise(
            PgSqlErrorCode::ERRCODE_E_R_I_E_TRIGGER_PROTOCOL_VIOLATED,
            "syncguard.protect_trigger must fire BEFORE INSERT OR UPDATE FOR EACH ROW".into(),
            Some("Install it with syncguard.protect(table)."),
        );
    }
    let is_insert = op == pg_sys::TRIGGER_EVENT_INSERT;
    // SAFETY: a BEFORE UPDATE row trigger: relation, both tuples and the
    // trigger's arguments are valid for this call.
    unsafe {
        let rel = td.tg_relation;
        let relid = (*rel).rd_id;
        let new = trigger.new();
        if upsert::upsert_active(relid) {
            return Ok(new);
        }
        if BYPASS_PROTECTION.get() {
            require_bypass_right(rel);
            return Ok(new);
        }
        let trig = &*td.tg_trigger;
        if trig.tgnargs != 2 {
            raise(
                PgSqlErrorCode::ERRCODE_E_R_I_E_TRIGGER_PROTOCOL_VIOLATED,
                "syncguard.protect_trigger needs two arguments (table name, configuration)".into(),
                Some("Install it with syncguard.protect(table)."),
            );
        }
        let arg = |i: usize| std::ffi::CStr::from_ptr(*trig.tgargs.add(i)).to_string_lossy();
        let (table, cfg) = (arg(0), arg(1));
        let r = resolved(relid, &cfg);
        if is_insert {
            return inserted_row(trigger, &r, &table, relid);
        }

        let tupdesc = (*rel).rd_att;
        let natts = (*tupdesc).natts as usize;
        let (mut nv, mut nn) = (vec![pg_sys::Datum::from(0); natts], vec![false; natts]);
        let (mut ov, mut on) = (vec![pg_sys::Datum::from(0); natts], vec![false; natts]);
        pg_sys::heap_deform_tuple(td.tg_newtuple, tupdesc, nv.as_mut_ptr(), nn.as_mut_ptr());
        pg_sys::heap_deform_tuple(td.tg_trigtuple, tupdesc, ov.as_mut_ptr(), on.as_mut_ptr());
        let mut changed = vec![false; natts];
        // The application's values, before protection changes them.
        let (pv, pn) = (nv.clone(), nn.clone());

        for p in &r.columns {
            match p {
                Protected::KeepNonNull { attnum } => {
                    let i = attnum - 1;
                    if nn[i] && !on[i] {
                        (nv[i], nn[i], changed[i]) = (ov[i], false, true);
                    }
                }
                Protected::Record { attnum } => {
                    let i = attnum - 1;
                    if nn[i] && !on[i] {
                        (nv[i], nn[i], changed[i]) = (ov[i], false, true);
                    } else if !nn[i] && !on[i] {
                        if let Some(d) = crate::composite::keep_stored_fields(nv[i], ov[i]) {
                            (nv[i], changed[i]) = (d, true);
                        }
                    }
                }
                Protected::Merge {
                    attnum,
                    policy,
                    nulls_overwrite,
                    json,
                } => {
                    let i = attnum - 1;
                    if nn[i] {
                        if !on[i] && !nulls_overwrite {
                            (nv[i], nn[i], changed[i]) = (ov[i], false, true);
                        }
                        continue;
                    }
                    if !on[i] && raw_bytes(nv[i]) == raw_bytes(ov[i]) {
                        continue;
                    }
                    let doc = |d: pg_sys::Datum| if *json { json_to_jsonb(d) } else { d };
                    let stored = (!on[i]).then(|| doc(ov[i]));
                    match merge_value(doc(nv[i]), stored, policy) {
                        MergeOutcome::AsWritten => continue,
                        // The stored datum as it is (a TOAST pointer stays one).
                        MergeOutcome::Stored => (nv[i], changed[i]) = (ov[i], true),
                        MergeOutcome::Value(Some(d)) => {
                            let d = if *json { jsonb_to_json(d) } else { d };
                            (nv[i], nn[i], changed[i]) = (d, false, true);
                        }
                        MergeOutcome::Value(None) => (nn[i], changed[i]) = (true, true),
                    }
                }
            }
        }

        if let Some((attnum, skew)) = r.lww {
            let i = attnum - 1;
            if !nn[i] {
                check_skew(
                    nv[i].value() as i64,
                    skew,
                    &table,
                    &column_name(relid, attnum),
                )?;
                if !on[i] && (nv[i].value() as i64) < (ov[i].value() as i64) {
                    note_stale(&counted_name(relid, &table));
                    // Kept: the row counts as written, as it is stored.
                    return Ok(if r.stale_skip { None } else { trigger.old() });
                }
            }
        }
        if let Some((attnum, typid)) = r.version {
            let i = attnum - 1;
            // What the application wrote, before NULL keeping restored it.
            let incoming = (!pn[i]).then(|| upsert::version_value(pv[i], typid));
            let stored = (!on[i]).then(|| upsert::version_value(ov[i], typid));
            if stored.is_some() && (incoming.is_none() || incoming <= stored) {
                return Err(version_error(
                    &table,
                    &column_name(relid, attnum),
                    stored,
                    incoming,
                ));
            }
        }
        for &(doc, companion) in &r.freshness {
            let (d, f) = (doc - 1, companion - 1);
            // The stamps are the trigger's to write: a direct write of the
            // companion (an ORM sends every column) is ignored.
            (nv[f], nn[f], changed[f]) = (ov[f], on[f], true);
            if pn[d] || (!on[d] && raw_bytes(pv[d]) == raw_bytes(ov[d])) {
                continue;
            }
            let patch = JsonbRaw::from_datum(pv[d], false).unwrap();
            let old = if on[f] {
                None
            } else {
                JsonbRaw::from_datum(ov[f], false)
            };
            let at = pg_sys::GetCurrentTransactionStartTimestamp();
            if let Some(d) = stamp(old, patch.container(), at).and_then(JsonbRaw::into_datum) {
                (nv[f], nn[f], changed[f]) = (d, false, true);
            }
        }

        let cols: Vec<i32> = (0..natts)
            .filter(|&i| changed[i])
            .map(|i| i as i32 + 1)
            .collect();
        if cols.is_empty() {
            return Ok(new);
        }
        Ok(Some(with_columns(td.tg_newtuple, tupdesc, &cols, &nv, &nn)))
    }
}

fn column_name(relid: pg_sys::Oid, attnum: usize) -> String {
    let info = table_info::table_info(relid);
    info.columns
        .iter()
        .find(|c| c.attnum as usize == attnum)
        .map_or_else(|| format!("column {attnum}"), |c| c.name.clone())
}

extension_sql_file!(
    "../sql/protect.sql",
    name = "protect",
    requires = [
        "protect_trigger",
        protect_config,
        freshness_stamp,
        merge_upsert
    ]
);
