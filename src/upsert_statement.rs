//! The statement `merge_upsert` prepares for one table, column list and
//! policy: `INSERT … ON CONFLICT (key) DO UPDATE SET …`, whose SET list
//! merges jsonb columns and keeps stored values from NULLs, whose WHERE
//! applies last-write-wins and versions (the rules of conflict.rs), and whose
//! RETURNING gives the stored row. Every name in it is quoted and
//! schema-qualified, operators included, so the caller's search_path cannot
//! redirect it.

use crate::conflict;
use crate::errors::bad_input;
use crate::errors::raise;
use crate::policy_args::check_policy_columns;
use crate::table_info::{self, Column, Kind, TableInfo};
use crate::write_policy::{ColumnRule, WritePolicy};
use pgrx::prelude::*;
use std::ffi::CString;
use std::fmt::Write as _;
use std::rc::Rc;

/// A prepared upsert for one table, column list and policy.
pub struct UpsertPlan {
    pub table: Rc<TableInfo>,
    pub plan: pg_sys::SPIPlanPtr,
    /// Reads the stored row (and its version) by key when the upsert's
    /// WHERE refused the write.
    pub lookup: Option<pg_sys::SPIPlanPtr>,
    /// Index into `table.columns` of each parameter, key columns first.
    pub params: Vec<usize>,
    pub n_key: usize,
    /// Parameter index of the last-write-wins timestamp, and the skew limit.
    pub lww: Option<(usize, i64)>,
    /// Parameter index and type of the version column.
    pub version: Option<(usize, pg_sys::Oid)>,
    /// A Citus table: the upsert returns the stored columns as they are and
    /// this statement, run on the coordinator, builds the returned object
    /// from them (see `citus_table`).
    pub build: Option<pg_sys::SPIPlanPtr>,
    /// The upsert returns every column as it is, and `row_json` builds the
    /// object (every column is `returned_raw`); else it returns
    /// `returned_object`'s list.
    pub raw_row: bool,
}

impl Drop for UpsertPlan {
    fn drop(&mut self) {
        // SAFETY: both plans were kept by this struct and are used nowhere else.
        unsafe {
            pg_sys::SPI_freeplan(self.plan);
            for p in [self.lookup, self.build].into_iter().flatten() {
                pg_sys::SPI_freeplan(p);
            }
        }
    }
}

pub fn prepare(info: Rc<TableInfo>, keys: &[&str], cols: &[&str], wp: &WritePolicy) -> UpsertPlan {
    let index_of = |name: &str| -> usize {
        let c = info.require(name);
        if c.generated {
            raise(
                PgSqlErrorCode::ERRCODE_GENERATED_ALWAYS,
                format!(
                    "column \"{name}\" of {} is a generated column",
                    info.qualified
                ),
                Some("Leave generated columns out of key and data."),
            );
        }
        info.columns
            .iter()
            .position(|x| std::ptr::eq(x, c))
            .unwrap()
    };
    let key_idx: Vec<usize> = keys.iter().map(|n| index_of(n)).collect();
    let mut key_attnums: Vec<i16> = key_idx.iter().map(|&i| info.columns[i].attnum).collect();
    key_attnums.sort_unstable();
    if !info.unique_keys.contains(&key_attnums) {
        raise(
            PgSqlErrorCode::ERRCODE_INVALID_COLUMN_REFERENCE,
            format!(
                "merge_upsert: no unique index of {} has exactly the key columns ({})",
                info.qualified,
                keys.join(", ")
            ),
            Some("key must name all columns of one unique index (or primary key) without a predicate, and no others."),
        );
    }
    check_policy_columns(&info, wp);
    // Data columns that are not key columns become parameters after the keys.
    let mut params = key_idx.clone();
    let mut data_idx = Vec::new();
    for n in cols {
        let i = index_of(n);
        if !key_idx.contains(&i) {
            params.push(i);
            data_idx.push(i);
        }
    }
    let col = |i: usize| &info.columns[i];
    let qi = |i: usize| quote_ident(&col(i).name);
    let param_of = |name: &str| params.iter().position(|&i| col(i).name == name);

    let version = wp.version.as_deref().map(|v| match param_of(v) {
        Some(p) if p >= keys.len() => (p, col(params[p]).typid),
        _ => bad_input(format!(
            "merge_upsert: data must carry the version column \"{v}\" of the write policy"
        )),
    });
    let lww = wp
        .last_write_wins
        .as_deref()
        .and_then(param_of)
        .map(|p| (p, conflict::skew_micros(wp)));

    let mut insert_cols: Vec<String> = params.iter().map(|&i| qi(i)).collect();
    let mut values: Vec<String> = (1..=params.len()).map(|n| format!("${n}")).collect();
    let mut sets = Vec::new();
    let guards = wp.guard_columns();
    for &i in &data_idx {
        let c = quote_ident(&col(i).name);
        let expr = if wp.version.as_deref() == Some(col(i).name.as_str()) {
            format!("EXCLUDED.{c}")
        } else if guards.contains(&col(i).name.as_str()) {
            // No policy lets a NULL erase a guard.
            format!("COALESCE(EXCLUDED.{c}, sg_t.{c})")
        } else {
            match wp.rule(&col(i).name, col(i).kind.is_document()) {
                ColumnRule::Replace => format!("EXCLUDED.{c}"),
                ColumnRule::Merge {
                    policy,
                    nulls_overwrite,
                } if col(i).kind.is_document() => {
                    let merge = if col(i).kind == Kind::Json {
                        // json merges through jsonb (reference: what json loses).
                        format!(
                            "CAST(syncguard.jsonb_deep_merge(CAST(sg_t.{c} AS pg_catalog.jsonb), \
                             CAST(EXCLUDED.{c} AS pg_catalog.jsonb), {}::pg_catalog.jsonb) AS pg_catalog.json)",
                            quote_literal(&policy)
                        )
                    } else {
                        format!(
                            "syncguard.jsonb_deep_merge(sg_t.{c}, EXCLUDED.{c}, {}::pg_catalog.jsonb)",
                            quote_literal(&policy)
                        )
                    };
                    if nulls_overwrite {
                        format!("CASE WHEN EXCLUDED.{c} IS NULL THEN NULL ELSE {merge} END")
                    } else {
                        merge
                    }
                }
                ColumnRule::Merge {
                    nulls_overwrite: true,
                    ..
                } => format!("EXCLUDED.{c}"),
                // A composite keeps the stored fields the write leaves NULL.
                ColumnRule::Merge { .. } if col(i).kind == Kind::Composite => {
                    let fields: Vec<String> = col(i)
                        .fields
                        .iter()
                        .map(|f| {
                            let f = quote_ident(f);
                            format!("COALESCE((EXCLUDED.{c}).{f}, (sg_t.{c}).{f})")
                        })
                        .collect();
                    format!(
                        "CASE WHEN sg_t.{c} IS NULL THEN EXCLUDED.{c} ELSE CAST(ROW({}) AS {}) END",
                        fields.join(", "),
                        col(i).qualified_type
                    )
                }
                ColumnRule::Merge { .. } => format!("COALESCE(EXCLUDED.{c}, sg_t.{c})"),
            }
        };
        sets.push(format!("{c} = {expr}"));
    }
    for (doc, companion) in &wp.freshness {
        let Some(p) = param_of(doc) else { continue };
        if param_of(companion).is_some() {
            bad_input(format!(
                "merge_upsert: column \"{companion}\" records the freshness of \"{doc}\"; leave it out of data"
            ));
        }
        let (d, f) = (quote_ident(doc), quote_ident(companion));
        insert_cols.push(f.clone());
        values.push(format!(
            "syncguard._freshness_stamp(NULL, ${}, pg_catalog.now())",
            p + 1
        ));
        sets.push(format!(
            "{f} = syncguard._freshness_stamp(sg_t.{f}, EXCLUDED.{d}, pg_catalog.now())"
        ));
    }
    if sets.is_empty() {
        // Only key columns: a no-op update still locks and returns the row.
        let k = qi(key_idx[0]);
        sets.push(format!("{k} = sg_t.{k}"));
    }
    let mut conds = Vec::new();
    if let Some((p, _)) = lww {
        let c = qi(params[p]);
        conds.push(format!(
            "(sg_t.{c} IS NULL OR EXCLUDED.{c} IS NULL OR EXCLUDED.{c} OPERATOR(pg_catalog.>=) sg_t.{c})"
        ));
    }
    if let Some((p, _)) = version {
        let c = qi(params[p]);
        conds.push(format!(
            "(sg_t.{c} IS NULL OR EXCLUDED.{c} OPERATOR(pg_catalog.>) sg_t.{c})"
        ));
    }
    let key_list: Vec<String> = key_idx.iter().map(|&i| qi(i)).collect();
    let mut sql = format!(
        "INSERT INTO {} AS sg_t ({}) VALUES ({}) ON CONFLICT ({}) DO UPDATE SET {}",
        info.qualified,
        insert_cols.join(", "),
        values.join(", "),
        key_list.join(", "),
        sets.join(", ")
    );
    if !conds.is_empty() {
        let _ = write!(sql, " WHERE {}", conds.join(" AND "));
    }
    // The stored row: to_jsonb(row) would decode and re-encode every jsonb
    // column; they are returned as they are and spliced in by `row_json`,
    // which also writes integers, booleans and text itself: a row of only
    // such columns is returned as it is.
    let raw_row = info.columns.iter().all(returned_raw);
    let build = if citus_table(info.relid) {
        let _ = write!(sql, " RETURNING {}", all_columns(&info));
        let types: Vec<pg_sys::Oid> = info.columns.iter().map(|c| c.typid).collect();
        let select = format!(
            "SELECT {}",
            returned_object(&info, |n| format!("${}", n + 1))
        );
        Some(keep_plan(&select, &types))
    } else if raw_row {
        let _ = write!(sql, " RETURNING {}", all_columns(&info));
        None
    } else {
        let _ = write!(
            sql,
            " RETURNING {}",
            returned_object(&info, |n| format!(
                "sg_t.{}",
                quote_ident(&info.columns[n].name)
            ))
        );
        None
    };
    let raw_row = raw_row && build.is_none();

    let types: Vec<pg_sys::Oid> = params.iter().map(|&i| param_type(col(i))).collect();
    let plan = keep_plan(&sql, &types);
    let lookup = (!conds.is_empty()).then(|| {
        let mut q = String::from("SELECT pg_catalog.to_jsonb(sg_t.*)");
        match version {
            Some((p, _)) => {
                let _ = write!(q, ", sg_t.{}::pg_catalog.text", qi(params[p]));
            }
            None => q.push_str(", NULL::pg_catalog.text"),
        }
        let _ = write!(q, " FROM {} AS sg_t WHERE ", info.qualified);
        let eqs: Vec<String> = key_idx
            .iter()
            .enumerate()
            .map(|(n, &i)| {
                let op = table_info::eq_operator(col(i).typid);
                format!("sg_t.{} {op} ${}", qi(i), n + 1)
            })
            .collect();
        q.push_str(&eqs.join(" AND "));
        keep_plan(&q, &types[..key_idx.len()])
    });
    UpsertPlan {
        table: info.clone(),
        plan,
        lookup,
        params,
        n_key: keys.len(),
        lww,
        version,
        build,
        raw_row,
    }
}

/// Every column of the row, in order.
fn all_columns(info: &TableInfo) -> String {
    let all: Vec<String> = info
        .columns
        .iter()
        .map(|c| format!("sg_t.{}", quote_ident(&c.name)))
        .collect();
    all.join(", ")
}

/// Whether `row_json` writes the column's value itself, as `to_jsonb` would
/// (crate::upsert_row's `Held`); jsonb_build_object writes the others.
pub fn returned_raw(c: &Column) -> bool {
    c.kind == Kind::Jsonb
        || [
            pg_sys::INT2OID,
            pg_sys::INT4OID,
            pg_sys::INT8OID,
            pg_sys::BOOLOID,
            pg_sys::TEXTOID,
            pg_sys::VARCHAROID,
        ]
        .contains(&c.typid)
}

/// The list `row_json` reads: an object of the non-jsonb columns, then each
/// jsonb column; `value(n)` is the SQL for column n.
fn returned_object(info: &TableInfo, value: impl Fn(usize) -> String) -> String {
    let mut scalars = Vec::new();
    let mut docs = String::new();
    for (n, c) in info.columns.iter().enumerate() {
        if c.kind == Kind::Jsonb {
            let _ = write!(docs, ", {}", value(n));
        } else {
            scalars.push(format!("{}, {}", quote_literal(&c.name), value(n)));
        }
    }
    format!(
        "pg_catalog.jsonb_build_object({}){docs}",
        scalars.join(", ")
    )
}

/// Whether Citus manages the table (distributed, reference or Citus local).
/// Citus refuses a non-immutable function in the RETURNING list of a write
/// to such a table, and jsonb_build_object is stable (the text of a
/// timestamptz depends on TimeZone): the object is built on the coordinator,
/// in this session's settings, from the columns the shard returned. The
/// rest of the statement names the key columns by equality, so Citus routes
/// it to the one shard that holds the key.
fn citus_table(relid: pg_sys::Oid) -> bool {
    let present = Spi::get_one::<bool>(
        "SELECT pg_catalog.to_regclass('pg_catalog.pg_dist_partition') IS NOT NULL",
    );
    if present != Ok(Some(true)) {
        return false;
    }
    Spi::get_one_with_args::<bool>(
        "SELECT EXISTS (SELECT 1 FROM pg_catalog.pg_dist_partition
                         WHERE logicalrelid OPERATOR(pg_catalog.=) $1)",
        &[relid.into()],
    ) == Ok(Some(true))
}

/// jsonb-based columns take a jsonb parameter (the assignment applies any
/// domain); every other column a parameter of its own type.
pub fn param_type(c: &Column) -> pg_sys::Oid {
    if c.kind == Kind::Jsonb {
        pg_sys::JSONBOID
    } else {
        c.typid
    }
}

fn keep_plan(sql: &str, types: &[pg_sys::Oid]) -> pg_sys::SPIPlanPtr {
    let c = CString::new(sql).expect("generated SQL has no NUL");
    let mut types = types.to_vec();
    Spi::connect(|_| {
        // SAFETY: SPI is connected; the plan is moved out of the SPI
        // context by SPI_keepplan and freed by UpsertPlan's Drop.
        unsafe {
            let plan = pg_sys::SPI_prepare(c.as_ptr(), types.len() as i32, types.as_mut_ptr());
            if plan.is_null() || pg_sys::SPI_keepplan(plan) != 0 {
                raise(
                    PgSqlErrorCode::ERRCODE_INTERNAL_ERROR,
                    format!("merge_upsert could not prepare its statement: {sql}"),
                    None,
                );
            }
            plan
        }
    })
}

pub fn quote_ident(name: &str) -> String {
    let c = CString::new(name).unwrap_or_default();
    // SAFETY: quote_identifier returns its argument or a palloc'd copy.
    unsafe { std::ffi::CStr::from_ptr(pg_sys::quote_identifier(c.as_ptr())) }
        .to_string_lossy()
        .into_owned()
}

/// A string literal as the server's `quote_literal` writes it: a string
/// holding a backslash becomes `E'...'` with the backslash doubled, so no
/// setting of `standard_conforming_strings` lets a column name end it early.
pub fn quote_literal(s: &str) -> String {
    let c = CString::new(s).unwrap_or_default();
    // SAFETY: quote_literal_cstr returns a palloc'd, NUL-terminated copy.
    unsafe { std::ffi::CStr::from_ptr(pg_sys::quote_literal_cstr(c.as_ptr())) }
        .to_string_lossy()
        .into_owned()
}
