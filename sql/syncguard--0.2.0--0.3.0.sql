-- syncguard 0.2.0 -> 0.3.0
--
-- The internal functions, which only other syncguard objects call, take a
-- leading underscore (_delete_visible and _name_owner have it already), so
-- that \df syncguard.* lists what users call apart from them. Renaming keeps
-- every grant, comment, trigger and view that refers to them; the functions
-- that call them by name are made again with the new names.
\echo Use "ALTER EXTENSION syncguard UPDATE" to load this file. \quit

ALTER FUNCTION syncguard.alert_payload(text,text,bigint) RENAME TO _alert_payload;
ALTER FUNCTION syncguard.citus_coordinator_only(text) RENAME TO _citus_coordinator_only;
ALTER FUNCTION syncguard.fold_stale_writes() RENAME TO _fold_stale_writes;
ALTER FUNCTION syncguard.freshness_stamp(jsonb,jsonb,timestamp with time zone) RENAME TO _freshness_stamp;
ALTER FUNCTION syncguard.idem_lease_lost(uuid,text,text) RENAME TO _idem_lease_lost;
ALTER FUNCTION syncguard.inheritance_children(regclass) RENAME TO _inheritance_children;
ALTER FUNCTION syncguard.invariant_check_run(oid,text,integer) RENAME TO _invariant_check_run;
ALTER FUNCTION syncguard.invariant_column(regclass,text,regtype) RENAME TO _invariant_column;
ALTER FUNCTION syncguard.invariant_entity(regclass,text[]) RENAME TO _invariant_entity;
ALTER FUNCTION syncguard.invariant_query_text(text) RENAME TO _invariant_query_text;
ALTER FUNCTION syncguard.protect_config(regclass,text[],jsonb) RENAME TO _protect_config;
ALTER FUNCTION syncguard.protect_partition_check(regclass,text) RENAME TO _protect_partition_check;
ALTER FUNCTION syncguard.protect_trigger() RENAME TO _protect_trigger;
ALTER FUNCTION syncguard.queue_lease_expired(bigint,text) RENAME TO _queue_lease_expired;
ALTER FUNCTION syncguard.queue_leased_job(bigint,integer,text) RENAME TO _queue_leased_job;
ALTER FUNCTION syncguard.queue_owner(text) RENAME TO _queue_owner;
ALTER FUNCTION syncguard.reconcile_bucket(text,regtype,jsonb) RENAME TO _reconcile_bucket;
ALTER FUNCTION syncguard.reconcile_columns(regclass,regclass,text[],text[]) RENAME TO _reconcile_columns;
ALTER FUNCTION syncguard.reconcile_compare(text[],regtype[],jsonb,text) RENAME TO _reconcile_compare;
ALTER FUNCTION syncguard.reconcile_hash(text,regtype,integer) RENAME TO _reconcile_hash;
ALTER FUNCTION syncguard.reconcile_ranges(text[],regtype[],jsonb) RENAME TO _reconcile_ranges;
ALTER FUNCTION syncguard.reconcile_rows_query(regclass,regclass,text[],text[],text) RENAME TO _reconcile_rows_query;
ALTER FUNCTION syncguard.reconcile_segment(text[],regtype[],jsonb) RENAME TO _reconcile_segment;
ALTER FUNCTION syncguard.reconcile_where(text[],regtype[],jsonb,integer[]) RENAME TO _reconcile_where;
ALTER FUNCTION syncguard.require_owner(regclass) RENAME TO _require_owner;
ALTER FUNCTION syncguard.run_invariant_check(text,text) RENAME TO _run_invariant_check;
ALTER FUNCTION syncguard.sync_locked_run(bigint,text) RENAME TO _sync_locked_run;
ALTER FUNCTION syncguard.sync_source_owner(text) RENAME TO _sync_source_owner;

-- sql/install/idempotency.sql
CREATE OR REPLACE FUNCTION syncguard._idem_lease_lost(tok uuid, caller text, scope text)
RETURNS void
LANGUAGE plpgsql VOLATILE
SET search_path = pg_catalog, pg_temp
SET enable_seqscan = off
SET enable_bitmapscan = off
AS $$
DECLARE
    cur record;
BEGIN
    SELECT k.scope, k.key, k.status INTO cur
      FROM syncguard.idempotency_keys AS k
     WHERE k.lease_token = tok AND (_idem_lease_lost.scope IS NULL OR k.scope = _idem_lease_lost.scope)
       AND k.owner_role = current_user;
    IF FOUND THEN
        RAISE EXCEPTION USING ERRCODE = 'SG002',
            MESSAGE = format('%s: idempotency key %L in scope %L is already %s; nothing changed',
                             caller, cur.key, cur.scope, cur.status),
            HINT = 'A key is completed or failed once per claim; claim it again to retry.';
    END IF;
    RAISE EXCEPTION USING ERRCODE = 'SG002',
        MESSAGE = format('%s: the token holds no lease; nothing changed', caller),
        DETAIL = 'The token is unknown, or its lease expired and another claim took the key over.',
        HINT = 'The work may be running again elsewhere: make it safe to repeat, or use a longer lease.';
END
$$;

-- idem_claim and idem_complete are C now (src/idempotency.rs); idem_claim
-- takes `complete`, a response stored at once for work in its transaction.
DROP FUNCTION syncguard.idem_claim(text, text, jsonb, interval, interval, text[]);
CREATE FUNCTION syncguard.idem_claim(
    scope text,
    key text,
    request jsonb,
    lease interval DEFAULT '30 seconds',
    ttl interval DEFAULT '24 hours',
    ignore text[] DEFAULT NULL,
    complete jsonb DEFAULT NULL,
    OUT outcome text,
    OUT token uuid,
    OUT response jsonb,
    OUT attempt integer,
    OUT retry_at timestamptz
)
LANGUAGE c VOLATILE
AS 'MODULE_PATHNAME', 'idem_claim_wrapper';
GRANT EXECUTE ON FUNCTION syncguard.idem_claim(text, text, jsonb, interval, interval, text[], jsonb) TO PUBLIC;
COMMENT ON FUNCTION syncguard.idem_claim(text, text, jsonb, interval, interval, text[], jsonb) IS
    'claim an idempotency key: claimed, replay, in_progress, retry_later or dead';

CREATE OR REPLACE FUNCTION syncguard.idem_complete(token uuid, response jsonb, scope text DEFAULT NULL)
RETURNS void
LANGUAGE c VOLATILE
AS 'MODULE_PATHNAME', 'idem_complete_wrapper';

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
        PERFORM syncguard._idem_lease_lost(token, 'idem_fail', scope);
    END IF;
END
$$;


-- sql/install/sync.sql
CREATE OR REPLACE FUNCTION syncguard._sync_source_owner(source text)
RETURNS text
LANGUAGE sql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
    SELECT syncguard._name_owner(ARRAY(SELECT s.owner_role FROM syncguard.sync_sources AS s WHERE s.source = $1),
                                 $1, 'sync source')
$$;

CREATE OR REPLACE FUNCTION syncguard.sync_begin(source text, parts text[] DEFAULT NULL,
                                     OUT run_id bigint, OUT since timestamptz)
LANGUAGE plpgsql VOLATILE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    t     timestamptz := clock_timestamp();
    owner text := coalesce(syncguard._sync_source_owner(sync_begin.source), current_user);
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

CREATE OR REPLACE FUNCTION syncguard._sync_locked_run(run_id bigint, caller text)
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
     WHERE x.run_id = _sync_locked_run.run_id;
    IF NOT FOUND THEN
        RAISE EXCEPTION USING ERRCODE = '22023',
            MESSAGE = format('%s: there is no sync run %s', caller, run_id),
            HINT = 'Pass the run_id sync_begin returned; runs of other roles are not visible.';
    END IF;
    -- A run's source never changes, so locking it after the lookup is safe.
    PERFORM FROM syncguard.sync_sources AS s WHERE s.source = src AND s.owner_role = owner FOR NO KEY UPDATE;
    PERFORM syncguard.sync_abandon_stale(src);
    SELECT * INTO r FROM syncguard.sync_runs AS x
     WHERE x.source = src AND x.run_id = _sync_locked_run.run_id FOR NO KEY UPDATE;
    RETURN r;
END
$$;

CREATE OR REPLACE FUNCTION syncguard.sync_part(run_id bigint, part text, ok boolean, error text DEFAULT NULL,
                                    records integer DEFAULT 0, latency interval DEFAULT NULL)
RETURNS void
LANGUAGE plpgsql VOLATILE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    t timestamptz := clock_timestamp();
    r syncguard.sync_runs;
BEGIN
    IF part IS NULL OR part = '' OR ok IS NULL THEN
        RAISE EXCEPTION USING ERRCODE = '22004',
            MESSAGE = 'sync_part: part must be a non-empty name and ok must not be NULL',
            HINT = 'Report each part once it is done: sync_part(run_id, ''orders'', true).';
    END IF;
    IF records < 0 OR latency < interval '0' THEN
        RAISE EXCEPTION USING ERRCODE = '22023',
            MESSAGE = format('sync_part: records and latency must not be negative, got %s and %s',
                             records, coalesce(latency::text, 'NULL')),
            HINT = 'records counts what the part synced; latency is how long its call took.';
    END IF;
    r := syncguard._sync_locked_run(run_id, 'sync_part');
    IF r.status <> 'running' THEN
        RAISE EXCEPTION USING ERRCODE = 'SG006',
            MESSAGE = format('sync_part: sync run %s of source %L is already %s; nothing recorded',
                             r.run_id, r.source, r.status),
            DETAIL = r.error,
            HINT = 'Begin a new run with sync_begin; a run past its timeout never advances the watermark.';
    END IF;
    IF r.parts IS NOT NULL AND NOT part = ANY (r.parts) THEN
        RAISE EXCEPTION USING ERRCODE = '22023',
            MESSAGE = format('sync_part: part %L is not one of the run''s declared parts %s', part, r.parts),
            HINT = 'Declare every part in sync_begin(source, parts), or pass NULL parts.';
    END IF;
    INSERT INTO syncguard.sync_parts AS p
           (source, run_id, part, owner_role, ok, error, records, latency, reported_at)
    VALUES (r.source, r.run_id, sync_part.part, r.owner_role, sync_part.ok, sync_part.error,
            coalesce(sync_part.records, 0), sync_part.latency, t)
    ON CONFLICT ON CONSTRAINT sync_parts_pkey DO UPDATE
       SET ok = excluded.ok, error = excluded.error, records = excluded.records,
           latency = excluded.latency, reports = p.reports + 1, reported_at = excluded.reported_at;
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
    r := syncguard._sync_locked_run(run_id, 'sync_finish');
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
    owner := coalesce(syncguard._sync_source_owner(sync_configure.source), current_user);
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

CREATE OR REPLACE FUNCTION syncguard.sync_prune(older_than interval, source text DEFAULT NULL)
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
        owner := syncguard._sync_source_owner(sync_prune.source);
    END IF;
    RETURN syncguard._delete_visible('syncguard.sync_runs', ARRAY(
        SELECT jsonb_build_object('run_id', r.run_id, 'source', r.source) FROM syncguard.sync_runs AS r
         WHERE r.status <> 'running' AND r.finished_at < clock_timestamp() - older_than
           AND (sync_prune.source IS NULL OR (r.source = sync_prune.source AND r.owner_role = owner))
           FOR UPDATE));
END
$$;

CREATE OR REPLACE FUNCTION syncguard.sync_drop(source text)
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
    owner := syncguard._sync_source_owner(sync_drop.source);
    RETURN syncguard._delete_visible('syncguard.sync_sources', ARRAY(
        SELECT jsonb_build_object('source', s.source, 'owner_role', s.owner_role) FROM syncguard.sync_sources AS s
         WHERE s.source = sync_drop.source AND s.owner_role = owner FOR UPDATE)) > 0;
END
$$;


-- sql/install/queue.sql
CREATE OR REPLACE FUNCTION syncguard._queue_owner(queue text)
RETURNS text
LANGUAGE sql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
    SELECT syncguard._name_owner(ARRAY(SELECT q.owner_role FROM syncguard.queues AS q WHERE q.queue = $1
                                       UNION
                                       SELECT j.owner_role FROM syncguard.queue_jobs AS j WHERE j.queue = $1),
                                 $1, 'queue')
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
            PERFORM syncguard._queue_lease_expired(id, $1);
        END IF;
    END LOOP;
END
$$;

CREATE OR REPLACE FUNCTION syncguard._queue_lease_expired(job_id bigint, queue text)
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
     WHERE x.job_id = _queue_lease_expired.job_id AND x.queue = _queue_lease_expired.queue
       AND x.state = 'leased' AND x.visible_at <= clock_timestamp()
       FOR UPDATE;
    IF FOUND THEN
        -- The consumer died or hung: as if it had nacked the attempt.
        PERFORM syncguard.nack(job_id, format('lease of attempt %s expired without ack or nack', attempts),
                               true, attempts);
    END IF;
END
$$;

CREATE OR REPLACE FUNCTION syncguard._queue_leased_job(job_id bigint, attempt integer, caller text)
RETURNS syncguard.queue_jobs
LANGUAGE plpgsql VOLATILE
SET search_path = pg_catalog, pg_temp
SET enable_seqscan = off
SET enable_bitmapscan = off
AS $$
DECLARE
    j syncguard.queue_jobs;
BEGIN
    IF job_id IS NULL THEN
        RAISE EXCEPTION USING ERRCODE = '22004',
            MESSAGE = format('%s: job_id must not be NULL', caller),
            HINT = 'Pass the job_id dequeue returned.';
    END IF;
    SELECT * INTO j FROM syncguard.queue_jobs AS x WHERE x.job_id = _queue_leased_job.job_id FOR UPDATE;
    IF NOT FOUND THEN
        RAISE EXCEPTION USING ERRCODE = 'SG007',
            MESSAGE = format('%s: job %s does not exist (already acked, purged, or another role''s)', caller, job_id),
            HINT = 'A job is acked or nacked once per delivery.';
    END IF;
    IF j.state <> 'leased' OR (attempt IS NOT NULL AND attempt <> j.attempts) THEN
        RAISE EXCEPTION USING ERRCODE = 'SG007',
            MESSAGE = format('%s: job %s of queue %L is not leased at attempt %s; nothing changed',
                             caller, j.job_id, j.queue, coalesce(attempt, j.attempts)),
            DETAIL = format('The job is %s at attempt %s.', j.state, j.attempts),
            HINT = 'The visibility timeout may have passed and the job been handed out again: use a longer visibility.';
    END IF;
    RETURN j;
END
$$;

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
        PERFORM syncguard._queue_leased_job(job_id, attempt, 'ack');
    END IF;
END
$$;

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
    j := syncguard._queue_leased_job(job_id, attempt, 'nack');
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

CREATE OR REPLACE FUNCTION syncguard.queue_drop(queue text)
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
    owner := syncguard._queue_owner(queue_drop.queue);
    n := syncguard._delete_visible('syncguard.queue_jobs', ARRAY(
        SELECT jsonb_build_object('job_id', j.job_id, 'queue', j.queue) FROM syncguard.queue_jobs AS j
         WHERE j.queue = queue_drop.queue AND j.owner_role = owner FOR UPDATE));
    PERFORM syncguard._delete_visible('syncguard.queues', ARRAY(
        SELECT jsonb_build_object('queue', q.queue, 'owner_role', q.owner_role) FROM syncguard.queues AS q
         WHERE q.queue = queue_drop.queue AND q.owner_role = owner));
    RETURN n;
END
$$;

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
    owner := coalesce(syncguard._queue_owner(queue_configure.queue), current_user);
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


-- sql/install/protect.sql
CREATE OR REPLACE FUNCTION syncguard._require_owner(target regclass) RETURNS text
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

CREATE OR REPLACE FUNCTION syncguard._protect_partition_check(target regclass, qualified text) RETURNS void
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

CREATE OR REPLACE FUNCTION syncguard._inheritance_children(target regclass) RETURNS SETOF regclass
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

CREATE OR REPLACE FUNCTION syncguard.protect(target regclass, columns text[] DEFAULT NULL, policy jsonb DEFAULT NULL)
RETURNS void
LANGUAGE plpgsql VOLATILE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    qualified text := syncguard._require_owner(target);
    config text;
    events text;
    child regclass;
BEGIN
    PERFORM syncguard._protect_partition_check(target, qualified);
    -- Serializes protect/unprotect of one table and keeps writers out while
    -- the trigger is replaced.
    EXECUTE format('LOCK TABLE %s IN SHARE ROW EXCLUSIVE MODE', target);
    config := syncguard._protect_config(target, columns, policy);
    -- Rows of inheritance children are updated through the parent but keep
    -- their own triggers: each child gets the parent's protection, under
    -- its own name. Children created later show in protected_tables.
    -- INSERTs too when the policy has something to do for a new row: check
    -- a last_write_wins timestamp's clock skew, stamp freshness companions.
    events := CASE WHEN config::jsonb -> 'policy' ?| ARRAY['last_write_wins', 'freshness']
                   THEN 'INSERT OR UPDATE' ELSE 'UPDATE' END;
    FOR child IN SELECT target UNION ALL SELECT syncguard._inheritance_children(target) LOOP
        IF EXISTS (SELECT 1 FROM pg_trigger WHERE tgrelid = child AND tgname = 'syncguard_protect') THEN
            EXECUTE format('DROP TRIGGER syncguard_protect ON %s', child);
        END IF;
        EXECUTE format('CREATE TRIGGER syncguard_protect BEFORE %s ON %s FOR EACH ROW '
                       'EXECUTE FUNCTION syncguard._protect_trigger(%L, %L)',
                       events, child, syncguard._require_owner(child), config);
    END LOOP;
END
$$;

CREATE OR REPLACE FUNCTION syncguard.unprotect(target regclass) RETURNS boolean
LANGUAGE plpgsql VOLATILE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    qualified text := syncguard._require_owner(target);
    child regclass;
    was boolean;
BEGIN
    PERFORM syncguard._protect_partition_check(target, qualified);
    was := EXISTS (SELECT 1 FROM pg_trigger WHERE tgrelid = target AND tgname = 'syncguard_protect');
    FOR child IN SELECT target UNION ALL SELECT syncguard._inheritance_children(target) LOOP
        PERFORM syncguard._require_owner(child);
        IF EXISTS (SELECT 1 FROM pg_trigger WHERE tgrelid = child AND tgname = 'syncguard_protect') THEN
            EXECUTE format('DROP TRIGGER syncguard_protect ON %s', child);
        END IF;
    END LOOP;
    RETURN was;
END
$$;


-- sql/install/invariants.sql
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

    stmt := syncguard._invariant_query_text(query);
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

CREATE OR REPLACE FUNCTION syncguard._run_invariant_check(
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
    owner_name text := _run_invariant_check.owner_role;
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
        owner_name := syncguard._invariant_owner(inv_name);
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
          FROM syncguard._invariant_check_run(owner, inv.view_name,
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
            SELECT pg_notify('syncguard_alerts', syncguard._alert_payload('new_episode', inv.name, o.id))
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
        PERFORM pg_notify('syncguard_alerts', syncguard._alert_payload('check_error', inv.name, run_id));
    END IF;
    UPDATE syncguard.invariants i
       SET last_run_at = t0, last_status = _run_invariant_check.status, last_error = _run_invariant_check.error
     WHERE i.name = inv.name AND i.owner_role = inv.owner_role;
END
$$;

-- check_invariants, check_due_invariants and audit return the owner too (a
-- new last column): made again.
DROP FUNCTION syncguard.check_invariants(text);
DROP FUNCTION syncguard.check_due_invariants();
DROP FUNCTION syncguard.audit();

CREATE FUNCTION syncguard.check_invariants(name text DEFAULT NULL)
RETURNS TABLE (invariant text, status text, violations integer, new_episodes integer,
               resolved integer, duration interval, error text, owner_role text)
LANGUAGE plpgsql VOLATILE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    n text;
    o text;
    owner text;
BEGIN
    IF name IS NOT NULL THEN
        owner := syncguard._invariant_owner(name);
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
        RETURN QUERY SELECT r.*, o FROM syncguard._run_invariant_check(n, o) r WHERE r.invariant IS NOT NULL;
    END LOOP;
END
$$;

CREATE FUNCTION syncguard.check_due_invariants()
RETURNS TABLE (invariant text, status text, violations integer, new_episodes integer,
               resolved integer, duration interval, error text, owner_role text)
LANGUAGE sql VOLATILE
SET search_path = pg_catalog, pg_temp
AS $$
    SELECT r.*, d.owner_role FROM syncguard.due_invariants() AS d,
                    LATERAL syncguard._run_invariant_check(d.name, d.owner_role) AS r
     WHERE r.invariant IS NOT NULL
$$;

CREATE FUNCTION syncguard.audit()
RETURNS TABLE (invariant text, status text, severity text, open_violations bigint,
               oldest_violation_age interval, last_run timestamptz, last_error text,
               remediation text, owner_role text)
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
           i.remediation,
           i.owner_role
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

GRANT EXECUTE ON FUNCTION
    syncguard.check_invariants(text),
    syncguard.check_due_invariants(),
    syncguard.audit()
    TO PUBLIC;

COMMENT ON FUNCTION syncguard.check_invariants(text) IS
    'run every enabled invariant check (or the one named), each isolated, with its own timeout';
COMMENT ON FUNCTION syncguard.check_due_invariants() IS
    'run the due invariant checks (for pg_cron)';
COMMENT ON FUNCTION syncguard.audit() IS
    'one row per invariant, worst first: status, open violations, oldest age, remediation';


-- sql/install/invariant_templates.sql
CREATE OR REPLACE FUNCTION syncguard._invariant_column(target regclass, col text, want regtype DEFAULT NULL)
RETURNS text
LANGUAGE plpgsql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    typ regtype;
BEGIN
    IF col IS NULL THEN
        RAISE EXCEPTION USING ERRCODE = '22004',
            MESSAGE = format('a column name of %s is NULL', target),
            HINT = 'Name the columns of the table the invariant checks.';
    END IF;
    SELECT a.atttypid::regtype INTO typ
      FROM pg_attribute a
     WHERE a.attrelid = target AND a.attname = col AND a.attnum > 0 AND NOT a.attisdropped;
    IF NOT FOUND THEN
        RAISE EXCEPTION USING ERRCODE = '42703',
            MESSAGE = format('column %I of %s does not exist', col, target),
            HINT = 'Column names are case-sensitive here: pass them as stored (\d shows them).';
    END IF;
    IF want IS NOT NULL AND typ <> want THEN
        RAISE EXCEPTION USING ERRCODE = '42804',
            MESSAGE = format('column %I of %s is %s, not %s', col, target, typ, want),
            HINT = 'Use define_invariant with a query that converts it.';
    END IF;
    RETURN format('t.%I', col);
END
$$;

CREATE OR REPLACE FUNCTION syncguard._invariant_entity(target regclass, key_columns text[] DEFAULT NULL)
RETURNS text
LANGUAGE plpgsql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    cols text[] := key_columns;
BEGIN
    IF cols IS NULL THEN
        SELECT array_agg(a.attname::text ORDER BY k.ord) INTO cols
          FROM pg_index i
          CROSS JOIN LATERAL unnest(i.indkey) WITH ORDINALITY AS k(attnum, ord)
          JOIN pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = k.attnum
         WHERE i.indrelid = target AND i.indisprimary;
    END IF;
    IF coalesce(cardinality(cols), 0) = 0 THEN
        RAISE EXCEPTION USING ERRCODE = '42P10',
            MESSAGE = format('%s has no primary key to identify its rows', target),
            HINT = 'Pass key_columns: the columns that identify a row.';
    END IF;
    IF cardinality(cols) = 1 THEN
        RETURN syncguard._invariant_column(target, cols[1]) || '::text';
    END IF;
    RETURN format('jsonb_build_array(%s)::text',
                  (SELECT string_agg(syncguard._invariant_column(target, c), ', ' ORDER BY o)
                     FROM unnest(cols) WITH ORDINALITY AS u(c, o)));
END
$$;

CREATE OR REPLACE FUNCTION syncguard.invariant_duplicates(
    name text,
    target regclass,
    key_columns text[],
    since_column text DEFAULT NULL,
    grace interval DEFAULT '0',
    severity text DEFAULT 'error',
    remediation text DEFAULT NULL,
    schedule interval DEFAULT '5 minutes'
) RETURNS regclass
LANGUAGE plpgsql VOLATILE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    keys text;
    not_null text;
    since text := '''-infinity''::timestamptz';
BEGIN
    IF coalesce(cardinality(key_columns), 0) = 0 THEN
        RAISE EXCEPTION USING ERRCODE = '22023',
            MESSAGE = format('invariant %L: key_columns must name at least one column', name),
            HINT = 'Pass the columns that should be unique, e.g. ARRAY[''email''].';
    END IF;
    SELECT string_agg(syncguard._invariant_column(target, c), ', ' ORDER BY o),
           string_agg(syncguard._invariant_column(target, c) || ' IS NOT NULL', ' AND ' ORDER BY o)
      INTO keys, not_null
      FROM unnest(key_columns) WITH ORDINALITY AS u(c, o);
    IF since_column IS NOT NULL THEN
        since := format('(array_agg(%1$s ORDER BY %1$s))[2]',
                        syncguard._invariant_column(target, since_column, 'timestamptz'));
    END IF;
    RETURN syncguard.define_invariant(
        name,
        format('SELECT %s AS entity, %s AS since, count(*) AS copies FROM %s AS t WHERE %s GROUP BY %s HAVING count(*) > 1',
               syncguard._invariant_entity(target, key_columns), since, target, not_null, keys),
        grace => grace, severity => severity,
        remediation => coalesce(remediation, format('Merge or delete the duplicate rows of %s, then add a unique index on (%s).',
                                                    target, array_to_string(key_columns, ', '))),
        description => format('rows of %s with the same %s', target, array_to_string(key_columns, ', ')),
        schedule => schedule, search_path => 'pg_catalog, pg_temp');
END
$$;

CREATE OR REPLACE FUNCTION syncguard.invariant_not_synced_within(
    name text,
    target regclass,
    synced_at_column text,
    within interval,
    key_columns text[] DEFAULT NULL,
    grace interval DEFAULT '0',
    severity text DEFAULT 'error',
    remediation text DEFAULT NULL,
    schedule interval DEFAULT '5 minutes'
) RETURNS regclass
LANGUAGE plpgsql VOLATILE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    synced text := syncguard._invariant_column(target, synced_at_column, 'timestamptz');
BEGIN
    IF within IS NULL OR within <= interval '0' THEN
        RAISE EXCEPTION USING ERRCODE = '22023',
            MESSAGE = format('invariant %L: within must be a positive interval, got %s', name, coalesce(within::text, 'NULL')),
            HINT = 'Pass how often rows must be synced, e.g. ''1 hour''.';
    END IF;
    RETURN syncguard.define_invariant(
        name,
        format('SELECT %s AS entity, %s + %L::interval AS since FROM %s AS t WHERE %2$s < now() - %3$L::interval',
               syncguard._invariant_entity(target, key_columns), synced, within, target),
        grace => grace, severity => severity,
        remediation => coalesce(remediation, format('Find why the sync of %s stopped for these rows (its log, its retry queue) and re-sync them.', target)),
        description => format('rows of %s not synced within %s (%s)', target, within, synced_at_column),
        schedule => schedule, search_path => 'pg_catalog, pg_temp');
END
$$;

CREATE OR REPLACE FUNCTION syncguard.invariant_never_synced(
    name text,
    target regclass,
    synced_at_column text,
    created_at_column text DEFAULT NULL,
    key_columns text[] DEFAULT NULL,
    grace interval DEFAULT '0',
    severity text DEFAULT 'error',
    remediation text DEFAULT NULL,
    schedule interval DEFAULT '5 minutes'
) RETURNS regclass
LANGUAGE plpgsql VOLATILE
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    RETURN syncguard.define_invariant(
        name,
        format('SELECT %s AS entity, %s AS since FROM %s AS t WHERE %s IS NULL',
               syncguard._invariant_entity(target, key_columns),
               CASE WHEN created_at_column IS NULL THEN '''-infinity''::timestamptz'
                    ELSE syncguard._invariant_column(target, created_at_column, 'timestamptz') END,
               target, syncguard._invariant_column(target, synced_at_column, 'timestamptz')),
        grace => grace, severity => severity,
        remediation => coalesce(remediation, format('Check that new rows of %s reach the sync job (its queue, its filters) and sync them.', target)),
        description => format('rows of %s never synced (%s is NULL)', target, synced_at_column),
        schedule => schedule, search_path => 'pg_catalog, pg_temp');
END
$$;

CREATE OR REPLACE FUNCTION syncguard.invariant_future_timestamps(
    name text,
    target regclass,
    ts_column text,
    skew interval DEFAULT '5 minutes',
    key_columns text[] DEFAULT NULL,
    severity text DEFAULT 'warning',
    remediation text DEFAULT NULL,
    schedule interval DEFAULT '5 minutes'
) RETURNS regclass
LANGUAGE plpgsql VOLATILE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    col text := syncguard._invariant_column(target, ts_column, 'timestamptz');
BEGIN
    IF skew IS NULL OR skew < interval '0' THEN
        RAISE EXCEPTION USING ERRCODE = '22023',
            MESSAGE = format('invariant %L: skew must not be negative, got %s', name, coalesce(skew::text, 'NULL')),
            HINT = 'Pass the clock difference to tolerate, e.g. ''5 minutes''.';
    END IF;
    RETURN syncguard.define_invariant(
        name,
        format('SELECT %s AS entity, ''-infinity''::timestamptz AS since, %s AS value FROM %s AS t WHERE %2$s > now() + %4$L::interval',
               syncguard._invariant_entity(target, key_columns), col, target, skew),
        severity => severity,
        remediation => coalesce(remediation, format('Fix the clock (or time zone) of the writer of %s.%s, then correct the rows.', target, ts_column)),
        description => format('rows of %s with %s more than %s in the future', target, ts_column, skew),
        schedule => schedule, search_path => 'pg_catalog, pg_temp');
END
$$;


-- sql/install/housekeeping.sql
CREATE OR REPLACE FUNCTION syncguard._fold_stale_writes() RETURNS bigint
LANGUAGE sql VOLATILE SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
    WITH gone AS (
        DELETE FROM syncguard.stale_writes s
         WHERE s.backend_pid <> 0
           AND NOT EXISTS (SELECT 1 FROM pg_catalog.pg_stat_activity a WHERE a.pid = s.backend_pid)
        RETURNING s.table_name, s.ignored, s.last_ignored_at
    ), folded AS (
        INSERT INTO syncguard.stale_writes AS s (table_name, backend_pid, ignored, last_ignored_at)
        SELECT g.table_name, 0, sum(g.ignored), max(g.last_ignored_at)
          FROM gone g
         GROUP BY g.table_name
        ON CONFLICT (table_name, backend_pid) DO UPDATE
           SET ignored = s.ignored + excluded.ignored,
               last_ignored_at = greatest(s.last_ignored_at, excluded.last_ignored_at)
    )
    SELECT count(*) FROM gone
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

    task := 'stale write counters folded'; affected := syncguard._fold_stale_writes();
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


-- sql/install/reconcile.sql
CREATE OR REPLACE FUNCTION syncguard._reconcile_columns(
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

-- _reconcile_hash takes `exact`: the hash of single rows, which tells apart
-- what jsonb's hash does not.
DROP FUNCTION syncguard._reconcile_hash(text, regtype, integer);
CREATE OR REPLACE FUNCTION syncguard._reconcile_hash(col text, typ regtype, seed integer, exact boolean)
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
        -- (its opclass's function takes timestamp, the array's hash calls it for
        -- timestamptz; the cast to timestamp depends on the time zone. Not
        -- timezone('UTC', …): postgres_fdw keeps a function with a text
        -- constant argument local.)
        WHEN 'timestamptz'::regtype THEN format('CASE WHEN pg_catalog.isfinite(%1$s)'
                                                ' THEN pg_catalog.interval_hash_extended(%1$s OPERATOR(pg_catalog.-) ''2000-01-01 00:00:00+00''::pg_catalog.timestamptz, %2$s)'
                                                ' ELSE pg_catalog.hash_array_extended(ARRAY[%1$s], %2$s) END', col, seed)
        WHEN 'date'::regtype THEN format('pg_catalog.timestamp_hash_extended(pg_catalog."timestamp"(%s), %s)', col, seed)
        WHEN 'bool'::regtype THEN format('pg_catalog.hashint4extended(pg_catalog.int4(%s), %s)', col, seed)
        WHEN 'numeric'::regtype THEN format('pg_catalog.hash_numeric_extended(%1$s, CASE WHEN %1$s OPERATOR(pg_catalog.<) 0::pg_catalog.numeric'
                                            ' THEN %2$s ELSE %3$s END)', col, -1 - seed, seed)
        WHEN 'jsonb'::regtype THEN CASE WHEN exact THEN
            format('pg_catalog.hash_array_extended(ARRAY[pg_catalog.jsonb_send(%s)], %s)', col, seed) END
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
GRANT EXECUTE ON FUNCTION syncguard._reconcile_hash(text, regtype, integer, boolean) TO PUBLIC;
COMMENT ON FUNCTION syncguard._reconcile_hash(text, regtype, integer, boolean) IS
    'internal: the SQL of a column''s 64-bit hash, the same on every server';

CREATE OR REPLACE FUNCTION syncguard._reconcile_compare(cols text[], types regtype[], bound jsonb, op text)
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

CREATE OR REPLACE FUNCTION syncguard._reconcile_bucket(col text, typ regtype, vals jsonb)
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
                  syncguard._reconcile_bucket(col, typ,
                      (SELECT jsonb_agg(e.v ORDER BY e.o) FROM jsonb_array_elements(vals) WITH ORDINALITY AS e(v, o)
                        WHERE e.o % k = 0)),
                  (SELECT string_agg(format(' WHEN %s THEN %s', j, CASE WHEN f.vals IS NULL THEN (j * k)::text
                                     ELSE format('%s + %s', j * k, syncguard._reconcile_bucket(col, typ, f.vals)) END), '' ORDER BY j)
                     FROM generate_series(0, n / k) AS j
                     CROSS JOIN LATERAL (SELECT jsonb_agg(e.v ORDER BY e.o) AS vals
                                           FROM jsonb_array_elements(vals) WITH ORDINALITY AS e(v, o)
                                          WHERE e.o > j * k AND e.o < (j + 1) * k) AS f));
END
$$;

CREATE OR REPLACE FUNCTION syncguard._reconcile_segment(cols text[], types regtype[], bounds jsonb)
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
    expr := syncguard._reconcile_bucket(cols[1], types[1],
                                       (SELECT jsonb_agg(e.b -> 0 ORDER BY e.o)
                                          FROM jsonb_array_elements(bounds) WITH ORDINALITY AS e(b, o)));
    IF cardinality(cols) = 1 THEN
        RETURN expr;
    END IF;
    SELECT string_agg(format(' WHEN %s OPERATOR(pg_catalog.=) %L::%s THEN %s - %s',
                             cols[1], g.v, types[1],
                             syncguard._reconcile_segment(cols[2:], types[2:], g.rests),
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

CREATE OR REPLACE FUNCTION syncguard._reconcile_rows_query(
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
      FROM syncguard._reconcile_columns(local, remote, key_columns, columns) AS c;
    -- Any key column tells a missing side: key values are never NULL.
    SELECT format('%I', c.name) INTO k1
      FROM syncguard._reconcile_columns(local, remote, key_columns, columns) AS c WHERE c.is_key LIMIT 1;
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

CREATE OR REPLACE FUNCTION syncguard._reconcile_where(cols text[], types regtype[], bounds jsonb, segs integer[])
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
        RETURN syncguard._reconcile_ranges(cols, types, ranges);
    END IF;
    RETURN format('%s OPERATOR(pg_catalog.=) ANY (%L::pg_catalog.int4[])',
                  syncguard._reconcile_segment(cols, types, bounds), segs);
END
$$;

-- reconcile hashes rows with syncguard's own row hash and checksum
-- aggregate where the remote server has syncguard too.
-- The row hash computed by syncguard itself (src/reconcile_hash.rs), a
-- fraction of the cost of the built-in hash functions (above all jsonb's);
-- a jsonb document's structure and its numbers' signs count in it. And the
-- checksums of a side in one aggregate without GROUP BY: `{segment, count,
-- sum of row hashes, …}` for every segment (a number 0 … 2^24 - 1) with
-- rows. A GROUP BY over the segment, whose number of groups the planner
-- takes for that of the key, is planned as a sort of every row. reconcile
-- uses them where syncguard hashes both sides' rows (see
-- _reconcile_row_hash_args).
CREATE FUNCTION syncguard._reconcile_row_hash(VARIADIC "any")
RETURNS bigint
LANGUAGE c IMMUTABLE PARALLEL SAFE
AS 'MODULE_PATHNAME', 'reconcile_row_hash_wrapper';

-- Whether _reconcile_row_hash takes values of a type (its list, asked
-- rather than written again here).
CREATE FUNCTION syncguard._reconcile_row_hash_takes(typ regtype)
RETURNS boolean
LANGUAGE c STABLE STRICT PARALLEL SAFE
AS 'MODULE_PATHNAME', 'reconcile_row_hash_takes_wrapper';

CREATE FUNCTION syncguard._reconcile_checksums_step(internal, integer, VARIADIC "any")
RETURNS internal
LANGUAGE c IMMUTABLE PARALLEL SAFE
AS 'MODULE_PATHNAME', 'reconcile_checksums_step_wrapper';

CREATE FUNCTION syncguard._reconcile_checksums_final(internal)
RETURNS bigint[]
LANGUAGE c IMMUTABLE PARALLEL SAFE
AS 'MODULE_PATHNAME', 'reconcile_checksums_final_wrapper';

CREATE AGGREGATE syncguard._reconcile_checksums(integer, VARIADIC "any") (
    SFUNC = syncguard._reconcile_checksums_step,
    STYPE = internal,
    FINALFUNC = syncguard._reconcile_checksums_final,
    PARALLEL = SAFE
);

-- The arguments of _reconcile_row_hash over the compared columns (an
-- alias t) where syncguard hashes both tables' rows: each is a table of
-- this server, or a foreign table whose server lists syncguard in its
-- `extensions` option, so that postgres_fdw sends the calls to the remote.
-- NULL otherwise: every column then hashes by _reconcile_hash. The columns
-- of a type _reconcile_row_hash does not take come last, as one argument:
-- the XOR of their _reconcile_hash.
CREATE FUNCTION syncguard._reconcile_row_hash_args(
    local regclass, remote regclass, key_columns text[], columns text[])
RETURNS text
LANGUAGE plpgsql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    ours text;
    others text;
BEGIN
    IF NOT (SELECT bool_and(c.relkind <> 'f' OR EXISTS (
                    SELECT FROM pg_foreign_table ft
                      JOIN pg_foreign_server s ON s.oid = ft.ftserver
                     CROSS JOIN pg_options_to_table(s.srvoptions) AS o
                     WHERE ft.ftrelid = c.oid AND o.option_name = 'extensions'
                       AND 'syncguard' = ANY (SELECT lower(btrim(e, ' "')) FROM unnest(string_to_array(o.option_value, ',')) AS e)))
              FROM pg_class c
             WHERE c.oid IN (local, remote)) THEN
        RETURN NULL;
    END IF;
    SELECT string_agg(format('t.%I', c.name), ', ' ORDER BY c.o) FILTER (WHERE c.ours),
           string_agg(syncguard._reconcile_hash(format('t.%I', c.name), c.typ, (c.o - 1)::integer, true),
                      ' OPERATOR(pg_catalog.#) ' ORDER BY c.o) FILTER (WHERE NOT c.ours)
      INTO ours, others
      FROM (SELECT c.name, c.typ, c.o,
                   syncguard._reconcile_row_hash_takes(c.typ) AS ours
              FROM syncguard._reconcile_columns(local, remote, key_columns, columns)
                   WITH ORDINALITY AS c(name, typ, is_key, o)) AS c;
    RETURN concat_ws(', ', ours, others);
END
$$;

GRANT EXECUTE ON FUNCTION
    syncguard._reconcile_row_hash("any"),
    syncguard._reconcile_row_hash_takes(regtype),
    syncguard._reconcile_checksums(integer, "any"),
    syncguard._reconcile_row_hash_args(regclass, regclass, text[], text[])
    TO PUBLIC;
COMMENT ON FUNCTION syncguard._reconcile_row_hash("any") IS
    'internal: the 64-bit hash of a row''s values, computed by syncguard on each server';
COMMENT ON AGGREGATE syncguard._reconcile_checksums(integer, VARIADIC "any") IS
    'internal: each segment''s count of rows and sum of row hashes, computed by syncguard on each server';
COMMENT ON FUNCTION syncguard._reconcile_checksums_step(internal, integer, "any") IS
    'internal: the step of _reconcile_checksums';
COMMENT ON FUNCTION syncguard._reconcile_checksums_final(internal) IS
    'internal: the result of _reconcile_checksums';
COMMENT ON FUNCTION syncguard._reconcile_row_hash_takes(regtype) IS
    'internal: whether _reconcile_row_hash takes values of a type';
COMMENT ON FUNCTION syncguard._reconcile_row_hash_args(regclass, regclass, text[], text[]) IS
    'internal: the arguments of _reconcile_row_hash when syncguard hashes both sides, else NULL';

CREATE OR REPLACE FUNCTION syncguard.reconcile(
    local regclass,
    remote regclass,
    key_columns text[] DEFAULT NULL,
    columns text[] DEFAULT NULL,
    segments integer DEFAULT 10000,
    threshold integer DEFAULT 200
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
    rowhash_exact text;  -- (the hash of single rows, see _reconcile_hash)
    hash_args text;      -- (see _reconcile_row_hash_args)
    key_json text;       -- jsonb_build_array of the key columns' text: a bound
    bounds jsonb := '[]';
    seg_expr text;
    cond text := 'true';
    pending_rows numeric;
    step bigint;
    sums_query text;
    leaves integer[];
    small integer[];
    pending integer[];
    small_cond text;
    rows_cond text;
    -- (parts of the query finding the keys of differing rows, an item per key column)
    found_keys text;         -- the keys found, as text arrays
    segment_keys text;       -- a segment's arrays of our keys (l1, …) and of the remote's (r1, …)
    remote_key_arrays text;  -- the remote's arrays of keys
    local_key_arrays text;   -- ours, in two steps: the rows' keys and hashes (local_keys),
    local_keys text;         -- then their arrays (sorting the rows by segment sorts narrow ones)
    either_key text;         -- the key of either side
    local_unnested text;     -- our keys, unnested
    remote_unnested text;    -- the remote's
    key_names text;          -- their names (k1, …)
    same_key text;           -- the join by key
    nkeys bigint;
    keyvals text[];
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
            HINT = 'Leave them out to take the defaults (10000 segments, 200 rows).';
    END IF;
    SELECT array_agg(format('t.%I', c.name)), array_agg(c.typ),
           string_agg(format('t.%I', c.name), ', '),
           format('pg_catalog.jsonb_build_array(%s)', string_agg(format('t.%I::pg_catalog.text', c.name), ', '))
      INTO kcols, ktypes, korder, key_json
      FROM syncguard._reconcile_columns(local, remote, key_columns, columns) AS c
     WHERE c.is_key;
    hash_args := syncguard._reconcile_row_hash_args(local, remote, key_columns, columns);
    IF hash_args IS NULL THEN
        SELECT string_agg(syncguard._reconcile_hash(format('t.%I', c.name), c.typ, (o - 1)::integer, false), ' OPERATOR(pg_catalog.#) ' ORDER BY o),
               string_agg(syncguard._reconcile_hash(format('t.%I', c.name), c.typ, (o - 1)::integer, true), ' OPERATOR(pg_catalog.#) ' ORDER BY o)
          INTO rowhash, rowhash_exact
          FROM syncguard._reconcile_columns(local, remote, key_columns, columns) WITH ORDINALITY AS c(name, typ, is_key, o);
    ELSE
        rowhash_exact := format('syncguard._reconcile_row_hash(%s)', hash_args);
    END IF;
    -- Parts of the query finding the keys of differing rows (see below),
    -- each with an item per key column.
    SELECT string_agg(format('pg_catalog.array_agg(d.k%s)::pg_catalog.text', i), ', ' ORDER BY i),
           string_agg(format('pg_catalog.max(a.k%1$s) FILTER (WHERE NOT a.side) AS l%1$s,'
                             ' pg_catalog.max(a.k%1$s) FILTER (WHERE a.side) AS r%1$s', i), ', ' ORDER BY i),
           string_agg(format('pg_catalog.array_agg(%s) AS k%s', kcols[i], i), ', ' ORDER BY i),
           string_agg(format('pg_catalog.array_agg(t.k%s)', i), ', ' ORDER BY i),
           string_agg(format('%s AS k%s', kcols[i], i), ', ' ORDER BY i),
           string_agg(format('COALESCE(l.k%1$s, r.k%1$s) AS k%1$s', i), ', ' ORDER BY i),
           string_agg(format('pg_catalog.unnest(p.l%s)', i), ', ' ORDER BY i),
           string_agg(format('pg_catalog.unnest(p.r%s)', i), ', ' ORDER BY i),
           string_agg(format('k%s', i), ', ' ORDER BY i),
           string_agg(format('l.k%1$s OPERATOR(pg_catalog.=) r.k%1$s', i), ' AND ' ORDER BY i)
      INTO found_keys, segment_keys, remote_key_arrays, local_key_arrays, local_keys,
           either_key, local_unnested, remote_unnested, key_names, same_key
      FROM generate_subscripts(kcols, 1) AS i;
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
                key_json, syncguard._reconcile_segment(kcols, ktypes, bounds),
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
            seg_expr := syncguard._reconcile_segment(kcols, ktypes, bounds);
        END IF;
        -- Both sides' count and hash sum per segment (rows: side, s, n, h;
        -- side true for ours), the remote's computed by the remote server
        -- (one row per segment, or one row of them all, comes back). One
        -- statement: with the foreign server's async_capable option the
        -- two sides run at the same time. (The OFFSET 0 keeps the UNION ALL
        -- a set operation of its own: pulled up into the outer query, each
        -- side would sit under a Subquery Scan, and postgres_fdw runs a
        -- foreign scan asynchronously only directly under the Append.)
        IF hash_args IS NULL THEN
            sums_query := format(
                'SELECT false AS side, %1$s AS s, pg_catalog.count(*) AS n, pg_catalog.sum(%2$s) AS h FROM %4$s AS t WHERE %5$s GROUP BY 2'
                ' UNION ALL'
                ' SELECT true, %1$s, pg_catalog.count(*), pg_catalog.sum(%2$s) FROM %3$s AS t WHERE %5$s GROUP BY 2'
                ' OFFSET 0',
                seg_expr, rowhash, local, remote, cond);
        ELSE
            -- syncguard's aggregate: {segment, count, sum, …} in one row a side.
            sums_query := format(
                'SELECT u.side, u.a[i] AS s, u.a[i OPERATOR(pg_catalog.+) 1] AS n, u.a[i OPERATOR(pg_catalog.+) 2] AS h'
                '  FROM (SELECT false AS side, syncguard._reconcile_checksums(%1$s, %2$s) AS a FROM %4$s AS t WHERE %5$s'
                '        UNION ALL'
                '        SELECT true, syncguard._reconcile_checksums(%1$s, %2$s) FROM %3$s AS t WHERE %5$s'
                '        OFFSET 0) AS u'
                ' CROSS JOIN LATERAL pg_catalog.generate_series(1, pg_catalog.cardinality(u.a), 3) AS i'
                ' OFFSET 0',  -- (projected here: a row above must not carry the arrays)
                seg_expr, hash_args, local, remote, cond);
        END IF;
        -- Differing segments: small ones (of at most threshold rows on both
        -- sides) have the keys of their differing rows found by the rows'
        -- hashes; ones the local keys cannot cut further are compared row
        -- by row whole; the others go to the next pass.
        EXECUTE format(
            'SELECT coalesce(pg_catalog.array_agg(d.s) FILTER (WHERE d.small), ''{}''),'
            '       coalesce(pg_catalog.array_agg(d.s) FILTER (WHERE NOT d.small AND d.whole), ''{}''),'
            '       coalesce(pg_catalog.array_agg(d.s) FILTER (WHERE NOT d.small AND NOT d.whole), ''{}''),'
            '       coalesce(pg_catalog.sum(d.nl) FILTER (WHERE NOT d.small AND NOT d.whole), 0)'
            '  FROM (SELECT c.s, c.nl, GREATEST(c.nl, c.nr) OPERATOR(pg_catalog.<=) $1 AS small,'
            '               c.nl OPERATOR(pg_catalog.<) 2 OR $2 AS whole'
            '          FROM (SELECT x.s::pg_catalog.int4 AS s,'
            '                       coalesce(pg_catalog.max(x.n) FILTER (WHERE x.side), 0) AS nl,'
            '                       coalesce(pg_catalog.max(x.n) FILTER (WHERE NOT x.side), 0) AS nr'
            '                  FROM (%s) AS x'
            '                 GROUP BY x.s'
            '                HAVING pg_catalog.max(x.n) FILTER (WHERE x.side) IS DISTINCT FROM pg_catalog.max(x.n) FILTER (WHERE NOT x.side)'
            '                    OR pg_catalog.max(x.h) FILTER (WHERE x.side) IS DISTINCT FROM pg_catalog.max(x.h) FILTER (WHERE NOT x.side)) AS c) AS d',
            sums_query)
          INTO small, leaves, pending, pending_rows
          USING threshold, level >= 40;
        rows_cond := NULL;
        IF cardinality(small) > 0 THEN
            -- The keys (an array per key column, as text) of the rows of the
            -- small segments whose hash differs or which one side lacks:
            -- each side's keys and exact row hashes as arrays, one row per
            -- segment, the remote's computed by the remote server (few rows,
            -- and narrow, cross the network; with async_capable the two
            -- sides run at the same time, as for the checksums), then the
            -- two sides' rows of each segment joined by key. Only those rows
            -- are fetched whole.
            small_cond := syncguard._reconcile_where(kcols, ktypes, bounds, small);
            EXECUTE format(
                'SELECT pg_catalog.count(*), ARRAY[%1$s]'
                '  FROM (SELECT a.s, %2$s, pg_catalog.max(a.h) FILTER (WHERE NOT a.side) AS lh,'
                '               pg_catalog.max(a.h) FILTER (WHERE a.side) AS rh'
                '          FROM (SELECT true AS side, %11$s AS s, %3$s, pg_catalog.array_agg(%12$s) AS h'
                '                  FROM %13$s AS t WHERE %15$s GROUP BY 2'
                '                UNION ALL'
                '                SELECT false, t.s, %4$s, pg_catalog.array_agg(t.h)'
                '                  FROM (SELECT %11$s AS s, %5$s, %12$s AS h FROM %14$s AS t WHERE %15$s OFFSET 0) AS t GROUP BY 2'
                '                OFFSET 0) AS a'
                '         GROUP BY a.s) AS p'
                ' CROSS JOIN LATERAL (SELECT %6$s FROM ROWS FROM (%7$s, pg_catalog.unnest(p.lh)) AS l(%8$s, h)'
                '                       FULL JOIN ROWS FROM (%9$s, pg_catalog.unnest(p.rh)) AS r(%8$s, h) ON %10$s'
                '                      WHERE l.h IS DISTINCT FROM r.h) AS d',
                found_keys, segment_keys, remote_key_arrays, local_key_arrays, local_keys,
                either_key, local_unnested, key_names, remote_unnested, same_key,
                seg_expr, rowhash_exact, remote, local, small_cond)
              INTO nkeys, keyvals;
            IF nkeys > 100000 THEN
                -- (a condition as long as the rows: their segments instead)
                rows_cond := small_cond;
            ELSIF nkeys > 0 THEN
                -- Those keys: each key column among its values (a composite
                -- key within those segments too).
                SELECT concat_ws(' AND ', CASE WHEN cardinality(kcols) > 1 THEN format('(%s)', small_cond) END,
                                 string_agg(format('%s OPERATOR(pg_catalog.=) ANY (%L::%s[])', kcols[i], keyvals[i], ktypes[i]),
                                            ' AND ' ORDER BY i))
                  INTO rows_cond
                  FROM generate_subscripts(kcols, 1) AS i;
            END IF;
        END IF;
        IF cardinality(leaves) > 0 THEN
            rows_cond := concat_ws(' OR ', '(' || rows_cond || ')',
                                   format('(%s)', syncguard._reconcile_where(kcols, ktypes, bounds, leaves)));
        END IF;
        IF rows_cond IS NOT NULL THEN
            RETURN QUERY EXECUTE syncguard._reconcile_rows_query(local, remote, key_columns, columns, rows_cond);
        END IF;
        EXIT WHEN cardinality(pending) = 0;
        cond := syncguard._reconcile_where(kcols, ktypes, bounds, pending);
    END LOOP;
END
$$;

CREATE OR REPLACE FUNCTION syncguard.reconcile_apply(
    local regclass,
    remote regclass,
    key_columns text[] DEFAULT NULL,
    columns text[] DEFAULT NULL,
    segments integer DEFAULT 10000,
    threshold integer DEFAULT 200,
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
      FROM syncguard._reconcile_columns(local, remote, key_columns, columns) AS c;
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

CREATE OR REPLACE FUNCTION syncguard.invariant_reconcile(
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
    PERFORM FROM syncguard._reconcile_columns(local, remote, key_columns, columns);
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


-- sql/install/citus.sql
CREATE OR REPLACE FUNCTION syncguard._citus_coordinator_only(caller text) RETURNS void
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

CREATE OR REPLACE FUNCTION syncguard.distribute(colocate_with regclass DEFAULT NULL)
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
    PERFORM syncguard._citus_coordinator_only('distribute');
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

CREATE OR REPLACE FUNCTION syncguard.undistribute()
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
    PERFORM syncguard._citus_coordinator_only('undistribute');
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

-- The functions that name an invariant find its owner through one helper,
-- as those of sync sources and queues do.

CREATE FUNCTION syncguard._invariant_owner(name text)
RETURNS text
LANGUAGE sql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
    SELECT syncguard._name_owner(ARRAY(SELECT i.owner_role FROM syncguard.invariants AS i WHERE i.name = $1),
                                 $1, 'invariant')
$$;
COMMENT ON FUNCTION syncguard._invariant_owner(text) IS
    'internal: the owner of the invariant a name means to the caller, or NULL';

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
    owner := syncguard._invariant_owner(name);
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
COMMENT ON FUNCTION syncguard.drop_invariant(text, boolean) IS
    'drop an invariant and its view; keep_history keeps its runs and episodes';

-- merge_upsert's planner support: a call whose key and data are built by
-- jsonb_build_object in the statement runs as _merge_upsert_fields, with the
-- names as constants and the values as they are (src/upsert_fields.rs).
CREATE FUNCTION syncguard._merge_upsert_fields(target regclass, key_names text[], data_names text[], VARIADIC "any")
RETURNS jsonb
LANGUAGE c VOLATILE PARALLEL UNSAFE
AS 'MODULE_PATHNAME', 'merge_upsert_fields_wrapper';
COMMENT ON FUNCTION syncguard._merge_upsert_fields(regclass, text[], text[], "any") IS 'internal: merge_upsert of jsonb_build_object(key_names, values) and jsonb_build_object(data_names, values), the policy last; planned from merge_upsert calls';
CREATE FUNCTION syncguard._merge_upsert_support(internal)
RETURNS internal
LANGUAGE c IMMUTABLE STRICT PARALLEL SAFE
AS 'MODULE_PATHNAME', 'merge_upsert_support_wrapper';
COMMENT ON FUNCTION syncguard._merge_upsert_support(internal) IS 'internal: planner support of merge_upsert';
ALTER FUNCTION syncguard.merge_upsert(regclass, jsonb, jsonb, jsonb) SUPPORT syncguard._merge_upsert_support;
