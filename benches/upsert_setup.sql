-- The table of benches/sections/citus.sh (merge upserts on Citus): documents
-- of the shape of workload (b) of ../shared/bench/workloads.sql, about 1 KB:
--   {"id", "name", "version", "s1".."s4": {"g1".."g3": {"f1".."f4"}}}
-- 48 leaves, typed by leaf as there: f1 int, f2 string, f3 bool, f4 float.
-- These functions only generate the rows every run starts from; the measured
-- statements (benches/upsert_plain.sql and its siblings) build their patch
-- with jsonb_build_object, as ../shared/bench/pgbench/upsert_concat.sql does.
-- The pieces are SQL functions of one expression, STABLE like
-- jsonb_build_object so that the planner inlines them.

-- One group {"f1".."f4"}.
CREATE OR REPLACE FUNCTION upsert_bench_group(i bigint, v int, j int, k int)
RETURNS jsonb LANGUAGE sql STABLE PARALLEL SAFE AS $$
    SELECT jsonb_build_object(
        'f1', i * 7 + j * 31 + k * 131 + v,
        'f2', 'u' || i || '/' || (j * 10 + k) || '/' || v,
        'f3', (i + j + k + v) % 2 = 0,
        'f4', (i % 1000) * 0.25::float8 + k + v)
$$;

-- One section {"g1".."g3"}; partial: g3 without f4.
CREATE OR REPLACE FUNCTION upsert_bench_section(i bigint, v int, j int, partial boolean)
RETURNS jsonb LANGUAGE sql STABLE PARALLEL SAFE AS $$
    SELECT jsonb_build_object(
        'g1', upsert_bench_group(i, v, j, 1),
        'g2', upsert_bench_group(i, v, j, 2),
        'g3', CASE WHEN partial THEN upsert_bench_group(i, v, j, 3) - 'f4'
                   ELSE upsert_bench_group(i, v, j, 3) END)
$$;

-- The stored document (v = 0 at load time).
CREATE OR REPLACE FUNCTION upsert_bench_doc(i bigint, v int)
RETURNS jsonb LANGUAGE plpgsql STABLE PARALLEL SAFE AS $$
BEGIN
    RETURN jsonb_build_object(
        'id', i, 'name', 'user_' || i, 'version', v,
        's1', upsert_bench_section(i, v, 1, false),
        's2', upsert_bench_section(i, v, 2, false),
        's3', upsert_bench_section(i, v, 3, false),
        's4', upsert_bench_section(i, v, 4, false));
END
$$;

-- The rows every run starts from, generated once (about 2 s), and the table
-- every run writes, loaded afresh from them before each run (TRUNCATE, INSERT
-- … SELECT, VACUUM ANALYZE: about a second). No autovacuum: the section
-- vacuums after each load, and an autovacuum starting in the middle of one
-- run and not another is noise.
DROP TABLE IF EXISTS upsert_bench_seed, upsert_bench;
CREATE TABLE upsert_bench_seed (id bigint NOT NULL, data jsonb NOT NULL)
    WITH (autovacuum_enabled = off);
INSERT INTO upsert_bench_seed (id, data)
SELECT i, upsert_bench_doc(i, 0) FROM generate_series(1, 100000) i;
VACUUM ANALYZE upsert_bench_seed;
CREATE TABLE upsert_bench (id bigint PRIMARY KEY, data jsonb NOT NULL)
    WITH (autovacuum_enabled = off);
