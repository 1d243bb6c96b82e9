//! Invariants and their history survive pg_dump and pg_restore into a
//! fresh database: the registry, the views, the runs and episodes, the
//! entity events, and the identity sequences behind them.

mod common;

use common::TestCluster;
use postgres::Client;

/// What must survive, as text rows.
fn state(client: &mut Client) -> Vec<String> {
    client
        .query(
            "SELECT format('invariant %s %s %s %s %s', name, owner_role, grace, severity, query)
               FROM syncguard.invariants
             UNION ALL
             SELECT format('episode %s %s %s %s %s', id, invariant, entity, count, resolved_at IS NULL)
               FROM syncguard.violations
             UNION ALL
             SELECT format('run %s %s %s %s', id, invariant, status, violations)
               FROM syncguard.invariant_runs
             UNION ALL
             SELECT format('event %s %s %s', id, entity, kind) FROM syncguard.entity_events
             UNION ALL
             SELECT format('view %s', entity) FROM syncguard_invariants.late_delivery
             ORDER BY 1",
            &[],
        )
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect()
}

#[test]
fn invariants_and_history_survive_dump_and_restore() {
    let cluster = TestCluster::new();
    let mut client = cluster.connect();
    client.batch_execute("CREATE DATABASE shop").unwrap();
    let mut shop = cluster.connect_to("shop");
    shop.batch_execute(
        "CREATE EXTENSION syncguard;
         CREATE TABLE deliveries (id int PRIMARY KEY, due_at timestamptz, delivered boolean);
         INSERT INTO deliveries VALUES (1, now() - interval '2 days', false), (2, now() - interval '3 days', false);
         SELECT syncguard.define_invariant('late_delivery',
             'SELECT id AS entity, due_at AS since FROM deliveries WHERE NOT delivered',
             grace => '1 day', severity => 'warning', remediation => 'Call the carrier.');
         SELECT syncguard.invariant_never_synced('never', 'deliveries', 'due_at');
         SELECT count(*) FROM syncguard.check_invariants();
         UPDATE deliveries SET delivered = true WHERE id = 2;
         SELECT count(*) FROM syncguard.check_invariants();
         INSERT INTO syncguard.entity_events (entity, kind) VALUES ('1', 'shipped'), ('1', 'delivered');",
    )
    .unwrap();
    let before = state(&mut shop);
    assert!(
        before
            .iter()
            .any(|l| l.starts_with("episode") && l.ends_with(" f")),
        "{before:?}"
    );
    drop(shop);

    let dump = cluster.socket_dir().join("shop.dump");
    let dump = dump.to_str().unwrap();
    cluster.run_tool("pg_dump", &["-Fc", "-f", dump, "shop"]);
    cluster.run_tool("createdb", &["shop_restored"]);
    cluster.run_tool(
        "pg_restore",
        &["--exit-on-error", "-d", "shop_restored", dump],
    );

    let mut restored = cluster.connect_to("shop_restored");
    assert_eq!(state(&mut restored), before);

    // The restored invariants work on: the open episode goes on, new rows
    // get new ids from the restored sequences.
    let row = restored
        .query_one(
            "SELECT violations, new_episodes FROM syncguard.check_invariants('late_delivery')",
            &[],
        )
        .unwrap();
    assert_eq!((row.get::<_, i32>(0), row.get::<_, i32>(1)), (1, 0));
    let fresh: bool = restored
        .query_one(
            "WITH e AS (INSERT INTO syncguard.entity_events (entity, kind) VALUES ('2', 'shipped') RETURNING id)
             SELECT (SELECT max(id) FROM e) > (SELECT max(id) FROM syncguard.entity_events WHERE entity = '1')
                AND (SELECT max(id) FROM syncguard.invariant_runs) = 5",
            &[],
        )
        .unwrap()
        .get(0);
    assert!(fresh, "the identity sequences were not restored");
}
