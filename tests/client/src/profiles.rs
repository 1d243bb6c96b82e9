//! The customer profile of the incident that syncguard guards against, shared
//! by the client tests that replay it (`incident_replay`, `orm_sqlalchemy`).
//!
//! The last good sync stored all three parts of `external_data` (contact,
//! billing, preferences) and the legal name. The next sync fetched contact
//! and preferences; billing, which also supplies the legal name, failed.

use postgres::Client;
use serde_json::{json, Value};

/// The legal name, as stored; the failed billing fetch leaves it NULL.
pub const NAME: &str = "Ada Lovelace";
/// `synced_at` of the seeded rows.
pub const LAST_SYNC: &str = "2024-01-01 00:00:00+00";

/// `profiles` and its twin `profiles_plain` of the same shape; with
/// `protect`, `profiles` is protected and `profiles_plain` stays plain.
pub fn create_tables(client: &mut Client, protect: bool) {
    client
        .batch_execute(
            "CREATE TABLE profiles (
                 id int PRIMARY KEY,
                 name text,
                 external_data jsonb,
                 synced_at timestamptz
             );
             CREATE TABLE profiles_plain (LIKE profiles INCLUDING ALL);",
        )
        .expect("CREATE TABLE profiles");
    if protect {
        client
            .batch_execute("SELECT syncguard.protect('profiles')")
            .expect("syncguard.protect('profiles')");
    }
}

/// Row `id` of `table` as the last good sync left it.
pub fn seed(client: &mut Client, table: &str, id: i32) {
    client
        .execute(
            &format!(
                "INSERT INTO {table} (id, name, external_data, synced_at)
                 VALUES ($1, $2, $3::text::jsonb, $4::text::timestamptz)"
            ),
            &[&id, &NAME, &stored().to_string(), &LAST_SYNC],
        )
        .unwrap_or_else(|e| panic!("seed {table} id {id}: {e}"));
}

/// What the last good sync stored: all three parts.
pub fn stored() -> Value {
    json!({
        "contact": {
            "email": "ada@old.example",
            "phone": "+44 20 7946 0000",
            "address": {"city": "London", "street": "12 St James's Square"}
        },
        "billing": {"plan": "pro", "card_last4": "4242", "vat_id": "GB123456789"},
        "preferences": {"language": "en", "newsletter": true}
    })
}

/// What the next sync fetched: a changed e-mail and a new mobile number (the
/// contact API does not send the address), and the preferences service's
/// part (it knows nothing of the language). No billing.
pub fn fetched() -> Value {
    json!({
        "contact": {
            "email": "ada@new.example",
            "phone": "+44 20 7946 0000",
            "mobile": "+44 7700 900123"
        },
        "preferences": {"newsletter": false, "timezone": "Europe/London"}
    })
}

/// The document a merge must leave: the stored one with the fetched parts
/// deep-merged in. Written out, not computed, so that it checks the merge.
pub fn merged() -> Value {
    json!({
        "contact": {
            "email": "ada@new.example",
            "phone": "+44 20 7946 0000",
            "mobile": "+44 7700 900123",
            "address": {"city": "London", "street": "12 St James's Square"}
        },
        "billing": {"plan": "pro", "card_last4": "4242", "vat_id": "GB123456789"},
        "preferences": {"language": "en", "newsletter": false, "timezone": "Europe/London"}
    })
}
