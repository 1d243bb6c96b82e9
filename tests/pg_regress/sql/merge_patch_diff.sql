-- jsonb_merge_patch (RFC 7396) and jsonb_merge_diff.
SET search_path = syncguard, public;

-- RFC 7396 Appendix A: every example
SELECT t AS target, p AS patch, jsonb_merge_patch(t::jsonb, p::jsonb) AS result, r::jsonb AS expected,
       jsonb_merge_patch(t::jsonb, p::jsonb) = r::jsonb AS ok
  FROM (VALUES
    ('{"a":"b"}',            '{"a":"c"}',                 '{"a":"c"}'),
    ('{"a":"b"}',            '{"b":"c"}',                 '{"a":"b","b":"c"}'),
    ('{"a":"b"}',            '{"a":null}',                '{}'),
    ('{"a":"b","b":"c"}',    '{"a":null}',                '{"b":"c"}'),
    ('{"a":["b"]}',          '{"a":"c"}',                 '{"a":"c"}'),
    ('{"a":"c"}',            '{"a":["b"]}',               '{"a":["b"]}'),
    ('{"a":{"b":"c"}}',      '{"a":{"b":"d","c":null}}',  '{"a":{"b":"d"}}'),
    ('{"a":[{"b":"c"}]}',    '{"a":[1]}',                 '{"a":[1]}'),
    ('["a","b"]',            '["c","d"]',                 '["c","d"]'),
    ('{"a":"b"}',            '["c"]',                     '["c"]'),
    ('{"a":"foo"}',          'null',                      'null'),
    ('{"a":"foo"}',          '"bar"',                     '"bar"'),
    ('{"e":null}',           '{"a":1}',                   '{"e":null,"a":1}'),
    ('[1,2]',                '{"a":"b","c":null}',        '{"a":"b"}'),
    ('{}',                   '{"a":{"bb":{"ccc":null}}}', '{"a":{"bb":{}}}')
  ) v(t, p, r);
-- RFC 7396 section 3
SELECT jsonb_pretty(jsonb_merge_patch(
  '{"title":"Goodbye!","author":{"givenName":"John","familyName":"Doe"},"tags":["example","sample"],"content":"This will be unchanged"}',
  '{"title":"Hello!","phoneNumber":"+01-123-456-7890","author":{"familyName":null},"tags":["example"]}'));
-- NULL handling: a NULL target is an absent document (the patch's nulls drop out)
SELECT jsonb_merge_patch(NULL, '{"a":1,"b":null}') AS null_target,
       jsonb_merge_patch('{"a":1}', NULL) AS null_patch,
       jsonb_merge_patch(NULL, NULL) IS NULL AS both_null;
-- exact numerics
SELECT jsonb_merge_patch('{"a":1.10}', '{"b":12345678901234567890.123456789012345,"c":-0}');

-- jsonb_merge_diff: the patch that turns old into new
SELECT jsonb_merge_diff('{"a":1,"b":{"c":1,"d":2},"e":[1],"gone":true}', '{"a":1,"b":{"c":2,"d":2},"e":[1,2],"f":"new"}') AS diff;
SELECT jsonb_merge_diff('{"a":1}', '{"a":1}') AS unchanged,
       jsonb_merge_diff('{"n":1.0}', '{"n":1.00}') AS scale_change,
       jsonb_merge_diff('[1]', '{"a":1}') AS non_object_old,
       jsonb_merge_diff('{"a":1}', '[2]') AS non_object_new;
SELECT jsonb_merge_diff(NULL, '{"a":1}') AS null_old, jsonb_merge_diff('{"a":1}', NULL) IS NULL AS null_new;
-- round trip: merge_patch(old, diff(old, new)) = new for documents without nulls
SELECT bool_and(jsonb_merge_patch(o, jsonb_merge_diff(o, n))::text = n::text) AS round_trip
  FROM (VALUES
    ('{"a":{"b":{"c":1}},"x":[1,2]}'::jsonb, '{"a":{"b":{"d":2}},"x":[2]}'::jsonb),
    ('{"k":"v"}', '{}'),
    ('{}', '{"deep":{"er":{"est":1.50}}}'),
    ('{"a":1}', '"scalar"')
  ) v(o, n);
-- what a merge patch cannot express: a null stored as a value becomes a deletion
SELECT jsonb_merge_diff('{"a":1}', '{"a":null}') AS diff,
       jsonb_merge_patch('{"a":1}', jsonb_merge_diff('{"a":1}', '{"a":null}')) AS patched;
