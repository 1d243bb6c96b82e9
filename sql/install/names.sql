-- Names of sync sources, queues and invariants (docs/privileges.md, "Many
-- roles in one database"). Loaded in the order of src/install_order.rs.
--
-- A name belongs to the role that created it: the primary keys hold
-- (name, owner_role), so two roles (two applications) each have their own
-- source or queue of the same name and never meet, and no role can take a
-- name before another. A role also reaches the sources and queues of the
-- roles it is a member of (row-level security), which is how a sync job and
-- its monitoring role share one. A name passed to a function therefore means
-- the caller's own, else the only one of that name it can see; when several
-- roles it can see have one, the call fails (42725) instead of guessing.

-- Which of `owners` (the owners of the rows named `name` that the caller
-- can see, in any order, repeats and NULLs allowed) the name means: the
-- caller's own, else the only one; NULL when there is none. `what` names the
-- kind in the message.
CREATE FUNCTION syncguard._name_owner(owners text[], name text, what text)
RETURNS text
LANGUAGE plpgsql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    roles text[] := ARRAY(SELECT DISTINCT o FROM unnest(owners) AS o WHERE o IS NOT NULL ORDER BY o);
BEGIN
    IF current_user::text = ANY (roles) THEN
        RETURN current_user;
    ELSIF cardinality(roles) <= 1 THEN
        RETURN roles[1];
    END IF;
    RAISE EXCEPTION USING ERRCODE = '42725',
        MESSAGE = format('%s %L is ambiguous: roles %s each have one of that name', what, name,
                         (SELECT string_agg(quote_ident(r), ', ') FROM unnest(roles) AS r)),
        HINT = 'SET ROLE to the owning role first.';
END
$$;
COMMENT ON FUNCTION syncguard._name_owner(text[], text, text) IS
    'internal: which owner''s sync source, queue or invariant a name means to the caller (its own, else the only one it sees)';
