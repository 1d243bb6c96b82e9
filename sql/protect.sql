-- Merge upserts and protection (README, "Merge upserts and protection"):
-- protect / unprotect, the protected_tables view, and the counters of writes
-- ignored by last-write-wins. Loaded by src/protect.rs after the Rust
-- functions it calls. Every object is schema-qualified and every function
-- pins search_path = pg_catalog, pg_temp.

-- Writes ignored by last_write_wins. One row per table and backend: a
-- backend runs one transaction at a time, so counting never waits for
-- another session's row lock. The view sums the rows.
CREATE TABLE syncguard.stale_writes (
    table_name      text        NOT NULL,
    backend_pid     int         NOT NULL,
    ignored         bigint      NOT NULL DEFAULT 0,
    last_ignored_at timestamptz NOT NULL,
    PRIMARY KEY (table_name, backend_pid)
);
SELECT pg_catalog.pg_extension_config_dump('syncguard.stale_writes', '');
GRANT SELECT ON syncguard.stale_writes TO PUBLIC;

-- Writers count through the protection trigger and merge_upsert alone,
-- which insert as the table's owner (src/protect.rs, note_stale): no SQL
-- function counts, so no role can make up counts.

CREATE VIEW syncguard.conflict_stats AS
SELECT table_name,
       pg_catalog.sum(ignored)::bigint AS stale_ignored,
       pg_catalog.max(last_ignored_at) AS last_ignored_at
  FROM syncguard.stale_writes
 GROUP BY table_name;
GRANT SELECT ON syncguard.conflict_stats TO PUBLIC;
COMMENT ON VIEW syncguard.conflict_stats IS 'writes ignored by last_write_wins, per table';

-- Only the table's owner (or a member of the owning role, or a superuser)
-- may change its protection, as for ALTER TABLE. CREATE TRIGGER alone would
-- admit anyone holding the TRIGGER privilege.
CREATE FUNCTION syncguard.require_owner(target regclass) RETURNS text
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
COMMENT ON FUNCTION syncguard.require_owner(regclass) IS 'internal: the table''s qualified name, or an error unless the caller owns it';

CREATE FUNCTION syncguard.protect(target regclass, columns text[] DEFAULT NULL, policy jsonb DEFAULT NULL)
RETURNS void
LANGUAGE plpgsql VOLATILE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    qualified text := syncguard.require_owner(target);
    config text;
BEGIN
    -- Serializes protect/unprotect of one table and keeps writers out while
    -- the trigger is replaced.
    EXECUTE format('LOCK TABLE %s IN SHARE ROW EXCLUSIVE MODE', target);
    config := syncguard.protect_config(target, columns, policy);
    IF EXISTS (SELECT 1 FROM pg_trigger WHERE tgrelid = target AND tgname = 'syncguard_protect') THEN
        EXECUTE format('DROP TRIGGER syncguard_protect ON %s', target);
    END IF;
    EXECUTE format('CREATE TRIGGER syncguard_protect BEFORE UPDATE ON %s FOR EACH ROW '
                   'EXECUTE FUNCTION syncguard.protect_trigger(%L, %L)', target, qualified, config);
END
$$;
COMMENT ON FUNCTION syncguard.protect(regclass, text[], jsonb) IS 'install (or replace) the trigger that merges every UPDATE of target into the stored row';

CREATE FUNCTION syncguard.unprotect(target regclass) RETURNS boolean
LANGUAGE plpgsql VOLATILE
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    PERFORM syncguard.require_owner(target);
    IF NOT EXISTS (SELECT 1 FROM pg_trigger WHERE tgrelid = target AND tgname = 'syncguard_protect') THEN
        RETURN false;
    END IF;
    EXECUTE format('DROP TRIGGER syncguard_protect ON %s', target);
    RETURN true;
END
$$;
COMMENT ON FUNCTION syncguard.unprotect(regclass) IS 'remove the protection trigger; true when the table was protected';

CREATE FUNCTION syncguard.tombstone() RETURNS jsonb
LANGUAGE sql IMMUTABLE PARALLEL SAFE
RETURN '{"$delete": true}'::jsonb;
COMMENT ON FUNCTION syncguard.tombstone() IS 'the value that deletes a key in a merge: {"$delete": true}';

-- The trigger's second argument is its configuration (JSON); tgargs holds
-- the arguments NUL-terminated.
CREATE VIEW syncguard.protected_tables AS
SELECT t.tgrelid::regclass AS table_name,
       CASE WHEN jsonb_typeof(c.config -> 'columns') = 'array'
            THEN ARRAY(SELECT jsonb_array_elements_text(c.config -> 'columns')) END AS columns,
       c.config -> 'policy' AS policy
  FROM pg_catalog.pg_trigger t,
       LATERAL (SELECT pg_catalog.position(t.tgargs, '\x00'::bytea) AS sep) a,
       LATERAL (SELECT pg_catalog.convert_from(
                    pg_catalog.substring(t.tgargs, a.sep + 1, pg_catalog.length(t.tgargs) - a.sep - 1),
                    'UTF8')::jsonb AS config) c
 WHERE t.tgname = 'syncguard_protect'
   AND t.tgfoid = 'syncguard.protect_trigger()'::regprocedure;
GRANT SELECT ON syncguard.protected_tables TO PUBLIC;
COMMENT ON VIEW syncguard.protected_tables IS 'tables protected by syncguard.protect, with their columns and write policy';

COMMENT ON FUNCTION syncguard.merge_upsert(regclass, jsonb, jsonb, jsonb) IS 'insert or deep-merge one row by a unique key; returns the stored row';
COMMENT ON FUNCTION syncguard.protect_config(regclass, text[], jsonb) IS 'internal: checks a protection configuration against the table';
COMMENT ON FUNCTION syncguard.freshness_stamp(jsonb, jsonb, timestamptz) IS 'stamps each top-level key of patch that carries a value with at';
