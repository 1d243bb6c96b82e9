-- Idempotency keys: every claim outcome, error and option.
-- Tokens and timestamps vary from run to run: they are kept in a temporary
-- table and compared in SQL, never printed.

-- pg_temp.claim(label, ...) calls idem_claim, remembers its result under
-- label, and shows it without the token; pg_temp.tok(label) is the token.
CREATE TEMP TABLE claims (label text PRIMARY KEY, outcome text, token uuid, response jsonb,
                          attempt int, retry_at timestamptz);
CREATE FUNCTION pg_temp.claim(label text, s text, k text, req jsonb,
                              lease interval DEFAULT '30 seconds', ttl interval DEFAULT '24 hours',
                              ign text[] DEFAULT NULL, done jsonb DEFAULT NULL)
RETURNS TABLE (outcome text, has_token boolean, response jsonb, attempt int, has_retry_at boolean)
LANGUAGE sql AS $$
    INSERT INTO pg_temp.claims
    SELECT label, c.* FROM syncguard.idem_claim(s, k, req, lease, ttl, ign, complete => done) AS c
    RETURNING outcome, token IS NOT NULL, response, attempt, retry_at IS NOT NULL
$$;
CREATE FUNCTION pg_temp.tok(l text) RETURNS uuid LANGUAGE sql AS $$
    SELECT token FROM pg_temp.claims WHERE label = l
$$;
CREATE FUNCTION pg_temp.key_row(s text, k text)
RETURNS TABLE (status text, response jsonb, last_error text, attempts int, has_lease boolean, has_next_attempt boolean)
LANGUAGE sql AS $$
    SELECT status, response, last_error, attempts, lease_expires_at IS NOT NULL, next_attempt_at IS NOT NULL
      FROM syncguard.idempotency_keys WHERE scope = s AND key = k
$$;

-- The table is kept by pg_dump, and the API is in place: plpgsql functions
-- pin their settings; the C ones (claim and complete) need none.
SELECT 'syncguard.idempotency_keys'::regclass = ANY (extconfig) AS dumped FROM pg_extension WHERE extname = 'syncguard';
SELECT p.oid::regprocedure AS function, l.lanname AS language,
       p.provolatile AS volatility, p.proisstrict AS strict, p.prosecdef AS security_definer, p.proconfig AS settings
  FROM pg_proc p JOIN pg_language l ON l.oid = p.prolang
 WHERE p.pronamespace = 'syncguard'::regnamespace
   AND (p.proname ~ '^_?idem' OR p.proname IN ('request_fingerprint', 'backoff_delay'))
 ORDER BY p.oid::regprocedure::text;

-- 1. claimed: a new key. The caller owns it and does the work.
SELECT * FROM pg_temp.claim('c1', 'payments', 'k1', '{"amount": 100, "currency": "EUR"}');
SELECT * FROM pg_temp.key_row('payments', 'k1');

-- 2. in_progress: the same request while the lease is live (retry_at = lease expiry).
SELECT * FROM pg_temp.claim('c2', 'payments', 'k1', '{"amount": 100, "currency": "EUR"}');
SELECT retry_at = (SELECT lease_expires_at FROM syncguard.idempotency_keys WHERE key = 'k1') AS retry_at_is_lease_expiry
  FROM claims WHERE label = 'c2';

-- 3. replay: after idem_complete every retry gets the stored response back.
SELECT syncguard.idem_complete(pg_temp.tok('c1'), '{"charge_id": "ch_1", "status": "paid"}');
SELECT * FROM pg_temp.key_row('payments', 'k1');
-- the fingerprint is canonical: key order and whitespace do not matter
SELECT * FROM pg_temp.claim('c3', 'payments', 'k1', '{ "currency":"EUR",   "amount":100 }');
SELECT * FROM pg_temp.claim('c4', 'payments', 'k1', '{"amount": 100, "currency": "EUR"}');

-- 4. SG001: the same key with a different request, whatever its status.
SELECT regress.err($$SELECT syncguard.idem_claim('payments', 'k1', '{"amount": 999, "currency": "EUR"}')$$);
SELECT regress.err($$SELECT syncguard.idem_claim('payments', 'k1', '{"amount": 100.0, "currency": "EUR"}')$$) AS numbers_compare_as_written;
SELECT * FROM pg_temp.claim('s1', 'payments', 'k-running', '{"a": 1}');
SELECT regress.err($$SELECT syncguard.idem_claim('payments', 'k-running', '{"a": 2}')$$);
-- ... but the same key in another scope is another key
SELECT * FROM pg_temp.claim('s2', 'refunds', 'k1', '{"amount": 999}');

-- 5. ignore: volatile fields left out of the fingerprint (top-level keys or dotted paths)
SELECT * FROM pg_temp.claim('i1', 'orders', 'o1', '{"sku": "A", "sent_at": "10:00", "meta": {"trace": "x", "v": 1}}',
                            ign => ARRAY['sent_at', 'meta.trace']);
SELECT * FROM pg_temp.claim('i2', 'orders', 'o1', '{"sku": "A", "sent_at": "10:05", "meta": {"trace": "y", "v": 1}}',
                            ign => ARRAY['sent_at', 'meta.trace']);
SELECT regress.err($$SELECT syncguard.idem_claim('orders', 'o1', '{"sku": "A", "sent_at": "10:05", "meta": {"trace": "y", "v": 1}}')$$) AS without_ignore;
SELECT syncguard.request_fingerprint('{"b": 1, "a": [1, 2]}') = syncguard.request_fingerprint('{"a":[1,2],"b":1}') AS order_free,
       syncguard.request_fingerprint('{"a": 1, "a": 2}') = syncguard.request_fingerprint('{"a": 2}') AS last_duplicate_wins,
       syncguard.request_fingerprint('{"a": [1, 2]}') = syncguard.request_fingerprint('{"a": [2, 1]}') AS array_order_counts,
       syncguard.request_fingerprint('{"x": 1, "t": 2}', ARRAY['t', 'no.such.path', NULL]) = syncguard.request_fingerprint('{"x": 1}') AS ignored,
       syncguard.request_fingerprint('[1]', ARRAY['t']) = syncguard.request_fingerprint('[1]') AS non_object_unchanged,
       length(syncguard.request_fingerprint('{}')) AS hex_length;
-- a claim stores request_fingerprint(request), non-ASCII text included
SELECT outcome FROM syncguard.idem_claim('fp', 'k', '{"name": "Zoë ☃", "n": 1.50}');
SELECT fingerprint = syncguard.request_fingerprint('{"n": 1.50, "name": "Zoë ☃"}') AS stored_is_request_fingerprint
  FROM syncguard.idempotency_keys WHERE scope = 'fp';
DELETE FROM syncguard.idempotency_keys WHERE scope = 'fp';

-- 6. An expired lease is taken over: claimed again with attempt 2 and a new
-- token; the old holder's complete and fail are rejected (SG002) and change nothing.
SELECT * FROM pg_temp.claim('l1', 'emails', 'e1', '{"to": "ada"}', lease => '1 ms');
SELECT pg_sleep(0.02);
SELECT * FROM pg_temp.claim('l2', 'emails', 'e1', '{"to": "ada"}');
SELECT pg_temp.tok('l1') <> pg_temp.tok('l2') AS new_token;
SELECT regress.err(format('SELECT syncguard.idem_complete(%L, %L)', pg_temp.tok('l1'), '{"sent": "old"}'));
SELECT regress.err(format('SELECT syncguard.idem_fail(%L, %L)', pg_temp.tok('l1'), 'old holder'));
SELECT * FROM pg_temp.key_row('emails', 'e1');
-- an expired lease that nobody took over still completes
SELECT * FROM pg_temp.claim('l3', 'emails', 'e2', '{"to": "bob"}', lease => '1 ms');
SELECT pg_sleep(0.02);
SELECT syncguard.idem_complete(pg_temp.tok('l3'), '{"sent": true}', scope => 'emails');
SELECT * FROM pg_temp.claim('l4', 'emails', 'e2', '{"to": "bob"}');
-- SG002 also for a token used twice, a token of a completed key, an unknown token,
-- and a token given with the wrong scope
SELECT regress.err(format('SELECT syncguard.idem_complete(%L, %L)', pg_temp.tok('l3'), '{"again": 1}'));
SELECT regress.err(format('SELECT syncguard.idem_fail(%L, %L)', pg_temp.tok('c1'), 'late'));
SELECT regress.err($$SELECT syncguard.idem_complete('00000000-0000-0000-0000-000000000000', '{}')$$);
SELECT regress.err(format('SELECT syncguard.idem_complete(%L, %L, scope => %L)', pg_temp.tok('l2'), '{}', 'payments'));
SELECT syncguard.idem_complete(pg_temp.tok('l2'), NULL, scope => 'emails');
SELECT * FROM pg_temp.claim('l5', 'emails', 'e1', '{"to": "ada"}') AS replay_of_null_response;

-- 7. Failures: retryable failures back off (retry_later until due, then claimed
-- with the next attempt); a non-retryable failure or max_attempts gives dead.
SELECT * FROM pg_temp.claim('f1', 'sync', 'job1', '{"n": 1}');
SELECT status, attempt, retry_at > clock_timestamp() + interval '45 minutes' AS backs_off_about_an_hour
  FROM syncguard.idem_fail(pg_temp.tok('f1'), 'timeout', base => '1 hour', cap => '1 hour');
SELECT * FROM pg_temp.key_row('sync', 'job1');
SELECT * FROM pg_temp.claim('f2', 'sync', 'job1', '{"n": 1}');
SELECT retry_at = (SELECT next_attempt_at FROM syncguard.idempotency_keys WHERE key = 'job1') AS retry_at_is_next_attempt
  FROM claims WHERE label = 'f2';
-- due: make the retry time pass, then the next claim is attempt 2
UPDATE syncguard.idempotency_keys SET next_attempt_at = clock_timestamp() WHERE scope = 'sync' AND key = 'job1';
SELECT * FROM pg_temp.claim('f3', 'sync', 'job1', '{"n": 1}');
SELECT * FROM pg_temp.key_row('sync', 'job1') AS last_error_kept_while_retrying;
SELECT status, attempt, retry_at IS NOT NULL AS has_retry_at
  FROM syncguard.idem_fail(pg_temp.tok('f3'), 'timeout again', base => '1 ms', cap => '1 ms');
SELECT pg_sleep(0.02);
SELECT * FROM pg_temp.claim('f4', 'sync', 'job1', '{"n": 1}');
-- the third failure reaches max_attempts 3: dead, and claims say so from now on
SELECT status, attempt, retry_at IS NOT NULL AS has_retry_at
  FROM syncguard.idem_fail(pg_temp.tok('f4'), 'timeout for good', max_attempts => 3);
SELECT * FROM pg_temp.claim('f5', 'sync', 'job1', '{"n": 1}');
-- not retryable: dead at once
SELECT * FROM pg_temp.claim('f6', 'sync', 'job2', '{"n": 2}');
SELECT * FROM syncguard.idem_fail(pg_temp.tok('f6'), 'card declined', retryable => false);
SELECT * FROM pg_temp.claim('f7', 'sync', 'job2', '{"n": 2}');
SELECT regress.err(format('SELECT syncguard.idem_fail(%L, %L)', pg_temp.tok('f6'), 'twice'));

-- 8. Backoff: least(cap, base * 2^(attempt-1)), spread by ±jitter.
SELECT a, syncguard.backoff_delay(a, '2 seconds', '10 minutes', 0) AS no_jitter
  FROM generate_series(1, 10) a;
SELECT syncguard.backoff_delay(1) BETWEEN interval '1.6 seconds' AND interval '2.4 seconds' AS default_first,
       syncguard.backoff_delay(100000, '1 second', '1 hour', 0) AS huge_attempt_capped,
       syncguard.backoff_delay(3, '250 ms', '1 hour', 0) AS sub_second,
       syncguard.backoff_delay(NULL) IS NULL AS strict,
       syncguard.backoff_delay(60, '1 day', '1000000 years', 0) AS huge_cap_clamped;
-- keys and scopes that fit the index, or a clear 22023
SELECT regress.err(format('SELECT syncguard.idem_claim(%L, %L, %L)', 'long', repeat('k', 3000), '{}'));
SELECT outcome FROM syncguard.idem_claim('long', repeat('k', 1000), '{}');
-- jitter 0.5 over 2000 samples of attempt 3 (4 s): within [2 s, 6 s] and spread over it
SELECT min(d) >= interval '2 seconds' AS above_lower_bound, max(d) <= interval '6 seconds' AS below_upper_bound,
       min(d) < interval '2.5 seconds' AND max(d) > interval '5.5 seconds' AS spread,
       count(DISTINCT d) > 1900 AS distinct_values
  FROM (SELECT syncguard.backoff_delay(3, '1 second', '1 hour', 0.5) AS d FROM generate_series(1, 2000)) s;
SELECT regress.err($$SELECT syncguard.backoff_delay(0)$$);
SELECT regress.err($$SELECT syncguard.backoff_delay(1, '-1 second')$$);
SELECT regress.err($$SELECT syncguard.backoff_delay(1, jitter => 1.5)$$);

-- 9. Bad arguments.
SELECT regress.err($$SELECT syncguard.idem_claim(NULL, 'k', '{}')$$);
SELECT regress.err($$SELECT syncguard.idem_claim('s', NULL, '{}')$$);
SELECT regress.err($$SELECT syncguard.idem_claim('s', 'k', NULL)$$);
SELECT regress.err($$SELECT syncguard.idem_claim('s', '', '{}')$$);
SELECT regress.err($$SELECT syncguard.idem_claim('s', 'k', '{}', lease => '-5 seconds')$$);
SELECT regress.err($$SELECT syncguard.idem_claim('s', 'k', '{}', ttl => '0')$$);
-- bounded: no key remembered for ever, no lease that never runs out
SELECT regress.err($$SELECT syncguard.idem_claim('s', 'k', '{}', ttl => '1000 years')$$);
SELECT regress.err($$SELECT syncguard.idem_claim('s', 'k', '{}', lease => '2 days')$$);
SELECT regress.err($$SELECT syncguard.idem_complete(NULL, '{}')$$);
SELECT regress.err($$SELECT syncguard.idem_fail(NULL, 'x')$$);
SELECT regress.err(format('SELECT syncguard.idem_fail(%L, %L, max_attempts => 0)', pg_temp.tok('s1'), 'x'));
SELECT regress.err(format('SELECT syncguard.idem_fail(%L, %L, base => %L)', pg_temp.tok('s1'), 'x', '-1 s'));
SELECT regress.err($$SELECT syncguard.idem_prune(0)$$);
SELECT count(*) AS keys_left_by_errors FROM syncguard.idempotency_keys WHERE scope = 's';

-- 10. The preferred pattern for local work: claim, the application's own
-- writes and complete in one transaction commit or roll back together.
CREATE TABLE orders (id serial PRIMARY KEY, request_key text, total numeric);
BEGIN;
SELECT * FROM pg_temp.claim('t1', 'checkout', 'cart-7', '{"total": 42}');
INSERT INTO orders (request_key, total) VALUES ('cart-7', 42);
SELECT syncguard.idem_complete(pg_temp.tok('t1'), jsonb_build_object('order_id', currval('orders_id_seq')));
ROLLBACK;
SELECT count(*) AS keys_after_rollback FROM syncguard.idempotency_keys WHERE scope = 'checkout';
SELECT count(*) AS orders_after_rollback FROM orders;
BEGIN;
SELECT * FROM pg_temp.claim('t1', 'checkout', 'cart-7', '{"total": 42}');
INSERT INTO orders (request_key, total) VALUES ('cart-7', 42);
SELECT syncguard.idem_complete(pg_temp.tok('t1'), (SELECT jsonb_build_object('order_id', id) FROM orders WHERE request_key = 'cart-7'));
COMMIT;
-- the retry replays the order instead of creating a second one
SELECT * FROM pg_temp.claim('t2', 'checkout', 'cart-7', '{"total": 42}');
SELECT count(*) AS orders FROM orders;

-- 11. Expiry: an expired key is a new request (even a different one) until pruned;
-- idem_prune deletes expired keys in batches, never a running key with a live lease.
SELECT * FROM pg_temp.claim('x1', 'expiry', 'a', '{"v": 1}', ttl => '1 ms');
SELECT syncguard.idem_complete(pg_temp.tok('x1'), '{"done": 1}');
SELECT pg_sleep(0.02);
SELECT * FROM pg_temp.claim('x2', 'expiry', 'a', '{"v": 2}');
INSERT INTO syncguard.idempotency_keys (scope, key, fingerprint, status, response, lease_token, created_at, expires_at)
SELECT 'expiry', 'old-' || i, 'f', 'succeeded', '{}', gen_random_uuid(), now() - interval '2 days', now() - interval '1 day'
  FROM generate_series(1, 5) i;
SELECT * FROM pg_temp.claim('x3', 'expiry', 'live-lease', '{}', lease => '1 hour', ttl => '1 ms');
SELECT * FROM pg_temp.claim('x4', 'expiry', 'dead-lease', '{}', lease => '1 ms', ttl => '1 ms');
SELECT pg_sleep(0.02);
SELECT syncguard.idem_prune(4) AS first_batch, syncguard.idem_prune(4) AS second_batch, syncguard.idem_prune() AS nothing_left;
SELECT syncguard.idem_prune(scope => 'no-such-scope') AS other_scope;
SELECT key, status FROM syncguard.idempotency_keys WHERE scope = 'expiry' ORDER BY key;

-- 12. The summary view, per scope and status.
SELECT scope, status, keys, attempts, leases_expired, expired, oldest <= newest AS ordered
  FROM syncguard.idempotency_summary ORDER BY scope, status;

-- 13. Privileges: an application role without superuser uses every function;
-- each role has its own keys: another role's claim of the same scope and key
-- is a claim of its own key, which never meets the first role's.
CREATE ROLE idem_app;
CREATE ROLE idem_other;
SET ROLE idem_app;
SELECT outcome, attempt FROM syncguard.idem_claim('app', 'a1', '{"x": 1}') \gset app_
SELECT :'app_outcome' AS outcome, :app_attempt AS attempt;
SELECT syncguard.idem_complete(lease_token, '{"ok": true}')
  FROM syncguard.idempotency_keys WHERE scope = 'app' AND key = 'a1';
SELECT outcome, response FROM syncguard.idem_claim('app', 'a1', '{"x": 1}');
SELECT token IS NOT NULL AS claimed FROM syncguard.idem_claim('app', 'a2', '{"x": 2}');
SELECT status, attempt FROM syncguard.idem_fail((SELECT lease_token FROM syncguard.idempotency_keys WHERE key = 'a2'), 'boom', retryable => false);
SELECT scope, status, keys FROM syncguard.idempotency_summary ORDER BY 1, 2;
SELECT count(*) AS keys_visible FROM syncguard.idempotency_keys;
SELECT syncguard.idem_prune() AS pruned, syncguard.backoff_delay(2, '1 s', '1 h', 0) AS backoff,
       length(syncguard.request_fingerprint('{}')) AS fingerprint_length;
SELECT regress.err($$INSERT INTO syncguard.idempotency_keys (scope, key, owner_role, fingerprint, status, lease_token, expires_at)
                     VALUES ('app', 'forged', 'idem_other', 'f', 'succeeded', gen_random_uuid(), now())$$);
SET ROLE idem_other;
SELECT count(*) AS keys_visible FROM syncguard.idempotency_summary;
SELECT outcome, attempt, response FROM syncguard.idem_claim('app', 'a1', '{"x": "other"}');
SELECT outcome, attempt FROM syncguard.idem_claim('app', 'a1', '{"x": "other"}');
SELECT regress.err($$UPDATE syncguard.idempotency_keys SET status = 'dead' WHERE scope = 'app'$$) AS direct_update,
       (SELECT count(*) FROM syncguard.idempotency_keys WHERE scope = 'app') AS rows_seen;
SET ROLE idem_app;
SELECT outcome, response FROM syncguard.idem_claim('app', 'a1', '{"x": 1}') AS still_replayed;
RESET ROLE;
-- the superuser sees every key; its own claim is a key of its own too
SELECT key, owner_role, status FROM syncguard.idempotency_keys WHERE scope = 'app' ORDER BY key, owner_role;
SELECT outcome FROM syncguard.idem_claim('app', 'a1', '{"x": 1}');
SELECT count(*) AS keys_a1 FROM syncguard.idempotency_keys WHERE scope = 'app' AND key = 'a1';
DELETE FROM syncguard.idempotency_keys WHERE scope = 'app';
DROP ROLE idem_app;
DROP ROLE idem_other;
DROP TABLE orders;

-- The one-statement form (docs/idempotency.md, "Two ways to use it"): the work runs only
-- when the claim is won, its id goes into the response, a retry replays it.
CREATE TABLE charges (id int GENERATED ALWAYS AS IDENTITY PRIMARY KEY, amount numeric);
PREPARE charge(text) AS
WITH c AS (SELECT * FROM syncguard.idem_claim('one', $1, '{"amount": 42}')),
     w AS (INSERT INTO charges (amount) SELECT 42 FROM c WHERE c.outcome = 'claimed' RETURNING id)
SELECT c.outcome, c.response,
       (SELECT syncguard.idem_complete(c.token, jsonb_build_object('charge_id', w.id)) FROM w) IS NOT NULL AS completed_now
  FROM c;
EXECUTE charge('c1');
EXECUTE charge('c1');
EXECUTE charge('c2');
SELECT key, status, response FROM syncguard.idempotency_keys WHERE scope = 'one' ORDER BY key;
SELECT count(*) AS charges FROM charges;
DEALLOCATE charge;
DELETE FROM syncguard.idempotency_keys WHERE scope = 'one';
DROP TABLE charges;

-- complete: work in the claim's own transaction stores its key succeeded
-- with the response at once (docs/idempotency.md, "The key written once").
-- The response comes back with the claim; a retry replays it; the key is
-- written once, holds no lease, and its token completes nothing.
CREATE SEQUENCE charge_ids;
CREATE TABLE charges (id bigint PRIMARY KEY, amount numeric);
PREPARE charge_once(text) AS
WITH c AS (SELECT * FROM syncguard.idem_claim('once', $1, '{"amount": 42}',
                                              complete => jsonb_build_object('charge_id', nextval('charge_ids')))),
     w AS (INSERT INTO charges (id, amount)
           SELECT (c.response->>'charge_id')::bigint, 42 FROM c WHERE c.outcome = 'claimed')
SELECT c.outcome, c.response, c.attempt FROM c;
SELECT pg_stat_force_next_flush();  -- the counts below are this transaction's alone
BEGIN;
EXECUTE charge_once('c1');
EXECUTE charge_once('c1');
EXECUTE charge_once('c2');
SELECT n_tup_ins AS keys_inserted, n_tup_upd AS keys_updated
  FROM pg_stat_xact_user_tables WHERE relid = 'syncguard.idempotency_keys'::regclass;
COMMIT;
SELECT key, (pg_temp.key_row(scope, key)).* FROM syncguard.idempotency_keys WHERE scope = 'once' ORDER BY key;
SELECT id, amount FROM charges ORDER BY id;
SELECT regress.err(format('SELECT syncguard.idem_complete(%L, %L)',
                          (SELECT lease_token FROM syncguard.idempotency_keys WHERE scope = 'once' AND key = 'c1'), '{}'))
       AS complete_after_complete;
SELECT regress.err($$SELECT syncguard.idem_claim('once', 'c1', '{"amount": 43}', complete => '{}')$$) AS other_request;
-- rolled back with its work: no key, and the next claim is a new one
BEGIN;
EXECUTE charge_once('c3');
ROLLBACK;
SELECT count(*) AS keys_c3 FROM syncguard.idempotency_keys WHERE scope = 'once' AND key = 'c3';
EXECUTE charge_once('c3');
DEALLOCATE charge_once;
-- a key taken over (a due retry, an expired lease) is completed the same way,
-- its last error cleared; the old holder's token is rejected
SELECT * FROM pg_temp.claim('o1', 'once', 'retry', '{}');
SELECT status FROM syncguard.idem_fail(pg_temp.tok('o1'), 'timeout', base => '1 ms', cap => '1 ms');
SELECT pg_sleep(0.02);
SELECT * FROM pg_temp.claim('o2', 'once', 'retry', '{}', done => '{"ok": 2}');
SELECT * FROM pg_temp.key_row('once', 'retry');
SELECT * FROM pg_temp.claim('o3', 'once', 'lease', '{}', lease => '1 ms');
SELECT pg_sleep(0.02);
SELECT * FROM pg_temp.claim('o4', 'once', 'lease', '{}', done => 'null');
SELECT * FROM pg_temp.key_row('once', 'lease');
SELECT regress.err(format('SELECT syncguard.idem_complete(%L, %L)', pg_temp.tok('o3'), '{}')) AS old_holder;
-- a response read from a table, stored out of line there, is stored and
-- returned whole
CREATE TABLE big_responses (doc jsonb);
INSERT INTO big_responses
SELECT jsonb_build_object('lines', jsonb_agg(jsonb_build_object('n', i, 'text', md5(i::text)))) FROM generate_series(1, 3000) i;
SELECT c.outcome, c.response = (SELECT doc FROM big_responses) AS returned_whole
  FROM syncguard.idem_claim('once', 'big', '{}', complete => (SELECT doc FROM big_responses)) AS c;
SELECT k.response = b.doc AS stored_whole, pg_column_size(b.doc) > 2000 AS out_of_line
  FROM syncguard.idempotency_keys k, big_responses b WHERE k.scope = 'once' AND k.key = 'big';
DROP TABLE big_responses;
-- tokens: random version 4 UUIDs, never one twice (100 claims draw the
-- random pool empty three times)
SELECT count(DISTINCT c.token) AS tokens,
       bool_and(substr(c.token::text, 15, 1) = '4' AND substr(c.token::text, 20, 1) IN ('8', '9', 'a', 'b')) AS version_4
  FROM generate_series(1, 100) AS i, syncguard.idem_claim('once', 't' || i, '{}') AS c;
DELETE FROM syncguard.idempotency_keys WHERE scope = 'once';
DROP TABLE charges;
DROP SEQUENCE charge_ids;

-- Plans: a session keeps the plans it made while the table was small; as the
-- table grows, claim (on a conflict), complete and fail still find keys by
-- index. Six rounds: past the plan cache's custom plans, to the plan it keeps.
VACUUM syncguard.idempotency_keys;  -- statistics of a small table
\c
DO $$
DECLARE c record;
BEGIN
    FOR i IN 1..6 LOOP
        SELECT * INTO c FROM syncguard.idem_claim('plans', 'k' || i, '{}');
        PERFORM syncguard.idem_complete(c.token, '{}');
        PERFORM syncguard.idem_claim('plans', 'k' || i, '{}');
        SELECT * INTO c FROM syncguard.idem_claim('plans', 'f' || i, '{}');
        PERFORM syncguard.idem_fail(c.token, 'no', retryable => false);
    END LOOP;
END $$;
SELECT count(*) AS grown
  FROM generate_series(1, 3000) AS i, syncguard.idem_claim('plans', 'g' || i, '{}') AS c
 WHERE c.outcome = 'claimed';
BEGIN;
SELECT token AS pt FROM syncguard.idem_claim('plans', 'new', '{}') \gset
SELECT syncguard.idem_complete(:'pt', '{"ok": true}');
SELECT outcome, response FROM syncguard.idem_claim('plans', 'new', '{}');
SELECT token AS pf FROM syncguard.idem_claim('plans', 'bad', '{}') \gset
SELECT status FROM syncguard.idem_fail(:'pf', 'no', retryable => false);
SELECT token AS pr FROM syncguard.idem_claim('plans', 'retry', '{}') \gset
SELECT status FROM syncguard.idem_fail(:'pr', 'later');
SELECT seq_scan, idx_scan > 0 AS by_index FROM pg_stat_xact_user_tables
 WHERE relid = 'syncguard.idempotency_keys'::regclass;
COMMIT;
-- Running, succeeded, failed and dead keys as the functions leave them (the
-- table has no CHECK constraints to say so).
SELECT status, count(*) AS keys,
       count(*) FILTER (WHERE attempts < 1 OR (status = 'running' AND lease_expires_at IS NULL)
                          OR (status = 'failed' AND next_attempt_at IS NULL)) AS inconsistent
  FROM syncguard.idempotency_keys WHERE scope = 'plans' GROUP BY status ORDER BY status;
DELETE FROM syncguard.idempotency_keys WHERE scope = 'plans';
