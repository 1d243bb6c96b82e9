-- pgbench, benches/sections/upsert.sh: benches/upsert_merge.sql by a caller
-- that does not need the stored row merge_upsert returns: it asks only
-- whether a row is stored, so one boolean is sent back instead of the row,
-- as the baseline upsert (benches/upsert_plain.sql) sends back nothing.
\set id case when random(1, 10) = 1 then 100000 + random(1, 1000000000) else random(1, 100000) end
\set v random(1, 1000000)
SELECT syncguard.merge_upsert('upsert_bench', jsonb_build_object('id', :id), jsonb_build_object('data', upsert_bench_patch(:id, :v))) IS NOT NULL AS stored;
