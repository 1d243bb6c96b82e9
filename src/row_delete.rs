//! Deleting rows of the extension's shared tables without granting DELETE.
//!
//! A table-level DELETE (or UPDATE) privilege lets its holder
//! `LOCK TABLE … IN ACCESS EXCLUSIVE MODE`, which would stall every other
//! role's claims, jobs and sync runs. So PUBLIC holds neither on these tables
//! (only INSERT, SELECT and column UPDATEs, which allow no such lock), and the
//! functions that delete call `_delete_visible` with the keys of the rows
//! they mean: it keeps those the *caller* can see (row-level security, as a
//! DELETE would have) and deletes exactly them as the table's owner.

use crate::errors::raise;
use crate::regclass::RegClass;
use crate::table_info::{self, TableInfo};
use crate::upsert_statement::{quote_ident, quote_literal};
use pgrx::prelude::*;
use pgrx::spi::OwnedPreparedStatement;
use std::cell::RefCell;
use std::collections::HashMap;
use std::rc::Rc;

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

/// Deletes the rows of `target` (one of `TABLES`) whose primary keys
/// `keys` holds (each an object with at least the key's columns) and that
/// the caller can see, and returns how many it deleted. Where a concurrent
/// change would matter, callers lock the rows first (`FOR UPDATE`) or pass
/// each row's `xmin`, so the row found by its key is the row they chose.
/// One statement per row, each naming the whole primary key: under Citus
/// every key holds the distribution column, so each goes to one shard.
#[pg_extern(volatile, strict, name = "_delete_visible")]
fn delete_visible(target: RegClass, keys: Vec<pgrx::JsonB>) -> i64 {
    let RegClass(target) = target;
    let stmts = statements(target);
    // SAFETY: the relation exists (shared_table found it).
    let owner = unsafe { (*pgrx::PgRelation::open(target).rd_rel).relowner };
    let count = |stmt: &OwnedPreparedStatement, key: &pgrx::JsonB| {
        Spi::connect_mut(|c| {
            c.update(stmt, Some(1), &[pgrx::JsonB(key.0.clone()).into()])?
                .first()
                .get_one::<i64>()
        })
        .unwrap_or_else(|e| raise(PgSqlErrorCode::ERRCODE_INTERNAL_ERROR, e.to_string(), None))
        .unwrap_or(0)
    };
    let mut deleted = 0;
    for key in &keys {
        // As the caller: row-level security decides what it may delete.
        if count(&stmts.visible, key) > 0 {
            deleted += crate::roles::as_role(owner, || count(&stmts.delete, key));
        }
    }
    deleted
}

/// The two statements of one table, by primary key (`$1`, a jsonb object).
struct Statements {
    /// Whether the caller sees the row.
    visible: OwnedPreparedStatement,
    /// Deletes it and says whether it did.
    delete: OwnedPreparedStatement,
}

thread_local! {
    /// Prepared once per table and kept, with the table description they
    /// were written from: made again when that changes (table_info.rs).
    static STATEMENTS: RefCell<HashMap<pg_sys::Oid, (Rc<TableInfo>, Rc<Statements>)>> =
        RefCell::new(HashMap::new());
}

fn statements(target: pg_sys::Oid) -> Rc<Statements> {
    let table = shared_table(target);
    let info = table_info::table_info(target);
    if let Some(hit) = STATEMENTS.with_borrow(|s| {
        s.get(&target)
            .filter(|(i, _)| Rc::ptr_eq(i, &info))
            .map(|(_, st)| st.clone())
    }) {
        return hit;
    }
    // A key may name the row version it was read as (`xmin`): a row changed
    // since is not deleted, as a DELETE would recheck its WHERE.
    let cond = format!(
        "{} AND (($1 OPERATOR(pg_catalog.->>) 'xmin') IS NULL
                 OR t.xmin OPERATOR(pg_catalog.=) ($1 OPERATOR(pg_catalog.->>) 'xmin')::pg_catalog.xid)",
        key_condition(&info)
    );
    let prepare = |sql: String| {
        Spi::connect(|c| {
            c.prepare(sql.as_str(), &[PgOid::BuiltIn(PgBuiltInOids::JSONBOID)])
                .map(|p| p.keep())
        })
        .unwrap_or_else(|e| raise(PgSqlErrorCode::ERRCODE_INTERNAL_ERROR, e.to_string(), None))
    };
    let stmts = Rc::new(Statements {
        visible: prepare(format!(
            "SELECT pg_catalog.count(*) FROM syncguard.{table} AS t WHERE {cond}"
        )),
        delete: prepare(format!(
            "WITH d AS (DELETE FROM syncguard.{table} AS t WHERE {cond} RETURNING 1)
             SELECT pg_catalog.count(*) FROM d"
        )),
    });
    STATEMENTS.with_borrow_mut(|s| s.insert(target, (info, stmts.clone())));
    stmts
}

/// `t.<col> = ($1 ->> '<col>')::<schema>.<type>` for each primary key
/// column, joined by AND; every name quoted and the type qualified: the
/// statements run under the caller's search_path, one as the table's owner.
fn key_condition(info: &TableInfo) -> String {
    if info.primary_key.is_empty() {
        raise(
            PgSqlErrorCode::ERRCODE_INTERNAL_ERROR,
            format!("_delete_visible: {} has no primary key", info.qualified),
            Some("Reinstall the extension: its tables are made with primary keys."),
        )
    }
    info.primary_key
        .iter()
        .filter_map(|&attnum| info.columns.iter().find(|c| c.attnum == attnum))
        .map(|c| {
            format!(
                "t.{} OPERATOR(pg_catalog.=) ($1 OPERATOR(pg_catalog.->>) {})::{}",
                quote_ident(&c.name),
                quote_literal(&c.name),
                c.qualified_type
            )
        })
        .collect::<Vec<_>>()
        .join(" AND ")
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
