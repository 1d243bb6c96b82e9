-- pgbench, benches/sections/idempotency.sh: benches/idem_one_statement.sql
-- with the key written once: idem_claim's `complete` stores the key
-- succeeded with its response (the effect's id, drawn from the effect's
-- sequence beforehand) in the claim itself, as the hand-written form
-- (benches/idem_hand_written_one_statement.sql) inserts its key already
-- completed. The effect runs only when the claim is won; a replay gets the
-- stored response from the claim.
-- Casts on every variable, so that it runs with -M prepared too.
\set a random(1, 1000000)
WITH c AS (SELECT * FROM syncguard.idem_claim('pay', 'k' || :client_id::text || '-' || :a::text || '-' || random()::text,
                                              jsonb_build_object('amount', :a::int),
                                              complete => jsonb_build_object('effect', nextval('effects_id_seq')))),
     e AS (INSERT INTO effects (id, k, amount)
           SELECT (c.response->>'effect')::bigint, c.token::text, :a::int FROM c WHERE c.outcome = 'claimed')
SELECT c.outcome, c.response FROM c;
