//! The `citus` tier (scripts/test.sh, PostgreSQL 15 with Citus 13.2): every
//! claim of docs/citus.md on a real cluster of a coordinator and two workers,
//! each a [`TestCluster`] started with `shared_preload_libraries =
//! 'citus,syncguard'`. Every test is named `citus_*`: the client tier skips
//! them (`--skip citus_`), this tier runs only them.

use syncguard_client_tests::common;

use common::TestCluster;
use postgres::{Client, NoTls};
use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

/// A coordinator and two workers, registered with each other, with
/// `CREATE EXTENSION citus` on every node and `CREATE EXTENSION syncguard` on
/// the coordinator (Citus propagates it to the workers).
struct Citus {
    coordinator: TestCluster,
    workers: Vec<TestCluster>,
}

impl Citus {
    fn start(extra: &[(&str, &str)]) -> Self {
        let mut settings = vec![
            ("shared_preload_libraries", "citus,syncguard"),
            // Two-phase commit of multi-node transactions.
            ("max_prepared_transactions", "20"),
            // Few shards: quicker to make, still spread over both workers.
            ("citus.shard_count", "4"),
            // Node-to-node connections over localhost, without TLS: libpq
            // would otherwise look for client certificates in the HOME of
            // whoever started the test.
            ("citus.node_conninfo", "sslmode=disable"),
        ];
        settings.extend_from_slice(extra);
        let coordinator = TestCluster::with_settings(&settings);
        let workers: Vec<TestCluster> = (0..2)
            .map(|_| TestCluster::with_settings(&settings))
            .collect();
        for node in std::iter::once(&coordinator).chain(&workers) {
            node.connect()
                .batch_execute("CREATE EXTENSION citus")
                .unwrap();
        }
        let mut c = coordinator.connect();
        c.batch_execute(&format!(
            "SELECT citus_set_coordinator_host('localhost', {})",
            coordinator.port()
        ))
        .unwrap();
        for w in &workers {
            c.batch_execute(&format!("SELECT citus_add_node('localhost', {})", w.port()))
                .unwrap();
        }
        c.batch_execute("CREATE EXTENSION syncguard").unwrap();
        Citus {
            coordinator,
            workers,
        }
    }

    fn connect(&self) -> Client {
        self.coordinator.connect()
    }

    /// A coordinator session as `role`.
    fn connect_as(&self, role: &str) -> Client {
        let mut config = self.coordinator.config("postgres");
        config.user(role);
        config.connect(NoTls).unwrap()
    }

    /// A coordinator session whose notices (e.g. Citus's remote commands
    /// under `citus.log_remote_commands`) are collected in the returned list.
    fn connect_logging(&self) -> (Client, Arc<Mutex<Vec<String>>>) {
        let seen = Arc::new(Mutex::new(Vec::new()));
        let sink = seen.clone();
        let mut config = self.coordinator.config("postgres");
        config.notice_callback(move |n| sink.lock().unwrap().push(n.message().to_string()));
        (config.connect(NoTls).unwrap(), seen)
    }
}

fn count(c: &mut Client, sql: &str) -> i64 {
    c.query_one(sql, &[]).unwrap().get(0)
}

/// The SQLSTATE of a failed statement.
fn sqlstate(r: Result<impl std::fmt::Debug, postgres::Error>) -> String {
    let e = r.expect_err("the statement should fail");
    e.code()
        .map(|c| c.code().to_string())
        .unwrap_or_else(|| panic!("{e}"))
}

/// The worker ports that hold shards of `table`.
fn shard_ports(c: &mut Client, table: &str) -> BTreeSet<i32> {
    c.query(
        "SELECT DISTINCT n.nodeport FROM pg_dist_shard s
           JOIN pg_dist_placement p USING (shardid) JOIN pg_dist_node n USING (groupid)
          WHERE s.logicalrelid = $1::text::regclass",
        &[&table],
    )
    .unwrap()
    .iter()
    .map(|r| r.get(0))
    .collect()
}

#[test]
fn citus_distribute_places_tables_and_undistribute_leaves_no_shard() {
    let cluster = Citus::start(&[]);
    let mut c = cluster.connect();

    // The documented placement, applied once: a second call changes nothing.
    let placed: Vec<(String, String, bool)> = c
        .query(
            "SELECT table_name::text, placement, changed FROM syncguard.distribute()",
            &[],
        )
        .unwrap()
        .iter()
        .map(|r| (r.get(0), r.get(1), r.get(2)))
        .collect();
    assert_eq!(
        placed[0],
        (
            "syncguard.idempotency_keys".into(),
            "distributed by scope".into(),
            true
        )
    );
    let local: BTreeSet<&str> = placed[1..]
        .iter()
        .map(|(t, p, _)| {
            assert_eq!(p, "coordinator-local");
            t.as_str()
        })
        .collect();
    for t in [
        "syncguard.queue_jobs",
        "syncguard.sync_runs",
        "syncguard.invariants",
        "syncguard.stale_writes",
        "syncguard.entity_events",
    ] {
        assert!(local.contains(t), "{t} in {local:?}");
    }
    let again: Vec<bool> = c
        .query("SELECT changed FROM syncguard.distribute()", &[])
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert!(again.iter().all(|changed| !changed));
    assert_eq!(
        count(
            &mut c,
            "SELECT count(*) FROM pg_dist_partition WHERE logicalrelid::text LIKE 'syncguard.%'"
        ),
        1
    );

    // Keys of many scopes spread over both workers and read back whole.
    c.batch_execute(
        "SELECT count(*) FROM generate_series(1, 40) g,
                LATERAL syncguard.idem_claim('scope-' || g, 'k', '{}')",
    )
    .unwrap();
    assert_eq!(shard_ports(&mut c, "syncguard.idempotency_keys").len(), 2);
    assert_eq!(
        count(&mut c, "SELECT count(*) FROM syncguard.idempotency_keys"),
        40
    );
    assert_eq!(
        count(
            &mut c,
            "SELECT sum(keys)::bigint FROM syncguard.idempotency_summary"
        ),
        40
    );

    // Without colocate_with: Citus's default group of tables distributed by text.
    c.batch_execute(
        "CREATE TABLE by_text (k text PRIMARY KEY);
         SELECT create_distributed_table('by_text', 'k');",
    )
    .unwrap();
    assert!(c
        .query_one(
            "SELECT (SELECT colocationid FROM pg_dist_partition WHERE logicalrelid = 'by_text'::regclass)
                  = (SELECT colocationid FROM pg_dist_partition WHERE logicalrelid = 'syncguard.idempotency_keys'::regclass)",
            &[],
        )
        .unwrap()
        .get::<_, bool>(0));

    // Co-location with a user's table distributed by a text column.
    c.batch_execute(
        "CREATE TABLE orders (tenant text, id int, PRIMARY KEY (tenant, id));
         SELECT create_distributed_table('orders', 'tenant', colocate_with => 'none');",
    )
    .unwrap();
    let colocated = "SELECT (SELECT colocationid FROM pg_dist_partition WHERE logicalrelid = 'orders'::regclass)
                          = (SELECT colocationid FROM pg_dist_partition WHERE logicalrelid = 'syncguard.idempotency_keys'::regclass)";
    assert!(!c.query_one(colocated, &[]).unwrap().get::<_, bool>(0));
    let changed: bool = c
        .query_one("SELECT changed FROM syncguard.distribute('orders') WHERE placement LIKE 'distributed%'", &[])
        .unwrap()
        .get(0);
    assert!(changed);
    assert!(c.query_one(colocated, &[]).unwrap().get::<_, bool>(0));

    // Only the extension's owner changes the placement; never on a worker.
    c.batch_execute("CREATE ROLE app LOGIN").unwrap();
    let mut app = cluster.connect_as("app");
    assert_eq!(
        sqlstate(app.query("SELECT * FROM syncguard.distribute()", &[])),
        "42501"
    );
    assert_eq!(
        sqlstate(app.query("SELECT * FROM syncguard.undistribute()", &[])),
        "42501"
    );
    // A role that is not superuser prunes its own expired keys on the
    // shards, and only its own (_delete_visible: one shard per statement).
    let expired = |scope: &str, key: &str| {
        format!(
            "SELECT syncguard.idem_complete(token, '{{}}', '{scope}')
               FROM syncguard.idem_claim('{scope}', '{key}', '{{}}', ttl => '1 ms');
             SELECT pg_sleep(0.01);"
        )
    };
    app.batch_execute(&expired("app-scope", "old")).unwrap();
    c.batch_execute(&expired("app-scope", "owners")).unwrap();
    assert_eq!(
        count(&mut app, "SELECT syncguard.idem_prune(100, 'app-scope')"),
        1
    );
    assert_eq!(count(&mut app, "SELECT syncguard.idem_prune()"), 0);
    assert_eq!(
        count(
            &mut c,
            "SELECT count(*) FROM syncguard.idempotency_keys WHERE scope = 'app-scope'"
        ),
        1
    );
    assert_eq!(
        count(&mut c, "SELECT syncguard.idem_prune(100, 'app-scope')"),
        1
    );
    let mut w = cluster.workers[0].connect();
    assert_eq!(
        sqlstate(w.query("SELECT * FROM syncguard.distribute()", &[])),
        "55000"
    );
    assert_eq!(
        sqlstate(w.query("SELECT * FROM syncguard.undistribute()", &[])),
        "55000"
    );

    // The way back: the keys return to the coordinator with their rows and
    // their place in the extension; no shard is left.
    let back: bool = c
        .query_one("SELECT changed FROM syncguard.undistribute()", &[])
        .unwrap()
        .get(0);
    assert!(back);
    assert_eq!(
        count(&mut c, "SELECT count(*) FROM syncguard.idempotency_keys"),
        40
    );
    assert_eq!(
        count(
            &mut c,
            "SELECT count(*) FROM pg_dist_partition WHERE logicalrelid::text LIKE 'syncguard.%'"
        ),
        0
    );
    assert_eq!(
        count(&mut c, "SELECT count(*) FROM pg_depend d JOIN pg_extension e ON e.oid = d.refobjid
                        WHERE e.extname = 'syncguard' AND d.deptype = 'e'
                          AND d.objid IN ('syncguard.idempotency_keys'::regclass, 'syncguard.idempotency_summary'::regclass)"),
        2
    );
    assert_eq!(
        count(
            &mut c,
            "SELECT count(*) FROM pg_extension WHERE extname = 'syncguard'
                          AND 'syncguard.idempotency_keys'::regclass = ANY (extconfig)"
        ),
        1
    );
    assert_eq!(
        count(
            &mut app,
            "SELECT count(*) FROM syncguard.idempotency_summary"
        ),
        0
    );
    // ... and as it was made: row-level security, the comment, a role's own keys.
    let (rls, comment): (bool, Option<String>) = c
        .query_one(
            "SELECT relrowsecurity, obj_description(oid, 'pg_class') FROM pg_class
              WHERE oid = 'syncguard.idempotency_keys'::regclass",
            &[],
        )
        .map(|r| (r.get(0), r.get(1)))
        .unwrap();
    assert!(rls);
    assert!(comment.is_some_and(|t| t.starts_with("syncguard idempotency log")));
    let outcome: String = app
        .query_one(
            "SELECT outcome FROM syncguard.idem_claim('app', 'k', '{}')",
            &[],
        )
        .unwrap()
        .get(0);
    assert_eq!(outcome, "claimed");
    assert_eq!(
        count(&mut app, "SELECT count(*) FROM syncguard.idempotency_keys"),
        1
    );
    let unchanged: bool = c
        .query_one("SELECT changed FROM syncguard.undistribute()", &[])
        .unwrap()
        .get(0);
    assert!(!unchanged);

    // And there again, and back, then uninstalled: nothing of it on any node.
    c.batch_execute("SELECT count(*) FROM syncguard.distribute()")
        .unwrap();
    assert_eq!(
        count(&mut c, "SELECT count(*) FROM syncguard.idempotency_keys"),
        41
    );
    assert_eq!(shard_ports(&mut c, "syncguard.idempotency_keys").len(), 2);
    // Each in a transaction of its own: Citus runs an extension command only
    // in a transaction that did not yet work on shards in parallel.
    for step in [
        "SELECT count(*) FROM syncguard.undistribute()",
        "DROP TABLE orders, by_text",
        "DROP EXTENSION syncguard",
    ] {
        c.batch_execute(step).unwrap();
    }
    assert_eq!(count(&mut c, "SELECT count(*) FROM pg_dist_shard"), 0);
    for worker in &cluster.workers {
        let mut w = worker.connect();
        assert_eq!(
            count(
                &mut w,
                "SELECT count(*) FROM pg_extension WHERE extname = 'syncguard'"
            ),
            0
        );
        assert_eq!(
            count(&mut w, "SELECT count(*) FROM pg_class WHERE relname LIKE 'idempotency_keys%' OR relname LIKE 'orders%'"),
            0
        );
    }
    // A clean slate: the extension installs again.
    c.batch_execute("CREATE EXTENSION syncguard").unwrap();
    c.batch_execute("SELECT count(*) FROM syncguard.distribute()")
        .unwrap();
}

#[test]
fn citus_merge_upsert_on_one_shard_with_the_row_built_on_the_coordinator() {
    let cluster = Citus::start(&[]);
    let (mut c, notices) = cluster.connect_logging();
    c.batch_execute(
        "CREATE TABLE docs (tenant text, id int, doc jsonb, seen_at timestamptz, n int,
                            PRIMARY KEY (tenant, id));
         SELECT create_distributed_table('docs', 'tenant');",
    )
    .unwrap();

    // A deep merge, as on one server.
    let upsert = "SELECT syncguard.merge_upsert('docs', jsonb_build_object('tenant', $1::text, 'id', 1), $2::text::jsonb)::text";
    c.query_one(
        upsert,
        &[
            &"t1",
            &r#"{"doc": {"a": {"x": 1}}, "n": 1, "seen_at": "2026-01-01T00:00:00Z"}"#,
        ],
    )
    .unwrap();
    // The returned row is built in this session's TimeZone, which the
    // workers do not have: on the coordinator.
    c.batch_execute("SET TimeZone = 'Asia/Tokyo'; SET citus.log_remote_commands = on; SET client_min_messages = log")
        .unwrap();
    notices.lock().unwrap().clear();
    let row: String = c
        .query_one(upsert, &[&"t1", &r#"{"doc": {"a": {"y": 2}}}"#])
        .unwrap()
        .get(0);
    let row: serde_json::Value = serde_json::from_str(&row).unwrap();
    assert_eq!(row["doc"], serde_json::json!({"a": {"x": 1, "y": 2}}));
    assert_eq!(row["n"], 1);
    assert_eq!(row["seen_at"], "2026-01-01T09:00:00+09:00");
    // One statement, sent to one shard; nothing evaluated there but the
    // merge (immutable) and column references.
    let sent: Vec<String> = notices
        .lock()
        .unwrap()
        .iter()
        .filter(|m| m.starts_with("issuing"))
        .cloned()
        .collect();
    let shard_writes: Vec<&String> = sent
        .iter()
        .filter(|m| m.contains("INSERT INTO public.docs_"))
        .collect();
    assert_eq!(shard_writes.len(), 1, "{sent:#?}");
    assert!(
        !shard_writes[0].contains("jsonb_build_object"),
        "{}",
        shard_writes[0]
    );
    assert!(!shard_writes[0].contains("now()"), "{}", shard_writes[0]);
    // Made from inside a function, the write runs in a transaction Citus
    // opens on the worker, even in autocommit (docs/citus.md, "Cost").
    assert!(
        sent.first().is_some_and(|m| m.contains("BEGIN")),
        "{sent:#?}"
    );
    assert!(
        sent.last().is_some_and(|m| m.contains("COMMIT")),
        "{sent:#?}"
    );
    c.batch_execute("RESET citus.log_remote_commands; RESET client_min_messages")
        .unwrap();

    // In a transaction, and one call per row of a query, over every shard.
    c.batch_execute(
        "BEGIN;
         SELECT syncguard.merge_upsert('docs', '{\"tenant\": \"t2\", \"id\": 1}', '{\"doc\": {\"b\": 1}}');
         SELECT syncguard.merge_upsert('docs', '{\"tenant\": \"t2\", \"id\": 1}', '{\"doc\": {\"c\": 1}}');
         COMMIT;
         SELECT count(syncguard.merge_upsert('docs', jsonb_build_object('tenant', 'r' || g, 'id', g),
                                             '{\"doc\": {\"k\": 1}}'))
           FROM generate_series(1, 20) g;",
    )
    .unwrap();
    let t2: serde_json::Value = c
        .query_one("SELECT doc::text FROM docs WHERE tenant = 't2'", &[])
        .map(|r| serde_json::from_str(r.get::<_, &str>(0)).unwrap())
        .unwrap();
    assert_eq!(t2, serde_json::json!({"b": 1, "c": 1}));
    assert_eq!(count(&mut c, "SELECT count(*) FROM docs"), 22);
    assert_eq!(shard_ports(&mut c, "docs").len(), 2);

    // A version policy: a write not newer than the stored row is refused (SG003).
    c.batch_execute(
        "CREATE TABLE vdocs (id int PRIMARY KEY, v int, doc jsonb);
         SELECT create_distributed_table('vdocs', 'id');",
    )
    .unwrap();
    let versioned = "SELECT syncguard.merge_upsert('vdocs', '{\"id\": 1}', $1::text::jsonb, '{\"version\": \"v\"}')";
    c.execute(versioned, &[&r#"{"v": 1, "doc": {"a": 1}}"#])
        .unwrap();
    c.execute(versioned, &[&r#"{"v": 2, "doc": {"b": 1}}"#])
        .unwrap();
    assert_eq!(
        sqlstate(c.execute(versioned, &[&r#"{"v": 2, "doc": {"c": 1}}"#])),
        "SG003"
    );
    assert_eq!(
        count(
            &mut c,
            "SELECT count(*) FROM vdocs WHERE v = 2 AND doc = '{\"a\": 1, \"b\": 1}'"
        ),
        1
    );

    // A reference table and a Citus local table.
    c.batch_execute(
        "CREATE TABLE settings (name text PRIMARY KEY, doc jsonb);
         SELECT create_reference_table('settings');
         CREATE TABLE local_docs (id int PRIMARY KEY, doc jsonb);
         SELECT citus_add_local_table_to_metadata('local_docs');",
    )
    .unwrap();
    for (table, key) in [
        ("settings", r#"{"name": "a"}"#),
        ("local_docs", r#"{"id": 1}"#),
    ] {
        for patch in [r#"{"doc": {"x": 1}}"#, r#"{"doc": {"y": 2}}"#] {
            c.execute(
                "SELECT syncguard.merge_upsert($1::text::regclass, $2::text::jsonb, $3::text::jsonb)",
                &[&table, &key, &patch],
            )
            .unwrap();
        }
        let doc: String = c
            .query_one(&format!("SELECT doc::text FROM {table}"), &[])
            .unwrap()
            .get(0);
        assert_eq!(doc, r#"{"x": 1, "y": 2}"#, "{table}");
    }

    // A write policy (last_write_wins) refuses a stale write on the shard.
    let stale: Option<String> = c
        .query_one(
            "SELECT syncguard.merge_upsert('docs', '{\"tenant\": \"t1\", \"id\": 1}',
                     '{\"doc\": {\"z\": 1}, \"seen_at\": \"2025-01-01T00:00:00Z\"}',
                     '{\"last_write_wins\": \"seen_at\"}')::text",
            &[],
        )
        .unwrap()
        .get(0);
    assert!(stale.is_some());
    assert_eq!(
        count(
            &mut c,
            "SELECT count(*) FROM docs WHERE tenant = 't1' AND doc ? 'z'"
        ),
        0
    );
    // merge_upsert counts the write it ignored on the coordinator.
    assert_eq!(
        count(
            &mut c,
            "SELECT stale_ignored FROM syncguard.conflict_stats WHERE table_name = 'public.docs'"
        ),
        1
    );
}

/// Protection of a distributed table: the trigger on the shards, the
/// settings that reach them, the counters of every node.
#[test]
fn citus_protection_on_shards_with_settings_and_counts_from_every_node() {
    let cluster = Citus::start(&[("syncguard.worker_interval", "1")]);
    let mut c = cluster.connect();
    c.batch_execute(
        "CREATE TABLE items (id int PRIMARY KEY, doc jsonb, updated_at timestamptz);
         SELECT create_distributed_table('items', 'id');",
    )
    .unwrap();
    // Without the Citus setting, Citus refuses the trigger.
    let refused = c.batch_execute(
        "SELECT syncguard.protect('items', policy => '{\"last_write_wins\": \"updated_at\"}')",
    );
    let refused = refused.unwrap_err();
    let message = refused
        .as_db_error()
        .map(|e| e.message().to_string())
        .unwrap_or_default();
    assert!(
        message.contains("triggers are not supported on distributed tables"),
        "{refused:?}"
    );
    c.batch_execute(
        "SET citus.enable_unsafe_triggers = on;
         SELECT syncguard.protect('items', policy => '{\"last_write_wins\": \"updated_at\"}');
         INSERT INTO items SELECT g, '{\"v\": 1}', now() FROM generate_series(1, 8) g;",
    )
    .unwrap();
    assert_eq!(shard_ports(&mut c, "items").len(), 2);

    // A stale UPDATE is ignored on the shard, and counted there.
    c.batch_execute("UPDATE items SET doc = '{\"v\": 2}', updated_at = now() - interval '1 hour'")
        .unwrap();
    assert_eq!(
        count(&mut c, "SELECT count(*) FROM items WHERE doc->>'v' = '1'"),
        8
    );
    assert_eq!(
        count(&mut c, "SELECT count(*) FROM syncguard.conflict_stats"),
        0
    );
    let stats = c
        .query_one(
            "SELECT table_name, stale_ignored FROM syncguard.cluster_conflict_stats()",
            &[],
        )
        .unwrap();
    assert_eq!(stats.get::<_, String>(0), "public.items");
    assert_eq!(stats.get::<_, i64>(1), 8);
    // Once the worker backends that counted are gone (they are the
    // coordinator session's connections), each worker node's background
    // worker folds their counters; the totals stay.
    drop(c);
    let mut c = cluster.connect();
    let deadline = Instant::now() + Duration::from_secs(60);
    for worker in &cluster.workers {
        let mut w = worker.connect();
        while count(
            &mut w,
            "SELECT count(*) FROM syncguard.stale_writes WHERE backend_pid <> 0",
        ) > 0
        {
            assert!(
                Instant::now() < deadline,
                "not folded\n{}",
                worker.log_tail()
            );
            thread::sleep(Duration::from_millis(200));
        }
    }
    let total: i64 = c
        .query_one(
            "SELECT stale_ignored FROM syncguard.cluster_conflict_stats()",
            &[],
        )
        .unwrap()
        .get(0);
    assert_eq!(total, 8);

    // SET LOCAL reaches the shards only with citus.propagate_set_commands =
    // 'local'. Each statement on its own, as psql sends them: Citus does not
    // propagate a SET LOCAL inside a multi-statement query string (it fails
    // with "cannot execute a distributed query from a query on a shard").
    let in_transaction = |c: &mut Client, set: &str, write: &str| -> Result<u64, postgres::Error> {
        let mut tx = c.transaction()?;
        tx.batch_execute(set)?;
        let n = tx.execute(write, &[])?;
        tx.commit()?;
        Ok(n)
    };
    let bypass = "SET LOCAL syncguard.bypass_protection = on";
    let stale =
        "UPDATE items SET doc = '{\"v\": 3}', updated_at = now() - interval '2 hours' WHERE id = 1";
    in_transaction(&mut c, bypass, stale).unwrap();
    assert_eq!(
        count(
            &mut c,
            "SELECT count(*) FROM items WHERE id = 1 AND doc->>'v' = '3'"
        ),
        0
    );
    c.batch_execute("SET citus.propagate_set_commands = 'local'")
        .unwrap();
    // A session's SET does not reach them either.
    c.batch_execute("SET syncguard.bypass_protection = on")
        .unwrap();
    c.execute(stale, &[]).unwrap();
    assert_eq!(
        count(
            &mut c,
            "SELECT count(*) FROM items WHERE id = 1 AND doc->>'v' = '3'"
        ),
        0
    );
    c.batch_execute("RESET syncguard.bypass_protection")
        .unwrap();
    in_transaction(&mut c, bypass, stale).unwrap();
    assert_eq!(
        count(
            &mut c,
            "SELECT count(*) FROM items WHERE id = 1 AND doc->>'v' = '3'"
        ),
        1
    );

    // max_clock_skew: the shard refuses a write from the future (SG004)
    // unless the transaction's own limit, propagated, allows it.
    let future =
        "UPDATE items SET doc = '{\"v\": 4}', updated_at = now() + interval '1 hour' WHERE id = 2";
    assert_eq!(sqlstate(c.execute(future, &[])), "SG004");
    in_transaction(
        &mut c,
        "SET LOCAL syncguard.max_clock_skew = 7200000",
        future,
    )
    .unwrap();
    assert_eq!(
        count(
            &mut c,
            "SELECT count(*) FROM items WHERE id = 2 AND doc->>'v' = '4'"
        ),
        1
    );

    // merge_upsert on the protected table: its write also passes through
    // the trigger on the shard, which merges it once more into the stored
    // row; a deep merge of objects comes out the same.
    let merged: String = c
        .query_one(
            "SELECT syncguard.merge_upsert('items', '{\"id\": 3}',
                     jsonb_build_object('doc', '{\"w\": {\"x\": 1}}'::jsonb, 'updated_at', now()))->>'doc'",
            &[],
        )
        .unwrap()
        .get(0);
    assert_eq!(
        serde_json::from_str::<serde_json::Value>(&merged).unwrap(),
        serde_json::json!({"v": 1, "w": {"x": 1}})
    );
    assert_eq!(
        count(
            &mut c,
            "SELECT count(*) FROM items WHERE id = 3 AND doc = '{\"v\": 1, \"w\": {\"x\": 1}}'"
        ),
        1
    );
}

/// Claim + effect + complete in one single-shard transaction (or a claim
/// that completes at once): two clients on the same keys, whose scopes live
/// on both workers; exactly one effect per key, and no transaction needed
/// two-phase commit.
#[test]
fn citus_idempotency_keys_colocated_two_clients_one_effect_per_key() {
    // Prepared transactions of two-phase commits stay listed in
    // pg_dist_transaction: none may appear.
    let cluster = Citus::start(&[("citus.recover_2pc_interval", "-1")]);
    let mut c = cluster.connect();
    c.batch_execute(
        "CREATE TABLE orders (tenant text, key text, amount int, PRIMARY KEY (tenant, key));
         SELECT create_distributed_table('orders', 'tenant');
         SELECT count(*) FROM syncguard.distribute(colocate_with => 'orders');",
    )
    .unwrap();
    let tenants: Vec<String> = (1..=8).map(|t| format!("tenant-{t}")).collect();
    let ports: BTreeSet<i32> = tenants
        .iter()
        .map(|t| {
            c.query_one(
                "SELECT n.nodeport FROM pg_dist_placement p JOIN pg_dist_node n USING (groupid)
                  WHERE p.shardid = get_shard_id_for_distribution_column('orders', $1::text)",
                &[t],
            )
            .unwrap()
            .get(0)
        })
        .collect();
    assert_eq!(ports.len(), 2, "the tenants' shards are on both workers");

    // (distribute() itself committed in two phases.)
    let two_phase_before = count(&mut c, "SELECT count(*) FROM pg_dist_transaction");
    let keys: Vec<(String, String)> = (0..120)
        .map(|i| (tenants[i % tenants.len()].clone(), format!("order-{i}")))
        .collect();
    let claimed = Arc::new(Mutex::new(BTreeMap::<(String, String), usize>::new()));
    // The first client claims and completes; the second stores the key
    // completed in its claim (complete =>).
    let handles: Vec<_> = (0..2)
        .map(|client| {
            let mut db = cluster.connect();
            let keys = keys.clone();
            let claimed = claimed.clone();
            thread::spawn(move || {
                let claim = if client == 0 {
                    "SELECT outcome, token::text FROM syncguard.idem_claim($1, $2, '{\"amount\": 5}')"
                } else {
                    "SELECT outcome, token::text FROM syncguard.idem_claim($1, $2, '{\"amount\": 5}',
                                                                       complete => '{\"ok\": true}')"
                };
                for (tenant, key) in keys {
                    loop {
                        let mut tx = db.transaction().unwrap();
                        let row = tx.query_one(claim, &[&tenant, &key]).unwrap();
                        let outcome: String = row.get(0);
                        match outcome.as_str() {
                            "claimed" => {
                                let token: String = row.get(1);
                                tx.execute("INSERT INTO orders VALUES ($1, $2, 5)", &[&tenant, &key]).unwrap();
                                if client == 0 {
                                    tx.execute(
                                        "SELECT syncguard.idem_complete($1::text::uuid, '{\"ok\": true}', $2)",
                                        &[&token, &tenant],
                                    )
                                    .unwrap();
                                }
                                tx.commit().unwrap();
                                *claimed.lock().unwrap().entry((tenant.clone(), key.clone())).or_default() += 1;
                                break;
                            }
                            "replay" => {
                                tx.commit().unwrap();
                                break;
                            }
                            other => panic!("unexpected outcome {other}"),
                        }
                    }
                }
            })
        })
        .collect();
    for h in handles {
        h.join().unwrap();
    }
    let claimed = claimed.lock().unwrap();
    assert_eq!(claimed.len(), keys.len());
    assert!(claimed.values().all(|n| *n == 1));
    assert_eq!(
        count(&mut c, "SELECT count(*) FROM orders"),
        keys.len() as i64
    );
    assert_eq!(
        count(
            &mut c,
            "SELECT count(*) FROM syncguard.idempotency_keys WHERE status = 'succeeded'"
        ),
        keys.len() as i64
    );
    assert_eq!(
        count(&mut c, "SELECT count(*) FROM pg_dist_transaction"),
        two_phase_before
    );

    // A completed key is replayed, also after its lease would have expired.
    let token: String = c
        .query_one("SELECT token::text FROM syncguard.idem_claim('tenant-1', 'short', '{}', lease => '1 second')", &[])
        .unwrap()
        .get(0);
    c.execute(
        "SELECT syncguard.idem_complete($1::text::uuid, '{\"done\": 1}')",
        &[&token],
    )
    .unwrap();
    thread::sleep(Duration::from_millis(1500));
    let again: String = c
        .query_one("SELECT outcome FROM syncguard.idem_claim('tenant-1', 'short', '{}', lease => '1 second')", &[])
        .unwrap()
        .get(0);
    assert_eq!(again, "replay");

    // idem_fail, with and without scope, and the lease-lost error.
    for scope in [Some("tenant-2"), None] {
        let token: String = c
            .query_one(
                "SELECT token::text FROM syncguard.idem_claim('tenant-2', $1, '{}')",
                &[&format!("fail-{scope:?}")],
            )
            .unwrap()
            .get(0);
        let status: String = c
            .query_one(
                "SELECT status FROM syncguard.idem_fail($1::text::uuid, 'boom', scope => $2)",
                &[&token, &scope],
            )
            .unwrap()
            .get(0);
        assert_eq!(status, "failed");
        assert_eq!(
            sqlstate(c.execute(
                "SELECT syncguard.idem_complete($1::text::uuid, NULL, $2)",
                &[&token, &scope]
            )),
            "SG002"
        );
    }
}

/// The rest of syncguard with its tables placed by distribute(): the queue,
/// sync runs, health views, invariants over a distributed table,
/// housekeeping of distributed keys, and the background worker, which works
/// on the coordinator and does nothing on the workers.
#[test]
fn citus_queue_sync_health_invariants_housekeeping_and_the_worker() {
    let cluster = Citus::start(&[("syncguard.worker_interval", "1")]);
    let mut c = cluster.connect();
    c.batch_execute(
        "SELECT count(*) FROM syncguard.distribute();
         CREATE TABLE accounts (id int PRIMARY KEY, balance int, changed_at timestamptz DEFAULT now());
         SELECT create_distributed_table('accounts', 'id');
         INSERT INTO accounts (id, balance) SELECT g, CASE WHEN g % 10 = 0 THEN -1 ELSE 1 END FROM generate_series(1, 50) g;",
    )
    .unwrap();

    // Queue.
    let job: i64 = c
        .query_one("SELECT syncguard.enqueue('mail', '{\"to\": \"a\"}')", &[])
        .unwrap()
        .get(0);
    c.query_one(
        "SELECT syncguard.enqueue('mail', '{\"to\": \"b\"}', dedupe_key => 'b')",
        &[],
    )
    .unwrap();
    let got: Vec<i64> = c
        .query("SELECT job_id FROM syncguard.dequeue('mail', 2)", &[])
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert_eq!(got.len(), 2);
    c.execute("SELECT syncguard.ack($1)", &[&job]).unwrap();
    let other = got.iter().find(|j| **j != job).unwrap();
    let state: String = c
        .query_one(
            "SELECT state FROM syncguard.nack($1, 'smtp down', retryable => false)",
            &[other],
        )
        .unwrap()
        .get(0);
    assert_eq!(state, "dead");
    assert_eq!(
        count(
            &mut c,
            "SELECT dead FROM syncguard.queue_stats WHERE queue = 'mail'"
        ),
        1
    );
    assert_eq!(count(&mut c, "SELECT syncguard.purge_dead('mail')"), 1);

    // Sync runs and their health.
    let run: i64 = c
        .query_one(
            "SELECT run_id FROM syncguard.sync_begin('crm', ARRAY['a', 'b'])",
            &[],
        )
        .unwrap()
        .get(0);
    c.execute(
        "SELECT syncguard.sync_part($1, 'a', true, records => 3)",
        &[&run],
    )
    .unwrap();
    c.execute(
        "SELECT syncguard.sync_part($1, 'b', false, 'timeout')",
        &[&run],
    )
    .unwrap();
    c.execute("SELECT syncguard.sync_finish($1)", &[&run])
        .unwrap();
    assert_eq!(
        count(
            &mut c,
            "SELECT runs FROM syncguard.sync_health WHERE source = 'crm'"
        ),
        1
    );
    c.query("SELECT * FROM syncguard.sync_alerts", &[]).unwrap();

    // An invariant over the distributed table, checked by the worker.
    c.batch_execute(
        "SELECT syncguard.define_invariant('no_negative_balance',
            'SELECT id AS entity, changed_at AS since FROM public.accounts WHERE balance < 0',
            schedule => '1 second')",
    )
    .unwrap();
    let checked = c
        .query_one(
            "SELECT status, violations FROM syncguard.check_invariants('no_negative_balance')",
            &[],
        )
        .unwrap();
    assert_eq!(checked.get::<_, String>(0), "violating");
    assert_eq!(checked.get::<_, i32>(1), 5);
    // A role that is not a superuser defines one with the grants of the
    // coordinator alone: the invariant's view is not made on the workers.
    c.batch_execute(
        "CREATE ROLE app LOGIN;
         GRANT SELECT ON accounts TO app;
         GRANT CREATE ON SCHEMA syncguard_invariants TO app;",
    )
    .unwrap();
    let mut app = cluster.connect_as("app");
    app.batch_execute(
        "SELECT syncguard.define_invariant('app_negative',
            'SELECT id AS entity, changed_at AS since FROM public.accounts WHERE balance < 0')",
    )
    .unwrap();
    let checked = app
        .query_one(
            "SELECT status, violations FROM syncguard.check_invariants('app_negative')",
            &[],
        )
        .unwrap();
    assert_eq!(
        (checked.get::<_, String>(0), checked.get::<_, i32>(1)),
        ("violating".into(), 5)
    );
    for worker in &cluster.workers {
        let mut w = worker.connect();
        assert_eq!(
            count(&mut w, "SELECT count(*) FROM pg_class WHERE relnamespace = 'syncguard_invariants'::regnamespace"),
            0
        );
    }

    // Expired keys on every shard: housekeeping prunes them, idem_prune in batches.
    c.batch_execute(
        "SELECT count(*) FROM generate_series(1, 30) g, LATERAL syncguard.idem_claim('s' || (g % 6), 'k' || g, '{}', ttl => '1 second');
         UPDATE syncguard.idempotency_keys SET expires_at = now() - interval '1 hour', status = 'succeeded';",
    )
    .unwrap();
    assert_eq!(count(&mut c, "SELECT syncguard.idem_prune(4)"), 4);
    assert_eq!(count(&mut c, "SELECT syncguard.idem_prune(100, 's1')"), 5);
    let pruned = count(
        &mut c,
        "SELECT affected FROM syncguard.housekeeping() WHERE task = 'idempotency keys pruned'",
    );
    assert_eq!(pruned, 21);
    assert_eq!(
        count(&mut c, "SELECT count(*) FROM syncguard.idempotency_keys"),
        0
    );

    // The background worker runs the checks on the coordinator ...
    let deadline = Instant::now() + Duration::from_secs(60);
    while count(
        &mut c,
        "SELECT count(*) FROM syncguard.invariant_runs WHERE invariant = 'no_negative_balance'",
    ) < 3
    {
        assert!(
            Instant::now() < deadline,
            "the worker ran no check\n{}",
            cluster.coordinator.log_tail()
        );
        thread::sleep(Duration::from_millis(200));
    }
    // ... and, after several of its intervals, has logged no failure anywhere.
    thread::sleep(Duration::from_secs(3));
    for node in std::iter::once(&cluster.coordinator).chain(&cluster.workers) {
        let log = node.log_text();
        assert!(!log.contains("syncguard worker:"), "{}", node.log_tail());
    }
}

/// A worker killed (kill -9) and started again while two clients write
/// through the coordinator: every write the coordinator acknowledged is
/// there afterwards, and the clients carry on.
#[test]
fn citus_worker_restarted_under_load_loses_no_acknowledged_write() {
    let mut cluster = Citus::start(&[]);
    let mut c = cluster.connect();
    c.batch_execute(
        "CREATE TABLE ledger (tenant text, key text, doc jsonb, PRIMARY KEY (tenant, key));
         SELECT create_distributed_table('ledger', 'tenant');
         SELECT count(*) FROM syncguard.distribute(colocate_with => 'ledger');",
    )
    .unwrap();
    let stop = Arc::new(AtomicBool::new(false));
    let acked = Arc::new(Mutex::new(Vec::<(String, String)>::new()));
    let writers: Vec<_> = (0..2)
        .map(|client| {
            let config = cluster.coordinator.config("postgres");
            let (stop, acked) = (stop.clone(), acked.clone());
            thread::spawn(move || {
                let mut db: Option<Client> = None;
                let mut i = 0u64;
                let mut failures = 0u64;
                while !stop.load(Ordering::Relaxed) {
                    i += 1;
                    let (tenant, key) = (format!("t{}", i % 16), format!("c{client}-{i}"));
                    let Some(conn) = db.as_mut() else {
                        db = config.connect(NoTls).ok();
                        continue;
                    };
                    // Claim, effect (a merge upsert) and completion in one transaction.
                    let result = conn.transaction().and_then(|mut tx| {
                        let token: String = tx
                            .query_one("SELECT token::text FROM syncguard.idem_claim($1, $2, '{}')", &[&tenant, &key])?
                            .get(0);
                        tx.execute(
                            "SELECT syncguard.merge_upsert('ledger', jsonb_build_object('tenant', $1::text, 'key', $2::text),
                                                           '{\"doc\": {\"n\": 1}}')",
                            &[&tenant, &key],
                        )?;
                        tx.execute("SELECT syncguard.idem_complete($1::text::uuid, '{}', $2)", &[&token, &tenant])?;
                        tx.commit()
                    });
                    match result {
                        Ok(()) => acked.lock().unwrap().push((tenant, key)),
                        Err(_) => {
                            failures += 1;
                            if conn.is_closed() {
                                db = None;
                            }
                            thread::sleep(Duration::from_millis(20));
                        }
                    }
                }
                failures
            })
        })
        .collect();
    let acked_now = || acked.lock().unwrap().len();
    let wait_for = |n: usize| {
        let deadline = Instant::now() + Duration::from_secs(120);
        while acked_now() < n {
            assert!(
                Instant::now() < deadline,
                "writes stalled at {}",
                acked_now()
            );
            thread::sleep(Duration::from_millis(50));
        }
    };
    wait_for(100);
    cluster.workers[1].kill_postmaster();
    let during = acked_now();
    thread::sleep(Duration::from_millis(500));
    cluster.workers[1].start();
    // Writes go on to both workers after the restart: wait for some to the
    // restarted one (the tenants on its shards), then for 200 more in all.
    let restarted = cluster.workers[1].port() as i32;
    let restarted_tenants: BTreeSet<String> = (0..16)
        .map(|t| format!("t{t}"))
        .filter(|t| {
            c.query_one(
                "SELECT n.nodeport FROM pg_dist_placement p JOIN pg_dist_node n USING (groupid)
                  WHERE p.shardid = get_shard_id_for_distribution_column('ledger', $1::text)",
                &[t],
            )
            .unwrap()
            .get::<_, i32>(0)
                == restarted
        })
        .collect();
    assert!(!restarted_tenants.is_empty());
    let after = acked_now();
    let deadline = Instant::now() + Duration::from_secs(120);
    while !acked.lock().unwrap()[after..]
        .iter()
        .any(|(t, _)| restarted_tenants.contains(t))
    {
        assert!(
            Instant::now() < deadline,
            "no write reached the restarted worker"
        );
        thread::sleep(Duration::from_millis(50));
    }
    wait_for(during + 200);
    stop.store(true, Ordering::Relaxed);
    let failures: u64 = writers.into_iter().map(|h| h.join().unwrap()).sum();
    assert!(failures > 0, "no write met the stopped worker");

    let acked = acked.lock().unwrap();
    let stored: BTreeSet<(String, String)> = c
        .query("SELECT tenant, key FROM ledger", &[])
        .unwrap()
        .iter()
        .map(|r| (r.get(0), r.get(1)))
        .collect();
    let missing: Vec<_> = acked.iter().filter(|k| !stored.contains(*k)).collect();
    assert!(missing.is_empty(), "acknowledged but lost: {missing:?}");
    // Effect and key commit together: a write whose answer the restart
    // lost may be there, but then with its completed key.
    assert_eq!(
        count(
            &mut c,
            "SELECT count(*) FROM syncguard.idempotency_keys WHERE status = 'succeeded'"
        ),
        stored.len() as i64
    );
    assert_eq!(
        count(
            &mut c,
            "SELECT count(*) FROM ledger l JOIN syncguard.idempotency_keys k
                        ON k.scope = l.tenant AND k.key = l.key AND k.status = 'succeeded'"
        ),
        stored.len() as i64
    );
}

/// The SQL statements of the ```sql blocks of a Markdown file, in order.
fn sql_examples(markdown: &str) -> Vec<String> {
    let (mut out, mut current) = (Vec::new(), String::new());
    let (mut in_block, mut in_dollar) = (false, false);
    for line in markdown.lines() {
        let trimmed = line.trim();
        if !in_block {
            in_block = trimmed == "```sql";
            continue;
        }
        if trimmed == "```" {
            in_block = false;
            continue;
        }
        current.push_str(trimmed);
        current.push('\n');
        if trimmed.matches("$$").count() % 2 == 1 {
            in_dollar = !in_dollar;
        }
        let code = trimmed.split("--").next().unwrap_or("").trim_end();
        if !in_dollar && code.ends_with(';') {
            out.push(std::mem::take(&mut current));
        }
    }
    assert!(
        current.trim().is_empty(),
        "unterminated statement: {current}"
    );
    out
}

/// Every SQL example of docs/citus.md, run as written, statement by
/// statement in one session (as psql sends them), on a new cluster.
#[test]
fn citus_docs_examples_run_as_written() {
    let cluster = Citus::start(&[]);
    let mut c = cluster.connect();
    // The guide starts with CREATE EXTENSION syncguard.
    c.batch_execute("DROP EXTENSION syncguard").unwrap();
    let doc =
        std::fs::read_to_string(syncguard_client_tests::repo().join("docs/citus.md")).unwrap();
    let statements = sql_examples(&doc);
    assert!(statements.len() >= 12, "{statements:#?}");
    for statement in &statements {
        c.batch_execute(statement)
            .unwrap_or_else(|e| panic!("{statement}\nfailed: {e:?}"));
    }
    // What the examples did: one order, the bypassed stale write, and the
    // extension gone with nothing of it left in Citus's metadata.
    assert_eq!(count(&mut c, "SELECT count(*) FROM orders"), 1);
    assert_eq!(
        count(&mut c, "SELECT count(*) FROM items WHERE doc->>'v' = '3'"),
        1
    );
    assert_eq!(
        count(
            &mut c,
            "SELECT count(*) FROM pg_extension WHERE extname = 'syncguard'"
        ),
        0
    );
    assert_eq!(
        count(&mut c, "SELECT count(*) FROM pg_dist_partition WHERE logicalrelid::text NOT IN ('orders', 'items', 'docs_by_id')"),
        0
    );
}
