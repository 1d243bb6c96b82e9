-- What belongs to the schema as a whole, not to one capability. Loaded first
-- (src/install_order.rs).

-- The schema comes from the control file and belongs to the superuser who ran
-- CREATE EXTENSION; other roles need USAGE to reach any function in it.
GRANT USAGE ON SCHEMA syncguard TO PUBLIC;

-- has_privs_of (src/roles.rs) decides the rows shared by role membership.
COMMENT ON FUNCTION syncguard.has_privs_of(text) IS
    'whether the current user has the privileges of the named role (false for a role that no longer exists); the row-level security policies of the sync and queue tables';
