-- Invariant templates (docs/invariants.md, "Templates"): functions that write the
-- query of a classic diagnostic and call define_invariant with it. Tables are
-- regclass, columns are checked against the table and quoted with %I, values
-- are written as quoted literals. The generated query is stored in
-- syncguard.invariants.query and shown by \d+ syncguard_invariants.<view_name>.
-- Like define_invariant, a template defines the caller's own invariant of
-- that name.
--
-- Each query keeps the predicate on the table's timestamp a plain comparison
-- of the column, so an index on that column (or a partial index matching the
-- query's other conditions) finds the violating rows without reading the
-- table. A template that cannot know when a violation began (duplicates
-- without since_column, future timestamps, count mismatches) reports since as
-- -infinity: a violation from the first check, whatever the grace period.

-- `t.<column>` for a column of target, checked to exist (and to be of type
-- `want`, when given).
CREATE FUNCTION syncguard._invariant_column(target regclass, col text, want regtype DEFAULT NULL)
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

-- The entity expression of a row of target: its key columns (default: the
-- primary key) as text, one column as its text, several as a JSON array.
CREATE FUNCTION syncguard._invariant_entity(target regclass, key_columns text[] DEFAULT NULL)
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

-- Rows sharing the same key_columns values; the entity is the duplicated key.
-- since: when the second copy appeared (by since_column), or -infinity.
CREATE FUNCTION syncguard.invariant_duplicates(
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

-- Rows whose synced_at_column is older than `within`; since is the moment
-- the row became stale (synced_at + within). Rows never synced (NULL) are
-- invariant_never_synced's.
CREATE FUNCTION syncguard.invariant_not_synced_within(
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

-- Rows whose synced_at_column is NULL; since is created_at_column (when the
-- row appeared), or -infinity without one.
CREATE FUNCTION syncguard.invariant_never_synced(
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

-- Rows whose timestamp column lies more than `skew` in the future: a writer
-- with a wrong clock (or time zone). The offending value is shown as value.
CREATE FUNCTION syncguard.invariant_future_timestamps(
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

-- The record counts of two tables differ by more than tolerance: one row,
-- entity '<table_a> vs <table_b>', with both counts. Counting reads both
-- tables whole: give it a long schedule on big tables.
CREATE FUNCTION syncguard.invariant_count_mismatch(
    name text,
    table_a regclass,
    table_b regclass,
    tolerance bigint DEFAULT 0,
    severity text DEFAULT 'error',
    remediation text DEFAULT NULL,
    schedule interval DEFAULT '1 hour'
) RETURNS regclass
LANGUAGE plpgsql VOLATILE
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    IF tolerance IS NULL OR tolerance < 0 THEN
        RAISE EXCEPTION USING ERRCODE = '22023',
            MESSAGE = format('invariant %L: tolerance must not be negative, got %s', name, coalesce(tolerance::text, 'NULL')),
            HINT = 'Pass how many records the two tables may differ by (0: none).';
    END IF;
    RETURN syncguard.define_invariant(
        name,
        format('SELECT %L AS entity, ''-infinity''::timestamptz AS since, c.count_a, c.count_b '
               'FROM (SELECT (SELECT count(*) FROM %s) AS count_a, (SELECT count(*) FROM %s) AS count_b) AS c '
               'WHERE abs(c.count_a - c.count_b) > %s',
               format('%s vs %s', table_a, table_b), table_a, table_b, tolerance),
        severity => severity,
        remediation => coalesce(remediation, format('Compare %s with %s by key to find the missing records, then re-sync them.', table_a, table_b)),
        description => format('record counts of %s and %s differ by more than %s', table_a, table_b, tolerance),
        schedule => schedule, search_path => 'pg_catalog, pg_temp');
END
$$;

GRANT EXECUTE ON FUNCTION
    syncguard._invariant_column(regclass, text, regtype),
    syncguard._invariant_entity(regclass, text[]),
    syncguard.invariant_duplicates(text, regclass, text[], text, interval, text, text, interval),
    syncguard.invariant_not_synced_within(text, regclass, text, interval, text[], interval, text, text, interval),
    syncguard.invariant_never_synced(text, regclass, text, text, text[], interval, text, text, interval),
    syncguard.invariant_future_timestamps(text, regclass, text, interval, text[], text, text, interval),
    syncguard.invariant_count_mismatch(text, regclass, regclass, bigint, text, text, interval)
    TO PUBLIC;

COMMENT ON FUNCTION syncguard._invariant_column(regclass, text, regtype) IS
    'internal: t.<column> for a template''s query, checked against the table';
COMMENT ON FUNCTION syncguard._invariant_entity(regclass, text[]) IS
    'internal: the entity expression of a template''s query (key columns, default the primary key)';
COMMENT ON FUNCTION syncguard.invariant_duplicates(text, regclass, text[], text, interval, text, text, interval) IS
    'define an invariant: rows sharing the same key columns';
COMMENT ON FUNCTION syncguard.invariant_not_synced_within(text, regclass, text, interval, text[], interval, text, text, interval) IS
    'define an invariant: rows whose last sync is older than an interval';
COMMENT ON FUNCTION syncguard.invariant_never_synced(text, regclass, text, text, text[], interval, text, text, interval) IS
    'define an invariant: rows never synced';
COMMENT ON FUNCTION syncguard.invariant_future_timestamps(text, regclass, text, interval, text[], text, text, interval) IS
    'define an invariant: timestamps further in the future than a clock skew';
COMMENT ON FUNCTION syncguard.invariant_count_mismatch(text, regclass, regclass, bigint, text, text, interval) IS
    'define an invariant: two tables whose record counts differ';
