-- Hostile names and a hostile search_path.
-- 1. Table, column, scope and key names with quotes, semicolons, dots, mixed
--    case, spaces, backslashes and unicode work with every function, and are
--    never executed as SQL (sec_canary would be dropped).
-- 2. Same-named functions and operators in a schema listed before pg_catalog
--    are never called: each records its call in sec_evil.calls.
SET client_min_messages = warning;
CREATE TABLE sec_canary (x int);
CREATE SCHEMA "Sec; Schema.""x""";
CREATE TABLE "Sec; Schema.""x"""."Tab.le ""q""; DROP TABLE sec_canary; --" (
    "Id; DROP TABLE sec_canary" int PRIMARY KEY,
    "Dä ta.x" jsonb,
    "it's; --" text,
    "back\'slash" text,
    "Ver" int
);
-- the regclass text and the qualified name the extension works from
SELECT c::regclass AS target
  FROM (SELECT '"Sec; Schema.""x"""."Tab.le ""q""; DROP TABLE sec_canary; --"'::regclass AS c) s \gset
SELECT syncguard.merge_upsert(:'target',
         $j${"Id; DROP TABLE sec_canary": 1}$j$,
         $j${"Dä ta.x": {"a": 1}, "it's; --": "v1", "back\\'slash": "b1", "Ver": 1}$j$);
-- the backslash column under the old string syntax, in a new session so
-- that the statement is prepared there
\c
SET client_min_messages = warning;
SET standard_conforming_strings = off;
SELECT syncguard.merge_upsert('"Sec; Schema.""x"""."Tab.le ""q""; DROP TABLE sec_canary; --"',
         $j${"Id; DROP TABLE sec_canary": 1}$j$,
         $j${"Dä ta.x": {"b": 2}, "back\\'slash": "b2"}$j$);
RESET standard_conforming_strings;
SELECT syncguard.protect('"Sec; Schema.""x"""."Tab.le ""q""; DROP TABLE sec_canary; --"',
         ARRAY['Dä ta.x', 'it''s; --'], '{"version": "Ver", "paths": {"a\\.b": "max"}}');
SELECT table_name, columns, policy FROM syncguard.protected_tables
 WHERE table_name::text LIKE '%Tab.le%';
UPDATE "Sec; Schema.""x"""."Tab.le ""q""; DROP TABLE sec_canary; --"
   SET "Dä ta.x" = '{"c": 3}', "it's; --" = NULL, "Ver" = 2;
SELECT * FROM "Sec; Schema.""x"""."Tab.le ""q""; DROP TABLE sec_canary; --";
-- names that are not columns are rejected by name, not run
SELECT syncguard.merge_upsert('"Sec; Schema.""x"""."Tab.le ""q""; DROP TABLE sec_canary; --"',
         $j${"Id; DROP TABLE sec_canary": 1}$j$, $j${"x\"; DROP TABLE sec_canary; --": 1}$j$);
SELECT syncguard.protect('"Sec; Schema.""x"""."Tab.le ""q""; DROP TABLE sec_canary; --"',
         ARRAY['"; DROP TABLE sec_canary; --']);
SELECT syncguard.unprotect('"Sec; Schema.""x"""."Tab.le ""q""; DROP TABLE sec_canary; --"');
-- scopes and keys are values, never SQL
SELECT outcome, attempt FROM syncguard.idem_claim(E'sc\'; DROP TABLE sec_canary; --', 'K.ey "ü" \ ;', '{"r": 1}');
-- another request under that key: the error quotes both as literals (E'' for the backslash)
SELECT regress.err($$SELECT syncguard.idem_claim(E'sc\'; DROP TABLE sec_canary; --', 'K.ey "ü" \ ;', '{"r": 2}')$$) AS reused;
SELECT scope, key, status FROM syncguard.idempotency_keys WHERE scope LIKE 'sc%';
SELECT syncguard.idem_prune(10, E'sc\'; DROP TABLE sec_canary; --');
SELECT count(*) AS canary_alive FROM sec_canary;

-- The attacker's schema, first in search_path: operators and functions that
-- the extension's SQL would use if it named them without pg_catalog.
CREATE SCHEMA sec_evil;
CREATE TABLE sec_evil.calls (what text);
GRANT USAGE ON SCHEMA sec_evil TO PUBLIC;
GRANT INSERT, SELECT ON sec_evil.calls TO PUBLIC;
CREATE FUNCTION sec_evil.note(what text) RETURNS void LANGUAGE sql
    AS $$ INSERT INTO sec_evil.calls VALUES (what) $$;
CREATE FUNCTION sec_evil.eq_oid(a oid, b oid) RETURNS boolean LANGUAGE sql
    AS $$ SELECT sec_evil.note('= oid'); SELECT a OPERATOR(pg_catalog.=) b $$;
CREATE OPERATOR sec_evil.= (LEFTARG = oid, RIGHTARG = oid, FUNCTION = sec_evil.eq_oid);
CREATE FUNCTION sec_evil.eq_name(a name, b name) RETURNS boolean LANGUAGE sql
    AS $$ SELECT sec_evil.note('= name'); SELECT a OPERATOR(pg_catalog.=) b $$;
CREATE OPERATOR sec_evil.= (LEFTARG = name, RIGHTARG = name, FUNCTION = sec_evil.eq_name);
CREATE FUNCTION sec_evil.eq_text(a text, b text) RETURNS boolean LANGUAGE sql
    AS $$ SELECT sec_evil.note('= text'); SELECT a OPERATOR(pg_catalog.=) b $$;
CREATE OPERATOR sec_evil.= (LEFTARG = text, RIGHTARG = text, FUNCTION = sec_evil.eq_text);
CREATE FUNCTION sec_evil.eq_jsonb(a jsonb, b jsonb) RETURNS boolean LANGUAGE sql
    AS $$ SELECT sec_evil.note('= jsonb'); SELECT a OPERATOR(pg_catalog.=) b $$;
CREATE OPERATOR sec_evil.= (LEFTARG = jsonb, RIGHTARG = jsonb, FUNCTION = sec_evil.eq_jsonb);
CREATE FUNCTION sec_evil.eq_uuid(a uuid, b uuid) RETURNS boolean LANGUAGE sql
    AS $$ SELECT sec_evil.note('= uuid'); SELECT a OPERATOR(pg_catalog.=) b $$;
CREATE OPERATOR sec_evil.= (LEFTARG = uuid, RIGHTARG = uuid, FUNCTION = sec_evil.eq_uuid);
CREATE FUNCTION sec_evil.le_tstz(a timestamptz, b timestamptz) RETURNS boolean LANGUAGE sql
    AS $$ SELECT sec_evil.note('<= timestamptz'); SELECT a OPERATOR(pg_catalog.<=) b $$;
CREATE OPERATOR sec_evil.<= (LEFTARG = timestamptz, RIGHTARG = timestamptz, FUNCTION = sec_evil.le_tstz);
CREATE FUNCTION sec_evil.plus_tstz(a timestamptz, b interval) RETURNS timestamptz LANGUAGE sql
    AS $$ SELECT sec_evil.note('+ timestamptz'); SELECT a OPERATOR(pg_catalog.+) b $$;
CREATE OPERATOR sec_evil.+ (LEFTARG = timestamptz, RIGHTARG = interval, FUNCTION = sec_evil.plus_tstz);
CREATE FUNCTION sec_evil.eq_int(a int, b int) RETURNS boolean LANGUAGE sql
    AS $$ SELECT sec_evil.note('= int'); SELECT a OPERATOR(pg_catalog.=) b $$;
CREATE OPERATOR sec_evil.= (LEFTARG = int, RIGHTARG = int, FUNCTION = sec_evil.eq_int);
CREATE FUNCTION sec_evil.gt_int2(a int2, b int) RETURNS boolean LANGUAGE sql
    AS $$ SELECT sec_evil.note('> int2'); SELECT a OPERATOR(pg_catalog.>) b $$;
CREATE OPERATOR sec_evil.> (LEFTARG = int2, RIGHTARG = int, FUNCTION = sec_evil.gt_int2);
CREATE FUNCTION sec_evil.minus_int2(a int2, b int) RETURNS int LANGUAGE sql
    AS $$ SELECT sec_evil.note('- int2'); SELECT a OPERATOR(pg_catalog.-) b $$;
CREATE OPERATOR sec_evil.- (LEFTARG = int2, RIGHTARG = int, FUNCTION = sec_evil.minus_int2);
CREATE FUNCTION sec_evil.ne_char(a "char", b "char") RETURNS boolean LANGUAGE sql
    AS $$ SELECT sec_evil.note('<> char'); SELECT a OPERATOR(pg_catalog.<>) b $$;
CREATE OPERATOR sec_evil.<> (LEFTARG = "char", RIGHTARG = "char", FUNCTION = sec_evil.ne_char);
CREATE FUNCTION sec_evil.jsonb_build_object(a text, b int, c text, d text) RETURNS jsonb LANGUAGE sql
    AS $$ SELECT sec_evil.note('jsonb_build_object'); SELECT NULL::jsonb $$;
CREATE FUNCTION sec_evil.to_jsonb(a anyelement) RETURNS jsonb LANGUAGE sql
    AS $$ SELECT sec_evil.note('to_jsonb'); SELECT NULL::jsonb $$;
CREATE FUNCTION sec_evil.now() RETURNS timestamptz LANGUAGE sql
    AS $$ SELECT sec_evil.note('now'); SELECT pg_catalog.now() $$;
CREATE FUNCTION sec_evil.clock_timestamp() RETURNS timestamptz LANGUAGE sql
    AS $$ SELECT sec_evil.note('clock_timestamp'); SELECT pg_catalog.clock_timestamp() $$;
CREATE FUNCTION sec_evil.format(a text, b text) RETURNS text LANGUAGE sql
    AS $$ SELECT sec_evil.note('format'); SELECT pg_catalog.format(a, b) $$;
CREATE FUNCTION sec_evil.unnest(a int2[]) RETURNS SETOF int2 LANGUAGE sql
    AS $$ SELECT sec_evil.note('unnest'); SELECT pg_catalog.unnest(a) $$;
CREATE FUNCTION sec_evil.jsonb_typeof(a jsonb) RETURNS text LANGUAGE sql
    AS $$ SELECT sec_evil.note('jsonb_typeof'); SELECT pg_catalog.jsonb_typeof(a) $$;
CREATE FUNCTION sec_evil.gen_random_uuid() RETURNS uuid LANGUAGE sql
    AS $$ SELECT sec_evil.note('gen_random_uuid'); SELECT pg_catalog.gen_random_uuid() $$;
CREATE FUNCTION sec_evil.sha256(a bytea) RETURNS bytea LANGUAGE sql
    AS $$ SELECT sec_evil.note('sha256'); SELECT pg_catalog.sha256(a) $$;
CREATE FUNCTION sec_evil.random() RETURNS float8 LANGUAGE sql
    AS $$ SELECT sec_evil.note('random'); SELECT pg_catalog.random() $$;
CREATE FUNCTION sec_evil.pg_backend_pid() RETURNS int LANGUAGE sql
    AS $$ SELECT sec_evil.note('pg_backend_pid'); SELECT pg_catalog.pg_backend_pid() $$;
-- the attack works where SQL names no schema:
SET search_path = sec_evil, pg_catalog, public;
SELECT 1::oid = 1::oid AS shadowed;
SELECT what FROM sec_evil.calls;
DELETE FROM sec_evil.calls;

-- every function of the extension under that search_path, on tables that
-- are new to this session (their catalog entries and statements are read
-- and prepared now)
CREATE TABLE public.sec_t (k text PRIMARY KEY, n int, d jsonb, ts timestamptz, v int, f jsonb);
SELECT syncguard.merge_upsert('public.sec_t', '{"k": "a"}', '{"n": 1, "d": {"x": 1}, "v": 1}');
SELECT syncguard.merge_upsert('public.sec_t', '{"k": "a"}', '{"d": {"y": 2}, "v": 2}', '{"version": "v"}');
SELECT syncguard.merge_upsert('public.sec_t', '{"k": "a"}', '{"d": {"y": 3}, "v": 2}', '{"version": "v"}');
SELECT syncguard.merge_upsert('public.sec_t', '{"k": "b"}', '{"d": {"x": 1}, "ts": "2020-01-01T00:00:00Z"}',
         '{"last_write_wins": "ts", "freshness": {"d": "f"}}') ->> 'k';
SELECT syncguard.merge_upsert('public.sec_t', '{"k": "b"}', '{"d": {"x": 0}, "ts": "2019-01-01T00:00:00Z"}',
         '{"last_write_wins": "ts"}') -> 'd';
SELECT syncguard.protect('public.sec_t', NULL, '{"last_write_wins": "ts", "freshness": {"d": "f"}}');
UPDATE public.sec_t SET d = '{"z": 1}', n = NULL, ts = '2021-01-01' WHERE k OPERATOR(pg_catalog.=) 'b';
UPDATE public.sec_t SET d = '{"z": 2}', ts = '2000-01-01' WHERE k OPERATOR(pg_catalog.=) 'b';
SELECT k, n, d FROM public.sec_t ORDER BY k;
SELECT table_name, columns FROM syncguard.protected_tables WHERE table_name::text LIKE '%sec_t';
SELECT table_name, stale_ignored FROM syncguard.conflict_stats WHERE table_name LIKE '%sec_t%' ORDER BY 1;
SELECT syncguard.unprotect('public.sec_t');
SELECT syncguard.jsonb_deep_merge('{"a": [1]}', '{"a": [2], "b": null}', '{"arrays": "union", "nulls": "delete"}'),
       '{"a": {"b": 1}}'::jsonb OPERATOR(syncguard.||+) '{"a": {"c": 2}}',
       syncguard.jsonb_merge_patch('{"a": 1}', '{"a": null}'),
       syncguard.jsonb_merge_diff('{"a": 1}', '{"b": 1}'),
       syncguard.tombstone();
SELECT syncguard.jsonb_deep_merge_agg(d ORDER BY n) FROM (VALUES (1, '{"a": 1}'::jsonb), (2, '{"b": 2}')) v(n, d);
SELECT outcome, attempt, token AS token1 FROM syncguard.idem_claim('sec', 'k1', '{"r": 1, "t": 5}', ignore => '{t}') \gset
SELECT :'outcome' AS outcome, :attempt AS attempt;
SELECT syncguard.idem_complete(:'token1', '{"ok": true}');
SELECT outcome, response FROM syncguard.idem_claim('sec', 'k1', '{"r": 1, "t": 6}', ignore => '{t}');
SELECT outcome, attempt FROM syncguard.idem_claim('sec', 'k3', '{}');
SELECT outcome, attempt, retry_at IS NOT NULL AS retry_at FROM syncguard.idem_claim('sec', 'k3', '{}');
SELECT outcome, token AS token2 FROM syncguard.idem_claim('sec', 'k2', '{}') \gset
SELECT :'outcome' AS outcome;
SELECT status, attempt FROM syncguard.idem_fail(:'token2', 'boom', false);
SELECT syncguard.backoff_delay(3, '1 second', '1 minute', 0) AS delay,
       syncguard.request_fingerprint('{"a": 1}')
         OPERATOR(pg_catalog.=) syncguard.request_fingerprint('{"a":1}') AS same_fp;
UPDATE syncguard.idempotency_keys SET expires_at = pg_catalog.clock_timestamp() OPERATOR(pg_catalog.-) '1 hour'::interval
 WHERE scope OPERATOR(pg_catalog.=) 'sec';
SELECT scope, status, keys FROM syncguard.idempotency_summary WHERE scope OPERATOR(pg_catalog.=) 'sec' ORDER BY status;
SELECT syncguard.idem_prune(100, 'sec');
RESET search_path;
-- none of the attacker's objects was called
SELECT count(*) AS evil_calls FROM sec_evil.calls;
SELECT what FROM sec_evil.calls;

DROP SCHEMA sec_evil CASCADE;
DROP TABLE public.sec_t;
DROP SCHEMA "Sec; Schema.""x""" CASCADE;
DROP TABLE sec_canary;
DELETE FROM syncguard.stale_writes WHERE table_name LIKE '%sec_t%' OR table_name LIKE '%Tab.le%';
DELETE FROM syncguard.idempotency_keys WHERE scope LIKE 'sc%';
