-- The guards of a protected table hold on every write path: a merge_upsert
-- call's own policy cannot switch them off, a NULL never erases them, and an
-- ignored stale write reports the row as written (with its stored values),
-- as an ORM that checks row counts expects.

CREATE FUNCTION pg_temp.err(q text) RETURNS text LANGUAGE plpgsql AS $$
DECLARE st text; msg text; hint text;
BEGIN
    EXECUTE q;
    RETURN 'no error';
EXCEPTION WHEN others THEN
    GET STACKED DIAGNOSTICS st = RETURNED_SQLSTATE, msg = MESSAGE_TEXT, hint = PG_EXCEPTION_HINT;
    RETURN st || ': ' || msg || coalesce(' | hint: ' || nullif(hint, ''), '');
END $$;

-- 1. A call's policy chooses how values merge; the table's guards stay.
CREATE TABLE g_lww (id int PRIMARY KEY, ts timestamptz, data jsonb);
INSERT INTO g_lww VALUES (1, '2026-01-02', '{"a": 1, "tags": [1]}');
SELECT syncguard.protect('g_lww', NULL, '{"last_write_wins": "ts"}');
-- a stale write with a call policy, even '{}': ignored, the stored row returned
SELECT syncguard.merge_upsert('g_lww', '{"id": 1}', '{"ts": "2026-01-01", "data": {"a": 2}}', '{}') AS stale_empty_policy;
SELECT syncguard.merge_upsert('g_lww', '{"id": 1}', '{"ts": "2026-01-01", "data": {"a": 2}}', '{"arrays": "union"}') AS stale_union;
SELECT syncguard.merge_upsert('g_lww', '{"id": 1}', '{"ts": null, "data": null}', '{"nulls": "overwrite"}') AS nulls_overwrite;
-- a fresh write merges under the call's merge rules
SELECT syncguard.merge_upsert('g_lww', '{"id": 1}', '{"ts": "2026-01-03", "data": {"tags": [2]}}', '{"arrays": "union"}') AS fresh_union;
-- a call that contradicts a guard is refused
SELECT pg_temp.err($$SELECT syncguard.merge_upsert('g_lww', '{"id": 1}', '{"ts": "2026-01-04"}', '{"last_write_wins": "data"}')$$);
SELECT pg_temp.err($$SELECT syncguard.merge_upsert('g_lww', '{"id": 1}', '{"ts": "2026-01-04"}', '{"last_write_wins": "ts", "max_clock_skew": "100 years"}')$$);
SELECT * FROM g_lww;

CREATE TABLE g_ver (id int PRIMARY KEY, v int, data jsonb);
INSERT INTO g_ver VALUES (1, 5, '{"a": 1}');
SELECT syncguard.protect('g_ver', NULL, '{"version": "v"}');
SELECT pg_temp.err($$SELECT syncguard.merge_upsert('g_ver', '{"id": 1}', '{"v": 1, "data": {"a": 9}}', '{}')$$);
SELECT pg_temp.err($$SELECT syncguard.merge_upsert('g_ver', '{"id": 1}', '{"v": 6, "data": {"a": 9}}', '{"version": "id"}')$$);
SELECT syncguard.merge_upsert('g_ver', '{"id": 1}', '{"v": 6, "data": {"b": 2}}', '{"nulls": "overwrite"}') AS next_version;
SELECT * FROM g_ver;

-- 2. A NULL never erases a guard column, whatever the table's nulls rule.
CREATE TABLE g_nulls (id int PRIMARY KEY, ts timestamptz, note text);
INSERT INTO g_nulls VALUES (1, '2026-01-02', 'kept');
SELECT syncguard.protect('g_nulls', NULL, '{"last_write_wins": "ts", "nulls": "overwrite"}');
UPDATE g_nulls SET ts = NULL, note = NULL WHERE id = 1;
SELECT * FROM g_nulls;

-- 3. An ignored stale write: by default the row counts as written and
-- RETURNING shows what is stored; counted in conflict_stats.
CREATE TABLE g_stale (id int PRIMARY KEY, ts timestamptz, name text);
INSERT INTO g_stale VALUES (1, '2026-01-02', 'stored');
SELECT syncguard.protect('g_stale', NULL, '{"last_write_wins": "ts"}');
WITH u AS (UPDATE g_stale SET ts = '2026-01-01', name = 'stale' WHERE id = 1 RETURNING *)
SELECT count(*) AS rows_reported, min(name) AS returned_name, min(ts) AS returned_ts FROM u;
WITH u AS (INSERT INTO g_stale VALUES (1, '2026-01-01', 'stale upsert')
           ON CONFLICT (id) DO UPDATE SET ts = excluded.ts, name = excluded.name RETURNING *)
SELECT count(*) AS rows_reported, min(name) AS returned_name FROM u;
SELECT * FROM g_stale;
SELECT stale_ignored FROM syncguard.conflict_stats WHERE table_name = 'public.g_stale';
-- "stale": "skip" keeps the old report: no row
SELECT syncguard.protect('g_stale', NULL, '{"last_write_wins": "ts", "stale": "skip"}');
WITH u AS (UPDATE g_stale SET ts = '2026-01-01', name = 'stale' WHERE id = 1 RETURNING *)
SELECT count(*) AS rows_reported FROM u;
SELECT pg_temp.err($$SELECT syncguard.protect('g_stale', NULL, '{"stale": "skip"}')$$);
SELECT pg_temp.err($$SELECT syncguard.protect('g_stale', NULL, '{"last_write_wins": "ts", "stale": "drop"}')$$);
SELECT stale_ignored FROM syncguard.conflict_stats WHERE table_name = 'public.g_stale';

DROP TABLE g_lww, g_ver, g_nulls, g_stale;
