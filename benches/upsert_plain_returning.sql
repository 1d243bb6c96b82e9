-- pgbench, benches/sections/upsert.sh: benches/upsert_plain.sql that also
-- returns the stored row, as merge_upsert does (benches/upsert_merge.sql).
\set id case when random(1, 10) = 1 then 100000 + random(1, 1000000000) else random(1, 100000) end
\set v random(1, 1000000)
INSERT INTO upsert_bench AS t (id, data) VALUES (:id, upsert_bench_patch(:id, :v))
    ON CONFLICT (id) DO UPDATE SET data = t.data || excluded.data
    RETURNING t.id, t.data;
