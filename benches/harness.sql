-- Timing harness for benches/run.sh, loaded after the workload tables exist.
--
-- bench_contestants: what to time, as a SQL expression over a (the stored
-- document) and b (the patch); ord 1 is the reference for the ratios.
-- bench_run(runs) times every contestant on every pairs_* table:
--   SELECT count(*) FROM pairs_x WHERE (<expr>) IS NOT NULL
-- `runs` times, in this one session, after a warm-up, and keeps the median.
-- A contestant whose expression fails on a probe row (its function does not
-- exist yet, say) is recorded as skipped with the error message.

CREATE TABLE bench_contestants (ord int PRIMARY KEY, label text NOT NULL, expr text NOT NULL);

CREATE TABLE bench_workloads (tbl text PRIMARY KEY, rows bigint NOT NULL, label text NOT NULL);
DO $$
DECLARE t text; n bigint; kb numeric;
BEGIN
    FOR t IN SELECT relname FROM pg_class WHERE relname ~ '^pairs_[a-z]$' AND relkind = 'r' LOOP
        EXECUTE format('SELECT count(*), round(avg(length(a::text)) / 1024.0, 1) FROM %I', t) INTO n, kb;
        INSERT INTO bench_workloads VALUES (t, n, format('(%s) %s KB, %s rows', right(t, 1), kb, n));
    END LOOP;
END
$$;

CREATE TABLE bench_results (
    tbl        text NOT NULL,
    ord        int  NOT NULL,
    runs_ms    float8[],          -- every timed run
    median_ms  float8,
    skipped    text,              -- error message when the contestant could not run
    PRIMARY KEY (tbl, ord)
);

CREATE FUNCTION bench_run(runs int) RETURNS void LANGUAGE plpgsql AS $$
DECLARE
    w record; c record;
    q text; t0 timestamptz; times float8[];
BEGIN
    FOR w IN SELECT * FROM bench_workloads ORDER BY tbl LOOP
        -- Warm the buffer cache with the whole table, both sides detoasted.
        EXECUTE format('SELECT count(*) FROM %I WHERE (a || b) IS NOT NULL', w.tbl);
        FOR c IN SELECT * FROM bench_contestants ORDER BY ord LOOP
            q := format('SELECT count(*) FROM %I WHERE (%s) IS NOT NULL', w.tbl, c.expr);
            BEGIN
                -- Probe and warm-up: a few rows, untimed.
                EXECUTE format('SELECT count(*) FROM (SELECT * FROM %I LIMIT 100) s WHERE (%s) IS NOT NULL', w.tbl, c.expr);
            EXCEPTION WHEN OTHERS THEN
                INSERT INTO bench_results (tbl, ord, skipped) VALUES (w.tbl, c.ord, SQLERRM);
                RAISE NOTICE '% %: skipped (%)', w.tbl, c.label, SQLERRM;
                CONTINUE;
            END;
            times := '{}';
            FOR i IN 1..runs LOOP
                t0 := clock_timestamp();
                EXECUTE q;
                times := times || (extract(epoch FROM clock_timestamp() - t0) * 1000)::float8;
            END LOOP;
            INSERT INTO bench_results (tbl, ord, runs_ms, median_ms)
            SELECT w.tbl, c.ord, times, percentile_cont(0.5) WITHIN GROUP (ORDER BY x)
              FROM unnest(times) x;
            RAISE NOTICE '% %: median % ms', w.tbl, c.label,
                (SELECT round(median_ms::numeric, 1) FROM bench_results WHERE tbl = w.tbl AND ord = c.ord);
        END LOOP;
    END LOOP;
END
$$;

-- The markdown table: one row per contestant, one column per workload,
-- µs per merge and the ratio to contestant 1 in the same run.
CREATE VIEW bench_report AS
WITH cells AS (
    SELECT c.ord, c.label, w.tbl,
           CASE WHEN r.skipped IS NOT NULL OR r.median_ms IS NULL THEN 'skipped'
                ELSE format('%s µs (%s×)',
                            round((r.median_ms * 1000 / w.rows)::numeric, 2),
                            round((r.median_ms / nullif(ref.median_ms, 0))::numeric, 2))
           END AS cell
      FROM bench_contestants c
     CROSS JOIN bench_workloads w
      LEFT JOIN bench_results r   ON r.tbl = w.tbl AND r.ord = c.ord
      LEFT JOIN bench_results ref ON ref.tbl = w.tbl AND ref.ord = 1
)
SELECT 0 AS ord, '| contestant | ' || string_agg(label, ' | ' ORDER BY tbl) || ' |' AS line FROM bench_workloads
UNION ALL
SELECT 0.5, '|---|' || string_agg('---|', '' ORDER BY tbl) FROM bench_workloads
UNION ALL
-- (a label's own pipes, as in `a || b`, are escaped so the table keeps its columns)
SELECT ord, format('| %s | ', replace(label, '|', '\|')) || string_agg(cell, ' | ' ORDER BY tbl) || ' |'
  FROM cells GROUP BY ord, label
ORDER BY 1;
