-- Entity events (docs/invariants.md, "Events"): for stores that keep no
-- timestamps, the application (or a trigger) appends what happened to an
-- entity, and event_intervals coalesces start/stop events into intervals, so
-- an invariant query gets its `since`. Loaded in the order of src/install_order.rs.
--
-- Privileges as for the idempotency keys: the table is granted to PUBLIC
-- under row-level security, a role sees and deletes only the events it
-- wrote (owner_role = current_user); superusers see all. event_intervals is
-- SECURITY INVOKER, so an invariant sees the events of its owner.

CREATE TABLE syncguard.entity_events (
    id         bigint      GENERATED ALWAYS AS IDENTITY,
    entity     text        NOT NULL,
    kind       text        NOT NULL,
    at         timestamptz NOT NULL DEFAULT clock_timestamp(),
    data       jsonb,
    owner_role text        NOT NULL DEFAULT current_user,
    -- Citus: distribute by entity; the key contains it.
    PRIMARY KEY (entity, id)
);
CREATE INDEX entity_events_entity ON syncguard.entity_events (entity, at);
COMMENT ON TABLE syncguard.entity_events IS
    'syncguard: what happened to an entity, when; coalesce with syncguard.event_intervals';

SELECT pg_catalog.pg_extension_config_dump('syncguard.entity_events', '');
SELECT pg_catalog.pg_extension_config_dump(pg_catalog.pg_get_serial_sequence('syncguard.entity_events', 'id'), '');

ALTER TABLE syncguard.entity_events ENABLE ROW LEVEL SECURITY;
CREATE POLICY entity_events_own ON syncguard.entity_events
    USING (owner_role = current_user) WITH CHECK (owner_role = current_user);
-- No id in INSERT: an id chosen with OVERRIDING SYSTEM VALUE could take the
-- one the sequence hands to another role's next event of the same entity.
-- No DELETE: it would let a role LOCK the table against every other role
-- (src/row_delete.rs); events_prune deletes.
GRANT SELECT ON syncguard.entity_events TO PUBLIC;
GRANT INSERT (entity, kind, at, data, owner_role) ON syncguard.entity_events TO PUBLIC;

-- Gaps and islands: per entity, the events of the two kinds in time order
-- (id breaks ties: the order they were written). A start while started and a
-- stop while stopped change nothing, so only the events that flip the state
-- remain; they alternate start, stop, start, ..., and each start pairs with
-- the next one. The last interval of an entity is open (stopped_at NULL)
-- when its last state change is a start. for_entity: only that entity's.
CREATE FUNCTION syncguard.event_intervals(start_kind text, stop_kind text, for_entity text DEFAULT NULL)
RETURNS TABLE (entity text, started_at timestamptz, stopped_at timestamptz)
LANGUAGE plpgsql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    IF start_kind IS NULL OR stop_kind IS NULL THEN
        RAISE EXCEPTION USING ERRCODE = '22004',
            MESSAGE = 'event_intervals: start_kind and stop_kind must not be NULL',
            HINT = 'Pass the kinds that start and stop an interval, e.g. ''cancelled'' and ''billing_stopped''.';
    END IF;
    IF start_kind = stop_kind THEN
        RAISE EXCEPTION USING ERRCODE = '22023',
            MESSAGE = format('event_intervals: start and stop kind are both %L', start_kind),
            HINT = 'An interval starts with one kind of event and stops with another.';
    END IF;
    RETURN QUERY
    SELECT f.entity, f.at, f.next_at
      FROM (SELECT c.entity, c.at, c.is_start,
                   lead(c.at) OVER (PARTITION BY c.entity ORDER BY c.at, c.id) AS next_at
              FROM (SELECT e.entity, e.at, e.id, e.kind = start_kind AS is_start,
                           lag(e.kind = start_kind, 1, false)
                               OVER (PARTITION BY e.entity ORDER BY e.at, e.id) AS was_started
                      FROM syncguard.entity_events e
                     WHERE e.kind IN (start_kind, stop_kind)
                       AND (for_entity IS NULL OR e.entity = for_entity)) AS c
             WHERE c.is_start <> c.was_started) AS f
     WHERE f.is_start
     ORDER BY f.entity, f.at;
END
$$;

GRANT EXECUTE ON FUNCTION syncguard.event_intervals(text, text, text) TO PUBLIC;
COMMENT ON FUNCTION syncguard.event_intervals(text, text, text) IS
    'coalesce start/stop events per entity into intervals (stopped_at NULL while open)';

-- Delete events, of `entity` or of all the caller's, older than older_than;
-- returns how many. An invariant over event_intervals needs the events of
-- every interval it reports: keep them as long as it looks back.
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
