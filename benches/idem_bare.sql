-- pgbench, benches/sections/idempotency.sh: a copy of ../shared/bench/pgbench/idem_bare.sql.
\set a random(1, 1000000)
INSERT INTO effects (k, amount) VALUES ('bare', :a);
