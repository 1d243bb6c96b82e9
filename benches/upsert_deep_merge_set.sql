-- pgbench, benches/sections/upsert.sh (reference): a copy of ../shared/bench/pgbench/upsert_deep_merge_set.sql.
-- upsert with syncguard.jsonb_deep_merge in SET; patch shaped like workload (b): 4 leaves at depth 3 + 1 top key
\set uid random(1, 100000)
\set v random(1, 1000000)
INSERT INTO profiles (user_id, data)
VALUES (:uid, jsonb_build_object(
    'version', 2,
    's1', jsonb_build_object('g2', jsonb_build_object('f3', 'patched_' || :v::text)),
    's3', jsonb_build_object('g1', jsonb_build_object('f1', :v::int, 'fnew', true)),
    's4', jsonb_build_object('g3', jsonb_build_object('f2', 'z' || :v::text))))
ON CONFLICT (user_id) DO UPDATE SET data = syncguard.jsonb_deep_merge(profiles.data, excluded.data);
