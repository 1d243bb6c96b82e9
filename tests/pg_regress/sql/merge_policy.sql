-- jsonb_deep_merge policies: array modes, null modes, path rules, errors.
SET search_path = syncguard, public;

-- arrays
SELECT mode, jsonb_deep_merge('{"a":[1,2,{"k":1}]}', '{"a":[2,3,{"k":1.0}]}', jsonb_build_object('arrays', mode))
  FROM unnest(ARRAY['replace','concat','union']) mode;
SELECT jsonb_deep_merge(
  '{"items":[{"sku":"A","qty":1,"note":"keep"},{"sku":"B","qty":2},"loose",{"qty":9}]}',
  '{"items":[{"sku":"B","qty":20},{"sku":"C","qty":3},{"sku":"A","qty":10},{"sku":"C","gift":true},{"nosku":1}]}',
  '{"arrays":"merge_by:sku"}');
-- array modes apply only when both sides are arrays
SELECT jsonb_deep_merge('{"a":[1]}', '{"a":2}', '{"arrays":"concat"}');

-- nulls
SELECT mode, jsonb_deep_merge('{"a":1,"b":{"c":2}}', '{"a":null,"b":{"c":null},"n":null}', jsonb_build_object('nulls', mode))
  FROM unnest(ARRAY['keep','overwrite','delete']) mode;
SELECT jsonb_deep_merge('{}', '{"x":{"y":null,"z":1}}', '{"nulls":"delete"}') AS inserted_subtree_cleaned,
       jsonb_deep_merge(NULL, '{"x":{"y":null,"z":1},"n":null}', '{"nulls":"delete"}') AS into_absent_document;

-- per-path value rules: remote inventory replaces, local price is kept,
-- the highest price seen wins, the earliest date wins
SELECT jsonb_pretty(jsonb_deep_merge(
  '{"inventory":{"A":5,"B":1},"price":{"list":10},"prices":{"eu":10,"us":12},"first_seen":"2024-01-02","tags":["x"]}',
  '{"inventory":{"A":7},"price":{"list":8},"prices":{"eu":9.5,"us":13,"uk":11},"first_seen":"2024-03-01","tags":["y","x"]}',
  '{"paths":{"inventory":"replace","price":"keep","prices.*":"max","first_seen":"min","tags":"union"}}'));
-- a path's array and null modes hold for its subtree; its value rule only at the path
SELECT jsonb_deep_merge('{"p":{"a":1,"l":[1]},"q":{"a":1,"l":[1]}}', '{"p":{"a":null,"l":[2]},"q":{"a":null,"l":[2]}}',
                        '{"paths":{"p":{"nulls":"delete","arrays":"concat"}}}');
-- the more specific path wins: exact key beats *, compared from the left
SELECT jsonb_deep_merge('{"a":{"b":5,"c":5},"x":{"b":5}}', '{"a":{"b":1,"c":1},"x":{"b":1}}',
                        '{"paths":{"a.*":"max","*.b":"min","a.b":"replace"}}');
-- path rules see through merge_by arrays
SELECT jsonb_deep_merge('{"items":[{"id":1,"qty":5}]}', '{"items":[{"id":1,"qty":3,"new":1}]}',
                        '{"paths":{"items":"merge_by:id","items.qty":"max"}}');
-- keys containing dots or stars are escaped with a backslash
SELECT jsonb_deep_merge('{"a.b":1,"*":1}', '{"a.b":0,"*":0}', '{"paths":{"a\\.b":"max","\\*":"keep"}}');
-- max/min compare numbers by value, strings by code point, booleans false<true; other pairs: the patch wins
SELECT jsonb_deep_merge('{"n":2,"s":"b","t":false,"m":1}', '{"n":10,"s":"a","t":true,"m":"x"}',
                        '{"paths":{"*":"max"}}');
-- an empty or null policy is the default
SELECT jsonb_deep_merge('{"a":[1]}', '{"a":[2]}', '{}') AS empty_policy,
       jsonb_deep_merge('{"a":[1]}', '{"a":[2]}', 'null') AS json_null_policy,
       jsonb_deep_merge('{"a":[1]}', '{"a":[2]}', NULL) AS sql_null_policy;

-- invalid policies: SQLSTATE 22023, naming the bad part and the valid choices
SELECT regress.err($$SELECT syncguard.jsonb_deep_merge('{}', '{}', '{"arrays":"zip"}')$$);
SELECT regress.err($$SELECT syncguard.jsonb_deep_merge('{}', '{}', '{"nulls":"drop"}')$$);
SELECT regress.err($$SELECT syncguard.jsonb_deep_merge('{}', '{}', '{"arrayz":"concat"}')$$);
SELECT regress.err($$SELECT syncguard.jsonb_deep_merge('{}', '{}', '{"paths":{"prices.*":"biggest"}}')$$);
SELECT regress.err($$SELECT syncguard.jsonb_deep_merge('{}', '{}', '{"paths":{"a..b":"max"}}')$$);
SELECT regress.err($$SELECT syncguard.jsonb_deep_merge('{}', '{}', '{"paths":{"a":{"value":"max","colour":1}}}')$$);
SELECT regress.err($$SELECT syncguard.jsonb_deep_merge('{}', '{}', '{"paths":["a"]}')$$);
SELECT regress.err($$SELECT syncguard.jsonb_deep_merge('{}', '{}', '{"arrays":"merge_by:"}')$$);
SELECT regress.err($$SELECT syncguard.jsonb_deep_merge('{}', '{}', '[1]')$$);
-- an invalid policy is an error even when an input is NULL
SELECT regress.err($$SELECT syncguard.jsonb_deep_merge(NULL, '{}', '{"arrays":"zip"}')$$);
