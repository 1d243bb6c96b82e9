//! Write policies: how `merge_upsert` and protected tables combine an
//! incoming row with the stored one.
//!
//! ```json
//! {"arrays": "union", "nulls": "keep", "paths": {"inventory": "replace"},
//!  "columns": {"notes": "replace", "external_data": {"arrays": "concat"}},
//!  "last_write_wins": "synced_at", "max_clock_skew": "2 minutes",
//!  "version": "row_version",
//!  "freshness": {"external_data": "external_data_written_at"}}
//! ```
//!
//! `arrays`, `nulls` and `paths` form the merge policy of every jsonb column
//! (see [`crate::merge::policy`]); `nulls` also decides whether NULL replaces
//! a stored value in the other columns. A column's object in `columns`
//! overrides those keys for that column. This module checks the document's
//! shape only; column names and types are checked against the table by the
//! SQL layer.

use crate::merge::policy::{Policy, PolicyError};
use serde_json::{Map, Value};

const TOP_KEYS: &str =
    "arrays, nulls, paths, columns, last_write_wins, max_clock_skew, stale, version, freshness";
const MERGE_KEYS: [&str; 3] = ["arrays", "nulls", "paths"];

/// How one column combines the incoming value with the stored one.
#[derive(Debug, Clone, PartialEq)]
pub enum ColumnRule {
    /// jsonb: deep merge under this merge policy (canonical JSON text);
    /// other types: write unless the incoming value is NULL.
    Merge {
        policy: String,
        nulls_overwrite: bool,
    },
    /// Write the incoming value as given, NULL included.
    Replace,
}

#[derive(Debug, Clone, Default, PartialEq)]
pub struct WritePolicy {
    /// `arrays`, `nulls`, `paths` of the document.
    merge: Map<String, Value>,
    columns: Vec<(String, ColumnOverride)>,
    pub last_write_wins: Option<String>,
    /// Interval text, read by PostgreSQL's interval input.
    pub max_clock_skew: Option<String>,
    /// `"stale": "skip"`: an UPDATE that last_write_wins ignores reports no
    /// row (`UPDATE 0`). By default (`"keep"`) the row counts as written and
    /// keeps its stored values, so RETURNING shows the stored row and an ORM
    /// that checks row counts goes on working.
    pub stale_skip: bool,
    pub version: Option<String>,
    /// `(jsonb column, companion column)` pairs.
    pub freshness: Vec<(String, String)>,
}

#[derive(Debug, Clone, PartialEq)]
enum ColumnOverride {
    Replace,
    Merge(Map<String, Value>),
}

fn err(message: String, hint: &str) -> PolicyError {
    PolicyError {
        message: format!("invalid write policy: {message}"),
        hint: hint.to_string(),
    }
}

fn column_name(v: &Value, at: &str) -> Result<String, PolicyError> {
    match v.as_str() {
        Some(s) if !s.is_empty() => Ok(s.to_string()),
        _ => Err(err(
            format!("\"{at}\" must be a column name, got {v}"),
            "give the column's name as a JSON string",
        )),
    }
}

/// Checks a merge-policy fragment by parsing it: errors name the column.
fn check_merge(m: &Map<String, Value>, at: &str) -> Result<(), PolicyError> {
    Policy::parse(&Value::Object(m.clone()))
        .map(|_| ())
        .map_err(|e| PolicyError {
            message: format!("{} (in {at})", e.message),
            hint: e.hint,
        })
}

impl WritePolicy {
    pub fn parse(doc: &Value) -> Result<WritePolicy, PolicyError> {
        let mut p = WritePolicy::default();
        let m = match doc {
            Value::Null => return Ok(p),
            Value::Object(m) => m,
            other => {
                return Err(err(
                    format!("must be a JSON object, got {other}"),
                    &format!("valid keys: {TOP_KEYS}"),
                ))
            }
        };
        for (k, v) in m {
            match k.as_str() {
                "arrays" | "nulls" | "paths" => {
                    p.merge.insert(k.clone(), v.clone());
                }
                "columns" => p.columns = parse_columns(v)?,
                "last_write_wins" => p.last_write_wins = Some(column_name(v, k)?),
                "version" => p.version = Some(column_name(v, k)?),
                "max_clock_skew" => match v.as_str() {
                    Some(s) => p.max_clock_skew = Some(s.to_string()),
                    None => {
                        return Err(err(
                            format!("\"max_clock_skew\" must be an interval string, got {v}"),
                            "for example \"5 minutes\"",
                        ))
                    }
                },
                "freshness" => p.freshness = parse_freshness(v)?,
                "stale" => {
                    p.stale_skip = match v.as_str() {
                        Some("keep") => false,
                        Some("skip") => true,
                        _ => {
                            return Err(err(
                                format!("\"stale\" must be \"keep\" or \"skip\", got {v}"),
                                "keep: an ignored stale write counts as written and keeps the stored row; skip: it reports no row",
                            ))
                        }
                    }
                }
                other => {
                    return Err(err(
                        format!("unknown key \"{other}\""),
                        &format!("valid keys: {TOP_KEYS}"),
                    ))
                }
            }
        }
        check_merge(&p.merge, "the top level")?;
        if p.stale_skip && p.last_write_wins.is_none() {
            return Err(err(
                "\"stale\" needs \"last_write_wins\"".to_string(),
                "a write is stale only under a last_write_wins timestamp column",
            ));
        }
        if p.max_clock_skew.is_some() && p.last_write_wins.is_none() {
            return Err(err(
                "\"max_clock_skew\" needs \"last_write_wins\"".to_string(),
                "the skew limit applies to the last_write_wins timestamp column",
            ));
        }
        Ok(p)
    }

    /// The rule of column `name`; `jsonb` says whether it is a jsonb column.
    pub fn rule(&self, name: &str, jsonb: bool) -> ColumnRule {
        let mut merge = self.merge.clone();
        match self.columns.iter().find(|(c, _)| c == name) {
            Some((_, ColumnOverride::Replace)) => return ColumnRule::Replace,
            Some((_, ColumnOverride::Merge(o))) => {
                merge.extend(o.iter().map(|(k, v)| (k.clone(), v.clone())))
            }
            None => {}
        }
        let nulls_overwrite = matches!(merge.get("nulls"), Some(Value::String(s)) if s != "keep");
        let policy = if jsonb {
            Value::Object(merge).to_string()
        } else {
            String::new()
        };
        ColumnRule::Merge {
            policy,
            nulls_overwrite,
        }
    }

    /// The columns given a merge policy of their own (an object with
    /// `arrays`, `nulls` or `paths`): it means something for jsonb only.
    pub fn merge_rule_columns(&self) -> impl Iterator<Item = &str> {
        self.columns.iter().filter_map(|(c, o)| match o {
            ColumnOverride::Merge(m) if m.keys().any(|k| k != "nulls") => Some(c.as_str()),
            _ => None,
        })
    }

    /// The columns that carry a guard: the last-write-wins timestamp, the
    /// version and the freshness companions. No write policy lets a NULL
    /// replace their stored values.
    pub fn guard_columns(&self) -> Vec<&str> {
        let mut out: Vec<&str> = self.last_write_wins.iter().map(String::as_str).collect();
        out.extend(self.version.iter().map(String::as_str));
        out.extend(self.freshness.iter().map(|(_, f)| f.as_str()));
        out
    }

    /// The policy of a `merge_upsert` call (`self`) on a table protected
    /// with `table`. The call chooses how values merge: its `arrays`,
    /// `nulls`, `paths` and column rules override the table's, key by key
    /// (so `{}` is the table's policy). The table's guards hold: a call may
    /// add a guard the table lacks, repeat one, never change or drop one.
    pub fn under(&self, table: &WritePolicy) -> Result<WritePolicy, PolicyError> {
        let hint = "A call's policy chooses how values merge; the guards of a protected table come from syncguard.protect. Leave them out of the call, or run protect again to change them.";
        let contradicts = |what: &str, table_v: &str, call_v: &str| {
            err(
                format!("the call's \"{what}\" ({call_v}) contradicts the table's protection ({table_v})"),
                hint,
            )
        };
        let mut p = table.clone();
        p.stale_skip |= self.stale_skip;
        p.merge
            .extend(self.merge.iter().map(|(k, v)| (k.clone(), v.clone())));
        for (c, o) in &self.columns {
            match p.columns.iter_mut().find(|(t, _)| t == c) {
                Some(slot) => slot.1 = o.clone(),
                None => p.columns.push((c.clone(), o.clone())),
            }
        }
        for (what, mine, theirs) in [
            (
                "last_write_wins",
                &self.last_write_wins,
                &mut p.last_write_wins,
            ),
            ("version", &self.version, &mut p.version),
            (
                "max_clock_skew",
                &self.max_clock_skew,
                &mut p.max_clock_skew,
            ),
        ] {
            match (mine, theirs.as_ref()) {
                (None, _) => {}
                (Some(m), None) if what == "max_clock_skew" && table.last_write_wins.is_some() => {
                    return Err(contradicts(
                        what,
                        "the server's syncguard.max_clock_skew",
                        m,
                    ))
                }
                (Some(m), None) => *theirs = Some(m.clone()),
                (Some(m), Some(t)) if m == t => {}
                (Some(m), Some(t)) => return Err(contradicts(what, t, m)),
            }
        }
        for (doc, companion) in &self.freshness {
            match p.freshness.iter().find(|(d, _)| d == doc) {
                Some((_, f)) if f == companion => {}
                Some((_, f)) => {
                    return Err(contradicts(&format!("freshness of {doc}"), f, companion))
                }
                None => p.freshness.push((doc.clone(), companion.clone())),
            }
        }
        check_merge(&p.merge, "the top level")?;
        Ok(p)
    }

    /// Every column the policy names, with the key that names it, so the
    /// SQL layer can check each against the table.
    pub fn named_columns(&self) -> Vec<(&'static str, &str)> {
        let mut out: Vec<(&'static str, &str)> = self
            .columns
            .iter()
            .map(|(c, _)| ("columns", c.as_str()))
            .collect();
        out.extend(
            self.last_write_wins
                .iter()
                .map(|c| ("last_write_wins", c.as_str())),
        );
        out.extend(self.version.iter().map(|c| ("version", c.as_str())));
        for (j, f) in &self.freshness {
            out.push(("freshness", j.as_str()));
            out.push(("freshness", f.as_str()));
        }
        out
    }
}

fn parse_columns(v: &Value) -> Result<Vec<(String, ColumnOverride)>, PolicyError> {
    let hint = "\"columns\" maps a column name to \"merge\", \"replace\" or an object with arrays, nulls, paths";
    let Value::Object(m) = v else {
        return Err(err(format!("\"columns\" must be an object, got {v}"), hint));
    };
    let mut out = Vec::with_capacity(m.len());
    for (col, rule) in m {
        let o = match rule {
            Value::String(s) if s == "replace" => ColumnOverride::Replace,
            Value::String(s) if s == "merge" => ColumnOverride::Merge(Map::new()),
            Value::Object(o) => {
                if let Some(k) = o.keys().find(|k| !MERGE_KEYS.contains(&k.as_str())) {
                    return Err(err(
                        format!("unknown key \"{k}\" in the rule of column \"{col}\""),
                        "a column's object may hold arrays, nulls, paths",
                    ));
                }
                check_merge(o, &format!("column \"{col}\""))?;
                ColumnOverride::Merge(o.clone())
            }
            other => {
                return Err(err(format!("rule of column \"{col}\" is {other}"), hint));
            }
        };
        out.push((col.clone(), o));
    }
    Ok(out)
}

fn parse_freshness(v: &Value) -> Result<Vec<(String, String)>, PolicyError> {
    let hint = "\"freshness\" maps a jsonb column to the jsonb column that records when each of its keys was written";
    let Value::Object(m) = v else {
        return Err(err(
            format!("\"freshness\" must be an object, got {v}"),
            hint,
        ));
    };
    let mut out = Vec::with_capacity(m.len());
    for (col, companion) in m {
        let companion = column_name(companion, "freshness")?;
        if &companion == col {
            return Err(err(
                format!("column \"{col}\" cannot record its own freshness"),
                hint,
            ));
        }
        out.push((col.clone(), companion));
    }
    Ok(out)
}

#[cfg(test)]
#[path = "write_policy_tests.rs"]
mod tests;
