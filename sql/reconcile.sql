-- Reconciliation (docs/reconcile.md): every row and field in which a local
-- table differs from another table, typically a postgres_fdw foreign table
-- on the source system's server, without pulling that table across the
-- network when few rows differ.
--
-- The key space is cut into segments at key values taken from the local
-- table. For each segment both sides compute count(*) and the sum of a 64-bit
-- row hash in ONE grouped query per side; every expression in it is a
-- built-in IMMUTABLE function, so postgres_fdw sends the whole aggregate to
-- the remote server and only one row per segment comes back. Segments whose
-- (count, sum) differ are cut again, until a segment holds at most
-- `threshold` rows; only those rows are fetched from both sides and compared
-- field by field.
--
-- The row hash is built from each column type's own extended hash function
-- (its default hash operator class), which hashes the value, not its text:
-- 1.0 and 1.00, jsonb documents in any key order, a timestamptz in any time
-- zone hash alike, exactly when `=` calls them equal, so the checksums and
-- the final comparison agree and no session setting (TimeZone, DateStyle,
-- extra_float_digits, which postgres_fdw sets differently on the remote
-- session) enters the checksum.

-- The columns compared, key columns first: name, type, whether part of the
-- key, and whether its value is jsonb-like (a difference shown as a patch).
-- Checks that every column exists on both sides with the same type.
CREATE FUNCTION syncguard.reconcile_columns(
    local regclass, remote regclass, key_columns text[], columns text[]
) RETURNS TABLE(name text, typ regtype, is_key boolean)
LANGUAGE plpgsql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    keys text[] := key_columns;
    cols text[] := columns;
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
    FOREACH c IN ARRAY keys || cols LOOP
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
        IF array_position(keys, c) IS NOT NULL AND array_position(cols, c) IS NOT NULL THEN
            CONTINUE;  -- a key column named in columns too is compared as part of the key
        END IF;
        name := c;
        typ := lt;
        is_key := c = ANY (keys);
        RETURN NEXT;
    END LOOP;
END
$$;

-- The 64-bit hash of column `col` (a quoted expression) of type `typ`, seeded
-- with `seed`, as SQL text; a NULL hashes to a constant of its own. Uses the
-- extended hash function of the type's default hash operator class where it
-- is a built-in function that hashes the value the same way on every server
-- (not enums: those hash their OID, which differs between databases);
-- timestamptz, date and boolean, whose hash functions take another type,
-- go through an immutable conversion. Other types hash their text through the
-- type's output function when it is immutable (still computed remotely), or
-- their cast to text (computed locally: the foreign table's rows are fetched).
CREATE FUNCTION syncguard.reconcile_hash(col text, typ regtype, seed integer)
RETURNS text
LANGUAGE plpgsql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    fn regproc;
    argtype oid;
    expr text;
    base oid;
    kind "char";
    output regproc;
BEGIN
    SELECT coalesce(nullif(t.typbasetype, 0), t.oid) INTO base FROM pg_type t WHERE t.oid = typ;
    SELECT t.typtype, t.typoutput INTO kind, output FROM pg_type t WHERE t.oid = base;
    expr := CASE base
        -- (its opclass's function takes timestamp; the array's hash calls it for
        -- timestamptz. Not timezone('UTC', …): postgres_fdw keeps a function
        -- with a text constant argument local.)
        WHEN 'timestamptz'::regtype THEN format('pg_catalog.hash_array_extended(ARRAY[%s], %s)', col, seed)
        WHEN 'date'::regtype THEN format('pg_catalog.timestamp_hash_extended(pg_catalog."timestamp"(%s), %s)', col, seed)
        WHEN 'bool'::regtype THEN format('pg_catalog.hashint4extended(pg_catalog.int4(%s), %s)', col, seed)
        END;
    IF expr IS NULL AND kind IN ('b', 'r', 'm') THEN
        SELECT p.amproc, p.amproclefttype INTO fn, argtype
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

-- `key OP bound` for a (possibly composite) key, written as comparisons of
-- single columns (a < x OR (a = x AND b < y)), which postgres_fdw sends to
-- the remote server and an index on the key serves. op: '<' or '>='.
CREATE FUNCTION syncguard.reconcile_compare(cols text[], types regtype[], bound jsonb, op text)
RETURNS text
LANGUAGE plpgsql IMMUTABLE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    n integer := cardinality(cols);
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

-- The segment of a row: the number of bounds (sorted key values) at or
-- below its key, 0 … cardinality. One key column: width_bucket over an
-- array of the bounds; several: a balanced CASE tree of row comparisons.
CREATE FUNCTION syncguard.reconcile_segment(cols text[], types regtype[], bounds jsonb, lo integer DEFAULT 0, hi integer DEFAULT NULL)
RETURNS text
LANGUAGE plpgsql IMMUTABLE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    top integer := coalesce(hi, jsonb_array_length(bounds));
    mid integer;
BEGIN
    IF jsonb_array_length(bounds) = 0 THEN
        RETURN '0';
    END IF;
    IF hi IS NULL AND cardinality(cols) = 1 THEN
        RETURN format('pg_catalog.width_bucket(%s, ARRAY[%s]::%s[])', cols[1],
                      (SELECT string_agg(format('%L', b->>0), ', ' ORDER BY o)
                         FROM jsonb_array_elements(bounds) WITH ORDINALITY AS e(b, o)),
                      types[1]);
    END IF;
    IF lo = top THEN
        RETURN lo::text;
    END IF;
    mid := (lo + top + 1) / 2;   -- the segment is >= mid exactly when key >= bounds[mid - 1]
    RETURN format('CASE WHEN %s THEN %s ELSE %s END',
                  syncguard.reconcile_compare(cols, types, bounds->(mid - 1), '<'),
                  syncguard.reconcile_segment(cols, types, bounds, lo, mid - 1),
                  syncguard.reconcile_segment(cols, types, bounds, mid, top));
END
$$;

-- The condition selecting the rows of a list of key ranges [lo, hi) (a NULL
-- bound is open), as SQL text.
CREATE FUNCTION syncguard.reconcile_ranges(cols text[], types regtype[], ranges jsonb)
RETURNS text
LANGUAGE sql IMMUTABLE
SET search_path = pg_catalog, pg_temp
BEGIN ATOMIC
    SELECT coalesce(string_agg(
               '(' || concat_ws(' AND ',
                   CASE WHEN jsonb_typeof(r->0) = 'array' THEN syncguard.reconcile_compare(cols, types, r->0, '>=') END,
                   CASE WHEN jsonb_typeof(r->1) = 'array' THEN syncguard.reconcile_compare(cols, types, r->1, '<') END,
                   'true') || ')',
               ' OR ' ORDER BY o), 'false')
      FROM jsonb_array_elements(ranges) WITH ORDINALITY AS e(r, o);
END;

-- The query comparing the rows of local and remote that `cond` selects
-- (key columns as t.<name>): the rows reconcile returns, in key order.
CREATE FUNCTION syncguard.reconcile_rows_query(
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
      FROM syncguard.reconcile_columns(local, remote, key_columns, columns) AS c;
    -- Any key column tells a missing side: key values are never NULL.
    SELECT format('%I', c.name) INTO k1
      FROM syncguard.reconcile_columns(local, remote, key_columns, columns) AS c WHERE c.is_key LIMIT 1;
    RETURN format(
        'WITH l AS MATERIALIZED (SELECT %1$s FROM %2$s AS t WHERE %4$s),'
        '     r AS MATERIALIZED (SELECT %1$s FROM %3$s AS t WHERE %4$s)'
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

-- Every difference between local and remote: one row per key that is
-- missing on one side or whose compared columns differ.
--   key   the key columns and values, {"id": 42}
--   kind  missing_local (only remote has the key), missing_remote (only
--         local has it) or differs
--   diff  differs: {"column": {"local": …, "remote": …}} per differing
--         column; for a jsonb (or json) column whose both values are not
--         NULL {"column": {"patch": …}}, the RFC 7396 patch that turns the
--         local value into the remote one (jsonb_merge_diff). missing_*:
--         the compared columns of the row the other side lacks.
CREATE FUNCTION syncguard.reconcile(
    local regclass,
    remote regclass,
    key_columns text[] DEFAULT NULL,
    columns text[] DEFAULT NULL,
    segments integer DEFAULT 64,
    threshold integer DEFAULT 1000
) RETURNS TABLE(key jsonb, kind text, diff jsonb)
LANGUAGE plpgsql VOLATILE
-- key bounds travel as text; 3 digits keep a float key's text exact
SET extra_float_digits = 3
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    kcols text[];        -- t.<key column>, quoted
    knames text[];
    ktypes regtype[];
    rowhash text;
    key_json text;       -- jsonb_build_array of the key columns' text
    prev_bounds jsonb := '[]';
    bounds jsonb;
    pending jsonb := '[{"seg": 0, "lo": null, "hi": null}]';
    next_pending jsonb;
    leaves jsonb;
    splits jsonb;
    differing jsonb;
    p jsonb;
    d jsonb;
    cond text;
    seg_expr text;
    lo jsonb;
    hi jsonb;
    level integer := 0;
BEGIN
    IF segments IS NULL OR segments NOT BETWEEN 2 AND 10000 OR threshold IS NULL OR threshold < 1 THEN
        RAISE EXCEPTION USING ERRCODE = '22023',
            MESSAGE = format('reconcile: segments must be 2 … 10000 and threshold at least 1, got %s and %s',
                             coalesce(segments::text, 'NULL'), coalesce(threshold::text, 'NULL')),
            HINT = 'Leave them out to take the defaults (64 segments, 1000 rows).';
    END IF;
    SELECT array_agg(format('t.%I', c.name)), array_agg(c.name), array_agg(c.typ),
           format('pg_catalog.jsonb_build_array(%s)', string_agg(format('t.%I::pg_catalog.text', c.name), ', '))
      INTO kcols, knames, ktypes, key_json
      FROM syncguard.reconcile_columns(local, remote, key_columns, columns) AS c
     WHERE c.is_key;
    SELECT string_agg(syncguard.reconcile_hash(format('t.%I', c.name), c.typ, (o - 1)::integer), ' OPERATOR(pg_catalog.#) ' ORDER BY o)
      INTO rowhash
      FROM syncguard.reconcile_columns(local, remote, key_columns, columns) WITH ORDINALITY AS c(name, typ, is_key, o);

    WHILE jsonb_array_length(pending) > 0 LOOP
        level := level + 1;
        cond := (SELECT syncguard.reconcile_ranges(kcols, ktypes, coalesce(jsonb_agg(jsonb_build_array(e->'lo', e->'hi')), '[]'))
                   FROM jsonb_array_elements(pending) AS e);
        -- Cut every pending segment at every (n / segments)-th local key.
        EXECUTE format(
            'SELECT coalesce(jsonb_object_agg(s, b), ''{}'') FROM ('
            ' SELECT s, jsonb_agg(b ORDER BY rn) AS b FROM ('
            '  SELECT %1$s AS s, %2$s AS b, row_number() OVER w AS rn, count(*) OVER (PARTITION BY %1$s) AS n'
            '    FROM %3$s AS t WHERE %4$s WINDOW w AS (PARTITION BY %1$s ORDER BY %5$s)) AS x'
            '  WHERE rn > 1 AND (rn - 1) %% greatest(1, ceil(n::numeric / %6$s))::bigint = 0'
            '  GROUP BY s) AS y',
            syncguard.reconcile_segment(kcols, ktypes, prev_bounds), key_json, local, cond,
            array_to_string(kcols, ', '), segments)
          INTO splits;
        -- This level's bounds: each pending segment's own bounds and its cuts, in key order.
        bounds := '[]';
        FOR p IN SELECT e FROM jsonb_array_elements(pending) AS e ORDER BY (e->>'seg')::integer LOOP
            IF jsonb_typeof(p->'lo') = 'array' AND bounds->-1 IS DISTINCT FROM p->'lo' THEN
                bounds := bounds || jsonb_build_array(p->'lo');
            END IF;
            bounds := bounds || coalesce(splits->(p->>'seg'), '[]');
            IF jsonb_typeof(p->'hi') = 'array' THEN
                bounds := bounds || jsonb_build_array(p->'hi');
            END IF;
        END LOOP;
        seg_expr := syncguard.reconcile_segment(kcols, ktypes, bounds);
        -- One grouped query per side, the remote one computed remotely.
        EXECUTE format(
            'WITH l AS MATERIALIZED (SELECT %1$s AS s, count(*) AS n, sum(%2$s) AS h FROM %3$s AS t WHERE %5$s GROUP BY 1),'
            '     r AS MATERIALIZED (SELECT %1$s AS s, count(*) AS n, sum(%2$s) AS h FROM %4$s AS t WHERE %5$s GROUP BY 1)'
            ' SELECT coalesce(jsonb_agg(jsonb_build_array(coalesce(l.s, r.s), coalesce(l.n, 0), coalesce(r.n, 0))'
            '                           ORDER BY coalesce(l.s, r.s)), ''[]'')'
            '   FROM l FULL JOIN r ON l.s = r.s'
            '  WHERE l.n IS DISTINCT FROM r.n OR l.h IS DISTINCT FROM r.h',
            seg_expr, rowhash, local, remote, cond)
          INTO differing;
        leaves := '[]';
        next_pending := '[]';
        FOR d IN SELECT e FROM jsonb_array_elements(differing) AS e LOOP
            lo := CASE WHEN (d->>0)::integer > 0 THEN bounds->((d->>0)::integer - 1) ELSE 'null' END;
            hi := coalesce(bounds->((d->>0)::integer), 'null');
            -- Small enough, or not to be cut by local keys (at most one here): compare its rows.
            IF greatest((d->>1)::bigint, (d->>2)::bigint) <= threshold OR (d->>1)::bigint < 2 OR level >= 40 THEN
                leaves := leaves || jsonb_build_array(jsonb_build_array(lo, hi));
            ELSE
                next_pending := next_pending || jsonb_build_object('seg', (d->>0)::integer, 'lo', lo, 'hi', hi);
            END IF;
        END LOOP;
        IF jsonb_array_length(leaves) > 0 THEN
            RETURN QUERY EXECUTE syncguard.reconcile_rows_query(local, remote, key_columns, columns,
                                                                syncguard.reconcile_ranges(kcols, ktypes, leaves));
        END IF;
        prev_bounds := bounds;
        pending := next_pending;
    END LOOP;
END
$$;
