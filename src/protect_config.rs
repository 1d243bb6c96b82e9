//! A protection configuration (the trigger's second argument: columns and
//! write policy) resolved against the table: what the trigger does per
//! column, cached per table until the configuration or the table changes.

use crate::conflict;
use crate::errors::raise;
use crate::jsonb_arg::JsonbRaw;
use crate::merge::policy::Policy;
use crate::merge::text;
use crate::policy_args::{check_policy_columns, parse_config};
use crate::regclass::RegClass;
use crate::table_info::{self, Kind, TableInfo};
use crate::write_policy::ColumnRule;
use pgrx::prelude::*;
use serde_json::Value as Json;
use std::cell::RefCell;
use std::collections::HashMap;
use std::rc::Rc;

/// What the trigger does for one protected column.
pub enum Protected {
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
pub struct Resolved {
    pub columns: Vec<Protected>,
    pub lww: Option<(usize, i64)>,
    /// An ignored stale write reports no row (`"stale": "skip"`).
    pub stale_skip: bool,
    pub version: Option<(usize, pg_sys::Oid)>,
    pub freshness: Vec<(usize, usize)>,
}

fn resolve(info: &TableInfo, cfg: &str) -> Resolved {
    let (names, wp) = parse_config(cfg);
    check_policy_columns(info, &wp);
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
            .map(|c| (attnum(c), conflict::skew_micros(&wp))),
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

pub fn resolved(relid: pg_sys::Oid, cfg: &str) -> Rc<Resolved> {
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
#[pg_extern(volatile, parallel_unsafe, name = "_protect_config")]
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
