-- Sync runs with honest watermarks (docs/sync.md). Loaded in the order of src/install_order.rs.
--
-- A source's watermark is the start time of its last run in which every
-- expected part succeeded. A run hands out `since` = watermark - overlap at
-- its start and moves the watermark only at sync_finish, only when every
-- declared part reported ok, and only forwards. A failed part therefore keeps
-- the next run fetching from the same point, and the next run catches up.
--
-- One run per source at a time: sync_begin locks the source's row, and a run
-- still running within its timeout makes a second sync_begin fail with SG005.
-- A run past its timeout is abandoned (by the next sync_begin, by its own
-- sync_part/sync_finish, or by sync_abandon_stale) and never advances.
--
-- Clock: clock_timestamp(), read once per call, as in sql/install/idempotency.sql.
-- Every object is schema-qualified and every function pins search_path.
--
-- Privileges: rows carry the role that created them (owner_role). A role sees
-- and changes the sources, runs and parts it owns and those of roles it is a
-- member of, so a sync job and its monitoring role can share a source by role
-- membership. Source names are per owner (sql/install/names.sql): the primary key is
-- (source, owner_role). Superusers and the tables' owner bypass row-level security. The
-- policies test membership with pg_has_role(oid), which never fails for a
-- role dropped since (pg_has_role(name) would); the subquery is uncorrelated,
-- so it runs at most once per statement.

CREATE TABLE syncguard.sync_sources (
    source           text             NOT NULL CHECK (source <> ''),
    owner_role       text             NOT NULL DEFAULT current_user,
    watermark        timestamptz,     -- start of the last run that fully succeeded
    overlap          interval         NOT NULL DEFAULT '0'
                     CHECK (overlap >= interval '0'),
    run_timeout      interval         NOT NULL DEFAULT '1 hour'
                     CHECK (run_timeout > interval '0'),
    -- Health thresholds (sync_health, sync_alerts); the defaults are the
    -- alert levels of the incident reports.
    health_window    interval         NOT NULL DEFAULT '1 hour'
                     CHECK (health_window > interval '0'),
    max_error_rate   double precision NOT NULL DEFAULT 0.10
                     CHECK (max_error_rate BETWEEN 0 AND 1),
    max_avg_latency  interval         NOT NULL DEFAULT '5 seconds',
    max_silence      interval         NOT NULL DEFAULT '1 hour'
                     CHECK (max_silence > interval '0'),
    last_success_at  timestamptz,     -- when the last fully successful run finished
    created_at       timestamptz      NOT NULL DEFAULT clock_timestamp(),
    PRIMARY KEY (source, owner_role)
);
COMMENT ON TABLE syncguard.sync_sources IS
    'syncguard sync sources: watermark, overlap, timeout and health thresholds; use syncguard.sync_configure';

CREATE TABLE syncguard.sync_runs (
    -- Citus: distribute by source (every unique key contains it).
    source           text        NOT NULL,
    run_id           bigint      GENERATED ALWAYS AS IDENTITY,
    owner_role       text        NOT NULL DEFAULT current_user,
    status           text        NOT NULL DEFAULT 'running'
                     CHECK (status IN ('running', 'succeeded', 'failed', 'abandoned')),
    parts            text[],     -- declared parts, NULL: whatever reports
    since            timestamptz, -- what sync_begin handed out
    started_at       timestamptz NOT NULL,
    deadline         timestamptz NOT NULL,
    finished_at      timestamptz,
    advanced         boolean     NOT NULL DEFAULT false,
    error            text,       -- why it failed or was abandoned
    -- run_id first: sync_part and sync_finish find a run by its id alone.
    PRIMARY KEY (run_id, source),
    FOREIGN KEY (source, owner_role) REFERENCES syncguard.sync_sources ON DELETE CASCADE
);
-- Health reads runs by start time.
CREATE INDEX sync_runs_started ON syncguard.sync_runs (source, started_at);
-- The running runs: sync_begin and sync_abandon_stale look only at these,
-- whatever the length of a source's history.
CREATE INDEX sync_runs_running ON syncguard.sync_runs (source) WHERE status = 'running';
COMMENT ON TABLE syncguard.sync_runs IS 'syncguard sync runs: one row per sync_begin';

CREATE TABLE syncguard.sync_parts (
    source      text        NOT NULL,
    run_id      bigint      NOT NULL,
    part        text        NOT NULL,
    owner_role  text        NOT NULL DEFAULT current_user,
    ok          boolean     NOT NULL,
    error       text,
    records     bigint      NOT NULL DEFAULT 0 CHECK (records >= 0),
    latency     interval    CHECK (latency >= interval '0'),
    reports     integer     NOT NULL DEFAULT 1,  -- a part may report again; the last report counts
    reported_at timestamptz NOT NULL,
    PRIMARY KEY (run_id, source, part),
    FOREIGN KEY (run_id, source) REFERENCES syncguard.sync_runs ON DELETE CASCADE
);
-- Health reads parts by report time.
CREATE INDEX sync_parts_reported ON syncguard.sync_parts (source, reported_at);
COMMENT ON TABLE syncguard.sync_parts IS 'syncguard sync run parts: the last report of each part of a run';

SELECT pg_catalog.pg_extension_config_dump('syncguard.sync_sources', '');
SELECT pg_catalog.pg_extension_config_dump('syncguard.sync_runs', '');
SELECT pg_catalog.pg_extension_config_dump('syncguard.sync_parts', '');
-- The identity's sequence too, or a restored database would hand out run ids again.
SELECT pg_catalog.pg_extension_config_dump(pg_catalog.pg_get_serial_sequence('syncguard.sync_runs', 'run_id'), '');

ALTER TABLE syncguard.sync_sources ENABLE ROW LEVEL SECURITY;
ALTER TABLE syncguard.sync_runs ENABLE ROW LEVEL SECURITY;
ALTER TABLE syncguard.sync_parts ENABLE ROW LEVEL SECURITY;
CREATE POLICY sync_sources_own ON syncguard.sync_sources
    USING (owner_role = current_user OR syncguard.has_privs_of(owner_role))
    WITH CHECK (owner_role = current_user OR syncguard.has_privs_of(owner_role));
CREATE POLICY sync_runs_own ON syncguard.sync_runs
    USING (owner_role = current_user OR syncguard.has_privs_of(owner_role))
    WITH CHECK (owner_role = current_user OR syncguard.has_privs_of(owner_role));
CREATE POLICY sync_parts_own ON syncguard.sync_parts
    USING (owner_role = current_user OR syncguard.has_privs_of(owner_role))
    WITH CHECK (owner_role = current_user OR syncguard.has_privs_of(owner_role));
-- A foreign key is checked without row-level security, so these keep a role
-- from attaching a run to a source it cannot see, or a part to a run it
-- cannot see (a forged part would make the owner's own report of it fail).
CREATE POLICY sync_runs_visible_source ON syncguard.sync_runs AS RESTRICTIVE
    USING (true)
    WITH CHECK (EXISTS (SELECT FROM syncguard.sync_sources AS s
                         WHERE s.source = sync_runs.source AND s.owner_role = sync_runs.owner_role));
CREATE POLICY sync_parts_visible_run ON syncguard.sync_parts AS RESTRICTIVE
    USING (true)
    WITH CHECK (EXISTS (SELECT FROM syncguard.sync_runs AS r
                         WHERE r.run_id = sync_parts.run_id AND r.source = sync_parts.source));
-- No table-level UPDATE or DELETE: either would let a role LOCK the table
-- against every other role (src/row_delete.rs); sync_prune and sync_drop
-- delete.
GRANT SELECT, INSERT ON syncguard.sync_sources, syncguard.sync_parts TO PUBLIC;
GRANT UPDATE (overlap, run_timeout, health_window, max_error_rate, max_avg_latency, max_silence,
              watermark, last_success_at) ON syncguard.sync_sources TO PUBLIC;
GRANT UPDATE (ok, error, records, latency, reports, reported_at) ON syncguard.sync_parts TO PUBLIC;
-- run_id is left out of INSERT: a run id chosen with OVERRIDING SYSTEM VALUE
-- could take the id the sequence hands to another role's next run.
GRANT SELECT ON syncguard.sync_runs TO PUBLIC;
GRANT UPDATE (status, finished_at, advanced, error) ON syncguard.sync_runs TO PUBLIC;
GRANT INSERT (source, owner_role, status, parts, since, started_at, deadline, finished_at, advanced, error)
    ON syncguard.sync_runs TO PUBLIC;

-- The owner of the source a name means to the caller (sql/install/names.sql), or
-- NULL when the caller sees no source of that name.
CREATE FUNCTION syncguard._sync_source_owner(source text)
RETURNS text
LANGUAGE sql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
    SELECT syncguard._name_owner(ARRAY(SELECT s.owner_role FROM syncguard.sync_sources AS s WHERE s.source = $1),
                                 $1, 'sync source')
$$;
COMMENT ON FUNCTION syncguard._sync_source_owner(text) IS
    'internal: the owner of the sync source a name means to the caller, or NULL';

-- Mark runs past their deadline as abandoned, of `source` or of every source
-- the caller can see; returns how many. sync_begin, sync_part and sync_finish
-- abandon the runs they meet; housekeeping calls this for the others.
CREATE FUNCTION syncguard.sync_abandon_stale(source text DEFAULT NULL)
RETURNS bigint
LANGUAGE plpgsql VOLATILE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    t timestamptz := clock_timestamp();
    n bigint;
BEGIN
    UPDATE syncguard.sync_runs AS r
       SET status = 'abandoned', finished_at = t,
           error = format('not finished within %s (deadline %s)', r.deadline - r.started_at, r.deadline)
     WHERE r.status = 'running' AND r.deadline <= t
       AND (sync_abandon_stale.source IS NULL OR r.source = sync_abandon_stale.source);
    GET DIAGNOSTICS n = ROW_COUNT;
    RETURN n;
END
$$;

-- Start a run of `source` (created with default settings on first use).
-- Returns the run's id and `since`, the point to fetch changes from:
-- watermark - overlap, or NULL on the first run (fetch everything).
CREATE FUNCTION syncguard.sync_begin(source text, parts text[] DEFAULT NULL,
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

-- The run `run_id` with its source's row and its own locked, abandoned first
-- if its deadline has passed. Locks are taken in sync_begin's order (source,
-- then run), so no two calls wait for each other in a cycle. `caller` names
-- the function in the messages.
CREATE FUNCTION syncguard._sync_locked_run(run_id bigint, caller text)
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
COMMENT ON FUNCTION syncguard._sync_locked_run(bigint, text) IS
    'internal: a run and its source locked for sync_part/sync_finish';

-- Report the outcome of one part of a run. A part may report again (a retry
-- inside the run); its last report counts. With declared parts, an undeclared
-- part is an error.
CREATE FUNCTION syncguard.sync_part(run_id bigint, part text, ok boolean, error text DEFAULT NULL,
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

-- Finish a run. It succeeds when every declared part reported ok last (a
-- declared part that never reported is a failure) and, without declared
-- parts, when every reported part is ok; then the watermark moves to the
-- run's start (never backwards) and the result is true. Otherwise the run is
-- failed and the watermark stays. Finishing a finished run again changes
-- nothing and answers as the first time; an abandoned run answers false.
CREATE FUNCTION syncguard.sync_finish(run_id bigint)
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

-- Change a source's settings; NULL keeps a setting as it is. Creates the
-- source when it does not exist yet.
CREATE FUNCTION syncguard.sync_configure(
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

-- Delete finished runs (and their parts) that finished more than older_than
-- ago, of `source` or of every source the caller can see; returns how many
-- runs. Running runs are kept whatever their age.
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
        owner := syncguard._sync_source_owner(sync_prune.source);
    END IF;
    RETURN syncguard._delete_visible('syncguard.sync_runs', ARRAY(
        SELECT jsonb_build_object('run_id', r.run_id, 'source', r.source) FROM syncguard.sync_runs AS r
         WHERE r.status <> 'running' AND r.finished_at < clock_timestamp() - older_than
           AND (sync_prune.source IS NULL OR (r.source = sync_prune.source AND r.owner_role = owner))
           FOR UPDATE));
END
$$;

-- Remove a source with its runs and parts; false when the caller has no
-- source of that name.
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
    owner := syncguard._sync_source_owner(sync_drop.source);
    RETURN syncguard._delete_visible('syncguard.sync_sources', ARRAY(
        SELECT jsonb_build_object('source', s.source, 'owner_role', s.owner_role) FROM syncguard.sync_sources AS s
         WHERE s.source = sync_drop.source AND s.owner_role = owner FOR UPDATE)) > 0;
END
$$;

GRANT EXECUTE ON FUNCTION
    syncguard.sync_begin(text, text[]),
    syncguard.sync_part(bigint, text, boolean, text, integer, interval),
    syncguard.sync_finish(bigint),
    syncguard.sync_abandon_stale(text),
    syncguard.sync_prune(interval, text),
    syncguard.sync_drop(text),
    syncguard.sync_configure(text, interval, interval, interval, double precision, interval, interval)
    TO PUBLIC;

COMMENT ON FUNCTION syncguard.sync_begin(text, text[]) IS
    'start a sync run: run_id and since (watermark minus overlap, NULL on the first run)';
COMMENT ON FUNCTION syncguard.sync_part(bigint, text, boolean, text, integer, interval) IS
    'report one part of a sync run: ok or failed, records, latency';
COMMENT ON FUNCTION syncguard.sync_finish(bigint) IS
    'finish a sync run; advances the watermark to its start only if every part succeeded';
COMMENT ON FUNCTION syncguard.sync_abandon_stale(text) IS
    'mark sync runs past their timeout as abandoned; returns how many';
COMMENT ON FUNCTION syncguard.sync_prune(interval, text) IS
    'delete finished sync runs (and their parts) older than an interval; returns how many runs';
COMMENT ON FUNCTION syncguard.sync_drop(text) IS 'remove a sync source with its runs and parts';
COMMENT ON FUNCTION syncguard.sync_configure(text, interval, interval, interval, double precision, interval, interval) IS
    'set a sync source''s overlap, run timeout and health thresholds (NULL keeps a setting)';
