//! The first statement of the install script: `CREATE EXTENSION` installs
//! only into a `syncguard` schema it made itself, or an empty one a
//! superuser made. The control file names the schema, and PostgreSQL takes
//! an existing schema of that name as it is: one that another role created
//! first would let that role rename it after the install and put its own
//! `syncguard.*` functions where the extension's callers look (the class of
//! CVE-2020-14350). Every name below is qualified: the script runs with the
//! schema first on its search_path.

use pgrx::prelude::*;

extension_sql!(
    r#"
DO $guard$
DECLARE
    schema_oid pg_catalog.oid;
    owner_name pg_catalog.name;
    owner_super boolean;
BEGIN
    SELECT n.oid, r.rolname, r.rolsuper INTO schema_oid, owner_name, owner_super
      FROM pg_catalog.pg_namespace n JOIN pg_catalog.pg_roles r ON r.oid = n.nspowner
     WHERE n.nspname = 'syncguard';
    IF NOT owner_super THEN
        RAISE EXCEPTION USING ERRCODE = '42501',
            MESSAGE = pg_catalog.format('schema "syncguard" belongs to role %s, not to a superuser', owner_name),
            DETAIL = 'The extension installs only into a schema that CREATE EXTENSION makes or that a superuser owns.',
            HINT = 'Drop or rename that schema (or make a superuser its owner), then run CREATE EXTENSION syncguard again.';
    END IF;
    IF EXISTS (SELECT FROM pg_catalog.pg_class WHERE relnamespace = schema_oid
               UNION ALL SELECT FROM pg_catalog.pg_proc WHERE pronamespace = schema_oid
               UNION ALL SELECT FROM pg_catalog.pg_type WHERE typnamespace = schema_oid
               UNION ALL SELECT FROM pg_catalog.pg_operator WHERE oprnamespace = schema_oid
               UNION ALL SELECT FROM pg_catalog.pg_collation WHERE collnamespace = schema_oid
               UNION ALL SELECT FROM pg_catalog.pg_conversion WHERE connamespace = schema_oid) THEN
        RAISE EXCEPTION USING ERRCODE = '42P06',
            MESSAGE = 'schema "syncguard" already holds objects',
            DETAIL = 'The extension installs only into an empty schema.',
            HINT = 'Move those objects elsewhere or drop the schema, then run CREATE EXTENSION syncguard again.';
    END IF;
END
$guard$;
"#,
    name = "schema_guard",
    bootstrap
);
