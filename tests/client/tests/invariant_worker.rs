//! The background worker, with syncguard in shared_preload_libraries: it
//! runs a due invariant check and housekeeping by itself, on its schedule,
//! and stops cleanly with the server (a fast shutdown completes, the worker
//! exits, and the log shows no crash).

use syncguard_client_tests::common;

use common::TestCluster;
use std::thread::sleep;
use std::time::{Duration, Instant};

#[test]
fn worker_runs_due_checks_and_stops_with_the_server() {
    let mut cluster = TestCluster::with_settings(&[
        ("shared_preload_libraries", "syncguard"),
        ("syncguard.worker_interval", "1"),
        ("syncguard.worker_database", "postgres"),
    ]);
    let mut client = cluster.connect_with_extension();
    client
        .batch_execute(
            "CREATE TABLE orders (id int PRIMARY KEY, paid_at timestamptz, shipped boolean);
             INSERT INTO orders VALUES (1, now() - interval '3 days', false), (2, now(), true);
             SELECT syncguard.define_invariant('paid_not_shipped',
                 'SELECT id AS entity, paid_at AS since FROM orders WHERE NOT shipped',
                 grace => '2 days', schedule => '1 second');
             INSERT INTO syncguard.idempotency_keys (scope, key, fingerprint, status, lease_token, expires_at)
             VALUES ('worker', 'expired', 'f', 'succeeded', gen_random_uuid(), now() - interval '1 hour');",
        )
        .unwrap();

    let worker: i64 = client
        .query_one(
            "SELECT count(*) FROM pg_stat_activity WHERE backend_type = 'syncguard worker'",
            &[],
        )
        .unwrap()
        .get(0);
    assert_eq!(worker, 1, "{}", cluster.log_tail());

    // Nobody calls check_invariants: the worker runs the due check (and
    // again on its schedule), and prunes the expired key.
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let row = client
            .query_one(
                "SELECT (SELECT count(*) FROM syncguard.invariant_runs WHERE invariant = 'paid_not_shipped'),
                        (SELECT count(*) FROM syncguard.idempotency_keys WHERE scope = 'worker')",
                &[],
            )
            .unwrap();
        let (runs, keys): (i64, i64) = (row.get(0), row.get(1));
        if runs >= 2 && keys == 0 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the worker ran {runs} checks and left {keys} expired keys\n{}",
            cluster.log_tail()
        );
        sleep(Duration::from_millis(200));
    }
    let open: Vec<String> = client
        .query(
            "SELECT entity FROM syncguard.violations WHERE invariant = 'paid_not_shipped' AND resolved_at IS NULL",
            &[],
        )
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert_eq!(open, ["1"]);
    let status: String = client
        .query_one(
            "SELECT status FROM syncguard.audit() WHERE invariant = 'paid_not_shipped'",
            &[],
        )
        .unwrap()
        .get(0);
    assert_eq!(status, "violating");

    // The fix is noticed by the worker too: the episode resolves.
    client
        .batch_execute("UPDATE orders SET shipped = true")
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    while client
        .query_one(
            "SELECT count(*) FROM syncguard.violations WHERE resolved_at IS NULL",
            &[],
        )
        .unwrap()
        .get::<_, i64>(0)
        > 0
    {
        assert!(Instant::now() < deadline, "{}", cluster.log_tail());
        sleep(Duration::from_millis(200));
    }
    drop(client);

    assert!(
        cluster.stop(),
        "fast shutdown did not complete\n{}",
        cluster.log_tail()
    );
    let log = cluster.log_text();
    assert!(log.contains("syncguard worker started"), "{log}");
    assert!(log.contains("database system is shut down"), "{log}");
    for crash in [
        "terminated by signal",
        "PANIC",
        "server process (PID",
        "syncguard worker: ",
    ] {
        assert!(!log.contains(crash), "the log shows {crash:?}:\n{log}");
    }
}

#[test]
fn worker_logs_a_failing_step_and_carries_on() {
    let cluster = TestCluster::with_settings(&[
        ("shared_preload_libraries", "syncguard"),
        ("syncguard.worker_interval", "1"),
    ]);
    let mut client = cluster.connect_with_extension();
    let worker_pid = || -> i32 {
        cluster
            .connect()
            .query_one(
                "SELECT pid FROM pg_stat_activity WHERE backend_type = 'syncguard worker'",
                &[],
            )
            .unwrap()
            .get(0)
    };
    let pid = worker_pid();
    // Recording any run fails, so the worker's check step raises an error.
    client
        .batch_execute(
            "CREATE FUNCTION refuse() RETURNS trigger LANGUAGE plpgsql AS
                 $$BEGIN RAISE EXCEPTION 'runs are read-only today'; END$$;
             CREATE TRIGGER refuse BEFORE INSERT ON syncguard.invariant_runs
                 FOR EACH ROW EXECUTE FUNCTION refuse();
             SELECT syncguard.define_invariant('anything',
                 'SELECT 1 AS entity, now() AS since WHERE false', schedule => '1 second');
             INSERT INTO syncguard.idempotency_keys (scope, key, fingerprint, status, lease_token, expires_at)
             VALUES ('worker', 'expired', 'f', 'succeeded', gen_random_uuid(), now() - interval '1 hour');",
        )
        .unwrap();
    // The error is logged, naming the invariant and its owner; housekeeping,
    // the next step, still runs.
    let owner: String = client
        .query_one("SELECT current_user::text", &[])
        .unwrap()
        .get(0);
    let logged =
        format!("syncguard worker: checking invariant anything of role {owner} failed: runs are read-only today");
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let keys: i64 = client
            .query_one(
                "SELECT count(*) FROM syncguard.idempotency_keys WHERE scope = 'worker'",
                &[],
            )
            .unwrap()
            .get(0);
        let log = cluster.log_text();
        if keys == 0 && log.contains(&logged) {
            break;
        }
        assert!(Instant::now() < deadline, "{}", cluster.log_tail());
        sleep(Duration::from_millis(200));
    }
    // Still the same worker, and it goes on once the cause is gone.
    assert_eq!(worker_pid(), pid);
    client
        .batch_execute("DROP TRIGGER refuse ON syncguard.invariant_runs")
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    while client
        .query_one("SELECT count(*) FROM syncguard.invariant_runs", &[])
        .unwrap()
        .get::<_, i64>(0)
        == 0
    {
        assert!(Instant::now() < deadline, "{}", cluster.log_tail());
        sleep(Duration::from_millis(200));
    }
    assert_eq!(worker_pid(), pid);
}
