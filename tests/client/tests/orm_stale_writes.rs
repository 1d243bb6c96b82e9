//! A write that last_write_wins ignores, sent by real ORMs that check row
//! counts: Django (`save()`, `save(update_fields=…)`, `update_or_create`) and
//! Knex (`update().returning('*')`, `insert().onConflict().merge()`, the
//! affected-row count). By default the row counts as written and RETURNING
//! shows the stored row, so the application goes on working and nothing
//! stored changes; with `"stale": "skip"` the same calls see no row, which
//! is what broke them (the control). The ORMs come from PyPI and npm
//! (tests/client/src/orm_env.rs).
use syncguard_client_tests::common;
use syncguard_client_tests::orm_env;

use common::TestCluster;
use orm_env::describe;
use postgres::Client;
use serde_json::Value;
use std::process::Command;

const STORED: &str = "2026-01-02T00:00:00+00:00";
const STALE: &str = "2026-01-01T00:00:00+00:00";
const FRESH: &str = "2026-01-03T00:00:00+00:00";

fn setup(cluster: &TestCluster, policy: &str) -> Client {
    let mut client = cluster.connect_with_extension();
    client
        .batch_execute(&format!(
            "CREATE TABLE profiles_lww (id int PRIMARY KEY, name text, synced_at timestamptz NOT NULL);
             INSERT INTO profiles_lww VALUES (1, 'stored', '{STORED}');
             SELECT syncguard.protect('profiles_lww', NULL, '{policy}');"
        ))
        .unwrap();
    client
}

/// Runs the script and returns its JSON report.
fn report(cmd: &mut Command, cluster: &TestCluster) -> Value {
    let out = cmd
        .output()
        .unwrap_or_else(|e| panic!("cannot run {cmd:?}: {e}"));
    let text = describe(cmd, &out);
    assert!(out.status.success(), "{text}\n{}", cluster.log_tail());
    let stdout = String::from_utf8_lossy(&out.stdout);
    let last = stdout.lines().last().unwrap_or_default();
    serde_json::from_str(last).unwrap_or_else(|e| panic!("{e}: {text}"))
}

fn stored_name(client: &mut Client) -> String {
    client
        .query_one("SELECT name FROM profiles_lww WHERE id = 1", &[])
        .unwrap()
        .get(0)
}

fn ignored(client: &mut Client) -> i64 {
    client
        .query_one(
            "SELECT coalesce(sum(stale_ignored), 0)::bigint FROM syncguard.conflict_stats
              WHERE table_name = 'public.profiles_lww'",
            &[],
        )
        .unwrap()
        .get(0)
}

fn django(cluster: &TestCluster) -> Value {
    let script = syncguard_client_tests::repo().join("tests/client/orm/django_stale.py");
    let mut cmd = Command::new(orm_env::python());
    cmd.arg(script)
        .arg("--host")
        .arg(cluster.socket_dir())
        .args(["--port", &cluster.port().to_string()])
        .args(["--user", "postgres", "--dbname", "postgres"])
        .args(["--stale-at", STALE, "--fresh-at", FRESH])
        .env("PYTHONDONTWRITEBYTECODE", "1");
    report(&mut cmd, cluster)
}

#[test]
fn django_keeps_working_when_a_write_is_stale() {
    let cluster = TestCluster::new();
    let mut client = setup(&cluster, r#"{"last_write_wins": "synced_at"}"#);
    let r = django(&cluster);
    for step in ["save", "update_fields", "update_or_create"] {
        assert_eq!(r[step]["outcome"], "ok", "{step}: {r}");
        assert_eq!(
            r[step]["name"], "stored",
            "{step}: the stored row is kept: {r}"
        );
    }
    assert_eq!(r["fresh"]["outcome"], "ok", "{r}");
    assert_eq!(r["fresh"]["name"], "fresh", "{r}");
    assert_eq!(stored_name(&mut client), "fresh");
    assert_eq!(ignored(&mut client), 3, "each stale save counted once");

    // The control: with "stale": "skip" Django sees no row and fails.
    let cluster = TestCluster::new();
    let mut client = setup(
        &cluster,
        r#"{"last_write_wins": "synced_at", "stale": "skip"}"#,
    );
    let r = django(&cluster);
    for step in ["save", "update_fields", "update_or_create"] {
        let outcome = r[step]["outcome"].as_str().unwrap();
        assert_ne!(outcome, "ok", "{step}: {r}");
        assert_eq!(r[step]["name"], "stored", "{step}: {r}");
    }
    assert!(
        r["save"]["outcome"]
            .as_str()
            .unwrap()
            .starts_with("IntegrityError"),
        "save() fell back to an INSERT: {r}"
    );
    assert_eq!(stored_name(&mut client), "fresh");
}

fn knex(cluster: &TestCluster) -> Value {
    let modules = orm_env::node_modules();
    let script = syncguard_client_tests::repo().join("tests/client/orm/knex_stale.js");
    let mut cmd = Command::new("node");
    cmd.arg(script)
        .arg(cluster.socket_dir())
        .arg(cluster.port().to_string())
        .args(["postgres", "postgres", STALE, FRESH])
        .env("NODE_PATH", modules);
    report(&mut cmd, cluster)
}

#[test]
fn knex_gets_the_stored_row_when_a_write_is_stale() {
    let cluster = TestCluster::new();
    let mut client = setup(&cluster, r#"{"last_write_wins": "synced_at"}"#);
    let r = knex(&cluster);
    for step in ["update", "upsert"] {
        let rows = r[step]["result"]
            .as_array()
            .unwrap_or_else(|| panic!("{step}: {r}"));
        assert_eq!(rows.len(), 1, "{step}: one row comes back: {r}");
        assert_eq!(rows[0]["name"], "stored", "{step}: the stored row: {r}");
    }
    assert_eq!(r["count"]["result"], 1, "{r}");
    assert_eq!(r["fresh"]["result"][0]["name"], "fresh", "{r}");
    assert_eq!(stored_name(&mut client), "fresh");
    assert_eq!(ignored(&mut client), 3);

    // The control: "stale": "skip" hands back nothing, and a count of 0.
    let cluster = TestCluster::new();
    let mut client = setup(
        &cluster,
        r#"{"last_write_wins": "synced_at", "stale": "skip"}"#,
    );
    let r = knex(&cluster);
    for step in ["update", "upsert"] {
        assert_eq!(r[step]["result"], serde_json::json!([]), "{step}: {r}");
    }
    assert_eq!(r["count"]["result"], 0, "{r}");
    assert_eq!(stored_name(&mut client), "fresh");
}
