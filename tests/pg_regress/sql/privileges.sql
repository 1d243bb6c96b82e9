-- The privilege model (docs/privileges.md), with real roles: an application
-- role without superuser uses every function on its own tables; it cannot
-- write through merge_upsert where it holds no privilege, cannot protect or
-- unprotect a table it does not own, cannot touch the counters directly,
-- and cannot read or change another role's idempotency keys.
SET client_min_messages = warning;
CREATE ROLE priv_app NOSUPERUSER NOCREATEDB NOCREATEROLE NOBYPASSRLS;
CREATE ROLE priv_intruder NOSUPERUSER NOBYPASSRLS;
CREATE SCHEMA priv_app AUTHORIZATION priv_app;
GRANT USAGE ON SCHEMA priv_app TO priv_intruder;
-- a table of someone else's (the superuser's)
CREATE TABLE priv_app.admin_t (id int PRIMARY KEY, d jsonb, ts timestamptz);
INSERT INTO priv_app.admin_t VALUES (1, '{"secret": true}', now());

-- 1. The application role, on its own table, uses every function.
SET ROLE priv_app;
SELECT rolsuper FROM pg_roles WHERE rolname = current_user;
CREATE TABLE priv_app.t (id int PRIMARY KEY, d jsonb, ts timestamptz, v int, f jsonb);
SELECT syncguard.version() IS NOT NULL AS version,
       syncguard.jsonb_deep_merge('{"a": {"b": 1}}', '{"a": {"c": 2}}', '{"nulls": "delete"}') AS merged,
       '{"a": 1}'::jsonb OPERATOR(syncguard.||+) '{"b": 2}' AS op,
       syncguard.jsonb_merge_patch('{"a": 1}', '{"a": null}') AS patched,
       syncguard.jsonb_merge_diff('{"a": 1}', '{"a": 2}') AS diff,
       syncguard.tombstone();
SELECT syncguard.jsonb_deep_merge_agg(d ORDER BY n), syncguard.jsonb_deep_merge_agg(d, '{"arrays": "concat"}' ORDER BY n)
  FROM (VALUES (1, '{"a": [1]}'::jsonb), (2, '{"a": [2]}')) v(n, d);
SELECT syncguard.merge_upsert('priv_app.t', '{"id": 1}', '{"d": {"x": 1}, "ts": "2020-01-01T00:00:00Z", "v": 1}');
SELECT syncguard.merge_upsert('priv_app.t', '{"id": 1}', '{"d": {"y": 2}, "v": 2}', '{"version": "v", "freshness": {"d": "f"}}') -> 'd';
SELECT syncguard.protect('priv_app.t', '{d,ts}', '{"last_write_wins": "ts"}');
UPDATE priv_app.t SET d = '{"z": 3}', ts = '2019-01-01' WHERE id = 1;  -- stale: ignored and counted
SELECT id, d FROM priv_app.t;
SELECT table_name, columns, policy FROM syncguard.protected_tables WHERE table_name = 'priv_app.t'::regclass;
SELECT table_name, stale_ignored FROM syncguard.conflict_stats WHERE table_name = 'priv_app.t';
SELECT syncguard.unprotect('priv_app.t');
SELECT outcome, token AS app_token FROM syncguard.idem_claim('priv', 'k1', '{"amount": 1}') \gset
SELECT :'outcome' AS outcome;
SELECT syncguard.idem_complete(:'app_token', '{"charge": 7}');
SELECT outcome, response FROM syncguard.idem_claim('priv', 'k1', '{"amount": 1}');
SELECT outcome, token AS app_token2 FROM syncguard.idem_claim('priv', 'k2', '{"amount": 2}') \gset
SELECT status, attempt FROM syncguard.idem_fail(:'app_token2', 'timeout', true);
SELECT syncguard.backoff_delay(1, '1 s', '1 h', 0) AS backoff,
       length(syncguard.request_fingerprint('{"a": 1}', '{a}')) AS fingerprint_length,
       syncguard.idem_prune() AS pruned;
SELECT scope, status, keys FROM syncguard.idempotency_summary WHERE scope = 'priv' ORDER BY status;

-- 2. No privilege on a table: merge_upsert writes nothing.
SELECT regress.err($$SELECT syncguard.merge_upsert('priv_app.admin_t', '{"id": 1}', '{"d": {"pwned": true}}')$$);
RESET ROLE;
GRANT SELECT, INSERT ON priv_app.admin_t TO priv_app;   -- no UPDATE: ON CONFLICT DO UPDATE needs it
SET ROLE priv_app;
SELECT regress.err($$SELECT syncguard.merge_upsert('priv_app.admin_t', '{"id": 1}', '{"d": {"pwned": true}}')$$);
SELECT regress.err($$SELECT syncguard.merge_upsert('priv_app.admin_t', '{"id": 2}', '{"d": {"new": true}}')$$);
-- 3. Not the owner: no protect or unprotect, even with the TRIGGER privilege.
RESET ROLE;
GRANT TRIGGER, UPDATE ON priv_app.admin_t TO priv_app;
SELECT syncguard.protect('priv_app.admin_t');
SET ROLE priv_app;
SELECT regress.err($$SELECT syncguard.protect('priv_app.admin_t', NULL, '{"nulls": "overwrite"}')$$);
SELECT regress.err($$SELECT syncguard.unprotect('priv_app.admin_t')$$);
-- the counters are the extension's: readable, not writable; only the trigger
-- and merge_upsert count, through no SQL function
SELECT regress.err($$DELETE FROM syncguard.stale_writes$$);
SELECT regress.err($$SELECT syncguard.note_stale_write('priv_app.admin_t')$$) AS no_counting_function;
RESET ROLE;
SELECT id, d FROM priv_app.admin_t ORDER BY id;
SELECT table_name, policy FROM syncguard.protected_tables WHERE table_name = 'priv_app.admin_t'::regclass;

-- 4. Another role sees none of priv_app's idempotency keys and changes none;
-- its claim of the same scope and key claims a key of its own (no replay of
-- priv_app's response).
SET ROLE priv_intruder;
SELECT count(*) AS keys_visible FROM syncguard.idempotency_keys;
SELECT count(*) AS summary_rows FROM syncguard.idempotency_summary WHERE scope = 'priv';
SELECT outcome, response FROM syncguard.idem_claim('priv', 'k1', '{"amount": 1}') AS own_key;
SELECT regress.err(format('SELECT syncguard.idem_complete(%L, %L)', :'app_token2', '{"stolen": true}'));
SELECT regress.err(format('SELECT syncguard.idem_fail(%L, %L, false)', :'app_token2', 'sabotage'));
SELECT regress.err($$UPDATE syncguard.idempotency_keys SET response = '{"stolen": true}' WHERE scope = 'priv'$$) AS updated,
       regress.err($$DELETE FROM syncguard.idempotency_keys WHERE scope = 'priv'$$) AS deleted;
SELECT regress.err($$INSERT INTO syncguard.idempotency_keys (scope, key, owner_role, fingerprint, status, lease_token, expires_at)
                     VALUES ('priv', 'k3', 'priv_app', 'f', 'succeeded', gen_random_uuid(), now() + interval '1 day')$$) AS forged;
UPDATE syncguard.idempotency_keys SET expires_at = now() - interval '1 hour';
SELECT syncguard.idem_prune() AS pruned_by_intruder;
RESET ROLE;
-- priv_app's keys are untouched (k1 of priv_intruder is its own claim)
SELECT key, owner_role, status, response FROM syncguard.idempotency_keys WHERE scope = 'priv' ORDER BY key;

SELECT syncguard.unprotect('priv_app.admin_t');
DELETE FROM syncguard.idempotency_keys WHERE scope = 'priv';
DELETE FROM syncguard.stale_writes WHERE table_name LIKE 'priv_app.%';
DROP SCHEMA priv_app CASCADE;
DROP OWNED BY priv_app, priv_intruder;
DROP ROLE priv_app;
DROP ROLE priv_intruder;
