//! `merge_upsert`: one `INSERT … ON CONFLICT … DO UPDATE` whose SET list
//! deep-merges jsonb columns and keeps stored values from NULLs.
//!
//! The statement is generated from the table's catalog entry, the key and
//! data column names and the write policy, prepared once and kept
//! (`SPI_keepplan`) per backend: a repeated call converts the values and
//! executes the saved plan. Relcache invalidation of the table drops its
//! plans (see [`crate::table_info`]). The statement is upsert_statement.rs's,
//! the conversion of the values upsert_values.rs's and the returned row
//! upsert_row.rs's; this file is the SQL entry point, the plan cache and the
//! execution.

use crate::conflict;
use crate::errors::{self, bad_input, corrupt, raise, SqlError};
use crate::jsonb_arg::JsonbRaw;
use crate::merge::jsonb::{Container, Item, Kind as JKind};
use crate::merging;
use crate::policy_args::{config_policy, parse_policy};
use crate::regclass::RegClass;
use crate::table_info;
use crate::upsert_row::{build_on_coordinator, first_value, row_json, text_value};
use crate::upsert_statement::{prepare, UpsertPlan};
use crate::upsert_values::convert;
use crate::write_policy::WritePolicy;
use pgrx::prelude::*;
use std::cell::RefCell;
use std::collections::HashMap;
use std::rc::Rc;

thread_local! {
    static PLANS: RefCell<HashMap<(pg_sys::Oid, Vec<u8>), Rc<UpsertPlan>>> = RefCell::new(HashMap::new());
}

fn object_pairs<'a>(doc: &'a JsonbRaw, what: &str) -> Vec<(&'a str, Item<'a>)> {
    let c = Container::new(doc.container()).unwrap_or_else(|_| corrupt());
    if c.kind() != JKind::Object {
        bad_input(format!(
            "merge_upsert: {what} must be a JSON object of column names and values"
        ));
    }
    let mut pairs = c.pairs();
    let mut out = Vec::with_capacity(c.len());
    while let Some((k, v)) = pairs.next_pair() {
        out.push((std::str::from_utf8(k).unwrap_or_else(|_| corrupt()), v));
    }
    if pairs.failed() {
        corrupt()
    }
    out
}

/// Upserts one row: see docs/protection.md.
#[pg_extern(volatile, parallel_unsafe)]
fn merge_upsert(
    target: Option<RegClass>,
    key: Option<JsonbRaw>,
    data: Option<JsonbRaw>,
    policy: default!(Option<JsonbRaw>, "NULL"),
) -> Option<JsonbRaw> {
    let target = require_target(target);
    let Some(key) = key else {
        raise(
            PgSqlErrorCode::ERRCODE_NULL_VALUE_NOT_ALLOWED,
            "merge_upsert: key must not be NULL".into(),
            None,
        )
    };
    let Some(data) = data else {
        raise(
            PgSqlErrorCode::ERRCODE_NULL_VALUE_NOT_ALLOWED,
            "merge_upsert: data must not be NULL".into(),
            None,
        )
    };
    upsert_objects(target, &key, &data, policy.as_ref())
}

pub fn require_target(target: Option<RegClass>) -> pg_sys::Oid {
    match target {
        Some(t) => t.0,
        None => raise(
            PgSqlErrorCode::ERRCODE_NULL_VALUE_NOT_ALLOWED,
            "merge_upsert: target must not be NULL".into(),
            Some("Pass the table, e.g. 'profiles'::regclass."),
        ),
    }
}

/// merge_upsert of key and data objects.
pub fn upsert_objects(
    relid: pg_sys::Oid,
    key: &JsonbRaw,
    data: &JsonbRaw,
    policy: Option<&JsonbRaw>,
) -> Option<JsonbRaw> {
    let keys = object_pairs(key, "key");
    let cols = object_pairs(data, "data");
    require_key(keys.len());
    let plan = plan_for(relid, &names_of(&keys), &names_of(&cols), policy);
    let (values, nulls) = convert(&plan, &keys, &cols);
    execute_or_raise(plan, values, nulls)
}

/// The names of (name, value) pairs.
pub fn names_of<'a, T>(pairs: &[(&'a str, T)]) -> Vec<&'a str> {
    pairs.iter().map(|(n, _)| *n).collect()
}

/// Executes `plan`; an error is raised here, where nothing is left to drop
/// but `plan`, released first.
pub fn execute_or_raise(
    plan: Rc<UpsertPlan>,
    values: Vec<pg_sys::Datum>,
    nulls: Vec<std::ffi::c_char>,
) -> Option<JsonbRaw> {
    match execute(&plan, values, nulls) {
        Ok(row) => row,
        Err(e) => {
            drop(plan);
            e.raise()
        }
    }
}

/// Raises merge_upsert's error for a call whose key names no column.
pub fn require_key(n: usize) {
    if n == 0 {
        bad_input("merge_upsert: key must name at least one column".into());
    }
}

/// The cache key: column names in order, then the policy's source.
fn cache_key(keys: &[&str], cols: &[&str], policy: &[u8]) -> Vec<u8> {
    let mut k = Vec::with_capacity(64 + policy.len());
    for n in keys {
        k.extend_from_slice(n.as_bytes());
        k.push(0);
    }
    k.push(1);
    for n in cols {
        k.extend_from_slice(n.as_bytes());
        k.push(0);
    }
    k.push(1);
    k.extend_from_slice(policy);
    k
}

/// The kept plan for the table, column names (key, then data, each in
/// jsonb's key order) and policy; prepared on first use.
pub fn plan_for(
    relid: pg_sys::Oid,
    keys: &[&str],
    cols: &[&str],
    policy: Option<&JsonbRaw>,
) -> Rc<UpsertPlan> {
    let info = table_info::table_info(relid);
    // The call's policy under the table's protection (WritePolicy::under).
    let source: Vec<u8> = match (policy, &info.protection) {
        (Some(p), None) => p.container().to_vec(),
        (p, Some(cfg)) => [
            p.map_or(&[][..], JsonbRaw::container),
            b"protect:",
            cfg.as_bytes(),
        ]
        .concat(),
        (None, None) => Vec::new(),
    };
    let ck = (relid, cache_key(keys, cols, &source));
    if let Some(p) = PLANS.with_borrow(|p| p.get(&ck).cloned()) {
        if Rc::ptr_eq(&p.table, &info) {
            return p;
        }
        // The table changed since: every plan of it is stale.
        PLANS.with_borrow_mut(|p| p.retain(|(r, _), _| *r != relid));
    }
    let wp = match (policy, &info.protection) {
        (Some(p), None) => parse_policy(p),
        (Some(p), Some(cfg)) => parse_policy(p)
            .under(&config_policy(cfg))
            .unwrap_or_else(|e| {
                raise(
                    PgSqlErrorCode::ERRCODE_INVALID_PARAMETER_VALUE,
                    format!("{} of {}", e.message, info.qualified),
                    Some(&e.hint),
                )
            }),
        (None, Some(cfg)) => config_policy(cfg),
        (None, None) => WritePolicy::default(),
    };
    let plan = Rc::new(prepare(info, keys, cols, &wp));
    PLANS.with_borrow_mut(|p| p.insert(ck, plan.clone()));
    plan
}

fn execute(
    plan: &Rc<UpsertPlan>,
    mut values: Vec<pg_sys::Datum>,
    nulls: Vec<std::ffi::c_char>,
) -> Result<Option<JsonbRaw>, SqlError> {
    if let Some((p, skew)) = plan.lww {
        if nulls[p] == b' ' as std::ffi::c_char {
            conflict::check_skew(
                conflict::micros(values[p]),
                skew,
                &plan.table.qualified,
                &plan.table.columns[plan.params[p]].name,
            )?;
        }
    }
    // palloc'd copies: the unguarded call below may longjmp past this frame.
    let (vals, nls) = unsafe {
        let v = pg_sys::palloc(values.len().max(1) * 8) as *mut pg_sys::Datum;
        std::ptr::copy_nonoverlapping(values.as_ptr(), v, values.len());
        let n = pg_sys::palloc(nulls.len().max(1)) as *mut std::ffi::c_char;
        std::ptr::copy_nonoverlapping(nulls.as_ptr(), n, nulls.len());
        (v, n)
    };
    let relid = plan.table.relid;
    // SAFETY: SPI_connect pairs with SPI_finish below; on error the server
    // closes the connection at (sub)transaction abort and the xact
    // callbacks trim ACTIVE.
    let (ok, row) = unsafe {
        pg_sys::SPI_connect();
        merging::begin(relid);
        let rc = errors::spi_execute_plan(plan.plan, vals, nls);
        merging::end();
        if rc != pg_sys::SPI_OK_INSERT_RETURNING as i32 {
            pg_sys::SPI_finish();
            raise(
                PgSqlErrorCode::ERRCODE_INTERNAL_ERROR,
                format!("merge_upsert: SPI returned {rc}"),
                None,
            );
        }
        if pg_sys::SPI_processed == 1 {
            if let Some(build) = plan.build {
                build_on_coordinator(build, plan.table.columns.len());
            }
            (true, Some(row_json(&plan.table, plan.raw_row)))
        } else {
            (false, None)
        }
    };
    if ok {
        unsafe { pg_sys::SPI_finish() };
        // Copied after SPI_finish: into the caller's memory, not SPI's.
        return Ok(row.map(|buf| JsonbRaw::from_built(&buf)));
    }
    // The WHERE refused the write: a stale timestamp (ignored) or version (error).
    let lookup = plan.lookup.expect("a refused write has a WHERE");
    let (stored, ver) = unsafe {
        let rc = pg_sys::SPI_execute_plan(lookup, values.as_mut_ptr(), nulls.as_ptr(), false, 1);
        if rc != pg_sys::SPI_OK_SELECT as i32 || pg_sys::SPI_processed == 0 {
            pg_sys::SPI_finish();
            return Ok(None);
        }
        (first_value(0), text_value(1))
    };
    if let Some((p, typid)) = plan.version {
        let incoming = (nulls[p] == b' ' as std::ffi::c_char)
            .then(|| conflict::version_value(values[p], typid));
        let stored_v: Option<i64> = ver.as_deref().and_then(|s| s.parse().ok());
        if conflict::version_refused(incoming, stored_v) {
            unsafe { pg_sys::SPI_finish() };
            let col = &plan.table.columns[plan.params[p]].name;
            return Err(conflict::version_error(
                &plan.table.qualified,
                col,
                stored_v,
                incoming,
            ));
        }
    }
    conflict::note_stale(&plan.table.qualified);
    unsafe { pg_sys::SPI_finish() };
    Ok(stored.map(|d| unsafe { JsonbRaw::from_datum(d, false).unwrap() }))
}

#[cfg(any(test, feature = "pg_test"))]
#[pg_schema]
mod tests {
    use super::PLANS;
    use pgrx::prelude::*;

    fn plans_of(table: &str) -> Vec<usize> {
        let relid = Spi::get_one::<pg_sys::Oid>(&format!("SELECT '{table}'::regclass::oid"))
            .unwrap()
            .unwrap();
        PLANS.with_borrow(|p| {
            p.iter()
                .filter(|((r, _), _)| *r == relid)
                .map(|(_, plan)| plan.plan as usize)
                .collect()
        })
    }

    /// Repeated calls reuse one kept plan per column set; ALTER TABLE
    /// replaces it.
    #[pg_test]
    fn plans_are_kept_per_column_set() {
        Spi::run("CREATE TABLE plan_t (id int PRIMARY KEY, a text, d jsonb)").unwrap();
        let upsert = |data: &str| {
            Spi::run(&format!(
                "SELECT syncguard.merge_upsert('plan_t', '{{\"id\": 1}}', '{data}')"
            ))
            .unwrap()
        };
        upsert(r#"{"a": "x"}"#);
        let first = plans_of("plan_t");
        assert_eq!(first.len(), 1);
        for i in 0..10 {
            upsert(&format!(r#"{{"a": "x{i}"}}"#));
        }
        assert_eq!(plans_of("plan_t"), first, "the same column set re-planned");
        upsert(r#"{"d": {"k": 1}}"#);
        assert_eq!(plans_of("plan_t").len(), 2);
        Spi::run("ALTER TABLE plan_t ADD COLUMN b int").unwrap();
        upsert(r#"{"a": "y"}"#);
        let after = plans_of("plan_t");
        assert_eq!(
            after.len(),
            1,
            "plans of the old table description are dropped"
        );
        assert_ne!(after, first);
    }
}
