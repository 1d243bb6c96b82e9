-- merge_upsert errors that carry the server's own text, which differs by
-- PostgreSQL version: expected/merge_upsert_server_text.out is 15's,
-- merge_upsert_server_text_1.out 17's and 18's ("Multidimensional arrays
-- must have sub-arrays with matching dimensions").

CREATE FUNCTION pg_temp.err(q text) RETURNS text LANGUAGE plpgsql AS $$
DECLARE st text; msg text; det text;
BEGIN
    EXECUTE q;
    RETURN 'no error';
EXCEPTION WHEN others THEN
    GET STACKED DIAGNOSTICS st = RETURNED_SQLSTATE, msg = MESSAGE_TEXT, det = PG_EXCEPTION_DETAIL;
    RETURN st || ': ' || msg || coalesce(' | detail: ' || nullif(det, ''), '');
END $$;

CREATE TABLE ragged (id int PRIMARY KEY, tags text[]);
-- a ragged array: the message names table and column, the detail is the server's
SELECT pg_temp.err($$SELECT syncguard.merge_upsert('ragged', '{"id": 1}', '{"tags": [[1], 2]}')$$);
DROP TABLE ragged;
