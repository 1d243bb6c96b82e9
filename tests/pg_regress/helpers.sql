-- Helpers every regress test may use, created by scripts/pg_regress.sh in the
-- test database before the first test (tests run in sorted order, one psql
-- session each, so pg_temp functions would not outlive a file).
CREATE SCHEMA regress;
GRANT USAGE ON SCHEMA regress TO PUBLIC;

-- What a statement raises, all of it: "SQLSTATE: message | detail: … | hint: …"
-- (detail and hint when there are any), or 'no error'. Asserting the whole
-- report keeps the documented hints and details in the expected output.
CREATE FUNCTION regress.err(q text) RETURNS text LANGUAGE plpgsql AS $$
DECLARE st text; msg text; det text; hint text;
BEGIN
    EXECUTE q;
    RETURN 'no error';
EXCEPTION WHEN others THEN
    GET STACKED DIAGNOSTICS st = RETURNED_SQLSTATE, msg = MESSAGE_TEXT,
                            det = PG_EXCEPTION_DETAIL, hint = PG_EXCEPTION_HINT;
    RETURN st || ': ' || msg || coalesce(' | detail: ' || nullif(det, ''), '')
                              || coalesce(' | hint: ' || nullif(hint, ''), '');
END $$;

-- The same with every number after the SQLSTATE masked, for reports that
-- name ids or times, and a time's weekday and month ("Sun Dec" reads
-- "Day Mon"): the day a test runs must not change its output.
CREATE FUNCTION regress.err_masked(q text) RETURNS text LANGUAGE sql AS $$
    SELECT CASE WHEN e = 'no error' THEN e
                ELSE left(e, 5) || regexp_replace(regexp_replace(substr(e, 6), '[0-9]+', 'N', 'g'),
                    '\m(Mon|Tue|Wed|Thu|Fri|Sat|Sun) (Jan|Feb|Mar|Apr|May|Jun|Jul|Aug|Sep|Oct|Nov|Dec) N\M',
                    'Day Mon N', 'g') END
      FROM regress.err(q) AS e
$$;
