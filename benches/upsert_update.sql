-- pgbench, benches/sections/upsert.sh: a plain UPDATE that writes the whole
-- record of a random existing key, as an application has it (one field short).
-- The same script runs on the protected table and on the unprotected one.
\set id random(1, 100000)
\set v random(1, 1000000)
UPDATE upsert_bench SET data = upsert_bench_doc(:id, :v, true) WHERE id = :id;
