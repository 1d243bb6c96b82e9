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
