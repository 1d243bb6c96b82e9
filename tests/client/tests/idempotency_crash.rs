//! A worker holding idempotency claims dies (its backend is killed, or the
//! whole server is). The claims were committed (lease pattern: claim, then
//! the slow work, then complete); the work and completion were not. After
//! the restart the keys are `in_progress` until the lease expires; then
//! another worker claims them (attempt 2), does the work and completes. No
//! key is lost or doubled, a key completed before the crash replays, and the
//! dead worker's tokens are rejected with SG002.
use syncguard_client_tests::common;

use common::TestCluster;
use postgres::Client;
use std::thread::sleep;
use std::time::{Duration, Instant};

const LEASE: &str = "2 seconds";
const KEYS: [&str; 5] = ["k1", "k2", "k3", "k4", "k5"];

fn claim(client: &mut Client, key: &str) -> (String, Option<String>, Option<String>, i32) {
    let row = client
        .query_one(
            "SELECT outcome, token::text, response::text, attempt
               FROM syncguard.idem_claim('crash', $1, jsonb_build_object('key', $1::text), lease => $2::text::interval)",
            &[&key, &LEASE],
        )
        .expect("idem_claim");
    (row.get(0), row.get(1), row.get(2), row.get(3))
}

/// The work and its completion, in one transaction.
fn work_and_complete(client: &mut Client, key: &str, token: &str, worker: &str) {
    let mut tx = client.transaction().unwrap();
    tx.execute(
        "INSERT INTO effects (key, worker) VALUES ($1, $2)",
        &[&key, &worker],
    )
    .unwrap();
    tx.execute(
        "SELECT syncguard.idem_complete($1::text::uuid, jsonb_build_object('done_by', $2::text))",
        &[&token, &worker],
    )
    .unwrap();
    tx.commit().unwrap();
}

/// Before the crash: k0 is completed; k1..k5 are claimed (committed) and the
/// old worker is in the middle of their work, uncommitted. Returns its tokens.
fn prepare(cluster: &TestCluster) -> (Client, Vec<String>) {
    let mut setup = cluster.connect_with_extension();
    setup
        .batch_execute("CREATE TABLE effects (key text NOT NULL, worker text NOT NULL)")
        .unwrap();
    let mut old = cluster.connect();
    let (outcome, token, _, _) = claim(&mut old, "k0");
    assert_eq!(outcome, "claimed");
    work_and_complete(&mut old, "k0", &token.unwrap(), "old");

    let mut tokens = vec![];
    for key in KEYS {
        let (outcome, token, _, attempt) = claim(&mut old, key);
        assert_eq!((outcome.as_str(), attempt), ("claimed", 1));
        tokens.push(token.unwrap());
    }
    old.batch_execute("BEGIN").unwrap();
    for (key, token) in KEYS.iter().zip(&tokens) {
        old.execute(
            "INSERT INTO effects (key, worker) VALUES ($1, 'old')",
            &[key],
        )
        .unwrap();
        old.execute(
            "SELECT syncguard.idem_complete($1::text::uuid, '{\"done_by\": \"old\"}')",
            &[token],
        )
        .unwrap();
    }
    // ... and it dies before COMMIT.
    (old, tokens)
}

/// After the restart: another worker takes every key over once the lease
/// expired, and nothing is lost or doubled.
fn recover(cluster: &TestCluster, old_tokens: &[String]) {
    let mut new = cluster.connect();
    let started = Instant::now();
    // The leases are still live: the keys are in progress, not lost.
    for key in KEYS {
        let (outcome, token, _, _) = claim(&mut new, key);
        if outcome == "claimed" {
            // Only possible when the restart itself outlasted the lease.
            work_and_complete(&mut new, key, &token.unwrap(), "new");
            continue;
        }
        assert_eq!(outcome, "in_progress", "key {key} right after the restart");
    }
    // Poll like a client would until each key is taken over and done.
    let deadline = Instant::now() + Duration::from_secs(30);
    for key in KEYS {
        loop {
            let (outcome, token, response, attempt) = claim(&mut new, key);
            match outcome.as_str() {
                "claimed" => {
                    assert_eq!(attempt, 2, "key {key} is taken over as attempt 2");
                    work_and_complete(&mut new, key, &token.unwrap(), "new");
                    break;
                }
                "replay" => {
                    assert_eq!(response.as_deref(), Some(r#"{"done_by": "new"}"#));
                    break;
                }
                "in_progress" => {
                    assert!(Instant::now() < deadline, "lease of {key} never expired");
                    sleep(Duration::from_millis(100));
                }
                other => panic!("key {key}: unexpected outcome {other}"),
            }
        }
    }
    assert!(
        started.elapsed() < Duration::from_secs(30),
        "takeover took too long"
    );

    // The dead worker's tokens are rejected and change nothing.
    for token in old_tokens {
        let err = new
            .execute(
                "SELECT syncguard.idem_complete($1::text::uuid, '{\"done_by\": \"zombie\"}')",
                &[token],
            )
            .expect_err("a lost lease must be rejected");
        assert_eq!(err.code().map(|c| c.code()), Some("SG002"), "{err}");
    }

    // Exactly one effect per key, by the right worker; every key replays.
    let rows = new
        .query(
            "SELECT key, count(*), min(worker) FROM effects GROUP BY key ORDER BY key",
            &[],
        )
        .unwrap();
    let got: Vec<(String, i64, String)> = rows
        .iter()
        .map(|r| (r.get(0), r.get(1), r.get(2)))
        .collect();
    let mut want = vec![("k0".to_string(), 1, "old".to_string())];
    want.extend(KEYS.iter().map(|k| (k.to_string(), 1, "new".to_string())));
    assert_eq!(got, want);
    for key in std::iter::once("k0").chain(KEYS) {
        let (outcome, _, response, _) = claim(&mut new, key);
        assert_eq!(outcome, "replay", "key {key}");
        let by = if key == "k0" { "old" } else { "new" };
        assert_eq!(response, Some(format!(r#"{{"done_by": "{by}"}}"#)));
    }
    let attempts: Vec<i32> = new
        .query(
            "SELECT attempts FROM syncguard.idempotency_keys WHERE scope = 'crash' ORDER BY key",
            &[],
        )
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert_eq!(attempts, vec![1, 2, 2, 2, 2, 2]);
}

#[test]
fn claims_survive_kill_9_of_their_backend() {
    let mut cluster = TestCluster::new();
    let (mut old, tokens) = prepare(&cluster);
    let pid = cluster.backend_pid(&mut old);
    cluster.kill_backend(pid);
    assert!(old.simple_query("SELECT 1").is_err());
    recover(&cluster, &tokens);
}

#[test]
fn claims_survive_kill_9_of_the_server() {
    let mut cluster = TestCluster::new();
    let (old, tokens) = prepare(&cluster);
    cluster.kill_postmaster();
    drop(old);
    cluster.start(); // crash recovery
    recover(&cluster, &tokens);
}
