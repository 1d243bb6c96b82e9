//! Hostile and malformed input at the SQL level: random policies and option
//! values give only the SQLSTATEs the docs document (never XX000, never a
//! lost connection); nesting far beyond every limit and 100 MB documents are
//! clear errors or correct results, and the backend that got them keeps
//! serving the same connection.
use syncguard_client_tests::common;

use common::{Rng, TestCluster};
use postgres::{Client, Error};
use serde_json::{json, Value};

/// The SQLSTATEs docs/errors.md has a row for, but XX000 (never acceptable).
/// Its `22xxx` row covers class 22: a value a column's or argument's type
/// rejects fails with that type's own code (`22P02`, `22007`, ...).
fn documented(code: &str) -> bool {
    static CODES: std::sync::OnceLock<Vec<String>> = std::sync::OnceLock::new();
    let codes = CODES.get_or_init(|| {
        let doc =
            std::fs::read_to_string(syncguard_client_tests::repo().join("docs/errors.md")).unwrap();
        doc.lines()
            .filter_map(|l| l.strip_prefix("| `")?.split('`').next().map(str::to_string))
            .collect()
    });
    assert!(
        codes.len() > 20,
        "docs/errors.md lists too few codes: {codes:?}"
    );
    code != "XX000"
        && codes
            .iter()
            .any(|c| c == code || (c.ends_with("xxx") && code.starts_with(&c[..2])))
}

const WORDS: &[&str] = &[
    "replace",
    "concat",
    "union",
    "merge_by:id",
    "merge_by:",
    "keep",
    "overwrite",
    "delete",
    "merge",
    "max",
    "min",
    "zip",
    "",
    "id",
    "doc",
    "ts",
    "ver",
    "fresh",
    "name",
    "gen",
    "nope",
    "1 hour",
    "-5 minutes",
    "10",
    "a..b",
    "a.*",
    "\\",
    "*",
    "$delete",
    "'; DROP TABLE hostile_t; --",
];

const KEYS: &[&str] = &[
    "arrays",
    "nulls",
    "paths",
    "columns",
    "last_write_wins",
    "max_clock_skew",
    "version",
    "freshness",
    "value",
    "doc",
    "a",
    "a.b",
    "*",
    "id",
    "",
    "junk",
];

/// Any JSON, biased towards the words and keys policies are made of.
fn value(rng: &mut Rng, depth: usize) -> Value {
    match rng.below(if depth == 0 { 5 } else { 7 }) {
        0 => Value::Null,
        1 => Value::Bool(rng.chance(50)),
        2 => json!(*rng.pick(&[0.0, -1.0, 3.5, 1e300, 7.0, -0.5])),
        3 | 4 => json!(*rng.pick(WORDS)),
        5 => Value::Array((0..rng.below(4)).map(|_| value(rng, depth - 1)).collect()),
        _ => Value::Object(
            (0..rng.below(5))
                .map(|_| (rng.pick(KEYS).to_string(), value(rng, depth - 1)))
                .collect(),
        ),
    }
}

/// A policy: mostly an object with policy keys, sometimes anything at all.
fn policy(rng: &mut Rng) -> Value {
    if rng.chance(10) {
        return value(rng, 2);
    }
    Value::Object(
        (0..rng.below(4))
            .map(|_| (rng.pick(KEYS).to_string(), value(rng, 2)))
            .collect(),
    )
}

fn document(rng: &mut Rng) -> Value {
    Value::Object(
        (0..rng.below(5))
            .map(|_| (rng.pick(KEYS).to_string(), value(rng, 3)))
            .collect(),
    )
}

/// The SQLSTATE of a failed statement; panics on a lost connection.
fn sqlstate(client: &mut Client, e: &Error, what: &str) -> String {
    let Some(db) = e.as_db_error() else {
        panic!("{what}: not a server error (connection lost?): {e}");
    };
    let code = db.code().code().to_string();
    // the same connection keeps working
    client
        .query_one("SELECT 1", &[])
        .unwrap_or_else(|e| panic!("{what}: connection unusable after {code}: {e}"));
    code
}

/// Runs `sql`; an error must carry a documented SQLSTATE.
fn check(
    client: &mut Client,
    sql: &str,
    params: &[&(dyn postgres::types::ToSql + Sync)],
    seen: &mut Vec<String>,
) {
    if let Err(e) = client.execute(sql, params) {
        let code = sqlstate(client, &e, sql);
        assert!(
            documented(&code),
            "{sql} with {params:?} raised undocumented SQLSTATE {code}: {e}"
        );
        if !seen.contains(&code) {
            seen.push(code);
        }
    }
}

fn text(v: &Value) -> String {
    v.to_string()
}

#[test]
fn random_policies_and_options_give_only_documented_sqlstates() {
    let cluster = TestCluster::new();
    let mut client = cluster.connect_with_extension();
    client
        .batch_execute(
            "CREATE TABLE hostile_t (id int PRIMARY KEY, name text, doc jsonb, ts timestamptz,
                                     ver int, fresh jsonb, gen int GENERATED ALWAYS AS (id * 2) STORED);
             CREATE TABLE hostile_p (LIKE hostile_t INCLUDING ALL);",
        )
        .unwrap();
    let mut rng = Rng(0x5EED_0F_5A7C_6A2D);
    let mut seen = Vec::new();
    let intervals = ["30 seconds", "0", "-1 second", "100 years", "1 microsecond"];
    let tokens = [
        "00000000-0000-0000-0000-000000000000",
        "6f1d6ad4-8c1a-4b6e-9d0e-2b4f3f0a9c11",
    ];
    for case in 0..1500 {
        let (t, p, pol) = (
            text(&document(&mut rng)),
            text(&document(&mut rng)),
            text(&policy(&mut rng)),
        );
        check(
            &mut client,
            "SELECT syncguard.jsonb_deep_merge($1::text::jsonb, $2::text::jsonb, $3::text::jsonb)",
            &[&t, &p, &pol],
            &mut seen,
        );
        check(
            &mut client,
            "SELECT syncguard.jsonb_deep_merge_agg(d, $3::text::jsonb ORDER BY n)
               FROM (VALUES (1, $1::text::jsonb), (2, $2::text::jsonb)) v(n, d)",
            &[&t, &p, &pol],
            &mut seen,
        );
        // merge_upsert: a key, data and write policy of any shape
        let key = match rng.below(4) {
            0 => json!({"id": rng.below(20)}),
            1 => json!({"id": rng.below(20), "name": "x"}),
            _ => value(&mut rng, 1),
        };
        let mut data = document(&mut rng);
        if let (Some(d), true) = (data.as_object_mut(), rng.chance(70)) {
            for col in ["name", "doc", "ts", "ver", "fresh"] {
                if rng.chance(40) {
                    let v = match col {
                        "ts" => json!(*rng.pick(&[
                            "2026-01-01T00:00:00Z",
                            "2999-01-01",
                            "yesterday?",
                            "now"
                        ])),
                        "ver" => json!(rng.below(5)),
                        _ => value(&mut rng, 2),
                    };
                    d.insert(col.to_string(), v);
                }
            }
        }
        check(
            &mut client,
            "SELECT syncguard.merge_upsert('hostile_t', $1::text::jsonb, $2::text::jsonb, $3::text::jsonb)",
            &[&text(&key), &text(&data), &pol],
            &mut seen,
        );
        // protect: random columns and policy on a table the caller owns
        let columns: Option<Vec<String>> = rng.chance(70).then(|| {
            (0..rng.below(3))
                .map(|_| rng.pick(WORDS).to_string())
                .collect()
        });
        check(
            &mut client,
            "SELECT syncguard.protect('hostile_p', $1, $2::text::jsonb)",
            &[&columns, &pol],
            &mut seen,
        );
        if case % 7 == 0 {
            check(
                &mut client,
                "SELECT syncguard.unprotect('hostile_p')",
                &[],
                &mut seen,
            );
        }
        // the idempotency functions with any option values
        let scope: Option<&str> = rng.chance(90).then(|| *rng.pick(&["s", "", "a'b", "x;y"]));
        let idem_key: Option<String> = rng.chance(90).then(|| rng.below(30).to_string());
        let ignore: Option<Vec<String>> = rng.chance(30).then(|| {
            (0..rng.below(3))
                .map(|_| rng.pick(WORDS).to_string())
                .collect()
        });
        let (lease, ttl) = (
            rng.pick(&intervals).to_string(),
            rng.pick(&intervals).to_string(),
        );
        check(
            &mut client,
            "SELECT * FROM syncguard.idem_claim($1, $2, $3::text::jsonb, $4::text::interval, $5::text::interval, $6)",
            &[&scope, &idem_key, &t, &lease, &ttl, &ignore],
            &mut seen,
        );
        let token = rng.pick(&tokens).to_string();
        let attempts = *rng.pick(&[-1i32, 0, 1, 5, i32::MAX]);
        check(
            &mut client,
            "SELECT * FROM syncguard.idem_fail($1::text::uuid, 'boom', true, $2, $3::text::interval, $4::text::interval)",
            &[&token, &attempts, &lease, &ttl],
            &mut seen,
        );
        check(
            &mut client,
            "SELECT syncguard.idem_complete($1::text::uuid, $2::text::jsonb)",
            &[&token, &p],
            &mut seen,
        );
        let jitter = *rng.pick(&[-0.5f64, 0.0, 0.2, 1.0, 2.0, f64::NAN]);
        check(
            &mut client,
            "SELECT syncguard.backoff_delay($1, $2::text::interval, $3::text::interval, $4)",
            &[&attempts, &lease, &ttl, &jitter],
            &mut seen,
        );
        check(
            &mut client,
            "SELECT syncguard.idem_prune($1)",
            &[&attempts],
            &mut seen,
        );
    }
    seen.sort();
    // the generator reaches the errors it is meant to: bad policies, bad
    // columns, bad arguments, NULLs
    for code in ["22023", "42703", "22004"] {
        assert!(
            seen.iter().any(|c| c == code),
            "never raised {code}; raised {seen:?}"
        );
    }
    eprintln!("SQLSTATEs raised: {seen:?}");
}

/// A document nested `depth` levels deep: `{"a": {"a": ... 1 ...}}`.
fn nested(depth: usize) -> String {
    format!("{}1{}", "{\"a\":".repeat(depth), "}".repeat(depth))
}

/// Ok, or an error with one of `allowed` SQLSTATEs; the connection survives.
fn ok_or(client: &mut Client, sql: &str, allowed: &[&str]) -> Option<Vec<postgres::Row>> {
    match client.query(sql, &[]) {
        Ok(rows) => Some(rows),
        Err(e) => {
            let code = sqlstate(client, &e, sql);
            assert!(
                allowed.contains(&code.as_str()),
                "{sql}: SQLSTATE {code}: {e}"
            );
            None
        }
    }
}

#[test]
fn extreme_nesting_is_a_clear_error_or_a_correct_result() {
    let cluster = TestCluster::new();
    let mut client = cluster.connect_with_extension();
    client
        .batch_execute("CREATE TABLE deep_t (id int PRIMARY KEY, doc jsonb)")
        .unwrap();
    let too_deep = ["54001"];
    for depth in [900, 5_000, 20_000, 100_000] {
        client
            .batch_execute("DROP TABLE IF EXISTS deep; TRUNCATE deep_t")
            .unwrap();
        let doc = nested(depth);
        // The server's own jsonb input has a stack limit: beyond it the
        // document cannot exist as jsonb, and that is the clear error.
        if let Err(e) = client.execute("CREATE TABLE deep AS SELECT $1::text::jsonb AS d", &[&doc])
        {
            assert_eq!(
                sqlstate(&mut client, &e, "jsonb input"),
                "54001",
                "depth {depth}: {e}"
            );
            for f in [
                "syncguard.jsonb_deep_merge($1::text::jsonb, '{}')",
                "syncguard.jsonb_merge_patch('{}', $1::text::jsonb)",
            ] {
                let e = client.query(&format!("SELECT {f}"), &[&doc]).unwrap_err();
                assert_eq!(sqlstate(&mut client, &e, f), "54001");
            }
            continue;
        }
        for limit in ["1000", "100000"] {
            client
                .batch_execute(&format!("SET syncguard.max_merge_depth = {limit}"))
                .unwrap();
            let same = "(SELECT pg_catalog.md5(x::text) = pg_catalog.md5(d::text) FROM deep)";
            let checks = [
                format!("SELECT {same} FROM (SELECT syncguard.jsonb_deep_merge(d, d) x FROM deep) s"),
                format!("SELECT {same} FROM (SELECT d OPERATOR(syncguard.||+) d x FROM deep) s"),
                format!("SELECT {same} FROM (SELECT syncguard.jsonb_deep_merge_agg(d ORDER BY n) x FROM deep, generate_series(1, 2) n) s"),
                format!("SELECT {same} FROM (SELECT syncguard.jsonb_merge_patch(d, d) x FROM deep) s"),
                "SELECT syncguard.jsonb_merge_diff(d, d) = '{}' FROM deep".to_string(),
                "SELECT syncguard.merge_upsert('deep_t', '{\"id\": 1}', jsonb_build_object('doc', d)) IS NOT NULL FROM deep".to_string(),
                "SELECT syncguard.merge_upsert('deep_t', '{\"id\": 1}', jsonb_build_object('doc', d)) IS NOT NULL FROM deep".to_string(),
                format!("SELECT outcome IN ('claimed', 'in_progress') FROM deep, syncguard.idem_claim('deep', '{depth}', d)"),
            ];
            for sql in &checks {
                if let Some(rows) = ok_or(&mut client, sql, &too_deep) {
                    assert!(
                        rows[0].get::<_, bool>(0),
                        "depth {depth}, limit {limit}: wrong result of {sql}"
                    );
                } else {
                    // refused only where the walk really is deeper than the limit
                    assert!(
                        depth > 1000,
                        "depth {depth} refused under limit {limit}: {sql}"
                    );
                }
            }
            // depth that only one side has is copied, not walked
            let one_sided =
                "SELECT syncguard.jsonb_deep_merge(d, '{\"b\": 1}') -> 'b' = '1' FROM deep";
            let rows = client.query(one_sided, &[]).unwrap();
            assert!(rows[0].get::<_, bool>(0));
        }
        client
            .batch_execute("RESET syncguard.max_merge_depth")
            .unwrap();
    }
}

#[test]
fn hundred_megabyte_documents_merge_or_fail_clearly() {
    let cluster = TestCluster::new();
    let mut client = cluster.connect_with_extension();
    // 1,000,000 keys of about 100 bytes each
    client
        .batch_execute(
            "CREATE TABLE big AS SELECT jsonb_object_agg('k' || i, repeat(md5(i::text), 3)) AS d
               FROM generate_series(1, 1000000) i;
             CREATE TABLE big_t (id int PRIMARY KEY, doc jsonb);",
        )
        .unwrap();
    let size: i32 = client
        .query_one("SELECT octet_length(d::text) FROM big", &[])
        .unwrap()
        .get(0);
    assert!(size > 100_000_000, "the document has {size} bytes");
    let checks = [
        // a change and a new key in a 100 MB document
        "SELECT m -> 'k1' = '\"changed\"' AND m -> 'k999999' = d -> 'k999999' AND m -> 'new' = '1'
           FROM (SELECT d, syncguard.jsonb_deep_merge(d, '{\"k1\": \"changed\", \"new\": 1}') m FROM big) s",
        "SELECT pg_catalog.md5(syncguard.jsonb_deep_merge(d, d)::text) = pg_catalog.md5(d::text) FROM big",
        "SELECT syncguard.jsonb_merge_patch(d, '{\"k2\": null}') ? 'k2' = false FROM big",
        "SELECT syncguard.jsonb_merge_diff(d, d) = '{}' FROM big",
        "SELECT (syncguard.merge_upsert('big_t', '{\"id\": 1}', jsonb_build_object('doc', d)) -> 'doc') ? 'k5' FROM big",
        "SELECT (syncguard.merge_upsert('big_t', '{\"id\": 1}', '{\"doc\": {\"k5\": 5}}') -> 'doc' -> 'k5') = '5'",
        "SELECT outcome = 'claimed' FROM big, syncguard.idem_claim('big', 'k', d)",
    ];
    for sql in checks {
        let rows = client
            .query(sql, &[])
            .unwrap_or_else(|e| panic!("{sql}: {e}"));
        assert!(rows[0].get::<_, bool>(0), "wrong result of {sql}");
    }
    // two different 150 MB documents: the merge would exceed jsonb's 256 MB
    client
        .batch_execute(
            "CREATE TABLE big2 AS SELECT jsonb_object_agg('j' || i, repeat(md5(i::text), 5)) AS d
               FROM generate_series(1, 1000000) i;",
        )
        .unwrap();
    let e = client
        .query("SELECT pg_column_size(syncguard.jsonb_deep_merge(a.d, jsonb_build_object('x', a.d, 'y', b.d))) FROM big2 a, big b", &[])
        .unwrap_err();
    assert_eq!(sqlstate(&mut client, &e, "too large"), "54000", "{e}");
}
