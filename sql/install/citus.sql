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
CREATE FUNCTION syncguard._citus_coordinator_only(caller text) RETURNS void
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
REVOKE ALL ON FUNCTION syncguard._citus_coordinator_only(text) FROM PUBLIC;
REVOKE ALL ON FUNCTION syncguard.distribute(regclass) FROM PUBLIC;
REVOKE ALL ON FUNCTION syncguard.undistribute() FROM PUBLIC;
REVOKE ALL ON FUNCTION syncguard.cluster_conflict_stats() FROM PUBLIC;
COMMENT ON FUNCTION syncguard._citus_coordinator_only(text) IS
    'internal: raises 55000 unless this is the Citus coordinator';
COMMENT ON FUNCTION syncguard.distribute(regclass) IS
    'Citus: distribute syncguard.idempotency_keys by scope (co-located with colocate_with); the other tables stay on the coordinator';
COMMENT ON FUNCTION syncguard.undistribute() IS
    'Citus: make syncguard.idempotency_keys a coordinator table again, leaving no shard behind';
COMMENT ON FUNCTION syncguard.cluster_conflict_stats() IS
    'writes ignored by last_write_wins, per table, summed over every Citus node';
