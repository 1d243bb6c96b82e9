-- pgbench, benches/sections/upsert.sh: merge_upsert of a patch into the
-- stored document of a random key (nine in ten existing, one in ten new).
\set id case when random(1, 10) = 1 then 100000 + random(1, 1000000000) else random(1, 100000) end
\set v random(1, 1000000)
SELECT syncguard.merge_upsert('upsert_bench', jsonb_build_object('id', :id), jsonb_build_object('data', upsert_bench_patch(:id, :v)));
