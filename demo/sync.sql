-- syncguard walk-through, sync runs, retry queue and health (included by demo/walkthrough.sql).

\echo
\echo '== Sync runs: a failed part holds the watermark back, the next run catches up =='
\echo 'A nightly job syncs contacts and deals from a CRM. The first run fetches everything (since is NULL):'
SELECT run_id AS run1 FROM syncguard.sync_begin('crm', ARRAY['contacts', 'deals']) \gset
SELECT run_id, since, parts FROM syncguard.sync_runs WHERE run_id = :run1;
SELECT v.part, v.ok, v.records, v.error
  FROM (VALUES ('contacts', true, 1200, '800 ms', NULL),
       ('deals', true, 310, '1.2 s', NULL)) AS v (part, ok, records, latency, error),
       LATERAL syncguard.sync_part(:run1, v.part, v.ok, v.error, v.records, v.latency::interval);
SELECT syncguard.sync_finish(:run1) AS advanced;
SELECT source, watermark IS NOT NULL AS has_watermark FROM syncguard.sync_sources WHERE source = 'crm';

\echo 'The second run fetches changes since the watermark. The deals API answers 503:'
SELECT run_id AS run2, since AS since2 FROM syncguard.sync_begin('crm', ARRAY['contacts', 'deals']) \gset
SELECT v.part, v.ok, v.records, v.error
  FROM (VALUES ('contacts', true, 14, '300 ms', NULL),
       ('deals', false, 0, '30 s', 'HTTP 503 Service Unavailable')) AS v (part, ok, records, latency, error),
       LATERAL syncguard.sync_part(:run2, v.part, v.ok, v.error, v.records, v.latency::interval);
\echo 'sync_finish refuses to advance: a delta sync that moved on now would skip those deals forever.'
SELECT syncguard.sync_finish(:run2) AS advanced;
SELECT run_id, status, advanced, error FROM syncguard.sync_runs WHERE source = 'crm' ORDER BY run_id;

\echo 'The third run starts from the same point as the failed one, and catches up:'
SELECT run_id AS run3, since AS since3 FROM syncguard.sync_begin('crm', ARRAY['contacts', 'deals']) \gset
SELECT :'since3'::timestamptz = :'since2'::timestamptz AS same_since_as_the_failed_run;
SELECT v.part, v.ok, v.records, v.error
  FROM (VALUES ('contacts', true, 3, '250 ms', NULL),
       ('deals', true, 57, '1.4 s', NULL)) AS v (part, ok, records, latency, error),
       LATERAL syncguard.sync_part(:run3, v.part, v.ok, v.error, v.records, v.latency::interval);
SELECT syncguard.sync_finish(:run3) AS advanced;
SELECT s.watermark = r.started_at AS watermark_is_start_of_run3
  FROM syncguard.sync_sources s JOIN syncguard.sync_runs r ON r.run_id = :run3 WHERE s.source = 'crm';

\echo 'Health over the last hour, and what is wrong now (1 of 3 runs failed: above the 10 % threshold;'
\echo 'the 30 s timeout raises the average part latency above 5 s):'
SELECT source, runs, failures, error_rate, date_trunc('millisecond', avg_latency) AS avg_latency,
       date_trunc('millisecond', p95_latency) AS p95_latency, records, stale
  FROM syncguard.sync_health;
SELECT kind, name, alert, detail FROM syncguard.sync_alerts WHERE kind = 'source';

\echo
\echo '== Retry queue: backoff, dead letters, re-queue =='
SELECT syncguard.queue_configure('webhooks', max_attempts => 3) IS NOT NULL AS configured;
SELECT syncguard.enqueue('webhooks', '{"event": "order.paid", "order": 1001}', dedupe_key => 'order-1001') AS job \gset
\echo 'The same event again while the first is pending is not enqueued twice (same job id):'
SELECT syncguard.enqueue('webhooks', '{"event": "order.paid", "order": 1001}', dedupe_key => 'order-1001') = :job AS deduplicated;
SELECT job_id = :job AS our_job, payload, attempt FROM syncguard.dequeue('webhooks');
\echo 'Delivery fails; the job is due again after backoff (2 s base, doubling, with jitter):'
SELECT state, attempts, retry_at - now() BETWEEN interval '1.5 s' AND interval '2.5 s' AS retry_in_about_2s
  FROM syncguard.nack(:job, 'receiver answered 500');
SELECT queue, depth, ready, in_flight, failed, dead FROM syncguard.queue_stats;
\echo '(the demo skips the wait) ... it fails twice more and lands in the dead letters:'
UPDATE syncguard.queue_jobs SET visible_at = now() WHERE job_id = :job;
SELECT attempt FROM syncguard.dequeue('webhooks');
SELECT state, attempts FROM syncguard.nack(:job, 'receiver answered 500');
UPDATE syncguard.queue_jobs SET visible_at = now() WHERE job_id = :job;
SELECT attempt FROM syncguard.dequeue('webhooks');
SELECT state, attempts FROM syncguard.nack(:job, 'receiver answered 410 Gone');
SELECT queue, payload, attempts, last_error FROM syncguard.dead_letters;
SELECT kind, name, alert, detail FROM syncguard.sync_alerts WHERE kind = 'queue';
\echo 'The receiver is fixed: re-queue the dead letters, deliver, acknowledge.'
SELECT syncguard.requeue_dead('webhooks') AS requeued;
SELECT job_id = :job AS our_job, attempt FROM syncguard.dequeue('webhooks');
SELECT 'acked' AS job FROM syncguard.ack(:job);
SELECT queue, depth, dead FROM syncguard.queue_stats;
