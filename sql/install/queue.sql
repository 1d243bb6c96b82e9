-- Retry queue with dead letters (docs/sync.md, "Retry queue with dead letters"). Loaded in the order of src/install_order.rs.
--
-- A job is `ready` (waiting, possibly delayed until visible_at), `leased`
-- (handed out by dequeue until visible_at; after that it is handed out again)
-- or `dead`. ack deletes it; nack makes it ready again after
-- syncguard.backoff_delay (the idempotency log's backoff), or dead after the
-- queue's last attempt. Dead jobs stay until requeue_dead or purge_dead.
--
-- Delivery is at least once: a consumer that outlives its visibility timeout
-- may see its job handed to another. dequeue returns the attempt number;
-- passing it to ack/nack rejects a late consumer's call (SG007) instead of
-- acknowledging the other consumer's attempt.
--
-- Privileges: jobs carry the role that enqueued them. A role dequeues, acks
-- and nacks the jobs of its own role and of roles it is a member of, so a
-- producer role is shared with its consumers by `GRANT producer TO consumer`.
-- Superusers and the tables' owner bypass row-level security. Queues are
-- per owner (sql/install/names.sql): a queue's settings are keyed by (queue,
-- owner_role), a job follows the settings of its own role's queue, and a
-- dedupe key is unique among the live jobs of one role's queue, so no role
-- can hold a key or a name against another.
--
-- Plans: the functions that find a row by its key SET enable_seqscan and
-- enable_bitmapscan off. A session keeps its plans; one made while the table
-- was nearly empty (after a VACUUM of a drained queue) would otherwise stay a
-- sequential scan while the table fills up with jobs and dead row versions.

CREATE TABLE syncguard.queues (
    queue        text             NOT NULL CHECK (queue <> ''),
    owner_role   text             NOT NULL DEFAULT current_user,
    max_attempts integer          NOT NULL DEFAULT 5 CHECK (max_attempts >= 1),
    base         interval         NOT NULL DEFAULT '2 seconds' CHECK (base >= interval '0'),
    cap          interval         NOT NULL DEFAULT '10 minutes' CHECK (cap >= interval '0'),
    jitter       double precision NOT NULL DEFAULT 0.2 CHECK (jitter BETWEEN 0 AND 1),
    -- sync_alerts: the oldest waiting job may be this old before it alerts.
    max_job_age  interval         NOT NULL DEFAULT '1 hour' CHECK (max_job_age > interval '0'),
    PRIMARY KEY (queue, owner_role)
);
COMMENT ON TABLE syncguard.queues IS
    'syncguard queue settings (retry schedule, alert threshold); a queue without a row uses the defaults';

-- An enum, not a CHECK constraint: PostgreSQL reads and prepares a table's
-- CHECK expressions anew for every INSERT and UPDATE statement, and enqueue,
-- dequeue and nack each write a row.
CREATE TYPE syncguard.job_state AS ENUM ('ready', 'leased', 'dead');

CREATE TABLE syncguard.queue_jobs (
    -- Citus: distribute by queue; dequeue filters it by equality.
    queue       text        NOT NULL CHECK (queue <> ''),
    job_id      bigint      GENERATED ALWAYS AS IDENTITY,
    owner_role  text        NOT NULL DEFAULT current_user,
    state       syncguard.job_state NOT NULL DEFAULT 'ready',
    payload     jsonb       NOT NULL,
    dedupe_key  text,
    attempts    integer     NOT NULL DEFAULT 0,   -- deliveries so far
    visible_at  timestamptz NOT NULL,             -- ready: due; leased: lease end
    last_error  text,
    enqueued_at timestamptz NOT NULL,
    dead_at     timestamptz,
    -- job_id first: ack and nack find a job by its id alone. Citus: the key
    -- contains queue, the distribution column.
    PRIMARY KEY (job_id, queue)
);
COMMENT ON TABLE syncguard.queue_jobs IS
    'syncguard retry queue: live and dead jobs; use enqueue/dequeue/ack/nack';
-- dequeue: the due jobs of a queue in order.
CREATE INDEX queue_jobs_due ON syncguard.queue_jobs (queue, visible_at) WHERE state <> 'dead';
-- A live job's dedupe key is unique in its role's queue.
CREATE UNIQUE INDEX queue_jobs_dedupe ON syncguard.queue_jobs (queue, owner_role, dedupe_key)
    WHERE state <> 'dead' AND dedupe_key IS NOT NULL;

SELECT pg_catalog.pg_extension_config_dump('syncguard.queues', '');
SELECT pg_catalog.pg_extension_config_dump('syncguard.queue_jobs', '');
SELECT pg_catalog.pg_extension_config_dump(pg_catalog.pg_get_serial_sequence('syncguard.queue_jobs', 'job_id'), '');

ALTER TABLE syncguard.queues ENABLE ROW LEVEL SECURITY;
ALTER TABLE syncguard.queue_jobs ENABLE ROW LEVEL SECURITY;
CREATE POLICY queues_own ON syncguard.queues
    USING (owner_role = current_user OR syncguard.has_privs_of(owner_role))
    WITH CHECK (owner_role = current_user OR syncguard.has_privs_of(owner_role));
CREATE POLICY queue_jobs_own ON syncguard.queue_jobs
    USING (owner_role = current_user OR syncguard.has_privs_of(owner_role))
    WITH CHECK (owner_role = current_user OR syncguard.has_privs_of(owner_role));
-- No table-level UPDATE or DELETE: either would let a role LOCK the table
-- against every other role (src/row_delete.rs); ack, purge_dead and
-- queue_drop delete.
GRANT SELECT, INSERT ON syncguard.queues TO PUBLIC;
GRANT UPDATE (max_attempts, base, cap, jitter, max_job_age) ON syncguard.queues TO PUBLIC;
-- No job_id in INSERT: an id chosen with OVERRIDING SYSTEM VALUE could take
-- the one the sequence hands to another role's next job.
GRANT SELECT ON syncguard.queue_jobs TO PUBLIC;
GRANT UPDATE (state, attempts, visible_at, last_error, dead_at) ON syncguard.queue_jobs TO PUBLIC;
GRANT INSERT (queue, owner_role, state, payload, dedupe_key, attempts, visible_at, last_error, enqueued_at, dead_at)
    ON syncguard.queue_jobs TO PUBLIC;

-- The owner of the queue a name means to the caller (sql/install/names.sql), from
-- the queues' settings and their jobs (a queue needs no settings row), or
-- NULL when the caller sees neither.
CREATE FUNCTION syncguard._queue_owner(queue text)
RETURNS text
LANGUAGE sql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
    SELECT syncguard._name_owner(ARRAY(SELECT q.owner_role FROM syncguard.queues AS q WHERE q.queue = $1
                                       UNION
                                       SELECT j.owner_role FROM syncguard.queue_jobs AS j WHERE j.queue = $1),
                                 $1, 'queue')
$$;
COMMENT ON FUNCTION syncguard._queue_owner(text) IS
    'internal: the owner of the queue a name means to the caller, or NULL';

-- Add a job; returns its id. With a dedupe key, a live (ready or leased) job
-- of the queue with the same key is not enqueued twice: its id is returned.
CREATE FUNCTION syncguard.enqueue(queue text, payload jsonb, dedupe_key text DEFAULT NULL,
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

-- Hand out up to n due jobs of `queue`, oldest due first, leased for
-- `visibility`: until then no other dequeue returns them. Jobs locked by a
-- concurrent dequeue are skipped, never waited for.
--
-- Two statements, not one UPDATE over a locking subquery: the index scan that
-- finds the due jobs must end before the leases are written. At its end the
-- scan marks the index entries of acked jobs it stepped over as dead, so later
-- scans skip them; btree gives that up when the page changed since it was
-- read, and writing a lease adds an entry to that very page (the newest end of
-- queue_jobs_due). Unmarked, the dead entries pile up at the head of the
-- index until VACUUM, and every dequeue walks over all of them.
--
-- The plan is pinned to that ordered index scan: a queue table is mostly dead
-- rows, its statistics count a handful of live ones, and from them the
-- planner would pick a bitmap scan and a sort, which reads every due entry,
-- dead ones included, and marks none. Generic plans, because the custom ones
-- the plan cache would otherwise make on every call cost more to plan than to
-- run.
CREATE FUNCTION syncguard.dequeue(queue text, n integer DEFAULT 1, visibility interval DEFAULT '30 seconds')
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

-- A job whose lease ran out without ack or nack: the attempt failed (the
-- consumer died or hung), so it is retried after backoff_delay like a nack,
-- or dead once it has had the queue's max_attempts deliveries, never handed
-- out again at once. Anything else (a live lease, a ready job) is left alone.
CREATE FUNCTION syncguard._queue_lease_expired(job_id bigint, queue text)
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
COMMENT ON FUNCTION syncguard._queue_lease_expired(bigint, text) IS
    'internal: a job whose lease ran out counts as a failed attempt (backoff, or dead)';

-- The job `job_id`, locked, checked to be leased (and at `attempt`, when
-- given); raises SG007 otherwise. `caller` names the function in the messages.
CREATE FUNCTION syncguard._queue_leased_job(job_id bigint, attempt integer, caller text)
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
COMMENT ON FUNCTION syncguard._queue_leased_job(bigint, integer, text) IS
    'internal: a leased job locked for ack/nack, or SG007';

-- Acknowledge a job: it is done and deleted. `attempt` (from dequeue)
-- rejects the call when the job has been handed out again since.
CREATE FUNCTION syncguard.ack(job_id bigint, attempt integer DEFAULT NULL)
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

-- A failed attempt: the job is due again after backoff_delay(attempt) with
-- the queue's base, cap and jitter, or dead once it has had max_attempts
-- deliveries or when `retryable` is false.
CREATE FUNCTION syncguard.nack(job_id bigint, error text, retryable boolean DEFAULT true,
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

-- Make dead jobs of `queue` ready again with their attempts reset: all of
-- them, or those in job_ids. A dead job whose dedupe key a live job holds
-- stays dead (the live job does its work). Returns how many were requeued.
CREATE FUNCTION syncguard.requeue_dead(queue text, job_ids bigint[] DEFAULT NULL)
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

-- Delete dead jobs of `queue` that died before `older_than` ago; returns how many.
CREATE FUNCTION syncguard.purge_dead(queue text, older_than interval DEFAULT '0')
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

-- Remove a queue: its jobs in every state and its settings; returns how many
-- jobs it deleted. Jobs a consumer holds are deleted too, and its ack or nack
-- then reports the job as gone.
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

-- Change a queue's settings; NULL keeps a setting as it is.
CREATE FUNCTION syncguard.queue_configure(
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

-- Dead letters: jobs that used up their attempts or failed for good.
CREATE VIEW syncguard.dead_letters WITH (security_invoker = true) AS
SELECT j.queue, j.job_id, j.payload, j.dedupe_key, j.attempts, j.last_error, j.enqueued_at, j.dead_at
  FROM syncguard.queue_jobs AS j
 WHERE j.state = 'dead';

GRANT SELECT ON syncguard.dead_letters TO PUBLIC;
GRANT EXECUTE ON FUNCTION
    syncguard.enqueue(text, jsonb, text, interval),
    syncguard.dequeue(text, integer, interval),
    syncguard.ack(bigint, integer),
    syncguard.nack(bigint, text, boolean, integer),
    syncguard.requeue_dead(text, bigint[]),
    syncguard.purge_dead(text, interval),
    syncguard.queue_drop(text),
    syncguard.queue_configure(text, integer, interval, interval, double precision, interval)
    TO PUBLIC;

COMMENT ON VIEW syncguard.dead_letters IS 'jobs of the retry queue that are dead; requeue them with syncguard.requeue_dead';
COMMENT ON FUNCTION syncguard.enqueue(text, jsonb, text, interval) IS
    'add a job to a queue (not twice for a live dedupe key); returns its id';
COMMENT ON FUNCTION syncguard.dequeue(text, integer, interval) IS
    'lease up to n due jobs of a queue for the visibility timeout (SKIP LOCKED)';
COMMENT ON FUNCTION syncguard.ack(bigint, integer) IS 'a leased job is done: delete it';
COMMENT ON FUNCTION syncguard.nack(bigint, text, boolean, integer) IS
    'a leased job failed: due again after backoff, or dead after the last attempt';
COMMENT ON FUNCTION syncguard.requeue_dead(text, bigint[]) IS 'make dead jobs ready again';
COMMENT ON FUNCTION syncguard.purge_dead(text, interval) IS 'delete old dead jobs';
COMMENT ON FUNCTION syncguard.queue_drop(text) IS 'remove a queue: its jobs and its settings';
COMMENT ON FUNCTION syncguard.queue_configure(text, integer, interval, interval, double precision, interval) IS
    'set a queue''s retry schedule and alert threshold (NULL keeps a setting)';
