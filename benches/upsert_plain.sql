-- pgbench, benches/sections/citus.sh (the baseline): the upsert of
-- ../shared/bench/pgbench/upsert_concat.sql on upsert_bench (benches/upsert_setup.sql):
-- a random key, nine in ten existing and one in ten new, gets the patch built
-- in the statement, shallow-merged with `||`.
\set id case when random(1, 10) = 1 then 100000 + random(1, 1000000000) else random(1, 100000) end
\set v random(1, 1000000)
INSERT INTO upsert_bench AS t (id, data)
VALUES (:id, jsonb_build_object(
    'version', 2,
    's1', jsonb_build_object('g2', jsonb_build_object('f3', 'patched_' || :v::text)),
    's3', jsonb_build_object('g1', jsonb_build_object('f1', :v::int, 'fnew', true)),
    's4', jsonb_build_object('g3', jsonb_build_object('f2', 'z' || :v::text))))
ON CONFLICT (id) DO UPDATE SET data = t.data || excluded.data;
