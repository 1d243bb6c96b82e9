-- pgbench, benches/sections/upsert.sh: a copy of ../shared/bench/pgbench/upsert_merge_upsert.sql.
-- syncguard.merge_upsert (returns the stored row; asked only whether stored); patch shaped like workload (b)
\set uid random(1, 100000)
\set v random(1, 1000000)
SELECT syncguard.merge_upsert('profiles', jsonb_build_object('user_id', :uid::int), jsonb_build_object('data', jsonb_build_object(
    'version', 2,
    's1', jsonb_build_object('g2', jsonb_build_object('f3', 'patched_' || :v::text)),
    's3', jsonb_build_object('g1', jsonb_build_object('f1', :v::int, 'fnew', true)),
    's4', jsonb_build_object('g3', jsonb_build_object('f2', 'z' || :v::text))))) IS NOT NULL;
