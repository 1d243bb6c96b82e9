-- pgbench, benches/sections/idempotency.sh: the one-statement form of
-- benches/idem_hand_written.sql, as an application writes it by hand against
-- its key table (the baseline of benches/idem_one_statement.sql). The key is
-- inserted once, already completed with its response (the effect's id, drawn
-- from the effect's sequence beforehand): a statement's parts cannot see each
-- other's rows, so an UPDATE of the key after the effect would find nothing,
-- and a failing effect rolls the key back with it. The effect runs only when
-- the key is new; a replay gets the stored response (last branch).
-- Casts on every variable, so that it runs with -M prepared too.
\set a random(1, 1000000)
WITH k AS (SELECT 'k' || :client_id::text || '-' || :a::text || '-' || random()::text AS key,
                  md5(jsonb_build_object('amount', :a::int)::text) AS fingerprint),
     c AS (INSERT INTO hand_keys (scope, key, fingerprint, status, response)
           SELECT 'pay', k.key, k.fingerprint, 'succeeded', jsonb_build_object('effect', nextval('effects_id_seq'))
             FROM k
           ON CONFLICT DO NOTHING RETURNING key, response),
     e AS (INSERT INTO effects (id, k, amount) SELECT (c.response->>'effect')::bigint, c.key, :a::int FROM c RETURNING id)
SELECT 'claimed' AS outcome, c.response FROM c WHERE EXISTS (SELECT FROM e)
UNION ALL
SELECT 'replayed', h.response FROM hand_keys h WHERE h.scope = 'pay' AND h.key = (SELECT key FROM k);
