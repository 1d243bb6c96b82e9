-- pgbench, benches/sections/citus.sh: benches/upsert_merge_discard.sql inside
-- an explicit transaction, as benches/upsert_plain_txn.sql.
\set id case when random(1, 10) = 1 then 100000 + random(1, 1000000000) else random(1, 100000) end
\set v random(1, 1000000)
BEGIN;
SELECT syncguard.merge_upsert('upsert_bench', jsonb_build_object('id', :id), jsonb_build_object('data', jsonb_build_object(
    'version', 2,
    's1', jsonb_build_object('g2', jsonb_build_object('f3', 'patched_' || :v::text)),
    's3', jsonb_build_object('g1', jsonb_build_object('f1', :v::int, 'fnew', true)),
    's4', jsonb_build_object('g3', jsonb_build_object('f2', 'z' || :v::text))))) IS NOT NULL AS stored;
COMMIT;
