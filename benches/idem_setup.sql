-- benches/sections/idempotency.sh: a copy of ../shared/bench/pgbench/idem_setup.sql.
-- idempotency: a hand-written key table (insert-or-nothing claim, effect, completing UPDATE; the pattern apps write by hand) beside syncguard
DROP TABLE IF EXISTS effects, hand_keys;
CREATE TABLE effects (id bigserial PRIMARY KEY, k text NOT NULL, amount int NOT NULL, at timestamptz NOT NULL DEFAULT now());
CREATE TABLE hand_keys (
  scope text NOT NULL, key text NOT NULL, fingerprint text NOT NULL,
  status text NOT NULL, response jsonb, attempts int NOT NULL DEFAULT 1,
  locked_until timestamptz, created_at timestamptz NOT NULL DEFAULT now(),
  expires_at timestamptz NOT NULL DEFAULT now() + interval '24 hours',
  PRIMARY KEY (scope, key));
CREATE INDEX ON hand_keys (expires_at);
TRUNCATE syncguard.idempotency_keys;
VACUUM ANALYZE;
CHECKPOINT;
