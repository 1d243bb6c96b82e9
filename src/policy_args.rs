//! Write policies as SQL hands them over, a `policy` argument of
//! `merge_upsert` or the configuration in a protection trigger's arguments,
//! parsed and checked against the table.

use crate::errors::{corrupt, raise};
use crate::jsonb_arg::JsonbRaw;
use crate::merge::text;
use crate::table_info::{Kind, TableInfo};
use crate::write_policy::WritePolicy;
use pgrx::prelude::*;
use serde_json::Value as Json;

pub fn parse_policy(p: &JsonbRaw) -> WritePolicy {
    let text = text::to_text(p.container()).unwrap_or_else(|_| corrupt());
    let doc: serde_json::Value = serde_json::from_str(&text).unwrap_or_else(|_| corrupt());
    WritePolicy::parse(&doc).unwrap_or_else(|e| {
        raise(
            PgSqlErrorCode::ERRCODE_INVALID_PARAMETER_VALUE,
            e.message,
            Some(&e.hint),
        )
    })
}

/// The configuration argument: `{"columns": [...] | null, "policy": {...}}`.
pub fn parse_config(cfg: &str) -> (Option<Vec<String>>, WritePolicy) {
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

/// Checks the policy's named columns against the table (shared with `protect`).
pub fn check_policy_columns(info: &TableInfo, wp: &WritePolicy) {
    for name in wp.merge_rule_columns() {
        let c = info.require(name);
        if !c.kind.is_document() {
            raise(
                PgSqlErrorCode::ERRCODE_INVALID_PARAMETER_VALUE,
                format!(
                    "invalid write policy: column \"{name}\" of {} is {}, and arrays and paths merge jsonb only",
                    info.qualified, c.type_name
                ),
                Some("Give it \"merge\" or \"replace\", or {\"nulls\": …}."),
            );
        }
    }
    for (at, name) in wp.named_columns() {
        let c = info.require(name);
        let ok = match at {
            "last_write_wins" => c.typid == pg_sys::TIMESTAMPTZOID,
            "version" => matches!(c.typid, pg_sys::INT2OID | pg_sys::INT4OID | pg_sys::INT8OID),
            "freshness" => c.kind == Kind::Jsonb,
            _ => true,
        };
        if !ok {
            let want = match at {
                "last_write_wins" => "timestamptz",
                "version" => "smallint, integer or bigint",
                _ => "jsonb",
            };
            raise(
                PgSqlErrorCode::ERRCODE_DATATYPE_MISMATCH,
                format!(
                    "write policy \"{at}\" names column \"{name}\" of {}, which is {}, not {want}",
                    info.qualified, c.type_name
                ),
                None,
            );
        }
    }
}
