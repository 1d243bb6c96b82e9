-- pgbench, benches/sections/idempotency.sh: the local-work pattern of
-- benches/idem_syncguard.sql when the work is one SQL statement: claim, effect
-- and complete in a single statement, one round trip. The effect runs only
-- when the claim is won, and its id goes into the stored response.
-- Casts on every variable, so that it runs with -M prepared too.
\set a random(1, 1000000)
WITH c AS (SELECT * FROM syncguard.idem_claim('pay', 'k' || :client_id::text || '-' || :a::text || '-' || random()::text,
                                              jsonb_build_object('amount', :a::int))),
     e AS (INSERT INTO effects (k, amount) SELECT c.token::text, :a::int FROM c WHERE c.outcome = 'claimed' RETURNING id)
SELECT c.outcome, c.response,
       (SELECT syncguard.idem_complete(c.token, jsonb_build_object('effect', e.id)) FROM e)
  FROM c;
