-- syncguard 0.1.0 -> 0.2.0
--
-- idempotency_keys.status and queue_jobs.state become enums (idem_status,
-- job_state) instead of text with a CHECK constraint; dequeue ends its index
-- scan before it writes the leases and keeps one plan; lookups by key use the
-- index whatever the table's size when a session planned them. The views over
-- those columns and the partial indexes and constraints that name them are
-- dropped and made again as 0.2.0's install script makes them. Rows of one
-- role are kept out of reach of another (policies and column privileges
-- below); rows shared by role membership are decided by has_privs_of.
\echo Use "ALTER EXTENSION syncguard UPDATE" to load this file. \quit

-- Idempotency keys.
CREATE TYPE syncguard.idem_status AS ENUM ('running', 'succeeded', 'failed', 'dead');
DROP VIEW syncguard.idempotency_summary;
-- No CHECK constraints on the hot table (sql/idempotency.sql says why).
ALTER TABLE syncguard.idempotency_keys
    DROP CONSTRAINT idempotency_keys_status_check,
    DROP CONSTRAINT idempotency_keys_check,
    DROP CONSTRAINT idempotency_keys_check1,
    DROP CONSTRAINT idempotency_keys_attempts_check;
ALTER TABLE syncguard.idempotency_keys
    ALTER COLUMN status TYPE syncguard.idem_status USING status::syncguard.idem_status;

CREATE VIEW syncguard.idempotency_summary WITH (security_invoker = true) AS
SELECT k.scope,
       k.status,
       count(*)                                               AS keys,
       sum(k.attempts)                                        AS attempts,
       count(*) FILTER (WHERE k.status = 'running'
                          AND k.lease_expires_at <= clock_timestamp()) AS leases_expired,
       count(*) FILTER (WHERE k.expires_at < clock_timestamp()) AS expired,
       min(k.created_at)                                      AS oldest,
       max(k.updated_at)                                      AS newest
  FROM syncguard.idempotency_keys AS k
 GROUP BY k.scope, k.status;

GRANT SELECT ON syncguard.idempotency_summary TO PUBLIC;


CREATE OR REPLACE FUNCTION syncguard.idem_fail(
    token uuid,
    error text,
    retryable boolean DEFAULT true,
    max_attempts integer DEFAULT 5,
    base interval DEFAULT '2 seconds',
    cap interval DEFAULT '10 minutes',
    scope text DEFAULT NULL,
    OUT status text,
    OUT attempt integer,
    OUT retry_at timestamptz
)
LANGUAGE plpgsql VOLATILE
SET search_path = pg_catalog, pg_temp
SET enable_seqscan = off
SET enable_bitmapscan = off
AS $$
DECLARE
    t timestamptz := clock_timestamp();
BEGIN
    IF token IS NULL OR retryable IS NULL OR max_attempts IS NULL OR base IS NULL OR cap IS NULL THEN
        RAISE EXCEPTION USING ERRCODE = '22004',
            MESSAGE = 'idem_fail: token, retryable, max_attempts, base and cap must not be NULL',
            HINT = 'Pass the token idem_claim returned with outcome claimed.';
    END IF;
    IF max_attempts < 1 THEN
        RAISE EXCEPTION USING ERRCODE = '22023',
            MESSAGE = format('idem_fail: max_attempts must be at least 1, got %s', max_attempts),
            HINT = 'max_attempts counts every attempt, the first included.';
    END IF;
    IF base < interval '0' OR cap < interval '0' THEN
        RAISE EXCEPTION USING ERRCODE = '22023',
            MESSAGE = format('idem_fail: base and cap must not be negative, got base %s and cap %s', base, cap),
            HINT = 'Pass intervals such as ''2 seconds'' and ''10 minutes''.';
    END IF;
    UPDATE syncguard.idempotency_keys AS k
       SET status = CASE WHEN retryable AND k.attempts < max_attempts
                         THEN 'failed'::syncguard.idem_status ELSE 'dead' END,
           next_attempt_at = CASE WHEN retryable AND k.attempts < max_attempts
                                  THEN t + syncguard.backoff_delay(k.attempts, base, cap) END,
           last_error = error, lease_expires_at = NULL, updated_at = t
     WHERE k.lease_token = idem_fail.token AND k.status = 'running'
       AND k.owner_role = current_user
       AND (idem_fail.scope IS NULL OR k.scope = idem_fail.scope)
    RETURNING k.status, k.attempts, k.next_attempt_at INTO status, attempt, retry_at;
    IF NOT FOUND THEN
        PERFORM syncguard.idem_lease_lost(token, 'idem_fail', scope);
    END IF;
END
$$;

-- Retry queue.
CREATE TYPE syncguard.job_state AS ENUM ('ready', 'leased', 'dead');
DROP VIEW syncguard.sync_alerts;
DROP VIEW syncguard.queue_stats;
DROP VIEW syncguard.dead_letters;
DROP INDEX syncguard.queue_jobs_due;
DROP INDEX syncguard.queue_jobs_dedupe;
ALTER TABLE syncguard.queue_jobs DROP CONSTRAINT queue_jobs_state_check;
ALTER TABLE syncguard.queue_jobs
    ALTER COLUMN state DROP DEFAULT,
    ALTER COLUMN state TYPE syncguard.job_state USING state::syncguard.job_state,
    ALTER COLUMN state SET DEFAULT 'ready';
CREATE INDEX queue_jobs_due ON syncguard.queue_jobs (queue, visible_at) WHERE state <> 'dead';
CREATE UNIQUE INDEX queue_jobs_dedupe ON syncguard.queue_jobs (queue, dedupe_key)
    WHERE state <> 'dead' AND dedupe_key IS NOT NULL;

CREATE VIEW syncguard.dead_letters WITH (security_invoker = true) AS
SELECT j.queue, j.job_id, j.payload, j.dedupe_key, j.attempts, j.last_error, j.enqueued_at, j.dead_at
  FROM syncguard.queue_jobs AS j
 WHERE j.state = 'dead';

GRANT SELECT ON syncguard.dead_letters TO PUBLIC;
COMMENT ON VIEW syncguard.dead_letters IS 'jobs of the retry queue that are dead; requeue them with syncguard.requeue_dead';

CREATE VIEW syncguard.queue_stats WITH (security_invoker = true) AS
SELECT q.queue,
       coalesce(j.depth, 0)     AS depth,
       coalesce(j.ready, 0)     AS ready,
       coalesce(j.in_flight, 0) AS in_flight,
       coalesce(j.failed, 0)    AS failed,
       coalesce(j.dead, 0)      AS dead,
       now() - j.oldest_enqueued AS oldest_job_age,
       now() - j.oldest_due      AS oldest_due_wait,
       coalesce(c.max_job_age, interval '1 hour') AS max_job_age,
       coalesce(now() - j.oldest_due > coalesce(c.max_job_age, interval '1 hour'), false) AS backlog_alert,
       coalesce(j.dead, 0) > 0  AS dead_alert
  FROM (SELECT c0.queue FROM syncguard.queues AS c0
        UNION
        SELECT DISTINCT j0.queue FROM syncguard.queue_jobs AS j0) AS q
  LEFT JOIN syncguard.queues AS c ON c.queue = q.queue
  LEFT JOIN LATERAL (
       SELECT count(*) FILTER (WHERE x.state <> 'dead')                             AS depth,
              count(*) FILTER (WHERE x.state <> 'dead' AND x.visible_at <= now())   AS ready,
              count(*) FILTER (WHERE x.state = 'leased' AND x.visible_at > now())   AS in_flight,
              count(*) FILTER (WHERE x.state = 'ready' AND x.last_error IS NOT NULL) AS failed,
              count(*) FILTER (WHERE x.state = 'dead')                              AS dead,
              min(x.enqueued_at) FILTER (WHERE x.state <> 'dead')                   AS oldest_enqueued,
              min(x.visible_at) FILTER (WHERE x.state <> 'dead' AND x.visible_at <= now()) AS oldest_due
         FROM syncguard.queue_jobs AS x
        WHERE x.queue = q.queue) AS j ON true;

CREATE VIEW syncguard.sync_alerts WITH (security_invoker = true) AS
SELECT 'source'::text AS kind, h.source AS name, a.alert, a.detail
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
SELECT 'queue', s.queue, a.alert, a.detail
  FROM syncguard.queue_stats AS s
 CROSS JOIN LATERAL (VALUES
       ('backlog', s.backlog_alert,
        format('the oldest due job has waited %s (threshold %s); %s jobs due',
               date_trunc('second', s.oldest_due_wait), s.max_job_age, s.ready)),
       ('dead_letters', s.dead_alert,
        format('%s dead jobs; see syncguard.dead_letters', s.dead))
       ) AS a (alert, raised, detail)
 WHERE a.raised;

GRANT SELECT ON syncguard.queue_stats, syncguard.sync_alerts TO PUBLIC;
COMMENT ON VIEW syncguard.queue_stats IS 'per queue: depth, ready, in flight, failed, dead, oldest job age';
COMMENT ON VIEW syncguard.sync_alerts IS 'what is wrong now: raised alert flags of sync_health and queue_stats';

CREATE OR REPLACE FUNCTION syncguard.dequeue(queue text, n integer DEFAULT 1, visibility interval DEFAULT '30 seconds')
RETURNS TABLE (job_id bigint, payload jsonb, attempt integer, dedupe_key text,
               enqueued_at timestamptz, last_error text)
LANGUAGE plpgsql VOLATILE ROWS 1
SET search_path = pg_catalog, pg_temp
SET plan_cache_mode = force_generic_plan
SET enable_sort = off
SET enable_bitmapscan = off
SET enable_seqscan = off
AS $$
#variable_conflict use_column
DECLARE
    t   timestamptz := clock_timestamp();
    ids bigint[];
    id  bigint;
BEGIN
    IF queue IS NULL OR n IS NULL OR visibility IS NULL THEN
        RAISE EXCEPTION USING ERRCODE = '22004',
            MESSAGE = 'dequeue: queue, n and visibility must not be NULL';
    END IF;
    IF n < 1 OR visibility <= interval '0' THEN
        RAISE EXCEPTION USING ERRCODE = '22023',
            MESSAGE = format('dequeue: n must be at least 1 and visibility positive, got %s and %s', n, visibility),
            HINT = 'The visibility timeout should exceed the time a job takes.';
    END IF;
    ids := ARRAY(
        SELECT d.job_id FROM syncguard.queue_jobs AS d
         WHERE d.queue = $1 AND d.state <> 'dead' AND d.visible_at <= t
         ORDER BY d.visible_at
         LIMIT $2
           FOR UPDATE SKIP LOCKED);
    -- One primary-key UPDATE per job: a plan over the whole id array would
    -- depend on statistics that a queue table, mostly dead rows, keeps wrong.
    FOREACH id IN ARRAY ids LOOP
        RETURN QUERY
        UPDATE syncguard.queue_jobs AS j
           SET state = 'leased', attempts = j.attempts + 1, visible_at = t + $3
         WHERE j.job_id = id AND j.queue = $1
        RETURNING j.job_id, j.payload, j.attempts, j.dedupe_key, j.enqueued_at, j.last_error;
    END LOOP;
END
$$;

-- Row ownership across roles: restrictive insert policies, so that no role
-- writes rows under another role's invariant, source or run; no identity
-- column in INSERT privileges, so that no role takes the ids the sequences
-- hand to others; no UPDATE of names, owners or ids.
REVOKE INSERT ON syncguard.entity_events FROM PUBLIC;
GRANT INSERT (entity, kind, at, data, owner_role) ON syncguard.entity_events TO PUBLIC;
CREATE POLICY invariants_own_view ON syncguard.invariants AS RESTRICTIVE FOR INSERT
    WITH CHECK (EXISTS (SELECT FROM pg_catalog.pg_class AS c JOIN pg_catalog.pg_roles AS r ON r.oid = c.relowner
                         WHERE c.relnamespace = 'syncguard_invariants'::pg_catalog.regnamespace
                           AND c.relname = invariants.name::pg_catalog.name AND r.rolname = current_user));
CREATE POLICY invariant_runs_own_invariant ON syncguard.invariant_runs AS RESTRICTIVE FOR INSERT
    WITH CHECK (EXISTS (SELECT FROM syncguard.invariants AS i
                         WHERE i.name = invariant_runs.invariant AND i.owner_role = current_user));
CREATE POLICY violations_own_invariant ON syncguard.violations AS RESTRICTIVE FOR INSERT
    WITH CHECK (EXISTS (SELECT FROM syncguard.invariants AS i
                         WHERE i.name = violations.invariant AND i.owner_role = current_user));
REVOKE INSERT, UPDATE ON syncguard.invariants, syncguard.invariant_runs, syncguard.violations FROM PUBLIC;
GRANT INSERT ON syncguard.invariants TO PUBLIC;
GRANT UPDATE (query, grace, severity, remediation, description, schedule, statement_timeout, enabled,
              updated_at, last_run_at, last_status, last_error) ON syncguard.invariants TO PUBLIC;
GRANT INSERT (invariant, owner_role, started_at, finished_at, status, violations, new_episodes, resolved,
              sqlstate, error) ON syncguard.invariant_runs TO PUBLIC;
GRANT INSERT (invariant, owner_role, entity, since, first_seen, last_seen, count, resolved_at),
      UPDATE (since, last_seen, count, resolved_at) ON syncguard.violations TO PUBLIC;
REVOKE INSERT ON syncguard.queue_jobs FROM PUBLIC;
GRANT INSERT (queue, owner_role, state, payload, dedupe_key, attempts, visible_at, last_error, enqueued_at, dead_at)
    ON syncguard.queue_jobs TO PUBLIC;
CREATE POLICY sync_runs_visible_source ON syncguard.sync_runs AS RESTRICTIVE
    USING (true)
    WITH CHECK (EXISTS (SELECT FROM syncguard.sync_sources AS s WHERE s.source = sync_runs.source));
CREATE POLICY sync_parts_visible_run ON syncguard.sync_parts AS RESTRICTIVE
    USING (true)
    WITH CHECK (EXISTS (SELECT FROM syncguard.sync_runs AS r
                         WHERE r.run_id = sync_parts.run_id AND r.source = sync_parts.source));
REVOKE INSERT ON syncguard.sync_runs FROM PUBLIC;
GRANT INSERT (source, owner_role, status, parts, since, started_at, deadline, finished_at, advanced, error)
    ON syncguard.sync_runs TO PUBLIC;

-- Lookups by key never scan the table: a plan a session made while the table
-- was nearly empty would otherwise stay a sequential scan as the table grows.
ALTER FUNCTION syncguard.enqueue(text, jsonb, text, interval) SET enable_seqscan = off;
ALTER FUNCTION syncguard.enqueue(text, jsonb, text, interval) SET enable_bitmapscan = off;
ALTER FUNCTION syncguard.queue_leased_job(bigint, integer, text) SET enable_seqscan = off;
ALTER FUNCTION syncguard.queue_leased_job(bigint, integer, text) SET enable_bitmapscan = off;
ALTER FUNCTION syncguard.ack(bigint, integer) SET enable_seqscan = off;
ALTER FUNCTION syncguard.ack(bigint, integer) SET enable_bitmapscan = off;
ALTER FUNCTION syncguard.nack(bigint, text, boolean, integer) SET enable_seqscan = off;
ALTER FUNCTION syncguard.nack(bigint, text, boolean, integer) SET enable_bitmapscan = off;
ALTER FUNCTION syncguard.idem_claim(text, text, jsonb, interval, interval, text[]) SET enable_seqscan = off;
ALTER FUNCTION syncguard.idem_claim(text, text, jsonb, interval, interval, text[]) SET enable_bitmapscan = off;
ALTER FUNCTION syncguard.idem_lease_lost(uuid, text, text) SET enable_seqscan = off;
ALTER FUNCTION syncguard.idem_lease_lost(uuid, text, text) SET enable_bitmapscan = off;
ALTER FUNCTION syncguard.idem_complete(uuid, jsonb, text) SET enable_seqscan = off;
ALTER FUNCTION syncguard.idem_complete(uuid, jsonb, text) SET enable_bitmapscan = off;

-- Rows shared by role membership: a function call per row, not a subquery
-- over pg_roles planned and started with every statement.
CREATE FUNCTION syncguard."has_privs_of"("role_name" TEXT) RETURNS bool
STRICT STABLE PARALLEL SAFE
LANGUAGE c AS 'MODULE_PATHNAME', 'has_privs_of_wrapper';
COMMENT ON FUNCTION syncguard.has_privs_of(text) IS
    'whether the current user has the privileges of the named role (false for a role that no longer exists); the row-level security policies of the sync and queue tables';
ALTER POLICY queues_own ON syncguard.queues
    USING (owner_role = current_user OR syncguard.has_privs_of(owner_role))
    WITH CHECK (owner_role = current_user OR syncguard.has_privs_of(owner_role));
ALTER POLICY queue_jobs_own ON syncguard.queue_jobs
    USING (owner_role = current_user OR syncguard.has_privs_of(owner_role))
    WITH CHECK (owner_role = current_user OR syncguard.has_privs_of(owner_role));
ALTER POLICY sync_sources_own ON syncguard.sync_sources
    USING (owner_role = current_user OR syncguard.has_privs_of(owner_role))
    WITH CHECK (owner_role = current_user OR syncguard.has_privs_of(owner_role));
ALTER POLICY sync_runs_own ON syncguard.sync_runs
    USING (owner_role = current_user OR syncguard.has_privs_of(owner_role))
    WITH CHECK (owner_role = current_user OR syncguard.has_privs_of(owner_role));
ALTER POLICY sync_parts_own ON syncguard.sync_parts
    USING (owner_role = current_user OR syncguard.has_privs_of(owner_role))
    WITH CHECK (owner_role = current_user OR syncguard.has_privs_of(owner_role));
