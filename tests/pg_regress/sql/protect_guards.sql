-- The guards of a protected table hold on every write path: a merge_upsert
-- call's own policy cannot switch them off, a NULL never erases them, and an
-- ignored stale write reports the row as written (with its stored values),
-- as an ORM that checks row counts expects.

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
SELECT regress.err($$SELECT syncguard.merge_upsert('g_lww', '{"id": 1}', '{"ts": "2026-01-04"}', '{"last_write_wins": "data"}')$$);
SELECT regress.err($$SELECT syncguard.merge_upsert('g_lww', '{"id": 1}', '{"ts": "2026-01-04"}', '{"last_write_wins": "ts", "max_clock_skew": "100 years"}')$$);
SELECT * FROM g_lww;

CREATE TABLE g_ver (id int PRIMARY KEY, v int, data jsonb);
INSERT INTO g_ver VALUES (1, 5, '{"a": 1}');
SELECT syncguard.protect('g_ver', NULL, '{"version": "v"}');
SELECT regress.err($$SELECT syncguard.merge_upsert('g_ver', '{"id": 1}', '{"v": 1, "data": {"a": 9}}', '{}')$$);
SELECT regress.err($$SELECT syncguard.merge_upsert('g_ver', '{"id": 1}', '{"v": 6, "data": {"a": 9}}', '{"version": "id"}')$$);
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
-- a renamed table counts under its new name; a partition under its parent's
ALTER TABLE g_stale RENAME TO g_stale2;
UPDATE g_stale2 SET ts = '2026-01-01' WHERE id = 1;
SELECT table_name, stale_ignored FROM syncguard.conflict_stats WHERE table_name LIKE 'public.g_stale%' ORDER BY 1;
ALTER TABLE g_stale2 RENAME TO g_stale;
CREATE TABLE g_stale_part (id int, ts timestamptz) PARTITION BY RANGE (id);
CREATE TABLE g_stale_part_1 PARTITION OF g_stale_part FOR VALUES FROM (0) TO (10);
INSERT INTO g_stale_part VALUES (1, '2026-01-02');
SELECT syncguard.protect('g_stale_part', NULL, '{"last_write_wins": "ts"}');
UPDATE g_stale_part SET ts = '2026-01-01';
SELECT table_name, stale_ignored FROM syncguard.conflict_stats WHERE table_name LIKE 'public.g_stale_part%';
DROP TABLE g_stale_part;
-- "stale": "skip" keeps the old report: no row
SELECT syncguard.protect('g_stale', NULL, '{"last_write_wins": "ts", "stale": "skip"}');
WITH u AS (UPDATE g_stale SET ts = '2026-01-01', name = 'stale' WHERE id = 1 RETURNING *)
SELECT count(*) AS rows_reported FROM u;
SELECT regress.err($$SELECT syncguard.protect('g_stale', NULL, '{"stale": "skip"}')$$);
SELECT regress.err($$SELECT syncguard.protect('g_stale', NULL, '{"last_write_wins": "ts", "stale": "drop"}')$$);
SELECT stale_ignored FROM syncguard.conflict_stats WHERE table_name = 'public.g_stale';

-- 4. The freshness companion is the trigger's: a direct write is ignored;
-- a plain INSERT stamps it as a merge_upsert insert does.
CREATE TABLE g_fresh (id int PRIMARY KEY, data jsonb, seen jsonb);
SELECT syncguard.protect('g_fresh', NULL, '{"freshness": {"data": "seen"}}');
INSERT INTO g_fresh VALUES (1, '{"a": 1}', '{"a": "1999-01-01T00:00:00+00:00", "forged": "x"}');
SELECT syncguard.merge_upsert('g_fresh', '{"id": 2}', '{"data": {"a": 1}}') IS NOT NULL AS upserted;
SELECT id, (SELECT array_agg(k ORDER BY k) FROM jsonb_object_keys(seen) AS k) AS stamped_keys,
       (seen ->> 'a')::timestamptz > now() - interval '1 hour' AS stamped_now
  FROM g_fresh ORDER BY id;
UPDATE g_fresh SET seen = NULL WHERE id = 1;
UPDATE g_fresh SET seen = '{"a": "1999-01-01T00:00:00+00:00"}', data = data WHERE id = 1;
SELECT id, seen IS NOT NULL AS kept, (seen ->> 'a')::timestamptz > now() - interval '1 hour' AS not_forged FROM g_fresh WHERE id = 1;

-- 5. Inheritance children are protected with their parent; one created
-- later shows in protected_tables until protect runs again.
CREATE TABLE g_parent (id int PRIMARY KEY, data jsonb);
CREATE TABLE g_child (extra text) INHERITS (g_parent);
INSERT INTO g_child VALUES (1, '{"a": 1, "b": 2}', 'x');
SELECT syncguard.protect('g_parent');
UPDATE g_parent SET data = '{"a": 9}' WHERE id = 1;
SELECT * FROM g_child;
CREATE TABLE g_late () INHERITS (g_parent);
SELECT table_name, unprotected_children FROM syncguard.protected_tables
 WHERE table_name IN ('g_parent'::regclass, 'g_child'::regclass) ORDER BY 1::text;
SELECT syncguard.protect('g_parent');
SELECT table_name, unprotected_children FROM syncguard.protected_tables
 WHERE table_name::text IN ('g_parent', 'g_child', 'g_late') ORDER BY 1::text;
SELECT syncguard.unprotect('g_parent') AS unprotected;
SELECT count(*) AS left_protected FROM syncguard.protected_tables WHERE table_name::text IN ('g_parent', 'g_child', 'g_late');

-- 6. Partitions are protected through their parent: what is protected
-- through what, and what to do, instead of a DDL error.
CREATE TABLE g_part (id int, data jsonb) PARTITION BY RANGE (id);
CREATE TABLE g_part_1 PARTITION OF g_part FOR VALUES FROM (0) TO (10);
SELECT syncguard.protect('g_part');
SELECT regress.err($$SELECT syncguard.protect('g_part_1')$$);
SELECT regress.err($$SELECT syncguard.unprotect('g_part_1')$$);
SELECT syncguard.unprotect('g_part');
SELECT syncguard.protect('g_part_1');
SELECT regress.err($$SELECT syncguard.protect('g_part')$$);
SELECT syncguard.unprotect('g_part_1');

-- 7. Configurations that mean nothing are refused; a protection whose
-- column was renamed says so; the trigger function is no function to call.
CREATE TABLE g_conf (id int PRIMARY KEY, n int, total int GENERATED ALWAYS AS (n * 2) STORED, data jsonb, ts timestamptz);
SELECT regress.err($$SELECT syncguard.protect('g_conf', '{}')$$);
SELECT regress.err($$SELECT syncguard.protect('g_conf', '{n,n}')$$);
SELECT regress.err($$SELECT syncguard.protect('g_conf', '{total}')$$);
SELECT regress.err($$SELECT syncguard.protect('g_conf', NULL, '{"columns": {"n": {"arrays": "union"}}}')$$);
SELECT regress.err($$SELECT syncguard.protect('g_conf', NULL, '{"last_write_wins": "ts", "max_clock_skew": "-60 seconds"}')$$);
SELECT count(*) AS protected FROM syncguard.protected_tables WHERE table_name = 'g_conf'::regclass;
INSERT INTO g_conf (id, n, data, ts) VALUES (1, 1, '{}', now());
SELECT syncguard.protect('g_conf', '{n,data}');
ALTER TABLE g_conf RENAME COLUMN n TO m;
SELECT regress.err($$UPDATE g_conf SET data = '{"x": 1}' WHERE id = 1$$);
SELECT syncguard.protect('g_conf', '{m,data}');
UPDATE g_conf SET data = '{"x": 1}', m = NULL WHERE id = 1;
SELECT id, m, data FROM g_conf;
SELECT regress.err($$SELECT syncguard._protect_trigger()$$);

-- 8. A version column set to NULL: the message says so.
SELECT regress.err($$UPDATE g_ver SET v = NULL WHERE id = 1$$);

-- 9. json columns merge as jsonb does (through jsonb: key order, duplicate
-- keys and whitespace are not kept), by protect and merge_upsert alike.
CREATE TABLE g_json (id int PRIMARY KEY, doc json);
INSERT INTO g_json VALUES (1, '{"a": 1, "b": {"c": 2}}'), (2, '{"a": 1, "b": {"c": 2}}');
SELECT syncguard.protect('g_json');
UPDATE g_json SET doc = '{"b": {"d": 3}}' WHERE id = 1;
SELECT syncguard.unprotect('g_json');
SELECT syncguard.merge_upsert('g_json', '{"id": 2}', '{"doc": {"b": {"d": 3}}}') -> 'doc' AS merged;
SELECT id, doc::text FROM g_json ORDER BY id;

-- 10. Composite columns keep the stored fields a write leaves NULL (a
-- ROW(NULL, NULL) too); merge_upsert takes JSON objects for them, and
-- arrays of objects for arrays of them.
CREATE TYPE g_addr AS (street text, city text, zip text);
CREATE TABLE g_comp (id int PRIMARY KEY, addr g_addr, past g_addr[]);
INSERT INTO g_comp VALUES (1, ROW('Main St', 'Springfield', '12345'), NULL),
                          (2, ROW('Main St', 'Springfield', '12345'), NULL);
SELECT syncguard.protect('g_comp');
UPDATE g_comp SET addr = ROW(NULL, NULL, NULL) WHERE id = 1;
SELECT addr FROM g_comp WHERE id = 1;
UPDATE g_comp SET addr = ROW('Elm St', NULL, NULL) WHERE id = 1;
SELECT addr FROM g_comp WHERE id = 1;
SELECT syncguard.unprotect('g_comp');
SELECT syncguard.merge_upsert('g_comp', '{"id": 2}',
         '{"addr": {"city": "Shelbyville"}, "past": [{"street": "Old Rd", "city": "Ogdenville"}, null]}') AS merged;
SELECT syncguard.merge_upsert('g_comp', '{"id": 3}', '{"addr": {"street": "New \"quoted\" Rd", "zip": "9"}}') -> 'addr' AS inserted;
SELECT id, addr, past FROM g_comp ORDER BY id;
-- an object for a text field is its JSON text, as jsonb_populate_record has it
SELECT syncguard.merge_upsert('g_comp', '{"id": 4}', '{"addr": {"zip": {"nested": true}}}') #>> '{addr,zip}' AS zip;

DROP TABLE g_lww, g_ver, g_nulls, g_stale, g_fresh, g_parent CASCADE;
DROP TABLE g_json, g_comp;
DROP TYPE g_addr;
DROP TABLE g_part, g_conf;
