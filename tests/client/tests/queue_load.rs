//! Four consumers work through 10,000 jobs of one queue, failing 20 % of
//! their attempts at random. Every job ends exactly once: acked once, or dead
//! (in `dead_letters`) after its last attempt, never both, and the queue is
//! empty. No job is delivered to two consumers at once. Each failed attempt
//! is retried after `backoff_delay(attempt)` with the queue's base, cap and
//! jitter, never sooner, with attempts numbered 1, 2, 3, ... in order.
use syncguard_client_tests::common;

use common::{Rng, TestCluster};
use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

const JOBS: usize = 10_000;
const CONSUMERS: u64 = 4;
const MAX_ATTEMPTS: i32 = 5;
// Small delays keep the test short; the schedule is the same shape as the
// default's (2 s base): base * 2^(attempt - 1), capped, spread by ±jitter.
const BASE_MS: f64 = 20.0;
const CAP_MS: f64 = 200.0;
const JITTER: f64 = 0.2;

#[derive(Default)]
struct JobLog {
    /// (attempt, server time of delivery in epoch seconds) per delivery.
    deliveries: Vec<(i32, f64)>,
    /// Server time before which the job must not be delivered again.
    not_before: Option<f64>,
    /// (attempt, delay in ms measured from the end and from the start of the
    /// nack statement) per failed attempt that was retried: the delay nack
    /// applied, from its own clock reading, lies between the two.
    retries: Vec<(i32, f64, f64)>,
    acked: u32,
    dead: u32,
    /// A consumer holds the job right now.
    held: bool,
}

#[test]
fn every_job_ends_acked_or_dead_exactly_once() {
    let cluster = TestCluster::new();
    let mut setup = cluster.connect_with_extension();
    setup
        .execute(
            "SELECT syncguard.queue_configure('load', max_attempts => $1,
                    base => make_interval(secs => $2::float8 / 1000), cap => make_interval(secs => $3::float8 / 1000),
                    jitter => $4::float8)",
            &[&MAX_ATTEMPTS, &BASE_MS, &CAP_MS, &JITTER],
        )
        .unwrap();
    let ids: Vec<i64> = setup
        .query(
            "SELECT syncguard.enqueue('load', jsonb_build_object('n', g)) FROM generate_series(1, $1) AS g",
            &[&(JOBS as i32)],
        )
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert_eq!(ids.len(), JOBS);

    let log: Arc<Mutex<HashMap<i64, JobLog>>> = Arc::new(Mutex::new(
        ids.iter().map(|&id| (id, JobLog::default())).collect(),
    ));
    let finished = Arc::new(AtomicUsize::new(0));
    let deadline = Instant::now() + Duration::from_secs(300);

    let consumers: Vec<_> = (0..CONSUMERS)
        .map(|c| {
            let (log, finished) = (log.clone(), finished.clone());
            let mut client = cluster.connect();
            thread::spawn(move || {
                let mut rng = Rng(0x9E37_79B9_7F4A_7C15 ^ (c + 1));
                while finished.load(Ordering::SeqCst) < JOBS {
                    assert!(Instant::now() < deadline, "consumers did not finish in time");
                    let batch = client
                        .query(
                            "SELECT d.job_id, d.attempt, extract(epoch FROM clock_timestamp())::float8
                               FROM syncguard.dequeue('load', 10, '1 minute') AS d",
                            &[],
                        )
                        .expect("dequeue");
                    if batch.is_empty() {
                        thread::sleep(Duration::from_millis(5));
                        continue;
                    }
                    for row in batch {
                        let (id, attempt, at): (i64, i32, f64) = (row.get(0), row.get(1), row.get(2));
                        {
                            let mut log = log.lock().unwrap();
                            let job = log.get_mut(&id).expect("a job that was enqueued");
                            assert!(!job.held, "job {id} delivered while another consumer holds it");
                            assert_eq!(job.acked + job.dead, 0, "job {id} delivered after it ended");
                            if let Some(nb) = job.not_before {
                                assert!(at >= nb, "job {id} attempt {attempt} delivered {:.1} ms early", (nb - at) * 1e3);
                            }
                            job.held = true;
                            job.deliveries.push((attempt, at));
                        }
                        if rng.chance(20) {
                            let r = client
                                .query_one(
                                    "SELECT n.state, n.attempts,
                                            extract(epoch FROM n.retry_at)::float8,
                                            extract(epoch FROM n.retry_at - clock_timestamp())::float8 * 1000,
                                            extract(epoch FROM n.retry_at - statement_timestamp())::float8 * 1000
                                       FROM syncguard.nack($1, 'simulated failure', attempt => $2) AS n",
                                    &[&id, &attempt],
                                )
                                .expect("nack");
                            let (state, attempts): (String, i32) = (r.get(0), r.get(1));
                            assert_eq!(attempts, attempt);
                            let mut log = log.lock().unwrap();
                            let job = log.get_mut(&id).unwrap();
                            job.held = false;
                            if state == "dead" {
                                job.dead += 1;
                                finished.fetch_add(1, Ordering::SeqCst);
                            } else {
                                assert_eq!(state, "ready");
                                job.not_before = r.get(2);
                                job.retries.push((attempt, r.get(3), r.get(4)));
                            }
                        } else {
                            client
                                .execute("SELECT syncguard.ack($1, $2)", &[&id, &attempt])
                                .expect("ack");
                            let mut log = log.lock().unwrap();
                            let job = log.get_mut(&id).unwrap();
                            job.held = false;
                            job.acked += 1;
                            finished.fetch_add(1, Ordering::SeqCst);
                        }
                    }
                }
            })
        })
        .collect();
    for c in consumers {
        c.join().expect("consumer");
    }

    let log = log.lock().unwrap();
    let mut dead_jobs = vec![];
    let (mut acked, mut retried) = (0, 0);
    for (&id, job) in log.iter() {
        assert_eq!(job.acked + job.dead, 1, "job {id} must end exactly once");
        let attempts: Vec<i32> = job.deliveries.iter().map(|d| d.0).collect();
        let expected: Vec<i32> = (1..=attempts.len() as i32).collect();
        assert_eq!(attempts, expected, "job {id}: attempts in order");
        // Every failure but a final one (dead) was retried.
        assert_eq!(
            job.retries.len(),
            attempts.len() - 1,
            "job {id}: one retry per failure"
        );
        if job.dead == 1 {
            assert_eq!(
                attempts.len() as i32,
                MAX_ATTEMPTS,
                "job {id} died before its last attempt"
            );
            dead_jobs.push(id);
        } else {
            acked += 1;
        }
        for &(attempt, at_least_ms, at_most_ms) in &job.retries {
            retried += 1;
            let nominal = (BASE_MS * 2f64.powi(attempt - 1)).min(CAP_MS);
            // However slow the server, the applied delay lies in
            // [at_least_ms, at_most_ms]: that interval must meet the allowed one.
            assert!(
                at_most_ms >= nominal * (1.0 - JITTER) && at_least_ms <= nominal * (1.0 + JITTER),
                "job {id} attempt {attempt}: retry after {at_least_ms:.1} to {at_most_ms:.1} ms, nominal {nominal} ms ± {JITTER}"
            );
        }
    }
    assert_eq!(acked + dead_jobs.len(), JOBS);
    assert!(
        retried > JOBS / 10,
        "the failures were retried ({retried} retries)"
    );

    // The server agrees: no live job left, the dead ones in dead_letters.
    let mut check = cluster.connect();
    let live: i64 = check
        .query_one(
            "SELECT depth FROM syncguard.queue_stats WHERE queue = 'load'",
            &[],
        )
        .unwrap()
        .get(0);
    assert_eq!(live, 0);
    let mut dead_letters: Vec<i64> = check
        .query(
            "SELECT job_id FROM syncguard.dead_letters WHERE queue = 'load' AND attempts = $1",
            &[&MAX_ATTEMPTS],
        )
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    dead_letters.sort_unstable();
    dead_jobs.sort_unstable();
    assert_eq!(dead_letters, dead_jobs);
}
