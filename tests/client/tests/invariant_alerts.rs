//! Alerts of invariant checks, as a client LISTENing on `syncguard_alerts`
//! receives them: exactly one per new episode (none while an episode goes
//! on, one again when it reopens), and one when a check starts erroring.
//! A payload names the invariant and the id of the episode or run, and a
//! forwarder looks the rest up, as docs/reference.md shows.
//! A check that divides by zero and one that runs past its statement
//! timeout are recorded as errored while the other checks still run.

use syncguard_client_tests::common;

use common::TestCluster;
use postgres::fallible_iterator::FallibleIterator;
use postgres::Client;
use serde_json::Value;
use std::time::Duration;

/// The alerts received since the last call. The checking session sends a
/// marker after its checks committed; notifications arrive in commit order,
/// so everything before the marker is everything the checks sent.
fn alerts(listener: &mut Client, checker: &mut Client) -> Vec<Value> {
    checker
        .batch_execute(r#"SELECT pg_notify('syncguard_alerts', '{"kind": "marker"}')"#)
        .unwrap();
    let mut got = Vec::new();
    let mut it = listener.notifications();
    let mut it = it.timeout_iter(Duration::from_secs(60));
    loop {
        let n = it
            .next()
            .unwrap()
            .expect("the marker notification did not arrive");
        assert_eq!(n.channel(), "syncguard_alerts");
        let payload: Value = serde_json::from_str(n.payload()).unwrap();
        if payload["kind"] == "marker" {
            return got;
        }
        got.push(payload);
    }
}

fn check(client: &mut Client) -> Vec<(String, String)> {
    client
        .query(
            "SELECT invariant, status FROM syncguard.check_invariants()",
            &[],
        )
        .unwrap()
        .iter()
        .map(|r| (r.get(0), r.get(1)))
        .collect()
}

/// What a forwarder looks up for a `new_episode` alert (reference.md).
const EPISODE: &str = "SELECT v.entity, i.severity, i.remediation, v.since::text
                         FROM syncguard.violations v JOIN syncguard.invariants i ON i.name = v.invariant
                        WHERE v.id = $1 AND v.invariant = $2";
/// What a forwarder looks up for a `check_error` alert.
const RUN: &str =
    "SELECT r.error FROM syncguard.invariant_runs r WHERE r.id = $1 AND r.invariant = $2";

fn alert_id(a: &Value) -> (i64, String) {
    let keys: Vec<&String> = a.as_object().unwrap().keys().collect();
    assert_eq!(keys, ["id", "invariant", "kind"], "{a}");
    (
        a["id"].as_i64().unwrap(),
        a["invariant"].as_str().unwrap().to_string(),
    )
}

fn entities(client: &mut Client, alerts: &[Value]) -> Vec<String> {
    let mut e: Vec<String> = alerts
        .iter()
        .map(|a| {
            let (id, inv) = alert_id(a);
            client.query_one(EPISODE, &[&id, &inv]).unwrap().get(0)
        })
        .collect();
    e.sort();
    e
}

#[test]
fn one_alert_per_new_episode_and_per_check_that_starts_erroring() {
    let cluster = TestCluster::new();
    let mut checker = cluster.connect_with_extension();
    let mut listener = cluster.connect();
    listener.batch_execute("LISTEN syncguard_alerts").unwrap();

    checker
        .batch_execute(
            "CREATE TABLE products (id int PRIMARY KEY, cancelled_at timestamptz, billed boolean);
             INSERT INTO products
             SELECT i, now() - interval '1 hour', true FROM generate_series(1, 3) AS i;
             SELECT syncguard.define_invariant('still_billed',
                 'SELECT id AS entity, cancelled_at AS since FROM products WHERE billed',
                 grace => '15 minutes', severity => 'critical',
                 remediation => 'Stop billing the cancelled product.');",
        )
        .unwrap();

    // Three violations: three new episodes, three alerts; the details are
    // looked up by id.
    check(&mut checker);
    let got = alerts(&mut listener, &mut checker);
    assert_eq!(entities(&mut checker, &got), ["1", "2", "3"], "{got:?}");
    for a in &got {
        assert_eq!(a["kind"], "new_episode");
        let (id, inv) = alert_id(a);
        assert_eq!(inv, "still_billed");
        let row = checker.query_one(EPISODE, &[&id, &inv]).unwrap();
        assert_eq!(row.get::<_, String>(1), "critical");
        assert_eq!(
            row.get::<_, String>(2),
            "Stop billing the cancelled product."
        );
    }

    // The same violations: the episodes go on, no alert.
    check(&mut checker);
    assert_eq!(alerts(&mut listener, &mut checker), Vec::<Value>::new());

    // Product 2 is fixed: its episode resolves, no alert.
    checker
        .batch_execute("UPDATE products SET billed = false WHERE id = 2")
        .unwrap();
    check(&mut checker);
    assert_eq!(alerts(&mut listener, &mut checker), Vec::<Value>::new());

    // Product 2 violates again: a new episode, one alert.
    checker
        .batch_execute("UPDATE products SET billed = true WHERE id = 2")
        .unwrap();
    check(&mut checker);
    let got = alerts(&mut listener, &mut checker);
    assert_eq!(entities(&mut checker, &got), ["2"], "{got:?}");
    let episodes: i64 = checker
        .query_one(
            "SELECT count(*) FROM syncguard.violations WHERE entity = '2'",
            &[],
        )
        .unwrap()
        .get(0);
    assert_eq!(episodes, 2);

    // A check dividing by zero and one exceeding its timeout error; the
    // billing check still runs and reports its violations.
    checker
        .batch_execute(
            "SELECT syncguard.define_invariant('broken',
                 'SELECT (1 / (count(*) - count(*)))::text AS entity, now() - interval ''1 day'' AS since FROM products');
             SELECT syncguard.define_invariant('slow',
                 'SELECT ''x'' AS entity, now() - interval ''1 day'' AS since FROM pg_sleep(30)',
                 statement_timeout => '200 milliseconds');",
        )
        .unwrap();
    let statuses = check(&mut checker);
    assert_eq!(
        statuses,
        [
            ("broken".to_string(), "errored".to_string()),
            ("slow".to_string(), "errored".to_string()),
            ("still_billed".to_string(), "violating".to_string()),
        ]
    );
    let got = alerts(&mut listener, &mut checker);
    let mut errored: Vec<(String, String)> = got
        .iter()
        .map(|a| {
            assert_eq!(a["kind"], "check_error", "{a}");
            let (id, inv) = alert_id(a);
            let error: String = checker.query_one(RUN, &[&id, &inv]).unwrap().get(0);
            (inv, error)
        })
        .collect();
    errored.sort();
    assert_eq!(errored.len(), 2, "{got:?}");
    assert_eq!(errored[0].0, "broken");
    assert_eq!(errored[0].1, "division by zero");
    assert_eq!(errored[1].0, "slow");
    assert!(errored[1].1.contains("statement_timeout"), "{errored:?}");
    let runs: Vec<(String, String)> = checker
        .query(
            "SELECT invariant, sqlstate FROM syncguard.invariant_runs
              WHERE status = 'errored' ORDER BY invariant",
            &[],
        )
        .unwrap()
        .iter()
        .map(|r| (r.get(0), r.get(1)))
        .collect();
    assert_eq!(
        runs,
        [
            ("broken".to_string(), "22012".to_string()),
            ("slow".to_string(), "57014".to_string())
        ]
    );

    // Still erroring: no second alert. Fixed, then broken again: one.
    check(&mut checker);
    assert_eq!(alerts(&mut listener, &mut checker), Vec::<Value>::new());
    checker
        .batch_execute(
            "SELECT syncguard.drop_invariant('slow');
             SELECT syncguard.define_invariant('broken',
                 'SELECT id AS entity, now() AS since FROM products WHERE false');",
        )
        .unwrap();
    check(&mut checker);
    assert_eq!(alerts(&mut listener, &mut checker), Vec::<Value>::new());
    checker
        .batch_execute(
            "SELECT syncguard.define_invariant('broken',
                 'SELECT (1 / 0)::text AS entity, now() AS since FROM products');",
        )
        .unwrap();
    check(&mut checker);
    let got = alerts(&mut listener, &mut checker);
    assert_eq!(got.len(), 1, "{got:?}");
    assert_eq!(got[0]["kind"], "check_error");
}

#[test]
fn a_forged_alert_is_told_from_a_real_one() {
    let cluster = TestCluster::new();
    let mut client = cluster.connect_with_extension();
    // Anybody can NOTIFY on the channel; the ids of a forged payload match
    // no episode or run of that invariant.
    client
        .batch_execute(
            "SELECT syncguard.define_invariant('real', 'SELECT 1 AS entity, now() - interval ''1 day'' AS since');
             SELECT syncguard.check_invariants();",
        )
        .unwrap();
    let id: i64 = client
        .query_one("SELECT id FROM syncguard.violations", &[])
        .unwrap()
        .get(0);
    let real = client.query(EPISODE, &[&id, &"real"]).unwrap();
    assert_eq!(real.len(), 1);
    for (id, inv) in [(id, "other"), (id + 1000, "real")] {
        assert!(client.query(EPISODE, &[&id, &inv]).unwrap().is_empty());
        assert!(client.query(RUN, &[&id, &inv]).unwrap().is_empty());
    }
}
