-- pgbench: the local-work pattern when the work is one SQL statement: claim,
-- effect and complete in a single statement, one round trip. The effect runs
-- only when the claim is won, and its id goes into the stored response.
\set k random(1, 9000000000000000000)
WITH c AS (SELECT * FROM syncguard.idem_claim('bench', :k::text, '{"amount": 1}')),
     e AS (INSERT INTO idem_bench_effects (k, amount) SELECT :k, 1 FROM c WHERE c.outcome = 'claimed' RETURNING id)
SELECT c.outcome, c.response,
       (SELECT syncguard.idem_complete(c.token, jsonb_build_object('effect', e.id)) FROM e)
  FROM c;
