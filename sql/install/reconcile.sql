-- Reconciliation (docs/reconcile.md): every row and field in which a local
-- table differs from another table, typically a postgres_fdw foreign table
-- on the source system's server, without pulling that table across the
-- network when few rows differ.
--
-- The key space is cut into segments at key values taken from the local
-- table. For each segment both sides compute count(*) and the sum of a 64-bit
-- row hash in ONE query per side; every expression in it is an IMMUTABLE
-- built-in function, or syncguard's own where the remote has syncguard too
-- and the foreign server lists it in `extensions` (_reconcile_row_hash_args),
-- so postgres_fdw sends the whole aggregate to the remote server and only
-- one row per segment (or one row of them all) comes back. Segments whose
-- (count, sum) differ are cut again, until a segment holds at most
-- `threshold` rows; of those, both sides send each row's key and hash (the
-- remote's as arrays, one row per segment), and only the rows whose hash
-- differs are fetched from both sides and compared field by field. The two
-- sides' queries are one statement each, so with postgres_fdw's
-- async_capable option the remote server computes its part while we
-- compute ours.
--
-- The built-in row hash is made of each column type's own extended hash function
-- (its default hash operator class), which hashes the value, not its text:
-- 1.0 and 1.00, jsonb documents in any key order, a timestamptz in any time
-- zone hash alike, exactly when `=` calls them equal, so the checksums and
-- the final comparison agree and no session setting (TimeZone, DateStyle,
-- extra_float_digits, which postgres_fdw sets differently on the remote
-- session) enters the checksum.

-- The columns compared, key columns first, each once: name, type, whether
-- part of the key. Checks that every column exists on both sides with the
-- same type.
CREATE FUNCTION syncguard._reconcile_columns(
    local regclass, remote regclass, key_columns text[], columns text[]
) RETURNS TABLE(name text, typ regtype, is_key boolean)
LANGUAGE plpgsql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    keys text[] := key_columns;
    cols text[] := columns;
    all_cols text[];
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
    all_cols := keys || cols;
    FOR i IN 1 .. cardinality(all_cols) LOOP
        c := all_cols[i];
        -- Each column once: a key column named in columns too is compared
        -- as part of the key.
        CONTINUE WHEN array_position(all_cols, c) < i;
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
        name := c;
        typ := lt;
        is_key := i <= cardinality(keys);
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
-- go through an immutable conversion (a finite timestamptz: its distance
-- from 2000-01-01 UTC, an interval, the microseconds it is stored as; cheaper
-- than the one-element array whose hash calls the timestamp hash, which
-- stays for infinity, where subtracting fails). numeric's hash leaves out
-- the sign: a negative number takes another seed. Other types hash their text through the
-- type's output function when it is immutable, or their cast to text
-- (computed locally either way: postgres_fdw sends no function of a text
-- that is not a column, so the foreign table's rows are fetched).
-- `exact`: for the comparison of single rows, where the cost matters less,
-- a jsonb document hashes its text (its keys in jsonb's order; as bytea,
-- the way jsonb_send sends it, since postgres_fdw computes no function of a
-- text that is not a column remotely), since jsonb's hash leaves out the
-- signs of its numbers and where its objects and arrays end; equal
-- documents whose numbers are written with another scale then differ here
-- (and their rows are fetched to be compared).
CREATE FUNCTION syncguard._reconcile_hash(col text, typ regtype, seed integer, exact boolean)
RETURNS text
LANGUAGE plpgsql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    fn regproc;
    expr text;
    base oid;
    kind "char";
    output regproc;
BEGIN
    SELECT coalesce(nullif(t.typbasetype, 0), t.oid) INTO base FROM pg_type t WHERE t.oid = typ;
    SELECT t.typtype, t.typoutput INTO kind, output FROM pg_type t WHERE t.oid = base;
    expr := CASE base
        -- (its opclass's function takes timestamp, the array's hash calls it for
        -- timestamptz; the cast to timestamp depends on the time zone. Not
        -- timezone('UTC', …): postgres_fdw keeps a function with a text
        -- constant argument local.)
        WHEN 'timestamptz'::regtype THEN format('CASE WHEN pg_catalog.isfinite(%1$s)'
                                                ' THEN pg_catalog.interval_hash_extended(%1$s OPERATOR(pg_catalog.-) ''2000-01-01 00:00:00+00''::pg_catalog.timestamptz, %2$s)'
                                                ' ELSE pg_catalog.hash_array_extended(ARRAY[%1$s], %2$s) END', col, seed)
        WHEN 'date'::regtype THEN format('pg_catalog.timestamp_hash_extended(pg_catalog."timestamp"(%s), %s)', col, seed)
        WHEN 'bool'::regtype THEN format('pg_catalog.hashint4extended(pg_catalog.int4(%s), %s)', col, seed)
        WHEN 'numeric'::regtype THEN format('pg_catalog.hash_numeric_extended(%1$s, CASE WHEN %1$s OPERATOR(pg_catalog.<) 0::pg_catalog.numeric'
                                            ' THEN %2$s ELSE %3$s END)', col, -1 - seed, seed)
        WHEN 'jsonb'::regtype THEN CASE WHEN exact THEN
            format('pg_catalog.hash_array_extended(ARRAY[pg_catalog.jsonb_send(%s)], %s)', col, seed) END
        END;
    IF expr IS NULL AND kind IN ('b', 'r', 'm') THEN
        SELECT p.amproc INTO fn
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

-- The row hash computed by syncguard itself (src/reconcile_hash.rs), a
-- fraction of the cost of the built-in hash functions (above all jsonb's);
-- a jsonb document's structure and its numbers' signs count in it. And the
-- checksums of a side in one aggregate without GROUP BY: `{segment, count,
-- sum of row hashes, …}` for every segment (a number 0 … 2^24 - 1) with
-- rows. A GROUP BY over the segment, whose number of groups the planner
-- takes for that of the key, is planned as a sort of every row. reconcile
-- uses them where syncguard hashes both sides' rows (see
-- _reconcile_row_hash_args).
CREATE FUNCTION syncguard._reconcile_row_hash(VARIADIC "any")
RETURNS bigint
LANGUAGE c IMMUTABLE PARALLEL SAFE
AS 'MODULE_PATHNAME', 'reconcile_row_hash_wrapper';

-- Whether _reconcile_row_hash takes values of a type (its list, asked
-- rather than written again here).
CREATE FUNCTION syncguard._reconcile_row_hash_takes(typ regtype)
RETURNS boolean
LANGUAGE c STABLE STRICT PARALLEL SAFE
AS 'MODULE_PATHNAME', 'reconcile_row_hash_takes_wrapper';

CREATE FUNCTION syncguard._reconcile_checksums_step(internal, integer, VARIADIC "any")
RETURNS internal
LANGUAGE c IMMUTABLE PARALLEL SAFE
AS 'MODULE_PATHNAME', 'reconcile_checksums_step_wrapper';

CREATE FUNCTION syncguard._reconcile_checksums_final(internal)
RETURNS bigint[]
LANGUAGE c IMMUTABLE PARALLEL SAFE
AS 'MODULE_PATHNAME', 'reconcile_checksums_final_wrapper';

CREATE AGGREGATE syncguard._reconcile_checksums(integer, VARIADIC "any") (
    SFUNC = syncguard._reconcile_checksums_step,
    STYPE = internal,
    FINALFUNC = syncguard._reconcile_checksums_final,
    PARALLEL = SAFE
);

-- The arguments of _reconcile_row_hash over the compared columns (an
-- alias t) where syncguard hashes both tables' rows: each is a table of
-- this server, or a foreign table whose server lists syncguard in its
-- `extensions` option, so that postgres_fdw sends the calls to the remote.
-- NULL otherwise: every column then hashes by _reconcile_hash. The columns
-- of a type _reconcile_row_hash does not take come last, as one argument:
-- the XOR of their _reconcile_hash.
CREATE FUNCTION syncguard._reconcile_row_hash_args(
    local regclass, remote regclass, key_columns text[], columns text[])
RETURNS text
LANGUAGE plpgsql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    ours text;
    others text;
BEGIN
    IF NOT (SELECT bool_and(c.relkind <> 'f' OR EXISTS (
                    SELECT FROM pg_foreign_table ft
                      JOIN pg_foreign_server s ON s.oid = ft.ftserver
                     CROSS JOIN pg_options_to_table(s.srvoptions) AS o
                     WHERE ft.ftrelid = c.oid AND o.option_name = 'extensions'
                       AND 'syncguard' = ANY (SELECT lower(btrim(e, ' "')) FROM unnest(string_to_array(o.option_value, ',')) AS e)))
              FROM pg_class c
             WHERE c.oid IN (local, remote)) THEN
        RETURN NULL;
    END IF;
    SELECT string_agg(format('t.%I', c.name), ', ' ORDER BY c.o) FILTER (WHERE c.ours),
           string_agg(syncguard._reconcile_hash(format('t.%I', c.name), c.typ, (c.o - 1)::integer, true),
                      ' OPERATOR(pg_catalog.#) ' ORDER BY c.o) FILTER (WHERE NOT c.ours)
      INTO ours, others
      FROM (SELECT c.name, c.typ, c.o,
                   syncguard._reconcile_row_hash_takes(c.typ) AS ours
              FROM syncguard._reconcile_columns(local, remote, key_columns, columns)
                   WITH ORDINALITY AS c(name, typ, is_key, o)) AS c;
    RETURN concat_ws(', ', ours, others);
END
$$;

-- `key OP bound` for a (possibly composite) key, written as comparisons of
-- single columns (a < x OR (a = x AND b < y)), which postgres_fdw sends to
-- the remote server and an index on the key serves. op: '<' or '>='. A bound
-- may give fewer columns than the key: the rest count as lower than any
-- value (a bound [x] of key (a, b) lies before every row with a = x).
CREATE FUNCTION syncguard._reconcile_compare(cols text[], types regtype[], bound jsonb, op text)
RETURNS text
LANGUAGE plpgsql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    n integer := jsonb_array_length(bound);
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

-- How many of `vals` (sorted values of type typ, as text) are at or below
-- `col`, as SQL: width_bucket. Over a type of variable length width_bucket
-- searches linearly (a few µs per row for 2000 text values), so past 64
-- values it goes in two steps of about sqrt(n) values each: a coarse array
-- of every k-th value, then the k - 1 values after the one found.
CREATE FUNCTION syncguard._reconcile_bucket(col text, typ regtype, vals jsonb)
RETURNS text
LANGUAGE plpgsql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    n integer := jsonb_array_length(vals);
    k integer := ceil(sqrt(n));
BEGIN
    IF n <= 64 OR (SELECT t.typlen FROM pg_type t WHERE t.oid = typ) > 0 THEN
        RETURN format('pg_catalog.width_bucket(%s, ARRAY[%s]::%s[])', col,
                      (SELECT string_agg(format('%L', e.v), ', ' ORDER BY e.o)
                         FROM jsonb_array_elements_text(vals) WITH ORDINALITY AS e(v, o)),
                      typ);
    END IF;
    RETURN format('CASE %s%s END',
                  syncguard._reconcile_bucket(col, typ,
                      (SELECT jsonb_agg(e.v ORDER BY e.o) FROM jsonb_array_elements(vals) WITH ORDINALITY AS e(v, o)
                        WHERE e.o % k = 0)),
                  (SELECT string_agg(format(' WHEN %s THEN %s', j, CASE WHEN f.vals IS NULL THEN (j * k)::text
                                     ELSE format('%s + %s', j * k, syncguard._reconcile_bucket(col, typ, f.vals)) END), '' ORDER BY j)
                     FROM generate_series(0, n / k) AS j
                     CROSS JOIN LATERAL (SELECT jsonb_agg(e.v ORDER BY e.o) AS vals
                                           FROM jsonb_array_elements(vals) WITH ORDINALITY AS e(v, o)
                                          WHERE e.o > j * k AND e.o < (j + 1) * k) AS f));
END
$$;

-- The segment of a row: the number of bounds (sorted key values, possibly
-- shorter than the key, see _reconcile_compare) at or below its key,
-- 0 … cardinality. width_bucket over the bounds' first column counts every
-- bound whose first column is at or below the row's; for a row whose first
-- column equals that of bounds with more columns, those count only where
-- the rest of the key is at or above theirs (the same count, recursively,
-- over the rest). Compact, so the remote's planner and JIT see a small
-- expression: one CASE arm per first-column value that holds several
-- segments, not one per bound.
CREATE FUNCTION syncguard._reconcile_segment(cols text[], types regtype[], bounds jsonb)
RETURNS text
LANGUAGE plpgsql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    expr text;
    adjust text;
BEGIN
    IF jsonb_array_length(bounds) = 0 THEN
        RETURN '0';
    END IF;
    expr := syncguard._reconcile_bucket(cols[1], types[1],
                                       (SELECT jsonb_agg(e.b -> 0 ORDER BY e.o)
                                          FROM jsonb_array_elements(bounds) WITH ORDINALITY AS e(b, o)));
    IF cardinality(cols) = 1 THEN
        RETURN expr;
    END IF;
    SELECT string_agg(format(' WHEN %s OPERATOR(pg_catalog.=) %L::%s THEN %s - %s',
                             cols[1], g.v, types[1],
                             syncguard._reconcile_segment(cols[2:], types[2:], g.rests),
                             jsonb_array_length(g.rests)), '' ORDER BY g.first)
      INTO adjust
      FROM (SELECT e.b ->> 0 AS v, min(e.o) AS first, jsonb_agg(e.b - 0 ORDER BY e.o) AS rests
              FROM jsonb_array_elements(bounds) WITH ORDINALITY AS e(b, o)
             WHERE jsonb_array_length(e.b) > 1
             GROUP BY e.b ->> 0) AS g;
    IF adjust IS NULL THEN
        RETURN expr;
    END IF;
    RETURN format('(%s + CASE%s ELSE 0 END)', expr, adjust);
END
$$;

-- The condition selecting the rows of a list of key ranges [lo, hi) (a NULL
-- bound is open), as SQL text.
CREATE FUNCTION syncguard._reconcile_ranges(cols text[], types regtype[], ranges jsonb)
RETURNS text
LANGUAGE sql STABLE
SET search_path = pg_catalog, pg_temp
BEGIN ATOMIC
    SELECT coalesce(string_agg(
               '(' || concat_ws(' AND ',
                   CASE WHEN jsonb_typeof(r->0) = 'array' THEN syncguard._reconcile_compare(cols, types, r->0, '>=') END,
                   CASE WHEN jsonb_typeof(r->1) = 'array' THEN syncguard._reconcile_compare(cols, types, r->1, '<') END,
                   'true') || ')',
               ' OR ' ORDER BY o), 'false')
      FROM jsonb_array_elements(ranges) WITH ORDINALITY AS e(r, o);
END;

-- The query comparing the rows of local and remote that `cond` selects
-- (key columns as t.<name>): the rows reconcile returns, in key order.
CREATE FUNCTION syncguard._reconcile_rows_query(
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
      FROM syncguard._reconcile_columns(local, remote, key_columns, columns) AS c;
    -- Any key column tells a missing side: key values are never NULL.
    SELECT format('%I', c.name) INTO k1
      FROM syncguard._reconcile_columns(local, remote, key_columns, columns) AS c WHERE c.is_key LIMIT 1;
    RETURN format(
        'WITH l AS (SELECT %1$s FROM %2$s AS t WHERE %4$s),'
        '     r AS (SELECT %1$s FROM %3$s AS t WHERE %4$s)'
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

-- The condition selecting the rows of some segments (numbers into `bounds`,
-- as _reconcile_segment counts them), as SQL text. Runs of consecutive
-- segments become one key range each, which an index on the key serves;
-- past 500 ranges, the segment number of every row is tested instead.
CREATE FUNCTION syncguard._reconcile_where(cols text[], types regtype[], bounds jsonb, segs integer[])
RETURNS text
LANGUAGE plpgsql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    ranges jsonb;
BEGIN
    SELECT coalesce(jsonb_agg(jsonb_build_array(
                        CASE WHEN i.first > 0 THEN bounds -> (i.first - 1) ELSE 'null' END,
                        coalesce(bounds -> i.last, 'null')) ORDER BY i.first), '[]')
      INTO ranges
      FROM (SELECT min(s) AS first, max(s) AS last
              FROM (SELECT s, s - row_number() OVER (ORDER BY s) AS island
                      FROM (SELECT DISTINCT s FROM unnest(segs) AS u(s)) AS d) AS n
             GROUP BY island) AS i;
    IF jsonb_array_length(ranges) <= 500 THEN
        RETURN syncguard._reconcile_ranges(cols, types, ranges);
    END IF;
    RETURN format('%s OPERATOR(pg_catalog.=) ANY (%L::pg_catalog.int4[])',
                  syncguard._reconcile_segment(cols, types, bounds), segs);
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
--         the compared columns of the row the other side has.
--
-- Each pass reads the keys of the pending key ranges of the local table in
-- key order and cuts them into segments of threshold/2 local rows (fewer,
-- larger ones when that would make more than `segments`; an integer key's
-- first pass cuts equal key widths instead); then one grouped
-- query per side sums the row hashes of each segment, the remote one
-- computed by the remote server. A differing segment of at most `threshold` rows on both
-- sides has its rows' hashes compared and the rows whose hash differs
-- compared; a larger one is the next pass's.
CREATE FUNCTION syncguard.reconcile(
    local regclass,
    remote regclass,
    key_columns text[] DEFAULT NULL,
    columns text[] DEFAULT NULL,
    segments integer DEFAULT 10000,
    threshold integer DEFAULT 200
) RETURNS TABLE(key jsonb, kind text, diff jsonb)
LANGUAGE plpgsql VOLATILE
-- key bounds travel as text; 3 digits keep a float key's text exact
SET extra_float_digits = 3
-- the segment numbers of a composite key are a large CASE expression, whose
-- JIT compilation would take longer than the whole comparison
SET jit = off
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    kcols text[];        -- t.<key column>, quoted
    ktypes regtype[];
    korder text;
    rowhash text;
    rowhash_exact text;  -- (the hash of single rows, see _reconcile_hash)
    hash_args text;      -- (see _reconcile_row_hash_args)
    key_json text;       -- jsonb_build_array of the key columns' text: a bound
    bounds jsonb := '[]';
    seg_expr text;
    cond text := 'true';
    pending_rows numeric;
    step bigint;
    sums_query text;
    leaves integer[];
    small integer[];
    pending integer[];
    small_cond text;
    rows_cond text;
    -- (parts of the query finding the keys of differing rows, an item per key column)
    found_keys text;         -- the keys found, as text arrays
    segment_keys text;       -- a segment's arrays of our keys (l1, …) and of the remote's (r1, …)
    remote_key_arrays text;  -- the remote's arrays of keys
    local_key_arrays text;   -- ours, in two steps: the rows' keys and hashes (local_keys),
    local_keys text;         -- then their arrays (sorting the rows by segment sorts narrow ones)
    either_key text;         -- the key of either side
    local_unnested text;     -- our keys, unnested
    remote_unnested text;    -- the remote's
    key_names text;          -- their names (k1, …)
    same_key text;           -- the join by key
    nkeys bigint;
    keyvals text[];
    level integer := 0;
    kmin numeric;        -- an integer key's range, width and segments in the first pass
    kmax numeric;
    width numeric;
    nsegs numeric;
BEGIN
    IF segments IS NULL OR segments NOT BETWEEN 2 AND 100000 OR threshold IS NULL OR threshold < 2 THEN
        RAISE EXCEPTION USING ERRCODE = '22023',
            MESSAGE = format('reconcile: segments must be 2 … 100000 and threshold at least 2, got %s and %s',
                             coalesce(segments::text, 'NULL'), coalesce(threshold::text, 'NULL')),
            HINT = 'Leave them out to take the defaults (10000 segments, 200 rows).';
    END IF;
    SELECT array_agg(format('t.%I', c.name)), array_agg(c.typ),
           string_agg(format('t.%I', c.name), ', '),
           format('pg_catalog.jsonb_build_array(%s)', string_agg(format('t.%I::pg_catalog.text', c.name), ', '))
      INTO kcols, ktypes, korder, key_json
      FROM syncguard._reconcile_columns(local, remote, key_columns, columns) AS c
     WHERE c.is_key;
    hash_args := syncguard._reconcile_row_hash_args(local, remote, key_columns, columns);
    IF hash_args IS NULL THEN
        SELECT string_agg(syncguard._reconcile_hash(format('t.%I', c.name), c.typ, (o - 1)::integer, false), ' OPERATOR(pg_catalog.#) ' ORDER BY o),
               string_agg(syncguard._reconcile_hash(format('t.%I', c.name), c.typ, (o - 1)::integer, true), ' OPERATOR(pg_catalog.#) ' ORDER BY o)
          INTO rowhash, rowhash_exact
          FROM syncguard._reconcile_columns(local, remote, key_columns, columns) WITH ORDINALITY AS c(name, typ, is_key, o);
    ELSE
        rowhash_exact := format('syncguard._reconcile_row_hash(%s)', hash_args);
    END IF;
    -- Parts of the query finding the keys of differing rows (see below),
    -- each with an item per key column.
    SELECT string_agg(format('pg_catalog.array_agg(d.k%s)::pg_catalog.text', i), ', ' ORDER BY i),
           string_agg(format('pg_catalog.max(a.k%1$s) FILTER (WHERE NOT a.side) AS l%1$s,'
                             ' pg_catalog.max(a.k%1$s) FILTER (WHERE a.side) AS r%1$s', i), ', ' ORDER BY i),
           string_agg(format('pg_catalog.array_agg(%s) AS k%s', kcols[i], i), ', ' ORDER BY i),
           string_agg(format('pg_catalog.array_agg(t.k%s)', i), ', ' ORDER BY i),
           string_agg(format('%s AS k%s', kcols[i], i), ', ' ORDER BY i),
           string_agg(format('COALESCE(l.k%1$s, r.k%1$s) AS k%1$s', i), ', ' ORDER BY i),
           string_agg(format('pg_catalog.unnest(p.l%s)', i), ', ' ORDER BY i),
           string_agg(format('pg_catalog.unnest(p.r%s)', i), ', ' ORDER BY i),
           string_agg(format('k%s', i), ', ' ORDER BY i),
           string_agg(format('l.k%1$s OPERATOR(pg_catalog.=) r.k%1$s', i), ' AND ' ORDER BY i)
      INTO found_keys, segment_keys, remote_key_arrays, local_key_arrays, local_keys,
           either_key, local_unnested, remote_unnested, key_names, same_key
      FROM generate_subscripts(kcols, 1) AS i;
    -- The planner's row count is enough to size the first pass's segments.
    SELECT CASE WHEN c.reltuples > 0 THEN c.reltuples END INTO pending_rows FROM pg_class c WHERE c.oid = local;
    IF pending_rows IS NULL THEN
        EXECUTE format('SELECT count(*) FROM %s', local) INTO pending_rows;
    END IF;

    LOOP
        level := level + 1;
        step := greatest(ceil(threshold / 2.0), ceil(pending_rows / segments));
        seg_expr := NULL;
        IF level = 1 AND cardinality(kcols) = 1 AND ktypes[1] IN ('int2'::regtype, 'int4'::regtype, 'int8'::regtype) THEN
            -- An integer key: the first pass cuts its range from min to max
            -- into equal widths, which needs no pass over the keys and
            -- numbers a row's segment by arithmetic (the numbering of
            -- width_bucket over those bounds). Where the keys are not spread
            -- evenly, a differing segment over threshold is cut exactly in
            -- the next pass.
            EXECUTE format('SELECT min(%1$s)::numeric, max(%1$s)::numeric FROM %2$s AS t', kcols[1], local)
              INTO kmin, kmax;
            width := ceil((kmax - kmin + 1) / greatest(1, ceil(pending_rows / step)));
            nsegs := ceil((kmax - kmin + 1) / width);
            -- (the last bound must fit the key's type)
            kmax := kmin + nsegs * width;
            IF kmax <= ('{"smallint": 32767, "integer": 2147483647, "bigint": 9223372036854775807}'::jsonb ->> ktypes[1]::text)::numeric THEN
                bounds := (SELECT jsonb_agg(jsonb_build_array((kmin + i * width)::text) ORDER BY i)
                             FROM generate_series(0, nsegs::integer) AS i);
                seg_expr := format('CASE WHEN %1$s < %2$L::%5$s THEN 0 WHEN %1$s >= %3$L::%5$s THEN %4$s'
                                   ' ELSE (%1$s - %2$L::%5$s) / %6$L::%5$s + 1 END',
                                   kcols[1], kmin, kmax, nsegs + 1, ktypes[1], width);
            END IF;
        END IF;
        IF seg_expr IS NULL THEN
            -- Local, keys only: every step-th key (in key order, within each
            -- pending segment) starts a new segment. The bounds: the old ones
            -- and these, in key order.
            EXECUTE format($q$
                SELECT coalesce(jsonb_agg(u.b ORDER BY u.ps, u.rn), '[]')
                  FROM (SELECT e.o::integer AS ps, 0::bigint AS rn, e.b
                          FROM jsonb_array_elements($1) WITH ORDINALITY AS e(b, o)
                        UNION ALL
                        SELECT t.ps, t.rn, %1$s
                          FROM (SELECT %2$s AS ps, %3$s, row_number() OVER (PARTITION BY %2$s ORDER BY %4$s) AS rn
                                  FROM %5$s AS t WHERE %6$s) AS t
                         WHERE t.rn > 1 AND (t.rn - 1) %% %7$s = 0) AS u$q$,
                key_json, syncguard._reconcile_segment(kcols, ktypes, bounds),
                array_to_string(kcols, ', '), korder, local, cond, step)
              INTO bounds
              USING bounds;
            IF cardinality(kcols) > 1 THEN
                -- A cut in a first-column value other than the previous
                -- bound's moves to that value's start (only its first
                -- column): a first column that changes at every cut then
                -- needs no comparison of the other columns at all.
                SELECT coalesce(jsonb_agg(CASE WHEN x.prev IS DISTINCT FROM x.b ->> 0 THEN jsonb_build_array(x.b -> 0)
                                               ELSE x.b END ORDER BY x.o), '[]')
                  INTO bounds
                  FROM (SELECT e.b, e.o, lag(e.b ->> 0) OVER (ORDER BY e.o) AS prev
                          FROM jsonb_array_elements(bounds) WITH ORDINALITY AS e(b, o)) AS x;
            END IF;
            seg_expr := syncguard._reconcile_segment(kcols, ktypes, bounds);
        END IF;
        -- Both sides' count and hash sum per segment (rows: side, s, n, h;
        -- side true for ours), the remote's computed by the remote server
        -- (one row per segment, or one row of them all, comes back). One
        -- statement: with the foreign server's async_capable option the
        -- two sides run at the same time. (The OFFSET 0 keeps the UNION ALL
        -- a set operation of its own: pulled up into the outer query, each
        -- side would sit under a Subquery Scan, and postgres_fdw runs a
        -- foreign scan asynchronously only directly under the Append.)
        IF hash_args IS NULL THEN
            sums_query := format(
                'SELECT false AS side, %1$s AS s, pg_catalog.count(*) AS n, pg_catalog.sum(%2$s) AS h FROM %4$s AS t WHERE %5$s GROUP BY 2'
                ' UNION ALL'
                ' SELECT true, %1$s, pg_catalog.count(*), pg_catalog.sum(%2$s) FROM %3$s AS t WHERE %5$s GROUP BY 2'
                ' OFFSET 0',
                seg_expr, rowhash, local, remote, cond);
        ELSE
            -- syncguard's aggregate: {segment, count, sum, …} in one row a side.
            sums_query := format(
                'SELECT u.side, u.a[i] AS s, u.a[i OPERATOR(pg_catalog.+) 1] AS n, u.a[i OPERATOR(pg_catalog.+) 2] AS h'
                '  FROM (SELECT false AS side, syncguard._reconcile_checksums(%1$s, %2$s) AS a FROM %4$s AS t WHERE %5$s'
                '        UNION ALL'
                '        SELECT true, syncguard._reconcile_checksums(%1$s, %2$s) FROM %3$s AS t WHERE %5$s'
                '        OFFSET 0) AS u'
                ' CROSS JOIN LATERAL pg_catalog.generate_series(1, pg_catalog.cardinality(u.a), 3) AS i'
                ' OFFSET 0',  -- (projected here: a row above must not carry the arrays)
                seg_expr, hash_args, local, remote, cond);
        END IF;
        -- Differing segments: small ones (of at most threshold rows on both
        -- sides) have the keys of their differing rows found by the rows'
        -- hashes; ones the local keys cannot cut further are compared row
        -- by row whole; the others go to the next pass.
        EXECUTE format(
            'SELECT coalesce(pg_catalog.array_agg(d.s) FILTER (WHERE d.small), ''{}''),'
            '       coalesce(pg_catalog.array_agg(d.s) FILTER (WHERE NOT d.small AND d.whole), ''{}''),'
            '       coalesce(pg_catalog.array_agg(d.s) FILTER (WHERE NOT d.small AND NOT d.whole), ''{}''),'
            '       coalesce(pg_catalog.sum(d.nl) FILTER (WHERE NOT d.small AND NOT d.whole), 0)'
            '  FROM (SELECT c.s, c.nl, GREATEST(c.nl, c.nr) OPERATOR(pg_catalog.<=) $1 AS small,'
            '               c.nl OPERATOR(pg_catalog.<) 2 OR $2 AS whole'
            '          FROM (SELECT x.s::pg_catalog.int4 AS s,'
            '                       coalesce(pg_catalog.max(x.n) FILTER (WHERE x.side), 0) AS nl,'
            '                       coalesce(pg_catalog.max(x.n) FILTER (WHERE NOT x.side), 0) AS nr'
            '                  FROM (%s) AS x'
            '                 GROUP BY x.s'
            '                HAVING pg_catalog.max(x.n) FILTER (WHERE x.side) IS DISTINCT FROM pg_catalog.max(x.n) FILTER (WHERE NOT x.side)'
            '                    OR pg_catalog.max(x.h) FILTER (WHERE x.side) IS DISTINCT FROM pg_catalog.max(x.h) FILTER (WHERE NOT x.side)) AS c) AS d',
            sums_query)
          INTO small, leaves, pending, pending_rows
          USING threshold, level >= 40;
        rows_cond := NULL;
        IF cardinality(small) > 0 THEN
            -- The keys (an array per key column, as text) of the rows of the
            -- small segments whose hash differs or which one side lacks:
            -- each side's keys and exact row hashes as arrays, one row per
            -- segment, the remote's computed by the remote server (few rows,
            -- and narrow, cross the network; with async_capable the two
            -- sides run at the same time, as for the checksums), then the
            -- two sides' rows of each segment joined by key. Only those rows
            -- are fetched whole.
            small_cond := syncguard._reconcile_where(kcols, ktypes, bounds, small);
            EXECUTE format(
                'SELECT pg_catalog.count(*), ARRAY[%1$s]'
                '  FROM (SELECT a.s, %2$s, pg_catalog.max(a.h) FILTER (WHERE NOT a.side) AS lh,'
                '               pg_catalog.max(a.h) FILTER (WHERE a.side) AS rh'
                '          FROM (SELECT true AS side, %11$s AS s, %3$s, pg_catalog.array_agg(%12$s) AS h'
                '                  FROM %13$s AS t WHERE %15$s GROUP BY 2'
                '                UNION ALL'
                '                SELECT false, t.s, %4$s, pg_catalog.array_agg(t.h)'
                '                  FROM (SELECT %11$s AS s, %5$s, %12$s AS h FROM %14$s AS t WHERE %15$s OFFSET 0) AS t GROUP BY 2'
                '                OFFSET 0) AS a'
                '         GROUP BY a.s) AS p'
                ' CROSS JOIN LATERAL (SELECT %6$s FROM ROWS FROM (%7$s, pg_catalog.unnest(p.lh)) AS l(%8$s, h)'
                '                       FULL JOIN ROWS FROM (%9$s, pg_catalog.unnest(p.rh)) AS r(%8$s, h) ON %10$s'
                '                      WHERE l.h IS DISTINCT FROM r.h) AS d',
                found_keys, segment_keys, remote_key_arrays, local_key_arrays, local_keys,
                either_key, local_unnested, key_names, remote_unnested, same_key,
                seg_expr, rowhash_exact, remote, local, small_cond)
              INTO nkeys, keyvals;
            IF nkeys > 100000 THEN
                -- (a condition as long as the rows: their segments instead)
                rows_cond := small_cond;
            ELSIF nkeys > 0 THEN
                -- Those keys: each key column among its values (a composite
                -- key within those segments too).
                SELECT concat_ws(' AND ', CASE WHEN cardinality(kcols) > 1 THEN format('(%s)', small_cond) END,
                                 string_agg(format('%s OPERATOR(pg_catalog.=) ANY (%L::%s[])', kcols[i], keyvals[i], ktypes[i]),
                                            ' AND ' ORDER BY i))
                  INTO rows_cond
                  FROM generate_subscripts(kcols, 1) AS i;
            END IF;
        END IF;
        IF cardinality(leaves) > 0 THEN
            rows_cond := concat_ws(' OR ', '(' || rows_cond || ')',
                                   format('(%s)', syncguard._reconcile_where(kcols, ktypes, bounds, leaves)));
        END IF;
        IF rows_cond IS NOT NULL THEN
            RETURN QUERY EXECUTE syncguard._reconcile_rows_query(local, remote, key_columns, columns, rows_cond);
        END IF;
        EXIT WHEN cardinality(pending) = 0;
        cond := syncguard._reconcile_where(kcols, ktypes, bounds, pending);
    END LOOP;
END
$$;

-- Repair: merges the remote's values into the local rows, one merge_upsert
-- per row (a protected table's guards hold: a last_write_wins timestamp or
-- a version refuses an older remote row), at most batch_size rows per call,
-- each call one transaction: call again until no row comes back inserted or
-- updated. A row only local is reported (skipped), never deleted.
--   action  inserted, updated, unchanged (the table's policy or a guard kept
--           the local row as it was), refused (SG003/SG004: the guard's
--           error is in detail), skipped (missing_remote)
--   detail  the differences (as reconcile's diff) or the inserted row, or
--           the guard's error
-- The default policy lets a remote NULL (also one inside a patch) replace or
-- delete the local value, so the row becomes the remote one; NULL: the
-- table's own merge policy (a NULL never overwrites).
CREATE FUNCTION syncguard.reconcile_apply(
    local regclass,
    remote regclass,
    key_columns text[] DEFAULT NULL,
    columns text[] DEFAULT NULL,
    segments integer DEFAULT 10000,
    threshold integer DEFAULT 200,
    batch_size integer DEFAULT 1000,
    policy jsonb DEFAULT '{"nulls": "delete"}'
) RETURNS TABLE(key jsonb, kind text, action text, detail jsonb)
LANGUAGE plpgsql VOLATILE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    d record;
    data jsonb;
    before jsonb;
    after jsonb;
    by_key text;         -- WHERE clause: the row whose key is $1
    find_local text;
    find_remote text;
    jsonb_cols text[];
    written integer := 0;
BEGIN
    IF batch_size IS NULL OR batch_size < 1 THEN
        RAISE EXCEPTION USING ERRCODE = '22023',
            MESSAGE = format('reconcile_apply: batch_size must be at least 1, got %s', coalesce(batch_size::text, 'NULL')),
            HINT = 'Leave it out to take the default (1000 rows per call).';
    END IF;
    SELECT string_agg(format('t.%I OPERATOR(pg_catalog.=) ($1 OPERATOR(pg_catalog.->>) %L)::%s', c.name, c.name, c.typ), ' AND ')
               FILTER (WHERE c.is_key),
           format('pg_catalog.jsonb_build_object(%s)',
                  string_agg(format('%L, t.%I', c.name, c.name), ', ') FILTER (WHERE NOT c.is_key)),
           coalesce(array_agg(c.name) FILTER (WHERE c.typ IN ('jsonb'::regtype, 'json'::regtype)), '{}')
      INTO by_key, find_remote, jsonb_cols
      FROM syncguard._reconcile_columns(local, remote, key_columns, columns) AS c;
    find_local := format('SELECT pg_catalog.to_jsonb(t) FROM %s AS t WHERE %s', local, by_key);
    -- Every compared column: an INSERT … ON CONFLICT needs the NOT NULL ones
    -- even when the row exists.
    find_remote := format('SELECT %s FROM %s AS t WHERE %s', find_remote, remote, by_key);
    FOR d IN SELECT r.key, r.kind, r.diff
               FROM syncguard.reconcile(local, remote, key_columns, columns, segments, threshold) AS r LOOP
        key := d.key;
        kind := d.kind;
        IF d.kind = 'missing_remote' THEN
            action := 'skipped';
            detail := NULL;
            RETURN NEXT;
            CONTINUE;
        END IF;
        CONTINUE WHEN written >= batch_size;
        IF d.kind = 'missing_local' THEN
            data := d.diff;
            before := NULL;
        ELSE
            -- The remote row, a differing jsonb column as its patch (a
            -- tombstone where the remote value is NULL): merged, the
            -- patch gives the remote document.
            EXECUTE find_remote INTO data USING d.key;
            EXECUTE find_local INTO before USING d.key;
            data := data || coalesce((
                SELECT jsonb_object_agg(f.key, CASE WHEN f.value ? 'patch' THEN f.value -> 'patch' ELSE syncguard.tombstone() END)
                  FROM jsonb_each(d.diff) AS f
                 WHERE f.value ? 'patch' OR (f.key = ANY (jsonb_cols) AND jsonb_typeof(f.value -> 'remote') = 'null')), '{}');
        END IF;
        BEGIN
            after := syncguard.merge_upsert(local, d.key, data, policy);
        EXCEPTION WHEN SQLSTATE 'SG003' OR SQLSTATE 'SG004' THEN
            action := 'refused';
            detail := jsonb_build_object('sqlstate', SQLSTATE, 'message', SQLERRM);
            RETURN NEXT;
            CONTINUE;
        END;
        written := written + 1;
        action := CASE WHEN d.kind = 'missing_local' THEN 'inserted'
                       WHEN after = before THEN 'unchanged' ELSE 'updated' END;
        detail := CASE WHEN d.kind = 'missing_local' THEN data ELSE d.diff END;
        RETURN NEXT;
    END LOOP;
END
$$;

-- Invariant template: a reconciliation on a schedule. Each differing key is
-- a violation (entity: the key as JSON text, e.g. {"id": 42}), so a drift
-- opens an episode and alerts once; the view shows kind and diff too.
-- The comparison reads both tables' checksums: give it a long schedule.
CREATE FUNCTION syncguard.invariant_reconcile(
    name text,
    local regclass,
    remote regclass,
    key_columns text[] DEFAULT NULL,
    columns text[] DEFAULT NULL,
    segments integer DEFAULT 64,
    threshold integer DEFAULT 1000,
    grace interval DEFAULT '0',
    severity text DEFAULT 'error',
    remediation text DEFAULT NULL,
    schedule interval DEFAULT '1 hour',
    statement_timeout interval DEFAULT '10 minutes'
) RETURNS regclass
LANGUAGE plpgsql VOLATILE
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    -- The columns' errors now rather than at the first check.
    PERFORM FROM syncguard._reconcile_columns(local, remote, key_columns, columns);
    IF segments IS NULL OR segments NOT BETWEEN 2 AND 10000 OR threshold IS NULL OR threshold < 1 THEN
        RAISE EXCEPTION USING ERRCODE = '22023',
            MESSAGE = format('invariant %L: segments must be 2 … 10000 and threshold at least 1, got %s and %s',
                             name, coalesce(segments::text, 'NULL'), coalesce(threshold::text, 'NULL')),
            HINT = 'Leave them out to take the defaults (64 segments, 1000 rows).';
    END IF;
    RETURN syncguard.define_invariant(
        name,
        format('SELECT r.key::text AS entity, ''-infinity''::timestamptz AS since, r.kind, r.diff '
               'FROM syncguard.reconcile(%L::regclass, %L::regclass, %L::text[], %L::text[], %s, %s) AS r',
               local, remote, key_columns, columns, segments, threshold),
        grace => grace, severity => severity,
        remediation => coalesce(remediation, format(
            'See the differences with SELECT * FROM syncguard.reconcile(%L, %L); merge the remote values into %s with '
            'syncguard.reconcile_apply(%1$L, %2$L) (rows missing in %2$s are reported, delete them yourself).',
            local, remote, local)),
        description => format('rows of %s that differ from %s', local, remote),
        schedule => schedule, statement_timeout => statement_timeout, search_path => 'pg_catalog, pg_temp');
END
$$;

GRANT EXECUTE ON FUNCTION
    syncguard._reconcile_columns(regclass, regclass, text[], text[]),
    syncguard._reconcile_hash(text, regtype, integer, boolean),
    syncguard._reconcile_row_hash("any"),
    syncguard._reconcile_row_hash_takes(regtype),
    syncguard._reconcile_checksums(integer, "any"),
    syncguard._reconcile_row_hash_args(regclass, regclass, text[], text[]),
    syncguard._reconcile_compare(text[], regtype[], jsonb, text),
    syncguard._reconcile_bucket(text, regtype, jsonb),
    syncguard._reconcile_segment(text[], regtype[], jsonb),
    syncguard._reconcile_ranges(text[], regtype[], jsonb),
    syncguard._reconcile_where(text[], regtype[], jsonb, integer[]),
    syncguard._reconcile_rows_query(regclass, regclass, text[], text[], text),
    syncguard.reconcile(regclass, regclass, text[], text[], integer, integer),
    syncguard.reconcile_apply(regclass, regclass, text[], text[], integer, integer, integer, jsonb),
    syncguard.invariant_reconcile(text, regclass, regclass, text[], text[], integer, integer, interval, text, text, interval, interval)
    TO PUBLIC;

COMMENT ON FUNCTION syncguard._reconcile_columns(regclass, regclass, text[], text[]) IS
    'internal: the columns reconcile compares, checked on both sides';
COMMENT ON FUNCTION syncguard._reconcile_hash(text, regtype, integer, boolean) IS
    'internal: the SQL of a column''s 64-bit hash, the same on every server';
COMMENT ON FUNCTION syncguard._reconcile_row_hash("any") IS
    'internal: the 64-bit hash of a row''s values, computed by syncguard on each server';
COMMENT ON AGGREGATE syncguard._reconcile_checksums(integer, VARIADIC "any") IS
    'internal: each segment''s count of rows and sum of row hashes, computed by syncguard on each server';
COMMENT ON FUNCTION syncguard._reconcile_checksums_step(internal, integer, "any") IS
    'internal: the step of _reconcile_checksums';
COMMENT ON FUNCTION syncguard._reconcile_checksums_final(internal) IS
    'internal: the result of _reconcile_checksums';
COMMENT ON FUNCTION syncguard._reconcile_row_hash_takes(regtype) IS
    'internal: whether _reconcile_row_hash takes values of a type';
COMMENT ON FUNCTION syncguard._reconcile_row_hash_args(regclass, regclass, text[], text[]) IS
    'internal: the arguments of _reconcile_row_hash when syncguard hashes both sides, else NULL';
COMMENT ON FUNCTION syncguard._reconcile_compare(text[], regtype[], jsonb, text) IS
    'internal: the SQL comparing a key with a bound, column by column';
COMMENT ON FUNCTION syncguard._reconcile_bucket(text, regtype, jsonb) IS
    'internal: the SQL counting the sorted values at or below a column''s';
COMMENT ON FUNCTION syncguard._reconcile_segment(text[], regtype[], jsonb) IS
    'internal: the SQL of a row''s segment number among sorted key bounds';
COMMENT ON FUNCTION syncguard._reconcile_ranges(text[], regtype[], jsonb) IS
    'internal: the SQL selecting the rows of a list of key ranges';
COMMENT ON FUNCTION syncguard._reconcile_where(text[], regtype[], jsonb, integer[]) IS
    'internal: the SQL selecting the rows of some segments';
COMMENT ON FUNCTION syncguard._reconcile_rows_query(regclass, regclass, text[], text[], text) IS
    'internal: the query comparing the rows of key ranges field by field';
COMMENT ON FUNCTION syncguard.reconcile(regclass, regclass, text[], text[], integer, integer) IS
    'every row and field in which a table differs from another (e.g. a postgres_fdw foreign table), by checksums of key ranges computed on each side';
COMMENT ON FUNCTION syncguard.reconcile_apply(regclass, regclass, text[], text[], integer, integer, integer, jsonb) IS
    'merge the remote values of the rows reconcile reports into the local table through merge_upsert, a batch per call';
COMMENT ON FUNCTION syncguard.invariant_reconcile(text, regclass, regclass, text[], text[], integer, integer, interval, text, text, interval, interval) IS
    'define an invariant: rows of a table that differ from another table (reconcile on a schedule)';
