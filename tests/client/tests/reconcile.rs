//! `syncguard.reconcile`, `reconcile_apply` and `invariant_reconcile`
//! between two real servers: the "local" one with syncguard, and a "remote"
//! one (the source system) reached through a `postgres_fdw` foreign table.
//!
//! Rows that crossed the network are counted on the remote server by
//! `pg_stat_statements`: postgres_fdw reads every result through `FETCH n
//! FROM cursor`, and the `rows` of those statements are the rows it sent.

use syncguard_client_tests::common;

use common::TestCluster;
use postgres::Client;
use serde_json::{json, Value};

/// A local server with syncguard and a foreign server `supplier` pointing at
/// a remote one; foreign tables go into schema `supplier`.
struct Pair {
    local: Client,
    remote: Client,
    // Dropped last: the clients above close first.
    _local_cluster: TestCluster,
    remote_cluster: TestCluster,
}

impl Pair {
    fn new() -> Pair {
        let remote_cluster =
            TestCluster::with_settings(&[("shared_preload_libraries", "pg_stat_statements")]);
        let local_cluster = TestCluster::new();
        let mut remote = remote_cluster.connect();
        remote
            .batch_execute("CREATE EXTENSION pg_stat_statements")
            .unwrap();
        let mut local = local_cluster.connect_with_extension();
        local
            .batch_execute(&format!(
                "SET timezone = 'UTC';
                 CREATE EXTENSION postgres_fdw;
                 CREATE SERVER supplier FOREIGN DATA WRAPPER postgres_fdw
                        OPTIONS (host 'localhost', port '{}', dbname 'postgres');
                 CREATE USER MAPPING FOR CURRENT_USER SERVER supplier OPTIONS (user 'postgres');
                 CREATE SCHEMA supplier;",
                remote_cluster.port()
            ))
            .unwrap();
        Pair {
            local,
            remote,
            _local_cluster: local_cluster,
            remote_cluster,
        }
    }

    /// The same statements on both servers.
    fn both(&mut self, sql: &str) {
        self.local.batch_execute(sql).unwrap();
        self.remote.batch_execute(sql).unwrap();
    }

    /// The remote's table `name` as foreign table supplier.<name>.
    fn import(&mut self, name: &str) {
        self.local
            .batch_execute(&format!(
                "IMPORT FOREIGN SCHEMA public LIMIT TO ({name}) FROM SERVER supplier INTO supplier"
            ))
            .unwrap();
    }

    /// reconcile's rows as (key, kind, diff), for `args` after the two tables.
    fn reconcile(&mut self, table: &str, args: &str) -> Vec<(Value, String, Value)> {
        let sql = format!(
            "SELECT key::text, kind, coalesce(diff, 'null')::text
               FROM syncguard.reconcile('{table}', 'supplier.{table}'{args}) AS r
              ORDER BY r.key"
        );
        self.local
            .query(&sql, &[])
            .unwrap_or_else(|e| panic!("{sql}: {e}"))
            .iter()
            .map(|r| {
                (
                    serde_json::from_str(r.get(0)).unwrap(),
                    r.get(1),
                    serde_json::from_str(r.get(2)).unwrap(),
                )
            })
            .collect()
    }

    /// Lets reconcile hash with syncguard on the remote too: the extension
    /// there, listed in the foreign server's `extensions` option, so that
    /// postgres_fdw sends syncguard's row hash and checksum aggregate.
    fn remote_syncguard(&mut self) {
        self.remote
            .batch_execute("CREATE EXTENSION IF NOT EXISTS syncguard")
            .unwrap();
        self.local
            .batch_execute("ALTER SERVER supplier OPTIONS (ADD extensions 'syncguard')")
            .unwrap();
    }

    /// How many of the statements the remote ran match `pattern` (LIKE).
    fn remote_ran(&mut self, pattern: &str) -> i64 {
        self.remote
            .query_one(
                "SELECT count(*) FROM pg_stat_statements WHERE query LIKE $1",
                &[&pattern],
            )
            .unwrap()
            .get(0)
    }

    /// Rows the remote server has sent through postgres_fdw's cursors since
    /// the last call.
    fn rows_sent(&mut self) -> i64 {
        let n: i64 = self
            .remote
            .query_one(
                "SELECT coalesce(sum(rows), 0)::bigint FROM pg_stat_statements WHERE query LIKE 'FETCH %'",
                &[],
            )
            .unwrap()
            .get(0);
        self.remote
            .batch_execute("SELECT pg_stat_statements_reset()")
            .unwrap();
        n
    }
}

fn sqlstate(e: &postgres::Error) -> String {
    e.as_db_error()
        .map(|d| d.code().code().to_string())
        .unwrap_or_default()
}

const PRODUCTS: &str = "CREATE TABLE products (
        id int PRIMARY KEY, name text, price numeric, attrs jsonb, weight float8, updated_at timestamptz);
    INSERT INTO products
    SELECT g, 'product ' || g, g * 1.5,
           jsonb_build_object('color', 'red', 'size', jsonb_build_object('w', g, 'h', 2,
                              'box', jsonb_build_object('layers', jsonb_build_array(1, 2, jsonb_build_object('foil', true))))),
           g / 3.0, timestamptz '2026-01-01 00:00:00+00' + g * interval '1 hour'
      FROM generate_series(1, 3000) AS g;";

#[test]
fn identical_tables_and_values_equal_in_another_form_have_no_differences() {
    let mut p = Pair::new();
    p.both(PRODUCTS);
    // The same values written differently on the remote: numeric scale,
    // jsonb key order, a timestamp in another time zone, a float.
    p.remote
        .batch_execute(
            "UPDATE products SET price = 1.50000 WHERE id = 1;
             UPDATE products SET attrs = '{\"size\": {\"h\": 2, \"box\": {\"layers\": [1, 2, {\"foil\": true}]}, \"w\": 2}, \"color\": \"red\"}' WHERE id = 2;
             UPDATE products SET updated_at = '2026-01-01 03:00:00-02' WHERE id = 5;
             UPDATE products SET weight = '0.33333333333333331' WHERE id = 1;",
        )
        .unwrap();
    p.import("products");
    // With the built-in hash functions, then with syncguard's on both sides.
    for with_syncguard in [false, true] {
        if with_syncguard {
            p.remote_syncguard();
        }
        p.local
            .batch_execute("UPDATE products SET name = 'product ' || id WHERE id IN (10, 11)")
            .unwrap();
        p.remote
            .batch_execute("UPDATE products SET name = 'product ' || id WHERE id IN (10, 11)")
            .unwrap();
        p.rows_sent();
        assert_eq!(p.reconcile("products", ""), vec![], "{with_syncguard}");
        // Only the checksums came back: a row per segment (30 of 100 rows,
        // threshold 200), or syncguard's one row of them all.
        let sent = p.rows_sent();
        let most = if with_syncguard { 1 } else { 31 };
        assert!(
            (1..=most).contains(&sent),
            "{sent} rows crossed the network"
        );

        // NULL is not the text 'NULL', nor an empty string.
        p.local
            .batch_execute("UPDATE products SET name = NULL WHERE id IN (10, 11)")
            .unwrap();
        p.remote
            .batch_execute("UPDATE products SET name = 'NULL' WHERE id = 10; UPDATE products SET name = '' WHERE id = 11")
            .unwrap();
        assert_eq!(
            p.reconcile("products", ""),
            vec![
                (
                    json!({"id": 10}),
                    "differs".into(),
                    json!({"name": {"local": null, "remote": "NULL"}})
                ),
                (
                    json!({"id": 11}),
                    "differs".into(),
                    json!({"name": {"local": null, "remote": ""}})
                ),
            ],
            "{with_syncguard}"
        );
    }
    // The remote computed syncguard's checksums.
    assert!(p.remote_ran("%syncguard._reconcile_checksums(%") >= 1);
}

#[test]
fn a_changed_field_a_missing_row_on_each_side_and_a_deep_jsonb_difference() {
    let mut p = Pair::new();
    p.both(PRODUCTS);
    p.remote
        .batch_execute(
            "UPDATE products SET price = 99.99 WHERE id = 1500;
             DELETE FROM products WHERE id = 7;
             INSERT INTO products (id, name, price) VALUES (5000, 'new', 1), (-3, 'below', 2);
             UPDATE products SET attrs = jsonb_set(attrs, '{size,box,layers,2}', '{\"foil\": false, \"glue\": \"hot\"}') WHERE id = 2222;
             UPDATE products SET attrs = attrs - 'color', weight = NULL WHERE id = 2999;",
        )
        .unwrap();
    p.import("products");
    for with_syncguard in [false, true] {
        if with_syncguard {
            p.remote_syncguard();
        }
        p.rows_sent();
        let got = p.reconcile("products", "");
        assert_eq!(
            got,
            vec![
                (
                    json!({"id": -3}),
                    "missing_local".into(),
                    json!({
                "name": "below", "price": 2, "attrs": null, "weight": null, "updated_at": null})
                ),
                (
                    json!({"id": 7}),
                    "missing_remote".into(),
                    json!({
                "name": "product 7", "price": 10.5,
                "attrs": {"color": "red", "size": {"w": 7, "h": 2, "box": {"layers": [1, 2, {"foil": true}]}}},
                "weight": 2.3333333333333335, "updated_at": "2026-01-01T07:00:00+00:00"})
                ),
                (
                    json!({"id": 1500}),
                    "differs".into(),
                    json!({"price": {"local": 2250.0, "remote": 99.99}})
                ),
                (
                    json!({"id": 2222}),
                    "differs".into(),
                    json!({"attrs": {"patch": {"size": {"box": {"layers": [1, 2, {"foil": false, "glue": "hot"}]}}}}})
                ),
                (
                    json!({"id": 2999}),
                    "differs".into(),
                    json!({
                "attrs": {"patch": {"color": null}},
                "weight": {"local": 999.6666666666666, "remote": null}})
                ),
                (
                    json!({"id": 5000}),
                    "missing_local".into(),
                    json!({
                "name": "new", "price": 1, "attrs": null, "weight": null, "updated_at": null})
                ),
            ]
        );
        // The patch turns the local document into the remote one.
        let applied: bool = p
        .local
        .query_one(
            "SELECT syncguard.jsonb_merge_patch(l.attrs, (SELECT diff->'attrs'->'patch' FROM syncguard.reconcile('products', 'supplier.products') WHERE key = '{\"id\": 2222}'))
                    = r.attrs
               FROM products l, supplier.products r WHERE l.id = 2222 AND r.id = 2222",
            &[],
        )
        .unwrap()
        .get(0);
        assert!(applied);
        // columns narrows the comparison: only price is compared.
        let only_price = p.reconcile("products", ", columns => ARRAY['price']");
        let kinds: Vec<(Value, String)> = only_price
            .iter()
            .map(|(k, kind, _)| (k.clone(), kind.clone()))
            .collect();
        assert_eq!(
            kinds,
            vec![
                (json!({"id": -3}), "missing_local".to_string()),
                (json!({"id": 7}), "missing_remote".to_string()),
                (json!({"id": 1500}), "differs".to_string()),
                (json!({"id": 5000}), "missing_local".to_string()),
            ]
        );
    }
}

/// Keys of several types, with segments and a threshold small enough that
/// the differing segments are cut again over several passes.
#[test]
fn keys_of_several_types_over_several_passes() {
    let mut p = Pair::new();
    p.both(
        "CREATE TABLE by_text (code text PRIMARY KEY, qty int);
         INSERT INTO by_text SELECT 'sku-' || lpad(g::text, 5, '0'), g FROM generate_series(1, 2000) AS g;
         CREATE TABLE by_uuid (id uuid PRIMARY KEY, qty int);
         INSERT INTO by_uuid SELECT md5(g::text)::uuid, g FROM generate_series(1, 2000) AS g;
         CREATE TABLE by_pair (shop int, sku text, qty int, PRIMARY KEY (shop, sku));
         INSERT INTO by_pair SELECT g % 7, 'sku-' || g, g FROM generate_series(1, 2000) AS g;",
    );
    p.remote
        .batch_execute(
            "UPDATE by_text SET qty = -1 WHERE code = 'sku-01234';
             DELETE FROM by_text WHERE code = 'sku-00001';
             INSERT INTO by_text VALUES ('sku-99999', 5);
             UPDATE by_uuid SET qty = -1 WHERE id = md5('777')::uuid;
             DELETE FROM by_uuid WHERE id = md5('1999')::uuid;
             UPDATE by_pair SET qty = -1 WHERE shop = 6 AND sku = 'sku-1000';
             DELETE FROM by_pair WHERE shop = 0 AND sku = 'sku-7';
             INSERT INTO by_pair VALUES (6, 'sku-0', 0);",
        )
        .unwrap();
    for t in ["by_text", "by_uuid", "by_pair"] {
        p.import(t);
    }
    // Three key columns, the first two repeating.
    p.both(
        "CREATE TABLE tri (a int, b text, c int, v int, PRIMARY KEY (a, b, c));
         INSERT INTO tri SELECT g % 3, 'b' || (g % 11), g, g FROM generate_series(1, 5000) AS g;",
    );
    p.remote
        .batch_execute(
            "UPDATE tri SET v = -1 WHERE c IN (17, 2500, 4999); DELETE FROM tri WHERE c = 100;
             INSERT INTO tri VALUES (1, 'b0', 0, 0), (9, 'z', 1, 1);",
        )
        .unwrap();
    p.import("tri");
    for with_syncguard in [false, true] {
        if with_syncguard {
            p.remote_syncguard();
        }
        // threshold 20: 200 text bounds, counted in two steps (reconcile_bucket)
        for args in ["", ", segments => 2, threshold => 2", ", threshold => 20"] {
            assert_eq!(
                p.reconcile("by_text", args),
                vec![
                    (
                        json!({"code": "sku-00001"}),
                        "missing_remote".into(),
                        json!({"qty": 1})
                    ),
                    (
                        json!({"code": "sku-01234"}),
                        "differs".into(),
                        json!({"qty": {"local": 1234, "remote": -1}})
                    ),
                    (
                        json!({"code": "sku-99999"}),
                        "missing_local".into(),
                        json!({"qty": 5})
                    ),
                ],
                "{args}"
            );
            let mut uuid = p.reconcile("by_uuid", args);
            uuid.sort_by_key(|(_, kind, _)| kind.clone());
            assert_eq!(
                uuid,
                vec![
                    (
                        json!({"id": "f1c15925-8841-1002-af34-0cbaedd6fc33"}),
                        "differs".into(),
                        json!({"qty": {"local": 777, "remote": -1}})
                    ),
                    (
                        json!({"id": "5ec829de-be54-b19a-5f78-d9a65b900a39"}),
                        "missing_remote".into(),
                        json!({"qty": 1999})
                    ),
                ],
                "{args}"
            );
            assert_eq!(
                p.reconcile("by_pair", args),
                vec![
                    // (jsonb orders an object by its shorter key first: sku, then shop)
                    (
                        json!({"shop": 6, "sku": "sku-0"}),
                        "missing_local".into(),
                        json!({"qty": 0})
                    ),
                    (
                        json!({"shop": 6, "sku": "sku-1000"}),
                        "differs".into(),
                        json!({"qty": {"local": 1000, "remote": -1}})
                    ),
                    (
                        json!({"shop": 0, "sku": "sku-7"}),
                        "missing_remote".into(),
                        json!({"qty": 7})
                    ),
                ],
                "{args}"
            );
        }
        for args in [
            "",
            ", segments => 2, threshold => 2",
            ", threshold => 20",
            ", segments => 3, threshold => 50",
        ] {
            let found: Vec<(Value, String)> = p
                .reconcile("tri", args)
                .into_iter()
                .map(|(k, kind, _)| (k, kind))
                .collect();
            assert_eq!(
                found,
                vec![
                    (json!({"a": 1, "b": "b0", "c": 0}), "missing_local".into()),
                    (
                        json!({"a": 1, "b": "b1", "c": 100}),
                        "missing_remote".into()
                    ),
                    (json!({"a": 1, "b": "b3", "c": 2500}), "differs".into()),
                    (json!({"a": 1, "b": "b5", "c": 4999}), "differs".into()),
                    (json!({"a": 2, "b": "b6", "c": 17}), "differs".into()),
                    (json!({"a": 9, "b": "z", "c": 1}), "missing_local".into()),
                ],
                "{args}"
            );
        }
        // The key named explicitly, in another order; a key column and a
        // repeated one in columns are compared once.
        assert_eq!(
            p.reconcile(
                "by_pair",
                ", key_columns => ARRAY['sku', 'shop'], columns => ARRAY['qty', 'shop', 'qty']"
            )
            .len(),
            3
        );
    }
}

#[test]
fn bad_arguments_are_clear_errors() {
    let mut p = Pair::new();
    p.both("CREATE TABLE items (id int PRIMARY KEY, price numeric, note text)");
    // The foreign table declares price as text: the types differ.
    p.local
        .batch_execute(
            "CREATE FOREIGN TABLE supplier.items (id int, price text, note text) SERVER supplier OPTIONS (schema_name 'public', table_name 'items');
             CREATE FOREIGN TABLE supplier.items_narrow (id int, price numeric) SERVER supplier OPTIONS (schema_name 'public', table_name 'items');
             CREATE TABLE no_key (id int);",
        )
        .unwrap();
    let cases = [
        ("SELECT * FROM syncguard.reconcile('items', 'supplier.items')", "42804", "column price is numeric in public.items but text in supplier.items"),
        ("SELECT * FROM syncguard.reconcile('items', 'supplier.items_narrow')", "42703", "column note of public.items does not exist in supplier.items_narrow"),
        ("SELECT * FROM syncguard.reconcile('items', 'supplier.items', columns => ARRAY['nope'])", "42703", "column nope of public.items does not exist"),
        ("SELECT * FROM syncguard.reconcile('no_key', 'supplier.items')", "42P10", "has no primary key"),
        ("SELECT * FROM syncguard.reconcile('items', NULL)", "22004", "must not be NULL"),
        ("SELECT * FROM syncguard.reconcile('items', 'supplier.items_narrow', columns => ARRAY['price'], threshold => 1)", "22023", "threshold at least 2"),
        ("SELECT * FROM syncguard.reconcile_apply('items', 'supplier.items_narrow', columns => ARRAY['price'], batch_size => 0)", "22023", "batch_size must be at least 1"),
        ("SELECT syncguard.invariant_reconcile('drift', 'items', 'supplier.items')", "42804", "column price is numeric"),
    ];
    for (sql, code, message) in cases {
        let e = p.local.query(sql, &[]).expect_err(sql);
        assert_eq!(sqlstate(&e), code, "{sql}: {e}");
        let text = e.as_db_error().unwrap().message().to_string();
        assert!(text.contains(message), "{sql}: {text}");
    }
    // Without the differing column it runs.
    assert_eq!(p.reconcile("items", ", columns => ARRAY['note']"), vec![]);
}

#[test]
fn reconcile_apply_merges_through_the_protection_of_the_table() {
    let mut p = Pair::new();
    p.both(
        "CREATE TABLE stock (sku text PRIMARY KEY, qty int, attrs jsonb, updated_at timestamptz NOT NULL);
         INSERT INTO stock VALUES
           ('a', 1, '{\"bin\": \"A1\", \"tags\": [\"x\"]}', '2026-03-01 10:00+00'),
           ('b', 2, '{\"bin\": \"B1\"}', '2026-03-01 10:00+00'),
           ('c', 3, NULL, '2026-03-01 10:00+00'),
           ('only-here', 4, NULL, '2026-03-01 10:00+00');",
    );
    p.remote
        .batch_execute(
            "UPDATE stock SET qty = 10, attrs = '{\"tags\": [\"x\", \"y\"]}', updated_at = '2026-03-02 10:00+00' WHERE sku = 'a';
             UPDATE stock SET qty = 20, updated_at = '2026-02-01 10:00+00' WHERE sku = 'b';
             UPDATE stock SET qty = NULL, updated_at = '2026-03-02 10:00+00' WHERE sku = 'c';
             DELETE FROM stock WHERE sku = 'only-here';
             INSERT INTO stock VALUES ('new', 5, '{\"bin\": \"N\"}', '2026-03-02 10:00+00');",
        )
        .unwrap();
    p.import("stock");
    // Older rows never overwrite newer ones.
    p.local
        .batch_execute(
            "SELECT syncguard.protect('stock', policy => '{\"last_write_wins\": \"updated_at\"}')",
        )
        .unwrap();
    let apply = "SELECT key->>'sku', kind, action FROM syncguard.reconcile_apply('stock', 'supplier.stock', batch_size => $1)";
    let rows = |p: &mut Pair, batch: i32| -> Vec<(String, String, String)> {
        p.local
            .query(apply, &[&batch])
            .unwrap()
            .iter()
            .map(|r| (r.get(0), r.get(1), r.get(2)))
            .collect()
    };
    // One row per call with batch_size 1: 'a' only (the skipped row is reported too).
    assert_eq!(
        rows(&mut p, 1),
        vec![
            ("a".into(), "differs".into(), "updated".into()),
            (
                "only-here".into(),
                "missing_remote".into(),
                "skipped".into()
            ),
        ]
    );
    assert_eq!(
        rows(&mut p, 100),
        vec![
            ("b".into(), "differs".into(), "unchanged".into()),
            ("c".into(), "differs".into(), "updated".into()),
            ("new".into(), "missing_local".into(), "inserted".into()),
            (
                "only-here".into(),
                "missing_remote".into(),
                "skipped".into()
            ),
        ]
    );
    let stored: Vec<(String, Option<i32>, Option<String>, String)> = p
        .local
        .query(
            "SELECT sku, qty, attrs::text, (updated_at AT TIME ZONE 'UTC')::text FROM stock ORDER BY sku",
            &[],
        )
        .unwrap()
        .iter()
        .map(|r| (r.get(0), r.get(1), r.get(2), r.get(3)))
        .collect();
    let row = |sku: &str, qty: Option<i32>, attrs: Option<&str>, at: &str| {
        (
            sku.to_string(),
            qty,
            attrs.map(str::to_string),
            at.to_string(),
        )
    };
    assert_eq!(
        stored,
        vec![
            // The remote values, jsonb included (its key deleted, its array replaced).
            row(
                "a",
                Some(10),
                Some("{\"tags\": [\"x\", \"y\"]}"),
                "2026-03-02 10:00:00"
            ),
            // The remote row is older: the protection kept the local one.
            row(
                "b",
                Some(2),
                Some("{\"bin\": \"B1\"}"),
                "2026-03-01 10:00:00"
            ),
            // A remote NULL replaces the local value.
            row("c", None, None, "2026-03-02 10:00:00"),
            row(
                "new",
                Some(5),
                Some("{\"bin\": \"N\"}"),
                "2026-03-02 10:00:00"
            ),
            row("only-here", Some(4), None, "2026-03-01 10:00:00"),
        ]
    );
    // What remains: the row the guard kept, and the one only here.
    let left: Vec<(Value, String)> = p
        .reconcile("stock", "")
        .into_iter()
        .map(|(k, kind, _)| (k, kind))
        .collect();
    assert_eq!(
        left,
        vec![
            (json!({"sku": "b"}), "differs".into()),
            (json!({"sku": "only-here"}), "missing_remote".into())
        ]
    );
}

#[test]
fn a_scheduled_reconciliation_opens_an_episode_per_drifted_row() {
    let mut p = Pair::new();
    p.both(
        "CREATE TABLE prices (id int PRIMARY KEY, amount numeric);
         INSERT INTO prices SELECT g, g FROM generate_series(1, 500) AS g;",
    );
    p.import("prices");
    let defined: String = p
        .local
        .query_one(
            "SELECT syncguard.invariant_reconcile('prices_match_supplier', 'prices', 'supplier.prices', schedule => '15 minutes')::text",
            &[],
        )
        .unwrap()
        .get(0);
    assert_eq!(defined, "syncguard_invariants.prices_match_supplier");
    let check = "SELECT status, violations, new_episodes FROM syncguard.check_invariants('prices_match_supplier')";
    let run = |p: &mut Pair| -> (String, i32, i32) {
        let r = p.local.query_one(check, &[]).unwrap();
        (r.get(0), r.get(1), r.get(2))
    };
    assert_eq!(run(&mut p), ("ok".into(), 0, 0));
    p.remote
        .batch_execute(
            "UPDATE prices SET amount = 0 WHERE id IN (3, 300); DELETE FROM prices WHERE id = 42",
        )
        .unwrap();
    assert_eq!(run(&mut p), ("violating".into(), 3, 3));
    // The same drift on the next check: no new episode (no new alert).
    assert_eq!(run(&mut p), ("violating".into(), 3, 0));
    let entities: Vec<String> = p
        .local
        .query(
            "SELECT entity FROM syncguard.violations WHERE invariant = 'prices_match_supplier' AND resolved_at IS NULL ORDER BY entity",
            &[],
        )
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    // (in text order)
    assert_eq!(
        entities,
        vec!["{\"id\": 300}", "{\"id\": 3}", "{\"id\": 42}"]
    );
    let (status, open, remediation): (String, i64, String) = {
        let r = p
            .local
            .query_one(
                "SELECT status, open_violations, remediation FROM syncguard.audit() WHERE invariant = 'prices_match_supplier'",
                &[],
            )
            .unwrap();
        (r.get(0), r.get(1), r.get(2))
    };
    assert_eq!((status.as_str(), open), ("violating", 3));
    assert!(
        remediation.contains("syncguard.reconcile_apply('public.prices', 'supplier.prices')"),
        "{remediation}"
    );
    // The view shows what differs.
    let kinds: Vec<String> = p
        .local
        .query(
            "SELECT kind FROM syncguard_invariants.prices_match_supplier ORDER BY entity",
            &[],
        )
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert_eq!(kinds, vec!["differs", "differs", "missing_remote"]);
    // Repaired (the extra local row deleted by hand): the episodes close.
    p.local
        .batch_execute("SELECT count(*) FROM syncguard.reconcile_apply('prices', 'supplier.prices'); DELETE FROM prices WHERE id = 42")
        .unwrap();
    assert_eq!(run(&mut p), ("ok".into(), 0, 0));
}

/// Differences in every other row: with one-row segments the differing
/// ones are too many ranges to list, and are selected by segment number.
#[test]
fn scattered_differences_are_all_found() {
    let mut p = Pair::new();
    p.both(PRODUCTS);
    p.remote
        .batch_execute("UPDATE products SET name = name || '!' WHERE id % 2 = 0")
        .unwrap();
    p.import("products");
    for args in ["", ", threshold => 2"] {
        let found = p.reconcile("products", args);
        assert_eq!(found.len(), 1500, "{args}");
        assert!(found
            .iter()
            .all(|(k, kind, _)| kind == "differs" && k["id"].as_i64().unwrap() % 2 == 0));
    }
    // Integer keys spread unevenly (squares): the first pass's equal key
    // widths hold very different row counts, the crowded ones are cut again.
    p.both(
        "CREATE TABLE sparse (id bigint PRIMARY KEY, v int);
         INSERT INTO sparse SELECT g::bigint * g, g FROM generate_series(1, 3000) AS g;",
    );
    p.remote
        .batch_execute(
            "UPDATE sparse SET v = -1 WHERE id IN (100, 8994001); DELETE FROM sparse WHERE id = 4",
        )
        .unwrap();
    p.import("sparse");
    for args in ["", ", threshold => 2", ", threshold => 100, segments => 3"] {
        let found: Vec<(Value, String)> = p
            .reconcile("sparse", args)
            .into_iter()
            .map(|(k, kind, _)| (k, kind))
            .collect();
        assert_eq!(
            found,
            vec![
                (json!({"id": 4}), "missing_remote".into()),
                (json!({"id": 100}), "differs".into()),
                (json!({"id": 8994001}), "differs".into()),
            ],
            "{args}"
        );
    }
}

/// A version guard refuses an older remote row: reported, not raised.
#[test]
fn reconcile_apply_reports_a_refused_write() {
    let mut p = Pair::new();
    p.both(
        "CREATE TABLE versioned (id int PRIMARY KEY, v int NOT NULL, qty int);
         INSERT INTO versioned VALUES (1, 5, 10), (2, 5, 20);",
    );
    p.remote
        .batch_execute("UPDATE versioned SET v = 4, qty = 11 WHERE id = 1; UPDATE versioned SET v = 6, qty = 21 WHERE id = 2")
        .unwrap();
    p.import("versioned");
    p.local
        .batch_execute("SELECT syncguard.protect('versioned', policy => '{\"version\": \"v\"}')")
        .unwrap();
    let rows: Vec<(String, String, Option<String>)> = p
        .local
        .query(
            "SELECT key::text, action, detail->>'sqlstate' FROM syncguard.reconcile_apply('versioned', 'supplier.versioned')",
            &[],
        )
        .unwrap()
        .iter()
        .map(|r| (r.get(0), r.get(1), r.get(2)))
        .collect();
    assert_eq!(
        rows,
        vec![
            ("{\"id\": 1}".into(), "refused".into(), Some("SG003".into())),
            ("{\"id\": 2}".into(), "updated".into(), None),
        ]
    );
    let stored: Vec<(i32, i32)> = p
        .local
        .query("SELECT v, qty FROM versioned ORDER BY id", &[])
        .unwrap()
        .iter()
        .map(|r| (r.get(0), r.get(1)))
        .collect();
    assert_eq!(stored, vec![(5, 10), (6, 21)]);
}

/// Names that need quoting everywhere, and a staging table on the same
/// server as the remote side.
#[test]
fn odd_names_and_a_local_staging_table() {
    let mut p = Pair::new();
    p.both(
        "CREATE TABLE \"Odd Table\" (\"Key Col\" int PRIMARY KEY, \"we\"\"ird\" text, \"Doc\" jsonb);
         INSERT INTO \"Odd Table\" SELECT g, 'x' || g, jsonb_build_object('n', g) FROM generate_series(1, 50) AS g;",
    );
    p.remote
        .batch_execute("UPDATE \"Odd Table\" SET \"we\"\"ird\" = 'changed', \"Doc\" = '{\"n\": 0}' WHERE \"Key Col\" = 7")
        .unwrap();
    p.local
        .batch_execute("IMPORT FOREIGN SCHEMA public LIMIT TO (\"Odd Table\") FROM SERVER supplier INTO supplier")
        .unwrap();
    let expected = vec![(
        json!({"Key Col": 7}),
        "differs".to_string(),
        json!({"we\"ird": {"local": "x7", "remote": "changed"}, "Doc": {"patch": {"n": 0}}}),
    )];
    assert_eq!(p.reconcile("\"Odd Table\"", ""), expected);
    // A staging table here: the remote side needs no foreign table.
    p.local
        .batch_execute(
            "CREATE SCHEMA staging;
             CREATE TABLE staging.\"Odd Table\" AS SELECT * FROM supplier.\"Odd Table\";",
        )
        .unwrap();
    let staged: Vec<String> = p
        .local
        .query(
            "SELECT kind || ' ' || diff::text FROM syncguard.reconcile('\"Odd Table\"', 'staging.\"Odd Table\"')",
            &[],
        )
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert_eq!(staged, vec!["differs {\"Doc\": {\"patch\": {\"n\": 0}}, \"we\\\"ird\": {\"local\": \"x7\", \"remote\": \"changed\"}}"]);
    let applied: i64 = p
        .local
        .query_one(
            "SELECT count(*) FROM syncguard.reconcile_apply('\"Odd Table\"', 'staging.\"Odd Table\"') WHERE action = 'updated'",
            &[],
        )
        .unwrap()
        .get(0);
    assert_eq!(applied, 1);
    assert_eq!(p.reconcile("\"Odd Table\"", ""), vec![]);
}

/// A role that is not a superuser: it needs only what the two tables need
/// (SELECT on both, INSERT and UPDATE on the local one for the repair, a
/// user mapping).
#[test]
fn a_role_that_is_not_superuser_reconciles_and_repairs() {
    let mut p = Pair::new();
    p.both("CREATE TABLE stock (sku text PRIMARY KEY, qty int); INSERT INTO stock VALUES ('a', 1), ('b', 2)");
    p.remote
        .batch_execute("UPDATE stock SET qty = 5 WHERE sku = 'b'")
        .unwrap();
    p.import("stock");
    p.local
        .batch_execute(
            "CREATE ROLE app LOGIN;
             GRANT USAGE ON SCHEMA supplier TO app;
             GRANT SELECT ON supplier.stock TO app;
             GRANT SELECT, INSERT, UPDATE ON stock TO app;
             GRANT USAGE ON FOREIGN SERVER supplier TO app;
             CREATE USER MAPPING FOR app SERVER supplier OPTIONS (user 'postgres', password_required 'false');
             SET ROLE app;",
        )
        .unwrap();
    assert_eq!(
        p.reconcile("stock", ""),
        vec![(
            json!({"sku": "b"}),
            "differs".into(),
            json!({"qty": {"local": 2, "remote": 5}})
        )]
    );
    let applied = p
        .local
        .query(
            "SELECT * FROM syncguard.reconcile_apply('stock', 'supplier.stock')",
            &[],
        )
        .unwrap();
    assert_eq!(applied.len(), 1);
    assert_eq!(p.reconcile("stock", ""), vec![]);
    // The same role with syncguard's hash on both sides.
    p.local.batch_execute("RESET ROLE").unwrap();
    p.remote_syncguard();
    p.local.batch_execute("SET ROLE app").unwrap();
    p.remote
        .batch_execute("UPDATE stock SET qty = 6 WHERE sku = 'a'")
        .unwrap();
    assert_eq!(
        p.reconcile("stock", ""),
        vec![(
            json!({"sku": "a"}),
            "differs".into(),
            json!({"qty": {"local": 1, "remote": 6}})
        )]
    );
    assert!(p.remote_ran("%syncguard._reconcile_checksums(%") >= 1);
    // Without SELECT on the foreign table: PostgreSQL's own permission error.
    p.local
        .batch_execute("RESET ROLE; REVOKE SELECT ON supplier.stock FROM app; SET ROLE app")
        .unwrap();
    let e = p
        .local
        .query(
            "SELECT * FROM syncguard.reconcile('stock', 'supplier.stock')",
            &[],
        )
        .unwrap_err();
    assert_eq!(sqlstate(&e), "42501", "{e}");
}

/// A million rows, a hundred of them different: the remote computes the
/// checksums and sends back only them and the rows of the differing
/// segments.
#[test]
fn a_million_rows_with_a_hundred_differences_cross_the_network_as_few_rows() {
    let mut p = Pair::new();
    p.both(
        "CREATE TABLE big (id int PRIMARY KEY, name text, price numeric, attrs jsonb, updated_at timestamptz);
         INSERT INTO big SELECT g, 'p' || g, g % 100 + 0.5, jsonb_build_object('w', g % 7),
                                timestamptz '2026-01-01 00:00+00' + g * interval '1 minute'
           FROM generate_series(1, 1000000) AS g;",
    );
    p.both("VACUUM ANALYZE big");
    p.remote
        .batch_execute(
            "UPDATE big SET price = price + 1 WHERE id % 20000 = 7;
             UPDATE big SET attrs = '{\"w\": -1}' WHERE id % 20000 = 9;
             DELETE FROM big WHERE id % 40000 = 11;
             INSERT INTO big (id, name) SELECT 1000000 + g, 'new' FROM generate_series(1, 25) AS g;",
        )
        .unwrap();
    p.import("big");
    // The instrument counts what a plain foreign scan fetches.
    p.rows_sent();
    p.local
        .batch_execute("SELECT * FROM supplier.big WHERE id <= 5000")
        .unwrap();
    // (the remote lacks id 11)
    assert_eq!(p.rows_sent(), 4999);

    // With the built-in hash functions, then with syncguard's on both sides.
    for with_syncguard in [false, true] {
        if with_syncguard {
            p.remote_syncguard();
        }
        let found = p.reconcile("big", "");
        let count = |kind: &str| found.iter().filter(|(_, k, _)| k == kind).count();
        assert_eq!(
            (
                count("differs"),
                count("missing_remote"),
                count("missing_local")
            ),
            (100, 25, 25),
            "{with_syncguard}"
        );
        // The checksums were computed by the remote: a grouped query with
        // the hash functions, or syncguard's aggregate, arrived there.
        let pushed = p.remote_ran(if with_syncguard {
            "DECLARE %syncguard._reconcile_checksums(%id, name, price, attrs, updated_at)%"
        } else {
            "DECLARE %count(*), sum(%hashint4extended(id,%jsonb_hash_extended(attrs,%GROUP BY%"
        });
        assert!(pushed >= 1, "{with_syncguard}");
        let sent = p.rows_sent();
        // 10,000 segments of 100 local rows (threshold 200) and one past
        // our last key: 10,001 checksum rows, or syncguard's one row of
        // them all; the 150 differences lie in 51 of them (ids 7, 9 and 11
        // of every 20,000 share one; the new ids are in the last), whose
        // keys and row hashes come back as one row each; then the remote
        // rows of the 125 differing keys it has.
        let checksums = if with_syncguard { 1 } else { 10_001 };
        assert!(
            sent <= checksums + 51 + 125,
            "{sent} rows crossed the network"
        );
        eprintln!(
            "reconcile of 1M rows with 150 differences, syncguard on the remote {with_syncguard}: {sent} rows crossed the network"
        );
    }
    let _ = &p.remote_cluster;
}

/// docs/reconcile.md as written: every SQL block runs (a block starting
/// with "-- on the supplier's server" on the remote), and psql prints what
/// the text block after it shows.
#[test]
fn the_guide_runs_as_written() {
    let remote = TestCluster::new();
    let local = TestCluster::new();
    let doc =
        std::fs::read_to_string(syncguard_client_tests::repo().join("docs/reconcile.md")).unwrap();
    let port = format!("port '{}'", remote.port());
    let mut blocks = doc.split("```").skip(1).step_by(2).peekable();
    let mut ran = 0;
    while let Some(block) = blocks.next() {
        let Some(sql) = block.strip_prefix("sql\n") else {
            continue;
        };
        let on_remote = sql.starts_with("-- on the supplier's server");
        let sql = sql.replace("port '5433'", &port);
        let cluster = if on_remote { &remote } else { &local };
        let out = cluster.run_tool(
            "psql",
            &[
                "-X",
                "-q",
                "-v",
                "ON_ERROR_STOP=1",
                "-d",
                "postgres",
                "-c",
                &sql,
            ],
        );
        let out: Vec<&str> = out.trim_end().lines().map(str::trim_end).collect();
        if let Some(shown) = blocks.peek().and_then(|b| b.strip_prefix("text\n")) {
            let shown: Vec<&str> = shown.trim_end().lines().collect();
            assert_eq!(out, shown, "psql's output of\n{sql}");
            blocks.next();
        } else {
            assert_eq!(
                out,
                Vec::<&str>::new(),
                "output of\n{sql}\nnot shown in the guide"
            );
        }
        ran += 1;
    }
    assert!(ran >= 10, "{ran} SQL blocks");
}
