//! pg_dump of a database that uses every feature, restored with pg_restore
//! into a fresh server (custom format) and with psql into another database
//! (plain format). Everything comes back: every extension table (compared
//! row by row as text) and sequence, the protected table with its trigger
//! and policy, the invariant views; and everything goes on working: the
//! protection still merges partial updates, leases, runs and jobs taken
//! before the dump are completed after it, sequences hand out new ids.
use syncguard_client_tests::common;

use common::TestCluster;
use postgres::Client;

/// What the dump is made of: one of each state of each feature.
const FILL: &str = r#"
CREATE EXTENSION syncguard;

-- Merge upserts and protection: a protected table with a write policy and a
-- freshness companion, a partial update, a write ignored as stale.
CREATE TABLE profiles (id int PRIMARY KEY, email text, data jsonb, data_seen jsonb, synced_at timestamptz);
SELECT syncguard.protect('profiles', NULL,
    '{"freshness": {"data": "data_seen"}, "last_write_wins": "synced_at", "paths": {"tags": "replace"}}');
SELECT syncguard.merge_upsert('profiles', '{"id": 1}',
    '{"email": "ann@example.com", "data": {"billing": {"plan": "pro"}, "crm": {"owner": "ann"}, "tags": ["a"]},
      "synced_at": "2026-01-01T10:00:00Z"}');
UPDATE profiles SET email = NULL, data = '{"crm": {"owner": "bob"}}', synced_at = '2026-01-01T11:00:00Z' WHERE id = 1;
UPDATE profiles SET data = '{"crm": {"owner": "old"}}', synced_at = '2025-12-31T00:00:00Z' WHERE id = 1;

-- Idempotency keys: succeeded, failed (retry due in an hour), dead, running.
SELECT syncguard.idem_complete((SELECT token FROM syncguard.idem_claim('orders', 'o1', '{"n": 1}')), '{"charged": 10}');
SELECT syncguard.idem_fail((SELECT token FROM syncguard.idem_claim('orders', 'o2', '{"n": 2}')), 'timeout', base => '1 hour');
SELECT syncguard.idem_fail((SELECT token FROM syncguard.idem_claim('orders', 'o3', '{"n": 3}')), 'card declined', retryable => false);
SELECT token FROM syncguard.idem_claim('orders', 'o4', '{"n": 4}', lease => '1 hour');

-- Rows of an application role, behind row-level security.
CREATE ROLE app;
SET ROLE app;
SELECT syncguard.idem_complete((SELECT token FROM syncguard.idem_claim('app-orders', 'o1', '{}')), '{"charged": 99}');
SELECT syncguard.enqueue('app-jobs', '{"n": 1}');
RESET ROLE;

-- Sync: a configured source with a succeeded, a failed and a running run.
SELECT syncguard.sync_configure('crm', overlap => '5 minutes', run_timeout => '1 hour', max_error_rate => 0.25);
WITH r AS MATERIALIZED (SELECT run_id FROM syncguard.sync_begin('crm', ARRAY['contacts', 'deals']))
SELECT syncguard.sync_part(run_id, p, true, records => 7, latency => '120 ms')
  FROM r, unnest(ARRAY['contacts', 'deals']) p;
SELECT syncguard.sync_finish(max(run_id)) FROM syncguard.sync_runs;
SELECT syncguard.sync_part(run_id, 'contacts', false, 'HTTP 503')
  FROM syncguard.sync_begin('crm', ARRAY['contacts', 'deals']);
SELECT syncguard.sync_finish(max(run_id)) FROM syncguard.sync_runs;
SELECT syncguard.sync_part(run_id, 'contacts', true) FROM syncguard.sync_begin('crm', ARRAY['contacts', 'deals']);

-- Queue with settings: a leased job, a dead one, a ready one with a dedupe
-- key, a delayed one.
SELECT syncguard.queue_configure('webhooks', max_attempts => 2, base => '1 hour', cap => '2 hours', jitter => 0, max_job_age => '2 hours');
SELECT syncguard.enqueue('webhooks', '{"n": 2}');
SELECT syncguard.enqueue('webhooks', '{"n": 3}');
SELECT count(*) FROM syncguard.dequeue('webhooks', 2, visibility => '1 hour');
SELECT syncguard.nack(job_id, 'gone', retryable => false)
  FROM syncguard.queue_jobs WHERE payload = '{"n": 3}';
SELECT syncguard.enqueue('webhooks', '{"n": 1}', dedupe_key => 'order-1');
SELECT syncguard.enqueue('webhooks', '{"n": 4}', delay => '1 hour');

-- Invariants with runs and episodes (one open, one resolved), a template,
-- entity events.
CREATE TABLE deliveries (id int PRIMARY KEY, due_at timestamptz, delivered boolean);
INSERT INTO deliveries VALUES (1, now() - interval '2 days', false), (2, now() - interval '3 days', false);
SELECT syncguard.define_invariant('late_delivery',
    'SELECT id AS entity, due_at AS since FROM deliveries WHERE NOT delivered',
    grace => '1 day', severity => 'warning', remediation => 'Call the carrier.');
SELECT syncguard.invariant_never_synced('never', 'deliveries', 'due_at');
SELECT count(*) FROM syncguard.check_invariants();
UPDATE deliveries SET delivered = true WHERE id = 2;
SELECT count(*) FROM syncguard.check_invariants();
INSERT INTO syncguard.entity_events (entity, kind) VALUES ('1', 'shipped'), ('1', 'delivered');
"#;

/// The database as text: every table and sequence of the extension, the
/// user tables, triggers, invariant views and the extension's views.
fn state(client: &mut Client) -> Vec<String> {
    let members = common::extension_relations(client);
    assert!(
        members.len() >= 12,
        "extension tables and sequences: {members:?}"
    );
    let user_tables = ["profiles", "deliveries"].map(|t| (t.to_string(), "r".to_string()));
    let views = [
        "syncguard.protected_tables",
        "syncguard.conflict_stats",
        "syncguard.dead_letters",
        "syncguard_invariants.late_delivery",
        "syncguard_invariants.never",
    ]
    .map(|v| (v.to_string(), "v".to_string()));
    let relations: Vec<_> = members
        .into_iter()
        .chain(user_tables)
        .chain(views)
        .collect();
    let mut lines = common::rows_as_text(client, &relations);
    for row in client
        .query(
            "SELECT pg_get_triggerdef(oid) FROM pg_trigger WHERE NOT tgisinternal
             UNION ALL
             SELECT format('view %s: %s', c.oid::regclass, pg_get_viewdef(c.oid))
               FROM pg_class c WHERE c.relnamespace = 'syncguard_invariants'::regnamespace
             ORDER BY 1",
            &[],
        )
        .unwrap()
    {
        lines.push(row.get(0));
    }
    lines
}

/// The restored state equals the dumped one; on failure, the lines that differ.
fn assert_restored(restored: Vec<String>, dumped: &[String]) {
    let lost: Vec<&String> = dumped.iter().filter(|l| !restored.contains(l)).collect();
    let new: Vec<&String> = restored.iter().filter(|l| !dumped.contains(l)).collect();
    assert!(
        lost.is_empty() && new.is_empty(),
        "lost: {lost:#?}\nnot dumped: {new:#?}"
    );
    assert_eq!(restored, dumped);
}

/// Every table and sequence of the extension is registered with
/// pg_extension_config_dump, or pg_dump would leave its rows behind.
fn assert_all_registered(client: &mut Client) {
    let unregistered: Vec<String> = client
        .query(
            "SELECT c.oid::regclass::text
               FROM pg_extension e
               JOIN pg_depend d ON d.refclassid = 'pg_extension'::regclass AND d.refobjid = e.oid
                                AND d.classid = 'pg_class'::regclass AND d.deptype = 'e'
               JOIN pg_class c ON c.oid = d.objid
              WHERE e.extname = 'syncguard' AND c.relkind IN ('r', 'p', 'S')
                AND c.oid <> ALL (coalesce(e.extconfig, '{}'))
              ORDER BY 1",
            &[],
        )
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert!(
        unregistered.is_empty(),
        "not kept by pg_dump: {unregistered:?}"
    );
}

/// Fill database `db` of `cluster`; returns the state, the running key's
/// token and the running run's id.
fn fill(cluster: &TestCluster, db: &str) -> (Vec<String>, String, i64) {
    cluster
        .connect()
        .batch_execute(&format!("CREATE DATABASE {db}"))
        .unwrap();
    let mut client = cluster.connect_to(db);
    client.batch_execute(FILL).unwrap();
    assert_all_registered(&mut client);
    let token: String = client
        .query_one(
            "SELECT lease_token::text FROM syncguard.idempotency_keys WHERE key = 'o4'",
            &[],
        )
        .unwrap()
        .get(0);
    let run: i64 = client
        .query_one(
            "SELECT run_id FROM syncguard.sync_runs WHERE status = 'running'",
            &[],
        )
        .unwrap()
        .get(0);
    (state(&mut client), token, run)
}

fn one<T: for<'a> postgres::types::FromSql<'a>>(client: &mut Client, sql: &str) -> T {
    client
        .query_one(sql, &[])
        .unwrap_or_else(|e| panic!("{sql}: {e}"))
        .get(0)
}

/// Every feature goes on where the dump left it.
fn keeps_working(client: &mut Client, token: &str, run: i64) {
    // Protection: a partial UPDATE keeps the other fields and stamps
    // freshness; an older synced_at is still ignored and counted.
    client
        .batch_execute(
            "UPDATE profiles SET data = '{\"crm\": {\"owner\": \"cy\"}, \"tags\": [\"b\"]}',
                                 synced_at = '2026-01-02T00:00:00Z' WHERE id = 1;
             UPDATE profiles SET data = '{\"crm\": {\"owner\": \"late\"}}',
                                 synced_at = '2025-01-01T00:00:00Z' WHERE id = 1;",
        )
        .unwrap();
    let data: String = one(client, "SELECT data::text FROM profiles WHERE id = 1");
    assert_eq!(
        data,
        r#"{"crm": {"owner": "cy"}, "tags": ["b"], "billing": {"plan": "pro"}}"#
    );
    let fresh: bool = one(
        client,
        "SELECT (data_seen->>'tags')::timestamptz > (data_seen->>'billing')::timestamptz FROM profiles",
    );
    assert!(
        fresh,
        "freshness stamps the fields written after the restore"
    );
    let email: Option<String> = one(client, "SELECT email FROM profiles WHERE id = 1");
    assert_eq!(email.as_deref(), Some("ann@example.com"));
    let stale: i64 = one(
        client,
        "SELECT stale_ignored FROM syncguard.conflict_stats WHERE table_name = 'public.profiles'",
    );
    assert_eq!(stale, 2, "the restored counter goes on");
    let row: String = one(
        client,
        "SELECT syncguard.merge_upsert('profiles', '{\"id\": 2}', '{\"data\": {\"a\": 1}}')->>'data'",
    );
    assert_eq!(row, r#"{"a": 1}"#);

    // Idempotency: each key answers as before the dump; the lease taken
    // before it completes after it.
    let claims = client
        .query(
            "SELECT c.outcome, c.response::text
               FROM unnest(ARRAY['o1', 'o2', 'o3', 'o4']) WITH ORDINALITY AS k(key, n),
                    syncguard.idem_claim('orders', k.key, jsonb_build_object('n', k.n)) c
              ORDER BY k.n",
            &[],
        )
        .unwrap()
        .iter()
        .map(|r| (r.get(0), r.get(1)))
        .collect::<Vec<(String, Option<String>)>>();
    let expected = [
        ("replay", Some(r#"{"charged": 10}"#)),
        ("retry_later", Some(r#"{"error": "timeout"}"#)),
        ("dead", Some(r#"{"error": "card declined"}"#)),
        ("in_progress", None),
    ];
    let claims: Vec<(&str, Option<&str>)> = claims
        .iter()
        .map(|(o, r)| (o.as_str(), r.as_deref()))
        .collect();
    assert_eq!(claims, expected);
    client
        .execute(
            "SELECT syncguard.idem_complete($1::text::uuid, '{\"charged\": 40}')",
            &[&token],
        )
        .unwrap();
    let replay: String = one(
        client,
        "SELECT response::text FROM syncguard.idem_claim('orders', 'o4', '{\"n\": 4}')",
    );
    assert_eq!(replay, r#"{"charged": 40}"#);

    // Sync: the running run still holds its source, and finishes; the
    // watermark moves to its start; the next run gets a new id.
    let err = client
        .query_one("SELECT * FROM syncguard.sync_begin('crm')", &[])
        .expect_err("the restored running run holds the source");
    assert_eq!(err.code().map(|c| c.code()), Some("SG005"));
    client
        .execute("SELECT syncguard.sync_part($1, 'deals', true)", &[&run])
        .unwrap();
    let advanced: bool = client
        .query_one("SELECT syncguard.sync_finish($1)", &[&run])
        .unwrap()
        .get(0);
    assert!(advanced);
    let moved: bool = one(
        client,
        "SELECT s.watermark = r.started_at FROM syncguard.sync_sources s
           JOIN syncguard.sync_runs r ON r.source = s.source AND r.status = 'succeeded'
          ORDER BY r.run_id DESC LIMIT 1",
    );
    assert!(moved);
    let (next, since): (i64, bool) = client
        .query_one(
            "SELECT run_id, since = (SELECT watermark - overlap FROM syncguard.sync_sources WHERE source = 'crm')
               FROM syncguard.sync_begin('crm')",
            &[],
        )
        .map(|r| (r.get(0), r.get(1)))
        .unwrap();
    assert_eq!(next, run + 1, "the run id sequence goes on");
    assert!(since, "since honours the restored overlap");

    // Queue: the dedupe key still holds, only the ready job is due, the dead
    // one requeues, new jobs get new ids.
    let dedupe: bool = one(
        client,
        "SELECT syncguard.enqueue('webhooks', '{\"n\": 1}', dedupe_key => 'order-1')
              = (SELECT job_id FROM syncguard.queue_jobs WHERE dedupe_key = 'order-1')
             AND (SELECT count(*) FROM syncguard.queue_jobs WHERE dedupe_key = 'order-1') = 1",
    );
    assert!(dedupe, "the dedupe key keeps its job");
    let due: Vec<(i64, String, i32)> = client
        .query(
            "SELECT job_id, payload::text, attempt FROM syncguard.dequeue('webhooks', 10)",
            &[],
        )
        .unwrap()
        .iter()
        .map(|r| (r.get(0), r.get(1), r.get(2)))
        .collect();
    assert_eq!(due.len(), 1, "{due:?}");
    assert_eq!((due[0].1.as_str(), due[0].2), (r#"{"n": 1}"#, 1));
    client
        .execute("SELECT syncguard.ack($1, 1)", &[&due[0].0])
        .unwrap();
    assert_eq!(
        one::<i64>(client, "SELECT syncguard.requeue_dead('webhooks')"),
        1
    );
    let fresh_id: bool = one(
        client,
        "SELECT syncguard.enqueue('webhooks', '{\"n\": 5}') > (SELECT max(job_id) FROM syncguard.queue_jobs WHERE payload <> '{\"n\": 5}')",
    );
    assert!(fresh_id, "the job id sequence goes on");
    let retry: String = one(
        client,
        "SELECT n.state || ' ' || round(extract(epoch FROM n.retry_at - clock_timestamp()) / 60)
           FROM syncguard.dequeue('webhooks', 1) d, syncguard.nack(d.job_id, 'again') n",
    );
    assert_eq!(
        retry, "ready 60",
        "the queue's settings (base 1 hour, no jitter) apply"
    );

    // Invariants: the open episode goes on, runs get new ids; events too.
    let row = client
        .query_one(
            "SELECT violations, new_episodes FROM syncguard.check_invariants('late_delivery')",
            &[],
        )
        .unwrap();
    assert_eq!((row.get::<_, i32>(0), row.get::<_, i32>(1)), (1, 0));
    let ids: bool = one(
        client,
        "WITH e AS (INSERT INTO syncguard.entity_events (entity, kind) VALUES ('2', 'shipped') RETURNING id)
         SELECT (SELECT max(id) FROM e) > (SELECT max(id) FROM syncguard.entity_events WHERE entity = '1')
            AND (SELECT max(id) FROM syncguard.invariant_runs) = 5",
    );
    assert!(ids, "the invariant run and event sequences go on");
    let intervals: i64 = one(
        client,
        "SELECT count(*) FROM syncguard.event_intervals('shipped', 'delivered')",
    );
    assert_eq!(intervals, 2);
    let chores: i64 = one(client, "SELECT count(*) FROM syncguard.housekeeping()");
    assert_eq!(chores, 4);

    // The health views read the restored history with the new.
    let health: String = one(
        client,
        "SELECT format('%s runs, %s failed, %s running', runs, failures, running)
           FROM syncguard.sync_health WHERE source = 'crm'",
    );
    assert_eq!(health, "3 runs, 1 failed, 1 running");
    let queue: String = one(
        client,
        "SELECT format('%s live, %s in flight, %s dead', depth, in_flight, dead)
           FROM syncguard.queue_stats WHERE queue = 'webhooks'",
    );
    assert_eq!(queue, "4 live, 1 in flight, 0 dead");

    // The application role still owns its rows, and only it sees them.
    client.batch_execute("SET ROLE app").unwrap();
    let replay: String = one(
        client,
        "SELECT outcome || ' ' || response::text FROM syncguard.idem_claim('app-orders', 'o1', '{}')",
    );
    assert_eq!(replay, r#"replay {"charged": 99}"#);
    let visible: i64 = one(
        client,
        "SELECT (SELECT count(*) FROM syncguard.idempotency_keys) + (SELECT count(*) FROM syncguard.queue_jobs)",
    );
    assert_eq!(visible, 2, "the role sees its own key and job, no other");
    let job: String = one(
        client,
        "SELECT payload::text FROM syncguard.dequeue('app-jobs')",
    );
    assert_eq!(job, r#"{"n": 1}"#);
    client.batch_execute("RESET ROLE").unwrap();
}

#[test]
fn custom_format_dump_restores_into_a_fresh_server() {
    let cluster = TestCluster::new();
    let (before, token, run) = fill(&cluster, "shop");
    let dump = cluster.socket_dir().join("shop.dump");
    let dump = dump.to_str().unwrap();
    cluster.run_tool("pg_dump", &["-Fc", "-f", dump, "shop"]);

    let fresh = TestCluster::new();
    // Roles are not in a database's dump (pg_dumpall --globals-only has them).
    fresh.connect().batch_execute("CREATE ROLE app").unwrap();
    fresh.run_tool("createdb", &["shop"]);
    fresh.run_tool("pg_restore", &["--exit-on-error", "-d", "shop", dump]);
    let mut restored = fresh.connect_to("shop");
    assert_restored(state(&mut restored), &before);
    keeps_working(&mut restored, &token, run);
}

#[test]
fn plain_dump_restores_with_psql() {
    let cluster = TestCluster::new();
    let (before, token, run) = fill(&cluster, "shop");
    let dump = cluster.socket_dir().join("shop.sql");
    let dump = dump.to_str().unwrap();
    cluster.run_tool("pg_dump", &["-f", dump, "shop"]);
    cluster.run_tool("createdb", &["shop_restored"]);
    cluster.run_tool(
        "psql",
        &[
            "-X",
            "-q",
            "-v",
            "ON_ERROR_STOP=1",
            "-d",
            "shop_restored",
            "-f",
            dump,
        ],
    );
    let mut restored = cluster.connect_to("shop_restored");
    assert_restored(state(&mut restored), &before);
    keeps_working(&mut restored, &token, run);
}
