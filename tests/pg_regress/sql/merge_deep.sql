-- jsonb_deep_merge with the default policy, the ||+ operator, NULL handling
-- and exactness of values.
SET search_path = syncguard, public;

-- objects merge recursively, the patch wins, arrays replace
SELECT jsonb_deep_merge('{"a":{"b":1,"c":[1,2]},"d":1}', '{"a":{"c":[3],"e":2},"d":{"x":1}}');
-- a JSON null in the patch keeps the stored value; a new key stores null
SELECT jsonb_deep_merge('{"name":"Ann","phone":"555","addr":{"city":"Oslo"}}',
                        '{"name":"Anne","phone":null,"addr":{"city":null,"zip":"0150"},"fax":null}');
-- the failed-sub-fetch case: fields the patch lacks survive
SELECT jsonb_deep_merge('{"profile":{"bio":"x","avatar":"a.png"},"stats":{"followers":10}}',
                        '{"profile":{"bio":"y"}}');
-- SQL NULL means nothing known
SELECT jsonb_deep_merge(NULL, '{"a":1}') AS null_target,
       jsonb_deep_merge('{"a":1}', NULL) AS null_patch,
       jsonb_deep_merge(NULL, NULL) IS NULL AS both_null;
-- scalars and arrays at the top level
SELECT jsonb_deep_merge('{"a":1}', '[1,2]') AS obj_arr,
       jsonb_deep_merge('[1]', '{"a":1}') AS arr_obj,
       jsonb_deep_merge('1', '"x"') AS scalars,
       jsonb_deep_merge('{"a":1}', 'null') AS null_patch_root,
       jsonb_deep_merge('"s"', '{}') AS empty_patch_on_scalar;
-- empty containers
SELECT jsonb_deep_merge('{}', '{}') AS e1, jsonb_deep_merge('{"a":{}}', '{"a":[]}') AS e2,
       jsonb_deep_merge('{"a":[]}', '{"a":{}}') AS e3, jsonb_deep_merge('[]', '[]') AS e4;
-- numbers come out exactly as jsonb stores them
SELECT jsonb_deep_merge('{"a":1.10,"b":-0}', '{"c":12345678901234567890.123456789012345,"d":1e-400}');
SELECT jsonb_deep_merge('{"a":1.10}', '{"a":1.100}')->'a' AS patch_scale_wins;
SELECT (jsonb_deep_merge('{}', '{"d":1e-400}')->>'d') = ('1e-400'::numeric)::text AS tiny_exact;
-- strings with escapes and unicode, the empty key
SELECT jsonb_deep_merge('{"":"empty","q":"a\"b\\c\n","u":"\u00e9\u4e2d"}', '{"":"still","t":"\t"}');
-- duplicate keys in the input text: jsonb keeps the last one
SELECT jsonb_deep_merge('{"a":1,"a":{"x":1}}', '{"a":{"y":2},"b":1,"b":2}');
-- many keys (crossing jsonb's 32-entry offset stride) merge in key order
SELECT jsonb_deep_merge(
         (SELECT jsonb_object_agg('k' || i, i) FROM generate_series(1, 70) i),
         (SELECT jsonb_object_agg('k' || i, -i) FROM generate_series(60, 75) i))
     = ((SELECT jsonb_object_agg('k' || i, i) FROM generate_series(1, 59) i)
        || (SELECT jsonb_object_agg('k' || i, -i) FROM generate_series(60, 75) i)) AS wide_ok;
-- merging with an empty patch returns the stored document unchanged
SELECT jsonb_deep_merge(d, '{}') = d AS identity
  FROM (VALUES ('{"a":[1,{"b":null}],"c":"x"}'::jsonb), ('[1,2]'), ('3'), ('{}')) v(d);

-- the operator: same as the two-argument function
SELECT '{"a":{"b":1}}'::jsonb OPERATOR(syncguard.||+) '{"a":{"c":2}}' AS op;
SELECT '{"a":{"b":1}}'::jsonb ||+ '{"a":{"c":2}}' ||+ '{"a":{"b":3}}' AS chained;
SELECT NULL::jsonb ||+ '{"a":1}' AS null_left, '{"a":1}'::jsonb ||+ NULL AS null_right;

-- declared properties: immutable, parallel safe, not strict
SELECT p.proname, p.provolatile, p.proparallel, p.proisstrict
  FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace
 WHERE n.nspname = 'syncguard' AND p.proname LIKE 'jsonb_%'
 ORDER BY p.proname, p.pronargs;

-- usable in an expression index and a generated column (IMMUTABLE)
CREATE TABLE merge_docs (id int PRIMARY KEY, base jsonb, fresh jsonb,
                         merged jsonb GENERATED ALWAYS AS (syncguard.jsonb_deep_merge(base, fresh)) STORED);
INSERT INTO merge_docs (id, base, fresh) VALUES (1, '{"a":{"x":1}}', '{"a":{"y":2}}'), (2, NULL, '{"z":1}');
CREATE INDEX ON merge_docs ((syncguard.jsonb_deep_merge(base, fresh)->>'z'));
SELECT id, merged FROM merge_docs ORDER BY id;
DROP TABLE merge_docs;
