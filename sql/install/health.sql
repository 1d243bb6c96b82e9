-- Sync health views (docs/sync.md, "Health views"). Loaded (src/install_order.rs) after
-- sql/install/sync.sql and sql/install/queue.sql.
--
-- The views are security_invoker: row-level security of the tables applies
-- to the caller, so a role sees the health of its own sources and queues
-- (and of roles it is a member of); superusers see everything. Times are
-- measured against now(), the start of the caller's transaction.

-- Per source: runs started within its health window and their failures
-- (failed, abandoned, or still running past the deadline), part latency
-- (average, 95th percentile) and records of ok parts reported in the window,
-- watermark and lag, last success, and alert flags against the source's
-- thresholds (sync_configure).
CREATE VIEW syncguard.sync_health WITH (security_invoker = true) AS
-- For psql: what is wrong first, then the figures, then the thresholds;
-- times to the second and latencies to the millisecond, so a row fits a
-- terminal.
SELECT s.source,
       s.owner_role,
       coalesce(s.last_success_at, s.created_at) < now() - s.max_silence AS stale,
       coalesce(r.failures::double precision / NULLIF(r.runs, 0) > s.max_error_rate, false) AS error_rate_alert,
       coalesce(p.avg_latency > s.max_avg_latency, false)     AS latency_alert,
       r.runs,
       r.failures,
       round((r.failures::numeric / NULLIF(r.runs, 0)), 4)   AS error_rate,
       date_trunc('millisecond', p.avg_latency)              AS avg_latency,
       date_trunc('millisecond', p.p95_latency)              AS p95_latency,
       p.records,
       r.running,
       date_trunc('second', now() - s.watermark)             AS watermark_lag,
       date_trunc('second', s.last_success_at)               AS last_success_at,
       date_trunc('second', s.watermark)                     AS watermark,
       s.health_window,
       s.max_error_rate,
       s.max_avg_latency,
       s.max_silence
  FROM syncguard.sync_sources AS s
 CROSS JOIN LATERAL (
       SELECT count(*) FILTER (WHERE x.status <> 'running' OR x.deadline <= now())     AS runs,
              count(*) FILTER (WHERE x.status IN ('failed', 'abandoned')
                                  OR (x.status = 'running' AND x.deadline <= now()))    AS failures,
              count(*) FILTER (WHERE x.status = 'running' AND x.deadline > now())      AS running
         FROM syncguard.sync_runs AS x
        WHERE x.source = s.source AND x.owner_role = s.owner_role
          AND x.started_at > now() - s.health_window) AS r
 CROSS JOIN LATERAL (
       SELECT avg(y.latency)                                           AS avg_latency,
              percentile_cont(0.95) WITHIN GROUP (ORDER BY y.latency)  AS p95_latency,
              coalesce(sum(y.records) FILTER (WHERE y.ok), 0)::bigint  AS records
         FROM syncguard.sync_parts AS y
        WHERE y.source = s.source AND y.owner_role = s.owner_role
          AND y.reported_at > now() - s.health_window) AS p;

-- Per queue of each owner (every queue with jobs or settings): depth (live jobs), ready
-- (due now), in flight (leased, visibility not passed), failed (waiting for a
-- retry after nack), dead; the age of the oldest live job and how long the
-- oldest due job has been waiting, which alerts above the queue's max_job_age.
CREATE VIEW syncguard.queue_stats WITH (security_invoker = true) AS
SELECT q.queue,
       q.owner_role,
       coalesce(j.depth, 0)     AS depth,
       coalesce(j.ready, 0)     AS ready,
       coalesce(j.in_flight, 0) AS in_flight,
       coalesce(j.failed, 0)    AS failed,
       coalesce(j.dead, 0)      AS dead,
       date_trunc('second', now() - j.oldest_enqueued) AS oldest_job_age,
       date_trunc('second', now() - j.oldest_due)      AS oldest_due_wait,
       coalesce(c.max_job_age, interval '1 hour') AS max_job_age,
       coalesce(now() - j.oldest_due > coalesce(c.max_job_age, interval '1 hour'), false) AS backlog_alert,
       coalesce(j.dead, 0) > 0  AS dead_alert
  FROM (SELECT c0.queue, c0.owner_role FROM syncguard.queues AS c0
        UNION
        SELECT DISTINCT j0.queue, j0.owner_role FROM syncguard.queue_jobs AS j0) AS q
  LEFT JOIN syncguard.queues AS c ON c.queue = q.queue AND c.owner_role = q.owner_role
  LEFT JOIN LATERAL (
       SELECT count(*) FILTER (WHERE x.state <> 'dead')                             AS depth,
              count(*) FILTER (WHERE x.state <> 'dead' AND x.visible_at <= now())   AS ready,
              count(*) FILTER (WHERE x.state = 'leased' AND x.visible_at > now())   AS in_flight,
              count(*) FILTER (WHERE x.state = 'ready' AND x.last_error IS NOT NULL) AS failed,
              count(*) FILTER (WHERE x.state = 'dead')                              AS dead,
              min(x.enqueued_at) FILTER (WHERE x.state <> 'dead')                   AS oldest_enqueued,
              min(x.visible_at) FILTER (WHERE x.state <> 'dead' AND x.visible_at <= now()) AS oldest_due
         FROM syncguard.queue_jobs AS x
        WHERE x.queue = q.queue AND x.owner_role = q.owner_role) AS j ON true;

-- What is wrong now: one row per raised flag of sync_health and queue_stats.
CREATE VIEW syncguard.sync_alerts WITH (security_invoker = true) AS
SELECT 'source'::text AS kind, h.source AS name, h.owner_role, a.alert, a.detail
  FROM syncguard.sync_health AS h
 CROSS JOIN LATERAL (VALUES
       ('error_rate', h.error_rate_alert,
        format('%s of %s runs in the last %s failed (%s%%; threshold %s%%)',
               h.failures, h.runs, h.health_window, round(h.error_rate * 100, 1),
               round((h.max_error_rate * 100)::numeric, 1))),
       ('latency', h.latency_alert,
        format('average part latency %s in the last %s (threshold %s)',
               date_trunc('millisecond', h.avg_latency), h.health_window, h.max_avg_latency)),
       ('stale', h.stale,
        CASE WHEN h.last_success_at IS NULL
             THEN format('no successful run yet (threshold %s)', h.max_silence)
             ELSE format('no successful run since %s (threshold %s)', h.last_success_at, h.max_silence) END)
       ) AS a (alert, raised, detail)
 WHERE a.raised
UNION ALL
SELECT 'queue', s.queue, s.owner_role, a.alert, a.detail
  FROM syncguard.queue_stats AS s
 CROSS JOIN LATERAL (VALUES
       ('backlog', s.backlog_alert,
        format('the oldest due job has waited %s (threshold %s); %s jobs due',
               date_trunc('second', s.oldest_due_wait), s.max_job_age, s.ready)),
       ('dead_letters', s.dead_alert,
        format('%s dead jobs; see syncguard.dead_letters', s.dead))
       ) AS a (alert, raised, detail)
 WHERE a.raised;

GRANT SELECT ON syncguard.sync_health, syncguard.queue_stats, syncguard.sync_alerts TO PUBLIC;
COMMENT ON VIEW syncguard.sync_health IS 'per sync source: runs, error rate, latency, watermark lag, staleness and alert flags';
COMMENT ON VIEW syncguard.queue_stats IS 'per queue: depth, ready, in flight, failed, dead, oldest job age';
COMMENT ON VIEW syncguard.sync_alerts IS 'what is wrong now: raised alert flags of sync_health and queue_stats';
