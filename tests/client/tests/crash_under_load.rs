//! Crash under load: ten client connections run merge upserts on shared
//! rows, idempotent requests, queue work and sync runs, each logging every
//! commit the server acknowledged and every commit whose outcome it could not
//! know (the connection died during it). The postmaster is killed with
//! SIGKILL at a different moment in each of four rounds, restarted, and the
//! database checked against the logs:
//!
//! - every acknowledged merge_upsert field holds its value, or a later
//!   acknowledged or unknown one, and no field appears that nobody wrote;
//! - no idempotent effect is doubled: a key has one effect exactly when it
//!   succeeded, a key acknowledged as completed is succeeded and replays its
//!   first response;
//! - no acknowledged enqueued job is lost, no acknowledged ack is undone, and
//!   an acked job is never delivered again;
//! - a watermark only ever equals the start of a run whose every part
//!   succeeded, and an acknowledged successful finish is never undone.
//!
//! Between rounds the same workers resume on the restarted server, where the
//! leases, visibility timeouts and run timeouts cut short by the crash
//! (short ones, here) expire and are taken over. A last phase drains the
//! queue, finishes every key and runs every source once more.
use syncguard_client_tests::common;

use common::{Rng, TestCluster};
use postgres::{Client, Error};
use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

const WORKERS: usize = 10;
/// How long the load runs before each kill, in ms: each round a different moment.
const KILL_AFTER_MS: [u64; 4] = [900, 350, 1600, 650];
const DOC_KEYS: u64 = 16;
/// Each round's idempotency keys: half of them the previous round's, whose
/// leases the crash may have left running.
const IDEM_KEYS_PER_ROUND: u64 = 80;
const SOURCES: u64 = 3;
const PARTS: [&str; 3] = ["a", "b", "c"];
/// Leases, visibility and run timeouts: short, so that the crash's orphans
/// are taken over within the test.
const LEASE: &str = "1 second";
const VISIBILITY: &str = "2 seconds";
const RUN_TIMEOUT: &str = "2 seconds";
/// Longer than all three, plus a margin.
const ORPHANS_EXPIRED: Duration = Duration::from_millis(2300);

/// The connection died: the statement's outcome is unknown, the round is over.
struct Lost;

/// An error that means the server went away, as opposed to one it answered.
fn is_lost(e: &Error) -> bool {
    if e.is_closed() {
        return true;
    }
    match e.as_db_error() {
        // admin shutdown / crash (57P0x), connection exceptions (08xxx)
        Some(db) => matches!(&db.code().code()[..2], "57" | "08"),
        None => std::error::Error::source(e).is_some_and(|s| s.is::<std::io::Error>()),
    }
}

/// Ok(result) when the server answered (success or an SQL error), Err(Lost)
/// when the connection died.
fn answered<T>(r: Result<T, Error>) -> Result<Result<T, Error>, Lost> {
    match r {
        Err(e) if is_lost(&e) => Err(Lost),
        other => Ok(other),
    }
}

fn sqlstate(e: &Error) -> &str {
    e.code().map_or("", |c| c.code())
}

/// BEGIN, COMMIT or ROLLBACK.
fn control(client: &mut Client, sql: &str) -> Result<(), Lost> {
    answered(client.batch_execute(sql))?.unwrap_or_else(|e| panic!("{sql}: {e}"));
    Ok(())
}

/// One worker's `t<N>` field of a shared document.
#[derive(Default)]
struct FieldLog {
    /// The last acknowledged value (a worker's values only increase).
    acked: Option<i64>,
    /// Values whose commit was cut short by a crash.
    unknown: Vec<i64>,
}

/// The completions of one idempotency key, as responses' text.
#[derive(Default)]
struct KeyLog {
    acked: Vec<String>,
    unknown: Vec<String>,
    /// Being committed right now: another worker may already replay it.
    pending: Vec<String>,
}

#[derive(Default)]
struct JobLog {
    job_id: Option<i64>,
    /// false: the enqueue is running or its outcome is unknown.
    enqueue_acked: bool,
    acks_acked: u32,
    acks_unknown: u32,
}

struct RunLog {
    source: String,
    /// A failed part was reported (acknowledged or not).
    failed_part: bool,
    /// sync_finish's acknowledged answer.
    finished: Option<bool>,
}

/// Everything the server acknowledged, and everything it may have.
#[derive(Default)]
struct Ledger {
    fields: HashMap<(i32, usize), FieldLog>,
    keys: HashMap<String, KeyLog>,
    /// By the payload's uid.
    jobs: HashMap<String, JobLog>,
    runs: HashMap<i64, RunLog>,
    /// Acknowledged commits per kind, and unknown outcomes.
    acked: HashMap<&'static str, u64>,
    unknown: u64,
    /// Claims of a key whose earlier lease expired.
    taken_over: u64,
}

impl Ledger {
    fn count(&mut self, what: &'static str) {
        *self.acked.entry(what).or_default() += 1;
    }
}

type Shared = Arc<Mutex<Ledger>>;

struct Worker {
    id: usize,
    rng: Rng,
    /// The next value of this worker's document field.
    value: i64,
    /// Numbers this worker's idempotent responses and job payloads.
    op: u64,
    round: u64,
}

impl Worker {
    fn run(&mut self, client: &mut Client, ledger: &Shared) {
        loop {
            let r = match self.rng.below(100) {
                0..=39 => self.merge(client, ledger),
                40..=64 => self.idempotent(client, ledger),
                65..=89 => self.queue(client, ledger),
                _ => self.sync(client, ledger),
            };
            if r.is_err() {
                return;
            }
        }
    }

    fn next_op(&mut self) -> String {
        self.op += 1;
        format!("w{}-{}", self.id, self.op)
    }

    /// Each worker writes its own field of shared documents.
    fn merge(&mut self, client: &mut Client, ledger: &Shared) -> Result<(), Lost> {
        let key = self.rng.below(DOC_KEYS) as i32;
        self.value += 1;
        let r = client.execute(
            "SELECT syncguard.merge_upsert('docs', jsonb_build_object('id', $1::int),
                    jsonb_build_object('doc', jsonb_build_object($2::text, $3::bigint)))",
            &[&key, &format!("t{}", self.id), &self.value],
        );
        let mut l = ledger.lock().unwrap();
        let field = l.fields.entry((key, self.id)).or_default();
        match answered(r) {
            Ok(r) => {
                r.expect("merge_upsert");
                field.acked = Some(self.value);
                l.count("merge_upsert");
                Ok(())
            }
            Err(Lost) => {
                field.unknown.push(self.value);
                l.unknown += 1;
                Err(Lost)
            }
        }
    }

    /// Claim, effect and completion: in one transaction (local work), or the
    /// claim committed first (lease pattern), which a crash can leave
    /// running until its lease expires.
    fn idempotent(&mut self, client: &mut Client, ledger: &Shared) -> Result<(), Lost> {
        let key = format!(
            "k{}",
            self.round * IDEM_KEYS_PER_ROUND / 2 + self.rng.below(IDEM_KEYS_PER_ROUND)
        );
        let response = format!(r#"{{"op": "{}"}}"#, self.next_op());
        let local = self.rng.chance(50);
        ledger.lock().unwrap().keys.entry(key.clone()).or_default();
        if local {
            control(client, "BEGIN")?;
        }
        let claim = answered(client.query_one(
            "SELECT outcome, token::text, response::text, attempt FROM syncguard.idem_claim(
                    'load', $1, jsonb_build_object('key', $1::text), lease => $2::text::interval)",
            &[&key, &LEASE],
        ))?
        .expect("idem_claim");
        let (outcome, token, replayed): (String, Option<String>, Option<String>) =
            (claim.get(0), claim.get(1), claim.get(2));
        if outcome == "claimed" && claim.get::<_, i32>(3) > 1 {
            // A lease the crash left running, expired and taken over.
            ledger.lock().unwrap().taken_over += 1;
        }
        if outcome != "claimed" {
            if local {
                control(client, "ROLLBACK")?;
            }
            match outcome.as_str() {
                "replay" => {
                    let replayed = replayed.expect("a replay has a response");
                    let l = ledger.lock().unwrap();
                    let k = &l.keys[&key];
                    if let Some(first) = k.acked.first() {
                        assert_eq!(&replayed, first, "key {key} replays its first response");
                    } else {
                        assert!(
                            k.unknown.contains(&replayed) || k.pending.contains(&replayed),
                            "key {key} replays {replayed}, which nobody completed"
                        );
                    }
                }
                "in_progress" => {}
                other => panic!("key {key}: unexpected outcome {other}"),
            }
            return Ok(());
        }
        if !local {
            // The lease pattern: the claim is committed, the work is a new transaction.
            control(client, "BEGIN")?;
        }
        answered(client.execute(
            "INSERT INTO effects (key, op) VALUES ($1, $2)",
            &[&key, &response],
        ))?
        .expect("effect");
        let done = answered(client.execute(
            "SELECT syncguard.idem_complete($1::text::uuid, $2::text::jsonb)",
            &[&token.expect("a claim has a token"), &response],
        ))?;
        if let Err(e) = done {
            // Only a slow worker loses its lease: the work rolls back.
            assert_eq!(sqlstate(&e), "SG002", "idem_complete: {e}");
            assert!(
                !local,
                "a claim in the same transaction cannot lose its lease"
            );
            return control(client, "ROLLBACK");
        }
        ledger
            .lock()
            .unwrap()
            .keys
            .get_mut(&key)
            .unwrap()
            .pending
            .push(response.clone());
        let committed = control(client, "COMMIT");
        let mut l = ledger.lock().unwrap();
        let k = l.keys.get_mut(&key).unwrap();
        k.pending.retain(|r| r != &response);
        match committed {
            Ok(()) => {
                k.acked.push(response);
                l.count("idempotent completion");
                Ok(())
            }
            Err(Lost) => {
                k.unknown.push(response);
                l.unknown += 1;
                Err(Lost)
            }
        }
    }

    fn queue(&mut self, client: &mut Client, ledger: &Shared) -> Result<(), Lost> {
        if self.rng.chance(50) {
            return self.enqueue(client, ledger);
        }
        let batch = answered(client.query(
            "SELECT job_id, attempt, payload->>'uid'
               FROM syncguard.dequeue('load', 3, $1::text::interval)",
            &[&VISIBILITY],
        ))?
        .expect("dequeue");
        for row in batch {
            let (id, attempt, uid): (i64, i32, String) = (row.get(0), row.get(1), row.get(2));
            {
                let mut l = ledger.lock().unwrap();
                let job = l
                    .jobs
                    .get_mut(&uid)
                    .unwrap_or_else(|| panic!("job {id} ({uid}) was never enqueued"));
                assert_eq!(*job.job_id.get_or_insert(id), id, "job {uid}");
                assert_eq!(job.acks_acked, 0, "job {id} delivered again after its ack");
            }
            if self.rng.chance(25) {
                let r = answered(client.execute(
                    "SELECT syncguard.nack($1, 'simulated failure', attempt => $2)",
                    &[&id, &attempt],
                ))?;
                if let Err(e) = r {
                    // Its visibility timeout passed and it was handed out again.
                    assert_eq!(sqlstate(&e), "SG007", "nack: {e}");
                }
                continue;
            }
            let r = client.execute("SELECT syncguard.ack($1, $2)", &[&id, &attempt]);
            let mut l = ledger.lock().unwrap();
            match answered(r) {
                Ok(Ok(_)) => {
                    l.jobs.get_mut(&uid).unwrap().acks_acked += 1;
                    l.count("ack");
                }
                Ok(Err(e)) => assert_eq!(sqlstate(&e), "SG007", "ack: {e}"),
                Err(Lost) => {
                    l.jobs.get_mut(&uid).unwrap().acks_unknown += 1;
                    l.unknown += 1;
                    return Err(Lost);
                }
            }
        }
        Ok(())
    }

    fn enqueue(&mut self, client: &mut Client, ledger: &Shared) -> Result<(), Lost> {
        let uid = self.next_op();
        // Logged before the call: a consumer may dequeue it before we hear back.
        ledger
            .lock()
            .unwrap()
            .jobs
            .insert(uid.clone(), JobLog::default());
        let r = client.query_one(
            "SELECT syncguard.enqueue('load', jsonb_build_object('uid', $1::text))",
            &[&uid],
        );
        let mut l = ledger.lock().unwrap();
        match answered(r) {
            Ok(r) => {
                let id: i64 = r.expect("enqueue").get(0);
                let job = l.jobs.get_mut(&uid).unwrap();
                assert_eq!(*job.job_id.get_or_insert(id), id);
                job.enqueue_acked = true;
                l.count("enqueue");
                Ok(())
            }
            Err(Lost) => {
                l.unknown += 1;
                Err(Lost)
            }
        }
    }

    /// A run of a shared source; some parts fail.
    fn sync(&mut self, client: &mut Client, ledger: &Shared) -> Result<(), Lost> {
        let source = format!("s{}", self.rng.below(SOURCES));
        let begun = answered(client.query_one(
            "SELECT run_id FROM syncguard.sync_begin($1, $2)",
            &[&source, &&PARTS[..]],
        ))?;
        let run: i64 = match begun {
            Ok(row) => row.get(0),
            // Another worker's run of this source is running.
            Err(e) if sqlstate(&e) == "SG005" => return Ok(()),
            Err(e) => panic!("sync_begin: {e}"),
        };
        ledger.lock().unwrap().runs.insert(
            run,
            RunLog {
                source,
                failed_part: false,
                finished: None,
            },
        );
        for part in PARTS {
            let ok = self.rng.chance(85);
            if !ok {
                ledger
                    .lock()
                    .unwrap()
                    .runs
                    .get_mut(&run)
                    .unwrap()
                    .failed_part = true;
            }
            let r = answered(client.execute(
                "SELECT syncguard.sync_part($1, $2, $3, CASE WHEN NOT $3 THEN 'simulated failure' END)",
                &[&run, &part, &ok],
            ))?;
            match r {
                Ok(_) => {}
                // A slow worker's run passed its timeout and was abandoned.
                Err(e) if sqlstate(&e) == "SG006" => return Ok(()),
                Err(e) => panic!("sync_part: {e}"),
            }
        }
        let advanced: bool =
            answered(client.query_one("SELECT syncguard.sync_finish($1)", &[&run]))?
                .expect("sync_finish")
                .get(0);
        let mut l = ledger.lock().unwrap();
        let log = l.runs.get_mut(&run).unwrap();
        assert!(
            !(advanced && log.failed_part),
            "run {run} advanced although a part failed"
        );
        log.finished = Some(advanced);
        l.count("sync_finish");
        Ok(())
    }
}

/// The database agrees with the ledger.
fn verify(client: &mut Client, ledger: &Ledger) {
    verify_documents(client, ledger);
    verify_idempotency(client, ledger);
    verify_queue(client, ledger);
    verify_sync(client, ledger);
}

fn verify_documents(client: &mut Client, ledger: &Ledger) {
    let mut stored: HashMap<(i32, usize), i64> = HashMap::new();
    for row in client
        .query(
            "SELECT d.id, f.key, f.value::text::bigint FROM docs d, jsonb_each(d.doc) f",
            &[],
        )
        .unwrap()
    {
        let worker: String = row.get(1);
        let worker = worker[1..].parse().expect("a field t<N>");
        stored.insert((row.get(0), worker), row.get(2));
    }
    for (&(key, worker), field) in &ledger.fields {
        let got = stored.remove(&(key, worker));
        let acked = field.acked;
        let later_unknown = |v: i64| field.unknown.contains(&v) && Some(v) > acked;
        let ok = match got {
            None => acked.is_none(),
            Some(v) => Some(v) == acked || later_unknown(v),
        };
        assert!(
            ok,
            "docs id {key} field t{worker}: stored {got:?}, last acknowledged {acked:?}, unknown {:?}",
            field.unknown
        );
    }
    assert!(stored.is_empty(), "fields nobody wrote: {stored:?}");
}

fn verify_idempotency(client: &mut Client, ledger: &Ledger) {
    let orphans: i64 = client
        .query_one(
            "SELECT count(*) FROM effects e WHERE NOT EXISTS (
                 SELECT FROM syncguard.idempotency_keys k WHERE k.scope = 'load' AND k.key = e.key)",
            &[],
        )
        .unwrap()
        .get(0);
    assert_eq!(orphans, 0, "effects without a key");
    let rows = client
        .query(
            "SELECT k.key, k.status::text, k.response::text, count(e.key), min(e.op::text)
               FROM syncguard.idempotency_keys k LEFT JOIN effects e ON e.key = k.key
              WHERE k.scope = 'load'
              GROUP BY k.key, k.status, k.response::text",
            &[],
        )
        .unwrap();
    let mut stored: HashMap<String, (String, Option<String>)> = HashMap::new();
    for row in rows {
        let (key, status, response, effects, effect): (
            String,
            String,
            Option<String>,
            i64,
            Option<String>,
        ) = (row.get(0), row.get(1), row.get(2), row.get(3), row.get(4));
        let succeeded = status == "succeeded";
        assert_eq!(
            effects, succeeded as i64,
            "key {key} ({status}) has {effects} effects"
        );
        assert!(
            matches!(status.as_str(), "succeeded" | "running"),
            "key {key}: {status}"
        );
        if succeeded {
            assert_eq!(
                response, effect,
                "key {key}: the response of its one effect"
            );
        }
        stored.insert(key, (status, response));
    }
    for (key, log) in &ledger.keys {
        assert!(log.pending.is_empty());
        assert!(
            log.acked.len() <= 1,
            "key {key} completed twice: {:?}",
            log.acked
        );
        let got = stored.get(key);
        if let Some(first) = log.acked.first() {
            assert_eq!(
                got,
                Some(&("succeeded".to_string(), Some(first.clone()))),
                "key {key} was acknowledged as completed"
            );
            let (outcome, response): (String, Option<String>) = client
                .query_one(
                    "SELECT outcome, response::text FROM syncguard.idem_claim('load', $1, jsonb_build_object('key', $1::text))",
                    &[key],
                )
                .map(|r| (r.get(0), r.get(1)))
                .unwrap();
            assert_eq!(
                (outcome.as_str(), response.as_ref()),
                ("replay", Some(first))
            );
        } else if let Some((status, response)) = got {
            if status == "succeeded" {
                let response = response.as_ref().unwrap();
                assert!(
                    log.unknown.contains(response),
                    "key {key}: {response} nobody completed"
                );
            }
        }
    }
}

fn verify_queue(client: &mut Client, ledger: &Ledger) {
    let mut stored: HashMap<String, (i64, String)> = HashMap::new();
    for row in client
        .query(
            "SELECT payload->>'uid', job_id, state::text FROM syncguard.queue_jobs WHERE queue = 'load'",
            &[],
        )
        .unwrap()
    {
        stored.insert(row.get(0), (row.get(1), row.get(2)));
    }
    for (uid, job) in &ledger.jobs {
        assert!(
            job.acks_acked <= 1,
            "job {uid} acked {} times",
            job.acks_acked
        );
        match stored.remove(uid) {
            Some((id, state)) => {
                assert_eq!(
                    job.acks_acked, 0,
                    "job {uid} ({state}) is back after its ack"
                );
                if let Some(known) = job.job_id {
                    assert_eq!(known, id, "job {uid}");
                }
            }
            None => assert!(
                !job.enqueue_acked || job.acks_acked + job.acks_unknown > 0,
                "job {uid} (id {:?}) was enqueued and is lost",
                job.job_id
            ),
        }
    }
    assert!(stored.is_empty(), "jobs nobody enqueued: {stored:?}");
}

fn verify_sync(client: &mut Client, ledger: &Ledger) {
    let rows = client
        .query(
            "SELECT r.run_id, r.source, r.status, r.advanced,
                    r.started_at <= s.watermark,
                    r.started_at = s.watermark,
                    (SELECT count(*) FROM syncguard.sync_parts p
                      WHERE p.run_id = r.run_id AND p.source = r.source AND p.ok)
               FROM syncguard.sync_runs r JOIN syncguard.sync_sources s USING (source)",
            &[],
        )
        .unwrap();
    let mut seen = HashSet::new();
    let mut watermark_runs = HashMap::new();
    for row in rows {
        let (run, source, status, advanced): (i64, String, String, bool) =
            (row.get(0), row.get(1), row.get(2), row.get(3));
        let (covered, at_watermark, ok_parts): (Option<bool>, Option<bool>, i64) =
            (row.get(4), row.get(5), row.get(6));
        seen.insert(run);
        let log = ledger.runs.get(&run);
        if advanced || at_watermark == Some(true) {
            assert_eq!(status, "succeeded", "run {run} of {source}");
            assert!(advanced, "run {run} of {source}");
            assert_eq!(
                ok_parts,
                PARTS.len() as i64,
                "run {run} advanced without all parts ok"
            );
            assert!(
                log.is_some_and(|l| !l.failed_part),
                "run {run} advanced past a failed part"
            );
            assert_eq!(
                covered,
                Some(true),
                "the watermark of {source} fell behind run {run}"
            );
        }
        if at_watermark == Some(true) {
            watermark_runs.insert(source.clone(), run);
        }
        if let Some(log) = log {
            assert_eq!(log.source, source);
            match log.finished {
                Some(true) => assert!(advanced, "run {run}'s acknowledged success was lost"),
                Some(false) => assert!(
                    matches!(status.as_str(), "failed" | "abandoned") && !advanced,
                    "run {run} finished false but is {status}"
                ),
                None => {}
            }
        }
    }
    for run in ledger.runs.keys() {
        assert!(seen.contains(run), "run {run} was begun and is lost");
    }
    for row in client
        .query(
            "SELECT source FROM syncguard.sync_sources WHERE watermark IS NOT NULL",
            &[],
        )
        .unwrap()
    {
        let source: String = row.get(0);
        assert!(
            watermark_runs.contains_key(&source),
            "the watermark of {source} is no run's start"
        );
    }
}

/// After the crashes, with every lease and timeout expired: the queue drains
/// to nothing but dead jobs, every key ends with one effect, every source
/// runs and advances. Nothing stays stuck behind the crashes' orphans.
fn settle(client: &mut Client, ledger: &mut Ledger) {
    thread::sleep(ORPHANS_EXPIRED);

    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let batch = client
            .query(
                "SELECT job_id, attempt, payload->>'uid' FROM syncguard.dequeue('load', 100, '1 minute')",
                &[],
            )
            .unwrap();
        for row in &batch {
            let (id, attempt, uid): (i64, i32, String) = (row.get(0), row.get(1), row.get(2));
            let job = ledger.jobs.get_mut(&uid).expect("an enqueued job");
            assert_eq!(job.acks_acked, 0, "job {id} delivered again after its ack");
            client
                .execute("SELECT syncguard.ack($1, $2)", &[&id, &attempt])
                .unwrap();
            job.acks_acked += 1;
        }
        let live: i64 = client
            .query_one(
                "SELECT count(*) FROM syncguard.queue_jobs WHERE queue = 'load' AND state <> 'dead'",
                &[],
            )
            .unwrap()
            .get(0);
        if live == 0 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "{live} jobs never became due again"
        );
        thread::sleep(Duration::from_millis(50));
    }

    for (key, log) in ledger.keys.iter_mut() {
        let row = client
            .query_one(
                "SELECT outcome, token::text, response::text FROM syncguard.idem_claim('load', $1, jsonb_build_object('key', $1::text))",
                &[key],
            )
            .unwrap();
        let (outcome, token, response): (String, Option<String>, Option<String>) =
            (row.get(0), row.get(1), row.get(2));
        match outcome.as_str() {
            "replay" => {
                if let Some(first) = log.acked.first() {
                    assert_eq!(response.as_ref(), Some(first), "key {key}");
                }
            }
            "claimed" => {
                assert!(
                    log.acked.is_empty(),
                    "key {key} claimed again after its completion"
                );
                let response = r#"{"op": "settle"}"#.to_string();
                let mut tx = client.transaction().unwrap();
                tx.execute(
                    "INSERT INTO effects (key, op) VALUES ($1, $2)",
                    &[key, &response],
                )
                .unwrap();
                tx.execute(
                    "SELECT syncguard.idem_complete($1::text::uuid, $2::text::jsonb)",
                    &[&token.unwrap(), &response],
                )
                .unwrap();
                tx.commit().unwrap();
                log.acked.push(response);
            }
            other => panic!("key {key} is still {other} after its lease expired"),
        }
    }

    for source in (0..SOURCES).map(|s| format!("s{s}")) {
        let run: i64 = client
            .query_one(
                "SELECT run_id FROM syncguard.sync_begin($1, $2)",
                &[&source, &&PARTS[..]],
            )
            .unwrap_or_else(|e| panic!("sync_begin({source}) after the run timeout: {e}"))
            .get(0);
        for part in PARTS {
            client
                .execute("SELECT syncguard.sync_part($1, $2, true)", &[&run, &part])
                .unwrap();
        }
        let advanced: bool = client
            .query_one("SELECT syncguard.sync_finish($1)", &[&run])
            .unwrap()
            .get(0);
        assert!(advanced, "source {source}");
        ledger.runs.insert(
            run,
            RunLog {
                source,
                failed_part: false,
                finished: Some(true),
            },
        );
    }
    let running: i64 = client
        .query_one(
            "SELECT count(*) FROM syncguard.sync_runs WHERE status = 'running'",
            &[],
        )
        .unwrap()
        .get(0);
    assert_eq!(running, 0, "runs left running");

    verify(client, ledger);
    let keys_done: i64 = client
        .query_one(
            "SELECT count(*) FROM syncguard.idempotency_keys WHERE scope = 'load' AND status = 'succeeded'",
            &[],
        )
        .unwrap()
        .get(0);
    assert_eq!(
        keys_done as usize,
        ledger.keys.len(),
        "every key ends succeeded"
    );
}

#[test]
fn nothing_acknowledged_is_lost_when_the_postmaster_is_killed_under_load() {
    let mut cluster = TestCluster::new();
    let mut setup = cluster.connect_with_extension();
    // What makes an acknowledged commit durable here.
    for (setting, want) in [("fsync", "on"), ("synchronous_commit", "on")] {
        let got: String = setup
            .query_one(&format!("SHOW {setting}"), &[])
            .unwrap()
            .get(0);
        assert_eq!(got, want, "{setting}");
    }
    setup
        .batch_execute(&format!(
            "CREATE TABLE docs (id int PRIMARY KEY, doc jsonb NOT NULL DEFAULT '{{}}');
             CREATE TABLE effects (key text NOT NULL, op text NOT NULL);
             SELECT syncguard.queue_configure('load', max_attempts => 3, base => '50 ms', cap => '200 ms');
             SELECT syncguard.sync_configure('s' || s, run_timeout => '{RUN_TIMEOUT}')
               FROM generate_series(0, {}) s;",
            SOURCES - 1
        ))
        .unwrap();
    drop(setup);

    let ledger: Shared = Arc::new(Mutex::new(Ledger::default()));
    let mut workers: Vec<Worker> = (0..WORKERS)
        .map(|id| Worker {
            id,
            rng: Rng(0x9E37_79B9_7F4A_7C15 ^ (id as u64 + 1)),
            value: 0,
            op: 0,
            round: 0,
        })
        .collect();

    for (round, &after_ms) in KILL_AFTER_MS.iter().enumerate() {
        let before: u64 = ledger.lock().unwrap().acked.values().sum();
        let threads: Vec<_> = workers
            .drain(..)
            .map(|mut worker| {
                worker.round = round as u64;
                let mut client = cluster.connect();
                let ledger = ledger.clone();
                thread::spawn(move || {
                    worker.run(&mut client, &ledger);
                    worker
                })
            })
            .collect();
        thread::sleep(Duration::from_millis(after_ms));
        cluster.kill_postmaster();
        for t in threads {
            workers.push(t.join().expect("worker"));
        }
        cluster.start(); // crash recovery

        let l = ledger.lock().unwrap();
        let during: u64 = l.acked.values().sum::<u64>() - before;
        eprintln!(
            "round {round}: killed after {after_ms} ms; {during} commits acknowledged, {} unknown so far, {:?}",
            l.unknown, l.acked
        );
        assert!(during > 0, "round {round}: no load before the kill");
        verify(&mut cluster.connect(), &l);
    }

    let mut l = ledger.lock().unwrap();
    for what in [
        "merge_upsert",
        "idempotent completion",
        "enqueue",
        "ack",
        "sync_finish",
    ] {
        assert!(
            l.acked.get(what).copied().unwrap_or(0) > 0,
            "no {what} was acknowledged"
        );
    }
    let mut client = cluster.connect();
    settle(&mut client, &mut l);
    let row = client
        .query_one(
            "SELECT (SELECT count(*) FROM syncguard.sync_runs WHERE status = 'abandoned'),
                    (SELECT count(*) FROM syncguard.queue_jobs WHERE state = 'dead')",
            &[],
        )
        .unwrap();
    eprintln!(
        "settled: {} leases taken over by the workers, {} runs abandoned, {} jobs dead",
        l.taken_over,
        row.get::<_, i64>(0),
        row.get::<_, i64>(1)
    );
}
