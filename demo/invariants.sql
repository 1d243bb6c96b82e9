-- syncguard walk-through, invariant checks (included at the end of demo/walkthrough.sql).

\echo
\echo '== Invariant checks: noticing the drift =='
\echo 'Billing runs in a background job. A product cancelled a few minutes ago may still be billed'
\echo '(the job has not run yet); one cancelled more than 15 minutes ago must not be.'
CREATE TABLE subscriptions (id int PRIMARY KEY, customer text, cancelled_at timestamptz, billing_active boolean);
INSERT INTO subscriptions VALUES
  (1, 'ada',   NULL,                          true),
  (2, 'bob',   now() - interval '5 minutes',  true),    -- cancelled just now: inside the grace period
  (3, 'cy',    now() - interval '2 hours',    true),    -- cancelled two hours ago and still billed
  (4, 'dee',   now() - interval '3 hours',    false);
SELECT syncguard.define_invariant(
  'cancelled_still_billed',
  $$SELECT id AS entity, cancelled_at AS since, customer
      FROM subscriptions WHERE cancelled_at IS NOT NULL AND billing_active$$,
  grace => '15 minutes', severity => 'critical',
  remediation => 'Cancel the subscription in the billing provider, refund since cancelled_at, set billing_active = false.');
\echo 'Its view shows the violations right now (the grace period applied):'
SELECT entity, customer, since FROM syncguard_invariants.cancelled_still_billed;
\echo 'A template writes the query for a classic diagnostic: rows never synced for an hour after creation.'
CREATE TABLE crm_contacts (id int PRIMARY KEY, created_at timestamptz, synced_at timestamptz);
INSERT INTO crm_contacts VALUES (1, now() - interval '1 day', now()), (2, now() - interval '1 day', NULL);
SELECT syncguard.invariant_never_synced('contacts_never_synced', 'crm_contacts', 'synced_at', 'created_at',
                                        grace => '1 hour', severity => 'warning');
\echo 'check_invariants() runs every check in isolation (the background worker does it on a schedule);'
\echo 'each new violation becomes an episode and a NOTIFY on channel syncguard_alerts:'
SELECT invariant, status, violations, new_episodes FROM syncguard.check_invariants();
\echo 'The contact gets synced, and twenty minutes pass for bob (his cancellation moved back) while the'
\echo 'billing job still has not stopped his subscription: one episode resolved, one opened.'
UPDATE crm_contacts SET synced_at = now() WHERE id = 2;
UPDATE subscriptions SET cancelled_at = now() - interval '20 minutes' WHERE id = 2;
SELECT invariant, status, violations, new_episodes, resolved FROM syncguard.check_invariants();
\echo 'What is wrong right now, worst first, with what to do about it:'
\x on
SELECT invariant, status, severity, open_violations, date_trunc('minute', oldest_violation_age) AS oldest,
       remediation
  FROM syncguard.audit();
\x off
