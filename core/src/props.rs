//! Example and property tests of the merge engine, checked against a small
//! reference implementation on a plain tree model.

use super::engine::{self, Limits, Merged, DEFAULT_MAX_DEPTH};
use super::policy::Policy;
use super::text::{json, show};
use proptest::prelude::*;

/// Runs a merge and returns the result's text, whichever form it took.
fn run(r: Result<Merged, engine::MergeError>, t: &[u8], p: &[u8]) -> String {
    match r.expect("merge failed") {
        Merged::Deleted => "<deleted>".to_string(),
        r => show(&finish(r, t, p)),
    }
}

/// The result as a complete datum, whichever form it took.
fn finish(r: Merged, a: &[u8], b: &[u8]) -> Vec<u8> {
    match r {
        Merged::Target => a.to_vec(),
        Merged::Patch => b.to_vec(),
        Merged::Built(mut v) => {
            let len = v.len();
            v[..4].copy_from_slice(&super::numeric::varsize_4b(len));
            v
        }
        Merged::Deleted => panic!("a tombstone deleted the document"),
    }
}

fn merge_text(t: &str, p: &str, policy: &str) -> String {
    let (t, p) = (json(t), json(p));
    let policy = Policy::parse_str(policy).unwrap();
    run(
        engine::deep_merge(&t[4..], &p[4..], &policy, Limits::depth(DEFAULT_MAX_DEPTH)),
        &t,
        &p,
    )
}

fn merge(t: &str, p: &str) -> String {
    merge_text(t, p, "null")
}

fn patch(t: &str, p: &str) -> String {
    let (t, p) = (json(t), json(p));
    run(
        engine::merge_patch(&t[4..], &p[4..], Limits::depth(DEFAULT_MAX_DEPTH)),
        &t,
        &p,
    )
}

fn diff(a: &str, b: &str) -> String {
    let (a, b) = (json(a), json(b));
    run(
        engine::diff(&a[4..], &b[4..], Limits::depth(DEFAULT_MAX_DEPTH)),
        &a,
        &b,
    )
}

/// Normalizes expected text through the codec (key order, spacing).
fn norm(s: &str) -> String {
    show(&json(s))
}

#[test]
fn default_merge() {
    assert_eq!(
        merge(
            r#"{"a":{"b":1,"c":[1,2]},"d":1}"#,
            r#"{"a":{"c":[3],"e":2},"d":{"x":1}}"#
        ),
        norm(r#"{"a":{"b":1,"c":[3],"e":2},"d":{"x":1}}"#)
    );
    // null keeps the stored value, and is stored where nothing was
    assert_eq!(
        merge(
            r#"{"a":1,"b":{"c":2}}"#,
            r#"{"a":null,"b":{"c":null},"n":null}"#
        ),
        norm(r#"{"a":1,"b":{"c":2},"n":null}"#)
    );
    // scalars and arrays at the top level: the patch wins
    assert_eq!(merge(r#"{"a":1}"#, "[1,2]"), "[1, 2]");
    assert_eq!(merge("[1]", r#"{"a":1}"#), norm(r#"{"a":1}"#));
    assert_eq!(merge("1", "2"), "2");
    assert_eq!(merge(r#"{"a":1}"#, "null"), norm(r#"{"a":1}"#));
    assert_eq!(merge(r#"{"a":1}"#, "{}"), norm(r#"{"a":1}"#));
    // an empty patch object carries no fields: it changes nothing stored
    assert_eq!(merge("[1]", "{}"), "[1]");
    assert_eq!(
        merge(r#"{"a":[1],"b":null}"#, r#"{"a":{},"b":{},"c":{}}"#),
        norm(r#"{"a":[1],"b":null,"c":{}}"#)
    );
    assert_eq!(
        merge("{}", r#"{"a":{"b":null}}"#),
        norm(r#"{"a":{"b":null}}"#)
    );
    // exact numerics are copied, never re-encoded
    assert_eq!(
        merge(
            r#"{"n":1.10}"#,
            r#"{"m":12345678901234567890.123456789012345,"z":-0}"#
        ),
        r#"{"m": 12345678901234567890.123456789012345, "n": 1.10, "z": 0}"#
    );
    // the empty key, escapes and unicode
    assert_eq!(
        merge(r#"{"":1,"é":"a\"b"}"#, r#"{"":2,"\n":"ü"}"#),
        norm(r#"{"":2,"\n":"ü","é":"a\"b"}"#)
    );
}

#[test]
fn tombstones_delete_keys() {
    let t = r#"{"a":1,"b":{"c":2,"d":3},"k":"kept"}"#;
    assert_eq!(
        merge(t, r#"{"a":{"$delete":true},"b":{"c":{"$delete":true}}}"#),
        norm(r#"{"b":{"d":3},"k":"kept"}"#)
    );
    // absent keys, and tombstones inside a subtree the target lacks
    assert_eq!(
        merge(
            t,
            r#"{"x":{"$delete":true},"n":{"y":{"$delete":true},"z":1}}"#
        ),
        norm(r#"{"a":1,"b":{"c":2,"d":3},"k":"kept","n":{"z":1}}"#)
    );
    assert_eq!(
        merge("{}", r#"{"n":{"y":{"$delete":true}}}"#),
        norm(r#"{"n":{}}"#)
    );
    // only the exact form is a tombstone
    assert_eq!(
        merge(t, r#"{"a":{"$delete":false},"k":{"$delete":true,"x":1}}"#),
        norm(r#"{"a":{"$delete":false},"b":{"c":2,"d":3},"k":{"$delete":true,"x":1}}"#)
    );
    // it outranks a keep rule; a whole-document tombstone deletes it
    assert_eq!(
        merge_text(t, r#"{"k":{"$delete":true}}"#, r#"{"paths":{"k":"keep"}}"#),
        norm(r#"{"a":1,"b":{"c":2,"d":3}}"#)
    );
    assert_eq!(merge(t, r#"{"$delete":true}"#), "<deleted>");
    // RFC 7396 is exact: null deletes, the tombstone is an ordinary object
    let (t, p) = (json(r#"{"a":1}"#), json(r#"{"a":{"$delete":true}}"#));
    let r = engine::merge_patch(&t[4..], &p[4..], Limits::depth(DEFAULT_MAX_DEPTH));
    assert_eq!(run(r, &t, &p), norm(r#"{"a":{"$delete":true}}"#));
}

#[test]
fn null_modes() {
    let (t, p) = (
        r#"{"a":1,"b":{"c":2}}"#,
        r#"{"a":null,"b":{"c":null},"n":null}"#,
    );
    assert_eq!(
        merge_text(t, p, r#"{"nulls":"overwrite"}"#),
        norm(r#"{"a":null,"b":{"c":null},"n":null}"#)
    );
    assert_eq!(
        merge_text(t, p, r#"{"nulls":"delete"}"#),
        norm(r#"{"b":{}}"#)
    );
    // inserted subtrees lose their nulls under delete, as RFC 7396 does
    assert_eq!(
        merge_text("{}", r#"{"x":{"y":null,"z":1}}"#, r#"{"nulls":"delete"}"#),
        norm(r#"{"x":{"z":1}}"#)
    );
    // a path can delete nulls in its subtree only
    assert_eq!(
        merge_text(
            r#"{"p":{"a":1},"q":{"a":1}}"#,
            r#"{"p":{"a":null},"q":{"a":null}}"#,
            r#"{"paths":{"p":{"nulls":"delete"}}}"#
        ),
        norm(r#"{"p":{},"q":{"a":1}}"#)
    );
}

#[test]
fn array_modes() {
    let (t, p) = (r#"{"a":[1,2,{"k":1}]}"#, r#"{"a":[2,3,{"k":1.0}]}"#);
    assert_eq!(
        merge_text(t, p, r#"{"arrays":"replace"}"#),
        norm(r#"{"a":[2,3,{"k":1.0}]}"#)
    );
    assert_eq!(
        merge_text(t, p, r#"{"arrays":"concat"}"#),
        norm(r#"{"a":[1,2,{"k":1},2,3,{"k":1.0}]}"#)
    );
    // union: equality as jsonb = (1 = 1.0)
    assert_eq!(
        merge_text(t, p, r#"{"arrays":"union"}"#),
        norm(r#"{"a":[1,2,{"k":1},3]}"#)
    );
    let items_t = r#"{"items":[{"id":1,"q":1,"x":"keep"},{"id":2,"q":2},"loose",{"q":9}]}"#;
    let items_p = r#"{"items":[{"id":2,"q":20},{"id":3,"q":3},{"id":1,"q":10},{"id":3,"z":true},{"nokey":1}]}"#;
    assert_eq!(
        merge_text(items_t, items_p, r#"{"paths":{"items":"merge_by:id"}}"#),
        norm(
            r#"{"items":[{"id":1,"q":10,"x":"keep"},{"id":2,"q":20},"loose",{"q":9},{"id":3,"q":3,"z":true},{"nokey":1}]}"#
        )
    );
    // several patch elements for one record: a tombstone in a later one
    // still deletes (its merge once ran without tombstones and stored it)
    assert_eq!(
        merge_text(
            r#"{"items":[{"id":1,"a":1,"b":2}]}"#,
            r#"{"items":[{"id":1,"c":3},{"id":1,"a":{"$delete":true}},{"id":2,"x":1},{"id":2,"x":{"$delete":true}}]}"#,
            r#"{"arrays":"merge_by:id"}"#
        ),
        norm(r#"{"items":[{"id":1,"b":2,"c":3},{"id":2}]}"#)
    );
    // path rules see through merge_by arrays
    assert_eq!(
        merge_text(
            r#"{"items":[{"id":1,"q":5}]}"#,
            r#"{"items":[{"id":1,"q":3}]}"#,
            r#"{"paths":{"items":"merge_by:id","items.q":"max"}}"#
        ),
        norm(r#"{"items":[{"id":1,"q":5}]}"#)
    );
    // modes apply only when both sides are arrays
    assert_eq!(
        merge_text(r#"{"a":[1]}"#, r#"{"a":2}"#, r#"{"arrays":"concat"}"#),
        norm(r#"{"a":2}"#)
    );
    assert_eq!(
        merge_text("[1]", "[1,2]", r#"{"arrays":"union"}"#),
        "[1, 2]"
    );
}

#[test]
fn value_rules() {
    let policy = r#"{"paths":{"inventory":"replace","prices.*":"max","local":"keep","low":"min","name":"max"}}"#;
    let t = r#"{"inventory":{"a":1,"b":2},"prices":{"x":10,"y":"b"},"local":{"v":1},"low":3,"name":"bob"}"#;
    let p = r#"{"inventory":{"a":5},"prices":{"x":9.5,"y":"c","z":1},"local":{"v":2},"low":2.50,"name":7}"#;
    assert_eq!(
        merge_text(t, p, policy),
        norm(
            r#"{"inventory":{"a":5},"prices":{"x":10,"y":"c","z":1},"local":{"v":1},"low":2.50,"name":7}"#
        )
    );
    // keep outranks the null mode
    assert_eq!(
        merge_text(
            r#"{"l":1}"#,
            r#"{"l":null}"#,
            r#"{"nulls":"delete","paths":{"l":"keep"}}"#
        ),
        norm(r#"{"l":1}"#)
    );
    // keep: a stored null counts as absent
    assert_eq!(
        merge_text(r#"{"l":null}"#, r#"{"l":1}"#, r#"{"paths":{"l":"keep"}}"#),
        norm(r#"{"l":1}"#)
    );
    // max ties keep the stored representation
    assert_eq!(
        merge_text(r#"{"m":1.0}"#, r#"{"m":1.00}"#, r#"{"paths":{"m":"max"}}"#),
        norm(r#"{"m":1.0}"#)
    );
    // escaped dots in paths
    assert_eq!(
        merge_text(
            r#"{"a.b":1}"#,
            r#"{"a.b":0}"#,
            r#"{"paths":{"a\\.b":"max"}}"#
        ),
        norm(r#"{"a.b":1}"#)
    );
}

/// RFC 7396 Appendix A, every example, plus the section 3 example.
#[test]
fn rfc7396_examples() {
    let cases = [
        (r#"{"a":"b"}"#, r#"{"a":"c"}"#, r#"{"a":"c"}"#),
        (r#"{"a":"b"}"#, r#"{"b":"c"}"#, r#"{"a":"b","b":"c"}"#),
        (r#"{"a":"b"}"#, r#"{"a":null}"#, r#"{}"#),
        (r#"{"a":"b","b":"c"}"#, r#"{"a":null}"#, r#"{"b":"c"}"#),
        (r#"{"a":["b"]}"#, r#"{"a":"c"}"#, r#"{"a":"c"}"#),
        (r#"{"a":"c"}"#, r#"{"a":["b"]}"#, r#"{"a":["b"]}"#),
        (
            r#"{"a":{"b":"c"}}"#,
            r#"{"a":{"b":"d","c":null}}"#,
            r#"{"a":{"b":"d"}}"#,
        ),
        (r#"{"a":[{"b":"c"}]}"#, r#"{"a":[1]}"#, r#"{"a":[1]}"#),
        (r#"["a","b"]"#, r#"["c","d"]"#, r#"["c","d"]"#),
        (r#"{"a":"b"}"#, r#"["c"]"#, r#"["c"]"#),
        (r#"{"a":"foo"}"#, "null", "null"),
        (r#"{"a":"foo"}"#, r#""bar""#, r#""bar""#),
        (r#"{"e":null}"#, r#"{"a":1}"#, r#"{"e":null,"a":1}"#),
        (r#"[1,2]"#, r#"{"a":"b","c":null}"#, r#"{"a":"b"}"#),
        (
            r#"{}"#,
            r#"{"a":{"bb":{"ccc":null}}}"#,
            r#"{"a":{"bb":{}}}"#,
        ),
        (
            r#"{"title":"Goodbye!","author":{"givenName":"John","familyName":"Doe"},"tags":["example","sample"],"content":"This will be unchanged"}"#,
            r#"{"title":"Hello!","phoneNumber":"+01-123-456-7890","author":{"familyName":null},"tags":["example"]}"#,
            r#"{"title":"Hello!","author":{"givenName":"John"},"tags":["example"],"content":"This will be unchanged","phoneNumber":"+01-123-456-7890"}"#,
        ),
    ];
    for (t, p, want) in cases {
        assert_eq!(patch(t, p), norm(want), "merge_patch({t}, {p})");
    }
}

#[test]
fn diffs() {
    assert_eq!(
        diff(
            r#"{"a":1,"b":{"c":1,"d":2},"e":[1]}"#,
            r#"{"a":1,"b":{"c":2,"d":2},"f":true,"e":[1,2]}"#
        ),
        norm(r#"{"b":{"c":2},"e":[1,2],"f":true}"#)
    );
    assert_eq!(diff(r#"{"a":1}"#, r#"{"a":1}"#), "{}");
    assert_eq!(diff(r#"{"a":1}"#, r#"{}"#), norm(r#"{"a":null}"#));
    assert_eq!(diff(r#"{"n":1.0}"#, r#"{"n":1.00}"#), norm(r#"{"n":1.00}"#));
    assert_eq!(diff("[1]", r#"{"a":1}"#), norm(r#"{"a":1}"#));
    assert_eq!(diff(r#"{"a":1}"#, "3"), "3");
}

#[test]
fn depth_limit_is_an_error_not_a_crash() {
    let deep = |n: usize| format!("{}1{}", "{\"a\":".repeat(n), "}".repeat(n));
    let (t, p) = (json(&deep(50)), json(&deep(50)));
    let policy = Policy::default();
    assert_eq!(
        engine::deep_merge(&t[4..], &p[4..], &policy, Limits::depth(10)),
        Err(engine::MergeError::TooDeep { limit: 10 })
    );
    assert!(engine::deep_merge(&t[4..], &p[4..], &policy, Limits::depth(100)).is_ok());
    // the root is level 1: ten nested objects fit a limit of ten, eleven do not
    let (t10, t11) = (json(&deep(10)), json(&deep(11)));
    assert!(engine::deep_merge(&t10[4..], &t10[4..], &policy, Limits::depth(10)).is_ok());
    assert!(engine::deep_merge(&t11[4..], &t11[4..], &policy, Limits::depth(10)).is_err());
    // subtrees only one side has are copied, not walked: no depth cost
    let (t, p) = (json(&deep(5000)), json(r#"{"b":1}"#));
    assert!(engine::deep_merge(&t[4..], &p[4..], &policy, Limits::depth(10)).is_ok());
}

// ---- properties against a reference model ---------------------------------

/// A JSON value with numbers kept as text, objects as ordered pair lists.
#[derive(Clone, Debug)]
enum M {
    Null,
    Bool(bool),
    Num(String),
    Str(String),
    Arr(Vec<M>),
    Obj(Vec<(String, M)>),
}

impl M {
    fn to_json(&self) -> String {
        match self {
            M::Null => "null".into(),
            M::Bool(b) => b.to_string(),
            M::Num(n) => n.clone(),
            M::Str(s) => serde_json::to_string(s).unwrap(),
            M::Arr(v) => format!(
                "[{}]",
                v.iter().map(M::to_json).collect::<Vec<_>>().join(",")
            ),
            M::Obj(v) => format!(
                "{{{}}}",
                v.iter()
                    .map(|(k, v)| format!("{}:{}", serde_json::to_string(k).unwrap(), v.to_json()))
                    .collect::<Vec<_>>()
                    .join(",")
            ),
        }
    }

    /// jsonb semantics: the last duplicate key wins.
    fn get(&self, key: &str) -> Option<&M> {
        match self {
            M::Obj(v) => v.iter().rev().find(|(k, _)| k == key).map(|(_, v)| v),
            _ => None,
        }
    }

    fn keys(&self) -> Vec<String> {
        let M::Obj(v) = self else { return vec![] };
        let mut keys: Vec<String> = v.iter().map(|(k, _)| k.clone()).collect();
        keys.sort();
        keys.dedup();
        keys
    }

    /// The same document with every null replaced by `false`.
    fn without_nulls(self) -> M {
        match self {
            M::Null => M::Bool(false),
            M::Arr(v) => M::Arr(v.into_iter().map(M::without_nulls).collect()),
            M::Obj(v) => M::Obj(v.into_iter().map(|(k, v)| (k, v.without_nulls())).collect()),
            other => other,
        }
    }
}

/// The default deep merge, written the obvious way.
fn reference_merge(t: &M, p: &M) -> M {
    match (t, p) {
        (M::Obj(_), M::Obj(_)) => {
            let mut keys = t.keys();
            keys.extend(p.keys());
            keys.sort();
            keys.dedup();
            M::Obj(
                keys.into_iter()
                    .map(|k| {
                        let v = match (t.get(&k), p.get(&k)) {
                            (Some(tv), Some(M::Null)) => tv.clone(),
                            (Some(tv), Some(pv)) => reference_merge(tv, pv),
                            (Some(tv), None) => tv.clone(),
                            (None, Some(pv)) => pv.clone(),
                            (None, None) => unreachable!(),
                        };
                        (k, v)
                    })
                    .collect(),
            )
        }
        (_, M::Null) => t.clone(),
        // an empty patch object carries nothing to store
        (_, M::Obj(_)) if p.keys().is_empty() => t.clone(),
        _ => p.clone(),
    }
}

fn leaf() -> impl Strategy<Value = M> {
    prop_oneof![
        Just(M::Null),
        any::<bool>().prop_map(M::Bool),
        prop_oneof![
            Just("0".to_string()),
            Just("-0".to_string()),
            Just("1.10".to_string()),
            Just("1e-400".to_string()),
            Just("12345678901234567890.123456789012345".to_string()),
            (-1000i64..1000, 0u32..4).prop_map(|(i, s)| format!(
                "{}{}",
                i,
                if s > 0 {
                    format!(".{}", "5".repeat(s as usize))
                } else {
                    String::new()
                }
            )),
        ]
        .prop_map(M::Num),
        "[a-c\u{e9}\"\\\\\n]{0,3}".prop_map(M::Str),
    ]
}

fn doc() -> impl Strategy<Value = M> {
    leaf().prop_recursive(4, 48, 6, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..4).prop_map(M::Arr),
            prop::collection::vec(("[a-c]{0,2}", inner), 0..6).prop_map(M::Obj),
        ]
    })
}

fn obj() -> impl Strategy<Value = M> {
    prop::collection::vec(("[a-c]{0,2}", doc()), 0..6).prop_map(M::Obj)
}

fn bytes(m: &M) -> Vec<u8> {
    json(&m.to_json())
}

fn merged(t: &[u8], p: &[u8]) -> Vec<u8> {
    finish(
        engine::deep_merge(
            &t[4..],
            &p[4..],
            &Policy::default(),
            Limits::depth(DEFAULT_MAX_DEPTH),
        )
        .unwrap(),
        t,
        p,
    )
}

fn is_object(datum: &[u8]) -> bool {
    super::jsonb::Container::new(&datum[4..]).is_ok_and(|c| c.kind() == super::jsonb::Kind::Object)
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2000))]

    #[test]
    fn empty_patch_is_identity(a in doc()) {
        let a = bytes(&a);
        prop_assert_eq!(merged(&a, &json("{}")), a.clone());
        // and an empty target takes the patch as is
        if is_object(&a) {
            prop_assert_eq!(show(&merged(&json("{}"), &a)), show(&a));
        }
    }

    #[test]
    fn merge_is_idempotent(a in doc(), b in doc()) {
        let (a, b) = (bytes(&a), bytes(&b));
        let once = merged(&a, &b);
        prop_assert_eq!(merged(&once, &b), once);
    }

    #[test]
    fn matches_reference(a in doc(), b in doc()) {
        let got = merged(&bytes(&a), &bytes(&b));
        prop_assert_eq!(show(&got), show(&bytes(&reference_merge(&a, &b))));
        // and the output is well-formed jsonb, byte-identical to parsing its text
        prop_assert_eq!(json(&show(&got)), got);
    }

    #[test]
    fn diff_then_patch_round_trips(a in obj(), b in obj().prop_map(|b| b.without_nulls())) {
        let (a, b) = (bytes(&a), bytes(&b));
        let d = finish(engine::diff(&a[4..], &b[4..], Limits::depth(DEFAULT_MAX_DEPTH)).unwrap(), &a, &b);
        let r = finish(engine::merge_patch(&a[4..], &d[4..], Limits::depth(DEFAULT_MAX_DEPTH)).unwrap(), &a, &d);
        prop_assert_eq!(show(&r), show(&b));
    }

    #[test]
    fn aggregate_fold_equals_pairwise(parts in prop::collection::vec(doc(), 1..5)) {
        // jsonb_deep_merge_agg's step is jsonb_deep_merge: folding left to
        // right must equal the nested calls written out.
        let docs: Vec<Vec<u8>> = parts.iter().map(bytes).collect();
        let folded = docs[1..].iter().fold(docs[0].clone(), |acc, d| merged(&acc, d));
        let reference = parts[1..].iter().fold(parts[0].clone(), |acc, d| reference_merge(&acc, d));
        prop_assert_eq!(show(&folded), show(&bytes(&reference)));
    }

    #[test]
    fn any_policy_never_panics(a in doc(), b in doc(), arrays in 0..4usize, nulls in 0..3usize, rule in 0..9usize) {
        let arrays = ["replace", "concat", "union", "merge_by:a"][arrays];
        let nulls = ["keep", "overwrite", "delete"][nulls];
        let rule = ["merge", "keep", "replace", "max", "min", "concat", "union", "merge_by:b", "{\"nulls\":\"delete\"}"][rule];
        let rule = if rule.starts_with('{') { rule.to_string() } else { format!("\"{rule}\"") };
        let policy = Policy::parse_str(&format!(r#"{{"arrays":"{arrays}","nulls":"{nulls}","paths":{{"a":{rule},"*.b":"max"}}}}"#)).unwrap();
        let (a, b) = (bytes(&a), bytes(&b));
        let r = engine::deep_merge(&a[4..], &b[4..], &policy, Limits::depth(DEFAULT_MAX_DEPTH)).unwrap();
        let out = finish(r, &a, &b);
        prop_assert_eq!(json(&show(&out)), out);
    }
}

#[test]
fn malformed_input_is_an_error_not_a_panic() {
    let t = json(r#"{"a":"xxxxxxxxxxxx","b":{"c":1}}"#);
    let p = json(r#"{"a":1,"b":{"d":2}}"#);
    let policy = Policy::default();
    for cut in 5..t.len() {
        // every truncation: an error or a result, never a panic
        let _ = engine::deep_merge(
            &t[4..cut],
            &p[4..],
            &policy,
            Limits::depth(DEFAULT_MAX_DEPTH),
        );
    }
    let short = &t[4..t.len() - 3];
    assert_eq!(
        engine::deep_merge(short, &p[4..], &policy, Limits::depth(DEFAULT_MAX_DEPTH)),
        Err(engine::MergeError::Format)
    );
}

#[test]
fn every_single_byte_corruption_is_an_error_or_a_result() {
    // A container header that promises an object or array its bytes do not
    // hold once reached the engine's "cannot happen" branch (a panic).
    let docs = [
        r#"[0, {}]"#,
        r#"{"a":{"b":[1,{"c":null}],"id":1},"z":"$delete"}"#,
    ];
    let policies = [
        Policy::default(),
        Policy::parse_str(r#"{"arrays":"merge_by:id","nulls":"delete"}"#).unwrap(),
        Policy::parse_str(r#"{"arrays":"union","paths":{"*":"max"}}"#).unwrap(),
    ];
    let limits = Limits::depth(DEFAULT_MAX_DEPTH);
    for doc in docs {
        let good = json(doc);
        for at in 4..good.len() {
            for byte in 0..=255u8 {
                let mut bad = good.clone();
                bad[at] = byte;
                let (bad, good) = (&bad[4..], &good[4..]);
                for policy in &policies {
                    let _ = engine::deep_merge(bad, good, policy, limits);
                    let _ = engine::deep_merge(good, bad, policy, limits);
                }
                let _ = engine::merge_patch(good, bad, limits);
                let _ = engine::diff(bad, good, limits);
                let _ = engine::diff(good, bad, limits);
            }
        }
    }
}

/// A document written back whole, changed: the result is the patch itself,
/// with no new document written; anything the patch lacks, or a rule that
/// keeps a stored value, makes a new one.
#[test]
fn a_patch_holding_every_stored_key_is_the_result() {
    let kind = |t: &str, p: &str, policy: &str| {
        let (t, p) = (json(t), json(p));
        let policy = Policy::parse_str(policy).unwrap();
        match engine::deep_merge(&t[4..], &p[4..], &policy, Limits::depth(DEFAULT_MAX_DEPTH)) {
            Ok(Merged::Patch) => "patch",
            Ok(Merged::Target) => "target",
            Ok(Merged::Built(_)) => "built",
            other => panic!("{other:?}"),
        }
    };
    let stored = r#"{"a": 1, "s": {"g": {"f": 1, "h": "x"}, "l": [1]}}"#;
    let written = r#"{"a": 1, "s": {"g": {"f": 2, "h": "x"}, "l": [1]}, "n": null}"#;
    assert_eq!(kind(stored, written, "null"), "patch");
    assert_eq!(
        kind(
            stored,
            r#"{"a": 2, "s": {"g": {"f": 2}, "l": [1]}}"#,
            "null"
        ),
        "built"
    );
    assert_eq!(kind(stored, written, r#"{"nulls": "delete"}"#), "built");
    assert_eq!(
        kind(stored, written, r#"{"paths": {"s.g.f": "keep"}}"#),
        "built"
    );
    assert_eq!(kind(stored, written, r#"{"arrays": "union"}"#), "built");
    assert_eq!(
        kind(stored, written, r#"{"paths": {"s.g.f": "max"}}"#),
        "patch"
    );
    // A tombstone in a part both sides hold alike still deletes its key; a
    // `$` elsewhere, or a key that only starts like the tombstone's, does not.
    let stored = r#"{"a": 1, "s": {"x": {"$delete": true}, "y": 1}}"#;
    assert_eq!(
        kind(
            stored,
            r#"{"a": 2, "s": {"x": {"$delete": true}, "y": 1}}"#,
            "null"
        ),
        "built"
    );
    assert_eq!(
        kind(
            r#"{"a": 1, "s": {"p": "$5"}}"#,
            r#"{"a": 2, "s": {"p": "$5"}}"#,
            "null"
        ),
        "patch"
    );
    assert_eq!(
        kind(
            r#"{"a": 1, "s": {"$delet": true}}"#,
            r#"{"a": 2, "s": {"$delet": true}}"#,
            "null"
        ),
        "patch"
    );
}

#[test]
fn a_tombstone_key_is_found_at_any_offset() {
    for len in 0..100 {
        let plain = vec![b'x'; len];
        assert!(!engine::may_hold_tombstone(&plain));
        for at in 0..len {
            let mut b = plain.clone();
            b[at] = b'$';
            assert!(!engine::may_hold_tombstone(&b), "a lone $ at {at} of {len}");
            let mut b = plain.clone();
            b.splice(at.., engine::TOMBSTONE_KEY.iter().copied());
            assert!(
                engine::may_hold_tombstone(&b),
                "$delete at {at} of {}",
                b.len()
            );
            b.pop();
            assert!(
                !engine::may_hold_tombstone(&b),
                "$delet at {at} of {}",
                b.len()
            );
        }
    }
}
