-- reconcile's own row hash and checksum aggregate (src/reconcile_hash.rs),
-- which it uses where syncguard hashes both sides: here, two tables of one
-- server.
\set VERBOSITY terse

-- Values equal to their type's equality hash alike, whatever their form.
SELECT syncguard._reconcile_row_hash(1.0::numeric) = syncguard._reconcile_row_hash(1.000::numeric) AS numeric_scale,
       syncguard._reconcile_row_hash('-0.0'::numeric) = syncguard._reconcile_row_hash(0::numeric) AS numeric_zero,
       syncguard._reconcile_row_hash('-0'::float8) = syncguard._reconcile_row_hash('0'::float8) AS float_zero,
       syncguard._reconcile_row_hash('NaN'::float4) = syncguard._reconcile_row_hash('NaN'::float4) AS float_nan,
       syncguard._reconcile_row_hash('ab  '::char(6)) = syncguard._reconcile_row_hash('ab'::char(2)) AS bpchar_spaces,
       syncguard._reconcile_row_hash('{"b": [1.50, {"x": null}], "a": "ü"}'::jsonb)
         = syncguard._reconcile_row_hash('{"a": "ü", "b": [1.5, {"x": null}]}'::jsonb) AS jsonb_forms,
       syncguard._reconcile_row_hash('2026-01-01 12:00+02'::timestamptz)
         = syncguard._reconcile_row_hash('2026-01-01 10:00+00'::timestamptz) AS timestamptz_zones;

-- Values that differ hash apart, a jsonb document's structure and signs included
-- (which jsonb's own hash leaves out).
SELECT count(DISTINCT h) AS distinct_hashes, count(*) AS values
  FROM (VALUES (syncguard._reconcile_row_hash('{"a": {"b": 1}, "c": 2}'::jsonb)),
               (syncguard._reconcile_row_hash('{"a": {"b": 1, "c": 2}}'::jsonb)),
               (syncguard._reconcile_row_hash('[[1], 2]'::jsonb)),
               (syncguard._reconcile_row_hash('[1, [2]]'::jsonb)),
               (syncguard._reconcile_row_hash('[1]'::jsonb)),
               (syncguard._reconcile_row_hash('1'::jsonb)),
               (syncguard._reconcile_row_hash('-1'::jsonb)),
               (syncguard._reconcile_row_hash('"1"'::jsonb)),
               (syncguard._reconcile_row_hash('NaN'::numeric)),
               (syncguard._reconcile_row_hash('Infinity'::numeric)),
               (syncguard._reconcile_row_hash('-Infinity'::numeric)),
               (syncguard._reconcile_row_hash(NULL::int)),
               (syncguard._reconcile_row_hash(''::text)),
               (syncguard._reconcile_row_hash('a'::text, 'bc'::text)),
               (syncguard._reconcile_row_hash('ab'::text, 'c'::text)),
               (syncguard._reconcile_row_hash(1, 2)),
               (syncguard._reconcile_row_hash(2, 1))) AS v(h);

-- Every type reconcile passes it (_reconcile_row_hash_args), through a domain too.
CREATE DOMAIN positive_int AS int CHECK (VALUE > 0);
SELECT syncguard._reconcile_row_hash(1::int2, 2::int4, 3::int8, 4::positive_int, true, 1.5::float4, 2.5::float8,
                                     1.5::numeric, 't'::text, 'v'::varchar, '\x01'::bytea, '{"a":1}'::json,
                                     'c'::char, '{"a":1}'::jsonb, '8c3b4a1e-0f36-4f6f-9d7e-3c1f6a0c2b11'::uuid,
                                     '2026-01-01'::date, '2026-01-01 00:00'::timestamp, '2026-01-01 00:00+00'::timestamptz,
                                     '12:00'::time) IS NOT NULL AS hashed;

-- reconcile asks which types it takes: those above, not others.
SELECT t AS type, syncguard._reconcile_row_hash_takes(t) AS takes
  FROM unnest(ARRAY['int2', 'int4', 'int8', 'positive_int', 'bool', 'float4', 'float8', 'numeric', 'text',
                    'varchar', 'bytea', 'json', 'bpchar', 'jsonb', 'uuid', 'date', 'timestamp', 'timestamptz',
                    'time', 'interval', 'int4[]', 'timetz', 'name']::regtype[]) AS t
 UNION ALL
SELECT 4294967295::oid::regtype, syncguard._reconcile_row_hash_takes(4294967295::oid::regtype);

-- Anything else is refused; reconcile hashes such columns with built-in
-- functions. Segment numbers run from 0 to 2^24 - 1.
SELECT regress.err($$SELECT syncguard._reconcile_row_hash('1 day'::interval)$$);
SELECT regress.err($$SELECT syncguard._reconcile_checksums(0, x) FROM (VALUES ('1 day'::interval)) AS v(x)$$);
SELECT regress.err($$SELECT syncguard._reconcile_checksums(-1, x) FROM generate_series(1, 3) AS x$$);
SELECT regress.err($$SELECT syncguard._reconcile_checksums(NULL, x) FROM generate_series(1, 3) AS x$$);

-- Per segment: its number, its count of rows and the sum of their hashes.
SELECT syncguard._reconcile_checksums(x % 3, x)
       = ARRAY[0, 1, syncguard._reconcile_row_hash(3),
               1, 2, syncguard._reconcile_row_hash(1) + syncguard._reconcile_row_hash(4),
               2, 1, syncguard._reconcile_row_hash(2)]::bigint[] AS sums
  FROM generate_series(1, 4) AS x;
SELECT syncguard._reconcile_checksums(0, x) FROM generate_series(1, 0) AS x;

-- reconcile between two tables here uses them: values equal in another
-- form are no difference, and a jsonb document whose structure alone
-- differs is found on its own.
CREATE TABLE rh_ours (id int PRIMARY KEY, price numeric, doc jsonb, weight float8, period interval);
CREATE TABLE rh_theirs (id int PRIMARY KEY, price numeric, doc jsonb, weight float8, period interval);
INSERT INTO rh_ours SELECT g, g * 1.5, jsonb_build_object('a', jsonb_build_object('b', 1), 'c', 2), -0.0, '1 day'
  FROM generate_series(1, 5000) AS g;
INSERT INTO rh_theirs SELECT g, g * 1.50, jsonb_build_object('c', 2.0, 'a', jsonb_build_object('b', 1.00)), 0.0, '1 day'
  FROM generate_series(1, 5000) AS g;
SELECT syncguard._reconcile_row_hash_args('rh_ours', 'rh_theirs', NULL, NULL) AS hash_args;
SELECT * FROM syncguard.reconcile('rh_ours', 'rh_theirs');
UPDATE rh_theirs SET doc = '{"a": {"b": 1, "c": 2}}' WHERE id = 4321;
UPDATE rh_theirs SET period = '2 days' WHERE id = 17;
SELECT * FROM syncguard.reconcile('rh_ours', 'rh_theirs') ORDER BY key;
DROP TABLE rh_ours, rh_theirs;
DROP DOMAIN positive_int;
