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
-- No CHECK constraints on the hot table (sql/install/idempotency.sql says why).
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



-- Retry queue.
CREATE TYPE syncguard.job_state AS ENUM ('ready', 'leased', 'dead');
-- Names of sources and queues are per owner (sql/install/names.sql).
ALTER TABLE syncguard.queues DROP CONSTRAINT queues_pkey, ADD PRIMARY KEY (queue, owner_role);
ALTER TABLE syncguard.sync_runs DROP CONSTRAINT sync_runs_source_fkey;
-- A run belongs to its source's owner (sync_begin stamps it so); a run
-- inserted by hand under another owner is given its source's.
UPDATE syncguard.sync_runs AS r SET owner_role = s.owner_role
  FROM syncguard.sync_sources AS s WHERE s.source = r.source AND r.owner_role <> s.owner_role;
ALTER TABLE syncguard.sync_sources DROP CONSTRAINT sync_sources_pkey, ADD PRIMARY KEY (source, owner_role);
ALTER TABLE syncguard.sync_runs
    ADD FOREIGN KEY (source, owner_role) REFERENCES syncguard.sync_sources ON DELETE CASCADE;
DROP VIEW syncguard.sync_alerts;
DROP VIEW syncguard.sync_health;
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
CREATE UNIQUE INDEX queue_jobs_dedupe ON syncguard.queue_jobs (queue, owner_role, dedupe_key)
    WHERE state <> 'dead' AND dedupe_key IS NOT NULL;

CREATE VIEW syncguard.dead_letters WITH (security_invoker = true) AS
SELECT j.queue, j.job_id, j.payload, j.dedupe_key, j.attempts, j.last_error, j.enqueued_at, j.dead_at
  FROM syncguard.queue_jobs AS j
 WHERE j.state = 'dead';

GRANT SELECT ON syncguard.dead_letters TO PUBLIC;
COMMENT ON VIEW syncguard.dead_letters IS 'jobs of the retry queue that are dead; requeue them with syncguard.requeue_dead';

-- The health views as 0.2.0 makes them (sync_health: flags first, times to
-- the second).
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


-- Row ownership across roles: restrictive insert policies, so that no role
-- writes rows under another role's invariant, source or run; no identity
-- column in INSERT privileges, so that no role takes the ids the sequences
-- hand to others; no UPDATE of names, owners or ids.
REVOKE INSERT ON syncguard.entity_events FROM PUBLIC;
GRANT INSERT (entity, kind, at, data, owner_role) ON syncguard.entity_events TO PUBLIC;
-- Invariant names are per owner: the key is (name, owner_role), the lookups
-- by invariant name match the owner too, and each invariant records the
-- name of its view (0.1.0's views are all syncguard_invariants.<name>).
ALTER TABLE syncguard.invariants DROP CONSTRAINT invariants_pkey;
ALTER TABLE syncguard.invariants
    ALTER COLUMN name SET NOT NULL,
    ADD PRIMARY KEY (name, owner_role),
    ADD COLUMN view_name text;
UPDATE syncguard.invariants SET view_name = name;
ALTER TABLE syncguard.invariants
    ALTER COLUMN view_name SET NOT NULL,
    ADD CONSTRAINT invariants_view_name_key UNIQUE (view_name);
COMMENT ON TABLE syncguard.invariants IS
    'syncguard invariants: use syncguard.define_invariant / drop_invariant; names are per owner_role, the view of each is syncguard_invariants.<view_name>';
DROP INDEX syncguard.invariant_runs_invariant;
CREATE INDEX invariant_runs_invariant ON syncguard.invariant_runs (invariant, owner_role, started_at);
DROP INDEX syncguard.violations_open;
CREATE UNIQUE INDEX violations_open ON syncguard.violations (invariant, owner_role, entity) WHERE resolved_at IS NULL;
DROP INDEX syncguard.violations_invariant;
CREATE INDEX violations_invariant ON syncguard.violations (invariant, owner_role, first_seen);
CREATE POLICY invariants_own_view ON syncguard.invariants AS RESTRICTIVE FOR INSERT
    WITH CHECK ((invariants.view_name = invariants.name
                 OR invariants.view_name = invariants.name || '@' || invariants.owner_role)
                AND EXISTS (SELECT FROM pg_catalog.pg_class AS c JOIN pg_catalog.pg_roles AS r ON r.oid = c.relowner
                             WHERE c.relnamespace = 'syncguard_invariants'::pg_catalog.regnamespace
                               AND c.relname = invariants.view_name::pg_catalog.name AND r.rolname = current_user));
CREATE POLICY invariant_runs_own_invariant ON syncguard.invariant_runs AS RESTRICTIVE FOR INSERT
    WITH CHECK (EXISTS (SELECT FROM syncguard.invariants AS i
                         WHERE i.name = invariant_runs.invariant AND i.owner_role = invariant_runs.owner_role
                           AND i.owner_role = current_user));
CREATE POLICY violations_own_invariant ON syncguard.violations AS RESTRICTIVE FOR INSERT
    WITH CHECK (EXISTS (SELECT FROM syncguard.invariants AS i
                         WHERE i.name = violations.invariant AND i.owner_role = violations.owner_role
                           AND i.owner_role = current_user));
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
    WITH CHECK (EXISTS (SELECT FROM syncguard.sync_sources AS s
                         WHERE s.source = sync_runs.source AND s.owner_role = sync_runs.owner_role));
CREATE POLICY sync_parts_visible_run ON syncguard.sync_parts AS RESTRICTIVE
    USING (true)
    WITH CHECK (EXISTS (SELECT FROM syncguard.sync_runs AS r
                         WHERE r.run_id = sync_parts.run_id AND r.source = sync_parts.source));
REVOKE INSERT ON syncguard.sync_runs FROM PUBLIC;
GRANT INSERT (source, owner_role, status, parts, since, started_at, deadline, finished_at, advanced, error)
    ON syncguard.sync_runs TO PUBLIC;

-- Lookups by key never scan the table: a plan a session made while the table
-- was nearly empty would otherwise stay a sequential scan as the table grows.
-- (enqueue, dequeue, nack and idem_claim have more changes: redefined whole below.)
ALTER FUNCTION syncguard.queue_leased_job(bigint, integer, text) SET enable_seqscan = off;
ALTER FUNCTION syncguard.queue_leased_job(bigint, integer, text) SET enable_bitmapscan = off;
ALTER FUNCTION syncguard.ack(bigint, integer) SET enable_seqscan = off;
ALTER FUNCTION syncguard.ack(bigint, integer) SET enable_bitmapscan = off;
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

-- Security (0.2.0): a check runs in a sandbox its query cannot leave (one Rust
-- function instead of the enter/leave pair), alerts carry an id instead of
-- data, no SQL function counts stale writes, idempotency keys are per role,
-- NULL tables are 22004.
DROP FUNCTION syncguard.invariant_check_enter(oid, integer);
DROP FUNCTION syncguard.invariant_check_leave();
CREATE FUNCTION syncguard."invariant_check_run"("owner" oid, "view_name" TEXT, "timeout_ms" INT)
RETURNS TABLE ("entities" TEXT[], "sinces" timestamp with time zone[], "sqlstate" TEXT, "error" TEXT)
STRICT VOLATILE PARALLEL UNSAFE
LANGUAGE c AS 'MODULE_PATHNAME', 'invariant_check_run_wrapper';
GRANT EXECUTE ON FUNCTION syncguard.invariant_check_run(oid, text, integer) TO PUBLIC;
COMMENT ON FUNCTION syncguard.invariant_check_run(oid, text, integer) IS
    'internal: one check''s query, run as the invariant''s owner in a sandbox it cannot leave';
DROP FUNCTION syncguard.alert_payload(text, text, text, text, timestamptz, text, text);
CREATE OR REPLACE FUNCTION syncguard.alert_payload(kind text, invariant text, id bigint) RETURNS text
LANGUAGE sql IMMUTABLE PARALLEL SAFE
SET search_path = pg_catalog, pg_temp
RETURN jsonb_build_object('kind', kind, 'invariant', invariant, 'id', id)::text;
GRANT EXECUTE ON FUNCTION syncguard.alert_payload(text, text, bigint) TO PUBLIC;
COMMENT ON FUNCTION syncguard.alert_payload(text, text, bigint) IS
    'the JSON payload of a syncguard_alerts notification: kind, invariant and the id of the episode or run';
DROP FUNCTION syncguard.run_invariant_check(text);
CREATE FUNCTION syncguard.run_invariant_check(
    inv_name text,
    owner_role text DEFAULT NULL,
    OUT invariant text, OUT status text, OUT violations integer, OUT new_episodes integer,
    OUT resolved integer, OUT duration interval, OUT error text
)
LANGUAGE plpgsql VOLATILE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    inv syncguard.invariants;
    t0 timestamptz := clock_timestamp();
    owner oid;
    owner_name text := run_invariant_check.owner_role;
    entities text[];
    sinces timestamptz[];
    st text;
    run_id bigint;
BEGIN
    -- Locked: runs of one invariant (and its redefinition) take turns. One
    -- locked elsewhere (a run or redefinition under way, or its owner's own
    -- open transaction) is skipped this time, never waited for: the checker
    -- (the worker) runs every owner's checks.
    IF owner_name IS NULL THEN
        owner_name := syncguard._name_owner(ARRAY(
            SELECT i.owner_role FROM syncguard.invariants i WHERE i.name = inv_name), inv_name, 'invariant');
    END IF;
    SELECT * INTO inv FROM syncguard.invariants i
     WHERE i.name = inv_name AND i.owner_role = owner_name FOR UPDATE SKIP LOCKED;
    IF NOT FOUND THEN
        RETURN;  -- dropped meanwhile, or locked
    END IF;
    invariant := inv.name;
    owner := to_regrole(quote_ident(inv.owner_role));
    IF owner IS NULL THEN
        st := '42704';
        error := format('the owner of invariant %L, role %s, does not exist', inv.name, inv.owner_role);
    ELSE
        -- The sandbox: as the owner, security-restricted, settings rolled
        -- back, under the check's own timer (src/invariants.rs).
        SELECT r.entities, r.sinces, r.sqlstate, r.error INTO entities, sinces, st, error
          FROM syncguard.invariant_check_run(owner, inv.view_name,
                   ceil(extract(epoch FROM inv.statement_timeout) * 1000)::integer) AS r;
        IF st = '57014' THEN
            error := format('canceled: the check ran longer than its statement_timeout (%s)', inv.statement_timeout);
        END IF;
    END IF;

    IF st IS NULL THEN
        violations := cardinality(entities);
        status := CASE WHEN violations > 0 THEN 'violating' ELSE 'ok' END;
        WITH cur AS (
            SELECT c.entity, c.since FROM unnest(entities, sinces) AS c(entity, since)
        ), seen AS (
            UPDATE syncguard.violations v
               SET last_seen = t0, count = v.count + 1, since = c.since
              FROM cur c
             WHERE v.invariant = inv.name AND v.owner_role = inv.owner_role AND v.resolved_at IS NULL
               AND v.entity = c.entity
        ), opened AS (
            INSERT INTO syncguard.violations (invariant, owner_role, entity, since, first_seen, last_seen)
            SELECT inv.name, inv.owner_role, c.entity, c.since, t0, t0
              FROM cur c
             WHERE NOT EXISTS (SELECT 1 FROM syncguard.violations v
                                WHERE v.invariant = inv.name AND v.owner_role = inv.owner_role
                                  AND v.resolved_at IS NULL AND v.entity = c.entity)
            RETURNING id
        ), closed AS (
            UPDATE syncguard.violations v
               SET resolved_at = t0
             WHERE v.invariant = inv.name AND v.owner_role = inv.owner_role AND v.resolved_at IS NULL
               AND NOT EXISTS (SELECT 1 FROM cur c WHERE c.entity = v.entity)
            RETURNING 1
        ), alerts AS (
            SELECT pg_notify('syncguard_alerts', syncguard.alert_payload('new_episode', inv.name, o.id))
              FROM opened o
        )
        SELECT (SELECT count(*) FROM alerts), (SELECT count(*) FROM closed)
          INTO new_episodes, resolved;
    ELSE
        status := 'errored';
        new_episodes := 0;
        resolved := 0;
    END IF;

    duration := clock_timestamp() - t0;
    INSERT INTO syncguard.invariant_runs
           (invariant, owner_role, started_at, finished_at, status, violations, new_episodes,
            resolved, sqlstate, error)
    VALUES (inv.name, inv.owner_role, t0, t0 + duration, status, violations, new_episodes,
            resolved, st, error)
    RETURNING id INTO run_id;
    -- Alert when the check starts erroring, not on every run while it keeps erroring.
    IF st IS NOT NULL AND inv.last_status IS DISTINCT FROM 'errored' THEN
        PERFORM pg_notify('syncguard_alerts', syncguard.alert_payload('check_error', inv.name, run_id));
    END IF;
    UPDATE syncguard.invariants i
       SET last_run_at = t0, last_status = run_invariant_check.status, last_error = run_invariant_check.error
     WHERE i.name = inv.name AND i.owner_role = inv.owner_role;
END
$$;
GRANT EXECUTE ON FUNCTION syncguard.run_invariant_check(text, text) TO PUBLIC;
COMMENT ON FUNCTION syncguard.run_invariant_check(text, text) IS
    'internal: one check, recorded as a run, episodes and alerts';

DROP FUNCTION syncguard.note_stale_write(text);
CREATE OR REPLACE FUNCTION syncguard.require_owner(target regclass) RETURNS text
LANGUAGE plpgsql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    qualified text;
    owner oid;
BEGIN
    IF target IS NULL THEN
        RAISE EXCEPTION 'the table must not be NULL' USING ERRCODE = '22004',
            HINT = 'Pass the table, e.g. ''profiles''::regclass.';
    END IF;
    SELECT format('%I.%I', n.nspname, c.relname), c.relowner INTO qualified, owner
      FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
     WHERE c.oid = target;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'relation with OID % does not exist', target::oid USING ERRCODE = '42P01';
    END IF;
    IF NOT pg_has_role(current_user, owner, 'USAGE') THEN
        RAISE EXCEPTION 'must be owner of table %', qualified
            USING ERRCODE = '42501',
                  HINT = 'Only the owner of a table (or a superuser) can protect or unprotect it.';
    END IF;
    RETURN qualified;
END
$$;

ALTER TABLE syncguard.idempotency_keys
    DROP CONSTRAINT idempotency_keys_pkey,
    ADD PRIMARY KEY (scope, key, owner_role);
CREATE OR REPLACE FUNCTION syncguard.idem_claim(
    scope text,
    key text,
    request jsonb,
    lease interval DEFAULT '30 seconds',
    ttl interval DEFAULT '24 hours',
    ignore text[] DEFAULT NULL,
    OUT outcome text,
    OUT token uuid,
    OUT response jsonb,
    OUT attempt integer,
    OUT retry_at timestamptz
)
LANGUAGE plpgsql VOLATILE
SET search_path = pg_catalog, pg_temp
SET enable_seqscan = off
SET enable_bitmapscan = off
AS $$
DECLARE
    t   timestamptz := clock_timestamp();
    fp  text;
    tok uuid := gen_random_uuid();
    me  text := current_user;
    cur record;
BEGIN
    IF scope IS NULL OR key IS NULL OR request IS NULL THEN
        RAISE EXCEPTION USING ERRCODE = '22004',
            MESSAGE = 'idem_claim: scope, key and request must not be NULL',
            HINT = 'Pass ''{}'' as the request when it has no body.';
    END IF;
    IF key = '' THEN
        RAISE EXCEPTION USING ERRCODE = '22023',
            MESSAGE = 'idem_claim: key must not be empty',
            HINT = 'Use the idempotency key the client sent, e.g. a UUID.';
    END IF;
    -- The primary key's index takes entries of up to about 2.7 kB.
    IF octet_length(key) > 1000 OR octet_length(scope) > 200 THEN
        RAISE EXCEPTION USING ERRCODE = '22023',
            MESSAGE = format('idem_claim: the key may have at most 1000 bytes and the scope 200, got %s and %s',
                             octet_length(key), octet_length(scope)),
            HINT = 'Pass a digest of a longer key, e.g. encode(sha256(convert_to(key, ''UTF8'')), ''hex'').';
    END IF;
    -- Bounded: a key remembered for ever, or a lease that never runs out,
    -- is a mistake, not a setting.
    IF lease IS NULL OR lease <= interval '0' OR lease > interval '1 day'
       OR ttl IS NULL OR ttl <= interval '0' OR ttl > interval '1 year' THEN
        RAISE EXCEPTION USING ERRCODE = '22023',
            MESSAGE = format('idem_claim: lease must be positive and at most 1 day, ttl positive and at most 1 year, got lease %s and ttl %s',
                             coalesce(lease::text, 'NULL'), coalesce(ttl::text, 'NULL')),
            HINT = 'The lease covers one attempt (e.g. ''30 seconds''); the ttl how long the key is remembered (e.g. ''24 hours'').';
    END IF;

    IF ignore IS NULL THEN
        fp := encode(sha256(convert_to(request::text, 'UTF8')), 'hex');
    ELSE
        fp := syncguard.request_fingerprint(request, ignore);
    END IF;

    INSERT INTO syncguard.idempotency_keys AS k
           (scope, key, owner_role, fingerprint, status, attempts, lease_token,
            lease_expires_at, created_at, updated_at, expires_at)
    VALUES (idem_claim.scope, idem_claim.key, me, fp, 'running', 1, tok,
            t + lease, t, t, t + ttl)
    ON CONFLICT ON CONSTRAINT idempotency_keys_pkey DO UPDATE
       SET fingerprint      = excluded.fingerprint,
           status           = 'running',
           response         = NULL,
           attempts         = CASE WHEN k.expires_at <= t THEN 1 ELSE k.attempts + 1 END,
           last_error       = CASE WHEN k.expires_at <= t THEN NULL ELSE k.last_error END,
           lease_token      = excluded.lease_token,
           lease_expires_at = excluded.lease_expires_at,
           next_attempt_at  = NULL,
           created_at       = CASE WHEN k.expires_at <= t THEN excluded.created_at ELSE k.created_at END,
           updated_at       = excluded.updated_at,
           expires_at       = CASE WHEN k.expires_at <= t THEN excluded.expires_at
                                   ELSE greatest(k.expires_at, excluded.expires_at) END
     WHERE NOT (k.status = 'running' AND k.lease_expires_at > t)
       AND (k.expires_at <= t                    -- forgotten: a new request
            OR (k.fingerprint = excluded.fingerprint
                AND (k.status = 'running'        -- lease expired
                     OR (k.status = 'failed' AND k.next_attempt_at <= t))))
    RETURNING k.attempts INTO attempt;

    IF FOUND THEN
        outcome := 'claimed';
        token := tok;
        RETURN;
    END IF;

    -- The conflicting row is locked by the INSERT above until the end of
    -- this transaction, so it is still there and cannot change under us.
    SELECT k.fingerprint, k.status, k.response, k.last_error,
           k.attempts, k.lease_expires_at, k.next_attempt_at
      INTO STRICT cur
      FROM syncguard.idempotency_keys AS k
     WHERE k.scope = idem_claim.scope AND k.key = idem_claim.key AND k.owner_role = me;

    IF cur.fingerprint <> fp THEN
        RAISE EXCEPTION USING ERRCODE = 'SG001',
            MESSAGE = format('idempotency key %L in scope %L was used for a different request', key, scope),
            DETAIL = format('Stored request fingerprint %s…, this request %s….',
                            left(cur.fingerprint, 12), left(fp, 12)),
            HINT = 'A retry must send the same request; a new request needs a new key. Pass ignore => ARRAY[''field''] to leave volatile fields out of the fingerprint.';
    END IF;

    attempt := cur.attempts;
    CASE cur.status
    WHEN 'succeeded' THEN
        outcome := 'replay';
        response := cur.response;
    WHEN 'running' THEN
        outcome := 'in_progress';
        retry_at := cur.lease_expires_at;
    WHEN 'failed' THEN
        outcome := 'retry_later';
        response := jsonb_build_object('error', cur.last_error);
        retry_at := cur.next_attempt_at;
    ELSE
        outcome := 'dead';
        response := jsonb_build_object('error', cur.last_error);
    END CASE;
END
$$;
CREATE OR REPLACE FUNCTION syncguard.audit()
RETURNS TABLE (invariant text, status text, severity text, open_violations bigint,
               oldest_violation_age interval, last_run timestamptz, last_error text,
               remediation text)
LANGUAGE sql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
    SELECT i.name,
           s.status,
           i.severity,
           coalesce(o.open, 0),
           date_trunc('second', o.oldest_age),
           date_trunc('second', i.last_run_at),
           i.last_error,
           i.remediation
      FROM syncguard.invariants i
      CROSS JOIN LATERAL (SELECT CASE WHEN NOT i.enabled THEN 'disabled'
                                      ELSE coalesce(i.last_status, 'never_run') END AS status) s
      LEFT JOIN LATERAL (
            -- A since of -infinity (templates that cannot know when) ages from first_seen.
            SELECT count(*) AS open,
                   now() - min(CASE WHEN isfinite(v.since) THEN v.since ELSE v.first_seen END) AS oldest_age
              FROM syncguard.violations v
             WHERE v.invariant = i.name AND v.owner_role = i.owner_role AND v.resolved_at IS NULL) o ON true
     ORDER BY array_position(ARRAY['violating', 'errored', 'never_run', 'ok', 'disabled'], s.status),
              array_position(ARRAY['critical', 'error', 'warning', 'info'], i.severity),
              coalesce(o.open, 0) DESC,
              i.name, i.owner_role
$$;
CREATE OR REPLACE FUNCTION syncguard.define_invariant(
    name text,
    query text,
    grace interval DEFAULT '0',
    severity text DEFAULT 'error',
    remediation text DEFAULT NULL,
    description text DEFAULT NULL,
    schedule interval DEFAULT '5 minutes',
    statement_timeout interval DEFAULT '1 minute',
    enabled boolean DEFAULT true,
    search_path text DEFAULT pg_catalog.current_setting('search_path')
) RETURNS regclass
LANGUAGE plpgsql VOLATILE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    rel text;        -- the view's relation name in syncguard_invariants
    qualified text;  -- the same, schema-qualified and quoted
    stmt text;
    view_owner oid;
    me oid := (SELECT r.oid FROM pg_roles r WHERE r.rolname = current_user);
    since_type regtype;
    st text;
    msg text;
    citus_ddl text := current_setting('citus.enable_ddl_propagation', true);
BEGIN
    IF name IS NULL OR query IS NULL OR grace IS NULL OR severity IS NULL OR schedule IS NULL
       OR statement_timeout IS NULL OR enabled IS NULL THEN
        RAISE EXCEPTION USING ERRCODE = '22004',
            MESSAGE = 'define_invariant: name, query, grace, severity, schedule, statement_timeout and enabled must not be NULL',
            HINT = 'Leave out an argument to take its default.';
    END IF;
    IF octet_length(name) NOT BETWEEN 1 AND 63 THEN
        RAISE EXCEPTION USING ERRCODE = '22023',
            MESSAGE = format('invariant name must be 1 to 63 bytes long, got %s bytes', octet_length(name)),
            HINT = 'The name is also the name of the invariant''s view in schema syncguard_invariants.';
    END IF;
    IF severity NOT IN ('critical', 'error', 'warning', 'info') THEN
        RAISE EXCEPTION USING ERRCODE = '22023',
            MESSAGE = format('invariant %L: unknown severity %L', name, severity),
            HINT = 'Use critical, error, warning or info.';
    END IF;
    IF grace < interval '0' OR schedule < interval '1 second'
       OR statement_timeout NOT BETWEEN interval '1 millisecond' AND interval '24 hours' THEN
        RAISE EXCEPTION USING ERRCODE = '22023',
            MESSAGE = format('invariant %L: grace %s, schedule %s or statement_timeout %s out of range',
                             name, grace, schedule, statement_timeout),
            HINT = 'grace must not be negative, schedule at least 1 second, statement_timeout between 1 ms and 24 hours.';
    END IF;
    IF NOT has_schema_privilege('syncguard_invariants', 'CREATE') THEN
        RAISE EXCEPTION USING ERRCODE = '42501',
            MESSAGE = format('permission denied to define invariant %L: no CREATE on schema syncguard_invariants', name),
            HINT = 'A superuser lets a role define invariants with GRANT CREATE ON SCHEMA syncguard_invariants TO role.';
    END IF;

    -- Always the caller's own invariant of that name (names are per owner).
    -- A redefinition keeps its view; a new one takes the plain name unless
    -- another role's view holds it (the registry hides other roles' rows,
    -- the catalog does not), then name@owner.
    SELECT i.view_name INTO rel FROM syncguard.invariants i
     WHERE i.name = define_invariant.name AND i.owner_role = current_user;
    IF NOT FOUND THEN
        rel := name;
        IF EXISTS (SELECT FROM pg_class c
                    WHERE c.relnamespace = 'syncguard_invariants'::regnamespace
                      AND c.relname = define_invariant.name AND c.relowner <> me) THEN
            rel := name || '@' || current_user;
            IF octet_length(rel) > 63 THEN
                RAISE EXCEPTION USING ERRCODE = '42622',
                    MESSAGE = format('invariant %L: its view name %s would be %s bytes long, over 63',
                                     name, quote_ident(rel), octet_length(rel)),
                    HINT = 'Another role''s invariant has this name, so the view is named <name>@<your role>, which must fit in 63 bytes; choose a shorter name.';
            END IF;
        END IF;
    END IF;
    qualified := format('syncguard_invariants.%I', rel);
    SELECT c.relowner INTO view_owner
      FROM pg_class c
     WHERE c.relnamespace = 'syncguard_invariants'::regnamespace AND c.relname = rel;
    IF FOUND THEN
        IF view_owner <> me THEN
            RAISE EXCEPTION USING ERRCODE = '42501',
                MESSAGE = format('invariant %L: its view %s belongs to role %s', name, qualified, view_owner::regrole),
                HINT = 'Choose another name.';
        END IF;
        EXECUTE format('DROP VIEW %s', qualified);
    END IF;

    stmt := syncguard.invariant_query_text(query);
    -- Citus (docs/citus.md): the view stays on the coordinator, where the
    -- checks run; Citus would make a view over distributed tables on every
    -- worker too, where the caller may have no CREATE on the schema.
    IF citus_ddl IS NOT NULL THEN
        PERFORM set_config('citus.enable_ddl_propagation', 'off', true);
    END IF;
    -- First the query alone, to check its columns; then with the grace
    -- period, written so that the planner pushes `since < now() - grace`
    -- into the query (an index on the column behind since serves it). Both
    -- under the caller's search_path, for the names in the query.
    BEGIN
        PERFORM set_config('search_path', define_invariant.search_path, true);
        EXECUTE format(E'CREATE VIEW %s AS SELECT * FROM (\n%s\n) AS violation', qualified, stmt);
        PERFORM set_config('search_path', 'pg_catalog, pg_temp', true);
    EXCEPTION WHEN others THEN
        GET STACKED DIAGNOSTICS st = RETURNED_SQLSTATE, msg = MESSAGE_TEXT;
        RAISE EXCEPTION USING ERRCODE = st,
            MESSAGE = format('invariant %L: invalid query: %s', name, msg),
            HINT = 'The query must be one SELECT returning the violating rows, with columns entity and since (timestamptz).';
    END;
    IF NOT EXISTS (SELECT 1 FROM pg_attribute a
                    WHERE a.attrelid = qualified::regclass AND a.attname = 'entity' AND a.attnum > 0) THEN
        RAISE EXCEPTION USING ERRCODE = '42703',
            MESSAGE = format('invariant %L: the query returns no column named entity', name),
            HINT = 'Return the violating record''s identity as entity, e.g. SELECT id AS entity, ....';
    END IF;
    SELECT a.atttypid::regtype INTO since_type
      FROM pg_attribute a
     WHERE a.attrelid = qualified::regclass AND a.attname = 'since' AND a.attnum > 0;
    IF NOT FOUND THEN
        RAISE EXCEPTION USING ERRCODE = '42703',
            MESSAGE = format('invariant %L: the query returns no column named since', name),
            HINT = 'Return when the record became inconsistent as since (timestamptz), e.g. cancelled_at AS since.';
    END IF;
    IF since_type <> 'timestamptz'::regtype THEN
        RAISE EXCEPTION USING ERRCODE = '42804',
            MESSAGE = format('invariant %L: column since is %s, not timestamp with time zone', name, since_type),
            HINT = 'Cast it in the query (since::timestamptz); an index then needs the same expression.';
    END IF;
    PERFORM set_config('search_path', define_invariant.search_path, true);
    EXECUTE format(E'CREATE OR REPLACE VIEW %s AS SELECT * FROM (\n%s\n) AS violation\n'
                   ' WHERE violation.since OPERATOR(pg_catalog.<) (pg_catalog.now() OPERATOR(pg_catalog.-) %L::pg_catalog.interval)',
                   qualified, stmt, grace);
    PERFORM set_config('search_path', 'pg_catalog, pg_temp', true);
    EXECUTE format('COMMENT ON VIEW %s IS %L', qualified,
                   coalesce(description, 'violations of invariant ' || name) || ' (syncguard invariant)');
    IF citus_ddl IS NOT NULL THEN
        PERFORM set_config('citus.enable_ddl_propagation', citus_ddl, true);
    END IF;

    INSERT INTO syncguard.invariants AS i
           (name, owner_role, query, grace, severity, remediation, description, schedule,
            statement_timeout, enabled, view_name)
    VALUES (define_invariant.name, current_user, stmt, define_invariant.grace, define_invariant.severity,
            define_invariant.remediation, define_invariant.description, define_invariant.schedule,
            define_invariant.statement_timeout, define_invariant.enabled, rel)
    ON CONFLICT ON CONSTRAINT invariants_pkey DO UPDATE
       SET query = excluded.query, grace = excluded.grace, severity = excluded.severity,
           remediation = excluded.remediation, description = excluded.description,
           schedule = excluded.schedule, statement_timeout = excluded.statement_timeout,
           enabled = excluded.enabled, updated_at = now();
    RETURN qualified::regclass;
END
$$;
CREATE OR REPLACE FUNCTION syncguard.drop_invariant(name text, keep_history boolean DEFAULT true)
RETURNS boolean
LANGUAGE plpgsql VOLATILE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    owner text;
    rel text;
BEGIN
    IF name IS NULL OR keep_history IS NULL THEN
        RAISE EXCEPTION USING ERRCODE = '22004',
            MESSAGE = 'drop_invariant: name and keep_history must not be NULL',
            HINT = 'Pass the invariant''s name.';
    END IF;
    owner := syncguard._name_owner(ARRAY(
        SELECT i.owner_role FROM syncguard.invariants i WHERE i.name = drop_invariant.name), name, 'invariant');
    -- The row lock orders it with a check or redefinition; no advisory
    -- lock, which any role could take first.
    SELECT i.view_name INTO rel FROM syncguard.invariants i
     WHERE i.name = drop_invariant.name AND i.owner_role = owner FOR UPDATE;
    IF NOT FOUND OR syncguard._delete_visible('syncguard.invariants', ARRAY[
           jsonb_build_object('name', name, 'owner_role', owner)]) = 0 THEN
        RETURN false;
    END IF;
    EXECUTE format('DROP VIEW IF EXISTS syncguard_invariants.%I', rel);
    IF keep_history THEN
        UPDATE syncguard.violations v SET resolved_at = now()
         WHERE v.invariant = drop_invariant.name AND v.owner_role = owner AND v.resolved_at IS NULL;
    ELSE
        PERFORM syncguard._delete_visible('syncguard.violations', ARRAY(
            SELECT jsonb_build_object('id', v.id) FROM syncguard.violations v
             WHERE v.invariant = drop_invariant.name AND v.owner_role = owner));
        PERFORM syncguard._delete_visible('syncguard.invariant_runs', ARRAY(
            SELECT jsonb_build_object('id', r.id) FROM syncguard.invariant_runs r
             WHERE r.invariant = drop_invariant.name AND r.owner_role = owner));
    END IF;
    RETURN true;
END
$$;
CREATE OR REPLACE FUNCTION syncguard.check_invariants(name text DEFAULT NULL)
RETURNS TABLE (invariant text, status text, violations integer, new_episodes integer,
               resolved integer, duration interval, error text)
LANGUAGE plpgsql VOLATILE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    n text;
    o text;
    owner text;
BEGIN
    IF name IS NOT NULL THEN
        owner := syncguard._name_owner(ARRAY(
            SELECT i.owner_role FROM syncguard.invariants i WHERE i.name = check_invariants.name), name, 'invariant');
        IF owner IS NULL THEN
            RAISE EXCEPTION USING ERRCODE = '42704',
                MESSAGE = format('invariant %L does not exist', name),
                HINT = 'syncguard.audit() lists the invariants you can see.';
        END IF;
    END IF;
    FOR n, o IN SELECT i.name, i.owner_role FROM syncguard.invariants i
                 WHERE (i.name = check_invariants.name AND i.owner_role = owner)
                    OR (check_invariants.name IS NULL AND i.enabled)
                 ORDER BY i.name, i.owner_role LOOP
        RETURN QUERY SELECT * FROM syncguard.run_invariant_check(n, o) r WHERE r.invariant IS NOT NULL;
    END LOOP;
END
$$;
DROP FUNCTION syncguard.due_invariants();
CREATE FUNCTION syncguard.due_invariants()
RETURNS TABLE (name text, owner_role text)
LANGUAGE sql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
    SELECT i.name, i.owner_role FROM syncguard.invariants i
     WHERE i.enabled AND (i.last_run_at IS NULL OR i.last_run_at + i.schedule <= now())
     ORDER BY i.last_run_at NULLS FIRST, i.name, i.owner_role
$$;
GRANT EXECUTE ON FUNCTION syncguard.due_invariants() TO PUBLIC;
COMMENT ON FUNCTION syncguard.due_invariants() IS
    'enabled invariants whose schedule says they are due, by name and owner';
CREATE OR REPLACE FUNCTION syncguard.check_due_invariants()
RETURNS TABLE (invariant text, status text, violations integer, new_episodes integer,
               resolved integer, duration interval, error text)
LANGUAGE sql VOLATILE
SET search_path = pg_catalog, pg_temp
AS $$
    SELECT r.* FROM syncguard.due_invariants() AS d,
                    LATERAL syncguard.run_invariant_check(d.name, d.owner_role) AS r
     WHERE r.invariant IS NOT NULL
$$;
COMMENT ON FUNCTION syncguard.define_invariant(text, text, interval, text, text, text, interval, interval, boolean, text) IS
    'define or replace the caller''s invariant of that name: a SELECT returning violating rows (entity, since), and its view';

-- Queue: an expired lease is a failed attempt; '' is 22023, NULL 22004.
CREATE OR REPLACE FUNCTION syncguard.backoff_delay(
    attempt integer,
    base interval DEFAULT '2 seconds',
    cap interval DEFAULT '10 minutes',
    jitter double precision DEFAULT 0.2
) RETURNS interval
LANGUAGE plpgsql VOLATILE STRICT PARALLEL RESTRICTED
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    base_s double precision := extract(epoch FROM base);
    cap_s  double precision := extract(epoch FROM cap);
    d      double precision;
BEGIN
    IF attempt < 1 THEN
        RAISE EXCEPTION USING ERRCODE = '22023',
            MESSAGE = format('backoff attempt must be at least 1, got %s', attempt),
            HINT = 'Pass the number of the attempt that failed (the first is 1).';
    END IF;
    IF base_s < 0 OR cap_s < 0 THEN
        RAISE EXCEPTION USING ERRCODE = '22023',
            MESSAGE = format('backoff base and cap must not be negative, got base %s and cap %s', base, cap),
            HINT = 'Pass intervals such as ''2 seconds'' and ''10 minutes''.';
    END IF;
    IF jitter < 0 OR jitter > 1 OR jitter = 'NaN' THEN
        RAISE EXCEPTION USING ERRCODE = '22023',
            MESSAGE = format('backoff jitter must be between 0 and 1, got %s', jitter),
            HINT = 'jitter is a fraction: 0.2 spreads the delay by up to 20% either way.';
    END IF;
    -- In seconds as float8: 2^(attempt-1) overflows no interval this way.
    d := least(cap_s, base_s * power(2::double precision, least(attempt - 1, 1000)));
    IF jitter > 0 THEN
        d := d * (1 + jitter * (2 * random() - 1));
    END IF;
    -- At most 100 years: a huge cap would overflow the interval.
    RETURN make_interval(secs => least(d, 3155760000));
END
$$;
CREATE OR REPLACE FUNCTION syncguard.enqueue(queue text, payload jsonb, dedupe_key text DEFAULT NULL,
                                  delay interval DEFAULT '0')
RETURNS bigint
LANGUAGE plpgsql VOLATILE
SET search_path = pg_catalog, pg_temp
SET enable_seqscan = off
SET enable_bitmapscan = off
AS $$
#variable_conflict use_column
DECLARE
    t  timestamptz := clock_timestamp();
    id bigint;
BEGIN
    IF queue IS NULL OR payload IS NULL OR delay IS NULL THEN
        RAISE EXCEPTION USING ERRCODE = '22004',
            MESSAGE = 'enqueue: queue, payload and delay must not be NULL',
            HINT = 'Pass ''{}'' as the payload of a job that needs none.';
    END IF;
    IF queue = '' THEN
        RAISE EXCEPTION USING ERRCODE = '22023', MESSAGE = 'enqueue: queue must be a non-empty name';
    END IF;
    IF delay < interval '0' OR delay > interval '1 year' THEN
        RAISE EXCEPTION USING ERRCODE = '22023',
            MESSAGE = format('enqueue: delay must be between 0 and 1 year, got %s', delay);
    END IF;
    IF dedupe_key IS NULL THEN
        INSERT INTO syncguard.queue_jobs AS j (queue, payload, visible_at, enqueued_at)
        VALUES (enqueue.queue, enqueue.payload, t + delay, t)
        RETURNING j.job_id INTO id;
        RETURN id;
    END IF;
    -- The live job holding the key may be acked between the INSERT and the
    -- SELECT; then the key is free and the next round inserts.
    FOR round IN 1..3 LOOP
        INSERT INTO syncguard.queue_jobs AS j (queue, payload, dedupe_key, visible_at, enqueued_at)
        VALUES (enqueue.queue, enqueue.payload, enqueue.dedupe_key, t + delay, t)
        ON CONFLICT (queue, owner_role, dedupe_key) WHERE state <> 'dead' AND dedupe_key IS NOT NULL DO NOTHING
        RETURNING j.job_id INTO id;
        IF id IS NOT NULL THEN
            RETURN id;
        END IF;
        SELECT j.job_id INTO id FROM syncguard.queue_jobs AS j
         WHERE j.queue = enqueue.queue AND j.owner_role = current_user
           AND j.dedupe_key = enqueue.dedupe_key AND j.state <> 'dead';
        IF id IS NOT NULL THEN
            RETURN id;
        END IF;
    END LOOP;
    RAISE EXCEPTION USING ERRCODE = '40001',
        MESSAGE = format('enqueue: the live job holding dedupe key %L of queue %L kept changing', dedupe_key, queue),
        HINT = 'Try again.';
END
$$;
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
         WHERE j.job_id = id AND j.queue = $1 AND j.state = 'ready'
        RETURNING j.job_id, j.payload, j.attempts, j.dedupe_key, j.enqueued_at, j.last_error;
        IF NOT FOUND THEN
            -- Still leased past its visibility: the consumer died or hung.
            PERFORM syncguard.queue_lease_expired(id, $1);
        END IF;
    END LOOP;
END
$$;
CREATE FUNCTION syncguard.queue_lease_expired(job_id bigint, queue text)
RETURNS void
LANGUAGE plpgsql VOLATILE
SET search_path = pg_catalog, pg_temp
SET enable_seqscan = off
SET enable_bitmapscan = off
AS $$
DECLARE
    attempts integer;
BEGIN
    SELECT x.attempts INTO attempts FROM syncguard.queue_jobs AS x
     WHERE x.job_id = queue_lease_expired.job_id AND x.queue = queue_lease_expired.queue
       AND x.state = 'leased' AND x.visible_at <= clock_timestamp()
       FOR UPDATE;
    IF FOUND THEN
        -- The consumer died or hung: as if it had nacked the attempt.
        PERFORM syncguard.nack(job_id, format('lease of attempt %s expired without ack or nack', attempts),
                               true, attempts);
    END IF;
END
$$;
COMMENT ON FUNCTION syncguard.queue_lease_expired(bigint, text) IS
    'internal: a job whose lease ran out counts as a failed attempt (backoff, or dead)';
CREATE OR REPLACE FUNCTION syncguard.queue_configure(
    queue text,
    max_attempts integer DEFAULT NULL,
    base interval DEFAULT NULL,
    cap interval DEFAULT NULL,
    jitter double precision DEFAULT NULL,
    max_job_age interval DEFAULT NULL
) RETURNS syncguard.queues
LANGUAGE plpgsql VOLATILE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    q     syncguard.queues;
    owner text;
BEGIN
    IF queue IS NULL THEN
        RAISE EXCEPTION USING ERRCODE = '22004', MESSAGE = 'queue_configure: queue must not be NULL';
    END IF;
    IF queue = '' THEN
        RAISE EXCEPTION USING ERRCODE = '22023', MESSAGE = 'queue_configure: queue must be a non-empty name';
    END IF;
    -- The owner may be a role whose jobs the caller sees, with no settings yet.
    owner := coalesce(syncguard.queue_owner(queue_configure.queue), current_user);
    INSERT INTO syncguard.queues AS x (queue, owner_role) VALUES (queue_configure.queue, owner)
    ON CONFLICT ON CONSTRAINT queues_pkey DO NOTHING;
    UPDATE syncguard.queues AS x
       SET max_attempts = coalesce(queue_configure.max_attempts, x.max_attempts),
           base         = coalesce(queue_configure.base, x.base),
           cap          = coalesce(queue_configure.cap, x.cap),
           jitter       = coalesce(queue_configure.jitter, x.jitter),
           max_job_age  = coalesce(queue_configure.max_job_age, x.max_job_age)
     WHERE x.queue = queue_configure.queue AND x.owner_role = owner
    RETURNING * INTO q;
    IF NOT FOUND THEN
        RAISE EXCEPTION USING ERRCODE = '40001',
            MESSAGE = format('queue_configure: queue %L was dropped meanwhile', queue),
            HINT = 'Try again.';
    END IF;
    RETURN q;
EXCEPTION WHEN check_violation THEN
    RAISE EXCEPTION USING ERRCODE = '22023',
        MESSAGE = format('queue_configure: invalid setting for queue %L: %s', queue, SQLERRM),
        HINT = 'max_attempts at least 1, base and cap not negative, jitter between 0 and 1, max_job_age positive.';
END
$$;

-- Sync: a run that reported no part does not advance; NULL source is 22004.
CREATE OR REPLACE FUNCTION syncguard.sync_configure(
    source text,
    overlap interval DEFAULT NULL,
    run_timeout interval DEFAULT NULL,
    health_window interval DEFAULT NULL,
    max_error_rate double precision DEFAULT NULL,
    max_avg_latency interval DEFAULT NULL,
    max_silence interval DEFAULT NULL
) RETURNS syncguard.sync_sources
LANGUAGE plpgsql VOLATILE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    s     syncguard.sync_sources;
    owner text;
BEGIN
    IF source IS NULL THEN
        RAISE EXCEPTION USING ERRCODE = '22004', MESSAGE = 'sync_configure: source must not be NULL';
    END IF;
    IF source = '' THEN
        RAISE EXCEPTION USING ERRCODE = '22023',
            MESSAGE = 'sync_configure: source must be a non-empty name';
    END IF;
    owner := coalesce(syncguard.sync_source_owner(sync_configure.source), current_user);
    INSERT INTO syncguard.sync_sources AS x (source, owner_role) VALUES (sync_configure.source, owner)
    ON CONFLICT ON CONSTRAINT sync_sources_pkey DO NOTHING;
    UPDATE syncguard.sync_sources AS x
       SET overlap         = coalesce(sync_configure.overlap, x.overlap),
           run_timeout     = coalesce(sync_configure.run_timeout, x.run_timeout),
           health_window   = coalesce(sync_configure.health_window, x.health_window),
           max_error_rate  = coalesce(sync_configure.max_error_rate, x.max_error_rate),
           max_avg_latency = coalesce(sync_configure.max_avg_latency, x.max_avg_latency),
           max_silence     = coalesce(sync_configure.max_silence, x.max_silence)
     WHERE x.source = sync_configure.source AND x.owner_role = owner
    RETURNING * INTO s;
    IF NOT FOUND THEN
        RAISE EXCEPTION USING ERRCODE = '40001',
            MESSAGE = format('sync_configure: sync source %L was dropped meanwhile', source),
            HINT = 'Try again.';
    END IF;
    RETURN s;
EXCEPTION WHEN check_violation THEN
    RAISE EXCEPTION USING ERRCODE = '22023',
        MESSAGE = format('sync_configure: invalid setting for source %L: %s', source, SQLERRM),
        HINT = 'Intervals must be positive (overlap may be 0) and max_error_rate between 0 and 1.';
END
$$;
CREATE OR REPLACE FUNCTION syncguard.sync_finish(run_id bigint)
RETURNS boolean
LANGUAGE plpgsql VOLATILE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    t       timestamptz := clock_timestamp();
    r       syncguard.sync_runs;
    failed  text;
    missing text[];
BEGIN
    r := syncguard.sync_locked_run(run_id, 'sync_finish');
    IF r.status <> 'running' THEN
        RETURN r.advanced;
    END IF;

    SELECT string_agg(format('%s: %s', p.part, coalesce(p.error, 'failed')), '; ' ORDER BY p.part)
      INTO failed
      FROM syncguard.sync_parts AS p
     WHERE p.source = r.source AND p.run_id = r.run_id AND NOT p.ok;
    SELECT array_agg(d ORDER BY d) INTO missing
      FROM unnest(r.parts) AS d
     WHERE NOT EXISTS (SELECT FROM syncguard.sync_parts AS p
                        WHERE p.source = r.source AND p.run_id = r.run_id AND p.part = d);

    -- A run that reported nothing proves nothing: a job that failed before
    -- its first part but calls sync_finish in a `finally` must not skip data.
    IF NOT EXISTS (SELECT FROM syncguard.sync_parts AS p
                    WHERE p.source = r.source AND p.run_id = r.run_id) THEN
        failed := 'no part was reported';
    END IF;

    IF failed IS NOT NULL OR missing IS NOT NULL THEN
        UPDATE syncguard.sync_runs AS x
           SET status = 'failed', finished_at = t,
               error = concat_ws('; ', failed,
                                 'never reported: ' || array_to_string(missing, ', '))
         WHERE x.source = r.source AND x.run_id = r.run_id;
        RETURN false;
    END IF;

    UPDATE syncguard.sync_sources AS s
       SET watermark = greatest(s.watermark, r.started_at), last_success_at = t
     WHERE s.source = r.source AND s.owner_role = r.owner_role;
    UPDATE syncguard.sync_runs AS x
       SET status = 'succeeded', finished_at = t, advanced = true
     WHERE x.source = r.source AND x.run_id = r.run_id;
    RETURN true;
END
$$;

-- Protection: partitions, inheritance children, INSERTs of new rows.
CREATE FUNCTION syncguard.protect_partition_check(target regclass, qualified text) RETURNS void
LANGUAGE plpgsql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    other text;
BEGIN
    SELECT format('%I.%I', n.nspname, c.relname) INTO other
      FROM pg_trigger t JOIN pg_class c ON c.oid = t.tgrelid
      JOIN pg_namespace n ON n.oid = c.relnamespace
     WHERE t.tgname = 'syncguard_protect' AND t.tgrelid = target AND t.tgparentid <> 0;
    IF FOUND THEN
        SELECT format('%I.%I', n.nspname, c.relname) INTO other
          FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
         WHERE c.oid = pg_partition_root(target);
        RAISE EXCEPTION USING ERRCODE = '55000',
            MESSAGE = format('%s is a partition of %s and protected through it', qualified, other),
            HINT = format('Change the protection of %s (protect or unprotect it), or detach the partition first.', other);
    END IF;
    SELECT format('%I.%I', n.nspname, c.relname) INTO other
      FROM pg_partition_tree(target) p JOIN pg_trigger t ON t.tgrelid = p.relid
      JOIN pg_class c ON c.oid = p.relid JOIN pg_namespace n ON n.oid = c.relnamespace
     WHERE p.relid <> target AND t.tgname = 'syncguard_protect' AND t.tgparentid = 0
     LIMIT 1;
    IF FOUND THEN
        RAISE EXCEPTION USING ERRCODE = '55000',
            MESSAGE = format('partition %s of %s has a protection of its own', other, qualified),
            HINT = format('Unprotect %s first; protecting %s then protects every partition.', other, qualified);
    END IF;
END
$$;
COMMENT ON FUNCTION syncguard.protect_partition_check(regclass, text) IS
    'internal: refuses protect/unprotect of a partition protected through its parent, and of a parent whose partition has its own protection';
CREATE FUNCTION syncguard.inheritance_children(target regclass) RETURNS SETOF regclass
LANGUAGE sql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
    WITH RECURSIVE kids(relid) AS (
        SELECT i.inhrelid FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid
         WHERE i.inhparent = target AND NOT c.relispartition
        UNION
        SELECT i.inhrelid FROM kids k JOIN pg_inherits i ON i.inhparent = k.relid
    )
    SELECT relid::regclass FROM kids
$$;
COMMENT ON FUNCTION syncguard.inheritance_children(regclass) IS
    'internal: the inheritance children of a table (not partitions), at every level';
CREATE OR REPLACE FUNCTION syncguard.protect(target regclass, columns text[] DEFAULT NULL, policy jsonb DEFAULT NULL)
RETURNS void
LANGUAGE plpgsql VOLATILE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    qualified text := syncguard.require_owner(target);
    config text;
    events text;
    child regclass;
BEGIN
    PERFORM syncguard.protect_partition_check(target, qualified);
    -- Serializes protect/unprotect of one table and keeps writers out while
    -- the trigger is replaced.
    EXECUTE format('LOCK TABLE %s IN SHARE ROW EXCLUSIVE MODE', target);
    config := syncguard.protect_config(target, columns, policy);
    -- Rows of inheritance children are updated through the parent but keep
    -- their own triggers: each child gets the parent's protection, under
    -- its own name. Children created later show in protected_tables.
    -- INSERTs too when the policy has something to do for a new row: check
    -- a last_write_wins timestamp's clock skew, stamp freshness companions.
    events := CASE WHEN config::jsonb -> 'policy' ?| ARRAY['last_write_wins', 'freshness']
                   THEN 'INSERT OR UPDATE' ELSE 'UPDATE' END;
    FOR child IN SELECT target UNION ALL SELECT syncguard.inheritance_children(target) LOOP
        IF EXISTS (SELECT 1 FROM pg_trigger WHERE tgrelid = child AND tgname = 'syncguard_protect') THEN
            EXECUTE format('DROP TRIGGER syncguard_protect ON %s', child);
        END IF;
        EXECUTE format('CREATE TRIGGER syncguard_protect BEFORE %s ON %s FOR EACH ROW '
                       'EXECUTE FUNCTION syncguard.protect_trigger(%L, %L)',
                       events, child, syncguard.require_owner(child), config);
    END LOOP;
END
$$;
COMMENT ON FUNCTION syncguard.protect(regclass, text[], jsonb) IS 'install (or replace) the trigger that merges every UPDATE of target (and of its inheritance children) into the stored row';
CREATE OR REPLACE FUNCTION syncguard.unprotect(target regclass) RETURNS boolean
LANGUAGE plpgsql VOLATILE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    qualified text := syncguard.require_owner(target);
    child regclass;
    was boolean;
BEGIN
    PERFORM syncguard.protect_partition_check(target, qualified);
    was := EXISTS (SELECT 1 FROM pg_trigger WHERE tgrelid = target AND tgname = 'syncguard_protect');
    FOR child IN SELECT target UNION ALL SELECT syncguard.inheritance_children(target) LOOP
        PERFORM syncguard.require_owner(child);
        IF EXISTS (SELECT 1 FROM pg_trigger WHERE tgrelid = child AND tgname = 'syncguard_protect') THEN
            EXECUTE format('DROP TRIGGER syncguard_protect ON %s', child);
        END IF;
    END LOOP;
    RETURN was;
END
$$;
CREATE OR REPLACE VIEW syncguard.protected_tables AS
SELECT t.tgrelid::regclass AS table_name,
       CASE WHEN jsonb_typeof(c.config -> 'columns') = 'array'
            THEN ARRAY(SELECT jsonb_array_elements_text(c.config -> 'columns')) END AS columns,
       c.config -> 'policy' AS policy,
       -- Inheritance children created after protect(): not protected until
       -- protect runs again.
       ARRAY(SELECT k FROM syncguard.inheritance_children(t.tgrelid) AS k
              WHERE NOT EXISTS (SELECT FROM pg_catalog.pg_trigger kt
                                 WHERE kt.tgrelid = k AND kt.tgname = 'syncguard_protect'))
           AS unprotected_children
  FROM pg_catalog.pg_trigger t,
       LATERAL (SELECT pg_catalog.position(t.tgargs, '\x00'::bytea) AS sep) a,
       LATERAL (SELECT pg_catalog.convert_from(
                    pg_catalog.substring(t.tgargs, a.sep + 1, pg_catalog.length(t.tgargs) - a.sep - 1),
                    'UTF8')::jsonb AS config) c
 WHERE t.tgname = 'syncguard_protect'
   AND t.tgfoid = 'syncguard.protect_trigger()'::regprocedure;
COMMENT ON VIEW syncguard.protected_tables IS 'tables protected by syncguard.protect, with their columns, write policy and unprotected inheritance children';
-- Protections with last_write_wins or freshness fire on INSERT too (0.1.0
-- installed them for UPDATE only); partitions follow their parent.
DO $upgrade$
DECLARE
    t record;
    sep integer;
BEGIN
    FOR t IN SELECT tgrelid::regclass AS rel, tgargs FROM pg_catalog.pg_trigger
              WHERE tgname = 'syncguard_protect' AND tgparentid = 0
                AND tgfoid = 'syncguard.protect_trigger()'::pg_catalog.regprocedure LOOP
        sep := pg_catalog.position(t.tgargs, '\x00'::bytea);
        IF pg_catalog.convert_from(pg_catalog.substring(t.tgargs, sep + 1, pg_catalog.length(t.tgargs) - sep - 1), 'UTF8')::jsonb
               -> 'policy' ?| ARRAY['last_write_wins', 'freshness'] THEN
            EXECUTE pg_catalog.format('DROP TRIGGER syncguard_protect ON %s', t.rel);
            EXECUTE pg_catalog.format('CREATE TRIGGER syncguard_protect BEFORE INSERT OR UPDATE ON %s FOR EACH ROW '
                                      'EXECUTE FUNCTION syncguard.protect_trigger(%L, %L)', t.rel,
                                      pg_catalog.convert_from(pg_catalog.substring(t.tgargs, 1, sep - 1), 'UTF8'),
                                      pg_catalog.convert_from(pg_catalog.substring(t.tgargs, sep + 1, pg_catalog.length(t.tgargs) - sep - 1), 'UTF8'));
        END IF;
    END LOOP;
END
$upgrade$;

-- Shared tables without table-level UPDATE or DELETE for PUBLIC: either let a
-- role LOCK a table against every other role. Functions delete through
-- _delete_visible (src/row_delete.rs).
CREATE FUNCTION syncguard."_delete_visible"("target" regclass, "keys" jsonb[]) RETURNS bigint
STRICT VOLATILE
LANGUAGE c AS 'MODULE_PATHNAME', 'delete_visible_wrapper';
REVOKE UPDATE, DELETE ON syncguard.idempotency_keys, syncguard.queues, syncguard.queue_jobs,
    syncguard.sync_sources, syncguard.sync_runs, syncguard.sync_parts, syncguard.invariants,
    syncguard.invariant_runs, syncguard.violations, syncguard.entity_events FROM PUBLIC;
GRANT UPDATE (fingerprint, status, response, last_error, attempts, lease_token, lease_expires_at,
              next_attempt_at, created_at, updated_at, expires_at) ON syncguard.idempotency_keys TO PUBLIC;
GRANT UPDATE (max_attempts, base, cap, jitter, max_job_age) ON syncguard.queues TO PUBLIC;
GRANT UPDATE (state, attempts, visible_at, last_error, dead_at) ON syncguard.queue_jobs TO PUBLIC;
GRANT UPDATE (overlap, run_timeout, health_window, max_error_rate, max_avg_latency, max_silence,
              watermark, last_success_at) ON syncguard.sync_sources TO PUBLIC;
GRANT UPDATE (ok, error, records, latency, reports, reported_at) ON syncguard.sync_parts TO PUBLIC;
GRANT UPDATE (status, finished_at, advanced, error) ON syncguard.sync_runs TO PUBLIC;
GRANT UPDATE (query, grace, severity, remediation, description, schedule, statement_timeout, enabled,
              updated_at, last_run_at, last_status, last_error) ON syncguard.invariants TO PUBLIC;
GRANT INSERT (invariant, owner_role, entity, since, first_seen, last_seen, count, resolved_at),
      UPDATE (since, last_seen, count, resolved_at) ON syncguard.violations TO PUBLIC;
CREATE OR REPLACE FUNCTION syncguard.ack(job_id bigint, attempt integer DEFAULT NULL)
RETURNS void
LANGUAGE plpgsql VOLATILE
SET search_path = pg_catalog, pg_temp
SET enable_seqscan = off
SET enable_bitmapscan = off
AS $$
BEGIN
    IF syncguard._delete_visible('syncguard.queue_jobs', ARRAY(
           SELECT jsonb_build_object('job_id', j.job_id, 'queue', j.queue) FROM syncguard.queue_jobs AS j
            WHERE j.job_id = ack.job_id AND j.state = 'leased'
              AND (ack.attempt IS NULL OR j.attempts = ack.attempt)
              FOR UPDATE)) = 0 THEN
        PERFORM syncguard.queue_leased_job(job_id, attempt, 'ack');
    END IF;
END
$$;
CREATE OR REPLACE FUNCTION syncguard.purge_dead(queue text, older_than interval DEFAULT '0')
RETURNS bigint
LANGUAGE plpgsql VOLATILE
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    IF queue IS NULL OR older_than IS NULL THEN
        RAISE EXCEPTION USING ERRCODE = '22004', MESSAGE = 'purge_dead: queue and older_than must not be NULL';
    END IF;
    RETURN syncguard._delete_visible('syncguard.queue_jobs', ARRAY(
        SELECT jsonb_build_object('job_id', j.job_id, 'queue', j.queue) FROM syncguard.queue_jobs AS j
         WHERE j.queue = purge_dead.queue AND j.state = 'dead' AND j.dead_at <= clock_timestamp() - older_than
         FOR UPDATE));
END
$$;
CREATE OR REPLACE FUNCTION syncguard.housekeeping(
    max_batches integer DEFAULT 100,
    keep_runs interval DEFAULT '30 days'
) RETURNS TABLE (task text, affected bigint)
LANGUAGE plpgsql VOLATILE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    batch constant integer := 1000;
    n bigint;
    total bigint := 0;
BEGIN
    IF max_batches IS NULL OR max_batches < 1 OR keep_runs IS NULL OR keep_runs < interval '0' THEN
        RAISE EXCEPTION USING ERRCODE = '22023',
            MESSAGE = format('housekeeping: max_batches must be at least 1 and keep_runs not negative, got %s and %s',
                             coalesce(max_batches::text, 'NULL'), coalesce(keep_runs::text, 'NULL')),
            HINT = 'Call it without arguments for the defaults.';
    END IF;

    -- Expired idempotency keys, in batches of 1000 (as idem_prune advises).
    FOR i IN 1 .. max_batches LOOP
        n := syncguard.idem_prune(batch);
        total := total + n;
        EXIT WHEN n < batch;
    END LOOP;
    task := 'idempotency keys pruned'; affected := total;
    RETURN NEXT;

    task := 'stale write counters folded'; affected := syncguard.fold_stale_writes();
    RETURN NEXT;
    -- Sync runs past their timeout: abandoned, so health counts them as failed.
    task := 'sync runs abandoned'; affected := syncguard.sync_abandon_stale();
    RETURN NEXT;

    -- Runs older than keep_runs (the episodes stay: they are the history).
    task := 'invariant runs pruned';
    affected := syncguard._delete_visible('syncguard.invariant_runs', ARRAY(
        SELECT jsonb_build_object('id', o.id) FROM syncguard.invariant_runs o
         WHERE o.started_at < now() - keep_runs
         LIMIT max_batches * batch));
    RETURN NEXT;
END
$$;
CREATE FUNCTION syncguard.queue_drop(queue text)
RETURNS bigint
LANGUAGE plpgsql VOLATILE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    n     bigint;
    owner text;
BEGIN
    IF queue IS NULL THEN
        RAISE EXCEPTION USING ERRCODE = '22004', MESSAGE = 'queue_drop: queue must not be NULL';
    END IF;
    owner := syncguard.queue_owner(queue_drop.queue);
    n := syncguard._delete_visible('syncguard.queue_jobs', ARRAY(
        SELECT jsonb_build_object('job_id', j.job_id, 'queue', j.queue) FROM syncguard.queue_jobs AS j
         WHERE j.queue = queue_drop.queue AND j.owner_role = owner FOR UPDATE));
    PERFORM syncguard._delete_visible('syncguard.queues', ARRAY(
        SELECT jsonb_build_object('queue', q.queue, 'owner_role', q.owner_role) FROM syncguard.queues AS q
         WHERE q.queue = queue_drop.queue AND q.owner_role = owner));
    RETURN n;
END
$$;
GRANT EXECUTE ON FUNCTION syncguard.queue_drop(text) TO PUBLIC;
COMMENT ON FUNCTION syncguard.queue_drop(text) IS 'remove a queue: its jobs and its settings';
CREATE FUNCTION syncguard.sync_prune(older_than interval, source text DEFAULT NULL)
RETURNS bigint
LANGUAGE plpgsql VOLATILE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    owner text;
BEGIN
    IF older_than IS NULL THEN
        RAISE EXCEPTION USING ERRCODE = '22004', MESSAGE = 'sync_prune: older_than must not be NULL',
            HINT = 'Pass how old a finished run must be, e.g. interval ''90 days''.';
    END IF;
    IF source IS NOT NULL THEN
        owner := syncguard.sync_source_owner(sync_prune.source);
    END IF;
    RETURN syncguard._delete_visible('syncguard.sync_runs', ARRAY(
        SELECT jsonb_build_object('run_id', r.run_id, 'source', r.source) FROM syncguard.sync_runs AS r
         WHERE r.status <> 'running' AND r.finished_at < clock_timestamp() - older_than
           AND (sync_prune.source IS NULL OR (r.source = sync_prune.source AND r.owner_role = owner))
           FOR UPDATE));
END
$$;
CREATE FUNCTION syncguard.sync_drop(source text)
RETURNS boolean
LANGUAGE plpgsql VOLATILE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    owner text;
BEGIN
    IF source IS NULL THEN
        RAISE EXCEPTION USING ERRCODE = '22004', MESSAGE = 'sync_drop: source must not be NULL';
    END IF;
    owner := syncguard.sync_source_owner(sync_drop.source);
    RETURN syncguard._delete_visible('syncguard.sync_sources', ARRAY(
        SELECT jsonb_build_object('source', s.source, 'owner_role', s.owner_role) FROM syncguard.sync_sources AS s
         WHERE s.source = sync_drop.source AND s.owner_role = owner FOR UPDATE)) > 0;
END
$$;
GRANT EXECUTE ON FUNCTION syncguard.sync_prune(interval, text), syncguard.sync_drop(text) TO PUBLIC;
COMMENT ON FUNCTION syncguard.sync_prune(interval, text) IS
    'delete finished sync runs (and their parts) older than an interval; returns how many runs';
COMMENT ON FUNCTION syncguard.sync_drop(text) IS 'remove a sync source with its runs and parts';
CREATE FUNCTION syncguard.violations_prune(older_than interval, invariant text DEFAULT NULL)
RETURNS bigint
LANGUAGE plpgsql VOLATILE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    owner text;
BEGIN
    IF older_than IS NULL THEN
        RAISE EXCEPTION USING ERRCODE = '22004', MESSAGE = 'violations_prune: older_than must not be NULL',
            HINT = 'Pass how long ago an episode must have been resolved, e.g. interval ''1 year''.';
    END IF;
    IF invariant IS NOT NULL THEN
        owner := syncguard._name_owner(ARRAY(
            SELECT i.owner_role FROM syncguard.invariants i WHERE i.name = violations_prune.invariant
            UNION
            SELECT v.owner_role FROM syncguard.violations v WHERE v.invariant = violations_prune.invariant), invariant, 'invariant');
    END IF;
    RETURN syncguard._delete_visible('syncguard.violations', ARRAY(
        SELECT jsonb_build_object('id', v.id) FROM syncguard.violations v
         WHERE v.resolved_at < now() - older_than
           AND (violations_prune.invariant IS NULL
                OR (v.invariant = violations_prune.invariant AND v.owner_role = owner))
           FOR UPDATE));
END
$$;
GRANT EXECUTE ON FUNCTION syncguard.violations_prune(interval, text) TO PUBLIC;
COMMENT ON FUNCTION syncguard.violations_prune(interval, text) IS
    'delete episodes resolved more than an interval ago; returns how many';
CREATE FUNCTION syncguard.events_prune(older_than interval, entity text DEFAULT NULL)
RETURNS bigint
LANGUAGE plpgsql VOLATILE
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    IF older_than IS NULL THEN
        RAISE EXCEPTION USING ERRCODE = '22004', MESSAGE = 'events_prune: older_than must not be NULL',
            HINT = 'Pass how old an event must be, e.g. interval ''1 year''.';
    END IF;
    RETURN syncguard._delete_visible('syncguard.entity_events', ARRAY(
        SELECT jsonb_build_object('entity', e.entity, 'id', e.id) FROM syncguard.entity_events e
         WHERE e.at < now() - older_than
           AND (events_prune.entity IS NULL OR e.entity = events_prune.entity)));
END
$$;
GRANT EXECUTE ON FUNCTION syncguard.events_prune(interval, text) TO PUBLIC;
COMMENT ON FUNCTION syncguard.events_prune(interval, text) IS 'delete entity events older than an interval; returns how many';

-- Reconciliation (sql/install/reconcile.sql, docs/reconcile.md)
-- Reconciliation (docs/reconcile.md): every row and field in which a local
-- table differs from another table, typically a postgres_fdw foreign table
-- on the source system's server, without pulling that table across the
-- network when few rows differ.
--
-- The key space is cut into segments at key values taken from the local
-- table. For each segment both sides compute count(*) and the sum of a 64-bit
-- row hash in ONE grouped query per side; every expression in it is a
-- built-in IMMUTABLE function, so postgres_fdw sends the whole aggregate to
-- the remote server and only one row per segment comes back. Segments whose
-- (count, sum) differ are cut again, until a segment holds at most
-- `threshold` rows; only those rows are fetched from both sides and compared
-- field by field.
--
-- The row hash is built from each column type's own extended hash function
-- (its default hash operator class), which hashes the value, not its text:
-- 1.0 and 1.00, jsonb documents in any key order, a timestamptz in any time
-- zone hash alike, exactly when `=` calls them equal, so the checksums and
-- the final comparison agree and no session setting (TimeZone, DateStyle,
-- extra_float_digits, which postgres_fdw sets differently on the remote
-- session) enters the checksum.

-- The columns compared, key columns first, each once: name, type, whether
-- part of the key. Checks that every column exists on both sides with the
-- same type.
CREATE FUNCTION syncguard.reconcile_columns(
    local regclass, remote regclass, key_columns text[], columns text[]
) RETURNS TABLE(name text, typ regtype, is_key boolean)
LANGUAGE plpgsql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    keys text[] := key_columns;
    cols text[] := columns;
    all_cols text[];
    c text;
    lt regtype;
    rt regtype;
BEGIN
    IF local IS NULL OR remote IS NULL THEN
        RAISE EXCEPTION USING ERRCODE = '22004',
            MESSAGE = 'reconcile: local and remote must not be NULL',
            HINT = 'Pass the two tables, e.g. ''products''::regclass, ''supplier.products''::regclass.';
    END IF;
    IF keys IS NULL THEN
        SELECT array_agg(a.attname::text ORDER BY k.ord) INTO keys
          FROM pg_index i
          CROSS JOIN LATERAL unnest(i.indkey) WITH ORDINALITY AS k(attnum, ord)
          JOIN pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = k.attnum
         WHERE i.indrelid = local AND i.indisprimary;
        IF keys IS NULL THEN
            RAISE EXCEPTION USING ERRCODE = '42P10',
                MESSAGE = format('reconcile: %s has no primary key to match rows by', local),
                HINT = 'Pass key_columns: the columns that identify a row on both sides.';
        END IF;
    END IF;
    IF cardinality(keys) = 0 OR array_position(keys, NULL) IS NOT NULL
       OR cardinality(cols) = 0 OR array_position(cols, NULL) IS NOT NULL THEN
        RAISE EXCEPTION USING ERRCODE = '22023',
            MESSAGE = 'reconcile: key_columns and columns must not be empty or hold a NULL',
            HINT = 'Leave columns NULL to compare every column of the local table.';
    END IF;
    IF cols IS NULL THEN
        SELECT coalesce(array_agg(a.attname::text ORDER BY a.attnum), '{}') INTO cols
          FROM pg_attribute a
         WHERE a.attrelid = local AND a.attnum > 0 AND NOT a.attisdropped
           AND a.attname <> ALL (keys);
    END IF;
    all_cols := keys || cols;
    FOR i IN 1 .. cardinality(all_cols) LOOP
        c := all_cols[i];
        -- Each column once: a key column named in columns too is compared
        -- as part of the key.
        CONTINUE WHEN array_position(all_cols, c) < i;
        SELECT a.atttypid::regtype INTO lt FROM pg_attribute a
         WHERE a.attrelid = local AND a.attname = c AND a.attnum > 0 AND NOT a.attisdropped;
        IF NOT FOUND THEN
            RAISE EXCEPTION USING ERRCODE = '42703',
                MESSAGE = format('reconcile: column %I of %s does not exist', c, local),
                HINT = 'Column names are case-sensitive here: pass them as stored (\d shows them).';
        END IF;
        SELECT a.atttypid::regtype INTO rt FROM pg_attribute a
         WHERE a.attrelid = remote AND a.attname = c AND a.attnum > 0 AND NOT a.attisdropped;
        IF NOT FOUND THEN
            RAISE EXCEPTION USING ERRCODE = '42703',
                MESSAGE = format('reconcile: column %I of %s does not exist in %s', c, local, remote),
                HINT = 'Pass columns: the columns both tables have.';
        END IF;
        IF lt <> rt THEN
            RAISE EXCEPTION USING ERRCODE = '42804',
                MESSAGE = format('reconcile: column %I is %s in %s but %s in %s', c, lt, local, rt, remote),
                HINT = 'Declare the column with the same type on both sides (for a foreign table: ALTER FOREIGN TABLE … ALTER COLUMN … TYPE), or leave it out of columns.';
        END IF;
        name := c;
        typ := lt;
        is_key := i <= cardinality(keys);
        RETURN NEXT;
    END LOOP;
END
$$;

-- The 64-bit hash of column `col` (a quoted expression) of type `typ`, seeded
-- with `seed`, as SQL text; a NULL hashes to a constant of its own. Uses the
-- extended hash function of the type's default hash operator class where it
-- is a built-in function that hashes the value the same way on every server
-- (not enums: those hash their OID, which differs between databases);
-- timestamptz, date and boolean, whose hash functions take another type,
-- go through an immutable conversion. Other types hash their text through the
-- type's output function when it is immutable (still computed remotely), or
-- their cast to text (computed locally: the foreign table's rows are fetched).
CREATE FUNCTION syncguard.reconcile_hash(col text, typ regtype, seed integer)
RETURNS text
LANGUAGE plpgsql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    fn regproc;
    expr text;
    base oid;
    kind "char";
    output regproc;
BEGIN
    SELECT coalesce(nullif(t.typbasetype, 0), t.oid) INTO base FROM pg_type t WHERE t.oid = typ;
    SELECT t.typtype, t.typoutput INTO kind, output FROM pg_type t WHERE t.oid = base;
    expr := CASE base
        -- (its opclass's function takes timestamp; the array's hash calls it for
        -- timestamptz. Not timezone('UTC', …): postgres_fdw keeps a function
        -- with a text constant argument local.)
        WHEN 'timestamptz'::regtype THEN format('pg_catalog.hash_array_extended(ARRAY[%s], %s)', col, seed)
        WHEN 'date'::regtype THEN format('pg_catalog.timestamp_hash_extended(pg_catalog."timestamp"(%s), %s)', col, seed)
        WHEN 'bool'::regtype THEN format('pg_catalog.hashint4extended(pg_catalog.int4(%s), %s)', col, seed)
        END;
    IF expr IS NULL AND kind IN ('b', 'r', 'm') THEN
        SELECT p.amproc INTO fn
          FROM pg_opclass oc
          JOIN pg_amproc p ON p.amprocfamily = oc.opcfamily AND p.amprocnum = 2
                          AND p.amproclefttype = oc.opcintype AND p.amprocrighttype = oc.opcintype
         WHERE oc.opcmethod = (SELECT a.oid FROM pg_am a WHERE a.amname = 'hash')
           AND oc.opcdefault
           AND (oc.opcintype = base
                OR EXISTS (SELECT 1 FROM pg_cast pc WHERE pc.castsource = base AND pc.casttarget = oc.opcintype
                                                      AND pc.castmethod = 'b' AND pc.castcontext = 'i')
                -- arrays and ranges: the polymorphic hash walks the elements
                OR (oc.opcintype = 'anyarray'::regtype AND kind = 'b'
                    AND (SELECT t.typelem FROM pg_type t WHERE t.oid = base) <> 0
                    AND (SELECT e.typtype FROM pg_type e JOIN pg_type t ON t.typelem = e.oid WHERE t.oid = base) = 'b')
                OR (oc.opcintype = 'anyrange'::regtype AND kind = 'r'))
         ORDER BY oc.opcintype = base DESC
         LIMIT 1;
        IF fn IS NOT NULL AND fn::oid < 16384 THEN
            expr := format('pg_catalog.%I(%s, %s)', fn::text, col, seed);
        END IF;
    END IF;
    IF expr IS NULL THEN
        IF (SELECT p.provolatile FROM pg_proc p WHERE p.oid = output) = 'i' AND output::oid < 16384 THEN
            expr := format('pg_catalog.hashtextextended(pg_catalog.textin(pg_catalog.%I(%s)), %s)', output::text, col, seed);
        ELSE
            expr := format('pg_catalog.hashtextextended(%s::pg_catalog.text, %s)', col, seed);
        END IF;
    END IF;
    -- A NULL gets a constant of its own per column (so NULL and the text 'NULL' differ).
    -- (CASE, not COALESCE: postgres_fdw does not send a COALESCE to the remote.)
    RETURN format('CASE WHEN %s IS NULL THEN %s::pg_catalog.int8 ELSE %s END', col, -1000003 * (seed + 1), expr);
END
$$;

-- `key OP bound` for a (possibly composite) key, written as comparisons of
-- single columns (a < x OR (a = x AND b < y)), which postgres_fdw sends to
-- the remote server and an index on the key serves. op: '<' or '>='. A bound
-- may give fewer columns than the key: the rest count as lower than any
-- value (a bound [x] of key (a, b) lies before every row with a = x).
CREATE FUNCTION syncguard.reconcile_compare(cols text[], types regtype[], bound jsonb, op text)
RETURNS text
LANGUAGE plpgsql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    n integer := jsonb_array_length(bound);
    strict_op text := CASE op WHEN '<' THEN '<' ELSE '>' END;
    expr text;
BEGIN
    expr := format('%s OPERATOR(pg_catalog.%s) %L::%s', cols[n], op, bound->>(n - 1), types[n]);
    FOR i IN REVERSE n - 1 .. 1 LOOP
        expr := format('(%1$s OPERATOR(pg_catalog.%2$s) %3$L::%4$s OR (%1$s OPERATOR(pg_catalog.=) %3$L::%4$s AND %5$s))',
                       cols[i], strict_op, bound->>(i - 1), types[i], expr);
    END LOOP;
    RETURN expr;
END
$$;

-- How many of `vals` (sorted values of type typ, as text) are at or below
-- `col`, as SQL: width_bucket. Over a type of variable length width_bucket
-- searches linearly (a few µs per row for 2000 text values), so past 64
-- values it goes in two steps of about sqrt(n) values each: a coarse array
-- of every k-th value, then the k - 1 values after the one found.
CREATE FUNCTION syncguard.reconcile_bucket(col text, typ regtype, vals jsonb)
RETURNS text
LANGUAGE plpgsql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    n integer := jsonb_array_length(vals);
    k integer := ceil(sqrt(n));
BEGIN
    IF n <= 64 OR (SELECT t.typlen FROM pg_type t WHERE t.oid = typ) > 0 THEN
        RETURN format('pg_catalog.width_bucket(%s, ARRAY[%s]::%s[])', col,
                      (SELECT string_agg(format('%L', e.v), ', ' ORDER BY e.o)
                         FROM jsonb_array_elements_text(vals) WITH ORDINALITY AS e(v, o)),
                      typ);
    END IF;
    RETURN format('CASE %s%s END',
                  syncguard.reconcile_bucket(col, typ,
                      (SELECT jsonb_agg(e.v ORDER BY e.o) FROM jsonb_array_elements(vals) WITH ORDINALITY AS e(v, o)
                        WHERE e.o % k = 0)),
                  (SELECT string_agg(format(' WHEN %s THEN %s', j, CASE WHEN f.vals IS NULL THEN (j * k)::text
                                     ELSE format('%s + %s', j * k, syncguard.reconcile_bucket(col, typ, f.vals)) END), '' ORDER BY j)
                     FROM generate_series(0, n / k) AS j
                     CROSS JOIN LATERAL (SELECT jsonb_agg(e.v ORDER BY e.o) AS vals
                                           FROM jsonb_array_elements(vals) WITH ORDINALITY AS e(v, o)
                                          WHERE e.o > j * k AND e.o < (j + 1) * k) AS f));
END
$$;

-- The segment of a row: the number of bounds (sorted key values, possibly
-- shorter than the key, see reconcile_compare) at or below its key,
-- 0 … cardinality. width_bucket over the bounds' first column counts every
-- bound whose first column is at or below the row's; for a row whose first
-- column equals that of bounds with more columns, those count only where
-- the rest of the key is at or above theirs (the same count, recursively,
-- over the rest). Compact, so the remote's planner and JIT see a small
-- expression: one CASE arm per first-column value that holds several
-- segments, not one per bound.
CREATE FUNCTION syncguard.reconcile_segment(cols text[], types regtype[], bounds jsonb)
RETURNS text
LANGUAGE plpgsql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    expr text;
    adjust text;
BEGIN
    IF jsonb_array_length(bounds) = 0 THEN
        RETURN '0';
    END IF;
    expr := syncguard.reconcile_bucket(cols[1], types[1],
                                       (SELECT jsonb_agg(e.b -> 0 ORDER BY e.o)
                                          FROM jsonb_array_elements(bounds) WITH ORDINALITY AS e(b, o)));
    IF cardinality(cols) = 1 THEN
        RETURN expr;
    END IF;
    SELECT string_agg(format(' WHEN %s OPERATOR(pg_catalog.=) %L::%s THEN %s - %s',
                             cols[1], g.v, types[1],
                             syncguard.reconcile_segment(cols[2:], types[2:], g.rests),
                             jsonb_array_length(g.rests)), '' ORDER BY g.first)
      INTO adjust
      FROM (SELECT e.b ->> 0 AS v, min(e.o) AS first, jsonb_agg(e.b - 0 ORDER BY e.o) AS rests
              FROM jsonb_array_elements(bounds) WITH ORDINALITY AS e(b, o)
             WHERE jsonb_array_length(e.b) > 1
             GROUP BY e.b ->> 0) AS g;
    IF adjust IS NULL THEN
        RETURN expr;
    END IF;
    RETURN format('(%s + CASE%s ELSE 0 END)', expr, adjust);
END
$$;

-- The condition selecting the rows of a list of key ranges [lo, hi) (a NULL
-- bound is open), as SQL text.
CREATE FUNCTION syncguard.reconcile_ranges(cols text[], types regtype[], ranges jsonb)
RETURNS text
LANGUAGE sql STABLE
SET search_path = pg_catalog, pg_temp
BEGIN ATOMIC
    SELECT coalesce(string_agg(
               '(' || concat_ws(' AND ',
                   CASE WHEN jsonb_typeof(r->0) = 'array' THEN syncguard.reconcile_compare(cols, types, r->0, '>=') END,
                   CASE WHEN jsonb_typeof(r->1) = 'array' THEN syncguard.reconcile_compare(cols, types, r->1, '<') END,
                   'true') || ')',
               ' OR ' ORDER BY o), 'false')
      FROM jsonb_array_elements(ranges) WITH ORDINALITY AS e(r, o);
END;

-- The query comparing the rows of local and remote that `cond` selects
-- (key columns as t.<name>): the rows reconcile returns, in key order.
CREATE FUNCTION syncguard.reconcile_rows_query(
    local regclass, remote regclass, key_columns text[], columns text[], cond text
) RETURNS text
LANGUAGE plpgsql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    sel text;
    keyobj text;
    joinon text;
    rowdiff text;
    lrow text;
    rrow text;
    k1 text;
    order_by text;
BEGIN
    SELECT string_agg(format('t.%I', c.name), ', '),
           string_agg(format('%L, COALESCE(l.%I, r.%I)', c.name, c.name, c.name), ', ') FILTER (WHERE c.is_key),
           string_agg(format('l.%1$I OPERATOR(pg_catalog.=) r.%1$I', c.name), ' AND ') FILTER (WHERE c.is_key),
           string_agg(format('COALESCE(l.%1$I, r.%1$I)', c.name), ', ') FILTER (WHERE c.is_key),
           coalesce(string_agg(
               CASE WHEN c.typ IN ('jsonb'::regtype, 'json'::regtype) THEN
                   format('CASE WHEN l.%1$I::pg_catalog.jsonb IS DISTINCT FROM r.%1$I::pg_catalog.jsonb THEN pg_catalog.jsonb_build_object(%2$L, '
                          'CASE WHEN l.%1$I IS NOT NULL AND r.%1$I IS NOT NULL'
                          ' THEN pg_catalog.jsonb_build_object(''patch'', syncguard.jsonb_merge_diff(l.%1$I::pg_catalog.jsonb, r.%1$I::pg_catalog.jsonb))'
                          ' ELSE pg_catalog.jsonb_build_object(''local'', l.%1$I, ''remote'', r.%1$I) END) ELSE ''{}''::pg_catalog.jsonb END',
                          c.name, c.name)
               ELSE
                   format('CASE WHEN l.%1$I IS DISTINCT FROM r.%1$I THEN pg_catalog.jsonb_build_object(%2$L, '
                          'pg_catalog.jsonb_build_object(''local'', l.%1$I, ''remote'', r.%1$I)) ELSE ''{}''::pg_catalog.jsonb END',
                          c.name, c.name)
               END, ' OPERATOR(pg_catalog.||) ') FILTER (WHERE NOT c.is_key), '''{}''::pg_catalog.jsonb'),
           coalesce(string_agg(format('%L, l.%I', c.name, c.name), ', ') FILTER (WHERE NOT c.is_key), ''),
           coalesce(string_agg(format('%L, r.%I', c.name, c.name), ', ') FILTER (WHERE NOT c.is_key), '')
      INTO sel, keyobj, joinon, order_by, rowdiff, lrow, rrow
      FROM syncguard.reconcile_columns(local, remote, key_columns, columns) AS c;
    -- Any key column tells a missing side: key values are never NULL.
    SELECT format('%I', c.name) INTO k1
      FROM syncguard.reconcile_columns(local, remote, key_columns, columns) AS c WHERE c.is_key LIMIT 1;
    RETURN format(
        'WITH l AS (SELECT %1$s FROM %2$s AS t WHERE %4$s),'
        '     r AS (SELECT %1$s FROM %3$s AS t WHERE %4$s)'
        ' SELECT pg_catalog.jsonb_build_object(%5$s) AS key,'
        '        CASE WHEN l.%6$s IS NULL THEN ''missing_local'' WHEN r.%6$s IS NULL THEN ''missing_remote'' ELSE ''differs'' END AS kind,'
        '        CASE WHEN l.%6$s IS NULL THEN pg_catalog.jsonb_build_object(%9$s)'
        '             WHEN r.%6$s IS NULL THEN pg_catalog.jsonb_build_object(%8$s)'
        '             ELSE d.diff END AS diff'
        '   FROM l FULL JOIN r ON %7$s'
        '  CROSS JOIN LATERAL (SELECT %10$s AS diff) AS d'
        '  WHERE l.%6$s IS NULL OR r.%6$s IS NULL OR d.diff OPERATOR(pg_catalog.<>) ''{}''::pg_catalog.jsonb'
        '  ORDER BY %11$s',
        sel, local, remote, cond, keyobj, k1, joinon, lrow, rrow, rowdiff, order_by);
END
$$;

-- The condition selecting the rows of some segments (numbers into `bounds`,
-- as reconcile_segment counts them), as SQL text. Runs of consecutive
-- segments become one key range each, which an index on the key serves;
-- past 500 ranges, the segment number of every row is tested instead.
CREATE FUNCTION syncguard.reconcile_where(cols text[], types regtype[], bounds jsonb, segs integer[])
RETURNS text
LANGUAGE plpgsql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    ranges jsonb;
BEGIN
    SELECT coalesce(jsonb_agg(jsonb_build_array(
                        CASE WHEN i.first > 0 THEN bounds -> (i.first - 1) ELSE 'null' END,
                        coalesce(bounds -> i.last, 'null')) ORDER BY i.first), '[]')
      INTO ranges
      FROM (SELECT min(s) AS first, max(s) AS last
              FROM (SELECT s, s - row_number() OVER (ORDER BY s) AS island
                      FROM (SELECT DISTINCT s FROM unnest(segs) AS u(s)) AS d) AS n
             GROUP BY island) AS i;
    IF jsonb_array_length(ranges) <= 500 THEN
        RETURN syncguard.reconcile_ranges(cols, types, ranges);
    END IF;
    RETURN format('%s OPERATOR(pg_catalog.=) ANY (%L::pg_catalog.int4[])',
                  syncguard.reconcile_segment(cols, types, bounds), segs);
END
$$;

-- Every difference between local and remote: one row per key that is
-- missing on one side or whose compared columns differ.
--   key   the key columns and values, {"id": 42}
--   kind  missing_local (only remote has the key), missing_remote (only
--         local has it) or differs
--   diff  differs: {"column": {"local": …, "remote": …}} per differing
--         column; for a jsonb (or json) column whose both values are not
--         NULL {"column": {"patch": …}}, the RFC 7396 patch that turns the
--         local value into the remote one (jsonb_merge_diff). missing_*:
--         the compared columns of the row the other side has.
--
-- Each pass reads the keys of the pending key ranges of the local table in
-- key order and cuts them into segments of threshold/2 local rows (fewer,
-- larger ones when that would make more than `segments`; an integer key's
-- first pass cuts equal key widths instead); then one grouped
-- query per side sums the row hashes of each segment, the remote one
-- computed by the remote server. A differing segment of at most `threshold` rows on both
-- sides has its rows compared; a larger one is the next pass's.
CREATE FUNCTION syncguard.reconcile(
    local regclass,
    remote regclass,
    key_columns text[] DEFAULT NULL,
    columns text[] DEFAULT NULL,
    segments integer DEFAULT 10000,
    threshold integer DEFAULT 1000
) RETURNS TABLE(key jsonb, kind text, diff jsonb)
LANGUAGE plpgsql VOLATILE
-- key bounds travel as text; 3 digits keep a float key's text exact
SET extra_float_digits = 3
-- the segment numbers of a composite key are a large CASE expression, whose
-- JIT compilation would take longer than the whole comparison
SET jit = off
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    kcols text[];        -- t.<key column>, quoted
    ktypes regtype[];
    korder text;
    rowhash text;
    key_json text;       -- jsonb_build_array of the key columns' text: a bound
    bounds jsonb := '[]';
    seg_expr text;
    cond text := 'true';
    pending_rows numeric;
    step bigint;
    local_sums jsonb;
    remote_sums jsonb;
    leaves integer[];
    pending integer[];
    level integer := 0;
    kmin numeric;        -- an integer key's range, width and segments in the first pass
    kmax numeric;
    width numeric;
    nsegs numeric;
BEGIN
    IF segments IS NULL OR segments NOT BETWEEN 2 AND 100000 OR threshold IS NULL OR threshold < 2 THEN
        RAISE EXCEPTION USING ERRCODE = '22023',
            MESSAGE = format('reconcile: segments must be 2 … 100000 and threshold at least 2, got %s and %s',
                             coalesce(segments::text, 'NULL'), coalesce(threshold::text, 'NULL')),
            HINT = 'Leave them out to take the defaults (10000 segments, 1000 rows).';
    END IF;
    SELECT array_agg(format('t.%I', c.name)), array_agg(c.typ),
           string_agg(format('t.%I', c.name), ', '),
           format('pg_catalog.jsonb_build_array(%s)', string_agg(format('t.%I::pg_catalog.text', c.name), ', '))
      INTO kcols, ktypes, korder, key_json
      FROM syncguard.reconcile_columns(local, remote, key_columns, columns) AS c
     WHERE c.is_key;
    SELECT string_agg(syncguard.reconcile_hash(format('t.%I', c.name), c.typ, (o - 1)::integer), ' OPERATOR(pg_catalog.#) ' ORDER BY o)
      INTO rowhash
      FROM syncguard.reconcile_columns(local, remote, key_columns, columns) WITH ORDINALITY AS c(name, typ, is_key, o);
    -- The planner's row count is enough to size the first pass's segments.
    SELECT CASE WHEN c.reltuples > 0 THEN c.reltuples END INTO pending_rows FROM pg_class c WHERE c.oid = local;
    IF pending_rows IS NULL THEN
        EXECUTE format('SELECT count(*) FROM %s', local) INTO pending_rows;
    END IF;

    LOOP
        level := level + 1;
        step := greatest(ceil(threshold / 2.0), ceil(pending_rows / segments));
        seg_expr := NULL;
        IF level = 1 AND cardinality(kcols) = 1 AND ktypes[1] IN ('int2'::regtype, 'int4'::regtype, 'int8'::regtype) THEN
            -- An integer key: the first pass cuts its range from min to max
            -- into equal widths, which needs no pass over the keys and
            -- numbers a row's segment by arithmetic (the numbering of
            -- width_bucket over those bounds). Where the keys are not spread
            -- evenly, a differing segment over threshold is cut exactly in
            -- the next pass.
            EXECUTE format('SELECT min(%1$s)::numeric, max(%1$s)::numeric FROM %2$s AS t', kcols[1], local)
              INTO kmin, kmax;
            width := ceil((kmax - kmin + 1) / greatest(1, ceil(pending_rows / step)));
            nsegs := ceil((kmax - kmin + 1) / width);
            -- (the last bound must fit the key's type)
            kmax := kmin + nsegs * width;
            IF kmax <= ('{"smallint": 32767, "integer": 2147483647, "bigint": 9223372036854775807}'::jsonb ->> ktypes[1]::text)::numeric THEN
                bounds := (SELECT jsonb_agg(jsonb_build_array((kmin + i * width)::text) ORDER BY i)
                             FROM generate_series(0, nsegs::integer) AS i);
                seg_expr := format('CASE WHEN %1$s < %2$L::%5$s THEN 0 WHEN %1$s >= %3$L::%5$s THEN %4$s'
                                   ' ELSE (%1$s - %2$L::%5$s) / %6$L::%5$s + 1 END',
                                   kcols[1], kmin, kmax, nsegs + 1, ktypes[1], width);
            END IF;
        END IF;
        IF seg_expr IS NULL THEN
            -- Local, keys only: every step-th key (in key order, within each
            -- pending segment) starts a new segment. The bounds: the old ones
            -- and these, in key order.
            EXECUTE format($q$
                SELECT coalesce(jsonb_agg(u.b ORDER BY u.ps, u.rn), '[]')
                  FROM (SELECT e.o::integer AS ps, 0::bigint AS rn, e.b
                          FROM jsonb_array_elements($1) WITH ORDINALITY AS e(b, o)
                        UNION ALL
                        SELECT t.ps, t.rn, %1$s
                          FROM (SELECT %2$s AS ps, %3$s, row_number() OVER (PARTITION BY %2$s ORDER BY %4$s) AS rn
                                  FROM %5$s AS t WHERE %6$s) AS t
                         WHERE t.rn > 1 AND (t.rn - 1) %% %7$s = 0) AS u$q$,
                key_json, syncguard.reconcile_segment(kcols, ktypes, bounds),
                array_to_string(kcols, ', '), korder, local, cond, step)
              INTO bounds
              USING bounds;
            IF cardinality(kcols) > 1 THEN
                -- A cut in a first-column value other than the previous
                -- bound's moves to that value's start (only its first
                -- column): a first column that changes at every cut then
                -- needs no comparison of the other columns at all.
                SELECT coalesce(jsonb_agg(CASE WHEN x.prev IS DISTINCT FROM x.b ->> 0 THEN jsonb_build_array(x.b -> 0)
                                               ELSE x.b END ORDER BY x.o), '[]')
                  INTO bounds
                  FROM (SELECT e.b, e.o, lag(e.b ->> 0) OVER (ORDER BY e.o) AS prev
                          FROM jsonb_array_elements(bounds) WITH ORDINALITY AS e(b, o)) AS x;
            END IF;
            seg_expr := syncguard.reconcile_segment(kcols, ktypes, bounds);
        END IF;
        -- Both sides' count and hash sum per segment, the remote's in one
        -- grouped query that postgres_fdw sends whole (one row per segment
        -- comes back). One statement: with the foreign server's
        -- async_capable option the two sides run at the same time.
        EXECUTE format(
            'SELECT coalesce(jsonb_object_agg(u.s, jsonb_build_array(u.n, u.h::text)) FILTER (WHERE u.side), ''{}''),'
            '       coalesce(jsonb_object_agg(u.s, jsonb_build_array(u.n, u.h::text)) FILTER (WHERE NOT u.side), ''{}'')'
            '  FROM (SELECT false AS side, %1$s AS s, count(*) AS n, sum(%2$s) AS h FROM %4$s AS t WHERE %5$s GROUP BY 2'
            '        UNION ALL'
            '        SELECT true, %1$s, count(*), sum(%2$s) FROM %3$s AS t WHERE %5$s GROUP BY 2) AS u',
            seg_expr, rowhash, local, remote, cond)
          INTO local_sums, remote_sums;
        -- Differing segments: small ones (or ones the local keys cannot cut
        -- further) are compared row by row, the others go to the next pass.
        SELECT coalesce(array_agg(d.s) FILTER (WHERE d.leaf), '{}'),
               coalesce(array_agg(d.s) FILTER (WHERE NOT d.leaf), '{}'),
               coalesce(sum(d.nl) FILTER (WHERE NOT d.leaf), 0)
          INTO leaves, pending, pending_rows
          FROM (SELECT k.s::integer AS s, coalesce((local_sums -> k.s ->> 0)::bigint, 0) AS nl,
                       greatest(coalesce((local_sums -> k.s ->> 0)::bigint, 0),
                                coalesce((remote_sums -> k.s ->> 0)::bigint, 0)) <= threshold
                       OR coalesce((local_sums -> k.s ->> 0)::bigint, 0) < 2 OR level >= 40 AS leaf
                  FROM (SELECT jsonb_object_keys(local_sums) UNION SELECT jsonb_object_keys(remote_sums)) AS k(s)
                 WHERE local_sums -> k.s IS DISTINCT FROM remote_sums -> k.s) AS d;
        IF cardinality(leaves) > 0 THEN
            RETURN QUERY EXECUTE syncguard.reconcile_rows_query(local, remote, key_columns, columns,
                                     syncguard.reconcile_where(kcols, ktypes, bounds, leaves));
        END IF;
        EXIT WHEN cardinality(pending) = 0;
        cond := syncguard.reconcile_where(kcols, ktypes, bounds, pending);
    END LOOP;
END
$$;

-- Repair: merges the remote's values into the local rows, one merge_upsert
-- per row (a protected table's guards hold: a last_write_wins timestamp or
-- a version refuses an older remote row), at most batch_size rows per call,
-- each call one transaction: call again until no row comes back inserted or
-- updated. A row only local is reported (skipped), never deleted.
--   action  inserted, updated, unchanged (the table's policy or a guard kept
--           the local row as it was), refused (SG003/SG004: the guard's
--           error is in detail), skipped (missing_remote)
--   detail  the differences (as reconcile's diff) or the inserted row, or
--           the guard's error
-- The default policy lets a remote NULL (also one inside a patch) replace or
-- delete the local value, so the row becomes the remote one; NULL: the
-- table's own merge policy (a NULL never overwrites).
CREATE FUNCTION syncguard.reconcile_apply(
    local regclass,
    remote regclass,
    key_columns text[] DEFAULT NULL,
    columns text[] DEFAULT NULL,
    segments integer DEFAULT 10000,
    threshold integer DEFAULT 1000,
    batch_size integer DEFAULT 1000,
    policy jsonb DEFAULT '{"nulls": "delete"}'
) RETURNS TABLE(key jsonb, kind text, action text, detail jsonb)
LANGUAGE plpgsql VOLATILE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    d record;
    data jsonb;
    before jsonb;
    after jsonb;
    by_key text;         -- WHERE clause: the row whose key is $1
    find_local text;
    find_remote text;
    jsonb_cols text[];
    written integer := 0;
BEGIN
    IF batch_size IS NULL OR batch_size < 1 THEN
        RAISE EXCEPTION USING ERRCODE = '22023',
            MESSAGE = format('reconcile_apply: batch_size must be at least 1, got %s', coalesce(batch_size::text, 'NULL')),
            HINT = 'Leave it out to take the default (1000 rows per call).';
    END IF;
    SELECT string_agg(format('t.%I OPERATOR(pg_catalog.=) ($1 OPERATOR(pg_catalog.->>) %L)::%s', c.name, c.name, c.typ), ' AND ')
               FILTER (WHERE c.is_key),
           format('pg_catalog.jsonb_build_object(%s)',
                  string_agg(format('%L, t.%I', c.name, c.name), ', ') FILTER (WHERE NOT c.is_key)),
           coalesce(array_agg(c.name) FILTER (WHERE c.typ IN ('jsonb'::regtype, 'json'::regtype)), '{}')
      INTO by_key, find_remote, jsonb_cols
      FROM syncguard.reconcile_columns(local, remote, key_columns, columns) AS c;
    find_local := format('SELECT pg_catalog.to_jsonb(t) FROM %s AS t WHERE %s', local, by_key);
    -- Every compared column: an INSERT … ON CONFLICT needs the NOT NULL ones
    -- even when the row exists.
    find_remote := format('SELECT %s FROM %s AS t WHERE %s', find_remote, remote, by_key);
    FOR d IN SELECT r.key, r.kind, r.diff
               FROM syncguard.reconcile(local, remote, key_columns, columns, segments, threshold) AS r LOOP
        key := d.key;
        kind := d.kind;
        IF d.kind = 'missing_remote' THEN
            action := 'skipped';
            detail := NULL;
            RETURN NEXT;
            CONTINUE;
        END IF;
        CONTINUE WHEN written >= batch_size;
        IF d.kind = 'missing_local' THEN
            data := d.diff;
            before := NULL;
        ELSE
            -- The remote row, a differing jsonb column as its patch (a
            -- tombstone where the remote value is NULL): merged, the
            -- patch gives the remote document.
            EXECUTE find_remote INTO data USING d.key;
            EXECUTE find_local INTO before USING d.key;
            data := data || coalesce((
                SELECT jsonb_object_agg(f.key, CASE WHEN f.value ? 'patch' THEN f.value -> 'patch' ELSE syncguard.tombstone() END)
                  FROM jsonb_each(d.diff) AS f
                 WHERE f.value ? 'patch' OR (f.key = ANY (jsonb_cols) AND jsonb_typeof(f.value -> 'remote') = 'null')), '{}');
        END IF;
        BEGIN
            after := syncguard.merge_upsert(local, d.key, data, policy);
        EXCEPTION WHEN SQLSTATE 'SG003' OR SQLSTATE 'SG004' THEN
            action := 'refused';
            detail := jsonb_build_object('sqlstate', SQLSTATE, 'message', SQLERRM);
            RETURN NEXT;
            CONTINUE;
        END;
        written := written + 1;
        action := CASE WHEN d.kind = 'missing_local' THEN 'inserted'
                       WHEN after = before THEN 'unchanged' ELSE 'updated' END;
        detail := CASE WHEN d.kind = 'missing_local' THEN data ELSE d.diff END;
        RETURN NEXT;
    END LOOP;
END
$$;

-- Invariant template: a reconciliation on a schedule. Each differing key is
-- a violation (entity: the key as JSON text, e.g. {"id": 42}), so a drift
-- opens an episode and alerts once; the view shows kind and diff too.
-- The comparison reads both tables' checksums: give it a long schedule.
CREATE FUNCTION syncguard.invariant_reconcile(
    name text,
    local regclass,
    remote regclass,
    key_columns text[] DEFAULT NULL,
    columns text[] DEFAULT NULL,
    segments integer DEFAULT 64,
    threshold integer DEFAULT 1000,
    grace interval DEFAULT '0',
    severity text DEFAULT 'error',
    remediation text DEFAULT NULL,
    schedule interval DEFAULT '1 hour',
    statement_timeout interval DEFAULT '10 minutes'
) RETURNS regclass
LANGUAGE plpgsql VOLATILE
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    -- The columns' errors now rather than at the first check.
    PERFORM FROM syncguard.reconcile_columns(local, remote, key_columns, columns);
    IF segments IS NULL OR segments NOT BETWEEN 2 AND 10000 OR threshold IS NULL OR threshold < 1 THEN
        RAISE EXCEPTION USING ERRCODE = '22023',
            MESSAGE = format('invariant %L: segments must be 2 … 10000 and threshold at least 1, got %s and %s',
                             name, coalesce(segments::text, 'NULL'), coalesce(threshold::text, 'NULL')),
            HINT = 'Leave them out to take the defaults (64 segments, 1000 rows).';
    END IF;
    RETURN syncguard.define_invariant(
        name,
        format('SELECT r.key::text AS entity, ''-infinity''::timestamptz AS since, r.kind, r.diff '
               'FROM syncguard.reconcile(%L::regclass, %L::regclass, %L::text[], %L::text[], %s, %s) AS r',
               local, remote, key_columns, columns, segments, threshold),
        grace => grace, severity => severity,
        remediation => coalesce(remediation, format(
            'See the differences with SELECT * FROM syncguard.reconcile(%L, %L); merge the remote values into %s with '
            'syncguard.reconcile_apply(%1$L, %2$L) (rows missing in %2$s are reported, delete them yourself).',
            local, remote, local)),
        description => format('rows of %s that differ from %s', local, remote),
        schedule => schedule, statement_timeout => statement_timeout, search_path => 'pg_catalog, pg_temp');
END
$$;

GRANT EXECUTE ON FUNCTION
    syncguard.reconcile_columns(regclass, regclass, text[], text[]),
    syncguard.reconcile_hash(text, regtype, integer),
    syncguard.reconcile_compare(text[], regtype[], jsonb, text),
    syncguard.reconcile_bucket(text, regtype, jsonb),
    syncguard.reconcile_segment(text[], regtype[], jsonb),
    syncguard.reconcile_ranges(text[], regtype[], jsonb),
    syncguard.reconcile_where(text[], regtype[], jsonb, integer[]),
    syncguard.reconcile_rows_query(regclass, regclass, text[], text[], text),
    syncguard.reconcile(regclass, regclass, text[], text[], integer, integer),
    syncguard.reconcile_apply(regclass, regclass, text[], text[], integer, integer, integer, jsonb),
    syncguard.invariant_reconcile(text, regclass, regclass, text[], text[], integer, integer, interval, text, text, interval, interval)
    TO PUBLIC;

COMMENT ON FUNCTION syncguard.reconcile_columns(regclass, regclass, text[], text[]) IS
    'internal: the columns reconcile compares, checked on both sides';
COMMENT ON FUNCTION syncguard.reconcile_hash(text, regtype, integer) IS
    'internal: the SQL of a column''s 64-bit hash, the same on every server';
COMMENT ON FUNCTION syncguard.reconcile_compare(text[], regtype[], jsonb, text) IS
    'internal: the SQL comparing a key with a bound, column by column';
COMMENT ON FUNCTION syncguard.reconcile_bucket(text, regtype, jsonb) IS
    'internal: the SQL counting the sorted values at or below a column''s';
COMMENT ON FUNCTION syncguard.reconcile_segment(text[], regtype[], jsonb) IS
    'internal: the SQL of a row''s segment number among sorted key bounds';
COMMENT ON FUNCTION syncguard.reconcile_ranges(text[], regtype[], jsonb) IS
    'internal: the SQL selecting the rows of a list of key ranges';
COMMENT ON FUNCTION syncguard.reconcile_where(text[], regtype[], jsonb, integer[]) IS
    'internal: the SQL selecting the rows of some segments';
COMMENT ON FUNCTION syncguard.reconcile_rows_query(regclass, regclass, text[], text[], text) IS
    'internal: the query comparing the rows of key ranges field by field';
COMMENT ON FUNCTION syncguard.reconcile(regclass, regclass, text[], text[], integer, integer) IS
    'every row and field in which a table differs from another (e.g. a postgres_fdw foreign table), by checksums of key ranges computed on each side';
COMMENT ON FUNCTION syncguard.reconcile_apply(regclass, regclass, text[], text[], integer, integer, integer, jsonb) IS
    'merge the remote values of the rows reconcile reports into the local table through merge_upsert, a batch per call';
COMMENT ON FUNCTION syncguard.invariant_reconcile(text, regclass, regclass, text[], text[], integer, integer, interval, text, text, interval, interval) IS
    'define an invariant: rows of a table that differ from another table (reconcile on a schedule)';
-- Citus (docs/citus.md): idem_complete, idem_fail and idem_prune as
-- sql/install/idempotency.sql defines them (no volatile function in an UPDATE of a
-- distributed table; idem_prune a scope at a time there), then sql/install/citus.sql.

CREATE OR REPLACE FUNCTION syncguard.idem_complete(token uuid, response jsonb, scope text DEFAULT NULL)
RETURNS void
LANGUAGE plpgsql VOLATILE
SET search_path = pg_catalog, pg_temp
SET enable_seqscan = off
SET enable_bitmapscan = off
AS $$
DECLARE
    t  timestamptz := clock_timestamp();
    me text := current_user;
BEGIN
    IF token IS NULL THEN
        RAISE EXCEPTION USING ERRCODE = '22004',
            MESSAGE = 'idem_complete: token must not be NULL',
            HINT = 'Pass the token idem_claim returned with outcome claimed.';
    END IF;
    -- Citus (docs/citus.md): an UPDATE of a distributed table evaluates no
    -- volatile function (the clock and the user are values here), and the
    -- one with scope = $n is planned for the scope's shard alone.
    IF idem_complete.scope IS NULL THEN
        UPDATE syncguard.idempotency_keys AS k
           SET status = 'succeeded', response = idem_complete.response, last_error = NULL,
               lease_expires_at = NULL, updated_at = t
         WHERE k.lease_token = idem_complete.token AND k.status = 'running' AND k.owner_role = me;
    ELSE
        UPDATE syncguard.idempotency_keys AS k
           SET status = 'succeeded', response = idem_complete.response, last_error = NULL,
               lease_expires_at = NULL, updated_at = t
         WHERE k.scope = idem_complete.scope AND k.lease_token = idem_complete.token
           AND k.status = 'running' AND k.owner_role = me;
    END IF;
    IF NOT FOUND THEN
        PERFORM syncguard.idem_lease_lost(token, 'idem_complete', scope);
    END IF;
END
$$;

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
    me text := current_user;
    -- t + backoff_delay(attempts, base, cap) of the row, written out in the
    -- UPDATE in epoch seconds, its random jitter drawn here: Citus runs an
    -- UPDATE of a distributed table only with immutable functions in a CASE.
    t_s double precision := extract(epoch FROM t);
    base_s double precision := extract(epoch FROM base);
    cap_s double precision := extract(epoch FROM cap);
    spread double precision := 1 + 0.2 * (2 * random() - 1);
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
                                  THEN to_timestamp(t_s + least(3155760000, spread *
                                           least(cap_s, base_s * power(2::double precision, least(k.attempts - 1, 1000))))) END,
           last_error = error, lease_expires_at = NULL, updated_at = t
     WHERE k.lease_token = idem_fail.token AND k.status = 'running'
       AND k.owner_role = me
       AND (idem_fail.scope IS NULL OR k.scope = idem_fail.scope)
    RETURNING k.status, k.attempts, k.next_attempt_at INTO status, attempt, retry_at;
    IF NOT FOUND THEN
        PERFORM syncguard.idem_lease_lost(token, 'idem_fail', scope);
    END IF;
END
$$;

CREATE OR REPLACE FUNCTION syncguard.idem_prune(batch integer DEFAULT 1000, scope text DEFAULT NULL)
RETURNS bigint
LANGUAGE plpgsql VOLATILE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    t timestamptz := clock_timestamp();
    n bigint;
    s text;
    distributed boolean := false;
    victims jsonb[];
BEGIN
    IF batch IS NULL OR batch < 1 THEN
        RAISE EXCEPTION USING ERRCODE = '22023',
            MESSAGE = format('idem_prune: batch must be at least 1, got %s', coalesce(batch::text, 'NULL')),
            HINT = 'Call idem_prune repeatedly with a moderate batch (e.g. 1000).';
    END IF;
    IF pg_catalog.to_regclass('pg_catalog.pg_dist_partition') IS NOT NULL THEN
        EXECUTE 'SELECT EXISTS (SELECT 1 FROM pg_catalog.pg_dist_partition
                                 WHERE logicalrelid = ''syncguard.idempotency_keys''::pg_catalog.regclass)'
           INTO distributed;
    END IF;
    IF distributed AND idem_prune.scope IS NOT NULL THEN
        -- Citus: scope = $n makes the read and every delete one shard's
        -- statements. The keys are read in a statement of their own (Citus
        -- would send a call with that subquery to the shard, where
        -- _delete_visible cannot reach the table), and without a row lock:
        -- the owner's deletes use a connection of their own, which would
        -- wait for the caller's. Each key carries its row version instead,
        -- so a key claimed again since is not deleted.
        victims := ARRAY(
            SELECT jsonb_build_object('scope', e.scope, 'key', e.key, 'owner_role', e.owner_role,
                                      'xmin', e.xmin)
              FROM syncguard.idempotency_keys AS e
             WHERE e.scope = idem_prune.scope AND e.expires_at < t
               AND NOT (e.status = 'running' AND e.lease_expires_at > t)
             LIMIT batch);
        RETURN syncguard._delete_visible('syncguard.idempotency_keys', victims);
    END IF;
    IF distributed THEN
        -- Citus runs no FOR UPDATE across shards: a scope at a time, each
        -- batch on its shard.
        n := 0;
        FOR s IN SELECT DISTINCT e.scope FROM syncguard.idempotency_keys AS e WHERE e.expires_at < t LOOP
            n := n + syncguard.idem_prune(batch - n::integer, s);
            EXIT WHEN n >= batch;
        END LOOP;
        RETURN n;
    END IF;
    -- The rows a claim is writing right now are locked: skipped, not waited for.
    victims := ARRAY(
            SELECT jsonb_build_object('scope', e.scope, 'key', e.key, 'owner_role', e.owner_role)
              FROM syncguard.idempotency_keys AS e
             WHERE e.expires_at < t
               AND NOT (e.status = 'running' AND e.lease_expires_at > t)
               AND (idem_prune.scope IS NULL OR e.scope = idem_prune.scope)
             LIMIT batch
               FOR UPDATE SKIP LOCKED);
    RETURN syncguard._delete_visible('syncguard.idempotency_keys', victims);
END
$$;


-- Scale-out on Citus (docs/citus.md): the placement of the extension's own
-- tables, applied by distribute() and taken back by undistribute(), and the
-- stale-write counters of every node. Loaded in the order of src/install_order.rs.
--
-- Placement. syncguard.idempotency_keys is hash-distributed by scope: a key
-- lives on the shard that holds the user's rows with the same distribution
-- value (colocate_with), so claim + effect + complete are one single-shard
-- transaction. Every other table stays a plain table on the coordinator:
-- they are small, joined with one another (health views, policies with
-- subqueries, foreign keys) and written through the coordinator, which is
-- where every syncguard function is called.
--
-- Citus is reached through EXECUTE only: this script loads, and every other
-- function works, without it.

-- Raises 55000 unless this database runs on the Citus coordinator.
CREATE FUNCTION syncguard.citus_coordinator_only(caller text) RETURNS void
LANGUAGE plpgsql VOLATILE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    is_coordinator boolean;
BEGIN
    IF pg_catalog.to_regprocedure('pg_catalog.citus_is_coordinator()') IS NULL THEN
        RAISE EXCEPTION USING ERRCODE = '55000',
            MESSAGE = format('%s: the citus extension is not installed in this database', caller),
            HINT = 'Run CREATE EXTENSION citus on the coordinator first (docs/citus.md).';
    END IF;
    EXECUTE 'SELECT pg_catalog.citus_is_coordinator()' INTO is_coordinator;
    IF NOT is_coordinator THEN
        RAISE EXCEPTION USING ERRCODE = '55000',
            MESSAGE = format('%s: this node is a Citus worker', caller),
            HINT = format('Call syncguard.%s() on the coordinator.', caller);
    END IF;
END
$$;

CREATE FUNCTION syncguard.distribute(colocate_with regclass DEFAULT NULL)
RETURNS TABLE (table_name regclass, placement text, changed boolean)
LANGUAGE plpgsql VOLATILE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    keys constant regclass := 'syncguard.idempotency_keys';
    distributed boolean;
    colocated boolean;
    on_workers boolean;
    moved boolean := false;
BEGIN
    PERFORM syncguard.citus_coordinator_only('distribute');
    EXECUTE 'SELECT EXISTS (SELECT 1 FROM pg_catalog.pg_dist_partition WHERE logicalrelid = $1)'
       INTO distributed USING keys;
    IF NOT distributed THEN
        -- Citus takes the workers' copies of an extension's table (CREATE
        -- EXTENSION made them there) for the distributed table's shell; after
        -- undistribute() they are gone, and Citus makes the shell of a table
        -- that no extension owns: the table (and its view) leave the extension
        -- for the call and rejoin it afterwards.
        EXECUTE $run$SELECT bool_and(w.result = 't') FROM pg_catalog.run_command_on_workers(
                    'SELECT pg_catalog.to_regclass(''syncguard.idempotency_keys'') IS NOT NULL') AS w$run$
           INTO on_workers;
        IF on_workers IS DISTINCT FROM true THEN
            ALTER EXTENSION syncguard DROP VIEW syncguard.idempotency_summary;
            ALTER EXTENSION syncguard DROP TABLE syncguard.idempotency_keys;
        END IF;
        EXECUTE 'SELECT pg_catalog.create_distributed_table($1, ''scope'', colocate_with => $2)'
          USING keys, coalesce(colocate_with::text, 'default');
        -- The keys were copied into the shards; the coordinator's own copy
        -- of them is no longer read.
        EXECUTE 'SELECT pg_catalog.truncate_local_data_after_distributing_table($1)' USING keys;
        IF on_workers IS DISTINCT FROM true THEN
            ALTER EXTENSION syncguard ADD TABLE syncguard.idempotency_keys;
            ALTER EXTENSION syncguard ADD VIEW syncguard.idempotency_summary;
            UPDATE pg_catalog.pg_extension
               SET extconfig = extconfig || keys::oid, extcondition = extcondition || ''::text
             WHERE extname = 'syncguard' AND NOT keys::oid = ANY (extconfig);
        END IF;
        moved := true;
    ELSIF colocate_with IS NOT NULL THEN
        EXECUTE 'SELECT coalesce((SELECT a.colocationid = b.colocationid
                                    FROM pg_catalog.pg_dist_partition a, pg_catalog.pg_dist_partition b
                                   WHERE a.logicalrelid = $1 AND b.logicalrelid = $2), false)'
           INTO colocated USING keys, colocate_with;
        IF NOT colocated THEN
            EXECUTE 'SELECT pg_catalog.update_distributed_table_colocation($1, colocate_with => $2)'
              USING keys, colocate_with::text;
            moved := true;
        END IF;
    END IF;
    RETURN QUERY
    SELECT c.oid::regclass,
           CASE WHEN c.oid = keys::oid THEN 'distributed by scope' ELSE 'coordinator-local' END,
           c.oid = keys::oid AND moved
      FROM pg_catalog.pg_depend d
      JOIN pg_catalog.pg_class c ON c.oid = d.objid
     WHERE d.classid = 'pg_catalog.pg_class'::regclass
       AND d.refclassid = 'pg_catalog.pg_extension'::regclass
       AND d.refobjid = (SELECT e.oid FROM pg_catalog.pg_extension e WHERE e.extname = 'syncguard')
       AND d.deptype = 'e' AND c.relkind IN ('r', 'p')
     ORDER BY c.oid = keys::oid DESC, c.relname;
END
$$;

-- The way back: syncguard.idempotency_keys becomes a plain coordinator table
-- again, with its rows, and no shard of it is left on any worker; DROP
-- EXTENSION is then clean.
--
-- Citus drops a worker's copy of a distributed table together with the
-- extension that owns it, so on the workers the table and the view over it
-- leave the extension first (the workers' copies were the shell of the
-- distributed table and go with it). undistribute_table() makes a new table
-- on the coordinator and makes the view again: both rejoin the extension,
-- with the grant, comment and pg_dump registration the install script gave them.
CREATE FUNCTION syncguard.undistribute()
RETURNS TABLE (table_name regclass, changed boolean)
LANGUAGE plpgsql VOLATILE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    keys regclass := 'syncguard.idempotency_keys';
    distributed boolean := false;
    failed text;
    note text := pg_catalog.obj_description('syncguard.idempotency_keys'::regclass, 'pg_class');
BEGIN
    IF pg_catalog.to_regclass('pg_catalog.pg_dist_partition') IS NOT NULL THEN
        EXECUTE 'SELECT EXISTS (SELECT 1 FROM pg_catalog.pg_dist_partition WHERE logicalrelid = $1)'
           INTO distributed USING keys;
    END IF;
    IF NOT distributed THEN
        table_name := keys; changed := false;
        RETURN NEXT;
        RETURN;
    END IF;
    PERFORM syncguard.citus_coordinator_only('undistribute');
    EXECUTE $run$
        SELECT string_agg(format('%s:%s: %s', w.nodename, w.nodeport, w.result), '; ')
          FROM pg_catalog.run_command_on_workers($cmd$DO $do$
                BEGIN
                    IF EXISTS (SELECT 1 FROM pg_catalog.pg_depend
                                WHERE objid = pg_catalog.to_regclass('syncguard.idempotency_summary') AND deptype = 'e') THEN
                        ALTER EXTENSION syncguard DROP VIEW syncguard.idempotency_summary;
                    END IF;
                    IF EXISTS (SELECT 1 FROM pg_catalog.pg_depend
                                WHERE objid = pg_catalog.to_regclass('syncguard.idempotency_keys') AND deptype = 'e') THEN
                        ALTER EXTENSION syncguard DROP TABLE syncguard.idempotency_keys;
                    END IF;
                END $do$ $cmd$) AS w
         WHERE NOT w.success
    $run$ INTO failed;
    IF failed IS NOT NULL THEN
        RAISE EXCEPTION USING ERRCODE = '55000',
            MESSAGE = 'undistribute: could not take the idempotency keys out of the extension on every worker',
            DETAIL = failed,
            HINT = 'Start every worker (citus_check_cluster_node_health()), then call undistribute() again.';
    END IF;
    -- Citus converts no table that an extension owns or whose drop would
    -- cascade to an extension's object (the view). Undone if anything fails.
    ALTER EXTENSION syncguard DROP VIEW syncguard.idempotency_summary;
    ALTER EXTENSION syncguard DROP TABLE syncguard.idempotency_keys;
    EXECUTE 'SELECT pg_catalog.undistribute_table($1)' USING keys;
    keys := 'syncguard.idempotency_keys';
    ALTER EXTENSION syncguard ADD TABLE syncguard.idempotency_keys;
    ALTER EXTENSION syncguard ADD VIEW syncguard.idempotency_summary;
    GRANT SELECT ON syncguard.idempotency_summary TO PUBLIC;
    EXECUTE format('COMMENT ON TABLE syncguard.idempotency_keys IS %L', note);
    -- What pg_extension_config_dump('syncguard.idempotency_keys', '') did at
    -- CREATE EXTENSION (ALTER EXTENSION ... DROP TABLE took it out).
    UPDATE pg_catalog.pg_extension
       SET extconfig = extconfig || keys::oid, extcondition = extcondition || ''::text
     WHERE extname = 'syncguard' AND NOT keys::oid = ANY (extconfig);
    table_name := keys; changed := true;
    RETURN NEXT;
END
$$;

-- Writes ignored by last_write_wins, per table, summed over every node: the
-- protection trigger fires on the shards, so each worker counts the writes
-- its shards ignored (under the distributed table's name), and merge_upsert
-- counts on the coordinator. Without Citus, the local conflict_stats.
CREATE FUNCTION syncguard.cluster_conflict_stats()
RETURNS TABLE (table_name text, stale_ignored bigint, last_ignored_at timestamptz)
LANGUAGE plpgsql VOLATILE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    failed text;
BEGIN
    IF pg_catalog.to_regproc('pg_catalog.run_command_on_all_nodes') IS NULL THEN
        RETURN QUERY SELECT s.table_name, s.stale_ignored, s.last_ignored_at FROM syncguard.conflict_stats s;
        RETURN;
    END IF;
    CREATE TEMP TABLE IF NOT EXISTS sg_node_stats (node int, success boolean, result text) ON COMMIT DROP;
    TRUNCATE sg_node_stats;
    EXECUTE $run$
        INSERT INTO sg_node_stats
        SELECT n.nodeid, n.success, n.result
          FROM pg_catalog.run_command_on_all_nodes(
                 'SELECT coalesce(pg_catalog.json_agg(s), ''[]'') FROM syncguard.conflict_stats s') AS n
    $run$;
    SELECT string_agg(format('node %s: %s', n.node, n.result), '; ') INTO failed
      FROM sg_node_stats n WHERE NOT n.success;
    IF failed IS NOT NULL THEN
        RAISE EXCEPTION USING ERRCODE = '55000',
            MESSAGE = 'cluster_conflict_stats: a node did not answer',
            DETAIL = failed,
            HINT = 'Check the nodes with citus_check_cluster_node_health().';
    END IF;
    RETURN QUERY
    SELECT r.table_name, sum(r.stale_ignored)::bigint, max(r.last_ignored_at)
      FROM sg_node_stats n,
           pg_catalog.json_to_recordset(n.result::json)
             AS r(table_name text, stale_ignored bigint, last_ignored_at timestamptz)
     GROUP BY r.table_name
     ORDER BY r.table_name;
END
$$;

-- Placement changes belong to the extension's owner (a superuser); the
-- counters are as public as conflict_stats, but their query runs on every
-- node through run_command_on_all_nodes, which is the owner's too.
REVOKE ALL ON FUNCTION syncguard.citus_coordinator_only(text) FROM PUBLIC;
REVOKE ALL ON FUNCTION syncguard.distribute(regclass) FROM PUBLIC;
REVOKE ALL ON FUNCTION syncguard.undistribute() FROM PUBLIC;
REVOKE ALL ON FUNCTION syncguard.cluster_conflict_stats() FROM PUBLIC;
COMMENT ON FUNCTION syncguard.citus_coordinator_only(text) IS
    'internal: raises 55000 unless this is the Citus coordinator';
COMMENT ON FUNCTION syncguard.distribute(regclass) IS
    'Citus: distribute syncguard.idempotency_keys by scope (co-located with colocate_with); the other tables stay on the coordinator';
COMMENT ON FUNCTION syncguard.undistribute() IS
    'Citus: make syncguard.idempotency_keys a coordinator table again, leaving no shard behind';
COMMENT ON FUNCTION syncguard.cluster_conflict_stats() IS
    'writes ignored by last_write_wins, per table, summed over every Citus node';

-- Names of sync sources and queues are per owner (sql/install/names.sql): the
-- functions that take a name, or match jobs by dedupe key or settings.

CREATE FUNCTION syncguard._name_owner(owners text[], name text, what text)
RETURNS text
LANGUAGE plpgsql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    roles text[] := ARRAY(SELECT DISTINCT o FROM unnest(owners) AS o WHERE o IS NOT NULL ORDER BY o);
BEGIN
    IF current_user::text = ANY (roles) THEN
        RETURN current_user;
    ELSIF cardinality(roles) <= 1 THEN
        RETURN roles[1];
    END IF;
    RAISE EXCEPTION USING ERRCODE = '42725',
        MESSAGE = format('%s %L is ambiguous: roles %s each have one of that name', what, name,
                         (SELECT string_agg(quote_ident(r), ', ') FROM unnest(roles) AS r)),
        HINT = 'SET ROLE to the owning role first.';
END
$$;
COMMENT ON FUNCTION syncguard._name_owner(text[], text, text) IS
    'internal: which owner''s sync source, queue or invariant a name means to the caller (its own, else the only one it sees)';

CREATE FUNCTION syncguard.sync_source_owner(source text)
RETURNS text
LANGUAGE sql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
    SELECT syncguard._name_owner(ARRAY(SELECT s.owner_role FROM syncguard.sync_sources AS s WHERE s.source = $1),
                                 $1, 'sync source')
$$;
COMMENT ON FUNCTION syncguard.sync_source_owner(text) IS
    'internal: the owner of the sync source a name means to the caller, or NULL';

CREATE FUNCTION syncguard.queue_owner(queue text)
RETURNS text
LANGUAGE sql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
    SELECT syncguard._name_owner(ARRAY(SELECT q.owner_role FROM syncguard.queues AS q WHERE q.queue = $1
                                       UNION
                                       SELECT j.owner_role FROM syncguard.queue_jobs AS j WHERE j.queue = $1),
                                 $1, 'queue')
$$;
COMMENT ON FUNCTION syncguard.queue_owner(text) IS
    'internal: the owner of the queue a name means to the caller, or NULL';

CREATE OR REPLACE FUNCTION syncguard.sync_begin(source text, parts text[] DEFAULT NULL,
                                     OUT run_id bigint, OUT since timestamptz)
LANGUAGE plpgsql VOLATILE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    t     timestamptz := clock_timestamp();
    owner text := coalesce(syncguard.sync_source_owner(sync_begin.source), current_user);
    src   syncguard.sync_sources;
    cur   syncguard.sync_runs;
BEGIN
    IF source IS NULL OR source = '' THEN
        RAISE EXCEPTION USING ERRCODE = CASE WHEN source IS NULL THEN '22004' ELSE '22023' END,
            MESSAGE = 'sync_begin: source must be a non-empty name',
            HINT = 'Name the system you sync from, e.g. ''crm'' or ''billing-api''.';
    END IF;
    IF parts IS NOT NULL AND (cardinality(parts) = 0 OR array_position(parts, NULL) IS NOT NULL
                              OR EXISTS (SELECT FROM unnest(parts) p WHERE p = '')
                              OR (SELECT count(DISTINCT p) FROM unnest(parts) p) <> cardinality(parts)) THEN
        RAISE EXCEPTION USING ERRCODE = '22023',
            MESSAGE = format('sync_begin: parts must be distinct non-empty names, got %s', parts),
            HINT = 'Pass NULL when the run has no declared parts.';
    END IF;

    INSERT INTO syncguard.sync_sources AS s (source, owner_role) VALUES (sync_begin.source, owner)
    ON CONFLICT ON CONSTRAINT sync_sources_pkey DO NOTHING;
    -- The source's row lock serialises runs of one source: a concurrent
    -- sync_begin waits here, then sees this run running.
    SELECT * INTO src FROM syncguard.sync_sources AS s
     WHERE s.source = sync_begin.source AND s.owner_role = owner FOR NO KEY UPDATE;
    IF NOT FOUND THEN
        RAISE EXCEPTION USING ERRCODE = '40001',
            MESSAGE = format('sync_begin: sync source %L was dropped while this run began', source),
            HINT = 'Try again.';
    END IF;

    -- Abandons the stale runs of every source of this name the caller sees:
    -- past their deadline, they would be abandoned anyway.
    PERFORM syncguard.sync_abandon_stale(src.source);
    SELECT * INTO cur FROM syncguard.sync_runs AS r
     WHERE r.source = src.source AND r.owner_role = src.owner_role AND r.status = 'running'
     ORDER BY r.started_at LIMIT 1;
    IF FOUND THEN
        RAISE EXCEPTION USING ERRCODE = 'SG005',
            MESSAGE = format('sync source %L already has run %s running', src.source, cur.run_id),
            DETAIL = format('Run %s started at %s; it is abandoned if not finished by %s.',
                            cur.run_id, cur.started_at, cur.deadline),
            HINT = 'One run per source at a time: wait for it, or try again later.';
    END IF;

    since := src.watermark - src.overlap;
    INSERT INTO syncguard.sync_runs AS r (source, owner_role, parts, since, started_at, deadline)
    VALUES (src.source, src.owner_role, sync_begin.parts, sync_begin.since, t, t + src.run_timeout)
    RETURNING r.run_id INTO sync_begin.run_id;
END
$$;
COMMENT ON FUNCTION syncguard.sync_begin(text, text[]) IS
    'start a sync run: run_id and since (watermark minus overlap, NULL on the first run)';

CREATE OR REPLACE FUNCTION syncguard.sync_locked_run(run_id bigint, caller text)
RETURNS syncguard.sync_runs
LANGUAGE plpgsql VOLATILE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    src   text;
    owner text;
    r     syncguard.sync_runs;
BEGIN
    IF run_id IS NULL THEN
        RAISE EXCEPTION USING ERRCODE = '22004',
            MESSAGE = format('%s: run_id must not be NULL', caller),
            HINT = 'Pass the run_id sync_begin returned.';
    END IF;
    SELECT x.source, x.owner_role INTO src, owner FROM syncguard.sync_runs AS x
     WHERE x.run_id = sync_locked_run.run_id;
    IF NOT FOUND THEN
        RAISE EXCEPTION USING ERRCODE = '22023',
            MESSAGE = format('%s: there is no sync run %s', caller, run_id),
            HINT = 'Pass the run_id sync_begin returned; runs of other roles are not visible.';
    END IF;
    -- A run's source never changes, so locking it after the lookup is safe.
    PERFORM FROM syncguard.sync_sources AS s WHERE s.source = src AND s.owner_role = owner FOR NO KEY UPDATE;
    PERFORM syncguard.sync_abandon_stale(src);
    SELECT * INTO r FROM syncguard.sync_runs AS x
     WHERE x.source = src AND x.run_id = sync_locked_run.run_id FOR NO KEY UPDATE;
    RETURN r;
END
$$;
COMMENT ON FUNCTION syncguard.sync_locked_run(bigint, text) IS
    'internal: a run and its source locked for sync_part/sync_finish';

CREATE OR REPLACE FUNCTION syncguard.nack(job_id bigint, error text, retryable boolean DEFAULT true,
                               attempt integer DEFAULT NULL,
                               OUT state text, OUT attempts integer, OUT retry_at timestamptz)
LANGUAGE plpgsql VOLATILE
SET search_path = pg_catalog, pg_temp
SET enable_seqscan = off
SET enable_bitmapscan = off
AS $$
DECLARE
    t timestamptz := clock_timestamp();
    j syncguard.queue_jobs;
    q record;
BEGIN
    IF retryable IS NULL THEN
        RAISE EXCEPTION USING ERRCODE = '22004', MESSAGE = 'nack: retryable must not be NULL';
    END IF;
    j := syncguard.queue_leased_job(job_id, attempt, 'nack');
    SELECT coalesce(c.max_attempts, 5) AS max_attempts, coalesce(c.base, '2 seconds') AS base,
           coalesce(c.cap, '10 minutes') AS cap, coalesce(c.jitter, 0.2) AS jitter INTO q
      FROM (SELECT) AS one LEFT JOIN syncguard.queues AS c ON c.queue = j.queue AND c.owner_role = j.owner_role;
    IF retryable AND j.attempts < q.max_attempts THEN
        UPDATE syncguard.queue_jobs AS x
           SET state = 'ready', last_error = nack.error,
               visible_at = t + syncguard.backoff_delay(j.attempts, q.base, q.cap, q.jitter)
         WHERE x.queue = j.queue AND x.job_id = j.job_id
        RETURNING x.state, x.attempts, x.visible_at INTO state, attempts, retry_at;
    ELSE
        UPDATE syncguard.queue_jobs AS x
           SET state = 'dead', last_error = nack.error, dead_at = t, visible_at = t
         WHERE x.queue = j.queue AND x.job_id = j.job_id
        RETURNING x.state, x.attempts INTO state, attempts;
    END IF;
END
$$;
COMMENT ON FUNCTION syncguard.nack(bigint, text, boolean, integer) IS
    'a leased job failed: due again after backoff, or dead after the last attempt';

CREATE OR REPLACE FUNCTION syncguard.requeue_dead(queue text, job_ids bigint[] DEFAULT NULL)
RETURNS bigint
LANGUAGE plpgsql VOLATILE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    t timestamptz := clock_timestamp();
    n bigint;
BEGIN
    IF queue IS NULL THEN
        RAISE EXCEPTION USING ERRCODE = '22004', MESSAGE = 'requeue_dead: queue must not be NULL';
    END IF;
    UPDATE syncguard.queue_jobs AS j
       SET state = 'ready', attempts = 0, visible_at = t, dead_at = NULL
     WHERE j.queue = requeue_dead.queue AND j.state = 'dead'
       AND (requeue_dead.job_ids IS NULL OR j.job_id = ANY (requeue_dead.job_ids))
       AND (j.dedupe_key IS NULL
            OR NOT EXISTS (SELECT FROM syncguard.queue_jobs AS l
                            WHERE l.queue = j.queue AND l.owner_role = j.owner_role
                              AND l.dedupe_key = j.dedupe_key AND l.state <> 'dead'));
    GET DIAGNOSTICS n = ROW_COUNT;
    RETURN n;
END
$$;
COMMENT ON FUNCTION syncguard.requeue_dead(text, bigint[]) IS 'make dead jobs ready again';
