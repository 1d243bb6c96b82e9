//! Many roles, one database, one worker: what one role holds up must not
//! hold up another's checks. `mallory` and `alice` are ordinary roles; the
//! background worker runs with `syncguard.max_check_time = 1s`. Each attack
//! runs while alice's invariant is due every second, and the test asserts
//! that alice's checks go on completing and that the worker is never seen
//! waiting for a lock in `pg_locks` (no wall-clock thresholds).

mod common;

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
