//! Fuzzing the merge core against a reference implementation.
//!
//! The reference below works on `serde_json::Value` trees and is written the
//! obvious way, straight from the rules in docs/merge.md: no binary format, no
//! planning, no caches, every path rule matched by brute force. Generated
//! documents, policies (valid and invalid), depths and sizes go through both;
//! the engine must never panic and must agree with the reference.
//!
//! `SYNCGUARD_FUZZ_CASES` sets the number of cases per property: the unit
//! tier runs a short default, `make soak` a long run (its last result is
//! kept in `benches/soak.md`).

use super::engine::{self, Limits, MergeError, Merged};
use super::policy::{Policy, MAX_PATH_SEGMENTS};
use super::row_hash::RowHash;
use super::text::{json, show};
use proptest::prelude::*;
use proptest::test_runner::{Config, TestCaseError, TestRunner};
use serde_json::{Map, Value};
use std::cmp::Ordering;

/// Cases per property in the unit tier: a few seconds for all of them.
const DEFAULT_CASES: u32 = 200;

fn cases() -> u32 {
    match std::env::var("SYNCGUARD_FUZZ_CASES") {
        Ok(s) => s
            .parse()
            .unwrap_or_else(|_| panic!("SYNCGUARD_FUZZ_CASES={s:?} is not a number")),
        Err(_) => DEFAULT_CASES,
    }
}

/// Runs `test` on `cases() / divisor` values of the strategy `make` builds,
/// on a thread with a large stack: deep documents are part of the input
/// space, and the debug build's frames are far larger than the release one's.
fn fuzz<S: Strategy>(
    divisor: u32,
    make: impl FnOnce() -> S + Send + 'static,
    test: impl Fn(S::Value) -> Result<(), TestCaseError> + Send + 'static,
) {
    let handle = std::thread::Builder::new()
        .stack_size(512 << 20)
        .spawn(move || {
            let config = Config {
                cases: (cases() / divisor).max(1),
                failure_persistence: None,
                ..Config::default()
            };
            TestRunner::new(config)
                .run(&make(), test)
                .map_err(|e| e.to_string())
        })
        .expect("spawn fuzz thread");
    match handle.join() {
        Ok(Ok(())) => {}
        Ok(Err(e)) => panic!("{e}"),
        Err(panic) => std::panic::resume_unwind(panic),
    }
}

// ---- the reference ---------------------------------------------------------

#[derive(Clone, Debug, PartialEq)]
enum Arrays {
    Replace,
    Concat,
    Union,
    MergeBy(String),
}

#[derive(Clone, Copy, Debug, PartialEq)]
enum Nulls {
    Keep,
    Overwrite,
    Delete,
}

#[derive(Clone, Copy, Debug, PartialEq)]
enum Rule {
    Merge,
    Keep,
    Replace,
    Max,
    Min,
}

/// One segment of a path pattern.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Seg {
    Key(String),
    Any,
}

#[derive(Clone, Debug, Default)]
struct PathRule {
    value: Option<Rule>,
    arrays: Option<Arrays>,
    nulls: Option<Nulls>,
    /// Written as an object even where a string would do.
    as_object: bool,
}

#[derive(Clone, Debug)]
struct RefPolicy {
    arrays: Option<Arrays>,
    nulls: Option<Nulls>,
    paths: Vec<(Vec<Seg>, PathRule)>,
    /// RFC 7396: tombstones are ordinary objects, empty patch objects replace.
    rfc7396: bool,
}

/// The rules in force at one position: `path` is the object keys leading
/// there (array elements under `merge_by` add none).
#[derive(Clone)]
struct Here {
    arrays: Arrays,
    nulls: Nulls,
    value: Rule,
    path: Vec<String>,
}

fn is_tombstone(v: &Value) -> bool {
    matches!(v, Value::Object(m) if m.len() == 1 && m.get("$delete") == Some(&Value::Bool(true)))
}

fn num(v: &Value) -> Option<f64> {
    v.as_f64()
}

/// jsonb `=`: numbers by value, containers element by element.
fn jsonb_eq(a: &Value, b: &Value) -> bool {
    match (a, b) {
        (Value::Number(_), Value::Number(_)) => num(a) == num(b),
        (Value::Array(x), Value::Array(y)) => {
            x.len() == y.len() && x.iter().zip(y).all(|(a, b)| jsonb_eq(a, b))
        }
        (Value::Object(x), Value::Object(y)) => {
            x.len() == y.len()
                && x.iter()
                    .all(|(k, a)| y.get(k).is_some_and(|b| jsonb_eq(a, b)))
        }
        _ => a == b,
    }
}

/// `max`/`min` order: numbers by value, strings by code point, false < true.
fn scalar_cmp(a: &Value, b: &Value) -> Option<Ordering> {
    match (a, b) {
        (Value::Number(_), Value::Number(_)) => num(a)?.partial_cmp(&num(b)?),
        (Value::String(x), Value::String(y)) => Some(x.cmp(y)),
        (Value::Bool(x), Value::Bool(y)) => Some(x.cmp(y)),
        _ => None,
    }
}

impl RefPolicy {
    fn default_merge() -> Self {
        RefPolicy {
            arrays: None,
            nulls: None,
            paths: Vec::new(),
            rfc7396: false,
        }
    }

    fn rfc7396() -> Self {
        RefPolicy {
            nulls: Some(Nulls::Delete),
            rfc7396: true,
            ..Self::default_merge()
        }
    }

    fn root(&self) -> Here {
        Here {
            arrays: self.arrays.clone().unwrap_or(Arrays::Replace),
            nulls: self.nulls.unwrap_or(Nulls::Keep),
            value: Rule::Merge,
            path: Vec::new(),
        }
    }

    /// The rules under `key`: every pattern matching the whole path, the
    /// most specific first (from the left, an exact key beats `*`); each
    /// field from the first that sets it, else inherited (value: merge).
    fn child(&self, here: &Here, key: &str) -> Here {
        let mut path = here.path.clone();
        path.push(key.to_string());
        let mut matching: Vec<&(Vec<Seg>, PathRule)> = self
            .paths
            .iter()
            .filter(|(pattern, _)| {
                pattern.len() == path.len()
                    && pattern.iter().zip(&path).all(|(s, k)| match s {
                        Seg::Any => true,
                        Seg::Key(want) => want == k,
                    })
            })
            .collect();
        let exactness = |p: &Vec<Seg>| {
            p.iter()
                .map(|s| matches!(s, Seg::Key(_)))
                .collect::<Vec<_>>()
        };
        matching.sort_by(|a, b| exactness(&b.0).cmp(&exactness(&a.0)));
        let rules = || matching.iter().map(|(_, r)| r);
        Here {
            arrays: rules()
                .find_map(|r| r.arrays.clone())
                .unwrap_or(here.arrays.clone()),
            nulls: rules().find_map(|r| r.nulls).unwrap_or(here.nulls),
            value: rules().find_map(|r| r.value).unwrap_or(Rule::Merge),
            path,
        }
    }

    /// The whole merge; `None` when the patch is a tombstone.
    fn merge(&self, t: &Value, p: &Value) -> Option<Value> {
        if !self.rfc7396 && is_tombstone(p) {
            return None;
        }
        // At the root no key can be deleted: a dropped null stays the result.
        Some(
            self.decide(Some(t), p, &self.root())
                .unwrap_or_else(|| p.clone()),
        )
    }

    /// The value at one position; `None` drops the key.
    fn decide(&self, t: Option<&Value>, p: &Value, here: &Here) -> Option<Value> {
        if !self.rfc7396 && is_tombstone(p) {
            return None;
        }
        if let Some(t) = t {
            if here.value == Rule::Keep && !t.is_null() {
                return Some(t.clone());
            }
        }
        if p.is_null() {
            return match here.nulls {
                Nulls::Keep => Some(t.cloned().unwrap_or(Value::Null)),
                Nulls::Overwrite => Some(Value::Null),
                Nulls::Delete => None,
            };
        }
        let Some(t) = t else {
            return Some(self.insert(p, here));
        };
        Some(match here.value {
            Rule::Keep | Rule::Replace => self.insert(p, here),
            Rule::Max | Rule::Min => match scalar_cmp(p, t) {
                Some(Ordering::Greater) if here.value == Rule::Max => self.insert(p, here),
                Some(Ordering::Less) if here.value == Rule::Min => self.insert(p, here),
                Some(_) => t.clone(),
                None => self.insert(p, here),
            },
            Rule::Merge => match (t, p) {
                // an empty patch object carries nothing to store
                (_, Value::Object(pm)) if pm.is_empty() && !self.rfc7396 => t.clone(),
                (Value::Object(tm), Value::Object(pm)) => self.merge_objects(Some(tm), pm, here),
                (Value::Array(ta), Value::Array(pa)) if here.arrays != Arrays::Replace => {
                    self.merge_arrays(ta, pa, here)
                }
                _ => self.insert(p, here),
            },
        })
    }

    /// A patch value stored where nothing is merged into it: its objects
    /// still lose tombstones and, where the rules delete them, nulls.
    fn insert(&self, p: &Value, here: &Here) -> Value {
        match p {
            Value::Object(pm) => self.merge_objects(None, pm, here),
            _ => p.clone(),
        }
    }

    fn merge_objects(
        &self,
        t: Option<&Map<String, Value>>,
        p: &Map<String, Value>,
        here: &Here,
    ) -> Value {
        let mut out = t.cloned().unwrap_or_default();
        for (k, pv) in p {
            match self.decide(out.get(k), pv, &self.child(here, k)) {
                Some(v) => out.insert(k.clone(), v),
                None => out.remove(k),
            };
        }
        Value::Object(out)
    }

    fn merge_arrays(&self, t: &[Value], p: &[Value], here: &Here) -> Value {
        Value::Array(match &here.arrays {
            Arrays::Replace => unreachable!("replace does not merge"),
            Arrays::Concat => t.iter().chain(p).cloned().collect(),
            Arrays::Union => {
                let mut out = t.to_vec();
                for e in p {
                    if !out.iter().any(|o| jsonb_eq(o, e)) {
                        out.push(e.clone());
                    }
                }
                out
            }
            Arrays::MergeBy(field) => self.merge_by(t, p, field, here),
        })
    }

    /// Records matched on `field`: the first target element with a value
    /// absorbs every patch element with an equal value, in order; new values
    /// form groups appended in order of first appearance; elements without
    /// the field are kept (target) or appended (patch).
    fn merge_by(&self, t: &[Value], p: &[Value], field: &str, here: &Here) -> Vec<Value> {
        let field_of = |e: &Value| e.as_object().and_then(|o| o.get(field)).cloned();
        let mut groups: Vec<(Option<Value>, Vec<Value>)> = Vec::new();
        let mut keyed: Vec<(Value, usize)> = Vec::new();
        let find = |keyed: &Vec<(Value, usize)>, k: &Value| {
            keyed.iter().find(|(v, _)| jsonb_eq(v, k)).map(|&(_, g)| g)
        };
        for e in t {
            if let Some(k) = field_of(e) {
                if find(&keyed, &k).is_none() {
                    keyed.push((k, groups.len()));
                }
            }
            groups.push((Some(e.clone()), Vec::new()));
        }
        for e in p {
            match field_of(e) {
                Some(k) => match find(&keyed, &k) {
                    Some(g) => groups[g].1.push(e.clone()),
                    None => {
                        keyed.push((k, groups.len()));
                        groups.push((None, vec![e.clone()]));
                    }
                },
                None => groups.push((None, vec![e.clone()])),
            }
        }
        // Elements sit at the array's path, under its array and null modes.
        let elem = Here {
            value: Rule::Merge,
            ..here.clone()
        };
        groups
            .into_iter()
            .map(|(t, ps)| {
                let mut acc = t;
                for pe in &ps {
                    // an element is no key: a tombstone or a deleted null
                    // among them leaves a null in its place
                    acc = Some(self.decide(acc.as_ref(), pe, &elem).unwrap_or(Value::Null));
                }
                acc.expect("every group has an element")
            })
            .collect()
    }
}

/// RFC 7396, section 2, as written there.
fn reference_merge_patch(target: &Value, patch: &Value) -> Value {
    let Value::Object(pm) = patch else {
        return patch.clone();
    };
    let mut out = match target {
        Value::Object(tm) => tm.clone(),
        _ => Map::new(),
    };
    for (k, v) in pm {
        if v.is_null() {
            out.remove(k);
        } else {
            let merged = reference_merge_patch(out.get(k).unwrap_or(&Value::Null), v);
            out.insert(k.clone(), merged);
        }
    }
    Value::Object(out)
}

/// The diff of docs/merge.md: removed keys null, added or changed values whole,
/// objects changed on both sides diffed recursively; non-object roots: `new`.
fn reference_diff(old: &Value, new: &Value) -> Value {
    let (Value::Object(om), Value::Object(nm)) = (old, new) else {
        return new.clone();
    };
    let mut out = Map::new();
    for k in om.keys().filter(|k| !nm.contains_key(*k)) {
        out.insert(k.clone(), Value::Null);
    }
    for (k, nv) in nm {
        match om.get(k) {
            // `==` on serde values tells 1.0 from 1.00 as jsonb's text does
            Some(ov) if ov == nv => {}
            Some(ov @ Value::Object(_)) if nv.is_object() => {
                out.insert(k.clone(), reference_diff(ov, nv));
            }
            _ => {
                out.insert(k.clone(), nv.clone());
            }
        }
    }
    Value::Object(out)
}

// ---- running the engine ----------------------------------------------------

fn datum(v: &Value) -> Vec<u8> {
    json(&v.to_string())
}

/// The canonical text of a value: jsonb's own, so results compare as
/// jsonb does (key order aside, `1.0` and `1` stay apart).
fn canon(v: &Value) -> String {
    show(&datum(v))
}

/// A result datum's text, checking it is well-formed: byte-identical to
/// what parsing its own text gives. `None`: a tombstone deleted it.
fn text_of(result: Merged, t: &[u8], p: &[u8]) -> Result<Option<String>, TestCaseError> {
    let bytes = match result {
        Merged::Deleted => return Ok(None),
        Merged::Target => t.to_vec(),
        Merged::Patch => p.to_vec(),
        Merged::Built(mut v) => {
            let len = v.len();
            v[..4].copy_from_slice(&super::numeric::varsize_4b(len));
            v
        }
    };
    let text = show(&bytes);
    prop_assert!(
        json(&text) == bytes,
        "result is not canonical jsonb: {}",
        text
    );
    Ok(Some(text))
}

type Outcome = Result<Option<String>, MergeError>;

fn engine_merge(
    t: &Value,
    p: &Value,
    policy: &Policy,
    limit: usize,
) -> Result<Outcome, TestCaseError> {
    let (tb, pb) = (datum(t), datum(p));
    match engine::deep_merge(&tb[4..], &pb[4..], policy, Limits::depth(limit)) {
        Ok(r) => Ok(Ok(text_of(r, &tb, &pb)?)),
        Err(e) => Ok(Err(e)),
    }
}

fn reference(r: Option<Value>) -> Outcome {
    Ok(r.as_ref().map(canon))
}

const LIMIT: usize = engine::DEFAULT_MAX_DEPTH;

// ---- generators ------------------------------------------------------------

/// Keys that collide often, plus the ones paths and tombstones care about.
const KEYS: &[&str] = &["a", "b", "c", "id", "", "é", "a.b", "*", "$delete", "k\\"];

fn key() -> impl Strategy<Value = String> {
    prop::sample::select(KEYS).prop_map(str::to_string)
}

/// Numbers whose text survives jsonb unchanged (`1.0` and `1` stay apart,
/// as jsonb's text keeps them) and whose order f64 gets right.
fn number() -> impl Strategy<Value = Value> {
    prop_oneof![
        (-3i64..4).prop_map(Value::from),
        prop::sample::select(&[0.5f64, 1.0, -2.25, 1.5, 10.0, 3.75, -0.5][..])
            .prop_map(Value::from),
        Just(Value::from(u64::MAX)),
        Just(Value::from(i64::MIN)),
    ]
}

fn leaf() -> impl Strategy<Value = Value> {
    prop_oneof![
        3 => Just(Value::Null),
        1 => any::<bool>().prop_map(Value::Bool),
        3 => number(),
        2 => "[ab\u{e9}\u{1f600}\"\\\\\n.*$]{0,3}".prop_map(Value::String),
        1 => Just(serde_json::json!({"$delete": true})),
        1 => Just(serde_json::json!({})),
    ]
}

/// Documents of any shape; `depth` and `size` bound the nesting and the
/// number of nodes.
fn doc_sized(depth: u32, size: u32) -> impl Strategy<Value = Value> {
    leaf().prop_recursive(depth, size, 6, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..6).prop_map(Value::Array),
            prop::collection::btree_map(key(), inner.clone(), 0..6)
                .prop_map(|m| Value::Object(m.into_iter().collect())),
            // records, for merge_by
            prop::collection::vec(
                (number(), prop::collection::btree_map(key(), inner, 0..3)).prop_map(|(id, m)| {
                    let mut o: Map<String, Value> = m.into_iter().collect();
                    o.insert("id".into(), id);
                    Value::Object(o)
                }),
                0..4
            )
            .prop_map(Value::Array),
        ]
    })
}

fn doc() -> impl Strategy<Value = Value> {
    (1u32..7).prop_flat_map(|depth| doc_sized(depth, depth * 12))
}

fn arrays_mode() -> impl Strategy<Value = Arrays> {
    prop_oneof![
        Just(Arrays::Replace),
        Just(Arrays::Concat),
        Just(Arrays::Union),
        prop::sample::select(&["id", "a", "$delete"][..]).prop_map(|f| Arrays::MergeBy(f.into())),
    ]
}

fn nulls_mode() -> impl Strategy<Value = Nulls> {
    prop::sample::select(&[Nulls::Keep, Nulls::Overwrite, Nulls::Delete][..])
}

fn value_rule() -> impl Strategy<Value = Rule> {
    prop::sample::select(&[Rule::Merge, Rule::Keep, Rule::Replace, Rule::Max, Rule::Min][..])
}

fn pattern() -> impl Strategy<Value = Vec<Seg>> {
    let seg = prop_oneof![
        1 => Just(Seg::Any),
        4 => prop::sample::select(&["a", "b", "c", "id", "é", "a.b", "*", "k\\"][..]).prop_map(|k| Seg::Key(k.into())),
    ];
    prop::collection::vec(seg, 1..4)
}

fn path_rule() -> impl Strategy<Value = PathRule> {
    (
        prop::option::of(value_rule()),
        prop::option::of(arrays_mode()),
        prop::option::of(nulls_mode()),
        any::<bool>(),
    )
        .prop_map(|(value, arrays, nulls, as_object)| PathRule {
            value,
            arrays,
            nulls,
            as_object,
        })
}

fn policy() -> impl Strategy<Value = RefPolicy> {
    (
        prop::option::of(arrays_mode()),
        prop::option::of(nulls_mode()),
        prop::collection::btree_map(pattern(), path_rule(), 0..5),
    )
        .prop_map(|(arrays, nulls, paths)| RefPolicy {
            arrays,
            nulls,
            paths: paths.into_iter().collect(),
            rfc7396: false,
        })
}

// ---- writing policies as the JSON users pass -----------------------------

fn arrays_json(a: &Arrays) -> Value {
    Value::from(match a {
        Arrays::Replace => "replace".to_string(),
        Arrays::Concat => "concat".to_string(),
        Arrays::Union => "union".to_string(),
        Arrays::MergeBy(f) => format!("merge_by:{f}"),
    })
}

fn nulls_json(n: Nulls) -> Value {
    Value::from(match n {
        Nulls::Keep => "keep",
        Nulls::Overwrite => "overwrite",
        Nulls::Delete => "delete",
    })
}

fn rule_json(r: Rule) -> Value {
    Value::from(match r {
        Rule::Merge => "merge",
        Rule::Keep => "keep",
        Rule::Replace => "replace",
        Rule::Max => "max",
        Rule::Min => "min",
    })
}

fn path_text(pattern: &[Seg]) -> String {
    let seg = |s: &Seg| match s {
        Seg::Any => "*".to_string(),
        Seg::Key(k) => k
            .replace('\\', "\\\\")
            .replace('.', "\\.")
            .replace('*', "\\*"),
    };
    pattern.iter().map(seg).collect::<Vec<_>>().join(".")
}

fn path_rule_json(r: &PathRule) -> Value {
    match (r.value, &r.arrays, r.nulls) {
        (Some(v), None, None) if !r.as_object => rule_json(v),
        // the string "replace" is the value rule: array replace needs an object
        (None, Some(a), None) if !r.as_object && *a != Arrays::Replace => arrays_json(a),
        _ => {
            let mut m = Map::new();
            if let Some(v) = r.value {
                m.insert("value".into(), rule_json(v));
            }
            if let Some(a) = &r.arrays {
                m.insert("arrays".into(), arrays_json(a));
            }
            if let Some(n) = r.nulls {
                m.insert("nulls".into(), nulls_json(n));
            }
            Value::Object(m)
        }
    }
}

fn policy_json(p: &RefPolicy) -> Value {
    let mut m = Map::new();
    if let Some(a) = &p.arrays {
        m.insert("arrays".into(), arrays_json(a));
    }
    if let Some(n) = p.nulls {
        m.insert("nulls".into(), nulls_json(n));
    }
    if !p.paths.is_empty() {
        let paths = p
            .paths
            .iter()
            .map(|(pat, r)| (path_text(pat), path_rule_json(r)))
            .collect();
        m.insert("paths".into(), Value::Object(paths));
    }
    Value::Object(m)
}

/// One way to break a valid policy, each of which the parser must reject.
#[derive(Clone, Debug)]
enum Breakage {
    NotAnObject(Value),
    UnknownTopKey(String),
    BadArrays(Value),
    BadNulls(Value),
    PathsNotAnObject(Value),
    BadRule(Value),
    UnknownRuleKey(String),
    BadRuleField(&'static str, Value),
    BadPath(String),
}

fn junk() -> impl Strategy<Value = Value> {
    prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(Value::from),
        prop::sample::select(
            &[
                "",
                "zip",
                "merge_by:",
                "Replace",
                "keep ",
                "max",
                "merge_by",
                "delete\0"
            ][..]
        )
        .prop_map(Value::from),
        Just(serde_json::json!([1, "concat"])),
        Just(serde_json::json!({"arrays": "concat"})),
    ]
}

fn breakage() -> impl Strategy<Value = Breakage> {
    let not_a_string = || {
        junk().prop_filter("a valid string", |v| {
            !v.is_object() && !matches!(v.as_str(), Some("max") | Some("replace") | Some("keep"))
        })
    };
    prop_oneof![
        junk()
            .prop_filter("an object or null", |v| !v.is_object() && !v.is_null())
            .prop_map(Breakage::NotAnObject),
        "[a-z_ ]{0,8}"
            .prop_filter("a known key", |k| !["arrays", "nulls", "paths"]
                .contains(&k.as_str()))
            .prop_map(Breakage::UnknownTopKey),
        not_a_string().prop_map(Breakage::BadArrays),
        not_a_string().prop_map(Breakage::BadNulls),
        junk()
            .prop_filter("an object", |v| !v.is_object())
            .prop_map(Breakage::PathsNotAnObject),
        not_a_string().prop_map(Breakage::BadRule),
        "[a-z]{0,6}"
            .prop_filter("a known key", |k| !["value", "arrays", "nulls"]
                .contains(&k.as_str()))
            .prop_map(Breakage::UnknownRuleKey),
        (
            prop::sample::select(&["value", "arrays", "nulls"][..]),
            not_a_string()
        )
            .prop_map(|(f, v)| Breakage::BadRuleField(f, v)),
        prop_oneof![
            Just(String::new()),
            Just("a..b".to_string()),
            Just(".a".to_string()),
            Just("a.".to_string()),
            Just("a\\".to_string()),
            Just("a\\q".to_string()),
            Just(vec!["a"; MAX_PATH_SEGMENTS + 1].join(".")),
        ]
        .prop_map(Breakage::BadPath),
    ]
}

fn broken(valid: &RefPolicy, b: &Breakage) -> Value {
    let mut p = policy_json(valid);
    let m = p.as_object_mut().expect("a policy is an object");
    match b {
        Breakage::NotAnObject(v) => return v.clone(),
        Breakage::UnknownTopKey(k) => {
            m.insert(k.clone(), Value::from("concat"));
        }
        Breakage::BadArrays(v) => {
            m.insert("arrays".into(), v.clone());
        }
        Breakage::BadNulls(v) => {
            m.insert("nulls".into(), v.clone());
        }
        Breakage::PathsNotAnObject(v) => {
            m.insert("paths".into(), v.clone());
        }
        Breakage::BadRule(v) => {
            paths_of(m).insert("a".into(), v.clone());
        }
        Breakage::UnknownRuleKey(k) => {
            paths_of(m).insert("a".into(), serde_json::json!({ k.as_str(): "max" }));
        }
        Breakage::BadRuleField(f, v) => {
            paths_of(m).insert("a".into(), serde_json::json!({ *f: v }));
        }
        Breakage::BadPath(path) => {
            paths_of(m).insert(path.clone(), Value::from("max"));
        }
    }
    p
}

fn paths_of(m: &mut Map<String, Value>) -> &mut Map<String, Value> {
    m.entry("paths")
        .or_insert_with(|| Value::Object(Map::new()))
        .as_object_mut()
        .expect("paths is an object")
}

// ---- properties ------------------------------------------------------------

#[test]
fn deep_merge_equals_the_reference_under_any_policy() {
    fuzz(
        1,
        || (doc(), doc(), policy()),
        |(t, p, rp)| {
            let text = policy_json(&rp).to_string();
            let policy = Policy::parse_str(&text)
                .map_err(|e| TestCaseError::fail(format!("valid policy {text} rejected: {e:?}")))?;
            let got = engine_merge(&t, &p, &policy, LIMIT)?;
            prop_assert_eq!(got, reference(rp.merge(&t, &p)), "policy {}", text);
            Ok(())
        },
    );
}

/// A document loaded and written back whole, changed: the patch holds every
/// key of the stored document, where the engine answers that the patch is
/// the result without writing a new one.
#[test]
fn a_document_written_back_whole_merges_as_the_reference() {
    fuzz(
        1,
        || (doc(), doc(), policy()),
        |(t, q, rp)| {
            let text = policy_json(&rp).to_string();
            let policy = Policy::parse_str(&text)
                .map_err(|e| TestCaseError::fail(format!("valid policy {text} rejected: {e:?}")))?;
            let Some(p) = RefPolicy::default_merge().merge(&t, &q) else {
                return Ok(());
            };
            let got = engine_merge(&t, &p, &policy, LIMIT)?;
            prop_assert_eq!(got, reference(rp.merge(&t, &p)), "policy {}", text);
            Ok(())
        },
    );
}

#[test]
fn default_merge_equals_the_reference() {
    fuzz(
        1,
        || (doc(), doc()),
        |(t, p)| {
            let got = engine_merge(&t, &p, &Policy::default(), LIMIT)?;
            prop_assert_eq!(got, reference(RefPolicy::default_merge().merge(&t, &p)));
            Ok(())
        },
    );
}

#[test]
fn aggregate_fold_under_a_policy_equals_the_reference() {
    fuzz(
        2,
        || (prop::collection::vec(doc(), 1..6), policy()),
        |(docs, rp)| {
            let policy = Policy::parse_str(&policy_json(&rp).to_string()).expect("valid policy");
            // jsonb_deep_merge_agg folds left to right; a document deleted by a
            // tombstone leaves no state, and the next row merges into `{}`.
            let empty = Value::Object(Map::new());
            let (mut got, mut want): (Option<Value>, Option<Value>) = (None, None);
            for d in &docs {
                let acc = got.as_ref().unwrap_or(&empty);
                got = engine_merge(acc, d, &policy, LIMIT)?
                    .expect("merges")
                    .map(|text| serde_json::from_str(&text).expect("jsonb text is JSON"));
                want = rp.merge(want.as_ref().unwrap_or(&empty), d);
            }
            prop_assert_eq!(got.as_ref().map(canon), want.as_ref().map(canon));
            Ok(())
        },
    );
}

#[test]
fn merge_patch_is_rfc7396() {
    fuzz(
        1,
        || (doc(), doc()),
        |(t, p)| {
            let (tb, pb) = (datum(&t), datum(&p));
            let r = engine::merge_patch(&tb[4..], &pb[4..], Limits::depth(LIMIT)).expect("merges");
            let want = reference_merge_patch(&t, &p);
            prop_assert_eq!(text_of(r, &tb, &pb)?, Some(canon(&want)));
            // and the reference's RFC 7396 policy agrees with the RFC's text
            prop_assert_eq!(
                RefPolicy::rfc7396().merge(&t, &p).map(|v| canon(&v)),
                Some(canon(&want))
            );
            Ok(())
        },
    );
}

#[test]
fn diff_equals_the_reference_and_patches_back() {
    fuzz(
        1,
        || (doc(), doc()),
        |(old, new)| {
            let (ob, nb) = (datum(&old), datum(&new));
            let r = engine::diff(&ob[4..], &nb[4..], Limits::depth(LIMIT)).expect("diffs");
            let d = reference_diff(&old, &new);
            prop_assert_eq!(text_of(r, &ob, &nb)?, Some(canon(&d)));
            // the promise: applying the diff gives `new` back, unless `new`
            // stores nulls in objects (a merge patch cannot express them)
            if !has_null_in_object(&new) && old.is_object() && new.is_object() {
                prop_assert_eq!(canon(&reference_merge_patch(&old, &d)), canon(&new));
            }
            Ok(())
        },
    );
}

fn has_null_in_object(v: &Value) -> bool {
    match v {
        Value::Object(m) => m.values().any(|v| v.is_null() || has_null_in_object(v)),
        Value::Array(a) => a.iter().any(has_null_in_object),
        _ => false,
    }
}

#[test]
fn invalid_policies_are_errors_naming_the_part() {
    fuzz(
        1,
        || (policy(), breakage()),
        |(rp, b)| {
            let text = broken(&rp, &b).to_string();
            match Policy::parse_str(&text) {
                Ok(_) => Err(TestCaseError::fail(format!("{b:?}: accepted {text}"))),
                Err(e) => {
                    prop_assert!(e.message.starts_with("invalid merge policy: "), "{:?}", e);
                    prop_assert!(!e.hint.is_empty(), "{:?}", e);
                    Ok(())
                }
            }
        },
    );
}

#[test]
fn any_json_as_a_policy_parses_or_is_an_error() {
    let anything = || {
        doc_sized(4, 40).prop_map(|v| match v {
            // give the parser's keys a chance to appear
            Value::Object(m) => {
                let names = ["arrays", "nulls", "paths", "value"];
                Value::Object(
                    m.into_iter()
                        .enumerate()
                        .map(|(i, (k, v))| {
                            (
                                if i % 2 == 0 {
                                    names[i % 4].to_string()
                                } else {
                                    k
                                },
                                v,
                            )
                        })
                        .collect(),
                )
            }
            v => v,
        })
    };
    fuzz(1, anything, |v| {
        let _ = Policy::parse_str(&v.to_string());
        let _ = Policy::parse(&v);
        Ok(())
    });
    // and text that is not JSON at all
    fuzz(
        1,
        || ".{0,40}",
        |s: String| {
            let _ = Policy::parse_str(&s);
            Ok(())
        },
    );
}

/// A chain of `depth` objects (the root is level 1) around `inner`, as
/// text: serde_json's own values are slow to build this deep.
fn nested(depth: usize, inner: &str) -> String {
    format!("{}{inner}{}", "{\"k\":".repeat(depth), "}".repeat(depth))
}

#[test]
fn depth_limit_is_exact_at_any_depth() {
    let case = || (1usize..4000, 1usize..4000, number(), number());
    fuzz(4, case, |(depth, limit, a, b)| {
        // both sides nested alike: the merge walks exactly `depth` levels,
        // down to two numbers, of which the patch's wins
        let (t, p) = (
            json(&nested(depth, &a.to_string())),
            json(&nested(depth, &b.to_string())),
        );
        let want = RefPolicy::default_merge()
            .merge(&a, &b)
            .expect("no tombstone");
        let want = show(&json(&nested(depth, &want.to_string())));
        match engine::deep_merge(&t[4..], &p[4..], &Policy::default(), Limits::depth(limit)) {
            Err(MergeError::TooDeep { limit: l }) => {
                prop_assert_eq!(l, limit);
                prop_assert!(
                    depth > limit,
                    "depth {} refused under limit {}",
                    depth,
                    limit
                );
            }
            Ok(r) => {
                prop_assert!(depth <= limit, "depth {} passed limit {}", depth, limit);
                prop_assert_eq!(text_of(r, &t, &p)?, Some(want));
            }
            Err(e) => return Err(TestCaseError::fail(format!("{e:?}"))),
        }
        // depth only one side has costs nothing: it is copied, not walked
        let other = json(r#"{"other": 1}"#);
        let r = engine::deep_merge(&t[4..], &other[4..], &Policy::default(), Limits::depth(2))
            .map_err(|e| TestCaseError::fail(format!("one-sided depth: {e:?}")))?;
        let want = format!(
            r#"{{"k": {}, "other": 1}}"#,
            nested(depth - 1, &a.to_string())
        );
        prop_assert_eq!(text_of(r, &t, &other)?, Some(show(&json(&want))));
        Ok(())
    });
}

#[test]
fn long_arrays_union_and_merge_by_equal_the_reference() {
    let arrays = || {
        let elem = prop_oneof![
            (0i64..50).prop_map(Value::from),
            (0i64..50, 0i64..3).prop_map(|(id, q)| serde_json::json!({"id": id, "q": q})),
            (0i64..50).prop_map(|n| Value::from(n as f64 + 0.5)),
        ];
        let arr = prop::collection::vec(elem, 0..400);
        let modes = prop::sample::select(&["union", "merge_by:id", "concat"][..]);
        (arr.clone(), arr, modes)
    };
    fuzz(8, arrays, |(t, p, mode)| {
        let rp = RefPolicy {
            arrays: Some(match mode {
                "union" => Arrays::Union,
                "concat" => Arrays::Concat,
                _ => Arrays::MergeBy("id".into()),
            }),
            ..RefPolicy::default_merge()
        };
        let policy = Policy::parse_str(&policy_json(&rp).to_string()).expect("valid");
        let (t, p) = (serde_json::json!({"x": t}), serde_json::json!({"x": p}));
        prop_assert_eq!(
            engine_merge(&t, &p, &policy, LIMIT)?,
            reference(rp.merge(&t, &p))
        );
        Ok(())
    });
}

#[test]
fn corrupted_jsonb_is_an_error_not_a_panic() {
    let case = || {
        (
            doc(),
            doc(),
            prop::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 1..4),
            any::<prop::sample::Index>(),
        )
    };
    fuzz(1, case, |(t, p, flips, cut)| {
        let (mut tb, pb) = (datum(&t), datum(&p));
        for (at, byte) in flips {
            let i = 4 + at.index(tb.len() - 4);
            tb[i] = byte;
        }
        let end = 4 + cut.index(tb.len() - 4) + 1;
        for bytes in [&tb[4..], &tb[4..end]] {
            for policy in [
                Policy::default(),
                Policy::parse_str(
                    r#"{"arrays":"merge_by:id","nulls":"delete","paths":{"*":"max"}}"#,
                )
                .unwrap(),
            ] {
                let _ = engine::deep_merge(bytes, &pb[4..], &policy, Limits::depth(LIMIT));
                let _ = engine::deep_merge(&pb[4..], bytes, &policy, Limits::depth(LIMIT));
            }
            let _ = engine::merge_patch(&pb[4..], bytes, Limits::depth(LIMIT));
            let _ = engine::diff(bytes, &pb[4..], Limits::depth(LIMIT));
            let _ = engine::diff(&pb[4..], bytes, Limits::depth(LIMIT));
            let _ = super::text::to_text(bytes);
            let _ = RowHash::default().jsonb(bytes);
        }
        Ok(())
    });
}

/// The text of `v` with every number written at a larger scale (`1` as
/// `1.000`, `0.5` as `0.50`): the same jsonb value.
fn rescaled(v: &Value) -> String {
    match v {
        Value::Number(n) => {
            let t = n.to_string();
            if t.contains('.') {
                format!("{t}0")
            } else {
                format!("{t}.000")
            }
        }
        Value::Array(a) => format!(
            "[{}]",
            a.iter().map(rescaled).collect::<Vec<_>>().join(", ")
        ),
        Value::Object(o) => format!(
            "{{{}}}",
            o.iter()
                .map(|(k, v)| format!("{}: {}", Value::from(k.as_str()), rescaled(v)))
                .collect::<Vec<_>>()
                .join(", ")
        ),
        _ => v.to_string(),
    }
}

/// reconcile's row hash of a jsonb document follows jsonb's `=`: two
/// documents hash alike exactly when they are equal, whatever the scale
/// their numbers are written at.
#[test]
fn the_row_hash_of_documents_follows_jsonb_equality() {
    fuzz(
        1,
        || (doc(), doc()),
        |(a, b)| {
            let hash = |d: Vec<u8>| {
                let mut h = RowHash::default();
                h.jsonb(&d[4..]).expect("well-formed");
                h.finish()
            };
            let (ha, hb) = (hash(datum(&a)), hash(datum(&b)));
            prop_assert_eq!(ha == hb, jsonb_eq(&a, &b), "{} {}", a, b);
            prop_assert_eq!(hash(json(&rescaled(&a))), ha, "{}", rescaled(&a));
            Ok(())
        },
    );
}
