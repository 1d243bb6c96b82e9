//! The incident syncguard exists for, replayed against a real server.
//!
//! A sync job fetches a customer profile from other systems in three calls:
//! contact, billing and preferences. The billing call times out. The job saves
//! what it got the way naive code and ORMs do, as a full replace: the failed
//! part is simply absent from the document and the scalar it would have
//! filled (the legal name, which comes from billing) is NULL.
//!
//! - On a plain table that write deletes the customer's billing data and name.
//! - On a table under `syncguard.protect` the same statements, unchanged,
//!   keep every stored field and take the fetched values;
//!   `syncguard.merge_upsert` gives the same result on a plain table.
//! - Deleting on purpose still works: the tombstone `{"$delete": true}`, and
//!   `SET LOCAL syncguard.bypass_protection = on` for a full replace.
use syncguard_client_tests::common;
use syncguard_client_tests::profiles;

use common::TestCluster;
use postgres::{Client, GenericClient};
use profiles::{create_tables, fetched, merged, seed, stored, LAST_SYNC, NAME};
use serde_json::{json, Value};

// ---- the other systems -----------------------------------------------------

/// One sub-fetch: a JSON fragment, or why it failed.
type Fetch = Result<Value, String>;

fn fetch_contact(_id: i32) -> Fetch {
    Ok(fetched()["contact"].clone())
}

fn fetch_billing(_id: i32) -> Fetch {
    Err("billing API: read timed out after 30 s".into())
}

fn fetch_preferences(_id: i32) -> Fetch {
    Ok(fetched()["preferences"].clone())
}

// ---- the naive sync job ----------------------------------------------------

/// The row the job writes: whatever the fetches returned.
struct Payload {
    external_data: Value,
    /// The legal name comes from billing: NULL when billing failed.
    name: Option<String>,
}

/// Fetch the three parts and assemble the payload as naive code does: a
/// failed part is left out, a scalar it would have filled stays NULL.
fn fetch_profile(id: i32) -> Payload {
    let mut doc = serde_json::Map::new();
    let mut name = None;
    let mut failed = vec![];
    match fetch_contact(id) {
        Ok(contact) => {
            doc.insert("contact".into(), contact);
        }
        Err(e) => failed.push(e),
    }
    match fetch_billing(id) {
        Ok(mut billing) => {
            name = billing
                .as_object_mut()
                .and_then(|b| b.remove("legal_name"))
                .and_then(|n| n.as_str().map(String::from));
            doc.insert("billing".into(), billing);
        }
        Err(e) => failed.push(e),
    }
    match fetch_preferences(id) {
        Ok(preferences) => {
            doc.insert("preferences".into(), preferences);
        }
        Err(e) => failed.push(e),
    }
    // The incident: the job logs the failure and saves what it has anyway.
    for e in &failed {
        eprintln!("sync of profile {id}: {e}; saving the rest");
    }
    assert_eq!(
        failed.len(),
        1,
        "the replay expects exactly the billing fetch to fail"
    );
    Payload {
        external_data: Value::Object(doc),
        name,
    }
}

/// How the job writes its payload.
#[derive(Clone, Copy, Debug)]
enum Write {
    /// `UPDATE ... SET external_data = $1, name = $2`
    Update,
    /// `INSERT ... ON CONFLICT (id) DO UPDATE SET col = EXCLUDED.col`
    Upsert,
    /// `syncguard.merge_upsert(...)`; returns the stored row.
    MergeUpsert,
}

/// Write `payload` for row `id` of `table`; for `MergeUpsert`, the row it returned.
fn save(
    client: &mut impl GenericClient,
    how: Write,
    table: &str,
    id: i32,
    payload: &Payload,
) -> Option<Value> {
    let doc = payload.external_data.to_string();
    let name = payload.name.as_deref();
    match how {
        Write::Update => {
            let n = client
                .execute(
                    &format!(
                        "UPDATE {table} SET external_data = $2::text::jsonb, name = $3,
                                synced_at = now() WHERE id = $1"
                    ),
                    &[&id, &doc, &name],
                )
                .unwrap_or_else(|e| panic!("UPDATE {table}: {e}"));
            assert_eq!(n, 1, "UPDATE {table} id {id}");
            None
        }
        Write::Upsert => {
            let n = client
                .execute(
                    &format!(
                        "INSERT INTO {table} (id, name, external_data, synced_at)
                         VALUES ($1, $3, $2::text::jsonb, now())
                         ON CONFLICT (id) DO UPDATE SET external_data = EXCLUDED.external_data,
                                                        name = EXCLUDED.name,
                                                        synced_at = EXCLUDED.synced_at"
                    ),
                    &[&id, &doc, &name],
                )
                .unwrap_or_else(|e| panic!("INSERT ... ON CONFLICT into {table}: {e}"));
            assert_eq!(n, 1, "upsert into {table} id {id}");
            None
        }
        Write::MergeUpsert => {
            let row: String = client
                .query_one(
                    "SELECT syncguard.merge_upsert($4::text::regclass,
                              jsonb_build_object('id', $1::int),
                              jsonb_build_object('external_data', $2::text::jsonb,
                                                 'name', $3::text,
                                                 'synced_at', now()))::text",
                    &[&id, &doc, &name, &table],
                )
                .unwrap_or_else(|e| panic!("merge_upsert into {table}: {e}"))
                .get(0);
            Some(serde_json::from_str(&row).expect("merge_upsert returns jsonb"))
        }
    }
}

// ---- helpers ---------------------------------------------------------------

/// A row as stored: (name, external_data, synced_at moved past the seed).
struct Stored {
    name: Option<String>,
    doc: Option<Value>,
    synced_moved: bool,
}

fn load(client: &mut impl GenericClient, table: &str, id: i32) -> Stored {
    let row = client
        .query_one(
            &format!(
                "SELECT name, external_data::text, synced_at > $2::text::timestamptz
                   FROM {table} WHERE id = $1"
            ),
            &[&id, &LAST_SYNC],
        )
        .unwrap_or_else(|e| panic!("read {table} id {id}: {e}"));
    let doc: Option<String> = row.get(1);
    Stored {
        name: row.get(0),
        doc: doc.map(|d| serde_json::from_str(&d).unwrap()),
        synced_moved: row.get::<_, Option<bool>>(2) == Some(true),
    }
}

/// One SQL predicate on a row, answered by the server.
fn holds(client: &mut Client, table: &str, id: i32, predicate: &str) -> bool {
    client
        .query_one(
            &format!("SELECT coalesce(({predicate}), false) FROM {table} WHERE id = $1"),
            &[&id],
        )
        .unwrap_or_else(|e| panic!("{predicate}: {e}"))
        .get(0)
}

/// The merged outcome every protected write must leave.
fn assert_merged(client: &mut Client, table: &str, id: i32, what: &str) {
    let row = load(client, table, id);
    assert_eq!(
        row.doc.as_ref(),
        Some(&merged()),
        "{what}: external_data must keep every stored field and carry the fetched values"
    );
    assert_eq!(
        row.name.as_deref(),
        Some(NAME),
        "{what}: name must not be nulled"
    );
    assert!(
        row.synced_moved,
        "{what}: synced_at must take the new value"
    );
    // The same, asked of the server in SQL.
    for predicate in [
        "external_data #>> '{billing,plan}' = 'pro'",
        "external_data #>> '{billing,card_last4}' = '4242'",
        "external_data #>> '{billing,vat_id}' = 'GB123456789'",
        "external_data #>> '{contact,email}' = 'ada@new.example'",
        "external_data #>> '{contact,mobile}' = '+44 7700 900123'",
        "external_data #>> '{contact,address,street}' = '12 St James''s Square'",
        "external_data #>> '{preferences,language}' = 'en'",
        "external_data #> '{preferences,newsletter}' = 'false'",
        "external_data #>> '{preferences,timezone}' = 'Europe/London'",
        "name = 'Ada Lovelace'",
    ] {
        assert!(holds(client, table, id, predicate), "{what}: {predicate}");
    }
}

// ---- the tests ---------------------------------------------------------------

/// Without syncguard, both usual ways of saving the partial fetch lose the
/// billing part and the name: this is the danger the rest guards against.
#[test]
fn naive_sync_job_wipes_the_failed_part() {
    let cluster = TestCluster::new();
    let mut client = cluster.connect_with_extension();
    create_tables(&mut client, false);
    let payload = fetch_profile(1);
    assert_eq!(payload.external_data, fetched());
    assert!(payload.name.is_none());

    for (id, how) in [(1, Write::Update), (2, Write::Upsert)] {
        seed(&mut client, "profiles", id);
        assert_eq!(load(&mut client, "profiles", id).doc, Some(stored()));
        save(&mut client, how, "profiles", id, &payload);

        let row = load(&mut client, "profiles", id);
        let doc = row.doc.expect("external_data");
        // Exactly what the job sent: a full replace.
        assert_eq!(doc, payload.external_data, "{how:?}");
        assert!(
            doc.get("billing").is_none(),
            "{how:?}: billing was replaced away"
        );
        assert!(
            doc["contact"].get("address").is_none(),
            "{how:?}: the address the contact API does not send is gone too"
        );
        assert_eq!(row.name, None, "{how:?}: the name was nulled");
        assert!(
            holds(
                &mut client,
                "profiles",
                id,
                "NOT external_data ? 'billing' AND external_data #> '{billing,plan}' IS NULL
                 AND name IS NULL"
            ),
            "{how:?}: the billing fields and the name are gone"
        );
    }
}

/// The same statements on a protected table keep every field; merge_upsert
/// on a plain table gives the same result.
#[test]
fn protected_table_keeps_every_field() {
    let cluster = TestCluster::new();
    let mut client = cluster.connect_with_extension();
    create_tables(&mut client, true);
    let payload = fetch_profile(1);

    for (id, how) in [(1, Write::Update), (2, Write::Upsert)] {
        seed(&mut client, "profiles", id);
        save(&mut client, how, "profiles", id, &payload);
        assert_merged(
            &mut client,
            "profiles",
            id,
            &format!("protected table, {how:?}"),
        );
    }

    // merge_upsert on the unprotected twin: the same document and name.
    seed(&mut client, "profiles_plain", 1);
    let returned = save(
        &mut client,
        Write::MergeUpsert,
        "profiles_plain",
        1,
        &payload,
    )
    .expect("merge_upsert returns the row");
    assert_merged(
        &mut client,
        "profiles_plain",
        1,
        "merge_upsert on a plain table",
    );
    let protected = load(&mut client, "profiles", 1);
    let plain = load(&mut client, "profiles_plain", 1);
    assert_eq!(plain.doc, protected.doc, "merge_upsert vs protected UPDATE");
    assert_eq!(
        plain.name, protected.name,
        "merge_upsert vs protected UPDATE"
    );
    // It returns the stored row.
    assert_eq!(returned["id"], json!(1));
    assert_eq!(returned["name"], json!(NAME));
    assert_eq!(Some(&returned["external_data"]), plain.doc.as_ref());

    // A plain table stays plain: protect changed only the table it was given.
    seed(&mut client, "profiles_plain", 2);
    save(&mut client, Write::Update, "profiles_plain", 2, &payload);
    assert!(!holds(
        &mut client,
        "profiles_plain",
        2,
        "external_data ? 'billing'"
    ));
}

/// A merge never deletes; the tombstone and the bypass setting do, on purpose.
#[test]
fn deleting_on_purpose() {
    let cluster = TestCluster::new();
    let mut client = cluster.connect_with_extension();
    create_tables(&mut client, true);
    for id in 1..=4 {
        seed(&mut client, "profiles", id);
    }

    // The contact API reports the phone number removed; the billing account was closed.
    let tombstones = Payload {
        external_data: json!({
            "contact": {"phone": {"$delete": true}},
            "billing": {"$delete": true}
        }),
        name: None,
    };
    save(&mut client, Write::Update, "profiles", 1, &tombstones);
    let row = load(&mut client, "profiles", 1);
    assert_eq!(
        row.doc,
        Some(json!({
            "contact": {
                "email": "ada@old.example",
                "address": {"city": "London", "street": "12 St James's Square"}
            },
            "preferences": {"language": "en", "newsletter": true}
        })),
        "tombstones delete exactly their keys on a protected table"
    );
    assert_eq!(row.name.as_deref(), Some(NAME));
    assert!(holds(
        &mut client,
        "profiles",
        1,
        "NOT external_data ? 'billing' AND NOT external_data -> 'contact' ? 'phone'"
    ));

    // The same through INSERT ... ON CONFLICT DO UPDATE.
    save(&mut client, Write::Upsert, "profiles", 2, &tombstones);
    assert_eq!(
        load(&mut client, "profiles", 2).doc,
        row.doc,
        "tombstones via upsert"
    );

    // A tombstone as the whole document sets the column to NULL.
    client
        .execute(
            "UPDATE profiles SET external_data = '{\"$delete\": true}' WHERE id = 3",
            &[],
        )
        .unwrap();
    assert!(holds(
        &mut client,
        "profiles",
        3,
        "external_data IS NULL AND name IS NOT NULL"
    ));

    // merge_upsert honours tombstones too.
    seed(&mut client, "profiles_plain", 1);
    save(
        &mut client,
        Write::MergeUpsert,
        "profiles_plain",
        1,
        &tombstones,
    );
    assert_eq!(
        load(&mut client, "profiles_plain", 1).doc,
        row.doc,
        "tombstones via merge_upsert"
    );

    // Bypass: for the rest of the transaction the table is a plain one and the
    // naive job's write is a full replace.
    let payload = fetch_profile(4);
    let mut tx = client.transaction().unwrap();
    tx.batch_execute("SET LOCAL syncguard.bypass_protection = on")
        .unwrap();
    save(&mut tx, Write::Update, "profiles", 4, &payload);
    let inside = load(&mut tx, "profiles", 4);
    tx.commit().unwrap();
    assert_eq!(
        inside.doc.as_ref(),
        Some(&payload.external_data),
        "bypass: full replace"
    );
    let row = load(&mut client, "profiles", 4);
    assert_eq!(
        row.doc.as_ref(),
        Some(&payload.external_data),
        "bypass: full replace, committed"
    );
    assert_eq!(row.name, None, "bypass: the NULL is written as given");

    // SET LOCAL ended with the transaction: protection is back.
    let setting: String = client
        .query_one("SHOW syncguard.bypass_protection", &[])
        .unwrap()
        .get(0);
    assert_eq!(setting, "off");
    seed(&mut client, "profiles", 5);
    save(&mut client, Write::Update, "profiles", 5, &payload);
    assert_merged(
        &mut client,
        "profiles",
        5,
        "after the bypassing transaction",
    );
}
