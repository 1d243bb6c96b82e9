-- Per-call leak check: 1,000,000 calls of each merge function in one
-- backend, reading the backend's resident set size after every 100,000.
-- Flat RSS after the first batch means nothing accumulates per call.
CREATE OR REPLACE FUNCTION bench_rss_kb() RETURNS bigint LANGUAGE sql AS $$
    SELECT (regexp_match(pg_read_file('/proc/self/status'), 'RssAnon:\s+(\d+) kB'))[1]::bigint
$$;

CREATE OR REPLACE FUNCTION bench_memory(batches int)
RETURNS TABLE (batch int, calls bigint, rss_kb bigint) LANGUAGE plpgsql AS $$
#variable_conflict use_column
DECLARE n bigint;
BEGIN
    FOR i IN 1..batches LOOP
        -- pairs_b has 100,000 rows: three functions, 100,000 calls each
        SELECT count(syncguard.jsonb_deep_merge(a, b))
             + count(syncguard.jsonb_deep_merge(a, b, '{"arrays":"union","paths":{"s1.*":"max"}}'))
             + count(syncguard.jsonb_merge_patch(a, b))
          INTO n FROM pairs_b;
        batch := i; calls := n; rss_kb := bench_rss_kb();
        RETURN NEXT;
    END LOOP;
END $$;
