//! `merge_upsert`: one `INSERT … ON CONFLICT … DO UPDATE` whose SET list
//! deep-merges jsonb columns and keeps stored values from NULLs.
//!
//! The statement is generated from the table's catalog entry, the key and
//! data column names and the write policy, prepared once and kept
//! (`SPI_keepplan`) per backend: a repeated call converts the values and
//! executes the saved plan. Relcache invalidation of the table drops its
//! plans (see [`crate::table_info`]). Every name in the generated SQL is
//! quoted and schema-qualified, operators included, so the caller's
//! search_path cannot redirect it.

use crate::conflict;
use crate::errors::{self, corrupt, raise, raise_own, OwnError};
use crate::jsonb_arg::JsonbRaw;
use crate::merge::jsonb::{Container, Item, Kind as JKind, Value, Writer};
use crate::merge::{numeric, text};
use crate::merging;
use crate::policy_args::{check_policy_columns, config_policy, parse_policy};
use crate::regclass::RegClass;
use crate::table_info::{self, Column, Kind, TableInfo};
use crate::write_policy::{ColumnRule, WritePolicy};
use pgrx::pg_sys::panic::{CaughtError, ErrorReport};
use pgrx::prelude::*;
use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::ffi::CString;
use std::fmt::Write as _;
use std::rc::Rc;

/// A prepared upsert for one table, column list and policy.
struct UpsertPlan {
    table: Rc<TableInfo>,
    plan: pg_sys::SPIPlanPtr,
    /// Reads the stored row (and its version) by key when the upsert's
    /// WHERE refused the write.
    lookup: Option<pg_sys::SPIPlanPtr>,
    /// Index into `table.columns` of each parameter, key columns first.
    params: Vec<usize>,
    n_key: usize,
    /// Parameter index of the last-write-wins timestamp, and the skew limit.
    lww: Option<(usize, i64)>,
    /// Parameter index and type of the version column.
    version: Option<(usize, pg_sys::Oid)>,
    /// A Citus table: the upsert returns the stored columns as they are and
    /// this statement, run on the coordinator, builds the returned object
    /// from them (see `citus_table`).
    build: Option<pg_sys::SPIPlanPtr>,
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

thread_local! {
    static PLANS: RefCell<HashMap<(pg_sys::Oid, Vec<u8>), Rc<UpsertPlan>>> = RefCell::new(HashMap::new());
    /// The column being converted, for the error message.
    static CONVERTING: Cell<usize> = const { Cell::new(usize::MAX) };
}

fn bad_input(message: String) -> ! {
    raise(
        PgSqlErrorCode::ERRCODE_INVALID_PARAMETER_VALUE,
        message,
        None,
    )
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
    let Some(target) = target else {
        raise(
            PgSqlErrorCode::ERRCODE_NULL_VALUE_NOT_ALLOWED,
            "merge_upsert: target must not be NULL".into(),
            Some("Pass the table, e.g. 'profiles'::regclass."),
        )
    };
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
    let keys = object_pairs(&key, "key");
    let cols = object_pairs(&data, "data");
    if keys.is_empty() {
        bad_input("merge_upsert: key must name at least one column".into());
    }
    let plan = plan_for(target.0, &keys, &cols, policy.as_ref());
    let outcome = execute(&plan, &keys, &cols);
    // Raised here, where nothing is left to drop but `plan`, released first.
    match outcome {
        Ok(row) => row,
        Err(e) => {
            drop((plan, keys, cols));
            drop((key, data, policy));
            raise_own(e)
        }
    }
}

/// The cache key: column names in order, then the policy's source.
fn cache_key(keys: &[(&str, Item)], cols: &[(&str, Item)], policy: &[u8]) -> Vec<u8> {
    let mut k = Vec::with_capacity(64 + policy.len());
    for (n, _) in keys {
        k.extend_from_slice(n.as_bytes());
        k.push(0);
    }
    k.push(1);
    for (n, _) in cols {
        k.extend_from_slice(n.as_bytes());
        k.push(0);
    }
    k.push(1);
    k.extend_from_slice(policy);
    k
}

fn plan_for(
    relid: pg_sys::Oid,
    keys: &[(&str, Item)],
    cols: &[(&str, Item)],
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

fn prepare(
    info: Rc<TableInfo>,
    keys: &[(&str, Item)],
    cols: &[(&str, Item)],
    wp: &WritePolicy,
) -> UpsertPlan {
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
    let key_idx: Vec<usize> = keys.iter().map(|(n, _)| index_of(n)).collect();
    let mut key_attnums: Vec<i16> = key_idx.iter().map(|&i| info.columns[i].attnum).collect();
    key_attnums.sort_unstable();
    if !info.unique_keys.contains(&key_attnums) {
        let names: Vec<&str> = keys.iter().map(|(n, _)| *n).collect();
        raise(
            PgSqlErrorCode::ERRCODE_INVALID_COLUMN_REFERENCE,
            format!(
                "merge_upsert: no unique index of {} has exactly the key columns ({})",
                info.qualified,
                names.join(", ")
            ),
            Some("key must name all columns of one unique index (or primary key) without a predicate, and no others."),
        );
    }
    check_policy_columns(&info, wp);
    // Data columns that are not key columns become parameters after the keys.
    let mut params = key_idx.clone();
    let mut data_idx = Vec::new();
    for (n, _) in cols {
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
            "syncguard.freshness_stamp(NULL, ${}, pg_catalog.now())",
            p + 1
        ));
        sets.push(format!(
            "{f} = syncguard.freshness_stamp(sg_t.{f}, EXCLUDED.{d}, pg_catalog.now())"
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
    // column; they are returned as they are and spliced in by `row_json`.
    let build = if citus_table(info.relid) {
        let all: Vec<String> = info
            .columns
            .iter()
            .map(|c| format!("sg_t.{}", quote_ident(&c.name)))
            .collect();
        let _ = write!(sql, " RETURNING {}", all.join(", "));
        let types: Vec<pg_sys::Oid> = info.columns.iter().map(|c| c.typid).collect();
        let select = format!(
            "SELECT {}",
            returned_object(&info, |n| format!("${}", n + 1))
        );
        Some(keep_plan(&select, &types))
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
    }
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
fn param_type(c: &Column) -> pg_sys::Oid {
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
fn quote_literal(s: &str) -> String {
    let c = CString::new(s).unwrap_or_default();
    // SAFETY: quote_literal_cstr returns a palloc'd, NUL-terminated copy.
    unsafe { std::ffi::CStr::from_ptr(pg_sys::quote_literal_cstr(c.as_ptr())) }
        .to_string_lossy()
        .into_owned()
}

/// A JSON value as text: strings unquoted, containers as JSON.
fn json_text(item: Item) -> String {
    match item.value().unwrap_or_else(|_| corrupt()) {
        Value::Null => String::new(),
        Value::Bool(b) => b.to_string(),
        Value::String(s) => String::from_utf8_lossy(s).into_owned(),
        Value::Numeric(n) => numeric::to_text(n).unwrap_or_else(|_| corrupt()),
        Value::Container(_) => {
            let root = Writer::root_from_item(item).unwrap_or_else(|_| corrupt());
            text::to_text(&root[4..]).unwrap_or_else(|_| corrupt())
        }
    }
}

/// The text PostgreSQL's input functions get for a JSON value.
fn item_text(item: Item, c: &Column) -> String {
    let Some((kind, _)) = item.container_kind() else {
        return json_text(item);
    };
    match (kind, c.kind) {
        (JKind::Array, Kind::Array) | (JKind::Object, Kind::Composite) => {
            crate::composite::literal(item, c.typid, &json_text)
        }
        (_, Kind::Json) => json_text(item),
        _ => raise(
            PgSqlErrorCode::ERRCODE_DATATYPE_MISMATCH,
            format!(
                "column \"{}\" is of type {}: a JSON {} cannot be stored in it",
                c.name,
                c.type_name,
                if kind == JKind::Object {
                    "object"
                } else {
                    "array"
                }
            ),
            Some("Only json, jsonb and composite columns take objects; array columns take JSON arrays."),
        ),
    }
}

/// Converts one JSON value to the column's datum (never NULL: callers
/// handle JSON null).
fn to_datum(item: Item, c: &Column) -> pg_sys::Datum {
    if c.kind == Kind::Jsonb {
        // A container is a root as it stands; a scalar needs its wrapper.
        let datum = if item.ty == crate::merge::jsonb::T_CONTAINER {
            JsonbRaw::from_container(item.data)
        } else {
            JsonbRaw::from_built(&Writer::root_from_item(item).unwrap_or_else(|_| corrupt()))
        };
        return datum.into_datum().unwrap();
    }
    let text = CString::new(item_text(item, c).replace('\0', "")).unwrap_or_default();
    // SAFETY: the type's own input function, with its I/O parameter and the
    // column's typmod; errors are caught by the caller to name the column.
    unsafe {
        pg_sys::OidInputFunctionCall(c.typinput, text.as_ptr() as *mut _, c.typioparam, c.typmod)
    }
}

/// The parameter values, converted; an error names the column.
fn convert(
    plan: &UpsertPlan,
    keys: &[(&str, Item)],
    cols: &[(&str, Item)],
) -> (Vec<pg_sys::Datum>, Vec<std::ffi::c_char>) {
    let info = &plan.table;
    let n = plan.params.len();
    PgTryBuilder::new(|| {
        let mut values = vec![pg_sys::Datum::from(0); n];
        let mut nulls = vec![b'n' as std::ffi::c_char; n];
        for (p, &ci) in plan.params.iter().enumerate() {
            let c = &info.columns[ci];
            CONVERTING.set(ci);
            let item = if p < plan.n_key {
                let (_, k) = keys[p];
                if k.is_null() {
                    bad_input(format!(
                        "merge_upsert: key column \"{}\" must not be null",
                        c.name
                    ));
                }
                if let Some((_, d)) = cols.iter().find(|(name, _)| *name == c.name) {
                    if d.ty != k.ty || d.data != k.data {
                        bad_input(format!(
                            "merge_upsert: column \"{}\" has one value in key and another in data",
                            c.name
                        ));
                    }
                }
                k
            } else {
                cols.iter()
                    .find(|(name, _)| *name == c.name)
                    .map(|(_, v)| *v)
                    .unwrap()
            };
            if !item.is_null() {
                values[p] = to_datum(item, c);
                nulls[p] = b' ' as std::ffi::c_char;
            }
        }
        CONVERTING.set(usize::MAX);
        (values, nulls)
    })
    .catch_others(|e| {
        let at = CONVERTING.replace(usize::MAX);
        let (CaughtError::PostgresError(r) | CaughtError::ErrorReport(r)) = &e else {
            e.rethrow()
        };
        if at == usize::MAX
            || r.message().starts_with("merge_upsert")
            || r.message().starts_with("column \"")
        {
            e.rethrow()
        }
        let mut report = ErrorReport::new(
            r.sql_error_code(),
            format!(
                "column \"{}\" of {}: {}",
                info.columns[at].name,
                info.qualified,
                r.message()
            ),
            "syncguard",
        );
        if let Some(d) = r.detail() {
            report = report.set_detail(d);
        }
        if let Some(h) = r.hint() {
            report = report.set_hint(h);
        }
        report.report(PgLogLevel::ERROR);
        unreachable!()
    })
    .execute()
}

fn execute(
    plan: &Rc<UpsertPlan>,
    keys: &[(&str, Item)],
    cols: &[(&str, Item)],
) -> Result<Option<JsonbRaw>, OwnError> {
    let (mut values, nulls) = convert(plan, keys, cols);
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
            (true, Some(row_json(&plan.table)))
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

/// Runs `build` over the row the upsert returned (every column, in
/// order); its result is then the SPI tuple table `row_json` reads.
unsafe fn build_on_coordinator(build: pg_sys::SPIPlanPtr, ncols: usize) {
    unsafe {
        let tt = &*pg_sys::SPI_tuptable;
        let vals = pg_sys::palloc(ncols.max(1) * 8) as *mut pg_sys::Datum;
        let nls = pg_sys::palloc(ncols.max(1)) as *mut std::ffi::c_char;
        for i in 0..ncols {
            let mut isnull = false;
            *vals.add(i) = pg_sys::SPI_getbinval(*tt.vals, tt.tupdesc, i as i32 + 1, &mut isnull);
            *nls.add(i) = if isnull { b'n' } else { b' ' } as std::ffi::c_char;
        }
        let rc = errors::spi_execute_plan(build, vals, nls);
        if rc != pg_sys::SPI_OK_SELECT as i32 || pg_sys::SPI_processed != 1 {
            pg_sys::SPI_finish();
            raise(
                PgSqlErrorCode::ERRCODE_INTERNAL_ERROR,
                format!("merge_upsert: SPI returned {rc} building the stored row"),
                None,
            );
        }
    }
}

/// The returned row as one jsonb object (a [`Writer`] buffer) from the
/// RETURNING list: an object of the other columns, then each jsonb
/// column's value, merged in jsonb key order.
unsafe fn row_json(info: &TableInfo) -> Vec<u8> {
    unsafe {
        let tt = &*pg_sys::SPI_tuptable;
        let mut isnull = false;
        let base = pg_sys::SPI_getbinval(*tt.vals, tt.tupdesc, 1, &mut isnull);
        let base = JsonbRaw::from_datum(base, isnull).unwrap_or_else(|| corrupt());
        let base = Container::new(base.container()).unwrap_or_else(|_| corrupt());
        let mut pairs: Vec<(&[u8], Item)> = Vec::with_capacity(info.columns.len());
        let mut it = base.pairs();
        while let Some(p) = it.next_pair() {
            pairs.push(p);
        }
        let docs: Vec<Option<JsonbRaw>> = (0..info
            .columns
            .iter()
            .filter(|c| c.kind == Kind::Jsonb)
            .count())
            .map(|i| {
                let d = pg_sys::SPI_getbinval(*tt.vals, tt.tupdesc, i as i32 + 2, &mut isnull);
                JsonbRaw::from_datum(d, isnull)
            })
            .collect();
        let names = info
            .columns
            .iter()
            .filter(|c| c.kind == Kind::Jsonb)
            .map(|c| c.name.as_bytes());
        for (name, doc) in names.zip(&docs) {
            let item = match doc {
                None => Item {
                    ty: crate::merge::jsonb::T_NULL,
                    data: &[],
                },
                Some(d) => {
                    let c = Container::new(d.container()).unwrap_or_else(|_| corrupt());
                    if c.kind() == JKind::Scalar {
                        c.scalar().unwrap_or_else(|_| corrupt())
                    } else {
                        Item {
                            ty: crate::merge::jsonb::T_CONTAINER,
                            data: d.container(),
                        }
                    }
                }
            };
            pairs.push((name, item));
        }
        pairs.sort_by(|a, b| crate::merge::jsonb::key_cmp(a.0, b.0));
        let size: usize = pairs.iter().map(|(k, v)| k.len() + v.data.len() + 8).sum();
        let mut w = Writer::with_capacity(size + 16);
        let built = (|| {
            let mut o = w.open(JKind::Object, pairs.len())?;
            for (k, _) in &pairs {
                w.push_string(&mut o, k)?;
            }
            for (_, v) in &pairs {
                w.push_item(&mut o, *v)?;
            }
            Ok::<(), crate::merge::jsonb::WriteError>(())
        })();
        if built.is_err() {
            raise(
                PgSqlErrorCode::ERRCODE_PROGRAM_LIMIT_EXCEEDED,
                "merge_upsert: the stored row is too large for one jsonb value".into(),
                None,
            );
        }
        w.into_inner()
    }
}

/// Column `i` of the first SPI result row, copied out of SPI's memory.
unsafe fn first_value(i: i32) -> Option<pg_sys::Datum> {
    unsafe {
        let tt = &*pg_sys::SPI_tuptable;
        let mut isnull = false;
        let d = pg_sys::SPI_getbinval(*tt.vals, tt.tupdesc, i + 1, &mut isnull);
        (!isnull).then(|| pg_sys::SPI_datumTransfer(d, false, -1))
    }
}

unsafe fn text_value(i: i32) -> Option<String> {
    unsafe {
        let tt = &*pg_sys::SPI_tuptable;
        let p = pg_sys::SPI_getvalue(*tt.vals, tt.tupdesc, i + 1);
        (!p.is_null()).then(|| std::ffi::CStr::from_ptr(p).to_string_lossy().into_owned())
    }
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
