-- Baseline contestant: a deep merge written in plpgsql "as people write it":
-- loop over jsonb_each(b), recurse where both sides hold objects, otherwise
-- overwrite with jsonb_set. Copied from ../shared/bench/baseline_merges.sql
-- (that file also creates extensions this machine does not have).
-- Semantics: objects merge recursively; on a key conflict where either side is
-- not an object the right side wins; arrays are replaced.
CREATE OR REPLACE FUNCTION plpgsql_deep_merge(a jsonb, b jsonb)
RETURNS jsonb
LANGUAGE plpgsql IMMUTABLE PARALLEL SAFE AS $$
DECLARE
    k   text;
    v   jsonb;
    cur jsonb;
BEGIN
    IF a IS NULL THEN RETURN b; END IF;
    IF b IS NULL THEN RETURN a; END IF;
    IF jsonb_typeof(a) <> 'object' OR jsonb_typeof(b) <> 'object' THEN
        RETURN b;
    END IF;
    FOR k, v IN SELECT e.key, e.value FROM jsonb_each(b) AS e LOOP
        cur := a -> k;
        IF cur IS NOT NULL
           AND jsonb_typeof(cur) = 'object'
           AND jsonb_typeof(v) = 'object' THEN
            a := jsonb_set(a, ARRAY[k], plpgsql_deep_merge(cur, v));
        ELSE
            a := jsonb_set(a, ARRAY[k], v);   -- jsonb_set creates missing keys
        END IF;
    END LOOP;
    RETURN a;
END;
$$;
