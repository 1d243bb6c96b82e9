-- pgbench: the effect alone (the baseline of benches/sections/idempotency.sh).
\set k random(1, 9000000000000000000)
INSERT INTO idem_bench_effects (k, amount) VALUES (:k, 1);
