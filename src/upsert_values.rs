//! The JSON values of a `merge_upsert` call converted to the datums of the
//! statement's parameters, as `jsonb_populate_record` converts them; an
//! error names the column.

use crate::errors::{bad_input, corrupt, raise, SqlError};
use crate::jsonb_arg::JsonbRaw;
use crate::merge::jsonb::{Item, Kind as JKind, Value, Writer};
use crate::merge::{numeric, text};
use crate::table_info::{Column, Kind};
use crate::upsert_statement::UpsertPlan;
use pgrx::pg_sys::panic::CaughtError;
use pgrx::prelude::*;
use std::cell::Cell;
use std::ffi::CString;

thread_local! {
    /// The column whose value a type's input function is converting, for
    /// the error message; usize::MAX outside those calls, where errors are
    /// syncguard's own and already name the column.
    static CONVERTING: Cell<usize> = const { Cell::new(usize::MAX) };
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

/// Refuses a JSON object or array for a column that cannot take it.
fn check_shape(item: Item, c: &Column) {
    let Some((kind, _)) = item.container_kind() else {
        return;
    };
    match (kind, c.kind) {
        (JKind::Array, Kind::Array)
        | (JKind::Object, Kind::Composite)
        | (_, Kind::Json | Kind::Jsonb) => {}
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

/// The text PostgreSQL's input functions get for a JSON value of the shape
/// [`check_shape`] allows.
fn item_text(item: Item, c: &Column) -> String {
    match item.container_kind() {
        Some(_) if c.kind != Kind::Json => crate::composite::literal(item, c.typid, &json_text),
        _ => json_text(item),
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

/// merge_upsert's error for a key column given no value.
pub fn key_is_null(column: &str) -> ! {
    bad_input(format!(
        "merge_upsert: key column \"{column}\" must not be null"
    ))
}

/// The parameter values, converted; an error names the column.
pub fn convert(
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
            let item = if p < plan.n_key {
                let (_, k) = keys[p];
                if k.is_null() {
                    key_is_null(&c.name);
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
                check_shape(item, c);
                // An error from here on comes from the type's input function.
                CONVERTING.set(ci);
                values[p] = to_datum(item, c);
                CONVERTING.set(usize::MAX);
                nulls[p] = b' ' as std::ffi::c_char;
            }
        }
        (values, nulls)
    })
    .catch_others(|e| {
        let at = CONVERTING.replace(usize::MAX);
        let (CaughtError::PostgresError(r) | CaughtError::ErrorReport(r)) = &e else {
            e.rethrow()
        };
        if at == usize::MAX {
            e.rethrow()
        }
        let mut error = SqlError::new(
            r.sql_error_code(),
            format!(
                "column \"{}\" of {}: {}",
                info.columns[at].name,
                info.qualified,
                r.message()
            ),
        );
        error.detail = r.detail().map(str::to_string);
        error.hint = r.hint().map(str::to_string);
        error.raise()
    })
    .execute()
}
