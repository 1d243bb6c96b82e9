//! Idempotency keys under load: 16 connections send 10,000 requests over 200
//! keys (about 50 duplicates each), with random failures and client retries.
//! Each request's effect is a row inserted in the same transaction as the
//! claim and the completion (the local-work pattern). At the end every key's
//! effect exists exactly once and every replayed response equals the first.
//! Meanwhile another connection watches for a key in a state the functions
//! must never leave (the table has no CHECK constraints: sql/install/idempotency.sql).
use syncguard_client_tests::common;

use common::{Rng, TestCluster};
use postgres::Client;
use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

const CONNECTIONS: usize = 16;
const REQUESTS: usize = 10_000;
const KEYS: u64 = 200;

/// Keys in a state no function leaves behind: what the table's CHECK
/// constraints said before they were dropped for speed.
const INCONSISTENT: &str = "SELECT count(*) FROM syncguard.idempotency_keys
     WHERE attempts < 1 OR (status = 'running' AND lease_expires_at IS NULL)
        OR (status = 'failed' AND next_attempt_at IS NULL)";

#[derive(Default)]
struct Tally {
    /// The response each key's successful attempt stored (key -> response text).
    first: HashMap<u64, String>,
    /// Every replayed response (key, response text).
    replays: Vec<(u64, String)>,
    outcomes: HashMap<String, usize>,
    failures_recorded: usize,
    rollbacks: usize,
}

fn request_body(key: u64) -> String {
    // Same request for the same key: key order and spacing vary on purpose,
    // the fingerprint is canonical.
    if key % 2 == 0 {
        format!(r#"{{"key": {key}, "amount": {}}}"#, key * 10)
    } else {
        format!(r#"{{ "amount":{},"key":{key} }}"#, key * 10)
    }
}

/// One client request, retried by the client until it gets an answer.
fn serve(client: &mut Client, rng: &mut Rng, key: u64, tally: &Mutex<Tally>) {
    let scope = "load";
    let key_text = format!("k{key}");
    let body = request_body(key);
    loop {
        let mut tx = client.transaction().expect("begin");
        let row = tx
            .query_one(
                "SELECT outcome, token::text, response::text, attempt
                   FROM syncguard.idem_claim($1, $2, $3::text::jsonb, lease => '30 seconds')",
                &[&scope, &key_text, &body],
            )
            .expect("idem_claim");
        let outcome: String = row.get(0);
        let token: Option<String> = row.get(1);
        let response: Option<String> = row.get(2);
        *tally
            .lock()
            .unwrap()
            .outcomes
            .entry(outcome.clone())
            .or_default() += 1;
        match outcome.as_str() {
            "claimed" => {
                let token = token.expect("claimed has a token");
                let fate = rng.below(10);
                // The work runs under a savepoint, so that a failure can undo
                // the effect and still record the failure under the claim.
                let mut work = tx.transaction().expect("savepoint");
                let effect_id: i64 = work
                    .query_one(
                        "INSERT INTO effects (key, amount) VALUES ($1, $2) RETURNING id",
                        &[&(key as i64), &((key * 10) as i64)],
                    )
                    .expect("effect")
                    .get(0);
                if fate < 2 {
                    // The work failed: undo the effect, record a retryable failure.
                    drop(work);
                    tx.execute(
                        "SELECT syncguard.idem_fail($1::text::uuid, 'upstream timeout',
                                base => '20 ms', cap => '200 ms', max_attempts => 1000)",
                        &[&token],
                    )
                    .expect("idem_fail");
                    tx.commit().expect("commit failure");
                    tally.lock().unwrap().failures_recorded += 1;
                    continue;
                }
                work.commit().expect("release savepoint");
                if fate == 2 {
                    // The client crashed mid-request: everything rolls back.
                    drop(tx);
                    tally.lock().unwrap().rollbacks += 1;
                    continue;
                }
                let response = format!(r#"{{"key": {key}, "effect_id": {effect_id}}}"#);
                tx.execute(
                    "SELECT syncguard.idem_complete($1::text::uuid, $2::text::jsonb)",
                    &[&token, &response],
                )
                .expect("idem_complete");
                tx.commit().expect("commit");
                let canonical: String = client
                    .query_one("SELECT $1::text::jsonb::text", &[&response])
                    .unwrap()
                    .get(0);
                let mut t = tally.lock().unwrap();
                assert!(
                    t.first.insert(key, canonical).is_none(),
                    "key {key} claimed and completed twice"
                );
                return;
            }
            "replay" => {
                tx.commit().expect("commit");
                let response = response.expect("replay has a response");
                tally.lock().unwrap().replays.push((key, response));
                return;
            }
            "in_progress" | "retry_later" => {
                tx.commit().expect("commit");
                thread::sleep(Duration::from_millis(1 + rng.below(5)));
            }
            other => panic!("unexpected outcome {other} for key {key}"),
        }
    }
}

#[test]
fn every_request_has_its_effect_exactly_once() {
    let cluster = TestCluster::new();
    let mut admin = cluster.connect_with_extension();
    admin
        .batch_execute(
            "CREATE TABLE effects (id bigserial PRIMARY KEY, key bigint NOT NULL, amount bigint NOT NULL)",
        )
        .unwrap();

    let next = Arc::new(AtomicUsize::new(0));
    let tally = Arc::new(Mutex::new(Tally::default()));
    let done = Arc::new(AtomicBool::new(false));
    let monitor = {
        let mut client = cluster.connect();
        let done = done.clone();
        thread::spawn(move || {
            let mut looks = 0;
            while !done.load(Ordering::Relaxed) {
                let n: i64 = client.query_one(INCONSISTENT, &[]).unwrap().get(0);
                assert_eq!(n, 0, "a key in a state the functions must not leave");
                looks += 1;
                thread::sleep(Duration::from_millis(5));
            }
            looks
        })
    };
    let started = Instant::now();
    let workers: Vec<_> = (0..CONNECTIONS)
        .map(|i| {
            let mut client = cluster.connect();
            let next = next.clone();
            let tally = tally.clone();
            thread::spawn(move || {
                let mut rng =
                    Rng(0x9E37_79B9_7F4A_7C15 ^ (i as u64 + 1).wrapping_mul(0x1234_5678_9ABC_DEF1));
                while next.fetch_add(1, Ordering::Relaxed) < REQUESTS {
                    let key = rng.below(KEYS);
                    serve(&mut client, &mut rng, key, &tally);
                }
            })
        })
        .collect();
    for w in workers {
        w.join().expect("worker panicked");
    }
    let elapsed = started.elapsed();
    done.store(true, Ordering::Relaxed);
    let looks = monitor.join().expect("the monitor saw an inconsistent key");
    assert!(looks > 0, "the monitor looked at the keys during the run");

    let tally = tally.lock().unwrap();
    let served = tally.first.len() + tally.replays.len();
    eprintln!(
        "{served} requests in {elapsed:?} over {CONNECTIONS} connections: outcomes {:?}, \
         {} failures recorded, {} rolled back",
        tally.outcomes, tally.failures_recorded, tally.rollbacks
    );
    assert_eq!(served, REQUESTS, "every request got an answer");
    let n: i64 = admin.query_one(INCONSISTENT, &[]).unwrap().get(0);
    assert_eq!(n, 0, "no key in a state the functions must not leave");
    assert!(tally.failures_recorded > 0 && tally.rollbacks > 0);
    assert!(tally.outcomes.get("retry_later").copied().unwrap_or(0) > 0);

    // Every key's effect exists exactly once.
    let rows = admin
        .query(
            "SELECT key, count(*), min(id) FROM effects GROUP BY key",
            &[],
        )
        .unwrap();
    let mut effects = HashMap::new();
    for r in &rows {
        let key: i64 = r.get(0);
        let n: i64 = r.get(1);
        assert_eq!(n, 1, "key {key} has {n} effects");
        effects.insert(key as u64, r.get::<_, i64>(2));
    }
    assert_eq!(
        effects.len(),
        tally.first.len(),
        "one effect per completed key"
    );
    for (key, first) in &tally.first {
        let effect_id = effects[key];
        assert_eq!(
            first,
            &format!(r#"{{"key": {key}, "effect_id": {effect_id}}}"#)
        );
    }
    // Every replayed response equals the first one.
    for (key, replayed) in &tally.replays {
        assert_eq!(
            Some(replayed),
            tally.first.get(key),
            "replay of key {key} differs from the first response"
        );
    }
    // The log agrees: every key succeeded once, with its response stored.
    let stored = admin
        .query(
            "SELECT key, status::text, response::text FROM syncguard.idempotency_keys WHERE scope = 'load'",
            &[],
        )
        .unwrap();
    assert_eq!(stored.len(), tally.first.len());
    for r in &stored {
        let key: String = r.get(0);
        let key: u64 = key[1..].parse().unwrap();
        assert_eq!(r.get::<_, String>(1), "succeeded");
        assert_eq!(Some(&r.get::<_, String>(2)), tally.first.get(&key));
    }
}
