//! Merge policies: what `jsonb_deep_merge` does with arrays, nulls and
//! individual paths.
//!
//! ```json
//! {"arrays": "replace | concat | union | merge_by:<field>",
//!  "nulls":  "keep | overwrite | delete",
//!  "paths":  {"inventory": "replace", "prices.*": "max",
//!             "items": "merge_by:sku", "profile": {"nulls": "delete"}}}
//! ```
//!
//! A path is a dot-separated list of object keys; `*` matches any one key and
//! `\.`, `\*`, `\\` escape those characters. Arrays merged with `merge_by` are
//! transparent to paths: `items.qty` addresses `qty` inside each element of
//! `items`. A path rule is a string (`keep`, `replace`, `max`, `min`, `merge`
//! set the value rule; `concat`, `union`, `merge_by:<field>` the array mode)
//! or an object with any of `value`, `arrays`, `nulls`. The array and null
//! modes a path sets hold for its whole subtree; its value rule only for the
//! value at the path. When several paths match, the more specific one wins:
//! compared segment by segment from the left, an exact key beats `*`.
//!
//! Policies are parsed with serde_json: they are small and parsed once per
//! distinct policy (the SQL layer caches them), far from the hot path.

use serde_json::{Map, Value};
use std::collections::HashMap;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ArrayMode {
    Replace,
    Concat,
    Union,
    /// Merge object elements with equal values of this key.
    MergeBy(Vec<u8>),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NullMode {
    /// A JSON null in the patch never replaces a stored value (default).
    Keep,
    Overwrite,
    /// A JSON null deletes the key (RFC 7396).
    Delete,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ValueRule {
    /// Objects merge recursively, arrays by array mode, otherwise the patch wins.
    Merge,
    /// The stored value wins when present and not null.
    Keep,
    /// The patch value replaces the stored one whole.
    Replace,
    Max,
    Min,
}

/// A path rule: each field set overrides what the path would otherwise get.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Rule {
    pub value: Option<ValueRule>,
    pub arrays: Option<ArrayMode>,
    pub nulls: Option<NullMode>,
}

#[derive(Debug, Default)]
struct Node {
    exact: HashMap<Vec<u8>, usize>,
    wildcard: Option<usize>,
    rule: Option<Rule>,
    /// One bit per segment, most significant first: 1 = exact key. Among
    /// nodes of equal depth a larger value is more specific.
    specificity: u64,
}

/// A parsed policy. `Policy::default()` is the default deep merge.
#[derive(Debug)]
pub struct Policy {
    pub arrays: ArrayMode,
    pub nulls: NullMode,
    nodes: Vec<Node>,
    /// Some rule anywhere deletes nulls: inserted subtrees must be walked.
    pub any_delete: bool,
    /// RFC 7396 exactly: a patch object replaces a stored non-object even
    /// when empty. Otherwise an empty patch object, like a null, carries
    /// nothing to store and leaves a stored value alone.
    pub rfc7396: bool,
}

impl Default for Policy {
    fn default() -> Self {
        Policy {
            arrays: ArrayMode::Replace,
            nulls: NullMode::Keep,
            nodes: vec![Node::default()],
            any_delete: false,
            rfc7396: false,
        }
    }
}

/// Why a policy was rejected: names the offending part and the valid choices.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PolicyError {
    pub message: String,
    pub hint: String,
}

const TOP_KEYS: &str = "arrays, nulls, paths";
const RULE_KEYS: &str = "value, arrays, nulls";
const ARRAY_CHOICES: &str = "replace, concat, union, merge_by:<field>";
const NULL_CHOICES: &str = "keep, overwrite, delete";
const VALUE_CHOICES: &str = "merge, keep, replace, max, min";
const SHORTHAND_CHOICES: &str = "merge, keep, replace, max, min, concat, union, merge_by:<field>, or an object with value, arrays, nulls";
/// Deeper paths could not be ranked in a u64 and are not useful.
pub const MAX_PATH_SEGMENTS: usize = 64;

fn err(message: String, hint: &str) -> PolicyError {
    PolicyError {
        message: format!("invalid merge policy: {message}"),
        hint: hint.to_string(),
    }
}

fn describe(v: &Value) -> String {
    match v {
        Value::String(s) => format!("\"{s}\""),
        other => other.to_string(),
    }
}

fn parse_arrays(v: &Value, at: &str) -> Result<ArrayMode, PolicyError> {
    let hint = format!("valid choices for {at}: {ARRAY_CHOICES}");
    let s = v
        .as_str()
        .ok_or_else(|| err(format!("{at} must be a string, got {}", describe(v)), &hint))?;
    match s {
        "replace" => Ok(ArrayMode::Replace),
        "concat" => Ok(ArrayMode::Concat),
        "union" => Ok(ArrayMode::Union),
        _ => match s.strip_prefix("merge_by:") {
            Some(field) if !field.is_empty() => Ok(ArrayMode::MergeBy(field.as_bytes().to_vec())),
            _ => Err(err(
                format!("{at} has unknown value {}", describe(v)),
                &hint,
            )),
        },
    }
}

fn parse_nulls(v: &Value, at: &str) -> Result<NullMode, PolicyError> {
    let hint = format!("valid choices for {at}: {NULL_CHOICES}");
    match v.as_str() {
        Some("keep") => Ok(NullMode::Keep),
        Some("overwrite") => Ok(NullMode::Overwrite),
        Some("delete") => Ok(NullMode::Delete),
        _ => Err(err(
            format!("{at} has unknown value {}", describe(v)),
            &hint,
        )),
    }
}

fn value_rule(s: &str) -> Option<ValueRule> {
    Some(match s {
        "merge" => ValueRule::Merge,
        "keep" => ValueRule::Keep,
        "replace" => ValueRule::Replace,
        "max" => ValueRule::Max,
        "min" => ValueRule::Min,
        _ => return None,
    })
}

fn parse_rule(v: &Value, path: &str) -> Result<Rule, PolicyError> {
    let at = format!("the rule for path \"{path}\"");
    match v {
        Value::String(s) => {
            if let Some(value) = value_rule(s) {
                return Ok(Rule {
                    value: Some(value),
                    ..Rule::default()
                });
            }
            let arrays = parse_arrays(v, &at).map_err(|_| {
                err(
                    format!("{at} has unknown value {}", describe(v)),
                    &format!("valid choices for {at}: {SHORTHAND_CHOICES}"),
                )
            })?;
            Ok(Rule {
                arrays: Some(arrays),
                ..Rule::default()
            })
        }
        Value::Object(m) => {
            let mut rule = Rule::default();
            for (k, v) in m {
                match k.as_str() {
                    "value" => {
                        let r = v.as_str().and_then(value_rule).ok_or_else(|| {
                            err(
                                format!("\"value\" in {at} has unknown value {}", describe(v)),
                                &format!("valid choices: {VALUE_CHOICES}"),
                            )
                        })?;
                        rule.value = Some(r);
                    }
                    "arrays" => {
                        rule.arrays = Some(parse_arrays(v, &format!("\"arrays\" in {at}"))?)
                    }
                    "nulls" => rule.nulls = Some(parse_nulls(v, &format!("\"nulls\" in {at}"))?),
                    _ => {
                        return Err(err(
                            format!("unknown key \"{k}\" in {at}"),
                            &format!("valid keys: {RULE_KEYS}"),
                        ))
                    }
                }
            }
            Ok(rule)
        }
        _ => Err(err(
            format!("{at} must be a string or an object, got {}", describe(v)),
            &format!("valid choices: {SHORTHAND_CHOICES}"),
        )),
    }
}

/// Splits `a.b\.c.*` into segments; `None` marks a wildcard.
fn split_path(path: &str) -> Result<Vec<Option<Vec<u8>>>, PolicyError> {
    let bad = |why: &str| {
        err(format!("path \"{path}\" {why}"), "a path is object keys separated by dots; * matches any key; escape . * \\ with a backslash")
    };
    let mut segs = Vec::new();
    let mut cur = Vec::new();
    let mut escaped_any = false;
    let mut chars = path.chars();
    let mut push = |cur: &mut Vec<u8>, escaped: bool| -> Result<(), PolicyError> {
        if cur.is_empty() && !escaped {
            return Err(bad("has an empty segment"));
        }
        let seg = std::mem::take(cur);
        segs.push(if seg == b"*" && !escaped {
            None
        } else {
            Some(seg)
        });
        Ok(())
    };
    while let Some(c) = chars.next() {
        match c {
            '\\' => match chars.next() {
                Some(e @ ('.' | '*' | '\\')) => {
                    let mut b = [0; 4];
                    cur.extend_from_slice(e.encode_utf8(&mut b).as_bytes());
                    escaped_any = true;
                }
                _ => return Err(bad("has a backslash not followed by . * or \\")),
            },
            '.' => {
                push(&mut cur, escaped_any)?;
                escaped_any = false;
            }
            _ => {
                let mut b = [0; 4];
                cur.extend_from_slice(c.encode_utf8(&mut b).as_bytes());
            }
        }
    }
    push(&mut cur, escaped_any)?;
    if segs.len() > MAX_PATH_SEGMENTS {
        return Err(bad(&format!("has more than {MAX_PATH_SEGMENTS} segments")));
    }
    Ok(segs)
}

impl Policy {
    /// Parses a policy document; JSON `null` is the default policy.
    pub fn parse(doc: &Value) -> Result<Policy, PolicyError> {
        let mut p = Policy::default();
        let m = match doc {
            Value::Null => return Ok(p),
            Value::Object(m) => m,
            other => {
                return Err(err(
                    format!("a policy must be a JSON object, got {}", describe(other)),
                    &format!("valid keys: {TOP_KEYS}"),
                ))
            }
        };
        for (k, v) in m {
            match k.as_str() {
                "arrays" => p.arrays = parse_arrays(v, "\"arrays\"")?,
                "nulls" => p.nulls = parse_nulls(v, "\"nulls\"")?,
                "paths" => p.parse_paths(v)?,
                _ => {
                    return Err(err(
                        format!("unknown key \"{k}\""),
                        &format!("valid keys: {TOP_KEYS}"),
                    ))
                }
            }
        }
        p.any_delete = p.nulls == NullMode::Delete
            || p.nodes.iter().any(|n| {
                n.rule
                    .as_ref()
                    .is_some_and(|r| r.nulls == Some(NullMode::Delete))
            });
        Ok(p)
    }

    /// Parses policy text (the SQL layer passes jsonb's text form).
    pub fn parse_str(text: &str) -> Result<Policy, PolicyError> {
        let v: Value = serde_json::from_str(text)
            .map_err(|e| err(format!("not valid JSON: {e}"), "a policy is a JSON object"))?;
        Policy::parse(&v)
    }

    /// RFC 7396 JSON Merge Patch as a policy: nulls delete, arrays replace.
    pub fn rfc7396() -> Policy {
        Policy {
            nulls: NullMode::Delete,
            any_delete: true,
            rfc7396: true,
            ..Policy::default()
        }
    }

    fn parse_paths(&mut self, v: &Value) -> Result<(), PolicyError> {
        let m: &Map<String, Value> = v.as_object().ok_or_else(|| {
            err(
                format!(
                    "\"paths\" must be an object of path: rule, got {}",
                    describe(v)
                ),
                "example: {\"paths\": {\"prices.*\": \"max\"}}",
            )
        })?;
        for (path, rule) in m {
            let rule = parse_rule(rule, path)?;
            let mut node = 0usize;
            for (depth, seg) in split_path(path)?.into_iter().enumerate() {
                let existing = match &seg {
                    Some(k) => self.nodes[node].exact.get(k).copied(),
                    None => self.nodes[node].wildcard,
                };
                node = match existing {
                    Some(n) => n,
                    None => {
                        let bit = u64::from(seg.is_some()) << (MAX_PATH_SEGMENTS - 1 - depth);
                        let specificity = self.nodes[node].specificity | bit;
                        self.nodes.push(Node {
                            specificity,
                            ..Node::default()
                        });
                        let n = self.nodes.len() - 1;
                        match seg {
                            Some(k) => {
                                self.nodes[node].exact.insert(k, n);
                            }
                            None => self.nodes[node].wildcard = Some(n),
                        }
                        n
                    }
                };
            }
            self.nodes[node].rule = Some(rule);
        }
        Ok(())
    }

    /// Whether any path rules exist (if not, the engine skips path tracking).
    #[inline]
    pub fn has_paths(&self) -> bool {
        self.nodes.len() > 1
    }

    /// The trie nodes reached from `active` by descending into `key`.
    pub fn descend(&self, active: &[usize], key: &[u8], out: &mut Vec<usize>) {
        out.clear();
        for &n in active {
            let node = &self.nodes[n];
            if let Some(&c) = node.exact.get(key) {
                out.push(c);
            }
            if let Some(c) = node.wildcard {
                out.push(c);
            }
        }
    }

    /// The root node set for a fresh walk.
    pub fn root(&self) -> Vec<usize> {
        if self.has_paths() {
            vec![0]
        } else {
            Vec::new()
        }
    }

    /// Effective rule for a node set: each field from the most specific
    /// matching node that sets it.
    pub fn resolve(&self, active: &[usize]) -> Resolved<'_> {
        let mut ranked: Vec<&Node> = active
            .iter()
            .map(|&n| &self.nodes[n])
            .filter(|n| n.rule.is_some())
            .collect();
        ranked.sort_by(|a, b| b.specificity.cmp(&a.specificity));
        let mut out = Resolved::default();
        for n in ranked {
            let r = n.rule.as_ref().expect("filtered");
            out.value = out.value.or(r.value);
            out.nulls = out.nulls.or(r.nulls);
            out.arrays = out.arrays.or(r.arrays.as_ref());
        }
        out
    }
}

/// The rule fields that apply at one position; `None` = not set by any path.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Resolved<'p> {
    pub value: Option<ValueRule>,
    pub arrays: Option<&'p ArrayMode>,
    pub nulls: Option<NullMode>,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(s: &str) -> Result<Policy, PolicyError> {
        Policy::parse_str(s)
    }

    #[test]
    fn defaults() {
        let p = parse("null").unwrap();
        assert_eq!(p.arrays, ArrayMode::Replace);
        assert_eq!(p.nulls, NullMode::Keep);
        assert!(!p.has_paths());
        assert!(!p.any_delete);
    }

    #[test]
    fn document_modes() {
        let p = parse(r#"{"arrays": "merge_by:id", "nulls": "delete"}"#).unwrap();
        assert_eq!(p.arrays, ArrayMode::MergeBy(b"id".to_vec()));
        assert_eq!(p.nulls, NullMode::Delete);
        assert!(p.any_delete);
    }

    #[test]
    fn errors_name_the_part_and_choices() {
        let e = parse(r#"{"arrays": "zip"}"#).unwrap_err();
        assert!(
            e.message.contains("\"arrays\"") && e.message.contains("\"zip\""),
            "{e:?}"
        );
        assert!(e.hint.contains("merge_by:<field>"), "{e:?}");
        let e = parse(r#"{"nulls": 1}"#).unwrap_err();
        assert!(e.hint.contains("keep, overwrite, delete"), "{e:?}");
        let e = parse(r#"{"arrayz": "concat"}"#).unwrap_err();
        assert!(
            e.message.contains("unknown key \"arrayz\"") && e.hint.contains("arrays, nulls, paths"),
            "{e:?}"
        );
        let e = parse(r#"{"paths": {"a.b": "biggest"}}"#).unwrap_err();
        assert!(
            e.message.contains("\"a.b\"")
                && e.message.contains("\"biggest\"")
                && e.hint.contains("max"),
            "{e:?}"
        );
        let e = parse(r#"{"paths": {"a..b": "max"}}"#).unwrap_err();
        assert!(e.message.contains("empty segment"), "{e:?}");
        let e = parse(r#"{"paths": {"a": {"value": "max", "colour": 1}}}"#).unwrap_err();
        assert!(e.message.contains("\"colour\""), "{e:?}");
        assert!(parse("[1]").is_err());
        assert!(parse(r#"{"arrays": "merge_by:"}"#).is_err());
    }

    #[test]
    fn escapes_in_paths() {
        assert_eq!(
            split_path(r"a\.b.\*.*.c").unwrap(),
            vec![
                Some(b"a.b".to_vec()),
                Some(b"*".to_vec()),
                None,
                Some(b"c".to_vec())
            ]
        );
        assert!(split_path(r"a\q").is_err());
        assert!(split_path("").is_err());
    }

    #[test]
    fn most_specific_path_wins_per_field() {
        let p = parse(r#"{"paths": {"a.*": "max", "*.b": {"value": "min", "nulls": "delete"}, "a.b": "union"}}"#).unwrap();
        let mut l1 = Vec::new();
        p.descend(&p.root(), b"a", &mut l1);
        let mut l2 = Vec::new();
        p.descend(&l1, b"b", &mut l2);
        let r = p.resolve(&l2);
        // a.b (most specific) sets only arrays; a.* beats *.b for the value;
        // nulls comes from *.b, the only rule that sets it.
        assert_eq!(r.arrays, Some(&ArrayMode::Union));
        assert_eq!(r.value, Some(ValueRule::Max));
        assert_eq!(r.nulls, Some(NullMode::Delete));
        p.descend(&l1, b"c", &mut l2);
        assert_eq!(p.resolve(&l2).value, Some(ValueRule::Max));
        p.descend(&p.root(), b"z", &mut l1);
        assert_eq!(p.resolve(&l1), Resolved::default());
    }
}
