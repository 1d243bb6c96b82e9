-- pgbench: the same effect under an idempotency key, the local-work pattern:
-- claim, effect and complete in one transaction, in two round trips (the
-- application needs the claim's outcome before it does the work).
\set k random(1, 9000000000000000000)
BEGIN \; SELECT token FROM syncguard.idem_claim('bench', :k::text, '{"amount": 1}') \gset
INSERT INTO idem_bench_effects (k, amount) VALUES (:k, 1) \; SELECT syncguard.idem_complete(':token'::uuid, '{"ok": true}') \; COMMIT;
