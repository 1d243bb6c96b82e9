-- jsonb_deep_merge_agg, and the nesting-depth limit.
SET search_path = syncguard, public;

CREATE TABLE merge_events (entity int, seq int, doc jsonb);
INSERT INTO merge_events VALUES
  (1, 1, '{"name":"a","addr":{"city":"Oslo"}}'),
  (1, 2, '{"addr":{"zip":"0150"},"tags":["x"]}'),
  (1, 3, '{"name":"b","tags":["y"],"phone":null}'),
  (2, 1, '{"v":1}'),
  (2, 2, NULL),
  (2, 3, '{"v":{"nested":true}}');
-- order-sensitive: ORDER BY inside the aggregate
SELECT entity, jsonb_deep_merge_agg(doc ORDER BY seq) AS forward,
       jsonb_deep_merge_agg(doc ORDER BY seq DESC) AS backward
  FROM merge_events GROUP BY entity ORDER BY entity;
-- with a policy
SELECT jsonb_deep_merge_agg(doc, '{"arrays":"union","nulls":"overwrite"}' ORDER BY seq)
  FROM merge_events WHERE entity = 1;
-- equals folding jsonb_deep_merge left to right
WITH RECURSIVE fold AS (
    SELECT 1 AS seq, doc AS acc FROM merge_events WHERE entity = 1 AND seq = 1
    UNION ALL
    SELECT e.seq, jsonb_deep_merge(f.acc, e.doc) FROM fold f JOIN merge_events e ON e.entity = 1 AND e.seq = f.seq + 1)
SELECT (SELECT acc FROM fold ORDER BY seq DESC LIMIT 1)
     = (SELECT jsonb_deep_merge_agg(doc ORDER BY seq) FROM merge_events WHERE entity = 1) AS agg_equals_fold;
-- no rows: NULL
SELECT jsonb_deep_merge_agg(doc) IS NULL AS empty FROM merge_events WHERE false;
SELECT a.aggkind, a.aggcombinefn = 0 AS no_combine, p.proparallel
  FROM pg_aggregate a JOIN pg_proc p ON p.oid = a.aggfnoid
 WHERE p.proname = 'jsonb_deep_merge_agg' ORDER BY p.pronargs;
DROP TABLE merge_events;

CREATE FUNCTION pg_temp.nest(n int) RETURNS jsonb LANGUAGE sql AS
  $$ SELECT (repeat('{"a":', n) || '1' || repeat('}', n))::jsonb $$;
SHOW syncguard.max_merge_depth;
SELECT regress.err($$SELECT syncguard.jsonb_deep_merge(pg_temp.nest(1500), pg_temp.nest(1500))$$);
SELECT regress.err($$SELECT syncguard.jsonb_merge_patch(pg_temp.nest(1500), pg_temp.nest(1500))$$);
SELECT regress.err($$SELECT syncguard.jsonb_merge_diff(pg_temp.nest(1500), pg_temp.nest(1501))$$);
-- a subtree only one side has is copied, not walked: no limit applies
SELECT jsonb_deep_merge(pg_temp.nest(1500), '{"b":1}') ? 'b' AS copied_whole;
SET syncguard.max_merge_depth = 2000;
SELECT jsonb_deep_merge(pg_temp.nest(1500), pg_temp.nest(1500)) = pg_temp.nest(1500) AS within_raised_limit;
SET syncguard.max_merge_depth = 10;
SELECT regress.err($$SELECT syncguard.jsonb_deep_merge(pg_temp.nest(11), pg_temp.nest(11))$$);
SELECT regress.err($$SET syncguard.max_merge_depth = 0$$);
SELECT regress.err($$SET syncguard.max_merge_depth = 100001$$);
RESET syncguard.max_merge_depth;
-- with the limit raised as far as it goes, the server's stack check still
-- stops a walk before the stack runs out (two documents that differ only
-- at the bottom: the merge walks all the way down)
CREATE TEMP TABLE deep AS SELECT pg_temp.nest(1500) AS d, replace(pg_temp.nest(1500)::text, '1', '2')::jsonb AS d2;
SET syncguard.max_merge_depth = 100000;
SET max_stack_depth = '100kB';
SELECT regexp_replace(regress.err($$SELECT syncguard.jsonb_deep_merge(d, d2) FROM deep$$), ' \| hint.*', '') AS stack_guard;
RESET max_stack_depth;
SELECT syncguard.jsonb_deep_merge(d, d2) = d2 AS fine_with_default_stack FROM deep;
-- nest(10) is ten levels: within a limit of 10, nest(11) is not
SET syncguard.max_merge_depth = 10;
SELECT regress.err($$SELECT syncguard.jsonb_deep_merge(pg_temp.nest(10), pg_temp.nest(10))$$) AS ten;
RESET syncguard.max_merge_depth;
