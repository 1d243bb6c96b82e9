-- Invariant checks (docs/invariants.md): the registry, one view per
-- invariant in schema syncguard_invariants, check_invariants with its runs,
-- violation episodes and alerts, drop_invariant and audit. Loaded (src/install_order.rs)
-- after the Rust functions it calls. Every object is
-- schema-qualified and every function pins search_path = pg_catalog, pg_temp.
--
-- Privileges. Defining an invariant creates its view, so it takes CREATE on
-- schema syncguard_invariants: superusers have it, a superuser grants it to
-- the roles that may define invariants. An invariant belongs to the role that
-- defined it (owner_role; the view is that role's too). Names are per owner,
-- as pg_cron's job names are per user: two roles may each have an invariant
-- of the same name, keyed (name, owner_role). The view is
-- syncguard_invariants.<name>, or syncguard_invariants."<name>@<owner>" when
-- another role's invariant already holds the plain name (view_name records
-- which). The functions are
-- SECURITY INVOKER and the tables are granted to PUBLIC under row-level
-- security: a role sees, checks and drops its own invariants and their
-- history. A check always runs as the invariant's owner, in a
-- security-restricted context (syncguard._invariant_check_run), whoever runs
-- it: a superuser's check_invariants() or the background worker reads no
-- table through an invariant that its owner could not read.

CREATE SCHEMA syncguard_invariants;
COMMENT ON SCHEMA syncguard_invariants IS
    'syncguard: one view per invariant, showing its violations past the grace period';
GRANT USAGE ON SCHEMA syncguard_invariants TO PUBLIC;

CREATE TABLE syncguard.invariants (
    name              text        NOT NULL CHECK (octet_length(name) BETWEEN 1 AND 63),
    owner_role        text        NOT NULL DEFAULT current_user,
    query             text        NOT NULL,
    grace             interval    NOT NULL DEFAULT '0' CHECK (grace >= interval '0'),
    severity          text        NOT NULL DEFAULT 'error'
                      CHECK (severity IN ('critical', 'error', 'warning', 'info')),
    remediation       text,
    description       text,
    schedule          interval    NOT NULL DEFAULT '5 minutes' CHECK (schedule >= interval '1 second'),
    statement_timeout interval    NOT NULL DEFAULT '1 minute'
                      CHECK (statement_timeout BETWEEN interval '1 millisecond' AND interval '24 hours'),
    enabled           boolean     NOT NULL DEFAULT true,
    created_at        timestamptz NOT NULL DEFAULT now(),
    updated_at        timestamptz NOT NULL DEFAULT now(),
    last_run_at       timestamptz,
    last_status       text        CHECK (last_status IN ('ok', 'violating', 'errored')),
    last_error        text,
    -- The view's relation name in schema syncguard_invariants: name, or
    -- name@owner_role. Last: 0.1.0 had no such column (ALTER TABLE appends).
    view_name         text        NOT NULL UNIQUE,
    PRIMARY KEY (name, owner_role)
);
COMMENT ON TABLE syncguard.invariants IS
    'syncguard invariants: use syncguard.define_invariant / drop_invariant; names are per owner_role, the view of each is syncguard_invariants.<view_name>';

-- One row per check. violations is NULL when the check errored.
CREATE TABLE syncguard.invariant_runs (
    id           bigint      GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    invariant    text        NOT NULL,
    owner_role   text        NOT NULL,
    started_at   timestamptz NOT NULL,
    finished_at  timestamptz NOT NULL,
    status       text        NOT NULL CHECK (status IN ('ok', 'violating', 'errored')),
    violations   integer,
    new_episodes integer     NOT NULL DEFAULT 0,
    resolved     integer     NOT NULL DEFAULT 0,
    sqlstate     text,
    error        text
);
CREATE INDEX invariant_runs_invariant ON syncguard.invariant_runs (invariant, owner_role, started_at);
CREATE INDEX invariant_runs_started ON syncguard.invariant_runs (started_at);
COMMENT ON TABLE syncguard.invariant_runs IS 'syncguard: one row per invariant check';

-- Episodes: an entity that keeps violating stays one row (last_seen and
-- count move on); when a check no longer returns it, resolved_at is set; a
-- new violation of the same entity opens a new row.
CREATE TABLE syncguard.violations (
    id          bigint      GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    invariant   text        NOT NULL,
    owner_role  text        NOT NULL,
    entity      text        NOT NULL,
    since       timestamptz NOT NULL,
    first_seen  timestamptz NOT NULL,
    last_seen   timestamptz NOT NULL,
    count       integer     NOT NULL DEFAULT 1,
    resolved_at timestamptz
) WITH (fillfactor = 90);  -- room for HOT updates: a check moves last_seen and count of every open episode
-- At most one open episode per entity; also the lookup of every check.
CREATE UNIQUE INDEX violations_open ON syncguard.violations (invariant, owner_role, entity) WHERE resolved_at IS NULL;
CREATE INDEX violations_invariant ON syncguard.violations (invariant, owner_role, first_seen);
COMMENT ON TABLE syncguard.violations IS
    'syncguard violation episodes: resolved_at is NULL while the entity still violates';

SELECT pg_catalog.pg_extension_config_dump('syncguard.invariants', '');
SELECT pg_catalog.pg_extension_config_dump('syncguard.invariant_runs', '');
SELECT pg_catalog.pg_extension_config_dump('syncguard.violations', '');
SELECT pg_catalog.pg_extension_config_dump(pg_catalog.pg_get_serial_sequence('syncguard.invariant_runs', 'id'), '');
SELECT pg_catalog.pg_extension_config_dump(pg_catalog.pg_get_serial_sequence('syncguard.violations', 'id'), '');

ALTER TABLE syncguard.invariants ENABLE ROW LEVEL SECURITY;
ALTER TABLE syncguard.invariant_runs ENABLE ROW LEVEL SECURITY;
ALTER TABLE syncguard.violations ENABLE ROW LEVEL SECURITY;
CREATE POLICY invariants_own ON syncguard.invariants
    USING (owner_role = current_user) WITH CHECK (owner_role = current_user);
CREATE POLICY invariant_runs_own ON syncguard.invariant_runs
    USING (owner_role = current_user) WITH CHECK (owner_role = current_user);
CREATE POLICY violations_own ON syncguard.violations
    USING (owner_role = current_user) WITH CHECK (owner_role = current_user);
-- Row-level security alone would let a role write rows it should not: a
-- registry row naming a view it does not own (or squatting a view name
-- without CREATE on the schema), runs and episodes of an invariant it does
-- not have. So a role inserts an invariant only with its view (name, or
-- name@owner) its own (define_invariant creates it first), and runs and
-- episodes only of its own invariant of that name; it updates no name,
-- owner, view or id, and chooses no id (OVERRIDING SYSTEM VALUE could take
-- the ids the sequences hand to other roles).
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
-- No table-level UPDATE or DELETE: either would let a role LOCK the table
-- against every other role (src/row_delete.rs); drop_invariant,
-- violations_prune and housekeeping delete.
GRANT SELECT, INSERT ON syncguard.invariants TO PUBLIC;
GRANT UPDATE (query, grace, severity, remediation, description, schedule, statement_timeout, enabled,
              updated_at, last_run_at, last_status, last_error) ON syncguard.invariants TO PUBLIC;
GRANT SELECT ON syncguard.invariant_runs, syncguard.violations TO PUBLIC;
GRANT INSERT (invariant, owner_role, started_at, finished_at, status, violations, new_episodes, resolved,
              sqlstate, error) ON syncguard.invariant_runs TO PUBLIC;
GRANT INSERT (invariant, owner_role, entity, since, first_seen, last_seen, count, resolved_at),
      UPDATE (since, last_seen, count, resolved_at) ON syncguard.violations TO PUBLIC;

-- The NOTIFY payload on channel syncguard_alerts: {"kind", "invariant", "id"}
-- with kind new_episode (id: the episode in syncguard.violations) or
-- check_error (id: the run in syncguard.invariant_runs). Any role may LISTEN
-- (and NOTIFY) on a channel, so the payload carries nothing else: a
-- forwarder that may read the invariant looks the rest up by id, which also
-- tells a real alert from a forged one (docs/privileges.md).
CREATE FUNCTION syncguard._alert_payload(kind text, invariant text, id bigint) RETURNS text
LANGUAGE sql IMMUTABLE PARALLEL SAFE
SET search_path = pg_catalog, pg_temp
RETURN jsonb_build_object('kind', kind, 'invariant', invariant, 'id', id)::text;

-- Define (or redefine) an invariant. search_path: the caller's, for the
-- names in query (defaults are evaluated in the caller's context, before the
-- function's own search_path applies).
CREATE FUNCTION syncguard.define_invariant(
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

-- The owner of the invariant a name means to the caller (sql/install/names.sql),
-- or NULL when the caller sees none of that name.
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

-- Drop an invariant and its view. keep_history: its runs and episodes stay
-- (open episodes are closed at the time of the drop); otherwise they go too.
CREATE FUNCTION syncguard.drop_invariant(name text, keep_history boolean DEFAULT true)
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

-- Delete resolved episodes, of `invariant` or of all the caller's, that were
-- resolved more than older_than ago; returns how many. Open episodes stay.
-- The name may be that of a dropped invariant whose history was kept.
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

-- Run one invariant's check: its view's rows (past the grace period) become
-- episodes; recorded in invariant_runs, new episodes and a check that starts
-- erroring are notified on syncguard_alerts. The query runs in a
-- subtransaction, as the invariant's owner, under its own statement timeout:
-- an error or a timeout is recorded as errored, never raised. A cancel
-- request from the user is not a timeout and is raised. owner_role: whose
-- invariant of that name (the worker and check_invariants pass it); NULL
-- resolves the name as check_invariants(name) does.
CREATE FUNCTION syncguard._run_invariant_check(
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

-- Run the checks: every enabled invariant, or the one named (enabled or
-- not; syncguard._name_owner says whose). One row per check, in name
-- order (then owner); the owner last, which tells apart the invariants of
-- one name that a superuser sees.
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

-- The enabled invariants whose schedule says they are due: never run, or
-- last run at least `schedule` ago. The background worker runs each of them
-- in a transaction of its own, by name and owner.
CREATE FUNCTION syncguard.due_invariants()
RETURNS TABLE (name text, owner_role text)
LANGUAGE sql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
    SELECT i.name, i.owner_role FROM syncguard.invariants i
     WHERE i.enabled AND (i.last_run_at IS NULL OR i.last_run_at + i.schedule <= now())
     ORDER BY i.last_run_at NULLS FIRST, i.name, i.owner_role
$$;

-- check_invariants for the due invariants only, in one transaction: what a
-- pg_cron job calls.
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

-- One row per invariant, worst first: status (violating, errored, never run,
-- ok, disabled), then severity, then the number of open violations. For
-- psql: times to the second, the free texts, then the owner, last.
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
    syncguard._alert_payload(text, text, bigint),
    syncguard.define_invariant(text, text, interval, text, text, text, interval, interval, boolean, text),
    syncguard.drop_invariant(text, boolean),
    syncguard.violations_prune(interval, text),
    syncguard._run_invariant_check(text, text),
    syncguard.check_invariants(text),
    syncguard.due_invariants(),
    syncguard.check_due_invariants(),
    syncguard.audit(),
    syncguard._invariant_query_text(text),
    syncguard._invariant_check_run(oid, text, integer)
    TO PUBLIC;

COMMENT ON FUNCTION syncguard._alert_payload(text, text, bigint) IS
    'the JSON payload of a syncguard_alerts notification: kind, invariant and the id of the episode or run';
COMMENT ON FUNCTION syncguard.define_invariant(text, text, interval, text, text, text, interval, interval, boolean, text) IS
    'define or replace the caller''s invariant of that name: a SELECT returning violating rows (entity, since), and its view';
COMMENT ON FUNCTION syncguard.drop_invariant(text, boolean) IS
    'drop an invariant and its view; keep_history keeps its runs and episodes';
COMMENT ON FUNCTION syncguard.violations_prune(interval, text) IS
    'delete episodes resolved more than an interval ago; returns how many';
COMMENT ON FUNCTION syncguard._run_invariant_check(text, text) IS
    'internal: one check, recorded as a run, episodes and alerts';
COMMENT ON FUNCTION syncguard.check_invariants(text) IS
    'run every enabled invariant check (or the one named), each isolated, with its own timeout';
COMMENT ON FUNCTION syncguard.due_invariants() IS
    'enabled invariants whose schedule says they are due, by name and owner';
COMMENT ON FUNCTION syncguard.check_due_invariants() IS
    'run the due invariant checks (for pg_cron)';
COMMENT ON FUNCTION syncguard.audit() IS
    'one row per invariant, worst first: status, open violations, oldest age, remediation';
COMMENT ON FUNCTION syncguard._invariant_query_text(text) IS
    'internal: the single SELECT of an invariant query, or an error';
COMMENT ON FUNCTION syncguard._invariant_check_run(oid, text, integer) IS
    'internal: one check''s query, run as the invariant''s owner in a sandbox it cannot leave';
