-- Housekeeping (docs/invariants.md, "housekeeping"): the periodic chores of every
-- capability, in one function the background worker (or a pg_cron job)
-- calls. Loaded (src/install_order.rs) after the tables it tidies.

-- Fold the last_write_wins counters of backends that have exited into one
-- row per table (backend_pid 0), so syncguard.stale_writes stays as small as
-- the number of tables; conflict_stats sums the same totals before and
-- after. A live backend's row is left alone: it may be counting right now.
-- SECURITY DEFINER: only the extension's owner writes
-- the counters, and folding changes no total.
CREATE FUNCTION syncguard._fold_stale_writes() RETURNS bigint
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

-- The chores, one row each: what it was and how many rows it touched. Each
-- step is bounded, so a call stays short; the next call continues.
CREATE FUNCTION syncguard.housekeeping(
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

GRANT EXECUTE ON FUNCTION syncguard.housekeeping(integer, interval) TO PUBLIC;
COMMENT ON FUNCTION syncguard._fold_stale_writes() IS
    'fold the stale write counters of exited backends into one row per table';
COMMENT ON FUNCTION syncguard.housekeeping(integer, interval) IS
    'periodic chores: prune expired idempotency keys and old invariant runs, fold stale write counters, abandon timed-out sync runs';
