//! The Prometheus queries file, scraped for real: Debian's
//! prometheus-postgres-exporter (0.11) runs with
//! `--extend.query-path=contrib/prometheus/queries.yaml` against a server
//! with known state (a sync source with a failed run, a queue with a dead
//! job, a violated invariant, a key in flight, an ignored stale write), and
//! the test reads /metrics over HTTP and checks the values. The example
//! alert rules (contrib/prometheus/alerts.yml) may name only metrics the
//! exporter exports.

use syncguard_client_tests::common;

use common::TestCluster;
use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::process::{Child, Command, Stdio};
use std::thread::sleep;
use std::time::{Duration, Instant};

const EXPORTER: &str = "/usr/bin/prometheus-postgres-exporter";

struct Exporter(Child);

impl Drop for Exporter {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .unwrap()
        .port()
}

/// GET /metrics, or None while the exporter is not listening yet.
fn scrape(port: u16) -> Option<String> {
    let mut s = TcpStream::connect(("127.0.0.1", port)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(30))).ok()?;
    write!(s, "GET /metrics HTTP/1.0\r\nHost: localhost\r\n\r\n").ok()?;
    let mut out = String::new();
    s.read_to_string(&mut out).ok()?;
    out.split_once("\r\n\r\n").map(|(_, body)| body.to_string())
}

/// `name{labels}` → value, for every sample line.
fn samples(body: &str) -> BTreeMap<String, f64> {
    body.lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
        .filter_map(|l| {
            let (k, v) = l.rsplit_once(' ')?;
            Some((k.to_string(), v.parse().ok()?))
        })
        .collect()
}

fn value(s: &BTreeMap<String, f64>, key: &str) -> f64 {
    *s.get(key).unwrap_or_else(|| {
        panic!(
            "no sample {key}; syncguard samples:\n{}",
            s.keys()
                .filter(|k| k.starts_with("syncguard"))
                .cloned()
                .collect::<Vec<_>>()
                .join("\n")
        )
    })
}

#[test]
fn the_exporter_scrapes_syncguard_metrics() {
    let cluster = TestCluster::new();
    let mut client = cluster.connect_with_extension();
    client
        .batch_execute(
            "SELECT syncguard.sync_configure('crm');
             SELECT syncguard.sync_part(run_id, 'contacts', true, latency => '2 seconds'), syncguard.sync_finish(run_id)
               FROM syncguard.sync_begin('crm');
             SELECT syncguard.sync_part(run_id, 'contacts', false, 'HTTP 503', latency => '4 seconds'), syncguard.sync_finish(run_id)
               FROM syncguard.sync_begin('crm');
             SELECT syncguard.enqueue('mail', '{}') FROM generate_series(1, 3);
             SELECT syncguard.nack(job_id, 'bounced', retryable => false) FROM syncguard.dequeue('mail');
             CREATE TABLE orders (id int PRIMARY KEY, billed boolean, cancelled_at timestamptz);
             INSERT INTO orders VALUES (1, true, now() - interval '2 days'), (2, true, now() - interval '2 days'),
                                       (3, false, now() - interval '2 days');
             SELECT syncguard.define_invariant('cancelled_billed',
                 'SELECT id AS entity, cancelled_at AS since FROM orders WHERE billed', severity => 'critical');
             SELECT count(*) FROM syncguard.check_invariants();
             SELECT syncguard.idem_claim('pay', 'k1', '{}', lease => '1 hour');
             CREATE TABLE profiles (id int PRIMARY KEY, ts timestamptz, data jsonb);
             INSERT INTO profiles VALUES (1, now(), '{}');
             SELECT syncguard.protect('profiles', NULL, '{\"last_write_wins\": \"ts\"}');
             UPDATE profiles SET ts = now() - interval '1 day';",
        )
        .unwrap();

    let queries = syncguard_client_tests::repo().join("contrib/prometheus/queries.yaml");
    let port = free_port();
    let dsn = format!(
        "host={} port={} user=postgres dbname=postgres sslmode=disable",
        cluster.socket_dir().display(),
        cluster.port()
    );
    let _exporter = Exporter(
        Command::new(EXPORTER)
            .arg(format!("--extend.query-path={}", queries.display()))
            .arg(format!("--web.listen-address=127.0.0.1:{port}"))
            .args(["--disable-default-metrics", "--disable-settings-metrics", "--log.level=warn"])
            .env("DATA_SOURCE_NAME", dsn)
            .stdout(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| {
                panic!("cannot start {EXPORTER}: {e} (Debian package prometheus-postgres-exporter; scripts/setup.sh installs it)")
            }),
    );
    let deadline = Instant::now() + Duration::from_secs(60);
    let body = loop {
        if let Some(b) = scrape(port).filter(|b| b.contains("syncguard_queue_depth")) {
            break b;
        }
        assert!(
            Instant::now() < deadline,
            "the exporter did not serve syncguard metrics"
        );
        sleep(Duration::from_millis(200));
    };
    let s = samples(&body);

    let find = |prefix: &str| -> f64 {
        let key = s
            .keys()
            .find(|k| k.starts_with(prefix))
            .unwrap_or_else(|| panic!("no sample {prefix}…"))
            .clone();
        value(&s, &key)
    };
    assert_eq!(find("syncguard_sync_runs{"), 2.0);
    assert_eq!(find("syncguard_sync_failures{"), 1.0);
    assert_eq!(find("syncguard_sync_error_ratio{"), 0.5);
    assert_eq!(find("syncguard_sync_error_rate_alert{"), 1.0);
    assert_eq!(find("syncguard_sync_avg_latency_seconds{"), 3.0);
    assert!((find("syncguard_sync_p95_latency_seconds{") - 3.9).abs() < 1e-6);
    assert_eq!(find("syncguard_sync_stale{"), 0.0);
    assert!(find("syncguard_sync_last_success_timestamp_seconds{") > 1.7e9);
    assert!(find("syncguard_sync_staleness_seconds{") < 600.0);

    assert_eq!(find("syncguard_queue_depth{"), 2.0);
    assert_eq!(find("syncguard_queue_ready{"), 2.0);
    assert_eq!(find("syncguard_queue_dead{"), 1.0);
    assert_eq!(find("syncguard_queue_dead_alert{"), 1.0);
    assert_eq!(find("syncguard_queue_in_flight{"), 0.0);
    // The two due jobs were enqueued before the scrape and are due now.
    let (age, wait) = (
        find("syncguard_queue_oldest_job_age_seconds{"),
        find("syncguard_queue_oldest_due_wait_seconds{"),
    );
    assert!(
        (0.0..600.0).contains(&age) && (0.0..600.0).contains(&wait),
        "{age} {wait}"
    );
    assert_eq!(find("syncguard_queue_backlog_alert{"), 0.0);

    assert_eq!(find("syncguard_invariant_open_episodes{"), 2.0);
    assert_eq!(find("syncguard_invariant_errored{"), 0.0);
    assert!(s
        .keys()
        .any(|k| k.starts_with("syncguard_invariant_open_episodes{")
            && k.contains(r#"invariant="cancelled_billed""#)
            && k.contains(r#"severity="critical""#)));

    assert!(s
        .keys()
        .any(|k| k.starts_with("syncguard_idempotency_in_flight{")
            && k.contains(r#"scope="pay""#)
            && k.contains(r#"role="postgres""#)));
    assert_eq!(find("syncguard_idempotency_in_flight{"), 1.0);

    assert!(
        body.contains("# TYPE syncguard_stale_writes_ignored_total counter"),
        "{body}"
    );
    assert_eq!(find("syncguard_stale_writes_ignored_total{"), 1.0);

    // The alert rules name exported metrics only.
    let rules = std::fs::read_to_string(
        syncguard_client_tests::repo().join("contrib/prometheus/alerts.yml"),
    )
    .unwrap();
    let families: Vec<&str> = s.keys().map(|k| k.split('{').next().unwrap()).collect();
    for line in rules.lines().filter_map(|l| l.trim().strip_prefix("expr:")) {
        let metric = line.split_whitespace().next().unwrap();
        assert!(
            families.contains(&metric),
            "alerts.yml names {metric}, which is not exported"
        );
    }
}
