//! A sync job's backend is killed (`kill -9`) in the middle of a run: one
//! part has reported ok (committed), another is being written when the
//! process dies. After crash recovery the source's watermark is where the
//! last successful run left it, the killed run is still `running` until its
//! timeout, then it is abandoned (by housekeeping's `sync_abandon_stale`, or
//! by the next `sync_begin`), its late `sync_finish` answers false, and the
//! next run fetches from the old watermark and advances it.
use syncguard_client_tests::common;

use common::TestCluster;
use postgres::Client;
use std::thread::sleep;
use std::time::Duration;

fn watermark(client: &mut Client) -> Option<String> {
    client
        .query_one(
            "SELECT watermark::text FROM syncguard.sync_sources WHERE source = 'crm'",
            &[],
        )
        .expect("watermark")
        .get(0)
}

fn status(client: &mut Client, run: i64) -> String {
    client
        .query_one(
            "SELECT status FROM syncguard.sync_runs WHERE run_id = $1",
            &[&run],
        )
        .expect("run status")
        .get(0)
}

fn begin(client: &mut Client) -> (i64, Option<String>) {
    let row = client
        .query_one(
            "SELECT run_id, since::text FROM syncguard.sync_begin('crm', ARRAY['contacts', 'deals'])",
            &[],
        )
        .expect("sync_begin");
    (row.get(0), row.get(1))
}

fn part(client: &mut Client, run: i64, name: &str) {
    client
        .execute(
            "SELECT syncguard.sync_part($1, $2, true, records => 10)",
            &[&run, &name],
        )
        .expect("sync_part");
}

fn finish(client: &mut Client, run: i64) -> bool {
    client
        .query_one("SELECT syncguard.sync_finish($1)", &[&run])
        .expect("sync_finish")
        .get(0)
}

#[test]
fn killed_sync_run_never_advances_and_is_abandoned() {
    let mut cluster = TestCluster::new();
    let mut setup = cluster.connect_with_extension();
    setup
        .batch_execute("SELECT syncguard.sync_configure('crm', run_timeout => '3 seconds')")
        .unwrap();

    // A successful run sets the watermark to its start.
    let mut job = cluster.connect();
    let (first, since) = begin(&mut job);
    assert_eq!(since, None, "the first run fetches everything");
    part(&mut job, first, "contacts");
    part(&mut job, first, "deals");
    assert!(finish(&mut job, first));
    let before = watermark(&mut job).expect("a watermark after a successful run");

    // The next run: contacts reported ok, deals in flight when the backend dies.
    let (killed, since) = begin(&mut job);
    assert!(since.is_some());
    part(&mut job, killed, "contacts");
    job.batch_execute("BEGIN").unwrap();
    part(&mut job, killed, "deals");
    let pid = cluster.backend_pid(&mut job);
    cluster.kill_backend(pid);
    assert!(
        job.simple_query("SELECT 1").is_err(),
        "the killed session is gone"
    );

    // After recovery: nothing moved; the uncommitted part is not there.
    let mut after = cluster.connect();
    assert_eq!(watermark(&mut after).as_deref(), Some(before.as_str()));
    assert_eq!(status(&mut after, killed), "running");
    let parts: i64 = after
        .query_one(
            "SELECT count(*) FROM syncguard.sync_parts WHERE run_id = $1",
            &[&killed],
        )
        .unwrap()
        .get(0);
    assert_eq!(parts, 1, "only the committed part report survives");
    // While it is within its timeout, the rule holds: no second run.
    let err = after
        .query_one("SELECT * FROM syncguard.sync_begin('crm')", &[])
        .expect_err("a running run blocks a second one");
    assert_eq!(err.code().map(|c| c.code()), Some("SG005"));

    // Past the timeout, housekeeping abandons it.
    sleep(Duration::from_millis(3200));
    let abandoned: i64 = after
        .query_one(
            "SELECT affected FROM syncguard.housekeeping() WHERE task = 'sync runs abandoned'",
            &[],
        )
        .unwrap()
        .get(0);
    assert_eq!(abandoned, 1);
    assert_eq!(status(&mut after, killed), "abandoned");
    // A late finish (say, a retried job that reconnects) never advances it.
    assert!(!finish(&mut after, killed));
    assert_eq!(watermark(&mut after).as_deref(), Some(before.as_str()));
    let health: (i64, i64) = after
        .query_one(
            "SELECT runs, failures FROM syncguard.sync_health WHERE source = 'crm'",
            &[],
        )
        .map(|r| (r.get(0), r.get(1)))
        .unwrap();
    assert_eq!(health, (2, 1), "the abandoned run counts as a failure");

    // The next run fetches from the old watermark, and catches up.
    let (next, since) = begin(&mut after);
    let expected_since: String = after
        .query_one(
            "SELECT watermark::text FROM syncguard.sync_sources WHERE source = 'crm'",
            &[],
        )
        .unwrap()
        .get(0);
    assert_eq!(since.as_deref(), Some(expected_since.as_str()));
    part(&mut after, next, "contacts");
    part(&mut after, next, "deals");
    assert!(finish(&mut after, next));
    let moved = watermark(&mut after).unwrap();
    let later: bool = after
        .query_one(
            "SELECT $1::text::timestamptz > $2::text::timestamptz",
            &[&moved, &before],
        )
        .unwrap()
        .get(0);
    assert!(later, "the watermark advanced to the new run's start");
}

/// The postmaster itself is killed mid-run: the same guarantees after restart,
/// and the next `sync_begin` (not housekeeping) abandons the dead run.
#[test]
fn postmaster_kill_mid_run_leaves_the_watermark() {
    let mut cluster = TestCluster::new();
    let mut setup = cluster.connect_with_extension();
    setup
        .batch_execute("SELECT syncguard.sync_configure('crm', run_timeout => '2 seconds')")
        .unwrap();
    let mut job = cluster.connect();
    let (first, _) = begin(&mut job);
    part(&mut job, first, "contacts");
    part(&mut job, first, "deals");
    assert!(finish(&mut job, first));
    let before = watermark(&mut job);

    let (killed, _) = begin(&mut job);
    part(&mut job, killed, "contacts");
    cluster.kill_postmaster();
    cluster.start();

    let mut after = cluster.connect();
    assert_eq!(watermark(&mut after), before);
    sleep(Duration::from_millis(2200));
    let (next, _) = begin(&mut after);
    assert_eq!(status(&mut after, killed), "abandoned");
    assert!(!finish(&mut after, killed));
    part(&mut after, next, "contacts");
    part(&mut after, next, "deals");
    assert!(finish(&mut after, next));
    assert_ne!(watermark(&mut after), before);
}
