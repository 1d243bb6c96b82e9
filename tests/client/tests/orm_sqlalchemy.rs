//! A real ORM, unchanged, writing partial sync results to a protected table.
//!
//! `tests/client/orm/sqlalchemy_partial.py` uses SQLAlchemy 2 with psycopg 3 the
//! ordinary way (`session.get` + assignment, `session.merge`, and the
//! PostgreSQL `insert(...).on_conflict_do_update(...)`) to save a payload
//! whose billing part is missing and whose name is None. This test gives it a
//! server with a protected table and a plain twin, runs it, and checks in SQL
//! that the protected rows kept every earlier field and took the new values,
//! while the plain rows lost what the payload lacked.
//!
//! The Python packages come from PyPI into a virtualenv (tests/client/src/orm_env.rs).
use syncguard_client_tests::common;
use syncguard_client_tests::orm_env;
use syncguard_client_tests::profiles;

use common::TestCluster;
use orm_env::describe;
use postgres::Client;
use profiles::{create_tables, fetched, merged, seed, LAST_SYNC, NAME};
use serde_json::{json, Value};
use std::process::Command;

fn setup(client: &mut Client) {
    create_tables(client, true);
    for table in ["profiles", "profiles_plain"] {
        for id in 1..=3 {
            seed(client, table, id);
        }
    }
}

/// Every row of `table`: (id, name, external_data, synced_at moved on).
fn rows(client: &mut Client, table: &str) -> Vec<(i32, Option<String>, Value, bool)> {
    client
        .query(
            &format!(
                "SELECT id, name, external_data::text,
                        coalesce(synced_at > $1::text::timestamptz, false)
                   FROM {table} ORDER BY id"
            ),
            &[&LAST_SYNC],
        )
        .unwrap()
        .iter()
        .map(|r| {
            let doc: String = r.get(2);
            (
                r.get(0),
                r.get(1),
                serde_json::from_str(&doc).unwrap(),
                r.get(3),
            )
        })
        .collect()
}

#[test]
fn sqlalchemy_partial_writes_keep_every_field() {
    let python = orm_env::python();
    let cluster = TestCluster::new();
    let mut client = cluster.connect_with_extension();
    setup(&mut client);

    let script = syncguard_client_tests::repo().join("tests/client/orm/sqlalchemy_partial.py");
    let mut cmd = Command::new(&python);
    cmd.arg(&script)
        .arg("--host")
        .arg(cluster.socket_dir())
        .args(["--port", &cluster.port().to_string()])
        .args(["--user", "postgres", "--dbname", "postgres"])
        // The documents it writes and expects: the same as this test's.
        .arg("--fixture")
        .arg(json!({"name": NAME, "fetched": fetched(), "merged": merged()}).to_string())
        .env("PYTHONDONTWRITEBYTECODE", "1");
    let out = cmd
        .output()
        .unwrap_or_else(|e| panic!("cannot run {cmd:?}: {e}"));
    let report = describe(&cmd, &out);
    assert!(
        out.status.success(),
        "the SQLAlchemy script failed\n{report}\n{}",
        cluster.log_tail()
    );
    println!("{report}");

    // Protected: rows 1-3 (get+assign, merge, on_conflict_do_update) merged;
    // row 4 was new and is stored as given.
    let protected = rows(&mut client, "profiles");
    assert_eq!(protected.len(), 4, "{protected:?}\n{report}");
    for (id, name, doc, synced) in &protected[..3] {
        assert_eq!(
            doc,
            &merged(),
            "profiles row {id}: every earlier field and the new values\n{report}"
        );
        assert_eq!(
            name.as_deref(),
            Some(NAME),
            "profiles row {id}: name kept\n{report}"
        );
        assert!(
            synced,
            "profiles row {id}: synced_at took the new value\n{report}"
        );
    }
    let (_, name, doc, _) = &protected[3];
    assert_eq!(
        (name.as_deref(), doc),
        (Some("Charles Babbage"), &fetched()),
        "profiles row 4, inserted"
    );

    // The same, asked in SQL of the stored rows.
    let kept: i64 = client
        .query_one(
            "SELECT count(*) FROM profiles
              WHERE id <= 3
                AND external_data -> 'billing' = '{\"plan\": \"pro\", \"card_last4\": \"4242\", \"vat_id\": \"GB123456789\"}'
                AND external_data #>> '{contact,address,city}' = 'London'
                AND external_data #>> '{contact,email}' = 'ada@new.example'
                AND external_data #>> '{contact,mobile}' = '+44 7700 900123'
                AND external_data #>> '{preferences,language}' = 'en'
                AND external_data #> '{preferences,newsletter}' = 'false'
                AND external_data #>> '{preferences,timezone}' = 'Europe/London'
                AND name = 'Ada Lovelace'",
            &[],
        )
        .unwrap()
        .get(0);
    assert_eq!(
        kept, 3,
        "protected rows with every field kept and the new values"
    );

    // The control: the same ORM calls replaced the plain rows whole, so the
    // protection above is what kept the fields.
    let plain = rows(&mut client, "profiles_plain");
    assert_eq!(plain.len(), 4, "{plain:?}");
    for (id, name, doc, _) in &plain[..3] {
        assert_eq!(
            doc,
            &fetched(),
            "profiles_plain row {id}: full replace\n{report}"
        );
        assert_eq!(
            name, &None,
            "profiles_plain row {id}: name nulled\n{report}"
        );
    }
    let lost: i64 = client
        .query_one(
            "SELECT count(*) FROM profiles_plain
              WHERE id <= 3 AND NOT external_data ? 'billing' AND name IS NULL",
            &[],
        )
        .unwrap()
        .get(0);
    assert_eq!(lost, 3, "plain rows lost billing and name");
}
