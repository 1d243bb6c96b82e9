-- merge_upsert with key and data built by jsonb_build_object in the
-- statement: the planner's rewrite into _merge_upsert_fields, and that it
-- does what the call through the two objects does.

CREATE TABLE mf_a (id int PRIMARY KEY, name text, doc jsonb, big bigint, n numeric, v varchar(3),
                   at timestamptz, u uuid, f float8, flag boolean);
CREATE TABLE mf_b (LIKE mf_a INCLUDING ALL);

-- Runs one call twice: as written on mf_a (rewritten), and on mf_b with key
-- and data built in subqueries, which the rewrite leaves alone. Prints
-- whether the first was rewritten, whether both gave the same (result or
-- error, the table's name aside) and what it was.
CREATE FUNCTION both_ways(key text, data text, policy text DEFAULT 'NULL')
RETURNS TABLE (rewritten boolean, same boolean, outcome text) LANGUAGE plpgsql AS $$
DECLARE
    q text := 'SELECT syncguard.merge_upsert(%L, %s, %s, %s)::text';
    direct text := format(q, 'mf_a', 'jsonb_build_object(' || key || ')', 'jsonb_build_object(' || data || ')', policy);
    objects text := format(q, 'mf_b', '(SELECT jsonb_build_object(' || key || '))',
                           '(SELECT jsonb_build_object(' || data || '))', policy);
    plan text := '';
    line text;
    r1 text; r2 text;
BEGIN
    FOR line IN EXECUTE 'EXPLAIN (VERBOSE, COSTS OFF) ' || direct LOOP
        plan := plan || line;
    END LOOP;
    BEGIN
        EXECUTE direct INTO r1;
    EXCEPTION WHEN others THEN
        r1 := regress.err(direct);
    END;
    BEGIN
        EXECUTE objects INTO r2;
    EXCEPTION WHEN others THEN
        r2 := regress.err(objects);
    END;
    RETURN QUERY SELECT plan LIKE '%syncguard._merge_upsert_fields(%', r1 IS NOT DISTINCT FROM replace(r2, 'mf_b', 'mf_a'), r1;
END $$;

-- What the plan holds: the names as arrays, the values as they are.
EXPLAIN (VERBOSE, COSTS OFF)
SELECT syncguard.merge_upsert('mf_a', jsonb_build_object('id', 1), jsonb_build_object('name', 'x', 'doc', '{"a": 1}'::jsonb));

-- Inserts and merges, every type passed as it is.
SELECT * FROM both_ways($$'id', 1$$, $$'name', 'Ada', 'doc', '{"a": {"b": 1}}'::jsonb, 'n', 1.50, 'flag', true$$);
SELECT * FROM both_ways($$'id', 1$$, $$'doc', jsonb_build_object('a', jsonb_build_object('c', 2)), 'name', NULL$$);
SELECT * FROM both_ways($$'id', 1$$, $$'at', '2026-01-02 03:04:05.678+01'::timestamptz, 'u', 'a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11'::uuid$$);
-- An int for a bigint column; a JSON null keeps the stored document.
SELECT * FROM both_ways($$'id', 1$$, $$'big', 7, 'doc', 'null'::jsonb$$);
-- A name twice keeps its last value; a key column in data with the same value.
SELECT * FROM both_ways($$'id', 2, 'id', 3$$, $$'name', 'first', 'name', 'last', 'id', 3$$);
-- Through the objects at run time: a value of another type than its column's,
-- a column with a typmod, a key column given twice.
SELECT * FROM both_ways($$'id', 4::bigint$$, $$'name', 42, 'doc', 'text'::text, 'big', 1.5$$);
SELECT * FROM both_ways($$'id', 4$$, $$'v', 'abc'::text$$);
SELECT * FROM both_ways($$'id', 4$$, $$'v', 'abcd'::text$$);
SELECT * FROM both_ways($$'id', 5$$, $$'id', 6$$);
-- Not rewritten: a value of a type outside the list, a name that is not a literal.
SELECT * FROM both_ways($$'id', 7$$, $$'f', 1.5::float8$$);
SELECT * FROM both_ways($$'id', 7$$, $$(SELECT 'name'), 'x'$$);
-- Errors as the objects give them.
SELECT * FROM both_ways($$'id', NULL::int$$, $$'name', 'x'$$);
SELECT * FROM both_ways($$'id', 'null'::jsonb$$, $$'name', 'x'$$);
SELECT * FROM both_ways($$'name', 'x'$$, $$'id', 8$$);
SELECT * FROM both_ways($$'id', 8$$, $$'nope', 1$$);
SELECT * FROM both_ways($$'id', 8$$, $$'big', 'many'$$);
SELECT * FROM both_ways($$'id', 8$$, $$'doc', '{"a": 1}'::jsonb$$, $$'{"arrays": "bogus"}'$$);
SELECT (SELECT count(*) FROM mf_a) AS rows_a, (SELECT count(*) FROM mf_b) AS rows_b,
       (SELECT array_agg(a ORDER BY a.id)::text FROM mf_a a) = (SELECT array_agg(b ORDER BY b.id)::text FROM mf_b b) AS same_rows;

-- A prepared statement keeps its rewritten plan: when a column changes type
-- its values go through the objects.
PREPARE mf_put(int, int) AS
    SELECT syncguard.merge_upsert('mf_a', jsonb_build_object('id', $1), jsonb_build_object('name', $2, 'big', $2));
EXECUTE mf_put(20, 1);
ALTER TABLE mf_a ALTER COLUMN big TYPE int;
EXECUTE mf_put(20, 2);
ALTER TABLE mf_a ALTER COLUMN big TYPE numeric;
EXECUTE mf_put(20, 3);
DEALLOCATE mf_put;

-- Called directly: the names and values must match.
SELECT regress.err($$SELECT syncguard._merge_upsert_fields('mf_a', '{id}', '{}', 1)$$);
SELECT regress.err($$SELECT syncguard._merge_upsert_fields('mf_a', '{id}', '{}', 1, 2)$$);
SELECT regress.err($$SELECT syncguard._merge_upsert_fields('mf_a', NULL, '{}', 1, NULL::jsonb)$$);
SELECT regress.err($$SELECT syncguard._merge_upsert_fields('mf_a', '{id,NULL}', '{}', 1, 2, NULL::jsonb)$$);
SELECT regress.err($$SELECT syncguard._merge_upsert_fields('mf_a', '{{id}}', '{}', 1, NULL::jsonb)$$);
SELECT regress.err($$SELECT syncguard._merge_upsert_fields('mf_a', '{id}', '{}', VARIADIC ARRAY[1])$$);
SELECT regress.err($$SELECT syncguard._merge_upsert_fields(NULL, '{id}', '{}', 1, NULL::jsonb)$$);
SELECT syncguard._merge_upsert_fields('mf_a', '{id}', '{name}', 30, 'direct', NULL::jsonb);

-- A role that may not execute merge_upsert may not run it rewritten either.
CREATE ROLE mf_writer NOSUPERUSER;
GRANT USAGE ON SCHEMA syncguard TO mf_writer;
GRANT ALL ON mf_a TO mf_writer;
SET ROLE mf_writer;
SELECT syncguard.merge_upsert('mf_a', jsonb_build_object('id', 40), jsonb_build_object('name', 'allowed')) ->> 'name' AS name;
RESET ROLE;
REVOKE EXECUTE ON FUNCTION syncguard.merge_upsert(regclass, jsonb, jsonb, jsonb) FROM PUBLIC;
SET ROLE mf_writer;
SELECT regress.err($$SELECT syncguard.merge_upsert('mf_a', jsonb_build_object('id', 41), jsonb_build_object('name', 'refused'))$$);
SELECT regress.err($$SELECT syncguard._merge_upsert_fields('mf_a', '{id}', '{name}', 41, 'refused', NULL::jsonb)$$);
RESET ROLE;
GRANT EXECUTE ON FUNCTION syncguard.merge_upsert(regclass, jsonb, jsonb, jsonb) TO PUBLIC;
SELECT count(*) AS refused_rows FROM mf_a WHERE id = 41;
REVOKE ALL ON mf_a FROM mf_writer;
REVOKE USAGE ON SCHEMA syncguard FROM mf_writer;
DROP ROLE mf_writer;

-- The returned row of a table of integers, booleans, text and jsonb only is
-- written by merge_upsert itself: it equals to_jsonb of the stored row.
CREATE DOMAIN mf_doc AS jsonb CHECK (VALUE IS NOT NULL);
CREATE TABLE mf_raw (id int8 PRIMARY KEY, s int2, i int4, b boolean, t text, v varchar, j jsonb, d mf_doc);
CREATE TEMP TABLE mf_returned AS
SELECT r FROM (VALUES
    (syncguard.merge_upsert('mf_raw', '{"id": -9223372036854775808}',
        '{"s": -32768, "i": 2147483647, "b": false, "t": "ünïcødé \"q\"", "v": "", "j": [1, "x", {"k": null}], "d": 0}')),
    (syncguard.merge_upsert('mf_raw', '{"id": 9223372036854775807}', '{"d": "s", "j": "scalar"}')),
    (syncguard.merge_upsert('mf_raw', jsonb_build_object('id', 0), jsonb_build_object('b', true, 'i', 0, 'd', '{}'::jsonb, 'j', 'null'::jsonb)))
  ) AS c(r);
SELECT r = to_jsonb(x) AS same_as_to_jsonb, r::text = to_jsonb(x)::text AS same_text, r
  FROM mf_returned JOIN mf_raw x ON x.id = (r ->> 'id')::int8 ORDER BY x.id;
