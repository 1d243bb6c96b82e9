-- The extension as a whole: version, schema, catalog hygiene.
-- pg_regress has already run CREATE EXTENSION syncguard (--load-extension).

-- The loaded library and the installed SQL objects come from the same build.
SELECT syncguard.version() = extversion AS library_matches_sql,
       syncguard.version() ~ '^\d+\.\d+\.\d+' AS looks_like_semver
  FROM pg_extension WHERE extname = 'syncguard';

-- Control file: fixed schema syncguard, not relocatable.
SELECT e.extname, n.nspname AS schema, e.extrelocatable
  FROM pg_extension e JOIN pg_namespace n ON n.oid = e.extnamespace
 WHERE e.extname = 'syncguard';

-- Every function the extension creates lives in schema syncguard (expect none listed).
SELECT p.oid::regprocedure AS outside_schema_syncguard
  FROM pg_depend d
  JOIN pg_proc p ON d.classid = 'pg_proc'::regclass AND p.oid = d.objid
 WHERE d.refclassid = 'pg_extension'::regclass
   AND d.refobjid = (SELECT oid FROM pg_extension WHERE extname = 'syncguard')
   AND d.deptype = 'e'
   AND p.pronamespace <> 'syncguard'::regnamespace;

-- ... and it creates at least one.
SELECT count(*) > 0 AS has_functions
  FROM pg_proc WHERE pronamespace = 'syncguard'::regnamespace;

-- version() is immutable and parallel safe, as declared.
SELECT provolatile, proparallel
  FROM pg_proc WHERE oid = 'syncguard.version()'::regprocedure;

-- DROP EXTENSION removes everything it created; the install script runs
-- cleanly a second time.
DROP EXTENSION syncguard;
SELECT count(*) AS leftover_objects
  FROM (SELECT pronamespace AS ns FROM pg_proc
        UNION ALL SELECT relnamespace FROM pg_class
        UNION ALL SELECT typnamespace FROM pg_type
        UNION ALL SELECT oprnamespace FROM pg_operator) o
  JOIN pg_namespace n ON n.oid = o.ns
 WHERE n.nspname = 'syncguard';
CREATE EXTENSION syncguard;
SELECT syncguard.version() = extversion AS library_matches_sql
  FROM pg_extension WHERE extname = 'syncguard';
