-- pgbench, benches/sections/idempotency.sh: a copy of ../shared/bench/pgbench/idem_syncguard.sql.
\set a random(1, 1000000)
BEGIN;
SELECT token AS tok FROM syncguard.idem_claim('pay', 'k' || :client_id || '-' || :a || '-' || random()::text, jsonb_build_object('amount', :a)) \gset
INSERT INTO effects (k, amount) VALUES (':tok', :a);
SELECT syncguard.idem_complete(':tok', jsonb_build_object('ok', true));
COMMIT;
