//! Deleting rows of the extension's shared tables without granting DELETE.
//!
//! A table-level DELETE (or UPDATE) privilege lets its holder
//! `LOCK TABLE … IN ACCESS EXCLUSIVE MODE`, which would stall every other
//! role's claims, jobs and sync runs. So PUBLIC holds neither on these tables
//! (only INSERT, SELECT and column UPDATEs, which allow no such lock), and the
//! functions that delete call `_delete_visible` with the row versions they
//! mean: it keeps those the *caller* can see (row-level security, as a DELETE
//! would have) and deletes exactly them as the table's owner.

use crate::errors::raise;
use crate::regclass::RegClass;
use pgrx::prelude::*;

/// The tables `_delete_visible` deletes from; their policies give the rows
/// each role may delete. `stale_writes` is the owner's alone.
const TABLES: &[&str] = &[
    "idempotency_keys",
    "queues",
    "queue_jobs",
    "sync_sources",
    "sync_runs",
    "sync_parts",
    "invariants",
    "invariant_runs",
    "violations",
    "entity_events",
];

/// Deletes the row versions `ctids` of `target` (one of `TABLES`) that the
/// caller can see, and returns how many it deleted. A version updated or
/// deleted since the caller read it is no longer deleted here: the DELETE
/// rechecks the ctid against the newest version, as a plain DELETE would
/// skip a row that no longer matches.
#[pg_extern(volatile, strict, name = "_delete_visible")]
fn delete_visible(target: RegClass, ctids: Vec<pg_sys::ItemPointerData>) -> i64 {
    let RegClass(target) = target;
    let table = shared_table(target);
    let visible = Spi::get_one_with_args::<Vec<pg_sys::ItemPointerData>>(
        &format!(
            "SELECT pg_catalog.array_agg(t.ctid) FROM syncguard.{table} AS t
              WHERE t.ctid OPERATOR(pg_catalog.=) ANY ($1)"
        ),
        &[ctids.into()],
    )
    .unwrap_or_else(|e| raise(PgSqlErrorCode::ERRCODE_INTERNAL_ERROR, e.to_string(), None));
    let Some(visible) = visible else { return 0 };
    // SAFETY: the relation exists (shared_table found it).
    let owner = unsafe { (*pgrx::PgRelation::open(target).rd_rel).relowner };
    crate::roles::as_role(owner, || {
        Spi::get_one_with_args::<i64>(
            &format!(
                "WITH d AS (DELETE FROM syncguard.{table} AS t
                             WHERE t.ctid OPERATOR(pg_catalog.=) ANY ($1) RETURNING 1)
                 SELECT pg_catalog.count(*) FROM d"
            ),
            &[visible.into()],
        )
        .unwrap_or_else(|e| raise(PgSqlErrorCode::ERRCODE_INTERNAL_ERROR, e.to_string(), None))
        .unwrap_or(0)
    })
}

/// The name of `target` when it is one of `TABLES` in schema syncguard.
fn shared_table(target: pg_sys::Oid) -> &'static str {
    // SAFETY: syscache lookups that return NULL / InvalidOid for an unknown relation.
    let (nsp, name) = unsafe {
        let name = pg_sys::get_rel_name(target);
        let nsp = pg_sys::get_rel_namespace(target);
        let name = (!name.is_null()).then(|| {
            std::ffi::CStr::from_ptr(name)
                .to_string_lossy()
                .into_owned()
        });
        (nsp, name)
    };
    // SAFETY: as above; missing_ok.
    let schema = unsafe { pg_sys::get_namespace_oid(c"syncguard".as_ptr(), true) };
    match name {
        Some(name) if nsp == schema => TABLES.iter().copied().find(|t| *t == name),
        _ => None,
    }
    .unwrap_or_else(|| {
        raise(
            PgSqlErrorCode::ERRCODE_INSUFFICIENT_PRIVILEGE,
            format!("_delete_visible: {} is not one of syncguard's shared tables", name_of(target)),
            Some("It deletes only from syncguard's own tables; use the function for that table (e.g. sync_prune, queue_drop)."),
        )
    })
}

/// `target` as regclass text (quoted, qualified when off the search_path).
fn name_of(target: pg_sys::Oid) -> String {
    Spi::get_one_with_args::<String>("SELECT $1::pg_catalog.regclass::text", &[target.into()])
        .ok()
        .flatten()
        .unwrap_or_else(|| target.to_u32().to_string())
}
