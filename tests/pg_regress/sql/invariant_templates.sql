-- Invariant templates (the generated queries and their checks), entity
-- events coalesced into intervals, and housekeeping.

CREATE TABLE tpl_customers (
    id int PRIMARY KEY, region text, email text,
    created_at timestamptz NOT NULL, synced_at timestamptz, updated_at timestamptz
);
INSERT INTO tpl_customers VALUES
    (1, 'eu', 'ada@example.com',  now() - interval '3 days', now() - interval '10 minutes', now()),
    (2, 'eu', 'ADA@example.com',  now() - interval '2 days', now() - interval '2 hours',    now()),
    (3, 'us', 'bob@example.com',  now() - interval '2 days', NULL,                          now() + interval '2 hours'),
    (4, 'us', 'bob@example.com',  now() - interval '1 day',  now() - interval '30 minutes', now()),
    (5, 'us', 'cy@example.com',   now() - interval '5 minutes', NULL,                       now() + interval '1 minute');
CREATE TABLE tpl_remote (id int PRIMARY KEY);
INSERT INTO tpl_remote SELECT generate_series(1, 3);

-- Duplicates by key columns: the entity is the duplicated key, since when the second copy appeared.
SELECT syncguard.invariant_duplicates('tpl_dup_email', 'tpl_customers', ARRAY['email'], since_column => 'created_at');
SELECT syncguard.invariant_duplicates('tpl_dup_region_email', 'tpl_customers', ARRAY['region', 'email']);
SELECT entity, since > now() - interval '25 hours' AS second_copy_a_day_ago, copies FROM syncguard_invariants.tpl_dup_email;
SELECT entity, since, copies FROM syncguard_invariants.tpl_dup_region_email;

-- Not synced within an interval; never synced (since: created_at, so the grace period applies).
SELECT syncguard.invariant_not_synced_within('tpl_stale', 'tpl_customers', 'synced_at', '1 hour');
SELECT syncguard.invariant_never_synced('tpl_never', 'tpl_customers', 'synced_at', 'created_at', grace => '1 hour');
SELECT entity, since < now() - interval '59 minutes' AS stale_since_an_hour FROM syncguard_invariants.tpl_stale;
SELECT entity FROM syncguard_invariants.tpl_never;

-- Timestamps in the future (clock skew), with the offending value.
SELECT syncguard.invariant_future_timestamps('tpl_future', 'tpl_customers', 'updated_at', skew => '5 minutes');
SELECT entity, since, value > now() AS in_the_future FROM syncguard_invariants.tpl_future;

-- Record counts of two tables.
SELECT syncguard.invariant_count_mismatch('tpl_count', 'tpl_customers', 'tpl_remote');
SELECT syncguard.invariant_count_mismatch('tpl_count_tolerant', 'tpl_customers', 'tpl_remote', tolerance => 2);
SELECT * FROM syncguard_invariants.tpl_count;
SELECT count(*) FROM syncguard_invariants.tpl_count_tolerant;

-- The generated queries, as stored and shown by audit().
SELECT name, severity, query, remediation FROM syncguard.invariants ORDER BY name;
SELECT invariant, status, violations, new_episodes FROM syncguard.check_invariants();
SELECT invariant, status, open_violations, oldest_violation_age IS NOT NULL AS aged FROM syncguard.audit();

-- Template errors: unknown columns, wrong types, no key, bad arguments.
SELECT regress.err($$SELECT syncguard.invariant_duplicates('x', 'tpl_customers', ARRAY['mail'])$$);
SELECT regress.err($$SELECT syncguard.invariant_duplicates('x', 'tpl_customers', '{}')$$);
SELECT regress.err($$SELECT syncguard.invariant_not_synced_within('x', 'tpl_customers', 'email', '1 hour')$$);
SELECT regress.err($$SELECT syncguard.invariant_not_synced_within('x', 'tpl_customers', 'synced_at', '0')$$);
SELECT regress.err($$SELECT syncguard.invariant_never_synced('x', 'tpl_customers', 'synced_at', key_columns => ARRAY['nope'])$$);
SELECT regress.err($$SELECT syncguard.invariant_future_timestamps('x', 'tpl_customers', 'updated_at', skew => '-1 minute')$$);
SELECT regress.err($$SELECT syncguard.invariant_count_mismatch('x', 'tpl_customers', 'tpl_remote', tolerance => -1)$$);
SELECT regress.err($$SELECT syncguard.invariant_count_mismatch('x', 'tpl_customers', 'tpl_missing')$$);
CREATE TABLE tpl_nokey (a int, at timestamptz);
SELECT regress.err($$SELECT syncguard.invariant_never_synced('x', 'tpl_nokey', 'at')$$);
SELECT syncguard.invariant_never_synced('tpl_nokey_never', 'tpl_nokey', 'at', key_columns => ARRAY['a', 'at']);
SELECT query FROM syncguard.invariants WHERE name = 'tpl_nokey_never';

SELECT syncguard.drop_invariant(name, keep_history => false) FROM syncguard.invariants ORDER BY name;
DROP TABLE tpl_customers, tpl_remote, tpl_nokey;

-- Entity events: start/stop events coalesced into intervals. Repeated
-- starts extend the open interval, repeated stops and a stop before any start
-- change nothing; the last interval is open while not stopped.
INSERT INTO syncguard.entity_events (entity, kind, at) VALUES
    ('sub-1', 'billing_stopped', '2026-01-01 08:00+00'),   -- a stop before any start
    ('sub-1', 'billing_started', '2026-01-01 09:00+00'),
    ('sub-1', 'billing_started', '2026-01-01 09:30+00'),   -- already started
    ('sub-1', 'billing_stopped', '2026-01-01 10:00+00'),
    ('sub-1', 'billing_stopped', '2026-01-01 10:30+00'),   -- already stopped
    ('sub-1', 'billing_started', '2026-01-02 09:00+00'),
    ('sub-1', 'note',            '2026-01-02 09:10+00'),   -- another kind
    ('sub-1', 'billing_stopped', '2026-01-02 12:00+00'),
    ('sub-2', 'billing_started', '2026-01-01 12:00+00'),
    ('sub-2', 'billing_stopped', '2026-01-01 12:00+00'),   -- same instant: written after, so it stops
    ('sub-2', 'billing_started', '2026-01-03 00:00+00'),   -- still open
    ('sub-3', 'billing_stopped', '2026-01-01 00:00+00');   -- never started
SET TIME ZONE 'UTC';
SELECT * FROM syncguard.event_intervals('billing_started', 'billing_stopped');
SELECT * FROM syncguard.event_intervals('billing_started', 'billing_stopped', for_entity => 'sub-2');
SELECT regress.err($$SELECT * FROM syncguard.event_intervals('x', 'x')$$);
SELECT regress.err($$SELECT * FROM syncguard.event_intervals(NULL, 'x')$$);
-- Inside an invariant: subscriptions billed for more than a day without a stop.
SELECT syncguard.define_invariant('tpl_billed_too_long',
    $$SELECT entity, started_at AS since
        FROM syncguard.event_intervals('billing_started', 'billing_stopped')
       WHERE stopped_at IS NULL$$,
    grace => '1 day');
SELECT invariant, status, violations FROM syncguard.check_invariants('tpl_billed_too_long');
SELECT entity, since FROM syncguard.violations WHERE invariant = 'tpl_billed_too_long';
SELECT syncguard.drop_invariant('tpl_billed_too_long', keep_history => false);
DELETE FROM syncguard.entity_events;
RESET TIME ZONE;

-- Housekeeping: expired idempotency keys pruned; the stale write counters of
-- exited backends folded into one row per table with the same totals.
INSERT INTO syncguard.idempotency_keys (scope, key, fingerprint, status, lease_token, expires_at)
SELECT 'hk', 'k' || i, 'f', 'succeeded', gen_random_uuid(),
       CASE WHEN i <= 3 THEN now() - interval '1 hour' ELSE now() + interval '1 hour' END
  FROM generate_series(1, 5) AS i;
INSERT INTO syncguard.stale_writes (table_name, backend_pid, ignored, last_ignored_at) VALUES
    ('hk.a', -1, 2, '2026-01-01 00:00+00'),
    ('hk.a', -2, 3, '2026-01-02 00:00+00'),
    ('hk.a', pg_backend_pid(), 4, '2026-01-03 00:00+00'),
    ('hk.b', -3, 1, '2026-01-04 00:00+00');
SELECT * FROM syncguard.conflict_stats WHERE table_name LIKE 'hk.%' ORDER BY table_name;
SELECT task FROM syncguard.housekeeping();
SELECT * FROM syncguard.conflict_stats WHERE table_name LIKE 'hk.%' ORDER BY table_name;
SELECT table_name, backend_pid = pg_backend_pid() AS live, ignored FROM syncguard.stale_writes
 WHERE table_name LIKE 'hk.%' ORDER BY table_name, backend_pid;
SELECT key FROM syncguard.idempotency_keys WHERE scope = 'hk' ORDER BY key;
-- Folding again adds to the folded row.
UPDATE syncguard.stale_writes SET backend_pid = -4 WHERE table_name = 'hk.a' AND backend_pid = pg_backend_pid();
SELECT syncguard._fold_stale_writes() >= 1 AS folded;
SELECT table_name, backend_pid, ignored FROM syncguard.stale_writes WHERE table_name LIKE 'hk.%' ORDER BY 1, 2;
SELECT regress.err($$SELECT * FROM syncguard.housekeeping(0)$$);
DELETE FROM syncguard.stale_writes WHERE table_name LIKE 'hk.%';
DELETE FROM syncguard.idempotency_keys WHERE scope = 'hk';
