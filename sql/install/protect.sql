-- Merge upserts and protection (docs/protection.md):
-- protect / unprotect, the protected_tables view, and the counters of writes
-- ignored by last-write-wins. Loaded (src/install_order.rs) after the Rust
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
CREATE FUNCTION syncguard._require_owner(target regclass) RETURNS text
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
COMMENT ON FUNCTION syncguard._require_owner(regclass) IS 'internal: the table''s qualified name, or an error unless the caller owns it';

-- Partitions share their parent's trigger (PostgreSQL clones it onto each
-- of them, present and future): a partition is protected through its
-- parent, never on its own, and a partitioned table is protected only when
-- no partition has a protection of its own. Raised before any DDL, so the
-- caller reads what is protected through what, not a DDL error.
CREATE FUNCTION syncguard._protect_partition_check(target regclass, qualified text) RETURNS void
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
COMMENT ON FUNCTION syncguard._protect_partition_check(regclass, text) IS
    'internal: refuses protect/unprotect of a partition protected through its parent, and of a parent whose partition has its own protection';

-- The inheritance children of `target` (not partitions), all levels down.
CREATE FUNCTION syncguard._inheritance_children(target regclass) RETURNS SETOF regclass
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
COMMENT ON FUNCTION syncguard._inheritance_children(regclass) IS
    'internal: the inheritance children of a table (not partitions), at every level';

CREATE FUNCTION syncguard.protect(target regclass, columns text[] DEFAULT NULL, policy jsonb DEFAULT NULL)
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
COMMENT ON FUNCTION syncguard.protect(regclass, text[], jsonb) IS 'install (or replace) the trigger that merges every UPDATE of target (and of its inheritance children) into the stored row';

CREATE FUNCTION syncguard.unprotect(target regclass) RETURNS boolean
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
       c.config -> 'policy' AS policy,
       -- Inheritance children created after protect(): not protected until
       -- protect runs again.
       ARRAY(SELECT k FROM syncguard._inheritance_children(t.tgrelid) AS k
              WHERE NOT EXISTS (SELECT FROM pg_catalog.pg_trigger kt
                                 WHERE kt.tgrelid = k AND kt.tgname = 'syncguard_protect'))
           AS unprotected_children
  FROM pg_catalog.pg_trigger t,
       LATERAL (SELECT pg_catalog.position(t.tgargs, '\x00'::bytea) AS sep) a,
       LATERAL (SELECT pg_catalog.convert_from(
                    pg_catalog.substring(t.tgargs, a.sep + 1, pg_catalog.length(t.tgargs) - a.sep - 1),
                    'UTF8')::jsonb AS config) c
 WHERE t.tgname = 'syncguard_protect'
   AND t.tgfoid = 'syncguard._protect_trigger()'::regprocedure;
GRANT SELECT ON syncguard.protected_tables TO PUBLIC;
COMMENT ON VIEW syncguard.protected_tables IS 'tables protected by syncguard.protect, with their columns, write policy and unprotected inheritance children';

COMMENT ON FUNCTION syncguard.merge_upsert(regclass, jsonb, jsonb, jsonb) IS 'insert or deep-merge one row by a unique key; returns the stored row';

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
COMMENT ON FUNCTION syncguard._protect_config(regclass, text[], jsonb) IS 'internal: checks a protection configuration against the table';
COMMENT ON FUNCTION syncguard._freshness_stamp(jsonb, jsonb, timestamptz) IS 'stamps each top-level key of patch that carries a value with at';
