-- pgbench, benches/sections/citus.sh: benches/upsert_merge_discard.sql inside
-- an explicit transaction, as benches/upsert_plain_txn.sql.
\set id case when random(1, 10) = 1 then 100000 + random(1, 1000000000) else random(1, 100000) end
\set v random(1, 1000000)
BEGIN;
SELECT syncguard.merge_upsert('upsert_bench', jsonb_build_object('id', :id), jsonb_build_object('data', upsert_bench_patch(:id, :v))) IS NOT NULL AS stored;
COMMIT;
