//! docs/operations.md's pg_cron setup, run for real with Debian's
//! postgresql-15-cron: pg_cron lives in database `postgres`, syncguard is in
//! `postgres` and in another database, `app`. The jobs the guide schedules
//! run the due checks and housekeeping; the test waits for their runs in
//! `cron.job_run_details` (at the next minute boundary: pg_cron 1.4 schedules
//! by the minute) and finds the checks' runs in `invariant_runs` and the
//! expired keys pruned, in both databases.

use syncguard_client_tests::common;

use common::TestCluster;
use postgres::Client;
use std::thread::sleep;
use std::time::{Duration, Instant};

/// An invariant that is violated, and an expired idempotency key.
fn fill(client: &mut Client, invariant: &str) {
    client
        .batch_execute(&format!(
            "SELECT syncguard.define_invariant('{invariant}',
                 'SELECT 1 AS entity, now() - interval ''1 day'' AS since', schedule => '1 second');
             INSERT INTO syncguard.idempotency_keys (scope, key, fingerprint, status, lease_token, expires_at)
             VALUES ('cron', 'expired', 'f', 'succeeded', gen_random_uuid(), now() - interval '1 hour');"
        ))
        .unwrap();
}

fn counts(client: &mut Client, invariant: &str) -> (i64, i64) {
    let row = client
        .query_one(
            "SELECT (SELECT count(*) FROM syncguard.invariant_runs WHERE invariant = $1),
                    (SELECT count(*) FROM syncguard.idempotency_keys WHERE scope = 'cron')",
            &[&invariant],
        )
        .unwrap();
    (row.get(0), row.get(1))
}

#[test]
fn pg_cron_runs_checks_and_housekeeping_here_and_in_another_database() {
    let cluster = TestCluster::with_settings(&[
        ("shared_preload_libraries", "pg_cron"),
        ("cron.database_name", "postgres"),
        // Jobs run in background workers, not through a libpq connection.
        ("cron.use_background_workers", "on"),
        ("max_worker_processes", "16"),
    ]);
    let mut here = cluster.connect_with_extension();
    here.batch_execute("CREATE DATABASE app").unwrap();
    let mut app = cluster.connect_to("app");
    app.batch_execute("CREATE EXTENSION syncguard").unwrap();
    fill(&mut here, "inv_here");
    fill(&mut app, "inv_app");

    // The guide's commands: in pg_cron's database, then for another one.
    here.batch_execute(
        "CREATE EXTENSION IF NOT EXISTS pg_cron;
         SELECT cron.schedule('syncguard-checks', '* * * * *',
                              $$SELECT count(*) FROM syncguard.check_due_invariants()$$);
         SELECT cron.schedule('syncguard-housekeeping', '* * * * *',
                              $$SELECT count(*) FROM syncguard.housekeeping()$$);
         SELECT cron.schedule_in_database('syncguard-app', '* * * * *',
                              $$SELECT count(*) FROM syncguard.check_due_invariants(); SELECT count(*) FROM syncguard.housekeeping()$$,
                              'app');",
    )
    .unwrap();

    let deadline = Instant::now() + Duration::from_secs(150);
    loop {
        let done: Vec<(String, String)> = here
            .query(
                "SELECT j.jobname, d.status FROM cron.job_run_details d JOIN cron.job j USING (jobid)
                  WHERE d.status IN ('succeeded', 'failed') ORDER BY 1",
                &[],
            )
            .unwrap()
            .iter()
            .map(|r| (r.get(0), r.get(1)))
            .collect();
        for (job, status) in &done {
            assert_eq!(status, "succeeded", "job {job} failed: {done:?}");
        }
        let jobs: std::collections::BTreeSet<&str> = done.iter().map(|(j, _)| j.as_str()).collect();
        if jobs.len() == 3 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "pg_cron ran only {jobs:?}\n{}",
            cluster.log_tail()
        );
        sleep(Duration::from_secs(1));
    }
    let (runs, keys) = counts(&mut here, "inv_here");
    assert!(
        runs >= 1 && keys == 0,
        "here: {runs} runs, {keys} expired keys left"
    );
    let (runs, keys) = counts(&mut app, "inv_app");
    assert!(
        runs >= 1 && keys == 0,
        "app: {runs} runs, {keys} expired keys left"
    );
}
