-- pgbench, benches/sections/idempotency.sh: a copy of ../shared/bench/pgbench/idem_hand_written.sql.
-- claim (insert-or-nothing), effect, complete: two round trips as an app does it
\set a random(1, 1000000)
BEGIN;
INSERT INTO hand_keys (scope, key, fingerprint, status, locked_until)
  VALUES ('pay', 'k' || :client_id || '-' || :a || '-' || random()::text, md5(jsonb_build_object('amount', :a)::text), 'running', now() + interval '30 s')
  ON CONFLICT DO NOTHING RETURNING key AS hkey \gset
INSERT INTO effects (k, amount) VALUES (':hkey', :a);
UPDATE hand_keys SET status = 'succeeded', response = jsonb_build_object('ok', true), locked_until = NULL WHERE scope = 'pay' AND key = ':hkey';
COMMIT;
