-- pgbench: the effect in the same two-round-trip transaction shape as
-- benches/idempotency_claim.sql, without the key: separates the cost of the
-- protocol (extra round trip, BEGIN/COMMIT) from that of the key itself.
\set k random(1, 9000000000000000000)
BEGIN \; SELECT gen_random_uuid() AS token \gset
INSERT INTO idem_bench_effects (k, amount) VALUES (:k, 1) \; SELECT ':token'::uuid \; COMMIT;
