-- syncguard walk-through, run by `make demo` on a throwaway server where
-- CREATE EXTENSION syncguard has just been done. Each capability adds a section.
\pset footer off
\pset null '(null)'

\echo
\echo '== 1. The extension is installed =='
\echo 'syncguard.version() is the loaded library; extversion is the SQL objects. They match.'
SELECT e.extversion,
       syncguard.version() AS library_version,
       n.nspname           AS schema
  FROM pg_extension e
  JOIN pg_namespace n ON n.oid = e.extnamespace
 WHERE e.extname = 'syncguard';

\echo
\echo '== 2. What it provides =='
SELECT p.oid::regprocedure                    AS function,
       pg_get_function_result(p.oid)          AS returns,
       CASE p.provolatile WHEN 'i' THEN 'immutable' WHEN 's' THEN 'stable' ELSE 'volatile' END AS volatility,
       coalesce(obj_description(p.oid, 'pg_proc'), '') AS description
  FROM pg_proc p
 WHERE p.pronamespace = 'syncguard'::regnamespace
 ORDER BY p.oid::regprocedure::text;

\echo
\echo '== 3. A partial sync can no longer delete data =='
CREATE TABLE profiles (id int PRIMARY KEY, external_data jsonb);
INSERT INTO profiles VALUES
  (1, '{"name": "Ada", "contact": {"email": "ada@example.com", "phone": "555-0100"}, "orders": 12, "score": 1.50}');
\echo 'The sync job fetched profile 1 again, but its contact sub-fetch timed out (null) and'
\echo 'the score endpoint was never called. Written with a plain UPDATE ... SET external_data = $fresh,'
\echo 'contact and score would be gone. Deep-merged into what is stored, nothing is lost:'
\set fresh '{"name": "Ada L.", "contact": null, "orders": 13}'
UPDATE profiles SET external_data = syncguard.jsonb_deep_merge(external_data, :'fresh')
 WHERE id = 1 RETURNING jsonb_pretty(external_data) AS stored_after_merge;
\echo 'Numbers are kept exactly as stored (1.50 stays 1.50); ||+ is the same merge as an operator:'
SELECT '{"a": {"b": 1}, "price": 1.50}'::jsonb OPERATOR(syncguard.||+) '{"a": {"c": 2}}' AS merged;

\echo
\echo '== 4. Policies: who owns which field =='
\echo 'The remote system owns inventory (replace), the local price is never overwritten (keep),'
\echo 'line items merge by sku, tags accumulate (union), and nulls delete:'
SELECT jsonb_pretty(syncguard.jsonb_deep_merge(
  '{"inventory": {"A": 5, "B": 1}, "price": 9.99, "tags": ["new"], "note": "x",
    "items": [{"sku": "A", "qty": 1, "gift": true}, {"sku": "B", "qty": 2}]}',
  '{"inventory": {"A": 7}, "price": 12.00, "tags": ["sale"], "note": null,
    "items": [{"sku": "B", "qty": 5}, {"sku": "C", "qty": 1}]}',
  '{"nulls": "delete",
    "paths": {"inventory": "replace", "price": "keep", "items": "merge_by:sku", "tags": "union"}}'
)) AS merged_with_policy;
\echo 'A mistyped policy is a clear error (SQLSTATE 22023) naming the bad part and the choices:'
\set VERBOSITY default
\set ON_ERROR_STOP off
SELECT syncguard.jsonb_deep_merge('{}', '{}', '{"arrays": "zip"}');
\set ON_ERROR_STOP on

\echo
\echo '== 5. RFC 7396 merge patches, diffs, and folding a history =='
SELECT syncguard.jsonb_merge_diff(
         '{"name": "Ada", "plan": {"tier": "pro", "seats": 5}, "trial": true}',
         '{"name": "Ada", "plan": {"tier": "pro", "seats": 8}}') AS patch_from_old_to_new;
SELECT syncguard.jsonb_merge_patch(
         '{"name": "Ada", "plan": {"tier": "pro", "seats": 5}, "trial": true}',
         '{"plan": {"seats": 8}, "trial": null}') AS patched;
\echo 'Webhook events for one entity, folded in arrival order:'
SELECT syncguard.jsonb_deep_merge_agg(payload ORDER BY received) AS current_state
  FROM (VALUES (1, '{"status": "created", "customer": {"id": 7}}'::jsonb),
               (2, '{"status": "paid", "amount": 42.00}'),
               (3, '{"customer": {"email": "c@example.com"}}')) AS events(received, payload);
\ir protect.sql
\ir idempotency.sql
\ir sync.sql
\ir invariants.sql
