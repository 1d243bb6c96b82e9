-- Invariant checks: the billing example end to end (grace period, episodes
-- opening, continuing, resolving and reopening), validation errors,
-- redefinition, errored and timed-out checks, audit(), privileges, drop.

-- Products cancelled more than 15 minutes ago that we are still billing for.
CREATE TABLE inv_products (id int PRIMARY KEY, name text, cancelled_at timestamptz, billing_active boolean NOT NULL);
INSERT INTO inv_products VALUES
    (1, 'active',                NULL,                           true),
    (2, 'cancelled 10 min ago',  now() - interval '10 minutes',  true),
    (3, 'cancelled 20 min ago',  now() - interval '20 minutes',  true),
    (4, 'cancelled, not billed', now() - interval '20 minutes',  false);

SELECT syncguard.define_invariant(
    'cancelled_still_billed',
    $$SELECT id AS entity, cancelled_at AS since, name
        FROM inv_products
       WHERE cancelled_at IS NOT NULL AND billing_active;$$,
    grace => '15 minutes',
    severity => 'critical',
    remediation => 'Stop the subscription in the billing provider, then set billing_active = false.',
    description => 'cancelled products still billed');
-- The view applies the grace period: 10 minutes ago is not a violation yet, 20 is.
SELECT entity, name FROM syncguard_invariants.cancelled_still_billed ORDER BY entity;
SELECT name, owner_role = current_user AS mine, grace, severity, schedule, statement_timeout, enabled, query
  FROM syncguard.invariants;

-- First check: one new episode.
SELECT invariant, status, violations, new_episodes, resolved, error FROM syncguard.check_invariants();
SELECT entity, count, resolved_at IS NULL AS open, since < now() - interval '19 minutes' AS since_20_min_ago
  FROM syncguard.violations ORDER BY id;
-- Still violating: the same episode, seen twice.
SELECT invariant, status, violations, new_episodes, resolved FROM syncguard.check_invariants();
SELECT entity, count, resolved_at IS NULL AS open, last_seen > first_seen AS seen_again FROM syncguard.violations ORDER BY id;
-- Product 2 passes its grace period (its cancellation moved back): a second episode.
UPDATE inv_products SET cancelled_at = now() - interval '16 minutes' WHERE id = 2;
SELECT invariant, status, violations, new_episodes, resolved FROM syncguard.check_invariants('cancelled_still_billed');
-- Billing stops for product 3: its episode is resolved.
UPDATE inv_products SET billing_active = false WHERE id = 3;
SELECT invariant, status, violations, new_episodes, resolved FROM syncguard.check_invariants();
SELECT entity, count, resolved_at IS NULL AS open FROM syncguard.violations ORDER BY id;
-- Billing restarts by mistake: a new episode for product 3, the old one stays resolved.
UPDATE inv_products SET billing_active = true WHERE id = 3;
SELECT invariant, status, violations, new_episodes, resolved FROM syncguard.check_invariants();
SELECT entity, count, resolved_at IS NULL AS open FROM syncguard.violations ORDER BY id;
-- Everything fixed: every episode resolved, the check is ok.
UPDATE inv_products SET billing_active = false;
SELECT invariant, status, violations, new_episodes, resolved FROM syncguard.check_invariants();
SELECT count(*) FILTER (WHERE resolved_at IS NULL) AS open, count(*) AS episodes FROM syncguard.violations;
SELECT invariant, status, violations, new_episodes, resolved, sqlstate, finished_at >= started_at AS timed
  FROM syncguard.invariant_runs ORDER BY id;

-- Validation: every bad definition is refused and leaves nothing behind.
SELECT regress.err($$SELECT syncguard.define_invariant(NULL, 'SELECT 1')$$);
SELECT regress.err($$SELECT syncguard.define_invariant('writes', 'WITH w AS (DELETE FROM syncguard.invariants RETURNING name) SELECT name AS entity, now() AS since FROM w')$$);
SELECT regress.err($$SELECT syncguard.define_invariant('', 'SELECT 1 AS entity, now() AS since')$$);
SELECT regress.err($$SELECT syncguard.define_invariant(repeat('x', 64), 'SELECT 1 AS entity, now() AS since')$$);
SELECT regress.err($$SELECT syncguard.define_invariant('bad', 'SELECT 1 AS entity, now() AS since', severity => 'urgent')$$);
SELECT regress.err($$SELECT syncguard.define_invariant('bad', 'SELECT 1 AS entity, now() AS since', grace => '-1 minute')$$);
SELECT regress.err($$SELECT syncguard.define_invariant('bad', 'SELECT 1 AS entity, now() AS since', schedule => '0')$$);
SELECT regress.err($$SELECT syncguard.define_invariant('bad', 'SELECT 1 AS entity, now() AS since; DROP TABLE inv_products')$$);
SELECT regress.err($$SELECT syncguard.define_invariant('bad', 'DELETE FROM inv_products RETURNING id AS entity, cancelled_at AS since')$$);
SELECT regress.err($$SELECT syncguard.define_invariant('bad', 'SELEC id AS entity FROM inv_products')$$);
SELECT regress.err($$SELECT syncguard.define_invariant('bad', '')$$);
SELECT regress.err($$SELECT syncguard.define_invariant('bad', 'SELECT id AS entity, cancelled_at AS since FROM inv_no_such_table')$$);
SELECT regress.err($$SELECT syncguard.define_invariant('bad', 'SELECT id, cancelled_at AS since FROM inv_products')$$);
SELECT regress.err($$SELECT syncguard.define_invariant('bad', 'SELECT id AS entity FROM inv_products')$$);
SELECT regress.err($$SELECT syncguard.define_invariant('bad', 'SELECT id AS entity, name AS since FROM inv_products')$$);
SELECT regress.err($$SELECT syncguard.define_invariant('bad', 'SELECT id AS entity, cancelled_at::timestamp AS since FROM inv_products')$$);
SELECT regress.err($$SELECT syncguard.define_invariant('bad', 'SELECT id AS entity, cancelled_at AS since INTO inv_copy FROM inv_products')$$);
-- Comments around the query and a trailing semicolon are fine; the statement is kept.
SELECT syncguard.define_invariant('commented', E'-- leading\nSELECT 1 AS entity, now() - interval ''1 day'' AS since -- trailing\n;');
SELECT query, (SELECT count(*) FROM syncguard_invariants.commented) AS violations FROM syncguard.invariants WHERE name = 'commented';
SELECT syncguard.drop_invariant('commented');
SELECT count(*) AS invariants FROM syncguard.invariants;
SELECT count(*) AS views FROM pg_class WHERE relnamespace = 'syncguard_invariants'::regnamespace;

-- Redefining replaces the query and settings, keeps the history; the view follows.
SELECT syncguard.define_invariant(
    'cancelled_still_billed',
    'SELECT id AS entity, cancelled_at AS since FROM inv_products WHERE cancelled_at IS NOT NULL AND billing_active',
    grace => '5 minutes', severity => 'critical',
    remediation => 'Stop the subscription in the billing provider, then set billing_active = false.');
SELECT grace, description IS NULL AS no_description, updated_at >= created_at AS updated FROM syncguard.invariants;
UPDATE inv_products SET billing_active = true WHERE id IN (2, 3);
SELECT entity FROM syncguard_invariants.cancelled_still_billed ORDER BY entity;
SELECT count(*) AS episodes_kept FROM syncguard.violations;

-- A broken check and a slow check are recorded as errored; the others still run.
SELECT syncguard.define_invariant('divides_by_zero',
    'SELECT (1 / (count(*) - count(*)))::text AS entity, now() - interval ''1 day'' AS since FROM inv_products',
    severity => 'warning');
SELECT syncguard.define_invariant('too_slow',
    'SELECT ''x'' AS entity, now() - interval ''1 day'' AS since FROM pg_sleep(5)',
    statement_timeout => '100 milliseconds', severity => 'info');
SELECT syncguard.define_invariant('all_good',
    'SELECT id AS entity, cancelled_at AS since FROM inv_products WHERE id < 0',
    enabled => false);
SELECT invariant, status, violations, new_episodes, resolved, error FROM syncguard.check_invariants();
SELECT invariant, status, sqlstate, error FROM syncguard.invariant_runs WHERE status = 'errored' ORDER BY id;
-- A disabled invariant runs when named.
SELECT invariant, status FROM syncguard.check_invariants('all_good');
SELECT regress.err($$SELECT * FROM syncguard.check_invariants('no_such_invariant')$$);
-- The caller's own statement timeout is back in force after the checks.
SET statement_timeout = '150ms';
SELECT invariant, status FROM syncguard.check_invariants('too_slow');
SELECT pg_sleep(1);
RESET statement_timeout;

-- audit(): worst first, with the remediation text.
SELECT invariant, status, severity, open_violations, oldest_violation_age > interval '15 minutes' AS old,
       last_run IS NOT NULL AS ran, last_error, remediation
  FROM syncguard.audit();
-- Due: never run, or last run a schedule ago.
UPDATE syncguard.invariants SET last_run_at = now() - interval '6 minutes' WHERE name = 'divides_by_zero';
SELECT * FROM syncguard.due_invariants();

-- Privileges: defining takes CREATE on schema syncguard_invariants; a role
-- sees its own invariants; its checks run as itself whoever runs them.
CREATE ROLE inv_role;
CREATE SCHEMA inv_own AUTHORIZATION inv_role;
CREATE TABLE inv_secret (id int, at timestamptz);
INSERT INTO inv_secret VALUES (1, now() - interval '1 day');
GRANT SELECT ON inv_products TO inv_role;
SET ROLE inv_role;
SELECT regress.err($$SELECT syncguard.define_invariant('role_inv', 'SELECT id AS entity, cancelled_at AS since FROM public.inv_products')$$);
RESET ROLE;
GRANT CREATE ON SCHEMA syncguard_invariants TO inv_role;
SET ROLE inv_role;
SELECT syncguard.define_invariant('role_inv', 'SELECT id AS entity, cancelled_at AS since FROM public.inv_products WHERE billing_active AND cancelled_at IS NOT NULL');
-- A view over a table the role cannot read is created (privileges are checked when it runs) ...
SELECT syncguard.define_invariant('role_secret', 'SELECT id AS entity, at AS since FROM public.inv_secret');
CREATE FUNCTION inv_own.inv_escape() RETURNS timestamptz LANGUAGE sql AS
    $$SELECT set_config('role', 'none', true)::text::timestamptz$$;
SELECT syncguard.define_invariant('role_escape', 'SELECT 1 AS entity, inv_own.inv_escape() AS since');
SELECT name FROM syncguard.invariants ORDER BY name;
SELECT invariant, status, violations, error FROM syncguard.check_invariants();
-- Names are per owner: the same name is this role's own invariant, beside
-- postgres's; its view is name@owner, the plain name being postgres's.
SELECT syncguard.define_invariant('cancelled_still_billed', 'SELECT 1 AS entity, now() - interval ''1 day'' AS since');
SELECT name, owner_role, view_name FROM syncguard.invariants WHERE name = 'cancelled_still_billed';
SELECT invariant, status, violations FROM syncguard.check_invariants('cancelled_still_billed');
SELECT regress.err($$SELECT * FROM syncguard._invariant_check_run(10, 'cancelled_still_billed', 1000)$$);
-- It drops its own; postgres's stays (dropped below).
SELECT syncguard.drop_invariant('cancelled_still_billed', keep_history => false) AS dropped_own;
SELECT syncguard.drop_invariant('cancelled_still_billed') AS dropped_another_roles;
RESET ROLE;
-- Two roles with one name: a superuser sees both and must say whose.
CREATE ROLE inv_role2;
GRANT CREATE ON SCHEMA syncguard_invariants TO inv_role2;
SET ROLE inv_role2;
SELECT syncguard.define_invariant('role_inv', 'SELECT 1 AS entity, now() - interval ''1 day'' AS since');
RESET ROLE;
SELECT name, owner_role, view_name FROM syncguard.invariants WHERE name = 'role_inv' ORDER BY owner_role;
-- audit() and check_invariants() tell them apart by their last column
SELECT invariant, status, owner_role FROM syncguard.audit() WHERE invariant = 'role_inv' ORDER BY owner_role;
SELECT regress.err($$SELECT * FROM syncguard.check_invariants('role_inv')$$);
SELECT regress.err($$SELECT syncguard.drop_invariant('role_inv')$$);
SELECT regress.err($$SELECT syncguard.violations_prune('0', 'role_inv')$$);
SELECT invariant, status, violations FROM syncguard._run_invariant_check('role_inv', 'inv_role2');
SELECT invariant, owner_role FROM syncguard.violations WHERE invariant = 'role_inv';
SET ROLE inv_role2;
SELECT invariant, status, violations FROM syncguard.check_invariants('role_inv');
SELECT syncguard.drop_invariant('role_inv', keep_history => false);
RESET ROLE;
-- name@owner must fit in 63 bytes too.
SELECT syncguard.define_invariant(repeat('n', 60), 'SELECT 1 AS entity, now() AS since') IS NOT NULL AS defined;
SET ROLE inv_role;
SELECT regress.err(format('SELECT syncguard.define_invariant(%L, %L)', repeat('n', 60), 'SELECT 1 AS entity, now() AS since'));
RESET ROLE;
SELECT syncguard.drop_invariant(repeat('n', 60));
-- ... and a superuser running every check reads nothing through it: the check runs as its owner.
SELECT invariant, status, violations, error, owner_role FROM syncguard.check_invariants() WHERE invariant LIKE 'role%';
SELECT invariant, owner_role FROM syncguard.violations WHERE invariant LIKE 'role%' ORDER BY id;

-- drop_invariant: the view goes; the history stays (episodes closed) or goes too.
SELECT syncguard.drop_invariant('cancelled_still_billed');
SELECT count(*) FILTER (WHERE resolved_at IS NULL) AS open, count(*) AS episodes
  FROM syncguard.violations WHERE invariant = 'cancelled_still_billed';
SELECT to_regclass('syncguard_invariants.cancelled_still_billed') AS view;
SELECT syncguard.drop_invariant('cancelled_still_billed');
SELECT syncguard.drop_invariant('role_inv', keep_history => false);
SELECT count(*) AS role_inv_history FROM syncguard.violations WHERE invariant = 'role_inv';
SELECT syncguard.drop_invariant(name, keep_history => false) FROM syncguard.invariants ORDER BY name;
DELETE FROM syncguard.violations;
DELETE FROM syncguard.invariant_runs;
DROP SCHEMA inv_own CASCADE;
REVOKE ALL ON SCHEMA syncguard_invariants FROM inv_role, inv_role2;
DROP OWNED BY inv_role, inv_role2;
DROP ROLE inv_role, inv_role2;
DROP TABLE inv_products, inv_secret;
