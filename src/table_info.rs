//! What `merge_upsert` and the protection trigger know about a table: its
//! columns, usable unique keys and protection, read from the catalogs once
//! per backend and dropped when PostgreSQL invalidates the table's relcache
//! entry (ALTER TABLE, CREATE INDEX, CREATE/DROP TRIGGER, ...).
//!
//! The catalog queries name every operator and type with its schema: they
//! run under the caller's search_path, where a schema listed before
//! pg_catalog could otherwise supply an `=` of its own.

use crate::errors::raise;
use pgrx::prelude::*;
use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::rc::Rc;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// jsonb or a domain over it: merged.
    Jsonb,
    /// json, or a domain over it: read from JSON text, merged through jsonb.
    Json,
    /// A composite type (or a domain over one): merged field by field.
    Composite,
    Array,
    Scalar,
}

impl Kind {
    /// A JSON document column: merged (json through jsonb).
    pub fn is_document(self) -> bool {
        matches!(self, Kind::Jsonb | Kind::Json)
    }
}

#[derive(Debug)]
pub struct Column {
    pub name: String,
    pub attnum: i16,
    pub typid: pg_sys::Oid,
    pub typmod: i32,
    /// `format_type` of the column, for messages.
    pub type_name: String,
    pub kind: Kind,
    pub typinput: pg_sys::Oid,
    pub typioparam: pg_sys::Oid,
    pub generated: bool,
    /// The column's type, schema-qualified and quoted, for casts.
    pub qualified_type: String,
    /// A composite column's fields, in order (none for other kinds).
    pub fields: Vec<String>,
}

#[derive(Debug)]
pub struct TableInfo {
    pub relid: pg_sys::Oid,
    /// `"schema"."name"`, quoted as needed: for SQL text and messages.
    pub qualified: String,
    pub columns: Vec<Column>,
    /// Sorted attnums of every unique index usable as an ON CONFLICT arbiter.
    pub unique_keys: Vec<Vec<i16>>,
    /// Sorted attnums of the primary key (empty without one).
    pub primary_key: Vec<i16>,
    /// The configuration argument of the table's protection trigger.
    pub protection: Option<String>,
}

impl TableInfo {
    pub fn column(&self, name: &str) -> Option<&Column> {
        self.columns.iter().find(|c| c.name == name)
    }

    /// The column, or ERROR 42703 naming it and the table.
    pub fn require(&self, name: &str) -> &Column {
        self.column(name).unwrap_or_else(|| {
            raise(
                PgSqlErrorCode::ERRCODE_UNDEFINED_COLUMN,
                format!(
                    "column \"{name}\" of relation {} does not exist",
                    self.qualified
                ),
                None,
            )
        })
    }
}

thread_local! {
    static TABLES: RefCell<HashMap<pg_sys::Oid, Rc<TableInfo>>> = RefCell::new(HashMap::new());
    /// Tables invalidated since the cache was last used; filled by the
    /// relcache callback, which must not touch `TABLES` (it may run while
    /// an entry is borrowed).
    static STALE: RefCell<Vec<pg_sys::Oid>> = const { RefCell::new(Vec::new()) };
    static ALL_STALE: Cell<bool> = const { Cell::new(false) };
}

#[pg_guard]
unsafe extern "C-unwind" fn on_relcache_invalidation(_arg: pg_sys::Datum, relid: pg_sys::Oid) {
    if relid == pg_sys::InvalidOid {
        ALL_STALE.set(true);
    } else {
        STALE.with(|s| match s.try_borrow_mut() {
            Ok(mut s) => s.push(relid),
            Err(_) => ALL_STALE.set(true),
        });
    }
}

pub fn init() {
    // SAFETY: called once from _PG_init; the callback only records oids.
    unsafe {
        pg_sys::CacheRegisterRelcacheCallback(
            Some(on_relcache_invalidation),
            pg_sys::Datum::from(0),
        )
    };
}

/// Drops cached entries of invalidated tables. Caches built on an entry
/// (plans, resolved protections) hold its `Rc` and compare it with the
/// current one to notice.
fn forget_stale() {
    let stale: Vec<pg_sys::Oid> = if ALL_STALE.replace(false) {
        STALE.with_borrow_mut(|s| s.clear());
        TABLES.with_borrow(|t| t.keys().copied().collect())
    } else {
        STALE.with_borrow_mut(std::mem::take)
    };
    if !stale.is_empty() {
        TABLES.with_borrow_mut(|t| stale.iter().for_each(|r| drop(t.remove(r))));
    }
}

/// The table's description, from the cache or the catalogs.
pub fn table_info(relid: pg_sys::Oid) -> Rc<TableInfo> {
    forget_stale();
    if let Some(t) = TABLES.with_borrow(|t| t.get(&relid).cloned()) {
        return t;
    }
    let info = Rc::new(load(relid));
    TABLES.with_borrow_mut(|t| t.insert(relid, info.clone()));
    info
}

fn load(relid: pg_sys::Oid) -> TableInfo {
    Spi::connect(|client| {
        let rel = client
            .select(
                "SELECT pg_catalog.format('%I.%I', n.nspname, c.relname), c.relkind::pg_catalog.text
                   FROM pg_catalog.pg_class c
                   JOIN pg_catalog.pg_namespace n ON n.oid OPERATOR(pg_catalog.=) c.relnamespace
                  WHERE c.oid OPERATOR(pg_catalog.=) $1",
                None,
                &[relid.into()],
            )
            .unwrap_or_else(|e| internal(e));
        let Some(row) = rel.into_iter().next() else {
            raise(
                PgSqlErrorCode::ERRCODE_UNDEFINED_TABLE,
                format!("relation with OID {} does not exist", relid.to_u32()),
                None,
            )
        };
        let qualified: String = row.get(1).ok().flatten().unwrap_or_default();
        let relkind: String = row.get(2).ok().flatten().unwrap_or_default();
        if relkind != "r" && relkind != "p" {
            raise(
                PgSqlErrorCode::ERRCODE_WRONG_OBJECT_TYPE,
                format!("{qualified} is not a table"),
                Some("syncguard writes to ordinary and partitioned tables only."),
            );
        }

        let mut columns = Vec::new();
        let cols = client
            .select(
                "SELECT a.attnum, a.attname::text, a.atttypid, a.atttypmod,
                        pg_catalog.format_type(a.atttypid, a.atttypmod),
                        a.attgenerated OPERATOR(pg_catalog.<>) '',
                        (SELECT pg_catalog.format('%I.%I', tn.nspname, t.typname)
                           FROM pg_catalog.pg_type t
                           JOIN pg_catalog.pg_namespace tn ON tn.oid OPERATOR(pg_catalog.=) t.typnamespace
                          WHERE t.oid OPERATOR(pg_catalog.=) a.atttypid)
                   FROM pg_catalog.pg_attribute a
                  WHERE a.attrelid OPERATOR(pg_catalog.=) $1 AND a.attnum OPERATOR(pg_catalog.>) 0
                    AND NOT a.attisdropped
                  ORDER BY a.attnum",
                None,
                &[relid.into()],
            )
            .unwrap_or_else(|e| internal(e));
        for row in cols {
            let typid: pg_sys::Oid = row.get(3).ok().flatten().unwrap_or(pg_sys::InvalidOid);
            let (mut typinput, mut typioparam) = (pg_sys::InvalidOid, pg_sys::InvalidOid);
            // SAFETY: syscache lookups of an existing type; they raise on a missing one.
            let kind = unsafe {
                pg_sys::getTypeInputInfo(typid, &mut typinput, &mut typioparam);
                let base = pg_sys::getBaseType(typid);
                let kind = match base {
                    pg_sys::JSONBOID => Kind::Jsonb,
                    pg_sys::JSONOID => Kind::Json,
                    b if crate::composite::base_composite(b).is_some() => Kind::Composite,
                    b if pg_sys::get_element_type(b) != pg_sys::InvalidOid => Kind::Array,
                    _ => Kind::Scalar,
                };
                kind
            };
            columns.push(Column {
                attnum: row.get(1).ok().flatten().unwrap_or(0),
                name: row.get(2).ok().flatten().unwrap_or_default(),
                typid,
                typmod: row.get(4).ok().flatten().unwrap_or(-1),
                type_name: row.get(5).ok().flatten().unwrap_or_default(),
                kind,
                typinput,
                typioparam,
                generated: row.get(6).ok().flatten().unwrap_or(false),
                qualified_type: row.get(7).ok().flatten().unwrap_or_default(),
                fields: match kind {
                    Kind::Composite => crate::composite::base_composite(typid)
                        .map(|t| {
                            crate::composite::fields(t)
                                .into_iter()
                                .map(|(n, _)| n)
                                .collect()
                        })
                        .unwrap_or_default(),
                    _ => Vec::new(),
                },
            });
        }

        // Arbiter-capable: unique, immediate, valid, no predicate, no expressions.
        let keys = client
            .select(
                "SELECT (SELECT pg_catalog.array_agg(k ORDER BY k)
                           FROM pg_catalog.unnest((i.indkey::pg_catalog.int2[])
                                                  [0:i.indnkeyatts OPERATOR(pg_catalog.-) 1]) k),
                        i.indisprimary
                   FROM pg_catalog.pg_index i
                  WHERE i.indrelid OPERATOR(pg_catalog.=) $1 AND i.indisunique AND i.indimmediate AND i.indisvalid
                    AND i.indpred IS NULL AND i.indexprs IS NULL",
                None,
                &[relid.into()],
            )
            .unwrap_or_else(|e| internal(e));
        let keys: Vec<(Vec<i16>, bool)> = keys
            .into_iter()
            .filter_map(|r| {
                let key = r.get::<Vec<i16>>(1).ok().flatten()?;
                Some((key, r.get::<bool>(2).ok().flatten().unwrap_or(false)))
            })
            .collect();
        let primary_key = keys
            .iter()
            .find(|(_, primary)| *primary)
            .map(|(k, _)| k.clone())
            .unwrap_or_default();
        let unique_keys = keys.into_iter().map(|(k, _)| k).collect();

        // The trigger function by its C symbol, not its SQL name: 0.3.0
        // renamed it (_protect_trigger), and protected tables must keep
        // taking writes in a database not yet updated to the library's version.
        let trig = client
            .select(
                "SELECT t.tgargs FROM pg_catalog.pg_trigger t
                  WHERE t.tgrelid OPERATOR(pg_catalog.=) $1
                    AND t.tgname OPERATOR(pg_catalog.=) 'syncguard_protect'
                    AND t.tgfoid OPERATOR(pg_catalog.=) ANY (ARRAY(
                        SELECT p.oid FROM pg_catalog.pg_proc p
                         WHERE p.pronamespace OPERATOR(pg_catalog.=) 'syncguard'::pg_catalog.regnamespace
                           AND p.prosrc OPERATOR(pg_catalog.=) 'protect_trigger_wrapper'))",
                None,
                &[relid.into()],
            )
            .unwrap_or_else(|e| internal(e));
        let protection = trig
            .into_iter()
            .next()
            .and_then(|r| r.get::<Vec<u8>>(1).ok().flatten())
            .and_then(|args| {
                let mut parts = args.split(|b| *b == 0);
                parts.next();
                parts
                    .next()
                    .map(|c| String::from_utf8_lossy(c).into_owned())
            });

        TableInfo {
            relid,
            qualified,
            columns,
            unique_keys,
            primary_key,
            protection,
        }
    })
}

/// `OPERATOR(schema.=)`: the default equality of the type, spelled so that
/// the caller's search_path cannot redirect it.
pub fn eq_operator(typid: pg_sys::Oid) -> String {
    // SAFETY: a type cache lookup of an existing type.
    let opr =
        unsafe { (*pg_sys::lookup_type_cache(typid, pg_sys::TYPECACHE_EQ_OPR as i32)).eq_opr };
    Spi::get_one_with_args::<String>(
        "SELECT pg_catalog.format('OPERATOR(%I.%s)', n.nspname, o.oprname)
           FROM pg_catalog.pg_operator o
           JOIN pg_catalog.pg_namespace n ON n.oid OPERATOR(pg_catalog.=) o.oprnamespace
          WHERE o.oid OPERATOR(pg_catalog.=) $1",
        &[opr.into()],
    )
    .ok()
    .flatten()
    .unwrap_or_else(|| "OPERATOR(pg_catalog.=)".to_string())
}

fn internal(e: pgrx::spi::SpiError) -> ! {
    raise(
        PgSqlErrorCode::ERRCODE_INTERNAL_ERROR,
        format!("syncguard could not read the catalogs: {e}"),
        None,
    )
}
