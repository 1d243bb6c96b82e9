//! SQL functions of the merge core: `jsonb_deep_merge`, its operator and
//! aggregate, `jsonb_merge_patch` and `jsonb_merge_diff`.
//!
//! All are IMMUTABLE and PARALLEL SAFE and read no tables, so they may be
//! used in indexes, generated columns and `ON CONFLICT DO UPDATE SET` on
//! distributed tables. None is STRICT: SQL NULL means "nothing known", so
//! `f(NULL, x) = x` and `f(x, NULL) = x`.

use crate::errors::SqlError;
use crate::jsonb_arg::JsonbRaw;
use crate::merge::engine::{self, Limits, MergeError, Merged};
use crate::merge::jsonb::EMPTY_OBJECT;
use crate::merge::policy::{Policy, PolicyError};
use crate::merge::text;
use crate::settings::MAX_MERGE_DEPTH;
use pgrx::prelude::*;
use std::cell::RefCell;
use std::rc::Rc;

pub(crate) fn limits() -> Limits {
    // SAFETY: stack_is_too_deep only compares a local's address with the
    // recorded stack base; it never raises an error.
    Limits {
        max_depth: MAX_MERGE_DEPTH.get().max(1) as usize,
        stack_too_deep: || unsafe { pg_sys::stack_is_too_deep() },
    }
}

pub(crate) fn raise_merge_error(e: MergeError) -> ! {
    let (code, message, hint) = match e {
        MergeError::TooDeep { limit } => (
            PgSqlErrorCode::ERRCODE_STATEMENT_TOO_COMPLEX,
            format!("jsonb nesting exceeds the merge depth limit of {limit} levels"),
            "Raise syncguard.max_merge_depth, or store the deeply nested part as an opaque value.",
        ),
        MergeError::StackTooDeep => (
            PgSqlErrorCode::ERRCODE_STATEMENT_TOO_COMPLEX,
            "jsonb nesting too deep for the server's stack (max_stack_depth)".to_string(),
            "Lower syncguard.max_merge_depth, or raise max_stack_depth if the platform's stack limit allows.",
        ),
        MergeError::TooLarge => (
            PgSqlErrorCode::ERRCODE_PROGRAM_LIMIT_EXCEEDED,
            "merged jsonb would exceed the maximum size of a jsonb value (268435455 bytes)".to_string(),
            "Split the document into smaller values.",
        ),
        MergeError::TooManyElements => (
            PgSqlErrorCode::ERRCODE_PROGRAM_LIMIT_EXCEEDED,
            "merged jsonb would exceed the maximum number of elements of a jsonb container".to_string(),
            "Split the document into smaller values.",
        ),
        MergeError::Format => (
            PgSqlErrorCode::ERRCODE_DATA_CORRUPTED,
            "jsonb value is corrupted".to_string(),
            "The stored jsonb is not in PostgreSQL's binary format; restore it from a backup.",
        ),
    };
    SqlError::new(code, message).hint(hint).raise()
}

fn raise_policy_error(e: PolicyError) -> ! {
    SqlError::new(PgSqlErrorCode::ERRCODE_INVALID_PARAMETER_VALUE, e.message)
        .hint(e.hint)
        .raise()
}

/// How many policies `policy_of` keeps parsed: a statement merges a few
/// columns, each under its own policy, row after row.
const POLICY_SLOTS: usize = 8;

thread_local! {
    /// The last policies parsed, by their binary form, most recent first. An
    /// aggregate, a bulk UPDATE or a `merge_upsert` of several jsonb columns
    /// passes the same few policies on every row; this keeps parsing out of
    /// the per-row cost without one column's policy evicting another's.
    static POLICY_CACHE: RefCell<Vec<(Vec<u8>, Rc<Policy>)>> = const { RefCell::new(Vec::new()) };
    /// Built once: the default policy is used on every call without one.
    static DEFAULT_POLICY: Rc<Policy> = Rc::new(Policy::default());
}

fn policy_of(policy: Option<&JsonbRaw>) -> Rc<Policy> {
    let Some(policy) = policy else {
        return DEFAULT_POLICY.with(Rc::clone);
    };
    let bytes = policy.container();
    if let Some(hit) = POLICY_CACHE.with_borrow_mut(|c| {
        let i = c.iter().position(|(b, _)| b == bytes)?;
        let entry = c.remove(i);
        let hit = entry.1.clone();
        c.insert(0, entry);
        Some(hit)
    }) {
        return hit;
    }
    let text = text::to_text(bytes).unwrap_or_else(|_| raise_merge_error(MergeError::Format));
    let parsed = Rc::new(Policy::parse_str(&text).unwrap_or_else(|e| raise_policy_error(e)));
    POLICY_CACHE.with_borrow_mut(|c| {
        c.truncate(POLICY_SLOTS - 1);
        c.insert(0, (bytes.to_vec(), parsed.clone()));
    });
    parsed
}

/// The jsonb `{}`, for results that are "the target" when none was given.
fn empty_object() -> JsonbRaw {
    let mut buf = vec![0u8; 4];
    buf.extend_from_slice(EMPTY_OBJECT);
    JsonbRaw::from_built(&buf)
}

/// The merge result as a datum; `None` when a tombstone deleted the document.
pub(crate) fn finish(
    result: Result<Merged, MergeError>,
    target: Option<JsonbRaw>,
    patch: JsonbRaw,
) -> Option<JsonbRaw> {
    match result {
        Ok(Merged::Target) => Some(target.unwrap_or_else(empty_object)),
        Ok(Merged::Patch) => Some(patch),
        Ok(Merged::Built(buf)) => {
            let out = JsonbRaw::from_built(&buf);
            engine::recycle(buf);
            Some(out)
        }
        Ok(Merged::Deleted) => None,
        Err(e) => raise_merge_error(e),
    }
}

/// Deep-merges `patch` into `target` under an optional merge policy.
#[pg_extern(immutable, parallel_safe)]
fn jsonb_deep_merge(
    target: Option<JsonbRaw>,
    patch: Option<JsonbRaw>,
    policy: default!(Option<JsonbRaw>, "NULL"),
) -> Option<JsonbRaw> {
    let policy = policy_of(policy.as_ref());
    match (target, patch) {
        (t, None) => t,
        (None, Some(p)) if !policy.any_delete && !engine::may_hold_tombstone(p.container()) => {
            Some(p)
        }
        // A policy that deletes nulls never stores one, nor is a tombstone
        // stored, not even into an absent document: merge into `{}` so they
        // drop out.
        (t, Some(p)) => {
            let tb = t.as_ref().map_or(EMPTY_OBJECT, JsonbRaw::container);
            let r = engine::deep_merge(tb, p.container(), &policy, limits());
            finish(r, t, p)
        }
    }
}

/// The default deep merge with exactly two arguments: the function behind
/// the `||+` operator and the one-argument aggregate's step.
#[pg_extern(immutable, parallel_safe)]
fn jsonb_deep_merge_op(target: Option<JsonbRaw>, patch: Option<JsonbRaw>) -> Option<JsonbRaw> {
    jsonb_deep_merge(target, patch, None)
}

/// Applies an RFC 7396 JSON Merge Patch. A NULL target is an absent
/// document: the patch applies to nothing, so its nulls are dropped.
#[pg_extern(immutable, parallel_safe)]
fn jsonb_merge_patch(target: Option<JsonbRaw>, patch: Option<JsonbRaw>) -> Option<JsonbRaw> {
    let Some(p) = patch else { return target };
    let t = target.as_ref().map_or(EMPTY_OBJECT, JsonbRaw::container);
    let r = engine::merge_patch(t, p.container(), limits());
    finish(r, target, p)
}

/// The RFC 7396 merge patch that turns `old` into `new`. NULL `old` gives
/// `new` whole; NULL `new` gives NULL (no document to reach).
#[pg_extern(immutable, parallel_safe)]
fn jsonb_merge_diff(old: Option<JsonbRaw>, new: Option<JsonbRaw>) -> Option<JsonbRaw> {
    let (old, new) = match (old, new) {
        (_, None) => return None,
        (None, n) => return n,
        (Some(o), Some(n)) => (o, n),
    };
    let r = engine::diff(old.container(), new.container(), limits());
    finish(r, Some(old), new)
}

extension_sql!(
    r#"
-- `||` is jsonb's shallow concatenation; `||+` is the deep merge with the
-- default policy. Same precedence and left associativity as `||`, so
-- `a ||+ b ||+ c` merges left to right.
CREATE OPERATOR syncguard.||+ (
    LEFTARG = jsonb,
    RIGHTARG = jsonb,
    FUNCTION = syncguard.jsonb_deep_merge_op
);
COMMENT ON OPERATOR syncguard.||+ (jsonb, jsonb) IS 'deep merge: objects merge recursively, the right side wins, arrays replace, nulls keep';

-- Order-sensitive: use ORDER BY inside the call. No combine function:
-- deep merge is not associative (merge(merge(a,b),c) can differ from
-- merge(a,merge(b,c)) when a key changes between object and scalar), so
-- partial aggregation would change results.
CREATE AGGREGATE syncguard.jsonb_deep_merge_agg(jsonb) (
    SFUNC = syncguard.jsonb_deep_merge_op,
    STYPE = jsonb,
    PARALLEL = SAFE
);
CREATE AGGREGATE syncguard.jsonb_deep_merge_agg(jsonb, policy jsonb) (
    SFUNC = syncguard.jsonb_deep_merge,
    STYPE = jsonb,
    PARALLEL = SAFE
);

COMMENT ON FUNCTION syncguard.jsonb_deep_merge(jsonb, jsonb, jsonb) IS 'deep-merge patch into target under an optional merge policy; nulls and empty objects in the patch keep stored values';
COMMENT ON FUNCTION syncguard.jsonb_deep_merge_op(jsonb, jsonb) IS 'deep merge with the default policy: the function of the ||+ operator';
COMMENT ON FUNCTION syncguard.jsonb_merge_patch(jsonb, jsonb) IS 'apply an RFC 7396 JSON Merge Patch';
COMMENT ON FUNCTION syncguard.jsonb_merge_diff(jsonb, jsonb) IS 'the RFC 7396 merge patch that turns old into new';
COMMENT ON AGGREGATE syncguard.jsonb_deep_merge_agg(jsonb) IS 'deep-merge rows left to right (use ORDER BY)';
COMMENT ON AGGREGATE syncguard.jsonb_deep_merge_agg(jsonb, jsonb) IS 'deep-merge rows left to right under a merge policy (use ORDER BY)';
"#,
    name = "merge_operator_and_aggregates",
    requires = [
        jsonb_deep_merge,
        jsonb_deep_merge_op,
        jsonb_merge_patch,
        jsonb_merge_diff
    ]
);
