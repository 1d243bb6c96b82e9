//! Many roles, one database, one worker: what one role holds up must not
//! hold up another's checks. `mallory` and `alice` are ordinary roles; the
//! background worker runs with `syncguard.max_check_time = 1s`. Each attack
//! runs while alice's invariant is due every second, and the test asserts
//! that alice's checks go on completing and that the worker is never seen
//! waiting for a lock in `pg_locks` (no wall-clock thresholds).

use syncguard_client_tests::common;

use common::TestCluster;
use postgres::{Client, NoTls};
use std::thread::sleep;
use std::time::{Duration, Instant};

fn cluster() -> (TestCluster, Client) {
    let cluster = TestCluster::with_settings(&[
        ("shared_preload_libraries", "syncguard"),
        ("syncguard.worker_interval", "1"),
        ("syncguard.worker_database", "postgres"),
        ("syncguard.max_check_time", "1s"),
    ]);
    let mut admin = cluster.connect_with_extension();
    admin
        .batch_execute(
            "CREATE ROLE mallory LOGIN;
             CREATE ROLE alice LOGIN;
             GRANT CREATE ON SCHEMA syncguard_invariants TO mallory, alice;",
        )
        .unwrap();
    (cluster, admin)
}

fn connect_as(cluster: &TestCluster, role: &str) -> Client {
    cluster
        .config("postgres")
        .user(role)
        .connect(NoTls)
        .unwrap()
}

fn runs(admin: &mut Client, invariant: &str) -> i64 {
    admin
        .query_one(
            "SELECT count(*) FROM syncguard.invariant_runs WHERE invariant = $1",
            &[&invariant],
        )
        .unwrap()
        .get(0)
}

/// Lock requests of the worker that wait (none may, ever).
fn worker_waits(admin: &mut Client) -> i64 {
    admin
        .query_one(
            "SELECT count(*) FROM pg_locks l JOIN pg_stat_activity a ON a.pid = l.pid
              WHERE a.backend_type = 'syncguard worker' AND NOT l.granted",
            &[],
        )
        .unwrap()
        .get(0)
}

/// Waits until alice's check has run `more` more times, watching that the
/// worker never waits for a lock meanwhile.
fn alice_checked(admin: &mut Client, more: i64) {
    let target = runs(admin, "a_check") + more;
    let deadline = Instant::now() + Duration::from_secs(90);
    while runs(admin, "a_check") < target {
        assert_eq!(worker_waits(admin), 0, "the worker waits for a lock");
        assert!(Instant::now() < deadline, "alice's check stopped running");
        sleep(Duration::from_millis(100));
    }
}

fn define_alice(cluster: &TestCluster) -> Client {
    let mut alice = connect_as(cluster, "alice");
    alice
        .batch_execute(
            "SELECT syncguard.define_invariant('a_check',
                 'SELECT ''x'' AS entity, now() - interval ''1 day'' AS since', schedule => '1 second');",
        )
        .unwrap();
    alice
}

#[test]
fn a_row_lock_on_an_invariant_does_not_stall_the_worker() {
    let (cluster, mut admin) = cluster();
    let _alice = define_alice(&cluster);
    let mut mallory = connect_as(&cluster, "mallory");
    mallory
        .batch_execute(
            "SELECT syncguard.define_invariant('m_locked',
                 'SELECT ''x'' AS entity, now() - interval ''1 day'' AS since', schedule => '1 second');
             BEGIN;
             SELECT name FROM syncguard.invariants WHERE name = 'm_locked' FOR UPDATE;",
        )
        .unwrap();
    let before = runs(&mut admin, "m_locked");
    alice_checked(&mut admin, 3);
    // mallory's own check waits for her transaction; nobody else's does.
    assert_eq!(runs(&mut admin, "m_locked"), before);
    mallory.batch_execute("COMMIT").unwrap();
}

#[test]
fn a_slow_check_is_bounded_by_the_operator() {
    let (cluster, mut admin) = cluster();
    let _alice = define_alice(&cluster);
    let mut mallory = connect_as(&cluster, "mallory");
    mallory
        .batch_execute(
            "SELECT syncguard.define_invariant('m_slow',
                 'SELECT ''x'' AS entity, now() - interval ''1 day'' AS since FROM pg_sleep(30)',
                 schedule => '1 second', statement_timeout => '24 hours');
             SELECT syncguard.define_invariant('m_slow2',
                 'SELECT ''x'' AS entity, now() - interval ''1 day'' AS since FROM pg_sleep(30)',
                 schedule => '1 second', statement_timeout => '24 hours');",
        )
        .unwrap();
    alice_checked(&mut admin, 3);
    let row = admin
        .query_one(
            "SELECT count(*) FILTER (WHERE sqlstate = '57014'), count(*) FROM syncguard.invariant_runs
              WHERE invariant IN ('m_slow', 'm_slow2')",
            &[],
        )
        .unwrap();
    let (timed_out, all): (i64, i64) = (row.get(0), row.get(1));
    assert!(all >= 1, "mallory's checks ran too");
    assert_eq!(
        timed_out, all,
        "each ran out of the operator's time, not its own"
    );
}

#[test]
fn a_public_advisory_lock_blocks_no_definition() {
    let (cluster, _admin) = cluster();
    let mut alice = define_alice(&cluster);
    let mut mallory = connect_as(&cluster, "mallory");
    // The keys define_invariant and drop_invariant used to take.
    mallory
        .batch_execute(
            "SELECT pg_advisory_lock(hashtext('syncguard.invariant'), hashtext('a_check'));
             SELECT pg_advisory_lock(hashtext('syncguard.invariant'), hashtext('a_new'));",
        )
        .unwrap();
    alice
        .batch_execute(
            "SET lock_timeout = '5s';
             SELECT syncguard.define_invariant('a_new', 'SELECT 1 AS entity, now() AS since');
             SELECT syncguard.define_invariant('a_check', 'SELECT 2 AS entity, now() AS since');
             SELECT syncguard.drop_invariant('a_new');",
        )
        .unwrap_or_else(|e| panic!("alice waited for mallory's advisory lock: {e}"));
}

/// No shared table can be locked against another role: PUBLIC holds no
/// table-level UPDATE or DELETE (which allow any lock mode). mallory tries
/// every table lock that would stall others, then holds what she may (row
/// locks on her own rows, ROW EXCLUSIVE) while alice uses every capability
/// and the worker goes on checking; alice runs with a lock_timeout, so a
/// wait on mallory fails her statement.
#[test]
fn no_shared_table_can_be_locked_against_another_role() {
    let (cluster, mut admin) = cluster();
    let mut alice = define_alice(&cluster);
    let mut mallory = connect_as(&cluster, "mallory");
    let tables: Vec<String> = admin
        .query(
            "SELECT relname::text FROM pg_class
              WHERE relnamespace = 'syncguard'::regnamespace AND relkind = 'r' ORDER BY 1",
            &[],
        )
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert!(tables.len() >= 10, "the shared tables: {tables:?}");
    mallory
        .batch_execute(
            "SELECT syncguard.idem_claim('m', 'k1', '{}');
             SELECT syncguard.enqueue('m_q', '{}');
             SELECT syncguard.sync_begin('m_src');
             SELECT syncguard.define_invariant('m_inv', 'SELECT 1 AS entity, now() AS since');
             BEGIN;",
        )
        .unwrap();
    for table in &tables {
        for mode in [
            "ACCESS EXCLUSIVE",
            "EXCLUSIVE",
            "SHARE ROW EXCLUSIVE",
            "SHARE",
        ] {
            mallory.batch_execute("SAVEPOINT s").unwrap();
            let err = mallory
                .batch_execute(&format!("LOCK TABLE syncguard.{table} IN {mode} MODE"))
                .expect_err(&format!("mallory locked {table} in {mode} mode"));
            assert_eq!(
                err.code().map(|c| c.code()),
                Some("42501"),
                "{table} {mode}: {err}"
            );
            mallory.batch_execute("ROLLBACK TO SAVEPOINT s").unwrap();
        }
    }
    // What she may hold: her own rows, and the lock every writer takes.
    mallory
        .batch_execute(
            "SELECT 1 FROM syncguard.idempotency_keys FOR UPDATE;
             SELECT 1 FROM syncguard.queue_jobs FOR UPDATE;
             SELECT 1 FROM syncguard.sync_sources FOR UPDATE;
             SELECT 1 FROM syncguard.sync_runs FOR UPDATE;
             SELECT 1 FROM syncguard.invariants FOR UPDATE;
             LOCK TABLE syncguard.idempotency_keys, syncguard.queues, syncguard.sync_sources,
                        syncguard.sync_parts, syncguard.invariants IN ROW EXCLUSIVE MODE;",
        )
        .unwrap();
    alice
        .batch_execute(
            "SET lock_timeout = '5s';
             SELECT syncguard.idem_complete(token, '{\"ok\": true}')
               FROM syncguard.idem_claim('m', 'k1', '{}');
             SELECT syncguard.idem_prune();
             SELECT syncguard.enqueue('a_q', '{}');
             SELECT syncguard.ack(job_id, attempt) FROM syncguard.dequeue('a_q', 1);
             SELECT syncguard.enqueue('a_q', '{\"n\": 2}');
             SELECT syncguard.queue_drop('a_q');
             SELECT syncguard.sync_part(run_id, 'p', true) FROM syncguard.sync_begin('a_src');
             SELECT syncguard.sync_finish(run_id) FROM syncguard.sync_runs WHERE source = 'a_src';
             SELECT syncguard.sync_prune('-1 day');
             SELECT syncguard.sync_drop('a_src');
             SELECT syncguard.define_invariant('a_new', 'SELECT 1 AS entity, now() AS since');
             SELECT syncguard.check_invariants('a_new');
             SELECT syncguard.drop_invariant('a_new', keep_history => false);
             SELECT syncguard.violations_prune('-1 day');
             SELECT * FROM syncguard.housekeeping();",
        )
        .unwrap_or_else(|e| panic!("alice waited for mallory: {e}"));
    alice_checked(&mut admin, 3);
    mallory.batch_execute("COMMIT").unwrap();
}

/// `define_invariant('orders_ok', …)` as `role`, checked against its own
/// registry row: returns the view it made (schema-qualified) and the
/// entities its query returns right now, sorted.
fn define_orders_ok(client: &mut Client, query: &str, schedule: &str) -> (String, Vec<String>) {
    let view: String = client
        .query_one(
            "SELECT syncguard.define_invariant('orders_ok', $1, schedule => $2::text::interval)::text",
            &[&query, &schedule],
        )
        .unwrap()
        .get(0);
    // Row-level security: the role's own row only.
    let row = client
        .query_one(
            "SELECT format('syncguard_invariants.%I', view_name), count(*) OVER ()
               FROM syncguard.invariants WHERE name = 'orders_ok'",
            &[],
        )
        .unwrap();
    assert_eq!(
        row.get::<_, i64>(1),
        1,
        "a role sees its own invariant only"
    );
    assert_eq!(
        row.get::<_, String>(0),
        view,
        "define_invariant returns the view_name's view"
    );
    let expected: Vec<String> = client
        .query_one(
            &format!("SELECT coalesce(array_agg(entity::text ORDER BY entity::text), '{{}}') FROM ({query}) AS q"),
            &[],
        )
        .unwrap()
        .get(0);
    (view, expected)
}

fn view_entities(client: &mut Client, view: &str) -> Vec<String> {
    client
        .query_one(
            &format!("SELECT coalesce(array_agg(entity::text ORDER BY entity::text), '{{}}') FROM {view}"),
            &[],
        )
        .unwrap()
        .get(0)
}

/// The open episodes of `owner`'s `orders_ok`, as the superuser sees them.
fn open_episodes(admin: &mut Client, owner: &str) -> Vec<String> {
    admin
        .query_one(
            "SELECT coalesce(array_agg(entity ORDER BY entity), '{}') FROM syncguard.violations
              WHERE invariant = 'orders_ok' AND owner_role = $1 AND resolved_at IS NULL",
            &[&owner],
        )
        .unwrap()
        .get(0)
}

fn owner_runs(admin: &mut Client, owner: &str) -> i64 {
    admin
        .query_one(
            "SELECT count(*) FROM syncguard.invariant_runs WHERE invariant = 'orders_ok' AND owner_role = $1",
            &[&owner],
        )
        .unwrap()
        .get(0)
}

/// `check_invariants('orders_ok')` as `client`'s role: (invariant,
/// violations) of each row. A check whose row the worker holds right now is
/// skipped (SKIP LOCKED), so it is called until it returns a row.
fn check_orders_ok(client: &mut Client) -> Vec<(String, i32)> {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let rows: Vec<(String, i32)> = client
            .query(
                "SELECT invariant, violations FROM syncguard.check_invariants('orders_ok')",
                &[],
            )
            .unwrap()
            .iter()
            .map(|r| (r.get(0), r.get(1)))
            .collect();
        if !rows.is_empty() {
            return rows;
        }
        assert!(Instant::now() < deadline, "the check stayed locked");
        sleep(Duration::from_millis(100));
    }
}

/// Invariant names are per owner (as pg_cron's job names are per user):
/// mallory's `orders_ok` does not keep alice from having her own, and
/// neither touches the other's view, checks, runs or episodes.
#[test]
fn invariant_names_are_per_owner() {
    let (cluster, mut admin) = cluster();
    let mut mallory = connect_as(&cluster, "mallory");
    let mut alice = connect_as(&cluster, "alice");
    let m_query = "SELECT 'm-' || g AS entity, now() - interval '1 day' AS since FROM generate_series(1, 2) AS g";
    let a_query = "SELECT 'a-1' AS entity, now() - interval '1 day' AS since";
    // Due every second: the worker checks both.
    let (m_view, m_expected) = define_orders_ok(&mut mallory, m_query, "1 second");
    let (a_view, a_expected) = define_orders_ok(&mut alice, a_query, "1 second");
    assert_ne!(
        m_expected, a_expected,
        "the two queries must tell the invariants apart"
    );

    // mallory came first and has the plain name; alice's view is name@alice.
    let plain: String = admin
        .query_one("SELECT format('syncguard_invariants.%I', 'orders_ok')", &[])
        .unwrap()
        .get(0);
    assert_eq!(m_view, plain);
    let suffixed: String = alice
        .query_one(
            "SELECT format('syncguard_invariants.%I', 'orders_ok@' || current_user)",
            &[],
        )
        .unwrap()
        .get(0);
    assert_eq!(a_view, suffixed);

    // Each view shows its owner's violations, and only its owner reads it.
    assert_eq!(view_entities(&mut mallory, &m_view), m_expected);
    assert_eq!(view_entities(&mut alice, &a_view), a_expected);
    let e = alice
        .query(&format!("SELECT * FROM {m_view}"), &[])
        .expect_err("alice read mallory's view");
    assert_eq!(e.code().map(|c| c.code()), Some("42501"), "{e}");

    // The worker checks both, each into its owner's runs and episodes.
    let deadline = Instant::now() + Duration::from_secs(90);
    while owner_runs(&mut admin, "mallory") == 0 || owner_runs(&mut admin, "alice") == 0 {
        assert_eq!(worker_waits(&mut admin), 0, "the worker waits for a lock");
        assert!(Instant::now() < deadline, "the worker did not check both");
        sleep(Duration::from_millis(100));
    }
    assert_eq!(open_episodes(&mut admin, "mallory"), m_expected);
    assert_eq!(open_episodes(&mut admin, "alice"), a_expected);

    // Redefining keeps the view; a long schedule takes the worker off them.
    assert_eq!(define_orders_ok(&mut mallory, m_query, "1 hour").0, m_view);
    assert_eq!(define_orders_ok(&mut alice, a_query, "1 hour").0, a_view);

    // check_invariants('orders_ok') as each role checks that role's own.
    for (client, owner, expected) in [
        (&mut mallory, "mallory", &m_expected),
        (&mut alice, "alice", &a_expected),
    ] {
        let before = owner_runs(&mut admin, owner);
        let rows = check_orders_ok(client);
        assert_eq!(
            rows,
            [("orders_ok".to_string(), expected.len() as i32)],
            "{owner}"
        );
        assert!(
            owner_runs(&mut admin, owner) > before,
            "{owner}'s check recorded a run of hers"
        );
    }
    assert_eq!(open_episodes(&mut admin, "mallory"), m_expected);
    assert_eq!(open_episodes(&mut admin, "alice"), a_expected);

    // A superuser sees both: the bare name is ambiguous ...
    let e = admin
        .query("SELECT * FROM syncguard.check_invariants('orders_ok')", &[])
        .expect_err("a superuser checked an ambiguous name");
    let db = e.as_db_error().expect("a server error");
    assert_eq!(db.code().code(), "42725", "{e}");
    assert!(
        db.message().contains("mallory") && db.message().contains("alice"),
        "{e}"
    );
    assert_eq!(db.hint(), Some("SET ROLE to the owning role first."));
    // ... until it takes the owner's role.
    admin.batch_execute("SET ROLE alice").unwrap();
    assert_eq!(
        check_orders_ok(&mut admin),
        [("orders_ok".to_string(), a_expected.len() as i32)]
    );
    admin.batch_execute("RESET ROLE").unwrap();

    // mallory drops hers: alice's invariant, view and episodes stay.
    let dropped: bool = mallory
        .query_one("SELECT syncguard.drop_invariant('orders_ok')", &[])
        .unwrap()
        .get(0);
    assert!(dropped);
    let left: Vec<(String, String)> = admin
        .query(
            "SELECT owner_role, format('syncguard_invariants.%I', view_name)
               FROM syncguard.invariants WHERE name = 'orders_ok'",
            &[],
        )
        .unwrap()
        .iter()
        .map(|r| (r.get(0), r.get(1)))
        .collect();
    assert_eq!(left, [("alice".to_string(), a_view.clone())]);
    let views: (bool, bool) = admin
        .query_one(
            "SELECT to_regclass($1) IS NULL, to_regclass($2) IS NOT NULL",
            &[&m_view, &a_view],
        )
        .map(|r| (r.get(0), r.get(1)))
        .unwrap();
    assert_eq!(views, (true, true), "mallory's view went, alice's stayed");
    assert_eq!(view_entities(&mut alice, &a_view), a_expected);
    assert_eq!(open_episodes(&mut admin, "alice"), a_expected);
    assert!(
        open_episodes(&mut admin, "mallory").is_empty(),
        "mallory's episodes closed"
    );
    assert!(
        owner_runs(&mut admin, "mallory") > 0,
        "mallory's history kept"
    );
    // Now the name is alice's alone, for her and for the superuser.
    assert_eq!(
        check_orders_ok(&mut alice),
        [("orders_ok".to_string(), a_expected.len() as i32)]
    );
    assert_eq!(
        check_orders_ok(&mut admin),
        [("orders_ok".to_string(), a_expected.len() as i32)]
    );
    let gone: i64 = mallory
        .query_one("SELECT count(*) FROM syncguard.check_invariants()", &[])
        .unwrap()
        .get(0);
    assert_eq!(gone, 0, "mallory has no invariant left");
}

/// Names are per owner: mallory takes every name alice's application uses
/// first (a sync source with a run left running, a queue with settings and a
/// live job under alice's dedupe key, an idempotency key for 1000 years), and
/// alice's sync run, jobs and claim still complete on the same names, each
/// on alice's own rows; mallory's stay as she left them, and dropping hers
/// leaves alice's.
#[test]
fn names_taken_first_by_another_role_are_still_free() {
    let (cluster, mut admin) = cluster();
    let mut mallory = connect_as(&cluster, "mallory");
    let mut alice = connect_as(&cluster, "alice");
    mallory
        .batch_execute(
            "SELECT syncguard.sync_configure('stripe', run_timeout => '1 day');
             SELECT syncguard.sync_begin('stripe');
             SELECT syncguard.queue_configure('emails', max_attempts => 1);
             SELECT syncguard.enqueue('emails', '{\"from\": \"mallory\"}', 'order-1');",
        )
        .unwrap();
    let err = mallory
        .batch_execute(
            "SELECT syncguard.idem_claim('payments', 'order-1001', '{}', ttl => '1000 years')",
        )
        .expect_err("a ttl beyond the maximum");
    assert_eq!(err.code().unwrap().code(), "22023");
    mallory
        .batch_execute(
            "SELECT syncguard.idem_claim('payments', 'order-1001', '{}', ttl => '1 year')",
        )
        .unwrap();

    // alice's sync run: a first run (since NULL) that advances her watermark
    let run = alice
        .query_one(
            "SELECT run_id, since IS NULL FROM syncguard.sync_begin('stripe')",
            &[],
        )
        .unwrap();
    let (run_id, first): (i64, bool) = (run.get(0), run.get(1));
    assert!(first, "alice's first run starts from mallory's watermark");
    alice
        .execute(
            "SELECT syncguard.sync_part($1, 'charges', true)",
            &[&run_id],
        )
        .unwrap();
    let advanced: bool = alice
        .query_one("SELECT syncguard.sync_finish($1)", &[&run_id])
        .unwrap()
        .get(0);
    assert!(advanced);

    // alice's queue: her settings, her job under the same dedupe key
    let owner: String = alice
        .query_one(
            "SELECT owner_role FROM syncguard.queue_configure('emails', max_attempts => 7)",
            &[],
        )
        .unwrap()
        .get(0);
    assert_eq!(owner, "alice");
    let job: i64 = alice
        .query_one(
            "SELECT syncguard.enqueue('emails', '{\"from\": \"alice\"}', 'order-1')",
            &[],
        )
        .unwrap()
        .get(0);
    let got = alice
        .query(
            "SELECT job_id, payload->>'from', attempt FROM syncguard.dequeue('emails', 10)",
            &[],
        )
        .unwrap();
    assert_eq!(got.len(), 1, "alice dequeues her job and only hers");
    assert_eq!(got[0].get::<_, i64>(0), job);
    assert_eq!(got[0].get::<_, String>(1), "alice");
    let state: String = alice
        .query_one("SELECT state FROM syncguard.nack($1, 'try again')", &[&job])
        .unwrap()
        .get(0);
    assert_eq!(
        state, "ready",
        "her own max_attempts (7) applies, not mallory's (1)"
    );

    // alice's idempotency key
    let claimed: String = alice
        .query_one(
            "SELECT outcome FROM syncguard.idem_claim('payments', 'order-1001', '{}')",
            &[],
        )
        .unwrap()
        .get(0);
    assert_eq!(claimed, "claimed");

    // mallory's rows are as she left them; dropping hers leaves alice's
    let theirs = |admin: &mut Client, sql: &str| -> Vec<String> {
        admin
            .query(sql, &[])
            .unwrap()
            .iter()
            .map(|r| r.get(0))
            .collect()
    };
    assert_eq!(
        theirs(
            &mut admin,
            "SELECT owner_role || ':' || (watermark IS NOT NULL) || ':' || run_timeout
               FROM syncguard.sync_sources WHERE source = 'stripe' ORDER BY 1"
        ),
        ["alice:true:01:00:00", "mallory:false:1 day"]
    );
    assert_eq!(
        theirs(
            &mut admin,
            "SELECT owner_role || ':' || max_attempts FROM syncguard.queues WHERE queue = 'emails' ORDER BY 1"
        ),
        ["alice:7", "mallory:1"]
    );
    assert_eq!(
        theirs(
            &mut admin,
            "SELECT owner_role || ':' || state FROM syncguard.queue_jobs WHERE queue = 'emails' ORDER BY 1"
        ),
        ["alice:ready", "mallory:ready"]
    );
    mallory
        .batch_execute(
            "SELECT syncguard.sync_drop('stripe'); SELECT syncguard.queue_drop('emails');",
        )
        .unwrap();
    assert_eq!(
        theirs(
            &mut admin,
            "SELECT owner_role FROM syncguard.sync_sources WHERE source = 'stripe'
             UNION ALL SELECT owner_role FROM syncguard.queues WHERE queue = 'emails'
             UNION ALL SELECT owner_role FROM syncguard.queue_jobs WHERE queue = 'emails'"
        ),
        ["alice", "alice", "alice"]
    );
    // the superuser, who sees every role's, is told to choose
    mallory
        .batch_execute("SELECT syncguard.sync_begin('stripe')")
        .unwrap();
    let err = admin
        .batch_execute("SELECT syncguard.sync_configure('stripe')")
        .expect_err("two owners: ambiguous for the superuser");
    assert_eq!(err.code().unwrap().code(), "42725");
}
